"""Passage fusion: the face, plate, card and phone observations of one gate in one window → one passage.

Face tracks, plate reads and card swipes ("anchors") wait at their gate until the passage they would
open is due; then the gate's waiting anchors are grouped by nearest observation time: the closest pair
of anchors of different kinds joins first, and groups merge only while they hold at most one anchor of
each kind (one person, one vehicle, one card) and all their anchors fit within `window_s` of one another.
So when two people pass close behind each other, each card fuses with the face nearest to it in time,
not with whichever face happened to be committed first (by observation time, so a face track committed
later than the card swipe still joins it). Phones (`device_seen`)
never open a passage: they join every passage whose time span their sighting interval overlaps,
give or take `window_s`. A passage is emitted `window_s + late_s` after its first member arrived
(by the clock, so observations replayed from old files close promptly), as a `passage`
observation linking its members' event_ids; the direction is the majority of the members'
`direction` (or card reader `side`) attributes.

Every source stamps on one clock (the wall clock at capture), but a camera observation reaches
fusion only after its pipeline's latency: the track has to end and inference takes time, seconds
on a slow gateway. Fusion tolerates that latency, bounded by `max_latency_s`: a camera member stands
for its whole interval from capture to commit (a card swiped when the gate's display showed the
recognised face fuses with it; "nearest" is then the nearest of capture and commit), a
passage waits for late members as long as the gate's cameras have lately taken to deliver
(measured; at least `latency_s`), and a passage with too few members to publish keeps waiting for a
late camera member up to `max_latency_s` in any case.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from edge.passages.config import PassageConfig
from edge.types import Derived, Event, EventKind, Observation, Scalar

log = logging.getLogger(__name__)


ANCHORS = frozenset({EventKind.FACE_PASSAGE, EventKind.PLATE_PASSAGE, EventKind.CARD_SWIPE})
CAMERA_KINDS = frozenset({EventKind.FACE_PASSAGE, EventKind.PLATE_PASSAGE})
"""Anchors that come through a vision pipeline, with its latency."""
_LATENCY_SAMPLES = 32  # per gate: the latest camera latencies, whose maximum a passage waits for
_MAX_LINKS = 64  # the event schema's maxItems for links
_MAX_DEVICES_BUFFERED = 4096  # per gate; a sniffer at a busy street must not grow memory without bound


@dataclass(frozen=True, slots=True)
class _Member:
    event_id: str
    kind: EventKind
    lo: float
    hi: float
    direction: str | None


@dataclass
class _Group:
    gate: str
    lo: float
    hi: float
    deadline: float
    anchors: list[_Member] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Pending:
    member: _Member
    deadline: float
    """When the passage this anchor opened alone would be due: arrival + window_s + late_s."""


_MAX_ANCHORS_PENDING = 4096  # per gate: grouping is quadratic in the anchors waiting at one gate


def _nearness(a: _Member, b: _Member) -> float:
    """How near two members are, for choosing partners: the closest pair of their interval ends.

    A swipe goes with the passer-by it was nearest to either when they were seen (capture) or when
    they were reported (commit: the gate showed them recognised); a time inside a slow pipeline's
    interval is no evidence either way. For instants this is their distance.
    """
    return min(abs(x - y) for x in (a.lo, a.hi) for y in (b.lo, b.hi))


def group_nearest(anchors: Sequence[_Pending], window_s: float) -> list[list[_Pending]]:
    """Group anchors by nearest time: closest cross-kind pairs first, one anchor per kind, all within window_s.

    A member is an interval (a camera member's runs from capture to commit, see the module
    docstring). Pairs join nearest first (`_nearness`: the closest pair of interval ends), and a group
    fits when the gap between any two of its members' intervals is ≤ `window_s` (for instants: its
    span is ≤ window_s). Deterministic (ties broken by the gap, observation time, then event id), so
    regrouping the same anchors on a later tick gives the same groups.
    """
    items = sorted(anchors, key=lambda a: (a.member.lo, a.member.event_id))
    parent = list(range(len(items)))
    kinds = [{a.member.kind} for a in items]
    # Per group: the latest start and the earliest end; its widest pairwise gap is their difference.
    span = [(a.member.lo, a.member.hi) for a in items]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs: list[tuple[float, float, int, int]] = []
    for i, a in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j].member
            gap = max(0.0, b.lo - a.member.hi)  # b starts no earlier than a
            if gap > window_s:
                break  # sorted by start: every later anchor is farther still
            if b.kind is not a.member.kind:
                pairs.append((_nearness(a.member, b), gap, i, j))
    for _near, _gap, i, j in sorted(pairs):
        ri, rj = root(i), root(j)
        if ri == rj or kinds[ri] & kinds[rj]:
            continue
        latest_start, earliest_end = max(span[ri][0], span[rj][0]), min(span[ri][1], span[rj][1])
        if latest_start - earliest_end > window_s:
            continue
        lo, hi = latest_start, earliest_end
        parent[rj] = ri
        kinds[ri] |= kinds[rj]
        span[ri] = (lo, hi)
    groups: dict[int, list[_Pending]] = {}
    for i, a in enumerate(items):
        groups.setdefault(root(i), []).append(a)
    return list(groups.values())


def _direction_of(obs: Observation) -> str | None:
    for key in ("direction", "side"):
        value = obs.attrs.get(key)
        if value in ("in", "out"):
            return str(value)
    return None


def _device_interval(obs: Observation) -> tuple[float, float]:
    first = obs.attrs.get("first_seen", obs.ts)
    last = obs.attrs.get("last_seen", obs.ts)
    lo = float(first) if isinstance(first, int | float) and not isinstance(first, bool) else obs.ts
    hi = float(last) if isinstance(last, int | float) and not isinstance(last, bool) else obs.ts
    return min(lo, hi), max(lo, hi)


def vote_direction(directions: Sequence[str | None]) -> str:
    """The majority of "in"/"out" votes; "none" when there are none or they tie."""
    ins = sum(1 for d in directions if d == "in")
    outs = sum(1 for d in directions if d == "out")
    if ins > outs:
        return "in"
    if outs > ins:
        return "out"
    return "none"


class PassageFusion:
    """A CommitObserver that answers committed member events with fused `passage` observations."""

    def __init__(self, config: PassageConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._cfg = config
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, list[_Pending]] = {}
        self._devices: dict[str, deque[tuple[float, _Member]]] = {}
        self._latencies: dict[str, deque[float]] = {}
        self.emitted = 0
        self.ignored = 0

    def committed(self, pairs: Sequence[tuple[Observation, Event]]) -> list[Derived]:
        """Fold committed member events in; return the passages that are due."""
        now = self._clock()
        with self._lock:
            for obs, event in pairs:
                if obs.kind not in ANCHORS and obs.kind is not EventKind.DEVICE_SEEN:
                    continue
                gate = self._cfg.gate_of(obs.source_id)
                if gate is None:
                    self.ignored += 1
                    continue
                if obs.kind is EventKind.DEVICE_SEEN:
                    lo, hi = _device_interval(obs)
                    buf = self._devices.setdefault(gate, deque(maxlen=_MAX_DEVICES_BUFFERED))
                    buf.append((now, _Member(event.event_id, obs.kind, lo, hi, None)))
                else:
                    hi = obs.ts
                    if obs.kind in CAMERA_KINDS:
                        latency = min(max(0.0, now - obs.ts), self._cfg.max_latency_s)
                        self._latencies.setdefault(gate, deque(maxlen=_LATENCY_SAMPLES)).append(latency)
                        hi = obs.ts + latency
                    self._add_anchor(gate, _Member(event.event_id, obs.kind, obs.ts, hi, _direction_of(obs)), now)
            return self._due(now)

    def latency(self, gate: str) -> float:
        """How much longer a passage at `gate` waits for late camera members (seconds)."""
        with self._lock:
            return self._latency(gate)

    def _latency(self, gate: str) -> float:
        measured = max(self._latencies.get(gate, ()), default=0.0)
        return min(max(self._cfg.latency_s, measured), self._cfg.max_latency_s)

    def tick(self, now: float) -> list[Derived]:
        """Emit the passages whose window (plus `late_s`) has passed by `now`."""
        with self._lock:
            return self._due(now)

    def close(self) -> None:
        """Nothing to release (the committer's final `tick(inf)` has emitted every open passage)."""

    @property
    def pending(self) -> int:
        """Passages still open."""
        with self._lock:
            return sum(len(group_nearest(pending, self._cfg.window_s)) for pending in self._open.values())

    def _add_anchor(self, gate: str, member: _Member, now: float) -> None:
        pending = self._open.setdefault(gate, [])
        if len(pending) >= _MAX_ANCHORS_PENDING:
            log.warning("fusion: %d anchors waiting at gate %s; the oldest is emitted alone", len(pending), gate)
            pending.sort(key=lambda a: a.deadline)
            pending[0] = _Pending(pending[0].member, -float("inf"))  # due on the next pass
        pending.append(_Pending(member, now + self._cfg.window_s + self._cfg.late_s))

    def _due(self, now: float) -> list[Derived]:
        out: list[Derived] = []
        horizon = self._cfg.window_s + self._cfg.late_s
        for gate, pending in self._open.items():
            # Decided now, not when the anchor arrived: a latency measured since counts too.
            wait = self._latency(gate)
            if not any(a.deadline + wait <= now for a in pending):
                self._prune_devices(gate, now, horizon, pending)
                continue
            keep: list[_Pending] = []
            for members in group_nearest(pending, self._cfg.window_s):
                deadline = min(a.deadline for a in members)
                if now < deadline + wait:
                    keep.extend(members)
                    continue
                anchors = [a.member for a in members]
                group = _Group(gate, min(m.lo for m in anchors), max(m.hi for m in anchors), deadline, anchors)
                derived = self._passage(group)
                if derived is None and now < deadline + self._cfg.max_latency_s:
                    # Too few members to publish yet, so waiting costs nothing: a camera member
                    # delayed by a slow pipeline (the first passer-by, before any latency was
                    # measured) may still come.
                    keep.extend(members)
                    continue
                if derived is not None:
                    out.append(derived)
            pending[:] = keep
            self._prune_devices(gate, now, horizon, keep)
        self.emitted += len(out)
        return out

    def _prune_devices(self, gate: str, now: float, horizon: float, still_open: list[_Pending]) -> None:
        buf = self._devices.get(gate)
        if not buf:
            return
        # A sighting can only still join a passage that is open now or opens within the horizon.
        oldest_open = min((a.member.lo for a in still_open), default=float("inf"))
        while buf and buf[0][0] < now - 2 * horizon and buf[0][1].hi < oldest_open - self._cfg.window_s:
            buf.popleft()

    def _passage(self, group: _Group) -> Derived | None:
        w = self._cfg.window_s
        devices = [m for _, m in self._devices.get(group.gate, ()) if m.hi >= group.lo - w and m.lo <= group.hi + w]
        anchors = sorted(group.anchors, key=lambda m: m.lo)
        seen: set[str] = set()
        members: list[_Member] = []
        for m in [*anchors, *sorted(devices, key=lambda m: m.lo)]:
            if m.event_id not in seen:
                seen.add(m.event_id)
                members.append(m)
        members = members[:_MAX_LINKS]
        if len(members) < self._cfg.min_members:
            return None
        kinds = {m.kind for m in members}
        attrs: dict[str, Scalar] = {
            "members": len(members),
            "face": EventKind.FACE_PASSAGE in kinds,
            "plate": EventKind.PLATE_PASSAGE in kinds,
            "card": EventKind.CARD_SWIPE in kinds,
            "devices": sum(1 for m in members if m.kind is EventKind.DEVICE_SEEN),
            "window_s": w,
            "direction": vote_direction([m.direction for m in anchors]),
        }
        obs = Observation(EventKind.PASSAGE, group.gate, group.lo, attrs=attrs)
        return Derived(obs, tuple(m.event_id for m in members))

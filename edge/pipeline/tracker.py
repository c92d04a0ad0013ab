"""A small IoU tracker: follows detections of one source across frames so one passage is one track.

Matching is greedy (no Hungarian step): pairs that overlap by IoU are taken first, best first; then
pairs whose centres are close relative to the box size, so a small fast face that moved further than
its own width between two detector runs still keeps its track. A constant-velocity prediction moves
each track's box to the current time before matching. Each track keeps only its best `best_k`
samples by a caller-supplied quality, so a recogniser later embeds a few good frames, not every frame.
A sample is built lazily: not at all for a track the caller has frozen (already decided), nor when
an upper bound of its quality cannot beat the worst of a full best-`best_k` (building one, an
aligned face crop, costs more than the rest of tracking).

`GateLine` tells which way a finished track crossed a line drawn on the image; the face and plate
paths share it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import Field, model_validator

from edge.compat import StrEnum
from edge.configbase import StrictModel
from edge.pipeline.config import GateLineConfig
from edge.types import Box, Detection, Track

S = TypeVar("S")

Point = tuple[float, float]


class TrackerConfig(StrictModel):
    """Tracker settings: when detections join a track and when a track ends."""

    iou_threshold: float = Field(default=0.3, gt=0.0, le=1.0)
    """Least IoU between a track's predicted box and a detection to match on overlap."""
    max_centre_distance: float = Field(default=1.0, ge=0.0)
    """Fallback match: centre distance at most this many times the track's box diagonal (0: off)."""
    max_size_ratio: float = Field(default=2.0, ge=1.0)
    """A centre-distance match also needs the boxes' sizes (sqrt of area) within this ratio."""
    max_age_s: float | None = Field(default=1.0, gt=0.0)
    """End a track after this many seconds without a hit (None: by frames only)."""
    max_age_frames: int | None = Field(default=None, ge=0)
    """End a track after this many detector runs without a hit (None: by time only)."""
    min_hits: int = Field(default=2, ge=1)
    """Hits a track needs to be reported; shorter tracks are dropped as noise."""
    best_k: int = Field(default=3, ge=1)
    """How many of a track's samples to keep, best quality first."""
    velocity_smoothing: float = Field(default=0.5, ge=0.0, le=1.0)
    """Weight of the newest motion in the velocity estimate (0: no prediction)."""

    @model_validator(mode="after")
    def _some_max_age(self) -> TrackerConfig:
        if self.max_age_s is None and self.max_age_frames is None:
            raise ValueError("set max_age_s or max_age_frames (or both); otherwise tracks never end")
        return self


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Counters of one tracker."""

    active: int
    finished: int
    discarded: int


@dataclass(order=True)
class _Ranked(Generic[S]):
    quality: float
    seq: int
    sample: S = field(compare=False)


@dataclass
class _LiveTrack(Generic[S]):
    track_id: int
    first_ts: float
    last_ts: float
    first_box: Box
    last_box: Box
    hits: int = 1
    misses: int = 0
    vx: float = 0.0
    vy: float = 0.0
    samples: list[_Ranked[S]] = field(default_factory=list)
    frozen: bool = False

    def predicted(self, ts: float) -> Box:
        dt = ts - self.last_ts
        if dt <= 0.0 or (self.vx == 0.0 and self.vy == 0.0):
            return self.last_box
        dx, dy = self.vx * dt, self.vy * dt
        b = self.last_box
        return Box(b.x1 + dx, b.y1 + dy, b.x2 + dx, b.y2 + dy)


class IouTracker(Generic[S]):
    """Tracks the detections of one source; `update` returns the tracks that ended."""

    def __init__(
        self,
        source_id: str,
        quality: Callable[[S], float],
        config: TrackerConfig | None = None,
        *,
        first_track_id: int = 1,
    ) -> None:
        self._source_id = source_id
        self._quality = quality
        self._config = config or TrackerConfig()
        self._ids = itertools.count(first_track_id)
        self._seq = itertools.count()
        self._live: list[_LiveTrack[S]] = []
        self._finished = 0
        self._discarded = 0

    @property
    def source_id(self) -> str:
        """The source whose detections this tracker follows."""
        return self._source_id

    @property
    def active(self) -> int:
        """Tracks still open."""
        return len(self._live)

    def stats(self) -> TrackerStats:
        """Counters since the tracker was created."""
        return TrackerStats(active=len(self._live), finished=self._finished, discarded=self._discarded)

    def update(
        self,
        ts: float,
        detections: Sequence[Detection],
        make_sample: Callable[[Detection], S],
        bound: Callable[[Detection], float] | None = None,
    ) -> list[Track[S]]:
        """Feed one detector run at time `ts`; return the tracks that ended, oldest id first.

        `make_sample` builds what the track keeps of a detection (e.g. a crop); only the `best_k`
        samples by quality survive. It is called only when the sample could be kept: not for a
        frozen track, and, given `bound` (an upper bound of the quality `make_sample`'s sample
        would have, from the detection alone), not when the bound cannot beat the worst sample of
        a track that already holds `best_k`. A bound that is not an upper bound changes which
        samples survive.
        """
        matches, unmatched = self._match(ts, detections)
        matched_tracks: set[int] = set()
        for track, det in matches:
            self._hit(track, ts, det, make_sample, bound)
            matched_tracks.add(id(track))
        for track in self._live:
            if id(track) not in matched_tracks:
                track.misses += 1
        ended = self._expire(ts)
        for det in unmatched:
            track = _LiveTrack[S](
                track_id=next(self._ids), first_ts=ts, last_ts=ts, first_box=det.box, last_box=det.box
            )
            self._keep(track, make_sample(det))
            self._live.append(track)
        return ended

    def freeze(self, track_id: int) -> bool:
        """Stop collecting samples for an open track (its caller has decided it); False if not open.

        The track still follows its detections and ends as usual, with the samples it had.
        """
        for track in self._live:
            if track.track_id == track_id:
                track.frozen = True
                return True
        return False

    def live(self) -> list[Track[S]]:
        """A snapshot of every open track (without its samples): what zone rules watch meanwhile."""
        return [Track(t.track_id, self._source_id, t.first_ts, t.last_ts, t.hits, t.first_box, t.last_box, ())
                for t in self._live]

    def predictions(self, ts: float) -> list[tuple[int, Box]]:
        """(track id, box moved to `ts` at its track's velocity) of every open track: where a path
        that looks again at a missed object (edge.pipeline.plates' zoom) should look."""
        return [(t.track_id, t.predicted(ts)) for t in self._live]

    def add_samples(self, track_id: int, samples: Sequence[S]) -> bool:
        """Give an open track samples found after the fact (in frames before its first detection),
        each counted as a hit; False when no such track is open."""
        for track in self._live:
            if track.track_id == track_id:
                for sample in samples:
                    track.hits += 1
                    self._keep(track, sample)
                return True
        return False

    def expire(self, ts: float) -> list[Track[S]]:
        """End tracks too old by `max_age_s` at `ts` without counting a missed detector run.

        Call it on frames the motion gate skipped, so a track whose object left still ends.
        """
        return self._expire(ts)

    def flush(self) -> list[Track[S]]:
        """End every open track (end of input); those with too few hits are dropped."""
        live, self._live = self._live, []
        return self._finish(live)

    def _match(
        self, ts: float, detections: Sequence[Detection]
    ) -> tuple[list[tuple[_LiveTrack[S], Detection]], list[Detection]]:
        cfg = self._config
        # (rank, track index, detection index): overlap matches rank above 1, distance matches below.
        candidates: list[tuple[float, int, int]] = []
        for ti, track in enumerate(self._live):
            pred = track.predicted(ts)
            pcx, pcy = pred.centre
            diag = math.hypot(pred.width, pred.height)
            psize = math.sqrt(pred.area)
            for di, det in enumerate(detections):
                iou = pred.iou(det.box)
                if iou >= cfg.iou_threshold:
                    candidates.append((1.0 + iou, ti, di))
                    continue
                if cfg.max_centre_distance <= 0.0 or diag <= 0.0:
                    continue
                dcx, dcy = det.box.centre
                dist = math.hypot(dcx - pcx, dcy - pcy) / diag
                dsize = math.sqrt(det.box.area)
                if psize <= 0.0 or dsize <= 0.0:
                    continue
                ratio = max(psize, dsize) / min(psize, dsize)
                if dist <= cfg.max_centre_distance and ratio <= cfg.max_size_ratio:
                    candidates.append((1.0 - dist / (cfg.max_centre_distance + 1e-9) * 0.999, ti, di))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        used_t: set[int] = set()
        used_d: set[int] = set()
        matches: list[tuple[_LiveTrack[S], Detection]] = []
        for _, ti, di in candidates:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            matches.append((self._live[ti], detections[di]))
        unmatched = [det for di, det in enumerate(detections) if di not in used_d]
        return matches, unmatched

    def _hit(self, track: _LiveTrack[S], ts: float, det: Detection, make_sample: Callable[[Detection], S],
             bound: Callable[[Detection], float] | None) -> None:
        dt = ts - track.last_ts
        if dt > 0.0:
            (ox, oy), (nx, ny) = track.last_box.centre, det.box.centre
            a = self._config.velocity_smoothing
            if track.hits == 1:
                # No history to smooth against: take the first observed motion as it is.
                track.vx, track.vy = ((nx - ox) / dt, (ny - oy) / dt) if a > 0.0 else (0.0, 0.0)
            else:
                track.vx = a * (nx - ox) / dt + (1.0 - a) * track.vx
                track.vy = a * (ny - oy) / dt + (1.0 - a) * track.vy
        track.last_ts = max(track.last_ts, ts)
        track.last_box = det.box
        track.hits += 1
        track.misses = 0
        if track.frozen:
            return
        samples = track.samples
        # The heap's root is the worst kept sample; a newcomer must beat it strictly (see _keep).
        if bound is not None and len(samples) >= self._config.best_k and bound(det) <= samples[0].quality:
            return
        self._keep(track, make_sample(det))

    def _keep(self, track: _LiveTrack[S], sample: S) -> None:
        ranked = _Ranked(self._quality(sample), next(self._seq), sample)
        if len(track.samples) < self._config.best_k:
            heapq.heappush(track.samples, ranked)
        elif ranked.quality > track.samples[0].quality:
            heapq.heapreplace(track.samples, ranked)

    def _expire(self, ts: float) -> list[Track[S]]:
        cfg = self._config
        ended: list[_LiveTrack[S]] = []
        kept: list[_LiveTrack[S]] = []
        for track in self._live:
            too_old = cfg.max_age_s is not None and ts - track.last_ts > cfg.max_age_s
            too_many = cfg.max_age_frames is not None and track.misses > cfg.max_age_frames
            (ended if too_old or too_many else kept).append(track)
        self._live = kept
        return self._finish(ended)

    def _finish(self, tracks: list[_LiveTrack[S]]) -> list[Track[S]]:
        out: list[Track[S]] = []
        for track in sorted(tracks, key=lambda t: t.track_id):
            if track.hits < self._config.min_hits:
                self._discarded += 1
                continue
            self._finished += 1
            out.append(self._snapshot(track))
        return out

    def peek(self) -> list[Track[S]]:
        """Snapshots of the open, unfrozen tracks with at least `min_hits` hits, without ending them
        (a path that decides early looks at a track while the subject is still in view, and freezes
        it once decided)."""
        return [self._snapshot(t) for t in self._live if t.hits >= self._config.min_hits and not t.frozen]

    def _snapshot(self, track: _LiveTrack[S]) -> Track[S]:
        best = sorted(track.samples, key=lambda r: (-r.quality, r.seq))
        return Track(
            track_id=track.track_id,
            source_id=self._source_id,
            first_ts=track.first_ts,
            last_ts=track.last_ts,
            hits=track.hits,
            first_box=track.first_box,
            last_box=track.last_box,
            samples=tuple(r.sample for r in best),
        )


class Direction(StrEnum):
    """Which way a track crossed a gate line."""

    IN = "in"
    OUT = "out"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class GateLine:
    """A line segment from `a` to `b` in image pixels (y grows downward).

    Crossing to the right-hand side of a→b, as drawn on the image, is "in": with a line drawn left
    to right, moving down the picture (towards a camera that looks down at a gate) is in. Swap the
    points to reverse.
    """

    a: Point
    b: Point

    @classmethod
    def from_config(cls, config: GateLineConfig) -> GateLine:
        """Build the line from its config."""
        return cls(config.a, config.b)

    def side(self, p: Point) -> float:
        """Positive on the "in" side, negative on the "out" side, 0 on the line."""
        (ax, ay), (bx, by) = self.a, self.b
        return (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)

    def crossing(self, start: Point, end: Point) -> Direction:
        """Which way the segment start→end crosses this line segment (NONE if it does not)."""
        s0, s1 = self.side(start), self.side(end)
        if s0 == 0.0 or s1 == 0.0 or (s0 > 0.0) == (s1 > 0.0):
            return Direction.NONE
        # The path crosses the infinite line; it crosses the gate only if a and b lie on either
        # side of the path (or one of them on it).
        path = GateLine(start, end)
        if path.side(self.a) * path.side(self.b) > 0.0:
            return Direction.NONE
        return Direction.IN if s1 > 0.0 else Direction.OUT

    def direction(self, track: Track[S]) -> Direction:
        """Which way a track crossed, from its first and last box centres."""
        return self.crossing(track.first_box.centre, track.last_box.centre)


def track_direction(track: Track[S], line: GateLine | None) -> Direction:
    """`line.direction(track)`, or NONE when the source has no gate line."""
    return Direction.NONE if line is None else line.direction(track)

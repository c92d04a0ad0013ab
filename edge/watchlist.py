"""Watch-lists (布控): signed lists of pseudonyms from the platform, matched at the gateway.

The platform builds a list for a case (plates, cards or MACs, with the case id, the approver and an
expiry), turns each value into its pseudonyms for the current and the next epoch with the district
key, and signs the canonical JSON with its Ed25519 key (`build_watchlist`). No raw value is ever in
a list. It reaches each gateway as a retained MQTT message (`watchlist_topic`).

The gateway (`WatchlistStore`) accepts a list only if its signature verifies against the
configured platform public key, it is for this district, it has not expired and its version is
newer than any it has accepted for that list id (so an old, broader or longer list cannot be
replayed); every refusal is counted by reason and audited. Accepted lists and the version
high-water marks are kept on disk, so a restart neither forgets a list nor reopens replay.
Matching is one dict lookup per identifier, and a list stops matching at its `expires_at` whatever
the network does: expiry is checked against the gateway's own clock on every lookup.

Wire format (JSON, UTF-8): {"format": "edgegw-watchlist/1", "district", "list_id", "version",
"case_id", "approver", "issued_at", "expires_at" (integer Unix seconds), "entries": [{"kind",
"key_id", "pseudonym"}...], "signer" (public-key fingerprint), "signature" (base64 Ed25519 over the
canonical JSON of every other field: sorted keys, no spaces, UTF-8)}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.compat import StrEnum
from edge.errors import EdgeError
from edge.privacy.pseudonym import Pseudonymiser, epoch_label
from edge.types import Derived, Event, EventKind, IdKind, Observation

log = logging.getLogger(__name__)

FORMAT = "edgegw-watchlist/1"
WATCH_KINDS = frozenset({IdKind.PLATE, IdKind.CARD, IdKind.MAC})
MAX_ENTRIES = 100_000
MAX_BYTES = 16 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CASE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{32}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}\.[0-9A-Z-]{4,10}$")  # the event schema's key_id (edge.keys.key_fingerprint)
_APPROVER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Refusal(StrEnum):
    """Why a gateway refused a list (each is counted and audited)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    WRONG_DISTRICT = "wrong_district"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    TOO_LARGE = "too_large"


class WatchlistRefusedError(EdgeError):
    """A list was refused; `reason` says why (the message never quotes the list's contents)."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(f"watch-list refused ({reason.value}): {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WatchEntry:
    """One watched identifier in one epoch, as its pseudonym."""

    kind: IdKind
    key_id: str
    pseudonym: str


@dataclass(frozen=True, slots=True)
class Watchlist:
    """A verified list."""

    district: str
    list_id: str
    version: int
    case_id: str
    approver: str
    issued_at: int
    expires_at: int
    entries: tuple[WatchEntry, ...]

    def live(self, now: float) -> bool:
        """Whether the list is in force at `now`."""
        return self.issued_at - _SKEW_S <= now < self.expires_at


@dataclass(frozen=True, slots=True)
class WatchHit:
    """An identifier of a committed event found on a list in force."""

    list_id: str
    list_version: int
    case_id: str
    kind: IdKind
    event_id: str


_SKEW_S = 300  # a list issued "in the future" by up to this much is a clock difference, not an attack


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, UTF-8, integers only (no floats)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key (first 16 hex of SHA-256 of its raw bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The platform's public key from a PEM file or a file holding its 32 raw bytes in hex."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode().strip()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdgeError(f"{path}: not an Ed25519 public key (PEM or 64 hex digits): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EdgeError(f"{path}: the platform key must be Ed25519")
    return key


def pseudonym_entries(pseudonymiser: Pseudonymiser, kind: IdKind, values: Iterable[str],
                      at: float, *, epochs_ahead: int = 1) -> list[WatchEntry]:
    """The platform side: entries for `values` in the epoch of `at` and the next `epochs_ahead`.

    The raw values are used here, with the district key, and go no further: only pseudonyms are
    returned. A list that spans an epoch change keeps matching across it.
    """
    if kind not in WATCH_KINDS:
        raise ValueError(f"cannot watch identifiers of kind {kind.value}")
    labels: list[str] = []
    t = at
    while len(labels) < epochs_ahead + 1:  # step a day at a time to the next distinct epoch label
        label = epoch_label(pseudonymiser.policy, t)
        if not labels or labels[-1] != label:
            labels.append(label)
        t += 86400.0
    return [WatchEntry(kind, pseudonymiser.key_id(label), pseudonymiser.pseudonym_in(kind, value, label))
            for value in values for label in labels]


def build_watchlist(*, signing_key: Ed25519PrivateKey, district: str, list_id: str, version: int, case_id: str,
                    approver: str, expires_at: int, entries: Sequence[WatchEntry],
                    issued_at: int | None = None) -> bytes:
    """The platform side: the signed list, ready to publish (retained) to the gateways."""
    body: dict[str, Any] = {
        "format": FORMAT, "district": district, "list_id": list_id, "version": version, "case_id": case_id,
        "approver": approver, "issued_at": int(time.time()) if issued_at is None else issued_at,
        "expires_at": expires_at,
        "entries": sorted(({"kind": e.kind.value, "key_id": e.key_id, "pseudonym": e.pseudonym} for e in entries),
                          key=lambda d: (d["kind"], d["key_id"], d["pseudonym"])),
        "signer": key_fingerprint(signing_key.public_key()),
    }
    parse_body(body)  # refuse to sign what a gateway would refuse to read
    body["signature"] = base64.b64encode(signing_key.sign(canonical(body))).decode()
    return canonical(body)


def watchlist_topic(district: str, list_id: str, prefix: str = "edgegw") -> str:
    """The retained topic a list is published on (one per list, district-wide)."""
    return f"{prefix}/{district}/watchlists/{list_id}"


def _need(obj: Mapping[str, Any], key: str, typ: type, pattern: re.Pattern[str] | None = None) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or isinstance(value, bool) != (typ is bool):
        raise WatchlistRefusedError(Refusal.MALFORMED, f"field {key!r} missing or not a {typ.__name__}")
    if pattern is not None and not pattern.fullmatch(str(value)):
        raise WatchlistRefusedError(Refusal.MALFORMED, f"field {key!r} is not well formed")
    return value


def parse_body(body: Mapping[str, Any]) -> Watchlist:
    """Check every field of an (unsigned) list body; raises WatchlistRefusedError(MALFORMED)."""
    if body.get("format") != FORMAT:
        raise WatchlistRefusedError(Refusal.MALFORMED, f"format is not {FORMAT}")
    raw_entries = body.get("entries")
    if not isinstance(raw_entries, list):
        raise WatchlistRefusedError(Refusal.MALFORMED, "entries is not a list")
    if len(raw_entries) > MAX_ENTRIES:
        raise WatchlistRefusedError(Refusal.TOO_LARGE, f"{len(raw_entries)} entries (at most {MAX_ENTRIES})")
    entries: list[WatchEntry] = []
    for i, e in enumerate(raw_entries):
        if not isinstance(e, dict) or set(e) != {"kind", "key_id", "pseudonym"}:
            raise WatchlistRefusedError(Refusal.MALFORMED, f"entry {i} is not {{kind, key_id, pseudonym}}")
        try:
            kind = IdKind(e["kind"])
        except ValueError:
            raise WatchlistRefusedError(Refusal.MALFORMED, f"entry {i}: unknown kind") from None
        if kind not in WATCH_KINDS:
            raise WatchlistRefusedError(Refusal.MALFORMED, f"entry {i}: kind {kind.value} cannot be watched")
        key_id, pseudonym = _need(e, "key_id", str, _KEY_ID), _need(e, "pseudonym", str, _HEX)
        entries.append(WatchEntry(kind, key_id, pseudonym))
    version = _need(body, "version", int)
    issued, expires = _need(body, "issued_at", int), _need(body, "expires_at", int)
    if version < 1 or expires <= issued:
        raise WatchlistRefusedError(Refusal.MALFORMED, "version < 1 or expires_at not after issued_at")
    return Watchlist(district=_need(body, "district", str, _ID), list_id=_need(body, "list_id", str, _ID),
                     version=version, case_id=_need(body, "case_id", str, _CASE),
                     approver=_need(body, "approver", str, _APPROVER), issued_at=issued, expires_at=expires,
                     entries=tuple(entries))


def verify_watchlist(payload: bytes, public_key: Ed25519PublicKey) -> tuple[Watchlist, dict[str, Any]]:
    """Parse and check the signature of a list (not its district, time or version)."""
    if len(payload) > MAX_BYTES:
        raise WatchlistRefusedError(Refusal.TOO_LARGE, f"{len(payload)} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WatchlistRefusedError(Refusal.MALFORMED, "not JSON") from None
    if not isinstance(obj, dict):
        raise WatchlistRefusedError(Refusal.MALFORMED, "not a JSON object")
    sig_text = obj.pop("signature", None)
    if not isinstance(sig_text, str):
        raise WatchlistRefusedError(Refusal.BAD_SIGNATURE, "no signature")
    try:
        signature = base64.b64decode(sig_text, validate=True)
        public_key.verify(signature, canonical(obj))
    except (InvalidSignature, binascii.Error, ValueError):
        # Checked before anything else is believed: the fields of an unsigned list mean nothing.
        raise WatchlistRefusedError(Refusal.BAD_SIGNATURE,
                                    "signature does not verify against the platform key") from None
    return parse_body(obj), {**obj, "signature": sig_text}


class Auditor(Protocol):
    """What the store needs of the audit log (edge.audit.AuditLog fits)."""

    def append(self, actor: str, action: str, details: Mapping[str, Any]) -> Any:
        """Write one audit record."""
        ...


class WatchlistStore:
    """The gateway's lists in force, their version high-water marks, and the refusal counters.

    Thread-safe: the uplink's subscriber offers lists while capture workers match events.
    """

    def __init__(self, public_key: Ed25519PublicKey, district: str, state_path: Path | None = None, *,
                 audit: Auditor | None = None, clock: Callable[[], float] = time.time) -> None:
        self._key = public_key
        self._district = district
        self._path = state_path
        self._audit = audit
        self._clock = clock
        self._lock = threading.Lock()
        self._lists: dict[str, Watchlist] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._high: dict[str, int] = {}
        self._index: dict[tuple[IdKind, str, str], set[str]] = {}
        self.refused: Counter[str] = Counter()
        self.hits = 0
        self._stamp: tuple[int, int, int] | None = None
        self._load()
        for wl in sorted(self._lists.values(), key=lambda w: w.list_id):
            self._audit_in_force(wl)

    # -- receiving lists -----------------------------------------------------------------------
    def offer(self, payload: bytes) -> Watchlist:
        """Verify and install a list; raises WatchlistRefusedError (counted and audited) otherwise."""
        try:
            wl, obj = verify_watchlist(payload, self._key)
            now = self._clock()
            if wl.district != self._district:
                raise WatchlistRefusedError(Refusal.WRONG_DISTRICT, "the list is for another district")
            if now >= wl.expires_at:
                raise WatchlistRefusedError(Refusal.EXPIRED, "expires_at has passed")
            if wl.issued_at - _SKEW_S > now:
                raise WatchlistRefusedError(Refusal.NOT_YET_VALID, "issued_at is in the future")
            with self._lock:
                if wl.version <= self._high.get(wl.list_id, 0):
                    raise WatchlistRefusedError(Refusal.REPLAYED, f"version {wl.version} of {wl.list_id} is not newer "
                                                             f"than {self._high[wl.list_id]}")
                self._install(wl, obj)
                self._save()
        except WatchlistRefusedError as exc:
            self.refused[exc.reason.value] += 1
            log.warning("%s", exc)
            self._audit_append("watchlist_refused", {"reason": exc.reason.value})
            raise
        log.info("watch-list %s v%d for case %s accepted: %d entries, expires %d",
                 wl.list_id, wl.version, wl.case_id, len(wl.entries), wl.expires_at)
        self._audit_append("watchlist_accept", {"list_id": wl.list_id, "version": wl.version, "case_id": wl.case_id,
                                                "approver": wl.approver, "entries": len(wl.entries),
                                                "expires_at": wl.expires_at})
        return wl

    def holds(self, payload: bytes) -> bool:
        """Whether `payload` carries the very signature of a list in force here.

        A retained list comes again on every reconnect and restart; such a copy is no replay to
        count or audit. Nothing is installed on this answer, so an altered body that copied the
        signature only gets itself ignored.
        """
        try:
            obj = json.loads(payload)
            list_id, signature = obj["list_id"], obj["signature"]
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            return False
        with self._lock:
            held = self._payloads.get(list_id) if isinstance(list_id, str) else None
            return held is not None and isinstance(signature, str) and held.get("signature") == signature

    def _install(self, wl: Watchlist, obj: dict[str, Any]) -> None:
        self._drop(wl.list_id)
        self._high[wl.list_id] = wl.version
        if not wl.entries:
            return  # an empty newer version is how the platform withdraws a list early
        self._lists[wl.list_id] = wl
        self._payloads[wl.list_id] = obj
        for e in wl.entries:
            self._index.setdefault((e.kind, e.key_id, e.pseudonym), set()).add(wl.list_id)

    def _drop(self, list_id: str) -> None:
        old = self._lists.pop(list_id, None)
        self._payloads.pop(list_id, None)
        if old is None:
            return
        for e in old.entries:
            key = (e.kind, e.key_id, e.pseudonym)
            ids = self._index.get(key)
            if ids is not None:
                ids.discard(list_id)
                if not ids:
                    del self._index[key]

    def expire(self) -> list[str]:
        """Drop lists past their expiry (matching already ignores them); returns their ids."""
        now = self._clock()
        with self._lock:
            gone = [lid for lid, wl in self._lists.items() if now >= wl.expires_at]
            for lid in gone:
                self._drop(lid)
            if gone:
                self._save()
        for lid in gone:
            self._audit_append("watchlist_expired", {"list_id": lid})
        return gone

    def reload_if_changed(self) -> bool:
        """Pick up lists another process accepted into the same state file (True if it changed).

        The uplink daemon holds the MQTT connection and offers lists; the capture daemon, which
        matches, keeps a store on the same file and calls this on its tick. The file is replaced
        atomically, so a reader sees the old state or the new one, never half of one.
        """
        if self._path is None:
            return False
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return False
        with self._lock:
            before = (dict(self._lists), dict(self._payloads), dict(self._index), dict(self._high))
            self._lists.clear()
            self._payloads.clear()
            self._index.clear()
            try:
                self._load()
            except EdgeError as exc:
                # Keep matching what was in force rather than nothing; the writer will replace the file.
                self._lists, self._payloads, self._index, self._high = before
                self._stamp = stamp
                log.error("watch-lists not reloaded: %s", exc)
                return False
            new = [wl for lid, wl in sorted(self._lists.items())
                   if lid not in before[0] or before[0][lid].version != wl.version]
        # The receiving daemon (the uplink) may have no audit log of its own to write: the matching
        # one records each list it starts matching.
        for wl in new:
            self._audit_in_force(wl)
        return True

    def _audit_in_force(self, wl: Watchlist) -> None:
        self._audit_append("watchlist_in_force", {"list_id": wl.list_id, "version": wl.version,
                                                  "case_id": wl.case_id, "approver": wl.approver,
                                                  "entries": len(wl.entries), "expires_at": wl.expires_at})

    # -- matching --------------------------------------------------------------------------------
    def match(self, kind: IdKind, key_id: str, pseudonym: str) -> list[Watchlist]:
        """The lists in force now that hold this pseudonym (one dict lookup)."""
        now = self._clock()
        with self._lock:
            ids = self._index.get((kind, key_id, pseudonym))
            if not ids:
                return []
            return [wl for lid in sorted(ids) if (wl := self._lists[lid]).live(now)]

    def hits_for(self, events: Sequence[Event]) -> list[Derived]:
        """`watch_hit` alarms for the events about to be committed, each linking the event it matched.

        Call it between the privacy boundary and the outbox, and commit the alarms in the same batch
        as their events: they then ride the uplink's live lane at alarm priority.
        """
        out: list[Derived] = []
        for ev in events:
            subj = ev.subject
            if subj is None or subj.pseudonym is None or subj.key_id is None:
                continue
            try:
                kind = IdKind(subj.type)
            except ValueError:
                continue
            if kind not in WATCH_KINDS:
                continue
            for wl in self.match(kind, subj.key_id, subj.pseudonym):
                hit = WatchHit(wl.list_id, wl.version, wl.case_id, kind, ev.event_id)
                out.append(Derived(self._alarm(hit, ev), (ev.event_id,)))
        return out

    def _alarm(self, hit: WatchHit, ev: Event) -> Observation:
        self.hits += 1
        self._audit_append("watch_hit", {"list_id": hit.list_id, "version": hit.list_version,
                                         "case_id": hit.case_id, "id_kind": hit.kind.value, "event_id": hit.event_id})
        return Observation(EventKind.ALARM, ev.source_id, ev.ts, attrs={
            "code": "watch_hit", "message": f"{hit.kind.value} on watch-list {hit.list_id}", "severity": "critical",
            "id_kind": hit.kind.value, "list_id": hit.list_id, "list_version": hit.list_version,
            "case_id": hit.case_id})

    # -- state -----------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """Lists in force, hits and refusals by reason (no pseudonyms: the platform has the lists)."""
        now = self._clock()
        with self._lock:
            return {"lists": {lid: {"version": wl.version, "case_id": wl.case_id, "entries": len(wl.entries),
                                    "expires_at": wl.expires_at, "live": wl.live(now)}
                              for lid, wl in sorted(self._lists.items())},
                    "hits": self.hits, "refused": dict(self.refused)}

    def _audit_append(self, action: str, details: Mapping[str, Any]) -> None:
        if self._audit is not None:
            self._audit.append("watchlist", action, details)

    def _save(self) -> None:
        if self._path is None:
            return
        state = {"high": self._high, "lists": list(self._payloads.values())}
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            # Keep the mode of the file replaced: the installer pre-creates it group-readable for the
            # capture daemon (systemd/edgegw.tmpfiles.conf), which a 0077 umask would otherwise undo.
            mode = self._path.stat().st_mode & 0o660
        except FileNotFoundError:
            mode = 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)  # a crash mid-write leaves the previous state, never half of one
        st = self._path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> None:
        if self._path is None or not self._path.exists():
            return
        try:
            st = self._path.stat()
            self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            text = self._path.read_text(encoding="utf-8")
            # An empty file is the installer's pre-created one (tmpfiles): no list accepted yet.
            state = json.loads(text) if text.strip() else {"high": {}, "lists": []}
            high = {str(k): int(v) for k, v in state["high"].items()}
            payloads = list(state["lists"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Refuse to start rather than forget the high-water marks: that would reopen replay.
            raise EdgeError(f"{self._path}: unreadable watch-list state ({exc}); restore it or delete it on "
                            "purpose to accept any version again") from None
        self._high = high
        now = self._clock()
        for obj in payloads:
            try:  # every stored list is verified again: the file is not trusted more than the network
                wl, verified = verify_watchlist(canonical(obj), self._key)
            except WatchlistRefusedError as exc:
                log.error("dropping a stored watch-list that no longer verifies: %s", exc)
                continue
            if wl.district == self._district and now < wl.expires_at:
                self._install(wl, verified)
                self._high[wl.list_id] = max(high.get(wl.list_id, 0), wl.version)

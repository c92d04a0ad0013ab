"""Keyed pseudonyms: HMAC-SHA256 under per-epoch keys (derived by the district's key service, see
`edge.privacy.epochkeys`).

A pseudonym is stable within an epoch (so the platform can count repeat visits) and unlinkable
across epochs, across identifier kinds and, for resident ids, across communities (domain
separation), and cannot be reversed without that epoch's key. Police queries recompute them for
each epoch in a time range whose key the gateway still holds.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from edge.compat import UTC
from edge.privacy.config import EpochPolicy
from edge.privacy.epochkeys import EpochKeyMissingError, EpochKeySource, RootKeySource
from edge.privacy.normalise import normalise
from edge.types import IdKind

PSEUDONYM_BYTES = 16  # 128 bits: the floor, and short enough for topic-free payloads


def epoch_label(policy: EpochPolicy, ts: float) -> str:
    """The epoch containing UTC time `ts` (e.g. 2026-11, 2026-W48, 2026-11-24)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if policy is EpochPolicy.MONTH:
        return f"{dt.year:04d}-{dt.month:02d}"
    if policy is EpochPolicy.WEEK:
        iso = dt.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return dt.strftime("%Y-%m-%d")


def epoch_bounds(policy: EpochPolicy, ts: float) -> tuple[float, float]:
    """[start, end) of the epoch containing `ts`, in UTC seconds."""
    dt = datetime.fromtimestamp(ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if policy is EpochPolicy.MONTH:
        start = dt.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    elif policy is EpochPolicy.WEEK:
        start = dt - timedelta(days=dt.weekday())
        end = start + timedelta(days=7)
    else:
        start, end = dt, dt + timedelta(days=1)
    return start.timestamp(), end.timestamp()


def epochs_between(policy: EpochPolicy, t1: float, t2: float) -> list[str]:
    """Every epoch label that overlaps [t1, t2], in order."""
    if t2 < t1:
        t1, t2 = t2, t1
    labels: list[str] = []
    day = datetime.fromtimestamp(t1, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = datetime.fromtimestamp(t2, UTC)
    while day <= end:
        label = epoch_label(policy, day.timestamp())
        if not labels or labels[-1] != label:
            labels.append(label)
        day += timedelta(days=1)
    return labels


class Pseudonymiser:
    """Computes pseudonyms with epoch keys from an `EpochKeySource`.

    On a gateway the source is its `EpochKeyring` (the wrapped epoch keys delivered by the district's
    key service; the root key is never there). Passing root key bytes derives every epoch key
    locally (`RootKeySource`): that is the district side, and tests.
    """

    def __init__(self, keys: EpochKeySource | bytes, policy: EpochPolicy = EpochPolicy.MONTH, *,
                 community: str = "") -> None:
        if isinstance(keys, bytes | bytearray):
            keys = RootKeySource(bytes(keys), community)
        self._keys: EpochKeySource = keys
        self.policy = policy

    @property
    def keys(self) -> EpochKeySource:
        """Where the epoch keys come from."""
        return self._keys

    def key_id(self, label: str, kind: IdKind = IdKind.PLATE) -> str:
        """The published key id of epoch `label`: `<root fingerprint>.<label>` (EpochKeyMissingError without it)."""
        return f"{self._keys.epoch_key(kind, label)[1]}.{label}"

    def pseudonym_with_id(self, kind: IdKind, value: str, label: str) -> tuple[str, str]:
        """(pseudonym, key_id) of `value` in epoch `label`; EpochKeyMissingError without that epoch's key."""
        canonical = normalise(kind, value)
        key, root = self._keys.epoch_key(kind, label)
        mac = hmac.new(key, canonical.encode(), hashlib.sha256).digest()
        return mac[:PSEUDONYM_BYTES].hex(), f"{root}.{label}"

    def pseudonym_in(self, kind: IdKind, value: str, label: str) -> str:
        """The pseudonym of `value` in epoch `label` (value is normalised first)."""
        return self.pseudonym_with_id(kind, value, label)[0]

    def pseudonym_at(self, kind: IdKind, value: str, ts: float) -> tuple[str, str]:
        """(pseudonym, key_id) of `value` for an event at time `ts`."""
        return self.pseudonym_with_id(kind, value, epoch_label(self.policy, ts))

    def pseudonyms_between(self, kind: IdKind, value: str, t1: float, t2: float) -> list[tuple[str, str]]:
        """(pseudonym, key_id) for every epoch overlapping [t1, t2] whose key is held: what a query must match.

        Epochs whose key is gone (past the window) are skipped: nothing stored under them is kept.
        """
        out = []
        for label in epochs_between(self.policy, t1, t2):
            try:
                out.append(self.pseudonym_with_id(kind, value, label))
            except EpochKeyMissingError:
                continue
        return out

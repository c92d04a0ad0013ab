"""Keyed pseudonyms: HMAC-SHA256 under per-epoch keys derived with HKDF from the district key.

A pseudonym is stable within an epoch (so the platform can count repeat visits) and unlinkable
across epochs and across identifier kinds (domain separation), and cannot be reversed without the
district key. Police queries recompute them for each epoch in a time range.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.compat import UTC
from edge.privacy.config import EpochPolicy
from edge.privacy.normalise import normalise
from edge.types import IdKind

PSEUDONYM_BYTES = 16  # 128 bits: the floor, and short enough for topic-free payloads
_SALT = b"edgegw/pseudonym/v1"


def epoch_label(policy: EpochPolicy, ts: float) -> str:
    """The epoch containing UTC time `ts` (e.g. 2026-11, 2026-W48, 2026-11-24)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if policy is EpochPolicy.MONTH:
        return f"{dt.year:04d}-{dt.month:02d}"
    if policy is EpochPolicy.WEEK:
        iso = dt.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return dt.strftime("%Y-%m-%d")


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
    """Derives epoch keys from the district key and computes pseudonyms with them."""

    def __init__(self, district_key: bytes, policy: EpochPolicy = EpochPolicy.MONTH) -> None:
        if len(district_key) < 32:
            raise ValueError("the district key must be at least 32 bytes")
        self._key = district_key
        self.policy = policy
        # The key id names the district key (by fingerprint) and the epoch, never the key itself.
        self.key_fingerprint = hashlib.sha256(b"edgegw/key-id/v1\x00" + district_key).hexdigest()[:8]
        self._derive = lru_cache(maxsize=64)(self._derive_uncached)

    def _derive_uncached(self, kind: IdKind, label: str) -> bytes:
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=_SALT,
            info=f"edgegw pseudonym|{kind.value}|{label}".encode(),
        )
        return hkdf.derive(self._key)

    def key_id(self, label: str) -> str:
        """The published key id for an epoch: district-key fingerprint plus epoch label."""
        return f"{self.key_fingerprint}.{label}"

    def pseudonym_in(self, kind: IdKind, value: str, label: str) -> str:
        """The pseudonym of `value` in epoch `label` (value is normalised first)."""
        canonical = normalise(kind, value)
        mac = hmac.new(self._derive(kind, label), canonical.encode(), hashlib.sha256).digest()
        return mac[:PSEUDONYM_BYTES].hex()

    def pseudonym_at(self, kind: IdKind, value: str, ts: float) -> tuple[str, str]:
        """(pseudonym, key_id) of `value` for an event at time `ts`."""
        label = epoch_label(self.policy, ts)
        return self.pseudonym_in(kind, value, label), self.key_id(label)

    def pseudonyms_between(self, kind: IdKind, value: str, t1: float, t2: float) -> list[tuple[str, str]]:
        """(pseudonym, key_id) for every epoch overlapping [t1, t2]: what a query must match."""
        return [
            (self.pseudonym_in(kind, value, label), self.key_id(label))
            for label in epochs_between(self.policy, t1, t2)
        ]

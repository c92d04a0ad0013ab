"""Pseudonyms: known answers, normalisation, domain separation, epochs, and the boundary."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from edge.errors import PrivacyError
from edge.keys import key_fingerprint
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.config import EpochPolicy
from edge.privacy.normalise import normalise
from edge.privacy.pseudonym import Pseudonymiser, epoch_label, epochs_between
from edge.types import EventKind, IdKind, Observation, Origin, RawIdentifier

KEY = bytes(range(32))
TS = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    # RFC 5869 written out independently of `cryptography`, to cross-check the implementation.
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def test_known_answer_matches_independent_rfc5869_hmac() -> None:
    p = Pseudonymiser(KEY, EpochPolicy.MONTH)
    key = _hkdf_sha256(KEY, b"edgegw/pseudonym/v1", b"edgegw pseudonym|plate|2025-11")
    expected = hmac.new(key, "辽B12345".encode(), hashlib.sha256).digest()[:16].hex()
    got, key_id = p.pseudonym_at(IdKind.PLATE, "辽B·12345", TS)
    assert got == expected
    # One fingerprint format: the key id names the root by what `edgegw keys generate` printed for it.
    assert key_id == f"{key_fingerprint(KEY)}.2025-11"


def test_known_answer_vector_is_stable() -> None:
    # Pinned once from the implementation above; a change here breaks every stored pseudonym.
    p = Pseudonymiser(KEY, EpochPolicy.MONTH)
    assert p.pseudonym_in(IdKind.MAC, "AA-BB-CC-DD-EE-FF", "2025-11") == p.pseudonym_in(
        IdKind.MAC, "aa:bb:cc:dd:ee:ff", "2025-11")
    domain = b"key-id"
    assert key_fingerprint(KEY) == hashlib.sha256(b"edgegw/key-fingerprint/v1" + len(domain).to_bytes(2, "big")
                                                  + domain + KEY).hexdigest()[:16]
    assert len(p.pseudonym_in(IdKind.CARD, "04A1B2C3", "2025-11")) == 32  # 128 bits


@pytest.mark.parametrize(
    ("kind", "a", "b"),
    [
        (IdKind.PLATE, "辽B·12345", "辽b 12345"),
        (IdKind.PLATE, "粤B-D12345", "粤BD12345"),
        (IdKind.MAC, "AA:BB:CC:00:11:22", "aabb.cc00.1122"),
        (IdKind.CARD, "0x04a1b2c3", "04:A1:B2:C3"),
    ],
)
def test_normalisation_gives_one_pseudonym_per_identifier(kind: IdKind, a: str, b: str) -> None:
    p = Pseudonymiser(KEY)
    assert p.pseudonym_at(kind, a, TS) == p.pseudonym_at(kind, b, TS)


def test_domain_separation_and_epochs() -> None:
    p = Pseudonymiser(KEY, EpochPolicy.MONTH)
    card = p.pseudonym_in(IdKind.CARD, "AABBCCDDEEFF", "2025-11")
    mac = p.pseudonym_in(IdKind.MAC, "AABBCCDDEEFF", "2025-11")
    assert card != mac
    assert p.pseudonym_in(IdKind.CARD, "AABBCCDDEEFF", "2025-12") != card
    other = Pseudonymiser(bytes(reversed(KEY)))
    assert other.pseudonym_in(IdKind.CARD, "AABBCCDDEEFF", "2025-11") != card


def test_epoch_labels_and_ranges() -> None:
    assert epoch_label(EpochPolicy.MONTH, TS) == "2025-11"
    assert epoch_label(EpochPolicy.WEEK, TS) == "2025-W48"
    assert epoch_label(EpochPolicy.DAY, TS) == "2025-11-24"
    assert epochs_between(EpochPolicy.MONTH, TS, TS + 40 * 86400) == ["2025-11", "2025-12", "2026-01"]
    p = Pseudonymiser(KEY, EpochPolicy.MONTH)
    assert len(p.pseudonyms_between(IdKind.PLATE, "辽B12345", TS, TS + 10 * 86400)) == 2


@pytest.mark.parametrize(("kind", "value"), [(IdKind.MAC, "zz:bb"), (IdKind.CARD, "12-XY"), (IdKind.PLATE, "A1")])
def test_invalid_identifiers_are_refused_without_echoing_them(kind: IdKind, value: str) -> None:
    with pytest.raises(PrivacyError) as err:
        normalise(kind, value)
    assert value not in str(err.value)


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Pseudonymiser(b"short")


def test_boundary_keeps_raw_values_and_embeddings_behind() -> None:
    import numpy as np

    boundary = PrivacyBoundary(Pseudonymiser(KEY), Origin("d1", "c1", "g1"))
    obs = Observation(EventKind.CARD_SWIPE, "reader1", TS, subject=RawIdentifier(IdKind.CARD, "04A1B2C3"),
                      attrs={"format": "mifare"}, embedding=np.ones(128, np.float32))
    ev = boundary.to_event(obs)
    assert ev.subject is not None and ev.subject.pseudonym is not None
    assert "04A1B2C3" not in repr(ev)
    assert "04A1B2C3" not in repr(obs)
    assert not hasattr(ev, "embedding")
    unknown = boundary.to_event(Observation(EventKind.FACE_PASSAGE, "cam", TS, subject_ref="ab" * 8,
                                            attrs={"matched": False, "quality": 0.5, "frames": 3,
                                                   "duration_s": 1.0}))
    assert unknown.subject is not None and unknown.subject.type == "unknown_face"
    assert unknown.subject.pseudonym is None


def test_attributes_must_be_scalars() -> None:
    import numpy as np

    with pytest.raises(TypeError, match="only scalars"):
        Observation(EventKind.ALARM, "x", TS, attrs={"crop": np.zeros(3)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="only scalars"):
        Observation(EventKind.ALARM, "x", TS, attrs={"raw": b"\x01\x02"})  # type: ignore[dict-item]

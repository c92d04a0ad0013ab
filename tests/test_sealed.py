"""AES-256-GCM sealing (format, tamper detection) and per-epoch data keys with crypto-shredding."""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.keys import generate_key_file, key_id, load_key_file
from edge.sealed import (
    HEADER_BYTES,
    KEY_ID_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    EpochKeyStore,
    KeyDestroyedError,
    Sealer,
    SealError,
)

KEY = bytes(range(32))
AAD = b"passage:0190f3c2-plate"


def test_round_trip_and_layout() -> None:
    sealer = Sealer(KEY)
    plaintext = b"AB 123 CD"
    blob = sealer.seal(plaintext, AAD)
    assert len(blob) == 1 + KEY_ID_BYTES + NONCE_BYTES + len(plaintext) + TAG_BYTES
    assert blob[0] == 1
    assert blob[1:9] == key_id(KEY, domain="sealer") == sealer.key_id
    assert plaintext not in blob
    assert sealer.open(blob, AAD) == plaintext
    assert Sealer(KEY).open(blob, AAD) == plaintext  # a new instance with the same key opens it
    again = sealer.seal(plaintext, AAD)
    assert again != blob and again[9:21] != blob[9:21]  # fresh random nonce each time
    assert sealer.open(sealer.seal(b"", AAD), AAD) == b""


def test_known_answer_blob_built_independently() -> None:
    # Pins the documented format: a blob assembled by hand with a fixed nonce must open.
    nonce = bytes(range(100, 112))
    header = b"\x01" + key_id(KEY, domain="sealer") + nonce
    full_aad = b"edgegw/sealed/v1" + header + struct.pack(">I", len(AAD)) + AAD
    blob = header + AESGCM(KEY).encrypt(nonce, b"card 04A1B2C3", full_aad)
    assert Sealer(KEY).open(blob, AAD) == b"card 04A1B2C3"


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (0, "unknown format version"),
        (1, "made under key"),
        (1 + KEY_ID_BYTES, "failed authentication"),  # nonce
        (HEADER_BYTES, "failed authentication"),  # ciphertext
        (-1, "failed authentication"),  # tag
    ],
    ids=["version", "key-id", "nonce", "ciphertext", "tag"],
)
def test_any_flipped_bit_is_detected(offset: int, reason: str) -> None:
    sealer = Sealer(KEY)
    blob = bytearray(sealer.seal(b"secret plate", AAD))
    blob[offset] ^= 0x01
    with pytest.raises(SealError, match=reason):
        sealer.open(bytes(blob), AAD)


def test_wrong_aad_wrong_key_and_truncation_are_clear() -> None:
    sealer = Sealer(KEY)
    blob = sealer.seal(b"secret", AAD)
    with pytest.raises(SealError, match="different context"):
        sealer.open(blob, b"passage:another-row")
    other = Sealer(os.urandom(32))
    with pytest.raises(SealError, match=f"made under key {sealer.key_id.hex()}.*wrong key"):
        other.open(blob, AAD)
    with pytest.raises(SealError, match="truncated"):
        sealer.open(blob[: HEADER_BYTES + TAG_BYTES - 1], AAD)
    with pytest.raises(SealError, match="32 bytes"):
        Sealer(KEY[:16])


def test_repr_does_not_reveal_the_key() -> None:
    text = repr(Sealer(KEY))
    assert KEY.hex() not in text and KEY.hex()[:8] not in text


@pytest.fixture
def master(tmp_path: Path) -> bytes:
    path = tmp_path / "storage-master.key"
    generate_key_file(path)
    return load_key_file(path, purpose="storage master")


def test_epoch_keys_persist_and_differ(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    with EpochKeyStore(db, master) as store:
        may = store.key_for("2025-05")
        june = store.key_for("2025-06")
        assert may.key_id != june.key_id
        assert store.key_for("2025-05").key_id == may.key_id  # created once
        blob = store.seal("2025-05", b"plate AB123", b"row-1")
        with pytest.raises(SealError):
            june.open(blob, b"row-1")
        assert [e.label for e in store.epochs()] == ["2025-05", "2025-06"]
        journal = store._db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = store._db.execute("PRAGMA synchronous").fetchone()[0]
        assert (journal, sync) == ("wal", 2)  # 2 = FULL
    with EpochKeyStore(db, master) as reopened:
        assert reopened.open("2025-05", blob, b"row-1") == b"plate AB123"


def test_data_keys_are_stored_wrapped(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    with EpochKeyStore(db, master) as store:
        store.key_for("2025-05")
    con = sqlite3.connect(db)
    (wrapped,) = con.execute("SELECT wrapped FROM epoch_keys WHERE label = '2025-05'").fetchone()
    con.close()
    # The row opens only under the master key and only for its own label.
    data_key = Sealer(master).open(wrapped, b"edgegw/epoch-key/v1\0" + b"2025-05")
    assert len(data_key) == 32 and data_key not in wrapped
    with pytest.raises(SealError):
        Sealer(master).open(wrapped, b"edgegw/epoch-key/v1\0" + b"2025-06")


def test_wrong_master_key_is_refused_clearly(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    with EpochKeyStore(db, master) as store:
        store.key_for("2025-05")
    with pytest.raises(SealError, match=r"wrapped under master key .* \(wrong key file\?\)"):
        EpochKeyStore(db, os.urandom(32))


def test_destroy_shreds_the_epoch(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    store = EpochKeyStore(db, master)
    blob = store.seal("2025-04", b"MAC aa:bb:cc:dd:ee:ff", b"row-7")
    keep = store.seal("2025-05", b"plate XY987", b"row-8")
    (wrapped,) = store._db.execute("SELECT wrapped FROM epoch_keys WHERE label = '2025-04'").fetchone()
    key_hex = store.key_for("2025-04").key_id.hex()

    record = store.destroy("2025-04")
    assert (record.label, record.key_id) == ("2025-04", key_hex)
    # The wrapped key is gone from the files themselves (secure_delete + WAL truncation), checked
    # while the store is open (closing would checkpoint the WAL anyway).
    wal = db.with_name(db.name + "-wal")
    assert wal.exists()
    for path in (db, wal):
        assert bytes(wrapped) not in path.read_bytes()

    with pytest.raises(KeyDestroyedError, match=r"destroyed at .* \(crypto-shredded\)"):
        store.open("2025-04", blob, b"row-7")
    with pytest.raises(KeyDestroyedError):
        store.key_for("2025-04")  # never silently re-created
    assert store.open("2025-05", keep, b"row-8") == b"plate XY987"  # other epochs untouched
    assert store.destroy("2025-04") == record  # idempotent
    assert [d.label for d in store.destroyed()] == ["2025-04"]
    store.close()

    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM epoch_keys WHERE label = '2025-04'").fetchone() == (0,)
    con.close()
    # A fresh process with the master key cannot get it back either.
    with EpochKeyStore(db, master) as again, pytest.raises(KeyDestroyedError):
        again.open("2025-04", blob, b"row-7")


def test_destroy_in_one_process_stops_another_at_once(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    with EpochKeyStore(db, master) as reader, EpochKeyStore(db, master) as purger:
        blob = reader.seal("2025-03", b"x", b"a")
        assert reader.open("2025-03", blob, b"a") == b"x"  # now cached in `reader`
        purger.destroy("2025-03")
        with pytest.raises(KeyDestroyedError):
            reader.open("2025-03", blob, b"a")


def test_unknown_epoch_and_bad_labels(tmp_path: Path, master: bytes) -> None:
    with EpochKeyStore(tmp_path / "keys.db", master) as store:
        with pytest.raises(SealError, match="no data key for epoch"):
            store.existing("1999-01")
        with pytest.raises(SealError, match="no data key for epoch"):
            store.destroy("1999-01")
        for bad in ("", "x" * 65, "a\nb"):
            with pytest.raises(SealError, match="epoch label"):
                store.key_for(bad)
        assert store.epochs() == []  # `existing` never creates


def test_rotate_master_rewraps_every_key(tmp_path: Path, master: bytes) -> None:
    db = tmp_path / "keys.db"
    new_master = os.urandom(32)
    with EpochKeyStore(db, master) as store:
        blobs = {label: store.seal(label, label.encode(), b"ctx") for label in ("2025-01", "2025-02")}
        store.rotate_master(new_master)
        assert store.master_key_id == key_id(new_master, domain="sealer").hex()
    with pytest.raises(SealError, match="wrapped under master key"):
        EpochKeyStore(db, master)
    with EpochKeyStore(db, new_master) as store:
        for label, blob in blobs.items():
            assert store.open(label, blob, b"ctx") == label.encode()

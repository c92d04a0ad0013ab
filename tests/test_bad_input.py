"""Issue 12, bad input at every door: decompression bombs, 16-bit PNGs, loose secret files, file modes."""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import DriverError, KeyFileError
from edge.keys import read_private_text
from edge.sqlite import connect
from edge.vision.faces import ImageError, decode_image, read_image
from edge.vision.imagesize import image_size
from tests.conftest import SHARED_DATA

FACES = SHARED_DATA / "faces" / "face_recognition"


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + end


def test_a_png_claiming_100000x100000_is_refused_from_its_header() -> None:
    bomb = _png_header(100_000, 100_000)
    assert len(bomb) < 70 and image_size(bomb) == ("png", 100_000, 100_000)
    with pytest.raises(ImageError, match=r"10000\.0 MP"):
        decode_image(bomb, "the photo")


def test_a_real_jpeg_bomb_is_refused_before_decoding() -> None:
    # A large, flat image compresses to almost nothing; at 400 MP it would take over a gigabyte to decode.
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(jpeg.tobytes())
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):  # walk to the frame header and lie about the size
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", 20000, 20000)
    assert image_size(bytes(data))[1:] == (20000, 20000)
    with pytest.raises(ImageError, match="MP"):
        decode_image(bytes(data))


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"II*\x00 a TIFF", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])
def test_unsizable_or_truncated_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode_image(data)


def test_ordinary_images_still_decode_in_every_accepted_format(tmp_path: Path) -> None:
    image = np.full((48, 64, 3), 120, np.uint8)
    for ext in (".png", ".jpg", ".webp", ".bmp"):
        ok, data = cv2.imencode(ext, image)
        assert ok
        assert image_size(data.tobytes())[1:] == (64, 48), ext
        assert decode_image(data.tobytes()).shape == (48, 64, 3)


def test_a_16_bit_png_reads_as_8_bit_bgr(tmp_path: Path) -> None:
    # Issue 12: a 16-bit PNG crashed `residents enrol` (it read the file unchanged, as uint16).
    photo = cv2.imread(str(FACES / "obama" / "obama.jpg"))
    assert photo is not None
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), photo.astype(np.uint16) * 257)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == photo.shape


def test_secret_files_others_can_read_are_refused(tmp_path: Path) -> None:
    from drivers.camera.capture import read_credentials

    path = tmp_path / "secret"
    path.write_text("user:hunter2\n")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600") as err:
        read_private_text(path, purpose="MQTT password")
    assert "hunter2" not in str(err.value)
    with pytest.raises(DriverError, match="chmod 600"):
        read_credentials(path)
    path.chmod(0o600)
    assert read_private_text(path, purpose="MQTT password") == "user:hunter2\n"
    assert read_credentials(path) == ("user", "hunter2")


def test_mqtt_password_and_tls_key_get_the_key_file_check(tmp_path: Path) -> None:
    from edge.app.config import load_config
    from edge.app.wiring import mqtt_password

    data = tmp_path / "data"
    data.mkdir()
    (data / "mqtt.pw").write_text("s3cret\n")
    (data / "tls.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    os.chmod(data / "mqtt.pw", 0o644)
    os.chmod(data / "tls.key", 0o600)
    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\ndistrict = "d"\ncommunity = "c"\ngateway = "g"\ndata_dir = "data"\n\n'
                      f'[mqtt]\nusername = "gw"\npassword_file = "{data / "mqtt.pw"}"\n'
                      f'tls = {{ key_file = "{data / "tls.key"}", cert_file = "{data / "tls.key"}" }}\n')
    cfg = load_config(config)
    with pytest.raises(KeyFileError, match="MQTT password"):
        mqtt_password(cfg)
    os.chmod(data / "mqtt.pw", 0o600)
    assert mqtt_password(cfg) == "s3cret"
    os.chmod(data / "tls.key", 0o640)
    with pytest.raises(KeyFileError, match="TLS private key"):
        mqtt_password(cfg)


def test_databases_are_created_0600_whatever_the_umask_with_secure_delete(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = connect(tmp_path / "any.db")
        db.execute("CREATE TABLE t (x)")
        db.execute("INSERT INTO t VALUES ('a secret row')")
        assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        for name in ("any.db", "any.db-wal", "any.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
        db.execute("DELETE FROM t")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    finally:
        os.umask(old)
    assert b"a secret row" not in (tmp_path / "any.db").read_bytes()
    with pytest.raises(sqlite3.Error):
        sqlite3.connect(tmp_path / "none" / "x.db")  # (sanity: sqlite itself still raises its own errors)


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('[mqtt]\nprotocol = "3.1.1"\n\n[query.mqtt]\nenabled = true\n', "query.mqtt.enabled", "MQTT 5"),
    ("[query]\nphoto_threshold = -0.5\n", "query.photo_threshold", "nearly every stored face"),
    ('[query.http]\nbind = "0.0.0.0"\n', "query.http.bind", "without TLS"),
    ('[query.http]\nbind = "192.168.1.20"\ntls_cert_file = "c.pem"\n', "query.http.bind", "without TLS"),
])
def test_config_check_enforces_cross_field_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 extra: str, key: str, words: str) -> None:
    from edge.cli import main

    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\ndistrict = "d"\ncommunity = "c"\ngateway = "g"\ndata_dir = "data"\n\n' + extra)
    assert main(["config", "check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"key '{key}'" in err and words in err and f"{config}:" in err


def test_config_check_accepts_the_safe_versions(tmp_path: Path) -> None:
    from edge.app.config import load_config

    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\ndistrict = "d"\ncommunity = "c"\ngateway = "g"\ndata_dir = "data"\n\n'
                      '[query]\nphoto_threshold = 0.4\n\n[query.http]\nbind = "::1"\n\n[query.mqtt]\nenabled = true\n')
    assert load_config(config).query.http.bind == "::1"


def test_the_query_photo_embedder_refuses_a_bomb_before_loading_or_decoding(tmp_path: Path) -> None:
    from edge.app.query import LazyFaceEmbedder
    from edge.models.config import RuntimeOptions
    from edge.query.service import PhotoError

    embedder = LazyFaceEmbedder(tmp_path / "no-models-here", RuntimeOptions(), 0.6, max_megapixels=40)
    with pytest.raises(PhotoError, match="MP"):
        embedder(_png_header(100_000, 100_000))


def test_the_outbox_too_is_0600_with_secure_delete(tmp_path: Path) -> None:
    from edge.outbox import Outbox, OutboxLimits

    old = os.umask(0o002)
    try:
        outbox = Outbox(tmp_path / "outbox.db", limits=OutboxLimits(min_free_bytes=0))
        try:
            assert outbox._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        finally:
            outbox.close()
    finally:
        os.umask(old)
    assert (tmp_path / "outbox.db").stat().st_mode & 0o777 == 0o600

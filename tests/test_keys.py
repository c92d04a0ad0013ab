"""Key files: formats, permission refusal, systemd credentials, atomic generation, fingerprints, CLI."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import KeyFileError
from edge.keys import (
    generate_key_file,
    key_fingerprint,
    key_id,
    load_key_file,
    load_secret,
    resolve_secret_path,
)

KEY = bytes(range(1, 33))  # 32 distinct bytes


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "content",
    [
        KEY,
        KEY.hex().encode() + b"\n",
        KEY.hex().upper().encode(),
        base64.b64encode(KEY) + b"\n",
        base64.urlsafe_b64encode(KEY).rstrip(b"="),
        b"  " + KEY.hex().encode() + b"\r\n",
    ],
    ids=["raw", "hex", "HEX", "base64", "base64url-nopad", "hex-crlf"],
)
def test_every_format_loads_the_same_key(tmp_path: Path, content: bytes) -> None:
    path = _write(tmp_path / "k", content)
    assert load_key_file(path, purpose="test") == KEY


def test_raw_key_with_newline_byte_is_kept_verbatim(tmp_path: Path) -> None:
    raw = os.urandom(31) + b"\n"  # binary content: trailing bytes belong to the key
    while raw.count(b"\n") > 1 or len(set(raw)) == 1:
        raw = os.urandom(31) + b"\n"
    assert load_key_file(_write(tmp_path / "k", raw), purpose="test") == raw


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666])
def test_group_or_other_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "pseudonym.key", KEY.hex().encode(), mode)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path, purpose="pseudonym")
    msg = str(info.value)
    assert str(path) in msg
    assert f"{mode:04o}" in msg
    assert f"chmod 600 {path}" in msg
    assert "pseudonym" in msg
    path.chmod(0o600)  # the advertised fix works
    assert load_key_file(path, purpose="pseudonym") == KEY


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    assert load_key_file(_write(tmp_path / "k", KEY, mode), purpose="t") == KEY


def _acl_blob(entries: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _set_acl(path: Path, entries: list[tuple[int, int, int]]) -> None:
    try:
        os.setxattr(path, "system.posix_acl_access", _acl_blob(entries))
    except OSError as exc:  # pragma: no cover - depends on the test file system
        pytest.skip(f"no POSIX ACL support on {path.parent}: {exc}")


def test_systemd_style_acl_for_this_user_is_accepted(tmp_path: Path) -> None:
    # systemd: credential 0400 root-owned plus user:<service>:r--, so stat shows mode 0440.
    path = _write(tmp_path / "cred", KEY, 0o400)
    nobody = 0xFFFFFFFF
    _set_acl(path, [(0x01, 4, nobody), (0x02, 4, os.geteuid()), (0x04, 0, nobody), (0x10, 4, nobody),
                    (0x20, 0, nobody)])
    assert stat.S_IMODE(path.stat().st_mode) & 0o040  # the mask shows up in the group bits
    assert load_key_file(path, purpose="t") == KEY


def test_acl_granting_another_user_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "cred", KEY, 0o600)
    nobody = 0xFFFFFFFF
    other_uid = os.geteuid() + 4242
    _set_acl(path, [(0x01, 6, nobody), (0x02, 4, other_uid), (0x04, 0, nobody), (0x10, 4, nobody),
                    (0x20, 0, nobody)])
    with pytest.raises(KeyFileError, match=f"user id {other_uid}"):
        load_key_file(path, purpose="t")
    path.chmod(0o600)  # chmod clears the mask, so the advertised fix also fixes this
    assert load_key_file(path, purpose="t") == KEY


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError, match=r"absent\.key does not exist"):
        load_key_file(path, purpose="storage")


def test_short_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "k", KEY[:16].hex().encode())
    with pytest.raises(KeyFileError, match="16-byte key; at least 32"):
        load_key_file(path, purpose="t")
    assert load_key_file(path, purpose="t", min_bytes=16) == KEY[:16]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"correct horse battery staple, but long enough\n", "neither hex nor base64"),
        (KEY.hex().encode() + b"\n" + KEY.hex().encode(), "several lines"),
        (b"\0" * 32, "placeholder"),
        (b"00" * 32, "placeholder"),
        (KEY.hex()[1:].encode() + b"\n", "odd number"),
    ],
)
def test_malformed_content_is_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    with pytest.raises(KeyFileError, match=reason):
        load_key_file(_write(tmp_path / "k", content), purpose="t")


def test_directory_and_oversized_files_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(folder, purpose="t")
    with pytest.raises(KeyFileError, match="larger than"):
        load_key_file(_write(tmp_path / "big", os.urandom(8192)), purpose="t")


def test_credential_name_is_found_in_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o500)
    _write(creds / "pseudonym-key", KEY.hex().encode(), 0o400)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert resolve_secret_path("pseudonym-key") == Path("pseudonym-key")  # no systemd: a plain path
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))  # read at call time, not at import
    assert resolve_secret_path("pseudonym-key") == creds / "pseudonym-key"
    assert load_secret("pseudonym-key", purpose="pseudonym") == KEY


def test_paths_are_never_looked_up_as_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    _write(creds / "k", KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    local = tmp_path / "sub"
    local.mkdir()
    other = os.urandom(32)
    _write(local / "k", other)
    monkeypatch.chdir(tmp_path)
    assert resolve_secret_path("sub/k") == Path("sub/k")
    assert resolve_secret_path("./k") == Path("./k")
    assert load_secret(tmp_path / "sub" / "k", purpose="t") == other
    # A bare name the service was not given falls back to the working directory, and says where it looked.
    with pytest.raises(KeyFileError, match="no credential 'missing' in"):
        load_secret("missing", purpose="t")


def test_generate_creates_owner_only_file_and_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "new.key"
    key = generate_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path, purpose="t") == key
    assert path.read_text().strip() == key.hex()
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(path)
    assert load_key_file(path, purpose="t") == key  # untouched
    replaced = generate_key_file(path, 48, force=True)
    assert replaced != key and len(replaced) == 48
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path, purpose="t") == replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.key"]  # no temporary files left


def test_generate_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_fingerprint_known_answer_and_domain_separation() -> None:
    expected = hashlib.sha256(b"edgegw/key-fingerprint/v1" + b"\x00\x06" + b"key-id" + KEY).hexdigest()[:16]
    assert key_fingerprint(KEY) == expected
    assert key_id(KEY) == bytes.fromhex(expected)
    assert key_fingerprint(KEY, domain="sealer") != expected
    assert key_fingerprint(KEY[::-1]) != expected
    assert len(key_fingerprint(KEY, nbytes=16)) == 32
    assert KEY.hex()[:16] not in key_fingerprint(KEY)


def test_cli_generate_and_fingerprint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "district.key"
    assert main(["keys", "generate", str(path)]) == 0
    out = capsys.readouterr().out
    key = load_key_file(path, purpose="t")
    assert key.hex() not in out  # the key never goes to the terminal
    assert key_fingerprint(key) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["keys", "generate", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["keys", "generate", str(path), "--force"]) == 0
    capsys.readouterr()
    new_key = load_key_file(path, purpose="t")
    assert new_key != key
    assert main(["keys", "fingerprint", str(path)]) == 0
    assert capsys.readouterr().out.split()[0] == key_fingerprint(new_key)
    path.chmod(0o644)
    assert main(["keys", "fingerprint", str(path)]) == 1
    assert f"chmod 600 {path}" in capsys.readouterr().err

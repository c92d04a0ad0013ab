"""Secret key files: strict loading (owner-only permissions), systemd credentials, generation, key ids.

A key file holds either the raw key bytes, or one text line with the key in hex or base64 (standard or
URL-safe alphabet, padding optional), optionally followed by a newline. Text is tried first: a file
whose content is a hex line is read as hex, then a base64 line as base64; anything else that is
printable ASCII is refused as a probable typo rather than used as a low-entropy "raw" key, and a line of
hex digits is always hex (an odd number of them is an error, not base64). Files that
`generate_key_file` writes hold one hex line, so they can be inspected, copied and passed to
`systemd-creds encrypt` without surprises.

A key file must be readable and writable by its owner only (no group or other bits; POSIX ACL entries
are honoured, see `_foreign_access`), or the caller refuses to start with a message that says how to
fix it. Under systemd, a bare credential name is looked up in $CREDENTIALS_DIRECTORY first.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
import os
import re
import shlex
import stat
import struct
from pathlib import Path

from edge.errors import KeyFileError

log = logging.getLogger(__name__)

_MAX_KEY_FILE_BYTES = 4096  # a key file is tiny; anything larger is the wrong file
_HEX_RE = re.compile(rb"[0-9a-fA-F]+")
_B64_RE = re.compile(rb"[A-Za-z0-9+/\-_]+={0,2}")
_PRINTABLE_RE = re.compile(rb"[\x20-\x7e\t\r\n]*")
_FINGERPRINT_DOMAIN = b"edgegw/key-fingerprint/v1"

# Linux POSIX ACL xattr layout (include/uapi/linux/posix_acl_xattr.h): a u32 version (2), then
# entries of (u16 tag, u16 perm, u32 id), little-endian.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER = 0x02
_ACL_GROUP_OBJ = 0x04
_ACL_GROUP = 0x08
_ACL_MASK = 0x10
_ACL_OTHER = 0x20
_ACL_READ_WRITE = 0x06


def resolve_secret_path(name_or_path: str | os.PathLike[str], base_dir: Path | None = None) -> Path:
    """Where a secret lives: the one rule for key files, token files and passwords.

    A bare name that is a systemd credential of this service (a file of that name in
    $CREDENTIALS_DIRECTORY) resolves there. Anything else is a path: absolute as given, relative to
    `base_dir` (the gateway's data directory) when one is given, else to the working directory. A
    value with a path separator (or `.`/`..`) is never taken as a credential name. The environment is
    read on each call (never at import), so the composition root and tests control it.
    """
    text = os.fspath(name_or_path)
    if _is_credential_name(text):
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            candidate = Path(cred_dir) / text
            if os.path.lexists(candidate):
                return candidate
    path = Path(text)
    return path if path.is_absolute() or base_dir is None else base_dir / path


def load_secret(name_or_path: str | os.PathLike[str], *, purpose: str, min_bytes: int = 32,
                base_dir: Path | None = None) -> bytes:
    """Resolve a credential name or path (`resolve_secret_path`) and load the key (`load_key_file`)."""
    return load_key_file(resolve_secret_path(name_or_path, base_dir), purpose=purpose, min_bytes=min_bytes)


def load_key_file(path: Path, *, purpose: str, min_bytes: int = 32) -> bytes:
    """Read a key from `path`, refusing files others can access, missing files and short keys.

    `purpose` names the key in error messages ("pseudonym", "storage master", ...).
    """
    label = f"{purpose} key file {path}"
    try:
        # O_NONBLOCK: opening a FIFO placed where the key should be must not hang the daemon.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError as exc:
        hint = _missing_hint(path)
        raise KeyFileError(f"{label} does not exist{hint}") from exc
    except OSError as exc:
        raise KeyFileError(f"{label} cannot be opened: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{label} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        foreign = _foreign_access(fd, mode, label)
        if foreign:
            # chmod also clears an ACL's mask, so it is the whole fix even where ACLs grant access.
            raise KeyFileError(
                f"{label} has mode {mode:04o} and can be {foreign}; a secret key must be readable by "
                f"its owner only. Fix: chmod 600 {shlex.quote(str(path))}"
            )
        content = _read_all(fd, _MAX_KEY_FILE_BYTES + 1)
        if len(content) > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{label} is larger than {_MAX_KEY_FILE_BYTES} bytes; a key file holds "
                               f"one key")
    except OSError as exc:
        raise KeyFileError(f"{label} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    key = _decode(content, label)
    if len(key) < min_bytes:
        raise KeyFileError(f"{label} holds a {len(key)}-byte key; at least {min_bytes} bytes are required "
                           f"(generate one with: edgegw keys generate PATH)")
    if len(set(key)) == 1:
        # All bytes equal (e.g. zeros) is a placeholder, never a generated key.
        raise KeyFileError(f"{label} holds a constant placeholder, not a random key")
    log.debug("loaded %s key %s (%d bytes)", purpose, key_fingerprint(key), len(key))
    return key


def read_private_text(path: Path, *, purpose: str, max_bytes: int = _MAX_KEY_FILE_BYTES) -> str:
    """The text of a secret that is not a key (a broker password, camera `user:password`, a TLS private key).

    The same rules as key files: a regular file, readable by its owner only (ACLs honoured), no FIFO
    hang, bounded size; KeyFileError says how to fix it. The content is never echoed.
    """
    label = f"{purpose} file {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError as exc:
        raise KeyFileError(f"{label} does not exist{_missing_hint(path)}") from exc
    except OSError as exc:
        raise KeyFileError(f"{label} cannot be opened: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{label} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        foreign = _foreign_access(fd, mode, label)
        if foreign:
            raise KeyFileError(f"{label} has mode {mode:04o} and can be {foreign}; a secret must be readable "
                               f"by its owner only. Fix: chmod 600 {shlex.quote(str(path))}")
        content = _read_all(fd, max_bytes + 1)
    except OSError as exc:
        raise KeyFileError(f"{label} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(content) > max_bytes:
        raise KeyFileError(f"{label} is larger than {max_bytes} bytes")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{label} is not UTF-8 text") from None


def check_private_file(path: Path, *, purpose: str, max_bytes: int = 1 << 20) -> None:
    """Refuse (KeyFileError) a secret file that others can read, e.g. a TLS private key handed to a library."""
    read_private_text(path, purpose=purpose, max_bytes=max_bytes)


def generate_key_file(path: Path, nbytes: int = 32, *, force: bool = False) -> bytes:
    """Create a new random key file (one hex line, mode 0600) atomically and return the key.

    The key is written to a private temporary file in the same folder, synced, then linked into place
    (which fails if `path` exists) or, with `force`, renamed over it; a crash never leaves a partial
    key at `path`.
    """
    if nbytes < 16:
        raise KeyFileError(f"refusing to generate a {nbytes}-byte key; use at least 16 bytes")
    path = Path(path)
    if not force and os.path.lexists(path):
        raise KeyFileError(f"key file {path} already exists; refusing to overwrite it (use --force to "
                           f"replace it, which makes data sealed under the old key unreadable)")
    folder = path.parent
    key = os.urandom(nbytes)
    tmp = folder / f".{path.name}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot create a key file in {folder}: {exc.strerror}") from exc
    try:
        try:
            os.fchmod(fd, 0o600)  # the umask may have removed bits; make it exactly owner rw
            _write_all(fd, key.hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise KeyFileError(f"key file {path} already exists; refusing to overwrite it") from exc
            os.unlink(tmp)
        _fsync_dir(folder)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return key


def key_id(key: bytes, *, domain: str = "key-id", nbytes: int = 8) -> bytes:
    """A short, non-secret identifier of `key`: the first `nbytes` of a domain-separated SHA-256.

    Input: b"edgegw/key-fingerprint/v1" || u16be(len(domain)) || domain (UTF-8) || key. The domain lets
    one key have unrelated ids in different roles; the length prefix keeps the encoding unambiguous.
    """
    if not 4 <= nbytes <= 32:
        raise ValueError("key id length must be 4..32 bytes")
    dom = domain.encode("utf-8")
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN + struct.pack(">H", len(dom)) + dom + key).digest()
    return digest[:nbytes]


def key_fingerprint(key: bytes, *, domain: str = "key-id", nbytes: int = 8) -> str:
    """`key_id` as lowercase hex (16 characters by default), for key ids in events, logs and status."""
    return key_id(key, domain=domain, nbytes=nbytes).hex()


def _is_credential_name(text: str) -> bool:
    seps = {os.sep} | ({os.altsep} if os.altsep else set())
    return bool(text) and text not in {".", ".."} and not any(s in text for s in seps) and "\0" not in text


def _missing_hint(path: Path) -> str:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and len(path.parts) == 1:
        if cred_dir:
            return f" (no credential {path.name!r} in $CREDENTIALS_DIRECTORY={cred_dir} either)"
        return " ($CREDENTIALS_DIRECTORY is not set, so it was not looked up as a systemd credential)"
    return ""


def _foreign_access(fd: int, mode: int, label: str) -> str:
    """Describe how someone other than the owner (or this process's user) can access the file; '' if not."""
    entries = _read_acl(fd, label)
    if entries is None:
        if mode & 0o077:
            return "read or written by group or others"
        return ""
    # With an ACL, the group bits of st_mode are the ACL mask, so the mode alone over-reports: systemd
    # grants a service's user read access to a root-owned 0400 credential with a named-user entry, which
    # shows as mode 0440. Judge the entries instead: a named user is fine only if it is us.
    mask = _ACL_READ_WRITE
    for tag, perm, _ident in entries:
        if tag == _ACL_MASK:
            mask = perm
    euid = os.geteuid()
    for tag, perm, ident in entries:
        if tag == _ACL_OTHER and perm & _ACL_READ_WRITE:
            return "read or written by others"
        if tag in (_ACL_GROUP_OBJ, _ACL_GROUP) and perm & mask & _ACL_READ_WRITE:
            return "read or written by a group (ACL)"
        if tag == _ACL_USER and ident != euid and perm & mask & _ACL_READ_WRITE:
            return f"read or written by user id {ident} (ACL)"
    return ""


def _read_acl(fd: int, label: str) -> list[tuple[int, int, int]] | None:
    """The file's POSIX access ACL entries, or None when it has none (or the platform has no xattrs)."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return None
    try:
        blob: bytes = getxattr(fd, _ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    if len(blob) < 4 or (len(blob) - 4) % 8 or struct.unpack_from("<I", blob)[0] != _ACL_VERSION:
        raise KeyFileError(f"{label} has an ACL this program cannot parse; remove it with setfacl -b")
    return [struct.unpack_from("<HHI", blob, off) for off in range(4, len(blob), 8)]


def _decode(content: bytes, label: str) -> bytes:
    text = content.strip()
    if not text:
        raise KeyFileError(f"{label} is empty")
    if _PRINTABLE_RE.fullmatch(content):
        if len(text.splitlines()) != 1:
            raise KeyFileError(f"{label} has several lines; it must hold one hex or base64 line")
        if _HEX_RE.fullmatch(text):
            # All hex digits means hex: an odd count is a damaged hex key, never base64 by accident.
            if len(text) % 2:
                raise KeyFileError(f"{label} holds an odd number ({len(text)}) of hex digits; a digit is missing")
            return bytes.fromhex(text.decode("ascii"))
        if _B64_RE.fullmatch(text):
            std = text.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
            try:
                return base64.b64decode(std + b"=" * (-len(std) % 4), validate=True)
            except binascii.Error:
                pass
        raise KeyFileError(f"{label} is text but neither hex nor base64; refusing to use it as a key")
    return content  # raw binary key: used as is, trailing bytes included


def _read_all(fd: int, limit: int) -> bytes:
    """Read up to `limit` bytes (stat sizes can lie, e.g. on procfs-like files)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    """Make a rename or link durable by syncing the folder that holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

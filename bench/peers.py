"""The bench's peers (face_recognition, agentclpr) in their own virtualenv under bench/, never in .venv.

`make bench` on a fresh machine must set its race up by itself. Each peer is pip-installed with
`--no-deps` plus exactly the packages it imports that the product does not already provide (numpy,
OpenCV and ONNX Runtime come from the product's venv, so both sides of a race use the same ones),
into `bench/.peer-venv` (git-ignored): face_recognition declares a `dlib` requirement that would
compile dlib from source (`dlib-bin` is the prebuilt wheel), and agentclpr pins versions the
product does not use.

The bench process imports a peer by appending that venv's site-packages to `sys.path` (after the
product's own entries, so the product's numpy wins). A path that did not exist when the process
first looked is cached by the import system as "nothing here": the cache entry is dropped after
installing, which is why an earlier harness reported "agentclpr is not importable" on the very run
that installed it.

`require()` raises `PeerMissingError` with the reason: the harness fails loudly rather than print a null
speed-up.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / "bench" / ".peer-venv"
MODELS_CACHE = ROOT / "models" / ".cache"


class PeerMissingError(RuntimeError):
    """A peer the race needs is not importable and could not be installed; the message says why."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer: the module to import and the exact packages (installed with --no-deps)."""

    name: str
    module: str
    packages: tuple[str, ...]
    wheel: str | None = None  # a cached wheel in models/.cache to prefer over the registry

    def requirements(self) -> list[str]:
        """The pip arguments: the cached wheel when there is one, then the pinned packages."""
        if self.wheel is not None and (MODELS_CACHE / self.wheel).is_file():
            first = str(MODELS_CACHE / self.wheel)
            return [first, *self.packages[1:]]
        return list(self.packages)


FACE_RECOGNITION = Peer(
    "face_recognition",
    "face_recognition",
    (
        "face_recognition==1.3.0",
        "dlib-bin>=19.24,<21",
        "face_recognition_models==0.3.0",
        "pillow>=10,<14",
        # face_recognition_models 0.3.0 imports pkg_resources, gone from setuptools 81.
        "setuptools>=65,<81",
    ),
)
AGENTCLPR = Peer(
    "agentclpr",
    "agentclpr",
    (
        "agentclpr==1.1.0",
        "agentocr==2.0.0",
        "shapely>=2,<3",
        "pyclipper>=1.3,<2",
        "six>=1.16",
        "wget==3.2",
        "pillow>=10,<14",
    ),
    wheel="agentclpr-1.1.0-py3-none-any.whl",
)
PEERS = {p.name: p for p in (FACE_RECOGNITION, AGENTCLPR)}


def site_packages(venv: Path = PEER_VENV) -> Path:
    """The peer venv's site-packages folder (same interpreter version as this process)."""
    v = sys.version_info
    return venv / "lib" / f"python{v.major}.{v.minor}" / "site-packages"


def _attach(venv: Path) -> None:
    path = str(site_packages(venv))
    if path not in sys.path:
        sys.path.append(path)  # appended: the product's packages win over anything here
    # Forget a "nothing here" finder cached before the folder existed.
    sys.path_importer_cache.pop(path, None)
    importlib.invalidate_caches()


def _import(peer: Peer) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(peer.module), None
    except Exception as exc:  # a broken peer install can raise anything at import
        return None, f"{peer.name} is not importable from {site_packages().relative_to(ROOT)}: " \
                     f"{type(exc).__name__}: {exc}"


def _create_venv(venv: Path) -> None:
    if (venv / "bin" / "python").exists():
        return
    done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise PeerMissingError(f"cannot create {venv}: {(done.stderr or done.stdout).strip()[-300:]}")


def install(peer: Peer, venv: Path = PEER_VENV) -> None:
    """pip-install the peer's exact packages into the peer venv (--no-deps); PeerMissingError on failure."""
    _create_venv(venv)
    # This process's pip installs into the peer venv's interpreter (pip --python): the peer venv
    # needs no pip of its own, and nothing lands in the product's venv.
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
           "--disable-pip-version-check", "--no-deps", *peer.requirements()]
    print(f"installing the {peer.name} peer into {venv.relative_to(ROOT)} (once) ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerMissingError(f"cannot install {peer.name}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:] or ["pip failed"]
        raise PeerMissingError(f"cannot install {peer.name}: {' / '.join(tail)}")


def load(name: str, *, install_missing: bool = True, venv: Path = PEER_VENV) -> ModuleType:
    """The peer's module, installing it into the peer venv first if needed and allowed."""
    peer = PEERS[name]
    _attach(venv)
    module, reason = _import(peer)
    if module is not None:
        return module
    if not install_missing:
        raise PeerMissingError(f"{reason} (run without --no-install to install it)")
    install(peer, venv)
    _attach(venv)
    module, reason = _import(peer)
    if module is None:
        raise PeerMissingError(f"installed, still {reason}")
    return module


def try_load(name: str, *, install_missing: bool = True) -> tuple[ModuleType | None, str | None]:
    """`load` as (module, None) or (None, reason)."""
    try:
        return load(name, install_missing=install_missing), None
    except PeerMissingError as exc:
        return None, str(exc)

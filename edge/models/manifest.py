"""The model manifest (models/manifest.toml): what to fetch, from where, and the hashes to trust."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edge.compat import tomllib
from edge.errors import ConfigError

# Graph fixes the fetcher knows how to apply (edge.models.fixes implements exactly these).
KNOWN_FIXES: frozenset[str] = frozenset({"dynamic-hw", "weights-as-initializers", "dynamic-batch", "prelu-as-relu",
                                        "prelu-as-dwconv", "slim-plate-recogniser"})


def fix_recipe(fixes: tuple[str, ...]) -> str | None:
    """The version of the code behind `fixes` when one of them depends on more than its name (the
    plate slimming: its rewrite version and plate alphabet), else None. `fetch` records it with the
    derived file and derives the file again when it changes."""
    from edge.plates import slimmed  # light: no onnx, no OpenCV

    return slimmed.recipe() if slimmed.FIX in fixes else None

DERIVED_SUFFIX = ".edge.onnx"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PYPI = re.compile(r"^pypi:(?P<dist>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)#(?P<member>[^#]+)$")
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIELDS = ("name", "file", "role", "source", "sha256", "license", "input")


@dataclass(frozen=True, slots=True)
class Source:
    """A parsed `source`: kind is "pypi", "file" or "url"; for pypi, dist/version/member are set."""

    kind: str
    location: str
    dist: str = ""
    version: str = ""
    member: str = ""

    @property
    def wheel_prefix(self) -> str:
        """The file-name prefix of the pinned wheel (PEP 427 normalised name and version)."""
        return f"{re.sub(r'[-_.]+', '_', self.dist).lower()}-{self.version}-"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One `[[model]]` entry of the manifest."""

    name: str
    file: str
    role: str
    source: str
    wheel_sha256: str | None
    sha256: str
    license: str
    input: str
    fixes: tuple[str, ...]

    @property
    def parsed_source(self) -> Source:
        """The source string, parsed (validated when the manifest was loaded)."""
        return parse_source(self.source)

    @property
    def derived_file(self) -> str | None:
        """The derived file name when the model has graph fixes, else None."""
        return f"{self.name}{DERIVED_SUFFIX}" if self.fixes else None

    @property
    def runtime_file(self) -> str:
        """The file the runtime loads: the derived one when there are fixes, else the original."""
        return self.derived_file or self.file


@dataclass(frozen=True, slots=True)
class Manifest:
    """All model entries, in file order, and the file they came from."""

    path: Path
    models: tuple[ModelSpec, ...]

    def get(self, name: str) -> ModelSpec:
        """The entry called `name`; ConfigError if there is none."""
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.models)
        raise ConfigError(f"{self.path}: no model named {name!r} (known: {known})")

    def select(self, names: tuple[str, ...]) -> Manifest:
        """A manifest restricted to `names` (all of them when empty)."""
        if not names:
            return self
        return Manifest(self.path, tuple(self.get(n) for n in names))


def default_manifest_path() -> Path:
    """The repository's models/manifest.toml, found relative to the package (edge/../models)."""
    # This module's own path, not edge.__file__: a stale editable install can make `edge` a
    # namespace package whose __file__ is None.
    return Path(__file__).resolve().parents[2] / "models" / "manifest.toml"


def default_models_dir() -> Path:
    """The repository's models/ folder, next to the default manifest."""
    return default_manifest_path().parent


def parse_source(source: str) -> Source:
    """Parse a `pypi:DIST==VER#PATH`, `file:PATH` or `https://...` source; ValueError if malformed."""
    if source.startswith("pypi:"):
        m = _PYPI.match(source)
        if m is None:
            raise ValueError(f"malformed pypi source {source!r}; expected pypi:DIST==VERSION#PATH/IN/WHEEL")
        member = m["member"]
        if member.startswith("/") or ".." in member.split("/"):
            raise ValueError(f"wheel member {member!r} must be a relative path inside the wheel")
        return Source("pypi", source, m["dist"], m["version"], member)
    if source.startswith("file:"):
        location = source.removeprefix("file:")
        if location.startswith("//"):
            location = location[2:]
        if not location:
            raise ValueError("file: source has no path")
        return Source("file", location)
    if source.startswith(("https://", "http://")):
        return Source("url", source)
    raise ValueError(f"unknown source scheme in {source!r}; use pypi:, file: or https:")


def _entry_error(path: Path, index: int, name: object, message: str) -> ConfigError:
    label = f"model {name!r}" if isinstance(name, str) else f"[[model]] #{index + 1}"
    return ConfigError(f"{path}: {label}: {message}")


def _spec(path: Path, index: int, raw: object) -> ModelSpec:
    if not isinstance(raw, dict):
        raise _entry_error(path, index, None, "is not a table")
    name = raw.get("name")
    unknown = sorted(set(raw) - {*_FIELDS, "wheel_sha256", "fixes"})
    if unknown:
        raise _entry_error(path, index, name, f"unknown key(s) {', '.join(unknown)}")
    for key in _FIELDS:
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _entry_error(path, index, name, f"key {key!r} is missing or not a non-empty string")
    spec_name: str = raw["name"]
    if not _SAFE_FILE.match(spec_name) or not _SAFE_FILE.match(raw["file"]):
        raise _entry_error(path, index, name, "name and file must be plain file names (letters, digits, . _ -)")
    if not _SHA256.match(raw["sha256"]):
        raise _entry_error(path, index, name, "sha256 must be 64 lower-case hex digits")
    try:
        source = parse_source(raw["source"])
    except ValueError as exc:
        raise _entry_error(path, index, name, str(exc)) from exc
    wheel_sha = raw.get("wheel_sha256")
    if wheel_sha is not None and (not isinstance(wheel_sha, str) or not _SHA256.match(wheel_sha)):
        raise _entry_error(path, index, name, "wheel_sha256 must be 64 lower-case hex digits")
    if source.kind == "pypi" and wheel_sha is None:
        raise _entry_error(path, index, name, "a pypi: source needs wheel_sha256 (the wheel is pinned too)")
    fixes = raw.get("fixes", [])
    if not isinstance(fixes, list) or not all(isinstance(f, str) for f in fixes):
        raise _entry_error(path, index, name, "fixes must be a list of strings")
    unknown_fixes = [f for f in fixes if f not in KNOWN_FIXES]
    if unknown_fixes:
        known = ", ".join(sorted(KNOWN_FIXES))
        raise _entry_error(path, index, name, f"unknown fix(es) {unknown_fixes} (known: {known})")
    if fixes and not raw["file"].endswith(".onnx"):
        raise _entry_error(path, index, name, "graph fixes apply to .onnx files only")
    return ModelSpec(
        name=spec_name,
        file=raw["file"],
        role=raw["role"],
        source=raw["source"],
        wheel_sha256=wheel_sha,
        sha256=raw["sha256"],
        license=raw["license"],
        input=raw["input"],
        fixes=tuple(fixes),
    )


def load_manifest(path: Path | None = None) -> Manifest:
    """Load and validate a manifest; ConfigError names the file and the offending entry."""
    path = path or default_manifest_path()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: manifest not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    entries = data.get("model")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[model]] entries")
    extra = sorted(set(data) - {"model"})
    if extra:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(extra)}")
    specs = tuple(_spec(path, i, raw) for i, raw in enumerate(entries))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise _entry_error(path, i, spec.name, "duplicate name")
        seen.add(spec.name)
    files = [s.file for s in specs] + [s.derived_file for s in specs if s.derived_file]
    dupes = sorted({f for f in files if files.count(f) > 1})
    if dupes:
        raise ConfigError(f"{path}: file name(s) {', '.join(dupes)} used by more than one entry")
    return Manifest(path, specs)


def model_path(models_dir: Path, name: str, manifest: Manifest | None = None) -> Path:
    """Where the runtime loads model `name` from: `<name>.edge.onnx` if it has fixes, else `<file>`."""
    spec = (manifest or load_manifest()).get(name)
    return models_dir / spec.runtime_file

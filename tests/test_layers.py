"""The floor plan, locked in: which package may import which (an AST walk), and what a process loads.

The rules (README, "Architecture"):
- no import cycles between project modules;
- only the composition root (edge.app) and the command line (edge.cli) import the root config;
- drivers import only edge's ground floor;
- the uplink wing reaches nothing of the capture side (pipeline, vision, plates, models, drivers),
  not even through another module;
- the district platform imports nothing of the capture side or of the gateway's composition root;
- parsing a config, importing the uplink daemon or building the CLI parser loads no OpenCV, ONNX
  Runtime or pyserial.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import Broker

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "drivers", "district")
GROUND_FLOOR = {"edge", "edge.types", "edge.errors", "edge.configbase", "edge.backoff", "edge.ids", "edge.sqlite",
                "edge.sdnotify", "edge.framequeue", "edge.compat"}
CAPTURE_SIDE = ("edge.pipeline", "edge.vision", "edge.plates", "edge.models", "drivers")
HEAVY = ("cv2", "onnxruntime", "serial")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module an import names (a `from pkg import submodule` names the submodule)."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST, *, top_level_only: bool) -> Iterator[str]:
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:
            # `if TYPE_CHECKING:` blocks are annotations only: not a runtime dependency.
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                continue
            yield from _imports(node, top_level_only=True)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


@cache
def deps(module: str, *, top_level_only: bool = False) -> frozenset[str]:
    """The project modules `module` imports (anywhere in it, unless `top_level_only`)."""
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    out = {r for n in _imports(tree, top_level_only=top_level_only) if n.startswith(PACKAGES)
           and (r := _resolve(n)) is not None and r != module}
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    for dep in list(out):
        parts = dep.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules())
    out.discard(module)
    return frozenset(out)


def reach(module: str) -> set[str]:
    """Everything `module` can load, directly or through others (lazy imports included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in deps(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_the_project() -> None:
    mods = modules()
    assert {"edge.app.config", "edge.uplink.uplink", "edge.pipeline.commit", "drivers.camera.file",
            "district.mqtt_worker"} <= set(mods)
    assert "edge.app.config" in deps("edge.app.capture")
    assert "edge.pipeline.commit" in reach("edge.app.capture")


def test_no_import_cycles() -> None:
    graph = {m: deps(m, top_level_only=True) for m in modules()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_only_the_composition_root_and_the_cli_import_the_root_config() -> None:
    offenders = sorted(m for m in modules() if "edge.app.config" in deps(m)
                       and not _in(m, "edge.app", "edge.cli"))
    assert offenders == []


def test_drivers_import_only_the_ground_floor() -> None:
    offenders = {m: sorted(d for d in deps(m) if _in(d, "edge") and d not in GROUND_FLOOR)
                 for m in modules() if _in(m, "drivers")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_uplink_reaches_nothing_of_the_capture_side() -> None:
    assert sorted(d for d in reach("edge.uplink.uplink") if _in(d, *CAPTURE_SIDE)) == []
    # The daemon parses the root config, which assembles every wing's config models (pure pydantic);
    # beyond those, it reaches nothing of the capture side.
    beyond_config = reach("edge.app.uplink") - reach("edge.app.config") - {"edge.app.config"}
    assert sorted(d for d in beyond_config if _in(d, *CAPTURE_SIDE)) == []


def test_the_district_platform_imports_nothing_of_the_capture_side() -> None:
    for m in (m for m in modules() if _in(m, "district")):
        assert sorted(d for d in reach(m) if _in(d, *CAPTURE_SIDE, "edge.app", "edge.cli")) == [], m


def test_wings_take_their_own_config_not_the_root() -> None:
    # The Committer, the paths, the stores and the doors get their own sections; the root config
    # is unpacked only in edge.app.
    for m in modules():
        if _in(m, "edge.app", "edge.cli"):
            continue
        text = modules()[m].read_text(encoding="utf-8")
        assert "cfg: Config" not in text and "config: Config" not in text, m


def _loaded(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = textwrap.dedent(code) + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("code", [
    "import edge.app.uplink",
    "from pathlib import Path\nfrom edge.app.config import load_config\n"
    "load_config(Path('config/gateway.example.toml'))",
    "from edge.cli import build_parser\nbuild_parser()",
], ids=["uplink-daemon", "parse-example-config", "cli-parser"])
def test_light_processes_load_no_opencv_onnxruntime_or_pyserial(code: str) -> None:
    loaded = _loaded(code)
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []
    assert "edge.app.config" in loaded or "edge.app.uplink" in loaded or "edge.cli" in loaded


def test_the_uplink_daemon_drains_with_opencv_onnxruntime_and_pyserial_broken(tmp_path: Path, broker: Broker) -> None:
    # A broken vision or serial install (here: each import raises) must not stop the backlog draining.
    from edge.outbox import Outbox
    from edge.privacy.boundary import PrivacyBoundary
    from edge.privacy.pseudonym import Pseudonymiser
    from edge.types import Origin
    from tests._chaos import ORIGIN, gateway_config, observations
    from tests._mqtt import Collector

    broken = tmp_path / "broken"
    for name in HEAVY:
        (broken / name).mkdir(parents=True)
        (broken / name / "__init__.py").write_text(f"raise ImportError('{name} is broken on purpose')\n")
    config = gateway_config(tmp_path, broker.port)
    outbox = Outbox(tmp_path / "outbox.db")
    boundary = PrivacyBoundary(Pseudonymiser(os.urandom(32)), Origin(*ORIGIN))
    committed = outbox.append([boundary.to_event(o) for o in observations(40)]).records
    outbox.close()
    collector = Collector(broker.host, broker.port, "edgegw/+/+/+/events/#", client_id="layers-collector")
    try:
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "uplink", "--config", str(config), "--until-empty"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": f"{broken}{os.pathsep}{ROOT}"})
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 10
        while len(collector.events()) < len(committed) and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {json.loads(m.payload)["event_id"] for m in collector.events()}
    finally:
        collector.close()
    assert got == {r.event_id for r in committed}
    # The same broken path really breaks the capture side: the test would catch a silent fallback.
    proc = subprocess.run([sys.executable, "-c", "import edge.app.capture"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": f"{broken}{os.pathsep}{ROOT}"})
    assert proc.returncode != 0 and "broken on purpose" in proc.stderr

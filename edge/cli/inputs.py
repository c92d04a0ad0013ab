"""`edgegw inputs watch`: the installer's check of wired inputs (alarm columns, doors, tamper loops).

It reads only the `[[inputs]]` modules of a gateway config, polls them as the capture daemon would,
and prints one JSON line per alarm raised or cleared, so each button, door and loop can be tried
in turn. Nothing is committed or published.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edge.compat import tomllib
from edge.errors import ConfigError
from edge.types import Observation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `inputs` command group."""
    group = subparsers.add_parser("inputs", help="wired inputs: alarm columns, door contacts, tamper loops")
    sub = group.add_subparsers(dest="inputs_command", required=True)
    watch = sub.add_parser("watch", help="poll the configured input modules and print every alarm")
    watch.add_argument("--config", required=True, type=Path, help="gateway config with [[inputs]] modules")
    watch.add_argument("--module", action="append", default=None, help="only this module id (repeatable)")
    watch.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
    watch.set_defaults(func=_watch)


def load_modules(path: Path) -> list[Any]:
    """The `[[inputs]]` modules of a config file, validated; errors name the file and the key."""
    from drivers.inputs.config import InputModuleConfig

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        modules: list[Any] = TypeAdapter(list[InputModuleConfig]).validate_python(data.get("inputs", []))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in ("inputs", *err["loc"]))
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
    if not modules:
        raise ConfigError(f"{path}: no [[inputs]] modules configured")
    return modules


def _line(obs: Observation) -> str:
    record: dict[str, object] = {"module": obs.source_id, "ts": round(obs.ts, 3), **dict(obs.attrs)}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _watch(args: argparse.Namespace) -> int:
    from drivers.inputs.poller import InputPoller  # pymodbus / gpiod: loaded for `watch` only

    modules = load_modules(args.config)
    if args.module:
        unknown = set(args.module) - {m.id for m in modules}
        if unknown:
            raise ConfigError(f"{args.config}: no input module {', '.join(sorted(unknown))}")
        modules = [m for m in modules if m.id in args.module]
    lock = threading.Lock()

    def show(observations: Sequence[Observation]) -> None:
        with lock:
            for obs in observations:
                print(_line(obs), flush=True)

    stop = threading.Event()
    pollers = [InputPoller(m, show, stop) for m in modules]
    for p in pollers:
        p.start()
        print(f"edgegw: watching {p.cfg.id} ({p.cfg.kind}, {len(p.cfg.inputs)} inputs)", file=sys.stderr, flush=True)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for p in pollers:
            p.join(5)
    for p in pollers:
        print(json.dumps({"summary": True, **p.status(), "module": p.cfg.id}, separators=(",", ":")), flush=True)
    return 0

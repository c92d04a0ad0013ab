"""What the gateway daemon tests share: configs (the uplink to a test broker, a card gate that takes
signed watch-lists, config/demo.toml moved under a test's directory) and the real `edgegw` daemons as
processes logging to a file.

Each test still writes what is its own (inputs, cameras, the sniffer) as TOML text; these are only the
sections that several tests share word for word, so a change to the config format is made here once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import MODELS_DIR, ROOT, Broker, new_gateway


def uplink_to(broker: Broker) -> str:
    """`[mqtt]` to the test broker and `[uplink]` publishing its status every 0.5 s (the tests wait on it)."""
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}

[uplink]
status_interval_s = 0.5
"""


def watch_list_gateway(tmp_path: Path, card_port: str, broker: Broker) -> Path:
    """A gateway (`new_gateway`) with one inbound RDM6300 card reader, `gate1-card`, on `card_port`;
    watch-lists enabled and verified with the platform key the test writes to `data/platform.pub`;
    the uplink to `broker`. Returns the config path."""
    return new_gateway(tmp_path, f"""
[[serial]]
id = "gate1-card"
port = "{card_port}"
format = "rdm6300"
side = "in"

[watchlist]
enabled = true
public_key = "platform.pub"
{uplink_to(broker)}""")


def demo_config(tmp_path: Path) -> Path:
    """config/demo.toml with its data, models, clip and reader under `tmp_path`."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace('data_dir = "../var/demo"', f'data_dir = "{tmp_path / "data"}"')
    text = text.replace('dir = "../models"', f'dir = "{MODELS_DIR}"')
    text = text.replace('path = "../var/demo/clip"', f'path = "{tmp_path / "data" / "clip"}"')
    text = text.replace('port = "../var/demo/card-reader"', f'port = "{tmp_path / "data" / "card-reader"}"')
    cfg = tmp_path / "demo.toml"
    cfg.write_text(text)
    return cfg


def gateway_daemon(cfg: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`python -m edge.cli -v ARGS --config CFG` (e.g. "run", "uplink", "capture"), stdout and stderr
    appended to `log`."""
    with log.open("ab") as f:
        return subprocess.Popen([sys.executable, "-m", "edge.cli", "-v", *args, "--config", str(cfg)], cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT)


def stop_daemons(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every daemon still running, then wait for each (30 s) and SIGKILL one that hangs."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

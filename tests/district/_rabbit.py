"""A RabbitMQ cluster of our own on loopback: own node names, ports, data dirs, cookie and epmd port.

Never the machine's RabbitMQ service: nodes are `edgegw-t<random>-<i>@localhost`, every port is a free
one, HOME (for the Erlang cookie) and every data dir are under the test's directory, and the nodes
use their own epmd on a free port (ERL_EPMD_PORT), which `stop()` ends too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

BIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class Node:
    """One cluster member."""

    name: str
    amqp_port: int
    mqtt_port: int
    dist_port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class RabbitCluster:
    """`start()` forms the cluster; `kill9(i)` and `restart(i)` for faults; `stop()` ends everything."""

    root: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)
    epmd_port: int = 0

    def __post_init__(self) -> None:
        home = self.root / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        self.epmd_port = free_port()
        tag = secrets.token_hex(3)
        names = [f"edgegw-t{tag}-{i}@localhost" for i in range(self.size)]
        for i, name in enumerate(names):
            base = self.root / f"n{i}"
            base.mkdir()
            amqp, mqtt, dist = free_port(), free_port(), free_port()
            conf = base / "rabbitmq.conf"
            lines = [f"mqtt.listeners.tcp.1 = 127.0.0.1:{mqtt}", "loopback_users = none",
                     "cluster_formation.peer_discovery_backend = classic_config",
                     "mqtt.allow_anonymous = true", "log.console = false", "log.file.level = warning"]
            lines += [f"cluster_formation.classic_config.nodes.{j + 1} = {n}" for j, n in enumerate(names)]
            conf.write_text("\n".join(lines) + "\n")
            (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
            (base / "rabbitmq-env.conf").write_text("")
            env = {**os.environ, "HOME": str(home), "ERL_EPMD_PORT": str(self.epmd_port), "RABBITMQ_NODENAME": name,
                   "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(amqp),
                   "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_CONFIG_FILE": str(conf),
                   "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                   "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
                   "RABBITMQ_PID_FILE": str(base / "pid"), "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                   "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config")}
            self.nodes.append(Node(name, amqp, mqtt, dist, env))

    def _spawn(self, i: int) -> None:
        n = self.nodes[i]
        log = (self.root / f"n{i}" / "server.out").open("ab")
        n.proc = subprocess.Popen([str(BIN / "rabbitmq-server")], env=n.env, stdout=log, stderr=log,
                                  start_new_session=True)

    def _wait(self, i: int, timeout: float = 120.0) -> None:
        n = self.nodes[i]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run([str(BIN / "rabbitmqctl"), "-n", n.name, "await_startup", "--timeout", "5"],
                                env=n.env, capture_output=True, timeout=60).returncode == 0
            if ok:
                try:
                    socket.create_connection(("127.0.0.1", n.mqtt_port), timeout=1).close()
                    return
                except OSError:
                    pass
            if n.proc is not None and n.proc.poll() is not None:
                raise RuntimeError(f"node {n.name} exited: " + (self.root / f"n{i}" / "server.out").read_text()[-2000:])
            time.sleep(0.5)
        raise RuntimeError(f"node {n.name} did not start")

    def start(self) -> None:
        """Start every node at once (classic-config peer discovery forms the cluster) and wait for all."""
        for i in range(self.size):
            self._spawn(i)
        for i in range(self.size):
            self._wait(i)

    def running_nodes(self) -> int:
        """How many nodes the first live node sees running."""
        for n in self.nodes:
            out = subprocess.run([str(BIN / "rabbitmqctl"), "-n", n.name, "eval",
                                  "length(rabbit_nodes:all_running())."], env=n.env, capture_output=True,
                                 text=True, timeout=60)
            if out.returncode == 0:
                return int(out.stdout.strip())
        return 0

    def urls(self) -> str:
        """AMQP URLs of every node, comma-separated (the worker tries them in order)."""
        return ",".join(f"amqp://guest:guest@127.0.0.1:{n.amqp_port}/%2F" for n in self.nodes)

    def kill9(self, i: int) -> None:
        """SIGKILL node i's Erlang VM (and its process group), like a crash."""
        n = self.nodes[i]
        pid_file = self.root / f"n{i}" / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        if n.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(n.proc.pid, signal.SIGKILL)
            n.proc.wait(30)

    def restart(self, i: int) -> None:
        """Start node i again (it rejoins the cluster from its data dir) and wait for it."""
        self._spawn(i)
        self._wait(i)

    def stop(self) -> None:
        """Stop every node we started, then our epmd."""
        for i, n in enumerate(self.nodes):
            if n.proc is not None and n.proc.poll() is None:
                subprocess.run([str(BIN / "rabbitmqctl"), "-n", n.name, "stop"], env=n.env, capture_output=True,
                               timeout=60)
                try:
                    n.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill9(i)
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], capture_output=True, timeout=10,
                       env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)})

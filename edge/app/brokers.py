"""A local broker for the demo: mosquitto when installed, else an embedded amqtt (MQTT 3.1.1)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from edge.errors import EdgeError


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, alive: Any = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if not alive():
                break
            time.sleep(0.05)
    raise EdgeError(f"the local broker did not start listening on 127.0.0.1:{port}")


class LocalBroker:
    """Starts a throwaway broker on a free loopback port; `protocol` says what it speaks."""

    def __init__(self, workdir: Path, prefer: str = "auto") -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self._workdir = workdir
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if prefer == "mosquitto" and exe is None:
            raise EdgeError("mosquitto is not installed (apt-get install mosquitto)")
        self.kind = "mosquitto" if exe and prefer != "embedded" else "embedded"
        self._exe = exe
        self.protocol = "5" if self.kind == "mosquitto" else "3.1.1"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.kind == "mosquitto":
            assert self._exe is not None
            conf = self._workdir / "mosquitto.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
            self._proc = subprocess.Popen([self._exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            _wait_port(self.port, 10, lambda: self._proc is not None and self._proc.poll() is None)
            return
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise EdgeError("no mosquitto and no embedded broker: apt-get install mosquitto, "
                            "or pip install 'edgegw[demo]'") from exc
        # A throwaway demo broker: its chatter (e.g. about our readiness probe) is not the user's concern.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "sys_interval": 0, "auth": {"allow-anonymous": True}, "topic-check": {"enabled": False}}
        loop = asyncio.new_event_loop()
        self._loop = loop

        def serve() -> None:
            asyncio.set_event_loop(loop)
            broker = Broker(config, loop=loop)
            loop.run_until_complete(broker.start())
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="embedded-broker", daemon=True)
        self._thread.start()
        _wait_port(self.port, 15)

    def stop(self) -> None:
        """Stop the broker."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

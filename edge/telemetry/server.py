"""The loopback HTTP endpoint of a daemon: `/metrics` (Prometheus), `/livez` and `/readyz`.

A plain WSGI app on the standard library's server in one daemon thread (what prometheus_client's
own exporter does): the capture and uplink daemons stay free of a web framework, and a scrape
costs nothing between scrapes. Status codes are for machines (200 / 503), bodies for people.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from edge.telemetry.metrics import Telemetry

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, str]]
"""A probe: (healthy, one line for a person)."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s", format % args)


def _probe(check: Health) -> tuple[str, bytes]:
    try:
        ok, text = check()
    except Exception as exc:  # a probe that raises is a failed probe, not a crashed endpoint
        ok, text = False, f"probe failed: {type(exc).__name__}: {exc}"
    return ("200 OK" if ok else "503 Service Unavailable"), (("ok: " if ok else "not ok: ") + text + "\n").encode()


class MetricsServer:
    """Serves one daemon's telemetry on host:port until `close()`."""

    def __init__(self, telemetry: Telemetry, host: str, port: int, *, live: Health, ready: Health) -> None:
        metrics_app = make_wsgi_app(telemetry.registry)

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in ("/livez", "/readyz"):
                status, body = _probe(live if path == "/livez" else ready)
                start(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
                return [body]
            if path == "/metrics":
                return metrics_app(environ, start)  # type: ignore[no-any-return]
            start("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: try /metrics, /livez or /readyz\n"]

        self._httpd = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"metrics-{telemetry.daemon}",
                                        daemon=True)
        self._thread.start()
        log.info("%s metrics on http://%s:%d/metrics", telemetry.daemon, host, self.port)

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_metrics(telemetry: Telemetry, host: str, port: int, *, live: Health, ready: Health) -> MetricsServer | None:
    """Start the endpoint, or return None when `port` is 0 or taken (metrics never stop a daemon)."""
    if port == 0:
        return None
    try:
        return MetricsServer(telemetry, host, port, live=live, ready=ready)
    except OSError as exc:
        log.warning("cannot serve metrics on %s:%d: %s (the daemon runs without them)", host, port, exc)
        return None

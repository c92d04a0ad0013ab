"""The console's composition: the gateway backend (status, config edits, audit, checks, events) and the server.

The console is its own process (`edgegw console`, unit edgegw-console.service). It reads what capture and
the uplink record in the outbox, edits the config file through the root validator (atomically, keeping the
previous file, audited) and meets capture only over edge.preview. It never opens a camera or a port.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.app.config import Config, load_config, parse_config, read_drawing
from edge.app.config_edits import with_camera_owned, with_gate_line, with_shapes, write_atomically
from edge.app.drawing import drawing_path
from edge.app.uplink import check_result_file, gateway_status, published_file
from edge.app.wiring import open_audit, open_registry
from edge.audit import AuditAction
from edge.console.backend import CameraInfo, ConfigRejectedError, ConfigUnwritableError
from edge.console.config import is_loopback
from edge.console.users import UserStore
from edge.errors import ConfigError
from edge.preview import LiveChannel

log = logging.getLogger(__name__)


class GatewayBackend:
    """The console's view of this gateway (implements edge.console.backend.ConsoleBackend)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path.resolve()
        self.cfg = load_config(self.config_path)
        self.live = LiveChannel(self.cfg.path(self.cfg.console.live_dir))
        self._audit = open_audit(self.cfg)
        self._lock = threading.Lock()
        self._models: list[dict[str, str]] | None = None

    def close(self) -> None:
        """Close the audit log."""
        self._audit.close()

    def _config(self) -> Config:
        # Re-read so a saved edit shows at once; a hand edit that broke the file keeps the last good one.
        try:
            self.cfg = load_config(self.config_path)
        except ConfigError as exc:
            log.warning("config does not validate, showing the last good one: %s", exc)
        return self.cfg

    def status(self) -> dict[str, Any]:
        """The status body the uplink publishes, read from the outbox."""
        with self._lock:
            body, _ = gateway_status(self.cfg)
        return body

    def cameras(self) -> list[CameraInfo]:
        """The configured cameras with their path and gate line."""
        cfg = self._config()
        faces, plates = set(cfg.face_cameras()), set(cfg.plate_cameras())
        out = []
        for cam in cfg.cameras:
            gl = cfg.gate_lines.get(cam.id)
            zones = tuple(z.model_dump(exclude={"camera"}) for z in cfg.zones.for_camera(cam.id))
            masks = tuple(m.model_dump(exclude={"camera"}) for m in cfg.masks_for(cam.id))
            out.append(CameraInfo(cam.id, "plate" if cam.id in plates else "face" if cam.id in faces else "none",
                                  cam.kind, (gl.a, gl.b) if gl else None, zones, masks))
        return out

    def serial_ports(self) -> list[dict[str, str]]:
        """The configured serial sensors."""
        return [{"id": s.id, "format": s.format, "port": s.port} for s in self._config().serial]

    def models(self) -> list[dict[str, str]]:
        """Model names, pinned digests and whether they verified (hashed once per console start)."""
        if self._models is None:
            from edge.models.fetch import verify
            from edge.models.manifest import load_manifest

            manifest = load_manifest()
            statuses = {s.name: s.ok for s in verify(manifest, self.cfg.models.dir)}
            self._models = [{"name": m.name, "version": m.sha256[:12], "ok": "yes" if statuses.get(m.name) else "no"}
                            for m in manifest.models]
        return self._models

    @property
    def target(self) -> Path:
        """The file edits go to: the drop-in where its directory exists (the shipped layout), else the config."""
        dropin = drawing_path(self.config_path)
        return dropin if dropin.parent.is_dir() else self.config_path

    def _edit(self, camera_id: str, change: Callable[[str], str], what: str) -> str:
        # Validate the whole merged config with the root validator, then write atomically (previous
        # kept); under self._lock. Returns the sha256 of the file written.
        target = self.target
        main = self.config_path.read_text(encoding="utf-8")
        if target == self.config_path:
            new = change(main)
            check: tuple[str, tuple[str, str] | None] = (new, read_drawing(self.config_path))
        else:
            cfg = self._config()
            current = read_drawing(self.config_path)
            gl = cfg.gate_lines.get(camera_id)
            owned = with_camera_owned(current[0] if current else "", camera_id, (gl.a, gl.b) if gl else None,
                                      [z.model_dump(exclude={"camera"}, exclude_defaults=True)
                                       for z in cfg.zones.for_camera(camera_id)],
                                      [m.model_dump(exclude={"camera"}, exclude_defaults=True)
                                       for m in cfg.masks_for(camera_id)])
            new = change(owned)
            check = (main, (new, str(target)))
        try:
            parse_config(check[0], str(self.config_path), self.config_path.parent, drawing=check[1])
        except ConfigError as exc:
            raise ConfigRejectedError(str(exc)) from None
        try:
            write_atomically(target, new)
        except OSError as exc:
            raise ConfigUnwritableError(f"the {what} is valid but {target} cannot be written "
                                        f"({exc.strerror}): see docs/console.md, config edits") from None
        return hashlib.sha256(new.encode()).hexdigest()

    def save_gate_line(self, camera_id: str, a: tuple[float, float], b: tuple[float, float], actor: str) -> str:
        """Validate with the root validator, write atomically (previous kept), audit; capture reloads it."""
        with self._lock:
            digest = self._edit(camera_id, lambda text: with_gate_line(text, camera_id, a, b), "line")
            self._audit.append(actor, AuditAction.CONFIG_CHANGE, {
                "by": "console", "change": "gate_line", "camera": camera_id, "file_sha256": digest,
                "file": self.target.name, "a": [a[0], a[1]], "b": [b[0], b[1]]})
        log.info("gate line of %s saved by %s", camera_id, actor)
        return digest

    def save_shapes(self, camera_id: str, zones: list[dict[str, Any]], masks: list[dict[str, Any]],
                    actor: str) -> str:
        """Replace the camera's zones and masks: validated, written atomically, audited; capture reloads them."""
        with self._lock:
            digest = self._edit(camera_id, lambda text: with_shapes(text, camera_id, zones, masks), "drawing")
            # Which shapes, not where: the polygons are in the file the digest names.
            self._audit.append(actor, AuditAction.CONFIG_CHANGE, {
                "by": "console", "change": "zones_masks", "camera": camera_id, "file_sha256": digest,
                "file": self.target.name,
                "zones": [f"{z['id']}:{z['rule']}" for z in zones], "masks": [m["id"] for m in masks]})
        log.info("zones and masks of %s saved by %s (%d zone(s), %d mask(s))", camera_id, actor, len(zones),
                 len(masks))
        return digest

    def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append an audit record."""
        self._audit.append(actor, action, details)

    def last_checks(self) -> dict[str, Any] | None:
        """The last `edgegw check` result."""
        try:
            body: dict[str, Any] = json.loads(check_result_file(self.cfg).read_text(encoding="utf-8"))
            return body
        except (OSError, ValueError):
            return None

    def run_checks(self) -> dict[str, Any]:
        """`edgegw check --json` without the device checks (capture holds cameras and ports)."""
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config", str(self.config_path), "--json",
                               "--skip", "camera.*,serial"], capture_output=True, text=True, timeout=90, check=False)
        try:
            body: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            return {"summary": {"status": "fail", "ok": 0, "warn": 0, "fail": 1, "skip": 0},
                    "checks": [{"id": "config", "status": "fail", "detail": proc.stderr.strip()[-500:],
                                "hint": "fix the config (edgegw config check)", "docs": "", "duration_ms": 0}]}
        return body

    def recent_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last events the uplink published, newest first."""
        try:
            events: list[dict[str, Any]] = json.loads(published_file(self.cfg).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return list(reversed(events))[:limit]


def run_console(config_path: Path) -> int:
    """Serve the console until SIGTERM/SIGINT."""
    import uvicorn

    from edge.console.metrics import ConsoleMetrics
    from edge.console.tls import ensure_self_signed
    from edge.console.web import create_app
    from edge.sdnotify import Notifier
    from edge.telemetry.server import start_metrics

    backend = GatewayBackend(config_path)
    cfg = backend.cfg
    c = cfg.console
    registry = open_registry(cfg)
    users = UserStore(cfg.path(c.db), session_ttl_s=c.session_ttl_s, registry=registry)
    first = users.first_boot()
    if first is not None:
        # The journal is the one place an installer with root can read it; it must be changed at first login.
        print(f"edgegw console: first start: log in as 'admin' with password {first} (you must change it)",
              file=sys.stderr, flush=True)
    certfile: str | None = None
    keyfile: str | None = None
    if c.tls:
        cert = c.cert_file or cfg.path(c.db).parent / "console-cert.pem"
        key = c.key_file or cfg.path(c.db).parent / "console-key.pem"
        created, fp = ensure_self_signed(cert, key, c.host) if c.cert_file is None else (False, "")
        if fp:
            print(f"edgegw console: TLS certificate {'created' if created else 'in use'}, SHA-256 fingerprint {fp}",
                  file=sys.stderr, flush=True)
        certfile, keyfile = str(cert), str(key)
    elif not is_loopback(c.host):  # the config validator refuses this already; never serve it anyway
        raise ConfigError("console.host is not loopback and console.tls is off")
    a = cfg.aim
    metrics = ConsoleMetrics()
    app = create_app(backend, users, secure_cookies=c.tls, preview_fps=c.preview_fps,
                     preview_max_height=c.preview_max_height,
                     aim_thresholds={"face_fail": a.face_fail_px, "face_warn": a.face_warn_px,
                                     "plate_fail": a.plate_char_fail_px, "plate_warn": a.plate_char_warn_px},
                     metrics=metrics, registry=registry)
    notifier = Notifier()
    scheme = "https" if c.tls else "http"
    print(f"edgegw console on {scheme}://{c.host}:{c.port}/", file=sys.stderr, flush=True)

    config = uvicorn.Config(app, host=c.host, port=c.port, log_level="warning", access_log=False,
                            proxy_headers=False, server_header=False, ssl_certfile=certfile,
                            ssl_keyfile=keyfile)
    server = uvicorn.Server(config)
    watchdog = threading.Event()

    def beat() -> None:
        while not watchdog.wait(max(1.0, (notifier.watchdog_interval_s or 10.0))):
            if server.started:
                notifier.watchdog()

    threading.Thread(target=beat, name="console-watchdog", daemon=True).start()

    def ready() -> None:
        while not server.started and not watchdog.wait(0.1):
            pass
        notifier.ready(f"console on {scheme}://{c.host}:{c.port}/")

    threading.Thread(target=ready, name="console-ready", daemon=True).start()

    def live() -> tuple[bool, str]:
        return (True, "console serving") if server.started and not server.should_exit else (
            False, "console not serving (starting or stopping)")

    def readiness() -> tuple[bool, str]:
        ok, text = live()
        if ok and not backend.config_path.exists():
            return False, f"config {backend.config_path} is gone"
        return ok, text

    endpoint = start_metrics(metrics.telemetry, cfg.metrics.host, cfg.metrics.port_for("console"), live=live,
                             ready=readiness)
    try:
        server.run()
    finally:
        if endpoint is not None:
            endpoint.close()
        watchdog.set()
        notifier.stopping()
        users.close()
        registry.close()
        backend.close()
    return 0

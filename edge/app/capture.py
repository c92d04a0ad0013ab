"""The capture daemon's composition: cameras and sensors → pipelines → privacy boundary → outbox.

It owns the threads: one per camera (the supervisor's) feeding a bounded latest-wins queue, one
worker per camera running the motion gate and the face or plate path, and one per serial port.
Frames may be dropped under load; events never: a worker commits its events to the outbox before
it takes the next frame, and if the outbox cannot take them it retries with backoff while its
camera's queue drops frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.camera.config import FileCameraConfig
from drivers.camera.supervisor import CameraState, CameraSupervisor
from drivers.inputs.poller import InputPoller
from edge.app.capture_live import CaptureLive, capture_families
from edge.app.config import Config, load_config
from edge.app.drawing import drawing_path
from edge.app.heap import limit_malloc_arenas, release_freed_heap
from edge.app.wiring import (
    build_passage_observers,
    data_key,
    head_signer,
    make_outbox,
    open_audit,
    open_watchlist,
    privacy_boundary,
    runtime_options,
)
from edge.audit import AuditAction, audit_status
from edge.models.runner import chosen_providers
from edge.passages.store import PassageStore
from edge.pipeline.commit import Committer
from edge.pipeline.faces import FacePath
from edge.pipeline.masks import FrameMasker
from edge.pipeline.motion import MotionGate
from edge.pipeline.plates import PlatePath
from edge.pipeline.sensors import SensorHub
from edge.pipeline.tracker import GateLine
from edge.pipeline.worker import CameraWorker
from edge.pipeline.zonepath import ZonedPath
from edge.pipeline.zones import DwellMonitor, ZoneWatcher
from edge.plates.reader import PlateReader
from edge.privacy.pipl import status as pipl_status
from edge.residents import ResidentGallery
from edge.sdnotify import Notifier
from edge.telemetry.server import MetricsServer, start_metrics
from edge.vision.faces import FaceAnalyzer

log = logging.getLogger(__name__)


class CaptureDaemon:
    """The composition root of the capture side."""

    def __init__(self, cfg: Config, config_dir: Path | None = None, config_file: Path | None = None) -> None:
        # Before any thread of the daemon starts: one malloc arena for all of them (edge.app.heap).
        limit_malloc_arenas()
        self.cfg = cfg
        self._config_dir = config_dir or Path.cwd()
        self._config_file = config_file
        self._config_mtime = self._config_stamp()
        self._stop = threading.Event()
        self.live = CaptureLive(cfg.path(cfg.console.live_dir), cfg.aim)
        self._metrics: MetricsServer | None = None
        self._loop_beat = time.monotonic()
        self.outbox = make_outbox(cfg)
        self.boundary = privacy_boundary(cfg)
        # The passage store first: a passage's members are on disk before the passage that links them.
        self.audit = open_audit(cfg)
        self._sign_head = head_signer(cfg)
        self._audit_config_change()
        self.passage_observers = build_passage_observers(cfg, data_key(cfg), self.audit)
        # Capture's own retry policy: how long a refused commit waits before it is tried again.
        # Capture matches against the watch-lists the uplink daemon receives (same state file).
        self.watchlist = open_watchlist(cfg, self.audit)
        self.committer = Committer(self.outbox, self.boundary, cfg.outbox.commit_backoff, self.passage_observers,
                                   alarm_repeat_s=cfg.outbox.quota_alarm_repeat_s, watch=self.watchlist)
        self.supervisor = CameraSupervisor()
        self.workers: list[CameraWorker] = []
        self.zoned: dict[str, ZonedPath] = {}
        self.maskers: dict[str, FrameMasker] = {}
        self.sensor_hub: SensorHub | None = None
        self._notifier = Notifier()
        self.inputs: list[InputPoller] = []
        self._build_cameras()
        self._build_sensors()
        self._build_inputs()

    def _audit_config_change(self) -> None:
        # The running configuration is part of the record: a police query's meaning depends on which
        # cameras, retention and thresholds were in force. One record each time it changes.
        digest = hashlib.sha256(self.cfg.model_dump_json().encode()).hexdigest()
        last = self.audit.last(AuditAction.CONFIG_CHANGE)
        if last is None or json.loads(last.details).get("sha256") != digest:
            self.audit.append("capture", AuditAction.CONFIG_CHANGE, {
                "sha256": digest, "cameras": len(self.cfg.cameras), "serial": len(self.cfg.serial)})

    def _camera_config(self, cam: Any) -> Any:
        # File paths in the config are relative to the config file, like every other input path.
        if isinstance(cam, FileCameraConfig) and not Path(cam.path).is_absolute():
            return cam.model_copy(update={"path": str(self._config_dir / cam.path)})
        return cam

    def _build_cameras(self) -> None:
        face_ids = set(self.cfg.face_cameras())
        plate_ids = set(self.cfg.plate_cameras())
        faces: tuple[FaceAnalyzer, ResidentGallery] | None = None
        plate_reader: PlateReader | None = None
        for cam in self.cfg.cameras:
            zones = self.cfg.zones.for_camera(cam.id)
            if cam.id not in face_ids and cam.id not in plate_ids and not zones:
                log.warning("camera %s is in no pipeline (face.cameras / plates.cameras / zones); not started", cam.id)
                continue
            queue = self.supervisor.add_camera(self._camera_config(cam))
            line_cfg = self.cfg.gate_lines.get(cam.id)
            line = GateLine.from_config(line_cfg) if line_cfg else None
            # Every path gets a dwell monitor and a zoned wrapper, even with no zone yet: the console's
            # editor can then add, change or remove zones without a restart (empty, they cost nothing).
            dwell = DwellMonitor(cam.id, zones) if cam.id in face_ids or cam.id in plate_ids else None
            path: FacePath | PlatePath | None = None
            if cam.id in plate_ids:
                plate_reader = plate_reader or PlateReader(self.cfg.models.dir, runtime_options(self.cfg))
                path = PlatePath(cam.id, plate_reader, self.cfg.plates, self.cfg.privacy.local_plate_prefixes, line,
                                 dwell=dwell)
            elif cam.id in face_ids:
                faces = faces or self._build_faces()
                # Residents are matched only where the PIPL guard rails hold (the config validator checks).
                gallery = faces[1] if self.cfg.face.resident_matching else None
                path = FacePath(cam.id, faces[0], gallery, self.cfg.face, line, dwell=dwell)
            elif any(z.rule == "dwell" for z in zones):
                log.warning("camera %s: dwell zones need the face or plate path on it; they are not watched", cam.id)
            # Obstruction zones on top of the camera's path (or alone, for a fire-lane camera).
            backgrounds = self.cfg.path(self.cfg.zones.background_dir)
            backgrounds.mkdir(parents=True, exist_ok=True)
            zoned = ZonedPath(path, ZoneWatcher(cam.id, zones, self.cfg.zones.background),
                              backgrounds / f"zones-{cam.id}.npy", dwell=dwell)
            self.zoned[cam.id] = zoned
            masker = FrameMasker([m.polygon for m in self.cfg.masks_for(cam.id)])
            self.maskers[cam.id] = masker
            self.live.set_zones(cam.id, zones)
            gate = MotionGate(self.cfg.motion) if self.cfg.motion.enabled else None
            hook = self.live.frame_hook(cam.id, "plate" if cam.id in plate_ids else "face", zoned)
            self.workers.append(CameraWorker(cam.id, queue, zoned, gate=gate, committer=self.committer,
                                             stop=self._stop, on_frame=hook, prepare=masker.apply))

    def _build_faces(self) -> tuple[FaceAnalyzer, ResidentGallery]:
        # models.sface_int8 (off by default) picks the int8 SFace inside FaceAnalyzer (edge.models.variants).
        analyzer = FaceAnalyzer(self.cfg.models.dir, runtime_options(self.cfg),
                                score_threshold=self.cfg.face.score_threshold, max_side=self.cfg.face.detect_max_side)
        gallery = ResidentGallery(self.cfg.path(self.cfg.storage.residents_db), data_key(self.cfg))
        # The first inference of a session is slow (allocation, kernel selection); pay it now, not
        # while the first passer-by's frames queue up and get dropped.
        analyzer.detect(np.zeros((480, 640, 3), np.uint8))
        analyzer.embed(np.zeros((1, 112, 112, 3), np.uint8))
        return analyzer, gallery

    def _build_sensors(self) -> None:
        if self.cfg.serial:
            # Like camera files, a relative port path (e.g. a /dev/serial/by-id symlink kept beside the
            # config) is relative to the config file; device names and pyserial URLs stay as they are.
            sensors = tuple(
                s if "://" in s.port or Path(s.port).is_absolute()
                else s.model_copy(update={"port": str(self._config_dir / s.port)})
                for s in self.cfg.serial)
            self.sensor_hub = SensorHub(sensors, self.committer, self._stop, self.cfg.devices,
                                        on_reading=self.live.on_reading)

    def _build_inputs(self) -> None:
        # One thread per module; each press is committed (durable) before the module is read again.
        for configured in self.cfg.inputs:
            module = configured
            if module.kind == "modbus_rtu" and not ("://" in module.port or Path(module.port).is_absolute()):
                # Like serial ports: a relative path (a by-id symlink beside the config) is the config's.
                module = module.model_copy(update={"port": str(self._config_dir / module.port)})
            self.inputs.append(InputPoller(module, lambda obs: self.committer.commit(obs, self._stop), self._stop))

    def status(self) -> dict[str, object]:
        """Camera, pipeline and sensor states for the gateway's status message."""
        cams = {}
        for st in self.supervisor.statuses():
            cams[st.source_id] = {"state": st.state.value, "frames_read": st.frames_read,
                                  "frames_dropped": st.frames_dropped, "reconnects": st.reconnects,
                                  "fps": round(st.fps, 1), "last_error": st.last_error}
        body: dict[str, object] = {
            "cameras": cams,
            "pipelines": {w.source_id: {"frames": w.frames, "detected_frames": w.detected_frames}
                          for w in self.workers},
            "committed": self.committer.committed,
            "commit_failures": self.committer.failures,
            "refused_at_boundary": self.committer.refused,
            "inference": chosen_providers(),  # per model file: the ONNX Runtime provider it runs on
            "full_refusals": self.committer.full_refusals,
        }
        for observer in self.passage_observers:
            if isinstance(observer, PassageStore):
                body["passages"] = observer.health()
        if self.sensor_hub is not None:
            body["ports"] = self.sensor_hub.status()
        if self.inputs:
            body["inputs"] = {p.cfg.id: p.status() for p in self.inputs}
        if self.watchlist is not None:
            body["watch_hits"] = self.watchlist.hits
        body["aim"] = self.live.aim_status()
        # What the cameras run now (not what the file says): the console shows an edit taking effect.
        body["zones"] = {cam: list(z.zone_ids) for cam, z in self.zoned.items()}
        body["masks"] = {cam: len(m.polygons) for cam, m in self.maskers.items()}
        body["pipl"] = pipl_status(enabled=self.cfg.face.resident_matching, pipl=self.cfg.pipl,
                                   card_readers_by_gate=self.cfg.card_readers_by_gate())
        body.update(audit_status(self.audit, self._sign_head))
        return body

    # -- health (systemd, /livez, /readyz) --------------------------------------------------------
    def _sources_up(self) -> bool:
        # Ready: the first frame arrived, or a serial port opened (or there is nothing to wait for).
        if not self.workers and self.sensor_hub is None:
            return True
        if self.live.last_frame_at:
            return True
        return self.sensor_hub is not None and any(s.status().connected for s in self.sensor_hub.sensors)

    def _workers_alive(self) -> bool:
        # A worker thread that died while its camera still streams is a wedged pipeline: withhold
        # the watchdog so systemd restarts us. A finished source's worker may end.
        finished = {st.source_id for st in self.supervisor.statuses()
                    if st.state in (CameraState.FINISHED, CameraState.STOPPED)}
        return all(w.is_alive() or w.source_id in finished for w in self.workers)

    def liveness(self) -> tuple[bool, str]:
        """The main loop turned recently and every camera's pipeline thread is alive."""
        age = time.monotonic() - self._loop_beat
        if age > 10.0:
            return False, f"main loop stalled for {age:.0f} s"
        if not self._workers_alive():
            return False, "a camera pipeline thread died"
        return True, "capture loop running"

    def readiness(self) -> tuple[bool, str]:
        """Config and keys loaded (we exist), and a first frame arrived or a port opened."""
        if not self._sources_up():
            return False, "waiting for the first frame or an open serial port"
        return self.liveness()

    def _status_line(self) -> str:
        cams = self.supervisor.statuses()
        up = sum(1 for st in cams if st.state == CameraState.CONNECTED)
        ports = self.sensor_hub.status() if self.sensor_hub is not None else {}
        open_ports = sum(1 for k, v in ports.items() if not k.startswith("_") and v.get("connected"))
        return (f"{up}/{len(cams)} camera(s) connected, {open_ports}/{len(ports) - (1 if ports else 0)} port(s) open, "
                f"{self.committer.committed} event(s) committed")

    def _config_stamp(self) -> tuple[float, float]:
        # The config file and the console's drop-in beside it (edge.app.drawing): either may change.
        if self._config_file is None:
            return (0.0, 0.0)
        stamps = []
        for path in (self._config_file, drawing_path(self._config_file)):
            try:
                stamps.append(path.stat().st_mtime)
            except OSError:
                stamps.append(0.0)
        return (stamps[0], stamps[1])

    def _reload_live_config(self) -> None:
        # The console's editor writes the config atomically; gate lines, zones and masks apply
        # without a restart, anything else is logged as needing one.
        if self._config_file is None:
            return
        mtime = self._config_stamp()
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            new = load_config(self._config_file)
        except Exception as exc:  # a bad edit never reaches here through the console; a hand edit might
            log.error("config %s changed but does not validate; keeping the running one: %s", self._config_file, exc)
            return
        applied: dict[str, Any] = {}
        lines = {cam: GateLine.from_config(gl) for cam, gl in new.gate_lines.items()}
        changed = self.live.set_gate_lines(dict(lines))
        if changed:
            log.info("gate line(s) updated without a restart: %s", ", ".join(changed))
            applied["gate_lines"] = new.gate_lines
        if new.zones != self.cfg.zones:
            moved = [cam for cam, zoned in self.zoned.items()
                     if new.zones.for_camera(cam) != self.cfg.zones.for_camera(cam)]
            for cam in moved:
                self.zoned[cam].set_zones(new.zones.for_camera(cam))
                self.live.set_zones(cam, new.zones.for_camera(cam))
            if moved:
                log.info("zones updated without a restart: %s", ", ".join(moved))
            unstarted = sorted({z.camera for z in new.zones.zone} - set(self.zoned))
            if unstarted:
                log.warning("zones drawn on camera(s) capture does not run (%s): restart capture to start them",
                            ", ".join(unstarted))
            applied["zones"] = new.zones
        if new.masks != self.cfg.masks:
            masked = [cam for cam, m in self.maskers.items() if m.set_polygons([x.polygon for x in new.masks_for(cam)])]
            if masked:
                log.info("masks updated without a restart: %s", ", ".join(masked))
            applied["masks"] = new.masks
        if applied:
            self.cfg = self.cfg.model_copy(update=applied)
            self._audit_config_change()
        if new.model_copy(update={k: getattr(self.cfg, k) for k in ("gate_lines", "zones", "masks")}) != self.cfg:
            log.warning("config %s changed beyond gate lines, zones and masks: restart capture to apply it",
                        self._config_file)

    def _publish_status(self) -> None:
        try:
            self.outbox.put_status("capture", self.status())
        except Exception as exc:  # status is best effort; events are not
            log.warning("cannot record capture status: %s", exc)

    def run(self, *, exit_when_done: bool = False, status_interval_s: float = 5.0) -> int:
        """Run until stop() (or, with `exit_when_done`, until every finite source is exhausted)."""
        # The models are built: hand their load-time garbage back before the cameras start (edge.app.heap).
        release_freed_heap()
        for w in self.workers:
            w.start()
        self.supervisor.start()
        n_sensors = len(self.sensor_hub.sensors) if self.sensor_hub else 0
        if self.sensor_hub is not None:
            self.sensor_hub.start()
        for poller in self.inputs:
            poller.start()
        self.live.telemetry.add_families(capture_families(
            self.status, lambda: dict(self.committer.committed_by_kind), self.live.last_frame_at))
        self._metrics = start_metrics(self.live.telemetry, self.cfg.metrics.host, self.cfg.metrics.port_for("capture"),
                                      live=self.liveness, ready=self.readiness)
        log.info("capture running: %d camera pipeline(s), %d sensor(s), %d input module(s)",
                 len(self.workers), n_sensors, len(self.inputs))
        next_status = 0.0
        ready = False
        tick = min(status_interval_s, self._notifier.watchdog_interval_s or status_interval_s)
        while not self._stop.is_set():
            now = time.monotonic()
            self._loop_beat = now
            if not ready and self._sources_up():
                ready = True
                self._notifier.ready(self._status_line())
            if now >= next_status:
                self._publish_status()
                self._reload_live_config()
                if ready:
                    self._notifier.status(self._status_line())
                next_status = now + status_interval_s
            if self._workers_alive():
                self._notifier.watchdog()
            self.committer.tick(time.time(), self._stop)
            # Finite input means recorded camera files: once they are done, so is the run (sensors
            # are live and never "done"; they are stopped and flushed with everything else).
            if exit_when_done and self.workers and all(
                    st.state in (CameraState.FINISHED, CameraState.STOPPED) for st in self.supervisor.statuses()):
                break
            self._stop.wait(min(tick, 0.2))
        self._shutdown(drain=exit_when_done)
        return 0

    def _shutdown(self, drain: bool) -> None:
        self._notifier.stopping()
        if self._metrics is not None:
            self._metrics.close()
        self.live.close()
        self.supervisor.stop()
        if drain:
            # Let the workers empty their queues (closed by the supervisor) and flush their tracks.
            for w in self.workers:
                w.join(60)
        self._stop.set()
        for w in self.workers:
            w.join(10)
        if self.sensor_hub is not None:
            self.sensor_hub.join(10)
        for poller in self.inputs:
            poller.join(10)
        self.committer.tick(float("inf"))  # close every open window: nothing observed is left behind
        self._publish_status()
        for observer in self.passage_observers:
            observer.close()
        self.audit.close()
        self.outbox.close()

    def stop(self) -> None:
        """Ask `run()` to return (thread-safe; used by the signal handler)."""
        self._stop.set()

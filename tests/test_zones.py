"""Zones: obstruction on clips assembled from real frames, dwell on tracks, config, persistence.

The clips (tests/_clips.py) loop real videos at 2 frames a second with a real photo pasted in as
the left object. Times are shrunk (raise after 60 s, clear after 10 s) so a clip is 10 minutes of
camera time and under a second of CPU here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.configbase import BackoffConfig
from edge.events import to_wire, validate
from edge.framequeue import FrameQueue
from edge.outbox import Outbox
from edge.pipeline.commit import Committer
from edge.pipeline.config import MotionConfig
from edge.pipeline.motion import MotionGate
from edge.pipeline.worker import CameraWorker
from edge.pipeline.zoneconfig import BackgroundConfig, ZoneConfig, ZonesConfig
from edge.pipeline.zonepath import ZonedPath
from edge.pipeline.zones import DwellMonitor, ObstructionRule, ZoneWatcher, point_in_zone, zone_mask
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.pseudonym import Pseudonymiser
from edge.types import Box, IdKind, Observation, Origin, RawIdentifier
from tests._clips import CARS, CARS_ZONE, PEOPLE, PEOPLE_ZONE, Clip

RAISE_AFTER, CLEAR_AFTER = 60.0, 10.0
T0 = 1.8e9


def _zone(points: Any = PEOPLE_ZONE, **kw: Any) -> ZoneConfig:
    base: dict[str, Any] = {"id": "lane1", "camera": "cam1", "polygon": points, "rule": "obstruction",
                            "raise_after_s": RAISE_AFTER, "clear_after_s": CLEAR_AFTER}
    base.update(kw)
    return ZoneConfig.model_validate(base)


def _run(clip: Clip, zone: ZoneConfig, plates: Any = ()) -> list[Observation]:
    watcher = ZoneWatcher("cam1", [zone], BackgroundConfig())
    out: list[Observation] = []
    for frame in clip.frames(T0):
        out += watcher.process(frame, plates)
    return out


def _wire(obs: Observation) -> dict[str, Any]:
    wire = to_wire(PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin("d1", "c1", "g1")).to_event(obs), 1, 0)
    validate(wire)
    return wire


def _assert_one_episode(out: list[Observation], on: float, off: float) -> None:
    assert [o.attrs["state"] for o in out] == ["raised", "cleared"], [(o.ts - T0, o.attrs) for o in out]
    raised, cleared = out
    delay = raised.ts - T0 - (on + RAISE_AFTER)
    # The short-term background needs a few seconds to take the object in; 20 s is the tolerance.
    assert 0.0 <= delay <= 20.0
    assert 0.0 <= cleared.ts - T0 - (off + CLEAR_AFTER) <= 20.0
    assert float(raised.attrs["covered"]) >= 0.3
    assert float(cleared.attrs["duration_s"]) == pytest.approx(off - on, abs=20.0)
    for o in out:
        wire = _wire(o)
        assert wire["attrs"]["zone"] == "lane1" and wire["attrs"]["rule"] == "obstruction"
        assert "subject" not in wire  # no plate track in the zone: nothing identifying at all


def test_people_walking_through_raise_nothing() -> None:
    assert _run(Clip(PEOPLE, 600), _zone()) == []


def test_an_object_left_in_the_zone_raises_once_and_clears_once() -> None:
    _assert_one_episode(_run(Clip(PEOPLE, 600, obj_on=120, obj_off=360), _zone()), 120, 360)


@pytest.mark.parametrize("ramp", [
    {"dim": 0.35, "ramp": (100, 120, 300, 320)},   # dusk in 20 s, and the lights back
    {"dim": 0.4, "ramp": (100, 100.6, 300, 300.6)},  # lights switched off and on
    {"dim": 1.6, "ramp": (100, 130, 300, 330)},    # sun on the lane
], ids=["dusk", "switch", "sun"])
def test_light_changes_raise_nothing(ramp: dict[str, Any]) -> None:
    assert _run(Clip(PEOPLE, 600, **ramp), _zone()) == []


def test_a_knocked_camera_relearns_the_scene_instead_of_alarming() -> None:
    watcher = ZoneWatcher("cam1", [_zone()], BackgroundConfig())
    out = [o for frame in Clip(PEOPLE, 400, moved_at=150).frames(T0) for o in watcher.process(frame)]
    assert out == [] and watcher.model.resets == 1


def test_an_object_is_still_found_while_the_light_changes() -> None:
    clip = Clip(PEOPLE, 600, obj_on=120, obj_off=360, dim=0.35, ramp=(150, 170, 300, 320))
    _assert_one_episode(_run(clip, _zone()), 120, 360)


def test_car_park_traffic_raises_nothing_and_a_parked_object_does() -> None:
    zone = _zone(CARS_ZONE)
    assert _run(Clip(CARS, 600), zone) == []
    clip = Clip(CARS, 600, obj_on=120, obj_off=360, obj_box=(0.36, 0.42, 0.56, 0.60))
    _assert_one_episode(_run(clip, zone), 120, 360)


def test_a_plate_track_in_the_zone_goes_out_as_its_pseudonym_only() -> None:
    plate = RawIdentifier(IdKind.PLATE, "辽B12345")
    # The track's box stands in the zone (ground point at 20 % across, 90 % down of a 320x180 frame).
    plates = [(Box(40, 120, 90, 162), plate)]
    out = _run(Clip(PEOPLE, 300, obj_on=60, obj_off=1000), _zone(), plates)
    assert [o.attrs["state"] for o in out] == ["raised"]
    wire = _wire(out[0])
    assert wire["subject"]["type"] == "plate" and len(wire["subject"]["pseudonym"]) == 32
    assert "B12345" not in str(wire)  # uppercase: cannot occur in hex by chance


def test_gaps_shorter_than_gap_s_do_not_restart_the_clock() -> None:
    rule = ObstructionRule(_zone(raise_after_s=30, gap_s=5, clear_after_s=3))
    out: list[Observation] = []
    for t in range(60):  # covered, except 3-second dips (someone in front of the stall) every 10 s
        out += rule.update(0.0 if t % 10 in (7, 8, 9) else 0.6, T0 + t)
    assert [o.attrs["state"] for o in out] == ["raised"]
    assert out[0].ts == T0 + 30
    rule2 = ObstructionRule(_zone(raise_after_s=30, gap_s=2))
    assert not any(rule2.update(0.0 if t % 10 in (7, 8, 9) else 0.6, T0 + t) for t in range(60))


def test_saved_background_finds_an_object_present_at_start(tmp_path: Path) -> None:
    # Commissioning: the model learns the empty scene and saves it; the gateway restarts with an
    # object already in the lane. A fresh model would take it for background; the saved one does not.
    zone = _zone()
    learn = ZoneWatcher("cam1", [zone])
    for frame in Clip(PEOPLE, 120).frames(T0):
        learn.process(frame)
    learn.model.save(tmp_path / "cam1.npy")
    restarted = ZoneWatcher("cam1", [zone])
    assert restarted.model.load(tmp_path / "cam1.npy")
    out: list[Observation] = []
    for frame in Clip(PEOPLE, 200, obj_on=0, obj_off=150).frames(T0 + 1000):
        out += restarted.process(frame)
    assert [o.attrs["state"] for o in out] == ["raised", "cleared"]
    assert not ZoneWatcher("cam1", [zone]).model.load(tmp_path / "missing.npy")


def test_dwell_raises_after_dwell_s_and_clears_when_the_track_leaves() -> None:
    zone = _zone(((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)), id="gate", rule="dwell", dwell_s=20)
    mon = DwellMonitor("cam1", [zone])
    inside, outside = Box(100, 300, 200, 400), Box(700, 300, 800, 400)
    out: list[Observation] = []
    for t in range(0, 30):
        out += mon.observe(7, inside, T0 + t, (480, 640))
        out += mon.observe(8, inside if t < 10 else outside, T0 + t, (480, 640))  # passes through
    out += mon.observe(7, outside, T0 + 31, (480, 640))
    assert [(o.attrs["state"], o.attrs["zone"]) for o in out] == [("raised", "gate"), ("cleared", "gate")]
    assert out[0].ts == T0 + 20 and out[1].attrs["duration_s"] == 29.0
    for o in out:
        assert "subject" not in _wire(o)
    # A track that ends (or is lost) in the zone clears too.
    for t in range(25):
        out += mon.observe(9, inside, T0 + 100 + t, (480, 640))
    assert [o.attrs["state"] for o in mon.expire(T0 + 130)] == ["cleared"]


def test_zone_geometry() -> None:
    zone = _zone(((0.1, 0.1), (0.9, 0.1), (0.5, 0.9)))
    assert point_in_zone(zone, 0.5, 0.5) and not point_in_zone(zone, 0.1, 0.8)
    mask = zone_mask(zone, 90, 160)
    assert mask[45, 80] and not mask[80, 10]
    assert 0.3 < mask.mean() < 0.4  # a triangle of half of 0.8 x 0.8


def test_zone_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="fractions"):
        _zone(((0.0, 0.0), (1.2, 0.0), (0.5, 0.5)))
    with pytest.raises(ValidationError, match="absorb_after_s"):
        ZonesConfig(zone=(_zone(raise_after_s=7200),), background=BackgroundConfig(absorb_after_s=3600))
    with pytest.raises(ValidationError, match="unique"):
        ZonesConfig(zone=(_zone(), _zone()))
    cfg = ZonesConfig(zone=(_zone(), _zone(id="b", camera="cam2")))
    assert [z.id for z in cfg.for_camera("cam2")] == ["b"]


def test_zones_through_the_camera_worker_motion_gate_and_committer(tmp_path: Path) -> None:
    """The real worker loop: frames → motion gate → ZonedPath → Committer → outbox rows."""
    ob = Outbox(tmp_path / "outbox.db")
    committer = Committer(ob, PrivacyBoundary(Pseudonymiser(b"k" * 32), Origin("d1", "c1", "g1")),
                          BackoffConfig(initial_s=0.05, max_s=0.1))
    queue = FrameQueue(4)
    stop = threading.Event()
    path = ZonedPath(None, ZoneWatcher("cam1", [_zone()]), tmp_path / "cam1-background.npy")
    gate = MotionGate(MotionConfig())
    worker = CameraWorker("cam1", queue, path, gate=gate, committer=committer, stop=stop)
    worker.start()
    for frame in Clip(PEOPLE, 600, obj_on=120, obj_off=360).frames(T0):
        queue.wait_for_room(10)
        queue.put(frame)
    queue.close()
    worker.join(60)
    assert not worker.is_alive()
    rows = ob.pending(100)
    ob.close()
    assert [r.kind.value for r in rows] == ["alarm", "alarm"]
    states = [json.loads(r.payload)["attrs"]["state"] for r in rows]
    assert states == ["raised", "cleared"]
    assert worker.detected_frames < worker.frames  # the gate really skipped frames
    assert (tmp_path / "cam1-background.npy").exists()  # kept for the next start


def test_dwell_from_the_real_tracker_live_tracks() -> None:
    import numpy as np

    from edge.pipeline.tracker import IouTracker, TrackerConfig
    from edge.types import Detection

    zone = _zone(((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0)), id="gate", rule="dwell", dwell_s=10)
    mon = DwellMonitor("cam1", [zone])
    tracker: IouTracker[int] = IouTracker("cam1", lambda s: 1.0, TrackerConfig(max_age_s=1.0, min_hits=1))
    plate = RawIdentifier(IdKind.PLATE, "辽B12345")
    out: list[Observation] = []
    for i in range(40):  # a car stands in the zone for 15 s, then drives out of the picture
        ts = T0 + i * 0.5
        dets = [Detection(Box(100, 300, 220, 400), 0.9, np.zeros((4, 2), np.float32))] if i < 30 else []
        tracker.update(ts, dets, lambda d: 1)
        live = tracker.live()
        out += mon.update(live, ts, (480, 640), {t.track_id: plate for t in live})
    assert [o.attrs["state"] for o in out] == ["raised", "cleared"]
    assert out[0].ts == T0 + 10.0
    wire = _wire(out[0])
    assert wire["subject"]["type"] == "plate" and "B12345" not in json.dumps(wire, ensure_ascii=False)
    assert "subject" not in _wire(out[1])

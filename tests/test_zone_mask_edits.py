"""Zones and masks as the console edits them: polygon checks, the form, the file edit, live swaps, masks honoured.

The last test runs the real capture daemon (in-process) on a real photo through the real face model:
with a mask over the face, no face event is committed; without it, there are.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.app.config import load_config, parse_config
from edge.app.config_edits import with_shapes
from edge.console.shapes import ShapeFormError, format_points, parse_rows
from edge.errors import ConfigError
from edge.pipeline.masks import FrameMasker
from edge.pipeline.polygon import polygon_problem
from edge.pipeline.zoneconfig import ZoneConfig
from edge.pipeline.zones import DwellMonitor, ZoneWatcher
from edge.types import Box, Frame
from tests.conftest import MODELS_DIR, SHARED_DATA, new_gateway

OBAMA = SHARED_DATA / "faces" / "face_recognition" / "obama" / "obama.jpg"
SQUARE = ((0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.5))


def test_polygon_problems_name_what_is_wrong() -> None:
    assert polygon_problem(SQUARE) is None
    assert "at least 3 points" in (polygon_problem(((0.1, 0.1), (0.2, 0.2)), "zone") or "")
    assert "outside the frame" in (polygon_problem(((0.1, 0.1), (1.3, 0.1), (0.5, 0.5)), "zone") or "")
    bow_tie = ((0.1, 0.1), (0.5, 0.5), (0.5, 0.1), (0.1, 0.5))
    assert "crosses itself" in (polygon_problem(bow_tie, "mask") or "")
    assert "no area" in (polygon_problem(((0.1, 0.1), (0.2, 0.2), (0.3, 0.3))) or "")


def _config(tmp_path: Path, extra: str = "") -> str:
    return f"""[gateway]
district = "d1"
community = "c1"
gateway = "g1"
data_dir = "{tmp_path}"

[[cameras]]
id = "gate1"
kind = "fake"

[[cameras]]
id = "lane"
kind = "fake"

# the fire lane, drawn by hand
[[zones.zone]]
id = "lane1"
camera = "lane"
rule = "obstruction"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
{extra}"""


def test_the_validator_refuses_bad_zones_and_masks(tmp_path: Path) -> None:
    bad_zone = ('[[zones.zone]]\nid = "z"\ncamera = "gate1"\nrule = "dwell"\n'
                "polygon = [[0.1,0.1],[0.5,0.5],[0.5,0.1],[0.1,0.5]]\n")
    with pytest.raises(ConfigError, match="crosses itself"):
        parse_config(_config(tmp_path, bad_zone), "gw.toml", tmp_path)
    bad_mask = '[[masks]]\nid = "m"\ncamera = "nowhere"\npolygon = [[0.1,0.1],[0.5,0.1],[0.5,0.5]]\n'
    with pytest.raises(ConfigError, match="masks are drawn on cameras that are not configured: nowhere"):
        parse_config(_config(tmp_path, bad_mask), "gw.toml", tmp_path)


def test_with_shapes_replaces_one_cameras_shapes_and_keeps_the_rest(tmp_path: Path) -> None:
    text = _config(tmp_path)
    out = with_shapes(text, "gate1", [{"id": "stall", "rule": "dwell", "polygon": list(SQUARE), "dwell_s": 20.0}],
                      [{"id": "window", "polygon": [(0.6, 0.0), (1.0, 0.0), (1.0, 0.3)], "note": "neighbour"}])
    cfg = parse_config(out, "gw.toml", tmp_path)
    assert "# the fire lane, drawn by hand" in out  # comments elsewhere survive
    assert [z.id for z in cfg.zones.zone] == ["lane1", "stall"]
    assert cfg.zones.zone[1].dwell_s == 20.0 and cfg.zones.zone[1].camera == "gate1"
    assert [(m.id, m.camera, m.note) for m in cfg.masks] == [("window", "gate1", "neighbour")]
    # Saving the camera with nothing drawn removes its shapes, not the other camera's.
    cleared = parse_config(with_shapes(out, "gate1", [], []), "gw.toml", tmp_path)
    assert [z.id for z in cleared.zones.zone] == ["lane1"] and cleared.masks == ()
    gone = with_shapes(with_shapes(out, "gate1", [], []), "lane", [], [])
    assert "zones" not in parse_config(gone, "gw.toml", tmp_path).model_dump(exclude_defaults=True)


def test_the_form_rows_become_config_shapes() -> None:
    form = {"kind": ["zone", "mask", "zone"], "id": ["stall", "win", ""],
            "points": ["0,0 99,0 99,49", "10,10 20,10 20,20", ""],
            "rule": ["dwell", "", "obstruction"], "note": ["", "a window", ""], "min_covered": ["", "", ""],
            "raise_after_s": ["", "", ""], "clear_after_s": ["", "", ""], "dwell_s": ["30", "", ""]}
    zones, masks = parse_rows(form, 100, 50)
    assert zones == [{"id": "stall", "rule": "dwell", "polygon": [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)], "dwell_s": 30.0}]
    assert masks[0]["id"] == "win" and masks[0]["note"] == "a window"
    assert format_points(zones[0]["polygon"], 100, 50) == "0,0 99,0 99,49"
    with pytest.raises(ShapeFormError, match="dwell_s must be a number"):
        parse_rows({**form, "dwell_s": ["soon", "", ""]}, 100, 50)
    with pytest.raises(ShapeFormError, match="is not a point"):
        parse_rows({**form, "points": ["0,0 99;0", "", ""]}, 100, 50)
    with pytest.raises(ShapeFormError, match="give it an id"):
        parse_rows({**form, "id": ["", "win", ""]}, 100, 50)


def test_the_masker_blacks_out_only_its_polygons() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    masker = FrameMasker([((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))])
    out = masker.apply(Frame("c", 0, 0.0, image))
    assert int(out.image[:, :90].max()) == 0 and int(out.image[:, 110:].min()) == 200
    assert masker.set_polygons([]) and not masker.set_polygons([])
    again = np.full((100, 200, 3), 200, np.uint8)
    assert int(masker.apply(Frame("c", 1, 0.1, again)).image.min()) == 200
    readonly = np.full((100, 200, 3), 200, np.uint8)
    readonly.flags.writeable = False
    masker.set_polygons([SQUARE])
    masked = masker.apply(Frame("c", 2, 0.2, readonly))
    assert int(masked.image[30, 60].max()) == 0 and int(readonly.min()) == 200  # a copy, the buffer untouched


def _zone(zid: str, rule: str, **kw: float) -> ZoneConfig:
    return ZoneConfig(id=zid, camera="gate1", rule=rule, polygon=SQUARE, **kw)  # type: ignore[arg-type]


def test_zone_watcher_swaps_zones_keeping_unchanged_ones() -> None:
    keep, other = _zone("keep", "obstruction", raise_after_s=5.0), _zone("other", "obstruction")
    watcher = ZoneWatcher("gate1", [keep, other])
    watcher.covered["keep"] = 0.7
    kept_rule = watcher.rules[0]
    assert watcher.set_zones([keep, _zone("new", "obstruction")])
    assert [z.id for z in watcher.zones] == ["keep", "new"]
    assert watcher.rules[0] is kept_rule and watcher.covered == {"keep": 0.7, "new": 0.0}
    assert not watcher.set_zones([keep, _zone("new", "obstruction")])


def test_dwell_monitor_clears_an_alarm_of_a_removed_zone() -> None:
    zone = _zone("stall", "dwell", dwell_s=1.0)
    dwell = DwellMonitor("gate1", [zone])
    box = Box(20.0, 10.0, 40.0, 40.0)  # its ground point (30, 40) of 100x100 lies in SQUARE
    assert dwell.observe(1, box, 0.0, (100, 100)) == []
    raised = dwell.observe(1, box, 2.0, (100, 100))
    assert [o.attrs["state"] for o in raised] == ["raised"]
    assert dwell.set_zones([])
    cleared = dwell.expire(2.5)
    assert [(o.attrs["state"], o.attrs["zone"]) for o in cleared] == [("cleared", "stall")]
    assert dwell.observe(1, box, 3.0, (100, 100)) == []  # no zone left to dwell in


def _face_events(cfg_path: Path) -> int:
    from edge.app.capture import CaptureDaemon

    daemon = CaptureDaemon(load_config(cfg_path), cfg_path.parent, cfg_path)
    stop = threading.Timer(120.0, daemon.stop)  # a guard: a finite file ends the run long before
    stop.start()
    try:
        daemon.run(exit_when_done=True, status_interval_s=0.5)
    finally:
        stop.cancel()
    return sum(n for kind, n in daemon.committer.committed_by_kind.items() if "face" in kind)


@pytest.mark.models
def test_capture_honours_a_mask_on_a_real_face(tmp_path: Path) -> None:
    from edge.vision.faces import FaceAnalyzer

    image = cv2.imread(str(OBAMA))
    assert image is not None
    h, w = image.shape[:2]
    faces = FaceAnalyzer(MODELS_DIR).detect(image)
    assert faces, "the real face model found no face on the photo"
    b = faces[0].box  # a mask over the face only, with a margin; the rest of the picture stays
    x1, y1 = max(0.0, (b.x1 - 20) / (w - 1)), max(0.0, (b.y1 - 20) / (h - 1))
    x2, y2 = min(1.0, (b.x2 + 20) / (w - 1)), min(1.0, (b.y2 + 20) / (h - 1))
    camera = f"""
[models]
dir = "{MODELS_DIR}"

[[cameras]]
id = "gate1"
kind = "file"
path = "{OBAMA}"
pace = "lossless"
hold_frames = 12

[motion]
enabled = false

[metrics]
enabled = false
"""
    (tmp_path / "open").mkdir()
    (tmp_path / "masked").mkdir()
    unmasked = _face_events(new_gateway(tmp_path / "open", camera))
    assert unmasked > 0, "the real face model found no face on the photo: the masked run would prove nothing"
    mask = (f'[[masks]]\nid = "face"\ncamera = "gate1"\n'
            f"polygon = [[{x1:.4f}, {y1:.4f}], [{x2:.4f}, {y1:.4f}], [{x2:.4f}, {y2:.4f}], [{x1:.4f}, {y2:.4f}]]\n")
    assert (x2 - x1) * (y2 - y1) < 0.5  # the mask covers the face, not the picture
    assert _face_events(new_gateway(tmp_path / "masked", camera + mask)) == 0

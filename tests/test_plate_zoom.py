"""Track-guided looks in the plate path (edge.pipeline.plates.TrackZoom): a look around the predicted
plate where a frame's detection missed it, and a look back at earlier frames when a track starts. A
scripted reader stands in for the models here
(what each look finds is the point); bench/ab_gate_plates.py measures them with the real ones."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from bench._common import MODELS_DIR, SHARED_DATA, csv_rows
from bench.bench_gate_plates import PLATES
from edge.models.config import RuntimeOptions
from edge.pipeline.config import PlateConfig
from edge.pipeline.plates import PlatePath, TrackZoom
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.reader import PlateReader
from edge.plates.values import PlateRead
from edge.types import Box, Frame

BOX = Box(100, 100, 160, 120)


def _read(text: str = "皖A12345", conf: float = 0.95) -> PlateRead:
    corners = np.array([[100, 100], [160, 100], [160, 120], [100, 120]], np.float32)
    return PlateRead(text, conf, (conf,) * len(text), corners, BOX, PlateColour.BLUE, PlateLayout.SINGLE, True,
                     None, colour_trusted=True)


class Reader:
    """Frame `i` is an image filled with i. `read` finds the plate on the frames in `seen`;
    `read_near` finds it on the frames in `near` (when asked around the plate's box)."""

    def __init__(self, seen: set[int], near: set[int]) -> None:
        self.seen, self.near = seen, near
        self.near_calls: list[int] = []

    def read(self, image: NDArray[np.uint8]) -> list[PlateRead]:
        return [_read()] if int(image[0, 0, 0]) in self.seen else []

    def read_near(self, image: NDArray[np.uint8], box: Box, **_: Any) -> list[PlateRead]:
        i = int(image[0, 0, 0])
        self.near_calls.append(i)
        return [_read()] if i in self.near and box.iou(BOX) > 0.5 else []


def _run(reader: Reader, zoom: TrackZoom, frames: int = 12, cfg: PlateConfig | None = None) -> list[Any]:
    path = PlatePath("gate", reader, cfg or PlateConfig(early_min_agreeing=0), zoom=zoom)  # type: ignore[arg-type]
    out = []
    for i in range(frames):
        out += path.process(Frame("gate", i, 100.0 + i * 0.1, np.full((8, 8, 3), i, np.uint8)))
    return out + path.finish()


def test_a_plate_found_once_is_looked_for_again_until_the_vehicle_has_left() -> None:
    reader = Reader(seen={0}, near={1, 2, 3})
    (obs,) = _run(reader, TrackZoom(zoom=True, max_misses=3))
    assert obs.attrs["frames"] == 4 and obs.attrs["reads"] == 4
    # Frames 1-3 found by the look; 4-6 missed three times in a row; then no more looks.
    assert reader.near_calls == [1, 2, 3, 4, 5, 6]


def test_without_zoom_nothing_is_looked_at_again() -> None:
    reader = Reader(seen={0}, near={1, 2, 3})
    (obs,) = _run(reader, TrackZoom())
    assert obs.attrs["frames"] == 1 and reader.near_calls == []


def test_zoom_lets_a_small_plate_decide_early() -> None:
    reader = Reader(seen={0}, near={1, 2, 3})
    got = _run(reader, TrackZoom(zoom=True), cfg=PlateConfig())
    assert [o.attrs["decision"] for o in got] == ["early"]
    assert got[0].ts == 100.2  # the third frame: two of the three reads came from the look


def test_a_new_track_looks_back_at_the_frames_before_it() -> None:
    reader = Reader(seen={3}, near={1, 2})
    (obs,) = _run(reader, TrackZoom(lookback_frames=5), frames=4)
    assert sorted(reader.near_calls) == [0, 1, 2] and obs.attrs["frames"] == 3


def test_the_look_back_keeps_no_frame_older_than_a_track_lives() -> None:
    reader = Reader(seen={3}, near={0, 1, 2})
    path = PlatePath("gate", reader, PlateConfig(early_min_agreeing=0, track_max_age_s=0.15),  # type: ignore[arg-type]
                     zoom=TrackZoom(lookback_frames=5))
    for i in range(4):
        path.process(Frame("gate", i, 100.0 + i * 0.1, np.full((8, 8, 3), i, np.uint8)))
    assert sorted(reader.near_calls) == [2]  # frames 0 and 1 are more than 0.15 s before frame 3


@pytest.mark.models
def test_the_real_reader_finds_a_plate_around_a_predicted_box_and_nothing_elsewhere() -> None:
    """Measured on the 36 CCPD scenes: a box 15 % of the plate's width and 20 % of its height off
    (a prediction's error) finds the labelled plate on 36 (IoU 0.61-0.97); a box of the same size at
    the top of the scene finds nothing on 35."""
    try:
        reader = PlateReader(MODELS_DIR, RuntimeOptions(intra_op_threads=1))
        rows = [r for r in csv_rows(PLATES / "labels.csv") if r.get("kind") == "full_scene"]
    except FileNotFoundError as exc:
        pytest.skip(f"plate models or data missing ({exc})")
    if not rows:
        pytest.skip("no CCPD scenes")
    found = empty = 0
    for row in rows:
        image = np.asarray(cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR), np.uint8)
        label = Box(*(float(row[k]) for k in ("x1", "y1", "x2", "y2")))
        dx, dy = 0.15 * label.width, 0.2 * label.height
        got = reader.read_near(image, Box(label.x1 + dx, label.y1 + dy, label.x2 + dx, label.y2 + dy))
        found += bool(got) and got[0].box.iou(label) > 0.5
        empty += not reader.read_near(image, Box(label.x1, 10, label.x2, 10 + label.height))
    assert found >= len(rows) - 1 and empty >= len(rows) - 2


class UnreadReader(Reader):
    """Finds a plate-shaped thing on the frames in `seen` whose text never passes the grammar."""

    def read(self, image: NDArray[np.uint8]) -> list[PlateRead]:
        if int(image[0, 0, 0]) not in self.seen:
            return []
        corners = np.array([[100, 100], [160, 100], [160, 120], [100, 120]], np.float32)
        return [PlateRead("皖A1", 0.1, (0.1,) * 3, corners, BOX, PlateColour.BLUE, PlateLayout.SINGLE, False,
                          None, colour_trusted=False)]


def test_an_unreadable_detection_on_one_frame_alone_is_not_a_passage() -> None:
    # Measured on the gate clip: a 437 px "plate" on a car's body, one frame, unreadable, became a
    # second passage of a vehicle already reported (bench_gate_plates clip, 37 events for 36).
    path = PlatePath("gate", UnreadReader(seen={5}, near=set()), PlateConfig(early_min_agreeing=0),  # type: ignore[arg-type]
                     zoom=TrackZoom())
    out = []
    for i in range(12):
        out += path.process(Frame("gate", i, 100.0 + i * 0.1, np.full((8, 8, 3), i, np.uint8)))
    assert out + path.finish() == [] and path.unread_dropped == 1
    # Seen on two frames, an unreadable plate is a vehicle: one passage, no plate value.
    (obs,) = _run(UnreadReader(seen={5, 6}, near=set()), TrackZoom())
    assert obs.subject is None and obs.attrs["frames"] == 2 and obs.attrs["reads"] == 0

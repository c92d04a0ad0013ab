"""The IoU tracker (one passage → one track, best samples kept) and the gate-line direction helper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.camera.config import FakeCameraConfig
from drivers.camera.fake import FakeCamera
from edge.pipeline.config import GateLineConfig
from edge.pipeline.tracker import Direction, GateLine, IouTracker, TrackerConfig, track_direction
from edge.types import Box, Detection, Track

FPS = 10.0


@dataclass(frozen=True)
class Sample:
    """What a test track keeps: the frame it came from and a quality."""

    frame: int
    quality: float


def det(box: Box, score: float = 0.9) -> Detection:
    return Detection(box=box, score=score, keypoints=np.zeros((5, 2), np.float32))


def sampler(frame: int, quality: float) -> Callable[[Detection], Sample]:
    """make_sample for one frame: records the frame index and a chosen quality."""

    def make(_: Detection) -> Sample:
        return Sample(frame, quality)

    return make


def run(
    tracker: IouTracker[Sample],
    boxes_per_frame: list[list[Box]],
    quality: list[float] | None = None,
) -> tuple[list[Track[Sample]], list[tuple[int, list[Track[Sample]]]]]:
    """Feed frames at FPS; return all finished tracks and (frame, tracks) when each ended."""
    out: list[Track[Sample]] = []
    when: list[tuple[int, list[Track[Sample]]]] = []
    for i, boxes in enumerate(boxes_per_frame):
        q = quality[i] if quality else float(i)
        ended = tracker.update(i / FPS, [det(b) for b in boxes], sampler(i, q))
        if ended:
            when.append((i, ended))
        out += ended
    flushed = tracker.flush()
    if flushed:
        when.append((len(boxes_per_frame), flushed))
    return out + flushed, when


def fake_boxes(objects: int, frames: int, speed: float = 4.0) -> list[list[Box]]:
    cam = FakeCamera(FakeCameraConfig(id="t", objects=objects, speed_px=speed, width=320, height=240))
    return [cam.boxes_at(i) for i in range(frames)]


def test_one_object_moving_is_one_track_with_its_best_samples() -> None:
    boxes = fake_boxes(1, 40)
    quality = [float((i * 7) % 13) for i in range(40)]  # not monotonic, so "best" means something
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(best_k=3))
    tracks, _ = run(tracker, boxes, quality)
    assert len(tracks) == 1
    t = tracks[0]
    assert t.source_id == "cam"
    assert t.hits == 40
    assert t.first_box == boxes[0][0] and t.last_box == boxes[-1][0]
    assert t.first_ts == 0.0 and t.last_ts == pytest.approx(39 / FPS)
    assert t.duration == pytest.approx(3.9)
    best = sorted(quality, reverse=True)[:3]
    assert [s.quality for s in t.samples] == best  # best first
    assert all(quality[s.frame] == s.quality for s in t.samples)


def test_two_objects_are_two_tracks() -> None:
    boxes = fake_boxes(2, 30)
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality)
    tracks, _ = run(tracker, boxes)
    assert len(tracks) == 2
    assert {t.hits for t in tracks} == {30}
    assert {t.first_box for t in tracks} == set(boxes[0])
    assert {t.last_box for t in tracks} == set(boxes[-1])
    assert tracks[0].track_id != tracks[1].track_id


def test_a_gap_shorter_than_max_age_keeps_the_track() -> None:
    boxes = fake_boxes(1, 40)
    gappy = [[] if 10 <= i < 15 else b for i, b in enumerate(boxes)]  # 0.5 s unseen
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(max_age_s=1.0))
    tracks, _ = run(tracker, gappy)
    assert len(tracks) == 1
    assert tracks[0].hits == 35


def test_a_gap_longer_than_max_age_splits_and_ends_the_first_track_on_time() -> None:
    boxes = fake_boxes(1, 40)
    gappy = [[] if 10 <= i < 25 else b for i, b in enumerate(boxes)]  # 1.5 s unseen
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(max_age_s=1.0))
    tracks, when = run(tracker, gappy)
    assert [t.hits for t in tracks] == [10, 15]
    # The first track ends during the gap, as soon as it is more than 1 s old, not at the flush.
    first_end_frame, first_ended = when[0]
    assert first_ended[0].hits == 10
    assert 19 < first_end_frame < 25


def test_max_age_in_frames() -> None:
    boxes = fake_boxes(1, 30)
    gappy = [[] if 10 <= i < 13 else b for i, b in enumerate(boxes)]  # 3 detector runs unseen
    keep = IouTracker[Sample]("cam", lambda s: s.quality, TrackerConfig(max_age_s=None, max_age_frames=3))
    split = IouTracker[Sample]("cam", lambda s: s.quality, TrackerConfig(max_age_s=None, max_age_frames=2))
    assert len(run(keep, gappy)[0]) == 1
    assert len(run(split, gappy)[0]) == 2


def test_a_one_frame_blip_is_not_a_track() -> None:
    boxes = fake_boxes(1, 10)
    boxes[5] = [*boxes[5], Box(10, 200, 30, 220)]  # a false detection in one frame
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(min_hits=2))
    tracks, _ = run(tracker, boxes)
    assert len(tracks) == 1
    assert tracker.stats().discarded == 1
    assert tracker.stats().finished == 1


def test_a_small_fast_object_keeps_its_track_without_overlap() -> None:
    # 20 px box moving 30 px per detector run: consecutive boxes never overlap (IoU 0).
    boxes = [[Box(10 + 30 * i, 100, 30 + 30 * i, 120)] for i in range(10)]
    assert boxes[0][0].iou(boxes[1][0]) == 0.0
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(max_centre_distance=2.0))
    tracks, _ = run(tracker, boxes)
    assert len(tracks) == 1 and tracks[0].hits == 10
    # Without the centre-distance fallback it breaks up into one-hit fragments (discarded).
    strict: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(max_centre_distance=0.0))
    assert run(strict, boxes)[0] == []


def test_a_distant_box_of_another_size_starts_a_new_track() -> None:
    boxes = [[Box(100, 100, 140, 140)], [Box(100, 100, 140, 140)], [Box(150, 100, 250, 200)], [Box(150, 100, 250, 200)]]
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality)
    assert [t.hits for t in run(tracker, boxes)[0]] == [2, 2]


def test_expire_ends_old_tracks_when_the_motion_gate_skips_frames() -> None:
    boxes = fake_boxes(1, 5)
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality, TrackerConfig(max_age_s=1.0))
    for i, b in enumerate(boxes):
        assert tracker.update(i / FPS, [det(x) for x in b], sampler(i, 1.0)) == []
    assert tracker.expire(0.4 + 0.9) == []
    ended = tracker.expire(0.4 + 1.1)
    assert len(ended) == 1 and ended[0].hits == 5
    assert tracker.active == 0


def test_config_needs_some_max_age() -> None:
    with pytest.raises(ValidationError, match="max_age"):
        TrackerConfig(max_age_s=None, max_age_frames=None)


def _track(start: tuple[float, float], end: tuple[float, float]) -> Track[None]:
    def box(c: tuple[float, float]) -> Box:
        return Box(c[0] - 5, c[1] - 5, c[0] + 5, c[1] + 5)

    return Track(1, "cam", 0.0, 1.0, 5, box(start), box(end), ())


def test_gate_line_direction() -> None:
    line = GateLine((0.0, 120.0), (320.0, 120.0))  # drawn left to right: moving down the picture is in
    assert line.direction(_track((160, 50), (160, 200))) is Direction.IN
    assert line.direction(_track((160, 200), (160, 50))) is Direction.OUT
    assert line.direction(_track((20, 50), (300, 60))) is Direction.NONE  # never crossed
    assert line.direction(_track((160, 120), (160, 200))) is Direction.NONE  # started on the line
    reversed_line = GateLine((320.0, 120.0), (0.0, 120.0))
    assert reversed_line.direction(_track((160, 50), (160, 200))) is Direction.OUT
    short = GateLine((0.0, 120.0), (100.0, 120.0))
    assert short.direction(_track((200, 50), (200, 200))) is Direction.NONE  # passed beside the gate
    assert short.direction(_track((130, 50), (30, 200))) is Direction.IN  # diagonal, crosses at x≈83
    assert short.direction(_track((150, 50), (50, 200))) is Direction.NONE  # crosses at x≈103, beside it
    assert track_direction(_track((160, 50), (160, 200)), None) is Direction.NONE


def test_direction_of_a_real_track_across_a_vertical_gate() -> None:
    boxes = fake_boxes(1, 60, speed=5.0)  # left to right across 320 px
    tracker: IouTracker[Sample] = IouTracker("cam", lambda s: s.quality)
    tracks, _ = run(tracker, boxes)
    down = GateLine.from_config(GateLineConfig(a=(160.0, 0.0), b=(160.0, 240.0)))
    up = GateLine.from_config(GateLineConfig(a=(160.0, 240.0), b=(160.0, 0.0)))
    assert len(tracks) == 1
    assert down.direction(tracks[0]) is Direction.OUT
    assert up.direction(tracks[0]) is Direction.IN


def test_gate_line_config_rejects_a_point() -> None:
    with pytest.raises(ValidationError):
        GateLineConfig(a=(1.0, 1.0), b=(1.0, 1.0))


def shifted(box: Box, dx: float, dy: float) -> Box:
    return Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)


def test_a_frozen_track_builds_no_more_samples_but_keeps_tracking_and_ends_as_usual() -> None:
    tracker: IouTracker[Sample] = IouTracker("cam", quality=lambda s: s.quality, config=TrackerConfig(best_k=3))
    calls: list[int] = []

    def make(i: int) -> Callable[[Detection], Sample]:
        def sample(_: Detection) -> Sample:
            calls.append(i)
            return Sample(i, float(i))
        return sample

    box = Box(100, 100, 140, 140)
    for i in range(3):
        assert tracker.update(i / FPS, [det(shifted(box, 5 * i, 0))], make(i)) == []
    (open_track,) = tracker.peek()
    assert tracker.freeze(open_track.track_id) and not tracker.freeze(999)
    assert tracker.peek() == []  # a frozen (decided) track is no longer offered for deciding
    for i in range(3, 8):
        tracker.update(i / FPS, [det(shifted(box, 5 * i, 0))], make(i))
    (ended,) = tracker.flush()
    assert calls == [0, 1, 2]
    assert ended.hits == 8 and ended.last_box == shifted(box, 35, 0)
    assert [s.frame for s in ended.samples] == [2, 1, 0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_a_quality_bound_skips_only_samples_that_could_not_be_kept(seed: int) -> None:
    """With an upper bound of each sample's quality the kept best-k are exactly those without it,
    and samples whose bound cannot beat a full best-k are never built."""
    rng = np.random.default_rng(seed)
    n = 60
    # Ties on purpose (rounded qualities): a bound equal to the worst kept sample must skip, as a
    # sample of equal quality would not have replaced it.
    quality = np.round(rng.uniform(0.0, 1.0, n), 1).tolist()
    slack = np.where(rng.uniform(size=n) < 0.5, 0.0, rng.uniform(0.0, 0.3, n)).tolist()
    box = Box(200, 200, 260, 260)

    def play(bounded: bool) -> tuple[list[Track[Sample]], int]:
        tracker: IouTracker[Sample] = IouTracker("cam", quality=lambda s: s.quality, config=TrackerConfig(best_k=3))
        built = 0
        ended: list[Track[Sample]] = []
        for i in range(n):
            d = det(shifted(box, 2 * i, 0))

            def make(_: Detection, i: int = i) -> Sample:
                nonlocal built
                built += 1
                return Sample(i, quality[i])

            def bound(_: Detection, i: int = i) -> float:
                return quality[i] + slack[i]

            ended += tracker.update(i / FPS, [d], make, bound if bounded else None)
        return ended + tracker.flush(), built

    eager, eager_built = play(False)
    lazy, lazy_built = play(True)
    assert eager_built == n
    assert [[(s.frame, s.quality) for s in t.samples] for t in lazy] == \
        [[(s.frame, s.quality) for s in t.samples] for t in eager]
    assert [(t.track_id, t.hits) for t in lazy] == [(t.track_id, t.hits) for t in eager] == [(1, n)]
    assert lazy_built < n  # some samples could not have been kept and were never built


def test_predictions_and_samples_found_after_the_fact() -> None:
    tracker: IouTracker[str] = IouTracker("cam", quality=len, config=TrackerConfig(min_hits=1, best_k=3))
    tracker.update(0.0, [Detection(Box(0, 0, 10, 10), 1.0, np.zeros((4, 2), np.float32))], lambda d: "a")
    tracker.update(0.1, [Detection(Box(2, 0, 12, 10), 1.0, np.zeros((4, 2), np.float32))], lambda d: "bb")
    ((tid, pred),) = tracker.predictions(0.2)
    assert pred.x1 == pytest.approx(4.0)  # moved on at the track's velocity
    assert tracker.add_samples(tid, ["cccc", "ddd"]) and not tracker.add_samples(tid + 1, ["x"])
    (track,) = tracker.flush()
    assert track.hits == 4 and track.samples == ("cccc", "ddd", "bb")

"""The file camera on real data: a folder of photos as a clip, video files, looping, pacing, finishing."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.camera.config import FileCameraConfig, ResizeConfig
from drivers.camera.file import FileCamera, list_images
from drivers.camera.supervisor import CameraState, CameraSupervisor
from edge.errors import DriverError
from edge.types import Frame

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path}")
    return path


@pytest.fixture
def obama() -> Path:
    return _need(DATA / "faces" / "face_recognition" / "obama")


def read_all(cam: FileCamera, limit: int = 10_000) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < limit and (frame := cam.read()) is not None:
        frames.append(frame)
    return frames


def test_folder_of_photos_becomes_a_clip_with_held_frames(obama: Path) -> None:
    photos = list_images(str(obama))
    assert len(photos) == 4
    resize = ResizeConfig(width=320, height=240)
    cam = FileCamera(FileCameraConfig(id="gate", path=str(obama), hold_frames=3, fps=5.0, pace="fast", resize=resize))
    cam.open()
    frames = read_all(cam)
    assert [f.index for f in frames] == list(range(12))
    assert all(f.source_id == "gate" and f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    # Timestamps follow the clip's clock at 5 fps.
    assert np.allclose(np.diff([f.ts for f in frames]), 0.2)
    # Each photo stays 3 frames; consecutive photos differ.
    for k in range(4):
        held = frames[3 * k : 3 * k + 3]
        assert all(np.array_equal(held[0].image, f.image) for f in held)
    assert not np.array_equal(frames[2].image, frames[3].image)
    # Held frames share one picture, so frames are read-only values.
    assert not frames[0].image.flags.writeable
    with pytest.raises(ValueError):
        frames[0].image[0, 0] = 0
    # The clip shows the photos themselves, in name order.
    first = cv2.imread(str(photos[0]), cv2.IMREAD_COLOR)
    assert first is not None
    h, w = first.shape[:2]
    scale = min(320 / w, 240 / h)
    nw, nh = round(w * scale), round(h * scale)
    expected = cv2.resize(first, (nw, nh), interpolation=cv2.INTER_AREA)
    y0, x0 = (240 - nh) // 2, (320 - nw) // 2
    assert np.array_equal(frames[0].image[y0 : y0 + nh, x0 : x0 + nw], expected)
    # Exhausted: stays exhausted.
    assert cam.read() is None
    assert cam.status.frames_read == 12
    cam.close()


def test_fit_letterboxes_a_portrait_photo(obama: Path) -> None:
    portrait = obama / "obama.jpg"  # 910x1137
    cam = FileCamera(
        FileCameraConfig(id="c", path=str(portrait), pace="fast", resize=ResizeConfig(width=320, height=240))
    )
    cam.open()
    frame = cam.read()
    assert frame is not None and cam.read() is None
    image = frame.image
    assert image[:, :60].max() == 0 and image[:, -60:].max() == 0  # black side bars
    assert image[:, 100:220].mean() > 20  # the photo in the middle
    stretched = FileCamera(
        FileCameraConfig(
            id="c", path=str(portrait), pace="fast", resize=ResizeConfig(width=320, height=240, mode="stretch")
        )
    )
    stretched.open()
    other = stretched.read()
    assert other is not None and other.image.shape == (240, 320, 3)
    assert other.image[:, :60].max() > 0


def test_glob_and_recursive_folder(obama: Path) -> None:
    faces = obama.parents[1]
    by_glob = list_images(str(faces / "*" / "obama" / "*.jpg"))
    assert [p.name for p in by_glob] == [p.name for p in list_images(str(obama))]
    flat = list_images(str(obama.parent))
    deep = list_images(str(obama.parent), recursive=True)
    assert flat == [] and len(deep) > len(by_glob)
    cam = FileCamera(FileCameraConfig(id="c", path=str(faces / "*" / "obama" / "*.jpg"), pace="fast"))
    cam.open()
    assert len(read_all(cam)) == 4


def test_loop_starts_again(obama: Path) -> None:
    cam = FileCamera(FileCameraConfig(id="c", path=str(obama), hold_frames=2, pace="fast", loop=True))
    cam.open()
    frames = read_all(cam, limit=20)
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(20))  # indices keep counting across passes
    assert np.array_equal(frames[8].image, frames[0].image)
    assert np.array_equal(frames[17].image, frames[1].image)


def test_reads_an_mp4() -> None:
    video = _need(DATA / "video" / "car-detection.mp4")
    cam = FileCamera(FileCameraConfig(id="cars", path=str(video), pace="fast"))
    cam.open()
    frames = read_all(cam, limit=30)
    assert len(frames) == 30
    assert frames[0].shape == (432, 768)
    assert cam.status.nominal_fps == pytest.approx(12.5)
    assert cam.pace_fps is None  # fast
    assert np.allclose(np.diff([f.ts for f in frames]), 1 / 12.5)
    direct = cv2.VideoCapture(str(video))
    ok, first = direct.read()
    direct.release()
    assert ok and np.array_equal(frames[0].image, first)
    cam.close()


def test_a_video_plays_to_its_end_and_loops() -> None:
    gif = _need(DATA / "video" / "face-demographics-walking.gif")
    cam = FileCamera(FileCameraConfig(id="walk", path=str(gif), pace="fast"))
    cam.open()
    frames = read_all(cam)
    assert len(frames) == 35 and frames[0].shape == (270, 480)
    assert cam.read() is None
    looping = FileCamera(FileCameraConfig(id="walk", path=str(gif), pace="fast", loop=True))
    looping.open()
    again = read_all(looping, limit=40)
    assert len(again) == 40
    assert np.array_equal(again[35].image, frames[0].image)


def test_unreadable_images_are_skipped_with_a_warning(
    obama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(obama / "obama1.jpg", tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    cam = FileCamera(FileCameraConfig(id="c", path=str(tmp_path), hold_frames=2, pace="fast"))
    cam.open()
    with caplog.at_level(logging.WARNING, logger="drivers.camera.file"):
        frames = read_all(cam)
    assert len(frames) == 2
    assert any("b.jpg" in r.getMessage() for r in caplog.records)


def test_missing_or_empty_sources_fail_to_open(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no images"):
        FileCamera(FileCameraConfig(id="c", path=str(tmp_path))).open()
    with pytest.raises(DriverError, match="no such file"):
        FileCamera(FileCameraConfig(id="c", path=str(tmp_path / "missing.mp4"))).open()
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(DriverError, match="cannot open"):
        FileCamera(FileCameraConfig(id="c", path=str(tmp_path / "junk.mp4"))).open()


def test_supervised_file_source_finishes_and_closes_its_queue(obama: Path) -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(
        FileCameraConfig(id="gate", path=str(obama), hold_frames=5, pace="fast", queue_size=64)
    )
    with supervisor:
        received = list(queue)  # ends when the source is exhausted
        assert supervisor.wait(5.0)
        status = supervisor.status("gate")
    assert status.state is CameraState.FINISHED
    assert status.frames_read == 20 == len(received)
    assert status.frames_dropped == 0
    assert status.reconnects == 0 and status.last_error is None


def test_realtime_pace_follows_the_clip_rate(obama: Path) -> None:
    supervisor = CameraSupervisor()
    queue = supervisor.add_camera(
        FileCameraConfig(id="gate", path=str(obama), hold_frames=3, fps=40.0, pace="realtime", queue_size=64)
    )
    start = time.monotonic()
    with supervisor:
        received = list(queue)
        elapsed = time.monotonic() - start
    assert len(received) == 12
    # 12 frames at 40 fps: the last one is due 11/40 s after the first.
    assert elapsed >= 11 / 40 * 0.9
    assert elapsed < 3.0

"""Pure-numpy plate adapters: detector priors and decoding, rectification, colour, the track vote."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.plates import detector as det
from edge.plates.colour import PlateColour, PlateLayout, classify_colour
from edge.plates.grammar import PlateFormat
from edge.plates.recognisers import PPOCR_SPEC, frames_for, line_width, preprocess_lines
from edge.plates.rectify import INNER, corner_sides, may_be_double_row, stitch_double_row, warp_band
from edge.plates.values import PlateRead
from edge.plates.vote import PlateVote
from edge.types import Box


def test_priors_count_layout_and_cache() -> None:
    p = det.priors(720, 1280)
    assert p.shape == (sum(-(-720 // s) * -(-1280 // s) * 2 for s in (8, 16, 32)), 4)
    # First cell of stride 8: centre (4, 4), anchors 24 and 48 px.
    assert p[0].tolist() == [4.0, 4.0, 24.0, 24.0]
    assert p[1].tolist() == [4.0, 4.0, 48.0, 48.0]
    assert p[2].tolist() == [12.0, 4.0, 24.0, 24.0]  # next cell to the right
    assert det.priors(720, 1280) is p  # cached per input size
    assert not p.flags.writeable


def _outputs(h: int, w: int, hot: int, score: float = 0.95) -> list[NDArray[np.float32]]:
    n = det.priors(h, w).shape[0]
    loc = np.zeros((1, n, 4), np.float32)
    conf = np.zeros((1, n, 2), np.float32)
    conf[0, :, 0], conf[0, :, 1] = 0.99, 0.01
    conf[0, hot] = (1 - score, score)
    landms = np.zeros((1, n, 8), np.float32)
    # Model order: BR, BL, TL, TR as offsets of the anchor centre in units of 0.1 x anchor size.
    landms[0, hot] = [2, 1, -2, 1, -2, -1, 2, -1]
    return [loc, conf, landms]


def test_postprocess_decodes_box_and_orders_corners() -> None:
    params = det.DetectorParams(long_side=None)
    _, meta = det.preprocess(np.zeros((64, 128, 3), np.uint8), params)
    priors = det.priors(64, 128)
    hot = int(np.flatnonzero((priors[:, 0] == 60) & (priors[:, 1] == 28) & (priors[:, 2] == 24))[0])
    dets = det.postprocess(_outputs(64, 128, hot), meta, params)
    assert len(dets) == 1
    d = dets[0]
    assert d.score == pytest.approx(0.95)
    assert (d.box.x1, d.box.y1, d.box.x2, d.box.y2) == pytest.approx((48, 16, 72, 40))
    # TL, TR, BR, BL; each offset is 0.1 * 24 * (2 or 1) px.
    np.testing.assert_allclose(d.keypoints, [[55.2, 25.6], [64.8, 25.6], [64.8, 30.4], [55.2, 30.4]], rtol=1e-5)


def test_postprocess_clips_boxes_to_the_frame_and_rescales() -> None:
    params = det.DetectorParams(long_side=64)
    frame = np.zeros((64, 128, 3), np.uint8)  # detection runs at 32x64, results in frame pixels
    tensor, meta = det.preprocess(frame, params)
    assert tensor.shape == (1, 3, 32, 64) and meta.scale == pytest.approx(0.5)
    # A big anchor in the corner cell of stride 32 spills outside the frame on every side.
    priors = det.priors(32, 64)
    hot = int(np.flatnonzero(priors[:, 2] == 768)[0])
    d = det.postprocess(_outputs(32, 64, hot), meta, params)[0]
    assert (d.box.x1, d.box.y1, d.box.x2, d.box.y2) == (0.0, 0.0, 128.0, 64.0)
    assert det.postprocess(_outputs(32, 64, hot, score=0.5), meta, params) == []  # below 0.7


def test_preprocess_is_the_mean_subtracted_planar_frame() -> None:
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    frame = big[7:71, 11:139]  # a view with the parent's strides, as the refinement's crops can be
    tensor, meta = det.preprocess(frame, det.DetectorParams(long_side=None))
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, 64, 128) and meta.scale == 1.0
    want = frame.astype(np.float32).transpose(2, 0, 1)[None] - np.array([104, 117, 123], np.float32)[:, None, None]
    assert np.array_equal(tensor, want)


def test_suppress_keeps_the_best_of_overlapping_detections() -> None:
    params = det.DetectorParams(long_side=None)
    _, meta = det.preprocess(np.zeros((64, 128, 3), np.uint8), params)
    a = det.postprocess(_outputs(64, 128, 10, 0.9), meta, params)[0]
    b = det.postprocess(_outputs(64, 128, 12, 0.8), meta, params)[0]  # the neighbouring cell
    assert det.suppress([b, a], 0.4) == [a]
    assert det.suppress([], 0.4) == []


def _plate(
    colour_bgr: tuple[int, int, int], text_bgr: tuple[int, int, int], w: int = 440, h: int = 140
) -> NDArray[np.uint8]:
    """A synthetic plate: a coloured background with 7 character-like bars in the text colour."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = colour_bgr
    for i in range(7):
        x = 20 + i * 58
        img[25 : h - 25, x + 8 : x + 40] = text_bgr
        img[45 : h - 45, x + 16 : x + 32] = colour_bgr
    return img


@pytest.mark.parametrize(
    ("bg", "fg", "colour"),
    [
        ((170, 60, 10), (240, 240, 240), PlateColour.BLUE),
        ((20, 190, 230), (20, 20, 20), PlateColour.YELLOW),
        ((110, 210, 90), (25, 25, 25), PlateColour.GREEN),
        ((235, 235, 235), (20, 20, 20), PlateColour.WHITE),
        ((25, 25, 25), (235, 235, 235), PlateColour.BLACK),
    ],
)
def test_colour_of_synthetic_plates(bg: tuple[int, int, int], fg: tuple[int, int, int], colour: PlateColour) -> None:
    est = classify_colour(_plate(bg, fg))
    assert est.colour is colour
    assert est.support > 0.6


def test_colour_of_bad_input_is_unknown() -> None:
    assert classify_colour(np.zeros((0, 0, 3), np.uint8)).colour is PlateColour.UNKNOWN
    assert classify_colour(np.zeros((4, 4), np.uint8)).colour is PlateColour.UNKNOWN


def test_warp_band_rectifies_a_quadrilateral() -> None:
    plate = _plate((170, 60, 10), (240, 240, 240))
    canvas = np.zeros((400, 700, 3), np.uint8)
    # Put the plate into the canvas under a perspective transform, then warp it back.
    src = np.array([[0, 0], [440, 0], [440, 140], [0, 140]], np.float32)
    quad = np.array([[120, 110], [560, 150], [540, 300], [130, 250]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad)
    cv2.warpPerspective(plate, m, (700, 400), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
    back = warp_band(canvas, quad, 440, 140)
    assert back.shape == (140, 440, 3)
    assert np.abs(back.astype(int) - plate.astype(int)).mean() < 12
    band = warp_band(canvas, quad, 432, 124, INNER)
    # The inner band is the same plate without its outer 8 px rows and 4 px columns.
    assert np.abs(band.astype(int) - plate[8:132, 4:436].astype(int)).mean() < 14
    w, h = corner_sides(quad)
    assert w == pytest.approx(((440**2 + 40**2) ** 0.5 + (410**2 + 50**2) ** 0.5) / 2, rel=1e-3)
    assert not may_be_double_row(quad) or w / h < 2.6


def test_double_row_plate_becomes_one_line() -> None:
    plate = np.zeros((110, 220, 3), np.uint8)
    plate[:45, 66:154] = 200  # upper row: two characters in the middle
    plate[50:, :] = 100  # lower row: five characters over the full width
    line = stitch_double_row(plate)
    assert line.shape[0] == plate.shape[0] - round(110 * (5 / 12 - 1 / 12))
    assert line.shape[1] > plate.shape[1]  # the upper row now sits to the left of the lower row
    assert may_be_double_row(np.array([[0, 0], [220, 0], [220, 110], [0, 110]], np.float32))
    assert not may_be_double_row(np.array([[0, 0], [440, 0], [440, 140], [0, 140]], np.float32))


def test_preprocess_lines_scales_pads_and_counts_frames() -> None:
    crops = [np.full((24, 94, 3), 255, np.uint8), np.zeros((48, 100, 3), np.uint8)]
    widths = [line_width(24, 94, PPOCR_SPEC), line_width(48, 100, PPOCR_SPEC)]
    assert widths == [192, 104]
    batch = preprocess_lines(crops, PPOCR_SPEC, widths)
    assert batch.shape == (2, 3, 48, 192) and batch.dtype == np.float32
    assert batch[0].max() == pytest.approx(1.0) and batch[1, :, :, :104].min() == pytest.approx(-1.0)
    assert np.all(batch[1, :, :, 104:] == 0.0)  # padding is mid-grey
    assert frames_for(widths, PPOCR_SPEC) == [24, 13]


def _read(text: str, confs: list[float], colour: PlateColour = PlateColour.BLUE, valid: bool = True) -> PlateRead:
    corners = np.zeros((4, 2), np.float32)
    return PlateRead(
        text,
        float(np.mean(confs)),
        tuple(confs),
        corners,
        Box(0, 0, 10, 4),
        colour,
        PlateLayout.SINGLE,
        valid,
        PlateFormat.STANDARD,
    )


def test_vote_per_position_across_frames() -> None:
    vote = PlateVote()
    assert vote.result() is None
    vote.add(_read("皖A12345", [0.9, 0.9, 0.9, 0.4, 0.9, 0.9, 0.9]))
    vote.add(_read("皖A17345", [0.9, 0.9, 0.9, 0.6, 0.9, 0.9, 0.5]))
    vote.add(_read("皖A12346", [0.9, 0.9, 0.9, 0.5, 0.9, 0.9, 0.3]))
    vote.add(_read("皖A1234", [0.99] * 7, valid=False))  # invalid reads never vote
    res = vote.result()
    assert res is not None
    # Position 4: '2' has 0.4 + 0.5 against '7' 0.6; position 7: '5' has 0.9 + 0.5 against '6' 0.3.
    assert res.text == "皖A12345"
    assert res.reads == 3 and len(vote) == 3
    assert res.support == 1
    assert 0 < res.confidence <= 1
    assert "皖A" not in repr(res) and "皖A" not in repr(_read("皖A12345", [1.0] * 7))


def test_vote_prefers_the_dominant_length_and_colour() -> None:
    vote = PlateVote(min_confidence=0.5)
    vote.add(_read("皖AD12345", [0.9] * 8, PlateColour.GREEN))
    vote.add(_read("皖AD12345", [0.8] * 8, PlateColour.GREEN))
    vote.add(_read("皖A12345", [0.95] * 7, PlateColour.BLUE))
    vote.add(_read("皖A99999", [0.2] * 7))  # below the vote's confidence floor
    res = vote.result()
    assert res is not None
    assert res.text == "皖AD12345" and res.colour is PlateColour.GREEN and res.support == 2

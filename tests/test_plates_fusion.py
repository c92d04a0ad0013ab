"""Reads under gate conditions: grammar shares, the two recognisers fused per position, the track vote
weighted by each read's weakest character, and (with the real models) the accuracy floors reached on
the gate sets of bench/bench_gate_plates.py."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from bench import bench_gate_plates as bg
from bench import gate_sets
from bench._common import SkipSection
from edge.models.config import RuntimeOptions
from edge.plates.colour import PlateColour, PlateLayout
from edge.plates.ctc import ConstrainedDecoder, Decoded, Vocabulary
from edge.plates.fusion import (
    CLP_ALNUM,
    PPOCR_ALNUM,
    Calibration,
    confusable_positions,
    fuse,
    partners,
    settle_confusable,
)
from edge.plates.grammar import PROVINCES
from edge.plates.reader import PlateReader
from edge.plates.values import PlateRead
from edge.plates.vote import PlateVote
from edge.types import Box
from tests.test_plates_ctc import _probs, _spell

CHARSET = ["<blank>", *sorted(set(PROVINCES + "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))]


def test_a_faint_province_that_wins_among_provinces_has_a_high_share() -> None:
    vocab = Vocabulary(CHARSET)
    frames = _spell("皖AE587T")
    # The province frame is mostly blank (peak 0.04) but 皖 has 80 % of the provinces' mass.
    frames[0] = {"皖": 0.04, "豫": 0.01, "-": 0.95}
    d = ConstrainedDecoder(vocab).decode(_probs(vocab, frames))
    assert d is not None and d.text == "皖AE587T"
    assert d.char_confidences[0] < 0.1
    assert d.char_shares[0] > 0.7  # 0.04 of 0.05 and the other provinces' floor mass
    assert min(d.char_shares[1:]) > 0.99


def test_a_guessed_province_has_a_low_share() -> None:
    vocab = Vocabulary(CHARSET)
    frames = _spell("皖AE587T")
    frames[0] = {p: 0.03 for p in PROVINCES[:10]} | {"-": 0.7}
    d = ConstrainedDecoder(vocab).decode(_probs(vocab, frames))
    assert d is not None and d.char_shares[0] < 0.2


def test_calibration_is_a_monotone_step_map() -> None:
    cal = Calibration(edges=(0.5, 1.0), values=(0.2, 0.9))
    assert cal(0.1) == 0.2 and cal(0.5) == 0.2 and cal(0.51) == 0.9 and cal(1.0) == 0.9
    for table in (PPOCR_ALNUM, CLP_ALNUM):
        assert list(table.values) == sorted(table.values) and list(table.edges) == sorted(table.edges)


def _dec(text: str, confs: tuple[float, ...]) -> Decoded:
    return Decoded(text, confs, -1.0, tuple(1.0 for _ in confs))


def test_fusion_takes_the_better_calibrated_character() -> None:
    # PP-OCR reads the trailing T as 7 at 0.77; clp_rec reads T at 0.97.
    pp = _dec("皖AE5877", (1.0, 1.0, 0.94, 1.0, 1.0, 1.0, 0.77))
    clp = _dec("皖AE587T", (1.0, 1.0, 0.95, 0.99, 1.0, 1.0, 0.97))
    out = fuse(pp, clp)
    assert out.text == "皖AE587T"
    assert out.char_confidences[6] == pytest.approx(CLP_ALNUM(0.97) - PPOCR_ALNUM(0.77))
    assert out.char_shares[6] == 0.0 and out.char_shares[0] == 1.0


def test_fusion_never_takes_the_province_or_letter_and_keeps_mismatched_lengths() -> None:
    pp = _dec("豫C8615G", (0.07, 0.99, 1.0, 1.0, 1.0, 1.0, 0.98))
    clp = _dec("皖A8615G", (0.9, 0.9, 1.0, 1.0, 1.0, 1.0, 0.99))
    out = fuse(pp, clp)
    assert out.text == "豫C8615G" and out.char_confidences[0] == 0.07
    assert fuse(pp, _dec("皖AD11166", (0.9,) * 8)) is pp
    assert fuse(pp, None) is pp


def test_two_equally_sure_opinions_that_disagree_leave_an_unpublishable_character() -> None:
    pp = _dec("皖A12345", (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.995))
    clp = _dec("皖A12346", (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.995))
    out = fuse(pp, clp)
    assert out.char_confidences[6] < 0.1


def test_a_confusable_character_is_settled_only_by_its_partner() -> None:
    # Not weak (weakest 0.77, above second_opinion_below), but a 7 is confusable with T.
    pp = _dec("皖AE5877", (1.0, 1.0, 0.94, 1.0, 1.0, 0.8, 0.77))
    at = confusable_positions(pp, 0.9)
    assert at == [5, 6]  # the 8 at 1.0 (B's partner) and position 2's E are not open
    assert partners("7") == "1T" and partners("1") == "7TY" and partners("E") == ""
    out = settle_confusable(pp, _dec("皖AE587T", (1.0, 1.0, 0.95, 0.99, 1.0, 1.0, 0.97)), at)
    assert out.text == "皖AE587T"
    assert out.char_confidences[6] == pytest.approx(CLP_ALNUM(0.97) - PPOCR_ALNUM(0.77))
    assert out.char_confidences[:6] == pp.char_confidences[:6]  # every other position unchanged
    # A character that is not a partner (7 -> 2) is never taken, however sure clp_rec is.
    assert settle_confusable(pp, _dec("皖AE5872", (1.0,) * 7), at) is pp
    # Nor at a position that was not opened (the E), nor when clp_rec is less sure.
    assert settle_confusable(pp, _dec("皖AF5877", (1.0,) * 7), at) is pp
    assert settle_confusable(pp, _dec("皖AE587T", (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.3)), at) is pp
    assert settle_confusable(pp, None, at) is pp


def _read(text: str, confs: tuple[float, ...]) -> PlateRead:
    return PlateRead(text, float(np.mean(confs)), confs, np.zeros((4, 2), np.float32), Box(0, 0, 10, 4),
                     PlateColour.BLUE, PlateLayout.SINGLE, True, None)


def test_two_clear_frames_outvote_three_poor_ones() -> None:
    # Measured on the gate clip: two clear frames read ...Z, three frames weak elsewhere read ...2.
    reads = [
        _read("皖AR201Z", (0.97, 1.0, 1.0, 1.0, 1.0, 0.9, 0.82)),
        _read("皖AR201Z", (0.99, 0.98, 0.99, 1.0, 1.0, 0.77, 0.94)),
        _read("皖AR2012", (0.02, 0.33, 0.71, 0.99, 0.99, 0.97, 0.65)),
        _read("皖AR2012", (0.56, 0.92, 0.5, 1.0, 1.0, 1.0, 0.97)),
        _read("皖AR2012", (0.11, 0.95, 0.97, 0.71, 1.0, 0.71, 0.18)),
    ]
    weighted, plain = PlateVote(), PlateVote(by_weakest=False)
    for r in reads:
        weighted.add(r)
        plain.add(r)
    w, p = weighted.result(), plain.result()
    assert w is not None and w.text == "皖AR201Z"
    assert p is not None and p.text == "皖AR2012"  # the unweighted vote: the miss it fixes


# --- the real models on the gate sets (bench/bench_gate_plates.py) --------------------------------


def _gate() -> tuple[PlateReader, list[tuple[str, str, NDArray[np.uint8], float]]]:
    try:
        data = bg.scenes()
        reader = PlateReader(bg.MODELS_DIR, RuntimeOptions(intra_op_threads=1))
    except (SkipSection, FileNotFoundError) as exc:
        pytest.skip(f"plate data or models missing ({exc})")
    return reader, data


@pytest.mark.models
def test_letterboxed_720p_floor() -> None:
    """Measured 36/36 (0 wrong) with the defaults (the T/7/1 second opinion read the trailing T);
    before it 35/36 (1 wrong), main before issue 15 33/36."""
    reader, data = _gate()
    res = bg.score_set(reader, [(lab, gate_sets.letterboxed_720p(img)) for _, lab, img, _ in data])
    assert res["exact"] >= 35, res["misses"]
    assert res["wrong_published"] == 0


@pytest.mark.slow
@pytest.mark.models
def test_degraded_and_clip_floors() -> None:
    """Measured per seed 30 / 31 / 26 (wrong 0 / 1 / 4) and 34/36 on the clip (33 before the
    track-guided looks); main read 27 / 27 / 26 (wrong 2 / 2 / 2) and 32/36 before issue 15's second
    round. The floors are one below the measurement, per seed."""
    reader, data = _gate()
    floors = {15000: 29, 15001: 30, 15002: 25}
    wrong = 0
    for seed in gate_sets.seeds(3):
        rng = np.random.default_rng(seed)
        res = bg.score_set(reader, [(lab, gate_sets.degrade(img, rng).image) for _, lab, img, _ in data])
        assert res["exact"] >= floors[seed], (seed, res["misses"])
        wrong += res["wrong_published"]
    assert wrong <= 6
    clip = bg.clip(reader, [(lab, img) for _, lab, img, _ in data], seed=gate_sets.seeds(1, base=77)[0])
    assert clip["exact"] >= 33 and clip["events"] == clip["vehicles"]


@pytest.mark.slow
@pytest.mark.models
def test_fusion_tables_are_the_measured_calibration() -> None:
    """edge.plates.fusion's tables are what `bench_gate_plates.py --calibrate` measures (held-out crops),
    within 0.1 at every raw confidence.

    Not to the digit: the reads behind a table move with the pixel pipeline (OpenCV's decoding and
    resampling), and a few reads crossing a bin edge reshape the pool-adjacent-violators steps. Measured
    on 2026-12-03 against the tables pinned on 2026-12-02: OpenCV 5.1.0 (what `pip install` resolves
    now) differs by at most 0.048 (PP-OCR) and 0.015 (clp_rec), OpenCV 4.14 by 0.107 and 0.046; a bin
    of 50 reads has a standard error of about 0.07. A table from another model or another crop set
    differs by far more."""
    _gate()
    tables = bg.calibrate()
    grid = np.linspace(0.0, 1.0, 1001)
    for name, pinned in (("ppocr", PPOCR_ALNUM), ("clp", CLP_ALNUM)):
        gap = max(abs(tables[name](float(c)) - pinned(float(c))) for c in grid)
        assert gap <= 0.1, (name, gap, tables[name])

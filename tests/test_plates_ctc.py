"""CTC decoding: class restriction, greedy decoding, and decoding constrained by the plate grammar."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.typing import NDArray

from edge.plates.ctc import ConstrainedDecoder, Vocabulary, greedy_decode
from edge.plates.grammar import PlateFormat, is_valid_plate
from edge.plates.recognisers import clp_charset, ppocr_charset


def _probs(vocab: Vocabulary, frames: list[dict[str, float]]) -> NDArray[np.float32]:
    """Restricted probabilities [T, V]: each frame's listed chars get their mass, blank the rest."""
    out = np.full((len(frames), vocab.size), 1e-4, dtype=np.float32)
    for t, frame in enumerate(frames):
        for ch, p in frame.items():
            out[t, 0 if ch == "-" else vocab.chars.index(ch) + 1] = p
        rest = 1.0 - sum(frame.values())
        if "-" not in frame and rest > 0:
            out[t, 0] = rest
    out /= out.sum(axis=1, keepdims=True)
    return out


def _spell(text: str, p: float = 0.9) -> list[dict[str, float]]:
    """Frames spelling `text`: each char then a blank."""
    frames: list[dict[str, float]] = []
    for ch in text:
        frames += [{ch: p}, {"-": p}]
    return frames


def test_ppocr_charset_blank_first_space_last() -> None:
    charset = ppocr_charset({"character": "a\n皖\nA\n1"})
    assert charset[0] != " " and charset[1:5] == ["a", "皖", "A", "1"] and charset[-1] == " "
    assert clp_charset("0\n1\nA\n皖\n")[1:] == ["0", "1", "A", "皖"]


def test_vocabulary_restricts_and_renormalises() -> None:
    charset = ["<blank>", "I", "1", "皖", "A", "x", " "]
    vocab = Vocabulary(charset, keep="皖A1I")
    # I is kept only if asked for; plate vocabularies never ask for it.
    assert Vocabulary(charset).chars == "1A皖"
    assert vocab.missing == ""
    assert "x" not in vocab.chars
    probs = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.0]], dtype=np.float32)
    sub = Vocabulary(charset).restrict(probs)
    assert sub.shape == (1, 4)
    assert sub.sum() == pytest.approx(1.0, abs=1e-6)
    # The 'I' mass (0.5) and 'x' mass are gone; the rest keeps its proportions.
    assert sub[0, 0] == pytest.approx(0.1 / 0.4, rel=1e-5)
    assert Vocabulary(["<blank>", "A"]).missing  # a model without provinces lacks plate chars


def test_greedy_merges_repeats_and_drops_blanks() -> None:
    vocab = Vocabulary(["<blank>", *"皖A12345"])
    frames = [{"皖": 0.9}, {"皖": 0.95}, {"A": 0.8}, {"-": 0.9}, {"1": 0.7}, {"-": 0.9}, {"1": 0.6}]
    d = greedy_decode(_probs(vocab, frames), vocab.chars)
    assert d.text == "皖A11"
    assert len(d.char_confidences) == 4
    # A character's confidence is its peak probability over its frames.
    assert d.char_confidences[0] == pytest.approx(0.95, abs=1e-3)
    assert d.confidence == pytest.approx(np.mean(d.char_confidences))


def test_a_digit_read_as_province_is_corrected() -> None:
    vocab = Vocabulary(["<blank>", *"皖苏A0123456789"])
    frames = _spell("0A12345")
    frames[0] = {"0": 0.5, "皖": 0.3, "苏": 0.1}  # the province glyph looked like a 0
    probs = _probs(vocab, frames)
    assert greedy_decode(probs, vocab.chars).text == "0A12345"
    d = ConstrainedDecoder(vocab).decode(probs)
    assert d is not None
    assert d.text == "皖A12345"
    assert d.char_confidences[0] == pytest.approx(0.3, abs=0.01)


def test_a_dropped_repeat_is_restored_for_a_green_plate() -> None:
    vocab = Vocabulary(["<blank>", *"皖AD0123456789"])
    # "皖AD14488": the two 4s run together (a weak blank between them), so greedy reads 7 characters.
    frames = [*_spell("皖AD1"), {"4": 0.9}, {"4": 0.55, "-": 0.4}, {"4": 0.9}, {"-": 0.9}, *_spell("88")]
    probs = _probs(vocab, frames)
    greedy = greedy_decode(probs, vocab.chars)
    # Greedy reads a grammatical 7-character plate, so without a prior it stands.
    assert greedy.text == "皖AD1488"
    assert is_valid_plate(greedy.text)
    dec = ConstrainedDecoder(vocab)
    plain = dec.decode(probs)
    assert plain is not None and plain.text == "皖AD1488"
    # The plate is green, so new-energy forms get a prior: the 8-character path wins.
    green = dec.decode(probs, {PlateFormat.NEW_ENERGY_SMALL: 3.0, PlateFormat.NEW_ENERGY_LARGE: 3.0})
    assert green is not None and green.text == "皖AD14488"
    assert len(green.char_confidences) == 8


def test_too_few_frames_cannot_make_a_plate() -> None:
    vocab = Vocabulary(["<blank>", *"皖A12345"])
    assert ConstrainedDecoder(vocab).decode(_probs(vocab, _spell("皖A1")[:5])) is None
    assert ConstrainedDecoder(vocab).decode(np.zeros((0, vocab.size), np.float32)) is None


def _best_fixed_path(logp: NDArray[np.float64], labels: list[int]) -> float:
    """Log-prob of the best CTC path for a fixed label sequence (textbook Viterbi)."""
    ext = [0]
    for lab in labels:
        ext += [lab, 0]
    n_t, n_s = logp.shape[0], len(ext)
    d = np.full((n_t, n_s), -np.inf)
    d[0, 0], d[0, 1] = logp[0, 0], logp[0, ext[1]]
    for t in range(1, n_t):
        for s in range(n_s):
            best = d[t - 1, s]
            if s > 0:
                best = max(best, d[t - 1, s - 1])
            if s > 1 and ext[s] != 0 and ext[s] != ext[s - 2]:
                best = max(best, d[t - 1, s - 2])
            d[t, s] = best + logp[t, ext[s]]
    return float(max(d[-1, -1], d[-1, -2]))


@pytest.mark.parametrize("seed", range(4))
def test_constrained_decoding_finds_the_best_grammatical_path(seed: int) -> None:
    """Against brute force: every plate string over a tiny alphabet, scored by fixed-label Viterbi."""
    vocab = Vocabulary(["<blank>", *"皖A1D学"])
    dec = ConstrainedDecoder(vocab)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(10, vocab.size)) * 3
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    probs = probs.astype(np.float32)
    got = dec.decode(probs)
    assert got is not None and is_valid_plate(got.text)
    logp = np.log(np.maximum(probs.astype(np.float64), 1e-12))
    best_score, best_text = -np.inf, ""
    for tpl in dec.templates:
        options = [[c for c in allowed if c in vocab.chars] for allowed in tpl.positions]
        for combo in itertools.product(*options):
            score = _best_fixed_path(logp, [vocab.chars.index(c) + 1 for c in combo])
            if score > best_score:
                best_score, best_text = score, "".join(combo)
    assert got.text == best_text
    assert got.log_prob == pytest.approx(best_score, abs=1e-3)

"""CTC decoding of recogniser outputs: greedy, and constrained to the plate grammar.

Pure numpy. Inputs are per-frame class probabilities [T, C] (softmax outputs) with the CTC blank at
index 0. `Vocabulary` restricts a recogniser's classes to plate characters; `constrained_decode`
finds the most probable CTC path whose collapsed label sequence fits one of the plate templates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge.plates.grammar import PLATE_CHARS, TEMPLATES, PlateFormat, Template

_NEG = np.float32(-1e30)
_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded text with the peak probability of each character and the path log-probability."""

    text: str
    char_confidences: tuple[float, ...]
    log_prob: float
    # Each character's share of the probability among the characters its template position allows,
    # at its peak frame ((): not computed). A general recogniser spreads a small Chinese glyph's mass
    # over thousands of characters and the blank, so its peak is low even when, among the 31
    # provinces, one clearly wins; a guess among them has a share near 1/31.
    char_shares: tuple[float, ...] = ()

    @property
    def confidence(self) -> float:
        """Mean per-character confidence (0 for an empty read)."""
        return float(np.mean(self.char_confidences)) if self.char_confidences else 0.0

    @property
    def min_confidence(self) -> float:
        """The weakest character's confidence (0 for an empty read)."""
        return min(self.char_confidences) if self.char_confidences else 0.0


class Vocabulary:
    """A recogniser's character list restricted to a set of plate characters.

    `charset[i]` is the text of model class i; class 0 must be the CTC blank. Characters of `keep`
    missing from the model are dropped (reported by `missing`).
    """

    def __init__(self, charset: Sequence[str], keep: str = PLATE_CHARS) -> None:
        index = {ch: i for i, ch in enumerate(charset) if i > 0 and ch}
        self.chars: str = "".join(c for c in keep if c in index)
        self.missing: str = "".join(c for c in keep if c not in index)
        # Restricted class 0 is the blank, class j+1 is self.chars[j].
        self.model_index: NDArray[np.intp] = np.array([0, *(index[c] for c in self.chars)], dtype=np.intp)
        self._pos = {c: j + 1 for j, c in enumerate(self.chars)}

    @property
    def size(self) -> int:
        """Number of restricted classes, blank included."""
        return len(self.chars) + 1

    def restrict(self, probs: NDArray[np.float32]) -> NDArray[np.float32]:
        """Keep only blank and plate classes of model probabilities [T, C]; rows renormalised."""
        sub = np.asarray(probs, dtype=np.float32)[:, self.model_index]
        total = sub.sum(axis=1, keepdims=True)
        out: NDArray[np.float32] = sub / np.maximum(total, _EPS)
        return out

    def mask(self, allowed: str) -> NDArray[np.bool_]:
        """Boolean mask over restricted classes for the characters in `allowed` (blank excluded)."""
        m = np.zeros(self.size, dtype=np.bool_)
        for c in allowed:
            j = self._pos.get(c)
            if j is not None:
                m[j] = True
        return m


def _best_path(probs: NDArray[np.float32]) -> tuple[list[int], list[float], list[int], float]:
    """Argmax per frame with repeats merged and blanks dropped: (classes, peaks, peak frames, log-prob)."""
    best = probs.argmax(axis=1)
    peak = probs.max(axis=1)
    classes: list[int] = []
    confs: list[float] = []
    frames: list[int] = []
    prev = 0
    for t, k in enumerate(best.tolist()):
        if k not in (0, prev):
            classes.append(k)
            confs.append(float(peak[t]))
            frames.append(t)
        elif k != 0 and confs and float(peak[t]) > confs[-1]:
            confs[-1] = float(peak[t])
            frames[-1] = t
        prev = k
    return classes, confs, frames, float(np.log(np.maximum(peak, _EPS)).sum())


def greedy_decode(probs: NDArray[np.float32], chars: str) -> Decoded:
    """Best-path decoding: argmax per frame, merge repeats, drop blanks. `chars[j]` is class j+1."""
    if probs.size == 0:
        return Decoded("", (), float("-inf"))
    classes, confs, _, log_prob = _best_path(probs)
    return Decoded("".join(chars[k - 1] for k in classes), tuple(confs), log_prob)


@dataclass(frozen=True, slots=True)
class _Trace:
    """Viterbi back-pointers per frame (see ConstrainedDecoder.decode)."""

    char_move: NDArray[np.int8]
    char_from: NDArray[np.int16]
    blank_from: NDArray[np.int16]


class ConstrainedDecoder:
    """Viterbi search for the best CTC path whose label sequence matches a plate template."""

    def __init__(self, vocab: Vocabulary, templates: Sequence[Template] = TEMPLATES) -> None:
        usable = [t for t in templates if all(vocab.mask(p).any() for p in t.positions)]
        self.vocab = vocab
        self.templates: tuple[Template, ...] = tuple(usable)
        self._lmax = max((t.length for t in usable), default=0)
        k, lmax, v = len(usable), self._lmax, vocab.size
        # allowed[k, l, c]: template k admits restricted class c at position l (padding: nothing).
        self._allowed = np.zeros((k, lmax, v), dtype=np.bool_)
        for i, tpl in enumerate(usable):
            for pos, allowed in enumerate(tpl.positions):
                self._allowed[i, pos] = vocab.mask(allowed)
        self._lengths = np.array([t.length for t in usable], dtype=np.intp)

    def decode(self, probs: NDArray[np.float32], bias: Mapping[PlateFormat, float] | None = None) -> Decoded | None:
        """Decode restricted probabilities [T, V]; None when no template fits in T frames.

        `bias` adds a log-prior per plate form (e.g. from the plate's colour) to the path scores.
        """
        if not self.templates or probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] != self.vocab.size:
            return None
        prior = np.array([(bias or {}).get(t.form, 0.0) for t in self.templates], dtype=np.float32)
        # The best path overall is the best constrained path whenever it already spells a plate of a
        # most-favoured form: skip the search then (the common case, ~20x cheaper).
        classes, peaks, frames, greedy_logp = _best_path(probs)
        greedy_text = "".join(self.vocab.chars[c - 1] for c in classes)
        for i, tpl in enumerate(self.templates):
            if prior[i] == prior.max() and tpl.matches(greedy_text):
                return Decoded(greedy_text, tuple(peaks), greedy_logp + float(prior[i]),
                               self._shares(probs, i, classes, frames))
        logp = np.log(np.maximum(probs.astype(np.float32), _EPS))
        n_t = logp.shape[0]
        allowed = self._allowed
        n_k, lmax, n_v = allowed.shape
        first = np.zeros((1, lmax, 1), dtype=np.bool_)
        first[0, 0, 0] = True
        # chars[k, l, c]: best log-prob of a path whose last frame is char c at position l of template k.
        # blanks[k, l]: best log-prob of a path whose last frame is a blank after l characters.
        chars = np.where(allowed & first, logp[0][None, None, :], _NEG).astype(np.float32)
        blanks = np.full((n_k, lmax + 1), _NEG, dtype=np.float32)
        blanks[:, 0] = logp[0, 0]
        # Back-pointers per frame. Char states: 0 stay, 1 from the blank before, 2 from the previous
        # position's char (its class in char_from). Blank states: -1 stay, else the class of the char
        # just emitted.
        char_move = np.zeros((n_t, n_k, lmax, n_v), dtype=np.int8)
        char_from = np.zeros((n_t, n_k, lmax, n_v), dtype=np.int16)
        blank_from = np.full((n_t, n_k, lmax + 1), -1, dtype=np.int16)
        cls = np.arange(n_v)[None, None, :]
        for t in range(1, n_t):
            prev = np.full_like(chars, _NEG)
            prev[:, 1:, :] = chars[:, :-1, :]
            # The best previous char of another class: CTC needs a blank between equal characters.
            top2 = np.argpartition(prev, n_v - 2, axis=2)[:, :, -2:]
            v2 = np.take_along_axis(prev, top2, axis=2)
            swap = v2[:, :, 0] > v2[:, :, 1]
            i1 = np.where(swap, top2[:, :, 0], top2[:, :, 1])
            i2 = np.where(swap, top2[:, :, 1], top2[:, :, 0])
            s1 = np.maximum(v2[:, :, 0], v2[:, :, 1])
            s2 = np.minimum(v2[:, :, 0], v2[:, :, 1])
            same = cls == i1[:, :, None]
            from_prev = np.where(same, s2[:, :, None], s1[:, :, None])
            from_prev_idx = np.where(same, i2[:, :, None], i1[:, :, None])
            from_blank = np.broadcast_to(blanks[:, :lmax, None], chars.shape)
            cand = np.stack([chars, from_blank, from_prev], axis=0)
            move = cand.argmax(axis=0)
            best = np.take_along_axis(cand, move[None], axis=0)[0]
            char_move[t] = move
            char_from[t] = from_prev_idx
            char_best_idx = chars.argmax(axis=2)
            from_char = np.full_like(blanks, _NEG)
            from_char[:, 1:] = np.take_along_axis(chars, char_best_idx[:, :, None], axis=2)[:, :, 0]
            take = from_char > blanks
            blank_from[t, :, 1:] = np.where(take[:, 1:], char_best_idx, -1)
            blanks = (np.maximum(blanks, from_char) + logp[t, 0]).astype(np.float32)
            chars = np.where(allowed, best + logp[t][None, None, :], _NEG).astype(np.float32)
        kk = np.arange(n_k)
        last = self._lengths - 1
        end_char = chars[kk, last, :]
        end_char_best = end_char.max(axis=1)
        end_blank = blanks[kk, self._lengths]
        end = np.maximum(end_char_best, end_blank) + prior
        k = int(end.argmax())
        if end[k] <= _NEG / 2:
            return None
        in_blank = bool(end_blank[k] >= end_char_best[k])
        state = -1 if in_blank else int(end_char[k].argmax())
        trace = _Trace(char_move, char_from, blank_from)
        return self._backtrack(k, state, probs, float(end[k]), trace)

    def form_of(self, text: str) -> PlateFormat | None:
        """The form of the first template `text` matches."""
        for tpl in self.templates:
            if tpl.matches(text):
                return tpl.form
        return None

    def _backtrack(
        self,
        k: int,
        state: int,
        probs: NDArray[np.float32],
        log_prob: float,
        trace: _Trace,
    ) -> Decoded:
        """Follow back-pointers to recover the labels and each label's peak probability."""
        length = int(self._lengths[k])
        labels = [0] * length
        peaks = [0.0] * length
        frames = [0] * length
        # state -1: in a blank after `pos` characters; otherwise in char class `state` at pos - 1.
        pos = length
        for t in range(probs.shape[0] - 1, -1, -1):
            if state < 0:
                src = int(trace.blank_from[t, k, pos]) if t > 0 else -1
                if src >= 0:
                    state = src  # the char at position pos-1 occupied frame t-1
                continue
            i = pos - 1
            labels[i] = state
            if float(probs[t, state]) >= peaks[i]:
                peaks[i], frames[i] = float(probs[t, state]), t
            if t == 0:
                break
            move = int(trace.char_move[t, k, i, state])
            if move == 1:
                state, pos = -1, i
            elif move == 2:
                state, pos = int(trace.char_from[t, k, i, state]), i
        text = "".join(self.vocab.chars[c - 1] for c in labels)
        return Decoded(text, tuple(peaks), log_prob, self._shares(probs, k, labels, frames))

    def _shares(self, probs: NDArray[np.float32], k: int, classes: Sequence[int],
                frames: Sequence[int]) -> tuple[float, ...]:
        """Each label's probability over the summed probability of what its position of template k
        allows, at the label's peak frame (see Decoded.char_shares)."""
        out: list[float] = []
        for i, (c, t) in enumerate(zip(classes, frames, strict=True)):
            allowed = float(probs[t][self._allowed[k, i]].sum())
            out.append(float(probs[t, c]) / allowed if allowed > _EPS else 0.0)
        return tuple(out)

"""PlateReader: detect (clp_det), rectify, recognise (PP-OCRv4 rec) and validate Chinese plates."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.models.config import RuntimeOptions
from edge.models.manifest import Manifest, default_models_dir, load_manifest, model_path
from edge.models.runner import OrtRunner
from edge.plates import detector as det
from edge.plates import slimmed
from edge.plates.agreement import agrees, expected_length, forms_for
from edge.plates.colour import ColourEstimate, PlateColour, PlateLayout, classify_colour
from edge.plates.ctc import ConstrainedDecoder, Decoded, Vocabulary
from edge.plates.fusion import confusable_positions, fuse, settle_confusable
from edge.plates.grammar import PlateFormat
from edge.plates.recognisers import (
    CLP_SPEC,
    PPOCR_SPEC,
    LineSpec,
    clp_charset,
    frames_for,
    line_width,
    ppocr_charset,
    preprocess_lines,
)
from edge.plates.rectify import INNER, WIDE, Band, may_be_double_row, stitch_double_row, warp_band
from edge.plates.values import PlateRead
from edge.plates.variants import PIXEL_VARIANTS, combine, warm_up
from edge.types import Box, Detection
from edge.vision import Runner, as_bgr

log = logging.getLogger(__name__)

_NEW_ENERGY = (PlateFormat.NEW_ENERGY_SMALL, PlateFormat.NEW_ENERGY_LARGE)
_SEVEN = (PlateFormat.STANDARD, PlateFormat.SPECIAL, PlateFormat.EMBASSY)
_MIN_SIDE = 8  # below this a frame cannot hold a readable plate
_COLOUR_TRUST = 0.6  # hue support above which a colour estimate rules out a plate layout


@dataclass(frozen=True, slots=True)
class ReaderParams:
    """Tunables of the plate path; defaults are the measured ones (see bench/bench_plates.py)."""

    detector: det.DetectorParams = field(default_factory=det.DetectorParams)
    band: Band = INNER
    # PP-OCR input width for a single-row plate band (height 48). 160 keeps ~20 CTC frames for
    # 7-8 characters; wider inputs cost more and did not read better on CCPD.
    line_width: int = 160
    # Log-prior (nats) for plate forms that agree with the background colour: green plates are
    # new-energy (8 characters), blue/yellow/white/black plates have 7. Soft, so a colour error
    # cannot override a clear read.
    colour_prior: float = 2.0
    min_colour_support: float = 0.6
    # A read is valid (publishable) only when every character is at least this confident: about
    # 3x a uniform guess among the 31 provinces (0.03), so a guessed character is never published.
    min_char_confidence: float = 0.1
    # ... or, below that, at least `min_char_evidence` and this share among the characters its
    # grammar position allows (Decoded.char_shares; 0: off). PP-OCR is a general text model: on a
    # small plate it gives the province glyph a low peak (0.02-0.08) even when one province
    # clearly wins among the 31, while a guess among them has a share near 1/31.
    # Measured (bench/bench_gate_plates.py, with the clp_rec fusion below): share 0.5 read 2 more of
    # 36 at 720p and 2-4 more per degraded seed (26 on seed 15002 either way); 0.3 read one more
    # natively and on seed 15001 but published 1 more wrong read; 0.7 and 0.9 gained 1 at 720p only.
    min_char_share: float = 0.5
    min_char_evidence: float = 0.01
    # Re-detect each plate on a crop scaled so the plate is this wide, for corners that do not
    # depend on the frame's resolution (None: use the frame detection's corners).
    refine_width: int | None = 160
    # Context around the proposal's box for the re-detection, as fractions of its width and height.
    refine_margin: tuple[float, float] = (0.35, 0.8)
    # The long side a large frame is shrunk to for the proposals (None: `detector.long_side`).
    # The refinement gives the corners, so the proposals need only find the plate: at 384 the
    # whole-frame run costs 0.38x of the one at 640, and a frame where nothing is found looks
    # again at each of `fallback_long_sides`. Measured (bench/bench_gate_plates.py, six sets and
    # four held-out ones; docs/gate.md "Proposals at 384"): 309 exact reads of 360 against 306 at
    # 640, 11 wrong published against 12, but one fewer on held-out degraded seed 15003.
    proposal_long_side: int | None = 384
    # ... only on frames that this shrinks at least this many times. Smaller frames (every set
    # measured has frames of 1160 or 1280 px) keep the proposals at `detector.long_side`, where a
    # 640 px frame costs no more than at its native size: not measured at 384, so not changed.
    proposal_min_shrink: float = 2.0
    # Proposals from the downscaled frame that get refined (and so verified) at plate scale.
    proposal_threshold: float = 0.05
    max_proposals: int = 4
    # When the first proposals find nothing, look again at each of these (larger) long
    # sides in turn until something is found (empty: never). Costs more detector runs only on
    # frames where no plate was found.
    fallback_long_sides: tuple[int, ...] = (640, 1280)
    # Test-time variants of each plate line read in the same batch and combined per character
    # position (edge.plates.variants): "clahe", "gamma", "sharpen", "wide" (a wider band).
    # Measured (bench/bench_gate_plates.py): "clahe" read 1 more of 36 at 720p and natively, and
    # 0-1 more per degraded seed; "gamma", "sharpen" and "wide" gained nothing or lost.
    variants: tuple[str, ...] = ("clahe",)
    # ... read only for plates whose plain read's weakest character is below this (1.0: always):
    # always reading them cost 40 % more CPU per 1280x720 frame.
    variants_below: float = 0.6
    # Log-prior for the colour's forms when a read contradicts its trusted colour (a green plate
    # read with 7 characters): large enough to decide the length, and the re-read must still pass
    # the character-confidence floor to be published (0: never re-read; the read stays invalid).
    forced_colour_prior: float = 40.0
    # clp_v2_c_rec as a second opinion when PP-OCR's weakest character is below this (0: never),
    # combined per alphanumeric position on calibrated confidences (edge.plates.fusion). Measured:
    # 0.6 read 1 more of 36 on degraded seed 15000 and published 3 wrong reads instead of 6 over the
    # three seeds, at no loss on the native, 720p or crop sets; 0.9 also fixed a T read as 7 at 720p
    # but turned a native U read at 0.77 into 0 (the same raw confidence as that 7: native 34, not 35).
    second_opinion_below: float = 0.6
    # ... and for a read that is not weak but has a character of a confusable group (`confusable`)
    # below this (0: never): clp_rec may then replace only those characters, and only by a partner
    # of the same group (edge.plates.fusion.settle_confusable). Measured (bench/ab_gate_plates.py,
    # native, 720p, degraded seeds 15000-15004): T/7/1 below 0.9 read the 720p set's trailing T
    # (36/36, wrong 1 -> 0) and changed nothing else; all four groups of fusion.CONFUSABLE (below 0.9
    # or 0.8) turned a right read wrong natively and on seed 15003 (native 34, 1 wrong).
    confusable_below: float = 0.9
    confusable: tuple[str, ...] = ("T71",)
    # Run PP-OCR from its slimmed graph, derived by `edgegw models fetch` (edge.plates.slim: affine
    # blocks folded into the convolutions, hard-swish fused, the classifier cut to the plate
    # characters); the same function, 1.5x faster a call on this CPU. Off: the file as shipped (for
    # A/B measurements).
    slim_recogniser: bool = True


def _to_uint8(image: NDArray[Any]) -> NDArray[np.uint8]:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.clip(np.nan_to_num(image.astype(np.float32)), 0, 255).astype(np.uint8)


def normalise_frame(image: NDArray[Any] | None) -> NDArray[np.uint8] | None:
    """BGR uint8 HxWx3 for grey, BGR, BGRA and non-uint8 input; None when it cannot be an image."""
    if image is None or not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        return None
    try:
        return as_bgr(_to_uint8(image))
    except (ValueError, cv2.error):
        return None


def _single_row_colour(colour: ColourEstimate) -> bool:
    """Blue and green car plates are always single-row; double rows are yellow, white or black
    (trucks, buses, trailers, police and military). Light motorcycles' blue double-row plates are
    not gate-camera traffic."""
    return colour.colour in (PlateColour.BLUE, PlateColour.GREEN) and colour.support >= _COLOUR_TRUST


def _crop_corners(h: int, w: int) -> NDArray[np.float32]:
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)


def _line_width(line: NDArray[np.uint8], spec: LineSpec = PPOCR_SPEC) -> int:
    """Recogniser input width for a line image: aspect kept, clamped, rounded up to the stride."""
    return line_width(line.shape[0], line.shape[1], spec)


class _LineRecogniser:
    """A CTC line recogniser with its restricted vocabulary and grammar-constrained decoder."""

    def __init__(self, runner: Runner, charset: Sequence[str], spec: LineSpec) -> None:
        self.runner = runner
        self.spec = spec
        self.vocab = Vocabulary(charset)
        self.decoder = ConstrainedDecoder(self.vocab)
        if self.vocab.missing:
            log.warning("recogniser lacks %d plate characters", len(self.vocab.missing))

    def read(
        self, lines: Sequence[NDArray[np.uint8]], widths: Sequence[int], biases: Sequence[dict[PlateFormat, float]]
    ) -> list[Decoded | None]:
        """Decode lines recognised in one batch (all `widths` are real widths of the padded batch)."""
        if not lines:
            return []
        batch = preprocess_lines(lines, self.spec, widths)
        probs = np.asarray(self.runner.run(batch)[0], dtype=np.float32)
        out: list[Decoded | None] = []
        for i, n in enumerate(frames_for(widths, self.spec)):
            out.append(self.decoder.decode(self.vocab.restrict(probs[i, :n]), biases[i]))
        return out


def _load_clp(folder: Path, options: RuntimeOptions | None, manifest: Manifest | None) -> _LineRecogniser | None:
    """clp_v2_c_rec for the second opinion, or None (with a warning) when its files are missing."""
    rec, dictionary = model_path(folder, "clp_rec", manifest), model_path(folder, "clp_dict", manifest)
    if not (rec.is_file() and dictionary.is_file()):
        log.warning("plate second opinion off: %s or %s missing (edgegw models fetch)", rec.name, dictionary.name)
        return None
    runner = OrtRunner(rec, options)
    return _LineRecogniser(runner, clp_charset(dictionary.read_text(encoding="utf-8")), CLP_SPEC)


def _load_ppocr(folder: Path, options: RuntimeOptions | None, manifest: Manifest | None,
                charset: Sequence[str] | None, *, slim: bool) -> tuple[OrtRunner, list[str]]:
    """PP-OCRv4 rec's runner and its class list. With `slim`, the file `edgegw models fetch` derived
    (edge.plates.slimmed: only the blank and the plate characters kept, so the class list is the one
    its metadata records); without it, or when that file is missing or was made by another recipe,
    the file as shipped with its full class list (the decoder restricts it)."""
    spec = (manifest or load_manifest()).get("ppocr_rec")
    shipped = folder / spec.file
    derived = folder / spec.runtime_file if slimmed.FIX in spec.fixes else None
    if slim and derived is not None and derived.is_file():
        runner = OrtRunner(derived, options)
        meta = runner.metadata
        full = list(charset or ppocr_charset(meta))  # the derived file keeps 'character' as shipped
        want = [full[i] for i in Vocabulary(full).model_index]
        if slimmed.kept_classes(meta) == want:
            return runner, want
        log.warning("%s was made by another recipe or for another charset; running %s as shipped "
                    "(`edgegw models fetch` derives it again)", derived.name, shipped.name)
        del runner
    elif slim and shipped.is_file():
        log.warning("%s is missing; running %s as shipped (`edgegw models fetch` derives it)",
                    derived.name if derived is not None else "the slimmed PP-OCR", shipped.name)
    runner = OrtRunner(shipped, options)  # a missing file: OrtRunner says so
    return runner, list(charset or ppocr_charset(runner.metadata))


class PlateReader:
    """Reads Chinese licence plates in frames (`read`) or in tight plate crops (`read_crop`)."""

    def __init__(
        self,
        models_dir: Path | None = None,
        options: RuntimeOptions | None = None,
        *,
        params: ReaderParams | None = None,
        manifest: Manifest | None = None,
        detector: Runner | None = None,
        recogniser: Runner | None = None,
        recogniser_charset: Sequence[str] | None = None,
    ) -> None:
        """Build ORT runners for clp_det and PP-OCRv4 rec (and clp_rec if used) from `models_dir`."""
        folder = models_dir if models_dir is not None else default_models_dir()
        self.params = params or ReaderParams()
        self._detector: Runner = detector or OrtRunner(model_path(folder, "clp_det", manifest), options)
        own_recogniser = recogniser is None
        if recogniser is None:
            recogniser, charset = _load_ppocr(folder, options, manifest, recogniser_charset,
                                              slim=self.params.slim_recogniser)
        else:
            if recogniser_charset is None:
                raise ValueError("recogniser_charset is required with a custom recogniser")
            charset = list(recogniser_charset)
        self._ppocr = _LineRecogniser(recogniser, charset, PPOCR_SPEC)
        self._clp: _LineRecogniser | None = None
        # The fusion's calibration is PP-OCR's: a custom recogniser gets no second opinion.
        if self.params.second_opinion_below > 0 and own_recogniser:
            self._clp = _load_clp(folder, options, manifest)
        warm_up(self.params.variants)

    def detect(self, image: NDArray[Any]) -> list[Detection]:
        """Plate detections (corners TL, TR, BR, BL) in a frame, best first; [] for a bad frame."""
        bgr = normalise_frame(image)
        if bgr is None or min(bgr.shape[:2]) < _MIN_SIDE:
            return []
        tensor, meta = det.preprocess(bgr, self.params.detector)
        outputs = self._detector.run(tensor)
        return det.postprocess(outputs, meta, self.params.detector)

    def read(self, image_bgr: NDArray[Any]) -> list[PlateRead]:
        """Every plate found in a frame, read and validated; best detection first."""
        bgr = normalise_frame(image_bgr)
        if bgr is None or min(bgr.shape[:2]) < _MIN_SIDE:
            return []
        return self._read_quads(bgr, [(d.keypoints, d.box, d.score) for d in self.locate(bgr)])

    def locate(self, image: NDArray[Any]) -> list[Detection]:
        """Plates in a frame, best first: proposals on the downscaled frame, each verified and given
        precise corners by a second detection on a crop where the plate is `refine_width` wide."""
        bgr = normalise_frame(image)
        if bgr is None or min(bgr.shape[:2]) < _MIN_SIDE:
            return []
        p = self.params
        if p.refine_width is None:
            return self.detect(bgr)
        side = max(bgr.shape[:2])
        first = p.detector.long_side
        if p.proposal_long_side is not None and side >= p.proposal_min_shrink * p.proposal_long_side:
            first = p.proposal_long_side
        found = self._locate_at(bgr, first)
        looked = first or side
        for fallback in p.fallback_long_sides:
            if found or side <= looked or fallback <= looked:
                break
            # Nothing at the proposal scale: a small plate (60-100 px in 1280x720) may be below
            # the detector's smallest anchors once the frame is shrunk; look again, larger.
            found = self._locate_at(bgr, fallback)
            looked = fallback
        return found

    def _locate_at(self, bgr: NDArray[np.uint8], long_side: int | None) -> list[Detection]:
        p = self.params
        assert p.refine_width is not None  # locate() took the plain detect() path otherwise
        proposal = replace(p.detector, score_threshold=p.proposal_threshold, max_plates=p.max_proposals,
                           long_side=long_side)
        tensor, meta = det.preprocess(bgr, proposal)
        proposals = det.postprocess(self._detector.run(tensor), meta, proposal)
        found: list[Detection] = []
        for d in proposals:
            refined = self._refine(bgr, d, p.refine_width)
            if refined is not None and refined.score >= p.detector.score_threshold:
                found.append(refined)
            elif d.score >= p.detector.score_threshold:
                found.append(d)
        return det.suppress(found, p.detector.nms_iou)

    def _refine(self, image: NDArray[np.uint8], d: Detection, target: int) -> Detection | None:
        """The plate re-detected on a crop around `d`, scaled so the plate is `target` px wide."""
        h, w = image.shape[:2]
        cx, cy = d.box.centre
        bw, bh = max(d.box.width, 2.0), max(d.box.height, 2.0)
        mx, my = self.params.refine_margin
        x1, x2 = int(max(0, cx - bw * (0.5 + mx))), int(min(w, cx + bw * (0.5 + mx)))
        y1, y2 = int(max(0, cy - bh * (0.5 + my))), int(min(h, cy + bh * (0.5 + my)))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        scale = target / bw
        interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
        crop = np.asarray(
            cv2.resize(image[y1:y2, x1:x2], None, fx=scale, fy=scale, interpolation=interpolation), np.uint8
        )
        params = det.DetectorParams(score_threshold=0.05, long_side=None, max_plates=1)
        tensor, meta = det.preprocess(crop, params)
        hits = det.postprocess(self._detector.run(tensor), meta, params)
        if not hits:
            return None
        hit = hits[0]
        corners = (hit.keypoints / scale + np.array([x1, y1], np.float32)).astype(np.float32)
        b = hit.box
        box = Box(
            min(float(w), b.x1 / scale + x1),
            min(float(h), b.y1 / scale + y1),
            min(float(w), b.x2 / scale + x1),
            min(float(h), b.y2 / scale + y1),
        )
        return Detection(box=box, score=hit.score, keypoints=corners)

    def read_near(self, image: NDArray[Any], box: Box, *, context: float = 2.0,
                  min_score: float | None = None) -> list[PlateRead]:
        """The plate re-detected around `box` (where a track predicts its plate) on a crop scaled so
        the plate is `refine_width` wide, read like a frame's plate; [] when no plate is there.

        `context` widens the searched region around `box` (the plate may have moved); `min_score`
        is the detector score a hit needs (the detector's threshold by default)."""
        bgr = normalise_frame(image)
        p = self.params
        if bgr is None or min(bgr.shape[:2]) < _MIN_SIDE or box.width < 2 or box.height < 2:
            return []
        target = p.refine_width or 160
        cx, cy = box.centre
        half_w, half_h = box.width * context / 2, box.height * context / 2
        wide = Box(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        # _refine scales its crop by `target / box width`: asking for `target * context` on the
        # widened box keeps the plate itself `target` px wide.
        hit = self._refine(bgr, Detection(box=wide, score=0.0, keypoints=_crop_corners(1, 1)), int(target * context))
        threshold = p.detector.score_threshold if min_score is None else min_score
        if hit is None or hit.score < threshold:
            return []
        return self._read_quads(bgr, [(hit.keypoints, hit.box, hit.score)])

    def read_crop(self, crop_bgr: NDArray[Any]) -> PlateRead | None:
        """Read an image that is already a tight plate crop (no detection); None for a bad crop."""
        bgr = normalise_frame(crop_bgr)
        if bgr is None or min(bgr.shape[:2]) < 4:
            return None
        h, w = bgr.shape[:2]
        reads = self._read_quads(bgr, [(_crop_corners(h, w), Box(0.0, 0.0, float(w), float(h)), 1.0)], crop=True)
        return reads[0] if reads else None

    def recognise_crop(self, crop_bgr: NDArray[Any], *, second: bool = False) -> Decoded | None:
        """One recogniser's raw constrained decode of a tight crop (PP-OCR, or clp_rec with `second`):
        no variants, no fusion, no validation. For calibrating confidences (bench_gate_plates)."""
        bgr = normalise_frame(crop_bgr)
        rec = self._clp if second else self._ppocr
        if bgr is None or min(bgr.shape[:2]) < 4 or rec is None:
            return None
        h, w = bgr.shape[:2]
        line = warp_band(bgr, _crop_corners(h, w), self.params.line_width, PPOCR_SPEC.height, Band())
        return rec.read([line], [_line_width(line, rec.spec)], [self._bias(classify_colour(line))])[0]

    def _read_quads(
        self,
        image: NDArray[np.uint8],
        quads: Sequence[tuple[NDArray[np.float32], Box, float]],
        crop: bool = False,
    ) -> list[PlateRead]:
        """Rectify, recognise and validate the plates with these corners (one PP-OCR batch per width)."""
        p = self.params
        lines: list[NDArray[np.uint8]] = []
        widths: list[int] = []
        biases: list[dict[PlateFormat, float]] = []
        meta: list[tuple[NDArray[np.float32], Box, float, ColourEstimate]] = []
        height = PPOCR_SPEC.height
        owner: list[int] = []  # which quad each line belongs to (ambiguous quads get two lines)
        layout_of: list[PlateLayout] = []  # the reading each line stands for
        for q, (corners, box, score) in enumerate(quads):
            # Tight crops already are the plate: keep their full height (the band trim is for
            # detector corners, which include the plate frame).
            band = Band() if crop else p.band
            single = warp_band(image, corners, p.line_width, height, band)
            colour = classify_colour(single)
            candidates = [(single, PlateLayout.SINGLE)]
            if may_be_double_row(corners) and not _single_row_colour(colour):
                # Yaw and pitch squeeze single-row plates to double-row aspect ratios (CCPD has
                # single-row plates at 1.9), so an ambiguous plate is read both ways.
                plate = warp_band(image, corners, 220, 110)
                candidates.append((stitch_double_row(plate), PlateLayout.DOUBLE))
            for line, layout in candidates:
                lines.append(line)
                widths.append(_line_width(line))
                biases.append(self._bias(colour))
                owner.append(q)
                layout_of.append(layout)
            meta.append((corners, box, score, colour))
        decoded_lines = self._read_lines(lines, widths, biases)
        # Test-time variants only for plates whose plain read is weak: a clear read costs nothing more.
        weak = [q for q in range(len(quads)) if p.variants and self._weak(decoded_lines[owner.index(q)])]
        extra: list[NDArray[np.uint8]] = []
        extra_owner: list[int] = []
        for q in weak:
            for v in self._variants(image, meta[q][0], lines[owner.index(q)], crop):
                extra.append(v)
                extra_owner.append(q)
        if extra:
            extra_widths = [_line_width(v) for v in extra]
            extra_biases = [biases[owner.index(q)] for q in extra_owner]
            decoded_lines = [*decoded_lines, *self._read_lines(extra, extra_widths, extra_biases)]
            owner = [*owner, *extra_owner]
            layout_of = [*layout_of, *([PlateLayout.SINGLE] * len(extra))]
        # Per quad and reading, the variants' reads combined per position; then the better reading.
        groups: dict[tuple[int, PlateLayout], list[Decoded | None]] = {}
        for q, layout, d in zip(owner, layout_of, decoded_lines, strict=True):
            groups.setdefault((q, layout), []).append(d)
        decoded: list[Decoded | None] = [None] * len(quads)
        rows: list[PlateLayout] = [PlateLayout.SINGLE] * len(quads)
        for (q, layout), reads_of in groups.items():
            d = combine(reads_of)
            cur = decoded[q]
            if d is not None and (cur is None or d.confidence > cur.confidence):
                decoded[q] = d
                rows[q] = layout
        first_line = {q: owner.index(q) for q in set(owner)}
        if self._clp is not None:
            decoded = self._second_opinion(self._clp, lines=lines, biases=biases, decoded=decoded, rows=rows,
                                          first_line=first_line)
        decoded = self._agree_with_colour(lines=lines, widths=widths, first_line=first_line, decoded=decoded,
                                          meta=meta)
        reads: list[PlateRead] = []
        for d, layout, (corners, box, score, colour) in zip(decoded, rows, meta, strict=True):
            if d is None:
                continue
            form = self._ppocr.decoder.form_of(d.text)
            valid = form is not None and self._confident(d) and self._agrees(d.text, colour)
            pts = np.array(corners, dtype=np.float32).reshape(4, 2)
            pts.setflags(write=False)
            reads.append(
                PlateRead(
                    text=d.text,
                    confidence=d.confidence,
                    char_confidences=d.char_confidences,
                    corners=pts,
                    box=box,
                    colour=colour.colour,
                    plate_type=layout,
                    valid=valid,
                    form=form,
                    detector_score=score,
                    colour_trusted=self._trusted(colour),
                    char_shares=d.char_shares,
                )
            )
        return reads

    def _read_lines(
        self,
        lines: Sequence[NDArray[np.uint8]],
        widths: Sequence[int],
        biases: Sequence[dict[PlateFormat, float]],
    ) -> list[Decoded | None]:
        """Recognise lines in batches of equal width (padding a narrow line changes its read)."""
        out: list[Decoded | None] = [None] * len(lines)
        for width in sorted(set(widths)):
            idx = [i for i, w in enumerate(widths) if w == width]
            got = self._ppocr.read([lines[i] for i in idx], [width] * len(idx), [biases[i] for i in idx])
            for i, d in zip(idx, got, strict=True):
                out[i] = d
        return out

    def _variants(
        self, image: NDArray[np.uint8], corners: NDArray[np.float32], single: NDArray[np.uint8], crop: bool
    ) -> list[NDArray[np.uint8]]:
        """The configured test-time variants of a plate's single-row line (edge.plates.variants)."""
        out: list[NDArray[np.uint8]] = []
        for name in self.params.variants:
            if name in PIXEL_VARIANTS:
                out.append(PIXEL_VARIANTS[name](single))
            elif name == "wide" and not crop:
                # Less of the band trimmed: corners a few pixels off on a small plate cut characters.
                out.append(warp_band(image, corners, self.params.line_width, PPOCR_SPEC.height, WIDE))
            elif name not in ("wide",):
                raise ValueError(f"unknown plate variant {name!r}")
        return out

    def _confident(self, d: Decoded) -> bool:
        """Every character clears the floor: its confidence, or its share under the grammar."""
        p = self.params
        if d.min_confidence >= p.min_char_confidence:
            return True
        if p.min_char_share <= 0 or len(d.char_shares) != len(d.char_confidences):
            return False
        return all(c >= p.min_char_confidence or (s >= p.min_char_share and c >= p.min_char_evidence)
                   for c, s in zip(d.char_confidences, d.char_shares, strict=True))

    def _weak(self, d: Decoded | None) -> bool:
        return d is None or d.min_confidence < self.params.variants_below

    def _trusted(self, colour: ColourEstimate) -> bool:
        """A colour estimate sure enough to decide the plate's length: green needs its gradient too,
        because blue plates that photograph teal read as green by hue."""
        if colour.support < self.params.min_colour_support or expected_length(colour.colour) is None:
            return False
        return colour.colour is not PlateColour.GREEN or colour.gradient

    def _agrees(self, text: str, colour: ColourEstimate) -> bool:
        """Length and a trusted colour agree (green: 8 characters, blue: 7); see edge.plates.agreement."""
        return not self._trusted(colour) or agrees(text, colour.colour)

    def _agree_with_colour(
        self,
        *,
        lines: Sequence[NDArray[np.uint8]],
        widths: Sequence[int],
        first_line: dict[int, int],
        decoded: list[Decoded | None],
        meta: Sequence[tuple[NDArray[np.float32], Box, float, ColourEstimate]],
    ) -> list[Decoded | None]:
        """Re-decode the single-row line of each plate whose read contradicts its trusted colour,
        constrained to the colour's forms (one extra recogniser call, only for such plates)."""
        p = self.params
        todo = [q for q, d in enumerate(decoded)
                if d is not None and not self._agrees(d.text, meta[q][3]) and q in first_line]
        if not todo or p.forced_colour_prior <= 0:
            return decoded
        out = list(decoded)
        for q in todo:
            i = first_line[q]
            bias = {f: p.forced_colour_prior for f in forms_for(meta[q][3].colour)}
            got = self._ppocr.read([lines[i]], [widths[i]], [bias])[0]
            if got is not None and agrees(got.text, meta[q][3].colour):
                out[q] = got
        return out

    def _bias(self, colour: ColourEstimate) -> dict[PlateFormat, float]:
        """Log-priors of the plate forms the colour speaks for."""
        p = self.params
        if p.colour_prior <= 0 or colour.support < p.min_colour_support or colour.colour is PlateColour.UNKNOWN:
            return {}
        favoured = _NEW_ENERGY if colour.colour is PlateColour.GREEN else _SEVEN
        return {f: p.colour_prior for f in favoured}

    def _second_opinion(
        self,
        clp: _LineRecogniser,
        *,
        lines: Sequence[NDArray[np.uint8]],
        biases: Sequence[dict[PlateFormat, float]],
        decoded: Sequence[Decoded | None],
        rows: Sequence[PlateLayout],
        first_line: dict[int, int],
    ) -> list[Decoded | None]:
        """Ask clp_v2_c_rec about single-row plates whose read is weak and combine the two reads
        per position on calibrated confidences (edge.plates.fusion); one batch for all of them."""
        p = self.params
        todo: list[int] = []
        settle: dict[int, list[int]] = {}  # not weak, but a confusable character: those positions only
        for q, d in enumerate(decoded):
            if d is None or rows[q] is not PlateLayout.SINGLE or q not in first_line:
                continue
            if d.min_confidence < p.second_opinion_below:
                todo.append(q)
            elif p.confusable_below > 0 and (at := confusable_positions(d, p.confusable_below, p.confusable)):
                todo.append(q)
                settle[q] = at
        out = list(decoded)
        if not todo:
            return out
        sub = [lines[first_line[q]] for q in todo]
        widths = [_line_width(s, clp.spec) for s in sub]
        alt = clp.read(sub, widths, [biases[first_line[q]] for q in todo])
        for q, a in zip(todo, alt, strict=True):
            cur = out[q]
            if cur is not None:
                out[q] = settle_confusable(cur, a, settle[q], groups=p.confusable) if q in settle else fuse(cur, a)
        return out

"""int8 quantisation of the SFace embedder (opt-in, `models.sface_int8`) and, for measurement, the detectors.

SFace: static, per-channel (weights int8, activations uint8, QOperator format), every op of the
float graph's chain quantised: the convolutions, the two 1x1 depthwise convolutions each PRelu
became (`prelu-as-dwconv`), their Relu and Add, and the final Gemm, so the whole network runs in
int8 (about 1.6x faster per face than the float graph). Activation ranges come from percentile
calibration (99.999 % of each tensor's absolute values, ONNX Runtime's histogram calibrator): the
min/max ranges of recipe 2 were stretched by a few outliers per tensor and cost the int8 copy 3 points
of TAR on dark and 5 on blurred 30 px faces; clipped at the percentile its TAR at FAR <= 0.1 % matches
or beats the float model on every face set of bench/bench_gate_faces.py over seeds 15-18
(docs/gate.md, "The race, fourth round"). It stays opt-in: at the shipped match threshold, chosen on
the float model, it accepts more impostors on clean and 40 px faces (ModelsConfig.sface_int8).
The histogram is built one crop at a time (`CalibStridedMinMax` 1), which bounds
the calibration's memory to one crop's activations (394 MB peak against 6.9 GB for all 60 at
once). Calibrated on aligned faces from photos that are not in any accuracy set (by default the
first 60 sample photos of the face-model carrier wheel).

The result, `models/sface.int8.onnx`, is derived from the verified `sface.edge.onnx` after
`edgegw models fetch` (or by `edgegw models quantize`); it is never fetched. Its metadata records
the recipe and the float graph it came from, and `fetch` derives a stale copy again (`is_current`).
`make bench` (bench/bench_int8.py) measures it beside the float model in every run, and the int8
YuNet and clp_det too (convolutions only, min/max): those were slower (YuNet) or lost plates
(clp_det), so they are not used."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError
from edge.models.manifest import Manifest, model_path
from edge.models.variants import int8_path as _int8_path

log = logging.getLogger(__name__)

# The final fully connected layer is quantised too: its 128 x 50176 float weights (25 MB, read on
# every call) were about a tenth of the int8 model's time once the convolutions were int8.
SFACE_INT8_OPS: tuple[str, ...] = ("Conv", "Gemm", "Relu", "Add")

# Written into the int8 file's metadata, so `edgegw models fetch` re-derives a copy made otherwise.
RECIPE_KEY = "edgegw.int8_recipe"
FROM_KEY = "edgegw.int8_from_sha256"
SFACE_INT8_RECIPE = ("3: QOperator per-channel, percentile 99.999 calibration one crop at a time; "
                     "Conv, Gemm, Relu, Add; prelu-as-dwconv graph")

# How activation ranges are calibrated. "minmax" (the detectors' measurement copies) takes each
# tensor's extremes; "percentile" (SFace) clips at SFACE_PERCENTILE of its absolute values.
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile")
# Measured on seeds 15-18 of bench_gate_faces (docs/gate.md): 99.99 and 99.9999 each lost pairs on
# 30 px or dark faces where 99.999 (also ONNX Runtime's default) lost none.
SFACE_PERCENTILE = 99.999

# Per-channel scales need DequantizeLinear's `axis`, which exists from opset 13 on.
_MIN_OPSET = 13


def int8_path(models_dir: Path, name: str = "sface") -> Path:
    """Where the quantised copy of model `name` lives."""
    return _int8_path(models_dir, name)


class _Crops:
    """onnxruntime's CalibrationDataReader protocol over preprocessed aligned crops."""

    def __init__(self, input_name: str, batches: Sequence[NDArray[np.float32]]) -> None:
        self._input = input_name
        self._it: Iterator[NDArray[np.float32]] = iter(batches)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        batch = next(self._it, None)
        return None if batch is None else {self._input: batch}

    def rewind(self) -> None:  # pragma: no cover - called only by some calibrators
        raise ModelError("calibration data can be read once")


class _StridedCrops(_Crops):
    """The crops, read in the slices ONNX Runtime's strided calibration asks for (`set_range`).

    With `CalibStridedMinMax` quantize_static collects each slice's activations, folds them into the
    running ranges (or histograms) and drops them before the next slice, so memory holds one slice.
    """

    def __init__(self, input_name: str, batches: Sequence[NDArray[np.float32]]) -> None:
        super().__init__(input_name, [])
        self._batches = list(batches)
        self._next, self._end = 0, len(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read batches [start_index, end_index) next."""
        self._next, self._end = start_index, min(end_index, len(self._batches))

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {self._input: self._batches[self._next - 1]}


_CALIBRATION_SIDE = 640


def calibration_crops(models_dir: Path, images: Sequence[NDArray[np.uint8]],
                      manifest: Manifest | None = None) -> list[NDArray[np.uint8]]:
    """The largest face of each image, aligned to 112x112 (images without a face are skipped).

    Each photo is first bounded to a 640 px long side and detected at that size: calibrated on the
    crops of the full-size photos instead (detection at 1280), the int8 SFace lost 1-14 points of
    TAR on 20 px, dark and blurred faces against these crops (docs/gate.md), so min/max ranges are
    that sensitive to the calibration crops.
    """
    import cv2

    from edge.models.config import RuntimeOptions
    from edge.vision.faces import FaceAnalyzer

    # The float embedder: only detection and alignment make the crops, and the int8 copy may be the
    # stale file being replaced (or missing, which would log a warning for nothing).
    analyzer = FaceAnalyzer(models_dir, RuntimeOptions(int8_models=()), manifest=manifest, max_side=None)
    crops = []
    for full in images:
        h, w = full.shape[:2]
        s = _CALIBRATION_SIDE / max(h, w)
        image = full if s >= 1.0 else np.asarray(
            cv2.resize(full, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), np.uint8)
        sample = analyzer.largest_face_embedding(image)
        if sample is not None:
            crops.append(sample.aligned)
    return crops


def quantize_sface(models_dir: Path, crops: Sequence[NDArray[np.uint8]], out: Path | None = None,
                   manifest: Manifest | None = None) -> Path:
    """Write the int8 SFace calibrated on `crops` (aligned BGR 112x112); return its path."""
    if len(crops) < 8:
        raise ModelError(f"need at least 8 aligned faces to calibrate, got {len(crops)}")
    from edge.vision.sface import preprocess

    src = model_path(models_dir, "sface", manifest)
    if not src.is_file():
        raise ModelError(f"{src} is missing; run `edgegw models fetch`")
    dest = out or int8_path(models_dir)
    quantize_static_conv(src, dest, [preprocess(c[None]) for c in crops], SFACE_INT8_OPS, calibration="percentile")
    _stamp_recipe(dest, src)
    log.info("wrote %s (calibrated on %d faces)", dest.name, len(crops))
    return dest


def _stamp_recipe(path: Path, src: Path) -> None:
    """Record in the int8 file which recipe and which float graph it was made with (`is_current`)."""
    import onnx

    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update({RECIPE_KEY: SFACE_INT8_RECIPE, FROM_KEY: _graph_id(src)})
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def _graph_id(src: Path) -> str:
    import hashlib

    return hashlib.sha256(src.read_bytes()).hexdigest()


def is_current(models_dir: Path, manifest: Manifest | None = None) -> bool:
    """Whether `sface.int8.onnx` exists and was made by this recipe from the float graph now installed.

    An older copy (convolutions only, from the `prelu-as-relu` graph) is re-derived by `edgegw models
    fetch`: it is slower and, above all, its embeddings are not the ones enrolment now makes.
    """
    import onnx

    path = int8_path(models_dir)
    src = model_path(models_dir, "sface", manifest)
    if not path.is_file() or not src.is_file():
        return False
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # a truncated or foreign file: derive it again
        return False
    return meta.get(RECIPE_KEY) == SFACE_INT8_RECIPE and meta.get(FROM_KEY) == _graph_id(src)


def quantize_static_conv(src: Path, dest: Path, batches: Sequence[NDArray[np.float32]],
                         op_types: Sequence[str] = ("Conv",), calibration: str = "minmax") -> Path:
    """Write an int8 copy of the ONNX model `src` to `dest`: static, per-channel, `op_types` only.

    `batches` are preprocessed input tensors to calibrate the activation ranges on, one batch at a
    time; `calibration` is one of CALIBRATION_METHODS ("percentile" clips at SFACE_PERCENTILE).
    Used for SFace (`SFACE_INT8_OPS`) and, measured in bench/bench_int8.py, for the detectors
    (YuNet, clp_det: convolutions only).
    """
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ModelError(f"quantisation needs onnx and onnxruntime: {exc}") from exc
    if not batches:
        raise ModelError(f"no calibration inputs for {src.name}")
    if calibration not in CALIBRATION_METHODS:
        raise ModelError(f"unknown calibration {calibration!r}; expected one of {CALIBRATION_METHODS}")
    with tempfile.TemporaryDirectory(prefix="edgegw-quant-") as tmp:
        upgraded, prepared, staged = Path(tmp) / "opset.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            model = onnx.load(str(src))
            if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < _MIN_OPSET:
                model = version_converter.convert_version(model, _MIN_OPSET)
            onnx.save(model, str(upgraded))
            quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
            input_name = model.graph.input[0].name
            reader: _Crops = _Crops(input_name, batches)
            method, extra = CalibrationMethod.MinMax, {}
            if calibration == "percentile":
                # One batch per pass: the histogram calibrator would otherwise hold every batch's
                # activations at once (6.9 GB for 60 SFace crops; 394 MB this way).
                reader = _StridedCrops(input_name, batches)
                method = CalibrationMethod.Percentile
                extra = {"CalibPercentile": SFACE_PERCENTILE, "CalibStridedMinMax": 1}
            quantize_static(str(prepared), str(staged), reader,
                            quant_format=QuantFormat.QOperator, per_channel=True, op_types_to_quantize=list(op_types),
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, extra_options=extra)
        except ModelError:
            raise
        except Exception as exc:  # onnx/ORT tooling raises untyped exceptions
            raise ModelError(f"cannot quantise {src.name}: {exc}") from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(dest)
    return dest


def load_int8_runner(models_dir: Path, options: Any = None) -> Any:
    """An OrtRunner on the int8 SFace, or None when it has not been written."""
    from edge.models.runner import OrtRunner

    path = int8_path(models_dir)
    return OrtRunner(path, options) if path.is_file() else None


def calibration_images(folder: Path, limit: int) -> list[NDArray[np.uint8]]:
    """Up to `limit` readable photos of `folder`, in name order (unreadable ones are skipped)."""
    from edge.vision.faces import ImageError, read_image

    out: list[NDArray[np.uint8]] = []
    for p in sorted(folder.iterdir()):
        if len(out) >= limit:
            break
        if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"}:
            try:
                out.append(read_image(p))
            except ImageError as exc:
                log.warning("skipping %s", exc)
    return out

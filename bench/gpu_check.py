"""GPU check: the face and plate paths on CUDA (or TensorRT) against CPU, per-model latency and agreement.

    make gpu-check                      # installs onnxruntime-gpu into bench/.venv-gpu, then runs this
    bench/.venv-gpu/bin/python bench/gpu_check.py --provider tensorrt   # TensorRT EP (FP16) instead

Every model runs in two sessions, one on CPU and one on the device provider. The face path
(YuNet → align → SFace) and the plate path (clp_det → rectify → PP-OCRv4 rec) run on the same real
1280x720 frames on both; each model's inputs from the CPU run are replayed on the device session, so
agreement is measured per model (largest output difference, embedding cosine) as well as end to end
(same faces, same plate texts). Latency is per model call, p50/p90, warm (the first calls, which
build CUDA kernels or TensorRT engines, are left out and reported as start-up).

Exit 0: the device ran every model and agreed with CPU; 1: it ran but disagreed; 2: no usable
device (onnxruntime without the provider, no GPU, or sessions that fell back to CPU) — said plainly.
`--provider cpu` compares two CPU sessions: a self-test of this script on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MODELS_DIR, SHARED_DATA, SkipSection, csv_rows, face_frames, letterbox, percentiles
from edge.models.config import RuntimeOptions
from edge.models.manifest import model_path
from edge.models.runner import OrtRunner

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}
WARM_CALLS = 3  # first calls per model: kernel selection, engine builds; reported apart
# What "agrees" means. FP32 on CUDA differs from CPU only by summation order; TensorRT in FP16
# moves embeddings visibly but must not change who matches whom (SFace's threshold is 0.363).
MIN_COSINE = {"CUDAExecutionProvider": 0.999, "TensorrtExecutionProvider": 0.99, "CPUExecutionProvider": 0.99999}


class Recorder:
    """A runner that times each call and keeps the inputs, to replay them on another session."""

    def __init__(self, inner: OrtRunner, keep: int) -> None:
        self.inner = inner
        self.seconds: list[float] = []
        self.inputs: list[dict[str, NDArray[Any]]] = []
        self._keep = keep

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.inner.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.inner.output_names

    def run(self, inputs: Mapping[str, NDArray[Any]] | NDArray[Any]) -> list[NDArray[Any]]:
        feed = {self.inner.input_names[0]: inputs} if isinstance(inputs, np.ndarray) else dict(inputs)
        t0 = time.perf_counter()
        out = self.inner.run(feed)
        self.seconds.append(time.perf_counter() - t0)
        if len(self.inputs) < self._keep:
            self.inputs.append({k: np.array(v, copy=True) for k, v in feed.items()})
        return out


def fail(code: int, message: str) -> None:
    print(f"gpu-check: {message}", file=sys.stderr)
    raise SystemExit(code)


def device_runners(provider: str, models_dir: Path, keep: int) -> dict[str, tuple[Recorder, Recorder]]:
    """(CPU, device) recording runners for each model of both paths; exits 2 without a device."""
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and provider != "CPUExecutionProvider":
        try:  # onnxruntime-gpu >= 1.21 finds the CUDA/cuDNN libraries of the nvidia-* wheels this way
            ort.preload_dlls()
        except Exception as exc:
            print(f"gpu-check: preload_dlls: {exc}", file=sys.stderr)
    available = ort.get_available_providers()
    if provider not in available:
        fail(2, f"{provider} is not in this onnxruntime build ({ort.__version__}: {', '.join(available)}). "
                "Run `make gpu-check`, which installs onnxruntime-gpu into bench/.venv-gpu; on a Jetson, "
                "NVIDIA's onnxruntime-gpu wheel for JetPack (docs/platforms.md).")
    name = next(k for k, v in PROVIDERS.items() if v == provider)
    cpu = RuntimeOptions(providers=("cpu",), intra_op_threads=1)
    dev = RuntimeOptions(providers=(name, "cpu"), intra_op_threads=1,
                         trt_cache_dir=Path(__file__).resolve().parent / ".trt-cache")
    out: dict[str, tuple[Recorder, Recorder]] = {}
    for model in ("yunet", "sface", "clp_det", "ppocr_rec"):
        path = model_path(models_dir, model)
        on_device = OrtRunner(path, dev)
        if on_device.provider != provider:
            fail(2, f"{path.name}: onnxruntime fell back to {on_device.provider} (no usable GPU? driver, CUDA "
                    f"or cuDNN libraries missing); providers asked: {provider}")
        out[model] = (Recorder(OrtRunner(path, cpu), keep), Recorder(on_device, 0))
    return out


def plate_frames(limit: int) -> list[tuple[str, NDArray[np.uint8]]]:
    labels = SHARED_DATA / "plates" / "labels.csv"
    if not labels.is_file():
        raise SkipSection(f"plate data not found at {labels}")
    frames = []
    for row in csv_rows(labels):
        if row["kind"] != "full_scene":
            continue
        image = cv2.imread(str(SHARED_DATA / row["path"]), cv2.IMREAD_COLOR)
        if image is not None:
            frames.append((row["path"], letterbox(np.asarray(image, np.uint8))))
        if len(frames) >= limit:
            break
    return frames


def compare_outputs(cpu: Recorder, dev: Recorder) -> dict[str, float]:
    """Replay the CPU session's recorded inputs on the device session: worst differences."""
    worst_abs, worst_rel = 0.0, 0.0
    for feed in cpu.inputs:
        for a, b in zip(cpu.inner.run(feed), dev.inner.run(feed), strict=True):
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if a64.size == 0:
                continue
            diff = float(np.max(np.abs(a64 - b64)))
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / max(1e-6, float(np.max(np.abs(a64)))))
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "replayed": len(cpu.inputs)}


def latency(rec: Recorder) -> dict[str, Any]:
    warm = rec.seconds[WARM_CALLS:] if len(rec.seconds) > WARM_CALLS else rec.seconds[1:] or rec.seconds
    return {**percentiles(warm), "first_call_ms": round(rec.seconds[0] * 1000, 1) if rec.seconds else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--faces", type=int, default=24, help="face frames (real photos, letterboxed to 1280x720)")
    parser.add_argument("--plates", type=int, default=24, help="plate scenes")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the frames (latency samples)")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "gpu_results.json")
    args = parser.parse_args(argv)
    provider = PROVIDERS[args.provider]
    runners = device_runners(provider, args.models_dir, keep=8)

    from edge.plates.reader import PlateReader
    from edge.vision.faces import FaceAnalyzer

    def face_analyzer(side: int) -> FaceAnalyzer:
        return FaceAnalyzer(args.models_dir, detector=runners["yunet"][side], embedder=runners["sface"][side])

    def plate_reader(side: int) -> PlateReader:
        meta = runners["ppocr_rec"][0].inner.metadata
        from edge.plates.recognisers import ppocr_charset
        from edge.plates.slimmed import kept_classes

        # The derived (slimmed) file scores only the classes its metadata lists.
        return PlateReader(args.models_dir, detector=runners["clp_det"][side], recogniser=runners["ppocr_rec"][side],
                           recogniser_charset=kept_classes(meta) or ppocr_charset(meta))

    faces = [f.image for f in face_frames(labelled=args.faces, multi=0, ctu=0)][: args.faces]
    scenes = plate_frames(args.plates)
    report: dict[str, Any] = {"provider": provider, "faces": len(faces), "plate_scenes": len(scenes), "models": {}}
    face_cos: list[float] = []
    face_count_mismatch = 0
    plate_mismatch: list[str] = []
    fa_cpu, fa_dev = face_analyzer(0), face_analyzer(1)
    pr_cpu, pr_dev = plate_reader(0), plate_reader(1)
    for _ in range(max(1, args.repeat)):
        for image in faces:
            a, b = fa_cpu.analyze(image), fa_dev.analyze(image)
            if len(a) != len(b):
                face_count_mismatch += 1
            for x, y in zip(a, b, strict=False):
                face_cos.append(float(np.dot(x.embedding, y.embedding)))
        for name, image in scenes:
            ta = [r.text for r in pr_cpu.read(image)]
            tb = [r.text for r in pr_dev.read(image)]
            if ta != tb:
                plate_mismatch.append(name)
    for model, (cpu, dev) in runners.items():
        report["models"][model] = {"cpu": latency(cpu), "device": latency(dev), **compare_outputs(cpu, dev)}
    report["face_embedding_cosine_min"] = round(min(face_cos), 6) if face_cos else None
    report["face_count_mismatches"] = face_count_mismatch
    report["plate_text_mismatches"] = sorted(set(plate_mismatch))
    ok = (bool(face_cos) and min(face_cos) >= MIN_COSINE[provider] and face_count_mismatch == 0
          and not plate_mismatch)
    report["verdict"] = "agree" if ok else "disagree"
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    print(f"{'model':10s} {'cpu p50':>9s} {'dev p50':>9s} {'dev p90':>9s} {'dev 1st':>9s} {'max|Δ|':>10s} {'rel':>8s}")
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for model, r in report["models"].items():
        print(f"{model:10s} {ms(r['cpu']['p50_ms']):>9s} {ms(r['device']['p50_ms']):>9s} "
              f"{ms(r['device']['p90_ms']):>9s} {ms(r['device']['first_call_ms']):>9s} "
              f"{r['max_abs_diff']:10.2e} {r['max_rel_diff']:8.1e}")
    print(f"faces: {len(faces)} frames, embedding cosine CPU vs {provider} min {report['face_embedding_cosine_min']}"
          f" (need >= {MIN_COSINE[provider]}), face-count mismatches {face_count_mismatch}")
    print(f"plates: {len(scenes)} scenes, text mismatches {len(report['plate_text_mismatches'])}")
    print(f"gpu-check: {provider}: {report['verdict']} (written to {args.json})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Config of the model runtime: where the verified models are and how ONNX Runtime runs them.

No ONNX Runtime here: `RuntimeOptions` is plain data that edge.models.runner turns into sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from edge.configbase import StrictModel


class ModelsConfig(StrictModel):
    """Where the verified models are, and how ONNX Runtime runs them."""

    dir: Path = Path("models")
    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = Field(default=1, ge=1, le=16)
    sface_int8: bool = False
    """Embed faces with the int8 SFace (`models/sface.int8.onnx`, written after `edgegw models fetch`
    or by `edgegw models quantize`) on CPU. Measured beside the float model (bench/bench_int8.py,
    docs/gate.md "The race, third round"): the whole network in int8, 1.76x faster per face than the
    float graph (the face race 22.5x face_recognition against 14-16x), TAR at FAR <= 0.1 % equal at
    clean/40/30 px and better at 20 px over four seeds, but 3 points lower on dark and 5 on blurred
    30 px faces (and one pair of the race's clean pairs lost), so it is off by default. Falls back
    to the float model (with a warning) when the file is missing; GPU providers always use the float
    model. Residents enrolled with one are matched with the same one: set it before enrolling (and
    re-enrol after `edgegw models fetch` re-derives the int8 copy, as it did for recipe 2)."""

    def runtime_options(self) -> RuntimeOptions:
        """ONNX Runtime options for these settings."""
        int8 = ("sface",) if self.sface_int8 else ()
        return RuntimeOptions(providers=self.providers, intra_op_threads=self.intra_op_threads, int8_models=int8)


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How sessions are built: providers in order of preference, intra-op threads, spinning."""

    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = 1
    # Measured here: with 2 threads and several sessions in one pipeline, spinning threads made the
    # pipeline slower than one thread. Off by default.
    allow_spinning: bool = False
    # The arena holds on to peak activations; off trades a little speed for ~60 MB less RSS.
    memory_arena: bool = True
    trt_cache_dir: Path | None = None
    """Where TensorRT keeps its engines and timing cache; None: `trt-cache/` beside the model."""
    trt_fp16: bool = True
    """Let TensorRT run layers in FP16 (Jetson's GPUs are much faster at it; embeddings move ~1e-3)."""
    device_id: int = 0
    int8_models: tuple[str, ...] = ()
    """Models to load from their int8 copy when present, on CPU (edge.models.variants). The default
    matches ModelsConfig's (none), so every FaceAnalyzer of a process (enrolment, capture, query,
    bench) embeds with the same model unless told otherwise."""

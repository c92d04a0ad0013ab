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
    or by `edgegw models quantize`) on CPU. Measured beside the float model (docs/gate.md, "The race,
    fourth round"): the whole network in int8 with percentile ranges (recipe 3), 1.6x faster per
    face than the float graph (the face race 22.3x face_recognition against 16.6x); TAR at FAR <= 0.1 %
    equal or better on every face set over seeds 15-18 and on the race's own pairs. It stays off by
    default because at the shipped `face.match_threshold` (0.363, chosen on the float model) it
    accepts more impostors (clean 4 against 2 of 1545, 40 px 12 against 4 of 6180 over four seeds)
    and fewer dark and blurred residents; a site turning it on re-checks its threshold. Falls back
    to the float model (with a warning) when the file is missing; GPU providers always use the float
    model. Residents enrolled with one are matched with the same one: set it before enrolling (and
    re-enrol after `edgegw models fetch` re-derives the int8 copy, as it did for recipes 2 and 3)."""

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
    # The arena holds on to peak activations. Off, every activation is a malloc of its own: the
    # 4-camera daemon peaked higher (448-523 MB against 363-399 MB with the shared arena, docs/gate.md).
    memory_arena: bool = True
    memory_pattern: bool = False
    """ONNX Runtime's memory pattern (`enable_mem_pattern`): per input shape, one block planned for all
    of a run's activations. Off, each activation is taken from the arena when it is made and given back
    after its last use: the 4-camera CaptureDaemon peaked 25-30 MB lower (two cameras run one session
    at once, each run with its own planned block), and per call thread CPU moved by -0.8 % (YuNet) to
    +0.9 % (SFace), +0.2 % clp_det, +0.7 % PP-OCR, +2.2 % clp_rec (docs/gate.md, "Peak RSS, second
    round")."""
    shared_arena: bool = True
    """CPU sessions of the process take their memory from one arena registered with ONNX Runtime's
    environment (`session.use_env_allocators`), which grows by exactly what a run asks for
    (kSameAsRequested) instead of doubling, rather than each from an arena of its own."""
    trt_cache_dir: Path | None = None
    """Where TensorRT keeps its engines and timing cache; None: `trt-cache/` beside the model."""
    trt_fp16: bool = True
    """Let TensorRT run layers in FP16 (Jetson's GPUs are much faster at it; embeddings move ~1e-3)."""
    device_id: int = 0
    int8_models: tuple[str, ...] = ()
    """Models to load from their int8 copy when present, on CPU (edge.models.variants). The default
    matches ModelsConfig's (none), so every FaceAnalyzer of a process (enrolment, capture, query,
    bench) embeds with the same model unless told otherwise."""

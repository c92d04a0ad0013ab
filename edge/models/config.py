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
    """Use the int8 SFace written by `edgegw models quantize` (1.3-1.5x faster embedding on this
    machine; cosine to the float model >= 0.98 on ../shared/data). Re-check accuracy on your site."""

    def runtime_options(self) -> RuntimeOptions:
        """ONNX Runtime options for these settings."""
        return RuntimeOptions(providers=self.providers, intra_op_threads=self.intra_op_threads)


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

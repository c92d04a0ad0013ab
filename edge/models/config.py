"""Config of the model runtime: where the verified models are and how ONNX Runtime runs them."""

from __future__ import annotations

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



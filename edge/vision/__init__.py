"""Face vision: pure-numpy model adapters (YuNet detection, alignment, SFace embedding, quality)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray


class Runner(Protocol):
    """What adapters need from a model runner (edge.models.runner.OrtRunner satisfies it)."""

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's input names."""
        ...

    @property
    def output_names(self) -> tuple[str, ...]:
        """The model's output names, in the order `run` returns them."""
        ...

    def run(self, inputs: Mapping[str, NDArray[Any]] | NDArray[Any]) -> Sequence[NDArray[Any]]:
        """Run the model on a feed (or a bare array for the first input)."""
        ...


def as_bgr(image: NDArray[Any]) -> NDArray[np.uint8]:
    """Return an HxWx3 uint8 BGR view/copy of a grey, BGR or BGRA image; ValueError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim in (2, 3) and image.size == 0:
        return np.zeros((image.shape[0], image.shape[1], 3), np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.ascontiguousarray(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")

"""SFace face embedder adapter (OpenCV Zoo 2021dec): batch preprocessing and L2-normalised output.

The model takes RGB 0-255 float NCHW [B,3,112,112] and applies (x - 127.5) / 128 itself; feeding
BGR instead measurably hurts agreement with OpenCV's own pipeline. Output `fc1` [B,128] is not
normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import ModelError
from edge.vision import Runner
from edge.vision.align import ALIGNED_SIZE

EMBEDDING_DIM = 128


def preprocess(aligned: Sequence[NDArray[np.uint8]] | NDArray[np.uint8]) -> NDArray[np.float32]:
    """Aligned BGR uint8 crops ([N,]112,112,3) → RGB float32 [N,3,112,112]."""
    batch = np.asarray(aligned)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != (ALIGNED_SIZE, ALIGNED_SIZE, 3):
        raise ValueError(f"expected aligned crops of shape [N,{ALIGNED_SIZE},{ALIGNED_SIZE},3], got {batch.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops, got {batch.dtype}")
    return np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)


def l2_normalize(x: NDArray[Any]) -> NDArray[np.float32]:
    """Normalise each row to unit length (rows of zeros stay zero)."""
    v = np.asarray(x, np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.asarray(v / np.maximum(norm, 1e-12), np.float32)


def cosine(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Cosine similarity of two embeddings."""
    return float(np.dot(l2_normalize(a).ravel(), l2_normalize(b).ravel()))


def cosine_matrix(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float32]:
    """[N,M] cosine similarities between two sets of embeddings."""
    return np.asarray(l2_normalize(a) @ l2_normalize(b).T, np.float32)


class SFace:
    """Runs batches of aligned crops through an SFace `Runner` in chunks of `max_batch`."""

    def __init__(self, max_batch: int = 16) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch

    def embed(self, runner: Runner, aligned: Sequence[NDArray[np.uint8]] | NDArray[np.uint8]) -> NDArray[np.float32]:
        """L2-normalised [N,128] embeddings of aligned BGR crops."""
        tensor = preprocess(aligned) if len(aligned) else np.zeros((0, 3, ALIGNED_SIZE, ALIGNED_SIZE), np.float32)
        chunks: list[NDArray[np.float32]] = []
        for start in range(0, tensor.shape[0], self.max_batch):
            out = runner.run(tensor[start : start + self.max_batch])[0]
            chunks.append(np.asarray(out, np.float32).reshape(-1, EMBEDDING_DIM))
        if not chunks:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        emb = np.concatenate(chunks)
        if emb.shape[0] != tensor.shape[0]:
            raise ModelError(f"SFace returned {emb.shape[0]} embeddings for {tensor.shape[0]} crops")
        return l2_normalize(emb)

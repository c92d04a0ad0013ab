"""Five-point face alignment to the 112x112 ArcFace template (least-squares similarity, Umeyama)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

ALIGNED_SIZE = 112

# Left eye, right eye, nose tip, left and right mouth corners (image left/right), in 112x112 pixels.
ARCFACE_TEMPLATE: NDArray[np.float64] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE.flags.writeable = False


def similarity_transform(src: NDArray[Any], dst: NDArray[Any]) -> NDArray[np.float64]:
    """The 2x3 rotation+uniform-scale+translation matrix mapping `src` onto `dst` in least squares.

    Umeyama (1991), with the reflection guard. Unlike OpenCV's estimateAffinePartial2D with LMEDS,
    it uses all five points, which measured noticeably better for recognition.
    """
    s = np.asarray(src, np.float64).reshape(-1, 2)
    d = np.asarray(dst, np.float64).reshape(-1, 2)
    if s.shape != d.shape or s.shape[0] < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {s.shape} and {d.shape}")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise ValueError("landmarks contain NaN or infinity")
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum() / len(s))
    if var_s < 1e-9:
        raise ValueError("degenerate landmarks: all points coincide")
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def align_face(image: NDArray[np.uint8], landmarks: NDArray[Any], size: int = ALIGNED_SIZE) -> NDArray[np.uint8]:
    """Warp the face with these 5 landmarks (x, y in `image` pixels) to a size x size ArcFace crop.

    A face much larger than the crop is first shrunk with area averaging (only the region the crop
    covers), because a bilinear warp straight from a high-resolution photo aliases.
    """
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty HxWxC image, got shape {image.shape}")
    template = ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    matrix = similarity_transform(points, template)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < _PRESHRINK_BELOW:
        image, points = _shrink_region(image, points, matrix, size, scale)
        matrix = similarity_transform(points, template)
    out = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    return np.asarray(out, dtype=np.uint8)


_PRESHRINK_BELOW = 0.5


def _shrink_region(
    image: NDArray[np.uint8], points: NDArray[np.float64], matrix: NDArray[np.float64], size: int, scale: float
) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    """Crop the source region the output covers and resize it by `scale` with INTER_AREA."""
    inv = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, x0 + 1, w))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, y0 + 1, h))
    crop = image[y0:y1, x0:x1]
    cw, ch = x1 - x0, y1 - y0
    nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
    small = np.asarray(cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA), np.uint8)
    # OpenCV's resize maps pixel centres: x' = (x + 0.5) * f - 0.5.
    shifted = (points - [x0, y0] + 0.5) * [nw / cw, nh / ch] - 0.5
    return small, shifted

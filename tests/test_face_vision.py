"""Face adapters: YuNet decoding, alignment, SFace embeddings and quality, on synthetic and real images."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge.types import Box, Detection
from edge.vision import as_bgr
from edge.vision.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from edge.vision.face_quality import assess, frontalness_score, sharpness_score, size_score
from edge.vision.sface import cosine, cosine_matrix, preprocess
from edge.vision.yunet import STRIDES, YuNet, _grid, nms
from tests._models import analyzer, face_manifest, image, labels, models_dir, multi_faces

# ---------------------------------------------------------------- YuNet decoding (pure numpy)


def _empty_outputs(h: int, w: int) -> dict[str, NDArray[np.float32]]:
    out: dict[str, NDArray[np.float32]] = {}
    for s in STRIDES:
        n = (h // s) * (w // s)
        out[f"cls_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"obj_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        out[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    return out


def _set(
    out: dict[str, NDArray[np.float32]],
    s: int,
    w: int,
    row: int,
    col: int,
    cls: float,
    obj: float,
    bbox: tuple[float, float, float, float],
) -> None:
    i = row * (w // s) + col
    out[f"cls_{s}"][0, i, 0] = cls
    out[f"obj_{s}"][0, i, 0] = obj
    out[f"bbox_{s}"][0, i] = bbox
    out[f"kps_{s}"][0, i] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def test_yunet_preprocess_pads_to_multiples_of_32_keeping_bgr() -> None:
    img = np.zeros((50, 70, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30
    inp = YuNet().preprocess(img)
    assert inp.tensor.shape == (1, 3, 64, 96) and inp.tensor.dtype == np.float32
    assert inp.tensor[0, :, 0, 0].tolist() == [10.0, 20.0, 30.0]
    assert not inp.tensor[0, :, 50:, :].any() and not inp.tensor[0, :, :, 70:].any()
    assert inp.scale_xy == (1.0, 1.0) and inp.image_hw == (50, 70)


def test_yunet_decodes_boxes_landmarks_and_suppresses_duplicates() -> None:
    h, w = 64, 96
    yunet = YuNet(score_threshold=0.6, nms_threshold=0.3)
    inp = yunet.preprocess(np.zeros((h, w, 3), np.uint8))
    out = _empty_outputs(h, w)
    _set(out, 16, w, 2, 3, 0.81, 1.0, (0.5, 0.25, math.log(2), math.log(3)))  # score 0.9
    _set(out, 16, w, 2, 4, 0.64, 1.0, (-0.5, 0.25, math.log(2), math.log(3)))  # 0.8, same box
    _set(out, 8, w, 5, 7, 0.64, 0.64, (0.5, 0.5, math.log(4), math.log(6)))  # 0.64, overlaps the first
    _set(out, 8, w, 1, 1, 0.49, 0.49, (0.0, 0.0, 0.0, 0.0))  # 0.49: below the threshold
    _set(out, 32, w, 1, 2, 0.49, 1.0, (0.5, 0.5, 0.0, 0.0))  # 0.7, far from the others
    dets = yunet.postprocess(out, inp)
    assert [round(d.score, 4) for d in dets] == [0.9, 0.7]
    first = dets[0]
    cx, cy, bw, bh = (3 + 0.5) * 16, (2 + 0.25) * 16, 2 * 16, 3 * 16
    assert first.box == Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
    assert first.keypoints.shape == (5, 2)
    np.testing.assert_allclose(first.keypoints[0], [(0.1 + 3) * 16, (0.2 + 2) * 16], rtol=1e-6)
    np.testing.assert_allclose(first.keypoints[4], [(0.9 + 3) * 16, (1.0 + 2) * 16], rtol=1e-6)


def test_yunet_maps_downscaled_detections_back_and_clips() -> None:
    yunet = YuNet(max_side=640)
    inp = yunet.preprocess(np.zeros((1000, 2000, 3), np.uint8))
    assert inp.tensor.shape == (1, 3, 320, 640) and inp.scale_xy == (0.32, 0.32)
    out = _empty_outputs(320, 640)
    _set(out, 32, 640, 0, 0, 1.0, 1.0, (0.5, 0.5, math.log(2), math.log(2)))  # 64 px box at (16,16)
    (det,) = yunet.postprocess(out, inp)
    assert det.box.x1 == 0.0 and det.box.y1 == 0.0  # clipped to the image
    assert det.box.x2 == pytest.approx(48 / 0.32) and det.box.y2 == pytest.approx(48 / 0.32)
    np.testing.assert_allclose(det.keypoints[0], [0.1 * 32 / 0.32, 0.2 * 32 / 0.32], rtol=1e-5)


def test_prior_grids_are_cached_per_size() -> None:
    g = _grid(3, 4)
    assert g is _grid(3, 4) and not g.flags.writeable
    assert g[5].tolist() == [1.0, 1.0]  # row-major: index 5 = row 1, col 1


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.1], np.float32)
    assert nms(boxes, scores, 0.3) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 2]


# ---------------------------------------------------------------- alignment


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(7)
    angle, scale, t = 0.4, 2.5, np.array([13.0, -7.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = rng.uniform(0, 100, (5, 2))
    dst = src @ (scale * rot).T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    # A mirrored point set is not mapped by a reflection: the result stays a proper rotation.
    mirrored = similarity_transform(src * [-1, 1], dst)
    assert np.linalg.det(mirrored[:, :2]) > 0
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), dst)


def _pattern(size: int = 112) -> NDArray[np.uint8]:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
    return np.asarray(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), np.uint8)


def test_align_face_of_template_landmarks_is_identity() -> None:
    pat = _pattern()
    out = align_face(pat, ARCFACE_TEMPLATE)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - pat).max() <= 1


def test_align_face_from_a_high_resolution_face_does_not_alias() -> None:
    # The same "face" 8x larger with 1-px texture on top: area pre-shrinking averages the texture
    # away, whereas a plain bilinear warp picks single pixels of it.
    pat = _pattern()
    big = np.zeros((1100, 1000, 3), np.int16)
    big[100:996, 50:946] = cv2.resize(pat, (896, 896), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:1100, 0:1000]
    big = np.clip(big + (((yy + xx) % 2) * 80 - 40)[..., None], 0, 255).astype(np.uint8)
    landmarks = ARCFACE_TEMPLATE * 8 + [53, 103]
    out = align_face(big, landmarks)
    assert float(np.abs(out.astype(int) - pat).mean()) < 6.0
    naive = cv2.warpAffine(big, similarity_transform(landmarks, ARCFACE_TEMPLATE), (112, 112))
    assert float(np.abs(naive.astype(int) - pat).mean()) > 20.0


# ---------------------------------------------------------------- quality


def _det(w: float, kps: NDArray[np.float64] | None = None) -> Detection:
    k = ARCFACE_TEMPLATE if kps is None else kps
    return Detection(Box(0, 0, w, w * 1.3), 0.9, np.asarray(k, np.float32))


def test_quality_prefers_big_sharp_frontal_faces() -> None:
    pat = _pattern()
    blurred = np.asarray(cv2.GaussianBlur(pat, (0, 0), 3), np.uint8)
    assert sharpness_score(pat) > sharpness_score(blurred)
    assert size_score(_det(10)) == 0.0 < size_score(_det(50)) < size_score(_det(200)) == 1.0
    assert frontalness_score(ARCFACE_TEMPLATE) > 0.9
    yawed = ARCFACE_TEMPLATE.copy()
    yawed[2, 0] += 14  # nose towards one eye
    assert frontalness_score(yawed) < 0.5
    rolled = ARCFACE_TEMPLATE @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # 90° roll: alignment undoes it
    assert frontalness_score(rolled) == pytest.approx(frontalness_score(ARCFACE_TEMPLATE))
    good, bad = assess(_det(120), pat), assess(_det(25, yawed), blurred)
    assert 0.0 <= bad.score < good.score <= 1.0


# ---------------------------------------------------------------- SFace helpers


def test_sface_preprocess_feeds_rgb_nchw() -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[..., 0] = 200  # blue in BGR
    x = preprocess(np.stack([crop, crop]))
    assert x.shape == (2, 3, 112, 112) and x.dtype == np.float32
    assert x[0, 2].max() == 200 and x[0, 0].max() == 0  # blue is the last RGB channel
    with pytest.raises(ValueError, match="112"):
        preprocess(np.zeros((2, 100, 100, 3), np.uint8))


def test_cosine_helpers() -> None:
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([3.0, 4.0, 0.0], np.float32)
    assert cosine(a, b) == pytest.approx(0.6)
    np.testing.assert_allclose(cosine_matrix(np.stack([a, b]), np.stack([b])), [[0.6], [1.0]], rtol=1e-6)


# ---------------------------------------------------------------- real models on real images


@pytest.mark.models
def test_detector_matches_opencv_facedetectoryn() -> None:
    img = image("faces/compreface/multi/012_4.jpg")
    det = cv2.FaceDetectorYN.create(
        str(models_dir() / face_manifest().get("yunet").file), "", (img.shape[1], img.shape[0]), 0.6, 0.3, 5000
    )
    _, ref = det.detect(img)
    ours = analyzer().detect(img)
    assert ref is not None and len(ours) == len(ref) == 4
    for r in ref:
        d = min(ours, key=lambda d: abs(d.box.x1 - r[0]) + abs(d.box.y1 - r[1]))
        assert np.allclose([d.box.x1, d.box.y1, d.box.width, d.box.height], r[:4], atol=0.5)
        assert np.allclose(d.keypoints.ravel(), r[4:14], atol=0.5)
        assert d.score == pytest.approx(float(r[14]), abs=1e-3)


@pytest.mark.models
def test_embedding_matches_opencv_facerecognizersf_on_a_small_face() -> None:
    img = image("faces/face_recognition/kit_harington/john2.jpeg")  # face < 224 px: no pre-shrink
    sample = analyzer().largest_face_embedding(img)
    assert sample is not None
    rec = cv2.FaceRecognizerSF.create(str(models_dir() / face_manifest().get("sface").file), "")
    d = sample.detection
    row = np.array([[d.box.x1, d.box.y1, d.box.width, d.box.height, *d.keypoints.ravel(), d.score]], np.float32)
    ref = rec.feature(rec.alignCrop(img, row)).ravel()
    assert cosine(sample.embedding, ref) > 0.999
    assert float(np.linalg.norm(sample.embedding)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.models
def test_group_photos_face_counts_and_annotated_noses() -> None:
    checked = 0
    for row in multi_faces():
        if not row["n_faces"]:
            continue
        expected = int(row["n_faces"])
        dets = analyzer().detect(image(row["path"]))
        assert abs(len(dets) - expected) <= 1, (row["path"], len(dets), expected)
        for pair in filter(None, row["nose_points_xy"].split(";")):
            x, y = (float(v) for v in pair.split("&"))
            assert any(d.box.x1 <= x <= d.box.x2 and d.box.y1 <= y <= d.box.y2 for d in dets), (row["path"], x, y)
        checked += 1
    assert checked >= 9


@pytest.mark.models
def test_known_people_are_found_in_a_group_photo() -> None:
    fa = analyzer()
    gallery = {}
    for name in ("obama", "biden"):
        rel = next(r["path"] for r in labels() if r["identity"] == name)
        sample = fa.largest_face_embedding(image(rel))
        assert sample is not None
        gallery[name] = sample.embedding
    faces = fa.analyze(image("faces/face_recognition/multi/obama_and_biden.jpg"))
    assert len(faces) >= 2
    sims = cosine_matrix(np.stack(list(gallery.values())), np.stack([f.embedding for f in faces]))
    best = sims.argmax(axis=1)
    assert best[0] != best[1], "obama and biden matched the same face"
    assert float(sims.max(axis=1).min()) > 0.363  # OpenCV's SFace match threshold


@pytest.mark.models
def test_same_identity_scores_higher_than_different_identities() -> None:
    rows = [r for r in labels() if r["source_repo"] == "ageitgey/face_recognition"]
    fa = analyzer()
    emb, ids = [], []
    for r in rows:
        sample = fa.largest_face_embedding(image(r["path"]))
        assert sample is not None, r["path"]
        emb.append(sample.embedding)
        ids.append(r["identity"])
    sims = cosine_matrix(np.stack(emb), np.stack(emb))
    same = np.array([[a == b for b in ids] for a in ids])
    off_diag = ~np.eye(len(ids), dtype=bool)
    genuine, impostor = sims[same & off_diag], sims[~same]
    assert genuine.size >= 10 and impostor.size >= 50
    assert float(genuine.min()) > float(impostor.max())


@pytest.mark.models
def test_odd_images_do_not_crash() -> None:
    fa = analyzer()
    img = np.ascontiguousarray(image("faces/face_recognition/biden/biden.jpg"))
    base = fa.detect(img)
    assert len(base) == 1
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert len(fa.detect(grey)) == 1 and len(fa.detect(grey[..., None])) == 1
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    (d,) = fa.detect(bgra)
    assert d.box == base[0].box
    assert fa.detect(np.zeros((0, 0, 3), np.uint8)) == []
    assert fa.detect(np.zeros((5, 0), np.uint8)) == []
    assert fa.detect(np.full((7, 9, 3), 128, np.uint8)) == []
    assert fa.largest_face_embedding(np.zeros((240, 320, 3), np.uint8)) is None
    assert fa.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="uint8"):
        fa.detect(img.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_bgr(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.models
def test_rgba_png_and_webp_images_work() -> None:
    fa = analyzer()
    for rel in ("faces/face_recognition/alex_lacamoire/alex-lacamoire.png", "faces/deepface/deepface_p03/img47.webp"):
        img = image(rel)
        assert img.ndim == 3 and img.shape[2] == 3
        assert fa.largest_face_embedding(img) is not None, rel


@pytest.mark.models
def test_big_photo_is_detected_downscaled_and_aligned_at_full_resolution() -> None:
    fa = analyzer()
    img = image("faces/deepface/multi/couple.jpg")  # 2280 px wide
    assert max(img.shape[:2]) > 1280
    faces = fa.analyze(img)
    assert len(faces) == 2
    for f in faces:
        assert f.detection.box.x2 <= img.shape[1] and f.detection.box.y2 <= img.shape[0]
        assert f.aligned.shape == (112, 112, 3)
        assert 0.0 <= f.quality.score <= 1.0 and f.quality.size == 1.0

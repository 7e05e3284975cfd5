"""Small, pure image helpers shared by the analyzer, the estimators and the sinks."""
from __future__ import annotations

import cv2
import numpy as np


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """Any frame a user may hand us → contiguous BGR uint8 (HxWx3).

    Accepts grayscale (HxW or HxWx1), BGRA, and 16-bit or float images, so the pipeline never
    crashes on a PNG straight out of a scientific camera.

    Frames are converted once where they enter (:class:`agender.io.sources.Frame`, the
    Analyzer's public entry points); every later call — per stage, per crop, inside each
    estimator — hits the fast path below and gets its input back untouched (no copy, no
    dtype/shape re-check beyond four attribute reads).
    """
    if (type(frame) is np.ndarray and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
            and frame.size and frame.flags.c_contiguous):
        return frame
    if frame is None:
        raise ValueError("frame is None, not an image (cv2.imread returns None for a file it cannot read, "
                         "VideoCapture.read at the end of a stream); pass an HxWx3 BGR uint8 array")
    img = np.asarray(frame)
    if img.dtype.kind not in "uifb":
        raise ValueError(f"frame is not an image: a {type(frame).__name__} of dtype {img.dtype} "
                         "(pass an HxWx3 BGR uint8 array)")
    if img.size == 0:
        return np.zeros((0, 0, 3), np.uint8)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        hi = float(np.nanmax(img)) if img.size else 1.0
        img = np.clip(img * (255.0 if hi <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        img = cv2.cvtColor(img.reshape(img.shape[0], img.shape[1]), cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"unsupported frame shape {img.shape}")
    return np.ascontiguousarray(img)


def detection_scale(shape: tuple[int, ...], detect_width: int | None) -> float:
    """Factor (≤ 1) that brings the frame's long side down to ``detect_width``; never upscales."""
    h, w = shape[:2]
    if not detect_width or max(h, w) <= detect_width:
        return 1.0
    return detect_width / float(max(h, w))


def resize_for_detection(frame: np.ndarray, detect_width: int | None, fast: bool = False) -> tuple[np.ndarray, float]:
    """The detector's copy of ``frame`` (long side ``detect_width``) and its scale. ``fast``
    (detectors that ask for it, e.g. YuNet): a non-integer ratio ≥ 2 is an integer box filter
    plus a small bilinear step instead of INTER_AREA's slow general path (0.4 vs ~5 ms on 720p)."""
    s = detection_scale(frame.shape, detect_width)
    if s == 1.0:
        return frame, 1.0
    h, w = frame.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    k = int(1.0 / s + 1e-6)
    if fast and k >= 2 and abs(k * s - 1.0) > 1e-6:
        # a non-integer ratio ≥ 2 (720p → 480 px): INTER_AREA's general path costs ~5 ms a 720p
        # frame, its integer path 0.2 ms; average k×k blocks first, then the small bilinear rest
        # (what the detector sees is the same box-filtered picture; benchmarks/detectors.py)
        frame = cv2.resize(frame, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
        return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR), s
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return small, s


def pad_boxes(xyxy: np.ndarray, padding: float) -> np.ndarray:
    """Grow each box by ``padding`` × its width/height on every side (unclipped)."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    pad = wh * float(padding)
    return np.concatenate([xyxy[:, :2] - pad, xyxy[:, 2:] + pad], axis=1)


def clip_boxes(xyxy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Float32 boxes clipped to an image of ``shape`` (supervision's ``clip_boxes``)."""
    import supervision as sv

    h, w = shape[:2]
    return sv.clip_boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), (w, h))


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes, in the boxes' own precision (float32 for Faces). Not
    ``sv.box_iou_batch``, which works in float64: the tracker's ``track_conf`` (written to 4
    decimals) must stay bit-for-bit what it was; batches of boxes use supervision's."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def crop_boxes(frame: np.ndarray, xyxy: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of ``frame`` for each box, clipped at the borders (a face half outside the frame
    keeps its visible half). Returns the crops (views, not copies) and the integer origins."""
    boxes = clip_boxes(xyxy, frame.shape)
    ib = np.round(boxes).astype(np.int32)
    crops = []
    for x1, y1, x2, y2 in ib:
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        crops.append(frame[y1:y2, x1:x2])
    return crops, ib[:, :2]

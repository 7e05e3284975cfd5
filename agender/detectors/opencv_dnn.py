"""``dnn``: OpenCV's res10 SSD face detector (ResNet-10 backbone, 8-bit TensorFlow graph).

Fast and robust to pose and lighting compared with the cascades, but it sees the whole frame
at 300x300, so faces smaller than ~5 % of the frame height are lost. On tight face crops it
emits extra boxes for the one face (see :func:`suppress_ssd_artifacts`).
"""
from __future__ import annotations

import cv2
import numpy as np

from agender.devices import cv2_dnn_target
from agender.errors import ModelError, one_line
from agender.faces import Faces

PB = "opencv_dnn/opencv_face_detector_uint8.pb"
PBTXT = "opencv_dnn/opencv_face_detector.pbtxt"
INPUT_SIZE = (300, 300)
MEAN_BGR = (104.0, 117.0, 123.0)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """The detectors are called with BGR uint8 by the Analyzer; this only guards direct callers."""
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image
    from agender.imageops import to_bgr8

    return to_bgr8(image)


def nms(xyxy: np.ndarray, scores: np.ndarray, score_thr: float, iou_thr: float) -> np.ndarray:
    """Indices kept by ``cv2.dnn.NMSBoxes`` (which wants x, y, w, h lists), best first."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(float).tolist(), float(score_thr), float(iou_thr))
    return np.asarray(keep, np.int64).reshape(-1)


def _area(xyxy: np.ndarray) -> np.ndarray:
    wh = np.clip(xyxy[..., 2:] - xyxy[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def suppress_ssd_artifacts(
    raw: np.ndarray, conf: np.ndarray, iou_thr: float = 0.4, inside_min: float = 0.7, overlap_max: float = 0.25
) -> np.ndarray:
    """Indices of real faces among res10's raw boxes (normalised x1, y1, x2, y2), best first.

    Why more than NMS: the 8-bit res10 graph returns many confident boxes lying wholly or
    mostly *outside* the frame, and on a face that fills the frame (a tight crop, a close-up)
    a copy of the face box shifted half a face down-right that sticks out of the frame, often
    scoring higher than the true box and overlapping it by IoU < 0.2, so plain NMS keeps both
    or the wrong one; on UTKFace chips the shifted copy is usually the *only* box (the net was
    not trained on faces filling the frame). So: (1) boxes less than ``inside_min`` in frame are
    dropped (this removes the shifted copy, which is 45-65 % in frame), (2) the rank
    is confidence × in-frame fraction, so the box inside the frame wins NMS, (3) a box that
    sticks out of the frame is dropped when more than ``overlap_max`` of its visible part lies
    on a face already kept. A real face cut by the frame edge has no such neighbour and stays.
    """
    if len(raw) == 0:
        return np.zeros(0, np.int64)
    full = _area(raw)
    clipped = np.clip(raw, 0.0, 1.0)
    vis = _area(clipped)
    inside = np.where(full > 0, vis / np.maximum(full, 1e-12), 0.0)
    cand = np.flatnonzero(inside >= inside_min)
    if len(cand) == 0:
        return np.zeros(0, np.int64)
    rank = conf[cand] * inside[cand]
    order = cand[nms(clipped[cand], rank, 0.0, iou_thr)]
    kept: list[int] = []
    for i in order:
        if inside[i] < 0.9 and kept:
            k = clipped[kept]
            inter = _area(np.concatenate([np.maximum(k[:, :2], clipped[i, :2]), np.minimum(k[:, 2:], clipped[i, 2:])], 1))
            if inter.max() > overlap_max * vis[i]:
                continue
        kept.append(int(i))
    return np.asarray(kept, np.int64)


class OpenCVDnnDetector:
    """``dnn``: res10 SSD via ``cv2.dnn`` (CUDA backend when OpenCV has one and device allows)."""

    name = "dnn"

    def __init__(
        self,
        *,
        models=None,
        device: str = "auto",
        conf: float = 0.7,
        min_face: int = 20,
        nms_iou: float = 0.4,
        variant: str = "",
    ):
        from agender.models import ModelStore

        if variant:
            raise ModelError(f"the dnn detector has no variant {variant!r}")
        store = models or ModelStore()
        pb, pbtxt = store.resolve(PB), store.resolve(PBTXT)
        self.model_files = [pb, pbtxt]
        try:
            self.net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
        except cv2.error as exc:
            raise ModelError(f"cannot load {pb} with {pbtxt.name}: {one_line(exc, last=True, named=False)}") from None
        self.device_used = cv2_dnn_target(self.net, device)
        self.conf = float(conf)
        self.min_face = int(min_face)
        self.nms_iou = float(nms_iou)

    def detect(self, image: np.ndarray) -> Faces:
        image = _as_bgr(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return Faces()
        blob = cv2.dnn.blobFromImage(image, 1.0, INPUT_SIZE, MEAN_BGR, swapRB=False, crop=False)
        self.net.setInput(blob)
        out = self.net.forward().reshape(-1, 7)  # (image_id, label, conf, x1, y1, x2, y2)
        out = out[out[:, 2] >= self.conf]
        keep = suppress_ssd_artifacts(out[:, 3:7], out[:, 2], self.nms_iou)
        if len(keep) == 0:
            return Faces()
        xyxy = np.clip(out[keep, 3:7], 0.0, 1.0) * np.array([w, h, w, h], np.float32)
        scores = out[keep, 2].astype(np.float32)
        ok = (xyxy[:, 2:] - xyxy[:, :2]).min(axis=1) >= self.min_face
        return Faces(xyxy=xyxy[ok], det_conf=scores[ok])

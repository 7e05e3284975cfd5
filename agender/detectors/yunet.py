"""``yunet``: OpenCV Zoo's YuNet through ``cv2.FaceDetectorYN``.

The best detector we ship: a 230 kB anchor-free CNN that runs at the image's own size (so it
keeps small faces a 300x300 SSD loses) and returns 5 landmarks per face (right eye, left eye,
nose tip, right and left mouth corner, in the image's own orientation) that estimators which
align faces can use. Its weights are fetched (`agender models fetch yunet`), not in a wheel.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from agender.devices import parse_device
from agender.errors import ModelError
from agender.faces import Faces

from .opencv_dnn import _as_bgr

log = logging.getLogger(__name__)

MODEL = "yunet/face_detection_yunet.onnx"


def _backend_target(device: str) -> tuple[int, int, str]:
    """cv2.dnn backend/target ids for ``device`` (CUDA only when OpenCV was built with it)."""
    name, _ = parse_device(device)
    if name in ("auto", "cuda"):
        try:
            if cv2.cuda.getCudaEnabledDeviceCount() > 0:
                return cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA, "CUDA"
        except Exception:  # OpenCV built without CUDA
            pass
    if name == "cuda":
        log.warning("OpenCV has no CUDA backend here, YuNet runs on CPU")
        return cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "CPU (OpenCV built without CUDA)"
    return cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU, "CPU"


class YuNetDetector:
    """``yunet``: boxes, scores and 5 landmarks (``Faces.landmarks`` shape (N, 5, 2))."""

    name = "yunet"

    def __init__(
        self,
        *,
        models=None,
        device: str = "auto",
        conf: float = 0.6,
        min_face: int = 10,
        nms_iou: float = 0.3,
        top_k: int = 5000,
        variant: str = "",
    ):
        from agender.models import ModelStore

        if variant:
            raise ModelError(f"the yunet detector has no variant {variant!r}")
        path = (models or ModelStore()).resolve(MODEL)
        backend, target, self.device_used = _backend_target(device)
        try:
            self.det = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), float(conf), float(nms_iou), int(top_k), backend, target
            )
        except cv2.error as exc:
            raise ModelError(f"cannot load YuNet model {path}: {str(exc).strip().splitlines()[-1]}") from None
        self._size = (320, 320)
        self.conf = float(conf)
        self.min_face = int(min_face)

    def detect(self, image: np.ndarray) -> Faces:
        image = _as_bgr(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return Faces()
        if (w, h) != self._size:  # YuNet's anchors depend on the input size
            self.det.setInputSize((w, h))
            self._size = (w, h)
        _, rows = self.det.detect(image)
        if rows is None or len(rows) == 0:
            return Faces()
        rows = np.asarray(rows, np.float32).reshape(-1, 15)  # x, y, w, h, 5 x (x, y), score
        rows = rows[np.minimum(rows[:, 2], rows[:, 3]) >= self.min_face]
        xyxy = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], axis=1)
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
        return Faces(xyxy=xyxy, det_conf=rows[:, 14], landmarks=rows[:, 4:14].reshape(-1, 5, 2))

"""``yunet``: OpenCV Zoo's YuNet through ``cv2.FaceDetectorYN``.

The best detector we ship: a 230 kB anchor-free CNN that runs at the image's own size (so it
keeps small faces a 300x300 SSD loses) and returns 5 landmarks per face (right eye, left eye,
nose tip, right and left mouth corner, in the image's own orientation) that estimators which
align faces can use. Its weights are fetched (`agender models fetch yunet`), not in a wheel.

The net runs in onnxruntime by default (through :class:`~agender.devices.OnnxSession`, so
the device policy and CPU fallback apply) with OpenCV Zoo's decoding done here in numpy:
the same boxes, landmarks and scores as ``cv2.FaceDetectorYN`` (within 1e-4 px on the TV
clip) for about half the CPU time (8 vs 16 ms a 640x360 frame on one thread), which matters
because the detector is the largest cost of the offline pipeline. ``backend="opencv"`` keeps
``cv2.FaceDetectorYN``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from agender.devices import cv2_dnn_backend
from agender.errors import ModelError, one_line
from agender.faces import Faces

from .opencv_dnn import _as_bgr

log = logging.getLogger(__name__)

MODEL = "yunet/face_detection_yunet.onnx"


def _backend_target(device: str) -> tuple[int, int, str]:
    """cv2.dnn backend/target ids for ``device`` (CUDA only when OpenCV was built with it)."""
    return cv2_dnn_backend(device, "YuNet")


class YuNetDetector:
    """``yunet``: boxes, scores and 5 landmarks (``Faces.landmarks`` shape (N, 5, 2))."""

    name = "yunet"
    # the Analyzer's downscale when none is asked for: at 480 px YuNet finds every face it finds
    # at 640 on the shared photos and clips (benchmarks/detectors.py --widths) at ~60 % of the CPU
    default_detect_width = 480
    fast_downscale = True  # the two-step downscale (imageops.resize_for_detection): same recall, 0.4 ms not 5

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
        backend: str = "onnxruntime",
        runtime: str = "onnxruntime",
        threads: int | None = None,
    ):
        """``runtime``: onnxruntime, litert (the shipped .tflite) or auto (the faster, measured
        on the first frame); the numpy decoding below is the same for all of them."""
        from agender.models import ModelStore

        if variant:
            raise ModelError(f"the yunet detector has no variant {variant!r}")
        path = (models or ModelStore()).resolve(MODEL)
        self.path = path
        self.model_files = [Path(path)]
        self.conf = float(conf)
        self.min_face = int(min_face)
        self.nms_iou = float(nms_iou)
        self.top_k = int(top_k)
        self.backend = backend
        if backend == "onnxruntime":
            from agender.runtimes import open_session

            self.sess = open_session(path, runtime=runtime, device=device, threads=threads, name=str(path),
                                     tflite_key="yunet")
            self.runtime = getattr(self.sess, "runtime", "onnxruntime")
            return
        backend_id, target, self.device_used = _backend_target(device)
        try:
            self.det = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), float(conf), float(nms_iou), int(top_k), backend_id, target
            )
        except cv2.error as exc:
            raise ModelError(f"cannot load YuNet model {path}: {one_line(exc, last=True, named=False)}") from None
        self._size = (320, 320)

    @property
    def device_used(self) -> str:
        """The session's device (an ``auto`` runtime knows its pick only after the first frame)."""
        sess = getattr(self, "sess", None)
        return sess.device_used if sess is not None else self._cv_device

    @device_used.setter
    def device_used(self, value: str) -> None:
        self._cv_device = value

    def _rows_onnxruntime(self, image: np.ndarray) -> np.ndarray:
        """(N, 15) rows ``x, y, w, h, 5 x (x, y), score``, decoded the way OpenCV's
        FaceDetectorYN does: the image padded to a multiple of 32, per stride s in 8/16/32 a
        grid of anchors, score sqrt(cls*obj), box centre (col + dx, row + dy) * s, size
        exp(dw, dh) * s, landmarks (col + kx, row + ky) * s, then NMS."""
        h, w = image.shape[:2]
        ph, pw = (h - 1) // 32 * 32 + 32, (w - 1) // 32 * 32 + 32
        padded = cv2.copyMakeBorder(image, 0, ph - h, 0, pw - w, cv2.BORDER_CONSTANT, value=0)
        out = dict(zip(self.sess.output_names, self.sess.run({self.sess.input_names[0]: cv2.dnn.blobFromImage(padded)})))
        boxes, scores, kps = [], [], []
        for s in (8, 16, 32):
            cols = pw // s
            score = np.sqrt(np.clip(out[f"cls_{s}"].reshape(-1), 0, 1) * np.clip(out[f"obj_{s}"].reshape(-1), 0, 1))
            keep = np.flatnonzero(score >= self.conf)
            if not len(keep):
                continue
            row, col = (keep // cols).astype(np.float32), (keep % cols).astype(np.float32)
            bb = out[f"bbox_{s}"].reshape(-1, 4)[keep]
            bw, bh = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            cx, cy = (col + bb[:, 0]) * s, (row + bb[:, 1]) * s
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
            k = out[f"kps_{s}"].reshape(-1, 5, 2)[keep].copy()
            k[:, :, 0] = (k[:, :, 0] + col[:, None]) * s
            k[:, :, 1] = (k[:, :, 1] + row[:, None]) * s
            kps.append(k.reshape(-1, 10))
            scores.append(score[keep])
        if not boxes:
            return np.zeros((0, 15), np.float32)
        b, sc, k = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
        idx = np.asarray(cv2.dnn.NMSBoxes(b.tolist(), sc.tolist(), self.conf, self.nms_iou, 1.0, self.top_k)).reshape(-1)
        return np.concatenate([b[idx], k[idx], sc[idx, None]], axis=1).astype(np.float32)

    def detect(self, image: np.ndarray) -> Faces:
        image = _as_bgr(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return Faces()
        if self.backend == "onnxruntime":
            rows = self._rows_onnxruntime(image)
        else:
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

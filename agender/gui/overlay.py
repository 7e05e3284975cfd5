"""Turn an analysed frame into the picture the window shows (runs on the worker thread).

Why render at *display* size, in the worker: labels drawn at the size they are seen stay crisp
on a 270p clip blown up to full screen and small on a 4K frame shown in a corner, and the UI
thread only has to blit a ready picture. Snapshots and recordings use the same drawing at the
frame's own resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agender.faces import Face, Faces

# Gender colours (RGB): the chart uses the same ones so the legend is the picture.
FEMALE_RGB = (236, 72, 153)
MALE_RGB = (59, 130, 246)
UNKNOWN_RGB = (160, 160, 160)


@dataclass
class OverlayOptions:
    landmarks: bool = False
    confidence: bool = False
    privacy: bool = False  # blur every face (on screen only: privacy mode stores nothing)


def gender_rgb(gender: str) -> tuple[int, int, int]:
    return {"female": FEMALE_RGB, "male": MALE_RGB}.get(gender, UNKNOWN_RGB)


def face_label(face: Face) -> str:
    """``"F 27"`` / ``"M 41±6"``; a track's smoothed values when a tracker filled them in;
    the model's own bucket text (``"F (25-32)"``) when it gives one."""
    p_male = face.p_male_avg if face.p_male_avg == face.p_male_avg else face.p_male
    age = face.age_avg if face.age_avg == face.age_avg else face.age
    g = "?" if p_male != p_male else ("M" if p_male >= 0.5 else "F")
    if face.age_label:
        return f"{g} {face.age_label}"
    if age != age:
        return g
    if face.age_std == face.age_std and face.age_std >= 1:
        return f"{g} {age:.0f}±{face.age_std:.0f}"
    return f"{g} {age:.0f}"


def _face_gender(face: Face) -> str:
    return face.gender_avg or face.gender


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


def draw_faces(image: np.ndarray, faces: Faces, opts: OverlayOptions, scale: float = 1.0) -> np.ndarray:
    """Draw boxes and labels onto a BGR ``image`` in place; ``scale`` maps face coordinates
    (full-resolution frame pixels) to ``image`` pixels."""
    if not len(faces):
        return image
    h, w = image.shape[:2]
    if opts.privacy:
        blur_faces(image, faces.xyxy * scale)
    ref = max(240.0, min(float(max(w, h)), 1600.0))
    thick = max(1, int(round(ref / 450)))
    font, fscale = cv2.FONT_HERSHEY_DUPLEX, ref / 1500
    for face in faces:
        r, g, b = gender_rgb(_face_gender(face))
        color = (b, g, r)
        x1, y1, x2, y2 = (int(round(v * scale)) for v in face.xyxy)
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thick + 1, cv2.LINE_AA)
        text = face_label(face)
        if opts.confidence and face.det_conf == face.det_conf:
            text += f"  {face.det_conf:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, fscale, thick)
        pad = max(2, thick * 2)
        ty = y1 - th - base - 2 * pad
        if ty < 0:  # no room above the box: put the label inside its top edge
            ty = y1
        tx = min(max(0, x1 - (thick + 1) // 2), max(0, w - tw - 2 * pad))
        cv2.rectangle(image, (tx, ty), (tx + tw + 2 * pad, ty + th + base + 2 * pad), color, -1)
        cv2.putText(image, text, (tx + pad, ty + pad + th), font, fscale, (255, 255, 255), thick, cv2.LINE_AA)
        if opts.landmarks and face.landmarks is not None:
            for x, y in np.asarray(face.landmarks, np.float32).reshape(-1, 2) * scale:
                cv2.circle(image, (int(round(x)), int(round(y))), thick + 1, (0, 255, 255), -1, cv2.LINE_AA)
    return image


def render_display(frame_bgr: np.ndarray, faces: Faces, box: tuple[int, int], opts: OverlayOptions) -> np.ndarray:
    """The frame fitted into ``box`` (w, h) with overlays, as a contiguous RGB array."""
    h, w = frame_bgr.shape[:2]
    tw, th = fit_size(w, h, *box)
    if (tw, th) == (w, h):
        img = frame_bgr.copy()
    else:
        interp = cv2.INTER_AREA if tw < w else cv2.INTER_LINEAR
        img = cv2.resize(frame_bgr, (tw, th), interpolation=interp)
    draw_faces(img, faces, opts, scale=tw / w)
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def render_full(frame_bgr: np.ndarray, faces: Faces, opts: OverlayOptions) -> np.ndarray:
    """The annotated frame at its own resolution (BGR), for snapshots."""
    return draw_faces(frame_bgr.copy(), faces, opts, scale=1.0)

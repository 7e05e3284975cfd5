"""Drawing faces on a frame: one annotator for the MP4 export, the GUI overlay and demos.

Boxes are coloured by gender (blue male, magenta female, gray unknown); the label is
``"F 27"`` or ``"M 41±6"``, taken from the track's smoothed values when the face is tracked
(``age_avg``/``p_male_avg``) and from the raw estimate otherwise; ``#3`` prefixes it with the
track id when ``show_ids``. Sizes scale with the frame so a 270p clip and a 4K frame both
read well.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agender.faces import Face, Faces

COLORS = {"male": (230, 140, 30), "female": (180, 60, 230), "": (160, 160, 160)}  # BGR
LANDMARK_COLORS = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255)]


def display_values(face: Face) -> tuple[str, float, float]:
    """``(gender, age, age_std)`` to show: the track's means when tracked, raw otherwise."""
    tracked = face.track_id >= 0 and face.p_male_avg == face.p_male_avg
    gender = face.gender_avg if tracked else face.gender
    if tracked and face.age_avg == face.age_avg:
        return gender, face.age_avg, face.age_std_avg  # steady: the track's means, not this frame's
    return gender, face.age, face.age_std


def face_label(face: Face, show_ids: bool = False) -> str:
    """``"F 27"``, ``"M 41±6"``, ``"#3 M 41"`` (age bucket text when the model gives one)."""
    gender, age, std = display_values(face)
    text = {"male": "M", "female": "F"}.get(gender, "?")
    if face.age_label:
        text += f" {face.age_label}"
    elif age == age:
        text += f" {age:.0f}"
        if std == std and std >= 0.5:  # the model's own spread (a distribution's std), when it has one
            text += f"±{std:.0f}"
    if show_ids and face.track_id >= 0:
        text = f"#{face.track_id} {text}"
    return text


@dataclass
class Annotator:
    show_ids: bool = True
    show_landmarks: bool = False
    thickness: int | None = None  # None: from the frame size
    font_scale: float | None = None

    def draw(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Draw ``faces`` on ``image`` **in place** (copy first to keep the original); returns it."""
        h, w = image.shape[:2]
        unit = max(h, w) / 1000.0
        th = self.thickness or max(1, round(2 * unit))
        fs = self.font_scale or max(0.35, 0.6 * unit)
        for face in faces:
            gender, _, _ = display_values(face)
            color = COLORS.get(gender, COLORS[""])
            x1, y1, x2, y2 = (int(round(v)) for v in face.xyxy)
            cv2.rectangle(image, (x1, y1), (x2, y2), color, th, cv2.LINE_AA)
            self._label(image, face_label(face, self.show_ids), x1, y1, y2, color, fs, th)
            if self.show_landmarks and face.landmarks is not None:
                r = max(1, th)
                for k, (px, py) in enumerate(np.asarray(face.landmarks).reshape(-1, 2)):
                    cv2.circle(image, (int(round(px)), int(round(py))), r, LANDMARK_COLORS[k % 5], -1, cv2.LINE_AA)
        return image

    @staticmethod
    def _label(image, text, x1, y1, y2, color, fs, th) -> None:
        """A filled tag with white text; "±" is drawn by hand (Hershey fonts are ASCII-only)."""
        font, tth = cv2.FONT_HERSHEY_SIMPLEX, max(1, th - 1)
        parts = text.split("±")
        sizes = [cv2.getTextSize(p, font, fs, tth) for p in parts]
        (pw, ph), _ = cv2.getTextSize("+", font, fs, tth)
        tw = sum(s[0][0] for s in sizes) + pw * (len(parts) - 1)
        tht = max(s[0][1] for s in sizes)
        base = max(s[1] for s in sizes)
        pad = th
        top = y1 - tht - base - 2 * pad
        if top < 0:  # no room above the box: put the label under it
            top = min(y2, image.shape[0] - tht - base - 2 * pad)
        x1 = max(0, min(x1, image.shape[1] - tw - 2 * pad))
        cv2.rectangle(image, (x1, top), (x1 + tw + 2 * pad, top + tht + base + 2 * pad), color, -1)
        x, y = x1 + pad, top + tht + pad
        white = (255, 255, 255)
        for k, (part, ((w, _), _)) in enumerate(zip(parts, sizes)):
            cv2.putText(image, part, (x, y), font, fs, white, tth, cv2.LINE_AA)
            x += w
            if k < len(parts) - 1:  # "+" raised a little, with a bar under it
                cv2.putText(image, "+", (x, y - max(1, ph // 5)), font, fs, white, tth, cv2.LINE_AA)
                cv2.line(image, (x + 1, y), (x + pw - 1, y), white, tth, cv2.LINE_AA)
                x += pw


def annotate(image: np.ndarray, faces: Faces, **kwargs) -> np.ndarray:
    """A copy of ``image`` with ``faces`` drawn (see :class:`Annotator`)."""
    return Annotator(**kwargs).draw(image.copy(), faces)

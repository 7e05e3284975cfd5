"""Re-identification: join the tracks of one person into one ``person_id``.

A track ends at every shot cut, occlusion or exit, so one actor of a sitcom scene becomes
dozens of tracks. :class:`FaceEmbedder` turns a face into a 128-d identity descriptor (dlib's
ResNet face recognition model, ``dlib_face_recognition_resnet_model_v1.dat``, CC0, shipped by
the PyPI package ``face-recognition-models``; model card: ``face_reid/README.md``), computed a
few times per track only: when the track starts and when its face gets clearly better
(:data:`MAX_PER_TRACK` at most). :class:`PeopleAssigner` gives a new track the id of the known
person whose descriptors are nearest (Euclidean distance below ``threshold``; dlib's own
operating point is 0.6) and who is not on screen in the same frame; else a new person.

The assignment is online (decided at a track's first frame, so the per-frame table can carry
``person_id`` from the first row of a track) and deterministic; its state (descriptors and the
track → person map) is JSON and goes into the run's own resume checkpoint. The descriptors are
**identity data**: they stay in memory and in that checkpoint (deleted when the run finishes),
never in a finished output; with ``privacy=True`` none is kept between tracks at all (every
track is its own person, no descriptor is computed) — see docs/people.md.
"""
from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from agender.errors import one_line

log = logging.getLogger(__name__)

MIN_FRAMES = 12  # a track is described when it is this many frames old (its clearest face so far)
AGAIN = ()  # ... and again at these ages when a face ×BETTER clearer came since
MAX_PER_TRACK = 1  # descriptors per track at most (~3 ms a face through ONNX; dlib's own: ~0.1 s)
CUE_P, CUE_AGE = 0.5, 15.0  # two groups this far apart in mean P(male) / age are never one person
FORGET_AFTER = 96  # frames: the pending crop of a track not seen for this long is dropped
CROP_SIDE = 200  # the kept crop (face + 30 % margin) is at most this many pixels on a side
PER_PERSON = 24  # descriptors kept per person (the first ones and the best ones)
DEFAULT_THRESHOLD = 0.6  # dlib's own operating point; see docs/people.md for the sweep
BETTER = 1.5  # a later face of a track is described again when its quality is ×1.5 its best


class ReidUnavailable(RuntimeError):
    pass


@lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def model_paths() -> tuple[Path, Path]:
    """(descriptor ResNet, 5-point shape predictor) from the installed ``face_recognition_models``."""
    try:
        import face_recognition_models as frm
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ReidUnavailable("re-identification needs the face-recognition-models package "
                              "(pip install face-recognition-models)") from exc
    return Path(frm.face_recognition_model_location()), Path(frm.pose_predictor_five_point_model_location())


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    rec, sp = model_paths()
    return dlib.face_recognition_model_v1(str(rec)), dlib.shape_predictor(str(sp))


@lru_cache(maxsize=4)
def _descriptor_session(threads: int):
    """onnxruntime session of the descriptor net converted from dlib's file (agender.reid_onnx)."""
    import onnxruntime as ort

    from agender.reid_onnx import cached_descriptor_onnx

    rec_path, _ = model_paths()
    path = cached_descriptor_onnx(rec_path, dlib_net=_dlib_models()[0])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = max(1, int(threads)), 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class FaceEmbedder:
    """128-d dlib ResNet descriptors of face boxes (L2 norm ≈ 1; same person: distance < 0.6).

    ``backend``: ``"onnx"`` runs dlib's net converted to ONNX (:mod:`agender.reid_onnx`; the same
    numbers within 1e-3, checked at conversion, ~3 ms a face on one core instead of ~100 ms:
    the PyPI dlib has no BLAS); ``"dlib"`` runs dlib itself; ``"auto"`` (default) is onnx unless
    the conversion fails (one warning) or ``jitter`` asks for dlib's jittered descriptors.
    Landmarks and chip alignment are dlib's either way. ``flip`` (default): a face's
    descriptor is the mean of its chip's and its mirror image's, in one batch — on
    ``tv_scene_720p.mp4`` that halved the people split in two (8 → 4) for 0.08 ms a frame
    (docs/people.md)."""

    name = "dlib-resnet-v1"

    def __init__(self, jitter: int = 0, backend: str = "auto", threads: int = 1, flip: bool = True):
        if backend not in ("auto", "onnx", "dlib"):
            raise ValueError(f"unknown descriptor backend {backend!r} (auto, onnx, dlib)")
        self.rec, self.sp = _dlib_models()
        self.jitter = int(jitter)
        self.flip = bool(flip)
        self._sess = None
        if backend == "onnx" or (backend == "auto" and not self.jitter):
            try:
                self._sess = _descriptor_session(threads)
            except Exception as exc:  # noqa: BLE001 - any conversion failure: dlib still works
                if backend == "onnx":
                    raise ReidUnavailable(f"descriptor net conversion failed: {one_line(exc)}") from exc
                _warn_once(f"re-identification runs dlib's own (slower) descriptor: {one_line(exc)}")
        self.backend = "onnx" if self._sess is not None else "dlib"

    def embed(self, image_bgr: np.ndarray, boxes) -> np.ndarray:
        """Descriptors (N, 128) float32 for the boxes ``(N, 4)`` x1,y1,x2,y2 of one frame."""
        import dlib

        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, 128), np.float32)
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        h, w = rgb.shape[:2]
        shapes = dlib.full_object_detections()
        for x1, y1, x2, y2 in boxes:
            r = dlib.rectangle(int(max(0, round(x1))), int(max(0, round(y1))),
                               int(min(w - 1, round(x2))), int(min(h - 1, round(y2))))
            shapes.append(self.sp(rgb, r))
        chips = dlib.get_face_chips(rgb, shapes, size=150, padding=0.25)
        n = len(chips)
        if self.flip:
            chips = list(chips) + [np.ascontiguousarray(np.asarray(c)[:, ::-1]) for c in chips]
        if self._sess is not None:
            batch = np.stack([np.asarray(c, np.float32) for c in chips])
            out = self._sess.run(None, {"chips": batch})[0].astype(np.float32).reshape(-1, 128)
        else:
            got = self.rec.compute_face_descriptor(chips, self.jitter) if self.jitter else \
                self.rec.compute_face_descriptor(chips)
            out = np.array([np.array(d, np.float32) for d in got], np.float32).reshape(-1, 128)
        return (out[:n] + out[n:]) / 2 if self.flip else out

    def embed_chip(self, chip_bgr: np.ndarray) -> np.ndarray:
        """Descriptor of an image that is one face crop (a face box of the whole image)."""
        h, w = chip_bgr.shape[:2]
        return self.embed(chip_bgr, [[0, 0, w, h]])[0]


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


class PeopleAssigner:
    """Track → person, online and deterministic (see the module docstring).

    ``assign(track_id, descriptor, on_screen)`` for a new track; ``add(track_id, descriptor)``
    for a later, better face of a known track. ``merges`` counts tracks that joined an existing
    person.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, privacy: bool = False):
        self.threshold = float(threshold)
        self.privacy = bool(privacy)
        self.person_of: dict[int, int] = {}
        self._desc: dict[int, list[tuple[float, list[float]]]] = {}  # person → [(quality, vector)]
        self._next = 1
        self.joined = 0

    def person(self, track_id: int) -> int:
        return self.person_of.get(int(track_id), -1)

    def _new_person(self) -> int:
        pid, self._next = self._next, self._next + 1
        return pid

    def _store(self, pid: int, q: float, vec) -> None:
        if self.privacy:
            return
        lst = self._desc.setdefault(pid, [])
        lst.append((float(q), [float(v) for v in np.asarray(vec, np.float32)]))
        if len(lst) > PER_PERSON:  # keep the first 8 (the reference faces) and the best of the rest
            head, rest = lst[:8], sorted(lst[8:], key=lambda t: -t[0])[: PER_PERSON - 8]
            lst[:] = head + rest

    def nearest(self, vec, exclude=()) -> tuple[int, float]:
        """(person, distance) of the nearest known person not in ``exclude``; (-1, inf) if none."""
        best, best_d = -1, math.inf
        v = np.asarray(vec, np.float32)
        for pid in sorted(self._desc):
            if pid in exclude:
                continue
            m = np.asarray([d for _, d in self._desc[pid]], np.float32)
            dd = np.sort(np.linalg.norm(m - v, axis=1))
            d = float(dd[: 3].mean())  # mean of the 3 nearest: one odd face neither joins nor splits alone
            if d < best_d:
                best, best_d = pid, d
        return best, best_d

    def assign(self, track_id: int, vec, quality: float = 1.0, on_screen=()) -> int:
        """The person of a new track. ``on_screen``: persons of the other tracks in this frame
        (one person is never two faces at once)."""
        tid = int(track_id)
        if tid in self.person_of:
            return self.person_of[tid]
        pid = -1
        if vec is not None and not self.privacy:
            cand, d = self.nearest(vec, exclude=set(on_screen))
            if cand >= 0 and d < self.threshold:
                pid = cand
                self.joined += 1
        if pid < 0:
            pid = self._new_person()
        self.person_of[tid] = pid
        if vec is not None:
            self._store(pid, quality, vec)
        return pid

    def add(self, track_id: int, vec, quality: float = 1.0) -> None:
        pid = self.person_of.get(int(track_id))
        if pid is not None and vec is not None:
            self._store(pid, quality, vec)

    @property
    def people(self) -> int:
        return self._next - 1

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"person_of": [[t, p] for t, p in sorted(self.person_of.items())], "next": self._next,
                "joined": self.joined,
                "desc": [[p, [[q, v] for q, v in lst]] for p, lst in sorted(self._desc.items())]}

    def load_state_dict(self, state: dict) -> None:
        self.person_of = {int(t): int(p) for t, p in state["person_of"]}
        self._next = int(state["next"])
        self.joined = int(state.get("joined", 0))
        self._desc = {int(p): [(float(q), [float(x) for x in v]) for q, v in lst] for p, lst in state["desc"]}


class ReidStage:
    """What :class:`~agender.tracked_analyzer.TrackingStage` calls after each frame's update.

    Per live track it keeps the clearest face crop seen so far (a small copy); when the track is
    :data:`MIN_FRAMES` frames old that crop is described and the track gets a provisional
    ``person_id`` online (:class:`PeopleAssigner`: what the live GUI shows). A track that later
    shows a face :data:`BETTER` times clearer is described again at :data:`AGAIN` frames (at most
    :data:`MAX_PER_TRACK` descriptors). Tracks shorter than :data:`MIN_FRAMES` (flickers, false
    detections) get no descriptor and no person. :meth:`final_map` clusters all described tracks
    at the end (average linkage on their mean descriptors; two tracks on screen in the same frame
    never join): the ``person_id`` of the finished per-frame table and of ``people.csv``.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, privacy: bool = False, embedder=None):
        self.threshold = float(threshold)
        self.assigner = PeopleAssigner(threshold, privacy=False)
        self.privacy = bool(privacy)
        self._embedder = embedder
        self._frames: dict[int, int] = {}  # frames seen per track
        self._count: dict[int, int] = {}  # descriptors taken per track
        self._descq: dict[int, float] = {}  # quality of the last described crop
        self._best: dict[int, tuple[float, np.ndarray]] = {}  # live track → (quality, crop) not yet described
        self.vectors: dict[int, list[list[float]]] = {}  # track → its descriptors
        self.covisible: set[tuple[int, int]] = set()
        self.cues: dict[int, tuple[float, float]] = {}  # track → its latest (p_male_avg, age_avg)
        self._tick = 0  # process() calls
        self._seen: dict[int, int] = {}  # pending track → the tick it was last seen
        self.described = 0
        self._final: dict[int, int] | None = None
        if self._embedder is None:  # load the model now (setup), not on the first track's 12th frame
            self._embedder = FaceEmbedder()

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = FaceEmbedder()
        return self._embedder

    def _crop(self, image, box) -> tuple[np.ndarray, np.ndarray]:
        """(crop of the face + 30 % margin, ≤ CROP_SIDE px; the face box inside it)."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h = x2 - x1, y2 - y1
        H, W = image.shape[:2]
        a, b = int(max(0, x1 - 0.3 * w)), int(max(0, y1 - 0.3 * h))
        c, d = int(min(W, x2 + 0.3 * w)), int(min(H, y2 + 0.3 * h))
        crop = image[b:d, a:c]
        s = CROP_SIDE / max(1, max(crop.shape[:2]))
        if s < 1:
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                              interpolation=cv2.INTER_AREA)
        else:
            s = 1.0
        return np.ascontiguousarray(crop), np.array([(x1 - a) * s, (y1 - b) * s, (x2 - a) * s, (y2 - b) * s], np.float32)

    def process(self, image, faces, quality) -> np.ndarray:
        """``person_id`` (N,) int64 for this frame's faces (provisional, online)."""
        n = len(faces)
        pids = np.full(n, -1, np.int64)
        self._tick += 1
        for t in [t for t in self._best if self._tick - self._seen.get(t, self._tick) > FORGET_AFTER]:
            del self._best[t]  # a track that ended before it was described: drop its crop
            self._seen.pop(t, None)
        if not n:
            return pids
        self._final = None
        quality = np.asarray(quality, np.float32).reshape(n) if quality is not None and len(quality) == n \
            else np.ones(n, np.float32)
        tids = [int(t) for t in faces.track_id]
        live = [t for t in tids if t >= 0]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                self.covisible.add((min(a, b), max(a, b)))
        todo = []
        for i, tid in enumerate(tids):
            if tid < 0:
                continue
            self._seen[tid] = self._tick
            pm, age = float(faces.p_male_avg[i]), float(faces.age_avg[i])
            if math.isfinite(pm) and math.isfinite(age):
                self.cues[tid] = (pm, age)
            k = self._frames.get(tid, 0) + 1
            self._frames[tid] = k
            q = float(quality[i])
            if self._count.get(tid, 0) < MAX_PER_TRACK:
                if q > self._best.get(tid, (-1.0, None))[0] and (not self._count.get(tid) or q > BETTER * self._descq[tid]):
                    self._best[tid] = (q, *self._crop(image, faces.xyxy[i]))
                if tid in self._best and (k == MIN_FRAMES or k in AGAIN):
                    todo.append(tid)
        for tid in todo:
            q, crop, box = self._best.pop(tid)
            self._seen.pop(tid, None)
            vec = self.embedder.embed(crop, [box])[0]
            self.described += 1
            self.vectors.setdefault(tid, []).append([float(v) for v in vec])
            self._count[tid] = self._count.get(tid, 0) + 1
            self._descq[tid] = max(q, 1e-6)
            if tid not in self.assigner.person_of:
                on = {self.assigner.person(t) for t in live if t != tid and self.assigner.person(t) >= 0}
                self.assigner.assign(tid, vec, q, on_screen=on)
            else:
                self.assigner.add(tid, vec, q)
        for i, tid in enumerate(tids):
            pids[i] = self.assigner.person(tid) if tid >= 0 else -1
        return pids

    def end_tracks(self, live_ids=()) -> None:
        """Forget the pending crops of tracks that ended (a shot cut ends them all)."""
        keep = set(int(t) for t in live_ids)
        for t in [t for t in self._best if t not in keep]:
            del self._best[t]
        self._seen = {t: v for t, v in self._seen.items() if t in self._best}

    def final_map(self) -> dict[int, int]:
        """track → person for every described track, from all descriptors (the end of a run);
        persons numbered 1, 2, … by their first track."""
        if self._final is None:
            self._final = cluster_tracks(self.vectors, self.covisible, self.cues, self.threshold)
        return self._final

    def people_state(self) -> dict:
        """What :func:`cluster_tracks` needs, as JSON (a cluster worker's share of a run:
        the driver joins the segments' states and clusters once, see agender.cluster)."""
        return {"vectors": [[t, v] for t, v in sorted(self.vectors.items())],
                "covisible": sorted([a, b] for a, b in self.covisible),
                "cues": [[t, list(c)] for t, c in sorted(self.cues.items())]}

    @property
    def merges(self) -> int:
        """Tracks that joined another track's person in :meth:`final_map`."""
        f = self.final_map()
        return len(f) - len(set(f.values()))

    def state_dict(self) -> dict:
        import base64

        def enc(c):
            q, crop, box = c
            return [q, list(crop.shape), base64.b64encode(crop.tobytes()).decode("ascii"), [float(v) for v in box]]

        return {"assigner": self.assigner.state_dict(), "frames": sorted(self._frames.items()),
                "count": sorted(self._count.items()), "descq": sorted(self._descq.items()),
                "best": [[t, enc(c)] for t, c in sorted(self._best.items())],
                "vectors": [[t, v] for t, v in sorted(self.vectors.items())],
                "covisible": sorted(self.covisible), "described": self.described,
                "cues": [[t, list(c)] for t, c in sorted(self.cues.items())],
                "tick": self._tick, "seen": sorted((t, v) for t, v in self._seen.items() if t in self._best)}

    def load_state_dict(self, state: dict) -> None:
        import base64

        self.assigner.load_state_dict(state["assigner"])
        self._frames = {int(t): int(c) for t, c in state["frames"]}
        self._count = {int(t): int(c) for t, c in state["count"]}
        self._descq = {int(t): float(q) for t, q in state["descq"]}
        self._best = {}
        for t, (q, shape, data, box) in state["best"]:
            crop = np.frombuffer(base64.b64decode(data), np.uint8).reshape(shape).copy()
            self._best[int(t)] = (float(q), crop, np.asarray(box, np.float32))
        self.vectors = {int(t): [[float(x) for x in v] for v in vs] for t, vs in state["vectors"]}
        self.covisible = {(int(a), int(b)) for a, b in state["covisible"]}
        self.cues = {int(t): (float(c[0]), float(c[1])) for t, c in state.get("cues", [])}
        self._tick = int(state.get("tick", 0))
        self._seen = {int(t): int(v) for t, v in state.get("seen", [])}
        self.described = int(state.get("described", 0))
        self._final = None

def cluster_tracks(vectors: dict[int, list], covisible: set[tuple[int, int]], cues: dict[int, tuple[float, float]],
                   threshold: float) -> dict[int, int]:
    """track → person: average-linkage clustering of the tracks' mean descriptors under
    ``threshold``; two tracks seen in the same frame (``covisible``) never join, nor two groups
    whose estimator cues differ too much (:func:`_unlike`). Persons are numbered 1, 2, … by
    their first track. Deterministic: the same inputs give the same map."""
    tracks = sorted(vectors)
    clusters: dict[int, list[int]] = {t: [t] for t in tracks}
    if tracks:
        m = np.stack([np.mean(np.asarray(vectors[t], np.float32), axis=0) for t in tracks])
        pair = np.linalg.norm(m[:, None, :] - m[None, :, :], axis=2).astype(np.float64)
        pos = {t: i for i, t in enumerate(tracks)}
        while True:
            best = None
            keys = sorted(clusters)
            for x, a in enumerate(keys):
                ia = [pos[t] for t in clusters[a]]
                for b in keys[x + 1:]:
                    ib = [pos[t] for t in clusters[b]]
                    d = float(pair[np.ix_(ia, ib)].mean())
                    if d < threshold and (best is None or d < best[0]) and not any(
                            (min(s, t), max(s, t)) in covisible for s in clusters[a] for t in clusters[b]) \
                            and not _unlike(cues, clusters[a], clusters[b]):
                        best = (d, a, b)
            if best is None:
                break
            _, a, b = best
            clusters[a] = sorted(clusters[a] + clusters.pop(b))
    out: dict[int, int] = {}
    for k, root in enumerate(sorted(clusters, key=lambda r: min(clusters[r])), start=1):
        for t in clusters[root]:
            out[t] = k
    return out


def _unlike(cues: dict[int, tuple[float, float]], a: list[int], b: list[int]) -> bool:
    """The estimator's own view of the two groups differs too much for one person: mean
    P(male) more than :data:`CUE_P` apart or mean age more than :data:`CUE_AGE` years."""
    def mean(ts):
        c = [cues[t] for t in ts if t in cues]
        return (sum(x for x, _ in c) / len(c), sum(y for _, y in c) / len(c)) if c else None

    ma, mb = mean(a), mean(b)
    if ma is None or mb is None:
        return False
    return abs(ma[0] - mb[0]) > CUE_P or abs(ma[1] - mb[1]) > CUE_AGE

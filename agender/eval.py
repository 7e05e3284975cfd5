"""Accuracy of an Analyzer on a labeled face set (``file,age,gender[,race]``).

Metrics, and why they are defined the way they are:

* ``age_mae`` — mean |predicted − true| age in years, over the faces that were *detected*
  (a missed face has no prediction to average);
* ``age_cs5`` — the share of *all* labeled faces whose age was predicted within 5 years, and
  ``gender_acc`` — the share of *all* labeled faces whose gender was right: a face the detector
  missed counts as wrong in both, so a detector that skips hard faces cannot flatter them;
* per group (age decade ``0-9`` … ``60-69``, ``70+``; gender; race): the same figures, and for
  each grouping the worst-minus-best **gap** (the bias a per-group table makes visible).

With ``no_detect`` every image is the face (face-chip sets); otherwise the detector runs on the
image and the largest face found is scored.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from agender.errors import AgenderError, SourceError
from agender.faces import Faces
from agender.io.sources import read_image

AGE_BINS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")


@dataclass
class LabeledSet:
    files: list[Path]
    age: np.ndarray  # float years
    gender: np.ndarray  # "male" / "female"
    race: np.ndarray | None  # str, or None when the labels have no race column


@dataclass
class Predictions:
    age: np.ndarray  # NaN where not detected
    p_male: np.ndarray  # NaN where not detected
    detected: np.ndarray  # bool
    unreadable: list[tuple[str, str]]


def read_labels(path: str | Path, images: str | Path | None = None, limit: int | None = None) -> LabeledSet:
    """Parse ``file,age,gender[,race]``; files are relative to ``images`` (default: beside the CSV)."""
    path = Path(path)
    if not path.is_file():
        raise AgenderError(f"{path}: no such labels file")
    root = Path(images) if images else path.parent
    files, ages, genders, races = [], [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        missing = {"file", "age", "gender"} - cols
        if missing:
            raise AgenderError(f"{path}: missing column(s) {', '.join(sorted(missing))}; need file,age,gender[,race]")
        has_race = "race" in cols
        for n, row in enumerate(reader, start=2):
            try:
                age = float(row["age"])
            except (TypeError, ValueError):
                raise AgenderError(f"{path}:{n}: age {row['age']!r} is not a number") from None
            g = (row["gender"] or "").strip().lower()
            g = {"m": "male", "f": "female", "0": "male", "1": "female"}.get(g, g)
            if g not in ("male", "female"):
                raise AgenderError(f"{path}:{n}: gender {row['gender']!r} is not male/female")
            files.append(root / row["file"])
            ages.append(age)
            genders.append(g)
            races.append((row.get("race") or "").strip() if has_race else "")
            if limit and len(files) >= limit:
                break
    if not files:
        raise AgenderError(f"{path}: no labeled rows")
    return LabeledSet(files, np.asarray(ages, np.float64), np.asarray(genders), np.asarray(races) if has_race else None)


def _largest(faces: Faces) -> Faces:
    if len(faces) <= 1:
        return faces
    return faces[[int(np.argmax(faces.area))]]


def predict(analyzer, files: Sequence[Path], *, no_detect: bool, chunk: int = 64,
            progress: Callable[[int], None] | None = None) -> Predictions:
    """Run the analyzer over ``files`` (``chunk`` images share one estimator batch)."""
    n = len(files)
    age = np.full(n, np.nan)
    p_male = np.full(n, np.nan)
    detected = np.zeros(n, bool)
    unreadable: list[tuple[str, str]] = []
    for start in range(0, n, chunk):
        idx, imgs, dets = [], [], []
        for i in range(start, min(n, start + chunk)):
            try:
                img = read_image(files[i])
            except SourceError as exc:
                unreadable.append((str(files[i]), str(exc)))
                continue
            h, w = img.shape[:2]
            d = Faces(xyxy=[[0, 0, w, h]], det_conf=[np.nan]) if no_detect else _largest(analyzer.detect(img))
            if len(d):
                idx.append(i)
                imgs.append(img)
                dets.append(d)
        if imgs:
            for i, f in zip(idx, analyzer.analyze_frames(imgs, detections=dets)):
                age[i], p_male[i], detected[i] = f.age[0], f.p_male[0], True
        if progress:
            progress(min(n, start + chunk) - start)
    return Predictions(age, p_male, detected, unreadable)


def age_bin(age: float) -> str:
    return AGE_BINS[min(int(age // 10), len(AGE_BINS) - 1)] if age >= 0 else AGE_BINS[0]


def _figures(true_age: np.ndarray, true_male: np.ndarray, pred_age: np.ndarray, pred_male: np.ndarray,
             detected: np.ndarray) -> dict[str, Any]:
    n = int(len(true_age))
    err = np.abs(pred_age - true_age)
    right = detected & ((pred_male >= 0.5) == true_male)
    within5 = detected & (err <= 5.0)
    return {
        "n": n,
        "detected": int(detected.sum()),
        "age_mae": _r(float(err[detected].mean())) if detected.any() else None,
        "age_cs5": _r(float(within5.sum()) / n) if n else None,
        "gender_acc": _r(float(right.sum()) / n) if n else None,
    }


def _r(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, 4)


def _gap(groups: dict[str, dict[str, Any]], key: str, higher_is_better: bool) -> dict[str, Any] | None:
    vals = {g: v[key] for g, v in groups.items() if v[key] is not None}
    if len(vals) < 2:
        return None
    worst = (min if higher_is_better else max)(vals, key=vals.get)
    best = (max if higher_is_better else min)(vals, key=vals.get)
    return {"gap": _r(abs(vals[worst] - vals[best])), "worst": worst, "best": best}


ABSTAIN_LEVELS = (0.6, 0.7, 0.8, 0.9, 0.95)


def gender_abstain(true_male: np.ndarray, p_male: np.ndarray, detected: np.ndarray,
                   levels: Sequence[float] = ABSTAIN_LEVELS) -> list[dict[str, Any]]:
    """Gender accuracy vs coverage when faces whose confidence ``max(p, 1 - p)`` is below a
    level are left without a gender (``--min-gender-conf``): for each level, the share of
    detected faces that keep a gender and the accuracy on those."""
    conf = np.maximum(p_male, 1.0 - p_male)
    right = (p_male >= 0.5) == true_male
    out = []
    n = int(detected.sum())
    for t in levels:
        kept = detected & (conf >= t)
        out.append({"min_gender_conf": t, "coverage": _r(float(kept.sum()) / n) if n else None,
                    "gender_acc": _r(float(right[kept].mean())) if kept.any() else None})
    return out


def metrics(labels: LabeledSet, pred: Predictions, min_gender_conf: float | None = None) -> dict[str, Any]:
    """Overall and per-group figures, plus the worst-group gaps (see the module docstring).

    ``gender_acc`` always counts every face (an abstained one is not right); with
    ``min_gender_conf`` the result also says how many faces kept a gender and how often it
    was right on those (``gender_coverage``, ``gender_acc_decided``)."""
    true_male = labels.gender == "male"
    out = _figures(labels.age, true_male, pred.age, pred.p_male, pred.detected)
    out["unreadable"] = len(pred.unreadable)
    out["gender_abstain"] = gender_abstain(true_male, pred.p_male, pred.detected)
    if min_gender_conf is not None:
        (row,) = gender_abstain(true_male, pred.p_male, pred.detected, [min_gender_conf])
        out["min_gender_conf"] = min_gender_conf
        out["gender_coverage"], out["gender_acc_decided"] = row["coverage"], row["gender_acc"]
    groupings: dict[str, np.ndarray] = {
        "age": np.asarray([age_bin(a) for a in labels.age]),
        "gender": labels.gender,
    }
    if labels.race is not None:
        groupings["race"] = labels.race
    order = {"age": list(AGE_BINS), "gender": ["female", "male"]}
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    gaps: dict[str, dict[str, Any]] = {}
    for name, keys in groupings.items():
        names = [k for k in order.get(name, sorted(set(keys))) if (keys == k).any()]
        groups[name] = {}
        for k in names:
            m = keys == k
            groups[name][k] = _figures(labels.age[m], true_male[m], pred.age[m], pred.p_male[m], pred.detected[m])
        gaps[name] = {
            "age_mae": _gap(groups[name], "age_mae", higher_is_better=False),
            "age_cs5": _gap(groups[name], "age_cs5", higher_is_better=True),
            "gender_acc": _gap(groups[name], "gender_acc", higher_is_better=True),
        }
    out["groups"] = groups
    out["gaps"] = gaps
    return out


def evaluate(analyzer, labels: LabeledSet, *, no_detect: bool, progress: Callable[[int], None] | None = None,
             min_gender_conf: float | None = None) -> dict[str, Any]:
    """Predict and score; the result is what ``agender eval --json`` prints."""
    pred = predict(analyzer, labels.files, no_detect=no_detect, progress=progress)
    res = metrics(labels, pred, min_gender_conf=min_gender_conf)
    res["estimator"] = analyzer.estimator.name
    res["detector"] = None if no_detect else getattr(analyzer.detector, "name", None)
    res["device"] = analyzer.device_used
    if pred.unreadable:
        res["unreadable_files"] = [f"{m}" for _, m in pred.unreadable[:20]]
    return res


def format_table(res: dict[str, Any]) -> str:
    """A human-readable table of :func:`evaluate`'s result."""
    def pct(v):
        return "    -" if v is None else f"{100 * v:5.1f}"

    def num(v):
        return "    -" if v is None else f"{v:5.2f}"

    lines = [
        f"estimator {res.get('estimator')}, detector {res.get('detector') or 'none (--no-detect)'}, "
        f"device {res.get('device')}",
        f"n {res['n']}, detected {res['detected']} ({pct(res['detected'] / max(1, res['n'])).strip()} %)"
        + (f", unreadable {res['unreadable']}" if res.get("unreadable") else ""),
        "",
        f"{'group':<18}{'n':>6}{'det':>6}{'age MAE':>9}{'CS@5 %':>8}{'gender %':>10}",
        f"{'all':<18}{res['n']:>6}{res['detected']:>6}{num(res['age_mae']):>9}{pct(res['age_cs5']):>8}"
        f"{pct(res['gender_acc']):>10}",
    ]
    for gname, groups in res["groups"].items():
        for k, v in groups.items():
            lines.append(f"{gname + ' ' + k:<18}{v['n']:>6}{v['detected']:>6}{num(v['age_mae']):>9}"
                         f"{pct(v['age_cs5']):>8}{pct(v['gender_acc']):>10}")
    lines.append("")
    lines.append("worst-group gaps:")
    for gname, g in res["gaps"].items():
        parts = []
        if g.get("age_mae"):
            parts.append(f"age MAE {g['age_mae']['gap']:.2f} y ({g['age_mae']['worst']} vs {g['age_mae']['best']})")
        if g.get("gender_acc"):
            parts.append(f"gender {100 * g['gender_acc']['gap']:.1f} pts "
                         f"({g['gender_acc']['worst']} vs {g['gender_acc']['best']})")
        if parts:
            lines.append(f"  {gname}: " + "; ".join(parts))
    return "\n".join(lines)

"""Gender on real video faces: ``agender analyze`` (default pipeline: detector crops from
video frames, tracking, re-estimation) on the shared clips, every face of a track whose actor
is known (``benchmarks/people_truth.json``, established by looking: docs/people.md) scored
against that actor's gender. The faces the kept-aside "in the wild" sets stand for — blur,
low resolution, pose — measured on frames, not chips; selection and reporting only.

Reported per clip and estimator: faces scored, gender accuracy of the raw per-face estimate
(``p_male``, on the faces whose gender was measured on that frame: with ``agender:g150`` a
track's gender is measured only now and then, :meth:`agender.tracking.Tracker.plan_gender`)
and of the track-smoothed one (``p_male_avg``, on every shown face), the raw one split by face width (< 80 px /
≥ 80 px), and per actor.

    python benchmarks/video_gender.py                                   # default estimator
    python benchmarks/video_gender.py --estimator agender:int8 cydral:int8 --json
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import people as bench  # noqa: E402  (the same truth and track → actor rule)

SMALL_PX = 80


def score(outdir: Path, stem: str, truth: dict) -> dict:
    rows = list(csv.DictReader(open(outdir / f"{stem}.csv", encoding="utf-8")))
    actors = bench.track_actors(rows, truth["points"])
    raw, smooth = collections.defaultdict(list), collections.defaultdict(list)
    for r in rows:
        actor = actors.get(int(r["face_id"])) if r.get("face_id") else None
        want = truth["cast"].get(actor or "", "")
        if not want:
            continue
        # smoothed: every shown face of the track (what a user reads), measured on this frame or not
        if r.get("p_male_avg"):
            smooth["all"].append((float(r["p_male_avg"]) >= 0.5) == (want == "male"))
        if not r.get("p_male"):  # raw: only the faces whose gender was measured on this frame
            continue
        size = "small" if float(r["x2"]) - float(r["x1"]) < SMALL_PX else "large"
        ok = (float(r["p_male"]) >= 0.5) == (want == "male")
        for key in ("all", size, f"actor:{actor}"):
            raw[key].append(ok)

    def rate(v):
        return None if not v else round(100.0 * sum(v) / len(v), 1)

    return {"clip": stem, "faces": len(raw["all"]), "gender_pct": rate(raw["all"]),
            "faces_shown": len(smooth["all"]), "gender_smoothed_pct": rate(smooth["all"]),
            f"small_lt{SMALL_PX}px": [len(raw["small"]), rate(raw["small"])],
            f"large_ge{SMALL_PX}px": [len(raw["large"]), rate(raw["large"])],
            "per_actor": {k.split(":", 1)[1]: [len(v), rate(v)] for k, v in sorted(raw.items()) if k.startswith("actor:")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=None)
    ap.add_argument("--estimator", nargs="*", default=[None], help="estimators to compare (default: the pipeline's)")
    ap.add_argument("--json", action="store_true", help="one JSON object per clip and estimator")
    args = ap.parse_args(argv)
    truth = json.loads(bench.TRUTH.read_text())
    clips = args.clips or list(truth)
    from agender.cli.main import main as cli

    for est in args.estimator:
        for clip in clips:
            with tempfile.TemporaryDirectory() as tmp:
                extra = [] if est is None else ["--estimator", est]
                rc = cli(["analyze", str(bench.VIDEOS / clip), "-o", tmp, "-q", "--no-reid", *extra])
                if rc:
                    print(f"{clip}: agender analyze failed ({rc})", file=sys.stderr)
                    return rc
                r = {"estimator": est or "default", **score(Path(tmp), Path(clip).stem, truth[clip])}
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{r['estimator']:>14s} {r['clip']}: {r['faces']} faces, gender {r['gender_pct']} % "
                      f"(track-smoothed {r['gender_smoothed_pct']} % of {r['faces_shown']}), small {r[f'small_lt{SMALL_PX}px']}, "
                      f"large {r[f'large_ge{SMALL_PX}px']}; per actor {r['per_actor']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

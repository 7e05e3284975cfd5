"""Counting people: ``agender analyze`` (default pipeline, tracking + re-identification) on the
shared clips, scored against the cast established by looking (docs/people.md).

Truth (``benchmarks/people_truth.json``): per clip the cast (name → gender; ``""`` = could not
tell) and labelled points ``[frame, x, y, name]`` (a face centre; ``"none"`` marks a false
detection). A track is the actor of the truth point that falls in one of its boxes on that
frame; a person is the actor of most of its labelled frames. Reported per clip:

- ``cast``: the true cast; ``tracks``; ``people``: persons counted (≥ 1 s on screen, as the
  sidecar counts them); ``within_20pct``: |people − cast| ≤ 20 % of the cast;
- ``merges``: extra actors inside counted persons (two actors in one person = 1);
  ``splits``: extra persons of one actor; ``noise``: counted persons with no actor (false faces);
- ``gender_right``: counted persons whose gender is their actor's, over those with an actor of
  known gender;
- ``reid_ms_per_frame``: time in the face-descriptor model ÷ analysed frames; ``descriptors``.

    python benchmarks/people.py                        # the three shared clips
    python benchmarks/people.py --reid-threshold 0.45 --clips tv_scene_720p.mp4
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("AGENDER_SHARED", REPO.parent / "shared")).resolve()
VIDEOS = SHARED / "data" / "videos"
TRUTH = Path(__file__).with_name("people_truth.json")


def track_actors(rows: list[dict], points: list) -> dict[int, str]:
    """face_id → actor, from the truth points inside its boxes."""
    by_frame = collections.defaultdict(list)
    for f, x, y, name in points:
        by_frame[int(f)].append((float(x), float(y), name))
    out: dict[int, str] = {}
    for r in rows:
        if not r.get("face_id"):
            continue
        for x, y, name in by_frame.get(int(r["frame"]), ()):
            if float(r["x1"]) <= x <= float(r["x2"]) and float(r["y1"]) <= y <= float(r["y2"]):
                out[int(r["face_id"])] = name
    return out


def score(outdir: Path, stem: str, truth: dict) -> dict:
    rows = list(csv.DictReader(open(outdir / f"{stem}.csv", encoding="utf-8")))
    people = list(csv.DictReader(open(outdir / f"{stem}.people.csv", encoding="utf-8")))
    side = json.loads((outdir / f"{stem}.json").read_text())
    summ = side.get("people_summary", {})
    min_s = float(summ.get("people_min_on_screen_s", 1.0))
    actors = track_actors(rows, truth["points"])
    frames = collections.Counter(int(r["face_id"]) for r in rows if r.get("face_id"))
    cast = truth["cast"]
    counted, merges, noise, per_actor, g_ok, g_n, detail = 0, 0, 0, collections.Counter(), 0, 0, []
    for p in people:
        if float(p["on_screen_s"]) < min_s:
            continue
        counted += 1
        votes = collections.Counter()
        for f in p["face_ids"].split(";"):
            a = actors.get(int(f))
            if a and a != truth.get("not_a_person", "none"):
                votes[a] += frames[int(f)]
        if not votes:
            noise += 1
            detail.append((p["person_id"], "-", p["gender"], ""))
            continue
        merges += len(votes) - 1
        actor = votes.most_common(1)[0][0]
        per_actor[actor] += 1
        want = cast.get(actor, "")
        if want:
            g_n += 1
            g_ok += p["gender"] == want
        detail.append((p["person_id"], actor, p["gender"], ("ok" if p["gender"] == want else ("?" if not want else "WRONG"))
                       + ("" if len(votes) == 1 else "  (frames: " + ", ".join(f"{a} {n}" for a, n in votes.most_common()) + ")")))
    splits = sum(n - 1 for n in per_actor.values())
    n_cast = len(cast)
    return {"clip": stem, "cast": n_cast, "tracks": len(frames), "people": counted,
            "within_20pct": abs(counted - n_cast) <= 0.2 * n_cast, "merges": merges, "splits": splits, "noise": noise,
            "actors_found": len(per_actor), "gender_right": f"{g_ok}/{g_n}", "frames": side.get("frames_analysed"),
            "persons": detail}


def sweep(stage, outdir: Path, stem: str, truth: dict, thresholds) -> dict:
    """Counts at other thresholds from the same descriptors (no new run): people on screen
    ≥ 1 s, merges, splits, noise, as :func:`score` counts them."""
    rows = list(csv.DictReader(open(outdir / f"{stem}.csv", encoding="utf-8")))
    side = json.loads((outdir / f"{stem}.json").read_text())
    fps = (side.get("video") or {}).get("fps") or 25.0
    frames = collections.Counter(int(r["face_id"]) for r in rows if r.get("face_id"))
    actors = track_actors(rows, truth["points"])
    out = {}
    saved = stage.threshold
    for th in thresholds:
        stage.threshold, stage._final = th, None
        groups = collections.defaultdict(list)
        for fid, pid in stage.final_map().items():
            groups[pid].append(fid)
        people = merges = noise = 0
        per_actor = collections.Counter()
        for fids in groups.values():
            if sum(frames[f] for f in fids) / fps < 1.0:
                continue
            people += 1
            votes = collections.Counter()
            for f in fids:
                if actors.get(f) and actors[f] != truth.get("not_a_person", "none"):
                    votes[actors[f]] += frames[f]
            if not votes:
                noise += 1
                continue
            merges += len(votes) - 1
            per_actor[votes.most_common(1)[0][0]] += 1
        out[th] = {"people": people, "merges": merges, "splits": sum(n - 1 for n in per_actor.values()), "noise": noise}
    stage.threshold, stage._final = saved, None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="*", default=None)
    ap.add_argument("--reid-threshold", type=float, default=None)
    ap.add_argument("--estimator", default=None, help="passed to agender analyze (default: the pipeline's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per clip")
    ap.add_argument("--sweep", type=float, nargs="*", default=None, metavar="D",
                    help="also re-cluster the same run's descriptors at these thresholds (counts, merges, splits)")
    args = ap.parse_args(argv)
    truth = json.loads(TRUTH.read_text())
    clips = args.clips or list(truth)

    import agender.reid as reid
    from agender.cli.main import main as cli

    spent = [0.0]
    orig = reid.FaceEmbedder.embed

    def timed(self, image, boxes):
        t0 = time.perf_counter()
        try:
            return orig(self, image, boxes)
        finally:
            spent[0] += time.perf_counter() - t0

    reid.FaceEmbedder.embed = timed
    stages = []
    orig_final = reid.ReidStage.final_map

    def keep(self):
        if self not in stages:
            stages.append(self)
        return orig_final(self)

    reid.ReidStage.final_map = keep
    results = []
    for clip in clips:
        with tempfile.TemporaryDirectory() as tmp:
            spent[0] = 0.0
            extra = [] if args.reid_threshold is None else ["--reid-threshold", str(args.reid_threshold)]
            extra += [] if args.estimator is None else ["--estimator", args.estimator]
            rc = cli(["analyze", str(VIDEOS / clip), "-o", tmp, "-q", *extra])
            if rc:
                print(f"{clip}: agender analyze failed ({rc})", file=sys.stderr)
                return rc
            r = score(Path(tmp), Path(clip).stem, truth[clip])
            if args.sweep and stages:
                r["sweep"] = sweep(stages[-1], Path(tmp), Path(clip).stem, truth[clip], args.sweep)
            stages.clear()
            r["reid_ms_per_frame"] = round(1000 * spent[0] / max(1, r["frames"] or 1), 2)
            side = json.loads((Path(tmp) / f"{Path(clip).stem}.json").read_text())
            r["pipeline_ms_per_frame"] = round(1000 * side["wall_s"] / max(1, side["frames_analysed"]), 2)
            results.append(r)
    for r in results:
        if args.json:
            print(json.dumps(r))
            continue
        print(f"{r['clip']}: cast {r['cast']}, tracks {r['tracks']}, people {r['people']} "
              f"({'within' if r['within_20pct'] else 'NOT within'} ±20 %), merges {r['merges']}, splits {r['splits']}, "
              f"noise {r['noise']}, gender right {r['gender_right']}, re-id {r['reid_ms_per_frame']} ms/frame "
              f"of {r['pipeline_ms_per_frame']} ms/frame")
        for pid, actor, g, ok in r["persons"]:
            print(f"    person {pid}: {actor} {g} {ok}")
        for th, row in (r.get("sweep") or {}).items():
            print(f"    threshold {th}: people {row['people']}, merges {row['merges']}, splits {row['splits']}, "
                  f"noise {row['noise']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

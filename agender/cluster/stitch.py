"""Stitching segment parts into the single table (and tracks file) of one input.

Without tracking the parts are concatenated after the header: the bytes a single-machine run
writes. With tracking each segment's tracker started fresh ``overlap`` frames before its
boundary; in those frames its boxes are the previous segment's boxes exactly (the detector's
output does not depend on the tracker), so a local id that shares a box with a previous
segment's id in the overlap *is* that track: it takes its global id. Other local ids get new
global ids, in the order they were created. See docs/cluster.md for what may still differ.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from agender.io.sinks.chips import chip_name
from agender.io.sinks.tracks import COLUMNS as TRACK_FILE_COLUMNS


def reconcile(metas: list[dict]) -> list[dict[int, int]]:
    """Per segment, local track id → global id. ``metas`` in segment order, each with
    ``boxes`` (``[frame, id, x1, y1, x2, y2]`` of its head and tail overlaps) and ``tracks``."""
    maps: list[dict[int, int]] = []
    next_id = 0
    prev_tail: dict[tuple, int] = {}
    for m in metas:
        votes: Counter = Counter()
        for f, tid, *box in m.get("boxes", []):
            key = (f, *box)
            if key in prev_tail:
                votes[(tid, prev_tail[key])] += 1
        local_ids = sorted({int(t["face_id"]) for t in m.get("tracks", [])} | {int(b[1]) for b in m.get("boxes", [])})
        mp: dict[int, int] = {}
        used: set[int] = set()
        for (tid, gid), _ in votes.most_common():  # one-to-one, most shared boxes first
            if tid not in mp and gid not in used:
                mp[tid], used_gid = gid, gid
                used.add(used_gid)
        if not maps:  # segment 0's tracker is the single-machine tracker: its ids stay as they are
            mp = {tid: tid for tid in local_ids}
        for tid in local_ids:
            if tid not in mp:
                next_id += 1
                mp[tid] = next_id
        next_id = max([next_id, *mp.values()])
        maps.append(mp)
        tail = m.get("tail_from")
        prev_tail = {(f, *box): mp[tid] for f, tid, *box in m.get("boxes", []) if tail is not None and f >= tail}
    return maps


def rewrite_ids(data: bytes, fmt: str, column: int | str, mp: dict[int, int]) -> bytes:
    """A headerless CSV (``column``: index of face_id) or JSONL part with its ids mapped."""
    if not data:
        return data
    if fmt == "jsonl":
        out = []
        for line in data.decode("utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("face_id") is not None:
                rec["face_id"] = mp.get(int(rec["face_id"]), rec["face_id"])
            out.append(json.dumps(rec, ensure_ascii=False))
        return ("\n".join(out) + "\n").encode("utf-8")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in csv.reader(io.StringIO(data.decode("utf-8"))):
        if row[column] != "":
            row[column] = str(mp.get(int(row[column]), row[column]))
        w.writerow(row)
    return buf.getvalue().encode("utf-8")


def merge_tracks(metas: list[dict], maps: list[dict[int, int]], stem: str) -> list[dict]:
    """The per-segment track accumulators (TracksSink states) merged per global id: first/last
    shown, frames and estimate sums add up; the means are weighted by the estimates behind them;
    the best chip is the best-scoring one (renamed to the global id)."""
    out: dict[int, dict] = {}
    for m, mp in zip(metas, maps):
        for a in m.get("tracks", []):
            gid = mp.get(int(a["face_id"]), int(a["face_id"]))
            chip = a.get("best_chip") or ""
            if chip:
                fr, sec = chip.split("_frame_", 1)[1].split("_second_", 1)
                chip = chip_name(stem, int(fr), float(sec.split("_face", 1)[0]), gid)
            b = out.get(gid)
            if b is None:
                out[gid] = {**a, "face_id": gid, "best_chip": chip}
                continue
            n1, n2 = b["n"], a["n"]
            for k in ("age_avg", "p_male_avg"):
                x, y = b.get(k), a.get(k)
                if x is None or y is None:
                    b[k] = y if x is None else x
                else:
                    b[k] = (x * n1 + y * n2) / (n1 + n2) if n1 + n2 else y
            b["first_s"], b["last_s"] = min(b["first_s"], a["first_s"]), max(b["last_s"], a["last_s"])
            if "first_frame" in a and "first_frame" in b:  # sink states written since the classes were one
                b["first_frame"], b["last_frame"] = min(b["first_frame"], a["first_frame"]), max(b["last_frame"], a["last_frame"])
            for k in ("frames", "n", "age_sum", "age_sq"):
                b[k] += a[k]
            if a["best_score"] > b["best_score"]:
                b["best_score"], b["best_chip"] = a["best_score"], chip
    return [out[k] for k in sorted(out)]


def tracks_file_bytes(accs: Iterable[dict], fmt: str, stem: str) -> bytes:
    """``<name>.tracks.csv``/``.jsonl`` from merged accumulators, through TracksSink's own writer."""
    from agender.io.sinks.tracks import TracksSink
    from agender.tracking import TrackSummary

    sink = TracksSink(Path("unused"), stem=stem, format=fmt)
    sink._acc = {int(a["face_id"]): TrackSummary.from_state(a) for a in accs}
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sink.records()).encode("utf-8")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRACK_FILE_COLUMNS)
    w.writerows(sink.rows())
    return buf.getvalue().encode("utf-8")


def merge_people(sink, metas: list[dict], maps: list[dict[int, int]]) -> dict[int, int]:
    """The whole run's people from the segments' shares (their ``people`` records), set on
    ``sink`` (the run's :class:`~agender.io.sinks.people.PeopleSink`, through its own
    checkpoint format): per global track id the written frames' sums add up; the descriptors
    of one global track are pooled, co-visible pairs and estimator cues mapped, and the tracks
    clustered once (:func:`agender.reid.cluster_tracks`, the single-machine rule). Returns
    face_id → person_id for the per-frame table."""
    from agender.reid import cluster_tracks

    tracks: dict[int, dict] = {}
    vectors: dict[int, list] = {}
    covisible: set[tuple[int, int]] = set()
    cues: dict[int, tuple[float, float]] = {}
    for m, mp in zip(metas, maps):
        share = m.get("people") or {}
        gid = lambda t: mp.get(int(t), int(t))  # noqa: E731
        for fid, d in share.get("tracks", []):
            old = tracks.get(gid(fid))
            tracks[gid(fid)] = dict(d) if old is None else {
                k: (min(old[k], v) if k == "first_s" else max(old[k], v) if k == "last_s" else old[k] + v)
                for k, v in d.items()}
        for tid, vs in share.get("vectors", []):
            vectors.setdefault(gid(tid), []).extend(vs)
        for a, b in share.get("covisible", []):
            ga, gb = gid(a), gid(b)
            if ga != gb:
                covisible.add((min(ga, gb), max(ga, gb)))
        for tid, c in share.get("cues", []):
            cues[gid(tid)] = (float(c[0]), float(c[1]))  # segments in order: the latest cue wins
    person_of = cluster_tracks(vectors, covisible, cues, float(sink.reid_info.get("threshold", 0.6)))
    sink.begin({"tracks": sorted(tracks.items())})
    sink.person_map = lambda: person_of
    return person_of

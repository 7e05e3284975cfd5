"""`agender analyze`: the output contract, resume, batches, URLs, and the runner's plug-in points.

Real models (../shared/models via AGENDER_MODELS), real clips and photos, a real HTTP server.
Kept short with --max-frames and the 270p clips.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _servers import file_server
from agender.cli.main import main
from agender.faces import Faces
from agender.io.sinks.base import Sink
from agender.pipeline import FrameStage
from conftest import FACES_DEV, PHOTOS, VIDEOS

CLASSROOM = VIDEOS / "classroom_270p.mp4"  # 45 frames @ 12 fps, many small faces
WALKING = VIDEOS / "walking_and_pause_270p.mp4"  # 41 frames @ 12 fps
TV = VIDEOS / "tv_scene_720p.mp4"  # 1972 frames @ 23.976 fps, 1280x720

HEADER = "frame,time_s,face,x1,y1,x2,y2,det_conf,age,age_std,gender,p_male"
IMAGE_HEADER = "file,face,x1,y1,x2,y2,det_conf,age,age_std,gender,p_male"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def sidecar(path: Path) -> dict:
    return json.loads(path.read_text())


def test_video_gives_one_row_per_face_per_frame_with_the_contract_columns(tmp_path):
    assert main(["analyze", str(WALKING), "-o", str(tmp_path), "--max-frames", "12", "-q"]) == 0
    out = tmp_path / "walking_and_pause_270p.csv"
    # tracked by default; person_id (re-identification) comes after the existing columns
    assert out.read_text().splitlines()[0] == HEADER + ",face_id,track_conf,age_avg,p_male_avg,gender_avg,person_id"
    table = rows(out)
    assert table, "the kiosk clip has faces in its first second"
    for r in table:
        assert 0 <= int(r["frame"]) < 12
        assert float(r["time_s"]) == pytest.approx(int(r["frame"]) / 12.0, abs=1e-3)
        assert r["gender"] in ("male", "female")
        assert 0.0 <= float(r["p_male"]) <= 1.0
        assert r["gender"] == ("male" if float(r["p_male"]) >= 0.5 else "female")
        assert 0 <= float(r["age"]) <= 100
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 270
    # faces of one frame are numbered 0..n-1
    by_frame: dict[str, list[int]] = {}
    for r in table:
        by_frame.setdefault(r["frame"], []).append(int(r["face"]))
    assert all(v == list(range(len(v))) for v in by_frame.values())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial or checkpoint left behind"


def test_sidecar_records_input_counts_timing_models_with_sha256_device_and_version(tmp_path):
    assert main(["analyze", str(CLASSROOM), "-o", str(tmp_path), "--max-frames", "6", "-q"]) == 0
    rec = sidecar(tmp_path / "classroom_270p.json")
    assert rec["complete"] is True
    assert rec["input"] == str(CLASSROOM)
    assert rec["frames_analysed"] == 6 and rec["frames_read"] == 6
    assert rec["faces"] == len(rows(tmp_path / "classroom_270p.csv"))
    assert rec["wall_s"] > 0 and rec["fps"] > 0
    assert rec["device"].startswith("CPU")
    assert rec["agender_version"]
    files = {Path(m["file"]).name: m["sha256"] for m in rec["models"]}
    assert files["face_detection_yunet.onnx"] == "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
    assert "age-v1.onnx" in files and len(files["age-v1.onnx"]) == 64
    assert set(rec["ms_per_frame"]) >= {"decode", "resize", "detect", "crop+preprocess", "estimate", "output"}


def test_all_still_images_go_to_one_images_csv_keyed_by_file(tmp_path):
    assert main(["analyze", str(PHOTOS), "-o", str(tmp_path), "-q"]) == 0
    out = tmp_path / "images.csv"
    assert out.read_text().splitlines()[0] == IMAGE_HEADER
    table = rows(out)
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() == ".jpg")
    assert {r["file"] for r in table} <= {str(p) for p in photos}
    assert len({r["file"] for r in table}) >= len(photos) - 1  # every photo has a face (one tiny one may miss)
    rec = sidecar(tmp_path / "images.json")
    assert rec["frames_analysed"] == rec["images"] == len(photos)
    assert rec["input"] == [str(PHOTOS)]


def test_no_detect_scores_each_face_chip_as_one_whole_image_face(tmp_path):
    chips = sorted(FACES_DEV.glob("3[0-4]_1_*.jpg"))[:6]
    assert main(["analyze", *map(str, chips), "-o", str(tmp_path), "--no-detect", "-q"]) == 0
    table = rows(tmp_path / "images.csv")
    assert [r["file"] for r in table] == [str(c) for c in chips]
    assert all(r["face"] == "0" and r["det_conf"] == "" for r in table), "no detector: empty det_conf cell"
    assert all((r["x1"], r["y1"], r["x2"], r["y2"]) == ("0.0", "0.0", "200.0", "200.0") for r in table)


def test_glob_input_expands_to_the_matching_files(tmp_path):
    pattern = str(FACES_DEV / "2[0-4]_0_0_*.jpg")
    assert main(["analyze", pattern, "-o", str(tmp_path), "--no-detect", "-q"]) == 0
    expected = sorted(str(p) for p in FACES_DEV.glob("2[0-4]_0_0_*.jpg"))
    assert [r["file"] for r in rows(tmp_path / "images.csv")] == expected


def test_jsonl_format_writes_the_same_fields_with_null_for_unknown(tmp_path):
    chips = sorted(FACES_DEV.glob("4[0-4]_0_*.jpg"))[:3]
    assert main(["analyze", *map(str, chips), "-o", str(tmp_path), "--no-detect", "--format", "jsonl", "-q"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "images.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    assert list(lines[0]) == IMAGE_HEADER.split(",")
    assert all(x["det_conf"] is None and x["gender"] in ("male", "female") for x in lines)


def test_fps_option_analyses_n_frames_per_second_of_video_time(tmp_path):
    assert main(["analyze", str(CLASSROOM), "-o", str(tmp_path), "--fps", "4", "-q"]) == 0
    rec = sidecar(tmp_path / "classroom_270p.json")
    assert rec["frames_analysed"] == 15  # 45 frames at 12 fps = 3.75 s → 4 per second, first of each slot
    frames = {int(r["frame"]) for r in rows(tmp_path / "classroom_270p.csv")}
    assert frames <= set(range(0, 45, 3))


def test_start_and_end_bound_the_analysed_time_range(tmp_path):
    assert main(["analyze", str(CLASSROOM), "-o", str(tmp_path), "--start", "1", "--end", "2", "-q"]) == 0
    assert sidecar(tmp_path / "classroom_270p.json")["frames_analysed"] == 12
    assert all(1.0 <= float(r["time_s"]) < 2.0 for r in rows(tmp_path / "classroom_270p.csv"))


def test_finished_input_is_skipped_on_rerun_and_redone_with_overwrite(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agender")
    args = ["analyze", str(CLASSROOM), "-o", str(tmp_path), "--max-frames", "4"]
    assert main(args) == 0
    first = (tmp_path / "classroom_270p.json").read_text()
    assert main(args) == 0
    assert (tmp_path / "classroom_270p.json").read_text() == first, "second run must not redo a finished input"
    assert "already done" in caplog.text
    assert main([*args, "--overwrite"]) == 0
    assert (tmp_path / "classroom_270p.json").read_text() != first


def test_one_failing_input_does_not_stop_the_batch_and_is_listed_at_the_end(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video\n")
    out = tmp_path / "out"
    rc = main(["analyze", str(bad), str(WALKING), str(tmp_path / "missing.mp4"), "-o", str(out),
               "--max-frames", "3", "-q"])
    assert rc == 1
    assert (out / "walking_and_pause_270p.csv").is_file()
    assert not (out / "broken.csv").exists()
    err = capsys.readouterr().err
    tail = err[err.index("inputs failed"):]
    assert "broken.mp4" in tail and "missing.mp4" in tail and "walking" not in tail
    assert "Traceback" not in err


def test_two_videos_with_the_same_name_get_separate_tables(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    os.symlink(CLASSROOM, a / "clip.mp4")
    os.symlink(WALKING, b / "clip.mp4")
    assert main(["analyze", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"),
                 "--max-frames", "2", "-q"]) == 0
    tables = [p.name for p in (tmp_path / "out").glob("*.csv") if not p.name.endswith((".tracks.csv", ".people.csv"))]
    assert sorted(tables) == ["b_clip.csv", "clip.csv"]


def test_video_over_http_from_a_local_server_is_analysed(tmp_path):
    with file_server(VIDEOS) as base:
        url = f"{base}/tv_scene_720p.mp4"
        assert main(["analyze", url, "-o", str(tmp_path), "--max-frames", "8", "-q"]) == 0
    rec = sidecar(tmp_path / "tv_scene_720p.json")
    assert rec["input"] == url and rec["frames_analysed"] == 8


@pytest.mark.parametrize("bad", [["--fps", "0"], ["--max-frames", "-3"], ["--detector", "nope"],
                                 ["--estimator", "nope:x"], ["--format", "xml"], ["--start", "5", "--end", "2"]])
def test_bad_option_values_are_usage_errors_with_exit_status_2(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(CLASSROOM), "-o", str(tmp_path), *bad])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_missing_output_option_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(CLASSROOM)])
    assert exc.value.code == 2


def test_sigkill_mid_video_then_rerun_gives_exactly_the_uninterrupted_rows(tmp_path):
    args = [str(TV), "--max-frames", "64", "--fps", "8", "--detect-width", "320", "--group-frames", "4",
            "--checkpoint-every", "0", "-q"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run([sys.executable, "-m", "agender", "analyze", *args, "-o", str(ref)], check=True)

    proc = subprocess.Popen([sys.executable, "-m", "agender", "analyze", *args, "-o", str(cut)])
    partial, ckpt = cut / ".tv_scene_720p.csv.partial", cut / ".tv_scene_720p.resume.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.is_file() and partial.is_file() and partial.read_text().count("\n") > 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "tv_scene_720p.csv").exists(), "a killed run must not leave a complete-looking table"

    subprocess.run([sys.executable, "-m", "agender", "analyze", *args, "-o", str(cut)], check=True)
    assert (cut / "tv_scene_720p.csv").read_bytes() == (ref / "tv_scene_720p.csv").read_bytes()
    rec = sidecar(cut / "tv_scene_720p.json")
    assert rec["resumed_from_frame"] and rec["resumed_from_frame"] > 0
    assert rec["frames_analysed"] == 64
    assert not partial.exists() and not ckpt.exists()


# -------------------------------------------------------------------- runner plug-in points
class EveryOtherFrameTracker(FrameStage):
    """A stand-in tracking stage: detects on even frames only and carries their boxes to the
    odd frames (which the estimator then scores), numbers faces, pre-fills an estimate for
    every face but the first (so the estimator must skip those), and writes a smoothed P(male)."""

    name = "every-other"
    resumable = True

    def __init__(self):
        self.boxes = None
        self.updates = []

    def should_detect(self, frame, want=None):
        return frame.index % 2 == 0

    def prepare(self, frame, faces):
        if faces is None:
            return Faces(xyxy=self.boxes.xyxy, det_conf=self.boxes.det_conf) if self.boxes is not None else None
        self.boxes = faces
        faces = Faces(xyxy=faces.xyxy, det_conf=faces.det_conf, track_id=np.arange(len(faces)))
        faces.age[1:], faces.p_male[1:] = 33.0, 0.5
        return faces

    def update(self, frame, faces, detected):
        self.updates.append((frame.index, detected))
        faces.p_male_avg = np.full(len(faces), 0.25, np.float32)
        faces.track_conf = np.ones(len(faces), np.float32)
        return faces


class CollectingSink(Sink):
    def __init__(self, path):
        self.path = path
        self.frames: list[int] = []
        self.closed = False

    def write(self, frame, faces):
        self.frames.append(frame.index)

    def close(self):
        self.closed = True
        Path(self.path).write_text(",".join(map(str, self.frames)))


def test_runner_stage_can_skip_detection_and_fill_track_columns_and_extra_sinks_see_every_frame(tmp_path):
    from agender.analyzer import Analyzer
    from agender.inputs import expand_inputs
    from agender.runner import RunOptions, Runner

    stages, sinks = [], []

    def stage(ctx):
        stages.append(EveryOtherFrameTracker())
        return stages[-1]

    def sink(ctx):
        sinks.append(CollectingSink(ctx.outdir / f"{ctx.item.name}.frames.txt"))
        return sinks[-1]

    analyzer = Analyzer(detector="yunet", estimator="cydral", device="cpu")
    opts = RunOptions(max_frames=10, group_frames=4,
                      extra_columns=("face_id", "track_conf", "age_avg", "p_male_avg", "gender_avg"))
    res = Runner(analyzer, tmp_path, opts, stage_factories=[stage], sink_factories=[sink]).run(
        expand_inputs([str(WALKING)]))[0]
    assert res.status == "done", res.error
    assert res.stats.frames_detected == 5 and res.stats.frames_analysed == 10
    assert stages[0].updates == [(i, i % 2 == 0) for i in range(10)]
    assert sinks[0].closed and sinks[0].frames == list(range(10))
    table = rows(tmp_path / "walking_and_pause_270p.csv")
    assert list(table[0]) == HEADER.split(",") + ["face_id", "track_conf", "age_avg", "p_male_avg", "gender_avg"]
    assert {r["gender_avg"] for r in table} == {"female"} and {r["age_avg"] for r in table} == {""}
    odd = [r for r in table if int(r["frame"]) % 2]
    even = {(r["frame"], r["face"]): r for r in table if int(r["frame"]) % 2 == 0}
    assert odd, "carried faces are written on skipped frames"
    for r in odd:  # same box as the frame before, estimated afresh on this frame
        assert r["x1"] == even[(str(int(r["frame"]) - 1), r["face"])]["x1"]
        assert r["face_id"] == ""
    assert any(r["face"] != "0" for r in even.values()), "the clip has frames with two faces"
    for r in even.values():  # pre-filled estimates are written as given, the rest are estimated
        assert r["face_id"] == r["face"]
        assert (r["age"] == "33.0") == (r["face"] != "0")
    assert "walking_and_pause_270p.frames.txt" in sidecar(tmp_path / "walking_and_pause_270p.json")["outputs"]


def _stderr_of(cmd: list[str], tty: bool) -> str:
    """Run ``cmd`` with stderr on a real pseudo-terminal (tty=True) or a pipe."""
    if not tty:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True).stderr
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait() == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_is_a_bar_with_frames_per_second_on_a_terminal_and_plain_lines_otherwise(tmp_path):
    cmd = [sys.executable, "-m", "agender", "analyze", str(WALKING), "--max-frames", "6", "--no-track"]
    on_tty = _stderr_of([*cmd, "-o", str(tmp_path / "a")], tty=True)
    assert "frame/s" in on_tty and "6/6" in on_tty and "\r" in on_tty
    piped = _stderr_of([*cmd, "-o", str(tmp_path / "b")], tty=False)
    assert "\r" not in piped and "%|" not in piped
    assert "walking_and_pause_270p.csv: 6 frames" in piped


def test_min_gender_conf_leaves_gender_empty_for_unsure_faces_and_keeps_the_rest(tmp_path):
    """The shared multi-face photos, once without and once with --min-gender-conf 0.9: the same
    faces; below 0.9 confidence gender and p_male are empty, above it they are unchanged."""
    def rows(out, *extra):
        assert main(["analyze", str(PHOTOS), "-o", str(out), "-q", *extra]) == 0
        return list(csv.DictReader(open(out / "images.csv", encoding="utf-8")))

    plain = rows(tmp_path / "plain")
    sure = rows(tmp_path / "sure", "--min-gender-conf", "0.9")
    assert len(plain) == len(sure) > 10
    kept = 0
    for a, b in zip(plain, sure):
        p = float(a["p_male"])
        assert a["gender"] in ("male", "female")
        if max(p, 1 - p) < 0.9:
            assert b["gender"] == "" and b["p_male"] == "" and b["age"] == a["age"]
        else:
            assert (b["gender"], b["p_male"]) == (a["gender"], a["p_male"])
            kept += 1
    assert 0 < kept < len(plain)  # the photos hold both sure and unsure faces
    side = json.loads((tmp_path / "sure" / "images.json").read_text())
    assert "0.9" in json.dumps(side)

"""Exports (MP4, ASS, chips tar + TSV, tracks summary) on the real clips, through the writers
directly and through ``agender analyze`` (which also checks the wiring of the options)."""
from __future__ import annotations

import csv
import math
import re
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import MODELS, VIDEOS
from agender.analyzer import Analyzer
from agender.cli.main import main
from agender.faces import Faces
from agender.io.sinks.ass import AssSink, ass_time
from agender.io.sinks.chips import TSV_COLUMNS, ChipsSink, chip_name
from agender.io.sinks.mp4 import Mp4Sink, available_codecs
from agender.io.sinks.tracks import COLUMNS as TRACK_SUMMARY_COLUMNS
from agender.io.sources import Frame, VideoSource
from agender.tracked_analyzer import TrackedAnalyzer

TV = VIDEOS / "tv_scene_720p.mp4"
WALKING = VIDEOS / "walking_and_pause_270p.mp4"
CLASSROOM = VIDEOS / "classroom_270p.mp4"


def _frames(path, **kw) -> list[Frame]:
    src = VideoSource(str(path), **kw)
    try:
        return list(src)
    finally:
        src.close()


def _decode(path) -> tuple[list[np.ndarray], av.video.stream.VideoStream | None, dict]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {"rate": vs.average_rate, "codec": vs.codec_context.name,
                "audio": [(s.codec_context.name, s.sample_rate) for s in c.streams.audio]}
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
    return frames, None, info


def _source_frame_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def analyzer(yunet_ssrnet) -> Analyzer:
    if not WALKING.is_file():
        pytest.skip(f"{WALKING} not present")
    return yunet_ssrnet


@pytest.fixture(scope="module")
def walking(analyzer) -> list[tuple[Frame, Faces]]:
    ta = TrackedAnalyzer(analyzer, fps=12)
    return [(fr, ta.process(fr)) for fr in _frames(WALKING)]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """``agender analyze`` on the first 4 s of the 720p clip at 6 fps (one cut at 118 = 4.92 s is
    outside; frames 0–95), with every export."""
    out = tmp_path_factory.mktemp("exports")
    rc = main(["analyze", str(TV), "-o", str(out), "--estimator", "ssrnet", "--detector", "yunet",
               "--models", str(MODELS), "--device", "cpu", "--end", "4", "--fps", "6", "--detect-every", "2",
               "--export-mp4", "--export-ass", "--export-chips", "-q"])
    assert rc == 0
    return out


# -- MP4 ------------------------------------------------------------------------------------
def test_mp4_export_has_the_source_frame_count_and_fps(tmp_path, walking):
    sink = Mp4Sink(tmp_path / "w.mp4", fps=12, source=WALKING)
    for fr, faces in walking:
        sink.write(fr, faces)
    assert not (tmp_path / "w.mp4").exists()  # nothing under the final name before close
    sink.close()
    frames, _, info = _decode(tmp_path / "w.mp4")
    assert len(frames) == _source_frame_count(WALKING) == 41
    assert info["rate"] == 12
    assert info["codec"] == ("h264" if {"libx264", "libopenh264"} & set(available_codecs()) else "mpeg4")
    assert frames[0].shape == walking[0][0].image.shape
    # the boxes are drawn: the annotated frame differs from the source inside the top of a face box
    x1, y1, x2, y2 = (int(v) for v in walking[10][1].xyxy[0])
    assert np.abs(frames[10][y1 - 2 : y1 + 2, x1:x2].astype(int) - walking[10][0].image[y1 - 2 : y1 + 2, x1:x2]).mean() > 20
    assert not list(tmp_path.glob(".*partial*"))


def test_mp4_export_fills_frames_the_analysis_skipped_from_the_source(tmp_path, analyzer):
    """--fps keeps 1 frame in 4: the other 30 come from the source, drawn with the last boxes."""
    ta = TrackedAnalyzer(analyzer, fps=3)
    sink = Mp4Sink(tmp_path / "w.mp4", fps=12, source=WALKING)
    kept = _frames(WALKING, every=4)
    for fr in kept:
        sink.write(fr, ta.process(fr))
    sink.close()
    out, _, _ = _decode(tmp_path / "w.mp4")
    src = [fr.image for fr in _frames(WALKING)]
    assert len(out) == len(src) == 41
    diff_same = [np.abs(out[k].astype(int) - src[k]).mean() for k in range(41) if k % 4]
    diff_held = [np.abs(out[k].astype(int) - src[k - k % 4]).mean() for k in range(41) if k % 4]
    assert np.mean(diff_same) < np.mean(diff_held)  # the real frame k, not a repeat of frame k - k%4
    assert max(diff_same) < 12


def test_mp4_export_of_a_720p_range_keeps_frame_count_and_ntsc_rate(cli_run):
    frames, _, info = _decode(cli_run / "tv_scene_720p.annotated.mp4")
    assert len(frames) == math.ceil(4 * 24000 / 1001)  # frames 0..95 of the 4 s range
    assert info["rate"] == Fraction(24000, 1001)
    assert frames[0].shape == (720, 1280, 3)


def test_mp4_export_copies_the_audio_stream(tmp_path, walking):
    clip = tmp_path / "with_audio.mp4"
    _write_clip_with_audio(clip, [fr.image for fr, _ in walking], fps=12)
    sink = Mp4Sink(tmp_path / "out.mp4", fps=12, source=clip)
    for k, (fr, faces) in enumerate(walking):
        sink.write(Frame(k, k / 12, fr.image), faces)
    sink.close()
    assert sink.audio_note == ""
    frames, _, info = _decode(tmp_path / "out.mp4")
    assert len(frames) == 41
    assert info["audio"] == [("aac", 44100)]
    with av.open(str(clip)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        n_in = sum(1 for p in a.demux(a.streams.audio[0]) if p.size)
        n_out = sum(1 for p in b.demux(b.streams.audio[0]) if p.size)
    assert n_out >= n_in - 2  # packets past the last video frame may be cut


def test_mp4_writer_records_a_live_loop_without_a_source(tmp_path, walking):
    """The GUI's Record: frames as they come, no source file, no gaps to fill."""
    sink = Mp4Sink(tmp_path / "rec.mp4", fps=12)
    for fr, faces in walking[:10]:
        sink.write(fr, faces)
    sink.close()
    frames, _, info = _decode(tmp_path / "rec.mp4")
    assert len(frames) == 10 and info["audio"] == []


def test_mp4_writer_falls_back_to_mpeg4_and_pads_odd_sizes(tmp_path):
    sink = Mp4Sink(tmp_path / "odd.mp4", fps=10, codec="mpeg4")
    img = np.full((99, 161, 3), 128, np.uint8)
    for k in range(5):
        sink.write(Frame(k, k / 10, img), Faces())
    sink.close()
    frames, _, info = _decode(tmp_path / "odd.mp4")
    assert info["codec"] == "mpeg4" and len(frames) == 5 and frames[0].shape == (100, 162, 3)


def test_mp4_abort_leaves_nothing(tmp_path, walking):
    sink = Mp4Sink(tmp_path / "x.mp4", fps=12)
    sink.write(*walking[0])
    sink.abort()
    assert list(tmp_path.iterdir()) == []


# -- ASS ------------------------------------------------------------------------------------
def parse_ass(text: str) -> dict:
    """A small ASS reader: sections, the Script Info fields, and Dialogue events as dicts."""
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if re.fullmatch(r"\[.+\]", line.strip()):
            cur = line.strip()[1:-1]
            sections[cur] = []
        elif line.strip() and cur is not None:
            sections[cur].append(line)
    info = dict(line.split(": ", 1) for line in sections["Script Info"] if ": " in line)
    fmt = [f.strip() for f in sections["Events"][0].split(":", 1)[1].split(",")]
    events = []
    for line in sections["Events"][1:]:
        kind, rest = line.split(": ", 1)
        assert kind == "Dialogue"
        values = rest.split(",", len(fmt) - 1)
        ev = dict(zip(fmt, values))
        ev["start_s"], ev["end_s"] = (_secs(ev["Start"]), _secs(ev["End"]))
        events.append(ev)
    styles_fmt = [f.strip() for f in sections["V4+ Styles"][0].split(":", 1)[1].split(",")]
    styles = [dict(zip(styles_fmt, (v.strip() for v in s.split(":", 1)[1].split(",")))) for s in sections["V4+ Styles"][1:]]
    return {"info": info, "events": events, "styles": styles}


def _secs(t: str) -> float:
    h, m, s = t.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_ass_file_parses_and_its_events_match_the_tracks(cli_run):
    ass = parse_ass((cli_run / "tv_scene_720p.ass").read_text(encoding="utf-8"))
    rows = _read_csv(cli_run / "tv_scene_720p.csv")
    tracks = _read_csv(cli_run / "tv_scene_720p.tracks.csv")
    assert ass["info"]["PlayResX"] == "1280" and ass["info"]["PlayResY"] == "720"
    assert [s["Name"] for s in ass["styles"]] == ["Face"]
    events = ass["events"]
    assert {int(e["Name"]) for e in events} == {int(t["face_id"]) for t in tracks}
    assert len(events) < len(rows)  # segments, not one event per face per frame
    by_id = {}
    for e in events:
        by_id.setdefault(int(e["Name"]), []).append(e)
    for t in tracks:
        evs = sorted(by_id[int(t["face_id"])], key=lambda e: e["start_s"])
        assert evs[0]["start_s"] == pytest.approx(float(t["first_s"]), abs=0.011)
        assert evs[-1]["end_s"] <= float(t["last_s"]) + 0.5  # + one analysed frame at 6 fps
        for a, b in zip(evs, evs[1:]):
            assert a["end_s"] <= b["start_s"] + 1e-6  # one box per track at a time
    # each event's anchor is the face box of the frame it starts on
    first_box = {}
    for r in rows:
        first_box.setdefault((int(r["face_id"]), round(float(r["time_s"]), 2)), (float(r["x1"]), float(r["y1"])))
    for e in events:
        x, y = map(int, re.search(r"\\(?:pos|move)\((-?\d+),(-?\d+)", e["Text"]).groups())
        key = min((k for k in first_box if k[0] == int(e["Name"])), key=lambda k: abs(k[1] - e["start_s"]))
        assert (x, y) == pytest.approx(first_box[key], abs=1.0)
        assert re.search(r"\\p1\}m 0 0 l \d+ 0 \d+ \d+ 0 \d+\{\\p0", e["Text"])
        assert re.search(r"#\d+ [MF?] \d+$", e["Text"])


def test_ass_makes_one_event_per_straight_segment():
    sink = AssSink(Path("/nonexistent/x.ass"), fps=10, width=640, height=360)
    img = np.zeros((360, 640, 3), np.uint8)

    def face(x, age=30.0):
        return Faces(xyxy=[[x, 50, x + 40, 100]], det_conf=[0.9], age=[age], p_male=[0.9], track_id=[7],
                     age_avg=[age], p_male_avg=[0.9])

    xs = [10, 14, 18, 22, 26, 200, 200, 200]  # a steady move, a jump, a stop
    for k, x in enumerate(xs):
        sink.write(Frame(k, k / 10, img), face(x))
    sink.write(Frame(8, 0.8, img), face(200, age=44.0))  # the label changes
    sink.write(Frame(9, 0.9, img), Faces())  # the face leaves
    texts = [e[3] for e in sorted(sink.events)]
    assert len(texts) == 3
    assert "\\move(10,50,26,50,0,400)" in texts[0] and texts[0].endswith("#7 M 30")
    assert "\\pos(200,50)" in texts[1] and texts[2].endswith("#7 M 44")
    assert [(round(s, 2), round(e, 2)) for s, e, _, _ in sorted(sink.events)] == [(0.0, 0.5), (0.5, 0.8), (0.8, 0.9)]


def test_ass_times_round_down_to_centiseconds():
    assert ass_time(0.41708) == "0:00:00.41"
    assert ass_time(3723.5) == "1:02:03.50"


# -- chips ----------------------------------------------------------------------------------
def test_chip_tar_opens_and_matches_its_tsv(cli_run):
    tar_path, tsv_path = cli_run / "tv_scene_720p.chips.tar", cli_run / "tv_scene_720p.chips.tsv"
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
        images = {m.name: cv2.imdecode(np.frombuffer(tar.extractfile(m).read(), np.uint8), cv2.IMREAD_COLOR)
                  for m in members}
    tsv = [line.split("\t") for line in tsv_path.read_text().splitlines()]
    assert [r[0] for r in tsv] == [m.name for m in members]
    assert all(len(r) == len(TSV_COLUMNS) for r in tsv)
    assert all(img is not None and min(img.shape[:2]) >= 16 for img in images.values())
    rows = {(int(r["frame"]), int(r["face_id"])): r for r in _read_csv(cli_run / "tv_scene_720p.csv")}
    for r in tsv:
        rec = dict(zip(TSV_COLUMNS, r))
        assert rec["chip"] == chip_name("tv_scene_720p", int(rec["frame"]), float(rec["time_s"]), int(rec["face_id"]))
        row = rows[(int(rec["frame"]), int(rec["face_id"]))]  # the chip's face is in the CSV, same box
        assert [float(rec[k]) for k in ("x1", "y1", "x2", "y2")] == [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        assert float(rec["age"]) == pytest.approx(float(row["age"]), abs=0.01)
        assert 0.0 <= float(rec["p_male"]) <= 1.0
    best = {t["best_chip"] for t in _read_csv(cli_run / "tv_scene_720p.tracks.csv")}
    assert best <= set(images)


def test_chip_names_follow_trifle_face():
    assert chip_name("cnn-sample", 4575, 183.04, 1) == "cnn-sample_frame_4575_second_183_face1.jpg"


def test_chips_for_untracked_faces_are_all_kept(tmp_path, analyzer):
    """Without tracking (image sets, --no-track) every face with an estimate gets a chip."""
    frame = _frames(WALKING, max_frames=1)[0]
    faces = analyzer(frame.image)
    sink = ChipsSink(tmp_path / "w.chips.tar", stem="w")
    sink.write(frame, faces)
    sink.close()
    with tarfile.open(tmp_path / "w.chips.tar") as tar:
        names = [m.name for m in tar.getmembers()]
    assert names == [chip_name("w", 0, 0.0, i) for i in range(len(faces))] and len(faces) == 3


def test_image_set_chips_are_named_after_the_images(tmp_path):
    photos = VIDEOS.parent / "photos"
    rc = main(["analyze", str(photos), "-o", str(tmp_path), "--estimator", "ssrnet", "--detector", "yunet",
               "--models", str(MODELS), "--device", "cpu", "--export-chips", "-q"])
    assert rc == 0
    table = _read_csv(tmp_path / "images.csv")
    tsv = [line.split("\t") for line in (tmp_path / "images.chips.tsv").read_text().splitlines()]
    with tarfile.open(tmp_path / "images.chips.tar") as tar:
        assert [m.name for m in tar.getmembers()] == [r[0] for r in tsv]
    assert len(tsv) == len(table)  # untracked: every face of every image
    stems = {Path(r["file"]).stem for r in table}
    assert all(r[0].rsplit("_face", 1)[0] in stems for r in tsv)
    assert "face_id" not in table[0]  # image sets are not tracked


# -- tracks summary -------------------------------------------------------------------------
def test_tracks_csv_summarises_each_face_id_of_the_table(cli_run):
    rows = _read_csv(cli_run / "tv_scene_720p.csv")
    with open(cli_run / "tv_scene_720p.tracks.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header) == TRACK_SUMMARY_COLUMNS
    tracks = _read_csv(cli_run / "tv_scene_720p.tracks.csv")
    assert sorted(int(t["face_id"]) for t in tracks) == sorted({int(r["face_id"]) for r in rows})
    for t in tracks:
        mine = [r for r in rows if r["face_id"] == t["face_id"]]
        assert int(t["frames"]) == len(mine)
        assert float(t["first_s"]) == pytest.approx(float(mine[0]["time_s"]), abs=1e-3)
        assert float(t["last_s"]) == pytest.approx(float(mine[-1]["time_s"]), abs=1e-3)
        assert float(t["age_mean"]) == pytest.approx(float(mine[-1]["age_avg"]), abs=0.01)
        assert t["gender"] == mine[-1]["gender_avg"]
        assert float(t["age_std"]) >= 0


def test_analyze_table_has_the_tracking_columns_after_the_face_columns(cli_run):
    with open(cli_run / "tv_scene_720p.csv", newline="") as fh:
        header = next(csv.reader(fh))
    # person_id (re-identification) is appended after the existing tracking columns, which keep their order
    assert header[-6:] == ["face_id", "track_conf", "age_avg", "p_male_avg", "gender_avg", "person_id"]
    assert header.index("p_male") < header.index("face_id")


def test_no_track_with_detect_every_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(WALKING), "-o", str(tmp_path), "--no-track", "--detect-every", "3"])
    assert exc.value.code == 2
    assert "need tracking" in capsys.readouterr().err


def test_no_track_writes_neither_ids_nor_tracks_file(tmp_path):
    rc = main(["analyze", str(WALKING), "-o", str(tmp_path), "--estimator", "ssrnet", "--detector", "yunet",
               "--models", str(MODELS), "--device", "cpu", "--no-track", "--max-frames", "3", "-q"])
    assert rc == 0
    with open(tmp_path / "walking_and_pause_270p.csv", newline="") as fh:
        assert "face_id" not in next(csv.reader(fh))
    assert not (tmp_path / "walking_and_pause_270p.tracks.csv").exists()


# -- helpers --------------------------------------------------------------------------------
def _write_clip_with_audio(path: Path, images: list[np.ndarray], fps: int) -> None:
    """A real H.264 + AAC file (the shared clips have no audio track)."""
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264" if "libx264" in available_codecs() else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=44100)
        for k, img in enumerate(images):
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts = k
            for p in vs.encode(vf):
                out.mux(p)
        n = aus.codec_context.frame_size or 1024
        t = np.arange(int(44100 * len(images) / fps)) / 44100
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
        for k in range(0, len(tone) - n + 1, n):
            af = av.AudioFrame.from_ndarray(np.stack([tone[k : k + n]] * 2), format="fltp", layout="stereo")
            af.sample_rate, af.pts = 44100, k
            for p in aus.encode(af):
                out.mux(p)
        for s in (vs, aus):
            for p in s.encode():
                out.mux(p)


def test_clip_with_audio_helper_makes_a_real_audio_track(tmp_path, walking):
    _write_clip_with_audio(tmp_path / "a.mp4", [fr.image for fr, _ in walking[:12]], fps=12)
    with av.open(str(tmp_path / "a.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in c.decode(audio=0)) > 30


# -- tracks file: one accumulator -------------------------------------------------------------
def test_tracks_file_from_a_sink_state_is_the_sinks_own_file_and_age_std_is_the_documented_rms(tmp_path):
    """TracksSink and the cluster stitcher share TrackSummary: a file rebuilt from a sink's
    checkpoint is the sink's own file, an old (pre-unification) checkpoint still loads, and
    ``age_std`` is the RMS of the raw fresh ages around ``age_mean`` (docs/tracking.md)."""
    from agender.cluster.stitch import merge_tracks, tracks_file_bytes
    from agender.io.sinks.tracks import TracksSink

    sink = TracksSink(tmp_path / "x.tracks.csv", stem="x")
    img = np.zeros((120, 160, 3), np.uint8)
    ages = [30.0, 34.0, float("nan"), 38.0]  # NaN: tracked, not re-estimated
    for k, age in enumerate(ages):
        sink.write(Frame(k, k / 10, img), Faces(xyxy=[[10, 10, 60, 70]], det_conf=[0.9], age=[age], p_male=[0.8],
                                                 track_id=[3], age_avg=[33.0], p_male_avg=[0.8]))
    state = sink.checkpoint()
    sink.close()
    own = (tmp_path / "x.tracks.csv").read_bytes()
    assert tracks_file_bytes(merge_tracks([state], [{}], "x"), "csv", "x") == own
    row = dict(zip(TRACK_SUMMARY_COLUMNS, own.decode().splitlines()[1].split(",")))
    raw = np.array([30.0, 34.0, 38.0])
    assert row["frames"] == "4" and float(row["age_std"]) == pytest.approx(math.sqrt(((raw - 33.0) ** 2).mean()), abs=0.01)
    old = {"tracks": [{k: v for k, v in t.items() if k in ("face_id", "first_s", "last_s", "frames", "n", "age_sum",
                                                            "age_sq", "age_avg", "p_male_avg", "best_score", "best_chip")}
                      for t in state["tracks"]]}
    resumed = TracksSink(tmp_path / "y.tracks.csv", stem="x")
    resumed.begin(old)
    assert resumed.rows() == sink.rows()

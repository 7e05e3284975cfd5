"""Re-identification (agender.reid) and the people outputs, on real faces from the shared
clips and photos (the cast of tv_scene_720p.mp4 was labelled by eye: docs/people.md)."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agender.reid import DEFAULT_THRESHOLD, FaceEmbedder, PeopleAssigner, ReidStage, distance, model_paths
from _fakes import whole_and_resumed
from conftest import MODELS, VIDEOS

REPO = Path(__file__).resolve().parents[1]
TV = VIDEOS / "tv_scene_720p.mp4"
PHOTOS = VIDEOS.parent / "photos"
TRUTH = json.loads((REPO / "benchmarks" / "people_truth.json").read_text())

pytestmark = pytest.mark.skipif(not TV.is_file(), reason="needs the shared clips")


@pytest.fixture(scope="module")
def analyzer():
    from agender.analyzer import Analyzer

    return Analyzer(models=[MODELS])


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder()


def _frame(n: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(TV))
    cap.set(cv2.CAP_PROP_POS_FRAMES, n)
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


def _face(analyzer, embedder, img, point=None) -> np.ndarray:
    faces = analyzer.detect(img)
    if point is None:
        i = int(np.argmax(faces.area))
    else:
        (i,) = [k for k, b in enumerate(faces.xyxy) if b[0] <= point[0] <= b[2] and b[1] <= point[1] <= b[3]][:1]
    return embedder.embed(img, faces.xyxy[i:i + 1])[0]


def _cast_face(analyzer, embedder, actor: str, frame: int) -> np.ndarray:
    (pt,) = [p for p in TRUTH["tv_scene_720p.mp4"]["points"] if p[3] == actor and p[0] == frame]
    return _face(analyzer, embedder, _frame(frame), (pt[1], pt[2]))


def test_model_files_are_the_ones_the_manifest_names():
    import tomllib

    data = tomllib.loads((REPO / "agender" / "models" / "manifests" / "face_reid.toml").read_text())
    by_name = {Path(m["file"]).name: m for m in data["package_model"]}
    for path in model_paths():
        m = by_name[path.name]
        assert path.stat().st_size == m["size"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == m["sha256"]
        assert m["license"].startswith("CC0")


def test_same_person_in_two_shots_joins(analyzer, embedder):
    # the father at 12.9 s and at 34 s, the mother at 28.6 s and 68.6 s: different shots, other poses
    assert distance(_cast_face(analyzer, embedder, "dad", 310), _cast_face(analyzer, embedder, "dad", 815)) < DEFAULT_THRESHOLD
    assert distance(_cast_face(analyzer, embedder, "mom", 685), _cast_face(analyzer, embedder, "mom", 1645)) < DEFAULT_THRESHOLD


def test_different_people_do_not_join(analyzer, embedder):
    dad = _cast_face(analyzer, embedder, "dad", 310)
    mom = _cast_face(analyzer, embedder, "mom", 685)
    grandma = _cast_face(analyzer, embedder, "grandma", 612)
    for a, b in ((dad, mom), (dad, grandma), (mom, grandma)):
        assert distance(a, b) > DEFAULT_THRESHOLD
    knuth = _face(analyzer, embedder, cv2.imread(str(PHOTOS / "knuth224.jpg")))
    diallo = _face(analyzer, embedder, cv2.imread(str(PHOTOS / "diallo224.jpg")))
    knuth_big = _face(analyzer, embedder, cv2.imread(str(PHOTOS / "dknuth.jpg")))
    assert distance(knuth, diallo) > DEFAULT_THRESHOLD
    assert distance(knuth, knuth_big) < DEFAULT_THRESHOLD  # the same man at 224 px and full size


def test_assigner_never_joins_two_faces_on_screen_together():
    a = PeopleAssigner(0.5)
    v = np.zeros(128, np.float32)
    v[0] = 1
    p1 = a.assign(1, v)
    assert a.assign(2, v, on_screen={p1}) != p1  # identical descriptor, but both are in this frame
    assert a.assign(3, v) == p1  # a later track of the same face joins


def test_final_clusters_join_near_tracks_and_keep_covisible_ones_apart():
    st = ReidStage(0.5, embedder=object())
    e = np.eye(128, dtype=np.float32)
    near = e[0] * 0.9 + e[1] * 0.1
    st.vectors = {1: [list(e[0])], 2: [list(near)], 3: [list(e[5])], 4: [list(e[0])]}
    st.covisible = {(1, 4)}
    m = st.final_map()
    assert m[1] == m[2] and m[3] != m[1] and m[4] != m[1]
    assert sorted(set(m.values())) == [1, 2, 3] and m[1] == 1  # numbered by first track


def test_stage_state_round_trips_exactly(analyzer, embedder):
    from agender.io.sources import Frame

    img = _frame(310)
    faces = analyzer.detect(img)
    faces = type(faces)(xyxy=faces.xyxy, det_conf=faces.det_conf, track_id=np.arange(len(faces)))
    st = ReidStage(embedder=embedder)
    for k in range(9):
        st.process(img, faces, np.full(len(faces), 0.5, np.float32))
    state = json.loads(json.dumps(st.state_dict()))
    st2 = ReidStage(embedder=embedder)
    st2.load_state_dict(state)
    for k in range(4):
        a = st.process(img, faces, np.full(len(faces), 0.5, np.float32))
        b = st2.process(img, faces, np.full(len(faces), 0.5, np.float32))
        assert list(a) == list(b)
    assert st.vectors == st2.vectors and st.final_map() == st2.final_map()
    assert st.described == len(faces)  # once per track (at its 12th frame), not every frame
    del Frame


def test_privacy_keeps_no_descriptor_outside_memory():
    from agender.tracked_analyzer import TrackingStage

    assert TrackingStage(24).resumable
    st = TrackingStage(24, privacy=True)
    assert not st.resumable  # so the runner writes no checkpoint (no descriptor, no crop on disk)


def test_person_ids_are_rewritten_from_the_final_map(tmp_path):
    from agender.io.sinks.table import rewrite_person_ids

    p = tmp_path / "t.csv"
    p.write_text("frame,face_id,person_id\n0,3,7\n0,,\n1,4,8\n")
    rewrite_person_ids(p, "csv", {3: 1, 4: 1})
    assert p.read_text() == "frame,face_id,person_id\n0,3,1\n0,,\n1,4,1\n"
    j = tmp_path / "t.jsonl"
    j.write_text('{"frame": 0, "face_id": 3, "person_id": 7}\n{"frame": 0, "face_id": 9, "person_id": null}\n')
    rewrite_person_ids(j, "jsonl", {3: 2})
    assert j.read_text() == '{"frame": 0, "face_id": 3, "person_id": 2}\n{"frame": 0, "face_id": 9, "person_id": null}\n'




def test_interrupted_run_resumes_to_the_same_people_and_person_ids(analyzer, tmp_path):
    from agender.exports import TrackOptions
    from agender.runner import RunOptions

    # frames 0-119 of the clip hold two shots with 5 tracks; checkpoints after every group
    opts = RunOptions(max_frames=120, checkpoint_s=0.0, group_frames=8)
    res = whole_and_resumed(analyzer, tmp_path, TrackOptions(), opts, str(TV), stop_after=60)
    assert res.status == "done" and 0 < res.resumed_from <= 60
    for name in ("tv_scene_720p.csv", "tv_scene_720p.people.csv", "tv_scene_720p.tracks.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    rows = list(csv.DictReader(open(tmp_path / "a" / "tv_scene_720p.csv")))
    assert list(rows[0])[-2:] == ["gender_avg", "person_id"]  # appended after the existing columns
    people = list(csv.DictReader(open(tmp_path / "a" / "tv_scene_720p.people.csv")))
    assert people and all(r["tracks"] == str(len(r["face_ids"].split(";"))) for r in people)
    # every row of an identified track carries its person's id
    pid_of = {int(f): r["person_id"] for r in people for f in r["face_ids"].split(";")}
    for r in rows:
        if r["face_id"] and int(r["face_id"]) in pid_of:
            assert r["person_id"] == pid_of[int(r["face_id"])]
    side = json.loads((tmp_path / "a" / "tv_scene_720p.json").read_text())
    s = side["people_summary"]
    assert s["people"] == sum(s["people_by_gender"].values())
    assert "tv_scene_720p.people.csv" in side["outputs"]
    # no finished output holds a descriptor: only the (deleted) checkpoint did
    assert not list((tmp_path / "a").glob(".*.resume.json"))
    assert "vectors" not in json.dumps(side)


def test_cli_privacy_still_counts_people_and_no_reid_writes_tracks_only(tmp_path):
    from agender.cli.main import main

    walking = VIDEOS / "walking_and_pause_270p.mp4"
    assert main(["analyze", str(walking), "-o", str(tmp_path / "p"), "--privacy", "-q"]) == 0
    people = list(csv.DictReader(open(tmp_path / "p" / "walking_and_pause_270p.people.csv")))
    assert len(people) == 3  # three people walk up, one shot
    side = json.loads((tmp_path / "p" / "walking_and_pause_270p.json").read_text())
    assert side["people_summary"]["people"] == 3 and side["people_summary"]["reid"]["privacy"] is True
    assert main(["analyze", str(walking), "-o", str(tmp_path / "n"), "--no-reid", "-q"]) == 0
    assert not (tmp_path / "n" / "walking_and_pause_270p.people.csv").exists()
    header = (tmp_path / "n" / "walking_and_pause_270p.csv").read_text().splitlines()[0]
    assert header.endswith(",gender_avg")


def test_a_track_that_ends_before_it_is_described_leaves_no_crop_behind(embedder):
    from agender.faces import Faces
    from agender.reid import FORGET_AFTER

    img = np.zeros((240, 320, 3), np.uint8)
    st = ReidStage(embedder=embedder)
    st.process(img, Faces(xyxy=[[10, 10, 90, 90]], det_conf=[1], track_id=[1]), [0.5])  # a 1-frame flicker
    assert 1 in st._best
    for _ in range(FORGET_AFTER + 1):
        st.process(img, Faces(), [])  # nothing on screen (a kiosk's empty hours)
        st.process(img, Faces(xyxy=[[200, 10, 280, 90]], det_conf=[1], track_id=[2]), [0.1])
    assert 1 not in st._best and 1 not in [t for t, _ in st.state_dict()["best"]]


def test_the_onnx_descriptor_gives_dlibs_own_numbers_on_real_faces(analyzer, embedder):
    """The converted net (agender.reid_onnx) against dlib's compute_face_descriptor on every
    face of a group photo and a TV frame: the same 128 numbers, not a look-alike."""
    assert embedder.backend == "onnx"
    ref = FaceEmbedder(backend="dlib")
    for img in (cv2.imread(str(sorted(PHOTOS.glob("*.jpg"))[0])), _frame(240)):
        boxes = analyzer.detect(img).xyxy
        assert len(boxes)
        got, want = embedder.embed(img, boxes), ref.embed(img, boxes)
        assert got.shape == want.shape == (len(boxes), 128)
        assert np.abs(got - want).max() < 1e-4


def test_a_truncated_descriptor_file_is_a_one_line_error_naming_it(tmp_path):
    from agender.errors import ModelError
    from agender.reid_onnx import read_dlib_net

    bad = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    bad.write_bytes(model_paths()[0].read_bytes()[:200_000])
    with pytest.raises(ModelError) as err:
        read_dlib_net(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_failed_conversion_falls_back_to_dlib_with_one_warning(tmp_path, monkeypatch, caplog):
    """A cache that cannot be written (its path is a file, so no onnx/ folder can be made
    under it) fails the conversion; re-identification still works, on dlib's own descriptor."""
    import agender.reid as reid

    monkeypatch.setenv("AGENDER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").write_text("not a folder")  # the cache path is a file: no onnx/ under it
    reid._descriptor_session.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="agender.reid"):
            emb = FaceEmbedder()
        assert emb.backend == "dlib"
        assert any("dlib's own" in r.getMessage() for r in caplog.records)
    finally:
        reid._descriptor_session.cache_clear()
        reid._warn_once.cache_clear()

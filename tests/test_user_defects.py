"""Defects a user hit (issue 8, section 4): each test reproduces the report."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from agender.detectors import create_detector
from agender.models import ModelStore
from conftest import MODELS

YUNET = "yunet/face_detection_yunet.onnx"


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Nothing on the search path but what the test puts in ``tmp_path/models``."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("AGENDER_MODELS", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return models


# --------------------------------------------------------------------------- --detector auto


def test_auto_detector_warns_once_naming_a_corrupt_yunet_and_the_fetch_command(user_dirs, caplog):
    (user_dirs / "yunet").mkdir()
    data = bytearray((MODELS / YUNET).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a bad download
    (user_dirs / YUNET).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        det = create_detector("auto", models=ModelStore())
    assert det.name == "mtcnn"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    msg = warnings[0]
    assert str(user_dirs / YUNET) in msg and "corrupt" in msg and "agender models fetch yunet" in msg
    assert "mtcnn" in msg and "\n" not in msg


def test_auto_detector_is_quiet_when_yunet_was_simply_never_fetched(user_dirs, caplog):
    with caplog.at_level(logging.WARNING):
        det = create_detector("auto", models=ModelStore())
    assert det.name == "mtcnn"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_detector_warns_about_an_empty_yunet_file(user_dirs, caplog):
    (user_dirs / "yunet").mkdir()
    (user_dirs / YUNET).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert create_detector("auto", models=ModelStore()).name == "mtcnn"
    (msg,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "empty" in msg and "agender models fetch yunet" in msg


# --------------------------------------------------------------------------- names and variants


@pytest.mark.parametrize("argv, kind, listed", [
    (["--estimator", "cydral:foo"], "estimator", "cydral:int8"),
    (["--estimator", "ssrnet:nosuch"], "estimator", "ssrnet:morph"),
    (["--estimator", "levi-hassner:x"], "estimator", "levi-hassner"),
    (["--detector", "haar:nosuch"], "detector", "haar:alt2"),
    (["--detector", "yunet:big"], "detector", "mtcnn"),
])
def test_unknown_variant_is_a_usage_error_listing_the_valid_ones(argv, kind, listed, tmp_path, capsys):
    from agender.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["analyze", *argv, str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "out")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"unknown {kind} {argv[1]!r}" in err and listed in err and "auto" in err
    assert not (tmp_path / "out").exists()


def test_gui_options_check_variants_too(capsys):
    import argparse

    from agender.cli.gui import add_arguments

    p = argparse.ArgumentParser(prog="app.py")
    add_arguments(p)
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--estimator", "cydral:foo"])
    assert info.value.code == 2 and "cydral:int8" in capsys.readouterr().err
    assert p.parse_args(["--detector", "MTCNN", "--estimator", "ssrnet:morph2"]).detector == "mtcnn"


def test_app_help_lists_every_registered_detector_and_estimator():
    import subprocess
    import sys

    from agender.detectors.base import detector_names
    from agender.estimators.base import estimator_names
    from conftest import REPO

    proc = subprocess.run([sys.executable, str(REPO / "app.py"), "--help"], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, "COLUMNS": "400", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    d, e = text.index("--detector NAME face detector"), text.index("--estimator NAME[:VARIANT] age")
    detector, estimator = text[d:e], text[e:text.index("--device DEV", e)]
    assert all(n in detector for n in detector_names()) and "mtcnn" in detector
    assert all(n in estimator for n in estimator_names()) and "auto (= agender:g150, the default)" in estimator


# The CLI names of every model that is fetched: --detector / --estimator and `agender models`
# must agree on them (`fetch ssrnet:morph` was "unknown model": the manifest said morph2).
FETCHED = ["yunet", "dnn", "lbp", "ssrnet", "ssrnet:wiki", "ssrnet:imdb", "ssrnet:morph", "levi-hassner"]


@pytest.mark.parametrize("name", FETCHED)
def test_every_cli_model_name_is_a_manifest_name(name):
    from agender.detectors.base import detector_specs
    from agender.estimators.base import estimator_specs

    assert name in detector_specs() + estimator_specs()
    entries = ModelStore().entries(name)
    assert entries and all(e.name == name or e.name.startswith(name + ":") for e in entries)


def test_fetch_takes_the_cli_names_and_the_old_ones(tmp_path, monkeypatch, capsys):
    from _servers import file_server
    from agender.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with file_server(MODELS) as url:
        for name in ("ssrnet:morph", "dnn", "opencv-dnn", "ssrnet:morph2"):
            dest = tmp_path / name.replace(":", "_")
            assert main(["models", "fetch", name, "--dest", str(dest), "--models-url", url]) == 0, capsys.readouterr().err
            got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
            expect = (["ssrnet/morph2_age.h5", "ssrnet/morph_gender.h5"] if "ssrnet" in name
                      else ["opencv_dnn/opencv_face_detector.pbtxt", "opencv_dnn/opencv_face_detector_uint8.pb"])
            assert got == expect


@pytest.mark.needs_shared  # the files are found through AGENDER_MODELS
@pytest.mark.parametrize("action", ["verify", "list"])
def test_verify_and_list_take_model_names(action, capsys):
    from agender.cli.main import main

    assert main(["models", action, "ssrnet:morph", "dnn"]) == 0
    out = capsys.readouterr().out
    files = {"ssrnet/morph2_age.h5", "ssrnet/morph_gender.h5", "opencv_dnn/opencv_face_detector_uint8.pb",
             "opencv_dnn/opencv_face_detector.pbtxt"}
    assert all(f in out for f in files) and "yunet" not in out and "wiki" not in out
    if action == "verify":
        assert out.splitlines()[-1] == "4 verified, 0 without checksum, 0 missing, 0 bad"
    assert main(["models", action, "nosuch"]) == 2
    assert "unknown model 'nosuch'" in capsys.readouterr().err


def test_missing_model_hint_uses_the_cli_name(user_dirs):
    from agender.errors import ModelError

    with pytest.raises(ModelError, match=r"agender models fetch dnn`"):
        create_detector("dnn", models=ModelStore())


# --------------------------------------------------------------------------- library and CLI edges


@pytest.fixture(scope="module")
def haar_cydral():
    from agender import Analyzer

    return Analyzer(detector="haar", estimator="cydral", device="cpu")


@pytest.mark.parametrize("bad, words", [(None, "frame is None"), ("group.jpg", "not an image"),
                                        ([[None]], "not an image")])
def test_analyzer_given_no_image_raises_a_value_error_naming_the_problem(haar_cydral, bad, words):
    for call in (haar_cydral, haar_cydral.detect, lambda f: haar_cydral.analyze_frames([f])):
        with pytest.raises(ValueError, match=words) as info:
            call(bad)
        assert "\n" not in str(info.value)


def test_verbose_is_accepted_after_the_subcommand(tmp_path, capsys):
    from agender.cli.main import build_parser, main

    p = build_parser()
    assert p.parse_args(["analyze", "-v", "x.mp4", "-o", "out"]).verbose is True
    assert p.parse_args(["-v", "analyze", "x.mp4", "-o", "out"]).verbose is True
    assert p.parse_args(["analyze", "x.mp4", "-o", "out"]).verbose is False
    assert p.parse_args(["models", "verify", "--verbose"]).verbose is True
    assert p.parse_args(["bench", "-v", "x.mp4"]).verbose is True
    # a real run: the input is missing (exit 1), not a usage error (exit 2)
    assert main(["analyze", "-v", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "out")]) == 1
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- text files


@pytest.mark.parametrize("name", ["README.txt", "notes.nfo", "NOTES"])
def test_a_text_file_is_not_analysed_as_a_video(name, tmp_path, capsys):
    from agender.cli.main import main
    from agender.errors import SourceError
    from agender.io.sources import VideoSource

    txt = tmp_path / name
    txt.write_text("Photos in this folder\n\n" + "\n".join(f"photo {i}.jpg  CC BY 2.0" for i in range(40)))
    with pytest.raises(SourceError, match="not a decodable video"):
        VideoSource(str(txt))
    out = tmp_path / "out"
    assert main(["analyze", str(txt), "-o", str(out), "-q"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and str(txt) in err[0] and "not a decodable video" in err[0]
    assert not (out / f"{txt.stem}.csv").exists()


# --------------------------------------------------------------------------- http: moov at the end

CLIPS = ["walking_and_pause_270p.mp4", "classroom_270p.mp4"]  # both keep their moov after mdat


def _frames(src) -> list:
    try:
        return [f.image for f in src]
    finally:
        src.close()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder, private to the test: shows what a download leaves behind."""
    import tempfile

    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_both_shared_clips_keep_their_mp4_index_at_the_end():
    from agender.io.sources import mp4_index_at_end
    from conftest import VIDEOS

    assert all(mp4_index_at_end((VIDEOS / c).read_bytes()[:65536]) for c in CLIPS)
    assert not mp4_index_at_end((VIDEOS / "tv_scene_720p.mp4").read_bytes()[:65536])  # moov first
    assert not mp4_index_at_end(b"\x1aE\xdf\xa3" + bytes(100))  # Matroska: not ours to judge


@pytest.mark.parametrize("ranges", [False, True], ids=["no-range-server", "range-server"])
@pytest.mark.parametrize("clip", CLIPS)
def test_http_mp4_with_moov_at_the_end_decodes_every_frame(clip, ranges, private_tmp):
    import numpy as np

    from _servers import file_server
    from agender.io.sources import VideoSource
    from conftest import VIDEOS

    local = _frames(VideoSource(str(VIDEOS / clip)))
    with file_server(VIDEOS, ranges=ranges) as base:
        src = VideoSource(f"{base}/{clip}", check_length=True)
        # without byte ranges the file is fetched whole first; with them FFmpeg seeks itself
        assert (src.local_copy is not None) == (not ranges)
        copy = src.local_copy
        remote = _frames(src)
    assert len(remote) == len(local) > 40
    assert all(np.array_equal(a, b) for a, b in zip(remote, local))
    assert list(private_tmp.iterdir()) == []  # the temporary download is gone after close()
    if copy is not None:
        assert not copy.exists()


def test_http_mp4_with_moov_at_the_end_is_analysed_by_the_cli(tmp_path, private_tmp):
    import json

    from _servers import file_server
    from agender.cli.main import main
    from conftest import VIDEOS

    out = tmp_path / "out"
    with file_server(VIDEOS) as base:  # Python's own server: no Range support
        rc = main(["analyze", f"{base}/walking_and_pause_270p.mp4", "-o", str(out), "--estimator", "cydral",
                   "--max-frames", "5", "-q"])
    assert rc == 0
    rec = json.loads((out / "walking_and_pause_270p.json").read_text())
    assert rec["frames_analysed"] == 5
    assert list(private_tmp.iterdir()) == []


def test_http_mp4_too_big_to_download_says_exactly_why(private_tmp, monkeypatch):
    from _servers import file_server
    from agender.errors import SourceError
    from agender.io.sources import VideoSource
    from conftest import VIDEOS

    monkeypatch.setenv("AGENDER_DOWNLOAD_LIMIT_MB", "0.05")  # 51 kB: both clips are larger
    with file_server(VIDEOS) as base, pytest.raises(SourceError) as info:
        VideoSource(f"{base}/walking_and_pause_270p.mp4")
    msg = str(info.value)
    assert "byte ranges" in msg and "moov" in msg and "AGENDER_DOWNLOAD_LIMIT_MB" in msg and "faststart" in msg
    assert "\n" not in msg and list(private_tmp.iterdir()) == []


def test_http_download_that_is_cut_short_leaves_nothing_behind(private_tmp):
    """A server that announces the whole length but hangs up half-way: a one-line error and no
    .part file, never a truncated video opened as if whole."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from agender.errors import SourceError
    from agender.io.sources import VideoSource
    from conftest import VIDEOS

    data = (VIDEOS / "walking_and_pause_270p.mp4").read_bytes()

    class Cut(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceError, match=r"stopped after \d+ of \d+ bytes|failed") as info:
            VideoSource(f"http://127.0.0.1:{srv.server_address[1]}/clip.mp4", open_timeout_s=5)
    finally:
        srv.shutdown()
        srv.server_close()
    assert "\n" not in str(info.value) and list(private_tmp.iterdir()) == []

"""Every kind of bad input gives one line naming the input and the problem, exit status 1,
no traceback, and no output that looks complete.

The bad files are made in tmp_path from real data (a real clip cut short, a real PNG header
declaring 50000x50000, a real audio-only MP4 written with PyAV); URLs go to real sockets on
127.0.0.1.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from _servers import file_server, refused_url, silent_server
from agender.cli.main import main
from conftest import VIDEOS

TV = VIDEOS / "tv_scene_720p.mp4"


def analyze_fails(capsys, spec: str, outdir: Path, *extra: str) -> str:
    """Run `agender analyze SPEC`; check the failure contract; return the one error line."""
    rc = main(["analyze", spec, "-o", str(outdir), *extra])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("agender: error: ")
    assert spec in lines[0], "the line names the input"
    leftovers = [p.name for p in outdir.iterdir()] if outdir.exists() else []
    assert leftovers == [], f"nothing may be left behind: {leftovers}"
    return lines[0]


def test_missing_path_is_one_line_no_such_file(tmp_path, capsys):
    line = analyze_fails(capsys, str(tmp_path / "nope.mp4"), tmp_path / "out")
    assert "no such file" in line


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else False,
                    reason="root reads files whatever their mode, so an unreadable file cannot be made")
def test_unreadable_file_is_one_line_permission_denied(tmp_path, capsys):
    f = tmp_path / "locked.mp4"
    f.write_bytes(TV.read_bytes()[:4096])
    f.chmod(0)
    line = analyze_fails(capsys, str(f), tmp_path / "out")
    assert "permission denied" in line


def test_unreadable_file_is_one_line_permission_denied_with_injected_access_denial(tmp_path, capsys, monkeypatch):
    """Same check as above where it can run as root: the OS's answer is injected (root can
    read a mode-000 file, so the fault cannot be caused for real here)."""
    f = tmp_path / "locked.mp4"
    f.write_bytes(TV.read_bytes()[:4096])
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if Path(path) == f else real_access(path, mode, *a, **k))
    assert "permission denied" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_zero_byte_file_is_one_line_empty_file(tmp_path, capsys):
    f = tmp_path / "empty.mp4"
    f.touch()
    assert "empty file" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_truncated_video_fails_where_it_ends_and_leaves_no_table(tmp_path, capsys):
    f = tmp_path / "cut.mp4"
    f.write_bytes(TV.read_bytes()[: 60 * 1024])  # header + the first few frames of the real clip
    line = analyze_fails(capsys, str(f), tmp_path / "out")
    assert re.search(r"ends at frame \d+ of 1972 \(truncated or corrupt\)", line)


def test_video_cut_inside_its_header_cannot_be_opened(tmp_path, capsys):
    f = tmp_path / "head.mp4"
    f.write_bytes(TV.read_bytes()[:600])  # inside the moov atom
    assert "cannot open as video" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_text_file_named_mp4_is_not_a_decodable_video(tmp_path, capsys):
    f = tmp_path / "notes.mp4"
    f.write_text("these are my notes, not a video\n" * 20)
    assert "cannot open as video" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_image_that_is_not_an_image_is_one_line(tmp_path, capsys):
    f = tmp_path / "photo.jpg"
    f.write_text("<html>404 not found</html>\n")
    assert "not a readable image" in analyze_fails(capsys, str(f), tmp_path / "out")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_huge_image_is_refused_from_its_header_before_decoding(tmp_path, capsys):
    f = tmp_path / "bomb.png"  # 50000x50000 RGB declared, a few hundred bytes on disk
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                  + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))
    assert f.stat().st_size < 1000
    assert "image too large (2500000000 pixels" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_file_with_audio_but_no_video_stream_says_so(tmp_path, capsys):
    import av

    f = tmp_path / "podcast.mp4"
    with av.open(str(f), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(16):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    assert "no video stream" in analyze_fails(capsys, str(f), tmp_path / "out")


def test_url_404_is_one_line_with_the_http_status(tmp_path, capsys):
    with file_server(VIDEOS) as base:
        line = analyze_fails(capsys, f"{base}/missing_clip.mp4", tmp_path / "out")
    assert "HTTP 404" in line


def test_url_connection_refused_is_one_line(tmp_path, capsys):
    assert "connection refused" in analyze_fails(capsys, refused_url(), tmp_path / "out")


def test_url_that_never_answers_times_out_after_timeout_seconds(tmp_path, capsys):
    with silent_server() as base:
        line = analyze_fails(capsys, f"{base}/clip.mp4", tmp_path / "out", "--timeout", "0.5")
    assert "timed out" in line and "0.5 s" in line


def test_camera_that_does_not_exist_is_one_line(tmp_path, capsys):
    assert "camera does not exist" in analyze_fails(capsys, "cam:9", tmp_path / "out")


def test_folder_with_no_media_is_one_line(tmp_path, capsys):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    assert "no images or videos" in analyze_fails(capsys, str(d), tmp_path / "out")


def test_bad_image_among_good_ones_is_listed_and_the_good_ones_are_written(tmp_path, capsys):
    from conftest import FACES_DEV

    bad = tmp_path / "zz_bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    good = sorted(FACES_DEV.glob("5[0-4]_0_0_*.jpg"))[:2]
    rc = main(["analyze", *map(str, good), str(bad), "-o", str(tmp_path / "out"), "--no-detect", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"agender: error: {bad}: not a readable image" in err.splitlines()
    text = (tmp_path / "out" / "images.csv").read_text()
    assert all(str(g) in text for g in good) and "zz_bad" not in text

"""The output folder never holds wrong rows (issue 8, section 3; and 4: jsonl tracks).

Real processes and real files: two real `agender analyze` processes into one folder, a real
kill -9, a real input replaced on disk, a real full tmpfs and a real read-only mount (root is
needed to mount; skipped with the reason otherwise). Where a fault cannot be caused at the
exact moment (a full disk while the sidecar is written), it is injected and the test says so.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agender.cli.main import main
from agender.faces import Faces
from agender.inputs import InputItem
from agender.io.sinks.csv_sink import CsvSink
from conftest import PHOTOS, VIDEOS

CLASSROOM = VIDEOS / "classroom_270p.mp4"
WALKING = VIDEOS / "walking_and_pause_270p.mp4"
TV = VIDEOS / "tv_scene_720p.mp4"
FACE = PHOTOS / "knuth224.jpg"
AGENDER = [sys.executable, "-m", "agender", "analyze"]


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def sidecar(path: Path) -> dict:
    return json.loads(path.read_text())


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("agender: error: ")]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of a run: partials, temp files, checkpoints, locks."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.endswith((".partial", ".tmp", ".resume.json", ".lock", ".partial.mp4")))


def wait_for(pred, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("the run finished (or hung) before the condition was met")


# --------------------------------------------------------------------------- one writer
def test_two_runs_into_one_folder_at_once_the_second_is_refused_in_one_line_and_the_first_is_unaffected(tmp_path):
    opts = ["--max-frames", "240", "--fps", "8", "--detect-width", "320", "--group-frames", "4",
            "--checkpoint-every", "0", "-q"]
    args = [str(TV), *opts]
    out, ref = tmp_path / "out", tmp_path / "ref"
    first = subprocess.Popen([*AGENDER, *args, "-o", str(out)], stderr=subprocess.PIPE, text=True)
    partial = out / ".tv_scene_720p.csv.partial"
    wait_for(lambda: partial.is_file() and partial.stat().st_size > 0, first)
    # the second run is untracked (the case that once gave rows of two field counts in one
    # table) and has a second input, which it must still do
    second = subprocess.run([*AGENDER, str(TV), str(WALKING), *opts, "--no-track", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, timeout=300)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    errs = error_lines(second.stderr)
    assert len(errs) == 1, second.stderr
    assert errs[0] == (f"agender: error: {TV}: output {out / 'tv_scene_720p.csv'} is being written by another "
                       f"agender run (pid {first.pid})")
    assert (out / "walking_and_pause_270p.csv").is_file(), "the other input of the refused run is done"

    subprocess.run([*AGENDER, *args, "-o", str(ref)], check=True)
    for name in ("tv_scene_720p.csv", "tv_scene_720p.tracks.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{name} of the first run was touched"
    table = rows(out / "tv_scene_720p.csv")
    assert {len(r) for r in table} == {len(table[0])}
    rec = sidecar(out / "tv_scene_720p.json")
    assert rec["complete"] and rec["frames_analysed"] == 240
    assert leftovers(out) == []


def test_the_output_lock_refuses_a_second_holder_with_the_first_ones_pid_and_is_gone_after_release(tmp_path):
    from agender.errors import OutputBusy
    from agender.io.outlock import OutputLock

    path = tmp_path / ".clip.lock"
    first = OutputLock(path, output=tmp_path / "clip.csv")
    first.acquire()
    with pytest.raises(OutputBusy) as exc:
        OutputLock(path, output=tmp_path / "clip.csv").acquire()  # its own open file: flock says taken
    assert exc.value.pid == os.getpid()
    assert str(exc.value) == f"output {tmp_path / 'clip.csv'} is being written by another agender run (pid {os.getpid()})"
    first.release()
    assert not path.exists()
    with OutputLock(path):
        assert path.read_text().strip() == str(os.getpid())


def test_a_run_killed_with_sigkill_leaves_no_lock_that_blocks_the_next_run(tmp_path):
    args = [str(WALKING), "--max-frames", "40", "--group-frames", "2", "--checkpoint-every", "0", "-q"]
    out = tmp_path / "out"
    proc = subprocess.Popen([*AGENDER, *args, "-o", str(out)])
    lock = out / ".walking_and_pause_270p.lock"
    wait_for(lambda: (out / ".walking_and_pause_270p.resume.json").is_file(), proc)
    assert lock.read_text().strip() == str(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists(), "kill -9 leaves the lock file (but not the lock)"
    done = subprocess.run([*AGENDER, *args, "-o", str(out)], stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sidecar(out / "walking_and_pause_270p.json")["resumed_from_frame"]
    assert leftovers(out) == []


# --------------------------------------------------------------------------- input identity
def test_an_input_replaced_after_a_kill_restarts_from_frame_0_instead_of_splicing_two_videos(tmp_path):
    args = ["--max-frames", "64", "--fps", "8", "--detect-width", "320", "--group-frames", "4",
            "--checkpoint-every", "0"]
    (tmp_path / "in").mkdir()
    (tmp_path / "ref_in").mkdir()
    clip = tmp_path / "in" / "clip.mp4"
    shutil.copyfile(TV, clip)
    out = tmp_path / "out"
    proc = subprocess.Popen([*AGENDER, str(clip), *args, "-q", "-o", str(out)])
    partial, ckpt = out / ".clip.csv.partial", out / ".clip.resume.json"
    wait_for(lambda: ckpt.is_file() and partial.is_file() and partial.read_text().count("\n") > 5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    shutil.copyfile(WALKING, tmp_path / "new.mp4")  # another video under the same name
    os.replace(tmp_path / "new.mp4", clip)
    rerun = subprocess.run([*AGENDER, str(clip), *args, "-o", str(out)], stderr=subprocess.PIPE, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "the input changed since the interrupted run" in rerun.stderr
    assert "starting over from frame 0" in rerun.stderr

    shutil.copyfile(WALKING, tmp_path / "ref_in" / "clip.mp4")
    subprocess.run([*AGENDER, str(tmp_path / "ref_in" / "clip.mp4"), *args, "-q", "-o", str(tmp_path / "ref")],
                   check=True)
    assert (out / "clip.csv").read_bytes() == (tmp_path / "ref" / "clip.csv").read_bytes()
    assert sidecar(out / "clip.json")["resumed_from_frame"] is None
    assert leftovers(out) == []


def test_input_identity_sees_a_changed_head_even_with_the_same_size_and_mtime(tmp_path):
    from agender.runner import input_identity

    f = tmp_path / "a.mp4"
    data = bytearray(CLASSROOM.read_bytes())
    f.write_bytes(data)
    st = f.stat()
    before = input_identity(InputItem(spec=str(f), kind="video", name="a"))
    data[100] ^= 0xFF
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = input_identity(InputItem(spec=str(f), kind="video", name="a"))
    assert after["size"] == before["size"] and after["mtime_ns"] == before["mtime_ns"]
    assert after != before


# --------------------------------------------------------------------------- done means identical
def test_a_different_file_with_the_same_name_is_refused_in_one_line_naming_overwrite(tmp_path, capsys):
    for d, src in (("a", CLASSROOM), ("b", WALKING)):
        (tmp_path / d).mkdir()
        os.symlink(src, tmp_path / d / "clip.mp4")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "a" / "clip.mp4"), "-o", str(out), "--max-frames", "3", "-q"]) == 0
    table = (out / "clip.csv").read_bytes()
    capsys.readouterr()

    spec = str(tmp_path / "b" / "clip.mp4")
    assert main(["analyze", spec, "-o", str(out), "--max-frames", "3", "-q"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert error_lines(err) == [f"agender: error: {spec}: {out / 'clip.csv'} was made from another input "
                                f"({CLASSROOM}); not replaced: use --overwrite to redo it"]
    assert (out / "clip.csv").read_bytes() == table

    assert main(["analyze", spec, "-o", str(out), "--max-frames", "3", "-q", "--overwrite"]) == 0
    assert sidecar(out / "clip.json")["input"] == spec


def test_a_file_changed_in_place_after_its_run_finished_is_refused_not_skipped(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(CLASSROOM, clip)
    out = tmp_path / "out"
    assert main(["analyze", str(clip), "-o", str(out), "--max-frames", "3", "-q"]) == 0
    shutil.copyfile(WALKING, clip)
    assert main(["analyze", str(clip), "-o", str(out), "--max-frames", "3", "-q"]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "was made from an earlier version of" in line and "--overwrite" in line


def test_a_rerun_that_adds_an_export_produces_it_and_an_identical_rerun_is_skipped(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agender")
    args = ["analyze", str(WALKING), "-o", str(tmp_path), "--max-frames", "4"]
    assert main(args) == 0
    table = (tmp_path / "walking_and_pause_270p.csv").read_bytes()
    assert main([*args, "--export-mp4"]) == 0
    mp4 = tmp_path / "walking_and_pause_270p.annotated.mp4"
    assert mp4.is_file() and mp4.stat().st_size > 0
    assert "walking_and_pause_270p.annotated.mp4 not in the finished output; redoing the input" in caplog.text
    assert (tmp_path / "walking_and_pause_270p.csv").read_bytes() == table
    rec = (tmp_path / "walking_and_pause_270p.json").read_text()
    assert mp4.name in json.loads(rec)["outputs"]

    caplog.clear()
    assert main([*args, "--export-mp4"]) == 0
    assert main(args) == 0  # fewer exports than were made: everything asked for is there
    assert caplog.text.count("already done") == 2
    assert (tmp_path / "walking_and_pause_270p.json").read_text() == rec


def test_video_only_options_do_not_make_a_finished_image_set_look_different(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agender")
    assert main(["analyze", str(FACE), "-o", str(tmp_path), "--fps", "8", "--max-frames", "5", "-q"]) == 0
    rec = (tmp_path / "images.json").read_text()
    caplog.clear()
    assert main(["analyze", str(FACE), "-o", str(tmp_path)]) == 0
    assert "already done" in caplog.text
    assert (tmp_path / "images.json").read_text() == rec


@pytest.mark.parametrize("other, change", [(["--detector", "haar", "--no-track"], "detector "),
                                           (["--estimator", "ssrnet"], "estimator ")])
def test_a_rerun_with_other_settings_is_refused_in_one_line_naming_overwrite(tmp_path, capsys, other, change):
    args = ["analyze", str(WALKING), "-o", str(tmp_path), "--max-frames", "3", "-q"]
    assert main(args) == 0
    table = (tmp_path / "walking_and_pause_270p.csv").read_bytes()
    rec = (tmp_path / "walking_and_pause_270p.json").read_text()
    capsys.readouterr()
    assert main([*args, *other]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith(f"agender: error: {WALKING}: {tmp_path / 'walking_and_pause_270p.csv'} was made with "
                           f"other settings (")
    assert change in line and line.endswith("; not replaced: use --overwrite to redo it")
    assert (tmp_path / "walking_and_pause_270p.csv").read_bytes() == table
    assert (tmp_path / "walking_and_pause_270p.json").read_text() == rec
    assert main([*args, *other, "--overwrite"]) == 0
    assert (tmp_path / "walking_and_pause_270p.json").read_text() != rec


# --------------------------------------------------------------------------- full / read-only disks
@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, free_kib: int) -> None:
    st = os.statvfs(disk)
    room = st.f_bavail * st.f_frsize - free_kib * 1024
    (disk / "filler").write_bytes(b"\0" * room)
    assert os.statvfs(disk).f_bavail * st.f_frsize == free_kib * 1024


@pytest.mark.parametrize("free_kib", [4, 20])
def test_a_full_disk_is_one_line_naming_the_file_the_batch_goes_on_and_nothing_half_written_stays(
        tmp_path, capsys, free_kib):
    with tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "out"
        out.mkdir()
        fill(disk, free_kib)
        tv = str(TV)
        rc = main(["analyze", tv, str(FACE), "-o", str(out), "--max-frames", "200", "--fps", "8",
                   "--detect-width", "320", "--checkpoint-every", "0", "-q"])
        err = capsys.readouterr().err
        assert rc == 1
        assert "Traceback" not in err
        lines = error_lines(err)
        assert lines[0].startswith(f"agender: error: {tv}: cannot write {out}/")
        assert lines[0].endswith(": No space left on device")
        if free_kib >= 20:  # the video's partial is gone, so the photo fits in the space it freed
            assert len(lines) == 1, err
            assert rows(out / "images.csv")[1][0] == str(FACE)
            assert sidecar(out / "images.json")["complete"]
        else:  # no room for anything: each input says so in its own line
            assert len(lines) == 2 and lines[1].startswith(f"agender: error: {FACE}: cannot write {out}/")
        assert leftovers(out) == []
        assert not (out / "tv_scene_720p.csv").exists() and not (out / "tv_scene_720p.json").exists()


def test_a_read_only_output_folder_skips_finished_inputs_and_refuses_new_ones_in_one_line(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="agender")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "out"
        assert main(["analyze", str(WALKING), "-o", str(out), "--max-frames", "3", "-q"]) == 0
        before = sorted(p.name for p in out.iterdir())
        r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"remounting read-only is not permitted here: {r.stderr.strip()}")
        capsys.readouterr()
        caplog.clear()
        rc = main(["analyze", str(WALKING), str(CLASSROOM), "-o", str(out), "--max-frames", "3"])
        err = capsys.readouterr().err
        assert rc == 1
        assert "Traceback" not in err
        assert error_lines(err) == [f"agender: error: {CLASSROOM}: cannot write {out / '.classroom_270p.lock'}: "
                                    "Read-only file system"]
        assert "already done" in caplog.text

        rc = main(["analyze", str(WALKING), "-o", str(out), "--max-frames", "3", "-q", "--overwrite"])
        (line,) = error_lines(capsys.readouterr().err)
        assert rc == 1 and line.endswith("Read-only file system")
        assert sorted(p.name for p in out.iterdir()) == before


def test_a_full_disk_while_finishing_an_input_removes_its_outputs_injected_enospc(tmp_path, capsys, monkeypatch):
    """The disk fills up exactly while the sidecar is written (the last step): injected, as it
    cannot be caused at that moment. The table and tracks already in place must not stay
    without a sidecar, and the next input must still be done."""
    import agender.runner as runner_mod

    real = runner_mod.write_sidecar

    def full_for_walking(path, rec):
        if Path(path).name == "walking_and_pause_270p.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, rec)

    monkeypatch.setattr(runner_mod, "write_sidecar", full_for_walking)
    rc = main(["analyze", str(WALKING), str(CLASSROOM), "-o", str(tmp_path), "--max-frames", "3", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    line = error_lines(err)[0]
    assert line == (f"agender: error: {WALKING}: {tmp_path / 'walking_and_pause_270p.json'}: "
                    "No space left on device")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("walking")] == []
    assert sidecar(tmp_path / "classroom_270p.json")["complete"]
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- CSV injection
FORMULA_NAMES = ["=cmd|' /C calc'!A0.jpg", "+1+2.jpg", "-3.jpg", "@SUM(A1).jpg", "\tTAB.jpg", "\rCR.jpg"]


def test_text_cells_a_spreadsheet_would_run_as_formulas_get_a_quote_in_front(tmp_path, monkeypatch):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "=cmd|' ").mkdir()  # the classic payload has a "/": it is a folder and a file
    for name in [*FORMULA_NAMES, "plain.jpg"]:
        shutil.copyfile(FACE, imgs / name)
    monkeypatch.chdir(imgs)  # relative names: the file cell is the name itself
    out = tmp_path / "out"
    assert main(["analyze", "-o", str(out), "--export-chips", "-q", "--", *FORMULA_NAMES, "plain.jpg"]) == 0
    cells = [r[0] for r in rows(out / "images.csv")[1:]]
    assert cells == ["'" + n for n in FORMULA_NAMES] + ["plain.jpg"]
    tsv = (out / "images.chips.tsv").read_text().splitlines()
    assert len(tsv) == len(FORMULA_NAMES) + 1 and all(len(r.split("\t")) == 13 for r in tsv)
    chips = [r.split("\t")[0] for r in tsv]
    assert "C calc'!A0_face0.jpg" in chips and "'-3_face0.jpg" in chips and "_TAB_face0.jpg" in chips
    assert "plain_face0.jpg" in chips


def test_numbers_are_never_quoted_negative_ones_stay_numbers(tmp_path):
    from agender.io.sources import Frame

    sink = CsvSink(tmp_path / "t.csv", key="file")
    sink.begin(None)
    faces = Faces(xyxy=[[-1.0, -0.5, 10, 10]], det_conf=[0.9], age=[-0.5], age_std=[1.0], p_male=[0.2])
    sink.write(Frame(0, 0.0, np.zeros((4, 4, 3), np.uint8), "-x.jpg"), faces)
    sink.close()
    (row,) = rows(tmp_path / "t.csv")[1:]
    assert row[:9] == ["'-x.jpg", "0", "-1.0", "-0.5", "10.0", "10.0", "0.9", "-0.5", "1.0"]


# --------------------------------------------------------------------------- jsonl tracks
def test_jsonl_format_writes_the_tracks_file_as_jsonl_too(tmp_path):
    assert main(["analyze", str(WALKING), "-o", str(tmp_path), "--max-frames", "8", "--format", "jsonl", "-q"]) == 0
    assert not (tmp_path / "walking_and_pause_270p.tracks.csv").exists()
    tracks = [json.loads(ln) for ln in (tmp_path / "walking_and_pause_270p.tracks.jsonl").read_text().splitlines()]
    assert tracks and all(list(t) == ["face_id", "first_s", "last_s", "frames", "age_mean", "age_std", "gender",
                                      "p_male_mean", "best_chip"] for t in tracks)
    assert all(isinstance(t["face_id"], int) and isinstance(t["frames"], int) for t in tracks)
    table = [json.loads(ln) for ln in (tmp_path / "walking_and_pause_270p.jsonl").read_text().splitlines()]
    assert {t["face_id"] for t in tracks} == {r["face_id"] for r in table if r["face_id"] is not None}
    assert "walking_and_pause_270p.tracks.jsonl" in sidecar(tmp_path / "walking_and_pause_270p.json")["outputs"]

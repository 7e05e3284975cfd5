"""`agender analyze --cluster`: real Ray clusters on 127.0.0.1 (``local:2``, and ``ray start
--head`` plus a second node), a 300-frame cut of tv_scene_720p.mp4 in 4 segments.

What they prove: the ``--no-track`` table is byte-identical to a single-machine run; the
tracked table differs only where docs/cluster.md says (per-frame columns identical, tracks ± 1
per boundary); a worker killed mid-segment and a driver killed mid-run change nothing; an
unreachable cluster is one line, exit 1; without Ray the single-machine path still works.
Every cluster a test starts is stopped by it (process groups killed), also on failure.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import MODELS, REPO, VIDEOS

TV = VIDEOS / "tv_scene_720p.mp4"
NAME = "tv300"
PER_FRAME = ("frame", "time_s", "face", "x1", "y1", "x2", "y2", "det_conf", "age", "age_std", "gender", "p_male")

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'agender[cluster]')")


def _env() -> dict:
    env = dict(os.environ, AGENDER_MODELS=str(MODELS), PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", OPENCV_LOG_LEVEL="ERROR",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # every Ray socket on loopback, not the NIC
               # gRPC's epoll1 poller can abort in the Ray Client proxy after it forks a server
               # (seen once: "Check failed: next_worker->state == KICKED"); the poll poller avoids that path
               GRPC_POLL_STRATEGY="poll")
    env.pop("RAY_ADDRESS", None)
    return env


def agender(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agender", "analyze", *args], env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


def cut(src: Path, dst: Path, n: int, gop: int = 48) -> Path:
    """The first ``n`` frames of ``src`` re-encoded (H.264, a keyframe every ``gop`` frames)."""
    import av
    from fractions import Fraction

    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        vi = ic.streams.video[0]
        vo = oc.add_stream("libx264", rate=vi.average_rate)
        vo.width, vo.height, vo.pix_fmt = vi.width, vi.height, "yuv420p"
        vo.codec_context.time_base = Fraction(1, 1) / vi.average_rate
        vo.options = {"g": str(gop), "preset": "ultrafast", "crf": "23"}
        for k, fr in enumerate(ic.decode(vi)):
            if k >= n:
                break
            out = av.VideoFrame.from_ndarray(fr.to_ndarray(format="yuv420p"), format="yuv420p")
            out.pts, out.time_base = k, vo.codec_context.time_base
            for p in vo.encode(out):
                oc.mux(p)
        for p in vo.encode():
            oc.mux(p)
    return dst


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return cut(TV, tmp_path_factory.mktemp("clip") / f"{NAME}.mp4", 300)


@pytest.fixture(scope="module")
def single(clip, tmp_path_factory) -> dict[str, Path]:
    """Single-machine outputs, --no-track and tracked (the default: with re-identification)."""
    out = {}
    for mode in ("notrack", "track"):
        d = tmp_path_factory.mktemp(f"single-{mode}")
        r = agender(str(clip), "-o", str(d), "-q", *(["--no-track"] if mode == "notrack" else []))
        assert r.returncode == 0, r.stderr
        out[mode] = d
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _workers_of(root_pid: int) -> list[int]:
    import psutil

    try:
        kids = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if "SegmentWorker" in " ".join(p.cmdline()) or p.name().startswith("ray::SegmentWorker"):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _reap(pids: list[int], timeout: float = 10.0) -> None:
    """Wait for processes we started to end (a worker may finish its segment first); then kill them."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    # children left in the group after the leader went
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for(pred, timeout: float, what: str):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _metas(outdir: Path) -> list[Path]:
    return sorted((outdir / f".{NAME}.cluster").glob("seg-*.json"))


# ------------------------------------------------------------------------------------------------
@needs_ray
def test_no_track_table_is_byte_identical_to_single_machine_on_local_2(clip, single, tmp_path):
    r = agender(str(clip), "-o", str(tmp_path), "--no-track", "--cluster", "local:2", "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"{NAME}.csv").read_bytes() == (single["notrack"] / f"{NAME}.csv").read_bytes()
    side = json.loads((tmp_path / f"{NAME}.json").read_text())
    ref = json.loads((single["notrack"] / f"{NAME}.json").read_text())
    assert side["complete"] and side["fingerprint"] == ref["fingerprint"]
    assert side["frames_analysed"] == ref["frames_analysed"] == 300 and side["faces"] == ref["faces"]
    cl = side["cluster"]
    assert cl["workers"] == 2 and cl["segments"] == 4 and cl["overlap_frames"] == 0
    assert len(cl["per_worker"]) == 2 and all(w["fps"] > 0 and w["frames_per_cpu_s"] > 0 for w in cl["per_worker"])
    if len(os.sched_getaffinity(0)) >= 2:  # local:N pins each worker to its own core
        assert sorted(c for w in cl["per_worker"] for c in w["cores"]) == sorted(os.sched_getaffinity(0))[:2]
    assert sum(w["frames"] for w in cl["per_worker"]) == 300
    assert set(cl["per_segment_overhead_s"]) == {"model_load", "seek", "stitch"}
    assert not (tmp_path / f".{NAME}.cluster").exists(), "segment parts are removed once stitched"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [f"{NAME}.csv", f"{NAME}.json"]
    # finished: a rerun (on the cluster or not) skips it
    r2 = agender(str(clip), "-o", str(tmp_path), "--no-track")
    assert r2.returncode == 0 and "already done" in r2.stderr


@needs_ray
def test_many_files_go_to_many_workers_with_single_machine_tables(tmp_path):
    clips = [VIDEOS / "classroom_270p.mp4", VIDEOS / "walking_and_pause_270p.mp4"]
    ref = tmp_path / "single"
    assert agender(*map(str, clips), "-o", str(ref), "--no-track", "-q").returncode == 0
    r = agender(*map(str, clips), "-o", str(tmp_path / "cl"), "--no-track", "--cluster", "local:2")
    assert r.returncode == 0, r.stderr
    workers = set()
    for c in clips:
        assert (tmp_path / "cl" / f"{c.stem}.csv").read_bytes() == (ref / f"{c.stem}.csv").read_bytes()
        cl = json.loads((tmp_path / "cl" / f"{c.stem}.json").read_text())["cluster"]
        assert cl["segments"] == 1  # a 4-s clip is not cut: each file is one worker's segment
        workers |= {w["worker"] for w in cl["per_worker"]}
    assert len(workers) == 2, "the two files went to the two workers"


@needs_ray
def test_tracked_run_differs_only_within_the_documented_bounds(clip, single, tmp_path):
    r = agender(str(clip), "-o", str(tmp_path), "--cluster", "local:2", "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    got, ref = rows(tmp_path / f"{NAME}.csv"), rows(single["track"] / f"{NAME}.csv")
    assert len(got) == len(ref)
    assert [[g[c] for c in PER_FRAME] for g in got] == [[x[c] for c in PER_FRAME] for x in ref], \
        "per-frame detection/age/gender columns are identical"
    boundaries = 3
    tracks, ref_tracks = rows(tmp_path / f"{NAME}.tracks.csv"), rows(single["track"] / f"{NAME}.tracks.csv")
    assert abs(len(tracks) - len(ref_tracks)) <= boundaries
    # one person keeps one face_id: the ids of a frame's faces follow the single-machine ids one-to-one
    pairs = {(g["face_id"], x["face_id"]) for g, x in zip(got, ref)}
    split = len(pairs) - len({x for _, x in pairs})  # single-machine tracks cut in two by a boundary
    merged = len(pairs) - len({g for g, _ in pairs})  # cluster ids covering two single-machine tracks
    assert split <= boundaries and merged <= boundaries
    assert {t["face_id"] for t in tracks} == {g["face_id"] for g in got if g["face_id"]}
    assert sum(int(t["frames"]) for t in tracks) == sum(int(t["frames"]) for t in ref_tracks)
    # people: re-identified over the whole video (the segments' descriptors clustered once by
    # the driver), within one person per boundary of the single-machine count
    people, ref_people = rows(tmp_path / f"{NAME}.people.csv"), rows(single["track"] / f"{NAME}.people.csv")
    assert ref_people and abs(len(people) - len(ref_people)) <= boundaries
    assert {g["person_id"] for g in got if g["person_id"]} == {p["person_id"] for p in people}
    assert sum(float(p["on_screen_s"]) for p in people) == pytest.approx(
        sum(float(p["on_screen_s"]) for p in ref_people), abs=0.5)
    who = {(g["person_id"], x["person_id"]) for g, x in zip(got, ref) if g["person_id"] and x["person_id"]}
    assert len(who) - len({x for _, x in who}) <= boundaries, "a single-machine person split by more than the bound"
    assert len(who) - len({g for g, _ in who}) <= boundaries, "cluster persons joining more than the bound"
    side, ref_side = (json.loads((d / f"{NAME}.json").read_text()) for d in (tmp_path, single["track"]))
    assert abs(side["people_summary"]["people"] - ref_side["people_summary"]["people"]) <= boundaries
    assert not (tmp_path / f".{NAME}.cluster").exists(), "the segments' descriptors go with their folder"


@needs_ray
def test_worker_killed_mid_segment_is_retried_with_the_same_table(clip, single, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agender", "analyze", str(clip), "-o", str(tmp_path), "--no-track",
                             "--cluster", "local:2", "--cluster-segments", "4", "--group-frames", "4"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        pids = _wait_for(lambda: len(_workers_of(proc.pid)) >= 2 and _workers_of(proc.pid), 120, "two workers")
        # mid-segment: the worker has begun writing its part, and not all segments are done
        _wait_for(lambda: list((tmp_path / f".{NAME}.cluster").glob(".seg-*.partial")), 120, "a segment running")
        assert len(_metas(tmp_path)) < 4
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    finally:
        _kill_group(proc)
    assert (tmp_path / f"{NAME}.csv").read_bytes() == (single["notrack"] / f"{NAME}.csv").read_bytes()
    side = json.loads((tmp_path / f"{NAME}.json").read_text())
    assert side["frames_analysed"] == 300  # nothing lost, nothing twice
    assert sum(w["segments"] for w in side["cluster"]["per_worker"]) == 4
    assert not _alive(victim)


@needs_ray
def test_driver_killed_mid_run_resumes_with_finished_segments_skipped(clip, single, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "agender", "analyze", str(clip), "-o", str(tmp_path), "--no-track",
                             "--cluster", "local:2", "--cluster-segments", "4"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    workers: list[int] = []
    try:
        _wait_for(lambda: _metas(tmp_path), 180, "a finished segment")
        workers = _workers_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: what a crash of the driver's machine leaves
        proc.wait(10)
    finally:
        _kill_group(proc)  # then whatever it had started
        _reap(workers)
    done = {p.name for p in _metas(tmp_path)}
    assert len(done) >= 1
    assert not (tmp_path / f"{NAME}.csv").exists() and not (tmp_path / f"{NAME}.json").exists()
    r = agender(str(clip), "-o", str(tmp_path), "--no-track", "--cluster", "local:2", "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(done)} of 4 segments already done" in r.stderr
    assert (tmp_path / f"{NAME}.csv").read_bytes() == (single["notrack"] / f"{NAME}.csv").read_bytes()
    side = json.loads((tmp_path / f"{NAME}.json").read_text())
    assert side["frames_analysed"] == 300 and side["cluster"]["segments"] == 4
    assert side["cluster"]["segments_resumed"] == len(done)  # reused, not redone


# ------------------------------------------------------------------------------------------------
def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


_SECOND_NODE = """
import sys, time
from ray._private.node import Node
from ray._private.parameter import RayParams
Node(RayParams(gcs_address=sys.argv[1], temp_dir=sys.argv[2], node_ip_address="127.0.0.1", num_cpus=1,
               include_dashboard=False),
     head=False, shutdown_at_exit=True, spawn_reaper=True)
while True:
    time.sleep(1)
"""


@contextmanager
def ray_cluster():
    """``ray start --head`` on 127.0.0.1 (1 CPU) plus a second node (1 CPU): two worker
    machines in miniature. Yields the Ray Client address; both nodes' process groups are killed
    at the end."""
    # Every Ray socket stays on loopback (this machine talks to nothing else): with
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (from _env) Ray binds to 127.0.0.1, but then `ray start
    # --address` refuses to add a node, and with =1 Ray maps 127.0.0.1 to the NIC's address. So the
    # second node is started the way Ray's own multi-node test harness (ray.cluster_utils) does it:
    # a process that runs a non-head ray._private.node.Node against the head's GCS, on 127.0.0.1.
    env = _env()
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    gcs, client, *p = _free_ports(14)
    common = ["--num-cpus=1", "--disable-usage-stats", "--block", "--node-ip-address=127.0.0.1"]
    head = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={gcs}",
            f"--ray-client-server-port={client}", "--include-dashboard=false", f"--temp-dir={tmp}",
            f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}", f"--metrics-export-port={p[4]}", f"--runtime-env-agent-port={p[5]}",
            *common]
    second = [sys.executable, "-c", _SECOND_NODE, f"127.0.0.1:{gcs}", tmp]
    procs = []
    try:
        procs.append(subprocess.Popen(head, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True))
        _wait_for(lambda: _listening(client), 90, "the head's Ray Client port")
        procs.append(subprocess.Popen(second, env=env, stdout=open(Path(tmp) / "second.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True))
        _wait_for(lambda: _nodes(gcs, env) >= 2, 120, "the second node to join")
        yield f"ray://127.0.0.1:{client}", procs
    finally:
        for pr in reversed(procs):
            _kill_group(pr)
        import shutil

        if os.environ.get("AGENDER_KEEP_RAY_LOGS") is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _nodes(gcs: int, env: dict) -> int:
    """Alive nodes, as `ray status` lists them (one ``1 node_<id>`` line each under Active)."""
    r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", f"--address=127.0.0.1:{gcs}"],
                       env=env, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in out else ""
    return sum(1 for ln in active.splitlines() if ln.strip().startswith("1 node_"))


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@needs_ray
def test_ray_start_head_and_a_second_node_give_the_single_machine_table(clip, single, tmp_path):
    with ray_cluster() as (address, _):
        r = agender(str(clip), "-o", str(tmp_path), "--no-track", "--cluster", address, "--cluster-segments", "4")
        auto = agender(str(clip), "-o", str(tmp_path / "auto"), "--no-track", "--cluster", "auto",
                       "--cluster-segments", "4", env={**_env(), "RAY_ADDRESS": address})
    assert r.returncode == 0, r.stderr
    assert auto.returncode == 0, auto.stderr
    assert (tmp_path / "auto" / f"{NAME}.csv").read_bytes() == (single["notrack"] / f"{NAME}.csv").read_bytes()
    assert (tmp_path / f"{NAME}.csv").read_bytes() == (single["notrack"] / f"{NAME}.csv").read_bytes()
    cl = json.loads((tmp_path / f"{NAME}.json").read_text())["cluster"]
    assert cl["workers"] == 2 and cl["nodes"] == 2 and cl["address"] == address


@needs_ray
def test_unreachable_cluster_is_one_line_and_exit_1(clip, tmp_path):
    (port,) = _free_ports(1)
    for address in (f"ray://127.0.0.1:{port}", f"127.0.0.1:{port}"):
        t0 = time.monotonic()
        r = agender(str(clip), "-o", str(tmp_path), "--cluster", address, timeout=60)
        assert r.returncode == 1
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert lines == [f"agender: error: cannot reach the Ray cluster at {address} (connection refused)"], r.stderr
        assert time.monotonic() - t0 < 30
    assert not list(tmp_path.glob(f"{NAME}*"))


def test_single_machine_path_works_without_ray_installed(tmp_path):
    """Ray blocked from importing: analyze works; --cluster says what to install, in one line."""
    clip = VIDEOS / "walking_and_pause_270p.mp4"
    code = ("import sys; sys.modules['ray'] = None; from agender.cli.main import main; "
            "rc = main(sys.argv[1:]); assert 'ray' not in sys.modules or sys.modules['ray'] is None; sys.exit(rc)")
    base = [sys.executable, "-c", code, "analyze", str(clip), "--max-frames", "8", "-q"]
    r = subprocess.run([*base, "-o", str(tmp_path / "a")], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "walking_and_pause_270p.csv").is_file()
    r = subprocess.run([*base, "-o", str(tmp_path / "b"), "--cluster", "local:2"], env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == "agender: error: --cluster needs Ray, which is not installed: pip install 'agender[cluster]'"


def test_one_progress_line_for_the_whole_job_says_frames_fps_and_workers(caplog):
    import logging

    from agender.cluster.progress import ClusterProgress

    p = ClusterProgress(tty=False, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="agender"):
        p.start_cluster(total=1972, done=400, workers=2)  # 400 frames done by an earlier (resumed) run
        time.sleep(0.05)
        p.update(812, alive=1)
        p.update(700, alive=2)  # never goes back
        p.finish()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("cluster: 812/1972 frames, ") and lines[0].endswith("frames/s, workers 1/2 alive")
    assert lines[1].startswith("cluster: 812/1972 frames, ") and lines[1].endswith("workers 2/2 alive")


def _tar_members(path: Path) -> list[tuple[str, bytes]]:
    import tarfile

    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _frame_means(path: Path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]


EXPORTS = ("--export-ass", "--export-chips", "--export-mp4")


@needs_ray
def test_exports_on_a_cluster_are_the_single_machine_exports(clip, tmp_path):
    """--no-track: the ASS file and the chips (tar members and TSV) are byte-identical to a
    single-machine run's, the MP4 shows the same frames (its encoder is not bit-exact run to
    run); tracked: every export names the stitched table's global track ids."""
    ref = tmp_path / "single"
    assert agender(str(clip), "-o", str(ref), "-q", "--no-track", *EXPORTS).returncode == 0
    got = tmp_path / "cl"
    r = agender(str(clip), "-o", str(got), "-q", "--no-track", *EXPORTS, "--cluster", "local:2", "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    assert (got / f"{NAME}.ass").read_bytes() == (ref / f"{NAME}.ass").read_bytes()
    assert (got / f"{NAME}.chips.tsv").read_bytes() == (ref / f"{NAME}.chips.tsv").read_bytes()
    assert _tar_members(got / f"{NAME}.chips.tar") == _tar_members(ref / f"{NAME}.chips.tar")
    a, b = _frame_means(got / f"{NAME}.annotated.mp4"), _frame_means(ref / f"{NAME}.annotated.mp4")
    assert len(a) == len(b) == 300 and max(abs(x - y) for x, y in zip(a, b)) < 1.0
    side = json.loads((got / f"{NAME}.json").read_text())
    assert {Path(p).name for p in side["outputs"]} >= {f"{NAME}.ass", f"{NAME}.chips.tar", f"{NAME}.annotated.mp4"}

    tracked = tmp_path / "cl-tracked"
    r = agender(str(clip), "-o", str(tracked), "-q", "--export-ass", "--export-chips", "--cluster", "local:2",
                "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    ids = {g["face_id"] for g in rows(tracked / f"{NAME}.csv") if g["face_id"]}
    names = {line.split(",")[4] for line in (tracked / f"{NAME}.ass").read_text().splitlines()
             if line.startswith("Dialogue:")}
    assert names and names <= ids | {"-1"}, "ASS events are named by the global track ids"
    from agender.io.sinks.chips import TSV_COLUMNS

    with open(tracked / f"{NAME}.chips.tsv", newline="") as fh:  # headerless (trifle/face's layout)
        chip_ids = {c["face_id"] for c in csv.DictReader(fh, fieldnames=TSV_COLUMNS, delimiter="\t")}
    assert chip_ids and chip_ids - {"-1"} and chip_ids - {"-1"} <= ids, "chips are named by the global track ids"
    assert not (tracked / f".{NAME}.cluster").exists()


def _shot_starts(path: Path) -> list[int]:
    import cv2

    from agender.shots import ShotCutDetector

    cap, det, out, k = cv2.VideoCapture(str(path)), ShotCutDetector(), [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        if det.update(img):
            out.append(k)
        k += 1


@needs_ray
def test_detect_every_differs_only_from_a_boundary_to_the_next_shot_cut(clip, tmp_path):
    """--detect-every 3: a segment's fresh tracker starts its every-3rd-frame schedule at its own
    warm-up frame, so after a boundary it may detect on other frames than one machine does, until
    a shot cut (which restarts both schedules) brings them back in step. The bound (docs/cluster.md):
    every per-frame difference lies between a boundary and the first cut after it."""
    opts = ("--detect-every", "3", "--no-reid", "-q")
    ref, got = tmp_path / "single", tmp_path / "cl"
    assert agender(str(clip), "-o", str(ref), *opts).returncode == 0
    r = agender(str(clip), "-o", str(got), *opts, "--cluster", "local:2", "--cluster-segments", "4")
    assert r.returncode == 0, r.stderr
    bounds = json.loads((got / f"{NAME}.json").read_text())["cluster"]["boundaries"]
    assert len(bounds) == 3
    cuts = _shot_starts(clip)

    def by_frame(path):
        out: dict[int, list] = {}
        for g in rows(path):
            out.setdefault(int(g["frame"]), []).append([g[c] for c in PER_FRAME])
        return out

    a, b = by_frame(ref / f"{NAME}.csv"), by_frame(got / f"{NAME}.csv")
    differ = [f for f in range(300) if a.get(f) != b.get(f)]
    for f in differ:
        start = max(x for x in bounds if x <= f) if any(x <= f for x in bounds) else None
        assert start is not None, f"frame {f} differs before the first boundary"
        assert not [c for c in cuts if start < c <= f], f"frame {f} differs after a cut that follows boundary {start}"


@needs_ray
def test_an_image_set_is_split_across_workers_with_the_single_machine_table(tmp_path):
    """A folder of photos (plus one file that is not an image) in runs of whole estimator
    batches: the parts concatenate to the single-machine images.csv byte for byte, and the
    unreadable file is reported the same way."""
    import shutil

    photos = tmp_path / "photos"
    photos.mkdir()
    for k, src in enumerate(sorted((VIDEOS.parent / "photos").glob("*.jpg"))):
        shutil.copy(src, photos / f"{k:02d}-{src.name}")
    (photos / "03-broken.jpg").write_text("not a jpeg")
    opts = ("--group-frames", "2", "-q")
    ref = tmp_path / "single"
    r1 = agender(str(photos), "-o", str(ref), *opts)
    r2 = agender(str(photos), "-o", str(tmp_path / "cl"), *opts, "--cluster", "local:2")
    assert r1.returncode == r2.returncode, (r1.stderr, r2.stderr)
    got = (tmp_path / "cl" / "images.csv").read_bytes()
    assert got == (ref / "images.csv").read_bytes() and got.count(b"\n") > 5
    side, ref_side = (json.loads((d / "images.json").read_text()) for d in (tmp_path / "cl", ref))
    assert side["cluster"]["segments"] >= 2 and len(side["cluster"]["per_worker"]) == 2
    assert side["failed_files"] == ref_side["failed_files"] and len(side["failed_files"]) == 1
    assert side["faces"] == ref_side["faces"] and side["images"] == ref_side["images"]
    assert "03-broken.jpg" in r2.stderr

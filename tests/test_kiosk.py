"""The kiosk appliance: the install command (dry run and real, into a temporary home), its
systemd unit checked by systemd-analyze, and the freeze watchdog against faults caused for
real: a camera that stops delivering frames, a blocked display loop, a still source in a
separate process (exit status 75 for systemd to restart it), and systemd's notify socket."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import PHOTOS, REPO, VIDEOS
from agender.cli.main import main
from agender.kiosk.install import UNIT, KioskPlan, verify_unit
from agender.kiosk.watchdog import WATCHDOG_EXIT, Watchdog

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze not installed (apt-get install systemd)")


@pytest.mark.arm64_smoke
def test_kiosk_install_dry_run_prints_the_unit_and_writes_nothing(tmp_path, capsys):
    assert main(["kiosk", "install", "--dry-run", "--home", str(tmp_path), "--source", "cam:0"]) == 0
    out = capsys.readouterr().out
    assert f"would write {tmp_path}/.config/systemd/user/{UNIT}" in out
    assert f"would write {tmp_path}/.config/autostart/agender-kiosk.desktop" in out
    assert "gui --kiosk --source cam:0 --watchdog 30 --profile pi" in out
    assert "Restart=always" in out and "WatchdogSec=60" in out and "Type=notify" in out
    assert "would run: systemctl --user enable agender-kiosk.service" in out
    assert not any(tmp_path.iterdir())


@needs_systemd_analyze
def test_installed_unit_passes_systemd_analyze_verify(tmp_path, capsys):
    assert main(["kiosk", "install", "--home", str(tmp_path), "--watchdog", "20"]) == 0
    unit = tmp_path / ".config" / "systemd" / "user" / UNIT
    desktop = tmp_path / ".config" / "autostart" / "agender-kiosk.desktop"
    assert unit.is_file() and desktop.is_file()
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
    assert "systemctl --user start agender-kiosk.service" in desktop.read_text()
    assert main(["kiosk", "uninstall", "--home", str(tmp_path)]) == 0
    assert not unit.exists() and not desktop.exists()


@needs_systemd_analyze
def test_a_misspelt_unit_key_is_caught_by_the_verify_step(tmp_path):
    plan = KioskPlan(home=tmp_path)
    ok, problems = verify_unit(plan.files[plan.unit_path].replace("Restart=always", "Restartt=always"))
    assert not ok and "Restartt" in problems


def test_kiosk_install_refuses_a_zero_watchdog_as_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["kiosk", "install", "--dry-run", "--home", str(tmp_path), "--watchdog", "0"])
    assert exc.value.code == 2


def test_watchdog_pings_systemd_while_healthy_and_fires_once_when_progress_stops(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    faults: list[str] = []
    dog = Watchdog(0.6, startup_s=5, on_fault=faults.append, notify_socket=path).start(interval_s=0.1)
    try:
        assert srv.recv(64) == b"READY=1"
        for _ in range(8):  # frames keep coming for 0.8 s
            dog.progress()
            time.sleep(0.1)
        assert srv.recv(64) == b"WATCHDOG=1" and not faults
        deadline = time.monotonic() + 10  # no frame any more: it fires after 0.6 s (polled: a loaded CI box)
        while not faults and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dog.stop()
        srv.close()
    assert len(faults) == 1 and "no new frame on screen" in faults[0] and "limit 0.6 s" in faults[0]


# ----------------------------------------------------------------- faults in the real window

pytest.importorskip("PyQt5.QtWidgets")
pytest.importorskip("pytestqt")


@pytest.fixture
def live_window(qtbot, tmp_path):
    from PyQt5.QtCore import QSettings

    from agender.gui.main_window import MainWindow
    from agender.gui.settings import Settings
    from agender.gui.worker import ModelConfig

    settings = Settings(QSettings(str(tmp_path / "gui.ini"), QSettings.IniFormat))
    win = MainWindow(settings=settings, config=ModelConfig(detector="yunet", estimator="cydral", device="cpu"),
                     source="synthetic:320x240@15", probe_cameras=False)
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


@pytest.mark.arm64_smoke
def test_watchdog_fires_when_the_camera_stops_delivering_frames(qtbot, live_window):
    from agender.kiosk.watchdog import attach

    faults: list[str] = []
    dog = Watchdog(1.5, on_fault=faults.append, notify_socket="").start(interval_s=0.1)
    timer = attach(live_window, dog, interval_ms=100)
    try:
        qtbot.waitUntil(lambda: dog.progress_count >= 3, timeout=300000)  # minutes under emulation
        assert not faults
        live_window.capture.set_paused(True)  # the capture thread stops handing out frames
        qtbot.waitUntil(lambda: bool(faults), timeout=10000)
    finally:
        timer.stop()
        dog.stop()
    assert "camera or display loop frozen" in faults[0]


def test_watchdog_fires_when_the_display_loop_is_blocked(qtbot, live_window):
    from agender.kiosk.watchdog import attach

    faults: list[str] = []
    dog = Watchdog(1.0, on_fault=faults.append, notify_socket="").start(interval_s=0.1)
    timer = attach(live_window, dog, interval_ms=100)
    try:
        qtbot.waitUntil(lambda: dog.progress_count >= 3, timeout=60000)
        time.sleep(2.0)  # this test runs on the Qt thread: the display loop is frozen for 2 s
        assert faults and "no new frame on screen" in faults[0]
    finally:
        timer.stop()
        dog.stop()


def test_gui_with_watchdog_exits_75_when_its_source_stops(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "AGENDER_MODELS": str(REPO.parent / "shared" / "models"),
           "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    photo = next(p for p in sorted(PHOTOS.iterdir()) if p.suffix.lower() == ".jpg")  # one frame, then nothing
    res = subprocess.run([sys.executable, str(REPO / "app.py"), "--source", str(photo), "--watchdog", "3",
                          "--detector", "yunet", "--estimator", "cydral"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == WATCHDOG_EXIT, res.stderr[-2000:]
    assert "watchdog: no new frame on screen" in res.stderr
    assert VIDEOS.is_dir()


def test_kiosk_gui_starts_offscreen_with_the_pi_profile_and_shows_frames(tmp_path):
    import json

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "AGENDER_MODELS": str(REPO.parent / "shared" / "models"),
           "XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    stats = tmp_path / "stats.json"
    res = subprocess.run([sys.executable, str(REPO / "app.py"), "--kiosk", "--profile", "pi", "--source",
                          "synthetic:320x240@10", "--exit-after", "3", "--watchdog", "300", "--stats-json", str(stats)],
                         capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(stats.read_text())["frames_displayed"] >= 3

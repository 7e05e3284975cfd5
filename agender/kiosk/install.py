"""``agender kiosk install | uninstall [--dry-run]``: the kiosk as a systemd user service.

Why a *user* unit plus a desktop autostart entry: the window needs the logged-in desktop
(its display, Wayland or X11), which a system unit would have to guess at. Raspberry Pi OS
boots to an auto-login desktop (``raspi-config`` → boot to desktop, auto-login); its session
runs ``~/.config/autostart/*.desktop``, whose entry hands the display variables to the user
manager and starts the unit; systemd then restarts it on crash (``Restart=always``) and on a
freeze (``WatchdogSec`` + agender's own ``--watchdog``), and keeps its log in the journal.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from agender import __version__
from agender.errors import AgenderError

UNIT = "agender-kiosk.service"
AUTOSTART = "agender-kiosk.desktop"


@dataclass(frozen=True)
class KioskPlan:
    """What ``install`` writes and runs (``--dry-run`` prints exactly this)."""

    home: Path
    source: str = "cam:0"
    profile: str | None = "pi"
    watchdog_s: float = 30.0
    python: str = sys.executable
    extra_args: tuple[str, ...] = ()
    autostart: bool = True
    files: dict[Path, str] = field(init=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.watchdog_s > 0:
            raise AgenderError(f"--watchdog must be > 0 seconds (got {self.watchdog_s})")
        if not Path(self.python).is_absolute():
            raise AgenderError(f"python {self.python!r} is not an absolute path (systemd needs one)")
        self.files[self.unit_path] = render_unit(self)
        if self.autostart:
            self.files[self.autostart_path] = _template(AUTOSTART)

    @property
    def unit_path(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / UNIT

    @property
    def autostart_path(self) -> Path:
        return self.home / ".config" / "autostart" / AUTOSTART

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "agender", "gui", "--kiosk", "--source", self.source,
               "--watchdog", f"{self.watchdog_s:g}"]
        if self.profile:
            cmd += ["--profile", self.profile]
        return cmd + list(self.extra_args)

    def systemctl(self) -> list[list[str]]:
        return [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", UNIT]]


def _template(name: str) -> str:
    return (files("agender.kiosk") / "templates" / name).read_text()


def _systemd_quote(arg: str) -> str:
    # systemd's ExecStart quoting is close to the shell's for plain words; % must be doubled
    return shlex.quote(arg).replace("%", "%%")


def render_unit(plan: KioskPlan) -> str:
    return _template(UNIT).format(
        version=__version__, exec_start=" ".join(_systemd_quote(a) for a in plan.command()),
        watchdog_s=f"{plan.watchdog_s:g}", systemd_watchdog_s=f"{plan.watchdog_s + 30:g}")


def verify_unit(text: str) -> tuple[bool, str]:
    """``systemd-analyze verify`` on ``text`` (in a temp dir); (True, '') when clean or absent."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        return True, "systemd-analyze not installed: unit not verified"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / UNIT
        path.write_text(text)
        res = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=60)
    # any line is a finding (unknown keys are warnings with exit status 0)
    problems = [ln for ln in (res.stderr + res.stdout).splitlines() if ln.strip()]
    return res.returncode == 0 and not problems, "\n".join(problems)


def install(plan: KioskPlan, *, dry_run: bool = False, out=None) -> int:
    out = out or sys.stdout
    ok, problems = verify_unit(plan.files[plan.unit_path])
    if not ok:
        raise AgenderError(f"{UNIT}: systemd-analyze verify found problems: {problems.splitlines()[0]}")
    for path, text in plan.files.items():
        print(f"{'would write' if dry_run else 'writing'} {path}:", file=out)
        print("".join(f"    {ln}\n" for ln in text.splitlines()), end="", file=out)
        if not dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            tmp.write_text(text)
            os.replace(tmp, path)
    print(f"unit check (systemd-analyze verify): {problems or 'ok'}", file=out)
    for cmd in plan.systemctl():
        print(f"{'would run' if dry_run else 'running'}: {' '.join(cmd)}", file=out)
        if not dry_run:
            if not shutil.which(cmd[0]):
                print(f"agender: warning: {cmd[0]} not found; run it yourself after installing systemd", file=out)
                break
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                print(f"agender: warning: {' '.join(cmd)}: {(res.stderr or res.stdout).strip()[:200]}", file=out)
    print("next: boot to the desktop with auto-login (sudo raspi-config nonint do_boot_behaviour B4), "
          "reboot; logs: journalctl --user -u agender-kiosk -f", file=out)
    return 0


def uninstall(home: Path, *, dry_run: bool = False, out=None) -> int:
    out = out or sys.stdout
    plan_paths = [home / ".config" / "systemd" / "user" / UNIT, home / ".config" / "autostart" / AUTOSTART]
    cmds = [["systemctl", "--user", "disable", "--now", UNIT], ["systemctl", "--user", "daemon-reload"]]
    for cmd in cmds[:1]:
        print(f"{'would run' if dry_run else 'running'}: {' '.join(cmd)}", file=out)
        if not dry_run and shutil.which(cmd[0]):
            subprocess.run(cmd, capture_output=True)
    for p in plan_paths:
        if p.exists():
            print(f"{'would remove' if dry_run else 'removing'} {p}", file=out)
            if not dry_run:
                p.unlink()
    if not dry_run and shutil.which("systemctl"):
        subprocess.run(cmds[1], capture_output=True)
    return 0

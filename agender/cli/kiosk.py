"""`agender kiosk install | uninstall [--dry-run]` — the monitor as an appliance (agender.kiosk)."""
from __future__ import annotations

import argparse
from pathlib import Path

from agender.cli.common import positive_float


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("kiosk", help="install the kiosk monitor as a service that starts at boot",
                              description="Install (or remove) `agender gui --kiosk` as a systemd user service "
                                          "started by the desktop session, restarted on crash or freeze, "
                                          "logging to the journal (journalctl --user -u agender-kiosk).")
    sub = p.add_subparsers(dest="kiosk_action", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dry-run", action="store_true", help="print what would be written and run; change nothing")
    common.add_argument("--home", type=Path, default=Path.home(), metavar="DIR",
                        help="home directory to install into (default: yours)")
    i = sub.add_parser("install", parents=[common], help="write the unit + autostart entry, enable the unit")
    i.add_argument("--source", default="cam:0", metavar="SPEC", help="what the kiosk shows (default cam:0)")
    from agender.profiles import PROFILES, profile_name

    i.add_argument("--profile", type=profile_name, default="pi",
                   help=f"preset passed to the GUI (default pi; one of {', '.join(PROFILES)})")
    i.add_argument("--watchdog", type=positive_float, default=30.0, metavar="S",
                   help="restart when no new frame reached the screen for S seconds (default 30)")
    i.add_argument("--privacy", action="store_true", help="blur faces on screen and store nothing (gui --privacy)")
    i.add_argument("--no-autostart", dest="autostart", action="store_false",
                   help="no desktop autostart entry (start it yourself: systemctl --user start agender-kiosk)")
    sub.add_parser("uninstall", parents=[common], help="disable and remove the unit and autostart entry")
    p.set_defaults(func=run, _kiosk_parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    from agender.kiosk.install import KioskPlan, install, uninstall

    if args.kiosk_action == "install":
        plan = KioskPlan(home=args.home, source=args.source, profile=args.profile, watchdog_s=args.watchdog,
                         autostart=args.autostart, extra_args=("--privacy",) if args.privacy else ())
        return install(plan, dry_run=args.dry_run)
    if args.kiosk_action == "uninstall":
        return uninstall(args.home, dry_run=args.dry_run)
    args._kiosk_parser.print_help()
    return 2

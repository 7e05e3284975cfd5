"""`agender` entry point: subcommands live in one module each (``agender/cli/<name>.py``), each
exposing ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit status: 0 success, 1 some inputs failed, 2 usage error. An :class:`AgenderError` is
printed as one line (``agender: <message>``), never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from agender import __version__
from agender.errors import AgenderError

SUBCOMMANDS = ("analyze", "eval", "bench", "models", "gui", "kiosk")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agender", description="Face age & gender estimation.")
    p.add_argument("--version", action="version", version=f"agender {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"agender.cli.{name}").add_parser(sub)
    for sp in sub.choices.values():
        _accept_verbose(sp)
    return p


def _accept_verbose(p: argparse.ArgumentParser) -> None:
    """``-v`` anywhere: ``agender -v analyze …`` and ``agender analyze -v …`` (and after a
    ``models`` action). SUPPRESS keeps a subparser from resetting a ``-v`` given before it."""
    if "-v" not in p._option_string_actions:
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_verbose(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="agender: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        from agender.profiles import apply_profile

        apply_profile(args, getattr(args, "_parser", None))  # --profile fills what was left at its default
        return int(args.func(args) or 0)
    except AgenderError as exc:
        print(f"agender: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("agender: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

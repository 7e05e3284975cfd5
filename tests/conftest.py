"""Shared fixtures: real models and real data from ../shared (never copied into the repo).

Without ../shared (or ``AGENDER_SHARED=DIR`` pointing at a missing folder) every test that
needs it is skipped with the reason, never an error: :func:`pytest_collection_modifyitems`
finds them by what they touch (the path constants below, a module constant or helper built
from them, a fixture that does) or by the ``needs_shared`` marker for tests that only reach the
shared models through ``AGENDER_MODELS``.
"""
from __future__ import annotations

import csv
import os
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGENDER_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
DATA = SHARED / "data"
PHOTOS = DATA / "photos"
VIDEOS = DATA / "videos"
FACES_DEV = DATA / "faces-dev"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


@pytest.fixture(autouse=True)
def _models_on_search_path(monkeypatch, tmp_path_factory):
    """Tests find weights in ../shared/models and cache conversions in a per-session dir."""
    monkeypatch.setenv("AGENDER_MODELS", str(MODELS))
    monkeypatch.setenv("AGENDER_CACHE", str(tmp_path_factory.getbasetemp() / "agender-cache"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not shared_present():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="module")
def yunet_ssrnet():
    """YuNet + the SSR-Net estimator on the CPU from the shared models: the fixed, quick pair the
    tracking and export tests compare runs with (their figures do not move with the default)."""
    from agender.analyzer import Analyzer

    return Analyzer(detector="yunet", estimator="ssrnet", device="cpu", models=str(MODELS))


@pytest.fixture(scope="module")
def dev_rows() -> list[dict]:
    """faces-dev's labels.csv rows (file, age, gender, race)."""
    if not FACES_DEV.is_dir():
        pytest.skip(f"{FACES_DEV} not present")
    with open(FACES_DEV / "labels.csv") as fh:
        return list(csv.DictReader(fh))


def faces_dev_subset(step: int):
    """Every ``step``-th face of faces-dev (balanced: all decades, genders and races stay in)."""
    from agender.eval import LabeledSet, read_labels

    labels = read_labels(FACES_DEV / "labels.csv")
    keep = np.arange(len(labels.files))[::step]
    return LabeledSet([labels.files[i] for i in keep], labels.age[keep], labels.gender[keep],
                      None if labels.race is None else labels.race[keep])


# --------------------------------------------------------------------------- skip without ../shared

_SHARED_NAMES = frozenset({"SHARED", "MODELS", "DATA", "PHOTOS", "VIDEOS", "FACES_DEV"})
_TESTS = Path(__file__).resolve().parent
# Fixtures every test gets that only *point at* ../shared (harmless when it is absent).
_POINTERS = frozenset({"_models_on_search_path"})


def shared_present() -> bool:
    return MODELS.is_dir() and DATA.is_dir()


def _under_shared(value, depth: int = 0) -> bool:
    if isinstance(value, Path):
        return value == SHARED or SHARED in value.parents
    if isinstance(value, str):
        return str(SHARED) in value
    if isinstance(value, (list, tuple, set, frozenset)) and depth < 2:
        return any(_under_shared(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 2:
        return any(_under_shared(v, depth + 1) for v in value.values())
    return False


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _uses_shared(func, seen: set) -> bool:
    """Does ``func`` (a test, fixture or test helper) read a path under ../shared?"""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    try:
        if not Path(code.co_filename).resolve().is_relative_to(_TESTS):
            return False  # library code: it only sees what the test hands it
    except (OSError, ValueError):
        return False
    glb = getattr(func, "__globals__", {})
    for name in _code_names(code):
        if name in _SHARED_NAMES:
            return True
        value = glb.get(name)
        if _under_shared(value):
            return True
        if isinstance(value, types.FunctionType) and _uses_shared(value, seen):
            return True
        if isinstance(value, type) and any(_uses_shared(v, seen) for v in vars(value).values()
                                           if isinstance(v, types.FunctionType)):
            return True
    return False


def _needs_shared(item) -> bool:
    if item.get_closest_marker("needs_shared"):
        return True
    seen: set = set()
    if _uses_shared(getattr(item, "function", None), seen):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and _under_shared(list(callspec.params.values())):
        return True
    info = getattr(item, "_fixtureinfo", None)
    for name, defs in (info.name2fixturedefs.items() if info else ()):
        if name in _POINTERS:
            continue
        if any(_uses_shared(d.func, seen) for d in defs):
            return True
    return False


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "needs_shared: needs ../shared (models/data) even without naming a path to it")


def pytest_collection_modifyitems(config, items) -> None:
    if shared_present():
        return
    skip = pytest.mark.skip(reason=f"needs the shared models and data, absent at {SHARED} (set AGENDER_SHARED)")
    for item in items:
        if _needs_shared(item):
            item.add_marker(skip)

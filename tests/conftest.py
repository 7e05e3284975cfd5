"""Shared fixtures: real models and real data from ../shared (never copied into the repo)."""
from __future__ import annotations

import os
from pathlib import Path

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
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED

"""Defects a user hit (issue 8, section 4): each test reproduces the report."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from agender.detectors import create_detector
from agender.models import ModelStore
from conftest import MODELS

YUNET = "yunet/face_detection_yunet.onnx"


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Nothing on the search path but what the test puts in ``tmp_path/models``."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("AGENDER_MODELS", str(models))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return models


# --------------------------------------------------------------------------- --detector auto


def test_auto_detector_warns_once_naming_a_corrupt_yunet_and_the_fetch_command(user_dirs, caplog):
    (user_dirs / "yunet").mkdir()
    data = bytearray((MODELS / YUNET).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a bad download
    (user_dirs / YUNET).write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        det = create_detector("auto", models=ModelStore())
    assert det.name == "mtcnn"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    msg = warnings[0]
    assert str(user_dirs / YUNET) in msg and "corrupt" in msg and "agender models fetch yunet" in msg
    assert "mtcnn" in msg and "\n" not in msg


def test_auto_detector_is_quiet_when_yunet_was_simply_never_fetched(user_dirs, caplog):
    with caplog.at_level(logging.WARNING):
        det = create_detector("auto", models=ModelStore())
    assert det.name == "mtcnn"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_auto_detector_warns_about_an_empty_yunet_file(user_dirs, caplog):
    (user_dirs / "yunet").mkdir()
    (user_dirs / YUNET).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert create_detector("auto", models=ModelStore()).name == "mtcnn"
    (msg,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "empty" in msg and "agender models fetch yunet" in msg

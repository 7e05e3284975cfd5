"""The docs say what the code does (issue 8: stale label rule, default estimator, pinned prototxt)."""
from __future__ import annotations

import math
import re

import numpy as np

from agender.annotate import face_label
from agender.estimators.base import DEFAULT_ESTIMATOR, ESTIMATOR_VARIANTS
from agender.faces import Faces
from agender.models.store import load_manifest
from conftest import REPO

GUI_MD = (REPO / "docs" / "gui.md").read_text()


def _face(track_id: int, age: float, std: float, age_avg: float, std_avg: float):
    nan = math.nan
    f = Faces(xyxy=np.array([[0, 0, 10, 10]], np.float32), det_conf=np.array([0.9], np.float32),
              age=np.array([age], np.float32), age_std=np.array([std], np.float32),
              p_male=np.array([0.1], np.float32), track_id=np.array([track_id]),
              age_avg=np.array([age_avg if track_id >= 0 else nan], np.float32),
              p_male_avg=np.array([0.1 if track_id >= 0 else nan], np.float32),
              age_std_avg=np.array([std_avg if track_id >= 0 else nan], np.float32))
    return next(iter(f))


def test_label_rule_in_gui_md_matches_face_label():
    # tracked: the track's mean age ± the track's mean model spread (not this frame's values)
    assert face_label(_face(3, age=40, std=9, age_avg=27.2, std_avg=6.4)) == "F 27±6"
    # untracked: this frame's estimate and spread
    assert face_label(_face(-1, age=40, std=9, age_avg=0, std_avg=0)) == "F 40±9"
    # no ± below half a year (SSR-Net reports none at all)
    assert face_label(_face(-1, age=40, std=0.4, age_avg=0, std_avg=0)) == "F 40"
    text = " ".join(GUI_MD.split())
    assert "untracked labels only" not in text
    assert "a **tracked** face shows its track's values" in text and "mean of the model's own per-frame age spread" in text


def test_gui_md_names_the_real_default_estimator_and_every_variant():
    row = next(line for line in GUI_MD.splitlines() if line.startswith("| `--estimator"))
    assert f"`auto` = `{DEFAULT_ESTIMATOR}` (default)" in row
    for name, (shown, _) in ESTIMATOR_VARIANTS.items():
        assert name in row and all(v in row for v in shown if name == "ssrnet")
    row = next(line for line in GUI_MD.splitlines() if line.startswith("| `--detector"))
    assert "`mtcnn`" in row


def test_docs_say_which_levi_hassner_files_are_unpinned():
    unpinned = {e.file for e in load_manifest() if not e.sha256}
    pinned = {e.file for e in load_manifest() if e.sha256 and e.file.startswith("levi_hassner/")}
    assert "levi_hassner/gender_deploy.prototxt" in unpinned and "levi_hassner/age_deploy.prototxt" in pinned
    card = " ".join((REPO / "age_gender_net" / "README.md").read_text().split())
    models_md = " ".join((REPO / "docs" / "models.md").read_text().split())
    assert "gender prototxt is not pinned" in card
    assert not re.search(r"gender_deploy\.prototxt[^.]*which the `sha256`[^.]* pins", card)
    empty_para = models_md[models_md.index("An empty `sha256`"):][:600]
    assert all(f"`{f}`" in empty_para or f.endswith(".caffemodel") for f in unpinned)

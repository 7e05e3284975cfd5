"""The GUI's audience figures (agender.gui.stats.SeenStats): people, not tracks or samples."""
from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("PyQt5")

from agender.faces import Faces  # noqa: E402
from agender.gui.stats import SeenStats, StatsChart  # noqa: E402


def _faces(people, p_male=(), track_ids=None, fresh=True):
    n = len(people)
    pm = np.asarray(p_male if p_male else [0.9] * n, np.float32)
    return Faces(xyxy=np.tile([0, 0, 200, 200], (n, 1)), det_conf=np.ones(n), age=np.full(n, 30.0 if fresh else np.nan),
                 p_male=pm if fresh else np.full(n, np.nan), p_male_avg=pm, age_avg=np.full(n, 30.0),
                 track_id=np.arange(n) if track_ids is None else track_ids, person_id=people)


def test_people_count_once_whatever_their_tracks_and_frames():
    s = SeenStats()
    for k in range(50):  # person 1 over two tracks (a cut at frame 25), person 2 throughout
        s.add(k * 0.04, _faces([1, 2], [0.9, 0.1], track_ids=[0 if k < 25 else 5, 1]))
    sm = s.summary()
    assert (sm.total, sm.male, sm.female, sm.unit_label) == (2, 1, 1, "people")


def test_a_looping_file_does_not_count_its_cast_twice_and_says_pass_2():
    s = SeenStats()
    gen = 3 << 20
    for k in range(20):
        s.add(k * 0.04, _faces([1, 2, 3]), gen)
    for k in range(20):  # the file starts over: new generation, person ids restart
        s.add(1 + k * 0.04, _faces([1, 2, 3]), gen + 1)
    sm = s.summary()
    assert sm.total == 3 and sm.passes == 2


def test_units_are_never_mixed_and_always_named():
    s = SeenStats()
    s.add(0.0, Faces(xyxy=[[0, 0, 50, 50]], det_conf=[1], p_male=[0.2], age=[20]))  # untracked: a sample
    assert s.summary().unit_label == "face samples (1/s)"
    s.add(0.1, Faces(xyxy=[[0, 0, 50, 50]], det_conf=[1], p_male=[0.2], age=[20], track_id=[4]))
    assert s.summary().unit_label == "tracks" and s.summary().total == 1
    s.add(0.2, _faces([7]))
    assert s.summary().unit_label == "people" and s.summary().total == 1


def test_a_counted_persons_gender_change_is_an_event(qtbot):
    s = SeenStats()
    for k in range(5):
        s.add(k * 0.1, _faces([4], [0.8]))
    for k in range(40):  # the model now sees this person as female, with far more weight
        s.add(1 + k * 0.1, _faces([4], [0.05]))
    sm = s.summary()
    assert sm.changes == [(4, "male", "female")] and sm.female == 1
    chart = StatsChart()
    qtbot.addWidget(chart)
    chart.set_summary(sm)
    assert chart.headline() == "Seen, last 5 min: 1 people" and "person 4: M→F" in chart.events_line()


def test_export_writes_one_row_per_interval(tmp_path):
    s = SeenStats(interval_s=60)
    for k in range(120):  # two minutes: person 1 in both, person 2 only in the second
        t = k * 1.0
        s.add(t, _faces([1, 2] if k >= 60 else [1], [0.9, 0.2] if k >= 60 else [0.9]))
    path = tmp_path / "audience.csv"
    assert s.export_csv(path) == 2
    rows = list(csv.DictReader(open(path)))
    assert [r["count"] for r in rows] == ["1", "2"] and rows[1]["female"] == "1" and rows[0]["unit"] == "people"
    assert float(rows[1]["on_screen_s_female"]) == pytest.approx(60, abs=1.5)


def test_export_appends_finished_intervals_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "kiosk.csv"
    monkeypatch.setenv("AGENDER_AUDIENCE_CSV", str(path))
    s = SeenStats(interval_s=10)
    for k in range(25):
        s.add(float(k), _faces([1]))
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 2  # [0, 10) and [10, 20) are finished; [20, 30) is not yet

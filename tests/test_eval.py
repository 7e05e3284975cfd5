"""`agender eval`: metrics checked against an independent computation on faces-dev subsets."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agender.cli.main import main
from agender.eval import LabeledSet, Predictions, metrics
from conftest import FACES_DEV


def subset(tmp_path: Path, per_decade: int = 3) -> tuple[Path, list[dict[str, str]]]:
    """A small labels file: the first ``per_decade`` faces of every age decade, both genders."""
    with open(FACES_DEV / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked, count = [], {}
    for r in rows:
        key = (min(int(r["age"]) // 10, 7), r["gender"])
        if count.get(key, 0) < per_decade:
            count[key] = count.get(key, 0) + 1
            picked.append(r)
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "age", "gender", "race"])
        w.writeheader()
        w.writerows(picked)
    return path, picked


def run_json(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_no_detect_metrics_match_an_independent_computation_on_a_faces_dev_subset(tmp_path, capsys):
    from agender.estimators import create_estimator

    labels, rows = subset(tmp_path, per_decade=2)  # 32 faces
    res = run_json(capsys, str(labels), "--images", str(FACES_DEV), "--no-detect", "--estimator", "cydral")

    est = create_estimator("cydral", device="cpu")
    chips = [cv2.imread(str(FACES_DEV / r["file"])) for r in rows]
    out = est.estimate(chips)
    true_age = np.array([float(r["age"]) for r in rows])
    true_male = np.array([r["gender"] == "male" for r in rows])
    err = np.abs(out.age - true_age)
    right = (out.p_male >= 0.5) == true_male

    assert res["n"] == res["detected"] == len(rows)
    assert res["age_mae"] == pytest.approx(err.mean(), abs=1e-3)
    assert res["age_cs5"] == pytest.approx((err <= 5).mean(), abs=1e-3)
    assert res["gender_acc"] == pytest.approx(right.mean(), abs=1e-3)
    decade = np.array([min(int(a) // 10, 7) for a in true_age])
    for d, name in enumerate(["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]):
        g = res["groups"]["age"][name]
        assert g["n"] == (decade == d).sum() == 4
        assert g["age_mae"] == pytest.approx(err[decade == d].mean(), abs=1e-3)
        assert g["gender_acc"] == pytest.approx(right[decade == d].mean(), abs=1e-3)
    for sex in ("male", "female"):
        m = true_male == (sex == "male")
        assert res["groups"]["gender"][sex]["age_mae"] == pytest.approx(err[m].mean(), abs=1e-3)
    maes = {k: v["age_mae"] for k, v in res["groups"]["age"].items()}
    gap = res["gaps"]["age"]["age_mae"]
    assert gap["worst"] == max(maes, key=maes.get) and gap["best"] == min(maes, key=maes.get)
    assert gap["gap"] == pytest.approx(max(maes.values()) - min(maes.values()), abs=2e-4)
    assert set(res["groups"]["race"]) == {r["race"] for r in rows}


def test_metrics_count_missed_faces_as_wrong_but_average_age_error_over_found_ones():
    labels = LabeledSet(files=[Path(f"{i}.jpg") for i in range(4)], age=np.array([5.0, 25.0, 33.0, 75.0]),
                        gender=np.array(["male", "female", "female", "male"]),
                        race=np.array(["white", "white", "asian", "asian"]))
    pred = Predictions(age=np.array([9.0, 24.0, np.nan, 60.0]), p_male=np.array([0.9, 0.7, np.nan, 0.8]),
                       detected=np.array([True, True, False, True]), unreadable=[])
    res = metrics(labels, pred)
    assert res["n"] == 4 and res["detected"] == 3
    assert res["age_mae"] == pytest.approx((4 + 1 + 15) / 3, abs=1e-4)
    assert res["age_cs5"] == pytest.approx(2 / 4)  # the miss is not "within 5 years"
    assert res["gender_acc"] == pytest.approx(2 / 4)  # right: 0 and 3; wrong: 1; missed: 2
    assert res["groups"]["race"]["asian"] == {"n": 2, "detected": 1, "age_mae": 15.0, "age_cs5": 0.0, "gender_acc": 0.5}
    assert res["gaps"]["age"]["age_mae"] == {"gap": 14.0, "worst": "70+", "best": "20-29"}
    assert res["gaps"]["race"]["gender_acc"] == {"gap": 0.0, "worst": "asian", "best": "asian"} or \
        res["gaps"]["race"]["gender_acc"]["gap"] == 0.0


def test_min_gender_conf_reports_coverage_and_accuracy_of_the_faces_that_keep_a_gender():
    labels = LabeledSet(files=[Path(f"{i}.jpg") for i in range(5)], age=np.full(5, 30.0),
                        gender=np.array(["male", "female", "male", "female", "male"]), race=None)
    # confidences 0.95, 0.9, 0.55 (wrong), 0.6 (wrong), miss
    pred = Predictions(age=np.array([30, 30, 30, 30, np.nan]), p_male=np.array([0.95, 0.1, 0.45, 0.6, np.nan]),
                       detected=np.array([True, True, True, True, False]), unreadable=[])
    res = metrics(labels, pred, min_gender_conf=0.7)
    assert res["gender_acc"] == pytest.approx(2 / 5)  # every face counts, as without the option
    assert res["gender_coverage"] == pytest.approx(2 / 4) and res["gender_acc_decided"] == 1.0
    curve = {r["min_gender_conf"]: r for r in res["gender_abstain"]}
    assert curve[0.6] == {"min_gender_conf": 0.6, "coverage": 0.75, "gender_acc": pytest.approx(2 / 3, abs=1e-4)}
    assert curve[0.95]["coverage"] == 0.25 and curve[0.95]["gender_acc"] == 1.0


def test_with_detection_a_blank_image_is_a_miss_that_counts_against_accuracy(tmp_path, capsys):
    labels, rows = subset(tmp_path, per_decade=1)  # 16 faces
    cv2.imwrite(str(tmp_path / "blank.jpg"), np.full((200, 200, 3), 128, np.uint8))
    with open(labels, "a", newline="") as fh:
        csv.writer(fh).writerow([str(tmp_path / "blank.jpg"), 30, "male", "white"])
    res = run_json(capsys, str(labels), "--images", str(FACES_DEV), "--detector", "yunet")
    assert res["n"] == 17 and res["detector"] == "yunet"
    assert res["detected"] <= 16
    assert res["gender_acc"] <= res["detected"] / 17 + 1e-9


def test_table_output_has_overall_per_group_rows_and_gaps(tmp_path, capsys):
    labels, _ = subset(tmp_path, per_decade=1)
    assert main(["eval", str(labels), "--images", str(FACES_DEV), "--no-detect", "--estimator", "ssrnet:wiki"]) == 0
    out = capsys.readouterr().out
    for text in ("age MAE", "all", "age 70+", "gender female", "race white", "worst-group gaps"):
        assert text in out


def test_labels_without_required_columns_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "labels.csv"
    bad.write_text("path,years\nx.jpg,3\n")
    assert main(["eval", str(bad), "--no-detect"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"agender: error: {bad}: missing column(s) age, file, gender; need file,age,gender[,race]"


def test_missing_labels_file_is_one_line_error(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.csv")]) == 1
    assert "no such labels file" in capsys.readouterr().err

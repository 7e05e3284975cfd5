"""Every output of ``agender analyze`` is byte-identical to what the code made before the
issue-13 refactor (stage/sink contracts, one frame driver, one column list).

The outputs of shared clips cannot be committed, so the digests are: sha256 of every table,
export and archive a run writes, and of its sidecar once the fields that change from run to run
(timings, creation time, version, mtime, absolute model paths) are dropped. The digests below
were recorded with the code at 454604a (before the refactor), by running this file as a script:

    AGENDER_MODELS=../shared/models python tests/test_refactor_identity.py

A digest that changes means an output changed: either a regression, or an intended change that
must say so and re-record the digests.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

import pytest

if __package__ in (None, ""):  # run as a script: find conftest's constants
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import PHOTOS, SHARED, VIDEOS  # noqa: E402

WALK = VIDEOS / "walking_and_pause_270p.mp4"
CLASSROOM = VIDEOS / "classroom_270p.mp4"

#: The digests were recorded when cydral:int8 was the default estimator; the default is now
#: agender:int8, so the cases name the estimator they were recorded with.
_RECORDED_WITH = ["--estimator", "cydral:int8"]

#: name -> (inputs, options); each is one ``agender analyze`` into its own folder.
CASES: dict[str, tuple[list[Path], list[str]]] = {
    "video-tracked": ([WALK], [*_RECORDED_WITH]),
    "video-untracked-jsonl": ([WALK], [*_RECORDED_WITH, "--no-track", "--format", "jsonl"]),
    "video-detect-every-exports": ([CLASSROOM], [*_RECORDED_WITH, "--detect-every", "3", "--skip-similar", "3",
                                                 "--export-ass", "--export-chips", "--export-mp4"]),
    "video-hold-noreid-small-groups": ([CLASSROOM], [*_RECORDED_WITH, "--detect-every", "2", "--track-between",
                                                     "hold", "--no-reid", "--group-frames", "3", "--min-face", "30"]),
    "photos-dnn-ssrnet": ([PHOTOS], ["--detector", "dnn", "--estimator", "ssrnet:morph"]),
}

#: Sidecar fields that differ between two runs of the same code on the same input, or between
#: two checkouts of it: the resume fingerprint hashes the input's path and mtime.
_VOLATILE = ("wall_s", "fps", "ms_per_frame", "created", "agender_version", "fingerprint")

#: A model made on the user's machine (an int8 quantization, a Keras conversion) is named after
#: its source's sha256; its own bytes are the local converter's, so only its name is compared.
_DERIVED = re.compile(r"^[0-9a-f]{64}")


def stable_sidecar(data: dict) -> dict:
    """The sidecar without what changes from run to run or machine to machine."""
    data = {k: v for k, v in data.items() if k not in _VOLATILE}
    if isinstance(data.get("input"), str):
        data["input"] = Path(data["input"]).name
    elif isinstance(data.get("input"), list):
        data["input"] = [Path(p).name for p in data["input"]]
    data["models"] = [{"file": Path(m["file"]).name,
                       "sha256": None if _DERIVED.match(Path(m["file"]).name) else m["sha256"]}
                      for m in data.get("models", [])]
    run = dict(data.get("run", {}))
    run.pop("version", None)
    if "input" in run:  # an image set's sha256 hashes its paths and mtimes
        run["input"] = {k: v for k, v in run["input"].items() if k not in ("mtime_ns", "path", "sha256")}
    data["run"] = run
    return data


def tar_members(path: Path) -> bytes:
    """Names and bytes of an archive's members (their mtimes are the run's clock)."""
    with tarfile.open(path) as tar:
        return b"".join(m.name.encode() + b"\0" + tar.extractfile(m).read() for m in tar.getmembers())


def video_outline(path: Path) -> str:
    """Frame count, size and each frame's mean level to 0.1: the H.264 encoder is not
    deterministic (its rate control runs in threads), so an MP4 is compared by what it shows."""
    import av

    with av.open(str(path)) as container:
        means = [f"{f.to_ndarray(format='gray').mean():.1f}" for f in container.decode(video=0)]
        stream = container.streams.video[0]
        return f"{len(means)}x{stream.width}x{stream.height}:" + ",".join(means)


def digest_folder(folder: Path) -> dict[str, str]:
    """sha256 (first 16 hex digits) of each output file, sidecars made stable first, archives
    by their members; an MP4 by its :func:`video_outline`."""
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".mp4":
            out[path.name] = video_outline(path)
            continue
        if path.suffix == ".json":
            blob = json.dumps(stable_sidecar(json.loads(path.read_text())), sort_keys=True).encode()
        elif path.suffix == ".tar":
            blob = tar_members(path)
        else:  # a table names its images by path: the checkout's place is not part of the output
            blob = path.read_bytes().replace(str(SHARED).encode(), b"<shared>")
        out[path.name] = hashlib.sha256(blob).hexdigest()[:16]
    return out


def same_outline(got: str, want: str, tolerance: float = 0.5) -> bool:
    head_got, _, means_got = got.partition(":")
    head_want, _, means_want = want.partition(":")
    pairs = list(zip(means_got.split(","), means_want.split(",")))
    return head_got == head_want and all(abs(float(a) - float(b)) <= tolerance for a, b in pairs)


def produce(name: str, outdir: Path) -> dict[str, str]:
    from agender.cli.main import main

    inputs, options = CASES[name]
    assert main(["analyze", *map(str, inputs), *options, "-q", "-o", str(outdir)]) == 0
    return digest_folder(outdir)


# Recorded at 454604a (see the module docstring); re-recorded there once the digests stopped
# depending on where the checkout and ../shared lie (paths, mtimes, locally made models).
# Session 6: the three tracked sidecars re-recorded, their only change being the tracking
# stage's fingerprint in "run" (it now names the gender schedule, ",gender=3/1.0s"); every table,
# export and archive digest is the one recorded at 454604a.
EXPECTED: dict[str, dict[str, str]] = {
    "photos-dnn-ssrnet": {
        "images.csv": "be0b6881281d63db",
        "images.json": "6c221d19540f55ba",
    },
    "video-detect-every-exports": {
        "classroom_270p.annotated.mp4": (
            "45x480x270:"
            "123.3,123.3,123.4,123.3,123.3,123.3,123.3,123.2,123.3,123.2,123.5,123.4,"
            "123.4,123.3,123.4,123.3,123.3,123.2,123.3,123.2,123.3,123.2,123.4,123.3,"
            "123.4,123.2,123.2,123.3,123.2,123.2,123.3,123.2,123.3,123.3,123.3,123.2,"
            "123.4,123.3,123.3,123.2,123.2,123.2,123.2,123.1,123.1"
        ),
        "classroom_270p.ass": "19ad341061851dec",
        "classroom_270p.chips.tar": "912704b544b81ab5",
        "classroom_270p.chips.tsv": "8856f4c2c6a6ce06",
        "classroom_270p.csv": "baf0d13b590e1459",
        "classroom_270p.json": "d10e65ea3ce8db4a",
        "classroom_270p.people.csv": "e386a6637788fd6c",
        "classroom_270p.tracks.csv": "12c76aca1cb74c28",
    },
    "video-hold-noreid-small-groups": {
        "classroom_270p.csv": "4cfc19d43a60db02",
        "classroom_270p.json": "d5b6545ffbf21c24",
        "classroom_270p.tracks.csv": "1d04098695e5c270",
    },
    "video-tracked": {
        "walking_and_pause_270p.csv": "fbfdfe43e113daaf",
        "walking_and_pause_270p.json": "5e992e04c1154096",
        "walking_and_pause_270p.people.csv": "70800c2094b75ffe",
        "walking_and_pause_270p.tracks.csv": "9df5c4fe3e027b56",
    },
    "video-untracked-jsonl": {
        "walking_and_pause_270p.json": "76c856e96fbb9ffc",
        "walking_and_pause_270p.jsonl": "402bd52868ffa302",
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_are_byte_identical_to_the_pre_refactor_code(name, tmp_path):
    got, want = produce(name, tmp_path / name), EXPECTED[name]
    assert sorted(got) == sorted(want)
    for file in want:
        if file.endswith(".mp4"):
            assert same_outline(got[file], want[file]), file
        else:
            assert got[file] == want[file], file


if __name__ == "__main__":
    import os
    import tempfile

    os.environ.setdefault("AGENDER_CACHE", tempfile.mkdtemp(prefix="agender-cache-"))
    keep = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="agender-identity-"))
    recorded = {name: produce(name, keep / name) for name in sorted(CASES)}
    print(json.dumps(recorded, indent=4))

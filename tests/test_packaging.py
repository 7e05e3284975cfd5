"""The package as a user gets it: a real wheel, installed into a fresh venv, run from a folder
outside the checkout (so nothing can come from the source tree).

The fresh venv has no pip and no dependencies (creating it and installing the wheel takes a
few seconds, no network); the dependencies come from the test interpreter's own site-packages
through PYTHONPATH, which holds no ``agender`` of its own (an editable install is a ``.pth``
hook, and PYTHONPATH folders do not run ``.pth`` files): the test checks that the ``agender``
imported is the installed wheel's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import MODELS, REPO

MANIFESTS = ["agender/models/manifests/face_net.toml", "agender/models/manifests/age_gender_ssrnet.toml",
             "agender/models/manifests/age_gender_net.toml"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """Build the wheel from a copy of the sources, install it into a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "agender", src / "agender", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run = dict(capture_output=True, text=True, timeout=300)
    proc = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(root / "dist"), str(src)], **run)
    assert proc.returncode == 0, proc.stderr
    wheel = next((root / "dist").glob("agender-*.whl"))
    venv = root / "venv"
    proc = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    assert proc.returncode == 0, proc.stderr
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    proc = subprocess.run([*pip, "--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)], **run)
    assert proc.returncode == 0, proc.stderr
    exe = py.with_name("agender.exe" if os.name == "nt" else "agender")
    outside = root / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(_dependency_dirs()), "AGENDER_MODELS": str(MODELS),
           "XDG_CACHE_HOME": str(root / "cache"), "AGENDER_CACHE": str(root / "cache")}
    return {"wheel": wheel, "py": py, "exe": exe, "cwd": outside, "env": env, "venv": venv}


def _dependency_dirs() -> list[str]:
    """This interpreter's site-packages folders (the dependencies), never a folder that holds an
    ``agender`` package (the checkout; a venv inside the checkout is fine: its editable install
    is a .pth hook that PYTHONPATH folders do not run)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]
    out: list[str] = []
    for d in dirs:
        if d not in out and Path(d).is_dir() and not (Path(d) / "agender").exists():
            out.append(d)
    return out


def _agender(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(installed["exe"]), *args], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=120)


def test_wheel_ships_the_model_manifests(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert all(m in names for m in MANIFESTS), [n for n in names if "manifest" in n]


def test_installed_wheel_imports_agender_from_the_venv_not_the_checkout(installed):
    proc = subprocess.run([str(installed["py"]), "-c", "import agender; print(agender.__file__)"],
                          cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_relative_to(installed["venv"]) and not path.is_relative_to(REPO)


def test_installed_models_verify_finds_the_shared_models(installed):
    proc = _agender(installed, "models", "verify")
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.splitlines()[-1]
    assert summary.startswith("11 verified,"), proc.stdout  # every shared file with a pinned sha256
    assert f"ok          yunet/face_detection_yunet.onnx  {MODELS / 'yunet/face_detection_yunet.onnx'}" in proc.stdout


def test_installed_models_list_shows_manifest_models_not_only_bundled(installed):
    proc = _agender(installed, "models", "list")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert {"yunet", "dnn", "lbp", "ssrnet:wiki", "ssrnet:morph", "levi-hassner"} <= names
    assert {"cydral", "mtcnn", "haar"} <= names  # the bundled ones too


def test_installed_models_path_has_no_checkout_folders(installed):
    proc = _agender(installed, "models", "path")
    assert proc.returncode == 0, proc.stderr
    assert "(repository)" not in proc.stdout and str(REPO) not in proc.stdout


def test_python_3_10_reads_the_manifests_with_tomli_declared_as_its_dependency():
    """requires-python says 3.10, which has no tomllib: the store falls back to tomli (a
    dependency on 3.10 only). Run here by hiding tomllib and handing its twin in as tomli."""
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.10"
    assert any(d.replace(" ", "").startswith("tomli>=") and "python_version<'3.11'" in d.replace(" ", "")
               for d in meta["dependencies"]), meta["dependencies"]
    code = ("import sys, tomllib; sys.modules['tomli'] = tomllib; sys.modules['tomllib'] = None\n"
            "from agender.models import store\n"
            "assert store.tomllib is sys.modules['tomli']\n"
            "print(len(store.load_manifest()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == 14


# Standard-library names that Python 3.10 lacks (3.11+), as `module` or `module.attr`.
_NEW_IN_311 = {"tomllib", "wsgiref.types", "datetime.UTC", "typing.Self", "typing.Never", "typing.LiteralString",
               "typing.assert_never", "typing.reveal_type", "typing.NotRequired", "typing.Required",
               "typing.TypeVarTuple", "typing.Unpack", "typing.dataclass_transform", "enum.StrEnum",
               "enum.ReprEnum", "asyncio.TaskGroup", "asyncio.timeout", "hashlib.file_digest",
               "contextlib.chdir", "logging.getLevelNamesMapping", "operator.call", "itertools.batched"}


def test_sources_parse_as_python_3_10_and_use_3_11_names_only_behind_a_fallback():
    import ast

    bad = []
    for path in sorted((REPO / "agender").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 10))
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                   and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                           for h in t.handlers) for n in ast.walk(t)}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"]
            for n in names:
                if n in _NEW_IN_311 and id(node) not in guarded:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {n}")
    assert not bad, bad

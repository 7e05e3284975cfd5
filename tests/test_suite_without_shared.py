"""Without ../shared the suite skips what needs it (with the reason) and runs the rest:
no errors, no failures (tests/conftest.py's pytest_collection_modifyitems)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO


def test_tests_needing_shared_skip_with_a_reason_when_it_is_absent(tmp_path):
    env = {**os.environ, "AGENDER_SHARED": str(tmp_path / "nonexistent"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("AGENDER_MODELS", None)
    files = ["tests/test_detectors.py", "tests/test_models_cli.py", "tests/test_analyzer.py", "tests/test_levi_hassner.py"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *files],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert not re.search(r"\d+ (failed|errors?)\b", out), out[-3000:]
    skipped = int(re.search(r"(\d+) skipped", out).group(1))
    passed = int(re.search(r"(\d+) passed", out).group(1))
    assert skipped > 50 and passed > 5, out[-1000:]  # the ones that need no shared data still run
    assert f"absent at {tmp_path / 'nonexistent'}" in out

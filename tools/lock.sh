#!/usr/bin/env bash
# Regenerate requirements.lock: the exact versions CI installs (.ci/run), resolved from the
# ranges in pyproject.toml (extras: test, which includes the GUI, and cluster: Ray for --cluster) in a brand-new virtual
# environment, so nothing installed by hand leaks in. Usage: tools/lock.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-python3}"
tmp="$(mktemp -d)"
# the editable install writes agender.egg-info into the checkout; a stale one would then feed
# the wheel that tests/test_packaging.py builds: remove it unless it was there before
had_egg=""; [ -e agender.egg-info ] && had_egg=1
trap 'rm -rf "$tmp"; [ -n "$had_egg" ] || rm -rf agender.egg-info' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,cluster]"
{
  echo "# Exact versions CI installs. Regenerate with: tools/lock.sh   (ranges live in pyproject.toml)"
  echo "# Resolved on $("$tmp/venv/bin/python" -c 'import platform,sys; print(f"Python {sys.version.split()[0]}, {platform.system()} {platform.machine()}")')"
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check | grep -v -E "^(agender|pip)(==| @)"
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"

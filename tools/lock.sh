#!/usr/bin/env bash
# Regenerate requirements.lock: the exact versions CI installs (.ci/run), resolved from the
# ranges in pyproject.toml (extras: test, which includes the GUI, and cluster: Ray for --cluster) in a brand-new virtual
# environment, so nothing installed by hand leaks in. Usage: tools/lock.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,cluster]"
{
  echo "# Exact versions CI installs. Regenerate with: tools/lock.sh   (ranges live in pyproject.toml)"
  echo "# Resolved on $("$tmp/venv/bin/python" -c 'import platform,sys; print(f"Python {sys.version.split()[0]}, {platform.system()} {platform.machine()}")')"
  "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check | grep -v -E "^(agender|pip)(==| @)"
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"

#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite: the main environment first,
# then the detection tests in the detection environment. Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export BOBKIT_DETECTION_PYTHON="$PWD/.venv-det/bin/python"
.venv/bin/python -m pytest -q --timeout=1800 "$@"
.venv-det/bin/python -m pytest -q --timeout=1800 tests/test_detection*.py "$@"

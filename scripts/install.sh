#!/usr/bin/env bash
# Install bobkit into ./.venv (classification, retrieval, OOD, verify, report, executors, tests)
# and, unless --no-detection, the detection environment into ./.venv-det (torch 2.1.2 + mmcv ops).
# Idempotent: a second run only checks. Works offline from a wheelhouse: PIP_FIND_LINKS=DIR PIP_NO_INDEX=1.
set -euo pipefail
cd "$(dirname "$0")/.."

detection=1
for arg in "$@"; do
  case "$arg" in
    --no-detection) detection=0 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --no-detection or --help)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "install.sh: bobkit needs Python >= 3.10 ($PYTHON is $("$PYTHON" -V 2>&1)); set PYTHON=..." >&2
  exit 3
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned here (the images pin it in docker/); the rest comes from pyproject's extras.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[all]"
echo "install.sh: .venv ready ($(.venv/bin/bobkit --version 2>/dev/null || echo bobkit))"

if [ "$detection" = 1 ]; then
  bash .ci/setup-detection.sh .venv-det
  echo "install.sh: .venv-det ready (detection family)"
fi

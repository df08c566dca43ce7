#!/usr/bin/env bash
# Create bobkit's detection environment from scratch (idempotent, as root or a user, no stdin):
# a second virtualenv with torch 2.1.2, mmcv 2.1.0 built from source with its compiled ops,
# mmengine 0.10.7, mmdet 3.3.0 and bobkit itself (editable).
#   Why a second environment: mmcv 2.1's C++ ops do not compile against the torch of the main
#   environment (its headers need C++20); torch 2.1.2 is the newest that mmcv 2.1.0 builds with.
# The mmcv wheel takes 10-30 minutes to compile on 2 cores, so it is built once into a wheel cache
# and reused. Without a GPU the ops are CPU-only (FORCE_CUDA=0); the detection image builds them
# with CUDA (docker/).
# Environment: BOBKIT_DET_VENV (default <repo>/.venv-det), BOBKIT_WHEEL_CACHE (default
# ~/.cache/bobkit-wheels), PYTHON (default python3), MAX_JOBS (compile jobs, default nproc).
# Afterwards: BOBKIT_DETECTION_PYTHON=<venv>/bin/python makes the local executor use it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BOBKIT_DET_VENV:-$repo/.venv-det}"
wheels="${BOBKIT_WHEEL_CACHE:-$HOME/.cache/bobkit-wheels}"
python="${PYTHON:-python3}"
jobs="${MAX_JOBS:-$(nproc)}"

TORCH="torch==2.1.2 torchvision==0.16.2"
MMCV_VERSION="2.1.0"
BUILD_TOOLS="setuptools<70 wheel ninja"
# mmengine's metadata asks for opencv-python (GUI build, needs libGL): install it without
# dependencies and give it the headless build and its other requirements instead.
RUNTIME="mmengine==0.10.7 mmdet==3.3.0 numpy<2 opencv-python-headless<4.11 pycocotools shapely scipy six
terminaltables tqdm matplotlib addict yapf termcolor rich packaging pillow timm==1.0.31
pydantic>=2.6,<3 typer>=0.12 pyyaml>=6 filelock>=3.12 pytest>=8 pytest-timeout>=2.2"

say() { printf '[setup-detection] %s\n' "$*"; }

ready() {
  [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
import mmcv.ops, mmdet, mmengine, torch, bobkit  # noqa: F401
assert md.version("torch").startswith("2.1.2") and md.version("mmcv") == "2.1.0"
assert md.version("mmdet") == "3.3.0" and md.version("mmengine") == "0.10.7"
from mmcv.ops import RoIAlign, nms  # noqa: F401
EOF
}

if ready && [ "$("$venv/bin/python" -c 'import bobkit, pathlib; print(pathlib.Path(bobkit.__file__).resolve().parents[1])')" = "$repo" ]; then
  say "ready: $venv"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
say "installing torch and the build tools"
# shellcheck disable=SC2086
"${pip[@]}" install -q $TORCH "numpy<2" "opencv-python-headless<4.11" $BUILD_TOOLS

mkdir -p "$wheels"
wheel="$(ls "$wheels"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  say "building mmcv $MMCV_VERSION with ops into $wheels (slow: 10-30 minutes)"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$jobs" \
    "${pip[@]}" wheel -q --no-build-isolation --no-deps -w "$wheels" "mmcv==$MMCV_VERSION"
  wheel="$(ls "$wheels"/mmcv-"$MMCV_VERSION"-*.whl | head -1)"
fi
say "installing $wheel"
"${pip[@]}" install -q --no-deps --force-reinstall "$wheel"

say "installing mmengine, mmdet and bobkit's requirements"
# shellcheck disable=SC2086
"${pip[@]}" install -q --no-deps mmengine==0.10.7 mmdet==3.3.0
# shellcheck disable=SC2046
"${pip[@]}" install -q $(printf '%s\n' $RUNTIME | grep -v '^mm')
"${pip[@]}" install -q --no-deps -e "$repo"

if ! ready; then
  say "the detection environment does not import (mmcv.ops, mmdet, bobkit); see the output above"
  exit 1
fi
say "ready: $venv (torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)'))"

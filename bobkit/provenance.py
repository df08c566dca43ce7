"""Where a result came from: code, image, libraries, device, seed, times, host.

`collect()` builds the provenance block of metrics.json. A runner adds facts only it knows
(the device it trained on, a deviation it applied at run time) with `record()`; they are kept in
<run_dir>/provenance_extra.json and merged in when metrics.json is written.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

EXTRA = "provenance_extra.json"
PACKAGES = ("torch", "torchvision", "timm", "mmdet", "mmcv", "mmengine", "open_clip_torch", "numpy")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any]:
    """The commit of the bobkit checkout (or $BOBKIT_GIT_COMMIT, set when an image is built)."""
    env = os.environ.get("BOBKIT_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None}
    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    commit = head.stdout.strip() if head.returncode == 0 else None
    return {"commit": commit, "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}


def device_info() -> dict[str, Any]:
    """CUDA version and GPU names, if torch is importable here (it is in every runner's environment)."""
    try:
        import torch
    except ImportError:
        return {"cuda": None, "device": "cpu", "gpu_name": None, "gpu_count": 0}
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if count else None,
            "device": "cuda" if count else "cpu", "gpu_count": count,
            "gpu_name": torch.cuda.get_device_name(0) if count else None}


def record(run_path: Path, key: str, value: Any) -> None:
    """Add a runner-known fact to the run's provenance (merged into metrics.json at the end)."""
    from bobkit.results import atomic_write_json

    path = Path(run_path) / EXTRA
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    atomic_write_json(path, data)


def note_deviation(run_path: Path, deviation_id: str, text: str) -> None:
    path = Path(run_path) / EXTRA
    data = json.loads(path.read_text()) if path.is_file() else {}
    devs = data.get("runtime_deviations", [])
    if not any(d["id"] == deviation_id for d in devs):
        devs.append({"id": deviation_id, "text": text})
    record(run_path, "runtime_deviations", devs)


def extra(run_path: Path) -> dict[str, Any]:
    path = Path(run_path) / EXTRA
    return json.loads(path.read_text()) if path.is_file() else {}


def collect(spec, run_path: Path, started: str, finished: str) -> dict[str, Any]:
    from bobkit import __version__

    git = git_commit()
    out: dict[str, Any] = {
        "bobkit": __version__, "git_commit": git["commit"], "git_dirty": git["dirty"],
        "image": os.environ.get("BOBKIT_IMAGE"), "image_digest": os.environ.get("BOBKIT_IMAGE_DIGEST"),
        "python": platform.python_version(), "python_executable": sys.executable,
        **{name.replace("-", "_"): package_version(name) for name in PACKAGES},
        **device_info(),
        "seed": spec.seed, "started": started, "finished": finished, "host": socket.gethostname(),
        "deviations": list(spec.deviations), "faithful": spec.faithful, "smoke": spec.smoke,
    }
    out.update(extra(run_path))
    return out

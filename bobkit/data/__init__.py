"""Dataset readers in the datasets' published on-disk layouts, and tiny synthetic stand-ins.

A reader checks the layout first and names exactly what is missing (EnvironmentMissing, exit 3),
with the download page from the dataset's manifest entry. Synthetic datasets (bobkit.data.synthetic)
are written in the same layouts and read through the same readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bobkit.errors import EnvironmentMissing


def default_data_root() -> Path:
    """--data-root, else $BOBKIT_DATA, else ~/.cache/bobkit/data (callers pass the option first)."""
    import os

    env = os.environ.get("BOBKIT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bobkit" / "data"


def dataset_dir(dataset_spec: dict[str, Any], data_root: Path) -> Path:
    """Where a dataset lives under the data root (its manifest `path`)."""
    return Path(data_root) / dataset_spec.get("path", dataset_spec["id"])


def missing(dataset_spec: dict[str, Any], path: Path, what: str) -> EnvironmentMissing:
    """One line: which dataset, which path is missing or wrong, and where to get it."""
    urls = dataset_spec.get("urls") or []
    get = f"download it from {urls[0]}" if urls else "see `bobkit show " + str(dataset_spec.get("id")) + "`"
    layout = dataset_spec.get("layout_doc")
    hint = f" (expected layout: {layout})" if layout else ""
    return EnvironmentMissing(
        f"dataset '{dataset_spec.get('id')}': {path} {what}{hint}; {get} and place it under the data root "
        f"(--data-root or BOBKIT_DATA)"
    )

"""Tiny deterministic datasets written in a dataset's REAL on-disk layout, for smoke runs and tests.

The images are learnable on purpose: each class has its own colour and stripe pattern, with a
little per-image noise, so a tiny model separates them in a few epochs. Every pixel depends only
on (class, index, seed), so two writes of the same dataset are byte-identical.

Writers are registered per layout name (the `layout` field of a dataset manifest entry) in
SYNTHETIC_WRITERS as "module:function"; other task families add their own layouts there.
A writer is `write(dest: Path, spec: dict) -> None` and fills the empty folder `dest`.
"""

from __future__ import annotations

import colorsys
import hashlib
import importlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

SYNTHETIC_CLASSES = 4  # classes of a synthetic classification set (few, so smoke runs stay tiny)
SYNTHETIC_SIZE = 40  # pixels; smoke runs crop 32 px out of it
DONE_MARKER = ".bobkit-synthetic-complete"
WRITES_LOG = ".bobkit-synthetic-writes"  # beside the datasets: one line per write (who wrote which)

SYNTHETIC_WRITERS: dict[str, str] = {
    "imagefolder": "bobkit.data.classification_synthetic:write_imagefolder",
    "inat2021": "bobkit.data.classification_synthetic:write_inat2021",
    "cifar_python": "bobkit.data.classification_synthetic:write_cifar100",
    "flowers102_mat": "bobkit.data.classification_synthetic:write_flowers102",
    "aircraft_lists": "bobkit.data.classification_synthetic:write_aircraft",
    "eurosat_folders": "bobkit.data.classification_synthetic:write_eurosat",
    "chexpert_csv": "bobkit.data.classification_synthetic:write_chexpert",
    "visda2017": "bobkit.data.classification_synthetic:write_visda2017",
    "imagenet_wnid_folders": "bobkit.data.ood:write_wnid_folders",
    "imagenet_v2_folders": "bobkit.data.ood:write_v2_folders",
    "class_folders": "bobkit.data.retrieval:write_class_folders",
    "revisitop": "bobkit.data.retrieval:write_revisitop",
    "gldv2_retrieval": "bobkit.data.retrieval:write_gldv2",
    "copydays": "bobkit.data.retrieval:write_copydays",
    "coco": "bobkit.data.coco:write_synthetic_coco",
    "sim10k_voc": "bobkit.data.sim10k:write_synthetic_sim10k_voc",
    "cityscapes_coco": "bobkit.data.cityscapes:write_synthetic_cityscapes_coco",
}


def rng_for(*keys: Any) -> np.random.Generator:
    """A generator seeded by a stable hash of `keys` (never Python's salted hash())."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def class_colour(label: int, num_classes: int) -> np.ndarray:
    """Evenly spaced hues: neighbouring classes still differ clearly in colour."""
    hue = (label % max(num_classes, 1)) / max(num_classes, 1)
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.9)
    return np.array([r, g, b], dtype=np.float32) * 255.0


def class_pixels(label: int, index: int, *, num_classes: int, size: int | tuple[int, int] = SYNTHETIC_SIZE,
                 seed: int = 0, gray: bool = False) -> np.ndarray:
    """An HxWx3 (or HxW when gray) uint8 image of one class: colour + oriented stripes + noise."""
    h, w = (size, size) if isinstance(size, int) else size
    rng = rng_for("class_pixels", label, index, seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.pi * (label % 4) / 4.0
    period = 4.0 + 2.0 * ((label // 4) % 4)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + phase)
    if gray:
        level = 40.0 + 175.0 * (label % max(num_classes, 1)) / max(num_classes - 1, 1)
        img = level * (0.7 + 0.3 * stripes) + rng.normal(0, 6, size=(h, w))
    else:
        colour = class_colour(label, num_classes)
        img = colour[None, None, :] * (0.6 + 0.4 * stripes[..., None]) + rng.normal(0, 8, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def class_image(label: int, index: int, *, num_classes: int, size: int | tuple[int, int] = SYNTHETIC_SIZE,
                seed: int = 0, gray: bool = False):
    """The same picture as a PIL image (RGB, or L when gray)."""
    from PIL import Image

    return Image.fromarray(class_pixels(label, index, num_classes=num_classes, size=size, seed=seed, gray=gray))


def save_image(img, path: Path, **save_kwargs: Any) -> None:
    """Save with fixed encoder settings so the bytes are reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), None)
    if fmt == "JPEG":
        save_kwargs.setdefault("quality", 95)
        save_kwargs.setdefault("subsampling", 0)
    img.save(path, format=fmt, **save_kwargs)


def writer_for(layout: str) -> Callable[[Path, dict], None] | None:
    target = SYNTHETIC_WRITERS.get(layout)
    if target is None:
        return None
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def write_synthetic(dataset_spec: dict[str, Any], dest: Path) -> Path:
    """Write the dataset's synthetic stand-in into `dest` once; return `dest`.

    Several processes ask for the same folder at once (the ranks of a torchrun run, two runs of one
    folder): one writes, under a file lock, into a temporary folder renamed into place; the others wait
    for the lock and then find the finished folder. A finished folder carries a marker file; an
    unfinished one (a killed write) is replaced. Each write appends a line to WRITES_LOG beside the
    folder, so a second write of the same folder shows.
    """
    from filelock import FileLock

    from bobkit.errors import BadInput

    dest = Path(dest)
    if (dest / DONE_MARKER).is_file():
        return dest
    layout = dataset_spec["layout"]
    writer = writer_for(layout)
    if writer is None:
        raise BadInput(f"dataset '{dataset_spec.get('id')}': no synthetic writer for layout '{layout}'; "
                       f"known: {', '.join(sorted(SYNTHETIC_WRITERS))}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if (dest / DONE_MARKER).is_file():  # written by another process while this one waited
            return dest
        for stale in dest.parent.glob(f".{dest.name}.*"):  # a killed writer's temporary folder
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            writer(tmp, dataset_spec)
            (tmp / DONE_MARKER).write_text(f"layout {layout}\n")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        with open(dest.parent / WRITES_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{dest.name} pid={os.getpid()} rank={os.environ.get('RANK', '0')} "
                     f"host={socket.gethostname()}\n")
    return dest

"""Cityscapes (fine annotations) in its published layout → COCO instances json for chosen classes.

Published layout (leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip unpacked):
    <cityscapes>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <cityscapes>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{instanceIds.png,labelIds.png,polygons.json}
In instanceIds.png a pixel of an instance holds label_id * 1000 + k; a pixel of a group region
(e.g. `cargroup`) holds the bare label id and is not an instance. Only instances are converted, as
mmdet's instances-only Cityscapes conversion does; masks are stored as COCO RLE.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bobkit.data import missing

CITYSCAPES_LABEL_IDS = {"person": 24, "rider": 25, "car": 26, "truck": 27, "bus": 28, "train": 31,
                        "motorcycle": 32, "bicycle": 33}
IMAGE_SUFFIX = "_leftImg8bit.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
SYNTHETIC_SIZE = (128, 64)  # the real frames are 2048x1024
SYNTHETIC_FRAMES = 2


def cityscapes_paths(root: Path, split: str) -> tuple[Path, Path]:
    return Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split


def check_cityscapes(root: Path, split: str, dataset_spec: dict[str, Any]) -> tuple[Path, Path]:
    images, gt = cityscapes_paths(root, split)
    for folder in (images, gt):
        if not folder.is_dir():
            raise missing(dataset_spec, folder, f"is missing (Cityscapes: leftImg8bit/{split} and gtFine/{split})")
    if not any(gt.glob(f"*/*{INSTANCE_SUFFIX}")):
        raise missing(dataset_spec, gt, f"holds no <city>/*{INSTANCE_SUFFIX}")
    return images, gt


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def cityscapes_to_coco(root: Path, split: str, out_json: Path, *, classes: tuple[str, ...] = ("car",),
                       dataset_spec: dict[str, Any] | None = None) -> Path:
    """Convert one split's gtFine instance masks to a COCO instances json (file names relative to leftImg8bit/<split>)."""
    from PIL import Image

    from bobkit.results import atomic_write_json

    spec = dataset_spec or {"id": "cityscapes"}
    images_dir, gt_dir = check_cityscapes(root, split, spec)
    wanted = {CITYSCAPES_LABEL_IDS[c]: c for c in classes}
    images, annotations = [], []
    for inst_path in sorted(gt_dir.glob(f"*/*{INSTANCE_SUFFIX}")):
        stem = inst_path.name[: -len(INSTANCE_SUFFIX)]
        rel = f"{inst_path.parent.name}/{stem}{IMAGE_SUFFIX}"
        if not (images_dir / rel).is_file():
            raise missing(spec, images_dir / rel, f"has ground truth {inst_path.name} but no image")
        ids = np.array(Image.open(inst_path), dtype=np.int64)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": rel, "width": int(ids.shape[1]), "height": int(ids.shape[0])})
        for value in np.unique(ids):
            if value < 1000 or int(value) // 1000 not in wanted:
                continue
            mask = ids == value
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(value) // 1000, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": int(mask.sum()), "iscrowd": 0, "segmentation": _rle(mask)})
    atomic_write_json(Path(out_json), {
        "info": {"description": f"Cityscapes {split} instances converted by bobkit ({', '.join(classes)})"},
        "licenses": [], "images": images, "annotations": annotations,
        "categories": [{"id": CITYSCAPES_LABEL_IDS[c], "name": c, "supercategory": "cityscapes"} for c in classes],
    })
    return Path(out_json)


def write_synthetic_cityscapes(root: Path, split: str = "val", *, frames: int = SYNTHETIC_FRAMES,
                               size: tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0) -> Path:
    """A few frames in the Cityscapes layout: car instances, one car group and one person per frame."""
    from PIL import Image, ImageDraw

    from bobkit.data.coco import synthetic_scene
    from bobkit.data.synthetic import save_image

    images_dir, gt_dir = cityscapes_paths(root, split)
    city = "frankfurt"
    car = CITYSCAPES_LABEL_IDS["car"]
    for i in range(frames):
        stem = f"{city}_000000_{i:06d}"
        image, objects = synthetic_scene(i, categories=[(car, "car")], size=size, seed=seed, salt="cityscapes",
                                         min_radius=min(size) * 0.14)
        ids = Image.new("I", size, 0)
        draw = ImageDraw.Draw(ids)
        draw.rectangle([0, size[1] - 4, 8, size[1] - 1], fill=car)  # a cargroup region: not an instance
        draw.rectangle([size[0] - 5, 0, size[0] - 1, 9], fill=CITYSCAPES_LABEL_IDS["person"] * 1000)
        polygons = []
        for k, (_, poly) in enumerate(objects):
            draw.polygon([tuple(p) for p in poly], fill=car * 1000 + k)
            polygons.append({"label": "car", "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in poly]})
        save_image(image, images_dir / city / f"{stem}{IMAGE_SUFFIX}")
        inst = np.array(ids, dtype=np.int32)
        (gt_dir / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(inst.astype(np.uint16)).save(gt_dir / city / f"{stem}{INSTANCE_SUFFIX}")
        label_ids = np.where(inst >= 1000, inst // 1000, inst).astype(np.uint8)
        Image.fromarray(label_ids).save(gt_dir / city / f"{stem}_gtFine_labelIds.png")
        (gt_dir / city / f"{stem}_gtFine_polygons.json").write_text(json.dumps(
            {"imgWidth": size[0], "imgHeight": size[1], "objects": polygons}), encoding="utf-8")
    return Path(root)


def eval_split(dataset_spec: dict[str, Any]) -> str:
    return ((dataset_spec.get("splits") or {}).get("eval") or {}).get("name", "val")


def write_synthetic_cityscapes_coco(dest: Path, dataset_spec: dict[str, Any]) -> None:
    """SYNTHETIC_WRITERS entry for layout 'cityscapes_coco' (the evaluation split only)."""
    write_synthetic_cityscapes(Path(dest), eval_split(dataset_spec))

"""COCO-format detection data: the COCO 2017 layout check, and a tiny synthetic COCO writer.

Real layout (dataset manifest `path`, e.g. coco):
    <root>/<path>/train2017/*.jpg, <root>/<path>/val2017/*.jpg,
    <root>/<path>/annotations/instances_{train2017,val2017}.json
The synthetic writer produces the same layout with a few small images, each holding filled
polygons whose colour and shape depend on the category, annotated with boxes and polygon masks,
so a detector has something learnable and pycocotools evaluates real boxes and masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from bobkit.data import dataset_dir, missing

# The 80 COCO 2017 detection categories with their (non-contiguous) ids.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = tuple(enumerate([
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None,
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
], start=1))
COCO_CATEGORIES = tuple((i, n) for i, n in COCO_CATEGORIES if n is not None)

SYNTHETIC_IMAGE_SIZE = 64
SYNTHETIC_IMAGES = {"train": 4, "eval": 2}  # smoke runs: two training steps of 2 images
SYNTHETIC_USED_CATEGORIES = 3  # the images show only the first few categories; the json lists them all


@dataclass(frozen=True)
class CocoSplit:
    """One split of a COCO-format dataset: an image folder and its instances json."""

    images: Path
    annotations: Path

    def categories(self) -> list[tuple[int, str]]:
        """(id, name) sorted by id, as mmdet and pycocotools order them."""
        data = json.loads(self.annotations.read_text(encoding="utf-8"))
        return sorted((int(c["id"]), str(c["name"])) for c in data["categories"])


def coco_split(root: Path, split: str) -> CocoSplit:
    return CocoSplit(images=Path(root) / split, annotations=Path(root) / "annotations" / f"instances_{split}.json")


def split_names(dataset_spec: dict[str, Any]) -> tuple[str, str]:
    """The (train, eval) split folder names of a COCO-layout dataset manifest entry."""
    splits = dataset_spec.get("splits") or {}
    train = (splits.get("train") or {}).get("name", "train2017")
    evaluate = (splits.get("eval") or {}).get("name", "val2017")
    return train, evaluate


def check_coco_split(split: CocoSplit, dataset_spec: dict[str, Any]) -> CocoSplit:
    """Fail with one line naming what is missing, before any training starts."""
    if not split.images.is_dir():
        raise missing(dataset_spec, split.images, "is not a folder of images")
    if not split.annotations.is_file():
        raise missing(dataset_spec, split.annotations, "is missing")
    try:
        data = json.loads(split.annotations.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise missing(dataset_spec, split.annotations, f"is not valid JSON (line {exc.lineno})") from None
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise missing(dataset_spec, split.annotations, f"has no '{key}' list: not a COCO instances file")
    for image in data["images"][:5]:
        if not (split.images / image["file_name"]).is_file():
            raise missing(dataset_spec, split.images / image["file_name"], "is listed in the annotations but missing")
    return split


def coco_dataset(dataset_spec: dict[str, Any], data_root: Path) -> tuple[CocoSplit, CocoSplit]:
    """The checked (train, eval) splits of a COCO-layout dataset under the data root."""
    root = dataset_dir(dataset_spec, data_root)
    train, evaluate = split_names(dataset_spec)
    return (check_coco_split(coco_split(root, train), dataset_spec),
            check_coco_split(coco_split(root, evaluate), dataset_spec))


# --- synthetic data ---------------------------------------------------------------------------

def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _shape(kind: int, cx: float, cy: float, r: float) -> np.ndarray:
    """A polygon per category kind: square, triangle, hexagon (distinct silhouettes)."""
    sides = (4, 3, 6, 5, 8)[kind % 5]
    start = np.pi / 4 if sides == 4 else -np.pi / 2
    angles = start + 2 * np.pi * np.arange(sides) / sides
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def synthetic_scene(index: int, *, categories: list[tuple[int, str]], size: tuple[int, int], seed: int,
                    salt: str = "", max_objects: int = 3, min_radius: float | None = None):
    """One image with 1..max_objects non-overlapping polygons; returns (PIL image, [(category id, polygon)])."""
    from PIL import Image, ImageDraw

    from bobkit.data.synthetic import class_colour, rng_for

    w, h = size
    rng = rng_for("detection_scene", salt, index, seed, w, h)
    background = np.clip(96 + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, np.ndarray]] = []
    cells = [(i, j) for i in range(2) for j in range(2)]  # one object per quadrant: no overlaps
    rng.shuffle(cells)
    count = int(rng.integers(1, max_objects + 1))
    lo = min_radius if min_radius is not None else min(w, h) * 0.12
    for qi, qj in cells[:count]:
        label = int(rng.integers(0, len(categories)))
        r = float(rng.uniform(lo, min(w, h) * 0.22))
        cx = (qj + 0.5) * w / 2 + rng.uniform(-0.2, 0.2) * (w / 2 - 2 * r)
        cy = (qi + 0.5) * h / 2 + rng.uniform(-0.2, 0.2) * (h / 2 - 2 * r)
        poly = _shape(label, cx, cy, r)
        draw.polygon([tuple(p) for p in poly], fill=tuple(int(c) for c in class_colour(label, len(categories))))
        objects.append((categories[label][0], poly))
    return image, objects


def coco_annotation(ann_id: int, image_id: int, category_id: int, poly: np.ndarray) -> dict[str, Any]:
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return {"id": ann_id, "image_id": image_id, "category_id": int(category_id),
            "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            "area": round(polygon_area(poly), 2), "iscrowd": 0,
            "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]]}


def write_coco_split(root: Path, split: str, *, num_images: int, size: int = SYNTHETIC_IMAGE_SIZE,
                     categories: Iterable[tuple[int, str]] = COCO_CATEGORIES,
                     used_categories: int = SYNTHETIC_USED_CATEGORIES, seed: int = 0) -> CocoSplit:
    """Write `num_images` synthetic images and their instances json in the COCO 2017 layout."""
    from bobkit.data.synthetic import save_image

    categories = list(categories)
    target = coco_split(root, split)
    target.images.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image_id = i + 1
        image, objects = synthetic_scene(i, categories=categories[:used_categories], size=(size, size),
                                         seed=seed, salt=split)
        name = f"{image_id:012d}.jpg"
        save_image(image, target.images / name)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for category_id, poly in objects:
            annotations.append(coco_annotation(len(annotations) + 1, image_id, category_id, poly))
    doc = {"info": {"description": "bobkit synthetic COCO-format data"}, "licenses": [],
           "images": images, "annotations": annotations,
           "categories": [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in categories]}
    target.annotations.parent.mkdir(parents=True, exist_ok=True)
    target.annotations.write_text(json.dumps(doc), encoding="utf-8")
    return target


def write_synthetic_coco(dest: Path, dataset_spec: dict[str, Any]) -> None:
    """SYNTHETIC_WRITERS entry for layout 'coco': both splits, every COCO category listed."""
    train, evaluate = split_names(dataset_spec)
    write_coco_split(dest, train, num_images=SYNTHETIC_IMAGES["train"])
    write_coco_split(dest, evaluate, num_images=SYNTHETIC_IMAGES["eval"])

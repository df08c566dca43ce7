"""Sim10k ("Driving in the Matrix", 10k GTA V frames) in its published VOC layout → COCO json.

Published layout (the repro_10k archives unpacked):
    <sim10k>/VOC2012/JPEGImages/<frame>.jpg
    <sim10k>/VOC2012/Annotations/<frame>.xml   (VOC XML: size, object/name, object/bndbox)
bobkit keeps only the boxes named `car`, as category `car` (id 26, Cityscapes' label id, so train
and evaluation json agree). The authors' converter labelled EVERY box car whatever its name
(persons and motorbikes included): a recorded deviation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bobkit.data import missing

CAR_CATEGORY = (26, "car")
SIM10K_KEEP = ("car",)
SYNTHETIC_FRAMES = 4
SYNTHETIC_SIZE = (96, 52)  # the real frames are 1914x1052


def sim10k_paths(root: Path) -> tuple[Path, Path]:
    """(images folder, annotations folder) of a Sim10k root."""
    return Path(root) / "VOC2012" / "JPEGImages", Path(root) / "VOC2012" / "Annotations"


def check_sim10k(root: Path, dataset_spec: dict[str, Any]) -> tuple[Path, Path]:
    images, annotations = sim10k_paths(root)
    for folder in (images, annotations):
        if not folder.is_dir():
            raise missing(dataset_spec, folder, "is missing (Sim10k: VOC2012/JPEGImages and VOC2012/Annotations)")
    if not any(annotations.glob("*.xml")):
        raise missing(dataset_spec, annotations, "holds no .xml annotation")
    return images, annotations


def _number(node: ET.Element | None, tag: str, where: Path) -> float:
    from bobkit.errors import BadInput

    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise BadInput(f"{where}: VOC annotation lacks <{tag}>; the file is not in the Sim10k layout")
    return float(child.text)


def sim10k_to_coco(root: Path, out_json: Path, *, keep: tuple[str, ...] = SIM10K_KEEP,
                   dataset_spec: dict[str, Any] | None = None) -> Path:
    """Convert every VOC XML of a Sim10k root to one COCO instances json (file names relative to JPEGImages)."""
    from bobkit.results import atomic_write_json

    images_dir, ann_dir = check_sim10k(root, dataset_spec or {"id": "sim10k"})
    images, annotations = [], []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        tree = ET.parse(xml_path).getroot()
        name = (tree.findtext("filename") or f"{xml_path.stem}.jpg").strip()
        if not (images_dir / name).is_file():
            raise missing(dataset_spec or {"id": "sim10k"}, images_dir / name, f"is named by {xml_path.name} but missing")
        size = tree.find("size")
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "width": int(_number(size, "width", xml_path)),
                       "height": int(_number(size, "height", xml_path))})
        for obj in tree.iter("object"):
            if (obj.findtext("name") or "").strip().lower() not in keep:
                continue
            box = obj.find("bndbox")
            x0, y0 = _number(box, "xmin", xml_path), _number(box, "ymin", xml_path)
            x1, y1 = _number(box, "xmax", xml_path), _number(box, "ymax", xml_path)
            if x1 <= x0 or y1 <= y0:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": CAR_CATEGORY[0],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    atomic_write_json(Path(out_json), {
        "info": {"description": f"Sim10k converted by bobkit (kept: {', '.join(keep)})"}, "licenses": [],
        "images": images, "annotations": annotations,
        "categories": [{"id": CAR_CATEGORY[0], "name": CAR_CATEGORY[1], "supercategory": "vehicle"}],
    })
    return Path(out_json)


def _voc_xml(name: str, size: tuple[int, int], objects: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    parts = [f"<annotation><folder>VOC2012</folder><filename>{name}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for label, (x0, y0, x1, y1) in objects:
        parts.append(f"<object><name>{label}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>0</difficult><bndbox><xmin>{x0:.0f}</xmin><ymin>{y0:.0f}</ymin>"
                     f"<xmax>{x1:.0f}</xmax><ymax>{y1:.0f}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


def write_synthetic_sim10k(root: Path, *, frames: int = SYNTHETIC_FRAMES, size: tuple[int, int] = SYNTHETIC_SIZE,
                           seed: int = 0) -> Path:
    """A few frames in the Sim10k VOC layout: cars, plus one person box per frame that the converter drops."""
    from bobkit.data.coco import synthetic_scene
    from bobkit.data.synthetic import save_image

    images_dir, ann_dir = sim10k_paths(root)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        name = f"{3384645 + i}.jpg"
        image, objects = synthetic_scene(i, categories=[CAR_CATEGORY], size=size, seed=seed, salt="sim10k",
                                         min_radius=min(size) * 0.14)
        boxes = [("car", (*poly.min(axis=0), *poly.max(axis=0))) for _, poly in objects]
        boxes.append(("person", (1, 1, 6, 12)))
        save_image(image, images_dir / name)
        (ann_dir / f"{Path(name).stem}.xml").write_text(_voc_xml(name, size, boxes), encoding="utf-8")
    return Path(root)



def write_synthetic_sim10k_voc(dest: Path, dataset_spec: dict[str, Any]) -> None:
    """SYNTHETIC_WRITERS entry for layout 'sim10k_voc'."""
    write_synthetic_sim10k(Path(dest))

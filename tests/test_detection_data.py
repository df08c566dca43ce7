"""Detection data: the COCO layout check and synthetic writer, and the Sim10k / Cityscapes converters
on small files written in the datasets' published layouts. No mmdet needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bobkit.data.cityscapes import cityscapes_to_coco, write_synthetic_cityscapes
from bobkit.data.coco import COCO_CATEGORIES, check_coco_split, coco_split, write_coco_split
from bobkit.data.sim10k import sim10k_to_coco, write_synthetic_sim10k
from bobkit.errors import BadInput, EnvironmentMissing

COCO_SPEC = {"id": "coco2017", "urls": ["https://cocodataset.org/#download"], "layout_doc": "coco2017/{...}"}


def test_coco_categories_are_the_80_with_their_ids():
    ids = [i for i, _ in COCO_CATEGORIES]
    assert len(COCO_CATEGORIES) == 80 and ids[0] == 1 and ids[-1] == 90
    assert dict(COCO_CATEGORIES)[3] == "car" and 12 not in ids and dict(COCO_CATEGORIES)[90] == "toothbrush"


def test_synthetic_coco_has_boxes_and_masks_that_pycocotools_reads(tmp_path):
    from pycocotools.coco import COCO

    split = write_coco_split(tmp_path, "val2017", num_images=3)
    check_coco_split(split, COCO_SPEC)
    api = COCO(str(split.annotations))
    assert len(api.getImgIds()) == 3 and len(api.getCatIds()) == 80
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann)
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert mask.sum() > 20
        # the mask lies inside its box (one pixel of rasterisation slack)
        assert xs.min() >= x - 1 and xs.max() <= x + w + 1 and ys.min() >= y - 1 and ys.max() <= y + h + 1
    # deterministic: a second write gives the same annotations
    again = write_coco_split(tmp_path / "again", "val2017", num_images=3)
    assert json.loads(again.annotations.read_text()) == json.loads(split.annotations.read_text())


def test_coco_layout_check_names_what_is_missing(tmp_path):
    with pytest.raises(EnvironmentMissing, match="val2017.*not a folder.*cocodataset.org"):
        check_coco_split(coco_split(tmp_path, "val2017"), COCO_SPEC)
    split = write_coco_split(tmp_path, "val2017", num_images=2)
    first = json.loads(split.annotations.read_text())["images"][0]["file_name"]
    (split.images / first).unlink()
    with pytest.raises(EnvironmentMissing, match=f"{first}.*listed in the annotations but missing"):
        check_coco_split(split, COCO_SPEC)
    split.annotations.write_text("{not json")
    with pytest.raises(EnvironmentMissing, match="not valid JSON"):
        check_coco_split(split, COCO_SPEC)


def test_sim10k_voc_to_coco_keeps_only_cars(tmp_path):
    root = write_synthetic_sim10k(tmp_path / "sim10k", frames=3)
    xml = sorted((root / "VOC2012" / "Annotations").glob("*.xml"))
    assert len(xml) == 3 and "<name>person</name>" in xml[0].read_text()
    cars_in_xml = sum(x.read_text().count("<name>car</name>") for x in xml)
    doc = json.loads(sim10k_to_coco(root, tmp_path / "out.json").read_text())
    assert doc["categories"] == [{"id": 26, "name": "car", "supercategory": "vehicle"}]
    assert len(doc["images"]) == 3 and len(doc["annotations"]) == cars_in_xml
    assert all(a["category_id"] == 26 and a["bbox"][2] > 0 and a["bbox"][3] > 0 for a in doc["annotations"])
    assert (root / "VOC2012" / "JPEGImages" / doc["images"][0]["file_name"]).is_file()
    assert (doc["images"][0]["width"], doc["images"][0]["height"]) == (96, 52)


def test_sim10k_converter_refuses_broken_layouts(tmp_path):
    with pytest.raises(EnvironmentMissing, match="VOC2012/JPEGImages"):
        sim10k_to_coco(tmp_path, tmp_path / "out.json")
    root = write_synthetic_sim10k(tmp_path / "s", frames=1)
    xml = next((root / "VOC2012" / "Annotations").glob("*.xml"))
    xml.write_text(xml.read_text().replace("<xmin>", "<x>").replace("</xmin>", "</x>"))
    with pytest.raises(BadInput, match="lacks <xmin>"):
        sim10k_to_coco(root, tmp_path / "out.json")


def test_cityscapes_instances_to_coco_cars_only(tmp_path):
    from PIL import Image
    from pycocotools import mask as mask_utils

    root = write_synthetic_cityscapes(tmp_path / "cityscapes", "val", frames=2)
    inst = sorted((root / "gtFine" / "val" / "frankfurt").glob("*_gtFine_instanceIds.png"))
    ids = np.array(Image.open(inst[0]), dtype=np.int64)
    assert (ids == 26).any() and (ids == 24000).any()  # a car group and a person: neither is converted
    doc = json.loads(cityscapes_to_coco(root, "val", tmp_path / "cs.json").read_text())
    assert doc["categories"] == [{"id": 26, "name": "car", "supercategory": "cityscapes"}]
    cars = [v for v in np.unique(ids) if v >= 1000 and v // 1000 == 26]
    first = [a for a in doc["annotations"] if a["image_id"] == 1]
    assert len(first) == len(cars)
    for ann in first:
        decoded = mask_utils.decode({"size": ann["segmentation"]["size"],
                                     "counts": ann["segmentation"]["counts"].encode()})
        assert decoded.sum() == ann["area"]
        x, y, w, h = ann["bbox"]
        assert decoded[y:y + h, x:x + w].sum() == ann["area"]
    assert doc["images"][0]["file_name"].startswith("frankfurt/") and doc["images"][0]["width"] == 128
    assert all((root / "leftImg8bit" / "val" / im["file_name"]).is_file() for im in doc["images"])


def test_cityscapes_converter_refuses_missing_layout(tmp_path):
    with pytest.raises(EnvironmentMissing, match="leftImg8bit/val"):
        cityscapes_to_coco(tmp_path, "val", tmp_path / "cs.json")


def test_synthetic_writers_are_registered_for_the_detection_layouts(tmp_path):
    from bobkit.data.synthetic import write_synthetic

    for layout, probe in [("coco", "annotations/instances_val2017.json"),
                          ("sim10k_voc", "VOC2012/Annotations"), ("cityscapes_coco", "gtFine/val/frankfurt")]:
        spec = {"id": layout, "layout": layout, "splits": {"train": {"name": "train2017"}, "eval": {
            "name": "val2017" if layout == "coco" else "val"}}}
        dest = write_synthetic(spec, tmp_path / layout)
        assert (Path(dest) / probe).exists(), layout

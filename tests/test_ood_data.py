"""ImageNet-A/-R 200-class masks, and the OOD test-set readers in the released layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bobkit.data.ood import (
    imagenet_wnids,
    mask_indices,
    read_class_subset,
    read_ood_set,
    subset_path,
    write_v2_folders,
    write_wnid_folders,
)
from bobkit.errors import BadInput, EnvironmentMissing

REPO = Path(__file__).resolve().parents[1]
LISTS = REPO / "manifests" / "lists"


@pytest.mark.parametrize("name,first,last", [
    ("imagenet_a", (6, "n01498041"), (988, "n12267677")),
    ("imagenet_r", (1, "n01443537"), (988, "n12267677")),
])
def test_class_lists_are_200_imagenet_classes(name, first, last):
    subset = read_class_subset(LISTS / f"{name}_classes.txt")
    assert len(subset.indices) == len(set(subset.indices)) == 200
    assert list(subset.indices) == sorted(subset.indices)
    assert all(0 <= i <= 999 for i in subset.indices)
    wnids = imagenet_wnids()
    assert [wnids[i] for i in subset.indices] == list(subset.wnids)
    assert (subset.indices[0], subset.wnids[0]) == first and (subset.indices[-1], subset.wnids[-1]) == last
    assert mask_indices(wnids, subset.wnids) == list(subset.indices)


def test_imagenet_a_and_r_lists_differ_and_overlap_as_published():
    a = set(read_class_subset(LISTS / "imagenet_a_classes.txt").indices)
    r = set(read_class_subset(LISTS / "imagenet_r_classes.txt").indices)
    # spot checks against the authors' lists: goldfish (1) is in R only, 6 (stingray) is in both
    assert 1 in r and 1 not in a and 6 in a and 6 in r
    assert len(a & r) == 86


def test_manifest_entries_point_at_the_lists():
    from bobkit.manifest.loader import load_catalog

    catalog = load_catalog()
    for ds in ("imagenet_a", "imagenet_r"):
        path = subset_path(catalog.datasets[ds].model_dump(mode="json"))
        assert path is not None and path.resolve() == (LISTS / f"{ds}_classes.txt").resolve()


def test_imagenet_wnids_are_the_sorted_1000():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"


@pytest.mark.parametrize("text,problem", [
    ("", "lists no classes"),
    ("6 n01498041\n5 n01494475\n", "sorted and unique"),
    ("6 n01498041\n6 n01498041\n", "sorted and unique"),
    ("1000 n99999999\n", "0..999"),
    ("six n01498041\n", "line 2 is not"),
])
def test_bad_class_lists_are_refused(tmp_path, text, problem):
    path = tmp_path / "list.txt"
    path.write_text("# a comment\n" + text)
    with pytest.raises(BadInput, match=problem):
        read_class_subset(path)


def test_mask_needs_every_class():
    with pytest.raises(BadInput, match="no output for class n01498041"):
        mask_indices(["n01440764", "n01443537"], ["n01443537", "n01498041"])


def _spec(ds: str, layout: str, **extra) -> dict:
    return {"id": ds, "layout": layout, "layout_doc": "x", "urls": ["https://example.org"], **extra}


def test_wnid_folders_label_by_the_classifiers_classes(tmp_path):
    classes = ["n01440764", "n01443537", "n01484850", "n01491361"]
    spec = _spec("imagenet_r", "imagenet_wnid_folders", class_subset="lists/imagenet_r_classes.txt",
                 synthetic_classes=classes)
    write_wnid_folders(tmp_path, spec)
    assert sorted(p.name for p in tmp_path.iterdir()) == classes[:3]  # the last class is left out
    split = read_ood_set(spec, tmp_path, classes)
    assert {label for _, label in split.items} == {0, 1, 2}
    assert all(Path(p).parent.name == classes[label] for p, label in split.items)
    with pytest.raises(EnvironmentMissing, match="n01484850 is a class folder the classifier has no output for"):
        read_ood_set(spec, tmp_path, classes[:2])


def test_sketch_release_folder(tmp_path):
    classes = imagenet_wnids()[:4]
    spec = _spec("imagenet_sketch", "imagenet_wnid_folders", synthetic_classes=classes)
    write_wnid_folders(tmp_path, spec)
    assert (tmp_path / "sketch" / classes[3]).is_dir()
    split = read_ood_set(spec, tmp_path, imagenet_wnids())
    assert sorted({label for _, label in split.items}) == [0, 1, 2, 3]
    assert all(str(p).endswith(".JPEG") for p, _ in split.items)


def test_v2_folders_are_class_indices_not_strings(tmp_path):
    classes = [f"n{i:08d}" for i in range(12)]
    spec = _spec("imagenet_v2", "imagenet_v2_folders", synthetic_classes=classes)
    write_v2_folders(tmp_path, spec)
    release = tmp_path / "imagenetv2-matched-frequency-format-val"
    assert sorted(int(p.name) for p in release.iterdir()) == list(range(12))
    split = read_ood_set(spec, tmp_path, classes)
    assert all(int(Path(p).parent.name) == label for p, label in split.items)
    assert [label for _, label in split.items] == sorted(label for _, label in split.items)  # 2 before 10
    with pytest.raises(EnvironmentMissing, match="beyond the classifier's 5 classes"):
        read_ood_set(spec, tmp_path, classes[:5])


def test_missing_ood_layouts_are_named(tmp_path):
    with pytest.raises(EnvironmentMissing, match="imagenet_a.*is missing .*the dataset folder.*example.org"):
        read_ood_set(_spec("imagenet_a", "imagenet_wnid_folders"), tmp_path / "imagenet_a", imagenet_wnids())
    (tmp_path / "v2" / "junk").mkdir(parents=True)
    with pytest.raises(EnvironmentMissing, match="holds no <class index> folders"):
        read_ood_set(_spec("imagenet_v2", "imagenet_v2_folders"), tmp_path / "v2", imagenet_wnids())
    with pytest.raises(BadInput, match="no OOD reader for layout 'visda2017'"):
        read_ood_set(_spec("visda2017", "visda2017"), tmp_path, [])

"""Classification datasets: synthetic sets in the real layouts read back by the real readers, and
clear errors (exit 3, the missing path, the download page) when a layout is incomplete."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from bobkit.data.classification import READERS, chexpert_targets, read_split
from bobkit.data.synthetic import DONE_MARKER, SYNTHETIC_WRITERS, class_pixels, write_synthetic
from bobkit.errors import BadInput, EnvironmentMissing, ExitCode
from bobkit.manifest.loader import load_catalog

CLASSIFICATION_SETS = ["imagenet", "cifar100", "flowers102", "aircraft", "eurosat", "inat2021", "chexpert", "visda2017"]


@pytest.fixture(scope="module")
def datasets():
    catalog = load_catalog()
    specs = {k: catalog.datasets[k].model_dump(mode="json") for k in CLASSIFICATION_SETS}
    # an evaluation-only set in class folders (as the OOD sets are), read with split "all"
    specs["eval_only"] = {**specs["imagenet"], "id": "eval_only", "splits": {"eval": {"name": "all"}}}
    return specs


@pytest.fixture(scope="module")
def written(tmp_path_factory, datasets):
    root = tmp_path_factory.mktemp("synthetic")
    return {k: write_synthetic(spec, root / k) for k, spec in datasets.items()}


def test_every_classification_layout_has_a_reader_and_a_writer(datasets):
    for k, spec in datasets.items():
        assert spec["layout"] in READERS, k
        assert spec["layout"] in SYNTHETIC_WRITERS, k


@pytest.mark.parametrize("name", CLASSIFICATION_SETS)
def test_synthetic_set_reads_back_through_the_real_reader(name, datasets, written, tmp_path):
    spec = datasets[name]
    train = read_split(spec, written[name], spec["splits"]["train"]["name"], work_dir=tmp_path)
    evaluation = read_split(spec, written[name], spec["splits"]["eval"]["name"], work_dir=tmp_path)
    assert len(train.items) > len(evaluation.items) > 0
    assert train.classes == evaluation.classes
    labels = {tuple(t) if isinstance(t, list) else t for t in train.targets}
    assert len(labels) > 1  # more than one class is present
    if not train.multilabel:
        assert set(train.targets) == set(range(train.num_classes))  # every class is in the training split
    from bobkit.data.classification import LabelledImages

    img, target = LabelledImages(train)[0]
    assert img.mode == "RGB" and min(img.size) >= 32


def test_synthetic_writes_are_deterministic(datasets, tmp_path):
    a = write_synthetic(datasets["flowers102"], tmp_path / "a")
    b = write_synthetic(datasets["flowers102"], tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    from scipy.io import loadmat

    for rel in files:
        if rel.suffix == ".jpg":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        if rel.suffix == ".mat":  # the .mat header carries a creation time; the arrays must match
            ma, mb = loadmat(a / rel), loadmat(b / rel)
            for key in (k for k in ma if not k.startswith("__")):
                assert np.array_equal(ma[key], mb[key]), (rel, key)


def test_synthetic_classes_differ_more_between_than_within():
    same = np.abs(class_pixels(0, 1, num_classes=4).astype(float) - class_pixels(0, 2, num_classes=4)).mean()
    other = np.abs(class_pixels(0, 1, num_classes=4).astype(float) - class_pixels(1, 1, num_classes=4)).mean()
    assert other > 2 * same


def test_an_interrupted_synthetic_write_is_redone(datasets, tmp_path):
    dest = write_synthetic(datasets["imagenet"], tmp_path / "inet")
    (dest / DONE_MARKER).unlink()
    shutil.rmtree(dest / "val")
    write_synthetic(datasets["imagenet"], dest)
    assert (dest / "val").is_dir() and (dest / DONE_MARKER).is_file()


def _write_and_list(spec: dict, dest: str, start) -> list[str]:
    start.wait()  # every process asks at the same moment, as the ranks of a torchrun run do
    root = write_synthetic(spec, Path(dest))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_concurrent_processes_write_a_synthetic_set_once(datasets, tmp_path):
    """Four processes ask for one folder at once: one writes it, the others wait and read the same files."""
    import multiprocessing as mp

    from bobkit.data.synthetic import WRITES_LOG

    ctx = mp.get_context("spawn")
    dest = tmp_path / "runs" / "synthetic" / "imagenet"
    with ctx.Manager() as manager:
        start = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            listings = pool.starmap(_write_and_list, [(datasets["imagenet"], str(dest), start)] * 4)
    assert all(listing == listings[0] for listing in listings) and DONE_MARKER in listings[0]
    writes = (dest.parent / WRITES_LOG).read_text().splitlines()
    assert len(writes) == 1 and writes[0].startswith("imagenet pid="), writes
    assert sorted(p.name for p in dest.parent.iterdir()) == [".bobkit-synthetic-writes", ".imagenet.lock", "imagenet"]


def test_a_killed_writers_temporary_folder_is_cleared(datasets, tmp_path):
    stale = tmp_path / ".inet.abc123"
    (stale / "train").mkdir(parents=True)
    write_synthetic(datasets["imagenet"], tmp_path / "inet")
    assert not stale.exists() and (tmp_path / "inet" / DONE_MARKER).is_file()


@pytest.mark.parametrize("name, remove", [
    ("imagenet", "val"),
    ("cifar100", "cifar-100-python/test"),
    ("flowers102", "setid.mat"),
    ("aircraft", "fgvc-aircraft-2013b/data/images_variant_test.txt"),
    ("eurosat", "2750/Forest"),
    ("chexpert", "CheXpert-v1.0-small/valid.csv"),
    ("visda2017", "validation/image_list.txt"),
])
def test_a_missing_part_is_named_with_its_download_page(name, remove, datasets, written, tmp_path):
    root = tmp_path / name
    shutil.copytree(written[name], root)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    spec = datasets[name]
    with pytest.raises(EnvironmentMissing) as err:
        read_split(spec, root, spec["splits"]["eval"]["name"], work_dir=tmp_path / "w")
        read_split(spec, root, spec["splits"]["train"]["name"], work_dir=tmp_path / "w")
    message = str(err.value)
    assert err.value.exit_code == ExitCode.ENVIRONMENT
    assert Path(remove).parts[0] in message or str(target) in message
    assert spec["urls"][0] in message
    assert "\n" not in message


def test_a_missing_dataset_folder_is_environment_missing(datasets, tmp_path):
    with pytest.raises(EnvironmentMissing, match="imagenet"):
        read_split(datasets["imagenet"], tmp_path / "nothing", "train")


def test_an_unknown_split_is_bad_input(datasets, written):
    with pytest.raises(BadInput, match="unknown split 'bogus'"):
        read_split(datasets["cifar100"], written["cifar100"], "bogus")


def test_an_image_listed_but_absent_is_named(datasets, written, tmp_path):
    root = tmp_path / "flowers"
    shutil.copytree(written["flowers102"], root)
    (root / "jpg" / "image_00001.jpg").unlink()
    with pytest.raises(EnvironmentMissing, match="image_00001.jpg"):
        read_split(datasets["flowers102"], root, "trnid")


def test_flowers_labels_are_zero_based_and_splits_disjoint(datasets, written):
    spec = datasets["flowers102"]
    train = read_split(spec, written["flowers102"], "trnid")
    test = read_split(spec, written["flowers102"], "tstid")
    assert min(train.targets) == 0
    assert not {p for p, _ in train.items} & {p for p, _ in test.items}


def test_cifar_reader_takes_the_release_pickles(datasets, written):
    raw = pickle.load(open(written["cifar100"] / "cifar-100-python" / "train", "rb"), encoding="latin1")
    split = read_split(datasets["cifar100"], written["cifar100"], "train")
    assert len(split.items) == len(raw["fine_labels"])
    first = raw["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(split.items[0][0], first)


def test_eurosat_split_is_seeded_stable_and_kept_in_the_run_dir(datasets, written, tmp_path):
    spec = datasets["eurosat"]
    a = read_split(spec, written["eurosat"], "train", work_dir=tmp_path / "a")
    b = read_split(spec, written["eurosat"], "train", work_dir=tmp_path / "b")
    assert [p for p, _ in a.items] == [p for p, _ in b.items]
    assert (tmp_path / "a" / "eurosat_split.json").is_file()
    ev = read_split(spec, written["eurosat"], "eval", work_dir=tmp_path / "a")
    assert not {str(p) for p, _ in a.items} & {str(p) for p, _ in ev.items}
    assert len(a.items) == 4 * len(ev.items)  # 80 / 20 per class


def test_chexpert_uncertainty_policy_and_frontal_only(datasets, written):
    assert chexpert_targets({"Cardiomegaly": "-1.0", "Edema": "-1.0", "Consolidation": "", "Atelectasis": "-1",
                             "Pleural Effusion": "1.0"}) == [0.0, 1.0, 0.0, 1.0, 1.0]
    split = read_split(datasets["chexpert"], written["chexpert"], "train.csv")
    assert split.multilabel and split.num_classes == 5
    assert all("lateral" not in str(p) for p, _ in split.items)
    assert split.mean == pytest.approx((0.5056,) * 3)


def test_imagefolder_all_split_reads_the_root(datasets, written):
    assert not (written["eval_only"] / "train").exists()
    split = read_split(datasets["eval_only"], written["eval_only"], "all")
    assert split.num_classes == 4 and split.items


def test_imagenet_subset_own_draw_is_per_class_and_stable(datasets, written, tmp_path):
    from bobkit.data.subsets import imagenet_subset, subset_file_name

    train = read_split(datasets["imagenet"], written["imagenet"], "train")
    sub, origin = imagenet_subset(train, "10pct", written["imagenet"], tmp_path)
    assert "seeded" in origin
    per_class = {}
    for _, label in sub.items:
        per_class[label] = per_class.get(label, 0) + 1
    assert per_class == {c: 2 for c in range(4)}  # ceil(10 % of 12) per class
    again, origin2 = imagenet_subset(train, "10pct", written["imagenet"], tmp_path)
    assert "run directory" in origin2 and [p for p, _ in again.items] == [p for p, _ in sub.items]
    assert (tmp_path / subset_file_name("10pct")).is_file()


def test_imagenet_subset_prefers_simclr_lists(datasets, written, tmp_path):
    from bobkit.data.subsets import imagenet_subset

    root = tmp_path / "imagenet"
    shutil.copytree(written["imagenet"], root)
    train = read_split(datasets["imagenet"], root, "train")
    chosen = sorted(Path(p).name for p, _ in train.items)[:3]
    (root / "subsets").mkdir()
    (root / "subsets" / "1percent.txt").write_text("\n".join(chosen) + "\n")
    sub, origin = imagenet_subset(train, "1pct", root, tmp_path / "run")
    assert "SimCLR" in origin
    assert sorted(Path(p).name for p, _ in sub.items) == chosen
    (root / "subsets" / "10percent.txt").write_text("n99999999_1.JPEG\n")
    with pytest.raises(EnvironmentMissing, match="n99999999_1.JPEG"):
        imagenet_subset(train, "10pct", root, tmp_path / "run")


def test_no_writer_for_an_unknown_layout(tmp_path):
    with pytest.raises(BadInput, match="no synthetic writer"):
        write_synthetic({"id": "x", "layout": "nope"}, tmp_path / "x")
    assert not os.listdir(tmp_path)

"""The OOD classification runner end to end: plan() --smoke runs an ImageNet fine-tune upstream, then
its classifier is evaluated on ImageNet-A/-R (masked), -Sketch and -V2 through `bobkit run-one`;
VisDA goes through the classification runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests._classification_support import cli_argv, install_stand_in

BACKBONE = "dino_vit_small"


@pytest.fixture(scope="module")
def catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog()


def _plan(catalog, dataset: str):
    from bobkit.plan import plan

    return plan(catalog, "ood_classification", backbones=[BACKBONE], datasets=[dataset], smoke=True)


def _run_one(spec_path: Path, data_root: Path) -> subprocess.CompletedProcess:
    argv = cli_argv(sys.executable, "run-one", str(spec_path), "--data-root", str(data_root))
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def finished_upstream(tmp_path_factory, catalog):
    """runs/ with the smoke ImageNet fine-tune every ood_eval spec depends on, run through run-one."""
    from bobkit.exec.base import prepare

    runs = tmp_path_factory.mktemp("runs")
    data = tmp_path_factory.mktemp("data")
    upstream, evaluation = _plan(catalog, "imagenet_r")
    assert upstream.recipe == "finetune" and evaluation.depends_on == [upstream.id]
    run = prepare(upstream, runs)
    done = _run_one(run.spec_path, data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run.checkpoints / "final.pt").is_file()
    return runs, data, upstream


def test_imagenet_r_through_run_one(finished_upstream, catalog):
    from bobkit.exec.base import prepare

    runs, data, upstream = finished_upstream
    spec = _plan(catalog, "imagenet_r")[1]
    run = prepare(spec, runs)
    done = _run_one(run.spec_path, data)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(run.metrics_path.read_text())
    assert record["task"] == "ood_classification" and set(record["metrics"]) == {"top1", "top5"}
    assert 0.0 <= record["metrics"]["top1"] <= record["metrics"]["top5"] <= 1.0
    log = run.log_path.read_text()
    assert "logits of the 3 classes of the synthetic set (stands for imagenet_r_classes.txt)" in log
    assert (run.path / "synthetic" / "imagenet_r").is_dir()


@pytest.mark.parametrize("dataset", ["imagenet_a", "imagenet_sketch", "imagenet_v2"])
def test_other_sets_in_process(finished_upstream, catalog, monkeypatch, dataset):
    from bobkit.exec.base import prepare
    from bobkit.tasks.ood_classification import run as run_ood

    runs, data, upstream = finished_upstream
    install_stand_in(monkeypatch)
    up, spec = _plan(catalog, dataset)
    assert up.id == upstream.id  # every OOD set reads the same fine-tuned classifier
    metrics = run_ood(spec, prepare(spec, runs), data)
    assert set(metrics) == {"top1", "top5"} and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0


def test_missing_upstream_is_named(tmp_path, catalog):
    from bobkit.errors import RunFailed
    from bobkit.exec.base import prepare
    from bobkit.tasks.ood_classification import run as run_ood

    spec = _plan(catalog, "imagenet_v2")[1]
    with pytest.raises(RunFailed, match=f"{spec.depends_on[0]}/checkpoints/final.pt: the upstream fine-tune"):
        run_ood(spec, prepare(spec, tmp_path / "runs"), tmp_path / "data")


def test_masked_classifier_restricts_and_reorders():
    import torch

    from bobkit.tasks.ood_classification import MaskedClassifier

    logits = torch.arange(12.0).reshape(2, 6)
    masked = MaskedClassifier(lambda x: x, [1, 4, 5])(logits)
    assert masked.tolist() == [[1.0, 4.0, 5.0], [7.0, 10.0, 11.0]]


def test_real_classifier_gets_the_200_imagenet_indices(catalog):
    from bobkit.data.classification import LabelledSplit
    from bobkit.data.ood import imagenet_wnids, read_class_subset
    from bobkit.errors import BadInput
    from bobkit.tasks.ood_classification import classifier_classes, evaluated_classes

    classes = classifier_classes({"num_classes": 1000})
    assert classes == imagenet_wnids()
    spec = _plan(catalog, "imagenet_a")[1].model_copy(update={"smoke": False})
    subset = read_class_subset(Path(__file__).resolve().parents[1] / "manifests" / "lists" / "imagenet_a_classes.txt")
    split = LabelledSplit([(Path("x.jpg"), subset.indices[0]), (Path("y.jpg"), subset.indices[-1])], classes)
    keep, origin = evaluated_classes(spec, split, classes)
    assert keep == list(subset.indices) and origin == "200 classes of imagenet_a_classes.txt"
    outside = LabelledSplit([(Path("z.jpg"), 0)], classes)  # tench is not an ImageNet-A class
    with pytest.raises(BadInput, match="n01440764 is not among the 200 classes"):
        evaluated_classes(spec, outside, classes)
    with pytest.raises(BadInput, match="no class names"):
        classifier_classes({"num_classes": 10})


def test_visda_runs_the_classification_trainer(tmp_path, catalog, monkeypatch):
    from bobkit.exec.base import prepare
    from bobkit.tasks.ood_classification import run as run_ood

    install_stand_in(monkeypatch)
    (spec,) = _plan(catalog, "visda2017")
    assert spec.protocol == "visda" and not spec.depends_on
    run = prepare(spec, tmp_path / "runs")
    metrics = run_ood(spec, run, tmp_path / "data")
    assert 0.0 <= metrics["top1"] <= 1.0
    assert (run.checkpoints / "final.pt").is_file()
    assert (run.path / "synthetic" / "visda2017" / "validation" / "image_list.txt").is_file()

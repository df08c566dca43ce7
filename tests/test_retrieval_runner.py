"""The retrieval runner end to end: plan() --smoke specs through `bobkit run-one`, every layout, caching,
and the --faithful switches."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests._classification_support import cli_argv, install_stand_in

METRICS = {"map", "mrr", "precision@1", "precision@5", "precision@10", "recall@1", "recall@5", "recall@10"}
LAYOUT_DATASETS = ["cub200", "inat_retrieval", "objectnet", "instre", "gldv2_retrieval", "roxford5k", "rparis6k",
                   "copydays"]


@pytest.fixture(scope="module")
def catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog()


def _smoke_spec(catalog, dataset: str, backbone: str = "resnet50", faithful: bool = False):
    from bobkit.plan import plan

    specs = plan(catalog, "retrieval", backbones=[backbone], datasets=[dataset], smoke=True, faithful=faithful)
    assert len(specs) == 1
    return specs[0]


def _check_metrics(metrics: dict) -> None:
    assert set(metrics) == METRICS
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert metrics["recall@1"] <= metrics["recall@5"] <= metrics["recall@10"]


def test_run_one_smoke_and_feature_cache(tmp_path, catalog):
    from bobkit.exec.base import prepare

    for dataset in ("cub200", "roxford5k"):
        spec = _smoke_spec(catalog, dataset)
        run = prepare(spec, tmp_path / "runs")
        argv = cli_argv(sys.executable, "run-one", str(run.spec_path), "--data-root", str(tmp_path / "data"))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        record = json.loads(run.metrics_path.read_text())
        assert record["task"] == "retrieval" and record["smoke"] is True
        _check_metrics(record["metrics"])
        feats = {split: np.load(run.path / "features" / f"{split}.npy") for split in ("query", "database")}
        assert feats["query"].shape[0] == {"cub200": 8, "roxford5k": 4}[dataset]
        assert np.allclose(np.linalg.norm(feats["database"], axis=1), 1.0, atol=1e-5)
        assert (run.path / "synthetic" / dataset).is_dir()
        log = run.log_path.read_text()
        assert "features: " in log and "extracted" in log

    # a rerun of the same spec reads its features back instead of extracting them again
    run.metrics_path.unlink()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run.log_path.read_text().count("read from") == 2
    assert json.loads(run.metrics_path.read_text())["metrics"] == record["metrics"]


@pytest.mark.parametrize("dataset", ["gldv2_retrieval", "copydays"])
def test_more_layouts_in_process(tmp_path, catalog, monkeypatch, dataset):
    from bobkit.results import RunDir
    from bobkit.tasks import retrieval

    install_stand_in(monkeypatch)
    spec = _smoke_spec(catalog, dataset)
    run = RunDir(tmp_path / spec.id)
    run.path.mkdir()
    _check_metrics(retrieval.run(spec, run, tmp_path / "data"))


@pytest.mark.parametrize("dataset", LAYOUT_DATASETS)
def test_perfect_features_score_perfectly(tmp_path, catalog, dataset):
    """Ground truth, search and metrics line up: features that encode the truth give perfect scores."""
    from bobkit.data.retrieval import read_retrieval_set
    from bobkit.data.synthetic import write_synthetic
    from bobkit.tasks import retrieval

    spec = _smoke_spec(catalog, dataset)
    root = write_synthetic(spec.dataset_spec, tmp_path / dataset)
    hp = spec.typed_hparams()
    rset = read_retrieval_set(spec.dataset_spec, root, images_per_class=hp.images_per_class,
                              queries_fraction=hp.queries_per_class_fraction)
    # database image i gets a 1 in column q when it is a positive of query q; query q is e_q
    db = np.zeros((len(rset.database), len(rset.queries)), dtype=np.float32)
    for q, t in enumerate(rset.truths):
        db[t.ok, q] = 1.0
    perfect = retrieval.evaluate(np.eye(len(rset.queries), dtype=np.float32), db, rset, [1, 5, 10])
    n_pos = np.array([t.ok.size for t in rset.truths])
    assert perfect["map"] == pytest.approx(1.0)
    assert perfect["mrr"] == pytest.approx(1.0)
    assert perfect["precision@1"] == pytest.approx(1.0)
    for k in (1, 5, 10):
        assert perfect[f"recall@{k}"] == pytest.approx(np.mean(np.minimum(k, n_pos) / n_pos))
    # and features that ignore the truth do not
    rng = np.random.default_rng(0)
    shuffled = retrieval.evaluate(np.eye(len(rset.queries), dtype=np.float32), db[rng.permutation(len(db))],
                                  rset, [1, 5, 10])
    assert shuffled["map"] < 1.0


def test_faithful_switches(tmp_path, catalog, monkeypatch):
    from bobkit.results import RunDir
    from bobkit.tasks import retrieval

    install_stand_in(monkeypatch)
    plain = _smoke_spec(catalog, "cub200", backbone="vicreg_resnet50")
    faithful = _smoke_spec(catalog, "cub200", backbone="vicreg_resnet50", faithful=True)
    assert plain.hparams["feature"] == "pooled" and faithful.hparams["feature"] == "head_logits"
    run = RunDir(tmp_path / faithful.id)
    run.path.mkdir()
    _check_metrics(retrieval.run(faithful, run, tmp_path / "data"))
    assert np.load(run.path / "features" / "query.npy").shape[1] == 1000  # the 1000-way head's outputs

    clip = catalog.backbones["clip_vit_base_laion2b"].model_dump(mode="json")
    for normalization, mean in (("backbone", tuple(clip["mean"])), ("imagenet", retrieval.IMAGENET_MEAN)):
        t = retrieval.retrieval_transform(clip, resolution=224, resize=256, normalization=normalization).transforms
        assert tuple(t[-1].mean) == mean and t[0].size == 256 and t[1].size == (224, 224)
    clip_faithful = _smoke_spec(catalog, "cub200", backbone="clip_vit_base_laion2b", faithful=True)
    assert clip_faithful.hparams["normalization"] == "imagenet"


def test_preprocessing_rules():
    from PIL import Image

    from bobkit.tasks.retrieval import Thumbnail, describe_transform, resize_for, retrieval_transform

    assert resize_for(224, None) == 256
    assert resize_for(384, 400) == 400
    img = Image.new("RGB", (500, 375))
    assert Thumbnail(224)(img).size == (224, 168) and img.size == (500, 375)
    t = retrieval_transform({"mean": [0.5] * 3, "std": [0.5] * 3}, resolution=32, resize=36, normalization="backbone",
                            thumbnail=224)
    assert describe_transform(t).startswith("Thumbnail(224) → Resize(size=36")
    assert tuple(t(img).shape) == (3, 32, 32)

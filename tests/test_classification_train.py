"""The classification runner trains for real on CPU: tiny timm test models, 32 px synthetic data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from bobkit.exec.base import prepare
from bobkit.results import RunDir
from tests._classification_support import make_spec, mini_catalog

NO_AUG = dict(randaugment=None, color_jitter=None, mixup=0.0, cutmix=0.0, reprob=0.0, label_smoothing=0.0,
              drop_path=0.0, interpolation="bicubic", crop_scale=[0.6, 1.0])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return mini_catalog(tmp_path_factory.mktemp("manifests"))


def train(tmp_path: Path, spec) -> tuple[dict, RunDir]:
    from bobkit.tasks.classification import run

    run_dir = prepare(spec, tmp_path / "runs")
    return run(spec, run_dir, tmp_path / "data"), run_dir


def history(run_dir: RunDir) -> list[dict]:
    with open(run_dir.path / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def test_finetune_learns_a_separable_task(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", epochs=5, warmup_epochs=0, lr=3e-3,
                     layer_decay=None, **NO_AUG)
    metrics, run_dir = train(tmp_path, spec)
    rows = history(run_dir)
    assert len(rows) == 5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])  # the loss goes down
    assert metrics["top1"] >= 0.75  # 4 classes: chance is 0.25
    assert set(metrics) == {"top1", "top5", "top1_last", "top5_last"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    # the final checkpoint is the best epoch's classifier, and rebuilds to the same accuracy
    from bobkit.data.classification import LabelledImages, read_split
    from bobkit.tasks.cls_data import eval_transform
    from bobkit.tasks.cls_eval import evaluate
    from bobkit.tasks.cls_model import load_classifier
    from bobkit.tasks.cls_runtime import Runtime

    model, ckpt = load_classifier(run_dir.checkpoints / "final.pt", spec.backbone_spec)
    assert ckpt["num_classes"] == 4 and ckpt["backbone"] == "tiny_convnext" and ckpt["head"] == "linear"
    split = read_split(spec.dataset_spec, run_dir.path / "synthetic" / "imagenet", "val")
    tf = eval_transform(spec.typed_hparams(), spec.backbone_spec["mean"], spec.backbone_spec["std"], None)
    loader = torch.utils.data.DataLoader(LabelledImages(split, tf), batch_size=8)
    again = evaluate(model, loader, Runtime(torch.device("cpu")), multilabel=False, num_classes=4)
    assert again["top1"] == pytest.approx(metrics["top1"])
    # a finished run keeps one copy of its weights: last.pt shrinks to a marker, best-*.pt are gone
    assert not list(run_dir.checkpoints.glob("best-*.pt"))
    marker = torch.load(run_dir.checkpoints / "last.pt", weights_only=False)
    assert marker["finished"] is True and "model" not in marker and "optimizer" not in marker
    # killed after final.pt but before metrics.json: running again trains nothing and gives the same metrics
    again_metrics, _ = train(tmp_path, spec)
    assert again_metrics == metrics


def test_full_recipe_with_accumulation_and_layer_decay_trains(catalog, tmp_path):
    """Mixup + CutMix + RandAugment + random erasing + drop path + layer decay + 2 accumulated batches."""
    spec = make_spec(catalog, "t_ft", "tiny_vit", "imagenet", epochs=1)
    assert spec.hparams["batch_size"] == 2 * spec.hparams["per_gpu_batch"]
    metrics, run_dir = train(tmp_path, spec)
    assert 0.0 <= metrics["top1"] <= 1.0
    extra = json.loads((run_dir.path / "provenance_extra.json").read_text())
    assert extra["training"]["epochs"] == 1 and extra["runtime"]["deterministic"] is True
    # what the optimizer saw: lr 2e-3 as given, 8 per GPU x 1 GPU x 2 accumulated = 16, warmup 1 epoch
    # (fine-tuning steps its schedule per epoch), layer-decayed groups with the head at full lr
    opt = extra["optimization"]
    assert {k: opt[k] for k in ("effective_lr", "effective_batch", "accumulation", "world_size", "per_gpu_batch",
                                "warmup_steps", "warmup_unit")} == {
        "effective_lr": 2e-3, "effective_batch": 16, "accumulation": 2, "world_size": 1, "per_gpu_batch": 8,
        "warmup_steps": 1, "warmup_unit": "epochs"}
    from bobkit.tasks.cls_model import build_classifier, describe_param_groups, trainable_param_groups

    model, _ = build_classifier(spec, extra["training"]["num_classes"])
    want = describe_param_groups(model, trainable_param_groups(model, 0.05, 0.75), lr=2e-3)
    assert opt["param_groups"] == want
    assert sum(g["numel"] for g in opt["param_groups"]) == sum(p.numel() for p in model.parameters())
    head = [g for g in opt["param_groups"] if g["modules"][0].startswith("head.")]
    assert [(g["lr_scale"], g["lr"]) for g in head] == [(1.0, 2e-3)] * 2
    top_block = [g for g in opt["param_groups"] if g["modules"][0].startswith("backbone.blocks.5.")]
    assert {g["lr_scale"] for g in top_block} == {0.75}  # the authors' timm: last block one step below the head


def test_layer_decay_gives_the_head_full_lr_and_early_blocks_less(catalog):
    from bobkit.tasks.cls_model import build_classifier, trainable_param_groups

    spec = make_spec(catalog, "t_ft", "tiny_vit", "imagenet")
    model, _ = build_classifier(spec, 4)
    groups = trainable_param_groups(model, 0.05, 0.75)
    head_ids = {id(p) for p in model.head.parameters()}
    scales = {g["lr_scale"] for g in groups}
    assert max(scales) == 1.0 and min(scales) < 0.75 ** 2
    for g in groups:
        if any(id(p) in head_ids for p in g["params"]):
            assert g["lr_scale"] == 1.0
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert no_decay and all(p.ndim <= 1 or "pos_embed" for g in no_decay for p in g["params"])


def test_frozen_backbone_does_not_move(catalog):
    from bobkit.tasks.cls_model import build_classifier

    spec = make_spec(catalog, "t_lp", "tiny_convnext", "imagenet")
    model, _ = build_classifier(spec, 4)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training and model.head.training
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    loss = model(torch.randn(4, 3, 32, 32)).sum()
    loss.backward()
    opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.head, torch.nn.Sequential) and isinstance(model.head[0], torch.nn.BatchNorm1d)
    assert not model.head[0].affine


def test_linear_probe_with_and_without_feature_cache(catalog, tmp_path, caplog):
    caplog.set_level("INFO", logger="bobkit.run")
    plain, plain_dir = train(tmp_path / "plain", make_spec(catalog, "t_lp", "tiny_vit", "cifar100", epochs=2,
                                                           warmup_epochs=1))
    cached_spec = make_spec(catalog, "t_lp_cached", "tiny_vit", "cifar100", epochs=2)
    cached, cached_dir = train(tmp_path / "cached", cached_spec)
    for m in (plain, cached):
        assert set(m) == {"top1", "top5", "top1_last", "top5_last"}
    assert not (cached_dir.checkpoints / "features.pt").exists()  # the cache is dropped once the run is done
    assert "feature cache: extracting" in caplog.text
    extra = json.loads((cached_dir.path / "provenance_extra.json").read_text())
    assert [d["id"] for d in extra["runtime_deviations"]] == ["feature_cache_no_augmentation"]
    assert "runtime_deviations" not in json.loads((plain_dir.path / "provenance_extra.json").read_text())
    # LARS at blr 0.1 x batch 8 / 256; the probe's schedule steps per update, so warmup counts updates
    for run_dir, warmup_epochs in ((plain_dir, 1), (cached_dir, 0)):
        opt = json.loads((run_dir.path / "provenance_extra.json").read_text())["optimization"]
        assert opt["effective_lr"] == pytest.approx(0.1 * 8 / 256) and opt["lr_scaling"] == "linear_256"
        assert (opt["effective_batch"], opt["accumulation"], opt["world_size"]) == (8, 1, 1)
        assert opt["warmup_unit"] == "updates" and opt["updates_per_epoch"] >= 1
        assert opt["warmup_steps"] == warmup_epochs * opt["updates_per_epoch"]
        # the head alone trains (BatchNorm without affine parameters, then the linear layer), weight decay 0
        assert opt["param_groups"] == [{"params": 2, "numel": 4 * 64 + 4, "lr_scale": 1.0,
                                        "lr": pytest.approx(0.1 * 8 / 256), "weight_decay": 0.0,
                                        "modules": ["head.1.weight", "head.1.bias"]}]
    # the cached probe's final checkpoint is a whole classifier (backbone + BN + linear head)
    from bobkit.tasks.cls_model import load_classifier

    model, ckpt = load_classifier(cached_dir.checkpoints / "final.pt", cached_spec.backbone_spec)
    assert ckpt["head"] == "bn_linear" and model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    caplog.clear()
    assert train(tmp_path / "cached", cached_spec)[0] == cached  # finished: no second extraction
    assert "feature cache: extracting" not in caplog.text


def test_semi_supervised_subset_list_is_written(catalog, tmp_path):
    metrics, run_dir = train(tmp_path, make_spec(catalog, "t_semi", "tiny_convnext", "imagenet", epochs=1))
    listed = (run_dir.path / "imagenet_subset_10pct.txt").read_text().split()
    assert len(listed) == 8 and 0 <= metrics["top1"] <= 1
    extra = json.loads((run_dir.path / "provenance_extra.json").read_text())
    assert extra["training"]["train_images"] == 8


def test_chexpert_is_multilabel_with_mean_auroc(catalog, tmp_path):
    metrics, run_dir = train(tmp_path, make_spec(catalog, "t_chexpert", "tiny_convnext", "chexpert", epochs=2))
    assert 0.0 <= metrics["auc"] <= 1.0 and "auc_last" in metrics
    assert any(k.startswith("auc_") and k != "auc_last" for k in metrics)
    extra = json.loads((run_dir.path / "provenance_extra.json").read_text())
    assert extra["training"]["train_images"] == 20  # half of the 40 frontal training rows (train_fraction 0.5)


def test_eval_interval_evaluates_every_nth_epoch_and_the_last(catalog, tmp_path):
    """CheXpert's recipe evaluates every 2 epochs as Medical-MAE's script counts them (0-based even epochs
    and the last); the reported AUC is the best of the evaluated ones."""
    metrics, run_dir = train(tmp_path, make_spec(catalog, "t_chexpert", "tiny_convnext", "chexpert", epochs=6,
                                                 eval_interval=2))
    rows = history(run_dir)
    assert [r["epoch"] for r in rows if r["eval_auc"]] == ["1", "3", "5", "6"]  # 0-based even epochs, the last
    assert [r["epoch"] for r in rows if not r["eval_auc"]] == ["2", "4"]
    best_epoch = json.loads((run_dir.path / "provenance_extra.json").read_text())["training"]["best_epoch"]
    assert best_epoch in (1, 3, 5, 6)
    best = max((float(r["eval_auc"]), -int(r["epoch"])) for r in rows if r["eval_auc"])
    assert metrics["auc"] == pytest.approx(best[0]) and metrics["auc_last"] == pytest.approx(float(rows[-1]["eval_auc"]))


def test_batch_size_must_split_evenly(catalog, tmp_path):
    from bobkit.errors import BadInput

    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", batch_size=12, per_gpu_batch=8)
    with pytest.raises(BadInput, match="not a multiple of per_gpu_batch"):
        train(tmp_path, spec)

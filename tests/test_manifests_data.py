"""The built-in manifests themselves: complete, consistent with each other, and plannable.

These tests read the shipped data (manifests/), not the hand-made fixtures: a wrong id, a lost
alias or a grid that silently grew is caught here.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bobkit.manifest.loader import builtin_manifest_dir, load_catalog
from bobkit.manifest.models import IMAGE_FAMILY
from bobkit.plan import plan
from tests.conftest import run_cli

RETRIEVAL_DATASETS = {"cub200", "inat_retrieval", "objectnet", "instre", "gldv2_retrieval", "roxford5k",
                      "rparis6k", "copydays"}
EXPERIMENTS = {"table1", "table2", "table3", "retrieval", "classification", "detection", "ood_classification",
               "ood_detection"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog([builtin_manifest_dir()], builtin=False)


def test_builtin_manifests_validate_with_expected_counts(catalog):
    assert len(catalog.backbones) >= 35
    assert len(catalog.datasets) >= 20
    assert {"finetune", "linear_probe", "semi_1pct", "semi_10pct", "chexpert_finetune", "coco_finetune", "coco_frozen",
            "coco_random", "sim10k_cityscapes", "ood_eval", "visda", "retrieval_frozen"} <= set(catalog.recipes)
    assert EXPERIMENTS <= set(catalog.experiments)
    assert len(catalog.deviations) >= 5
    tasks = Counter(d.task for d in catalog.datasets.values())
    assert set(tasks) == set(IMAGE_FAMILY)
    assert RETRIEVAL_DATASETS <= {d for d, ds in catalog.datasets.items() if ds.task == "retrieval"}


def test_cli_validate_passes_on_builtin_manifests():
    proc = run_cli("validate")
    assert proc.returncode == 0, proc.stderr
    assert "43 backbones" in proc.stdout


def test_ids_are_unique_across_kinds(catalog):
    """`bobkit show ID` finds one entry: no id names two kinds of thing."""
    seen: dict[str, str] = {}
    for kind in ("backbones", "datasets", "recipes", "experiments", "deviations"):
        for entry_id in getattr(catalog, kind):
            assert seen.setdefault(entry_id, kind) == kind, f"{entry_id!r} is both a {seen[entry_id]} and a {kind}"


def test_aliases_are_unambiguous(catalog):
    owner: dict[str, str] = {}
    for b in catalog.backbones.values():
        for name in [b.id, *b.aliases]:
            assert owner.setdefault(name, b.id) == b.id, f"{name!r} names both {owner[name]} and {b.id}"


def _authors_key_map() -> dict[str, str]:
    """The authors' retrieval row keys and the bobkit id the published CSV's header maps each to."""
    path = builtin_manifest_dir() / "published" / "retrieval_mrr.csv"
    line = next(ln for ln in path.read_text(encoding="utf-8").splitlines() if "authors' key -> bobkit id:" in ln)
    pairs = line.split(":", 1)[1].split(";")
    return dict(p.strip().split("=") for p in pairs)


def test_every_retrieval_row_maps_to_one_backbone_and_eight_datasets(catalog):
    keys = _authors_key_map()
    assert len(keys) == 33
    for key, bid in keys.items():
        found = catalog.backbone_by_alias(key)
        assert found is not None and found.id == bid, key
        assert "retrieval" in found.tasks
    rows = [p for p in catalog.published if p.experiment == "retrieval"]
    by_backbone: dict[str, set[str]] = {}
    for p in rows:
        assert p.metric == "mrr" and p.unit == "fraction" and p.tier == "eval" and p.confidence == "primary"
        assert 0 < p.value <= 1
        by_backbone.setdefault(p.backbone, set()).add(p.dataset)
    assert set(by_backbone) == set(keys.values())
    assert all(ds == RETRIEVAL_DATASETS for ds in by_backbone.values())
    assert len(rows) == 33 * 8
    grid_backbones = {b for g in catalog.experiments["retrieval"].grid for b in g.backbones}
    assert grid_backbones == set(keys.values())


def test_experiment_references_exist(catalog):
    for exp in catalog.experiments.values():
        for g in exp.grid:
            assert set(g.backbones) <= set(catalog.backbones), exp.id
            assert set(g.datasets) <= set(catalog.datasets), exp.id
        assert set(exp.smoke.backbones) <= set(catalog.backbones)
        for s in exp.table.settings:
            assert set(s.recipes) <= {g.recipe for g in exp.grid}, (exp.id, s.id)
            assert set(s.datasets) <= {d for g in exp.grid for d in g.datasets}, (exp.id, s.id)
    for dev in catalog.deviations.values():
        if dev.faithful:
            assert set(dev.faithful.backbones) <= set(catalog.backbones)


def test_backbones_run_only_tasks_they_are_listed_for(catalog):
    # OOD classification evaluates every ImageNet fine-tune (bobkit's choice), so it is not checked.
    for eid in ("classification", "detection", "ood_detection", "retrieval"):
        for g in catalog.experiments[eid].grid:
            task = catalog.recipes[g.recipe].task
            for b in g.backbones:
                assert task in catalog.backbones[b].tasks, (eid, b, task)


@pytest.mark.parametrize("experiment", ["table3", "retrieval"])
def test_plan_ids_are_stable_across_processes(experiment, catalog):
    first = run_cli("plan", experiment, "--json")
    second = run_cli("plan", experiment, "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    ids1 = [r["id"] for r in json.loads(first.stdout)]
    ids2 = [r["id"] for r in json.loads(second.stdout)]
    assert ids1 == ids2 and len(set(ids1)) == len(ids1) > 0
    assert ids1 == [s.id for s in plan(catalog, experiment)]


def test_smoke_plan_of_table3_is_small_and_covers_every_task(catalog):
    specs = plan(catalog, "table3", smoke=True)
    assert 0 < len(specs) < 40
    assert {s.task for s in specs} == set(IMAGE_FAMILY)
    assert {s.backbone for s in specs} == {"resnet50", "convnext_tiny", "dino_vit_small"}
    assert all(s.smoke and s.dataset_spec["synthetic"] for s in specs)
    ids = {s.id for s in specs}
    assert all(set(s.depends_on) <= ids for s in specs)


def test_every_experiment_has_a_small_smoke_plan(catalog):
    for eid, exp in catalog.experiments.items():
        if exp.grid:
            assert 0 < len(plan(catalog, eid, smoke=True)) < 40, eid


def test_recipe_facts_reach_the_runs(catalog):
    """A few facts of bob-recipes.md §1.2 and §2.2, read back from planned runs."""
    def hp(exp: str, backbone: str, dataset: str, recipe: str) -> list[dict]:
        return [s.hparams for s in plan(catalog, exp, backbones=[backbone], datasets=[dataset]) if s.recipe == recipe]

    ft = hp("classification", "resnet50", "imagenet", "finetune")[0]
    assert (ft["lr"], ft["weight_decay"], ft["layer_decay"], ft["epochs"], ft["batch_size"]) == (1e-3, 0.05, 0.75, 100, 1024)
    assert (ft["mixup"], ft["cutmix"], ft["label_smoothing"], ft["reprob"]) == (0.8, 1.0, 0.1, 0.25)
    assert ft["randaugment"] == "rand-m9-mstd0.5-inc1" and ft["pretrained"] is True
    assert hp("classification", "mae_vit_large", "imagenet", "finetune")[0]["epochs"] == 50
    sd = hp("classification", "sd_v1", "imagenet", "finetune")[0]
    assert (sd["lr"], sd["resolution"]) == (5e-4, 256)
    assert hp("classification", "convnext_tiny", "imagenet", "finetune")[0]["per_gpu_batch"] == 32
    lp = hp("classification", "dino_vit_small", "imagenet", "linear_probe")[0]
    assert (lp["optimizer"], lp["trainable"], lp["head_batchnorm"], lp["batch_size"]) == ("lars", "head", True, 2048)
    coco = hp("detection", "convnext_base", "coco2017", "coco_finetune")
    assert sorted(h["lr"] for h in coco) == [8e-5, 1e-4, 2e-4, 3e-4]
    assert {(h["drop_path"], h["per_gpu_batch"], h["train_pipeline"]) for h in coco} == {(0.7, 1, "detr_multiscale")}
    vit = hp("detection", "mae_vit_base", "coco2017", "coco_finetune")[0]
    assert (vit["train_pipeline"], vit["resolution"], vit["epochs"], vit["lr_steps"]) == ("lsj", 1024, 36, [27, 33])
    # the authors' 218 COCO configs: 23 backbones × 2 variants × 4 lrs + 9 random-init sets (two without 3e-4)
    assert len(plan(catalog, "detection")) == 218


def test_every_faithful_deviation_applies_to_some_planned_run(catalog):
    applied = set()
    for eid in catalog.experiments:
        for s in plan(catalog, eid, faithful=True):
            applied.update(s.deviations)
    expressible = {d for d, dev in catalog.deviations.items() if dev.faithful}
    assert expressible and expressible <= applied
    sgd = [s for s in plan(catalog, "ood_detection", backbones=["dino_vit_small"], faithful=True)]
    assert sgd and all(s.hparams["optimizer"] == "sgd" and s.hparams["amp"] is False for s in sgd)
    cnn = plan(catalog, "ood_detection", backbones=["resnet50"], faithful=True)
    assert all(s.hparams["optimizer"] == "adamw" for s in cnn)


def test_published_rankings_name_backbones_of_their_table(catalog):
    ranks = [p for p in catalog.published if p.unit == "rank"]
    assert len(ranks) == 12
    for p in ranks:
        exp = catalog.experiments[p.experiment]
        assert p.backbone in {b for g in exp.grid for b in g.backbones}, p
        assert p.dataset in {"overall", "classification", "detection"}
    small = catalog.experiments["table3"].table.params_below_m
    assert all(catalog.backbones[p.backbone].params_m < small for p in ranks if p.experiment == "table3")
    table3 = {b for g in catalog.experiments["table3"].grid for b in g.backbones}
    assert all(catalog.backbones[b].params_m < small for b in table3)

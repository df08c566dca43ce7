"""plan(): pure, complete, stable ids, filters, smoke and faithful."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bobkit.errors import BadInput
from bobkit.plan import RunSpec, plan, run_id


def test_grid_expands_lrs_and_backbones(mini_catalog):
    specs = plan(mini_catalog, "toy")
    cls = [s for s in specs if s.task == "classification"]
    assert sorted((s.backbone, s.hparams["lr"]) for s in cls) == [
        ("tiny_resnet", 1e-4), ("tiny_resnet", 1e-3), ("tiny_vit", 1e-4), ("tiny_vit", 1e-3)]
    assert len(specs) == 6
    assert all(s.image == f"bobkit/{s.image_family}" for s in specs)


def test_every_hparam_is_explicit(mini_catalog):
    spec = plan(mini_catalog, "toy", backbones=["tiny_vit"], datasets=["toy_imagenet"])[0]
    for key in ("lr", "weight_decay", "layer_decay", "epochs", "warmup_epochs", "batch_size", "optimizer", "mixup",
                "cutmix", "label_smoothing", "reprob", "randaugment", "drop_path", "resolution", "seed"):
        assert key in spec.hparams
    assert spec.hparams["resolution"] == 224  # from the backbone


def test_ids_are_content_hashes(mini_catalog):
    spec = plan(mini_catalog, "toy")[0]
    assert spec.id == run_id(json.loads(spec.canonical()))
    changed = RunSpec.model_validate({**spec.model_dump(), "seed": 7})
    assert run_id(json.loads(changed.canonical())) != spec.id


def test_ids_stable_across_processes(mini_dir):
    code = ("from bobkit.manifest.loader import load_catalog; from bobkit.plan import plan; "
            f"print(','.join(s.id for s in plan(load_catalog([{str(mini_dir)!r}], builtin=False), 'toy')))")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
           for _ in range(2)}
    assert len(out) == 1 and len(out.pop().split(",")) == 6


def test_smoke_keeps_subset_and_one_lr(mini_catalog):
    specs = plan(mini_catalog, "toy", smoke=True)
    assert {s.backbone for s in specs} == {"tiny_resnet"}
    cls = [s for s in specs if s.task == "classification"]
    assert len(cls) == 1 and cls[0].hparams["resolution"] == 32 and cls[0].smoke
    assert cls[0].dataset_spec["synthetic"] is True
    assert {s.id for s in specs}.isdisjoint({s.id for s in plan(mini_catalog, "toy")})


def test_faithful_applies_scoped_deviation(mini_catalog):
    specs = plan(mini_catalog, "toy", faithful=True)
    vit = [s for s in specs if s.backbone == "tiny_vit" and s.recipe == "ft_short"]
    res = [s for s in specs if s.backbone == "tiny_resnet" and s.recipe == "ft_short"]
    assert all(s.hparams["pretrained"] is False and s.deviations == ["vit_random"] for s in vit)
    assert all(s.hparams["pretrained"] is True and s.deviations == [] for s in res)


def test_filters_and_unknown_ids(mini_catalog):
    assert {s.backbone for s in plan(mini_catalog, "toy", backbones=["tiny_vit"])} == {"tiny_vit"}
    with pytest.raises(BadInput, match="did you mean tiny_vit"):
        plan(mini_catalog, "toy", backbones=["tiny_vt"])
    with pytest.raises(BadInput, match="unknown experiment"):
        plan(mini_catalog, "nope")


def test_upstream_runs_are_planned_first(mini_catalog):
    from bobkit.manifest.models import Experiment, GridEntry

    exp = mini_catalog.experiments["toy"]
    grid = [GridEntry(recipe="ret", backbones=["tiny_vit"], datasets=["toy_retrieval"], upstream="ft",
                      upstream_dataset="toy_imagenet")]
    mini_catalog.experiments["dep"] = Experiment.model_validate({**exp.model_dump(), "id": "dep", "grid": grid})
    specs = plan(mini_catalog, "dep")
    assert [s.recipe for s in specs] == ["ft", "ret"]
    assert specs[1].depends_on == [specs[0].id]

"""The one resolver: its order, its inheritance rule, origins, --set, and that show, plan and explain agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bobkit.errors import BadInput
from bobkit.manifest.loader import load_catalog
from bobkit.manifest.resolve import parse_sets, resolve
from bobkit.plan import plan
from tests.conftest import MINI, run_cli

DERIVED = """
recipes:
  - id: ft_frozen
    title: Fine-tune recipe, frozen variant
    task: classification
    protocol: finetune
    base: ft
    hparams: {trainable: head}
    overrides:
      - families: [resnet]
        set: {drop_path: 0.0}
        source: test fixture
        confidence: bobkit
    source: test fixture
    confidence: bobkit
experiments:
  - id: toy_frozen
    title: Toy, frozen
    description: the derived recipe
    grid:
      - {recipe: ft_frozen, backbones: [tiny_resnet, tiny_vit], datasets: [toy_imagenet], seeds: [3]}
    table:
      kind: cells
      settings:
        - {id: cls, title: Classification, recipes: [ft_frozen], datasets: [toy_imagenet], metric: top1}
    source: test fixture
    confidence: bobkit
"""


@pytest.fixture(scope="module")
def builtin():
    return load_catalog()


@pytest.fixture()
def derived(tmp_path):
    d = tmp_path / "lab"
    d.mkdir()
    recipes, experiments = DERIVED.split("experiments:")
    (d / "recipes.yaml").write_text(recipes)
    (d / "experiments.yaml").write_text("experiments:" + experiments)
    return load_catalog([MINI, d], builtin=False), d


def test_overrides_are_not_inherited_through_base(derived):
    catalog, _ = derived
    vit, resnet = catalog.backbones["tiny_vit"], catalog.backbones["tiny_resnet"]
    base_view = resolve(catalog, catalog.recipes["ft"], vit)
    assert base_view.hparams["epochs"] == 50 and "override #1" in base_view.origins["epochs"]
    mine = resolve(catalog, catalog.recipes["ft_frozen"], vit)
    assert mine.hparams["epochs"] == 100 and mine.origins["epochs"].endswith("recipe 'ft'")
    assert mine.hparams["trainable"] == "head" and mine.origins["trainable"].endswith("recipe 'ft_frozen'")
    own = resolve(catalog, catalog.recipes["ft_frozen"], resnet)
    assert own.hparams["drop_path"] == 0.0 and "override #1 (families [resnet])" in own.origins["drop_path"]


def test_the_documented_order(derived):
    catalog, _ = derived
    recipe, vit = catalog.recipes["ft_frozen"], catalog.backbones["tiny_vit"]
    r = resolve(catalog, recipe, vit, lr=5e-4, seed=7, grid="experiment 'x'", smoke=True,
                command={"epochs": 3}, sets={"epochs": 4, "lr": 1e-5})
    assert r.origins["seed"] == "grid of experiment 'x': seed" and r.hparams["seed"] == 7
    assert r.hparams["resolution"] == 32 and r.origins["resolution"].startswith("--smoke")  # smoke after backbone
    assert (r.hparams["epochs"], r.origins["epochs"]) == (4, "--set")  # --set after smoke and the command
    assert (r.hparams["lr"], r.origins["lr"]) == (1e-5, "--set")
    assert r.origins["eval_interval"].startswith("default: ClassificationHparams")
    plain = resolve(catalog, recipe, vit)
    assert plain.hparams["resolution"] == vit.resolution and "backbone 'tiny_vit' resolution" in plain.origins["resolution"]


def test_every_coco_frozen_run_plans_batch_2_per_gpu_and_evaluates_every_epoch(builtin):
    """Audit rows D2, D3: the authors' frozen configs use 2 images per GPU (16 in all) and evaluate every
    epoch for every backbone, SAM and the ConvNeXt-B / SwinV2-B / MiDaS-B / SD ones included."""
    frozen = [s for s in plan(builtin, "detection") if s.recipe == "coco_frozen"]
    assert len(frozen) == 92
    assert {(s.hparams["per_gpu_batch"], s.hparams["batch_size"], s.hparams["eval_interval"]) for s in frozen} == {(2, 16, 1)}
    fine = {s.backbone: s.hparams for s in plan(builtin, "detection") if s.recipe == "coco_finetune"}
    assert (fine["sam_vit_base"]["per_gpu_batch"], fine["sam_vit_base"]["eval_interval"]) == (4, 12)
    assert fine["convnext_base"]["per_gpu_batch"] == 1


def test_show_and_plan_agree(builtin):
    r = run_cli("show", "coco_frozen", "-b", "convnext_base", "--json")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    r = run_cli("plan", "detection", "-b", "convnext_base", "-r", "coco_frozen", "--json")
    planned = json.loads(r.stdout)
    assert len(planned) == 4  # the lr grid
    for spec in planned:
        same = {k: v for k, v in spec["hparams"].items() if k not in ("lr", "seed")}
        assert same == {k: v for k, v in shown["resolved_hparams"].items() if k not in ("lr", "seed")}
        assert spec["origins"]["per_gpu_batch"] == shown["origins"]["per_gpu_batch"]
    assert shown["resolved_hparams"]["per_gpu_batch"] == 2


def test_a_run_shared_by_two_experiments_has_one_id(builtin):
    table2 = {(s.recipe, s.backbone, s.dataset, s.hparams["lr"], s.seed): s.id for s in plan(builtin, "table2")}
    detection = {(s.recipe, s.backbone, s.dataset, s.hparams["lr"], s.seed): s.id for s in plan(builtin, "detection")}
    shared = set(table2) & set(detection)
    assert len(shared) == 184
    assert all(table2[k] == detection[k] for k in shared)


def test_set_is_typed_recorded_and_changes_the_id(builtin):
    base = plan(builtin, "detection", backbones=["sam_vit_base"], recipes=["coco_frozen"])
    mine = plan(builtin, "detection", backbones=["sam_vit_base"], recipes=["coco_frozen"],
                sets=parse_sets(["lr=2e-4", "lr_steps=[20, 30]", "amp=false"]))
    assert len(mine) == 1  # --set lr replaces the grid's four lrs
    [s] = mine
    assert s.hparams["lr"] == 2e-4 and s.hparams["lr_steps"] == [20, 30] and s.hparams["amp"] is False
    assert s.origins["lr"] == "--set" and s.user_set == {"lr": 2e-4, "lr_steps": [20, 30], "amp": False}
    assert s.id not in {b.id for b in base}


@pytest.mark.parametrize("pairs, message", [
    (["lrr=1"], "--set lrr: not a hyperparameter of the planned runs"),
    (["lr=-1"], "hparams.lr = -1 (from --set)"),
    (["lr"], "expected KEY=VALUE"),
    (["lr=1", "lr=2"], "given twice"),
    (["lr={a: 1}"], "not a mapping"),
])
def test_bad_set_is_one_clear_error(builtin, pairs, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        plan(builtin, "detection", backbones=["sam_vit_base"], recipes=["coco_frozen"], sets=parse_sets(pairs))


def test_recipe_filter(builtin):
    specs = plan(builtin, "detection", recipes=["coco_random"])
    assert specs and {s.recipe for s in specs} == {"coco_random"}
    with pytest.raises(BadInput, match="no grid entry of recipe 'finetune'"):
        plan(builtin, "detection", recipes=["finetune"])


def test_explain_json_values_origins_and_derived():
    r = run_cli("explain", "table3", "-b", "vit_small_in1k", "-d", "imagenet", "-r", "finetune", "--json")
    assert r.returncode == 0, r.stderr
    [rep] = json.loads(r.stdout)
    hp = {h["key"]: h for h in rep["hparams"]}
    assert hp["lr"]["value"] == 1e-3 and hp["lr"]["origin"] == "manifests/recipes.yaml: recipe 'finetune'"
    assert hp["resolution"]["origin"] == "manifests/backbones.yaml: backbone 'vit_small_in1k' resolution"
    d = rep["derived"]
    assert (d["effective_batch"], d["accumulation"], d["world_size"], d["per_gpu_batch"]) == (1024, 1, 8, 128)
    assert d["effective_lr"] == 1e-3 and (d["warmup_steps"], d["warmup_unit"]) == (5, "epochs")
    assert d["updates_per_epoch"] == 1281167 // 1024


def test_explain_probe_scales_the_lr_and_warms_up_in_updates():
    r = run_cli("explain", "table3", "-b", "vit_small_in1k", "-r", "linear_probe", "--json")
    [rep] = json.loads(r.stdout)
    hp = {h["key"]: h["value"] for h in rep["hparams"]}
    d = rep["derived"]
    assert hp["lr_scaling"] == "linear_256" and d["effective_lr"] == pytest.approx(hp["lr"] * hp["batch_size"] / 256)
    assert d["warmup_unit"] == "updates"
    assert d["warmup_steps"] == round(hp["warmup_epochs"] * d["updates_per_epoch"])


def test_explain_a_spec_file_and_bad_targets(tmp_path, builtin):
    [spec] = plan(builtin, "detection", backbones=["sam_vit_base"], recipes=["coco_frozen"],
                  sets=parse_sets(["lr=2e-4"]))
    path = tmp_path / spec.id / "spec.json"
    path.parent.mkdir()
    path.write_text(json.dumps(spec.model_dump(mode="json")))
    r = run_cli("explain", spec.id, "--runs-dir", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    assert {h["key"]: h["origin"] for h in json.loads(r.stdout)[0]["hparams"]}["lr"] == "--set"
    r = run_cli("explain", "0123456789abcdef", "--runs-dir", str(tmp_path))
    assert r.returncode == 2 and "no spec.json" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("explain", "tabel3")
    assert r.returncode == 2 and "table3" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_run_one_refuses_hparams_that_do_not_validate(tmp_path, builtin):
    from bobkit.plan import run_id
    from bobkit.runone import load_spec

    [spec] = plan(builtin, "detection", backbones=["sam_vit_base"], recipes=["coco_frozen"],
                  sets=parse_sets(["lr=2e-4"]))
    body = spec.model_dump(mode="json")
    body["hparams"]["lr"] = -1.0
    body["id"] = run_id(body)  # consistent id, invalid value: refused by the schema, naming the field
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(body))
    with pytest.raises(BadInput, match="hparams.lr does not validate against the detection schema"):
        load_spec(path)

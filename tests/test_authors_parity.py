"""The authors' settings, checked against what bobkit plans (rows of the parity audit).

COCO detection, config by config: every one of the authors' 218 Cascade Mask R-CNN configs is a run
that `bobkit plan detection` plans, with the authors' values.

tests/fixtures/authors/coco_configs.csv holds the values of hsouri/bob-detection `configs/bob/**`
(commit d6702e7) as mmengine's Config resolves them: one row per config file (lr, weight decay,
epochs, whether fp16 is on, samples per GPU, drop path, evaluation interval, frozen stages). A
difference the kit means to keep must be a recorded deviation that --faithful undoes; there is none
for these fields, so the default plan must match every row.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from bobkit.manifest.loader import load_catalog
from bobkit.plan import plan

CONFIGS = Path(__file__).parent / "fixtures" / "authors" / "coco_configs.csv"

# (config folder, the part of the file name before the variant) -> bobkit backbone id
BACKBONES = {
    ("ViTDet", "vitdet-b_fpn_3x_coco_in1k"): "vit_base_in1k",
    ("ViTDet", "vitdet-b_fpn_3x_coco"): "vit_base_in1k",  # the random-init files have no "in1k"
    ("ViTDet", "vitdet-s_fpn_3x_coco_in1k"): "vit_small_in1k",
    ("clip", "clip_vitdet-b_fpn_3x_coco"): "clip_vit_base_laion2b",
    ("convnext", "convnext-b_fpn_3x_coco_in1k"): "convnext_base",
    ("convnext", "convnext-b_fpn_3x_coco_in22k"): "convnext_base_in22k",
    ("convnext", "convnext-t_fpn_3x_coco_in1k"): "convnext_tiny",
    ("dino", "dino_r50_fpn_1x_coco_adamw"): "dino_resnet50",
    ("dino", "dino_vitdet-b_fpn_3x_coco"): "dino_vit_base",
    ("dino", "dino_vitdet-s_fpn_3x_coco"): "dino_vit_small",
    ("mae", "mae_vitdet-b_fpn_3x_coco"): "mae_vit_base",
    ("midas", "midas_swin2base-w24-384_fpn_1x_coco"): "midas_swinv2_base_384",
    ("midas", "midas_swin2tiny-w8-256_fpn_1x_coco"): "midas_swinv2_tiny_256",
    ("mocov3", "mocov3_vitdet-b_fpn_3x_coco"): "mocov3_vit_base",
    ("mocov3", "mocov3_vitdet-s_fpn_3x_coco"): "mocov3_vit_small",
    ("resnet", "r101_fpn_1x_coco_adamw"): "resnet101",
    ("resnet", "r50_fpn_1x_coco_adamw"): "resnet50",
    ("sam", "sam_vitdet-b_fpn_3x_coco"): "sam_vit_base",
    ("stable_diff", "sd_fpn_3x_coco_adamw"): "sd_v1",
    ("swinv2", "swin2base-w16-256_fpn_1x_coco"): "swinv2_base_w16_in22ft1k",
    ("swinv2", "swin2base-w24-384_fpn_1x_coco"): "swinv2_base_w24_in22ft1k",
    ("swinv2", "swin2base-w8-256_fpn_1x_coco"): "swinv2_base_w8",
    ("swinv2", "swin2tiny-w8-256_fpn_1x_coco"): "swinv2_tiny_w8",
    ("vicreg", "vicreg_r50_fpn_1x_coco_adamw"): "vicreg_resnet50",
}
VARIANT = re.compile(r"_(frozen|random-init|random-inint)")


def _run_key(row: dict[str, str]) -> tuple[str, str, float]:
    """(backbone id, recipe, lr) of a config file. The lr is the resolved value (one file's name says 3e-5
    where its config sets 3e-4)."""
    folder, name = row["config"].split("/", 1)
    stem = re.sub(r"_lr[0-9.e-]+\.py$", "", name.removeprefix("cascade_mask_rcnn_"))
    variants = set(VARIANT.findall(stem))
    recipe = "coco_frozen" if "frozen" in variants else "coco_random" if variants else "coco_finetune"
    return BACKBONES[(folder, VARIANT.sub("", stem))], recipe, float(row["lr"])


def _authors_rows() -> list[dict[str, str]]:
    with open(CONFIGS, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def planned():
    specs = plan(load_catalog(), "detection")
    return {(s.backbone, s.recipe, s.hparams["lr"]): s for s in specs}


def test_every_authors_config_is_one_planned_run(planned):
    rows = _authors_rows()
    keys = [_run_key(r) for r in rows]
    assert len(rows) == 218 and len(set(keys)) == 218
    missing = [r["config"] for r, k in zip(rows, keys) if k not in planned]
    assert not missing, f"{len(missing)} authors' configs have no planned run: {missing[:5]}"
    assert set(keys) == set(planned), sorted(set(planned) - set(keys))[:5]


def _mismatches(row: dict[str, str], spec) -> list[str]:
    hp = spec.hparams
    out = []

    def differ(field: str, authors, ours) -> None:
        if authors != ours:
            out.append(f"{field}: authors {authors!r}, bobkit {ours!r} ({spec.origins.get(field, '?')})")

    differ("weight_decay", float(row["weight_decay"]), hp["weight_decay"])
    differ("epochs", int(row["epochs"]), hp["epochs"])
    differ("amp", row["fp16"] == "yes", hp["amp"])
    differ("per_gpu_batch", int(row["samples_per_gpu"]), hp["per_gpu_batch"])
    if row["drop_path"]:  # the ResNet and SD configs have no drop path
        differ("drop_path", float(row["drop_path"]), hp["drop_path"])
    differ("eval_interval", int(row["eval_interval"]) if row["eval_interval"] != "-" else 1, hp["eval_interval"])
    return out


def test_every_planned_run_has_its_configs_values(planned):
    problems = []
    for row in _authors_rows():
        spec = planned[_run_key(row)]
        problems += [f"{row['config']}: {m}" for m in _mismatches(row, spec)]
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])


def test_sim10k_swinv2_and_midas_train_in_fp32():
    """Audit row O1: the authors' SwinV2 and MiDaS Sim10k→Cityscapes configs set fp16 = None; the other
    families keep fp16 (the plain ViTs' SGD/fp32 is the recorded deviation vit_sim10k_sgd)."""
    catalog = load_catalog()
    specs = [s for s in plan(catalog, "ood_detection") if s.task == "ood_detection" and s.recipe.startswith("sim10k")]
    families = {s.backbone: catalog.backbones[s.backbone].family for s in specs}
    assert {families[s.backbone] for s in specs if not s.hparams["amp"]} == {"swinv2"}
    assert all(not s.hparams["amp"] for s in specs if families[s.backbone] == "swinv2")
    faithful = plan(catalog, "ood_detection", faithful=True)
    assert all(s.hparams["amp"] is False for s in faithful if catalog.backbones[s.backbone].family == "vit")


def test_classification_backbones_without_stochastic_depth_plan_none():
    """Audit row C3: the authors' DINO and VICReg ResNet-50s have no drop path (torchvision's resnet50;
    VICReg's **kwargs swallow drop_path_rate), in every classification protocol."""
    catalog = load_catalog()
    specs = [s for s in plan(catalog, "table2") if s.task in ("classification", "ood_classification")
             and s.protocol != "ood_eval" and s.backbone in ("dino_resnet50", "vicreg_resnet50")]
    assert {s.recipe for s in specs} >= {"finetune", "semi_1pct", "semi_10pct", "chexpert_finetune", "visda"}
    assert {s.hparams["drop_path"] for s in specs} == {0.0}


def test_chexpert_seeds_as_the_authors_script():
    """Audit row X1: main_finetune_chestxray.py seeds 42 + rank (the runner adds the rank)."""
    specs = [s for e in ("table2", "table3", "classification") for s in plan(load_catalog(), e)
             if s.recipe == "chexpert_finetune"]
    assert specs and {(s.seed, s.hparams["seed"]) for s in specs} == {(42, 42)}


@pytest.mark.parametrize("backbone, crop", [("convnext_tiny", 0.875), ("dino_resnet50", 0.875),
                                            ("vicreg_resnet50", 0.875), ("mae_vit_base", 0.875),
                                            ("mae_vit_large", 0.875), ("clip_vit_base_laion2b", 0.9),
                                            ("clip_vit_large_laion2b", 0.9)])
def test_eval_crop_is_the_authors_timm_0612_one(backbone, crop):
    """Audit rows C5-C8: where timm 1.0's config gives another eval crop than the authors' timm 0.6.12,
    the runs plan the authors' one, in every protocol that evaluates at that crop."""
    catalog = load_catalog()
    specs = [s for s in plan(catalog, "table2", backbones=[backbone])
             if s.recipe in ("finetune", "semi_1pct", "semi_10pct", "visda", "ood_eval")]
    assert specs and {s.hparams["crop_pct"] for s in specs} == {crop}


def test_chexpert_evaluates_the_whole_256px_image():
    """Audit row X2: Medical-MAE's transform keeps crop_pct 1.0 above 224 px (Resize 256, CenterCrop 256)."""
    specs = [s for s in plan(load_catalog(), "table2") if s.recipe == "chexpert_finetune"]
    assert specs and {s.hparams["crop_pct"] for s in specs} == {1.0}


def test_mocov3_position_embedding_is_fixed_in_the_classification_fine_tunes():
    """Audit row C16."""
    specs = [s for s in plan(load_catalog(), "table2") if s.backbone.startswith("mocov3_vit")
             and s.recipe in ("finetune", "semi_1pct", "semi_10pct", "visda")]
    assert specs and all(s.hparams["fixed_pos_embed"] for s in specs)
    others = [s for s in plan(load_catalog(), "table2") if s.recipe == "finetune" and not s.backbone.startswith("mocov3")]
    assert not any(s.hparams["fixed_pos_embed"] for s in others)


@pytest.mark.parametrize("backbone, rate", [("convnext_tiny", 0.4), ("convnext_base", 0.7), ("convnext_base_in22k", 0.7),
                                            ("swinv2_tiny_w8", 0.2), ("swinv2_base_w8", 0.5),
                                            ("swinv2_base_w16_in22ft1k", 0.2), ("swinv2_base_w24_in22ft1k", 0.2),
                                            ("midas_swinv2_tiny_256", 0.2), ("midas_swinv2_base_384", 0.2),
                                            ("resnet50", 0.0), ("vit_base_in1k", 0.1)])
def test_sim10k_drop_path_per_backbone(backbone, rate):
    """Audit row O2: the Sim10k configs' drop path, in every variant (fine-tune, frozen, random init)."""
    specs = [s for s in plan(load_catalog(), "ood_detection", backbones=[backbone]) if s.recipe.startswith("sim10k")]
    assert specs and {s.hparams["drop_path"] for s in specs} == {rate}


def test_layer_decay_is_off_where_the_authors_timm_found_no_layers():
    """Audit row C2: five custom models had one parameter group under timm 0.6.12, so no layer decay."""
    custom = {"mocov3_vit_small", "mocov3_vit_base", "vicreg_resnet50", "dino_resnet50", "vicregl_convnext_xlarge"}
    specs = [s for s in plan(load_catalog(), "table2") if s.recipe in ("finetune", "semi_1pct", "semi_10pct", "visda")]
    assert {s.hparams["layer_decay"] for s in specs if s.backbone in custom} == {None}
    assert None not in {s.hparams["layer_decay"] for s in specs if s.backbone not in custom}

"""The generated mmdet config follows the recipe (bob-recipes.md §2, §4) for a CNN and a ViT backbone.

Specs come from the real manifests through plan(); the backbone's feature layout is given by hand
in the config tests and probed through the backbone zoo in the last test. No mmdet needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bobkit.data.coco import CocoSplit
from bobkit.results import RunDir
from bobkit.tasks.detection.features import FeatureLayout
from bobkit.tasks.detection.job import DetectionJob
from bobkit.tasks.detection.mmdet_config import mmdet_config

CONVNEXT_T = FeatureLayout((96, 192, 384, 768), (4, 8, 16, 32), False, (0, 1, 2, 3))
VIT_S = FeatureLayout((384,), (16,), True, (0,))
COCO = CocoSplit(Path("/data/coco2017/train2017"), Path("/data/coco2017/annotations/instances_train2017.json"))
COCO_VAL = CocoSplit(Path("/data/coco2017/val2017"), Path("/data/coco2017/annotations/instances_val2017.json"))


@pytest.fixture(scope="module")
def catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog()


def spec_of(catalog, experiment, backbone, recipe, dataset=None, lr=1e-4):
    from bobkit.plan import plan

    for spec in plan(catalog, experiment, backbones=[backbone]):
        if spec.recipe == recipe and spec.hparams["lr"] == lr and (dataset is None or spec.dataset == dataset):
            return spec
    raise AssertionError(f"no {recipe} run of {backbone} at lr {lr} in {experiment}")


def job_of(spec, train=COCO, evaluate=COCO_VAL, classes=80):
    return DetectionJob(spec=spec, run_dir=RunDir(Path("/runs/x") / spec.id), train=train, evaluate=evaluate,
                        classes=tuple(f"c{i}" for i in range(classes)), loader_workers=4)


def by_type(pipeline, name):
    return [step for step in pipeline if step["type"] == name]


def check_schedule(cfg, lr):
    """AdamW (β 0.9/0.999, wd 0.05) at the spec's lr; 36 epochs, ×0.1 at 27 and 33; 1000 linear warmup iters."""
    opt = cfg["optim_wrapper"]["optimizer"]
    assert opt == {"type": "AdamW", "lr": lr, "betas": (0.9, 0.999), "weight_decay": 0.05}
    assert cfg["train_cfg"] == {"type": "EpochBasedTrainLoop", "max_epochs": 36, "val_interval": 1}
    warmup, steps = cfg["param_scheduler"]
    assert warmup == {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": 1000}
    assert steps == {"type": "MultiStepLR", "by_epoch": True, "begin": 0, "end": 36, "milestones": [27, 33],
                     "gamma": 0.1}
    assert cfg["default_hooks"]["checkpoint"]["interval"] == 1 and cfg["resume"] is True


def test_cnn_config_follows_the_coco_recipe(catalog):
    spec = spec_of(catalog, "detection", "convnext_tiny", "coco_finetune", lr=2e-4)
    cfg = mmdet_config(spec, job_of(spec), CONVNEXT_T)
    check_schedule(cfg, 2e-4)
    ow = cfg["optim_wrapper"]
    assert ow["type"] == "AmpOptimWrapper" and ow["dtype"] == "float16" and ow["loss_scale"] == {"init_scale": 512.0}
    assert ow["accumulative_counts"] == 8  # effective batch 16 = 2 per GPU × 1 GPU × 8
    assert cfg["train_dataloader"]["batch_size"] == 2
    model = cfg["model"]
    assert model["type"] == "CascadeRCNN"
    assert model["backbone"]["type"] == "BobkitBackbone" and model["backbone"]["drop_path"] == 0.4
    assert model["backbone"]["pretrained"] is True and model["backbone"]["frozen"] is False
    assert model["neck"] == {"type": "FPN", "in_channels": [96, 192, 384, 768], "out_channels": 256, "num_outs": 5}
    assert model["rpn_head"]["anchor_generator"]["strides"] == [4, 8, 16, 32, 64]
    heads = model["roi_head"]["bbox_head"]
    assert [h["type"] for h in heads] == ["ConvFCBBoxHead"] * 3
    assert all(h["loss_bbox"] == {"type": "GIoULoss", "loss_weight": 10.0} and h["reg_decoded_bbox"] for h in heads)
    assert all(h["num_classes"] == 80 for h in heads) and model["roi_head"]["mask_head"]["num_classes"] == 80
    assert [a["assigner"]["pos_iou_thr"] for a in model["train_cfg"]["rcnn"]] == [0.5, 0.6, 0.7]
    # DETR multi-scale at 1333×800: flip, then short side 480…800 (max 1333) or resize–crop–resize
    pipeline = cfg["train_dataloader"]["dataset"]["pipeline"]
    choice = by_type(pipeline, "RandomChoice")[0]["transforms"]
    assert choice[0][0]["scales"][0] == (1333, 480) and choice[0][0]["scales"][-1] == (1333, 800)
    assert [s[1] for s in choice[1][0]["scales"]] == [400, 500, 600] and choice[1][1]["crop_size"] == (384, 600)
    assert by_type(pipeline, "RandomFlip")[0]["prob"] == 0.5
    assert by_type(cfg["val_dataloader"]["dataset"]["pipeline"], "Resize")[0]["scale"] == (1333, 800)
    assert model["data_preprocessor"]["pad_size_divisor"] == 32
    assert cfg["val_evaluator"]["type"] == "CocoMetric" and cfg["val_evaluator"]["metric"] == ["bbox", "segm"]


def test_vit_config_follows_the_vitdet_recipe(catalog):
    spec = spec_of(catalog, "detection", "vit_small_in1k", "coco_finetune", lr=8e-5)
    cfg = mmdet_config(spec, job_of(spec), VIT_S)
    check_schedule(cfg, 8e-5)
    model = cfg["model"]
    assert model["backbone"]["resolution"] == 1024 and model["backbone"]["drop_path"] == 0.1
    assert model["neck"]["type"] == "BobkitSimpleFeaturePyramid" and model["neck"]["in_channels"] == 384
    assert model["rpn_head"]["anchor_generator"]["strides"] == [4, 8, 16, 32, 64]
    assert model["rpn_head"]["num_convs"] == 2
    heads = model["roi_head"]["bbox_head"]
    assert [h["type"] for h in heads] == ["Shared4Conv1FCBBoxHead"] * 3
    assert all(h["norm_cfg"] == {"type": "BobkitLN2d"} and h["loss_bbox"]["type"] == "SmoothL1Loss" for h in heads)
    # LSJ: resize to 1024 with ratio 0.1–2.0, crop 1024, flip; padded to 1024 × 1024
    pipeline = cfg["train_dataloader"]["dataset"]["pipeline"]
    resize = by_type(pipeline, "RandomResize")[0]
    assert resize["scale"] == (1024, 1024) and resize["ratio_range"] == (0.1, 2.0)
    assert by_type(pipeline, "RandomCrop")[0]["crop_size"] == (1024, 1024)
    assert model["data_preprocessor"]["pad_size_divisor"] == 1024
    assert by_type(cfg["val_dataloader"]["dataset"]["pipeline"], "Resize")[0]["scale"] == (1024, 1024)
    mean = model["data_preprocessor"]["mean"]
    assert mean == pytest.approx([255 * m for m in spec.backbone_spec["mean"]])


def test_frozen_random_and_sd_variants(catalog):
    frozen = spec_of(catalog, "detection", "vit_small_in1k", "coco_frozen")
    assert mmdet_config(frozen, job_of(frozen), VIT_S)["model"]["backbone"]["frozen"] is True
    random = spec_of(catalog, "detection", "resnet50", "coco_random")
    cfg = mmdet_config(random, job_of(random), FeatureLayout((256, 512, 1024, 2048), (4, 8, 16, 32), False, (1, 2, 3, 4)))
    assert cfg["model"]["backbone"]["pretrained"] is False and cfg["model"]["backbone"]["norm_eval"] is False
    sd = spec_of(catalog, "detection", "sd_v1", "coco_finetune")
    sd_layout = FeatureLayout((256, 320, 640, 1280, 1280), (4, 8, 16, 32, 64), False, (0, 1, 2, 3, 4))
    cfg = mmdet_config(sd, job_of(sd), sd_layout)
    assert cfg["optim_wrapper"]["type"] == "OptimWrapper"  # the authors' SD configs have no fp16
    # the authors' SD template: FPN over [256, 320, 640, 1280, 1280] with 6 outputs, resize 512
    assert cfg["model"]["neck"] == {"type": "FPN", "in_channels": [256, 320, 640, 1280, 1280], "out_channels": 256,
                                    "num_outs": 6}
    assert by_type(cfg["train_dataloader"]["dataset"]["pipeline"], "Resize")[0]["scale"] == (512, 512)
    assert cfg["model"]["rpn_head"]["anchor_generator"]["strides"] == [4, 8, 16, 32, 64, 128]


def test_sim10k_cityscapes_pair_is_box_only_and_split_in_two(catalog):
    from bobkit.plan import plan

    specs = {s.dataset: s for s in plan(catalog, "ood_detection", backbones=["resnet50"])
             if s.recipe == "sim10k_cityscapes"}
    train, evaluate = specs["sim10k"], specs["cityscapes"]
    assert evaluate.depends_on == [train.id]
    layout = FeatureLayout((256, 512, 1024, 2048), (4, 8, 16, 32), False, (1, 2, 3, 4))
    cfg = mmdet_config(train, job_of(train, evaluate=None, classes=1), layout)
    assert "mask_head" not in cfg["model"]["roi_head"] and cfg["val_dataloader"] is None
    assert all(h["num_classes"] == 1 for h in cfg["model"]["roi_head"]["bbox_head"])
    assert by_type(cfg["train_dataloader"]["dataset"]["pipeline"], "RandomResize")[0]["scale"] == (1024, 1024)
    check_schedule(cfg, 1e-4)
    cfg = mmdet_config(evaluate, job_of(evaluate, train=None, classes=1), layout)
    assert cfg["train_dataloader"] is None and cfg["optim_wrapper"] is None
    assert cfg["val_evaluator"]["metric"] == ["bbox"] and cfg["model"]["backbone"]["pretrained"] is False


@pytest.mark.parametrize("backbone, channels, strides", [
    ("resnet50", (256, 512, 1024, 2048), (4, 8, 16, 32)),
    ("dino_vit_small", (384,), (16,)),
])
def test_probed_layout_matches_the_backbone(catalog, backbone, channels, strides):
    pytest.importorskip("torch")
    from bobkit.tasks.detection.features import probe_layout

    layout = probe_layout(catalog.backbones[backbone].model_dump(mode="json"), resolution=64, drop_path=0.1)
    assert (layout.channels, layout.strides) == (channels, strides)
    assert layout.default_neck == ("simple_fpn" if len(channels) == 1 else "fpn")


def test_coco_metric_names_become_bobkit_metrics():
    from bobkit.errors import RunFailed
    from bobkit.tasks.detection.mmdet_engine import clean_metrics

    raw = {"coco/bbox_mAP": 0.412, "coco/bbox_mAP_50": 0.6, "coco/bbox_mAP_75": 0.45, "coco/bbox_mAP_s": 0.2,
           "coco/bbox_mAP_m": -1.0, "coco/bbox_mAP_l": 0.55, "coco/segm_mAP": 0.37}
    assert clean_metrics(raw, ("bbox",)) == {"bbox_mAP": 0.412, "bbox_mAP_50": 0.6, "bbox_mAP_75": 0.45,
                                             "bbox_mAP_s": 0.2, "bbox_mAP_l": 0.55}  # -1: undefined, left out
    assert clean_metrics(raw, ("bbox", "segm"))["segm_mAP"] == 0.37
    with pytest.raises(RunFailed, match="none of"):
        clean_metrics({"coco/bbox_mAP": -1.0}, ("bbox",))


def test_no_detection_scores_zero_where_ground_truth_exists(tmp_path, catalog):
    from bobkit.data.coco import write_coco_split
    from bobkit.tasks.detection.mmdet_engine import no_detection_metrics

    split = write_coco_split(tmp_path, "val2017", num_images=2)  # small objects only (64 px images)
    spec = spec_of(catalog, "detection", "resnet50", "coco_finetune")
    metrics = no_detection_metrics(job_of(spec, evaluate=split))
    assert metrics == {f"{t}_mAP{s}": 0.0 for t in ("bbox", "segm") for s in ("", "_50", "_75", "_s")}


@pytest.mark.parametrize("world_size", [1, 4])
def test_optimization_facts_are_what_the_config_sets(catalog, world_size):
    """The numbers a detection run records in its provenance (`optimization`) are the config's own."""
    from bobkit.tasks.detection.mmdet_config import optimization_facts

    spec = spec_of(catalog, "detection", "convnext_tiny", "coco_finetune", lr=2e-4)
    cfg = mmdet_config(spec, job_of(spec), CONVNEXT_T, world_size=world_size)
    facts = optimization_facts(spec.typed_hparams(), world_size)
    accumulation = 8 // world_size  # batch 16 = 2 per GPU × world_size × accumulation
    assert facts["effective_lr"] == cfg["optim_wrapper"]["optimizer"]["lr"] == 2e-4
    assert facts["accumulation"] == cfg["optim_wrapper"]["accumulative_counts"] == accumulation
    assert facts["per_gpu_batch"] == cfg["train_dataloader"]["batch_size"] == 2
    assert facts["effective_batch"] == 16 and facts["world_size"] == world_size
    assert facts["warmup_iters"] == cfg["param_scheduler"][0]["end"] == 1000 and facts["warmup_unit"] == "iterations"
    assert facts["warmup_steps"] == 1000 and facts["warmup_optimizer_steps"] == 1000 / accumulation
    assert facts["warmup_start_factor"] == cfg["param_scheduler"][0]["start_factor"]


def test_the_job_carries_typed_hparams(catalog):
    from bobkit.manifest.hparams import DetectionHparams

    spec = spec_of(catalog, "detection", "convnext_tiny", "coco_finetune", lr=2e-4)
    job = job_of(spec)
    assert isinstance(job.hp, DetectionHparams) and job.hp.lr == 2e-4 and job.with_masks

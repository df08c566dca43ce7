"""Hyperparameter schemas, one per kind of protocol.

A recipe's merged hparams (its base's, then its own, then per-backbone overrides) must validate
against its schema: nothing a runner needs is left to a library default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Hparams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    lr: float = Field(ge=0)
    batch_size: int = Field(gt=0, description="effective batch size (all GPUs, after accumulation)")
    per_gpu_batch: int = Field(gt=0)
    resolution: int | None = Field(None, gt=0, description="None: the backbone's own resolution")
    amp: bool = True
    amp_dtype: Literal["float16", "bfloat16"] = "bfloat16"
    pretrained: bool = True


class TrainHparams(Hparams):
    optimizer: Literal["adamw", "sgd", "lars"]
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    epochs: int = Field(gt=0)
    warmup_epochs: float = Field(ge=0)
    schedule: Literal["cosine", "step"]


class ClassificationHparams(TrainHparams):
    layer_decay: float | None = Field(None, gt=0, le=1)
    warmup_lr: float = Field(ge=0)
    min_lr: float = Field(ge=0)
    lr_scaling: Literal["absolute", "linear_256"] = Field(
        "absolute", description="linear_256: lr = blr × batch_size / 256 (MAE-style)"
    )
    mixup: float = Field(ge=0)
    cutmix: float = Field(ge=0)
    mixup_prob: float = Field(1.0, ge=0, le=1)
    mixup_switch_prob: float = Field(0.5, ge=0, le=1)
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    label_smoothing: float = Field(ge=0, lt=1)
    reprob: float = Field(ge=0, le=1)
    remode: Literal["pixel", "const", "rand"] = "pixel"
    randaugment: str | None = Field(None, description="timm auto-augment string, e.g. rand-m9-mstd0.5-inc1")
    color_jitter: float | None = Field(None, ge=0)
    hflip: float = Field(0.5, ge=0, le=1)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_pct: float | None = Field(None, gt=0, le=1, description="None: the backbone's own")
    interpolation: Literal["bicubic", "bilinear", "random"] = "bicubic"
    drop_path: float = Field(ge=0, lt=1)
    drop: float = Field(0.0, ge=0, lt=1)
    trainable: Literal["all", "head"] = "all"
    head_init: Literal["xavier_normal", "trunc_normal_0.01"] = "xavier_normal"
    head_batchnorm: bool = Field(False, description="BatchNorm1d(affine=False) before the head (MAE probe)")
    fixed_pos_embed: bool = Field(False, description="the backbone's position embedding is not trained (MoCo v3's "
                                                     "fixed sin-cos table)")
    feature_cache: bool = Field(False, description="linear probe on cached features (drops augmentation)")
    subset: Literal["1pct", "10pct"] | None = Field(None, description="ImageNet semi-supervised split")
    train_fraction: float | None = Field(None, gt=0, le=1, description="first fraction of rows after a seeded shuffle")
    multilabel: bool = False
    eval_metric: Literal["top1", "auc"] = "top1"
    eval_interval: int = Field(1, ge=1, description="evaluate after epochs 1, 1+n, 1+2n, … and the last; the "
                                                    "best epoch is chosen among the evaluated ones")

    @model_validator(mode="after")
    def _momentum_for_sgd(self) -> "ClassificationHparams":
        if self.optimizer in ("sgd", "lars") and self.momentum is None:
            raise ValueError(f"optimizer {self.optimizer} needs momentum")
        return self


class EvalHparams(Hparams):
    crop_pct: float | None = Field(None, gt=0, le=1)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    checkpoint: str | None = Field(None, description="absolute path of a classifier file evaluated instead of the "
                                                     "upstream fine-tune (set by --classifier BACKBONE=FILE)")


class RetrievalHparams(Hparams):
    resize: int | None = Field(None, gt=0, description="None: the backbone's own rule (see docs)")
    normalization: Literal["backbone", "imagenet"] = "backbone"
    feature: Literal["pooled", "head_logits"] = "pooled"
    l2_normalize: bool = True
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10])
    queries_per_class_fraction: float | None = Field(None, gt=0, lt=1)
    images_per_class: int | None = Field(None, gt=0)


class DetectionHparams(TrainHparams):
    engine: Literal["mmdet"] = Field("mmdet", description="detection engine (bobkit.tasks.detection.engine)")
    detector: Literal["cascade_mask_rcnn", "cascade_rcnn"]
    neck: Literal["auto", "fpn", "simple_fpn"] = "auto"
    frozen: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = Field(ge=0)
    lr_steps: list[int] = Field(description="epochs at which lr drops ×0.1")
    train_pipeline: Literal["lsj", "detr_multiscale", "fixed"] = "lsj"
    drop_path: float = Field(0.1, ge=0, lt=1)
    norm_eval: bool = True
    eval_interval: int = Field(1, ge=1)
    grad_clip: float | None = None


SCHEMA_BY_PROTOCOL: dict[str, type[Hparams]] = {
    "finetune": ClassificationHparams,
    "linear_probe": ClassificationHparams,
    "semi_supervised": ClassificationHparams,
    "chexpert": ClassificationHparams,
    "visda": ClassificationHparams,
    "ood_eval": EvalHparams,
    "retrieval": RetrievalHparams,
    "detection": DetectionHparams,
    "ood_detection": DetectionHparams,
}

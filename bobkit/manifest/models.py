"""The manifest schema: everything bobkit knows of the paper, as typed data.

Every model forbids unknown keys, so a typo in a manifest is an error rather than a silently
ignored setting. Each fact carries `source` and `confidence` so a reader can trace it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Confidence = Literal["primary", "quoted", "secondary", "uncertain", "bobkit"]
TaskFamily = Literal["classification", "detection", "ood_classification", "ood_detection", "retrieval"]
ImageFamily = Literal["classification", "detection"]
BackboneKind = Literal[
    "supervised", "self-supervised", "vision-language", "generative", "depth", "copy-detection"
]
ArchFamily = Literal["resnet", "convnext", "swinv2", "vit", "clip_resnet", "sd_unet", "custom"]
WeightsFormat = Literal[
    "timm", "torchvision", "moco_v3", "dino", "mae", "vicreg", "vicregl", "midas", "sam",
    "openai_clip", "open_clip", "stable_diffusion", "sscd_torchscript", "deit",
    "convnext_official", "swinv2_official",
    "checkpoint",  # a user's state_dict for the timm architecture (gauntlet)
    "python",  # the user's entry point loads its own weights (gauntlet)
]

# The task family that decides which container image a run needs.
IMAGE_FAMILY: dict[str, ImageFamily] = {
    "classification": "classification",
    "ood_classification": "classification",
    "retrieval": "classification",
    "detection": "detection",
    "ood_detection": "detection",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(Strict):
    source: str = Field(description="where the fact comes from (file, section, URL)")
    confidence: Confidence = Field(description="primary, quoted, secondary, uncertain, or bobkit (own choice)")


class WeightsSource(Strict):
    """Where a backbone's pretrained weights come from and how they are laid out."""

    format: WeightsFormat
    timm_name: str | None = Field(None, description="timm model name with pretrained tag")
    url: str | None = None
    hub_id: str | None = Field(None, description="Hugging Face hub repository id")
    hub_file: str | None = None
    path: str | None = Field(None, description="a local checkpoint file (user backbones)")
    sha256: str | None = None
    gated: bool = Field(False, description="needs a Hugging Face token (licence acceptance)")
    note: str | None = None

    @model_validator(mode="after")
    def _has_a_location(self) -> "WeightsSource":
        if self.format == "python":
            return self
        if not (self.timm_name or self.url or self.hub_id or self.path):
            raise ValueError("weights need one of timm_name, url, hub_id or path")
        if self.sha256 is not None and (len(self.sha256) != 64 or not _is_hex(self.sha256)):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return self


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


class Backbone(Sourced):
    id: str
    name: str = Field(description="display name as in the paper")
    architecture: str = Field(description="architecture, e.g. ViT-B/16")
    family: ArchFamily
    timm_model: str = Field(description="timm architecture name that builds the network "
                                        "(open_clip name for clip_resnet; 'entry' for custom)")
    entry: str | None = Field(None, description="user backbone: 'module:function' returning a torch module")
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)
    params_m: float = Field(gt=0, description="backbone parameters in millions, without classifier head")
    method: str = Field(description="pretraining method, e.g. DINO, CLIP, supervised")
    kind: BackboneKind
    pretrain_data: str
    pretrain_images_m: float | None = Field(None, gt=0, description="pretraining images, millions")
    weights: WeightsSource
    detection_weights: WeightsSource | None = Field(
        None, description="the checkpoint the detection configs use, where it differs"
    )
    resolution: int = Field(gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tasks: list[TaskFamily] = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list, description="the authors' names for it")
    note: str | None = None

    @property
    def plain_vit(self) -> bool:
        return self.family == "vit"


class DatasetSplit(Strict):
    name: str
    images: int | None = Field(None, ge=0)


class Dataset(Sourced):
    id: str
    name: str
    task: TaskFamily
    num_classes: int | None = Field(None, gt=0)
    layout: str = Field(description="reader that understands the on-disk layout")
    layout_doc: str = Field(description="the expected on-disk layout, for error messages and docs")
    path: str = Field(description="folder under the data root")
    splits: dict[str, DatasetSplit] = Field(description="role (train, eval, query, database) -> split")
    urls: list[str] = Field(default_factory=list)
    license: str
    class_subset: str | None = Field(None, description="file of class indices this set evaluates on")
    note: str | None = None


class Override(Strict):
    """Recipe values that differ for some backbones (e.g. 50 epochs for the large ViTs)."""

    backbones: list[str] = Field(default_factory=list)
    families: list[ArchFamily] = Field(default_factory=list)
    set: dict[str, Any]
    source: str
    confidence: Confidence

    @model_validator(mode="after")
    def _targets_something(self) -> "Override":
        if not (self.backbones or self.families):
            raise ValueError("an override needs backbones or families")
        return self


class Recipe(Sourced):
    """A training or evaluation protocol. `base` inherits another recipe's hparams."""

    id: str
    title: str
    task: TaskFamily
    protocol: str
    base: str | None = None
    hparams: dict[str, Any] = Field(default_factory=dict)
    lr_grid: list[float] | None = Field(None, description="learning rates the paper sweeps")
    overrides: list[Override] = Field(default_factory=list)
    gpus: int = Field(1, ge=1, description="GPUs one run of this recipe asks for")
    note: str | None = None


class GridEntry(Strict):
    """One block of an experiment's grid: recipe × backbones × datasets × lrs × seeds."""

    recipe: str
    backbones: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    lrs: list[float] | None = Field(None, description="defaults to the recipe's lr_grid, else its lr")
    seeds: list[int] = Field(default_factory=lambda: [0])
    upstream: str | None = Field(
        None, description="recipe whose run on `upstream_dataset` produces the checkpoint evaluated here"
    )
    upstream_dataset: str | None = None

    @model_validator(mode="after")
    def _upstream_pair(self) -> "GridEntry":
        if (self.upstream is None) != (self.upstream_dataset is None):
            raise ValueError("upstream and upstream_dataset go together")
        return self


class Setting(Strict):
    """A column of a paper table: which runs feed it and which metric it reads."""

    id: str
    title: str
    recipes: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    metric: str
    higher_is_better: bool = True
    select: Literal["best_lr", "mean"] = Field(
        "best_lr", description="how runs of a cell over lrs/seeds combine"
    )


class TableSpec(Strict):
    kind: Literal["cells", "ranking", "synopsis"]
    settings: list[Setting] = Field(default_factory=list)
    top_k: int = Field(3, ge=1)
    params_below_m: float | None = Field(None, description="restrict to backbones under this size")


class SmokeSubset(Strict):
    """What `--smoke` keeps of the grid so the whole path runs on a CPU in minutes (bobkit's choice)."""

    backbones: list[str] = Field(default_factory=list, description="empty: all of the grid's")
    datasets: list[str] = Field(default_factory=list, description="empty: all of the grid's")


class Experiment(Sourced):
    id: str
    title: str
    description: str
    grid: list[GridEntry] = Field(default_factory=list)
    table: TableSpec
    metrics: list[str] = Field(default_factory=list)
    smoke: SmokeSubset = Field(default_factory=SmokeSubset)
    note: str | None = None


class FaithfulChange(Strict):
    """What `--faithful` changes in a run to restore the authors' behaviour."""

    hparams: dict[str, Any] = Field(default_factory=dict)
    recipes: list[str] = Field(default_factory=list, description="empty: every recipe of the tasks")
    tasks: list[TaskFamily] = Field(default_factory=list)
    backbones: list[str] = Field(default_factory=list, description="empty: every backbone")
    families: list[ArchFamily] = Field(default_factory=list)


class Deviation(Sourced):
    id: str
    title: str
    authors: str = Field(description="what the authors' code does")
    bobkit: str = Field(description="what bobkit does by default")
    why: str
    faithful: FaithfulChange | None = Field(None, description="how --faithful restores the authors' behaviour")


class PublishedValue(Strict):
    """One published number, keyed by (experiment, backbone, dataset, metric)."""

    experiment: str
    backbone: str
    dataset: str
    metric: str
    value: float
    unit: Literal["fraction", "percent", "rank", "rho", "count"]
    source: str
    confidence: Confidence
    tier: Literal["eval", "train", "rank", "info"] = "train"

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("value must be a finite number")
        return v


class Tolerance(Sourced):
    """How close a reproduced number must be to the published one, for one verification tier.

    The most specific entry wins: one naming the task and the metric, then the task, then the metric,
    then a generic one. Printed with every verdict (bobkit.verify).
    """

    id: str
    tier: Literal["eval", "train", "rank"]
    tasks: list[TaskFamily] = Field(default_factory=list, description="empty: every task")
    metrics: list[str] = Field(default_factory=list, description="empty: every metric")
    min_abs_pp: float = Field(0.0, ge=0, description="eval: the least |delta| allowed; train: the per-task floor (pp)")
    rounding: bool = Field(True, description="eval: allow at least half a unit of the published value's last digit")
    se_multiplier: float | None = Field(None, gt=0, description="train: tolerance = max(k x SE, floor)")
    warn_multiplier: float = Field(1.0, ge=1, description="|delta| up to this many tolerances is 'warn'")
    min_spearman: float | None = Field(None, ge=-1, le=1, description="rank: pass needs Spearman rho >= this")
    top_k: int | None = Field(None, ge=1, description="rank: pass needs the same top-k set")

    @model_validator(mode="after")
    def _tier_fields(self) -> "Tolerance":
        if self.tier == "train" and self.se_multiplier is None:
            raise ValueError("a train tolerance needs se_multiplier")
        if self.tier == "rank" and self.min_spearman is None and self.top_k is None:
            raise ValueError("a rank tolerance needs min_spearman or top_k")
        return self


KINDS = ("backbones", "datasets", "recipes", "experiments", "deviations", "tolerances")
ENTRY_MODEL: dict[str, type[Sourced]] = {
    "backbones": Backbone,
    "datasets": Dataset,
    "recipes": Recipe,
    "experiments": Experiment,
    "deviations": Deviation,
    "tolerances": Tolerance,
}

AnyEntry = Annotated[Union[Backbone, Dataset, Recipe, Experiment, Deviation], Field()]

"""What one detection run needs, independent of the engine that trains it.

`prepare_job` resolves the data (a synthetic stand-in for a smoke run, else the real layout under
the data root, converted to COCO json where the published format is not COCO) and the run's
paths. Three shapes of run come out of the manifests:
- train and evaluate (COCO 2017: layout `coco`);
- train only (Sim10k: layout `sim10k_voc`), whose product is checkpoints/final.pt;
- evaluate only (Cityscapes: layout `cityscapes_coco`), which reads its upstream run's final.pt.
An engine (mmdet today) turns a DetectionJob into a trained model and COCO metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bobkit.data.coco import CocoSplit
from bobkit.errors import BadInput, EnvironmentMissing
from bobkit.manifest.hparams import DetectionHparams
from bobkit.results import RunDir

BBOX_METRICS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
SEGM_METRICS = tuple(name.replace("bbox", "segm") for name in BBOX_METRICS)
FINAL = "final.pt"  # {"model": detector state_dict, "num_classes", "classes", "backbone", "epoch", "engine"}


@dataclass(frozen=True)
class DetectionJob:
    spec: Any  # RunSpec
    run_dir: RunDir
    train: CocoSplit | None
    evaluate: CocoSplit | None
    classes: tuple[str, ...]
    loader_workers: int
    upstream: Path | None = None  # the final.pt an evaluation-only run reads
    hp: DetectionHparams | None = None  # the spec's typed hparams (spec.typed_hparams() when not given)

    def __post_init__(self) -> None:
        if self.hp is None:
            object.__setattr__(self, "hp", self.spec.typed_hparams())

    @property
    def with_masks(self) -> bool:
        return self.hp.detector == "cascade_mask_rcnn"

    @property
    def iou_types(self) -> tuple[str, ...]:
        return ("bbox", "segm") if self.with_masks else ("bbox",)

    @property
    def work_dir(self) -> Path:
        return self.run_dir.checkpoints

    @property
    def final_checkpoint(self) -> Path:
        return self.run_dir.checkpoints / FINAL


def dataset_root(spec: Any, run_dir: RunDir, data_root: Path) -> Path:
    """The dataset folder: a synthetic stand-in written once into the run for smoke, else the data root's."""
    from bobkit.data import dataset_dir

    ds = spec.dataset_spec
    if ds.get("synthetic"):
        from bobkit.data.synthetic import write_synthetic

        return write_synthetic(ds, run_dir.path / "synthetic" / ds["id"])
    return dataset_dir(ds, data_root)


def coco_splits(spec: Any, root: Path, run_dir: RunDir) -> tuple[CocoSplit | None, CocoSplit | None]:
    """(train, eval) COCO splits of the dataset's layout; converted formats land in <run>/annotations/."""
    ds = spec.dataset_spec
    layout = ds.get("layout")
    out = run_dir.path / "annotations"
    if layout == "coco":
        from bobkit.data.coco import check_coco_split, coco_split, split_names

        train, evaluate = split_names(ds)
        return (check_coco_split(coco_split(root, train), ds), check_coco_split(coco_split(root, evaluate), ds))
    if layout == "sim10k_voc":
        from bobkit.data.sim10k import sim10k_paths, sim10k_to_coco

        return CocoSplit(sim10k_paths(root)[0], sim10k_to_coco(root, out / "sim10k_cars.json", dataset_spec=ds)), None
    if layout == "cityscapes_coco":
        from bobkit.data.cityscapes import cityscapes_paths, cityscapes_to_coco, eval_split

        split = eval_split(ds)
        ann = cityscapes_to_coco(root, split, out / f"cityscapes_{split}_cars.json", classes=("car",), dataset_spec=ds)
        return None, CocoSplit(cityscapes_paths(root, split)[0], ann)
    raise BadInput(f"dataset '{ds.get('id')}': layout '{layout}' is not a detection layout; "
                   f"known: coco, sim10k_voc, cityscapes_coco")


def upstream_checkpoint(spec: Any, run_dir: RunDir) -> Path:
    if not spec.depends_on:
        raise BadInput(f"run {spec.id}: dataset '{spec.dataset}' is evaluation-only, so the run needs an upstream "
                       f"training run (the experiment grid's `upstream`)")
    path = run_dir.path.parent / spec.depends_on[0] / "checkpoints" / FINAL
    if not path.is_file():
        raise EnvironmentMissing(f"run {spec.id}: upstream checkpoint {path} is missing; run the upstream run "
                                 f"{spec.depends_on[0]} first (`bobkit run` orders them)")
    return path


def _names(split: CocoSplit) -> tuple[str, ...]:
    return tuple(name for _, name in split.categories())


def prepare_job(spec: Any, run_dir: RunDir, data_root: Path, hp: DetectionHparams | None = None) -> DetectionJob:
    """`hp`: the spec's DetectionHparams (spec.typed_hparams() when not given)."""
    import os

    if hp is None:
        hp = spec.typed_hparams()
    if hp.detector == "cascade_mask_rcnn" and spec.dataset_spec.get("layout") != "coco":
        raise BadInput(f"run {spec.id}: detector cascade_mask_rcnn needs instance masks, which only the coco "
                       f"layout has; use detector cascade_rcnn for dataset '{spec.dataset}'")
    root = dataset_root(spec, run_dir, Path(data_root))
    train, evaluate = coco_splits(spec, root, run_dir)
    classes = _names(train if train is not None else evaluate)
    upstream = upstream_checkpoint(spec, run_dir) if train is None else None
    if train is not None and evaluate is not None and _names(evaluate) != classes:
        raise BadInput(f"dataset '{spec.dataset}': train categories {classes[:5]}… differ from evaluation "
                       f"categories {_names(evaluate)[:5]}… ({train.annotations} vs {evaluate.annotations})")
    expected = spec.dataset_spec.get("num_classes")
    if expected and expected != len(classes):
        raise BadInput(f"dataset '{spec.dataset}': its annotations list {len(classes)} categories, "
                       f"the manifest says num_classes {expected}")
    workers = 0 if spec.smoke else min(8, os.cpu_count() or 1)
    return DetectionJob(spec=spec, run_dir=run_dir, train=train, evaluate=evaluate, classes=classes,
                        loader_workers=workers, upstream=upstream, hp=hp)

"""A classification run's data: which splits, which subset, which transforms, which batches.

Real data is read from the data root; a smoke run writes the synthetic stand-in into
<run_dir>/synthetic/<dataset id>/ and reads it through the same reader. Transforms come from
timm's create_transform with every setting taken from the RunSpec's hparams. The order of the
training batches depends only on (seed, epoch), so a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from bobkit.data import dataset_dir
from bobkit.data.classification import LabelledImages, LabelledSplit, first_fraction, read_split
from bobkit.manifest.hparams import ClassificationHparams, EvalHparams
from bobkit.tasks.cls_runtime import Runtime, default_workers

DEFAULT_CROP_PCT = 0.875


@dataclass
class ClassificationData:
    train: LabelledSplit
    eval: LabelledSplit
    root: Path
    synthetic: bool
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def multilabel(self) -> bool:
        return self.train.multilabel


def split_name(dataset_spec: dict[str, Any], role: str, default: str) -> str:
    entry = (dataset_spec.get("splits") or {}).get(role)
    return entry["name"] if isinstance(entry, dict) and entry.get("name") else default


def dataset_root(spec, run_path: Path, data_root: Path) -> tuple[Path, bool]:
    """The folder the reader reads: the real dataset, or (smoke) its synthetic stand-in."""
    ds = spec.dataset_spec
    if spec.smoke or ds.get("synthetic"):
        from bobkit.data.synthetic import write_synthetic

        return write_synthetic(ds, run_path / "synthetic" / spec.dataset), True
    return dataset_dir(ds, data_root), False


def open_data(spec, hp: ClassificationHparams, run_path: Path, data_root: Path) -> ClassificationData:
    """Both splits of the run's dataset, with the 1 %/10 % subset or the train fraction of `hp` (the
    spec's ClassificationHparams) applied."""
    ds = spec.dataset_spec
    root, synthetic = dataset_root(spec, run_path, data_root)
    train = read_split(ds, root, split_name(ds, "train", "train"), work_dir=run_path)
    evaluation = read_split(ds, root, split_name(ds, "eval", "val"), work_dir=run_path)
    notes: list[str] = []
    if hp.subset is not None:
        from bobkit.data.subsets import imagenet_subset

        train, origin = imagenet_subset(train, hp.subset, root, run_path)
        notes.append(f"training subset {hp.subset} ({len(train.items)} images) from {origin}")
    if hp.train_fraction is not None:
        train = first_fraction(train, hp.train_fraction)
        notes.append(f"first {hp.train_fraction:g} of the shuffled training rows ({len(train.items)} images)")
    return ClassificationData(train, evaluation, root, synthetic, notes)


def normalisation(data: ClassificationData, built) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The dataset's own statistics where it has them (CheXpert), else the backbone's."""
    if data.train.mean is not None and data.train.std is not None:
        return tuple(data.train.mean), tuple(data.train.std)
    return tuple(built.mean), tuple(built.std)


def train_transform(hp: ClassificationHparams, mean, std):
    """timm's training transform with every setting from `hp` (ClassificationHparams)."""
    from timm.data import create_transform

    return create_transform(
        input_size=hp.resolution, is_training=True, scale=tuple(hp.crop_scale), hflip=hp.hflip,
        color_jitter=hp.color_jitter, auto_augment=hp.randaugment, interpolation=hp.interpolation, mean=mean, std=std,
        re_prob=hp.reprob, re_mode=hp.remode, re_count=1,
    )


def eval_transform(hp: ClassificationHparams | EvalHparams, mean, std, crop_pct: float | None):
    """timm's evaluation transform at `hp.resolution` (ClassificationHparams or EvalHparams). `crop_pct`:
    the one chosen for the run; None: the recipe's crop_pct, else DEFAULT_CROP_PCT."""
    from timm.data import create_transform

    interpolation = "bicubic" if hp.interpolation == "random" else hp.interpolation
    if crop_pct is None:
        crop_pct = DEFAULT_CROP_PCT if hp.crop_pct is None else hp.crop_pct
    return create_transform(input_size=hp.resolution, is_training=False, interpolation=interpolation,
                            crop_pct=crop_pct, mean=mean, std=std)


class SeededSampler(Sampler[int]):
    """Shuffles with a permutation drawn from (seed, epoch), sharded across ranks.

    At least `min_samples` indices per rank (tiny data still fills one batch); every rank gets the
    same count, as DDP needs.
    """

    def __init__(self, n: int, seed: int, *, min_samples: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.per_rank = max(n // world_size, min_samples)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        total = self.per_rank * self.world
        chunks, have = [], 0
        while have < total:
            chunks.append(torch.randperm(self.n, generator=g))
            have += self.n
        order = torch.cat(chunks)[:total]
        return iter(order[self.rank::self.world].tolist())


class ShardSampler(Sampler[int]):
    """Evaluation order: every index exactly once across ranks (no padding, no duplicates)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


@dataclass
class TrainBatches:
    """The training loader plus what re-seeds it each epoch."""

    loader: DataLoader
    sampler: SeededSampler
    generator: torch.Generator
    seed: int

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(self.seed * 7_919 + epoch)  # worker seeds follow the epoch too

    def __len__(self) -> int:
        return len(self.loader)


def train_batches(dataset, rt: Runtime, batch: int, seed: int, workers: int | None = None) -> TrainBatches:
    sampler = SeededSampler(len(dataset), seed, min_samples=batch, rank=rt.rank, world_size=rt.world_size)
    gen = torch.Generator()
    w = default_workers(rt) if workers is None else workers
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, num_workers=w,
                        pin_memory=rt.device.type == "cuda", generator=gen, persistent_workers=False)
    return TrainBatches(loader, sampler, gen, seed)


def eval_batches(dataset, rt: Runtime, batch: int, workers: int | None = None) -> DataLoader:
    w = default_workers(rt) if workers is None else workers
    return DataLoader(dataset, batch_size=batch, sampler=ShardSampler(len(dataset), rt.rank, rt.world_size),
                      num_workers=w, pin_memory=rt.device.type == "cuda")


def image_datasets(data: ClassificationData, hp: ClassificationHparams, mean, std, crop_pct: float | None,
                   *, augment: bool = True) -> tuple[LabelledImages, LabelledImages]:
    train_tf = train_transform(hp, mean, std) if augment else eval_transform(hp, mean, std, crop_pct)
    return LabelledImages(data.train, train_tf), LabelledImages(data.eval, eval_transform(hp, mean, std, crop_pct))

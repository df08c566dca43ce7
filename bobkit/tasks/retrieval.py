"""Retrieval runner: frozen-backbone embeddings of queries and database, exact inner-product search,
and the authors' retrieval metrics (mAP, MRR, precision@k, recall@k; docs/metrics.md).

No training. Features are L2-normalised (hparam l2_normalize) and cached under
<run_dir>/features/ as .npy next to a fingerprint of what produced them, so a rerun (after a
crash in search, or with the same spec) does not extract them again.

Preprocessing follows the spec: Resize(resize, bicubic) → CenterCrop(resolution) → normalise with
the backbone's mean/std (`normalization: backbone`) or ImageNet's (`imagenet`, the authors' choice
for every backbone); ROxford/RParis images are thumbnailed to 224 px first, as the authors do.
The feature is the backbone's pooled embedding (`feature: pooled`) or a 1000-way head's output
(`head_logits`, the authors' choice for VICReg and MiDaS).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bobkit.data.retrieval import RetrievalSet, read_retrieval_set
from bobkit.errors import BadInput
from bobkit.manifest.hparams import RetrievalHparams
from bobkit.metrics.retrieval import RetrievalScores
from bobkit.results import RunDir, atomic_write_json
from bobkit.search import InnerProductIndex, l2_normalize

log = logging.getLogger("bobkit.run")

DEFAULT_CROP_PCT = 0.875  # resize = resolution / 0.875 when the spec leaves `resize` unset (224 → 256)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_CLASSES = 1000
FEATURES_DIR = "features"


# ---------------------------------------------------------------- preprocessing


class Thumbnail:
    """PIL's in-place thumbnail (fit within size × size, keep aspect), as the authors apply to Oxford/Paris."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img):
        from PIL import Image

        img = img.copy()
        img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        return img

    def __repr__(self) -> str:
        return f"Thumbnail({self.size})"


def resize_for(resolution: int, resize: int | None) -> int:
    """The resize before the center crop: the recipe's, or None: resolution / 0.875 (224 → 256)."""
    if resize is not None:
        return resize
    return round(resolution / DEFAULT_CROP_PCT)


def normalisation(normalization: str, backbone_spec: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The backbone's own mean/std (`backbone`), or ImageNet's (`imagenet`: what the authors used for
    every backbone)."""
    if normalization == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(backbone_spec.get("mean") or IMAGENET_MEAN), tuple(backbone_spec.get("std") or IMAGENET_STD)


def retrieval_transform(backbone_spec: dict[str, Any], *, resolution: int, resize: int | None,
                        normalization: str, thumbnail: int | None = None):
    """Thumbnail (Oxford/Paris) → Resize(resize_for(...), bicubic) → CenterCrop(resolution) → normalise."""
    from torchvision import transforms as T

    mean, std = normalisation(normalization, backbone_spec)
    steps: list[Callable] = [Thumbnail(thumbnail)] if thumbnail else []
    steps += [T.Resize(resize_for(resolution, resize), interpolation=T.InterpolationMode.BICUBIC),
              T.CenterCrop(resolution), T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def transform_of(hp: RetrievalHparams, backbone_spec: dict[str, Any], thumbnail: int | None = None):
    """retrieval_transform with the run's settings."""
    return retrieval_transform(backbone_spec, resolution=hp.resolution, resize=hp.resize,
                               normalization=hp.normalization, thumbnail=thumbnail)


def describe_transform(transform) -> str:
    return " → ".join(" ".join(repr(t).split()) for t in transform.transforms)


# ---------------------------------------------------------------- the embedding model


def embedding_model(spec, hp: RetrievalHparams, rt):
    """The backbone (pretrained unless smoke) returning pooled features, or 1000-way head outputs.

    `feature: head_logits` reads model(x) through a 1000-way classifier (the zoo's num_classes), as
    the authors did: the MiDaS encoders' checkpoints carry timm's ImageNet head, which the zoo
    loads; VICReg's has none, so its head is random, drawn from the run's seed (cls_runtime.start
    seeds torch) since the authors' seed is unknown. The log says which head was used.
    """
    import torch

    from bobkit.backbones import build

    head = hp.feature == "head_logits"
    built = build(spec.backbone_spec, pretrained=hp.pretrained and not spec.smoke, img_size=hp.resolution,
                  num_classes=HEAD_CLASSES if head else 0)
    if built.load_report:
        log.info("backbone %s: %s (%s)", spec.backbone, built.weights, built.load_report)
    if head:
        log.info("feature head_logits: %d-way classifier %s", HEAD_CLASSES, built.classifier)
    model = built.model.to(rt.device).eval()
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, built


# ---------------------------------------------------------------- features (cached)


# How a head_logits head is made; part of the feature-cache key so caches made under another rule
# (before the checkpoint's own classifier was kept) are not reused.
HEAD_RULE = "checkpoint classifier when it fits, else seeded random"


def fingerprint(paths: list[Path], root: Path, settings: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in paths:
        try:
            rel = p.relative_to(root)
        except ValueError:
            rel = p
        h.update(str(rel).encode() + b"\0")
    return h.hexdigest()


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    from bobkit.results import atomic_path

    with atomic_path(path, suffix=".npy", fsync=False) as tmp:
        np.save(tmp, array)


class FeatureCache:
    """<run_dir>/features/<split>.npy plus features.json {split: fingerprint, shape}."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index_path = folder / "features.json"

    def _index(self) -> dict[str, Any]:
        if not self.index_path.is_file():
            return {}
        try:
            return json.loads(self.index_path.read_text())
        except json.JSONDecodeError:
            return {}

    def load(self, split: str, key: str) -> np.ndarray | None:
        entry = self._index().get(split)
        path = self.folder / f"{split}.npy"
        if not entry or entry.get("fingerprint") != key or not path.is_file():
            return None
        array = np.load(path)
        return array if list(array.shape) == entry.get("shape") else None

    def store(self, split: str, key: str, array: np.ndarray) -> None:
        _atomic_save_npy(self.folder / f"{split}.npy", array)
        index = self._index()
        index[split] = {"fingerprint": key, "shape": list(array.shape)}
        atomic_write_json(self.index_path, index)


def extract(model, paths: list[Path], transform, rt, batch_size: int, label: str) -> np.ndarray:
    """Embeddings of `paths` in order (float32, one row per image), with a progress bar."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.data import DataLoader

    from bobkit.data.classification import LabelledImages, LabelledSplit
    from bobkit.tasks.cls_runtime import default_workers

    images = LabelledImages(LabelledSplit([(p, 0) for p in paths], ["image"]), transform)
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=default_workers(rt),
                        pin_memory=rt.device.type == "cuda")
    chunks: list[np.ndarray] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress, torch.inference_mode():
        task = progress.add_task(f"{label} features", total=len(paths))
        for x, _ in loader:
            x = x.to(rt.device, non_blocking=True)
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                out = model(x)
            chunks.append(out.float().reshape(out.shape[0], -1).cpu().numpy())
            progress.advance(task, x.shape[0])
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def features_for(split: str, paths: list[Path], root: Path, spec, hp: RetrievalHparams, rt, model_factory,
                 transform, cache: FeatureCache) -> np.ndarray:
    settings = {"backbone": spec.backbone_spec.get("id"), "weights": spec.backbone_spec.get("weights"),
                "smoke": spec.smoke, "transform": repr(transform), "feature": hp.feature,
                "pretrained": hp.pretrained, "l2_normalize": hp.l2_normalize}
    if hp.feature == "head_logits":  # the head: the checkpoint's own, else drawn from the seed
        settings.update(head=HEAD_RULE, seed=hp.seed)
    key = fingerprint(paths, root, settings)
    cached = cache.load(split, key)
    if cached is not None:
        log.info("%s features: %d × %d read from %s", split, *cached.shape, cache.folder)
        return cached
    feats = extract(model_factory(), paths, transform, rt, hp.per_gpu_batch, split)
    if not np.all(np.isfinite(feats)):
        raise RuntimeError(f"{split} features contain NaN or inf (backbone {spec.backbone})")
    if hp.l2_normalize:
        feats = l2_normalize(feats)
    cache.store(split, key, feats.astype(np.float32))
    log.info("%s features: %d × %d extracted", split, *feats.shape)
    return feats


# ---------------------------------------------------------------- the run


def evaluate(query: np.ndarray, database: np.ndarray, rset: RetrievalSet, ks: list[int]) -> dict[str, float]:
    """Rank the whole database for every query (exact inner product) and score the rankings."""
    index = InnerProductIndex(database)
    log.info("search: %s index (%s), %d queries × %d database vectors of dimension %d",
             index.backend, index.device, query.shape[0], database.shape[0], database.shape[1])
    scores = RetrievalScores(ks)
    for start, _, ids in index.rank(query):
        scores.add_many(ids, rset.truths[start:start + ids.shape[0]], database.shape[0])
    if scores.n_empty:
        log.info("%d of %d queries have no positive in the database (left out of mAP, P@k, R@k)",
                 scores.n_empty, scores.n_queries)
    return scores.summary()


def run(spec, run_dir: RunDir, data_root: Path) -> dict[str, float]:
    from bobkit.tasks.cls_runtime import running

    if spec.task != "retrieval":
        raise BadInput(f"run {spec.id}: the retrieval runner got a '{spec.task}' spec")
    hp = spec.typed_hparams()
    with running(hp) as rt:
        return _run(spec, hp, run_dir, Path(data_root), rt)


def _run(spec, hp: RetrievalHparams, run_dir: RunDir, data_root: Path, rt) -> dict[str, float]:
    from bobkit.tasks.cls_data import dataset_root

    root, synthetic = dataset_root(spec, run_dir.path, data_root)
    rset = read_retrieval_set(spec.dataset_spec, root, images_per_class=hp.images_per_class,
                              queries_fraction=hp.queries_per_class_fraction)
    log.info("%s%s: %s", spec.dataset, " (synthetic)" if synthetic else "", rset.describe())
    for note in rset.notes:
        log.info("  %s", note)
    transform = transform_of(hp, spec.backbone_spec, rset.thumbnail)
    log.info("preprocessing: %s; feature %s", describe_transform(transform), hp.feature)
    cache = FeatureCache(run_dir.path / FEATURES_DIR)
    built_model: list[Any] = []

    def model_factory():
        if not built_model:
            built_model.append(embedding_model(spec, hp, rt)[0])
        return built_model[0]

    query = features_for("query", rset.queries, root, spec, hp, rt, model_factory, transform, cache)
    database = features_for("database", rset.database, root, spec, hp, rt, model_factory, transform, cache)
    if query.shape[1] != database.shape[1]:
        raise RuntimeError(f"query features have dimension {query.shape[1]}, database {database.shape[1]}")
    metrics = evaluate(query, database, rset, hp.ks)
    log.info("retrieval %s: %s", spec.dataset, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics

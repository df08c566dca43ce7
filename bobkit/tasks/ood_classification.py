"""OOD classification runner (BoB §3): an ImageNet fine-tuned classifier on shifted test sets, and
VisDA-2017 synthetic→real fine-tuning.

protocol ood_eval: the classifier of the upstream run (spec.depends_on → checkpoints/final.pt), or a
file the user names (`--classifier BACKBONE=FILE` → hparams.checkpoint; bobkit.tasks.cls_file), is
evaluated on ImageNet-A / -R (logits masked to their 200 ImageNet-1k classes, as the authors'
validate.py --valid-labels does), ImageNet-Sketch or ImageNet-V2; metrics top1 and top5.
protocol visda: a fine-tune on the synthetic renders evaluated on the real photos, run by the
classification runner itself (one training loop in bobkit).

Smoke runs evaluate the smoke upstream's tiny classifier: its classes are synthetic ImageNet
wnids, so the synthetic test set is written with those classes, and a 200-class subset is
stood for by the classes present in that set (the real lists are checked by tests).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from bobkit.errors import BadInput, RunFailed
from bobkit.results import RunDir

log = logging.getLogger("bobkit.run")


def upstream_checkpoint(spec, run_dir: RunDir) -> Path:
    """<runs>/<upstream id>/checkpoints/final.pt of the run this one depends on."""
    if len(spec.depends_on) != 1:
        raise BadInput(f"run {spec.id}: protocol ood_eval needs exactly one upstream fine-tune in depends_on, "
                       f"got {len(spec.depends_on)}; give the grid entry `upstream:` and `upstream_dataset:`")
    path = run_dir.path.parent / spec.depends_on[0] / "checkpoints" / "final.pt"
    if not path.is_file():
        raise RunFailed(f"{path}: the upstream fine-tune {spec.depends_on[0]} has no final checkpoint; "
                        "run it first (`bobkit reproduce` orders upstream runs before this one)")
    return path


def classifier_from_file(spec, hp, run_dir: RunDir, rt):
    """The classifier file named by --classifier (hp.checkpoint of the spec's EvalHparams); its sha256 goes
    to provenance, since the run id knows only the path."""
    from bobkit import provenance
    from bobkit.tasks.cls_file import load_classifier_file
    from bobkit.weights import sha256_file

    path = Path(hp.checkpoint)
    model, facts = load_classifier_file(path, spec.backbone_spec, resolution=hp.resolution, map_location=rt.device)
    sha256 = sha256_file(path, use_cache=False)  # no sidecar next to the user's file (read-only, or shared)
    provenance.record(run_dir.path, "classifier_file",
                      {"path": str(path), "sha256": sha256, "layout": facts.get("layout")})
    log.info("classifier file %s: %s%s", path, facts.get("layout"),
             f" ({facts['load_report']})" if facts.get("load_report") else "")
    return model, facts, path


def classifier_classes(ckpt: dict[str, Any]) -> list[str]:
    """What each output of the classifier stands for: the checkpoint's class names, else ImageNet-1k's."""
    from bobkit.data.ood import imagenet_wnids

    n = int(ckpt["num_classes"])
    classes = ckpt.get("classes")
    if classes:
        if len(classes) != n:
            raise BadInput(f"checkpoint: {len(classes)} class names for {n} outputs")
        return list(classes)
    if n == 1000:
        return imagenet_wnids()
    raise BadInput(f"checkpoint: {n} outputs and no class names; OOD evaluation needs an ImageNet-1k classifier")


class MaskedClassifier:
    """Logits restricted to `keep` (the evaluated classes), in that order; label k means keep[k]."""

    def __init__(self, model, keep: Sequence[int]) -> None:
        import torch

        self.model = model
        self.keep = torch.as_tensor(list(keep), dtype=torch.long)

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, x):
        logits = self.model(x)
        return logits.index_select(1, self.keep.to(logits.device))


def evaluated_classes(spec, split, classes: list[str]) -> tuple[list[int] | None, str]:
    """Indices into `classes` the logits are masked to (None: all), and where the mask came from."""
    from bobkit.data.ood import mask_indices, read_class_subset, subset_path

    path = subset_path(spec.dataset_spec)
    if path is None:
        return None, "all classes"
    subset = read_class_subset(path)
    present = sorted({label for _, label in split.items})
    if spec.smoke:
        return present, f"the {len(present)} classes of the synthetic set (stands for {path.name})"
    keep = mask_indices(classes, subset.wnids)
    if classes[:1000] == _imagenet() and list(keep) != list(subset.indices):
        raise BadInput(f"{path}: the listed indices do not match their wnids in the ImageNet-1k order")
    outside = sorted(set(present) - set(keep))
    if outside:
        raise BadInput(f"dataset '{spec.dataset}': class folder {classes[outside[0]]} is not among the "
                       f"{len(keep)} classes of {path.name}")
    return keep, f"{len(keep)} classes of {path.name}"


def _imagenet() -> list[str]:
    from bobkit.data.ood import imagenet_wnids

    return imagenet_wnids()


def run(spec, run_dir: RunDir, data_root: Path) -> dict[str, float]:
    if spec.task != "ood_classification":
        raise BadInput(f"run {spec.id}: the OOD classification runner got a '{spec.task}' spec")
    if spec.protocol == "visda":
        from bobkit.tasks.classification import run as run_classification

        return run_classification(spec, run_dir, data_root)
    if spec.protocol != "ood_eval":
        raise BadInput(f"run {spec.id}: unknown OOD classification protocol '{spec.protocol}' (ood_eval, visda)")
    from bobkit.tasks import cls_runtime

    hp = spec.typed_hparams()
    with cls_runtime.running(hp) as rt:
        return evaluate_checkpoint(spec, hp, run_dir, Path(data_root), rt)


def evaluate_checkpoint(spec, hp, run_dir: RunDir, data_root: Path, rt) -> dict[str, float]:
    """`hp`: the spec's EvalHparams."""
    from bobkit.data import dataset_dir
    from bobkit.data.classification import LabelledImages, LabelledSplit
    from bobkit.data.ood import read_ood_set
    from bobkit.tasks.cls_data import eval_batches, eval_transform
    from bobkit.tasks.cls_eval import evaluate
    from bobkit.tasks.cls_model import backbone_crop_pct, load_classifier

    if hp.checkpoint is not None:
        model, ckpt, ckpt_path = classifier_from_file(spec, hp, run_dir, rt)
    else:
        ckpt_path = upstream_checkpoint(spec, run_dir)
        model, ckpt = load_classifier(ckpt_path, spec.backbone_spec, map_location=rt.device)
    if ckpt.get("resolution") and int(ckpt["resolution"]) != hp.resolution:
        log.info("note: the classifier was fine-tuned at %s px and is evaluated at %s px", ckpt["resolution"],
                 hp.resolution)
    if ckpt.get("backbone") not in (None, spec.backbone):
        raise BadInput(f"{ckpt_path}: a checkpoint of backbone '{ckpt.get('backbone')}', not '{spec.backbone}'")
    classes = classifier_classes(ckpt)
    log.info("classifier: %s (%d classes, epoch %s)", ckpt_path, len(classes), ckpt.get("epoch"))

    ds = spec.dataset_spec
    if spec.smoke or ds.get("synthetic"):
        from bobkit.data.synthetic import write_synthetic

        root = write_synthetic({**ds, "synthetic_classes": classes}, run_dir.path / "synthetic" / spec.dataset)
    else:
        root = dataset_dir(ds, data_root)
    split = read_ood_set(ds, root, classes)
    keep, origin = evaluated_classes(spec, split, classes)
    log.info("data: %s (%s) %d images; logits of %s", spec.dataset, "synthetic" if spec.smoke else root,
             len(split.items), origin)
    if keep is not None:
        position = {c: k for k, c in enumerate(keep)}
        split = LabelledSplit([(p, position[label]) for p, label in split.items], [classes[c] for c in keep])
        model = MaskedClassifier(model, keep)

    mean, std = tuple(spec.backbone_spec["mean"]), tuple(spec.backbone_spec["std"])
    crop_pct = hp.crop_pct
    if crop_pct is None:  # the backbone's own
        crop_pct = backbone_crop_pct(SimpleNamespace(model=getattr(model, "model", model).backbone))
    transform = eval_transform(hp, mean, std, crop_pct)
    loader = eval_batches(LabelledImages(split, transform), rt, hp.per_gpu_batch)
    result = evaluate(model, loader, rt, multilabel=False, num_classes=len(split.classes))
    metrics = {"top1": float(result["top1"]), "top5": float(result["top5"])}
    log.info("%s: top1 %.4f  top5 %.4f", spec.dataset, metrics["top1"], metrics["top5"])
    return metrics

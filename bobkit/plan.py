"""Experiment → fully resolved RunSpecs. Pure: no files written, no torch.

A RunSpec holds everything a runner needs. Its id hashes what determines the result (backbone and
weights, dataset and split, task, protocol, resolved hparams, seed, image, upstream runs), not the
experiment that asked for it nor bookkeeping (origins, the cost estimate): the same training run
planned by two experiments has one id, one folder, and runs once. Hyperparameters come from the one
resolver (bobkit.manifest.resolve), which also says where each value came from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from bobkit.errors import BadInput, unknown_id
from bobkit.manifest.hparams import SCHEMA_BY_PROTOCOL, Hparams
from bobkit.manifest.derived import SUBSET_FRACTION
from bobkit.manifest.loader import Catalog
from bobkit.manifest.resolve import SMOKE_HPARAMS, Resolved, check_sets_known, resolve  # noqa: F401
from bobkit.manifest.models import IMAGE_FAMILY, Backbone, Dataset, GridEntry, Recipe, TaskFamily

IMAGE_PREFIX = "bobkit"
# RunSpec fields that do not determine the result, so not part of its id: which experiment planned it
# (a shared run serves several), where each value came from, and bobkit's cost estimate.
NOT_HASHED = frozenset({"id", "experiment", "origins", "gpu_hours"})


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    experiment: str
    backbone: str
    dataset: str
    task: TaskFamily
    protocol: str
    recipe: str
    image: str = Field(description="image reference of the task family, e.g. bobkit/classification")
    image_family: str
    seed: int
    hparams: dict[str, Any]
    backbone_spec: dict[str, Any]
    dataset_spec: dict[str, Any]
    smoke: bool = False
    faithful: bool = False
    deviations: list[str] = Field(default_factory=list, description="deviations whose authors' behaviour applies")
    gpus: int = 1
    gpu_hours: float = Field(description="bobkit's rough estimate, for scheduling")
    depends_on: list[str] = Field(default_factory=list, description="run ids whose checkpoints this run reads")
    user_set: dict[str, Any] = Field(default_factory=dict, description="values a user set with --set: not the "
                                                                        "paper's configuration, never compared with it")
    origins: dict[str, str] = Field(default_factory=dict, description="where each hparam's value came from "
                                                                       "(bobkit.manifest.resolve); not hashed")

    def typed_hparams(self) -> Hparams:
        """The hparams as their protocol's pydantic model (attribute access, every default stated once, in
        bobkit/manifest/hparams.py). Runners read this, never the raw dict."""
        return SCHEMA_BY_PROTOCOL[self.protocol].model_validate(self.hparams)

    def content(self) -> dict[str, Any]:
        """What the run id hashes."""
        return self.model_dump(mode="json", exclude=NOT_HASHED)

    def canonical(self) -> str:
        return canonical_json(self.content())

    def host_files(self) -> list[str]:
        """Files outside data, weights and runs that the run reads (a --classifier file): executors
        that isolate a run (containers) mount each read-only at the same path."""
        return [self.hparams["checkpoint"]] if self.hparams.get("checkpoint") else []


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def run_id(body: dict[str, Any]) -> str:
    """The id of a spec's content (a RunSpec dump; NOT_HASHED keys are dropped here too)."""
    content = {k: v for k, v in body.items() if k not in NOT_HASHED}
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


def _make_spec(**body: Any) -> RunSpec:
    probe = RunSpec(id="0" * 16, **body)
    return probe.model_copy(update={"id": run_id(probe.content())})


def resolve_hparams(catalog: Catalog, recipe: Recipe, backbone: Backbone, *, lr: float | None, seed: int,
                    smoke: bool, faithful: bool, experiment: str = "", extra: dict[str, Any] | None = None,
                    sets: Mapping[str, Any] | None = None) -> Resolved:
    """One grid point's hyperparameters through the one resolver (order: bobkit.manifest.resolve)."""
    return resolve(catalog, recipe, backbone, lr=lr, seed=seed, grid=f"experiment '{experiment}'" if experiment
                   else "", smoke=smoke, faithful=faithful, command=extra, command_origin="--classifier", sets=sets)


def estimate_gpu_hours(backbone: Backbone, dataset: Dataset, hp: dict[str, Any], task: str,
                       smoke: bool = False) -> float:
    """A coarse cost model (bobkit's own): images processed × per-image cost ∝ params × pixels.

    Calibrated so a ViT-B/16 at 224 px trains at ~1000 images/s on one modern GPU.
    """
    train = dataset.splits.get("train") or dataset.splits.get("eval") or dataset.splits.get("database")
    images = (train.images if train and train.images else 10_000)
    if smoke:
        images = 64  # the synthetic datasets are tiny
    if "query" in dataset.splits and dataset.splits["query"].images:
        images += dataset.splits["query"].images
    epochs = hp.get("epochs", 1)
    res = hp.get("resolution") or backbone.resolution
    cost = (backbone.params_m / 86.0) * (res / 224.0) ** 2
    per_second = 1000.0 / max(cost, 0.05)
    if task in ("detection", "ood_detection"):
        per_second /= 12.0  # two-stage heads; calibrated to ~250-450 GPU-h for a 36-epoch COCO run
    if epochs == 1 and task in ("retrieval", "ood_classification"):
        per_second *= 3.0  # inference only
    frac = hp.get("train_fraction") or SUBSET_FRACTION.get(hp.get("subset") or "", 1.0)
    return round(images * frac * epochs / per_second / 3600.0, 4)


def _pick(kind: str, wanted: list[str] | None, allowed: list[str]) -> list[str]:
    if not wanted:
        return allowed
    return [x for x in allowed if x in wanted]


def _check_filters(catalog: Catalog, backbones: list[str] | None, datasets: list[str] | None) -> None:
    for b in backbones or []:
        if b not in catalog.backbones:
            raise unknown_id("backbone", b, sorted(catalog.backbones))
    for d in datasets or []:
        if d not in catalog.datasets:
            raise unknown_id("dataset", d, sorted(catalog.datasets))


def spec_for(catalog: Catalog, experiment: str, recipe: Recipe, backbone: Backbone, dataset: Dataset, *,
             lr: float | None, seed: int, smoke: bool, faithful: bool, depends_on: list[str] = (),
             extra_hparams: dict[str, Any] | None = None, sets: Mapping[str, Any] | None = None) -> RunSpec:
    resolved = resolve_hparams(catalog, recipe, backbone, lr=lr, seed=seed, smoke=smoke, faithful=faithful,
                               experiment=experiment, extra=extra_hparams, sets=sets)
    hp, applied = resolved.hparams, resolved.deviations
    family = IMAGE_FAMILY[recipe.task]
    dataset_spec = dataset.model_dump(mode="json")
    dataset_spec["synthetic"] = smoke
    return _make_spec(
        experiment=experiment, backbone=backbone.id, dataset=dataset.id, task=recipe.task,
        protocol=recipe.protocol, recipe=recipe.id, image=f"{IMAGE_PREFIX}/{family}", image_family=family,
        seed=seed, hparams=hp, backbone_spec=backbone.model_dump(mode="json"), dataset_spec=dataset_spec,
        smoke=smoke, faithful=faithful, deviations=applied, gpus=1 if smoke else recipe.gpus,
        gpu_hours=estimate_gpu_hours(backbone, dataset, hp, recipe.task, smoke), depends_on=list(depends_on),
        user_set={k: hp[k] for k, origin in resolved.origins.items() if origin == "--set"}, origins=resolved.origins,
    )


def _grid_lrs(entry: GridEntry, recipe: Recipe, smoke: bool) -> list[float | None]:
    """The lrs of a grid point; a smoke run keeps only the first."""
    lrs: list[float | None] = list(entry.lrs or recipe.lr_grid or [None])
    return lrs[:1] if smoke else lrs


def plan(catalog: Catalog, experiment_id: str, *, backbones: Iterable[str] | None = None,
         datasets: Iterable[str] | None = None, recipes: Iterable[str] | None = None, smoke: bool = False,
         faithful: bool = False, classifiers: Mapping[str, str] | None = None,
         sets: Mapping[str, Any] | None = None) -> list[RunSpec]:
    """Every run an experiment needs, upstream runs (e.g. the fine-tune an OOD eval reads) first.

    `classifiers` (backbone id → classifier file, from --classifier) makes that backbone's OOD evaluations
    read the file instead of an upstream fine-tune, which is then not planned. `recipes` keeps the grid
    entries of those recipes (their upstream runs still come along). `sets` (from --set) applies to every
    planned run whose protocol has the key, upstream runs included; it changes the run ids."""
    if experiment_id not in catalog.experiments:
        raise unknown_id("experiment", experiment_id, sorted(catalog.experiments))
    backbones = list(backbones) if backbones else None
    datasets = list(datasets) if datasets else None
    recipes = list(recipes) if recipes else None
    _check_filters(catalog, backbones, datasets)
    exp_recipes = sorted({g.recipe for g in catalog.experiments[experiment_id].grid})
    for r in recipes or []:
        if r not in exp_recipes:
            raise BadInput(f"--recipe {r}: experiment '{experiment_id}' has no grid entry of recipe '{r}'; "
                           f"its recipes: {', '.join(exp_recipes)}")
    sets = dict(sets or {})
    classifiers = dict(classifiers or {})
    used: set[str] = set()
    exp = catalog.experiments[experiment_id]
    if smoke:
        backbones = backbones or (list(exp.smoke.backbones) or None)
        datasets = datasets or (list(exp.smoke.datasets) or None)
    specs: dict[str, RunSpec] = {}
    for entry in exp.grid:
        if recipes and entry.recipe not in recipes:
            continue
        recipe = catalog.recipes[entry.recipe]
        for b in _pick("backbone", backbones, entry.backbones):
            backbone = catalog.backbones[b]
            for d in _pick("dataset", datasets, entry.datasets):
                dataset = catalog.datasets[d]
                for lr in _grid_lrs(entry, recipe, smoke):
                    for seed in entry.seeds:
                        deps: list[str] = []
                        extra = None
                        if recipe.protocol == "ood_eval" and b in classifiers:
                            extra = {"checkpoint": classifiers[b]}
                            used.add(b)
                        elif entry.upstream:
                            up = spec_for(catalog, experiment_id, catalog.recipes[entry.upstream], backbone,
                                          catalog.datasets[entry.upstream_dataset], lr=None, seed=seed,
                                          smoke=smoke, faithful=faithful, sets=sets)
                            specs.setdefault(up.id, up)  # upstream runs even outside the smoke subset
                            deps = [up.id]
                        spec = spec_for(catalog, experiment_id, recipe, backbone, dataset, lr=lr, seed=seed,
                                        smoke=smoke, faithful=faithful, depends_on=deps, extra_hparams=extra,
                                        sets=sets)
                        specs.setdefault(spec.id, spec)
    if not specs and (backbones or datasets or recipes):
        raise BadInput(f"no run of experiment '{experiment_id}' matches the --backbone/--dataset/--recipe filters; "
                       f"`bobkit show {experiment_id}` lists its grid")
    if sets:
        check_sets_known(sets, {s.protocol for s in specs.values()})
    unused = sorted(set(classifiers) - used)
    if unused:
        raise BadInput(f"--classifier {unused[0]}=…: experiment '{experiment_id}' plans no OOD classification "
                       f"evaluation of '{unused[0]}' (with these filters); drop it or pick an experiment that has one")
    return list(specs.values())


def parse_classifiers(catalog: Catalog, pairs: Iterable[str] | None) -> dict[str, str]:
    """--classifier BACKBONE=FILE (repeatable) → {backbone id: absolute path}; the file must exist."""
    from pathlib import Path

    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, file = pair.partition("=")
        if not sep or not name or not file:
            raise BadInput(f"--classifier {pair!r}: expected BACKBONE=FILE, e.g. vit_base_mae=ft/mae_in1k.pth")
        [found] = catalog.select_backbones([name])
        path = Path(file).expanduser()
        if not path.is_file():
            raise BadInput(f"--classifier {pair}: {path} is not a file; give an ImageNet fine-tuned classifier "
                           "(timm state dict or a bobkit checkpoints/final.pt)")
        if found.id in out:
            raise BadInput(f"--classifier: two files for '{found.id}'; give one")
        out[found.id] = str(path.resolve())
    return out

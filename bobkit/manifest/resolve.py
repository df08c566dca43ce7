"""The one resolver: every hyperparameter of a run decided once, in one order, with its origin.

`show`, `plan`, `explain`, `reproduce`, the gauntlet and the tests all call `resolve()`. The order
(later wins) is written here, in manifests/recipes.yaml's header and in docs/resolution.md:

  1. default     the protocol schema's default (bobkit/manifest/hparams.py)
  2. recipe      the `base:` chain, root first: each recipe's `hparams`
  3. override    the run's own recipe's `overrides` that name this backbone or its family, in file
                 order. Overrides are NOT inherited through `base:`: a derived recipe lists the ones
                 it wants (YAML anchors keep that short), so a frozen or random-init variant never
                 picks up a fine-tune's per-backbone batch or evaluation interval by accident.
  4. grid        the experiment grid point's lr and seed
  5. backbone    `resolution: null` becomes the backbone's own resolution
  6. deviation   with --faithful, each matching deviation's `faithful.hparams`
  7. smoke       with --smoke, SMOKE_HPARAMS of the task (tiny images, a few steps)
  8. command     values a command sets for one run (--classifier sets `checkpoint`)
  9. --set       the user's `--set key=value`, last, so it always wins

No torch here: `show`, `plan` and `explain` stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from bobkit.errors import BadInput
from bobkit.manifest.hparams import SCHEMA_BY_PROTOCOL, Hparams

# Smoke runs: tiny synthetic data, tiny images, a couple of steps. bobkit's own choice.
SMOKE_HPARAMS: dict[str, dict[str, Any]] = {
    "classification": {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "per_gpu_batch": 8, "resolution": 32,
                       "amp": False},
    "ood_classification": {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "per_gpu_batch": 8, "resolution": 32,
                           "amp": False},
    "retrieval": {"batch_size": 8, "per_gpu_batch": 8, "resolution": 32, "resize": 36, "amp": False},
    "detection": {"epochs": 1, "warmup_iters": 2, "lr_steps": [1], "batch_size": 2, "per_gpu_batch": 2,
                  "resolution": 64, "amp": False},
}
SMOKE_HPARAMS["ood_detection"] = SMOKE_HPARAMS["detection"]

LAYERS = ("default", "recipe", "override", "grid", "backbone", "deviation", "smoke", "command", "set")


@dataclass(frozen=True)
class Resolved:
    """A run's hyperparameters (validated, JSON values), each key's origin, and the deviations applied."""

    hparams: dict[str, Any]
    origins: dict[str, str]
    deviations: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [{"key": k, "value": self.hparams[k], "origin": self.origins.get(k, "default")}
                for k in sorted(self.hparams)]


class _Layers:
    """The values set so far and who set each: a later set() replaces both."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}

    def set(self, values: Mapping[str, Any], origin: str) -> None:
        for k, v in values.items():
            self.values[k] = v
            self.origins[k] = origin


def manifest_file(catalog: Any, kind: str, entry_id: str) -> str:
    """Where an entry is defined, as a user reads it: the built-in file's name, or a lab's full path."""
    from bobkit.manifest.loader import builtin_manifest_dir

    path = Path(catalog.origin.get((kind, entry_id), f"{kind}.yaml"))
    try:
        return str(Path("manifests") / path.relative_to(builtin_manifest_dir()))
    except ValueError:
        return str(path)


def base_chain(catalog: Any, recipe_id: str) -> list[Any]:
    """The recipe and its bases, root first; a cycle or an unknown base is a manifest error."""
    from bobkit.errors import unknown_id
    from bobkit.manifest.loader import ManifestError

    chain: list[Any] = []
    seen: list[str] = []
    current: str | None = recipe_id
    while current is not None:
        if current in seen:
            where = catalog.origin[("recipes", recipe_id)]
            raise ManifestError(where, f"recipe '{recipe_id}'", "base", f"cycle {' -> '.join(seen + [current])}")
        if current not in catalog.recipes:
            child = seen[-1]
            raise ManifestError(catalog.origin[("recipes", child)], f"recipe '{child}'", "base",
                                str(unknown_id("recipe", current, sorted(catalog.recipes))))
        seen.append(current)
        recipe = catalog.recipes[current]
        chain.append(recipe)
        current = recipe.base
    return chain[::-1]


def deviation_applies(dev: Any, recipe: Any, backbone: Any) -> bool:
    """Does --faithful's change of this deviation reach (recipe, backbone)? Empty lists match all."""
    f = dev.faithful
    if f is None:
        return False
    if f.recipes and recipe.id not in f.recipes:
        return False
    if f.tasks and recipe.task not in f.tasks:
        return False
    if f.backbones and backbone.id not in f.backbones:
        return False
    if f.families and backbone.family not in f.families:
        return False
    return True


def override_applies(override: Any, backbone: Any) -> bool:
    return backbone.id in override.backbones or backbone.family in override.families


def _override_label(override: Any) -> str:
    parts = []
    if override.backbones:
        parts.append(f"backbones [{', '.join(override.backbones)}]")
    if override.families:
        parts.append(f"families [{', '.join(override.families)}]")
    return " / ".join(parts)


def schema_for(catalog: Any, recipe: Any) -> type[Hparams]:
    from bobkit.manifest.loader import ManifestError

    schema = SCHEMA_BY_PROTOCOL.get(recipe.protocol)
    if schema is None:
        raise ManifestError(catalog.origin.get(("recipes", recipe.id), "manifests"), f"recipe '{recipe.id}'",
                            "protocol", f"unknown protocol {recipe.protocol!r}; known: "
                                        f"{', '.join(sorted(SCHEMA_BY_PROTOCOL))}")
    return schema


def resolve(catalog: Any, recipe: Any, backbone: Any | None = None, *, lr: float | None = None,
            seed: int | None = None, grid: str = "", smoke: bool = False, faithful: bool = False,
            command: Mapping[str, Any] | None = None, command_origin: str = "command line",
            sets: Mapping[str, Any] | None = None) -> Resolved:
    """The hyperparameters of `recipe` for `backbone` (None: the recipe alone, no overrides), in the
    order of this module's docstring. `grid` names the grid point in origins ("experiment 'table3'")."""
    layers = _Layers()
    for r in base_chain(catalog, recipe.id):
        layers.set(r.hparams, f"{manifest_file(catalog, 'recipes', r.id)}: recipe '{r.id}'")
    if backbone is not None:
        where = manifest_file(catalog, "recipes", recipe.id)
        for i, ov in enumerate(recipe.overrides):
            if override_applies(ov, backbone):
                layers.set(ov.set, f"{where}: recipe '{recipe.id}', override #{i + 1} ({_override_label(ov)})")
    grid_where = f"grid of {grid}" if grid else "grid"
    if lr is not None:
        layers.set({"lr": lr}, f"{grid_where}: lr")
    if seed is not None:
        layers.set({"seed": seed}, f"{grid_where}: seed")
    if backbone is not None and layers.values.get("resolution") is None:
        layers.set({"resolution": backbone.resolution},
                   f"{manifest_file(catalog, 'backbones', backbone.id)}: backbone '{backbone.id}' resolution")
    applied: list[str] = []
    if faithful and backbone is not None:
        for dev in catalog.deviations.values():
            if deviation_applies(dev, recipe, backbone):
                layers.set(dev.faithful.hparams, f"--faithful: deviation '{dev.id}'")
                applied.append(dev.id)
    schema = schema_for(catalog, recipe)
    if smoke:
        known = set(schema.model_fields)
        layers.set({k: v for k, v in SMOKE_HPARAMS[recipe.task].items() if k in known},
                   f"--smoke: bobkit/manifest/resolve.py SMOKE_HPARAMS['{recipe.task}']")
    if command:
        layers.set(command, command_origin)
    if sets:
        layers.set({k: v for k, v in sets.items() if k in schema.model_fields},
                   "--set")
    hparams = _validate(schema, layers, recipe, backbone)
    origins = {k: layers.origins.get(k, f"default: {schema.__name__} (bobkit/manifest/hparams.py)")
               for k in hparams}
    return Resolved(hparams, origins, applied)


def _validate(schema: type[Hparams], layers: _Layers, recipe: Any, backbone: Any | None) -> dict[str, Any]:
    try:
        return schema.model_validate(layers.values).model_dump(mode="json")
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        origin = layers.origins.get(key, "the recipe")
        for_backbone = f" for backbone '{backbone.id}'" if backbone is not None else ""
        value = f" = {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
        loc = ".".join(str(p) for p in err["loc"])
        raise BadInput(f"recipe '{recipe.id}'{for_backbone}: hparams.{loc}{value} (from {origin}): "
                       f"{err['msg']}") from None


# ------------------------------------------------------------------------------------------ --set


def parse_sets(pairs: Iterable[str] | None) -> dict[str, Any]:
    """`--set key=value` (repeatable) → {key: value}; the value is read as a YAML scalar or list
    (`lr=2e-4`, `amp=false`, `lr_steps=[27,33]`, `crop_pct=null`) and typed by the schema later."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"--set {pair!r}: expected KEY=VALUE, e.g. --set lr=2e-4")
        if key in out:
            raise BadInput(f"--set {key}: given twice; give it once")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise BadInput(f"--set {pair!r}: the value is not a YAML scalar or list") from None
        if isinstance(value, dict):
            raise BadInput(f"--set {pair!r}: a value is a scalar or a list, not a mapping")
        out[key] = value
    return out


def check_sets_known(sets: Mapping[str, Any], protocols: Iterable[str]) -> None:
    """A --set key must be a hyperparameter of at least one planned run's protocol (a typo is an error)."""
    protocols = sorted(set(protocols))
    known = set().union(*(SCHEMA_BY_PROTOCOL[p].model_fields for p in protocols)) if protocols else set()
    for key in sets:
        if key not in known:
            raise BadInput(f"--set {key}: not a hyperparameter of the planned runs (protocols "
                           f"{', '.join(protocols) or 'none'}); known: {', '.join(sorted(known))}")

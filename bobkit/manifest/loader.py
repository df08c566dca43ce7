"""Read manifest folders into one validated Catalog, with errors that name file, entry and field.

A manifest file is YAML whose single top-level key says what it holds (`backbones:`,
`datasets:`, `recipes:`, `experiments:`, `deviations:`), followed by a list of entries.
Published numbers are CSV files under `published/`. Extra folders (a lab's own manifests)
are read after the built-in one; an id defined twice is an error.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from bobkit.errors import BadInput, unknown_id
from bobkit.manifest.models import (
    ENTRY_MODEL,
    KINDS,
    Backbone,
    Dataset,
    Deviation,
    Experiment,
    PublishedValue,
    Recipe,
    Tolerance,
)

BUILTIN_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
PUBLISHED_COLUMNS = ("experiment", "backbone", "dataset", "metric", "value", "unit", "source", "confidence")


class ManifestError(BadInput):
    """One readable line: file, entry, field, and what is wrong."""

    def __init__(self, path: Path | str, entry: str | None, field_path: str | None, problem: str) -> None:
        where = str(path)
        if entry:
            where += f": {entry}"
        if field_path:
            where += f", field '{field_path}'"
        super().__init__(f"{where}: {problem}")


def builtin_manifest_dir() -> Path:
    """The manifests shipped with bobkit: a checkout's manifests/, else the installed data files."""
    if BUILTIN_MANIFESTS.is_dir():
        return BUILTIN_MANIFESTS
    import sys

    return Path(sys.prefix) / "share" / "bobkit" / "manifests"


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return loc, msg


@dataclass
class Catalog:
    """Everything the manifests say, validated and cross-checked."""

    backbones: dict[str, Backbone] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    recipes: dict[str, Recipe] = field(default_factory=dict)
    experiments: dict[str, Experiment] = field(default_factory=dict)
    deviations: dict[str, Deviation] = field(default_factory=dict)
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    published: list[PublishedValue] = field(default_factory=list)
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)
    resolved_hparams: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind_of(self, entry_id: str) -> str | None:
        for kind in KINDS:
            if entry_id in getattr(self, kind):
                return kind
        return None

    def get(self, kind: str, entry_id: str) -> Any:
        table = getattr(self, kind)
        if entry_id not in table:
            raise unknown_id(kind.rstrip("s"), entry_id, sorted(table))
        return table[entry_id]

    def find(self, entry_id: str) -> tuple[str, Any]:
        kind = self.kind_of(entry_id)
        if kind is None:
            every = [i for k in KINDS for i in getattr(self, k)]
            raise unknown_id("entry", entry_id, every)
        return kind, getattr(self, kind)[entry_id]

    def select_backbones(self, names: Iterable[str] | None) -> list[Backbone]:
        """The backbones named by id or alias (all of them when none is named)."""
        if not names:
            return list(self.backbones.values())
        chosen = []
        for name in names:
            found = self.backbone_by_alias(name)
            if found is None:
                raise unknown_id("backbone", name, sorted(self.backbones))
            chosen.append(found)
        return chosen

    def backbone_by_alias(self, name: str) -> Backbone | None:
        for b in self.backbones.values():
            if name == b.id or name in b.aliases:
                return b
        return None


def manifest_dirs(extra: Iterable[str | Path] = ()) -> list[Path]:
    """The built-in folder, then BOBKIT_MANIFESTS (os.pathsep-separated), then `extra`."""
    dirs = [builtin_manifest_dir()]
    env = os.environ.get("BOBKIT_MANIFESTS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in extra]
    return dirs


def load_catalog(extra: Iterable[str | Path] = (), *, builtin: bool = True) -> Catalog:
    dirs = manifest_dirs(extra) if builtin else [Path(p) for p in extra]
    catalog = Catalog()
    for d in dirs:
        if not d.exists():
            raise BadInput(f"{d}: manifest folder not found; check the path")
        files = [d] if d.is_file() else sorted(d.rglob("*.yaml")) + sorted(d.rglob("*.yml"))
        for path in files:
            _load_yaml_file(path, catalog)
        if d.is_dir():
            for path in sorted(d.rglob("*.csv")):
                _load_published_csv(path, catalog)
    _resolve_recipes(catalog)
    _cross_check(catalog)
    return catalog


def _load_yaml_file(path: Path, catalog: Catalog) -> None:
    import yaml

    # libyaml's parser is ~10x faster than the pure-Python one; verify's one-second budget needs it
    safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=safe_loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ManifestError(path, None, None, f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except UnicodeDecodeError:
        raise ManifestError(path, None, None, "not UTF-8 text") from None
    if data is None:
        return
    if not isinstance(data, dict) or len(data) != 1:
        raise ManifestError(path, None, None, f"expected exactly one top-level key, one of {', '.join(KINDS)}")
    (kind, entries), = data.items()
    if kind not in ENTRY_MODEL:
        raise ManifestError(path, None, None, f"unknown top-level key {kind!r}; expected one of {', '.join(KINDS)}")
    if not isinstance(entries, list):
        raise ManifestError(path, None, kind, "expected a list of entries")
    model = ENTRY_MODEL[kind]
    table = getattr(catalog, kind)
    for i, raw in enumerate(entries):
        label = f"{kind[:-1]} #{i + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label = f"{kind[:-1]} '{raw['id']}'"
        if not isinstance(raw, dict):
            raise ManifestError(path, label, None, "expected a mapping of fields")
        try:
            entry = model.model_validate(raw)
        except ValidationError as exc:
            loc, msg = _first_error(exc)
            raise ManifestError(path, label, loc or None, msg) from None
        if entry.id in table:
            first = catalog.origin[(kind, entry.id)]
            raise ManifestError(path, label, "id", f"defined twice (first in {first}); rename one")
        table[entry.id] = entry
        catalog.origin[(kind, entry.id)] = path


def _load_published_csv(path: Path, catalog: Catalog) -> None:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(path, None, None, f"published CSV lacks column(s) {', '.join(missing)}")
    for n, row in enumerate(reader, start=2):
        row = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        try:
            catalog.published.append(PublishedValue.model_validate(row))
        except ValidationError as exc:
            loc, msg = _first_error(exc)
            raise ManifestError(path, f"row {n}", loc, msg) from None


def validate_hparams(catalog: Catalog, recipe: Recipe, hparams: dict[str, Any], context: str) -> dict[str, Any]:
    from bobkit.manifest.resolve import schema_for

    schema = schema_for(catalog, recipe)
    path = catalog.origin.get(("recipes", recipe.id), "manifests")
    try:
        return schema.model_validate(hparams).model_dump(mode="json")
    except ValidationError as exc:
        loc, msg = _first_error(exc)
        raise ManifestError(path, f"recipe '{recipe.id}'{context}", f"hparams.{loc}", msg) from None


def _resolve_recipes(catalog: Catalog) -> None:
    """Each recipe's own view (base chain, no backbone) through the one resolver, and each override
    checked on top of it, so a bad value is reported at load time with its file and entry."""
    from bobkit.manifest.resolve import base_chain, resolve

    for rid, recipe in catalog.recipes.items():
        merged: dict[str, Any] = {}
        for r in base_chain(catalog, rid):
            merged.update(r.hparams)
        validate_hparams(catalog, recipe, merged, "")
        catalog.resolved_hparams[rid] = resolve(catalog, recipe).hparams
        for ov in recipe.overrides:
            validate_hparams(catalog, recipe, {**merged, **ov.set}, f" (override for {ov.backbones or ov.families})")


def _cross_check(catalog: Catalog) -> None:
    """Every id an entry refers to must exist."""

    def need(kind: str, ref: str, path: Path, label: str, fld: str) -> None:
        if ref not in getattr(catalog, kind):
            raise ManifestError(path, label, fld, str(unknown_id(kind[:-1], ref, sorted(getattr(catalog, kind)))))

    for rid, recipe in catalog.recipes.items():
        path = catalog.origin[("recipes", rid)]
        for ov in recipe.overrides:
            for b in ov.backbones:
                need("backbones", b, path, f"recipe '{rid}'", "overrides.backbones")
    for eid, exp in catalog.experiments.items():
        path = catalog.origin[("experiments", eid)]
        label = f"experiment '{eid}'"
        for i, g in enumerate(exp.grid):
            need("recipes", g.recipe, path, label, f"grid.{i}.recipe")
            for b in g.backbones:
                need("backbones", b, path, label, f"grid.{i}.backbones")
            for d in g.datasets:
                need("datasets", d, path, label, f"grid.{i}.datasets")
            recipe = catalog.recipes[g.recipe]
            for d in g.datasets:
                if catalog.datasets[d].task != recipe.task:
                    raise ManifestError(path, label, f"grid.{i}.datasets",
                                        f"dataset '{d}' is a {catalog.datasets[d].task} dataset, "
                                        f"recipe '{g.recipe}' is {recipe.task}")
            if g.upstream:
                need("recipes", g.upstream, path, label, f"grid.{i}.upstream")
                need("datasets", g.upstream_dataset, path, label, f"grid.{i}.upstream_dataset")
        for b in exp.smoke.backbones:
            need("backbones", b, path, label, "smoke.backbones")
        for d in exp.smoke.datasets:
            need("datasets", d, path, label, "smoke.datasets")
        for s in exp.table.settings:
            for r in s.recipes:
                need("recipes", r, path, label, f"table.settings.{s.id}.recipes")
            for d in s.datasets:
                need("datasets", d, path, label, f"table.settings.{s.id}.datasets")
    for did, dev in catalog.deviations.items():
        if dev.faithful:
            path = catalog.origin[("deviations", did)]
            for r in dev.faithful.recipes:
                need("recipes", r, path, f"deviation '{did}'", "faithful.recipes")
            for b in dev.faithful.backbones:
                need("backbones", b, path, f"deviation '{did}'", "faithful.backbones")
    for pv in catalog.published:
        if pv.backbone not in catalog.backbones and catalog.backbone_by_alias(pv.backbone) is None \
                and not pv.backbone.startswith("group:"):
            raise BadInput(f"published value {pv.experiment}/{pv.backbone}/{pv.dataset}/{pv.metric}: "
                           f"backbone '{pv.backbone}' is not in the manifests; add it or an alias")

"""list, show, plan, validate, schema: read-only views of the manifests. No torch here."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bobkit.cli_app import ClassifierOpt, JsonOpt, ManifestsOpt, RecipeOpt, SetOpt, app, console, emit_json, load, table
from bobkit.errors import BadInput


class Kind(str, Enum):
    backbones = "backbones"
    datasets = "datasets"
    recipes = "recipes"
    experiments = "experiments"
    deviations = "deviations"


LIST_COLUMNS = {
    "backbones": ("id", "name", "kind", "architecture", "params_m", "pretrain_data", "tasks"),
    "datasets": ("id", "name", "task", "num_classes", "layout", "license"),
    "recipes": ("id", "title", "task", "protocol", "base"),
    "experiments": ("id", "title", "source", "confidence"),
    "deviations": ("id", "title", "confidence"),
}


def _listing(catalog, kind: str) -> list[dict]:
    rows = []
    for entry in getattr(catalog, kind).values():
        row = entry.model_dump(mode="json")
        if kind == "recipes":
            row["hparams"] = catalog.resolved_hparams[entry.id]
        rows.append(row)
    return rows


@app.command("list")
def list_cmd(kind: Annotated[Kind, typer.Argument(help="What to list.")],
             json_out: JsonOpt = False, manifests: ManifestsOpt = None) -> None:
    """List backbones, datasets, recipes, experiments or deviations."""
    catalog = load(manifests)
    rows = _listing(catalog, kind.value)
    if json_out:
        emit_json(rows)
        return
    cols = LIST_COLUMNS[kind.value]
    shown = [[", ".join(r[c]) if isinstance(r.get(c), list) else r.get(c) for c in cols] for r in rows]
    console().print(table(f"{len(rows)} {kind.value}", cols, shown))


@app.command("show")
def show_cmd(entry_id: Annotated[str, typer.Argument(metavar="ID", help="Any manifest id.")],
             backbone: Annotated[str | None, typer.Option("--backbone", "-b", help="A recipe as one backbone gets it "
                                                          "(its overrides applied, each value with its origin).")] = None,
             json_out: JsonOpt = False, manifests: ManifestsOpt = None,
             measure: Annotated[bool, typer.Option("--measure", help="Build the backbone(s) at random init and "
                                                   "measure them (a backbone, or a synopsis table: table1).")] = False,
             ) -> None:
    """Show the resolved view of one manifest entry; a recipe with -b as that backbone gets it.

    Recipes show their base chain applied; with -b, the same resolver as plan and explain, each
    value with its origin."""
    catalog = load(manifests)
    if backbone is not None and catalog.kind_of(entry_id) != "recipes":
        raise BadInput(f"show {entry_id} --backbone: -b applies to a recipe; `bobkit explain EXPERIMENT -b "
                       f"{backbone}` shows a run")
    if measure:
        from bobkit.synopsis import show_measured

        code = show_measured(catalog, entry_id, json_out=json_out)
        if code:
            raise typer.Exit(code)
        return
    kind, entry = catalog.find(entry_id)
    data = entry.model_dump(mode="json")
    data["kind"] = kind[:-1]
    data["defined_in"] = str(catalog.origin[(kind, entry_id)])
    if kind == "recipes" and backbone is not None:
        from bobkit.manifest.resolve import resolve

        [found] = catalog.select_backbones([backbone])
        resolved = resolve(catalog, entry, found)
        data["backbone"] = found.id
        data["resolved_hparams"] = resolved.hparams
        data["origins"] = resolved.origins
    elif kind == "recipes":
        data["resolved_hparams"] = catalog.resolved_hparams[entry_id]
    if kind == "backbones":
        data["published"] = [p.model_dump() for p in catalog.published
                             if p.backbone == entry_id or p.backbone in entry.aliases]
    if kind == "experiments":
        data["published"] = [p.model_dump() for p in catalog.published if p.experiment == entry_id]
    if json_out:
        emit_json(data)
        return
    import yaml

    console().print(f"[bold]{entry_id}[/] ({kind[:-1]}, {data['defined_in']})")
    data.pop("published", None)
    console().print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


@app.command("plan")
def plan_cmd(
    experiment: Annotated[str, typer.Argument(help="Experiment id, e.g. table3.")],
    backbone: Annotated[list[str] | None, typer.Option("--backbone", "-b", help="Only these backbones.")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
    recipe: RecipeOpt = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Tiny synthetic data and a few steps.")] = False,
    faithful: Annotated[bool, typer.Option("--faithful", help="Restore the authors' behaviour (deviations).")] = False,
    sets: SetOpt = None,
    classifier: ClassifierOpt = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """The runs an experiment needs: ids, image family and estimated GPU-hours."""
    from bobkit.manifest.resolve import parse_sets
    from bobkit.plan import parse_classifiers, plan

    catalog = load(manifests)
    specs = plan(catalog, experiment, backbones=backbone, datasets=dataset, recipes=recipe, smoke=smoke,
                 faithful=faithful, classifiers=parse_classifiers(catalog, classifier), sets=parse_sets(sets))
    if json_out:
        emit_json([s.model_dump(mode="json") for s in specs])
        return
    rows = [[s.id, s.backbone, s.dataset, s.recipe, s.hparams.get("lr"), s.image_family, s.gpus,
             f"{s.gpu_hours:.2f}"] for s in specs]
    total = sum(s.gpu_hours for s in specs)
    console().print(table(f"{experiment}: {len(specs)} runs, about {total:,.0f} GPU-hours (bobkit's estimate)",
                          ("run id", "backbone", "dataset", "recipe", "lr", "image", "gpus", "gpu-h"), rows))


@app.command("validate")
def validate_cmd(
    paths: Annotated[list[Path] | None, typer.Argument(help="Manifest files or folders (default: built-in).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate manifests (yours together with the built-in ones); exit 2 on the first problem."""
    from bobkit.manifest.loader import load_catalog

    for p in paths or []:
        if not p.exists():
            raise BadInput(f"{p}: no such file or folder")
    catalog = load_catalog(paths or ())
    counts = {k: len(getattr(catalog, k)) for k in LIST_COLUMNS}
    counts["published"] = len(catalog.published)
    if json_out:
        emit_json({"valid": True, "counts": counts})
        return
    console().print("valid: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@app.command("schema")
def schema_cmd(
    kind: Annotated[Kind | None, typer.Argument(help="One kind (default: all, keyed by kind).")] = None,
) -> None:
    """JSON Schema of the manifests, for editor completion and validation."""
    from bobkit.manifest.models import ENTRY_MODEL

    kinds = [kind.value] if kind else list(ENTRY_MODEL)
    schemas = {k: {"type": "object", "properties": {k: {"type": "array", "items": ENTRY_MODEL[k].model_json_schema()}},
                   "required": [k], "additionalProperties": False} for k in kinds}
    emit_json(schemas[kinds[0]] if kind else schemas)

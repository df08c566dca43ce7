"""explain: every value a run will use, where it came from, and what the optimizer will see.

The tool to run before spending GPU-hours. Without --groups it is pure planning (no torch); with
--groups it builds the real model at random init and prints the optimizer's parameter groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bobkit.cli_app import ClassifierOpt, JsonOpt, ManifestsOpt, RecipeOpt, SetOpt, app, console, emit_json, load, table
from bobkit.errors import BadInput



@app.command("explain")
def explain_cmd(
    target: Annotated[str, typer.Argument(metavar="EXPERIMENT|RUN_ID|SPEC", help="An experiment id (with filters), "
                                          "a run id, or a run's spec.json.")],
    backbone: Annotated[list[str] | None, typer.Option("--backbone", "-b", help="Only these backbones.")] = None,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="Only these datasets.")] = None,
    recipe: RecipeOpt = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="The smoke version of the runs.")] = False,
    faithful: Annotated[bool, typer.Option("--faithful", help="Restore the authors' behaviour (deviations).")] = False,
    sets: SetOpt = None,
    classifier: ClassifierOpt = None,
    groups: Annotated[bool, typer.Option("--groups", help="Build the model at random init and show the optimizer's "
                                                          "parameter groups (imports torch; no training).")] = False,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Where to look for a run id (default: "
                                                  "$BOBKIT_RUNS, else ./runs).", show_default=False)] = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Every value of a run with its origin, and what the optimizer will see.

    For each matching run: every hyperparameter with its value and origin, the derived values
    (effective batch and lr, accumulation, warm-up in steps) and, with --groups, the parameter groups."""
    specs = _specs(target, backbone, dataset, recipe, smoke, faithful, sets, classifier, runs_dir, manifests)
    reports = [explain_spec(s, groups=groups) for s in specs]
    if json_out:
        emit_json(reports)
        return
    out = console()
    for rep in reports:
        _print_report(out, rep)


def _specs(target, backbone, dataset, recipe, smoke, faithful, sets, classifier, runs_dir, manifests) -> list:
    from bobkit.commands.run import runs_dir_or_default
    from bobkit.manifest.resolve import parse_sets
    from bobkit.plan import parse_classifiers, plan
    from bobkit.results import RUN_ID, find_run

    path = Path(target)
    as_run = path.is_file() or (path.is_dir() and (path / "spec.json").is_file()) or RUN_ID.fullmatch(target)
    if as_run and (backbone or dataset or recipe or smoke or faithful or sets or classifier):
        raise BadInput(f"explain {target}: a run is explained as planned; filters and --set/--smoke/--faithful "
                       "apply to an experiment (explain EXPERIMENT -b … instead)")
    if path.is_file() or (path.is_dir() and (path / "spec.json").is_file()):
        from bobkit.runone import load_spec

        return [load_spec(path if path.is_file() else path / "spec.json")]
    catalog = load(manifests)
    if RUN_ID.fullmatch(target):
        runs = runs_dir_or_default(runs_dir)
        found = find_run(runs, target)
        if found is not None:
            from bobkit.runone import load_spec

            return [load_spec(found.spec_path)]
        from bobkit.commands.run import find_planned

        planned = find_planned(catalog, target)
        if planned is None:
            raise BadInput(f"run {target}: no spec.json under {runs} and no experiment plans a run with this id "
                           "(default flags or --smoke); give --runs-dir, or explain the experiment with -b/-d")
        return [planned[0]]
    if target not in catalog.experiments:
        from bobkit.errors import unknown_id

        raise unknown_id("experiment or run", target, sorted(catalog.experiments))
    return plan(catalog, target, backbones=backbone, datasets=dataset, recipes=recipe, smoke=smoke,
                faithful=faithful, classifiers=parse_classifiers(catalog, classifier), sets=parse_sets(sets))


def explain_spec(spec, groups: bool = False) -> dict[str, Any]:
    """The JSON report of one run: identity, every hparam with value and origin, derived values, deviations."""
    from bobkit.manifest.derived import derived_values, per_update_schedule, train_images

    hp = spec.typed_hparams()
    report: dict[str, Any] = {
        "run_id": spec.id, "experiment": spec.experiment, "backbone": spec.backbone, "dataset": spec.dataset,
        "recipe": spec.recipe, "task": spec.task, "protocol": spec.protocol, "seed": spec.seed,
        "smoke": spec.smoke, "faithful": spec.faithful, "gpus": spec.gpus, "depends_on": spec.depends_on,
        "hparams": [{"key": k, "value": v, "origin": spec.origins.get(k, "(not recorded in this spec.json)")}
                    for k, v in sorted(spec.hparams.items())],
        "derived": derived_values(hp, world_size=spec.gpus, train_images=train_images(spec.dataset_spec, hp),
                                  per_update_schedule=per_update_schedule(spec.protocol)),
        "deviations_applied": list(spec.deviations),
    }
    if groups and has_param_groups(spec):
        report["param_groups"] = param_groups(spec)
    elif groups:
        report["param_groups_note"] = (f"{spec.task}/{spec.protocol}: parameter groups are shown for classification "
                                       "training runs (fine-tune, probe, 1 %/10 %, CheXpert, VisDA)")
    return report


def has_param_groups(spec) -> bool:
    return spec.task in ("classification", "ood_classification") and spec.protocol != "ood_eval"


def param_groups(spec) -> list[dict[str, Any]]:
    """The optimizer's parameter groups of the run's model at random init, as the runner builds them."""
    from bobkit.tasks.cls_model import build_classifier, describe_param_groups, trainable_param_groups

    hp = spec.typed_hparams()
    at_random_init = spec.model_copy(update={"hparams": {**spec.hparams, "pretrained": False}})
    model, _ = build_classifier(at_random_init, int(spec.dataset_spec.get("num_classes") or 1000))
    from bobkit.manifest.derived import effective_lr

    found = trainable_param_groups(model, hp.weight_decay, hp.layer_decay)
    return describe_param_groups(model, found, lr=effective_lr(hp.lr, hp.batch_size, hp.lr_scaling))


def _print_report(out, rep: dict[str, Any]) -> None:
    from rich.markup import escape

    head = (f"[bold]run {rep['run_id']}[/]: {rep['experiment']} / {rep['backbone']} / {rep['dataset']} "
            f"({rep['recipe']}, {rep['protocol']}, seed {rep['seed']}"
            + (", smoke" if rep["smoke"] else "") + (", faithful" if rep["faithful"] else "") + ")")
    out.print(head)
    out.print(table(None, ("hparam", "value", "origin"), [[h["key"], escape(_fmt(h["value"])), escape(h["origin"])]
                                                          for h in rep["hparams"]]))
    d = rep["derived"]
    line = (f"derived ({d['world_size']} GPU(s)): effective batch {d['effective_batch']} = {d['per_gpu_batch']} per "
            f"GPU × {d['world_size']} × accumulation {d['accumulation']}; effective lr {d['effective_lr']:g}")
    if "warmup_steps" in d:
        line += f"; warm-up {d['warmup_steps']} {d['warmup_unit']}"
    if "updates_per_epoch" in d:
        line += f"; {d['updates_per_epoch']} updates/epoch, {d['total_updates']} in all"
    out.print(line)
    if rep["deviations_applied"]:
        out.print("deviations applied (--faithful): " + ", ".join(rep["deviations_applied"]))
    if rep["depends_on"]:
        out.print("reads the checkpoint of run(s): " + ", ".join(rep["depends_on"]))
    if "param_groups_note" in rep:
        out.print(f"[dim]--groups: {escape(rep['param_groups_note'])}[/]")
    if "param_groups" in rep:
        rows = [[i, g["params"], g["numel"], f"{g['lr']:.3g}", f"{g['lr_scale']:.4g}", g["weight_decay"],
                 escape(", ".join(g["modules"]))] for i, g in enumerate(rep["param_groups"])]
        out.print(table(f"{len(rows)} optimizer parameter groups (random init)",
                        ("#", "tensors", "numel", "lr", "lr scale", "wd", "modules"), rows))
    out.print("")


def _fmt(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)

"""Table 1, the synopsis of the backbones: what the manifests say of each backbone (pretraining
method, kind, data, architecture) next to what bobkit measures when it builds it (parameters,
feature dimensions per stage, strides, resolution), with the parameter count checked against the
manifest (a difference above 1 % is flagged).

Backbones are built one at a time and freed before the next, so the whole zoo fits a small
machine. `bobkit reproduce table1` builds them with their weights (checking every checkpoint
loads); `--smoke` and `bobkit show table1 --measure --meta` build them at random init.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Iterable

from bobkit.errors import BobkitError, ExitCode

PARAM_TOLERANCE = 0.01


def measure_synopsis(catalog: Any, backbone_ids: Iterable[str] | None = None, pretrained: bool = False, *,
                     device: str | None = None, weights_dir: Any = None, offline: bool | None = None,
                     progress: bool = True, keep_going: bool = True) -> list[dict[str, Any]]:
    """One row per backbone. device="meta" builds shape-only modules (random init only): the same
    counts and dimensions without the memory or the initialisation time. With keep_going, a backbone
    that fails to build (e.g. weights missing) gets an `error` in its row instead of stopping."""
    from bobkit.backbones import build
    from bobkit.backbones.zoo import construct

    if pretrained and device == "meta":
        raise ValueError("the meta device has no room for weights; use pretrained=False with device='meta'")
    entries = catalog.select_backbones(backbone_ids)
    rows: list[dict[str, Any]] = []
    with _progress(progress, len(entries)) as advance:
        for entry in entries:
            advance(entry.id)
            row = _manifest_row(entry)
            started = time.perf_counter()
            try:
                if device == "meta":
                    model = construct(entry, device="meta")
                    _measure_module(row, entry, model)
                    del model
                else:
                    built = build(entry, pretrained=pretrained, weights_dir=weights_dir, offline=offline)
                    _measure_module(row, entry, built.model)
                    row["weights"] = built.weights or "random init"
                    del built
            except BobkitError as exc:
                if not keep_going:
                    raise
                row["error"] = str(exc)
                row["error_exit_code"] = int(exc.exit_code)
            finally:
                gc.collect()
            row["build_s"] = round(time.perf_counter() - started, 2)
            rows.append(row)
    return rows


def _manifest_row(entry: Any) -> dict[str, Any]:
    return {
        "backbone": entry.id, "name": entry.name, "method": entry.method, "kind": entry.kind,
        "pretrain_data": entry.pretrain_data, "pretrain_images_m": entry.pretrain_images_m,
        "architecture": entry.architecture, "family": entry.family, "params_manifest_m": entry.params_m,
        "resolution": entry.resolution, "plain_vit": entry.plain_vit, "weights": "random init",
    }


def _measure_module(row: dict[str, Any], entry: Any, model: Any) -> None:
    from bobkit.backbones.adapters.features import default_out_indices

    params = sum(p.numel() for p in model.parameters()) / 1e6
    info = list(model.feature_info)
    stages = default_out_indices(info, entry.plain_vit)
    delta = (params - entry.params_m) / entry.params_m
    row.update({
        "params_measured_m": round(params, 2), "params_delta_pct": round(100 * delta, 2),
        "params_ok": abs(delta) <= PARAM_TOLERANCE, "num_features": int(model.num_features),
        "feature_dims": [int(info[i]["num_chs"]) for i in stages],
        "strides": [int(info[i]["reduction"]) for i in stages],
    })


def mismatches(rows: list[dict[str, Any]]) -> list[str]:
    """One line per backbone whose measured parameters differ from the manifest by more than 1 %."""
    return [f"{r['backbone']}: measured {r['params_measured_m']} M, manifest {r['params_manifest_m']} M "
            f"({r['params_delta_pct']:+.2f} %)" for r in rows if "params_ok" in r and not r["params_ok"]]


def synopsis_table(rows: list[dict[str, Any]], title: str = "Table 1: the backbones"):
    """A rich table of the rows (mismatching parameter counts in red; a weights column only when
    some backbone was built with weights or failed)."""
    from rich.table import Table

    with_weights = any(r["weights"] != "random init" or "error" in r for r in rows)
    t = Table(title=title, show_lines=False)
    cols = ["backbone", "method", "kind", "pretraining data", "architecture", "params M", "manifest M",
            "feature dims", "strides", "res", "ViT"] + (["weights"] if with_weights else [])
    for col in cols:
        t.add_column(col, justify="right" if col in ("params M", "manifest M", "res") else "left")
    for r in rows:
        measured = r.get("params_measured_m")
        shown = "" if measured is None else f"{measured:.1f}"
        if measured is not None and not r["params_ok"]:
            shown = f"[bold red]{shown} ✗[/]"
        dims = r.get("feature_dims")
        cells = [r["backbone"], r["method"], r["kind"], r["pretrain_data"], r["architecture"], shown,
                 f"{r['params_manifest_m']:.1f}", ",".join(map(str, dims)) if dims else "",
                 ",".join(map(str, r.get("strides") or [])), str(r["resolution"]), "plain" if r["plain_vit"] else ""]
        if with_weights:
            cells.append(f"[red]{r['error']}[/]" if "error" in r else r["weights"])
        t.add_row(*cells)
    return t


def render(rows: list[dict[str, Any]], json_out: bool = False, title: str = "Table 1: the backbones") -> None:
    from bobkit.cli_app import console, emit_json, err_console

    if json_out:
        emit_json(rows)
        return
    console().print(synopsis_table(rows, title))
    bad = mismatches(rows)
    errors = [r for r in rows if "error" in r]
    out = err_console()
    for line in bad:
        out.print(f"[red]parameter count differs from the manifest:[/] {line}")
    if not bad and not errors:
        out.print(f"[green]{len(rows)} backbones built; parameter counts agree with the manifest within 1 %[/]")


def exit_code(rows: list[dict[str, Any]]) -> int:
    """3 if a backbone could not be built (weights, environment), 1 if a count disagrees, else 0."""
    if any("error" in r for r in rows):
        return max(r.get("error_exit_code", int(ExitCode.ENVIRONMENT)) for r in rows if "error" in r)
    return int(ExitCode.VERIFY_FAILED) if mismatches(rows) else 0


def reproduce_synopsis(catalog: Any, experiment: str, backbones: Iterable[str] | None = None, smoke: bool = False,
                       json_out: bool = False) -> int:
    """`bobkit reproduce table1`: every backbone (or `backbones`) built with its weights, the table
    printed, the exit code returned. Smoke: the experiment's smoke subset at random init, on the
    meta device (no weights, no memory)."""
    exp = catalog.experiments[experiment]
    ids = list(backbones or []) or (list(exp.smoke.backbones) if smoke else [])
    rows = measure_synopsis(catalog, ids or None, pretrained=not smoke, device="meta" if smoke else None,
                            progress=not json_out)
    render(rows, json_out, title=f"{exp.title}" + (" [smoke: random init, meta device]" if smoke else ""))
    return exit_code(rows)


class _progress:
    """A rich progress bar over the backbones (stderr); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return lambda label: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("building {task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("build", total=self.total, label="")
        state = {"first": True}

        def advance(label: str) -> None:
            if not state["first"]:
                self._bar.advance(task)
            state["first"] = False
            self._bar.update(task, label=label)

        return advance

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def show_measured(catalog: Any, entry_id: str, json_out: bool = False) -> int:
    """`bobkit show ID --measure`: a backbone, or every backbone of a synopsis table, built at
    random init and measured. Returns the exit code."""
    from bobkit.errors import BadInput

    kind, entry = catalog.find(entry_id)
    if kind == "backbones":
        ids, title = [entry.id], f"{entry.id}: measured at random init"
    elif kind == "experiments" and entry.table.kind == "synopsis":
        ids = sorted({b for g in entry.grid for b in g.backbones}) or None
        title = f"{entry.title} [measured at random init]"
    else:
        raise BadInput(f"--measure works for a backbone or a synopsis table (e.g. table1), "
                       f"not {kind[:-1]} '{entry_id}'")
    rows = measure_synopsis(catalog, ids, pretrained=False, progress=not json_out)
    render(rows, json_out, title=title)
    return exit_code(rows)

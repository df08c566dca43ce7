"""`bobkit weights fetch|list`: download, checksum and inspect backbone weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bobkit.cli_app import JsonOpt, ManifestsOpt, app, console, emit_json, load, table

weights_app = typer.Typer(help="Backbone weights: fetch into the cache (checksummed), list the cache state.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")

WeightsDirOpt = Annotated[
    Path | None,
    typer.Option("--weights-dir", help="Cache folder (default: $BOBKIT_WEIGHTS, else ~/.cache/bobkit/weights)."),
]
LockOpt = Annotated[
    Path | None,
    typer.Option("--lock", help="Lock file (default: $BOBKIT_WEIGHTS_LOCK, else manifests/weights.lock)."),
]


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@weights_app.command("fetch")
def fetch_cmd(
    backbones: Annotated[list[str] | None, typer.Argument(metavar="[BACKBONE]...",
                                                          help="Backbone ids or aliases (default: all).")] = None,
    offline: Annotated[bool, typer.Option("--offline",
                                          help="Use only the cache; list what is missing (exit 3).")] = False,
    weights_dir: WeightsDirOpt = None,
    lock: LockOpt = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Download each backbone's weights (and its detection checkpoint) into the cache, verifying sha256
    against the manifest and manifests/weights.lock (the first fetch records it)."""
    from bobkit.weights import WeightsLock, WeightsMissing, cache_dir, fetch_backbones

    catalog = load(manifests)
    chosen = catalog.select_backbones(backbones)
    results = fetch_backbones(chosen, weights_dir=weights_dir, offline=offline, lock=WeightsLock(lock),
                              progress=not json_out, keep_going=True)
    missing = [r for r in results if r.status == "missing"]
    failed = [r for r in results if r.status == "failed"]
    if json_out:
        emit_json([r.as_json() for r in results])
    else:
        rows = [[r.backbone, r.role, r.format, r.source, r.status, _size(r.size), (r.sha256 or "")[:16]]
                for r in results]
        console().print(table(f"weights in {cache_dir(weights_dir)}",
                              ("backbone", "role", "format", "source", "status", "size", "sha256"), rows))
    if failed:
        from rich.markup import escape

        from bobkit.cli_app import err_console
        from bobkit.errors import EnvironmentMissing

        for msg in dict.fromkeys(r.error for r in failed):
            err_console().print(f"[red]failed:[/] {escape(msg or '')}", highlight=False)
        names = sorted({r.backbone for r in failed})
        raise EnvironmentMissing(f"{len(failed)} weights file(s) could not be fetched (backbones {', '.join(names)}); "
                                 "see the messages above")
    if missing:
        names = sorted({r.backbone for r in missing})
        raise WeightsMissing(f"offline: {len(missing)} weights file(s) not in the cache {cache_dir(weights_dir)} "
                             f"(backbones {', '.join(names)}); run `bobkit weights fetch {' '.join(names)}` "
                             "where the network is reachable")


@weights_app.command("list")
def list_cmd(
    backbones: Annotated[list[str] | None, typer.Argument(metavar="[BACKBONE]...",
                                                          help="Backbone ids or aliases (default: all).")] = None,
    weights_dir: WeightsDirOpt = None,
    lock: LockOpt = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """What the cache holds for each backbone (nothing is downloaded or re-hashed)."""
    from bobkit.weights import WeightsLock, cache_dir, cache_state

    catalog = load(manifests)
    rows = cache_state(catalog.select_backbones(backbones), weights_dir=weights_dir, lock=WeightsLock(lock))
    if json_out:
        emit_json(rows)
        return

    def state(r: dict) -> str:
        if not r["cached"]:
            return "missing" + (" (gated)" if r["gated"] else "")
        return {True: "verified", False: "MISMATCH", None: "cached"}[r["verified"]]

    shown = [[r["backbone"], r["role"], r["format"], r["source"], state(r), _size(r["size"]),
              (r["locked_sha256"] or "")[:16]] for r in rows]
    have = sum(r["cached"] for r in rows)
    console().print(table(f"{have} of {len(rows)} weights files cached in {cache_dir(weights_dir)}",
                          ("backbone", "role", "format", "source", "state", "size", "locked sha256"), shown))

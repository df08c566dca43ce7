"""`bobkit images build|list|lock` and `bobkit doctor`: the pinned images and the machine that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bobkit.cli_app import JsonOpt, ManifestsOpt, app, console, emit_json, err_console, table
from bobkit.errors import BadInput, ExitCode

images_app = typer.Typer(help="Build, list and lock the per-family images (Dockerfile, docker/locks/).",
                         no_args_is_help=True)
app.add_typer(images_app, name="images")


@images_app.command("build")
def build_cmd(
    family: Annotated[str | None, typer.Argument(help="classification or detection (default: both).")] = None,
    base: Annotated[str | None, typer.Option("--base", help="Base image instead of the pinned one "
                                                            "(e.g. a locally made Debian 12 with python3).")] = None,
    wheelhouse: Annotated[Path | None, typer.Option("--wheelhouse", help="Folder of wheels to install from "
                                                    "instead of an index (air-gapped hosts).")] = None,
    ca_bundle: Annotated[Path | None, typer.Option("--ca-bundle", help="Extra CA certificates (PEM) pip trusts "
                                                   "during the build.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image reference (default bobkit/FAMILY:latest).")] = None,
) -> None:
    """Build the image of one family (or all) from this checkout, labelled with version and lock hash."""
    from bobkit.images import FAMILIES, build
    from bobkit.images import family as family_named

    names = [family_named(family).name] if family else list(FAMILIES)
    if tag and len(names) > 1:
        raise BadInput("--tag names one image: give a FAMILY too")
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BadInput(f"--ca-bundle {ca_bundle}: file not found")
    out = err_console()
    for name in names:
        with out.status(f"building bobkit/{name}") as status:
            def show(line: str, _s=status, _n=name) -> None:
                if line.startswith("Step "):
                    _s.update(f"bobkit/{_n}: {line[:110]}")
            result = build(name, base=base, wheelhouse=wheelhouse, ca_bundle=ca_bundle, tag=tag, on_line=show)
        size = result.image.attrs.get("Size", 0) / 2**30
        console().print(f"[green]built[/] {', '.join(result.tags)}  {result.image.id[:19]}  {size:.1f} GiB  "
                        f"[dim](log {result.log_path})[/]")
        if result.unpinned:
            out.print(f"[yellow]note[/]: {', '.join(result.unpinned)} used by tag only (no digest in "
                      "docker/locks/base-images.json yet); `bobkit images lock --base` on a machine that "
                      "reaches the registry records it")


@images_app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """bobkit images on this Docker host, with their family, version, lock hash and base."""
    from bobkit.images import list_images

    infos = list_images()
    if json_out:
        emit_json([i.as_dict() for i in infos])
        return
    rows = [[i.reference, i.family, i.version, i.lock_sha256[:12], "yes" if i.current else "no", i.base,
             f"{i.size_mb / 1024:.1f} GiB", i.created] for i in infos]
    console().print(table(f"{len(infos)} bobkit image(s)", ("image", "family", "bobkit", "lock", "current lock",
                                                           "base", "size", "created"), rows))


@images_app.command("lock")
def lock_cmd(
    packages: Annotated[list[str] | None, typer.Option("--packages", help="Re-resolve this family's hash-pinned "
                                                       "lock (docker/locks/FAMILY.txt).")] = None,
    base: Annotated[bool, typer.Option("--base", help="Resolve each base image tag to its registry digest "
                                                      "(docker/locks/base-images.json).")] = False,
    python: Annotated[str | None, typer.Option("--python", help="CPython 3.11 to resolve with (detection: one "
                                               "with torch 2.1.2 installed). Default: this Python.")] = None,
) -> None:
    """Regenerate the lock files: packages with pip's resolver and sha256s, bases with registry digests."""
    from bobkit.images import lock_packages, resolve_base_digests

    if not packages and not base:
        raise BadInput("say what to lock: --packages FAMILY (repeatable) and/or --base")
    for fam in packages or []:
        for path in lock_packages(fam, python=python):
            console().print(f"[green]wrote[/] {path}")
    if base:
        for arg, digest in resolve_base_digests().items():
            console().print(f"[green]{arg}[/] {digest}")


@app.command("doctor")
def doctor_cmd(
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Datasets folder (default $BOBKIT_DATA, "
                                                   "else ~/.cache/bobkit/data).")] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Runs folder (default $BOBKIT_RUNS, "
                                                  "else ./runs).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Only these GPUs (e.g. 0,1).")] = None,
    json_out: JsonOpt = False,
    manifests: ManifestsOpt = None,
) -> None:
    """Check Docker, the NVIDIA runtime, GPUs vs the images' CUDA and torch, disk, datasets and weights."""
    from bobkit.cli_app import load
    from bobkit.data import default_data_root
    from bobkit.doctor import FAIL, any_failed, diagnose, runs_dir_default

    try:
        catalog = load(manifests)
    except BadInput as exc:
        err_console().print(f"[yellow]manifests not loaded ({exc}); datasets and weights not checked[/]")
        catalog = None
    checks = diagnose(data_root or default_data_root(), runs_dir or runs_dir_default(), gpus, catalog)
    if json_out:
        emit_json({"checks": [c.as_dict() for c in checks], "ok": not any_failed(checks)})
    else:
        style = {"ok": "green", "warn": "yellow", FAIL: "bold red", "skip": "dim"}
        out = console()
        for c in checks:
            fix = f"  [dim]→ {c.fix}[/]" if c.fix and c.verdict != "ok" else ""
            out.print(f"[{style[c.verdict]}]{c.verdict:>4}[/]  {c.name}: {c.detail}{fix}")
    if any_failed(checks):
        if not json_out:
            err_console().print("[bold red]something required is missing[/] (exit 3)")
        raise typer.Exit(int(ExitCode.ENVIRONMENT))


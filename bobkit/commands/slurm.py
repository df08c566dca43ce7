"""`bobkit images sif FAMILY`: the family's Docker image as an Apptainer SIF, for Slurm clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bobkit.cli_app import JsonOpt, console, emit_json
from bobkit.commands.images import images_app


@images_app.command("sif")
def sif_cmd(
    family: Annotated[str, typer.Argument(help="Image family: classification or detection.")],
    image: Annotated[str | None, typer.Option("--image", help="Docker image to convert (default bobkit/FAMILY:latest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="SIF file (default: sif_dir of the Slurm config, "
                                                                 "else ~/.cache/bobkit/sif/FAMILY.sif).")] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="Build from a `docker save` tar instead of the "
                                                                    "local Docker daemon.")] = None,
    registry: Annotated[bool, typer.Option("--registry", help="Pull --image from its registry (docker://).")] = False,
    binary: Annotated[str | None, typer.Option("--binary", help="apptainer or singularity (default: whichever is on PATH).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing SIF.")] = False,
    slurm_config: Annotated[Path | None, typer.Option("--slurm-config", help="Slurm config file (for sif_dir).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Convert a family's Docker image to FAMILY.sif and record its sha256 beside it (FAMILY.sif.json).

    With `--executor slurm --container apptainer` each task runs `apptainer exec --nv` on this file,
    and every run's provenance records the SIF path and digest.
    """
    from bobkit.exec.sif import build_sif
    from bobkit.exec.slurm import default_image_ref, sif_dir
    from bobkit.images import family as image_family
    from bobkit.slurm_config import load_slurm_config

    fam = image_family(family)
    cfg = load_slurm_config(slurm_config)
    target = out or sif_dir(cfg) / f"{fam.name}.sif"
    ref = image or default_image_ref(fam.repository)
    with console().status(f"building {target} from {ref} (minutes for a multi-GB image)"):
        side = build_sif(fam.name, ref, target, binary=binary or cfg.binary, archive=archive, registry=registry,
                         force=force)
    if json_out:
        emit_json(side)
        return
    console().print(f"wrote {target}  {side['sha256']}  ({side['size'] / 2**30:.2f} GiB, from {ref})")

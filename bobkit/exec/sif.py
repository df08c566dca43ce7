"""SIF images for Apptainer: built from the family's Docker image, with their digest beside them.

`bobkit images sif FAMILY` runs `apptainer build FAMILY.sif docker-daemon://REF` (or from a
`docker save` archive, or a registry) and writes FAMILY.sif.json: the SIF's sha256, size and
mtime, and the Docker image it came from. The Slurm executor puts the SIF path and digest into
each task's provenance (BOBKIT_IMAGE, BOBKIT_IMAGE_DIGEST) without re-hashing gigabytes per
submission: the sidecar is trusted while the SIF's size and mtime match it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bobkit.errors import BadInput, EnvironmentMissing, RunFailed
from bobkit.results import atomic_write_json

SIDECAR_SUFFIX = ".json"


def file_digest(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


def sidecar_path(sif: Path) -> Path:
    return sif.with_name(sif.name + SIDECAR_SUFFIX)


def _stat_key(sif: Path) -> tuple[int, int]:
    st = sif.stat()
    return st.st_size, st.st_mtime_ns


def read_sidecar(sif: Path) -> dict[str, Any] | None:
    """The sidecar when it still describes this SIF (same size and mtime), else None."""
    try:
        data = json.loads(sidecar_path(sif).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    size, mtime = _stat_key(sif)
    if data.get("size") != size or data.get("mtime_ns") != mtime or not data.get("sha256"):
        return None
    return data


def write_sidecar(sif: Path, **extra: Any) -> dict[str, Any]:
    size, mtime = _stat_key(sif)
    data = {"sif": str(sif.resolve()), "sha256": file_digest(sif), "size": size, "mtime_ns": mtime, **extra}
    atomic_write_json(sidecar_path(sif), data)
    return data


def sif_provenance(sif: Path) -> dict[str, str]:
    """BOBKIT_IMAGE / BOBKIT_IMAGE_DIGEST (and the source image) of a SIF, hashing it only when needed."""
    data = read_sidecar(sif)
    if data is None:
        try:
            data = write_sidecar(sif)
        except OSError:  # a read-only image folder: hash, but keep nothing
            data = {"sha256": file_digest(sif)}
    env = {"BOBKIT_IMAGE": str(sif.resolve()), "BOBKIT_IMAGE_DIGEST": data["sha256"]}
    if data.get("source"):
        src = data["source"] + (f"@{data['source_digest']}" if data.get("source_digest") else "")
        env["BOBKIT_IMAGE_SOURCE"] = src
    return env


def apptainer_binary(preferred: str | None = None) -> str:
    for name in ([preferred] if preferred else []) + ["apptainer", "singularity"]:
        if name and shutil.which(name):
            return name
    raise EnvironmentMissing("neither apptainer nor singularity is on PATH: install Apptainer "
                             "(https://apptainer.org/docs/admin/main/installation.html) or `module load apptainer`")


def build_argv(binary: str, out: Path, source: str, *, force: bool = False) -> list[str]:
    """`apptainer build [--force] OUT SOURCE`; SOURCE is docker-daemon://REF, docker-archive://TAR or docker://REF."""
    return [binary, "build", *(["--force"] if force else []), str(out), source]


def source_uri(ref: str, *, archive: Path | None = None, registry: bool = False) -> str:
    if archive is not None:
        return f"docker-archive://{archive}"
    return f"docker://{ref}" if registry else f"docker-daemon://{ref}"


def docker_image_id(ref: str) -> str | None:
    """The local Docker image id of REF (its digest in provenance), or None without a daemon."""
    if shutil.which("docker") is None:
        return None
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None if out.returncode == 0 else None


def build_sif(family: str, ref: str, out: Path, *, binary: str | None = None, archive: Path | None = None,
              registry: bool = False, force: bool = False) -> dict[str, Any]:
    """Convert the family's Docker image to a SIF and write its sidecar; returns the sidecar."""
    out = out.expanduser()
    if out.exists() and not force:
        raise BadInput(f"{out} exists; pass --force to rebuild it")
    if archive is not None and not archive.is_file():
        raise BadInput(f"{archive}: docker archive not found; make it with `docker save {ref} -o {archive}`")
    exe = apptainer_binary(binary)
    source_digest = None if (archive or registry) else docker_image_id(ref)
    if not (archive or registry) and source_digest is None:
        raise EnvironmentMissing(f"image {ref} is not in the local Docker daemon; build it with "
                                 f"`bobkit images build {family}`, or pass --archive/--registry")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.building")
    argv = build_argv(exe, tmp, source_uri(ref, archive=archive, registry=registry), force=True)
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RunFailed(f"`{' '.join(argv)}` failed ({proc.returncode}): {tail[0]}")
    tmp.replace(out)  # a half-built SIF never sits under the final name
    return write_sidecar(out, family=family, source=ref, source_digest=source_digest,
                         built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         builder=" ".join(argv[:2]))

"""`bobkit doctor`: is this machine ready to reproduce? One line per check, each with a verdict and the fix.

Verdicts: ok · warn (works, with a limit) · fail (a required piece is missing: exit 3) · skip (not
applicable here). Checks read the machine and the images as they are; nothing is changed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from bobkit.images import FAMILIES, Family

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
MIN_FREE_GB = 5.0
LOW_FREE_GB = 50.0


@dataclass
class Check:
    name: str
    verdict: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


# ---------------------------------------------------------------- single checks (pure where possible)

def driver_check(fam: Family, driver: str) -> Check:
    name = f"driver vs {fam.name} (CUDA {fam.cuda})"
    if _version_tuple(driver) >= _version_tuple(fam.min_driver):
        return Check(name, OK, f"driver {driver} ≥ {fam.min_driver}")
    return Check(name, FAIL, f"driver {driver} is older than {fam.min_driver}, which CUDA {fam.cuda} needs",
                 f"install an NVIDIA driver ≥ {fam.min_driver}")


def arch_check(fam: Family, gpus: list[Any]) -> Check:
    name = f"GPU arch vs {fam.name} (torch {fam.torch})"
    archs = sorted({g.arch for g in gpus if g.arch})
    missing = [a for a in archs if a not in fam.archs]
    if not missing:
        return Check(name, OK, f"{', '.join(archs)} in torch {fam.torch}'s build ({' '.join(fam.archs)})")
    return Check(name, FAIL, f"{', '.join(missing)} has no kernels in torch {fam.torch} (built for "
                 f"{' '.join(fam.archs)})",
                 "run this family on other GPUs, or rebuild its image with a torch that targets them")


def disk_check(path: Path) -> Check:
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    detail = f"{free_gb:.0f} GB free at {path}"
    if free_gb < MIN_FREE_GB:
        return Check("disk", FAIL, detail, "free space or point --runs-dir elsewhere (checkpoints need GBs)")
    if free_gb < LOW_FREE_GB:
        return Check("disk", WARN, detail, "full reproductions keep checkpoints: plan for hundreds of GB")
    return Check("disk", OK, detail)


# ---------------------------------------------------------------- checks that look at the machine

def check_daemon() -> tuple[Check, Any]:
    from bobkit.errors import EnvironmentMissing
    from bobkit.images import docker_client

    try:
        client = docker_client(timeout=10)
    except EnvironmentMissing as exc:
        return Check("docker daemon", FAIL, str(exc).split(";")[0],
                     "install Docker Engine (Debian: apt-get install docker.io) and start it; "
                     "or run with --executor local"), None
    v = client.version()
    return Check("docker daemon", OK, f"Docker {v.get('Version')} (API {v.get('ApiVersion')})"), client


def check_runtime(client, have_gpus: bool) -> Check:
    name = "NVIDIA container runtime"
    if client is None:
        return Check(name, SKIP, "no Docker daemon")
    runtimes = set((client.info().get("Runtimes") or {}).keys())
    hook = shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-container-toolkit")
    if "nvidia" in runtimes or hook:
        how = "runtime 'nvidia'" if "nvidia" in runtimes else f"hook {hook}"
        return Check(name, OK, f"{how}: containers can be given GPUs")
    if not have_gpus:
        return Check(name, SKIP, "no GPU on this machine; containers run on CPU (smoke runs)")
    return Check(name, FAIL, "GPUs found, but Docker cannot give them to containers",
                 "install nvidia-container-toolkit and run `nvidia-ctk runtime configure --runtime=docker`, "
                 "then restart dockerd")


def check_images(client, root: Path | None = None) -> list[Check]:
    from bobkit.images import lock_sha256

    if client is None:
        return [Check(f"image {f}", SKIP, "no Docker daemon") for f in FAMILIES]
    out = []
    images = client.images.list(filters={"label": "io.bobkit.family"})
    for fam in FAMILIES.values():
        mine = [i for i in images if (i.labels or {}).get("io.bobkit.family") == fam.name
                and any(t.startswith(fam.repository + ":") for t in i.tags)]
        name = f"image {fam.repository}"
        if not mine:
            out.append(Check(name, WARN, "not built", f"bobkit images build {fam.name}"))
            continue
        try:
            want = lock_sha256(fam, root)
        except Exception:  # noqa: BLE001 - no source tree: cannot tell whether it is current
            want = None
        current = [i for i in mine if (i.labels or {}).get("io.bobkit.lock-sha256") == want]
        img = current[0] if current else mine[0]
        tag = next((t for t in img.tags if t.startswith(fam.repository + ":")), img.id[:19])
        if want is not None and not current:
            out.append(Check(name, WARN, f"{tag} was built from another lock than this checkout's",
                             f"bobkit images build {fam.name}"))
        else:
            out.append(Check(name, OK, f"{tag} ({img.id[7:19]}, bobkit {(img.labels or {}).get('io.bobkit.version')})"))
    return out


def check_gpus(gpus: list[Any]) -> Check:
    if not gpus:
        return Check("GPUs", WARN, "none found (NVML / nvidia-smi)",
                     "runs execute on CPU: fine for --smoke, far too slow for a reproduction")
    names = ", ".join(f"{g.index}: {g.name} ({g.arch}, {g.memory_mb // 1024} GB)" for g in gpus)
    return Check("GPUs", OK, f"{len(gpus)} — {names}; driver {gpus[0].driver}")


def check_datasets(catalog, data_root: Path) -> Check:
    from bobkit.data import dataset_dir

    present, missing = [], []
    for ds in catalog.datasets.values():
        path = dataset_dir(ds.model_dump(mode="json"), data_root)
        (present if path.is_dir() and any(path.iterdir()) else missing).append(ds.id)
    detail = f"{len(present)}/{len(present) + len(missing)} under {data_root}"
    if not missing:
        return Check("datasets", OK, detail)
    shown = ", ".join(missing[:6]) + (" …" if len(missing) > 6 else "")
    return Check("datasets", WARN, f"{detail}; missing: {shown}",
                 "download each into <data root>/<path> (`bobkit show DATASET` gives path, layout and URL); "
                 "--smoke needs none")


def check_weights(catalog) -> Check:
    try:
        from bobkit.weights import cache_dir, cache_state
    except ImportError:
        return Check("cached weights", SKIP, "bobkit.weights is not installed")
    rows = cache_state(catalog.backbones.values())
    cached = [r for r in rows if r["cached"]]
    detail = f"{len(cached)}/{len(rows)} weight files in {cache_dir()}"
    bad = [r["backbone"] for r in cached if r.get("verified") is False]
    if bad:
        return Check("cached weights", FAIL, f"{detail}; checksum mismatch: {', '.join(bad)}",
                     "delete those files and fetch them again")
    if len(cached) < len(rows):
        return Check("cached weights", WARN, detail,
                     "fetch before running (containers have no network): `bobkit weights fetch`; --smoke needs none")
    return Check("cached weights", OK, detail)


def diagnose(data_root: Path, runs_dir: Path, gpus_option: str | None = None, catalog=None,
             discover: Callable[[], list[Any]] | None = None) -> list[Check]:
    from bobkit.exec.scheduler import Gpu, discover_gpus, parse_gpu_list

    checks: list[Check] = []
    daemon, client = check_daemon()
    checks.append(daemon)
    gpus = (discover or discover_gpus)()
    if gpus_option:
        wanted = set(parse_gpu_list(gpus_option))
        gpus = [g for g in gpus if g.index in wanted or g.uuid in wanted] or [Gpu(i) for i in sorted(wanted)]
    checks.append(check_gpus(gpus))
    checks.append(check_runtime(client, bool(gpus)))
    checks += check_images(client)
    driver = next((g.driver for g in gpus if g.driver), "")
    for fam in FAMILIES.values():
        if driver:
            checks.append(driver_check(fam, driver))
        if any(g.arch for g in gpus):
            checks.append(arch_check(fam, gpus))
    checks.append(disk_check(runs_dir))
    if catalog is not None:
        checks.append(check_datasets(catalog, data_root))
        checks.append(check_weights(catalog))
    return checks


def any_failed(checks: list[Check]) -> bool:
    return any(c.verdict == FAIL for c in checks)


def runs_dir_default() -> Path:
    return Path(os.environ.get("BOBKIT_RUNS", "runs"))

"""The command line one Slurm task runs: `bobkit run-one` inside the family's image, or on the host.

Pure functions of a `Launch`: no process is started here, so each runtime's exact command line
is visible (and tested) as a list of strings. Every runtime sees the runs directory, the data
root and the weights cache at the same paths as the host, so the spec path needs no rewriting.

GPUs: Slurm picks the devices of a task. Runtimes that expose every host GPU (Apptainer --nv,
the host) keep Slurm's CUDA_VISIBLE_DEVICES; runtimes that expose only the listed devices
(Docker, Podman) get the physical ids from SLURM_JOB_GPUS; Pyxis's step inherits the allocation.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

RUNTIMES = ("apptainer", "pyxis", "podman", "docker", "none")
DOCKER_GPU_MODES = ("gpus", "cdi", "env")


@dataclass(frozen=True)
class Mount:
    path: Path
    read_only: bool = False

    def spec(self, sep: str = ":") -> str:
        p = str(self.path)
        return f"{p}{sep}{p}{sep}ro" if self.read_only else f"{p}{sep}{p}"


@dataclass(frozen=True)
class Launch:
    """Everything a task needs to build its command line, fixed at submission time."""

    runtime: str
    spec_path: Path
    data_root: Path
    image: str = ""  # docker/podman/pyxis image reference, or the SIF path for apptainer
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # BOBKIT_* variables passed into the container
    name: str = ""  # container name (docker/podman) so a stopped task can remove its container
    python: str = "python3"  # host runtime: the interpreter that has bobkit installed
    binary: str = ""  # apptainer/singularity, podman or docker executable; default: the runtime's name
    docker_gpu_mode: str = "gpus"
    network: str | None = None  # docker/podman --network
    user: str | None = None  # docker/podman --user uid:gid (files in the runs dir stay the user's)
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # site-specific runtime flags
    nproc: int = 1  # processes (one per GPU) of a multi-GPU run, started by torchrun


def run_one_args(launch: Launch, python: str = "python") -> list[str]:
    """`bobkit run-one SPEC --data-root DATA`; a multi-GPU run under torchrun, one process per GPU."""
    tail = ["run-one", str(launch.spec_path), "--data-root", str(launch.data_root)]
    if launch.nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={launch.nproc}",
                "-m", "bobkit", *tail]
    return ["bobkit", *tail]


def allocated_gpus(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(physical GPU ids, CUDA_VISIBLE_DEVICES ids) of this Slurm task; empty when it has none."""
    physical = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or ""
    visible = environ.get("CUDA_VISIBLE_DEVICES") or ""
    split = lambda s: [x for x in s.split(",") if x.strip()]  # noqa: E731
    phys, vis = split(physical), split(visible)
    return (phys or vis), (vis or phys)


def _env_pairs(launch: Launch, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    return list(launch.env) + list(extra)


def apptainer_argv(launch: Launch, visible: Sequence[str]) -> list[str]:
    """`apptainer exec --nv` on the SIF: host GPUs are mapped, CUDA_VISIBLE_DEVICES picks Slurm's."""
    argv = [launch.binary or "apptainer", "exec", "--nv", "--cleanenv", "--no-home"]
    for m in launch.mounts:
        argv += ["--bind", m.spec()]
    env = _env_pairs(launch, [("CUDA_VISIBLE_DEVICES", ",".join(visible))] if visible else [])
    for k, v in env:
        argv += ["--env", f"{k}={v}"]
    return argv + list(launch.extra_args) + [launch.image] + run_one_args(launch)


def pyxis_argv(launch: Launch, visible: Sequence[str]) -> list[str]:
    """A nested `srun` step with Pyxis's --container-image; the step inherits the task's GPUs."""
    del visible  # Slurm passes the allocation to the step; enroot's hook exposes those GPUs
    names = [k for k, _ in launch.env]
    argv = ["srun", "--ntasks=1", "--overlap", f"--container-image={launch.image}",
            "--container-mounts=" + ",".join(m.spec() for m in launch.mounts),
            "--no-container-mount-home", "--container-workdir=/"]
    if names:
        argv += ["--container-env=" + ",".join(names)]
        argv += ["--export=" + ",".join(["ALL"] + [f"{k}={v}" for k, v in launch.env])]
    return argv + list(launch.extra_args) + run_one_args(launch)


def _gpu_flags(mode: str, physical: Sequence[str]) -> list[str]:
    if not physical:
        return []
    ids = ",".join(physical)
    if mode == "gpus":  # nvidia-container-toolkit; a list needs the inner quotes
        return ["--gpus", f'"device={ids}"']
    if mode == "cdi":  # CDI devices (Podman, Docker >= 25 with CDI enabled)
        return [a for i in physical for a in ("--device", f"nvidia.com/gpu={i}")]
    if mode == "env":  # nvidia is the daemon's default runtime: it reads NVIDIA_VISIBLE_DEVICES
        return ["--env", f"NVIDIA_VISIBLE_DEVICES={ids}"]
    raise ValueError(f"unknown GPU mode '{mode}'; expected one of {', '.join(DOCKER_GPU_MODES)}")


def _engine_argv(engine: str, launch: Launch, physical: Sequence[str], gpu_mode: str) -> list[str]:
    argv = [launch.binary or engine, "run", "--rm", "--init"]
    if launch.name:
        argv += ["--name", launch.name]
    if launch.user:
        argv += ["--user", launch.user]
    if launch.network:
        argv += ["--network", launch.network]
    if engine == "podman":
        argv += ["--security-opt=label=disable"]
    argv += _gpu_flags(gpu_mode, physical)
    for m in launch.mounts:
        argv += ["--volume", m.spec()]
    env = _env_pairs(launch, [("BOBKIT_SLURM_GPUS", ",".join(physical))] if physical else [])
    for k, v in env:
        argv += ["--env", f"{k}={v}"]
    return argv + list(launch.extra_args) + [launch.image] + run_one_args(launch)


def docker_argv(launch: Launch, physical: Sequence[str]) -> list[str]:
    return _engine_argv("docker", launch, physical, launch.docker_gpu_mode)


def podman_argv(launch: Launch, physical: Sequence[str]) -> list[str]:
    return _engine_argv("podman", launch, physical, "cdi")


def host_argv(launch: Launch) -> list[str]:
    argv = run_one_args(launch, python=launch.python)
    return argv if launch.nproc > 1 else [launch.python, "-m", "bobkit", *argv[1:]]


def command_for(launch: Launch, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and the process environment of one task, given the environment Slurm gave it."""
    physical, visible = allocated_gpus(environ)
    env = dict(environ)
    if launch.runtime == "none":
        env.update(dict(launch.env))
        return host_argv(launch), env
    if launch.runtime == "apptainer":
        return apptainer_argv(launch, visible), env
    if launch.runtime == "pyxis":
        return pyxis_argv(launch, visible), env
    if launch.runtime == "docker":
        return docker_argv(launch, physical), env
    if launch.runtime == "podman":
        return podman_argv(launch, physical), env
    raise ValueError(f"unknown container runtime '{launch.runtime}'; expected one of {', '.join(RUNTIMES)}")


def stop_argv(launch: Launch, grace_s: int = 20) -> list[str] | None:
    """The command that stops this task's container (docker/podman), or None when killing the process is enough."""
    if launch.runtime in ("docker", "podman") and launch.name:
        return [launch.binary or launch.runtime, "stop", "--time", str(grace_s), launch.name]
    return None


def remove_argv(launch: Launch) -> list[str] | None:
    if launch.runtime in ("docker", "podman") and launch.name:
        return [launch.binary or launch.runtime, "rm", "--force", launch.name]
    return None


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)

"""Site defaults for the Slurm executor: a TOML file, overridden by `--slurm-*` options.

Looked up in this order: `--slurm-config FILE`, env BOBKIT_SLURM_CONFIG, then
$XDG_CONFIG_HOME/bobkit/slurm.toml (~/.config/bobkit/slurm.toml). A missing default file means
built-in defaults; a typo in a key is an error (extra="forbid"), not a silently ignored setting.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bobkit.errors import BadInput

Runtime = Literal["apptainer", "pyxis", "podman", "docker", "none"]


class SlurmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(None, description="sbatch --partition")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    constraint: str | None = Field(None, description="sbatch --constraint, e.g. 'a100|h100'")
    time: str | None = Field(None, description="fixed time limit (Slurm format: MM, HH:MM:SS, D-HH:MM); "
                                              "default: from the runs' gpu_hours estimates")
    time_margin: float = Field(1.5, gt=0, description="estimate × margin + 10 min is the time limit")
    min_time_min: int = Field(30, ge=1, description="shortest time limit asked for")
    max_time_min: int | None = Field(None, ge=1, description="longest time limit asked for (a partition's "
                                                             "MaxTime); longer runs go on after a requeue")
    cpus_per_gpu: int = Field(8, ge=1)
    mem_per_gpu_gb: float = Field(32, gt=0)
    cpus_without_gpu: int = Field(4, ge=1, description="CPUs of a run that asks for no GPU")
    mem_without_gpu_gb: float = Field(16, gt=0)
    request_gpus: bool = Field(True, description="false on a CPU-only partition (tests, smoke runs)")
    container: Runtime = Field("apptainer", description="how a task enters the family's image")
    images: dict[str, str] = Field(default_factory=dict, description="family -> image reference, SIF or "
                                                                      "squashfs path; overrides the defaults")
    sif_dir: str | None = Field(None, description="where `bobkit images sif` writes FAMILY.sif "
                                                  "(default ~/.cache/bobkit/sif)")
    binary: str | None = Field(None, description="the runtime's executable (e.g. 'singularity')")
    docker_gpus: Literal["gpus", "cdi", "env"] = Field("gpus", description="how docker gets the task's GPUs")
    network: str | None = Field(None, description="docker/podman --network of the task containers")
    runtime_args: list[str] = Field(default_factory=list, description="extra flags for the runtime")
    python: str | None = Field(None, description="host runtime: interpreter with bobkit (default: this one)")
    detection_python: str | None = Field(None, description="host runtime: interpreter of the detection "
                                                           "family (default env BOBKIT_DETECTION_PYTHON)")
    weights_dir: str | None = Field(None, description="weights cache mounted into tasks (default "
                                                      "BOBKIT_WEIGHTS or ~/.cache/bobkit/weights)")
    array_parallelism: int = Field(256, ge=1, description="most tasks of one array running at once")
    max_requeues: int = Field(10, ge=0, description="time-limit requeues before a run is given up")
    signal_delay_s: int = Field(120, ge=10, description="USR2 this long before the time limit: "
                                                       "the run stops and requeues")
    setup: list[str] = Field(default_factory=list, description="shell lines run before each task "
                                                              "(e.g. 'module load apptainer')")
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict, description="any other sbatch option "
                                                                      "(true = a flag, e.g. hold = true)")
    poll_s: float = Field(15, gt=0, description="seconds between queue checks while waiting")

    @field_validator("time")
    @classmethod
    def _time_format(cls, v: str | None) -> str | None:
        if v is not None:
            parse_slurm_time(v)
        return v

    def with_options(self, **options: Any) -> "SlurmConfig":
        """The file's values with the command-line options that were given (None = not given)."""
        given = {k: v for k, v in options.items() if v is not None}
        if not given:
            return self
        try:
            return SlurmConfig.model_validate({**self.model_dump(), **given})
        except ValidationError as exc:
            raise BadInput(f"--slurm option: {_first_error(exc)}") from None


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_slurm_time(text: str) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) → whole minutes, rounded up."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise BadInput(f"time limit '{text}' is not in a Slurm format: MINUTES, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:
        h, mi, s = int(a), int(b or 0), int(c or 0)
        total_s = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif c is not None:
        total_s = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:
        total_s = int(a) * 60 + int(b)
    else:
        total_s = int(a) * 60
    if total_s <= 0:
        raise BadInput(f"time limit '{text}' must be positive")
    return math.ceil(total_s / 60)


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bobkit" / "slurm.toml"


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e.get("loc", ()))
    return f"{where}: {e.get('msg')}" if where else str(e.get("msg"))


def load_slurm_config(path: str | Path | None = None) -> SlurmConfig:
    """The site's defaults; an explicit path that does not exist is an error, the default path is optional."""
    explicit = path or os.environ.get("BOBKIT_SLURM_CONFIG")
    cfg_path = Path(explicit).expanduser() if explicit else default_config_path()
    if not cfg_path.is_file():
        if explicit:
            raise BadInput(f"{cfg_path}: Slurm config file not found; pass an existing file to --slurm-config")
        return SlurmConfig()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{cfg_path}: not valid TOML: {exc}") from None
    data = data.get("slurm", data)  # a [slurm] table or top-level keys
    try:
        return SlurmConfig.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"{cfg_path}: {_first_error(exc)}; see docs/slurm.md for the keys") from None

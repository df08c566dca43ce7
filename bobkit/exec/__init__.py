"""Executors hand RunSpecs to something that runs `bobkit run-one`: this host, Docker, or Slurm.

EXECUTORS maps a name (`bobkit reproduce --executor NAME`) to "module:Class"; a new executor is
one entry here plus its module. `create(name, **options)` passes each executor the options its
constructor accepts (e.g. `gpus`, `progress`) and ignores the rest.
"""

from __future__ import annotations

import inspect
from typing import Any

from bobkit.registry import resolve

EXECUTORS: dict[str, str] = {
    "local": "bobkit.exec.local:LocalExecutor",
    "slurm": "bobkit.exec.slurm:SlurmExecutor",
    "docker": "bobkit.exec.docker:DockerExecutor",
}


def executor_class(name: str) -> type:
    return resolve(EXECUTORS, name, "executor")


def create(name: str, **options: Any):
    """An executor built with the options its constructor takes (None values are left to its defaults)."""
    cls = executor_class(name)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    chosen = {k: v for k, v in options.items() if v is not None and (takes_any or k in params)}
    return cls(**chosen)

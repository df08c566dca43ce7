"""The seam between bobkit's detection runner and a detection library.

An engine takes a DetectionJob (the RunSpec, the COCO-format data, the run directory) and returns
COCO metrics named as in `job.BBOX_METRICS` / `job.SEGM_METRICS`, as fractions. mmdetection is the
one engine today; a detectron2 engine would be one more module and one more line in ENGINES, and
neither the planner nor the runner changes.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from bobkit.errors import BadInput
from bobkit.tasks.detection.job import DetectionJob

DEFAULT_ENGINE = "mmdet"
ENGINES: dict[str, str] = {
    "mmdet": "bobkit.tasks.detection.mmdet_engine:MmdetEngine",
}


class DetectionEngine(Protocol):
    name: str

    def check(self) -> None:
        """Raise EnvironmentMissing (one line, with the fix) when the library cannot run here."""

    def run(self, job: DetectionJob) -> dict[str, float]:
        """Train (resuming from the run's last checkpoint), evaluate, and return the metrics."""


def engine_for(name: str) -> DetectionEngine:
    if name not in ENGINES:
        raise BadInput(f"no detection engine '{name}'; known: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)()

"""In-container task runners, one module per task family.

Each runner is `run(spec: RunSpec, run_dir: RunDir, data_root: Path) -> dict[str, float]`: it reads
everything from the spec, writes checkpoints under run_dir.checkpoints, logs to run_dir.log_path,
and returns the metrics. `bobkit run-one` wraps it with provenance and the atomic metrics.json.
Runners never import executors.
"""

from __future__ import annotations

from typing import Callable

from bobkit.registry import resolve

RUNNERS: dict[str, str] = {
    "classification": "bobkit.tasks.classification:run",
    "ood_classification": "bobkit.tasks.ood_classification:run",
    "retrieval": "bobkit.tasks.retrieval:run",
    "detection": "bobkit.tasks.detection:run",
    "ood_detection": "bobkit.tasks.detection:run",
}


def runner_for(task: str) -> Callable:
    return resolve(RUNNERS, task, "task")

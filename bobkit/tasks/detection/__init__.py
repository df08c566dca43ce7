"""Detection runner: COCO Cascade Mask R-CNN and Sim10k→Cityscapes Cascade R-CNN, every BoB backbone.

`run(spec, run_dir, data_root)` prepares the data (job.py), then hands the job to a detection
engine (engine.py; mmdetection 3.3 in the detection image). The mmdet config is generated from the
RunSpec in one function (mmdet_config.py); backbones come from bobkit's zoo through one adapter
(mmdet_modules.py). Nothing here imports mmdet until a run starts, so the main environment can
import bobkit.tasks.detection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bobkit.results import RunDir


def run(spec: Any, run_dir: RunDir, data_root: Path) -> dict[str, float]:
    from bobkit.tasks.detection.engine import engine_for
    from bobkit.tasks.detection.job import prepare_job

    hp = spec.typed_hparams()
    engine = engine_for(hp.engine)
    engine.check()
    return engine.run(prepare_job(spec, run_dir, Path(data_root), hp))

"""The mmdetection 3.3 engine: the generated config, mmengine's Runner, mmdet's CocoMetric.

Checkpoints live in <run>/checkpoints (mmengine's work_dir, with its own logs); a rerun of the
same spec resumes from the newest one. The metrics are those of the last evaluation of this
process (the final epoch's), read from CocoMetric (pycocotools) and returned as fractions.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Iterable

from bobkit.errors import BadInput, EnvironmentMissing, RunFailed
from bobkit.tasks.detection.job import BBOX_METRICS, SEGM_METRICS, DetectionJob

SETUP_HINT = ("run .ci/setup-detection.sh to create the detection environment, or use the bobkit/detection "
              "image, and point BOBKIT_DETECTION_PYTHON at its python")


_RUNNERS = itertools.count()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def clean_metrics(raw: dict[str, Any], iou_types: Iterable[str], log: logging.Logger | None = None) -> dict[str, float]:
    """'coco/bbox_mAP' → 'bbox_mAP'; a -1 from pycocotools (no ground truth of that size) is left out."""
    wanted = [m for t in iou_types for m in (BBOX_METRICS if t == "bbox" else SEGM_METRICS)]
    out: dict[str, float] = {}
    for name in wanted:
        value = raw.get(f"coco/{name}", raw.get(name))
        if value is None or float(value) < 0:
            if log:
                log.info(f"metric {name} undefined (no ground truth in its range): left out")
            continue
        out[name] = float(value)
    if not out:
        raise RunFailed(f"the COCO evaluation returned none of {', '.join(wanted)} (got {sorted(raw)})")
    return out


def no_detection_metrics(job: DetectionJob) -> dict[str, float]:
    """Every AP is 0 when nothing was detected, for the size ranges that hold ground truth (COCO's
    small < 32², medium < 96² pixels of area); the others stay undefined, as pycocotools has them."""
    import json

    doc = json.loads(job.evaluate.annotations.read_text(encoding="utf-8"))
    areas = [a["area"] for a in doc["annotations"] if not a.get("iscrowd")]
    if not areas:
        raise RunFailed(f"the evaluation set {job.evaluate.annotations} has no ground truth to score against")
    present = {"": True, "_50": True, "_75": True, "_s": any(a < 32 ** 2 for a in areas),
               "_m": any(32 ** 2 <= a < 96 ** 2 for a in areas), "_l": any(a >= 96 ** 2 for a in areas)}
    return {f"{t}_mAP{suffix}": 0.0 for t in job.iou_types for suffix, has in present.items() if has}


class MmdetEngine:
    name = "mmdet"

    def check(self) -> None:
        try:
            import mmcv  # noqa: F401
            import mmdet  # noqa: F401
            import mmengine  # noqa: F401
            from mmcv.ops import RoIAlign  # noqa: F401  (compiled ops: mmcv built with MMCV_WITH_OPS=1)
        except ImportError as exc:
            raise EnvironmentMissing(f"the detection engine needs mmdet 3.3 with mmcv's compiled ops ({exc}); "
                                     f"{SETUP_HINT}") from None

    def build_runner(self, job: DetectionJob, extra_hooks: Iterable[Any] = ()):
        """The mmengine Runner of a job (config generated from the spec; see mmdet_config)."""
        import torch
        from mmengine.config import Config
        from mmengine.runner import Runner

        import bobkit.tasks.detection.mmdet_modules  # noqa: F401  (registers the adapter and neck)
        from bobkit import provenance
        from bobkit.tasks.detection.features import probe_layout
        from bobkit.tasks.detection.mmdet_config import mmdet_config, optimization_facts

        hp = job.hp
        if hp.amp and not torch.cuda.is_available():
            raise EnvironmentMissing(f"run {job.spec.id} asks for mixed precision (amp), which needs a CUDA GPU; "
                                     f"run it on a GPU machine")
        layout = probe_layout(job.spec.backbone_spec, resolution=hp.resolution, drop_path=hp.drop_path)
        # A fresh experiment name per process: mmengine keys its logger and scope instances by it.
        name = f"{job.spec.id}_{os.getpid()}_{next(_RUNNERS)}"  # mmengine appends a timestamp
        cfg = mmdet_config(job.spec, job, layout, world_size=world_size(), extra={"experiment_name": name})
        job.work_dir.mkdir(parents=True, exist_ok=True)
        if job.train is not None and int(os.environ.get("RANK", "0")) == 0:  # before dist starts: torchrun's rank
            provenance.record(job.run_dir.path, "optimization", optimization_facts(hp, world_size()))
        runner = Runner.from_cfg(Config(cfg))
        for hook in extra_hooks:
            runner.register_hook(hook, priority="LOWEST")
        return runner

    def run(self, job: DetectionJob, extra_hooks: Iterable[Any] = ()) -> dict[str, float]:
        """Train and/or evaluate, as the job's data says (see job.py)."""
        from mmengine.hooks import Hook

        class LastEvaluation(Hook):
            """The metrics of the newest evaluation in this process, and the last epoch's mean training loss."""

            metrics: dict[str, Any] | None = None
            losses: list[float] = []

            def before_train_epoch(self, runner) -> None:
                self.losses = []

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
                if outputs and "loss" in outputs:
                    self.losses.append(float(outputs["loss"]))

            def after_val_epoch(self, runner, metrics=None) -> None:
                self.metrics = dict(metrics or {})

        last = LastEvaluation()
        runner = self.build_runner(job, [last, *extra_hooks])
        handler = None
        if os.environ.get("BOBKIT_LOG_CAPTURED") != "1":  # else the executor already writes stdout to log.txt
            handler = logging.FileHandler(job.run_dir.log_path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            runner.logger.addHandler(handler)
        try:
            return self._run(runner, job, last)
        finally:
            if handler is not None:
                runner.logger.removeHandler(handler)
                handler.close()

    def _run(self, runner: Any, job: DetectionJob, last: Any) -> dict[str, float]:
        if job.train is not None:
            runner.train()
            loss = sum(last.losses) / len(last.losses) if last.losses else previous_train_loss(job)
            save_final(runner, job, loss)
            if job.evaluate is None:
                runner.logger.info(f"training-only run: its product is {job.final_checkpoint}, evaluated by "
                                   f"the downstream run; its metric is the last epoch's mean training loss")
                if loss is None:
                    raise RunFailed(f"run {job.spec.id}: no training iteration ran and no earlier final.pt holds "
                                    f"a training loss; delete {job.work_dir} to train again")
                return {"train_loss": loss}
        else:
            load_upstream(runner, job)
        if last.metrics is None:  # evaluation-only run, or resumed after the final epoch
            runner.val()
        if not last.metrics:  # CocoMetric gives nothing when no box passed the score threshold
            runner.logger.info("no detection above the score threshold: AP is 0 wherever there is ground truth")
            return no_detection_metrics(job)
        return clean_metrics(last.metrics, job.iou_types, runner.logger)


def _bare(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def save_final(runner: Any, job: DetectionJob, train_loss: float | None) -> None:
    """checkpoints/final.pt: the trained detector's weights, what a downstream evaluation run reads."""
    from mmengine.dist import is_main_process

    from bobkit.tasks.cls_checkpoint import atomic_save

    if is_main_process():
        atomic_save({"model": _bare(runner.model).state_dict(), "num_classes": len(job.classes),
                     "classes": list(job.classes), "backbone": job.spec.backbone, "epoch": runner.epoch,
                     "engine": MmdetEngine.name, "train_loss": train_loss}, job.final_checkpoint)


def previous_train_loss(job: DetectionJob) -> float | None:
    """A run resumed after its last epoch trains nothing: its loss is the one final.pt recorded."""
    import torch

    if not job.final_checkpoint.is_file():
        return None
    return torch.load(job.final_checkpoint, map_location="cpu", weights_only=True).get("train_loss")


def load_upstream(runner: Any, job: DetectionJob) -> None:
    import torch

    state = torch.load(job.upstream, map_location="cpu", weights_only=True)
    if tuple(state.get("classes") or ()) != tuple(job.classes):
        raise BadInput(f"run {job.spec.id}: upstream {job.upstream} learned classes {state.get('classes')}, "
                       f"the evaluation set '{job.spec.dataset}' has {list(job.classes)}")
    _bare(runner.model).load_state_dict(state["model"], strict=True)
    runner.logger.info(f"evaluating the upstream checkpoint {job.upstream} (epoch {state.get('epoch')})")

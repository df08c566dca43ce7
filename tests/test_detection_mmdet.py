"""Detection runs for real on CPU with mmdet: tiny synthetic COCO / Sim10k / Cityscapes data in the
published layouts, smoke specs planned from the real manifests (64 px, one epoch).

Needs the detection environment (.ci/setup-detection.sh): run with `.venv-det/bin/python -m pytest`.
In any other environment the whole file is skipped with that reason.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mmdet", reason="needs the detection environment (mmdet 3.3): .ci/setup-detection.sh, "
                                    "then .venv-det/bin/python -m pytest tests/test_detection_mmdet.py")
pytest.importorskip("mmcv.ops", reason="needs mmcv built with its compiled ops (.ci/setup-detection.sh)")

import torch  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from bobkit.results import RunDir, atomic_write_json  # noqa: E402
from bobkit.tasks.detection import run  # noqa: E402
from bobkit.tasks.detection.job import prepare_job  # noqa: E402
from bobkit.tasks.detection.mmdet_engine import MmdetEngine  # noqa: E402

pytestmark = pytest.mark.detection
STEPS_PER_EPOCH = 2  # the synthetic train splits (COCO, Sim10k): 4 images, 2 per batch


@pytest.fixture(scope="module")
def catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog()


def smoke_spec(catalog, experiment, backbone, recipe, dataset=None):
    from bobkit.plan import plan

    for spec in plan(catalog, experiment, backbones=[backbone], smoke=True):
        if spec.recipe == recipe and (dataset is None or spec.dataset == dataset):
            return spec
    raise AssertionError(f"no smoke run {recipe} / {backbone} in {experiment}")


def run_dir_of(tmp_path, spec) -> RunDir:
    rd = RunDir.of(tmp_path / "runs", spec.id)
    atomic_write_json(rd.spec_path, spec.model_dump(mode="json"))
    return rd


class Recorder(Hook):
    """What happened inside the train loop: start epoch, iterations, backbone/neck weights, modes."""

    def __init__(self, fail_after_epoch: int | None = None) -> None:
        self.fail_after_epoch = fail_after_epoch
        self.iterations = 0
        self.backbone_training: set[bool] = set()

    def before_train(self, runner) -> None:
        self.start_epoch = runner.epoch
        self.backbone_before = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
        self.neck_before = {k: v.clone() for k, v in runner.model.neck.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.iterations += 1
        self.backbone_training.add(any(m.training for m in runner.model.backbone.body.modules()))

    def after_train_epoch(self, runner) -> None:
        if self.fail_after_epoch is not None and runner.epoch + 1 >= self.fail_after_epoch:
            raise RuntimeError("interrupted by the test")

    def after_train(self, runner) -> None:
        self.backbone_after = runner.model.backbone.state_dict()
        self.neck_after = runner.model.neck.state_dict()


def test_interrupted_run_resumes_through_run_one_and_writes_metrics(tmp_path, catalog):
    """ResNet-50 Cascade Mask R-CNN on COCO-format data: one epoch in-process, interrupted; then
    `bobkit run-one` resumes from that epoch's checkpoint, trains the second, evaluates with
    mmdet's CocoMetric (pycocotools) and writes metrics.json."""
    from bobkit.plan import run_id
    from tests.conftest import run_cli

    base = smoke_spec(catalog, "detection", "resnet50", "coco_finetune")
    body = {**base.model_dump(mode="json", exclude={"id"}), "hparams": {**base.hparams, "epochs": 2, "lr_steps": [1]}}
    spec = base.model_copy(update={"hparams": body["hparams"], "id": run_id(body)})
    rd = run_dir_of(tmp_path, spec)
    first = Recorder(fail_after_epoch=1)
    with pytest.raises(RuntimeError, match="interrupted by the test"):
        MmdetEngine().run(prepare_job(spec, rd, tmp_path / "data"), extra_hooks=[first])
    assert first.iterations == STEPS_PER_EPOCH
    assert (rd.checkpoints / "epoch_1.pth").is_file() and not rd.metrics_path.exists()

    proc = run_cli("run-one", str(rd.spec_path), "--data-root", str(tmp_path / "data"), timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    log = rd.log_path.read_text()
    assert "resumed from the latest checkpoint" in log and "resumed epoch: 1" in log
    after_resume = log.split("resumed epoch: 1", 1)[1]
    assert "Epoch(train) [2]" in after_resume and "Epoch(train) [1]" not in after_resume
    assert (rd.checkpoints / "epoch_2.pth").is_file() and not (rd.checkpoints / "epoch_1.pth").exists()
    assert (rd.checkpoints / "final.pt").is_file()
    result = json.loads(rd.metrics_path.read_text())
    metrics = result["metrics"]
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "segm_mAP_50"} <= set(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert "bbox_mAP_copypaste" in log and "segm_mAP_copypaste" in log  # pycocotools' COCOeval scored boxes
    assert result["task"] == "detection" and result["run_id"] == spec.id
    optimization = result["provenance"]["optimization"]  # recorded where the mmdet config computes it
    assert (optimization["effective_batch"], optimization["accumulation"], optimization["warmup_iters"]) == (2, 1, 2)
    assert optimization["effective_lr"] == spec.hparams["lr"]
    # the synthetic COCO stand-in lives in the run, in the real layout, and was read from there
    assert (rd.path / "synthetic" / "coco2017" / "annotations" / "instances_val2017.json").is_file()


def test_frozen_vit_on_sim10k_then_evaluated_on_cityscapes(tmp_path, catalog):
    """ViT-S (simple feature pyramid, LSJ) Cascade R-CNN with the backbone frozen, trained on Sim10k
    (VOC layout, cars only); its final.pt is then evaluated by the Cityscapes run."""
    train = smoke_spec(catalog, "ood_detection", "dino_vit_small", "sim10k_cityscapes_frozen", "sim10k")
    evaluate = smoke_spec(catalog, "ood_detection", "dino_vit_small", "sim10k_cityscapes_frozen", "cityscapes")
    assert train.hparams["frozen"] and evaluate.depends_on == [train.id]
    eval_dir = run_dir_of(tmp_path, evaluate)
    from bobkit.errors import EnvironmentMissing

    with pytest.raises(EnvironmentMissing, match="upstream checkpoint"):
        run(evaluate, eval_dir, tmp_path / "data")

    train_dir = run_dir_of(tmp_path, train)
    rec = Recorder()
    trained = MmdetEngine().run(prepare_job(train, train_dir, tmp_path / "data"), extra_hooks=[rec])
    assert set(trained) == {"train_loss"} and trained["train_loss"] > 0  # its product is final.pt
    assert rec.iterations == STEPS_PER_EPOCH
    assert rec.backbone_training == {False}  # the frozen backbone stays in eval mode while training
    for key, before in rec.backbone_before.items():
        assert torch.equal(before, rec.backbone_after[key]), key
    changed = [k for k, v in rec.neck_before.items() if not torch.equal(v, rec.neck_after[k])]
    assert changed, "the neck should train while the backbone is frozen"
    annotations = json.loads((train_dir.path / "annotations" / "sim10k_cars.json").read_text())
    assert {a["category_id"] for a in annotations["annotations"]} == {26}
    final = torch.load(train_dir.checkpoints / "final.pt", weights_only=True)
    assert final["classes"] == ["car"] and final["backbone"] == "dino_vit_small"
    optimization = json.loads((train_dir.path / "provenance_extra.json").read_text())["optimization"]
    assert optimization["effective_lr"] == train.hparams["lr"] and optimization["world_size"] == 1
    assert (optimization["effective_batch"], optimization["per_gpu_batch"], optimization["accumulation"]) == (2, 2, 1)

    metrics = run(evaluate, eval_dir, tmp_path / "data")
    assert "bbox_mAP" in metrics and "segm_mAP" not in metrics
    assert set(metrics) <= {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    log = eval_dir.log_path.read_text()
    assert "evaluating the upstream checkpoint" in log and "bbox_mAP_copypaste" in log
    from bobkit import provenance

    assert "optimization" not in provenance.extra(eval_dir.path)  # nothing trains in an evaluation-only run

"""OOD classification of a classifier *file* (--classifier BACKBONE=FILE): planning drops the upstream
fine-tune, the runner reads a timm state dict or a bobkit final.pt, containers get the file read-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bobkit.errors import BadInput

BACKBONE = "dino_vit_small"
TIMM_ARCH = "vit_small_patch16_224"


@pytest.fixture(scope="module")
def catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog()


def timm_classifier_file(path: Path, favoured: int | None = None, **wrap) -> Path:
    """A timm ImageNet classifier as timm's train.py saves it ({'state_dict': …, 'epoch': …}), at 224 px.
    With `favoured`, the head predicts that class for every image (zero weights, one large bias)."""
    import timm
    import torch

    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    if favoured is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
            model.head.bias[favoured] = 10.0
    state = {f"module.{k}": v for k, v in model.state_dict().items()} if wrap.get("ddp") else model.state_dict()
    torch.save({"state_dict": state, "epoch": 99, "arch": TIMM_ARCH}, path)
    return path


def test_plan_reads_the_file_instead_of_planning_a_fine_tune(catalog, tmp_path):
    from bobkit.plan import parse_classifiers, plan

    path = tmp_path / "vit_s_in1k.pth"
    path.write_bytes(b"x")
    chosen = parse_classifiers(catalog, [f"vit_small_patch16_224_dino={path}"])  # an alias works too
    assert chosen == {BACKBONE: str(path.resolve())}
    default = plan(catalog, "ood_classification", backbones=[BACKBONE], smoke=True)
    with_file = plan(catalog, "ood_classification", backbones=[BACKBONE], smoke=True, classifiers=chosen)
    assert any(s.recipe == "finetune" for s in default)
    assert not any(s.recipe == "finetune" for s in with_file)
    evals = [s for s in with_file if s.protocol == "ood_eval"]
    assert len(evals) == len([s for s in default if s.protocol == "ood_eval"]) > 0
    assert all(s.hparams["checkpoint"] == str(path.resolve()) and s.depends_on == [] for s in evals)
    assert all(s.host_files() == [str(path.resolve())] for s in evals)
    assert {s.id for s in evals}.isdisjoint(s.id for s in default)  # another classifier: other runs
    assert [s for s in with_file if s.protocol == "visda"] == [s for s in default if s.protocol == "visda"]


def test_bad_classifier_arguments_are_one_line_errors(catalog, tmp_path):
    from bobkit.plan import parse_classifiers, plan

    real = tmp_path / "c.pth"
    real.write_bytes(b"x")
    with pytest.raises(BadInput, match="expected BACKBONE=FILE"):
        parse_classifiers(catalog, [str(real)])
    with pytest.raises(BadInput, match="unknown backbone 'vit_smal'"):
        parse_classifiers(catalog, [f"vit_smal={real}"])
    with pytest.raises(BadInput, match="is not a file"):
        parse_classifiers(catalog, [f"{BACKBONE}={tmp_path / 'nope.pth'}"])
    with pytest.raises(BadInput, match="two files"):
        parse_classifiers(catalog, [f"{BACKBONE}={real}", f"dino_vitdet-s={real}"])
    with pytest.raises(BadInput, match="plans no OOD classification evaluation of 'dino_vit_small'"):
        plan(catalog, "retrieval", backbones=[BACKBONE], smoke=True, classifiers={BACKBONE: str(real)})


def _labels(spec, run_dir) -> list[int]:
    from bobkit.data.ood import imagenet_wnids, read_ood_set

    root = run_dir / "synthetic" / spec.dataset
    return [label for _, label in read_ood_set(spec.dataset_spec, root, imagenet_wnids()).items]


def _evaluate(catalog, tmp_path, file: Path):
    from bobkit.exec.base import prepare
    from bobkit.plan import plan
    from bobkit.tasks.ood_classification import run as run_ood

    (spec,) = [s for s in plan(catalog, "ood_classification", backbones=[BACKBONE], datasets=["imagenet_r"],
                               smoke=True, classifiers={BACKBONE: str(file)}) if s.protocol == "ood_eval"]
    run = prepare(spec, tmp_path / "runs")
    return run_ood(spec, run, tmp_path / "data"), _labels(spec, run.path), run


def test_a_timm_classifier_file_is_evaluated_with_its_own_head(catalog, tmp_path):
    _, labels, _ = _evaluate(catalog, tmp_path, timm_classifier_file(tmp_path / "random.pth"))
    present = sorted(set(labels))
    assert len(present) >= 2
    # a head that predicts one class for every image (through its bias only): top-1 is that class's share,
    # exactly, so the logits came from the file's head (and the 200-class mask kept the class)
    for n, favoured in enumerate(present[:2]):
        metrics, _, run = _evaluate(catalog, tmp_path, timm_classifier_file(tmp_path / f"f{n}.pth", favoured,
                                                                            ddp=n == 1))
        assert metrics["top1"] == pytest.approx(labels.count(favoured) / len(labels))
        assert metrics["top1"] <= metrics["top5"]
        extra = json.loads((run.path / "provenance_extra.json").read_text())["classifier_file"]
        assert extra["path"] == str(tmp_path / f"f{n}.pth") and len(extra["sha256"]) == 64
        assert "timm state dict" in extra["layout"]


def test_a_bobkit_final_pt_and_bad_files(catalog, tmp_path):
    import torch

    from bobkit.tasks.cls_checkpoint import final_checkpoint
    from bobkit.tasks.cls_file import load_classifier_file
    from bobkit.tasks.cls_model import Classifier, build_backbone, make_head

    spec = catalog.backbones[BACKBONE].model_dump(mode="json")
    built = build_backbone(spec, pretrained=False, resolution=32)
    model = Classifier(built.model, make_head(built.num_features, 1000, batchnorm=False, init="xavier_normal"))
    path = tmp_path / "final.pt"
    torch.save(final_checkpoint(model.state_dict(), num_classes=1000, backbone=BACKBONE, head="linear", epoch=3,
                                resolution=32), path)
    loaded, facts = load_classifier_file(path, spec, resolution=32)
    assert facts["layout"] == "bobkit final.pt" and facts["epoch"] == 3
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)

    backbone_only = tmp_path / "backbone.pth"
    torch.save(built.model.state_dict(), backbone_only)
    with pytest.raises(BadInput, match="no classifier \\(head.weight\\).*not a backbone checkpoint"):
        load_classifier_file(backbone_only, spec, resolution=32)
    with pytest.raises(BadInput, match="classifier file not found"):
        load_classifier_file(tmp_path / "missing.pth", spec, resolution=32)
    clip = catalog.backbones["clip_rn50"].model_dump(mode="json")
    with pytest.raises(BadInput, match="not a timm architecture"):
        load_classifier_file(backbone_only, clip, resolution=32)


def test_containers_get_the_file_read_only_at_the_same_path(catalog, tmp_path):
    from bobkit.exec.docker import container_config
    from bobkit.exec.slurm import launch_for
    from bobkit.slurm_config import SlurmConfig
    from bobkit.plan import plan
    from bobkit.results import RunDir

    path = tmp_path / "cls.pth"
    path.write_bytes(b"x")
    (spec,) = [s for s in plan(catalog, "ood_classification", backbones=[BACKBONE], datasets=["imagenet_v2"],
                               smoke=True, classifiers={BACKBONE: str(path)}) if s.protocol == "ood_eval"]
    cfg = container_config(spec, image_ref="bobkit/classification:t", image_digest="", runs_dir=tmp_path / "runs",
                           data_root=tmp_path / "data", weights_dir=tmp_path / "w", devices=[], user="1000:1000",
                           shm_size="1g")
    mounts = [m for m in cfg["mounts"] if m["Target"] == str(path.resolve())]
    assert len(mounts) == 1 and mounts[0]["Source"] == str(path.resolve()) and mounts[0]["ReadOnly"] is True
    run = RunDir.of(tmp_path / "runs", spec.id)
    launch = launch_for(spec, run, tmp_path / "runs", tmp_path / "data", SlurmConfig(container="apptainer"),
                        image="x.sif", image_env={})
    assert any(str(m.path) == str(path.resolve()) and m.read_only for m in launch.mounts)

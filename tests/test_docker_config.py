"""What the docker executor asks the engine for, read as constructed objects (no daemon, no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.types import DeviceRequest

from bobkit.errors import BadInput
from bobkit.exec import create
from bobkit.exec.docker import (DATA, RUNS, WEIGHTS, DockerExecutor, container_config, default_executor,
                                parse_image_overrides)
from bobkit.manifest.loader import load_catalog
from bobkit.plan import plan


@pytest.fixture(scope="module")
def ood_specs():
    """An OOD evaluation and the fine-tune whose checkpoint it reads."""
    specs = plan(load_catalog(()), "ood_classification", backbones=["resnet50"], datasets=["imagenet_r"], smoke=True)
    down = next(s for s in specs if s.depends_on)
    up = next(s for s in specs if s.id in down.depends_on)
    return up, down


def _config(spec, devices, tmp_path: Path, **kw):
    return container_config(spec, image_ref="bobkit/classification:latest", image_digest="sha256:" + "a" * 64,
                            runs_dir=tmp_path / "runs", data_root=tmp_path / "data", weights_dir=tmp_path / "w",
                            devices=devices, user="1234:5678", shm_size="8g", **kw)


def test_gpus_are_requested_by_device_id(ood_specs, tmp_path):
    up, _ = ood_specs
    cfg = _config(up, ("2", "3"), tmp_path)
    (req,) = cfg["device_requests"]
    assert isinstance(req, DeviceRequest)
    assert req["Driver"] == "nvidia" and req["DeviceIDs"] == ["2", "3"] and req["Capabilities"] == [["gpu"]]
    assert "Count" not in req or req["Count"] in (None, 0)
    assert "CUDA_VISIBLE_DEVICES" not in cfg["environment"]
    # two GPUs: torchrun around run-one, one process per GPU
    assert cfg["command"][:5] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cfg["command"][-3:] == [f"{RUNS}/{up.id}/spec.json", "--data-root", DATA]


def test_one_gpu_runs_run_one_directly_and_cpu_runs_hide_gpus(ood_specs, tmp_path):
    up, _ = ood_specs
    one = _config(up, ("0",), tmp_path)
    assert one["command"] == [f"{RUNS}/{up.id}/spec.json", "--data-root", DATA]
    cpu = _config(up, (), tmp_path)
    assert cpu["device_requests"] == [] and cpu["environment"]["CUDA_VISIBLE_DEVICES"] == ""


def test_isolation_and_mounts(ood_specs, tmp_path):
    up, down = ood_specs
    cfg = _config(down, ("1",), tmp_path)
    assert cfg["network_mode"] == "none" and cfg["cap_drop"] == ["ALL"]
    assert cfg["security_opt"] == ["no-new-privileges"] and cfg["read_only"] is True
    assert cfg["user"] == "1234:5678" and cfg["shm_size"] == "8g" and "/tmp" in cfg["tmpfs"]
    mounts = {m["Target"]: m for m in cfg["mounts"]}
    assert mounts[DATA]["ReadOnly"] and mounts[DATA]["Source"] == str(tmp_path / "data")
    assert mounts[WEIGHTS]["ReadOnly"]
    own = mounts[f"{RUNS}/{down.id}"]
    assert not own["ReadOnly"] and own["Source"] == str(tmp_path / "runs" / down.id)
    upstream = mounts[f"{RUNS}/{up.id}"]
    assert upstream["ReadOnly"]  # the fine-tune's checkpoint is read, never written
    writable = [t for t, m in mounts.items() if not m["ReadOnly"]]
    assert writable == [f"{RUNS}/{down.id}"]
    env = cfg["environment"]
    assert env["BOBKIT_IMAGE"] == "bobkit/classification:latest" and env["BOBKIT_IMAGE_DIGEST"].startswith("sha256:")
    assert env["BOBKIT_DATA"] == DATA and env["BOBKIT_WEIGHTS"] == WEIGHTS


def test_image_overrides():
    assert parse_image_overrides(["classification=my/img:1"]) == {"classification": "my/img:1"}
    for bad in (["classification"], ["nope=x"], ["classification="]):
        with pytest.raises(BadInput):
            parse_image_overrides(bad)


def test_registry_builds_the_docker_executor_with_its_options():
    ex = create("docker", gpus=["0", "1"], images={"classification": "x"}, shm_size="1g", progress=False,
                slurm_partition="ignored")
    assert isinstance(ex, DockerExecutor)
    assert ex.gpus == ["0", "1"] and ex.images == {"classification": "x"} and ex.shm_size == "1g"


def test_default_executor_follows_the_environment(monkeypatch, ood_specs):
    monkeypatch.setenv("BOBKIT_EXECUTOR", "local")
    assert default_executor(list(ood_specs)) == "local"
    monkeypatch.delenv("BOBKIT_EXECUTOR")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert default_executor(list(ood_specs)) == "local"  # no daemon answers

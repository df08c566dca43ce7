"""bobkit doctor: each check's verdict and fix, and exit 3 when something required is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bobkit.doctor import (FAIL, OK, SKIP, WARN, arch_check, check_datasets, check_gpus, diagnose, disk_check,
                           driver_check)
from bobkit.exec.scheduler import Gpu
from bobkit.images import FAMILIES
from bobkit.manifest.loader import load_catalog

H100 = Gpu("0", "NVIDIA H100 80GB HBM3", "GPU-1", 81559, "9.0", "550.54.15")
B200 = Gpu("1", "NVIDIA B200", "GPU-2", 183359, "10.0", "580.82.07")
P100 = Gpu("0", "Tesla P100", "GPU-3", 16280, "6.0", "470.82.01")


def test_driver_against_each_images_cuda():
    cls, det = FAMILIES["classification"], FAMILIES["detection"]
    assert driver_check(det, "550.54.15").verdict == OK
    c = driver_check(cls, "550.54.15")  # CUDA 13 needs a 580 driver
    assert c.verdict == FAIL and "580" in c.fix
    assert driver_check(cls, "580.82.07").verdict == OK


def test_gpu_architecture_against_each_torch_build():
    cls, det = FAMILIES["classification"], FAMILIES["detection"]
    assert arch_check(cls, [H100, B200]).verdict == OK
    c = arch_check(det, [H100, B200])  # torch 2.1.2 has no Blackwell kernels
    assert c.verdict == FAIL and "sm_100" in c.detail
    c = arch_check(cls, [P100])  # CUDA 13 builds dropped Pascal
    assert c.verdict == FAIL and "sm_60" in c.detail
    assert arch_check(det, [P100]).verdict == OK


def test_gpus_line_and_disk(tmp_path):
    assert check_gpus([]).verdict == WARN
    line = check_gpus([H100])
    assert line.verdict == OK and "H100" in line.detail and "sm_90" in line.detail
    assert disk_check(tmp_path / "not" / "yet").verdict in (OK, WARN, FAIL)
    assert "GB free" in disk_check(tmp_path).detail


def test_datasets_present_and_missing(tmp_path):
    catalog = load_catalog(())
    first = next(iter(catalog.datasets.values()))
    target = tmp_path / first.path
    target.mkdir(parents=True)
    (target / "x").write_text("x")
    c = check_datasets(catalog, tmp_path)
    assert c.detail.startswith(f"1/{len(catalog.datasets)}")
    assert first.id not in c.detail.split("missing:")[1]
    assert c.verdict == WARN and "bobkit show" in c.fix


def test_without_a_daemon_docker_fails_and_the_rest_still_reports(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    checks = {c.name: c for c in diagnose(tmp_path, tmp_path, discover=lambda: [H100])}
    assert checks["docker daemon"].verdict == FAIL and "docker.io" in checks["docker daemon"].fix
    assert checks["NVIDIA container runtime"].verdict == SKIP
    assert checks["driver vs classification (CUDA 13.0)"].verdict == FAIL
    assert checks["GPU arch vs detection (torch 2.1.2)"].verdict == OK
    # the disk check still reports; its verdict is this machine's free space, not the test's to fix
    assert checks["disk"].verdict in (OK, WARN, FAIL) and "free at" in checks["disk"].detail


def test_cli_exits_3_when_something_required_is_missing(tmp_path):
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock", BOBKIT_NO_GPU="1",
               BOBKIT_WEIGHTS=str(tmp_path / "w"))
    proc = subprocess.run([sys.executable, "-m", "bobkit", "doctor", "--json", "--data-root", str(tmp_path),
                           "--runs-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 3, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    by_name = {c["name"]: c for c in out["checks"]}
    assert by_name["docker daemon"]["verdict"] == FAIL and by_name["docker daemon"]["fix"]
    assert {"GPUs", "disk", "datasets", "cached weights"} <= set(by_name)
    for c in out["checks"]:
        assert c["verdict"] in (OK, WARN, FAIL, SKIP) and c["detail"]


@pytest.mark.docker
def test_with_a_daemon_it_is_found(tmp_path):
    from bobkit.errors import EnvironmentMissing
    from bobkit.images import docker_client

    try:
        docker_client(timeout=5)
    except EnvironmentMissing as exc:
        pytest.skip(str(exc))
    checks = {c.name: c for c in diagnose(tmp_path, Path(tmp_path), discover=lambda: [])}
    assert checks["docker daemon"].verdict == OK and "Docker" in checks["docker daemon"].detail
    assert checks["NVIDIA container runtime"].verdict in (OK, SKIP)

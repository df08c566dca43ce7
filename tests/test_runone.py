"""`bobkit run-one` as executors call it: a fresh process, exit codes, status, provenance, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bobkit.exec.base import prepare
from tests._classification_support import cli_argv, make_spec, mini_catalog

PROVENANCE_KEYS = {"bobkit", "git_commit", "image", "image_digest", "python", "torch", "cuda", "timm", "mmdet",
                   "device", "gpu_name", "seed", "started", "finished", "host"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return mini_catalog(tmp_path_factory.mktemp("manifests"))


def run_one(spec_path: Path, *extra: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(sys.executable, "run-one", str(spec_path), *extra), capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def summary_rows(run_path: Path) -> list[dict]:
    with open(run_path / "summary.csv") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_run_one_writes_metrics_with_provenance(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", epochs=1)
    run = prepare(spec, tmp_path / "runs")
    proc = run_one(run.spec_path, "--data-root", str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    record = json.loads(run.metrics_path.read_text())
    assert {k: record[k] for k in ("run_id", "experiment", "backbone", "dataset", "recipe", "task", "smoke")} == {
        "run_id": spec.id, "experiment": "clsmini", "backbone": "tiny_convnext", "dataset": "imagenet",
        "recipe": "t_ft", "task": "classification", "smoke": True}
    assert PROVENANCE_KEYS <= set(record["provenance"])
    assert record["provenance"]["device"] == "cpu" and record["provenance"]["seed"] == spec.seed
    optimization = record["provenance"]["optimization"]  # what the optimizer saw, recorded by the runner
    assert (optimization["effective_lr"], optimization["effective_batch"], optimization["accumulation"]) == (2e-3, 16, 2)
    assert set(record["metrics"]) >= {"top1", "top5"}
    assert json.loads(run.status_path.read_text())["state"] == "done"
    log = run.log_path.read_text()
    assert "epoch 1/1" in log and "done: top1" in log
    assert "epoch 1/1" in proc.stdout  # to stdout as well
    again = run_one(run.spec_path)
    assert again.returncode == 0 and "already finished" in again.stdout


def test_an_edited_spec_is_refused(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    run = prepare(spec, tmp_path / "runs")
    data = json.loads(run.spec_path.read_text())
    data["hparams"]["lr"] = 1.0
    run.spec_path.write_text(json.dumps(data))
    proc = run_one(run.spec_path)
    assert proc.returncode == 2
    assert "edited after planning" in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_dataset_is_exit_3_with_the_path_and_download_page(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "flowers102", smoke=False)
    run = prepare(spec, tmp_path / "runs")
    proc = run_one(run.spec_path, "--data-root", str(tmp_path / "empty"))
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "empty" / "flowers102") in line and "robots.ox.ac.uk" in line
    assert "Traceback" not in proc.stderr + proc.stdout
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "failed" and status["exit_code"] == 3 and "flowers102" in status["error"]
    assert not run.metrics_path.exists()


def test_a_run_waits_for_its_upstream(catalog, tmp_path):
    from bobkit.plan import RunSpec, run_id

    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    body = spec.model_dump(mode="json", exclude={"id"})
    body["depends_on"] = ["0123456789abcdef"]
    dependent = RunSpec(id=run_id(body), **body)
    run = prepare(dependent, tmp_path / "runs")
    proc = run_one(run.spec_path)
    assert proc.returncode == 3 and "0123456789abcdef" in proc.stderr and "has not finished" in proc.stderr


def test_resume_after_kill_matches_the_uninterrupted_run(catalog, tmp_path):
    """Full augmentation (RandAugment, mixup/cutmix, erasing, drop path): the RNG states must resume too."""
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", epochs=2, warmup_epochs=1)
    straight = prepare(spec, tmp_path / "straight")
    assert run_one(straight.spec_path).returncode == 0

    resumed = prepare(spec, tmp_path / "resumed")
    killed = run_one(resumed.spec_path, env={"BOBKIT_TEST_KILL_AFTER_EPOCH": "1"})
    assert killed.returncode == -signal.SIGKILL
    assert not resumed.metrics_path.exists() and (resumed.checkpoints / "last.pt").is_file()
    assert json.loads(resumed.status_path.read_text())["state"] == "running"  # as a hard kill leaves it
    assert resumed.live_status() == "stale"  # its process is gone: `bobkit status` says so
    shown = subprocess.run(cli_argv(sys.executable, "status", "--runs-dir", str(tmp_path / "resumed"), "--json"),
                           capture_output=True, text=True, timeout=300)
    (problem,) = json.loads(shown.stdout)["problems"]
    dead_pid = json.loads(resumed.status_path.read_text())["pid"]
    assert problem["state"] == "stale" and f"process {dead_pid}, which is gone" in problem["error"]
    again = run_one(resumed.spec_path)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming from" in again.stdout

    a = json.loads(straight.metrics_path.read_text())
    b = json.loads(resumed.metrics_path.read_text())
    assert a["metrics"] == b["metrics"]  # exactly, in deterministic mode
    assert summary_rows(straight.path) == summary_rows(resumed.path)
    assert b["provenance"]["training"]["resumed_from_epoch"] == 1


def test_live_status_sees_only_processes_of_this_host(tmp_path):
    import socket

    from bobkit.results import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.set_status("running", pid=os.getpid(), host=socket.gethostname())
    assert run.live_status() == "running"
    run.set_status("running", pid=os.getpid(), host="another-node")
    assert run.live_status() == "running"  # another host's (or a container's) process cannot be checked
    run.set_status("interrupted", pid=os.getpid(), host=socket.gethostname())
    assert run.live_status() == "interrupted"


def test_sigterm_marks_the_run_interrupted_and_keeps_checkpoints(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", epochs=30)
    run = prepare(spec, tmp_path / "runs")
    proc = subprocess.Popen(cli_argv(sys.executable, "run-one", str(run.spec_path)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 400
    while time.time() < deadline:
        if (run.checkpoints / "last.pt").is_file():
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    status = json.loads(run.status_path.read_text())
    assert status["state"] == "interrupted" and status["signal"] == "SIGTERM"
    assert (run.checkpoints / "last.pt").is_file() and not run.metrics_path.exists()
    assert "resume" in out


def test_torchrun_runs_one_spec_on_two_cpu_processes(catalog, tmp_path):
    """DDP on gloo: two ranks share the effective batch; only rank 0 writes the results."""
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet", epochs=1, batch_size=16, per_gpu_batch=8)
    run = prepare(spec, tmp_path / "runs")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bobkit", "run-one", str(run.spec_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads(run.metrics_path.read_text())
    assert record["provenance"]["runtime"]["world_size"] == 2
    assert "1 x 8 per GPU x 2 GPU(s) = batch 16" in run.log_path.read_text()
    assert run.log_path.read_text().count("done: top1") == 1
    # both ranks read the synthetic set, one wrote it (the other waited for it)
    from bobkit.data.synthetic import WRITES_LOG

    writes = (run.path / "synthetic" / WRITES_LOG).read_text().splitlines()
    assert len(writes) == 1 and writes[0].startswith("imagenet "), writes

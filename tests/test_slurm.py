"""The Slurm executor against a real Slurm: `.ci/setup-slurm.sh` starts a one-node cluster here.

Every test submits real job arrays with sbatch (through submitit), and each array task runs the
real `bobkit run-one` on a smoke RunSpec (tiny synthetic data, untrained backbone, CPU). Without
a cluster the tests skip with the reason; with BOBKIT_REQUIRE_SERVICES=1 (CI) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bobkit.results import RunDir, finished_results

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
# Two tiny fine-tunes (timm's test ConvNeXt, 0.3 M parameters) on the built-in datasets' synthetic
# stand-ins: the classification tests' mini manifests plus this experiment.
EXPERIMENT = """
experiments:
  - id: slurmmini
    title: Slurm executor test
    description: two tiny fine-tunes as one job array
    grid:
      - {recipe: t_ft, backbones: [tiny_convnext], datasets: [cifar100, imagenet]}
    table:
      kind: cells
      settings:
        - {id: ft, title: Fine-tune, recipes: [t_ft], datasets: [cifar100, imagenet], metric: top1}
    source: test fixture
    confidence: bobkit
"""


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "no Slurm here (sbatch not found): run `bash .ci/setup-slurm.sh` as root"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if "UP" not in ping.stdout:
        return f"slurmctld does not answer (`scontrol ping`: {ping.stdout.strip() or ping.stderr.strip()})"
    nodes = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=30)
    if not any(s.strip().rstrip("*") in ("idle", "mix", "alloc") for s in nodes.stdout.split()):
        return f"no Slurm node takes jobs (sinfo states: {nodes.stdout.split()})"
    return None


def _need(problem: str | None) -> None:
    if problem:
        if os.environ.get("BOBKIT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"service required in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def slurm() -> None:
    _need(_slurm_problem())


@pytest.fixture(autouse=True)
def cancel_leftovers(tmp_path):
    """A failed assertion must not leave this test's jobs running into the next test."""
    yield
    jobs = {json.loads(p.read_text()).get("job_id") for p in tmp_path.glob("**/slurm.json")} - {None}
    scancel(*sorted(jobs))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> list[Path]:
    from tests._classification_support import write_mini_manifests

    root = tmp_path_factory.mktemp("manifests")
    mini = write_mini_manifests(root / "mini")
    extra = root / "slurm"
    extra.mkdir()
    (extra / "experiments.yaml").write_text(EXPERIMENT)
    return [mini, extra]


@pytest.fixture(scope="module")
def catalog(manifests):
    from bobkit.manifest.loader import load_catalog

    return load_catalog(manifests)


def smoke_specs(catalog, datasets: list[str]):
    from bobkit.plan import plan

    return plan(catalog, "slurmmini", smoke=True, datasets=datasets)


def changed(spec, **body_update):
    """The same spec with some fields changed and its id recomputed (as plan() would)."""
    from bobkit.plan import RunSpec, run_id

    body = spec.model_dump(mode="json", exclude={"id"})
    for key, value in body_update.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return RunSpec(id=run_id(body), **body)


def config(**kw):
    from bobkit.slurm_config import SlurmConfig

    base = dict(container="none", cpus_per_gpu=1, mem_per_gpu_gb=2, min_time_min=20, poll_s=2,
                array_parallelism=2, signal_delay_s=60)
    return SlurmConfig(**{**base, **kw})


def scancel(*jobs: str) -> None:
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, check=False)


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "slurm.json").read_text())


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def wait_until(predicate, timeout: float, what, every: float = 1.0):
    """`what` says what was awaited; a callable is asked only on a timeout (for a diagnosis then)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bobkit", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


# ---------------------------------------------------------------- a smoke experiment as one array


def fake_apptainer(bin_dir: Path, log: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "apptainer"
    path.write_text(f"""#!/bin/sh
echo "$@" >> {log}
[ "$1" = exec ] || exit 64
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --nv|--cleanenv|--no-home) shift ;;
    --bind) shift 2 ;;
    --env) export "$2"; shift 2 ;;
    *) break ;;
  esac
done
[ -f "$1" ] || {{ echo "no SIF at $1" >&2; exit 255; }}
shift
[ "$1" = bobkit ] && shift && exec {sys.executable} -m bobkit "$@"
exec "$@"
""")
    path.chmod(0o755)
    return path


def test_reproduce_submits_one_array_and_results_are_read_back(slurm, catalog, manifests, tmp_path):
    from bobkit.exec.sif import file_digest

    specs = smoke_specs(catalog, ["cifar100", "imagenet"])
    assert len(specs) == 2 and {s.image_family for s in specs} == {"classification"}
    runs, data = tmp_path / "runs", tmp_path / "data"
    # Apptainer cannot be installed here: a stand-in `apptainer` records its arguments, applies --env
    # and runs the command on the host, so the rest (the SIF, its digest in provenance) is real.
    sif_dir = tmp_path / "sif"
    sif_dir.mkdir()
    (sif_dir / "classification.sif").write_bytes(b"a SIF stand-in" * 100)
    apptainer = fake_apptainer(tmp_path / "bin", tmp_path / "apptainer.log")
    cfg_file = tmp_path / "slurm.toml"
    cfg_file.write_text(f'[slurm]\ncontainer = "apptainer"\nbinary = "{apptainer}"\nsif_dir = "{sif_dir}"\n'
                        'cpus_per_gpu = 1\nmem_per_gpu_gb = 2\nmin_time_min = 20\npoll_s = 2\npartition = "debug"\n')
    args = ["reproduce", "slurmmini", "--smoke", "--executor", "slurm", "--slurm-config", str(cfg_file),
            "--runs-dir", str(runs), "--data-root", str(data), "-m", str(manifests[0]), "-m", str(manifests[1])]
    proc = cli(*args, "--slurm-wait")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("submitted 2 classification run(s) as job") == 1  # one array, one sbatch

    rows = finished_results(runs, "slurmmini")
    assert sorted(r["dataset"] for r in rows) == ["cifar100", "imagenet"]
    for r in rows:
        assert r["metrics"] and all(0.0 <= v <= 1.0 for v in r["metrics"].values())
        run_dir = runs / r["run_id"]
        rec = record(run_dir)
        array, task = rec["job_id"].split("_")
        assert array.isdigit() and task in ("0", "1") and rec["attempt"] == 1
        assert status(run_dir)["state"] == "done"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["provenance"]["host"] and metrics["smoke"] is True
        assert metrics["provenance"]["image"] == str(sif_dir / "classification.sif")
        assert metrics["provenance"]["image_digest"] == file_digest(sif_dir / "classification.sif")
        assert rec["command"].startswith(f"{apptainer} exec --nv --cleanenv --no-home --bind {runs}:{runs} ")
    assert len({record(runs / r["run_id"])["job_id"].split("_")[0] for r in rows}) == 1
    assert (tmp_path / "apptainer.log").read_text().count("exec --nv") == 2

    exported = tmp_path / "results.json"
    proc = cli("results", "export", str(runs), "--out", str(exported), "--experiment", "slurmmini")
    assert proc.returncode == 0, proc.stderr
    assert "from 2 runs" in proc.stdout

    # everything is finished: a second reproduce submits nothing
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "submitted" not in proc.stdout and "2 skipped" in proc.stdout
    proc = cli("status", "slurmmini", "--runs-dir", str(runs), "--json")
    assert json.loads(proc.stdout)["experiments"]["slurmmini"] == {"done": 2}


# ---------------------------------------------------------------- failures are reported, not lost


def test_failed_run_is_reported_then_resubmitted_once(slurm, catalog, tmp_path):
    from bobkit.exec.slurm import SlurmExecutor, queue_summary, settled, queue_states
    from bobkit.results import experiment_runs

    good = smoke_specs(catalog, ["cifar100"])[0]
    # the same run on real (absent) data instead of synthetic data: run-one exits 3 (environment missing)
    bad = changed(good, smoke=False, dataset_spec={"synthetic": False})
    runs, data = tmp_path / "runs", tmp_path / "data"
    data.mkdir()
    ex = SlurmExecutor(config(), wait=True, wait_timeout_s=600, progress=False)
    report = ex.execute([bad], runs, data)
    assert ex.sbatch_calls == 1
    [outcome] = report.outcomes
    run_dir = runs / bad.id
    assert outcome.state == "failed", outcome
    assert str(run_dir / "log.txt") in outcome.message and "slurm log" in outcome.message
    st = status(run_dir)
    assert st["state"] == "failed" and st["exit_code"] == 3 and st["error"]
    assert "cifar100" in (run_dir / "log.txt").read_text()
    first_job = record(run_dir)["job_id"]

    # reproduce again (jobs held so they stay queued): the failed run is submitted again ...
    held = config(sbatch={"hold": True})
    ex2 = SlurmExecutor(held, progress=False)
    report2 = ex2.execute([bad], runs, data)
    second_job = record(run_dir)["job_id"]
    try:
        assert ex2.sbatch_calls == 1 and [o.state for o in report2.outcomes] == ["queued"]
        assert second_job != first_job and status(run_dir)["state"] == "queued"
        # ... and once it is in the queue, not again
        ex3 = SlurmExecutor(held, progress=False)
        report3 = ex3.execute([bad], runs, data)
        assert ex3.sbatch_calls == 0 and second_job in report3.outcomes[0].message
        summary = queue_summary(experiment_runs(runs))
        assert summary["counts"] == {"PENDING": 1} and summary["runs"][0]["job_id"] == second_job
        assert summary["runs"][0]["experiment"] == "slurmmini"
        proc = cli("status", "--runs-dir", str(runs))
        assert "slurm: 1 pending" in proc.stdout and "queued" in proc.stdout
        # a squeue snapshot that misses a job slurmctld still has (a requeue in between) loses no run
        assert settled(RunDir(run_dir), {}) is None and status(run_dir)["state"] == "queued"
    finally:
        scancel(second_job)
    # a job that leaves the queue unfinished is marked failed, so `status` and `reproduce` see it
    wait_until(lambda: queue_states().get(second_job) in (None, "CANCELLED"), 60, "the cancelled job")
    outcome = settled(RunDir(run_dir), queue_states())
    assert outcome.state == "failed" and second_job in outcome.message and "(CANCELLED)" in outcome.message
    assert status(run_dir)["state"] == "failed"


# ---------------------------------------------------------------- preemption: requeue and resume


def test_usr2_requeues_and_the_run_resumes_from_its_checkpoint(slurm, catalog, tmp_path):
    from bobkit.exec.slurm import SlurmExecutor

    # enough epochs that a fast machine cannot finish them between the first checkpoint and the signal
    epochs = 12
    spec = changed(smoke_specs(catalog, ["cifar100"])[0], hparams={"epochs": epochs})
    runs, data = tmp_path / "runs", tmp_path / "data"
    ex = SlurmExecutor(config(), wait=True, wait_timeout_s=600, progress=False)
    report = SlurmExecutor(config(), progress=False).execute([spec], runs, data)
    assert [o.state for o in report.outcomes] == ["queued"]
    run_dir = runs / spec.id
    job = record(run_dir)["job_id"]
    try:
        wait_until(lambda: (run_dir / "checkpoints" / "last.pt").is_file(), 600, "the first epoch's checkpoint",
                   every=0.5)
        assert not (run_dir / "metrics.json").exists(), "the run finished before it could be preempted"
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        wait_until(lambda: record(run_dir).get("requeues") == 1, 120,
                   lambda: f"the task to checkpoint and requeue: {_diagnosis(run_dir, job)}")
        # Slurm holds the requeued job until its old credential expires (AuthInfo cred_expire: 10 s on
        # the CI cluster, 120 s by default). The hold is not released early: a start inside it is refused
        # by slurmd ("Job credential revoked") and the job ends FAILED without running.
        outcomes = ex.wait_for({spec.id: RunDir(run_dir)}, {spec.id: job})
        assert [o.state for o in outcomes] == ["done"], f"{outcomes}\n{_diagnosis(run_dir, job)}"
    finally:
        scancel(job)
    rec = record(run_dir)
    assert rec["job_id"] == job and rec["requeues"] == 1 and rec["attempt"] == 2
    log = (run_dir / "log.txt").read_text()
    assert "resuming from" in log, log[-3000:]
    resumed_after = int(log.split("resuming from")[1].split("after epoch")[1].split()[0])
    assert 1 <= resumed_after < epochs
    assert status(run_dir)["state"] == "done"


def _job_fields(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


SLURM_DAEMON_LOGS = (Path("/var/log/slurm/slurmctld.log"), Path("/var/log/slurm/slurmd.log"))  # .ci/setup-slurm.sh


def _diagnosis(run_dir: Path, job: str) -> str:
    """What a failure here needs to be understood: Slurm's view of the job, the run's log, the job's own
    submitit log (every incarnation appends to it), and what the Slurm daemons logged about the job
    (a restart that never launched leaves its reason only there)."""
    fields = _job_fields(job)
    state = {k: fields.get(k) for k in ("JobState", "Reason", "Restarts", "ExitCode", "StartTime", "EndTime")}
    logs = []
    for path in (run_dir / "log.txt", Path(record(run_dir).get("slurm_log", "-"))):
        text = path.read_text(errors="replace") if path.is_file() else "(missing)"
        logs.append(f"--- {path.name}\n{text[-2500:]}")
    for path in SLURM_DAEMON_LOGS:
        if path.is_file():
            mine = [line for line in path.read_text(errors="replace").splitlines()
                    if f"JobId={job} " in line or line.endswith(f"JobId={job}") or f"Job {job} " in line
                    or f"[{job}." in line or f"JOB {job} " in line]
            logs.append(f"--- {path.name} (lines about job {job})\n" + "\n".join(mine[-40:]))
    return f"scontrol: {state}\nstatus: {status(run_dir)}\n" + "\n".join(logs)


# ---------------------------------------------------------------- inside the project's image, via Docker


BASE = os.environ.get("BOBKIT_BASE_IMAGE", "bobkit-local/base:bookworm")
WHEELHOUSE = Path(os.environ.get("BOBKIT_WHEELHOUSE", "/var/cache/bobkit/wheelhouse"))
TEST_TAG = os.environ.get("BOBKIT_TEST_IMAGE", "bobkit-test/classification:ci")
DOCKER_SETUP = "run .ci/setup-docker.sh (as root) to start dockerd and make the local base image and wheelhouse"


@pytest.fixture(scope="module")
def docker_image() -> str:
    """The project's classification image, built from this checkout as the Docker tests build it (the
    same tag, so the layers are shared and only bobkit's own source layer is rebuilt)."""
    from bobkit.errors import EnvironmentMissing
    from bobkit.images import build, docker_client

    try:
        client = docker_client(timeout=3600)
    except EnvironmentMissing as exc:
        _need(f"{exc}; {DOCKER_SETUP}")
    if subprocess.run(["docker", "image", "inspect", BASE], capture_output=True).returncode != 0:
        _need(f"no local base image {BASE}: {DOCKER_SETUP}")
    if not any(WHEELHOUSE.glob("torch-*.whl")):
        _need(f"no wheelhouse at {WHEELHOUSE}: {DOCKER_SETUP}")
    build("classification", base=BASE, wheelhouse=WHEELHOUSE, tag=TEST_TAG, client=client)
    return TEST_TAG


def test_task_runs_inside_the_docker_image_with_its_allocated_gpus(slurm, catalog, docker_image, tmp_path):
    from bobkit.exec.slurm import SlurmExecutor

    ref = docker_image
    image_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True,
                              text=True, check=True).stdout.strip()
    spec = smoke_specs(catalog, ["cifar100"])[0]
    runs, data = tmp_path / "runs", tmp_path / "data"
    data.mkdir()
    (tmp_path / "weights").mkdir()
    # GPU ids reach the container as NVIDIA_VISIBLE_DEVICES (the mode for nvidia as the daemon's default
    # runtime); this Docker has no NVIDIA runtime, so the ids are passed on and the run uses the CPU.
    cfg = config(container="docker", docker_gpus="env", network="none", images={"classification": ref},
                 weights_dir=str(tmp_path / "weights"))
    ex = SlurmExecutor(cfg, wait=True, wait_timeout_s=600, progress=False)
    report = ex.execute([spec], runs, data)
    run_dir = runs / spec.id
    assert [o.state for o in report.outcomes] == ["done"], (report.outcomes, (run_dir / "log.txt").read_text()[-3000:])
    rec = record(run_dir)
    allocated = rec["gpus"].split(",")
    assert len(allocated) == spec.gpus == 1 and allocated[0].isdigit()  # the id Slurm gave this task
    assert rec["command"].startswith("docker run --rm --init --name bobkit-" + spec.id)
    assert f"NVIDIA_VISIBLE_DEVICES={rec['gpus']}" in rec["command"]
    assert f"BOBKIT_SLURM_GPUS={rec['gpus']}" in rec["command"]
    prov = json.loads((run_dir / "metrics.json").read_text())["provenance"]
    assert prov["image"] == ref and prov["image_digest"] == image_id  # it ran in that image
    assert prov["host"] != os.uname().nodename  # ... in a container, not on the host
    # `docker run --rm` removes the container as the task ends: nothing is left behind
    wait_until(lambda: not subprocess.run(["docker", "ps", "-aq", "--filter", f"name=bobkit-{spec.id}"],
                                          capture_output=True, text=True).stdout.strip(), 60, "the container's removal")

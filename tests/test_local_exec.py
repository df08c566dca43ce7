"""The local executor's scheduling, with a stand-in child (no training) so every case is fast:
dependency order, skipping, failures and their dependents, missing environments, locks, GPUs,
and Ctrl-C/SIGTERM. The real `bobkit run-one` child is covered by test_reproduce.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bobkit.exec import EXECUTORS, create, executor_class
from bobkit.exec.base import prepare
from bobkit.exec.local import LocalExecutor, run_one_command
from bobkit.plan import RunSpec, run_id
from tests._classification_support import make_spec, mini_catalog
from tests.conftest import default_sigint

# A child that behaves like `bobkit run-one` (status, metrics.json, exit codes) by a plan in the spec's folder.
FAKE_CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    run = Path(sys.argv[1]).parent
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").exists() else {}
    journal = Path(os.environ["FAKE_JOURNAL"])
    def note(event):
        with open(journal, "a") as fh:
            fh.write(json.dumps({"run": run.name, "event": event, "t": time.time(),
                                 "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
    def status(state, **kw):
        (run / "status.json").write_text(json.dumps({"state": state, **kw}))
    def on_term(signum, frame):
        status("interrupted", signal="SIGTERM"); note("interrupted"); sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    note("start"); status("running")
    print("epoch 1/1 training", flush=True)
    time.sleep(plan.get("sleep", 0))
    if plan.get("exit"):
        status("failed", error=plan.get("error", "boom"), exit_code=plan["exit"]); note("end")
        print(plan.get("error", "boom"), file=sys.stderr); sys.exit(plan["exit"])
    (run / "metrics.json").write_text(json.dumps({"metrics": {"top1": 0.5}}))
    status("done"); note("end")
""")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return mini_catalog(tmp_path_factory.mktemp("manifests"))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE_CHILD)
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv("FAKE_JOURNAL", str(journal))

    def command(python, spec, run, data_root, nproc):
        return [sys.executable, str(script), str(run.spec_path)]

    def events():
        if not journal.exists():
            return []
        return [json.loads(line) for line in journal.read_text().splitlines()]

    return command, events


def spec_with(base: RunSpec, **changes) -> RunSpec:
    body = base.model_dump(mode="json", exclude={"id"})
    body.update(changes)
    return RunSpec(id=run_id(body), **body)


def plan_file(runs: Path, spec: RunSpec, **plan) -> None:
    run = prepare(spec, runs)
    (run.path / "plan.json").write_text(json.dumps(plan))


def executor(command, **kw) -> LocalExecutor:
    return LocalExecutor(progress=False, command=command, **kw)


def test_registry_builds_the_local_executor_with_its_options():
    assert EXECUTORS["local"] == "bobkit.exec.local:LocalExecutor"
    ex = create("local", gpus=["0", "1"], progress=False, unknown_option=3)
    assert isinstance(ex, executor_class("local")) and ex.gpus == ["0", "1"]
    from bobkit.errors import BadInput

    with pytest.raises(BadInput, match="unknown executor 'nope'"):
        create("nope")


def test_default_command_is_run_one_and_torchrun_for_several_gpus(catalog, tmp_path):
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    run = prepare(spec, tmp_path)
    assert run_one_command("py", spec, run, tmp_path, 1) == ["py", "-m", "bobkit", "run-one", str(run.spec_path),
                                                            "--data-root", str(tmp_path)]
    multi = run_one_command("py", spec, run, tmp_path, 4)
    assert multi[:5] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]


def test_upstream_runs_first_and_finished_runs_are_skipped(catalog, tmp_path, fake):
    command, events = fake
    up = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    down = spec_with(make_spec(catalog, "t_lp", "tiny_convnext", "imagenet"), depends_on=[up.id])
    runs = tmp_path / "runs"
    report = executor(command).execute([down, up], runs, tmp_path / "data")
    assert [o.state for o in report.outcomes] == ["done", "done"]
    starts = [e["run"] for e in events() if e["event"] == "start"]
    assert starts == [up.id, down.id]
    log = (runs / up.id / "log.txt").read_text()
    assert "==> " in log and "epoch 1/1 training" in log  # the child's output streams into log.txt
    again = executor(command).execute([down, up], runs, tmp_path / "data")
    assert [o.state for o in again.outcomes] == ["skipped", "skipped"]
    assert len([e for e in events() if e["event"] == "start"]) == 2


def test_a_failed_run_is_reported_and_its_dependents_do_not_start(catalog, tmp_path, fake):
    command, events = fake
    runs = tmp_path / "runs"
    up = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    down = spec_with(make_spec(catalog, "t_lp", "tiny_convnext", "imagenet"), depends_on=[up.id])
    other = make_spec(catalog, "t_ft", "tiny_vit", "imagenet")
    plan_file(runs, up, exit=4, error="RuntimeError: the loss is nan")
    report = executor(command).execute([up, down, other], runs, tmp_path / "data")
    by_id = {o.run_id: o for o in report.outcomes}
    assert by_id[up.id].state == "failed" and "loss is nan" in by_id[up.id].message
    assert by_id[down.id].state == "failed" and up.id in by_id[down.id].message
    assert by_id[other.id].state == "done"  # the others still run
    assert down.id not in {e["run"] for e in events()}
    status = json.loads((runs / down.id / "status.json").read_text())
    assert status["state"] == "failed" and up.id in status["error"]


def test_exit_3_is_environment_missing(catalog, tmp_path, fake):
    command, _ = fake
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    plan_file(runs, spec, exit=3, error="dataset 'imagenet': /data/imagenet is missing")
    report = executor(command).execute([spec], runs, tmp_path / "data")
    assert report.outcomes[0].state == "missing" and "/data/imagenet" in report.outcomes[0].message


def test_a_child_killed_hard_is_failed_not_running(catalog, tmp_path):
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")

    def command(python, spec, run, data_root, nproc):
        return [sys.executable, "-c", "import os, signal; print('about to die', flush=True); "
                                      "os.kill(os.getpid(), signal.SIGKILL)"]

    report = executor(command).execute([spec], runs, tmp_path)
    out = report.outcomes[0]
    assert out.state == "failed" and "signal 9" in out.message and "about to die" in out.message
    assert json.loads((runs / spec.id / "status.json").read_text())["state"] == "failed"


def test_detection_runs_without_mmdet_are_environment_missing(catalog, tmp_path, fake, monkeypatch):
    command, events = fake
    det = spec_with(make_spec(catalog, "t_ft", "tiny_convnext", "imagenet"), image_family="detection",
                    image="bobkit/detection")
    runs = tmp_path / "runs"
    monkeypatch.delenv("BOBKIT_DETECTION_PYTHON", raising=False)
    monkeypatch.setattr("bobkit.exec.local.CHECKOUT_DETECTION_PYTHON", tmp_path / "no-venv-det" / "python")
    import importlib.util

    import bobkit.exec.local as local

    monkeypatch.setattr(local, "CHECKOUT_DETECTION_PYTHON", tmp_path / "no-venv-det" / "python")

    if importlib.util.find_spec("mmdet") is not None:
        pytest.skip("this Python has mmdet")
    report = executor(command).execute([det], runs, tmp_path)
    out = report.outcomes[0]
    assert out.state == "missing"
    assert "BOBKIT_DETECTION_PYTHON is not set" in out.message and "mmdet" in out.message
    assert not events()
    monkeypatch.setenv("BOBKIT_DETECTION_PYTHON", str(tmp_path / "no" / "python"))
    report = executor(command).execute([det], runs, tmp_path)
    assert report.outcomes[0].state == "missing" and str(tmp_path / "no" / "python") in report.outcomes[0].message


def test_a_run_locked_by_another_process_is_left_alone(catalog, tmp_path, fake):
    from filelock import FileLock

    command, events = fake
    runs = tmp_path / "runs"
    spec = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    run = prepare(spec, runs)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock
        with FileLock({str(run.path / '.lock')!r}):
            print('locked', flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = executor(command).execute([spec], runs, tmp_path)
        assert report.outcomes[0].state == "busy" and not events()
    finally:
        holder.kill()
        holder.wait()
    assert FileLock(str(run.path / ".lock")).acquire(timeout=5)


def test_one_run_per_gpu_at_a_time(catalog, tmp_path, fake):
    command, events = fake
    runs = tmp_path / "runs"
    specs = [make_spec(catalog, "t_ft", b, d) for b in ("tiny_convnext", "tiny_vit") for d in ("imagenet", "cifar100")]
    for s in specs:
        plan_file(runs, s, sleep=1.5)
    report = executor(command, gpus=["0", "1"]).execute(specs, runs, tmp_path)
    assert [o.state for o in report.outcomes] == ["done"] * 4
    evs = events()
    assert {e["gpus"] for e in evs} == {"0", "1"}
    spans = {}
    for e in evs:
        spans.setdefault(e["run"], {})[e["event"]] = e
    # never two runs on one GPU at once; the two GPUs overlap
    for g in ("0", "1"):
        mine = sorted((s["start"]["t"], s["end"]["t"]) for s in spans.values() if s["start"]["gpus"] == g)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(mine, mine[1:]))
    starts = sorted(s["start"]["t"] for s in spans.values())
    ends = sorted(s["end"]["t"] for s in spans.values())
    assert starts[1] < ends[0]


def test_jobs_run_cpu_runs_side_by_side_without_pinning_devices(catalog, tmp_path, fake):
    command, events = fake
    runs = tmp_path / "runs"
    specs = [make_spec(catalog, "t_ft", b, "imagenet") for b in ("tiny_convnext", "tiny_vit")]
    for s in specs:
        plan_file(runs, s, sleep=1.5)
    report = executor(command, jobs=2).execute(specs, runs, tmp_path)
    assert [o.state for o in report.outcomes] == ["done", "done"]
    evs = events()
    assert {e["gpus"] for e in evs} == {os.environ.get("CUDA_VISIBLE_DEVICES")}
    starts = sorted(e["t"] for e in evs if e["event"] == "start")
    ends = sorted(e["t"] for e in evs if e["event"] == "end")
    assert starts[1] < ends[0]


def test_a_run_needing_more_gpus_than_given_fails_clearly(catalog, tmp_path, fake):
    command, _ = fake
    spec = spec_with(make_spec(catalog, "t_ft", "tiny_convnext", "imagenet"), gpus=4)
    report = executor(command, gpus=["0"]).execute([spec], tmp_path / "runs", tmp_path)
    assert report.outcomes[0].state == "failed" and "needs 4 GPUs" in report.outcomes[0].message


DRIVER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from bobkit.exec.local import LocalExecutor, ExecutionInterrupted
    from bobkit.plan import RunSpec
    specs = [RunSpec.model_validate(json.loads(Path(p).read_text())) for p in sys.argv[1:]]
    script = {script!r}
    ex = LocalExecutor(progress=False, command=lambda py, s, r, d, n: [sys.executable, script, str(r.spec_path)])
    try:
        ex.execute(specs, Path({runs!r}), Path("."))
        print(json.dumps({{"interrupted": False}}))
    except ExecutionInterrupted as exc:
        print(json.dumps({{"interrupted": True, "states": [o.state for o in exc.report.outcomes]}}), flush=True)
        sys.exit(exc.exit_code)
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_executor_interrupts_its_child(catalog, tmp_path, fake, signum):
    command, events = fake
    runs = tmp_path / "runs"
    first = make_spec(catalog, "t_ft", "tiny_convnext", "imagenet")
    second = make_spec(catalog, "t_ft", "tiny_vit", "imagenet")
    for s in (first, second):
        plan_file(runs, s, sleep=60)
    script = Path(command("", first, prepare(first, runs), "", 1)[1])
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(Path(__file__).resolve().parents[1]), script=str(script), runs=str(runs)))
    proc = subprocess.Popen([sys.executable, str(driver), str(prepare(first, runs).spec_path),
                             str(prepare(second, runs).spec_path)], stdout=subprocess.PIPE, text=True,
                            env=os.environ.copy(), preexec_fn=default_sigint)
    deadline = time.time() + 120
    while not any(e["event"] == "start" for e in events()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"interrupted": True, "states": ["interrupted"]}
    status = json.loads((runs / first.id / "status.json").read_text())
    assert status["state"] == "interrupted"
    assert [e["run"] for e in events() if e["event"] == "start"] == [first.id]  # the second never started

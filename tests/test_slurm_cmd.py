"""The Slurm executor's pure parts: each runtime's exact command line, the config file, time limits,
grouping into arrays, and the SIF sidecar. No Slurm needed (tests/test_slurm.py runs a real one)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from bobkit.errors import BadInput, EnvironmentMissing
from bobkit.exec.container_cmd import (Launch, Mount, allocated_gpus, command_for, remove_argv, shell_line,
                                       stop_argv)
from bobkit.slurm_config import SlurmConfig, load_slurm_config, parse_slurm_time

SPEC = Path("/shared/runs/table3/abc123/spec.json")
DATA = Path("/shared/data")


def launch(runtime: str, image: str = "", **kw) -> Launch:
    return Launch(runtime=runtime, spec_path=SPEC, data_root=DATA, image=image,
                  mounts=(Mount(Path("/shared/runs")), Mount(DATA, read_only=True), Mount(Path("/w"))),
                  env=(("BOBKIT_DATA", "/shared/data"), ("BOBKIT_IMAGE", "img"),
                       ("BOBKIT_IMAGE_DIGEST", "sha256:ff")),
                  name="bobkit-abc123", **kw)


SLURM_ENV = {"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/usr/bin"}
RUN_ONE = ["bobkit", "run-one", str(SPEC), "--data-root", str(DATA)]


def test_apptainer_command_line():
    argv, _ = command_for(launch("apptainer", "/sif/classification.sif"), SLURM_ENV)
    assert argv == [
        "apptainer", "exec", "--nv", "--cleanenv", "--no-home",
        "--bind", "/shared/runs:/shared/runs", "--bind", "/shared/data:/shared/data:ro", "--bind", "/w:/w",
        "--env", "BOBKIT_DATA=/shared/data", "--env", "BOBKIT_IMAGE=img", "--env", "BOBKIT_IMAGE_DIGEST=sha256:ff",
        "--env", "CUDA_VISIBLE_DEVICES=2,3",
        "/sif/classification.sif", *RUN_ONE,
    ]


def test_apptainer_with_singularity_binary_and_site_flags():
    argv, _ = command_for(launch("apptainer", "/sif/c.sif", binary="singularity",
                                 extra_args=("--bind", "/scratch")), {})
    assert argv[0] == "singularity"
    assert "CUDA_VISIBLE_DEVICES" not in " ".join(argv)  # a task without GPUs passes none
    assert argv[-8:] == ["--bind", "/scratch", "/sif/c.sif", *RUN_ONE]


def test_pyxis_command_line():
    argv, env = command_for(launch("pyxis", "registry.example#bobkit/classification:0.1"), SLURM_ENV)
    assert argv == [
        "srun", "--ntasks=1", "--overlap", "--container-image=registry.example#bobkit/classification:0.1",
        "--container-mounts=/shared/runs:/shared/runs,/shared/data:/shared/data:ro,/w:/w",
        "--no-container-mount-home", "--container-workdir=/",
        "--container-env=BOBKIT_DATA,BOBKIT_IMAGE,BOBKIT_IMAGE_DIGEST",
        "--export=ALL,BOBKIT_DATA=/shared/data,BOBKIT_IMAGE=img,BOBKIT_IMAGE_DIGEST=sha256:ff",
        *RUN_ONE,
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"  # the nested step keeps Slurm's allocation


def test_podman_command_line_uses_cdi_devices():
    argv, _ = command_for(launch("podman", "localhost/bobkit/classification:0.1", user="1000:1000"), SLURM_ENV)
    assert argv == [
        "podman", "run", "--rm", "--init", "--name", "bobkit-abc123", "--user", "1000:1000",
        "--security-opt=label=disable",
        "--device", "nvidia.com/gpu=2", "--device", "nvidia.com/gpu=3",
        "--volume", "/shared/runs:/shared/runs", "--volume", "/shared/data:/shared/data:ro", "--volume", "/w:/w",
        "--env", "BOBKIT_DATA=/shared/data", "--env", "BOBKIT_IMAGE=img", "--env", "BOBKIT_IMAGE_DIGEST=sha256:ff",
        "--env", "BOBKIT_SLURM_GPUS=2,3",
        "localhost/bobkit/classification:0.1", *RUN_ONE,
    ]


@pytest.mark.parametrize("mode, flags", [
    ("gpus", ["--gpus", '"device=2,3"']),
    ("cdi", ["--device", "nvidia.com/gpu=2", "--device", "nvidia.com/gpu=3"]),
    ("env", ["--env", "NVIDIA_VISIBLE_DEVICES=2,3"]),
])
def test_docker_command_line_passes_physical_gpu_ids(mode, flags):
    argv, _ = command_for(launch("docker", "bobkit/classification:0.1", docker_gpu_mode=mode, network="none"),
                          SLURM_ENV)
    assert argv[:8] == ["docker", "run", "--rm", "--init", "--name", "bobkit-abc123", "--network", "none"]
    assert argv[8:8 + len(flags)] == flags
    assert argv[-6:] == ["bobkit/classification:0.1", *RUN_ONE]
    assert "BOBKIT_SLURM_GPUS=2,3" in argv


def test_docker_without_gpus_asks_for_none():
    argv, _ = command_for(launch("docker", "img:1"), {"PATH": "/bin"})
    assert "--gpus" not in argv and not any(a.startswith("BOBKIT_SLURM_GPUS") for a in argv)


def test_host_command_line_and_environment():
    argv, env = command_for(launch("none", python="/opt/venv/bin/python"), SLURM_ENV)
    assert argv == ["/opt/venv/bin/python", "-m", "bobkit", "run-one", str(SPEC), "--data-root", str(DATA)]
    assert env["BOBKIT_DATA"] == "/shared/data" and env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_stop_and_remove_only_for_engines():
    assert stop_argv(launch("docker", "i"), grace_s=15) == ["docker", "stop", "--time", "15", "bobkit-abc123"]
    assert remove_argv(launch("podman", "i")) == ["podman", "rm", "--force", "bobkit-abc123"]
    assert stop_argv(launch("apptainer", "i")) is None and remove_argv(launch("none")) is None


def test_allocated_gpus_prefers_step_then_job_ids():
    assert allocated_gpus({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "1,2", "CUDA_VISIBLE_DEVICES": "0"}) == (["1"], ["0"])
    assert allocated_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == (["0", "1"], ["0", "1"])
    assert allocated_gpus({}) == ([], [])


def test_shell_line_quotes():
    assert shell_line(["docker", "--gpus", '"device=0,1"']) == "docker --gpus '\"device=0,1\"'"


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="unknown container runtime"):
        command_for(launch("lxc"), {})


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("1:30", 2), ("02:00:00", 120), ("1-00", 1440), ("1-02:30", 1590), ("0-00:00:30", 1),
])
def test_parse_slurm_time(text, minutes):
    assert parse_slurm_time(text) == minutes


@pytest.mark.parametrize("bad", ["", "two hours", "1h", "0", "-5"])
def test_parse_slurm_time_rejects(bad):
    with pytest.raises(BadInput):
        parse_slurm_time(bad)


def test_config_file_and_option_overrides(tmp_path, monkeypatch):
    cfg_file = tmp_path / "slurm.toml"
    cfg_file.write_text('[slurm]\npartition = "gpu"\naccount = "lab"\ncontainer = "pyxis"\n'
                        'cpus_per_gpu = 6\n[slurm.images]\nclassification = "reg#bobkit/classification:1"\n')
    cfg = load_slurm_config(cfg_file)
    assert (cfg.partition, cfg.account, cfg.container, cfg.cpus_per_gpu) == ("gpu", "lab", "pyxis", 6)
    assert cfg.images["classification"] == "reg#bobkit/classification:1"
    cfg2 = cfg.with_options(partition="a100", account=None, time="4:00:00")
    assert (cfg2.partition, cfg2.account, cfg2.time) == ("a100", "lab", "4:00:00")
    # the default file under XDG_CONFIG_HOME is read when no path is given
    (tmp_path / "bobkit").mkdir()
    (tmp_path / "bobkit" / "slurm.toml").write_text('partition = "short"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("BOBKIT_SLURM_CONFIG", raising=False)
    assert load_slurm_config().partition == "short"


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "slurm.toml"
    bad.write_text('partiton = "gpu"\n')
    with pytest.raises(BadInput, match=r"slurm.toml: partiton"):
        load_slurm_config(bad)
    bad.write_text('time = "soon"\n')
    with pytest.raises(BadInput, match="not in a Slurm format"):
        load_slurm_config(bad)
    with pytest.raises(BadInput, match="not found"):
        load_slurm_config(tmp_path / "missing.toml")
    with pytest.raises(BadInput, match="--slurm option: container"):
        SlurmConfig().with_options(container="lxc")


# ---------------------------------------------------------------- resources, grouping


def _spec(mini_catalog, **update):
    from bobkit.plan import plan, run_id

    spec = plan(mini_catalog, "toy", smoke=True)[0]
    body = {**spec.model_dump(mode="json", exclude={"id"}), **update}
    return spec.model_copy(update={**update, "id": run_id(body)})


def test_time_limit_from_estimate(mini_catalog):
    from bobkit.exec.slurm import resources_for

    cfg = SlurmConfig(cpus_per_gpu=4, mem_per_gpu_gb=20)
    long_run = _spec(mini_catalog, gpu_hours=16.0, gpus=4)  # 4 h of wall time on 4 GPUs
    res = resources_for([long_run], cfg)
    assert (res.gpus, res.cpus, res.mem_gb) == (4, 16, 80)
    assert res.time_min == 4 * 60 * 1.5 + 10
    assert resources_for([long_run], cfg.with_options(max_time_min=300)).time_min == 300
    assert resources_for([long_run], cfg.with_options(time="1-00:00:00")).time_min == 1440
    assert resources_for([_spec(mini_catalog, gpu_hours=0.0)], cfg).time_min == cfg.min_time_min
    cpu = resources_for([long_run], cfg.with_options(request_gpus=False))
    assert (cpu.gpus, cpu.cpus) == (0, cfg.cpus_without_gpu)


def test_groups_by_family_gpus_and_dependency_level(mini_catalog):
    from bobkit.exec.slurm import group_runs

    a = _spec(mini_catalog, seed=1)
    b = _spec(mini_catalog, seed=2)
    big = _spec(mini_catalog, seed=3, gpus=8)
    det = _spec(mini_catalog, seed=4, image_family="detection")
    child = _spec(mini_catalog, seed=5, depends_on=[a.id])
    specs = [a, b, big, det, child]
    groups = group_runs(specs, {s.id for s in specs})
    keys = [(g.family, g.gpus, g.level, [s.id for s in g.specs]) for g in groups]
    assert keys == [
        ("classification", 1, 0, [a.id, b.id]),
        ("classification", 8, 0, [big.id]),
        ("detection", 1, 0, [det.id]),
        ("classification", 1, 1, [child.id]),
    ]
    # an upstream run that is already finished (not pending) does not push its dependant to a later array
    groups = group_runs(specs, {b.id, child.id})
    assert [(g.level, len(g.specs)) for g in groups] == [(0, 2)]


# ---------------------------------------------------------------- SIF sidecar and build


def test_sif_provenance_hashes_once_and_notices_changes(tmp_path):
    from bobkit.exec.sif import file_digest, sidecar_path, sif_provenance

    sif = tmp_path / "classification.sif"
    sif.write_bytes(b"sif-bytes" * 1000)
    env = sif_provenance(sif)
    assert env == {"BOBKIT_IMAGE": str(sif), "BOBKIT_IMAGE_DIGEST": file_digest(sif)}
    assert sidecar_path(sif).is_file()
    sif.write_bytes(b"rebuilt")  # a new SIF: the stale sidecar is not trusted
    assert sif_provenance(sif)["BOBKIT_IMAGE_DIGEST"] == file_digest(sif)


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_build_sif_runs_apptainer_build_and_writes_sidecar(tmp_path, monkeypatch):
    """Apptainer cannot be installed here: a stand-in records its argv and writes the output file."""
    from bobkit.exec.sif import build_sif, read_sidecar

    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "apptainer", f'echo "$@" > {tmp_path}/argv\nprintf SIF > "$3"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    archive = tmp_path / "classification.tar"
    archive.write_bytes(b"tar")
    out = tmp_path / "sif" / "classification.sif"
    side = build_sif("classification", "bobkit/classification:0.1", out, archive=archive)
    assert (tmp_path / "argv").read_text().split() == [
        "build", "--force", str(out.with_name(".classification.sif.building")), f"docker-archive://{archive}"]
    assert out.read_text() == "SIF" and read_sidecar(out) == side
    assert side["source"] == "bobkit/classification:0.1" and side["family"] == "classification"
    with pytest.raises(BadInput, match="exists; pass --force"):
        build_sif("classification", "bobkit/classification:0.1", out, archive=archive)


def test_build_sif_without_apptainer_is_environment_missing(tmp_path, monkeypatch):
    from bobkit.exec.sif import build_sif

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentMissing, match="apptainer"):
        build_sif("classification", "x", tmp_path / "c.sif", registry=True)


def test_image_for_apptainer_needs_the_sif(tmp_path):
    from bobkit.exec.slurm import image_for

    cfg = SlurmConfig(container="apptainer", sif_dir=str(tmp_path))
    with pytest.raises(EnvironmentMissing, match="bobkit images sif classification"):
        image_for("classification", "bobkit/classification", cfg)
    (tmp_path / "classification.sif").write_bytes(b"x")
    image, env = image_for("classification", "bobkit/classification", cfg)
    assert image == str(tmp_path / "classification.sif") and env["BOBKIT_IMAGE_DIGEST"].startswith("sha256:")


def test_task_pickles_small_and_checkpoint_resubmits_itself(tmp_path):
    """The pickled task holds paths only; checkpoint() returns a resubmission of the same task."""
    import pickle

    from bobkit.exec.slurm_task import SlurmRunTask

    run_dir = tmp_path / "runs" / "toy" / "r1"
    run_dir.mkdir(parents=True)
    task = SlurmRunTask(run_dir, launch("none", python=sys.executable))
    blob = pickle.dumps(task)
    assert len(blob) < 4096
    again = pickle.loads(blob)
    delayed = again.checkpoint()
    assert delayed.function is again
    import json

    assert json.loads((run_dir / "status.json").read_text())["state"] == "requeued"


def test_images_sif_command(tmp_path, cli):
    """`bobkit images sif` end to end, with the Apptainer stand-in; without Apptainer it exits 3."""
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "apptainer", 'printf SIF > "$3"\n')
    archive = tmp_path / "c.tar"
    archive.write_bytes(b"tar")
    out = tmp_path / "sifs" / "classification.sif"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc = cli("images", "sif", "classification", "--archive", str(archive), "--out", str(out), "--json",
               env={"PATH": path})
    assert proc.returncode == 0, proc.stderr
    import json

    side = json.loads(proc.stdout)
    assert side["sif"] == str(out) and side["source"] == "bobkit/classification:latest"
    assert (tmp_path / "sifs" / "classification.sif.json").is_file()
    proc = cli("images", "sif", "nosuch", "--archive", str(archive), env={"PATH": path})
    assert proc.returncode == 2 and "unknown image family" in proc.stderr
    proc = cli("images", "sif", "classification", "--registry", "--out", str(tmp_path / "x.sif"),
               env={"PATH": os.path.dirname(sys.executable)})
    assert proc.returncode == 3 and "apptainer" in proc.stderr


def test_multi_gpu_run_starts_under_torchrun():
    argv, _ = command_for(launch("apptainer", "/sif/c.sif", nproc=4), SLURM_ENV)
    assert argv[-12:] == ["/sif/c.sif", "python", "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=4", "-m", "bobkit", "run-one", str(SPEC), "--data-root", str(DATA)]
    argv, _ = command_for(launch("none", python="/venv/bin/python", nproc=2), SLURM_ENV)
    assert argv[:5] == ["/venv/bin/python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_a_requeued_run_whose_restart_never_ran_says_so(tmp_path, monkeypatch):
    """Slurm can end a requeued job before the task runs again (a start inside the requeue hold is refused
    by slurmd): the run is written off as failed, and the message says it was requeued and will resume."""
    from bobkit.exec import slurm
    from bobkit.results import RunDir

    run = RunDir(tmp_path / "r1")
    run.path.mkdir()
    slurm.update_record(run, job_id="41", requeues=1, attempt=1, slurm_log="/x/41_0_log.out")
    run.set_status("requeued", executor="slurm", job_id="41")
    monkeypatch.setattr(slurm, "job_state", lambda job: "FAILED")
    outcome = slurm.settled(run, {})
    assert outcome.state == "failed"
    assert "job 41 was requeued" in outcome.message and "(FAILED)" in outcome.message
    assert "resumes from checkpoints/last.pt" in outcome.message
    assert run.status_record()["state"] == "failed"

    # a run that was never requeued keeps the plain message
    other = RunDir(tmp_path / "r2")
    other.path.mkdir()
    slurm.update_record(other, job_id="42")
    other.set_status("queued", executor="slurm", job_id="42")
    message = slurm.settled(other, {}).message
    assert message.startswith("job 42 ended (FAILED) before the run finished")

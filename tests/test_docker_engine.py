"""Against a real Docker Engine: build the classification image on a local base, run a smoke run in a
container through the docker executor, and inspect what the container was given.

Needs a daemon, a local base image and a wheelhouse (.ci/setup-docker.sh makes all three); without
them every test here is skipped with the reason. The image build is incremental: after the first
build only the layer holding bobkit's own source is rebuilt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bobkit.manifest.loader import load_catalog
from bobkit.plan import plan
from bobkit.results import RunDir
from tests.conftest import default_sigint

pytestmark = pytest.mark.docker

BASE = os.environ.get("BOBKIT_BASE_IMAGE", "bobkit-local/base:bookworm")
WHEELHOUSE = Path(os.environ.get("BOBKIT_WHEELHOUSE", "/var/cache/bobkit/wheelhouse"))
TEST_TAG = os.environ.get("BOBKIT_TEST_IMAGE", "bobkit-test/classification:ci")
SETUP = "run .ci/setup-docker.sh (as root) to start dockerd and make the local base image and wheelhouse"


@pytest.fixture(scope="session")
def engine():
    from bobkit.errors import EnvironmentMissing
    from bobkit.images import docker_client

    try:
        return docker_client(timeout=3600)
    except EnvironmentMissing as exc:
        pytest.skip(f"{exc}")


@pytest.fixture(scope="session")
def test_image(engine):
    """bobkit's classification image built from this checkout on the local base (cached layers reused)."""
    import docker

    from bobkit.images import build

    try:
        engine.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"no local base image {BASE}: {SETUP}")
    if not any(WHEELHOUSE.glob("torch-*.whl")):
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: {SETUP}")
    started = time.time()
    result = build("classification", base=BASE, wheelhouse=WHEELHOUSE, tag=TEST_TAG, client=engine)
    print(f"\ntest image {TEST_TAG} built in {time.time() - started:.0f} s")
    return result


def smoke_specs(backbone="resnet50", dataset="cifar100"):
    return plan(load_catalog(()), "classification", backbones=[backbone], datasets=[dataset], smoke=True)[:1]


@pytest.fixture(scope="module")
def smoke_run(engine, test_image, tmp_path_factory):
    from bobkit.exec.docker import DockerExecutor

    root = tmp_path_factory.mktemp("docker-smoke")
    (root / "data").mkdir()
    (root / "weights").mkdir()
    (spec,) = smoke_specs()
    ex = DockerExecutor(gpus=[], images={"classification": TEST_TAG}, shm_size="256m", keep_containers=True,
                        progress=False, client=engine, weights_dir=root / "weights")
    report = ex.execute([spec], root / "runs", root / "data")
    container = engine.containers.get(ex.containers[spec.id])
    yield {"spec": spec, "report": report, "container": container, "root": root, "executor": ex,
           "image": test_image.image}
    container.remove(force=True)


def test_image_is_labelled_and_runs_as_a_user(test_image):
    from bobkit.images import FAMILIES, bobkit_version, lock_sha256

    labels = test_image.image.labels
    assert labels["io.bobkit.family"] == "classification"
    assert labels["io.bobkit.lock-sha256"] == lock_sha256(FAMILIES["classification"])
    assert labels["io.bobkit.version"] == bobkit_version()
    assert labels["io.bobkit.base-image"] == BASE
    config = test_image.image.attrs["Config"]
    assert config["User"] not in ("", "0", "root", "0:0")
    assert config["Entrypoint"] == ["/usr/local/bin/bobkit-entrypoint"]


def test_images_list_shows_the_test_image(test_image):
    from bobkit.images import list_images

    infos = {tag: i for i in list_images() for tag in i.tags}
    assert infos[TEST_TAG].family == "classification" and infos[TEST_TAG].current


def test_the_smoke_run_finishes_in_its_container(smoke_run):
    spec, report = smoke_run["spec"], smoke_run["report"]
    assert [(o.run_id, o.state) for o in report.outcomes] == [(spec.id, "done")], report.outcomes
    run = RunDir(report.outcomes[0].run_dir)
    metrics = json.loads(run.metrics_path.read_text())
    assert metrics["run_id"] == spec.id and metrics["smoke"] is True
    assert 0.0 <= metrics["metrics"]["top1"] <= 1.0
    prov = metrics["provenance"]
    image = smoke_run["image"]
    assert TEST_TAG in json.dumps(prov) and image.id in json.dumps(prov)
    log = run.log_path.read_text()
    assert "==> docker run" in log and spec.id in log


def test_the_container_was_isolated(smoke_run):
    c = smoke_run["container"]
    c.reload()
    host = c.attrs["HostConfig"]
    user = c.attrs["Config"]["User"]
    expected = "1000:1000" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert user == expected and not user.startswith("0")
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["ShmSize"] == 256 * 2**20
    assert host.get("DeviceRequests") in (None, [])  # no GPU here: none requested
    spec = smoke_run["spec"]
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/weights"]["RW"] is False
    assert mounts[f"/runs/{spec.id}"]["RW"] is True
    assert sorted(d for d, m in mounts.items() if m["RW"]) == [f"/runs/{spec.id}"]
    assert c.attrs["State"]["ExitCode"] == 0


def test_the_run_directory_stays_the_users(smoke_run):
    run = RunDir(smoke_run["report"].outcomes[0].run_dir)
    owners = {p.stat().st_uid for p in [run.path, *run.path.rglob("*")]}
    assert owners == {os.getuid()}


def test_a_finished_run_is_not_run_again(smoke_run):
    ex, spec, root = smoke_run["executor"], smoke_run["spec"], smoke_run["root"]
    report = ex.execute([spec], root / "runs", root / "data")
    assert [o.state for o in report.outcomes] == ["skipped"]


def _reproduce(runs: Path, data: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bobkit", "reproduce", "classification", "--smoke", "-b", "dino_vit_small",
           "-d", "cifar100", "--executor", "docker", "--image", f"classification={TEST_TAG}", "--shm-size", "256m",
           "--runs-dir", str(runs), "--data-root", str(data), "--json", *extra]
    env = dict(os.environ, BOBKIT_NO_GPU="1", BOBKIT_WEIGHTS=str(data.parent / "weights"))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)


def test_a_run_claimed_by_another_process_is_left_alone(engine, test_image, tmp_path):
    from bobkit.exec.base import prepare
    from bobkit.exec.scheduler import RunClaim

    runs, data = tmp_path / "runs", tmp_path / "data"
    (spec,) = smoke_specs("dino_vit_small")
    claim = RunClaim(prepare(spec, runs).path)  # this test plays the other `reproduce` process
    assert claim.acquire()
    try:
        proc = _reproduce(runs, data)
        out, err = proc.communicate(timeout=600)
    finally:
        claim.release()
    assert proc.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {spec.id: "busy"}
    assert not engine.containers.list(all=True, filters={"label": f"io.bobkit.run-id={spec.id}"})
    assert not RunDir.of(runs, spec.id).log_path.exists()


def test_ctrl_c_stops_the_container_and_the_next_reproduce_resumes(engine, test_image, tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    first = _reproduce(runs, data)
    try:
        _interrupt_and_resume(engine, first, runs, data)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()


def _interrupt_and_resume(engine, first, runs, data):
    status = []
    deadline = time.time() + 600
    while time.time() < deadline:  # until run-one is running in its container
        status = list(runs.glob("*/status.json"))
        if status and json.loads(status[0].read_text()).get("state") == "running":
            break
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    else:
        pytest.fail("the run never started")
    run_id = status[0].parent.name
    assert engine.containers.list(filters={"label": f"io.bobkit.run-id={run_id}"})

    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=180)
    assert first.returncode == 130, err
    assert json.loads((runs / run_id / "status.json").read_text())["state"] == "interrupted"
    assert not engine.containers.list(all=True, filters={"label": f"io.bobkit.run-id={run_id}"})

    again = _reproduce(runs, data)
    out, err = again.communicate(timeout=1200)
    assert again.returncode == 0, err
    assert {r["run_id"]: r["state"] for r in json.loads(out)["runs"]} == {run_id: "done"}

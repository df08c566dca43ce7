"""Image plumbing that needs no daemon: lock writing, build context, wheelhouse server, CLI errors."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bobkit.commands  # noqa: F401  (registers the commands)
from bobkit.cli_app import app
from bobkit.errors import BadInput, EnvironmentMissing
from bobkit.images import (CA_DIR, FAMILIES, _report_to_lock, build_context, family, family_of_task,
                           pinned_reference, serve_wheelhouse, source_root)

ROOT = Path(__file__).resolve().parents[1]


def _item(name, version, url, sha=None):
    info = {"url": url}
    if sha:
        info["archive_info"] = {"hashes": {"sha256": sha}}
    return {"metadata": {"name": name, "version": version}, "download_info": info}


def test_pip_report_becomes_a_sorted_hash_pinned_lock(tmp_path):
    wheel = tmp_path / "local_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    report = {"install": [
        _item("Zeta_Pkg", "2.0", "https://files.example/zeta.whl", "b" * 64),
        _item("alpha", "1.2.3", "https://files.example/alpha.whl", "a" * 64),
        _item("local_pkg", "1.0", wheel.as_uri()),  # no hash from a find-links folder: computed from the file
    ]}
    text = _report_to_lock(report, "# header")
    lines = text.splitlines()
    assert lines[0] == "# header"
    assert lines[1:] == [
        "alpha==1.2.3 \\", "    --hash=sha256:" + "a" * 64,
        "local-pkg==1.0 \\", "    --hash=sha256:" + hashlib.sha256(b"not really a wheel").hexdigest(),
        "zeta-pkg==2.0 \\", "    --hash=sha256:" + "b" * 64,
    ]


def test_a_package_without_any_hash_is_refused():
    with pytest.raises(EnvironmentMissing, match="no sha256"):
        _report_to_lock({"install": [_item("x", "1", "https://files.example/x.whl")]}, "#")


def test_families_and_tasks():
    assert family_of_task("retrieval").name == "classification"
    assert family_of_task("ood_detection").name == "detection"
    assert family("detection").repository == "bobkit/detection"
    with pytest.raises(BadInput):
        family("segmentation")
    assert set(FAMILIES) == {"classification", "detection"}


def test_pinned_reference_uses_the_digest_only_when_known():
    assert pinned_reference({"tag": "debian:12", "digest": "unresolved"}) == "debian:12"
    d = "sha256:" + "c" * 64
    assert pinned_reference({"tag": "debian:12", "digest": d}) == f"debian:12@{d}"


def test_build_context_honours_dockerignore_and_adds_the_ca_bundle(tmp_path):
    pem = tmp_path / "proxy.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with build_context(source_root(), pem) as buf:
        with tarfile.open(fileobj=buf) as tar:
            names = set(tar.getnames())
            ca = tar.extractfile(f"{CA_DIR}/extra-ca-bundle.pem").read()
    assert {"Dockerfile", "pyproject.toml", "docker/entrypoint.sh", "docker/locks/classification.txt"} <= names
    assert "bobkit/images.py" in names and "manifests/backbones.yaml" in names
    assert not any(n.startswith((".venv", ".git/", "tests/", "runs/")) for n in names)
    assert b"BEGIN CERTIFICATE" in ca
    bad = tmp_path / "key.txt"
    bad.write_text("hello")
    with pytest.raises(BadInput, match="not a PEM"):
        build_context(source_root(), bad)


def test_wheelhouse_is_served_on_loopback(tmp_path):
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    with serve_wheelhouse(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        index = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'href="pkg-1.0-py3-none-any.whl"' in index  # what pip's --find-links reads
        assert urllib.request.urlopen(url + "pkg-1.0-py3-none-any.whl", timeout=10).read() == b"wheel bytes"
    with pytest.raises(BadInput):
        with serve_wheelhouse(tmp_path / "missing"):
            pass


runner = CliRunner()


def test_cli_lock_needs_a_target_and_build_a_known_family():
    res = runner.invoke(app, ["images", "lock"])
    assert isinstance(res.exception, BadInput) and res.exception.exit_code == 2
    res = runner.invoke(app, ["images", "build", "segmentation"])
    assert isinstance(res.exception, BadInput) and "unknown image family" in str(res.exception)


def test_cli_without_a_daemon_says_so(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    res = runner.invoke(app, ["images", "list"])
    assert isinstance(res.exception, EnvironmentMissing) and res.exception.exit_code == 3
    assert "no Docker daemon answers" in str(res.exception)


def test_entrypoint_runs_run_one_or_the_named_program(tmp_path):
    import subprocess

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bobkit").write_text("#!/bin/sh\necho bobkit \"$@\"\n")
    (fake / "bobkit").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": "/nonexistent"}
    script = str(ROOT / "docker" / "entrypoint.sh")
    out = subprocess.run(["sh", script, "/runs/e/1/spec.json", "--data-root", "/data"], env=env,
                         capture_output=True, text=True).stdout
    assert out.strip() == "bobkit run-one /runs/e/1/spec.json --data-root /data"
    out = subprocess.run(["sh", script, "echo", "hi"], env=env, capture_output=True, text=True).stdout
    assert out.strip() == "hi"
    out = subprocess.run(["sh", script, "sh", "-c", "echo $HOME"], env=env, capture_output=True, text=True).stdout
    assert out.strip() == "/tmp"  # no writable home: HOME falls back to /tmp


"""The container files themselves: Dockerfile lint, compose validation, and the lock files' shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bobkit.images import FAMILIES, lock_sha256, pinned_reference, read_base_lock, requirements_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} not installed (pip install 'bobkit[test]')")
    return path


def test_hadolint_passes_on_the_dockerfile():
    proc = subprocess.run([_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_validates_with_gpu_reservations_and_volumes(tmp_path):
    proc = subprocess.run([_tool("docker-compose"), "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == set(FAMILIES)
    for name, svc in services.items():
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        vols = {v["target"]: v for v in svc["volumes"]}
        assert vols["/data"]["read_only"] and vols["/weights"]["read_only"]
        assert not vols["/runs"].get("read_only", False)
        assert int(svc["shm_size"]) >= 8 * 2**30
        assert svc["network_mode"] == "none" and svc["cap_drop"] == ["ALL"]
        assert svc["build"]["target"] == name


def test_dockerfile_has_a_target_per_family_and_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text()
    for fam in FAMILIES:
        assert re.search(rf"^FROM \S+ AS {fam}$", text, re.M), fam
    assert text.count("USER ${BOBKIT_UID}") == len(FAMILIES)
    assert "ARG BASE_IMAGE=" in text
    assert 'ENTRYPOINT ["/usr/local/bin/bobkit-entrypoint"]' in text


LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


@pytest.mark.parametrize("name", sorted({lock for f in FAMILIES.values() for lock in f.locks}))
def test_every_locked_package_is_pinned_with_a_hash(name):
    path = ROOT / "docker" / "locks" / name
    if not path.is_file():
        pytest.skip(f"{path.name} not generated yet (`bobkit images lock --packages ...`)")
    body = "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("#")).strip()
    entries = LINE.findall(body)
    assert entries and len(entries) == body.count("==")
    assert len({e[0].lower() for e in entries}) == len(entries)


def test_classification_lock_holds_the_family_pins_and_bobkits_dependencies():
    text = (ROOT / "docker" / "locks" / "classification.txt").read_text()
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31"):
        assert pin in text
    for req in requirements_for("classification", ROOT):
        name = re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].lower().replace("_", "-")
        assert re.search(rf"^{re.escape(name)}==", text, re.M | re.I), name


def test_base_images_have_a_real_digest_or_say_unresolved():
    lock = read_base_lock(ROOT)["images"]
    assert {"BASE_IMAGE", "CUDA_DEVEL_IMAGE"} <= set(lock)
    for arg, entry in lock.items():
        assert ":" in entry["tag"].rsplit("/", 1)[-1], f"{arg} must be pinned by tag"
        digest = entry["digest"]
        assert digest == "unresolved" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        ref = pinned_reference(entry)
        assert ref == entry["tag"] if digest == "unresolved" else ref.endswith("@" + digest)


def test_lock_hash_changes_with_the_lock(tmp_path):
    root = tmp_path / "src"
    (root / "docker" / "locks").mkdir(parents=True)
    lock = root / "docker" / "locks" / "classification.txt"
    lock.write_text("a==1 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    first = lock_sha256(FAMILIES["classification"], root)
    lock.write_text("a==2 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert lock_sha256(FAMILIES["classification"], root) != first


def test_dockerignore_keeps_the_context_small():
    from docker.utils.build import exclude_paths

    from bobkit.images import dockerignore_patterns

    files = exclude_paths(str(ROOT), dockerignore_patterns(ROOT), dockerfile="Dockerfile")
    assert "pyproject.toml" in files and "docker/locks/classification.txt" in files
    assert not any(f.startswith((".venv", ".git/", "runs/", "tests/")) for f in files)

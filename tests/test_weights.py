"""Weights downloads against a local HTTP server on 127.0.0.1: success, resume after a cut
connection, a server that ignores Range, wrong checksum and lock mismatch refused, offline mode,
licence-gated files; and the `bobkit weights` commands."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bobkit.errors import ExitCode
from bobkit.manifest.models import Backbone, WeightsSource
from bobkit.weights import (
    ChecksumMismatch,
    WeightsLock,
    WeightsMissing,
    artifact_for,
    cache_state,
    fetch_artifact,
    fetch_backbones,
)
from bobkit.weights.http import AuthenticationNeeded, DownloadFailed, download

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves `files`; honours Range; can cut the first responses of a path short, ignore Range,
    or answer 401 as a gated Hugging Face file does."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> how many responses to cut
        self.ignore_range: set[str] = set()
        self.gated: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path in server.gated:
                    self.send_response(401)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and self.path not in server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if server.cut.get(self.path, 0) > 0:
                    server.cut[self.path] -= 1
                    self.wfile.write(chunk[: len(chunk) * 2 // 5])  # 40 %, then drop the connection
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    s.files["/models/backbone.pth"] = PAYLOAD
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("BOBKIT_WEIGHTS", str(d))
    monkeypatch.setenv("BOBKIT_WEIGHTS_LOCK", str(tmp_path / "weights.lock"))
    monkeypatch.delenv("BOBKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return d


def backbone(url: str, sha256: str | None = None, bid: str = "local_resnet", gated: bool = False) -> Backbone:
    return Backbone(
        id=bid, name="local", architecture="ResNet-50", family="resnet", timm_model="resnet50", params_m=23.5,
        method="test", kind="supervised", pretrain_data="none",
        weights={"format": "torchvision", "url": url, **({"sha256": sha256} if sha256 else {}), "gated": gated},
        resolution=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), tasks=["classification"], source="test",
        confidence="bobkit",
    )


def lock_entries(path: Path) -> dict:
    return json.loads(path.read_text())["files"] if path.exists() else {}


def test_download_records_lock_then_serves_from_cache(server, cache, tmp_path):
    b = backbone(server.url("/models/backbone.pth"))
    [row] = fetch_backbones([b], progress=False)
    assert row.status == "downloaded" and row.sha256 == DIGEST
    assert row.path == cache / "url" / f"127.0.0.1:{server.httpd.server_port}" / "models" / "backbone.pth"
    assert row.path.read_bytes() == PAYLOAD
    entries = lock_entries(tmp_path / "weights.lock")
    assert entries[server.url("/models/backbone.pth")]["sha256"] == DIGEST
    assert entries[server.url("/models/backbone.pth")]["backbones"] == ["local_resnet"]
    n = len(server.requests)
    [again] = fetch_backbones([b], progress=False)
    assert again.status == "cached" and len(server.requests) == n  # no second download


def test_resume_after_a_cut_connection(server, tmp_path):
    server.cut["/models/backbone.pth"] = 1
    dest = tmp_path / "f.pth"
    download(server.url("/models/backbone.pth"), dest, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("f.pth.part").exists()
    first, second = server.requests
    assert first[1] is None
    assert second[1] == f"bytes={len(PAYLOAD) * 2 // 5}-"  # resumed where the cut left it


def test_partial_file_kept_and_resumed_by_the_next_run(server, tmp_path):
    server.cut["/models/backbone.pth"] = 2
    dest = tmp_path / "f.pth"
    with pytest.raises(DownloadFailed, match="run the fetch again to resume") as info:
        download(server.url("/models/backbone.pth"), dest, retries=0, backoff=0, progress=False)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    part = dest.with_name("f.pth.part")
    assert part.stat().st_size == len(PAYLOAD) * 2 // 5 and not dest.exists()
    download(server.url("/models/backbone.pth"), dest, retries=3, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert all(r[1] is not None for r in server.requests[1:])


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    server.cut["/models/backbone.pth"] = 1
    server.ignore_range.add("/models/backbone.pth")
    dest = tmp_path / "f.pth"
    download(server.url("/models/backbone.pth"), dest, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_file_finishes_on_416(server, tmp_path):
    dest = tmp_path / "f.pth"
    dest.with_name("f.pth.part").write_bytes(PAYLOAD)
    download(server.url("/models/backbone.pth"), dest, backoff=0, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_wrong_manifest_checksum_is_refused_and_moved_aside(server, cache, tmp_path):
    b = backbone(server.url("/models/backbone.pth"), sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="does not match 0000") as info:
        fetch_backbones([b], progress=False)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    folder = cache / "url" / f"127.0.0.1:{server.httpd.server_port}" / "models"
    assert not (folder / "backbone.pth").exists()
    assert [p.name for p in folder.iterdir() if ".rejected-" in p.name] == [f"backbone.pth.rejected-{DIGEST[:12]}"]
    assert lock_entries(tmp_path / "weights.lock") == {}  # a refused file is never recorded


def test_lock_mismatch_is_refused(server, cache, tmp_path):
    url = server.url("/models/backbone.pth")
    WeightsLock(tmp_path / "weights.lock").record(url, "f" * 64, len(PAYLOAD))
    with pytest.raises(ChecksumMismatch, match="weights.lock"):
        fetch_backbones([backbone(url)], progress=False)
    # the upstream file changing later is caught too: same URL, other bytes
    server.files["/models/other.pth"] = PAYLOAD[::-1]
    other = server.url("/models/other.pth")
    fetch_backbones([backbone(other, bid="b2")], progress=False)
    (cache / "url" / f"127.0.0.1:{server.httpd.server_port}" / "models" / "other.pth").unlink()
    server.files["/models/other.pth"] = PAYLOAD
    with pytest.raises(ChecksumMismatch):
        fetch_backbones([backbone(other, bid="b2")], progress=False)


def test_offline_uses_only_the_cache(server, cache):
    b = backbone(server.url("/models/backbone.pth"))
    [row] = fetch_backbones([b], offline=True, progress=False)
    assert row.status == "missing" and server.requests == []
    with pytest.raises(WeightsMissing, match="bobkit weights fetch local_resnet"):
        fetch_artifact(artifact_for(b.weights, b.id), offline=True, progress=False)
    fetch_backbones([b], progress=False)
    [row] = fetch_backbones([b], offline=True, progress=False)
    assert row.status == "cached"


def test_offline_from_the_environment(server, cache, monkeypatch):
    monkeypatch.setenv("BOBKIT_OFFLINE", "1")
    b = backbone(server.url("/models/backbone.pth"))
    with pytest.raises(WeightsMissing):
        fetch_artifact(artifact_for(b.weights, b.id), progress=False)
    assert server.requests == []


def test_gated_url_says_how_to_authenticate(server, cache):
    server.gated.add("/models/backbone.pth")
    with pytest.raises(AuthenticationNeeded, match="HTTP 401"):
        fetch_backbones([backbone(server.url("/models/backbone.pth"))], progress=False)


def test_cache_state_reports_verified_files(server, cache):
    b = backbone(server.url("/models/backbone.pth"))
    [before] = cache_state([b])
    assert before["cached"] is False
    fetch_backbones([b], progress=False)
    [after] = cache_state([b])
    assert after["cached"] and after["verified"] is True and after["locked_sha256"] == DIGEST


# ----------------------------------------------------------------------- sources

def test_sources_resolve_without_network():
    tv = artifact_for(WeightsSource(format="torchvision", url="torchvision://resnet50"))
    assert tv.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    clip = artifact_for(WeightsSource(format="openai_clip", url="https://openaipublic.azureedge.net/clip/models/"
                                      + "ab" * 32 + "/RN50.pt"))
    assert clip.sha256 == "ab" * 32
    timm_src = artifact_for(WeightsSource(format="timm", timm_name="resnet50.a1_in1k"))
    assert timm_src.kind == "hub" and timm_src.hub_id == "timm/resnet50.a1_in1k"
    assert timm_src.hub_files == ("model.safetensors", "pytorch_model.bin")


def test_every_manifest_source_resolves():
    """Every weights file the manifests name resolves to a URL or hub file (timm names exist in timm,
    timm names match their backbone's architecture)."""
    from bobkit.manifest.loader import load_catalog
    from bobkit.weights import sources_of

    catalog = load_catalog()
    for b in catalog.backbones.values():
        for role, source in sources_of(b):
            art = artifact_for(source, b.id)
            assert art.url or art.hub_id, (b.id, role)
            if source.format == "timm":
                assert source.timm_name.split(".")[0] == b.timm_model, b.id


# ----------------------------------------------------------------------- CLI

def _manifest(tmp_path: Path, url: str) -> Path:
    d = tmp_path / "extra"
    d.mkdir()
    (d / "mine.yaml").write_text(f"""backbones:
  - id: local_test_resnet
    name: local
    architecture: ResNet-50
    family: resnet
    timm_model: resnet50
    params_m: 23.5
    method: test
    kind: supervised
    pretrain_data: none
    weights: {{format: torchvision, url: "{url}"}}
    resolution: 224
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    tasks: [classification]
    source: test
    confidence: bobkit
""")
    return d


def test_cli_fetch_list_and_offline(server, cache, tmp_path, cli):
    extra = _manifest(tmp_path, server.url("/models/backbone.pth"))
    env = {"BOBKIT_WEIGHTS": str(cache), "BOBKIT_WEIGHTS_LOCK": str(tmp_path / "weights.lock")}
    off = cli("weights", "fetch", "local_test_resnet", "--offline", "-m", str(extra), env=env)
    assert off.returncode == 3 and "not in the cache" in off.stderr and "Traceback" not in off.stderr
    got = cli("weights", "fetch", "local_test_resnet", "--json", "-m", str(extra), env=env)
    assert got.returncode == 0, got.stderr
    [row] = json.loads(got.stdout)
    assert row["status"] == "downloaded" and row["sha256"] == DIGEST
    listed = cli("weights", "list", "local_test_resnet", "--json", "-m", str(extra), env=env)
    [state] = json.loads(listed.stdout)
    assert state["cached"] and state["verified"] is True
    again = cli("weights", "fetch", "local_test_resnet", "--offline", "-m", str(extra), env=env)
    assert again.returncode == 0 and "cached" in again.stdout
    server.gated.add("/models/gated.pth")
    (extra / "gated.yaml").write_text((extra / "mine.yaml").read_text()
                                      .replace("local_test_resnet", "local_gated_resnet")
                                      .replace("/models/backbone.pth", "/models/gated.pth"))
    both = cli("weights", "fetch", "local_gated_resnet", "local_test_resnet", "-m", str(extra), env=env)
    assert both.returncode == 3 and "HTTP 401" in both.stderr and "local_gated_resnet" in both.stderr
    assert "cached" in both.stdout  # the other backbone is still served
    unknown = cli("weights", "fetch", "no_such_backbone", env=env)
    assert unknown.returncode == 2 and "unknown backbone" in unknown.stderr


# ----------------------------------------------------------------------- Hugging Face hub (a fake endpoint)

class FakeHub:
    """Answers huggingface_hub's HEAD/GET on /<repo>/resolve/<revision>/<file> like the Hub does."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.gated: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, with_body: bool) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                repo, name = "/".join(parts[:2]), "/".join(parts[4:])
                if repo in hub.gated:
                    self.send_response(403)
                    self.send_header("X-Error-Code", "GatedRepo")
                    self.send_header("X-Error-Message", "Access to this model is restricted")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = hub.files.get((repo, name))
                if body is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", "c" * 40)
                self.send_header("ETag", '"%s"' % hashlib.sha256(body).hexdigest())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_port}"


@pytest.fixture
def hub(monkeypatch):
    h = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
    yield h
    h.httpd.shutdown()
    h.httpd.server_close()


def test_hub_file_download_and_lock(hub, cache, tmp_path):
    hub.files[("laion/clip-test", "open_clip_pytorch_model.bin")] = PAYLOAD
    source = WeightsSource(format="open_clip", hub_id="laion/clip-test", hub_file="open_clip_pytorch_model.bin")
    path, status = fetch_artifact(artifact_for(source, "clip_test"), progress=False)
    assert status == "downloaded" and path.read_bytes() == PAYLOAD
    assert path.is_relative_to(cache / "hub")
    entries = lock_entries(tmp_path / "weights.lock")
    assert entries["hf://laion/clip-test/open_clip_pytorch_model.bin"]["sha256"] == DIGEST
    assert fetch_artifact(artifact_for(source, "clip_test"), offline=True, progress=False)[1] == "cached"


def test_timm_style_hub_alternatives(hub, cache, tmp_path):
    """timm repos hold model.safetensors or only pytorch_model.bin: the first that exists is used."""
    hub.files[("timm/resnet50.a1_in1k", "pytorch_model.bin")] = PAYLOAD
    source = WeightsSource(format="timm", timm_name="resnet50.a1_in1k")
    path, _ = fetch_artifact(artifact_for(source, "resnet50"), progress=False)
    assert path.name == "pytorch_model.bin"
    assert "hf://timm/resnet50.a1_in1k/pytorch_model.bin" in lock_entries(tmp_path / "weights.lock")


def test_gated_hub_repo_says_how_to_authenticate(hub, cache):
    hub.gated.add("CompVis/stable-diffusion-v-1-4-original")
    source = WeightsSource(format="stable_diffusion", hub_id="CompVis/stable-diffusion-v-1-4-original",
                           hub_file="sd-v1-4.ckpt", gated=True)
    with pytest.raises(AuthenticationNeeded) as info:
        fetch_artifact(artifact_for(source, "sd_v1"), progress=False)
    message = str(info.value)
    assert "https://huggingface.co/CompVis/stable-diffusion-v-1-4-original" in message
    assert "HF_TOKEN" in message and "huggingface-cli login" in message and "bobkit weights fetch sd_v1" in message
    assert info.value.exit_code == ExitCode.ENVIRONMENT


def test_unwritable_lock_warns_but_still_verifies(server, cache, tmp_path, capsys):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    lock = WeightsLock(blocker / "weights.lock")  # its parent is a file: cannot be written
    b = backbone(server.url("/models/backbone.pth"))
    [row] = fetch_backbones([b], lock=lock, progress=False)
    assert row.status == "downloaded" and row.sha256 == DIGEST
    assert "could not record" in capsys.readouterr().err

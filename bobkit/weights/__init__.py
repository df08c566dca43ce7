"""Backbone weights: a local cache, checksummed downloads and a lock file.

- Cache: env BOBKIT_WEIGHTS, else ~/.cache/bobkit/weights. URLs land under url/<host>/<path>,
  Hugging Face files under hub/<repo>/<revision>/<file>.
- Downloads: resumable HTTP with a progress bar (bobkit.weights.http) for URLs; huggingface_hub for
  hub files (HF_TOKEN or `huggingface-cli login` for gated repositories).
- Checks: the sha256 the manifest states, else the one manifests/weights.lock recorded at the first
  fetch. A file that does not match is moved aside (`<name>.rejected-<digest>`) and refused.
- Offline (`offline=True`, env BOBKIT_OFFLINE=1 or HF_HUB_OFFLINE=1): only the cache is used, and
  what is missing is said, with the command that fetches it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bobkit.errors import BobkitError, EnvironmentMissing
from bobkit.weights.lock import WeightsLock, default_lock_path
from bobkit.weights.sources import Artifact, artifact_for


class WeightsMissing(EnvironmentMissing):
    """Weights not in the cache while offline (exit 3)."""


class ChecksumMismatch(EnvironmentMissing):
    """A weights file whose sha256 differs from the manifest or the lock (exit 3)."""


def cache_dir(weights_dir: str | Path | None = None) -> Path:
    if weights_dir:
        return Path(weights_dir).expanduser()
    env = os.environ.get("BOBKIT_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bobkit" / "weights"


def offline_default() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("BOBKIT_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass
class FetchResult:
    backbone: str
    role: str  # "weights" or "detection_weights"
    format: str
    source: str
    path: Path | None
    status: str  # cached, downloaded, missing
    sha256: str | None = None
    size: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path) if self.path else None}


def sources_of(backbone: Any) -> list[tuple[str, Any]]:
    """(role, WeightsSource) of a manifest backbone that name a file: its weights, and detection's
    where they differ (format `python` sources load themselves and have no file)."""
    out = [("weights", backbone.weights)]
    if backbone.detection_weights is not None:
        out.append(("detection_weights", backbone.detection_weights))
    return [(role, s) for role, s in out if s.format != "python"]


def ensure(source: Any, *, backbone_id: str = "", weights_dir: str | Path | None = None,
           offline: bool | None = None, lock: WeightsLock | None = None, progress: bool = True) -> Path:
    """The verified local file of a WeightsSource, fetched if needed (the zoo calls this)."""
    return fetch_artifact(artifact_for(source, backbone_id), weights_dir=weights_dir, offline=offline,
                          lock=lock, progress=progress)[0]


def fetch_artifact(artifact: Artifact, *, weights_dir: str | Path | None = None, offline: bool | None = None,
                   lock: WeightsLock | None = None, progress: bool = True, retries: int = 4,
                   backoff: float = 1.0) -> tuple[Path, str]:
    """(path, "cached" | "downloaded"), verified against the manifest digest and the lock."""
    cache = cache_dir(weights_dir)
    lock = lock or WeightsLock()
    offline = offline_default() if offline is None else offline
    for path, key in artifact.candidates(cache):
        if path.is_file():
            verify(path, key, artifact, lock, record=artifact.kind != "path")
            return path, "cached"
    if artifact.kind == "path":
        who = f" (weights.path of backbone {', '.join(artifact.backbones)})" if artifact.backbones else ""
        raise WeightsMissing(f"{artifact.path}: no such file{who}; check the path")
    if offline:
        paths = ", ".join(str(p) for p, _ in artifact.candidates(cache))
        who = f" (backbone {', '.join(artifact.backbones)})" if artifact.backbones else ""
        raise WeightsMissing(f"offline and {artifact.label}{who} is not in the cache ({paths}); "
                             f"run `bobkit weights fetch {' '.join(artifact.backbones)}` where the network is reachable"
                             .rstrip())
    if artifact.kind == "url":
        from bobkit.weights.http import download

        path, key = artifact.candidates(cache)[0]
        download(artifact.url or "", path, progress=progress, label=_short(artifact.label), retries=retries,
                 backoff=backoff)
    else:
        path, key = _hub_download(artifact, cache)
    verify(path, key, artifact, lock)
    return path, "downloaded"


def _hub_download(artifact: Artifact, cache: Path) -> tuple[Path, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from bobkit.weights.http import AuthenticationNeeded, DownloadFailed

    target = artifact.hub_dir(cache)
    for name in artifact.hub_files:
        try:
            got = hf_hub_download(artifact.hub_id, name, revision=artifact.revision, local_dir=target,
                                  endpoint=os.environ.get("HF_ENDPOINT") or None)
            return Path(got), artifact.lock_key(name)
        except EntryNotFoundError:
            continue
        except GatedRepoError:
            raise AuthenticationNeeded(gated_message(artifact)) from None
        except RepositoryNotFoundError:
            if artifact.gated:
                raise AuthenticationNeeded(gated_message(artifact)) from None
            raise DownloadFailed(f"{artifact.label}: no such Hugging Face repository (or it is private); "
                                 "check hub_id in manifests/backbones.yaml") from None
        except HfHubHTTPError as exc:
            code = getattr(getattr(exc, "response", None), "status_code", None)
            if code in (401, 403):
                raise AuthenticationNeeded(gated_message(artifact)) from None
            raise DownloadFailed(f"{artifact.label}: {str(exc).splitlines()[0]}") from None
        except OSError as exc:  # connection errors
            raise DownloadFailed(f"{artifact.label}: {exc}; run the fetch again (downloads resume)") from None
    raise DownloadFailed(f"{artifact.label}: none of {', '.join(artifact.hub_files)} exists in {artifact.hub_id}")


def gated_message(artifact: Artifact) -> str:
    repo = artifact.hub_id
    return (f"{artifact.label} is licence-gated on Hugging Face: accept the licence at https://huggingface.co/{repo} "
            "with your account, then set HF_TOKEN=<your access token> (or run `huggingface-cli login`) and run "
            f"`bobkit weights fetch {' '.join(artifact.backbones)}` again".rstrip())


def verify(path: Path, key: str, artifact: Artifact, lock: WeightsLock, record: bool = True) -> str:
    """Check `path` against the manifest digest and the lock; record it in the lock at first sight
    (a user's local file is checked against the manifest only: its path means nothing elsewhere)."""
    digest = sha256_file(path)
    size = path.stat().st_size
    recorded = lock.get(key) if record else None
    expected = [("the manifest", artifact.sha256)] if artifact.sha256 else []
    if recorded:
        expected.append((str(lock.path), recorded["sha256"]))
    for who, want in expected:
        if digest.lower() != want.lower():
            if artifact.kind == "path":
                raise ChecksumMismatch(f"{path}: sha256 {digest} does not match {want} stated in {who}; "
                                       "check the file or the manifest's sha256")
            aside = path.with_name(f"{path.name}.rejected-{digest[:12]}")
            os.replace(path, aside)
            _sidecar(path).unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{artifact.label}: sha256 {digest} does not match {want} recorded in {who}; the file was moved "
                f"aside to {aside} and is not used. Fetch again; if it persists the upstream file changed: "
                f"check it, then update {who}")
    if record and not recorded:
        lock.record(key, digest, size, artifact.backbones)
    return digest


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def sha256_file(path: Path, use_cache: bool = True) -> str:
    """sha256 of a file; remembered next to it (keyed by size and mtime) so multi-GB files hash once."""
    stat = path.stat()
    side = _sidecar(path)
    if use_cache and side.is_file():
        try:
            data = json.loads(side.read_text())
            if data.get("size") == stat.st_size and data.get("mtime_ns") == stat.st_mtime_ns:
                return data["sha256"]
        except (json.JSONDecodeError, KeyError, OSError):
            pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        side.write_text(json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}))
    except OSError:
        pass
    return digest


def fetch_backbones(backbones: Iterable[Any], *, weights_dir: str | Path | None = None, offline: bool = False,
                    lock: WeightsLock | None = None, progress: bool = True,
                    keep_going: bool = False) -> list[FetchResult]:
    """Fetch every weights file of `backbones` (shared files once). Files missing while offline get
    status "missing". With keep_going, a file that fails (download error, gated, checksum refused)
    gets status "failed" and its error, and the others are still fetched; otherwise it raises."""
    results: list[FetchResult] = []
    done: dict[str, tuple[Path, str] | BobkitError] = {}
    for backbone in backbones:
        for role, source in sources_of(backbone):
            artifact = artifact_for(source, backbone.id)
            row = FetchResult(backbone.id, role, source.format, artifact.label, None, "missing")
            if artifact.label not in done:
                try:
                    done[artifact.label] = fetch_artifact(artifact, weights_dir=weights_dir, offline=offline,
                                                          lock=lock, progress=progress)
                except WeightsMissing as exc:
                    done[artifact.label] = exc
                except BobkitError as exc:
                    if not keep_going:
                        raise
                    done[artifact.label] = exc
            outcome = done[artifact.label]
            if isinstance(outcome, WeightsMissing):
                row.error = str(outcome)
            elif isinstance(outcome, BobkitError):
                row.status, row.error = "failed", str(outcome)
            else:
                row.path, row.status = outcome
                row.size = row.path.stat().st_size
                row.sha256 = sha256_file(row.path)
            results.append(row)
    return results


def cache_state(backbones: Iterable[Any], *, weights_dir: str | Path | None = None,
                lock: WeightsLock | None = None) -> list[dict[str, Any]]:
    """What the cache holds for each backbone, without downloading or hashing anything new."""
    cache = cache_dir(weights_dir)
    lock = lock or WeightsLock()
    locked = lock.read()
    rows = []
    for backbone in backbones:
        for role, source in sources_of(backbone):
            artifact = artifact_for(source, backbone.id)
            found = next(((p, k) for p, k in artifact.candidates(cache) if p.is_file()), None)
            key = found[1] if found else artifact.candidates(cache)[0][1]
            entry = locked.get(key)
            row = {"backbone": backbone.id, "role": role, "format": source.format, "source": artifact.label,
                   "gated": artifact.gated, "cached": bool(found), "path": str(found[0]) if found else None,
                   "size": found[0].stat().st_size if found else None,
                   "locked_sha256": entry["sha256"] if entry else None,
                   "verified": None}
            if found:
                side = _sidecar(found[0])
                if side.is_file():
                    try:
                        known = json.loads(side.read_text())["sha256"]
                        want = artifact.sha256 or (entry or {}).get("sha256")
                        row["verified"] = (known == want) if want else None
                    except (json.JSONDecodeError, KeyError, OSError):
                        pass
            rows.append(row)
    return rows


def _short(label: str) -> str:
    return label.rsplit("/", 1)[-1]


__all__ = ["Artifact", "ChecksumMismatch", "FetchResult", "WeightsLock", "WeightsMissing", "artifact_for",
           "cache_dir", "cache_state", "default_lock_path", "ensure", "fetch_artifact", "fetch_backbones",
           "offline_default", "sha256_file", "sources_of", "verify"]

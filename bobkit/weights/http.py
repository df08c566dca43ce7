"""Resumable HTTP download into `<dest>.part`, renamed into place only when complete.

A cut connection is retried with a Range request from the bytes already on disk; a server that
ignores Range (200 instead of 206) restarts the file. What is left in `.part` after the retries
are spent is kept, so the next fetch resumes it.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from bobkit.errors import EnvironmentMissing

CHUNK = 1 << 20


class DownloadFailed(EnvironmentMissing):
    """A download that could not complete (exit 3)."""


class AuthenticationNeeded(EnvironmentMissing):
    """The server wants credentials (licence-gated Hugging Face files)."""


class _Incomplete(Exception):
    pass


def _headers(url: str, have: int) -> dict[str, str]:
    from bobkit import __version__

    headers = {"User-Agent": f"bobkit/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    host = urlparse(url).hostname or ""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token and (host == "huggingface.co" or host.endswith(".huggingface.co")):
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _total_from(resp, have: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def download(url: str, dest: Path, *, retries: int = 4, backoff: float = 1.0, timeout: float = 60.0,
             progress: bool = True, label: str | None = None) -> Path:
    """Download `url` to `dest` (atomically, resumable); return dest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    last_error = ""
    bar = _Progress(label or dest.name, enabled=progress)
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers=_headers(url, have))
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    if have and resp.status == 200:
                        have = 0  # the server ignored Range: start over
                    elif resp.status == 206 and not (resp.headers.get("Content-Range") or "").startswith(
                            f"bytes {have}-"):
                        raise _Incomplete(f"server answered range {resp.headers.get('Content-Range')!r}")
                    total = _total_from(resp, have)
                    bar.start(total, have)
                    with open(part, "ab" if have else "wb") as fh:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            fh.write(chunk)
                            bar.advance(len(chunk))
                    size = part.stat().st_size
                    if total is not None and size != total:
                        raise _Incomplete(f"connection closed at {size} of {total} bytes")
                os.replace(part, dest)
                return dest
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:
                    total = _total_from(exc, 0)
                    if total == have:
                        os.replace(part, dest)
                        return dest
                    part.unlink(missing_ok=True)
                    last_error = "server refused the resume range; restarting"
                elif exc.code in (401, 403):
                    raise AuthenticationNeeded(_auth_message(url, exc.code)) from None
                elif exc.code == 404:
                    raise DownloadFailed(f"{url}: not found (HTTP 404); check the URL in "
                                         "manifests/backbones.yaml") from None
                elif exc.code < 500 and exc.code != 429:
                    raise DownloadFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
                else:
                    last_error = f"HTTP {exc.code}"
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError, _Incomplete) as exc:
                last_error = str(getattr(exc, "reason", exc)) or type(exc).__name__
            failures += 1
            if failures > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadFailed(f"{url}: download failed after {failures} attempts ({last_error}); "
                                     f"{kept} bytes kept in {part}, run the fetch again to resume")
            time.sleep(backoff * failures)
    finally:
        bar.stop()


def _auth_message(url: str, code: int) -> str:
    host = urlparse(url).hostname or ""
    if "huggingface.co" in host:
        parts = urlparse(url).path.strip("/").split("/")
        repo = "/".join(parts[:2])
        return (f"{url}: HTTP {code}; the Hugging Face repository {repo} is licence-gated: accept its licence at "
                f"https://huggingface.co/{repo}, then set HF_TOKEN=<your token> (or run `huggingface-cli login`) "
                "and fetch again")
    return f"{url}: HTTP {code} (the server wants credentials); download the file by hand into the cache"


class _Progress:
    """A rich progress bar on stderr (nothing when disabled)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._progress = None
        self._task = None

    def start(self, total: int | None, done: int) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(),
                                      console=Console(stderr=True), transient=False)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total, completed=done)
        else:
            self._progress.update(self._task, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

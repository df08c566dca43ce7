"""manifests/weights.lock: the sha256 of every weights file bobkit has fetched.

The first fetch of a file records its digest; every later fetch (on any machine that uses the same
lock file) must produce the same bytes. JSON, sorted, rewritten atomically under a file lock so
that parallel fetches do not lose entries.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bobkit.results import atomic_write_text

LOCK_COMMENT = ("sha256 of each weights file, recorded by `bobkit weights fetch` on first download; "
                "later downloads must match. Keys: URL, or hf://<repo>/<file>.")


def default_lock_path() -> Path:
    env = os.environ.get("BOBKIT_WEIGHTS_LOCK")
    if env:
        return Path(env)
    from bobkit.manifest.loader import builtin_manifest_dir

    return builtin_manifest_dir() / "weights.lock"


class WeightsLock:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_lock_path()

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            from bobkit.errors import BadInput

            raise BadInput(f"{self.path}: not a valid weights lock ({exc}); fix or delete it") from None
        return dict(data.get("files", {}))

    def get(self, key: str) -> dict[str, Any] | None:
        return self.read().get(key)

    def record(self, key: str, sha256: str, size: int, backbones: tuple[str, ...] = ()) -> None:
        """Add `key` (first sight wins). A read-only lock (an installed image) is reported, not fatal:
        the file was still checked against the manifest and any digest the lock already holds."""
        try:
            self._record(key, sha256, size, backbones)
        except OSError as exc:
            import sys

            sys.stderr.write(f"warning: could not record {key} in {self.path} ({exc.strerror or exc}); "
                             "set BOBKIT_WEIGHTS_LOCK to a writable file to keep the digest\n")

    def _record(self, key: str, sha256: str, size: int, backbones: tuple[str, ...]) -> None:
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(_mutex_path(self.path)), timeout=120):
            files = self.read()
            if key in files:
                return
            entry: dict[str, Any] = {"sha256": sha256, "size": size,
                                     "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            if backbones:
                entry["backbones"] = sorted(backbones)
            files[key] = entry
            body = json.dumps({"comment": LOCK_COMMENT, "files": dict(sorted(files.items()))}, indent=2) + "\n"
            atomic_write_text(self.path, body)


def _mutex_path(path: Path) -> Path:
    """The inter-process mutex for a lock file: kept in the temp dir, not next to the manifests."""
    import hashlib

    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bobkit-weights-lock-{digest}.mutex"

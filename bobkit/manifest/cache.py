"""A pickled copy of the validated Catalog, so commands that only read it start fast.

Validating the manifests costs pydantic schema builds for every model plus the YAML and CSV reads
(about 0.3 s), a third of the one second `bobkit verify` may take (benchmarks/verify_speed.py).
The copy is keyed by everything the Catalog is made from: each manifest file's path and content
(200 KB hash in a few ms; mtimes can be too coarse to see a quick rewrite), the source of the
schema modules, and bobkit's version; any change makes a new key, so a stale copy is never read. Bad manifests are never cached (loading raised before the write).

Where: $BOBKIT_CACHE, else ~/.cache/bobkit, under catalog/. BOBKIT_CATALOG_CACHE=0 turns it off.
A copy that cannot be read or written is ignored: the cache only ever saves time.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Iterable

SCHEMA_MODULES = ("models.py", "hparams.py", "loader.py", "cache.py")
KEEP = 8  # copies kept per cache folder (one per manifest set in use), oldest removed


def cache_root() -> Path | None:
    """$BOBKIT_CACHE, else ~/.cache/bobkit; None where there is no home (a container's unnamed uid)."""
    env = os.environ.get("BOBKIT_CACHE")
    try:
        return Path(env).expanduser() if env else Path.home() / ".cache" / "bobkit"
    except RuntimeError:
        return None


def enabled() -> bool:
    return os.environ.get("BOBKIT_CATALOG_CACHE", "1").lower() not in ("0", "false", "no", "off")


def manifest_files(dirs: Iterable[Path]) -> list[Path]:
    """The files load_catalog reads, in the order it reads them."""
    files: list[Path] = []
    for d in dirs:
        if d.is_file():
            files.append(d)
        elif d.is_dir():
            files += sorted(d.rglob("*.yaml")) + sorted(d.rglob("*.yml")) + sorted(d.rglob("*.csv"))
    return files


def cache_key(dirs: Iterable[Path]) -> str | None:
    """A digest of every input to the Catalog; None when a folder is missing (let the loader say so)."""
    from bobkit import __version__

    dirs = list(dirs)
    if not all(d.exists() for d in dirs):
        return None
    h = hashlib.sha256(f"bobkit {__version__}\n".encode())
    here = Path(__file__).parent
    for name in SCHEMA_MODULES:
        h.update((here / name).read_bytes())
    for d in dirs:
        h.update(f"dir {d.resolve()}\n".encode())
    for path in manifest_files(dirs):
        try:
            data = path.read_bytes()
        except OSError:  # unreadable: no key, and the loader names the file
            return None
        h.update(f"{path.resolve()} {len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()[:32]


def read(key: str):
    root = cache_root()
    if root is None:
        return None
    path = root / "catalog" / f"{key}.pickle"
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file: ignore it, it is rebuilt
        return None


def write(key: str, catalog) -> None:
    root = cache_root()
    if root is None:
        return
    from bobkit.results import atomic_path

    folder = root / "catalog"
    try:
        with atomic_path(folder / f"{key}.pickle", fsync=False) as tmp, open(tmp, "wb") as f:
            pickle.dump(catalog, f, protocol=pickle.HIGHEST_PROTOCOL)
        _prune(folder)
    except OSError:  # read-only home, full disk: run without the cache
        return


def _prune(folder: Path) -> None:
    copies = sorted(folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[KEEP:]:
        old.unlink(missing_ok=True)

"""Shared fixtures: the hand-made mini manifests, and a way to run the CLI as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "tests" / "fixtures" / "mini"


@pytest.fixture
def mini_dir() -> Path:
    return MINI


@pytest.fixture
def mini_catalog():
    from bobkit.manifest.loader import load_catalog

    return load_catalog([MINI], builtin=False)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m bobkit ARGS` in a fresh process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "bobkit", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


def default_sigint() -> None:
    """preexec_fn for children a test interrupts with SIGINT: a shell starts background jobs with SIGINT
    ignored, the child inherits that, and Python then installs no KeyboardInterrupt handler; the test's
    Ctrl-C would do nothing. Restore the default so the child sees what a terminal user's process sees."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)

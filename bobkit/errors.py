"""Exit codes and the one error type the CLI turns into a single readable line.

Exit codes (documented in the README):
  0 ok · 1 verification failed · 2 bad input (manifest, arguments) ·
  3 environment missing (Docker daemon, GPU, dataset, weights) · 4 a run failed
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    VERIFY_FAILED = 1
    BAD_INPUT = 2
    ENVIRONMENT = 3
    RUN_FAILED = 4


class BobkitError(Exception):
    """A user-facing failure: what is wrong, where, and what to do."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(BobkitError):
    exit_code = ExitCode.BAD_INPUT


class EnvironmentMissing(BobkitError):
    exit_code = ExitCode.ENVIRONMENT


class RunFailed(BobkitError):
    exit_code = ExitCode.RUN_FAILED


def unknown_id(kind: str, wanted: str, known: list[str]) -> BadInput:
    """An unknown id, with the closest known ids as the suggested fix."""
    import difflib

    close = difflib.get_close_matches(wanted, known, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; `bobkit list {kind}s` shows them all"
    return BadInput(f"unknown {kind} '{wanted}'{hint}")

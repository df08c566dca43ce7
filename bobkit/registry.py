"""Name → "module:attribute" registries, resolved lazily so heavy modules load only when used."""

from __future__ import annotations

import importlib
from typing import Any

from bobkit.errors import BadInput


def resolve(registry: dict[str, str], name: str, what: str) -> Any:
    """The attribute registered under `name`, or one clear line listing the known names."""
    if name not in registry:
        raise BadInput(f"unknown {what} '{name}'; known: {', '.join(sorted(registry))}")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)

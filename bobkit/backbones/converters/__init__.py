"""Checkpoint formats → the state dict of the module bobkit builds. One function per format.

A converter is registered with `@converter("<format>")` (the manifest's `weights.format`) and
receives the raw checkpoint file, the freshly built module and the manifest entry. It walks the
checkpoint with a KeyMapper: every source key is either moved to a target name or dropped for a
reason the converter states (a projection head, a text tower, a decoder). A key it neither moves
nor drops is an error, so nothing in a checkpoint is silently ignored. bobkit.backbones.loading
then checks the result against the module: every expected key present, no key left over.
"""

from __future__ import annotations

import importlib
from typing import Callable

from bobkit.backbones.converters.common import (
    CheckpointMismatch,
    ConvertContext,
    Converted,
    KeyMapper,
)

Converter = Callable[[ConvertContext], Converted]
CONVERTERS: dict[str, Converter] = {}

# Modules whose import registers converters; imported lazily (they need torch).
_MODULES = (
    "bobkit.backbones.converters.timm_native",
    "bobkit.backbones.converters.resnet",
    "bobkit.backbones.converters.vit",
    "bobkit.backbones.converters.convnext",
    "bobkit.backbones.converters.swin",
    "bobkit.backbones.converters.clip",
    "bobkit.backbones.converters.diffusion",
    "bobkit.backbones.converters.torchscript",
    "bobkit.backbones.converters.user",
)


def converter(fmt: str) -> Callable[[Converter], Converter]:
    """Register `fn` as the converter of checkpoint format `fmt`."""

    def register(fn: Converter) -> Converter:
        if fmt in CONVERTERS and CONVERTERS[fmt] is not fn:
            raise ValueError(f"checkpoint format {fmt!r} has two converters")
        CONVERTERS[fmt] = fn
        return fn

    return register


def converter_for(fmt: str) -> Converter:
    for name in _MODULES:
        importlib.import_module(name)
    if fmt not in CONVERTERS:
        raise CheckpointMismatch(f"no converter for checkpoint format '{fmt}'; known: {', '.join(sorted(CONVERTERS))}")
    return CONVERTERS[fmt]


def known_formats() -> list[str]:
    for name in _MODULES:
        importlib.import_module(name)
    return sorted(CONVERTERS)


__all__ = ["CONVERTERS", "CheckpointMismatch", "ConvertContext", "Converted", "KeyMapper", "converter",
           "converter_for", "known_formats"]

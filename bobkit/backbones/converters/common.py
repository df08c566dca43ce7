"""What every converter shares: the context it gets, the KeyMapper it walks a checkpoint with,
and the checkpoint reader."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from bobkit.errors import EnvironmentMissing


class CheckpointMismatch(EnvironmentMissing):
    """A checkpoint that does not fit the architecture it is loaded into (exit 3)."""


@dataclass
class ConvertContext:
    """Everything a converter may look at: the file, the module to fill, the manifest entry."""

    path: Path
    model: Any  # torch.nn.Module as built by the zoo (no classifier head)
    backbone: Any  # bobkit.manifest.models.Backbone
    source: Any  # bobkit.manifest.models.WeightsSource
    builder_options: dict[str, Any] = field(default_factory=dict)
    loaded: Any = None  # the file's contents when the caller has read it already (read once)

    @property
    def fmt(self) -> str:
        return self.source.format

    @property
    def family(self) -> str:
        return self.backbone.family

    def load(self) -> Any:
        return self.loaded if self.loaded is not None else read_checkpoint(self.path)


@dataclass
class Converted:
    """A converter's result: target-named tensors, and what was dropped and why.

    `classifier` holds a checkpoint's own classification head ('weight', 'bias'), kept aside so a
    build with num_classes > 0 can use it; its keys are still counted in `dropped` because the
    backbone itself has no head."""

    state: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> source keys
    module: Any = None  # formats that ship a whole module (TorchScript) put it here instead of `state`
    notes: list[str] = field(default_factory=list)
    classifier: dict[str, Any] = field(default_factory=dict)  # 'weight', 'bias' of the checkpoint's head

    def dropped_count(self) -> int:
        return sum(len(v) for v in self.dropped.values())


class KeyMapper:
    """Walks a source state dict so that every key is either moved or dropped for a stated reason."""

    def __init__(self, source: Mapping[str, Any], where: str, fmt: str) -> None:
        self.remaining: dict[str, Any] = dict(source)
        self.where = where
        self.fmt = fmt
        self.out = Converted()

    # -- moving
    def move(self, src: str, dst: str, transform: Callable[[Any], Any] | None = None) -> None:
        if src not in self.remaining:
            raise CheckpointMismatch(f"{self.where}: expected key '{src}' in this {self.fmt} checkpoint; "
                                     "check that the file is the one the manifest names")
        value = self.remaining.pop(src)
        if dst in self.out.state:
            raise CheckpointMismatch(f"{self.where}: two checkpoint keys map to '{dst}'")
        self.out.state[dst] = transform(value) if transform else value

    def take_prefix(self, prefix: str, replacement: str = "") -> int:
        """Move every key under `prefix`, replacing the prefix."""
        keys = [k for k in self.remaining if k.startswith(prefix)]
        for k in keys:
            self.move(k, replacement + k[len(prefix):])
        return len(keys)

    def rename(self, rule: Callable[[str], str | None], keys: Iterable[str] | None = None) -> None:
        """Move each remaining key (or `keys`) to rule(key); keys for which rule returns None stay."""
        for k in list(keys if keys is not None else self.remaining):
            new = rule(k)
            if new is not None:
                self.move(k, new)

    # -- dropping
    def drop(self, match: str | Callable[[str], bool], reason: str, *, prefix: bool = True) -> int:
        """Drop keys starting with `match` (or equal to it with prefix=False, or where match(key))."""
        if callable(match):
            keys = [k for k in self.remaining if match(k)]
        elif prefix:
            keys = [k for k in self.remaining if k.startswith(match)]
        else:
            keys = [k for k in self.remaining if k == match]
        for k in keys:
            self.remaining.pop(k)
        if keys:
            self.out.dropped.setdefault(reason, []).extend(keys)
        return len(keys)

    def keep_classifier(self, name: str, reason: str) -> bool:
        """Drop `name`.weight/.bias from the backbone (for `reason`) but keep them aside in
        `Converted.classifier`; False when the checkpoint has no such pair."""
        weight, bias = name + ".weight", name + ".bias"
        if self.out.classifier or weight not in self.remaining or bias not in self.remaining:
            return False
        self.out.classifier = {"weight": self.remaining[weight], "bias": self.remaining[bias]}
        self.drop(weight, reason, prefix=False)
        self.drop(bias, reason, prefix=False)
        return True

    def result(self) -> Converted:
        if self.remaining:
            keys = sorted(self.remaining)
            shown = ", ".join(keys[:6]) + (f", … ({len(keys)} in all)" if len(keys) > 6 else "")
            raise CheckpointMismatch(f"{self.where}: the {self.fmt} converter does not know checkpoint key(s) "
                                     f"{shown}; the file is not in the expected layout")
        return self.out


def read_checkpoint(path: Path) -> Any:
    """torch.load / safetensors. A pickle that the weights-only unpickler refuses (argparse args in
    MAE/MoCo files, Lightning state in LDM files) is read with bobkit's restricted unpickler
    (bobkit.safe_pickle): its tensors load, its other objects become inert placeholders."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        if "TorchScript" in str(exc) or _is_torchscript(path):
            return torch.jit.load(str(path), map_location="cpu")
        from bobkit import safe_pickle

        return safe_pickle.load(path)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_torchscript_or_state(path: Path) -> Any:
    """A TorchScript archive (OpenAI CLIP, SSCD) as a ScriptModule, anything else via read_checkpoint."""
    import torch

    if _is_torchscript(Path(path)):
        return torch.jit.load(str(path), map_location="cpu")
    return read_checkpoint(path)


def tensors_of(obj: Any, where: str, wrappers: tuple[str, ...] = ("state_dict", "model")) -> dict[str, Any]:
    """The state dict inside a checkpoint: the object itself, or under one of `wrappers`."""
    import torch

    if isinstance(obj, torch.jit.ScriptModule):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for w in wrappers:
            inner = obj.get(w)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        tops = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointMismatch(f"{where}: no state dict found (top-level keys: {tops})")
    raise CheckpointMismatch(f"{where}: expected a state dict, found {type(obj).__name__}")


def drop_classifier(km: KeyMapper, names: Iterable[str], why: str) -> None:
    """Drop a classifier the built backbone does not have (num_classes=0); named per format. The first
    one found is kept aside (Converted.classifier) for a build that asks for a classifier of its shape."""
    for name in names:
        if km.keep_classifier(name, why):
            continue
        km.drop(name + ".weight", why, prefix=False)
        km.drop(name + ".bias", why, prefix=False)

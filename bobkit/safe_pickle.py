"""The one way bobkit reads a pickled checkpoint that torch's weights-only loader refuses.

Nothing may execute from data. torch's weights-only loader refuses files that pickle objects it does
not know: argparse arguments in MAE/MoCo checkpoints, a Lightning callback in sd-v1-4.ckpt, the RNG
and optimizer states of bobkit's own last.pt. `load()` reads such files with a restricted unpickler:
tensors, storages, numpy arrays and plain containers are rebuilt as torch and numpy rebuild them;
every other global the file names becomes an inert placeholder (`Unreadable`) that keeps its name
and state and never runs its code. A pickle that asks for os.system gets a placeholder, not a shell.

torch.load takes the unpickler as `pickle_module`, which works on both torch builds bobkit runs
(2.1 in the detection image, 2.14 elsewhere).
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

# (module, name) pairs rebuilt for real: constructors of data, no side effects.
_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"), ("argparse", "Namespace"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("builtins", "range"), ("_codecs", "encode"),
    ("torch", "Size"), ("torch", "device"), ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class Unreadable:
    """Stands for an object of a class bobkit does not rebuild; holds what the file stored, runs nothing."""

    _bobkit_global = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "Unreadable":  # a placeholder used as a function
        return type(self)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<unreadable {self._bobkit_global}>"


def _allowed(module: str, name: str) -> Any | None:
    import importlib

    if (module, name) in _ALLOWED or (module == "torch._utils" and name.startswith("_rebuild")) \
            or (module in ("numpy.dtypes", "numpy") and name.endswith("DType")):
        return getattr(importlib.import_module(module), name)
    if module == "torch":
        import torch

        value = getattr(torch, name, None)
        return value if isinstance(value, torch.dtype) else None
    return None


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is not None:
            return found
        return type(name, (Unreadable,), {"_bobkit_global": f"{module}.{name}"})


# torch.load(pickle_module=...) wants a module with Unpickler and load.
restricted = types.SimpleNamespace(Unpickler=Unpickler, load=lambda f, **kw: Unpickler(f, **kw).load(),
                                   __name__="bobkit.safe_pickle")


def load(path: Path | str, map_location: Any = "cpu") -> Any:
    """A torch checkpoint read with the restricted unpickler (see the module docstring)."""
    import torch

    return torch.load(Path(path), map_location=map_location, pickle_module=restricted)

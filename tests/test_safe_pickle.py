"""bobkit's restricted unpickler: checkpoints load, nothing in them runs."""

from __future__ import annotations

import argparse
import os
import random
import sys
import types

import numpy as np
import torch

from bobkit import safe_pickle
from bobkit.backbones.converters.common import read_checkpoint


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_command_is_a_placeholder_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"payload": _Shell(marker), "weight": torch.ones(2)}, tmp_path / "evil.pt")
    for loaded in (safe_pickle.load(tmp_path / "evil.pt"), read_checkpoint(tmp_path / "evil.pt")):
        assert isinstance(loaded["payload"], safe_pickle.Unreadable) and "system" in repr(loaded["payload"])
        assert torch.equal(loaded["weight"], torch.ones(2))
    assert not marker.exists()


def test_a_run_checkpoints_states_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3)}, "param": torch.nn.Parameter(torch.ones(2)),
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
             "args": argparse.Namespace(lr=0.1), "dtype": torch.float16, "size": torch.Size([2]),
             "scalar": np.float32(3.0)}
    torch.save(state, tmp_path / "last.pt")
    back = safe_pickle.load(tmp_path / "last.pt")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and isinstance(back["param"], torch.nn.Parameter)
    assert back["args"].lr == 0.1 and back["dtype"] is torch.float16 and back["size"] == torch.Size([2])
    assert back["scalar"] == np.float32(3.0)
    np.random.set_state(back["rng"]["numpy"])
    random.setstate(back["rng"]["python"])
    torch.set_rng_state(back["rng"]["torch"])


def test_a_foreign_class_in_a_checkpoint_does_not_stop_its_weights(tmp_path):
    """sd-v1-4.ckpt pickles a Lightning ModelCheckpoint at its top level; Lightning is not installed."""
    fake = types.ModuleType("pytorch_lightning_stand_in")

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/loss"

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = fake.__name__, "ModelCheckpoint"
    fake.ModelCheckpoint = ModelCheckpoint
    sys.modules[fake.__name__] = fake
    try:
        torch.save({"callbacks": [ModelCheckpoint()], "state_dict": {"w": torch.zeros(1)}},
                   tmp_path / "sd.ckpt")
    finally:
        del sys.modules[fake.__name__]
    loaded = read_checkpoint(tmp_path / "sd.ckpt")
    assert torch.equal(loaded["state_dict"]["w"], torch.zeros(1))
    [placeholder] = loaded["callbacks"]
    assert placeholder.state == {"monitor": "val/loss"}

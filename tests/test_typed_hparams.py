"""Runners read hparams as their protocol's pydantic model (RunSpec.typed_hparams()), never as a dict:
each default is stated once, in bobkit/manifest/hparams.py, and a valid 0 stays 0."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("bobkit/tasks", "bobkit/data")
# `hp.get(`, `hparams.get(`, `hp[`, `hparams[` (also as an attribute: spec.hparams[...], ctx.hparams.get(...))
DICT_ACCESS = re.compile(r"\b(?:hp|hparams)\s*(?:\.\s*get\s*\(|\[)")


def dict_accesses(root: Path = REPO) -> list[str]:
    hits = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if DICT_ACCESS.search(line):
                    hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


def test_no_runner_reads_hparams_as_a_dict():
    hits = dict_accesses()
    assert not hits, ("hparams read as a dict (use spec.typed_hparams() and attribute access; defaults live in "
                      "bobkit/manifest/hparams.py):\n" + "\n".join(hits))


@pytest.mark.parametrize("line", ['x = hp.get("lr", 0.1)', "n = hp['epochs']", 'ctx.hparams.get("ks")',
                                  'spec.hparams["detector"]', "f'{hp[\"per_gpu_batch\"]}'", "hp .get('a')"])
def test_the_scan_sees_dict_access(tmp_path, line):
    (tmp_path / "bobkit" / "tasks").mkdir(parents=True)
    (tmp_path / "bobkit" / "data").mkdir(parents=True)
    (tmp_path / "bobkit" / "tasks" / "r.py").write_text(f"ok = hp.lr\n{line}\n")
    assert dict_accesses(tmp_path) == [f"bobkit/tasks/r.py:2: {line}"]


def _classification_hparams(**changes):
    from bobkit.manifest.hparams import ClassificationHparams

    base = dict(lr=0.1, batch_size=512, per_gpu_batch=128, optimizer="sgd", momentum=0.9, weight_decay=0.0,
                epochs=10, warmup_epochs=0, schedule="cosine", warmup_lr=0.0, min_lr=0.0, mixup=0.0, cutmix=0.0,
                label_smoothing=0.0, reprob=0.0, drop_path=0.0)
    return ClassificationHparams(**{**base, **changes})


@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.5), ("lars", 0.0), ("lars", 0.95)])
def test_the_optimizer_gets_the_recipe_momentum_even_zero(optimizer, momentum):
    import torch

    from bobkit.tasks.cls_train import make_optimizer

    hp = _classification_hparams(optimizer=optimizer, momentum=momentum)
    opt = make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2, 2))]}], hp)
    assert [g["momentum"] for g in opt.param_groups] == [momentum]


def test_nesterov_sgd_with_zero_momentum_is_named():
    import torch

    from bobkit.errors import BadInput
    from bobkit.tasks.cls_train import make_optimizer

    with pytest.raises(BadInput, match="Nesterov momentum, which needs momentum > 0"):
        make_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], _classification_hparams(momentum=0.0))


def test_sgd_without_momentum_is_refused_by_the_schema():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs momentum"):
        _classification_hparams(momentum=None)


def test_effective_lr_is_the_scaled_lr():
    from bobkit.tasks.cls_train import effective_lr

    assert effective_lr(_classification_hparams(lr=0.1)) == 0.1
    assert effective_lr(_classification_hparams(lr=0.1, lr_scaling="linear_256")) == pytest.approx(0.1 * 512 / 256)

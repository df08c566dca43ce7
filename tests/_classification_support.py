"""Test-only helpers for the classification tests: a mini catalog of timm's tiny test models
(built by the real backbone zoo with pretrained=False), and RunSpecs with changed hparams."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

MINI_BACKBONES = """
backbones:
  - id: tiny_convnext
    name: ConvNeXt (timm test model)
    architecture: ConvNeXt test
    family: convnext
    timm_model: test_convnext
    params_m: 0.3
    method: supervised
    kind: supervised
    pretrain_data: none
    weights: {format: timm, timm_name: test_convnext.r160_in1k}
    resolution: 160
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
    tasks: [classification]
    source: test fixture
    confidence: bobkit
  - id: tiny_vit
    name: ViT (timm test model)
    architecture: ViT test
    family: vit
    timm_model: test_vit
    params_m: 0.4
    method: supervised
    kind: supervised
    pretrain_data: none
    weights: {format: timm, timm_name: test_vit.r160_in1k}
    resolution: 160
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    tasks: [classification]
    source: test fixture
    confidence: bobkit
"""

FINETUNE = """
      seed: 0
      optimizer: adamw
      lr: 2.0e-3
      weight_decay: 0.05
      layer_decay: 0.75
      epochs: 2
      warmup_epochs: 1
      warmup_lr: 1.0e-4
      min_lr: 1.0e-5
      schedule: cosine
      batch_size: 16
      per_gpu_batch: 8
      resolution: 32
      mixup: 0.8
      cutmix: 1.0
      label_smoothing: 0.1
      reprob: 0.25
      randaugment: rand-m9-mstd0.5-inc1
      color_jitter: 0.4
      interpolation: random
      drop_path: 0.1
      amp: true
      pretrained: true
"""

RECIPES = f"""
recipes:
  - id: t_ft
    title: Fine-tune (test)
    task: classification
    protocol: finetune
    hparams:{textwrap.indent(FINETUNE, '  ')}
    source: test fixture
    confidence: bobkit
  - id: t_lp
    title: Linear probe (test)
    task: classification
    protocol: linear_probe
    base: t_ft
    hparams:
      optimizer: lars
      momentum: 0.9
      lr: 0.1
      lr_scaling: linear_256
      weight_decay: 0.0
      layer_decay: null
      mixup: 0.0
      cutmix: 0.0
      label_smoothing: 0.0
      reprob: 0.0
      randaugment: null
      color_jitter: null
      interpolation: bicubic
      crop_scale: [0.08, 1.0]
      drop_path: 0.0
      trainable: head
      head_init: trunc_normal_0.01
      head_batchnorm: true
      batch_size: 8
      warmup_epochs: 0
    source: test fixture
    confidence: bobkit
  - id: t_lp_cached
    title: Linear probe on cached features (test)
    task: classification
    protocol: linear_probe
    base: t_lp
    hparams: {{feature_cache: true}}
    source: test fixture
    confidence: bobkit
  - id: t_semi
    title: 10 % ImageNet (test)
    task: classification
    protocol: semi_supervised
    base: t_ft
    hparams: {{subset: 10pct, batch_size: 8}}
    source: test fixture
    confidence: bobkit
  - id: t_chexpert
    title: CheXpert (test)
    task: classification
    protocol: chexpert
    base: t_ft
    hparams: {{mixup: 0.0, cutmix: 0.0, reprob: 0.0, multilabel: true, eval_metric: auc, train_fraction: 0.5, batch_size: 8}}
    source: test fixture
    confidence: bobkit
"""

EXPERIMENTS = """
experiments:
  - id: clsmini
    title: Classification mini
    description: test
    grid:
      - {recipe: t_ft, backbones: [tiny_convnext], datasets: [imagenet]}
    table:
      kind: cells
      settings:
        - {id: ft, title: Fine-tune, recipes: [t_ft], datasets: [imagenet], metric: top1}
    source: test fixture
    confidence: bobkit
"""


def write_mini_manifests(folder: Path) -> Path:
    """Backbones, recipes and one experiment; the datasets come from the built-in manifests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "backbones.yaml").write_text(MINI_BACKBONES)
    (folder / "recipes.yaml").write_text(RECIPES)
    (folder / "experiments.yaml").write_text(EXPERIMENTS)
    return folder


def mini_catalog(folder: Path):
    from bobkit.manifest.loader import load_catalog

    return load_catalog([write_mini_manifests(folder)])


def make_spec(catalog, recipe: str, backbone: str, dataset: str, *, smoke: bool = True, experiment: str = "clsmini",
              **hparams: Any):
    """A RunSpec as plan() makes it, with hparams changed and the id recomputed."""
    from bobkit.plan import RunSpec, run_id, spec_for

    spec = spec_for(catalog, experiment, catalog.recipes[recipe], catalog.backbones[backbone],
                    catalog.datasets[dataset], lr=None, seed=0, smoke=False, faithful=False)
    body = spec.model_dump(mode="json", exclude={"id"})
    body["hparams"].update(hparams)
    body["smoke"] = smoke
    body["dataset_spec"]["synthetic"] = smoke
    body["gpus"] = 1
    return RunSpec(id=run_id(body), **body)


def cli_argv(python: str, *args: str) -> list[str]:
    """`python -m bobkit ARGS`, as a user and the executors run it."""
    return [python, "-m", "bobkit", *args]


def install_stand_in(monkeypatch=None) -> None:
    """No-op kept for the OOD and retrieval tests that call it: it stood in for bobkit.backbones.zoo
    while the zoo was being written; the real zoo builds every test backbone now."""

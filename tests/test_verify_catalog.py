"""A tiny hand-made catalog (written to tmp_path) shared by the verify, ranking, table and report tests.

Five backbones (three ViT-like, two CNN), two retrieval datasets, one classification dataset, a
cells experiment (retrieval MRR), a ranking experiment (Table-2-like) and a compact ranking
(Table-3-like), tolerances for every tier, and published values in fraction, percent and rank units.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from bobkit.manifest.loader import load_catalog

BACKBONES = {
    # id: (family, params_m, pretrain_images_m, kind)
    "vit_s": ("vit", 22.0, 1.3, "self-supervised"),
    "vit_b": ("vit", 86.0, 14.0, "supervised"),
    "swin_t": ("swinv2", 28.0, 1.3, "supervised"),
    "cnx_b": ("convnext", 88.0, 14.0, "supervised"),
    "rn50": ("resnet", 25.0, 1.3, "vision-language"),
}


def _backbone(bid: str) -> str:
    family, params, images, kind = BACKBONES[bid]
    return textwrap.dedent(f"""\
      - id: {bid}
        name: {bid.upper()}
        architecture: {family}
        family: {family}
        timm_model: resnet18
        params_m: {params}
        method: test
        kind: {kind}
        pretrain_data: test
        pretrain_images_m: {images}
        weights: {{format: timm, timm_name: resnet18.a1_in1k}}
        resolution: 32
        mean: [0.5, 0.5, 0.5]
        std: [0.5, 0.5, 0.5]
        tasks: [classification, retrieval]
        aliases: [alias-{bid}]
        source: test
        confidence: bobkit
    """)


DATASETS = """\
datasets:
  - {id: ret_a, name: RetA, task: retrieval, layout: retrieval_lists, layout_doc: x, path: a, license: test,
     splits: {query: {name: query, images: 400}, database: {name: db, images: 1000}}, source: test, confidence: bobkit}
  - {id: ret_b, name: RetB, task: retrieval, layout: retrieval_lists, layout_doc: x, path: b, license: test,
     splits: {query: {name: query}, database: {name: db}}, source: test, confidence: bobkit}
  - {id: cls_a, name: ClsA, task: classification, num_classes: 10, layout: imagefolder, layout_doc: x, path: c,
     license: test, splits: {train: {name: train, images: 5000}, eval: {name: val, images: 2500}},
     source: test, confidence: bobkit}
"""

RECIPES = """\
recipes:
  - id: retr
    title: retrieval
    task: retrieval
    protocol: retrieval
    hparams: {lr: 0.0, batch_size: 8, per_gpu_batch: 8}
    source: test
    confidence: bobkit
  - id: ft
    title: fine-tune
    task: classification
    protocol: finetune
    lr_grid: [0.001, 0.0001]
    hparams: {lr: 0.001, batch_size: 8, per_gpu_batch: 8, optimizer: adamw, weight_decay: 0.05, epochs: 1,
              warmup_epochs: 0, schedule: cosine, warmup_lr: 0.0, min_lr: 0.0, mixup: 0.0, cutmix: 0.0,
              label_smoothing: 0.0, reprob: 0.0, drop_path: 0.0}
    source: test
    confidence: bobkit
"""

ALL = "[vit_s, vit_b, swin_t, cnx_b, rn50]"
EXPERIMENTS = f"""\
experiments:
  - id: retrieval
    title: Retrieval MRR
    description: cells table
    grid: [{{recipe: retr, backbones: {ALL}, datasets: [ret_a, ret_b]}}]
    table:
      kind: cells
      settings:
        - {{id: ret_a, title: RetA, recipes: [retr], datasets: [ret_a], metric: mrr}}
        - {{id: ret_b, title: RetB, recipes: [retr], datasets: [ret_b], metric: mrr}}
    source: test
    confidence: bobkit
  - id: rank
    title: Which backbone
    description: ranking table
    grid:
      - {{recipe: ft, backbones: {ALL}, datasets: [cls_a]}}
      - {{recipe: retr, backbones: {ALL}, datasets: [ret_a, ret_b]}}
    table:
      kind: ranking
      top_k: 3
      settings:
        - {{id: classification, title: Cls, recipes: [ft], datasets: [cls_a], metric: top1}}
        - {{id: retrieval, title: Ret, recipes: [retr], datasets: [ret_a, ret_b], metric: mrr}}
    source: test
    confidence: bobkit
  - id: small
    title: Compact backbones
    description: ranking under 30M
    table:
      kind: ranking
      top_k: 2
      params_below_m: 30
      settings:
        - {{id: classification, title: Cls, recipes: [ft], datasets: [cls_a], metric: top1}}
    source: test
    confidence: bobkit
"""

TOLERANCES = """\
tolerances:
  - {id: eval, tier: eval, min_abs_pp: 0.1, rounding: true, source: test, confidence: bobkit}
  - {id: train, tier: train, se_multiplier: 2.0, min_abs_pp: 1.0, warn_multiplier: 2.0, source: test,
     confidence: bobkit}
  - {id: train-retrieval, tier: train, tasks: [retrieval], se_multiplier: 2.0, min_abs_pp: 0.5, warn_multiplier: 2.0,
     source: test, confidence: bobkit}
  - {id: rank, tier: rank, min_spearman: 0.9, top_k: 3, source: test, confidence: bobkit}
"""

# Published MRR for the retrieval table (fraction), a percent top-1 table with eval tier, and ranks.
PUBLISHED_MRR = {
    ("vit_s", "ret_a"): 0.50, ("vit_b", "ret_a"): 0.60, ("swin_t", "ret_a"): 0.55,
    ("cnx_b", "ret_a"): 0.70, ("rn50", "ret_a"): 0.40,
    ("vit_s", "ret_b"): 0.30, ("vit_b", "ret_b"): 0.35, ("swin_t", "ret_b"): 0.32,
    ("cnx_b", "ret_b"): 0.45, ("rn50", "ret_b"): 0.20,
}
PUBLISHED_TOP1_PCT = {"vit_s": 80.0, "vit_b": 84.0, "swin_t": 82.0, "cnx_b": 86.0, "rn50": 78.5}
PUBLISHED_RANKS = {"cnx_b": 1, "vit_b": 2, "swin_t": 3}


def published_csv() -> str:
    lines = ["experiment,backbone,dataset,metric,value,unit,source,confidence,tier"]
    for (b, d), v in PUBLISHED_MRR.items():
        name = f"alias-{b}" if b == "rn50" else b  # one published row names its backbone by alias
        lines.append(f"retrieval,{name},{d},mrr,{v},fraction,test table,primary,train")
    for b, v in PUBLISHED_TOP1_PCT.items():
        lines.append(f"rank,{b},cls_a,top1,{v},percent,test table,quoted,eval")
    for b, r in PUBLISHED_RANKS.items():
        lines.append(f"rank,{b},overall,rank,{r},rank,test prose,quoted,rank")
    return "\n".join(lines) + "\n"


def write_tiny_manifests(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "backbones.yaml").write_text("backbones:\n" + "".join(_backbone(b) for b in BACKBONES))
    (root / "datasets.yaml").write_text(DATASETS)
    (root / "recipes.yaml").write_text(RECIPES)
    (root / "experiments.yaml").write_text(EXPERIMENTS)
    (root / "tolerances.yaml").write_text(TOLERANCES)
    (root / "published").mkdir(exist_ok=True)
    (root / "published" / "tiny.csv").write_text(published_csv())
    return root


def tiny_catalog(tmp_path: Path):
    return load_catalog(extra=[write_tiny_manifests(tmp_path / "manifests")], builtin=False)


def record(backbone: str, dataset: str, recipe: str, metrics: dict, *, experiment: str = "retrieval",
           lr: float | None = None, seed: int = 0, smoke: bool = False, run_id: str | None = None) -> dict:
    """One finished_results()-shaped record."""
    return {"run_id": run_id or f"{backbone}-{dataset}-{recipe}-{lr}-{seed}", "experiment": experiment,
            "backbone": backbone, "dataset": dataset, "recipe": recipe, "task": "retrieval", "protocol": recipe,
            "lr": lr, "seed": seed, "smoke": smoke, "metrics": metrics}


def write_run(runs_dir: Path, rec: dict, old_layout: bool = False) -> Path:
    """A run directory as the runners leave it: spec.json plus metrics.json, in runs/<run id>/ listed in the
    experiment's index (old_layout: runs/<experiment>/<run id>/, as bobkit wrote it before runs were shared)."""
    from bobkit.results import RunDir, add_to_index

    if old_layout:
        run = runs_dir / rec["experiment"] / rec["run_id"]
    else:
        run = RunDir.of(runs_dir, rec["run_id"]).path
        add_to_index(runs_dir, rec["experiment"], [rec["run_id"]])
    run.mkdir(parents=True, exist_ok=True)
    spec = {"id": rec["run_id"], "experiment": rec["experiment"], "backbone": rec["backbone"],
            "dataset": rec["dataset"], "recipe": rec["recipe"], "task": rec["task"], "protocol": rec["protocol"],
            "hparams": {"lr": rec["lr"]}, "seed": rec["seed"], "smoke": rec["smoke"]}
    (run / "spec.json").write_text(json.dumps(spec))
    (run / "metrics.json").write_text(json.dumps({"run_id": rec["run_id"], "metrics": rec["metrics"],
                                                  "smoke": rec["smoke"]}))
    return run


def test_tiny_catalog_loads(tmp_path):
    cat = tiny_catalog(tmp_path)
    assert set(cat.backbones) == set(BACKBONES)
    assert set(cat.tolerances) == {"eval", "train", "train-retrieval", "rank"}
    assert len(cat.published) == len(PUBLISHED_MRR) + len(PUBLISHED_TOP1_PCT) + len(PUBLISHED_RANKS)

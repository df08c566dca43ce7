"""`bobkit gauntlet init`: write the small backbones manifest that describes a user's backbone.

The file holds one `backbones:` entry; what bobkit can measure (parameters, feature size, whether the
module gives multi-scale features for detection, the timm architecture's resolution and normalisation)
is filled in, what only the user knows (display name, method, kind, pretraining data) is a placeholder
marked `EDIT`. The file is validated like every manifest before it replaces anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bobkit.errors import BadInput

TIMM_FAMILY_PREFIXES = (("resnet", "resnet"), ("convnext", "convnext"), ("swinv2", "swinv2"), ("vit_", "vit"))
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def timm_family(arch: str) -> str:
    for prefix, family in TIMM_FAMILY_PREFIXES:
        if arch.startswith(prefix):
            return family
    raise BadInput(f"--timm {arch}: bobkit builds timm's resnet*, convnext*, swinv2* and vit_* architectures by "
                   "name; for another one write a function that returns timm.create_model(...) and use --entry")


def draft_entry(name: str, *, entry: str | None, timm_arch: str | None, checkpoint: str | None,
                hub_id: str | None) -> dict[str, Any]:
    """The manifest entry before measuring (params_m is a placeholder until measured)."""
    if not ID_PATTERN.match(name):
        raise BadInput(f"backbone name {name!r}: use lower-case letters, digits, '_', '.' or '-' (it becomes "
                       "the run folder's name)")
    if (entry is None) == (timm_arch is None):
        raise BadInput("give exactly one of --entry module:function or --timm ARCH")
    if entry is not None and (checkpoint or hub_id):
        raise BadInput("--checkpoint and --hub-id go with --timm; an --entry function loads its own weights")
    if checkpoint and hub_id:
        raise BadInput("give --checkpoint or --hub-id, not both")
    base: dict[str, Any] = {
        "id": name, "name": f"EDIT: display name of {name}", "source": "EDIT: paper or URL of this backbone",
        "confidence": "bobkit", "params_m": 1.0, "method": "EDIT: pretraining method",
        "kind": "supervised", "pretrain_data": "EDIT: pretraining data", "resolution": 224,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
        "tasks": ["classification", "ood_classification", "retrieval"],
    }
    if entry is not None:
        if ":" not in entry or not all(entry.partition(":")[::2]):
            raise BadInput(f"--entry {entry!r}: expected 'package.module:function'")
        return {**base, "architecture": "EDIT: architecture", "family": "custom", "timm_model": "entry",
                "entry": entry, "weights": {"format": "python"}}
    import timm

    if not timm.is_model(timm_arch):
        raise BadInput(f"--timm {timm_arch}: timm {timm.__version__} has no such architecture; "
                       "`python -c \"import timm; print(timm.list_models('vit_*'))\"` lists them")
    family = timm_family(timm_arch)
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise BadInput(f"--checkpoint {checkpoint}: no such file")
        weights = {"format": "checkpoint", "path": str(path.resolve())}
    elif hub_id:
        weights = {"format": "checkpoint", "hub_id": hub_id, "hub_file": "model.safetensors"}
    else:
        weights = {"format": "timm", "timm_name": timm_arch}
    return {**base, "architecture": timm_arch, "family": family, "timm_model": timm_arch, "weights": weights,
            "tasks": ["classification", "detection", "ood_classification", "ood_detection", "retrieval"]}


def measure(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill what the module tells: timm's resolution and normalisation, parameters, detection support."""
    from bobkit.backbones.custom import importable_from_cwd, probe_backbone
    from bobkit.manifest.models import Backbone

    importable_from_cwd()
    out = dict(raw)
    if raw["family"] != "custom":
        import timm

        cfg = timm.create_model(raw["timm_model"], pretrained=False, num_classes=0).pretrained_cfg or {}
        if cfg.get("input_size"):
            out["resolution"] = int(cfg["input_size"][-1])
        out["mean"] = [float(x) for x in cfg.get("mean", IMAGENET_MEAN)]
        out["std"] = [float(x) for x in cfg.get("std", IMAGENET_STD)]
        if raw["weights"]["format"] == "timm":
            tag = cfg.get("tag")
            out["weights"] = {**raw["weights"], "timm_name": f"{raw['timm_model']}.{tag}" if tag else raw["timm_model"]}
    found = probe_backbone(Backbone.model_validate(out), resolution=out["resolution"], tasks=[])
    out["params_m"] = found.params_m
    if raw["family"] == "custom":
        out["tasks"] = list(raw["tasks"][:2]) + (["detection"] if found.supports_detection else []) + \
            list(raw["tasks"][2:]) + (["ood_detection"] if found.supports_detection else [])
        out["tasks"] = [t for t in ("classification", "detection", "ood_classification", "ood_detection", "retrieval")
                        if t in out["tasks"]]
        out["note"] = (f"pooled embedding {found.embedding_dim}-d; " + (
            f"multi-scale features {found.feature_dims} at strides {found.strides}" if found.supports_detection
            else f"no detection: {found.detection_problem}"))
    return out


def render_yaml(entry: dict[str, Any]) -> str:
    """The manifest text, with a comment on each field the user should check."""
    import yaml

    hints = {
        "name": "display name in tables", "source": "where the backbone is described (paper, URL)",
        "method": "pretraining method, e.g. DINO, CLIP, supervised",
        "kind": "EDIT: one of supervised, self-supervised, vision-language, generative, depth, copy-detection",
        "pretrain_data": "e.g. ImageNet-1k", "params_m": "measured by `bobkit gauntlet init`",
        "tasks": "task families the gauntlet may run", "entry": "package.module:function returning a torch module",
    }
    lines = ["# A user backbone for `bobkit gauntlet` (written by `bobkit gauntlet init`; see docs/gauntlet.md).",
             "# Replace every EDIT, then: bobkit validate THIS_FILE && bobkit gauntlet "
             f"{entry['id']} --manifests THIS_FILE --budget smoke", "backbones:"]
    body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=110).splitlines()
    for line in body:
        key = line.strip().lstrip("- ").split(":")[0]
        hint = hints.get(key) if line.startswith(("- ", "  ")) and ":" in line and line.count("  ") <= 1 else None
        lines.append("  " + line + (f"  # {hint}" if hint else ""))
    return "\n".join(lines) + "\n"


def write_manifest(entry: dict[str, Any], out: Path, force: bool = False) -> Path:
    """Write atomically, after validating the file the way `bobkit validate` does (with the built-ins)."""
    from bobkit.manifest.loader import load_catalog
    from bobkit.results import atomic_path

    out = Path(out)
    if out.exists() and not force:
        raise BadInput(f"{out} exists; pass --force to replace it or choose another --out")
    with atomic_path(out, suffix=".yaml") as tmp:  # validated before it replaces anything
        Path(tmp).write_text(render_yaml(entry), encoding="utf-8")
        load_catalog([tmp])
    return out

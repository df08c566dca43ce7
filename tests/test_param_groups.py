"""Optimizer param groups of a classifier: the layer-wise lr scales and weight decay equal those of
timm's create_optimizer_v2(model, layer_decay=...) on the timm model with its head, as the authors
ran it (audit row C1); and describe_param_groups, the summary a run records in its provenance."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2

from bobkit.manifest.models import Backbone
from bobkit.tasks.cls_model import (
    Classifier,
    build_backbone,
    describe_param_groups,
    make_head,
    name_patterns,
    trainable_param_groups,
)

NUM_CLASSES = 7
WEIGHT_DECAY = 0.05
LAYER_DECAY = 0.75
TINY_SWIN = {"depths": (2, 2, 2, 2), "embed_dim": 16, "num_heads": (1, 2, 2, 4), "img_size": 64}
ARCHS = [  # (family, timm architecture, timm kwargs)
    ("vit", "vit_tiny_patch16_224", {}),
    ("resnet", "resnet18", {}),
    ("swinv2", "swinv2_tiny_window8_256", TINY_SWIN),
    ("convnext", "convnext_atto", {}),
]


def zoo_entry(family: str, arch: str, kwargs: dict) -> dict:
    """A manifest entry for a timm architecture, as the zoo builds it (random init)."""
    return Backbone(
        id=f"test_{arch}", name=arch, architecture=arch, family=family, timm_model=arch, timm_kwargs=kwargs,
        params_m=1.0, method="test", kind="supervised", pretrain_data="none",
        weights={"format": "timm", "timm_name": arch}, resolution=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        tasks=["classification"], source="test", confidence="bobkit",
    ).model_dump(mode="json")


def bobkit_classifier(family: str, arch: str, kwargs: dict, *, batchnorm: bool = False) -> Classifier:
    built = build_backbone(zoo_entry(family, arch, kwargs), pretrained=False)
    return Classifier(built.model, make_head(built.num_features, NUM_CLASSES, batchnorm=batchnorm,
                                             init="xavier_normal"))


def per_parameter(named: dict[int, str], groups) -> dict[str, tuple[float, float]]:
    """name -> (lr_scale, weight_decay) over optimizer groups."""
    out = {}
    for g in groups:
        for p in g["params"]:
            assert named[id(p)] not in out, f"{named[id(p)]} is in two groups"
            out[named[id(p)]] = (g.get("lr_scale", 1.0), g["weight_decay"])
    return out


def head_linear(model: Classifier) -> torch.nn.Linear:
    return model.head if isinstance(model.head, torch.nn.Linear) else model.head[-1]


@pytest.mark.parametrize("family, arch, kwargs", ARCHS, ids=[a for _, a, _ in ARCHS])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["linear", "bn_linear"])
def test_layer_decay_groups_equal_timm_on_the_model_with_its_head(family, arch, kwargs, batchnorm):
    ours = bobkit_classifier(family, arch, kwargs, batchnorm=batchnorm)
    mine = per_parameter({id(p): n for n, p in ours.named_parameters()},
                         trainable_param_groups(ours, WEIGHT_DECAY, LAYER_DECAY))

    ref = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES, **kwargs)
    opt = create_optimizer_v2(ref, opt="adamw", lr=1e-3, weight_decay=WEIGHT_DECAY, layer_decay=LAYER_DECAY)
    theirs = per_parameter({id(p): n for n, p in ref.named_parameters()}, opt.param_groups)

    # the trunk by name (bobkit's "backbone.X" is timm's "X"), the classifier by role (weight, bias)
    classifier = {id(p): role for role, p in ref.get_classifier().named_parameters()}
    ours_head = dict(head_linear(ours).named_parameters())
    expected = {}
    for name, p in ref.named_parameters():
        if id(p) in classifier:
            key = next(n for n, q in ours.named_parameters() if q is ours_head[classifier[id(p)]])
        else:
            key = "backbone." + name
        expected[key] = theirs[name]
    assert set(mine) == set(expected)
    wrong = {k: (mine[k], expected[k]) for k in expected if mine[k] != pytest.approx(expected[k])}
    assert not wrong, f"(bobkit, timm) lr_scale/weight_decay differ: {wrong}"
    head_scales = {mine[n][0] for n, p in ours.named_parameters() if n.startswith("head.")}
    assert head_scales == {1.0}


def test_vit_and_resnet_scales_are_the_authors():
    """ViT-Ti (12 blocks): patch embedding 0.75^13 … last block and final norm 0.75, head 1.
    ResNet-18: stem 0.75^9 … layer4's last block 0.75, head 1."""
    vit = bobkit_classifier("vit", "vit_tiny_patch16_224", {})
    scales = per_parameter({id(p): n for n, p in vit.named_parameters()},
                           trainable_param_groups(vit, WEIGHT_DECAY, LAYER_DECAY))
    assert scales["backbone.patch_embed.proj.weight"][0] == pytest.approx(0.75 ** 13)
    assert scales["backbone.blocks.0.attn.qkv.weight"][0] == pytest.approx(0.75 ** 12)
    assert scales["backbone.blocks.11.attn.qkv.weight"][0] == pytest.approx(0.75)
    assert scales["backbone.norm.weight"] == (pytest.approx(0.75), 0.0)
    assert scales["backbone.pos_embed"][1] == 0.0 and scales["backbone.cls_token"][1] == 0.0  # no_weight_decay
    assert scales["head.weight"] == (1.0, WEIGHT_DECAY) and scales["head.bias"] == (1.0, 0.0)

    resnet = bobkit_classifier("resnet", "resnet18", {})
    scales = per_parameter({id(p): n for n, p in resnet.named_parameters()},
                           trainable_param_groups(resnet, WEIGHT_DECAY, LAYER_DECAY))
    assert scales["backbone.conv1.weight"][0] == pytest.approx(0.75 ** 9)
    assert scales["backbone.layer4.1.conv2.weight"][0] == pytest.approx(0.75)
    assert scales["head.weight"][0] == 1.0


def test_a_frozen_backbone_or_no_layer_decay_keeps_the_head_at_full_lr():
    model = bobkit_classifier("vit", "vit_tiny_patch16_224", {})
    groups = trainable_param_groups(model, WEIGHT_DECAY, None)
    assert {g.get("lr_scale", 1.0) for g in groups} == {1.0}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    model.backbone.requires_grad_(False)
    groups = trainable_param_groups(model, WEIGHT_DECAY, LAYER_DECAY)
    assert sum(len(g["params"]) for g in groups) == 2 and {g["lr_scale"] for g in groups} == {1.0}


def test_describe_param_groups_summarises_every_group():
    model = bobkit_classifier("vit", "vit_tiny_patch16_224", {})
    groups = trainable_param_groups(model, WEIGHT_DECAY, LAYER_DECAY)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    summary = describe_param_groups(model, groups, lr=1e-3)
    assert summary == describe_param_groups(model, groups, lr=1e-3)  # deterministic
    assert json.loads(json.dumps(summary)) == summary  # JSON as it is
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())  # nothing changed
    assert len(summary) == len(groups)
    assert sum(s["params"] for s in summary) == len(list(model.parameters()))
    assert sum(s["numel"] for s in summary) == sum(p.numel() for p in model.parameters())
    for s, g in zip(summary, groups):
        assert set(s) == {"params", "numel", "lr_scale", "lr", "weight_decay", "modules"}
        assert s["lr_scale"] == g["lr_scale"] and s["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert s["weight_decay"] == g["weight_decay"] and 1 <= len(s["modules"]) <= 5
    head = [s for s in summary if any(m.startswith("head.") for m in s["modules"])]
    assert [s["modules"] for s in head] == [["head.weight"], ["head.bias"]]
    assert [s["lr"] for s in head] == [1e-3, 1e-3]
    block3 = [s for s in summary if any(m.startswith("backbone.blocks.3.") for m in s["modules"])]
    assert [(s["modules"], s["weight_decay"], s["params"]) for s in block3] == [
        (["backbone.blocks.3.norm1.*", "backbone.blocks.3.attn.*", "backbone.blocks.3.norm2.*",
          "backbone.blocks.3.mlp.*"], 0.0, 8),  # norms and biases
        (["backbone.blocks.3.attn.qkv.weight", "backbone.blocks.3.attn.proj.weight", "backbone.blocks.3.mlp.fc1.weight",
          "backbone.blocks.3.mlp.fc2.weight"], WEIGHT_DECAY, 4)]
    assert block3[0]["lr_scale"] == pytest.approx(0.75 ** 9)
    # without lr: each group's own lr as it stands (explain passes the scaled lr in), else None
    assert describe_param_groups(model, [{**groups[0], "lr": 0.5}])[0]["lr"] == 0.5
    assert describe_param_groups(model, groups[:1])[0]["lr"] is None
    with pytest.raises(ValueError, match="not parameters of the model"):
        describe_param_groups(model, [{"params": [torch.nn.Parameter(torch.zeros(1))], "weight_decay": 0.0}])


def test_name_patterns_shorten_until_few():
    assert name_patterns(["a.x", "a.y"]) == ["a.x", "a.y"]
    names = [f"backbone.blocks.{i}.{part}.weight" for i in (1, 2) for part in ("norm1", "attn.qkv", "mlp.fc1")]
    assert name_patterns(names) == ["backbone.blocks.1.*", "backbone.blocks.2.*"]
    assert name_patterns([f"m{i}.w" for i in range(7)], limit=3) == ["m0.*", "m1.*", "m2.*", "… 4 more"]
    assert name_patterns([]) == []


@pytest.mark.parametrize("backbone, arch", [("tiny_vit", "vit_tiny_patch16_224"), ("tiny_resnet", "resnet18")])
def test_explain_groups_equal_timms_create_optimizer_v2(backbone, arch):
    """`bobkit explain --groups` builds the run's model at random init; its groups (size, lr scale, lr,
    weight decay) are those of timm's create_optimizer_v2(layer_decay=...) on the timm model with its head."""
    from bobkit.commands.explain import explain_spec
    from bobkit.manifest.loader import load_catalog
    from bobkit.plan import plan
    from tests.conftest import MINI

    catalog = load_catalog([MINI], builtin=False)
    [spec] = [s for s in plan(catalog, "toy", backbones=[backbone], recipes=["ft_short"]) if s.hparams["lr"] == 1e-3]
    hp = spec.hparams
    report = explain_spec(spec, groups=True)
    ours = sorted((g["numel"], round(g["lr_scale"], 9), g["weight_decay"], round(g["lr"], 12))
                  for g in report["param_groups"])
    model = timm.create_model(arch, pretrained=False, num_classes=spec.dataset_spec["num_classes"])
    opt = create_optimizer_v2(model, opt="adamw", lr=hp["lr"], weight_decay=hp["weight_decay"],
                              layer_decay=hp["layer_decay"])
    theirs = sorted((sum(p.numel() for p in g["params"]), round(g.get("lr_scale", 1.0), 9), g["weight_decay"],
                     round(hp["lr"] * g.get("lr_scale", 1.0), 12)) for g in opt.param_groups)
    assert ours == theirs
    assert report["param_groups"][-1]["lr_scale"] == 1.0 and len(ours) > 4


def test_a_fixed_position_embedding_is_left_out_of_the_optimizer():
    """Audit row C16: MoCo v3's ViTs train with a fixed sin-cos position table (fixed_pos_embed)."""
    from bobkit.errors import BadInput
    from bobkit.tasks.cls_model import fix_pos_embed

    entry = zoo_entry("vit", "vit_tiny_patch16_224", {})
    built = build_backbone(entry, pretrained=False, resolution=224)
    model = Classifier(built.model, make_head(built.num_features, NUM_CLASSES, batchnorm=False, init="xavier_normal"))
    before = {id(p) for g in trainable_param_groups(model, WEIGHT_DECAY, LAYER_DECAY) for p in g["params"]}
    fix_pos_embed(model.backbone)
    after = {id(p) for g in trainable_param_groups(model, WEIGHT_DECAY, LAYER_DECAY) for p in g["params"]}
    assert before - after == {id(model.backbone.pos_embed)}
    resnet = build_backbone(zoo_entry("resnet", "resnet18", {}), pretrained=False)
    with pytest.raises(BadInput, match="no pos_embed"):
        fix_pos_embed(resnet.model)

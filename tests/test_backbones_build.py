"""Every backbone of the manifests builds at random init, one at a time, and has the parameter count
the manifest states (within 1 %); the built modules give what the tasks use: pooled features, a
classifier, multi-scale feature maps with the advertised channels and strides.

Architectures shared by several manifest entries are built once. The largest (ConvNeXt-XL,
SwinV2-L, ViT-L, RN50x64, Stable Diffusion) are real-built only in the `slow` set; those are
also counted on PyTorch's meta device (same constructors, no memory) in every run.
"""

from __future__ import annotations

import gc
import json

import pytest
import torch
from torch import nn

from bobkit.backbones import build
from bobkit.backbones.zoo import construct
from bobkit.errors import BadInput, EnvironmentMissing
from bobkit.manifest.loader import load_catalog
from bobkit.manifest.models import Backbone

CATALOG = load_catalog()
HEAVY_M = 150.0  # real builds above this many parameters are `slow`


def _arch_key(b: Backbone) -> str:
    return json.dumps([b.family, b.timm_model, b.timm_kwargs, b.weights.format == "sscd_torchscript"], sort_keys=True)


def _groups() -> dict[str, list[Backbone]]:
    groups: dict[str, list[Backbone]] = {}
    for b in CATALOG.backbones.values():
        groups.setdefault(_arch_key(b), []).append(b)
    return groups


def _params(groups):
    out = []
    for members in groups.values():
        marks = [pytest.mark.slow] if members[0].params_m > HEAVY_M else []
        out.append(pytest.param(members, id=members[0].id, marks=marks))
    return out


def _close(measured_m: float, stated_m: float) -> bool:
    return abs(measured_m - stated_m) <= 0.01 * stated_m


@pytest.mark.parametrize("members", _params(_groups()))
def test_builds_at_random_init_with_the_manifest_parameter_count(members):
    built = build(members[0], pretrained=False)
    measured = built.num_params / 1e6
    for b in members:
        assert _close(measured, b.params_m), f"{b.id}: measured {measured:.2f} M, manifest says {b.params_m} M"
    assert built.weights is None and built.backbone_id == members[0].id
    assert len(built.feature_dims) == len(built.strides) >= 1
    assert built.resolution == members[0].resolution
    del built
    gc.collect()


def test_heavy_entries_counted_on_the_meta_device():
    """The slow set real-builds these; the meta device checks their counts in every run."""
    wrong = []
    for b in CATALOG.backbones.values():
        if b.params_m <= HEAVY_M:
            continue
        model = construct(b, device="meta")
        measured = sum(p.numel() for p in model.parameters()) / 1e6
        if not _close(measured, b.params_m):
            wrong.append(f"{b.id}: {measured:.2f} M vs manifest {b.params_m} M")
        del model
    assert not wrong, wrong


# ----------------------------------------------------------------------- what the tasks get

def _entry(bid: str, **update) -> Backbone:
    return Backbone.model_validate({**CATALOG.backbones[bid].model_dump(), **update})


@pytest.mark.parametrize("bid,size,dims,strides", [
    ("resnet50", 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("convnext_tiny", 64, [96, 192, 384, 768], [4, 8, 16, 32]),
    ("swinv2_tiny_w8", 64, [96, 192, 384, 768], [4, 8, 16, 32]),
    ("vit_small_in1k", 32, [384], [16]),
    ("clip_rn50", 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("sscd_resnet50_im", 64, [256, 512, 1024, 2048], [4, 8, 16, 32]),
])
def test_features_and_classifier(bid, size, dims, strides):
    x = torch.randn(2, 3, size, size)
    feats = build(bid, pretrained=False, features_only=True, img_size=size)
    assert feats.feature_dims == dims and feats.strides == strides
    with torch.no_grad():
        maps = feats.model.eval()(x)
    assert [m.shape[1] for m in maps] == dims
    assert [size // m.shape[-1] for m in maps] == strides
    assert all(p.grad is None for p in feats.model.parameters())

    clf = build(bid, pretrained=False, num_classes=7, img_size=size, drop_path_rate=0.1)
    with torch.no_grad():
        logits = clf.model.eval()(x)
        pooled = clf.model.forward_head(clf.model.forward_features(x), pre_logits=True)
    assert logits.shape == (2, 7) and pooled.shape == (2, clf.num_features)
    clf.model.reset_classifier(3)
    with torch.no_grad():
        assert clf.model(x).shape == (2, 3)


@pytest.mark.parametrize("bid,update", [
    ("vit_small_in1k", {}),
    ("swinv2_tiny_w8", {"timm_kwargs": {"depths": (2, 2, 2, 2), "embed_dim": 16, "num_heads": (1, 2, 2, 4)}}),
    ("convnext_tiny", {"timm_kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}}),
    ("clip_rn50", {"timm_kwargs": {"layers": (1, 1, 1, 1), "width": 16, "heads": 2, "output_dim": 32}}),
    ("sd_v1", "tiny"),
])
def test_features_only_trains_every_parameter(bid, update):
    """Detection trains the feature extractor end to end: no parameter may be left without gradient
    (layers after the last feature map, pooling heads and final norms are pruned)."""
    if update == "tiny":
        from tests.test_backbones_converters import TINY_SD

        update = {"timm_kwargs": TINY_SD}
    feats = build(_entry(bid, **update), pretrained=False, features_only=True, img_size=64)
    sum(m.mean() for m in feats.model(torch.randn(1, 3, 64, 64))).backward()
    unused = [n for n, p in feats.model.named_parameters() if p.grad is None]
    assert not unused, unused[:5]


def test_sam_windowed_encoder_at_small_size():
    built = build("sam_vit_base", pretrained=False, features_only=True, img_size=64)
    assert built.plain_vit and built.feature_dims == [768] and built.strides == [16]
    with torch.no_grad():
        [m] = built.model(torch.randn(1, 3, 64, 64))
    assert m.shape == (1, 768, 4, 4)


def test_stable_diffusion_encoder_tiny():
    from tests.test_backbones_converters import TINY_SD

    e = _entry("sd_v1", timm_kwargs=TINY_SD)
    feats = build(e, pretrained=False, features_only=True)
    # 3 VAE blocks: latent stride 4; VAE map (stride 4), UNet block 0 (stride 4), middle block (stride 8)
    assert feats.feature_dims == [32, 32, 64] and feats.strides == [4, 4, 8]
    with torch.no_grad():
        maps = feats.model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(32, 16, 16), (32, 16, 16), (64, 8, 8)]
    clf = build(e, pretrained=False, num_classes=5)
    assert torch.count_nonzero(clf.model.context) == 0  # random init: zero text conditioning
    with torch.no_grad():
        assert clf.model(torch.randn(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.slow
def test_stable_diffusion_v1_features():
    feats = build("sd_v1", pretrained=False, features_only=True)
    assert feats.feature_dims == [256, 320, 640, 1280, 1280] and feats.strides == [4, 8, 16, 32, 64]
    with torch.no_grad():
        maps = feats.model(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [256, 320, 640, 1280, 1280]


# ----------------------------------------------------------------------- errors and user backbones

def test_bad_requests_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="has no model 'resnet_nope'"):
        build(_entry("resnet50", timm_model="resnet_nope"), pretrained=False)
    with pytest.raises(BadInput, match="exclude each other"):
        build("resnet50", pretrained=False, features_only=True, num_classes=3)
    with pytest.raises(BadInput, match="unknown backbone"):
        build("resnet5O", pretrained=False)
    monkeypatch.setenv("BOBKIT_WEIGHTS", str(tmp_path))
    with pytest.raises(EnvironmentMissing, match="bobkit weights fetch resnet50"):
        build("resnet50", pretrained=True, offline=True)


class TinyUserNet(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=4, padding=1)

    def forward(self, x):
        return self.conv(x)


def tiny_user_backbone(pretrained: bool = True, width: int = 8) -> nn.Module:
    net = TinyUserNet(width)
    if pretrained:
        nn.init.constant_(net.conv.weight, 0.5)
    return net


def tiny_user_embedding(**_) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(6))


def _user(fn: str, **update) -> Backbone:
    return _entry("resnet50", family="custom", timm_model="entry", entry=f"tests.test_backbones_build:{fn}",
                  weights={"format": "python"}, detection_weights=None, **update)


def test_user_backbone_through_the_zoo():
    built = build(_user("tiny_user_backbone", timm_kwargs={"width": 12}), pretrained=True, img_size=64)
    assert built.weights == "python: tests.test_backbones_build:tiny_user_backbone"
    assert torch.all(built.model.module.conv.weight == 0.5)
    assert built.num_features == 12 and built.feature_dims == [12] and built.strides == [4]
    feats = build(_user("tiny_user_backbone"), pretrained=False, features_only=True, img_size=64)
    [m] = feats.model(torch.randn(1, 3, 64, 64))
    assert m.shape == (1, 8, 16, 16)
    clf = build(_user("tiny_user_backbone"), pretrained=False, num_classes=4, img_size=64)
    assert clf.model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_user_backbone_errors_name_the_problem():
    with pytest.raises(BadInput, match="cannot import 'tests.no_such_module'"):
        build(_entry("resnet50", family="custom", entry="tests.no_such_module:f", weights={"format": "python"},
                     detection_weights=None), pretrained=False)
    with pytest.raises(BadInput, match="has no function 'missing'"):
        build(_user("missing"), pretrained=False)
    with pytest.raises(BadInput, match="detection needs"):
        build(_user("tiny_user_embedding"), pretrained=False, features_only=True, img_size=32)


def test_clip_resnet_drops_paths_as_bobs_model_did():
    """Audit row C4: BoB's CLIP ResNet has stochastic depth on every non-first block of a stage, at
    rate × (index within the stage) / (blocks − 1); the zoo passes the recipe's drop_path to it. The
    DropPath modules hold no parameters: checkpoints load by the same names with or without them."""
    from bobkit.backbones.adapters.clip_resnet import block_drop_path_rates

    rates = block_drop_path_rates((3, 4, 6, 3), 0.1)
    assert rates[0] == [0.0, 0.1 / 15, 0.2 / 15] and rates[2][5] == pytest.approx(0.5 / 15)
    plain = build("clip_rn50", pretrained=False, img_size=64).model
    dropped = build("clip_rn50", pretrained=False, img_size=64, drop_path_rate=0.9).model
    assert sum(type(m).__name__ == "DropPath" for m in dropped.modules()) == 12
    assert list(plain.state_dict()) == list(dropped.state_dict())
    dropped.load_state_dict(plain.state_dict())
    for m in dropped.modules():  # open_clip zero-initialises the last BN of each block: make branches count
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        dropped.eval()
        assert torch.equal(dropped.forward_features(x), dropped.forward_features(x))
        dropped.train()
        torch.manual_seed(0)
        first = dropped.forward_features(x)
        torch.manual_seed(1)
        assert not torch.allclose(first, dropped.forward_features(x))

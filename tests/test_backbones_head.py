"""A build with num_classes > 0 uses the checkpoint's own classifier where its converter kept one that
fits (the MiDaS encoders' ImageNet head, which retrieval's `head_logits` feature reads) and a seeded
random one otherwise (VICReg), and the load report says which. Tiny SwinV2/ResNet in the real key
layouts (helpers of test_backbones_converters)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from bobkit.backbones.zoo import build
from tests.test_backbones_converters import TINY_RESNET, TINY_SWIN, _swinv2_original, entry, reference, save

WIDTH = 128  # TINY_SWIN's pooled feature: embed_dim 16 × 8
OWN_HEAD = "classifier: the checkpoint's own 1000-way head"
NO_HEAD = "classifier: new, randomly initialised (none kept from the checkpoint)"


def _midas_checkpoint(ref, head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MiDaS v3.1's DPT layout: the timm-0.6 SwinV2 under `pretrained.model.`, plus decoder parts."""
    sd = {"pretrained.model." + k: v for k, v in _swinv2_original(ref.state_dict(), ref).items()}
    sd.update({"pretrained.model." + k: v for k, v in head.items()})
    sd.update({"pretrained.act_postprocess1.0.weight": torch.randn(8, 16, 1, 1),
               "scratch.layer1_rn.weight": torch.randn(8, 16, 3, 3), "scratch.output_conv.0.bias": torch.randn(8)})
    return sd


def _same_backbone(model, ref) -> None:
    got = model.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(got[k], v), k


def _buffers(ref) -> int:
    return sum(1 for n, _ in ref.named_buffers() if n.endswith(("relative_coords_table", "relative_position_index",
                                                                  "attn_mask")))


def test_midas_keeps_its_imagenet_head(tmp_path):
    e = entry("swinv2", "swinv2_tiny_window16_256", "midas", TINY_SWIN)
    ref = reference(e)
    head = {"head.weight": torch.randn(1000, WIDTH), "head.bias": torch.randn(1000)}
    path = save(_midas_checkpoint(ref, head), tmp_path, "dpt_swin2_tiny_256.pt")

    clf = build(e, pretrained=True, checkpoint_path=path, num_classes=1000)
    fc = clf.model.get_classifier()
    assert torch.equal(fc.weight, head["head.weight"]) and torch.equal(fc.bias, head["head.bias"])
    _same_backbone(clf.model, ref)
    assert clf.load_report.endswith("; " + OWN_HEAD)
    assert clf.classifier == "the checkpoint's own 1000-way head"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True) @ head["head.weight"].T + head["head.bias"]
        assert torch.allclose(clf.model.eval()(x), want, atol=1e-5)

    # without a classifier the head is dropped as before, and every checkpoint key is accounted for
    bare = build(e, pretrained=True, checkpoint_path=path)
    _same_backbone(bare.model, ref)
    assert bare.load_report == (f"{len(ref.state_dict())} tensors loaded; dropped 2 (DPT depth decoder); "
                                "dropped 1 (DPT reassembly layers (decoder side)); "
                                f"dropped {_buffers(ref)} (window-size buffers (recomputed for the built window)); "
                                "dropped 2 (ImageNet classifier of the checkpoint)")


def test_swinv2_official_head_in_timm_1_names(tmp_path):
    e = entry("swinv2", "swinv2_tiny_window8_256", "swinv2_official", TINY_SWIN)
    ref = reference(e)
    head = {"head.fc.weight": torch.randn(1000, WIDTH), "head.fc.bias": torch.randn(1000)}
    path = save({"model": {**ref.state_dict(), **head}}, tmp_path)
    clf = build(e, pretrained=True, checkpoint_path=path, num_classes=1000)
    assert torch.equal(clf.model.get_classifier().weight, head["head.fc.weight"])
    assert "dropped 2 (ImageNet classifier of the checkpoint)" in clf.load_report and OWN_HEAD in clf.load_report


def test_no_head_in_the_checkpoint_gives_a_seeded_random_one(tmp_path):
    swin = entry("swinv2", "swinv2_tiny_window8_256", "swinv2_official", TINY_SWIN)
    ref = reference(swin)
    path = save({"model": _swinv2_original(ref.state_dict(), ref)}, tmp_path, "swin.pth")
    clf = build(swin, pretrained=True, checkpoint_path=path, num_classes=1000)
    assert clf.load_report.endswith("; " + NO_HEAD) and "ImageNet classifier" not in clf.load_report
    _same_backbone(clf.model, ref)

    vicreg = entry("resnet", "resnet50", "vicreg", TINY_RESNET)
    path = save(dict(reference(vicreg).state_dict()), tmp_path, "vicreg.pth")
    heads = []
    for _ in range(2):  # the run's seed decides the random head
        torch.manual_seed(7)
        built = build(vicreg, pretrained=True, checkpoint_path=path, num_classes=1000)
        assert built.load_report.endswith("; " + NO_HEAD)
        heads.append(built.model.get_classifier().weight.detach().clone())
    assert heads[0].shape == (1000, 2048) and torch.equal(heads[0], heads[1])

    assert build(vicreg, pretrained=False, num_classes=1000).load_report is None


def test_a_head_that_does_not_fit_is_not_loaded(tmp_path):
    e = entry("swinv2", "swinv2_tiny_window16_256", "midas", TINY_SWIN)
    ref = reference(e)
    narrow = {"head.weight": torch.randn(1000, 64), "head.bias": torch.randn(1000)}
    path = save(_midas_checkpoint(ref, narrow), tmp_path, "narrow.pt")
    clf = build(e, pretrained=True, checkpoint_path=path, num_classes=1000)
    assert clf.model.get_classifier().weight.shape == (1000, WIDTH)
    assert clf.load_report.endswith(
        "; classifier: new, randomly initialised (the checkpoint's head is 1000×64, this module needs 1000×128)")

    right = {"head.weight": torch.randn(1000, WIDTH), "head.bias": torch.randn(1000)}
    path = save(_midas_checkpoint(ref, right), tmp_path, "right.pt")
    ten = build(e, pretrained=True, checkpoint_path=path, num_classes=10)  # fits the width, not the classes
    assert ten.load_report.endswith("(the checkpoint's head is 1000×128, this module needs 10×128)")
    assert not torch.equal(ten.model.get_classifier().weight, right["head.weight"][:10])


def test_retrieval_logs_which_head(tmp_path, monkeypatch, caplog):
    from bobkit.manifest.hparams import RetrievalHparams
    from bobkit.tasks.retrieval import embedding_model

    monkeypatch.setenv("BOBKIT_WEIGHTS", str(tmp_path / "weights"))
    ckpt = tmp_path / "dpt_swin2_tiny_256.pt"
    e = entry("swinv2", "swinv2_tiny_window16_256", "midas", TINY_SWIN, path=str(ckpt))
    ref = reference(e)
    head = {"head.weight": torch.randn(1000, WIDTH), "head.bias": torch.randn(1000)}
    torch.save(_midas_checkpoint(ref, head), ckpt)
    rt = SimpleNamespace(device="cpu", channels_last=False)
    hp = RetrievalHparams(lr=0.0, batch_size=1, per_gpu_batch=1, feature="head_logits", resolution=64)
    caplog.set_level(logging.INFO, logger="bobkit.run")
    for smoke, said in ((False, "the checkpoint's own 1000-way head"),
                        (True, "new, randomly initialised (no pretrained weights)")):
        caplog.clear()
        spec = SimpleNamespace(smoke=smoke, backbone=e.id, backbone_spec=e.model_dump(mode="json"))
        model, built = embedding_model(spec, hp, rt)
        assert f"feature head_logits: 1000-way classifier {said}" in caplog.text
        assert torch.equal(model.get_classifier().weight, head["head.weight"]) is (not smoke)

"""Every non-timm checkpoint format: a synthetic checkpoint in that format's real key names and
shapes (made by writing a random-init reference model out in the source layout, plus the parts the
format carries beside the backbone) loads strictly through its converter, every tensor arrives
where it belongs, and an extra or a missing key is refused.

Architectures are shrunk through timm_kwargs (fewer blocks, narrower) so the tests stay small;
the key layout is the real one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bobkit.backbones.converters import CheckpointMismatch, known_formats
from bobkit.backbones.zoo import build, construct
from bobkit.manifest.models import Backbone

torch.manual_seed(0)


def entry(family: str, timm_model: str, fmt: str, timm_kwargs: dict | None = None, **weights) -> Backbone:
    location = {"url": "https://example.invalid/ckpt.pth"} if not weights else weights
    return Backbone(
        id=f"test_{fmt}", name=f"test {fmt}", architecture="test", family=family, timm_model=timm_model,
        timm_kwargs=timm_kwargs or {}, params_m=1.0, method="test", kind="self-supervised", pretrain_data="none",
        weights={"format": fmt, **location}, resolution=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        tasks=["classification"], source="test", confidence="bobkit",
    )


TINY_VIT = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 32}
TINY_RESNET = {"layers": [1, 1, 1, 1]}
TINY_CONVNEXT = {"depths": [1, 1, 2, 1], "dims": [16, 32, 64, 128]}
TINY_SWIN = {"depths": (2, 2, 2, 2), "embed_dim": 16, "num_heads": (1, 2, 2, 4), "img_size": 64}
TINY_SAM = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 64, "global_attn_indexes": (1,),
            "window_size": 2, "neck_chans": 32}
TINY_OPEN_CLIP = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 32}
TINY_CLIP_RN = {"layers": (1, 1, 1, 1), "width": 16, "heads": 2, "output_dim": 32, "image_size": 64}
TINY_SD = {
    "unet": {"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
             "cross_attention_dim": 32, "attention_head_dim": 2, "norm_num_groups": 8, "sample_size": 8},
    "vae": {"block_out_channels": [16, 32, 32], "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3, "layers_per_block": 1, "norm_num_groups": 8,
            "sample_size": 32},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
}


def reference(e: Backbone):
    """A random-init model of the entry: what the checkpoint is made from and compared against."""
    return construct(e).eval()


def save(obj, tmp_path: Path, name: str = "ckpt.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def load(e: Backbone, path: Path):
    return build(e, pretrained=True, checkpoint_path=path)


def assert_same(model, ref, skip=lambda k: False):
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        if skip(k) or k.endswith("num_batches_tracked"):
            continue
        assert torch.equal(got[k].float(), want[k].float()), k


def refuses(e: Backbone, tmp_path: Path, good: dict, wrap=lambda sd: sd, extra: str = "unexpected.weight",
            drop_from: str | None = None) -> None:
    """The converter refuses the same checkpoint with an unknown key, and with a needed key gone."""
    with_extra = dict(good)
    with_extra[extra] = torch.zeros(3)
    with pytest.raises(CheckpointMismatch, match="unexpected|does not know|not converted|has no"):
        load(e, save(wrap(with_extra), tmp_path, "extra.pth"))
    missing = dict(good)
    victim = next(k for k in missing if drop_from is None or k.startswith(drop_from))
    missing.pop(victim)
    with pytest.raises(CheckpointMismatch):
        load(e, save(wrap(missing), tmp_path, "missing.pth"))


# ----------------------------------------------------------------------- ResNet-named formats

def test_torchvision_drops_fc_and_tolerates_old_bn_counters(tmp_path):
    e = entry("resnet", "resnet50", "torchvision", TINY_RESNET)
    ref = reference(e)
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    built = load(e, save(sd, tmp_path))
    assert_same(built.model, ref)
    assert "torchvision's ImageNet classifier" in built.load_report
    refuses(e, tmp_path, sd)


def test_vicreg_bare_backbone_and_full_checkpoint(tmp_path):
    e = entry("resnet", "resnet50", "vicreg", TINY_RESNET)
    ref = reference(e)
    sd = dict(ref.state_dict())
    assert_same(load(e, save(sd, tmp_path)).model, ref)
    full = {"model": {**{"module.backbone." + k: v for k, v in sd.items()},
                      "module.projector.0.weight": torch.randn(8, 2048)}}
    assert_same(load(e, save(full, tmp_path, "full.pth")).model, ref)
    refuses(e, tmp_path, sd)


def test_dino_resnet_and_vit(tmp_path):
    for e in (entry("resnet", "resnet50", "dino", TINY_RESNET),
              entry("vit", "vit_small_patch16_224", "dino", TINY_VIT)):
        ref = reference(e)
        sd = dict(ref.state_dict())
        assert_same(load(e, save(sd, tmp_path)).model, ref)
        teacher = {"teacher": {**{"backbone." + k: v for k, v in sd.items()},
                               "head.mlp.0.weight": torch.randn(4, 4), "head.last_layer.weight_g": torch.randn(4, 1)},
                   "student": {}, "epoch": 100}
        assert_same(load(e, save(teacher, tmp_path, "full.pth")).model, ref)
        refuses(e, tmp_path, sd)


def test_moco_v3_vit_keeps_base_encoder_only(tmp_path):
    e = entry("vit", "vit_small_patch16_224", "moco_v3", {**TINY_VIT, "num_heads": 4})
    ref = reference(e)
    other = reference(e)  # the momentum encoder: different values, must not be loaded
    state = {"module.base_encoder." + k: v for k, v in ref.state_dict().items()}
    state.update({"module.momentum_encoder." + k: v for k, v in other.state_dict().items()})
    state.update({"module.base_encoder.head.0.weight": torch.randn(128, 64),
                  "module.base_encoder.head.1.running_mean": torch.randn(128),
                  "module.momentum_encoder.head.0.weight": torch.randn(128, 64),
                  "module.predictor.0.weight": torch.randn(128, 256)})
    ckpt = {"epoch": 300, "arch": "vit_small", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}
    built = load(e, save(ckpt, tmp_path, "vit-s-300ep.pth.tar"))
    assert_same(built.model, ref)
    assert "momentum encoder" in built.load_report and "projection MLP" in built.load_report
    refuses(e, tmp_path, state, wrap=lambda sd: {"state_dict": sd}, extra="module.base_encoder.extra.weight",
            drop_from="module.base_encoder.blocks")


def test_moco_v3_resnet_drops_fc_projector(tmp_path):
    e = entry("resnet", "resnet50", "moco_v3", TINY_RESNET)
    ref = reference(e)
    state = {"module.base_encoder." + k: v for k, v in ref.state_dict().items()}
    state["module.base_encoder.fc.0.weight"] = torch.randn(16, 2048)
    state["module.predictor.0.weight"] = torch.randn(16, 16)
    assert_same(load(e, save({"state_dict": state}, tmp_path)).model, ref)


def test_mae_drops_decoder(tmp_path):
    e = entry("vit", "vit_base_patch16_224", "mae", TINY_VIT)
    ref = reference(e)
    sd = dict(ref.state_dict())
    full = {**sd, "mask_token": torch.randn(1, 1, 32), "decoder_embed.weight": torch.randn(32, 64),
            "decoder_blocks.0.norm1.weight": torch.randn(32), "decoder_pred.weight": torch.randn(768, 32)}
    built = load(e, save({"model": full}, tmp_path, "mae_pretrain_vit_base.pth"))
    assert_same(built.model, ref)
    refuses(e, tmp_path, sd, wrap=lambda s: {"model": s}, drop_from="blocks.")


def test_deit_resamples_position_embedding(tmp_path):
    """DeiT-B/384 for detection: a 24×24 position grid loaded into a smaller grid, interpolated."""
    e = entry("vit", "vit_base_patch16_224", "deit", {**TINY_VIT, "img_size": 64})
    src = entry("vit", "vit_base_patch16_224", "deit", {**TINY_VIT, "img_size": 96})
    ref = reference(src)
    sd = {**ref.state_dict(), "head.weight": torch.randn(1000, 64), "head.bias": torch.randn(1000)}
    built = load(e, save({"model": sd}, tmp_path))
    assert "pos_embed (1, 37, 64)→(1, 17, 64)" in built.load_report
    got = built.model.state_dict()
    assert torch.equal(got["pos_embed"][:, 0], ref.state_dict()["pos_embed"][:, 0])  # class token kept
    assert_same(built.model, ref, skip=lambda k: k == "pos_embed")


def test_sam_image_encoder(tmp_path):
    e = entry("vit", "samvit_base_patch16", "sam", TINY_SAM)
    ref = reference(e)
    sd = {}
    for k, v in ref.state_dict().items():
        sd["image_encoder." + k.replace("mlp.fc1", "mlp.lin1").replace("mlp.fc2", "mlp.lin2")] = v
    sd.update({"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.randn(2, 128),
               "mask_decoder.iou_token.weight": torch.randn(1, 256),
               "pixel_mean": torch.randn(3, 1, 1), "pixel_std": torch.randn(3, 1, 1)})
    built = load(e, save(sd, tmp_path, "sam_vit_b_01ec64.pth"))
    assert_same(built.model, ref)
    assert any(".mlp.fc1." in k for k in built.model.state_dict())
    refuses(e, tmp_path, sd, drop_from="image_encoder.blocks")


# ----------------------------------------------------------------------- ConvNeXt, SwinV2, MiDaS

def _convnext_official(state: dict, with_gamma: bool = True) -> dict:
    out = {}
    for k, v in state.items():
        if k.startswith("stem."):
            out["downsample_layers.0." + k[len("stem."):]] = v
            continue
        m = re.fullmatch(r"stages\.(\d)\.downsample\.(.+)", k)
        if m:
            out[f"downsample_layers.{m.group(1)}.{m.group(2)}"] = v
            continue
        m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(.+)", k)
        if m:
            part = {"conv_dw": "dwconv", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"}
            name = m.group(3)
            for old, new in part.items():
                name = name.replace(old, new)
            if name == "gamma" and not with_gamma:
                continue
            out[f"stages.{m.group(1)}.{m.group(2)}.{name}"] = v
            continue
        if k.startswith("head.norm."):
            out["norm." + k[len("head.norm."):]] = v
            continue
        raise AssertionError(f"unmapped ConvNeXt key {k}")
    return out


def test_convnext_official(tmp_path):
    e = entry("convnext", "convnext_tiny", "convnext_official", TINY_CONVNEXT)
    ref = reference(e)
    sd = _convnext_official(ref.state_dict())
    assert "downsample_layers.0.0.weight" in sd and "stages.2.1.pwconv1.weight" in sd
    full = {"model": {**sd, "head.weight": torch.randn(1000, 128), "head.bias": torch.randn(1000)}}
    assert_same(load(e, save(full, tmp_path, "convnext_tiny_1k_224.pth")).model, ref)
    refuses(e, tmp_path, sd, wrap=lambda s: {"model": s})


def test_vicregl_convnext_without_layer_scale(tmp_path):
    e = entry("convnext", "convnext_xlarge", "vicregl", TINY_CONVNEXT)
    ref = reference(e)
    sd = _convnext_official(ref.state_dict(), with_gamma=False)
    built = load(e, save(sd, tmp_path, "convnext_xlarge_alpha0.75.pth"))
    assert_same(built.model, ref, skip=lambda k: k.endswith(".gamma"))
    gammas = [v for k, v in built.model.state_dict().items() if k.endswith(".gamma")]
    assert gammas and all(torch.equal(g, torch.ones_like(g)) for g in gammas)
    refuses(e, tmp_path, sd)


def _swinv2_original(state: dict, model) -> dict:
    out = {}
    for k, v in state.items():
        m = re.fullmatch(r"layers\.(\d)\.downsample\.(.+)", k)
        out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v
    for name, buf in model.named_buffers():  # the original layout saves the window buffers
        if name.endswith(("relative_coords_table", "relative_position_index", "attn_mask")):
            out[name] = torch.randn(buf.shape) if buf.is_floating_point() else buf.clone()
    return out


def test_swinv2_official_moves_patch_merging(tmp_path):
    e = entry("swinv2", "swinv2_tiny_window8_256", "swinv2_official", TINY_SWIN)
    ref = reference(e)
    sd = _swinv2_original(ref.state_dict(), ref)
    assert "layers.0.downsample.reduction.weight" in sd and "layers.3.downsample.reduction.weight" not in sd
    assert any(k.endswith("attn_mask") for k in sd)
    full = {"model": {**sd, "head.weight": torch.randn(1000, 128), "head.bias": torch.randn(1000)}}
    built = load(e, save(full, tmp_path, "swinv2_tiny_patch4_window8_256.pth"))
    assert_same(built.model, ref)
    assert "window-size buffers" in built.load_report
    refuses(e, tmp_path, sd, wrap=lambda s: {"model": s}, drop_from="layers.0.downsample")


def test_midas_takes_the_dpt_encoder(tmp_path):
    e = entry("swinv2", "swinv2_tiny_window16_256", "midas", TINY_SWIN)
    ref = reference(e)
    sd = {"pretrained.model." + k: v for k, v in _swinv2_original(ref.state_dict(), ref).items()}
    sd.update({"pretrained.model.head.weight": torch.randn(1000, 128), "pretrained.model.head.bias": torch.randn(1000),
               "pretrained.act_postprocess1.0.weight": torch.randn(8, 16, 1, 1),
               "scratch.layer1_rn.weight": torch.randn(8, 16, 3, 3), "scratch.output_conv.0.bias": torch.randn(8)})
    built = load(e, save(sd, tmp_path, "dpt_swin2_tiny_256.pt"))
    assert_same(built.model, ref)
    assert "DPT depth decoder" in built.load_report
    refuses(e, tmp_path, sd, drop_from="pretrained.model.layers")


# ----------------------------------------------------------------------- CLIP

class _ClipTorchScript(torch.nn.Module):
    """Stands in for OpenAI's CLIP archive: the visual tower plus text-tower tensors."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.token_embedding = torch.nn.Embedding(10, 8)
        self.positional_embedding = torch.nn.Parameter(torch.randn(77, 8))
        self.ln_final = torch.nn.LayerNorm(8)
        self.text_projection = torch.nn.Parameter(torch.randn(8, 32))
        self.logit_scale = torch.nn.Parameter(torch.ones([]))

    def forward(self, x):
        return self.visual.conv1(x)


def test_openai_clip_torchscript_archive(tmp_path):
    e = entry("clip_resnet", "RN50", "openai_clip", TINY_CLIP_RN)
    ref = reference(e)
    archive = torch.jit.trace(_ClipTorchScript(ref).eval(), torch.zeros(1, 3, 32, 32))
    path = tmp_path / "RN50.pt"
    archive.save(str(path))
    built = load(e, path)
    assert_same(built.model, ref)
    assert "CLIP text tower" in built.load_report
    sd = {"visual." + k: v for k, v in ref.state_dict().items()}
    sd["transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(24, 8)
    refuses(e, tmp_path, sd, extra="visual.unknown.weight", drop_from="visual.attnpool")


def _open_clip_layout(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            out["visual.class_embedding"] = v.reshape(-1)
        elif k == "pos_embed":
            out["visual.positional_embedding"] = v[0]
        elif k == "patch_embed.proj.weight":
            out["visual.conv1.weight"] = v
        elif k.startswith("norm_pre."):
            out["visual.ln_pre." + k.split(".")[-1]] = v
        elif k.startswith("norm."):
            out["visual.ln_post." + k.split(".")[-1]] = v
        else:
            m = re.fullmatch(r"blocks\.(\d+)\.(.+)", k)
            names = {"norm1": "ln_1", "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
                     "attn.proj": "attn.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
            part = m.group(2)
            for old, new in names.items():
                part = part.replace(old, new)
            out[f"visual.transformer.resblocks.{m.group(1)}.{part}"] = v
    return out


def test_open_clip_vit(tmp_path):
    e = entry("vit", "vit_base_patch16_clip_224", "open_clip", TINY_OPEN_CLIP)
    ref = reference(e)
    sd = _open_clip_layout(ref.state_dict())
    sd.update({"visual.proj": torch.randn(64, 32), "positional_embedding": torch.randn(77, 32),
               "text_projection": torch.randn(32, 32), "logit_scale": torch.ones([]),
               "token_embedding.weight": torch.randn(10, 32), "ln_final.weight": torch.randn(32),
               "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32)})
    built = load(e, save(sd, tmp_path, "open_clip_pytorch_model.bin"))
    assert_same(built.model, ref)
    assert "CLIP image projection" in built.load_report
    refuses(e, tmp_path, sd, extra="visual.attn_pool.weight", drop_from="visual.transformer")


# ----------------------------------------------------------------------- Stable Diffusion

def _ldm_unet(state: dict, layers: int, n_blocks: int, attn_blocks: set[int]) -> dict:
    """diffusers UNet2DConditionModel names → the LDM (openaimodel) names of an SD v1 checkpoint."""
    res = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
    out = {}
    for k, v in state.items():
        new = None
        top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
        for old, ldm in top.items():
            if k.startswith(old + "."):
                new = ldm + k[len(old):]
        m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k)
        if m:
            i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            idx = 1 + i * (layers + 1) + j
            if kind == "resnets":
                for d, ldm in res:
                    rest = rest.replace(d + ".", ldm + ".")
                new = f"input_blocks.{idx}.0.{rest}"
            else:
                new = f"input_blocks.{idx}.1.{rest}"
        m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", k)
        if m:
            new = f"input_blocks.{1 + int(m.group(1)) * (layers + 1) + layers}.0.op.{m.group(2)}"
        m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", k)
        if m:
            kind, j, rest = m.groups()
            if kind == "resnets":
                for d, ldm in res:
                    rest = rest.replace(d + ".", ldm + ".")
                new = f"middle_block.{2 * int(j)}.{rest}"
            else:
                new = f"middle_block.1.{rest}"
        m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", k)
        if m:
            i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            idx = i * (layers + 1) + j
            if kind == "resnets":
                for d, ldm in res:
                    rest = rest.replace(d + ".", ldm + ".")
                new = f"output_blocks.{idx}.0.{rest}"
            else:
                new = f"output_blocks.{idx}.1.{rest}"
        m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", k)
        if m:
            i = int(m.group(1))
            pos = 2 if i in attn_blocks else 1
            new = f"output_blocks.{i * (layers + 1) + layers}.{pos}.conv.{m.group(2)}"
        assert new is not None, k
        out["model.diffusion_model." + new] = v
    return out


def _ldm_vae(state: dict, n_blocks: int) -> dict:
    out = {}
    for k, v in state.items():
        new = k
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{n_blocks - 1 - int(m.group(1))}.block.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{n_blocks - 1 - int(m.group(1))}.upsample.", new)
        new = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.",
                     lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.", new)
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", k)
        if m:
            part = {"group_norm.weight": "norm.weight", "group_norm.bias": "norm.bias", "to_q.weight": "q.weight",
                    "to_q.bias": "q.bias", "to_k.weight": "k.weight", "to_k.bias": "k.bias", "to_v.weight": "v.weight",
                    "to_v.bias": "v.bias", "to_out.0.weight": "proj_out.weight", "to_out.0.bias": "proj_out.bias"}
            new = f"{m.group(1)}.mid.attn_1.{part[m.group(2)]}"
            if v.ndim == 2:
                v = v[:, :, None, None]  # LDM stores these as 1×1 convolutions
        out["first_stage_model." + new] = v
    return out


@pytest.fixture(scope="module")
def sd_checkpoint(tmp_path_factory):
    """A tiny SD v1-layout LDM checkpoint with its full UNet, VAE and CLIP text encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bobkit.backbones.adapters.sd_encoder import clip_prompt_ids, sd_configs

    cfg = sd_configs(TINY_SD)
    torch.manual_seed(1)
    unet, vae = UNet2DConditionModel(**cfg["unet"]), AutoencoderKL(**cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"])).eval()
    attn = {i for i, t in enumerate(cfg["unet"]["up_block_types"]) if t.startswith("CrossAttn")}
    state = _ldm_unet(unet.state_dict(), cfg["unet"]["layers_per_block"], len(cfg["unet"]["block_out_channels"]), attn)
    state.update(_ldm_vae(vae.state_dict(), len(cfg["vae"]["block_out_channels"])))
    text_sd = text.state_dict()
    prefix = "" if next(iter(text_sd)).startswith("text_model.") else "text_model."
    state.update({"cond_stage_model.transformer." + prefix + k: v for k, v in text_sd.items()})
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    state.update({"betas": torch.rand(10), "alphas_cumprod": torch.rand(10), "model_ema.decay": torch.tensor(0.9999)})
    with torch.no_grad():
        context = text(input_ids=clip_prompt_ids(cfg["prompt"])).last_hidden_state
    path = tmp_path_factory.mktemp("sd") / "sd-v1-4.ckpt"
    torch.save({"state_dict": state, "global_step": 470000}, path)
    return path, state, unet, vae, context


def test_stable_diffusion_ldm_checkpoint(sd_checkpoint):
    path, _, unet, vae, context = sd_checkpoint
    e = entry("sd_unet", "stable-diffusion-v1", "stable_diffusion", TINY_SD)
    built = load(e, path)
    got = built.model.state_dict()
    for k, v in unet.state_dict().items():
        if k.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")):
            assert torch.equal(got["unet." + k], v), k
    for k, v in vae.state_dict().items():
        if k.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(got["vae." + k], v), k
    assert torch.allclose(got["context"], context)
    assert "UNet decoder path" in built.load_report and "VAE decoder" in built.load_report
    feats = built.model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)
    assert [f.shape[1] for f in feats] == [32, 32, 64]


def test_stable_diffusion_refuses_extra_and_missing(sd_checkpoint, tmp_path):
    _, state, *_ = sd_checkpoint
    e = entry("sd_unet", "stable-diffusion-v1", "stable_diffusion", TINY_SD)
    extra = {**state, "model.diffusion_model.label_emb.0.weight": torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match="not converted"):
        load(e, save({"state_dict": extra}, tmp_path, "extra.ckpt"))
    renamed = {**state, "model.diffusion_model.input_blocks.1.0.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match="has no unet.down_blocks.0.resnets.0.extra.weight"):
        load(e, save({"state_dict": renamed}, tmp_path, "renamed.ckpt"))
    stranger = {**state, "cond_stage_model.model.foo": torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match="does not know"):
        load(e, save({"state_dict": stranger}, tmp_path, "stranger.ckpt"))
    missing = {k: v for k, v in state.items() if k != "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"}
    with pytest.raises(CheckpointMismatch, match="lacks"):
        load(e, save({"state_dict": missing}, tmp_path, "missing.ckpt"))
    no_text = {k: v for k, v in state.items() if not k.endswith("final_layer_norm.weight")}
    with pytest.raises(CheckpointMismatch, match="text encoder"):
        load(e, save({"state_dict": no_text}, tmp_path, "notext.ckpt"))


# ----------------------------------------------------------------------- SSCD, timm, user checkpoints

def test_sscd_torchscript_descriptor(tmp_path):
    e = entry("resnet", "resnet50", "sscd_torchscript", TINY_RESNET)
    ref = reference(e)
    path = tmp_path / "sscd_imagenet_mixup.torchscript.pt"
    torch.jit.trace(ref, torch.zeros(1, 3, 64, 64)).save(str(path))
    built = load(e, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(built.model.forward_features(x), ref.forward_features(x), atol=1e-5)
    assert built.num_features == 512
    wrong = entry("resnet", "resnext101_32x4d", "sscd_torchscript", TINY_RESNET)  # expects 1024-d
    with pytest.raises(CheckpointMismatch, match="descriptor"):
        load(wrong, path)
    with pytest.raises(CheckpointMismatch, match="TorchScript"):
        load(e, save({"a": torch.zeros(1)}, tmp_path, "plain.pt"))


def test_timm_hub_file_drops_the_named_classifier(tmp_path):
    from safetensors.torch import save_file

    e = entry("resnet", "resnet50", "timm", TINY_RESNET, timm_name="resnet50.a1_in1k")
    ref = reference(e)
    sd = {**ref.state_dict(), "fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    built = load(e, path)
    assert_same(built.model, ref)
    assert "classifier of resnet50.a1_in1k" in built.load_report
    with pytest.raises(CheckpointMismatch):
        bad = {k: v for k, v in sd.items() if k != "conv1.weight"}
        save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
        load(e, tmp_path / "bad.safetensors")


def test_every_manifest_format_has_a_converter_and_a_test():
    from bobkit.manifest.models import WeightsFormat

    formats = set(WeightsFormat.__args__) - {"python"}  # `python`: the user's entry loads its own weights
    assert formats == set(known_formats())
    tested = {"checkpoint", "torchvision", "vicreg", "dino", "moco_v3", "mae", "deit", "sam", "convnext_official",
              "vicregl",
              "swinv2_official", "midas", "openai_clip", "open_clip", "stable_diffusion", "sscd_torchscript", "timm"}
    assert formats <= tested


def test_user_checkpoint_for_a_timm_architecture(tmp_path):
    e = entry("vit", "vit_small_patch16_224", "checkpoint", TINY_VIT, path=str(tmp_path / "mine.pt"))
    ref = reference(e)
    sd = {"module." + k: v for k, v in ref.state_dict().items()}
    sd["module.head.weight"], sd["module.head.bias"] = torch.randn(10, 64), torch.randn(10)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "mine.pt")
    built = build(e, pretrained=True)  # the weights source is the local path itself
    assert_same(built.model, ref)
    assert built.weights == f"checkpoint: {tmp_path / 'mine.pt'}"

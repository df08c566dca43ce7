"""The Stable Diffusion v1 encoder as a backbone (BoB's SDEncoder): diffusers' VAE encoder, then the
UNet's encoder path (conv_in, time embedding, down blocks, middle block) at timestep 0,
cross-attending to a fixed text conditioning.

Features (bobkit's reading of BoB's five maps, FPN inputs [256, 320, 640, 1280, 1280]):
  VAE down block 1 (256 ch, stride 4); UNet down blocks 0-2 before their downsampling
  (320/640/1280 ch, strides 8/16/32); UNet middle block (1280 ch, stride 64).
The UNet's decoder path is not part of the backbone.

Text conditioning: with weights, the CLIP ViT-L/14 text encoder stored in the SD checkpoint
encodes BoB's prompt "object detection" once, at load time; the 77×768 result is kept as the
`context` buffer (saved with the model, so fine-tuned checkpoints carry it). At random init there
is no text encoder to run offline, so `context` is zeros (documented deviation: BoB downloads the
pretrained CLIP text encoder even for its random-init SD run).

The networks are built on the meta device from the SD v1 configs below (no hub download), the
decoder parts are discarded, and only the encoder is materialised and initialised.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SD_V1_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
    "attention_head_dim": 8, "norm_num_groups": 32,
}
SD_V1_VAE: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2, "latent_channels": 4, "sample_size": 512, "norm_num_groups": 32,
}
SD_V1_TEXT: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
}
SD_V1_LATENT_SCALE = 0.18215
BOB_PROMPT = "object detection"
CLIP_EOT = 49407


def sd_configs(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SD v1 configs; `overrides` ({"unet": {...}, "vae": {...}, "text": {...}, "prompt": str})
    lets tests build a tiny encoder of the same structure."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - {"unet", "vae", "text", "prompt", "latent_scale"}
    if unknown:
        raise ValueError(f"unknown Stable Diffusion options {sorted(unknown)}")
    return {
        "unet": {**SD_V1_UNET, **overrides.get("unet", {})},
        "vae": {**SD_V1_VAE, **overrides.get("vae", {})},
        "text": {**SD_V1_TEXT, **overrides.get("text", {})},
        "prompt": overrides.get("prompt", BOB_PROMPT),
        "latent_scale": float(overrides.get("latent_scale", SD_V1_LATENT_SCALE)),
    }


def _materialise(module: nn.Module) -> nn.Module:
    """meta → CPU with each layer's own default initialisation."""
    module = module.to_empty(device="cpu")
    for sub in module.modules():
        if sub._parameters and any(p is not None for p in sub._parameters.values()):
            reset = getattr(sub, "reset_parameters", None)
            if reset is None:
                raise TypeError(f"cannot initialise {type(sub).__name__}: it has no reset_parameters")
            reset()
    for name, buf in module.named_buffers():
        if buf.is_floating_point():
            buf.zero_()
    return module


class SDEncoder(nn.Module):
    def __init__(self, configs: dict[str, Any], num_classes: int = 0, materialise: bool = True) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        super().__init__()
        self.configs = configs
        with torch.device("meta"):
            vae = AutoencoderKL(**configs["vae"])
            unet = UNet2DConditionModel(**configs["unet"])
        self.vae = nn.Module()
        self.vae.encoder = vae.encoder
        self.vae.quant_conv = vae.quant_conv
        self.unet = nn.Module()
        for part in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
            setattr(self.unet, part, getattr(unet, part))
        del vae, unet
        if materialise:
            _materialise(self)
        width = configs["unet"]["cross_attention_dim"]
        self.register_buffer("context", torch.zeros(1, configs["text"]["max_position_embeddings"], width))
        self.latent_channels = configs["vae"]["latent_channels"]
        self.latent_scale = configs["latent_scale"]

        vae_ch, unet_ch = configs["vae"]["block_out_channels"], configs["unet"]["block_out_channels"]
        latent_stride = 2 ** (len(vae_ch) - 1)
        self.feature_info = [{"num_chs": vae_ch[1], "reduction": 4, "module": "vae.encoder.down_blocks.1"}]
        self.feature_info += [{"num_chs": unet_ch[i], "reduction": latent_stride * 2 ** i,
                               "module": f"unet.down_blocks.{i}"} for i in range(len(unet_ch) - 1)]
        self.feature_info.append({"num_chs": unet_ch[-1], "reduction": latent_stride * 2 ** (len(unet_ch) - 1),
                                  "module": "unet.mid_block"})
        self.num_features = unet_ch[-1]
        self.head_hidden_size = self.num_features
        self.reset_classifier(num_classes)

    # -- timm interface
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(self, x, indices=None, intermediates_only=False, **_):
        feats = self._all_features(x)
        n = len(feats)
        wanted = range(n) if indices is None else [i % n for i in ([indices] if isinstance(indices, int) else indices)]
        picked = [feats[i] for i in wanted]
        return picked if intermediates_only else (feats[-1], picked)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._all_features(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(-2, -1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- the encoder
    def _all_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        enc = self.vae.encoder
        h = enc.conv_in(x)
        vae_feats = []
        for block in enc.down_blocks:
            h = block(h)
            vae_feats.append(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        latent = self.vae.quant_conv(h)[:, : self.latent_channels] * self.latent_scale  # posterior mean

        unet = self.unet
        t = torch.zeros(x.shape[0], device=x.device)
        emb = unet.time_embedding(unet.time_proj(t).to(latent.dtype))
        context = self.context.to(latent.dtype).expand(x.shape[0], -1, -1)
        h = unet.conv_in(latent)
        feats = [vae_feats[1]]
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, res = block(hidden_states=h, temb=emb)
            if block.downsamplers is not None:
                feats.append(res[-2])
        h = unet.mid_block(h, emb, encoder_hidden_states=context)
        feats.append(h)
        return feats


def clip_prompt_ids(prompt: str, length: int = 77) -> torch.Tensor:
    """CLIP BPE token ids of `prompt`, padded as SD v1 pads them (with the end-of-text token)."""
    import open_clip

    ids = open_clip.tokenize([prompt], context_length=length)[0]
    end = int((ids == CLIP_EOT).nonzero()[0]) if (ids == CLIP_EOT).any() else length - 1
    ids[end + 1:] = CLIP_EOT
    return ids.unsqueeze(0)

"""Stable Diffusion v1 LDM checkpoints (`sd-v1-*.ckpt`) → bobkit's SDEncoder.

The UNet (`model.diffusion_model.*`) and VAE (`first_stage_model.*`) are converted with diffusers'
own single-file conversion functions; bobkit then checks that every source tensor of those two
networks was used (diffusers' functions skip unknown keys silently) and keeps the encoder side.
The CLIP text encoder (`cond_stage_model.transformer.*`) is loaded strictly into transformers'
CLIPTextModel and run once on BoB's prompt to give the fixed `context`.
"""

from __future__ import annotations

from typing import Any

from bobkit.backbones.converters import converter
from bobkit.backbones.converters.common import CheckpointMismatch, ConvertContext, Converted, tensors_of

_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_TEXT = "cond_stage_model.transformer."
_SCHEDULE = {  # DDPM noise-schedule buffers of the LDM wrapper: constants, not weights
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
}
_KEEP_UNET = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")
_KEEP_VAE = ("encoder.", "quant_conv.")


def _storage_ids(tensors) -> set[int]:
    return {t.data_ptr() for t in tensors if t is not None and t.numel()}


def _check_consumed(source: dict[str, Any], prefix: str, converted: dict[str, Any], where: str, what: str) -> None:
    used = _storage_ids(converted.values())
    unused = sorted(k for k, v in source.items() if k.startswith(prefix) and v.numel() and v.data_ptr() not in used)
    if unused:
        shown = ", ".join(unused[:5]) + (f", … ({len(unused)} in all)" if len(unused) > 5 else "")
        raise CheckpointMismatch(f"{where}: {len(unused)} {what} key(s) were not converted: {shown}; "
                                 "the checkpoint does not fit the SD v1 configuration")


@converter("stable_diffusion")
def convert_stable_diffusion(ctx: ConvertContext) -> Converted:
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    where = str(ctx.path)
    configs = ctx.model.configs
    source = tensors_of(ctx.load(), where, wrappers=("state_dict",))
    out = Converted()

    def drop(keys: list[str], reason: str) -> None:
        if keys:
            out.dropped.setdefault(reason, []).extend(keys)

    drop([k for k in source if k.startswith("model_ema.")], "EMA copy of the UNet (the ckpt's main weights are used)")
    drop([k for k in source if k in _SCHEDULE], "DDPM noise-schedule constants")
    drop([k for k in source if k.startswith(_VAE + "loss.")], "VAE training loss (LPIPS/discriminator)")
    known = (_UNET, _VAE, _TEXT)
    unknown = [k for k in source if not k.startswith(known) and not any(k in v for v in out.dropped.values())]
    if unknown:
        raise CheckpointMismatch(f"{where}: the stable_diffusion converter does not know checkpoint key(s) "
                                 f"{', '.join(sorted(unknown)[:6])}; the file is not an SD v1 LDM checkpoint")

    nets = {k: v for k, v in source.items() if k.startswith((_UNET, _VAE)) and not k.startswith(_VAE + "loss.")}
    unet = convert_ldm_unet_checkpoint(nets, dict(configs["unet"]))
    _check_consumed(nets, _UNET, unet, where, "UNet")
    vae = convert_ldm_vae_checkpoint(nets, dict(configs["vae"]))
    _check_consumed(nets, _VAE, vae, where, "VAE")
    for key, value in unet.items():
        if key.startswith(_KEEP_UNET):
            out.state["unet." + key] = value
    drop([k for k in unet if not k.startswith(_KEEP_UNET)], "UNet decoder path (not part of the encoder)")
    for key, value in vae.items():
        if key.startswith(_KEEP_VAE):
            out.state["vae." + key] = value
    drop([k for k in vae if not k.startswith(_KEEP_VAE)], "VAE decoder")

    text = {k[len(_TEXT):]: v for k, v in source.items() if k.startswith(_TEXT)}
    out.state["context"] = encode_prompt(text, configs, where, out)
    out.notes.append(f"text conditioning: CLIP text encoding of {configs['prompt']!r}")
    return out


def encode_prompt(text_state: dict[str, Any], configs: dict[str, Any], where: str, out: Converted):
    """Load the checkpoint's CLIP text encoder strictly and encode the prompt (77 × width)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from bobkit.backbones.adapters.sd_encoder import clip_prompt_ids
    from bobkit.backbones.converters.common import KeyMapper
    from bobkit.backbones.loading import load_strict

    model = CLIPTextModel(CLIPTextConfig(**configs["text"])).eval()
    targets = set(model.state_dict())
    km = KeyMapper(text_state, where + " (text encoder)", "stable_diffusion")
    km.drop(lambda k: k.endswith("position_ids"), "CLIP position ids (an index buffer, not a weight)")

    def rule(key: str) -> str | None:
        for candidate in (key, key.removeprefix("text_model."), "text_model." + key):
            if candidate in targets:
                return candidate
        return None

    km.rename(rule)
    text = km.result()
    load_strict(model, text, where + " (text encoder)")
    for reason, keys in text.dropped.items():
        out.dropped.setdefault(reason, []).extend(_TEXT + k for k in keys)
    with torch.no_grad():
        ids = clip_prompt_ids(configs["prompt"], configs["text"]["max_position_embeddings"])
        return model(input_ids=ids).last_hidden_state.float()

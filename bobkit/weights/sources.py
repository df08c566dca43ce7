"""Where a manifest's WeightsSource lives: a URL or a Hugging Face hub file, with the key it has
in the lock file and the path it gets in the cache. timm names resolve through timm's pretrained
configs (the hub repo timm itself would download from); `torchvision://name` through torchvision's
weight tables (the IMAGENET1K_V1 files that mmcv's torchvision:// prefix means)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from bobkit.errors import BadInput


@dataclass(frozen=True)
class Artifact:
    kind: Literal["url", "hub", "path"]
    label: str  # what the user sees: a URL or hf://repo/file
    url: str | None = None
    path: str | None = None  # a user's local file (gauntlet backbones): verified, never downloaded
    hub_id: str | None = None
    hub_files: tuple[str, ...] = ()  # alternatives, first found wins (timm: safetensors, then .bin)
    revision: str | None = None
    gated: bool = False
    sha256: str | None = None  # expected digest stated by the manifest (or the URL), if any
    backbones: tuple[str, ...] = field(default=(), compare=False)

    def lock_key(self, hub_file: str | None = None) -> str:
        if self.kind == "url":
            return self.url or ""
        return f"hf://{self.hub_id}/{hub_file or self.hub_files[0]}" + (f"@{self.revision}" if self.revision else "")

    def hub_dir(self, cache: Path) -> Path:
        return cache / "hub" / (self.hub_id or "").replace("/", "--") / (self.revision or "main")

    def candidates(self, cache: Path) -> list[tuple[Path, str]]:
        """(cache path, lock key) for each file this artifact may be."""
        if self.kind == "path":
            local = Path(self.path or "").expanduser()
            return [(local, f"file://{local.resolve()}")]
        if self.kind == "url":
            parsed = urlparse(self.url or "")
            parts = [p for p in parsed.path.split("/") if p not in ("", ".", "..")]
            return [(cache / "url" / parsed.netloc / Path(*parts), self.lock_key())]
        return [(self.hub_dir(cache) / f, self.lock_key(f)) for f in self.hub_files]


def artifact_for(source: Any, backbone_id: str = "") -> Artifact:
    """The Artifact of a manifest WeightsSource (needs timm only for timm names)."""
    tags = (backbone_id,) if backbone_id else ()
    if getattr(source, "path", None):
        return Artifact("path", source.path, path=source.path, sha256=source.sha256, backbones=tags)
    if source.url:
        url = _torchvision_url(source.url) if source.url.startswith("torchvision://") else source.url
        return Artifact("url", url, url=url, gated=source.gated, sha256=source.sha256 or _url_digest(url),
                        backbones=tags)
    if source.hub_id:
        files = (source.hub_file,) if source.hub_file else ("open_clip_pytorch_model.bin",)
        return Artifact("hub", f"hf://{source.hub_id}/{files[0]}", hub_id=source.hub_id, hub_files=files,
                        gated=source.gated, sha256=source.sha256, backbones=tags)
    if source.timm_name:
        return _timm_artifact(source, tags)
    raise BadInput(f"backbone '{backbone_id}': weights have no url, hub_id or timm_name")


def _timm_artifact(source: Any, tags: tuple[str, ...]) -> Artifact:
    import timm

    cfg = timm.models.get_pretrained_cfg(source.timm_name)
    if cfg is None or "." not in source.timm_name:
        raise BadInput(f"timm has no pretrained weights named '{source.timm_name}' (timm {timm.__version__}); "
                       "use `<architecture>.<tag>` as listed by timm.list_pretrained()")
    if cfg.hf_hub_id:
        hub_id = cfg.hf_hub_id
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        return Artifact("hub", f"hf://{hub_id}", hub_id=hub_id, hub_files=files, sha256=source.sha256,
                        backbones=tags)
    if cfg.url:
        return Artifact("url", cfg.url, url=cfg.url, sha256=source.sha256, backbones=tags)
    raise BadInput(f"timm's pretrained config '{source.timm_name}' names no hub repo or URL")


def _torchvision_url(url: str) -> str:
    from torchvision.models import get_model_weights

    name = url[len("torchvision://"):]
    try:
        return get_model_weights(name)["IMAGENET1K_V1"].url
    except (ValueError, KeyError):
        raise BadInput(f"{url}: torchvision has no IMAGENET1K_V1 weights for '{name}'") from None


def _url_digest(url: str) -> str | None:
    """OpenAI's CLIP URLs carry the file's full sha256 as a path segment (clip.load checks it)."""
    parsed = urlparse(url)
    if parsed.netloc == "openaipublic.azureedge.net":
        for part in parsed.path.split("/"):
            if len(part) == 64 and all(c in "0123456789abcdef" for c in part):
                return part
    return None

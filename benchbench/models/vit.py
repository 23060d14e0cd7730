"""The ViT family: timm's VisionTransformer at a size of VIT_SIZES and any patch size."""
from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from benchbench.errors import ConfigError
from benchbench.models.specs import VIT_SIZES, ModelSpec, ViTSize
from benchbench.registry import cfg_get as _cfg_get


def vit_kwargs(size: ViTSize, cfg: Any) -> dict[str, Any]:
    return dict(
        embed_dim=size.width,
        depth=size.depth,
        num_heads=size.heads,
        mlp_ratio=size.mlp / size.width,
        class_token=True,  # paper: [class] token -> LayerNorm -> linear head
        global_pool="token",
        # the paper's dropout: after adding the position embeddings and after every dense
        # layer but qkv (vision_transformer vit_jax/models_vit.py); none on the head
        pos_drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        proj_drop_rate=float(_cfg_get(cfg, "drop_rate", 0.0)),
        drop_path_rate=float(_cfg_get(cfg, "drop_path_rate", 0.0)),
    )


def build_vit(spec: ModelSpec, cfg: Any, p: int, num_classes: int, image_size: int,
              in_chans: int) -> nn.Module:
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    pad = bool(_cfg_get(cfg, "pad_to_patch", False))
    return VisionTransformer(
        img_size=-(-image_size // p) * p if pad else image_size,  # grid of the padded input
        patch_size=p,
        dynamic_img_pad=pad,
        **({"embed_layer": partial(PatchEmbed, strict_img_size=False)} if pad else {}),
        in_chans=in_chans,
        num_classes=num_classes,
        **vit_kwargs(VIT_SIZES[spec.vit], cfg),
    )


def vit_name(spec: ModelSpec, cfg: Any, p: int) -> str:
    return f"ViT-{spec.vit}/{p}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_patch(cfg: Any, p: int, image_size: int, allowed: tuple[int, ...] | None = None,
                what: str = "patch size") -> None:
    """A patch (or a backbone's downsampling) must fit and divide the image; `allowed`
    narrows the valid choices the message names (None: every divisor)."""
    valid = [d for d in _divisors(image_size) if allowed is None or d in allowed]
    if p > image_size:  # even padded, the model would see one patch that is mostly padding
        raise ConfigError(
            f"{what} {p} is larger than the {image_size} px image: set data.image_size to at "
            f"least {p} (a multiple of it), or model.patch_size to one of "
            f"{', '.join(map(str, valid)) or 'none'}."
        )
    if p >= 1 and image_size % p and _cfg_get(cfg, "pad_to_patch", False):
        return  # timm pads the input up to a multiple of the patch (tokens = ceil(H/P)^2)
    if p < 1 or image_size % p:
        mult = ((image_size + p - 1) // p) * p if p >= 1 else None
        raise ConfigError(
            f"patch size {p} does not divide image size {image_size}: "
            f"valid model.patch_size for {image_size} px: {', '.join(map(str, valid)) or 'none'}; "
            f"or set data.image_size to a multiple of {p}" + (f" (e.g. {mult})." if mult else ".")
        )

"""The ViT family: timm's VisionTransformer at a size of VIT_SIZES and any patch size."""
from __future__ import annotations

from collections import OrderedDict
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


class PreLogits(nn.Sequential):
    """The paper's pre-training head (Sec. 3.1: "a MLP with one hidden layer at pre-training
    time"; big_vision vit.py `pre_logits`: Dense(width) + tanh): pre-logits = tanh(W x + b)."""

    def __init__(self, width: int):
        super().__init__(OrderedDict(fc=nn.Linear(width, width), act=nn.Tanh()))
        nn.init.normal_(self.fc.weight, std=width ** -0.5)  # lecun-normal scale, as flax Dense
        nn.init.zeros_(self.fc.bias)


def add_hidden_head(model: nn.Module) -> nn.Module:
    """model.head_hidden=true: the hidden layer sits in timm's `fc_norm` slot (pooled token ->
    fc_norm -> head), so `forward_head(pre_logits=True)` (the few-shot features) is its output."""
    if not isinstance(model.fc_norm, nn.Identity):
        raise ValueError("add_hidden_head needs a timm ViT without fc_norm (global_pool='token')")
    model.fc_norm = PreLogits(model.embed_dim)
    return model


def drop_hidden_head(model: nn.Module) -> bool:
    """Fine-tuning drops the hidden layer (paper Sec. 3.1: a single linear layer at fine-tuning,
    zero-initialised); True when there was one."""
    if isinstance(getattr(model, "fc_norm", None), PreLogits):
        model.fc_norm = nn.Identity()
        return True
    return False


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

"""Read a Hugging Face transformers `ViTForImageClassification` folder into timm ViT weights.

`init.checkpoint=hf:<folder>` (config.json + model.safetensors, as `save_pretrained` writes
it, e.g. a local copy of google/vit-base-patch16-224). Only safetensors is needed to read
it; transformers itself is not imported. Both key layouts are read: the saved one
(`vit.encoder.layer.N.attention.attention.query`) and transformers 5's in-memory one
(`vit.layers.N.attention.q_proj`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from benchbench.errors import ConfigError

# per-block tensors: transformers name (both layouts) -> timm name
_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_QKV = {"attention.attention.query": "q", "attention.attention.key": "k",
        "attention.attention.value": "v", "attention.q_proj": "q", "attention.k_proj": "k",
        "attention.v_proj": "v"}
_BLOCK_RE = re.compile(r"^vit\.(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_TOP = {
    "vit.embeddings.cls_token": "cls_token",
    "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "vit.layernorm.weight": "norm.weight",
    "vit.layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def read_folder(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config.json, tensors) of a save_pretrained folder; a clear error for anything else."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise ConfigError(f"init.checkpoint=hf:{folder}: no such folder (a transformers "
                          f"save_pretrained folder with config.json and model.safetensors).")
    cfg_file, weights = d / "config.json", d / "model.safetensors"
    for f in (cfg_file, weights):
        if not f.is_file():
            raise ConfigError(f"init.checkpoint=hf:{folder}: {f.name} is missing (expected "
                              f"config.json + model.safetensors, as save_pretrained writes them).")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_file} is not valid JSON ({e}).") from None
    if config.get("model_type") != "vit":
        raise ConfigError(f"{cfg_file}: model_type {config.get('model_type')!r} is not 'vit'; "
                          f"only ViTForImageClassification / ViTModel folders are read.")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ConfigError("reading hf: checkpoints needs safetensors: "
                          "pip install 'benchbench[hf]'.") from None
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file, whatever the error
        raise ConfigError(f"{weights} is unreadable ({type(e).__name__}).") from None
    return config, tensors


def to_timm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ViT tensors -> timm VisionTransformer state dict (q, k, v -> one qkv)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k in _TOP:
            out[_TOP[k]] = v
            continue
        m = _BLOCK_RE.match(k)
        if m is None:
            continue  # e.g. ViTModel's pooler: not part of the classifier's path
        i, name, kind = int(m[1]), m[2], m[3]
        if name in _QKV:
            qkv.setdefault((i, kind), {})[_QKV[name]] = v
        elif name in _BLOCK:
            out[f"blocks.{i}.{_BLOCK[name]}.{kind}"] = v
        else:
            raise ConfigError(f"unexpected tensor {k!r} in the hf checkpoint: not a ViT layout "
                              f"benchbench reads.")
    for (i, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConfigError(f"hf checkpoint: block {i} lacks part of its attention "
                              f"({kind}: has {sorted(parts)}).")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def hf_pretrained_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The timm state dict of a transformers ViT folder (head included when it has one)."""
    config, tensors = read_folder(folder)
    state = to_timm(tensors)
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise ConfigError(f"hf checkpoint {folder} has no ViT embeddings: not a ViT.")
    if config.get("qkv_bias") is False:
        raise ConfigError(f"hf checkpoint {folder} has qkv_bias=false; benchbench's ViTs use "
                          f"a qkv bias, as the paper.")
    return state

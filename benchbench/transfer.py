"""Pre-train, then transfer (the paper's protocol): find a checkpoint, load it into a model
built for the new task (new zero-initialised head, position embeddings resampled to the new
resolution), and link the rows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchbench.errors import BenchbenchError, ConfigError


def resolve_checkpoint(ref: str, results_dirs: list[Path]) -> Path:
    """`ref` is a benchbench run_id (its final.pt in a results dir), or a file path."""
    p = Path(os.path.expanduser(ref))
    if p.is_file():
        return p
    for d in results_dirs:
        cand = d / "ckpt" / ref / "final.pt"
        if cand.is_file():
            return cand
    where = ", ".join(str(d) for d in results_dirs) or "(none)"
    raise ConfigError(
        f"no checkpoint '{ref}': not a file, and no ckpt/{ref}/final.pt under {where}. "
        f"Pre-train with train.save_final=true, or pass init.checkpoint=/path/to/file.pt."
    )


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise BenchbenchError(f"checkpoint {path} is unreadable ({type(e).__name__}).") from None
    return state.get("model", state) if isinstance(state, dict) else state


def timm_pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """timm's pretrained weights, only from the local cache (never downloaded here)."""
    import timm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        raise ConfigError(
            f"timm's pretrained '{name}' is not in the local cache ({type(e).__name__}); "
            f"download it once on a machine with internet (HF cache), or use a benchbench "
            f"checkpoint."
        ) from None


def _head_keys(model: nn.Module) -> set[str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return set()
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for p in head.parameters() if id(p) in names}


def load_for_transfer(model: nn.Module, state: dict[str, torch.Tensor], *,
                      zero_head: bool = True) -> dict[str, Any]:
    """Load pre-trained weights into `model` (built for the new classes and resolution).

    The classifier head is not loaded: it is re-initialised to zeros (paper, appendix B.1.1).
    Absolute position embeddings are resampled (bicubic, timm) to the new token grid.
    Returns what was done, for the row.
    """
    from timm.layers import resample_abs_pos_embed

    own = model.state_dict()
    head = _head_keys(model)
    new: dict[str, torch.Tensor] = {}
    resampled = False
    for k, v in state.items():
        if k in head or k not in own:
            continue
        if k == "pos_embed" and v.shape != own[k].shape:
            n_prefix = int(getattr(model, "num_prefix_tokens", 1))
            grid = model.patch_embed.grid_size
            v = resample_abs_pos_embed(v, new_size=list(grid), num_prefix_tokens=n_prefix)
            resampled = True
        if v.shape != own[k].shape:
            raise ConfigError(
                f"pre-trained weight '{k}' has shape {tuple(v.shape)}, the model needs "
                f"{tuple(own[k].shape)}: pre-train and fine-tune must use the same model "
                f"(and data.channels; set data.channels=3 to feed grayscale to an RGB model)."
            )
        new[k] = v
    missing = [k for k in own if k not in new and k not in head]
    if missing:
        raise ConfigError(
            f"the checkpoint lacks {len(missing)} weights of this model (e.g. {missing[0]}): "
            f"it was written for another architecture."
        )
    model.load_state_dict(new, strict=False)
    if zero_head:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in head:
                    p.zero_()
    return {"pos_embed_resampled": resampled, "loaded_tensors": len(new)}

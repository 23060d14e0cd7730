"""Pre-train, then transfer (the paper's protocol): find a checkpoint, load it into a model
built for the new task (new zero-initialised head, position embeddings resampled to the new
resolution), and link the rows.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchbench.errors import BenchbenchError, ConfigError


def resolve_checkpoint(ref: str, results_dirs: list[Path],
                       checkpoint_dirs: list[Path] | tuple[Path, ...] = ()) -> Path:
    """`ref` is a file path, or a benchbench run_id: its final.pt in a checkpoint dir
    (`<dir>/<run_id>/final.pt`, results.checkpoint_dir), in a results dir's ckpt/, or where
    its row's weights_path says."""
    p = Path(os.path.expanduser(ref))
    if p.is_file():
        return p
    if _looks_like_path(ref):
        what = "is a folder, not a checkpoint file" if p.is_dir() else "does not exist"
        raise ConfigError(
            f"init.checkpoint={ref}: the file {p.resolve()} {what}. Pass a .pt file written "
            f"by benchbench (<results.checkpoint_dir>/<run_id>/final.pt), or a run_id."
        )
    cands = [c / ref / "final.pt" for c in checkpoint_dirs]
    cands += [d / "ckpt" / ref / "final.pt" for d in results_dirs]
    for cand in cands:
        if cand.is_file():
            return cand
    for d in results_dirs:  # the row knows where its weights went
        said = _weights_path_of(d, ref)
        if said is not None and Path(said).is_file():
            return Path(said)
        if said is not None:
            raise ConfigError(
                f"no checkpoint '{ref}': its row in {d} says its weights are at {said}, and "
                f"that file does not exist (moved or deleted?); pass "
                f"init.checkpoint=/path/to/final.pt, or set results.checkpoint_dir to where "
                f"the <run_id>/final.pt folders are now."
            )
    # results.checkpoint_dir unset: it is <results.dir>/ckpt, so each folder is named once
    seen = dict.fromkeys(str(c) for c in [*checkpoint_dirs, *(d / "ckpt" for d in results_dirs)])
    raise ConfigError(
        f"no checkpoint '{ref}': not a file, and no {ref}/final.pt under "
        f"{', '.join(seen) or '(none)'}. Pre-train with train.save_final=true, add the results "
        f"folder it ran in with init.results_dirs=[DIR], or pass "
        f"init.checkpoint=/path/to/file.pt."
    )


def _weights_path_of(results_dir: Path, run_id: str) -> str | None:
    """The weights_path column of `run_id`'s row in `results_dir` (None: no row, or no
    weights recorded)."""
    from benchbench import results

    path = results.row_path(results_dir, run_id)
    if not path.is_file():
        return None
    try:
        return results.read_row(path).get("weights_path")
    except BenchbenchError:  # a broken row: the other places were searched already
        return None


def _looks_like_path(ref: str) -> bool:
    """A run_id is 12 hex digits; anything with a folder or a file suffix is a path."""
    return "/" in ref or "\\" in ref or ref.startswith(("~", ".")) or Path(ref).suffix != ""


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as e:  # noqa: BLE001 - any failure means an unusable file
        raise BenchbenchError(f"checkpoint {path} is unreadable ({type(e).__name__}).") from None
    return state.get("model", state) if isinstance(state, dict) else state


def timm_pretrained_state(name: str) -> dict[str, torch.Tensor]:
    """timm's pretrained weights, only from the local cache: no network call is made (the
    hub client would retry HTTPS for most of a minute before saying it is not cached)."""
    import timm

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        from benchbench.errors import closest_first

        near = closest_first(arch, timm.list_models())[:8]
        raise ConfigError(f"init.checkpoint=timm:{name}: timm has no model '{arch}'. Did you "
                          f"mean '{near[0]}'? Closest: {', '.join(near)}.")
    missing = _weights_not_cached(name)
    if missing:
        raise ConfigError(_not_cached(name, missing))
    try:
        with _hub_offline():
            return timm.create_model(name, pretrained=True).state_dict()
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        raise ConfigError(_not_cached(name, type(e).__name__)) from None


def _not_cached(name: str, why: str) -> str:
    return (f"timm's pretrained '{name}' is not in the local cache ({why}); nothing is "
            f"downloaded at run time: download it once on a machine with internet "
            f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\", then "
            f"copy ~/.cache/huggingface), or use a benchbench checkpoint.")


def _weights_not_cached(name: str) -> str | None:
    """What is missing when the weights are surely not on disk (no hub repo folder, no
    torch.hub file); None when they may be there."""
    try:
        from urllib.parse import urlparse

        from timm.models import get_pretrained_cfg
        from timm.models._builder import _resolve_pretrained_source

        cfg = get_pretrained_cfg(name)
        kind, loc = _resolve_pretrained_source(cfg.to_dict()) if cfg else (None, None)
    except Exception:  # noqa: BLE001 - timm internals moved: the offline hub still holds
        return None
    if kind == "hf-hub" and isinstance(loc, str):  # no repo folder: not cached, say so now
        from huggingface_hub import constants

        repo = Path(constants.HF_HUB_CACHE) / f"models--{loc.split('@')[0].replace('/', '--')}"
        return None if repo.is_dir() else f"no {repo}"
    if kind != "url":
        return None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(loc).path)
    return None if cached.is_file() else f"no {cached}"


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub reads HF_HUB_OFFLINE once, at import (timm imports it first), so
    setting the variable here is too late: switch its module flag for the call."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


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

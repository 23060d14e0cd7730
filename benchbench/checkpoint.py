"""Checkpoints: atomic save, and a load that refuses one written for a different config."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchbench.errors import BenchbenchError


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic torch.save (temp file + rename): a crash mid-write keeps the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Load with weights_only=True; refuse a checkpoint written for a different config."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise BenchbenchError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); delete it to start over."
        ) from None
    theirs = state.get("identity")
    if theirs != identity:
        diff = _dict_diff(theirs or {}, identity)
        raise BenchbenchError(
            f"checkpoint {path} was written for a different config ({diff}); "
            f"delete it or restore that config."
        )
    return state


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _dict_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    fa, fb = _flat(a), _flat(b)
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return "; ".join(f"{k}: {fa.get(k)!r} there vs {fb.get(k)!r} here" for k in keys[:5]) or "?"



def unwrap(model: nn.Module) -> nn.Module:
    """The module whose weights are saved: without torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP

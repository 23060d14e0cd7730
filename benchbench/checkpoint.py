"""Checkpoints: where a run's go, atomic save, the last N kept, and a load that refuses one
written for a different config.

A run's folder is `<results.checkpoint_dir>/<run_id>` (by default `<results.dir>/ckpt/<run_id>`):
`last.pt` (weights, optimizer and schedule: what a relaunch resumes from; deleted when the run
ends), `step-<k>.pt` (the last `train.keep_checkpoints` of those, kept) and `final.pt` (the
final weights only, with `train.save_final`).
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchbench.errors import BenchbenchError, ConfigError


def root(cfg: Any) -> Path:
    """Where runs' checkpoint folders go: results.checkpoint_dir, else <results.dir>/ckpt."""
    from benchbench.paths import abs_path

    res = cfg.results
    if res.get("checkpoint_dir"):
        return Path(abs_path(os.path.expanduser(str(res.checkpoint_dir))))
    return Path(abs_path(str(res.dir))) / "ckpt"


def run_dir(cfg: Any, run_id: str) -> Path:
    """The folder of `run_id`'s checkpoints under `cfg.results`."""
    return root(cfg) / run_id


def unwritable(folder: Path, cfg: Any) -> str | None:
    """Why checkpoints cannot be written to `folder` (a typo, a read-only or missing scratch
    filesystem), found before training by making it and writing a file there; None: they can."""
    import tempfile

    made = [d for d in (folder, *folder.parents) if not d.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".probe."):
            pass
        remove_empty(*made)  # the first checkpoint makes them again; a failed point leaves none
    except OSError as e:
        where = cfg.results.get("checkpoint_dir")
        key = (f"results.checkpoint_dir={where}" if where
               else f"results.dir={cfg.results.dir} (checkpoints go to its ckpt/)")
        return (f"{key}: cannot write checkpoints to {folder} ({e.strerror or e}); set "
                f"results.checkpoint_dir=<a writable folder>.")
    return None


def remove_empty(*folders: Path) -> None:
    """rmdir each folder in turn (innermost first) while it is empty: a finished run's
    `<run_id>/` once last.pt is gone, and the `ckpt/` above it."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:  # not empty (kept step-<k>.pt, final.pt, another run), or gone
            return


def keep_count(tcfg: Any) -> int:
    """train.keep_checkpoints, checked: how many of the latest checkpoints stay on disk."""
    n = tcfg.get("keep_checkpoints", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"train.keep_checkpoints must be a whole number >= 1, got {n!r}.")
    return n


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


_STEP_RE = re.compile(r"step-(\d+)\.pt")


def keep_recent(last: Path, step: int, keep: int) -> None:
    """With keep > 1, keep the just-saved `last` as `step-<step>.pt` too (a hard link: no
    second copy on disk; a copy where links are not supported) and delete all but the
    `keep` newest step files. A failure is a warning: `last` still resumes."""
    if keep <= 1:
        return
    snap = last.with_name(f"step-{step}.pt")
    tmp = last.with_name(f".{snap.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(last, tmp)
        except OSError:
            import shutil

            shutil.copyfile(last, tmp)
        os.replace(tmp, snap)
        steps = sorted((int(m.group(1)), p) for p in last.parent.iterdir()
                       if (m := _STEP_RE.fullmatch(p.name)))
        for _, old in steps[:-keep]:
            old.unlink()
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        warnings.warn(f"cannot keep checkpoint {snap} ({e.strerror or e})", stacklevel=3)


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

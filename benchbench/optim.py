"""Recipe pieces: learning rate (a swept value or the preset's per-model table), warm-up,
schedule, and the optimizer with timm's no-weight-decay parameter groups."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchbench.checkpoint import unwrap
from benchbench.errors import ConfigError


def _positive(tcfg: Any, key: str, *, whole: bool = False, hint: str = "",
              limit: float | None = None) -> float:
    """train.<key> as a finite number > 0 (whole if asked): never truncated silently."""
    v = tcfg.get(key)
    ok = isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and (
        not isinstance(v, float) or (math.isfinite(v) and (not whole or v.is_integer())))
    if not ok:
        kind = "a whole number" if whole else "finite"
        raise ConfigError(f"train.{key} must be positive ({kind}), got {v!r}{hint}.")
    if limit is not None and v > limit:
        raise ConfigError(f"train.{key}={v!r} is larger than {limit:.0f}: too large to be meant.")
    return v


def by_model(table: Any, model: str | None) -> Any:
    """A preset table's entry for `model`: by paper name ("ViT-B/16"), then without the patch
    ("ViT-B"); None when absent."""
    table = table or {}
    for key in (model, (model or "").split("/")[0]):
        if key in table:
            return table[key]
    return None


def resolve_lr(tcfg: Any, model: str | None) -> float:
    """train.lr if set (a swept lr wins), else the model's entry in train.lr_by_model (the
    paper presets' table), looked up by paper name ("ViT-B/16") then without the patch ("ViT-B")."""
    if tcfg.get("lr") is not None:
        return float(_positive(tcfg, "lr"))
    table = tcfg.get("lr_by_model") or {}
    v = by_model(table, model)
    if v is not None:
        return float(v)
    raise ConfigError(f"train.lr is null and {model} is not in train.lr_by_model "
                      f"({', '.join(table) or 'empty'}); set train.lr=<value>.")


LR_SCALINGS = ("linear", "sqrt", "none")


def effective_lr(tcfg: Any, lr: float) -> float:
    """The lr at this run's batch: the preset's lr is for train.lr_ref_batch (the paper: 4096);
    train.lr_scaling says how it follows another batch (linear: Goyal et al. 2017; sqrt;
    none or null: unchanged)."""
    how = tcfg.get("lr_scaling")
    if how is None or how == "none":
        return lr
    if how not in LR_SCALINGS:
        raise ConfigError(f"unknown train.lr_scaling '{how}'. Valid: {', '.join(LR_SCALINGS)}.")
    if tcfg.get("lr_ref_batch") is None:
        raise ConfigError(f"train.lr_scaling={how} needs train.lr_ref_batch (the batch the lr "
                          f"is for; the paper's 4096).")
    ratio = float(tcfg.batch_size) / _positive(tcfg, "lr_ref_batch", whole=True)
    return lr * (ratio if how == "linear" else math.sqrt(ratio))


def resolve_recipe(tcfg: Any, model: str | None, dataset: str | None) -> Any:
    """A copy of train with the preset tables applied: train.epochs from epochs_by_model
    (Table 6) and train.steps from steps_by_dataset (Table 4) when the run leaves both null,
    and dropout / drop_path checked. Unchanged (the same object) when no table applies."""
    from omegaconf import OmegaConf

    for key in ("dropout", "drop_path"):
        v = tcfg.get(key)
        if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool)
                                  and 0 <= v < 1):
            raise ConfigError(f"train.{key} must be in [0, 1) or null, got {v!r}.")
    budget_set = any(tcfg.get(k) is not None for k in ("flops", "steps", "epochs"))
    if budget_set or not (tcfg.get("epochs_by_model") or tcfg.get("steps_by_dataset")):
        return tcfg
    out = OmegaConf.create(OmegaConf.to_container(tcfg, resolve=True)) \
        if OmegaConf.is_config(tcfg) else OmegaConf.create(dict(tcfg))
    epochs = by_model(tcfg.get("epochs_by_model"), model)
    steps = (tcfg.get("steps_by_dataset") or {}).get(dataset)
    if epochs is not None:
        out.epochs = epochs
    elif steps is not None:
        out.steps = steps
    else:
        raise ConfigError(
            f"train.epochs and train.steps are null and neither train.epochs_by_model has "
            f"{model} nor train.steps_by_dataset has {dataset}; set train.epochs=<n> or "
            f"train.steps=<n>.")
    return out


def paper_steps(tcfg: Any, model: str | None) -> float | None:
    """The run's length at the paper's scale: train.ref_train_size images x the paper's epochs
    (the most of train.ref_epochs, epochs_by_model's entry and train.epochs) / lr_ref_batch;
    None when the preset gives no reference."""
    size = tcfg.get("ref_train_size")
    # the longer of the paper's epochs and the run's (Table 6's 14-epoch repeats kept 10k)
    known = [e for e in (tcfg.get("ref_epochs"), by_model(tcfg.get("epochs_by_model"), model),
                         tcfg.get("epochs")) if e is not None]
    if size is None or not known:
        return None
    epochs = max(known)
    return float(_positive(tcfg, "ref_train_size")) * float(epochs) / float(
        _positive(tcfg, "lr_ref_batch", whole=True, hint=" (the paper's batch: 4096)"))


def warmup_steps_of(tcfg: Any, total_steps: int, model: str | None = None) -> int:
    """Warm-up length: train.warmup_steps (absolute, as the paper's 10k) if set, else
    train.warmup_frac of the run. With train.ref_train_size (the paper's data) the warm-up is
    the share the absolute steps are of the paper's run (10k of 517k JFT steps: 1.9%), so a
    shorter run never warms up for a larger share. A warm-up as long as the run is refused."""
    ws = tcfg.get("warmup_steps")
    if ws is None:
        return int(round(float(tcfg.get("warmup_frac") or 0.0) * total_steps))
    if isinstance(ws, bool) or not isinstance(ws, int) or ws < 0:
        raise ConfigError(f"train.warmup_steps must be a whole number >= 0 or null, got {ws!r}.")
    ref = paper_steps(tcfg, model)
    if ref is not None and ws:  # the paper's share of the run, whatever its length
        ws = max(1, int(round(ws * total_steps / ref)))
    if ws and ws >= total_steps:
        raise ConfigError(f"train.warmup_steps={ws} is not shorter than the run ({total_steps} "
                          f"steps): the learning rate would never decay; lower train.warmup_steps "
                          f"or train longer.")
    return ws


def lr_lambda(tcfg: Any, total_steps: int, warmup: int | None = None) -> Callable[[int], float]:
    """Linear warm-up, then cosine / linear decay to 0 / constant (paper: linear, cosine).
    `warmup` steps if given (a debug cap on the steps clamps it), else warmup_steps_of."""
    warm = warmup_steps_of(tcfg, total_steps) if warmup is None else min(warmup, total_steps)
    kind = tcfg.get("schedule", "cosine")
    if kind not in ("cosine", "linear", "constant"):
        raise ConfigError(f"unknown train.schedule '{kind}'. Valid: cosine, linear, constant.")

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total_steps - warm)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        if kind == "linear":
            return max(0.0, 1 - frac)
        return 1.0

    return f


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's groups on the bare model (not torch.compile's or DDP's wrapper, whose prefixed
    names would miss model.no_weight_decay()): no decay on biases, norms (1-d), position
    embeddings and class token; decay on the rest."""
    from timm.optim import param_groups_weight_decay

    bare = unwrap(model)
    skip = set(bare.no_weight_decay()) if hasattr(bare, "no_weight_decay") else set()
    return param_groups_weight_decay(bare, weight_decay=weight_decay, no_weight_decay_list=skip)


def make_optimizer(model: nn.Module, tcfg: Any, device: torch.device,
                   lr: float | None = None) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    name = tcfg.get("optimizer", "adamw")
    if name not in ("adamw", "sgd"):
        raise ConfigError(f"unknown train.optimizer '{name}'. Valid: adamw, sgd.")
    kw: dict[str, Any] = {}
    if name == "adamw":
        kw["betas"] = tuple(tcfg.get("betas") or (0.9, 0.999))
        if device.type == "cuda":
            kw["fused"] = True  # one kernel for the whole update
    else:
        kw["momentum"] = float(tcfg.get("momentum", 0.9))
    wd = float(tcfg.get("weight_decay", 0.0))
    lr = float(tcfg["lr"]) if lr is None else lr
    return create_optimizer_v2(param_groups(model, wd), opt=name, lr=lr, weight_decay=wd, **kw)

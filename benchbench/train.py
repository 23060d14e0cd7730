"""The training loop: budget -> steps, deterministic resumable batches, divergence as a
status, signals -> a checkpoint and Interrupted.

Reads top to bottom: Budget, train(); `signals.SignalCatcher` catches the signals. The
recipe pieces (lr, warm-up, schedule, optimizer) live in `optim`, validation-based selection in `evaluate`. Evaluation lives in
`evaluate`, checkpoints in `checkpoint`; both are re-exported here for callers of
`benchbench.train`. The training curve's rows go to a `curves.Monitor`.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchbench.checkpoint import (
    keep_count,
    keep_recent,
    load_checkpoint,
    remove_empty,
    save_checkpoint,
    unwrap,
)
from benchbench.curves import Monitor
from benchbench.errors import ConfigError
from benchbench.evaluate import Periodic, Selection
from benchbench.evaluate import evaluate as evaluate
from benchbench.evaluate import extract_features as extract_features
from benchbench.evaluate import fewshot_probe as fewshot_probe
from benchbench.failures import Diverged as Diverged  # defined beside the status it maps to
from benchbench.measure.flops import TRAIN_FLOPS_PER_FORWARD
from benchbench.optim import (
    _positive,
    lr_lambda,
    make_optimizer,
    param_groups,
    resolve_lr,
    warmup_steps_of,
)
from benchbench.runtime import autocast
from benchbench.signals import Interrupted, SignalCatcher


@dataclass(frozen=True)
class Budget:
    steps: int
    global_batch: int

    @property
    def samples(self) -> int:
        return self.steps * self.global_batch


MAX_STEPS = 10**10  # far beyond any real run; a larger budget is a typo (e.g. flops in the wrong unit)
MAX_BATCH = 2**24


def resolve_budget(tcfg: Any, *, flops_per_image: int | None, steps_per_epoch: int) -> Budget:
    """train.flops if set, else train.steps, else train.epochs -> a whole number of steps."""
    bs = int(_positive(tcfg, "batch_size", whole=True, limit=MAX_BATCH))
    if tcfg.get("flops") is not None:
        flops = _positive(tcfg, "flops")
        assert flops_per_image, "a FLOP budget needs the model's FLOPs per image"
        # 3 x forward FLOPs per image seen (forward + backward ~ 2x forward; Kaplan et al. 2020)
        raw, key = float(flops) / (TRAIN_FLOPS_PER_FORWARD * float(flops_per_image) * bs), "flops"
    elif tcfg.get("steps") is not None:
        raw, key = float(_positive(tcfg, "steps", whole=True)), "steps"
    else:
        epochs = _positive(tcfg, "epochs", hint="; or set train.steps / train.flops")
        raw, key = float(epochs) * steps_per_epoch, "epochs"
    if not raw <= MAX_STEPS:  # also catches inf
        raise ConfigError(f"train.{key}={tcfg.get(key)!r} means more than {MAX_STEPS:.0e} steps: "
                          "too large to be meant; check its unit.")
    if key == "flops":  # whole steps that fit the budget: a budget is never exceeded
        steps = math.floor(raw * (1 + 1e-12))  # 417.0 computed as 416.99.. is still 417
        if steps < 1:
            raise ConfigError(
                f"train.flops={tcfg.get('flops')!r} is less than one step "
                f"({TRAIN_FLOPS_PER_FORWARD * float(flops_per_image) * bs:.3g} FLOPs at "
                f"train.batch_size={bs}); raise train.flops or lower train.batch_size.")
        return Budget(steps=steps, global_batch=bs)
    steps = max(1, round(raw))
    return Budget(steps=steps, global_batch=bs)


SYNC_EVERY = 10  # steps between loss checks (and, under DDP, the ranks' stop/divergence vote)


@dataclass
class TrainResult:
    steps: int
    samples_seen: int
    final_loss: float | None
    train_wall_s: float
    train_img_per_s: float | None
    peak_mem_train_bytes: int | None
    resumed: bool
    prior_wall_s: float = 0.0  # wall time of the point's earlier segments (before a resume)
    val_top1: float | None = None  # best validation accuracy (eval_every) and where it was
    best_step: int | None = None
    stopped_early: bool = False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    model: nn.Module,
    batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    *,
    tcfg: Any,
    budget: Budget,
    device: torch.device,
    precision: str = "fp32",
    seed: int = 0,
    ckpt_path: Path | None = None,
    identity: dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    lr: float | None = None,
    warmup: int | None = None,
    selection: Selection | None = None,
    wall_t0: float | None = None,
    monitor: Monitor | None = None,
    periodic: Periodic | None = None,
) -> TrainResult:
    """Train `model` for `budget.steps` steps on `batches(start_step)`; resumable.

    `batches(k)` must yield the batch of global step k first (so a resumed run sees the
    same batches as one that never stopped). Dropout/augmentation RNG is re-seeded from
    (seed, step) each step for the same reason.

    Under DDP (`world_size` > 1, `model` wrapped by benchbench.distributed.wrap_ddp)
    `batches` yields this rank's slice of the global batch; steps count global batches, so
    the schedule is the one-GPU schedule. `tcfg.micro_batch_size` splits the slice into
    micro-batches whose gradients accumulate (no all-reduce but on the last). Only rank 0
    writes checkpoints; every rank loads them. Ranks agree on stopping (signal) and on
    divergence through one small all-reduce every SYNC_EVERY steps.

    `lr` and `warmup` (steps) override train.lr / the warm-up from tcfg; `selection`
    validates during training (best weights restored, early stop). Training and wall time
    (from `wall_t0`) of earlier segments are kept in the checkpoint and add up on resume.
    `monitor` gets the training curve's rows (every rank must pass one: the rows' steps are
    sync points); `periodic` adds accuracy to it (eval.every_steps) without changing training.
    """
    from benchbench import distributed

    dist_on = world_size > 1
    main = rank == 0
    local_bs = budget.global_batch // world_size
    micro = int(tcfg.get("micro_batch_size") or 0) or local_bs
    if micro <= 0:
        raise ConfigError(f"train.micro_batch_size must be positive, got {micro}.")
    opt = make_optimizer(model, tcfg, device, lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg, budget.steps, warmup))
    crit = nn.CrossEntropyLoss(label_smoothing=float(tcfg.get("label_smoothing") or 0.0))
    clip = tcfg.get("grad_clip")
    ckpt_every = float(tcfg.get("checkpoint_every_s") or 0)
    keep = keep_count(tcfg)  # train.keep_checkpoints: step-<k>.pt files beside last.pt
    start, resumed = 0, False
    prior_train_s = prior_wall_s = 0.0
    wall_t0 = time.perf_counter() if wall_t0 is None else wall_t0
    has_ckpt = ckpt_path is not None and ckpt_path.exists()
    # its folder is this run's (made by it, or holding its last.pt): removed once empty at the end
    own_dir = ckpt_path is not None and (has_ckpt or not ckpt_path.parent.exists())
    if dist_on:  # rank 0 decides (a shared filesystem may answer ranks differently)
        has_ckpt = distributed.broadcast_object(has_ckpt)
    if has_ckpt:
        state = load_checkpoint(ckpt_path, identity or {})
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, resumed = int(state["step"]), True
        prior_train_s = float(state.get("elapsed_train_s", 0.0))
        prior_wall_s = float(state.get("elapsed_wall_s", 0.0))
        if selection is not None:
            selection.restore(state.get("selection"))

    def checkpoint(step: int) -> Path | None:
        """Save; returns the checkpoint a relaunch can resume from (None: there is none).
        A failed save (read-only or full disk) is a warning, not the end of the run."""
        if ckpt_path is None or not main:
            return ckpt_path
        try:
            save_checkpoint(ckpt_path, {
                "model": unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "step": step, "identity": identity or {},
                "elapsed_train_s": prior_train_s + time.perf_counter() - t_start,
                "elapsed_wall_s": prior_wall_s + time.perf_counter() - wall_t0,
                "selection": selection.saved() if selection is not None else None,
            })
        except OSError as e:
            warnings.warn(f"cannot write checkpoint {ckpt_path} ({e.strerror or e})", stacklevel=2)
            return ckpt_path if ckpt_path.exists() else None  # an older one still resumes
        keep_recent(ckpt_path, step, keep)
        return ckpt_path

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = _progress(budget.steps, start, progress and main)
    model.train()
    loss_val: float | None = None
    timed_from, timed_t0 = None, 0.0  # img/s excludes the first steps (warm-up, compile)
    warm_steps = min(5, max(0, (budget.steps - start) // 4))
    t_start = time.perf_counter()
    last_ckpt = time.monotonic()
    step = start
    eval_s, stopped = 0.0, False  # validation time is kept out of img/s
    loss_sum, loss_n, gnorm = None, 0, None  # the curve's loss: the mean since its last row
    if monitor is not None:
        monitor.begin(start, prior_train_s)
    with SignalCatcher() as sig, monitor or contextlib.nullcontext():
        it = batches(start)
        for step in range(start, budget.steps):
            done = step + 1  # optimizer steps after this one (the curve's step)
            sel_due = selection is not None and (done % selection.every == 0 or done == budget.steps)
            per_due = periodic is not None and done % periodic.every == 0
            row_due = monitor is not None and (sel_due or per_due or monitor.due(done))
            if sig.signum is not None and not dist_on:
                saved = checkpoint(step)
                sig.chain()
                raise Interrupted(sig.signum, step, saved)
            if sig.save_signum is not None and not dist_on:  # SIGTERM under submitit
                sig.saved(step, checkpoint(step))
            if step - start == warm_steps:
                _sync(device)
                timed_from, timed_t0 = step, time.perf_counter()
            # dropout / drop-path: resumable, and independent across ranks' slices
            torch.manual_seed(seed * 1_000_003 + step + rank * 7_919_000_003)
            t_wait = time.perf_counter()
            x, y = next(it)
            if monitor is not None:
                monitor.waited(time.perf_counter() - t_wait)
            if micro >= len(y):
                with autocast(device, precision):
                    logits = model(x)
                    loss = crit(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
            else:
                opt.zero_grad(set_to_none=True)
                loss = _accumulate(model, crit, x, y, micro, device, precision)
            if clip:  # the total norm before clipping, kept on the device
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            elif row_due:
                gnorm = _grad_norm(model)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            loss_n += 1
            loss_sum = loss.detach().float() + (0.0 if loss_sum is None else loss_sum)
            log_now = step % SYNC_EVERY == 0 or step == budget.steps - 1 or row_due
            if log_now or on_step is not None:
                if dist_on:  # mean loss, "any rank stops", "any rank saves": one all-reduce
                    flags = [float(sig.signum is not None), float(sig.save_signum is not None)]
                    both = torch.stack([loss.detach().float(),
                                        *torch.tensor(flags, device=loss.device), loss_sum])
                    loss_val, stop, save, mean_loss = distributed.all_reduce_sum(both).tolist()
                    loss_val, mean_loss = loss_val / world_size, mean_loss / world_size / loss_n
                    if stop:
                        saved = checkpoint(step + 1)
                        distributed.barrier()  # the checkpoint is complete before any exit
                        sig.chain()
                        raise Interrupted(sig.signum or signal.SIGTERM, step + 1, saved)
                    if save:
                        saved = checkpoint(step + 1)
                        distributed.barrier()
                        sig.saved(step + 1, saved)
                else:
                    loss_val = float(loss.detach())  # a sync; only every few steps
                    mean_loss = float(loss_sum) / loss_n if row_due else loss_val
                if not math.isfinite(loss_val):
                    raise Diverged(step, loss_val)
                if on_step is not None:
                    on_step(step, loss_val)
                if bar is not None:
                    elapsed = time.perf_counter() - t_start
                    bar.set_postfix(loss=f"{loss_val:.3f}",
                                    img_s=f"{(step + 1 - start) * budget.global_batch / max(elapsed, 1e-9):.0f}")
            if bar is not None:
                bar.update(1)
            evals: dict[str, float | None] = {}
            if sel_due or per_due:
                t_eval = time.perf_counter()
                if sel_due:
                    stopped = selection.check(model, done)
                    evals["val_top1"] = selection.last
                if per_due:  # measures only: dropout is re-seeded every step, data is per step
                    evals.update(periodic.measure(model, not sel_due))
                took = time.perf_counter() - t_eval
                eval_s += took if timed_from is not None else 0.0
                if monitor is not None:
                    monitor.paused(took)
            if row_due:
                monitor.report(done, loss=mean_loss, lr=lr_now,
                               grad_norm=None if gnorm is None else float(gnorm), **evals)
                loss_sum, loss_n = None, 0
            if stopped:
                break
            if ckpt_every and time.monotonic() - last_ckpt > ckpt_every:
                checkpoint(step + 1)
                last_ckpt = time.monotonic()
        _sync(device)
    ran = step + 1 if budget.steps > start else start  # steps trained, early stop included
    t_end = time.perf_counter()
    if bar is not None:
        bar.close()
    final = (loss_val if dist_on else float(loss.detach())) if budget.steps > start else None
    if final is not None and not math.isfinite(final):
        raise Diverged(ran - 1, final)
    img_s = None
    if timed_from is not None and ran - timed_from > 0:
        img_s = (ran - timed_from) * budget.global_batch / max(t_end - timed_t0 - eval_s, 1e-9)
    if selection is not None and selection.state is not None:
        unwrap(model).load_state_dict(selection.state)  # the best epoch by validation
    mem = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    if ckpt_path is not None and main:
        with contextlib.suppress(OSError):
            ckpt_path.unlink()  # finished: the row is the record now (step-<k>.pt stay)
        if own_dir:  # never a folder the caller made (and keeps using)
            remove_empty(ckpt_path.parent)
    return TrainResult(
        steps=ran, samples_seen=ran * budget.global_batch, final_loss=final,
        train_wall_s=prior_train_s + t_end - t_start, train_img_per_s=img_s,
        peak_mem_train_bytes=mem, resumed=resumed, prior_wall_s=prior_wall_s,
        val_top1=selection.best if selection is not None else None,
        best_step=selection.best_step if selection is not None else None,
        stopped_early=stopped,
    )


def _accumulate(model: nn.Module, crit: nn.Module, x: torch.Tensor, y: torch.Tensor,
                micro: int, device: torch.device, precision: str) -> torch.Tensor:
    """Forward/backward `x` in micro-batches of `micro`; each loss is weighted by its share
    of the slice, so the summed gradient is the gradient of the slice's mean loss. DDP's
    all-reduce runs on the last micro-batch only. Returns the slice's mean loss."""
    from benchbench.distributed import no_sync

    chunks = list(zip(x.split(micro), y.split(micro)))
    total = None
    for i, (xm, ym) in enumerate(chunks):
        last = i == len(chunks) - 1
        with contextlib.nullcontext() if last else no_sync(model):
            with autocast(device, precision):
                part = crit(model(xm).float(), ym) * (len(ym) / len(y))
            part.backward()
        total = part.detach() if total is None else total + part.detach()
    assert total is not None
    return total


def _grad_norm(model: nn.Module) -> torch.Tensor | None:
    """The total 2-norm of the gradients (what clip_grad_norm_ returns), for the curve."""
    norms = [p.grad.detach().float().norm() for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else None


def _progress(total: int, start: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs of cluster jobs stay clean)
    return tqdm(total=total, initial=start, desc="train", unit="step", leave=False,
                dynamic_ncols=True, disable=None)



__all__ = ["Budget", "Diverged", "Interrupted", "Selection", "SignalCatcher", "TrainResult", "evaluate",
           "extract_features", "fewshot_probe", "load_checkpoint", "lr_lambda", "make_optimizer",
           "param_groups", "resolve_budget", "resolve_lr", "save_checkpoint", "train", "warmup_steps_of"]

"""The largest batch that fits: a grow-then-bisect search over real steps, and a linear guess.

Figure 12 (right panel) of the paper; each OOM is caught and the cache emptied before the
next try. On a CPU nothing runs out of memory, so callers skip the search there.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchbench.measure.flops import _size2
from benchbench.measure.throughput import _num_classes_of, _prepare
from benchbench.runtime import autocast as _autocast
from benchbench.runtime import free_memory, is_oom


def _try_batch_fn(model: nn.Module, image_size: Any, in_chans: int, device: torch.device,
                  mode: str, precision: str, channels_last: bool,
                  num_classes: int | None) -> Callable[[int], bool]:
    """try_batch(bs) -> True if one inference (or training) step at bs fits in memory."""
    model = _prepare(model, device, channels_last)
    opt = None
    if mode == "train":
        k = _num_classes_of(model, num_classes)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    h, w = _size2(image_size)

    def run(bs: int) -> None:
        x = torch.randn(bs, in_chans, h, w, device=device).contiguous(memory_format=fmt)
        if mode == "infer":
            with torch.inference_mode(), _autocast(device, precision):
                model.eval()(x)
        else:
            y = torch.randint(0, k, (bs,), device=device)
            with _autocast(device, precision):
                loss = F.cross_entropy(model.train()(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def try_batch(bs: int) -> bool:
        oom = False
        try:
            run(bs)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True
        if oom:
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            free_memory(device)  # outside except: the traceback's frames are released
        return not oom

    return try_batch


def max_batch_size(
    model: nn.Module | None = None,
    image_size: int | Sequence[int] | None = None,
    in_chans: int = 3,
    *,
    device: torch.device | str = "cuda",
    mode: str = "infer",
    precision: str = "bf16",
    channels_last: bool = False,
    num_classes: int | None = None,
    start: int = 1,
    limit: int = 65536,
    tol: float = 0.0,
    growth: float = 2.0,
    try_batch: Callable[[int], bool] | None = None,
) -> int | None:
    """The largest batch size in [1, limit] whose step fits (Figure 12, right panel).

    From `start`, multiply by `growth` until a try runs out of memory (or divide until one
    fits), then bisect: O(log limit) tries with the default doubling from 1. A good `start`
    (e.g. predicted from peak memory at two batch sizes) with growth ~1.1 needs ~3 tries
    near the maximum, where tries are the most expensive. Each OOM is caught and the cache
    emptied. Returns None if batch 1 does not fit, `limit` if it fits (a lower bound then).
    tol > 0 stops once the bracket is within tol x the answer. `try_batch(bs) -> bool`
    replaces the real step (tests inject one). On a CPU nothing runs out of memory: callers
    skip the search there (measure_model does).
    """
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if not 1 <= start <= limit:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    if growth <= 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    if try_batch is None:
        if model is None or image_size is None:
            raise ValueError("max_batch_size needs a model and image_size, or try_batch")
        try_batch = _try_batch_fn(model, image_size, in_chans, torch.device(device), mode,
                                  precision, channels_last, num_classes)
    if try_batch(start):
        lo, hi = start, None
        while hi is None:  # grow until a try fails
            if lo >= limit:
                return limit
            nxt = min(max(lo + 1, int(lo * growth)), limit)
            if try_batch(nxt):
                lo = nxt
            else:
                hi = nxt
    else:
        lo, hi = None, start
        while lo is None:  # shrink until a try fits
            if hi == 1:
                return None
            nxt = min(hi - 1, max(1, int(hi / growth)))
            if try_batch(nxt):
                lo = nxt
            else:
                hi = nxt
    while hi - lo > max(1, int(lo * tol)):  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if try_batch(mid):
            lo = mid
        else:
            hi = mid
    return lo


def predict_max_batch(points: Sequence[tuple[int, int]], capacity_bytes: int) -> int | None:
    """Batch size at which a line through (batch size, peak bytes) points reaches
    capacity_bytes: a starting guess for max_batch_size. None without two distinct points
    or with a non-growing peak."""
    pts = sorted(set(points))
    if len(pts) < 2:
        return None
    (b0, m0), (b1, m1) = pts[-2], pts[-1]
    slope = (m1 - m0) / (b1 - b0)
    if slope <= 0:
        return None
    return max(1, int(b1 + (capacity_bytes - m1) / slope))

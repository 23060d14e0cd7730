"""Timing: a synchronizing wall clock, CUDA events, time_fn (warm-up, repeats, median) and spread.

STYLE habit 7: warm up, synchronize before reading the clock, keep compilation out of the
timed part; report the median over repeats and the interquartile range as the spread.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


class Clock:
    """Wall clock read after `sync()`, so queued device work is done before each reading:
    perf_counter + torch.cuda.synchronize on a GPU, plain perf_counter on a CPU. Tests pass a
    fake `now`."""

    def __init__(self, now: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None):
        self.now = now
        self.sync = sync

    def start(self) -> float:
        if self.sync is not None:
            self.sync()
        return self.now()

    def stop(self, token: float) -> float:
        """Seconds since `start()` returned `token`."""
        if self.sync is not None:
            self.sync()
        return self.now() - token


class CudaEventClock:
    """CUDA events around the work: GPU time, no host-side launch gaps in the reading."""

    def start(self) -> Any:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def stop(self, token: Any) -> float:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return token.elapsed_time(end) / 1e3  # ms -> s


def default_clock(device: torch.device | str) -> Clock | CudaEventClock:
    return CudaEventClock() if torch.device(device).type == "cuda" else Clock()


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: Sequence[float]) -> float:
    """The spread benchbench reports: the interquartile range (q75 - q25)."""
    return _quantile(xs, 0.75) - _quantile(xs, 0.25)


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int = 1,
    sync: Callable[[], None] | None = None,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Time `fn` (STYLE habit 7): `warmup` untimed calls (compilation, autotuning, caches),
    then `repeats` timed blocks of `iters_per_repeat` calls. `clock` reads the time (default:
    perf_counter after calling `sync`, e.g. torch.cuda.synchronize; or a CudaEventClock).

    Returns seconds per call: median_s, spread_s (interquartile range over repeats), min_s,
    max_s, times_s (one per repeat), and warmup_s (the whole warm-up, compile included).
    """
    if repeats < 1 or iters_per_repeat < 1 or warmup < 0:
        raise ValueError("time_fn needs repeats >= 1, iters_per_repeat >= 1, warmup >= 0")
    if clock is not None and sync is not None:
        raise ValueError("pass sync or clock, not both: Clock(sync=...) takes the sync")
    clock = clock if clock is not None else Clock(sync=sync)
    t = clock.start()
    for _ in range(warmup):
        fn()
    warmup_s = clock.stop(t)
    times = []
    for _ in range(repeats):
        t = clock.start()
        for _ in range(iters_per_repeat):
            fn()
        times.append(clock.stop(t) / iters_per_repeat)
    return {
        "median_s": _quantile(times, 0.5),
        "spread_s": spread(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "warmup_s": warmup_s,
    }

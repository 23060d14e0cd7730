"""Where and how a point runs: device, precision, autocast, threads, GPU assignment, the OOM test.

Every task, the measurement code and gpu_bench take these from here, so a fault is named
the same way everywhere (a cuBLAS ALLOC_FAILED is `oom` in every row).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from benchbench.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def device_type(cfg: Any) -> str:
    """'cuda' or 'cpu' for cfg.device without touching a GPU (picks the DDP backend)."""
    name = str(cfg.get("device") or "auto")
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def resolve_device(name: str | None):
    """cfg.device -> torch.device; `auto` = CUDA when visible."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=auto or cpu.")
    return dev


def resolve_precision(name: str | None, device) -> str:
    """cfg.precision -> fp32 | bf16; `auto` = bf16 autocast on CUDA, fp32 elsewhere."""
    if name in (None, "auto"):
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision '{name}'. Valid: auto, {', '.join(PRECISIONS)}.")
    return name


def autocast(device, precision: str, cache: bool = True):
    """bf16 autocast when precision is bf16, a no-op context otherwise."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                          cache_enabled=cache)


def device_label(device) -> str:
    """The row's device column: "cuda:NVIDIA H100 80GB HBM3" or "cpu"."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return dev.type


def setup_cuda(device) -> None:
    """cuDNN autotuning and TF32 matmuls on CUDA, as timm's benchmark.py runs them."""
    import torch

    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def channels_last(cfg: Any, family: str, device) -> bool:
    """cfg.channels_last; `auto` = on for convolutional families on CUDA (families table)."""
    from benchbench.families import FAMILIES

    val = cfg.get("channels_last", "auto")
    if val == "auto":
        return device.type == "cuda" and family in FAMILIES and FAMILIES.get(family).conv
    return bool(val)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (e.g. task=measure): stops the point like Ctrl-C,
    so it ends with an `interrupted` row and a message instead of a silent exit 143."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"{signal.Signals(signum).name} outside training; no checkpoint "
                         f"(a relaunch runs the point again)")
        self.signum = signum


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While a task runs, SIGTERM raises Terminated, unless someone else (submitit, a
    launcher) handles SIGTERM already. Training's SignalCatcher chains to this handler with
    frame=None after its checkpoint: then it does nothing, and training raises its own."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if frame is not None:  # a real signal, not a chained call
            raise Terminated(signum)

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def available_cpus() -> int:
    """The CPUs this process may use: SLURM_CPUS_PER_TASK, else its affinity mask (not the
    node's count, which os.cpu_count() gives)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1



def set_threads(cfg: Any) -> None:
    """CPU threads for torch. Several points at once on one machine (joblib, submitit_local)
    each default to every core, and oversubscribed OpenMP threads spin: one run measured
    ~10x slower here. auto = the job's CPU share (SLURM_CPUS_PER_TASK), else torch's default."""
    import torch

    n = cfg.get("threads", "auto")
    if n in (None, "auto"):
        n = os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        torch.set_num_threads(max(1, int(n)))


def num_threads() -> int:
    """torch's intra-op CPU threads (the row's `threads`): results on the CPU can differ in
    the last bits between thread counts, as float sums are reduced in another order."""
    import torch

    return torch.get_num_threads()


def assign_local_gpu(cfg: Any, job_num: int) -> None:
    """submitit's local executor gives every job the same CUDA_VISIBLE_DEVICES (0..n-1),
    so all points land on GPU 0. With local_gpus=[0,1,...] we spread them round-robin."""
    gpus = cfg.get("local_gpus")
    if not gpus or os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return
    from benchbench.distributed import _submitit_world

    if int(os.environ.get("WORLD_SIZE") or 1) > 1 or _submitit_world() > 1:
        return  # a multi-GPU point: LOCAL_RANK picks each rank's GPU
    os.environ["CUDA_VISIBLE_DEVICES"] = str(list(gpus)[job_num % len(gpus)])


def is_oom(e: BaseException) -> bool:
    """The one out-of-memory test: torch's OutOfMemoryError, or a RuntimeError from any layer
    that says so (the caching allocator's "out of memory", cuBLAS's ALLOC_FAILED)."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg.lower()
                                            or "ALLOC_FAILED" in msg)


def free_memory(device=None) -> None:
    """After an OOM: drop garbage and return cached blocks, so the next try starts clean."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()

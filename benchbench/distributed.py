"""torch.distributed inside one run: one process per GPU, launched by torchrun or by SLURM
through the submitit launcher (`tasks_per_node`, `nodes`); no home-made process management.

`init_from_env()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
or, when submitit started the tasks, exports them from submitit's job environment. With
WORLD_SIZE unset or 1 nothing happens: no process group, no DDP wrapper, zero overhead, and
every helper here is a no-op. Only rank 0 writes rows, status files and checkpoints.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from benchbench.errors import ConfigError

MODES = ("auto", "off")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def env_rank() -> int:
    """This process's global rank from the launcher's environment (0 when there is none),
    usable before any process group exists (e.g. to keep Hydra's dirs to rank 0)."""
    if os.environ.get("RANK"):
        return int(os.environ["RANK"])
    if _submitit_world() > 1:
        return int(os.environ.get("SLURM_PROCID") or os.environ.get("SUBMITIT_LOCAL_GLOBALID") or 0)
    return 0


def _submitit_world() -> int:
    """Tasks of this submitit job (1 outside submitit)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 1
    try:
        from submitit import JobEnvironment

        return int(JobEnvironment().num_tasks)
    except Exception:  # noqa: BLE001 - not a submitit job after all
        return 1


def _normalise_mode(mode: Any) -> str:
    if mode is None or mode is True:
        return "auto"
    if mode is False:
        return "off"
    mode = str(mode).lower()
    if mode not in MODES:
        raise ConfigError(f"unknown distributed '{mode}'. Valid: {', '.join(MODES)} "
                          f"(auto = DDP when WORLD_SIZE > 1).")
    return mode


def init_from_env(mode: Any = "auto", *, device_type: str = "cpu") -> DistEnv:
    """Join the process group described by the environment (idempotent). Backend nccl for
    CUDA, gloo for CPU; the CUDA device is picked from LOCAL_RANK."""
    mode = _normalise_mode(mode)
    if initialized():
        return current()
    if "WORLD_SIZE" not in os.environ and _submitit_world() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # CUDA_VISIBLE_DEVICES is left alone: LOCAL_RANK picks the GPU below
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return DistEnv()
    if mode == "off":
        raise ConfigError(f"distributed=off but WORLD_SIZE={world}: every rank would run the "
                          f"whole point; launch one process or use distributed=auto.")
    for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world} but {key} is not set: launch with torchrun "
                              f"or the submitit launcher (tasks_per_node, nodes).")
    local = int(os.environ.get("LOCAL_RANK") or 0)
    kw: dict[str, Any] = {}
    if device_type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ConfigError("device=cuda but no CUDA GPU is visible to this rank.")
        # all GPUs visible: LOCAL_RANK picks one; one GPU bound per task: it is device 0
        idx = local % n
        torch.cuda.set_device(idx)
        backend = "nccl"
        kw["device_id"] = torch.device("cuda", idx)
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, **kw)
    atexit.register(cleanup)
    return current()


def current() -> DistEnv:
    """The process group this process is in (a single-process DistEnv when none)."""
    if not initialized():
        return DistEnv()
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK") or 0),
                   backend=str(dist.get_backend()))


def is_main() -> bool:
    return dist.get_rank() == 0 if initialized() else env_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (and return it); the identity in one process."""
    if initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (a decision made once, e.g. whether to skip)."""
    if not (initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_shards(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Gather CPU tensors sharded rank::world_size (the loaders' eval order) to rank 0 and
    interleave them back into the single-process order. Returns None on other ranks."""
    if not (initialized() and dist.get_world_size() > 1):
        return tensors
    world = dist.get_world_size()
    parts: list[Any] | None = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object([t.cpu() for t in tensors], parts, dst=0)
    if parts is None:
        return None
    out = []
    for i in range(len(tensors)):
        shards = [p[i] for p in parts]
        n = sum(len(s) for s in shards)
        full = shards[0].new_empty((n, *shards[0].shape[1:]))
        for r, s in enumerate(shards):
            full[r::world] = s
        out.append(full)
    return tuple(out)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` (already on `device`). BatchNorm becomes
    SyncBatchNorm on CUDA, so statistics are over the global batch as on one GPU."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # keeps timm's BatchNormAct2d fused act

        model = convert_sync_batchnorm(model)
        return DDP(model, device_ids=[torch.cuda.current_device()])
    return DDP(model)


def no_sync(model: nn.Module):
    """DDP's no_sync (skip the gradient all-reduce of this backward) or a null context."""
    inner = getattr(model, "_orig_mod", model)  # torch.compile(DDP(model))
    if hasattr(inner, "no_sync") and hasattr(inner, "module"):
        return inner.no_sync()
    return contextlib.nullcontext()


def cleanup() -> None:
    if initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()

"""gpu_bench workers through the real training loop: the data path (d) and the cost of DDP (e).

Both time `benchbench.train.train` itself, arm against arm on the same model and batch, so
the ratio isolates the loader (d) or the DDP wrapper (e).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from benchbench.gpu_bench.plan import say
from benchbench.gpu_bench.rows import fmt, model_cfg, point_config, ratio, run_point
from benchbench.gpu_bench.workers import build, worker_env


def _bench_train_cfg(batch_size: int, lr: float):
    """The train config the timed training loops use (AdamW, warm-up + cosine, clip 1)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"optimizer": "adamw", "lr": lr, "weight_decay": 0.05,
                             "betas": [0.9, 0.999], "batch_size": batch_size,
                             "warmup_frac": 0.05, "schedule": "cosine", "grad_clip": 1.0})


def worker_data(task: dict[str, Any]) -> None:
    """End-to-end training img/s through DeviceLoader (uint8 on the device, augmentation and
    normalisation there) against the same loop fed one batch already on the device."""
    dev, prec, prov = worker_env(task)
    s, bs = task["image_size"], task["batch_size"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("data", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=False, channels_last=False,
                        quick=task["quick"])

    def point(m: dict[str, Any]) -> None:
        import torch

        from benchbench import data
        from benchbench.runtime import free_memory
        from benchbench.train import Budget, train

        g = torch.Generator().manual_seed(0)  # random images: never time on zeros
        n = task["n_images"]
        split = data.Split(torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g),
                           torch.randint(0, 10, (n,), generator=g))
        loader = data.DeviceLoader(split, batch_size=bs, image_size=s, mean=(0.5,) * 3,
                                   std=(0.25,) * 3, device=dev, augment=True)
        fixed = next(loader.iter_from(0))

        def resident(start: int):
            while True:
                yield fixed

        tcfg = _bench_train_cfg(bs, lr=1e-3)
        rates = {}
        for name, batches in (("loader", loader.iter_from), ("resident", resident)):
            torch.manual_seed(0)
            model = build(cfg, s, dev)
            r = train(model, batches, tcfg=tcfg, budget=Budget(task["steps"], bs), device=dev,
                      precision=prec, progress=False)
            rates[name] = r.train_img_per_s
            del model
            free_memory(dev)
        m.update(params=None, batch_size=bs, train_img_per_s=rates["loader"],
                 resident_img_per_s=rates["resident"],
                 data_path_ratio=ratio(rates["loader"], rates["resident"]))

    row = run_point("data", conf, point, out=task["out"], provenance=prov, device=dev,
                    batch_size=bs)
    say(f"data {row['model']}: {row['status']} loader/resident = {fmt(row.get('data_path_ratio'))}")


@contextlib.contextmanager
def _one_rank_group(dev):
    """A 1-rank process group (nccl on CUDA, gloo on CPU), as `torchrun --nproc-per-node 1`
    would give; yields the backend, and leaves no group or environment behind."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        yield str(dist.get_backend())
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kw = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=0, world_size=1, **kw)
        yield backend
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_ddp(task: dict[str, Any]) -> None:
    """benchbench.train.train with the model DDP-wrapped (wrap_ddp, as the CLI does under
    torchrun/submitit) against the same loop unwrapped, on batches already on the device."""
    dev, prec, prov = worker_env(task)
    s, bs, comp = task["image_size"], task["batch_size"], task["compile"]
    cfg = model_cfg(task["key"], task["patch"], s)
    conf = point_config("ddp", cfg, image_size=s, batch_size=bs, precision=prec,
                        device=task["device"], compile=comp, channels_last=False,
                        quick=task["quick"])

    def point(m: dict[str, Any]) -> None:
        import statistics

        with _one_rank_group(dev) as backend:
            m["ddp_backend"] = backend
            rates = _ddp_rounds(task, cfg, dev, prec)
        plain, ddp = statistics.median(rates["plain"]), statistics.median(rates["ddp"])
        m.update(batch_size=bs, plain_img_per_s=plain, ddp_img_per_s=ddp,
                 train_img_per_s=ddp, ddp_overhead=1.0 - ddp / plain,
                 ddp_rounds={k: [round(v, 2) for v in vs] for k, vs in rates.items()})

    row = run_point("ddp", conf, point, out=task["out"], provenance=prov, device=dev,
                    batch_size=bs, measured={"compile": comp})
    say(f"ddp {row['model']}: {row['status']} overhead {fmt(row.get('ddp_overhead'))}")


def _ddp_rounds(task: dict[str, Any], cfg: dict[str, Any], dev, prec: str) -> dict[str, list]:
    """img/s of each arm per round; arms alternate so drift falls on both."""
    import torch

    from benchbench import distributed
    from benchbench.runtime import free_memory
    from benchbench.train import Budget, train

    s, bs, comp = task["image_size"], task["batch_size"], task["compile"]
    g = torch.Generator().manual_seed(0)  # random images: never time on zeros
    xs = [(torch.randn(bs, 3, s, s, generator=g).to(dev),
           torch.randint(0, 1000, (bs,), generator=g).to(dev)) for _ in range(3)]

    def batches(start: int):
        i = start
        while True:
            yield xs[i % len(xs)]
            i += 1

    tcfg = _bench_train_cfg(bs, lr=1e-4)
    rates: dict[str, list[float]] = {"plain": [], "ddp": []}
    for _ in range(task["rounds"]):
        for arm in ("plain", "ddp"):
            torch.manual_seed(0)
            model = build(cfg, s, dev)
            net = distributed.wrap_ddp(model, dev) if arm == "ddp" else model
            net = torch.compile(net) if comp else net
            r = train(net, batches, tcfg=tcfg, budget=Budget(task["steps"], bs), device=dev,
                      precision=prec, progress=False)
            rates[arm].append(r.train_img_per_s)
            del model, net
            free_memory(dev)
    return rates

"""task=train: load data, build (and maybe initialise) the model, train, evaluate, measure.

`fit` is the whole training stage; the transfer task fine-tunes with it and the probe task
uses it without training steps.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError, ResultsError


def run(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
        identity: dict[str, Any], **_: Any) -> None:  # run_stage: unused
    init = None
    ref = (cfg.get("init") or {}).get("checkpoint")
    if ref:
        init = init_state(cfg, checkpoint_ref(ref), rdir, row)
    fit(cfg, row, data_cfg=cfg.data, tcfg=cfg.train, rdir=rdir, run_id=run_id,
        identity=identity, init_state=init)


def checkpoint_ref(ref: Any) -> str:
    """init.checkpoint as a string (a run_id, a path, timm:<name> or hf:<folder>)."""
    if not isinstance(ref, str):  # Hydra read a run_id such as 12e4... as a number
        raise ConfigError(
            f"init.checkpoint={ref!r} was read as a number: quote the run_id, "
            f"e.g. init.checkpoint=\"'12e4ab56cd78'\"."
        )
    return ref


def init_state(cfg: Any, ref: str, rdir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Weights to start from: timm:<name> (local cache), hf:<folder> (a transformers ViT
    folder), a run_id, or a path."""
    from benchbench import checkpoint, results, transfer
    from benchbench.paths import abs_path

    if ref.startswith("timm:"):
        row["pretrain_run_id"] = ref
        return transfer.timm_pretrained_state(ref[5:])
    if ref.startswith("hf:"):
        from benchbench.hf_vit import hf_pretrained_state

        row["pretrain_run_id"] = ref
        return hf_pretrained_state(Path(abs_path(ref[3:])))
    dirs = [rdir] + [Path(abs_path(str(d))) for d in (cfg.init.get("results_dirs") or [])]
    path = transfer.resolve_checkpoint(ref, dirs, [checkpoint.root(cfg)])
    row["pretrain_run_id"] = ref if not Path(ref).is_file() else path.parent.name
    for d in dirs:  # link the chain: the pre-training row's dataset, size and compute
        prow = results.row_path(d, row["pretrain_run_id"])
        if prow.exists():
            pre = results.read_row(prow)
            row.update(pretrain_dataset=pre.get("dataset"),
                       pretrain_train_size=pre.get("train_size"),
                       pretrain_flops=pre.get("train_flops"))
            break
    return transfer.load_state(path)


def _say_resume(ckpt: Path, total: int, main: bool) -> None:
    """'resumed from step N': a relaunch after Ctrl-C or preemption picks up its checkpoint."""
    if not (main and ckpt.is_file()):
        return
    import torch

    try:  # mmap: only the step is read, not the weights
        step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("step")
    except Exception:  # noqa: BLE001 - train() reports an unreadable checkpoint itself
        return
    print(f"benchbench: resumed from step {step} of {total} ({ckpt})", flush=True)


def _max_steps(cfg: Any) -> int | None:
    """cfg.max_steps (debug=smoke's cap on every training stage), checked; None = no cap."""
    v = cfg.get("max_steps")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"max_steps must be a positive whole number or null, got {v!r}.")
    return v


def _capped(batches: Any, max_samples: Any, world_size: int) -> Any:
    """eval.max_samples (debug=smoke): stop after that many held-out images (this rank's share)."""
    if max_samples is None:
        yield from batches
        return
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ConfigError(f"eval.max_samples must be a positive whole number or null, got {max_samples!r}.")
    left = -(-max_samples // world_size)
    for x, y in batches:
        if left <= 0:
            return
        yield x[:left], y[:left]
        left -= len(y)


def fit(cfg: Any, row: dict[str, Any], *, data_cfg: Any, tcfg: Any, rdir: Path, run_id: str,
        identity: dict[str, Any], init_state: dict[str, Any] | None = None,
        train_steps: bool = True) -> None:
    """Load data, build (and optionally initialise) the model, train on the budget,
    evaluate, probe and measure; fills `row`."""
    import time

    import torch

    from benchbench import checkpoint, curves, data, distributed, measure, models, runtime
    from benchbench.data import augment as aug
    from benchbench.data import augreg
    from benchbench.data.augment import recipe_name
    from benchbench.evaluate import fewshot as _fewshot
    from benchbench.evaluate import periodic, selection, selection_acc
    from benchbench.optim import effective_lr, resolve_recipe
    from benchbench.tasks import internals_hook
    from benchbench.train import (
        Budget,
        evaluate,
        resolve_budget,
        resolve_lr,
        train,
        warmup_steps_of,
    )

    wall_t0 = time.perf_counter()

    internals_hook.settings(cfg)  # checked before any work
    if train_steps:  # the preset's tables (Table 6 epochs, Table 4 steps) for this model/data
        tcfg = resolve_recipe(tcfg, row.get("model"), data_cfg.get("name"))
    augment, reg = augreg.resolve(recipe_name(data_cfg.get("augment")), row.get("model")) \
        if train_steps else ("none", None)
    if cfg.eval.fewshot:
        from benchbench.evaluate import probe_data_node

        probe_data_node(cfg)  # the probe's data named and located before any training
    denv = distributed.current()  # one process: rank 0 of 1, no process group
    cap = _max_steps(cfg) if train_steps else None
    if train_steps:  # a zero or negative budget is refused before any data is loaded
        resolve_budget(tcfg, flops_per_image=1, steps_per_epoch=1)
        curves.log_every(tcfg)
        factor = tcfg.get("retry_diverged_lr_factor")
        if factor is not None and not (isinstance(factor, int | float) and 0 < factor < 1):
            raise ConfigError(f"train.retry_diverged_lr_factor must be in (0, 1) or null, "
                              f"got {factor}.")
        # the FLOP budget the run was given (a row column, not config: run_ids stay)
        row["train_flops_budget"] = tcfg.get("flops")
        checkpoint.keep_count(tcfg)
        # rank 0 writes the checkpoints; every rank stops when it cannot
        refused = distributed.broadcast_object(
            checkpoint.unwritable(checkpoint.run_dir(cfg, run_id), cfg) if denv.is_main else None)
        if refused:
            raise ResultsError(refused)
    device = runtime.resolve_device(cfg.device)
    if denv.enabled and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's (LOCAL_RANK)
    precision = runtime.resolve_precision(cfg.precision, device)
    seed = int(cfg.seed)
    row.update(device=runtime.device_label(device), precision=precision,
               batch_size=int(tcfg.batch_size), world_size=denv.world_size)

    models.validate(cfg.model, int(data_cfg.image_size))
    ds = data.load_dataset(data_cfg)
    image_size = int(data_cfg.image_size)
    row.update(dataset=ds.name, train_size=len(ds.train.y), num_classes=ds.num_classes,
               image_size=image_size, val_size=len(ds.val) if ds.val is not None else None)
    if train_steps and len(ds.train.y) < int(tcfg.batch_size):
        raise ConfigError(
            f"train.batch_size={tcfg.batch_size} is larger than the {len(ds.train.y)} training "
            f"images; lower train.batch_size (it is never changed silently)."
        )
    torch.manual_seed(seed)
    model = models.build_model(_regularised(cfg.model, tcfg, reg, row), ds.num_classes,
                               image_size, ds.channels)
    if init_state is not None:
        from benchbench.transfer import load_for_transfer

        if train_steps:  # fine-tuning: a zero-init linear head only (a probe keeps the layer)
            models.drop_hidden_head(model)
        load_for_transfer(model, init_state, zero_head=bool(cfg.init.get("zero_head", True)))
    row["params"] = models.count_params(model)
    fl = measure.count_flops(model, image_size, ds.channels)
    row.update(flops_per_image=fl["flops_per_image"], macs_per_image=fl["macs_per_image"])

    cl = runtime.channels_last(cfg, row["family"], device)
    model = model.to(device, memory_format=torch.channels_last if cl else torch.preserve_format)
    eval_bs = int(cfg.eval.batch_size)

    resident = int(data_cfg.get("max_resident_bytes") or data.DEFAULT_MAX_RESIDENT_BYTES)

    def loader_of(part: str, source: Any = None, **kw: Any):
        # eval loaders: only eval_batches(eval_bs) is used; any batch the ranks divide
        kw.setdefault("batch_size", eval_bs * denv.world_size)
        kw.setdefault("drop_last", False)
        # training batches: this rank's slice of each global batch; eval: shard rank::world
        return data.make_loader(ds if source is None else source, part=part,
                                image_size=image_size, device=device,
                                max_resident_bytes=resident, rank=denv.rank,
                                world_size=denv.world_size,
                                skip_bad_images=bool(data_cfg.get("skip_bad_images", True)),
                                crop_pct=data_cfg.get("crop_pct"),
                                num_workers=data_cfg.get("num_workers"),
                                shuffle_buffer=int(data_cfg.get("shuffle_buffer") or 10_000), **kw)

    test = loader_of("test")
    val = loader_of("val") if ds.val is not None else None
    probe = (cfg, row, model, ds, loader_of, device, precision)
    if cfg.eval.fewshot and (init_state is not None or not train_steps):
        _fewshot(*probe)
    learned = dict(image_size=image_size, device=device, rdir=rdir, run_id=run_id,
                   is_main=denv.is_main)  # internals_hook.measure: what the model learned
    if not train_steps:
        row.update(samples_seen=0, train_flops=0)
        internals_hook.measure(cfg, row, model, ds, **learned)
        return

    loader = loader_of("train", batch_size=int(tcfg.batch_size), augment=augment,
                       seed=seed, drop_last=True)
    budget = resolve_budget(tcfg, flops_per_image=fl["flops_per_image"],
                            steps_per_epoch=loader.steps_per_epoch)
    warmup = warmup_steps_of(tcfg, budget.steps, row.get("model"))  # the real budget, not the cap
    if cap is not None:  # debug=smoke: the same point, a few steps
        budget = Budget(min(budget.steps, cap), budget.global_batch)
    lr = resolve_lr(tcfg, row.get("model"))
    elr = effective_lr(tcfg, lr)  # the preset's lr is for its reference batch (train.lr_scaling)
    rec = aug.RECIPES[augment]
    row.update(steps=budget.steps, epochs=budget.samples / len(ds.train.y), lr=lr,
               effective_lr=elr, augment=augment, mixup_alpha=rec.mixup_alpha or None,
               randaug=",".join(map(str, rec.randaug)) if rec.randaug else None)
    sel = selection(tcfg, val, ds.num_classes, eval_bs, loader.steps_per_epoch, device,
                    precision, denv)
    per = periodic(cfg, lambda: _capped(test.eval_batches(eval_bs), cfg.eval.get("max_samples"),
                                        denv.world_size),
                   val, ds.num_classes, eval_bs, device, precision, denv)
    if tcfg.get("grad_checkpointing"):
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"train.grad_checkpointing: {type(model).__name__} has no "
                              f"set_grad_checkpointing; set it to false.")
        model.set_grad_checkpointing(True)
    net = model
    if denv.enabled:
        net = distributed.wrap_ddp(model, device)
        model = net.module  # SyncBatchNorm on CUDA may have replaced modules
    net = torch.compile(net) if cfg.compile else net
    ckpt = checkpoint.run_dir(cfg, run_id) / "last.pt"
    _say_resume(ckpt, budget.steps, denv.is_main)
    bar, monitor = _monitor(cfg, tcfg, row, budget, rdir=rdir, run_id=run_id, main=denv.is_main)
    res = train(
        net, loader.iter_from, tcfg=tcfg, budget=budget, device=device, precision=precision,
        seed=seed, ckpt_path=ckpt, identity=identity, progress=bar,
        rank=denv.rank, world_size=denv.world_size, lr=elr, warmup=warmup, selection=sel,
        wall_t0=wall_t0, monitor=monitor, periodic=per,
    )
    row.update(
        steps=res.steps, epochs=res.samples_seen / len(ds.train.y), prior_wall_s=res.prior_wall_s,
        best_step=res.best_step, stopped_early=res.stopped_early if sel else None,
        samples_seen=res.samples_seen,
        train_flops=measure.train_flops(fl["flops_per_image"], res.samples_seen),
        final_loss=res.final_loss, train_wall_s=round(res.train_wall_s, 3),
        train_img_per_s=res.train_img_per_s, peak_mem_train_bytes=res.peak_mem_train_bytes,
        resumed=res.resumed,
    )
    if tcfg.get("save_final") and denv.is_main:
        _save_final(row, ckpt.with_name("final.pt"), model, identity, res.steps)
    if denv.is_main:  # finished: no empty <run_id>/ (nor default ckpt/) left; the caller's
        # layout, so train() itself never removes a folder it was handed
        default = not cfg.results.get("checkpoint_dir")
        checkpoint.remove_empty(ckpt.parent, *([ckpt.parent.parent] if default else []))

    # under DDP: the bare model (no DDP collectives in forward), counts summed across ranks
    ev = evaluate(model if denv.enabled else net,
                  _capped(test.eval_batches(eval_bs), cfg.eval.get("max_samples"), denv.world_size),
                  num_classes=ds.num_classes, device=device, precision=precision,
                  all_reduce=distributed.all_reduce_sum if denv.enabled else None)
    row.update(top1=ev["top1"], top5=ev["top5"], eval_samples=ev["eval_samples"])
    if val is not None:  # the selected (best-by-validation) weights' accuracy on validation
        row["val_top1"] = res.val_top1 if sel is not None else selection_acc(
            model if denv.enabled else net, val, ds.num_classes, eval_bs, device, precision, denv)
    if cfg.eval.fewshot and init_state is None:
        _fewshot(*probe)
    internals_hook.measure(cfg, row, model, ds, **learned)
    _measure_trained(cfg, row, model, denv, device, precision, image_size, ds.channels, cl, fl)


def _regularised(mcfg: Any, tcfg: Any, reg: tuple[float, float] | None,
                 row: dict[str, Any]) -> Any:
    """The model config with train.dropout / train.drop_path (the recipe's; else the AugReg
    default's `reg`) as its drop_rate / drop_path_rate; the row records the rates built."""
    from omegaconf import OmegaConf

    over = {}
    for tkey, mkey, i in (("dropout", "drop_rate", 0), ("drop_path", "drop_path_rate", 1)):
        v = tcfg.get(tkey)
        if v is None and reg is not None and reg[i]:
            v = reg[i]
        if v is not None:
            over[mkey] = float(v)
    out = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(mcfg, resolve=True)), over) \
        if over else mcfg  # a plain copy: a model file without the key takes it too
    row.update(drop_rate=float(out.get("drop_rate") or 0.0),
               drop_path_rate=float(out.get("drop_path_rate") or 0.0))
    return out


def _save_final(row: dict[str, Any], path: Path, model: Any, identity: dict[str, Any],
                steps: int) -> None:
    """train.save_final: the final (selected) weights only, no optimizer state, into
    `path`; the row's weights_path says where. A failed write (full disk) is the row's
    error, not a lost run: the row keeps its results."""
    from benchbench.checkpoint import save_checkpoint

    try:
        save_checkpoint(path, {"model": model.state_dict(), "identity": identity, "step": steps})
    except OSError as e:
        row["error"] = f"final weights: cannot write {path} ({e.strerror or e})"
        warnings.warn(row["error"], stacklevel=2)
        return
    row["weights_path"] = str(path)


def _monitor(cfg: Any, tcfg: Any, row: dict[str, Any], budget: Any, *, rdir: Path, run_id: str,
             main: bool) -> tuple[bool, Any]:
    """(tqdm bar?, the curve's Monitor). The bar: `progress` and not `quiet`, on a terminal.
    Progress lines (stdout, every train.log_every steps): `progress` and no bar showing (a
    log file, or quiet=true). Rank 0 writes the CSV and lines and starts the wandb run."""
    import sys

    from benchbench import curves, wandb_log

    progress = bool(cfg.get("progress", True))
    bar = progress and not cfg.get("quiet")
    live = wandb_log.current() if main else None
    if live is not None:
        live.start(row)  # the point's wandb run: from the first step, not after the row
    return bar, curves.Monitor(
        every=curves.log_every(tcfg), total=budget.steps, global_batch=budget.global_batch,
        run_id=run_id, writer=curves.CurveWriter(curves.curve_path(rdir, run_id)) if main else None,
        lines=main and progress and not (bar and sys.stderr.isatty()),
        sink=live.log if live is not None else None)


def _measure_trained(cfg: Any, row: dict[str, Any], model: Any, denv: Any, device: Any,
                     precision: str, image_size: int, in_chans: int, cl: bool,
                     fl: dict[str, Any]) -> None:
    """Inference speed, peak memory (per rank and summed) and MFU of the trained model."""
    import torch

    from benchbench import distributed, measure

    mc = cfg.measure
    timed = mc.throughput is True or (mc.throughput == "auto" and device.type == "cuda")
    if timed and denv.is_main:  # one GPU's inference speed; other ranks wait
        bs = int(mc.batch_size) if device.type == "cuda" else int(mc.cpu_throughput_batch)
        m = measure.infer_throughput(model, batch_size=bs, image_size=image_size,
                                     in_chans=in_chans, device=device, precision=precision,
                                     channels_last=cl, repeats=int(mc.repeats))
        if m.get("status") == "oom":  # the trained row stays ok; only the timing is missing
            row["error"] = f"inference timing: {m['error']}"
        row.update(infer_img_per_s=m["infer_img_per_s"],
                   infer_img_per_s_spread=m.get("infer_img_per_s_spread"),
                   peak_mem_infer_bytes=m.get("peak_mem_infer_bytes"))
    mems = [v for v in (row.get("peak_mem_train_bytes"), row.get("peak_mem_infer_bytes")) if v]
    row["peak_mem_bytes"] = max(mems) if mems else None
    if denv.enabled and device.type == "cuda":  # max per rank, and the sum over ranks
        mine = torch.tensor([row["peak_mem_bytes"] or 0, row.get("peak_mem_train_bytes") or 0],
                            dtype=torch.int64, device=device)
        most = distributed.all_reduce_max(mine.clone()).tolist()
        total = distributed.all_reduce_sum(mine.clone()).tolist()
        row.update(peak_mem_bytes=most[0] or None, peak_mem_train_bytes=most[1] or None,
                   peak_mem_sum_bytes=total[0] or None)
    else:
        row["peak_mem_sum_bytes"] = row["peak_mem_bytes"]
    if device.type == "cuda" and row.get("train_img_per_s") and precision == "bf16":
        # img/s is the total over ranks, so the denominator is every rank's peak
        peak = measure.peak_bf16_flops(device)
        peak = peak * denv.world_size if peak else peak
        row.update(peak_flops=peak,
                   mfu=measure.mfu(fl["flops_per_image"], row["train_img_per_s"], peak))

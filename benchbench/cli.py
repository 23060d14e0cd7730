"""Hydra entry point: `benchbench [overrides]` runs one point, `-m` or `study=<name>` a sweep.

Every point ends as one row (ok, failed, oom, diverged), so one bad point never stops a
sweep; finished points are skipped by run_id when a study is launched again.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from benchbench.errors import BenchbenchError, ConfigError, ResultsError, closest_first

PKG_DIR = Path(__file__).resolve().parent
CONF_DIR = PKG_DIR.parent / "conf"
# Config groups a user picks from on the command line; a typo is answered before Hydra runs.
GROUPS = ("model", "data", "train", "task", "study", "debug")

_EXIT = {"code": 0}  # set by a single run / the sweep summary; read by main()


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("bb_uid"):
        # Unique per launch: log dirs named by time alone collide (Hydra #1817, #2925).
        uid = uuid.uuid4().hex[:6]
        OmegaConf.register_new_resolver("bb_uid", lambda: uid)


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_overrides(argv: list[str]) -> None:
    """Unknown group options (model=vit_xx) -> one clear error, closest names first."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, _, val = arg.partition("=")
        key = key.lstrip("+~")
        if key not in GROUPS or not val:
            continue
        valid = group_options(key)
        for choice in val.split(","):
            choice = choice.strip()
            if choice in ("null", "") or choice in valid:
                continue
            opts = closest_first(choice, valid)
            hint = f" Did you mean '{opts[0]}'?" if opts else ""
            raise ConfigError(
                f"unknown {key} '{choice}'.{hint} Valid {key} options: {', '.join(opts)} "
                f"(files in {'sweeps/' if key == 'study' else f'conf/{key}/'})."
            )


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or "verbose=true" in argv
    try:
        check_overrides(argv)
    except BenchbenchError as e:
        if verbose:
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        return 2
    _register_resolvers()
    _EXIT["code"] = 0
    rank_tmp = None
    if int(os.environ.get("RANK") or 0) > 0:
        # torchrun: Hydra's run/sweep dirs are rank 0's; other ranks get a throwaway dir
        import tempfile

        rank_tmp = tempfile.mkdtemp(prefix=f"benchbench-rank{os.environ['RANK']}-")
        argv = [*argv, f"hydra.run.dir={rank_tmp}", f"hydra.sweep.dir={rank_tmp}"]
    old_argv = sys.argv
    # Hydra's argparse wants flags (-m, --cfg job) before the overrides
    flags = [a for a in argv if a.startswith("-")]
    sys.argv = ["benchbench", *flags, *[a for a in argv if not a.startswith("-")]]
    try:
        _hydra_entry()
    except KeyboardInterrupt as e:
        msg = str(e) or "interrupted"
        print(f"benchbench: {msg}", file=sys.stderr)
        return 130
    except SystemExit as e:  # Hydra exits 1 after printing its own (config) errors
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except BenchbenchError as e:
        if verbose:
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        return 2
    finally:
        sys.argv = old_argv
        if rank_tmp is not None:
            import shutil

            shutil.rmtree(rank_tmp, ignore_errors=True)
    return _EXIT["code"]


def _hydra_entry() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)()


def hydra_task(cfg: Any) -> dict[str, Any]:
    """The Hydra task function: one point -> one row. Never raises for a bad point."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    job_num = hc.job.get("num", 0) if multirun else 0
    try:
        out = run_point(cfg, job_num=job_num, raise_errors=False)
    except BenchbenchError as e:  # e.g. the row cannot be written: one message, no traceback
        if _verbose(cfg):
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        out = {"status": "failed", "error": str(e), "user_error": True}
    if multirun:
        if _is_main():  # one status file per point, not one per rank
            try:
                _redact_file(Path(hc.sweep.dir) / "multirun.yaml")
                _write_job_status(Path(hc.sweep.dir), job_num, out)
            except (OSError, BenchbenchError) as e:  # the summary counts it as lost
                print(f"benchbench: cannot write the sweep status of job {job_num}: {e}",
                      file=sys.stderr)
    elif out["status"] not in ("ok", "skipped"):
        _EXIT["code"] = 2 if out.get("user_error") else 1
    return out


class SweepSummary(Callback):
    """Hydra callback: after a multirun, count ok / failed / skipped points from the
    per-job status files (jobs may have run in other processes or on other nodes)."""

    def on_multirun_end(self, config: Any, **_: Any) -> None:
        from collections import Counter

        if not _is_main():
            return
        sdir = Path(str(config.hydra.sweep.dir)) / "status"
        outs = []
        for p in sorted(sdir.glob("*.json")) if sdir.is_dir() else []:
            try:
                outs.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                outs.append({"status": "lost", "row": str(p)})
        counts = Counter(o.get("status", "lost") for o in outs)
        bad = [o for o in outs if o.get("status") not in ("ok", "skipped")]
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no points ran"
        print(f"benchbench: sweep done: {len(outs)} points: {summary}. "
              f"Rows in {_abs(str(config.results.dir))}/runs", flush=True)
        for o in bad:
            print(f"  {o.get('status')}: {o.get('run_id')}: {o.get('error')}", file=sys.stderr)
        _EXIT["code"] = 1 if bad else 0


def _is_main() -> bool:
    """Rank 0 of a distributed run, or a single process: the one that writes files."""
    from benchbench.distributed import is_main

    return is_main()


def _device_type(cfg: Any) -> str:
    """'cuda' or 'cpu' for cfg.device without touching a GPU (picks the DDP backend)."""
    name = str(cfg.get("device") or "auto")
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name.startswith("cuda") else "cpu"


def _redact_file(path: Path) -> None:
    """Hydra's sweeper saves the whole config, overrides included, as multirun.yaml: mask
    the secrets in it (wandb.api_key=..., any *token*), as every row's config is masked."""
    from omegaconf import OmegaConf

    from benchbench.results import atomic_write_text, redact

    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(data)
    if clean != data:
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(clean)))


def _write_job_status(sweep_dir: Path, job_num: int, out: dict[str, Any]) -> None:
    from benchbench.results import atomic_write_text

    atomic_write_text(sweep_dir / "status" / f"{job_num}.json", json.dumps(out))


def resolved_config(cfg: Any) -> dict[str, Any]:
    """The resolved config without Hydra's node, normalised so that equivalent points
    (e.g. a CNN at two patch sizes) get the same run_id."""
    from omegaconf import OmegaConf

    from benchbench import models

    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    d = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if (d.get("model") or {}).get("variant"):
        # a paper name ("ViT-B/16") is the same point as its name + patch size
        name, patch = models.decode_variant(d["model"]["variant"])
        d["model"].update(name=name, variant=None)
        if patch is not None:
            d["model"]["patch_size"] = patch
    if "model" in d and "name" in d["model"] and d["model"]["name"] in models.MODELS:
        if models.MODELS.get(d["model"]["name"]).family not in ("vit", "hybrid"):
            d["model"]["patch_size"] = None  # CNNs have no patch: one row, not one per patch
    if d.get("task", {}).get("name") == "measure":
        d["data"] = {"image_size": d["data"]["image_size"]}  # measure reads no dataset
        d.pop("train", None)
        d.pop("eval", None)
    return d


def run_point(cfg: Any, *, job_num: int = 0, raise_errors: bool = True,
              retry_of: str | None = None) -> dict[str, Any]:
    """Run one configured point end to end and write its row. Returns a short summary."""
    from benchbench import results

    t0 = time.perf_counter()
    early: BenchbenchError | None = None
    try:
        d = resolved_config(cfg)
    except BenchbenchError as e:  # e.g. an unknown variant: still one failure row
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        early = e
    run_id = results.run_id_of(d)
    rdir = Path(_abs(str(cfg.results.dir)))
    path = results.row_path(rdir, run_id)
    summary: dict[str, Any] = {"run_id": run_id, "row": str(path)}

    from benchbench import distributed

    _assign_local_gpu(cfg, job_num)  # before any CUDA call
    _set_threads(cfg)
    try:  # one process per GPU under torchrun / submitit tasks; a no-op in one process
        denv = distributed.init_from_env(cfg.get("distributed", "auto"),
                                         device_type=_device_type(cfg))
    except BenchbenchError as e:
        denv, early = distributed.current(), early or e
    rank0 = distributed.is_main()
    # rank 0 decides whether the point already ran; every rank follows
    prior = distributed.broadcast_object(_prior_row(path) if rank0 else None)
    if prior is not None and prior.get("newer_schema"):  # never overwrite a newer row
        if rank0:
            print(f"benchbench: error: {prior['newer_schema']} The point is not run again.",
                  file=sys.stderr)
        return {**summary, "status": "failed", "error": prior["newer_schema"], "user_error": True}
    if prior is not None and prior["status"] != "interrupted":  # interrupted: nothing to keep
        retry = bool(cfg.study.get("retry_failed", False))
        if prior["status"] == "ok" or not retry:
            how = "" if prior["status"] == "ok" else " (study.retry_failed=true retries it)"
            _say(f"skip {run_id}: already {prior['status']} in {path}{how}", quiet=not rank0)
            return {**summary, "status": "skipped", "prior_status": prior["status"]}

    row = results.empty_row()
    row.update(results.provenance())
    row.update(
        run_id=run_id, study=str(cfg.study.name), task=str(cfg.task.name), seed=int(cfg.seed),
        config=d, world_size=denv.world_size, retry_of=retry_of,
    )
    user_error = False
    try:
        if early is not None:
            raise early
        _fill_identity(row, cfg)
        if cfg.task.name == "measure":
            _run_measure(cfg, row)
        elif cfg.task.name in _TASKS:
            _TASKS[cfg.task.name](cfg, row, rdir=rdir, run_id=run_id,
                                  identity=results.redact(results.identity_config(d)))
        else:
            raise ConfigError(f"unknown task '{cfg.task.name}'. Valid tasks: measure, "
                              f"{', '.join(sorted(_TASKS))}.")
        row["status"] = row.get("status") or "ok"  # measure may have set "oom" itself
    except KeyboardInterrupt as e:
        # Ctrl-C / preemption: with a checkpoint a relaunch resumes, and no row is written;
        # without one (unwritable checkpoint dir, or stopped outside training) a row says so
        ckpt = getattr(e, "checkpoint", None) or rdir / "ckpt" / run_id / "last.pt"
        if not Path(ckpt).exists():
            row.update(status="interrupted", error=str(e) or "interrupted (SIGINT)")
        raise
    except BenchbenchError as e:
        row.update(status="failed", error=str(e))
        user_error = True
        if _verbose(cfg):
            traceback.print_exc()
    except Exception as e:  # noqa: BLE001 - failures are data: one row, the sweep goes on
        from benchbench.train import Diverged

        if isinstance(e, Diverged):
            row.update(status="diverged", error=str(e), diverged_step=e.step)
        elif _is_oom(e):
            bs = row.get("batch_size")
            row.update(status="oom", error=f"out of memory at batch size {bs}; lower "
                       f"train.batch_size (or measure.batch_size)")
        else:
            row.update(status="failed", error=_short(e))
            if _verbose(cfg):
                traceback.print_exc()
    finally:
        row["wall_s"] = round(time.perf_counter() - t0, 3)
        if row.get("train_wall_s") is not None:
            row["overhead_s"] = round(row["wall_s"] - row["train_wall_s"], 3)
        row = {k: results.sanitize(v) for k, v in row.items()}
        if row.get("status") is not None and rank0:  # only rank 0 writes the row
            _save_row(row, rdir, path)
            _log_wandb(cfg, row)
    distributed.barrier()  # the row exists before any rank goes on (transfer reads it)
    summary.update(status=row["status"], error=row.get("error"), user_error=user_error)
    _say(_one_line(row, path), quiet=not rank0)
    if row["status"] != "ok" and rank0:
        print(f"benchbench: {row['status']}: {row.get('error')}", file=sys.stderr)
    if raise_errors and row["status"] == "failed" and user_error:
        raise BenchbenchError(row["error"])
    retry = _diverged_retry(cfg, row)
    if retry is not None:  # a new point (its lr differs): the diverged row stays as it is
        return run_point(retry, job_num=job_num, raise_errors=raise_errors, retry_of=run_id)
    return summary


def _verbose(cfg: Any) -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg.get("verbose"))


def _save_row(row: dict[str, Any], rdir: Path, path: Path) -> None:
    """Write the row; when that fails (unwritable dir, full disk) print it, so the result
    is not lost, and fail with one message. A row already at `path` stays as it was."""
    from benchbench import results

    try:
        results.write_row(row, rdir)
    except (OSError, ValueError, TypeError) as e:  # ValueError: ResultsError, unencodable
        why = (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
        print(json.dumps(results.redact(row), default=str), file=sys.stderr)
        raise ResultsError(
            f"cannot write the row {path} ({why}); the row is printed above and any earlier "
            f"row at that path is kept. Free disk space or set results.dir=<a writable folder>."
        ) from None


def _diverged_retry(cfg: Any, row: dict[str, Any]) -> Any | None:
    """train.retry_diverged_lr_factor: a diverged training point once more at lr x factor.
    The retry is a new point (new run_id, `retry_of` links it); it does not retry again."""
    factor = (cfg.get("train") or {}).get("retry_diverged_lr_factor")
    if row.get("status") != "diverged" or not factor or cfg.task.name != "train":
        return None
    from omegaconf import OmegaConf, open_dict

    new = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with open_dict(new):
        new.train.lr = float(f"{float(cfg.train.lr) * float(factor):.12g}")  # 0.005, not ...01
        new.train.retry_diverged_lr_factor = None
    _say(f"retry {row['run_id']} at train.lr={new.train.lr:g} (diverged at step "
         f"{row.get('diverged_step')})", quiet=not _is_main())
    return new


def _abs(p: str) -> str:
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(p)
    except ValueError:  # outside a Hydra run
        return os.path.abspath(p)


def _prior_row(path: Path) -> dict[str, Any] | None:
    from benchbench import results

    if not path.exists():
        return None
    try:
        return results.read_row(path)
    except results.NewerSchemaError as e:
        return {"status": "newer", "newer_schema": str(e)}
    except BenchbenchError as e:
        # Keep the broken file (never delete a result) and run the point again.
        keep = path.with_name(f"{path.name}.broken-{int(time.time())}")
        n = 0
        while keep.exists():  # two in one second: never replace an earlier one
            n += 1
            keep = path.with_name(f"{path.name}.broken-{int(time.time())}-{n}")
        os.replace(path, keep)
        print(f"benchbench: {e} Moved to {keep}; running the point again.", file=sys.stderr)
        return None


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:500]


def _say(msg: str, *, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _one_line(row: dict[str, Any], path: Path) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def g(v: Any, scale: float, unit: str) -> str:
        return "-" if v is None else f"{v / scale:.3g}{unit}"

    parts = [
        f"[{row['status']}] {row.get('model') or '?'}",
        f"data={row.get('dataset') or '-'}:{row.get('train_size') or '-'}",
        f"top1={pct(row.get('top1'))}",
        f"params={g(row.get('params'), 1e6, 'M')}",
        f"GFLOPs/img={g(row.get('flops_per_image'), 1e9, '')}",
        f"train={g(row.get('train_flops'), 1e12, ' TFLOPs')}",
        f"wall={row.get('wall_s')}s",
        f"-> {path}",
    ]
    return " ".join(parts)


def _fill_identity(row: dict[str, Any], cfg: Any) -> None:
    from benchbench import models

    row.update(
        family=models.family_of(cfg.model),
        model=models.paper_name(cfg.model),
        patch_size=models.patch_size_of(cfg.model),
        image_size=int(cfg.data.image_size),
    )
    models.validate(cfg.model, int(cfg.data.image_size))  # before any data or model is built


def resolve_device(name: str):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=auto or cpu.")
    return dev


def resolve_precision(name: str, device) -> str:
    if name in (None, "auto"):
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in ("fp32", "bf16"):
        raise ConfigError(f"unknown precision '{name}'. Valid: auto, fp32, bf16.")
    return name


def device_label(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"


def _set_threads(cfg: Any) -> None:
    """CPU threads for torch. Several points at once on one machine (joblib, submitit_local)
    each default to every core, and oversubscribed OpenMP threads spin: one run measured
    ~10x slower here. auto = the job's CPU share (SLURM_CPUS_PER_TASK), else torch's default."""
    import torch

    n = cfg.get("threads", "auto")
    if n in (None, "auto"):
        n = os.environ.get("SLURM_CPUS_PER_TASK")
    if n:
        torch.set_num_threads(max(1, int(n)))


def _assign_local_gpu(cfg: Any, job_num: int) -> None:
    """submitit's local executor gives every job the same CUDA_VISIBLE_DEVICES (0..n-1),
    so all points land on GPU 0. With local_gpus=[0,1,...] we spread them round-robin."""
    gpus = cfg.get("local_gpus")
    if not gpus or os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return
    from benchbench.distributed import _submitit_world

    if int(os.environ.get("WORLD_SIZE") or 1) > 1 or _submitit_world() > 1:
        return  # a multi-GPU point: LOCAL_RANK picks each rank's GPU
    os.environ["CUDA_VISIBLE_DEVICES"] = str(list(gpus)[job_num % len(gpus)])


def _channels_last(cfg: Any, family: str, device) -> bool:
    val = cfg.get("channels_last", "auto")
    if val == "auto":
        return device.type == "cuda" and family in ("bit", "resnet", "hybrid")
    return bool(val)


def _run_measure(cfg: Any, row: dict[str, Any]) -> None:
    """Measure-only: on a GPU in a fresh process by default (one model per process:
    allocator state left by an earlier model changes memory and speed numbers)."""
    device = resolve_device(cfg.device)
    isolate = cfg.measure.get("isolate", "auto")
    if isolate is True or (isolate == "auto" and device.type == "cuda"):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from omegaconf import OmegaConf

        blob = OmegaConf.to_container(cfg, resolve=True)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            row.update(pool.submit(_measure_child, blob, dict(row)).result())
    else:
        _measure_here(cfg, row)


def _measure_child(blob: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    _measure_here(OmegaConf.create(blob), row)
    return row


def _measure_here(cfg: Any, row: dict[str, Any]) -> None:
    import torch

    from benchbench import measure, models

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    image_size = int(cfg.data.image_size)
    in_chans, num_classes = int(cfg.task.in_chans), int(cfg.task.num_classes)
    torch.manual_seed(int(cfg.seed))
    model = models.build_model(cfg.model, num_classes, image_size, in_chans)
    mc = cfg.measure
    row.update(num_classes=num_classes, device=device_label(device), precision=precision,
               batch_size=int(mc.batch_size))
    throughput = mc.throughput == "auto" and device.type == "cuda" or mc.throughput is True
    m = measure.measure_model(
        model, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
        device=device, precision=precision, batch_size=int(mc.batch_size),
        compile=bool(cfg.compile), channels_last=_channels_last(cfg, row["family"], device),
        max_batch=bool(mc.max_batch), repeats=int(mc.repeats), cpu_throughput=throughput,
    )
    row.update({k: v for k, v in m.items() if k in row or k in _ROW_KEYS()})


def _ROW_KEYS() -> set[str]:
    from benchbench.results import EXTRA_FIELDS, ROW_FIELDS

    return set(ROW_FIELDS) | set(EXTRA_FIELDS)


def _run_train(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
               identity: dict[str, Any]) -> None:
    init_state = None
    ref = (cfg.get("init") or {}).get("checkpoint")
    if ref:
        init_state = _init_state(cfg, _checkpoint_ref(ref), rdir, row)
    _fit(cfg, row, data_cfg=cfg.data, tcfg=cfg.train, rdir=rdir, run_id=run_id,
         identity=identity, init_state=init_state)


def _checkpoint_ref(ref: Any) -> str:
    if not isinstance(ref, str):  # Hydra read a run_id such as 12e4... as a number
        raise ConfigError(
            f"init.checkpoint={ref!r} was read as a number: quote the run_id, "
            f"e.g. init.checkpoint=\"'12e4ab56cd78'\"."
        )
    return ref


def _init_state(cfg: Any, ref: str, rdir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Weights to start from: timm:<name> (local cache), a run_id, or a path."""
    from benchbench import results, transfer

    if ref.startswith("timm:"):
        row["pretrain_run_id"] = ref
        return transfer.timm_pretrained_state(ref[5:])
    dirs = [rdir] + [Path(_abs(str(d))) for d in (cfg.init.get("results_dirs") or [])]
    path = transfer.resolve_checkpoint(ref, dirs)
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


def _run_transfer(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
                  identity: dict[str, Any]) -> None:
    """The paper's two stages in one point: pre-train (its own row, reused by every
    fine-tune of the same pre-training config), then fine-tune at the new task's data,
    resolution and recipe; few-shot on the frozen pre-trained features."""
    from omegaconf import OmegaConf, open_dict

    from benchbench import results

    pre = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with open_dict(pre):
        pre.task = OmegaConf.create({"name": "train"})
        pre.train.save_final = True
        pre.eval.fewshot = False
        pre.init.checkpoint = None
    out = run_point(pre, raise_errors=False)
    if out["status"] not in ("ok", "skipped") or (
            out["status"] == "skipped" and out.get("prior_status") != "ok"):
        raise ConfigError(f"pre-training {out['run_id']} ended {out.get('prior_status') or out['status']}: "
                          f"{out.get('error')}; fix it first (its row is in {out['row']}).")
    pre_id = out["run_id"]
    final = rdir / "ckpt" / pre_id / "final.pt"
    if not final.exists():
        raise ConfigError(
            f"pre-training row {pre_id} exists but its weights ({final}) do not (it ran without "
            f"train.save_final=true); move its row away to pre-train again."
        )
    pre_row = results.read_row(results.row_path(rdir, pre_id))
    row.update(pretrain_run_id=pre_id, pretrain_dataset=pre_row.get("dataset"),
               pretrain_train_size=pre_row.get("train_size"),
               pretrain_flops=pre_row.get("train_flops"))
    from benchbench.transfer import load_state

    ft = cfg.task.finetune
    row["image_size"] = int(ft.data.image_size)
    _fit(cfg, row, data_cfg=ft.data, tcfg=ft.train, rdir=rdir, run_id=run_id,
         identity=identity, init_state=load_state(final))
    row["finetune_flops"] = row.get("train_flops")


def _run_probe(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
               identity: dict[str, Any]) -> None:
    """Few-shot linear probe of a checkpoint (init.checkpoint) on data=..., no training."""
    ref = (cfg.get("init") or {}).get("checkpoint")
    if not ref:
        raise ConfigError("task=probe needs init.checkpoint=<run_id | path | timm:name>.")
    state = _init_state(cfg, _checkpoint_ref(ref), rdir, row)
    with_probe = cfg.copy()
    from omegaconf import open_dict

    with open_dict(with_probe):
        with_probe.eval.fewshot = True
    _fit(with_probe, row, data_cfg=cfg.data, tcfg=cfg.train, rdir=rdir, run_id=run_id,
         identity=identity, init_state=state, train_steps=False)


def _max_steps(cfg: Any) -> int | None:
    """cfg.max_steps (debug=smoke's cap on every training stage), checked; None = no cap."""
    v = cfg.get("max_steps")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"max_steps must be a positive whole number or null, got {v!r}.")
    return v


def _fit(cfg: Any, row: dict[str, Any], *, data_cfg: Any, tcfg: Any, rdir: Path, run_id: str,
         identity: dict[str, Any], init_state: dict[str, Any] | None = None,
         train_steps: bool = True) -> None:
    """Load data, build (and optionally initialise) the model, train on the budget,
    evaluate, probe and measure; fills `row`."""
    import torch

    from benchbench import data, distributed, measure, models
    from benchbench.train import Budget, evaluate, resolve_budget, train

    denv = distributed.current()  # one process: rank 0 of 1, no process group
    cap = _max_steps(cfg) if train_steps else None
    if train_steps:  # a zero or negative budget is refused before any data is loaded
        resolve_budget(tcfg, flops_per_image=1, steps_per_epoch=1)
        factor = tcfg.get("retry_diverged_lr_factor")
        if factor is not None and not (isinstance(factor, int | float) and 0 < factor < 1):
            raise ConfigError(f"train.retry_diverged_lr_factor must be in (0, 1) or null, "
                              f"got {factor}.")
    device = resolve_device(cfg.device)
    if denv.enabled and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # this rank's (LOCAL_RANK)
    precision = resolve_precision(cfg.precision, device)
    seed = int(cfg.seed)
    row.update(device=device_label(device), precision=precision, batch_size=int(tcfg.batch_size),
               world_size=denv.world_size)

    models.validate(cfg.model, int(data_cfg.image_size))
    ds = data.load_dataset(data_cfg)
    image_size = int(data_cfg.image_size)
    row.update(dataset=ds.name, train_size=len(ds.train.y), num_classes=ds.num_classes,
               image_size=image_size)
    if train_steps and len(ds.train.y) < int(tcfg.batch_size):
        raise ConfigError(
            f"train.batch_size={tcfg.batch_size} is larger than the {len(ds.train.y)} training "
            f"images; lower train.batch_size (it is never changed silently)."
        )
    torch.manual_seed(seed)
    model = models.build_model(cfg.model, ds.num_classes, image_size, ds.channels)
    if init_state is not None:
        from benchbench.transfer import load_for_transfer

        load_for_transfer(model, init_state, zero_head=bool(cfg.init.get("zero_head", True)))
    row["params"] = models.count_params(model)
    fl = measure.count_flops(model, image_size, ds.channels)
    row.update(flops_per_image=fl["flops_per_image"], macs_per_image=fl["macs_per_image"])

    cl = _channels_last(cfg, row["family"], device)
    model = model.to(device, memory_format=torch.channels_last if cl else torch.preserve_format)
    eval_bs = int(cfg.eval.batch_size)

    resident = int(data_cfg.get("max_resident_bytes") or data.DEFAULT_MAX_RESIDENT_BYTES)

    def loader_of(part: str, **kw: Any):
        # eval loaders: only eval_batches(eval_bs) is used; any batch the ranks divide
        kw.setdefault("batch_size", eval_bs * denv.world_size)
        kw.setdefault("drop_last", False)
        # training batches: this rank's slice of each global batch; eval: shard rank::world
        return data.make_loader(ds, part=part, image_size=image_size, device=device,
                                max_resident_bytes=resident, rank=denv.rank,
                                world_size=denv.world_size,
                                skip_bad_images=bool(data_cfg.get("skip_bad_images", True)), **kw)

    test = loader_of("test")
    if cfg.eval.fewshot and (init_state is not None or not train_steps):
        _fewshot(cfg, row, model, loader_of("train"), test, ds.num_classes, device, precision)
    if not train_steps:
        row.update(samples_seen=0, train_flops=0)
        return

    loader = loader_of("train", batch_size=int(tcfg.batch_size), augment=bool(data_cfg.augment),
                       seed=seed, drop_last=True)
    budget = resolve_budget(tcfg, flops_per_image=fl["flops_per_image"],
                            steps_per_epoch=loader.steps_per_epoch)
    if cap is not None:  # debug=smoke: the same point, a few steps
        budget = Budget(min(budget.steps, cap), budget.global_batch)
    row.update(steps=budget.steps, epochs=budget.samples / len(ds.train.y), lr=float(tcfg.lr))
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
    ckpt = rdir / "ckpt" / run_id / "last.pt"
    res = train(
        net, loader.iter_from, tcfg=tcfg, budget=budget, device=device, precision=precision,
        seed=seed, ckpt_path=ckpt, identity=identity, progress=not cfg.get("quiet"),
        rank=denv.rank, world_size=denv.world_size,
    )
    row.update(
        samples_seen=res.samples_seen,
        train_flops=measure.train_flops(fl["flops_per_image"], res.samples_seen),
        final_loss=res.final_loss, train_wall_s=round(res.train_wall_s, 3),
        train_img_per_s=res.train_img_per_s, peak_mem_train_bytes=res.peak_mem_train_bytes,
        resumed=res.resumed,
    )
    if tcfg.get("save_final") and denv.is_main:
        from benchbench.train import save_checkpoint

        save_checkpoint(rdir / "ckpt" / run_id / "final.pt",
                        {"model": model.state_dict(), "identity": identity, "step": res.steps})

    # under DDP: the bare model (no DDP collectives in forward), counts summed across ranks
    ev = evaluate(model if denv.enabled else net, test.eval_batches(eval_bs),
                  num_classes=ds.num_classes, device=device, precision=precision,
                  all_reduce=distributed.all_reduce_sum if denv.enabled else None)
    row.update(top1=ev["top1"], top5=ev["top5"], eval_samples=ev["eval_samples"])
    if cfg.eval.fewshot and init_state is None:
        _fewshot(cfg, row, model, loader_of("train"), test, ds.num_classes, device, precision)

    mc = cfg.measure
    timed = mc.throughput is True or (mc.throughput == "auto" and device.type == "cuda")
    if timed and denv.is_main:  # one GPU's inference speed; other ranks wait
        bs = int(mc.batch_size) if device.type == "cuda" else int(mc.cpu_throughput_batch)
        m = measure.infer_throughput(model, batch_size=bs, image_size=image_size,
                                     in_chans=ds.channels, device=device, precision=precision,
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


def _fewshot(cfg: Any, row: dict[str, Any], model: Any, train_loader: Any, test_loader: Any,
             num_classes: int, device: Any, precision: str) -> None:
    from benchbench.train import extract_features, fewshot_probe

    bs = int(cfg.eval.batch_size)
    ftr, ytr = extract_features(model, train_loader.eval_batches(bs), device=device,
                                precision=precision)
    fte, yte = extract_features(model, test_loader.eval_batches(bs), device=device,
                                precision=precision)
    from benchbench.distributed import gather_shards

    got = gather_shards(ftr, ytr, fte, yte)  # DDP: each rank's shard -> rank 0, in order
    if got is None:
        return  # not rank 0: its row is not written
    ftr, ytr, fte, yte = got
    shots = [int(s) for s in cfg.eval.fewshot_shots]
    probes = {s: fewshot_probe(ftr, ytr, fte, yte, num_classes=num_classes, shots=s,
                               seeds=int(cfg.eval.fewshot_seeds), l2=float(cfg.eval.fewshot_l2))
              for s in shots}
    main_shot = 5 if 5 in probes else shots[0]
    row.update(fewshot_top1=probes[main_shot]["fewshot_top1"], fewshot_shots=main_shot,
               fewshot={str(s): p["fewshot_top1"] for s, p in probes.items()})


_TASKS = {"train": _run_train, "transfer": _run_transfer, "probe": _run_probe}


def _log_wandb(cfg: Any, row: dict[str, Any]) -> None:
    """Optional wandb logging at the edge; a logging failure never loses the row."""
    w = cfg.get("wandb") or {}
    if not w.get("enabled"):
        return
    try:
        import wandb
    except ImportError:
        print("benchbench: wandb.enabled=true but wandb is not installed: pip install "
              "'benchbench[wandb]'", file=sys.stderr)
        return
    run, failure = None, None
    try:
        from benchbench.results import redact

        argv, sys.argv = sys.argv, [redact(a) for a in sys.argv]  # wandb records the command
        try:
            run = wandb.init(project=w.get("project", "benchbench"),
                             mode=w.get("mode", "offline"), name=row["run_id"],
                             group=row.get("study"), config=redact(row["config"]), reinit=True)
        finally:
            sys.argv = argv
        run.log({k: v for k, v in row.items() if isinstance(v, int | float) and v is not None})
    except Exception as e:  # noqa: BLE001
        failure = e
    if run is not None:
        try:  # finish() uploads/syncs: it can fail too, and must not lose the row either
            run.finish()
        except Exception as e:  # noqa: BLE001
            failure = failure or e
    if failure is not None:  # one warning, whatever failed
        print(f"benchbench: wandb logging failed ({_short(failure)}); the row is saved.",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""The life of one point: resolve its config, skip or run its task, and write its one row.

`run_point` is what the Hydra task calls; `run_task_to_row` is one config's row from start
to end (skip when done, run the task, classify a failure, write the row, retry a diverged
point once), shared with the transfer task's pre-training stage.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchbench.errors import BenchbenchError, NoRowError, ResultsError
from benchbench.paths import abs_path as abs_path  # callers use point.abs_path
from benchbench.summary_line import one_line

# A point that failed for one of these is run again on relaunch without being asked: the
# fix (install the dataset, free or fix a folder) happens outside benchbench. Other
# failures (a bad config, a crash) stay failed until study.retry_failed=true.
RETRY_BY_ITSELF = frozenset({"DataError", "ResultsError", "PermissionError",
                             "FileNotFoundError", "NotADirectoryError", "IsADirectoryError"})


def verbose(cfg: Any) -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(cfg.get("verbose"))


def exit_code(summary: dict[str, Any]) -> int:
    """The CLI's exit code for a point's summary: 0 done (or done before), 2 the user's to
    fix, 1 it broke (or it was skipped because it had failed before)."""
    if summary["status"] == "ok" or (summary["status"] == "skipped"
                                     and summary.get("prior_status", "ok") == "ok"):
        return 0
    return 2 if summary.get("user_error") else 1  # a point skipped as already failed: 1


def resolved_config(cfg: Any, fingerprint: bool = True) -> dict[str, Any]:
    """The resolved config without Hydra's node, normalised so that equivalent points
    (e.g. a CNN at two patch sizes) get the same run_id. fingerprint=False: without the
    dataset's content fingerprint (reading it imports the data stack)."""
    from omegaconf import OmegaConf

    from benchbench import families, models

    if "hydra" in cfg:  # the copy is most of the cost: benchbench-plan's configs have no hydra
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    d = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if (d.get("model") or {}).get("variant"):
        # a paper name ("ViT-B/16") is the same point as its name + patch size
        name, patch = models.decode_variant(d["model"]["variant"])
        d["model"].update(name=name, variant=None)
        if patch is not None:
            d["model"]["patch_size"] = patch
    if "model" in d and "name" in d["model"] and d["model"]["name"] in models.MODELS:
        if not families.FAMILIES.get(models.MODELS.get(d["model"]["name"]).family).has_patch:
            d["model"]["patch_size"] = None  # CNNs have no patch: one row, not one per patch
    if d.get("task", {}).get("name") == "measure":
        d["data"] = {"image_size": d["data"]["image_size"]}  # measure reads no dataset
        d.pop("train", None)
        d.pop("eval", None)
    elif fingerprint:
        from benchbench.data.identity import with_fingerprint

        with_fingerprint(d)
    return d


def run_point(cfg: Any, *, job_num: int = 0, raise_errors: bool = True) -> dict[str, Any]:
    """Run one configured point end to end and write its row. Returns a short summary
    (run_id, row, status, error, user_error); `exit_code(summary)` is the CLI's exit code."""
    from benchbench import distributed, runtime

    t0 = time.perf_counter()
    runtime.assign_local_gpu(cfg, job_num)  # before any CUDA call
    runtime.set_threads(cfg)
    early: BenchbenchError | None = None
    try:  # one process per GPU under torchrun / submitit tasks; a no-op in one process
        distributed.init_from_env(cfg.get("distributed", "auto"),
                                  device_type=runtime.device_type(cfg))
    except BenchbenchError as e:  # still one failure row
        early = e
    summary = run_task_to_row(cfg, early=early, t0=t0)
    if raise_errors and summary["status"] == "failed" and summary.get("user_error"):
        raise BenchbenchError(summary["error"])
    return summary


def run_task_to_row(cfg: Any, *, early: BenchbenchError | None = None,
                    t0: float | None = None) -> dict[str, Any]:
    """cfg's row: skipped when it is already there, else its task (TASKS[cfg.task.name]) is
    run and the row written; a diverged point is then retried once as a new point."""
    summary, retry = _run_once(cfg, early=early, retry_of=None, t0=t0)
    while retry is not None:  # a new point (its lr differs): the diverged row stays as it is
        summary, retry = _run_once(retry, early=None, retry_of=summary["run_id"], t0=None)
    return summary


def keeps(prior: dict[str, Any], retry_failed: bool) -> bool:
    """The relaunch rule: a point with this earlier row is not run again. An ok row is kept;
    a failed one too unless study.retry_failed or the failure is fixed outside benchbench
    (RETRY_BY_ITSELF); an interrupted row never (it holds nothing)."""
    if prior["status"] == "interrupted":
        return False
    if prior["status"] == "ok":
        return True
    return not (retry_failed or prior.get("error_type") in RETRY_BY_ITSELF)


def _run_once(cfg: Any, *, early: BenchbenchError | None, retry_of: str | None,
              t0: float | None) -> tuple[dict[str, Any], Any | None]:
    """One row; returns (summary, the retry's config when this point diverged and asks).
    The point is claimed first (benchbench.claims): a point that another live process is
    computing is not run here, and writes no row."""
    from benchbench import claims, distributed, results

    t0 = time.perf_counter() if t0 is None else t0
    try:
        d = resolved_config(cfg)
    except BenchbenchError as e:  # e.g. an unknown variant: still one failure row
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
        early = e
    run_id = results.run_id_of(d)
    rdir = Path(abs_path(str(cfg.results.dir)))
    rank0 = distributed.is_main()
    claim = claims.acquire(rdir, run_id, claims.settings(cfg)) if rank0 else claims.NOT_CLAIMED
    holder = distributed.broadcast_object(claim.holder)
    if holder is not None:
        why = claims.describe(holder)
        _say(f"skip {run_id}: {why}; not run here (a relaunch after it ends skips or "
             f"resumes it)", quiet=not rank0)
        return {"run_id": run_id, "row": str(results.row_path(rdir, run_id)),
                "status": "running", "error": why}, None
    try:
        return _run_claimed(cfg, d, run_id, rdir, early=early, retry_of=retry_of, t0=t0)
    finally:
        claim.release()


def _run_claimed(cfg: Any, d: dict[str, Any], run_id: str, rdir: Path, *,
                 early: BenchbenchError | None, retry_of: str | None,
                 t0: float) -> tuple[dict[str, Any], Any | None]:
    from benchbench import distributed, failures, jobenv, results, runtime, wandb_log
    from benchbench.tasks import TASKS

    path = results.row_path(rdir, run_id)
    summary: dict[str, Any] = {"run_id": run_id, "row": str(path)}
    rank0 = distributed.is_main()
    # rank 0 decides whether the point already ran; every rank follows
    prior = distributed.broadcast_object(_prior_row(path) if rank0 else None)
    if prior is not None and prior.get("newer_schema"):  # never overwrite a newer row
        if rank0:
            print(f"benchbench: error: {prior['newer_schema']} The point is not run again.",
                  file=sys.stderr)
        return {**summary, "status": "failed", "error": prior["newer_schema"],
                "user_error": True}, None
    if prior is not None and prior["status"] != "interrupted":  # interrupted: nothing to keep
        retry = bool(cfg.study.get("retry_failed", False))
        fixed_outside = prior.get("error_type") in RETRY_BY_ITSELF
        if keeps(prior, retry):
            _say(_skip_message(run_id, prior, path, _no_patch(cfg, d)), quiet=not rank0)
            # a diverged point whose lower-lr retry ran: the retry's row answers for it
            return {**summary, "status": "skipped", "prior_status": prior["status"],
                    "error": prior.get("error"), "no_patch": _no_patch(cfg, d)}, \
                _diverged_retry(cfg, prior)
        if fixed_outside and not retry:
            _say(f"retry {run_id}: it failed with {prior['error_type']} ({prior.get('error')}); "
                 f"that is fixed outside benchbench (data, folders), so it runs again",
                 quiet=not rank0)

    row = results.empty_row()
    row.update(results.provenance())
    row.update(jobenv.job_fields())
    row.update(
        run_id=run_id, study=str(cfg.study.name), task=str(cfg.task.name), seed=int(cfg.seed),
        config=d, world_size=distributed.current().world_size, retry_of=retry_of,
        threads=runtime.num_threads(),
    )
    user_error = False
    live = wandb_log.PointRun(cfg, run_id, enabled=rank0)  # started when training starts
    missing = None
    try:
        if early is not None:
            raise early
        _fill_identity(row, cfg)
        task = TASKS.get(str(cfg.task.name))
        with runtime.sigterm_as_interrupt(), live.active():  # measure/probe: SIGTERM -> a row
            task(cfg, row, rdir=rdir, run_id=run_id,
                 identity=results.redact(results.identity_config(d)), run_stage=run_task_to_row)
        row["status"] = row.get("status") or "ok"  # measure may have set "oom" itself
    except NoRowError as e:  # task=replay matched nothing: no row, the point stays missing
        missing = str(e)
    except KeyboardInterrupt as e:
        # Ctrl-C / preemption: with a checkpoint a relaunch resumes, and no row is written;
        # without one (unwritable checkpoint dir, or stopped outside training) a row says so
        from benchbench.checkpoint import run_dir

        ckpt = getattr(e, "checkpoint", None) or run_dir(cfg, run_id) / "last.pt"
        if not Path(ckpt).exists():
            row.update(status="interrupted", error=str(e) or "interrupted (SIGINT)")
        raise
    except Exception as e:  # noqa: BLE001 - failures are data: one row, the sweep goes on
        row.update(failures.classify(e, batch_size=row.get("batch_size")),
                   error_type=type(e).__name__)
        user_error = failures.is_user_error(e)
        if row["status"] == failures.FAILED and verbose(cfg):
            traceback.print_exc()
    finally:
        # a resumed run adds its earlier segments' wall time (kept in the checkpoint)
        row["wall_s"] = round(time.perf_counter() - t0 + (row.get("prior_wall_s") or 0), 3)
        if row.get("train_wall_s") is not None:
            row["overhead_s"] = round(row["wall_s"] - row["train_wall_s"], 3)
        row = {k: results.sanitize(v) for k, v in row.items()}
        try:
            if row.get("status") is not None and rank0:  # only rank 0 writes the row
                _save_row(row, rdir, path)
        finally:  # the row as the wandb run's summary; no status: resumable (interrupted)
            live.end(row)
    distributed.barrier()  # the row exists before any rank goes on (transfer reads it)
    if missing is not None:
        print(f"benchbench: missing: {missing}", file=sys.stderr)
        return {**summary, "status": "missing", "error": missing, "user_error": True}, None
    summary.update(status=row["status"], error=row.get("error"), user_error=user_error)
    _say(one_line(row, path), quiet=not rank0)
    if row["status"] != "ok" and rank0:
        again = (" (fix it and relaunch: this point runs again by itself)"
                 if row.get("error_type") in RETRY_BY_ITSELF else "")
        print(f"benchbench: {row['status']}: {row.get('error')}{again}", file=sys.stderr)
    return summary, _diverged_retry(cfg, row)


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


def _diverged_retry(cfg: Any, row: dict[str, Any], *, quiet: bool = False) -> Any | None:
    """train.retry_diverged_lr_factor: a diverged training point once more at lr x factor.
    The retry is a new point (new run_id, `retry_of` links it); it does not retry again."""
    factor = (cfg.get("train") or {}).get("retry_diverged_lr_factor")
    if row.get("status") != "diverged" or not factor or cfg.task.name != "train":
        return None
    from omegaconf import OmegaConf, open_dict

    from benchbench.distributed import is_main

    new = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with open_dict(new):
        base = cfg.train.lr if cfg.train.lr is not None else row["lr"]  # lr_by_model's lr
        new.train.lr = float(f"{float(base) * float(factor):.12g}")  # 0.005, not ...01
        new.train.retry_diverged_lr_factor = None
    _say(f"retry {row['run_id']} at train.lr={new.train.lr:g} (diverged at step "
         f"{row.get('diverged_step')})", quiet=quiet or not is_main())
    return new


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


def _fill_identity(row: dict[str, Any], cfg: Any) -> None:
    from benchbench import models

    row.update(
        family=models.family_of(cfg.model),
        model=models.paper_name(cfg.model),
        patch_size=models.patch_size_of(cfg.model),
        image_size=int(cfg.data.image_size),
    )
    models.validate(cfg.model, int(cfg.data.image_size))  # before any data or model is built


def _say(msg: str, *, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _no_patch(cfg: Any, d: dict[str, Any]) -> bool:
    """The point set a patch size its model does not have (a CNN): it is the same run at
    every patch size."""
    return (cfg.get("model") or {}).get("patch_size") is not None and (
        d.get("model") or {}).get("patch_size", 0) is None


def _skip_message(run_id: str, prior: dict[str, Any], path: Path, no_patch: bool) -> str:
    if prior["status"] == "ok":
        same = (f" ({prior.get('model')} has no patch size: the same run at every "
                f"model.patch_size)" if no_patch else "")
        return f"skip {run_id}: already ok in {path}{same}"
    return (f"skip {run_id}: already {prior['status']} in {path} ({prior.get('error')}); "
            f"study.retry_failed=true runs it again")

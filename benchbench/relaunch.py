"""Before a sweep launches anything: which of its points still need a job.

benchbench's sweeper (hydra_plugins/benchbench_sweeper) composes each point's config as its
job will and asks `plan` what the point would do: a point whose row is kept (ok, or failed
and not to be retried: the point's own rule, `point.keeps`), that a live claim shows running
elsewhere, or that repeats an earlier point's run_id gets no job; it gets the status file its
job would have written instead, so the sweep summary and the exit code read as before. The
point's own skip stays as a second guard.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def plan(cfg: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(run_id, None) when the point needs a job, else (run_id, the summary its job would
    report without training). run_id is None when the config does not resolve (the job
    writes that failure row). Reads only: never moves a broken row, never claims."""
    from benchbench import claims, point, results
    from benchbench.errors import BenchbenchError

    try:
        d = point.resolved_config(cfg)
    except BenchbenchError:
        return None, None
    run_id = results.run_id_of(d)
    rdir = Path(point.abs_path(str(cfg.results.dir)))
    path = results.row_path(rdir, run_id)
    summary: dict[str, Any] = {"run_id": run_id, "row": str(path)}
    holder = claims.live_holder(rdir, run_id, claims.settings(cfg))
    if holder is not None:
        return run_id, {**summary, "status": "running", "error": claims.describe(holder)}
    if not path.exists():
        return run_id, None
    try:
        prior = results.read_row(path)
    except results.NewerSchemaError as e:
        return run_id, {**summary, "status": "failed", "error": str(e), "user_error": True}
    except BenchbenchError:
        return run_id, None  # a broken row: the job moves it aside and runs the point
    if not point.keeps(prior, bool(cfg.study.get("retry_failed", False))):
        return run_id, None
    retry = point._diverged_retry(cfg, prior, quiet=True)
    if retry is not None:  # a diverged point: its lower-lr retry answers for it
        retry_id, retry_summary = plan(retry)
        return run_id, retry_summary and {**retry_summary, "retry_of": run_id}
    return run_id, {**summary, "status": "skipped", "prior_status": prior["status"],
                    "error": prior.get("error"), "no_patch": point._no_patch(cfg, d)}


def to_submit(grid: Sequence[Sequence[str]], compose: Callable[[list[str]], Any],
              sweep_dir: Path) -> list[list[str]]:
    """The points of `grid` (each a list of overrides) that need a job, in order. Each kept
    point's would-be summary goes to `<sweep_dir>/status/kept-<index>.json` (the sweep
    summary reads it); one line says how many are done and how many are submitted."""
    from benchbench.launch_checks import _redact_file
    from benchbench.results import atomic_write_text

    _redact_file(sweep_dir / "multirun.yaml")  # no job may run to mask its secrets

    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        # torchrun: every rank sweeps, and a row written meanwhile must not split the ranks'
        # job lists; the point's own skip (rank 0 decides for all) is the guard here
        for over in grid:
            compose(list(over))
        return [list(o) for o in grid]
    submit: list[list[str]] = []
    kept: dict[int, dict[str, Any]] = {}
    first: dict[str, int] = {}
    for i, over in enumerate(grid):
        cfg = compose(list(over))  # Hydra's composition errors stop the sweep, as before
        run_id, summary = plan(cfg)
        if summary is None and run_id in first:  # the same run as an earlier point
            from benchbench import point

            summary = {"run_id": run_id, "status": "skipped", "same_as": first[run_id],
                       "no_patch": point._no_patch(cfg, point.resolved_config(cfg))}
        if summary is None:
            if run_id is not None:
                first[run_id] = i
            submit.append(list(over))
        else:
            kept[i] = summary
    for i, summary in kept.items():
        atomic_write_text(sweep_dir / "status" / f"kept-{i:06d}.json", json.dumps(summary))
    print(announce(len(grid), len(submit), list(kept.values())), flush=True)
    return submit


def check_pool(cfgs: Sequence[Any]) -> None:
    """Before a sweep launches: ConfigError naming the pool when the grid has task=replay
    points and not one of them has a row there (every job would write nothing)."""
    from benchbench import point, results
    from benchbench.errors import ConfigError
    from benchbench.tasks.replay import find, no_match, pool_dir

    reps = [c for c in cfgs if str(c.task.name) == "replay"]
    for c in reps:
        ident = results.redact(results.identity_config(point.resolved_config(c)))
        if find(pool_dir(c), ident)[1] is not None:
            return
    if reps:
        raise ConfigError(no_match(pool_dir(reps[0]), len(reps)))


def announce(total: int, submitting: int, kept: list[dict[str, Any]]) -> str:
    """'benchbench: 195 of 200 points are done; submitting 5', with what else was kept."""
    done = sum(1 for s in kept if s["status"] == "skipped" and "same_as" not in s
               and s.get("prior_status") == "ok")
    counts = Counter(_why(s) for s in kept if "same_as" in s or s.get("prior_status") != "ok")
    extra = "".join(f", {n} {what}" for what, n in sorted(counts.items()))
    head = (f"all {total} points are done" if done == total
            else f"{done} of {total} points are done{extra}")
    tail = f"submitting {submitting}" if submitting else "nothing to submit"
    return f"benchbench: {head}; {tail}"


def _why(s: dict[str, Any]) -> str:
    if "same_as" in s:
        return "same run as another point"
    if s["status"] == "running":
        return "running elsewhere"
    if s["status"] == "failed":
        return "failed (row of a newer benchbench)"
    return f"already {s['prior_status']} (study.retry_failed=true runs them)"


def settled(outs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's point summaries, with each point that was running elsewhere when this
    launch looked read again from its row: another launch may have finished it meanwhile,
    and the summary should say so, not what was true before (two launches at once)."""
    from benchbench import claims, results
    from benchbench.errors import ResultsError

    out = []
    for o in outs:
        if o.get("status") == "running" and o.get("run_id") and o.get("row"):
            rdir = Path(o["row"]).parent.parent
            try:
                row = None if claims.live_holder(rdir, o["run_id"], claims.Settings()) \
                    else results.read_row(o["row"])
            except ResultsError:  # no row (yet), or a broken one: still as it was
                row = None
            if row is not None and row["status"] != "interrupted":
                o = {**o, "status": "skipped", "prior_status": row["status"],
                     "error": row.get("error"), "done_elsewhere": True}
        out.append(o)
    return out


def done_without_writing(argv: Sequence[str]) -> str | None:
    """The relaunch's line when every point of the launch `argv` is done (its ok row kept),
    else None. Reads only: a finished study on read-only storage is done, not unwritable."""
    from benchbench import status

    try:
        grid = status.points([a for a in argv if not a.startswith("-") or a in ("-m", "--multirun")])
    except Exception:  # noqa: BLE001 - the launch itself reports a config that does not compose
        return None
    from benchbench.point import abs_path

    kept = []
    for _, cfg in grid:
        if isinstance(cfg, BaseException) or not (
                Path(abs_path(str(cfg.results.dir))) / "runs").is_dir():  # no rows: not done
            return None
        _, summary = plan(cfg)
        if summary is None or summary["status"] != "skipped" or summary["prior_status"] != "ok":
            return None
        kept.append(summary)
    return announce(len(grid), 0, kept) if kept else None


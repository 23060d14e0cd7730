"""wandb at the edge: one wandb run per point, live while it trains; a wandb failure never costs a row.

`PointRun` is one point's run. point.py makes it and ends it with the row as the summary;
the training stage finds it with `current()`, starts it when training starts (id=run_id,
resume="allow": a requeued point resumes the same wandb run) and logs the training curve
into it. A point that never trains (measure, probe, a failure before training) starts it
at the end. The first wandb failure is one message and wandb is left alone for the point.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_CURRENT: ContextVar[PointRun | None] = ContextVar("benchbench_wandb_run", default=None)
EVAL_KEYS = ("val_top1", "test_top1")  # logged as eval/<key>; the rest of a curve row as train/<key>


def current() -> PointRun | None:
    """The wandb run of the point being run (None outside a point)."""
    return _CURRENT.get()


def run_name(row: dict[str, Any]) -> str:
    """'ViT-micro/8 n=1000 seed=0' (the pre-training size and ' transfer' for a transfer point)."""
    task = row.get("task")
    n = row.get("pretrain_train_size") if task == "transfer" else row.get("train_size")
    parts = [str(row.get("model") or row.get("run_id"))]
    parts += [f"n={n}"] if n is not None else []
    parts += [f"seed={row.get('seed')}"] + ([str(task)] if task not in (None, "train") else [])
    return " ".join(parts)


class PointRun:
    """One point's wandb run: `start(row)`, `log(curve_row, step)`, `end(row)`. A no-op
    unless wandb.enabled (and on ranks other than 0)."""

    def __init__(self, cfg: Any, run_id: str, *, enabled: bool = True):
        w = cfg.get("wandb") or {}
        self.enabled = bool(w.get("enabled")) and enabled
        self.project, self.mode = w.get("project", "benchbench"), w.get("mode", "offline")
        self.run_id, self.run, self.failed = run_id, None, False

    @contextlib.contextmanager
    def active(self) -> Iterator[PointRun]:
        """`current()` is this run inside the block (a transfer point's pre-training
        stage is a point of its own, with its own run, inside the transfer's block)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def start(self, row: dict[str, Any]) -> None:
        if not self.enabled or self.run is not None or self.failed:
            return
        try:
            import wandb
        except ImportError:
            self.failed = True
            print("benchbench: wandb.enabled=true but wandb is not installed: pip install "
                  "'benchbench[wandb]'", file=sys.stderr)
            return
        from benchbench.results import redact

        try:
            argv, sys.argv = sys.argv, [redact(a) for a in sys.argv]  # wandb records the command
            try:
                self.run = wandb.init(
                    project=self.project, mode=self.mode, id=self.run_id, resume="allow",
                    name=run_name(row), group=row.get("study"), job_type=row.get("task"),
                    config=redact(row.get("config") or {}), reinit=_reinit(wandb))
            finally:
                sys.argv = argv
        except Exception as e:  # noqa: BLE001 - wandb's errors come in many types
            self._fail(e)

    def log(self, values: dict[str, Any], step: int) -> None:
        """One training-curve row (curves.COLUMNS) at `step`."""
        if self.run is None or self.failed:
            return
        data = {(f"eval/{k}" if k in EVAL_KEYS else f"train/{k}"): v
                for k, v in values.items() if k != "step" and v is not None}
        try:
            self.run.log(data, step=step)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def end(self, row: dict[str, Any]) -> None:
        """The row as the run's summary, then finish. No status (interrupted with a
        checkpoint, no row written): marked preempting, so the relaunch resumes it."""
        if not self.enabled:
            return
        if self.run is None:
            self.start(row)  # a point that never trained: its run holds the row only
        run, self.run = self.run, None
        if run is None:
            return
        status = row.get("status") or "interrupted"
        try:
            run.summary.update({**{k: v for k, v in row.items()
                                   if k != "config" and v is not None}, "status": status})
            if row.get("status") is None and hasattr(run, "mark_preempting"):
                run.mark_preempting()
        except Exception as e:  # noqa: BLE001
            self._fail(e)
        try:  # finish() uploads/syncs: it can fail too, and must not lose the row either
            run.finish(exit_code=0 if status == "ok" else 1)
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _fail(self, e: BaseException) -> None:
        """One message per point, whatever failed (init, log, summary, finish)."""
        from benchbench.failures import short

        if not self.failed:
            print(f"benchbench: wandb logging failed ({short(e)}); the point goes on and the "
                  f"row is saved.", file=sys.stderr)
        self.failed = True


def _reinit(wandb: Any) -> Any:
    """wandb.init's reinit: "finish_previous" where wandb knows it (0.19.10+, which calls
    True deprecated and says so on every point), else True, its older spelling."""
    try:
        wandb.Settings(reinit="finish_previous")
    except Exception:  # noqa: BLE001 - an older wandb rejects the string (its own error type)
        return True
    return "finish_previous"

"""The one failure path: an exception -> (status, error text), and a row that records it.

Every task and every gpu_bench worker goes through `classify` (timm benchmark.py's single
`_try_run`, lightning-hydra-template's `task_wrapper`): the same fault gets the same status.
"""
from __future__ import annotations

from typing import Any

from benchbench.errors import BenchbenchError

# status of a point that ended early (results.STATUSES); "failed" covers everything else
OOM, DIVERGED, FAILED = "oom", "diverged", "failed"


class Diverged(RuntimeError):
    """The loss became NaN/inf; the run ends with status 'diverged'."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}; lower train.lr or raise warm-up")
        self.step = step


def short(e: BaseException, limit: int = 500) -> str:
    """`Type: first line of the message`, cut to `limit` characters (a row's error text)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:limit]


def classify(e: BaseException, *, batch_size: int | None = None,
             where: str = "") -> dict[str, Any]:
    """The row fields for a point that raised `e`: status, error and (diverged) the step.
    A BenchbenchError is the user's to fix, so its message is kept whole."""
    from benchbench.runtime import is_oom

    if isinstance(e, BenchbenchError):
        return {"status": FAILED, "error": str(e)}
    if isinstance(e, Diverged):
        return {"status": DIVERGED, "error": str(e), "diverged_step": e.step}
    if is_oom(e):
        at = f" at batch size {batch_size}" if batch_size is not None else ""
        ctx = f" ({where})" if where else ""
        return {"status": OOM, "error": f"out of memory{at}{ctx}; lower train.batch_size "
                                        f"(or measure.batch_size)"}
    return {"status": FAILED, "error": short(e)}


def is_user_error(e: BaseException) -> bool:
    """A bad config or input (exit code 2), not a crash of the run itself (exit code 1)."""
    return isinstance(e, BenchbenchError)

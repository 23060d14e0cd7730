"""wandb at the edge: one finished row -> one wandb run; a logging failure never loses the row."""
from __future__ import annotations

import sys
from typing import Any


def log_row(cfg: Any, row: dict[str, Any]) -> None:
    """Log `row` when wandb.enabled; any failure is one warning (the row is already saved)."""
    w = cfg.get("wandb") or {}
    if not w.get("enabled"):
        return
    try:
        import wandb
    except ImportError:
        print("benchbench: wandb.enabled=true but wandb is not installed: pip install "
              "'benchbench[wandb]'", file=sys.stderr)
        return
    from benchbench.failures import short
    from benchbench.results import redact

    run, failure = None, None
    try:
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
        print(f"benchbench: wandb logging failed ({short(failure)}); the row is saved.",
              file=sys.stderr)

"""Where a point runs on a cluster: SLURM/submitit job ids, the submitit log, submitit's signals."""
from __future__ import annotations

import os
import signal
import sys
from typing import Any

FIELDS = ("slurm_job_id", "slurm_array_task_id", "log_path")


def job_fields() -> dict[str, Any]:
    """The row's slurm_job_id (array jobs: <array job>_<task>, as squeue and sacct name them),
    slurm_array_task_id and log_path (the submitit log of this task); null outside them."""
    env = os.environ
    array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else env.get("SLURM_JOB_ID")
    return {"slurm_job_id": job or None, "slurm_array_task_id": task or None,
            "log_path": _submitit_log()}


def job_id() -> str | None:
    """This job's id across a requeue: the SLURM (array) job id, else submitit's local job
    id (its controller's pid); None outside a job."""
    return job_fields()["slurm_job_id"] or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or None


def submitit_bypasses_sigterm() -> bool:
    """This process is a submitit job whose SIGTERM handler is submitit's `bypass`: submitit
    ignores SIGTERM there (SLURM sends it on cancel or preemption, often before the USR2 that
    requeues), so training must checkpoint and go on, not exit."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    mod = sys.modules.get("submitit.core.job_environment")
    handler = signal.getsignal(signal.SIGTERM)
    return mod is not None and getattr(handler, "__func__", None) is mod.SignalHandler.bypass


def _submitit_log() -> str | None:
    if not (os.environ.get("SUBMITIT_EXECUTOR") and os.environ.get("SUBMITIT_FOLDER")):
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # noqa: BLE001 - provenance is never worth a lost row
        return None

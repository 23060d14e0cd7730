"""Where a row ran on a cluster: SLURM job and array task id, and the submitit log file."""
from __future__ import annotations

import os
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


def _submitit_log() -> str | None:
    if not (os.environ.get("SUBMITIT_EXECUTOR") and os.environ.get("SUBMITIT_FOLDER")):
        return None
    try:
        import submitit

        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # noqa: BLE001 - provenance is never worth a lost row
        return None

"""The task registry: one entry per conf/task/*.yaml, keyed by `task.name`.

A task is `run(cfg, row, *, rdir, run_id, identity, run_stage)`: it fills the point's row or
raises, and the point turns the exception into the row's status; `run_stage(cfg)` runs another
config as a whole point (transfer's pre-training), handed in so tasks never import point.
Adding a task is one module here, one line below and one conf/task/ file.
"""
from __future__ import annotations

from collections.abc import Callable

from benchbench.registry import Registry
from benchbench.tasks import measure, probe, replay, train, transfer

Task = Callable[..., None]

TASKS: Registry[Task] = Registry("task", "Tasks live in benchbench/tasks/ (one per conf/task/).")
TASKS.register("train", train.run)
TASKS.register("measure", measure.run)
TASKS.register("transfer", transfer.run)
TASKS.register("probe", probe.run)
TASKS.register("replay", replay.run)

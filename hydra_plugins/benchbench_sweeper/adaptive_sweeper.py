"""hydra/sweeper=adaptive: the `-m` grid as candidates, run in rounds that spend a budget
where the study's question is uncertain (benchbench.adaptive).

The grid is expanded exactly as hydra/sweeper=benchbench expands it (hydra.sweeper.params,
then the command line) and every point composed as its job will be; benchbench.adaptive.sweep
then prices the points, asks the planner for each round, writes the round's decisions to
<results.dir>/plan/decisions.jsonl and launches them through the configured launcher (basic,
joblib, submitit), until the budget is spent, the answer is narrow enough or no point helps.
A bad study key, a budget below the cheapest point or a replay pool with no matching row is
one line and exit code 2. No `from __future__ import annotations`: Hydra's plugin scan runs
this module before it is in sys.modules (see benchbench_sweeper.py).
"""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class AdaptiveSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.benchbench_sweeper.adaptive_sweeper.AdaptiveSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="adaptive",
                             node=AdaptiveSweeperConf, provider="benchbench")


class AdaptiveSweeper(BasicSweeper):
    """BasicSweeper's grid, launched in the rounds benchbench.adaptive.sweep.run chooses."""

    def sweep(self, arguments: list[str]) -> Any:
        return sweep_adaptively(self, arguments)


def sweep_adaptively(sweeper: BasicSweeper, arguments: list[str]) -> Any:
    """The adaptive sweep with `sweeper`'s config, launcher and Hydra context: this plugin's,
    or hydra/sweeper=benchbench's when a study file sets study.question (a study file cannot
    override the sweeper the primary config chose)."""
    from benchbench.errors import BenchbenchError

    try:
        return _sweep(sweeper, arguments)
    except BenchbenchError as e:  # the user's to fix: one line, no traceback
        print(f"benchbench: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _sweep(self: BasicSweeper, arguments: list[str]) -> Any:
    from benchbench.adaptive import sweep
    from benchbench.adaptive.log import PLAN
    from benchbench.launch_checks import _redact_file
    from benchbench.paths import abs_path
    from hydra_plugins.benchbench_sweeper.benchbench_sweeper import expand_grid

    assert self.config is not None and self.launcher is not None
    assert self.hydra_context is not None
    study = sweep.Study.of(self.config.study)  # before composing: a bad key is instant
    grid, loader, sweep_dir = expand_grid(self, arguments)
    _redact_file(sweep_dir / "multirun.yaml")  # no job may run to mask its secrets
    points = [(list(over), loader.load_sweep_config(master_config=self.config,
                                                    sweep_overrides=list(over)))
              for over in grid]
    cands = sweep.candidates(points, study.unit)
    plan_dir = Path(abs_path(str(self.config.results.dir))) / PLAN
    returns: list[Any] = []
    job_idx = [0]

    def launch(batch: list[list[str]]) -> list[dict[str, Any]]:
        results = self.launcher.launch(batch, initial_job_idx=job_idx[0])
        job_idx[0] += len(batch)
        returns.append(results)
        outs = []
        for r in results:
            try:
                outs.append(r.return_value or {})
            except Exception as e:  # noqa: BLE001 - a job that died: counted, the sweep goes on
                outs.append({"status": "lost", "error": f"{type(e).__name__}: {e}"})
        return outs

    sweep.run(cands, study, plan_dir, launch, say=lambda s: print(s, flush=True))
    return returns

"""Hydra's basic sweeper, minus the points already done: a relaunch submits only what is left.

`hydra/sweeper=benchbench` (the default of benchbench's config) expands the grid exactly as
the basic sweeper does (`hydra.sweeper.params`, then the command line), composes each point
as its job will, and hands only the points that still need a job to the configured launcher
(basic, joblib, submitit_local, submitit_slurm): a relaunch of a 200-point study with 5
failures submits 5 jobs. `hydra.sweeper.skip_done=false` submits every point (each still
skips itself when its row is there). With `study.question` set (a study file such as
study=fashion_mnist_adaptive) it runs the adaptive sweep instead, as hydra/sweeper=adaptive
does. The decision is benchbench.relaunch's; this module only
hooks it into Hydra, and imports nothing heavy (Hydra imports every plugin at start).
No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
sys.modules, where dataclasses cannot resolve string annotations.
"""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


@dataclass
class BenchbenchSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.benchbench_sweeper.benchbench_sweeper.BenchbenchSweeper"
    skip_done: bool = True  # false: submit every point of the grid


ConfigStore.instance().store(group="hydra/sweeper", name="benchbench",
                             node=BenchbenchSweeperConf, provider="benchbench")


class BenchbenchSweeper(BasicSweeper):
    """BasicSweeper whose grid is filtered by benchbench.relaunch.to_submit before launch."""

    def __init__(self, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None, skip_done: bool = True) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.skip_done = skip_done

    @staticmethod
    def _check_pool(cfgs: list[Any]) -> None:
        """task=replay: a pool with no row for any point of the grid is one line before
        anything launches (every job would write nothing)."""
        from benchbench.errors import BenchbenchError
        from benchbench.relaunch import check_pool

        try:
            check_pool(cfgs)
        except BenchbenchError as e:
            print(f"benchbench: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        if self.config.get("study", {}).get("question") is not None:  # a study file's ask
            from hydra_plugins.benchbench_sweeper.adaptive_sweeper import sweep_adaptively

            return sweep_adaptively(self, arguments)
        grid, loader, sweep_dir = expand_grid(self, arguments)
        if self.skip_done or str(self.config.task.name) == "replay":
            composed = {tuple(o): loader.load_sweep_config(master_config=self.config,
                                                           sweep_overrides=list(o))
                        for o in grid}  # each point once: the pool check and to_submit
            self._check_pool(list(composed.values()))
        if self.skip_done:
            from benchbench.relaunch import to_submit

            grid = to_submit(grid, lambda over: composed[tuple(over)], sweep_dir)
        else:
            self.validate_batch_is_legal(grid)
        self.overrides = (list(self.split_overrides_to_chunks(grid, self.max_batch_size))
                          if grid else [])
        self.batch_index = 0
        returns = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # a failed job raises here, as in BasicSweeper
            initial_job_idx += len(batch)
            returns.append(results)
        return returns


def expand_grid(sweeper: BasicSweeper, arguments: list[str]) -> tuple[list[list[str]], Any, Path]:
    """The basic sweeper's grid (hydra.sweeper.params, then the command line), its config
    loader, and the sweep dir with multirun.yaml saved in it (both benchbench sweepers)."""
    assert sweeper.config is not None and sweeper.hydra_context is not None
    loader = sweeper.hydra_context.config_loader
    parser = OverridesParser.create(config_loader=loader)
    overrides = parser.parse_overrides([*sweeper._parse_config(), *arguments])
    grid = [p for batch in sweeper.split_arguments(overrides, None) for p in batch]
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / "multirun.yaml")
    return grid, loader, sweep_dir

"""task=probe: few-shot linear probe of a checkpoint (init.checkpoint) on data=..., no training."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError


def run(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
        identity: dict[str, Any], **_: Any) -> None:  # run_stage: unused
    from omegaconf import open_dict

    from benchbench.tasks.train import checkpoint_ref, fit, init_state

    ref = (cfg.get("init") or {}).get("checkpoint")
    if not ref:
        raise ConfigError("task=probe needs init.checkpoint=<run_id | path | timm:name>.")
    state = init_state(cfg, checkpoint_ref(ref), rdir, row)
    with_probe = cfg.copy()
    with open_dict(with_probe):
        with_probe.eval.fewshot = True
    fit(with_probe, row, data_cfg=cfg.data, tcfg=cfg.train, rdir=rdir, run_id=run_id,
        identity=identity, init_state=state, train_steps=False)

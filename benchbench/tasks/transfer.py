"""task=transfer: the paper's two stages in one point, pre-training then fine-tuning.

The pre-training is its own row (and checkpoint), reused by every fine-tune of the same
pre-training config; the fine-tune runs at the new task's data, resolution and recipe, and
the few-shot probe reads the frozen pre-trained features.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError


def run(cfg: Any, row: dict[str, Any], *, rdir: Path, run_id: str,
        identity: dict[str, Any], run_stage: Callable[[Any], dict[str, Any]]) -> None:
    """run_stage: point.run_task_to_row, handed in by the point (importing it here would
    close an import cycle point -> tasks -> transfer -> point)."""
    from benchbench import checkpoint, results
    from benchbench.tasks.train import fit
    from benchbench.transfer import load_state, resolve_checkpoint

    out = run_stage(pretrain_config(cfg))  # skipped when its row is already there
    if out["status"] not in ("ok", "skipped") or (
            out["status"] == "skipped" and out.get("prior_status") != "ok"):
        ended = out.get("prior_status") or out["status"]
        raise ConfigError(f"pre-training {out['run_id']} ended {ended}: "
                          f"{out.get('error')}; fix it first (its row is in {out['row']}).")
    pre_id = out["run_id"]
    pre_row = results.read_row(results.row_path(rdir, pre_id))
    try:  # results.checkpoint_dir, <results.dir>/ckpt, or where its row says they went
        final = resolve_checkpoint(pre_id, [rdir], [checkpoint.root(cfg)])
    except ConfigError:
        said = pre_row.get("weights_path") or checkpoint.run_dir(cfg, pre_id) / "final.pt"
        raise ConfigError(
            f"pre-training row {pre_id} exists but its weights ({said}) do not (it ran without "
            f"train.save_final=true, or they were moved or deleted); move its row away to "
            f"pre-train again."
        ) from None
    row.update(pretrain_run_id=pre_id, pretrain_dataset=pre_row.get("dataset"),
               pretrain_train_size=pre_row.get("train_size"),
               pretrain_flops=pre_row.get("train_flops"))
    ft = cfg.task.finetune
    row["image_size"] = int(ft.data.image_size)
    fit(cfg, row, data_cfg=ft.data, tcfg=ft.train, rdir=rdir, run_id=run_id,
        identity=identity, init_state=load_state(final))
    row["finetune_flops"] = row.get("train_flops")


def pretrain_config(cfg: Any) -> Any:
    """The pre-training stage's config: task=train on this point's model, data and train,
    its final weights kept, no probe (its run_id is the pre-training row's)."""
    from omegaconf import OmegaConf, open_dict

    pre = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    with open_dict(pre):
        pre.task = OmegaConf.create({"name": "train"})
        pre.train.save_final = True
        pre.eval.fewshot = False
        pre.init.checkpoint = None
    return pre

"""Failed rows that a later fix superseded: they do not count against the study (issue 23).

Rule: a not-ok row is superseded when a row of the same point (its config apart from
INPUT_KEYS, seed included) is ok, or when its config was refused before it ran
(error_type ConfigError). The report leaves them out and names them in its summary.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from benchbench.results import identity_config


def _drop_path(cfg: Mapping[str, Any], path: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    out = dict(cfg)
    if not rest:
        out.pop(head, None)
    elif isinstance(out.get(head), Mapping):
        out[head] = _drop_path(out[head], rest)
    return out


# Where a point's inputs are and what they hold: a run that failed before the user fixed them
# (an empty class folder, a checkpoint not found until init.results_dirs) is the same point.
INPUT_KEYS = tuple(f"{pre}{k}" for pre in ("", "task.finetune.")
                   for k in ("data.fingerprint", "data.root", "init.results_dirs"))


def _input_free_key(row: Mapping[str, Any]) -> str | None:
    cfg = row.get("config")
    if not (isinstance(cfg, Mapping) and cfg):
        return None
    blob: Any = identity_config(cfg)
    for path in INPUT_KEYS:
        blob = _drop_path(blob, path)
    return json.dumps(blob, sort_keys=True, default=str)


def superseded(df: pd.DataFrame) -> pd.Series:
    """Rows that failed on input the user then fixed, so they do not count against the
    study: a not-ok row whose point (its config apart from INPUT_KEYS, seed included) has an
    ok row, and a row whose config was refused when the run started (error_type
    ConfigError: nothing ran; a config error is not a study result)."""
    if df.empty:
        return pd.Series(False, index=df.index)
    ok = df["status"] == "ok"
    keys = pd.Series([_input_free_key(r) for r in df.to_dict("records")], index=df.index)
    fixed = ~ok & keys.notna() & keys.isin(set(keys[ok].dropna()))
    refused = ~ok & (df["error_type"] == "ConfigError")
    return fixed | refused


def drop_superseded(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(rows without the superseded failures, the summary's line naming them)."""
    gone = superseded(df)
    if not gone.any():
        return df, []
    ids = ", ".join(f"`{r}`" for r in df.loc[gone, "run_id"].head(5)) + (
        ", ..." if gone.sum() > 5 else "")
    return df[~gone], [f"{int(gone.sum())} superseded failure(s) left out ({ids}): each failed "
                       f"on input that was then fixed (the same point has an ok row since: "
                       f"data or init.results_dirs fixed) or on a config refused before it "
                       f"ran (ConfigError); a failure the user fixed is not a result."]

"""task=replay replay.pool=DIR: the point's row is copied from an earlier results dir.

The match is the pool row of the same point under task=train: the run_id it would have
there, else a row whose identity config equals the point's minus the task (a pool that is
itself replayed, or written under another task name). The copy keeps every measurement and
the original's provenance; run_id, study, task and config are this point's, and
`replayed_from` names the pool row. With no match nothing is written (NoRowError): the
point is `missing`, as it would be had it never run.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError, NoRowError

OWN = ("run_id", "study", "task", "config", "schema_version")  # the point's, not the pool's
TRAIN_LIKE = (None, "train", "replay")  # rows that stand for a trained point


def run(cfg: Any, row: dict[str, Any], *, identity: dict[str, Any], **_: Any) -> None:
    pool = pool_dir(cfg)
    path, match = find(pool, identity)
    if match is None:
        raise NoRowError(
            f"task=replay: no row in replay.pool={pool} matches this point (its task=train "
            f"run_id would be {train_run_id(identity)}); nothing written, the point is missing.")
    row.update({k: v for k, v in match.items() if k not in OWN})
    # the original's wall time counts as this point's earlier segment: wall_s stays its cost
    row["prior_wall_s"] = match.get("wall_s")
    row["replayed_from"] = str(path)
    row["status"] = match["status"]


def pool_dir(cfg: Any) -> Path:
    from benchbench.paths import abs_path

    pool = (cfg.get("replay") or {}).get("pool")
    if not pool:
        raise ConfigError("task=replay needs replay.pool=<a results dir to copy rows from>.")
    path = Path(abs_path(str(pool)))
    if not (path / "runs").is_dir():
        raise ConfigError(f"replay.pool={pool} is not a results dir (no {path / 'runs'}); "
                          f"point it at a study's results folder.")
    return path


def _as_train(identity: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in identity.items() if k != "replay"}, "task": {"name": "train"}}


def train_run_id(identity: dict[str, Any]) -> str:
    """The run_id this point has under task=train (results.run_id_of: one definition)."""
    from benchbench.results import run_id_of

    return run_id_of(_as_train(identity))


def find(pool: Path, identity: dict[str, Any]) -> tuple[Path | None, dict[str, Any] | None]:
    """(path, row) of the pool row that stands for this point, an ok one first; an
    interrupted row holds nothing and never matches."""
    from benchbench import results
    from benchbench.errors import ResultsError

    path = results.row_path(pool, train_run_id(identity))
    try:
        row = results.read_row(path) if path.is_file() else None
    except ResultsError:
        row = None
    if row is not None and row["status"] != "interrupted":
        return path, row
    want = _key(_as_train(identity))
    found = [(p, r) for p, r in _rows(str(pool), _stamp(pool)) if r["status"] != "interrupted"
             and r.get("task") in TRAIN_LIKE and _key(r.get("config") or {}) == want]
    found.sort(key=lambda pr: pr[1]["status"] != "ok")
    return found[0] if found else (None, None)


def _key(config: dict[str, Any]) -> str:
    """A config's identity minus the task (and the replay pool), as one comparable string."""
    import json

    from benchbench.results import identity_config, redact

    ident = redact(identity_config(config))
    return json.dumps({k: v for k, v in ident.items() if k not in ("task", "replay")},
                      sort_keys=True, default=str)


def _stamp(pool: Path) -> float:
    runs = pool / "runs"
    return runs.stat().st_mtime_ns if runs.is_dir() else 0


@lru_cache(maxsize=8)
def _rows(pool: str, stamp: float) -> list[tuple[Path, dict[str, Any]]]:
    """The pool's rows, read once per process while its runs/ folder is unchanged."""
    from benchbench import results
    from benchbench.errors import ResultsError

    out = []
    for p in results.iter_row_files(pool):
        try:
            out.append((p, results.read_row(p)))
        except ResultsError:
            continue
    return out


def no_match(pool: Path | str, n: int) -> str:
    return (f"task=replay: no row in replay.pool={pool} matches any of the {n} points of the "
            f"grid; point replay.pool at the results dir of a study with these settings "
            f"(same data, models and budgets).")


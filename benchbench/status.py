"""`benchbench-status <launch overrides>`: the state of every point of a study, from its rows."""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUNNING_S = 600  # study.claims=false: a last.pt or curve this recent means running
STATES = ("ok", "failed", "oom", "diverged", "interrupted", "running", "missing", "broken",
          "error")


@contextmanager
def launch_grid(args: list[str]):
    """Inside Hydra's config context: (grid, hydra_args) of the launch with `args`, the
    study's hydra.sweeper.params then the command line's overrides, expanded as Hydra's
    basic sweeper expands them (one list of overrides per point); hydra.* overrides go to
    every point. status.points and plan.points compose the points from it."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from benchbench.launch_checks import CONF_DIR, _register_resolvers

    _register_resolvers()
    args = [a for a in args if a not in ("-m", "--multirun")]
    hydra_args = [a for a in args if a.lstrip("+~").startswith("hydra")]
    task_args = [a for a in args if a not in hydra_args]
    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=[a for a in args if "," not in a],
                       return_hydra_config=True)
        params = base.hydra.sweeper.get("params") or {}
        spec = [f"{k}={v}" for k, v in params.items()] + task_args
        (grid,) = BasicSweeper.split_arguments(parser.parse_overrides(spec), None)
        yield grid, hydra_args


def points(args: list[str]) -> list[tuple[list[str], Any]]:
    """(overrides, composed config) of each point the launch with `args` would run
    (launch_grid). A point whose config does not compose gets the exception in place of its
    config."""
    from hydra import compose

    out = []
    with launch_grid(args) as (grid, hydra_args):
        for over in grid:
            try:
                out.append((over, compose("config", overrides=[*hydra_args, *over],
                                          return_hydra_config=True)))
            except Exception as e:  # noqa: BLE001 - one bad point: listed as an error
                out.append((over, e))
    return out


def state_of(cfg: Any) -> dict[str, Any]:
    """{run_id, state, row, log, broken, claim, step} of one composed point (step: its
    curve's last row); a config that does not compose or resolve (an exception in
    place of cfg, or raised here) is state `error`.

    running: a live claim (its pid alive on this host, or its heartbeat fresh elsewhere);
    with study.claims=false, a last.pt or curve written in the last RUNNING_S. Else the
    row's status; a row that does not read (cut, no status, a bad value) is `broken`;
    no row but a checkpoint is `interrupted` (a relaunch resumes it); nothing is `missing`."""
    from benchbench import checkpoint, claims, curves, point, results
    from benchbench.errors import ResultsError

    try:
        if isinstance(cfg, BaseException):
            raise cfg
        run_id = results.run_id_of(point.resolved_config(cfg))
    except Exception as e:  # noqa: BLE001 - a bad point is a line, the listing goes on
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {"run_id": "-", "state": "error", "row": None, "log": None, "broken": None,
                "claim": None, "error": f"{type(e).__name__}: {why}"[:200]}
    rdir = Path(point.abs_path(str(cfg.results.dir)))
    path = results.row_path(rdir, run_id)
    st = claims.settings(cfg)
    holder = claims.live_holder(rdir, run_id, st)
    curve = curves.curve_path(rdir, run_id)
    out = {"run_id": run_id, "row": str(path), "log": None, "broken": None, "claim": holder,
           "step": _last_step(curve)}
    ckpt = checkpoint.run_dir(cfg, run_id) / "last.pt"  # results.checkpoint_dir too
    if holder is not None:
        out["log"] = holder.get("log_path")
    row = None
    if path.is_file():
        try:
            row = results.read_row(path)
        except ResultsError as e:
            out["broken"] = str(e)
        else:
            out["log"] = out["log"] or row.get("log_path")
    resumable = row is None or row["status"] == "interrupted"
    # without claims nothing says who runs it: a file written lately is the best sign
    running = holder is not None or (not st.enabled and resumable and any(
        p.is_file() and time.time() - p.stat().st_mtime < RUNNING_S for p in (ckpt, curve)))
    if running:
        state = "running"
    elif row is not None:
        state = row["status"]
    elif out["broken"]:
        state = "broken"
    else:
        state = "interrupted" if ckpt.is_file() else "missing"
    return {**out, "state": state}


def _last_step(curve: Path, tail: int = 4096) -> int | None:
    """The step of a training curve's last whole row (None: no curve yet). Reads only the
    file's last `tail` bytes: a long run's curve has many thousands of rows."""
    try:
        with curve.open("rb") as f:
            start = max(0, f.seek(0, 2) - tail)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines(keepends=True)
    except OSError:
        return None
    whole = [ln for ln in lines[1:] if ln.endswith("\n")]  # the header, or a cut first line
    first = whole[-1].split(",", 1)[0] if whole else ""
    return int(first) if first.isdigit() else None


def _where(s: dict[str, Any]) -> str:
    from benchbench import claims

    if s["state"] == "error":
        return s["error"]
    where = s["log"] or s["row"]
    if s["claim"] is not None:
        return f"{where}  ({claims.describe(s['claim']).removeprefix('running elsewhere (')}"
    return where


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench-status`."""
    from benchbench.errors import BenchbenchError

    ap = argparse.ArgumentParser(
        prog="benchbench-status",
        description="State of every point of a study: pass the overrides of the launch "
                    "(e.g. study=demo, or -m seed=0,1 model=vit_micro).")
    ap.add_argument("--only", default=None,
                    help="comma list of states (e.g. missing,failed): print only those points, "
                         "one line of overrides each, ready to paste after `benchbench`")
    ns, args = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    only = set(ns.only.split(",")) if ns.only else None
    if only and only - set(STATES):
        print(f"benchbench-status: error: unknown state(s) {', '.join(sorted(only - set(STATES)))}"
              f"; states are {', '.join(STATES)}.", file=sys.stderr)
        return 2
    try:
        from benchbench.launch_checks import check_args

        check_args(args)  # the launcher's checks: key typos and value types too
        grid = points(args)
        states = [(over, state_of(cfg)) for over, cfg in grid]
    except BenchbenchError as e:
        print(f"benchbench-status: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Hydra's compose errors: one line, not a traceback
        print(f"benchbench-status: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for over, s in states:
        if s["broken"]:
            print(f"benchbench-status: broken row skipped: {s['broken']}", file=sys.stderr)
        if only is not None:
            if s["state"] in only:
                print(" ".join(over))
            continue
        step = (f"  at step {s['step']}" if s["state"] in ("running", "interrupted")
                and s.get("step") else "")
        print(f"{s['state']:<11} {s['run_id']}  {' '.join(over)}  {_where(s)}{step}")
    if only is None:
        counts = Counter(s["state"] for _, s in states)
        print(f"{len(states)} points: " + ", ".join(f"{counts[k]} {k}" for k in STATES
                                                    if counts[k]))
        from benchbench.report.tuning import status_lines  # lr/wd chosen at a grid edge

        for line in status_lines(s["row"] for _, s in states if s["state"] == "ok"):
            print(line)
        if grid and not isinstance(grid[0][1], BaseException):
            from benchbench import point
            from benchbench.adaptive.log import PLAN
            from benchbench.adaptive.log import status_lines as adaptive_lines

            plan_dir = Path(point.abs_path(str(grid[0][1].results.dir))) / PLAN
            for line in adaptive_lines(plan_dir, [s["run_id"] for _, s in states
                                                  if s["state"] == "missing"]):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

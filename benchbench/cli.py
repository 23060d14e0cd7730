"""Hydra entry point: `benchbench [overrides]` runs one point, `-m` or `study=<name>` a sweep.

Every point ends as one row (ok, failed, oom, diverged), so one bad point never stops a
sweep; finished points are skipped by run_id when a study is launched again. The point's
life is benchbench.point, its work a task in benchbench.tasks; this module checks the
overrides, calls Hydra and turns what happened into the exit code.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from benchbench.errors import BenchbenchError, ConfigError, closest_first

PKG_DIR = Path(__file__).resolve().parent
CONF_DIR = PKG_DIR / "conf"  # shipped in the package; the top-level conf/ and sweeps/ link here
# Config groups a user picks from on the command line; a typo is answered before Hydra runs.
GROUPS = ("model", "data", "train", "task", "study", "debug")


@dataclass
class Outcome:
    """What main() exits with; the single run or the sweep summary records it."""

    code: int = 0


# Hydra drops the task's return value and builds the summary callback itself, so main()
# lends them its Outcome for the length of the call (unset outside main: nothing recorded).
_OUTCOME: ContextVar[Outcome | None] = ContextVar("benchbench_outcome", default=None)


def _record(code: int) -> None:
    outcome = _OUTCOME.get()
    if outcome is not None:
        outcome.code = code


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("bb_uid"):
        # Unique per launch: log dirs named by time alone collide (Hydra #1817, #2925).
        uid = uuid.uuid4().hex[:6]
        OmegaConf.register_new_resolver("bb_uid", lambda: uid)


def group_options(group: str) -> list[str]:
    d = CONF_DIR / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_overrides(argv: list[str]) -> None:
    """Unknown group options (model=vit_xx) -> one clear error, closest names first."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, _, val = arg.partition("=")
        key = key.lstrip("+~")
        if key not in GROUPS or not val:
            continue
        valid = group_options(key)
        for choice in val.split(","):
            choice = choice.strip()
            if choice in ("null", "") or choice in valid:
                continue
            opts = closest_first(choice, valid)
            hint = f" Did you mean '{opts[0]}'?" if opts else ""
            raise ConfigError(
                f"unknown {key} '{choice}'.{hint} Valid {key} options: {', '.join(opts)} "
                f"(files in {'sweeps/' if key == 'study' else f'conf/{key}/'})."
            )


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or "verbose=true" in argv
    try:
        check_overrides(argv)
    except BenchbenchError as e:
        if verbose:
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        return 2
    _register_resolvers()
    outcome = Outcome()
    token = _OUTCOME.set(outcome)
    rank_tmp = None
    if int(os.environ.get("RANK") or 0) > 0:
        # torchrun: Hydra's run/sweep dirs are rank 0's; other ranks get a throwaway dir
        import tempfile

        rank_tmp = tempfile.mkdtemp(prefix=f"benchbench-rank{os.environ['RANK']}-")
        argv = [*argv, f"hydra.run.dir={rank_tmp}", f"hydra.sweep.dir={rank_tmp}"]
    old_argv = sys.argv
    # Hydra's argparse wants flags (-m, --cfg job) before the overrides
    flags = [a for a in argv if a.startswith("-")]
    sys.argv = ["benchbench", *flags, *[a for a in argv if not a.startswith("-")]]
    try:
        _hydra_entry()
    except KeyboardInterrupt as e:
        msg = str(e) or "interrupted"
        print(f"benchbench: {msg}", file=sys.stderr)
        return 130
    except SystemExit as e:  # Hydra exits 1 after printing its own (config) errors
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    except BenchbenchError as e:
        if verbose:
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        return 2
    finally:
        _OUTCOME.reset(token)
        sys.argv = old_argv
        if rank_tmp is not None:
            import shutil

            shutil.rmtree(rank_tmp, ignore_errors=True)
    return outcome.code


def _hydra_entry() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(hydra_task)()


def hydra_task(cfg: Any) -> dict[str, Any]:
    """The Hydra task function: one point -> one row. Never raises for a bad point.
    Returns the point's summary; a single run records its exit code for main()."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from benchbench.point import exit_code, run_point, verbose

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    job_num = hc.job.get("num", 0) if multirun else 0
    try:
        out = run_point(cfg, job_num=job_num, raise_errors=False)
    except BenchbenchError as e:  # e.g. the row cannot be written: one message, no traceback
        if verbose(cfg):
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        out = {"status": "failed", "error": str(e), "user_error": True}
    if multirun:
        if _is_main():  # one status file per point, not one per rank
            try:
                _redact_file(Path(hc.sweep.dir) / "multirun.yaml")
                _write_job_status(Path(hc.sweep.dir), job_num, out)
            except (OSError, BenchbenchError) as e:  # the summary counts it as lost
                print(f"benchbench: cannot write the sweep status of job {job_num}: {e}",
                      file=sys.stderr)
    else:
        _record(exit_code(out))
    return out


class SweepSummary(Callback):
    """Hydra callback: after a multirun, count ok / failed / skipped points from the
    per-job status files (jobs may have run in other processes or on other nodes)."""

    def on_multirun_end(self, config: Any, **_: Any) -> None:
        from collections import Counter

        from benchbench.point import abs_path

        if not _is_main():
            return
        sdir = Path(str(config.hydra.sweep.dir)) / "status"
        outs = []
        for p in sorted(sdir.glob("*.json")) if sdir.is_dir() else []:
            try:
                outs.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                outs.append({"status": "lost", "row": str(p)})
        counts = Counter(o.get("status", "lost") for o in outs)
        bad = [o for o in outs if o.get("status") not in ("ok", "skipped")]
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no points ran"
        print(f"benchbench: sweep done: {len(outs)} points: {summary}. "
              f"Rows in {abs_path(str(config.results.dir))}/runs", flush=True)
        for o in bad:
            print(f"  {o.get('status')}: {o.get('run_id')}: {o.get('error')}", file=sys.stderr)
        _record(1 if bad else 0)


def _is_main() -> bool:
    """Rank 0 of a distributed run, or a single process: the one that writes files."""
    from benchbench.distributed import is_main

    return is_main()


def _redact_file(path: Path) -> None:
    """Hydra's sweeper saves the whole config, overrides included, as multirun.yaml: mask
    the secrets in it (wandb.api_key=..., any *token*), as every row's config is masked."""
    from omegaconf import OmegaConf

    from benchbench.results import atomic_write_text, redact

    if not path.is_file():
        return
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    clean = redact(data)
    if clean != data:
        atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(clean)))


def _write_job_status(sweep_dir: Path, job_num: int, out: dict[str, Any]) -> None:
    from benchbench.results import atomic_write_text

    atomic_write_text(sweep_dir / "status" / f"{job_num}.json", json.dumps(out))


if __name__ == "__main__":
    # `python -m benchbench.cli` (torchrun): run the imported module, the one whose
    # SweepSummary Hydra instantiates, so both see the same Outcome
    from benchbench.cli import main as _main

    sys.exit(_main())

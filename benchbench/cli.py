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
import warnings
from collections import Counter
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


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """benchbench's own warnings as one line, `benchbench: warning: ...`: no path, line number
    or source line; other packages' warnings keep Python's format."""
    if str(filename).startswith(str(PKG_DIR)):
        return f"benchbench: warning: {message}\n"
    return _PY_FORMAT(message, category, filename, lineno, line)


_PY_FORMAT = warnings.formatwarning


def _register_resolvers(*, fresh: bool = False) -> None:
    from omegaconf import OmegaConf

    if fresh or not OmegaConf.has_resolver("bb_uid"):
        # Unique per launch: log dirs named by time alone collide (Hydra #1817, #2925), and
        # so do two launches in one process within a second (a relaunch with nothing to run)
        uid = uuid.uuid4().hex[:6]
        OmegaConf.register_new_resolver("bb_uid", lambda: uid, replace=True)


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


def check_args(argv: list[str]) -> None:
    """The override checks `benchbench` and `benchbench-status` share: group options, key
    typos, value types and Hydra's quoting, each one ConfigError."""
    from benchbench.overrides import check_keys

    check_overrides(argv)
    check_keys(argv, CONF_DIR)


HELP = """\
benchbench: scaling studies of image classifiers (ViT, BiT ResNets, hybrids), the way the
Vision Transformer paper ran them. Each run trains and evaluates one model (or only measures
it), and writes one result row, results/<study>/runs/<run_id>.json; benchbench-report turns
the rows into Pareto plots, equal-compute tables and scaling fits.

Usage: benchbench [group=option ...] [key=value ...]      one run
       benchbench -m key=a,b ...  |  benchbench study=NAME   a sweep (one row per point)

Groups (pick one option each):
{groups}
Common keys:
  data.train_size=N  data.image_size=N  data.root=PATH  model.patch_size=N
  train.epochs=N | train.steps=N | train.flops=F      the training budget
  results.dir=PATH    where rows go (default results/<study>)
  device=auto|cpu|cuda  seed=N  eval.fewshot=true  debug=smoke (every point, 2 steps)
  study.retry_failed=true   run failed points of a study again

benchbench --cfg job [overrides]   prints the resolved config (every key there is)
benchbench-report RESULTS_DIR      plots, tables and report.md from the rows
README: {readme}
"""


def help_text() -> str:
    import textwrap

    lines = []
    for g in GROUPS:
        lines += textwrap.wrap(", ".join(group_options(g)), width=90,
                               initial_indent=f"  {g + '=':<8} ", subsequent_indent=" " * 11)
    readme = PKG_DIR.parent / "README.md"
    where = str(readme) if readme.is_file() else (
        "README.md of the source; installed, it is the package description: python -c "
        "\"import importlib.metadata as m; print(m.metadata('benchbench')['Description'])\"")
    return HELP.format(groups="\n".join(lines) + "\n", readme=where)


def check_results_dir(argv: list[str]) -> None:
    """results.dir=PATH must be a folder we can write (Hydra's log dir goes there first and
    would end in a chained traceback). Creates it, as the run would."""
    import tempfile

    from benchbench.errors import ResultsError

    for arg in argv:
        key, _, val = arg.partition("=")
        if key.lstrip("+") != "results.dir" or not val or "${" in val or "," in val:
            continue
        path = Path(os.path.expanduser(val))
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".benchbench-write-test-"):
                pass
        except OSError as e:
            raise ResultsError(
                f"cannot write the rows to results.dir={val} ({e.strerror or e}"
                f"{': ' + str(e.filename) if getattr(e, 'filename', None) else ''}); "
                f"set results.dir=<a writable folder>."
            ) from None


# Hydra flags whose value may be the next argument (`--cfg job`); --info's value is optional.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(flags, overrides) of argv, each flag kept with its separate value: `model=x --cfg job`
    -> (['--cfg', 'job'], ['model=x'])."""
    flags: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            overrides.append(arg)
        else:
            flags.append(arg)
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("-") and (
                    arg in _VALUE_FLAGS or (arg in ("--info", "-i") and nxt in _INFO_CHOICES)):
                flags.append(nxt)
                i += 1
        i += 1
    return flags, overrides


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or "verbose=true" in argv
    if "--help" in argv or "-h" in argv:
        print(help_text(), end="")
        return 0
    try:
        from benchbench.overrides import check_launcher, check_modes

        check_modes(argv)
        check_args(argv)
        if not any(a.split("=")[0] in ("--cfg", "-c", "--info", "-i") for a in argv):
            check_launcher(argv, CONF_DIR)
            try:
                check_results_dir(argv)
            except BenchbenchError:
                from benchbench.relaunch import done_without_writing

                done = done_without_writing(argv)  # every point done: nothing to write
                if done is None:
                    raise
                print(f"{done} (results.dir is read-only; nothing written)")
                return 0
    except BenchbenchError as e:
        if verbose:
            traceback.print_exc()
        print(f"benchbench: error: {e}", file=sys.stderr)
        return 2
    _register_resolvers(fresh=True)
    warnings.formatwarning = _format_warning  # a job process (submitit) sets it in hydra_task
    outcome = Outcome()
    token = _OUTCOME.set(outcome)
    rank_tmp = None
    if int(os.environ.get("RANK") or 0) > 0:
        # torchrun: Hydra's run/sweep dirs are rank 0's; other ranks get a throwaway dir
        import tempfile

        rank_tmp = tempfile.mkdtemp(prefix=f"benchbench-rank{os.environ['RANK']}-")
        argv = [*argv, f"hydra.run.dir={rank_tmp}", f"hydra.sweep.dir={rank_tmp}"]
    old_argv = sys.argv
    flags, overrides = split_flags(argv)  # Hydra's argparse wants flags before the overrides
    sys.argv = ["benchbench", *flags, *overrides]
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
        warnings.formatwarning = _PY_FORMAT
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

    warnings.formatwarning = _format_warning  # also in a launcher's own job process
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
        from benchbench.paths import abs_path

        if not _is_main():
            return
        sdir = Path(str(config.hydra.sweep.dir)) / "status"
        outs = []
        for p in sorted(sdir.glob("*.json")) if sdir.is_dir() else []:
            try:
                outs.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                outs.append({"status": "lost", "row": str(p)})
        from benchbench.relaunch import settled

        outs = settled(outs)  # a point another launch ran meanwhile: as its row says now
        counts = Counter(o.get("status", "lost") for o in outs)
        bad = [o for o in outs if o.get("status") not in ("ok", "skipped")
               or o.get("prior_status", "ok") != "ok"]
        summary = ", ".join(f"{n} {s}" + (_why_skipped(outs) if s == "skipped" else "")
                            for s, n in sorted(counts.items())) or "no points ran"
        print(f"benchbench: sweep done: {len(outs)} points: {summary}. "
              f"Rows in {abs_path(str(config.results.dir))}/runs", flush=True)
        for o in bad:
            st = o.get("status")
            if st == "skipped":
                st = f"skipped, already {o.get('prior_status')} (study.retry_failed=true runs it)"
            print(f"  {st}: {o.get('run_id')}: {o.get('error')}", file=sys.stderr)
        _record(1 if bad else 0)


def _why_skipped(outs: list[dict[str, Any]]) -> str:
    """' (3 same run as another point: CNNs have no patch size; 2 already ok)'."""
    ran = {o.get("run_id") for o in outs if o.get("status") != "skipped"}
    skipped = [o for o in outs if o.get("status") == "skipped"]
    same = [o for o in skipped if o.get("run_id") in ran]
    rest = [o for o in skipped if o.get("run_id") not in ran]
    parts = []
    if same:
        why = ": CNNs have no patch size" if all(o.get("no_patch") for o in same) else ""
        parts.append(f"{len(same)} same run as another point{why}")
    by_prior = Counter(o.get("prior_status") for o in rest)
    parts += [f"{n} already {p} in the results dir" for p, n in sorted(by_prior.items())]
    return f" ({'; '.join(parts)})" if parts else ""


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

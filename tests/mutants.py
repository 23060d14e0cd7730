"""Mutation testing of the pure core (`make mutants`; not part of the test suite or CI).

    python tests/mutants.py [--mutmut BIN] [--sample N] MODULE=PYTEST-ARGS ...

For each module: copy the tracked files to a temp dir (the checkout is never mutated),
let mutmut 2 enumerate the module's mutants, then test every one (or every N-th, by
mutant id, with --sample N) against that module's own fast pytest selection. Prints the
score per module and each surviving mutant's diff. The temp copy is imported through
PYTHONPATH, so an editable install of another checkout does not interfere.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# pytest without conftest (no torch import) and with fixed hypothesis examples: a few
# seconds per mutant instead of ~20 on 2 cores; modules whose tests need the shared fixtures
# (torch ones: FLOP counting, subsets) name them with a leading "+conftest " in MUTANT_MODULES
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
          "--noconftest", "--hypothesis-seed=0"]


def copy_tree(dst: Path) -> None:
    """The working tree's files (tracked and untracked-not-ignored), symlinks as symlinks."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            (dst / f).symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst / f)


def mutmut(bin_: str, work: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(work), "OMP_NUM_THREADS": "1"}
    return subprocess.run([bin_, *args], cwd=work, env=env, capture_output=True, text=True,
                          check=check)


def run_module(bin_: str, module: str, selection: str, sample: int) -> tuple[int, int, list[str]]:
    args = PYTEST
    if selection.startswith("+conftest "):  # these tests use tests/conftest.py's fixtures
        args, selection = [a for a in PYTEST if a != "--noconftest"], selection[len("+conftest "):]
    runner = shlex.join(args) + " " + selection
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        work = Path(tmp)
        copy_tree(work)
        # 1. enumerate: with a runner that always passes every mutant is registered quickly
        mutmut(bin_, work, "run", "--paths-to-mutate", module, "--runner", "true", "--no-progress")
        db = sqlite3.connect(work / ".mutmut-cache")
        ids = [i for (i,) in db.execute("select id from mutant order by id")]
        db.execute("update mutant set status = 'untested'")
        db.execute("delete from miscdata where key in ('baseline_time_elapsed', 'hash_of_tests')")
        db.commit()
        db.close()
        chosen = ids[::sample]
        print(f"{module}: {len(ids)} mutants, testing {len(chosen)} "
              f"({'all' if sample == 1 else f'every {sample}th by id'}) with: {selection}",
              flush=True)
        for i in chosen:  # 2. each chosen mutant against the module's selection
            mutmut(bin_, work, "run", str(i), "--paths-to-mutate", module, "--runner", runner,
                   "--no-progress")
        db = sqlite3.connect(work / ".mutmut-cache")
        status = dict(db.execute("select id, status from mutant"))
        db.close()
        # ok_suspicious: killed, slowly; bad_timeout: ran 10x the baseline (a loop), killed
        survived = [i for i in chosen if status[i] in ("bad_survived", "untested", "skipped")]
        diffs = [f"--- mutant {i} ({status[i]})\n" + mutmut(bin_, work, "show", str(i)).stdout
                 for i in survived]
        return len(chosen), len(chosen) - len(survived), diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutmut", default=shutil.which("mutmut") or "mutmut")
    ap.add_argument("--sample", type=int, default=1, help="test every N-th mutant (1: all)")
    ap.add_argument("targets", nargs="+", help="MODULE=PYTEST-ARGS, e.g. "
                    "benchbench/report/pareto.py='tests/test_report_stats.py -k pareto'")
    a = ap.parse_args(argv)
    total = killed = 0
    lines = []
    for t in a.targets:
        module, _, selection = t.partition("=")
        n, k, diffs = run_module(a.mutmut, module, selection, a.sample)
        total, killed = total + n, killed + k
        lines.append(f"{module}: {k}/{n} killed")
        for d in diffs:
            print(d, flush=True)
        print(lines[-1], flush=True)
    print("\n".join(lines))
    print(f"mutation score: {killed}/{total} = {100 * killed / max(total, 1):.0f}% killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

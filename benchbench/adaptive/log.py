"""The adaptive sweep's two logs under <results.dir>/plan/: decisions.jsonl (one line per
chosen run, written before it trains) and rounds.jsonl (one line per round), and what
benchbench-status says of them. A leaf module: status imports it, and it imports nothing of
benchbench's that imports status."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PLAN = "plan"  # <results.dir>/plan/: the sweep's logs
DECISIONS, ROUNDS = "decisions.jsonl", "rounds.jsonl"


class Log:
    """plan/decisions.jsonl (one line per chosen run, written before it trains) and
    plan/rounds.jsonl (one line per round); appended, fsynced, a cut last line skipped."""

    def __init__(self, plan_dir: Path):
        self.dir = plan_dir
        self.decisions = plan_dir / DECISIONS
        self.rounds = plan_dir / ROUNDS

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        out = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the line a kill cut short: it launched nothing
        return out

    def append(self, path: Path, records: list[dict[str, Any]]) -> None:
        from benchbench.errors import ResultsError
        from benchbench.results import sanitize

        text = "".join(json.dumps(sanitize(r), default=str) + "\n" for r in records)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size and not path.read_bytes().endswith(b"\n"):
                    text = "\n" + text  # after a cut line, start a fresh one
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise ResultsError(f"cannot write {path}: {e.strerror or e}; set results.dir=<a "
                               f"writable folder>.") from None

    def last_round(self) -> int:
        return max((int(r.get("round") or 0) for p in (self.decisions, self.rounds)
                    for r in self.read(p)), default=0)


def money(x: float, unit: str) -> str:
    return f"{x:.4g} FLOPs" if unit == "flops" else f"{x / 3600:.4g} device-h"


def status_lines(plan_dir: Path, missing: list[str]) -> list[str]:
    """benchbench-status's summary of an adaptive sweep in this results dir: where its last
    round stopped, and which missing points it never chose (they are not unfinished work)."""
    log = Log(plan_dir)
    rounds = log.read(log.rounds)
    if not rounds:
        return []
    last = rounds[-1]
    decided = {d.get("run_id") for d in log.read(log.decisions)}
    unit = str(last.get("unit") or "flops")
    spent = (f"spent {money(float(last['spent']), unit)} of "
             f"{money(float(last['budget']), unit)}"
             if isinstance(last.get("spent"), int | float)
             and isinstance(last.get("budget"), int | float) else "")
    where = (f"stopped after round {last.get('round')}: {last['stop']}" if last.get("stop")
             else f"at round {last.get('round')} (not stopped: a sweep running or killed)")
    out = [f"adaptive sweep ({log.rounds}): {where}; {len(decided)} run(s) decided"
           + (f", {spent}" if spent else "")]
    never = [m for m in missing if m not in decided]
    if never:
        out.append(f"{len(never)} missing point(s) were never chosen by the sweep: not "
                   f"unfinished work (a relaunch with a larger budget may choose them)")
    return out

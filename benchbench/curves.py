"""Training curves: `<results.dir>/metrics/<run_id>.csv`, a heartbeat line for logs and live values.

`CurveWriter` owns the file (a resumed run appends; a cut last line and rows logged after
the checkpoint are dropped first). `Monitor` is what `train()` reports to every
`train.log_every` steps: it turns the interval's clocks into a row, writes it, prints one
progress line when no tqdm bar is shown, and hands the same values to a sink (wandb).
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchbench.errors import ConfigError

COLUMNS = ("step", "samples_seen", "loss", "lr", "img_per_s", "data_wait_frac", "grad_norm",
           "val_top1", "test_top1", "train_s")
DEFAULT_LOG_EVERY = 50


def curve_path(rdir: Path, run_id: str) -> Path:
    return Path(rdir) / "metrics" / f"{run_id}.csv"


def log_every(tcfg: Any) -> int:
    """train.log_every (steps between curve rows), checked; missing = DEFAULT_LOG_EVERY."""
    v = tcfg.get("log_every", DEFAULT_LOG_EVERY)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"train.log_every must be a whole number of steps >= 1, got {v!r}.")
    return v


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return v


class CurveWriter:
    """One CSV file of curve rows, one flushed line per row (a crash loses at most a partial
    line). Write failures (full disk, read-only folder) are one message; training goes on."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f: io.TextIOBase | None = None
        self._broken = False

    def open(self, start: int) -> None:
        """Start the file: rows of steps <= `start` (the checkpoint a resumed run starts from)
        are kept, a cut last line and anything later dropped; `start`=0 starts afresh."""
        try:
            keep = self.kept_rows(start) if start > 0 else []
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(keep)
            os.replace(tmp, self.path)
            self._f = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()
        except OSError as e:
            self._fail(e)

    def kept_rows(self, start: int) -> list[dict[str, str]]:
        """The file's complete rows with step <= `start` (unreadable lines are dropped)."""
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        if not text.endswith("\n"):  # the previous segment died inside a line
            text = text[:text.rfind("\n") + 1]
        keep = []
        for r in csv.DictReader(io.StringIO(text)):
            try:
                if int(r.get("step") or "") <= start:
                    keep.append(r)
            except ValueError:
                continue
        return keep

    def write(self, values: dict[str, Any]) -> None:
        if self._f is None:
            return
        buf = io.StringIO()
        csv.writer(buf).writerow([_cell(values.get(k)) for k in COLUMNS])
        try:
            self._f.write(buf.getvalue())
            self._f.flush()
        except OSError as e:
            self._fail(e)

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as e:
                self._fail(e)
            self._f = None

    def _fail(self, e: OSError) -> None:
        if not self._broken:
            print(f"benchbench: cannot write the training curve {self.path} "
                  f"({e.strerror or e}); training goes on without it.", file=sys.stderr)
        self._broken = True
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
        self._f = None


class Monitor:
    """train()'s reporting: `due(step)` every `every` steps and at the last; `waited` and
    `paused` collect the interval's batch-wait and evaluation seconds; `report` makes the
    row (img/s and the wait fraction leave evaluation time out) and sends it on."""

    def __init__(self, *, every: int, total: int, global_batch: int, run_id: str = "",
                 writer: CurveWriter | None = None, lines: bool = False,
                 sink: Callable[[dict[str, Any], int], None] | None = None):
        self.every, self.total, self.global_batch = every, total, global_batch
        self.run_id, self.writer, self.lines, self.sink = run_id, writer, lines, sink
        self._last = 0
        self._t = self._t0 = time.perf_counter()
        self._wait = self._pause = self._prior_s = 0.0

    def due(self, step: int) -> bool:
        """`step` = optimizer steps done; the first step too, so a short run draws a line."""
        return step % self.every == 0 or step == self.total or step == 1

    def begin(self, start: int, prior_train_s: float = 0.0) -> None:
        if self.writer is not None:
            self.writer.open(start)
        self._last, self._prior_s = start, prior_train_s
        self._t = self._t0 = time.perf_counter()
        self._wait = self._pause = 0.0

    def waited(self, seconds: float) -> None:
        self._wait += seconds

    def paused(self, seconds: float) -> None:
        self._pause += seconds

    def report(self, step: int, *, loss: float | None, lr: float | None,
               grad_norm: float | None, **evals: float | None) -> dict[str, Any]:
        now = time.perf_counter()
        busy = max(now - self._t - self._pause, 1e-9)
        n = step - self._last
        row = {"step": step, "samples_seen": step * self.global_batch, "loss": loss, "lr": lr,
               "img_per_s": n * self.global_batch / busy if n > 0 else None,
               "data_wait_frac": min(1.0, self._wait / busy) if n > 0 else None,
               "grad_norm": grad_norm, "train_s": self._prior_s + now - self._t0, **evals}
        if self.writer is not None:
            self.writer.write(row)
        if self.lines:
            print(self.line(row, busy / n if n > 0 else None), flush=True)
        if self.sink is not None:
            self.sink(row, step)
        self._last, self._t = step, now
        self._wait = self._pause = 0.0
        return row

    def line(self, row: dict[str, Any], s_per_step: float | None) -> str:
        """benchbench: [run_id] step 400/2000 loss 1.234 lr 1.0e-03 512 img/s ETA 03:12"""
        from tqdm import tqdm

        parts = [f"benchbench: [{self.run_id}] step {row['step']}/{self.total}"]
        if row["loss"] is not None:
            parts.append(f"loss {row['loss']:.4g}")
        if row["lr"] is not None:
            parts.append(f"lr {row['lr']:.1e}")
        if row["img_per_s"] is not None:
            parts.append(f"{row['img_per_s']:.0f} img/s")
        parts += [f"{k} {row[k]:.4f}" for k in ("val_top1", "test_top1") if row.get(k) is not None]
        if s_per_step is not None and row["step"] < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - row['step']) * s_per_step)}")
        return " ".join(parts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

"""`benchbench-report <results dir> [more dirs] [--out DIR]`: rows -> plots, tables, report.md.

Writes into `<first results dir>/report/` (or --out). Works on a study that is still running;
failed rows are listed, broken row files are named (report.md and stderr) and never touched.
Exit codes: 0 ok, 2 missing/empty results dir or another user error (one line, no traceback).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchbench.errors import BenchbenchError, ResultsError
from benchbench.report import internals_section, plots, predictions, tables
from benchbench.report.compare import EqualCompute, equal_compute
from benchbench.report.html import write_html
from benchbench.report.load import (
    Study,
    aggregate_points,
    dataset_size_slice,
    load_study,
    task_counts,
)
from benchbench.report.pareto import frontiers
from benchbench.report.scaling import fit_families, fits_table
from benchbench.report.summary import findings
from benchbench.units import FLOPS_NOTE

FIT_BOOT_MAX = 200  # each bootstrap replicate is a least-squares fit; 200 bound the run time
INLINE_ROWS = 60  # longer tables are linked, not inlined, in report.md


@dataclass
class Report:
    out: Path
    study: Study
    plots: list[plots.Plot] = field(default_factory=list)
    tables: dict[str, list[Path]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    path: Path | None = None
    internals: internals_section.InternalsSection | None = None  # None: no row has internals
    predictions: predictions.Predictions | None = None  # "Predictions vs outcomes"


def build_report(
    dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    metric: str = "top1",
    compute: str = "train_flops",
    dataset: str | None = None,
    formats: Sequence[str] = plots.DEFAULT_FORMATS,
    n_boot: int = 1000,
    seed: int = 0,
    command: str | None = None,
    seed_sd: float | None = None,
) -> Report:
    study = load_study(dirs, metric=metric, compute=compute, dataset=dataset)
    out = _out_dir(Path(out) if out is not None else study.dirs[0] / "report")
    rep = Report(out=out, study=study)
    points = aggregate_points(study.train)
    if points.empty:
        points = points.assign(acc_std=pd.Series(dtype=float), n_seeds=pd.Series(dtype=int))

    data_points, data_note = dataset_size_slice(points)
    ec: EqualCompute | None = None
    fits_c, fits_d = {}, {}
    cpoints = points[points["compute"].notna()] if "compute" in points else points
    if not cpoints.empty:
        ec = equal_compute(cpoints, n_boot=n_boot, seed=seed,
                           seed_sd=None if seed_sd is None else seed_sd / 100)
        nfit = min(n_boot, FIT_BOOT_MAX)
        fits_c = fit_families(cpoints, "compute", on="frontier", n_boot=nfit, seed=seed)
    if not points.empty:
        nfit = min(n_boot, FIT_BOOT_MAX)
        if data_points["train_size"].nunique() >= 2:
            fits_d = fit_families(data_points, "train_size", on="envelope", n_boot=nfit, seed=seed)

    ylabel = f"{study.metric_label} accuracy [%]" + (f" on {study.dataset}" if study.dataset else "")
    xlabel = ("Total training compute [FLOPs]" if compute == "train_flops"
              else "Total pre-training compute [FLOPs]")
    chance = study.chance
    rep.plots = [
        plots.compute_accuracy(points, fits_c, out, formats, xlabel=xlabel, ylabel=ylabel,
                               chance=chance),
        plots.dataset_size(data_points, fits_d, out, formats, ylabel=ylabel, note=data_note,
                           chance=chance),
        plots.throughput_batch(study.measure, out, formats),
        plots.patch_size(points, out, formats, ylabel=ylabel, chance=chance),
        plots.wall_time(points, out, formats, ylabel=ylabel, chance=chance),
        plots.speed_memory(points, out, formats, ylabel=ylabel, chance=chance),
        plots.training_curves(study.train, study.dirs, out, formats),
    ]
    if ec is not None:
        rep.plots.append(plots.equal_compute_plot(ec, out, formats, study.metric_label,
                                                  chance=chance, compute=compute))
    else:
        rep.plots.append(plots.Plot("equal_compute", "Equal-compute comparison",
                                    skipped=plots.NO_TRAIN))

    tabs: list[tuple[str, str, tuple[pd.DataFrame, pd.DataFrame]]] = []
    if ec is not None:
        tabs.append(("equal_compute", "Equal-compute comparison",
                     tables.equal_compute_table(ec, study.metric)))
    fraw = fits_table({"compute": fits_c, "dataset size": fits_d})
    if not fraw.empty:
        tabs.append(("scaling_fits", "Scaling-law fits, E = a (x + d)^-b + c of error 1 - acc",
                     tables.fits_table_display(fraw)))
    front = _frontier_frame(points)
    if not front.empty:
        tabs.append(("frontier", "Pareto frontiers per family and overall",
                     tables.frontier_table(front, study.metric, compute)))
    tabs.append(("runs", "Runs (ok rows)", tables.runs_table(study)))
    if not study.not_ok.empty:
        tabs.append(("failed", "Runs that did not finish ok", tables.failed_table(study)))
    for name, caption, (raw, disp) in tabs:
        rep.tables[name] = tables.write_table(raw, disp, out, name, caption=caption)

    rep.findings = study.left_out + findings(study, points, ec, fits_c, fits_d, data_points)
    rep.internals = internals_section.build(study, out, formats)
    if rep.internals is not None:
        rep.findings += rep.internals.findings
    rep.predictions = predictions.build(study, out)
    if len(rep.predictions.scored):
        rep.findings.append(rep.predictions.finding())
        rep.tables["predictions"] = [out / f"predictions.{e}" for e in ("csv", "md", "tex")]
    rep.path = out / "report.md"
    rep.path.write_text(_markdown(rep, tabs, command))
    write_html(rep)  # report.html: the same study as one interactive, self-contained page
    return rep


def _out_dir(out: Path) -> Path:
    """The report folder, created; a path that is a file or cannot be created is a user error."""
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out} is a file, not a folder: name a folder for the report.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create the report folder {out} ({e.strerror}): pass a "
                           f"writable folder with --out.") from None
    return out


def _frontier_frame(points: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for axis, (col, mini) in tables.AXES.items():
        if col in points and points[col].notna().any():
            f = frontiers(points, col, minimize_x=mini)
            parts.append(f.assign(axis=axis))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _markdown(rep: Report, tabs, command: str | None) -> str:
    s = rep.study
    ok = s.df[s.df["status"] == "ok"]
    smoke = 0 if s.smoke is None else len(s.smoke)
    L = [f"# benchbench report: {', '.join(s.names)}", ""]
    if command:
        L += [f"Made by `{command}`.", ""]
    L += [f"Results: {', '.join(f'`{d}`' for d in s.dirs)}. "
          f"Rows: {len(ok)} ok" + (f" ({task_counts(ok)})" if len(ok) else "")
          + f", {len(s.not_ok)} not ok, {len(s.broken)} broken file(s)"
          + (f", {smoke} smoke row(s) left out" if smoke else "") + f". Accuracy: {s.metric_label}"
          + (f" on {s.dataset}" if s.dataset else "") + f"; compute axis: `{s.compute}`, in "
          f"{FLOPS_NOTE}.", ""]
    L += ["## Summary", ""] + [f"- {f}" for f in rep.findings] + [""]
    if s.notes:
        L += ["## Notes", ""] + [f"- {n}" for n in s.notes] + [""]
    if not s.not_ok.empty:
        L += ["## Runs that did not finish ok", ""]
        for r in s.not_ok.itertuples():
            err = str(r.error).strip().splitlines()[-1] if isinstance(r.error, str) and r.error.strip() else "no error recorded"
            L.append(f"- `{r.run_id}` {r.model or '?'} (seed {_int(r.seed)}): **{r.status}**: {err}")
        L.append("")
    if s.broken:
        L += ["## Broken row files (skipped, kept on disk)", ""]
        L += [f"- `{p}`: {why.removeprefix(f'{p}: ')}" for p, why in s.broken] + [""]
    L += ["## Plots", ""]
    for p in rep.plots:
        L += [f"### {p.title}", ""]
        if p.skipped:
            L += [f"*Not drawn: {p.skipped}.*", ""]
            continue
        img = _image(p)
        others = ", ".join(f"[{f.suffix[1:].upper()}]({f.name})" for f in p.files if f != img)
        if img is not None:
            L += [f"![{p.title}]({img.name})", ""]
        L += [f"{p.caption}" + (f" ({others})" if others else ""), ""]
    if rep.internals is not None:
        L += rep.internals.markdown()
    if rep.predictions is not None:
        L += rep.predictions.markdown()
    L += ["## Tables", ""]
    for name, caption, (_, disp) in tabs:
        L += [f"### {caption}", "", f"Files: [CSV]({name}.csv), [Markdown]({name}.md), "
              f"[LaTeX]({name}.tex).", ""]
        L += [tables.to_markdown(disp, max_rows=INLINE_ROWS) if len(disp) else "*No rows.*", ""]
    return "\n".join(L)


def _image(p: plots.Plot) -> Path | None:
    """The file report.md shows: the PNG, else the SVG (--formats svg); a PDF is linked only."""
    return p.png or next((f for f in p.files if f.suffix == ".svg"), None)


def _int(v) -> str:
    try:
        return str(int(v)) if v is not None and np.isfinite(float(v)) else "?"
    except (TypeError, ValueError):
        return "?"


def log_wandb(rep: Report) -> str:
    """Log the tables and PNGs to wandb (mode from WANDB_MODE, offline by default)."""
    try:
        import wandb
    except ImportError:
        return "wandb is not installed (pip install 'benchbench[wandb]'): nothing logged."
    try:
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "benchbench"),
                         name=f"report-{'+'.join(rep.study.names)}", job_type="report",
                         dir=str(rep.out), mode=os.environ.get("WANDB_MODE", "offline"))
        try:
            data = {}
            for name, paths in rep.tables.items():
                data[f"table/{name}"] = wandb.Table(dataframe=pd.read_csv(paths[0]))
            for p in rep.plots:
                if p.png is not None:
                    data[f"plot/{p.name}"] = wandb.Image(str(p.png), caption=p.caption)
            run.log(data)
        finally:
            run.finish()
    except Exception as e:  # a logger must not fail the report that was already written
        return f"wandb logging failed ({type(e).__name__}: {e}); the report files are complete."
    return "logged the tables and plots to wandb."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchbench-report",
        description="Aggregate result rows into plots, tables and report.md.")
    p.add_argument("dirs", nargs="+", metavar="RESULTS_DIR",
                   help="results dir(s) holding runs/<run_id>.json (several: studies together)")
    p.add_argument("--out", help="output folder (default: <first results dir>/report)")
    p.add_argument("--metric", default="top1", choices=["top1", "top5", "fewshot_top1"],
                   help="accuracy column (default top1)")
    p.add_argument("--compute", default="train_flops", choices=["train_flops", "pretrain_flops"],
                   help="compute axis (default train_flops)")
    p.add_argument("--dataset", help="evaluation dataset to compare on (default: the most common)")
    p.add_argument("--formats", default=",".join(plots.DEFAULT_FORMATS),
                   help="plot formats, comma-separated from png,pdf,svg (default png,pdf)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    p.add_argument("--seed-sd", type=float, default=None, metavar="POINTS",
                   help="seed-to-seed s.d. of accuracy in points, for studies with one seed "
                        "per point: lets differences be called (recorded in the report)")
    p.add_argument("--wandb", action="store_true", help="also log tables and plots to wandb")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    try:
        if bad or not formats:
            raise BenchbenchError(f"unknown plot format(s) {bad or formats}: use png, pdf and/or svg.")
        if args.n_boot < 0:
            raise BenchbenchError("--n-boot must be >= 0.")
        if args.seed_sd is not None and not (0 < args.seed_sd < 100):
            raise BenchbenchError(f"--seed-sd {args.seed_sd:g} is not a seed s.d. in accuracy "
                                  f"points: give a number above 0 and below 100, e.g. 0.5.")
        rep = build_report(args.dirs, out=args.out, metric=args.metric, compute=args.compute,
                           dataset=args.dataset, formats=formats, n_boot=args.n_boot,
                           seed=args.seed, seed_sd=args.seed_sd,
                           command=shlex.join(["benchbench-report", *argv]))
    except BenchbenchError as e:
        print(f"benchbench-report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the report folder is read-only or the disk is full
        print(f"benchbench-report: error: cannot write the report: {e.strerror or e} "
              f"({e.filename or args.out}): pass a writable folder with --out.", file=sys.stderr)
        return 2
    for _, why in rep.study.broken:
        print(f"benchbench-report: skipped broken row file {why}", file=sys.stderr)
    for why in rep.predictions.skipped if rep.predictions is not None else []:
        print(f"benchbench-report: skipped decisions line {why}", file=sys.stderr)
    if not rep.study.not_ok.empty:
        print(f"benchbench-report: {len(rep.study.not_ok)} run(s) not ok, listed in report.md",
              file=sys.stderr)
    if args.wandb:
        print(f"benchbench-report: {log_wandb(rep)}", file=sys.stderr)
    figs = rep.plots + (rep.internals.plots if rep.internals is not None else [])
    drawn = sum(1 for p in figs if not p.skipped)
    print(f"wrote {rep.path} ({drawn} plots, {len(rep.tables)} tables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

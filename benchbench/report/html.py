"""`report.html`: the study as one self-contained interactive page (no network, ever).

plotly's script and every number are inlined, so the file opens from disk, goes with a
paper's supplementary material, or sits on a static site. It holds compute vs accuracy
(hover: which run; click: its training curve and the command that reruns it), the
equal-compute panel with each value's basis, toggles for families, data sizes and patch
sizes, sortable run and frontier tables, the internals figures and report.md's summary.
"""
from __future__ import annotations

import base64
import html
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchbench.report import html_figures as hf
from benchbench.report.command import commands
from benchbench.report.load import aggregate_points, families_in
from benchbench.report.pareto import frontiers
from benchbench.report.plots.curves import read_curves

Report = Any  # report.cli's Report (out, study, plots, ...): not imported, so cli -> html only

TEMPLATE = "report_template.html"  # package data beside this module
CURVE_POINTS = 150_000  # loss samples kept over all runs: 1,000 runs stay under 10 MB
CURVE_MIN, CURVE_MAX = 40, 400  # per run, whatever the study's size
EVAL_COLS = ("val_top1", "test_top1")


def write_html(rep: Report) -> Path:
    """Write `<report dir>/report.html` from a built report; returns its path."""
    s = rep.study
    train = s.train.copy()
    if "compute" in train:
        train = train[pd.to_numeric(train["compute"], errors="coerce").notna()]
    points = aggregate_points(train) if len(train) else train
    front = (frontiers(points, "compute")
             if len(points) and points["compute"].notna().any() else pd.DataFrame())
    ylabel = f"{s.metric_label} accuracy [%]" + (f" on {s.dataset}" if s.dataset else "")
    fig_ca = hf.compute_accuracy(train, front, ylabel, f"Training compute ({s.compute}) [FLOPs]")
    ec_csv = rep.out / "equal_compute.csv"
    ec = pd.read_csv(ec_csv) if "equal_compute" in rep.tables and ec_csv.is_file() else None
    fig_ec, ec_note = hf.equal_compute(ec, s.metric_label)
    data = {"runs": _runs(train), "curves": _curves(train, s.dirs), "fig_ca": fig_ca,
            "fig_ec": fig_ec, "n_rows": int(len(train))}
    page = _fill(_template(), {
        "title": html.escape(f"benchbench report: {', '.join(s.names)}"),
        "plotlyjs": _plotly_js(),
        "data": hf.to_json(data),
        "header": _header(rep, len(train)),
        "summary": "".join(f"<li>{_md(f)}</li>" for f in rep.findings),
        "notes": "".join(f"<li>{_md(n)}</li>" for n in s.notes),
        "toggles": _toggles(train),
        "ec_note": html.escape(ec_note),
        "ec_table": _csv_table(ec_csv, "ectable") if ec is not None else "",
        "runs_table": _csv_table(rep.out / "runs.csv", "runstable"),
        "frontier_table": _csv_table(rep.out / "frontier.csv", "fronttable"),
        "internals": _internals(rep),
        "predictions": _predictions(rep),
    })
    path = rep.out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _template() -> str:
    return resources.files("benchbench.report").joinpath(TEMPLATE).read_text(encoding="utf-8")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


def _fill(template: str, parts: dict[str, str]) -> str:
    """One pass over `{{name}}` slots: inserted text (plotly.js, data) is never rescanned."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], template)


def _md(text: str) -> str:
    """The little Markdown of report.md's sentences: `code`, **bold**, *italic*, [link](x)."""
    t = html.escape(str(text), quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", t)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r"\1", t)  # links to files beside report.md


def _header(rep: Report, n_plotted: int) -> str:
    s = rep.study
    ok = int((s.df["status"] == "ok").sum())
    return (f"Results: {html.escape(', '.join(str(d) for d in s.dirs))}. {ok} ok row(s), "
            f"{len(s.not_ok)} not ok; {n_plotted} run(s) plotted ({html.escape(s.metric_label)}"
            + (f" on {html.escape(str(s.dataset))}" if s.dataset else "") + ").")


def _runs(train: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """run_id -> what a click shows: the label of its curve and the command that reruns it."""
    recs = {str(r["run_id"]): r for r in train.to_dict("records")}
    cmds = commands({k: r.get("config") for k, r in recs.items()},
                    {k: [f"results.dir={r['results_dir']}"] for k, r in recs.items()
                     if r.get("results_dir")})
    return {k: {"label": f"{r.get('model')} seed {hf._cat(r.get('seed'))}",
                "family": r.get("family"), "cmd": cmds[k]} for k, r in recs.items()}


def _short(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else float(f"{v:.4g}") for v in values]


def _curves(train: pd.DataFrame, dirs) -> dict[str, dict[str, list]]:
    """run_id -> {x: images seen, loss, and per evaluated column [x, accuracy]}: the loss
    thinned to every k-th row (and the last) so that a big study stays a small page, every
    evaluation kept."""
    curves = read_curves(train, dirs) if len(train) else {}
    n = int(np.clip(CURVE_POINTS // max(len(curves), 1), CURVE_MIN, CURVE_MAX))
    out = {}
    for rid, c in curves.items():
        x = pd.to_numeric(c["samples_seen"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        keep = np.zeros(len(x), dtype=bool)
        keep[::max(1, int(np.ceil(ok.sum() / n)))] = True
        keep[-1] = True
        keep &= ok
        loss = pd.to_numeric(c["loss"], errors="coerce").to_numpy(dtype=float)
        d: dict[str, list] = {"x": x[keep].astype(int).tolist(), "loss": _short(loss[keep])}
        for col in EVAL_COLS:
            v = pd.to_numeric(c[col], errors="coerce").to_numpy(dtype=float) if col in c else x * np.nan
            e = ok & np.isfinite(v)
            if e.any():
                d[col] = [x[e].astype(int).tolist(), _short(v[e])]
        out[rid] = d
    return out


def _toggles(train: pd.DataFrame) -> str:
    """Checkbox groups; each box's value is matched against a trace's meta in the page."""
    def group(name: str, title: str, items: list[tuple[str, str]]) -> str:
        boxes = "".join(f'<label><input type="checkbox" class="tog" data-axis="{name}" '
                        f'value="{html.escape(v)}" checked> {html.escape(lab)}</label>'
                        for v, lab in items)
        return f'<fieldset><legend>{title}</legend>{boxes}</fieldset>'

    if train.empty:
        return ""
    from benchbench import families

    fams = [(f, families.label(f)) for f in families_in(train)]
    sizes = sorted({hf._cat(v) for v in train["train_size"]}, key=_num_key)
    patches = sorted({hf._cat(v) for v in train["patch_size"]}, key=_num_key)
    return (group("family", "Families", fams)
            + group("size", "Training images", [(v, v) for v in sizes])
            + group("patch", "Patch size", [(v, "none (CNN)" if v == "none" else v)
                                            for v in patches]))


def _num_key(v: str) -> tuple[int, float, str]:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _cell(v: Any, col: str) -> tuple[str, str]:
    """(shown, sort key) of a CSV cell: numbers to 4 significant figures, FLOPs with a prefix."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–", ""
    if isinstance(v, int | float | np.number) and not isinstance(v, bool):
        from benchbench.units import fmt_flops

        f = float(v)
        shown = (fmt_flops(f) if "[FLOPs" in col
                 else str(int(f)) if f.is_integer() and abs(f) < 1e7 else f"{f:.4g}")
        return shown, repr(float(v))
    return str(v), str(v)


def _csv_table(path: Path, tid: str) -> str:
    """A table from one of the report's CSVs; a click on a header sorts by that column."""
    if not path.is_file():
        return "<p><em>No rows.</em></p>"
    df = pd.read_csv(path)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = [_cell(v, c) for v, c in zip(row, df.columns)]
        body.append("<tr>" + "".join(f'<td data-v="{html.escape(k)}">{html.escape(s)}</td>'
                                     for s, k in cells) + "</tr>")
    return (f'<table class="sortable" id="{tid}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _internals(rep: Report) -> str:
    """The internals figures (PNG, inlined as base64) with their captions."""
    if rep.internals is None:
        return ""
    parts = ['<section id="internals"><h2>What the models learned (paper Figure 7)</h2>']
    for p in rep.internals.plots:
        if p.skipped or p.png is None or not Path(p.png).is_file():
            continue
        b64 = base64.b64encode(Path(p.png).read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(p.title)}" src="data:image/png;base64,'
                     f'{b64}"><figcaption><b>{html.escape(p.title)}.</b> {_md(p.caption)}'
                     f'</figcaption></figure>')
    return "".join(parts) + "</section>"


def _predictions(rep: Report) -> str:
    """report.md's "Predictions vs outcomes": its text and the scored runs' table."""
    pred = getattr(rep, "predictions", None)
    if pred is None:
        return ""
    n = pred.coverage[1]
    parts = ['<section id="predictions"><h2>Predictions vs outcomes</h2>']
    parts += [f"<p>{_md(x.removeprefix('- '))}</p>" for x in pred.lines]
    if n:
        parts.append(f"<p><strong>{_md(pred.verdict())}.</strong></p>")
        parts.append(f'<div class="scroll">{_csv_table(rep.out / "predictions.csv", "predtable")}</div>')
    return "".join(parts) + "</section>"

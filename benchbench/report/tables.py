"""Tables as CSV (raw numbers), Markdown and LaTeX (booktabs; written here, so no jinja2).

Column names carry their units. Each builder returns (raw, display): `raw` holds numbers
for the CSV, `display` holds formatted strings for Markdown and LaTeX.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchbench.families import label as family_label
from benchbench.report.compare import EqualCompute
from benchbench.report.cost_findings import fmt_sig
from benchbench.report.evidence import COMPARED
from benchbench.report.load import METRIC_LABEL, Study, probe_data_label
from benchbench.units import fmt_flops

NA = "–"
GIB = 2**30
COL_GFLOPS = "forward [FLOPs/img]"  # FLOPs = 2 x MACs, attention included (units.FLOPS_NOTE)
COL_PFLOPS = "train compute [FLOPs]"
COL_PARAMS = "params [M]"
COL_IMG_S = "inference [img/s]"
COL_MEM = "peak memory [GiB]"


def fmt_sci(v: float, digits: int = 1) -> str:
    """1.0e12 (no '+', no leading zero in the exponent)."""
    if v is None or not np.isfinite(v):
        return NA
    m, e = f"{v:.{digits}e}".split("e")
    return f"{m}e{int(e)}"


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return NA
    if pd.isna(v):
        return NA
    if spec == "sci":
        return fmt_sci(float(v))
    if spec == "flops":
        return fmt_flops(float(v))
    if spec == "flops/img":
        return fmt_flops(float(v), per="img")
    if spec == "int":
        return f"{int(round(float(v))):d}"
    if spec == "str":
        return str(v)
    if spec.startswith("g"):
        return fmt_sig(float(v), int(spec[1:])) if np.isfinite(float(v)) else NA
    return format(float(v), spec)


def _display(raw: pd.DataFrame, specs: dict[str, str]) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for c in raw.columns:
        spec = specs.get(c, "str")
        out[c] = [_fmt(v, spec) for v in raw[c]]
    return out


def _drop_empty(raw: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    return raw[[c for c in raw.columns if c in keep or raw[c].notna().any()]]


def metric_col(metric: str) -> str:
    return f"{METRIC_LABEL.get(metric, metric)} [%]"


def runs_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per ok run (train and measure), every dataset."""
    df = study.df[study.df["status"] == "ok"].copy()
    df = df.sort_values(["task", "family", "model", "dataset", "train_size", "train_flops", "seed"],
                        key=lambda s: s.astype(str) if s.dtype == object else s, na_position="last")
    raw = pd.DataFrame({
        "run_id": df["run_id"],
        "study": df["study"],
        "task": df["task"],
        "family": df["family"].map(family_label),
        "model": df["model"],
        "dataset": df["dataset"],
        "train size [images]": df["train_size"],
        "seed": df["seed"],
        "image size [px]": df["image_size"],
        COL_PARAMS: df["params"] / 1e6,
        COL_GFLOPS: df["flops_per_image"],
        COL_PFLOPS: df["train_flops"],
        COL_IMG_S: df["infer_img_per_s"],
        COL_MEM: df["peak_mem_bytes"] / GIB,
        "max batch [images]": df["max_batch_size"],
        "top-1 [%]": df["top1"] * 100,
        "top-5 [%]": df["top5"] * 100,
        "few-shot top-1 [%]": df["fewshot_top1"] * 100,
        "few-shot data": probe_data_label(df),
        "wall [h]": df["wall_s"] / 3600,
        "MFU [%]": pd.to_numeric(df.get("mfu"), errors="coerce") * 100,
        "peak FLOP/s source": df.get("peak_flops_source"),
    })
    if raw["study"].nunique() <= 1:
        raw = raw.drop(columns="study")
    raw = _drop_empty(raw, keep=("run_id", "model")).reset_index(drop=True)
    specs = {"train size [images]": "int", "seed": "int", "image size [px]": "int",
             COL_PARAMS: "g3", COL_GFLOPS: "flops/img", COL_PFLOPS: "flops", COL_IMG_S: "g3",
             COL_MEM: "g3", "max batch [images]": "int", "top-1 [%]": ".1f",
             "top-5 [%]": ".1f", "few-shot top-1 [%]": ".1f", "wall [h]": "g2", "MFU [%]": "g3"}
    return raw, _display(raw, specs)


AXES = {  # frontier axis -> (points column, minimise x?)
    "compute": ("compute", True),
    "throughput": ("infer_img_per_s", False),
    "memory": ("peak_mem_bytes", True),
}


def frontier_table(front: pd.DataFrame, metric: str,
                   compute: str = "train_flops") -> tuple[pd.DataFrame, pd.DataFrame]:
    """`front`: concatenated `pareto.frontiers` with an `axis` column; `compute` names what
    its compute column holds (pre-training FLOPs for transfer studies)."""
    mcol = metric_col(metric)
    ccol = COL_PFLOPS if compute == "train_flops" else "pre-training compute [FLOPs]"
    raw = pd.DataFrame({
        "axis": front["axis"],
        "frontier of": front["frontier_of"].map(lambda f: "all" if f == "all" else family_label(f)),
        "model": front["model"],
        "family": front["family"].map(family_label),
        "train size [images]": front["train_size"],
        ccol: front["compute"],
        COL_IMG_S: front["infer_img_per_s"],
        COL_MEM: front["peak_mem_bytes"] / GIB,
        mcol: front["acc"] * 100,
        "s.d. [pts]": front["acc_std"] * 100,
        "seeds": front["n_seeds"],
    }).reset_index(drop=True)
    raw = _drop_empty(raw, keep=("axis", "model", mcol))
    specs = {"train size [images]": "int", ccol: "flops", COL_IMG_S: "g3", COL_MEM: "g3",
             mcol: ".1f", "s.d. [pts]": ".2f", "seeds": "int"}
    return raw, _display(raw, specs)


def equal_compute_table(ec: EqualCompute, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = METRIC_LABEL.get(metric, metric)
    p = ec.pairs[ec.pairs["acc_a"].notna() | ec.pairs["acc_b"].notna()]
    if "basis_a" in p:  # budgets where at least one of the two families was run
        p = p[p["basis_a"].isin(COMPARED) | p["basis_b"].isin(COMPARED)]
    raw = pd.DataFrame({
        "budget [FLOPs]": p["budget"],
        "A": p["family_a"].map(family_label),
        "B": p["family_b"].map(family_label),
        f"A {m} [%]": p["acc_a"] * 100,
        f"B {m} [%]": p["acc_b"] * 100,
        "A basis": p.get("basis_a"),
        "B basis": p.get("basis_b"),
        "called": p["called"].astype(bool) if "called" in p else False,
        "p": p.get("p"),
        "A - B [pts]": p["diff"] * 100,
        "A - B CI low [pts]": p["diff_lo"] * 100,
        "A - B CI high [pts]": p["diff_hi"] * 100,
        "B compute to match A [x]": p["multiplier"].where(p["multiplier"].notna(),
                                                          p.get("mult_bound")),
        "multiplier kind": p.get("mult_kind"),
        "multiplier CI low [x]": p["mult_lo"],
        "multiplier CI high [x]": p["mult_hi"],
        "min seeds A": p["min_seeds_a"],
        "min seeds B": p["min_seeds_b"],
        **_crossover_columns(ec, p),
    }).reset_index(drop=True)
    disp = _display(raw, {"budget [FLOPs]": "flops", f"A {m} [%]": ".1f", f"B {m} [%]": ".1f",
                          "A - B [pts]": "+.1f", "B compute to match A [x]": "g3",
                          "min seeds A": "int", "min seeds B": "int"})
    disp["A - B 95% CI [pts]"] = [_interval(lo, hi, "+.1f") for lo, hi in
                                  zip(raw["A - B CI low [pts]"], raw["A - B CI high [pts]"])]
    disp["multiplier 95% CI [x]"] = [_interval(lo, hi, "g3") for lo, hi in
                                     zip(raw["multiplier CI low [x]"], raw["multiplier CI high [x]"])]
    kind = raw["multiplier kind"].fillna("") if "multiplier kind" in raw else ""
    bound = {"<=": "≤ ", ">=": "≥ "}
    disp["B compute to match A [x]"] = [bound.get(k, "") + v if v != NA else v for k, v in
                                        zip(kind if len(kind) else [""] * len(disp),
                                            disp["B compute to match A [x]"])]
    disp["A-B sign change [FLOPs]"] = [_fmt(v, "flops") for v in raw["A-B sign change [FLOPs]"]]
    disp["sign change 95% CI [FLOPs]"] = [_interval(lo, hi, "flops") for lo, hi in zip(
        raw["sign change CI low [FLOPs]"], raw["sign change CI high [FLOPs]"])]
    disp["called"] = ["yes" if bool(v) else "no" for v in raw["called"]]
    disp["p"] = [_fmt(v, "g2") for v in raw["p"]]
    order = ["budget [FLOPs]", "A", "B", f"A {m} [%]", "A basis", f"B {m} [%]", "B basis",
             "A - B [pts]", "A - B 95% CI [pts]", "p", "called", "B compute to match A [x]", "multiplier 95% CI [x]",
             "min seeds A", "min seeds B", "A-B sign change [FLOPs]", "sign change 95% CI [FLOPs]"]
    return raw, disp[order]


def _crossover_columns(ec: EqualCompute, p: pd.DataFrame) -> dict[str, list[float]]:
    """Per pair, where A - B first changes sign (compare.equal_compute), on each of its rows."""
    c = ec.crossovers
    cols = {"A-B sign change [FLOPs]": "crossover", "sign change CI low [FLOPs]": "cross_lo",
            "sign change CI high [FLOPs]": "cross_hi"}
    idx = c.set_index(["family_a", "family_b"]) if not c.empty else None
    return {name: [float(idx.at[(a, b), col]) if idx is not None and (a, b) in idx.index
                   else np.nan for a, b in zip(p["family_a"], p["family_b"])]
            for name, col in cols.items()}


def _interval(lo, hi, spec: str) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NA
    return f"[{_fmt(lo, spec)}, {_fmt(hi, spec)}]"


def fits_table_display(raw_fits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`raw_fits` from `scaling.fits_table`."""
    if raw_fits.empty:
        return raw_fits, raw_fits
    raw = raw_fits.rename(columns={
        "axis": "x axis", "n_points": "points", "n_distinct_x": "distinct x",
        "heldout_x": "held-out x", "heldout_obs": "held-out error (obs)",
        "heldout_pred": "held-out error (pred)", "rmse_log": "RMSE (log E)",
    }).copy()
    raw["family"] = raw["family"].map(family_label)
    disp = _display(raw, {"points": "int", "distinct x": "int", "x_min": "sci", "x_max": "sci",
                          "a": "g3", "b": "g3", "c": "g3", "d": "g3", "RMSE (log E)": "g2",
                          "held-out x": "sci", "held-out error (obs)": "g3",
                          "held-out error (pred)": "g3"})
    disp["b 95% CI"] = [_interval(lo, hi, "g3") for lo, hi in zip(raw["b_lo"], raw["b_hi"])]
    disp["c 95% CI"] = [_interval(lo, hi, "g3") for lo, hi in zip(raw["c_lo"], raw["c_hi"])]
    disp["trustworthy"] = raw["trustworthy"].map({True: "yes", False: "no"})
    order = ["x axis", "family", "points", "distinct x", "b", "b 95% CI", "c", "c 95% CI", "a", "d",
             "held-out error (obs)", "held-out error (pred)", "trustworthy", "reason"]
    return raw, disp[order]


def failed_table(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = study.not_ok
    raw = pd.DataFrame({
        "run_id": df["run_id"], "status": df["status"], "model": df["model"],
        "dataset": df["dataset"], "seed": df["seed"],
        "error": df["error"].fillna("").map(lambda e: str(e).strip().splitlines()[-1][:200]
                                              if str(e).strip() else ""),
    }).reset_index(drop=True)
    return raw, _display(raw, {"seed": "int"})


def to_markdown(disp: pd.DataFrame, max_rows: int | None = None) -> str:
    """A GitHub Markdown table (strings as given; '|' escaped)."""
    rows = disp if max_rows is None else disp.head(max_rows)

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in disp.columns) + " |",
             "|" + "|".join("---" for _ in disp.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows.itertuples(index=False)]
    if max_rows is not None and len(disp) > max_rows:
        lines.append(f"\n*({len(disp) - max_rows} more rows in the CSV.)*")
    return "\n".join(lines)


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}", NA: "--"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(s))


def to_latex(disp: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); numeric-looking columns right-aligned."""
    def numeric(col) -> bool:
        vals = [v for v in disp[col] if v != NA]
        return bool(vals) and all(_looks_numeric(v) for v in vals)

    align = "".join("r" if numeric(c) else "l" for c in disp.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{tex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(tex_escape(c) for c in disp.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(v) for v in r) + r" \\" for r in disp.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _looks_numeric(v: str) -> bool:
    try:
        float(str(v).replace("e", "E"))
    except ValueError:
        return False
    return True


def write_table(raw: pd.DataFrame, disp: pd.DataFrame, out: Path, name: str,
                caption: str | None = None) -> list[Path]:
    """<name>.csv (raw numbers), <name>.md and <name>.tex (formatted)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.csv", out / f"{name}.md", out / f"{name}.tex"]
    raw.to_csv(paths[0], index=False)
    paths[1].write_text(to_markdown(disp) + "\n")
    paths[2].write_text(to_latex(disp, caption=caption, label=f"tab:{name}"))
    return paths

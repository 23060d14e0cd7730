"""benchbench-report on the committed rows of results/*/runs (copied to tmp): counting,
duplicates, smoke rows, user errors, FLOP units and what the figures show."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from benchbench.report.cli import main
from benchbench.report.load import aggregate_points, load_study, task_counts
from benchbench.units import fmt_count, fmt_flops

RESULTS = Path(__file__).resolve().parents[1] / "results"
FAST = ["--n-boot", "0", "--formats", "png"]


FIXTURES = Path(__file__).resolve().parent / "data"


def copy_rows(study: str, dest: Path, names: list[str] | None = None,
              root: Path = RESULTS) -> Path:
    """Copy the committed rows of `study` (or the files in `names`) into dest/runs."""
    (dest / "runs").mkdir(parents=True, exist_ok=True)
    for p in sorted((root / study / "runs").glob("*.json")):
        if names is None or p.name in names:
            shutil.copy(p, dest / "runs" / p.name)
    return dest


def demo_files() -> list[str]:
    return sorted(p.name for p in (RESULTS / "demo" / "runs").glob("*.json"))


def header(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("Results:"))


def test_fmt_flops_picks_readable_si_units():
    assert fmt_flops(35.1e9) == "35.1 GFLOPs"
    assert fmt_flops(999.96e9) == "1 TFLOPs"  # rounds up into the next prefix
    assert fmt_flops(5.5e6, per="img") == "5.5 MFLOPs/img"
    assert fmt_flops(float("nan")) == "–" and fmt_flops(None) == "–"
    assert [fmt_count(v) for v in (300, 1000, 2500, 6000, 1.2e6)] == ["300", "1k", "2.5k", "6k",
                                                                        "1.2M"]


def test_same_run_in_two_folders_counts_once_never_as_a_seed(tmp_path, capsys):
    files = demo_files()
    a = copy_rows("demo", tmp_path / "a", files[:10])
    b = copy_rows("demo", tmp_path / "b", files[5:])  # 5 rows in both folders
    assert main([str(a), str(b), "--out", str(tmp_path / "rep"), *FAST]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Rows: 15 ok" in header(md)
    assert "5 duplicate row(s) (same run_id) counted once" in md
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    assert len(runs) == 15 and runs["run_id"].is_unique
    study = load_study([a, b])
    assert aggregate_points(study.train)["n_seeds"].max() == 1  # never pooled as seeds
    assert "single seed" in md


def test_differing_copies_keep_the_newer_and_say_so(tmp_path):
    name = demo_files()[0]
    a = copy_rows("demo", tmp_path / "a", [name])
    b = copy_rows("demo", tmp_path / "b", [name])
    row = json.loads((b / "runs" / name).read_text())
    row["started_at"] = "2999-01-01T00:00:00+00:00"
    row["top1"] = 0.987
    (b / "runs" / name).write_text(json.dumps(row))
    study = load_study([a, b])
    assert len(study.df) == 1 and study.df["top1"].iloc[0] == pytest.approx(0.987)
    note = " ".join(study.left_out)
    assert "1 duplicate row(s)" in note and "differ" in note and row["run_id"] in note
    study = load_study([b, a])  # the order of the folders does not matter
    assert study.df["top1"].iloc[0] == pytest.approx(0.987)


def _smoke_copy(row: dict) -> dict:
    smoke = json.loads(json.dumps(row))
    smoke["config"]["max_steps"] = 2
    smoke["run_id"] = "5m0ke" + row["run_id"][5:]
    smoke["top1"], smoke["samples_seen"] = 0.1, 512
    return smoke


def test_smoke_rows_are_left_out_and_counted(tmp_path):
    d = copy_rows("demo", tmp_path / "demo")
    row = json.loads(next((d / "runs").glob("*.json")).read_text())
    smoke = _smoke_copy(row)
    (d / "runs" / f"{smoke['run_id']}.json").write_text(json.dumps(smoke))
    assert main([str(d), *FAST]) == 0
    md = (d / "report" / "report.md").read_text()
    assert "Rows: 15 ok" in header(md) and "1 smoke row(s) left out" in header(md)
    summary = md.split("## Summary")[1].split("##")[0]
    assert "1 smoke row(s)" in summary and "not a result" in summary
    assert smoke["run_id"] not in (d / "report" / "runs.csv").read_text()


def test_rows_under_results_smoke_are_smoke_rows(tmp_path):
    real = copy_rows("demo", tmp_path / "results" / "demo")
    smoke = copy_rows("demo", tmp_path / "results" / "smoke" / "demo", demo_files()[:3])
    for p in (smoke / "runs").glob("*.json"):  # same configs, other run_ids: not duplicates
        row = json.loads(p.read_text())
        row["run_id"] = "5m0ke" + row["run_id"][5:]
        p.write_text(json.dumps(row))
    study = load_study([real, smoke])
    assert len(study.df) == 15 and len(study.smoke) == 3
    only = load_study([smoke])  # a smoke folder alone is shown, labelled as smoke
    assert len(only.df) == 3 and "smoke row" in " ".join(only.left_out)


@pytest.mark.parametrize("args, words", [
    (["--compute", "pretrain_flops"], ["pretrain_flops", "task=transfer", "drop --compute"]),
    (["--metric", "fewshot_top1"], ["fewshot_top1", "eval.fewshot=true"]),
    (["--out", "FILE"], ["is a file, not a folder"]),
    (["--out", "/proc/x"], ["cannot create the report folder /proc/x", "--out"]),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, args, words):
    d = copy_rows("demo", tmp_path / "demo", demo_files()[:4])
    (tmp_path / "FILE").write_text("not a folder")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    assert main([str(d), *args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchbench-report: error:") and len(err.splitlines()) == 1
    assert "Traceback" not in err and all(w in err for w in words), err
    assert (tmp_path / "FILE").read_text() == "not a folder"


def test_rows_are_counted_by_task(tmp_path):
    d = copy_rows("transfer_demo", tmp_path / "t")
    assert main([str(d), "--compute", "pretrain_flops", *FAST]) == 0
    md = (d / "report" / "report.md").read_text()
    assert "Rows: 18 ok (9 train, 9 transfer)" in header(md)
    df = pd.DataFrame({"task": ["train", "probe", "transfer", "train", "measure"]})
    assert task_counts(df) == "2 train, 1 transfer, 1 probe, 1 measure"


@pytest.fixture(scope="module")
def demo_figures(tmp_path_factory):
    """The report of the demo's earlier rows (three data sizes, tests/data/), with what each
    figure showed when it was saved."""
    shown: dict[str, dict] = {}
    savefig = Figure.savefig

    def spy(fig, path, *a, **k):
        axes = list(fig.axes)
        legends = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        legends += [t.get_text() for ax in axes if ax.get_legend()
                    for t in ax.get_legend().get_texts()]
        shown[Path(path).stem] = {
            "axes": axes, "legend": legends,
            "titles": [ax.get_title() for ax in axes] + [fig._suptitle.get_text()
                                                          if fig._suptitle else ""],
            "lines": [ln.get_label() for ax in axes for ln in ax.lines],
        }
        return savefig(fig, path, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(Figure, "savefig", spy)
    d = copy_rows("demo_data_sizes", tmp_path_factory.mktemp("demo") / "demo", root=FIXTURES)
    try:
        assert main([str(d), "--n-boot", "100", "--formats", "png"]) == 0
    finally:
        mp.undo()
    return d, shown


def _ticks(ax, which: str) -> list[str]:
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    return [t.get_text() for t in axis.get_ticklabels()
            if t.get_text() and lo <= t.get_position()[0 if which == "x" else 1] <= hi]


def test_figures_have_no_paper_figure_numbers_in_titles(demo_figures):
    d, shown = demo_figures
    assert len(shown) == 6
    for name, s in shown.items():
        assert not any("Figure" in t for t in s["titles"]), (name, s["titles"])
    md = (d / "report" / "report.md").read_text()
    assert "### Accuracy vs training compute\n" in md and "As the paper's Figure 5" in md
    assert "FLOPs (2 x MACs, attention included)" in md


def test_accuracy_figures_draw_chance(demo_figures):
    _, shown = demo_figures
    for name in ("compute_vs_accuracy", "dataset_size_vs_accuracy", "time_vs_accuracy",
                 "equal_compute"):
        assert "chance (10%)" in shown[name]["legend"], name  # demo: 10 classes


def test_fit_legend_only_for_fits_drawn(demo_figures):
    """The demo has one compute fit (Hybrid), and it is not trustworthy: the legend says so,
    and no band is drawn for it."""
    _, shown = demo_figures
    s = shown["compute_vs_accuracy"]
    fits = [lab for lab in s["legend"] if "fit" in lab]
    assert fits == ["power-law fit\n(not trustworthy: no band)"]
    assert not any(isinstance(c, PolyCollection) for c in s["axes"][0].collections)


def test_axes_read_in_si_units_and_plain_counts(demo_figures):
    _, shown = demo_figures
    ax = shown["compute_vs_accuracy"]["axes"][0]
    assert {"100G", "1T"} <= set(_ticks(ax, "x"))
    ax = shown["dataset_size_vs_accuracy"]["axes"][0]
    assert _ticks(ax, "x") == ["1k", "2.5k", "6k"]
    right = shown["patch_size"]["axes"][1]
    assert right.get_ylabel() == "Forward compute [FLOPs/img]"
    labels = _ticks(right, "y")
    assert len(labels) >= 3 and all(lab.endswith("M") for lab in labels), labels


def test_multiplier_panel_readable_and_nothing_on_the_edge(demo_figures):
    _, shown = demo_figures
    ax = shown["equal_compute"]["axes"][2]
    assert len(_ticks(ax, "y")) >= 3
    lo, hi = ax.get_ylim()
    for ln in ax.lines:
        ys = [y for y in ln.get_ydata() if y == y]
        assert all(lo * 1.1 < y < hi / 1.1 for y in ys), (lo, hi, ys)

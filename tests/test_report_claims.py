"""Claims within what was measured (#24.1-5, #23.3, #23.12): every equal-compute value says
its basis, no verdict from one seed, no two sentences that contradict, tuning edges said,
confounds named, intervals that do not move with the bootstrap seed."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from benchbench.report.compare import equal_compute
from benchbench.report.evidence import basis, holm
from benchbench.report.load import aggregate_points
from benchbench.report.summary import equal_compute_findings, leader_findings, seeds_finding
from benchbench.report.tables import equal_compute_table

N_TEST = 10_000
FLOPS = re.compile(r"(\d+(?:\.\d+)?) (G|T|P)FLOPs")
SCALE = {"G": 1e9, "T": 1e12, "P": 1e15}


def _points(spec, sizes=None):
    """spec: [(family, compute, [acc per seed]), ...]; sizes: {(family, compute): n}."""
    rows = []
    for fam, c, accs in spec:
        for s, a in enumerate(accs):
            rows.append(dict(family=fam, model=f"{fam}-{c:.1e}", compute=c, seed=s, acc=a,
                             point=f"{fam}-{c}", eval_samples=N_TEST,
                             train_size=(sizes or {}).get((fam, c), 10_000)))
    return aggregate_points(pd.DataFrame(rows))


def _flops_in(sentence: str) -> list[float]:
    return [float(m) * SCALE[p] for m, p in FLOPS.findall(sentence)]


COMPARING = ("beats", "is ahead of", "tie", "needs", "changes sign", "Best family")


def test_a_family_run_only_up_to_3e11_is_never_compared_in_words_above_that():
    """Done-when of #24: ViT run to 3e11 FLOPs only; BiT to 3e12. Above 3e11 ViT's value
    is held flat: the table says `held`, nothing is called there, no sentence compares."""
    spec = [("vit", 1e11, [0.70, 0.71]), ("vit", 3e11, [0.75, 0.76]),
            ("bit", 1e11, [0.60, 0.61]), ("bit", 3e11, [0.70, 0.71]),
            ("bit", 1e12, [0.80, 0.81]), ("bit", 3e12, [0.85, 0.86])]
    ec = equal_compute(_points(spec), budgets=[1e11, 3e11, 1e12, 3e12], n_boot=200)
    p = ec.pairs.set_index("budget")
    assert p["basis_a"].tolist() == ["run", "run", "held", "held"]
    assert p["basis_b"].tolist() == ["run"] * 4
    assert not p.loc[[1e12, 3e12], "called"].any() and p.loc[[1e11, 3e11], "called"].all()
    assert p.loc[[1e12, 3e12], "multiplier"].isna().all()
    text = equal_compute_findings(ec) + leader_findings(ec)
    assert "ViT was not run beyond 300 GFLOPs: at 1 TFLOPs and 3 TFLOPs its value is that run held flat" \
        in " ".join(text)
    for s in text:
        if s.startswith("ViT was not run beyond"):
            continue
        for part in re.split(r"; then |\. ", s):
            if any(w in part for w in COMPARING) and "only BiT has a frontier run" not in part:
                assert all(x <= 3.3e11 for x in _flops_in(part)), part
    raw, disp = equal_compute_table(ec, "top1")
    assert {"A basis", "B basis", "called"} <= set(raw.columns) and "A basis" in disp
    assert raw["called"].tolist() == [True, True, False, False]


def test_basis_run_interpolated_held_none():
    fx = [1e11, 3e11, 3e12]
    assert basis(fx, [1.2e11, 2e11, 1e12, 5e12, 5e10]) == [
        "run", "interpolated", "none", "held", "none"]  # 3e11 -> 3e12 is 10x: a gap


def test_a_single_seed_study_calls_nothing():
    """Done-when of #24: one seed per point, even a 20-point gap is not called, and no
    multiplier or crossover is stated; a user's --seed-sd makes calls, and is said."""
    spec = [("vit", c, [a]) for c, a in ((1e11, 0.5), (3e11, 0.7), (1e12, 0.9))]
    spec += [("bit", c, [a]) for c, a in ((1e11, 0.7), (3e11, 0.72), (1e12, 0.74))]
    pts = _points(spec)
    ec = equal_compute(pts, budgets=[1e11, 3e11, 1e12], n_boot=200)
    assert not ec.pairs["called"].any()
    text = " ".join(equal_compute_findings(ec) + leader_findings(ec))
    assert "nothing is called: fewer than 2 seeds per point" in text
    for word in ("beats", "needs", "changes sign"):
        assert word not in text
    assert "no difference is called" in seeds_finding(pts, ec)[0]
    given = equal_compute(pts, budgets=[1e11, 3e11, 1e12], n_boot=200, seed_sd=0.005)
    assert given.pairs["called"].all()
    assert "--seed-sd" in seeds_finding(pts, given)[0]


def test_seed_sd_flag_is_checked_and_recorded(tmp_path, capsys):
    from benchbench.report import cli

    assert cli.main([str(tmp_path), "--seed-sd", "-1"]) == 2
    assert "--seed-sd -1 is not a seed s.d. in accuracy points" in capsys.readouterr().err
    assert cli._parser().parse_args(["d", "--seed-sd", "0.5"]).seed_sd == 0.5


def test_calls_hold_family_wise_over_the_budgets():
    """Holm: three budgets each at p ~ 0.03 are not all called; the summary counts them."""
    assert holm([0.01, 0.02, 0.04]).tolist() == [True, True, True]
    assert holm([0.03, 0.03, 0.03]).tolist() == [False, False, False]
    assert holm([0.001, np.nan, 0.03]).tolist() == [True, False, True]
    cs, accs = (1e11, 2e11, 4e11), (0.80, 0.82, 0.84)
    spec = [("vit", c, [a] * 3) for c, a in zip(cs, accs)]
    spec += [("bit", c, [a - 0.0216] * 3) for c, a in zip(cs, accs)]  # p ~ 0.03 at each
    ec = equal_compute(_points(spec), budgets=list(cs), n_boot=0, seed_sd=0.01)
    p = ec.pairs
    assert (p["p"] < 0.05).all() and not p["called"].any()
    text = " ".join(equal_compute_findings(ec))
    assert "compared at 3 budgets" in text and "family-wise 95% level (Holm over the 3 budgets)" in text


def test_no_two_sentences_contradict_and_no_bound_rests_on_an_uncalled_gap():
    """#24.3, the fashion_mnist_compute case: BiT 0.3 points ahead at 270 GFLOPs within
    noise must not become "BiT's smallest run already beats ViT" or "at most 0.98x"."""
    spec = [("vit", 8.8e10, [0.8136, 0.8090, 0.8180]), ("vit", 2.64e11, [0.8451, 0.8438, 0.8463]),
            ("vit", 8.8e11, [0.8320, 0.8310, 0.8330]),
            ("bit", 2.65e11, [0.8482, 0.8476, 0.8491]), ("bit", 7.94e11, [0.8663, 0.8684, 0.8693])]
    ec = equal_compute(_points(spec), budgets=[8.8e10, 2.7e11, 8.3e11], n_boot=200)
    text = equal_compute_findings(ec) + leader_findings(ec)
    joined = " ".join(text)
    assert "already beats" not in joined and "0.98" not in joined
    assert "At 830 GFLOPs" not in joined  # ViT's best there is its 264-GFLOP run held flat
    # per budget: a "beats" and a "within noise" never meet at the same budget
    said: dict[str, set] = {}
    for s in text:
        for b in FLOPS.findall(s):
            key = "".join(b)
            if "beats" in s:
                said.setdefault(key, set()).add("called")
            if "within noise" in s or "not called apart" in s:
                said.setdefault(key, set()).add("noise")
    assert all(len(v) == 1 for v in said.values()), said


def test_an_lr_at_a_grid_edge_is_said_with_the_value_to_add(tmp_path):
    """Done-when of #24: the validation-chosen lr at the edge of [1e-3, 3e-3] is said, with
    the value to add; a bracketed grid says nothing. benchbench-status says it too."""
    from benchbench.report.tuning import edge_findings, status_lines
    from benchbench.results import write_row

    def rows(lrs, best):
        out = []
        for lr in lrs:
            for s in range(2):
                cfg = {"model": {"name": "vit_micro"}, "train": {"lr": lr, "weight_decay": 0.05},
                       "seed": s}
                out.append(dict(config=cfg, model="ViT-micro/16", status="ok", seed=s,
                                top1=0.7, val_top1=0.8 if lr == best else 0.7))
        return pd.DataFrame(out)

    (line,) = edge_findings(rows([1e-3, 3e-3], 3e-3))
    assert "validation-chosen learning rate (train.lr) is at an edge" in line
    assert "ViT-micro/16: 0.003, the largest of [0.001, 0.003] (add 0.009)" in line
    (line,) = edge_findings(rows([1e-3, 3e-3], 1e-3))
    assert "0.001, the smallest of [0.001, 0.003] (add 0.00033)" in line
    assert edge_findings(rows([1e-3, 3e-3, 1e-2], 3e-3)) == []
    paths = []
    for i, r in enumerate(rows([1e-3, 3e-3], 3e-3).to_dict("records")):
        write_row(dict(r, run_id=f"r{i}", study="s", task="train", family="vit"), tmp_path)
        paths.append(str(tmp_path / "runs" / f"r{i}.json"))
    (line,) = status_lines(paths)
    assert "(add 0.009)" in line


def test_a_difference_between_different_training_set_sizes_says_so():
    """#24.5: at 110 GFLOPs ViT trained on 3,000 images and BiT on 1,000."""
    spec = [("vit", 1e11, [0.80, 0.81]), ("vit", 3e11, [0.84, 0.85]),
            ("bit", 1.1e11, [0.75, 0.76]), ("bit", 3e11, [0.82, 0.83])]
    sizes = {("vit", 1e11): 3000, ("vit", 3e11): 9000, ("bit", 1.1e11): 1000, ("bit", 3e11): 1000}
    ec = equal_compute(_points(spec, sizes), budgets=[1.1e11, 3e11], n_boot=0)
    text = " ".join(equal_compute_findings(ec))
    assert "Confound: ViT's value rests on 3,000 training images and BiT's on 1,000" in text \
        or "Confound: ViT's value rests on 3,000 and 9,000 training images and BiT's on 1,000" in text
    assert "ViT's compute varies with its training-set size and BiT's does not" in text
    same = equal_compute(_points(spec), budgets=[1.1e11, 3e11], n_boot=0)
    assert "Confound" not in " ".join(equal_compute_findings(same))


def _three_families_two_seeds():
    spec = []
    for fam, off in (("vit", 0.0), ("hybrid", 0.069), ("bit", 0.03)):
        for c, a in ((1e11, 0.50), (3e11, 0.60), (9e11, 0.66)):
            spec.append((fam, c, [a + off - 0.01, a + off + 0.012]))
    return _points(spec)


def test_intervals_do_not_move_with_the_bootstrap_seed():
    """#23.3: 3 families x 2 seeds gave [-39.4, 33.6], [-15.6, 43.3], [-16.0, 37.0] for one
    +6.9 difference. Cause: t draws with 1-3 dof (2 seeds per point) have heavy tails, and
    1000 plain draws put their 2.5/97.5% points anywhere. Now differences and accuracies
    have analytic t intervals; multipliers and crossovers use Sobol draws and are dropped
    when their ends are unstable. Across seeds 0..4 every stated end moves < 5% of width."""
    pts = _three_families_two_seeds()
    runs = [equal_compute(pts, budgets=[1e11, 3e11, 9e11], n_boot=1000, seed=s) for s in range(5)]
    for col_lo, col_hi, frame in (("diff_lo", "diff_hi", "pairs"), ("acc_lo", "acc_hi", "best"),
                                  ("mult_lo", "mult_hi", "pairs")):
        lo = np.array([getattr(r, frame)[col_lo].to_numpy(float) for r in runs])
        hi = np.array([getattr(r, frame)[col_hi].to_numpy(float) for r in runs])
        stated = np.isfinite(lo).all(axis=0)
        width = (hi - lo)[0, stated]
        assert stated.any() or col_lo == "mult_lo"
        for ends in (lo, hi):
            move = ends[:, stated].max(axis=0) - ends[:, stated].min(axis=0)
            assert (move <= 0.05 * width).all(), (col_lo, move / width)
    r = runs[0].pairs.query("family_a == 'vit' and family_b == 'hybrid'").iloc[1]
    assert r["diff"] == pytest.approx(-0.069)
    assert (r["diff_lo"] + r["diff_hi"]) / 2 == pytest.approx(r["diff"])  # centred


def test_accuracy_intervals_stay_within_0_and_100():
    spec = [("vit", 1e11, [0.998, 1.0]), ("vit", 3e11, [0.999, 1.0]),
            ("bit", 1e11, [0.0, 0.004]), ("bit", 3e11, [0.001, 0.0])]
    ec = equal_compute(_points(spec), budgets=[1e11, 3e11], n_boot=200)
    assert (ec.best["acc_lo"] >= 0).all() and (ec.best["acc_hi"] <= 1).all()
    assert ec.best["acc_hi"].max() == 1.0 and ec.best["acc_lo"].min() == 0.0


def test_report_numbers_are_written_for_people():
    """#23.12 / #24 figures: 10,100 img/s, not 1.01e+04; sign changes in FLOPs units; the
    transfer frontier's compute is pre-training compute; svg-only reports show figures."""
    from pathlib import Path

    from benchbench.report.cli import _image
    from benchbench.report.cost_findings import measure_findings
    from benchbench.report.plots.common import Plot
    from benchbench.report.tables import frontier_table

    m = pd.DataFrame({"model": ["ViT-micro/16"], "image_size": [32], "infer_img_per_s": [10124.0],
                      "max_batch_size": [512]})
    (line,) = measure_findings(m)
    assert "(10,100 img/s)" in line
    front = pd.DataFrame({"axis": ["compute"], "frontier_of": ["vit"], "model": ["m"],
                          "family": ["vit"], "train_size": [1000], "compute": [9.4e11],
                          "infer_img_per_s": [np.nan], "peak_mem_bytes": [np.nan], "acc": [0.5],
                          "acc_std": [np.nan], "n_seeds": [1]})
    raw, disp = frontier_table(front, "top1", "pretrain_flops")
    assert "pre-training compute [FLOPs]" in raw and "train compute [FLOPs]" not in raw
    assert disp["pre-training compute [FLOPs]"].iloc[0] == "940 GFLOPs"
    svg = Plot("x", "X", files=[Path("x.svg"), Path("x.pdf")])
    assert _image(svg) == Path("x.svg")
    spec = [("vit", c, [a, a + 0.002]) for c, a in zip(np.geomspace(1e11, 1e13, 5),
                                                        (0.5, 0.6, 0.7, 0.8, 0.9))]
    spec += [("bit", c, [a, a + 0.002]) for c, a in zip(np.geomspace(1e11, 1e13, 5),
                                                        (0.6, 0.65, 0.7, 0.75, 0.8))]
    ec = equal_compute(_points(spec), budgets=np.geomspace(1e11, 1e13, 5), n_boot=200)
    _, disp = equal_compute_table(ec, "top1")
    assert disp["A-B sign change [FLOPs]"].iloc[0].endswith("FLOPs")


def test_held_values_are_drawn_apart_from_measured_ones(tmp_path, monkeypatch):
    """#24.1: equal_compute.png draws a held value as a dashed continuation, not a point."""
    from benchbench.report.plots import compare as plot_mod

    spec = [("vit", 1e11, [0.70, 0.71]), ("vit", 3e11, [0.75, 0.76]),
            ("bit", 1e11, [0.60, 0.61]), ("bit", 3e11, [0.70, 0.71]), ("bit", 1e12, [0.8, 0.81])]
    ec = equal_compute(_points(spec), budgets=[1e11, 3e11, 1e12], n_boot=0)
    run, held = plot_mod.held_split(ec.best[ec.best["family"] == "vit"])
    assert run["budget"].tolist() == [1e11, 3e11] and held["budget"].tolist() == [1e12]
    figs = []
    monkeypatch.setattr(plot_mod, "save", lambda fig, *a, **k: figs.append(fig) or [])
    plot_mod.equal_compute_plot(ec, tmp_path, ["png"])
    ax1 = figs[0].axes[0]
    dashed = [ln for ln in ax1.lines if ln.get_linestyle() == "--"]
    assert any(list(ln.get_xdata()) == [3e11, 1e12] for ln in dashed)
    solid = [ln for ln in ax1.lines if ln.get_linestyle() == "-"]
    assert all(1e12 not in list(ln.get_xdata()) or ln.get_color() != dashed[0].get_color()
               for ln in solid)


def test_svg_only_internals_figures_are_shown_in_the_report():
    """--formats svg: the internals section shows its SVGs, as the rest of report.md does."""
    from pathlib import Path

    from benchbench.report.internals_section import InternalsSection
    from benchbench.report.plots.common import Plot

    sec = InternalsSection(plots=[Plot("a", "Attention", "cap", files=[Path("a.svg"), Path("a.pdf")])])
    text = "\n".join(sec.markdown())
    assert "![Attention](a.svg)" in text and "[PDF](a.pdf)" in text and "[SVG]" not in text

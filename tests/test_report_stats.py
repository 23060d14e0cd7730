"""Frontiers, equal-compute interpolation, multipliers, bootstrap and power-law fits on
synthetic data with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchbench.report.compare import (
    best_at,
    bootstrap_means,
    budget_grid,
    compute_multiplier,
    compute_to_reach,
    equal_compute,
    seed_spread,
)
from benchbench.report.load import aggregate_points, point_key
from benchbench.report.pareto import frontiers, owner_segments, pareto_front, pareto_mask
from benchbench.report.scaling import (
    envelope_points,
    fit_families,
    fit_power_law,
    fits_table,
    saturating_power_law,
)
from benchbench.report.tables import fmt_sci, tex_escape, to_latex, to_markdown


def test_pareto_front_known_points():
    x = [1, 2, 3, 4, 5, 2, np.nan]
    y = [10, 30, 20, 40, 35, 30, 99]
    assert pareto_front(x, y).tolist() == [0, 1, 3]  # duplicate (2, 30) kept once, NaN ignored
    assert pareto_mask(x, y).tolist() == [True, True, False, True, False, False, False]
    # throughput: larger x is better
    assert pareto_front(x, y, minimize_x=False).tolist() == [3, 4]
    # error: smaller y is better
    assert pareto_front(x, y, maximize_y=False).tolist() == [0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
def test_pareto_front_is_exactly_the_undominated_points(pts):
    x, y = np.array(pts, dtype=float).T
    front = set(pareto_front(x, y).tolist())
    for i in range(len(x)):
        dominated = np.any((x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i])))
        duplicate_earlier = np.any((x[:i] == x[i]) & (y[:i] == y[i]))
        assert (i in front) == (not dominated and not duplicate_earlier)
    assert list(np.diff(x[sorted(front, key=lambda i: x[i])]) > 0) == [True] * (len(front) - 1)


def test_frontiers_per_group_and_overall():
    pts = pd.DataFrame({"family": ["vit", "vit", "bit", "bit"], "compute": [1, 10, 1, 10],
                        "acc": [0.5, 0.7, 0.6, 0.65]})
    f = frontiers(pts, "compute")
    assert f.groupby("frontier_of").size().to_dict() == {"all": 2, "bit": 2, "vit": 2}
    overall = f[f["frontier_of"] == "all"]
    assert overall["family"].tolist() == ["bit", "vit"]
    assert owner_segments(overall, "compute") == [("bit", 1, 1), ("vit", 10, 10)]


def test_frontiers_frame_shape_group_order_and_missing_values():
    """Found by `make mutants`: the output's column order, group order (first seen, then
    'all'), a fresh index, groups without usable points skipped (not ending the loop)."""
    pts = pd.DataFrame({"family": ["vit", "bit", "bit", "vit", "hybrid"],
                        "compute": [1.0, 2.0, np.nan, 4.0, 5.0],
                        "acc": [0.5, 0.6, 0.9, 0.7, np.nan]})
    f = frontiers(pts, "compute")
    assert list(f.columns) == ["frontier_of", "family", "compute", "acc"]
    assert f["frontier_of"].tolist() == ["vit", "vit", "bit", "all", "all", "all"]
    assert f.index.tolist() == list(range(6))
    assert f["compute"].tolist() == [1.0, 4.0, 2.0, 1.0, 2.0, 4.0]  # NaN compute left out
    pts2 = pd.DataFrame({"family": ["x", "y"], "compute": [np.nan, 1.0], "acc": [0.5, 0.5]})
    assert frontiers(pts2, "compute")["frontier_of"].tolist() == ["y", "all"]  # x: skipped
    none = frontiers(pts.assign(acc=np.nan), "compute")
    assert none.empty and list(none.columns) == ["frontier_of", "family", "compute", "acc"]
    with pytest.raises(AssertionError, match="^x and y must have the same length$"):
        pareto_front([1, 2], [1])


def test_owner_segments_merge_consecutive_runs_of_one_group():
    front = pd.DataFrame({"family": ["vit", "vit", "bit", "bit", "bit", "vit"],
                          "compute": [1, 2, 3, 4, 5, 6]})
    assert owner_segments(front, "compute") == [("vit", 1, 2), ("bit", 3, 5), ("vit", 6, 6)]
    assert owner_segments(front.iloc[:0], "compute") == []


def test_best_at_interpolates_in_log_compute_flat_past_the_last_run_never_below():
    x = [1e12, 1e13, 1e14, 1e15]
    y = [0.5, 0.6, 0.7, 0.65]  # the largest run is worse: not on the frontier
    got = best_at(x, y, [1e11, 1e12, 10**12.5, 1e14, 5e14, 1e15, 1e16])
    assert np.isnan(got[0])  # below the smallest run: nothing reached, not extrapolated
    np.testing.assert_allclose(got[1:], [0.5, 0.55, 0.7, 0.7, 0.7, 0.7])
    # a budget a few % outside the range (whole steps) still counts as reached
    assert best_at(x, y, 0.97e12)[0] == pytest.approx(0.5)
    assert np.isnan(compute_to_reach(x, y, 0.75)[0]) and np.isnan(compute_to_reach(x, y, 0.4)[0])
    assert compute_to_reach(x, y, 0.65)[0] == pytest.approx(10**13.5)


def test_best_at_edges_found_by_mutants():
    # the lower end of the range is reached exactly at lo / (1 + rtol)
    assert best_at([1.0, 2.0], [0.5, 0.6], [1.0 / 1.05])[0] == pytest.approx(0.5)
    # points with an infinite x or a NaN accuracy neither join the frontier nor widen the range
    got = best_at([1.0, 2.0, np.inf, 10.0], [0.5, 0.6, 0.9, np.nan], [2 ** 0.5, 5.0, 1e9])
    np.testing.assert_allclose(got[0], 0.55)
    # flat past the last finite run (0.6): the 0.9 at x=inf never joins the frontier
    np.testing.assert_allclose(got[1:], [0.6, 0.6])


def test_seed_spread_and_bootstrap_without_spread():
    s, dof = seed_spread([(0.5, 0.7), (0.1, 0.3), (0.4,)])  # two seeds: one dof each
    assert dof == 2 and s == pytest.approx(np.sqrt((0.02 + 0.02) / 2))
    # no spread anywhere: no interval (NaN replicates), never a zero-width one
    reps = bootstrap_means([(0.5,), (0.6,)], 10, np.random.default_rng(0))
    assert reps.shape == (10, 2) and np.isnan(reps).all()


def test_budget_grid_of_many_clusters_is_8_log_spaced_over_the_whole_range():
    c = 1e12 * 2.0 ** np.arange(20)  # 20 clusters (each 2x apart) > 12
    grid = budget_grid(pd.DataFrame({"compute": c}))
    assert len(grid) == 8 and grid[0] == 1e12 and grid[-1] == pytest.approx(5.2e17)


def test_equal_compute_frames_and_symmetric_intervals():
    rng = np.random.default_rng(3)
    c = np.geomspace(1e12, 1e15, 4)
    pts = _points({"vit": (c, 0.5 + 0.05 * np.log10(c / 1e12)),
                   "bit": (c, 0.45 + 0.05 * np.log10(c / 1e12))}, seeds=3, sigma=0.01, rng=rng)
    ec = equal_compute(pts, budgets=c, n_boot=2000)
    assert list(ec.best.columns) == ["budget", "family", "acc", "acc_lo", "acc_hi", "min_seeds",
                                     "beyond", "n_test", "basis", "seeds_here"]
    assert list(ec.pairs.columns) == [
        "budget", "family_a", "family_b", "acc_a", "acc_b", "basis_a", "basis_b", "diff",
        "diff_lo", "diff_hi", "se_test", "p", "called", "compared", "a_beyond", "b_beyond",
        "multiplier", "mult_kind", "mult_bound", "mult_lo", "mult_hi", "mult_read", "bound_p",
        "bound_called", "min_seeds_a", "min_seeds_b", "size_a", "size_b"]
    assert ec.pairs["budget"].tolist() == list(c) and set(ec.best["family"]) == {"vit", "bit"}
    assert ec.pairs["family_b"].tolist() == ["bit"] * 4
    assert ec.pairs["mult_hi"].notna().any()
    # a 95% percentile interval of a symmetric (t) bootstrap: as far below as above
    below = ec.best["acc"] - ec.best["acc_lo"]
    above = ec.best["acc_hi"] - ec.best["acc"]
    np.testing.assert_allclose(below, above, rtol=0.2)


def test_compute_multiplier_on_known_2x_shift():
    c = np.geomspace(1e12, 1e15, 7)
    acc = 0.3 + 0.1 * np.log10(c / 1e12)
    # family "slow" needs twice the compute for the same accuracy
    m = compute_multiplier(2 * c, acc, c, acc, [1e12, 5e12, 1e14, 1e15])
    np.testing.assert_allclose(m, 2.0, rtol=1e-9)


def _points(families: dict[str, tuple[np.ndarray, np.ndarray]], seeds: int, sigma: float, rng):
    rows = []
    for fam, (x, acc) in families.items():
        for xi, ai in zip(x, acc):
            for s in range(seeds):
                rows.append(dict(family=fam, model=f"{fam}-{xi:.0e}", compute=xi, seed=s,
                                 acc=ai + rng.normal(0, sigma), point=f"{fam}{xi}"))
    return aggregate_points(pd.DataFrame(rows))


def test_equal_compute_recovers_2x_multiplier_with_seeds():
    rng = np.random.default_rng(1)
    c = np.geomspace(1e12, 1e15, 7)
    truth = lambda x: 0.3 + 0.1 * np.log10(x / 1e12)  # noqa: E731
    pts = _points({"vit": (c, truth(c)), "bit": (c, truth(c / 2))}, seeds=3, sigma=0.002, rng=rng)
    ec = equal_compute(pts, budgets=c, n_boot=300)
    vb = ec.pairs.set_index("budget")
    assert ec.bootstrapped
    assert np.isfinite(vb["multiplier"]).sum() >= 5
    gm = np.exp(np.log(vb["multiplier"].dropna()).mean())
    assert gm == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(vb["diff"].iloc[1:], 0.1 * np.log10(2), atol=0.01)
    assert (vb["diff_lo"].iloc[1:] <= vb["diff"].iloc[1:]).all()
    # both start at 1e12; a budget below both is NaN, not extrapolated; past both last runs
    # both are held flat (and marked so)
    ec2 = equal_compute(pts, budgets=[1e11, 1e16], n_boot=0)
    assert np.isnan(ec2.pairs["diff"].iloc[0])
    assert ec2.pairs["a_beyond"].iloc[1] and ec2.pairs["b_beyond"].iloc[1]
    assert ec2.pairs[["basis_a", "basis_b"]].values.tolist() == [["none", "none"], ["held", "held"]]
    assert not ec2.pairs["called"].any()


def test_bootstrap_interval_covers_the_truth():
    c = np.geomspace(1e12, 1e14, 5)
    truth_vit = 0.3 + 0.1 * np.log10(c / 1e12)
    truth_bit = truth_vit - 0.03
    covered = 0
    for rep in range(30):
        rng = np.random.default_rng(100 + rep)
        pts = _points({"vit": (c, truth_vit), "bit": (c, truth_bit)}, seeds=3, sigma=0.01, rng=rng)
        ec = equal_compute(pts, budgets=[1e13], n_boot=0, seed=rep)  # analytic interval
        r = ec.pairs.iloc[0]
        covered += r["diff_lo"] <= 0.03 <= r["diff_hi"]
    assert covered >= 24  # >= 80% of 30 for a nominal 95% interval


def test_budget_grid_from_configs_and_from_clusters():
    t = pd.DataFrame({"compute": [0.98e12, 1.0e12, 2.95e12, 3.05e12, 1e13],
                      "budget": [1e12, 1e12, 3e12, 3e12, 1e13]})
    assert budget_grid(t).tolist() == [1e12, 3e12, 1e13]
    t["budget"] = np.nan
    assert budget_grid(t).tolist() == [9.9e11, 3e12, 1e13]


def test_power_law_recovered():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e12, 1e17, 9)
    e = saturating_power_law(x / 1e12, 0.5, 0.3, 0.1, 0.0)
    vals = [tuple(ei * np.exp(rng.normal(0, 0.01, 3))) for ei in e]
    fit = fit_power_law(x, vals, n_boot=100)
    assert fit.b == pytest.approx(0.3, abs=0.05)
    assert fit.c == pytest.approx(0.1, abs=0.01)
    assert fit.a == pytest.approx(0.5 * 1e12**0.3, rel=0.5)
    lo, hi = fit.ci("b")
    assert lo <= 0.3 <= hi
    assert fit.trustworthy, fit.reasons
    assert abs(fit.heldout_pred - fit.heldout_obs) / fit.heldout_obs < 0.1
    np.testing.assert_allclose(fit.predict(x), e, rtol=0.03)


def test_power_law_says_when_not_to_trust_it():
    few = fit_power_law([1, 2, 4], [(0.5,), (0.4,), (0.3,)])
    assert not few.fitted and "too few points" in few.reasons[0]
    four = fit_power_law([1, 2, 4, 8], [(0.5,), (0.4,), (0.33,), (0.3,)])
    assert not four.trustworthy and any("held-out" in r for r in four.reasons)
    # error falls as a power law, then drops sharply at the largest x: held-out check fails
    x = np.geomspace(1, 1e4, 8)
    e = list(saturating_power_law(x, 0.5, 0.2, 0.05, 0.0))
    e[-1] = 0.02
    jump = fit_power_law(x, [(v,) for v in e], n_boot=50)
    assert not jump.trustworthy and any("held-out error" in r for r in jump.reasons)


def test_seeds_of_one_config_become_one_point():
    base = {"model": {"name": "vit_micro"}, "train": {"epochs": 1}}
    rows = [dict(config={**base, "seed": s}, acc=0.5 + s / 100, seed=s) for s in range(3)]
    rows.append(dict(config={**base, "train": {"epochs": 3}, "seed": 0}, acc=0.6, seed=0))
    df = pd.DataFrame(rows)
    df["point"] = [point_key(r) for r in df.to_dict("records")]
    pts = aggregate_points(df)
    assert sorted(pts["n_seeds"]) == [1, 3]
    p3 = pts[pts["n_seeds"] == 3].iloc[0]
    assert p3["acc"] == pytest.approx(0.51) and p3["acc_std"] == pytest.approx(0.01)


def test_markdown_and_latex_writers():
    d = pd.DataFrame({"model": ["ViT-B/16", "R50x1|x"], "top-1 [%]": ["84.1", "–"]})
    md = to_markdown(d)
    assert md.splitlines()[0] == "| model | top-1 [%] |" and "R50x1\\|x" in md
    tex = to_latex(d, caption="a_b")
    assert r"\begin{tabular}{lr}" in tex and r"top-1 [\%]" in tex and "a\\_b" in tex
    assert "--" in tex  # missing value
    assert tex_escape("100% & $_#") == r"100\% \& \$\_\#"
    assert fmt_sci(3e14) == "3.0e14" and fmt_sci(float("nan")) == "–"


def test_train_rows_take_speed_from_measure_rows(tmp_path):
    from benchbench.report.load import load_study
    from benchbench.results import write_row

    common = dict(study="s", status="ok", family="vit", model="ViT-B/16", image_size=224)
    write_row(dict(common, run_id="t0", task="train", top1=0.8, train_flops=1e18, seed=0), tmp_path)
    write_row(dict(common, run_id="m0", task="measure", infer_img_per_s=900.0,
                   peak_mem_bytes=2**30), tmp_path)
    write_row(dict(common, run_id="m1", task="measure", image_size=384, infer_img_per_s=5.0),
              tmp_path)
    study = load_study(tmp_path)
    t = study.train.iloc[0]
    assert t["infer_img_per_s"] == 900.0 and t["peak_mem_bytes"] == 2**30
    assert bool(t["speed_from_measure"]) and np.isnan(t["max_batch_size"])
    assert len(study.measure) == 2


def test_budget_is_the_rows_train_flops_budget_else_the_configs_train_flops(tmp_path):
    from benchbench.report.load import budgets, load_study
    from benchbench.results import write_row

    cfg = {"train": {"flops": 1e15}}
    df = pd.DataFrame({"config": [cfg, cfg, {"train": {"flops": None}}, None],
                       "train_flops_budget": [2e15, None, None, None]})
    assert budgets(df).tolist()[:2] == [2e15, 1e15] and budgets(df)[2:].isna().all()
    assert budgets(df.drop(columns="train_flops_budget")).tolist()[:2] == [1e15, 1e15]
    # committed rows have no train_flops_budget: the config's train.flops is the budget
    write_row(dict(run_id="t0", study="s", status="ok", family="vit", model="ViT-B/16", top1=0.8,
                   train_flops=0.9e15, task="train", config=cfg), tmp_path)
    assert load_study(tmp_path).train["budget"].tolist() == [1e15]


def test_overhead_finding_is_the_share_of_wall_time_outside_training():
    import pandas as pd

    from benchbench.report.summary import overhead_findings

    train = pd.DataFrame({"wall_s": [10.0, 30.0], "train_wall_s": [8.0, 28.0]})
    (line,) = overhead_findings(train)
    assert "10% of the 0.7 min the 2 runs took" in line
    assert overhead_findings(pd.DataFrame({"wall_s": [1.0], "train_wall_s": [None]})) == []


def _pairs(mults, diffs=None):
    from benchbench.report.compare import EqualCompute

    n = len(mults)
    diffs = diffs or [0.05] * n
    pairs = pd.DataFrame({
        "budget": [1e10 * 10**i for i in range(n)], "family_a": "vit", "family_b": "bit",
        "acc_a": 0.8, "acc_b": [0.8 - d for d in diffs], "diff": diffs,
        "diff_lo": np.nan, "diff_hi": np.nan, "multiplier": mults,
        "mult_lo": [m * 0.95 for m in mults], "mult_hi": [m * 1.05 for m in mults]})
    return EqualCompute(budgets=pairs["budget"].to_numpy(), best=pd.DataFrame(), pairs=pairs,
                        bootstrapped=False)


def test_compute_multiplier_sentence_says_more_less_or_about_the_same():
    from benchbench.report.summary import equal_compute_findings

    more = " ".join(equal_compute_findings(_pairs([2.0, 4.0])))
    assert "BiT needs 2.8x more compute than ViT to reach ViT's accuracy" in more
    assert "(geometric mean over 2 budgets; 10 GFLOPs: 2x [95% CI 1.9, 2.1]; 100 GFLOPs: 4x" in more
    less = " ".join(equal_compute_findings(_pairs([0.5, 0.5])))
    assert "BiT needs 2x less compute than ViT" in less
    one = " ".join(equal_compute_findings(_pairs([0.5])))
    assert "BiT needs 2x less compute than ViT to reach ViT's accuracy (geometric mean over 1 " \
        "budget; 10 GFLOPs: 0.5x [95% CI 0.47, 0.53])" in one
    same = " ".join(equal_compute_findings(_pairs([1.05, 0.98])))
    assert "every 95% CI includes 1x" in same and "x less" not in same
    # a multiplier without a CI is not stated (#24.2)
    p = _pairs([2.0, 4.0])
    p.pairs["mult_lo"] = np.nan
    assert "needs" not in " ".join(equal_compute_findings(p))


def test_fit_families_table_and_band_on_a_known_law():
    """Found by `make mutants`: fits are of the error 1 - acc, the table carries the fitted
    range and reasons, the band brackets the fit, the envelope keeps the best point per x."""
    rng = np.random.default_rng(0)
    c = np.geomspace(1e12, 1e16, 8)
    err = 0.4 * (c / 1e12) ** -0.3 + 0.1
    pts = _points({"vit": (c, 1 - err)}, seeds=3, sigma=0.001, rng=rng)
    worse = pts.assign(acc=pts["acc"] - 0.05, point=pts["point"] + "w",
                       acc_values=[tuple(np.asarray(v) - 0.05) for v in pts["acc_values"]])
    both = pd.concat([pts, worse], ignore_index=True)
    env = envelope_points(both, "compute")
    assert len(env) == 8 and (env["point"] == pts["point"].to_numpy()).all()
    fits = fit_families(both, "compute", on="envelope", n_boot=30)
    f = fits["vit"]
    assert f.fitted and f.b == pytest.approx(0.3, abs=0.05) and f.c == pytest.approx(0.1, abs=0.02)
    lo, hi = f.band(c)
    assert np.isfinite(lo).all() and (lo <= f.predict(c) + 1e-9).all() and (f.predict(c) <= hi + 1e-9).all()
    t = fits_table({"compute": fits})
    assert t.loc[0, "x_min"] == c.min() and t.loc[0, "x_max"] == c.max()
    assert t.loc[0, "b"] == f.b and "reason" in t.columns and t.loc[0, "n_points"] == 8


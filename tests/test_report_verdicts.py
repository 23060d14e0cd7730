"""The report's verdicts on hand-made rows with known truth: frontiers held flat, "best
family" only where two are measured, multiplier bounds, pooled seed spread and its coverage,
differences called only outside the noise, the ViT-CNN crossover, selection on validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchbench.report.compare import equal_compute
from benchbench.report.load import aggregate_points
from benchbench.report.summary import (
    _diff_sentence,
    dataset_findings,
    equal_compute_findings,
    leader_findings,
)

N_TEST = 10_000


def _rows(spec, n_test=N_TEST, **extra):
    """spec: [(family, compute, [acc per seed]), ...] -> one row per seed."""
    rows = []
    for fam, c, accs in spec:
        for s, a in enumerate(accs):
            rows.append(dict(family=fam, model=f"{fam}-{c:.1e}", compute=c, seed=s, acc=a,
                             point=f"{fam}-{c}", eval_samples=n_test, **extra))
    return pd.DataFrame(rows)


def _points(spec, **kw):
    return aggregate_points(_rows(spec, **kw))


def test_a_frontier_that_ends_is_held_flat_and_not_compared_past_its_end():
    # ResNet reached 85% with 3e12 FLOPs and was not run beyond: at 9.7e12 only ViT was run
    pts = _points([("resnet", 1e12, [0.80]), ("resnet", 3e12, [0.85]),
                   ("vit", 1e12, [0.70]), ("vit", 3e12, [0.75]), ("vit", 9.7e12, [0.78])])
    ec = equal_compute(pts, budgets=[1e12, 3e12, 9.7e12], n_boot=0, seed_sd=0.005)
    best = ec.best.set_index(["family", "budget"])
    assert best.loc[("resnet", 9.7e12), "acc"] == pytest.approx(0.85)
    assert bool(best.loc[("resnet", 9.7e12), "beyond"])
    assert best.loc[("resnet", 9.7e12), "basis"] == "held"
    (line,) = leader_findings(ec)
    assert "ResNet from 1 TFLOPs to 3 TFLOPs; then only ViT has a frontier run at 9.7 TFLOPs" in line
    text = " ".join(equal_compute_findings(ec))
    assert "ResNet was not run beyond 3 TFLOPs: at 9.7 TFLOPs its value is that run held flat" in text
    assert "At 9.7 TFLOPs" not in text


def test_best_family_is_named_only_where_two_families_have_a_value():
    pts = _points([("vit", 1e11, [0.5]), ("vit", 1e12, [0.6]), ("bit", 1e12, [0.7]),
                   ("bit", 1e13, [0.8])])
    ec = equal_compute(pts, budgets=[1e11, 1e12, 1e13], n_boot=0, seed_sd=0.005)
    (line,) = leader_findings(ec)
    assert "only ViT has a frontier run at 100 GFLOPs" in line and "BiT at 1 TFLOPs" in line
    assert "only BiT has a frontier run at 10 TFLOPs" in line


def test_multipliers_at_a_frontier_end_are_bounds_said_only_where_informative():
    # BiT above ViT everywhere: BiT's smallest run already beats every ViT accuracy
    pts = _points([("vit", 1e12, [0.5]), ("vit", 1e13, [0.6]),
                   ("bit", 1e12, [0.7]), ("bit", 1e13, [0.8])])
    ec = equal_compute(pts, budgets=[1e12, 1e13], n_boot=0, seed_sd=0.005)
    text = " ".join(equal_compute_findings(ec))
    assert "At 10 TFLOPs BiT's smallest run already beats ViT, so BiT needs at most 0.1x" in text
    assert "at most 1x" not in text  # a bound of 1x says nothing (#23.12)
    p = ec.pairs
    assert p["mult_kind"].tolist() == ["<=", "<="] and p["multiplier"].isna().all()
    np.testing.assert_allclose(p["mult_bound"], [1.0, 0.1])
    # one exact multiplier and a bound elsewhere: the exact one with its CI, no bound of 1x
    pts = _points([("vit", 1e12, [0.5]), ("vit", 3e12, [0.6]),
                   ("bit", 1e12, [0.55]), ("bit", 3e12, [0.65])])
    ec = equal_compute(pts, budgets=[1e12, 3e12], n_boot=1000, seed_sd=0.005)
    text = " ".join(equal_compute_findings(ec))
    assert "3 TFLOPs: 0.58x [95% CI" in text and "at most 1x" not in text


def test_a_bound_below_1x_is_never_a_finding():
    """#23.12: "at least 0.58x" (or at most 3x) says nothing about who needs more."""
    pts = _points([("vit", 1e12, [0.5, 0.51]), ("bit", 1e12, [0.7, 0.71]),
                   ("bit", 1e13, [0.8, 0.81])])
    text = " ".join(equal_compute_findings(equal_compute(pts, budgets=[1e12], n_boot=0)))
    assert "BiT beats ViT by 20.0 points" in text and "at most 1x" not in text
    pts = _points([("vit", 1e12, [0.7, 0.71]), ("vit", 3e12, [0.8, 0.81]),
                   ("bit", 1e12, [0.5, 0.51]), ("bit", 1.7e12, [0.55, 0.56])])
    ec = equal_compute(pts, budgets=[1.7e12, 2e12], n_boot=0)
    assert (ec.pairs["mult_kind"] == ">=").all() and ec.pairs["called"].all()
    np.testing.assert_allclose(ec.pairs["mult_bound"], [1.0, 0.85])
    assert "at least" not in " ".join(equal_compute_findings(ec))


def test_a_family_without_seed_spread_gets_the_pooled_spread_never_zero_width():
    rng = np.random.default_rng(0)
    spec = [("vit", c, list(0.5 + 0.05 * i + rng.normal(0, 0.01, 3)))
            for i, c in enumerate([1e12, 1e13, 1e14])]
    spec += [("bit", c, [0.45 + 0.05 * i]) for i, c in enumerate([1e12, 1e13, 1e14])]
    ec = equal_compute(_points(spec), budgets=[1e13], n_boot=200)
    assert ec.spread == {"vit": "own", "bit": "pooled"}
    bit = ec.best[ec.best["family"] == "bit"].iloc[0]
    assert bit["acc_hi"] - bit["acc_lo"] > 0.01
    # nobody has two seeds: no interval at all, never a zero-width one
    single = [("vit", 1e12, [0.5]), ("bit", 1e12, [0.6])]
    ec = equal_compute(_points(single), budgets=[1e12], n_boot=200)
    assert ec.best["acc_lo"].isna().all() and ec.pairs["diff_lo"].isna().all()


def _coverage(n_studies: int, n_boot: int) -> float:
    """Simulated studies: ViT 3 seeds per point, BiT 1; share whose 95% CI of the difference
    covers the truth (68-75% before BiT took the pooled spread)."""
    c = np.geomspace(1e12, 1e14, 4)
    truth_vit = 0.3 + 0.1 * np.log10(c / 1e12)
    truth_bit = truth_vit - 0.03
    covered = 0
    for rep in range(n_studies):
        rng = np.random.default_rng(1000 + rep)
        spec = [("vit", x, list(t + rng.normal(0, 0.01, 3))) for x, t in zip(c, truth_vit)]
        spec += [("bit", x, [t + rng.normal(0, 0.01)]) for x, t in zip(c, truth_bit)]
        r = equal_compute(_points(spec), budgets=[c[2]], n_boot=n_boot, seed=rep).pairs.iloc[0]
        covered += r["diff_lo"] <= 0.03 <= r["diff_hi"]
    return covered / n_studies


def test_ci_of_the_difference_covers_the_truth_when_one_family_has_one_seed():
    assert _coverage(40, 0) >= 0.85  # the interval of a difference is analytic: no replicates


@pytest.mark.slow
def test_ci_coverage_over_200_simulated_studies():
    assert _coverage(200, 200) >= 0.9


def test_a_difference_inside_the_test_set_noise_is_not_called():
    # 86.08% vs 85.51% on 10k test images: the SE of the difference is ~0.5 points
    pts = _points([("hybrid", 1e12, [0.8608]), ("bit", 1e12, [0.8551])])
    ec = equal_compute(pts, budgets=[1e12], n_boot=0, seed_sd=0.0005)  # seeds barely vary
    r = ec.pairs.iloc[0]
    assert not r["called"] and r["se_test"] == pytest.approx(0.0049, abs=0.0002)
    s = _diff_sentence(r, "Hybrid", "BiT", 0.95)
    assert "within noise" in s and "beats" not in s
    (lead,) = leader_findings(ec)
    assert "no clear best (Hybrid, BiT not called apart)" in lead
    # the same gap on the dataset-size axis does not make "the best family changes"
    rows = _rows([("bit", 1e12, [0.79]), ("hybrid", 1e12, [0.74]),
                  ("bit", 2e12, [0.8551]), ("hybrid", 2e12, [0.8608])])
    rows["train_size"] = np.where(rows["compute"] == 1e12, 1000, 9000)
    (line,) = dataset_findings(aggregate_points(rows))
    assert "changes from" not in line and "within noise" in line
    # a large gap is called, given a seed noise estimate (one seed alone calls nothing)
    pts = _points([("hybrid", 1e12, [0.90]), ("bit", 1e12, [0.85])])
    assert not equal_compute(pts, budgets=[1e12], n_boot=0).pairs["called"].iloc[0]
    assert bool(equal_compute(pts, budgets=[1e12], n_boot=0, seed_sd=0.005).pairs["called"].iloc[0])


def test_crossover_compute_with_bootstrap_ci():
    # ViT: 0.3 + 0.1 L, BiT: 0.4 + 0.05 L (L = log10(C / 1e12)): they cross at C = 1e14
    rng = np.random.default_rng(3)
    c = np.geomspace(1e12, 1e16, 9)
    L = np.log10(c / 1e12)
    spec = [("vit", x, list(0.3 + 0.1 * li + rng.normal(0, 0.003, 3))) for x, li in zip(c, L)]
    spec += [("bit", x, list(0.4 + 0.05 * li + rng.normal(0, 0.003, 3))) for x, li in zip(c, L)]
    ec = equal_compute(_points(spec), budgets=c, n_boot=300)
    r = ec.crossovers.iloc[0]
    assert (r["family_a"], r["family_b"]) == ("vit", "bit")
    assert r["crossover"] == pytest.approx(1e14, rel=0.3)
    assert r["cross_lo"] <= 1e14 <= r["cross_hi"] and r["cross_hi"] / r["cross_lo"] < 10
    text = " ".join(equal_compute_findings(ec))
    assert "The ViT - BiT difference changes sign at about 1" in text and "TFLOPs [95% CI" in text
    assert "do not establish" not in text
    from benchbench.report.tables import equal_compute_table
    raw, disp = equal_compute_table(ec, "top1")
    assert raw["A-B sign change [FLOPs]"].iloc[0] == pytest.approx(r["crossover"])
    assert disp["sign change 95% CI [FLOPs]"].iloc[0].startswith("[")


def _lr_rows(val):
    """Two learning rates of one model: lr 1e-3 wins on validation, 3e-3 on test."""
    rows = []
    for lr, v, t in ((1e-3, 0.80, 0.70), (3e-3, 0.75, 0.72)):
        for s in range(2):
            cfg = {"model": {"name": "vit_micro"}, "train": {"lr": lr}, "seed": s}
            rows.append(dict(config=cfg, family="vit", model="ViT-micro", compute=1e12, seed=s,
                             acc=t, val_top1=v if val else None, point=f"lr{lr}"))
    return pd.DataFrame(rows)


def test_a_swept_learning_rate_is_one_point_chosen_on_validation():
    pts = aggregate_points(_lr_rows(val=True))
    assert len(pts) == 1
    p = pts.iloc[0]
    assert p["config"]["train"]["lr"] == 1e-3 and p["acc"] == pytest.approx(0.70)
    assert p["n_swept"] == 2 and p["selected_on"] == "validation"
    # no validation rows: the choice is made on test and the point says so
    p = aggregate_points(_lr_rows(val=False)).iloc[0]
    assert p["config"]["train"]["lr"] == 3e-3 and p["selected_on"] == "test"


def test_frontier_and_best_model_per_size_select_on_validation():
    from benchbench.report.pareto import frontiers
    from benchbench.report.scaling import envelope_points, frontier_points

    rows = _rows([("vit", 1e12, [0.60]), ("vit", 2e12, [0.65])])
    rows["val_top1"] = [0.70, 0.66]  # validation prefers the cheaper model
    rows["train_size"] = 1000
    pts = aggregate_points(rows)
    assert frontiers(pts, "compute").query("frontier_of == 'vit'")["compute"].tolist() == [1e12]
    assert frontier_points(pts, "compute")["compute"].tolist() == [1e12]
    assert envelope_points(pts, "train_size")["acc"].tolist() == [pytest.approx(0.60)]
    ec = equal_compute(pts, budgets=[2e12], n_boot=0)
    assert ec.selected_on == "validation"
    assert ec.best["acc"].iloc[0] == pytest.approx(0.60)  # the test accuracy of what val chose


def test_summary_says_which_accuracy_selection_used(tmp_path):
    from benchbench.report.load import load_study
    from benchbench.report.summary import selection_findings
    from benchbench.results import write_row

    common = dict(study="s", status="ok", family="vit", model="ViT-B/16", task="train",
                  image_size=32, train_flops=1e12, dataset="d")
    for i in range(2):
        write_row(dict(common, run_id=f"a{i}", top1=0.8, seed=0, train_size=10**(3 + i)), tmp_path)
        write_row(dict(common, run_id=f"a{i}", top1=0.8, val_top1=0.82, seed=0,
                       train_size=10**(3 + i)), tmp_path / "v")
    study = load_study(tmp_path)
    (line,) = selection_findings(study, aggregate_points(study.train))
    assert "No row has a validation accuracy" in line and "made on test accuracy" in line
    study = load_study(tmp_path / "v")
    (line,) = selection_findings(study, aggregate_points(study.train))
    assert "made on validation accuracy (val_top1)" in line
    assert "(frontiers, best model per dataset size)" in line  # two sizes here
    one = aggregate_points(study.train)
    (line,) = selection_findings(study, one.assign(train_size=1000))
    assert "(frontiers)" in line  # one dataset size: no "best model per dataset size"


def test_speed_and_memory_come_from_measure_rows_when_present(tmp_path):
    from benchbench.report.load import load_study
    from benchbench.report.summary import speed_findings
    from benchbench.report.tables import runs_table
    from benchbench.results import write_row

    common = dict(study="s", status="ok", family="vit", model="ViT-B/16", image_size=224)
    for i, v in enumerate((18920.0, 13357.0)):  # the same architecture, two training runs
        write_row(dict(common, run_id=f"t{i}", task="train", top1=0.8, train_flops=1e18, seed=i,
                       infer_img_per_s=v, mfu=0.4, peak_flops_source="table: H100 SXM"), tmp_path)
    (line,) = speed_findings(load_study(tmp_path))
    assert "each training run's own measurement" in line and "1.4x" in line
    write_row(dict(common, run_id="m0", task="measure", infer_img_per_s=10215.0), tmp_path)
    study = load_study(tmp_path)
    assert study.train["infer_img_per_s"].tolist() == [10215.0, 10215.0]
    assert study.train["speed_from_measure"].all()
    (line,) = speed_findings(study)
    assert "come from the task=measure rows" in line
    raw, _ = runs_table(study)
    assert raw["peak FLOP/s source"].dropna().tolist() == ["table: H100 SXM"] * 2
    assert raw["MFU [%]"].dropna().tolist() == [40.0, 40.0]


def test_an_untrustworthy_fit_quotes_no_exponent():
    """A fit flagged untrustworthy is said as such, with its reasons, and no exponent a reader
    could cite (the demo's Hybrid fit on 3-4 points quoted b = 2.2 before)."""
    from types import SimpleNamespace

    from benchbench.report.summary import fit_findings

    bad = SimpleNamespace(fitted=True, trustworthy=False, reasons=["parameter(s) at a bound: a"],
                          b=2.2, c=0.0, heldout_pred=float("nan"), heldout_obs=float("nan"),
                          ci=lambda k: (0.28, 3.0))
    (line,) = fit_findings({"hybrid": bad}, "compute", "C")
    assert "not trustworthy (parameter(s) at a bound: a)" in line
    assert "b = " not in line and "2.2" not in line
    good = SimpleNamespace(**{**bad.__dict__, "trustworthy": True})
    (line,) = fit_findings({"hybrid": good}, "compute", "C")
    assert "b = 2.2 [95% CI 0.28, 3]" in line


def _axis_points(sizes, epochs):
    import pandas as pd

    rows = [{"model": m, "patch_size": 8, "image_size": 32, "train_size": n, "epochs": e,
             "samples_seen": n * e, "compute": c * n * e}
            for m, c in (("ViT-micro/8", 1.0), ("R-micro", 3.0)) for n in sizes for e in epochs]
    return pd.DataFrame(rows)


def test_the_summary_says_what_the_compute_axis_varies():
    """#12: a study whose budgets grow only with the data is the data question in FLOPs, not
    Figure 5's; fixed data with varying epochs is Figure 5's; both at once is said as mixed."""
    from benchbench.report.cost_findings import compute_axis_findings

    (data_only,) = compute_axis_findings(_axis_points([1000, 3000, 9000], [8]))
    assert "1,000 to 9,000 images" in data_only and "data question (Figures 3/4)" in data_only
    assert "not Figure 5's" in data_only
    (fixed,) = compute_axis_findings(_axis_points([6000], [3, 10]))
    assert fixed.startswith("The training data are fixed (6,000 images)")
    assert "architecture and the training length" in fixed and "Figure 5" in fixed
    (arch,) = compute_axis_findings(_axis_points([6000], [10]))
    assert "through the architecture only" in arch
    (mixed,) = compute_axis_findings(_axis_points([1000, 9000], [2, 6]))
    assert mixed.startswith("Compute varies through the training-set size (1,000 to 9,000")
    steps = _axis_points([1000, 9000], [8]).drop(columns="epochs")  # a steps budget: passes
    assert "not Figure 5's" in compute_axis_findings(steps)[0]
    import pandas as pd

    pre = pd.DataFrame([dict(r, train_size=2000, pretrain_train_size=n)
                        for r, n in zip(_axis_points([2000], [2, 3]).to_dict("records"),
                                        [1000, 9000, 1000, 9000])])
    (line,) = compute_axis_findings(pre, "pretrain_flops")  # the pre-training data vary
    assert line.startswith("Compute here grows with the pre-training-set size (1,000 to 9,000 images):")
    assert compute_axis_findings(pre)[0].startswith("The training data are fixed (2,000")


def test_a_few_seeded_points_get_their_mean_and_spread_said():
    """A seed study (one model, three seeds) says its mean, s.d. and the seeds' values; a
    large study does not list every point."""
    import pandas as pd

    from benchbench.report.summary import seeds_finding

    one = pd.DataFrame([{"model": "ViT-seed/8", "family": "vit", "acc": 0.772, "acc_std": 0.018,
                         "n_seeds": 3, "acc_values": (0.768, 0.756, 0.791)}])
    (line,) = seeds_finding(one)
    assert line == "ViT-seed/8: 77.2% ± 1.8 points (mean ± s.d. over 3 seeds: 76.8, 75.6, 79.1)."
    two = pd.concat([one, one], ignore_index=True).assign(train_size=[1000, 60000])
    assert [x.split(":")[0] for x in seeds_finding(two)[:2]] == [
        "ViT-seed/8 at 1,000 images", "ViT-seed/8 at 60,000 images"]
    many = pd.concat([one] * 4, ignore_index=True)
    assert not any("mean ± s.d." in x for x in seeds_finding(many))

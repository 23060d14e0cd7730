"""The adaptive planner's core (benchbench.adaptive): the surrogate, the questions, the rounds."""
from __future__ import annotations

import numpy as np
import pytest

from benchbench.adaptive import model
from benchbench.adaptive.design import Candidate, Planner
from benchbench.adaptive.questions import reached
from benchbench.errors import ConfigError

X0 = 15.0
XS = np.linspace(15.0, 18.0, 8)


def truth(cross: float = 16.6) -> dict[str, tuple[float, float, float]]:
    """Two Figure 5-like curves E = a 10^(-b (x - X0)) + c crossing at `cross`."""
    ab, bb, cb, bv, cv = 0.3, 0.25, 0.15, 0.4, 0.11
    eb = ab * 10 ** (-bb * (cross - X0)) + cb
    return {"bit": (ab, bb, cb), "vit": ((eb - cv) * 10 ** (bv * (cross - X0)), bv, cv)}


def top1(params: tuple[float, float, float], x: float) -> float:
    a, b, c = params
    return 1 - (a * 10 ** (-b * (x - X0)) + c)


def pool(noise: float = 0.004, seeds: int = 3, lrs: tuple[str, ...] = ("",), cross: float = 16.6,
         bad_lr_penalty: float = 0.05, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    cands, rows, i = [], {}, 0
    for f, p in truth(cross).items():
        for x in XS:
            for lr in lrs:
                for seed in range(seeds):
                    rid = f"{f}-{x:.2f}-{lr}-{seed}"
                    cands.append(Candidate(i, (f"model={f}",), rid, f, f"{f}@{x:.3f}", lr, seed,
                                           10 ** x, 10 ** x))
                    y = top1(p, x) + rng.normal(0, noise) - (bad_lr_penalty if lr == "bad" else 0)
                    rows[rid] = {"status": "ok", "top1": y, "val_top1": y}
                    i += 1
    return cands, rows


def run_planner(planner: Planner, rows: dict, rounds: int = 100):
    got, log = {}, []
    for _ in range(rounds):
        rnd = planner.step(got, set())
        log.append(rnd)
        if rnd.stop or not rnd.chosen:
            break
        for ch in rnd.chosen:
            for c in ch.runs:
                got[c.run_id] = rows[c.run_id]
    return got, log


def test_the_surrogate_recovers_a_saturating_power_law_and_its_band_shrinks_with_data():
    p = truth()["vit"]
    x = np.repeat(XS, 3)
    rng = np.random.default_rng(1)
    y = np.array([top1(p, v) for v in x]) + rng.normal(0, 0.003, len(x))
    post = model.fit({"vit": (x, y)}, ["vit"], 16.5, [y[i:i + 3] for i in range(0, len(y), 3)])
    assert np.abs(post.mean("vit", XS) - [top1(p, v) for v in XS]).max() < 0.004
    assert 0.0015 < post.sigma < 0.006  # the seeds' pooled sd, not the default
    few = model.fit({"vit": (x[:9], y[:9])}, ["vit"], 16.5)
    assert few.sd("vit", 17.5)[0] > 2 * post.sd("vit", 17.5)[0]


def test_the_gain_of_a_run_is_the_variance_the_refit_loses():
    """Sherman-Morrison's prediction of a run's effect equals refitting with that run (the
    variance does not depend on the value the run returns: a value on the curve is used)."""
    p = truth()["bit"]
    x = np.array([15.0, 15.0, 15.6, 15.6, 16.2, 16.2])
    y = np.array([top1(p, v) for v in x]) + np.array([1, -1, 1, -1, 1, -1]) * 0.003
    post = model.fit({"bit": (x, y)}, ["bit"], 16.0)
    g = post.grad("bit", 17.5)[0]
    j = post.grad("bit", 17.0)[0]
    v = post.cov @ j
    predicted = float((g @ v) ** 2 / (post.sigma ** 2 + j @ v))
    before = float(g @ post.cov @ g)
    x2, y2 = np.append(x, 17.0), np.append(y, post.mean("bit", 17.0))
    after = model.fit({"bit": (x2, y2)}, ["bit"], 16.0)
    assert after.sigma == pytest.approx(post.sigma)
    lost = before - float(g @ after.cov @ g)
    assert lost == pytest.approx(predicted, rel=0.1)
    assert lost > 0.3 * before  # a run near the target is worth most of its variance


def test_the_crossover_of_the_full_grid_holds_the_true_crossing():
    cands, rows = pool(noise=0.002)
    planner = Planner("crossover", cands, 1e30)
    ans = planner.question.answer(planner.posterior(rows))
    assert ans.estimate == pytest.approx(16.6, abs=0.05)
    assert ans.ci[0] <= 16.6 <= ans.ci[1] and ans.width < 0.2
    lo_t, hi_t = min(ans.signs), max(ans.signs)
    assert ans.signs[lo_t] == -1 and ans.signs[hi_t] == 1  # BiT leads low, ViT leads high


def test_adaptive_rounds_stay_in_budget_and_reach_the_grids_answer_on_a_small_share():
    cands, rows = pool()
    total = sum(c.cost for c in cands)
    ref_planner = Planner("crossover", cands, total)
    ref = ref_planner.question.answer(ref_planner.posterior(rows))
    budget = 0.1 * total
    planner = Planner("crossover", cands, budget, batch=4)
    got, log = run_planner(planner, rows)
    spent = sum(c.cost for c in cands if c.run_id in got)
    assert spent <= budget
    assert log[-1].stop  # it says why it stopped
    ans = planner.question.answer(planner.posterior(got))
    assert reached(ans, ref)
    # the start design comes first: per family, the cheapest setting and two more spread
    # over the lower two thirds of the range (never the dearest end)
    first = [ch for ch in log[0].chosen]
    assert [ch.why.startswith("start") for ch in first] == [True] * len(first)
    assert {ch.runs[0].x for ch in first if ch.runs[0].family == "vit"} <= set(XS[:6])
    # every chosen run had a prediction with a band before it ran
    for rnd in log:
        for ch in rnd.chosen:
            m, lo, hi = ch.predicted
            assert lo < m < hi


def test_cheapest_first_does_not_reach_a_crossover_above_what_it_can_buy():
    cands, rows = pool(cross=17.2)
    total = sum(c.cost for c in cands)
    ref_planner = Planner("crossover", cands, total)
    ref = ref_planner.question.answer(ref_planner.posterior(rows))
    got, spent = {}, 0.0
    for c in sorted(cands, key=lambda c: c.cost):
        if spent + c.cost > 0.05 * total:  # it buys settings up to 10^16.7 FLOPs
            break
        got[c.run_id], spent = rows[c.run_id], spent + c.cost
    ans = ref_planner.question.answer(ref_planner.posterior(got))
    assert not reached(ans, ref)


def test_the_first_visit_tunes_and_later_visits_repeat_the_picked_tuning():
    cands, rows = pool(lrs=("good", "bad"))
    planner = Planner("crossover", cands, sum(c.cost for c in cands), batch=50)
    rnd = planner.step({}, set())
    for ch in rnd.chosen:  # both learning rates at the first seed
        assert sorted(c.tuning for c in ch.runs) == ["bad", "good"]
        assert {c.seed for c in ch.runs} == {0}
    got = {c.run_id: rows[c.run_id] for ch in rnd.chosen for c in ch.runs}
    again = planner.step(got, set())
    for ch in again.chosen:
        if ch.runs[0].setting in {c.setting for c in cands if c.run_id in got}:
            assert [c.tuning for c in ch.runs] == ["good"] and ch.runs[0].seed == 1


def test_decided_runs_count_as_spent_and_are_not_chosen_again():
    cands, rows = pool()
    planner = Planner("crossover", cands, sum(c.cost for c in cands))
    first = planner.step({}, set())
    decided = {c.run_id for ch in first.chosen for c in ch.runs}
    again = planner.step({}, decided)
    assert again.spent == pytest.approx(sum(c.cost for c in cands if c.run_id in decided))
    assert not decided & {c.run_id for ch in again.chosen for c in ch.runs}


def test_target_ci_stops_the_sweep():
    cands, rows = pool(noise=0.002)
    planner = Planner("crossover", cands, sum(c.cost for c in cands), target_ci=10.0)
    got, log = run_planner(planner, rows)
    assert "target_ci" in log[-1].stop
    # the start design (two rounds of 4), then the interval is already narrow enough
    assert [bool(r.chosen) and r.chosen[0].why.startswith("start") for r in log] == [
        True, True, False]


@pytest.mark.parametrize("kwargs, match", [
    ({"question": "pareto"}, "unknown study.question='pareto'; use one of crossover"),
    ({"budget": 1e14}, "smaller than the cheapest point"),
    ({"families": ["vit", "hybrid"]}, "not in the grid"),
    ({"question": "extrapolate"}, "needs study.targets"),
    ({"question": "extrapolate", "targets": [1e16]}, "inside the grid"),
])
def test_bad_input_is_one_line(kwargs, match):
    cands, _ = pool(seeds=1)
    args = {"question": "crossover", "budget": 1e20, **kwargs}
    with pytest.raises(ConfigError, match=match) as e:
        Planner(args.pop("question"), cands, args.pop("budget"),
                **{k: (list(np.log10(v)) if k == "targets" else v) for k, v in args.items()})
    assert "\n" not in str(e.value)


def test_frontier_and_extrapolate_give_each_familys_top1_with_a_band():
    cands, rows = pool(noise=0.002)
    for q, targets in (("frontier", None), ("extrapolate", [18.5])):
        planner = Planner(q, cands, 1e30, targets=targets)
        ans = planner.question.answer(planner.posterior(rows))
        assert set(ans.values) == {"bit", "vit"}
        for f, by_t in ans.values.items():
            for t, (m, lo, hi) in by_t.items():
                assert lo < top1(truth()[f], t) < hi or abs(m - top1(truth()[f], t)) < 0.005
        assert reached(ans, ans)


def test_start_predictions_say_they_are_the_priors_and_bands_stay_in_0_1():
    cands, rows = pool()
    planner = Planner("crossover", cands, sum(c.cost for c in cands))
    got, log = run_planner(planner, rows)
    start = [ch for rnd in log for ch in rnd.chosen if ch.why.startswith("start")]
    later = [ch for rnd in log for ch in rnd.chosen if not ch.why.startswith("start")]
    assert later
    # the first start choice of each family has seen no run of it: the prior's band
    assert {ch.runs[0].family for ch in start if ch.basis == "prior"} == {"vit", "bit"}
    assert all(ch.basis.startswith("fit on ") for ch in later)
    assert all(0.0 <= ch.predicted[1] <= ch.predicted[2] <= 1.0 for rnd in log for ch in rnd.chosen)


def test_where_the_grid_knows_no_sign_only_an_answer_that_claims_none_reaches_it():
    """A crossing point estimate inside an interval that spans the whole range is noise: the
    reference's answer is 'unknown', and an answer reaches it by claiming no sign either."""
    from benchbench.adaptive.questions import Answer

    ref = Answer("crossover", 11.9, (11.4, 11.9), 0.5, "decades", {11.5: 0}, undetermined=True)
    vague = Answer("crossover", None, (11.4, 11.9), 0.5, "decades", {11.5: 0}, undetermined=True)
    sure = Answer("crossover", 11.6, (11.55, 11.65), 0.1, "decades", {11.5: -1}, undetermined=False)
    assert reached(vague, ref) and not reached(sure, ref)


def test_the_crossover_is_asked_only_where_both_families_have_runs():
    cands, _ = pool(seeds=1)
    cut = [c for c in cands if not (c.family == "bit" and c.x < 16.0)]  # BiT starts at 10^16.3
    q = Planner("crossover", cut, 1e30).question
    assert q.x_range == (pytest.approx(min(c.x for c in cut if c.family == "bit")), 18.0)
    apart = [c for c in cands if (c.family == "bit") == (c.x < 16.0)]  # no shared compute
    with pytest.raises(ConfigError, match="computes do not overlap"):
        Planner("crossover", apart, 1e30)

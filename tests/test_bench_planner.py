"""make bench-planner (issue 25 item 5): the strategies, the reference answer and the output
files on small simulated pools, and the two Planner fixes the benchmark found."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from benchbench.adaptive.design import Planner
from benchbench.adaptive.questions import reached
from benchbench.bench import planner as bp

NOISE = 0.003  # about fashion_mnist_compute's pooled seed sd


@pytest.fixture(autouse=True)
def _quiet_overflow():
    with np.errstate(over="ignore"):
        yield


def _small(seed: int = 0, noise: float = NOISE):
    return bp.simulated_pool(seed, noise, computes=5, seeds=2)


def _reference(cands, rows):
    pl = Planner("crossover", cands, sum(c.cost for c in cands))
    return pl, pl.question.answer(pl.posterior(rows))


def test_the_full_grid_at_100_percent_reaches_its_own_answer_and_buys_nothing_less():
    for seed in range(3):
        pool, _ = _small(seed)
        lines = bp.evaluate("simulated", pool, seed, [0], [0.5, 1.0], strategies=("grid",))
        by = {r["budget"]: r for r in lines}
        assert by[1.0]["success"] and by[1.0]["spent_share"] == pytest.approx(1.0)
        assert not by[0.5]["success"] and by[0.5]["runs"] == 0


def test_a_low_noise_pools_true_crossover_lies_inside_the_reference_interval():
    for seed in range(4):
        (cands, rows), true = _small(seed, noise=1e-4)
        _, ref = _reference(cands, rows)
        assert ref.ci is not None and ref.ci[0] <= true <= ref.ci[1], (seed, true, ref.ci)
        x = [c.x for c in cands]  # drawn in the middle third of the range
        assert min(x) + 0.9 <= true <= max(x) - 0.9


def test_cheapest_first_cannot_reach_a_crossover_above_the_compute_it_buys():
    for seed in range(3):
        (cands, rows), true = _small(seed)
        pl, ref = _reference(cands, rows)
        lowest = min(c.x for c in cands)
        budget = sum(c.cost for c in cands if c.x == lowest) * (1 + 1e-9)
        bought = bp.buy_in_order(bp.order("cheapest", cands, None), budget)
        assert {c.x for c in bought} == {lowest} and max(c.x for c in bought) < true
        ans = pl.question.answer(pl.posterior({c.run_id: rows[c.run_id] for c in bought}))
        assert not reached(ans, ref)


def test_cost_weighted_random_favours_cheap_runs_at_flop_scale_costs():
    """Costs of 1e19-1e23 FLOPs: u ** cost underflowed to 0 for every run, which left the grid
    order (all of one family first); the log keys keep draws proportional to 1/cost."""
    cands = _small()[0][0]
    rng = np.random.default_rng(0)
    first = [bp.order("cost_weighted", cands, rng)[0] for _ in range(200)]
    cheapest = min(c.cost for c in cands)
    assert np.mean([c.cost == cheapest for c in first]) > 0.5
    assert len({c.family for c in first}) == 2


def test_adaptive_never_spends_more_than_its_budget():
    pool, _ = _small(1)
    cands, rows = pool
    total = sum(c.cost for c in cands)
    for f in (0.005, 0.02, 0.05, 0.1, 0.3):
        bought = bp.adaptive(cands, rows, f * total)
        assert len({c.run_id for c in bought}) == len(bought)
        assert sum(c.cost for c in bought) <= f * total


def test_the_start_design_stays_within_its_share_of_a_small_budget():
    """At 2% of a Figure 5-like grid the old start design (each family's three settings, ViT's
    first) spent ~77% of the budget on ViT's 1.3-decade point before BiT had two points."""
    (cands, rows), _ = bp.simulated_pool(0, NOISE)
    budget = 0.02 * sum(c.cost for c in cands)
    pl = Planner("crossover", cands, budget)
    got, start = {}, []
    for _ in range(20):
        rnd = pl.step(got, set(got))
        if rnd.stop or not rnd.chosen:
            break
        for ch in rnd.chosen:
            start += ch.runs if ch.why.startswith("start") else []
            got.update({c.run_id: rows[c.run_id] for c in ch.runs})
    assert sum(c.cost for c in start) <= pl.start_share * budget
    assert {c.family for c in start} == {"vit", "bit"}


@pytest.mark.parametrize("seed", [3, 5, 8])
def test_adaptive_reaches_the_grids_answer_at_10_percent(seed):
    """These pools stopped at ~3.5% of the grid with 'no candidate helps': the best gain per
    cost was a cheap run below min_gain while dearer runs near the crossing still helped."""
    (cands, rows), _ = bp.simulated_pool(seed, bp.measured_noise(bp.fashion_pool()))
    pl, ref = _reference(cands, rows)
    bought = bp.adaptive(cands, rows, 0.1 * sum(c.cost for c in cands))
    ans = pl.question.answer(pl.posterior({c.run_id: rows[c.run_id] for c in bought}))
    assert reached(ans, ref)


def test_the_csv_has_one_line_per_pool_seed_strategy_and_budget(tmp_path):
    budgets = [0.05, 1.0]
    lines = bp.run(tmp_path, 2, budgets, fashion=None, computes=5, seeds=2, noise=NOISE)
    with open(tmp_path / "runs.csv") as fh:
        got = list(csv.DictReader(fh))
    keys = [(r["pool"], r["pool_seed"], r["seed"], r["strategy"], r["budget"]) for r in got]
    assert len(got) == len(lines) == 2 * len(bp.STRATEGIES) * len(budgets) == len(set(keys))
    summary = (tmp_path / "summary.md").read_text()
    assert "| strategy | 5% | 100% | median share needed | never |" in summary
    assert "| grid | 0% | 100% | 100% | 0/2 |" in summary


def test_needed_is_the_budget_from_which_every_larger_one_reaches():
    line = {"pool": "p", "pool_seed": 0, "seed": 0, "strategy": "s"}
    hits = {0.01: True, 0.02: False, 0.05: True, 0.1: True, 1.0: True}
    got = bp.needed([{**line, "budget": b, "success": ok} for b, ok in hits.items()])
    assert got == {("p", 0, 0, "s"): 0.05}
    hits[1.0] = False
    got = bp.needed([{**line, "budget": b, "success": ok} for b, ok in hits.items()])
    assert got == {("p", 0, 0, "s"): None}


def test_the_fashion_pool_and_its_measured_noise():
    cands, rows = bp.fashion_pool()
    assert len(cands) == 36 and {c.family for c in cands} == {"vit", "bit"}
    assert len({c.setting for c in cands}) == 6 and {c.tuning for c in cands} == {
        "train.lr=0.001", "train.lr=0.003"}
    assert 0.001 < bp.measured_noise((cands, rows)) < 0.02


def test_bad_budgets_get_one_line(capsys):
    with pytest.raises(SystemExit):
        bp.main(["--budgets", "0,2"])
    assert "--budgets are fractions of the grid's cost in (0, 1]" in capsys.readouterr().err

"""The adaptive planner against the full grid and three fixed orders, on pools of known rows.

    python -m benchbench.bench.planner [--out results/bench_planner] [--pools 20]
                                       [--budgets 0.01,0.02,0.05,0.1,0.2,0.5,1]

A pool is a grid whose every row is known in advance; a strategy buys rows from it up to a
budget (a fraction of the whole grid's cost) and answers the crossover question with the
planner's surrogate fitted on what it bought. The full grid's answer (the surrogate fitted on
every row) is the reference; a strategy reaches it when questions.reached says so (the same
crossing verdict, the crossing inside the reference's interval, the reference's known signs).

Strategies: adaptive (design.Planner looped until it stops), grid (all or nothing), random
(uniform order), cheapest (cheapest first), cost-weighted random (drawn with probability
proportional to 1/cost, without replacement). An order buys every run that still fits.

Pools: the committed fashion_mnist_compute rows (the random orders over --pools seeds), and
--pools simulated pools of saturating power laws E = a C^-b + c per family shaped like the
paper's Figure 5 (/work/shared/reference/vit-scaling-study.md, "Scaling study"; arXiv
2010.11929 Fig. 5: the ViT curve steeper, with a lower floor; here BiT leads at small compute
so the curves cross inside the range), with the seed noise measured on fashion_mnist_compute.
Writes runs.csv (one line per pool, seed, strategy, budget) and summary.md.
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import shlex
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchbench.adaptive.design import Candidate, Planner, from_rows
from benchbench.adaptive.model import pooled_sd
from benchbench.adaptive.questions import reached
from benchbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
FASHION = REPO / "results" / "fashion_mnist_compute"
BUDGETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
STRATEGIES = ("adaptive", "grid", "random", "cheapest", "cost_weighted")
ORDERED = ("random", "cheapest", "cost_weighted")
X0 = math.log10(5e19)  # the simulated grids start at Figure 5's smallest compute (~50 exaFLOPs)
FIELDS = ("pool", "pool_seed", "seed", "strategy", "budget", "success", "spent_share", "runs",
          "estimate", "ref_estimate")

Pool = tuple[list[Candidate], dict[str, dict[str, Any]]]  # candidates, run_id -> row


# -- pools ---------------------------------------------------------------------------------
def fashion_pool(results: Path = FASHION) -> Pool:
    """The committed rows as a pool: family from the row, setting/tuning/seed by identify."""
    from benchbench.results import load_rows

    cands, rows = from_rows(load_rows(results)[0])
    if not rows:
        raise ConfigError(f"no ok rows under {results}; pass --fashion DIR with a study's rows.")
    return cands, rows


def measured_noise(pool: Pool) -> float:
    """The seeds' pooled sd of top-1 over the pool's repeated (setting, tuning) groups."""
    cands, rows = pool
    groups = defaultdict(list)
    for c in cands:
        groups[(c.setting, c.tuning)].append(float(rows[c.run_id]["top1"]))
    sd = pooled_sd([np.array(v) for v in groups.values()])
    if sd is None:
        raise ConfigError("the fashion pool repeats no setting, so it measures no seed noise.")
    return sd


def figure5_curves(rng: np.random.Generator, decades: float) -> tuple[dict[str, tuple], float]:
    """Per family (a, b, c) of E = a 10^(-b u) + c, u = decades above the grid's start, and
    the crossing u* drawn in the middle third: BiT (R50x1-like error ~22% at the start, floor
    ~10%), ViT steeper with a floor 3-5 points lower, through BiT's error at u*."""
    while True:
        u_star = rng.uniform(decades / 3, 2 * decades / 3)
        cb, bb = rng.uniform(0.08, 0.12), rng.uniform(0.3, 0.5)
        ab = rng.uniform(0.20, 0.25) - cb
        cv, bv = cb - rng.uniform(0.03, 0.05), bb + rng.uniform(0.1, 0.3)
        e_star = ab * 10 ** (-bb * u_star) + cb
        av = (e_star - cv) * 10 ** (bv * u_star)
        if av + cv < 0.6:  # ViT's error at the grid's start stays a plausible one
            return {"bit": (ab, bb, cb), "vit": (av, bv, cv)}, u_star


def simulated_pool(seed: int, noise: float, *, computes: int = 8, decades: float = 3.0,
                   seeds: int = 3) -> tuple[Pool, float]:
    """A Figure 5-like pool (cost = train FLOPs) and its true crossover (log10 FLOPs)."""
    rng = np.random.default_rng(seed)
    curves, u_star = figure5_curves(rng, decades)
    cands, rows = [], {}
    for fam, (a, b, c) in curves.items():
        for i, u in enumerate(np.linspace(0, decades, computes)):
            flops = 10 ** (X0 + u)
            for s in range(seeds):
                rid = f"{fam}-{i}-s{s}"
                top1 = 1 - (a * 10 ** (-b * u) + c) + rng.normal(0, noise)
                cands.append(Candidate(len(cands), (), rid, fam, f"{fam}@{i}", "", s, flops, flops))
                rows[rid] = {"status": "ok", "top1": top1, "val_top1": top1}
    return (cands, rows), X0 + u_star


# -- strategies ----------------------------------------------------------------------------
def order(strategy: str, cands: list[Candidate], rng: np.random.Generator) -> list[Candidate]:
    if strategy == "random":
        return [cands[i] for i in rng.permutation(len(cands))]
    if strategy == "cheapest":  # ties (seeds of one setting) in grid order
        return sorted(cands, key=lambda c: (c.cost, c.index))
    if strategy == "cost_weighted":  # Efraimidis-Spirakis: draws without replacement ~ 1/cost
        keys = np.log(rng.random(len(cands))) * np.array([c.cost for c in cands])  # log u^cost
        return [cands[i] for i in np.argsort(-keys, kind="stable")]
    raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(ORDERED)}.")


def buy_in_order(ranked: list[Candidate], budget: float) -> list[Candidate]:
    """Every run of the order that still fits the budget (a dear one is skipped, not an end)."""
    bought, left = [], budget
    for c in ranked:
        if c.cost <= left:
            bought.append(c)
            left -= c.cost
    return bought


def adaptive(cands: list[Candidate], rows: dict[str, dict], budget: float, **kw: Any
             ) -> list[Candidate]:
    """The planner's rounds, each chosen run answered at once from the pool."""
    try:
        planner = Planner("crossover", cands, budget, **kw)
    except ConfigError:  # the budget buys no visit at all
        return []
    got: dict[str, dict] = {}
    bought: list[Candidate] = []
    for _ in range(len(cands) + 1):
        rnd = planner.step(got, set(got))
        if rnd.stop or not rnd.chosen:
            break
        for ch in rnd.chosen:
            for c in ch.runs:
                got[c.run_id] = rows[c.run_id]
                bought.append(c)
    return bought


# -- the benchmark -------------------------------------------------------------------------
def evaluate(name: str, pool: Pool, pool_seed: int, seeds: list[int], budgets: list[float],
             strategies: tuple[str, ...] = STRATEGIES) -> list[dict[str, Any]]:
    """One CSV line per (seed, strategy, budget): did the bought rows reach the grid's answer.
    Deterministic strategies (adaptive, grid, cheapest) run at the first seed only."""
    cands, rows = pool
    ref_planner = Planner("crossover", cands, sum(c.cost for c in cands))
    question = ref_planner.question
    ref = question.answer(ref_planner.posterior(rows))
    total = sum(c.cost for c in cands)
    out = []
    for strategy in strategies:
        for seed in (seeds if strategy in ("random", "cost_weighted") else seeds[:1]):
            ranked = order(strategy, cands, np.random.default_rng([pool_seed, seed])
                           ) if strategy in ORDERED else None
            for f in budgets:
                budget = f * total * (1 + 1e-9)  # 100% buys the whole grid despite rounding
                if strategy == "adaptive":
                    bought = adaptive(cands, rows, budget)
                elif strategy == "grid":
                    bought = list(cands) if f >= 1 else []
                else:
                    bought = buy_in_order(ranked, budget)
                got = {c.run_id: rows[c.run_id] for c in bought}
                ans = question.answer(ref_planner.posterior(got))
                out.append({"pool": name, "pool_seed": pool_seed, "seed": seed,
                            "strategy": strategy, "budget": f,
                            "success": bool(bought) and reached(ans, ref),
                            "spent_share": sum(c.cost for c in bought) / total,
                            "runs": len(bought), "estimate": ans.estimate,
                            "ref_estimate": ref.estimate})
    return out


def needed(lines: list[dict[str, Any]]) -> dict[tuple, float | None]:
    """(pool, pool_seed, seed, strategy) -> the smallest budget share from which every larger
    budget reaches the answer too (a lucky hit at 1% followed by misses does not count);
    None: not even the largest budget reaches it."""
    runs: dict[tuple, list[tuple[float, bool]]] = defaultdict(list)
    for r in lines:
        runs[(r["pool"], r["pool_seed"], r["seed"], r["strategy"])].append((r["budget"], r["success"]))
    out: dict[tuple, float | None] = {}
    for k, hits in runs.items():
        out[k] = None
        for b, ok in sorted(hits, reverse=True):  # dearest first, back while it still reaches
            if not ok:
                break
            out[k] = b
    return out


def summary_table(lines: list[dict[str, Any]], pool: str, budgets: list[float]) -> list[str]:
    mine = [r for r in lines if r["pool"] == pool]
    need = {k: v for k, v in needed(mine).items()}
    head = ["strategy"] + [f"{100 * b:g}%" for b in budgets] + ["median share needed", "never"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in STRATEGIES:
        cells = [s]
        for b in budgets:
            ok = [r["success"] for r in mine if r["strategy"] == s and r["budget"] == b]
            cells.append(f"{100 * np.mean(ok):.0f}%" if ok else "")
        shares = [v for k, v in need.items() if k[3] == s]
        hit = [v for v in shares if v is not None]
        cells.append(f"{100 * float(np.median([v if v is not None else math.inf for v in shares])):g}%"
                     if len(hit) * 2 > len(shares) else "not reached")
        cells.append(f"{len(shares) - len(hit)}/{len(shares)}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def verdict(lines: list[dict[str, Any]], pool: str, budgets: list[float]) -> str:
    """The issue's goal on one pool: adaptive's median share <= 10% and a success rate above
    every baseline's at every budget below 100%."""
    rate = {(s, b): np.mean([r["success"] for r in lines if r["pool"] == pool
                             and r["strategy"] == s and r["budget"] == b])
            for s in STRATEGIES for b in budgets}
    lost = [f"{s} at {100 * b:g}%" for b in budgets if b < 1 for s in STRATEGIES
            if s != "adaptive" and rate[(s, b)] > 0 and (rate[("adaptive", b)] < rate[(s, b)]
                                                        or rate[("adaptive", b)] == rate[(s, b)] < 1)]
    shares = [v for k, v in needed([r for r in lines if r["pool"] == pool]).items()
              if k[3] == "adaptive"]
    med = float(np.median([v if v is not None else math.inf for v in shares]))
    return (f"adaptive's median share needed: {100 * med:g}% (goal <= 10%: "
            f"{'met' if med <= 0.1 else 'missed'}); not ahead of "
            + (", ".join(lost) if lost else "no baseline at any budget below 100%"))


def write(out: Path, lines: list[dict[str, Any]], budgets: list[float], meta: dict[str, Any]
          ) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(lines)
    text = ["# Planner benchmark", "",
            f"Command: `{meta['command']}`  ", f"Date: {meta['date']}; host: {meta['host']}; "
            f"{meta['wall_s']:.1f} s wall, torch imported: {meta['torch']}.  ",
            f"Seed noise (pooled sd of top-1, fashion_mnist_compute): {meta['noise']:.4f}.", "",
            "Success = the runs bought within the budget (share of the full grid's cost) give the "
            "full grid's crossover answer (questions.reached). Share needed: the smallest "
            "budget from which every larger one reaches it, median over seeds (a seed that never "
            "does counts as infinite); never: seeds that do not reach it even at the largest.", ""]
    for pool in dict.fromkeys(r["pool"] for r in lines):
        n = len({(r["pool_seed"], r["seed"]) for r in lines if r["pool"] == pool})
        text += [f"## {pool} ({n} pool x order seeds)", "", *summary_table(lines, pool, budgets),
                 "", verdict(lines, pool, budgets), ""]
    (out / "summary.md").write_text("\n".join(text))


def run(out: Path, pools: int, budgets: list[float], fashion: Path | None = FASHION, *,
        computes: int = 8, seeds: int = 3, noise: float | None = None,
        command: str = "python -m benchbench.bench.planner") -> list[dict[str, Any]]:
    """Every pool's lines (fashion's first when `fashion` is given), written under `out`."""
    t0 = time.perf_counter()
    lines: list[dict[str, Any]] = []
    with np.errstate(over="ignore"):  # exp overflows in far-off fits: a huge error, not a fault
        if fashion is not None:
            fpool = fashion_pool(fashion)
            noise = measured_noise(fpool) if noise is None else noise
            lines += evaluate("fashion_mnist_compute", fpool, 0, list(range(pools)), budgets)
        if noise is None:
            raise ConfigError("pass --noise SD, or --fashion DIR to measure it from rows.")
        for p in range(pools):
            pool, _ = simulated_pool(p, noise, computes=computes, seeds=seeds)
            lines += evaluate("simulated", pool, p, [0], budgets)
    meta = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": f"{platform.node()} ({platform.machine()}, {platform.python_version()})",
            "wall_s": time.perf_counter() - t0, "torch": "torch" in sys.modules, "noise": noise}
    write(out, lines, budgets, meta)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchbench.bench.planner", description=__doc__
                                 .split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench_planner")
    ap.add_argument("--pools", type=int, default=20, help="simulated pools (and random orders)")
    ap.add_argument("--budgets", default=",".join(f"{b:g}" for b in BUDGETS))
    ap.add_argument("--fashion", type=Path, default=FASHION, help="a study's rows as a pool")
    ap.add_argument("--no-fashion", action="store_true", help="simulated pools only (--noise)")
    ap.add_argument("--noise", type=float, default=None, help="seed sd (default: measured)")
    a = ap.parse_args(argv)
    try:
        budgets = sorted(float(b) for b in a.budgets.split(","))
    except ValueError:
        ap.error(f"--budgets {a.budgets!r}: give fractions of the grid's cost, e.g. 0.05,0.1,1.")
    if not budgets or not all(0 < b <= 1 for b in budgets):
        ap.error("--budgets are fractions of the grid's cost in (0, 1].")
    try:
        run(a.out, a.pools, budgets, None if a.no_fashion else a.fashion, noise=a.noise,
            command=shlex.join(["python", "-m", "benchbench.bench.planner",
                                *(sys.argv[1:] if argv is None else argv)]))
    except ConfigError as e:
        ap.exit(2, f"bench-planner: {e}\n")
    print((a.out / "summary.md").read_text())


if __name__ == "__main__":
    main()

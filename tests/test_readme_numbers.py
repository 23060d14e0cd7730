"""Issue 24 item 8: every number the README quotes from a committed study is recomputed here
from that study's rows (results/<study>/runs) or its report's tables and findings, so the
README cannot drift from the reports. A claim is a README sentence with {} slots and the
values that fill them; the test asserts the README holds the sentence as the data write it."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _rows(study: str) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in (REPO / "results" / study / "runs").glob("*.json")]
    return [r for r in rows if r["status"] == "ok" and r.get("task") != "measure"]


def _one(study: str, **match) -> dict:
    """The single ok row of `study` whose columns equal `match` (epochs rounded)."""
    got = [r for r in _rows(study)
           if all((round(r[k]) if k == "epochs" else r[k]) == v for k, v in match.items())]
    assert len(got) == 1, (study, match, len(got))
    return got[0]


def _pct(study: str, col: str = "top1", **match) -> float:
    return 100 * _one(study, **match)[col]


def _val_best(study: str, family: str, **match) -> dict:
    """The row of `family` that validation picks among the rows matching `match`."""
    got = [r for r in _rows(study) if r["family"] == family
           and all(r[k] == v for k, v in match.items())]
    return max(got, key=lambda r: r["val_top1"])


def _lr_chosen(study: str, model: str, epochs: int) -> float:
    """fashion_mnist_compute: the test mean over seeds at the lr with the best val mean."""
    by_lr = defaultdict(list)
    for r in _rows(study):
        if r["model"] == model and round(r["epochs"]) == epochs:
            by_lr[r["lr"]].append(r)
    best = max(by_lr.values(), key=lambda rs: np.mean([r["val_top1"] for r in rs]))
    return 100 * float(np.mean([r["top1"] for r in best]))


def _equal_compute(study: str, budget: float) -> pd.Series:
    t = pd.read_csv(REPO / "results" / study / "report" / "equal_compute.csv")
    return t[np.isclose(t["budget [FLOPs]"], budget)].iloc[0]


def _finding(study: str, pattern: str) -> tuple[str, ...]:
    text = (REPO / "results" / study / "report" / "report.md").read_text()
    m = re.search(pattern, text)
    assert m, (study, pattern)
    return m.groups()


def _demo():
    hybrids = [r["top1"] for r in _rows("demo") if r["family"] == "hybrid"]
    return [
        ("R-micro {:.1f}% after 3 epochs, {:.1f}% after 10",
         [_pct("demo", model="R-micro", epochs=3), _pct("demo", model="R-micro", epochs=10)]),
        ("the hybrids up to {:.1f}%", [100 * max(hybrids)]),
        ("ViT-micro/8 {:.1f}% / {:.1f}%",
         [_pct("demo", model="ViT-micro/8", epochs=3), _pct("demo", model="ViT-micro/8", epochs=10)]),
        ("ViT-micro/16 (4 tokens) never leaves it ({:.1f}% / {:.1f}%)",
         [_pct("demo", model="ViT-micro/16", epochs=3), _pct("demo", model="ViT-micro/16", epochs=10)]),
    ]


def _compute():
    s = "fashion_mnist_compute"
    r = _equal_compute(s, 2.7e11)
    assert r["A basis"] == "run" and r["B basis"] == "run" and not r["called"]
    held = _equal_compute(s, 8.3e11)
    assert held["A basis"] == "held"  # ViT's value there is held flat: README compares nothing
    gains = [_lr_chosen(s, m, 6) - _lr_chosen(s, m, 2) for m in ("ViT-micro/16", "ViT-micro/8", "R-micro")]
    return [
        ("BiT ({:.1f}%) and ViT ({:.1f}%) are within noise (BiT ahead by {:.1f} points, 95% CI "
         "[{:.1f}, {:.1f}], not called)",
         [r["B top-1 [%]"], r["A top-1 [%]"], -r["A - B [pts]"], -r["A - B CI high [pts]"],
          -r["A - B CI low [pts]"]]),
        ("BiT's {:.1f}% after 6 epochs", [_lr_chosen(s, "R-micro", 6)]),
        ("gains ViT-micro/16 {:.1f} points, ViT-micro/8 {:.1f} and R-micro {:.1f}", gains),
    ]


def _scaling():
    s = "fashion_mnist_scaling"
    at9k = [_val_best(s, f, train_size=9000)["top1"] * 100 for f in ("bit", "hybrid", "vit")]
    return [
        ("R-micro has the highest top-1 at 1k ({:.1f}% against ViT-micro/16's {:.1f}%)",
         [_val_best(s, "bit", train_size=1000)["top1"] * 100,
          _pct(s, model="ViT-micro/16", train_size=1000)]),
        ("at 9k R-micro ({:.1f}%), the best hybrid ({:.1f}%) and ViT-micro/16 ({:.1f}%) are "
         "within {:.1f} points of each other", [*at9k, max(at9k) - min(at9k)]),
    ]


def _transfer():
    s = "transfer_demo"
    ft = [_one(s, task="transfer", model="R-micro", pretrain_train_size=n) for n in (1000, 3000, 9000)]
    assert all(r["fewshot_shots"] == 5 for r in ft)  # fewshot_top1 is the 5-shot probe
    return [("R-micro {:.1f}% / {:.1f}% / {:.1f}% after pre-training on 1k / 3k / 9k images; "
             "5-shot probe {:.1f}% / {:.1f}% / {:.1f}%",
             [100 * r["top1"] for r in ft] + [100 * r["fewshot_top1"] for r in ft])]


def _seed_vit():
    rows = sorted(_rows("seed_vit_fashion_mnist"), key=lambda r: r["seed"])
    assert [r["seed"] for r in rows] == [0, 1, 2]
    return [("`data=fashion_mnist`: {:.1f}% / {:.1f}% / {:.1f}% over 3 seeds",
             [100 * r["top1"] for r in rows])]


def _internals():
    s = "fashion_mnist_internals"
    first = _finding(s, r"first-layer mean attention distance is ([\d.]+ ± [\d.]+) \(s\.d\., 3 runs\) "
                        r"px at 1k training images and ([\d.]+ ± [\d.]+) \(s\.d\., 3 runs\) px at 58k")
    excess = _finding(s, r"row/column excess of the position similarity is ([\d.]+ ± [\d.]+) \(s\.d\., "
                         r"3 runs\) at 1k training images and ([\d.]+ ± [\d.]+) \(s\.d\., 3 runs\) at 58k")
    span = _finding(s, r"first-layer heads span ([\d.]+-[\d.]+) px .* would give ([\d.]+) px")
    return [("the first layer's mean is {} px at 1k and {} px at 58k", list(first)),
            ("the row/column excess is {} at 1k and {} at 58k", list(excess)),
            ("first-layer heads at 58k span {} px, where uniform attention over every token (the "
             "class token at 0 px) gives {} px", list(span))]


def _adaptive():
    """fashion_mnist_adaptive: its spend and answer (plan/rounds.jsonl), the whole grid's answer
    (the same surrogate on fashion_mnist_compute's rows), and its predictions' coverage."""
    from benchbench.adaptive.design import Planner
    from benchbench.bench.planner import fashion_pool

    s = "fashion_mnist_adaptive"
    rounds = [json.loads(x) for x in (REPO / "results" / s / "plan" / "rounds.jsonl")
              .read_text().splitlines() if x.strip()]
    last = rounds[-1]
    from benchbench.adaptive.design import from_rows
    from benchbench.adaptive.questions import reached
    from benchbench.results import load_rows

    cands, pool_rows = fashion_pool(REPO / "results" / "fashion_mnist_compute")
    grid = Planner("crossover", cands, 1e30)
    ref = grid.question.answer(grid.posterior(pool_rows))
    mine = grid.question.answer(grid.posterior(from_rows(load_rows(REPO / "results" / s)[0])[1]))
    assert mine.summary() == last["answer"]["summary"]  # the sweep's rows give its answer
    assert reached(mine, ref), "the README says the sweep's answer is inside the grid's"
    cover = _finding(s, r"\*\*(\d+ of \d+) runs inside their 90% bands")
    return [("stopped after round {} with {} runs and {:.4g} train FLOPs, {:.1%} of the whole "
             "grid's {:.4g}", [last["round"], len(_rows(s)), last["spent"],
                               last["spent"] / last["grid"], last["grid"]]),
            ("Its answer: {}.", [last["answer"]["summary"]]),
            ("whole grid's answer (the same surrogate on all {} runs): {}.",
             [len(pool_rows), ref.summary()]),
            ("{} scored predictions fell inside their 90% bands", list(cover))]


CLAIMS = {"demo": _demo, "fashion_mnist_adaptive": _adaptive, "fashion_mnist_compute": _compute, "fashion_mnist_scaling": _scaling,
          "transfer_demo": _transfer, "seed_vit_fashion_mnist": _seed_vit,
          "fashion_mnist_internals": _internals}


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("study", sorted(CLAIMS))
def test_readme_numbers_match_the_committed_study(study):
    if not (REPO / "results" / study / "runs").is_dir():
        pytest.fail(f"results/{study} is quoted by the README but not committed")
    readme = _flat(README)
    for template, values in CLAIMS[study]():
        sentence = template.format(*values)
        assert _flat(sentence) in readme, f"README should say: {sentence}"


def test_a_changed_number_is_caught(monkeypatch):
    """The check can fail: the demo's README sentence with one digit changed is not found."""
    template, values = _demo()[0]
    wrong = template.format(values[0] + 0.1, values[1])
    assert _flat(wrong) not in _flat(README)


def test_readme_planner_tables_match_the_committed_benchmark():
    """Issue 25 item 5: the README's bench-planner tables are results/bench_planner/summary.md's
    (make bench-planner writes it; the integrator commits it)."""
    summary = REPO / "results" / "bench_planner" / "summary.md"
    if not summary.is_file():
        pytest.skip("results/bench_planner/summary.md is not committed: run make bench-planner")
    text = summary.read_text()
    for line in (ln for ln in text.splitlines() if ln.startswith("|")):
        assert line in README, f"README should hold the bench-planner table line: {line}"
    noise = re.search(r"Seed noise \(pooled sd of top-1, fashion_mnist_compute\): ([\d.]*\d)", text)
    assert noise and f"(pooled sd {noise.group(1)})" in README

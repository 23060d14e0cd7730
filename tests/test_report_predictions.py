"""The report's "Predictions vs outcomes" (issue 25 item 3): decisions joined to rows and
scored, and the plain-grid holdout (fit on the cheaper half, predict the dearer half)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchbench.report import predictions
from benchbench.report.cli import main
from benchbench.report.load import load_study
from benchbench.results import run_id_of, write_row


def row(family: str, model: str, flops: float, lr: float, seed: int, top1: float,
        val: float, status: str = "ok") -> dict:
    cfg = {"model": {"name": model}, "data": {"name": "synthetic", "image_size": 32},
           "train": {"flops": flops, "lr": lr, "batch_size": 64}, "task": {"name": "train"},
           "seed": seed}
    r = dict(run_id=run_id_of(cfg), study="pred", status=status, family=family, model=model,
             patch_size=8 if family == "vit" else None, image_size=32, num_classes=10,
             train_flops=flops, dataset="synthetic", train_size=1000, seed=seed, task="train",
             config=cfg, world_size=1, wall_s=10.0, batch_size=64)
    if status == "ok":
        r.update(top1=top1, val_top1=val)
    else:
        r["error"] = "RuntimeError: loss is NaN"
    return r


def decision(r: dict, mean: float, lo: float, hi: float, rnd: int = 0) -> dict:
    return {"round": rnd, "run_id": r["run_id"], "family": r["family"], "band": 0.9,
            "train_flops": r["train_flops"], "cost": r["train_flops"], "cost_unit": "FLOPs",
            "predicted_top1": mean, "predicted_top1_lo": lo, "predicted_top1_hi": hi,
            "why": "start", "question": "extrapolate", "decided_at": "2026-01-01T00:00:00Z"}


@pytest.fixture
def adaptive_dir(tmp_path: Path) -> Path:
    """Three scored runs (2 inside their bands), a tuning run validation does not pick, a
    decision not run yet, a failed run, and two corrupt decisions lines."""
    root = tmp_path / "adaptive"
    a_pick = row("vit", "ViT-micro/8", 1e12, 0.003, 0, 0.81, 0.80)
    a_other = row("vit", "ViT-micro/8", 1e12, 0.001, 0, 0.50, 0.70)  # validation: worse
    b = row("vit", "ViT-micro/8", 3e12, 0.003, 0, 0.86, 0.85)
    c = row("vit", "ViT-micro/8", 1e13, 0.003, 0, 0.95, 0.94)
    bad = row("vit", "ViT-micro/8", 3e13, 0.003, 0, 0, 0, status="failed")
    for r in (a_pick, a_other, b, c, bad):
        write_row(r, root)
    lines = [decision(a_pick, 0.80, 0.78, 0.82), decision(a_other, 0.80, 0.78, 0.82),
             decision(b, 0.85, 0.83, 0.87, 1), decision(c, 0.90, 0.88, 0.92, 1),
             decision(bad, 0.9, 0.88, 0.92, 2),
             {**decision(c, 0.9, 0.88, 0.92), "run_id": "0123456789ab"}]  # not run yet
    text = [json.dumps(x) for x in lines]
    text.insert(2, '{"run_id": "abc", "predicted_top1": 0.8')  # line 3: cut short
    text.append(json.dumps({**lines[0], "predicted_top1_lo": None}))  # line 8: no lo
    (root / "plan").mkdir()
    (root / "plan" / "decisions.jsonl").write_text("\n".join(text) + "\n")
    rounds = [{"round": 0, "spent": 2e12, "budget": 5e13, "answer": {"summary": "acc 0.9 +- 0.1"},
               "stop": None},
              {"round": 1, "spent": 1.5e13, "budget": 5e13, "answer": {"summary": "acc 0.93 +- 0.03"},
               "stop": "target_ci"}]
    (root / "plan" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    return root


def test_decisions_coverage_is_counted_by_hand(adaptive_dir):
    pred = predictions.from_decisions(load_study(adaptive_dir))
    s = pred.scored
    assert pred.mode == "decisions" and len(s) == 3
    assert list(s["inside"]) == [True, True, False]  # 0.81 in [.78,.82], 0.86 in [.83,.87], 0.95 out
    k, n, lo, hi = pred.coverage
    assert (k, n) == (2, 3)
    assert hi == pytest.approx(0.975 ** (1 / 3))  # Clopper-Pearson upper for k = n - 1
    assert 3 * lo ** 2 - 2 * lo ** 3 == pytest.approx(0.025)  # Beta(2, 2) CDF at the lower
    assert s["error_points"].mean() == pytest.approx((1 + 1 + 5) / 3)
    assert "2 of 3 runs inside their 90% bands" in pred.verdict()
    assert "+2.33 points" in pred.verdict()


def test_non_selected_tuning_run_is_not_scored(adaptive_dir):
    study = load_study(adaptive_dir)
    pred = predictions.from_decisions(study)
    other = study.train[study.train["config"].map(lambda c: c["train"]["lr"]) == 0.001]
    assert other["run_id"].iloc[0] not in set(pred.scored["run_id"])
    text = " ".join(pred.lines)
    assert "6 decision(s): 3 scored" in text and "1 tuning run(s) not scored" in text
    assert "1 not run yet" in text and "1 failed" in text


def test_corrupt_decisions_lines_are_skipped_and_named(adaptive_dir, tmp_path, capsys):
    f = adaptive_dir / "plan" / "decisions.jsonl"
    pred = predictions.from_decisions(load_study(adaptive_dir))
    assert pred.skipped == [f"{f}:3: not JSON", f"{f}:8: no valid predicted_top1_lo"]
    out = tmp_path / "rep"
    assert main([str(adaptive_dir), "--out", str(out), "--n-boot", "0", "--formats", "svg"]) == 0
    err = capsys.readouterr().err
    assert f"skipped decisions line {f}:3: not JSON" in err
    md = (out / "report.md").read_text()
    assert "## Predictions vs outcomes" in md and f"`{f}:8: no valid predicted_top1_lo`" in md
    assert "**2 of 3 runs inside their 90% bands" in md
    assert "| 1 | 1.5e+13 | 5e+13 | acc 0.93 +- 0.03 | target_ci |" in md  # the rounds
    csv = pd.read_csv(out / "predictions.csv")
    assert csv["inside"].sum() == 2 and len(csv) == 3
    assert "predtable" in (out / "report.html").read_text()


def test_bands_too_narrow_is_said():
    scored = pd.DataFrame({"inside": [True] * 2 + [False] * 18, "error_points": [-3.0] * 20})
    pred = predictions.Predictions("holdout", scored)
    assert pred.coverage[3] < 0.9
    assert "the bands are too narrow: the fits do not extrapolate" in pred.verdict()
    ok = predictions.Predictions("holdout", scored.assign(inside=[True] * 18 + [False] * 2))
    assert "consistent with honest 90% bands" in ok.verdict()


CURVE = {"vit": (0.45, 0.25, 0.08), "bit": (0.35, 0.2, 0.1)}  # error = a (C/1e11)^-b + c


def grid_rows(shift: dict[str, float] | None = None) -> list[dict]:
    """vit at 4 computes (2 tunings, 2 seeds), bit at 2 computes (skipped)."""
    rng = np.random.default_rng(1)
    rows = []
    for fam, flops in (("vit", (1e11, 3e11, 1e12, 3e12)), ("bit", (1e11, 1e12))):
        a, b, c = CURVE[fam]
        for C in flops:
            for lr, pen in ((0.003, 0.0), (0.001, 0.02)):
                for seed in (0, 1):
                    acc = 1 - (a * (C / 1e11) ** -b + c) - pen + rng.normal(0, 0.003)
                    r = row(fam, "ViT-micro/8" if fam == "vit" else "R-micro", C, lr, seed,
                            float(acc), float(acc + 0.01))
                    r["top1"] += (shift or {}).get(r["run_id"], 0.0)
                    rows.append(r)
    return rows


def holdout_of(tmp_path: Path, rows: list[dict]) -> predictions.Predictions:
    root = tmp_path / f"grid{len(list(tmp_path.iterdir()))}"
    for r in rows:
        write_row(r, root)
    return predictions.holdout(load_study(root))


def test_holdout_predicts_only_the_dearer_half_of_the_selected_tuning(tmp_path):
    rows = grid_rows()
    pred = holdout_of(tmp_path, rows)
    want = {r["run_id"] for r in rows
            if r["family"] == "vit" and r["train_flops"] >= 1e12 and r["config"]["train"]["lr"] == 0.003}
    assert set(pred.scored["run_id"]) == want and len(want) == 4
    assert "fit on the cheaper half, predict the dearer half" in " ".join(pred.lines)
    assert any(x.startswith("- bit: skipped") for x in pred.lines)
    assert np.all(pred.scored["lo"] < pred.scored["predicted"])


def test_holdout_bands_come_from_the_cheaper_half_only(tmp_path):
    rows = grid_rows()
    base = holdout_of(tmp_path, rows).scored.set_index("run_id")
    dear = next(r["run_id"] for r in rows if r["run_id"] in base.index)
    moved = holdout_of(tmp_path, grid_rows({dear: +0.05})).scored.set_index("run_id")
    cols = ["predicted", "lo", "hi"]
    pd.testing.assert_frame_equal(base[cols], moved[cols])  # a dearer result moves no band
    assert moved.at[dear, "observed"] == pytest.approx(base.at[dear, "observed"] + 0.05)
    assert not moved.at[dear, "inside"]
    cheap = next(r["run_id"] for r in rows if r["family"] == "vit" and r["train_flops"] == 1e11
                 and r["config"]["train"]["lr"] == 0.003)
    refit = holdout_of(tmp_path, grid_rows({cheap: -0.05})).scored.set_index("run_id")
    assert not math.isclose(refit.at[dear, "predicted"], base.at[dear, "predicted"])


def test_holdout_scores_only_dearer_settings_on_the_familys_frontier(tmp_path):
    """A dearer setting a cheaper one beats is another architecture, not the curve: named,
    not scored (else a ViT/8 next to a ViT/16 reads as a failed extrapolation)."""
    rows = grid_rows()
    for seed in (0, 1):  # a worse architecture at a dearer compute: off the frontier
        rows.append(row("vit", "ViT-micro/16", 1e12, 0.003, seed, 0.5, 0.51))
    pred = holdout_of(tmp_path, rows)
    assert "ViT-micro/16" not in set(pred.scored["model"])
    assert len(pred.scored) == 4
    assert any("off the family's frontier" in x and "ViT-micro/16 at 1 TFLOPs" in x
               for x in pred.lines)


def test_prior_only_predictions_are_not_scored_and_the_grid_saving_is_said(adaptive_dir):
    """A start-design decision (no run of its family yet) carries the prior's band, which
    says nothing of the fits: counted, not scored. rounds.jsonl's grid cost gives the share
    of the grid the sweep spent."""
    f = adaptive_dir / "plan" / "decisions.jsonl"
    lines = f.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "predicted_basis": "prior"})
    f.write_text("\n".join(lines) + "\n")
    r = adaptive_dir / "plan" / "rounds.jsonl"
    r.write_text(r.read_text() + json.dumps({"round": 2, "spent": 1.5e13, "budget": 5e13,
                                             "grid": 6e13, "stop": "budget"}) + "\n")
    pred = predictions.from_decisions(load_study(adaptive_dir))
    assert first["run_id"] not in set(pred.scored["run_id"]) and len(pred.scored) == 2
    text = " ".join(pred.lines)
    assert "1 made from the prior alone" in text
    assert "would cost 6e+13: the sweep spent 25.0% of it" in text

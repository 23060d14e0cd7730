"""What the models learned, end to end (issue #17): the real CLI writes the row numbers and the
npz for a ViT and only receptive fields for BiT; the report gets its section; run_ids stay."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchbench import internals
from benchbench.report import internals_section
from benchbench.report.cli import build_report
from benchbench.report.load import load_study
from benchbench.results import INTERNALS_FIELDS, run_id_of, write_row

ATTN_KEYS = ("attn_dist_first_px", "attn_dist_last_px", "attn_dist_min_first_px",
             "attn_dist_mean_px", "attn_prefix_mass_mean", "pos_grid_score")


def _only_row(rdir):
    (path,) = (rdir / "runs").glob("*.json")
    return json.loads(path.read_text())


def test_vit_and_bit_runs_write_their_internals_and_the_report_shows_them(run_cli, tmp_path):
    code, rdir = run_cli("model=vit_micro", "eval.internals_images=16",
                         results=tmp_path / "vit")
    assert code == 0
    vit = _only_row(rdir)
    assert vit["status"] == "ok" and vit["error"] is None
    assert all(isinstance(vit[k], float) for k in ATTN_KEYS), {k: vit[k] for k in ATTN_KEYS}
    assert vit["cnn_rf_last_px"] is None
    with np.load(rdir / "internals" / f"{vit['run_id']}.npz") as z:
        layers = z["attn_dist_px"]
        assert layers.shape[0] == 4  # vit_micro: 4 blocks
        assert {"pos_sim", "patch_pcs", "token_grid"} <= set(z.files)
        assert not any(k.startswith("cnn_") for k in z.files)
        # the row is the npz summarised, not a second measurement
        assert vit["attn_dist_first_px"] == pytest.approx(layers[0].mean(), abs=1e-3)
        assert vit["pos_grid_score"] == pytest.approx(internals.grid_score(z["pos_sim"]),
                                                      abs=1e-4)
    assert not list((rdir / "internals").glob(".*"))  # no temp file left behind

    code, bdir = run_cli("model=bit_micro", "eval.internals_images=16",
                         results=tmp_path / "bit")
    assert code == 0
    bit = _only_row(bdir)
    assert bit["status"] == "ok" and bit["error"] is None
    assert all(bit[k] is None for k in ATTN_KEYS)
    assert bit["cnn_rf_last_px"] > 0
    with np.load(bdir / "internals" / f"{bit['run_id']}.npz") as z:
        assert all(k.startswith("cnn_") for k in z.files)
        assert z["cnn_rf_px"][-1] == bit["cnn_rf_last_px"]

    rep = build_report([rdir, bdir], out=tmp_path / "report", n_boot=0, formats=["png"])
    assert rep.internals is not None
    text = rep.path.read_text()
    assert "## What the models learned" in text
    assert (tmp_path / "report" / "internals_attention_distance.png").exists()
    assert (tmp_path / "report" / "internals_pos_similarity.png").exists()
    assert any("receptive field" in f for f in rep.findings)  # BiT is the reference line


def test_internals_switch_and_image_count_leave_the_run_id(run_cli, tmp_path):
    code, on = run_cli("eval.internals_images=8", results=tmp_path / "on")
    assert code == 0
    code, off = run_cli("eval.internals=false", results=tmp_path / "off")
    assert code == 0
    a, b = _only_row(on), _only_row(off)
    assert a["run_id"] == b["run_id"]
    assert a["attn_dist_first_px"] is not None
    assert all(b[k] is None for k in INTERNALS_FIELDS)
    assert not (off / "internals").exists()
    # a report of rows without internals has no such section
    rep = build_report([off], out=tmp_path / "rep", n_boot=0, formats=["png"])
    assert rep.internals is None and "What the models learned" not in rep.path.read_text()


def test_identity_ignores_internals_keys():
    cfg = {"model": {"name": "vit_micro"}, "eval": {"batch_size": 512}}
    with_keys = {**cfg, "eval": {"batch_size": 512, "internals": False,
                                 "internals_images": 3}}
    assert run_id_of(with_keys) == run_id_of(cfg)
    assert run_id_of({**cfg, "eval": {"batch_size": 256}}) != run_id_of(cfg)


@pytest.mark.parametrize("bad", ["eval.internals_images=0", "eval.internals=maybe"])
def test_bad_internals_settings_are_refused_before_training(run_cli, tmp_path, bad, capsys):
    code, rdir = run_cli(bad, results=tmp_path / "bad")
    assert code == 2
    assert "eval.internals" in capsys.readouterr().err
    if bad == "eval.internals=maybe":  # a wrong type is refused before anything runs
        assert not (rdir / "runs").exists()
        return
    row = _only_row(rdir)  # a config error is a failed row (as every other), before training
    assert row["status"] == "failed" and "eval.internals" in row["error"]
    assert row["steps"] is None and row["train_size"] is None


def _synthetic_study(root, first_px):
    """ViT rows at two sizes x 3 seeds with given first-layer distances, and their npz."""
    for size, values in first_px.items():
        for seed, v in enumerate(values):
            cfg = {"model": {"name": "ViT-micro/7"}, "data": {"train_size": size}, "seed": seed}
            rid = run_id_of(cfg)
            dist = np.full((4, 2), v)
            write_row(dict(run_id=rid, status="ok", task="train", family="vit",
                           model="ViT-micro/7", patch_size=7, image_size=28, seed=seed,
                           train_size=size, dataset="fashion_mnist", top1=0.7 + seed / 100,
                           train_flops=1e12, config=cfg, attn_dist_first_px=v,
                           attn_dist_last_px=v, pos_grid_score=0.1), root)
            internals.save_npz(root / "internals" / f"{rid}.npz",
                               dict(attn_dist_px=dist, token_grid=np.array([4, 4]),
                                    token_px=np.array([7.0, 7.0]), pos_sim=np.eye(16).reshape(
                                        4, 4, 4, 4)))
    return load_study([root])


def test_findings_call_a_change_only_beyond_the_seed_spread(tmp_path):
    clear = internals_section.build(
        _synthetic_study(tmp_path / "a", {1000: [10.0, 10.5, 11.0], 60000: [5.0, 5.5, 6.0]}),
        tmp_path / "ra", ["png"])
    first = next(f for f in clear.findings if "first-layer mean attention distance" in f)
    assert "10.50 ± 0.50 (s.d., 3 runs) px at 1k" in first
    assert "falls by 5.00 px, more than the two seed s.d. together (1.00)" in first
    noisy = internals_section.build(
        _synthetic_study(tmp_path / "b", {1000: [8.0, 10.0, 12.0], 60000: [7.0, 9.0, 11.0]}),
        tmp_path / "rb", ["png"])
    first = next(f for f in noisy.findings if "first-layer mean attention distance" in f)
    assert "within the seed spread" in first
    # uniform attention over a 4x4 grid of 7 px patches, the reference in the spread finding
    uniform = internals.patch_centre_distances((4, 4), 7).mean().item()
    assert any(f"{uniform:.2f} px" in f for f in noisy.findings)


def test_attention_panel_draws_the_uniform_reference():
    from benchbench.report import internals_plots as ip

    fig = ip.draw_attention_distance([("a", np.ones((2, 3)), 28, 14.5), ("b", np.ones((2, 3)), 28)])
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "uniform"]
    assert list(line.get_ydata()) == [14.5, 14.5]
    assert not [ln for ln in fig.axes[1].lines if ln.get_gid() == "uniform"]

"""The report's figures read as a reviewer reads them (issues #22.8, #23.4/12, #24.6/7): runs named
by their setting, selection on validation, markers and keys that tell things apart, text that
neither collides nor is clipped, axes with labels, captions that promise only what is drawn."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from benchbench import internals
from benchbench.report import internals_plots as ip
from benchbench.report import internals_section
from benchbench.report.internals_rows import line_excess
from benchbench.report.load import load_study
from benchbench.report.plots import compute_accuracy, dataset_size, patch_size, speed_memory
from benchbench.report.plots.curves import training_curves
from benchbench.results import run_id_of, write_row


def _point(model, family, compute, acc, sel, **kw):
    return dict(dict(model=model, family=family, compute=compute, acc=acc, acc_std=np.nan,
                     n_seeds=1, sel=sel, selected_on="validation", params=1e6, train_size=1000,
                     patch_size=None, image_size=32, infer_img_per_s=np.nan,
                     peak_mem_bytes=np.nan, flops_per_image=1e9), **kw)


def _visible_ticks(ax, axis="x") -> list[float]:
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return [t for t in ticks if lo <= t <= hi]


@pytest.fixture
def keep_figures(monkeypatch):
    """The Figures the plot functions draw, in order (their `save` records each)."""
    from benchbench.report.plots import accuracy, common, cost, curves

    seen = []

    def save(fig, out, name, formats):
        seen.append(fig)
        return common.save(fig, out, name, formats)

    for mod in (accuracy, cost, curves):
        monkeypatch.setattr(mod, "save", save)
    return seen


def test_compute_accuracy_gives_each_model_of_a_family_its_own_marker(tmp_path, keep_figures):
    pts = pd.DataFrame([_point("ViT-micro/16", "vit", 1e11, 0.5, 0.5, params=1e6),
                        _point("ViT-micro/8", "vit", 3e11, 0.6, 0.6, params=1.1e6),
                        _point("R-micro", "bit", 2e11, 0.55, 0.55)])
    compute_accuracy(pts, {}, tmp_path, ["png"])
    ax = keep_figures[-1].axes[0]
    marker = {c.get_label(): c.lines[0].get_marker() for c in ax.containers}
    assert marker["ViT-micro/16"] != marker["ViT-micro/8"]
    legend = [t.get_text() for t in keep_figures[-1].legends[0].get_texts()]
    assert {"ViT", "  ViT-micro/16", "  ViT-micro/8", "BiT", "  R-micro"} <= set(legend)


def test_a_validation_frontier_that_goes_down_is_explained(tmp_path, keep_figures):
    """Picked on validation, drawn at test: the frontier may dip, and the figure says why."""
    dip = pd.DataFrame([_point("V", "vit", 1e11, 0.11, 0.10), _point("V2", "vit", 3e11, 0.09, 0.12),
                        _point("V3", "vit", 9e11, 0.30, 0.31)])
    plot = compute_accuracy(dip, {}, tmp_path, ["png"])
    assert "can go down" in plot.caption and "(ViT)" in plot.caption
    legend = [t.get_text() for t in keep_figures[-1].legends[0].get_texts()]
    assert any("may dip" in t for t in legend)
    rise = dip.assign(acc=[0.09, 0.11, 0.30])
    assert "can go down" not in compute_accuracy(rise, {}, tmp_path, ["png"]).caption


def test_dataset_size_and_patch_size_pick_the_best_setting_on_validation(tmp_path, keep_figures):
    """Two learning rates per point: validation prefers the one that is worse on test."""
    rows = []
    for size in (1000, 9000):
        rows += [_point("ViT-S/8", "vit", 1e11, 0.70, 0.60, train_size=size, patch_size=8),
                 _point("ViT-S/8", "vit", 1e11, 0.65, 0.66, train_size=size, patch_size=8)]
    rows += [_point("ViT-S/16", "vit", 1e11, 0.50, 0.40, patch_size=16),
             _point("ViT-S/16", "vit", 1e11, 0.45, 0.46, patch_size=16)]
    pts = pd.DataFrame(rows)
    dataset_size(pts[pts["model"] == "ViT-S/8"], {}, tmp_path, ["png"])
    (line,) = [c for c in keep_figures[-1].axes[0].containers if c.get_label() == "ViT-S/8"]
    np.testing.assert_allclose(np.asarray(line.lines[0].get_ydata(), float), [65.0, 65.0])
    plot = patch_size(pts, tmp_path, ["png"])
    (line,) = keep_figures[-1].axes[0].containers
    np.testing.assert_allclose(sorted(np.asarray(line.lines[0].get_ydata(), float)), [45.0, 65.0])
    assert "chosen on validation" in plot.caption


def _curve_study(tmp_path):
    rows = []
    (tmp_path / "metrics").mkdir()
    for i, (model, lr, ep) in enumerate(itertools.product(("ViT-micro/8", "R-micro"),
                                                         (1e-3, 3e-3), (2.0, 6.0))):
        rid = f"r{i}"
        n = int(ep * 10)
        pd.DataFrame({"samples_seen": np.arange(1, n + 1) * 1000,
                      "loss": np.linspace(2, 0.5, n)}).to_csv(
            tmp_path / "metrics" / f"{rid}.csv", index=False)
        rows.append(dict(run_id=rid, model=model, family="vit" if "ViT" in model else "bit",
                         params=1e6, lr=lr, epochs=ep))
    return pd.DataFrame(rows)


def test_training_curves_say_model_lr_and_epochs_and_label_the_x_axis(tmp_path, keep_figures):
    plot = training_curves(_curve_study(tmp_path), [tmp_path], tmp_path / "out", ["png"])
    fig = keep_figures[-1]
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"ViT-micro/8", "R-micro", "lr 0.001", "lr 0.003", "2 epochs (end)",
            "6 epochs (end)"} <= legend
    assert "line style = learning rate" in plot.caption and "epochs" in plot.caption
    ax = fig.axes[0]
    _renderer(fig)
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert len(_visible_ticks(ax)) >= 3 and len(labels) >= 3


def _renderer(fig):
    FigureCanvasAgg(fig)  # the report draws on Figure() alone; give it a canvas to measure on
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_attention_distance_titles_do_not_collide_and_heads_have_a_key():
    dist = np.full((2, 4, 4), 14.0)  # two runs, 4 layers, 4 heads
    panels = [(f"R-micro+ViT-micro/{p}\n6k images, {e} epochs, lr 0.001\n2 runs, seeds 0, 1",
               dist, 32, 13.7) for p in (8, 16) for e in (3, 9.9)]
    fig = ip.draw_attention_distance(panels, cnn_rf=[(0.5, 10.0), (1.0, 32.0)])
    r = _renderer(fig)
    boxes = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_visible()]
    assert not any(_boxes_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
    key = [t.get_text() for t in fig.legends[0].get_texts()]
    assert key[:4] == ["head 1", "head 2", "head 3", "head 4"]
    heads = next(c for c in fig.axes[0].collections if c.get_gid() == "heads")
    colours = heads.get_facecolors()
    assert len({tuple(c) for c in colours[:4]}) == 4  # head 1..4 of a layer differ
    np.testing.assert_allclose(colours[:4], colours[16:20])  # run 2's heads share the key


def test_pos_similarity_colour_bar_label_is_inside_the_figure_and_ticks_are_readable():
    sim = internals.embedding_similarity(np.random.default_rng(0).normal(size=(4, 4, 8)))
    fig = ip.draw_pos_similarity([("R-micro+ViT-micro/8, 6k images\nseed 0, excess 0.19", sim)])
    r = _renderer(fig)
    cbar_ax = fig.axes[-1]
    label = cbar_ax.yaxis.label
    assert label.get_text() == "Cosine similarity"
    fb, lb = fig.bbox, label.get_window_extent(r)
    assert fb.x0 <= lb.x0 and lb.x1 <= fb.x1 and fb.y0 <= lb.y0 and lb.y1 <= fb.y1
    assert min(t.get_fontsize() for t in fig.axes[0].get_xticklabels()) >= 8


def test_internals_vs_data_is_about_training_images_with_a_floor_on_the_y_span():
    rows = pd.DataFrame([dict(family="vit", model="ViT-micro/7", train_size=n, seed=s,
                              attn_dist_first_px=14.0 + 0.01 * s + 0.05 * (n > 1000))
                         for n in (1000, 60000) for s in range(3)])
    fig = ip.draw_internals_vs_data(rows, ["attn_dist_first_px"],
                                    uniform={"ViT-micro/7": 14.06})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Training-set size [images]"
    lo, hi = ax.get_ylim()
    assert hi - lo >= ip.MIN_SPAN["attn_dist_first_px"]  # 0.05 px is not stretched into a trend
    (uniform,) = [ln for ln in ax.lines if ln.get_gid() == "uniform"]
    assert list(uniform.get_ydata()) == [14.06, 14.06]
    _renderer(fig)
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] == ["1k", "60k"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "ViT-micro/7" in legend and not any(t.startswith("ViT/") for t in legend)


def _grid_dist(g):
    i, j, k, m = np.indices((g, g, g, g))
    return np.hypot(i - k, j - m), i == k, j == m


@pytest.mark.parametrize("g", [4, 7])
def test_row_column_excess_is_zero_for_distance_only_similarity(g):
    """Similarity that falls with distance alone scores 0.1-0.25 on the plain grid score;
    the excess over a distance-only fit is ~0, and row/column structure stays positive."""
    d, same_row, same_col = _grid_dist(g)
    for sim in (np.exp(-d / 2), np.exp(-d ** 2 / 4), 1 - d / d.max()):
        assert internals.grid_score(sim) > 0.1
        assert abs(line_excess(sim)) < 0.02
    rows_cols = np.exp(-d / 2) + 0.2 * (same_row | same_col)
    assert line_excess(rows_cols) == pytest.approx(0.2, abs=0.02)
    assert line_excess(np.ones((2, 2, 2, 2))) is None  # 2x2: cannot tell the two apart


def _write_run(root, model, family, seed, epochs, *, grid=(4, 4), top1=0.5, val=0.5,
               size=6000, lr=1e-3, pos=None):
    cfg = {"model": {"name": model}, "train": {"epochs": epochs, "lr": lr},
           "data": {"train_size": size}, "seed": seed}
    rid = run_id_of(cfg)
    write_row(dict(run_id=rid, status="ok", task="train", family=family, model=model,
                   patch_size=8, image_size=32, seed=seed, train_size=size, epochs=epochs,
                   lr=lr, dataset="synthetic", top1=top1, val_top1=val, train_flops=1e12,
                   config=cfg, attn_dist_first_px=14.0, attn_dist_last_px=14.0), root)
    n = grid[0] * grid[1]
    sim = pos if pos is not None else np.eye(n).reshape(*grid, *grid)
    internals.save_npz(root / "internals" / f"{rid}.npz",
                       dict(attn_dist_px=np.full((4, 4), 14.0), token_grid=np.array(grid),
                            token_px=np.array([32.0 / grid[0]] * 2), pos_sim=sim))
    return rid


def test_internals_section_names_settings_puts_vit_first_and_skips_coarse_grids(
        tmp_path, monkeypatch):
    """Two runs of seed 0 at 3 and 10 epochs are two settings ("1 run" each), never
    "(2 seeds)"; ViT panels come before hybrids; a 2x2 grid gets no locality sentence; the
    position figure shows the run that validation picks, not test."""
    root = tmp_path / "rows"
    for ep in (3, 10):
        _write_run(root, "R-micro+ViT-micro/8", "hybrid", 0, ep)
        _write_run(root, "ViT-micro/16", "vit", 0, ep, grid=(2, 2))
    d, *_ = _grid_dist(4)
    by_val = _write_run(root, "ViT-micro/8", "vit", 0, 3, top1=0.60, val=0.70, pos=np.exp(-d))
    _write_run(root, "ViT-micro/8", "vit", 1, 3, top1=0.65, val=0.50)
    drawn = {}
    monkeypatch.setattr(ip, "attention_distance_plot",
                        lambda panels, stem, **kw: drawn.setdefault("attn", panels) and [])
    monkeypatch.setattr(ip, "pos_similarity_plot",
                        lambda panels, stem, **kw: drawn.setdefault("pos", panels) and [])
    sec = internals_section.build(load_study([root]), tmp_path / "out", ["png"])
    titles = [p[0] for p in drawn["attn"]]
    assert not any("seeds)" in t for t in titles)
    assert [t.split("\n")[0] for t in titles] == [
        "ViT-micro/16", "ViT-micro/16", "ViT-micro/8", "R-micro+ViT-micro/8",
        "R-micro+ViT-micro/8"]
    assert "3 epochs" in titles[0] and "10 epochs" in titles[1] and "1 run, seed 0" in titles[0]
    assert "2 runs, seeds 0, 1" in titles[2]
    assert drawn["attn"][0][4] == "2×2 grid: too coarse for locality"
    text = " ".join(sec.findings)
    assert "ViT-micro/16 (" not in text.replace("ViT-micro/16 (2×2)", "")
    assert "No locality is read from ViT-micro/16 (2×2)" in text
    (pos,) = drawn["pos"]
    assert pos[0].startswith("ViT-micro/8") and "seed 0, validation 70.0%" in pos[0]
    np.testing.assert_array_equal(pos[1], np.exp(-d))
    assert by_val


def test_speed_memory_caption_promises_only_what_is_drawn(tmp_path):
    """Throughput only (no memory), one run dominating each family: no lines, no memory."""
    pts = pd.DataFrame([_point("V", "vit", 1e11, 0.8, 0.8, infer_img_per_s=2e4),
                        _point("V2", "vit", 1e11, 0.7, 0.7, infer_img_per_s=1e4),
                        _point("B", "bit", 1e11, 0.75, 0.75, infer_img_per_s=5e3)])
    cap = speed_memory(pts, tmp_path, ["png"]).caption
    assert cap.startswith("Accuracy against inference throughput;")
    assert "lines join" not in cap and "ViT, BiT: a frontier of one run, so no line" in cap
    assert "peak memory not drawn: no row records it" in cap
    two = pts.assign(infer_img_per_s=[2e4, 3e4, 5e3], acc=[0.8, 0.7, 0.75],
                     sel=[0.8, 0.7, 0.75])
    assert "lines join them (ViT)" in speed_memory(two, tmp_path, ["png"]).caption


def test_pos_similarity_title_clears_the_colour_bar():
    sim = internals.embedding_similarity(np.random.default_rng(0).normal(size=(4, 4, 8)))
    fig = ip.draw_pos_similarity([("ViT-micro/8, 10k images\nseed 2, validation 85.0%, "
                                   "excess 0.05", sim)])
    r = _renderer(fig)
    title = fig.axes[0].title.get_window_extent(r)
    bar = fig.axes[-1]
    assert not any(_boxes_overlap(title, t.get_window_extent(r))
                   for t in bar.get_yticklabels() if t.get_text())


def test_runs_on_different_data_at_one_size_are_different_settings():
    """A synthetic pre-training run and a Fashion-MNIST run of 500 images are not one
    '500 images' group: each is its own setting, named by its dataset."""
    from benchbench.report.internals_rows import name_settings

    rows = pd.DataFrame([dict(run_id=f"r{i}", family="vit", model="ViT-micro/8", seed=0,
                              train_size=500, dataset=ds, point=ds, lr=1e-3, epochs=3.0)
                         for i, ds in enumerate(("synthetic", "fashion_mnist"))])
    named = name_settings(rows)
    assert sorted(named["setting"]) == ["fashion_mnist, 500 images", "synthetic, 500 images"]
    assert list(named["runs"]) == [1, 1]


def test_random_position_embeddings_have_no_row_column_excess():
    rng = np.random.default_rng(0)
    v = [line_excess(internals.embedding_similarity(rng.normal(size=(4, 4, 128))))
         for _ in range(50)]
    assert abs(np.mean(v)) < 0.01 and np.std(v) < 0.03

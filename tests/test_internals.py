"""What the models learned (issue #17): the Figure 7 measures on cases with known answers, the
real path on tiny timm models, and the report plots reading back what they drew."""
from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from timm.layers import GroupNormAct, HybridEmbed, PatchEmbed, StdConv2d, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchbench import internals
from benchbench.internals import (
    SUMMARY_KEYS,
    attention_distances,
    cnn_receptive_fields,
    conv_path,
    embedding_similarity,
    grid_score,
    mean_distance,
    measure_internals,
    patch_embed_pcs,
    pos_embed_similarity,
    receptive_field,
    save_npz,
)
from benchbench.report import internals_plots as ip

IMG, PATCH = 32, 8
GRID = IMG // PATCH


def tiny_vit(**kw) -> VisionTransformer:
    torch.manual_seed(0)
    args = dict(img_size=IMG, patch_size=PATCH, depth=2, embed_dim=32, num_heads=2,
                num_classes=10)
    return VisionTransformer(**{**args, **kw})


def tiny_bit(layers=(1, 1, 1, 1), **kw) -> ResNetV2:
    torch.manual_seed(0)
    return ResNetV2(layers=list(layers), channels=(64, 128, 256, 512)[:len(layers)],
                    stem_chs=32, stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8),
                    norm_layer=partial(GroupNormAct, num_groups=8), num_classes=10, **kw)


def brute_mean_pairwise(gh: int, gw: int, ph: float, pw: float) -> float:
    """Mean over all ordered (query, key) pairs, self included, of centre distances."""
    cells = list(itertools.product(range(gh), range(gw)))
    return sum(math.hypot((a - c) * ph, (b - d) * pw)
               for (a, b), (c, d) in itertools.product(cells, cells)) / len(cells) ** 2


def sincos_2d(gh: int, gw: int) -> np.ndarray:
    """[gh, gw, 2 gh + 2 gw] 2-D sinusoidal embeddings: half the channels code the row, half the
    column, with the g Fourier frequencies 2 pi k / g of each axis, so two different rows (or
    columns) have orthogonal codes: cosine 1/2 for a shared row or column, 0 otherwise."""
    def code(g):
        phase = 2 * np.pi * np.outer(np.arange(g), np.arange(g)) / g
        return np.concatenate([np.cos(phase), np.sin(phase)], 1)

    rows, cols = code(gh), code(gw)
    return np.concatenate([np.repeat(rows[:, None], gw, 1), np.repeat(cols[None], gh, 0)], -1)


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_head_attending_to_itself_has_distance_zero(prefix):
    n = 3 * 4 + prefix
    attn = torch.eye(n).expand(2, 3, n, n)
    d = mean_distance(attn, (3, 4), 8, num_prefix_tokens=prefix)
    assert d.shape == (3,)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)


@pytest.mark.parametrize("grid,patch", [((4, 4), 8), ((3, 5), (6, 10)), ((1, 7), 16)])
def test_uniform_attention_gives_mean_pairwise_distance(grid, patch):
    gh, gw = grid
    ph, pw = patch if isinstance(patch, tuple) else (patch, patch)
    n = gh * gw
    d = mean_distance(torch.full((2, 2, n, n), 1.0 / n, dtype=torch.float64), grid, patch)
    np.testing.assert_allclose(d, brute_mean_pairwise(gh, gw, ph, pw), rtol=1e-10)


def test_class_token_is_left_out_and_renormalised_on_request():
    gh, gw, p = 4, 4, 8
    n = gh * gw
    attn = torch.zeros(1, 2, n + 1, n + 1)
    attn[..., 1:, 0] = 0.5  # half the mass on the class token
    attn[..., 1:, 1:] = 0.5 / n  # the rest uniform over patches
    attn[..., 0, 0] = 1.0  # the class token's own query, far from anything: ignored
    d = mean_distance(attn, (gh, gw), p, num_prefix_tokens=1, renormalise=True)
    np.testing.assert_allclose(d, brute_mean_pairwise(gh, gw, p, p), rtol=1e-10)
    np.testing.assert_allclose(internals._prefix_mass(attn, 1), 0.5)


def test_reference_convention_weights_patches_by_the_raw_attention_90_percent_on_cls():
    """Issue 22 item 7: 90% of every patch query's attention on the class token, 10% uniform
    over the 14x14 patches of ViT-B/16: the reference convention (compute_mean_attention_dist,
    raw weights, class token 0) gives a tenth of the renormalised distance, by default."""
    gh = gw = 14
    p, n = 16, 14 * 14
    attn = torch.zeros(2, 3, n + 1, n + 1, dtype=torch.float64)
    attn[..., 1:, 0] = 0.9
    attn[..., 1:, 1:] = 0.1 / n
    attn[..., 0, :] = 1.0 / (n + 1)
    uniform = brute_mean_pairwise(gh, gw, p, p)
    # the reference snippet, written out: sum_k w_qk d_qk over patch keys, mean over queries
    centres = np.array([((i // gw) * p, (i % gw) * p) for i in range(n)], dtype=np.float64)
    dmat = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    reference = (attn[..., 1:, 1:].double().numpy() * dmat).sum(-1).mean(-1).mean(0)
    d = mean_distance(attn, (gh, gw), p, num_prefix_tokens=1)
    np.testing.assert_allclose(d, reference, rtol=1e-10)
    np.testing.assert_allclose(d, 0.1 * uniform, rtol=1e-10)
    renorm = mean_distance(attn, (gh, gw), p, num_prefix_tokens=1, renormalise=True)
    np.testing.assert_allclose(renorm, uniform, rtol=1e-10)


def test_attending_to_the_patch_below_is_one_patch_height_row_major():
    gh, gw, ph, pw = 3, 4, 6, 10
    n = gh * gw
    attn = torch.zeros(1, 1, n, n)
    for q in range(n):
        attn[0, 0, q, q + gw if q + gw < n else q] = 1.0  # row-major: +gw is one row down
    expected = (gh - 1) * gw * ph / n  # the last row attends to itself
    np.testing.assert_allclose(mean_distance(attn, (gh, gw), (ph, pw)), expected)


def test_mean_distance_rejects_a_grid_the_tokens_do_not_fill():
    with pytest.raises(ValueError, match="do not fill a 3x3 grid"):
        mean_distance(torch.eye(8).expand(1, 1, 8, 8), (3, 3), 8)


@pytest.mark.parametrize("no_embed_class,reg_tokens", [(False, 0), (True, 0), (False, 2)])
def test_sinusoidal_pos_embed_gives_rows_and_columns_and_a_high_score(no_embed_class,
                                                                      reg_tokens):
    model = tiny_vit(embed_dim=4 * GRID, no_embed_class=no_embed_class, reg_tokens=reg_tokens)
    emb = sincos_2d(GRID, GRID)
    with torch.no_grad():
        start = 0 if no_embed_class else model.num_prefix_tokens
        model.pos_embed[0, start:] = torch.as_tensor(emb.reshape(GRID * GRID, -1))
        model.pos_embed[0, :start] = 100.0  # prefix positions: must not leak into the grid
    sim = pos_embed_similarity(model)
    assert sim.shape == (GRID, GRID, GRID, GRID)
    flat = emb.reshape(GRID * GRID, -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(sim.reshape(GRID * GRID, -1), flat @ flat.T, atol=1e-6)
    i, j, k, m = np.indices(sim.shape)
    np.testing.assert_allclose(sim, 0.5 * (i == k) + 0.5 * (j == m), atol=1e-6)
    assert grid_score(sim) == pytest.approx(0.5, abs=1e-6)


def test_random_pos_embed_scores_near_zero():
    rng = np.random.default_rng(0)
    sim = embedding_similarity(rng.standard_normal((8, 8, 256)))
    assert abs(grid_score(sim)) < 0.02


def test_grid_score_is_none_without_pairs_of_both_kinds():
    assert grid_score(embedding_similarity(np.random.default_rng(0).random((1, 5, 8)))) is None


def test_model_without_pos_embed_has_no_similarity():
    model = tiny_vit(pos_embed="none")
    assert model.pos_embed is None and pos_embed_similarity(model) is None


def test_patch_pcs_recover_the_filters_subspace():
    model = tiny_vit(embed_dim=64)
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((3 * PATCH * PATCH, 2)))[0].T  # 2 orthonormal
    coef = rng.standard_normal((64, 2)) * [3.0, 1.0]
    with torch.no_grad():
        model.patch_embed.proj.weight.copy_(torch.as_tensor((coef @ basis).reshape(64, 3, PATCH,
                                                                                   PATCH)))
    comps, ratio = patch_embed_pcs(model, k=5)
    assert comps.shape == (5, 3, PATCH, PATCH) and ratio.shape == (5,)
    np.testing.assert_allclose(ratio[:2].sum(), 1.0, atol=1e-9)
    top = comps[:2].reshape(2, -1)
    np.testing.assert_allclose(top @ top.T, np.eye(2), atol=1e-9)
    np.testing.assert_allclose(np.linalg.svd(top @ basis.T, compute_uv=False), 1.0, atol=1e-9)
    assert all(c.flat[np.abs(c).argmax()] > 0 for c in comps)


def test_patch_pcs_default_is_the_papers_28_capped_by_filters():
    comps, ratio = patch_embed_pcs(tiny_vit())
    assert comps.shape == (internals.PAPER_NUM_PCS, 3, PATCH, PATCH)
    assert np.all(np.diff(ratio) <= 1e-12) and 0 < ratio.sum() <= 1 + 1e-9
    assert patch_embed_pcs(tiny_vit(embed_dim=16, num_heads=2))[0].shape[0] == 16


def _max_distance(grid, px):
    return math.hypot((grid[0] - 1) * px[0], (grid[1] - 1) * px[1])


@pytest.mark.parametrize("kw,hw", [
    ({}, (IMG, IMG)),
    ({"reg_tokens": 2, "no_embed_class": True}, (IMG, IMG)),
    ({"class_token": False, "global_pool": "avg"}, (IMG, IMG)),
    ({"dynamic_img_pad": True, "embed_layer": partial(PatchEmbed, strict_img_size=False)},
     (IMG - 2, IMG - 3)),  # benchbench's pad_to_patch: a 4x4 grid of 8 px tokens, padded
    ({"dynamic_img_size": True}, (IMG - 8, IMG + 8)),  # a 3x5 grid
])
def test_real_vit_path(kw, hw):
    model = tiny_vit(**kw)
    for blk in model.blocks:
        blk.attn.fused_attn = True
    model.train()
    x = torch.randn(3, 3, *hw, generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    dist = attention_distances(model, x)
    assert dist.shape == (2, 2) and np.isfinite(dist).all()
    grid = (-(-hw[0] // PATCH), -(-hw[1] // PATCH))
    assert np.all(dist >= 0) and np.all(dist <= _max_distance(grid, (PATCH, PATCH)))
    assert all(blk.attn.fused_attn for blk in model.blocks)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_captured_attention_equals_a_recomputation_of_the_first_block():
    model = tiny_vit(reg_tokens=1).eval()
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))
    blk = model.blocks[0]
    with torch.no_grad():
        h = blk.norm1(model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))))
        b, n, c = h.shape
        q, k, _ = blk.attn.qkv(h).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (c // 2) ** -0.5).softmax(-1)
    expected = mean_distance(attn, (GRID, GRID), PATCH, num_prefix_tokens=2)
    np.testing.assert_allclose(attention_distances(model, x)[0], expected, rtol=1e-5)


def test_token_pixel_size_override():
    model, x = tiny_vit(), torch.randn(1, 3, IMG, IMG)
    np.testing.assert_allclose(attention_distances(model, x, patch_size=2 * PATCH),
                               2 * attention_distances(model, x), rtol=1e-6)


def tiny_hybrid() -> VisionTransformer:
    torch.manual_seed(0)
    backbone = ResNetV2(layers=[1, 1], channels=(64, 128), stem_chs=32, num_classes=0,
                        global_pool="", preact=False, stem_type="same",
                        conv_layer=partial(StdConv2dSame, eps=1e-8),
                        norm_layer=partial(GroupNormAct, num_groups=8))
    return VisionTransformer(img_size=IMG, patch_size=1, depth=2, embed_dim=32, num_heads=2,
                             num_classes=10, embed_layer=partial(HybridEmbed, backbone=backbone))


def test_hybrid_tokens_are_backbone_cells():
    model = tiny_hybrid()
    summary, arrays = measure_internals(model, torch.randn(2, 3, IMG, IMG), family="hybrid",
                                        image_size=IMG)
    grid = tuple(arrays["token_grid"])
    np.testing.assert_allclose(arrays["token_px"], [IMG / grid[0], IMG / grid[1]])
    assert arrays["attn_dist_px"].shape == (2, 2)
    assert np.all(arrays["attn_dist_px"] <= _max_distance(grid, arrays["token_px"]))
    assert "patch_pcs" not in arrays and patch_embed_pcs(model) is None
    assert arrays["pos_sim"].shape == (*grid, *grid)
    assert summary["cnn_rf_last_px"] == arrays["cnn_rf_px"][-1] > 0
    assert arrays["cnn_jump_px"][-1] == IMG // grid[0]


def test_receptive_field_of_a_small_conv_stack_by_hand():
    stack = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                          nn.MaxPool2d(3, stride=2), nn.Conv2d(4, 4, 3, dilation=2))
    path = conv_path(stack)
    assert [g for _, _, g, _ in path] == [(3, 1, 1), (3, 2, 1), (3, 2, 1), (3, 1, 2)]
    # 1 + 2*1 = 3; + 2*1 = 5 (jump 2); + 2*2 = 9 (jump 4); + 2*2*4 = 25
    assert receptive_field(g for _, _, g, _ in path) == [(3, 1), (5, 2), (9, 4), (25, 4)]


def test_residual_shortcut_is_not_on_the_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.downsample = nn.Conv2d(4, 4, 1, stride=2)
            self.conv = nn.Conv2d(4, 4, 3, stride=2)

    assert [n for _, n, _, _ in conv_path(Block())] == ["conv"]


def test_bit_micro_receptive_field_grows_per_stage():
    rows = cnn_receptive_fields(tiny_bit(), IMG)
    rf = [r["receptive_field_px"] for r in rows]
    assert [r["stage"] for r in rows] == ["stem.conv", "stages.0", "stages.1", "stages.2",
                                          "stages.3"]
    assert rf[0] == 7 and all(b > a for a, b in zip(rf, rf[1:]))  # BiT stem: 7x7 conv
    assert [r["jump_px"] for r in rows] == [2, 4, 8, 16, 32]
    assert [r["depth_index"] for r in rows] == [1, 4, 7, 10, 13]  # stem + 3 convs per block
    assert rows[-1]["depth_fraction"] == 1.0
    assert all(r["visible_px"] == min(r["receptive_field_px"], IMG) for r in rows)
    assert ip.cnn_rf_line(rows) == [(r["depth_fraction"], min(r["receptive_field_px"], IMG))
                                    for r in rows]


def test_receptive_fields_refuse_a_model_they_do_not_know():
    with pytest.raises(ValueError, match="timm ResNetV2 and ResNet"):
        cnn_receptive_fields(tiny_vit(), IMG)


def test_model_without_attention_gives_no_vit_internals(tmp_path):
    summary, arrays = measure_internals(tiny_bit(), torch.randn(2, 3, IMG, IMG), family="bit",
                                        image_size=IMG)
    assert set(summary) == set(SUMMARY_KEYS)
    assert all(summary[k] is None for k in SUMMARY_KEYS if k != "cnn_rf_last_px")
    assert summary["cnn_rf_last_px"] == arrays["cnn_rf_px"][-1]
    assert not any(k.startswith(("attn", "pos", "patch")) for k in arrays)
    path = save_npz(tmp_path / "internals" / "run.npz", arrays)
    with np.load(path, allow_pickle=False) as back:
        assert set(back.files) == set(arrays)
        np.testing.assert_array_equal(back["cnn_stage"], arrays["cnn_stage"])
    assert [p.name for p in path.parent.iterdir()] == ["run.npz"]  # no temp file left


def test_vit_entry_point_summary_matches_arrays():
    summary, arrays = measure_internals(tiny_vit(), torch.randn(2, 3, IMG, IMG), family="vit",
                                        image_size=IMG)
    d = arrays["attn_dist_px"]
    assert summary["attn_dist_first_px"] == pytest.approx(d[0].mean(), abs=1e-3)
    assert summary["attn_dist_last_px"] == pytest.approx(d[-1].mean(), abs=1e-3)
    assert summary["attn_dist_min_first_px"] == pytest.approx(d[0].min(), abs=1e-3)
    assert summary["pos_grid_score"] == pytest.approx(grid_score(arrays["pos_sim"]), abs=1e-4)
    assert summary["cnn_rf_last_px"] is None
    assert 0 < summary["attn_prefix_mass_mean"] < 1
    r = arrays["attn_dist_renorm_px"]  # the renormalised convention, kept apart
    assert summary["attn_dist_renorm_first_px"] == pytest.approx(r[0].mean(), abs=1e-3)
    assert summary["attn_dist_renorm_mean_px"] == pytest.approx(r.mean(), abs=1e-3)
    assert np.all(d < r)  # attention to the class token counts 0 in the reference convention


def test_attention_family_with_a_cnn_is_a_user_error():
    with pytest.raises(ValueError, match="family='vit' needs a timm VisionTransformer"):
        measure_internals(tiny_bit(), torch.randn(1, 3, IMG, IMG), family="vit", image_size=IMG)


def test_save_npz_refuses_pickled_arrays_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        save_npz(tmp_path / "x.npz", {"a": np.array([None, 1], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def _png_ok(files, stem):
    assert [p.suffix for p in files] == [".png", ".pdf"]
    assert all(p.name.startswith(stem.name) and p.stat().st_size > 0 for p in files)
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_distance_plot_draws_every_head(tmp_path):
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])
    rf = [(0.25, 7.0), (1.0, 75.0)]
    fig = ip.draw_attention_distance([("a", a, IMG), ("b", b, IMG)], cnn_rf=rf)
    for ax, d in zip(fig.axes, (a, b)):
        heads = next(c for c in ax.collections if c.get_gid() == "heads")
        expected = [(layer + 1, d[layer, h]) for layer in range(d.shape[0])
                    for h in range(d.shape[1])]
        np.testing.assert_array_equal(heads.get_offsets(), expected)
        assert not [ln for ln in ax.lines if ln.get_gid() == "cnn_rf"]  # not on the distance axis
    # the receptive field (a diameter) has a panel of its own, at depth fractions
    line = next(ln for ln in fig.axes[2].lines if ln.get_gid() == "cnn_rf")
    np.testing.assert_allclose(line.get_xdata(), [0.25, 1.0])
    np.testing.assert_array_equal(line.get_ydata(), [7.0, 75.0])
    assert "receptive field" in fig.axes[2].get_title()
    stem = tmp_path / "fig7.right"
    _png_ok(ip.attention_distance_plot([("a", a, IMG)], stem, cnn_rf=rf), stem)
    with pytest.raises(ValueError, match="cnn_rf_units"):
        ip.draw_attention_distance([("a", a, IMG)], cnn_rf=rf, cnn_rf_units="px")


def test_pos_similarity_plot_shows_each_patch_tile(tmp_path):
    sim = embedding_similarity(sincos_2d(3, 4))
    fig = ip.draw_pos_similarity([("sincos", sim), ("copy", sim)])
    img = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    assert img.shape == (3 * 4 - 1, 4 * 5 - 1)
    for i, j in itertools.product(range(3), range(4)):
        np.testing.assert_allclose(img[i * 4: i * 4 + 3, j * 5: j * 5 + 4], sim[i, j])
    assert np.isnan(img[3]).all() and np.isnan(img[:, 4]).all()  # blank lines between tiles
    stem = tmp_path / "pos_sim"
    _png_ok(ip.pos_similarity_plot([("sincos", sim)], stem), stem)


def test_internals_vs_data_plot_means_over_seeds(tmp_path):
    rows = pd.DataFrame([
        dict(family="vit", model="ViT-S/8", train_size=1000, seed=0, attn_dist_first_px=4.0,
             pos_line_excess=0.1),
        dict(family="vit", model="ViT-S/8", train_size=1000, seed=1, attn_dist_first_px=6.0,
             pos_line_excess=0.3),
        dict(family="vit", model="ViT-S/8", train_size=10000, seed=0, attn_dist_first_px=9.0,
             pos_line_excess=0.5),
        dict(family="vit", model="ViT-S/4", train_size=1000, seed=0, attn_dist_first_px=2.0,
             pos_line_excess=None),
        dict(family="bit", model="R50", train_size=1000, seed=0, attn_dist_first_px=None,
             pos_line_excess=None),
    ])
    fig = ip.draw_internals_vs_data(rows)
    dist_ax, score_ax = fig.axes
    lines = {c.get_label(): c.lines[0] for c in dist_ax.containers}
    np.testing.assert_array_equal(lines["ViT-S/8"].get_xdata(), [1000, 10000])
    np.testing.assert_array_equal(lines["ViT-S/8"].get_ydata(), [5.0, 9.0])
    np.testing.assert_array_equal(lines["ViT-S/4"].get_ydata(), [2.0])
    assert not any("R50" in g for g in lines)
    bars = next(c for c in dist_ax.containers if c.get_label() == "ViT-S/8")
    seg = bars.lines[2][0].get_segments()[0]
    np.testing.assert_allclose(seg[:, 1], [5.0 - math.sqrt(2), 5.0 + math.sqrt(2)])
    score_lines = {c.get_label(): c.lines[0] for c in score_ax.containers}
    np.testing.assert_allclose(score_lines["ViT-S/8"].get_ydata(), [0.2, 0.5])
    stem = tmp_path / "internals_vs_data"
    _png_ok(ip.internals_vs_data_plot(rows, stem), stem)
    empty = ip.draw_internals_vs_data(rows.drop(columns=["pos_line_excess"]))
    assert empty.axes[1].texts[0].get_text() == "no data"


def test_report_internals_one_spread_line_per_model_and_the_plain_cnn_receptive_field():
    """The summary names every model's attention spread (ViTs first, its largest training
    set), not the first two groups; the receptive-field line is a plain ResNet's, not a
    hybrid's stem, whichever row comes first."""
    import numpy as np
    import pandas as pd

    from benchbench.report.internals_section import _rf_finding, _spread_per_model

    spread = [("hybrid", "H/8", "h small"), ("hybrid", "H/8", "h big"),
              ("vit", "V/16", "v16 big"), ("vit", "V/8", "v8 small"), ("vit", "V/8", "v8 big")]
    assert _spread_per_model(spread) == ["v16 big", "v8 big", "h big"]
    rows = pd.DataFrame({"run_id": ["h", "b"], "family": ["hybrid", "bit"],
                         "model": ["R+ViT", "R-micro"], "image_size": [32, 32]})
    arrays = {"h": {"cnn_rf_px": np.array([3.0, 40.0])},
              "b": {"cnn_rf_px": np.array([7.0, 19.0, 43.0])}}
    assert _rf_finding(rows, arrays).startswith("R-micro's receptive field is 7 px")
    assert "from stage 3 of 3" in _rf_finding(rows, arrays)


def test_report_internals_single_seed_trends_are_one_sentence_not_one_per_metric():
    """With one seed per point nothing can be judged: one sentence that says so, instead of
    a "no trend" line per model and metric; with seeds, a sentence per model and metric."""
    import pandas as pd

    from benchbench.report.internals_section import _trend_findings

    base = dict(attn_dist_first_px=14.0, attn_dist_last_px=14.0, pos_line_excess=0.1)
    one = pd.DataFrame([dict(base, model=m, train_size=n, seed=0)
                        for m in ("V/8", "V/16") for n in (1000, 9000)])
    (line,) = _trend_findings(one)
    assert line.startswith("Internals of V/8, V/16: one run per setting") and "seed=0,1,2" in line
    three = pd.DataFrame([dict(base, model="V/8", train_size=n, seed=s, pos_line_excess=0.1 * s)
                          for n in (1000, 9000) for s in range(3)])
    lines = _trend_findings(three)
    assert len(lines) == 3 and all("within the seed spread" in x for x in lines)


@pytest.mark.parametrize("prefix", [0, 1])
def test_the_reports_uniform_reference_is_uniform_attention_in_the_rows_convention(prefix):
    """The report's 'uniform attention' value is what mean_distance gives for attention spread
    evenly over every token, class token included (it counts 0 px): 13.23 px, not the patch
    grid's 14.06, for ViT-micro/7's 4x4 grid with one class token."""
    from benchbench.report.internals_section import _uniform_px

    n = 16
    attn = torch.full((1, 1, n + prefix, n + prefix), 1.0 / (n + prefix), dtype=torch.float64)
    got = mean_distance(attn, (4, 4), 7.0, num_prefix_tokens=prefix)[0]
    arrays = {"token_grid": np.array([4, 4]), "token_px": np.array([7.0, 7.0]),
              "num_prefix_tokens": np.array(prefix)}
    assert _uniform_px(arrays) == pytest.approx(got, rel=1e-9)
    if prefix:
        assert got == pytest.approx(brute_mean_pairwise(4, 4, 7, 7) * 16 / 17, rel=1e-9)

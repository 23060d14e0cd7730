"""What a trained model learned (paper Figure 7): attention distances, position embeddings, filters.

Also the receptive fields of ResNets, the CNN side of the attention-distance plot.

Pure (STYLE habit 5): functions take a model and a batch and return arrays or a flat dict;
`save_npz` is the only writer, called at the edge. `measure_internals` is the entry point.

Conventions (Dosovitskiy et al. 2021, Appendix D.7 and Figure 7 right, "the average distance
in image space across which information is integrated, based on the attention weights"):
- queries are the patch tokens only; keys are the patch tokens only, weighted by the attention
  weights as the model computed them (the reference convention: attention to prefix tokens,
  class and register, counts 0; as `compute_mean_attention_dist` of sayakpaul/probing-vits,
  which follows the paper's D.7). The attention that went to prefix tokens is reported apart,
  as `attn_prefix_mass`; the distance with each query's patch weights renormalised to sum to
  1 (the distance of the patch attention alone) as `attn_dist_renorm_px`;
- a token's position is the centre of its pixel footprint (patch, or backbone cell for
  hybrids); distances are Euclidean, in input pixels;
- per head: mean over queries, then over images.
Receptive fields are full widths (diameters) in input pixels, of the main path of a ResNet;
a mean attention distance is closer to a radius, so compare shapes, not values.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchbench.results import INTERNALS_FIELDS

PAPER_NUM_PCS = 28  # Figure 7 left shows the first 28 principal components
ATTENTION_FAMILIES = ("vit", "hybrid")
SHORTCUT_NAMES = ("downsample",)  # timm ResNet/ResNetV2 name the projection shortcut so
ATTN_CHUNK = 32  # images per forward: mean_distance holds a float64 copy of [B, H, N, N]
SUMMARY_KEYS = INTERNALS_FIELDS  # the row columns (results.py owns the schema)


def _unwrap(model: nn.Module) -> nn.Module:
    """The module itself under DDP/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_resnet(model: nn.Module | None) -> bool:
    from timm.models.resnet import ResNet
    from timm.models.resnetv2 import ResNetV2

    return isinstance(model, (ResNetV2, ResNet))


def _is_vit(model: nn.Module) -> bool:
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def _pair(v: Any) -> tuple[float, float]:
    if isinstance(v, (tuple, list)):
        return float(v[0]), float(v[1])
    return float(v), float(v)


def patch_centre_distances(grid_hw: Sequence[int], patch_px: float | Sequence[float],
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """[N, N] pixel distance between token centres, tokens in timm's row-major order."""
    (gh, gw), (ph, pw) = grid_hw, _pair(patch_px)
    ys = (torch.arange(gh, dtype=torch.float64, device=device) + 0.5) * ph
    xs = (torch.arange(gw, dtype=torch.float64, device=device) + 0.5) * pw
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([yy.flatten(), xx.flatten()], dim=-1)
    return torch.cdist(centres, centres)


def mean_distance(attn: torch.Tensor | np.ndarray, grid_hw: Sequence[int],
                  patch_px: float | Sequence[float], *, num_prefix_tokens: int = 0,
                  renormalise: bool = False) -> np.ndarray:
    """Mean attention distance [H] in pixels of attention weights [B, H, N, N] (rows = queries).

    The first `num_prefix_tokens` tokens are dropped as queries and as keys; the patch keys
    keep the model's weights (reference convention), or with `renormalise` each query's
    weights over the patch keys are rescaled to sum to 1 (module docstring). Sums run in
    float64: a copy of twice the size of one layer's weights, so keep the batch small."""
    a = torch.as_tensor(attn).to(torch.float64)
    if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attention weights must be [B, H, N, N], got {tuple(a.shape)}")
    a = a[:, :, num_prefix_tokens:, num_prefix_tokens:]
    n = a.shape[-1]
    if n != grid_hw[0] * grid_hw[1]:
        raise ValueError(f"{n} patch tokens do not fill a {grid_hw[0]}x{grid_hw[1]} grid")
    if renormalise:
        a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    d = patch_centre_distances(grid_hw, patch_px, a.device)
    per_query = torch.einsum("bhqk,qk->bhq", a, d)
    return per_query.mean(dim=(0, 2)).cpu().numpy()


def _prefix_mass(attn: torch.Tensor, num_prefix_tokens: int) -> np.ndarray:
    """[H] share of the patch queries' attention that goes to prefix tokens."""
    p = num_prefix_tokens
    return attn[:, :, p:, :p].to(torch.float64).sum(-1).mean(dim=(0, 2)).cpu().numpy()


def _token_geometry(model: nn.Module, image_hw: tuple[int, int],
                    patch_size: float | Sequence[float] | None):
    """(grid (gh, gw), pixel size of one token (ph, pw)) for input images of `image_hw`."""
    pe = model.patch_embed
    dynamic = getattr(model, "dynamic_img_size", False) or getattr(pe, "dynamic_img_pad", False)
    gh, gw = pe.dynamic_feat_size(image_hw) if dynamic else pe.grid_size
    if patch_size is not None:
        return (gh, gw), _pair(patch_size)
    if hasattr(pe, "feat_ratio"):  # patch size (ViT) or backbone stride x patch (HybridEmbed)
        return (gh, gw), _pair(pe.feat_ratio(as_scalar=False))
    return (gh, gw), (image_hw[0] / gh, image_hw[1] / gw)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    mods = []
    for i, blk in enumerate(model.blocks):
        attn = getattr(blk, "attn", None)
        if not (hasattr(attn, "fused_attn") and isinstance(getattr(attn, "attn_drop", None),
                                                           nn.Module)):
            raise ValueError(f"block {i} ({type(blk).__name__}) has no timm Attention with "
                             "fused_attn and attn_drop: attention weights cannot be captured")
        mods.append(attn)
    return mods


def _attention_stats(model: nn.Module, images: torch.Tensor, patch_size=None,
                     chunk: int = ATTN_CHUNK):
    """Eval forwards (`chunk` images each) with unfused attention: distances (reference
    convention), renormalised distances and prefix mass [L, H] averaged over all images, and
    the token geometry."""
    model = _unwrap(model)
    grid, token_px = _token_geometry(model, tuple(images.shape[-2:]), patch_size)
    prefix = int(model.num_prefix_tokens)
    attns = _attention_modules(model)
    sums: dict[int, list[np.ndarray]] = {}  # block -> sums of [distance, renormalised, mass]

    def capture(i: int):
        # attn_drop's input is the softmax output: timm's unfused path, any timm 1.0.x
        def hook(_mod, inputs):
            w = inputs[0].detach()
            got = [mean_distance(w, grid, token_px, num_prefix_tokens=prefix, renormalise=r)
                   * len(w) for r in (False, True)]
            got.append(_prefix_mass(w, prefix) * len(w))  # per-chunk means, weighted by size
            sums[i] = got if i not in sums else [a + b for a, b in zip(sums[i], got)]
        return hook

    fused = [a.fused_attn for a in attns]
    modes = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        for a in attns:
            a.fused_attn = False  # fused SDPA never materialises the weights
        model.eval()
        handles = [a.attn_drop.register_forward_pre_hook(capture(i)) for i, a in enumerate(attns)]
        param = next(model.parameters())
        with torch.no_grad():
            for xb in images.split(max(1, int(chunk))):
                model.forward_features(xb.to(param.device, param.dtype))
    finally:
        for h in handles:
            h.remove()
        for a, f in zip(attns, fused):
            a.fused_attn = f
        for m, t in modes:
            m.training = t
    assert sorted(sums) == list(range(len(attns))), "every block's attention must be captured"
    n = len(images)
    dist, renorm, mass = (np.stack([sums[i][j] / n for i in range(len(attns))])
                          for j in range(3))
    return dist, renorm, mass, grid, token_px


def attention_distances(model: nn.Module, images: torch.Tensor, *,
                        patch_size: float | Sequence[float] | None = None) -> np.ndarray:
    """Mean attention distance [layers, heads] in input pixels of a timm VisionTransformer.

    `patch_size` overrides the pixel size of one token (default: the patch embedding's
    feature ratio: the patch size, or backbone stride x patch size for hybrids)."""
    model = _unwrap(model)
    if not _is_vit(model):
        raise ValueError(f"attention distances need a timm VisionTransformer, "
                         f"got {type(model).__name__}")
    return _attention_stats(model, images, patch_size)[0]  # the reference convention


def embedding_similarity(emb: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cosine similarity [gh, gw, gh, gw] of position embeddings laid out as [gh, gw, D]."""
    e = torch.as_tensor(emb).detach().to(torch.float64).cpu()
    gh, gw, _ = e.shape
    e = torch.nn.functional.normalize(e.reshape(gh * gw, -1), dim=-1)
    return (e @ e.T).reshape(gh, gw, gh, gw).numpy()


def pos_embed_similarity(model: nn.Module) -> np.ndarray | None:
    """Cosine similarity [gh, gw, gh, gw] of the patch position embeddings (prefix left out);
    None for a model without learned absolute position embeddings."""
    model = _unwrap(model)
    pos = getattr(model, "pos_embed", None)
    if pos is None:
        return None
    e = pos.detach()[0]
    if not getattr(model, "no_embed_class", False):  # pos_embed holds the prefix positions too
        e = e[model.num_prefix_tokens:]
    gh, gw = model.patch_embed.grid_size
    assert e.shape[0] == gh * gw, "pos_embed must have one row per patch of the grid"
    return embedding_similarity(e.reshape(gh, gw, -1))


def grid_score(sim: np.ndarray) -> float | None:
    """Mean similarity of distinct pairs sharing a row or a column minus that of the other
    pairs: ~0 for random embeddings, large for row/column (2-D sinusoidal) structure.
    None when a grid has no pair of either kind (fewer than 2 rows or columns)."""
    sim = np.asarray(sim, dtype=np.float64)
    i, j, k, m = np.indices(sim.shape)
    same_row, same_col = i == k, j == m
    line = (same_row | same_col) & ~(same_row & same_col)
    other = ~(same_row | same_col)
    if not line.any() or not other.any():
        return None
    return float(sim[line].mean() - sim[other].mean())


def patch_embed_pcs(model: nn.Module, k: int = PAPER_NUM_PCS):
    """Leading principal components [k, C, p, p] of the patch-embedding filters and their
    explained-variance ratios [k] (Figure 7 left); None for hybrids and patchless models.
    Signs are fixed so that each component's largest-magnitude entry is positive."""
    model = _unwrap(model)
    pe = getattr(model, "patch_embed", None)
    proj = getattr(pe, "proj", None)
    if getattr(pe, "backbone", None) is not None or not isinstance(proj, nn.Conv2d):
        return None
    w = proj.weight.detach().to(torch.float64).cpu().numpy()  # [D, C, p, p]
    x = w.reshape(w.shape[0], -1)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s ** 2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    k = min(k, vt.shape[0])
    comps = vt[:k]
    sign = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(sign == 0, 1.0, sign)[:, None]
    return comps.reshape(k, *w.shape[1:]), ratio[:k]


def receptive_field(layers: Iterable[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(receptive field, jump) in input pixels after each (kernel, stride, dilation) layer:
    rf += dilation * (kernel - 1) * jump; jump *= stride (Araujo et al., Distill 2019)."""
    rf, jump, out = 1, 1, []
    for k, s, d in layers:
        rf += d * (k - 1) * jump
        jump *= s
        out.append((rf, jump))
    return out


def _geometry(m: nn.Module) -> tuple[int, int, int] | None:
    if isinstance(m, nn.Conv2d):
        k, s, d = m.kernel_size, m.stride, m.dilation
    elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, d = m.kernel_size, m.stride, getattr(m, "dilation", 1)
    else:
        return None
    # the larger axis: ResNet kernels are square
    return tuple(max(_pair(v)) for v in (k, s, d))  # type: ignore[return-value]


def conv_path(module: nn.Module, skip: Sequence[str] = SHORTCUT_NAMES):
    """Main-path layers of a CNN in registration order: (position, name, (k, s, d), is_conv).

    Submodules named in `skip` (residual shortcuts) are left out: a residual sum sees what
    its widest branch sees, and the main path sees at least as far as the shortcut."""
    out = []
    for pos, (name, m) in enumerate(module.named_modules()):
        if any(part in skip for part in name.split(".")):
            continue
        g = _geometry(m)
        if g is not None:
            out.append((pos, name, tuple(int(v) for v in g), isinstance(m, nn.Conv2d)))
    return out


def _stage_ends(model: nn.Module) -> list[tuple[str, int]]:
    """(stage name, position of the last module of its subtree), from timm's feature_info."""
    names = [n for n, _ in model.named_modules()]
    ends = []
    for info in model.feature_info:
        stage = info["module"]
        inside = [p for p, n in enumerate(names) if n == stage or n.startswith(stage + ".")]
        ends.append((stage, max(inside)))
    return ends


def cnn_receptive_fields(model: nn.Module, image_size: int) -> list[dict[str, Any]]:
    """Receptive field of each feature stage of a timm ResNetV2 (BiT) or ResNet, from the
    architecture. Rows: stage (timm feature module), depth_index (convs on the main path up to
    it), depth_fraction (of the convs up to the last stage), receptive_field_px, jump_px
    (input pixels between neighbouring outputs) and visible_px (the field clipped to the image)."""
    model = _unwrap(model)
    if not _is_resnet(model):
        raise ValueError(f"receptive fields are computed for timm ResNetV2 and ResNet, "
                         f"got {type(model).__name__}")
    path = conv_path(model)
    fields = receptive_field(g for _, _, g, _ in path)
    rows = []
    for stage, end in _stage_ends(model):
        done = [i for i, (pos, *_) in enumerate(path) if pos <= end]
        rf, jump = fields[done[-1]] if done else (1, 1)
        depth = sum(path[i][3] for i in done)
        rows.append(dict(stage=stage, depth_index=depth, receptive_field_px=rf, jump_px=jump,
                         visible_px=min(rf, image_size)))
    total = rows[-1]["depth_index"] if rows else 0
    for r in rows:
        r["depth_fraction"] = r["depth_index"] / total if total else None
    return rows


def _round(v: Any, nd: int) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def summarize(attn_dist: np.ndarray | None = None, pos_sim: np.ndarray | None = None,
              rfs: Sequence[Mapping[str, Any]] | None = None,
              prefix_mass: np.ndarray | None = None,
              attn_dist_renorm: np.ndarray | None = None) -> dict[str, float | None]:
    """The row numbers (SUMMARY_KEYS): None where a measure does not apply."""
    d = None if attn_dist is None else np.asarray(attn_dist, dtype=np.float64)
    r = None if attn_dist_renorm is None else np.asarray(attn_dist_renorm, dtype=np.float64)
    return {
        "attn_dist_first_px": None if d is None else _round(d[0].mean(), 3),
        "attn_dist_last_px": None if d is None else _round(d[-1].mean(), 3),
        "attn_dist_min_first_px": None if d is None else _round(d[0].min(), 3),
        "attn_dist_mean_px": None if d is None else _round(d.mean(), 3),
        "attn_prefix_mass_mean": None if prefix_mass is None else _round(np.mean(prefix_mass), 4),
        "pos_grid_score": None if pos_sim is None else _round(grid_score(pos_sim), 4),
        "cnn_rf_last_px": rfs[-1]["receptive_field_px"] if rfs else None,
        "attn_dist_renorm_first_px": None if r is None else _round(r[0].mean(), 3),
        "attn_dist_renorm_mean_px": None if r is None else _round(r.mean(), 3),
    }


def _rf_arrays(rfs: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    return {
        "cnn_stage": np.array([r["stage"] for r in rfs]),
        "cnn_depth_index": np.array([r["depth_index"] for r in rfs]),
        "cnn_depth_fraction": np.array([r["depth_fraction"] for r in rfs], dtype=np.float64),
        "cnn_rf_px": np.array([r["receptive_field_px"] for r in rfs]),
        "cnn_jump_px": np.array([r["jump_px"] for r in rfs]),
    }


def measure_internals(model: nn.Module, images: torch.Tensor, *, family: str,
                      image_size: int) -> tuple[dict[str, float | None], dict[str, np.ndarray]]:
    """The entry point: (summary row numbers, arrays for `save_npz`) of one trained model.

    ViTs and hybrids: attention distances, position-embedding similarity, patch-filter PCs
    (ViTs) and the backbone's receptive fields (hybrids). ResNets (BiT, resnet): receptive
    fields, ViT numbers None. Other models: what applies, the rest None."""
    model = _unwrap(model)
    vit = _is_vit(model)
    if family in ATTENTION_FAMILIES and not vit:
        raise ValueError(f"family={family!r} needs a timm VisionTransformer, "
                         f"got {type(model).__name__}")
    arrays: dict[str, np.ndarray] = {}
    dist = renorm = mass = sim = rfs = None
    if vit:
        dist, renorm, mass, grid, token_px = _attention_stats(model, images)
        arrays.update(attn_dist_px=dist, attn_dist_renorm_px=renorm, attn_prefix_mass=mass,
                      token_grid=np.array(grid),
                      token_px=np.array(token_px, dtype=np.float64),
                      num_prefix_tokens=np.array(int(model.num_prefix_tokens)))  # uniform reference
        sim = pos_embed_similarity(model)
        if sim is not None:
            arrays["pos_sim"] = sim
        pcs = patch_embed_pcs(model)
        if pcs is not None:
            arrays["patch_pcs"], arrays["patch_pcs_var_ratio"] = pcs
        backbone = getattr(model.patch_embed, "backbone", None)
        if _is_resnet(backbone):
            rfs = cnn_receptive_fields(backbone, image_size)
    elif _is_resnet(model):
        rfs = cnn_receptive_fields(model, image_size)
    if rfs:
        arrays.update(_rf_arrays(rfs))
    return summarize(dist, sim, rfs, mass, renorm), arrays


def save_npz(path: str | os.PathLike, arrays: Mapping[str, Any]) -> Path:
    """Write `arrays` to a compressed .npz atomically (results.atomic_write); returns the path."""
    path = Path(path)
    data = {k: np.asarray(v) for k, v in arrays.items()}
    bad = [k for k, v in data.items() if v.dtype == object]
    if bad:
        raise ValueError(f"arrays {bad} have dtype object: npz would need pickle to read them")
    from benchbench.results import atomic_write

    atomic_write(path, lambda f: np.savez_compressed(f, **data))
    return path

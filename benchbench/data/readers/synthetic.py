"""The embedded procedural dataset (`data=synthetic`): shapes x stripe orientation, generated
deterministically in chunks, so any size needs no files."""
from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np
import torch

from benchbench.data.base import DATASETS, DatasetSpec, Split, _positive, _u64
from benchbench.errors import ConfigError
from benchbench.registry import cfg_get as _get

# Embedded procedural dataset. Class = shape (disc, square, triangle, ring, cross) x the
# orientation of the stripes inside it (horizontal, vertical); everything else is nuisance.
SYN_SIZE, SYN_CLASSES, SYN_CHUNK = 32, 10, 1024
SYN_DEFAULT_TRAIN, SYN_DEFAULT_TEST = 10_000, 2_000
SYN_SHAPES = ("disc", "square", "triangle", "ring", "cross")
SAY_AFTER_S = 20.0  # a generation this long or longer says so before the wait (issue 23)
SYN_VERSION = 1  # part of every chunk's seed: bump it when the generator changes
_SPLIT_IDS = {"train": 0, "test": 1}


def _sdf(kind: np.ndarray, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed distance-like field (negative inside) of shape `kind` with radius r, in image units."""
    u, v, r = np.broadcast_arrays(u, v, r)
    d = np.empty(u.shape, np.float32)
    for k in range(len(SYN_SHAPES)):
        sel = kind == k
        if not sel.any():
            continue
        a, b, rr = u[sel], v[sel], r[sel]
        if k == 0:  # disc
            d[sel] = np.hypot(a, b) - rr
        elif k == 1:  # square of the same area as the disc (side = r * sqrt(pi))
            d[sel] = np.maximum(np.abs(a), np.abs(b)) - rr * 0.886
        elif k == 2:  # equilateral triangle, circumradius 1.25 r
            d[sel] = np.maximum.reduce([b, 0.866 * a - 0.5 * b, -0.866 * a - 0.5 * b]) - rr * 0.625
        elif k == 3:  # ring, wide enough to hold two stripe periods
            d[sel] = np.abs(np.hypot(a, b) - rr * 0.75) - rr * 0.3
        else:  # plus-shaped cross
            w = rr * 0.36
            d[sel] = np.minimum(np.maximum(np.abs(a) - w, np.abs(b) - rr),
                                np.maximum(np.abs(b) - w, np.abs(a) - rr))
    return d


def _synthetic_chunk(seed: int, split: str, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """SYN_CHUNK images, a function of (seed, split, chunk) only: the first N images of a
    split are the same for every N, and train and test come from disjoint seed streams."""
    rng = np.random.default_rng([SYN_VERSION, _u64(seed), _SPLIT_IDS[split], chunk])
    n, s = SYN_CHUNK, SYN_SIZE
    y = (chunk * n + np.arange(n)) % SYN_CLASSES  # label = global index mod 10: balanced prefixes
    kind, orient = y // 2, y % 2
    g = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    yy, xx = g[None, :, None], g[None, None, :]
    px = 2.0 / s  # one pixel in image units: edges are anti-aliased over one pixel

    def u(lo: float, hi: float, shape: tuple[int, ...] = (n, 1, 1)) -> np.ndarray:
        return rng.uniform(lo, hi, shape).astype(np.float32)

    # low-frequency background: a base colour plus two random plane waves per channel;
    # sin(fx x + fy y + ph) = sin(fx x + ph) cos(fy y) + cos(fx x + ph) sin(fy y): no full-size sin
    img = np.broadcast_to(u(0.15, 0.85, (n, 3, 1, 1)), (n, 3, s, s)).copy()
    for _ in range(2):
        amp, ph = u(0.0, 0.15, (n, 3, 1, 1)), u(0, 2 * np.pi, (n, 3, 1, 1))
        ax, by = u(-2.5, 2.5, (n, 3, 1, 1)) * xx[:, None] + ph, u(-2.5, 2.5, (n, 3, 1, 1)) * yy[:, None]
        img += amp * np.sin(ax) * np.cos(by) + amp * np.cos(ax) * np.sin(by)

    # distractor: a smaller plain shape of any kind, anywhere, behind the object
    dist = _sdf(rng.integers(0, 5, n), xx - u(-0.8, 0.8), yy - u(-0.8, 0.8), u(0.12, 0.22))
    alpha = np.clip(0.5 - dist / px, 0, 1)[:, None]
    img += (u(0, 1, (n, 3, 1, 1)) - img) * alpha

    # the object: random radius, position (mostly inside the frame) and a small rotation
    r = u(0.5, 0.7)
    cx, cy = u(-1, 1) * (1 - r), u(-1, 1) * (1 - r)
    th = u(-0.15, 0.15)
    a, b = xx - cx, yy - cy
    cu, cv = np.cos(th) * a + np.sin(th) * b, -np.sin(th) * a + np.cos(th) * b
    alpha = np.clip(0.5 - _sdf(kind, cu, cv, r) / px, 0, 1)[:, None]

    # stripes in the image frame: period 3.5..6.5 px, random phase, +-14 degrees of jitter
    ang = orient.astype(np.float32)[:, None, None] * np.float32(np.pi / 2) + u(-0.25, 0.25)
    k = np.float32(2 * np.pi) / (u(3.5, 6.5) * px)  # radians per image unit
    ay, bx = k * np.cos(ang) * yy + u(0, 2 * np.pi), k * np.sin(ang) * xx
    stripe = 0.5 + 0.5 * (np.sin(ay) * np.cos(bx) + np.cos(ay) * np.sin(bx))
    c1 = u(0, 1, (n, 3, 1, 1))
    d = np.where(rng.random((n, 3, 1, 1)) < 0.5, -1, 1) * u(0.25, 0.6, (n, 3, 1, 1))
    c2 = np.clip(np.where((c1 + d < 0) | (c1 + d > 1), c1 - d, c1 + d), 0, 1)  # keep the contrast
    img += (c1 + (c2 - c1) * stripe[:, None] - img) * alpha

    img += rng.standard_normal(img.shape, dtype=np.float32) * u(0.02, 0.08, (n, 1, 1, 1))
    assert img.dtype == np.float32
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), y.astype(np.int64)


def synthetic_split(n: int, *, split: str = "train", seed: int = 0, num_classes: int = SYN_CLASSES) -> Split:
    """The first n images of the procedural split whose label is < num_classes."""
    per_10 = math.ceil(n / num_classes) * SYN_CLASSES  # labels cycle 0..9, so this many suffice
    xs, ys = [], []
    chunks = math.ceil(per_10 / SYN_CHUNK)
    t0 = time.perf_counter()
    for c in range(chunks):
        x, y = _synthetic_chunk(seed, split, c)
        keep = y < num_classes
        xs.append(x[keep])
        ys.append(y[keep])
        if c == 0 and (est := (time.perf_counter() - t0) * chunks) > SAY_AFTER_S:
            took = f"{est:.0f} s" if est < 90 else f"{est / 60:.0f} min"
            print(f"benchbench: synthetic: generating {n:,} {split} images, about {took} on "
                  f"this CPU; a smaller "
                  f"data.{'train' if split == 'train' else 'test'}_size takes less.",
                  file=sys.stderr, flush=True)
    return Split(torch.from_numpy(np.concatenate(xs)[:n]), torch.from_numpy(np.concatenate(ys)[:n]))


def _load_synthetic(cfg: Any) -> tuple[Split, Split, int]:
    k = _positive("num_classes", _get(cfg, "num_classes")) or SYN_CLASSES
    if k > SYN_CLASSES:
        raise ConfigError(f"data.num_classes={k} but synthetic has {SYN_CLASSES} classes; use 1..10.")
    n_train = _positive("train_size", _get(cfg, "train_size")) or SYN_DEFAULT_TRAIN
    n_test = _positive("test_size", _get(cfg, "test_size")) or SYN_DEFAULT_TEST
    # the training draw follows data.seed (a different sample of an unlimited pool, like a
    # different subset); the test set is the same for every seed
    seed = int(_get(cfg, "seed", 0))
    return (synthetic_split(n_train, split="train", seed=seed, num_classes=k),
            synthetic_split(n_test, split="test", seed=0, num_classes=k), k)


DATASETS.register("synthetic", DatasetSpec(_load_synthetic, SYN_DEFAULT_TRAIN, SYN_DEFAULT_TEST, generated=True))

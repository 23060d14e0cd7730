"""`benchbench-preview <overrides> [--split train|test] [--n N] --out DIR`: what the model is fed.

Composes the config as `benchbench` does, loads the data and builds the loader training or
evaluation uses, and writes the first batch (step 0 of the training stream, or the first
images of the evaluation split) after augmentation, before normalisation and mixup:
  samples.png  a labelled grid (index in the split, label)
  samples.npz  images (N, C, H, W) uint8, labels (N,), index (N,): the source sample's index
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

MIN_TILE = 96  # small images (16 px) are enlarged (nearest) in the grid so they can be seen


def compose(overrides: list[str]) -> Any:
    """The config `benchbench <overrides>` runs (one point: no sweeps)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from benchbench import cli
    from benchbench.errors import ConfigError

    cli.check_overrides(overrides)
    if any("," in a for a in overrides if not a.startswith("hydra")):
        raise ConfigError("benchbench-preview shows one point: give single values, not sweeps (a,b).")
    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(cli.CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def samples(cfg: Any, split: str = "train", n: int = 16) -> dict[str, np.ndarray]:
    """{images, labels, index} of the first n images the model would see (the real loaders)."""
    from benchbench import data
    from benchbench.data.augment import recipe_name

    d = cfg.data
    ds = data.load_dataset(d)
    part = ds.train if split == "train" else ds.test
    n = min(int(n), len(part))
    size = int(d.image_size)
    loader = data.make_loader(ds, part=split, batch_size=n, image_size=size, device="cpu",
                              augment=recipe_name(d.get("augment")) if split == "train" else False,
                              seed=int(cfg.seed), drop_last=False, crop_pct=d.get("crop_pct"),
                              num_workers=0, skip_bad_images=bool(d.get("skip_bad_images", True)),
                              max_resident_bytes=int(d.get("max_resident_bytes") or data.DEFAULT_MAX_RESIDENT_BYTES),
                              shuffle_buffer=int(d.get("shuffle_buffer") or 10_000))
    loader.raw = True  # [0, 255] units, no normalisation, no mixup
    if split == "train":
        x, y = next(loader.iter_from(0))
        index = loader._perm(0)[:n]  # step 0's images, in batch order
    else:
        x, y = next(iter(loader.eval_batches(n)))
        index = torch.arange(n)
    images = x.round().clamp(0, 255).to(torch.uint8).numpy()
    return {"images": images, "labels": y.numpy().astype(np.int64), "index": index.numpy().astype(np.int64)}


def grid(images: np.ndarray, labels: np.ndarray, index: np.ndarray, cols: int = 8) -> Any:
    """A PIL image: the samples in rows of `cols`, each captioned `#index  y=label`."""
    from PIL import Image, ImageDraw

    n, c, h, w = images.shape
    k = max(1, -(-MIN_TILE // max(h, w)))  # enlargement factor
    th, tw, cap = h * k, w * k, 14
    cols = min(cols, n)
    rows = -(-n // cols)
    canvas = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + cap + 4) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        arr = images[i].transpose(1, 2, 0)
        tile = Image.fromarray(arr[..., 0] if c == 1 else arr).convert("RGB").resize((tw, th), Image.NEAREST)
        x0, y0 = 4 + (i % cols) * (tw + 4), 4 + (i // cols) * (th + cap + 4)
        canvas.paste(tile, (x0, y0 + cap))
        draw.text((x0, y0), f"#{int(index[i])} y={int(labels[i])}", fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    """Console script `benchbench-preview`."""
    from benchbench.errors import BenchbenchError

    ap = argparse.ArgumentParser(prog="benchbench-preview", description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("train", "test"), default="train")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--out", required=True, help="folder for samples.png and samples.npz")
    ns, overrides = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
    if ns.n <= 0:
        print("benchbench-preview: error: --n must be a positive number of images.", file=sys.stderr)
        return 2
    try:
        s = samples(compose(overrides), ns.split, ns.n)
    except BenchbenchError as e:
        print(f"benchbench-preview: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - Hydra's compose errors: one line, not a traceback
        print(f"benchbench-preview: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", **s)
    grid(s["images"], s["labels"], s["index"]).save(out / "samples.png")
    print(f"benchbench-preview: {len(s['labels'])} {ns.split} images -> {out / 'samples.png'}, "
          f"{out / 'samples.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

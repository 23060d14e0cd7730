"""Loader img/s against a bare decode loop over the same JPEGs with the same workers.

    python -m benchbench.bench.loader [--images 512] [--workers N] [--size 224] [--device cpu]
                                      [--augment inception|cifar]

Writes ImageNet-like JPEGs (500x375, quality 90) as class folders and as WebDataset shards in
a temporary folder, then times, after one warm-up pass each:
  decode_cost    ms per image in one process: today's view (shorter side resized, centre
                 square) against the inception crop of the whole image (decode_crop)
  decode_loop    N processes (multiprocessing.Pool) read + decode + crop + resize every file,
                 as the loader's workers do for --augment (inception: decode_crop)
  imagefolder    StreamLoader batches of data=imagefolder as they reach --device (uint8)
  webdataset     the same for data=webdataset shards
  ...+augment    the same with the augment + normalise step training runs on --device
One JSON line each, with img/s and the ratio to decode_loop (the target: >= 0.9).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchbench.data.decode import decode_bytes, decode_crop
from benchbench.runtime import available_cpus


def write_jpegs(root: Path, n: int, classes: int = 10, size: tuple[int, int] = (500, 375)) -> None:
    """Class folders train/ and val/ and shards train-*.tar / val-*.tar of the same images:
    smooth gradients plus noise, so JPEG sizes are photo-like (~50-100 KB), not noise-sized."""
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tars: dict[str, list] = {"train": [], "val": []}
    for i in range(n):
        part = "val" if i % 11 == 10 else "train"
        c = i % classes
        base = np.stack([np.sin(xx / (20 + 7 * c) + i) * 80 + 128, np.cos(yy / (15 + 5 * c)) * 80 + 128,
                         (xx + yy) / (w + h) * 255], -1)
        arr = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        d = root / "folders" / part / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"{i:06d}.jpg", quality=90)
        tars[part].append((f"{i:06d}", (d / f"{i:06d}.jpg").read_bytes(), c))
    import webdataset as wds

    (root / "shards").mkdir()
    for part, samples in tars.items():
        for s in range(0, len(samples), 128):
            with wds.TarWriter(str(root / "shards" / f"{part}-{s // 128:04d}.tar")) as tw:
                for key, jpg, c in samples[s : s + 128]:
                    tw.write({"__key__": key, "jpg": jpg, "cls": str(c)})


def _decode_file(args: tuple[str, int, bool, int]) -> int:
    path, size, crop, seed = args
    with open(path, "rb") as f:
        raw = f.read()
    return int((decode_crop(raw, size, 3, seed) if crop else decode_bytes(raw, size, 3)).shape[0])


def decode_loop(paths: list[str], size: int, workers: int, crop: bool = False) -> float:
    """img/s of the bare loop: every file read and decoded once by `workers` processes."""
    torch.set_num_threads(1)
    jobs = [(p, size, crop, i) for i, p in enumerate(paths)]
    with mp.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.imap_unordered(_decode_file, jobs[:64], chunksize=8))  # warm-up
        t0 = time.perf_counter()
        list(pool.imap_unordered(_decode_file, jobs, chunksize=8))
        return len(paths) / (time.perf_counter() - t0)


def decode_cost(paths: list[str], size: int) -> dict[str, float]:
    """ms per image in this process (one thread): today's centre-square view against the
    inception crop of the whole image, over the same files (page cache warm)."""
    torch.set_num_threads(1)
    raws = [Path(p).read_bytes() for p in paths]
    out = {}
    for name, fn in (("centre_square_ms", lambda i, r: decode_bytes(r, size, 3)),
                     ("inception_crop_ms", lambda i, r: decode_crop(r, size, 3, i))):
        fn(0, raws[0])
        t0 = time.perf_counter()
        for i, r in enumerate(raws):
            fn(i, r)
        out[name] = round((time.perf_counter() - t0) * 1000 / len(raws), 3)
    return out


def loader_rate(name: str, root: Path, size: int, workers: int, batch: int, device: str,
                transform: bool = True, augment: str = "inception") -> tuple[float, int]:
    """img/s of one epoch of StreamLoader training batches (after two warm-up batches);
    transform=False leaves out the augment + normalise step that runs on the training device
    (on a CPU-only machine it takes the same cores as the workers)."""
    from benchbench import data

    ds = data.load_dataset({"name": name, "root": str(root), "image_size": size, "max_resident_bytes": 1,
                            "augment": augment})
    loader = data.make_loader(ds, batch_size=batch, image_size=size, device=device, augment=augment,
                              num_workers=workers, seed=0)
    if not transform:
        loader._train_batch = lambda xb, y, *a, **k: (xb, y)  # uint8 batches as they reach the device
    steps = loader.steps_per_epoch
    it = loader.iter_from(0)  # one stream for the whole run, as training uses it
    for _ in range(min(steps, 2)):
        next(it)  # warm-up: worker start, page cache
    t0 = time.perf_counter()
    seen = 0
    for _ in range(steps):
        seen += len(next(it)[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0), seen


def run(images: int, workers: int, size: int, batch: int, device: str, augment: str = "inception") -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, images)
        paths = sorted(str(p) for p in (root / "folders" / "train").rglob("*.jpg"))
        base = {"images": len(paths), "workers": workers, "image_size": size, "jpeg": "500x375 q90",
                "cpus": available_cpus(), "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__, "augment": augment}
        out = [{"measure": "decode_cost", **decode_cost(paths[:128], size), **base}]
        ref = decode_loop(paths, size, workers, crop=augment in ("inception", "augreg"))
        out.append({"measure": "decode_loop", "img_per_s": round(ref, 1), **base})
        for name, sub in (("imagefolder", "folders"), ("webdataset", "shards")):
            for transform in (False, True):
                rate, seen = loader_rate(name, root / sub, size, workers, batch, device, transform, augment)
                out.append({"measure": name + ("+augment" if transform else ""),
                            "img_per_s": round(rate, 1), "ratio_to_decode_loop": round(rate / ref, 3),
                            "batch_size": batch, "device": device, "seen": seen, **base})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="default: the CPUs this process may use")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--augment", default="inception", choices=("inception", "cifar"),
                    help="inception: crops of the whole image in the workers; cifar: today's square")
    a = ap.parse_args(argv)
    for line in run(a.images, a.workers or available_cpus(), a.size, a.batch, a.device, a.augment):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

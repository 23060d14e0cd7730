"""Time nested class-balanced subsets on ImageNet-21k-sized labels (14.2M x 21,841 classes).

    python -m benchbench.bench.subsets [--n 14200000] [--classes 21841] [--sizes 1e6,5e6,1e7]

Prints one JSON line per measure (seconds, wall clock, one process); the issue's target is
under 10 s for the nested subsets and the validation carving together.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from benchbench.data import subsets


def labels(n: int, classes: int, seed: int = 0) -> torch.Tensor:
    """Imbalanced labels like ImageNet-21k's (a few hundred to ~3,000 images per class)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(classes, generator=g) * 0.9 + 0.1
    return torch.multinomial(weights, n, replacement=True, generator=g)


def run(n: int, classes: int, sizes: list[int], seed: int = 0) -> list[dict]:
    y = labels(n, classes, seed)
    out = []
    t_all = time.perf_counter()
    for size in sizes:
        t0 = time.perf_counter()
        idx = subsets.nested_subset(y, size, seed)
        out.append({"measure": "nested_subset", "labels": n, "classes": classes, "size": size,
                    "seconds": round(time.perf_counter() - t0, 3), "picked": len(idx)})
    t0 = time.perf_counter()
    n_val = max(classes, n // 100)  # a 1% minival, at least one image per class
    subsets.carve_val(y, n_val)
    out.append({"measure": "carve_val", "labels": n, "classes": classes,
                "size": n_val, "seconds": round(time.perf_counter() - t0, 3)})
    out.append({"measure": "total", "labels": n, "classes": classes,
                "seconds": round(time.perf_counter() - t_all, 3), "cpus": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(), "torch": torch.__version__})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=float, default=14.2e6)
    ap.add_argument("--classes", type=int, default=21841)
    ap.add_argument("--sizes", default="1e6,5e6,1e7", help="comma-separated subset sizes")
    a = ap.parse_args(argv)
    for line in run(int(a.n), a.classes, [int(float(s)) for s in a.sizes.split(",")]):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

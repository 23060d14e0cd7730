"""Peak FLOP/s and MFU: the cited datasheet table, the measured bf16 matmul peak (cached), MFU.

Constants have a source (STYLE habit 9, torchtitan's get_peak_flops): every table entry
cites its datasheet; a GPU not in the table gets its peak measured once and cached.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch

from benchbench.errors import ResultsError
from benchbench.measure.flops import TRAIN_FLOPS_PER_FORWARD
from benchbench.measure.timing import CudaEventClock, time_fn
from benchbench.results import atomic_write_text

# Dense (no sparsity) bf16 tensor-core peak FLOP/s, matched in order against the lower-cased
# torch.cuda.get_device_name(); NVIDIA quotes "with sparsity" figures at 2x these.
PEAK_BF16_FLOPS: tuple[tuple[str, float, str], ...] = (
    (r"h100.*nvl", 835e12, "NVIDIA H100 datasheet: H100 NVL 1,671 TFLOPS bf16 with sparsity"),
    (r"h100.*pcie", 756e12, "NVIDIA H100 datasheet: H100 PCIe 1,513 TFLOPS bf16 with sparsity"),
    (r"h100", 989.4e12, "NVIDIA H100 whitepaper: H100 SXM5 989.4 TFLOPS bf16 dense"),
    (r"h200.*nvl", 835e12, "NVIDIA H200 datasheet: H200 NVL 1,671 TFLOPS bf16 with sparsity"),
    (r"h200", 989.4e12, "NVIDIA H200 datasheet: H200 SXM 1,979 TFLOPS bf16 with sparsity"),
    (r"b200", 2.25e15, "NVIDIA HGX B200 datasheet: 4.5 PFLOPS fp16/bf16 with sparsity per GPU"),
    (r"a100", 312e12, "NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (SXM and PCIe)"),
    (r"l40s", 362.05e12, "NVIDIA L40S datasheet: 362.05 TFLOPS bf16 dense (733 with sparsity)"),
    (r"\bl4\b", 121e12, "NVIDIA L4 datasheet: 242 TFLOPS bf16 with sparsity"),
    (r"\ba10\b", 125e12, "NVIDIA A10 datasheet: 125 TFLOPS bf16 dense (250 with sparsity)"),
    (r"rtx 4090", 165.2e12,
     "NVIDIA Ada Lovelace whitepaper, RTX 4090: 165.2 TFLOPS bf16 with fp32 accumulate"),
    (r"rtx 3090", 71e12,
     "NVIDIA Ampere GA102 whitepaper, RTX 3090: 71 TFLOPS bf16 with fp32 accumulate"),
)


def peak_flops_from_table(device_name: str) -> float | None:
    """Datasheet dense bf16 peak of a GPU by its CUDA name; None if it is not in the table."""
    name = device_name.lower()
    for pattern, flops, _source in PEAK_BF16_FLOPS:
        if re.search(pattern, name):
            return flops
    return None


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "benchbench" / "peak_flops.json"


def _cache_read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cache_write(path: Path, key: str, value: float) -> None:
    """Merge one entry into the JSON cache atomically (results.atomic_write_text)."""
    data = _cache_read(path)
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def measure_peak_bf16_flops(
    device: torch.device | str = "cuda",
    *,
    n: int = 8192,
    repeats: int = 10,
    cache: bool = True,
    cache_path: str | os.PathLike | None = None,
) -> float | None:
    """Achievable bf16 matmul FLOP/s of the GPU: an n x n x n bf16 matmul (2 n^3 FLOPs) timed
    with CUDA events after warm-up, median over repeats. Cached per device name, torch
    version and n in ~/.cache/benchbench/peak_flops.json. None off CUDA or without bf16."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        return None
    key = f"{torch.cuda.get_device_name(dev)}|torch {torch.__version__}|n={n}"
    path = Path(cache_path) if cache_path is not None else _cache_path()
    if cache and key in (got := _cache_read(path)):
        return float(got[key])
    with torch.cuda.device(dev):
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        t = time_fn(lambda: a @ b, warmup=5, repeats=repeats, iters_per_repeat=10,
                    clock=CudaEventClock())
    flops = 2 * n**3 / t["median_s"]
    if cache:
        try:
            _cache_write(path, key, flops)
        except (OSError, ResultsError) as e:  # a read-only home must not lose the measurement
            warnings.warn(f"benchbench: cannot cache peak FLOP/s in {path}: {e}", stacklevel=2)
    return flops


def peak_bf16_flops(device: torch.device | str) -> float | None:
    """The MFU denominator: the datasheet dense bf16 peak (PEAK_BF16_FLOPS), measured with
    measure_peak_bf16_flops for a GPU not in the table; None on a CPU."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return peak_flops_from_table(torch.cuda.get_device_name(dev)) or measure_peak_bf16_flops(dev)


def mfu(flops_per_image: float | None, train_img_per_s: float | None,
        peak_flops: float | None) -> float | None:
    """Model FLOPs utilization of training: 3 x forward FLOPs x images/s / peak FLOP/s
    (PaLM, Chowdhery et al. 2022, appendix B; 3 = TRAIN_FLOPS_PER_FORWARD, Kaplan et al.
    2020). None when any input is None (e.g. a CPU)."""
    if flops_per_image is None or train_img_per_s is None or not peak_flops:
        return None
    return TRAIN_FLOPS_PER_FORWARD * flops_per_image * train_img_per_s / peak_flops

"""Measurement: params, FLOPs, throughput, peak memory, max batch size, MFU.

Measurement is pure (STYLE habit 5): every function takes a model and shapes and returns a
flat dict (or one number) whose names carry units; printing and row files happen at the edge
(cli.py, gpu_bench.py). The one exception is the cache of measured peak FLOP/s.

Conventions (DESIGN.md "Measurement conventions"):
- FLOPs = 2 x MACs, every matmul/conv counted, attention included; norms/elementwise not.
- Time after warm-up with CUDA events (GPU) or perf_counter after synchronize; the median
  over repeats plus the spread (IQR); inputs are fresh random batches, never zeros.
- Peak memory is `torch.cuda.max_memory_allocated` after a reset, per phase; None on CPU.
- A metric that does not apply (MFU on a CPU, memory on a CPU) is None, never 0.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchbench.models import count_params

# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------


class FlopCountError(RuntimeError):
    """The traced graph holds an op we cannot count: never guess, never skip silently."""


def _shape(v: Any) -> list[int]:
    t = v.type()
    sizes = t.sizes() if isinstance(t, torch._C.TensorType) else None
    if sizes is None or any(s is None for s in sizes):
        raise FlopCountError(f"no static shape for {v.debugName()} ({t}): cannot count its FLOPs")
    return list(sizes)


def _matmul_macs(a: Sequence[int], b: Sequence[int]) -> int:
    """MACs of torch.matmul(a, b) for shapes a, b, with 1-D operands and batch broadcasting."""
    a, b = list(a), list(b)
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    if a[-1] != b[-2]:
        raise FlopCountError(f"matmul with mismatched shapes {a} @ {b}")
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def _matmul_handle(ia: int, ib: int) -> Callable:
    """Handle for ops that multiply inputs[ia] by inputs[ib] (mm, bmm, baddbmm, addmm, ...)."""
    return lambda inputs, outputs: _matmul_macs(_shape(inputs[ia]), _shape(inputs[ib]))


def _outer_handle(inputs: list, outputs: list) -> int:
    return math.prod(_shape(inputs[0])) * math.prod(_shape(inputs[1]))


def _linear_handle(inputs: list, outputs: list) -> int:
    x, w = _shape(inputs[0]), _shape(inputs[1])  # w: [out, in] (or [in])
    return math.prod(x) * (w[0] if len(w) == 2 else 1)


def _bilinear_handle(inputs: list, outputs: list) -> int:
    x1, w = _shape(inputs[0]), _shape(inputs[2])  # w: [out, in1, in2]
    return math.prod(x1[:-1]) * math.prod(w)


def _conv_macs(x: Sequence[int], w: Sequence[int], out: Sequence[int], transposed: bool) -> int:
    """weight numel x output positions (input positions for a transposed conv) x batch;
    the weight is [out, in/groups, *k] ([in, out/groups, *k] transposed), so groups are in."""
    nsp = len(w) - 2
    batch = math.prod(x[: len(x) - nsp - 1])  # 1 for unbatched input
    return batch * math.prod(w) * math.prod((x if transposed else out)[-nsp:])


def _conv_handle(transposed: bool | int) -> Callable:
    """`transposed` is a bool, or the index of the op's `transposed` argument."""

    def handle(inputs: list, outputs: list) -> int:
        t = inputs[transposed].toIValue() if not isinstance(transposed, bool) else transposed
        return _conv_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0]), bool(t))

    return handle


def _sdpa_macs(q: Sequence[int], k: Sequence[int], v: Sequence[int]) -> int:
    """q@k^T and attn@v of scaled_dot_product_attention: B x heads x L x S x (E + Ev) MACs
    (= 2 B h L S d for Ev = E). q [..., Hq, L, E], k [..., Hk, S, E], v [..., Hk, S, Ev];
    with grouped-query attention (Hq a multiple of Hk) every query head does the work. The
    full L x S is counted even with is_causal, as torch.utils.flop_counter does."""
    lq, lk = list(q[:-2]), list(k[:-2])
    if lq and len(lq) == len(lk) and lk[-1] not in (1, lq[-1]) and lq[-1] % lk[-1] == 0:
        lk[-1] = lq[-1]  # GQA: k/v heads are shared by Hq/Hk query heads each
    batch = math.prod(torch.broadcast_shapes(tuple(lq), tuple(lk)))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_handle(inputs: list, outputs: list) -> int:
    return _sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def _einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """MACs of einsum: for two operands, the product of the sizes of all distinct indices;
    more operands are contracted left to right (an upper bound of the optimal order)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise FlopCountError(f"einsum {equation!r} with {len(shapes)} operands")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq]
    n_ell = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t),
                default=0)
    ell = "".join(spare[:n_ell])

    def expand(t: str, ndim: int | None) -> str:
        if "..." not in t:
            return t
        k = n_ell if ndim is None else ndim - len(t.replace("...", ""))
        return t.replace("...", ell[n_ell - k:])

    terms = [expand(t, len(s)) for t, s in zip(terms, shapes)]
    if "->" in eq:
        rhs = expand(rhs, None)
    else:  # implicit mode: indices that appear once, in alphabetical order
        allc = "".join(terms)
        rhs = ell + "".join(sorted(c for c in set(allc) if allc.count(c) == 1 and c not in ell))
    sizes: dict[str, int] = {}
    for t, s in zip(terms, shapes):
        for c, n in zip(t, s):
            sizes[c] = max(sizes.get(c, 1), n)  # size-1 dims broadcast
    if len(terms) == 1:
        return 0  # a sum/transpose/diagonal: no multiplications
    macs, cur = 0, terms[0]
    for i, t in enumerate(terms[1:], start=1):
        letters = set(cur) | set(t)
        macs += math.prod(sizes[c] for c in letters)
        later = set("".join(terms[i + 1 :])) | set(rhs)
        cur = "".join(sorted(c for c in letters if c in later))
    return macs


def _einsum_handle(inputs: list, outputs: list) -> int:
    equation = inputs[0].toIValue()
    operands = list(inputs[1].node().inputs())  # prim::ListConstruct of the tensors
    return _einsum_macs(equation, [_shape(v) for v in operands])


# Ops that multiply matrices: each has a handle returning MACs (FLOPs = 2 x MACs).
MATMUL_HANDLES: dict[str, Callable] = {
    "aten::linear": _linear_handle,
    "aten::matmul": _matmul_handle(0, 1),
    "aten::mm": _matmul_handle(0, 1),
    "aten::bmm": _matmul_handle(0, 1),
    "aten::mv": _matmul_handle(0, 1),
    "aten::dot": _matmul_handle(0, 1),
    "aten::vdot": _matmul_handle(0, 1),
    "aten::addmm": _matmul_handle(1, 2),
    "aten::addmv": _matmul_handle(1, 2),
    "aten::baddbmm": _matmul_handle(1, 2),
    "aten::addbmm": _matmul_handle(1, 2),
    "aten::outer": _outer_handle,
    "aten::ger": _outer_handle,
    "aten::bilinear": _bilinear_handle,
    "aten::einsum": _einsum_handle,
    "aten::_convolution": _conv_handle(6),
    "aten::convolution": _conv_handle(6),
    "aten::_convolution_mode": _conv_handle(False),  # conv with padding="same"/"valid"
    "aten::conv1d": _conv_handle(False),
    "aten::conv2d": _conv_handle(False),
    "aten::conv3d": _conv_handle(False),
    "aten::conv_transpose1d": _conv_handle(True),
    "aten::conv_transpose2d": _conv_handle(True),
    "aten::conv_transpose3d": _conv_handle(True),
    # fvcore knows none of these: timm ViTs call the fused op by default (the attention trap).
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "aten::_scaled_dot_product_attention_math": _sdpa_handle,
    "aten::_scaled_dot_product_flash_attention": _sdpa_handle,
    "aten::_scaled_dot_product_flash_attention_for_cpu": _sdpa_handle,
    "aten::_scaled_dot_product_efficient_attention": _sdpa_handle,
    "aten::_scaled_dot_product_cudnn_attention": _sdpa_handle,
}

# Normalization and resampling: fvcore counts them by default (timm's published GMACs include
# them); the paper's compute numbers are the matmul count, so they are 0 unless matmul_only=False.
NORM_OPS: frozenset[str] = frozenset({
    "aten::batch_norm",  # also timm StdConv2d's weight standardization
    "aten::group_norm", "aten::layer_norm", "aten::instance_norm", "aten::rms_norm",
    "aten::native_batch_norm", "aten::native_layer_norm", "aten::native_group_norm",
    "aten::adaptive_avg_pool2d", "aten::upsample_nearest2d", "aten::upsample_bilinear2d",
    "aten::grid_sampler",
})

# Ops known to do no matrix multiplication (elementwise, reductions, pooling, data movement,
# randomness, shape arithmetic): ignored. Any op in neither this set nor the handles raises.
ELEMENTWISE_OPS: frozenset[str] = frozenset("aten::" + n for n in """
add add_ sub sub_ rsub mul mul_ div div_ neg neg_ abs pow pow_ sqrt rsqrt exp log log1p
reciprocal square erf sin cos tanh tanh_ sigmoid sigmoid_ gelu gelu_ silu silu_ relu6 hardtanh
hardtanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ leaky_relu leaky_relu_ elu elu_ selu
softplus mish mish_ log_sigmoid softmax log_softmax _softmax clamp_min clamp_max clamp_min_
clamp_max_ ceil round sign where lerp addcmul addcdiv maximum minimum fill_ zero_ masked_fill_
mean sum prod amax amin min var std var_mean std_mean norm linalg_vector_norm frobenius_norm
cumsum argmax argmin topk sort all any isfinite isnan nan_to_num lt le ne logical_and logical_or
logical_not bitwise_and bitwise_or max_pool1d max_pool2d max_pool3d max_pool2d_with_indices
avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d upsample_bicubic2d upsample_nearest1d upsample_linear1d _upsample_bilinear2d_aa
_upsample_bicubic2d_aa pad reflection_pad1d reflection_pad2d replication_pad2d constant_pad_nd
reshape_as view_as expand_as repeat repeat_interleave flip clone detach_ alias lift_fresh
unflatten movedim swapaxes diagonal tril triu one_hot embedding index_select masked_select scatter
scatter_add pixel_shuffle pixel_unshuffle channel_shuffle im2col col2im unfold linspace meshgrid
ones_like empty_like rand rand_like randn randn_like randint bernoulli bernoulli_ div_floor
dropout_ feature_dropout alpha_dropout native_dropout tensor as_tensor numel dim item Float Bool
len __getitem__ list _shape_as_tensor new_ones empty_strided sym_size contiguous
""".split())

@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """eval() for the duration, then every module's own flag back (frozen BN stays frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def _fvcore() -> tuple[type, dict[str, Callable]]:
    """fvcore's FlopCountAnalysis and its default handles (for matmul_only=False)."""
    with warnings.catch_warnings():  # fvcore's import touches the deprecated torch.jit.script
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
    return FlopCountAnalysis, dict(_DEFAULT_SUPPORTED_OPS)


def _size2(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def count_flops(
    model: nn.Module,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    *,
    matmul_only: bool = True,
) -> dict[str, int]:
    """Forward FLOPs of one image: {"flops_per_image", "macs_per_image"}, FLOPs = 2 x MACs.

    fvcore's FlopCountAnalysis traces the model (batch 1, random input, eval mode) on the
    device its parameters live on; a model built under `torch.device("meta")` is materialized
    uninitialized on the CPU first (shapes are all a count needs). Counted: every matmul and
    conv, including the attention matmuls that fvcore skips inside the fused
    scaled_dot_product_attention op. Not counted (matmul_only=True): norms (incl. BiT's
    weight standardization), pooling, resampling and elementwise ops, so the count is the one
    the paper's compute numbers imply (Table 6 = 3 x FLOPs x images seen). matmul_only=False
    keeps fvcore's norm/pool handles and reproduces timm's published GMACs (e.g. R50x1 4.23).
    An op that is neither handled nor known to be elementwise raises FlopCountError.
    """
    h, w = _size2(image_size)
    params = list(model.parameters()) + list(model.buffers())
    if any(p.is_meta for p in params):
        model = copy.deepcopy(model).to_empty(device="cpu")
        params = list(model.parameters())
    ref = next((p for p in params if p.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, in_chans, h, w, generator=gen).to(device=device, dtype=dtype)

    FlopCountAnalysis, fvcore_defaults = _fvcore()
    handles: dict[str, Callable | None] = dict(MATMUL_HANDLES)
    handles.update({op: None for op in NORM_OPS | ELEMENTWISE_OPS})
    if not matmul_only:
        handles.update({op: fvcore_defaults[op] for op in NORM_OPS if op in fvcore_defaults})
    with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: shape-dependent Python branches
        fca = FlopCountAnalysis(model, x)
        fca.clear_op_handles()  # only our rules: a default handle would win over a None
        fca.set_op_handle(**handles)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        fca.tracer_warnings("none")
        macs = fca.total()
        unknown = dict(fca.unsupported_ops())
    if unknown:
        raise FlopCountError(
            f"cannot count FLOPs of {type(model).__name__}: ops with no FLOP rule: {unknown}. "
            "If an op multiplies matrices, add a handle to benchbench.measure.MATMUL_HANDLES; "
            "if it is elementwise, add it to ELEMENTWISE_OPS."
        )
    macs = int(round(macs))
    return {"flops_per_image": 2 * macs, "macs_per_image": macs}


def analytic_vit_flops(
    depth: int,
    width: int,
    mlp: int,
    patch: int,
    image_size: int,
    in_chans: int = 3,
    num_classes: int = 1000,
    class_token: bool = True,
) -> int:
    """Forward FLOPs (2 x MACs) of one image through a ViT, from its architecture.

    The architecture is the paper's (Dosovitskiy et al. 2021, section 3.1 and Table 1); the
    count is the Kaplan et al. 2020 (Table 1) style: 2 FLOPs per weight per token for the
    matmuls, plus the attention scores and weighted sum, 2 x (2 N^2 D) per layer:
      patch embedding  2 N_p (P^2 C) D
      per block        2 N (4 D^2 + 2 D mlp)   (qkv + proj, fc1 + fc2)
                       + 2 (2 N^2 D)           (q k^T and attn v)
      head             2 D K
    with N_p = (image_size // P)^2 patches and N = N_p + 1 tokens (class token).
    Biases, norms, softmax, GELU and residual adds are left out, as in the paper's compute.
    """
    n_patches = (image_size // patch) ** 2
    n = n_patches + (1 if class_token else 0)
    embed = 2 * n_patches * patch * patch * in_chans * width
    block = 2 * n * (4 * width * width + 2 * width * mlp) + 2 * (2 * n * n * width)
    head = 2 * width * num_classes
    return embed + depth * block + head


def train_flops(flops_per_image: int | None, samples_seen: int | None) -> int | None:
    """Training compute: forward + backward = 3 x forward FLOPs per image x images seen
    (Kaplan et al. 2020, section 2.1: backward = 2 x forward; reproduces the paper's
    Table 6: ViT-B/16, 3 x 35.13e9 x 7 x 303e6 = 223.5e18)."""
    if flops_per_image is None or samples_seen is None:
        return None
    return 3 * int(flops_per_image) * int(samples_seen)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Clock:
    """Wall clock read after `sync()`, so queued device work is done before each reading:
    perf_counter + torch.cuda.synchronize on a GPU, plain perf_counter on a CPU. Tests pass a
    fake `now`."""

    def __init__(self, now: Callable[[], float] = time.perf_counter,
                 sync: Callable[[], None] | None = None):
        self.now = now
        self.sync = sync

    def start(self) -> float:
        if self.sync is not None:
            self.sync()
        return self.now()

    def stop(self, token: float) -> float:
        """Seconds since `start()` returned `token`."""
        if self.sync is not None:
            self.sync()
        return self.now() - token


class CudaEventClock:
    """CUDA events around the work: GPU time, no host-side launch gaps in the reading."""

    def start(self) -> Any:
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def stop(self, token: Any) -> float:
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return token.elapsed_time(end) / 1e3  # ms -> s


def default_clock(device: torch.device | str) -> Clock | CudaEventClock:
    return CudaEventClock() if torch.device(device).type == "cuda" else Clock()


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: Sequence[float]) -> float:
    """The spread benchbench reports: the interquartile range (q75 - q25)."""
    return _quantile(xs, 0.75) - _quantile(xs, 0.25)


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int = 1,
    sync: Callable[[], None] | None = None,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Time `fn` (STYLE habit 7): `warmup` untimed calls (compilation, autotuning, caches),
    then `repeats` timed blocks of `iters_per_repeat` calls. `clock` reads the time (default:
    perf_counter after calling `sync`, e.g. torch.cuda.synchronize; or a CudaEventClock).

    Returns seconds per call: median_s, spread_s (interquartile range over repeats), min_s,
    max_s, times_s (one per repeat), and warmup_s (the whole warm-up, compile included).
    """
    if repeats < 1 or iters_per_repeat < 1 or warmup < 0:
        raise ValueError("time_fn needs repeats >= 1, iters_per_repeat >= 1, warmup >= 0")
    if clock is not None and sync is not None:
        raise ValueError("pass sync or clock, not both: Clock(sync=...) takes the sync")
    clock = clock if clock is not None else Clock(sync=sync)
    t = clock.start()
    for _ in range(warmup):
        fn()
    warmup_s = clock.stop(t)
    times = []
    for _ in range(repeats):
        t = clock.start()
        for _ in range(iters_per_repeat):
            fn()
        times.append(clock.stop(t) / iters_per_repeat)
    return {
        "median_s": _quantile(times, 0.5),
        "spread_s": spread(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "warmup_s": warmup_s,
    }


# --------------------------------------------------------------------------------------------
# Memory and OOM
# --------------------------------------------------------------------------------------------


def is_oom(e: BaseException) -> bool:
    """A CUDA (or other accelerator) out-of-memory error, whatever layer raised it."""
    if isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg.lower()
                                            or "ALLOC_FAILED" in msg)


def free_memory(device: torch.device | str | None = None) -> None:
    """After an OOM: drop garbage and return cached blocks, so the next try starts clean."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()


class _PeakMemory:
    """Context: reset the peak on entry, read max_memory_allocated on exit (CUDA only)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda" and exc[0] is None:
            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))


def peak_memory(fn: Callable[[], Any], device: torch.device | str) -> int | None:
    """Run `fn` once and return the peak bytes allocated on `device` while it ran (weights
    and anything already resident included); None off CUDA, where it is not measured."""
    with _PeakMemory(torch.device(device)) as pm:
        fn()
    return pm.bytes


# --------------------------------------------------------------------------------------------
# Throughput
# --------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16")


def _check(precision: str, batch_size: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _autocast(device: torch.device, precision: str, cache: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                          cache_enabled=cache)


def _random_batches(n: int, batch_size: int, in_chans: int, image_size: Any,
                    device: torch.device, channels_last: bool, seed: int) -> list[torch.Tensor]:
    """`n` distinct standard-normal batches on the device (never zeros: zeros can take fast
    paths and hide the real cost), rotated through while timing."""
    h, w = _size2(image_size)
    gen = torch.Generator(device=device).manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(batch_size, in_chans, h, w, device=device, generator=gen)
            .contiguous(memory_format=fmt) for _ in range(n)]


def _prepare(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _auto_iters(fn: Callable[[], Any], clock: Any, min_repeat_s: float) -> int:
    """Calls per timed repeat so one repeat lasts about min_repeat_s (1..100)."""
    t = clock.start()
    fn()
    dt = clock.stop(t)
    return max(1, min(100, math.ceil(min_repeat_s / max(dt, 1e-9))))


def _oom_result(prefix: str, batch_size: int, msg: str) -> dict[str, Any]:
    first = (msg.strip().splitlines() or [""])[0][:200]
    return {
        "status": "oom",
        "error": f"out of memory at batch size {batch_size} ({prefix}): {first}",
        "batch_size": batch_size,
        f"{prefix}_img_per_s": None,
        f"{prefix}_img_per_s_spread": None,
        f"{prefix}_step_s": None,
        f"{prefix}_warmup_s": None,
        f"peak_mem_{prefix}_bytes": None,
    }


def _throughput(prefix: str, step: Callable[[], Any], *, batch_size: int, device: torch.device,
                warmup: int, repeats: int, iters_per_repeat: int | None, clock: Any,
                min_repeat_s: float, extra_bytes: int, mem: _PeakMemory) -> dict[str, Any]:
    clock = clock if clock is not None else default_clock(device)
    t0 = clock.start()
    for _ in range(warmup):  # compilation, autotuning, allocator warm-up: not timed
        step()
    warmup_s = clock.stop(t0)
    if iters_per_repeat is None:
        iters_per_repeat = _auto_iters(step, clock, min_repeat_s)
    with mem:  # the peak of the steady state (the warm-up may hold autotuning buffers)
        t = time_fn(step, warmup=0, repeats=repeats, iters_per_repeat=iters_per_repeat,
                    clock=clock)
    rates = [batch_size / s for s in t["times_s"]]
    peak = None if mem.bytes is None else mem.bytes - extra_bytes
    return {
        "status": "ok",
        "error": None,
        "batch_size": batch_size,
        f"{prefix}_img_per_s": batch_size / t["median_s"],
        f"{prefix}_img_per_s_spread": spread(rates),  # IQR over repeats
        f"{prefix}_step_s": t["median_s"],
        f"{prefix}_warmup_s": warmup_s,
        f"{prefix}_iters_per_repeat": iters_per_repeat,
        f"peak_mem_{prefix}_bytes": peak,
    }


def infer_throughput(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int | None = None,
    n_inputs: int = 3,
    min_repeat_s: float = 0.1,
    seed: int = 0,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Inference images/s at exactly `batch_size` (never changed: an OOM returns status
    "oom" with the batch size). Moves the model to `device` (channels_last if asked), eval
    mode, torch.inference_mode, bf16 autocast for precision="bf16". `compile` keeps
    compilation in the warm-up; `cuda_graphs` replays a captured graph (with compile:
    mode="reduce-overhead"). iters_per_repeat=None picks it so a repeat lasts min_repeat_s.

    Returns infer_img_per_s (median over repeats), infer_img_per_s_spread (IQR),
    infer_step_s, infer_warmup_s, peak_mem_infer_bytes (CUDA: peak of the timed phase minus
    the extra pre-generated input batches; None on CPU), batch_size, status, error.
    """
    dev = torch.device(device)
    _check(precision, batch_size)
    if cuda_graphs and dev.type != "cuda":
        raise ValueError("cuda_graphs=True needs a CUDA device")
    try:
        model = _prepare(model, dev, channels_last).eval()
        net = model
        if compile:
            net = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None)
        inputs = _random_batches(n_inputs, batch_size, in_chans, image_size, dev,
                                 channels_last, seed)
        extra = (n_inputs - 1) * inputs[0].numel() * inputs[0].element_size()
        mem = _PeakMemory(dev)
        i = [0]

        def nxt() -> torch.Tensor:
            i[0] += 1
            return inputs[i[0] % n_inputs]

        with torch.inference_mode(), _autocast(dev, precision, cache=not cuda_graphs):
            if cuda_graphs and not compile:
                static_x = inputs[0].clone()
                extra += static_x.numel() * static_x.element_size()
                side = torch.cuda.Stream(dev)
                side.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(side):
                    for _ in range(3):
                        net(static_x)
                torch.cuda.current_stream(dev).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    net(static_x)

                def step() -> None:
                    static_x.copy_(nxt())  # fresh data each replay
                    graph.replay()
            else:

                def step() -> None:
                    net(nxt())

            return _throughput("infer", step, batch_size=batch_size, device=dev,
                               warmup=warmup, repeats=repeats,
                               iters_per_repeat=iters_per_repeat, clock=clock,
                               min_repeat_s=min_repeat_s, extra_bytes=extra, mem=mem)
    except Exception as e:
        if not is_oom(e):
            raise
        err = str(e)  # keep the text only: the exception's traceback pins the tensors
    free_memory(dev)  # outside the except block, so those tensors are gone
    return _oom_result("infer", batch_size, err)


def _num_classes_of(model: nn.Module, num_classes: int | None) -> int:
    n = num_classes if num_classes is not None else getattr(model, "num_classes", None)
    if not n:
        raise ValueError("train_throughput needs num_classes (the model has no num_classes)")
    return int(n)


def train_throughput(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 3,
    repeats: int = 5,
    iters_per_repeat: int | None = None,
    n_inputs: int = 3,
    min_repeat_s: float = 0.1,
    lr: float = 1e-4,
    seed: int = 0,
    clock: Clock | CudaEventClock | None = None,
) -> dict[str, Any]:
    """Training images/s of full steps (forward, cross-entropy, backward, AdamW step; fused
    AdamW on CUDA) at exactly `batch_size` on fresh random images and labels. The model's
    weights ARE updated (pass a copy to keep them). Returns train_img_per_s,
    train_img_per_s_spread (IQR), train_step_s, train_warmup_s, peak_mem_train_bytes
    (optimizer state included; None on CPU), batch_size, status ("ok" | "oom"), error."""
    dev = torch.device(device)
    _check(precision, batch_size)
    k = _num_classes_of(model, num_classes)
    try:
        model = _prepare(model, dev, channels_last).train()
        net = torch.compile(model) if compile else model
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=dev.type == "cuda")
        inputs = _random_batches(n_inputs, batch_size, in_chans, image_size, dev,
                                 channels_last, seed)
        gen = torch.Generator(device=dev).manual_seed(seed + 1)
        labels = [torch.randint(0, k, (batch_size,), device=dev, generator=gen)
                  for _ in range(n_inputs)]
        extra = (n_inputs - 1) * (inputs[0].numel() * inputs[0].element_size()
                                  + labels[0].numel() * labels[0].element_size())
        i = [0]

        def step() -> None:
            i[0] += 1
            x, y = inputs[i[0] % n_inputs], labels[i[0] % n_inputs]
            with _autocast(dev, precision):
                loss = F.cross_entropy(net(x), y)
            loss.backward()  # bf16 autocast needs no loss scaling
            opt.step()
            opt.zero_grad(set_to_none=True)

        return _throughput("train", step, batch_size=batch_size, device=dev, warmup=warmup,
                           repeats=repeats, iters_per_repeat=iters_per_repeat, clock=clock,
                           min_repeat_s=min_repeat_s, extra_bytes=extra, mem=_PeakMemory(dev))
    except Exception as e:
        if not is_oom(e):
            raise
        err = str(e)
    free_memory(dev)
    return _oom_result("train", batch_size, err)


# --------------------------------------------------------------------------------------------
# Largest batch that fits
# --------------------------------------------------------------------------------------------


def _try_batch_fn(model: nn.Module, image_size: Any, in_chans: int, device: torch.device,
                  mode: str, precision: str, channels_last: bool,
                  num_classes: int | None) -> Callable[[int], bool]:
    """try_batch(bs) -> True if one inference (or training) step at bs fits in memory."""
    model = _prepare(model, device, channels_last)
    opt = None
    if mode == "train":
        k = _num_classes_of(model, num_classes)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    h, w = _size2(image_size)

    def run(bs: int) -> None:
        x = torch.randn(bs, in_chans, h, w, device=device).contiguous(memory_format=fmt)
        if mode == "infer":
            with torch.inference_mode(), _autocast(device, precision):
                model.eval()(x)
        else:
            y = torch.randint(0, k, (bs,), device=device)
            with _autocast(device, precision):
                loss = F.cross_entropy(model.train()(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def try_batch(bs: int) -> bool:
        oom = False
        try:
            run(bs)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True
        if oom:
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            free_memory(device)  # outside except: the traceback's frames are released
        return not oom

    return try_batch


def max_batch_size(
    model: nn.Module | None = None,
    image_size: int | Sequence[int] | None = None,
    in_chans: int = 3,
    *,
    device: torch.device | str = "cuda",
    mode: str = "infer",
    precision: str = "bf16",
    channels_last: bool = False,
    num_classes: int | None = None,
    start: int = 1,
    limit: int = 65536,
    tol: float = 0.0,
    growth: float = 2.0,
    try_batch: Callable[[int], bool] | None = None,
) -> int | None:
    """The largest batch size in [1, limit] whose step fits (Figure 12, right panel).

    From `start`, multiply by `growth` until a try runs out of memory (or divide until one
    fits), then bisect: O(log limit) tries with the default doubling from 1. A good `start`
    (e.g. predicted from peak memory at two batch sizes) with growth ~1.1 needs ~3 tries
    near the maximum, where tries are the most expensive. Each OOM is caught and the cache
    emptied. Returns None if batch 1 does not fit, `limit` if it fits (a lower bound then).
    tol > 0 stops once the bracket is within tol x the answer. `try_batch(bs) -> bool`
    replaces the real step (tests inject one). On a CPU nothing runs out of memory: callers
    skip the search there (measure_model does).
    """
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if not 1 <= start <= limit:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    if growth <= 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    if try_batch is None:
        if model is None or image_size is None:
            raise ValueError("max_batch_size needs a model and image_size, or try_batch")
        try_batch = _try_batch_fn(model, image_size, in_chans, torch.device(device), mode,
                                  precision, channels_last, num_classes)
    if try_batch(start):
        lo, hi = start, None
        while hi is None:  # grow until a try fails
            if lo >= limit:
                return limit
            nxt = min(max(lo + 1, int(lo * growth)), limit)
            if try_batch(nxt):
                lo = nxt
            else:
                hi = nxt
    else:
        lo, hi = None, start
        while lo is None:  # shrink until a try fits
            if hi == 1:
                return None
            nxt = min(hi - 1, max(1, int(hi / growth)))
            if try_batch(nxt):
                lo = nxt
            else:
                hi = nxt
    while hi - lo > max(1, int(lo * tol)):  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if try_batch(mid):
            lo = mid
        else:
            hi = mid
    return lo


def predict_max_batch(points: Sequence[tuple[int, int]], capacity_bytes: int) -> int | None:
    """Batch size at which a line through (batch size, peak bytes) points reaches
    capacity_bytes: a starting guess for max_batch_size. None without two distinct points
    or with a non-growing peak."""
    pts = sorted(set(points))
    if len(pts) < 2:
        return None
    (b0, m0), (b1, m1) = pts[-2], pts[-1]
    slope = (m1 - m0) / (b1 - b0)
    if slope <= 0:
        return None
    return max(1, int(b1 + (capacity_bytes - m1) / slope))


# --------------------------------------------------------------------------------------------
# Peak FLOP/s and MFU
# --------------------------------------------------------------------------------------------

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
    """Merge one entry into the JSON cache atomically (temp file + rename in the same dir)."""
    data = _cache_read(path)
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        except OSError as e:  # a read-only home must not lose the measurement
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
    (PaLM, Chowdhery et al. 2022, appendix B). None when any input is None (e.g. a CPU)."""
    if flops_per_image is None or train_img_per_s is None or not peak_flops:
        return None
    return 3 * flops_per_image * train_img_per_s / peak_flops


# --------------------------------------------------------------------------------------------
# Everything for one row
# --------------------------------------------------------------------------------------------

MEASURE_KEYS = (
    "params", "flops_per_image", "macs_per_image", "infer_img_per_s", "infer_img_per_s_spread",
    "train_img_per_s", "train_img_per_s_spread", "peak_mem_bytes", "peak_mem_train_bytes",
    "peak_mem_infer_bytes", "max_batch_size", "mfu", "peak_flops", "batch_size", "device",
    "precision", "status", "error",
)


def device_label(device: torch.device | str) -> str:
    """"cuda:NVIDIA H100 80GB HBM3" or "cpu" (the row's device column)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return dev.type


def measure_model(
    model: nn.Module,
    *,
    image_size: int | Sequence[int],
    in_chans: int = 3,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int = 256,
    compile: bool = False,
    channels_last: bool = False,
    max_batch: bool = False,
    repeats: int = 5,
    warmup: int = 3,
    cpu_throughput: bool = False,
    train: bool = True,
    peak_flops: float | None = None,
) -> dict[str, Any]:
    """Params, FLOPs and (on CUDA, or on a CPU with cpu_throughput=True) inference and
    training throughput, peak memory per phase, the largest inference batch (max_batch, CUDA
    only) and MFU (CUDA + bf16 only), as one flat dict with the row's column names
    (MEASURE_KEYS). What is not measured is None. An OOM at batch_size gives status "oom"
    and an error naming the batch size; the other columns keep what was measured.
    The training phase updates the model's weights (random data)."""
    dev = torch.device(device)
    _check(precision, batch_size)
    out: dict[str, Any] = dict.fromkeys(MEASURE_KEYS)
    out.update(status="ok", batch_size=batch_size, device=device_label(dev), precision=precision,
               params=count_params(model))
    out.update(count_flops(model, image_size, in_chans))
    cuda = dev.type == "cuda"
    if cuda or cpu_throughput:
        kw = dict(batch_size=batch_size, image_size=image_size, in_chans=in_chans, device=dev,
                  precision=precision, channels_last=channels_last, compile=compile,
                  warmup=warmup, repeats=repeats)
        phases = [infer_throughput(model, **kw)]
        if train and phases[0]["status"] == "ok":
            phases.append(train_throughput(model, num_classes=num_classes, **kw))
        for ph in phases:
            out.update({k: v for k, v in ph.items() if k in out and k != "status"})
            if ph["status"] != "ok":
                out.update(status=ph["status"], error=ph["error"])
    mems = [m for m in (out["peak_mem_infer_bytes"], out["peak_mem_train_bytes"]) if m]
    out["peak_mem_bytes"] = max(mems) if mems else None
    if cuda and max_batch:
        free_memory(dev)
        out["max_batch_size"] = max_batch_size(
            model, image_size, in_chans, device=dev, mode="infer", precision=precision,
            channels_last=channels_last, num_classes=num_classes)
    if cuda and precision == "bf16":  # MFU against the bf16 peak only when running bf16
        out["peak_flops"] = peak_flops if peak_flops is not None else peak_bf16_flops(dev)
        out["mfu"] = mfu(out["flops_per_image"], out["train_img_per_s"], out["peak_flops"])
    return out

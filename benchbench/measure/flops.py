"""FLOP counting: fvcore with our handles (attention/SDPA, einsum, conv), analytic ViT, training.

FLOPs = 2 x MACs; every matmul and conv counted, attention included; norms and elementwise
ops not (the paper's compute). fvcore skips the fused attention op timm ViTs call by
default (the attention trap), so MATMUL_HANDLES carries a handle for it, and an op with no
rule raises instead of being skipped.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (2x forward): Kaplan et al. 2020 sec 2.1


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


def valid_taps(n_in: int, k: int, stride: int = 1, pad: int = 0, dilation: int = 1) -> int:
    """Kernel taps that land on the input (not on padding), summed over one axis's outputs:
    XLA's HloCostAnalysis::HandleConvolution `valid_position_counts` (tensorflow
    compiler/xla/service/hlo_cost_analysis.cc), the FLOP count of Google's TPU tooling."""
    n_out = (n_in + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    return sum(1 for o in range(n_out) for j in range(k) if 0 <= o * stride - pad + j * dilation < n_in)


def _constant(v: Any) -> Any:
    """A traced constant argument: its value, or a list of them (prim::ListConstruct)."""
    iv = v.toIValue()
    if iv is None and v.node().kind() == "prim::ListConstruct":
        return [x.toIValue() for x in v.node().inputs()]
    return iv


def _conv_valid_handle(inputs: list, outputs: list) -> int:
    """conv MACs without the taps on zero padding (conv_padding=False); ops whose padding is
    not a list of ints (padding="same", transposed convs) keep the full count."""
    x, w, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    stride, pad, dil = (_constant(inputs[i]) for i in (3, 4, 5))
    transposed = len(inputs) > 6 and inputs[6].toIValue() is True
    if transposed or not all(isinstance(v, (list, tuple)) for v in (stride, pad, dil)):
        return _conv_macs(x, w, out, transposed)
    nsp = len(w) - 2
    batch = math.prod(x[: len(x) - nsp - 1])
    taps = math.prod(valid_taps(n, k, s, p, d)
                     for n, k, s, p, d in zip(x[-nsp:], w[2:], stride, pad, dil))
    return batch * w[0] * w[1] * taps


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

# conv ops whose inputs 3, 4, 5 are stride, padding, dilation (the conv_padding=False handle)
CONV_PADDED_OPS = ("aten::_convolution", "aten::convolution", "aten::conv1d", "aten::conv2d",
                   "aten::conv3d")

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
    conv_padding: bool = True,
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
    conv_padding=False leaves out the multiplications with a conv's zero padding, as XLA's
    cost analysis does (`valid_taps`): the convention of the paper's BiT rows in Table 6
    (README "FLOPs"); padding done by a separate pad op (timm's *Same convs) still counts.
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
    if not conv_padding:
        handles.update({op: _conv_valid_handle for op in CONV_PADDED_OPS})
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


def analytic_bit_flops(layers: Sequence[int], width_factor: int, image_size: int = 224,
                       in_chans: int = 3, num_classes: int = 1000,
                       conv_padding: bool = True) -> int:
    """Forward FLOPs (2 x MACs) of one image through BiT (timm ResNetV2, stem_type="fixed"):
    7x7/2 stem conv (pad 3), 3x3/2 max-pool, bottlenecks 1x1 -> 3x3 (stride) -> 1x1 with a
    1x1 projection in each stage's first block, linear head; norms and weight
    standardisation left out. conv_padding=False counts only taps on the input (XLA)."""
    macs = 0

    def conv(n: int, cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> int:
        nonlocal macs
        n_out = (n + 2 * p - k) // s + 1
        taps = valid_taps(n, k, s, p) ** 2 if not conv_padding else (n_out * k) ** 2
        macs += taps * cin * cout
        return n_out

    stem = 64 * width_factor
    n = conv(image_size, in_chans, stem, 7, 2, 3)
    n = (n + 2 - 3) // 2 + 1  # max-pool after a 1-pixel pad
    cin = stem
    for i, blocks in enumerate(layers):
        mid = 64 * 2 ** i * width_factor
        for b in range(blocks):
            s = 2 if i > 0 and b == 0 else 1
            if b == 0:
                conv(n, cin, 4 * mid, 1, s)  # projection shortcut
            n_out = conv(conv(n, cin, mid, 1), mid, mid, 3, s, 1)
            conv(n_out, mid, 4 * mid, 1)
            cin, n = 4 * mid, n_out
    return 2 * (macs + cin * num_classes)


def train_flops(flops_per_image: int | None, samples_seen: int | None) -> int | None:
    """Training compute: TRAIN_FLOPS_PER_FORWARD (3) x forward FLOPs per image x images seen
    (Kaplan et al. 2020, section 2.1: backward = 2 x forward; reproduces the paper's
    Table 6: ViT-B/16, 3 x 35.13e9 x 7 x 303e6 = 223.5e18)."""
    if flops_per_image is None or samples_seen is None:
        return None
    return TRAIN_FLOPS_PER_FORWARD * int(flops_per_image) * int(samples_seen)

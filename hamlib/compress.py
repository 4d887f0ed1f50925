r"""Making models cheap: number formats, quantization (round-to-nearest, GPTQ, AWQ, LLM.int8(),
SmoothQuant, NF4, ternary BitNet layers), low-rank adapters (LoRA, QLoRA), speculative sampling
and a paged KV cache. Chapter 10.

Conventions. A linear layer's weight ``W`` is (out, in), as in ``nn.Linear``; its input ``X`` is
(tokens, in). Quantizers return *dequantized* tensors (the numbers the layer will multiply by)
unless they say otherwise, so that the error of a format is ``W - quantize(W)``.

- Floating-point formats: :class:`FloatFormat`, :data:`FORMATS`, :func:`round_to_format`.
- Integer grids: :func:`quantize` (absmax or zero-point; per tensor, per output channel or in
  groups of input columns), :func:`grid_quantize` / :func:`grid_dequantize` (a grid of levels in
  [-1, 1] scaled by each block's absmax: NF4, int4), :func:`nf4_levels`.
- Curvature-aware post-training quantization: :func:`layer_hessian`, :func:`gptq`,
  :func:`awq`, :func:`output_error`, and :func:`quantize_model` that applies one of them to a
  GPT block by block on calibration data.
- Outliers: :func:`int8_matmul` (vector-wise int8 with LLM.int8()'s fp16 decomposition),
  :func:`smoothquant_scales`.
- :class:`BitLinear`, :func:`ternarize`, :func:`to_bitnet` (BitNet b1.58).
- :class:`LoRALinear`, :func:`add_lora`, :func:`merge_lora`, :class:`NF4Linear`,
  :func:`quantize_base` (QLoRA's frozen 4-bit base).
- :func:`speculative_step`, :func:`speculative_generate`, :func:`exact_output_distribution`,
  :func:`expected_tokens_per_call`.
- :class:`PagedKVCache` (block tables, reference counts, copy-on-write).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamlib import _checks as check
from hamlib.transformer import GPT

__all__ = [
    "FORMATS",
    "LORA_TARGETS",
    "BitLinear",
    "FloatFormat",
    "LoRALinear",
    "NF4Linear",
    "PagedKVCache",
    "add_lora",
    "awq",
    "exact_output_distribution",
    "expected_tokens_per_call",
    "gptq",
    "grid_dequantize",
    "grid_quantize",
    "int8_matmul",
    "layer_hessian",
    "linear_inputs",
    "merge_lora",
    "nf4_levels",
    "output_error",
    "quantize",
    "quantize_base",
    "quantize_model",
    "residual",
    "round_to_format",
    "scale_bits",
    "smoothquant_scales",
    "speculative_generate",
    "speculative_step",
    "ternarize",
    "to_bitnet",
    "uniform_levels",
]


# ----------------------------------------------------------------------------- float formats


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, ``exponent_bits``, ``mantissa_bits`` (stored,
    the leading 1 implicit), exponent bias 2^(e-1) - 1. ``ieee``: the largest exponent encodes
    inf and NaN (fp32, bf16, fp16, fp8-e5m2); otherwise (fp8-e4m3, "fn") only the all-ones
    pattern is NaN, there is no inf, and the largest finite number is 1.75 x 2^8 = 448."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    ieee: bool = True

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max(self) -> float:
        m = self.mantissa_bits
        if self.ieee:
            return (2 - 2.0**-m) * 2.0 ** (2**self.exponent_bits - 2 - self.bias)
        return (2 - 2.0 ** (1 - m)) * 2.0 ** (2**self.exponent_bits - 1 - self.bias)

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def unit_roundoff(self) -> float:
        """Half the gap between 1 and the next number: the largest relative error of rounding a
        number in the normal range to nearest."""
        return 2.0 ** -(self.mantissa_bits + 1)

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits


FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (
        FloatFormat("fp32", 8, 23),
        FloatFormat("bf16", 8, 7),
        FloatFormat("fp16", 5, 10),
        FloatFormat("fp8-e5m2", 5, 2),
        FloatFormat("fp8-e4m3", 4, 3, ieee=False),
    )
}


def round_to_format(x: Tensor, fmt: FloatFormat | str) -> Tensor:
    """``x`` rounded to the nearest number of ``fmt`` (ties to even), once, in float64.
    Subnormals are kept. Beyond the largest finite number an IEEE format gives inf (when the
    rounded value exceeds it); e4m3 saturates to +-448 (infinities too), as torch's cast does (the
    OCP FP8 standard also allows NaN there). NaN stays NaN. Torch's casts *from float64* to
    bf16 and fp16 round twice, through float32, and differ from this in rare near-ties; from
    float32 they agree (tested)."""
    check.tensor("x", x, floating=True)
    if isinstance(fmt, str):
        fmt = FORMATS[check.one_of("fmt", fmt, sorted(FORMATS))]
    check.instance("fmt", fmt, FloatFormat)
    x = x.double()
    a = x.abs()
    emin = 1 - fmt.bias
    tiny = torch.finfo(torch.float64).tiny
    e = torch.floor(torch.log2(a.clamp(min=tiny))).clamp(min=emin)
    ulp = torch.exp2(e - fmt.mantissa_bits)
    r = torch.round(a / ulp) * ulp  # a / ulp is exact: ulp is a power of two
    big = torch.tensor(math.inf if fmt.ieee else fmt.max, dtype=r.dtype)
    r = torch.where((r > fmt.max) | torch.isinf(a), big, r)  # inf / ulp would be NaN
    r = torch.where(torch.isnan(a), a, r)
    return torch.copysign(r, x)


# ----------------------------------------------------------------------------- integer grids

Granularity = Literal["tensor", "channel", "group"]


def _bits(bits: int, low: int = 2, high: int = 16) -> int:
    return check.integer("bits", bits, minimum=low, maximum=high)


def _grouped(w: Tensor, granularity: str, group_size: int | None) -> Tensor:
    """View of 2-D ``w`` as (rows, groups, columns per group) for the granularity asked."""
    out, cols = w.shape
    if granularity == "tensor":
        return w.reshape(1, 1, -1)
    if granularity == "channel":
        return w.reshape(out, 1, cols)
    if group_size is None:
        raise ValueError("group_size is needed with granularity='group'")
    group_size = check.integer("group_size", group_size, minimum=1)
    if cols % group_size:
        raise ValueError(f"group_size ({group_size}) must divide the input dimension ({cols})")
    return w.reshape(out, cols // group_size, group_size)


def _fake_quant(g: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Round the last dimension of ``g`` to a ``bits``-bit grid whose scale (and zero point) is
    set by that dimension's range; returns the dequantized values."""
    return _quant_with_range(g, g, bits, symmetric)


def quantize(
    w: Tensor,
    bits: int,
    granularity: Granularity = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
) -> Tensor:
    """Round-to-nearest quantization of a 2-D weight (out, in), dequantized.

    - ``symmetric``: absmax, levels -(2^(b-1) - 1)..2^(b-1) - 1 times absmax / (2^(b-1) - 1)
      (2 bits is ternary); otherwise zero-point: 2^b levels spanning [min(w, 0), max(w, 0)].
    - ``granularity``: one scale for the whole ``tensor``, one per output ``channel`` (row), or
      one per ``group`` of ``group_size`` consecutive input columns of each row."""
    check.tensor("w", w, floating=True, ndim=2, nonempty=True)
    bits = _bits(bits)
    granularity = check.one_of("granularity", granularity, get_args(Granularity))
    symmetric = check.boolean("symmetric", symmetric)
    return _fake_quant(_grouped(w, granularity, group_size), bits, symmetric).reshape(w.shape)


def scale_bits(
    granularity: Granularity, group_size: int | None, cols: int, symmetric: bool
) -> float:
    """Storage per weight of the scales (fp16) and zero points (fp16) of :func:`quantize`, for
    a matrix with ``cols`` input columns and many rows (per tensor: about 0)."""
    granularity = check.one_of("granularity", granularity, get_args(Granularity))
    cols = check.integer("cols", cols, minimum=1)
    per = 16 * (1 if check.boolean("symmetric", symmetric) else 2)
    if granularity == "tensor":
        return 0.0
    if granularity == "channel":
        return per / cols
    if group_size is None:
        raise ValueError("group_size is needed with granularity='group'")
    return per / check.integer("group_size", group_size, minimum=1)


def nf4_levels() -> Tensor:
    """QLoRA's NormalFloat4 grid (Dettmers et al., 2023): 16 levels in [-1, 1] at quantiles of a
    standard normal, 8 positive (from the quantiles of (0.5, 0.9677]), 7 negative and an exact
    zero, each half normalized so that its end is +-1. Float32, ascending; equals
    ``bitsandbytes``' NF4 code (tested)."""
    from scipy.stats import norm

    offset = 0.9677083  # (1 - 1/(2*15) + 1 - 1/(2*16)) / 2, as in the paper's code
    pos = norm.ppf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1].numpy())
    neg = -norm.ppf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1].numpy())
    v = torch.tensor(sorted([*pos.tolist(), 0.0, *neg.tolist()]), dtype=torch.float64)
    return (v / v.abs().max()).float()


def uniform_levels(bits: int) -> Tensor:
    """The symmetric integer grid k / qmax, k = -qmax..qmax, qmax = 2^(b-1) - 1 (int4: 15
    levels), as levels in [-1, 1] for :func:`grid_quantize`."""
    qmax = 2 ** (_bits(bits) - 1) - 1
    return torch.arange(-qmax, qmax + 1, dtype=torch.float32) / qmax


def _check_levels(levels: Tensor) -> Tensor:
    check.tensor("levels", levels, floating=True, ndim=1)
    if not 2 <= levels.numel() <= 256:
        raise ValueError(f"levels must hold 2 to 256 values, got {levels.numel()}")
    if not bool((levels[1:] > levels[:-1]).all()):
        raise ValueError("levels must be strictly increasing")
    if levels.abs().max() > 1:
        raise ValueError("levels must lie in [-1, 1]")
    return levels


def grid_quantize(w: Tensor, levels: Tensor, block_size: int = 64) -> tuple[Tensor, Tensor]:
    """Blockwise quantization to a grid: ``w`` flattened, cut into blocks of ``block_size``,
    each divided by its absmax and rounded to the nearest of ``levels``. Returns (codes, uint8
    indices into ``levels``, shaped like ``w``; absmax, float32, one per block)."""
    check.tensor("w", w, floating=True, nonempty=True)
    levels = _check_levels(levels)
    block_size = check.integer("block_size", block_size, minimum=1)
    if w.numel() % block_size:
        raise ValueError(f"block_size ({block_size}) must divide w.numel() ({w.numel()})")
    blocks = w.detach().float().reshape(-1, block_size)
    absmax = blocks.abs().amax(1)
    x = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    mids = (levels[1:] + levels[:-1]).float() / 2  # decision boundaries
    codes = torch.bucketize(x, mids)  # nearest level (an exact midpoint goes to the lower one)
    return codes.to(torch.uint8).reshape(w.shape), absmax


def grid_dequantize(codes: Tensor, absmax: Tensor, levels: Tensor) -> Tensor:
    """Inverse of :func:`grid_quantize`: levels[codes] times each block's absmax, float32."""
    check.tensor("codes", codes, dtype=torch.uint8, nonempty=True)
    check.tensor("absmax", absmax, floating=True, ndim=1, nonempty=True)
    levels = _check_levels(levels)
    if codes.numel() % absmax.numel():
        raise ValueError(
            f"absmax ({absmax.numel()} blocks) must divide codes.numel() ({codes.numel()})"
        )
    if int(codes.max()) >= levels.numel():
        raise ValueError(f"codes index past the {levels.numel()} levels")
    x = levels.float()[codes.long()].reshape(absmax.numel(), -1) * absmax.float()[:, None]
    return x.reshape(codes.shape)


# ------------------------------------------------------------------------- GPTQ, AWQ, outliers


def layer_hessian(x: Tensor) -> Tensor:
    r"""The Hessian of a linear layer's squared output error with respect to each row of its
    weight: for :math:`L(w) = \frac1n\sum_t (w\cdot x_t - w_0\cdot x_t)^2`,
    :math:`H = \frac2n X^\top X` (in, in), float64, from inputs ``x`` (tokens, in)."""
    check.tensor("x", x, floating=True, ndim=2, nonempty=True)
    xd = x.detach().double()
    return 2 * xd.T @ xd / xd.shape[0]


def output_error(w: Tensor, q: Tensor, h: Tensor) -> float:
    r"""The layer's mean squared output error summed over output rows, from its Hessian:
    :math:`\frac12\mathrm{tr}((W-Q) H (W-Q)^\top) = \frac1n\|XW^\top - XQ^\top\|^2`."""
    check.tensor("w", w, floating=True, ndim=2)
    check.tensor("q", q, floating=True, shape=tuple(w.shape))
    check.tensor("h", h, floating=True, shape=(w.shape[1], w.shape[1]))
    d = w.double() - q.double()
    return float(0.5 * ((d @ h.double()) * d).sum())


def gptq(
    w: Tensor,
    h: Tensor,
    bits: int,
    granularity: Granularity = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
    damp: float = 0.01,
) -> Tensor:
    r"""GPTQ (Frantar et al., 2023): quantize the columns of ``w`` (out, in) one at a time, in
    order; after each, move its rounding error onto the columns not yet quantized by the
    optimal-brain-surgeon update, which minimizes the layer's output error
    :math:`\mathrm{tr}((W-Q)H(W-Q)^\top)` given the columns fixed so far:

    .. math:: \delta_{j+1:} = -\frac{w_j - q_j}{U_{jj}} U_{j,\,j+1:},

    U the upper Cholesky factor of :math:`H^{-1}` (``h`` damped by ``damp`` times its mean
    diagonal). The scales are those of :func:`quantize`: per tensor or channel from the original
    ``w``; per group from the group's columns as they stand when the group is reached. Returns the
    dequantized weight (float64); with a diagonal ``h`` nothing moves, and it equals round to
    nearest."""
    check.tensor("w", w, floating=True, ndim=2, nonempty=True)
    check.tensor("h", h, floating=True, shape=(w.shape[1], w.shape[1]))
    bits = _bits(bits)
    granularity = check.one_of("granularity", granularity, get_args(Granularity))
    symmetric = check.boolean("symmetric", symmetric)
    damp = check.nonnegative("damp", damp)
    _grouped(w, granularity, group_size)  # checks group_size against the shape
    W = w.detach().double().clone()
    H = h.detach().double().clone()
    dead = torch.diagonal(H) == 0  # inputs that never fire: their weights do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.diagonal(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    try:
        U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except RuntimeError as failure:  # torch.linalg.LinAlgError
        raise ValueError(f"h is not positive definite even after damping ({failure})") from None
    out, cols = W.shape
    Q = torch.zeros_like(W)
    orig = w.detach().double()
    grid = orig.reshape(1, -1) if granularity == "tensor" else orig  # scales from the original
    for j in range(cols):
        if granularity == "group" and group_size is not None and j % group_size == 0:
            grid = W[:, j : j + group_size].clone()  # this group's columns as they stand now
        Q[:, j : j + 1] = _quant_with_range(W[:, j : j + 1], grid, bits, symmetric)
        err = (W[:, j] - Q[:, j]) / U[j, j]
        W[:, j + 1 :] -= err[:, None] * U[j, j + 1 :][None, :]
    return Q


def _quant_with_range(col: Tensor, grid: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Quantize ``col`` with the scale (and zero point) set by the range of the last dimension
    of ``grid``. Symmetric: levels -qmax..qmax, scale absmax / qmax (LLM.int8's absmax,
    2^b - 1 levels). Otherwise zero-point: levels 0..2^b - 1 over [min(grid, 0), max(grid, 0)].
    :func:`quantize` uses it with ``grid = col``; GPTQ with one column and its group or row."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = grid.abs().amax(-1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(col / scale), -qmax, qmax) * scale
    top = 2**bits - 1
    lo = grid.amin(-1, keepdim=True).clamp(max=0)
    hi = grid.amax(-1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / top
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    return (torch.clamp(torch.round(col / scale) + zero, 0, top) - zero) * scale


def awq(
    w: Tensor,
    x: Tensor,
    bits: int,
    granularity: Granularity = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
    grid: int = 20,
) -> tuple[Tensor, float]:
    r"""AWQ-style activation-aware scaling (Lin et al., 2024): scale input channel j of the
    weight by :math:`s_j = \overline{|x_j|}^{\,\alpha}` before rounding and divide it out after,
    :math:`Q(W\,\mathrm{diag}(s))\,\mathrm{diag}(s)^{-1}`, so that channels that carry large
    activations are rounded more finely; :math:`\alpha` from ``grid`` values in [0, 1)
    minimizing the output error on ``x`` (tokens, in). Returns (the effective dequantized
    weight, float64; alpha). alpha = 0 is round to nearest, so AWQ's error on ``x`` is never
    above it: that is by construction, not a finding."""
    check.tensor("w", w, floating=True, ndim=2, nonempty=True)
    check.tensor("x", x, floating=True, shape=(None, w.shape[1]), nonempty=True)
    bits = _bits(bits)
    grid = check.integer("grid", grid, minimum=1)
    W, X = w.detach().double(), x.detach().double()
    mean_abs = X.abs().mean(0)
    ref = X @ W.T
    best: tuple[float, Tensor, float] | None = None
    for i in range(grid):
        alpha = i / grid
        s = mean_abs.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        q = quantize(W * s, bits, granularity, group_size, symmetric) / s
        err = float(((X @ q.T - ref) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, q, alpha)
    assert best is not None
    return best[1], best[2]


def _vectorwise(t: Tensor, dim: int) -> Tensor:
    """Symmetric int8 along ``dim`` (one absmax per slice), dequantized."""
    s = t.abs().amax(dim, keepdim=True) / 127
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.clamp(torch.round(t / s), -127, 127) * s


def int8_matmul(
    x: Tensor, w: Tensor, threshold: float | None = 6.0, activations: str = "token"
) -> Tensor:
    """``x @ w.T`` with both operands in int8 (dequantized result, float64).

    ``activations``: ``"token"`` (one scale per row of ``x``, LLM.int8()'s vector-wise) or
    ``"tensor"`` (one scale for all of ``x``); weights are per output channel. With a
    ``threshold`` (LLM.int8(), Dettmers et al., 2022), the input columns in which any
    |x| >= threshold are multiplied in full precision and only the rest in int8."""
    check.tensor("x", x, floating=True, ndim=2, nonempty=True)
    check.tensor("w", w, floating=True, shape=(None, x.shape[1]), nonempty=True)
    if threshold is not None:
        threshold = check.positive("threshold", threshold)
    activations = check.one_of("activations", activations, ("token", "tensor"))
    X, W = x.detach().double(), w.detach().double()
    keep = (
        (X.abs() >= threshold).any(0)
        if threshold is not None
        else torch.zeros(X.shape[1], dtype=torch.bool)
    )
    y = X[:, keep] @ W[:, keep].T  # the outlier columns, in full precision
    if bool((~keep).any()):
        xs, ws = X[:, ~keep], W[:, ~keep]
        xq = _vectorwise(xs, 1) if activations == "token" else _vectorwise(xs.reshape(1, -1), 1)
        y = y + xq.reshape(xs.shape) @ _vectorwise(ws, 1).T
    return y


def smoothquant_scales(x: Tensor, w: Tensor, alpha: float = 0.5) -> Tensor:
    r"""SmoothQuant (Xiao et al., 2023): per input channel
    :math:`s_j = \max|x_j|^\alpha / \max|w_{\cdot j}|^{1-\alpha}`; the layer computes
    :math:`(X\,\mathrm{diag}(s)^{-1})(W\,\mathrm{diag}(s))^\top`, the same product, with the
    activations' outliers moved into the weights."""
    check.tensor("x", x, floating=True, ndim=2, nonempty=True)
    check.tensor("w", w, floating=True, shape=(None, x.shape[1]), nonempty=True)
    alpha = check.probability("alpha", alpha)
    ax = x.detach().double().abs().amax(0).clamp(min=1e-5)
    aw = w.detach().double().abs().amax(0).clamp(min=1e-5)
    return ax.pow(alpha) / aw.pow(1 - alpha)


def _block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def linear_inputs(
    model: GPT, ids: Tensor, blocks: Sequence[int] | None = None
) -> dict[str, Tensor]:
    """The inputs (tokens, in) that every ``nn.Linear`` inside the model's blocks receives when
    it reads ``ids`` (batch, seq), keyed by module name (e.g. ``blocks.0.attn.q_proj``)."""
    check.instance("model", model, GPT)
    check.tensor("ids", ids, dtype=torch.long, ndim=2, nonempty=True)
    n_blocks = len(model.blocks)
    chosen = (
        range(n_blocks)
        if blocks is None
        else [check.integer("blocks entry", i, minimum=0, maximum=n_blocks - 1) for i in blocks]
    )
    seen: dict[str, Tensor] = {}
    hooks = []
    for i in chosen:
        for name, lin in _block_linears(model.blocks[i]).items():
            key = f"blocks.{i}.{name}"

            def hook(_m: nn.Module, args: tuple[Tensor, ...], key: str = key) -> None:
                seen[key] = args[0].detach().reshape(-1, args[0].shape[-1])

            hooks.append(lin.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    try:
        model(ids)
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was)
    return seen


Method = Literal["rtn", "gptq", "awq"]


@torch.no_grad()
def quantize_model(
    model: GPT,
    method: Method,
    bits: int,
    calibration: Tensor | None = None,
    granularity: Granularity = "channel",
    group_size: int | None = None,
    symmetric: bool = True,
) -> dict[str, float]:
    """Quantize, in place, every linear layer inside ``model``'s blocks (the embedding and the
    tied output layer stay in full precision) by round to nearest, GPTQ or AWQ. GPTQ and AWQ
    go block by block, as GPTQ's code does: the inputs of block i come from blocks already
    quantized, read from ``calibration`` (batch, seq) token ids. Returns each layer's output
    error on the calibration inputs (:func:`output_error`); empty for round to nearest without
    calibration."""
    check.instance("model", model, GPT)
    method = check.one_of("method", method, get_args(Method))
    bits = _bits(bits)
    if calibration is None and method != "rtn":
        raise ValueError(f"method={method!r} needs calibration token ids")
    if calibration is not None:
        check.tensor("calibration", calibration, dtype=torch.long, ndim=2, nonempty=True)
    errors: dict[str, float] = {}
    for i, block in enumerate(model.blocks):
        linears = _block_linears(block)
        inputs = linear_inputs(model, calibration, [i]) if calibration is not None else {}
        for name, lin in linears.items():
            key = f"blocks.{i}.{name}"
            w = lin.weight
            if method == "rtn":
                q = quantize(w.double(), bits, granularity, group_size, symmetric)
            elif method == "gptq":
                q = gptq(w, layer_hessian(inputs[key]), bits, granularity, group_size, symmetric)
            else:
                q, _ = awq(w, inputs[key], bits, granularity, group_size, symmetric)
            if key in inputs:
                errors[key] = output_error(w, q, layer_hessian(inputs[key]))
            w.copy_(q.to(w.dtype))
    return errors


# ----------------------------------------------------------------------------------- BitNet


def ternarize(w: Tensor, eps: float = 1e-5) -> Tensor:
    r"""BitNet b1.58's weight quantizer (Ma et al., 2024): absmean scale
    :math:`\gamma = \overline{|W|}` and
    :math:`\tilde W = \gamma\,\mathrm{clip}(\mathrm{round}(W/\gamma), -1, 1)`: every weight is
    -gamma, 0 or +gamma (log2 3 = 1.58 bits)."""
    check.tensor("w", w, floating=True, nonempty=True)
    gamma = w.abs().mean().clamp(min=eps)
    return torch.clamp(torch.round(w / gamma), -1, 1) * gamma


class BitLinear(nn.Linear):
    """A linear layer that trains full-precision "latent" weights but multiplies by their
    ternary rounding (:func:`ternarize`) and by activations rounded to int8 per token (absmax);
    gradients pass through the rounding unchanged (the straight-through estimator)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        wq = w + (ternarize(w) - w).detach()
        s = x.abs().amax(-1, keepdim=True).clamp(min=1e-5) / 127
        xq = x + (torch.clamp(torch.round(x / s), -127, 127) * s - x).detach()
        return F.linear(xq, wq, self.bias)


def _replace_linears(
    model: nn.Module, make: Callable[[str, nn.Module], nn.Module], nf4: bool = False
) -> int:
    """Replace every nn.Linear (and NF4Linear if ``nf4``) inside ``model.blocks`` by
    ``make(name, layer)``; count them."""
    n = 0
    kinds = (nn.Linear, NF4Linear) if nf4 else (nn.Linear,)
    for block in model.blocks:  # type: ignore[union-attr]
        layers = {n: m for n, m in block.named_modules() if isinstance(m, kinds)}
        for name, lin in list(layers.items()):
            parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
            setattr(parent, name.rpartition(".")[2], make(name, lin))
            n += 1
    return n


def to_bitnet(model: GPT) -> GPT:
    """Turn every linear layer inside the blocks into a :class:`BitLinear` with the same weights,
    in place (the embedding, the tied output layer and the norms stay in full precision, as in
    BitNet). Returns ``model``."""
    check.instance("model", model, GPT)

    def make(_name: str, lin: nn.Module) -> nn.Module:
        assert isinstance(lin, nn.Linear)
        new = BitLinear(lin.in_features, lin.out_features, bias=lin.bias is not None)
        new.load_state_dict(lin.state_dict())
        return new

    _replace_linears(model, make)
    return model


# ------------------------------------------------------------------------------ LoRA, QLoRA


class NF4Linear(nn.Module):
    """A frozen linear layer stored as NF4 codes, two per byte, with one float32 absmax per block
    of ``block_size`` weights (QLoRA without its double quantization); the weight is dequantized
    for each product. :meth:`nbytes` is what it stores."""

    packed: Tensor
    absmax: Tensor
    levels: Tensor

    def __init__(self, linear: nn.Linear, block_size: int = 64) -> None:
        super().__init__()
        check.instance("linear", linear, nn.Linear)
        if linear.bias is not None:
            raise ValueError("NF4Linear takes a linear layer without bias")
        self.block_size = check.integer("block_size", block_size, minimum=1)
        self.in_features: int = linear.in_features
        self.out_features: int = linear.out_features
        codes, absmax = grid_quantize(linear.weight.detach(), nf4_levels(), block_size)
        flat = codes.reshape(-1)
        if flat.numel() % 2:
            raise ValueError("NF4Linear needs an even number of weights")
        self.register_buffer("packed", (flat[0::2] << 4) | flat[1::2])  # first in the high nibble
        self.register_buffer("absmax", absmax)
        self.register_buffer("levels", nf4_levels())

    def dequantized(self) -> Tensor:
        """The weight (out, in) as the layer uses it: levels[codes] times block absmax."""
        codes = torch.stack([self.packed >> 4, self.packed & 15], 1).reshape(
            self.out_features, self.in_features
        )
        return grid_dequantize(codes, self.absmax, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.dequantized().to(x.dtype))

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.packed, self.absmax))


class LoRALinear(nn.Module):
    r"""LoRA (Hu et al., 2022): a frozen ``base`` layer plus a trainable rank-``r`` update,
    :math:`y = \mathrm{base}(x) + \frac{\alpha}{r} B A x`, A (r, in) initialized as
    ``nn.Linear`` initializes its weight (Kaiming uniform, as peft does), B (out, r) zero, so
    that training starts from the base model exactly."""

    def __init__(self, base: nn.Linear | NF4Linear, r: int, alpha: float | None = None) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear | NF4Linear):
            raise TypeError(f"base must be an nn.Linear or NF4Linear, got {type(base).__name__}")
        self.r = check.integer("r", r, minimum=1)
        self.alpha = float(self.r) if alpha is None else check.positive("alpha", alpha)
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        fan_in, fan_out = int(base.in_features), int(base.out_features)
        if self.r > min(fan_in, fan_out):
            raise ValueError(f"r ({self.r}) exceeds min(in, out) = {min(fan_in, fan_out)}")
        self.A = nn.Parameter(torch.empty(self.r, fan_in))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(fan_out, self.r))
        self.in_features: int = fan_in
        self.out_features: int = fan_out

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def delta(self) -> Tensor:
        """The update the adapter adds to the weight, (alpha / r) B A."""
        return self.scaling * self.B @ self.A

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.A), self.B)

    def merged(self) -> nn.Linear:
        """One ``nn.Linear`` with W + (alpha / r) B A: the same function, no extra latency."""
        base = self.base
        w = base.dequantized() if isinstance(base, NF4Linear) else base.weight
        assert isinstance(w, Tensor)
        bias = getattr(base, "bias", None)
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=bias is not None,
            dtype=w.dtype,
            device=w.device,
        )
        with torch.no_grad():
            lin.weight.copy_(w.detach() + self.delta().detach())
            if bias is not None:
                lin.bias.copy_(bias.detach())
        return lin


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2")


def add_lora(
    model: GPT, r: int, alpha: float | None = None, targets: Iterable[str] = LORA_TARGETS
) -> list[LoRALinear]:
    """Freeze ``model`` and wrap the blocks' linear layers whose names end in one of ``targets``
    with :class:`LoRALinear` adapters (in place). Returns the adapters."""
    check.instance("model", model, GPT)
    if isinstance(targets, str):
        raise TypeError(f"targets must be a collection of layer names, got the string {targets!r}")
    targets = tuple(targets)
    allowed = (*LORA_TARGETS, "w3")
    if not targets or set(targets) - set(allowed):
        raise ValueError(f"targets must be among {allowed}, got {targets}")
    for p in model.parameters():
        p.requires_grad_(False)
    made: list[LoRALinear] = []

    def make(name: str, lin: nn.Module) -> nn.Module:
        if name.rpartition(".")[2] not in targets:
            return lin
        assert isinstance(lin, nn.Linear | NF4Linear)
        adapter = LoRALinear(lin, r, alpha)
        made.append(adapter)
        return adapter

    _replace_linears(model, make, nf4=True)
    return made


def merge_lora(model: GPT) -> GPT:
    """Replace every :class:`LoRALinear` inside the blocks by its :meth:`LoRALinear.merged`
    layer, in place. Returns ``model``."""
    check.instance("model", model, GPT)
    for block in model.blocks:
        for name, mod in list(block.named_modules()):
            if isinstance(mod, LoRALinear):
                parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
                setattr(parent, name.rpartition(".")[2], mod.merged())
    return model


def quantize_base(model: GPT, block_size: int = 64) -> GPT:
    """QLoRA's base: every linear layer inside the blocks replaced by an :class:`NF4Linear`, in
    place (then :func:`add_lora` wraps them). Returns ``model``."""
    check.instance("model", model, GPT)
    block_size = check.integer("block_size", block_size, minimum=1)
    _replace_linears(model, lambda _n, lin: NF4Linear(lin, block_size))  # type: ignore[arg-type]
    return model


# ---------------------------------------------------------------------- speculative sampling

Dist = Callable[[Sequence[int]], Tensor]


def _probs(name: str, p: Tensor, vocab: int | None = None) -> Tensor:
    check.tensor(name, p, floating=True, ndim=1, nonempty=True)
    if vocab is not None and p.numel() != vocab:
        raise ValueError(
            f"{name} has {p.numel()} entries but the other model's vocabulary has {vocab}: "
            "draft and target must share one vocabulary"
        )
    if bool((p < 0).any()) or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"{name} must be a probability vector (>= 0, summing to 1)")
    return p.double()


def residual(p: Tensor, q: Tensor) -> Tensor:
    """The distribution to resample from after a rejection: max(p - q, 0), normalized."""
    r = (p - q).clamp(min=0)
    total = r.sum()
    return r / total if total > 0 else p


def speculative_step(
    prefix: Sequence[int],
    target: Callable[[Sequence[int], int], Tensor],
    draft: Dist,
    gamma: int,
    generator: torch.Generator | None = None,
    resample: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[list[int], int]:
    """One round of speculative sampling (Leviathan et al., 2023; Chen et al., 2023).

    The draft proposes ``gamma`` tokens, each from its own distribution ``draft(prefix + so
    far)``; the target scores all of them in one call, ``target(prefix + proposals, gamma + 1)``
    returning its next-token distributions (gamma + 1, vocab) at the last gamma + 1 positions.
    Token i is accepted with probability min(1, p_i(x) / q_i(x)); at the first rejection a
    token is drawn from max(p_i - q_i, 0) normalized and the round ends; if all are accepted, a
    last token is drawn from p_(gamma+1). Every emitted token is then distributed exactly as the
    target's own sample. Returns (new tokens, number of draft tokens accepted). ``resample``
    replaces :func:`residual` (to show what a wrong rule does)."""
    gamma = check.integer("gamma", gamma, minimum=1)
    check.generator("generator", generator)
    if resample is not None:
        check.function("resample", resample)
    rule = residual if resample is None else resample
    seq = list(prefix)
    qs: list[Tensor] = []
    proposed: list[int] = []
    for _ in range(gamma):
        q = _probs("draft distribution", draft(seq + proposed))
        qs.append(q)
        proposed.append(int(torch.multinomial(q, 1, generator=generator)))
    ps = target(seq + proposed, gamma + 1)
    check.tensor("target distributions", ps, floating=True, ndim=2)
    if ps.shape[0] != gamma + 1:
        raise ValueError(f"target must return gamma + 1 = {gamma + 1} rows, got {ps.shape[0]}")
    out: list[int] = []
    for i, (x, q) in enumerate(zip(proposed, qs, strict=True)):
        p = _probs("target distribution", ps[i], q.numel())
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        if u * float(q[x]) < float(p[x]):  # u < p/q without dividing by a small q
            out.append(x)
            continue
        out.append(int(torch.multinomial(rule(p, q), 1, generator=generator)))
        return out, i
    p = _probs("target distribution", ps[gamma], qs[0].numel())
    out.append(int(torch.multinomial(p, 1, generator=generator)))
    return out, gamma


def _gpt_dists(
    model: GPT, temperature: float
) -> tuple[Dist, Callable[[Sequence[int], int], Tensor]]:
    @torch.no_grad()
    def last(seq: Sequence[int], k: int) -> Tensor:
        ids = torch.tensor([list(seq)], dtype=torch.long)
        logits = model(ids)[0][0, -k:].double()
        return torch.softmax(logits / temperature, -1)

    return (lambda seq: last(seq, 1)[0]), last


def speculative_generate(
    target: GPT,
    draft: GPT,
    prompt: Sequence[int],
    max_new_tokens: int,
    gamma: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[list[int], list[int]]:
    """Sample ``max_new_tokens`` tokens after ``prompt`` from ``target`` with ``draft``
    proposing ``gamma`` at a time (:func:`speculative_step`; both models re-read the whole
    sequence each call, no KV cache). Returns (the new tokens, the number accepted in each
    round); target calls = rounds."""
    check.instance("target", target, GPT)
    check.instance("draft", draft, GPT)
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(
            f"draft's vocabulary ({draft.config.vocab_size}) differs from target's "
            f"({target.config.vocab_size})"
        )
    max_new_tokens = check.integer("max_new_tokens", max_new_tokens, minimum=1)
    gamma = check.integer("gamma", gamma, minimum=1)
    temperature = check.positive("temperature", temperature)
    top = target.config.vocab_size - 1
    prompt = [check.integer("prompt token", t, minimum=0, maximum=top) for t in prompt]
    if not prompt:
        raise ValueError("prompt must hold at least one token")
    limit = min(target.config.block_size, draft.config.block_size)
    if len(prompt) + max_new_tokens + gamma > limit:
        raise ValueError(
            f"prompt ({len(prompt)}) + max_new_tokens ({max_new_tokens}) + gamma ({gamma}) "
            f"exceeds the models' block_size ({limit})"
        )
    q_fn, _ = _gpt_dists(draft, temperature)
    _, p_fn = _gpt_dists(target, temperature)
    was = target.training, draft.training
    target.eval()
    draft.eval()
    out: list[int] = []
    accepted: list[int] = []
    try:
        while len(out) < max_new_tokens:
            new, a = speculative_step(prompt + out, p_fn, q_fn, gamma, generator)
            out += new
            accepted.append(a)
    finally:
        target.train(was[0])
        draft.train(was[1])
    return out[:max_new_tokens], accepted


def exact_output_distribution(
    target: Dist,
    draft: Dist,
    vocab: int,
    gamma: int,
    n: int,
    prefix: Sequence[int] = (),
    resample: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[tuple[int, ...], float]:
    """The exact probability of every sequence of the first ``n`` tokens that speculative
    sampling emits after ``prefix``, by enumerating every draft proposal and every accept or
    reject branch of :func:`speculative_step` (rounds repeat until n tokens exist). ``target``
    and ``draft`` map a sequence to a next-token distribution over ``vocab`` tokens. Cost grows
    as vocab^(gamma + n): for small vocabularies. ``resample`` as in :func:`speculative_step`,
    whose acceptance rule and resampling function this uses."""
    vocab = check.integer("vocab", vocab, minimum=1)
    if resample is not None:
        check.function("resample", resample)
    rule = residual if resample is None else resample
    gamma = check.integer("gamma", gamma, minimum=1)
    n = check.integer("n", n, minimum=1)
    if vocab ** (gamma + n) > 5_000_000:
        raise ValueError(f"vocab^(gamma + n) = {vocab ** (gamma + n)} branches: too many")
    start = list(prefix)
    result: dict[tuple[int, ...], float] = {}

    def add(out: tuple[int, ...], prob: float) -> None:
        if prob == 0:
            return
        if len(out) >= n:
            key = out[:n]
            result[key] = result.get(key, 0.0) + prob
        else:
            round_(out, prob)

    def round_(out: tuple[int, ...], prob: float) -> None:
        def propose(proposed: tuple[int, ...], qs: list[Tensor], pr: float) -> None:
            if len(proposed) == gamma:
                settle(proposed, qs, pr)
                return
            q = _probs("draft distribution", draft(start + list(out + proposed)), vocab)
            for x in range(vocab):
                if q[x] > 0:
                    propose(proposed + (x,), [*qs, q], pr * float(q[x]))

        def settle(proposed: tuple[int, ...], qs: list[Tensor], pr: float) -> None:
            kept: tuple[int, ...] = ()
            for i, x in enumerate(proposed):
                p = _probs("target distribution", target(start + list(out + kept)), vocab)
                accept = min(1.0, float(p[x]) / float(qs[i][x]))
                res = rule(p, qs[i])
                for y in range(vocab):  # rejected, then y drawn from the residual
                    add(out + kept + (y,), pr * (1 - accept) * float(res[y]))
                pr *= accept
                kept += (x,)
            p = _probs("target distribution", target(start + list(out + kept)), vocab)
            for y in range(vocab):
                add(out + kept + (y,), pr * float(p[y]))

        propose((), [], prob)

    round_((), 1.0)
    return result


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    r"""Leviathan et al.'s expected tokens per target call when every draft token is accepted
    independently with probability ``alpha``: :math:`(1-\alpha^{\gamma+1})/(1-\alpha)`
    (gamma + 1 at alpha = 1)."""
    alpha = check.probability("alpha", alpha)
    gamma = check.integer("gamma", gamma, minimum=1)
    return float(gamma + 1) if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


# ------------------------------------------------------------------------ paged KV cache


@dataclass
class PagedKVCache:
    """A KV cache in fixed-size blocks, as in vLLM (Kwon et al., 2023): one pool of
    ``num_blocks`` physical blocks of ``block_size`` tokens (keys and values, each
    (heads, head_dim) per token); each sequence owns a *block table*, the list of its physical
    blocks in logical order, so its tokens need not be contiguous. Blocks carry reference
    counts: :meth:`fork` shares a sequence's blocks with a new one (a prompt shared by several
    samples), and :meth:`append` copies a shared block before writing into it (copy-on-write).
    """

    num_blocks: int
    block_size: int
    heads: int
    head_dim: int
    dtype: torch.dtype = torch.float32
    k: Tensor = field(init=False)
    v: Tensor = field(init=False)
    tables: dict[int, list[int]] = field(init=False, default_factory=dict)
    lengths: dict[int, int] = field(init=False, default_factory=dict)
    refs: list[int] = field(init=False)
    free: list[int] = field(init=False)
    copies: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        for name in ("num_blocks", "block_size", "heads", "head_dim"):
            setattr(self, name, check.integer(name, getattr(self, name), minimum=1))
        shape = (self.num_blocks, self.block_size, self.heads, self.head_dim)
        self.k = torch.zeros(shape, dtype=self.dtype)
        self.v = torch.zeros(shape, dtype=self.dtype)
        self.refs = [0] * self.num_blocks
        self.free = list(range(self.num_blocks - 1, -1, -1))

    def _seq(self, seq: int) -> int:
        seq = check.integer("seq", seq, minimum=0)
        if seq not in self.tables:
            raise KeyError(f"seq {seq} is not in the cache")
        return seq

    def _take(self) -> int:
        if not self.free:
            raise MemoryError(f"all {self.num_blocks} blocks are in use")
        b = self.free.pop()
        self.refs[b] = 1
        return b

    def new(self, seq: int) -> None:
        """Start an empty sequence."""
        seq = check.integer("seq", seq, minimum=0)
        if seq in self.tables:
            raise ValueError(f"seq {seq} already exists")
        self.tables[seq], self.lengths[seq] = [], 0

    def append(self, seq: int, k: Tensor, v: Tensor) -> None:
        """Append tokens' keys and values, each (tokens, heads, head_dim), to ``seq``."""
        seq = self._seq(seq)
        check.tensor("k", k, dtype=self.dtype, shape=(None, self.heads, self.head_dim))
        check.tensor("v", v, dtype=self.dtype, shape=tuple(k.shape))
        table = self.tables[seq]
        for t in range(k.shape[0]):
            pos = self.lengths[seq]
            slot = pos % self.block_size
            if slot == 0:
                table.append(self._take())
            elif self.refs[table[-1]] > 1:  # shared, partly filled: copy before writing
                old = table[-1]
                new = self._take()
                self.k[new], self.v[new] = self.k[old], self.v[old]
                self.refs[old] -= 1
                table[-1] = new
                self.copies += 1
            self.k[table[-1], slot], self.v[table[-1], slot] = k[t], v[t]
            self.lengths[seq] = pos + 1

    def fork(self, parent: int, child: int) -> None:
        """A new sequence ``child`` that shares all of ``parent``'s blocks (no copy)."""
        parent = self._seq(parent)
        self.new(child)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        for b in self.tables[child]:
            self.refs[b] += 1

    def release(self, seq: int) -> None:
        """Drop ``seq``; blocks no other sequence uses go back to the pool."""
        seq = self._seq(seq)
        for b in self.tables.pop(seq):
            self.refs[b] -= 1
            if self.refs[b] == 0:
                self.free.append(b)
        del self.lengths[seq]

    def gather(self, seq: int) -> tuple[Tensor, Tensor]:
        """``seq``'s keys and values in logical order, each (tokens, heads, head_dim)."""
        seq = self._seq(seq)
        idx = torch.tensor(self.tables[seq], dtype=torch.long)
        n = self.lengths[seq]
        k = self.k[idx].reshape(-1, self.heads, self.head_dim)[:n]
        return k, self.v[idx].reshape(-1, self.heads, self.head_dim)[:n]

    def attend(self, seq: int, q: Tensor) -> Tensor:
        """Attention of queries ``q`` (heads, queries, head_dim), the last positions of ``seq``,
        to its cached keys and values through the block table (causal), (heads, queries,
        head_dim)."""
        k, v = self.gather(seq)
        check.tensor("q", q, dtype=self.dtype, shape=(self.heads, None, self.head_dim))
        s, n = q.shape[1], k.shape[0]
        if s > n:
            raise ValueError(f"q has {s} positions but seq holds only {n} tokens")
        keep = torch.ones(s, n, dtype=torch.bool).tril(n - s)
        return F.scaled_dot_product_attention(
            q, k.transpose(0, 1), v.transpose(0, 1), attn_mask=keep
        )

    @property
    def blocks_used(self) -> int:
        return sum(1 for r in self.refs if r > 0)

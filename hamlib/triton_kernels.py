"""The Triton kernels behind :mod:`hamlib.kernels`: no input checks here; call them through the
wrappers there, which check dtypes, shapes, devices and contiguity and choose the launch.

Whether ``@triton.jit`` compiles these kernels for a GPU or runs them in Triton's interpreter is
decided when the decorator runs; :mod:`hamlib.backend`, imported first, prepares triton for the
chosen backend.

Every kernel uses plain pointer arithmetic and masks: a program owns one block of the output,
computes the addresses of its elements from ``tl.program_id`` and the strides, and masks every load
and store whose address falls outside the tensor. Accumulation is always in float32. ``UPCAST``
converts tiles to float32 before ``tl.dot``: the Triton interpreter computes bf16 arithmetic
(dots included) wrongly.
"""

from __future__ import annotations

# isort: off
from hamlib import backend  # noqa: F401  (first: it prepares triton to compile or to interpret)
import triton
import triton.language as tl

# isort: on


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64: offsets past 2**31 elements stay correct
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n  # the last block hangs over the end of the tensor
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + offsets, mask=mask).to(tl.float32)
    # The sum of two fp16/bf16 numbers rounded once from fp32 is the correctly rounded sum; and the
    # interpreter's own bf16 arithmetic is wrong, so half precision never meets an operator here.
    tl.store(out_ptr + offsets, (x + y).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_kernel(out_ptr, in_ptr, in_row_stride, out_row_stride, n_cols, BLOCK: tl.constexpr):
    """One program per row; the whole row lives in registers (BLOCK >= n_cols)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    # -inf in the padding: it changes neither the max nor (exp(-inf) = 0) the sum.
    x = tl.load(in_ptr + row * in_row_stride + cols, mask=mask, other=-float("inf"))
    x = x.to(tl.float32)
    z = x - tl.max(x, axis=0)
    numerator = tl.exp(z)
    denominator = tl.sum(numerator, axis=0)
    y = numerator / denominator
    tl.store(out_ptr + row * out_row_stride + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def softmax_online_kernel(
    out_ptr, in_ptr, in_row_stride, out_row_stride, n_cols, BLOCK: tl.constexpr
):
    """Rows of any length: one pass for the running max and the rescaled sum (online softmax,
    Milakov & Gimelshein 2018), one pass to write. Reads the row twice, writes it once."""
    row = tl.program_id(0).to(tl.int64)
    in_row = in_ptr + row * in_row_stride
    running_max = -float("inf")
    running_sum = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(in_row + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        # While every element so far is -inf, subtract 0 instead (-inf - -inf would be NaN).
        shift = tl.where(new_max == -float("inf"), 0.0, new_max)
        # Everything summed so far was exp(x - old max): rescale it to the new max.
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(x - shift), axis=0)
        running_max = new_max
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(in_row + cols, mask=mask, other=-float("inf")).to(tl.float32)
        y = tl.exp(x - running_max) / running_sum
        tl.store(out_ptr + row * out_row_stride + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def grouped_tile(pid, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """The (tile-row, tile-column) of C that program ``pid`` computes. Consecutive programs walk
    down GROUP_M tile-rows before moving right, so the tiles of A and B they share are still in
    L2 when the neighbours ask for them (``hamlib.kernels.tile_order`` is the same in numpy)."""
    tiles_per_group = GROUP_M * tiles_n
    first_m = (pid // tiles_per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % tiles_per_group) % group_rows
    pid_n = (pid % tiles_per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """C = A @ B, one BLOCK_M x BLOCK_N tile of C per program, in grouped order."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)

    # int64 offsets: rows * stride_am passes 2**31 once M * K does.
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K).to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + ks
        a = tl.load(
            a_ptr + rows[:, None] * stride_am + k[None, :] * stride_ak,
            mask=(rows[:, None] < M) & (k[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            b_ptr + k[:, None] * stride_bk + cols[None, :] * stride_bn,
            mask=(k[:, None] < K) & (cols[None, :] < N),
            other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        # fp32 operands: "ieee" = full fp32 products on the FMA units (torch's default),
        # "tf32" = inputs cut to TF32 (truncated: no cvt.rna) on the tensor cores. fp16/bf16
        # ignore it.
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    c = acc.to(c_ptr.dtype.element_ty)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    tl.store(c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn, c, mask=mask)


@triton.jit
def layer_norm_kernel(x_ptr, y_ptr, w_ptr, b_ptr, row_stride, N, eps, BLOCK: tl.constexpr):
    """One program per row, any row length: mean, then variance about the mean, then write."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    y_row = y_ptr + row * row_stride
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        acc += tl.load(x_row + cols, mask=cols < N, other=0.0).to(tl.float32)
    mean = tl.sum(acc, axis=0) / N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, N, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean, 0.0)
        acc += d * d
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / N + eps)
    for start in range(0, N, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=mask).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask).to(tl.float32)
        y = (x - mean) * rstd * w + b
        tl.store(y_row + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def flash_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    sm_scale,
    S_q,
    S_k,
    D,
    CAUSAL: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per (BLOCK_M queries, batch x head). Keys and values stream through in blocks
    of BLOCK_N; the S_q x S_k score matrix never exists in memory (Dao et al., 2022)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # contiguous (batch, heads, seq, dim): heads are rows
    q_ptr += bh * S_q * D
    k_ptr += bh * S_k * D
    v_ptr += bh * S_k * D
    o_ptr += bh * S_q * D
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D  # head dims that are not a power of two are padded with zeros
    q = tl.load(
        q_ptr + offs_m[:, None] * D + offs_d[None, :],
        mask=(offs_m[:, None] < S_q) & d_ok[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    qk_scale = sm_scale * 1.4426950408889634  # log2(e): exp(x) = exp2(x log2 e)
    row_max = tl.full((BLOCK_M,), -float("inf"), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    hi = S_k
    if CAUSAL:  # key blocks entirely right of the diagonal contribute nothing: skip them
        hi = tl.minimum(S_k, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        cols = start + offs_n
        col_ok = cols < S_k
        k_t = tl.load(  # a (BLOCK_D, BLOCK_N) tile: K transposed by the addressing alone
            k_ptr + cols[None, :] * D + offs_d[:, None],
            mask=col_ok[None, :] & d_ok[:, None],
            other=0.0,
        )
        v = tl.load(
            v_ptr + cols[:, None] * D + offs_d[None, :],
            mask=col_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        if UPCAST:
            k_t = k_t.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, k_t, input_precision=PRECISION) * qk_scale
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (offs_m[:, None] >= cols[None, :])
        s = tl.where(keep, s, -float("inf"))
        # Online softmax: rescale what was accumulated under the old row maximum.
        new_max = tl.maximum(row_max, tl.max(s, axis=1))
        p = tl.exp2(s - new_max[:, None])
        alpha = tl.exp2(row_max - new_max)
        row_sum = row_sum * alpha + tl.sum(p, axis=1)
        # Rescale, then accumulate the new block's P V into the same registers.
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        row_max = new_max
    out = acc / row_sum[:, None]
    tl.store(
        o_ptr + offs_m[:, None] * D + offs_d[None, :],
        out.to(o_ptr.dtype.element_ty),
        mask=(offs_m[:, None] < S_q) & d_ok[None, :],
    )

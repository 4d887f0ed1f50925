r"""Attention as a function, and where a token is: the pieces of a Transformer that are formulas
rather than modules (:mod:`hamlib.transformer` builds the modules from them).

Per-head tensors are (..., seq, head_dim); the same functions serve one head or a batch of heads.

- :func:`attention`: scaled dot-product attention, causal (:func:`causal_mask`) or masked,
  optionally returning the weights.
- :func:`sinusoidal_positions`, :func:`apply_rope`: absolute and rotary position information.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["apply_rope", "attention", "causal_mask", "sinusoidal_positions"]


_MASK_DTYPES = (torch.bool, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def causal_mask(s_q: int, s_k: int, device: torch.device | str | None = None) -> Tensor:
    """The bool mask (True = may attend) of causal attention for ``s_q`` queries that are the
    *last* ``s_q`` of ``s_k`` positions: query i sees key j when j <= i + (s_k - s_q)."""
    s_q = check.integer("s_q", s_q, minimum=0)
    s_k = check.integer("s_k", s_k, minimum=s_q)
    return torch.ones(s_q, s_k, dtype=torch.bool, device=device).tril(s_k - s_q)


def _check_attention_args(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, mask: Tensor | None, return_weights: bool
) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check.tensor(name, t, floating=True, min_ndim=2, layout="(..., seq, dim)")
    check.like("k", k, "q", q, shape=False)
    check.like("v", v, "q", q, shape=False)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")
    causal = check.boolean("causal", causal)
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(
            f"causal attention needs at least as many keys as queries "
            f"({k.shape[-2]} < {q.shape[-2]})"
        )
    if mask is not None:
        check.tensor("mask", mask, dtype=_MASK_DTYPES)
    check.boolean("return_weights", return_weights)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r""":math:`\mathrm{softmax}(QK^\top/\sqrt{d} + M)\,V` over the last two dimensions.

    q is (..., S_q, d), k is (..., S_k, d), v is (..., S_k, d_v). ``causal``: query i may see key
    j when j <= i + (S_k - S_q), i.e. the queries are the *last* S_q positions (the convention of
    decoding with a KV cache; for S_q = S_k it is the usual lower-triangular mask, as in
    ``F.scaled_dot_product_attention(is_causal=True)``). ``mask``: a bool tensor (True = may
    attend) or an additive float tensor, broadcastable to (..., S_q, S_k).
    """
    _check_attention_args(q, k, v, causal, mask, return_weights)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        keep = causal_mask(q.shape[-2], k.shape[-2], q.device)
        scores = scores.masked_fill(~keep, -math.inf)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, -math.inf)
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


def sinusoidal_positions(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    r"""Vaswani et al. (2017): :math:`PE_{p,2i} = \sin(p\,\omega_i)`,
    :math:`PE_{p,2i+1} = \cos(p\,\omega_i)` with :math:`\omega_i = \mathrm{base}^{-2i/d}`."""
    n_positions = check.integer("n_positions", n_positions, minimum=1)
    d_model = check.integer("d_model", d_model, minimum=2)
    base = check.positive("base", base)
    if d_model % 2:
        raise ValueError(
            f"sin and cos fill pairs of dimensions: need an even d_model, got {d_model}"
        )
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.empty(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * omega)
    pe[:, 1::2] = torch.cos(pos * omega)
    return pe


def _check_rope_args(x: Tensor, positions: Tensor, base: float) -> tuple[Tensor, float]:
    check.tensor("x", x, floating=True, min_ndim=2, layout="(..., seq, head_dim)")
    if x.shape[-1] % 2:
        raise ValueError(
            f"RoPE rotates pairs of dimensions: head_dim must be even, got {x.shape[-1]}"
        )
    positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() != 1 or positions.shape[0] != x.shape[-2]:
        raise ValueError(
            f"positions must be 1-D with one entry per token ({x.shape[-2]}), "
            f"got shape {tuple(positions.shape)}"
        )
    return positions, check.positive("base", base)


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (Su et al., 2021): rotate each pair
    :math:`(x_{2i}, x_{2i+1})` by the angle :math:`p\,\theta_i`, :math:`\theta_i =
    \mathrm{base}^{-2i/d}`, where p is the token's position.

    x is (..., seq, d) with d even; positions is (seq,). Because rotations compose,
    :math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle`: scores depend on m - n only.
    """
    positions, base = _check_rope_args(x, positions, base)
    d = x.shape[-1]
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=dt) / d)
    angle = positions.to(dt)[:, None] * theta  # (seq, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out

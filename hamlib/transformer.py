r"""A decoder-only Transformer written out piece by piece, each piece checkable against PyTorch.

Shapes: a batch of sequences of token ids is (batch, seq); activations are (batch, seq, d_model);
per-head tensors are (batch, heads, seq, head_dim).

- :func:`attention`: scaled dot-product attention, causal or masked, optionally returning the
  weights.
- :func:`sinusoidal_positions`, :func:`apply_rope`: absolute and rotary position information.
- :class:`MultiHeadAttention` with grouped-query attention (``n_kv_heads``) and a KV cache.
- :class:`RMSNorm`, :class:`FeedForward` (GELU or SwiGLU), :class:`Block` (pre- or post-norm).
- :class:`GPT` with :meth:`GPT.generate` (with or without the KV cache) and :func:`train_gpt`.
- :func:`kv_cache_bytes`, :func:`count_parameters`, :class:`CharTokenizer`, :func:`load_text`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GPT",
    "Block",
    "CharTokenizer",
    "FeedForward",
    "GPTConfig",
    "KVCache",
    "MultiHeadAttention",
    "RMSNorm",
    "apply_rope",
    "attention",
    "count_parameters",
    "kv_cache_bytes",
    "load_text",
    "sinusoidal_positions",
    "train_gpt",
]

DATA = Path(__file__).parent / "data"


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
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() < 2:
            raise ValueError(f"{name} must be a tensor with at least 2 dimensions (..., seq, dim)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share the last dimension, got {q.shape[-1]} and {k.shape[-1]}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[-2]} and {v.shape[-2]}")
    s_q, s_k = q.shape[-2], k.shape[-2]
    if causal and s_q > s_k:
        raise ValueError(f"causal attention needs at least as many keys as queries ({s_k} < {s_q})")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        keep = torch.ones(s_q, s_k, dtype=torch.bool, device=q.device).tril(s_k - s_q)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


def sinusoidal_positions(n_positions: int, d_model: int, base: float = 10000.0) -> Tensor:
    r"""Vaswani et al. (2017): :math:`PE_{p,2i} = \sin(p\,\omega_i)`,
    :math:`PE_{p,2i+1} = \cos(p\,\omega_i)` with :math:`\omega_i = \mathrm{base}^{-2i/d}`."""
    if n_positions < 1 or d_model < 2 or d_model % 2:
        raise ValueError(
            f"need n_positions >= 1 and an even d_model >= 2, got {n_positions} and {d_model}"
        )
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.empty(n_positions, d_model)
    pe[:, 0::2] = torch.sin(pos * omega)
    pe[:, 1::2] = torch.cos(pos * omega)
    return pe


def apply_rope(x: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    r"""Rotary position embedding (Su et al., 2021): rotate each pair
    :math:`(x_{2i}, x_{2i+1})` by the angle :math:`p\,\theta_i`, :math:`\theta_i =
    \mathrm{base}^{-2i/d}`, where p is the token's position.

    x is (..., seq, d) with d even; positions is (seq,). Because rotations compose,
    :math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle`: scores depend on m - n only.
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError("x must be a tensor (..., seq, head_dim)")
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE rotates pairs of dimensions: head_dim must be even, got {d}")
    positions = torch.as_tensor(positions, device=x.device)
    if positions.dim() != 1 or positions.shape[0] != x.shape[-2]:
        raise ValueError(
            f"positions must be 1-D with one entry per token ({x.shape[-2]}), "
            f"got shape {tuple(positions.shape)}"
        )
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    theta = base ** (-torch.arange(0, d, 2, device=x.device, dtype=dt) / d)
    angle = positions.to(dt)[:, None] * theta  # (seq, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer, each
    (batch, n_kv_heads, seq, head_dim). Grows by concatenation."""

    layers: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)

    def length(self) -> int:
        first = self.layers[0] if self.layers else None
        return 0 if first is None else first[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers if kv for t in kv)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``n_kv_heads`` key/value heads shared by groups of query heads:
    n_kv_heads = n_heads is multi-head attention, 1 is multi-query attention (Shazeer, 2019), in
    between grouped-query attention (Ainslie et al., 2023). Optional RoPE on queries and keys.

    The attention itself runs through ``F.scaled_dot_product_attention`` (PyTorch's fused
    kernel), which computes the same function as :func:`attention`; :func:`attention` is used
    when the weights are asked for."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
        self.head_dim = d_model // n_heads
        if rope and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.rope, self.rope_base = rope, rope_base
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, kv_dim, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)

    def expand_kv_heads(self) -> MultiHeadAttention:
        """The equivalent multi-head attention with n_kv_heads = n_heads: each key/value head's
        weights copied to the n_heads / n_kv_heads query heads it serves (what
        ``repeat_interleave`` does to the keys and values in ``forward``)."""
        full = MultiHeadAttention(
            self.d_model,
            self.n_heads,
            rope=self.rope,
            rope_base=self.rope_base,
            bias=self.q_proj.bias is not None,
        ).to(self.q_proj.weight)
        group = self.n_heads // self.n_kv_heads
        with torch.no_grad():
            for name in ("q_proj", "o_proj"):
                getattr(full, name).load_state_dict(getattr(self, name).state_dict())
            for name in ("k_proj", "v_proj"):
                src: nn.Linear = getattr(self, name)
                dst: nn.Linear = getattr(full, name)
                w = src.weight.view(self.n_kv_heads, self.head_dim, self.d_model)
                dst.weight.copy_(w.repeat_interleave(group, dim=0).reshape(self.d_model, -1))
                if src.bias is not None:
                    b = src.bias.view(self.n_kv_heads, self.head_dim)
                    dst.bias.copy_(b.repeat_interleave(group, dim=0).reshape(-1))
        return full

    def forward(
        self,
        x: Tensor,
        causal: bool = True,
        cache: KVCache | None = None,
        layer: int = 0,
        return_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x is (batch, seq, d_model). With a ``cache``, x holds only the new tokens: their keys
        and values are appended to ``cache.layers[layer]`` and they attend to everything cached."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (batch, seq, {self.d_model}), got {tuple(x.shape)}")
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        past = 0
        if cache is not None:
            while len(cache.layers) <= layer:
                cache.layers.append(None)
            entry = cache.layers[layer]
            past = 0 if entry is None else entry[0].shape[2]
        if self.rope:
            pos = torch.arange(past, past + s, device=x.device)
            q, k = apply_rope(q, pos, self.rope_base), apply_rope(k, pos, self.rope_base)
        if cache is not None:
            entry = cache.layers[layer]
            if entry is not None:
                k, v = torch.cat([entry[0], k], dim=2), torch.cat([entry[1], v], dim=2)
            cache.layers[layer] = (k, v)
        group = self.n_heads // self.n_kv_heads
        if group > 1:  # each key/value head serves `group` consecutive query heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        weights = None
        if return_weights:
            out, weights = attention(q, k, v, causal=causal, return_weights=True)
        else:  # the same function as `attention` (tested), fused by PyTorch: ~1.6x faster here
            s_k = k.shape[2]
            keep = None
            if causal and s != s_k:  # new queries are the last s positions of s_k
                keep = torch.ones(s, s_k, dtype=torch.bool, device=x.device).tril(s_k - s)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, is_causal=causal and keep is None
            )
        out = self.o_proj(out.transpose(1, 2).reshape(b, s, self.d_model))
        return (out, weights) if return_weights and weights is not None else out


class RMSNorm(nn.Module):
    r"""Zhang & Sennrich (2019): :math:`y = x / \sqrt{\mathrm{mean}(x^2) + \epsilon}\cdot w`.
    No centring, no bias."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class FeedForward(nn.Module):
    r"""GELU: :math:`W_2\,\mathrm{GELU}(W_1 x)`. SwiGLU (Shazeer, 2020):
    :math:`W_2(\mathrm{SiLU}(W_1 x) \odot W_3 x)`, three matrices, so at equal parameters its
    hidden width is 2/3 of GELU's."""

    def __init__(self, d_model: int, d_hidden: int, kind: str = "gelu") -> None:
        super().__init__()
        if kind not in ("gelu", "swiglu"):
            raise ValueError(f"kind must be 'gelu' or 'swiglu', got {kind!r}")
        self.kind = kind
        self.w1 = nn.Linear(d_model, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_hidden, bias=False) if kind == "swiglu" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.w3 is None:
            return self.w2(F.gelu(self.w1(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_hidden: int | None = None  # default: 4 d_model for GELU, 8/3 d_model (rounded) for SwiGLU
    ffn: str = "gelu"  # "gelu" or "swiglu"
    norm: str = "pre"  # "pre" or "post"
    norm_type: str = "layer"  # "layer" or "rms"
    positions: str = "learned"  # "learned", "sinusoidal", "rope" or "none"
    tie_weights: bool = True

    def __post_init__(self) -> None:
        choices = {
            "ffn": ("gelu", "swiglu"),
            "norm": ("pre", "post"),
            "norm_type": ("layer", "rms"),
            "positions": ("learned", "sinusoidal", "rope", "none"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("vocab_size", "block_size", "d_model", "n_layers", "n_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.d_hidden is None:
            self.d_hidden = 4 * self.d_model
            if self.ffn == "swiglu":
                self.d_hidden = round(8 * self.d_model / 3)


class Block(nn.Module):
    """Pre-norm: x + f(norm(x)) (the residual stream is never normalized). Post-norm (the
    original Transformer): norm(x + f(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.d_hidden is not None
        norm: type[nn.Module] = RMSNorm if cfg.norm_type == "rms" else nn.LayerNorm
        self.pre = cfg.norm == "pre"
        self.norm1, self.norm2 = norm(cfg.d_model), norm(cfg.d_model)
        self.attn = MultiHeadAttention(
            cfg.d_model, cfg.n_heads, cfg.n_kv_heads, rope=cfg.positions == "rope"
        )
        self.ffn = FeedForward(cfg.d_model, cfg.d_hidden, cfg.ffn)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x), cache=cache, layer=layer)
            return x + self.ffn(self.norm2(x))
        x = self.norm1(x + self.attn(x, cache=cache, layer=layer))
        return self.norm2(x + self.ffn(x))


class GPT(nn.Module):
    """A decoder-only Transformer language model (Radford et al., 2018/2019)."""

    sinusoid: Tensor  # a buffer, present with positions="sinusoidal"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = cfg = config
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = (
            nn.Embedding(cfg.block_size, cfg.d_model) if cfg.positions == "learned" else None
        )
        if cfg.positions == "sinusoidal":
            self.register_buffer(
                "sinusoid", sinusoidal_positions(cfg.block_size, cfg.d_model), persistent=False
            )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        norm: type[nn.Module] = RMSNorm if cfg.norm_type == "rms" else nn.LayerNorm
        self.norm_f = norm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """idx (batch, seq) of token ids -> (logits (batch, seq, vocab), mean cross-entropy
        against ``targets`` or None). With a cache, idx holds only the tokens not yet cached."""
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise ValueError(
                f"idx must be a (batch, seq) tensor of int64 token ids, got {idx.shape}"
            )
        past = 0 if cache is None else cache.length()
        s = idx.shape[1]
        if past + s > self.config.block_size and self.config.positions != "rope":
            raise ValueError(
                f"sequence of {past + s} tokens is longer than block_size={self.config.block_size}"
            )
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(past, past + s, device=idx.device))
        elif self.config.positions == "sinusoidal":
            x = x + self.sinusoid[past : past + s]
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache, layer=i)
        logits = self.head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        use_kv_cache: bool = True,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Append ``max_new_tokens`` sampled tokens to idx (batch, seq). temperature = 0 is
        greedy. Without the cache every step re-runs the whole sequence; with it, each step runs
        one token against the cached keys and values. Both give the same tokens."""
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if idx.shape[1] + max_new_tokens > self.config.block_size:
            raise ValueError(
                f"prompt ({idx.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds "
                f"block_size={self.config.block_size}"
            )
        was_training = self.training
        self.eval()
        cache = KVCache() if use_kv_cache else None
        new = idx
        for _ in range(max_new_tokens):
            logits, _ = self(new if use_kv_cache else idx, cache=cache)
            last = logits[:, -1, :]
            if temperature == 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(last / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
            new = nxt
        self.train(was_training)
        return idx


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1, bytes_per: int = 2
) -> int:
    """Memory of a KV cache: 2 (keys and values) x layers x kv heads x head_dim x tokens x batch
    x bytes per number."""
    sizes = {
        "n_layers": n_layers,
        "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "seq_len": seq_len,
        "batch": batch,
        "bytes_per": bytes_per,
    }
    for name, val in sizes.items():
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per


class CharTokenizer:
    """Characters <-> integer ids, the vocabulary being the sorted set of characters of a text."""

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("text must be non-empty")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"text contains characters outside the vocabulary: {unknown[:5]}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def load_text(name: str = "shakespeare") -> str:
    """A text shipped in hamlib/data (see its README.md for source and licence)."""
    path = DATA / f"{name}.txt"
    if not path.exists():
        available = sorted(p.stem for p in DATA.glob("*.txt"))
        raise ValueError(f"name must be one of {available}, got {name!r}")
    return path.read_text(encoding="utf-8")


def train_gpt(
    model: GPT,
    data: Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.1,
    generator: torch.Generator | None = None,
    progress: Any = None,
) -> list[float]:
    """AdamW on random windows of ``data`` (a 1-D tensor of token ids), cosine learning rate
    decay after a 5% linear warm-up. Returns the training loss of every step."""
    block = model.config.block_size
    if data.dim() != 1 or data.numel() <= block + 1:
        raise ValueError(f"data must be 1-D and longer than block_size + 1 ({block + 1})")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.99),
    )
    warm = max(1, steps // 20)
    losses = []
    model.train()
    steps_iter = range(steps) if progress is None else progress(range(steps))
    for step in steps_iter:
        scale = (
            (step + 1) / warm
            if step < warm
            else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        )
        for group in opt.param_groups:
            group["lr"] = lr * scale
        starts = torch.randint(0, data.numel() - block - 1, (batch_size,), generator=generator)
        x = torch.stack([data[s : s + block] for s in starts])
        y = torch.stack([data[s + 1 : s + block + 1] for s in starts])
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses

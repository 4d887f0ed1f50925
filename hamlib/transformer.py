r"""A decoder-only Transformer written out module by module, each checkable against PyTorch.

Shapes: a batch of sequences of token ids is (batch, seq); activations are (batch, seq, d_model);
per-head tensors are (batch, heads, seq, head_dim). The formulas (attention, the causal mask,
positions) are in :mod:`hamlib.attention`; text and training in :mod:`hamlib.text`.

- :class:`MultiHeadAttention` with grouped-query attention (``n_kv_heads``) and a KV cache, and
  the two readings of a proposed "Hamiltonian attention" (``score``) that Chapter 4 trains.
- :class:`RMSNorm`, :class:`FeedForward` (GELU or SwiGLU), :class:`Block` (pre- or post-norm).
- :class:`GPT` (configured by :class:`GPTConfig`) with :meth:`GPT.generate`, with or without
  the KV cache.
- :func:`kv_cache_bytes`, :func:`count_parameters`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamlib import _checks as check
from hamlib.attention import apply_rope, attention, causal_mask, sinusoidal_positions

__all__ = [
    "GPT",
    "Block",
    "FeedForward",
    "GPTConfig",
    "KVCache",
    "MultiHeadAttention",
    "RMSNorm",
    "count_parameters",
    "kv_cache_bytes",
]


@dataclass
class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer, each
    (batch, n_kv_heads, seq, head_dim). Grows by concatenation in :meth:`update`."""

    layers: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)

    def length(self, layer: int = 0) -> int:
        """The number of tokens cached for ``layer`` (0 before its first update)."""
        layer = check.integer("layer", layer, minimum=0)
        entry = self.layers[layer] if layer < len(self.layers) else None
        return 0 if entry is None else entry[0].shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new tokens' ``k`` and ``v`` to ``layer``'s; return all its keys and values."""
        layer = check.integer("layer", layer, minimum=0)
        while len(self.layers) <= layer:
            self.layers.append(None)
        entry = self.layers[layer]
        if entry is not None:
            k, v = torch.cat([entry[0], k], dim=2), torch.cat([entry[1], v], dim=2)
        self.layers[layer] = (k, v)
        return k, v

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers if kv for t in kv)


Score = Literal["softmax", "hamiltonian-formula", "hamiltonian-code", "temperature"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``n_kv_heads`` key/value heads shared by groups of query heads:
    n_kv_heads = n_heads is multi-head attention, 1 is multi-query attention (Shazeer, 2019), in
    between grouped-query attention (Ainslie et al., 2023). Optional RoPE on queries and keys.

    The attention itself runs through ``F.scaled_dot_product_attention`` (PyTorch's fused
    kernel), which computes the same function as :func:`attention`; :func:`attention` is used
    when the weights are asked for.

    ``score`` other than ``"softmax"`` subtracts a "Hamiltonian" term from the scores, with
    learnable scalars alpha, beta, gamma (initialized 0.5, 0.5, 1.0) and a fixed ``lam``; see
    :meth:`hamiltonian_scores`. ``"temperature"`` is the control: the formula's gamma term alone,
    a learnable temperature."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope: bool = False,
        rope_base: float = 10000.0,
        bias: bool = False,
        score: Score = "softmax",
        lam: float = 0.1,
    ) -> None:
        super().__init__()
        d_model = check.integer("d_model", d_model, minimum=1)
        n_heads = check.integer("n_heads", n_heads, minimum=1)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        n_kv_heads = check.integer("n_kv_heads", n_kv_heads, minimum=1)
        rope, bias = check.boolean("rope", rope), check.boolean("bias", bias)
        rope_base = check.positive("rope_base", rope_base)
        self.score = check.one_of("score", score, get_args(Score))
        self.lam = check.real("lam", lam)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if n_heads % n_kv_heads:
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
        if self.score in ("hamiltonian-formula", "hamiltonian-code"):  # the seed's initial values
            self.alpha, self.beta = nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(0.5))
        if self.score != "softmax":
            self.gamma = nn.Parameter(torch.tensor(1.0))

    def hamiltonian_scores(self, q: Tensor, k: Tensor) -> Tensor:
        r"""Scores (batch, heads, s_q, s_k) of the proposed "Hamiltonian attention" (q, k per head).

        ``"hamiltonian-formula"``, as the proposal writes it: :math:`q_i\cdot k_j/\sqrt{d_h}
        - \lambda(\alpha|q_i|^2 + \beta|k_j|^2 + \gamma\, q_i\cdot k_j)`.
        ``"hamiltonian-code"``, as its code computes it: ``H = alpha*|Q|^2 + beta*|K|^2 +
        gamma*sum(Q*K, -1)`` pairs each position with itself and ``H.unsqueeze(-2)`` subtracts it
        from every query's row, a bias per *key* j:
        :math:`q_i\cdot k_j/\sqrt{d_{model}} - \lambda(\alpha|q_j|^2 + \beta|k_j|^2 +
        \gamma\, q_j\cdot k_j)`, with the model width in the scale, as that code has it.
        ``"temperature"``: :math:`(1/\sqrt{d_h} - \lambda\gamma)\, q_i\cdot k_j`."""
        qk = q @ k.transpose(-2, -1)
        if self.score == "temperature":
            return qk * (1 / math.sqrt(self.head_dim) - self.lam * self.gamma)
        qq, kk = (q * q).sum(-1), (k * k).sum(-1)
        if self.score == "hamiltonian-formula":
            h = self.alpha * qq[..., :, None] + self.beta * kk[..., None, :] + self.gamma * qk
            return qk / math.sqrt(self.head_dim) - self.lam * h
        if q.shape[-2] != k.shape[-2]:
            raise ValueError("hamlib does not cache the seed's per-key bias: no KV cache")
        h = self.alpha * qq + self.beta * kk + self.gamma * (q * k).sum(-1)
        return qk / math.sqrt(self.d_model) - self.lam * h.unsqueeze(-2)

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
            score=self.score,
            lam=self.lam,
        ).to(self.q_proj.weight)
        group = self.n_heads // self.n_kv_heads
        with torch.no_grad():
            for name in ("q_proj", "o_proj"):
                getattr(full, name).load_state_dict(getattr(self, name).state_dict())
            for name in ("alpha", "beta", "gamma"):
                if hasattr(self, name):
                    getattr(full, name).copy_(getattr(self, name))
            for name in ("k_proj", "v_proj"):
                src: nn.Linear = getattr(self, name)
                dst: nn.Linear = getattr(full, name)
                w = src.weight.view(self.n_kv_heads, self.head_dim, self.d_model)
                dst.weight.copy_(w.repeat_interleave(group, dim=0).reshape(self.d_model, -1))
                if src.bias is not None:
                    b = src.bias.view(self.n_kv_heads, self.head_dim)
                    dst.bias.copy_(b.repeat_interleave(group, dim=0).reshape(-1))
        return full

    def _check_forward_args(
        self, x: Tensor, causal: bool, cache: KVCache | None, layer: int, return_weights: bool
    ) -> None:
        check.tensor("x", x, floating=True, shape=(None, None, self.d_model))
        check.boolean("causal", causal)
        if cache is not None:
            check.instance("cache", cache, KVCache)
        check.integer("layer", layer, minimum=0)
        check.boolean("return_weights", return_weights)

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
        self._check_forward_args(x, causal, cache, layer, return_weights)
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            past = 0 if cache is None else cache.length(layer)
            pos = torch.arange(past, past + s, device=x.device)
            q, k = apply_rope(q, pos, self.rope_base), apply_rope(k, pos, self.rope_base)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        group = self.n_heads // self.n_kv_heads
        if group > 1:  # each key/value head serves `group` consecutive query heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        weights: Tensor | None = None
        if self.score != "softmax":
            scores = self.hamiltonian_scores(q, k)
            if causal:
                allowed = causal_mask(s, k.shape[2], x.device)
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            out = probs @ v
            weights = probs if return_weights else None
        elif return_weights:
            out, weights = attention(q, k, v, causal=causal, return_weights=True)
        else:  # the same function as `attention` (tested), fused by PyTorch
            s_k = k.shape[2]  # new queries are the last s of s_k positions
            keep = causal_mask(s, s_k, x.device) if causal and s != s_k else None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=keep, is_causal=causal and keep is None
            )
        out = self.o_proj(out.transpose(1, 2).reshape(b, s, self.d_model))
        return out if weights is None else (out, weights)


class RMSNorm(nn.Module):
    r"""Zhang & Sennrich (2019): :math:`y = x / \sqrt{\mathrm{mean}(x^2) + \epsilon}\cdot w`.
    No centring, no bias."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = check.positive("eps", eps)
        self.weight = nn.Parameter(torch.ones(check.integer("d", d, minimum=1)))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


FFNKind = Literal["gelu", "swiglu"]
Init = Literal["gpt2", "normal"]
NormPlacement = Literal["pre", "post"]
NormType = Literal["layer", "rms"]
Positions = Literal["learned", "sinusoidal", "rope", "none"]


class FeedForward(nn.Module):
    r"""GELU: :math:`W_2\,\mathrm{GELU}(W_1 x)`. SwiGLU (Shazeer, 2020):
    :math:`W_2(\mathrm{SiLU}(W_1 x) \odot W_3 x)`, three matrices, so at equal parameters its
    hidden width is 2/3 of GELU's."""

    def __init__(self, d_model: int, d_hidden: int, kind: FFNKind = "gelu") -> None:
        super().__init__()
        d_model = check.integer("d_model", d_model, minimum=1)
        d_hidden = check.integer("d_hidden", d_hidden, minimum=1)
        self.kind = check.one_of("kind", kind, get_args(FFNKind))
        self.w1 = nn.Linear(d_model, d_hidden, bias=False)
        self.w2 = nn.Linear(d_hidden, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_hidden, bias=False) if kind == "swiglu" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.w3 is None:
            return self.w2(F.gelu(self.w1(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`, immutable; every field, and every relation between fields
    that a GPT needs, is checked when the config is made.

    - ``vocab_size``: number of token ids.
    - ``block_size``: the longest sequence, in tokens (the learned and sinusoidal tables' length).
    - ``d_model``: width of the residual stream.
    - ``n_layers``: number of blocks.
    - ``n_heads``: query heads per attention layer; must divide ``d_model``.
    - ``n_kv_heads``: key/value heads (grouped-query attention); None means ``n_heads``.
    - ``d_hidden``: width of the feed-forward layer; None means :attr:`ffn_hidden`'s default.
    - ``ffn``: ``"gelu"`` (two matrices) or ``"swiglu"`` (three).
    - ``norm``: ``"pre"`` (normalize each branch's input) or ``"post"`` (after the residual sum).
    - ``norm_type``: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).
    - ``positions``: ``"learned"``, ``"sinusoidal"``, ``"rope"`` (rotary) or ``"none"``.
    - ``tie_weights``: share the token embedding with the output layer.
    - ``init``: ``"gpt2"``: every weight N(0, 0.02^2) and the projections that write into the
      residual stream (attention's ``o_proj``, the FFN's ``w2``) scaled by 1/sqrt(2 n_layers),
      GPT-2's "1/sqrt(N), N the number of residual layers" (Radford et al., 2019);
      ``"normal"``: N(0, 0.02^2) everywhere.
    - ``attention``: ``"softmax"``, or a Hamiltonian variant (:class:`MultiHeadAttention`);
      ``lam``: its lambda.
    """

    vocab_size: int
    block_size: int = 128
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    d_hidden: int | None = None
    ffn: FFNKind = "gelu"
    norm: NormPlacement = "pre"
    norm_type: NormType = "layer"
    positions: Positions = "learned"
    tie_weights: bool = True
    init: Init = "gpt2"
    attention: Score = "softmax"
    lam: float = 0.1

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:  # frozen: the checked, converted value
            object.__setattr__(self, name, value)

        for name in ("vocab_size", "block_size", "d_model", "n_layers", "n_heads"):
            put(name, check.integer(name, getattr(self, name), minimum=1))
        for name in ("n_kv_heads", "d_hidden"):
            if getattr(self, name) is not None:
                put(name, check.integer(name, getattr(self, name), minimum=1))
        put("ffn", check.one_of("ffn", self.ffn, get_args(FFNKind)))
        put("norm", check.one_of("norm", self.norm, get_args(NormPlacement)))
        put("norm_type", check.one_of("norm_type", self.norm_type, get_args(NormType)))
        put("positions", check.one_of("positions", self.positions, get_args(Positions)))
        put("tie_weights", check.boolean("tie_weights", self.tie_weights))
        put("init", check.one_of("init", self.init, get_args(Init)))
        put("attention", check.one_of("attention", self.attention, get_args(Score)))
        put("lam", check.real("lam", self.lam))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        kv = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        if self.n_heads % kv:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({kv})")
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.d_model // self.n_heads}")
        if self.positions == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")

    @property
    def ffn_hidden(self) -> int:
        """The feed-forward width: ``d_hidden``, or by default 4 d_model for GELU and 8/3 d_model
        (rounded) for SwiGLU, which has three matrices: the same parameters either way."""
        if self.d_hidden is not None:
            return self.d_hidden
        return 4 * self.d_model if self.ffn == "gelu" else round(8 * self.d_model / 3)


def _norm(cfg: GPTConfig) -> nn.Module:
    return RMSNorm(cfg.d_model) if cfg.norm_type == "rms" else nn.LayerNorm(cfg.d_model)


class Block(nn.Module):
    """Pre-norm: x + f(norm(x)) (the residual stream is never normalized). Post-norm (the
    original Transformer): norm(x + f(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.norm1, self.norm2 = _norm(cfg), _norm(cfg)
        self.attn = MultiHeadAttention(
            cfg.d_model,
            cfg.n_heads,
            cfg.n_kv_heads,
            rope=cfg.positions == "rope",
            score=cfg.attention,
            lam=cfg.lam,
        )
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_hidden, cfg.ffn)

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
        check.instance("config", config, GPTConfig)
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
        self.norm_f = _norm(cfg) if cfg.norm == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.apply(self._init)
        if cfg.init == "gpt2":  # the layers that write into the residual stream, 2 per block
            with torch.no_grad():
                for block in self.blocks:
                    assert isinstance(block, Block)
                    block.attn.o_proj.weight.mul_((2 * cfg.n_layers) ** -0.5)
                    block.ffn.w2.weight.mul_((2 * cfg.n_layers) ** -0.5)

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
        check.tensor("idx", idx, dtype=torch.long, ndim=2)
        if targets is not None:
            check.tensor("targets", targets, dtype=torch.long, shape=tuple(idx.shape))
        if cache is not None:
            check.instance("cache", cache, KVCache)
        past = 0 if cache is None else cache.length()
        s = idx.shape[1]
        if past + s > self.config.block_size and self.config.positions in ("learned", "sinusoidal"):
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
        check.tensor("idx", idx, dtype=torch.long, ndim=2)
        max_new_tokens = check.integer("max_new_tokens", max_new_tokens, minimum=0)
        use_kv_cache = check.boolean("use_kv_cache", use_kv_cache)
        temperature = check.nonnegative("temperature", temperature)
        check.generator("generator", generator)  # None stays None: torch's default for the device
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
    return 2 * math.prod(check.integer(name, n, minimum=1) for name, n in sizes.items())

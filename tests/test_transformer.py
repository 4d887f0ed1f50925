"""hamlib.transformer against PyTorch's own layers and against the identities they must satisfy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from hamlib import attention as AT
from hamlib import text as TX
from hamlib import transformer as T

f64 = torch.float64


def rnd(*shape: int, seed: int = 0, dtype: torch.dtype = f64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("causal", [False, True])
@settings(max_examples=15, deadline=None)
@given(s=st.integers(1, 20), d=st.integers(1, 16), heads=st.integers(1, 3))
def test_attention_equals_sdpa(causal: bool, s: int, d: int, heads: int) -> None:
    q, k, v = rnd(2, heads, s, d), rnd(2, heads, s, d, seed=1), rnd(2, heads, s, d, seed=2)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(AT.attention(q, k, v, causal=causal), expected)


def test_attention_masks_and_weights() -> None:
    q, k, v = rnd(1, 4, 8), rnd(1, 6, 8, seed=1), rnd(1, 6, 3, seed=2)
    keep = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[:, 0] = True
    out, w = AT.attention(q, k, v, mask=keep, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, dtype=f64))
    assert (w[0][~keep] == 0).all()
    additive = torch.zeros(4, 6, dtype=f64).masked_fill(~keep, -math.inf)
    torch.testing.assert_close(AT.attention(q, k, v, mask=additive), out)
    # causal with more keys than queries: the queries are the last positions
    w_c = AT.attention(q, k, v, causal=True, return_weights=True)[1]
    assert (w_c[0].triu(3) == 0).all() and (w_c[0, :, :3] > 0).all()


def test_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="share the last dimension"):
        AT.attention(rnd(2, 3), rnd(2, 4), rnd(2, 4))
    with pytest.raises(ValueError, match="same length"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(5, 3))
    with pytest.raises(ValueError, match="at least as many keys"):
        AT.attention(rnd(4, 3), rnd(2, 3), rnd(2, 3), causal=True)
    with pytest.raises(ValueError, match=r"v must have shape \(\.\.\., seq, dim\)"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(3))
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        AT.attention([[1.0]], rnd(1, 1), rnd(1, 1))
    with pytest.raises(TypeError, match="k must be a floating-point tensor"):
        AT.attention(rnd(2, 3), torch.ones(2, 3, dtype=torch.long), rnd(2, 3))
    with pytest.raises(TypeError, match="v has dtype"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(2, 3, dtype=torch.float32))
    with pytest.raises(TypeError, match="causal"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(2, 3), causal=1)
    with pytest.raises(TypeError, match="return_weights"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(2, 3), return_weights="yes")
    with pytest.raises(TypeError, match="mask"):
        AT.attention(rnd(2, 3), rnd(2, 3), rnd(2, 3), mask=torch.ones(2, 2, dtype=torch.long))


def test_causal_mask_puts_the_queries_last() -> None:
    assert torch.equal(AT.causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert AT.causal_mask(2, 5).tolist() == [[True] * 4 + [False], [True] * 5]
    assert AT.causal_mask(np.int64(1), np.int64(2)).shape == (1, 2)
    with pytest.raises(ValueError, match="s_k must be >= 3"):
        AT.causal_mask(3, 2)
    with pytest.raises(TypeError, match="s_q"):
        AT.causal_mask(2.0, 3)


def test_sinusoidal_positions() -> None:
    pe = AT.sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(50.0)))
    torch.testing.assert_close(pe[:, 1], torch.cos(torch.arange(50.0)))
    torch.testing.assert_close(pe[7, 14], torch.sin(torch.tensor(7 * 10000 ** (-14 / 16))))
    with pytest.raises(ValueError, match="even d_model"):
        AT.sinusoidal_positions(5, 7)
    with pytest.raises(ValueError, match="n_positions"):
        AT.sinusoidal_positions(0, 8)
    with pytest.raises(TypeError, match="d_model"):
        AT.sinusoidal_positions(5, 8.0)
    with pytest.raises(ValueError, match="base"):
        AT.sinusoidal_positions(5, 8, base=0.0)


@st.composite
def positions_and_shift(draw: st.DrawFn) -> tuple[int, int, int]:
    """Two positions m, n and a shift that keeps both non-negative (every example is tested)."""
    m, n = draw(st.integers(0, 500)), draw(st.integers(0, 500))
    return m, n, draw(st.integers(-min(m, n, 200), 200))


@settings(max_examples=20, deadline=None)
@given(positions_and_shift())
def test_rope_scores_depend_on_offset_only(case: tuple[int, int, int]) -> None:
    m, n, shift = case
    q, k = rnd(1, 1, 32), rnd(1, 1, 32, seed=1)

    def score(a: int, b: int) -> torch.Tensor:
        return (AT.apply_rope(q, torch.tensor([a])) * AT.apply_rope(k, torch.tensor([b]))).sum()

    torch.testing.assert_close(score(m, n), score(m + shift, n + shift))


def test_rope_preserves_norms_and_is_identity_at_zero() -> None:
    x = rnd(2, 3, 10, 8)
    y = AT.apply_rope(x, torch.arange(10))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(AT.apply_rope(x, torch.zeros(10)), x)
    with pytest.raises(ValueError, match="head_dim must be even"):
        AT.apply_rope(rnd(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match="one entry per token"):
        AT.apply_rope(rnd(4, 6), torch.arange(5))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., seq, head_dim\)"):
        AT.apply_rope(rnd(6), torch.arange(1))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        AT.apply_rope(torch.ones(4, 6, dtype=torch.long), torch.arange(4))
    with pytest.raises(ValueError, match="base"):
        AT.apply_rope(rnd(4, 6), torch.arange(4), base=-1.0)


def test_mha_equals_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    d, h = 24, 4
    mine = T.MultiHeadAttention(d, h, bias=True).double()
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True, bias=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
        ref.out_proj.weight.copy_(mine.o_proj.weight)
        ref.out_proj.bias.copy_(mine.o_proj.bias)
    x = rnd(2, 9, d)
    causal = torch.ones(9, 9, dtype=torch.bool).triu(1)  # True = masked, torch's convention
    expected, _ = ref(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(mine(x, causal=True), expected)
    assert T.count_parameters(mine) == T.count_parameters(ref) == 4 * d * d + 4 * d


@pytest.mark.parametrize("bias", [False, True])
def test_gqa_equals_mha_with_repeated_kv_heads(bias: bool) -> None:
    torch.manual_seed(0)
    d, h, kv = 32, 8, 2
    gqa = T.MultiHeadAttention(d, h, n_kv_heads=kv, rope=True, bias=bias).double()
    mha = gqa.expand_kv_heads()
    assert mha.n_kv_heads == h and mha.q_proj.weight.dtype == f64
    x = rnd(3, 7, d)
    torch.testing.assert_close(gqa(x), mha(x))
    hd = d // h
    assert T.count_parameters(gqa) == 2 * d * d + 2 * d * kv * hd + bias * (2 * d + 2 * kv * hd)
    assert T.count_parameters(mha) == 4 * d * d + bias * 4 * d


def test_mha_rejects_bad_heads() -> None:
    with pytest.raises(ValueError, match="multiple of n_heads"):
        T.MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        T.MultiHeadAttention(32, 8, n_kv_heads=3)
    with pytest.raises(ValueError, match="even head_dim"):
        T.MultiHeadAttention(12, 4, rope=True)
    with pytest.raises(ValueError, match="n_heads must be >= 1"):
        T.MultiHeadAttention(8, 0)
    with pytest.raises(TypeError, match="d_model"):
        T.MultiHeadAttention(8.0, 2)
    with pytest.raises(ValueError, match="n_kv_heads"):
        T.MultiHeadAttention(8, 2, n_kv_heads=0)
    with pytest.raises(TypeError, match="rope"):
        T.MultiHeadAttention(8, 2, rope=1)
    with pytest.raises(ValueError, match="rope_base"):
        T.MultiHeadAttention(8, 2, rope_base=0.0)
    with pytest.raises(TypeError, match="bias"):
        T.MultiHeadAttention(8, 2, bias=None)
    assert T.MultiHeadAttention(np.int64(8), np.int64(2)).head_dim == 4
    mha = T.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, \*, 8\)"):
        mha(rnd(2, 3, 7, dtype=torch.float32))
    with pytest.raises(TypeError, match="causal"):
        mha(rnd(2, 3, 8, dtype=torch.float32), causal=None)
    with pytest.raises(TypeError, match="cache must be a KVCache"):
        mha(rnd(2, 3, 8, dtype=torch.float32), cache=[])
    with pytest.raises(ValueError, match="layer"):
        mha(rnd(2, 3, 8, dtype=torch.float32), cache=T.KVCache(), layer=-1)


def test_kv_cache_update_appends_per_layer() -> None:
    cache = T.KVCache()
    k, v = rnd(1, 2, 3, 4), rnd(1, 2, 3, 4, seed=1)
    assert cache.length(1) == 0
    assert cache.update(1, k, v) == (k, v)
    assert cache.layers[0] is None and cache.length() == 0 and cache.length(1) == 3
    k2, v2 = cache.update(1, k[:, :, :1], v[:, :, :1])
    assert k2.shape == (1, 2, 4, 4) and torch.equal(v2[:, :, 3], v[:, :, 0])
    assert cache.nbytes() == 2 * 1 * 2 * 4 * 4 * 8
    with pytest.raises(TypeError, match="layer"):
        cache.update(1.0, k, v)


def test_rmsnorm_equals_torch() -> None:
    x = rnd(4, 10)
    mine = T.RMSNorm(10).double()
    ref = torch.nn.RMSNorm(10, eps=1e-6).double()
    with torch.no_grad():
        mine.weight.copy_(rnd(10, seed=1))
        ref.weight.copy_(mine.weight)
    torch.testing.assert_close(mine(x), ref(x))
    with pytest.raises(ValueError, match="eps"):
        T.RMSNorm(10, eps=0.0)
    with pytest.raises(TypeError, match="d must be an int"):
        T.RMSNorm(10.0)


def test_feedforward_parameter_counts() -> None:
    assert T.count_parameters(T.FeedForward(48, 192, "gelu")) == 2 * 48 * 192
    assert T.count_parameters(T.FeedForward(48, 128, "swiglu")) == 3 * 48 * 128
    with pytest.raises(ValueError, match="kind must be"):
        T.FeedForward(4, 4, "relu")
    with pytest.raises(ValueError, match="d_hidden"):
        T.FeedForward(4, 0)
    with pytest.raises(TypeError, match="d_model"):
        T.FeedForward(True, 4)


CONFIGS = [
    {"positions": "learned"},
    {"positions": "rope", "n_kv_heads": 2, "norm_type": "rms", "ffn": "swiglu"},
    {"positions": "sinusoidal", "norm": "post"},
    {"positions": "none", "n_kv_heads": 1},
]


@pytest.mark.parametrize("extra", CONFIGS)
def test_kv_cache_gives_the_same_logits_and_tokens(extra: dict) -> None:
    torch.manual_seed(0)
    cfg = T.GPTConfig(vocab_size=11, block_size=24, d_model=16, n_layers=2, n_heads=4, **extra)
    model = T.GPT(cfg).double().eval()
    idx = torch.randint(0, 11, (2, 20))
    full, _ = model(idx)
    cache = T.KVCache()
    steps = [model(idx[:, :5], cache=cache)[0]]
    for t in range(5, 20):
        steps.append(model(idx[:, t : t + 1], cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert cache.length() == 20
    assert cache.nbytes() == T.kv_cache_bytes(2, cfg.n_kv_heads or 4, 4, 20, batch=2, bytes_per=8)
    prompt = idx[:, :4]
    a = model.generate(prompt, 15, use_kv_cache=True, temperature=0)
    b = model.generate(prompt, 15, use_kv_cache=False, temperature=0)
    assert torch.equal(a, b) and a.shape == (2, 19)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        model.generate(prompt, 10, use_kv_cache=True, generator=g1),
        model.generate(prompt, 10, use_kv_cache=False, generator=g2),
    )


def test_gpt_rejects_bad_input() -> None:
    cfg = T.GPTConfig(vocab_size=5, block_size=8, d_model=8, n_layers=1, n_heads=2)
    model = T.GPT(cfg)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.generate(ids, 5)
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="idx must have dtype int64"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="idx must be 2-D"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must have shape"):
        model(ids, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="cache must be a KVCache"):
        model(ids, cache={})
    with pytest.raises(TypeError, match="max_new_tokens"):
        model.generate(ids, 2.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ids, 2, temperature=-1.0)
    with pytest.raises(TypeError, match="use_kv_cache"):
        model.generate(ids, 2, use_kv_cache=0)
    with pytest.raises(TypeError, match="generator"):
        model.generate(ids, 2, generator=0)
    with pytest.raises(TypeError, match="GPTConfig"):
        T.GPT({"vocab_size": 5})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field, value, exc",
    [
        ("vocab_size", 0, ValueError),
        ("vocab_size", 5.0, TypeError),
        ("block_size", True, TypeError),
        ("d_model", -1, ValueError),
        ("n_layers", "2", TypeError),
        ("n_heads", 0, ValueError),
        ("n_kv_heads", 0, ValueError),
        ("d_hidden", 2.5, TypeError),
        ("ffn", "relu", ValueError),
        ("norm", "sandwich", ValueError),
        ("norm_type", "batch", ValueError),
        ("positions", "alibi", ValueError),
        ("positions", None, TypeError),
        ("tie_weights", 1, TypeError),
    ],
)
def test_gpt_config_checks_every_field(field: str, value: object, exc: type) -> None:
    kwargs = {"vocab_size": 5, field: value}
    with pytest.raises(exc, match=field):
        T.GPTConfig(**kwargs)  # type: ignore[arg-type]


def test_gpt_config_resolves_the_hidden_width_without_changing_its_fields() -> None:
    gelu = T.GPTConfig(vocab_size=5, d_model=48)
    swiglu = T.GPTConfig(vocab_size=5, d_model=48, ffn="swiglu")
    assert gelu.d_hidden is None and gelu.ffn_hidden == 192
    assert swiglu.d_hidden is None and swiglu.ffn_hidden == 128
    assert T.GPTConfig(vocab_size=5, d_hidden=10, ffn="swiglu").ffn_hidden == 10
    assert T.GPT(swiglu).blocks[0].ffn.w1.out_features == 128
    sized = T.GPTConfig(vocab_size=np.int64(5), d_model=np.int64(16))
    assert type(sized.vocab_size) is int and type(sized.d_model) is int


def test_weight_tying_and_parameter_count() -> None:
    cfg = T.GPTConfig(vocab_size=50, block_size=16, d_model=32, n_layers=2, n_heads=4)
    model = T.GPT(cfg)
    assert model.head.weight is model.tok_emb.weight
    per_layer = 4 * 32 * 32 + 2 * 32 * 128 + 4 * 32  # attention, MLP, two LayerNorms
    assert T.count_parameters(model) == 50 * 32 + 16 * 32 + 2 * per_layer + 2 * 32


def test_kv_cache_bytes_formula() -> None:
    # Llama 2 7B: 32 layers, 32 heads of 128, 4096 tokens, fp16: 2 GiB per sequence
    assert T.kv_cache_bytes(32, 32, 128, 4096) == 2 * 2**30
    assert T.kv_cache_bytes(np.int64(32), 32, 128, 4096) == 2 * 2**30
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        T.kv_cache_bytes(1, 1, 1, 0)
    with pytest.raises(TypeError, match="bytes_per"):
        T.kv_cache_bytes(1, 1, 1, 1, bytes_per=2.0)


def test_tokenizer_and_text() -> None:
    text = TX.load_text()
    tok = TX.CharTokenizer(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text[:500])) == text[:500]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("~")
    with pytest.raises(ValueError, match="name must be one of"):
        TX.load_text("ulysses")
    with pytest.raises(TypeError, match="name must be one of"):
        TX.load_text(3)
    with pytest.raises(TypeError, match="text must be a str"):
        TX.CharTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        TX.CharTokenizer("")


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    text = TX.load_text()[:20_000]
    tok = TX.CharTokenizer(text)
    cfg = T.GPTConfig(vocab_size=tok.vocab_size, block_size=32, d_model=32, n_layers=1, n_heads=2)
    losses = TX.train_gpt(T.GPT(cfg), tok.encode(text), steps=60, batch_size=16)
    assert losses[0] > math.log(tok.vocab_size) - 0.3
    assert sum(losses[-10:]) / 10 < losses[0] - 0.8


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 1.5}, TypeError, "steps"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": "3e-3"}, TypeError, "lr"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"generator": 1}, TypeError, "generator"),
        ({"progress": "tqdm"}, TypeError, "progress"),
        ({"data": torch.arange(8)}, ValueError, "block_size \\+ 1 = 9"),
        ({"warmup": -0.1}, ValueError, "warmup"),
        ({"data": torch.arange(20.0)}, TypeError, "data must have dtype int64"),
        ({"data": torch.zeros(2, 20, dtype=torch.long)}, ValueError, "data must be 1-D"),
        ({"model": None}, TypeError, "model must be a GPT"),
    ],
)
def test_train_gpt_rejects_bad_input(kwargs: dict, exc: type, name: str) -> None:
    cfg = T.GPTConfig(vocab_size=20, block_size=8, d_model=8, n_layers=1, n_heads=2)
    args = {"model": T.GPT(cfg), "data": torch.arange(20), "steps": 1, **kwargs}
    with pytest.raises(exc, match=name):
        TX.train_gpt(**args)


def test_train_gpt_draws_every_window_including_the_last() -> None:
    # data[i] = i, so a window's first token is its start. Inputs data[s : s + 8] need targets
    # data[s + 1 : s + 9]: with 11 tokens the starts 0, 1 and 2 are all valid, and only they.
    block, n = 8, 11
    starts: set[int] = set()

    class Recording(T.GPT):
        def forward(self, idx, targets=None, cache=None):  # type: ignore[no-untyped-def]
            starts.update(idx[:, 0].tolist())
            assert torch.equal(targets, idx + 1)
            return super().forward(idx, targets, cache)

    cfg = T.GPTConfig(vocab_size=n, block_size=block, d_model=8, n_layers=1, n_heads=2)
    g = torch.Generator().manual_seed(0)
    TX.train_gpt(Recording(cfg), torch.arange(n), steps=4, batch_size=16, generator=g)
    assert starts == {0, 1, 2}
    # the shortest usable text is one window: block_size + 1 tokens
    assert len(TX.train_gpt(T.GPT(cfg), torch.arange(block + 1), steps=2, batch_size=2)) == 2


@pytest.mark.parametrize("n_kv", [4, 2])
def test_mha_fused_path_equals_the_written_out_attention(n_kv: int) -> None:
    torch.manual_seed(0)
    mha = T.MultiHeadAttention(16, 4, n_kv_heads=n_kv, rope=True).double()
    x = rnd(2, 9, 16)
    for causal in (False, True):
        fused = mha(x, causal=causal)
        written, weights = mha(x, causal=causal, return_weights=True)
        torch.testing.assert_close(fused, written)
        assert weights.shape == (2, 4, 9, 9)


def test_gpt_config_checks_its_relations_and_is_frozen() -> None:
    bad = [
        ({"d_model": 30, "n_heads": 4}, "d_model \\(30\\) must be a multiple of n_heads \\(4\\)"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_heads \\(4\\) must be a multiple of n_kv_heads"),
        ({"d_model": 12, "n_heads": 4, "positions": "rope"}, "RoPE needs an even head_dim, got 3"),
        ({"d_model": 9, "n_heads": 1, "positions": "sinusoidal"}, "need an even d_model"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            T.GPTConfig(vocab_size=5, **kwargs)
    cfg = T.GPTConfig(vocab_size=np.int64(5))
    assert type(cfg.vocab_size) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 8  # type: ignore[misc]


def test_train_gpt_warmup_zero_and_bad_warmup() -> None:
    cfg = T.GPTConfig(vocab_size=11, block_size=8, d_model=8, n_layers=1, n_heads=2)
    assert len(TX.train_gpt(T.GPT(cfg), torch.arange(11), steps=3, batch_size=2, warmup=0)) == 3
    with pytest.raises(ValueError, match="^warmup"):
        TX.train_gpt(T.GPT(cfg), torch.arange(11), steps=3, warmup=1.0)


def _ngram_brute(train: list[int], test: list[int], n: int, v: int, alpha: float) -> float:
    from collections import Counter

    full = Counter(tuple(train[i : i + n]) for i in range(len(train) - n + 1))
    ctx = Counter(tuple(train[i : i + n - 1]) for i in range(len(train) - n + 1))
    nll = [
        -math.log(
            (full[tuple(test[i : i + n])] + alpha) / (ctx[tuple(test[i : i + n - 1])] + alpha * v)
        )
        for i in range(len(test) - n + 1)
    ]
    return sum(nll) / len(nll)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ngram_loss_equals_counting_by_hand(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    train = torch.randint(0, 5, (300,), generator=g)
    test = torch.randint(0, 5, (80,), generator=g)
    got = TX.ngram_loss(train, test, n, 5, alpha=0.3)
    assert got == pytest.approx(_ngram_brute(train.tolist(), test.tolist(), n, 5, 0.3), rel=1e-12)


def test_ngram_loss_limits_and_errors() -> None:
    ids = torch.arange(10) % 4
    # alpha -> infinity is the uniform guess, log V, for every n
    assert TX.ngram_loss(ids, ids, 3, 4, alpha=1e12) == pytest.approx(math.log(4), rel=1e-9)
    # a deterministic sequence seen in training: the trigram is almost certain
    assert TX.ngram_loss(ids, ids, 3, 4, alpha=1e-9) < 1e-6
    with pytest.raises(ValueError, match="^test"):
        TX.ngram_loss(ids, torch.tensor([0, 7]), 1, 4)
    with pytest.raises(ValueError, match="^n "):
        TX.ngram_loss(ids, ids, 0, 4)


def _seed_code_attention(Q: Tensor, K: Tensor, V: Tensor, d_model: int, lam: float) -> Tensor:
    """The source's HamiltonianAttention.forward, line by line (no mask in the source)."""
    attn_scores = torch.matmul(Q, K.transpose(-2, -1)) / math.sqrt(d_model)
    alpha, beta, gamma = 0.5, 0.5, 1.0
    H_Q = torch.norm(Q, p=2, dim=-1) ** 2
    H_K = torch.norm(K, p=2, dim=-1) ** 2
    H_QK = torch.sum(Q * K, dim=-1)
    H = alpha * H_Q + beta * H_K + gamma * H_QK
    constrained_scores = attn_scores - lam * H.unsqueeze(-2)
    return torch.matmul(torch.softmax(constrained_scores, dim=-1), V)


def test_hamiltonian_scores_match_the_source_formula_and_code() -> None:
    from hamlib import hamiltonian as hm

    torch.manual_seed(0)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    for score in ("hamiltonian-formula", "hamiltonian-code"):
        mha = T.MultiHeadAttention(16, 2, score=score, lam=0.1).double()
        out = mha(x, causal=False)
        q = mha.q_proj(x).view(2, 7, 2, 8).transpose(1, 2)
        k = mha.k_proj(x).view(2, 7, 2, 8).transpose(1, 2)
        v = mha.v_proj(x).view(2, 7, 2, 8).transpose(1, 2)
        if score == "hamiltonian-formula":
            heads = torch.stack(
                [
                    torch.stack(
                        [
                            hm.hamiltonian_attention(q[b, h], k[b, h], v[b, h], 0.1, 0.5, 0.5, 1.0)
                            for h in range(2)
                        ]
                    )
                    for b in range(2)
                ]
            )
        else:
            heads = _seed_code_attention(q, k, v, 16, 0.1)
        ref = mha.o_proj(heads.transpose(1, 2).reshape(2, 7, 16))
        assert (out - ref).abs().max().item() < 1e-12
        # alpha cancels in the formula (a per-query constant), not in the code (a per-key bias)
        with torch.no_grad():
            mha.alpha.fill_(-3.0)
        moved = (mha(x, causal=False) - out).abs().max().item()
        assert (moved < 1e-12) == (score == "hamiltonian-formula")


def test_hamiltonian_code_refuses_a_kv_cache_and_causal_rows_sum_to_one() -> None:
    torch.manual_seed(0)
    mha = T.MultiHeadAttention(16, 2, score="hamiltonian-code").double()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    cache = T.KVCache()
    mha(x, cache=cache)
    with pytest.raises(ValueError, match="KV cache"):
        mha(x[:, :1], cache=cache)
    _, w = mha(x, return_weights=True)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 5, dtype=torch.float64))
    assert (w.triu(1) == 0).all()
    with pytest.raises(ValueError, match="^score"):
        T.MultiHeadAttention(16, 2, score="hamilton")


def test_gpt2_init_scales_the_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = dict(vocab_size=11, d_model=256, n_layers=8, n_heads=4)
    gpt2, plain = T.GPT(T.GPTConfig(**cfg)), T.GPT(T.GPTConfig(**cfg, init="normal"))
    for model, std in ((gpt2, 0.02 / 4), (plain, 0.02)):
        for block in model.blocks:
            for w in (block.attn.o_proj.weight, block.ffn.w2.weight, block.attn.q_proj.weight):
                want = 0.02 if w is block.attn.q_proj.weight else std
                assert w.std().item() == pytest.approx(want, rel=0.03)


def test_temperature_control_is_the_formula_without_its_norm_terms() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    formula = T.MultiHeadAttention(16, 2, score="hamiltonian-formula").double()
    control = T.MultiHeadAttention(16, 2, score="temperature").double()
    control.load_state_dict(
        {k: v for k, v in formula.state_dict().items() if k not in ("alpha", "beta")}
    )
    with torch.no_grad():
        formula.beta.zero_()  # alpha cancels anyway; with beta = 0 only the temperature is left
    assert (formula(x) - control(x)).abs().max().item() < 1e-12
    assert not hasattr(control, "alpha") and control.expand_kv_heads().gamma.item() == 1.0


def test_split_texts_shares_one_tokenizer_and_splits_each_text():
    tok, split = TX.split_texts(["shakespeare", "macbeth"], 0.9)
    assert set(split) == {"shakespeare_train", "shakespeare_val", "macbeth_train", "macbeth_val"}
    for name in ("shakespeare", "macbeth"):
        text = TX.load_text(name)
        joined = torch.cat([split[f"{name}_train"], split[f"{name}_val"]])
        assert tok.decode(joined) == text
        assert len(split[f"{name}_train"]) == int(0.9 * len(text))
    assert "X" in tok.chars  # Macbeth's LENNOX: a character only the second text has
    with pytest.raises(ValueError, match="names"):
        TX.split_texts("macbeth")
    with pytest.raises(ValueError, match="train_fraction"):
        TX.split_texts(["macbeth"], 1.0)

"""hamlib.transformer against PyTorch's own layers and against the identities they must satisfy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

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
    torch.testing.assert_close(T.attention(q, k, v, causal=causal), expected)


def test_attention_masks_and_weights() -> None:
    q, k, v = rnd(1, 4, 8), rnd(1, 6, 8, seed=1), rnd(1, 6, 3, seed=2)
    keep = torch.rand(4, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[:, 0] = True
    out, w = T.attention(q, k, v, mask=keep, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, dtype=f64))
    assert (w[0][~keep] == 0).all()
    additive = torch.zeros(4, 6, dtype=f64).masked_fill(~keep, -math.inf)
    torch.testing.assert_close(T.attention(q, k, v, mask=additive), out)
    # causal with more keys than queries: the queries are the last positions
    w_c = T.attention(q, k, v, causal=True, return_weights=True)[1]
    assert (w_c[0].triu(3) == 0).all() and (w_c[0, :, :3] > 0).all()


def test_attention_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="share the last dimension"):
        T.attention(rnd(2, 3), rnd(2, 4), rnd(2, 4))
    with pytest.raises(ValueError, match="same length"):
        T.attention(rnd(2, 3), rnd(2, 3), rnd(5, 3))
    with pytest.raises(ValueError, match="at least as many keys"):
        T.attention(rnd(4, 3), rnd(2, 3), rnd(2, 3), causal=True)


def test_sinusoidal_positions() -> None:
    pe = T.sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    torch.testing.assert_close(pe[:, 0], torch.sin(torch.arange(50.0)))
    torch.testing.assert_close(pe[:, 1], torch.cos(torch.arange(50.0)))
    torch.testing.assert_close(pe[7, 14], torch.sin(torch.tensor(7 * 10000 ** (-14 / 16))))
    with pytest.raises(ValueError, match="even d_model"):
        T.sinusoidal_positions(5, 7)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(-200, 200))
def test_rope_scores_depend_on_offset_only(m: int, n: int, shift: int) -> None:
    q, k = rnd(1, 1, 32), rnd(1, 1, 32, seed=1)

    def score(a: int, b: int) -> torch.Tensor:
        return (T.apply_rope(q, torch.tensor([a])) * T.apply_rope(k, torch.tensor([b]))).sum()

    if m + shift >= 0 and n + shift >= 0:
        torch.testing.assert_close(score(m, n), score(m + shift, n + shift))


def test_rope_preserves_norms_and_is_identity_at_zero() -> None:
    x = rnd(2, 3, 10, 8)
    y = T.apply_rope(x, torch.arange(10))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(T.apply_rope(x, torch.zeros(10)), x)
    with pytest.raises(ValueError, match="head_dim must be even"):
        T.apply_rope(rnd(4, 5), torch.arange(4))
    with pytest.raises(ValueError, match="one entry per token"):
        T.apply_rope(rnd(4, 6), torch.arange(5))


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
    with pytest.raises(ValueError, match="x must be"):
        T.MultiHeadAttention(8, 2)(rnd(2, 3, 7, dtype=torch.float32))


def test_rmsnorm_equals_torch() -> None:
    x = rnd(4, 10)
    mine = T.RMSNorm(10).double()
    ref = torch.nn.RMSNorm(10, eps=1e-6).double()
    with torch.no_grad():
        mine.weight.copy_(rnd(10, seed=1))
        ref.weight.copy_(mine.weight)
    torch.testing.assert_close(mine(x), ref(x))


def test_feedforward_parameter_counts() -> None:
    assert T.count_parameters(T.FeedForward(48, 192, "gelu")) == 2 * 48 * 192
    assert T.count_parameters(T.FeedForward(48, 128, "swiglu")) == 3 * 48 * 128
    with pytest.raises(ValueError, match="kind must be"):
        T.FeedForward(4, 4, "relu")


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
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.generate(torch.zeros(1, 4, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="int64 token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="positions must be one of"):
        T.GPTConfig(vocab_size=5, positions="alibi")
    with pytest.raises(TypeError, match="GPTConfig"):
        T.GPT({"vocab_size": 5})  # type: ignore[arg-type]


def test_weight_tying_and_parameter_count() -> None:
    cfg = T.GPTConfig(vocab_size=50, block_size=16, d_model=32, n_layers=2, n_heads=4)
    model = T.GPT(cfg)
    assert model.head.weight is model.tok_emb.weight
    per_layer = 4 * 32 * 32 + 2 * 32 * 128 + 4 * 32  # attention, MLP, two LayerNorms
    assert T.count_parameters(model) == 50 * 32 + 16 * 32 + 2 * per_layer + 2 * 32


def test_kv_cache_bytes_formula() -> None:
    # Llama 2 7B: 32 layers, 32 heads of 128, 4096 tokens, fp16: 2 GiB per sequence
    assert T.kv_cache_bytes(32, 32, 128, 4096) == 2 * 2**30
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        T.kv_cache_bytes(1, 1, 1, 0)


def test_tokenizer_and_text() -> None:
    text = T.load_text()
    tok = T.CharTokenizer(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text[:500])) == text[:500]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("~")
    with pytest.raises(ValueError, match="name must be one of"):
        T.load_text("ulysses")


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    text = T.load_text()[:20_000]
    tok = T.CharTokenizer(text)
    cfg = T.GPTConfig(vocab_size=tok.vocab_size, block_size=32, d_model=32, n_layers=1, n_heads=2)
    losses = T.train_gpt(T.GPT(cfg), tok.encode(text), steps=60, batch_size=16)
    assert losses[0] > math.log(tok.vocab_size) - 0.3
    assert sum(losses[-10:]) / 10 < losses[0] - 0.8
    with pytest.raises(ValueError, match="steps must be"):
        T.train_gpt(T.GPT(cfg), tok.encode(text), steps=0)


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

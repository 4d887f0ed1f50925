# %% [markdown]
# # 4. Transformers from scratch, every piece checked against PyTorch
#
# A decoder-only Transformer is a short list of parts: scaled dot-product attention, several heads
# of it, position information, a feed-forward network, normalization and residual connections.
# This chapter writes each part, checks it against PyTorch's own implementation or an identity it
# must satisfy, counts its parameters and FLOPs, and then assembles a small character-level GPT and
# trains it on Shakespeare on a laptop CPU. Along the way: why the $1/\sqrt d$, what RoPE does and
# does not do, why grouped-query attention and the KV cache exist, and what claims about them
# survive a measurement.
#
# **You will be able to** write attention, multi-head attention with GQA, sinusoidal and rotary
# positions, RMSNorm and SwiGLU, and verify each; compute parameter counts, FLOPs per token and
# KV-cache memory from a model's configuration; decode with a KV cache and prove it changes
# nothing; and train and sample a small GPT.
#
# **Run time:** under a minute on two CPU cores (the last code cell prints the measured time).

# %%
import hamlib

hamlib.setup()

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hamlib import attention as AT
from hamlib import text as TX
from hamlib import transformer as T
from hamlib.plotting import COLORS, CYCLE

f64 = torch.float64


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# %% [markdown]
# ## 4.1 Scaled dot-product attention
#
# Each query $q_i$ scores every key $k_j$ by a dot product, the scores become weights by a
# softmax, and the output is the weighted mean of the values:
#
# $$
# \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt d} + M\right) V,
# $$
#
# with $M_{ij} = -\infty$ where query $i$ may not see key $j$ (for a causal model, $j > i$).

# %%
hamlib.show_source(AT.attention)

# %%
q, k, v = (randn(2, 4, 37, 16, seed=s, dtype=f64) for s in range(3))
errors = {
    causal: (
        AT.attention(q, k, v, causal=causal)
        - F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    )
    .abs()
    .max()
    .item()
    for causal in (False, True)
}
print({f"causal={c}": hamlib.below(e, 1e-13) for c, e in errors.items()})
hamlib.check(
    "attention equals F.scaled_dot_product_attention, with and without the causal mask, to 1e-13 "
    "in float64",
    max(errors.values()) < 1e-13,
)

# %% [markdown]
# **Why $1/\sqrt d$.** If the entries of $q$ and $k$ are independent with mean 0 and variance 1,
# then $q \cdot k = \sum_{i=1}^d q_i k_i$ has mean 0 and variance $d$. Without the scale, scores
# grow like $\sqrt d$, and the softmax of large scores is nearly one-hot: its gradient vanishes
# and each query copies a single value. Measured over 64 keys:

# %%
dims = [4, 16, 64, 256, 1024]
rows = []
for d in dims:
    qs, ks = randn(2000, d, seed=1), randn(2000, 64, d, seed=2)
    scores = (ks @ qs[:, :, None]).squeeze(-1)  # (2000 queries, 64 keys)
    for scaled in (False, True):
        s = scores / math.sqrt(d) if scaled else scores
        w = torch.softmax(s, dim=-1)
        rows.append((d, scaled, s.var().item(), w.max(-1).values.mean().item()))
print(f"{'d':>5s} {'scaled':>7s} {'var(score)':>11s} {'mean max weight':>16s}")
for d, scaled, var, top in rows:
    print(f"{d:5d} {str(scaled):>7s} {var:11.1f} {top:16.3f}")
var_unscaled = {d: var for d, scaled, var, _ in rows if not scaled}
var_scaled = {d: var for d, scaled, var, _ in rows if scaled}
top = {(d, scaled): t for d, scaled, _, t in rows}
hamlib.check(
    "var(q.k) = d within 10% for every d, and 1/sqrt(d) brings it to 1 within 10%",
    all(abs(var_unscaled[d] / d - 1) < 0.1 and abs(var_scaled[d] - 1) < 0.1 for d in dims),
)
hamlib.check(
    "unscaled, the softmax is nearly one-hot at d = 1024 (mean max weight > 0.9); scaled, the "
    "mean max weight stays the same for every d (within 0.02)",
    top[1024, False] > 0.9
    and max(top[d, True] for d in dims) - min(top[d, True] for d in dims) < 0.02,
)

# %% [markdown]
# ## 4.2 Multi-head attention: shapes, parameters, FLOPs
#
# $h$ heads each attend in a subspace of dimension $d_h = d/h$: the input $x \in \mathbb
# R^{s \times d}$ is projected to $Q, K, V$ by $W_Q, W_K, W_V \in \mathbb R^{d \times d}$, split
# into $h$ tensors of shape $(s, d_h)$, attended separately, concatenated and projected by
# $W_O$. Parameters (without biases): $4d^2$, whatever $h$. FLOPs for a sequence of $s$ tokens,
# counting a multiply-add as two: the four projections $8 s d^2$, the scores $QK^\top$ and the
# weighted sum of values $2 s^2 d$ each, so per token
#
# $$
# \text{FLOPs/token} = 8d^2 + 4sd.
# $$
#
# The first term is the same for every token; the second grows with the context. PyTorch's
# `FlopCounterMode` counts the matrix multiplications that actually run. (The module normally
# hands attention to PyTorch's fused kernel, whose CPU version the counter cannot see inside;
# asking for the weights runs the written-out `attention` above, which it can.)

# %%
hamlib.show_source(T.MultiHeadAttention.forward)

# %%
print(
    f"{'d':>4s} {'heads':>5s} {'s':>5s} {'params':>8s} {'4d^2':>8s} {'FLOPs counted':>14s} "
    f"{'s(8d^2+4sd)':>12s}"
)
ok = []
for d, h, s in [(64, 4, 100), (128, 8, 256), (96, 3, 33)]:
    mha = T.MultiHeadAttention(d, h)
    with FlopCounterMode(display=False) as counter:
        mha(torch.randn(1, s, d), causal=False, return_weights=True)
    params, flops, formula = (
        T.count_parameters(mha),
        counter.get_total_flops(),
        s * (8 * d * d + 4 * s * d),
    )
    ok.append(params == 4 * d * d and flops == formula)
    print(f"{d:4d} {h:5d} {s:5d} {params:8d} {4 * d * d:8d} {flops:14,d} {formula:12,d}")
hamlib.check(
    "parameters = 4d^2 and counted FLOPs = s(8d^2 + 4sd) exactly, for every shape", all(ok)
)

# %% [markdown]
# `T.MultiHeadAttention` with biases computes the same function as `torch.nn.MultiheadAttention`
# given the same weights; `tests/test_transformer.py` checks it to float64 precision.
#
# ## 4.3 Positions: sinusoids and rotations
#
# Attention itself is blind to order. Without position information, permuting the tokens of the
# input permutes the outputs of a (non-causal) attention layer in the same way: it computes a
# function of a *set*.

# %%
mha = T.MultiHeadAttention(32, 4).double()
x = randn(1, 10, 32, dtype=f64)
perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    equivariance = (mha(x[:, perm], causal=False) - mha(x, causal=False)[:, perm]).abs().max()
    causal_gap = (mha(x[:, perm], causal=True) - mha(x, causal=True)[:, perm]).abs().max()
print(
    f"non-causal: max |f(Px) - P f(x)| {hamlib.below(equivariance.item(), 1e-13)}; "
    f"causal: {causal_gap:.2f}"
)
hamlib.check(
    "without positions attention is permutation-equivariant (to 1e-13); a causal mask breaks it",
    equivariance < 1e-13 and causal_gap > 0.01,
)

# %% [markdown]
# (A causal mask makes a token's output depend on how many tokens precede it, so a causal model
# can infer positions even without position embeddings, a known and measurable effect.)
#
# The original Transformer adds a *sinusoidal* vector to each token's embedding,
# $PE_{p,2i} = \sin(p\,\omega_i)$, $PE_{p,2i+1} = \cos(p\,\omega_i)$ with
# $\omega_i = 10000^{-2i/d}$: a clock with $d/2$ hands turning at geometrically spaced speeds.
# *Rotary* embeddings (RoPE, Su et al., 2021) instead rotate each pair of coordinates of the
# queries and keys by the angle $p\,\theta_i$ in every layer. Rotations preserve norms, and since
# $R_m^\top R_n = R_{n-m}$,
#
# $$
# \langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle:
# $$
#
# the score depends on the positions only through $m - n$.

# %%
hamlib.show_source(AT.apply_rope)

# %%
pe = AT.sinusoidal_positions(128, 64)
qv, kv = randn(64, seed=3, dtype=f64), randn(64, seed=4, dtype=f64)


def rope_score(m, n):
    qm = AT.apply_rope(qv[None], torch.tensor([m]))
    kn = AT.apply_rope(kv[None], torch.tensor([n]))
    return (qm * kn).sum().item()


pairs = [(5, 2), (105, 102), (1005, 1002), (3, 5), (903, 905)]
scores = [rope_score(m, n) for m, n in pairs]
print("scores at (m, n) =", dict(zip(pairs, [round(s, 6) for s in scores], strict=True)))
xr = randn(3, 50, 64, dtype=f64)
norm_change = (AT.apply_rope(xr, torch.arange(50)).norm(dim=-1) - xr.norm(dim=-1)).abs().max()
hamlib.check(
    "RoPE scores depend on m - n only (to 1e-12) and RoPE preserves norms (to 1e-12)",
    max(scores[:3]) - min(scores[:3]) < 1e-12
    and abs(scores[3] - scores[4]) < 1e-12
    and norm_change < 1e-12,
)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
im = axes[0].imshow(pe.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set(xlabel="position p", ylabel="dimension", title="sinusoidal encodings")
fig.colorbar(im, ax=axes[0])
ones = torch.ones(1, 64, dtype=f64)
dist = np.arange(0, 1001)
aligned = [(ones * AT.apply_rope(ones, torch.tensor([int(t)]))).sum().item() for t in dist]
axes[1].plot(dist, aligned, color=COLORS["measured"], label="q = k = (1, ..., 1)")
axes[1].set(xlabel="distance m - n", ylabel="score", title="RoPE score against distance (d = 64)")
axes[1].legend()
plt.show()

# %% [markdown]
# The right panel is the content-independent part that Su et al. bound: for aligned $q$ and $k$,
# the score falls from $d$ at distance 0 and oscillates below it. Section 4.8 asks whether this
# "long-range decay" applies to the scores of real queries and keys.
#
# ## 4.4 Fewer key-value heads: MQA and GQA
#
# At inference, each generated token reads the keys and values of all previous tokens. Multi-query
# attention (Shazeer, 2019) keeps one key-value head for all query heads; grouped-query attention
# (Ainslie et al., 2023) keeps $g$, each shared by $h/g$ query heads. GQA is exactly multi-head
# attention whose key and value heads come in identical copies (Ainslie et al. go the other way:
# they turn a trained multi-head checkpoint into GQA by mean-pooling each group's heads):

# %%
hamlib.show_source(T.MultiHeadAttention.expand_kv_heads)

# %%
torch.manual_seed(0)
d, h, g = 32, 8, 2
gqa = T.MultiHeadAttention(d, h, n_kv_heads=g).double()
mha_copy = gqa.expand_kv_heads()
with torch.no_grad():
    x = randn(2, 11, d, dtype=f64)
    gap = (gqa(x) - mha_copy(x)).abs().max().item()
print(
    f"GQA ({g} kv heads) vs MHA with repeated kv weights: max difference {hamlib.below(gap, 1e-13)}"
)
print(f"parameters: GQA {T.count_parameters(gqa)}, MHA {T.count_parameters(mha_copy)}")
hamlib.check("GQA equals MHA with each key/value head repeated h/g times (to 1e-13)", gap < 1e-13)

# %% [markdown]
# The memory of the KV cache is $2 \times \text{layers} \times \text{kv heads} \times d_h \times
# \text{tokens} \times \text{bytes}$. For published configurations in fp16, one sequence at the
# full context:

# %%
configs = [  # name, layers, query heads, kv heads, head_dim, context (from the papers)
    ("GPT-3 175B", 96, 96, 96, 128, 2048),
    ("Llama 2 7B", 32, 32, 32, 128, 4096),
    ("Llama 2 70B (GQA)", 80, 64, 8, 128, 4096),
    ("Llama 3 8B (GQA)", 32, 32, 8, 128, 8192),
]
print(f"{'model':20s}{'kv heads':>9s}{'context':>9s}{'KV cache':>11s}{'as MHA':>10s}")
cache_gib = {}
for name, layers, heads, kv_heads, head_dim, ctx in configs:
    size = T.kv_cache_bytes(layers, kv_heads, head_dim, ctx) / 2**30
    full = T.kv_cache_bytes(layers, heads, head_dim, ctx) / 2**30
    cache_gib[name] = (size, full)
    print(f"{name:20s}{kv_heads:9d}{ctx:9d}{size:8.2f} GiB{full:7.2f} GiB")
hamlib.check(
    "GQA with 8 of 64 kv heads cuts Llama 2 70B's cache 8-fold, to 1.25 GiB per 4,096 tokens",
    cache_gib["Llama 2 70B (GQA)"] == (1.25, 10.0),
)

# %% [markdown]
# ## 4.5 The KV cache
#
# Generating token $t+1$ needs the keys and values of tokens $1..t$ in every layer, and those do
# not change once computed (the model is causal). A KV cache stores them: each step runs only
# the new token through the network, with its query attending to the cached keys. The result must
# be *identical* to running the whole sequence again:

# %%
torch.manual_seed(0)
text = TX.load_text()
tok = TX.CharTokenizer(text)
cfg_check = T.GPTConfig(
    vocab_size=tok.vocab_size,
    block_size=64,
    d_model=32,
    n_layers=2,
    n_heads=4,
    positions="rope",
    n_kv_heads=2,
)
probe = T.GPT(cfg_check).double().eval()
ids = tok.encode(text[:40])[None]
with torch.no_grad():
    full_logits, _ = probe(ids)
    cache = T.KVCache()
    steps = [probe(ids[:, :8], cache=cache)[0]]  # the prompt at once, then one token at a time
    steps += [probe(ids[:, t : t + 1], cache=cache)[0] for t in range(8, 40)]
cache_gap = (torch.cat(steps, dim=1) - full_logits).abs().max().item()
print(
    f"max |logits(cached) - logits(full)| {hamlib.below(cache_gap, 1e-13)}; "
    f"cache holds {cache.nbytes():,} bytes"
)
hamlib.check(
    "incremental decoding gives the full forward pass's logits (to 1e-13)", cache_gap < 1e-13
)

# %% [markdown]
# Without a cache, generating $n$ tokens re-runs sequences of length $1, 2, \dots, n$: work
# quadratic in $n$ for the projections and MLPs and cubic for attention. With it, each step
# processes one token: linear and quadratic. First the work, counted: the matrix-multiplication
# FLOPs of greedy decoding from a 16-character prompt with an untrained model of the size trained
# below (block size 512), as `FlopCounterMode` sees them (it does not see inside the fused
# attention kernel, so this is the projections and MLPs only):

# %%
torch.manual_seed(0)
speed_model = T.GPT(
    T.GPTConfig(vocab_size=tok.vocab_size, block_size=512, d_model=64, n_layers=2, n_heads=4)
).eval()
prompt = tok.encode(text[:16])[None]
flop_ratio = {}
for n_new in [16, 32, 64]:
    flops = {}
    for use in (False, True):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            speed_model.generate(prompt, n_new, use_kv_cache=use, temperature=0)
        flops[use] = counter.get_total_flops()
    flop_ratio[n_new] = flops[False] / flops[True]
    print(
        f"{n_new:4d} new tokens: {flops[False]:,} FLOPs without the cache, {flops[True]:,} with: "
        f"{flop_ratio[n_new]:.1f}x"
    )
hamlib.check(
    "the work the cache saves grows with the number of generated tokens",
    flop_ratio[16] < flop_ratio[32] < flop_ratio[64],
)

# %% [markdown]
# Then the wall clock (best of two runs each; the numbers depend on the machine, so the
# regression test does not compare them). The measured speed-up is far below the FLOP ratio: a
# model this small spends most of each step in Python and in launching small operations, which
# the cache does not remove.

# %% tags=["nbval-ignore-output"]
speedups = {}
for n_new in [32, 128, 256]:
    times = {}
    for use in (False, True):
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            speed_model.generate(prompt, n_new, use_kv_cache=use, temperature=0)
            runs.append(time.perf_counter() - t0)
        times[use] = min(runs)
    speedups[n_new] = times[False] / times[True]
    print(
        f"{n_new:4d} new tokens: without cache {times[False]:.3f} s, with {times[True]:.3f} s, "
        f"speed-up {speedups[n_new]:.1f}x"
    )

# %% [markdown]
# ## 4.6 Normalization and the feed-forward network
#
# **Pre-norm and post-norm.** The original Transformer normalizes *after* the residual addition,
# $x_{l+1} = \mathrm{LN}(x_l + f(x_l))$; GPT-2 and most models since normalize the *input* of each
# branch, $x_{l+1} = x_l + f(\mathrm{LN}(x_l))$, leaving the residual stream itself untouched
# (Xiong et al., 2020, analyse the difference). A 24-layer stack at initialization, gradients of
# the loss on a batch of text with respect to the input of each block, and with respect to each
# block's parameters, for hamlib's initialization (weights $\mathcal N(0, 0.02^2)$, as GPT-2) and
# for a "fan-in" initialization (std $1/\sqrt{\text{fan-in}}$) whose branches are as large as
# the stream:

# %%
hamlib.show_source(T.Block)

# %%
data = tok.encode(text)
split = int(0.9 * len(data))
train_ids, val_ids = data[:split], data[split:]
starts = torch.randint(0, split - 65, (8,), generator=torch.Generator().manual_seed(0))
xb = torch.stack([train_ids[s : s + 64] for s in starts])
yb = torch.stack([train_ids[s + 1 : s + 65] for s in starts])


def layer_gradients(norm, init, n_layers=24):
    torch.manual_seed(0)
    model = T.GPT(
        T.GPTConfig(
            vocab_size=tok.vocab_size,
            block_size=64,
            d_model=64,
            n_layers=n_layers,
            n_heads=4,
            norm=norm,
        )
    )
    if init == "fan-in":
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear) and mod is not model.head:
                torch.nn.init.normal_(mod.weight, std=mod.in_features**-0.5)
    inputs = []

    def keep(module, args):
        args[0].retain_grad()
        inputs.append(args[0])

    for block in model.blocks:
        block.register_forward_pre_hook(keep)
    model(xb, yb)[1].backward()
    stream = np.array([a.grad.norm().item() for a in inputs])
    params = np.array(
        [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in model.blocks]
    )
    return stream, params


grads = {(n, i): layer_gradients(n, i) for i in ["GPT-2", "fan-in"] for n in ["pre", "post"]}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for (norm, init), (stream, params) in grads.items():
    style = dict(color=CYCLE[0] if norm == "pre" else CYCLE[1], ls="-" if init == "GPT-2" else "--")
    axes[0].semilogy(range(1, 24), stream[1:], **style, label=f"{norm}-norm, {init} init")
    axes[1].semilogy(range(24), params, **style)
axes[0].set(
    xlabel="block l (input side = 1)",
    ylabel="|dL/dx_l|",
    title="gradient reaching the residual stream",
)
axes[1].set(xlabel="block l", ylabel="|dL/dθ_l|", title="gradient of each block's parameters")
axes[0].legend(fontsize=8)
plt.show()
print(f"{'':22s}{'stream grad, block 1 / 23':>27s}{'param grad, block 0 / 23':>26s}")
for (norm, init), (stream, params) in grads.items():
    print(
        f"{norm + '-norm, ' + init + ' init':22s}{stream[1] / stream[23]:27.2f}"
        f"{params[0] / params[23]:26.2f}"
    )

# %% [markdown]
# The block-0 input (the embedding) is left out of the left panel: its scale is set by the
# embedding's initialization, not by depth. What the figure shows is taken up as a claim in
# section 4.8.
#
# **RMSNorm** (Zhang & Sennrich, 2019) drops LayerNorm's centring and bias:
# $y = x/\sqrt{\overline{x^2} + \epsilon}\cdot w$. It equals PyTorch's `nn.RMSNorm`:

# %%
hamlib.show_source(T.RMSNorm)

# %%
mine, ref = T.RMSNorm(48).double(), torch.nn.RMSNorm(48, eps=1e-6).double()
with torch.no_grad():
    mine.weight.copy_(randn(48, seed=7, dtype=f64))
    ref.weight.copy_(mine.weight)
    xn = randn(5, 48, dtype=f64) * 3 + 1
    rms_gap = (mine(xn) - ref(xn)).abs().max().item()
hamlib.check("RMSNorm equals torch.nn.RMSNorm (to 1e-12)", rms_gap < 1e-12)

# %% [markdown]
# **SwiGLU** (Shazeer, 2020) replaces $W_2\,\mathrm{GELU}(W_1x)$ by
# $W_2(\mathrm{SiLU}(W_1x) \odot W_3x)$: a gate. It has three matrices instead of two, so at equal
# parameter count its hidden width is $2/3$ of the GELU network's ($\tfrac83 d$ instead of $4d$):

# %%
ffn_gelu, ffn_swiglu = T.FeedForward(96, 384, "gelu"), T.FeedForward(96, 256, "swiglu")
print(
    f"GELU, hidden 384: {T.count_parameters(ffn_gelu):,} parameters; "
    f"SwiGLU, hidden 256: {T.count_parameters(ffn_swiglu):,}"
)
hamlib.check(
    "SwiGLU with 2/3 the hidden width has exactly the parameters of the GELU MLP",
    T.count_parameters(ffn_gelu) == T.count_parameters(ffn_swiglu),
)

# %% [markdown]
# Whether the gate helps is measured in section 4.7.
#
# ## 4.7 A character-level GPT
#
# The text: two plays by Shakespeare (public domain; `hamlib/data/README.md` gives the source),
# 90% for training, the last 10% for validation. The model: 2 layers, 4 heads, $d = 64$, learned
# positions, context 64 characters, weights tied between the embedding and the output layer.
# AdamW with a cosine schedule, batches of 16 windows.

# %%
print(
    f"{len(text):,} characters, vocabulary of {tok.vocab_size}; "
    f"train {len(train_ids):,}, validation {len(val_ids):,}"
)
cfg = T.GPTConfig(vocab_size=tok.vocab_size, block_size=64, d_model=64, n_layers=2, n_heads=4)


@torch.no_grad()
def evaluate(model, ids):
    """Mean cross-entropy (nats per character) over the whole text, in windows of block_size."""
    model.eval()
    n = (len(ids) - 1) // cfg.block_size * cfg.block_size
    _, loss = model(ids[:n].view(-1, cfg.block_size), ids[1 : n + 1].view(-1, cfg.block_size))
    model.train()
    return loss.item()


torch.manual_seed(0)
gpt = T.GPT(cfg)
t0 = time.perf_counter()
losses = TX.train_gpt(
    gpt,
    train_ids,
    steps=600,
    batch_size=16,
    lr=6e-3,
    generator=torch.Generator().manual_seed(1),
    progress=hamlib.progress,
)
train_seconds = time.perf_counter() - t0
val_loss = evaluate(gpt, val_ids)
uniform = math.log(tok.vocab_size)
print(
    f"{T.count_parameters(gpt):,} parameters; validation loss {val_loss:.2f} nats/char "
    f"({val_loss / math.log(2):.2f} bits); uniform guessing: {uniform:.2f}"
)
hamlib.check("the GPT reaches a validation loss below 2.2 nats per character", val_loss < 2.2)

# %% tags=["nbval-ignore-output"]
print(f"training took {train_seconds:.1f} s")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
ax.plot(losses, color=COLORS["muted"], lw=0.8, label="training batch")
ax.plot(
    np.arange(12, len(losses) - 12),  # centred moving average
    np.convolve(losses, np.ones(25) / 25, mode="valid"),
    color=COLORS["measured"],
    label="training, mean of 25 steps",
)
ax.axhline(val_loss, color=COLORS["reference"], ls="--", label="validation, after training")
ax.axhline(uniform, color=COLORS["theory"], ls=":", label="uniform guess, log V")
ax.set(xlabel="step", ylabel="cross-entropy (nats / char)", title="Training the character GPT")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Samples at temperature 0.8 (their exact characters depend on the last bits of the arithmetic,
# so they are not compared by the regression test):

# %% tags=["nbval-ignore-output"]
start = tok.encode("HERMIA:\n")[None]
sample = gpt.generate(start, 56, temperature=0.8, generator=torch.Generator().manual_seed(0))
for _ in range(2):
    print(tok.decode(sample[0]))
    print("---")
    sample = gpt.generate(start, 56, temperature=0.8, generator=torch.Generator().manual_seed(1))

# %% [markdown]
# **Attention maps of the trained model.** The weights of all eight heads on the first 40
# characters of the validation text (row: the query character, column: the key it attends to;
# ⏎ is a newline, ␣ a space). The printed ratio compares the weight a head puts on spaces and
# punctuation with their share of the characters: above 1, the head seeks them out.

# %%
n_show = 40
ids = val_ids[:n_show][None]
with torch.no_grad():
    x = gpt.tok_emb(ids) + gpt.pos_emb(torch.arange(n_show))
    maps = []
    for block in gpt.blocks:
        maps.append(block.attn(block.norm1(x), return_weights=True)[1][0])
        x = block(x)
chars = [{"\n": "⏎", " ": "␣"}.get(c, c) for c in tok.decode(ids[0])]
fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
for layer, row in enumerate(axes):
    for head, ax in enumerate(row):
        ax.imshow(maps[layer][head], cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
        ax.set_xticks(range(n_show), chars if layer == 1 else [], fontsize=5)
        ax.set_yticks(range(n_show), chars if head == 0 else [], fontsize=5)
fig.suptitle("Attention weights of the trained GPT (row: query character, column: key)")
plt.show()
is_space = torch.tensor([c in " \n.,;:!?" for c in tok.decode(ids[0])])
for layer, w in enumerate(maps):
    on_space = (w[:, :, is_space].sum(-1).mean(-1) / is_space.float().mean()).tolist()
    print(
        f"layer {layer + 1}: weight on spaces and punctuation / their share of keys, per head:",
        [round(v, 1) for v in on_space],
    )

# %% [markdown]
# **GQA and SwiGLU at this scale.** The same protocol, shortened to 100 steps, for variants at
# the same $d$: the baseline, GQA with 2 key-value heads, MQA with 1, and SwiGLU with hidden width
# $\tfrac83 d$ (equal parameters). One seed each, plus the baseline with a second seed (another
# initialization) as a yardstick for how much a single run moves. A hundred steps of training can
# amplify the processor's round-off (another instruction set sums in another order): measured
# across two processors and five settings (README, "Portable outputs"), the SwiGLU loss moved in
# the second decimal, about as much as a second seed moves it, so it prints with $\approx$ and is
# held only to a gap several times the seed gap; the GELU models' losses did not move in their
# third decimal under any setting and print as they are.

# %%
variants = {
    "MHA (baseline)": {},
    "MHA, another seed": {"seed": 1},
    "GQA, 2 kv heads": {"n_kv_heads": 2},
    "MQA, 1 kv head": {"n_kv_heads": 1},
    "SwiGLU, equal params": {"ffn": "swiglu"},
}
short = {}
for name, extra in variants.items():
    torch.manual_seed(extra.pop("seed", 0))
    model = T.GPT(
        T.GPTConfig(
            vocab_size=tok.vocab_size, block_size=64, d_model=64, n_layers=2, n_heads=4, **extra
        )
    )
    TX.train_gpt(
        model,
        train_ids,
        steps=100,
        batch_size=16,
        lr=6e-3,
        generator=torch.Generator().manual_seed(1),
    )
    short[name] = (T.count_parameters(model), evaluate(model, val_ids))
    print(
        f"{name:22s}{short[name][0]:9,d} parameters   validation loss "
        f"{(hamlib.approx if name.startswith('SwiGLU') else format)(short[name][1], '.3f')}"
    )

base = short["MHA (baseline)"][1]
seed_gap = abs(short["MHA, another seed"][1] - base)

# %% [markdown]
# SwiGLU is behind by far more than the seed-to-seed spread. One reason is visible at
# initialization: its branch multiplies two small projections, so with weights of standard
# deviation 0.02 its output starts much smaller than the GELU network's, and the first steps
# move it less.

# %%
torch.manual_seed(0)
probe_x = torch.randn(256, 64)
branch = {}
for kind in ["gelu", "swiglu"]:
    ffn = (
        T.GPT(T.GPTConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=1, n_heads=4, ffn=kind))
        .blocks[0]
        .ffn
    )
    with torch.no_grad():
        branch[kind] = ffn(probe_x).std().item()
print(
    f"output std at initialization, unit-variance input: GELU {branch['gelu']:.4f}, "
    f"SwiGLU {branch['swiglu']:.4f}"
)
hamlib.check(
    "at initialization the SwiGLU branch's output is over 4x smaller than the GELU branch's, and "
    "after 100 steps SwiGLU trails MHA+GELU by more than the seed spread",
    branch["gelu"] > 4 * branch["swiglu"]
    and short["SwiGLU, equal params"][1] - base > 2 * seed_gap,
)

# %% [markdown]
# Shazeer (2020) reports SwiGLU ahead after long training of much larger models; 100 steps of a
# 2-layer model test only the start of training, where it is slower.
#
# ## 4.8 Claims in circulation
#
# **"RoPE gives long-range decay."** Su et al. show that an upper bound on the score of aligned
# content decays with distance, and the figure of section 4.3 shows it for $q = k$. But a rotation
# of an isotropic random vector is again isotropic: for queries and keys with independent random
# content the distribution of the score is the *same* at every distance.

# %%
qs_, ks_ = randn(20000, 64, seed=11, dtype=f64), randn(20000, 64, seed=12, dtype=f64)
spread = {}
for distance in [0, 10, 100, 1000]:
    s = (qs_ * AT.apply_rope(ks_[:, None], torch.tensor([distance]))[:, 0]).sum(-1)
    spread[distance] = s.std().item()
print("std of random-content scores by distance:", {t: round(s, 2) for t, s in spread.items()})
tail = np.abs(aligned[500:]).mean()
print(
    f"aligned content: score {aligned[0]:.0f} at distance 0, mean |score| {tail:.1f} "
    f"over distances 500-1000"
)
hamlib.check(
    "aligned content decays (mean |score| beyond 500 below half the score at 0), random content "
    "does not (std at every distance within 3% of sqrt(d) = 8)",
    tail < aligned[0] / 2 and all(abs(s / 8 - 1) < 0.03 for s in spread.values()),
)

# %% [markdown]
# **Verdict: true for the bound, not for scores in general.** Any decay a trained model shows
# must come from what it learns to put into $q$ and $k$, not from the rotation alone.
#
# **"GQA is almost as good as MHA."** Ainslie et al. report this for T5-XXL uptrained from a
# multi-head checkpoint, against MQA and MHA, on summarization and translation. At this scale:

# %%
print(f"MHA, another seed: {short['MHA, another seed'][1] - base:+.3f} nats/char")
for name in ["GQA, 2 kv heads", "MQA, 1 kv head", "SwiGLU, equal params"]:
    show = hamlib.approx if name.startswith("SwiGLU") else format  # held by the check in 4.7
    print(
        f"{name}: {show(short[name][1] - base, '+.3f')} nats/char against MHA, "
        f"{short[name][0] / short['MHA (baseline)'][0]:.0%} of its parameters"
    )
hamlib.check(
    "after 100 steps GQA and MQA differ from MHA by less than MHA differs from itself with "
    "another seed",
    all(abs(short[n][1] - base) < seed_gap for n in ["GQA, 2 kv heads", "MQA, 1 kv head"]),
)

# %% [markdown]
# **Verdict: consistent with it, not a test of it.** Here GQA and MQA lose nothing measurable,
# but a second seed of the same MHA model moves the loss more than either change does: with 4
# heads of dimension 16, 2 layers and 100 steps the comparison cannot resolve small differences.
# And what GQA buys, the KV-cache memory of section 4.4, matters only at lengths and batch sizes
# this model never sees. Testing the claim needs models large enough that the cache dominates,
# trained long enough that quality differences are resolved, over several seeds.
#
# **"Pre-norm gives an undiminished gradient highway to the input."** In a pre-norm stack the
# residual stream is a sum, $x_L = x_0 + \sum_l f_l(\cdot)$, so $\partial x_L/\partial x_0$
# contains the identity. Measured in section 4.6 (ratio of the gradient reaching block 1 to that
# reaching block 23):

# %%
pre_ratio = grads["pre", "GPT-2"][0][1] / grads["pre", "GPT-2"][0][23]
post_ratio = grads["post", "GPT-2"][0][1] / grads["post", "GPT-2"][0][23]
fan_post = grads["post", "fan-in"][0][1] / grads["post", "fan-in"][0][23]
print(
    f"pre-norm {pre_ratio:.2f}, post-norm {post_ratio:.2f} (GPT-2 init); "
    f"post-norm {fan_post:.2f} (fan-in init)"
)
hamlib.check(
    "in the pre-norm stack the gradient reaching the first blocks is at least that reaching the "
    "last (ratio >= 1), for both initializations",
    pre_ratio >= 1 and grads["pre", "fan-in"][0][1] / grads["pre", "fan-in"][0][23] >= 1,
)
hamlib.check(
    "the post-norm stack does not starve its first blocks at initialization either (ratio >= 0.9)",
    post_ratio >= 0.9 and fan_post >= 0.9,
)

# %% [markdown]
# **Verdict: true for pre-norm; the contrast usually drawn with post-norm does not show at
# initialization here.** The gradient reaching the input side of the pre-norm stack is not
# diminished, it is larger. But the 24-layer post-norm stack does not starve its first blocks at
# initialization either. The trouble with post-norm that Xiong et al. (2020) and Liu et al.
# (2020) describe (large gradients near the output, the need for learning-rate warm-up,
# amplified updates) is about training dynamics, which a gradient at initialization cannot show.
#
# ## Summary

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, Ł. Kaiser,
#   I. Polosukhin. Attention is all you need. *NeurIPS*, 2017.
# - A. Radford, J. Wu, R. Child, D. Luan, D. Amodei, I. Sutskever. Language models are
#   unsupervised multitask learners (GPT-2). OpenAI, 2019.
# - T. Brown et al. Language models are few-shot learners (GPT-3). *NeurIPS*, 2020.
# - J. Su, Y. Lu, S. Pan, A. Murtadha, B. Wen, Y. Liu. RoFormer: enhanced Transformer with rotary
#   position embedding. arXiv:2104.09864, 2021.
# - N. Shazeer. Fast Transformer decoding: one write-head is all you need. arXiv:1911.02150, 2019.
# - J. Ainslie, J. Lee-Thorp, M. de Jong, Y. Zemlyanskiy, F. Lebrón, S. Sanghai. GQA: training
#   generalized multi-query Transformer models from multi-head checkpoints. *EMNLP*, 2023.
# - H. Touvron et al. Llama 2: open foundation and fine-tuned chat models. arXiv:2307.09288, 2023.
# - Meta. The Llama 3 herd of models. arXiv:2407.21783, 2024.
# - R. Xiong, Y. Yang, D. He, K. Zheng, S. Zheng, C. Xing, H. Zhang, Y. Lan, L. Wang, T. Liu. On
#   layer normalization in the Transformer architecture. *ICML*, 2020.
# - L. Liu, X. Liu, J. Gao, W. Chen, J. Han. Understanding the difficulty of training
#   Transformers. *EMNLP*, 2020.
# - B. Zhang, R. Sennrich. Root mean square layer normalization. *NeurIPS*, 2019.
# - N. Shazeer. GLU variants improve Transformer. arXiv:2002.05202, 2020.
#
# ## Exercises
#
# **1. The $2N$ rule.** A common estimate of a Transformer's forward cost is $2N$ FLOPs per token
# for $N$ parameters (excluding embeddings), plus the attention term. Count the FLOPs of one
# forward pass of the chapter's GPT on a full 64-character window with `FlopCounterMode`. What
# does it count, and what does it miss?
#
# ```{admonition} Solution
# :class: dropdown
# Each weight matrix does one multiply-add per token per parameter: $2N$ per token; the output
# layer adds $2dV$ (the tied embedding is a lookup, no FLOPs). The counter reports exactly
# $s(2N + 2dV)$: it misses the attention term $4 L s^2 d$, because the model runs attention in
# PyTorch's fused CPU kernel, which the counter has no formula for (section 4.2 counted it
# through the written-out path). LayerNorms, softmax and GELU are not matrix multiplications
# and are not counted either. The cell prints the share of the attention term at s = 64.
# ```

# %% tags=["hide-cell"]
non_emb = sum(
    p.numel() for n, p in gpt.named_parameters() if n.startswith("blocks") and p.dim() == 2
)
s_, d_, L_ = cfg.block_size, cfg.d_model, cfg.n_layers
matmuls = s_ * (2 * non_emb + 2 * d_ * tok.vocab_size)
attn_term = L_ * 4 * s_ * s_ * d_
with FlopCounterMode(display=False) as counter, torch.no_grad():
    gpt(val_ids[:64][None])
print(
    f"counted {counter.get_total_flops():,} FLOPs; s(2N + 2dV) = {matmuls:,}; "
    f"attention adds {attn_term:,} ({attn_term / (matmuls + attn_term):.0%} of the total)"
)
hamlib.check(
    "exercise 1: the counter sees exactly s(2N + 2dV), the fused attention not at all",
    counter.get_total_flops() == matmuls,
)

# %% [markdown]
# **2. Sliding-window attention.** Mistral 7B lets each token attend only to the previous $w$
# tokens. Build the mask for `AT.attention`, check that it equals causal attention when
# $w \geq s$, and that a token's output does not change when tokens more than $w$ back change.
#
# ```{admonition} Solution
# :class: dropdown
# Token $i$ may see key $j$ when $0 \le i - j < w$: `keep = (i - j >= 0) & (i - j < w)` from
# index grids. With $w \ge s$ this is the causal mask.
# ```


# %% tags=["hide-cell"]
def window_mask(s, w):
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    return (i - j >= 0) & (i - j < w)


qw, kw, vw = (randn(1, 2, 30, 8, seed=s, dtype=f64) for s in range(3))
same = (
    (AT.attention(qw, kw, vw, mask=window_mask(30, 30)) - AT.attention(qw, kw, vw, causal=True))
    .abs()
    .max()
    .item()
)
kw2, vw2 = kw.clone(), vw.clone()
kw2[..., :10, :] += 5.0  # change tokens 0..9
vw2[..., :10, :] -= 3.0
a = AT.attention(qw, kw, vw, mask=window_mask(30, 8))
b = AT.attention(qw, kw2, vw2, mask=window_mask(30, 8))
untouched = (a[..., 17:, :] - b[..., 17:, :]).abs().max().item()  # tokens >= 10 + 8 - 1
hamlib.check(
    "exercise 2: window >= length is causal attention, and outputs beyond the window ignore "
    "earlier tokens",
    same < 1e-12 and untouched < 1e-12 and (a[..., 10, :] - b[..., 10, :]).abs().max() > 0.01,
)

"""hamlib.compress, each piece against a reference of its own: the float formats against torch's
casts and torch.finfo; round-to-nearest against its error bound and its grid written out; NF4
against the published table and bitsandbytes' quantize_4bit / dequantize_4bit (codes, nibble
order, bytes); int8 against bitsandbytes' int8_vectorwise_quant; GPTQ against round to nearest
where nothing should move (a diagonal Hessian), against the least-squares problem it solves
column by column (written out, with each group's grid taken as GPTQ takes it) and against round
to nearest on correlated inputs; the layer Hessian against hamlib.measure's autograd Hessian;
AWQ, LLM.int8() and SmoothQuant against their formulas; BitNet's forward and straight-through
gradient against F.linear; LoRA against its formula, its merge and peft; speculative sampling
against the target's own joint distribution (exactly, by enumeration, by Monte Carlo, and with
deterministic models), with a broken variant to show that the comparisons have power; the paged
KV cache against contiguous attention; and bad input refused with a message that names the
argument.

The comparisons with bitsandbytes and peft are marked slow (importing them takes seconds); the
fast tests check the same tables, nibble order and formulas against literals written here."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from hamlib import compress as C
from hamlib import measure
from hamlib.transformer import GPT, GPTConfig

F64 = torch.float64
TINY = GPTConfig(vocab_size=11, block_size=16, d_model=16, n_layers=2, n_heads=2)
BLOCK_LINEARS = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "ffn.w1", "ffn.w2")
TORCH_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8-e5m2": torch.float8_e5m2,
    "fp8-e4m3": torch.float8_e4m3fn,
}
BITS_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
# QLoRA's NF4 table as bitsandbytes writes it out (functional.get_4bit_type('nf4')), copied
# here so that the fast tests check it without importing bitsandbytes (seconds).
NF4_PUBLISHED = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny tensors only: on a busy machine a second intra-op thread makes each call up to 100
    times slower. The conftest fixture puts the thread count back after each test."""
    torch.set_num_threads(1)


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny_gpt(seed: int = 0, **changes: object) -> GPT:
    torch.manual_seed(seed)  # the conftest fixture restores the global generator afterwards
    cfg = TINY if not changes else GPTConfig(**{**TINY.__dict__, **changes})  # type: ignore[arg-type]
    return GPT(cfg).eval()


def _ids(seed: int, batch: int = 3, seq: int = 12, vocab: int = 11) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=_rng(seed))


# ----------------------------------------------------------------------------- float formats


def _all_values(dtype: torch.dtype) -> torch.Tensor:
    """Every number of a format of 8 or 16 bits, as float64, from its bit patterns."""
    size = torch.finfo(dtype).bits // 8
    view = BITS_VIEW[size]
    info = torch.iinfo(view)
    patterns = torch.arange(info.min, info.max + 1, dtype=torch.int64).to(view)
    return patterns.view(dtype).double()


def _probe(name: str, seed: int) -> torch.Tensor:
    """Values for format ``name`` (float32; float64 for fp32 itself): random over the whole range
    (subnormals included), every midpoint between neighbouring finite numbers (the ties, listed
    from the bit patterns where the format is small enough) and their neighbours, and the special
    cases. All below the overflow threshold max + half an ulp."""
    fmt = C.FORMATS[name]
    g = _rng(seed)
    lo, hi = math.log2(fmt.min_subnormal) - 3, math.log2(fmt.max)
    mags = torch.exp2(lo + (hi - lo) * torch.rand(4000, generator=g, dtype=F64))
    signs = torch.where(torch.rand(4000, generator=g) < 0.5, -1.0, 1.0).double()
    rand = signs * mags
    if name == "fp32":
        r32 = rand.float()
        up = torch.nextafter(r32, torch.tensor(math.inf))
        mids = (r32.double() + up.double()) / 2  # ties between float32 neighbours, in float64
        near = torch.cat([rand, mids, torch.nextafter(mids, torch.zeros_like(mids))])
    else:
        vals = _all_values(TORCH_DTYPES[name])
        pos = torch.unique(vals[torch.isfinite(vals) & (vals >= 0)])  # sorted
        mids = (pos[1:] + pos[:-1]) / 2  # exact ties, representable in float32
        if mids.numel() > 3000:  # 16-bit formats: the ties of the extreme binades and a sample
            pick = torch.randperm(mids.numel() - 400, generator=g)[:2000] + 200
            mids = torch.cat([mids[:200], mids[pick], mids[-200:]])
            pos = pos[pick]
        below_mids = torch.nextafter(mids.float(), torch.tensor(0.0)).double()
        near = torch.cat([rand.float().double(), pos, mids, below_mids])
        near = torch.cat([near, -near])
    top_tie = fmt.max + 2.0 ** (math.floor(math.log2(fmt.max)) - fmt.mantissa_bits - 1)
    below = float(torch.nextafter(torch.tensor(top_tie, dtype=F64), torch.tensor(0.0, dtype=F64)))
    below32 = torch.nextafter(torch.tensor(top_tie, dtype=torch.float32), torch.tensor(0.0))
    special = [0.0, fmt.min_subnormal / 2, fmt.min_subnormal * 0.75, fmt.max, below]
    special += [float(below32), 1 + fmt.unit_roundoff, 4 * (1 + fmt.unit_roundoff)]
    special += [fmt.min_normal, fmt.min_normal * (1 - 2.0**-20), fmt.min_subnormal * 1.5]
    special_t = torch.tensor(special, dtype=F64)
    x = torch.cat([near, special_t, -special_t, torch.tensor([math.nan], dtype=F64)])
    x = x if name == "fp32" else x.float()
    return x[~(x.abs().double() >= top_tie)]  # NaN kept


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bitwise the same float64 values: NaN where NaN, and the sign of zero."""
    assert a.dtype == b.dtype == F64 and a.shape == b.shape
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b))
    bad = (a != b) & ~nan
    assert not bad.any(), (a[bad][:5].tolist(), b[bad][:5].tolist())
    assert torch.equal(torch.signbit(a[~nan]), torch.signbit(b[~nan]))


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_round_to_format_equals_torch_cast_below_overflow(name: str) -> None:
    x = _probe(name, seed=1)
    ref = x.to(TORCH_DTYPES[name]).double()
    _same(C.round_to_format(x, name), ref)
    _same(C.round_to_format(x, C.FORMATS[name]), ref)


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8-e5m2"])
def test_ieee_overflow_to_inf_equals_torch_cast(name: str) -> None:
    fmt = C.FORMATS[name]
    half_ulp = 2.0 ** (math.floor(math.log2(fmt.max)) - fmt.mantissa_bits - 1)
    tie = fmt.max + half_ulp  # ties to even: the even neighbour is 2^(emax+1), so inf
    big = min(3 * fmt.max, torch.finfo(torch.float32).max)  # finite float32 inputs
    x = torch.tensor([tie, tie * 1.001, big, fmt.max + half_ulp / 2])
    x = torch.cat([x, -x])
    y = C.round_to_format(x, name)
    _same(y, x.to(TORCH_DTYPES[name]).double())
    assert y[[0, 1, 2, 4, 5, 6]].isinf().all() and y[3] == fmt.max and y[7] == -fmt.max


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_round_to_format_of_infinity_equals_torch_cast(name: str) -> None:
    x = torch.tensor([math.inf, -math.inf])
    _same(C.round_to_format(x, name), x.to(TORCH_DTYPES[name]).double())


def test_e4m3_overflow_equals_torch_cast() -> None:
    x = torch.tensor([465.0, 480.0, 1000.0, 1e9, -500.0])
    _same(C.round_to_format(x, "fp8-e4m3"), x.to(torch.float8_e4m3fn).double())


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_relative_error_is_at_most_the_unit_roundoff_for_normal_numbers(name: str) -> None:
    fmt = C.FORMATS[name]
    x = _probe(name, seed=3).double()
    x = x[(x.abs() >= fmt.min_normal) & (x.abs() <= fmt.max)]
    rel = ((C.round_to_format(x, name) - x).abs() / x.abs()).max()
    u = fmt.unit_roundoff
    assert rel <= u
    assert rel >= u / (1 + u) * (1 - 1e-12)  # the tie at 1 + u reaches u / (1 + u): tight
    assert fmt.unit_roundoff == torch.finfo(TORCH_DTYPES[name]).eps / 2


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_format_limits_equal_torch_finfo(name: str) -> None:
    fmt, dtype = C.FORMATS[name], TORCH_DTYPES[name]
    info = torch.finfo(dtype)
    one = torch.tensor([1], dtype=BITS_VIEW[info.bits // 8])  # the bit pattern of the smallest
    assert fmt.max == info.max
    assert fmt.min_normal == info.smallest_normal
    assert fmt.min_subnormal == float(one.view(dtype).double())
    assert fmt.bits == info.bits
    if name != "fp32":  # every finite number of the format, listed, has these ends
        vals = _all_values(dtype)
        vals = vals[torch.isfinite(vals)]
        assert vals.max() == fmt.max and vals[vals > 0].min() == fmt.min_subnormal


def test_round_to_format_keeps_dtype_float64_and_shape() -> None:
    x = torch.randn(3, 4, 5, generator=_rng(4), dtype=torch.float16)
    y = C.round_to_format(x, "fp8-e5m2")
    assert y.dtype == F64 and y.shape == x.shape


# ----------------------------------------------------------------------------- integer grids


def _groups(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    if granularity == "tensor":
        return w.reshape(1, 1, -1)
    if granularity == "channel":
        return w.reshape(w.shape[0], 1, -1)
    assert group_size is not None
    return w.reshape(w.shape[0], -1, group_size)


def _scale(g: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """The step of the grid of each group, written out: absmax / (2^(b-1) - 1) or
    (max(w, 0) - min(w, 0)) / (2^b - 1)."""
    if symmetric:
        return g.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    return (g.amax(-1, keepdim=True).clamp(min=0) - g.amin(-1, keepdim=True).clamp(max=0)) / (
        2**bits - 1
    )


@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(2, 16),
    granularity=st.sampled_from(["tensor", "channel", "group"]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**16),
    shift=st.floats(-2.0, 2.0),
)
def test_quantize_error_is_at_most_half_a_step_on_the_grid(
    bits: int, granularity: str, symmetric: bool, seed: int, shift: float
) -> None:
    w = torch.randn(6, 12, generator=_rng(seed), dtype=F64) + shift
    gs = 4 if granularity == "group" else None
    q = C.quantize(w, bits, granularity, gs, symmetric)  # type: ignore[arg-type]
    assert q.shape == w.shape and q.dtype == w.dtype
    scale = _scale(_groups(w, granularity, gs), bits, symmetric)
    err = _groups(q - w, granularity, gs).abs()
    assert (err <= scale / 2 * (1 + 1e-9)).all()
    k = _groups(q, granularity, gs) / scale  # integers (minus the zero point) on the grid
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        assert torch.allclose(k, k.round(), atol=1e-6) and (k.abs() <= qmax + 1e-6).all()
    else:
        lo = _groups(w, granularity, gs).amin(-1, keepdim=True).clamp(max=0) / scale
        z = (-lo).round()
        assert torch.allclose(k + z, (k + z).round(), atol=1e-6)
        assert ((k + z) >= -1e-6).all() and ((k + z) <= 2**bits - 1 + 1e-6).all()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_symmetric_grid_has_2_to_the_b_minus_1_levels(bits: int) -> None:
    qmax = 2 ** (bits - 1) - 1
    w = torch.linspace(-1, 1, 4001, dtype=F64).reshape(1, -1)
    q = C.quantize(w, bits, "tensor")
    levels = torch.unique(q)
    assert levels.numel() == 2 * qmax + 1  # qmax on each side and 0
    assert torch.allclose(levels, torch.arange(-qmax, qmax + 1, dtype=F64) / qmax)
    if bits == 2:  # ternary
        assert torch.equal(levels, torch.tensor([-1.0, 0.0, 1.0], dtype=F64))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_zero_point_grid_has_2_to_the_b_levels_spanning_min_to_max(bits: int) -> None:
    w = torch.linspace(-0.3, 1.7, 5001, dtype=F64).reshape(1, -1)
    q = C.quantize(w, bits, "tensor", symmetric=False)
    levels = torch.unique(q)
    step = 2.0 / (2**bits - 1)
    assert levels.numel() == 2**bits
    assert abs(levels[0] - (-0.3)) <= step / 2 + 1e-12
    assert abs(levels[-1] - 1.7) <= step / 2 + 1e-12
    assert (levels == 0).any()  # zero is on the grid, exactly
    assert torch.allclose(levels.diff(), torch.full_like(levels.diff(), step))


def test_zero_point_represents_zero_exactly_and_spans_zero_for_one_signed_rows() -> None:
    g = _rng(5)
    w = torch.rand(4, 16, generator=g, dtype=F64) + 0.5  # all positive
    w[1] = -w[1]  # all negative
    w[:, 3] = 0.0
    q = C.quantize(w, 4, "channel", symmetric=False)
    assert (q[:, 3] == 0).all()
    assert (q[0] >= 0).all() and (q[1] <= 0).all()  # the grid runs from 0, not from min(w)
    step = w.abs().amax(1) / 15
    assert ((q - w).abs() <= step[:, None] / 2 + 1e-12).all()


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_constant_and_zero_rows_do_not_make_nan(granularity: str, symmetric: bool) -> None:
    w = torch.zeros(4, 8, dtype=F64)
    w[1] = 0.7
    w[2] = -1.3
    q = C.quantize(w, 4, granularity, 4 if granularity == "group" else None, symmetric)
    assert torch.isfinite(q).all()
    assert (q[0] == 0).all() and (q[3] == 0).all()
    if granularity != "tensor":  # a row of its own: exact up to one rounding
        assert torch.allclose(q, w, rtol=1e-14, atol=0)


def test_per_channel_and_group_scales_are_independent() -> None:
    g = _rng(6)
    w = torch.randn(3, 8, generator=g, dtype=F64)
    w[0] *= 100  # a large row does not coarsen the others per channel
    w[1, :4] *= 100  # nor, per group, a large group its neighbour
    ch = C.quantize(w, 4, "channel")
    for i in range(3):
        assert torch.equal(ch[i : i + 1], C.quantize(w[i : i + 1], 4, "tensor"))
    gr = C.quantize(w, 4, "group", group_size=4)
    for i in range(3):
        for j in range(2):
            blk = w[i : i + 1, 4 * j : 4 * j + 4]
            assert torch.equal(gr[i : i + 1, 4 * j : 4 * j + 4], C.quantize(blk, 4, "tensor"))
    tensor = C.quantize(w, 4, "tensor")
    assert (w - tensor)[2].abs().max() > 4 * (w - ch)[2].abs().max()


@pytest.mark.slow  # importing bitsandbytes takes seconds
def test_quantize_8bit_per_channel_matches_bitsandbytes_int8_vectorwise_quant() -> None:
    bnbf = pytest.importorskip("bitsandbytes.functional")
    if not hasattr(bnbf, "int8_vectorwise_quant"):
        pytest.skip("this bitsandbytes has no int8_vectorwise_quant")
    w = torch.randn(32, 48, generator=_rng(7)).half()
    w[3] *= 20
    codes, row_absmax, outliers = bnbf.int8_vectorwise_quant(w)  # codes int8, absmax float32
    assert codes.dtype == torch.int8 and outliers is None
    theirs = codes.double() * row_absmax.double()[:, None] / 127
    ours = C.quantize(w.double(), 8, "channel")
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6 * float(row_absmax.max()))
    mine = torch.round(ours / (w.double().abs().amax(1, keepdim=True) / 127))
    assert torch.equal(mine, codes.double())  # the same integers


def test_scale_bits_arithmetic() -> None:
    assert C.scale_bits("tensor", None, 4096, True) == 0.0
    assert C.scale_bits("channel", None, 4096, True) == 16 / 4096
    assert C.scale_bits("channel", None, 4096, False) == 32 / 4096
    assert C.scale_bits("group", 128, 4096, True) == 0.125
    assert C.scale_bits("group", 128, 4096, False) == 0.25
    with pytest.raises(ValueError, match="group_size"):
        C.scale_bits("group", None, 4096, True)


# ----------------------------------------------------------------------------- NF4 and grids


def test_nf4_levels_equal_the_published_table() -> None:
    lv = C.nf4_levels()
    assert lv.dtype == torch.float32 and lv.shape == (16,)
    assert torch.allclose(lv, torch.tensor(NF4_PUBLISHED), rtol=0, atol=2e-7)
    assert lv[7] == 0 and lv[0] == -1 and lv[-1] == 1 and (lv.diff() > 0).all()


def _bnb_nf4(w: torch.Tensor):  # type: ignore[no-untyped-def]
    bnbf = pytest.importorskip("bitsandbytes.functional")
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    return bnbf, packed, state


@pytest.mark.slow
def test_nf4_levels_equal_bitsandbytes_code() -> None:
    _, _, state = _bnb_nf4(torch.randn(4, 64, generator=_rng(8)))
    assert torch.allclose(C.nf4_levels(), state.code.float(), rtol=0, atol=2e-7)


@pytest.mark.slow
@pytest.mark.parametrize("cols", [96, 128])
def test_grid_quantize_codes_and_bytes_equal_bitsandbytes(cols: int) -> None:
    w = torch.randn(48, cols, generator=_rng(9))
    w[5, 7] = 9.0  # an outlier in one block
    w[10, :64] = 0.0  # a block of zeros
    bnbf, packed, state = _bnb_nf4(w)
    codes, absmax = C.grid_quantize(w, C.nf4_levels(), 64)
    assert codes.dtype == torch.uint8 and codes.shape == w.shape
    assert torch.equal(absmax, state.absmax)
    flat = packed.reshape(-1)
    theirs = torch.stack([flat >> 4, flat & 15], 1).reshape(w.shape)  # first code: high nibble
    assert torch.equal(codes, theirs)
    lin = nn.Linear(cols, 48, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    assert torch.equal(C.NF4Linear(lin).packed, flat)  # the same bytes
    if cols % 64:  # bitsandbytes 0.50's CPU dequantize_4bit kernel is wrong when blocks cross
        return  # rows (its generic path agrees with ours): compare dequantized with cols = 128
    deq = C.grid_dequantize(codes, absmax, C.nf4_levels())
    ref = bnbf.dequantize_4bit(packed, state)
    assert ref.dtype == deq.dtype == torch.float32
    assert torch.allclose(deq, ref, rtol=0, atol=2e-7 * float(absmax.max()))


def test_grid_quantize_picks_the_nearest_level() -> None:
    lv = C.nf4_levels()
    w = torch.randn(8, 64, generator=_rng(10))
    codes, absmax = C.grid_quantize(w, lv, 32)
    x = w.reshape(-1, 32) / absmax[:, None]
    dist = (x[..., None] - lv).abs()  # every level
    chosen = dist.gather(-1, codes.reshape(-1, 32, 1).long())[..., 0]
    assert torch.allclose(chosen, dist.min(-1).values, rtol=0, atol=1e-7)
    assert (codes.reshape(-1, 32).amax(1) == 15).any()  # +absmax is level 15 (1.0) ...
    w2 = torch.zeros(64)
    w2[0] = -2.0
    assert C.grid_quantize(w2, lv)[0][0] == 0  # ... and -absmax level 0


def test_grid_dequantize_inverts_on_the_grid_and_bounds_the_error() -> None:
    lv = C.nf4_levels()
    w = torch.randn(16, 64, generator=_rng(11))
    codes, absmax = C.grid_quantize(w, lv, 64)
    deq = C.grid_dequantize(codes, absmax, lv)
    gap = lv.diff().max() / 2  # half the widest gap, in units of the block's absmax
    assert ((deq - w).abs() <= gap * absmax[:, None] + 1e-6).all()
    again = C.grid_quantize(deq, lv, 64)  # the grid's own points come back unchanged
    assert torch.equal(again[0], codes) and torch.allclose(again[1], absmax)


def test_uniform_levels_grid_agrees_with_quantize_groups() -> None:
    w = torch.randn(8, 32, generator=_rng(12), dtype=F64)
    lv = C.uniform_levels(4)
    assert lv.numel() == 15 and lv[0] == -1 and lv[-1] == 1
    codes, absmax = C.grid_quantize(w, lv, 16)
    deq = C.grid_dequantize(codes, absmax, lv).double()
    assert torch.allclose(deq, C.quantize(w, 4, "group", 16), atol=1e-6)


def test_nf4_linear_stores_packed_codes_and_multiplies_by_the_dequantized_weight() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 24, bias=False)
    layer = C.NF4Linear(lin)
    codes, absmax = C.grid_quantize(lin.weight.detach(), C.nf4_levels(), 64)
    assert layer.packed.dtype == torch.uint8 and layer.packed.numel() == 64 * 24 // 2
    assert layer.nbytes() == 64 * 24 // 2 + 4 * (64 * 24 // 64)
    flat = codes.reshape(-1)
    assert torch.equal(layer.packed, flat[0::2] * 16 + flat[1::2])  # first code, high nibble
    w = C.grid_dequantize(codes, absmax, C.nf4_levels())
    assert torch.equal(layer.dequantized(), w)
    x = torch.randn(5, 3, 64, generator=_rng(13))
    assert torch.equal(layer(x), F.linear(x, w))
    assert not list(layer.parameters())  # frozen: buffers only
    small = C.NF4Linear(lin, block_size=32)  # smaller blocks: more scales, a closer weight
    assert small.absmax.numel() == 64 * 24 // 32 and small.nbytes() == 64 * 24 // 2 + 4 * 48
    assert torch.equal(small.absmax, lin.weight.detach().reshape(-1, 32).abs().amax(1))
    with pytest.raises(ValueError, match="bias"):
        C.NF4Linear(nn.Linear(64, 2))


# ------------------------------------------------------------------------------------ GPTQ


def _correlated_inputs(seed: int, n: int = 256, d: int = 16) -> torch.Tensor:
    """Inputs whose columns are strongly correlated: a few factors and a little noise."""
    g = _rng(seed)
    factors = torch.randn(n, 3, generator=g, dtype=F64)
    mix = torch.randn(3, d, generator=g, dtype=F64)
    return factors @ mix + 0.1 * torch.randn(n, d, generator=g, dtype=F64)


GRANULARITIES = [
    ("tensor", None, True),
    ("tensor", None, False),
    ("channel", None, True),
    ("channel", None, False),
    ("group", 4, True),
    ("group", 4, False),
]


@pytest.mark.parametrize(("granularity", "gs", "symmetric"), GRANULARITIES)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_with_a_diagonal_hessian_is_round_to_nearest(
    granularity: str, gs: int | None, symmetric: bool, bits: int
) -> None:
    g = _rng(14)
    w = torch.randn(6, 12, generator=g, dtype=F64)
    h = torch.diag(torch.rand(12, generator=g, dtype=F64) + 0.1)
    q = C.gptq(w, h, bits, granularity, gs, symmetric)  # type: ignore[arg-type]
    assert torch.equal(q, C.quantize(w, bits, granularity, gs, symmetric))  # type: ignore[arg-type]


def _round_channel(v: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    return torch.clamp(torch.round(v / scale), -qmax, qmax) * scale


@pytest.mark.parametrize("damp", [0.0, 0.3])
def test_gptq_columns_are_least_squares_given_the_columns_already_rounded(damp: float) -> None:
    """Three columns by hand: round column 0; choose columns 1, 2 to minimize the output error
    ||X (w - w_orig)||^2 (plus the damping's ridge) with column 0 fixed, by least squares; round
    column 1; re-solve column 2 with 0 and 1 fixed; round it. GPTQ must give the same."""
    g = _rng(15)
    n = 50
    x = torch.randn(n, 3, generator=g, dtype=F64) @ torch.tensor(
        [[1.0, 0.8, 0.3], [0.0, 0.6, -0.5], [0.0, 0.0, 0.4]], dtype=F64
    )
    w = torch.randn(16, 3, generator=g, dtype=F64)
    h = C.layer_hessian(x)
    bits, qmax = 3, 3
    scale = w.abs().amax(1, keepdim=True) / qmax  # per channel, from the original weight
    lam = damp * float(torch.diagonal(h).mean())  # ridge lam * ||d||^2 = damping of H
    # minimizing (2/n)||X d||^2 + lam ||d||^2 is least squares on [X; sqrt(lam n / 2) I]
    xa = torch.cat([x, math.sqrt(lam * n / 2) * torch.eye(3, dtype=F64)])
    cur = w.clone()
    q = torch.zeros_like(w)
    for j in range(3):
        q[:, j : j + 1] = _round_channel(cur[:, j : j + 1], scale, qmax)
        if j < 2:
            fixed = q[:, : j + 1] - w[:, : j + 1]  # the moves already made, (out, j + 1)
            rest = torch.linalg.lstsq(xa[:, j + 1 :], -(xa[:, : j + 1] @ fixed.T)).solution
            cur[:, j + 1 :] = w[:, j + 1 :] + rest.T
    ours = C.gptq(w, h, bits, "channel", damp=damp)
    assert torch.allclose(ours, q, rtol=0, atol=1e-12)
    assert not torch.equal(q, C.quantize(w, bits, "channel"))  # the update did move something
    if damp:  # the damping is used: the undamped answer differs here
        assert not torch.allclose(C.gptq(w, h, bits, "channel", damp=0.0), ours)


def _round_on(col: torch.Tensor, grid: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round ``col`` (out, 1) on the grid that the rows of ``grid`` (out, k) set, written out."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return _round_channel(col, grid.abs().amax(1, keepdim=True) / qmax, qmax)
    top = 2**bits - 1
    lo, hi = grid.amin(1, keepdim=True).clamp(max=0), grid.amax(1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / top
    z = torch.round(-lo / scale)
    return (torch.clamp(torch.round(col / scale) + z, 0, top) - z) * scale


def _gptq_by_least_squares(
    w: torch.Tensor, x: torch.Tensor, bits: int, group: int | None, symmetric: bool
) -> torch.Tensor:
    """GPTQ without its algebra: round the columns in order, and after each, set the columns not
    yet rounded to the least-squares best given all those rounded so far. The grid is the row's
    (from the original weight) or, per group, the group's columns as they stand when reached."""
    cols = w.shape[1]
    cur, q = w.clone(), torch.zeros_like(w)
    grid = w
    for j in range(cols):
        if group is not None and j % group == 0:
            grid = cur[:, j : j + group].clone()
        q[:, j : j + 1] = _round_on(cur[:, j : j + 1], grid, bits, symmetric)
        if j + 1 < cols:
            fixed = q[:, : j + 1] - w[:, : j + 1]
            rest = torch.linalg.lstsq(x[:, j + 1 :], -(x[:, : j + 1] @ fixed.T)).solution
            cur[:, j + 1 :] = w[:, j + 1 :] + rest.T
    return q


@pytest.mark.parametrize(
    ("group", "symmetric"), [(None, True), (None, False), (2, True), (3, False)]
)
def test_gptq_equals_column_by_column_least_squares(group: int | None, symmetric: bool) -> None:
    x = _correlated_inputs(53, n=60, d=6)
    w = torch.randn(10, 6, generator=_rng(54), dtype=F64)
    gran = "channel" if group is None else "group"
    ours = C.gptq(w, C.layer_hessian(x), 3, gran, group, symmetric, damp=0.0)  # type: ignore[arg-type]
    ref = _gptq_by_least_squares(w, x, 3, group, symmetric)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-10)
    assert not torch.allclose(ref, C.quantize(w, 3, gran, group, symmetric))  # type: ignore[arg-type]


def test_gptq_first_column_update_is_the_obs_formula_on_three_columns() -> None:
    """After column 0 is fixed at q0, the best w[1:] (least squares, written here as the normal
    equations) is w[1:] - H[1:,1:]^-1 H[1:,0] (q0 - w0); GPTQ's rounding of column 1 must be
    that of this updated column."""
    g = _rng(16)
    x = _correlated_inputs(16, n=80, d=3)
    h = C.layer_hessian(x)
    w = torch.randn(5, 3, generator=g, dtype=F64)
    q = C.gptq(w, h, 2, "channel", damp=0.0)
    d0 = q[:, 0] - w[:, 0]
    upd = w[:, 1:] - (torch.linalg.solve(h[1:, 1:], h[1:, :1]) @ d0[None, :]).T
    scale = w.abs().amax(1, keepdim=True) / 1  # 2 bits: qmax = 1
    assert torch.equal(q[:, 1:2], _round_channel(upd[:, :1], scale, 1))


def test_gptq_beats_round_to_nearest_on_correlated_inputs() -> None:
    wins, ratios = 0, []
    for seed in range(12):
        x = _correlated_inputs(100 + seed)
        w = torch.randn(8, 16, generator=_rng(200 + seed), dtype=F64)
        h = C.layer_hessian(x)
        e_gptq = C.output_error(w, C.gptq(w, h, 3, "channel"), h)
        e_rtn = C.output_error(w, C.quantize(w, 3, "channel"), h)
        wins += e_gptq < e_rtn
        ratios.append(e_gptq / e_rtn)
    assert wins >= 10  # a clear majority of 12 seeds
    assert sum(ratios) / len(ratios) < 0.7  # and on average


def test_gptq_damping_makes_a_rank_deficient_hessian_usable() -> None:
    x = torch.randn(4, 8, generator=_rng(51), dtype=F64)  # 4 tokens: H has rank 4 of 8
    w = torch.randn(3, 8, generator=_rng(52), dtype=F64)
    h = C.layer_hessian(x)
    assert (torch.diagonal(h) > 0).all()  # no dead input to fix up
    q = C.gptq(w, h, 4, "channel")  # the default damping, 1% of the mean diagonal
    assert torch.isfinite(q).all()
    assert C.output_error(w, q, h) < C.output_error(w, C.quantize(w, 4, "channel"), h)
    with pytest.raises(ValueError, match=r"^h\b"):
        C.gptq(w, h, 4, "channel", damp=0.0)


def test_gptq_ignores_dead_inputs() -> None:
    x = _correlated_inputs(17, d=8)
    x[:, 2] = 0.0  # an input that never fires: H singular without the fix-up
    w = torch.randn(4, 8, generator=_rng(18), dtype=F64)
    q = C.gptq(w, C.layer_hessian(x), 4, "channel", damp=0.0)
    assert torch.isfinite(q).all() and (q[:, 2] == 0).all()


def test_layer_hessian_is_2_xtx_over_n_and_the_autograd_hessian() -> None:
    x = torch.randn(30, 5, generator=_rng(19), dtype=torch.float32)
    h = C.layer_hessian(x)
    xd = x.double()
    assert h.dtype == F64 and torch.allclose(h, 2 * xd.T @ xd / 30, rtol=1e-14, atol=0)
    w0 = torch.randn(5, generator=_rng(20), dtype=F64)
    w = w0.clone().requires_grad_(True)
    auto = measure.hessian(lambda: ((xd @ w - xd @ w0) ** 2).mean(), [w])
    assert torch.allclose(auto, h, rtol=1e-12, atol=1e-12)


def test_output_error_is_the_mean_squared_output_difference() -> None:
    x = _correlated_inputs(21, n=40, d=6)
    w = torch.randn(3, 6, generator=_rng(22), dtype=F64)
    q = C.quantize(w, 3)
    direct = float(((x @ w.T - x @ q.T) ** 2).sum() / 40)
    assert C.output_error(w, q, C.layer_hessian(x)) == pytest.approx(direct, rel=1e-12)


# ------------------------------------------------------------------------------------- AWQ


def _outlier_channels(seed: int, n: int = 128, d: int = 16) -> torch.Tensor:
    g = _rng(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    x[:, :2] *= 30  # two channels carry large activations
    return x


@pytest.mark.parametrize("seed", range(4))
def test_awq_is_never_worse_than_round_to_nearest_and_alpha_in_the_grid(seed: int) -> None:
    x = _outlier_channels(seed)
    w = torch.randn(8, 16, generator=_rng(50 + seed), dtype=F64)
    q, alpha = C.awq(w, x, 3, "group", group_size=8, grid=10)
    h = C.layer_hessian(x)
    rtn = C.quantize(w, 3, "group", 8, symmetric=False)
    # By construction (alpha = 0 is in the grid and is round to nearest), not a finding:
    assert C.output_error(w, q, h) <= C.output_error(w, rtn, h) * (1 + 1e-12)
    assert 0 <= alpha < 1 and round(alpha * 10) == pytest.approx(alpha * 10)


def test_awq_weight_is_the_scaled_rounding_for_its_alpha_and_helps_outlier_channels() -> None:
    x = _outlier_channels(23)
    w = torch.randn(8, 16, generator=_rng(24), dtype=F64)
    q, alpha = C.awq(w, x, 3, "channel", symmetric=True)
    s = x.abs().mean(0) ** alpha
    assert torch.allclose(q, C.quantize(w * s, 3, "channel") / s, rtol=1e-12, atol=1e-12)
    h = C.layer_hessian(x)
    assert alpha > 0  # the finding: scaling up the busy channels pays on such inputs
    assert C.output_error(w, q, h) < 0.8 * C.output_error(w, C.quantize(w, 3, "channel"), h)
    q1, a1 = C.awq(w, x, 3, "channel", symmetric=True, grid=1)  # only alpha = 0: RTN itself
    assert a1 == 0.0 and torch.equal(q1, C.quantize(w, 3, "channel"))


# ------------------------------------------------------------------------- LLM.int8(), smoothing


def _int8_rows(t: torch.Tensor) -> torch.Tensor:
    """Vector-wise int8 of each row, written out: round(t * 127 / absmax) * absmax / 127."""
    a = t.abs().amax(1, keepdim=True)
    return torch.clamp(torch.round(t / (a / 127)), -127, 127) * (a / 127)


def test_int8_matmul_without_threshold_is_vectorwise_int8() -> None:
    g = _rng(25)
    x = torch.randn(10, 16, generator=g, dtype=F64)
    w = torch.randn(7, 16, generator=g, dtype=F64)
    y = C.int8_matmul(x, w, threshold=None)
    assert torch.allclose(y, _int8_rows(x) @ _int8_rows(w).T, rtol=1e-13, atol=1e-13)
    yt = C.int8_matmul(x, w, threshold=None, activations="tensor")
    xt = _int8_rows(x.reshape(1, -1)).reshape(x.shape)  # one scale for all of x
    assert torch.allclose(yt, xt @ _int8_rows(w).T, rtol=1e-13, atol=1e-13)
    assert not torch.allclose(y, yt)


def test_int8_matmul_threshold_keeps_outlier_columns_exact() -> None:
    g = _rng(26)
    x = torch.randn(12, 16, generator=g, dtype=F64)
    x[:, 5] *= 60  # an outlier column: it sets every row's scale when quantized
    w = torch.randn(6, 16, generator=g, dtype=F64)
    exact = x @ w.T
    keep = (x.abs() >= 6.0).any(0)
    assert keep[5] and keep.sum() < 16
    y = C.int8_matmul(x, w, threshold=6.0)
    rest = C.int8_matmul(x[:, ~keep], w[:, ~keep], threshold=None)
    assert torch.allclose(y, rest + x[:, keep] @ w[:, keep].T, rtol=1e-13, atol=1e-12)
    err_split = (y - exact).abs().max()
    err_plain = (C.int8_matmul(x, w, threshold=None) - exact).abs().max()
    assert err_split < err_plain / 20


def test_int8_matmul_with_every_column_an_outlier_is_exact() -> None:
    x = torch.full((3, 4), 10.0, dtype=F64)
    w = torch.randn(2, 4, generator=_rng(27), dtype=F64)
    assert torch.allclose(C.int8_matmul(x, w, threshold=6.0), x @ w.T)


def test_smoothquant_scales_keep_the_product_and_balance_the_ranges() -> None:
    g = _rng(28)
    x = torch.randn(20, 8, generator=g, dtype=F64)
    x[:, 3] *= 50
    w = torch.randn(5, 8, generator=g, dtype=F64)
    for alpha in (0.0, 0.3, 0.5, 0.8, 1.0):
        s = C.smoothquant_scales(x, w, alpha)
        assert s.shape == (8,) and (s > 0).all()
        assert torch.allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-12, atol=1e-12)
    s = C.smoothquant_scales(x, w, 0.5)
    ax, aw = x.abs().amax(0), w.abs().amax(0)
    assert torch.allclose(ax / s, aw * s, rtol=1e-12)  # alpha = 1/2: equal ranges
    assert torch.allclose(ax / C.smoothquant_scales(x, w, 1.0), torch.ones(8, dtype=F64))
    assert torch.allclose(aw * C.smoothquant_scales(x, w, 0.0), torch.ones(8, dtype=F64))


# ----------------------------------------------------------------------------------- BitNet


def test_ternarize_takes_three_values_at_the_mean_absolute_weight() -> None:
    w = torch.randn(16, 24, generator=_rng(29), dtype=F64)
    t = C.ternarize(w)
    gamma = w.abs().mean()
    assert set(torch.unique(t / gamma).round().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.allclose(t, gamma * torch.clamp(torch.round(w / gamma), -1, 1), rtol=0, atol=0)
    assert ((t == 0) == (w.abs() < gamma / 2)).all()  # round: |w| < gamma / 2 goes to zero


def _int8_tokens(x: torch.Tensor) -> torch.Tensor:
    s = x.abs().amax(-1, keepdim=True) / 127
    return torch.clamp(torch.round(x / s), -127, 127) * s


def test_bitlinear_forward_and_straight_through_gradient() -> None:
    torch.manual_seed(1)
    layer = C.BitLinear(12, 5)
    x = torch.randn(3, 4, 12, generator=_rng(30), requires_grad=True)
    y = layer(x)
    w_q = C.ternarize(layer.weight.detach()).requires_grad_(True)
    x_q = _int8_tokens(x.detach()).requires_grad_(True)
    ref = F.linear(x_q, w_q, layer.bias.detach())
    assert torch.allclose(y, ref, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(y, F.linear(x, layer.weight, layer.bias), atol=1e-3)
    up = torch.randn(y.shape, generator=_rng(31))
    (y * up).sum().backward()
    (ref * up).sum().backward()
    assert torch.allclose(layer.weight.grad, w_q.grad, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    assert torch.allclose(x.grad, x_q.grad, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]


def test_to_bitnet_replaces_only_the_block_linears() -> None:
    model = _tiny_gpt(2)
    before = copy.deepcopy(model)
    ids = _ids(32)
    out = C.to_bitnet(model)
    assert out is model
    for i, block in enumerate(model.blocks):
        for name in BLOCK_LINEARS:
            lin = block.get_submodule(name)
            assert type(lin) is C.BitLinear
            assert torch.equal(lin.weight, before.blocks[i].get_submodule(name).weight)
    assert type(model.head) is nn.Linear and model.head.weight is model.tok_emb.weight
    assert torch.equal(model.tok_emb.weight, before.tok_emb.weight)
    assert type(model.tok_emb) is nn.Embedding and type(model.blocks[0].norm1) is type(
        before.blocks[0].norm1
    )
    assert not torch.allclose(model(ids)[0], before(ids)[0])


# ------------------------------------------------------------------------------- LoRA, QLoRA


def test_lora_linear_starts_at_the_base_and_adds_alpha_over_r_b_a() -> None:
    torch.manual_seed(3)
    base = nn.Linear(10, 6, bias=False)
    lora = C.LoRALinear(base, r=3, alpha=12.0)
    x = torch.randn(4, 10, generator=_rng(33))
    assert torch.equal(lora(x), base(x))  # B = 0
    assert lora.A.shape == (3, 10) and lora.B.shape == (6, 3)
    with torch.no_grad():
        lora.B.copy_(torch.randn(6, 3, generator=_rng(34)))
    delta = 12.0 / 3 * lora.B @ lora.A
    assert torch.allclose(lora.delta(), delta, rtol=1e-6, atol=1e-7)
    assert torch.allclose(lora(x), x @ (base.weight + delta).T, rtol=1e-5, atol=1e-6)
    merged = lora.merged()
    assert type(merged) is nn.Linear
    assert torch.allclose(merged(x), lora(x), rtol=1e-5, atol=1e-6)
    assert C.LoRALinear(nn.Linear(10, 6, bias=False), r=2).scaling == 1.0  # alpha = r by default
    assert lora.A.abs().max() <= 1 / math.sqrt(10)  # Kaiming uniform, a = sqrt(5)
    assert not base.weight.requires_grad


def test_lora_merged_keeps_the_base_bias() -> None:
    torch.manual_seed(4)
    lora = C.LoRALinear(nn.Linear(6, 4), r=2)
    with torch.no_grad():
        lora.B.normal_()
    x = torch.randn(3, 6, generator=_rng(35))
    assert torch.allclose(lora.merged()(x), lora(x), rtol=1e-5, atol=1e-6)


def _lora_count(model: GPT, targets: Sequence[str], r: int) -> int:
    total = 0
    for block in model.blocks:
        for name, mod in block.named_modules():
            if isinstance(mod, nn.Linear | C.NF4Linear) and name.rpartition(".")[2] in targets:
                total += r * (mod.in_features + mod.out_features)
    return total


@pytest.mark.parametrize("targets", [C.LORA_TARGETS, ("q_proj", "v_proj"), ("w2",)])
def test_add_lora_freezes_the_model_and_merge_gives_the_same_logits(
    targets: tuple[str, ...],
) -> None:
    model = _tiny_gpt(5)
    expected = _lora_count(model, targets, 2)
    ids = _ids(36)
    before = model(ids)[0]
    adapters = C.add_lora(model, r=2, alpha=4.0, targets=targets)
    assert len(adapters) == 2 * len(targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == expected
    assert {id(p) for p in trainable} == {id(p) for a in adapters for p in (a.A, a.B)}
    assert torch.equal(model(ids)[0], before)  # B = 0
    for a in adapters:
        with torch.no_grad():
            a.B.normal_(0, 0.1, generator=_rng(37))
    adapted = model(ids)[0]
    assert not torch.allclose(adapted, before)
    C.merge_lora(model)
    assert not any(isinstance(m, C.LoRALinear) for m in model.modules())
    assert torch.allclose(model(ids)[0], adapted, rtol=1e-5, atol=1e-5)


def test_qlora_wraps_nf4_layers_and_trains_only_a_and_b() -> None:
    model = _tiny_gpt(6)
    ids = _ids(38)
    out = C.quantize_base(model)
    assert out is model
    for block in model.blocks:
        for name in BLOCK_LINEARS:
            assert type(block.get_submodule(name)) is C.NF4Linear
    nf4_logits = model(ids)[0]
    adapters = C.add_lora(model, r=2)
    assert len(adapters) == 12 and all(type(a.base) is C.NF4Linear for a in adapters)
    assert torch.equal(model(ids)[0], nf4_logits)
    for a in adapters:
        with torch.no_grad():
            a.B.normal_(0, 0.1, generator=_rng(39))
    _, loss = model(ids, targets=ids)
    assert loss is not None
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(n.endswith((".A", ".B")) for n in with_grad)
    assert len(with_grad) == 24
    adapted = model(ids)[0].detach()
    C.merge_lora(model)
    assert torch.allclose(model(ids)[0], adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_lora_equals_peft_outputs_gradients_and_init() -> None:
    peft = pytest.importorskip("peft")
    torch.manual_seed(7)
    r, lora_alpha = 2, 6.0
    base = nn.Sequential(nn.Linear(8, 6, bias=False), nn.Tanh(), nn.Linear(6, 4, bias=False))
    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=["0", "2"]),
        copy.deepcopy(base),
    )
    ours = copy.deepcopy(base)
    ours[0] = C.LoRALinear(ours[0], r, lora_alpha)
    ours[2] = C.LoRALinear(ours[2], r, lora_alpha)
    for i, fan_in in ((0, 8), (2, 6)):  # the same init family: Kaiming uniform, a = sqrt(5)
        a_theirs = theirs[i].lora_A["default"].weight
        assert a_theirs.abs().max() <= 1 / math.sqrt(fan_in)
        assert ours[i].A.abs().max() <= 1 / math.sqrt(fan_in)
        assert a_theirs.abs().max() > 0.5 / math.sqrt(fan_in)  # uniform over the whole range
        assert (theirs[i].lora_B["default"].weight == 0).all() and (ours[i].B == 0).all()
        assert theirs[i].scaling["default"] == ours[i].scaling
        g = _rng(40 + i)
        a = torch.randn(ours[i].A.shape, generator=g)
        b = torch.randn(ours[i].B.shape, generator=g)
        with torch.no_grad():
            theirs[i].lora_A["default"].weight.copy_(a)
            theirs[i].lora_B["default"].weight.copy_(b)
            ours[i].A.copy_(a)
            ours[i].B.copy_(b)
    x = torch.randn(5, 8, generator=_rng(42))
    y_t, y_o = theirs(x), ours(x)
    assert torch.allclose(y_t, y_o, rtol=1e-6, atol=1e-6)
    y_t.square().sum().backward()
    y_o.square().sum().backward()
    for i in (0, 2):
        assert torch.allclose(theirs[i].lora_A["default"].weight.grad, ours[i].A.grad, atol=1e-5)
        assert torch.allclose(theirs[i].lora_B["default"].weight.grad, ours[i].B.grad, atol=1e-5)
    trainable = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.lora_{m}.default.weight" for i in (0, 2) for m in "AB"}


@pytest.mark.slow
def test_add_lora_on_gpt_equals_peft_on_the_same_targets() -> None:
    peft = pytest.importorskip("peft")
    targets = ["q_proj", "v_proj", "w1"]
    base = _tiny_gpt(8)
    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=2, lora_alpha=5.0, lora_dropout=0.0, target_modules=targets),
        copy.deepcopy(base),
    )
    ours = copy.deepcopy(base)
    adapters = C.add_lora(ours, r=2, alpha=5.0, targets=targets)
    g = _rng(43)
    k = 0
    for i, block in enumerate(ours.blocks):
        for name in ("attn.q_proj", "attn.v_proj", "ffn.w1"):
            mine = block.get_submodule(name)
            other = theirs.blocks[i].get_submodule(name)
            assert mine is adapters[k] or mine in adapters
            k += 1
            a = torch.randn(mine.A.shape, generator=g) * 0.1
            b = torch.randn(mine.B.shape, generator=g) * 0.1
            with torch.no_grad():
                mine.A.copy_(a)
                mine.B.copy_(b)
                other.lora_A["default"].weight.copy_(a)
                other.lora_B["default"].weight.copy_(b)
    ids = _ids(44)
    lt, lo = theirs(ids, targets=ids)[1], ours(ids, targets=ids)[1]
    assert torch.allclose(theirs(ids)[0], ours(ids)[0], rtol=1e-5, atol=1e-6)
    lt.backward()
    lo.backward()
    for i, block in enumerate(ours.blocks):
        for name in ("attn.q_proj", "attn.v_proj", "ffn.w1"):
            mine = block.get_submodule(name)
            other = theirs.blocks[i].get_submodule(name)
            assert torch.allclose(mine.A.grad, other.lora_A["default"].weight.grad, atol=1e-6)
            assert torch.allclose(mine.B.grad, other.lora_B["default"].weight.grad, atol=1e-6)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_theirs == sum(p.numel() for p in ours.parameters() if p.requires_grad)


# ---------------------------------------------------------------------- speculative sampling

Table = dict[tuple[int, ...], torch.Tensor]


def _table(vocab: int, seed: int, zeros: float, memory: int = 2) -> Table:
    """A random next-token distribution for every history of up to ``memory`` tokens (longer
    histories use their last ``memory``), with entries set to zero at random."""
    g = _rng(seed)
    out: Table = {}
    for m in range(memory + 1):
        for hist in itertools.product(range(vocab), repeat=m):
            p = torch.rand(vocab, generator=g, dtype=F64) + 0.05
            p[torch.rand(vocab, generator=g) < zeros] = 0.0
            if p.sum() == 0:
                p[int(torch.randint(vocab, (1,), generator=g))] = 1.0
            out[hist] = p / p.sum()
    return out


def _dist(table: Table, memory: int = 2) -> Callable[[Sequence[int]], torch.Tensor]:
    return lambda seq: table[tuple(seq)[-memory:] if memory and len(seq) else ()]


def _joint(p: Callable[[Sequence[int]], torch.Tensor], vocab: int, n: int, prefix=()):  # type: ignore[no-untyped-def]
    """The target's own probability of every n-token continuation: product of conditionals."""
    out = {}
    for seq in itertools.product(range(vocab), repeat=n):
        prob = 1.0
        for i, t in enumerate(seq):
            prob *= float(p([*prefix, *seq[:i]])[t])
        if prob > 0:
            out[seq] = prob
    return out


def _max_gap(a: dict, b: dict) -> float:  # type: ignore[type-arg]
    return max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


CASES = [(2, 1, 1), (2, 3, 3), (3, 2, 2), (3, 1, 3), (4, 2, 1), (4, 1, 2), (2, 2, 3), (3, 3, 1)]


@pytest.mark.parametrize(("vocab", "gamma", "n"), CASES)
def test_exact_output_distribution_is_the_targets_own(vocab: int, gamma: int, n: int) -> None:
    seed = 100 * vocab + 10 * gamma + n
    tp, tq = _table(vocab, seed, 0.3), _table(vocab, seed + 1, 0.3)
    p, q = _dist(tp), _dist(tq)
    for prefix in ((), (1,)):
        got = C.exact_output_distribution(p, q, vocab, gamma, n, prefix)
        want = _joint(p, vocab, n, prefix)
        assert _max_gap(got, want) < 1e-12
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)


def test_exact_output_distribution_tables_have_zeros_on_both_sides() -> None:
    """The comparison above covers a draft that is 0 where the target is not and vice versa."""
    both = [0, 0]
    for vocab, gamma, n in CASES:
        seed = 100 * vocab + 10 * gamma + n
        tp, tq = _table(vocab, seed, 0.3), _table(vocab, seed + 1, 0.3)
        for k in tp:
            both[0] += int(((tq[k] == 0) & (tp[k] > 0)).any())
            both[1] += int(((tp[k] == 0) & (tq[k] > 0)).any())
    assert both[0] > 5 and both[1] > 5


def test_a_variant_that_resamples_from_p_after_rejection_fails_the_same_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vocab, gamma, n = 3, 2, 2
    p, q = _dist(_table(vocab, 7, 0.2)), _dist(_table(vocab, 8, 0.2))
    want = _joint(p, vocab, n)
    assert _max_gap(C.exact_output_distribution(p, q, vocab, gamma, n), want) < 1e-12
    monkeypatch.setattr(C, "residual", lambda pp, qq: pp)  # the usual mistake
    assert _max_gap(C.exact_output_distribution(p, q, vocab, gamma, n), want) > 1e-3


def _batched(p: Callable[[Sequence[int]], torch.Tensor]):  # type: ignore[no-untyped-def]
    """The target's call in speculative_step: distributions at the last k positions."""

    def target(seq: Sequence[int], k: int) -> torch.Tensor:
        seq = list(seq)
        return torch.stack([p(seq[: len(seq) - k + 1 + i]) for i in range(k)])

    return target


def test_speculative_step_monte_carlo_first_token_accepted_count_and_tokens_per_call() -> None:
    """Context-free target and draft: every draft token is accepted independently with
    probability alpha = sum_x min(p, q), so the count accepted is a truncated geometric; the
    first token emitted is distributed as p; the tokens per round average (1 - a^(g+1))/(1 - a)."""
    p = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=F64)
    q = torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=F64)  # zeros on both sides
    alpha, gamma, runs = float(torch.minimum(p, q).sum()), 3, 3000
    g = _rng(45)
    firsts, counts, lengths = torch.zeros(4), torch.zeros(gamma + 1), []
    for _ in range(runs):
        out, a = C.speculative_step([0], _batched(lambda s: p), lambda s: q, gamma, g)
        assert 1 <= len(out) == a + 1 <= gamma + 1
        firsts[out[0]] += 1
        counts[a] += 1
        lengths.append(len(out))
    assert firsts[3] == 0  # p(3) = 0 is never emitted, though the draft proposes it
    assert stats.chisquare(firsts[:3].numpy(), runs * p[:3].numpy()).pvalue > 1e-3
    closed = [alpha**k * (1 - alpha) for k in range(gamma)] + [alpha**gamma]
    assert stats.chisquare(counts.numpy(), runs * torch.tensor(closed).numpy()).pvalue > 1e-3
    mean, se = sum(lengths) / runs, torch.tensor(lengths, dtype=F64).std().item() / runs**0.5
    assert abs(mean - C.expected_tokens_per_call(alpha, gamma)) < 4 * se


def test_speculative_step_that_resamples_from_p_fails_the_monte_carlo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=F64)
    q = torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=F64)
    monkeypatch.setattr(C, "residual", lambda pp, qq: pp)
    g, firsts = _rng(45), torch.zeros(4)
    for _ in range(3000):
        firsts[C.speculative_step([0], _batched(lambda s: p), lambda s: q, 3, g)[0][0]] += 1
    assert stats.chisquare(firsts[:3].numpy(), 3000 * p[:3].numpy()).pvalue < 1e-6


def test_speculative_step_with_deterministic_models_emits_the_targets_tokens() -> None:
    """Target: the next token is (last + 1) mod 5, surely. A draft equal to it is always accepted
    and the bonus token comes from the target's last row; a draft wrong from its third proposal
    on keeps two; a draft always wrong keeps none, and the residual gives the target's token."""
    vocab, gamma = 5, 4

    def onehot(t: int) -> torch.Tensor:
        return F.one_hot(torch.tensor(t % vocab), vocab).double()

    target = _batched(lambda s: onehot(s[-1] + 1))
    right = [(3 + i) % vocab for i in range(1, gamma + 2)]
    cases = [
        (lambda s: onehot(s[-1] + 1), gamma),
        (lambda s: onehot(s[-1] + (1 if len(s) < 4 else 2)), 2),
        (lambda s: onehot(s[-1] + 2), 0),
    ]
    for draft, kept in cases:
        out, a = C.speculative_step([0, 3], target, draft, gamma, _rng(55))
        assert a == kept and out == right[: kept + 1]


def test_expected_tokens_per_call_closed_form() -> None:
    assert C.expected_tokens_per_call(1.0, 4) == 5.0
    assert C.expected_tokens_per_call(0.0, 4) == 1.0
    for a, gm in ((0.3, 1), (0.7, 3), (0.9, 5)):
        assert C.expected_tokens_per_call(a, gm) == pytest.approx(
            sum(a**k for k in range(gm + 1)), rel=1e-14
        )


def test_speculative_generate_returns_the_tokens_asked_for() -> None:
    target, draft = _tiny_gpt(9), _tiny_gpt(10, d_model=8, n_layers=1)
    target.train()
    out, accepted = C.speculative_generate(target, draft, [1, 2], 7, 3, generator=_rng(46))
    assert len(out) == 7 and all(0 <= t < 11 for t in out)
    assert all(0 <= a <= 3 for a in accepted)
    assert sum(a + 1 for a in accepted) >= 7 > sum(a + 1 for a in accepted[:-1])
    assert target.training and not draft.training  # modes restored
    same, acc = C.speculative_generate(target, target, [1], 8, 2, generator=_rng(47))
    assert len(same) == 8 and all(a == 2 for a in acc)  # a draft equal to the target: all kept
    with pytest.raises(ValueError, match="vocabulary"):
        C.speculative_generate(target, _tiny_gpt(11, vocab_size=12), [1], 3, 2)
    with pytest.raises(ValueError, match="block_size"):
        C.speculative_generate(target, draft, [1, 2, 3], 12, 2)
    with pytest.raises(ValueError, match="prompt"):
        C.speculative_generate(target, draft, [], 3, 2)


# -------------------------------------------------------------------------- paged KV cache


def _kv(n: int, seed: int, heads: int = 2, dim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = _rng(seed)
    return torch.randn(n, heads, dim, generator=g), torch.randn(n, heads, dim, generator=g)


def _causal(s: int, n: int) -> torch.Tensor:
    qpos = torch.arange(n - s, n)[:, None]
    return torch.arange(n)[None, :] <= qpos  # query at position i sees keys 0..i


@pytest.mark.parametrize("lengths", [(5,), (3, 4, 6), (1, 1, 1, 1, 1, 1, 1), (9, 2)])
def test_paged_attention_equals_contiguous_attention_exactly(lengths: tuple[int, ...]) -> None:
    cache = C.PagedKVCache(num_blocks=16, block_size=4, heads=2, head_dim=4)
    cache.new(9)  # taken and given back: the pool hands out blocks 2, 1, 0 next, in that order
    cache.append(9, *_kv(12, 59))
    cache.release(9)
    cache.new(0)
    cache.new(1)  # an interleaved neighbour: the blocks of seq 0 are not contiguous
    ks, vs = [], []
    for i, n in enumerate(lengths):
        k, v = _kv(n, 60 + i)
        cache.append(0, k, v)
        cache.append(1, *_kv(2, 90 + i))
        ks.append(k)
        vs.append(v)
    keys, values = torch.cat(ks), torch.cat(vs)
    total = keys.shape[0]
    assert cache.lengths[0] == total and len(cache.tables[0]) == -(-total // 4)
    if lengths != (1,) * 7:  # here logical order is not physical order
        assert cache.tables[0] != sorted(cache.tables[0])
    got_k, got_v = cache.gather(0)
    assert torch.equal(got_k, keys) and torch.equal(got_v, values)
    for s in sorted({1, min(3, total), total}):
        q = torch.randn(2, s, 4, generator=_rng(70 + s))
        ref = F.scaled_dot_product_attention(
            q, keys.transpose(0, 1), values.transpose(0, 1), attn_mask=_causal(s, total)
        )
        assert torch.equal(cache.attend(0, q), ref)
    with pytest.raises(ValueError, match=r"^q\b"):
        cache.attend(0, torch.randn(2, total + 1, 4))


@pytest.mark.parametrize("parent_len", [6, 8])
def test_fork_shares_blocks_and_copies_one_on_write(parent_len: int) -> None:
    cache = C.PagedKVCache(num_blocks=8, block_size=4, heads=1, head_dim=2)
    cache.new(0)
    cache.append(0, *_kv(parent_len, 80, heads=1, dim=2))
    used = cache.blocks_used
    parent = [t.clone() for t in cache.gather(0)]
    cache.fork(0, 1)
    assert cache.blocks_used == used and cache.tables[1] == cache.tables[0]
    assert all(cache.refs[b] == 2 for b in cache.tables[0])
    k, v = _kv(2, 81, heads=1, dim=2)
    cache.append(1, k, v)
    partial = parent_len % 4 != 0
    assert cache.copies == (1 if partial else 0)  # only a shared, partly filled block is copied
    assert cache.blocks_used == used + 1
    assert all(torch.equal(a, b) for a, b in zip(cache.gather(0), parent, strict=True))
    ck, cv = cache.gather(1)
    assert torch.equal(ck, torch.cat([parent[0], k])) and torch.equal(cv, torch.cat([parent[1], v]))
    shared = set(cache.tables[0]) & set(cache.tables[1])
    assert len(shared) == len(cache.tables[0]) - (1 if partial else 0)
    cache.append(0, *_kv(1, 82, heads=1, dim=2))  # the parent now owns its last block alone
    assert cache.copies == (1 if partial else 0)
    assert torch.equal(cache.gather(1)[0], ck)
    cache.release(1)
    assert cache.blocks_used == len(cache.tables[0])
    assert all(cache.refs[b] == 1 for b in cache.tables[0])
    cache.release(0)
    assert cache.blocks_used == 0 and sorted(cache.free) == list(range(8))


def test_paged_cache_runs_out_of_blocks_and_refuses_bad_arguments() -> None:
    cache = C.PagedKVCache(num_blocks=2, block_size=2, heads=1, head_dim=2)
    cache.new(0)
    cache.append(0, *_kv(4, 83, heads=1, dim=2))
    with pytest.raises(MemoryError):
        cache.append(0, *_kv(1, 84, heads=1, dim=2))
    cache.fork(0, 5)
    with pytest.raises(ValueError, match=r"^seq\b"):
        cache.new(0)
    with pytest.raises(KeyError, match="seq"):
        cache.append(3, *_kv(1, 85, heads=1, dim=2))
    with pytest.raises(ValueError, match=r"^k\b"):
        cache.append(0, torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match=r"^k\b"):
        cache.append(0, torch.zeros(1, 1, 2, dtype=F64), torch.zeros(1, 1, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"^v\b"):
        cache.append(0, torch.zeros(1, 1, 2), torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match="^block_size"):
        C.PagedKVCache(num_blocks=2, block_size=0, heads=1, head_dim=2)
    with pytest.raises(TypeError, match="^heads"):
        C.PagedKVCache(num_blocks=2, block_size=2, heads=1.5, head_dim=2)  # type: ignore[arg-type]


# ------------------------------------------------------------------- whole models, calibration


def test_linear_inputs_are_what_each_linear_reads() -> None:
    model = _tiny_gpt(12)
    ids = _ids(48)
    seen = C.linear_inputs(model, ids)
    assert set(seen) == {f"blocks.{i}.{n}" for i in range(2) for n in BLOCK_LINEARS}
    x0 = model.tok_emb(ids) + model.pos_emb(torch.arange(12))
    assert torch.allclose(seen["blocks.0.attn.q_proj"], model.blocks[0].norm1(x0).reshape(-1, 16))
    assert seen["blocks.1.ffn.w2"].shape == (36, model.blocks[1].ffn.w2.in_features)
    assert set(C.linear_inputs(model, ids, [1])) == {f"blocks.1.{n}" for n in BLOCK_LINEARS}


def test_quantize_model_rtn_8_bits_changes_little_and_keeps_the_embedding() -> None:
    model = _tiny_gpt(13)
    ref = copy.deepcopy(model)
    ids = _ids(49)
    errors = C.quantize_model(model, "rtn", 8, calibration=ids)
    assert set(errors) == {f"blocks.{i}.{n}" for i in range(2) for n in BLOCK_LINEARS}
    assert all(e >= 0 for e in errors.values())
    assert torch.equal(model.tok_emb.weight, ref.tok_emb.weight)
    assert torch.equal(model.pos_emb.weight, ref.pos_emb.weight)
    assert model.head.weight is model.tok_emb.weight
    logits, ref_logits = model(ids)[0], ref(ids)[0]
    gap8 = (logits - ref_logits).abs().max() / ref_logits.std()
    assert 0 < gap8 < 0.02
    w = ref.blocks[0].attn.q_proj.weight.double()
    assert torch.equal(model.blocks[0].attn.q_proj.weight, C.quantize(w, 8).float())
    coarse = copy.deepcopy(ref)
    assert C.quantize_model(coarse, "rtn", 2) == {}  # without calibration: no errors to report
    assert (coarse(ids)[0] - ref_logits).abs().max() / ref_logits.std() > 5 * gap8


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_quantize_model_gptq_and_awq_need_calibration_and_report_errors(method: str) -> None:
    model = _tiny_gpt(14)
    with pytest.raises(ValueError, match="calibration"):
        C.quantize_model(model, method, 4)  # type: ignore[arg-type]
    ids = _ids(50, batch=4, seq=16)
    rtn = copy.deepcopy(model)
    emb = model.tok_emb.weight.clone()
    gs = 8 if method == "awq" else None
    gran = "group" if method == "awq" else "channel"
    err = C.quantize_model(model, method, 3, ids, gran, gs, symmetric=method == "gptq")  # type: ignore[arg-type]
    err_rtn = C.quantize_model(rtn, "rtn", 3, ids, gran, gs, symmetric=method == "gptq")  # type: ignore[arg-type]
    assert set(err) == set(err_rtn) == {f"blocks.{i}.{n}" for i in range(2) for n in BLOCK_LINEARS}
    assert torch.equal(model.tok_emb.weight, emb)
    # Block 0's first layers read the same inputs in both runs: the comparison is like for like
    first = [f"blocks.0.attn.{n}" for n in ("q_proj", "k_proj", "v_proj")]
    assert sum(err[k] for k in first) < sum(err_rtn[k] for k in first)


# ----------------------------------------------------------------------------------- bad input

W8 = torch.randn(4, 8)
LV = C.nf4_levels()


def _gpt() -> GPT:
    return _tiny_gpt(15)


def _step(gamma: int = 2, p=None, q=None, vocab_q: int = 3):  # type: ignore[no-untyped-def]
    pp = p if p is not None else torch.full((3,), 1 / 3, dtype=F64)
    qq = q if q is not None else torch.full((vocab_q,), 1 / vocab_q, dtype=F64)
    return C.speculative_step([0], lambda s, k: pp.expand(k, -1), lambda s: qq, gamma)


BAD: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("bits 1", lambda: C.quantize(W8, 1), ValueError, "bits"),
    ("bits 17", lambda: C.quantize(W8, 17), ValueError, "bits"),
    ("bits 2.5", lambda: C.quantize(W8, 2.5), TypeError, "bits"),  # type: ignore[arg-type]
    ("bits True", lambda: C.quantize(W8, True), TypeError, "bits"),
    ("gptq bits", lambda: C.gptq(W8, torch.eye(8), 17), ValueError, "bits"),
    ("awq bits", lambda: C.awq(W8, torch.randn(5, 8), True, "channel"), TypeError, "bits"),
    ("group_size divides", lambda: C.quantize(W8, 4, "group", 3), ValueError, "group_size"),
    ("group_size needed", lambda: C.quantize(W8, 4, "group"), ValueError, "group_size"),
    ("gptq group_size", lambda: C.gptq(W8, torch.eye(8), 4, "group", 3), ValueError, "group_size"),
    ("granularity", lambda: C.quantize(W8, 4, "row"), ValueError, "granularity"),  # type: ignore[arg-type]
    ("symmetric", lambda: C.quantize(W8, 4, symmetric=1), TypeError, "symmetric"),  # type: ignore[arg-type]
    ("w 1-D", lambda: C.quantize(torch.randn(8), 4), ValueError, "w"),
    ("w int", lambda: C.quantize(torch.ones(2, 2, dtype=torch.long), 4), TypeError, "w"),
    ("levels unsorted", lambda: C.grid_quantize(W8, LV.flip(0)), ValueError, "levels"),
    (
        "levels > 1",
        lambda: C.grid_quantize(W8, torch.tensor([-1.0, 0.0, 1.5])),
        ValueError,
        "levels",
    ),
    ("levels one", lambda: C.grid_quantize(W8, torch.tensor([0.5])), ValueError, "levels"),
    ("block_size", lambda: C.grid_quantize(torch.randn(10), LV, 4), ValueError, "block_size"),
    ("block_size 0", lambda: C.grid_quantize(torch.randn(8), LV, 0), ValueError, "block_size"),
    (
        "codes dtype",
        lambda: C.grid_dequantize(torch.zeros(8, dtype=torch.long), torch.ones(1), LV),
        TypeError,
        "codes",
    ),
    (
        "codes range",
        lambda: C.grid_dequantize(torch.full((8,), 16, dtype=torch.uint8), torch.ones(1), LV),
        ValueError,
        "codes",
    ),
    (
        "absmax blocks",
        lambda: C.grid_dequantize(torch.zeros(8, dtype=torch.uint8), torch.ones(3), LV),
        ValueError,
        "absmax",
    ),
    ("h shape", lambda: C.gptq(W8, torch.eye(7), 4), ValueError, "h"),
    ("h not PD", lambda: C.gptq(W8, -torch.eye(8), 4, damp=0.0), ValueError, "h"),
    ("damp", lambda: C.gptq(W8, torch.eye(8), 4, damp=-1.0), ValueError, "damp"),
    ("output_error h", lambda: C.output_error(W8, W8, torch.eye(3)), ValueError, "h"),
    ("output_error q", lambda: C.output_error(W8, W8[:2], torch.eye(8)), ValueError, "q"),
    ("layer_hessian x", lambda: C.layer_hessian(torch.randn(8)), ValueError, "x"),
    ("awq x", lambda: C.awq(W8, torch.randn(5, 7), 4, "channel"), ValueError, "x"),
    ("awq grid", lambda: C.awq(W8, torch.randn(5, 8), 4, "channel", grid=0), ValueError, "grid"),
    ("int8 threshold", lambda: C.int8_matmul(W8, W8, threshold=0.0), ValueError, "threshold"),
    (
        "int8 activations",
        lambda: C.int8_matmul(W8, W8, activations="row"),
        ValueError,
        "activations",
    ),
    ("int8 w", lambda: C.int8_matmul(W8, torch.randn(3, 5)), ValueError, "w"),
    ("smooth alpha", lambda: C.smoothquant_scales(W8, W8, 1.5), ValueError, "alpha"),
    ("gamma 0", lambda: _step(gamma=0), ValueError, "gamma"),
    ("gamma 1.0", lambda: _step(gamma=1.0), TypeError, "gamma"),  # type: ignore[arg-type]
    (
        "draft not prob",
        lambda: _step(q=torch.tensor([0.5, 0.2, 0.2], dtype=F64)),
        ValueError,
        "draft distribution",
    ),
    (
        "target negative",
        lambda: _step(p=torch.tensor([1.2, -0.1, -0.1], dtype=F64)),
        ValueError,
        "target distribution",
    ),
    ("vocab mismatch", lambda: _step(vocab_q=4), ValueError, "~vocabulary"),
    (
        "target rows",
        lambda: C.speculative_step(
            [0], lambda s, k: torch.full((1, 2), 0.5), lambda s: torch.full((2,), 0.5), 2
        ),
        ValueError,
        "target",
    ),
    (
        "generator",
        lambda: C.speculative_step([0], None, None, 1, generator=3),
        TypeError,
        "generator",
    ),  # type: ignore[arg-type]
    (
        "exact gamma",
        lambda: C.exact_output_distribution(lambda s: LV, lambda s: LV, 2, 0, 1),
        ValueError,
        "gamma",
    ),
    (
        "exact n",
        lambda: C.exact_output_distribution(lambda s: LV, lambda s: LV, 2, 1, 0),
        ValueError,
        "n",
    ),
    (
        "exact vocab",
        lambda: C.exact_output_distribution(
            lambda s: torch.full((3,), 1 / 3), lambda s: torch.full((2,), 0.5), 2, 1, 1
        ),
        ValueError,
        "~vocabulary",
    ),
    (
        "exact too many",
        lambda: C.exact_output_distribution(lambda s: LV, lambda s: LV, 50, 3, 3),
        ValueError,
        "vocab",
    ),
    ("tokens alpha", lambda: C.expected_tokens_per_call(1.5, 2), ValueError, "alpha"),
    ("tokens gamma", lambda: C.expected_tokens_per_call(0.5, 0), ValueError, "gamma"),
    ("format name", lambda: C.round_to_format(W8, "fp4"), ValueError, "fmt"),
    ("format type", lambda: C.round_to_format(W8, 16), TypeError, "fmt"),  # type: ignore[arg-type]
    (
        "format x",
        lambda: C.round_to_format(torch.ones(3, dtype=torch.long), "bf16"),
        TypeError,
        "x",
    ),
    ("lora r", lambda: C.LoRALinear(nn.Linear(8, 3), r=4), ValueError, "r"),
    ("lora r 0", lambda: C.LoRALinear(nn.Linear(8, 3), r=0), ValueError, "r"),
    ("lora alpha", lambda: C.LoRALinear(nn.Linear(8, 3), r=2, alpha=0.0), ValueError, "alpha"),
    ("lora base", lambda: C.LoRALinear(nn.Conv1d(2, 2, 1), r=1), TypeError, "base"),  # type: ignore[arg-type]
    (
        "targets unknown",
        lambda: C.add_lora(_gpt(), 2, targets=("q_proj", "lm_head")),
        ValueError,
        "targets",
    ),
    ("targets empty", lambda: C.add_lora(_gpt(), 2, targets=()), ValueError, "targets"),
    ("add_lora model", lambda: C.add_lora(nn.Linear(2, 2), 1), TypeError, "model"),  # type: ignore[arg-type]
    ("method", lambda: C.quantize_model(_gpt(), "hqq", 4), ValueError, "method"),  # type: ignore[arg-type]
    (
        "calibration dtype",
        lambda: C.quantize_model(_gpt(), "gptq", 4, torch.zeros(2, 3)),
        TypeError,
        "calibration",
    ),
    ("nf4 block_size", lambda: C.quantize_base(_gpt(), block_size=0), ValueError, "block_size"),
    (
        "nf4 odd",
        lambda: C.NF4Linear(nn.Linear(3, 1, bias=False), block_size=1),
        ValueError,
        "~even",
    ),
    ("scale_bits cols", lambda: C.scale_bits("channel", None, 0, True), ValueError, "cols"),
    ("ternarize int", lambda: C.ternarize(torch.ones(3, dtype=torch.long)), TypeError, "w"),
]


def test_prompt_tokens_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="prompt"):
        C.speculative_generate(_gpt(), _gpt(), [1, 11], 3, 2)


def test_linear_inputs_refuses_blocks_out_of_range() -> None:
    with pytest.raises(ValueError, match="blocks"):
        C.linear_inputs(_gpt(), _ids(56), [2])


@pytest.mark.parametrize(("call", "error", "name"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_the_argument_named(
    call: Callable[[], object], error: type[Exception], name: str
) -> None:
    """``name``: the start of the message (the argument's name), or with ``~`` a word in it."""
    pattern = name[1:] if name.startswith("~") else rf"^{name}\b"
    with pytest.raises(error, match=pattern):
        call()

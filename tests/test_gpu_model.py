"""hamlib.gpu_model: the GPU's figures, the roofline, FLOP and byte counts, and the SIMT toys,
each against a closed form or brute force; tile_order against the matmul kernel's own arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hamlib import gpu_model as G
from hamlib import kernels as K

DEV = K.device()


def test_op_cost() -> None:
    assert G.op_cost("add", n=10) == (10.0, 60.0)
    assert G.op_cost("matmul", dtype_bytes=4, m=2, n=3, k=5) == (60.0, 4.0 * (10 + 15 + 6))
    flops, fused = G.op_cost("attention", batch=1, heads=1, seq=8, head_dim=4)
    flops2, unfused = G.op_cost("attention_unfused", batch=1, heads=1, seq=8, head_dim=4)
    assert flops == flops2 == 4 * 64 * 4 + 5 * 64
    assert unfused - fused == 2 * 4 * 64
    with pytest.raises(ValueError, match="op must be one of"):
        G.op_cost("conv", n=3)
    with pytest.raises(ValueError, match="takes sizes"):
        G.op_cost("matmul", m=3, n=3)
    with pytest.raises(ValueError, match="m must be >= 1"):
        G.op_cost("softmax", m=0, n=3)
    with pytest.raises(ValueError, match="dtype_bytes"):
        G.op_cost("add", dtype_bytes=3, n=3)


def test_attainable_flops_is_the_roofline() -> None:
    spec = G.H100_SXM
    ridge = spec.fp16_tensor_flops / spec.hbm_bandwidth
    got = G.attainable_flops(np.array([ridge / 10, ridge, ridge * 10]), 989.4e12, 3.35e12)
    np.testing.assert_allclose(got, [98.94e12, 989.4e12, 989.4e12])
    with pytest.raises(ValueError, match="intensity"):
        G.attainable_flops(-1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="peak_flops must be > 0"):
        G.attainable_flops(1.0, 0.0, 1.0)


def test_count_traffic_of_unfused_softmax_is_four_passes_more() -> None:
    m, n = 16, 100
    x = torch.randn(m, n)
    unfused = G.count_traffic(G.softmax_unfused, x)
    assert [name for name, _, _ in unfused.ops] == ["amax", "sub", "exp", "sum", "div"]
    # reads: x five times plus the two (m, 1) columns; writes: three (m, n) and two (m, 1)
    assert unfused.total == 4 * (5 * m * n + 2 * m + 3 * m * n + 2 * m)
    assert G.count_traffic(torch.softmax, x, -1).total == 4 * 2 * m * n
    assert G.count_traffic(lambda t: (t.view(-1), t[0], t.t()), x).ops == []
    with pytest.raises(TypeError, match="fn must be callable"):
        G.count_traffic(3)


def test_warp_efficiency() -> None:
    lanes = np.arange(128)
    assert G.warp_efficiency(lanes % 2) == 0.5  # every warp runs both branches
    assert G.warp_efficiency(lanes // 32 % 2) == 1.0  # branch per warp: no divergence
    assert G.warp_efficiency(lanes % 32) == 1 / 32
    with pytest.raises(ValueError, match="multiple of warp_size"):
        G.warp_efficiency(np.arange(33))


@given(st.lists(st.integers(0, 3), min_size=32, max_size=32))
def test_warp_efficiency_bounds(branch: list[int]) -> None:
    eff = G.warp_efficiency(branch)
    assert 1 / 32 <= eff <= 1.0
    assert eff == 1 / len(set(branch))


@pytest.mark.parametrize("warps", [1, 2, 4, 8, 11, 16])
def test_latency_hiding_matches_littles_law(warps: int) -> None:
    c, lat = 4, 40
    r = G.latency_hiding(warps, c, lat, iters=400)
    assert r.utilization == pytest.approx(min(1.0, warps * c / (c + lat)), rel=0.02)
    assert sum(len(t) for t in r.timeline) == warps * 400


def test_latency_hiding_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_warps must be >= 1"):
        G.latency_hiding(0, 4, 40)
    with pytest.raises(ValueError, match="latency_cycles must be >= 0"):
        G.latency_hiding(2, 4, -1)


def test_tile_order_is_a_permutation_in_groups() -> None:
    for tm, tn, g in [(5, 7, 4), (8, 8, 8), (3, 2, 1), (1, 9, 4)]:
        order = G.tile_order(tm, tn, g)
        assert sorted(map(tuple, order.tolist())) == [(i, j) for i in range(tm) for j in range(tn)]
    row_major = G.tile_order(4, 6, 1)
    assert row_major[:6].tolist() == [[0, j] for j in range(6)]
    grouped = G.tile_order(8, 8, 4)
    assert grouped[:5].tolist() == [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1]]
    with pytest.raises(ValueError, match="group_m must be >= 1"):
        G.tile_order(4, 4, 0)


if K.backend() != "torch":
    import triton
    import triton.language as tl

    from hamlib import triton_kernels as tk

    @triton.jit  # interpreted where hamlib's kernels are (hamlib.backend)
    def _which_tile(out_ptr, tiles_m, tiles_n, GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        pid_m, pid_n = tk.grouped_tile(pid, tiles_m, tiles_n, GROUP_M)
        tl.store(out_ptr + 2 * pid, pid_m)
        tl.store(out_ptr + 2 * pid + 1, pid_n)


@pytest.mark.skipif(K.backend() == "torch", reason="needs triton")
def test_tile_order_is_the_kernels_own_arithmetic() -> None:
    for tm, tn, g in [(5, 7, 4), (8, 8, 8), (3, 2, 1), (9, 4, 2)]:
        out = torch.full((tm * tn, 2), -1, dtype=torch.int32, device=DEV)
        _which_tile[(tm * tn,)](out, tm, tn, GROUP_M=g)
        assert out.cpu().numpy().tolist() == G.tile_order(tm, tn, g).tolist()


def test_coalescing_counts_sectors() -> None:
    lanes = np.arange(32)
    assert G.coalescing(lanes) == (4, 1.0)  # 32 consecutive fp32: four 32-byte sectors
    assert G.coalescing(lanes * 4096) == (32, 0.125)  # a column of a row-major matrix
    assert G.coalescing(lanes * 2) == (8, 0.5)  # every other element
    assert G.coalescing(lanes, element_bytes=2) == (2, 1.0)
    assert G.coalescing(lanes + 1) == (5, 0.8)  # one element off alignment: one more sector
    assert G.coalescing(np.zeros(32, dtype=int)) == (1, 0.125)  # a broadcast
    with pytest.raises(ValueError, match="element_index must be 32 non-negative integers"):
        G.coalescing(np.arange(31))
    with pytest.raises(ValueError, match="element_bytes must be >= 1"):
        G.coalescing(lanes, element_bytes=0)


def test_bank_conflicts() -> None:
    lanes = np.arange(32)
    assert G.bank_conflicts(lanes) == 1  # a row of a 32 x 32 fp32 tile
    assert G.bank_conflicts(lanes * 32) == 32  # a column: every lane in bank 0
    assert G.bank_conflicts(lanes * 33) == 1  # the column of a tile padded to 33 words a row
    assert G.bank_conflicts(lanes * 2) == 2
    assert G.bank_conflicts(np.zeros(32, dtype=int)) == 1  # one word, broadcast
    with pytest.raises(ValueError, match="word_index must be 32 non-negative integers"):
        G.bank_conflicts(-lanes)
    with pytest.raises(ValueError, match="banks must be >= 1"):
        G.bank_conflicts(lanes, banks=0)


def test_warp_efficiency_takes_true_and_false_as_two_branches() -> None:
    lanes = np.arange(64)
    assert G.warp_efficiency(lanes % 2 == 0) == 0.5  # every warp runs both sides
    assert G.warp_efficiency(lanes < 32) == 1.0  # whole warps agree
    with pytest.raises(TypeError, match="^branch must hold integers"):
        G.warp_efficiency(lanes * 0.5)

"""The kernel configurations that only a GPU runs: the large tiles of K.matmul, flash attention
with many query blocks (the causal bound for every block), TF32, native bf16, long softmax rows.
Run by ``make gpu-check``; on a machine without a CUDA GPU every test here skips."""

from __future__ import annotations

import math

import pytest
import torch

from hamlib import kernels as K

pytestmark = pytest.mark.skipif(
    K.backend() != "cuda", reason=f"needs a CUDA GPU (backend is {K.backend()!r})"
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, generator=g, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (1024, 512, 2048), (129, 257, 63)])
def test_matmul_large_tiles(dtype: torch.dtype, shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    a, b = randn(m, k, dtype=dtype), randn(k, n, dtype=dtype, seed=1)
    out = K.matmul(a, b)
    ref = (a.double() @ b.double()).to(dtype)
    tol = TOL[dtype] * math.sqrt(k)
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=TOL[dtype])


def test_matmul_tf32_is_tf32_accurate() -> None:
    a, b = randn(512, 4096), randn(4096, 512, seed=1)
    exact = a.double() @ b.double()
    scale = exact.abs().max().item()
    err_ieee = (K.matmul(a, b).double() - exact).abs().max().item() / scale
    err_tf32 = (K.matmul(a, b, "tf32").double() - exact).abs().max().item() / scale
    assert err_ieee < 1e-5 < err_tf32 < 2e-3  # TF32 keeps 10 mantissa bits: about 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [40, 64, 128])
def test_flash_attention_many_blocks(dtype: torch.dtype, causal: bool, head_dim: int) -> None:
    q, k, v = (randn(2, 3, 1000, head_dim, dtype=dtype, seed=s) for s in range(3))
    out = K.flash_attention(q, k, v, causal=causal)
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(head_dim)
    if causal:
        scores = scores.masked_fill(torch.ones(1000, 1000, device="cuda").triu(1).bool(), -math.inf)
    ref = (torch.softmax(scores, dim=-1) @ v.double()).to(dtype)  # float64 throughout
    torch.testing.assert_close(out.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_layer_norm_long_rows(dtype: torch.dtype) -> None:
    x = randn(64, 40_000, dtype=dtype) * 4
    torch.testing.assert_close(
        K.softmax(x).float(), torch.softmax(x.double(), -1).float(), atol=TOL[dtype], rtol=0.05
    )
    w, b = randn(40_000, dtype=dtype, seed=1), randn(40_000, dtype=dtype, seed=2)
    ref = torch.nn.functional.layer_norm(x.double(), (40_000,), w.double(), b.double())
    torch.testing.assert_close(
        K.layer_norm(x, w, b).float(), ref.float(), atol=4 * TOL[dtype], rtol=4 * TOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_misaligned_and_huge(dtype: torch.dtype) -> None:
    x, y = randn(2**24 + 3, dtype=dtype), randn(2**24 + 3, dtype=dtype, seed=1)
    assert torch.equal(K.add(x, y), x + y)
    assert torch.equal(K.add(x[1:], y[1:]), x[1:] + y[1:])  # 2-byte offset: no vector loads

"""hamlib.kernels: every kernel against its torch reference on odd shapes, in whichever backend
this machine has (the Triton interpreter on a CPU), plus the input checks and the GPU models."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamlib import cuda_c, kernel_bench, kernel_configs
from hamlib import gpu_model as G
from hamlib import kernels as K
from hamlib.backend import choose_backend, triton_interpret_requested

DEV = "cuda" if K.backend() == "cuda" else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Kernels and references both accumulate in fp32 and round once; what differs is summation order.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
FEW = settings(max_examples=6, deadline=None)


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype=dtype, device=DEV)


def close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    tol = TOL[dtype]
    torch.testing.assert_close(out.float(), ref.float(), atol=tol["atol"] * scale, rtol=tol["rtol"])


def _fresh(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter whose environment names no backend."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRITON_INTERPRET", "HAMLIB_KERNELS_BACKEND")
    }
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_the_backend_and_its_one_change_to_the_environment() -> None:
    """The kernels are compiled on a GPU and interpreted without one; the only change to
    os.environ is Triton's own switch, and only for the interpreter."""
    result = _fresh(
        "import os; before = dict(os.environ)\n"
        "from hamlib import kernels as K\n"
        "keys = {*before, *os.environ}\n"
        "changed = sorted(k for k in keys if before.get(k) != os.environ.get(k))\n"
        "print(K.backend(), type(K._tk.add_kernel).__name__ if K._tk else None, changed)"
    )
    assert result.returncode == 0, result.stderr
    got = result.stdout.strip().split(maxsplit=2)
    expected = {
        "cuda": ["cuda", "JITFunction", "[]"],
        "interpreter": ["interpreter", "InterpretedFunction", "['TRITON_INTERPRET']"],
        "torch": ["torch", "None", "[]"],
    }
    assert got == expected[got[0]]
    if not os.environ.get("HAMLIB_KERNELS_BACKEND"):  # the child chose as this process did
        assert got[0] == K.backend()


@pytest.mark.skipif(K.backend() != "interpreter", reason="no GPU here: checks the interpreter")
def test_triton_imported_first_in_compiled_mode_is_refused_with_the_fix() -> None:
    result = _fresh("import triton\nfrom hamlib import kernels")
    assert result.returncode != 0
    assert "import hamlib.kernels before triton, or start Python with TRITON_INTERPRET=1" in (
        result.stderr
    )


def test_choose_backend_refuses_what_it_cannot_give(monkeypatch) -> None:
    with pytest.raises(ValueError, match="^requested must be one of"):
        choose_backend("gpu")
    monkeypatch.setenv("HAMLIB_KERNELS_BACKEND", "gpu")
    with pytest.raises(ValueError, match="^HAMLIB_KERNELS_BACKEND must be one of"):
        choose_backend()
    assert choose_backend("torch") == "torch"
    if importlib.util.find_spec("triton") is not None and K.backend() == "interpreter":
        # this process runs the interpreter: compiled kernels cannot be had here
        with pytest.raises(RuntimeError, match="Triton is in interpreter mode"):
            choose_backend("cuda")


@pytest.mark.parametrize(
    "value, on",
    [
        ("1", True),
        ("true", True),
        ("ON", True),
        ("yes", True),
        ("0", False),
        ("off", False),
        ("false", False),
        ("", False),
        ("2", False),
    ],
)
def test_triton_interpret_is_read_as_triton_reads_it(monkeypatch, value: str, on: bool) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert triton_interpret_requested() is on


@pytest.mark.skipif(K.backend() != "interpreter", reason="no GPU here: checks the interpreter")
def test_importing_the_kernels_module_first_still_gives_interpreted_kernels() -> None:
    result = _fresh(
        "from hamlib import triton_kernels as tk\n"
        "from hamlib import kernels as K\n"
        "import torch; x = torch.arange(5.0)\n"
        "assert torch.equal(K.add(x, x), 2 * x) and K._tk is tk\n"
        "print(type(tk.add_kernel).__name__)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["InterpretedFunction"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 1023, 1025, 5000])
def test_add(dtype: torch.dtype, n: int) -> None:
    x, y = randn(n, dtype=dtype), randn(n, dtype=dtype, seed=1)
    assert torch.equal(K.add(x, y), x + y)  # one rounding from the exact sum: bit-equal


def test_add_keeps_shape() -> None:
    x, y = randn(3, 5, 7), randn(3, 5, 7, seed=1)
    assert torch.equal(K.add(x, y), x + y)


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(rows=st.integers(1, 9), cols=st.integers(1, 700))
def test_softmax(dtype: torch.dtype, rows: int, cols: int) -> None:
    x = randn(rows, cols, dtype=dtype) * 4
    close(K.softmax(x), K.reference("softmax")(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 63, 64, 65, 300])
def test_softmax_online_path(dtype: torch.dtype, cols: int) -> None:
    # Force the two-pass online kernel with short rows (several 64-wide chunks per row).
    x = randn(5, cols, dtype=dtype) * 4
    close(K.softmax(x, max_fused=64), K.reference("softmax")(x), dtype)


@pytest.mark.parametrize("max_fused", [64, K.SOFTMAX_MAX_FUSED])
def test_softmax_extreme_values(max_fused: int) -> None:
    x = torch.tensor([[1e4, 0.0, -1e4, -math.inf] * 40, [-math.inf] * 159 + [3.0]], device=DEV)
    out = K.softmax(x, max_fused=max_fused)
    torch.testing.assert_close(out, torch.softmax(x, dim=-1))
    assert out[1, -1] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(m=st.integers(1, 70), n=st.integers(1, 70), k=st.integers(1, 90))
def test_matmul(dtype: torch.dtype, m: int, n: int, k: int) -> None:
    a, b = randn(m, k, dtype=dtype), randn(k, n, dtype=dtype, seed=1)
    close(K.matmul(a, b), K.reference("matmul")(a, b), dtype, scale=math.sqrt(k))


def test_matmul_many_tiles_grouped_order_covers_every_tile() -> None:
    # 5 x 7 tiles of 32 with GROUP_M = 4: the last group is one tile-row high.
    a, b = randn(150, 40), randn(40, 220, seed=1)
    close(K.matmul(a, b), a @ b, torch.float32, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 300), (2, 3, 77), (4, 5000)])
def test_layer_norm(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = randn(*shape, dtype=dtype) * 3 + 1
    w, b = randn(shape[-1], dtype=dtype, seed=1), randn(shape[-1], dtype=dtype, seed=2)
    for eps in (1e-5, 0.1):
        close(K.layer_norm(x, w, b, eps), K.reference("layer_norm")(x, w, b, eps), dtype, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@FEW
@given(
    seq=st.integers(1, 100),
    head_dim=st.sampled_from([16, 24, 40, 64, 100, 128]),
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
)
def test_flash_attention(
    dtype: torch.dtype, causal: bool, seq: int, head_dim: int, batch: int, heads: int
) -> None:
    q, k, v = (randn(batch, heads, seq, head_dim, dtype=dtype, seed=s) for s in range(3))
    out = K.flash_attention(q, k, v, causal=causal)
    close(out, K.reference("flash_attention")(q, k, v, causal), dtype)


def test_flash_attention_cross_lengths_and_scale() -> None:
    q = randn(2, 2, 33, 32)
    k, v = randn(2, 2, 70, 32, seed=1), randn(2, 2, 70, 32, seed=2)
    for scale in (None, 0.05, 1.0):
        out = K.flash_attention(q, k, v, sm_scale=scale)
        close(out, K.reference("flash_attention")(q, k, v, False, scale), torch.float32)


def test_flash_attention_matches_explicit_formula() -> None:
    q, k, v = (randn(1, 1, 50, 16, seed=s) for s in range(3))
    scores = q[0, 0] @ k[0, 0].T / 4.0
    scores = scores.masked_fill(torch.ones(50, 50, dtype=torch.bool).triu(1), -math.inf)
    expected = torch.softmax(scores, dim=-1) @ v[0, 0]
    close(K.flash_attention(q, k, v, causal=True)[0, 0], expected, torch.float32)


# ------------------------------------------------------------------------------ bad input


def test_rejects_bad_inputs() -> None:
    x = randn(4, 6)
    with pytest.raises(TypeError, match="x must have dtype float16, bfloat16, float32"):
        K.softmax(x.double())
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        K.softmax([[1.0]])
    with pytest.raises(ValueError, match="x must be 2-D"):
        K.softmax(randn(2, 3, 4))
    with pytest.raises(ValueError, match="x must be contiguous"):
        K.softmax(x.t())
    with pytest.raises(ValueError, match="x must not be empty"):
        K.softmax(randn(0, 4))
    with pytest.raises(TypeError, match="y has dtype"):
        K.add(x, x.half())
    with pytest.raises(ValueError, match="same shape"):
        K.add(x, randn(6, 4))
    with pytest.raises(ValueError, match="inner dimensions"):
        K.matmul(x, randn(5, 3))
    with pytest.raises(ValueError, match="weight and bias must have shape"):
        K.layer_norm(x, randn(5), randn(6))
    with pytest.raises(ValueError, match="eps must be > 0"):
        K.layer_norm(x, randn(6), randn(6), eps=0.0)
    q = randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="head_dim must be between 16 and 128"):
        K.flash_attention(randn(1, 2, 8, 8), randn(1, 2, 8, 8), randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="causal attention needs equal"):
        K.flash_attention(q, randn(1, 2, 9, 16), randn(1, 2, 9, 16), causal=True)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        K.flash_attention(q, randn(1, 2, 9, 16), randn(1, 2, 8, 16))
    with pytest.raises(ValueError, match="must agree in batch, heads and head_dim"):
        K.flash_attention(q, randn(1, 3, 8, 16), randn(1, 3, 8, 16))
    with pytest.raises(ValueError, match="sm_scale"):
        K.flash_attention(q, q, q, sm_scale=math.nan)


@pytest.mark.skipif(K.backend() == "torch", reason="the torch fallback takes any device")
def test_rejects_wrong_device() -> None:
    wrong = "meta" if K.backend() == "interpreter" else "cpu"
    x = torch.empty(4, 4, device=wrong)
    with pytest.raises(ValueError, match=r"x is on .* backend takes"):
        K.softmax(x)


def test_reference_names() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        K.reference("gelu")


def test_next_power_of_2() -> None:
    assert [kernel_configs.next_power_of_2(n) for n in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]
    with pytest.raises(ValueError, match="n must be >= 1"):
        kernel_configs.next_power_of_2(0)


# ------------------------------------------------------------------ backends and CUDA C


def _run(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


FALLBACK = """
import torch
from hamlib import kernels as K
x = torch.randn(5, 77)
assert torch.equal(K.softmax(x), torch.softmax(x, -1))
q = torch.randn(1, 2, 9, 16)
torch.testing.assert_close(K.flash_attention(q, q, q, causal=True),
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True))
print(K.backend())
"""


def test_torch_fallback_when_forced() -> None:
    assert _run(FALLBACK, HAMLIB_KERNELS_BACKEND="torch") == "torch"


def test_torch_fallback_without_triton() -> None:
    code = "import sys; sys.modules['triton'] = None\n" + FALLBACK
    assert _run(code, HAMLIB_KERNELS_BACKEND="") == "torch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_add_says_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        cuda_c.cuda_add(torch.ones(3), torch.ones(3))
    assert "__global__ void add_kernel" in cuda_c.CUDA_ADD_SOURCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and nvcc")
def test_cuda_add_on_gpu() -> None:  # pragma: no cover - GPU runners only
    x, y = torch.randn(10_001, device="cuda"), torch.randn(10_001, device="cuda")
    assert torch.equal(cuda_c.cuda_add(x, y), x + y)


# ------------------------------------------------------------------------- the benchmark


def test_benchmark_bookkeeping_with_a_fake_timer() -> None:
    calls = []

    def timer(fn) -> float:
        fn()
        calls.append(1)
        return 2.0 if len(calls) % 2 else 4.0  # ours 2 ms, the baseline 4 ms

    cases = [
        ("add", "float32", (1000,)),
        ("softmax", "float16", (3, 50)),
        ("matmul", "tf32", (40, 30, 20)),
        ("attention", "bfloat16", (1, 2, 33, 16)),
    ]
    rows = kernel_bench.benchmark(cases, timer=timer)
    assert [r["kernel"] for r in rows] == ["add", "softmax", "matmul", "attention"]
    assert len(calls) == 8  # ours and the baseline for each
    add_row, sm_row, mm_row, _ = rows
    assert add_row["unit"] == "GB/s" and add_row["rate"] == pytest.approx(3 * 1000 * 4 / 2e-3 / 1e9)
    assert add_row["ratio"] == pytest.approx(3.0)  # 3 arrays in 2 ms against 2 arrays in 4 ms
    assert sm_row["ratio"] == 2.0 and sm_row["baseline"] == "torch.softmax"
    assert mm_row["rate"] == pytest.approx(2 * 40 * 30 * 20 / 2e-3 / 1e12)
    assert mm_row["of_peak"] == pytest.approx(mm_row["rate"] * 1e12 / G.H100_SXM.tf32_tensor_flops)
    assert len(kernel_bench.default_benchmarks()) >= 10
    host_calls = []
    rows = kernel_bench.benchmark(
        [("add_host", "float16", (64,)), ("attention_unfused", "float16", (1, 1, 16, 16))],
        timer=timer,
        host=lambda fn: host_calls.append(fn()) or 1.0,
    )
    assert len(host_calls) == 2 and rows[0]["ratio"] == 1.0
    assert rows[1]["baseline"] == "torch, scores in HBM"
    with pytest.raises(ValueError, match="dtype must be"):
        kernel_bench.benchmark([("add", "float64", (10,))], timer=timer)
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernel_bench.benchmark([("gelu", "float16", (10,))], timer=timer)
    if K.backend() != "cuda":
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            kernel_bench.benchmark()

"""Timing hamlib's kernels against their baselines on a CUDA GPU: the table ``make gpu-check``
writes into ``book/data/gpu_bench.json`` and Chapter 6 prints."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hamlib import _checks as check
from hamlib import kernels as K
from hamlib.gpu_model import H100_SXM, GPUSpec

__all__ = ["BASELINES", "benchmark", "default_benchmarks", "host_timer"]


def default_benchmarks() -> list[tuple[str, str, tuple[int, ...]]]:
    """(kernel, dtype, shape) of every row of the GPU table: the sizes of ``make gpu-check``."""
    cases: list[tuple[str, str, tuple[int, ...]]] = [
        ("add", "float16", (2**24,)),
        ("add", "float16", (2**24 + 3,)),  # no vector loads (section 6.6)
        ("add_host", "float16", (4096,)),  # launch and Python overhead, on a host clock
        ("softmax", "float16", (4096, 4096)),
        ("softmax", "float16", (4096, 16384)),
    ]
    for dtype in ("float16", "bfloat16", "float32", "tf32"):
        cases.append(("matmul", dtype, (4096, 4096, 4096)))
    cases.append(("matmul", "float16", (8192, 8192, 8192)))
    for dtype in ("float16", "bfloat16"):
        cases.append(("attention", dtype, (4, 16, 4096, 128)))
    cases.append(("attention", "float16", (4, 16, 4096, 64)))
    for d in (64, 128):  # the "10x faster than standard attention" claim
        cases.append(("attention_unfused", "float16", (4, 16, 4096, d)))
    return cases


BASELINES = {
    "add": "device-to-device copy",
    "add_host": "torch.add, host clock",
    "softmax": "torch.softmax",
    "matmul": "cuBLAS (torch.matmul)",
    "attention": "PyTorch SDPA (flash)",
    "attention_unfused": "torch, scores in HBM",
}


def host_timer(fn: Callable[[], Any], calls: int = 1000) -> float:
    """Milliseconds per call of ``fn`` on the host's clock over back-to-back calls, with one
    synchronization at the end: what a program that launches small kernels one after another
    sees, Python and launch overhead included. (``do_bench`` flushes L2 before each call, which
    lets the CPU run ahead and hides that overhead.)"""
    import time

    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def benchmark(
    cases: list[tuple[str, str, tuple[int, ...]]] | None = None,
    timer: Callable[[Callable[[], Any]], float] | None = None,
    spec: GPUSpec = H100_SXM,
    host: Callable[[Callable[[], Any]], float] | None = None,
) -> list[dict[str, Any]]:
    """Time each kernel against its baseline; one row per (kernel, dtype, shape) in ``cases``
    (default: :func:`default_benchmarks`). dtype ``"tf32"`` is fp32 with TF32 allowed on both
    sides (``precision="tf32"`` here, ``allow_tf32`` for cuBLAS). Kernel ``"add_host"`` times
    small adds with ``host`` (default :func:`host_timer`): the overhead regime.
    ``"attention_unfused"`` times our flash attention against torch attention that writes the
    scores to HBM.

    ``timer(fn)`` returns milliseconds per call; the default is ``triton.testing.do_bench`` with
    ``return_mode="median"`` (its default is the mean), which flushes L2 before each run and
    records CUDA events around it: GPU time, with the CPU free to run ahead. ``ratio`` is the
    baseline's time over ours (above 1: ours is faster), except for ``add``, where it is our
    bandwidth over the copy's (3 arrays moved against 2). ``rate`` is GB/s or TFLOP/s and
    ``of_peak`` its fraction of ``spec``'s HBM bandwidth or the matching compute peak. Without a
    GPU, pass ``timer`` (and small sizes) to exercise the bookkeeping only."""
    if timer is None:
        if K.backend() != "cuda":
            raise RuntimeError(
                f"benchmark needs a CUDA GPU (backend is {K.backend()!r}); on a CPU the "
                "interpreter's speed means nothing"
            )
        from triton.testing import do_bench

        timer = partial(do_bench, return_mode="median")
        host = host or host_timer
    if cases is None:
        cases = default_benchmarks()
    dev = K.device()
    gen = torch.Generator(device=dev).manual_seed(0)
    rows: list[dict[str, Any]] = []
    for kernel, dtype_name, shape in cases:
        check.one_of("kernel", kernel, sorted(BASELINES))
        check.one_of("dtype", dtype_name, ("float16", "bfloat16", "float32", "tf32"))
        tf32 = dtype_name == "tf32"
        dtype = torch.float32 if tf32 else getattr(torch, dtype_name)

        def rand(*size: int, dtype: torch.dtype = dtype) -> Tensor:
            return torch.randn(*size, generator=gen, device=dev).to(dtype)

        nbytes = torch.empty((), dtype=dtype).element_size()
        if kernel == "add":
            (n,) = shape
            x, y, dst = rand(n), rand(n), torch.empty(n, dtype=dtype, device=dev)
            ours = timer(partial(K.add, x, y))
            theirs = timer(partial(dst.copy_, x))
            work, unit = 3.0 * n * nbytes, "GB/s"
            ratio = (work / ours) / (2 * n * nbytes / theirs)
        elif kernel == "add_host":
            (n,) = shape
            x, y = rand(n), rand(n)
            clock = timer if host is None else host
            ours = clock(partial(K.add, x, y))
            theirs = clock(partial(torch.add, x, y))
            work, unit, ratio = 3.0 * n * nbytes, "GB/s", None
        elif kernel == "softmax":
            x = rand(*shape)
            ours = timer(partial(K.softmax, x))
            theirs = timer(partial(torch.softmax, x, -1))
            work, unit, ratio = 2.0 * x.numel() * nbytes, "GB/s", None
        elif kernel == "matmul":
            m, n, k = shape
            a, b = rand(m, k), rand(k, n)
            ours = timer(partial(K.matmul, a, b, "tf32" if tf32 else "ieee"))
            theirs = timer(partial(_cublas, a, b, tf32))
            work, unit, ratio = 2.0 * m * n * k, "TFLOP/s", None
        else:  # attention against SDPA, or against torch with the scores in HBM
            q, k_, v = (rand(*shape) for _ in range(3))
            ours = timer(partial(K.flash_attention, q, k_, v))
            other = _sdpa_flash if kernel == "attention" else _attention_unfused
            theirs = timer(partial(other, q, k_, v))
            bb, hh, ss, dd = shape
            work, unit, ratio = 4.0 * bb * hh * ss * ss * dd, "TFLOP/s", None
        rate = work / (ours * 1e-3)
        peak = spec.hbm_bandwidth if unit == "GB/s" else spec.fp16_tensor_flops
        if tf32:
            peak = spec.tf32_tensor_flops
        elif dtype == torch.float32 and unit == "TFLOP/s":
            peak = spec.fp32_flops
        rows.append(
            {
                "kernel": kernel,
                "dtype": dtype_name,
                "size": " x ".join(map(str, shape)),
                "ms": ours,
                "baseline": BASELINES[kernel],
                "baseline_ms": theirs,
                "ratio": theirs / ours if ratio is None else ratio,
                "rate": rate / (1e9 if unit == "GB/s" else 1e12),
                "unit": unit,
                "of_peak": rate / peak,
            }
        )
    return rows


def _attention_unfused(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    return torch.softmax(scores, dim=-1) @ v


def _cublas(a: Tensor, b: Tensor, tf32: bool) -> Tensor:
    """torch.matmul with TF32 allowed or not for fp32 (cuBLAS on a GPU)."""
    settings = torch.backends.cuda.matmul
    if hasattr(settings, "fp32_precision"):  # torch >= 2.9; the legacy flag warns there
        before = settings.fp32_precision
        settings.fp32_precision = "tf32" if tf32 else "ieee"
        try:
            return torch.matmul(a, b)
        finally:
            settings.fp32_precision = before
    before_flag = settings.allow_tf32
    settings.allow_tf32 = tf32
    try:
        return torch.matmul(a, b)
    finally:
        settings.allow_tf32 = before_flag


def _sdpa_flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's scaled_dot_product_attention, restricted to its flash backend on a GPU."""
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)

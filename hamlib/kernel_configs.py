"""Launch configurations of hamlib's Triton kernels: tile sizes, warps, pipeline stages, and the
candidates Triton's autotuner chooses among on a GPU.

Each choice here was checked by compiling it for sm_80 (A100) and sm_90 (H100) with
:mod:`hamlib.aot` (``tests/test_aot.py``): none spills registers or overflows shared memory. The
interpreter runs programs one after another, so it takes small tiles (its speed means nothing).
"""

from __future__ import annotations

import torch

from hamlib import _checks as check

__all__ = [
    "attention_candidates",
    "attention_config",
    "matmul_candidates",
    "matmul_config",
    "next_power_of_2",
]


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (block sizes in Triton must be powers of two)."""
    return 1 << (check.integer("n", n, minimum=1) - 1).bit_length()


_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_config_args(dtype: torch.dtype, backend: str = "cuda", **sizes: int) -> None:
    for name, size in sizes.items():
        check.integer(name, size, minimum=1)
    check.one_of("dtype", dtype, _DTYPES)
    check.one_of("backend", backend, ("cuda", "interpreter"))


def matmul_config(
    m: int, n: int, k: int, dtype: torch.dtype, backend: str = "cuda", precision: str = "ieee"
) -> dict:
    """The tiles and launch parameters ``K.matmul`` uses for an (m, k) @ (k, n) product.

    On a GPU the choice depends on the dtype, and each choice was checked by compiling it for
    sm_80 and sm_90 (``tests/test_aot.py``: no choice spills registers). fp16/bf16 (and fp32 in
    TF32) feed the tensor cores with tiles of 128 x 128 x 64 (x 32 for TF32). fp32 computed
    exactly (``"ieee"``) runs on the FMA units, which hold the whole BLOCK_K slice of both tiles
    in registers: fp32 takes BLOCK_K = 16 (with 64, 128 x 128 tiles spill over 1,600 bytes per
    thread on an A100). The interpreter runs programs one after another: 32 x 32 x 32."""
    _check_config_args(dtype, backend, m=m, n=n, k=k)
    check.one_of("precision", precision, ("ieee", "tf32"))
    if backend == "interpreter":
        return {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}
    big = m >= 128 and n >= 128
    exact_fp32 = dtype == torch.float32 and precision == "ieee"
    if exact_fp32:
        block_k = 16
    elif dtype == torch.float32:
        block_k = 32
    else:
        block_k = 64 if k >= 64 else 32
    return {
        "BLOCK_M": 128 if big else 64,
        "BLOCK_N": 128 if big else 64,
        "BLOCK_K": block_k,
        "GROUP_M": 8,
        "num_warps": 8 if big else 4,
        "num_stages": 2 if exact_fp32 and not big else 3,
    }


def _configs(names: tuple[str, ...], *rows: tuple[int, ...]) -> list[dict[str, int]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


def _tiles(*rows: tuple[int, ...]) -> list[dict[str, int]]:
    return _configs(("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"), *rows)


# The configurations the autotuner tries for large matmuls on a GPU (the first is
# matmul_config's); the fp16/bf16 list follows the Triton matmul tutorial's. Every one is
# compiled for sm_80 and sm_90 by tests/test_aot.py and must not spill.
_MATMUL_TUNE = {
    "half": _tiles(
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 32, 4, 4),
        (128, 64, 32, 4, 4),
        (64, 128, 32, 4, 4),
        (64, 256, 32, 4, 4),
    ),
    "tf32": _tiles((128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3)),
    "ieee": _tiles((128, 128, 16, 8, 3), (128, 64, 16, 4, 3), (64, 128, 16, 4, 3)),
}


def matmul_candidates(
    m: int, n: int, k: int, dtype: torch.dtype, precision: str = "ieee"
) -> list[dict[str, int]]:
    """The configurations ``K.matmul`` autotunes among on a GPU (none for small matrices, which
    take :func:`matmul_config` as it is)."""
    _check_config_args(dtype, m=m, n=n, k=k)
    check.one_of("precision", precision, ("ieee", "tf32"))
    if m < 128 or n < 128:
        return []
    kind = "half" if dtype != torch.float32 else precision
    return [dict(c) for c in _MATMUL_TUNE[kind]]


def attention_config(head_dim: int, dtype: torch.dtype, backend: str = "cuda") -> dict:
    """Blocks and launch parameters of ``K.flash_attention`` for one head size and dtype.

    Checked by compiling each choice for sm_80 and sm_90 (``tests/test_aot.py``). fp16/bf16 keep
    a 128-query block on the tensor cores. fp32, computed exactly on the FMA units, keeps its
    operands in registers: a 128 x 128 fp32 query block spills thousands of bytes per thread, so
    fp32 takes 64 queries and 16 keys at a time."""
    _check_config_args(dtype, backend, head_dim=head_dim)
    if backend == "interpreter":
        return {"BLOCK_M": 32, "BLOCK_N": 32}
    if dtype == torch.float32:
        if head_dim > 64:
            return {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 8, "num_stages": 2}
        return {"BLOCK_M": 64, "BLOCK_N": 16, "num_warps": 4, "num_stages": 3}
    if head_dim > 64:
        return {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 8, "num_stages": 3}
    # A head size that is not a multiple of 16 loses the vector loads; with 4 warps, d = 40
    # spills. 8 warps spread the 128 x 64 score tile over twice the registers.
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8 if head_dim % 16 else 4, "num_stages": 3}


def _blocks(*rows: tuple[int, ...]) -> list[dict[str, int]]:
    return _configs(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), *rows)


# Autotuned on a GPU for fp16/bf16 and sequences of 128 queries or more (the first is
# attention_config's); compiled for sm_80 and sm_90 by tests/test_aot.py.
_ATTENTION_TUNE = {
    "d<=64": _blocks((128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3)),
    "d<=64, d%16": _blocks((128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)),
    "d>64": _blocks((128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)),  # (128, 64) spills on sm_80
}


def attention_candidates(seq_q: int, head_dim: int, dtype: torch.dtype) -> list[dict[str, int]]:
    """The configurations ``K.flash_attention`` autotunes among on a GPU (fp16/bf16, at least
    128 queries; otherwise none, and :func:`attention_config` is used as it is)."""
    _check_config_args(dtype, seq_q=seq_q, head_dim=head_dim)
    if dtype == torch.float32 or seq_q < 128:
        return []
    kind = "d>64" if head_dim > 64 else ("d<=64, d%16" if head_dim % 16 else "d<=64")
    return [dict(c) for c in _ATTENTION_TUNE[kind]]

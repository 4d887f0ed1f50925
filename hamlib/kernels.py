r"""GPU kernels written in Triton, with torch references, that run everywhere.

``backend()`` says where the kernels run:

- ``"cuda"``: triton is installed and a CUDA GPU is visible; kernels are compiled for it and take
  CUDA tensors.
- ``"interpreter"``: triton is installed but there is no GPU. Importing this module sets
  ``TRITON_INTERPRET=1`` (before the kernels are defined), so every kernel runs on the CPU through
  Triton's interpreter (numpy underneath) and takes CPU tensors. The results are the same; the
  speed means nothing.
- ``"torch"``: triton cannot be imported (e.g. macOS); every function falls back to its torch
  reference, so a chapter still runs.

The wrappers check device, dtype, shape and contiguity and raise ``TypeError``/``ValueError``
naming the argument, because a kernel given the wrong strides or a tensor on the wrong device
does not fail: it reads whatever memory the addresses point at.

Besides the kernels, the module holds the small models the GPU chapter computes with: the
published figures of one data-centre GPU, FLOP and byte counts of common operations, a byte
counter for unfused torch code, and toy models of warp divergence and latency hiding.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = [
    "CUDA_ADD_SOURCE",
    "A100_SXM",
    "H100_SXM",
    "GPUSpec",
    "Occupancy",
    "Launch",
    "Traffic",
    "add",
    "attainable_flops",
    "bank_conflicts",
    "benchmark",
    "backend",
    "coalescing",
    "default_benchmarks",
    "host_timer",
    "count_traffic",
    "cuda_add",
    "flash_attention",
    "attention_candidates",
    "attention_config",
    "latency_hiding",
    "launch_plan",
    "layer_norm",
    "matmul",
    "matmul_candidates",
    "matmul_config",
    "next_power_of_2",
    "occupancy",
    "op_cost",
    "reference",
    "softmax",
    "softmax_unfused",
    "tile_order",
    "warp_efficiency",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _select_backend() -> str:
    if os.environ.get("HAMLIB_KERNELS_BACKEND") == "torch":  # force the fallback (for tests)
        return "torch"
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None blocks it
        found = False
    if not found:
        return "torch"
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "cuda"
    # Must happen before any @triton.jit runs: the decorator reads it.
    os.environ["TRITON_INTERPRET"] = "1"
    return "interpreter"


_BACKEND = _select_backend()
_tk: Any = None
if _BACKEND != "torch":
    try:
        from hamlib import _triton_kernels as _tk
    except Exception as exc:  # pragma: no cover - a broken triton install
        import warnings

        warnings.warn(
            f"triton is installed but could not be used ({exc}); using torch references",
            stacklevel=1,
        )
        _BACKEND = "torch"


def backend() -> str:
    """``"cuda"``, ``"interpreter"`` or ``"torch"``: where this module's kernels run."""
    return _BACKEND


def _device() -> str:
    return "cuda" if _BACKEND == "cuda" else "cpu"


def _check_tensor(name: str, t: Any, ndim: int | None = None, check_device: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if check_device and _BACKEND != "torch" and t.device.type != _device():
        where = "CUDA tensors" if _BACKEND == "cuda" else "CPU tensors (no GPU: interpreter)"
        raise ValueError(
            f"{name} is on {t.device}, but the {_BACKEND!r} backend takes {where}; "
            f"move it with .to({_device()!r})"
        )
    if not t.is_contiguous():
        raise ValueError(
            f"{name} must be contiguous (the kernels compute addresses from the shape); "
            "call .contiguous() first"
        )
    return t


def _same(name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def _empty(shape: tuple[int, ...] | torch.Size, like: Tensor, backend: str) -> Tensor:
    # The interpreter rounds fp32 -> bf16 toward zero (a GPU rounds to nearest even): there, a
    # bf16 result is stored in fp32 and rounded by torch afterwards (see _result).
    dtype = torch.float32 if backend == "interpreter" and like.dtype == torch.bfloat16 else None
    return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)


def _result(out: Tensor, like: Tensor) -> Tensor:
    return out.to(like.dtype)


def _upcast(backend: str, *ts: Tensor) -> bool:
    # The interpreter's bf16 arithmetic (tl.dot included) is silently wrong: use fp32 there.
    return backend == "interpreter" and any(t.dtype == torch.bfloat16 for t in ts)


# ----------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class Launch:
    """One kernel launch exactly as a wrapper makes it: the kernel (a name in
    ``hamlib._triton_kernels``), the grid, the arguments and the compile-time parameters
    (constexprs, ``num_warps``, ``num_stages``). ``launch()`` runs it; :func:`hamlib.aot.compile`
    compiles the same launch for a GPU that is not here."""

    kernel: str
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    meta: dict[str, Any]
    # On a GPU, the wrapper lets Triton's autotuner choose among these configurations (tile
    # sizes, num_warps, num_stages) once per shape and dtype; ``meta`` holds the first, the one
    # the interpreter and a compile use. ``grid_of(meta)`` is the grid of a configuration and
    # ``key`` names the arguments whose values start a new search.
    tune: tuple[dict[str, Any], ...] = ()
    grid_of: Callable[[dict[str, Any]], tuple[int, ...]] | None = None
    key: tuple[str, ...] = ()

    def variants(self) -> list[Launch]:
        """This launch under each configuration the autotuner may choose (itself if none)."""
        if not self.tune or self.grid_of is None:
            return [self]
        out = []
        for config in self.tune:
            meta = {**self.meta, **config}
            out.append(Launch(self.kernel, self.grid_of(meta), self.args, meta))
        return out

    def __call__(self) -> None:
        if self.tune and self.grid_of is not None and _BACKEND == "cuda":
            grid_of = self.grid_of
            fixed = {k: v for k, v in self.meta.items() if k not in self.tune[0]}
            kernel = _autotuned(self.kernel, self.tune, self.key)
            kernel[lambda meta: grid_of({**fixed, **meta})](*self.args, **fixed)
        else:
            getattr(_tk, self.kernel)[self.grid](*self.args, **self.meta)


_AUTOTUNED: dict[tuple[str, str], Any] = {}


def _autotuned(kernel: str, tune: tuple[dict[str, Any], ...], key: tuple[str, ...]) -> Any:
    # One triton.autotune wrapper per kernel and list of configurations, built on first use (on
    # a GPU only); it benchmarks every configuration the first time it meets a key.
    ident = (kernel, repr(tune))
    if ident not in _AUTOTUNED:
        import triton

        configs = [
            triton.Config(
                {k: v for k, v in c.items() if k not in ("num_warps", "num_stages")},
                num_warps=c["num_warps"],
                num_stages=c["num_stages"],
            )
            for c in tune
        ]
        from triton.testing import do_bench

        # Short timing windows (5 ms warm-up, 25 ms of runs per configuration): the search runs
        # once per shape and dtype, and the kernel tests meet many shapes.
        quick = partial(do_bench, warmup=5, rep=25)
        _AUTOTUNED[ident] = triton.autotune(configs=configs, key=list(key), do_bench=quick)(
            getattr(_tk, kernel)
        )
    return _AUTOTUNED[ident]


BACKENDS = ("cuda", "interpreter")


def launch_plan(name: str, *args: Any, backend: str = "cuda", **kwargs: Any) -> Launch:
    """The launch that ``K.<name>(*args, **kwargs)`` makes on ``backend`` (``"cuda"`` or
    ``"interpreter"``), whatever this machine is. Inputs are checked as the wrapper checks them,
    except their device: CPU or ``"meta"`` tensors plan a CUDA launch. The output tensor is
    allocated on the inputs' device. Used to compile, on a CPU, what a GPU would run."""
    if name not in _PLANS:
        raise ValueError(f"name must be one of {sorted(_PLANS)}, got {name!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    checked = _ARGS[name](*args, check_device=False, **kwargs)
    return _PLANS[name](*checked, backend=backend)[0]


def _run(name: str, *checked: Any) -> Tensor:
    plan, out = _PLANS[name](*checked, backend=_BACKEND)
    plan()
    return _result(out, checked[0])


def _add_args(x: Tensor, y: Tensor, check_device: bool = True) -> tuple[Tensor, Tensor]:
    _check_tensor("x", x, check_device=check_device)
    _check_tensor("y", y, check_device=check_device)
    _same("y", y, "x", x)
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x, y


def _add_plan(x: Tensor, y: Tensor, backend: str) -> tuple[Launch, Tensor]:
    out = _empty(x.shape, x, backend)
    n = x.numel()
    block = 1024
    return Launch("add_kernel", (math.ceil(n / block),), (x, y, out, n), {"BLOCK": block}), out


def add(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise ``x + y`` for tensors of equal shape and dtype: one program per 1024 elements."""
    x, y = _add_args(x, y)
    if _BACKEND == "torch":
        return reference("add")(x, y)
    return _run("add", x, y)


# Rows longer than this use the two-pass online kernel instead of holding the row in registers.
# Compiled with 16 warps, a row of 32,768 fp32 values takes 97 registers per thread; 65,536 spill
# (Chapter 6 compiles both).
SOFTMAX_MAX_FUSED = 32768


def softmax(x: Tensor, max_fused: int = SOFTMAX_MAX_FUSED) -> Tensor:
    """Softmax over the last dimension of a 2-D tensor, computed in float32, returned in x.dtype.

    One program per row. A row of up to ``max_fused`` elements is read once and written once;
    longer rows take the online-softmax kernel (read twice, written once), in chunks of
    ``min(4096, max_fused)`` rounded up to a power of two (tests lower it to exercise that path
    on short rows)."""
    x, max_fused = _softmax_args(x, max_fused)
    if _BACKEND == "torch":
        return reference("softmax")(x)
    return _run("softmax", x, max_fused)


def _softmax_args(
    x: Tensor, max_fused: int = SOFTMAX_MAX_FUSED, check_device: bool = True
) -> tuple[Tensor, int]:
    _check_tensor("x", x, ndim=2, check_device=check_device)
    if not isinstance(max_fused, int) or isinstance(max_fused, bool) or max_fused < 1:
        raise ValueError(f"max_fused must be a positive int, got {max_fused!r}")
    return x, max_fused


def _softmax_plan(x: Tensor, max_fused: int, backend: str) -> tuple[Launch, Tensor]:
    rows, cols = x.shape
    out = _empty(x.shape, x, backend)
    args = (out, x, x.stride(0), out.stride(0), cols)
    if cols <= max_fused:
        block = next_power_of_2(cols)
        warps = 4 if block <= 2048 else (8 if block <= 8192 else 16)
        return Launch("softmax_kernel", (rows,), args, {"BLOCK": block, "num_warps": warps}), out
    block = min(4096, next_power_of_2(max_fused))
    meta = {"BLOCK": block, "num_warps": 8}
    return Launch("softmax_online_kernel", (rows,), args, meta), out


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (block sizes in Triton must be powers of two)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    return 1 << (int(n) - 1).bit_length()


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
    if m < 128 or n < 128:
        return []
    kind = "half" if dtype != torch.float32 else precision
    return [dict(c) for c in _MATMUL_TUNE[kind]]


def tile_order(tiles_m: int, tiles_n: int, group_m: int) -> np.ndarray:
    """The (tile-row, tile-column) of C that each program id computes in ``matmul_kernel``:
    the kernel's grouped-ordering arithmetic, in Python. ``group_m = 1`` is row-major order.

    Returns an int array of shape (tiles_m * tiles_n, 2)."""
    for name, val in (("tiles_m", tiles_m), ("tiles_n", tiles_n), ("group_m", group_m)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    pid = np.arange(tiles_m * tiles_n)
    per_group = group_m * tiles_n
    first_m = (pid // per_group) * group_m
    rows_in_group = np.minimum(tiles_m - first_m, group_m)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    return np.stack([pid_m, pid_n], axis=1)


PRECISIONS = ("ieee", "tf32")


def matmul(a: Tensor, b: Tensor, precision: str = "ieee") -> Tensor:
    """``a @ b`` for 2-D tensors (M, K) and (K, N) of one dtype, accumulated in float32.

    Tiles of C are handed out in grouped order (``GROUP_M`` tile-rows at a time) so that
    neighbouring programs reuse the tiles of A and B they load. ``precision`` matters for fp32
    inputs on a GPU only: ``"ieee"`` (default, as torch's default) multiplies in full fp32 on the
    FMA units; ``"tf32"`` cuts the inputs to TF32 (10-bit mantissa; Triton truncates) for the
    tensor cores. The interpreter computes both in full fp32."""
    a, b, precision = _matmul_args(a, b, precision)
    if _BACKEND == "torch":
        return reference("matmul")(a, b)
    return _run("matmul", a, b, precision)


def _matmul_args(
    a: Tensor, b: Tensor, precision: str = "ieee", check_device: bool = True
) -> tuple[Tensor, Tensor, str]:
    _check_tensor("a", a, ndim=2, check_device=check_device)
    _check_tensor("b", b, ndim=2, check_device=check_device)
    _same("b", b, "a", a)
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
            "(need a.shape[1] == b.shape[0])"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return a, b, precision


def _matmul_plan(a: Tensor, b: Tensor, precision: str, backend: str) -> tuple[Launch, Tensor]:
    m, k = a.shape
    n = b.shape[1]
    c = _empty((m, n), a, backend)
    cfg = matmul_config(m, n, k, a.dtype, backend, precision)
    strides = (a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    args = (a, b, c, m, n, k, *strides)
    # For fp16/bf16 operands the precision is ignored: they go to the tensor cores as they are.
    meta = {"UPCAST": _upcast(backend, a), "PRECISION": precision, **cfg}
    tune = tuple(matmul_candidates(m, n, k, a.dtype, precision)) if backend == "cuda" else ()
    if tune:
        meta.update(tune[0])

    def grid_of(meta: dict[str, Any]) -> tuple[int, ...]:
        return (math.ceil(m / meta["BLOCK_M"]) * math.ceil(n / meta["BLOCK_N"]),)

    launch = Launch("matmul_kernel", grid_of(meta), args, meta, tune, grid_of, ("M", "N", "K"))
    return launch, c


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    r"""Layer norm over the last dimension: :math:`y = (x - \mu)/\sqrt{\sigma^2 + \epsilon}\,w + b`
    with the biased variance, as ``torch.nn.functional.layer_norm``. x may have any leading
    dimensions; weight and bias have shape (N,)."""
    x, weight, bias, eps = _layer_norm_args(x, weight, bias, eps)
    if _BACKEND == "torch":
        return reference("layer_norm")(x, weight, bias, eps)
    return _run("layer_norm", x, weight, bias, eps).reshape(x.shape)


def _layer_norm_args(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5, check_device: bool = True
) -> tuple[Tensor, Tensor, Tensor, float]:
    _check_tensor("x", x, check_device=check_device)
    _check_tensor("weight", weight, ndim=1, check_device=check_device)
    _check_tensor("bias", bias, ndim=1, check_device=check_device)
    _same("weight", weight, "x", x)
    _same("bias", bias, "x", x)
    n = x.shape[-1]
    if weight.shape[0] != n or bias.shape[0] != n:
        raise ValueError(
            f"weight and bias must have shape ({n},) to match x's last dimension, got "
            f"{tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    return x, weight, bias, float(eps)


def _layer_norm_plan(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, backend: str
) -> tuple[Launch, Tensor]:
    n = x.shape[-1]
    rows = x.numel() // n
    x2 = x.reshape(rows, n)
    y = _empty(x2.shape, x2, backend)
    block = min(4096, next_power_of_2(n))
    meta = {"BLOCK": block, "num_warps": 8 if block >= 2048 else 4}
    args = (x2, y, weight, bias, x2.stride(0), n, eps)
    return Launch("layer_norm_kernel", (rows,), args, meta), y


def flash_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, sm_scale: float | None = None
) -> Tensor:
    r"""Attention :math:`\mathrm{softmax}(QK^\top s)V` for (batch, heads, seq, head_dim) tensors,
    :math:`s` = ``sm_scale`` (default :math:`1/\sqrt{d}`), without forming the score matrix.

    k and v share their shape; q may have another sequence length unless ``causal`` (then the
    query i sees keys 0..i, as ``scaled_dot_product_attention(is_causal=True)``). head_dim from
    16 to 128, any sequence length."""
    q, k, v, causal, sm_scale = _attention_args(q, k, v, causal, sm_scale)
    if _BACKEND == "torch":
        return _attention_reference(q, k, v, causal, sm_scale)
    return _run("flash_attention", q, k, v, causal, sm_scale)


def _attention_args(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    sm_scale: float | None = None,
    check_device: bool = True,
) -> tuple[Tensor, Tensor, Tensor, bool, float]:
    _check_tensor("q", q, ndim=4, check_device=check_device)
    _check_tensor("k", k, ndim=4, check_device=check_device)
    _check_tensor("v", v, ndim=4, check_device=check_device)
    _same("k", k, "q", q)
    _same("v", v, "q", q)
    b, h, s_q, d = q.shape
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k.shape[0] != b or k.shape[1] != h or k.shape[3] != d:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} must agree in batch, heads and head_dim"
        )
    if not 16 <= d <= 128:
        raise ValueError(f"head_dim must be between 16 and 128, got {d}")
    if causal and s_q != k.shape[2]:
        raise ValueError(
            f"causal attention needs equal query and key lengths, got {s_q} and {k.shape[2]}"
        )
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(d)
    if not (isinstance(sm_scale, (int, float)) and math.isfinite(sm_scale)):
        raise ValueError(f"sm_scale must be a finite number, got {sm_scale!r}")
    return q, k, v, bool(causal), float(sm_scale)


def attention_config(head_dim: int, dtype: torch.dtype, backend: str = "cuda") -> dict:
    """Blocks and launch parameters of ``K.flash_attention`` for one head size and dtype.

    Checked by compiling each choice for sm_80 and sm_90 (``tests/test_aot.py``). fp16/bf16 keep
    a 128-query block on the tensor cores. fp32, computed exactly on the FMA units, keeps its
    operands in registers: a 128 x 128 fp32 query block spills thousands of bytes per thread, so
    fp32 takes 64 queries and 16 keys at a time."""
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


def _attention_plan(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, sm_scale: float, backend: str
) -> tuple[Launch, Tensor]:
    b, h, s_q, d = q.shape
    o = _empty(q.shape, q, backend)
    cfg = attention_config(d, q.dtype, backend)
    args = (q, k, v, o, sm_scale, s_q, k.shape[2], d)
    meta = {
        "CAUSAL": causal,
        "UPCAST": _upcast(backend, q),
        "PRECISION": "ieee",
        "BLOCK_D": max(16, next_power_of_2(d)),
        **cfg,
    }
    tune = tuple(attention_candidates(s_q, d, q.dtype)) if backend == "cuda" else ()
    if tune:
        meta.update(tune[0])

    def grid_of(meta: dict[str, Any]) -> tuple[int, ...]:
        return (math.ceil(s_q / meta["BLOCK_M"]), b * h)

    key = ("S_q", "S_k", "D", "CAUSAL")
    return Launch("flash_attention_kernel", grid_of(meta), args, meta, tune, grid_of, key), o


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
    if dtype == torch.float32 or seq_q < 128:
        return []
    kind = "d>64" if head_dim > 64 else ("d<=64, d%16" if head_dim % 16 else "d<=64")
    return [dict(c) for c in _ATTENTION_TUNE[kind]]


_ARGS: dict[str, Callable[..., tuple[Any, ...]]] = {
    "add": _add_args,
    "softmax": _softmax_args,
    "matmul": _matmul_args,
    "layer_norm": _layer_norm_args,
    "flash_attention": _attention_args,
}
_PLANS: dict[str, Callable[..., tuple[Launch, Tensor]]] = {
    "add": _add_plan,
    "softmax": _softmax_plan,
    "matmul": _matmul_plan,
    "layer_norm": _layer_norm_plan,
    "flash_attention": _attention_plan,
}


def _attention_reference(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> Tensor:
    out = F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=causal, scale=scale
    )
    return out.to(q.dtype)


_REFERENCES: dict[str, Callable[..., Tensor]] = {
    "add": lambda x, y: x + y,
    "softmax": lambda x: torch.softmax(x.float(), dim=-1).to(x.dtype),
    "matmul": lambda a, b: (a.float() @ b.float()).to(a.dtype),
    "layer_norm": lambda x, w, b, eps=1e-5: F.layer_norm(
        x.float(), (x.shape[-1],), w.float(), b.float(), eps
    ).to(x.dtype),
    "flash_attention": lambda q, k, v, causal=False, sm_scale=None: _attention_reference(
        q, k, v, causal, 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else sm_scale
    ),
}


def reference(name: str) -> Callable[..., Tensor]:
    """The torch computation each kernel is tested against (float32 inside, input dtype out);
    also what the kernels compute on the "torch" backend."""
    if name not in _REFERENCES:
        raise ValueError(f"name must be one of {sorted(_REFERENCES)}, got {name!r}")
    return _REFERENCES[name]


# ------------------------------------------------------------------------------------ CUDA C

CUDA_ADD_SOURCE = r"""
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

// One thread per element. The grid is ceil(n / 256) blocks of 256 threads; threads past the
// end of the tensor (the last block) do nothing: the `if` is the mask.
__global__ void add_kernel(const float* x, const float* y, float* out, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;   // this thread's element
    if (i < n) out[i] = x[i] + y[i];
}

torch::Tensor add(torch::Tensor x, torch::Tensor y) {
    auto out = torch::empty_like(x);
    long n = x.numel();
    int threads = 256;
    long blocks = (n + threads - 1) / threads;
    // On PyTorch's current stream, so that it is ordered with the torch operations around it
    // (the bare <<<blocks, threads>>> would use the legacy default stream).
    auto stream = at::cuda::getCurrentCUDAStream();
    add_kernel<<<blocks, threads, 0, stream>>>(x.data_ptr<float>(), y.data_ptr<float>(),
                                               out.data_ptr<float>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();  // a failed launch raises here, not at some later call
    return out;
}
"""

_cuda_module: Any = None


def cuda_add(x: Tensor, y: Tensor) -> Tensor:
    """``CUDA_ADD_SOURCE`` compiled with nvcc (``torch.utils.cpp_extension.load_inline``) and run.

    Needs a CUDA GPU, nvcc and ninja; raises ``RuntimeError`` saying which is missing."""
    global _cuda_module
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_add needs a CUDA GPU; none is visible to torch")
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("cuda_add needs nvcc (the CUDA toolkit); CUDA_HOME was not found")
    for name, t in (("x", x), ("y", y)):
        if not (isinstance(t, Tensor) and t.is_cuda and t.dtype == torch.float32):
            raise TypeError(f"{name} must be a float32 CUDA tensor")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if _cuda_module is None:
        _cuda_module = cpp_extension.load_inline(
            name="hamlib_cuda_add",
            cpp_sources="torch::Tensor add(torch::Tensor x, torch::Tensor y);",
            cuda_sources=CUDA_ADD_SOURCE,
            functions=["add"],
        )
    return _cuda_module.add(x, y)


# ------------------------------------------------------------------------- models of the GPU


@dataclass(frozen=True)
class GPUSpec:
    """Published figures of one GPU (dense, i.e. without 2:4 sparsity)."""

    name: str
    arch: int  # compute capability x 10: 80 = Ampere A100, 90 = Hopper H100
    sms: int
    warp_size: int
    max_warps_per_sm: int
    max_blocks_per_sm: int
    registers_per_sm: int  # 32-bit registers
    shared_memory_per_sm_kib: int  # configurable L1/shared; the shared-memory maximum
    shared_memory_per_block_kib: int  # the most one block may opt in to
    l2_mib: int
    hbm_gib: int
    hbm_bandwidth: float  # bytes / s
    fp16_tensor_flops: float  # FLOP / s, dense fp16/bf16 tensor cores, fp32 accumulate
    fp32_flops: float  # FLOP / s, non-tensor fp32
    tf32_tensor_flops: float  # FLOP / s, dense TF32 tensor cores
    fp8_tensor_flops: float  # FLOP / s, dense FP8 tensor cores (0: none)
    fp32_lanes_per_sm: int  # "CUDA cores": fp32 FMA lanes per SM
    clock_hz: float  # the boost clock at which the tensor-core figure is quoted
    source: str
    shared_bytes_per_clock_per_sm: int = 128  # 32 banks x 4 bytes
    special_functions_per_clock_per_sm: int = 16  # exp2, rcp, rsqrt...: 4 SFUs x 4 partitions

    @property
    def shared_bandwidth(self) -> float:
        """Bytes / s of shared memory, all SMs together (32 banks of 4 bytes per clock)."""
        return self.sms * self.shared_bytes_per_clock_per_sm * self.clock_hz

    @property
    def special_function_rate(self) -> float:
        """exp2 (and other special-function) results per second, all SMs together."""
        return self.sms * self.special_functions_per_clock_per_sm * self.clock_hz


H100_SXM = GPUSpec(
    name="NVIDIA H100 SXM5 80GB",
    arch=90,
    sms=132,
    warp_size=32,
    max_warps_per_sm=64,
    max_blocks_per_sm=32,
    registers_per_sm=65536,
    shared_memory_per_sm_kib=228,
    shared_memory_per_block_kib=227,
    l2_mib=50,
    hbm_gib=80,
    hbm_bandwidth=3.35e12,
    fp16_tensor_flops=989.4e12,
    fp32_flops=66.9e12,
    tf32_tensor_flops=494.7e12,
    fp8_tensor_flops=1978.9e12,
    fp32_lanes_per_sm=128,
    clock_hz=1.83e9,
    source=(
        "NVIDIA H100 Tensor Core GPU datasheet (SXM5: 3.35 TB/s HBM3, 989 TFLOPS dense FP16 "
        "Tensor Core, 495 TFLOPS dense TF32, 1,979 TFLOPS dense FP8, 67 TFLOPS FP32) and NVIDIA "
        "H100 Tensor Core GPU Architecture whitepaper "
        "(132 SMs, 128 FP32 cores, 64K 32-bit registers, 228 KB shared memory and 64 warps per "
        "SM, 50 MB L2, 16 SFUs per SM); 227 KB per block and 32 blocks per SM: CUDA C "
        "Programming Guide, compute capability 9.0"
    ),
)

A100_SXM = GPUSpec(
    name="NVIDIA A100 SXM4 80GB",
    arch=80,
    sms=108,
    warp_size=32,
    max_warps_per_sm=64,
    max_blocks_per_sm=32,
    registers_per_sm=65536,
    shared_memory_per_sm_kib=164,
    shared_memory_per_block_kib=163,
    l2_mib=40,
    hbm_gib=80,
    hbm_bandwidth=2.039e12,
    fp16_tensor_flops=312e12,
    fp32_flops=19.5e12,
    tf32_tensor_flops=156e12,
    fp8_tensor_flops=0.0,
    fp32_lanes_per_sm=64,
    clock_hz=1.41e9,
    source=(
        "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB: 2,039 GB/s HBM2e, 312 TFLOPS FP16 "
        "Tensor Core, 156 TFLOPS TF32, 19.5 TFLOPS FP32) and NVIDIA A100 Tensor Core GPU "
        "Architecture whitepaper "
        "(108 SMs, 64 FP32 cores and 192 KB L1/shared per SM of which 164 KB shared, 40 MB L2, "
        "1,410 MHz boost); "
        "163 KB per block: CUDA C Programming Guide, compute capability 8.0"
    ),
)


@dataclass(frozen=True)
class Occupancy:
    """How many blocks of a kernel one SM holds at once, and which resource stops it."""

    blocks_per_sm: int
    warps_per_sm: int
    limited_by: str  # "registers", "shared memory", "warps" or "blocks"
    fraction: float  # warps_per_sm / max_warps_per_sm


def occupancy(spec: GPUSpec, registers: int, shared_bytes: int, num_warps: int) -> Occupancy:
    """Resident blocks per SM for a kernel that uses ``registers`` per thread, ``shared_bytes``
    of shared memory per block and ``num_warps`` warps per block: the CUDA occupancy calculator's
    arithmetic. Registers are allocated per warp in units of 256; each block's shared memory is
    rounded up to 128 bytes, plus 1 KiB the system reserves per block (compute capability 8.0
    and later)."""
    for name, val, low in (
        ("registers", registers, 1),
        ("shared_bytes", shared_bytes, 0),
        ("num_warps", num_warps, 1),
    ):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    if registers > 255:
        raise ValueError(f"registers must be <= 255 (the most a thread can have), got {registers}")
    if num_warps > 32:
        raise ValueError(f"num_warps must be <= 32 (1,024 threads per block), got {num_warps}")
    if shared_bytes > spec.shared_memory_per_block_kib * 1024:
        raise ValueError(
            f"shared_bytes = {shared_bytes} exceeds {spec.name}'s per-block limit of "
            f"{spec.shared_memory_per_block_kib} KiB: the kernel cannot launch"
        )
    regs_per_warp = math.ceil(registers * spec.warp_size / 256) * 256
    limits = {
        "registers": (spec.registers_per_sm // regs_per_warp) // num_warps,
        "shared memory": (
            (spec.shared_memory_per_sm_kib * 1024) // (math.ceil(shared_bytes / 128) * 128 + 1024)
        ),
        "warps": spec.max_warps_per_sm // num_warps,
        "blocks": spec.max_blocks_per_sm,
    }
    limited_by = min(limits, key=lambda k: limits[k])
    blocks = limits[limited_by]
    warps = blocks * num_warps
    return Occupancy(blocks, warps, limited_by, warps / spec.max_warps_per_sm)


def attainable_flops(intensity: float | np.ndarray, peak_flops: float, bandwidth: float) -> Any:
    r"""Roofline (Williams, Waterman & Patterson, 2009): :math:`\min(P, I \cdot B)` FLOP/s for
    arithmetic intensity I (FLOP/byte), peak compute P (FLOP/s) and memory bandwidth B (byte/s)."""
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError("peak_flops and bandwidth must be positive")
    i = np.asarray(intensity, dtype=float)
    if np.any(i < 0):
        raise ValueError("intensity must be >= 0")
    return np.minimum(peak_flops, i * bandwidth)


def op_cost(op: str, dtype_bytes: int = 2, **shape: int) -> tuple[float, float]:
    """(FLOPs, bytes moved to and from HBM) of one operation done in a single fused pass.

    Conventions: exp, max and divide count as one FLOP each; a multiply-add is two. Bytes count
    every input read once and every output written once (the minimum traffic):

    - ``add(n)``: n FLOPs; 3n elements.
    - ``softmax(m, n)``: max, subtract, exp, sum, divide = 5mn FLOPs; 2mn elements.
    - ``layer_norm(m, n)``: mean (1), variance (3), normalize and affine (4) = 8mn FLOPs; 2mn + 2n.
    - ``matmul(m, n, k)``: 2mnk FLOPs; mk + kn + mn elements.
    - ``attention(batch, heads, seq, head_dim)``: QK^T and PV, 4 s^2 d per head, plus softmax
      5 s^2; reads Q, K, V and writes O, 4sd elements per head (flash attention's traffic).
    - ``attention_unfused(...)``: the same FLOPs; the s x s scores are also written, read by the
      softmax, written again and read by PV: 4 s^2 more elements per head.
    """
    if dtype_bytes not in (1, 2, 4, 8):
        raise ValueError(f"dtype_bytes must be 1, 2, 4 or 8, got {dtype_bytes!r}")
    need = {
        "add": ("n",),
        "softmax": ("m", "n"),
        "layer_norm": ("m", "n"),
        "matmul": ("m", "n", "k"),
        "attention": ("batch", "heads", "seq", "head_dim"),
        "attention_unfused": ("batch", "heads", "seq", "head_dim"),
    }
    if op not in need:
        raise ValueError(f"op must be one of {sorted(need)}, got {op!r}")
    if set(shape) != set(need[op]):
        raise ValueError(f"op {op!r} takes sizes {need[op]}, got {tuple(shape)}")
    for key, val in shape.items():
        if not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{key} must be a positive integer, got {val!r}")
    s = {key: float(val) for key, val in shape.items()}
    if op == "add":
        flops, elems = s["n"], 3 * s["n"]
    elif op == "softmax":
        flops, elems = 5 * s["m"] * s["n"], 2 * s["m"] * s["n"]
    elif op == "layer_norm":
        flops, elems = 8 * s["m"] * s["n"], 2 * s["m"] * s["n"] + 2 * s["n"]
    elif op == "matmul":
        flops = 2 * s["m"] * s["n"] * s["k"]
        elems = s["m"] * s["k"] + s["k"] * s["n"] + s["m"] * s["n"]
    else:
        bh, sq, d = s["batch"] * s["heads"], s["seq"], s["head_dim"]
        flops = bh * (4 * sq * sq * d + 5 * sq * sq)
        elems = bh * 4 * sq * d + (bh * 4 * sq * sq if op == "attention_unfused" else 0.0)
    return flops, elems * dtype_bytes


@dataclass
class Traffic:
    """Bytes each torch call read and wrote, in call order: ``(name, read, written)``."""

    ops: list[tuple[str, int, int]]

    @property
    def total(self) -> int:
        return sum(r + w for _, r, w in self.ops)


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


# In-place ops that overwrite their first argument without reading it.
_OVERWRITE = {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_"}


def _nbytes(ts: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


class _TrafficMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ins = list(_tensors(args)) + list(_tensors(kwargs))
        versions = [t._version for t in ins]
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        # Written: new tensors (a view of an input moves no data), and every input the call
        # mutated: in place (x.exp_(), x[m] = 0) or through out=.
        storages = {t.untyped_storage().data_ptr() for t in ins}
        mutated = [t for t, v in zip(ins, versions, strict=True) if t._version != v]
        fresh = [t for t in _tensors(out) if t.untyped_storage().data_ptr() not in storages]
        written = fresh + mutated
        if written:
            outs = set(map(id, _tensors(kwargs.get("out"))))
            if name in _OVERWRITE and args:
                outs.add(id(args[0]))
            read = [t for t in ins if id(t) not in outs]
            self.ops.append((name, _nbytes(read), _nbytes(written)))
        return out


def count_traffic(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Traffic:
    """Run ``fn(*args, **kwargs)`` and count the bytes every torch operation in it reads and
    writes, as if each operation were a separate kernel that finds nothing in cache: the traffic
    of unfused code. Views (reshapes, slices) move nothing and are not counted; an in-place op
    (``x.exp_()``) reads and writes its tensor; ``out=`` is written, not read."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    mode = _TrafficMode()
    with mode:
        fn(*args, **kwargs)
    return Traffic(mode.ops)


def softmax_unfused(x: Tensor) -> Tensor:
    """Softmax over the last dimension as five separate operations, each a pass over memory."""
    row_max = x.amax(dim=-1, keepdim=True)
    shifted = x - row_max
    numerator = shifted.exp()
    denominator = numerator.sum(dim=-1, keepdim=True)
    return numerator / denominator


def _warp_indices(name: str, values: Any, warp_size: int) -> np.ndarray:
    if not isinstance(warp_size, int) or isinstance(warp_size, bool) or warp_size < 1:
        raise ValueError(f"warp_size must be a positive int, got {warp_size!r}")
    arr = np.asarray(values)
    if arr.shape != (warp_size,) or not np.issubdtype(arr.dtype, np.integer) or np.any(arr < 0):
        raise ValueError(
            f"{name} must be {warp_size} non-negative integers (one per lane), got "
            f"shape {arr.shape} and dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def coalescing(
    element_index: np.ndarray | list[int],
    element_bytes: int = 4,
    sector_bytes: int = 32,
    warp_size: int = 32,
) -> tuple[int, float]:
    """(sectors, efficiency) of one warp's load: lane i reads element ``element_index[i]`` of a
    tensor. The memory system serves a warp in 32-byte sectors; the efficiency is the bytes the
    lanes asked for over the bytes of the sectors fetched (1.0: perfectly coalesced)."""
    for name, val in (("element_bytes", element_bytes), ("sector_bytes", sector_bytes)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    idx = _warp_indices("element_index", element_index, warp_size)
    first = idx * element_bytes // sector_bytes
    last = (idx * element_bytes + element_bytes - 1) // sector_bytes
    sectors = {int(s) for f, la in zip(first, last, strict=True) for s in range(f, la + 1)}
    useful = len(set(idx.tolist())) * element_bytes
    return len(sectors), useful / (len(sectors) * sector_bytes)


def bank_conflicts(word_index: np.ndarray | list[int], banks: int = 32, warp_size: int = 32) -> int:
    """How many passes one warp's shared-memory access takes: lane i reads 4-byte word
    ``word_index[i]``; word w lives in bank w mod ``banks``, each bank serves one word per pass,
    and lanes reading the same word share it (a broadcast). 1 means conflict-free."""
    if not isinstance(banks, int) or isinstance(banks, bool) or banks < 1:
        raise ValueError(f"banks must be a positive int, got {banks!r}")
    idx = _warp_indices("word_index", word_index, warp_size)
    words_per_bank: dict[int, set[int]] = {}
    for w in idx.tolist():
        words_per_bank.setdefault(w % banks, set()).add(w)
    return max(len(words) for words in words_per_bank.values())


def warp_efficiency(branch: np.ndarray | list[int], warp_size: int = 32) -> float:
    """Fraction of lane-cycles doing useful work when thread i takes branch ``branch[i]``.

    SIMT model: the threads of a warp share one instruction stream, so a warp whose lanes take
    b distinct branches runs all b one after another with the other lanes masked off (branches
    of equal cost assumed). Efficiency = threads / (warp_size x sum over warps of b)."""
    if not isinstance(warp_size, int) or warp_size < 1:
        raise ValueError(f"warp_size must be a positive int, got {warp_size!r}")
    b = np.asarray(branch)
    if b.ndim != 1 or b.size == 0 or b.size % warp_size:
        raise ValueError(
            f"branch must be a 1-D array whose length is a multiple of warp_size={warp_size}, "
            f"got shape {b.shape}"
        )
    passes = sum(len(np.unique(w)) for w in b.reshape(-1, warp_size))
    return b.size / (warp_size * passes)


def latency_hiding(
    n_warps: int, compute_cycles: int, latency_cycles: int, iters: int = 50
) -> dict[str, Any]:
    """Toy scheduler: each warp repeats (compute for ``compute_cycles``, then wait
    ``latency_cycles`` for memory); one issue slot runs one ready warp at a time.

    Returns the issue-slot ``utilization`` (busy cycles / total) and the ``timeline``: for each
    warp, its (start, end) compute intervals. With W warps utilization approaches
    min(1, W c / (c + L)): enough warps in flight hide the memory latency."""
    for name, val in (
        ("n_warps", n_warps),
        ("compute_cycles", compute_cycles),
        ("latency_cycles", latency_cycles),
        ("iters", iters),
    ):
        lowest = 0 if name == "latency_cycles" else 1
        if not isinstance(val, int) or isinstance(val, bool) or val < lowest:
            raise ValueError(f"{name} must be an int >= {lowest}, got {val!r}")
    ready = [0] * n_warps
    left = [iters] * n_warps
    timeline: list[list[tuple[int, int]]] = [[] for _ in range(n_warps)]
    clock = 0
    busy = 0
    while any(left):
        w = min((i for i in range(n_warps) if left[i]), key=lambda i: (ready[i], i))
        start = max(clock, ready[w])
        clock = start + compute_cycles
        busy += compute_cycles
        timeline[w].append((start, clock))
        ready[w] = clock + latency_cycles
        left[w] -= 1
    total = max(ready)  # the last warp's last load must also come back
    return {"utilization": busy / total, "timeline": timeline, "cycles": total}


# ------------------------------------------------------------------------- measuring speed


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
        if _BACKEND != "cuda":
            raise RuntimeError(
                f"benchmark needs a CUDA GPU (backend is {_BACKEND!r}); on a CPU the "
                "interpreter's speed means nothing"
            )
        from triton.testing import do_bench

        timer = partial(do_bench, return_mode="median")
        host = host or host_timer
    if cases is None:
        cases = default_benchmarks()
    dev = _device()
    gen = torch.Generator(device=dev).manual_seed(0)
    rows: list[dict[str, Any]] = []
    for kernel, dtype_name, shape in cases:
        if kernel not in BASELINES:
            raise ValueError(f"kernel must be one of {sorted(BASELINES)}, got {kernel!r}")
        tf32 = dtype_name == "tf32"
        dtype = torch.float32 if tf32 else getattr(torch, dtype_name, None)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"dtype must be float16, bfloat16, float32 or tf32, got {dtype_name!r}"
            )

        def rand(*size: int, dtype: torch.dtype = dtype) -> Tensor:
            return torch.randn(*size, generator=gen, device=dev).to(dtype)

        nbytes = torch.empty((), dtype=dtype).element_size()
        if kernel == "add":
            (n,) = shape
            x, y, dst = rand(n), rand(n), torch.empty(n, dtype=dtype, device=dev)
            ours = timer(partial(add, x, y))
            theirs = timer(partial(dst.copy_, x))
            work, unit = 3.0 * n * nbytes, "GB/s"
            ratio = (work / ours) / (2 * n * nbytes / theirs)
        elif kernel == "add_host":
            (n,) = shape
            x, y = rand(n), rand(n)
            clock = timer if host is None else host
            ours = clock(partial(add, x, y))
            theirs = clock(partial(torch.add, x, y))
            work, unit, ratio = 3.0 * n * nbytes, "GB/s", None
        elif kernel == "softmax":
            x = rand(*shape)
            ours = timer(partial(softmax, x))
            theirs = timer(partial(torch.softmax, x, -1))
            work, unit, ratio = 2.0 * x.numel() * nbytes, "GB/s", None
        elif kernel == "matmul":
            m, n, k = shape
            a, b = rand(m, k), rand(k, n)
            ours = timer(partial(matmul, a, b, "tf32" if tf32 else "ieee"))
            theirs = timer(partial(_cublas, a, b, tf32))
            work, unit, ratio = 2.0 * m * n * k, "TFLOP/s", None
        else:  # attention against SDPA, or against torch with the scores in HBM
            q, k_, v = (rand(*shape) for _ in range(3))
            ours = timer(partial(flash_attention, q, k_, v))
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

r"""GPU kernels written in Triton, with torch references, that run everywhere.

The kernels themselves are in :mod:`hamlib.triton_kernels`; this module checks inputs, plans each
launch (grid, tile sizes from :mod:`hamlib.kernel_configs`) and runs it. Where they run is chosen
once, from the environment variable ``HAMLIB_KERNELS_BACKEND`` (:mod:`hamlib.backend` documents it
and how the interpreter is switched on); ``backend()`` says what was chosen:

- ``"cuda"``: triton is installed and a CUDA GPU is visible; kernels are compiled for it and take
  CUDA tensors.
- ``"interpreter"``: triton is installed but there is no GPU (or the interpreter was asked for):
  every kernel runs on the CPU through Triton's interpreter (numpy underneath) and takes CPU
  tensors. The results are the same; the speed means nothing.
- ``"torch"``: triton cannot be imported (e.g. macOS) or was turned off; every function falls back
  to its torch reference, so a chapter still runs.

The wrappers check device, dtype, shape and contiguity and raise ``TypeError``/``ValueError``
naming the argument, because a kernel given the wrong strides or a tensor on the wrong device
does not fail: it reads whatever memory the addresses point at.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hamlib import _checks as check
from hamlib import backend as backend_switch
from hamlib.kernel_configs import (
    attention_candidates,
    attention_config,
    matmul_candidates,
    matmul_config,
    next_power_of_2,
)

__all__ = [
    "FLOAT_DTYPES",
    "SOFTMAX_MAX_FUSED",
    "Launch",
    "add",
    "backend",
    "device",
    "flash_attention",
    "launch_plan",
    "layer_norm",
    "matmul",
    "reference",
    "softmax",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_BACKEND = backend_switch.BACKEND
# The kernels, compiled or interpreted as the backend says (the chapter imports the same module
# by its name, hamlib.triton_kernels).
_tk: Any = importlib.import_module("hamlib.triton_kernels") if _BACKEND != "torch" else None


def backend() -> str:
    """``"cuda"``, ``"interpreter"`` or ``"torch"``: where this module's kernels run."""
    return _BACKEND


def device() -> str:
    """The device of the tensors this backend's kernels take: ``"cuda"`` or ``"cpu"``."""
    return "cuda" if _BACKEND == "cuda" else "cpu"


def _check_tensor(name: str, t: Any, ndim: int | None = None, check_device: bool = True) -> Tensor:
    t = check.tensor(name, t, dtype=FLOAT_DTYPES, ndim=ndim, nonempty=True)
    if check_device and _BACKEND != "torch" and t.device.type != device():
        where = "CUDA tensors" if _BACKEND == "cuda" else "CPU tensors (no GPU: interpreter)"
        raise ValueError(
            f"{name} is on {t.device}, but the {_BACKEND!r} backend takes {where}; "
            f"move it with .to({device()!r})"
        )
    if not t.is_contiguous():
        raise ValueError(
            f"{name} must be contiguous (the kernels compute addresses from the shape); "
            "call .contiguous() first"
        )
    return t


def _empty(shape: tuple[int, ...] | torch.Size, like: Tensor, backend: str) -> Tensor:
    # The interpreter rounds fp32 -> bf16 toward zero (a GPU rounds to nearest even): there, a
    # bf16 result is stored in fp32 and rounded by torch afterwards (see _run).
    dtype = torch.float32 if backend == "interpreter" and like.dtype == torch.bfloat16 else None
    return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)


def _upcast(backend: str, *ts: Tensor) -> bool:
    # The interpreter's bf16 arithmetic (tl.dot included) is silently wrong: use fp32 there.
    return backend == "interpreter" and any(t.dtype == torch.bfloat16 for t in ts)


# ----------------------------------------------------------------------------------- kernels


@dataclass(frozen=True)
class Launch:
    """One kernel launch exactly as a wrapper makes it: the kernel (a name in
    ``hamlib.triton_kernels``), the grid, the arguments and the compile-time parameters
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


def launch_plan(name: str, *args: Any, backend: str = "cuda", **kwargs: Any) -> Launch:
    """The launch that ``K.<name>(*args, **kwargs)`` makes on ``backend`` (``"cuda"`` or
    ``"interpreter"``), whatever this machine is. Inputs are checked as the wrapper checks them,
    except their device: CPU or ``"meta"`` tensors plan a CUDA launch. The output tensor is
    allocated on the inputs' device. Used to compile, on a CPU, what a GPU would run."""
    check.one_of("name", name, sorted(_PLANS))
    check.one_of("backend", backend, ("cuda", "interpreter"))
    checked = _ARGS[name](*args, check_device=False, **kwargs)
    return _PLANS[name](*checked, backend=backend)[0]


def _run(name: str, *checked: Any) -> Tensor:
    plan, out = _PLANS[name](*checked, backend=_BACKEND)
    plan()
    return out.to(checked[0].dtype)  # a bf16 result kept in fp32 (see _empty)


def _add_args(x: Tensor, y: Tensor, check_device: bool = True) -> tuple[Tensor, Tensor]:
    _check_tensor("x", x, check_device=check_device)
    _check_tensor("y", y, check_device=check_device)
    check.like("y", y, "x", x)
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
    return x, check.integer("max_fused", max_fused, minimum=1)


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
    check.like("b", b, "a", a, shape=False)
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"inner dimensions differ: a is {tuple(a.shape)}, b is {tuple(b.shape)} "
            "(need a.shape[1] == b.shape[0])"
        )
    check.one_of("precision", precision, PRECISIONS)
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
    check.like("weight", weight, "x", x, shape=False)
    check.like("bias", bias, "x", x, shape=False)
    n = x.shape[-1]
    if weight.shape[0] != n or bias.shape[0] != n:
        raise ValueError(
            f"weight and bias must have shape ({n},) to match x's last dimension, got "
            f"{tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    return x, weight, bias, check.positive("eps", eps)


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
    check.like("k", k, "q", q, shape=False)
    check.like("v", v, "q", q, shape=False)
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
    causal = check.boolean("causal", causal)
    if causal and s_q != k.shape[2]:
        raise ValueError(
            f"causal attention needs equal query and key lengths, got {s_q} and {k.shape[2]}"
        )
    scale = 1.0 / math.sqrt(d) if sm_scale is None else check.real("sm_scale", sm_scale)
    return q, k, v, causal, scale


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
    return _REFERENCES[check.one_of("name", name, sorted(_REFERENCES))]

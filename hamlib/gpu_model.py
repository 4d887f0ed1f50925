"""Small models of a GPU that Chapter 6 computes with, none of which needs one.

- :class:`GPUSpec`, with the published figures of an A100 and an H100 (``A100_SXM``, ``H100_SXM``),
  and :func:`occupancy`: how many warps fit on a streaming multiprocessor.
- The roofline (:func:`attainable_flops`) and the FLOP and byte counts of common operations
  (:func:`op_cost`); :func:`count_traffic` counts the bytes unfused torch code moves.
- Toy models of the SIMT machine: memory coalescing, shared-memory bank conflicts, warp
  divergence, latency hiding, and the grouped order in which the matmul kernel visits tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor
from torch.overrides import TorchFunctionMode

from hamlib import _checks as check

__all__ = [
    "A100_SXM",
    "H100_SXM",
    "GPUSpec",
    "LatencyHiding",
    "Occupancy",
    "Traffic",
    "attainable_flops",
    "bank_conflicts",
    "coalescing",
    "count_traffic",
    "latency_hiding",
    "occupancy",
    "op_cost",
    "softmax_unfused",
    "tile_order",
    "warp_efficiency",
]


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
    registers = check.integer("registers", registers, minimum=1, maximum=255)  # per thread, at most
    shared_bytes = check.integer("shared_bytes", shared_bytes, minimum=0)
    num_warps = check.integer("num_warps", num_warps, minimum=1, maximum=32)  # 1,024 threads
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
    peak_flops, bandwidth = (
        check.positive("peak_flops", peak_flops),
        check.positive("bandwidth", bandwidth),
    )
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
    check.one_of("dtype_bytes", dtype_bytes, (1, 2, 4, 8))
    need = {
        "add": ("n",),
        "softmax": ("m", "n"),
        "layer_norm": ("m", "n"),
        "matmul": ("m", "n", "k"),
        "attention": ("batch", "heads", "seq", "head_dim"),
        "attention_unfused": ("batch", "heads", "seq", "head_dim"),
    }
    check.one_of("op", op, sorted(need))
    if set(shape) != set(need[op]):
        raise ValueError(f"op {op!r} takes sizes {need[op]}, got {tuple(shape)}")
    s = {key: float(check.integer(key, val, minimum=1)) for key, val in shape.items()}
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
    check.function("fn", fn)
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


def _lane_values(
    name: str, values: Any, warp_size: int, *, whole_warps: bool = False
) -> np.ndarray:
    """One non-negative integer per lane: a warp's worth, or whole warps if ``whole_warps``
    (then the values are branch labels, and True/False label two branches)."""
    warp_size = check.integer("warp_size", warp_size, minimum=1)
    arr = np.asarray(values)
    if arr.dtype.kind not in ("iub" if whole_warps else "iu"):
        raise TypeError(f"{name} must hold integers (one per lane), got dtype {arr.dtype}")
    fits = arr.ndim == 1 and arr.size > 0 and arr.size % warp_size == 0
    if not (fits if whole_warps else arr.shape == (warp_size,)) or np.any(arr < 0):
        want = f"a multiple of warp_size={warp_size}" if whole_warps else str(warp_size)
        raise ValueError(
            f"{name} must be {want} non-negative integers (one per lane), got shape {arr.shape}"
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
    element_bytes = check.integer("element_bytes", element_bytes, minimum=1)
    sector_bytes = check.integer("sector_bytes", sector_bytes, minimum=1)
    idx = _lane_values("element_index", element_index, warp_size)
    first = idx * element_bytes // sector_bytes
    last = (idx * element_bytes + element_bytes - 1) // sector_bytes
    sectors = {int(s) for f, la in zip(first, last, strict=True) for s in range(f, la + 1)}
    useful = len(set(idx.tolist())) * element_bytes
    return len(sectors), useful / (len(sectors) * sector_bytes)


def bank_conflicts(word_index: np.ndarray | list[int], banks: int = 32, warp_size: int = 32) -> int:
    """How many passes one warp's shared-memory access takes: lane i reads 4-byte word
    ``word_index[i]``; word w lives in bank w mod ``banks``, each bank serves one word per pass,
    and lanes reading the same word share it (a broadcast). 1 means conflict-free."""
    banks = check.integer("banks", banks, minimum=1)
    idx = _lane_values("word_index", word_index, warp_size)
    words_per_bank: dict[int, set[int]] = {}
    for w in idx.tolist():
        words_per_bank.setdefault(w % banks, set()).add(w)
    return max(len(words) for words in words_per_bank.values())


def warp_efficiency(branch: np.ndarray | list[int], warp_size: int = 32) -> float:
    """Fraction of lane-cycles doing useful work when thread i takes branch ``branch[i]``.

    SIMT model: the threads of a warp share one instruction stream, so a warp whose lanes take
    b distinct branches runs all b one after another with the other lanes masked off (branches
    of equal cost assumed). Efficiency = threads / (warp_size x sum over warps of b)."""
    b = _lane_values("branch", branch, warp_size, whole_warps=True)
    passes = sum(len(np.unique(w)) for w in b.reshape(-1, warp_size))
    return b.size / (warp_size * passes)


class LatencyHiding(NamedTuple):
    """What :func:`latency_hiding` measured."""

    utilization: float  # busy issue-slot cycles / all cycles
    timeline: list[list[tuple[int, int]]]  # per warp, its (start, end) compute intervals
    cycles: int  # until the last warp's last load came back


def latency_hiding(
    n_warps: int, compute_cycles: int, latency_cycles: int, iters: int = 50
) -> LatencyHiding:
    """Toy scheduler: each warp repeats (compute for ``compute_cycles``, then wait
    ``latency_cycles`` for memory); one issue slot runs one ready warp at a time.

    Returns the issue-slot ``utilization`` (busy cycles / total) and the ``timeline``: for each
    warp, its (start, end) compute intervals. With W warps utilization approaches
    min(1, W c / (c + L)): enough warps in flight hide the memory latency."""
    n_warps = check.integer("n_warps", n_warps, minimum=1)
    compute_cycles = check.integer("compute_cycles", compute_cycles, minimum=1)
    latency_cycles = check.integer("latency_cycles", latency_cycles, minimum=0)
    iters = check.integer("iters", iters, minimum=1)
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
    return LatencyHiding(busy / total, timeline, total)


def tile_order(tiles_m: int, tiles_n: int, group_m: int) -> np.ndarray:
    """The (tile-row, tile-column) of C that each program id computes in ``matmul_kernel``:
    the kernel's grouped-ordering arithmetic, in Python. ``group_m = 1`` is row-major order.

    Returns an int array of shape (tiles_m * tiles_n, 2)."""
    tiles_m = check.integer("tiles_m", tiles_m, minimum=1)
    tiles_n = check.integer("tiles_n", tiles_n, minimum=1)
    group_m = check.integer("group_m", group_m, minimum=1)
    pid = np.arange(tiles_m * tiles_n)
    per_group = group_m * tiles_n
    first_m = (pid // per_group) * group_m
    rows_in_group = np.minimum(tiles_m - first_m, group_m)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    return np.stack([pid_m, pid_n], axis=1)

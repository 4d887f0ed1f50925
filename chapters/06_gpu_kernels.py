# %% [markdown]
# # 6. GPU kernels: the execution model, the roofline, and Triton kernels that run everywhere
#
# A GPU is a machine for hiding memory latency behind enormous parallelism, and almost every
# question about the speed of a deep-learning operation reduces to two numbers: how many bytes it
# must move and how many floating-point operations it does per byte. This chapter builds the
# model of the hardware those numbers come from, places the operations of a Transformer on a
# roofline, and then writes the kernels themselves in Triton: vector add, a fused softmax, a tiled
# matrix multiply, layer norm and flash attention. Every kernel is checked against PyTorch on odd
# shapes. On a laptop without a GPU the same kernels run through Triton's interpreter, so every
# cell here runs everywhere; and they are compiled, on the same CPU, for the two GPUs most
# readers meet (an A100 and an H100), so that what the GPU would run is read from the binary:
# registers, shared memory, vector loads and tensor-core instructions. Only the speed
# measurements need a GPU, and they say so.
#
# **You will be able to** reason about warps, blocks, SMs and the memory hierarchy; compute the
# arithmetic intensity of an operation and read off from a roofline whether memory or compute
# bounds it; write a Triton kernel with pointer arithmetic and masks, and launch it on a grid;
# explain why fusion and flash attention are about bytes, not FLOPs; read a compiled kernel's
# resources and instructions; and avoid the traps of debugging kernels on a CPU.
#
# **Run time:** under a minute on two CPU cores (the cell before the references prints the
# measured time).

# %%
import hamlib

hamlib.setup()

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from hamlib import cuda_c, kernel_bench, kernel_configs
from hamlib import gpu_model as G
from hamlib import kernels as K  # the wrappers; K.backend(): compiled, interpreted or torch
from hamlib.plotting import COLORS, CYCLE

TRITON = K.backend() != "torch"
if TRITON:
    import triton
    import triton.language as tl

    from hamlib import triton_kernels as tk  # the kernels themselves
DEV = "cuda" if K.backend() == "cuda" else "cpu"

# %% tags=["nbval-ignore-output"]
print(f"kernels run on: {K.backend()!r}")

# %% [markdown]
# The cell above depends on the machine: `'interpreter'` on a CPU with Triton installed,
# `'cuda'` on a GPU, `'torch'` where Triton cannot be installed. The book was executed with the
# interpreter. Section 6.5 explains how the choice is made.
#
# ## 6.1 The execution model
#
# **Threads, warps, blocks, grids.** A CUDA kernel is one function run by many threads. Threads
# are grouped into *blocks* (up to 1024 threads) and blocks into a *grid*; the programmer picks
# both sizes at launch. The hardware schedules each block onto one *streaming multiprocessor*
# (SM), where it stays until it finishes, and splits it into *warps* of 32 threads. A warp is
# the unit of execution: a scheduler issues one instruction for all 32 threads at once, each on
# its own data (NVIDIA calls this SIMT, single instruction, multiple threads). Since Volta
# (2017) each thread has its own program counter, so threads of a warp that took different
# branches may interleave and must synchronize explicitly (`__syncwarp`) to exchange data; but
# an instruction still issues for the threads of a warp that are at it together, and the others
# wait. Blocks of a grid run in any order and cannot wait for each other; threads of one block
# can cooperate through the SM's *shared memory* and barriers.
#
# **The memory hierarchy.** Each thread has private *registers*, the fastest storage; the threads
# of a block share the SM's *shared memory* (the same SRAM as its L1 cache); all SMs share an *L2
# cache*; and the tensors live in *HBM*, the high-bandwidth DRAM stacked beside the chip. Going
# out, each level is slower; in size the order is not monotone: an SM's register file (256 KiB) is
# larger than its shared memory (228 KiB), and the register files of all SMs together are not far
# from the L2, as the table shows. The published figures of one current data-centre GPU, which
# this chapter uses as its running example:

# %%
spec = G.H100_SXM
threads = spec.sms * spec.max_warps_per_sm * spec.warp_size
reg_mib = spec.sms * spec.registers_per_sm * 4 / 2**20
smem_mib = spec.sms * spec.shared_memory_per_sm_kib / 2**10
ridge = spec.fp16_tensor_flops / spec.hbm_bandwidth
table = [
    ("streaming multiprocessors", f"{spec.sms}"),
    ("threads per warp", f"{spec.warp_size}"),
    ("resident warps per SM (max)", f"{spec.max_warps_per_sm}"),
    ("resident threads, whole GPU (max)", f"{threads:,}"),
    (
        "registers per SM",
        f"{spec.registers_per_sm:,} x 32 bit = {spec.registers_per_sm // 256} KiB",
    ),
    ("registers, whole GPU", f"{reg_mib:.1f} MiB"),
    ("shared memory per SM (max)", f"{spec.shared_memory_per_sm_kib} KiB"),
    ("shared memory, whole GPU", f"{smem_mib:.1f} MiB"),
    ("L2 cache", f"{spec.l2_mib} MiB"),
    ("HBM3", f"{spec.hbm_gib} GiB at {spec.hbm_bandwidth / 1e12:.2f} TB/s"),
    ("FP16/BF16 tensor cores (dense)", f"{spec.fp16_tensor_flops / 1e12:.0f} TFLOP/s"),
    ("FP32 (no tensor cores)", f"{spec.fp32_flops / 1e12:.0f} TFLOP/s"),
    (
        "FP32 lanes ('CUDA cores')",
        f"{spec.sms} x {spec.fp32_lanes_per_sm} = {spec.sms * spec.fp32_lanes_per_sm:,}",
    ),
    ("FLOPs per byte of HBM traffic at peak", f"{ridge:.0f}"),
]
print(spec.name)
for name, value in table:
    print(f"  {name:38s} {value}")
print(f"source: {spec.source}")

# %% [markdown]
# Two numbers deserve a second look. The register files of all SMs together are larger than
# all the shared memory, and not far from the L2 cache: a GPU keeps most of its working data in
# registers. And the last line: to keep the tensor cores busy, every byte fetched from HBM must
# take part in hundreds of floating-point operations. Section 6.2 turns that ratio into the
# roofline.
#
# **Divergence.** Because a warp has one instruction stream, a branch on which its threads
# disagree is executed one side after the other, with the threads of the other side masked off.
# The cost is per warp: a condition that changes only between warps costs nothing. Under the
# model in `G.warp_efficiency` (equal-cost branches), the fraction of lane-cycles doing useful
# work for a block of 1,024 threads:

# %%
hamlib.show_source(G.warp_efficiency)

# %%
lane = np.arange(1024)
rng = np.random.default_rng(0)
branches = {
    "if (i % 2)": lane % 2,
    "switch (i % 4)": lane % 4,
    "if (i < 512)": lane < 512,
    "if (i < 500)": lane < 500,
    "if ((i / 32) % 2)": (lane // 32) % 2,
    "if (data[i] > 0), random data": rng.integers(0, 2, size=1024),
}
eff = {name: G.warp_efficiency(b) for name, b in branches.items()}
for name, e in eff.items():
    print(f"{name:32s} efficiency {e:.3f}")
hamlib.check(
    "alternating lanes halve the throughput; a branch that is uniform within each warp costs "
    "nothing; a threshold at 500 splits one warp of 32",
    eff["if (i % 2)"] == 0.5
    and eff["if ((i / 32) % 2)"] == 1.0
    and eff["if (i < 500)"] == 1024 / (32 * 33),
)

# %% [markdown]
# **Coalescing.** The same per-warp view decides how memory is read. A warp's load is one
# instruction for 32 addresses, and the memory system serves it in 32-byte *sectors*: if the
# lanes read consecutive elements, a few sectors carry exactly what was asked for; if each lane
# reads from a different place, every lane costs a sector of its own. `G.coalescing` counts the
# sectors of one warp's fp32 load (lane $i$ reads the element at the given index):

# %%
lane = np.arange(32)
patterns = {
    "x[i] (consecutive)": lane,
    "x[i + 1] (one element off)": lane + 1,
    "x[2 i] (stride 2)": 2 * lane,
    "A[i, j] down a column of a 4096-wide row-major matrix": 4096 * lane,
}
for name, idx in patterns.items():
    sectors, eff = G.coalescing(idx)
    print(f"{name:55s} {sectors:2d} sectors, {eff:.1%} of the bytes used")

# %% [markdown]
# Reading down a column uses one byte in eight: the reason matmul kernels load tiles with
# consecutive threads along the contiguous dimension, and transposes go through shared memory.
#
# **Bank conflicts.** Shared memory is split into 32 *banks*, each serving one 4-byte word per
# clock; word $w$ lives in bank $w \bmod 32$. A warp whose lanes read 32 words in 32 different
# banks is served in one pass; lanes that need different words of one bank wait for each other
# (lanes reading the same word share it). For a 32 x 32 fp32 tile stored row by row,
# `G.bank_conflicts` counts the passes:

# %%
conflicts = {
    "a row of the tile": G.bank_conflicts(lane),
    "a column of the tile": G.bank_conflicts(32 * lane),
    "a column, rows padded to 33 words": G.bank_conflicts(33 * lane),
}
for name, passes in conflicts.items():
    print(f"{name:36s} {passes:2d} pass(es)")

# %% [markdown]
# A column of a 32-word-wide tile sits entirely in one bank: 32 passes. One padding word per row
# shifts each row by one bank, and the column is conflict-free: the classic fix in a CUDA
# transpose. Triton chooses the shared-memory layouts of its tiles itself (with *swizzling*, which
# permutes instead of padding); in CUDA C this is the programmer's job.
#
# **Latency hiding and occupancy.** A load from HBM takes hundreds of cycles to return
# (microbenchmarks such as Jia et al., 2018, measure it); an arithmetic instruction issues every
# cycle or so. A GPU does not wait: each SM keeps many warps resident at once, and its schedulers
# issue from whichever warp has its operands ready. If each warp computes for $c$ cycles and then
# waits $L$ cycles for memory, $W$ warps keep an issue slot busy a fraction
# $\min(1, Wc/(c+L))$ of the time: this is Little's law, with $(c+L)/c$ warps needed to cover the
# latency. The toy scheduler in `G.latency_hiding` simulates one issue slot; with $c = 4$ and
# $L = 28$ it needs 8 warps:

# %%
c, L = 4, 28
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
for ax, n_warps in zip(axes[:2], [2, 8], strict=True):
    sim = G.latency_hiding(n_warps, c, L, iters=12)
    for w, spans in enumerate(sim.timeline):
        for start, end in spans:
            if start < 96:
                ax.broken_barh([(start, end - start)], (w - 0.3, 0.6), color=CYCLE[0])
                ax.broken_barh([(end, min(L, 96 - end))], (w - 0.06, 0.12), color=COLORS["muted"])
    ax.set(xlim=(0, 96), ylim=(-0.7, max(n_warps, 4) - 0.3), xlabel="cycle", ylabel="warp")
    ax.set_yticks(range(n_warps))
    ax.set_title(f"{n_warps} warps, 12 iterations each: busy {sim.utilization:.0%}")
warps = np.arange(1, 17)
measured = [G.latency_hiding(int(w), c, L, iters=200).utilization for w in warps]
axes[2].plot(
    warps, np.minimum(1, warps * c / (c + L)), "--", color=COLORS["theory"], label="Little"
)
axes[2].plot(warps, measured, "o", color=COLORS["measured"], label="simulated")
axes[2].set(xlabel="resident warps", ylabel="issue-slot utilization", title="200 iterations each")
axes[2].legend()
fig.suptitle(f"Latency hiding: compute {c} cycles (blue), then wait {L} for memory (grey)")
plt.show()
hamlib.check(
    "simulated utilization matches min(1, W c / (c + L)) within 2% for 1..16 warps",
    np.allclose(measured, np.minimum(1, warps * c / (c + L)), rtol=0.02),
)

# %% [markdown]
# How many warps an SM can hold is its *occupancy*, and it is limited by whichever resource runs
# out first: the warp slots, the registers or the shared memory. Registers are the usual limit.
# A kernel whose threads each need $r$ registers fits at most
# $\lfloor 65536 / (32 r) \rfloor$ warps on an SM (ignoring allocation granularity):

# %%
for r in [32, 64, 128, 255]:
    fit = min(spec.max_warps_per_sm, spec.registers_per_sm // (spec.warp_size * r))
    print(
        f"{r:3d} registers per thread -> {fit:2d} resident warps per SM ({fit / 64:.0%} occupancy)"
    )

# %% [markdown]
# Section 6.6 reads the registers and shared memory of the book's kernels from their compiled
# binaries and computes their occupancy with the rest of the calculator's arithmetic
# (`G.occupancy`: registers are allocated in units of 256 per warp, shared memory per block). A
# kernel that keeps a large tile in registers (a matmul, flash attention) gives up warps, and
# hides latency differently: each warp issues many independent loads before it needs the first
# result (Volkov, 2010); and Ampere and Hopper copy the next tiles from HBM to shared memory
# asynchronously while the tensor cores work on the current one (`cp.async`, and on Hopper a copy
# engine, the Tensor Memory Accelerator): software pipelining, `num_stages` in Triton. High
# occupancy is a means, not the goal.
#
# ## 6.2 The roofline
#
# An operation that does $F$ FLOPs and moves $Q$ bytes between HBM and the chip has *arithmetic
# intensity* $I = F/Q$. On a device with peak compute $P$ and bandwidth $B$ it cannot run faster
# than $\min(P, I\,B)$ FLOP/s (Williams, Waterman & Patterson, 2009): below the *ridge point*
# $I = P/B$ the operation is memory-bound, above it compute-bound. `G.op_cost` counts both for a
# single pass that reads each input once and writes each output once; its docstring states the
# conventions.

# %%
ops = [
    ("add", "vector add, n = 2^27", {"n": 2**27}),
    ("layer_norm", "layer norm 4096 x 8192", {"m": 4096, "n": 8192}),
    ("softmax", "softmax 4096 x 16384", {"m": 4096, "n": 16384}),
    ("matmul", "matmul 16 x 8192 x 8192", {"m": 16, "n": 8192, "k": 8192}),
    ("matmul", "matmul 8192^3", {"m": 8192, "n": 8192, "k": 8192}),
    ("attention_unfused", "attention, scores in HBM", {}),
    ("attention", "flash attention", {}),
]
attn = {"batch": 1, "heads": 32, "seq": 4096, "head_dim": 128}
print(
    f"{'fp16, H100 SXM':26s}{'GFLOP':>9s}{'MB moved':>10s}{'FLOP/B':>9s}{'bound':>9s}"
    f"{'TFLOP/s':>9s}{'us':>9s}"
)
placed = {}
for op, label, shape in ops:
    flops, nbytes = G.op_cost(op, **(shape or attn))
    intensity = flops / nbytes
    roof = float(G.attainable_flops(intensity, spec.fp16_tensor_flops, spec.hbm_bandwidth))
    bound = "memory" if intensity < ridge else "compute"
    placed[label] = (intensity, roof)
    print(
        f"{label:26s}{flops / 1e9:9.2f}{nbytes / 1e6:10.1f}{intensity:9.2f}{bound:>9s}"
        f"{roof / 1e12:9.1f}{flops / roof * 1e6:9.1f}"
    )
print(f"ridge point: {ridge:.0f} FLOP/byte; attention: batch 1, 32 heads, seq 4096, head_dim 128")

# %% [markdown]
# The last column is the shortest time the roofline allows. The elementwise and row-wise
# operations sit more than two orders of magnitude left of the ridge: their FLOPs are free,
# their time is their bytes. A square matmul sits far right of it. The same matmul with 16 rows,
# the shape of one decoding step of a language model with 16 sequences in the batch, is
# memory-bound: all of $B$ is read to do 16 multiply-adds per element. Attention moves from one
# side to the other depending on whether the $s \times s$ scores go through HBM.
#
# How many sequences must a decoding step batch before the weights stop being the bottleneck?
# For $b$ rows, an $8192 \times 8192$ fp16 weight gives $2b \cdot 8192^2$ FLOPs on about
# $2 \cdot 8192^2$ bytes: an intensity of about $b$, so the batch must reach the ridge:

# %%
crossing_b = next(
    b for b in range(1, 4096) if np.divide(*G.op_cost("matmul", m=b, n=8192, k=8192)) >= ridge
)
print(f"matmul b x 8192 x 8192 (fp16) is compute-bound from b = {crossing_b} (ridge {ridge:.0f})")

# %% [markdown]
# About 300 sequences decoded together, for every weight matrix, before an H100 stops waiting on
# HBM: why serving systems batch requests, and why a single user's decoding runs at a few percent
# of the tensor cores' peak.
#
# **The roofline of one program.** The table counts each operation's *minimum* traffic: every
# input read once. A kernel reaches that only through reuse the table does not show. One program
# of a tiled matmul loads a `BLOCK_M x BLOCK_K` tile of $A$ and a `BLOCK_K x BLOCK_N` tile of
# $B$ per step and does $2 \cdot$ `BLOCK_M BLOCK_N BLOCK_K` FLOPs with them: in fp16 an
# intensity of `BLOCK_M BLOCK_N / (BLOCK_M + BLOCK_N)` FLOP/B, whatever the matrix size. One
# program of flash attention holds `BLOCK_M` queries and streams all $s$ keys and values of its
# head past them: $4\,$`BLOCK_M`$\,s d$ FLOPs on $4 s d$ bytes, an intensity of `BLOCK_M`.
# (Summed over the $s/$`BLOCK_M` programs of a head, that traffic is $\Theta(s^2 d/$`BLOCK_M`$)$;
# since the query block must fit on chip, `BLOCK_M` $\propto M/d$ for an SRAM of $M$ bytes, which
# is Dao et al.'s $\Theta(s^2 d^2 / M)$.) With the default tiles of `K.matmul` and
# `K.flash_attention` on a GPU (the first of the configurations their autotuner tries there):

# %%
mm_cfg = kernel_configs.matmul_config(8192, 8192, 8192, torch.float16)
fa_cfg = kernel_configs.attention_config(128, torch.float16)
tile_intensity = {
    "matmul tile": mm_cfg["BLOCK_M"] * mm_cfg["BLOCK_N"] / (mm_cfg["BLOCK_M"] + mm_cfg["BLOCK_N"]),
    "flash attention program": float(fa_cfg["BLOCK_M"]),
}
print(
    f"matmul tiles {mm_cfg['BLOCK_M']} x {mm_cfg['BLOCK_N']} x {mm_cfg['BLOCK_K']}, "
    f"flash attention BLOCK_M = {fa_cfg['BLOCK_M']} (fp16, head_dim 128)"
)
for name, i in tile_intensity.items():
    print(f"{name:24s} {i:5.0f} FLOP/B of HBM traffic (ridge {ridge:.0f})")

# %% [markdown]
# These are arithmetic on the tile sizes, not measurements, and they say: neither kernel is
# compute-bound by its own loads from HBM. If every program fetched its tiles from HBM the matmul
# would run at a fifth of the tensor cores' peak. (The same question one level down, whether
# shared memory can feed the tensor cores, depends on what each warp reads: section 6.6 answers
# it from the compiled layouts.) What closes the gap is *L2*:
# programs that run at the same time load the same tiles, and only the first load of each goes
# to HBM. Section 6.3 measures how much the order of programs matters for that.
#
# **Not every FLOP is equal.** `G.op_cost` counts an exponential as one FLOP. For the memory-bound
# operations that is harmless. For flash attention on an H100 it is not: `exp2` runs on the
# special-function units, 16 results per clock per SM, while the tensor cores do 4,096 FLOPs per
# clock per SM (Shah et al., 2024, make this point for FlashAttention-3). Per score, the two
# matmuls cost $4d$ tensor-core FLOPs and the softmax one exponential:

# %%
for d in (64, 128):
    t_mma = 4 * d / spec.fp16_tensor_flops
    t_exp = 1 / spec.special_function_rate
    print(
        f"head_dim {d:3d}: per score {t_mma * 1e12:.2f} ps of matmul and {t_exp * 1e12:.2f} ps of "
        f"exp: the exponentials take {t_exp / t_mma:.0%} of the matmul time"
    )
tc_per_clock = spec.fp16_tensor_flops / (spec.sms * spec.clock_hz)
print(f"tensor cores: {tc_per_clock:,.0f} FLOP per clock per SM at {spec.clock_hz / 1e9:.2f} GHz")
print(
    f"special functions: {spec.sms} SMs x {spec.special_functions_per_clock_per_sm} / clock x "
    f"{spec.clock_hz / 1e9:.2f} GHz = {spec.special_function_rate / 1e12:.2f} T/s, against "
    f"{spec.fp16_tensor_flops / 1e12:.0f} TFLOP/s of tensor cores"
)

# %% [markdown]
# At head_dim 128 the exponentials alone need half as long as the matmuls; unless they overlap
# (FlashAttention-3 pipelines them against the next block's matmul), attention's compute bound is
# 1.5 times what the roofline table says.

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.6))
x = np.logspace(-1.5, 4, 200)
for peak, name, style in [
    (spec.fp16_tensor_flops, "FP16 tensor cores", "-"),
    (spec.fp32_flops, "FP32 (no tensor cores)", ":"),
]:
    ax.loglog(
        x,
        G.attainable_flops(x, peak, spec.hbm_bandwidth) / 1e12,
        style,
        color=COLORS["theory"],
        label=f"roof: {name}",
    )
offsets = {
    "matmul 8192^3": (-40, 9),
    "flash attention": (8, -14),
    "attention, scores in HBM": (-128, -3),
}
for label, (intensity, roof) in placed.items():  # counted, not measured: drawn in black
    ax.loglog(intensity, roof / 1e12, "o", color=COLORS["theory"], markersize=6)
    ax.annotate(
        label,
        (intensity, roof / 1e12),
        xytext=offsets.get(label, (8, -12)),
        textcoords="offset points",
        fontsize=8,
    )
for name, i in tile_intensity.items():  # one program's own loads, without reuse between programs
    ax.loglog(
        i,
        float(G.attainable_flops(i, spec.fp16_tensor_flops, spec.hbm_bandwidth)) / 1e12,
        "o",
        mfc="none",
        color=COLORS["highlight"],
        markersize=7,
    )
    ax.annotate(
        f"one {name}",
        (i, i * spec.hbm_bandwidth / 1e12),
        xytext={"matmul tile": (-100, 16), "flash attention program": (14, -18)}[name],
        textcoords="offset points",
        fontsize=8,
        color=COLORS["highlight"],
        arrowprops={"arrowstyle": "-", "color": COLORS["highlight"], "lw": 0.6},
    )
ax.axvline(ridge, color=COLORS["highlight"], lw=1, ls="--")
ax.text(ridge * 1.15, 0.15, f"ridge point\n{ridge:.0f} FLOP/B", color=COLORS["highlight"])
ax.set(
    xlabel="arithmetic intensity (FLOP / byte of HBM traffic)",
    ylabel="attainable TFLOP/s",
    ylim=(0.05, 3000),
    title=f"Roofline of the {spec.name} (fp16): minimum traffic (black), one program (open)",
)
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# **The traffic argument for fusion.** Written as five PyTorch operations, softmax makes five
# passes over memory, each a separate kernel that reads its inputs from HBM and writes its
# result back:

# %%
hamlib.show_source(G.softmax_unfused)

# %% [markdown]
# `G.count_traffic` runs a function under a `TorchFunctionMode` and adds up the bytes that every
# torch operation reads and writes, as if nothing stayed on chip between operations. For a
# tensor larger than L2 that is what happens: the $4096 \times 4096$ fp32 matrix below is 67 MB,
# more than the 50 MiB of L2, so each kernel finds the previous one's output in HBM. (For tensors
# that fit in L2 the count is an upper bound on HBM traffic.)

# %%
x = torch.randn(4096, 4096)
unfused = G.count_traffic(G.softmax_unfused, x)
fused = G.count_traffic(torch.softmax, x, -1)
print(f"{'operation':10s}{'MB read':>10s}{'MB written':>12s}")
for name, read, wrote in unfused.ops:
    print(f"{name:10s}{read / 1e6:10.3f}{wrote / 1e6:12.3f}")
ratio = unfused.total / fused.total
print(f"unfused total {unfused.total / 1e6:.2f} MB, fused {fused.total / 1e6:.2f} MB: {ratio:.3f}x")

# %% [markdown]
# The ratio is arithmetic, not a measurement: five operations make eight full passes of the
# matrix (three of them read one and write one, two read one) and four passes over a vector of
# $m$ row statistics, against the fused kernel's two passes: $4 + 2/n$. What the count adds is
# that it reads the code: change `softmax_unfused` and it counts what torch actually calls. A fused
# kernel reads each row once, keeps it in registers through all five steps, and writes the result
# once: a quarter of the traffic, and for a memory-bound operation at best a quarter of the time
# (`torch.softmax` is such a fused kernel already; section 6.7 times ours against it). The same
# count for attention written the textbook way, scores materialized:


# %%
def attention_unfused(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v


b, h, s, d = 1, 4, 512, 64
q, k, v = (torch.randn(b, h, s, d) for _ in range(3))
naive = G.count_traffic(attention_unfused, q, k, v)
minimum = 4 * b * h * s * d * 4  # read Q, K, V and write O once (fp32)
print(f"operations: {[name for name, _, _ in naive.ops]}")
print(
    f"unfused {naive.total / 1e6:.1f} MB, flash attention's minimum {minimum / 1e6:.1f} MB: "
    f"{naive.total / minimum:.1f}x"
)
print(f"s x s passes: {(naive.total / (b * h * 4) - 4 * s * d) / (s * s):.0f}")


# %% [markdown]
# Six passes of the $s \times s$ matrix: the scores are written by the first matmul, read and
# written by the scaling, read and written by the softmax, and read by the second matmul. The
# scaling is a pass of its own only because the code divides the scores; multiplying $Q$ by
# $1/\sqrt d$ first costs a pass over $s \times d$ instead. Written that way the count is the one
# `G.op_cost("attention_unfused")` assumes (its docstring: four passes of the scores):


# %%
def attention_unfused_scaled_q(q, k, v):
    scores = (q / math.sqrt(q.shape[-1])) @ k.transpose(-2, -1)
    return torch.softmax(scores, dim=-1) @ v


folded = G.count_traffic(attention_unfused_scaled_q, q, k, v)
_, op_bytes = G.op_cost("attention_unfused", dtype_bytes=4, batch=b, heads=h, seq=s, head_dim=d)
extra = folded.total - op_bytes
print(f"scale folded into q: {folded.total / 1e6:.1f} MB; op_cost: {op_bytes / 1e6:.1f} MB")
hamlib.check(
    "with the scale folded into q, the traffic count exceeds op_cost's four passes of the scores "
    "by exactly the pass that scales q (read and write s x d per head)",
    extra == b * h * 2 * s * d * 4,
)

# %% [markdown]
# ## 6.3 Kernels in Triton
#
# Triton (Tillet, Kung & Cox, 2019) moves the programmer one level up from CUDA: a kernel is
# written for one *program*, an instance that owns a block of the output, and operates on whole
# blocks of values (`tl.arange(0, BLOCK)` is a vector of offsets). The compiler decides how to
# spread a block over the threads of a warp, and when to stage data through shared memory. What
# stays with the programmer is the part that decides performance: which program computes which
# block, how addresses are computed from strides, and which loads and stores are masked.
#
# ### Vector add
#
# The smallest kernel shows every ingredient. Program `pid` handles elements
# `pid * BLOCK ... pid * BLOCK + BLOCK - 1`; the last program's block hangs over the end of the
# tensor, and the mask stops its loads and stores there.

# %%
hamlib.show_source(tk.add_kernel) if TRITON else print("triton is not available here")

# %% [markdown]
# The wrapper checks its inputs (section 6.5 says why that matters), allocates the output and
# launches a one-dimensional grid of $\lceil n / 1024 \rceil$ programs:

# %%
hamlib.show_source(K.add)

# %% [markdown]
# Each kernel is checked against its torch reference (`K.reference`, computing in float32) in
# the three floating-point types, on shapes chosen to be awkward: lengths that are not multiples
# of the block, single rows and columns, primes. What "equal" should mean follows from how both
# compute: each accumulates in float32 and rounds once to the output dtype, so an element may
# differ by one unit in the last place of that dtype (`ULP`, relative to the element), plus what
# the order of the float32 sums changes before that rounding (for fp32 outputs; at most
# $2^{-16}$ of the largest value for the sums here) or, for flash attention in fp16 and bf16, the
# rounding of the probabilities $P$ to the input dtype before $PV$, as flash attention does (one
# ULP of the largest value). The table of errors depends on the backend (the interpreter and a
# GPU sum in different orders), so the next cell's output is not part of the regression test; the
# checks after it are.

# %%
ULP = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}
FLOOR = {torch.float32: 2**-16, torch.float16: 2**-10, torch.bfloat16: 2**-7}
DTYPES = list(ULP)


def within(out, expected, dtype):
    """Largest |out - expected| / (ULP |expected| + FLOOR max|expected|): at most 1 passes."""
    out, expected = out.float(), expected.float()
    tol = ULP[dtype] * expected.abs() + FLOOR[dtype] * expected.abs().max().clamp(min=1e-30)
    return ((out - expected).abs() / tol).max().item()


def rand(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(dtype=dtype, device=DEV)


results = {}


def verify(name, cases, scale=lambda *args: 1.0):
    """Run kernel `name` on every case (a tuple of tensors) and compare with the reference."""
    kernel, ref = getattr(K, name), K.reference(name)
    for dtype in DTYPES:
        worst, exact, ok = 0.0, True, True
        for make in cases:
            args = make(dtype)
            out, expected = kernel(*args), ref(*args)
            ratio = within(out, expected, dtype)
            worst, ok = max(worst, ratio), ok and out.dtype == expected.dtype and ratio <= 1
            exact = exact and torch.equal(out, expected)
        results[name, dtype] = (len(cases), worst, ok, exact)


verify(
    "add", [lambda t, n=n: (rand(n, dtype=t), rand(n, dtype=t, seed=1)) for n in [1, 1023, 4099]]
)

# %% [markdown]
# ### Softmax, fused
#
# One program per row. The row is loaded once into registers, padded with $-\infty$ (which
# changes neither the maximum nor, since $e^{-\infty} = 0$, the sum), and the maximum is
# subtracted before exponentiating so that nothing overflows: $\mathrm{softmax}(x) =
# \mathrm{softmax}(x - \max x)$.

# %%
hamlib.show_source(tk.softmax_kernel) if TRITON else None

# %% [markdown]
# A row of $n$ elements must fit in one block's registers: spread over 16 warps (512 threads), a
# row of $n$ float32 values needs $n/512$ registers per thread for the values alone, and a thread
# has at most 255. Section 6.6 compiles the kernel and finds where it starts to spill; below that,
# at `K.SOFTMAX_MAX_FUSED` = 32,768 elements, the fused kernel stops. For longer rows
# `K.softmax` switches to the *online* softmax (Milakov & Gimelshein,
# 2018): walk the row in chunks, keeping a running maximum $m$ and a running sum $\ell$ of
# $e^{x_j - m}$. When a chunk raises the maximum to $m'$, everything summed so far is rescaled by
# $e^{m - m'}$:
#
# $$
# \ell' = \ell\, e^{m - m'} + \sum_{j \in \text{chunk}} e^{x_j - m'}.
# $$
#
# A second pass writes $e^{x_j - m}/\ell$. The same recurrence, carried over blocks of keys, is
# the heart of flash attention below.

# %%
hamlib.show_source(tk.softmax_online_kernel) if TRITON else None

# %%
softmax_shapes = [(1, 1), (7, 1000), (3, 5003), (2, K.SOFTMAX_MAX_FUSED + 3001)]
verify("softmax", [lambda t, s=s: (rand(*s, dtype=t) * 5,) for s in softmax_shapes])

# %% [markdown]
# The last shape is longer than `K.SOFTMAX_MAX_FUSED` and goes through the online kernel.
#
# ### Matrix multiply, tiled, in grouped order
#
# Program `pid` computes one `BLOCK_M x BLOCK_N` tile of $C = AB$: it walks along $K$ in steps of
# `BLOCK_K`, loads a tile of $A$ and a tile of $B$, and accumulates their product with `tl.dot`
# into a float32 accumulator. On a GPU, `tl.dot` on fp16 or bf16 tiles becomes tensor-core
# instructions; on fp32 tiles it does too if it may reduce them to TF32 (`precision="tf32"`),
# and runs on the ordinary FMA units if it must compute in full fp32 (`"ieee"`, the default here,
# as in torch); section 6.6 reads which from the binary. Out-of-range rows, columns and the ragged
# end of $K$ load as zeros, which add nothing to the dot products.

# %%
hamlib.show_source(tk.matmul_kernel) if TRITON else None

# %% [markdown]
# The kernel's first line asks `grouped_tile` which tile program `pid` computes. In row-major
# order consecutive programs sweep a whole row of tiles of $C$: they share one strip of $A$ but
# each needs a different strip of $B$. In *grouped* order they walk down `GROUP_M` tile-rows
# before moving right, so the programs running at the same time touch fewer distinct strips, and
# more of what they load is still in L2 when a neighbour asks for it:

# %%
hamlib.show_source(tk.grouped_tile) if TRITON else None

# %% [markdown]
# `G.tile_order` is the same arithmetic in numpy (a test runs `grouped_tile` in a one-program
# kernel and compares the two):

# %%
fig, axes = plt.subplots(1, 2, figsize=(8.5, 4))
for ax, group in zip(axes, [1, 4], strict=True):
    order = G.tile_order(8, 8, group)
    grid = np.empty((8, 8), dtype=int)
    grid[order[:, 0], order[:, 1]] = np.arange(64)
    ax.imshow(grid < 16, cmap="Blues", vmin=0, vmax=1.6)
    for (i, j), pid in np.ndenumerate(grid):
        ax.text(j, i, pid, ha="center", va="center", fontsize=8)
    ax.set(xlabel="tile column of C", ylabel="tile row of C", xticks=[], yticks=[])
    name = "row-major" if group == 1 else f"grouped, GROUP_M = {group}"
    rows_used, cols_used = len(set(order[:16, 0])), len(set(order[:16, 1]))
    ax.set_title(f"{name}\nfirst 16 programs need {rows_used} + {cols_used} strips")
fig.suptitle("Which tile each program computes (shaded: the first 16 programs)")
plt.show()

# %% [markdown]
# How much this saves depends on how many programs run at once, which depends on the registers
# and shared memory a compiled tile needs: section 6.6 reads both from the binary and then
# counts the HBM traffic of an $8192^3$ matmul in either order.

# %%
mm_shapes = [(1, 1, 1), (33, 65, 17), (100, 37, 129), (64, 64, 64)]
verify(
    "matmul",
    [
        lambda t, s=s: (rand(s[0], s[2], dtype=t), rand(s[2], s[1], dtype=t, seed=1))
        for s in mm_shapes
    ],
)

# %% [markdown]
# ### Layer norm
#
# $y = (x - \mu)/\sqrt{\sigma^2 + \epsilon} \cdot w + b$ over the last dimension, one program per
# row, in three passes over the row: the mean, the variance about the mean (more accurate than
# $\mathbb{E}[x^2] - \mu^2$, which cancels catastrophically when $|\mu| \gg \sigma$), and the
# normalized output. Rows that fit in one block stay in cache between passes.

# %%
hamlib.show_source(tk.layer_norm_kernel) if TRITON else None

# %%
ln_shapes = [(1, 1), (5, 300), (2, 3, 77), (3, 5000)]
verify(
    "layer_norm",
    [
        lambda t, s=s: (
            rand(*s, dtype=t) * 3 + 2,
            rand(s[-1], dtype=t, seed=1),
            rand(s[-1], dtype=t, seed=2),
        )
        for s in ln_shapes
    ],
)

# %% [markdown]
# ### Flash attention
#
# Attention $O = \mathrm{softmax}(QK^\top/\sqrt d)\,V$ for one head is a row-wise softmax between
# two matmuls. Flash attention (Dao et al., 2022) never forms the $s \times s$ score matrix: one
# program owns a block of queries, keeps their rows of $O$ in registers, and streams blocks of
# keys and values past them. For each block it computes the scores, updates each row's running
# maximum $m$ and sum $\ell$ exactly as the online softmax does, and rescales the accumulated
# output by the same factor before adding the new block's contribution:
#
# $$
# O' = O\,e^{m - m'} + e^{S_{\text{block}} - m'}\,V_{\text{block}}, \qquad
#   \ell' = \ell\, e^{m - m'} + \textstyle\sum e^{S_{\text{block}} - m'}.
# $$
#
# At the end each row is divided by $\ell$. With a causal mask, blocks of keys entirely in the
# query block's future are skipped, half the work.

# %%
hamlib.show_source(tk.flash_attention_kernel) if TRITON else None

# %%
attn_cases = [  # (batch, heads, seq_q, seq_k, head_dim, causal)
    (1, 1, 1, 1, 16, True),
    (2, 3, 77, 77, 64, True),
    (1, 2, 100, 100, 128, False),
    (1, 2, 33, 70, 40, False),
    (2, 1, 65, 65, 24, True),
]


def attn_args(t, case):
    bb, hh, sq, sk, dd, causal = case
    return (
        rand(bb, hh, sq, dd, dtype=t),
        rand(bb, hh, sk, dd, dtype=t, seed=1),
        rand(bb, hh, sk, dd, dtype=t, seed=2),
        causal,
    )


verify("flash_attention", [lambda t, c=c: attn_args(t, c) for c in attn_cases])

# %% tags=["nbval-ignore-output"]
print(f"{'kernel':16s}{'dtype':>16s}{'cases':>7s}{'error / tolerance':>19s}  bit-equal")
for (name, dtype), (n_cases, worst, _, exact) in results.items():
    print(f"{name:16s}{str(dtype):>16s}{n_cases:7d}{worst:19.3f}  {exact}")

# %%
for name in ["add", "softmax", "matmul", "layer_norm", "flash_attention"]:
    hamlib.check(
        f"{name} equals its torch reference in fp32, fp16 and bf16 on every odd shape",
        all(results[name, t][2] for t in DTYPES),
    )
hamlib.check(
    "vector add is bit-equal to torch in fp32 and fp16: one rounding of the exact sum",
    results["add", torch.float32][3] and results["add", torch.float16][3],
)

# %% [markdown]
# ## 6.4 One kernel in CUDA C
#
# The same vector add in CUDA C, as `cuda_c.cuda_add` compiles it with `nvcc` through
# `torch.utils.cpp_extension.load_inline`:

# %%
print(cuda_c.CUDA_ADD_SOURCE)

# %% [markdown]
# Set against the Triton kernel, the two views of the same computation:
#
# | | CUDA C | Triton |
# |---|---|---|
# | written for | one thread | one program (a block of data) |
# | index | `blockIdx.x * blockDim.x + threadIdx.x` | `pid * BLOCK + tl.arange(0, BLOCK)` |
# | bounds | `if (i < n)` per thread | `mask=offsets < n` per block |
# | launch | `<<<blocks, threads>>>` | `kernel[(programs,)](...)` |
# | threads per block | chosen by the programmer | `num_warps * 32`, mapped by the compiler |
# | shared memory, barriers | explicit | implicit |
#
# For a vector add the difference is cosmetic. For a matmul it is not: in CUDA C the programmer
# stages tiles through shared memory, synchronizes threads, lays out data to avoid bank
# conflicts and issues tensor-core instructions; in Triton those are the compiler's job.
# The cell below compiles and runs the CUDA version where a GPU and `nvcc` exist:

# %% tags=["nbval-ignore-output"]
try:
    xa, ya = torch.randn(10_001, device="cuda"), torch.randn(10_001, device="cuda")
    print("CUDA C add equals torch:", torch.equal(cuda_c.cuda_add(xa, ya), xa + ya))
except (RuntimeError, AssertionError) as exc:  # no GPU, no nvcc, or no CUDA build of torch
    print(f"not compiled here: {exc}")

# %% [markdown]
# ## 6.5 Running everywhere, and the traps of running on a CPU
#
# `hamlib.kernels` takes its backend from one switch, the environment variable
# `HAMLIB_KERNELS_BACKEND` (`auto`, `cuda`, `interpreter` or `torch`), read once by
# `hamlib.backend`:

# %%
hamlib.show_source(hamlib.backend.choose_backend)

# %% [markdown]
# Triton decides whether to compile or interpret a kernel when `@triton.jit` runs, from its own
# switch `TRITON_INTERPRET`, and it decorates its library functions (`tl.sum`, `tl.max`) once,
# when `triton` is first imported. So the interpreter cannot be switched on for one kernel:
# `hamlib.backend` sets `TRITON_INTERPRET=1` before triton is imported, and every kernel defined
# in the process from then on, hamlib's and the one we write below, runs in the interpreter.

# %% [markdown]
# The interpreter executes each program of the grid one after another, with numpy arrays standing
# in for blocks. The results above show that it computes what torch computes on the CPU; that a
# GPU computes the same is what `make gpu-check` tests on one. Three differences bite anyone who
# debugs kernels this way.
#
# **Trap 1: an unmasked access is not an error.** Drop the masks from vector add and launch it on
# 1,000 elements with blocks of 256: the last program reads and writes 24 elements past the end.
# Nothing checks this at run time, on a GPU or in the interpreter. On a GPU, NVIDIA's
# `compute-sanitizer` catches accesses outside any allocation, but by default not these: PyTorch's
# caching allocator carves tensors out of larger blocks, so the bytes past the end of one tensor
# belong to the process, often to another tensor (run with `PYTORCH_NO_CUDA_MEMORY_CACHING=1` and
# each tensor is its own allocation, which the sanitizer then guards). To see what happens without
# touching memory we do not own, the three tensors below are the first 1,000 elements of larger
# buffers; the 24 elements after `out` stand for whatever tensor happens to live there.

# %%
if TRITON:

    @triton.jit
    def add_unmasked(x_ptr, y_ptr, out_ptr, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets) + tl.load(y_ptr + offsets))

    n, block, spill = 1000, 256, 24
    x_buf = torch.full((n + spill,), 100.0, device=DEV)
    y_buf = torch.full((n + spill,), 100.0, device=DEV)
    x_buf[:n], y_buf[:n] = torch.arange(n, device=DEV), 1.0
    neighbour = torch.full((n + spill,), -1.0, device=DEV)
    add_unmasked[(triton.cdiv(n, block),)](x_buf[:n], y_buf[:n], neighbour[:n], BLOCK=block)
    print("the neighbour after the unmasked kernel:", neighbour[n:].tolist()[:6], "...")
    correct = torch.equal(neighbour[:n], torch.arange(n, device=DEV) + 1.0)
    hamlib.check(
        "without masks the valid results are right and the 24 elements past the end are silently "
        "overwritten (with 100 + 100, read past the end of x and y)",
        correct and bool((neighbour[n:] == 200.0).all()),
    )
    neighbour.fill_(-1.0)
    tk.add_kernel[(triton.cdiv(n, block),)](x_buf[:n], y_buf[:n], neighbour[:n], n, BLOCK=block)
    hamlib.check("with masks the neighbour is untouched", bool((neighbour[n:] == -1.0).all()))
else:
    print("triton is not available here: the kernels fall back to torch")

# %% [markdown]
# hamlib's kernels mask every load and store whose address can fall outside a tensor; the tests
# run each kernel on sizes that are not multiples of its blocks, where a missing mask shows.
#
# **Trap 2: a kernel sees pointers, not tensors.** It computes addresses from the strides it is
# given. A transposed view shares memory with the original and differs only in its strides; a
# kernel that assumes a contiguous layout reads it in storage order:

# %%
a = torch.arange(12.0, device=DEV).reshape(3, 4)
at = a.t()  # shape (4, 3), strides (1, 4): not contiguous
if TRITON:
    wrong = torch.empty(4, 3, device=DEV)
    tk.add_kernel[(1,)](at, torch.zeros_like(wrong), wrong, 12, BLOCK=16)
    print("the raw kernel on a.t():\n", wrong.cpu().numpy())
    hamlib.check(
        "the raw kernel returns a in storage order, not a.t()",
        torch.equal(wrong.flatten(), a.flatten()) and not torch.equal(wrong, at),
    )
try:
    K.add(at, torch.zeros(4, 3, device=DEV))
except ValueError as exc:
    print(f"K.add refuses: {exc}")

# %% [markdown]
# Every hamlib wrapper checks device, dtype, shape and contiguity before launching, and names the
# argument that is wrong.
#
# **Trap 3: bfloat16 in the interpreter.** Numpy has no bfloat16, and Triton 3.9's interpreter
# gets it wrong in two ways: arithmetic on bf16 values returns garbage (a `tl.dot` as well as a
# `+`), and converting float32 to bf16 truncates instead of rounding to the nearest value, as a
# GPU does. The output of the next cell depends on the backend:

# %% tags=["nbval-ignore-output"]
if K.backend() == "interpreter":

    @triton.jit
    def add_native(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(
            out_ptr + offsets,
            tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask),
            mask=mask,
        )

    @triton.jit
    def to_bf16(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask).to(tl.bfloat16), mask=mask)

    @triton.jit
    def dot_16x16(a_ptr, b_ptr, c_ptr):
        r = tl.arange(0, 16)
        a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
        b = tl.load(b_ptr + r[:, None] * 16 + r[None, :])
        tl.store(c_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, b))  # fp32 accumulator

    ab, bb = rand(16, 16, dtype=torch.bfloat16), rand(16, 16, dtype=torch.bfloat16, seed=1)
    c_dot = torch.empty(16, 16)
    dot_16x16[(1,)](ab, bb, c_dot)
    dot_err = (c_dot - ab.float() @ bb.float()).abs().max()
    print(f"bf16 tl.dot in the interpreter: max |error| {dot_err:.3g}")
    xb, yb = rand(1000, dtype=torch.bfloat16), rand(1000, dtype=torch.bfloat16, seed=1)
    garbage = torch.empty_like(xb)
    add_native[(4,)](xb, yb, garbage, 1000, BLOCK=256)
    bad = (garbage.float() - (xb + yb).float()).abs().max()
    print(f"bf16 + bf16 in the interpreter: max |error| {bad:.3g}")
    x32 = rand(1000)
    cast = torch.empty(1000, dtype=torch.bfloat16)
    to_bf16[(4,)](x32, cast, 1000, BLOCK=256)
    toward_zero = (cast.float().abs() <= x32.abs()).float().mean().item()
    nearest = (cast == x32.to(torch.bfloat16)).float().mean().item()
    print(
        f"fp32 -> bf16: |result| <= |x| for {toward_zero:.0%}, round-to-nearest for {nearest:.0%}"
    )
    hamlib.check(
        "the interpreter's bf16 dot and add are wrong and its bf16 cast truncates",
        not torch.allclose(garbage.float(), (xb + yb).float())
        and not dot_err < 1.0
        and toward_zero == 1.0,
    )
    hamlib.check(
        "K.add, K.matmul and K.flash_attention avoid both: bf16 is computed in fp32 and rounded "
        "by torch",
        torch.equal(K.add(xb, yb), xb + yb)
        and all(results[name, torch.bfloat16][2] for name in ["matmul", "flash_attention"]),
    )
else:
    print(f"backend {K.backend()!r}: the interpreter's bf16 traps do not apply")

# %% [markdown]
# hamlib's elementwise and row-wise kernels never do arithmetic in half precision: they load,
# convert to float32, compute and convert back on the store, which is also what a GPU kernel
# should do for accuracy. The dots are different: on a GPU, fp16 and bf16 tiles go to the tensor
# cores as they are, which multiply them exactly and accumulate in float32 (and flash attention
# rounds $P$ to the input dtype before $PV$). On the interpreter, `tl.dot` tiles in bf16 are
# converted to float32 first, and bf16 results are written in float32 and rounded by torch.
#
# Two more differences need no demonstration. The interpreter runs programs one at a time, so a
# race between programs, or a missing barrier, cannot show up; and `triton.testing.do_bench`,
# `triton.autotune` and queries about the device need a GPU.
#
# ## 6.6 What the GPU runs: the kernels compiled for an A100 and an H100
#
# The interpreter checks what a kernel computes; it says nothing about what the compiler makes of
# it. That needs no GPU either. Triton compiles for any NVIDIA target on a CPU: it ships NVIDIA's
# assembler `ptxas`, and `triton.compile` turns a kernel into PTX and a binary (a *cubin*) for
# `sm_80` (A100) or `sm_90` (H100) without a driver. `hamlib.aot.compile` does this for the exact
# launch a wrapper makes on a GPU (`K.launch_plan(..., backend="cuda")`: the same tiles, warps and
# pipeline stages) and specializes it as Triton's JIT would: an integer argument divisible by 16
# and a pointer aligned to 16 bytes are marked as such, which is what allows 128-bit vector loads.
# It then reads the binary with `cuobjdump`, also in the Triton wheel: registers per thread, the
# stack frame in local memory (where spilled registers go) and the machine code, SASS.
#
# The launches below are the wrappers' choices at the sizes of section 6.2 (the tensors are on
# PyTorch's `meta` device: shapes without storage, so nothing is allocated). For the large
# matmuls and attention these are the default configurations; on a GPU the autotuner may pick
# another of its candidates, each of which `tests/test_aot.py` compiles too. The table depends on
# the Triton version, so it is not part of the regression test; the checks after it are.

# %%
from hamlib import aot

COMPILE, why_not = aot.available()


def meta(*shape, dtype=torch.float16):
    return torch.empty(*shape, dtype=dtype, device="meta")


big = meta(8192, 8192)
big32 = meta(8192, 8192, dtype=torch.float32)
head = meta(1, 32, 4096, 128)
head32 = meta(1, 32, 4096, 128, dtype=torch.float32)
launches = {
    "add fp16, n = 2^27": K.launch_plan("add", meta(2**27), meta(2**27)),
    "add fp16, n = 2^27 + 3": K.launch_plan("add", meta(2**27 + 3), meta(2**27 + 3)),
    "softmax fp16, 4096 x 16384": K.launch_plan("softmax", meta(4096, 16384)),
    "layer norm fp16, 4096 x 8192": K.launch_plan(
        "layer_norm", meta(4096, 8192), *[meta(8192)] * 2
    ),
    "matmul fp16, 8192^3": K.launch_plan("matmul", big, big),
    "matmul bf16, 8192^3": K.launch_plan("matmul", *[meta(8192, 8192, dtype=torch.bfloat16)] * 2),
    "matmul fp32, 8192^3": K.launch_plan("matmul", big32, big32),
    "matmul fp32 as TF32, 8192^3": K.launch_plan("matmul", big32, big32, "tf32"),
    "flash attention fp16, d 128": K.launch_plan("flash_attention", head, head, head),
    "flash attention fp32, d 128": K.launch_plan("flash_attention", head32, head32, head32),
}
compiled = {}
if COMPILE:  # one compiler process per target, both at once: {(label, arch): what it made}
    compiled = aot.compile_targets(launches, (80, 90))
else:
    print(f"not compiled here: {why_not}")

# %% tags=["nbval-ignore-output"]
if COMPILE:
    import triton

    print(
        f"triton {triton.__version__}; per thread: registers, stack bytes; "
        "per block: warps, shared bytes"
    )
    print(f"{'launch':29s}{'GPU':>5s}{'regs':>5s}{'stack':>6s}{'warps':>6s}{'smem':>7s}  blk/SM")
    for name in launches:
        for arch, gpu in ((80, G.A100_SXM), (90, G.H100_SXM)):
            c = compiled[name, arch]
            occ = G.occupancy(gpu, c.registers, c.shared_bytes, c.num_warps)
            print(
                f"{name if arch == 80 else '':29s}{gpu.name[7:11]:>5s}{c.registers:5d}"
                f"{c.stack_bytes:6d}{c.num_warps:6d}{c.shared_bytes:7d}"
                f"{occ.blocks_per_sm:4d} {occ.limited_by}"
            )

# %%
if COMPILE:
    hamlib.check(
        "every launch compiles for sm_80 and sm_90, fits the per-block shared memory of both "
        "(163 and 227 KiB) and keeps its state in registers (no stack frame: no spills)",
        all(c.fits and not c.spills for c in compiled.values()),
    )

    def blocks(name, arch):
        c, gpu = compiled[name, arch], {80: G.A100_SXM, 90: G.H100_SXM}[arch]
        return G.occupancy(gpu, c.registers, c.shared_bytes, c.num_warps).blocks_per_sm

    tile_pair = (128 + 128) * 64 * 2  # one stage of A and B tiles, fp16
    mm16 = {a: compiled["matmul fp16, 8192^3", a] for a in (80, 90)}
    hamlib.check(
        "the vector add fits 16 blocks per SM on both GPUs (64 warp slots, 4 warps each); the "
        "fp16 matmul fits 1 on an A100 and 2 on an H100, holding 2 stages of tiles in shared "
        "memory on sm_80 (num_stages - 1) and 3 on sm_90",
        blocks("add fp16, n = 2^27", 80) == blocks("add fp16, n = 2^27", 90) == 16
        and (blocks("matmul fp16, 8192^3", 80), blocks("matmul fp16, 8192^3", 90)) == (1, 2)
        and (mm16[80].shared_bytes, mm16[90].shared_bytes) == (2 * tile_pair, 3 * tile_pair),
    )

# %% [markdown]
# The `blk/SM` column is the occupancy calculator of section 6.1 fed with the compiler's numbers,
# and the last word says which resource ran out first (registers, shared memory, warp slots or
# block slots). The elementwise and row-wise kernels need few registers and almost no
# shared memory (a softmax row lives in registers; its `tl.max` and `tl.sum` reduce across a
# warp with shuffles and across warps through the few bytes of shared memory in the `smem`
# column). The matmul and attention tiles need a lot of both: the fp16 matmul fits one program
# per SM on an A100 and two on an H100. `tests/test_aot.py` compiles every configuration the
# wrappers can choose (every dtype, small and large shapes, every head size class, and every
# configuration the autotuner may pick on a GPU) for both targets and fails if any spills or does
# not fit.
#
# **How much grouped order saves, with the real occupancy.** An $8192^3$ fp16 matmul in
# $128 \times 128$ tiles is a $64 \times 64$ grid of programs, and the table says how many run at
# once: the blocks per SM times the SMs. A model of what L2 saves: the programs resident together
# form a *wave*; they advance along $K$ at about the same pace, so a tile of $A$ or $B$ that
# several of them need comes from HBM once per wave and from L2 after that. The HBM traffic is
# then the number of distinct tile-rows and tile-columns in each wave, times a strip of
# $128 \times 8192$ values, summed over the waves; each GPU against its own ridge:

# %%
if COMPILE:
    strip_bytes = 128 * 8192 * 2
    flops_8192 = 2 * 8192**3
    wave_traffic = {}
    for arch, gpu in ((80, G.A100_SXM), (90, G.H100_SXM)):
        c = compiled["matmul fp16, 8192^3", arch]
        per_sm = G.occupancy(gpu, c.registers, c.shared_bytes, c.num_warps).blocks_per_sm
        resident = per_sm * gpu.sms
        for group in (1, 8):
            order = G.tile_order(64, 64, group)
            waves = [order[i : i + resident] for i in range(0, len(order), resident)]
            strips = sum(len(set(w[:, 0])) + len(set(w[:, 1])) for w in waves)
            wave_traffic[arch, group] = strips * strip_bytes
            print(
                f"{gpu.name[:11]}: {resident:3d} programs at once, GROUP_M = {group}: "
                f"{len(waves):2d} waves, {strips * strip_bytes / 1e9:4.2f} GB from HBM, "
                f"intensity {flops_8192 / (strips * strip_bytes):4.0f} FLOP/B "
                f"(ridge {gpu.fp16_tensor_flops / gpu.hbm_bandwidth:.0f})"
            )
    cut = {a: wave_traffic[a, 1] / wave_traffic[a, 8] for a in (80, 90)}
    print(f"grouped order moves {cut[80]:.1f}x less on the A100, {cut[90]:.1f}x on the H100")

# %%
if COMPILE:
    ridges = {80: G.A100_SXM, 90: G.H100_SXM}
    hamlib.check(
        "in the wave model grouped order moves at least 1.5x less HBM traffic than row-major "
        "order on both GPUs, and both orders stay above each GPU's ridge",
        all(r >= 1.5 for r in cut.values())
        and all(
            flops_8192 / traffic > ridges[a].fp16_tensor_flops / ridges[a].hbm_bandwidth
            for (a, _), traffic in wave_traffic.items()
        ),
    )

# %% [markdown]
# Grouping does not change what one program loads (64 FLOP/B, section 6.2), only how often the
# loads of programs running together coincide. In this model both orders already sit above each
# GPU's ridge, because a wave of a hundred or more programs shares its strips either way: the
# folklore that grouping is what makes a large matmul compute-bound overstates it at this size;
# what it buys is less traffic, so more slack against the ridge when L2 hit rates fall short of
# the model. The model is optimistic in two ways a real schedule spoils: programs do not start in
# exact `pid` order or advance in lockstep, and the L2 of an A100 or an H100 is split in two
# halves. It is pessimistic in one: tiles can survive in L2 from one wave to the next.

# %% [markdown]
# **The configuration that did not fit.** A 128 x 128 x 64 tile with 3 pipeline stages is a
# common choice for fp16. An estimate of its shared memory in fp32, (128 + 128) x 64 x 4 bytes per
# stage times 3 stages = 192 KiB, would put it over the A100's 163 KiB per block. The compiler
# says otherwise, and finds a different problem:

# %% tags=["nbval-ignore-output"]
if COMPILE:
    old = K.launch_plan("matmul", big32, big32)
    old = K.Launch(old.kernel, old.grid, old.args, {**old.meta, "BLOCK_K": 64, "num_stages": 3})
    (c_old,) = aot.compile(old, 80)
    estimate = (128 + 128) * 64 * 4 * 3
    print(
        f"fp32 128 x 128 x 64, 3 stages, sm_80: shared {c_old.shared_bytes:,} B (estimate "
        f"{estimate:,} B), {c_old.registers} registers, stack frame {c_old.stack_bytes:,} B"
    )

# %%
if COMPILE:
    hamlib.check(
        "the fp32 128 x 128 x 64 tile uses less shared memory than stages x tile and fits sm_80, "
        "but spills registers; K.matmul's fp32 tile (BLOCK_K 16) does not",
        c_old.shared_bytes < estimate
        and c_old.fits
        and c_old.spills
        and not compiled["matmul fp32, 8192^3", 80].spills,
    )

# %% [markdown]
# On sm_80 Triton allocates `num_stages - 1` buffers of the tile pair, not `num_stages`: 128 KiB
# here. (The step being computed has had its tiles copied from shared memory into registers
# before its buffer is refilled; on sm_90, where `wgmma` reads its operands from shared memory
# while it runs, the table shows the extra buffer: 96 against 64 KiB for the fp16 matmul.) The
# real cost is in registers: computed exactly, an fp32 `tl.dot` runs on the FMA units, which
# need each thread to hold its share of both tiles for the whole `BLOCK_K` slice; at 64 that is
# more than 255 registers, and the rest goes to local memory, which lives in HBM behind the L1
# cache. The kernel would run, correctly and slowly. `K.matmul` therefore takes `BLOCK_K = 16`
# for fp32, and flash attention in fp32 takes blocks of 64 queries and 16 keys (a 128-query
# block spills too: `tests/test_aot.py` would fail on it).
#
# The same question for the fused softmax of section 6.3, which keeps a whole row in registers:
# compiled with its 16 warps at the longest row it takes and at twice that,

# %% tags=["nbval-ignore-output"]
if COMPILE:
    rows_fused = {}
    for cols in (K.SOFTMAX_MAX_FUSED, 2 * K.SOFTMAX_MAX_FUSED):
        plan = K.launch_plan("softmax", meta(8, cols, dtype=torch.float32), max_fused=cols)
        (rows_fused[cols],) = aot.compile(plan, 90)
        c = rows_fused[cols]
        print(
            f"fused softmax, {cols:,} fp32 per row, {c.num_warps} warps: {c.registers} registers, "
            f"stack frame {c.stack_bytes:,} B"
        )

# %%
if COMPILE:
    hamlib.check(
        "the fused softmax keeps a row of K.SOFTMAX_MAX_FUSED = 32,768 fp32 in registers and "
        "spills at twice that",
        not rows_fused[K.SOFTMAX_MAX_FUSED].spills and rows_fused[2 * K.SOFTMAX_MAX_FUSED].spills,
    )

# %% [markdown]
# **Tensor cores, read from the binary.** On an A100 a tensor-core instruction is `HMMA` (a warp
# multiplies fragments of 16 x 8 x 16 in fp16); on an H100 the fast path is `HGMMA`, the SASS of
# PTX's `wgmma`, issued by a warpgroup of four warps on 64 x N x 16 tiles (64 x N x 8 in TF32)
# whose B operand, and usually A, is read straight from shared memory (flash attention's
# $PV$ passes $P$ from registers). Ordinary fp32 multiply-adds are `FFMA`. Counted in each
# matmul and attention binary:

# %% tags=["nbval-ignore-output"]
MMA = {"HMMA": r"\bHMMA\b", "HGMMA": r"\bHGMMA\b", "FFMA": r"\bFFMA\b"}
if COMPILE:
    print(f"{'launch':30s}{'sm_80 HMMA':>11s}{'FFMA':>7s}{'sm_90 HGMMA':>13s}{'FFMA':>7s}")
    for name in launches:
        if name.startswith(("matmul", "flash")):
            c80, c90 = compiled[name, 80], compiled[name, 90]
            print(
                f"{name:30s}{c80.count(MMA['HMMA']):11d}{c80.count(MMA['FFMA']):7d}"
                f"{c90.count(MMA['HGMMA']):13d}{c90.count(MMA['FFMA']):7d}"
            )
    print(*compiled["matmul fp16, 8192^3", 80].lines(MMA["HMMA"], limit=1))
    print(*compiled["matmul fp16, 8192^3", 90].lines(MMA["HGMMA"], limit=1))

# %%
if COMPILE:
    dots = [n for n in launches if n.startswith(("matmul", "flash"))]
    exact = [n for n in dots if "fp32" in n and "TF32" not in n]
    uses_tc = {
        n: compiled[n, 80].count(MMA["HMMA"]) > 0 and compiled[n, 90].count(MMA["HGMMA"]) > 0
        for n in dots
    }
    shapes = (
        compiled["matmul fp16, 8192^3", 80].lines(MMA["HMMA"], limit=1)[0],
        compiled["matmul fp16, 8192^3", 90].lines(MMA["HGMMA"], limit=1)[0],
    )
    hamlib.check(
        "fp16, bf16 and TF32 dots use tensor cores on both targets (HMMA.16816 on sm_80, "
        "HGMMA.64x128x16 on sm_90, i.e. wgmma); exact fp32 uses none, only FFMA",
        "HMMA.16816" in shapes[0]
        and "HGMMA.64x128x16" in shapes[1]
        and all(uses_tc[n] for n in dots if n not in exact)
        and all(
            compiled[n, a].count(MMA["HMMA"]) + compiled[n, a].count(MMA["HGMMA"]) == 0
            and compiled[n, a].count(MMA["FFMA"]) > 0
            for n in exact
            for a in (80, 90)
        ),
    )

# %% [markdown]
# **Can shared memory feed the tensor cores?** The roofline has a level per memory. One level
# down from HBM, what matters is what each *instruction* reads from shared memory: on an A100 a
# warp loads its own slice of the A and B tiles (`ldmatrix`) for its `mma.sync`s; on an H100
# `wgmma` reads a warpgroup's slice directly. The compiled layout (Triton's `nvidia_mma`
# attribute in the TTGIR) says how the 128 x 128 tile of the fp16 matmul is divided: `warpsPerCTA`
# gives the warps along M and N. A slice of $r \times c$ outputs over a step of $k$ does
# $2rck$ FLOPs on $(r + c)k$ fp16 values read, an intensity of $rc/(r + c)$ FLOP/B, against the
# shared-memory ridge: tensor-core FLOP/s over shared-memory bandwidth (32 banks of 4 bytes per
# SM per clock):

# %%
if COMPILE:
    smem = {}
    for arch, gpu in ((80, G.A100_SXM), (90, G.H100_SXM)):
        c = compiled["matmul fp16, 8192^3", arch]
        version, warps, _ = c.mma_layout()
        rows = c_rows = 128 // warps[0]
        cols = 128 // warps[1]
        if version == 3:  # wgmma: a warpgroup of 4 consecutive warps shares one instruction
            rows = 4 * c_rows
        smem[arch] = (rows * cols / (rows + cols), gpu.fp16_tensor_flops / gpu.shared_bandwidth)
        unit = "warpgroup" if version == 3 else "warp"
        print(
            f"{gpu.name[:11]}: mma v{version}, warpsPerCTA {warps}: a {unit} computes "
            f"{rows} x {cols}, {smem[arch][0]:.1f} FLOP/B from shared memory; ridge "
            f"{smem[arch][1]:.1f} ({gpu.shared_bandwidth / 1e12:.1f} TB/s)"
        )
    warp_tile_on_h100 = 64 * 32 / (64 + 32)  # the A100's 64 x 32 warp slice, on an H100
    print(f"the A100's 64 x 32 warp slice on an H100: {warp_tile_on_h100:.1f} FLOP/B")
    hamlib.check(
        "the fp16 matmul's warp (A100) and warpgroup (H100) slices read shared memory at an "
        "intensity above each GPU's shared-memory ridge; a 64 x 32 warp slice would fall below "
        "the H100's",
        all(i > r for i, r in smem.values()) and warp_tile_on_h100 < smem[90][1],
    )

# %% [markdown]
# The margins are thin: the tensor cores of an A100 need nearly all of its shared-memory
# bandwidth, and an H100, with twice the tensor-core throughput per SM and only a little more
# shared-memory bandwidth, could not feed them from warp-sized slices. That is the reason for
# `wgmma`: four warps share one instruction and one read of the B tile. (Flash attention's
# $QK^\top$ is the same calculation with its query rows: 16 per warp on the A100, 64 per
# warpgroup on the H100, with $Q$ held in registers.)

# %% [markdown]
# So exact fp32 gives up the tensor cores:

# %%
for gpu in (G.A100_SXM, G.H100_SXM):
    print(
        f"{gpu.name}: fp32 on FMA units {gpu.fp32_flops / 1e12:.1f} TFLOP/s, "
        f"TF32 on tensor cores {gpu.tf32_tensor_flops / 1e12:.0f}, "
        f"fp16 {gpu.fp16_tensor_flops / 1e12:.0f}"
    )

# %% [markdown]
# TF32 keeps fp32's range but only 10 bits of mantissa. How the 13 other bits go matters: the
# instruction that rounds fp32 to TF32 to nearest is `cvt.rna.tf32.f32`, and Triton's TF32 dot
# does not emit it; a tensor core given raw fp32 bits ignores the low 13, which truncates
# (Triton issue 4574 reports the accuracy this costs):

# %%
if COMPILE:
    tf32_ptx = compiled["matmul fp32 as TF32, 8192^3", 80]
    print(f"cvt.rna.tf32.f32 in the TF32 matmul's PTX: {tf32_ptx.count('cvt.rna.tf32', 'ptx')}")
    print("its dot:", tf32_ptx.lines(r"mma.*tf32", where="ptx", limit=1)[0].split()[0])

# %%
if COMPILE:
    hamlib.check(
        "Triton's TF32 matmul passes fp32 bits to mma.sync ... .tf32 without rounding them",
        tf32_ptx.count("cvt.rna.tf32", "ptx") == 0 and tf32_ptx.count(r"mma.*tf32", "ptx") > 0,
    )

# %% [markdown]
# What that costs in accuracy needs no GPU: make TF32 inputs either way (to nearest, ties away
# from zero, as `cvt.rna` does; or truncated), multiply in float64, and compare with an ordinary
# fp32 matrix product on this CPU, all against the float64 product of the same inputs:


# %%
def to_tf32(t, nearest):
    bits = t.float().view(torch.int32)
    if nearest:
        bits = bits + 0x1000  # half of the last kept bit: round to nearest, ties away from zero
    return (bits & ~0x1FFF).view(torch.float32)  # keep 10 of the 23 mantissa bits


tf32_err = {"fp32 matmul (this CPU)": [], "TF32 rounded to nearest": [], "TF32 truncated": []}
for seed in range(3):
    gen = torch.Generator().manual_seed(seed)
    a64 = torch.randn(256, 4096, generator=gen, dtype=torch.float64)
    b64 = torch.randn(4096, 256, generator=gen, dtype=torch.float64)
    exact64 = a64 @ b64
    scale64 = exact64.abs().max().item()
    products = {
        "fp32 matmul (this CPU)": (a64.float() @ b64.float()).double(),
        "TF32 rounded to nearest": to_tf32(a64, True).double() @ to_tf32(b64, True).double(),
        "TF32 truncated": to_tf32(a64, False).double() @ to_tf32(b64, False).double(),
    }
    for name, c in products.items():
        tf32_err[name].append((c - exact64).abs().max().item() / scale64)
for name, e in tf32_err.items():
    print(
        f"{name:24s} max error / max |C|, 3 seeds: "
        f"{hamlib.approx(min(e), '.1e')} to {hamlib.approx(max(e), '.1e')}"
    )
hamlib.check(
    "at K = 4096 TF32 inputs cost over 100x the error of an fp32 matmul, and truncating them "
    "costs more than rounding them, on every seed",
    all(t > 100 * f and tr > t for f, t, tr in zip(*tf32_err.values(), strict=True)),
)

# %% [markdown]
# A relative error of a few $10^{-4}$, and two to three times that when truncated: harmless for
# training a network, not what someone comparing with `a @ b` in fp32 expects. PyTorch's default
# for fp32 matmuls is therefore full precision (`torch.backends.cuda.matmul.fp32_precision =
# "ieee"`, formerly `allow_tf32 = False`), and `K.matmul` follows it; `precision="tf32"` is the
# opt-in. (cuBLAS's TF32 rounds its inputs; Triton's truncates them, so the two are not equally
# accurate, which the TF32 row of the GPU table should be read with.)
#
# **Vector loads need proof of alignment.** The vector add reads 2 bytes per element and does one
# addition: its speed is its loads. A load instruction can fetch 16 bytes at once
# (`LDG.E.128`) only if the compiler can prove that the addresses are 16-byte aligned and that the
# mask covers all 8 fp16 elements together. Triton's JIT proves it from the arguments: a pointer
# aligned to 16 bytes and a length divisible by 16. One extra element breaks the proof:

# %% tags=["nbval-ignore-output"]
VECTOR, SCALAR = r"LDG\.E\.128", r"LDG\.E(?!\.128|\.64)"
if COMPILE:
    for name in ("add fp16, n = 2^27", "add fp16, n = 2^27 + 3"):
        c = compiled[name, 90]
        print(f"{name}: {c.count(VECTOR)} 128-bit loads, {c.count(SCALAR)} element loads")
        print("   ", c.lines(r"LDG\.E", limit=1)[0].split(";")[0])

# %%
if COMPILE:
    aligned, odd = (
        compiled[n, a] for n in ("add fp16, n = 2^27", "add fp16, n = 2^27 + 3") for a in (90,)
    )
    hamlib.check(
        "n divisible by 16: only 128-bit loads; n = 2^27 + 3: only element-wise loads",
        aligned.count(VECTOR) > 0
        and aligned.count(SCALAR) == 0
        and odd.count(VECTOR) == 0
        and odd.count(SCALAR) > 0,
    )

# %% [markdown]
# Each element load is a separate instruction, and the memory system splits and merges the
# requests of a warp by 32-byte sectors; whether the odd-length version is much slower is a
# question for a GPU (`make gpu-check` times both). The lesson for a kernel writer: shapes that
# are multiples of 16 and tensors that start on 16-byte boundaries are what let the compiler
# vectorize, and a view that starts one element into a tensor takes it away.
#
# ## 6.7 Measuring speed honestly
#
# Speed is a property of a kernel *on a device*. The interpreter's times say nothing about a GPU,
# so this chapter measures nothing on a CPU. On a GPU, `kernel_bench.benchmark` times each kernel
# and a baseline with `triton.testing.do_bench`: it runs the call repeatedly after a warm-up,
# flushes L2 between runs (so that a kernel does not find its input already on chip) and returns,
# as `kernel_bench.benchmark` asks, the *median*; its own default is the mean, which one slow
# outlier moves. Before measuring, the roofline says what to expect at best:

# %%
expect = [
    ("add", {"n": 2**24}, "device copy"),
    ("softmax", {"m": 4096, "n": 16384}, "torch.softmax"),
    ("matmul", {"m": 4096, "n": 4096, "k": 4096}, "cuBLAS (a @ b)"),
    ("attention", {"batch": 4, "heads": 16, "seq": 4096, "head_dim": 128}, "flash SDPA"),
]
print(f"{'kernel, fp16':14s}{'baseline':>16s}{'roofline bound':>16s}")
for op, shape, baseline in expect:
    flops, nbytes = G.op_cost(op, **shape)
    best = max(nbytes / spec.hbm_bandwidth, flops / spec.fp16_tensor_flops)
    print(f"{op:14s}{baseline:>16s}{best * 1e6:13.1f} us")

# %% [markdown]
# **The third regime: overhead.** The vector add of $2^{24}$ fp16 elements should take about 30 µs
# on the GPU. Before the GPU sees anything, the CPU runs Python: `K.add` checks its inputs and
# plans the launch, Triton's launcher packs the arguments, the driver queues the kernel. The CPU
# then returns and can queue the next launch while the GPU works; but a program that launches
# small kernels one after another, each shorter than that CPU time, waits on the CPU (Horace He's
# third regime, beside memory- and compute-bound). `do_bench` does not show it: it flushes L2
# before every run and times with CUDA events, so the CPU queues ahead and the events measure only
# GPU time. Measuring the overhead takes a host clock over many back-to-back calls
# (`kernel_bench.host_timer`, the `add_host` row of the table below). The Python part can be
# measured here, on the CPU, by timing the wrapper's checks and launch plan alone:

# %% tags=["nbval-ignore-output"]
import timeit

xs, ys = torch.randn(4096), torch.randn(4096)
n_calls = 2000
per_call = timeit.timeit(lambda: K.launch_plan("add", xs, ys), number=n_calls) / n_calls
print(f"K.add's checks and launch plan: {per_call * 1e6:.0f} us per call, before any launch")

# %% [markdown]
# Of the order of ten microseconds of Python per call on a server CPU (the cell prints this
# machine's), before Triton's launcher and the driver add their own. Against a 30 µs kernel that
# is not negligible, and against a 4,096-element add, which a GPU finishes in a few microseconds,
# it is everything. The remedies are the ones PyTorch uses: fewer, larger kernels (fusion again),
# *CUDA graphs*, which record a sequence of launches once and replay it with one call, and
# `torch.compile`, whose backend (Inductor) generates fused Triton kernels much like the ones in
# this chapter and can capture them in a CUDA graph.
#
# **The table.** `make gpu-check` runs on a CUDA machine: the kernel tests on the GPU, this
# chapter under nbval, and the benchmark, saved with the machine's facts in
# `book/data/gpu_bench.json`. The ratio is the baseline's time over ours (above 1: ours is
# faster); for vector add it is our bandwidth over a device-to-device copy's. The targets are
# goals for these kernels, not claims: at least torch's speed for softmax, 90% of cuBLAS for
# fp16/bf16 matmul, 80% of PyTorch's flash SDPA for attention, 85% of copy bandwidth for add.

# %%
import json
import pathlib

GPU_TABLE = pathlib.Path("data/gpu_bench.json")
if GPU_TABLE.exists():
    gpu = json.loads(GPU_TABLE.read_text())
    print(
        f"measured {gpu['measured']} on {gpu['gpu']} (driver {gpu['driver']}, CUDA {gpu['cuda']},"
    )
    print(f"torch {gpu['torch']}, triton {gpu['triton']}); {gpu['method']}")
    for name, step in gpu["steps"].items():
        print(f"  {name}: {'passed' if step['passed'] else 'FAILED'} ({step['summary']})")
    print(
        f"{'kernel':10s}{'dtype':>9s}{'size':>20s}{'ms':>9s}  {'baseline':22s}"
        f"{'ratio':>7s}{'goal':>6s}"
    )
    for r in gpu["rows"]:
        goal = gpu["targets"].get(f"{r['kernel']} {r['dtype']}")
        print(
            f"{r['kernel']:10s}{r['dtype']:>9s}{r['size']:>20s}{r['ms']:9.3f}  {r['baseline']:22s}"
            f"{r['ratio']:7.2f}{'' if goal is None else f'{goal:6.2f}'}"
        )
else:
    print("The GPU table has not been measured yet: no CUDA machine has run `make gpu-check`")
    print("for this version of the book. The section's claims about speed wait for it.")

# %% tags=["nbval-ignore-output"]
if K.backend() == "cuda":  # a live measurement, on the GPU running this notebook
    rows = kernel_bench.benchmark(
        [("add", "float16", (2**24,)), ("matmul", "float16", (4096, 4096, 4096))]
    )
    for r in rows:
        print(
            f"{r['kernel']:8s}{r['dtype']:>9s}{r['size']:>18s}{r['ms']:9.3f} ms, "
            f"ratio {r['ratio']:.2f}"
        )
else:
    print(f"no CUDA GPU here (backend {K.backend()!r}): no live timing")

# %% [markdown]
# ## 6.8 Claims in circulation
#
# **"Flash attention is faster because it does fewer FLOPs."** Without a mask it does not do
# fewer. In the forward pass it does the same matmuls and exponentials, plus the rescaling of the
# accumulator by $e^{m - m'}$: `BLOCK_M` x $d$ multiplies per block of keys, which the textbook
# version never does. (The backward pass does more again: it recomputes the scores rather than
# storing them.) With a causal mask it skips the key blocks right of the diagonal, which a
# textbook implementation computes in full and then masks. Counted with the kernel's blocks on a
# GPU:

# %%
shape = {"batch": 1, "heads": 32, "seq": 4096, "head_dim": 128}
f_flash, b_flash = G.op_cost("attention", **shape)
f_naive, b_naive = G.op_cost("attention_unfused", **shape)
block_n = kernel_configs.attention_config(shape["head_dim"], torch.float16)["BLOCK_N"]
rescale = 32 * shape["seq"] * shape["head_dim"] * math.ceil(shape["seq"] / block_n)
print(
    f"FLOPs: unfused {f_naive / 1e9:.1f} G; flash {(f_flash + rescale) / 1e9:.1f} G with "
    f"rescaling (+{rescale / f_flash:.2%})"
)
print(
    f"bytes: flash {b_flash / 1e6:.0f} MB, unfused {b_naive / 1e6:.0f} MB "
    f"({b_naive / b_flash:.0f}x)"
)
block_m = kernel_configs.attention_config(shape["head_dim"], torch.float16)["BLOCK_M"]
n_blocks = shape["seq"] // block_m
causal_share = sum((i + 1) * block_m for i in range(n_blocks)) / (n_blocks * shape["seq"])
print(f"causal: the kernel computes {causal_share:.1%} of the s x s scores (query block i reads")
print("keys up to the end of its own block); a materialized implementation computes 100%")

# %% [markdown]
# The rescaling adds $1/(4\,$`BLOCK_N`$)$ of the matmul FLOPs, under 1%; the bytes differ 33-fold
# ($1 + s/d$ with `op_cost`'s conventions). With a causal mask, flash attention does about half
# the FLOPs of a materialized implementation that masks after computing, the same as one that
# skips masked blocks too. **Verdict: false as stated for unmasked attention; true about memory.**
# The speed-up comes from moving an $s \times s$ matrix through HBM zero times instead of four,
# and the memory saving (no $s \times s$ buffer at all) is what makes long contexts fit.
#
# **"FlashAttention is 10x faster than standard attention"** (the syllabus, volume 6). The
# roofline says what to expect if each runs at its own roofline bound. Unfused attention is
# memory-bound, at $8sd + 8s^2$ bytes per head in
# fp16; flash attention, at best, compute-bound at $4s^2d$ tensor-core FLOPs (plus the
# exponentials, which section 6.2 found to cost another half at $d = 128$ unless they overlap).
# For long sequences the ratio of the two bounds tends to $2P/(Bd)$, twice the ridge over the
# head size. (It is a ratio of two lower bounds on time, so it is what a flash kernel at its
# roofline gains over an unfused one at its roofline, not a bound on every implementation:
# an unfused baseline below its roofline loses by more.)

# %%
for d in (64, 128):
    shape_d = {"batch": 1, "heads": 32, "seq": 4096, "head_dim": d}
    fl, by = G.op_cost("attention", **shape_d)
    _, by_naive = G.op_cost("attention_unfused", **shape_d)
    t_naive = by_naive / spec.hbm_bandwidth
    t_flash = max(by / spec.hbm_bandwidth, fl / spec.fp16_tensor_flops)
    t_flash_exp = t_flash + 32 * 4096**2 / spec.special_function_rate
    print(
        f"head_dim {d:3d}, s 4096: both at their roofline, {t_naive / t_flash:4.1f}x faster; "
        f"{t_naive / t_flash_exp:4.1f}x if the exponentials do not overlap; "
        f"2P/(Bd) = {2 * ridge / d:4.1f}"
    )

# %% [markdown]
# **Verdict: not between two implementations at their rooflines on an H100 at head_dim 128**,
# where the ratio is under 5x (about 3x if the exponentials do not overlap the matmuls); at
# head_dim 64 it is 9x, or under 5x without that overlap. Larger factors compare with baselines
# that fall short of their roofline, make more passes (masking and dropout each add two) or run
# out of memory. The `attention_unfused` rows of `make gpu-check`'s table measure it on a GPU.
#
# **"The Triton interpreter runs your kernels on a CPU with the same results."** Section 6.3
# verified it for five kernels in fp32 and fp16 against torch on the CPU; section 6.5 found two
# exceptions in bf16 (wrong arithmetic and truncating casts in Triton 3.9) and noted that races
# cannot show up when programs run one at a time. Section 6.6 adds what a compiled kernel does
# that the interpreter does not: exact fp32 dots are the interpreter's only mode, while `tl.dot`
# on fp32 tiles on a GPU uses TF32 unless told `"ieee"`; and `tl.exp` and fp32 division compile
# to approximate instructions:

# %%
if COMPILE:
    (c_softmax,) = aot.compile(K.launch_plan("softmax", meta(8, 1000, dtype=torch.float32)), 90)
    for op in (r"ex2\.", r"div\."):  # the instruction, without its (compiler-chosen) registers
        print(c_softmax.lines(op, where="ptx", limit=1)[0].split()[0])

# %%
if COMPILE:
    hamlib.check(
        "the compiled softmax computes exp with ex2.approx and divides with div.full (both "
        "approximations), not with correctly rounded exp and division (div.rn)",
        c_softmax.count(r"ex2\.approx", where="ptx") > 0
        and c_softmax.count(r"div\.full\.f32", where="ptx") > 0
        and c_softmax.count(r"div\.rn", where="ptx") == 0,
    )

# %% [markdown]
# (`ex2.approx` also takes $x \log_2 e$, rounded to fp32 first, so the relative error of $e^x$
# grows with $|x|$; a softmax subtracts the row maximum first, which keeps $x \le 0$ and the
# large-$|x|$ terms negligibly small.) **Verdict: true for fp32 and fp16 arithmetic up to the
# last bits (the GPU's `exp` and division are approximations that the interpreter's numpy does
# not reproduce); false for bf16 unless the kernel converts to fp32; silent about concurrency,
# about TF32, and about everything that decides speed.**
# `make gpu-check` runs the same tests compiled on a GPU.
#
# **"Triton kernels reach the speed of cuBLAS and hand-written CUDA."** The table of section 6.7
# answers it for these kernels on the machine it names, when a GPU has run it. What the roofline
# and the compiled kernels say in advance: a memory-bound kernel that moves the minimum bytes
# with vector loads can match any other that does (softmax, vector add); a compute-bound matmul
# depends on tiles, pipelining and tensor-core instructions, which the compiler chooses for
# Triton (section 6.6 showed `wgmma` on sm_90) and experts choose by hand for cuBLAS.
#
# **The syllabus's hardware figures** (volume 6): "HBM about 2 TB/s, SRAM about 19 TB/s, 192 KB
# per SM" are the A100's, as the FlashAttention paper quotes them:

# %%
a100 = G.A100_SXM
print(
    f"{a100.name}: HBM {a100.hbm_bandwidth / 1e12:.2f} TB/s; shared memory {a100.sms} SMs x "
    f"{a100.shared_bytes_per_clock_per_sm} B x {a100.clock_hz / 1e9:.2f} GHz = "
    f"{a100.shared_bandwidth / 1e12:.1f} TB/s; {a100.shared_memory_per_sm_kib} KiB of the "
    f"192 KiB L1/shared per SM usable as shared memory"
)
print(
    f"{spec.name}: HBM {spec.hbm_bandwidth / 1e12:.2f} TB/s; shared memory "
    f"{spec.shared_bandwidth / 1e12:.1f} TB/s; {spec.shared_memory_per_sm_kib} KiB per SM"
)
print(
    f"H100 / A100: HBM {spec.hbm_bandwidth / a100.hbm_bandwidth:.2f}x, shared memory "
    f"{spec.shared_bandwidth / a100.shared_bandwidth:.2f}x"
)

# %% [markdown]
# **Verdict: right for the A100** (with 164 of the 192 KiB usable as shared memory; the 19 TB/s
# follows from 32 banks of 4 bytes per SM per clock); an H100 has about 1.6 times both. The
# syllabus's other hardware claims, each against what this chapter computed or read from the
# binaries:

# %%
volta_fma = 4 * 4 * 4  # Volta: a 4 x 4 x 4 matrix multiply-add per tensor core per clock
for gpu in (a100, spec):
    per_tc = gpu.fp16_tensor_flops / (gpu.sms * 4 * 2 * gpu.clock_hz)  # 4 tensor cores per SM
    print(
        f"{gpu.name}: {per_tc:.0f} fp16 FMAs per tensor core per clock "
        f"({per_tc / volta_fma:.0f}x Volta's 4 x 4 x 4 = {volta_fma})"
    )
print(
    f"{spec.name}: {spec.sms * spec.fp32_lanes_per_sm:,} fp32 lanes in {spec.sms} SMs; "
    f"{spec.max_warps_per_sm * spec.warp_size:,} resident threads per SM; "
    f"registers {reg_mib:.0f} MiB + L2 {spec.l2_mib} MiB on chip"
)
print(
    f"{spec.name}, dense: FP8 {spec.fp8_tensor_flops / 1e12:.0f}, fp16/bf16 "
    f"{spec.fp16_tensor_flops / 1e12:.0f}, TF32 {spec.tf32_tensor_flops / 1e12:.0f}, "
    f"fp32 {spec.fp32_flops / 1e12:.0f} TFLOP/s"
)

# %% [markdown]
# - *"A tensor core does a 4 x 4 matrix multiply-add per clock."* That was Volta (2017): 64 FMAs
#   per clock. An A100's tensor core does 4 times that and an H100's 8 times, and the
#   instructions are larger too: section 6.6 read `HMMA.16816` (a warp-wide 16 x 8 x 16 product)
#   on the A100 and `HGMMA.64x128x16` (a warpgroup-wide product) on the H100. **Outdated.**
# - *"Block maps to SM, thread maps to CUDA core."* A block does stay on one SM, but an SM holds
#   several at once (the occupancy table of 6.6: up to 16 of the small kernels), and a thread is
#   not a core: an SM keeps up to 2,048 threads resident for its 128 fp32 lanes and issues an
#   instruction for a warp of 32 at a time. **Misleading**; the unit of execution is the warp.
# - *"The threads of a warp must execute the same instruction."* True of each issue, not of the
#   program since Volta: threads of a warp may diverge and interleave, each with its own program
#   counter, at the cost that section 6.1 modelled. **Outdated in its strong form.**
# - *"A CPU has 64 cores, a GPU 10,000, with small caches."* An H100 has 16,896 fp32 lanes in
#   132 SMs; an SM, not a lane, is the analogue of a CPU core. And the caches are not small: 50
#   MiB of L2 and 33 MiB of registers. **Counts lanes as cores.**
# - *"Mixed precision because fp16 is fastest."* fp16 and bf16 run at the same tensor-core rate
#   (about 15 times exact fp32 on an H100, twice TF32), and on an H100 FP8 runs at twice that.
#   Mixed precision also halves the bytes of every memory-bound operation, which for most of a
#   network's kernels (section 6.2) matters more than the FLOPs. bf16 has fp32's exponent range,
#   which is why it replaced fp16 and its loss scaling for training. **Half true**: 16 bits is
#   fast; fp16 is not faster than bf16, nor the fastest format an H100 has.
#
# ## Summary

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - NVIDIA. *H100 Tensor Core GPU* datasheet, 2023; *NVIDIA H100 Tensor Core GPU Architecture*
#   whitepaper, 2022.
# - S. Williams, A. Waterman, D. Patterson. Roofline: an insightful visual performance model for
#   multicore architectures. *Communications of the ACM* 52(4), 2009.
# - P. Tillet, H. T. Kung, D. Cox. Triton: an intermediate language and compiler for tiled neural
#   network computations. *MAPL*, 2019. The Triton tutorials (fused softmax, matrix
#   multiplication, layer norm, fused attention) take the same route as this chapter.
# - M. Milakov, N. Gimelshein. Online normalizer calculation for softmax. arXiv:1805.02867, 2018.
# - T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré. FlashAttention: fast and memory-efficient exact
#   attention with IO-awareness. *NeurIPS*, 2022.
# - T. Dao. FlashAttention-2: faster attention with better parallelism and work partitioning.
#   *ICLR*, 2024.
# - V. Volkov. Better performance at lower occupancy. *GPU Technology Conference*, 2010.
# - Z. Jia, M. Maggioni, B. Staiger, D. P. Scarpazza. Dissecting the NVIDIA Volta GPU
#   architecture via microbenchmarking. arXiv:1804.06826, 2018.
# - J. Shah, G. Bikshandi, Y. Zhang, V. Thakkar, P. Ramani, T. Dao. FlashAttention-3: fast and
#   accurate attention with asynchrony and low-precision. *NeurIPS*, 2024.
# - H. He. Making deep learning go brrrr from first principles. Blog post, 2022.
# - NVIDIA. *NVIDIA A100 Tensor Core GPU Architecture* whitepaper, 2020; *A100* datasheet;
#   *CUDA C++ Programming Guide* (technical specifications per compute capability); *Parallel
#   Thread Execution ISA* (`mma`, `wgmma`, `cvt`, `ex2`, `div`).
# - Triton issue 4574: TF32 matrix multiplication is much less accurate than fp16 (truncation
#   of the inputs), 2024.
#
# ## Exercises
#
# **1. A fused epilogue.** A linear layer followed by GELU as two kernels writes its
# $m \times n$ output, reads it back and writes it again. Write a matmul kernel that adds a
# bias and applies $\mathrm{GELU}(x) = \tfrac{x}{2}(1 + \mathrm{erf}(x/\sqrt 2))$ before its
# store, and check it against `F.gelu(a @ b + bias)`.
#
# ```{admonition} Solution
# :class: dropdown
# Keep the tile loop of `matmul_kernel` and change only what happens to the float32 accumulator
# before the store: load the bias for the tile's columns (masked), add it to every row, apply
# GELU with `tl.math.erf`, and store in the output's dtype. The tiles stay in their dtype, so
# that on a GPU `tl.dot` runs fp16 and bf16 on the tensor cores (converting them to fp32 first
# would send the main loop to the FMA units), and the output is allocated in the input dtype:
# a float32 buffer converted afterwards would add back the write and read the fusion saves. The
# saving is one write and one read of the $m \times n$ output per fused epilogue. (In the
# interpreter bf16 needs the two workarounds of section 6.5.)
# ```

# %% tags=["hide-cell"]
if TRITON:

    @triton.jit
    def matmul_bias_gelu_kernel(
        a_ptr,
        b_ptr,
        bias_ptr,
        c_ptr,
        M,
        N,
        K_,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K_, BLOCK_K):
            k = k0 + ks
            a = tl.load(
                a_ptr + rows[:, None] * K_ + k[None, :],
                mask=(rows[:, None] < M) & (k[None, :] < K_),
                other=0.0,
            )
            b = tl.load(
                b_ptr + k[:, None] * N + cols[None, :],
                mask=(k[:, None] < K_) & (cols[None, :] < N),
                other=0.0,
            )
            if UPCAST:  # the interpreter's bf16 dot is wrong (section 6.5); a GPU never takes this
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        out = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
        tl.store(
            c_ptr + rows[:, None] * N + cols[None, :],
            out.to(c_ptr.dtype.element_ty),
            mask=(rows[:, None] < M) & (cols[None, :] < N),
        )

    def linear_gelu(a, b, bias):
        m_, k_ = a.shape
        n_ = b.shape[1]
        interp_bf16 = K.backend() == "interpreter" and a.dtype == torch.bfloat16
        # The output in the input's dtype; only the interpreter's bf16 goes through fp32 (its
        # fp32 -> bf16 cast truncates, section 6.5).
        c = torch.empty(m_, n_, dtype=torch.float32 if interp_bf16 else a.dtype, device=a.device)
        cfg = kernel_configs.matmul_config(m_, n_, k_, a.dtype, K.backend())
        cfg.pop("GROUP_M")  # a plain 2-D grid here; grouped order is left as a further step
        grid = (triton.cdiv(m_, cfg["BLOCK_M"]), triton.cdiv(n_, cfg["BLOCK_N"]))
        matmul_bias_gelu_kernel[grid](
            a, b, bias, c, m_, n_, k_, UPCAST=interp_bf16, PRECISION="ieee", **cfg
        )
        return c.to(a.dtype)  # a no-op except for the interpreter's bf16

    ok = []
    for m_, n_, k_ in [(37, 50, 70), (64, 1, 33)]:
        for t in DTYPES:
            a_, b_, bias_ = (
                rand(m_, k_, dtype=t),
                rand(k_, n_, dtype=t, seed=1),
                rand(n_, dtype=t, seed=2),
            )
            expected = F.gelu(a_.float() @ b_.float() + bias_.float())
            out_ = linear_gelu(a_, b_, bias_)
            ok.append(out_.dtype == t and within(out_, expected.to(t), t) <= 1)
    hamlib.check(
        "exercise 1: matmul + bias + GELU in one kernel equals F.gelu(a @ b + bias) in fp32, "
        "fp16 and bf16",
        all(ok),
    )

# %% [markdown]
# **2. A backward pass for softmax.** For $y = \mathrm{softmax}(x)$ along a row and an upstream
# gradient $g = \partial \mathcal L / \partial y$, show that
# $\partial \mathcal L / \partial x = y \odot (g - \langle g, y\rangle)$, write it as a Triton
# kernel (one program per row) and check it against `torch.autograd`.
#
# ```{admonition} Solution
# :class: dropdown
# $\partial y_i / \partial x_j = y_i(\delta_{ij} - y_j)$, so
# $\sum_i g_i\, \partial y_i/\partial x_j = y_j g_j - y_j \sum_i g_i y_i$. The kernel loads a
# row of $y$ and of $g$, reduces $\langle g, y\rangle$ with `tl.sum`, and stores
# $y(g - \langle g, y\rangle)$: like the forward pass, one read of each input and one write.
# ```

# %% tags=["hide-cell"]
if TRITON:

    @triton.jit
    def softmax_backward_kernel(dx_ptr, y_ptr, g_ptr, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        y = tl.load(y_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
        dx = y * (g - tl.sum(g * y, axis=0))
        tl.store(dx_ptr + row * n_cols + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)

    ok = []
    for rows_, cols_ in [(1, 1), (6, 333), (3, 1024)]:
        for t in (torch.float32, torch.float16):  # bf16 would meet the interpreter's traps
            xg = rand(rows_, cols_).requires_grad_()
            g_ = rand(rows_, cols_, seed=3).to(t)
            y_ = torch.softmax(xg, dim=-1).to(t)
            # autograd in float64 through the softmax of the same (rounded) probabilities
            x64 = y_.double().log().detach().requires_grad_()
            (expected,) = torch.autograd.grad(torch.softmax(x64, dim=-1), x64, g_.double())
            dx_ = torch.empty_like(g_)
            softmax_backward_kernel[(rows_,)](
                dx_, y_, g_, cols_, BLOCK=triton.next_power_of_2(cols_)
            )
            ok.append(within(dx_, expected.to(t), t) <= 1)
    hamlib.check(
        "exercise 2: the softmax backward kernel equals torch.autograd in fp32 and fp16", all(ok)
    )

# %% [markdown]
# **3. When does attention become compute-bound?** With the conventions of `G.op_cost` and
# head_dim 128 in fp16, find the sequence length from which flash attention sits right of the
# H100's ridge point. Does attention with the scores in HBM ever get there?
#
# ```{admonition} Solution
# :class: dropdown
# Per head, flash attention does $4s^2d + 5s^2$ FLOPs on $8sd$ bytes: $I = s/2 + 5s/(8d)$, which
# grows without bound and crosses the ridge at a few hundred tokens (the cell computes it). That
# is the intensity with the minimum traffic; one program's own loads give `BLOCK_M` FLOP/B at
# any length (section 6.2), so the crossing also needs the programs of a head to find its K and
# V in L2.
# With the scores in HBM the bytes are $8sd + 8s^2$, and $I \to (4d + 5)/8 \approx 64.6$ as
# $s \to \infty$: below the ridge at every length. Materialized attention is memory-bound however
# long the sequence.
# ```


# %% tags=["hide-cell"]
def intensity(op, seq):
    flops, nbytes = G.op_cost(op, batch=1, heads=1, seq=seq, head_dim=128)
    return flops / nbytes


crossing = next(s for s in range(1, 10_000) if intensity("attention", s) >= ridge)
limit = (4 * 128 + 5) / 8
print(
    f"flash attention is compute-bound from seq = {crossing}; "
    f"unfused intensity tends to {limit:.1f} FLOP/B (ridge {ridge:.0f})"
)
hamlib.check(
    "exercise 3: flash attention crosses the ridge at s = ceil(ridge / (1/2 + 5/(8d)))",
    crossing == math.ceil(ridge / (0.5 + 5 / (8 * 128))),
)
hamlib.check(
    "exercise 3: with the scores in HBM the intensity stays below (4d + 5)/8 < ridge",
    all(intensity("attention_unfused", s) < limit < ridge for s in [10**3, 10**5, 10**7]),
)

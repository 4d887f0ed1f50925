"""Benchmarks beyond chapter run times, printed by `make bench` (numbers depend on the machine)."""

from __future__ import annotations

import math
import time

import torch
from scipy.integrate import solve_ivp

from hamlib import hamiltonian as hm
from hamlib import kernel_bench, kernels


def batched_pendulum(
    n_traj: int = 10_000, n_steps: int = 1000, h: float = 0.01, scipy_sample: int = 200
) -> dict[str, float]:
    """Leapfrog on n_traj pendulums at once against scipy's solve_ivp one trajectory at a time.

    scipy (DOP853, rtol = atol = 1e-8, over the same time span) is timed on ``scipy_sample``
    trajectories and extrapolated linearly to n_traj.
    """
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    q0 = (2 * torch.rand(n_traj, generator=gen, dtype=torch.float64) - 1) * 2.5
    p0 = torch.zeros_like(q0)
    t0 = time.perf_counter()
    hm.leapfrog(lambda q, p: torch.sin(q), lambda q, p: p, q0, p0, h, n_steps)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in q0[:scipy_sample].tolist():
        solve_ivp(
            lambda t, z: [z[1], -math.sin(z[0])],
            (0, n_steps * h),
            [start, 0.0],
            method="DOP853",
            rtol=1e-8,
            atol=1e-8,
        )
    t_scipy = (time.perf_counter() - t0) / scipy_sample * n_traj
    return {
        "batched_leapfrog_s": t_batch,
        "scipy_one_by_one_s": t_scipy,
        "ratio": t_scipy / t_batch,
    }


def kernel_table() -> dict[str, dict[str, float]]:
    """hamlib.kernels against its baselines on a CUDA GPU; on anything else, say why there is no
    table. (``make gpu-check`` measures the same table and saves it for Chapter 6.)"""
    if kernels.backend() != "cuda":
        print(
            f"kernel table: not measured (backend {kernels.backend()!r}: no CUDA GPU here; "
            "the interpreter's speed means nothing)"
        )
        return {}
    from tools.gpu_check import table

    rows = kernel_bench.benchmark()
    print(f"kernel table on {torch.cuda.get_device_name()} (medians of triton do_bench):")
    print(table(rows))
    return {
        f"kernel {r['kernel']} {r['dtype']} {r['size']}": {
            k: float(r[k]) for k in ("ms", "baseline_ms", "ratio", "rate", "of_peak")
        }
        for r in rows
    }


def run() -> dict[str, dict[str, float]]:
    results = {"pendulum 10,000 x 1,000 leapfrog steps": batched_pendulum()}
    for name, r in results.items():
        print(
            f"{name}: batched {r['batched_leapfrog_s']:.2f} s, scipy one by one "
            f"{r['scipy_one_by_one_s']:.1f} s (extrapolated), ratio {r['ratio']:.0f}x"
        )
    results.update(kernel_table())
    return results

"""hamlib: the shared package behind the book. One module per subject; chapters import it.

    import hamlib
    hamlib.setup()                      # seeds, threads, print precision, figure style
    hamlib.check("a claim", condition)  # prints ✓ claim, or raises ClaimFailed
    hamlib.check("stable", measured=lr * lam, below=2)  # ✓ stable: measured 0.6, held to < 2
    hamlib.approx(loss, ".3f")          # "≈2.986": digits that depend on the processor
    hamlib.show_source(hamlib.geometry.ball_volume)

Subject modules are imported on demand (``from hamlib import geometry`` or
``hamlib.geometry``) so that importing hamlib stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from hamlib.repro import (
    ClaimFailed,
    approx,
    below,
    check,
    claims,
    elapsed,
    progress,
    reset_claims,
    setup,
    show_source,
    summary,
)

__all__ = [
    "ClaimFailed",
    "approx",
    "below",
    "check",
    "claims",
    "elapsed",
    "progress",
    "reset_claims",
    "setup",
    "show_source",
    "summary",
]
__version__ = "0.1.0"

_SUBJECTS = {
    "attention",
    "backend",
    "compress",
    "cuda_c",
    "diffusion",
    "dynamics",
    "geometry",
    "gpu_model",
    "hamiltonian",
    "kernel_bench",
    "kernel_configs",
    "kernels",
    "mcmc",
    "measure",
    "ode",
    "optim",
    "parallel",
    "plotting",
    "repro",
    "tasks",
    "text",
    "transformer",
    "triton_kernels",
    "vi",
}


def __getattr__(name: str) -> Any:
    if name in _SUBJECTS:
        return importlib.import_module(f"hamlib.{name}")
    raise AttributeError(f"module 'hamlib' has no attribute {name!r}")

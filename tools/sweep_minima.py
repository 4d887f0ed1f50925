"""Chapter 3's critical points: the digits network of section 3.2, with weight decay so that a
minimizer exists, driven to a gradient norm below 1e-10 from several initializations. Too slow
for the chapter's minute (L-BFGS needs thousands of iterations on this ill-conditioned loss);
`make sweeps` runs it and writes book/data/optimization_minima.json, and the chapter re-checks
the first point live (its gradient, its Hessian spectrum).

    python -m tools.sweep_minima [--quick] [--out book/data/optimization_minima.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import hamlib
from hamlib import measure, optim, tasks
from tools.sweeps import ROOT, provenance

MINIMA = {"weight_decay": 1e-2, "seeds": list(range(8)), "grad_tol": 1e-10, "n_train": 1000}


def regularized_loss(net: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, wd: float):
    """Cross-entropy plus (wd/2)|theta|^2: the loss whose critical points the file holds."""
    params = list(net.parameters())

    def loss() -> torch.Tensor:
        penalty = sum((p**2).sum() for p in params)
        return torch.nn.functional.cross_entropy(net(X), y) + 0.5 * wd * penalty

    return loss


def minima(cfg: dict) -> list[dict]:
    X, y, _, _ = tasks.digits(cfg["n_train"])
    rows = []
    for seed in cfg["seeds"]:
        t0 = time.perf_counter()
        net = tasks.digits_mlp(seed)
        loss = regularized_loss(net, X, y, cfg["weight_decay"])
        try:
            grad_norm = optim.minimize(loss, list(net.parameters()), grad_tol=cfg["grad_tol"])
            failure = None
        except RuntimeError as exc:  # stopped near a saddle, or did not converge: recorded
            grad_norm, failure = float("nan"), str(exc)
        ev = measure.hessian_spectrum(loss, list(net.parameters()))
        row = {
            "seed": seed,
            "failure": failure,
            "loss": loss().item(),
            "grad_norm": grad_norm,
            "negative_eigenvalues": int((ev < 0).sum()),
            "lambda_min": ev[0].item(),
            "lambda_max": ev[-1].item(),
            "train_acc": (net(X).argmax(1) == y).double().mean().item(),
            "seconds": round(time.perf_counter() - t0, 1),
            # float64 written with repr: the chapter reloads the exact point
            "params": torch.cat([p.detach().reshape(-1) for p in net.parameters()]).tolist(),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = ROOT / "book" / "data" / "optimization_minima.json"
    parser.add_argument("--out", type=Path, default=None, help=f"default: {default}")
    parser.add_argument("--quick", action="store_true", help="one seed on 100 images, for tests")
    args = parser.parse_args(argv)
    if args.out is None:
        if args.quick:  # never overwrite the chapter's data with a test run
            raise SystemExit("--quick writes a test file: give it --out")
        args.out = default
    hamlib.setup()
    cfg = dict(MINIMA)
    if args.quick:
        cfg.update(seeds=[0], n_train=100, grad_tol=1e-8)
    t0 = time.perf_counter()
    report = {"config": cfg, "minima": minima(cfg)}
    report["provenance"] = provenance() | {
        "made_by": "python -m tools.sweep_minima (make sweeps)",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Experiments too slow for a chapter's one-minute budget. `make sweeps` runs them and writes
their results where the chapters read them; the files are committed with the code that made
them, and each chapter re-runs one point live to check it against its file.

    python -m tools.sweeps [--quick] [--part all|phase|seeds|fss] [--threads N]
                           [--out book/data/grokking_phase.json]

Parts (Chapter 7): ``phase``, the 5 x 5 grid of training fraction x weight decay, three seeds per
cell; ``seeds``, 16 seeds at the chapter's point with their logged curves; ``fss``, the training
fraction swept for p = 23, 47 and 97 (finite-size scaling), and ``fss_fine``, a 1% grid across
each of those transitions. About an hour on one thread (``phase`` is two thirds of it).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import hamlib
from hamlib import dynamics, tasks
from tools import notebooks

ROOT = Path(__file__).resolve().parents[1]
# The chapter's configuration (Chapter 7 trains the point train_frac 0.4, weight decay 1, seed 0
# live and checks it against this file). The budget here is 2.5x the chapter's 800 steps.
GROK = {
    "p": 97,
    "train_fracs": [0.2, 0.3, 0.4, 0.5, 0.6],
    "weight_decays": [0.0, 0.1, 0.3, 1.0, 3.0],
    "steps": 2000,
    "lr": 1e-2,
    "d": 32,
    "hidden": 128,
    "seed": 0,
    "every": 25,
    "grokked_at": 0.95,
    "phase_seeds": [0, 1, 2],
    "seeds": list(range(16)),
    "seed_point": {"train_frac": 0.4, "weight_decay": 1.0},
    # finite-size scaling: the same network and budget, the training fraction swept for 3 sizes
    "fss": {
        "ps": [23, 47, 97],
        "train_fracs": [round(0.1 + 0.05 * i, 2) for i in range(15)],  # 0.1 to 0.8
        "weight_decay": 1.0,
        "seeds": [0, 1, 2, 3],
    },
    # then steps of 1% across each transition, placed after the coarse grid above had found it
    # (between the last fraction where no seed passed 10% and the first where all passed 95%)
    "fss_fine_fracs": {
        "23": [0.46, 0.47, 0.48, 0.49, 0.51, 0.52, 0.53, 0.54, 0.56, 0.57, 0.58, 0.59],
        "47": [0.31, 0.32, 0.33, 0.34, 0.36, 0.37, 0.38, 0.39],
        "97": [0.21, 0.22, 0.23, 0.24, 0.26, 0.27, 0.28, 0.29],
    },
}


def first(values: list[float], steps: list[int], level: float) -> int | None:
    return next((s for s, v in zip(steps, values, strict=True) if v >= level), None)


CURVES = ("train_acc", "test_acc", "weight_norm", "embed_rank")


def run(cfg: dict, frac: float, wd: float, seed: int, p: int | None = None) -> dynamics.Tracker:
    return tasks.train_modular(
        p=cfg["p"] if p is None else p,
        train_frac=frac,
        weight_decay=wd,
        steps=cfg["steps"],
        lr=cfg["lr"],
        d=cfg["d"],
        hidden=cfg["hidden"],
        seed=seed,
        every=cfg["every"],
        stop_at=0.99,
    )


def grokking_seeds(cfg: dict) -> list[dict]:
    """The seed spread at one point, with the logged curves to locate each transition."""
    rows = []
    for seed in cfg["seeds"]:
        tr = run(cfg, cfg["seed_point"]["train_frac"], cfg["seed_point"]["weight_decay"], seed)
        test, train = tr.values["test_acc"], tr.values["train_acc"]
        row = {
            "seed": seed,
            "step_train_99": first(train, tr.steps, 0.99),
            "step_test_95": first(test, tr.steps, 0.95),
            "steps": tr.steps,
        }
        curves = {name: [round(v, 4) for v in tr.values[name]] for name in CURVES}
        rows.append(row | curves)
        print(json.dumps(row | {"steps": len(tr.steps)}), flush=True)
    return rows


def summary(cfg: dict, tr: dynamics.Tracker, seconds: float) -> dict:
    """What a phase classification needs from one run: when the training pairs were fitted, when
    the test pairs were, and how far each got."""
    test, train = tr.values["test_acc"], tr.values["train_acc"]
    return {
        "grokked": max(test) >= cfg["grokked_at"],
        "step_train_99": first(train, tr.steps, 0.99),
        "step_test_95": first(test, tr.steps, 0.95),
        "last_step": tr.steps[-1],
        "max_test_acc": round(max(test), 4),
        "final_train_acc": round(train[-1], 4),
        "final_test_acc": round(test[-1], 4),
        "seconds": round(seconds, 1),
    }


def grokking_phase(cfg: dict) -> list[dict]:
    rows = []
    for frac in cfg["train_fracs"]:
        for wd in cfg["weight_decays"]:
            for seed in cfg["phase_seeds"]:
                t0 = time.perf_counter()
                tr = run(cfg, frac, wd, seed)
                row = {"train_frac": frac, "weight_decay": wd, "seed": seed}
                rows.append(row | summary(cfg, tr, time.perf_counter() - t0))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def finite_size(cfg: dict, fine: bool = False) -> list[dict]:
    """The training fraction swept at several p: where generalization appears within the budget,
    and how sharply, as the problem grows. ``fine``: the 1% grid across each transition."""
    fss, rows = cfg["fss"], []
    for p in fss["ps"]:
        fracs = cfg["fss_fine_fracs"][str(p)] if fine else fss["train_fracs"]
        for frac in fracs:
            for seed in fss["seeds"]:
                t0 = time.perf_counter()
                tr = run(cfg, frac, fss["weight_decay"], seed, p=p)
                row = {"p": p, "train_frac": frac, "seed": seed}
                rows.append(row | summary(cfg, tr, time.perf_counter() - t0))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def finite_size_fine(cfg: dict) -> list[dict]:
    return finite_size(cfg, fine=True)


PARTS = {  # fastest first
    "seeds": grokking_seeds,
    "fss": finite_size,
    "fss_fine": finite_size_fine,
    "phase": grokking_phase,
}


def provenance() -> dict:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    return {
        "made_by": "python -m tools.sweeps (make sweeps)",
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "hamlib", "tools")),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": notebooks.executed_on(),  # a live run on another one drifts (Chapter 7)
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "data" / "grokking_phase.json")
    parser.add_argument("--quick", action="store_true", help="a 2 x 2 grid, for testing")
    parser.add_argument(
        "--part",
        choices=["all", *PARTS],
        default="all",
        help="re-run one part and keep the others from the existing --out file",
    )
    parser.add_argument("--threads", type=int, default=None, help="default: hamlib.setup's")
    args = parser.parse_args(argv)
    hamlib.setup() if args.threads is None else hamlib.setup(threads=args.threads)
    cfg = dict(GROK)
    if args.quick:
        cfg.update(p=23, train_fracs=[0.3, 0.6], weight_decays=[0.0, 1.0], steps=200, every=50)
        cfg.update(seeds=[0, 1], phase_seeds=[0, 1])
        fss = {"ps": [11, 23], "train_fracs": [0.4, 0.7], "weight_decay": 1.0, "seeds": [0]}
        cfg.update(fss=fss, fss_fine_fracs={"11": [0.5], "23": [0.5]})
    old = json.loads(args.out.read_text()) if args.part != "all" else {}
    if old and old["config"] != cfg:
        raise SystemExit(f"{args.out} was made with another configuration: use --part all")
    report = {"config": cfg, "provenance": old.get("provenance", {})}
    for part, make in PARTS.items():
        if args.part in ("all", part):
            t0 = time.perf_counter()
            report[part] = make(cfg)
            report["provenance"][part] = provenance() | {
                "seconds": round(time.perf_counter() - t0, 1)
            }
        else:
            report[part] = old[part]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} (parts re-run: {args.part})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

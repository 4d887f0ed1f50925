"""Chapter 8's models trained at several budgets over seeds: too slow for the chapter's minute.
`make sweeps` runs it and writes book/data/diffusion_runs.json; the chapter trains the first seed
at one budget live, with the configuration read from that file, and checks it against the spread
stored here.

Parts (each rewritable alone with --part, the others kept from the existing file):
- ``testbed``: on the 2-D mixture, a diffusion model (VP, predicts ε), a flow-matching model
  (straight path, predicts the velocity) and its reflow, at equal network and training budget;
  the kernel two-sample distance of their samples to the exact distribution at 1-32 steps (the
  diffusion model both on its own uniform grid and on the flow's noise levels).
- ``digits``: class-conditional diffusion on scikit-learn's 8x8 digits, in pixel space and in the
  latent space of a VAE (Chapter 2's), at two training lengths: a digits classifier's accuracy
  on the samples per guidance scale, and their distance to the nearest training image.

    python -m tools.sweep_diffusion [--quick --out FILE] [--part all|PART] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import hamlib
from hamlib import diffusion as D
from tools.sweeps import ROOT, provenance

RUNS = {
    "testbed": {
        "mixture": {"k": 6, "radius": 2.0, "std": 0.15},
        "n_data": 20000,
        "data_seed": 1,
        "net": {"hidden": 64, "depth": 3},
        "batch": 128,
        "lr": 3e-3,
        "t_min": 1e-3,
        "budgets": [500, 1000, 2000, 4000, 8000],
        "live_budget": 2000,
        "nfes": [1, 2, 4, 8, 16, 32],
        "n_eval": 2000,
        "eval_seed": 5,
        "bandwidth": 0.3,
        "reflow_pairs": 20000,
        "reflow_steps": 64,
    },
    "digits": {
        "n_train": 1500,
        "net": {"hidden": 512, "depth": 3},
        "batch": 128,
        "lr": 1e-3,
        "steps": [400, 2000, 6000],
        "live_steps": 400,
        "shown": {"steps": 6000, "seed": 0, "guidance": [0.0, 1.0, 3.0]},
        "latent": 8,
        "vae_epochs": 60,
        "guidance": [0.0, 1.0, 2.0, 3.0, 5.0],
        "per_class": 20,
        "sample_steps": 50,
        "eval_seed": 1,
    },
    "seeds": [0, 1, 2],
}


# ----------------------------------------------------------------------------- the 2-D testbed
def testbed_models(cfg: dict, steps: int, seed: int) -> dict[str, torch.nn.Module]:
    """The three models of the testbed at one budget: 'diffusion', 'flow', 'reflow' (the flow
    model trained ``steps`` more on its own (sample, noise) pairs)."""
    mix = D.ring_mixture(**cfg["mixture"])
    data = mix.sample(cfg["n_data"], torch.Generator().manual_seed(cfg["data_seed"])).float()
    vp, line = D.Schedule.vp(), D.Schedule.linear()
    common = {"steps": steps, "batch": cfg["batch"], "lr": cfg["lr"], "t_min": cfg["t_min"]}
    models: dict[str, torch.nn.Module] = {}
    for name, schedule, kind in (("diffusion", vp, "eps"), ("flow", line, "velocity")):
        torch.manual_seed(seed)
        net = D.TimeMLP(2, **cfg["net"])
        D.train(net, data, schedule, kind, generator=torch.Generator().manual_seed(seed), **common)
        models[name] = net
    models["reflow"] = D.reflow(
        models["flow"], cfg["reflow_pairs"], cfg["reflow_steps"], seed=seed, **common
    )
    return models


def digits_run(cfg: dict, steps: int, seed: int) -> dict:
    """Train the two digits models (hamlib.diffusion.train_digits) and score them; for the run
    the chapter shows, keep one sample per class and guidance scale (pixels, 2 decimals)."""
    models = D.train_digits(
        steps,
        seed,
        cfg["n_train"],
        cfg["net"]["hidden"],
        cfg["net"]["depth"],
        cfg["batch"],
        cfg["lr"],
        cfg["latent"],
        cfg["vae_epochs"],
    )
    row = D.score_digits(
        models, cfg["guidance"], cfg["per_class"], cfg["sample_steps"], cfg["eval_seed"]
    )
    shown = cfg["shown"]
    if steps == shown["steps"] and seed == shown["seed"]:
        for space in ("pixel", "latent"):
            row[space]["samples"] = [
                [
                    round(v, 2)
                    for v in D.sample_digits(
                        models, space, w, 1, cfg["sample_steps"], cfg["eval_seed"]
                    )[0]
                    .flatten()
                    .tolist()
                ]
                for w in shown["guidance"]
            ]
    return row


# ----------------------------------------------------------------------------- driver
def run_part(part: str, cfg: dict) -> list[dict]:
    rows = []
    for seed in cfg["seeds"]:
        if part == "testbed":
            for steps in cfg["testbed"]["budgets"]:
                models = testbed_models(cfg["testbed"], steps, seed)
                tb = cfg["testbed"]
                scores = D.score_testbed(
                    models,
                    D.ring_mixture(**tb["mixture"]),
                    tb["nfes"],
                    tb["n_eval"],
                    tb["eval_seed"],
                    tb["bandwidth"],
                    tb["t_min"],
                )
                row = {"seed": seed, "steps": steps} | scores
                print(json.dumps(row), flush=True)
                rows.append(row)
        else:
            for steps in cfg["digits"]["steps"]:
                row = {"seed": seed, "steps": steps} | digits_run(cfg["digits"], steps, seed)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


PARTS = ("testbed", "digits")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = ROOT / "book" / "data" / "diffusion_runs.json"
    parser.add_argument("--out", type=Path, default=None, help=f"default: {default}")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything, for tests")
    parser.add_argument("--part", choices=("all", *PARTS), default="all")
    parser.add_argument("--threads", type=int, default=None, help="default: hamlib.setup's")
    args = parser.parse_args(argv)
    if args.out is None:
        if args.quick:  # never overwrite the chapter's data with a test run
            raise SystemExit("--quick writes a test file: give it --out")
        args.out = default
    hamlib.setup() if args.threads is None else hamlib.setup(threads=args.threads)
    cfg = json.loads(json.dumps(RUNS))
    if args.quick:
        cfg["testbed"].update(budgets=[20], n_eval=200, reflow_pairs=200, reflow_steps=4)
        cfg["testbed"].update(n_data=500, nfes=[1, 4])
        cfg["digits"].update(steps=[20], vae_epochs=1, per_class=2, sample_steps=4, live_steps=20)
        cfg["digits"]["shown"] = {"steps": 20, "seed": 0, "guidance": [1.0]}
        cfg["digits"].update(guidance=[1.0, 2.0])
        cfg["seeds"] = [0]
    report = json.loads(args.out.read_text()) if args.part != "all" and args.out.exists() else {}
    # the parts kept must have been made with the configuration that is stored
    rerun = PARTS if args.part == "all" else (args.part,)
    kept = [key for key in report.get("config", {}) if key not in rerun]
    if report and any(cfg.get(key) != report["config"][key] for key in kept):
        raise SystemExit(f"{args.out} was made with another configuration: run --part all")
    report["config"] = cfg
    for part in PARTS if args.part == "all" else (args.part,):
        t0 = time.perf_counter()
        report[part] = run_part(part, cfg)
        report.setdefault("provenance", {})[part] = provenance() | {
            "made_by": f"python -m tools.sweep_diffusion --part {part} (make sweeps)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

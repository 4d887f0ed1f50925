"""Chapter 4's GPT trained longer and in variants, over seeds: too slow for the chapter's minute.
`make sweeps` runs it and writes book/data/transformer_runs.json; the chapter trains the
baseline's first seed live and checks it against the spread stored here.

Parts (each rewritable alone with --part, the others kept from the existing file):
- ``variants``: the chapter's recipe (900 steps) for the baseline and nine variants (GQA, MQA,
  SwiGLU, three position schemes, post-norm, the two readings of "Hamiltonian attention").
- ``long``: the same recipe over 2,700 steps for six of them: does a verdict survive training?
- ``warmup``: a 4-layer stack, pre- and post-norm, with and without learning-rate warm-up.
- ``stability``: the baseline and the Hamiltonian variants at a 3x larger learning rate.
- ``control``: a learnable attention temperature alone (the Hamiltonian formula without its
  norm terms), at both learning rates.
- ``longer_warmup``: the ``warmup`` stacks with a quarter of the steps warming up.

    python -m tools.sweep_gpt [--quick --out FILE] [--part all|PART] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import hamlib
from hamlib import text as TX
from hamlib import transformer as T
from tools.sweeps import ROOT, provenance

BASE = {"block_size": 64, "d_model": 64, "n_layers": 2, "n_heads": 4}
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "GQA, 2 kv heads": {"n_kv_heads": 2},
    "MQA, 1 kv head": {"n_kv_heads": 1},
    "SwiGLU": {"ffn": "swiglu"},
    "RoPE": {"positions": "rope"},
    "no positions": {"positions": "none"},
    "sinusoidal": {"positions": "sinusoidal"},
    "post-norm": {"norm": "post"},
    "H-attention, formula": {"attention": "hamiltonian-formula"},
    "H-attention, code": {"attention": "hamiltonian-code"},
    "learned temperature": {"attention": "temperature"},
}
RUNS = {
    "recipe": {"steps": 900, "batch_size": 16, "lr": 1e-2, "warmup": 0.05, "every": 100},
    "seeds": [0, 1, 2],
    "long": {
        "steps": 2700,
        "every": 300,
        "variants": [
            "baseline",
            "GQA, 2 kv heads",
            "MQA, 1 kv head",
            "SwiGLU",
            "H-attention, formula",
            "H-attention, code",
        ],
    },
    "warmup": {"n_layers": 4, "steps": 600, "warmups": [0.0, 0.05], "norms": ["pre", "post"]},
    "stability": {
        "lr": 3e-2,
        "variants": ["baseline", "H-attention, formula", "H-attention, code"],
    },
    "extrapolate": {"variants": ["RoPE", "no positions"], "context": 256, "bins": 8},
    "control": {"variant": "learned temperature", "lrs": [1e-2, 3e-2]},
    "longer_warmup": {"warmup": 0.25, "norms": ["pre", "post"]},
}


def data() -> tuple[TX.CharTokenizer, torch.Tensor, torch.Tensor]:
    """The chapter's split: the first 90% of the text for training, the rest for validation."""
    text = TX.load_text()
    tok = TX.CharTokenizer(text)
    ids = tok.encode(text)
    split = int(0.9 * len(ids))
    return tok, ids[:split], ids[split:]


evaluate = TX.token_losses  # cross-entropy of every position, (windows, context)


def block_gradients(model: T.GPT, ids: torch.Tensor) -> list[float]:
    """|dL/dtheta_l| of each block on a fixed batch of 16 windows (the first of the text)."""
    x = ids[: 16 * 64].view(16, 64)
    y = ids[1 : 16 * 64 + 1].view(16, 64)
    model.zero_grad()
    loss = model(x, y)[1]
    assert loss is not None
    loss.backward()
    norms = [
        torch.cat([p.grad.flatten() for p in b.parameters() if p.grad is not None]).norm().item()
        for b in model.blocks
    ]
    model.zero_grad()
    return norms


def train(
    vocab: int, train_ids, val_ids, extra: dict, seed: int, steps: int, every: int, **recipe
) -> tuple[T.GPT, dict]:
    torch.manual_seed(seed)
    model = T.GPT(T.GPTConfig(vocab_size=vocab, **(BASE | extra)))
    curve: list[tuple[int, float]] = []

    def record(step: int) -> None:
        if (step + 1) % every == 0:
            curve.append((step + 1, evaluate(model, val_ids).mean().item()))

    t0 = time.perf_counter()
    losses = TX.train_gpt(
        model,
        train_ids,
        steps=steps,
        generator=torch.Generator().manual_seed(1 + seed),
        callback=record,
        **recipe,
    )
    row = {
        "seed": seed,
        "steps": steps,
        "val_loss": curve[-1][1],
        "val_curve": [[s, round(v, 4)] for s, v in curve],
        "train_loss_last_50": sum(losses[-50:]) / len(losses[-50:]),
        "diverged": not all(math.isfinite(v) for v in losses),
        "block_grad_norms": block_gradients(model, train_ids),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if model.config.attention != "softmax":
        row["alpha_beta_gamma"] = [
            [
                round(getattr(b.attn, n).item(), 4) if hasattr(b.attn, n) else None
                for n in ("alpha", "beta", "gamma")
            ]
            for b in model.blocks
        ]
    return model, row


def log(part: str, name: str, row: dict) -> dict:
    short = {k: v for k, v in row.items() if k not in ("val_curve", "block_grad_norms")}
    print(json.dumps({"part": part, "variant": name} | short), flush=True)
    return {"variant": name} | row


def run_part(part: str, cfg: dict) -> list[dict]:
    tok, train_ids, val_ids = data()
    recipe = {k: v for k, v in cfg["recipe"].items() if k not in ("steps", "every")}
    steps, every = cfg["recipe"]["steps"], cfg["recipe"]["every"]
    rows = []
    if part == "variants":
        for name, extra in VARIANTS.items():
            for seed in cfg["seeds"]:
                model, row = train(
                    tok.vocab_size, train_ids, val_ids, extra, seed, steps, every, **recipe
                )
                if name in cfg["extrapolate"]["variants"]:
                    per_pos = evaluate(model, val_ids, cfg["extrapolate"]["context"]).mean(0)
                    bins = per_pos.view(cfg["extrapolate"]["bins"], -1).mean(1)
                    row["loss_by_position_bin"] = [round(v, 4) for v in bins.tolist()]
                rows.append(log(part, name, row))
    elif part == "long":
        for name in cfg["long"]["variants"]:
            for seed in cfg["seeds"]:
                _, row = train(
                    tok.vocab_size,
                    train_ids,
                    val_ids,
                    VARIANTS[name],
                    seed,
                    cfg["long"]["steps"],
                    cfg["long"]["every"],
                    **recipe,
                )
                rows.append(log(part, name, row))
    elif part in ("warmup", "longer_warmup"):  # longer_warmup: the same stacks, 25% warming up
        w = cfg["warmup"]
        norms = cfg[part]["norms"]
        warmups = w["warmups"] if part == "warmup" else [cfg[part]["warmup"]]
        for norm in norms:
            for warm in warmups:
                for seed in cfg["seeds"]:
                    extra = {"norm": norm, "n_layers": w["n_layers"]}
                    rec = recipe | {"warmup": warm}
                    _, row = train(
                        tok.vocab_size, train_ids, val_ids, extra, seed, w["steps"], every, **rec
                    )
                    rows.append(log(part, f"{norm}-norm, warm-up {warm}", row | {"warmup": warm}))
    elif part == "control":  # the Hamiltonian formula's gamma term alone, at both rates
        for lr in cfg["control"]["lrs"]:
            for seed in cfg["seeds"]:
                rec = recipe | {"lr": lr}
                name = cfg["control"]["variant"]
                _, row = train(
                    tok.vocab_size, train_ids, val_ids, VARIANTS[name], seed, steps, every, **rec
                )
                rows.append(log(part, name, row | {"lr": lr}))
    elif part == "stability":
        for name in cfg["stability"]["variants"]:
            for seed in cfg["seeds"]:
                rec = recipe | {"lr": cfg["stability"]["lr"]}
                _, row = train(
                    tok.vocab_size, train_ids, val_ids, VARIANTS[name], seed, steps, every, **rec
                )
                rows.append(log(part, name, row))
    return rows


PARTS = ("variants", "stability", "warmup", "long", "control", "longer_warmup")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = ROOT / "book" / "data" / "transformer_runs.json"
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
        cfg["recipe"].update(steps=20, every=10)
        cfg["long"].update(steps=30, every=10, variants=["baseline", "H-attention, code"])
        cfg["warmup"].update(steps=20, norms=["post"])
        cfg["seeds"] = [0]
    report = json.loads(args.out.read_text()) if args.part != "all" and args.out.exists() else {}
    # a part may be added to the configuration; what the stored parts were made with may not change
    if report and any(cfg.get(key) != value for key, value in report["config"].items()):
        raise SystemExit(f"{args.out} was made with another configuration: run --part all")
    report["config"] = cfg
    for part in PARTS if args.part == "all" else (args.part,):
        t0 = time.perf_counter()
        report[part] = run_part(part, cfg)
        report.setdefault("provenance", {})[part] = provenance() | {
            "made_by": f"python -m tools.sweep_gpt --part {part} (make sweeps)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

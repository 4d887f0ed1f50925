"""Chapter 10's models and the experiments too slow for its minute. `make sweeps` runs it and
writes book/data/compress_runs.json and the weights book/data/compress_models.pt; the chapter
loads the weights, re-runs one point of each experiment live and checks it against the spread
stored here.

Parts (each rewritable alone with --part, the others kept from the existing file):
- ``models``: the target GPT (4 layers, width 96, 128-token context, about 0.46M parameters)
  and the draft GPT (1 layer, width 32) trained on shakespeare.txt; their weights go to the
  ``.pt`` file, their validation losses here.
- ``ptq``: round to nearest, GPTQ and AWQ at 8/4/3/2 bits, per channel (absmax) and in groups of
  32 (zero-point), on three calibration sets: the target's validation loss after each.
- ``bitnet``: the Chapter 4 recipe for GPTs of width 32, 64 and 128, full precision against
  BitNet b1.58 (ternary weights, 8-bit activations): each kind and width at three learning
  rates on seed 0, two more seeds at its best; every fp32 model is also made BitNet after
  training, without training.
- ``lora``: the target fine-tuned on macbeth.txt: LoRA at ranks 1, 4, 16, 64, full fine-tuning
  and QLoRA (LoRA on the NF4 base); each at three (full) or four learning rates on seed 0, then
  two more seeds at the best; validation loss on both texts, and the singular values of full
  fine-tuning's weight updates.

    python -m tools.sweep_compress [--quick --out FILE] [--part all|PART] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import hamlib
from hamlib import compress as C
from hamlib import text as TX
from hamlib import transformer as T
from tools.sweeps import ROOT, provenance

RUNS: dict = {
    "target": {"block_size": 128, "d_model": 96, "n_layers": 4, "n_heads": 4},
    "draft": {"block_size": 128, "d_model": 32, "n_layers": 1, "n_heads": 2},
    "train": {"steps": 2000, "batch_size": 32, "lr": 3e-3, "warmup": 0.05, "seed": 0},
    "eval_tokens": 16384,
    "ptq": {
        "methods": ["rtn", "gptq", "awq"],
        "bits": [8, 4, 3, 2],
        "settings": {
            "channel": {"granularity": "channel", "symmetric": True},
            "group32": {"granularity": "group", "group_size": 32, "symmetric": False},
        },
        "calibration_seeds": [0, 1, 2],
        "calibration_windows": 32,
    },
    "bitnet": {
        "widths": [32, 64, 128],
        "shape": {"block_size": 64, "n_layers": 2, "n_heads": 4},
        "steps": 900,
        "batch_size": 16,
        "lrs": [3e-3, 1e-2, 3e-2],  # each kind and width: seed 0 at each, the others at the best
        "warmup": 0.05,
        "every": 100,
        "seeds": [0, 1, 2],
        # the point the chapter re-runs live: the narrowest ternary model, a shorter run
        "spot": {"width": 32, "steps": 300, "lr": 1e-2, "seeds": [0, 1, 2]},
    },
    "lora": {
        "ranks": [1, 4, 16, 64],
        "qlora_rank": 16,
        "steps": 200,
        "batch_size": 16,
        # each kind at three rates bracketing its best (seed 0 picks, the other seeds follow)
        "lrs": {
            "full": [3e-4, 1e-3, 3e-3],
            "lora": [3e-3, 1e-2, 3e-2],
            "qlora": [3e-3, 1e-2, 3e-2],
        },
        "seeds": [0, 1, 2],
        "warmup": 0.05,
        # the point the chapter re-runs live: a short LoRA run, three seeds for its spread
        "spot": {"rank": 4, "steps": 40, "lr": 1e-2, "seeds": [0, 1, 2]},
    },
}


def texts() -> tuple[TX.CharTokenizer, dict[str, torch.Tensor]]:
    """One tokenizer for both texts; each split 90% / 10% (training / validation)."""
    tok, split = TX.split_texts(["shakespeare", "macbeth"])
    return tok, {k.replace("shakespeare", "plays"): v for k, v in split.items()}


def val_loss(model: T.GPT, ids: torch.Tensor, tokens: int) -> float:
    return TX.token_losses(model, ids[: tokens + 1]).mean().item()


def models_path(out: Path) -> Path:
    return out.with_name(out.stem.replace("_runs", "") + "_models.pt")


def load_models(out: Path, cfg: dict, vocab: int) -> dict[str, T.GPT]:
    state = torch.load(models_path(out), weights_only=True)
    made = {}
    for name in ("target", "draft"):
        model = T.GPT(T.GPTConfig(vocab_size=vocab, **cfg[name]))
        model.load_state_dict(state[name])
        made[name] = model.eval()
    return made


def part_models(cfg: dict, out: Path) -> dict:
    tok, ids = texts()
    rows: dict = {}
    state = {}
    for name in ("target", "draft"):
        torch.manual_seed(cfg["train"]["seed"])
        model = T.GPT(T.GPTConfig(vocab_size=tok.vocab_size, **cfg[name]))
        t0 = time.perf_counter()
        rec = {k: v for k, v in cfg["train"].items() if k != "seed"}
        losses = TX.train_gpt(model, ids["plays_train"], **rec)
        rows[name] = {
            "parameters": T.count_parameters(model),
            "val_loss": val_loss(model, ids["plays_val"], cfg["eval_tokens"]),
            "macbeth_val_loss": val_loss(model, ids["macbeth_val"], cfg["eval_tokens"]),
            "train_loss_last_50": sum(losses[-50:]) / len(losses[-50:]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps({"part": "models", name: rows[name]}), flush=True)
        state[name] = model.state_dict()
    models_path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, models_path(out))
    return rows


def calibration(ids: torch.Tensor, windows: int, context: int, seed: int) -> torch.Tensor:
    """``windows`` random windows of the training text (the calibration set of seed ``seed``)."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - context, (windows,), generator=g)
    return torch.stack([ids[s : s + context] for s in starts.tolist()])


def part_ptq(cfg: dict, out: Path) -> list[dict]:
    tok, ids = texts()
    base = load_models(out, cfg, tok.vocab_size)["target"]
    p = cfg["ptq"]
    rows = []
    for setting, kw in p["settings"].items():
        for bits in p["bits"]:
            for method in p["methods"]:
                seeds = [None] if method == "rtn" else p["calibration_seeds"]
                for seed in seeds:
                    model = copy.deepcopy(base)
                    calib = None
                    if seed is not None:
                        calib = calibration(
                            ids["plays_train"],
                            p["calibration_windows"],
                            cfg["target"]["block_size"],
                            seed,
                        )
                    t0 = time.perf_counter()
                    C.quantize_model(model, method, bits, calib, **kw)
                    row = {
                        "setting": setting,
                        "bits": bits,
                        "method": method,
                        "calibration_seed": seed,
                        "val_loss": val_loss(model, ids["plays_val"], cfg["eval_tokens"]),
                        "seconds": round(time.perf_counter() - t0, 2),
                    }
                    print(json.dumps({"part": "ptq"} | row), flush=True)
                    rows.append(row)
    return rows


def _bitnet_run(cfg: dict, ids: dict, vocab: int, width: int, kind: str, lr: float, seed: int):
    b = cfg["bitnet"]
    torch.manual_seed(seed)
    model = T.GPT(T.GPTConfig(vocab, d_model=width, **b["shape"]))
    if kind == "ternary":
        C.to_bitnet(model)
    curve: list[list[float]] = []

    def record(step: int) -> None:
        if (step + 1) % b["every"] == 0:
            curve.append(
                [step + 1, round(val_loss(model, ids["plays_val"], cfg["eval_tokens"]), 4)]
            )

    t0 = time.perf_counter()
    TX.train_gpt(
        model,
        ids["plays_train"],
        b["steps"],
        batch_size=b["batch_size"],
        lr=lr,
        warmup=b["warmup"],
        callback=record,
    )
    row = {
        "width": width,
        "kind": kind,
        "lr": lr,
        "seed": seed,
        "parameters": T.count_parameters(model),
        "val_loss": curve[-1][1],
        "val_curve": curve,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if kind == "fp32":  # the trained fp32 model made BitNet afterwards, without training
        after = C.to_bitnet(copy.deepcopy(model))
        row["posthoc_ternary_val_loss"] = val_loss(after, ids["plays_val"], cfg["eval_tokens"])
    print(json.dumps({"part": "bitnet"} | {k: row[k] for k in row if k != "val_curve"}))
    return row


def part_bitnet(cfg: dict, out: Path) -> dict:
    tok, ids = texts()
    b = cfg["bitnet"]
    rows = []
    for width in b["widths"]:
        for kind in ("fp32", "ternary"):
            first = [
                _bitnet_run(cfg, ids, tok.vocab_size, width, kind, lr, b["seeds"][0])
                for lr in b["lrs"]
            ]
            best = min(first, key=lambda r: r["val_loss"])
            rows += first
            rows += [
                _bitnet_run(cfg, ids, tok.vocab_size, width, kind, best["lr"], seed)
                for seed in b["seeds"][1:]
            ]
    spot = []
    for seed in b["spot"]["seeds"]:
        torch.manual_seed(seed)
        shape = b["shape"] | {"d_model": b["spot"]["width"]}
        model = C.to_bitnet(T.GPT(T.GPTConfig(tok.vocab_size, **shape)))
        TX.train_gpt(
            model,
            ids["plays_train"],
            b["spot"]["steps"],
            batch_size=b["batch_size"],
            lr=b["spot"]["lr"],
            warmup=b["warmup"],
        )
        spot.append(val_loss(model, ids["plays_val"], cfg["eval_tokens"]))
    print(json.dumps({"part": "bitnet", "spot": spot}), flush=True)
    return {"runs": rows, "spot": spot}


def finetune(
    base: T.GPT, kind: str, rank: int, lr: float, seed: int, cfg: dict, ids: dict, steps=None
):
    """Fine-tune a copy of ``base`` on macbeth: ``kind`` full, lora or qlora."""
    lo = cfg["lora"]
    model = copy.deepcopy(base).train()
    torch.manual_seed(seed)
    if kind == "qlora":
        C.quantize_base(model)
    if kind in ("lora", "qlora"):
        C.add_lora(model, rank)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(seed)
    TX.train_gpt(
        model,
        ids["macbeth_train"],
        lo["steps"] if steps is None else steps,
        batch_size=lo["batch_size"],
        lr=lr,
        weight_decay=0.0,
        warmup=lo["warmup"],
        generator=g,
    )
    return model, trainable


def part_lora(cfg: dict, out: Path) -> dict:
    tok, ids = texts()
    base = load_models(out, cfg, tok.vocab_size)["target"]
    lo = cfg["lora"]
    runs = [("full", 0)] + [("lora", r) for r in lo["ranks"]] + [("qlora", lo["qlora_rank"])]
    rows = []
    spectra: dict = {}
    for kind, rank in runs:

        def run(lr: float, seed: int, kind: str = kind, rank: int = rank):
            t0 = time.perf_counter()
            model, trainable = finetune(base, kind, rank, lr, seed, cfg, ids)
            row = {
                "kind": kind,
                "rank": rank,
                "lr": lr,
                "seed": seed,
                "trainable": trainable,
                "macbeth_val_loss": val_loss(model, ids["macbeth_val"], cfg["eval_tokens"]),
                "plays_val_loss": val_loss(model, ids["plays_val"], cfg["eval_tokens"]),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps({"part": "lora"} | row), flush=True)
            rows.append(row)
            return row, model

        best = None
        for lr in lo["lrs"][kind]:  # seed 0 at each rate, then the other seeds at the best
            row, model = run(lr, lo["seeds"][0])
            if best is None or row["macbeth_val_loss"] < best[0]:
                best = (row["macbeth_val_loss"], lr, model)
        assert best is not None
        for seed in lo["seeds"][1:]:
            run(best[1], seed)
        if kind == "full":  # the singular values of each weight update, seed 0 at the best rate
            tuned = dict(best[2].named_parameters())
            for name, p in base.named_parameters():
                if name.startswith("blocks.") and p.dim() == 2:
                    delta = (tuned[name].detach() - p.detach()).double()
                    spectra[name] = [float(f"{s:.5g}") for s in torch.linalg.svdvals(delta)]
    sp = lo["spot"]
    spot = []
    for seed in sp["seeds"]:
        model, _ = finetune(base, "lora", sp["rank"], sp["lr"], seed, cfg, ids, sp["steps"])
        spot.append(val_loss(model, ids["macbeth_val"], cfg["eval_tokens"]))
    print(json.dumps({"part": "lora", "spot": spot}), flush=True)
    return {"runs": rows, "full_update_singular_values": spectra, "spot": spot}


PARTS = {"models": part_models, "ptq": part_ptq, "bitnet": part_bitnet, "lora": part_lora}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    default = ROOT / "book" / "data" / "compress_runs.json"
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
        cfg["train"].update(steps=5)
        cfg["eval_tokens"] = 512
        cfg["ptq"].update(bits=[4], calibration_seeds=[0], calibration_windows=2)
        cfg["bitnet"].update(widths=[32], steps=4, every=2, seeds=[0, 1], lrs=[1e-2, 3e-2])
        cfg["bitnet"]["spot"].update(steps=2, seeds=[0])
        cfg["lora"].update(ranks=[2], steps=3, seeds=[0, 1])
        cfg["lora"]["lrs"] = {k: v[:2] for k, v in cfg["lora"]["lrs"].items()}
        cfg["lora"]["spot"].update(steps=2)
    report = json.loads(args.out.read_text()) if args.part != "all" and args.out.exists() else {}
    if report and any(cfg.get(key) != value for key, value in report["config"].items()):
        raise SystemExit(f"{args.out} was made with another configuration: run --part all")
    report["config"] = cfg
    for part in PARTS if args.part == "all" else (args.part,):
        t0 = time.perf_counter()
        report[part] = PARTS[part](cfg, args.out)
        report.setdefault("provenance", {})[part] = provenance() | {
            "made_by": f"python -m tools.sweep_compress --part {part} (make sweeps)",
            "seconds": round(time.perf_counter() - t0, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sweep script runs end to end (on a tiny grid) and writes what the chapters read.

sweeps.main calls hamlib.setup() (seeds, threads, print options, figure style): the autouse
fixture of tests/conftest.py restores that global state after the test."""

import json

import pytest

from tools import sweeps


def test_quick_sweep_writes_a_complete_report(tmp_path):
    out = tmp_path / "phase.json"
    assert sweeps.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["phase"]) == 8  # 2 x 2 cells x 2 seeds
    assert all(report["provenance"][part]["commit"] for part in sweeps.PARTS)
    row = report["phase"][0]
    assert set(row) >= {"train_frac", "weight_decay", "seed", "grokked", "step_test_95"}
    assert {(r["p"], r["train_frac"]) for r in report["fss"]} == {
        (p, f) for p in (11, 23) for f in (0.4, 0.7)
    }
    assert [s["seed"] for s in report["seeds"]] == [0, 1]
    assert len(report["seeds"][0]["steps"]) == len(report["seeds"][0]["weight_norm"])
    # one part re-run, the other kept
    before = report["phase"]
    report["seeds"] = []
    out.write_text(json.dumps(report))
    assert sweeps.main(["--quick", "--out", str(out), "--part", "seeds"]) == 0
    again = json.loads(out.read_text())
    assert again["phase"] == before and len(again["seeds"]) == 2
    assert again["fss"] == report["fss"] and len(again["fss_fine"]) == 2


def test_one_part_is_refused_on_top_of_another_configuration(tmp_path):
    """Re-running one part keeps the other from the file: only if both share a configuration."""
    out = tmp_path / "phase.json"
    out.write_text(json.dumps({"config": {"p": 97, "other": True}, "phase": [], "seeds": []}))
    with pytest.raises(SystemExit, match="made with another configuration: use --part all"):
        sweeps.main(["--quick", "--out", str(out), "--part", "seeds"])
    assert json.loads(out.read_text())["config"] == {"p": 97, "other": True}  # left alone


@pytest.mark.slow
def test_quick_minima_sweep_writes_a_minimum_the_chapter_can_reload(tmp_path):
    """Chapter 3 reloads the stored parameters and checks the gradient and the spectrum live."""
    import torch

    from hamlib import measure, tasks
    from tools import sweep_minima

    out = tmp_path / "minima.json"
    assert sweep_minima.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    row = report["minima"][0]
    assert report["provenance"]["commit"] and row["negative_eigenvalues"] == 0
    cfg = report["config"]
    X, y, _, _ = tasks.digits(cfg["n_train"])
    net = tasks.digits_mlp(row["seed"])
    torch.nn.utils.vector_to_parameters(
        torch.tensor(row["params"], dtype=torch.float64), net.parameters()
    )
    loss = sweep_minima.regularized_loss(net, X, y, cfg["weight_decay"])
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(), list(net.parameters()))])
    assert grad.norm().item() < cfg["grad_tol"]
    assert loss().item() == pytest.approx(row["loss"], rel=1e-12)
    assert measure.hessian_spectrum(loss, list(net.parameters()))[0].item() > 0


@pytest.mark.slow
def test_quick_gpt_sweep_writes_every_part_the_chapter_reads(tmp_path):
    """Chapter 4 reads every part of transformer_runs.json; a quick run must produce them all,
    and a run of one part must keep the others."""
    from tools import sweep_gpt

    out = tmp_path / "runs.json"
    with pytest.raises(SystemExit, match="--out"):
        sweep_gpt.main(["--quick"])
    assert sweep_gpt.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    for part in sweep_gpt.PARTS:
        assert report[part] and report["provenance"][part]["commit"]
    variants = {r["variant"] for r in report["variants"]}
    assert variants == set(sweep_gpt.VARIANTS)
    rope = next(r for r in report["variants"] if r["variant"] == "RoPE")
    assert len(rope["loss_by_position_bin"]) == report["config"]["extrapolate"]["bins"]
    ham = next(r for r in report["variants"] if r["variant"] == "H-attention, code")
    assert len(ham["alpha_beta_gamma"]) == sweep_gpt.BASE["n_layers"]
    first = report["variants"]
    assert sweep_gpt.main(["--quick", "--out", str(out), "--part", "stability"]) == 0
    assert json.loads(out.read_text())["variants"] == first


@pytest.mark.slow
def test_quick_diffusion_sweep_writes_what_chapter_8_reads(tmp_path):
    """Chapter 8 reads both parts of diffusion_runs.json and the samples of the shown run; a run
    of one part keeps the other, and a changed configuration of a kept part is refused."""
    from tools import sweep_diffusion

    out = tmp_path / "runs.json"
    with pytest.raises(SystemExit, match="--out"):
        sweep_diffusion.main(["--quick"])
    assert sweep_diffusion.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    for part in sweep_diffusion.PARTS:
        assert report[part] and report["provenance"][part]["commit"]
    row = report["testbed"][0]
    assert {"diffusion", "flow", "reflow"} <= set(row)
    assert len(row["flow"]) == len(report["config"]["testbed"]["nfes"])
    digits = report["digits"][0]
    assert len(digits["pixel"]["samples"][0]) == 10 * 64
    assert len(digits["latent"]["precision"]) == len(report["config"]["digits"]["guidance"])
    first = report["testbed"]
    assert sweep_diffusion.main(["--quick", "--out", str(out), "--part", "digits"]) == 0
    assert json.loads(out.read_text())["testbed"] == first
    stored = json.loads(out.read_text())
    stored["config"]["testbed"]["batch"] += 1
    out.write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="another configuration"):
        sweep_diffusion.main(["--quick", "--out", str(out), "--part", "digits"])


@pytest.mark.slow
def test_quick_compress_sweep_writes_what_chapter_10_reads(tmp_path):
    """Chapter 10 loads the weights beside the results and reads every part; a later part reads
    the models part's weights, a run of one part keeps the others, and a changed configuration
    of a kept part is refused."""
    import torch

    from tools import sweep_compress

    out = tmp_path / "compress_runs.json"
    with pytest.raises(SystemExit, match="--out"):
        sweep_compress.main(["--quick"])
    assert sweep_compress.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    report = json.loads(out.read_text())
    for part in sweep_compress.PARTS:
        assert report[part] and report["provenance"][part]["commit"]
    state = torch.load(sweep_compress.models_path(out), weights_only=True)
    assert set(state) == {"target", "draft"}
    assert {r["method"] for r in report["ptq"]} == set(report["config"]["ptq"]["methods"])
    assert {r["kind"] for r in report["bitnet"]["runs"]} == {"fp32", "ternary"}
    assert len(report["bitnet"]["spot"]) == len(report["config"]["bitnet"]["spot"]["seeds"])
    kinds = {r["kind"] for r in report["lora"]["runs"]}
    assert kinds == {"full", "lora", "qlora"}
    assert len(report["lora"]["spot"]) == len(report["config"]["lora"]["spot"]["seeds"])
    assert report["lora"]["full_update_singular_values"]
    first = report["ptq"]
    assert sweep_compress.main(["--quick", "--out", str(out), "--part", "bitnet"]) == 0
    assert json.loads(out.read_text())["ptq"] == first
    stored = json.loads(out.read_text())
    stored["config"]["ptq"]["bits"] = [3]
    out.write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="another configuration"):
        sweep_compress.main(["--quick", "--out", str(out), "--part", "bitnet"])

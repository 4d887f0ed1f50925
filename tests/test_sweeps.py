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
    assert len(report["phase"]) == 4
    assert report["provenance"]["phase"]["commit"] and report["provenance"]["seeds"]["commit"]
    row = report["phase"][0]
    assert set(row) >= {"train_frac", "weight_decay", "grokked", "step_test_95", "final_test_acc"}
    assert [s["seed"] for s in report["seeds"]] == [0, 1]
    assert len(report["seeds"][0]["steps"]) == len(report["seeds"][0]["weight_norm"])
    # one part re-run, the other kept
    before = report["phase"]
    report["seeds"] = []
    out.write_text(json.dumps(report))
    assert sweeps.main(["--quick", "--out", str(out), "--part", "seeds"]) == 0
    again = json.loads(out.read_text())
    assert again["phase"] == before and len(again["seeds"]) == 2


def test_one_part_is_refused_on_top_of_another_configuration(tmp_path):
    """Re-running one part keeps the other from the file: only if both share a configuration."""
    out = tmp_path / "phase.json"
    out.write_text(json.dumps({"config": {"p": 97, "other": True}, "phase": [], "seeds": []}))
    with pytest.raises(SystemExit, match="made with another configuration: use --part all"):
        sweeps.main(["--quick", "--out", str(out), "--part", "seeds"])
    assert json.loads(out.read_text())["config"] == {"p": 97, "other": True}  # left alone

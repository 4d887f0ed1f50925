"""make portability: nbval under settings that emulate other processors (tools/portability.py)."""

import json
import os
import subprocess
import sys

import pytest

from tools import execenv, notebooks, portability
from tools.notebooks import ROOT

PINS = {**execenv.NUMERIC, **execenv.EXECUTOR}


def _capture(monkeypatch, returncode=lambda env: 0):
    seen = []

    def fake_run(cmd, cwd, env):
        seen.append((cmd, env))
        return subprocess.CompletedProcess(cmd, returncode(env))

    monkeypatch.setattr(portability.subprocess, "run", fake_run)
    return seen


def test_a_setting_is_forced_alone_on_top_of_the_executors_environment(monkeypatch):
    seen = _capture(monkeypatch)
    for key in PINS:  # conftest.py put the pins here: without them the test can fail
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")  # overridden by the setting
    monkeypatch.setenv("MKL_CBWR", "AVX2")  # another setting's variable: stripped
    ok, _ = portability.nbval("torch-avx2", ["book/x.ipynb"])
    cmd, env = seen[0]
    assert ok
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in env
    for key, value in PINS.items():
        assert env[key] == value
    assert "--nbval" in cmd and cmd[-1] == "book/x.ipynb"
    assert str(ROOT / "tests" / "nbval_sanitize.cfg") in cmd
    portability.nbval("native", ["book"])
    assert not set(portability.FORCED) & set(seen[1][1])  # native means nothing forced


def test_the_matrix_has_native_the_ci_settings_and_three_emulations():
    assert portability.SETTINGS["native"] == {}
    assert set(portability.CI_SETTINGS) <= set(portability.SETTINGS) - {"native"}
    assert len([s for s in portability.SETTINGS if s != "native"]) >= 3


@pytest.mark.parametrize(
    "machine, capability, settings",
    [
        ("x86_64", "AVX512", ["native", "torch-avx2"]),
        ("x86_64", "AVX2", ["native", "mkl-compatible"]),
        ("x86_64", "DEFAULT", ["native", "mkl-compatible"]),
        ("aarch64", "SVE256", ["native"]),
    ],
)
def test_ci_runs_native_and_a_setting_that_is_not_native_here(
    monkeypatch, machine, capability, settings
):
    import platform

    import torch

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert portability.ci_settings() == settings


def test_a_failing_setting_fails_the_run(monkeypatch, capsys):
    for var in portability.FORCED:
        monkeypatch.delenv(var, raising=False)
    _capture(monkeypatch, lambda env: int(env.get("MKL_CBWR") == "COMPATIBLE"))
    assert portability.main(["native", "mkl-compatible"]) == 1
    out = capsys.readouterr().out
    assert "native           passed" in out and "mkl-compatible   FAILED" in out
    assert portability.main(["native", "torch-avx2"]) == 0


@pytest.mark.parametrize("var", ["ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"])
def test_a_shell_that_forces_a_code_path_is_refused_by_name(monkeypatch, capsys, var):
    monkeypatch.setenv(var, "avx2")
    with pytest.raises(SystemExit) as exc:
        portability.main(["native"])
    assert exc.value.code == 2 and var in capsys.readouterr().err


def test_ci_and_named_settings_do_not_mix(capsys):
    with pytest.raises(SystemExit):
        portability.main(["--ci", "native"])
    assert "--ci" in capsys.readouterr().err


def test_an_unknown_setting_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as exc:
        portability.main(["avx9000"])
    assert exc.value.code == 2
    assert "avx9000" in capsys.readouterr().err


def test_refresh_refuses_to_store_outputs_under_a_forced_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    with pytest.raises(SystemExit, match="MKL_CBWR"):
        notebooks.refresh(tmp_path, ["01_x"])


PROBE = """
import json, torch, numpy
from numpy._core._multiarray_umath import __cpu_features__
from threadpoolctl import threadpool_info
a = torch.randn(64, 64)
a @ a  # with MKL_VERBOSE=1, MKL prints a line per call, with its code path (CNR:...), on fd 1
print("PROBE " + json.dumps({
    "torch": torch.backends.cpu.get_cpu_capability(),
    "numpy": {k: __cpu_features__.get(k) for k in ("X86_V3", "X86_V4")},
    "openblas": sorted({p.get("architecture") for p in threadpool_info()
                        if p["internal_api"] == "openblas"}),
}))
"""


def _probe(setting: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in portability.FORCED}
    env = execenv.executor_env({**base, **portability.SETTINGS[setting], "MKL_VERBOSE": "1"})
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.split("PROBE ", 1)[1])
    cnr = [w for w in out.stdout.split() if w.startswith("CNR:")]
    return report | {"mkl": cnr[0] if cnr else "no MKL call"}


def test_the_settings_take_effect_in_a_child_process():
    """A misspelt variable or a renamed numpy feature would emulate nothing, silently."""
    native = _probe("native")
    if native["torch"] == "AVX512":
        assert _probe("torch-avx2")["torch"] == "AVX2"
    if native["mkl"] != "no MKL call":  # torch's x86 wheels link MKL; others may not
        assert native["mkl"] == "CNR:OFF"
        assert _probe("mkl-compatible")["mkl"] == "CNR:COMPATIBLE"
    sse = _probe("numpy-sse")
    assert sse["numpy"] == {"X86_V3": False, "X86_V4": False}, sse
    assert sse["openblas"] == ["Sandybridge"], sse

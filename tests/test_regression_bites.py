"""The regression suite must bite: perturb a hamlib result in a scratch copy and nbval must fail.

The normal `make nbval` run is the control (same notebook, unperturbed hamlib: it passes). Here
the only change is that `ball_volume` is 0.1% too large, about the size of a subtle bug, and
Chapter 1's stored table of volumes must then no longer match.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import portability
from tools.execenv import executor_env
from tools.notebooks import ROOT

CHAPTER = "01_high_dimensional_geometry.ipynb"

PERTURBATION = """

_exact_ball_volume = ball_volume


def ball_volume(d: int, r: float = 1.0) -> float:  # injected by tests/test_regression_bites.py
    return _exact_ball_volume(d, r) * 1.001
"""


@pytest.mark.slow
def test_nbval_fails_when_a_hamlib_result_changes(tmp_path: Path):
    scratch = tmp_path / "scratch"
    shutil.copytree(ROOT / "hamlib", scratch / "hamlib")
    (scratch / "book").mkdir()
    shutil.copy(ROOT / "book" / CHAPTER, scratch / "book" / CHAPTER)
    with open(scratch / "hamlib" / "geometry.py", "a") as f:
        f.write(PERTURBATION)
    env = {**executor_env(), "PYTHONPATH": str(scratch)}

    # The kernel must import the scratch copy, not the installed package.
    where = subprocess.run(
        [sys.executable, "-c", "import hamlib; print(hamlib.__file__)"],
        env=env,
        cwd=scratch / "book",
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(scratch / "hamlib" / "__init__.py")

    result = subprocess.run(
        [sys.executable, *portability.NBVAL, "-x", str(scratch / "book" / CHAPTER)],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed" in out, out
    # It failed on the volume table, the first output that uses ball_volume: V_1 = 2 became 2.002.
    assert "mismatch 'stdout'" in out and "2.002" in out, out

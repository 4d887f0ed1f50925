"""The executors' environment is defined once (tools/execenv.py) and every executor takes it."""

import json
import os
import subprocess
import sys

from tools import execenv
from tools.notebooks import ROOT

PINS = {**execenv.NUMERIC, **execenv.EXECUTOR}


def _without_pins() -> dict[str, str]:
    """This process's environment less the pins (conftest.py put them there: a test that the
    pins reach a child must start without them, or it cannot fail)."""
    return {k: v for k, v in os.environ.items() if k not in PINS}


def test_executor_env_forces_every_pin_over_the_callers_value():
    base = {"PATH": "/bin", "PYTHONHASHSEED": "random", "TQDM_DISABLE": "0"}  # as tox sets it
    env = execenv.executor_env(base)
    assert env["PATH"] == "/bin"
    for key, value in PINS.items():
        assert env[key] == value
    assert base == {"PATH": "/bin", "PYTHONHASHSEED": "random", "TQDM_DISABLE": "0"}


def test_lab_env_keeps_the_numeric_pins_and_drops_the_executors_switches():
    env = execenv.lab_env({"TQDM_DISABLE": "1", "HAMLIB_STATIC": "1", "HOME": "/h"})
    assert env["HOME"] == "/h"
    for key, value in execenv.NUMERIC.items():
        assert env[key] == value
    for key in execenv.EXECUTOR:
        assert key not in env


def test_lab_command_runs_with_labs_environment():
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    env = {**_without_pins(), "TQDM_DISABLE": "1", "HAMLIB_STATIC": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tools.execenv", "--lab", sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    child = json.loads(out)
    assert "TQDM_DISABLE" not in child and "HAMLIB_STATIC" not in child
    for key, value in execenv.NUMERIC.items():
        assert child[key] == value


def test_a_kernel_started_by_an_executor_inherits_the_pins():
    """What nbval and refresh rely on: apply() in the parent, the child sees every pin."""
    code = "from tools import execenv; execenv.apply(); import os, subprocess, sys; " + (
        "print(subprocess.run([sys.executable, '-c', 'import os, json; "
        "print(json.dumps(dict(os.environ)))'], capture_output=True, text=True).stdout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_without_pins(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    child = json.loads(out)
    for key, value in PINS.items():
        assert child[key] == value


def test_no_other_file_sets_the_executors_environment():
    """The Makefile, conftest.py, the tools and the tests take the settings from tools.execenv;
    a second definition would drift (before: three places set them and two stripped them)."""
    files = [ROOT / "Makefile", ROOT / "conftest.py", *sorted((ROOT / "tools").glob("*.py"))]
    files += [ROOT / "tests" / "test_browser.py", ROOT / "tests" / "test_regression_bites.py"]
    offenders = []
    for path in files:
        if path.name == "execenv.py":
            continue
        text = path.read_text()
        for key in PINS:
            if key in text:
                offenders.append(f"{path.relative_to(ROOT)}: {key}")
    assert offenders == []

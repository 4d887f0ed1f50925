"""The environment the chapters execute in: one definition for every executor.

``make refresh``, ``make bench``, nbval (through ``conftest.py``), the regression-bite test, ``make
lab`` and the browser tests all take their environment from here; nothing else sets it.

Two parts, both forced over whatever the caller's shell holds:

- ``NUMERIC``: what makes two runs print the same numbers: a fixed hash seed. (The thread count
  is pinned by ``hamlib.setup()``. Instruction sets are deliberately not pinned: forcing AVX2 on
  every library reproduced neither of two machines' outputs, and MKL's reproducible mode nearly
  doubles three chapters' run time; see the README, "Portable outputs".) Lab gets these too.
- ``EXECUTOR``: what only the executors want: no progress bars (they print timings) and static
  figures instead of live controls (``hamlib.plotting.explore``).

    python -m tools.execenv                  # print the executors' settings
    python -m tools.execenv --lab CMD ...    # run CMD with Lab's environment (make lab)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

NUMERIC: dict[str, str] = {
    "PYTHONHASHSEED": "0",
}

EXECUTOR: dict[str, str] = {
    "TQDM_DISABLE": "1",  # progress bars write timings to stderr: never store or compare them
    "HAMLIB_STATIC": "1",  # hamlib.plotting.explore draws a static figure, no widget
}


def executor_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the executors' settings forced."""
    return {**(os.environ if base is None else base), **NUMERIC, **EXECUTOR}


def lab_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of ``make lab``: the numeric pins, progress bars and live controls on."""
    env = {**(os.environ if base is None else base), **NUMERIC}
    for key in EXECUTOR:
        env.pop(key, None)
    return env


def apply() -> None:
    """Put the executors' settings into this process's environment (kernels started from it
    inherit them). Call before any kernel starts."""
    os.environ.update(executor_env())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--lab"]:
        if len(args) < 2:
            print("usage: python -m tools.execenv --lab CMD [ARGS...]", file=sys.stderr)
            return 2
        os.execvpe(args[1], args[1:], lab_env())
    for key, value in {**NUMERIC, **EXECUTOR}.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Download the wheels that ``make gpu-check`` needs on a GPU machine without network.

Such a machine (the device of this workplace: Python 3.12 on x86-64, with torch, triton, numpy,
matplotlib, pytest, hypothesis and the scientific stack) lacks the notebook tools: nbval,
jupytext, ipykernel and what they need. This resolves those for Python 3.12 on manylinux x86-64
into one folder and drops the wheels of packages the machine already has, so that one version of
each remains. On the GPU machine:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site make gpu-check PY=python3
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

WANTED = ["nbval", "jupytext", "ipykernel", "nbclient", "nbformat"]
# Present on the GPU machine (its package list); their wheels would shadow its versions.
PRESENT = {
    "numpy",
    "torch",
    "triton",
    "matplotlib",
    "pytest",
    "hypothesis",
    "packaging",
    "pygments",
    "pyyaml",
    "jinja2",
    "markupsafe",
    "attrs",
    "typing_extensions",
    "six",
    "python_dateutil",
    "psutil",
    "pluggy",
    "iniconfig",
    "coverage",
    "markdown_it_py",
    "mdurl",
    "sortedcontainers",
    "filelock",
    "fsspec",
    "networkx",
    "sympy",
    "mpmath",
    "setuptools",
    "pillow",
    "contourpy",
    "cycler",
    "fonttools",
    "kiwisolver",
    "pyparsing",
    "tqdm",
    "threadpoolctl",
    "scipy",
}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux1_x86_64",
]


def main(dest: str) -> int:
    out = Path(dest)
    out.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "-d",
        str(out),
        *WANTED,
    ]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd, check=True)
    kept = 0
    for wheel in sorted(out.glob("*.whl")):
        name = re.split(r"-\d", wheel.name, maxsplit=1)[0].lower().replace("-", "_")
        if name in PRESENT:
            wheel.unlink()
        else:
            kept += 1
    size = sum(w.stat().st_size for w in out.glob("*.whl")) / 2**20
    print(f"{kept} wheels, {size:.1f} MiB in {out}/ (carry it to the GPU machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".whl"))

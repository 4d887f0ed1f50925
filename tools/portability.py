"""nbval over every chapter, natively and under settings that emulate other processors.

The stored outputs were executed on one machine; a reader's, or CI's, sums in another order
(AVX2 or AVX-512 kernels, Intel's or AMD's code paths in MKL, another OpenBLAS kernel). Each
setting below forces one numerical library onto a code path this processor would not choose, so
one machine can show that the stored outputs survive the change. All are safe on any x86-64
processor with AVX (they only ever go down to an older instruction set). The README, "Portable
outputs", records what each one moved before the chapters printed only what survives.

    python -m tools.portability                 # the whole matrix (make portability)
    python -m tools.portability native          # plain nbval (make nbval)
    python -m tools.portability --ci            # native + one CI setting (make test)
    python -m tools.portability --list          # the settings
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tools import execenv

ROOT = Path(__file__).resolve().parents[1]

# Each setting: environment variables forced for the whole nbval run (kernels inherit them).
SETTINGS: dict[str, dict[str, str]] = {
    "native": {},
    # torch's own vectorized kernels (elementwise math, reductions, softmax) as on an AVX2 CPU
    "torch-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    # MKL (torch's matrix products on x86) on its SSE2 path, as on a CPU it does not recognize
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    # numpy without AVX2/AVX-512: OpenBLAS's Sandy Bridge kernels, numpy's SSE4 loops
    "numpy-sse": {
        "OPENBLAS_CORETYPE": "Sandybridge",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3,X86_V4,AVX512_ICL,AVX512_SPR",
    },
}
# Every variable that moves a library onto another code path: those the settings force, and the
# others the README's measurements used. None may come from the caller's shell.
FORCED = sorted(
    {key for env in SETTINGS.values() for key in env}
    | {"MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA"}
)

# The non-native setting `make test` (and so CI) runs after the native suite: torch's AVX2
# kernels, which moved Chapters 4 and 7 when they were not yet portable (README, "Portable
# outputs"), where torch runs AVX-512 kernels; elsewhere MKL's compatible path.
CI_SETTINGS = ("torch-avx2", "mkl-compatible")


def ci_settings() -> list[str]:
    """What `make test` runs: native, then the first of CI_SETTINGS that differs from what this
    processor runs anyway. The settings emulate x86-64 processors: elsewhere only native."""
    import platform

    import torch

    if platform.machine() not in ("x86_64", "AMD64"):
        print(f"{platform.machine()}: the emulation settings are for x86-64; native nbval only")
        return ["native"]
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    return ["native", CI_SETTINGS[0] if avx512 else CI_SETTINGS[1]]


def forced_in(env: dict[str, str] | os._Environ[str]) -> list[str]:
    """The variables of the matrix that ``env`` sets (a shell that forces one of them would
    silently change what `make refresh` stores or what "native" means)."""
    return [key for key in FORCED if key in env]


NBVAL = [
    "-m",
    "pytest",
    "--nbval",
    "--nbval-current-env",
    "--nbval-cell-timeout=300",
    "--nbval-sanitize-with",
    str(ROOT / "tests" / "nbval_sanitize.cfg"),
    "-p",
    "no:cacheprovider",
    "-q",
]


def nbval(setting: str, paths: list[str]) -> tuple[bool, float]:
    """Run nbval over ``paths`` with ``setting`` forced; (passed, seconds)."""
    base = {k: v for k, v in os.environ.items() if k not in FORCED}  # each setting alone
    env = execenv.executor_env({**base, **SETTINGS[setting]})
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, *NBVAL, *paths], cwd=ROOT, env=env)
    return result.returncode == 0, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("settings", nargs="*", help="settings to run (default: all)")
    parser.add_argument("--ci", action="store_true", help="native and one of " + str(CI_SETTINGS))
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--paths", nargs="+", default=["book"], help="notebooks or folders")
    args = parser.parse_args(argv)
    if args.list:
        for name, env in SETTINGS.items():
            print(f"{name:16s}" + (" ".join(f"{k}={v}" for k, v in env.items()) or "(nothing)"))
        return 0
    if args.ci and args.settings:
        parser.error("--ci chooses its settings: name none")
    forced = forced_in(os.environ)
    if forced:  # "native" would not be native, and --ci would misread the processor
        parser.error(f"unset {', '.join(forced)}: make portability forces its own settings")
    names = ci_settings() if args.ci else list(dict.fromkeys(args.settings or SETTINGS))
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    results = {}
    for name in names:
        what = " ".join(f"{k}={v}" for k, v in SETTINGS[name].items()) or "nothing forced"
        print(f"== nbval, {name}: {what}", flush=True)
        results[name] = nbval(name, args.paths)
    print("== portability:")
    for name, (ok, seconds) in results.items():
        print(f"   {name:16s} {'passed' if ok else 'FAILED'} in {seconds:5.0f} s")
    return 0 if all(ok for ok, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Compile hamlib's Triton kernels for a GPU that is not here, and read what the GPU would run.

Triton compiles for any NVIDIA target on a CPU-only machine: it ships ``ptxas``, so
``triton.compile`` turns a kernel into PTX and a cubin for, say, ``sm_80`` (A100) or ``sm_90``
(H100) without a driver. :func:`compile` does it for a :class:`hamlib.kernels.Launch`, the exact
launch a wrapper makes (:func:`hamlib.kernels.launch_plan`), and specializes it as Triton's JIT
would on a GPU: pointers 16-byte aligned and integer arguments divisible by 16 are marked so
(``tt.divisibility``), which is what lets the compiler emit 128-bit vector loads; integers equal
to 1 become constants. Then it reads the binary with the ``cuobjdump`` in the triton wheel:
registers per thread, the local-memory stack frame (where spilled registers go) and the SASS.

The compiler runs in a child process that imports :mod:`hamlib.triton_kernels` as plain
``@triton.jit`` functions: where :mod:`hamlib.kernels` runs the interpreter (a CPU), the kernels
in this process, and ``grouped_tile`` that ``matmul_kernel`` calls, are the interpreter's objects,
which the compiler cannot take.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hamlib import _checks as check

if TYPE_CHECKING:  # not imported at run time: the child process must not import hamlib.kernels
    from hamlib.kernels import Launch

__all__ = ["LIMITS", "TESTED_TRITON", "Compiled", "available", "compile", "compile_targets"]

# Per-block limits that Triton checks when it loads a kernel (cudaDevAttrMaxSharedMemoryPerBlock-
# Optin, in bytes) and the most registers a thread can have. CUDA C Programming Guide, table
# "Technical Specifications per Compute Capability": 163 KB on 8.0, 227 KB on 9.0.
LIMITS: dict[int, dict[str, Any]] = {
    80: {"name": "A100 (sm_80)", "shared_per_block": 163 * 1024, "registers_per_thread": 255},
    90: {"name": "H100 (sm_90)", "shared_per_block": 227 * 1024, "registers_per_thread": 255},
}


# The Triton release whose internals (the JIT's argument binder, ASTSource) this module uses.
TESTED_TRITON = "3.9."


@dataclass(frozen=True)
class Compiled:
    """What the compiler made of one launch for one target."""

    kernel: str
    arch: int
    num_warps: int
    num_stages: int
    shared_bytes: int  # dynamic shared memory per block (Triton's metadata.shared)
    registers: int  # per thread, from the cubin
    stack_bytes: int  # local-memory stack frame per thread: spilled registers live there
    ptx: str
    sass: str
    ttgir: str  # Triton's GPU dialect: the layouts (which warp holds which part of a tile)

    @property
    def spills(self) -> bool:
        """True when the kernel keeps part of its state in local memory (off chip)."""
        return self.stack_bytes > 0

    @property
    def fits(self) -> bool:
        """True when the shared memory is within the target's per-block limit."""
        return self.shared_bytes <= LIMITS[self.arch]["shared_per_block"]

    def count(self, pattern: str, where: str = "sass") -> int:
        """Number of lines of the SASS (or ``where="ptx"`` or ``"ttgir"``) that match the regex
        ``pattern``."""
        rx = re.compile(pattern)
        return sum(1 for line in self._text(where).splitlines() if rx.search(line))

    def _text(self, where: str) -> str:
        texts = {"sass": self.sass, "ptx": self.ptx, "ttgir": self.ttgir}
        check.one_of("where", where, sorted(texts))
        return texts[where]

    def lines(self, pattern: str, where: str = "sass", limit: int = 3) -> list[str]:
        """The first ``limit`` lines of the SASS (or PTX) that match ``pattern``, stripped."""
        rx = re.compile(pattern)
        return [ln.strip() for ln in self._text(where).splitlines() if rx.search(ln)][:limit]

    def mma_layout(self) -> tuple[int, list[int], list[int]]:
        """(version, warpsPerCTA, instrShape) of the tensor-core layout Triton chose for the
        dot: version 2 is mma.sync (Ampere), 3 is wgmma (Hopper). Raises ValueError if the
        kernel has no tensor-core dot."""
        m = re.search(
            r"nvidia_mma<\{versionMajor = (\d+).*?warpsPerCTA = \[([\d, ]+)\]"
            r".*?instrShape = \[([\d, ]+)\]",
            self.ttgir,
        )
        if m is None:
            raise ValueError(f"{self.kernel} has no tensor-core (nvidia_mma) layout")
        ints = [[int(x) for x in g.split(",")] for g in (m[2], m[3])]
        return int(m[1]), ints[0], ints[1]


def available() -> tuple[bool, str]:
    """(True, "") where kernels can be compiled here; otherwise (False, why not)."""
    try:
        import triton
    except ImportError:
        return False, "triton is not installed (it has wheels for Linux x86-64 only)"
    if not triton.__version__.startswith(TESTED_TRITON):
        return False, (
            f"hamlib.aot drives Triton's JIT internals and was checked with Triton "
            f"{TESTED_TRITON}x; this is {triton.__version__}"
        )
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return False, f"this triton has no NVIDIA backend tools ({tool} is missing)"
    return True, ""


def _describe(arg: Any) -> Any:
    # What the JIT's specialization sees of an argument: a tensor's dtype and whether its
    # address is 16-byte aligned, or a scalar's value.
    if isinstance(arg, torch.Tensor):
        return {"dtype": str(arg.dtype).removeprefix("torch."), "aligned": arg.data_ptr() % 16 == 0}
    if isinstance(arg, (bool, int, float)):
        return arg
    raise TypeError(f"cannot compile a launch with an argument of type {type(arg).__name__}")


def compile(launches: Launch | list[Launch], arch: int = 90) -> list[Compiled]:  # noqa: A001
    """Compile each launch for ``sm_<arch>`` (80 or 90) in one child process.

    Raises ``RuntimeError`` with the compiler's message if a kernel does not compile, and where
    triton or its NVIDIA tools are missing (see :func:`available`)."""
    check.one_of("arch", arch, sorted(LIMITS))
    from hamlib.kernels import Launch

    items = [launches] if isinstance(launches, Launch) else list(launches)
    if not all(isinstance(x, Launch) for x in items):
        raise TypeError("launches must be a Launch or a list of them")
    if not items:
        raise ValueError("launches must not be empty")
    ok, why = available()
    if not ok:
        raise RuntimeError(f"cannot compile here: {why}")
    jobs = [
        {
            "kernel": x.kernel,
            "args": [_describe(a) for a in x.args],
            "meta": {k: v for k, v in x.meta.items()},
            "arch": arch,
        }
        for x in items
    ]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["HAMLIB_KERNELS_BACKEND"] = "cuda"  # compiled kernels, although this machine has no GPU
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the JIT's default, without its warning
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        proc = subprocess.run(
            [sys.executable, "-m", "hamlib.aot", out],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling for sm_{arch} failed:\n{proc.stderr[-4000:]}")
        with open(out) as f:
            results = json.load(f)
    return [Compiled(**r) for r in results]


def compile_targets(
    launches: dict[str, Launch], archs: tuple[int, ...] = (80, 90)
) -> dict[tuple[str, int], Compiled]:
    """Compile every labelled launch for every target, one child process per target running at
    the same time; the results keyed by (label, arch)."""
    from concurrent.futures import ThreadPoolExecutor

    check.instance("launches", launches, dict)
    if not launches:
        raise ValueError("launches must not be empty")
    labels, plans = list(launches), list(launches.values())
    with ThreadPoolExecutor(len(archs)) as pool:
        runs = dict(zip(archs, pool.map(lambda arch: compile(plans, arch), archs), strict=True))
    return {(label, arch): runs[arch][i] for arch in archs for i, label in enumerate(labels)}


# ------------------------------------------------------------------------ the child process


def _compile_one(job: dict[str, Any]) -> dict[str, Any]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from hamlib import triton_kernels as tk

    fn = getattr(tk, job["kernel"])
    jit = JITFunction(getattr(fn, "fn", fn))
    target = GPUTarget("cuda", job["arch"], 32)
    backend = make_backend(target)
    args = []
    for a in job["args"]:
        if isinstance(a, dict):  # a tensor: only its dtype and alignment matter to the compiler
            t = torch.empty(32, dtype=getattr(torch, a["dtype"]))
            args.append(t if a["aligned"] else t[1:])
        else:
            args.append(a)
    kwargs = dict(job["meta"], debug=False)
    # The JIT's own argument binder: the same specialization (types, divisibility by 16,
    # constants) that a launch on a GPU computes.
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit._pack_args(
        backend, kwargs, bound, specialization, options
    )
    src = ASTSource(jit, signature, constexprs, attrs)
    kernel = triton.compile(src, target=target, options=options.__dict__)
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run(
            [tool, "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run(
            [tool, "-sass", f.name], capture_output=True, text=True, check=True
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if m is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage:\n{usage}")
    return {
        "kernel": job["kernel"],
        "arch": job["arch"],
        "num_warps": kernel.metadata.num_warps,
        "num_stages": kernel.metadata.num_stages,
        "shared_bytes": kernel.metadata.shared,
        "registers": int(m[1]),
        "stack_bytes": int(m[2]),
        "ptx": kernel.asm["ptx"],
        "sass": sass,
        "ttgir": kernel.asm["ttgir"],
    }


def _main(out: str) -> None:
    from hamlib.backend import triton_interpret_requested

    if triton_interpret_requested():
        raise SystemExit("TRITON_INTERPRET is set: the interpreter's triton cannot compile")
    jobs = json.load(sys.stdin)
    results = [_compile_one(job) for job in jobs]
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    _main(sys.argv[1])

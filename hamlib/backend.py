"""Where hamlib's GPU kernels run: chosen once, from one documented switch.

The switch is the environment variable ``HAMLIB_KERNELS_BACKEND``, read when this module is first
imported (by :mod:`hamlib.kernels` or :mod:`hamlib.triton_kernels`):

- ``auto`` (or unset): ``cuda`` if triton imports and torch sees a GPU, ``interpreter`` if triton
  imports without one (or Triton's own ``TRITON_INTERPRET=1`` asks for it), ``torch`` otherwise;
- ``cuda``: kernels compiled for the GPU, taking CUDA tensors (without a GPU they can still be
  compiled ahead of time, as :mod:`hamlib.aot` does in a child process, but not run);
- ``interpreter``: kernels run on the CPU by Triton's interpreter, taking CPU tensors;
- ``torch``: no triton; every wrapper in :mod:`hamlib.kernels` computes its torch reference.

How the interpreter is switched on, and why it is process-wide: ``@triton.jit`` decides when it
runs whether a function is compiled or interpreted, from ``triton.knobs.runtime.interpret``, which
is Triton's mirror of the variable ``TRITON_INTERPRET`` (setting the knob sets the variable); and
Triton's own library functions (``tl.sum``, ``tl.max``, ...) are decorated once, when triton is
first imported. So for the interpreter this module sets ``TRITON_INTERPRET=1`` before triton is
imported: every kernel defined in this process is then interpreted, hamlib's and a reader's, and
child processes inherit the variable (:mod:`hamlib.aot` removes it for its compiler). If triton
was imported before, in compiled mode, the interpreter cannot work and this module says so.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch

from hamlib import _checks as check

__all__ = ["BACKEND", "BACKENDS", "choose_backend"]

BACKENDS = ("cuda", "interpreter", "torch")


def choose_backend(requested: str | None = None) -> str:
    """The backend for ``requested`` (``"auto"``, ``"cuda"``, ``"interpreter"`` or ``"torch"``;
    default: ``HAMLIB_KERNELS_BACKEND``, else ``"auto"``). Asking for a backend this machine cannot
    give raises ``RuntimeError`` saying what is missing; ``"cuda"`` needs triton, not a GPU."""
    if requested is None:
        requested = os.environ.get("HAMLIB_KERNELS_BACKEND", "") or "auto"
    check.one_of("HAMLIB_KERNELS_BACKEND", requested, ("auto", *BACKENDS))
    try:
        has_triton = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None blocks it
        has_triton = False
    gpu = torch.cuda.is_available()
    if requested == "auto":
        if not has_triton:
            return "torch"
        interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        return "cuda" if gpu and not interpret else "interpreter"
    if requested != "torch" and not has_triton:
        raise RuntimeError(f"the {requested!r} backend needs triton, which is not installed")
    return requested


def _prepare_interpreter() -> None:
    if "triton" not in sys.modules:
        os.environ["TRITON_INTERPRET"] = "1"  # Triton's switch, read by `import triton` and jit
        return
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.standard.sum, InterpretedFunction):
        raise RuntimeError(
            "triton was imported before hamlib's kernels without TRITON_INTERPRET=1, so its "
            "library functions (tl.sum, tl.max, ...) are compiled-mode and cannot run in the "
            "interpreter: import hamlib.kernels before triton, or set TRITON_INTERPRET=1"
        )
    os.environ["TRITON_INTERPRET"] = "1"


BACKEND = choose_backend()
if BACKEND == "interpreter":
    _prepare_interpreter()

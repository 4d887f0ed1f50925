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

__all__ = ["BACKEND", "BACKENDS", "choose_backend", "triton_interpret_requested"]

BACKENDS = ("cuda", "interpreter", "torch")


def triton_interpret_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the interpreter, read as Triton reads it (its C++
    ``getenv_bool``: 1, true, on or yes in any case; measured on triton 3.9)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def _triton_imported_interpreted() -> bool | None:
    """None if triton is not imported yet, else whether its library functions are interpreted."""
    if "triton" not in sys.modules or sys.modules["triton"] is None:
        return None
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard.sum, InterpretedFunction)


def choose_backend(requested: str | None = None) -> str:
    """Resolve a backend request without switching anything: ``"auto"``, ``"cuda"``,
    ``"interpreter"`` or ``"torch"`` (default: ``HAMLIB_KERNELS_BACKEND``, else ``"auto"``).
    Asking for what this process cannot give raises ``RuntimeError`` saying why; ``"cuda"``
    needs triton in compiled mode, not a GPU (kernels can be compiled ahead of time)."""
    name = "requested"
    if requested is None:
        name, requested = "HAMLIB_KERNELS_BACKEND", os.environ.get("HAMLIB_KERNELS_BACKEND", "")
        requested = requested or "auto"
    requested = check.one_of(name, requested, ("auto", *BACKENDS))
    try:
        has_triton = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None blocks it
        has_triton = False
    interpreted = _triton_imported_interpreted()
    interpret = triton_interpret_requested() if interpreted is None else interpreted
    if requested == "auto":
        if not has_triton:
            return "torch"
        requested = "cuda" if torch.cuda.is_available() and not interpret else "interpreter"
    if requested != "torch" and not has_triton:
        raise RuntimeError(f"the {requested!r} backend needs triton, which is not installed")
    if requested == "cuda" and interpret:
        raise RuntimeError(
            "the 'cuda' backend needs compiled kernels, but Triton is in interpreter mode "
            "(TRITON_INTERPRET): start Python without it"
        )
    if requested == "interpreter" and interpreted is False:
        raise RuntimeError(
            "triton was imported before hamlib's kernels without TRITON_INTERPRET=1, so its "
            "library functions (tl.sum, tl.max, ...) are compiled-mode and cannot run in the "
            "interpreter: import hamlib.kernels before triton, or start Python with "
            "TRITON_INTERPRET=1"
        )
    return requested


def _switch(backend: str) -> str:
    """Prepare triton for ``backend``; fall back to ``"torch"`` if triton cannot be imported."""
    if backend == "torch":
        return backend
    if backend == "interpreter":
        os.environ["TRITON_INTERPRET"] = "1"  # Triton's switch, read by `import triton` and jit
    try:
        import triton  # noqa: F401
    except Exception as exc:  # pragma: no cover - a broken triton install
        import warnings

        warnings.warn(
            f"triton is installed but cannot be imported ({exc}); using torch references",
            stacklevel=2,
        )
        return "torch"
    return backend


BACKEND = _switch(choose_backend())

"""Reproducibility and verification: the first and last thing every chapter calls.

``setup()`` fixes everything that makes two runs differ (seeds, thread counts, print precision,
figure style); ``check()`` turns a sentence of the text into an assertion that prints one line;
``show_source()`` displays the hamlib code a chapter teaches, so the book shows the code that runs
instead of a second copy that drifts.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_SEED = 0
DEFAULT_THREADS = 2


class ClaimFailed(AssertionError):
    """Raised by :func:`check` when a claim made in the text does not hold."""


@dataclass
class _State:
    started: float  # time.perf_counter() at the last setup()


_claims: list[str] = []
_state = _State(started=time.perf_counter())


def _real_number(name: str, value: Any) -> None:
    """``value`` is a real number to print: NaN and infinities pass (they print), ``bool`` does not.

    A local check because ``_checks.real`` refuses NaN (and ``_checks`` imports torch, which
    ``import hamlib`` must not: this module imports it only inside the functions that need it)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")


# The thread-count variables setup() sets for child processes (tests restore them).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def setup(seed: int = DEFAULT_SEED, threads: int = DEFAULT_THREADS, precision: int = 4) -> None:
    """Make a chapter reproducible: call once, in its first code cell.

    - seeds Python's ``random``, NumPy's global generator and torch with ``seed`` (an int in
      [0, 2**32 - 1], the range NumPy's global generator takes);
    - pins torch's intra-op threads and the BLAS/OpenMP pools of this process to ``threads``
      (with threadpoolctl; a different thread count changes the order of floating-point
      reductions, so results would differ in the last bits and long training runs would diverge),
      and sets ``OMP_NUM_THREADS`` and its BLAS cousins in ``os.environ`` so that child processes
      start with the same pins (this process's pools were sized when NumPy and torch loaded);
    - sets NumPy/torch print precision to ``precision`` significant digits;
    - applies the book's matplotlib style (:mod:`hamlib.plotting`);
    - forgets the claims verified so far (a re-run starts a fresh list).
    """
    from hamlib import _checks as check  # imports torch, which setup() needs anyway

    seed = check.seed("seed", seed)  # [0, 2**32 - 1]: NumPy's legacy seed range
    threads = check.integer("threads", threads, minimum=1)
    precision = check.integer("precision", precision, minimum=1, maximum=16)

    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)

    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    np.set_printoptions(precision=precision, suppress=True)
    torch.set_printoptions(precision=precision, sci_mode=False)

    from hamlib.plotting import use_style

    use_style()
    reset_claims()
    _state.started = time.perf_counter()


def elapsed() -> float:
    """Seconds since the last :func:`setup` (print it in a cell tagged ``nbval-ignore-output``)."""
    return time.perf_counter() - _state.started


# The ✓ line's format, which tools/claims.py reads back from the stored notebooks.
CLAIM_MARK = "✓ "
MARGIN = ": measured "  # between a quantitative claim and its margin
SUMMARY = "This chapter verified {} claims:"


def check(
    claim: str,
    ok: Any = None,
    *,
    measured: float | None = None,
    below: float | None = None,
    above: float | None = None,
    target: float | None = None,
    tol: float | None = None,
    spec: str = ".3g",
    machine_dependent: bool = False,
) -> None:
    """Verify a claim of the text: print ``✓ claim`` if it holds, else raise ClaimFailed.

    Two forms:

    - **logical**, ``check(claim, ok)``: ``ok`` must be a boolean (Python, NumPy, or a
      one-element torch tensor); anything else is a TypeError, so that an array whose truth
      value is ambiguous cannot pass by accident.
    - **quantitative**, ``check(claim, measured=x, below=b)`` (or ``above=b``, or
      ``target=t, tol=e`` for ``|x - t| <= e``): the line shows the margin,
      ``✓ claim: measured 0.6, held to < 667``, and the claims page lists it, so a reader sees
      how tight the claim is. ``spec`` formats both numbers. With ``machine_dependent=True`` the
      measured value is printed with ``≈`` (see :func:`approx`): the regression suite then
      compares the bound and not the digits that differ from one processor to the next.
    """
    if not isinstance(claim, str):
        raise TypeError(f"claim must be a non-empty string, got {type(claim).__name__}: {claim!r}")
    if not claim.strip():
        raise ValueError(f"claim must be a non-empty string, got {claim!r}")
    if measured is None:
        value = _truth(ok, below, above, target, tol)
    else:
        value, margin = _margin(ok, measured, below, above, target, tol, spec, machine_dependent)
        claim = f"{claim}{MARGIN}{margin}"
    if not value:
        raise ClaimFailed(f"claim does not hold: {claim}")
    _claims.append(claim)
    print(f"{CLAIM_MARK}{claim}")


def _truth(ok: Any, *margin: Any) -> bool:
    if any(m is not None for m in margin):
        raise TypeError("below, above, target and tol go with measured=, not with ok")
    if isinstance(ok, bool | np.bool_):
        return bool(ok)
    if type(ok).__module__.startswith("torch") and getattr(ok, "dtype", None) is not None:
        if ok.numel() != 1 or str(ok.dtype) != "torch.bool":
            raise TypeError(
                f"ok must be a single boolean, got a tensor {tuple(ok.shape)} {ok.dtype}"
            )
        return bool(ok.item())
    raise TypeError(f"ok must be a boolean, got {type(ok).__name__}: {ok!r}")


def _margin(
    ok: Any,
    measured: Any,
    below: Any,
    above: Any,
    target: Any,
    tol: Any,
    spec: str,
    machine_dependent: bool,
) -> tuple[bool, str]:
    """Whether ``measured`` meets its bound, and the text ``0.6, held to < 667``."""
    if ok is not None:
        raise TypeError("a quantitative claim takes measured= and a bound, not ok")
    forms = [below is not None, above is not None, target is not None or tol is not None]
    if sum(forms) != 1 or (forms[2] and (target is None or tol is None)):
        raise TypeError("give measured= one bound: below=, above=, or target= with tol=")
    x = _number("measured", measured)
    for name, bound in (("below", below), ("above", above), ("target", target), ("tol", tol)):
        if bound is not None and not math.isfinite(_number(name, bound)):
            raise ValueError(
                f"{name} must be finite, got {bound!r}: a claim held to it could not fail"
            )
    number = (lambda v: approx(v, spec)) if machine_dependent else (lambda v: format(v, spec))
    if below is not None:
        b = _number("below", below)
        return x < b, f"{number(x)}, held to < {b:{spec}}"
    if above is not None:
        b = _number("above", above)
        return x > b, f"{number(x)}, held to > {b:{spec}}"
    t, e = _number("target", target), _number("tol", tol)
    if not e >= 0:
        raise ValueError(f"tol must be >= 0, got {e!r}")
    return abs(x - t) <= e, f"{number(x)}, held to {t:{spec}} ± {e:{spec}}"


def _number(name: str, value: Any) -> float:
    """A real number from a Python, NumPy or one-element torch value (NaN passes: it fails)."""
    if type(value).__module__.startswith("torch") and getattr(value, "numel", None) is not None:
        if value.numel() != 1 or value.is_complex() or str(value.dtype) == "torch.bool":
            raise TypeError(f"{name} must be one real number, got a tensor {tuple(value.shape)}")
        value = value.item()
    _real_number(name, value)
    return float(value)


APPROX = "\u2248"  # ≈: the sign that marks a printed number whose last digits depend on the machine


def approx(value: float, spec: str = ".3g") -> str:
    """Format the result of a long or chaotic computation for print, marked ``≈``.

    Its last digits depend on the processor: another instruction set (AVX2 or AVX-512, Intel or
    AMD) sums in another order, and hundreds of training steps amplify that round-off into the
    third digit. The regression suite therefore does not compare a number that follows ``≈``
    (``tests/nbval_sanitize.cfg`` masks it); the chapter holds it to a tolerance from its measured
    spread with :func:`check`, whose line is compared. ``spec`` is a format spec (``"8.3f"``);
    the padding stays where it was, so tables keep their columns.
    """
    _real_number("value", value)
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a format spec string, got {spec!r}")
    try:
        text = format(value, spec)
    except ValueError as exc:
        raise ValueError(f"spec {spec!r} is not a format spec for {value!r}: {exc}") from None
    body = text.lstrip(" ")
    pad = len(text) - len(body)
    return " " * max(pad - 1, 0) + APPROX + body


def below(value: float, bound: float) -> str:
    """Print a round-off residual as the bound it meets: ``"< 1e-14"``.

    A residual's digits are round-off, which differs from one processor to the next (1.1e-15 on
    one machine, 1.6e-15 on another); the bound does not. If ``value`` is not below ``bound``
    the digits are printed after all, with the bound they exceed, so that the regression suite
    fails and a reader sees by how much.
    """
    from hamlib import _checks as check

    _real_number("value", value)  # NaN passes: it prints, and is not below any bound
    bound = check.positive("bound", bound)
    if abs(value) < bound:
        return f"< {bound:g}".replace("e-0", "e-").replace("e+0", "e+")
    return f"{value:.1e} (not below {bound:g})"


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """Wrap a loop in a tqdm progress bar (a widget in Jupyter, text elsewhere).

    ``TQDM_DISABLE=1`` in the environment turns it off, as the regression suite and ``make
    refresh`` do: bars write timings, which differ on every run. (tqdm's own reading of that
    variable does not reach its notebook widget, hence this wrapper.)
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", os.environ.get("TQDM_DISABLE", "") not in ("", "0"))
    return tqdm(iterable, **kwargs)


def claims() -> list[str]:
    """The claims verified since the last :func:`setup`, in order."""
    return list(_claims)


def reset_claims() -> None:
    """Forget the claims verified so far."""
    _claims.clear()


def summary() -> None:
    """Print the numbered list of claims this chapter verified."""
    print(SUMMARY.format(len(_claims)))
    for i, c in enumerate(_claims, 1):
        print(f"{i:3d}. {c}")


@dataclass(frozen=True)
class Source:
    """Source code of a hamlib object: shows as highlighted code in Jupyter and in the book.

    Its plain-text form is the code itself, so the regression suite compares it: when the
    function changes, the stored notebook is stale until it is re-executed.
    """

    name: str
    code: str

    def __repr__(self) -> str:
        return self.code

    def _repr_markdown_(self) -> str:
        return f"```python\n{self.code}\n```"


def show_source(obj: Any) -> Source:
    """Return the source of a hamlib function or class, for display in a chapter.

    Only hamlib's own objects are accepted: the book displays the code that it runs.
    """
    wrapped = getattr(obj, "fn", None)  # a @triton.jit kernel wraps the Python function
    if inspect.isfunction(wrapped):
        obj = wrapped
    module = getattr(obj, "__module__", None) or ""
    if not (module == "hamlib" or module.startswith("hamlib.")):
        raise TypeError(f"obj must be a hamlib function or class, got {obj!r} from {module!r}")
    try:
        code = inspect.getsource(obj)
    except (OSError, TypeError) as exc:  # builtins, objects defined in a notebook
        raise TypeError(f"obj has no retrievable source: {obj!r}") from exc
    return Source(name=f"{module}.{obj.__qualname__}", code=textwrap.dedent(code).rstrip())

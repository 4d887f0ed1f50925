"""One set of argument checks for every hamlib function: one call per argument.

The rules, the same in every module:

- a wrong **type** raises ``TypeError``; a right type with a wrong **value** raises ``ValueError``;
- every message names the argument, says what was expected and shows what came;
- where an ``int`` is meant, Python ints, NumPy integers and 0-d integer arrays or tensors are
  accepted (chapters compute sizes with NumPy), and ``bool`` is refused (``True`` is not a size);
- where a real number is meant, ints and floats of any kind (NumPy, 0-d arrays) are accepted,
  ``bool`` is refused, and NaN always fails; infinities fail unless ``finite=False``;
- tensors are checked for type, then (as asked) dtype, number of dimensions, shape, emptiness,
  device and contiguity, in that order;
- where one of a few options is meant, the option itself is returned (ints checked as ints).

Each check returns the value converted to its plain Python type (``int``, ``float``), so a caller
writes ``n = _checks.integer("n", n, minimum=1)`` and uses ``n`` from then on.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

T = TypeVar("T")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__}: {_show(value)}"


def _is_bool(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (dtype == torch.bool or dtype == np.bool_)


def integer(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional)."""
    if _is_bool(value) or isinstance(value, np.ndarray | Tensor) and value.ndim != 0:
        raise TypeError(f"{name} must be an int, {_got(value)}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, {_got(value)}") from None
    if minimum is not None and n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    if maximum is not None and n > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {n}")
    return n


def seed(name: str, value: Any) -> int:
    """A random seed: an int in ``[0, 2**32 - 1]``, what both ``torch.manual_seed`` and
    ``numpy.random.seed`` accept."""
    return integer(name, value, minimum=0, maximum=2**32 - 1)


def real(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a ``float`` in the interval from ``low`` to ``high`` (closed unless told)."""
    scalar_array = isinstance(value, np.ndarray | Tensor) and value.ndim == 0
    if _is_bool(value) or not (isinstance(value, Real) or scalar_array):
        raise TypeError(f"{name} must be a real number, {_got(value)}")
    try:
        x = float(value)
    except (TypeError, ValueError):  # a complex 0-d array, say
        raise TypeError(f"{name} must be a real number, {_got(value)}") from None
    if math.isnan(x) and not finite:
        raise ValueError(f"{name} must not be NaN")
    if finite and not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    below = x <= low if open_low else x < low
    above = x >= high if open_high else x > high
    if below or above:
        if math.isinf(high):
            want = f"{'>' if open_low else '>='} {low:g}"
        elif math.isinf(low):
            want = f"{'<' if open_high else '<='} {high:g}"
        else:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            want = f"in {left}{low:g}, {high:g}{right}"
        raise ValueError(f"{name} must be {want}, got {x!r}")
    return x


def positive(name: str, value: Any) -> float:
    """A finite real number > 0 (a step size, a scale, a learning rate)."""
    return real(name, value, low=0.0, open_low=True)


def nonnegative(name: str, value: Any) -> float:
    """A finite real number >= 0 (a weight decay, a penalty)."""
    return real(name, value, low=0.0)


def probability(name: str, value: Any, *, open_low: bool = False, open_high: bool = False) -> float:
    """A real number in ``[0, 1]`` (ends open as told)."""
    return real(name, value, low=0.0, high=1.0, open_low=open_low, open_high=open_high)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a NumPy bool too); never a number standing in for one."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, {_got(value)}")
    return bool(value)


def one_of(name: str, value: Any, options: Iterable[T]) -> T:
    """The option equal to ``value``, one of ``options`` (strings, dtypes, sizes, ...). Where the
    options are ints, ``value`` is first checked as an int (so ``True`` and ``2.0`` are refused
    and a NumPy integer is accepted)."""
    options = tuple(options)
    if options and all(isinstance(o, int) and not isinstance(o, bool) for o in options):
        value = integer(name, value)
    elif isinstance(value, Tensor | np.ndarray):  # `in` on an array compares elementwise
        raise TypeError(f"{name} must be one of {options}, {_got(value)}")
    for option in options:
        try:
            if type(value) is type(option) and value == option:
                return option
        except TypeError:  # incomparable
            pass
    if options and not any(isinstance(value, type(o)) for o in options):
        raise TypeError(f"{name} must be one of {options}, {_got(value)}")
    raise ValueError(f"{name} must be one of {options}, got {_show(value)}")


def instance(name: str, value: Any, cls: type[T] | tuple[type, ...]) -> T:
    """``value`` if it is an instance of ``cls`` (a class or a tuple of classes)."""
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name} must be a {names}, {_got(value)}")
    return value  # type: ignore[return-value]


def function(name: str, value: Any) -> Callable[..., Any]:
    """A callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, {_got(value)}")
    return value


def generator(name: str, value: Any) -> torch.Generator | None:
    """A ``torch.Generator`` or ``None`` (torch's default generator for the device in use; it is
    returned as ``None``, because ``torch.default_generator`` is the CPU's)."""
    if value is None:
        return None
    if not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, {_got(value)}")
    return value


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def tensor(
    name: str,
    value: Any,
    *,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    floating: bool = False,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    layout: str | None = None,
    shape: Sequence[int | None] | None = None,
    device: torch.device | str | None = None,
    contiguous: bool = False,
    nonempty: bool = False,
) -> Tensor:
    """A ``torch.Tensor`` with the asked properties. ``shape`` may hold ``None`` for any size;
    ``min_ndim`` allows leading batch dimensions, and ``layout`` (e.g. ``"(..., seq, d)"``) is
    what a message about the dimensions shows."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, {_got(value)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in allowed:
            raise TypeError(f"{name} must have dtype {_dtype_names(allowed)}, got {value.dtype}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in dims:
            want = f"have shape {layout}" if layout else "be " + " or ".join(map(str, dims)) + "-D"
            raise ValueError(f"{name} must {want}, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.dim() < min_ndim:
        want = f"have shape {layout}" if layout else f"be at least {min_ndim}-D"
        raise ValueError(f"{name} must {want}, got shape {tuple(value.shape)}")
    if shape is not None:
        ok = value.dim() == len(shape) and all(
            s is None or s == got for s, got in zip(shape, value.shape, strict=True)
        )
        if not ok:
            want = str(tuple("*" if s is None else s for s in shape)).replace("'*'", "*")
            raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if device is not None:
        where = torch.device(device)  # "cuda" means any GPU; "cuda:1" that one
        if value.device.type != where.type or where.index not in (None, value.device.index):
            raise ValueError(f"{name} must be on {device}, got a tensor on {value.device}")
    if contiguous and not value.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() first")
    return value


def like(name: str, value: Tensor, ref_name: str, ref: Tensor, *, shape: bool = True) -> None:
    """``value`` matches ``ref`` in dtype and device (and shape, unless ``shape=False``)."""
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has {ref.dtype}")
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}")
    if shape and value.shape != ref.shape:
        raise ValueError(
            f"{name} and {ref_name} must have the same shape, "
            f"got {tuple(value.shape)} and {tuple(ref.shape)}"
        )


def array(
    name: str, value: Any, *, ndim: int | None, min_rows: int = 1, positive: bool = False
) -> np.ndarray:
    """A float64 NumPy array of finite numbers (all > 0 if ``positive``) from an array, a tensor
    (detached, moved to the CPU) or a list: ``ndim`` dimensions (``None``: any, a scalar too) and
    at least ``min_rows`` entries along the first."""
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        value = (value.double() if value.is_floating_point() else value).numpy()  # bf16 too
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):  # ragged nested lists
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from None
    if raw.dtype.kind not in "iuf":  # None, strings, objects and booleans are not numbers
        raise TypeError(f"{name} must be an array of numbers, {_got(value)}")
    arr = raw.astype(np.float64)
    if ndim is not None:
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
        if arr.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} rows, got shape {arr.shape}")
        if arr.ndim == 2 and arr.shape[1] < 1:
            raise ValueError(f"{name} needs at least 1 column, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    if positive and not (arr > 0).all():
        raise ValueError(f"{name} must be positive (found a value <= 0)")
    return arr

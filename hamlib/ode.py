r"""Explicit one-step integrators for :math:`\dot x = f(t, x)`, on any time grid (Chapters 5, 8).

One step from :math:`(t, x)` to :math:`t + h` (``h`` may be negative: the samplers of Chapter 8
integrate from noise at t = 1 down to data near t = 0). The Hamiltonian integrators of
:mod:`hamlib.hamiltonian` call :func:`euler_step` and :func:`rk4_step` on the stacked state
:math:`z = (q, p)`; the samplers of :mod:`hamlib.diffusion` call :func:`integrate`.

=========  =====  ================================================  ============================
method     order  step                                              evaluations of f per step
=========  =====  ================================================  ============================
euler      1      :math:`x + h k_1`                                 1
heun       2      :math:`x + \tfrac h2 (k_1 + k_2)`, the trapezoid  2
rk4        4      the classical Runge–Kutta method                  4
=========  =====  ================================================  ============================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["METHODS", "euler_step", "heun_step", "integrate", "rk4_step"]

Field = Callable[[float, Tensor], Tensor]


def euler_step(f: Field, t: float, x: Tensor, h: float) -> Tensor:
    r"""Forward Euler: :math:`x + h\,f(t, x)`."""
    return x + h * f(t, x)


def heun_step(f: Field, t: float, x: Tensor, h: float) -> Tensor:
    r"""Heun's method (explicit trapezoid): :math:`k_1 = f(t, x)`,
    :math:`k_2 = f(t + h, x + h k_1)`, :math:`x + \tfrac h2 (k_1 + k_2)`."""
    k1 = f(t, x)
    k2 = f(t + h, x + h * k1)
    return x + 0.5 * h * (k1 + k2)


def rk4_step(f: Field, t: float, x: Tensor, h: float) -> Tensor:
    r"""The classical fourth-order Runge–Kutta step:
    :math:`x + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)`."""
    k1 = f(t, x)
    k2 = f(t + 0.5 * h, x + 0.5 * h * k1)
    k3 = f(t + 0.5 * h, x + 0.5 * h * k2)
    k4 = f(t + h, x + h * k3)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


METHODS: dict[str, tuple[Callable[[Field, float, Tensor, float], Tensor], int]] = {
    "euler": (euler_step, 1),
    "heun": (heun_step, 2),
    "rk4": (rk4_step, 4),
}
"""Each method's step function and its number of evaluations of f per step."""


def integrate(
    f: Field, x0: Tensor, ts: Tensor | list[float], method: str = "rk4", path: bool = False
) -> Tensor:
    """Integrate :math:`\\dot x = f(t, x)` from ``x0`` at ``ts[0]`` through every time of ``ts``
    (increasing or decreasing, any spacing). Returns the state at ``ts[-1]``, or with
    ``path=True`` the states at every time, shape ``(len(ts), *x0.shape)``."""
    check.function("f", f)
    check.tensor("x0", x0, floating=True)
    step, _ = METHODS[check.one_of("method", method, METHODS)]
    if isinstance(ts, Tensor) and ts.ndim != 1 or not isinstance(ts, Tensor | list | tuple):
        raise TypeError(f"ts must be a 1-D tensor or a list of times, got {type(ts).__name__}")
    times = [float(t) for t in (ts.tolist() if isinstance(ts, Tensor) else ts)]
    if len(times) < 2:
        raise ValueError(f"ts must hold at least two times, got {len(times)}")
    diffs = [b - a for a, b in zip(times, times[1:], strict=False)]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        raise ValueError("ts must be strictly increasing or strictly decreasing")
    x = x0
    states = [x0] if path else None
    for t, h in zip(times, diffs, strict=False):
        x = step(f, t, x, h)
        if states is not None:
            states.append(x)
    return torch.stack(states) if states is not None else x

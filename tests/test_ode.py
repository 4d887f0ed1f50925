"""hamlib.ode: each explicit method converges at its order, in either direction of time, on any
grid; it agrees with scipy's DOP853; bad input is refused; the Hamiltonian integrators that now
call it still take the steps they took before."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from hamlib import hamiltonian as hm
from hamlib import ode

ORDERS = {"euler": 1, "heun": 2, "rk4": 4}
EVALS = {"euler": 1, "heun": 2, "rk4": 4}


def _gauss_decay(t: float, x: torch.Tensor) -> torch.Tensor:
    """dx/dt = -2 t x: x(t) = x(s) exp(-(t^2 - s^2)). Time-dependent, so a method that evaluated
    f at the wrong stage times would lose its order."""
    return -2 * t * x


def _grid(a: float, b: float, n: int) -> list[float]:
    """n steps from a to b, nonuniform: u + sin(2 pi u) / (4 pi) has slope in [1/2, 3/2], so the
    largest step halves when n doubles (what an order measurement needs)."""
    u = np.linspace(0.0, 1.0, n + 1)
    g = u + np.sin(2 * np.pi * u) / (4 * np.pi)
    return list(a + (b - a) * g)


X0 = torch.tensor([[1.0, -0.5], [2.0, 0.25], [0.3, 3.0]], dtype=torch.float64)


@pytest.mark.parametrize("method", ORDERS)
@pytest.mark.parametrize("a, b", [(0.0, 1.5), (1.2, -0.4)], ids=["forward", "backward"])
def test_observed_order_on_a_time_dependent_linear_ode(method: str, a: float, b: float) -> None:
    exact = X0 * math.exp(-(b * b - a * a))
    ns = [40, 80, 160]
    errs = []
    for n in ns:
        ts = _grid(a, b, n)
        assert (np.diff(ts) > 0).all() if b > a else (np.diff(ts) < 0).all()
        x = ode.integrate(_gauss_decay, X0, torch.tensor(ts, dtype=torch.float64), method)
        errs.append((x - exact).abs().max().item())
    slope = -np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert slope == pytest.approx(ORDERS[method], abs=0.15)


@pytest.mark.parametrize("method", ORDERS)
def test_a_single_step_matches_its_taylor_expansion(method: str) -> None:
    # one step of a method of order p is exact to O(h^(p+1)): the local error shrinks by
    # 2^(p+1) when h halves, forward or backward (one step from t = 1 of dx/dt = -2 t x, where
    # no leading error coefficient vanishes: x'' = (4t^2 - 2) x does at t = 0.707)
    step, _ = ode.METHODS[method]
    for sign in (1, -1):
        errs = []
        for h in (0.02 * sign, 0.01 * sign):
            x = step(_gauss_decay, 1.0, X0, h)
            errs.append((x - X0 * math.exp(-((1.0 + h) ** 2 - 1.0))).abs().max().item())
        assert math.log2(errs[0] / errs[1]) == pytest.approx(ORDERS[method] + 1, abs=0.1)


@pytest.mark.parametrize("method", ORDERS)
def test_evaluations_per_step(method: str) -> None:
    calls = []

    def f(t: float, x: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        return -x

    ode.integrate(f, X0, [0.0, 0.1, 0.3, 0.35], method)
    assert len(calls) == 3 * EVALS[method] == 3 * ode.METHODS[method][1]


@pytest.mark.parametrize("method", ORDERS)
def test_path_has_every_state_and_starts_at_x0(method: str) -> None:
    ts = [0.0, 0.2, 0.25, 0.6, 1.0]
    path = ode.integrate(_gauss_decay, X0, ts, method, path=True)
    assert path.shape == (5, *X0.shape) and path.dtype == X0.dtype
    assert torch.equal(path[0], X0)
    assert torch.equal(path[-1], ode.integrate(_gauss_decay, X0, ts, method))
    # each row is the end of the integration over the grid up to it
    assert torch.equal(path[3], ode.integrate(_gauss_decay, X0, ts[:4], method))


def _forced_van_der_pol(t, x):
    """A nonlinear, time-dependent 2-D field, written once for numpy and torch rows."""
    return x[..., 1], -x[..., 0] + 0.5 * (1 - x[..., 0] ** 2) * x[..., 1] + 0.3 * np.cos(t)


def test_rk4_agrees_with_scipy_dop853_on_a_nonlinear_field() -> None:
    def f(t: float, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(_forced_van_der_pol(t, x), -1)

    x0 = torch.tensor([[1.0, 0.0], [-0.5, 1.5], [2.0, -1.0]], dtype=torch.float64)
    ts = _grid(0.0, 4.0, 400)
    path = ode.integrate(f, x0, ts, "rk4", path=True)
    for i, row in enumerate(x0.numpy()):
        ref = solve_ivp(
            lambda t, z: list(_forced_van_der_pol(t, z)),
            (0.0, 4.0),
            row,
            method="DOP853",
            t_eval=ts,
            rtol=1e-13,
            atol=1e-13,
        )
        # RK4's global error with steps of at most 0.015 is ~1e-8 here; DOP853's ~1e-12
        assert np.abs(path[:, i].numpy() - ref.y.T).max() < 5e-8
    # Heun on the same grid is far less accurate (the comparison can tell methods apart)
    heun = ode.integrate(f, x0, ts, "heun")
    assert (heun - path[-1]).abs().max() > 1e-5


def test_integrate_accepts_lists_and_tensors_and_keeps_dtype() -> None:
    x32 = X0.float()
    a = ode.integrate(_gauss_decay, x32, [0.0, 0.5, 1.0])
    b = ode.integrate(_gauss_decay, x32, torch.tensor([0.0, 0.5, 1.0]))
    assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"ts": [0.0]}, ValueError, "ts must hold at least two"),
        ({"ts": []}, ValueError, "ts must hold at least two"),
        ({"ts": [0.0, 1.0, 0.5]}, ValueError, "ts must be strictly"),
        ({"ts": [0.0, 0.0, 1.0]}, ValueError, "ts must be strictly"),
        ({"ts": [1.0, math.nan]}, ValueError, "ts must be strictly"),
        ({"method": "midpoint"}, ValueError, "method must be one of"),
        ({"method": 4}, TypeError, "method"),
        ({"x0": np.zeros(2)}, TypeError, "x0 must be a torch.Tensor"),
        ({"x0": torch.zeros(2, dtype=torch.int64)}, TypeError, "x0 must be a floating"),
        ({"f": None}, TypeError, "f must be callable"),
    ],
)
def test_integrate_rejects_bad_input(kwargs: dict, exc: type, match: str) -> None:
    args = {"f": _gauss_decay, "x0": torch.zeros(2), "ts": [0.0, 1.0], "method": "rk4"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ode.integrate(**args)


# ----------------------------------------------------------------------------- hamiltonian


def _hand_euler(q, p, h, n):
    qs, ps = [q], [p]
    for _ in range(n):
        q, p = q + h * p, p - h * q
        qs.append(q)
        ps.append(p)
    return torch.stack(qs), torch.stack(ps)


def _hand_rk4(q, p, h, n):
    def f(q, p):
        return p, -q

    qs, ps = [q], [p]
    for _ in range(n):
        k1q, k1p = f(q, p)
        k2q, k2p = f(q + 0.5 * h * k1q, p + 0.5 * h * k1p)
        k3q, k3p = f(q + 0.5 * h * k2q, p + 0.5 * h * k2p)
        k4q, k4p = f(q + h * k3q, p + h * k3p)
        q, p = (
            q + h / 6 * (k1q + 2 * k2q + 2 * k3q + k4q),
            p + h / 6 * (k1p + 2 * k2p + 2 * k3p + k4p),
        )
        qs.append(q)
        ps.append(p)
    return torch.stack(qs), torch.stack(ps)


@pytest.mark.parametrize("method, hand", [(hm.euler, _hand_euler), (hm.rk4, _hand_rk4)])
def test_hamiltonian_integrators_take_the_textbook_steps(method, hand) -> None:
    # Bitwise equality is the right test here: the stacked step of hamlib.ode does the same
    # floating-point operations, element by element and in the same order, as these hand-written
    # steps on (q, p) (p + h * (-q) is p - h * q exactly in IEEE arithmetic).
    g = torch.Generator().manual_seed(0)
    q0, p0 = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(2))
    q, p = method(lambda q, p: q, lambda q, p: p, q0, p0, 0.1, 50)
    qh, ph = hand(q0, p0, 0.1, 50)
    assert torch.equal(q, qh) and torch.equal(p, ph)
    # and they are still the integrators they claim to be: Euler's energy grows by 1 + h^2 a step
    if method is hm.euler:
        e0, e = (q0**2 + p0**2), (q[-1] ** 2 + p[-1] ** 2)
        assert torch.allclose(e, e0 * 1.01**50, rtol=1e-12, atol=0)

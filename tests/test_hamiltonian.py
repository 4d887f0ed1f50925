import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.signal import lfilter

from hamlib import hamiltonian as hm
from hamlib import mcmc

INTEGRATORS = [hm.euler, hm.symplectic_euler, hm.leapfrog, hm.rk4]
ORDERS = {hm.euler: 1, hm.symplectic_euler: 1, hm.leapfrog: 2, hm.rk4: 4}


def osc_q(q, p):
    return q


def osc_p(q, p):
    return p


def pend_q(q, p):
    return torch.sin(q)


def f64(*x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("method", INTEGRATORS)
def test_trajectory_shape_dtype_and_initial_state(method):
    q0 = torch.randn(7, 3, dtype=torch.float32)
    p0 = torch.randn(7, 3, dtype=torch.float32)
    q, p = method(osc_q, osc_p, q0, p0, 0.1, 5)
    assert q.shape == p.shape == (6, 7, 3)
    assert q.dtype == torch.float32
    assert torch.equal(q[0], q0) and torch.equal(p[0], p0)
    q, p = method(osc_q, osc_p, q0, p0, 0.1, 0)
    assert q.shape == (1, 7, 3)


@pytest.mark.parametrize("method", INTEGRATORS)
def test_batched_equals_one_by_one(method):
    q0, p0 = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    qb, pb = method(pend_q, osc_p, q0, p0, 0.05, 40)
    for i in range(5):
        qi, pi = method(pend_q, osc_p, q0[i : i + 1], p0[i : i + 1], 0.05, 40)
        assert torch.allclose(qb[:, i], qi[:, 0], rtol=0, atol=1e-14)
        assert torch.allclose(pb[:, i], pi[:, 0], rtol=0, atol=1e-14)


def _dop853(rhs, q0, p0, T):
    """(q, p) at time T of dz/dt = rhs(z), by scipy's DOP853 at tolerance 1e-13."""
    sol = solve_ivp(lambda t, z: rhs(z), (0, T), [q0, p0], method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1]


def _pendulum_reference(q0, p0, T):
    return _dop853(lambda z: [z[1], -math.sin(z[0])], q0, p0, T)


@pytest.mark.parametrize("method", INTEGRATORS)
def test_convergence_order_against_dop853(method):
    T = 2.0
    ref = _pendulum_reference(1.0, 0.5, T)
    errs = []
    hs = [0.1, 0.05, 0.025]
    for h in hs:
        q, p = method(pend_q, osc_p, f64(1.0), f64(0.5), h, round(T / h))
        errs.append(math.hypot(q[-1].item() - ref[0], p[-1].item() - ref[1]))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert slope == pytest.approx(ORDERS[method], abs=0.25)


def test_leapfrog_matches_a_hand_step():
    q, p = hm.leapfrog(pend_q, osc_p, f64(0.3), f64(-0.2), 0.1, 1)
    ph = -0.2 - 0.05 * math.sin(0.3)
    qn = 0.3 + 0.1 * ph
    assert q[1].item() == pytest.approx(qn, abs=1e-15)
    assert p[1].item() == pytest.approx(ph - 0.05 * math.sin(qn), abs=1e-15)


def test_energy_behaviour_on_the_oscillator():
    H = lambda q, p: 0.5 * (q**2 + p**2).sum(-1)  # noqa: E731
    q0, p0 = f64(1.0), f64(0.0)
    drift = {}
    for method in INTEGRATORS:
        q, p = method(osc_q, osc_p, q0, p0, 0.1, 2000)
        drift[method] = hm.energy_drift(H, q[:, None], p[:, None])
    # Euler multiplies the energy by exactly 1 + h^2 per step
    assert drift[hm.euler][-1].item() == pytest.approx(0.5 * (1.01**2000 - 1), rel=1e-9)
    assert drift[hm.leapfrog].abs().max() < 0.1**2 / 8 * 1.01
    assert drift[hm.symplectic_euler].abs().max() < 0.1
    # RK4 drifts monotonically downward
    assert torch.all(torch.diff(drift[hm.rk4]) <= 0)


@pytest.mark.parametrize(
    "method,symplectic",
    [(hm.symplectic_euler, True), (hm.leapfrog, True), (hm.euler, False), (hm.rk4, False)],
)
def test_phase_space_area(method, symplectic):
    def step(z):
        q, p = method(pend_q, osc_p, z[:1], z[1:], 0.3, 1)
        return torch.cat([q[-1], p[-1]])

    J = torch.autograd.functional.jacobian(step, f64(0.7, 0.4))
    det = torch.linalg.det(J).item()
    if symplectic:
        assert det == pytest.approx(1.0, abs=1e-14)
    else:
        assert abs(det - 1.0) > 1e-7


def test_leapfrog_is_time_reversible():
    q0, p0 = torch.randn(100, dtype=torch.float64), torch.randn(100, dtype=torch.float64)
    q, p = hm.leapfrog(pend_q, osc_p, q0, p0, 0.1, 500)
    qb, pb = hm.leapfrog(pend_q, osc_p, q[-1], -p[-1], 0.1, 500)
    assert torch.allclose(qb[-1], q0, atol=1e-10) and torch.allclose(-pb[-1], p0, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(h=st.floats(0.01, 0.5), q=st.floats(-2, 2), p=st.floats(-2, 2))
def test_leapfrog_energy_error_is_bounded_on_the_oscillator(h, q, p):
    H = lambda q, p: 0.5 * (q**2 + p**2)  # noqa: E731
    qs, ps = hm.leapfrog(osc_q, osc_p, f64(q), f64(p), h, 200)
    err = hm.energy_drift(H, qs, ps).abs().max().item()
    # the modified energy q^2/2 + p^2/2 (1 - h^2/4)^{-1}... bounds the error by h^2/4 * H
    assert err <= h * h / 4 * 0.5 * (q * q + p * p) / (1 - h * h / 4) + 1e-12


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"h": 0.0}, ValueError, "h"),
        ({"h": math.nan}, ValueError, "h"),
        ({"h": math.inf}, ValueError, "h"),
        ({"h": "0.1"}, TypeError, "h"),
        ({"h": True}, TypeError, "h"),
        ({"n_steps": -1}, ValueError, "n_steps"),
        ({"n_steps": 2.0}, TypeError, "n_steps"),
        ({"n_steps": True}, TypeError, "n_steps"),
        ({"q0": [1.0]}, TypeError, "q0"),
        ({"p0": torch.zeros(2)}, ValueError, "q0 and p0"),
        ({"p0": torch.zeros(3, dtype=torch.float64)}, TypeError, "p0 has"),
        ({"p0": torch.zeros(3, device="meta")}, ValueError, "p0 is on meta"),
        ({"q0": torch.zeros(3, dtype=torch.int64)}, TypeError, "q0"),
        ({"dH_dq": 3}, TypeError, "dH_dq"),
        ({"dH_dp": None}, TypeError, "dH_dp"),
    ],
)
def test_integrators_reject_bad_input(kwargs, exc, name):
    args = {
        "dH_dq": osc_q,
        "dH_dp": osc_p,
        "q0": torch.zeros(3),
        "p0": torch.zeros(3),
        "h": 0.1,
        "n_steps": 3,
    }
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        hm.leapfrog(**args)


def test_integrators_accept_numpy_sizes():
    q, _ = hm.leapfrog(osc_q, osc_p, f64(1.0), f64(0.0), np.float64(0.1), np.int64(3))
    assert q.shape == (4, 1)


def test_energy_drift_checks_its_arguments():
    with pytest.raises(TypeError, match="H must be callable"):
        hm.energy_drift(None, torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="first dimension is time"):
        hm.energy_drift(lambda q, p: (q * p).sum(), torch.zeros(3, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="q and p must have the same shape"):
        hm.energy_drift(lambda q, p: q, torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        hm.energy_drift(lambda q, p: q, [0.0], torch.zeros(1))
    with pytest.raises(ValueError, match="trajectory"):
        hm.energy_drift(lambda q, p: q, torch.zeros(0, 2), torch.zeros(0, 2))


# ----------------------------------------------------------------------------- HNN


def test_hnn_vector_field_is_the_symplectic_gradient_of_its_energy():
    torch.manual_seed(0)
    model = HNN = hm.HNN(dim=2, hidden=16).double()
    q, p = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    dq_dt, dp_dt = model.vector_field(q, p)
    eps = 1e-6
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        dHdp_i = (HNN(q, p + e) - HNN(q, p - e)) / (2 * eps)
        dHdq_i = (HNN(q + e, p) - HNN(q - e, p)) / (2 * eps)
        assert torch.allclose(dq_dt[:, i], dHdp_i, atol=1e-7)
        assert torch.allclose(dp_dt[:, i], -dHdq_i, atol=1e-7)


def test_hnn_flow_conserves_its_own_energy():
    torch.manual_seed(1)
    model = hm.HNN(dim=1, hidden=32).double().eval()
    q0, p0 = torch.randn(20, 1, dtype=torch.float64), torch.randn(20, 1, dtype=torch.float64)
    q, p = hm.rk4(model.dH_dq, model.dH_dp, q0, p0, 0.01, 100)
    with torch.no_grad():
        drift = hm.energy_drift(model, q, p)
    assert drift.abs().max() < 1e-8


def test_hnn_is_trainable_through_its_vector_field():
    torch.manual_seed(0)
    model = hm.HNN(dim=1, hidden=8)
    q, p = torch.randn(16, 1), torch.randn(16, 1)
    loss = sum(v.pow(2).sum() for v in model.vector_field(q, p))
    loss.backward()
    named = dict(model.named_parameters())
    # The output bias shifts H by a constant, which no vector field can see: it gets no gradient.
    assert named.pop("net.4.bias").grad is None
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in named.values())


@pytest.mark.parametrize("Model", [hm.HNN, hm.MLPField])
def test_models_reject_bad_sizes_and_shapes(Model):
    with pytest.raises(ValueError, match="dim"):
        Model(dim=0)
    with pytest.raises(TypeError, match="dim"):
        Model(dim=2.0)
    with pytest.raises(TypeError, match="dim"):
        Model(dim=True)
    with pytest.raises(ValueError, match="hidden"):
        Model(dim=1, hidden=0)
    with pytest.raises(TypeError, match="hidden"):
        Model(dim=1, hidden="8")
    assert Model(dim=np.int64(2), hidden=np.int64(4)).dim == 2
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        Model(dim=2)(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        Model(dim=2).vector_field(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="p must be a torch.Tensor"):
        Model(dim=1)(torch.zeros(3, 1), [0.0, 0.0, 0.0])


def test_mlp_field_is_callable_like_its_vector_field():
    torch.manual_seed(0)
    model = hm.MLPField(dim=2, hidden=8)
    q, p = torch.randn(5, 2), torch.randn(5, 2)
    dq, dp = model(q, p)
    assert dq.shape == dp.shape == (5, 2)
    assert all(torch.equal(a, b) for a, b in zip((dq, dp), model.vector_field(q, p), strict=True))


# ----------------------------------------------------------------------------- sampling


def _gauss(cov):
    prec = torch.linalg.inv(cov)
    return lambda x: -0.5 * ((x @ prec) * x).sum(-1)


def test_hmc_samples_a_correlated_gaussian():
    cov = f64(1.0, 0.9, 0.9, 1.0).reshape(2, 2)
    x, acc = mcmc.hmc(
        _gauss(cov),
        torch.zeros(8, 2, dtype=torch.float64),
        0.2,
        10,
        800,
        generator=torch.Generator().manual_seed(0),
    )
    assert x.shape == (800, 8, 2) and acc.shape == (8,)
    assert torch.all(acc > 0.8)
    flat = x[100:].reshape(-1, 2)
    assert torch.allclose(torch.cov(flat.T), cov, atol=0.08)
    assert flat.mean(0).abs().max() < 0.08


def test_hmc_with_exact_integration_would_accept_everything_small_steps_nearly_do():
    lp = _gauss(torch.eye(3, dtype=torch.float64))
    _, acc = mcmc.hmc(
        lp,
        torch.zeros(2, 3, dtype=torch.float64),
        0.01,
        5,
        200,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.all(acc > 0.99)
    _, acc = mcmc.hmc(
        lp,
        torch.zeros(2, 3, dtype=torch.float64),
        2.5,
        5,
        200,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.all(acc < 0.2)  # leapfrog is unstable for h > 2 on a unit-variance Gaussian


def test_random_walk_metropolis_samples_a_gaussian():
    lp = _gauss(torch.eye(2, dtype=torch.float64))
    x, acc = mcmc.random_walk_metropolis(
        lp,
        torch.zeros(8, 2, dtype=torch.float64),
        1.0,
        3000,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.all((acc > 0.3) & (acc < 0.8))
    flat = x[200:].reshape(-1, 2)
    assert torch.allclose(flat.var(0), torch.ones(2, dtype=torch.float64), atol=0.1)


def test_samplers_are_reproducible_with_a_generator():
    lp = _gauss(torch.eye(2, dtype=torch.float64))
    a = mcmc.hmc(
        lp, torch.zeros(2, 2, dtype=torch.float64), 0.3, 3, 20, torch.Generator().manual_seed(3)
    )
    b = mcmc.hmc(
        lp, torch.zeros(2, 2, dtype=torch.float64), 0.3, 3, 20, torch.Generator().manual_seed(3)
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_samplers_reject_bad_input():
    lp = _gauss(torch.eye(2, dtype=torch.float64))
    x0 = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="n_leapfrog"):
        mcmc.hmc(lp, x0, 0.1, 0, 10)
    with pytest.raises(TypeError, match="n_leapfrog"):
        mcmc.hmc(lp, x0, 0.1, 3.0, 10)
    with pytest.raises(ValueError, match="step_size"):
        mcmc.hmc(lp, x0, -0.1, 3, 10)
    with pytest.raises(TypeError, match="step_size"):
        mcmc.random_walk_metropolis(lp, x0, "0.1", 10)
    with pytest.raises(ValueError, match="n_samples"):
        mcmc.random_walk_metropolis(lp, x0, 0.1, 0)
    with pytest.raises(TypeError, match="n_samples"):
        mcmc.hmc(lp, x0, 0.1, 3, True)
    with pytest.raises(TypeError, match="generator"):
        mcmc.hmc(lp, x0, 0.1, 3, 10, generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match="log_prob must be callable"):
        mcmc.random_walk_metropolis(None, x0, 0.1, 10)
    with pytest.raises(TypeError, match="x0 must have dtype"):
        mcmc.hmc(lp, torch.zeros(2, dtype=torch.int64), 0.1, 3, 10)
    with pytest.raises(ValueError, match=r"x0 must have shape \(\.\.\., dim\)"):
        mcmc.hmc(lp, torch.tensor(0.0, dtype=torch.float64), 0.1, 3, 10)
    with pytest.raises(ValueError, match="log_prob must return shape"):
        mcmc.hmc(lambda x: x.sum(), torch.zeros(3, 2, dtype=torch.float64), 0.1, 3, 10)
    x, acc = mcmc.hmc(lp, x0, np.float64(0.1), np.int64(2), np.int64(3))
    assert x.shape == (3, 2) and acc.shape == ()


def test_a_log_prob_that_is_not_one_value_per_chain_is_refused():
    # A scalar would broadcast into every chain's accept test: the chains would move together.
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    for sampler in (mcmc.random_walk_metropolis, lambda *a: mcmc.hmc(a[0], a[1], a[2], 2, a[3])):
        with pytest.raises(ValueError, match=r"log_prob must return shape \(4,\)"):
            sampler(lambda x: (x**2).sum(), x0, 0.1, 3)


def test_samplers_return_named_chains():
    chain = mcmc.random_walk_metropolis(_std_normal, torch.zeros(3, 2), 0.5, 4)
    samples, acceptance = chain
    assert chain.samples is samples and chain.acceptance.shape == (3,)


def _std_normal(x):
    return -0.5 * (x * x).sum(-1)


ON_INPUT_DEVICE = {
    "hmc": lambda x: mcmc.hmc(_std_normal, x, 0.1, 3, 5),
    "hmc jittered": lambda x: mcmc.hmc(_std_normal, x, 0.1, 3, 5, jitter=0.2),
    "random_walk_metropolis": lambda x: mcmc.random_walk_metropolis(_std_normal, x, 0.5, 5),
    "attention_particles": lambda x: (hm.attention_particles(x, 1.0, 0.1, 3),),
    "leapfrog": lambda x: hm.leapfrog(osc_q, osc_p, x, x, 0.1, 3),
    "conformal_symplectic_euler": lambda x: hm.conformal_symplectic_euler(
        osc_q, osc_p, x, x, 0.1, 3, gamma=0.5
    ),
}


@pytest.mark.parametrize("name", ON_INPUT_DEVICE)
def test_samplers_and_integrators_create_their_tensors_on_the_inputs_device(name):
    # The meta device stands in for a GPU: a tensor created without device= lands on the CPU,
    # and mixing it with the input's tensors fails as it does on CUDA (hmc did, before the fix).
    x0 = torch.zeros(4, 3, dtype=torch.float64, device="meta")
    for out in ON_INPUT_DEVICE[name](x0):
        assert out.device == x0.device and out.dtype == x0.dtype


def test_ess_of_independent_draws_is_about_n():
    x = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ess = mcmc.effective_sample_size(x)
    assert ess.shape == (3,)
    assert torch.all((ess > 18000) & (ess < 22000))


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_ess_of_an_ar1_chain(phi):
    rng = np.random.default_rng(0)
    n = 200_000
    x = lfilter([1.0], [1.0, -phi], rng.standard_normal(n))
    ess = mcmc.effective_sample_size(torch.tensor(x)).item()
    assert ess == pytest.approx(n * (1 - phi) / (1 + phi), rel=0.1)


def test_ess_rejects_constant_and_short_chains():
    with pytest.raises(ValueError, match="constant"):
        mcmc.effective_sample_size(torch.ones(10, 2))
    with pytest.raises(ValueError, match="n >= 4"):
        mcmc.effective_sample_size(torch.ones(3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mcmc.effective_sample_size(np.ones(10))


# ------------------------------------------------------------ optimizers and attention


def test_conformal_symplectic_euler_is_heavy_ball():
    A = torch.diag(f64(1.0, 10.0))
    eta, beta = 0.01, 0.9
    theta, v = f64(1.0, -1.0), torch.zeros(2, dtype=torch.float64)
    path = [theta]
    for _ in range(50):
        v = beta * v - eta * (theta @ A)
        theta = theta + v
        path.append(theta)
    h = math.sqrt(eta)
    q, p = hm.conformal_symplectic_euler(
        lambda q, p: q @ A,
        osc_p,
        path[0],
        torch.zeros(2, dtype=torch.float64),
        h,
        50,
        gamma=-math.log(beta) / h,
    )
    assert torch.allclose(q, torch.stack(path), atol=1e-14)


def test_conformal_symplectic_euler_contracts_volume_by_exp_minus_gamma_h():
    def step(z):
        q, p = hm.conformal_symplectic_euler(pend_q, osc_p, z[:1], z[1:], 0.2, 1, gamma=0.5)
        return torch.cat([q[-1], p[-1]])

    det = torch.linalg.det(torch.autograd.functional.jacobian(step, f64(0.3, 0.1))).item()
    assert det == pytest.approx(math.exp(-0.5 * 0.2), abs=1e-14)
    with pytest.raises(ValueError, match="gamma"):
        hm.conformal_symplectic_euler(pend_q, osc_p, f64(0.0), f64(0.0), 0.1, 1, gamma=-1.0)
    with pytest.raises(TypeError, match="gamma"):
        hm.conformal_symplectic_euler(pend_q, osc_p, f64(0.0), f64(0.0), 0.1, 1, gamma=None)


def test_conformal_symplectic_euler_in_2d_contracts_form_by_exp_minus_gamma_h():
    # n = 2 degrees of freedom, a coupled potential: the symplectic form shrinks by e^{-gamma h},
    # the 4-D volume by e^{-2 gamma h} (each of the two momenta is scaled by e^{-gamma h})
    def dV(q, p):
        return torch.stack([torch.sin(q[0]) + 0.5 * q[1], q[1] ** 3 + 0.5 * q[0]])

    gamma, h = 0.7, 0.3

    def step(z):
        q, p = hm.conformal_symplectic_euler(dV, osc_p, z[:2], z[2:], h, 1, gamma=gamma)
        return torch.cat([q[-1], p[-1]])

    J = torch.autograd.functional.jacobian(step, f64(0.3, -0.4, 0.2, 0.5))
    omega = torch.zeros(4, 4, dtype=torch.float64)
    omega[:2, 2:], omega[2:, :2] = torch.eye(2), -torch.eye(2)
    decay = math.exp(-gamma * h)
    assert torch.allclose(J.T @ omega @ J, decay * omega, atol=1e-14)
    assert torch.linalg.det(J).item() == pytest.approx(decay**2, abs=1e-14)
    assert torch.linalg.det(J).item() != pytest.approx(decay, abs=1e-3)


def test_attention_particles_stay_on_the_sphere_and_cluster():
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xs = hm.attention_particles(x0, 1.0, 0.1, 300)
    assert xs.shape == (301, 16, 3)
    assert torch.allclose(xs.norm(dim=-1), torch.ones(301, 16, dtype=torch.float64))
    final = xs[-1] @ xs[-1].T
    assert final.min() > 0.999
    with pytest.raises(ValueError, match="x0 must have shape"):
        hm.attention_particles(torch.zeros(3), 1.0, 0.1, 3)
    with pytest.raises(TypeError, match="x0 must have dtype"):
        hm.attention_particles(torch.zeros(3, 2, dtype=torch.int64), 1.0, 0.1, 3)
    with pytest.raises(ValueError, match="beta"):
        hm.attention_particles(x0, math.inf, 0.1, 3)
    with pytest.raises(TypeError, match="beta"):
        hm.attention_particles(x0, "1", 0.1, 3)
    with pytest.raises(ValueError, match="h must"):
        hm.attention_particles(x0, 1.0, -0.1, 3)
    with pytest.raises(TypeError, match="n_steps"):
        hm.attention_particles(x0, 1.0, 0.1, 3.5)


def test_hamiltonian_attention_reduces_to_rescaled_attention_with_a_key_bias():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 8, generator=g, dtype=torch.float64) for _ in range(3))
    lam, alpha, beta, gamma = 0.3, 2.0, 0.5, 0.7
    out = hm.hamiltonian_attention(q, k, v, lam, alpha, beta, gamma)
    scores = (1 / math.sqrt(8) - lam * gamma) * q @ k.transpose(-1, -2)
    expected = torch.softmax(scores - lam * beta * (k * k).sum(-1).unsqueeze(-2), -1) @ v
    assert torch.allclose(out, expected, atol=1e-12)
    other_alpha = hm.hamiltonian_attention(q, k, v, lam, -5.0, beta, gamma)
    assert torch.allclose(out, other_alpha, atol=1e-12)
    with pytest.raises(ValueError, match="incompatible"):
        hm.hamiltonian_attention(q, k[..., :4], v, lam, alpha, beta, gamma)
    with pytest.raises(ValueError, match="incompatible"):
        hm.hamiltonian_attention(q, k, v[0], lam, alpha, beta, gamma)
    with pytest.raises(ValueError, match=r"q must have shape \(\.\.\., n, d\)"):
        hm.hamiltonian_attention(q[0, 0], k[0, 0], v[0, 0], lam, alpha, beta, gamma)
    with pytest.raises(TypeError, match="k has dtype"):
        hm.hamiltonian_attention(q, k.float(), v, lam, alpha, beta, gamma)
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        hm.hamiltonian_attention(q, k, v.tolist(), lam, alpha, beta, gamma)
    for i, name in enumerate(("lam", "alpha", "beta", "gamma")):
        scalars = [lam, alpha, beta, gamma]
        scalars[i] = math.nan
        with pytest.raises(ValueError, match=name):
            hm.hamiltonian_attention(q, k, v, *scalars)
        scalars[i] = "0.5"
        with pytest.raises(TypeError, match=name):
            hm.hamiltonian_attention(q, k, v, *scalars)


def test_hmc_jitter_is_validated_and_changes_the_steps():
    lp = _gauss(torch.eye(2, dtype=torch.float64))
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="jitter"):
        mcmc.hmc(lp, x0, 0.1, 3, 10, jitter=1.0)
    with pytest.raises(ValueError, match="jitter"):
        mcmc.hmc(lp, x0, 0.1, 3, 10, jitter=-0.1)
    with pytest.raises(TypeError, match="jitter"):
        mcmc.hmc(lp, x0, 0.1, 3, 10, jitter=True)
    a = mcmc.hmc(lp, x0, 0.3, 5, 50, torch.Generator().manual_seed(0))[0]
    b = mcmc.hmc(lp, x0, 0.3, 5, 50, torch.Generator().manual_seed(0), jitter=0.2)[0]
    assert not torch.equal(a, b)
    x, acc = mcmc.hmc(
        lp,
        torch.zeros(8, 2, dtype=torch.float64),
        0.3,
        10,
        600,
        torch.Generator().manual_seed(1),
        jitter=0.3,
    )
    assert torch.allclose(
        x[100:].reshape(-1, 2).var(0), torch.ones(2, dtype=torch.float64), atol=0.1
    )


def test_hnn_gradient_cache_is_invalidated_by_weight_updates():
    torch.manual_seed(0)
    model = hm.HNN(dim=1, hidden=8).double()
    q, p = torch.randn(4, 1, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    before = model.dH_dq(q, p).clone()
    assert torch.equal(model.dH_dp(q, p), model.grads(q, p)[1].detach())
    with torch.no_grad():
        model.net[0].weight.mul_(2.0)
    assert not torch.equal(model.dH_dq(q, p), before)
    assert torch.allclose(model.dH_dq(q, p), model.grads(q, p)[0].detach())


# ----------------------------------------------------------------------------- geometry
def _toy_nonseparable():
    """H = p^2 (1 + q^2) / 2 + q^2 / 2: H_q = q (1 + p^2), H_p = p (1 + q^2)."""
    return (lambda q, p: q * (1 + p**2)), (lambda q, p: p * (1 + q**2))


def _toy_reference(q0, p0, T):
    return _dop853(lambda z: [z[1] * (1 + z[0] ** 2), -z[0] * (1 + z[1] ** 2)], q0, p0, T)


@pytest.mark.parametrize("method,order", [(hm.leapfrog, 1), (hm.implicit_midpoint, 2)])
def test_order_on_a_non_separable_hamiltonian(method, order):
    dq, dp = _toy_nonseparable()
    ref = _toy_reference(1.0, 0.5, 1.0)
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for h in hs:
        q, p = method(dq, dp, f64(1.0), f64(0.5), h, round(1 / h))
        errs.append(math.hypot(q[-1].item() - ref[0], p[-1].item() - ref[1]))
    assert np.polyfit(np.log(hs), np.log(errs), 1)[0] == pytest.approx(order, abs=0.1)


def test_implicit_midpoint_is_reversible_where_explicit_leapfrog_is_not():
    dq, dp = _toy_nonseparable()
    miss = {}
    for method in (hm.leapfrog, hm.implicit_midpoint):
        q, p = method(dq, dp, f64(1.0), f64(0.5), 0.05, 200)
        qb, pb = method(dq, dp, q[-1], -p[-1], 0.05, 200)
        miss[method] = math.hypot(qb[-1].item() - 1.0, -pb[-1].item() - 0.5)
    assert miss[hm.implicit_midpoint] < 1e-10
    assert miss[hm.leapfrog] > 0.3  # 0.50 measured


def test_implicit_midpoint_conserves_quadratic_invariants():
    # the oscillator's energy and Kepler's angular momentum are quadratic: kept to round-off
    q, p = hm.implicit_midpoint(osc_q, osc_p, f64(1.0, 0.3), f64(0.0, -0.5), 0.3, 300)
    E = 0.5 * (q**2 + p**2).sum(-1)
    assert (E - E[0]).abs().max().item() < 1e-12

    def kepler_q(q, p):
        return q / q.norm(dim=-1, keepdim=True) ** 3

    q, p = hm.implicit_midpoint(kepler_q, osc_p, f64(0.4, 0.0), f64(0.0, 2.0), 0.02, 500)
    L = q[:, 0] * p[:, 1] - q[:, 1] * p[:, 0]
    assert (L - L[0]).abs().max().item() < 1e-11


def test_implicit_midpoint_is_symplectic_and_solves_its_equation():
    dq, dp = _toy_nonseparable()

    def step(z):
        q, p = hm.implicit_midpoint(dq, dp, z[:1], z[1:], 0.1, 1, tol=1e-15)
        return torch.cat([q[-1], p[-1]])

    # the fixed point satisfies z' = z + h f((z + z') / 2)
    z = f64(0.7, -0.4)
    zn = step(z)
    qm, pm = (z + zn) / 2
    f = torch.stack([dp(qm, pm), -dq(qm, pm)])
    assert torch.allclose(zn, z + 0.1 * f, atol=1e-14)
    # area preservation (1 degree of freedom): det J = 1, where explicit leapfrog is not
    J = torch.autograd.functional.jacobian(step, z)
    assert torch.linalg.det(J).item() == pytest.approx(1.0, abs=1e-12)

    def lf_step(z):
        q, p = hm.leapfrog(dq, dp, z[:1], z[1:], 0.1, 1)
        return torch.cat([q[-1], p[-1]])

    assert abs(torch.linalg.det(torch.autograd.functional.jacobian(lf_step, z)).item() - 1) > 1e-4


def test_implicit_midpoint_raises_when_the_iteration_diverges_and_checks_arguments():
    with pytest.raises(RuntimeError, match="reduce h"):
        hm.implicit_midpoint(osc_q, osc_p, f64(1.0), f64(0.0), 3.0, 1)
    with pytest.raises(ValueError, match="tol"):
        hm.implicit_midpoint(osc_q, osc_p, f64(1.0), f64(0.0), 0.1, 1, tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        hm.implicit_midpoint(osc_q, osc_p, f64(1.0), f64(0.0), 0.1, 1, max_iter=0)
    with pytest.raises(TypeError, match="dH_dq"):
        hm.implicit_midpoint(None, osc_p, f64(1.0), f64(0.0), 0.1, 1)


def test_leapfrog_modified_energy_is_conserved_to_order_h4():
    def V(q):
        return -torch.cos(q).sum(-1)

    slopes = {}
    for name in ("H", "modified"):
        errs, hs = [], [0.2, 0.1, 0.05]
        for h in hs:
            q, p = hm.leapfrog(pend_q, osc_p, f64(2.0), f64(0.0), h, round(50 / h))
            q, p = q[:, None], p[:, None]
            if name == "H":
                E = 0.5 * p[..., 0] ** 2 + V(q)
            else:
                E = hm.leapfrog_modified_energy(V, q, p, h)
            errs.append((E - E[0]).abs().max().item())
        slopes[name] = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert slopes["H"] == pytest.approx(2, abs=0.1)
    assert slopes["modified"] == pytest.approx(4, abs=0.2)


def test_leapfrog_modified_energy_closed_form_and_checks():
    # pendulum: H + h^2 (p^2 cos q / 12 - sin^2 q / 24)
    q, p, h = f64(0.7, -1.2), f64(0.3, 0.9), 0.3
    got = hm.leapfrog_modified_energy(lambda x: -torch.cos(x).sum(-1), q[:, None], p[:, None], h)
    want = 0.5 * p**2 - torch.cos(q) + h**2 * (p**2 * torch.cos(q) / 12 - torch.sin(q) ** 2 / 24)
    assert torch.allclose(got, want, atol=1e-15)
    with pytest.raises(ValueError, match="V must return"):
        hm.leapfrog_modified_energy(lambda x: x, q[:, None], p[:, None], h)
    with pytest.raises(ValueError, match="h"):
        hm.leapfrog_modified_energy(lambda x: x.sum(-1), q[:, None], p[:, None], 0.0)
    with pytest.raises(TypeError, match="V"):
        hm.leapfrog_modified_energy(3, q[:, None], p[:, None], h)


def test_symplecticity_error_closed_form_and_volume_is_weaker():
    # explicit Euler on the oscillator: J^T Omega J = (1 + h^2) Omega, error exactly h^2
    def euler_step(z):
        q, p = hm.euler(osc_q, osc_p, z[:1], z[1:], 0.1, 1)
        return torch.cat([q[-1], p[-1]])

    assert hm.symplecticity_error(euler_step, f64(0.3, 0.2)) == pytest.approx(0.01, abs=1e-15)

    def kepler_q(q, p):
        return q / q.norm(dim=-1, keepdim=True) ** 3

    def lf_kepler(z):
        q, p = hm.leapfrog(kepler_q, osc_p, z[:2], z[2:], 0.1, 5)
        return torch.cat([q[-1], p[-1]])

    z = f64(0.6, 0.2, -0.3, 1.1)
    assert hm.symplecticity_error(lf_kepler, z) < 1e-12

    # stretch q1 by 2, shrink q2 by 2: volume kept (det 1) but not symplectic (error 1.5)
    scale = f64(2.0, 0.5, 1.0, 1.0)
    assert torch.linalg.det(torch.diag(scale)).item() == 1.0
    assert hm.symplecticity_error(lambda z: scale * lf_kepler(z), z) > 1.0
    with pytest.raises(ValueError, match="even"):
        hm.symplecticity_error(lambda z: z, f64(1.0, 2.0, 3.0))
    with pytest.raises(TypeError, match="step"):
        hm.symplecticity_error(None, z)


def test_leapfrog_and_hmc_gradient_counts():
    calls = []

    def counting(q, p):
        calls.append(1)
        return torch.sin(q)

    hm.leapfrog(counting, osc_p, f64(1.0), f64(0.0), 0.1, 10)
    assert len(calls) == 20  # two per step, see the docstring

    n_grads = []

    def log_prob(x):
        if x.requires_grad:
            n_grads.append(1)
        return -0.5 * (x * x).sum(-1)

    mcmc.hmc(log_prob, torch.zeros(2, 3, dtype=torch.float64), 0.1, 7, 5)
    assert len(n_grads) == 1 + 5 * 7  # one at the start, then n_leapfrog per iteration


def test_hmc_with_a_mass_matrix_is_unit_mass_hmc_on_rescaled_coordinates():
    sigma = torch.linspace(0.1, 1.0, 6, dtype=torch.float64)
    x0 = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_px = lambda x: -0.5 * ((x / sigma) ** 2).sum(-1)  # noqa: E731
    log_py = lambda y: log_px(y * sigma)  # noqa: E731
    gx, gy = (torch.Generator().manual_seed(5) for _ in range(2))
    sx, ax = mcmc.hmc(log_px, x0, 0.3, 5, 50, gx, jitter=0.1, inv_mass=sigma**2)
    sy, ay = mcmc.hmc(log_py, x0 / sigma, 0.3, 5, 50, gy, jitter=0.1)
    assert torch.allclose(sx, sy * sigma, atol=1e-10) and torch.equal(ax, ay)
    # unit inverse mass is the default, bit for bit
    s1, _ = mcmc.hmc(log_px, x0, 0.05, 5, 20, torch.Generator().manual_seed(1))
    s2, _ = mcmc.hmc(
        log_px, x0, 0.05, 5, 20, torch.Generator().manual_seed(1), inv_mass=torch.ones(6).double()
    )
    assert torch.equal(s1, s2)
    with pytest.raises(ValueError, match="inv_mass"):
        mcmc.hmc(log_px, x0, 0.1, 2, 2, inv_mass=torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="inv_mass"):
        mcmc.hmc(log_px, x0, 0.1, 2, 2, inv_mass=-torch.ones(6, dtype=torch.float64))
    with pytest.raises(TypeError, match="inv_mass"):
        mcmc.hmc(log_px, x0, 0.1, 2, 2, inv_mass=torch.ones(6, dtype=torch.float32))

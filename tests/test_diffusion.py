"""hamlib.diffusion, each piece against a reference of its own: schedules against their closed
forms, quadrature and autograd; the parametrizations against the formulas written out; the
Gaussian mixture against scipy; the samplers, the ELBO and the ODE likelihood against the exact
solution for Gaussian data (where the probability-flow ODE is linear and solvable); and bad input
refused with a message that names the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from hamlib import diffusion as D

F64 = torch.float64

# Non-default parameters, so that a schedule that ignored its arguments would be caught.
SCHEDULES = {
    "vp": D.Schedule.vp(0.2, 15.0),
    "ve": D.Schedule.ve(0.02, 10.0),
    "linear": D.Schedule.linear(),
}


def _hand(name: str, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """alpha, sigma, d alpha / dt, d sigma / dt of SCHEDULES[name], from the formulas on paper."""
    if name == "vp":
        lo, hi = 0.2, 15.0
        alpha = torch.exp(-0.5 * (lo * t + 0.5 * (hi - lo) * t**2))
        sigma = torch.sqrt(1 - alpha**2)
        d_alpha = -0.5 * (lo + (hi - lo) * t) * alpha
        return alpha, sigma, d_alpha, -alpha * d_alpha / sigma
    if name == "ve":
        lo, hi = 0.02, 10.0
        sigma = lo * (hi / lo) ** t
        return torch.ones_like(t), sigma, torch.zeros_like(t), sigma * math.log(hi / lo)
    return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- schedules


def test_vp_is_variance_preserving_and_starts_at_the_data() -> None:
    s = D.Schedule.vp(0.2, 15.0)
    t = torch.linspace(0, 1, 101, dtype=F64)
    assert torch.allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones_like(t), atol=1e-15)
    assert s.alpha(0.0).item() == 1.0 and s.sigma(0.0).item() == 0.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_values_are_the_closed_forms(name: str) -> None:
    s = SCHEDULES[name]
    t = torch.linspace(0.01, 0.99, 33, dtype=F64)
    for got, want in zip(
        (s.alpha(t), s.sigma(t), s.d_alpha(t), s.d_sigma(t)), _hand(name, t), strict=True
    ):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    # a Python float gives a float64 0-d tensor
    assert s.sigma(0.3).dtype == F64 and s.sigma(0.3).ndim == 0


def test_vp_alpha_is_exp_of_minus_half_the_integral_of_beta() -> None:
    s = D.Schedule.vp(0.2, 15.0)
    for t in (0.05, 0.3, 0.7, 1.0):
        integral, _ = integrate.quad(lambda u: 0.2 + u * (15.0 - 0.2), 0.0, t)
        assert s.alpha(t).item() == pytest.approx(math.exp(-0.5 * integral), rel=1e-13)


@pytest.mark.parametrize("name", SCHEDULES)
def test_derivatives_equal_autograd_and_central_differences(name: str) -> None:
    s = SCHEDULES[name]
    t = torch.linspace(0.02, 0.98, 25, dtype=F64, requires_grad=True)
    for value, deriv in (
        (s.alpha, s.d_alpha),
        (s.sigma, s.d_sigma),
        (s.log_snr, s.d_log_snr),
    ):
        out = value(t)
        # ve's alpha = 1 does not depend on t (its graph is empty): the derivative is 0
        auto = torch.autograd.grad(out.sum(), t)[0] if out.requires_grad else torch.zeros_like(t)
        assert torch.allclose(deriv(t.detach()), auto, rtol=1e-10, atol=1e-12)
        h = 1e-6
        central = (value(t.detach() + h) - value(t.detach() - h)) / (2 * h)
        assert torch.allclose(deriv(t.detach()), central, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", SCHEDULES)
def test_log_snr_decreases_and_t_of_log_snr_inverts_it(name: str) -> None:
    s = SCHEDULES[name]
    t = torch.linspace(0.01, 0.99, 50, dtype=F64)
    lam = s.log_snr(t)
    assert (s.d_log_snr(t) < 0).all() and (lam.diff() < 0).all()
    alpha, sigma, _, _ = _hand(name, t)
    assert torch.allclose(lam, 2 * torch.log(alpha / sigma), rtol=1e-12, atol=1e-12)
    assert torch.allclose(s.t_of_log_snr(lam), t, rtol=0, atol=1e-12)
    grid = torch.linspace(lam.min().item(), lam.max().item(), 40, dtype=F64)
    assert torch.allclose(s.log_snr(s.t_of_log_snr(grid)), grid, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    lo=st.floats(0.01, 5.0),
    span=st.floats(0.1, 30.0),
    t=st.floats(1e-3, 1.0),
)
def test_vp_t_of_log_snr_inverts_log_snr_for_any_betas(lo: float, span: float, t: float) -> None:
    s = D.Schedule.vp(lo, lo + span)
    assert s.t_of_log_snr(s.log_snr(t)).item() == pytest.approx(t, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: D.Schedule.vp(1.0, 1.0), ValueError, "beta_max must exceed beta_min"),
        (lambda: D.Schedule.vp(2.0, 1.0), ValueError, "beta_max must exceed beta_min"),
        (lambda: D.Schedule.vp(0.0, 1.0), ValueError, "beta_min must be > 0"),
        (lambda: D.Schedule.vp(-0.1, 1.0), ValueError, "beta_min must be > 0"),
        (lambda: D.Schedule.vp(0.1, -1.0), ValueError, "beta_max must be > 0"),
        (lambda: D.Schedule.vp(0.1, math.inf), ValueError, "beta_max"),
        (lambda: D.Schedule.vp("0.1", 1.0), TypeError, "beta_min"),
        (lambda: D.Schedule.ve(1.0, 1.0), ValueError, "sigma_max must exceed sigma_min"),
        (lambda: D.Schedule.ve(0.0, 1.0), ValueError, "sigma_min must be > 0"),
        (lambda: D.Schedule.ve(0.1, 0.0), ValueError, "sigma_max must be > 0"),
        (lambda: D.Schedule.ve(math.nan, 1.0), ValueError, "sigma_min"),
    ],
)
def test_schedule_constructors_reject_bad_parameters(make, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_noise_is_alpha_x0_plus_sigma_eps_and_checks_its_input() -> None:
    s, g = SCHEDULES["vp"], _rng(0)
    x0, eps = (torch.randn(6, 3, generator=g, dtype=F64) for _ in range(2))
    t = torch.rand(6, generator=g, dtype=F64)
    alpha, sigma, _, _ = _hand("vp", t)
    assert torch.allclose(s.noise(x0, t, eps), alpha[:, None] * x0 + sigma[:, None] * eps)
    with pytest.raises(ValueError, match=r"x0 must have shape \(batch, d\)"):
        s.noise(x0[0], 0.5, eps[0])
    with pytest.raises(ValueError, match="eps and x0 must have the same shape"):
        s.noise(x0, 0.5, eps[:, :2])
    with pytest.raises(ValueError, match=r"t must be a number or have shape \(6,\)"):
        s.noise(x0, t[:4], eps)


# ----------------------------------------------------------------------------- parametrizations


def _pairs(name: str, seed: int = 0, n: int = 40, d: int = 3):
    """Random x0, eps, t (away from the ends, where the linear path has alpha = 0) and x_t."""
    g = _rng(seed)
    x0, eps = (torch.randn(n, d, generator=g, dtype=F64) for _ in range(2))
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=F64)
    alpha, sigma, d_alpha, d_sigma = (v[:, None] for v in _hand(name, t))
    return x0, eps, t, alpha * x0 + sigma * eps, (alpha, sigma, d_alpha, d_sigma)


@pytest.mark.parametrize("name", SCHEDULES)
def test_target_is_the_formula_written_out(name: str) -> None:
    x0, eps, t, _, (alpha, sigma, d_alpha, d_sigma) = _pairs(name)
    want = {
        "eps": eps,
        "x0": x0,
        "v": alpha * eps - sigma * x0,
        "score": -eps / sigma,
        "velocity": d_alpha * x0 + d_sigma * eps,
    }
    assert set(want) == set(D.KINDS)
    for kind, value in want.items():
        got = D.target(kind, x0, eps, t, SCHEDULES[name])
        assert torch.allclose(got, value, rtol=1e-10, atol=1e-12), kind


@pytest.mark.parametrize("name", SCHEDULES)
def test_convert_maps_every_target_to_every_other(name: str) -> None:
    s = SCHEDULES[name]
    x0, eps, t, x, _ = _pairs(name, seed=1)
    pred = torch.randn(x.shape, generator=_rng(2), dtype=F64)  # any prediction, not a target
    for k1 in D.KINDS:
        for k2 in D.KINDS:
            y1 = D.target(k1, x0, eps, t, s)
            got = D.convert(y1, k1, k2, x, t, s)
            assert torch.allclose(got, D.target(k2, x0, eps, t, s), rtol=1e-9, atol=1e-9)
            back = D.convert(D.convert(pred, k1, k2, x, t, s), k2, k1, x, t, s)
            assert torch.allclose(back, pred, rtol=1e-9, atol=1e-9), (k1, k2)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_loss_is_a_weighted_eps_loss(name: str) -> None:
    # each kind is affine in eps_hat at fixed (x, t) with a scalar slope; loss_weight is its square
    s = SCHEDULES[name]
    _, _, t, x, _ = _pairs(name, seed=3)
    g = _rng(4)
    eps_hat, delta = (torch.randn(x.shape, generator=g, dtype=F64) for _ in range(2))
    for kind in D.KINDS:
        y0 = D.convert(eps_hat, "eps", kind, x, t, s)
        y1 = D.convert(eps_hat + delta, "eps", kind, x, t, s)
        lhs = ((y1 - y0) ** 2).sum(1)
        w = D.loss_weight(kind, t, s)
        assert w.shape == t.shape
        assert torch.allclose(lhs, w * (delta**2).sum(1), rtol=1e-9, atol=0), kind
    # the weights written out: 1, sigma^2 / alpha^2, ((alpha^2 + sigma^2) / alpha)^2, 1 / sigma^2
    alpha, sigma, d_alpha, d_sigma = _hand(name, t)
    want = {
        "eps": torch.ones_like(t),
        "x0": sigma**2 / alpha**2,
        "v": ((alpha**2 + sigma**2) / alpha) ** 2,
        "score": 1 / sigma**2,
        "velocity": (d_sigma - d_alpha / alpha * sigma) ** 2,
    }
    for kind, value in want.items():
        assert torch.allclose(D.loss_weight(kind, t, s), value, rtol=1e-10), kind


@pytest.mark.parametrize("name", SCHEDULES)
def test_velocity_is_the_probability_flow_drift(name: str) -> None:
    # u = f x - g^2 score / 2 with f = alpha'/alpha and g^2 = -sigma^2 lambda'
    #   = 2 sigma sigma' - 2 (alpha'/alpha) sigma^2 (= beta(t) for vp, d sigma^2/dt for ve)
    s = SCHEDULES[name]
    _, _, t, x, (alpha, sigma, d_alpha, d_sigma) = _pairs(name, seed=5)
    score = torch.randn(x.shape, generator=_rng(6), dtype=F64)
    g2 = -(s.sigma(t) ** 2) * s.d_log_snr(t)
    g2_hand = (2 * sigma * d_sigma - 2 * d_alpha / alpha * sigma**2)[:, 0]
    assert torch.allclose(g2, g2_hand, rtol=1e-10)
    if name == "vp":
        assert torch.allclose(g2, 0.2 + t * (15.0 - 0.2), rtol=1e-10)
    if name == "ve":
        assert torch.allclose(g2, (2 * sigma * d_sigma)[:, 0], rtol=1e-10)
    u = D.convert(score, "score", "velocity", x, t, s)
    assert torch.allclose(u, d_alpha / alpha * x - 0.5 * g2[:, None] * score, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- Gaussian mixtures


def _mixture(d: int, seed: int = 0) -> D.GaussianMixture:
    """K = 3 components with full covariances, unnormalized weights."""
    g = _rng(seed)
    a = torch.randn(3, d, d, generator=g, dtype=F64)
    covs = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=F64)
    means = 2 * torch.randn(3, d, generator=g, dtype=F64)
    return D.GaussianMixture(torch.tensor([1.0, 2.0, 3.0], dtype=F64), means, covs)


def _scipy_log_prob(gm: D.GaussianMixture, x: torch.Tensor, alpha=1.0, sigma=0.0) -> np.ndarray:
    """log of sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I), with scipy."""
    eye = np.eye(gm.dim)
    terms = [
        math.log(w) + multivariate_normal(alpha * m, alpha**2 * c + sigma**2 * eye).logpdf(x)
        for w, m, c in zip(gm.weights.tolist(), gm.means.numpy(), gm.covs.numpy(), strict=True)
    ]
    return logsumexp(np.stack(terms, -1), axis=-1)


@pytest.mark.parametrize("d", [2, 3])
def test_mixture_log_prob_matches_scipy(d: int) -> None:
    gm = _mixture(d)
    assert gm.weights.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert torch.allclose(gm.weights, torch.tensor([1, 2, 3], dtype=F64) / 6)
    x = 3 * torch.randn(50, d, generator=_rng(1), dtype=F64)
    np.testing.assert_allclose(gm.log_prob(x).numpy(), _scipy_log_prob(gm, x.numpy()), rtol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", SCHEDULES)
def test_noised_marginal_log_prob_matches_scipy(d: int, name: str) -> None:
    gm, s = _mixture(d), SCHEDULES[name]
    x = 3 * torch.randn(30, d, generator=_rng(2), dtype=F64)
    alpha, sigma, _, _ = (v.item() for v in _hand(name, torch.tensor(0.4, dtype=F64)))
    want = _scipy_log_prob(gm, x.numpy(), alpha, sigma)
    np.testing.assert_allclose(gm.log_prob(x, 0.4, s).numpy(), want, rtol=1e-11)
    np.testing.assert_allclose(gm.noised(s, 0.4).log_prob(x).numpy(), want, rtol=1e-11)
    # one time per row
    t = torch.linspace(0.1, 0.9, 30, dtype=F64)
    for i in (0, 17, 29):
        a, sg, _, _ = (v.item() for v in _hand(name, t[i]))
        ref = _scipy_log_prob(gm, x[i : i + 1].numpy(), a, sg)
        assert gm.log_prob(x, t, s)[i].item() == pytest.approx(ref.item(), rel=1e-11)


def test_noised_marginal_matches_monte_carlo_moments() -> None:
    gm, s, t, n = _mixture(2, seed=3), SCHEDULES["vp"], 0.3, 40_000
    g = _rng(4)
    x0 = gm.sample(n, generator=g)
    assert x0.shape == (n, 2) and x0.dtype == F64
    xt = s.noise(x0, t, torch.randn(n, 2, generator=g, dtype=F64))
    # the mixture's moments, by hand from its parameters
    alpha, sigma, _, _ = (v.item() for v in _hand("vp", torch.tensor(t, dtype=F64)))
    w, m, c = gm.weights, gm.means, gm.covs
    mean = alpha * (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (alpha**2 * (c + m[:, :, None] * m[:, None, :]))).sum(0)
    cov = second + sigma**2 * torch.eye(2, dtype=F64) - mean[:, None] * mean[None, :]
    # ... and of the mixture noised() returns
    nz = gm.noised(s, t)
    nz_mean = (nz.weights[:, None] * nz.means).sum(0)
    nz_second = nz.weights[:, None, None] * (nz.covs + nz.means[:, :, None] * nz.means[:, None, :])
    assert torch.allclose(nz_mean, mean, atol=1e-14)
    assert torch.allclose(nz_second.sum(0) - nz_mean[:, None] * nz_mean, cov, atol=1e-13)
    _assert_moments(xt, mean, cov, n_se=4)


def _assert_moments(
    x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, n_se: float, slack: float = 0.0
) -> None:
    """The sample mean and covariance of x are within n_se standard errors (estimated from the
    sample itself, which need not be Gaussian) plus ``slack`` of mean and cov."""
    n = len(x)
    centered = x - x.mean(0)
    se_mean = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean).abs() <= n_se * se_mean + slack).all(), (x.mean(0), mean)
    products = centered[:, :, None] * centered[:, None, :]
    se_cov = products.std(0) / math.sqrt(n)
    assert ((torch.cov(x.T) - cov).abs() <= n_se * se_cov + slack).all(), (torch.cov(x.T), cov)


@pytest.mark.parametrize("t", [None, 0.05, 0.6])
def test_score_is_the_gradient_of_log_prob_and_eps_is_minus_sigma_score(t) -> None:
    gm, s = _mixture(3, seed=5), SCHEDULES["vp"]
    x = (2 * torch.randn(20, 3, generator=_rng(6), dtype=F64)).requires_grad_(True)
    sched = None if t is None else s
    (auto,) = torch.autograd.grad(gm.log_prob(x, t, sched).sum(), x)
    score = gm.score(x.detach(), t, sched)
    assert torch.allclose(score, auto, rtol=1e-10, atol=1e-12)
    if t is not None:
        sigma = _hand("vp", torch.tensor(t, dtype=F64))[1]
        assert torch.allclose(gm.eps(x.detach(), t, s), -sigma * score, rtol=1e-12)


def test_tweedie_is_the_posterior_mean() -> None:
    # E[x0 | x_t = x] = (x + sigma^2 score) / alpha, against Gaussian conditioning written out:
    # for one component, mu + alpha Sigma C^-1 (x - alpha mu) with C = alpha^2 Sigma + sigma^2 I;
    # for three, the same per component weighted by the responsibilities (from scipy)
    s, t = SCHEDULES["vp"], 0.35
    alpha, sigma, _, _ = (v.item() for v in _hand("vp", torch.tensor(t, dtype=F64)))
    eye = np.eye(2)
    for gm in (_mixture(2, seed=7), _single(seed=8)):
        x = torch.randn(25, 2, generator=_rng(9), dtype=F64)
        tweedie = (x + sigma**2 * gm.score(x, t, s)) / alpha
        logr, means = [], []
        for w, m, c in zip(gm.weights.tolist(), gm.means.numpy(), gm.covs.numpy(), strict=True):
            cc = alpha**2 * c + sigma**2 * eye
            logr.append(math.log(w) + multivariate_normal(alpha * m, cc).logpdf(x.numpy()))
            means.append(m + alpha * (x.numpy() - alpha * m) @ np.linalg.solve(cc, c))
        r = np.exp(np.stack(logr, -1) - logsumexp(np.stack(logr, -1), -1, keepdims=True))
        want = (r.reshape(len(x), -1)[:, :, None] * np.stack(means, 1)).sum(1)
        np.testing.assert_allclose(tweedie.numpy(), want, rtol=1e-10, atol=1e-12)


def _single(seed: int = 0, d: int = 2) -> D.GaussianMixture:
    g = _rng(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    return D.GaussianMixture(
        torch.ones(1, dtype=F64),
        torch.randn(1, d, generator=g, dtype=F64),
        (a @ a.T / d + 0.2 * torch.eye(d, dtype=F64))[None],
    )


def test_mixture_rejects_bad_input() -> None:
    w, m = torch.ones(2, dtype=F64), torch.zeros(2, 2, dtype=F64)
    c = torch.eye(2, dtype=F64).expand(2, 2, 2).clone()
    with pytest.raises(ValueError, match="positive definite"):
        D.GaussianMixture(
            w, m, torch.stack([c[0], torch.diag(torch.tensor([1.0, -1.0], dtype=F64))])
        )
    with pytest.raises(ValueError, match="positive definite"):
        D.GaussianMixture(w, m, torch.zeros(2, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match="symmetric"):
        D.GaussianMixture(w, m, c + torch.tensor([[0.0, 0.5], [0.0, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="weights must be positive"):
        D.GaussianMixture(torch.tensor([1.0, -0.5], dtype=F64), m, c)
    with pytest.raises(ValueError, match="weights must be positive"):
        D.GaussianMixture(torch.tensor([1.0, 0.0], dtype=F64), m, c)
    with pytest.raises(ValueError, match="weights, means and covs must have shapes"):
        D.GaussianMixture(torch.ones(3, dtype=F64), m, c)
    with pytest.raises(ValueError, match="weights, means and covs must have shapes"):
        D.GaussianMixture(w, m, c[:, :1, :1])
    with pytest.raises(ValueError, match=r"means must have shape \(K, d\)"):
        D.GaussianMixture(w, m[0], c)
    with pytest.raises(ValueError, match=r"covs must have shape \(K, d, d\)"):
        D.GaussianMixture(w, m, c[0])
    with pytest.raises(TypeError, match="weights must be a torch.Tensor"):
        D.GaussianMixture([0.5, 0.5], m, c)
    with pytest.raises(ValueError, match="weights must not be empty"):
        D.GaussianMixture(torch.ones(0, dtype=F64), m[:0], c[:0])
    gm = D.GaussianMixture(w, m, c)
    with pytest.raises(ValueError, match="x must have 2 columns"):
        gm.log_prob(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="x must have 2 columns"):
        gm.score(torch.zeros(4, 1, dtype=F64), 0.5, SCHEDULES["vp"])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, d\)"):
        gm.log_prob(torch.zeros(2, dtype=F64))
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        gm.log_prob(torch.zeros(4, 2, dtype=F64), 0.5, None)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        gm.noised(SCHEDULES["vp"], 1.5)
    with pytest.raises(ValueError, match="n must be >= 1"):
        gm.sample(0)
    with pytest.raises(TypeError, match="generator"):
        gm.sample(3, generator=np.random.default_rng(0))


# ----------------------------------------------------------------------------- samplers
# Gaussian data N(mu, Sigma): p_t = N(alpha mu, C_t), C_t = alpha^2 Sigma + sigma^2 I, and the
# probability-flow ODE is linear; its flow from t to s is x -> alpha_s mu + C_s^1/2 C_t^-1/2 (x -
# alpha_t mu) (all the C_t commute with Sigma). vp(0.1, 20): alpha_1 = 0.0066, so p_1 is N(0, I)
# to within 0.006 in the mean and 5e-5 in the covariance, far below the Monte Carlo errors below.
MU = torch.tensor([0.8, -0.4], dtype=F64)
SIGMA = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=F64)
GAUSS = D.GaussianMixture(torch.ones(1, dtype=F64), MU[None], SIGMA[None])
VP = D.Schedule.vp(0.1, 20.0)
T_MIN = 1e-3


def _eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return GAUSS.eps(x, t, VP)


def _p(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and covariance of p_t, by hand."""
    alpha, sigma = (v.item() for v in _hand_vp01(torch.tensor(t, dtype=F64)))
    return alpha * MU, alpha**2 * SIGMA + sigma**2 * torch.eye(2, dtype=F64)


def _hand_vp01(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha and sigma of VP, by hand."""
    alpha = torch.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t**2))
    return alpha, torch.sqrt(1 - alpha**2)


def _flow(t: float, s: float, x: torch.Tensor) -> torch.Tensor:
    """The exact probability-flow map from time t to time s."""
    (mt, ct), (ms, cs) = _p(t), _p(s)
    lam, u = torch.linalg.eigh(ct)
    lam_s = torch.diagonal(u.T @ cs @ u)  # C_s has the eigenvectors of C_t (and of Sigma)
    assert torch.allclose(u.T @ cs @ u, torch.diag(lam_s), atol=1e-12)
    m = u @ torch.diag((lam_s / lam).sqrt()) @ u.T
    return ms + (x - mt) @ m.T


def test_exact_eps_of_a_gaussian_is_sigma_c_inverse_times_the_offset() -> None:
    x = torch.randn(10, 2, generator=_rng(0), dtype=F64)
    for t in (0.01, 0.5, 1.0):
        mean, cov = _p(t)
        sigma = _hand_vp01(torch.tensor(t, dtype=F64))[1].item()
        want = sigma * torch.linalg.solve(cov, (x - mean).T).T
        assert torch.allclose(_eps(x, torch.full((10,), t, dtype=F64)), want, rtol=1e-10)


def test_sample_ode_rk4_maps_noise_to_the_data_marginal() -> None:
    n = 2000
    z = torch.randn(n, 2, generator=_rng(1), dtype=F64)
    ts = torch.linspace(1.0, T_MIN, 51, dtype=F64)
    x = D.sample_ode(_eps, "eps", VP, z, ts, "rk4")
    mean, cov = _p(T_MIN)
    _assert_moments(x, mean, cov, n_se=4)
    # and sample by sample: the exact flow of each draw (RK4's error with 50 steps: 7e-7)
    assert (x - _flow(1.0, T_MIN, z)).abs().max() < 3e-6
    path = D.sample_ode(_eps, "eps", VP, z[:5], ts, "rk4", path=True)
    assert path.shape == (51, 5, 2) and torch.equal(path[0], z[:5])
    assert torch.allclose(path[-1], x[:5], rtol=0, atol=1e-14)


@pytest.mark.parametrize("kind", ["x0", "v", "score", "velocity"])
def test_sample_ode_gives_the_same_flow_from_every_parametrization(kind: str) -> None:
    def pred(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return D.convert(_eps(x, t), "eps", kind, x, t, VP)

    z = torch.randn(6, 2, generator=_rng(2), dtype=F64)
    ts = torch.linspace(1.0, T_MIN, 41, dtype=F64)
    ref = D.sample_ode(_eps, "eps", VP, z, ts, "heun")
    got = D.sample_ode(pred, kind, VP, z, ts, "heun")
    assert torch.allclose(got, ref, rtol=0, atol=1e-10)


def test_sample_ode_euler_and_heun_converge_at_orders_one_and_two() -> None:
    # the reference is the exact flow (which a fine RK4 matches to 1e-11: 800 steps, measured)
    z = torch.randn(8, 2, generator=_rng(3), dtype=F64)
    exact = _flow(1.0, T_MIN, z)
    for method, ratio in (("euler", 2.0), ("heun", 4.0)):
        errs = [
            (
                D.sample_ode(_eps, "eps", VP, z, np.linspace(1.0, T_MIN, n + 1).tolist(), method)
                - exact
            )
            .abs()
            .max()
            .item()
            for n in (20, 40, 80)
        ]
        for a, b in zip(errs, errs[1:], strict=False):
            assert a / b == pytest.approx(ratio, rel=0.12), (method, errs)


def test_ddim_is_euler_in_y_and_tau() -> None:
    # y = x / alpha, tau = sigma / alpha: dy/dtau = eps_hat, and DDIM is its Euler step
    z = torch.randn(7, 2, generator=_rng(4), dtype=F64)
    ts = [1.0, 0.93, 0.8, 0.55, 0.5, 0.31, 0.12, 0.05, 0.01, T_MIN]
    alpha, sigma = _hand_vp01(torch.tensor(ts, dtype=F64))
    tau = sigma / alpha
    y = z / alpha[0]
    for i in range(len(ts) - 1):
        e = _eps(alpha[i] * y, torch.full((7,), ts[i], dtype=F64))
        y = y + (tau[i + 1] - tau[i]) * e
    got = D.ddim(_eps, VP, z, torch.tensor(ts, dtype=F64))
    assert torch.allclose(got, alpha[-1] * y, rtol=0, atol=1e-10)


def _chain_moments(sampler, ts) -> tuple[np.ndarray, np.ndarray]:
    """The exact mean and covariance of the output of ``sampler`` started from N(0, I) on Gaussian
    data: each step is x_s = A x_t + b + c z (see _one_step), so the moments follow by linear
    algebra, m <- A m + b and V <- A V A^T + c^2 I."""
    m, v = np.zeros(2), np.eye(2)
    for t, s in zip(ts, ts[1:], strict=False):
        lin, off, c2 = _one_step(sampler, float(t), float(s))
        m, v = lin @ m + off, lin @ v @ lin.T + c2 * np.eye(2)
    return m, v


@pytest.mark.parametrize("sampler", [D.ancestral, D.euler_maruyama])
def test_stochastic_samplers_reach_the_data_marginal(sampler) -> None:
    n, steps = 2000, 200
    z = torch.randn(n, 2, generator=_rng(5), dtype=F64)
    ts = torch.linspace(1.0, T_MIN, steps + 1, dtype=F64)
    x = sampler(_eps, VP, z, ts, generator=_rng(6))
    # the exact moments of this chain, against which the samples are unbiased
    m, v = (torch.from_numpy(a) for a in _chain_moments(sampler, ts.tolist()))
    _assert_moments(x, m, v, n_se=4)
    # the chain's own discretization error shrinks as steps grow, to p_tmin's moments: 0.026 and
    # 0.0028 for ancestral with 200 and 2000 steps (its variance deficit from using the posterior
    # mean for x0 is O(1/steps)), 0.0036 and 0.0004 for Euler-Maruyama (measured)
    mean, cov = _p(T_MIN)
    err = max((m - mean).abs().max().item(), (v - cov).abs().max().item())
    assert err < 0.04
    m10, v10 = (torch.from_numpy(a) for a in _chain_moments(sampler, np.linspace(1, T_MIN, 2001)))
    err10 = max((m10 - mean).abs().max().item(), (v10 - cov).abs().max().item())
    assert err10 < err / 5
    # so the samples have p_tmin's moments to within 4 standard errors and that bias
    _assert_moments(x, mean, cov, n_se=4, slack=err)
    # a fixed generator makes a run reproducible; another one changes it
    short = ts[::20]
    a, b, c = (sampler(_eps, VP, z[:5], short, generator=_rng(k)) for k in (8, 8, 9))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("sampler", [D.ancestral, D.euler_maruyama])
def test_one_stochastic_step_has_the_textbook_conditional_law(sampler) -> None:
    # one step from t = 0.02 to s = 0.005 (where sigma_s / sigma_t = 0.5, so that every factor
    # of the variance shows) from one point, many times: x_s | x_t is Gaussian with
    # ancestral: the mean and variance of q(x_s | x_t, x0_hat) (see _one_step);
    # euler_maruyama: mean x - h (f x - g^2 score), variance g^2 h = beta(t) h
    n, t, s = 20_000, 0.02, 0.005
    x = torch.tensor([[1.3, -0.7]], dtype=F64).expand(n, 2).clone()
    out = sampler(_eps, VP, x, [t, s], generator=_rng(32))
    lin, off, var = _one_step(sampler, t, s)
    mean = torch.from_numpy(lin @ x[0].numpy() + off)
    _assert_moments(out, mean, var * torch.eye(2, dtype=F64), n_se=4)


def _one_step(sampler, t: float, s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c^2) of the step x_s = A x_t + b + c z of ``sampler`` on Gaussian data, written out
    from the papers with the posterior mean x0_hat = mu + alpha Sigma C^-1 (x - alpha mu) and the
    score -C^-1 (x - alpha mu):
    ancestral: x_s = a x_t + b x0_hat + c z with a = alpha_t|s sigma_s^2 / sigma_t^2,
    b = alpha_s sigma_t|s^2 / sigma_t^2, c^2 = sigma_t|s^2 sigma_s^2 / sigma_t^2 (Ho et al.);
    euler_maruyama: x_s = x_t - h (-(beta / 2) x_t - beta score) + sqrt(beta h) z (for vp,
    f = alpha'/alpha = -beta / 2 and g^2 = beta)."""
    ts = np.array([t, s])
    alphas = np.exp(-0.5 * (0.1 * ts + 0.5 * 19.9 * ts**2))
    sigmas = np.sqrt(1 - alphas**2)
    mu, sig, eye = MU.numpy(), SIGMA.numpy(), np.eye(2)
    at, st, a_s, ss = alphas[0], sigmas[0], alphas[1], sigmas[1]
    c_inv = np.linalg.inv(at**2 * sig + st**2 * eye)
    if sampler is D.ancestral:
        a_ts = at / a_s
        var_ts = st**2 - a_ts**2 * ss**2
        a, b = a_ts * ss**2 / st**2, a_s * var_ts / st**2
        p_mat = at * sig @ c_inv  # x0_hat = P x + (mu - P alpha mu)
        return a * eye + b * p_mat, b * (mu - p_mat @ (at * mu)), var_ts * ss**2 / st**2
    h, beta = t - s, 0.1 + 19.9 * t
    lin = eye - h * (-beta / 2 * eye + beta * c_inv)
    return lin, h * beta * c_inv @ (at * mu), beta * h


def test_edm_sigmas_are_karras_noise_levels() -> None:
    sig = D.edm_sigmas(10, 0.002, 80.0)
    assert sig.shape == (11,) and sig.dtype == F64
    assert sig[0].item() == pytest.approx(80.0, rel=1e-13)
    assert sig[-2].item() == pytest.approx(0.002, rel=1e-11) and sig[-1].item() == 0.0
    assert (sig.diff() < 0).all()
    i = np.arange(10)
    want = (80 ** (1 / 7) + i / 9 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sig[:-1].numpy(), want, rtol=1e-13)
    # rho = 1 spaces them evenly
    np.testing.assert_allclose(
        D.edm_sigmas(5, 1.0, 3.0, rho=1.0).numpy(), [3.0, 2.5, 2.0, 1.5, 1.0, 0.0], rtol=1e-14
    )


def test_edm_heun_with_the_exact_eps_recovers_the_data() -> None:
    # in y = x / alpha and sigma~ = sigma / alpha, p is N(mu, Sigma + sigma~^2 I) at every level
    # and the flow from s0 to 0 is y -> mu + Sigma^1/2 (Sigma + s0^2 I)^-1/2 (y - mu)
    n, s0 = 2000, 80.0
    z = torch.randn(n, 2, generator=_rng(10), dtype=F64)
    y1 = MU + z @ torch.linalg.cholesky(SIGMA + s0**2 * torch.eye(2, dtype=F64)).T
    y = D.edm_heun(_eps, VP, y1, D.edm_sigmas(40, 0.002, s0))
    _assert_moments(y, MU, SIGMA, n_se=4)
    lam, u = torch.linalg.eigh(SIGMA)
    flow = MU + (y1[:50] - MU) @ (u @ torch.diag((lam / (lam + s0**2)).sqrt()) @ u.T).T
    # Heun is second order in the number of levels: 0.06, 0.0135, 0.0032 measured
    errs = [
        (D.edm_heun(_eps, VP, y1[:50], D.edm_sigmas(k, 0.002, s0)) - flow).abs().max().item()
        for k in (20, 40, 80)
    ]
    assert errs[1] < 0.02
    for a, b in zip(errs, errs[1:], strict=False):
        assert a / b == pytest.approx(4.0, rel=0.2)


def test_edm_heun_does_not_depend_on_the_schedule_the_eps_was_defined_on() -> None:
    # in (y, sigma~) the ODE is dy/dsigma~ = eps_hat, and the exact eps_hat at a given sigma~ is
    # the same whatever schedule maps t to it: vp, ve and the straight line give one answer
    y1 = 5 * torch.randn(6, 2, generator=_rng(28), dtype=F64)
    sigmas = D.edm_sigmas(12, 0.05, 5.0)
    outs = [
        D.edm_heun(lambda x, t, s=s: GAUSS.eps(x, t, s), s, y1, sigmas)
        for s in (VP, D.Schedule.ve(0.01, 50.0), D.Schedule.linear())
    ]
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-10)
    assert torch.allclose(outs[0], outs[2], rtol=0, atol=1e-10)


def test_edm_heun_network_evaluations() -> None:
    calls = []

    def counting(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t[0].item())
        return _eps(x, t)

    for n in (2, 5, 12):
        calls.clear()
        sigmas = D.edm_sigmas(n, 0.01, 50.0)
        D.edm_heun(counting, VP, torch.zeros(3, 2, dtype=F64), sigmas)
        assert len(calls) == 2 * (len(sigmas) - 1) - 1
        # from the noisiest level down, never at sigma~ = 0 (t = 0, where eps is 0 / 0)
        assert calls[0] == max(calls) and min(calls) > 0


# ----------------------------------------------------------------------------- measurements


def _gauss_kernel_mean(d: int, h: float, s1: float, s2: float, dm: float) -> float:
    """E k(x, x') for x ~ N(m1, s1^2 I), x' ~ N(m2, s2^2 I), |m1 - m2| = dm."""
    v = h * h + s1 * s1 + s2 * s2
    return (h * h / v) ** (d / 2) * math.exp(-dm * dm / (2 * v))


def test_mmd2_is_unbiased_under_the_null() -> None:
    g = _rng(11)
    values = []
    for _ in range(30):
        x, y = (torch.randn(100, 2, generator=g, dtype=F64) for _ in range(2))
        values.append(D.mmd2(x, y, 1.0))
    mean, se = np.mean(values), np.std(values, ddof=1) / math.sqrt(30)
    # the biased (V-statistic) estimate would sit near 2 (1 - E k) / n = 0.0133 above zero
    assert abs(mean) < 3 * se and 3 * se < 0.005
    assert min(values) < 0  # unbiased estimates go negative


@pytest.mark.parametrize("d", [1, 2])
def test_mmd2_of_two_gaussians_matches_the_closed_form(d: int) -> None:
    h, s1, s2, shift = 0.8, 1.0, 0.6, 0.7
    m2 = torch.zeros(d, dtype=F64)
    m2[0] = shift
    want = (
        _gauss_kernel_mean(d, h, s1, s1, 0.0)
        + _gauss_kernel_mean(d, h, s2, s2, 0.0)
        - 2 * _gauss_kernel_mean(d, h, s1, s2, shift)
    )
    g = _rng(12)
    values = [
        D.mmd2(
            s1 * torch.randn(150, d, generator=g, dtype=F64),
            m2 + s2 * torch.randn(120, d, generator=g, dtype=F64),
            h,
        )
        for _ in range(30)
    ]
    mean, se = np.mean(values), np.std(values, ddof=1) / math.sqrt(30)
    assert want > 0.05 and min(values) > 0
    assert abs(mean - want) < 3 * se


def test_straightness() -> None:
    ts = torch.linspace(0, 1, 2001, dtype=F64)
    # straight lines at constant speed, on a nonuniform grid and backward in time: zero
    a, b = (torch.randn(4, 3, generator=_rng(13), dtype=F64) for _ in range(2))
    warped = ts + 0.3 * torch.sin(math.pi * ts) / math.pi
    line = a + warped[:, None, None] * b
    assert D.straightness(line, warped) == pytest.approx(0.0, abs=1e-20)
    assert D.straightness(line.flip(0), warped.flip(0)) == pytest.approx(0.0, abs=1e-20)
    # a straight line at varying speed is not straight in time: x = t^2 b, chord b, speed 2 t b
    # S = int |b - 2 t b|^2 dt = |b|^2 / 3 per trajectory
    quad = ts[:, None, None] ** 2 * b
    want = (b**2).sum(1).mean().item() / 3
    assert D.straightness(quad, ts) == pytest.approx(want, rel=1e-5)
    # half circles of radius r at constant speed: x = r (cos pi t, sin pi t), chord (-2 r, 0):
    # S = r^2 int |pi (-sin, cos) + (2, 0)|^2 dt = r^2 (pi^2 + 4 - 8) = r^2 (pi^2 - 4)
    r = torch.tensor([1.0, 2.0], dtype=F64)
    circle = (
        r[None, :, None]
        * torch.stack([torch.cos(math.pi * ts), torch.sin(math.pi * ts)], 1)[:, None, :]
    )
    want = (r**2).mean().item() * (math.pi**2 - 4)
    assert D.straightness(circle, ts) == pytest.approx(want, rel=1e-5)
    assert D.straightness(circle.flip(0), ts.flip(0).tolist()) == pytest.approx(want, rel=1e-5)
    # the same curves traversed over times [0, 2], sampled on a nonuniform grid: S scales as 1 / T
    # (velocity and chord / T, the integral * T), and the weights are the steps, not 1 / n
    arc = torch.stack([torch.cos(math.pi * warped), torch.sin(math.pi * warped)], 1)
    assert D.straightness(r[None, :, None] * arc[:, None, :], 2 * warped) == pytest.approx(
        want / 2, rel=1e-5
    )


# ----------------------------------------------------------------------------- ELBO


def _expected_mse(x: torch.Tensor, lam: float) -> torch.Tensor:
    """E_eps |eps - eps_hat(x_t)|^2 for data x0 = x under the exact eps_hat of N(mu, Sigma), at
    log-SNR lam (vp: alpha^2 = sigmoid(lam)). With eps_hat = sigma C^-1 (x_t - alpha mu) and
    x_t = alpha x + sigma eps: eps - eps_hat = M eps - alpha sigma C^-1 (x - mu), where
    M = I - sigma^2 C^-1, so the expectation is tr(M M^T) + |alpha sigma C^-1 (x - mu)|^2."""
    a2, s2 = 1 / (1 + math.exp(-lam)), 1 / (1 + math.exp(lam))
    a, sg = math.sqrt(a2), math.sqrt(s2)
    c_inv = torch.linalg.inv(a2 * SIGMA + s2 * torch.eye(2, dtype=F64))
    m = torch.eye(2, dtype=F64) - s2 * c_inv
    # eps_hat = sigma C^-1 (alpha x + sigma eps - alpha mu)
    offset = a * sg * (x - MU) @ c_inv.T
    return torch.trace(m @ m.T) + (offset**2).sum(1)


def test_elbo_bounds_the_exact_nll_with_the_derived_gap() -> None:
    n = 400
    x = GAUSS.sample(n, generator=_rng(14))
    out = D.elbo(_eps, x, VP, t_min=T_MIN, n_lambda=64, n_noise=4, generator=_rng(15))
    assert set(out) == {"reconstruction", "prior", "diffusion", "total"}
    assert all(v.shape == (n,) for v in out.values())
    nll = -torch.from_numpy(multivariate_normal(MU.numpy(), SIGMA.numpy()).logpdf(x.numpy()))
    gap = out["total"] - nll
    se = gap.std().item() / math.sqrt(n)
    # E[-ELBO] - H(p) derived in closed form (s_i the eigenvalues of Sigma; lambda_0 at t_min,
    # lambda_1 at 1): the diffusion term integrates sigmoid(lambda + log s_i) to softplus, and
    # gap = 1/2 sum log(1 + e^-lambda_0 / s_i) - 1/2 sum log(1 + s_i e^lambda_1) + E[prior]
    s_i = torch.linalg.eigvalsh(SIGMA).tolist()
    (a0, sg0), (a1, sg1) = (
        (v.item() for v in _hand_vp01(torch.tensor(t, dtype=F64))) for t in (T_MIN, 1.0)
    )
    lam0, lam1 = 2 * math.log(a0 / sg0), 2 * math.log(a1 / sg1)
    # E[prior] = 1/2 alpha_1^2 E|x|^2 + d/2 (sigma_1^2 - 1 - log sigma_1^2), with d/2 = 1
    prior = 0.5 * a1**2 * ((MU**2).sum().item() + sum(s_i)) + (sg1**2 - 1 - 2 * math.log(sg1))
    derived = (
        0.5 * sum(math.log1p(math.exp(-lam0) / s) for s in s_i)
        - 0.5 * sum(math.log1p(s * math.exp(lam1)) for s in s_i)
        + prior
    )
    assert 0 < derived < 1e-3  # the bound is nearly tight with the exact eps and small t_min
    # Monte Carlo: the noise in the diffusion term (0.7 nats per sample with n_noise = 4) gives
    # a standard error of 0.035 nats on the mean gap
    assert gap.mean().item() >= -3 * se
    assert abs(gap.mean().item() - derived) < 4 * se and se < 0.05
    # without that noise: the diffusion term's expectation over eps for each x, on the same
    # trapezoid in lambda, written out (with the 1/2 and the integration in lambda, not t) ...
    lams = np.linspace(lam1, lam0, 64)
    expected = 0.5 * torch.trapezoid(
        torch.stack([_expected_mse(x, lam) for lam in lams]), torch.from_numpy(lams), dim=0
    )
    resid = out["diffusion"] - expected
    assert abs(resid.mean().item()) < 4 * resid.std().item() / math.sqrt(n)
    # ... gives a gap that matches the derived one to the trapezoid's error and the spread over
    # x (4e-4 per sample): 4.36e-4 against 4.17e-4 measured
    noiseless = out["reconstruction"] + out["prior"] + expected - nll
    assert noiseless.mean().item() == pytest.approx(derived, abs=1e-4)


def test_elbo_terms_in_closed_form_and_a_worse_model_has_a_worse_bound() -> None:
    x = GAUSS.sample(200, generator=_rng(16))
    out = D.elbo(_eps, x, VP, t_min=0.01, n_lambda=16, n_noise=2, generator=_rng(17))
    (a0, sg0), (a1, sg1) = (
        (v.item() for v in _hand_vp01(torch.tensor(t, dtype=F64))) for t in (0.01, 1.0)
    )
    # KL(N(alpha_1 x, sigma_1^2 I) || N(0, I)) and the Gaussian decoder's expected -log density
    kl = 0.5 * (sg1**2 + a1**2 * x**2 - 1 - math.log(sg1**2)).sum(1)
    assert torch.allclose(out["prior"], kl, rtol=1e-12)
    recon = math.log(2 * math.pi * math.e * sg0**2 / a0**2)  # d / 2 log(...) with d = 2
    # allclose's default rtol of 1e-5: the term is float32 (test_elbo_reconstruction_is_float64)
    assert torch.allclose(out["reconstruction"].double(), torch.full((200,), recon, dtype=F64))
    assert torch.allclose(out["total"], out["reconstruction"] + out["prior"] + out["diffusion"])

    def half(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * _eps(x, t)

    worse = D.elbo(half, x, VP, t_min=0.01, n_lambda=16, n_noise=2, generator=_rng(17))
    diff = worse["total"] - out["total"]
    assert diff.mean() > 10 * diff.std() / math.sqrt(200)
    assert torch.equal(worse["prior"], out["prior"])


def test_ode_log_likelihood_of_the_exact_flow_is_the_exact_density() -> None:
    # RK4 with 50 steps: 2e-6 measured (1.4e-7 with 100)
    x = GAUSS.sample(10, generator=_rng(18))
    ts = torch.linspace(T_MIN, 1.0, 51, dtype=F64)
    velocity = D.velocity_field(_eps, "eps", VP)
    got = D.ode_log_likelihood(velocity, x, ts, GAUSS.noised(VP, 1.0).log_prob)
    mean, cov = _p(T_MIN)
    want = multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)

    # the standard normal as prior instead is off by little (alpha_1 = 0.0066), but off
    def std_normal(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z**2).sum(1) - math.log(2 * math.pi)

    std = D.ode_log_likelihood(velocity, x, ts[::5], std_normal)
    assert 1e-4 < np.abs(std.numpy() - want).max() < 0.05


def test_hutchinson_divergence_is_unbiased_and_concentrates() -> None:
    gm = _single(seed=19, d=3)

    def velocity(t: float, x: torch.Tensor) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        return D.convert(gm.eps(x, tt, VP), "eps", "velocity", x, tt, VP)

    def prior(z: torch.Tensor) -> torch.Tensor:
        return gm.log_prob(z, 1.0, VP)

    # one point, many copies: each copy gets its own probes, along the same trajectory
    ts = torch.linspace(0.05, 1.0, 9, dtype=F64)
    x = gm.sample(1, generator=_rng(20)).expand(300, 3).clone()
    exact = D.ode_log_likelihood(velocity, x, ts, prior)
    assert torch.allclose(exact, exact[0].expand(300), rtol=0, atol=1e-12)
    one = D.ode_log_likelihood(velocity, x, ts, prior, "hutchinson", 1, _rng(21)) - exact
    sd = one.std().item()
    assert sd > 1e-3  # a random estimate, since the Jacobian is not diagonal
    assert abs(one.mean().item()) < 3 * sd / math.sqrt(300)
    # 16 probes: the error's spread shrinks by 4, and it stays centered
    many = D.ode_log_likelihood(velocity, x[:60], ts, prior, "hutchinson", 16, _rng(22))
    many = many - exact[:60]
    assert abs(many.mean().item()) < 3 * sd / 4 / math.sqrt(60)
    assert many.std().item() == pytest.approx(sd / 4, rel=0.35)


# ----------------------------------------------------------------------------- networks


def test_time_mlp_shapes_and_class_conditioning() -> None:
    torch.manual_seed(0)
    net = D.TimeMLP(3, hidden=16, depth=2)
    x, t = torch.randn(5, 3), torch.rand(5)
    assert net(x, t).shape == (5, 3) and net(x, 0.5).shape == (5, 3)
    assert torch.equal(net(x, 0.5), net(x, torch.full((5,), 0.5)))
    assert not torch.allclose(net(x, 0.2), net(x, 0.7))  # it does see t
    with pytest.raises(ValueError, match="c was given but the network has n_classes=0"):
        net(x, t, torch.zeros(5, dtype=torch.long))
    cond = D.TimeMLP(3, hidden=16, n_classes=4)
    assert cond.embed.num_embeddings == 5  # four classes and "no class"
    c = torch.tensor([0, 1, 2, 3, 0])
    assert cond(x, t, c).shape == (5, 3)
    assert torch.equal(cond(x, t), cond(x, t, torch.full((5,), 4)))
    assert not torch.allclose(cond(x, t, c), cond(x, t))
    with pytest.raises(ValueError, match="dim must be >= 1"):
        D.TimeMLP(0)
    with pytest.raises(TypeError, match="hidden must be an int"):
        D.TimeMLP(2, hidden=1.5)
    with pytest.raises(ValueError, match=r"t must be a number or have shape \(5,\)"):
        net(x, torch.rand(4))


def _bayes_eps_risk(t_min: float) -> float:
    """min E|eps - f(x_t, t)|^2 over f, for N(MU, SIGMA) data and t ~ U[t_min, 1] on VP: the
    trace of Cov(eps | x_t), sum_i sigmoid(lambda_t + log s_i), averaged over t."""
    s_i = torch.linalg.eigvalsh(SIGMA).tolist()

    def risk(t: float) -> float:
        a2 = math.exp(-(0.1 * t + 0.5 * 19.9 * t * t))
        return sum(a2 * s / (a2 * s + 1 - a2) for s in s_i)

    return integrate.quad(risk, t_min, 1.0)[0] / (1 - t_min)


def test_train_decreases_the_loss_towards_the_bayes_risk() -> None:
    torch.manual_seed(0)
    net = D.TimeMLP(2, hidden=32).double()
    data = GAUSS.sample(4096, generator=_rng(23))
    losses = D.train(net, data, VP, "eps", steps=100, batch=128, lr=5e-3, generator=_rng(24))
    assert len(losses) == 100 and all(isinstance(v, float) for v in losses)
    first, last = np.array(losses[:20]), np.array(losses[-50:])
    bayes = _bayes_eps_risk(1e-3)
    se = last.std(ddof=1) / math.sqrt(len(last))
    assert last.mean() < 0.8 * first.mean()
    # no predictor beats the Bayes risk (the summed squared error of the exact eps, 0.388); a
    # loss averaged over dimensions instead of summed would sit at half of it (0.40 measured)
    assert last.mean() > bayes - 3 * se
    assert last.mean() < bayes + 0.1


def test_train_with_labels_and_with_fixed_noise_and_its_checks() -> None:
    data = GAUSS.sample(64, generator=_rng(25))
    labels = torch.randint(0, 3, (64,), generator=_rng(26))
    net = D.TimeMLP(2, hidden=8, n_classes=3).double()
    assert len(D.train(net, data, VP, "v", steps=3, batch=16, labels=labels, p_uncond=0.5)) == 3
    noise = torch.randn(64, 2, generator=_rng(27), dtype=F64)
    flat = D.TimeMLP(2, hidden=8).double()
    losses = D.train(flat, data, D.Schedule.linear(), "velocity", steps=3, batch=16, noise=noise)
    assert len(losses) == 3
    with pytest.raises(ValueError, match="kind must be one of"):
        D.train(flat, data, VP, "noise", steps=1)
    with pytest.raises(ValueError, match="linear schedule trains kind='velocity'"):
        D.train(flat, data, D.Schedule.linear(), "eps", steps=1)
    with pytest.raises(ValueError, match="labels must be a tensor with one row per row of data"):
        D.train(net, data, VP, labels=labels[:10], steps=1)
    with pytest.raises(ValueError, match="labels must be a tensor"):
        D.train(net, data, VP, labels=labels.tolist(), steps=1)
    with pytest.raises(ValueError, match="noise must be a tensor with one row per row of data"):
        D.train(flat, data, VP, noise=noise[:5], steps=1)
    with pytest.raises(ValueError, match="noise and data must have the same shape"):
        D.train(flat, data, VP, noise=noise[:, :1], steps=1)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        D.train(flat, data, VP, steps=0)
    with pytest.raises(TypeError, match="net must be a Module"):
        D.train(lambda x, t: x, data, VP, steps=1)
    with pytest.raises(ValueError, match=r"data must have shape \(batch, d\)"):
        D.train(flat, data[:, 0], VP, steps=1)
    with pytest.raises(ValueError, match="p_uncond"):
        D.train(net, data, VP, labels=labels, p_uncond=1.5, steps=1)


@pytest.mark.parametrize("p_uncond", [0.0, 1.0])
def test_train_drops_labels_to_the_null_class_with_probability_p_uncond(p_uncond: float) -> None:
    # p_uncond = 1: every label becomes "no class" (index 3), so only that embedding row learns;
    # p_uncond = 0: the null row is never used and never changes
    torch.manual_seed(2)
    net = D.TimeMLP(2, hidden=8, n_classes=3).double()
    before = net.embed.weight.detach().clone()
    data = GAUSS.sample(64, generator=_rng(33))
    labels = torch.randint(0, 3, (64,), generator=_rng(34))
    D.train(net, data, VP, steps=3, batch=32, labels=labels, p_uncond=p_uncond, generator=_rng(35))
    moved = (net.embed.weight.detach() != before).any(1).tolist()
    assert moved == ([False, False, False, True] if p_uncond == 1 else [True, True, True, False])


def test_guided_interpolates_the_conditional_and_unconditional_nets() -> None:
    torch.manual_seed(1)
    net = D.TimeMLP(2, hidden=16, n_classes=3).double()
    x, t = torch.randn(4, 2, dtype=F64), torch.rand(4, dtype=F64)
    c = torch.tensor([0, 2, 1, 2])
    cond, uncond = net(x, t, c), net(x, t)
    assert torch.equal(D.guided(net, c, 1.0)(x, t), cond)
    assert torch.equal(D.guided(net, c, 0.0)(x, t), uncond)
    assert torch.allclose(D.guided(net, c, 3.0)(x, t), 3 * cond - 2 * uncond, atol=1e-14)
    # a single class for the whole batch
    one = torch.tensor(2)
    assert torch.equal(D.guided(net, one, 1.0)(x, t), net(x, t, torch.full((4,), 2)))
    with pytest.raises(TypeError, match="w must be a real number"):
        D.guided(net, c, "2")
    with pytest.raises(ValueError, match="w must be a finite number"):
        D.guided(net, c, math.inf)


# ----------------------------------------------------------------------------- bad input

_X = torch.zeros(4, 2, dtype=F64)
_T = torch.full((4,), 0.5, dtype=F64)
_TS = [1.0, 0.5, 0.1]


def _zero_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


BAD = {
    "convert kind": (lambda: D.convert(_X, "noise", "eps", _X, _T, VP), ValueError, "kind"),
    "convert to": (lambda: D.convert(_X, "eps", "epsilon", _X, _T, VP), ValueError, "to must"),
    "convert kind type": (lambda: D.convert(_X, 0, "eps", _X, _T, VP), TypeError, "kind must"),
    "convert 1-D x": (
        lambda: D.convert(_X[0], "eps", "x0", _X[0], 0.5, VP),
        ValueError,
        r"x must have shape \(batch, d\)",
    ),
    "convert pred": (
        lambda: D.convert(_X[:, :1], "eps", "x0", _X, _T, VP),
        ValueError,
        "pred and x must have the same shape",
    ),
    "convert schedule": (
        lambda: D.convert(_X, "eps", "x0", _X, _T, "vp"),
        TypeError,
        "schedule must be a Schedule",
    ),
    "convert t": (lambda: D.convert(_X, "eps", "x0", _X, _T[:3], VP), ValueError, "t must"),
    "target kind": (lambda: D.target("noise", _X, _X, _T, VP), ValueError, "kind must be one"),
    "target 1-D x0": (lambda: D.target("eps", _X[0], _X[0], 0.5, VP), ValueError, "x0 must"),
    "target eps": (lambda: D.target("eps", _X, _X.float(), _T, VP), TypeError, "eps has dtype"),
    "loss_weight kind": (lambda: D.loss_weight("EPS", 0.5, VP), ValueError, "kind must be one"),
    "loss_weight schedule": (lambda: D.loss_weight("eps", 0.5, None), TypeError, "schedule"),
    "velocity_field kind": (
        lambda: D.velocity_field(_zero_eps, "flow", VP),
        ValueError,
        "kind must be one of",
    ),
    "sample_ode 1-D x1": (
        lambda: D.sample_ode(_zero_eps, "eps", VP, _X[0], _TS),
        ValueError,
        r"x1 must have shape \(batch, d\)",
    ),
    "sample_ode method": (
        lambda: D.sample_ode(_zero_eps, "eps", VP, _X, _TS, "leapfrog"),
        ValueError,
        "method must be one of",
    ),
    "sample_ode ts": (
        lambda: D.sample_ode(_zero_eps, "eps", VP, _X, [1.0]),
        ValueError,
        "ts must hold at least two",
    ),
    "ddim increasing ts": (
        lambda: D.ddim(_zero_eps, VP, _X, [0.1, 0.5, 1.0]),
        ValueError,
        "ts must .* strictly decreasing",
    ),
    "ddim repeated ts": (
        lambda: D.ddim(_zero_eps, VP, _X, [1.0, 0.5, 0.5]),
        ValueError,
        "ts must .* strictly decreasing",
    ),
    "ddim one time": (lambda: D.ddim(_zero_eps, VP, _X, [1.0]), ValueError, "ts must hold"),
    "ddim 1-D x1": (lambda: D.ddim(_zero_eps, VP, _X[0], _TS), ValueError, "x1 must have"),
    "ddim schedule": (lambda: D.ddim(_zero_eps, 1.0, _X, _TS), TypeError, "schedule must"),
    "ancestral increasing ts": (
        lambda: D.ancestral(_zero_eps, VP, _X, torch.tensor([0.1, 0.5])),
        ValueError,
        "ts must .* strictly decreasing",
    ),
    "ancestral generator": (
        lambda: D.ancestral(_zero_eps, VP, _X, _TS, generator=0),
        TypeError,
        "generator must be a torch.Generator",
    ),
    "ancestral 1-D x1": (lambda: D.ancestral(_zero_eps, VP, _X[0], _TS), ValueError, "x1"),
    "euler_maruyama increasing ts": (
        lambda: D.euler_maruyama(_zero_eps, VP, _X, [0.1, 0.5]),
        ValueError,
        "ts must .* strictly decreasing",
    ),
    "euler_maruyama generator": (
        lambda: D.euler_maruyama(_zero_eps, VP, _X, _TS, generator="seed"),
        TypeError,
        "generator",
    ),
    "edm_sigmas n": (lambda: D.edm_sigmas(1, 0.1, 1.0), ValueError, "n must be >= 2"),
    "edm_sigmas n type": (lambda: D.edm_sigmas(5.0, 0.1, 1.0), TypeError, "n must be an int"),
    "edm_sigmas order": (
        lambda: D.edm_sigmas(5, 1.0, 0.1),
        ValueError,
        "sigma_max must exceed sigma_min",
    ),
    "edm_sigmas sigma_min": (lambda: D.edm_sigmas(5, 0.0, 1.0), ValueError, "sigma_min"),
    "edm_sigmas rho": (lambda: D.edm_sigmas(5, 0.1, 1.0, rho=0.0), ValueError, "rho must be"),
    "edm_heun no final 0": (
        lambda: D.edm_heun(_zero_eps, VP, _X, torch.tensor([2.0, 1.0, 0.5], dtype=F64)),
        ValueError,
        "sigmas must decrease strictly and end at 0",
    ),
    "edm_heun increasing": (
        lambda: D.edm_heun(_zero_eps, VP, _X, torch.tensor([1.0, 2.0, 0.0], dtype=F64)),
        ValueError,
        "sigmas must decrease strictly",
    ),
    "edm_heun 1-D x1": (
        lambda: D.edm_heun(_zero_eps, VP, _X[0], D.edm_sigmas(3, 0.1, 1.0)),
        ValueError,
        "x1 must have",
    ),
    "mmd2 bandwidth 0": (lambda: D.mmd2(_X, _X, 0.0), ValueError, "bandwidth must be > 0"),
    "mmd2 bandwidth < 0": (lambda: D.mmd2(_X, _X, -1.0), ValueError, "bandwidth must be > 0"),
    "mmd2 bandwidth type": (lambda: D.mmd2(_X, _X, "1"), TypeError, "bandwidth"),
    "mmd2 columns": (lambda: D.mmd2(_X, _X[:, :1], 1.0), ValueError, "same number of columns"),
    "mmd2 rows": (lambda: D.mmd2(_X[:1], _X, 1.0), ValueError, "at least 2 rows"),
    "mmd2 1-D y": (lambda: D.mmd2(_X, _X[0], 1.0), ValueError, "y must have shape"),
    "straightness ts": (
        lambda: D.straightness(torch.zeros(3, 4, 2, dtype=F64), [0.0, 1.0]),
        ValueError,
        "ts must have one time per row of path",
    ),
    "straightness 2-D path": (
        lambda: D.straightness(torch.zeros(3, 2, dtype=F64), [0.0, 0.5, 1.0]),
        ValueError,
        r"path must have shape \(len\(ts\), n, d\)",
    ),
    "straightness path type": (
        lambda: D.straightness(np.zeros((3, 4, 2)), [0.0, 0.5, 1.0]),
        TypeError,
        "path must be a torch.Tensor",
    ),
    "elbo ve": (
        lambda: D.elbo(_zero_eps, _X, D.Schedule.ve()),
        ValueError,
        "elbo needs a variance-preserving schedule",
    ),
    "elbo linear": (
        lambda: D.elbo(_zero_eps, _X, D.Schedule.linear()),
        ValueError,
        "variance-preserving schedule",
    ),
    "elbo n_lambda": (lambda: D.elbo(_zero_eps, _X, VP, n_lambda=1), ValueError, "n_lambda"),
    "elbo n_noise": (lambda: D.elbo(_zero_eps, _X, VP, n_noise=0), ValueError, "n_noise"),
    "elbo t_min": (lambda: D.elbo(_zero_eps, _X, VP, t_min=1.5), ValueError, "t_min"),
    "elbo 1-D x": (lambda: D.elbo(_zero_eps, _X[0], VP), ValueError, "x must have shape"),
    "ode_log_likelihood divergence": (
        lambda: D.ode_log_likelihood(lambda t, x: x, _X, _TS[::-1], lambda z: z[:, 0], "trace"),
        ValueError,
        "divergence must be one of",
    ),
    "ode_log_likelihood velocity": (
        lambda: D.ode_log_likelihood(None, _X, _TS[::-1], lambda z: z[:, 0]),
        TypeError,
        "velocity must be callable",
    ),
    "ode_log_likelihood prior": (
        lambda: D.ode_log_likelihood(lambda t, x: x, _X, _TS[::-1], 0.0),
        TypeError,
        "prior_log_prob must be callable",
    ),
    "ode_log_likelihood n_probe": (
        lambda: D.ode_log_likelihood(lambda t, x: x, _X, _TS[::-1], lambda z: z[:, 0], n_probe=0),
        ValueError,
        "n_probe must be >= 1",
    ),
    "ode_log_likelihood 1-D x": (
        lambda: D.ode_log_likelihood(lambda t, x: x, _X[0], _TS[::-1], lambda z: z[:, 0]),
        ValueError,
        "x must have shape",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_a_message_naming_the_argument(case: str) -> None:
    call, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ defects found in review
# Each of these failed on the first version of the module.


def test_elbo_reconstruction_is_float64() -> None:
    x = GAUSS.sample(3, generator=_rng(29))
    out = D.elbo(_eps, x, VP, t_min=0.01, n_lambda=4, n_noise=1, generator=_rng(30))
    a0, sg0 = (v.item() for v in _hand_vp01(torch.tensor(0.01, dtype=F64)))
    assert out["reconstruction"].dtype == F64
    assert out["reconstruction"][0].item() == pytest.approx(
        math.log(2 * math.pi * math.e * sg0**2 / a0**2), rel=1e-13
    )


def test_edm_heun_refuses_sigmas_that_are_not_a_tensor() -> None:
    with pytest.raises(TypeError, match="sigmas"):
        D.edm_heun(_zero_eps, VP, _X, [1.0, 0.5, 0.0])


def test_guided_refuses_a_class_that_is_not_a_tensor() -> None:
    net = D.TimeMLP(2, hidden=4, n_classes=2).double()
    with pytest.raises(TypeError, match="c"):
        D.guided(net, [0, 1, 0, 1], 2.0)(_X, _T)


def test_straightness_refuses_repeated_times() -> None:
    with pytest.raises(ValueError, match="ts"):
        D.straightness(torch.zeros(3, 2, 2, dtype=F64), [0.0, 0.0, 1.0])


def test_elbo_refuses_t_min_zero() -> None:
    with pytest.raises(ValueError, match="t_min"):
        D.elbo(_eps, GAUSS.sample(3, generator=_rng(31)), VP, t_min=0.0)


# ----------------------------------------------------------------------------- Chapter 8 helpers
def test_ring_mixture_places_equal_modes_on_a_circle() -> None:
    mix = D.ring_mixture(k=5, radius=3.0, std=0.2)
    assert torch.allclose(mix.means.norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    angles = torch.atan2(mix.means[:, 1], mix.means[:, 0]).remainder(2 * math.pi).sort().values
    assert torch.allclose(angles.diff(), torch.full((4,), 2 * math.pi / 5, dtype=torch.float64))
    assert torch.allclose(mix.covs, 0.04 * torch.eye(2, dtype=torch.float64).expand(5, 2, 2))
    assert torch.allclose(mix.weights, torch.full((5,), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError, match="std"):
        D.ring_mixture(std=0.0)
    with pytest.raises(ValueError, match="k"):
        D.ring_mixture(k=0)


def test_denoise_is_tweedie_and_velocity_is_the_probability_flow() -> None:
    mix = D.ring_mixture()
    vp, line = D.Schedule.vp(), D.Schedule.linear()
    x = mix.noised(vp, 0.3).sample(200, generator=torch.Generator().manual_seed(0))
    tweedie = (x + vp.sigma(0.3) ** 2 * mix.score(x, 0.3, vp)) / vp.alpha(0.3)
    assert torch.allclose(mix.denoise(x, 0.3, vp), tweedie, atol=1e-10)
    via_eps = D.convert(mix.eps(x, 0.4, line), "eps", "velocity", x, 0.4, line)
    assert torch.allclose(mix.velocity(x, 0.4, line), via_eps, atol=1e-10)
    # at t = 1 on the straight path alpha = 0: E[x0 | x1] is the mixture mean (0 here), so u = x
    assert torch.allclose(mix.velocity(x, 1.0, line), x, atol=1e-12)


def test_ddim_clip_keeps_the_clean_estimate_in_the_box_and_is_inert_when_not_needed() -> None:
    vp = D.Schedule.vp()
    x1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = torch.linspace(1, 1e-3, 11, dtype=torch.float64)
    seen = []

    def wild(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # eps pointing far outside
        return -5 * torch.ones_like(x)

    def record(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return wild(x, t)

    out = D.ddim(record, vp, x1, ts, clip=1.0)
    assert out.abs().max() <= 1.1  # x at t_min = alpha x0 + sigma eps, x0 in the box, sigma 0.014
    unclipped = D.ddim(wild, vp, x1, ts)
    assert unclipped.abs().max() > 10
    exact = D.ring_mixture(std=0.15, radius=0.5)
    eps = lambda x, t: exact.eps(x, t, vp)  # noqa: E731
    assert torch.allclose(D.ddim(eps, vp, x1, ts, clip=50.0), D.ddim(eps, vp, x1, ts))
    with pytest.raises(ValueError, match="clip"):
        D.ddim(eps, vp, x1, ts, clip=0.0)


def test_reflow_trains_a_copy_on_its_own_pairs() -> None:
    torch.manual_seed(0)
    flow = D.TimeMLP(2, hidden=8, depth=1)
    before = [p.clone() for p in flow.parameters()]
    new = D.reflow(flow, 64, 4, seed=0, steps=3, batch=16)
    assert all(torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(flow.parameters(), new.parameters(), strict=True)
    )
    with pytest.raises(TypeError, match="flow"):
        D.reflow(torch.nn.Linear(2, 2), 8, 2)
    with pytest.raises(ValueError, match="n_steps"):
        D.reflow(flow, 8, 0)


def test_digits_experiment_end_to_end_on_a_tiny_budget() -> None:
    models = D.train_digits(3, 0, hidden=16, depth=1, batch=8, vae_epochs=1)
    pix, c = D.sample_digits(models, "latent", 2.0, per_class=1, sample_steps=2)
    assert pix.shape == (10, 64) and pix.dtype == torch.float64 and 0 <= pix.min() <= pix.max() <= 1
    assert c.tolist() == list(range(10))
    scores = D.score_digits(models, [0.0, 1.0], per_class=1, sample_steps=2)
    for space in ("pixel", "latent"):
        assert len(scores[space]["accuracy"]) == len(scores[space]["precision"]) == 2
        assert all(0 <= p <= 1 for p in scores[space]["precision"])
    only = D.train_digits(2, 0, hidden=8, depth=1, batch=8, spaces=("pixel",))
    assert "latent" not in only and set(D.score_digits(only, [1.0], 1, 2)) == {"pixel"}
    with pytest.raises(ValueError, match="space"):
        D.sample_digits(only, "latent", 1.0)
    with pytest.raises(ValueError, match="spaces"):
        D.train_digits(2, 0, spaces=("pixels",))


def test_digits_classifier_is_a_real_judge() -> None:
    from hamlib import tasks

    x_train, y_train, x_test, y_test = tasks.digits(1000, 0)
    judge = tasks.digits_classifier(x_train, y_train)
    assert judge.score(x_test.numpy(), y_test.numpy()) > 0.9
    with pytest.raises(ValueError, match="x"):
        tasks.digits_classifier(x_train[:, :10], y_train)

r"""Markov chain Monte Carlo for Chapter 5: Hamiltonian Monte Carlo (leapfrog trajectories with a
Metropolis test), random-walk Metropolis to compare it with, and the effective sample size.

Every sampler runs many independent chains at once: ``x0`` has shape ``(..., dim)``, ``log_prob``
maps such a tensor to one log density per chain, shape ``x0.shape[:-1]``, and the result is a
:class:`Chain` of samples ``(n_samples, *x0.shape)`` and each chain's acceptance rate. Every tensor
is created on ``x0``'s device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["Chain", "effective_sample_size", "hmc", "random_walk_metropolis"]

_FLOATS = (torch.float32, torch.float64)
LogProb = Callable[[Tensor], Tensor]


def _check_sampler_args(
    log_prob: LogProb,
    x0: Tensor,
    step_size: float,
    n_samples: int,
    generator: torch.Generator | None,
) -> tuple[float, int]:
    check.function("log_prob", log_prob)
    check.tensor("x0", x0, dtype=_FLOATS, min_ndim=1, layout="(..., dim)")
    check.generator("generator", generator)  # None stays None: torch's default for x0's device
    return check.positive("step_size", step_size), check.integer("n_samples", n_samples, minimum=1)


class Chain(NamedTuple):
    """What a sampler returns (it unpacks as ``samples, acceptance = ...``)."""

    samples: Tensor  # (n_samples, *x0.shape): the state after each step
    acceptance: Tensor  # x0.shape[:-1]: the fraction of proposals each chain accepted


def _logp(log_prob: LogProb, x: Tensor) -> Tensor:
    """log_prob(x), one value per chain: a scalar would broadcast into every chain's accept test."""
    lp = log_prob(x)
    if not isinstance(lp, Tensor) or lp.shape != x.shape[:-1]:
        got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
        raise ValueError(
            f"log_prob must return shape {tuple(x.shape[:-1])} for x of shape "
            f"{tuple(x.shape)}, got {got}"
        )
    return lp


def _logp_and_grad(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = _logp(log_prob, x)
        (g,) = torch.autograd.grad(lp.sum(), x)
    return lp.detach(), g


def hmc(
    log_prob: LogProb,
    x0: Tensor,
    step_size: float,
    n_leapfrog: int,
    n_samples: int,
    generator: torch.Generator | None = None,
    *,
    jitter: float = 0.0,
    inv_mass: Tensor | None = None,
) -> Chain:
    r"""Hamiltonian Monte Carlo (Duane et al., 1987; Neal, 2011), with a diagonal mass matrix.

    To sample :math:`\pi(x) \propto e^{\log\pi(x)}`, each iteration draws a momentum
    :math:`p \sim N(0, M)`, runs ``n_leapfrog`` leapfrog steps of size ``step_size`` on
    :math:`H(x, p) = -\log\pi(x) + \tfrac12 p^\top M^{-1} p`, and accepts the end point with
    probability :math:`\min(1, e^{-\Delta H})`. Leapfrog's volume preservation and
    reversibility make this Metropolis correction exact.

    ``x0`` has shape ``(..., dim)``: leading dimensions are independent chains, and ``log_prob``
    must map ``(..., dim)`` to ``(...)``. Returns ``(samples, acceptance_rate)`` with samples of
    shape ``(n_samples, *x0.shape)`` and the acceptance rate per chain. Each iteration costs
    ``n_leapfrog`` gradient evaluations: the gradient at the current state is kept from the
    iteration that reached it (first same as last).

    ``inv_mass`` is the diagonal of :math:`M^{-1}`, shape ``(dim,)``; ``None`` means
    :math:`M = I`. With :math:`M^{-1} = \mathrm{diag}(\sigma_i^2)`, the target's variances,
    HMC on x is exactly unit-mass HMC on the rescaled :math:`y_i = x_i/\sigma_i`, whose
    coordinates all have scale 1 (Neal, 2011, section 5.4.1).

    ``jitter`` draws each iteration's step size uniformly from ``step_size * (1 +- jitter)``.
    A fixed trajectory length can be a whole period of some direction of the target, which then
    barely moves; randomizing the step breaks that resonance (Neal, 2011, section 5.4.2.3).
    """
    step_size, n_samples = _check_sampler_args(log_prob, x0, step_size, n_samples, generator)
    n_leapfrog = check.integer("n_leapfrog", n_leapfrog, minimum=1)
    jitter = check.real("jitter", jitter, low=0.0, high=1.0, open_high=True)
    x = x0.detach().clone()
    m_inv, m_sqrt = x.new_ones(x.shape[-1]), x.new_ones(x.shape[-1])
    if inv_mass is not None:
        check.tensor("inv_mass", inv_mass, shape=(x.shape[-1],), layout="(dim,)")
        check.like("inv_mass", inv_mass, "x0", x0, shape=False)
        if not bool(torch.all(inv_mass > 0)) or not bool(torch.all(torch.isfinite(inv_mass))):
            raise ValueError("inv_mass must be positive and finite")
        m_inv, m_sqrt = inv_mass, inv_mass.rsqrt()
    lp, g = _logp_and_grad(log_prob, x)
    samples, accepted = x.new_empty((n_samples, *x.shape)), x.new_zeros(x.shape[:-1])
    for i in range(n_samples):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        p0 = z * m_sqrt  # p ~ N(0, M)
        eps: float | Tensor = step_size
        if jitter:  # a 0-d tensor on x's device: no round trip to the host
            u_eps = torch.rand((), generator=generator, dtype=torch.float64, device=x.device)
            eps = step_size * (1.0 + jitter * (2.0 * u_eps - 1.0))
        xn, pn, gn = x, p0 + 0.5 * eps * g, g
        for j in range(n_leapfrog):
            xn = xn + eps * (m_inv * pn)
            lpn, gn = _logp_and_grad(log_prob, xn)
            pn = pn + (eps if j < n_leapfrog - 1 else 0.5 * eps) * gn
        dH = (-lpn + 0.5 * (m_inv * pn * pn).sum(-1)) - (-lp + 0.5 * (m_inv * p0 * p0).sum(-1))
        u = torch.rand(x.shape[:-1], generator=generator, dtype=x.dtype, device=x.device)
        accept = torch.log(u) < -torch.nan_to_num(dH, nan=math.inf)
        x = torch.where(accept[..., None], xn, x)
        lp = torch.where(accept, lpn, lp)
        g = torch.where(accept[..., None], gn, g)
        accepted += accept
        samples[i] = x
    return Chain(samples, accepted / n_samples)


def random_walk_metropolis(
    log_prob: LogProb,
    x0: Tensor,
    step_size: float,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> Chain:
    r"""Random-walk Metropolis: propose :math:`x' = x + \sigma z` with :math:`z \sim N(0, I)`.

    Same conventions as :func:`hmc`; one density evaluation (no gradient) per iteration.
    """
    sigma, n_samples = _check_sampler_args(log_prob, x0, step_size, n_samples, generator)
    x = x0.detach().clone()
    with torch.no_grad():
        lp = _logp(log_prob, x)
        samples, accepted = x.new_empty((n_samples, *x.shape)), x.new_zeros(x.shape[:-1])
        for i in range(n_samples):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            xn = x + sigma * z
            lpn = _logp(log_prob, xn)
            u = torch.rand(x.shape[:-1], generator=generator, dtype=x.dtype, device=x.device)
            accept = torch.log(u) < lpn - lp
            x = torch.where(accept[..., None], xn, x)
            lp = torch.where(accept, lpn, lp)
            accepted += accept
            samples[i] = x
    return Chain(samples, accepted / n_samples)


def effective_sample_size(x: Tensor) -> Tensor:
    r"""Effective sample size of each coordinate of a chain, ``x`` of shape ``(n, ..., dim)``.

    :math:`\mathrm{ESS} = n / (1 + 2\sum_{t \ge 1} \rho_t)`, with the autocorrelations
    :math:`\rho_t` (computed by FFT) summed over Geyer's initial positive sequence: pairs
    :math:`\rho_{2k} + \rho_{2k+1}` are added while they are positive (Geyer, 1992). Returns a
    tensor of shape ``x.shape[1:]``. For an AR(1) chain with coefficient :math:`\phi` the ESS
    tends to :math:`n(1-\phi)/(1+\phi)`.
    """
    check.tensor("x", x)
    if x.ndim < 1 or x.shape[0] < 4:
        raise ValueError(f"x must have shape (n, ...) with n >= 4 draws, got {tuple(x.shape)}")
    x = x.to(torch.float64)
    n = x.shape[0]
    xc = x - x.mean(0)
    size = 1 << (2 * n - 1).bit_length()
    f = torch.fft.rfft(xc, n=size, dim=0)
    acov = torch.fft.irfft(f * f.conj(), n=size, dim=0)[:n] / n
    var = acov[0]
    if torch.any(var == 0):
        raise ValueError("x has a constant coordinate: its effective sample size is undefined")
    rho = acov / var
    m = (n - 1) // 2
    gamma = rho[0 : 2 * m : 2] + rho[1 : 2 * m : 2]  # Gamma_k = rho_2k + rho_2k+1, k = 0..m-1
    positive = torch.cumprod((gamma > 0).to(torch.float64), dim=0)  # the initial positive run
    tau = -1.0 + 2.0 * (gamma * positive).sum(0)
    return n / torch.clamp(tau, min=1.0 / n)

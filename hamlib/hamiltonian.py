r"""Hamiltonian dynamics: integrators, energy, Hamiltonian neural networks and HMC (Chapter 5).

A Hamiltonian system evolves a position q and a momentum p by

.. math:: \dot q = \partial H / \partial p, \qquad \dot p = -\partial H / \partial q .

Every integrator here has one signature, ``(dH_dq, dH_dp, q0, p0, h, n_steps)``: the two partial
derivatives are called as ``f(q, p)`` on tensors of q's shape, q0 and p0 may carry any leading
batch dimensions (a thousand trajectories are one call), and the result is the trajectory
``(q, p)``, each of shape ``(n_steps + 1, *q0.shape)``, starting with the initial state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hamlib import _checks as check

__all__ = [
    "HNN",
    "Chain",
    "MLPField",
    "attention_particles",
    "conformal_symplectic_euler",
    "effective_sample_size",
    "energy_drift",
    "euler",
    "hamiltonian_attention",
    "hmc",
    "leapfrog",
    "random_walk_metropolis",
    "rk4",
    "symplectic_euler",
]

Field = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- argument checks
_FLOATS = (torch.float32, torch.float64)


def _check_state(q0: Tensor, p0: Tensor, names: tuple[str, str] = ("q0", "p0")) -> None:
    check.tensor(names[0], q0, dtype=_FLOATS)
    check.tensor(names[1], p0, dtype=_FLOATS)
    check.like(names[0], q0, names[1], p0)


def _check_step(h: float, n_steps: int) -> tuple[float, int]:
    return check.positive("h", h), check.integer("n_steps", n_steps, minimum=0)


def _integrate(
    step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], q0: Tensor, p0: Tensor, n_steps: int
) -> tuple[Tensor, Tensor]:
    qs = torch.empty((n_steps + 1, *q0.shape), dtype=q0.dtype, device=q0.device)
    ps = torch.empty_like(qs)
    qs[0], ps[0] = q0, p0
    q, p = q0, p0
    for n in range(n_steps):
        q, p = step(q, p)
        qs[n + 1], ps[n + 1] = q, p
    return qs, ps


def _prepare(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[float, int]:
    check.function("dH_dq", dH_dq)
    check.function("dH_dp", dH_dp)
    _check_state(q0, p0)
    return _check_step(h, n_steps)


# ----------------------------------------------------------------------------- integrators
def euler(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""Explicit (forward) Euler: :math:`q' = q + h\,H_p(q, p)`, :math:`p' = p - h\,H_q(q, p)`.

    First order and not symplectic: on the harmonic oscillator it multiplies the energy by
    :math:`1 + h^2` at every step, so the energy grows exponentially in time.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return q + h * dH_dp(q, p), p - h * dH_dq(q, p)

    return _integrate(step, q0, p0, n_steps)


def symplectic_euler(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""Symplectic Euler: :math:`p' = p - h\,H_q(q, p)`, then :math:`q' = q + h\,H_p(q, p')`.

    First order and symplectic for a separable Hamiltonian :math:`H = T(p) + V(q)`, where it is
    explicit (for a non-separable H this explicit form is not symplectic). It preserves a
    modified energy, so the energy error stays bounded, of order h.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        p = p - h * dH_dq(q, p)
        return q + h * dH_dp(q, p), p

    return _integrate(step, q0, p0, n_steps)


def leapfrog(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""Leapfrog (Störmer–Verlet): a half kick, a drift, a half kick.

    .. math::
        p_{1/2} = p - \tfrac h2 H_q(q, p), \quad q' = q + h\,H_p(q, p_{1/2}), \quad
        p' = p_{1/2} - \tfrac h2 H_q(q', p_{1/2}).

    Second order, symplectic and time-reversible for a separable H = T(p) + V(q); its energy
    error stays bounded, of order :math:`h^2`, over exponentially long times (Hairer, Lubich &
    Wanner, *Geometric Numerical Integration*, 2006).
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    half = 0.5 * h

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        p = p - half * dH_dq(q, p)
        q = q + h * dH_dp(q, p)
        return q, p - half * dH_dq(q, p)

    return _integrate(step, q0, p0, n_steps)


def rk4(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""The classical fourth-order Runge–Kutta method on :math:`z = (q, p)`.

    Fourth order but not symplectic: its energy error is tiny per step and accumulates, drifting
    linearly in time (on the harmonic oscillator each step multiplies the energy by
    :math:`1 - h^6/72 + O(h^8)`).
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)

    def f(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return dH_dp(q, p), -dH_dq(q, p)

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        k1q, k1p = f(q, p)
        k2q, k2p = f(q + 0.5 * h * k1q, p + 0.5 * h * k1p)
        k3q, k3p = f(q + 0.5 * h * k2q, p + 0.5 * h * k2p)
        k4q, k4p = f(q + h * k3q, p + h * k3p)
        return (
            q + h / 6 * (k1q + 2 * k2q + 2 * k3q + k4q),
            p + h / 6 * (k1p + 2 * k2p + 2 * k3p + k4p),
        )

    return _integrate(step, q0, p0, n_steps)


def conformal_symplectic_euler(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int, gamma: float = 0.0
) -> tuple[Tensor, Tensor]:
    r"""Conformal symplectic Euler for :math:`\dot q = H_p`, :math:`\dot p = -H_q - \gamma p`.

    Each step first applies the exact flow of the friction, :math:`p \leftarrow e^{-\gamma h} p`,
    then a symplectic Euler step. It contracts phase-space volume by exactly
    :math:`e^{-\gamma h}` per step, as the true flow does (França, Sulam, Robinson & Vidal,
    "Conformal symplectic and relativistic optimization", NeurIPS 2020). With
    :math:`H = |p|^2/2 + L(q)`, learning rate :math:`\eta = h^2` and momentum
    :math:`\beta = e^{-\gamma h}` it *is* Polyak's heavy-ball method, with velocity :math:`v = hp`.
    ``gamma = 0`` gives symplectic Euler.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    gamma = check.nonnegative("gamma", gamma)
    decay = math.exp(-gamma * h)

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        p = decay * p
        p = p - h * dH_dq(q, p)
        return q + h * dH_dp(q, p), p

    return _integrate(step, q0, p0, n_steps)


def energy_drift(H: Callable[[Tensor, Tensor], Tensor], q: Tensor, p: Tensor) -> Tensor:
    r"""Energy error along trajectories: :math:`H(q_t, p_t) - H(q_0, p_0)` for every t.

    ``q`` and ``p`` are trajectories of shape ``(T, *state)`` as the integrators return them; ``H``
    maps states with any leading dimensions to energies. The result has H's output shape on
    ``(q, p)``, i.e. ``(T, *batch)``.
    """
    check.function("H", H)
    _check_state(q, p, ("q", "p"))
    if q.ndim < 1 or q.shape[0] < 1:
        raise ValueError(f"q must be a trajectory (T, ...) with T >= 1, got {tuple(q.shape)}")
    E = H(q, p)
    if not isinstance(E, Tensor) or E.ndim < 1 or E.shape[0] != q.shape[0]:
        raise ValueError("H(q, p) must return a tensor whose first dimension is time")
    return E - E[:1]


# ----------------------------------------------------------------------------- attention
def _check_attention_particles_args(
    x0: Tensor, beta: float, h: float, n_steps: int
) -> tuple[float, float, int]:
    check.tensor("x0", x0, dtype=_FLOATS, min_ndim=2, layout="(..., n_tokens, d)")
    return (check.real("beta", beta), *_check_step(h, n_steps))


def attention_particles(x0: Tensor, beta: float, h: float, n_steps: int) -> Tensor:
    r"""Tokens on the sphere moved by self-attention (Geshkovski, Letrouit, Polyanskiy & Rigollet,
    "A mathematical perspective on Transformers", 2023), with Q = K = V = I:

    .. math:: \dot x_i = P_{x_i}\Big(\sum_j \frac{e^{\beta\langle x_i, x_j\rangle}}
              {\sum_k e^{\beta\langle x_i, x_k\rangle}}\, x_j\Big),
              \qquad P_x y = y - \langle x, y\rangle x,

    integrated by Euler steps of size h followed by projection back to the sphere (layer norm's
    role). ``x0`` has shape ``(..., n_tokens, d)`` and is normalized first; returns the trajectory,
    shape ``(n_steps + 1, *x0.shape)``.
    """
    beta, h, n_steps = _check_attention_particles_args(x0, beta, h, n_steps)
    x = x0 / x0.norm(dim=-1, keepdim=True)
    xs = torch.empty((n_steps + 1, *x.shape), dtype=x.dtype, device=x.device)
    xs[0] = x
    for n in range(n_steps):
        weights = torch.softmax(beta * x @ x.transpose(-1, -2), dim=-1)
        y = weights @ x
        v = y - (x * y).sum(-1, keepdim=True) * x
        x = x + h * v
        x = x / x.norm(dim=-1, keepdim=True)
        xs[n + 1] = x
    return xs


def _check_hamiltonian_attention_args(
    q: Tensor, k: Tensor, v: Tensor, lam: float, alpha: float, beta: float, gamma: float
) -> tuple[float, float, float, float]:
    for name, t in (("q", q), ("k", k), ("v", v)):
        check.tensor(name, t, floating=True)
    check.like("k", k, "q", q, shape=False)
    check.like("v", v, "q", q, shape=False)
    check.tensor("q", q, min_ndim=2, layout="(..., n, d)")
    same_rank = q.ndim == k.ndim == v.ndim
    if not same_rank or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "q, k and v must have shapes (..., n, d), (..., m, d), (..., m, e), got incompatible "
            f"shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    return (
        check.real("lam", lam),
        check.real("alpha", alpha),
        check.real("beta", beta),
        check.real("gamma", gamma),
    )


def hamiltonian_attention(
    q: Tensor, k: Tensor, v: Tensor, lam: float, alpha: float, beta: float, gamma: float
) -> Tensor:
    r"""The "Hamiltonian attention" proposed in this book's source material, implemented as stated:

    .. math:: \mathrm{softmax}\big(QK^\top/\sqrt d - \lambda H(Q, K)\big)\,V, \qquad
              H_{ij} = \alpha|Q_i|^2 + \beta|K_j|^2 + \gamma\langle Q_i, K_j\rangle .

    The softmax runs over keys j, so the :math:`\alpha|Q_i|^2` term is constant along each row and
    cancels; :math:`\gamma` only rescales the temperature of :math:`QK^\top`; :math:`\beta` adds a
    per-key bias :math:`-\lambda\beta|K_j|^2`. Chapter 5 measures this. Shapes: q (..., n, d),
    k (..., m, d), v (..., m, e).
    """
    lam, alpha, beta, gamma = _check_hamiltonian_attention_args(q, k, v, lam, alpha, beta, gamma)
    d = q.shape[-1]
    dots = q @ k.transpose(-1, -2)
    H = alpha * (q * q).sum(-1, keepdim=True) + beta * (k * k).sum(-1).unsqueeze(-2) + gamma * dots
    return torch.softmax(dots / math.sqrt(d) - lam * H, dim=-1) @ v


# ----------------------------------------------------------------------------- learning H
def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.Tanh(),
        nn.Linear(hidden, hidden),
        nn.Tanh(),
        nn.Linear(hidden, n_out),
    )


class _PhaseSpaceMLP(nn.Module):
    """An MLP on the state (q, p), each of shape (..., dim), with 1 or 2 * dim outputs: the one
    place where the two models below check their sizes and inputs."""

    def __init__(self, dim: int, hidden: int, *, vector_output: bool) -> None:
        super().__init__()
        self.dim = check.integer("dim", dim, minimum=1)
        hidden = check.integer("hidden", hidden, minimum=1)
        self.net = _mlp(2 * self.dim, hidden, 2 * self.dim if vector_output else 1)

    def _state(self, q: Tensor, p: Tensor) -> Tensor:
        """(q, p) checked and concatenated along the last dimension."""
        check.tensor("q", q, floating=True)
        check.tensor("p", p, floating=True)
        if q.shape != p.shape or q.shape[-1:] != (self.dim,):
            raise ValueError(
                f"q and p must both have shape (..., {self.dim}), got "
                f"{tuple(q.shape)} and {tuple(p.shape)}"
            )
        return torch.cat([q, p], dim=-1)


class HNN(_PhaseSpaceMLP):
    r"""Hamiltonian neural network (Greydanus, Dzamba & Yosinski, NeurIPS 2019).

    An MLP outputs a scalar :math:`H_\theta(q, p)`; the vector field is *derived* from it,
    :math:`(\dot q, \dot p) = (\partial H_\theta/\partial p, -\partial H_\theta/\partial q)`, by
    autograd, so whatever the network learns, its flow conserves :math:`H_\theta` exactly.
    ``dim`` is the number of position coordinates (q and p each have ``dim`` entries).
    """

    def __init__(self, dim: int, hidden: int = 200) -> None:
        super().__init__(dim, hidden, vector_output=False)
        self._last: tuple[Tensor, Tensor, tuple[int, ...], Tensor, Tensor] | None = None

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        """The learned energy H(q, p), one value per state (the last dimension is summed out)."""
        return self.net(self._state(q, p)).squeeze(-1)

    def grads(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(dH/dq, dH/dp) by autograd; differentiable in the parameters (for training)."""
        with torch.enable_grad():
            q = q.detach().requires_grad_(True) if not q.requires_grad else q
            p = p.detach().requires_grad_(True) if not p.requires_grad else p
            H = self.forward(q, p).sum()
            dq, dp = torch.autograd.grad(H, (q, p), create_graph=self.training)
        return dq, dp

    def vector_field(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(dq/dt, dp/dt) = (dH/dp, -dH/dq)."""
        dq, dp = self.grads(q, p)
        return dp, -dq

    def _grads_cached(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        # Integrators ask for dH/dq and dH/dp at the same (q, p) in turn; one backward pass
        # serves both. The cache holds the tensors themselves, so identity cannot be recycled.
        # Versions of q, p and the weights detect in-place changes (e.g. an optimizer step).
        versions = (q._version, p._version, *(w._version for w in self.parameters()))
        last = self._last
        if last is not None and last[0] is q and last[1] is p and last[2] == versions:
            return last[3], last[4]
        dq, dp = (g.detach() for g in self.grads(q, p))
        self._last = (q, p, versions, dq, dp)
        return dq, dp

    def dH_dq(self, q: Tensor, p: Tensor) -> Tensor:
        """For the integrators: ``leapfrog(model.dH_dq, model.dH_dp, ...)`` (no graph kept)."""
        return self._grads_cached(q, p)[0]

    def dH_dp(self, q: Tensor, p: Tensor) -> Tensor:
        return self._grads_cached(q, p)[1]


class MLPField(_PhaseSpaceMLP):
    """The baseline of Greydanus et al.: an MLP that predicts (dq/dt, dp/dt) directly.

    Nothing ties its vector field to an energy, so nothing makes its flow conserve one.
    """

    def __init__(self, dim: int, hidden: int = 200) -> None:
        super().__init__(dim, hidden, vector_output=True)

    def forward(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """The predicted (dq/dt, dp/dt), each of q's shape."""
        out = self.net(self._state(q, p))
        return out[..., : self.dim], out[..., self.dim :]

    def vector_field(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(dq/dt, dp/dt), as :meth:`HNN.vector_field`."""
        return self(q, p)


# ----------------------------------------------------------------------------- sampling
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
) -> Chain:
    r"""Hamiltonian Monte Carlo (Duane et al., 1987; Neal, 2011) with unit mass.

    To sample :math:`\pi(x) \propto e^{\log\pi(x)}`, each iteration draws a momentum
    :math:`p \sim N(0, I)`, runs ``n_leapfrog`` leapfrog steps of size ``step_size`` on
    :math:`H(x, p) = -\log\pi(x) + |p|^2/2`, and accepts the end point with probability
    :math:`\min(1, e^{-\Delta H})`. Leapfrog's volume preservation and reversibility make this
    Metropolis correction exact.

    ``x0`` has shape ``(..., dim)``: leading dimensions are independent chains, and ``log_prob``
    must map ``(..., dim)`` to ``(...)``. Returns ``(samples, acceptance_rate)`` with samples of
    shape ``(n_samples, *x0.shape)`` and the acceptance rate per chain. Each iteration costs
    ``n_leapfrog + 1`` gradient evaluations.

    ``jitter`` draws each iteration's step size uniformly from ``step_size * (1 +- jitter)``.
    A fixed trajectory length can be a whole period of some direction of the target, which then
    barely moves; randomizing the step breaks that resonance (Neal, 2011, section 5.4.2.2).
    """
    step_size, n_samples = _check_sampler_args(log_prob, x0, step_size, n_samples, generator)
    n_leapfrog = check.integer("n_leapfrog", n_leapfrog, minimum=1)
    jitter = check.real("jitter", jitter, low=0.0, high=1.0, open_high=True)
    x = x0.detach().clone()
    lp, g = _logp_and_grad(log_prob, x)
    samples, accepted = x.new_empty((n_samples, *x.shape)), x.new_zeros(x.shape[:-1])
    for i in range(n_samples):
        p0 = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        eps: float | Tensor = step_size
        if jitter:  # a 0-d tensor on x's device: no round trip to the host
            u_eps = torch.rand((), generator=generator, dtype=torch.float64, device=x.device)
            eps = step_size * (1.0 + jitter * (2.0 * u_eps - 1.0))
        xn, pn, gn = x, p0 + 0.5 * eps * g, g
        for j in range(n_leapfrog):
            xn = xn + eps * pn
            lpn, gn = _logp_and_grad(log_prob, xn)
            pn = pn + (eps if j < n_leapfrog - 1 else 0.5 * eps) * gn
        dH = (-lpn + 0.5 * (pn * pn).sum(-1)) - (-lp + 0.5 * (p0 * p0).sum(-1))
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

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
from numbers import Integral, Real

import torch
from torch import Tensor, nn

__all__ = [
    "HNN",
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
def _check_state(q0: Tensor, p0: Tensor) -> None:
    for name, x in (("q0", q0), ("p0", p0)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if q0.shape != p0.shape:
        raise ValueError(
            f"q0 and p0 must have the same shape, got {tuple(q0.shape)} and {tuple(p0.shape)}"
        )
    if q0.dtype != p0.dtype:
        raise TypeError(f"q0 and p0 must have the same dtype, got {q0.dtype} and {p0.dtype}")
    if q0.device != p0.device:
        raise ValueError(f"q0 and p0 must be on one device, got {q0.device} and {p0.device}")


def _check_step(h: float, n_steps: int) -> tuple[float, int]:
    if isinstance(h, bool) or not isinstance(h, Real) or not math.isfinite(h) or h <= 0:
        raise ValueError(f"h must be a positive finite number, got {h!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, Integral) or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative int, got {n_steps!r}")
    return float(h), int(n_steps)


def _check_fields(dH_dq: Field, dH_dp: Field) -> None:
    for name, f in (("dH_dq", dH_dq), ("dH_dp", dH_dp)):
        if not callable(f):
            raise TypeError(f"{name} must be callable as {name}(q, p), got {type(f).__name__}")


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
    _check_fields(dH_dq, dH_dp)
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
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not gamma >= 0:
        raise ValueError(f"gamma must be a non-negative number, got {gamma!r}")
    decay = math.exp(-float(gamma) * h)

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
    if not callable(H):
        raise TypeError(f"H must be callable as H(q, p), got {type(H).__name__}")
    _check_state(q, p)
    if q.ndim < 1 or q.shape[0] < 1:
        raise ValueError(
            f"q must be a trajectory with a leading time dimension, got {tuple(q.shape)}"
        )
    E = H(q, p)
    if not isinstance(E, Tensor) or E.ndim < 1 or E.shape[0] != q.shape[0]:
        raise ValueError("H(q, p) must return a tensor whose first dimension is time")
    return E - E[:1]


# ----------------------------------------------------------------------------- attention
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
    if not isinstance(x0, Tensor) or x0.ndim < 2 or x0.dtype not in (torch.float32, torch.float64):
        raise TypeError("x0 must be a float tensor of shape (..., n_tokens, d)")
    if isinstance(beta, bool) or not isinstance(beta, Real) or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    h, n_steps = _check_step(h, n_steps)
    x = x0 / x0.norm(dim=-1, keepdim=True)
    xs = torch.empty((n_steps + 1, *x.shape), dtype=x.dtype)
    xs[0] = x
    for n in range(n_steps):
        weights = torch.softmax(float(beta) * x @ x.transpose(-1, -2), dim=-1)
        y = weights @ x
        v = y - (x * y).sum(-1, keepdim=True) * x
        x = x + h * v
        x = x / x.norm(dim=-1, keepdim=True)
        xs[n + 1] = x
    return xs


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
    if not all(isinstance(t, Tensor) for t in (q, k, v)):
        raise TypeError("q, k and v must be tensors")
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError("q, k and v must have shapes (..., n, d), (..., m, d), (..., m, e)")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
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


class HNN(nn.Module):
    r"""Hamiltonian neural network (Greydanus, Dzamba & Yosinski, NeurIPS 2019).

    An MLP outputs a scalar :math:`H_\theta(q, p)`; the vector field is *derived* from it,
    :math:`(\dot q, \dot p) = (\partial H_\theta/\partial p, -\partial H_\theta/\partial q)`, by
    autograd, so whatever the network learns, its flow conserves :math:`H_\theta` exactly.
    ``dim`` is the number of position coordinates (q and p each have ``dim`` entries).
    """

    def __init__(self, dim: int, hidden: int = 200) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        self.dim = dim
        self.net = _mlp(2 * dim, hidden, 1)
        self._last: tuple[Tensor, Tensor, tuple[int, ...], Tensor, Tensor] | None = None

    def _split_check(self, q: Tensor, p: Tensor) -> None:
        if q.shape != p.shape or q.shape[-1:] != (self.dim,):
            raise ValueError(
                f"q and p must both have shape (..., {self.dim}), got "
                f"{tuple(q.shape)} and {tuple(p.shape)}"
            )

    def forward(self, q: Tensor, p: Tensor) -> Tensor:
        """The learned energy H(q, p), one value per state (the last dimension is summed out)."""
        self._split_check(q, p)
        return self.net(torch.cat([q, p], dim=-1)).squeeze(-1)

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


class MLPField(nn.Module):
    """The baseline of Greydanus et al.: an MLP that predicts (dq/dt, dp/dt) directly.

    Nothing ties its vector field to an energy, so nothing makes its flow conserve one.
    """

    def __init__(self, dim: int, hidden: int = 200) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.net = _mlp(2 * dim, hidden, 2 * dim)

    def vector_field(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        if q.shape != p.shape or q.shape[-1:] != (self.dim,):
            raise ValueError(
                f"q and p must both have shape (..., {self.dim}), got "
                f"{tuple(q.shape)} and {tuple(p.shape)}"
            )
        out = self.net(torch.cat([q, p], dim=-1))
        return out[..., : self.dim], out[..., self.dim :]


# ----------------------------------------------------------------------------- sampling
LogProb = Callable[[Tensor], Tensor]


def _check_sampler_args(
    log_prob: LogProb,
    x0: Tensor,
    n_samples: int,
    step_size: float,
    generator: torch.Generator | None,
) -> None:
    if not callable(log_prob):
        raise TypeError(f"log_prob must be callable, got {type(log_prob).__name__}")
    if not isinstance(x0, Tensor) or x0.dtype not in (torch.float32, torch.float64) or x0.ndim < 1:
        raise TypeError("x0 must be a float32/float64 tensor of shape (..., dim)")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, Real) or not step_size > 0:
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def _logp_and_grad(log_prob: LogProb, x: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        lp = log_prob(x)
        if lp.shape != x.shape[:-1]:
            raise ValueError(
                f"log_prob must return shape {tuple(x.shape[:-1])} for x of shape "
                f"{tuple(x.shape)}, got {tuple(lp.shape)}"
            )
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
) -> tuple[Tensor, Tensor]:
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
    _check_sampler_args(log_prob, x0, n_samples, step_size, generator)
    if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, int) or n_leapfrog < 1:
        raise ValueError(f"n_leapfrog must be a positive int, got {n_leapfrog!r}")
    if isinstance(jitter, bool) or not isinstance(jitter, Real) or not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
    x = x0.detach().clone()
    lp, g = _logp_and_grad(log_prob, x)
    samples = torch.empty((n_samples, *x.shape), dtype=x.dtype)
    accepted = torch.zeros(x.shape[:-1], dtype=x.dtype)
    for i in range(n_samples):
        p0 = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        eps = float(step_size)
        if jitter:
            u_eps = torch.rand((), generator=generator, dtype=torch.float64).item()
            eps *= 1.0 + jitter * (2.0 * u_eps - 1.0)
        xn, pn, gn = x, p0 + 0.5 * eps * g, g
        for j in range(n_leapfrog):
            xn = xn + eps * pn
            lpn, gn = _logp_and_grad(log_prob, xn)
            pn = pn + (eps if j < n_leapfrog - 1 else 0.5 * eps) * gn
        dH = (-lpn + 0.5 * (pn * pn).sum(-1)) - (-lp + 0.5 * (p0 * p0).sum(-1))
        u = torch.rand(x.shape[:-1], generator=generator, dtype=x.dtype)
        accept = torch.log(u) < -torch.nan_to_num(dH, nan=math.inf)
        x = torch.where(accept[..., None], xn, x)
        lp = torch.where(accept, lpn, lp)
        g = torch.where(accept[..., None], gn, g)
        accepted += accept
        samples[i] = x
    return samples, accepted / n_samples


def random_walk_metropolis(
    log_prob: LogProb,
    x0: Tensor,
    step_size: float,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Random-walk Metropolis: propose :math:`x' = x + \sigma z` with :math:`z \sim N(0, I)`.

    Same conventions as :func:`hmc`; one density evaluation (no gradient) per iteration.
    """
    _check_sampler_args(log_prob, x0, n_samples, step_size, generator)
    sigma = float(step_size)
    x = x0.detach().clone()
    with torch.no_grad():
        lp = log_prob(x)
        samples = torch.empty((n_samples, *x.shape), dtype=x.dtype)
        accepted = torch.zeros(x.shape[:-1], dtype=x.dtype)
        for i in range(n_samples):
            xn = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            lpn = log_prob(xn)
            u = torch.rand(x.shape[:-1], generator=generator, dtype=x.dtype)
            accept = torch.log(u) < lpn - lp
            x = torch.where(accept[..., None], xn, x)
            lp = torch.where(accept, lpn, lp)
            accepted += accept
            samples[i] = x
    return samples, accepted / n_samples


def effective_sample_size(x: Tensor) -> Tensor:
    r"""Effective sample size of each coordinate of a chain, ``x`` of shape ``(n, ..., dim)``.

    :math:`\mathrm{ESS} = n / (1 + 2\sum_{t \ge 1} \rho_t)`, with the autocorrelations
    :math:`\rho_t` (computed by FFT) summed over Geyer's initial positive sequence: pairs
    :math:`\rho_{2k} + \rho_{2k+1}` are added while they are positive (Geyer, 1992). Returns a
    tensor of shape ``x.shape[1:]``. For an AR(1) chain with coefficient :math:`\phi` the ESS
    tends to :math:`n(1-\phi)/(1+\phi)`.
    """
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 4:
        raise ValueError("x must be a tensor of shape (n, ...) with n >= 4 draws")
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

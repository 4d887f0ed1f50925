r"""Hamiltonian dynamics: integrators, energy, Hamiltonian neural networks and attention as a
particle system (Chapter 5; the samplers are in :mod:`hamlib.mcmc`).

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

import torch
from torch import Tensor, nn

from hamlib import _checks as check
from hamlib import ode

__all__ = [
    "HNN",
    "MLPField",
    "attention_particles",
    "conformal_symplectic_euler",
    "energy_drift",
    "euler",
    "hamiltonian_attention",
    "implicit_midpoint",
    "leapfrog",
    "leapfrog_modified_energy",
    "rk4",
    "symplectic_euler",
    "symplecticity_error",
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


def _stacked(
    one_step: Callable[..., Tensor], dH_dq: Field, dH_dp: Field, h: float
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """A step of a general integrator of :mod:`hamlib.ode` on :math:`z = (q, p)`, stacked, with
    :math:`\\dot z = (H_p, -H_q)`."""

    def field(_t: float, z: Tensor) -> Tensor:
        return torch.stack((dH_dp(z[0], z[1]), -dH_dq(z[0], z[1])))

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        z = one_step(field, 0.0, torch.stack((q, p)), h)
        return z[0], z[1]

    return step


# ----------------------------------------------------------------------------- integrators
def euler(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""Explicit (forward) Euler: :math:`q' = q + h\,H_p(q, p)`, :math:`p' = p - h\,H_q(q, p)`.

    First order and not symplectic: on the harmonic oscillator it multiplies the energy by
    :math:`1 + h^2` at every step, so the energy grows exponentially in time.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    return _integrate(_stacked(ode.euler_step, dH_dq, dH_dp, h), q0, p0, n_steps)


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
    Wanner, *Geometric Numerical Integration*, 2006): it conserves the modified energy of
    :func:`leapfrog_modified_energy` to :math:`O(h^4)`.

    Cost: ``dH_dq`` is called twice per step. For a separable H the closing half kick's
    :math:`H_q(q')` is the next step's opening one, so one new gradient per step suffices (as
    :func:`hamlib.mcmc.hmc` does); for a non-separable H the two differ, and this explicit
    splitting is then only first order, neither symplectic nor reversible: use
    :func:`implicit_midpoint`.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    half = 0.5 * h

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        p = p - half * dH_dq(q, p)
        q = q + h * dH_dp(q, p)
        return q, p - half * dH_dq(q, p)

    return _integrate(step, q0, p0, n_steps)


def implicit_midpoint(
    dH_dq: Field,
    dH_dp: Field,
    q0: Tensor,
    p0: Tensor,
    h: float,
    n_steps: int,
    *,
    tol: float = 1e-13,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    r"""The implicit midpoint rule, symplectic for *any* H, separable or not:

    .. math:: z' = z + h\,f\big(\tfrac{z + z'}{2}\big), \qquad
              f(q, p) = (H_p(q, p), -H_q(q, p)).

    Second order, symplectic and symmetric (so time-reversible: flipping p and stepping back
    retraces the path up to the solver's tolerance), and it conserves every quadratic
    invariant, such as angular momentum, exactly (Hairer, Lubich & Wanner, 2006, sections
    II.1 and VI.4). Each step solves its equation by fixed-point iteration from an explicit
    Euler guess, until the largest change over the batch is below ``tol`` (relative to the
    state's size, at least 1); a step that has not converged in ``max_iter`` iterations
    (h times the field's Lipschitz constant too large) raises ``RuntimeError``. Each iteration
    costs one evaluation of each derivative.
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    tol = check.positive("tol", tol)
    max_iter = check.integer("max_iter", max_iter, minimum=1)

    def step(q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        qn, pn = q + h * dH_dp(q, p), p - h * dH_dq(q, p)
        scale = max(1.0, q.abs().max().item(), p.abs().max().item())
        for _ in range(max_iter):
            qm, pm = 0.5 * (q + qn), 0.5 * (p + pn)
            q_new, p_new = q + h * dH_dp(qm, pm), p - h * dH_dq(qm, pm)
            change = max((q_new - qn).abs().max().item(), (p_new - pn).abs().max().item())
            qn, pn = q_new, p_new
            if change <= tol * scale:
                return qn, pn
        raise RuntimeError(
            f"implicit_midpoint: the fixed-point iteration did not converge in {max_iter} "
            f"iterations (last change {change:.1e}); reduce h = {h}"
        )

    return _integrate(step, q0, p0, n_steps)


def leapfrog_modified_energy(
    V: Callable[[Tensor], Tensor], q: Tensor, p: Tensor, h: float
) -> Tensor:
    r"""Leapfrog's modified energy (backward error analysis) for :math:`H = |p|^2/2 + V(q)`:

    .. math:: \tilde H = H + h^2\Big(\tfrac{1}{12}\, p^\top \nabla^2 V(q)\, p
              - \tfrac{1}{24}\,|\nabla V(q)|^2\Big) + O(h^4).

    :func:`leapfrog` (kick–drift–kick) with step h is, up to :math:`O(h^{r+1})` per step for any
    r, the exact flow of a modified Hamiltonian whose expansion starts so (Hairer, Lubich &
    Wanner, 2006, chapter IX; from the symmetric Baker–Campbell–Hausdorff formula). Along a
    leapfrog trajectory H therefore varies by :math:`O(h^2)`, this truncated
    :math:`\tilde H` only by :math:`O(h^4)`. ``V`` maps positions ``(..., dim)`` to
    potentials ``(...)``; q and p have shape ``(..., dim)``; returns ``(...)``. The gradient
    and the Hessian–vector product come from autograd.
    """
    check.function("V", V)
    _check_state(q, p, ("q", "p"))
    check.tensor("q", q, min_ndim=1, layout="(..., dim)")
    h = check.positive("h", h)
    with torch.enable_grad():
        x = q.detach().requires_grad_(True)
        v = V(x)
        if not isinstance(v, Tensor) or v.shape != q.shape[:-1]:
            raise ValueError(
                f"V must return shape {tuple(q.shape[:-1])} for q of shape {tuple(q.shape)}"
            )
        (grad,) = torch.autograd.grad(v.sum(), x, create_graph=True)
        (hess_p,) = torch.autograd.grad((grad * p).sum(), x)
    grad, v = grad.detach(), v.detach()
    H = 0.5 * (p * p).sum(-1) + v
    return H + h**2 * ((p * hess_p).sum(-1) / 12 - (grad * grad).sum(-1) / 24)


def symplecticity_error(step: Callable[[Tensor], Tensor], z: Tensor) -> float:
    r"""How far a map is from symplectic at a point: :math:`\max|J^\top \Omega J - \Omega|`.

    ``step`` maps a state ``z = (q, p)`` of shape ``(2n,)`` (positions first) to the next
    state; J is its Jacobian at z (by autograd) and
    :math:`\Omega = \begin{pmatrix} 0 & I \\ -I & 0 \end{pmatrix}`. A map is symplectic
    when :math:`J^\top \Omega J = \Omega` everywhere (Hairer, Lubich & Wanner, 2006, section
    VI.2). For n = 1 this says det J = 1, area preservation; for n >= 2 it is stronger than
    det J = 1 (volume preservation). Explicit Euler on the oscillator gives
    :math:`J^\top \Omega J = (1 + h^2)\,\Omega`, an error of :math:`h^2`.
    """
    check.function("step", step)
    check.tensor("z", z, dtype=_FLOATS, ndim=1, layout="(2n,)")
    if z.shape[0] == 0 or z.shape[0] % 2:
        raise ValueError(f"z must have an even, positive length (q then p), got {z.shape[0]}")
    n = z.shape[0] // 2
    J = torch.autograd.functional.jacobian(step, z)
    if not isinstance(J, Tensor) or J.shape != (2 * n, 2 * n):
        raise ValueError(f"step must map shape ({2 * n},) to ({2 * n},)")
    eye, zero = torch.eye(n, dtype=z.dtype), torch.zeros(n, n, dtype=z.dtype)
    omega = torch.cat([torch.cat([zero, eye], 1), torch.cat([-eye, zero], 1)], 0).to(z.device)
    return (J.T @ omega @ J - omega).abs().max().item()


def rk4(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    r"""The classical fourth-order Runge–Kutta method on :math:`z = (q, p)`.

    Fourth order but not symplectic: its energy error is tiny per step and accumulates, drifting
    linearly in time (on the harmonic oscillator each step multiplies the energy by
    :math:`1 - h^6/72 + O(h^8)`).
    """
    h, n_steps = _prepare(dH_dq, dH_dp, q0, p0, h, n_steps)
    return _integrate(_stacked(ode.rk4_step, dH_dq, dH_dp, h), q0, p0, n_steps)


def conformal_symplectic_euler(
    dH_dq: Field, dH_dp: Field, q0: Tensor, p0: Tensor, h: float, n_steps: int, gamma: float = 0.0
) -> tuple[Tensor, Tensor]:
    r"""Conformal symplectic Euler for :math:`\dot q = H_p`, :math:`\dot p = -H_q - \gamma p`.

    Each step first applies the exact flow of the friction, :math:`p \leftarrow e^{-\gamma h} p`,
    then a symplectic Euler step. It contracts the symplectic form by exactly
    :math:`e^{-\gamma h}` per step, :math:`J^\top\Omega J = e^{-\gamma h}\,\Omega`, and so
    the volume of the 2n-dimensional phase space (n degrees of freedom) by
    :math:`e^{-n\gamma h}`, as the true flow does (França, Sulam, Robinson & Vidal,
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

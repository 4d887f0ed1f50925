r"""Estimators of curvature and gradient noise, cheap enough to use during training.

``loss_fn`` is always a zero-argument closure that returns a scalar loss, and ``params`` the list
of tensors (requiring grad) to differentiate with respect to; vectors in parameter space are lists
of tensors shaped like ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from scipy.linalg import eigvalsh_tridiagonal
from torch import Tensor

from hamlib import _checks as check

__all__ = [
    "gradient_noise_scale",
    "hessian",
    "hessian_spectrum",
    "hvp",
    "lanczos",
    "per_example_gradients",
    "top_hessian_eigenvalue",
]

LossFn = Callable[[], Tensor]


def _check(loss_fn: LossFn, params: Sequence[Tensor]) -> list[Tensor]:
    """Checks a closure and its parameters; returns the parameters as a list."""
    check.function("loss_fn", loss_fn)
    if isinstance(params, Tensor) or not isinstance(params, Iterable):
        raise TypeError(f"params must be a list of tensors, got {type(params).__name__}")
    params = list(params)
    if not params:
        raise ValueError("params must be a non-empty list of tensors")
    for i, p in enumerate(params):
        check.tensor(f"params[{i}]", p)
        if not p.requires_grad:
            raise ValueError(f"params[{i}] must have requires_grad=True")
    return params


def _grads(loss_fn: LossFn, params: list[Tensor]) -> tuple[Tensor, ...]:
    loss = loss_fn()
    if not isinstance(loss, Tensor):
        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
    return torch.autograd.grad(loss, params, create_graph=True, allow_unused=False)


def _check_hvp_args(
    loss_fn: LossFn, params: Sequence[Tensor], v: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    params = _check(loss_fn, params)
    if isinstance(v, Tensor) or not isinstance(v, Iterable):
        raise TypeError(f"v must be a list of tensors shaped like params, got {type(v).__name__}")
    v = list(v)
    if len(v) != len(params):
        raise ValueError(
            f"v must hold one tensor per entry of params ({len(params)}), got {len(v)}"
        )
    for i, (u, p) in enumerate(zip(v, params, strict=True)):
        check.tensor(f"v[{i}]", u)
        check.like(f"v[{i}]", u, f"params[{i}]", p)
    return params, v


def hvp(loss_fn: LossFn, params: Sequence[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
    r"""Hessian-vector product :math:`Hv` by double backpropagation (Pearlmutter, 1994):
    :math:`Hv = \nabla_\theta \langle \nabla_\theta L, v\rangle`, for about the cost of two
    gradients."""
    params, v = _check_hvp_args(loss_fn, params, v)
    grads = _grads(loss_fn, params)
    dot = torch.stack([(g * u).sum() for g, u in zip(grads, v, strict=True)]).sum()
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def _flat(xs: Sequence[Tensor]) -> Tensor:
    return torch.cat([x.reshape(-1) for x in xs])


def _unflat(x: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped like ``like``, each in its tensor's dtype and
    device."""
    out, i = [], 0
    for p in like:
        out.append(x[i : i + p.numel()].view_as(p).to(p))
        i += p.numel()
    return out


def lanczos(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    iters: int = 30,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Ritz values of the Hessian after ``iters`` Lanczos steps (with full reorthogonalization).

    The extreme Ritz values converge to the extreme eigenvalues of H far faster than power
    iteration, and the largest one approximates the *largest* eigenvalue (not the largest in
    magnitude, which is what power iteration finds). Returns the Ritz values, ascending.
    """
    params = _check(loss_fn, params)
    iters = check.integer("iters", iters, minimum=1)
    generator = check.generator("generator", generator)
    n = sum(p.numel() for p in params)
    m = min(iters, n)
    q = torch.randn(n, generator=generator, dtype=torch.float64)
    q /= q.norm()
    Q = torch.zeros(m, n, dtype=torch.float64)
    alpha, beta = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    for j in range(m):
        Q[j] = q
        w = _flat(hvp(loss_fn, params, _unflat(q, params))).double().cpu()  # basis on the CPU
        alpha[j] = w @ q
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full reorthogonalization (twice is enough)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        if j + 1 < m:
            beta[j] = w.norm()
            if beta[j] < 1e-12:
                m = j + 1
                break
            q = w / beta[j]
    a, b = alpha[:m].numpy(), beta[: m - 1].numpy()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("Hessian-vector products returned non-finite values (is the loss finite?)")
    # T is symmetric tridiagonal: LAPACK's dedicated solver (stemr) is the right tool for it
    return torch.from_numpy(eigvalsh_tridiagonal(a, b, lapack_driver="stemr"))


def top_hessian_eigenvalue(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    iters: int = 30,
    generator: torch.Generator | None = None,
) -> float:
    """The largest Hessian eigenvalue (the "sharpness"), from ``iters`` Lanczos steps."""
    return float(lanczos(loss_fn, params, iters, generator)[-1])


def hessian(loss_fn: LossFn, params: Sequence[Tensor], max_params: int = 5000) -> Tensor:
    """The exact Hessian, a symmetric (n, n) float64 matrix over the flattened ``params`` (in
    their order): all n rows by one batched backward pass through the gradient (``vmap`` over
    the unit vectors). Refuses models with more than ``max_params`` parameters: use
    :func:`lanczos`."""
    params = _check(loss_fn, params)
    max_params = check.integer("max_params", max_params, minimum=1)
    n = sum(p.numel() for p in params)
    if n > max_params:
        raise ValueError(
            f"params have {n} entries, more than max_params={max_params}: the exact "
            f"Hessian would need {n} backward passes and {n * n * 8 / 1e9:.1f} GB; "
            "use lanczos() or top_hessian_eigenvalue() instead"
        )
    g = _flat(_grads(loss_fn, params))
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    rows = torch.autograd.grad(g, params, grad_outputs=eye, is_grads_batched=True)
    H = torch.cat([r.reshape(n, -1) for r in rows], dim=1).double()
    return 0.5 * (H + H.T)


def hessian_spectrum(loss_fn: LossFn, params: Sequence[Tensor], max_params: int = 5000) -> Tensor:
    """All eigenvalues of the Hessian, ascending, from the exact Hessian (:func:`hessian`)."""
    return torch.linalg.eigvalsh(hessian(loss_fn, params, max_params))


def _check_per_example_gradients_args(
    model: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> None:
    check.instance("model", model, torch.nn.Module)
    check.function("loss", loss)
    check.tensor("x", x)
    check.tensor("y", y)
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y) or len(x) < 1:
        raise ValueError(
            "x and y must have the same, non-zero number of examples (first dimension), "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


def per_example_gradients(
    model: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> Tensor:
    """Gradient of ``loss(model(x_i), y_i)`` with respect to all of ``model``'s parameters, for
    every example i at once (``torch.func.vmap`` of ``torch.func.grad``): a tensor of shape
    (n_examples, n_params), columns in the order of ``model.parameters()``. ``loss`` receives a
    batch of one example, e.g. ``torch.nn.functional.cross_entropy``.
    """
    _check_per_example_gradients_args(model, loss, x, y)
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach() for p in model.parameters())

    def loss_one(ps: tuple[Tensor, ...], xi: Tensor, yi: Tensor) -> Tensor:
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (xi[None],))
        return loss(out, yi[None])

    grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(values, x, y)
    return torch.cat([g.reshape(len(x), -1) for g in grads], dim=1)


def gradient_noise_scale(per_example_grads: Tensor, population: bool = False) -> float:
    r"""The simple gradient noise scale :math:`B_{\rm simple} = \mathrm{tr}(\Sigma) / |G|^2`
    (McCandlish, Kaplan, Amodei et al., "An empirical model of large-batch training", 2018), from
    a matrix of per-example gradients of shape (n, p). Batches much smaller than
    :math:`B_{\rm simple}` are dominated by noise; much larger ones waste computation.

    - ``population=False``: the rows are a *sample* of the data distribution (fresh data).
      Unbiased estimates of both :math:`\mathrm{tr}\,\Sigma` and :math:`|G|^2`: the naive
      :math:`|\bar g|^2` is inflated by :math:`\mathrm{tr}\,\Sigma / n`, which is subtracted;
      where the corrected :math:`|G|^2` is not positive, the mean gradient is not distinguishable
      from noise and the result is ``inf``.
    - ``population=True``: the rows are the *whole* training set, so G is their mean exactly and
      :math:`\Sigma` their population covariance (divided by n); nothing is estimated.
    """
    check.tensor("per_example_grads", per_example_grads, ndim=2)
    population = check.boolean("population", population)
    n = per_example_grads.shape[0]
    if n < 2:
        raise ValueError(f"per_example_grads must hold at least 2 gradients (rows), got {n}")
    g = per_example_grads.double()
    mean = g.mean(0)
    if population:
        g2 = mean @ mean
        return math.inf if g2 == 0 else float(g.var(0, correction=0).sum() / g2)
    trace_sigma = g.var(0, correction=1).sum()
    g2 = mean @ mean - trace_sigma / n
    if g2 <= 0:
        return math.inf  # the mean gradient is not distinguishable from noise
    return float(trace_sigma / g2)

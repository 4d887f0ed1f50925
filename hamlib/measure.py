r"""Estimators of curvature and gradient noise, cheap enough to use during training.

``loss_fn`` is always a zero-argument closure that returns a scalar loss, and ``params`` the list
of tensors (requiring grad) to differentiate with respect to; vectors in parameter space are lists
of tensors shaped like ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.linalg import eigvalsh_tridiagonal
from torch import Tensor

__all__ = [
    "gradient_noise_scale",
    "hessian_spectrum",
    "hvp",
    "lanczos",
    "per_example_gradients",
    "top_hessian_eigenvalue",
]

LossFn = Callable[[], Tensor]


def _check(loss_fn: LossFn, params: Sequence[Tensor]) -> list[Tensor]:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a zero-argument callable, got {type(loss_fn).__name__}")
    params = list(params)
    if not params:
        raise ValueError("params must be a non-empty list of tensors")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise TypeError(f"params[{i}] must be a tensor with requires_grad=True")
    return params


def _grads(loss_fn: LossFn, params: list[Tensor]) -> tuple[Tensor, ...]:
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    return torch.autograd.grad(loss, params, create_graph=True, allow_unused=False)


def hvp(loss_fn: LossFn, params: Sequence[Tensor], v: Sequence[Tensor]) -> list[Tensor]:
    r"""Hessian-vector product :math:`Hv` by double backpropagation (Pearlmutter, 1994):
    :math:`Hv = \nabla_\theta \langle \nabla_\theta L, v\rangle`, for about the cost of two
    gradients."""
    params = _check(loss_fn, params)
    v = list(v)
    if len(v) != len(params) or any(a.shape != b.shape for a, b in zip(v, params, strict=False)):
        raise ValueError("v must be a list of tensors shaped like params")
    grads = _grads(loss_fn, params)
    dot = torch.stack([(g * u).sum() for g, u in zip(grads, v, strict=True)]).sum()
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def _flat(xs: Sequence[Tensor]) -> Tensor:
    return torch.cat([x.reshape(-1) for x in xs])


def _unflat(x: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for p in like:
        out.append(x[i : i + p.numel()].view_as(p))
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
    n = sum(p.numel() for p in params)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive int, got {iters!r}")
    m = min(iters, n)
    dtype = params[0].dtype
    q = torch.randn(n, generator=generator, dtype=torch.float64)
    q /= q.norm()
    Q = torch.zeros(m, n, dtype=torch.float64)
    alpha, beta = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    for j in range(m):
        Q[j] = q
        w = _flat(hvp(loss_fn, params, _unflat(q.to(dtype), params))).double()
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


def hessian_spectrum(loss_fn: LossFn, params: Sequence[Tensor], max_params: int = 5000) -> Tensor:
    """All eigenvalues of the Hessian, ascending, from the exact Hessian (one backward pass per
    parameter). Refuses models with more than ``max_params`` parameters: use :func:`lanczos`."""
    params = _check(loss_fn, params)
    n = sum(p.numel() for p in params)
    if n > max_params:
        raise ValueError(
            f"params have {n} entries, more than max_params={max_params}: the exact "
            f"Hessian would need {n} backward passes and {n * n * 8 / 1e9:.1f} GB; "
            "use lanczos() or top_hessian_eigenvalue() instead"
        )
    g = _flat(_grads(loss_fn, params))
    rows = [_flat(torch.autograd.grad(g[i], params, retain_graph=True)) for i in range(n)]
    H = torch.stack(rows).double()
    return torch.linalg.eigvalsh(0.5 * (H + H.T))


def per_example_gradients(
    model: torch.nn.Module, loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor
) -> Tensor:
    """Gradient of ``loss(model(x_i), y_i)`` with respect to all of ``model``'s parameters, for
    every example i at once (``torch.func.vmap`` of ``torch.func.grad``): a tensor of shape
    (n_examples, n_params), columns in the order of ``model.parameters()``. ``loss`` receives a
    batch of one example, e.g. ``torch.nn.functional.cross_entropy``.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or len(x) != len(y) or len(x) < 1:
        raise ValueError("x and y must be tensors with the same, non-zero number of examples")
    names = [n for n, _ in model.named_parameters()]
    values = tuple(p.detach() for p in model.parameters())

    def loss_one(ps: tuple[Tensor, ...], xi: Tensor, yi: Tensor) -> Tensor:
        out = torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (xi[None],))
        return loss(out, yi[None])

    grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))(values, x, y)
    return torch.cat([g.reshape(len(x), -1) for g in grads], dim=1)


def gradient_noise_scale(per_example_grads: Tensor) -> float:
    r"""The simple gradient noise scale :math:`B_{\rm simple} = \mathrm{tr}(\Sigma) / |G|^2`
    (McCandlish, Kaplan, Amodei et al., "An empirical model of large-batch training", 2018), from
    a matrix of per-example gradients of shape (n, p): G is their mean and :math:`\Sigma` their
    covariance. Batches much smaller than :math:`B_{\rm simple}` are dominated by noise; much
    larger ones waste computation. Uses unbiased estimates of both :math:`\mathrm{tr}\,\Sigma` and
    :math:`|G|^2` (the naive :math:`|\bar g|^2` is inflated by :math:`\mathrm{tr}\,\Sigma / n`).
    """
    if not isinstance(per_example_grads, Tensor) or per_example_grads.ndim != 2:
        raise ValueError("per_example_grads must be a 2-D tensor of shape (n_examples, n_params)")
    n = per_example_grads.shape[0]
    if n < 2:
        raise ValueError("need at least 2 per-example gradients")
    g = per_example_grads.double()
    mean = g.mean(0)
    trace_sigma = g.var(0, unbiased=True).sum()
    g2 = mean @ mean - trace_sigma / n
    if g2 <= 0:
        return math.inf  # the mean gradient is not distinguishable from noise
    return float(trace_sigma / g2)

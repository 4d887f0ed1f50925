r"""Reference optimizers, written out so that each update rule can be read in a few lines.

Each is a ``torch.optim.Optimizer`` (``zero_grad``, ``param_groups``, ``state`` work as usual) and
takes exactly the steps of its ``torch.optim`` counterpart, which the tests check step for step:

- ``SGD``: :math:`\theta \leftarrow \theta - \eta(g + \lambda\theta)`
- ``Momentum`` (heavy ball, torch's ``SGD(momentum=mu)``): :math:`b \leftarrow \mu b + g`,
  :math:`\theta \leftarrow \theta - \eta b`
- ``Adam`` (Kingma & Ba, 2015), weight decay as an L2 term added to the gradient
- ``AdamW`` (Loshchilov & Hutter, 2019), weight decay decoupled from the adaptive step
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["SGD", "Adam", "AdamW", "Momentum", "minimize"]


def _decay_rate(name: str, value: Any) -> float:
    """A momentum or an averaging coefficient: a real number in [0, 1)."""
    return check.real(name, value, low=0.0, high=1.0, open_high=True)


def _betas(betas: Any) -> tuple[float, float]:
    if isinstance(betas, str) or not isinstance(betas, tuple | list):
        raise TypeError(f"betas must be a pair (beta1, beta2), got {type(betas).__name__}")
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {len(betas)} values")
    return _decay_rate("betas[0]", betas[0]), _decay_rate("betas[1]", betas[1])


class _Base(torch.optim.Optimizer):
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            check.function("closure", closure)
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, p.grad, group, self.state[p])
        return loss

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        raise NotImplementedError


class SGD(_Base):
    r"""Plain gradient descent: :math:`\theta \leftarrow \theta - \eta\,(g + \lambda\theta)`."""

    def __init__(self, params: Iterable[Tensor], lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(
            params,
            dict(
                lr=check.positive("lr", lr),
                weight_decay=check.nonnegative("weight_decay", weight_decay),
            ),
        )

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        p.add_(g, alpha=-group["lr"])


class Momentum(_Base):
    r"""Heavy ball as torch implements it: :math:`b \leftarrow \mu b + g`, :math:`\theta \leftarrow
    \theta - \eta b` (the first step uses :math:`b = g`). With :math:`v = -\eta b` this is Polyak's
    :math:`v \leftarrow \mu v - \eta g`, :math:`\theta \leftarrow \theta + v`."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> None:
        super().__init__(
            params,
            dict(
                lr=check.positive("lr", lr),
                momentum=_decay_rate("momentum", momentum),
                weight_decay=check.nonnegative("weight_decay", weight_decay),
            ),
        )

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if "buffer" not in state:
            state["buffer"] = g.clone()
        else:
            state["buffer"].mul_(group["momentum"]).add_(g)
        p.add_(state["buffer"], alpha=-group["lr"])


class Adam(_Base):
    r"""Adam with bias correction; ``weight_decay`` adds :math:`\lambda\theta` to the gradient (L2).

    .. math:: m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2,
              \quad \theta \leftarrow \theta - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)}
              + \epsilon}
    """

    decoupled = False

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params,
            dict(
                lr=check.positive("lr", lr),
                betas=_betas(betas),
                eps=check.nonnegative("eps", eps),
                weight_decay=check.nonnegative("weight_decay", weight_decay),
            ),
        )

    def _update(self, p: Tensor, g: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
        if wd and self.decoupled:
            p.mul_(1 - lr * wd)  # AdamW: shrink the weights, outside the adaptive scaling
        elif wd:
            g = g + wd * p  # Adam + L2: the decay goes through the adaptive scaling
        if not state:
            state["t"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
        state["t"] += 1
        t, m, v = state["t"], state["m"], state["v"]
        m.lerp_(g, 1 - b1)  # = b1 m + (1 - b1) g, in the same floating-point order as torch
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(group["eps"])
        p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class AdamW(Adam):
    r"""Adam with decoupled weight decay: :math:`\theta \leftarrow \theta(1 - \eta\lambda)` before
    the Adam step, so every weight decays at the same rate whatever its gradient history."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


def minimize(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    grad_tol: float = 1e-10,
    max_iter: int = 10_000,
    newton_from: float = 1e-6,
) -> float:
    r"""Drive ``params`` (in place) to a critical point of ``loss_fn`` where the gradient norm is
    below ``grad_tol``, and return that norm. Gradient descent only creeps toward a minimum, so
    this uses what converges: L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``, at
    most ``max_iter`` iterations) down to a gradient norm of ``newton_from``, then Newton steps
    :math:`\theta \leftarrow \theta - H^{-1} g` with the exact Hessian
    (:func:`hamlib.measure.hessian`), which converge quadratically. A Newton step is taken only
    where H is positive definite: Newton's method is attracted to saddles as much as to minima
    (Chapter 3). Raises RuntimeError where the tolerance is not reached."""
    from hamlib import measure

    params = measure._check(loss_fn, params)
    grad_tol = check.positive("grad_tol", grad_tol)
    max_iter = check.integer("max_iter", max_iter, minimum=1)
    newton_from = check.positive("newton_from", newton_from)

    def grad_norm() -> float:
        return measure._flat(torch.autograd.grad(loss_fn(), params)).norm().item()

    lbfgs = torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=max_iter,
        tolerance_grad=newton_from / math.sqrt(sum(p.numel() for p in params)),
        tolerance_change=0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        lbfgs.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    lbfgs.step(closure)
    for _ in range(20):
        norm = grad_norm()
        if norm < grad_tol:
            return norm
        H = measure.hessian(loss_fn, params)
        if torch.linalg.eigvalsh(H)[0] <= 0:
            raise RuntimeError(
                f"the Hessian is not positive definite at gradient norm {norm:.3g}: a Newton "
                "step would head for a saddle"
            )
        g = measure._flat(torch.autograd.grad(loss_fn(), params)).double()
        step = torch.linalg.solve(H, g)
        with torch.no_grad():
            for p, s in zip(params, measure._unflat(step, params), strict=True):
                p -= s
    norm = grad_norm()
    if norm >= grad_tol:
        raise RuntimeError(f"gradient norm {norm:.3g} after 20 Newton steps, not below {grad_tol}")
    return norm

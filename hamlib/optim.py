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
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["SGD", "Adam", "AdamW", "Momentum"]


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

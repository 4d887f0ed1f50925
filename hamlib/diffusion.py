r"""Diffusion and flow matching, exact where it can be (Chapter 8).

**One process.** Every model here noises data the same way, :math:`x_t = \alpha_t x_0 +
\sigma_t \varepsilon` with :math:`\varepsilon \sim N(0, I)` and t in [0, 1]; a
:class:`Schedule` fixes :math:`\alpha_t, \sigma_t` (variance preserving, variance exploding, or
the straight line of flow matching). Its log signal-to-noise ratio is
:math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)`.

**The probability-flow velocity** of any such path (Song et al., 2021; Lipman et al., 2023) is

.. math:: u(x, t) = E[\dot\alpha_t x_0 + \dot\sigma_t \varepsilon \mid x_t = x]
          = \frac{\dot\alpha_t}{\alpha_t} x + \Big(\dot\sigma_t - \frac{\dot\alpha_t}{\alpha_t}
            \sigma_t\Big)\, \hat\varepsilon(x, t),

with :math:`\hat\varepsilon = E[\varepsilon \mid x_t] = -\sigma_t \nabla \log p_t`. The reverse
SDE has drift :math:`f - g^2 \nabla\log p_t` with :math:`f = (\dot\alpha/\alpha) x` and
:math:`g^2 = 2\sigma\dot\sigma - 2(\dot\alpha/\alpha)\sigma^2 = -\sigma^2 \dot\lambda`.

**Four parametrizations, one objective.** A network may predict ε, x0, the v of Salimans & Ho
(2022), the score, or the velocity u. Each is an affine function of ε̂ at fixed (x, t), so each
squared error is :math:`w(t)\,\lVert\hat\varepsilon - \varepsilon\rVert^2` (:func:`loss_weight`);
the ELBO is the weighting :math:`-\tfrac12\dot\lambda_t` (Kingma et al., 2021).

**An exact testbed.** For data from a :class:`GaussianMixture`, every marginal :math:`p_t` is a
Gaussian mixture in closed form (:meth:`GaussianMixture.noised`): the exact density, score,
denoiser and velocity at every t, against which everything learned is measured.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from hamlib import _checks as check
from hamlib import ode

__all__ = [
    "KINDS",
    "GaussianMixture",
    "Schedule",
    "TimeMLP",
    "ancestral",
    "convert",
    "ddim",
    "edm_heun",
    "edm_sigmas",
    "elbo",
    "euler_maruyama",
    "guided",
    "loss_weight",
    "mmd2",
    "arc_chord",
    "reflow",
    "ring_mixture",
    "sample_digits",
    "score_digits",
    "score_testbed",
    "snr_matched",
    "ode_log_likelihood",
    "sample_ode",
    "straightness",
    "target",
    "train",
    "train_digits",
    "velocity_field",
]

KINDS = ("eps", "x0", "v", "score", "velocity")
"""What a network may predict: the noise ε, the clean x0, Salimans & Ho's v = α ε − σ x0, the
score ∇ log p_t, or the probability-flow velocity u."""

EpsFn = Callable[[Tensor, Tensor], Tensor]  # (x, t) -> ε̂, t of shape (batch,)


def _times(t: Tensor | float, like: Tensor) -> Tensor:
    """t as a tensor of like's dtype, broadcastable against a (batch, d) x: shape (batch, 1)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(
            f"t must be a number or have shape ({like.shape[0]},), got {tuple(t.shape)}"
        )
    return t[:, None]


def _check_x(name: str, x: Tensor) -> None:
    check.tensor(name, x, floating=True, ndim=2, layout="(batch, d)")


# ----------------------------------------------------------------------------- schedules
def _as_t(t: Tensor | float) -> Tensor:
    """A Python number becomes a float64 tensor (a 0-d tensor does not change the dtype of the
    batch it multiplies); a tensor stays as it is."""
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


class Schedule:
    r"""A noising path :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, t in [0, 1].

    Build one with :meth:`vp` (variance preserving, Song et al.'s linear β), :meth:`ve`
    (variance exploding, geometric σ) or :meth:`linear` (flow matching's straight line
    :math:`\alpha = 1 - t`, :math:`\sigma = t`). Every method takes t as a float or tensor.
    """

    def __init__(self, kind: str, a: float, b: float) -> None:
        self.kind, self.a, self.b = kind, a, b

    @classmethod
    def vp(cls, beta_min: float = 0.1, beta_max: float = 20.0) -> Schedule:
        r""":math:`\alpha_t = \exp(-\tfrac12\int_0^t\beta)`, :math:`\beta(t) = \beta_{min} +
        t(\beta_{max} - \beta_{min})`, :math:`\sigma_t = \sqrt{1 - \alpha_t^2}`."""
        lo, hi = check.positive("beta_min", beta_min), check.positive("beta_max", beta_max)
        if hi <= lo:
            raise ValueError(f"beta_max must exceed beta_min, got {hi} <= {lo}")
        return cls("vp", lo, hi)

    @classmethod
    def ve(cls, sigma_min: float = 0.01, sigma_max: float = 20.0) -> Schedule:
        r""":math:`\alpha_t = 1`, :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`."""
        lo, hi = check.positive("sigma_min", sigma_min), check.positive("sigma_max", sigma_max)
        if hi <= lo:
            raise ValueError(f"sigma_max must exceed sigma_min, got {hi} <= {lo}")
        return cls("ve", lo, hi)

    @classmethod
    def linear(cls) -> Schedule:
        r"""Flow matching's straight path: :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t`."""
        return cls("linear", 0.0, 1.0)

    def __repr__(self) -> str:
        return (
            f"Schedule.{self.kind}({self.a}, {self.b})"
            if self.kind != "linear"
            else ("Schedule.linear()")
        )

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * (self.a * t + 0.5 * (self.b - self.a) * t * t)

    def alpha(self, t: Tensor | float) -> Tensor:
        t = _as_t(t)
        if self.kind == "vp":
            return self._log_alpha(t).exp()
        if self.kind == "ve":
            return torch.ones_like(t)
        return 1 - t

    def sigma(self, t: Tensor | float) -> Tensor:
        t = _as_t(t)
        if self.kind == "vp":
            return (-torch.expm1(2 * self._log_alpha(t))).sqrt()
        if self.kind == "ve":
            return self.a * (self.b / self.a) ** t
        return t.clone()

    def d_alpha(self, t: Tensor | float) -> Tensor:
        r""":math:`d\alpha_t/dt`."""
        t = _as_t(t)
        if self.kind == "vp":
            return -0.5 * (self.a + (self.b - self.a) * t) * self.alpha(t)
        if self.kind == "ve":
            return torch.zeros_like(t)
        return -torch.ones_like(t)

    def d_sigma(self, t: Tensor | float) -> Tensor:
        r""":math:`d\sigma_t/dt`."""
        t = _as_t(t)
        if self.kind == "vp":
            a = self.alpha(t)
            return -a * self.d_alpha(t) / self.sigma(t)
        if self.kind == "ve":
            return self.sigma(t) * math.log(self.b / self.a)
        return torch.ones_like(t)

    def log_snr(self, t: Tensor | float) -> Tensor:
        r""":math:`\lambda_t = 2\log(\alpha_t/\sigma_t)`."""
        return 2 * (self.alpha(t).log() - self.sigma(t).log())

    def d_log_snr(self, t: Tensor | float) -> Tensor:
        r""":math:`\dot\lambda_t = 2\dot\alpha/\alpha - 2\dot\sigma/\sigma` (negative)."""
        return 2 * (self.d_alpha(t) / self.alpha(t) - self.d_sigma(t) / self.sigma(t))

    def t_of_log_snr(self, lam: Tensor | float) -> Tensor:
        r"""The time at which :math:`\lambda_t` = ``lam`` (closed form for each schedule)."""
        lam = _as_t(lam)
        if self.kind == "vp":  # alpha^2 = sigmoid(lam); solve a t + (b - a) t^2 / 2 = -log alpha^2
            c = -torch.nn.functional.logsigmoid(lam)
            d = self.b - self.a
            return (-self.a + (self.a**2 + 2 * d * c).sqrt()) / d
        if self.kind == "ve":  # sigma = exp(-lam / 2)
            return (-0.5 * lam - math.log(self.a)) / math.log(self.b / self.a)
        return torch.sigmoid(-0.5 * lam)  # (1 - t) / t = exp(lam / 2)

    def noise(self, x0: Tensor, t: Tensor | float, eps: Tensor) -> Tensor:
        r""":math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`."""
        _check_x("x0", x0)
        check.like("eps", eps, "x0", x0)
        tt = _times(t, x0)
        return self.alpha(tt) * x0 + self.sigma(tt) * eps


def _schedule(name: str, value: object) -> Schedule:
    return check.instance(name, value, Schedule)


# ----------------------------------------------------------------------------- parametrizations
def _to_eps(pred: Tensor, kind: str, x: Tensor, tt: Tensor, s: Schedule) -> Tensor:
    a, sg = s.alpha(tt), s.sigma(tt)
    if kind == "eps":
        return pred
    if kind == "x0":
        return (x - a * pred) / sg
    if kind == "score":
        return -sg * pred
    if kind == "v":
        return (a * pred + sg * x) / (a * a + sg * sg)
    da, ds = s.d_alpha(tt), s.d_sigma(tt)
    return (pred - da / a * x) / (ds - da / a * sg)


def _from_eps(eps: Tensor, kind: str, x: Tensor, tt: Tensor, s: Schedule) -> Tensor:
    a, sg = s.alpha(tt), s.sigma(tt)
    if kind == "eps":
        return eps
    x0 = (x - sg * eps) / a
    if kind == "x0":
        return x0
    if kind == "score":
        return -eps / sg
    if kind == "v":
        return a * eps - sg * x0
    return s.d_alpha(tt) * x0 + s.d_sigma(tt) * eps


def convert(
    pred: Tensor, kind: str, to: str, x: Tensor, t: Tensor | float, schedule: Schedule
) -> Tensor:
    """Re-express a prediction of ``kind`` at (x, t) as one of kind ``to`` (both in
    :data:`KINDS`): each is an affine function of ε̂ at fixed (x, t)."""
    kind, to = check.one_of("kind", kind, KINDS), check.one_of("to", to, KINDS)
    _check_x("x", x)
    check.like("pred", pred, "x", x)
    s = _schedule("schedule", schedule)
    tt = _times(t, x)
    return _from_eps(_to_eps(pred, kind, x, tt, s), to, x, tt, s)


def target(kind: str, x0: Tensor, eps: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
    """The regression target of a network of ``kind`` for the sample ``(x0, eps)`` at t: ε, x0,
    v = α ε − σ x0, the conditional score −ε/σ, or the conditional velocity α̇ x0 + σ̇ ε."""
    kind = check.one_of("kind", kind, KINDS)
    s = _schedule("schedule", schedule)
    x = s.noise(x0, t, eps)
    return _from_eps(eps, kind, x, _times(t, x0), s)


def loss_weight(kind: str, t: Tensor | float, schedule: Schedule) -> Tensor:
    r"""w(t) with :math:`\lVert \hat y - y\rVert^2 = w(t)\,\lVert\hat\varepsilon - \varepsilon
    \rVert^2` for a network of ``kind``: 1 (ε), σ²/α² (x0), ((α² + σ²)/α)² (v), 1/σ² (score),
    σ²λ̇²/4 (velocity). The ELBO's weight is :math:`-\dot\lambda/2`."""
    kind = check.one_of("kind", kind, KINDS)
    s = _schedule("schedule", schedule)
    t = _as_t(t)
    a, sg = s.alpha(t), s.sigma(t)
    return {
        "eps": torch.ones_like(t),
        "x0": sg**2 / a**2,
        "v": ((a**2 + sg**2) / a) ** 2,
        "score": 1 / sg**2,
        "velocity": (sg * s.d_log_snr(t)) ** 2 / 4,
    }[kind]


# ----------------------------------------------------------------------------- the exact testbed
class GaussianMixture:
    r""":math:`p(x) = \sum_k \pi_k N(x; \mu_k, \Sigma_k)` in d dimensions, float64.

    ``weights`` (K,) positive (normalized here), ``means`` (K, d), ``covs`` (K, d, d) symmetric
    positive definite. :meth:`noised` gives the exact marginal :math:`p_t` of
    :math:`\alpha_t x_0 + \sigma_t \varepsilon`: the mixture of
    :math:`N(\alpha_t\mu_k, \alpha_t^2\Sigma_k + \sigma_t^2 I)`.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        check.tensor("weights", weights, floating=True, ndim=1, nonempty=True)
        check.tensor("means", means, floating=True, ndim=2, layout="(K, d)")
        check.tensor("covs", covs, floating=True, ndim=3, layout="(K, d, d)")
        k, d = means.shape
        if weights.shape[0] != k or covs.shape != (k, d, d):
            raise ValueError(
                f"weights, means and covs must have shapes (K,), (K, d), (K, d, d); got "
                f"{tuple(weights.shape)}, {tuple(means.shape)}, {tuple(covs.shape)}"
            )
        if not bool((weights > 0).all()):
            raise ValueError("weights must be positive")
        covs = covs.double()
        if not torch.allclose(covs, covs.transpose(1, 2)):
            raise ValueError("covs must be symmetric")
        if not bool((torch.linalg.eigvalsh(covs) > 0).all()):
            raise ValueError("covs must be positive definite")
        self.weights = weights.double() / weights.double().sum()
        self.means, self.covs = means.double(), covs
        self.chol = torch.linalg.cholesky(covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def noised(self, schedule: Schedule, t: float) -> GaussianMixture:
        """The exact marginal at time t (a float): another :class:`GaussianMixture`."""
        s = _schedule("schedule", schedule)
        t = check.probability("t", t)
        a, sg = s.alpha(t), s.sigma(t)
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, a * self.means, a**2 * self.covs + sg**2 * eye)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples, shape (n, d), float64."""
        n = check.integer("n", n, minimum=1)
        generator = check.generator("generator", generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + (self.chol[k] @ z[:, :, None])[:, :, 0]

    def _components(self, x: Tensor, a: Tensor, sg: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample, per-component log weights·densities and precision·(x - mean):
        shapes (n, K) and (n, K, d). a, sg have shape (n, 1); when every row shares one time
        (the samplers' case) the K covariances are factored once instead of n·K times."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        if bool((a == a[0]).all() and (sg == sg[0]).all()):
            a, sg = a[:1], sg[:1]  # broadcast one (1, K, d, d) factor over the batch
        cov = a[:, :, None, None] ** 2 * self.covs + sg[:, :, None, None] ** 2 * eye
        diff = x[:, None, :] - a[:, :, None] * self.means  # (n, K, d)
        chol = torch.linalg.cholesky(cov)
        prec = torch.cholesky_inverse(chol)  # small: K (or n·K) d x d matrices
        sol = (prec @ diff[..., None])[..., 0]
        maha = (diff * sol).sum(-1)
        logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        logc = self.weights.log() - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return logc, sol

    def _at(self, x: Tensor, t: Tensor | float | None, schedule: Schedule | None) -> tuple:
        _check_x("x", x)
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} columns, got shape {tuple(x.shape)}")
        x = x.double()
        if t is None:
            one = torch.ones(x.shape[0], 1, dtype=torch.float64)
            return x, one, torch.zeros_like(one)
        s = _schedule("schedule", schedule)
        tt = _times(t, x)
        return x, s.alpha(tt), s.sigma(tt)

    def log_prob(
        self, x: Tensor, t: Tensor | float | None = None, schedule: Schedule | None = None
    ) -> Tensor:
        """log p(x), or log p_t(x) of the noised marginal when t and schedule are given."""
        x, a, sg = self._at(x, t, schedule)
        logc, _ = self._components(x, a, sg)
        return torch.logsumexp(logc, 1)

    def score(
        self, x: Tensor, t: Tensor | float | None = None, schedule: Schedule | None = None
    ) -> Tensor:
        r""":math:`\nabla_x \log p_t(x) = -\sum_k r_k(x)\,C_k^{-1}(x - \alpha_t\mu_k)`, with
        :math:`r_k` the responsibilities and :math:`C_k = \alpha_t^2\Sigma_k + \sigma_t^2 I`."""
        x, a, sg = self._at(x, t, schedule)
        logc, sol = self._components(x, a, sg)
        r = torch.softmax(logc, 1)
        return -(r[:, :, None] * sol).sum(1)

    def denoise(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        r"""The exact denoiser :math:`E[x_0 \mid x_t = x] = \sum_k r_k(x)\,(\mu_k + \alpha_t
        \Sigma_k C_k^{-1}(x - \alpha_t\mu_k))`, defined at α = 0 too (the mixture's mean)."""
        x, a, sg = self._at(x, t, schedule)
        logc, sol = self._components(x, a, sg)
        r = torch.softmax(logc, 1)
        post = self.means + a[:, :, None] * (self.covs @ sol[..., None])[..., 0]  # (n, K, d)
        return (r[:, :, None] * post).sum(1)

    def velocity(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        r"""The exact probability-flow velocity :math:`\dot\alpha_t E[x_0 \mid x] +
        \dot\sigma_t E[\varepsilon \mid x]`, written through the denoiser so that it holds
        where :math:`\alpha_t = 0` (the straight path at t = 1); needs :math:`\sigma_t > 0`."""
        s = _schedule("schedule", schedule)
        x0 = self.denoise(x, t, s)
        tt = _times(t, x0)
        eps = (x.double() - s.alpha(tt) * x0) / s.sigma(tt)
        return s.d_alpha(tt) * x0 + s.d_sigma(tt) * eps

    def eps(self, x: Tensor, t: Tensor | float, schedule: Schedule) -> Tensor:
        r"""The exact noise predictor
        :math:`E[\varepsilon \mid x_t = x] = -\sigma_t\nabla\log p_t`."""
        sg = _schedule("schedule", schedule).sigma(_times(t, x.double()))
        return -sg * self.score(x, t, schedule)


def ring_mixture(
    k: int = 6, radius: float = 2.0, std: float = 0.15, weights: Tensor | None = None
) -> GaussianMixture:
    """The book's 2-D testbed: k isotropic Gaussians of standard deviation ``std`` evenly spaced
    on a circle of ``radius`` (equal weights unless given)."""
    k = check.integer("k", k, minimum=1)
    radius, std = check.nonnegative("radius", radius), check.positive("std", std)
    angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
    means = radius * torch.stack([angle.cos(), angle.sin()], 1)
    covs = std**2 * torch.eye(2, dtype=torch.float64).expand(k, 2, 2).clone()
    w = torch.ones(k, dtype=torch.float64) if weights is None else weights
    return GaussianMixture(w, means, covs)


# ----------------------------------------------------------------------------- networks and loss
class TimeMLP(nn.Module):
    """An MLP for (x, t[, class]) -> a vector of x's size: x, sinusoidal features of t and an
    optional class embedding (class index ``n_classes`` is "no class", for guidance) are
    concatenated and passed through ``depth`` hidden layers of ``hidden`` SiLU units."""

    def __init__(
        self, dim: int, hidden: int = 128, depth: int = 2, n_classes: int = 0, n_freq: int = 8
    ) -> None:
        super().__init__()
        self.dim = check.integer("dim", dim, minimum=1)
        hidden = check.integer("hidden", hidden, minimum=1)
        depth = check.integer("depth", depth, minimum=1)
        self.n_classes = check.integer("n_classes", n_classes, minimum=0)
        n_freq = check.integer("n_freq", n_freq, minimum=1)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32))
        n_in = dim + 2 * n_freq + (hidden if n_classes else 0)
        self.embed = nn.Embedding(n_classes + 1, hidden) if n_classes else None
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    freqs: Tensor

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        tt = _times(t, x)
        parts = [x, torch.sin(tt * self.freqs), torch.cos(tt * self.freqs)]
        if self.embed is not None:
            if c is None:
                c = torch.full((x.shape[0],), self.n_classes, dtype=torch.long)
            parts.append(self.embed(c))
        elif c is not None:
            raise ValueError("c was given but the network has n_classes=0")
        return self.net(torch.cat(parts, 1))


def train(
    net: nn.Module,
    data: Tensor,
    schedule: Schedule,
    kind: str = "eps",
    steps: int = 2000,
    batch: int = 256,
    lr: float = 2e-3,
    generator: torch.Generator | None = None,
    t_min: float = 1e-3,
    labels: Tensor | None = None,
    p_uncond: float = 0.1,
    noise: Tensor | None = None,
) -> list[float]:
    r"""Train ``net(x_t, t[, c])`` to predict ``kind`` by plain mean squared error (the
    "simple" loss: uniform t in [t_min, 1], no weighting), with Adam and a cosine learning-rate
    decay; returns the loss of every step.

    - ``labels`` (one per row of ``data``): class-conditional training, the class replaced by
      "no class" with probability ``p_uncond`` (classifier-free guidance, Ho & Salimans, 2022).
    - ``noise`` (one row per row of ``data``): train on these fixed (x0, ε) pairs instead of
      fresh noise: reflow (Liu et al., 2023) with the pairs (sample, its starting noise).
    """
    check.instance("net", net, nn.Module)
    _check_x("data", data)
    s = _schedule("schedule", schedule)
    kind = check.one_of("kind", kind, KINDS)
    steps, batch = (
        check.integer("steps", steps, minimum=1),
        check.integer("batch", batch, minimum=1),
    )
    lr, generator = check.positive("lr", lr), check.generator("generator", generator)
    t_min = check.probability("t_min", t_min)
    p_uncond = check.probability("p_uncond", p_uncond)
    for name, extra in (("labels", labels), ("noise", noise)):
        if extra is not None and (not isinstance(extra, Tensor) or extra.shape[0] != len(data)):
            raise ValueError(f"{name} must be a tensor with one row per row of data")
    if noise is not None:
        check.like("noise", noise, "data", data)
    null_class = 0
    if labels is not None:  # the class index that means "no class": TimeMLP's n_classes
        n_classes = getattr(net, "n_classes", None)
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError("labels need a class-conditional net (a TimeMLP with n_classes >= 1)")
        null_class = n_classes
    if kind != "velocity" and s.kind == "linear":
        raise ValueError("the linear schedule trains kind='velocity' (alpha = 0 at t = 1)")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(data), (batch,), generator=generator)
        x0 = data[idx]
        if noise is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        else:
            eps = noise[idx]
        t = t_min + (1 - t_min) * torch.rand(batch, generator=generator, dtype=x0.dtype)
        args = [s.noise(x0, t, eps), t]
        if labels is not None:
            c = labels[idx].clone()
            c[torch.rand(batch, generator=generator) < p_uncond] = null_class
            args.append(c)
        loss = ((net(*args) - target(kind, x0, eps, t, s)) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def reflow(
    flow: nn.Module, n_pairs: int, n_steps: int, seed: int = 0, **train_args: Any
) -> nn.Module:
    """Reflow (Liu, Gong & Liu, 2023): draw ``n_pairs`` noises ε, carry each to a sample x0 with
    ``n_steps`` Euler steps of the velocity model ``flow`` (straight path, t from 1 to 0), and
    train a copy of ``flow`` on the fixed pairs (x0, ε) with :func:`train` (``train_args``:
    steps, batch, lr, t_min). The pairs' straight lines cross less than independent pairs'
    do, so the new flow is straighter (one rectification does not remove every crossing).
    Returns the new model; ``flow`` is unchanged."""
    check.instance("flow", flow, nn.Module)
    n_pairs = check.integer("n_pairs", n_pairs, minimum=1)
    n_steps = check.integer("n_steps", n_steps, minimum=1)
    seed = check.seed("seed", seed)
    gen = torch.Generator().manual_seed(seed)
    dim = flow.dim if isinstance(flow, TimeMLP) else None
    if dim is None:
        raise TypeError(f"flow must be a TimeMLP, got {type(flow).__name__}")
    noise = torch.randn(n_pairs, dim, generator=gen)
    with torch.no_grad():
        x0 = sample_ode(
            flow, "velocity", Schedule.linear(), noise, torch.linspace(1, 0, n_steps + 1)
        )
    new = copy.deepcopy(flow)
    train(new, x0, Schedule.linear(), "velocity", generator=gen, noise=noise, **train_args)
    return new


def guided(net: nn.Module, c: Tensor, w: float) -> EpsFn:
    r"""Classifier-free guidance: :math:`w\,\hat y(x, t, c) + (1 - w)\,\hat y(x, t, \varnothing)`
    (w = 1 is the conditional model, w = 0 the unconditional one, w > 1 guides)."""
    w = check.real("w", w)
    check.instance("net", net, nn.Module)
    check.tensor("c", c, dtype=torch.long, ndim=(0, 1))

    def fn(x: Tensor, t: Tensor) -> Tensor:
        cc = c.expand(x.shape[0]) if c.ndim == 0 else c
        cond = net(x, t, cc)
        return cond if w == 1 else w * cond + (1 - w) * net(x, t)

    return fn


# ----------------------------------------------------------------------------- samplers
def velocity_field(
    pred_fn: EpsFn, kind: str, schedule: Schedule
) -> Callable[[float, Tensor], Tensor]:
    """The probability-flow ODE's right-hand side f(t, x) from a predictor of ``kind``, in the
    signature of :mod:`hamlib.ode`."""
    kind = check.one_of("kind", kind, KINDS)
    s = _schedule("schedule", schedule)

    def f(t: float, x: Tensor) -> Tensor:
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        pred = pred_fn(x, tt)
        return pred if kind == "velocity" else convert(pred, kind, "velocity", x, tt, s)

    return f


def sample_ode(
    pred_fn: EpsFn,
    kind: str,
    schedule: Schedule,
    x1: Tensor,
    ts: Tensor | list[float],
    method: str = "euler",
    path: bool = False,
) -> Tensor:
    """Solve the probability-flow ODE from x1 at ts[0] through ts with Euler, Heun or RK4
    (:func:`hamlib.ode.integrate`); the number of network evaluations is
    (len(ts) - 1) × 1, 2 or 4."""
    _check_x("x1", x1)
    return ode.integrate(velocity_field(pred_fn, kind, schedule), x1, ts, method, path=path)


def snr_matched(ts: Tensor, source: Schedule, target: Schedule, t_min: float = 1e-3) -> Tensor:
    """The times of ``target`` at which its log-SNR equals that of ``source`` at ``ts``: the same
    noise levels in another schedule's clock, clamped to [t_min, 1] (the straight path's ends,
    where the log-SNR is infinite, map to t_min and 1). In y = x/α, τ = σ/α every Gaussian
    path's probability-flow ODE is the same equation (Kingma & Gao, 2023), so two samplers on
    matched grids differ only by what they were trained to predict."""
    check.tensor("ts", ts, floating=True, ndim=1)
    source, target = _schedule("source", source), _schedule("target", target)
    t_min = check.probability("t_min", t_min, open_low=True)
    lam = source.log_snr(ts.double())
    return target.t_of_log_snr(lam).nan_to_num(nan=1.0).clamp(t_min, 1.0)


def _steps(ts: Tensor | list[float]) -> list[float]:
    times = [float(t) for t in (ts.tolist() if isinstance(ts, Tensor) else ts)]
    if len(times) < 2 or any(b >= a for a, b in zip(times, times[1:], strict=False)):
        raise ValueError("ts must hold at least two times, strictly decreasing")
    return times


Step = Callable[[Tensor, Tensor, float, float], Tensor]  # (x, eps_hat, t, s) -> x at s


def _run(
    eps_fn: EpsFn, schedule: Schedule, x1: Tensor, ts: Tensor | list[float], step: Step
) -> Tensor:
    """The loop every one-network-call-per-step sampler shares: from each t to the next time s,
    evaluate ε̂(x, t) once and apply ``step``."""
    _schedule("schedule", schedule)
    times = _steps(ts)
    _check_x("x1", x1)
    x = x1
    for t, u in zip(times, times[1:], strict=False):
        x = step(x, eps_fn(x, torch.full((x.shape[0],), t, dtype=x.dtype)), t, u)
    return x


def ddim(
    eps_fn: EpsFn,
    schedule: Schedule,
    x1: Tensor,
    ts: Tensor | list[float],
    clip: float | None = None,
) -> Tensor:
    r"""DDIM with η = 0 (Song, Meng & Ermon, 2021): from t to s,
    :math:`x_s = \alpha_s \hat x_0 + \sigma_s \hat\varepsilon`, one network call per step.

    ``clip``: clamp :math:`\hat x_0` to [-clip, clip] at every step and recompute
    :math:`\hat\varepsilon` from it (the "static thresholding" of Ho et al.'s code and Saharia et
    al., 2022), for data known to lie in that box; it changes the sampler, not the model."""
    s = _schedule("schedule", schedule)
    clip = None if clip is None else check.positive("clip", clip)

    def step(x: Tensor, e: Tensor, t: float, u: float) -> Tensor:
        x0 = (x - s.sigma(t) * e) / s.alpha(t)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            e = (x - s.alpha(t) * x0) / s.sigma(t)
        return s.alpha(u) * x0 + s.sigma(u) * e

    return _run(eps_fn, s, x1, ts, step)


def ancestral(
    eps_fn: EpsFn,
    schedule: Schedule,
    x1: Tensor,
    ts: Tensor | list[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Ancestral sampling (DDPM, Ho et al., 2020) on any time grid: from t to s, draw from the
    Gaussian posterior :math:`q(x_s \mid x_t, \hat x_0)`, whose mean is
    :math:`\frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}x_t + \frac{\alpha_s\sigma_{t|s}^2}{\sigma_t^2}
    \hat x_0` and variance :math:`\sigma_{t|s}^2\sigma_s^2/\sigma_t^2`, with
    :math:`\alpha_{t|s} = \alpha_t/\alpha_s`, :math:`\sigma_{t|s}^2 = \sigma_t^2 -
    \alpha_{t|s}^2\sigma_s^2`."""
    s = _schedule("schedule", schedule)
    generator = check.generator("generator", generator)

    def step(x: Tensor, e: Tensor, t: float, u: float) -> Tensor:
        at, st, au, su = s.alpha(t), s.sigma(t), s.alpha(u), s.sigma(u)
        x0 = (x - st * e) / at
        a_ts = at / au
        var_ts = st**2 - a_ts**2 * su**2
        mean = a_ts * su**2 / st**2 * x + au * var_ts / st**2 * x0
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return mean + (var_ts * su**2 / st**2).sqrt() * z

    return _run(eps_fn, s, x1, ts, step)


def euler_maruyama(
    eps_fn: EpsFn,
    schedule: Schedule,
    x1: Tensor,
    ts: Tensor | list[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Euler–Maruyama on the reverse-time SDE
    :math:`dx = [f - g^2\nabla\log p_t]\,dt + g\,d\bar w` (Song et al., 2021): from t to
    s = t − h, :math:`x \leftarrow x - h\,(f - g^2 s_\theta) + g\sqrt h\, z`."""
    s = _schedule("schedule", schedule)
    generator = check.generator("generator", generator)

    def step(x: Tensor, e: Tensor, t: float, u: float) -> Tensor:
        h = t - u
        score = -e / s.sigma(t)
        g2 = -(s.sigma(t) ** 2) * s.d_log_snr(t)
        drift = s.d_alpha(t) / s.alpha(t) * x - g2 * score
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x - h * drift + (g2 * h).sqrt() * z

    return _run(eps_fn, s, x1, ts, step)


def edm_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    r"""Karras et al.'s (2022) noise levels :math:`\sigma_i = (\sigma_{max}^{1/\rho} +
    \tfrac{i}{n-1}(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`, i < n, then 0."""
    n = check.integer("n", n, minimum=2)
    lo, hi = check.positive("sigma_min", sigma_min), check.positive("sigma_max", sigma_max)
    rho = check.positive("rho", rho)
    if hi <= lo:
        raise ValueError(f"sigma_max must exceed sigma_min, got {hi} <= {lo}")
    i = torch.arange(n, dtype=torch.float64)
    sig = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])


def edm_heun(eps_fn: EpsFn, schedule: Schedule, x1: Tensor, sigmas: Tensor) -> Tensor:
    r"""EDM's deterministic sampler (Karras et al., 2022, Algorithm 1) for a model trained on any
    schedule with α > 0: in the variables :math:`y = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`
    the probability-flow ODE is :math:`dy/d\tilde\sigma = \hat\varepsilon`; Heun's steps between
    the ``sigmas`` (from :func:`edm_sigmas`), Euler into the last, σ̃ = 0. ``x1`` is a draw at
    :math:`\tilde\sigma` = sigmas[0] in y; returns y = x at σ̃ = 0 (the denoised sample).
    Network evaluations: 2(len(sigmas) − 1) − 1."""
    s = _schedule("schedule", schedule)
    _check_x("x1", x1)
    check.tensor("sigmas", sigmas, floating=True, ndim=1)
    sig = [float(v) for v in sigmas.tolist()]
    if any(b >= a for a, b in zip(sig, sig[1:], strict=False)) or sig[-1] != 0.0:
        raise ValueError("sigmas must decrease strictly and end at 0")

    def eps_at(y: Tensor, sg: float) -> Tensor:
        t = s.t_of_log_snr(torch.tensor(-2 * math.log(sg), dtype=torch.float64)).item()
        tt = torch.full((y.shape[0],), t, dtype=y.dtype)
        return eps_fn(s.alpha(t) * y, tt)

    y = x1
    for a, b in zip(sig, sig[1:], strict=False):
        d = eps_at(y, a)
        y_next = y + (b - a) * d
        if b > 0:
            y_next = y + (b - a) * 0.5 * (d + eps_at(y_next, b))
        y = y_next
    return y


# ----------------------------------------------------------------------------- measurements
def mmd2(x: Tensor, y: Tensor, bandwidth: float) -> float:
    r"""The unbiased squared maximum mean discrepancy (Gretton et al., 2012) with the Gaussian
    kernel :math:`k(a, b) = \exp(-\lVert a - b\rVert^2 / 2h^2)`: zero in expectation when x and y
    come from one distribution, and its spread then is the yardstick."""
    _check_x("x", x)
    _check_x("y", y)
    h = check.positive("bandwidth", bandwidth)
    if x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError("x and y need the same number of columns and at least 2 rows each")
    x, y = x.double(), y.double()

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h * h))

    n, m = len(x), len(y)
    kxx = (k(x, x).sum() - n) / (n * (n - 1))
    kyy = (k(y, y).sum() - m) / (m * (m - 1))
    return (kxx + kyy - 2 * k(x, y).mean()).item()


def straightness(path: Tensor, ts: Tensor | list[float]) -> float:
    r"""Liu et al.'s (2023) straightness :math:`S = \int E\lVert (x_{end} - x_{start})/T -
    \dot x_t\rVert^2 dt`, from a path of shape (len(ts), n, d) (e.g. many Euler steps); zero
    exactly when every trajectory is a straight line traversed at constant speed."""
    check.tensor("path", path, floating=True, ndim=3, layout="(len(ts), n, d)")
    times = torch.as_tensor(ts, dtype=path.dtype)
    if times.ndim != 1 or len(times) != len(path) or len(times) < 2:
        raise ValueError("ts must have one time per row of path, and at least two")
    dt = times.diff()[:, None, None]
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError("ts must be strictly increasing or strictly decreasing")
    vel = path.diff(dim=0) / dt
    chord = (path[-1] - path[0]) / (times[-1] - times[0])
    return ((vel - chord) ** 2).sum(-1).mean(-1).mul(dt.abs()[:, 0, 0]).sum().item()


def arc_chord(path: Tensor) -> float:
    """Mean over trajectories of (arc length / chord length − 1) for a path of shape
    (steps, n, d): 0 for straight lines, whatever the speed along them, so unlike
    :func:`straightness` it does not depend on the clock."""
    check.tensor("path", path, floating=True, ndim=3, layout="(steps, n, d)")
    if len(path) < 2:
        raise ValueError(f"path needs at least two states, got shape {tuple(path.shape)}")
    arc = path.diff(dim=0).norm(dim=-1).sum(0)
    chord = (path[-1] - path[0]).norm(dim=-1)
    return (arc / chord - 1).mean().item()


def score_testbed(
    models: dict[str, nn.Module],
    mixture: GaussianMixture,
    nfes: list[int],
    n_eval: int = 2000,
    eval_seed: int = 5,
    bandwidth: float = 0.3,
    t_min: float = 1e-3,
) -> dict[str, list[float]]:
    """MMD² to exact draws at each number of steps in ``nfes`` (Chapter 8.4), for the models
    "diffusion" (ε on VP: DDIM on uniform t, and as "diffusion_flowgrid" DDIM on the straight
    path's noise levels), "flow" and "reflow" (velocity on the straight path: Euler on uniform t).
    One set of draws (``eval_seed``) serves every model."""
    check.instance("mixture", mixture, GaussianMixture)
    n_eval = check.integer("n_eval", n_eval, minimum=2)
    vp, line = Schedule.vp(), Schedule.linear()
    gen = torch.Generator().manual_seed(check.seed("eval_seed", eval_seed))
    ref_vp = mixture.noised(vp, t_min).sample(n_eval, gen).float()
    ref_0 = mixture.sample(n_eval, gen).float()
    x1 = torch.randn(n_eval, mixture.dim, generator=gen)
    out: dict[str, list[float]] = {
        "diffusion": [],
        "diffusion_flowgrid": [],
        "flow": [],
        "reflow": [],
    }
    with torch.no_grad():
        for nfe in nfes:
            uniform = torch.linspace(1, 0, nfe + 1)
            for name, grid in (
                ("diffusion", torch.linspace(1, t_min, nfe + 1)),
                ("diffusion_flowgrid", snr_matched(uniform, line, vp, t_min)),
            ):
                x = ddim(models["diffusion"], vp, x1, grid.float())
                out[name].append(mmd2(x, ref_vp, bandwidth))
            for name in ("flow", "reflow"):
                x = sample_ode(models[name], "velocity", line, x1, uniform)
                out[name].append(mmd2(x, ref_0, bandwidth))
    return out


def elbo(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    t_min: float = 1e-3,
    n_lambda: int = 64,
    n_noise: int = 8,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    r"""The negative ELBO of a continuous-time diffusion model for continuous data, per sample in
    nats (Kingma et al., 2021), with a Gaussian decoder :math:`p(x \mid z_{t_{min}}) =
    N(z/\alpha, \sigma^2/\alpha^2)` at :math:`t_{min}`:

    .. math:: -\mathrm{ELBO} = \underbrace{\tfrac d2\log(2\pi e\,\sigma^2/\alpha^2)}_{
       \text{reconstruction}} + \underbrace{\mathrm{KL}(q(z_1 \mid x)\,\|\,N(0, I))}_{\text{prior}}
       + \underbrace{\tfrac12\int_{\lambda_1}^{\lambda_{t_{min}}} E\lVert\varepsilon -
       \hat\varepsilon\rVert^2\,d\lambda}_{\text{diffusion}}

    The diffusion term is integrated in λ (trapezoid on ``n_lambda`` points, ``n_noise``
    draws of ε at each). Returns the three terms and their sum, each of shape (n,)."""
    _check_x("x", x)
    s = _schedule("schedule", schedule)
    t_min = check.probability("t_min", t_min, open_low=True, open_high=True)
    n_lambda = check.integer("n_lambda", n_lambda, minimum=2)
    n_noise = check.integer("n_noise", n_noise, minimum=1)
    generator = check.generator("generator", generator)
    if s.kind != "vp":
        raise ValueError("elbo needs a variance-preserving schedule (q(z_1 | x) near N(0, I))")
    x = x.double()
    n, d = x.shape
    a0, s0 = s.alpha(t_min), s.sigma(t_min)
    recon = torch.full(
        (n,),
        0.5 * d * math.log(2 * math.pi * math.e) + d * (s0 / a0).log().item(),
        dtype=torch.float64,
    )
    a1, s1 = s.alpha(1.0), s.sigma(1.0)
    prior = 0.5 * ((a1 * x) ** 2).sum(1) + 0.5 * d * (s1**2 - 1 - 2 * s1.log())
    lams = torch.linspace(s.log_snr(1.0).item(), s.log_snr(t_min).item(), n_lambda).double()
    mse = torch.zeros(n_lambda, n, dtype=torch.float64)
    for i, lam in enumerate(lams):
        t = s.t_of_log_snr(lam).item()
        for _ in range(n_noise):
            e = torch.randn(x.shape, generator=generator, dtype=torch.float64)
            xt = s.noise(x, t, e)
            e_hat = eps_fn(xt, torch.full((n,), t, dtype=torch.float64)).double()
            mse[i] += ((e - e_hat) ** 2).sum(1) / n_noise
    diffusion = 0.5 * torch.trapezoid(mse, lams, dim=0)
    return {
        "reconstruction": recon,
        "prior": prior,
        "diffusion": diffusion,
        "total": recon + prior + diffusion,
    }


def ode_log_likelihood(
    velocity: Callable[[float, Tensor], Tensor],
    x: Tensor,
    ts: Tensor | list[float],
    prior_log_prob: Callable[[Tensor], Tensor],
    divergence: str = "exact",
    n_probe: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""log p(x) of the model defined by the probability-flow ODE (the instantaneous change of
    variables, Chen et al., 2018): integrate :math:`\dot x = u(x, t)` from x at ts[0] (near 0)
    to ts[-1] (= 1) with RK4, and :math:`\log p_0(x) = \log p_1(x_1) + \int \nabla\cdot u\,dt`.

    ``divergence="exact"`` takes the trace of the Jacobian with d backward passes;
    ``"hutchinson"`` estimates it with ``n_probe`` Rademacher probes :math:`v^\top J v`, drawn
    once per trajectory (Grathwohl et al., 2019). Returns shape (n,)."""
    check.function("velocity", velocity)
    _check_x("x", x)
    check.function("prior_log_prob", prior_log_prob)
    divergence = check.one_of("divergence", divergence, ("exact", "hutchinson"))
    n_probe = check.integer("n_probe", n_probe, minimum=1)
    generator = check.generator("generator", generator)
    times = ts.tolist() if isinstance(ts, Tensor) and ts.ndim == 1 else ts
    if not isinstance(times, list | tuple) or len(times) < 2 or times[-1] <= times[0]:
        raise ValueError("ts must be a 1-D sequence of times increasing from near 0 to 1")
    n, d = x.shape
    probes = (
        torch.randint(0, 2, (n_probe, n, d), generator=generator).to(x.dtype) * 2 - 1
        if divergence == "hutchinson"
        else None
    )

    def div(t: float, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            u = velocity(t, z)
            if probes is None:
                rows = [
                    torch.autograd.grad(u[:, i].sum(), z, retain_graph=i < d - 1)[0][:, i]
                    for i in range(d)
                ]
                tr = torch.stack(rows).sum(0)
            else:
                tr = torch.stack(
                    [
                        (
                            torch.autograd.grad((u * v).sum(), z, retain_graph=j < n_probe - 1)[0]
                            * v
                        ).sum(1)
                        for j, v in enumerate(probes)
                    ]
                ).mean(0)
        return u.detach(), tr.detach()

    def field(t: float, state: Tensor) -> Tensor:
        u, tr = div(t, state[:, :d])
        return torch.cat([u, tr[:, None]], 1)

    state = torch.cat([x, torch.zeros(n, 1, dtype=x.dtype)], 1)
    end = ode.integrate(field, state, ts, "rk4")
    return prior_log_prob(end[:, :d]) + end[:, d]


# ----------------------------------------------------------------------------- digits (Chapter 8.6)
def train_digits(
    steps: int,
    seed: int,
    n_train: int = 1500,
    hidden: int = 512,
    depth: int = 3,
    batch: int = 128,
    lr: float = 1e-3,
    latent: int = 8,
    vae_epochs: int = 60,
    spaces: tuple[str, ...] = ("pixel", "latent"),
) -> dict:
    """Class-conditional ε-models (VP, guidance dropout 0.1) on scikit-learn's digits
    (:func:`hamlib.tasks.digits`, split seed 0), one per entry of ``spaces``: "pixel", on pixels
    scaled to [-1, 1], and "latent", on the standardized encoder means of a
    :class:`hamlib.vi.VAE` with ``latent`` dimensions trained for ``vae_epochs``. Returns the
    models, the VAE, the standardization and the training seconds."""
    from hamlib import tasks, vi

    steps, seed = check.integer("steps", steps, minimum=1), check.seed("seed", seed)
    if not spaces or any(sp not in ("pixel", "latent") for sp in spaces):
        raise ValueError(f"spaces must be a non-empty tuple of 'pixel', 'latent', got {spaces!r}")
    x_train, y_train, _, _ = tasks.digits(n_train, 0)
    vp = Schedule.vp()
    common: dict[str, Any] = {"steps": steps, "batch": batch, "lr": lr, "labels": y_train}
    out: dict = {"n_train": n_train, "latent_dim": latent, "spaces": tuple(spaces)}
    if "pixel" in spaces:
        torch.manual_seed(seed)
        net = TimeMLP(64, hidden, depth, n_classes=10)
        t0 = time.perf_counter()
        x = (2 * x_train - 1).float()
        train(net, x, vp, generator=torch.Generator().manual_seed(seed), **common)
        out["pixel"], out["pixel_seconds"] = net, time.perf_counter() - t0
    if "latent" not in spaces:
        return out
    torch.manual_seed(seed)
    vae = vi.VAE(64, latent, 128)
    t0 = time.perf_counter()
    vi.train_vae(vae, x_train.float(), vae_epochs, generator=torch.Generator().manual_seed(seed))
    out["vae"], out["vae_seconds"] = vae, time.perf_counter() - t0
    with torch.no_grad():
        mu, _ = vae.encode(x_train.float())
    out["shift"], out["scale"] = mu.mean(0), mu.std(0)
    torch.manual_seed(seed)
    lnet = TimeMLP(latent, hidden, depth, n_classes=10)
    t0 = time.perf_counter()
    z = (mu - out["shift"]) / out["scale"]
    train(lnet, z, vp, generator=torch.Generator().manual_seed(seed), **common)
    out["latent"], out["latent_seconds"] = lnet, time.perf_counter() - t0
    return out


def sample_digits(
    models: dict, space: str, w: float, per_class: int = 20, sample_steps: int = 50, seed: int = 1
) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each digit at guidance ``w`` from :func:`train_digits`' model of
    ``space`` ("pixel" or "latent", decoded by the VAE's mean), as pixels in [0, 1] (float64), and
    their classes; DDIM with ``sample_steps`` steps from t = 1 to 0.001, clipping the predicted
    clean image to the pixel range in pixel space."""
    space = check.one_of("space", space, models["spaces"])
    per_class = check.integer("per_class", per_class, minimum=1)
    sample_steps = check.integer("sample_steps", sample_steps, minimum=1)
    vp = Schedule.vp()
    c = torch.arange(10).repeat(per_class)
    gen = torch.Generator().manual_seed(check.seed("seed", seed))
    dim = 64 if space == "pixel" else models["latent_dim"]
    x1 = torch.randn(len(c), dim, generator=gen)
    ts = torch.linspace(1, 1e-3, sample_steps + 1)
    with torch.no_grad():
        if space == "pixel":
            x = ddim(guided(models[space], c, w), vp, x1, ts, clip=1.0)
            return ((x + 1) / 2).clamp(0, 1).double(), c
        x = ddim(guided(models[space], c, w), vp, x1, ts)
        z = x * models["scale"] + models["shift"]
        return torch.sigmoid(models["vae"].decode(z)).double(), c


def score_digits(
    models: dict, guidance: list[float], per_class: int = 20, sample_steps: int = 50, seed: int = 1
) -> dict:
    """For each space and guidance scale, on the samples of :func:`sample_digits`:

    - ``accuracy``: how often :func:`hamlib.tasks.digits_classifier` (fitted on the training
      digits) names the intended class;
    - ``nearest_train``: the median distance from a sample to its nearest training digit;
    - ``precision``: the share of samples at least as close to a training digit as 95% of real
      held-out digits are (Kynkäänniemi et al.'s precision, with the real data's own nearest-
      neighbour distances as the radius): noise scores low, copies and good samples high;

    plus the training seconds, for each space that ``models`` holds."""
    from hamlib import tasks

    x_train, y_train, x_held, _ = tasks.digits(models["n_train"], 0)
    judge = tasks.digits_classifier(x_train, y_train)
    radius = torch.cdist(x_held, x_train).min(1).values.quantile(0.95)
    out: dict = {}
    for space in models["spaces"]:
        acc, near, prec = [], [], []
        for w in guidance:
            pix, c = sample_digits(models, space, w, per_class, sample_steps, seed)
            acc.append(float((judge.predict(pix.numpy()) == c.numpy()).mean()))
            d = torch.cdist(pix, x_train).min(1).values
            near.append(d.median().item())
            prec.append((d <= radius).double().mean().item())
        out[space] = {"accuracy": acc, "nearest_train": near, "precision": prec}
        out[space]["train_seconds"] = models[f"{space}_seconds"]
    if "latent" in models["spaces"]:
        out["vae_seconds"] = models["vae_seconds"]
    return out

r"""Estimators for training dynamics: what to log during training, and how to locate and fit
transitions and scaling laws in what was logged.

- :class:`Tracker` records named scalars every ``every`` steps and plots them.
- :func:`effective_rank` of a representation (Roy & Vetterli, 2007).
- :func:`fit_sigmoid_transition`: midpoint and width of a sigmoidal jump (a :class:`SigmoidFit`).
- :func:`change_points`: optimal piecewise-constant segmentation (least squares, exact by
  dynamic programming).
- :func:`fit_power_law`: :math:`L(N) = E + A N^{-\alpha}` with standard errors (a
  :class:`PowerLawFit`).
- :func:`fit_chinchilla`, :func:`chinchilla_loss`, :func:`compute_optimal`: the two-variable law
  :math:`L(N, D) = E + A N^{-\alpha} + B D^{-\beta}` of Hoffmann et al. (2022), its parameters a
  :class:`ChinchillaLaw` (the printed ones are :data:`CHINCHILLA`), a fit a :class:`ChinchillaFit`.
- :func:`fourier_power`, :func:`sum_frequency_power`, :func:`key_frequencies`,
  :func:`restrict_logits`, :func:`gini`: what a network trained on :math:`(a + b) \bmod p`
  learned, in the Fourier basis of :math:`\mathbb Z_p`, with Nanda et al.'s (2023) progress
  measures.
- :func:`cusum_flags`, :func:`inflection_flags`: the "critical point" detectors of source 004,
  reproduced as written so that they can be tested on curves whose answer is known.

The tasks these are measured on (grokking, a teacher and its students) live in
:mod:`hamlib.tasks`; the gradient noise scale and the top Hessian eigenvalue in
:mod:`hamlib.measure`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import special
from scipy.optimize import OptimizeWarning, curve_fit, minimize
from torch import Tensor

from hamlib import _checks as check

__all__ = [
    "CHINCHILLA",
    "ChinchillaFit",
    "ChinchillaLaw",
    "PowerLawFit",
    "SigmoidFit",
    "Tracker",
    "change_points",
    "chinchilla_loss",
    "compute_optimal",
    "cusum_flags",
    "effective_rank",
    "fit_chinchilla",
    "fit_power_law",
    "fit_sigmoid_transition",
    "fourier_power",
    "gini",
    "inflection_flags",
    "key_frequencies",
    "restrict_logits",
    "sum_frequency_power",
]


def _samples(min_rows: int, positive: bool = False, **columns: Any) -> list[np.ndarray]:
    """Each keyword as a 1-D float array of finite numbers (positive if asked), all one length."""
    arrays = [
        check.array(name, v, ndim=1, min_rows=min_rows, positive=positive)
        for name, v in columns.items()
    ]
    if len({arr.size for arr in arrays}) > 1:
        *first, last = columns
        sizes = ", ".join(str(arr.size) for arr in arrays)
        raise ValueError(f"{', '.join(first)} and {last} differ in length: {sizes}")
    return arrays


class Tracker:
    """Record scalars every ``every`` steps: ``tracker.log(step, loss=..., grad_norm=...)``.

    ``log`` ignores steps that are not multiples of ``every`` (so it can be called every step);
    ``due(step)`` says whether a step will be recorded, to skip computing expensive estimators.
    Values are recorded as they come, NaN included: a diverging run is worth seeing.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = check.integer("every", every, minimum=1)
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}

    def due(self, step: int) -> bool:
        return check.integer("step", step) % self.every == 0

    def log(self, step: int, **values: float | Tensor) -> None:
        step = check.integer("step", step)
        if not self.due(step):
            return
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"steps must increase, got {step} after {self.steps[-1]}")
        if self.steps:  # check everything before recording anything
            missing, new = set(self.values) - set(values), set(values) - set(self.values)
            if missing:
                raise ValueError(f"log every quantity at every recorded step: {missing} missing")
            if new:
                raise ValueError(f"{new} was not logged from the first recorded step")
        for name, v in values.items():
            self.values.setdefault(name, []).append(float(v.item() if isinstance(v, Tensor) else v))
        self.steps.append(step)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.values:
            raise KeyError(f"{name!r} was never logged; logged: {sorted(self.values)}")
        return np.asarray(self.values[name])

    def plot(
        self, names: Sequence[str] | None = None, logx: bool = False, ncols: int | None = None
    ) -> Any:
        """One panel per quantity, against the step, ``ncols`` panels a row (default: all in
        one row). Returns the matplotlib figure."""
        import matplotlib.pyplot as plt

        names = list(names) if names is not None else sorted(self.values)
        if not names:
            raise ValueError("nothing to plot: names is empty or nothing was logged")
        logx = check.boolean("logx", logx)
        ncols = len(names) if ncols is None else check.integer("ncols", ncols, minimum=1)
        nrows = -(-len(names) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names, strict=False):
            ax.plot(self.steps, self[name])
            ax.set(xlabel="step", title=name, xscale="log" if logx else "linear")
        return fig


def effective_rank(features: Tensor | np.ndarray) -> float:
    r"""Roy & Vetterli (2007): :math:`\exp(H(p))` with :math:`p_i = \sigma_i / \sum_j \sigma_j`
    the normalized singular values of the (n, d) feature matrix. Between 1 (rank one) and
    :math:`\min(n, d)` (all singular values equal). Features are not centred."""
    x = torch.as_tensor(check.array("features", features, ndim=2))
    s = torch.linalg.svdvals(x)
    if s.sum() == 0:
        raise ValueError("features is all zeros: its effective rank is undefined")
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass(frozen=True)
class SigmoidFit:
    """What :func:`fit_sigmoid_transition` found."""

    midpoint: float
    width: float
    low: float
    high: float
    midpoint_se: float


def _sigmoid(t: np.ndarray, low: float, high: float, mid: float, width: float) -> np.ndarray:
    return low + (high - low) / (1.0 + np.exp(-np.clip((t - mid) / width, -60, 60)))


def fit_sigmoid_transition(
    steps: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    log_steps: bool = False,
) -> SigmoidFit:
    r"""Least-squares fit of :math:`v(t) = \mathrm{low} + (\mathrm{high} - \mathrm{low}) /
    (1 + e^{-(t - \mathrm{mid})/w})`.

    Returns ``midpoint``, ``width`` (both in steps; with ``log_steps`` the fit is in
    :math:`\log_{10} t`, and ``midpoint`` is converted back, ``width`` stays in decades),
    ``low``, ``high`` and ``midpoint_se`` (the standard error of the midpoint in the fitted
    coordinate)."""
    t, v = _samples(5, steps=steps, values=values)
    if check.boolean("log_steps", log_steps):
        if np.any(t <= 0):
            raise ValueError("log_steps needs positive steps")
        t = np.log10(t)
    if np.ptp(v) == 0:
        raise ValueError("values are constant: there is no transition to fit")
    low, high = (
        float(np.mean(v[: max(1, v.size // 10)])),
        float(np.mean(v[-max(1, v.size // 10) :])),
    )
    mid0 = float(t[np.argmin(np.abs(v - (low + high) / 2))])
    width0 = max(float(np.ptp(t)) / 20, 1e-12)
    try:
        with warnings.catch_warnings():  # an undetermined covariance gives midpoint_se = nan
            warnings.simplefilter("ignore", OptimizeWarning)
            params, cov = curve_fit(_sigmoid, t, v, p0=[low, high, mid0, width0], maxfev=20000)
    except RuntimeError as exc:
        raise ValueError(f"the sigmoid fit did not converge: {exc}") from exc
    low, high, mid, width = (float(p) for p in params)
    se = float(np.sqrt(cov[2, 2])) if np.all(np.isfinite(cov)) else math.nan
    return SigmoidFit(
        midpoint=10**mid if log_steps else mid, width=abs(width), low=low, high=high, midpoint_se=se
    )


def change_points(signal: Sequence[float] | np.ndarray | Tensor, n_breaks: int) -> list[int]:
    """Indices where a piecewise-constant fit with ``n_breaks`` breaks changes level, chosen to
    minimize the total squared error (exact, by dynamic programming in O(n_breaks n^2)).

    A break at index i means the segment before it ends at i - 1 and the next starts at i."""
    y = check.array("signal", signal, ndim=1, min_rows=2)
    n = y.size
    n_breaks = check.integer("n_breaks", n_breaks, minimum=1, maximum=n - 1)
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])

    def cost(i: np.ndarray, j: int) -> np.ndarray:  # squared error of segments y[i:j]
        length = j - i
        s = c1[j] - c1[i]
        return (c2[j] - c2[i]) - s * s / length

    ends = np.arange(1, n + 1)
    best = np.concatenate([[0.0], c2[1:] - c1[1:] ** 2 / ends])  # one segment y[0:j]
    back = np.zeros((n_breaks + 1, n + 1), dtype=int)
    for k in range(1, n_breaks + 1):
        new = np.full(n + 1, np.inf)
        for j in range(k + 1, n + 1):
            i = np.arange(k, j)  # the last segment is y[i:j], at least one point
            total = best[i] + cost(i, j)
            m = int(np.argmin(total))
            new[j], back[k, j] = total[m], i[m]
        best = new
    breaks, j = [], n
    for k in range(n_breaks, 0, -1):
        j = int(back[k, j])
        breaks.append(j)
    return sorted(breaks)


@dataclass(frozen=True)
class PowerLawFit:
    r""":math:`y = E + A x^{-\alpha}` as :func:`fit_power_law` found it, with standard errors."""

    E: float
    A: float
    alpha: float
    E_se: float
    A_se: float
    alpha_se: float


def _power(n: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    return e + a * n ** (-alpha)


def fit_power_law(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, fit_offset: bool = True
) -> PowerLawFit:
    r"""Fit :math:`y = E + A x^{-\alpha}` by least squares on :math:`\log y` (relative errors, the
    usual choice for losses spanning a range). With ``fit_offset=False``, E = 0 and the fit is a
    straight line in log-log coordinates.

    Returns ``E``, ``A``, ``alpha`` and their standard errors ``E_se``, ``A_se``, ``alpha_se``
    (from the fit's covariance: they assume the model is right and the residuals independent)."""
    fit_offset = check.boolean("fit_offset", fit_offset)
    xs, ys = _samples(4 if fit_offset else 3, positive=True, x=x, y=y)
    lx, ly = np.log(xs), np.log(ys)
    if not fit_offset:  # a straight line in log-log coordinates
        # standard errors by hand: scipy's linregress, from 1 - r², loses digits on near-exact fits
        slope, intercept = np.polyfit(lx, ly, 1)
        resid = ly - (intercept + slope * lx)
        s2 = float(resid @ resid) / (xs.size - 2)
        sxx = float(((lx - lx.mean()) ** 2).sum())
        a = math.exp(intercept)
        a_se = a * math.sqrt(s2 * (1 / xs.size + lx.mean() ** 2 / sxx))
        return PowerLawFit(0.0, a, float(-slope), 0.0, a_se, math.sqrt(s2 / sxx))

    def log_model(n: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
        return np.log(np.maximum(_power(n, e, a, alpha), 1e-300))

    e0 = 0.9 * float(ys.min())
    slope, intercept = np.polyfit(lx, np.log(np.maximum(ys - e0, 1e-12)), 1)
    p0 = [e0, math.exp(intercept), max(-slope, 1e-3)]
    try:
        params, cov = curve_fit(
            log_model,
            xs,
            ly,
            p0=p0,
            bounds=([0.0, 0.0, 0.0], [float(ys.min()), np.inf, 10.0]),
            maxfev=50000,
        )
    except RuntimeError as exc:
        raise ValueError(f"the power-law fit did not converge: {exc}") from exc
    se = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else np.full(3, math.nan)
    return PowerLawFit(*(float(p) for p in params), *(float(s) for s in se))


@dataclass(frozen=True)
class ChinchillaLaw:
    r"""The parameters of :math:`L(N, D) = E + A N^{-\alpha} + B D^{-\beta}`, with N parameters
    and D training tokens, loss in nats per token."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("E", "A", "B", "alpha", "beta"):
            object.__setattr__(self, name, check.real(name, getattr(self, name)))


@dataclass(frozen=True)
class ChinchillaFit(ChinchillaLaw):
    """A law as :func:`fit_chinchilla` found it, with the final Huber objective and whether
    L-BFGS reported convergence."""

    huber: float
    converged: bool


CHINCHILLA = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
"""Hoffmann et al. (2022), Approach 3, as printed in the paper (immutable)."""


def chinchilla_loss(n: Any, d: Any, params: ChinchillaLaw = CHINCHILLA) -> np.ndarray:
    r""":math:`L(N, D) = E + A N^{-\alpha} + B D^{-\beta}` (Hoffmann et al., 2022, eq. 2)."""
    law = check.instance("params", params, ChinchillaLaw)
    n, d = (
        check.array("n", n, ndim=None, positive=True),
        check.array("d", d, ndim=None, positive=True),
    )
    return law.E + law.A * n**-law.alpha + law.B * d**-law.beta


def _check_compute_optimal_args(flops: Any, params: Any) -> tuple[float, ChinchillaLaw]:
    law = check.instance("params", params, ChinchillaLaw)
    for name in ("A", "B", "alpha", "beta"):
        check.positive(f"params.{name}", getattr(law, name))
    return check.positive("flops", flops), law


def compute_optimal(flops: float, params: ChinchillaLaw = CHINCHILLA) -> tuple[float, float]:
    r"""The (N, D) minimizing :math:`L(N, D)` at a compute budget :math:`C = 6ND` FLOPs:
    :math:`N_{opt} = G (C/6)^{\beta/(\alpha+\beta)}`, :math:`D_{opt} = G^{-1}
    (C/6)^{\alpha/(\alpha+\beta)}` with :math:`G = (\alpha A / \beta B)^{1/(\alpha+\beta)}`
    (Hoffmann et al., 2022, eq. 4)."""
    flops, law = _check_compute_optimal_args(flops, params)
    a, b, alpha, beta = law.A, law.B, law.alpha, law.beta
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    n = g * (flops / 6) ** (beta / (alpha + beta))
    return float(n), float(flops / 6 / n)


def _chinchilla_terms(
    theta: np.ndarray, ln: np.ndarray, ld: np.ndarray, ll: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals LSE(a - alpha log N, b - beta log D, e) - log L and the softmax weights of the
    three terms; theta = (a, b, e, alpha, beta) of shape (5,), or (5, k, 1) for k at once."""
    a, b, e, alpha, beta = theta
    z = np.stack(np.broadcast_arrays(a - alpha * ln, b - beta * ld, e + 0 * ln))
    # by hand, not scipy.special.logsumexp: that rounds the last bit differently, and L-BFGS run
    # to gtol 1e-10 turns it into changes of 1e-6 in the fitted parameters
    zmax = z.max(0)
    w = np.exp(z - zmax)
    return zmax + np.log(w.sum(0)) - ll, w / w.sum(0)


def _chinchilla_objective(
    theta: np.ndarray, ln: np.ndarray, ld: np.ndarray, ll: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """:func:`fit_chinchilla`'s objective, the summed Huber loss of the residuals, and its
    gradient in theta (chain rule: Huber'(r) = clip(r, -delta, delta), dLSE/dz = softmax)."""
    r, soft = _chinchilla_terms(theta, ln, ld, ll)
    dr = np.clip(r, -delta, delta)
    grad = np.array(
        [dr @ soft[0], dr @ soft[1], dr @ soft[2], -(dr * soft[0]) @ ln, -(dr * soft[1]) @ ld]
    )
    return float(special.huber(delta, r).sum()), grad


def fit_chinchilla(
    n: Any,
    d: Any,
    loss: Any,
    delta: float = 1e-3,
    n_starts: int = 8,
    maxiter: int = 1000,
    gtol: float = 1e-10,
) -> ChinchillaFit:
    r"""Fit :math:`L = E + A N^{-\alpha} + B D^{-\beta}` the way Hoffmann et al. (2022) describe:
    minimize :math:`\sum_i \mathrm{Huber}_\delta\big(\mathrm{LSE}(a - \alpha \log N_i,\ b - \beta
    \log D_i,\ e) - \log L_i\big)` over :math:`(a, b, e, \alpha, \beta)` with L-BFGS, where
    :math:`A = e^a, B = e^b, E = e^e`. Starts from the ``n_starts`` best points of their grid
    (:math:`\alpha, \beta \in \{0, 0.5, \dots, 2\}`, :math:`e \in \{-1, -0.5, \dots, 1\}`,
    :math:`a, b \in \{0, 5, \dots, 25\}`). ``maxiter`` and ``gtol`` are L-BFGS's stopping rules:
    loosen them to see what an optimizer that stops early reports (Besiroglu et al., 2024).

    Returns a :class:`ChinchillaFit`: E, A, B, alpha, beta, the objective ``huber`` and
    ``converged``."""
    data = tuple(np.log(v) for v in _samples(5, positive=True, n=n, d=d, loss=loss))
    delta = check.positive("delta", delta)
    n_starts = check.integer("n_starts", n_starts, minimum=1)
    maxiter = check.integer("maxiter", maxiter, minimum=1)
    gtol = check.nonnegative("gtol", gtol)
    grid = np.array(
        np.meshgrid(
            np.arange(0, 26, 5.0),
            np.arange(0, 26, 5.0),
            np.arange(-1, 1.01, 0.5),
            np.arange(0, 2.01, 0.5),
            np.arange(0, 2.01, 0.5),
            indexing="ij",
        )
    ).reshape(5, -1)
    residuals = _chinchilla_terms(grid[:, :, None], *data)[0]  # all grid points at once
    scores = special.huber(delta, residuals).sum(1)
    best: Any = None
    for i in np.argsort(scores)[:n_starts]:
        res = minimize(
            _chinchilla_objective,
            grid[:, i],
            args=(*data, delta),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": maxiter, "gtol": gtol, "ftol": 0.0},
        )
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = (float(v) for v in best.x)
    return ChinchillaFit(
        E=math.exp(e),
        A=math.exp(a),
        B=math.exp(b),
        alpha=alpha,
        beta=beta,
        huber=float(best.fun),
        converged=bool(best.success),
    )


# --- Fourier measures of modular arithmetic (Nanda et al., 2023) -------------------------------


def fourier_power(table: Tensor | np.ndarray) -> np.ndarray:
    r"""How a (p, d) table indexed by a residue (an embedding, or the output weights) spreads over
    the frequencies of :math:`\mathbb Z_p`: the DFT along the first axis, power summed over the
    d columns, frequencies k and p - k combined. Returns the shares of frequencies 1 .. p // 2
    (the constant, k = 0, is left out), which sum to 1."""
    e = check.array("table", table, ndim=2, min_rows=3)
    p = e.shape[0]
    power = (np.abs(np.fft.fft(e, axis=0)) ** 2).sum(1)
    half = p // 2
    shares = power[1 : half + 1] + power[p - half :][::-1]
    if p % 2 == 0:  # the Nyquist frequency p / 2 is its own mirror
        shares[-1] = power[half]
    if shares.sum() <= 1e-20 * power.sum():  # round-off of a constant table
        raise ValueError("table is constant along its first axis: it has no Fourier spectrum")
    return shares / shares.sum()


def sum_frequency_power(logits: Tensor | np.ndarray) -> tuple[np.ndarray, float]:
    r"""How much of a model of :math:`(a + b) \bmod p` is a function of :math:`a + b`, and at
    which frequencies. ``logits``: shape (p, p, p) indexed [a, b, c], or (p*p, p) in
    :func:`~hamlib.tasks.modular_addition`'s row order.

    In the 2-D Fourier transform over (a, b), a function of :math:`a + b` lives on the diagonal
    :math:`(k, k)`; its entries there are p times the 1-D transform over s of the class means
    :math:`g(s, c)`, the mean logit over the pairs with :math:`a + b \equiv s`. Returns (the
    diagonal's shares of frequencies 1 .. p // 2, k and -k combined, summing to 1; the fraction
    of all non-constant power, over (a, b) and for every c, that the diagonal holds)."""
    x = _logit_cube(logits)
    g_hat = np.fft.fft(_class_means(x), axis=0)  # (p, p): frequency k of s, output c
    power = (np.abs(g_hat) ** 2).sum(1)
    p = x.shape[0]
    half = p // 2
    shares = power[1 : half + 1] + power[p - half :][::-1]
    if p % 2 == 0:  # the Nyquist frequency p / 2 is its own mirror
        shares[-1] = power[half]
    rest = float((x**2).sum() - power[0])  # Parseval: all the power less the constant's
    if rest <= 1e-12 * max(float((x**2).sum()), 1e-300):
        raise ValueError("logits do not depend on (a, b): there is no spectrum to measure")
    return shares / shares.sum(), float(shares.sum() / rest)


def _logit_cube(logits: Tensor | np.ndarray) -> np.ndarray:
    x = check.array("logits", logits, ndim=None)
    if x.ndim == 2:
        p = x.shape[1]
        if x.shape[0] != p * p:
            raise ValueError(f"logits must have shape (p*p, p) or (p, p, p), got {x.shape}")
        x = x.reshape(p, p, p)
    if x.ndim != 3 or len(set(x.shape)) != 1 or x.shape[0] < 3:
        raise ValueError(f"logits must have shape (p*p, p) or (p, p, p) with p >= 3, got {x.shape}")
    return x


def _sum_index(p: int) -> np.ndarray:
    return (np.arange(p)[:, None] + np.arange(p)[None, :]) % p  # [a, b] -> a + b mod p


def _class_means(x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """g[s, c]: the mean of x[a, b, c] over the pairs with a + b = s (mod p), all p of them or
    only those among ``rows`` (indices into the p*p pairs)."""
    p = x.shape[0]
    s = _sum_index(p).ravel()
    flat = x.reshape(p * p, p)
    if rows is not None:
        s, flat = s[rows], flat[rows]
    g = np.zeros((p, p))
    np.add.at(g, s, flat)
    counts = np.bincount(s, minlength=p)
    if np.any(counts == 0):
        raise ValueError("rows must include at least one pair of every class a + b = s")
    return g / counts[:, None]


def key_frequencies(shares: Sequence[float] | np.ndarray, share: float = 0.95) -> list[int]:
    """The fewest frequencies (1-based, as :func:`fourier_power` and :func:`sum_frequency_power`
    number them) whose shares add up to at least ``share``, largest first."""
    s = check.array("shares", shares, ndim=1, min_rows=1)
    share = check.probability("share", share, open_low=True)
    order = np.argsort(s)[::-1]
    n = int(np.searchsorted(np.cumsum(s[order]), share * s.sum() - 1e-12)) + 1
    return [int(k) + 1 for k in order[: min(n, s.size)]]


def restrict_logits(
    logits: Tensor | np.ndarray,
    freqs: Sequence[int],
    keep: bool = True,
    rows: Sequence[int] | np.ndarray | Tensor | None = None,
) -> np.ndarray:
    r"""Nanda et al.'s two ablations in Fourier space, for logits shaped as
    :func:`sum_frequency_power` takes them; returns (p*p, p) logits in the same row order.

    ``keep=True`` (*restricted* logits): only the constant and the functions of :math:`a + b`
    at frequencies ``freqs`` are kept (every other Fourier component over (a, b) is removed).
    ``keep=False`` (*excluded* logits): exactly those functions of :math:`a + b` are removed.

    The functions of :math:`a + b` are estimated from the class means of the logits over the
    pairs with the same :math:`a + b`: over all pairs (``rows=None``, the exact projection), or
    over ``rows`` only. Estimated from held-out pairs only, the restriction cannot carry
    labels memorized on the training pairs over to the test pairs (a lookup table of the
    training labels is itself partly a function of :math:`a + b`)."""
    x = _logit_cube(logits)
    p = x.shape[0]
    ks = [check.integer("freqs", k, minimum=1, maximum=p // 2) for k in freqs]
    keep = check.boolean("keep", keep)
    if rows is not None:
        idx = check.array("rows", rows, ndim=1, min_rows=1)
        if np.any(idx != np.round(idx)) or idx.min() < 0 or idx.max() >= p * p:
            raise ValueError(f"rows must be indices of pairs, integers in [0, {p * p})")
        rows = idx.astype(np.int64)
    mask = np.zeros(p, dtype=bool)
    for k in ks:
        mask[k] = mask[p - k] = True
    g_hat = np.fft.fft(_class_means(x, rows), axis=0)
    if keep:
        mask[0] = True
    part = np.fft.ifft(g_hat * mask[:, None], axis=0).real[_sum_index(p)]  # (p, p, p)
    return (part if keep else x - part).reshape(p * p, p)


def gini(values: Sequence[float] | np.ndarray) -> float:
    """The Gini coefficient of nonnegative values: 0 when all are equal, (n - 1) / n when one
    holds everything. Nanda et al. use it for how sparse a Fourier spectrum is."""
    v = np.sort(check.array("values", values, ndim=1, min_rows=1))
    if np.any(v < 0) or v.sum() == 0:
        raise ValueError("values must be nonnegative and not all zero")
    n = v.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))


# --- the "critical point" detectors of source 004, reproduced to be tested ---------------------


def cusum_flags(values: Sequence[float] | np.ndarray) -> list[int]:
    r"""Source 004's change detector, as written there: standardize the series, accumulate
    :math:`S_i = S_{i-1} + z_i - \bar z_{<i}` (the running mean of the points before i), and flag
    every interior i where :math:`|S_i - S_{i-1}| > 2\,\mathrm{sd}(|S|)`. Fewer than 10 points:
    no flags (as there). Reproduced so that it can be run on curves with no transition."""
    v = check.array("values", values, ndim=1, min_rows=1)
    n = v.size
    if n < 10:
        return []
    if np.std(v) == 0:
        raise ValueError("values are constant: the detector standardizes by their spread")
    z = (v - v.mean()) / v.std()
    steps = np.array([0.0] + [z[i] - z[:i].mean() for i in range(1, n)])
    s = np.cumsum(steps)
    threshold = 2.0 * np.std(np.abs(s))
    return [i for i in range(1, n - 1) if abs(steps[i]) > threshold]


def inflection_flags(
    x: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray
) -> list[int]:
    r"""Source 004's inflection detector, as written there: first and second derivatives by
    ``np.gradient`` against :math:`\log_{10} x`, and a flag at every interior i where the second
    derivative changes sign between i - 1 and i + 1 and :math:`|v''_i| < 0.1`."""
    xs, v = _samples(3, x=x, values=values)
    if np.any(xs <= 0):
        raise ValueError("x must be positive (its log10 is the axis)")
    lx = np.log10(xs)
    d2 = np.gradient(np.gradient(v, lx), lx)
    return [i for i in range(1, v.size - 1) if d2[i - 1] * d2[i + 1] < 0 and abs(d2[i]) < 0.1]

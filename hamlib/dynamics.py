r"""Estimators for training dynamics: what to log during training, and how to locate and fit
transitions and scaling laws in what was logged.

- :class:`Tracker` records named scalars every ``every`` steps and plots them.
- :func:`effective_rank` of a representation (Roy & Vetterli, 2007).
- :func:`fit_sigmoid_transition`: midpoint and width of a sigmoidal jump.
- :func:`change_points`: optimal piecewise-constant segmentation (least squares, exact by
  dynamic programming).
- :func:`fit_power_law`: :math:`L(N) = E + A N^{-\alpha}` with standard errors.
- :func:`fit_chinchilla`, :func:`chinchilla_loss`, :func:`compute_optimal`: the two-variable law
  :math:`L(N, D) = E + A N^{-\alpha} + B D^{-\beta}` of Hoffmann et al. (2022).
- Tasks to measure on: :func:`train_modular` (grokking), :class:`Teacher` and
  :func:`train_student` (a data-rich task whose lowest reachable loss is known).

The gradient noise scale and the top Hessian eigenvalue live in :mod:`hamlib.measure`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.optimize import curve_fit
from torch import Tensor

__all__ = [
    "CHINCHILLA",
    "ModularMLP",
    "Teacher",
    "Tracker",
    "change_points",
    "chinchilla_loss",
    "compute_optimal",
    "effective_rank",
    "fit_chinchilla",
    "fit_power_law",
    "fit_sigmoid_transition",
    "modular_addition",
    "train_modular",
    "train_student",
]


def _clean(name: str, values: Any, min_len: int) -> np.ndarray:
    arr = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size < min_len:
        raise ValueError(f"{name} needs at least {min_len} points, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


class Tracker:
    """Record scalars every ``every`` steps: ``tracker.log(step, loss=..., grad_norm=...)``.

    ``log`` ignores steps that are not multiples of ``every`` (so it can be called every step);
    ``due(step)`` says whether a step will be recorded, to skip computing expensive estimators.
    """

    def __init__(self, every: int = 1) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def log(self, step: int, **values: float | Tensor) -> None:
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
        ncols = len(names) if ncols is None else ncols
        if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
            raise ValueError(f"ncols must be a positive int, got {ncols!r}")
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
    x = torch.as_tensor(features, dtype=torch.float64)
    if x.dim() != 2 or min(x.shape) < 1:
        raise ValueError(f"features must be a non-empty 2-D (n, d) matrix, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features contains NaN or infinite values")
    s = torch.linalg.svdvals(x)
    if s.sum() == 0:
        raise ValueError("features is all zeros: its effective rank is undefined")
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _sigmoid(t: np.ndarray, low: float, high: float, mid: float, width: float) -> np.ndarray:
    return low + (high - low) / (1.0 + np.exp(-np.clip((t - mid) / width, -60, 60)))


def fit_sigmoid_transition(
    steps: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    log_steps: bool = False,
) -> dict[str, float]:
    r"""Least-squares fit of :math:`v(t) = \mathrm{low} + (\mathrm{high} - \mathrm{low}) /
    (1 + e^{-(t - \mathrm{mid})/w})`.

    Returns ``midpoint``, ``width`` (both in steps; with ``log_steps`` the fit is in
    :math:`\log_{10} t`, and ``midpoint`` is converted back, ``width`` stays in decades),
    ``low``, ``high`` and ``midpoint_se`` (the standard error of the midpoint in the fitted
    coordinate)."""
    t = _clean("steps", steps, 5)
    v = _clean("values", values, 5)
    if t.size != v.size:
        raise ValueError(f"steps and values differ in length: {t.size} and {v.size}")
    if log_steps:
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
        params, cov = curve_fit(_sigmoid, t, v, p0=[low, high, mid0, width0], maxfev=20000)
    except RuntimeError as exc:
        raise ValueError(f"the sigmoid fit did not converge: {exc}") from exc
    low, high, mid, width = (float(p) for p in params)
    se = float(np.sqrt(cov[2, 2])) if np.all(np.isfinite(cov)) else math.nan
    return {
        "midpoint": 10**mid if log_steps else mid,
        "width": abs(width),
        "low": low,
        "high": high,
        "midpoint_se": se,
    }


def change_points(signal: Sequence[float] | np.ndarray | Tensor, n_breaks: int) -> list[int]:
    """Indices where a piecewise-constant fit with ``n_breaks`` breaks changes level, chosen to
    minimize the total squared error (exact, by dynamic programming in O(n_breaks n^2)).

    A break at index i means the segment before it ends at i - 1 and the next starts at i."""
    y = _clean("signal", signal, 2)
    n = y.size
    if not isinstance(n_breaks, int) or not 1 <= n_breaks < n:
        raise ValueError(
            f"n_breaks must be an int in [1, {n - 1}] for {n} points, got {n_breaks!r}"
        )
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


def _power(n: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    return e + a * n ** (-alpha)


def fit_power_law(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, fit_offset: bool = True
) -> dict[str, float]:
    r"""Fit :math:`y = E + A x^{-\alpha}` by least squares on :math:`\log y` (relative errors, the
    usual choice for losses spanning a range). With ``fit_offset=False``, E = 0 and the fit is a
    straight line in log-log coordinates.

    Returns ``E``, ``A``, ``alpha`` and their standard errors ``E_se``, ``A_se``, ``alpha_se``
    (from the fit's covariance: they assume the model is right and the residuals independent)."""
    xs = _clean("x", x, 4 if fit_offset else 3)
    ys = _clean("y", y, 4 if fit_offset else 3)
    if xs.size != ys.size:
        raise ValueError(f"x and y differ in length: {xs.size} and {ys.size}")
    if np.any(xs <= 0) or np.any(ys <= 0):
        raise ValueError("x and y must be positive")
    if not fit_offset:
        slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
        resid = np.log(ys) - (intercept + slope * np.log(xs))
        dof = max(1, xs.size - 2)
        lx = np.log(xs)
        s2 = float(resid @ resid) / dof
        sxx = float(((lx - lx.mean()) ** 2).sum())
        alpha_se = math.sqrt(s2 / sxx)
        a_se = math.exp(intercept) * math.sqrt(s2 * (1 / xs.size + lx.mean() ** 2 / sxx))
        return {
            "E": 0.0,
            "A": math.exp(intercept),
            "alpha": -slope,
            "E_se": 0.0,
            "A_se": a_se,
            "alpha_se": alpha_se,
        }

    def log_model(n: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
        return np.log(np.maximum(_power(n, e, a, alpha), 1e-300))

    e0 = 0.9 * float(ys.min())
    slope, intercept = np.polyfit(np.log(xs), np.log(np.maximum(ys - e0, 1e-12)), 1)
    p0 = [e0, math.exp(intercept), max(-slope, 1e-3)]
    try:
        params, cov = curve_fit(
            log_model,
            xs,
            np.log(ys),
            p0=p0,
            bounds=([0.0, 0.0, 0.0], [float(ys.min()), np.inf, 10.0]),
            maxfev=50000,
        )
    except RuntimeError as exc:
        raise ValueError(f"the power-law fit did not converge: {exc}") from exc
    se = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else np.full(3, math.nan)
    return {
        "E": float(params[0]),
        "A": float(params[1]),
        "alpha": float(params[2]),
        "E_se": float(se[0]),
        "A_se": float(se[1]),
        "alpha_se": float(se[2]),
    }


def modular_addition(p: int = 97) -> tuple[Tensor, Tensor]:
    """All p^2 pairs (a, b) as a (p^2, 2) int64 tensor, and their labels (a + b) mod p."""
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"p must be an int >= 2, got {p!r}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], dim=1)
    return x, (x[:, 0] + x[:, 1]) % p


class ModularMLP(torch.nn.Module):
    """Embed both operands (one shared table of p vectors of size ``d``), concatenate, one hidden
    ReLU layer of width ``hidden``, logits over the p residues."""

    def __init__(self, p: int = 97, d: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(p, d)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, p)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.embed(x).flatten(1))

    def weight_norm(self) -> float:
        return float(torch.cat([q.detach().flatten() for q in self.parameters()]).norm())


def train_modular(
    p: int = 97,
    train_frac: float = 0.4,
    weight_decay: float = 1.0,
    steps: int = 3000,
    lr: float = 3e-3,
    d: int = 32,
    hidden: int = 128,
    seed: int = 0,
    every: int = 100,
    stop_at: float | None = None,
    progress: Any = None,
) -> Tracker:
    """Full-batch AdamW (betas 0.9, 0.98) on a random ``train_frac`` of the pairs of
    :func:`modular_addition`. Logs every ``every`` steps: train_loss, train_acc, test_acc,
    weight_norm and the effective rank of the embedding table. ``stop_at``: stop once test
    accuracy reaches it (for sweeps)."""
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    x, y = modular_addition(p)
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_frac * p * p))
    train, test = perm[:n_train], perm[n_train:]
    torch.manual_seed(seed)
    model = ModularMLP(p, d, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    tracker = Tracker(every)
    loop = range(steps + 1) if progress is None else progress(range(steps + 1))
    for step in loop:
        logits = model(x[train])
        loss = torch.nn.functional.cross_entropy(logits, y[train])
        if tracker.due(step):
            with torch.no_grad():
                test_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
                tracker.log(
                    step,
                    train_loss=loss.item(),
                    train_acc=(logits.argmax(1) == y[train]).float().mean().item(),
                    test_acc=test_acc,
                    weight_norm=model.weight_norm(),
                    embed_rank=effective_rank(model.embed.weight.detach()),
                )
            if stop_at is not None and test_acc >= stop_at:
                break
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tracker


class Teacher:
    r"""A fixed random two-layer tanh network that labels inputs :math:`x \sim N(0, I_{d})` by
    sampling :math:`y \sim \mathrm{softmax}(f(x) / T)`. A student trained on fresh samples never
    sees the same example twice (no overfitting), and the loss it can reach is known exactly: the
    mean conditional entropy :math:`E = \mathbb E_x H(y \mid x)` (:meth:`entropy`)."""

    def __init__(
        self,
        d_in: int = 16,
        n_classes: int = 10,
        width: int = 64,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        for name, value in (("d_in", d_in), ("n_classes", n_classes), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        g = torch.Generator().manual_seed(seed)
        self.d_in, self.n_classes, self.temperature = d_in, n_classes, float(temperature)
        self.w1 = torch.randn(d_in, width, generator=g) * (2.0 / d_in) ** 0.5
        self.w2 = torch.randn(width, n_classes, generator=g) * (4.0 / width) ** 0.5

    def logits(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"x must be a (n, {self.d_in}) tensor")
        return torch.tanh(x @ self.w1) @ self.w2 / self.temperature

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` fresh inputs and their sampled labels."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        x = torch.randn(n, self.d_in, generator=generator)
        y = torch.multinomial(torch.softmax(self.logits(x), 1), 1, generator=generator)
        return x, y.squeeze(1)

    def entropy(self, x: Tensor) -> float:
        """Mean over ``x`` of the entropy of the label distribution (nats): the lowest possible
        expected cross-entropy of any student."""
        logp = torch.log_softmax(self.logits(x), 1)
        return float(-(logp.exp() * logp).sum(1).mean())


def train_student(
    teacher: Teacher,
    width: int,
    steps: int = 1500,
    batch: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    callback: Callable[[int, torch.nn.Module, Tensor], None] | None = None,
) -> torch.nn.Module:
    """A two-layer tanh MLP of hidden ``width`` trained with Adam on ``steps`` fresh batches from
    ``teacher`` (cross-entropy on the sampled labels). Returns the trained student.

    ``callback(step, student, loss)``, if given, runs at every step after the backward pass and
    before the update (gradients in ``.grad``): the place to log estimators."""
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a Teacher, got {type(teacher).__name__}")
    for name, value in (("width", width), ("steps", steps), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    torch.manual_seed(seed)
    student = torch.nn.Sequential(
        torch.nn.Linear(teacher.d_in, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, teacher.n_classes),
    )
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(10_000 + seed)
    for step in range(steps):
        x, y = teacher.sample(batch, g)
        loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if callback is not None:
            callback(step, student, loss.detach())
        opt.step()
    return student


CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. (2022), Approach 3, as printed in the paper: L(N, D) = E + A/N^alpha + B/D^beta
with N parameters and D training tokens, loss in nats per token."""


def _params(params: dict[str, float]) -> tuple[float, float, float, float, float]:
    missing = {"E", "A", "B", "alpha", "beta"} - set(params)
    if missing:
        raise ValueError(f"params is missing {sorted(missing)}")
    return (params["E"], params["A"], params["B"], params["alpha"], params["beta"])


def chinchilla_loss(n: Any, d: Any, params: dict[str, float] = CHINCHILLA) -> np.ndarray:
    r""":math:`L(N, D) = E + A N^{-\alpha} + B D^{-\beta}` (Hoffmann et al., 2022, eq. 2)."""
    e, a, b, alpha, beta = _params(params)
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    if np.any(n <= 0) or np.any(d <= 0):
        raise ValueError("n and d must be positive")
    return e + a * n**-alpha + b * d**-beta


def compute_optimal(flops: float, params: dict[str, float] = CHINCHILLA) -> tuple[float, float]:
    r"""The (N, D) minimizing :math:`L(N, D)` at a compute budget :math:`C = 6ND` FLOPs:
    :math:`N_{opt} = G (C/6)^{\beta/(\alpha+\beta)}`, :math:`D_{opt} = G^{-1}
    (C/6)^{\alpha/(\alpha+\beta)}` with :math:`G = (\alpha A / \beta B)^{1/(\alpha+\beta)}`
    (Hoffmann et al., 2022, eq. 4)."""
    _, a, b, alpha, beta = _params(params)
    if not flops > 0:
        raise ValueError(f"flops must be positive, got {flops!r}")
    g = (alpha * a / (beta * b)) ** (1 / (alpha + beta))
    n = g * (flops / 6) ** (beta / (alpha + beta))
    return float(n), float(flops / 6 / n)


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    return value, np.where(small, r, delta * np.sign(r))


def fit_chinchilla(
    n: Any,
    d: Any,
    loss: Any,
    delta: float = 1e-3,
    n_starts: int = 8,
    maxiter: int = 1000,
    gtol: float = 1e-10,
) -> dict[str, float]:
    r"""Fit :math:`L = E + A N^{-\alpha} + B D^{-\beta}` the way Hoffmann et al. (2022) describe:
    minimize :math:`\sum_i \mathrm{Huber}_\delta\big(\mathrm{LSE}(a - \alpha \log N_i,\ b - \beta
    \log D_i,\ e) - \log L_i\big)` over :math:`(a, b, e, \alpha, \beta)` with L-BFGS, where
    :math:`A = e^a, B = e^b, E = e^e`. Starts from the ``n_starts`` best points of their grid
    (:math:`\alpha, \beta \in \{0, 0.5, \dots, 2\}`, :math:`e \in \{-1, -0.5, \dots, 1\}`,
    :math:`a, b \in \{0, 5, \dots, 25\}`). ``maxiter`` and ``gtol`` are L-BFGS's stopping rules:
    loosen them to see what an optimizer that stops early reports (Besiroglu et al., 2024).

    Returns E, A, B, alpha, beta, the objective ``huber`` and ``converged``."""
    from scipy.optimize import minimize

    arrays = [_clean(name, v, 5) for name, v in (("n", n), ("d", d), ("loss", loss))]
    if any(np.any(a <= 0) for a in arrays):
        raise ValueError("n, d and loss must be positive")
    ln, ld, ll = (np.log(a) for a in arrays)
    if not ln.size == ld.size == ll.size:
        raise ValueError(f"n, d and loss differ in length: {ln.size}, {ld.size}, {ll.size}")
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    if isinstance(n_starts, bool) or not isinstance(n_starts, int) or n_starts < 1:
        raise ValueError(f"n_starts must be a positive int, got {n_starts!r}")

    def terms(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals LSE(...) - log L and the softmax weights of the three terms; theta of shape
        (5,) or (5, k, 1) for k parameter vectors at once."""
        a, b, e, alpha, beta = theta
        z = np.stack(np.broadcast_arrays(a - alpha * ln, b - beta * ld, e + 0 * ln))
        zmax = z.max(0)
        w = np.exp(z - zmax)
        return zmax + np.log(w.sum(0)) - ll, w / w.sum(0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        r, soft = terms(theta)
        value, dr = _huber(r, delta)
        grad = np.array(
            [
                dr @ soft[0],
                dr @ soft[1],
                dr @ soft[2],
                -(dr * soft[0]) @ ln,
                -(dr * soft[1]) @ ld,
            ]
        )
        return float(value.sum()), grad

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
    scores = _huber(terms(grid[:, :, None])[0], delta)[0].sum(1)  # all grid points at once
    best: Any = None
    for i in np.argsort(scores)[:n_starts]:
        res = minimize(
            objective,
            grid[:, i],
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": maxiter, "gtol": gtol, "ftol": 0.0},
        )
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = (float(v) for v in best.x)
    return {
        "E": math.exp(e),
        "A": math.exp(a),
        "B": math.exp(b),
        "alpha": alpha,
        "beta": beta,
        "huber": float(best.fun),
        "converged": bool(best.success),
    }

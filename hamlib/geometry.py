"""High-dimensional geometry: volumes, concentration of measure, random projections and the
intrinsic dimension of data (Chapter 1).

Every function validates its arguments (:mod:`hamlib._checks`): a ``TypeError`` for a wrong type, a
``ValueError`` for a wrong value, both naming the argument, rather than returning garbage for a
negative dimension or an empty data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq, linprog
from scipy.spatial import KDTree
from scipy.special import betainc, betaincinv
from scipy.stats import chi2

from hamlib import _checks as check

__all__ = [
    "CosineStats",
    "ball_volume",
    "cosine_max_quantile",
    "cover_separable_fraction",
    "cosine_similarity_stats",
    "cosine_tail_probability",
    "gaussian_norm_moments",
    "jl_distortion",
    "jl_epsilon",
    "jl_max_distortion_quantile",
    "jl_min_dimension",
    "jl_pair_tail",
    "linearly_separable",
    "log_ball_volume",
    "mle_dimension",
    "relative_contrast",
    "shell_fraction",
    "twonn_dimension",
    "twonn_points",
]


# ----------------------------------------------------------------------------- volumes
def log_ball_volume(d: int, r: float = 1.0) -> float:
    r"""Natural log of the volume of the d-dimensional ball of radius r.

    .. math:: \log V_d(r) = \tfrac{d}{2}\log\pi + d\log r - \log\Gamma(\tfrac{d}{2} + 1)

    Computed in log space with ``lgamma``, so it is accurate for any d (the direct formula
    overflows ``math.gamma`` beyond d = 341).
    """
    d, r = check.integer("d", d, minimum=0), check.positive("r", r)
    return 0.5 * d * math.log(math.pi) + d * math.log(r) - math.lgamma(0.5 * d + 1.0)


def ball_volume(d: int, r: float = 1.0) -> float:
    r"""Volume of the d-ball of radius r, :math:`V_d(r) = \pi^{d/2} r^d / \Gamma(d/2+1)`.

    Exact to float64 rounding for every d: evaluated as ``exp(log_ball_volume(d, r))``. For the unit
    ball the volume peaks at d = 5 (5.264) and then falls super-exponentially: V_1000 is about
    1e-886, below the smallest float64, so it returns 0.0 (use :func:`log_ball_volume` there).
    """
    return math.exp(log_ball_volume(d, r))


def shell_fraction(d: int, eps: float) -> float:
    r"""Share of the unit d-ball within ``eps`` of its surface, :math:`1-(1-\epsilon)^d`.

    Evaluated as ``-expm1(d * log1p(-eps))`` so that tiny eps and huge d keep full precision.
    """
    d, eps = check.integer("d", d, minimum=0), check.probability("eps", eps)
    if eps == 1.0:
        return 1.0 if d > 0 else 0.0
    return -math.expm1(d * math.log1p(-eps))


# ----------------------------------------------------------------------------- concentration
def gaussian_norm_moments(d: int) -> tuple[float, float]:
    r"""Exact mean and standard deviation of :math:`\|x\|` for :math:`x \sim N(0, I_d)`.

    :math:`\|x\|` has the chi distribution with d degrees of freedom:
    :math:`E\|x\| = \sqrt{2}\,\Gamma(\tfrac{d+1}{2})/\Gamma(\tfrac{d}{2})` and
    :math:`\mathrm{Var}\|x\| = d - (E\|x\|)^2`. As d grows the mean is
    :math:`\sqrt{d - 1/2} + O(d^{-3/2})`
    and the standard deviation tends to :math:`1/\sqrt{2}`.
    """
    d = check.integer("d", d, minimum=1)
    mean = math.sqrt(2.0) * math.exp(math.lgamma(0.5 * (d + 1)) - math.lgamma(0.5 * d))
    # d - mean^2 loses about log10(d) of float64's 16 digits to cancellation: still ~1e-10 at d=1e6.
    var = d - mean * mean
    return mean, math.sqrt(max(var, 0.0))


def cosine_tail_probability(d: int, t: float) -> float:
    r"""Exact :math:`P(|\cos\theta| \ge t)` for two independent isotropic random vectors in R^d.

    For x uniform on the sphere,
    :math:`(1 + \cos\theta)/2 \sim \mathrm{Beta}(\tfrac{d-1}{2}, \tfrac{d-1}{2})`, hence
    :math:`P(|\cos\theta| \ge t) = I_{1-t^2}(\tfrac{d-1}{2}, \tfrac12)`, the regularized incomplete
    beta function.
    """
    d, t = check.integer("d", d, minimum=2), check.probability("t", t)
    if t == 0.0:
        return 1.0
    return float(betainc(0.5 * (d - 1), 0.5, 1.0 - t * t))


def _tail_for_max(n_pairs: int, q: float) -> float:
    """The per-pair tail p with (1 - p)^n_pairs = q, computed without cancellation."""
    return -math.expm1(math.log(q) / n_pairs)


def cosine_max_quantile(d: int, n_pairs: int, q: float = 0.5) -> float:
    r"""The q-quantile of :math:`\max |\cos\theta|` over ``n_pairs`` independent pairs in R^d.

    Solves :math:`(1 - P(|\cos\theta| \ge t))^{N} = q` for t with the exact Beta tail of
    :func:`cosine_tail_probability`, inverted in closed form:
    :math:`t = \sqrt{1 - I^{-1}_{p}(\tfrac{d-1}{2}, \tfrac12)}` with :math:`p = 1 - q^{1/N}`.
    For the pairs of a set of vectors (which share vectors, so are not quite independent) it is the
    prediction that treats them as independent. ``q = 0.5`` gives the median of the maximum.
    """
    d = check.integer("d", d, minimum=2)
    n_pairs = check.integer("n_pairs", n_pairs, minimum=1)
    q = check.probability("q", q, open_low=True, open_high=True)
    p = _tail_for_max(n_pairs, q)
    return float(math.sqrt(max(1.0 - betaincinv(0.5 * (d - 1), 0.5, p), 0.0)))


@dataclass(frozen=True)
class CosineStats:
    """What :func:`cosine_similarity_stats` measured over its random pairs."""

    mean: float  # of the cosine (theory: 0)
    std: float  # of the cosine (theory: exactly 1/sqrt(d))
    max_abs: float  # the largest |cosine| among the pairs


def cosine_similarity_stats(
    d: int, n_pairs: int, generator: torch.Generator | None = None, *, chunk: int = 2**22
) -> CosineStats:
    r"""Mean and standard deviation of the cosine, and max :math:`|\cos|`, over random pairs.

    Each pair is two independent :math:`N(0, I_d)` vectors. Theory: mean 0, standard deviation
    exactly :math:`1/\sqrt{d}` (since :math:`E[\cos^2\theta] = 1/d` on the sphere). Pairs are
    drawn in chunks of at most ``chunk`` numbers, so memory stays bounded for d = 10^4 and beyond.
    Vectors are drawn in float32 (three times faster than float64 here; its 1e-7 relative error is
    far below the 1/sqrt(d) being measured) and the statistics are accumulated in float64.
    Returns a :class:`CosineStats` with fields ``mean``, ``std`` and ``max_abs``.
    """
    d, n_pairs = check.integer("d", d, minimum=1), check.integer("n_pairs", n_pairs, minimum=2)
    chunk, gen = check.integer("chunk", chunk, minimum=1), check.generator("generator", generator)
    per_chunk = max(1, chunk // (2 * d))
    cos_all = []
    done = 0
    while done < n_pairs:
        m = min(per_chunk, n_pairs - done)
        x = torch.randn(m, d, generator=gen)
        y = torch.randn(m, d, generator=gen)
        cos = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-30)
        cos_all.append(cos.to(torch.float64))
        done += m
    cos = torch.cat(cos_all)
    return CosineStats(mean=float(cos.mean()), std=float(cos.std()), max_abs=float(cos.abs().max()))


def relative_contrast(X: Any, query: Any) -> float:
    r"""Relative contrast :math:`(D_{\max} - D_{\min}) / D_{\min}` of the Euclidean distances from
    ``query`` to the rows of ``X`` (Beyer et al., 1999; Aggarwal et al., 2001).

    When it tends to 0, the nearest and the farthest neighbour are almost equally far away.
    """
    pts, q = check.array("X", X, ndim=2, min_rows=2), check.array("query", query, ndim=1)
    if q.shape != (pts.shape[1],):
        raise ValueError(f"query must have shape ({pts.shape[1]},) to match X, got {q.shape}")
    dist = np.linalg.norm(pts - q, axis=1)
    dmin = dist.min()
    if dmin == 0.0:
        raise ValueError("query coincides with a row of X (zero distance): contrast is undefined")
    return float((dist.max() - dmin) / dmin)


# ----------------------------------------------------------------------------- projections
def jl_min_dimension(n_points: int, eps: float) -> int:
    r"""Smallest k that the Johnson–Lindenstrauss lemma guarantees for ``n_points`` points.

    The bound of Dasgupta & Gupta (2003), "An elementary proof of a theorem of Johnson and
    Lindenstrauss": a Gaussian random projection to

    .. math:: k \ge \frac{4 \ln n}{\epsilon^2/2 - \epsilon^3/3}

    dimensions keeps any one squared pairwise distance within a factor :math:`1 \pm \epsilon`
    except with probability at most :math:`2/n^2`, so all :math:`\binom n2` of them at once with
    probability at least 1/n (Dasgupta & Gupta's statement; repeating the projection boosts it).
    It does not depend on the original dimension.
    """
    n_points = check.integer("n_points", n_points, minimum=1)
    eps = check.probability("eps", eps, open_low=True, open_high=True)
    return int(math.ceil(4.0 * math.log(n_points) / (eps**2 / 2.0 - eps**3 / 3.0)))


def jl_epsilon(n_points: int, k: int) -> float:
    r"""The distortion :math:`\epsilon` that :func:`jl_min_dimension` promises at dimension ``k``.

    Inverts :math:`k = 4 \ln n / (\epsilon^2/2 - \epsilon^3/3)` for :math:`\epsilon \in (0, 1)`.
    The left side's denominator is at most 1/6 (at :math:`\epsilon = 1`), so the bound promises
    some :math:`\epsilon < 1` only for :math:`k > 24 \ln n`; a smaller ``k`` is a ValueError.
    As for :func:`jl_min_dimension`, the promise holds with probability at least 1/n per draw.
    """
    n_points = check.integer("n_points", n_points, minimum=2)
    k = check.integer("k", k, minimum=1)
    c = 4.0 * math.log(n_points) / k
    if c >= 1.0 / 6.0:
        raise ValueError(
            f"k must be > 24 ln(n_points) = {24 * math.log(n_points):.1f} for n_points = "
            f"{n_points}, got {k}: below it the bound promises no eps < 1"
        )
    return float(brentq(lambda e: e * e / 2.0 - e**3 / 3.0 - c, 0.0, 1.0, xtol=1e-15, rtol=1e-15))


def jl_pair_tail(k: int, eps: float) -> float:
    r"""Exact probability that a Gaussian projection distorts one squared distance by more than eps.

    With :math:`P = G/\sqrt k`, :math:`G_{ij} \sim N(0, 1)`, the ratio
    :math:`\|Pv\|^2/\|v\|^2` is :math:`\chi^2_k/k` for every fixed :math:`v \ne 0`, so

    .. math:: P(|\chi^2_k/k - 1| > \epsilon) = F_{\chi^2_k}(k(1-\epsilon)) + 1 -
              F_{\chi^2_k}(k(1+\epsilon)).

    Dasgupta & Gupta bound it by :math:`2e^{-k(\epsilon^2/2-\epsilon^3/3)/2}`.
    """
    k = check.integer("k", k, minimum=1)
    eps = check.real("eps", eps, low=0.0, open_low=True)
    lower = float(chi2.cdf(k * (1.0 - eps), k)) if eps < 1.0 else 0.0
    return lower + float(chi2.sf(k * (1.0 + eps), k))


def jl_max_distortion_quantile(k: int, n_pairs: int, q: float = 0.5) -> float:
    r"""The q-quantile of the worst of ``n_pairs`` independent distortions :math:`|\chi^2_k/k - 1|`.

    Solves :math:`(1 - \texttt{jl\_pair\_tail}(k, \epsilon))^{N} = q` for :math:`\epsilon`.
    The pairs of a point set share points, so their distortions are not independent; this is the
    prediction that treats them as if they were. To leading order (a Gaussian tail of variance
    2/k, :math:`N \approx n^2/2`) the median is :math:`\sqrt{8\ln n/k}`, the same
    :math:`k = 8 \ln n/\epsilon^2` as the Johnson–Lindenstrauss bound.
    """
    k = check.integer("k", k, minimum=1)
    n_pairs = check.integer("n_pairs", n_pairs, minimum=1)
    q = check.probability("q", q, open_low=True, open_high=True)
    p = _tail_for_max(n_pairs, q)
    hi = 1.0
    while jl_pair_tail(k, hi) > p:
        hi *= 2.0
    return float(brentq(lambda e: jl_pair_tail(k, e) - p, 1e-12, hi, xtol=1e-12, rtol=1e-12))


def jl_distortion(X: Any, k: int, generator: torch.Generator | None = None) -> float:
    r"""Worst relative distortion of squared pairwise distances under a Gaussian projection.

    Projects with :math:`P = G/\sqrt{k}`, :math:`G_{ij} \sim N(0, 1)`, and returns
    :math:`\max_{i<j} \left| \|Px_i - Px_j\|^2 / \|x_i - x_j\|^2 - 1 \right|`.
    """
    pts = check.array("X", X, ndim=2, min_rows=2)
    k = check.integer("k", k, minimum=1)
    gen = check.generator("generator", generator)
    G = torch.randn(pts.shape[1], k, generator=gen, dtype=torch.float64).numpy() / math.sqrt(k)
    Y = pts @ G
    iu = np.triu_indices(pts.shape[0], k=1)
    d_orig = _squared_distances(pts)[iu]
    if np.any(d_orig == 0.0):
        raise ValueError("X contains duplicate rows: a zero distance cannot be distorted")
    d_proj = _squared_distances(Y)[iu]
    return float(np.max(np.abs(d_proj / d_orig - 1.0)))


def _squared_distances(A: np.ndarray) -> np.ndarray:
    diff_sq = np.sum(A * A, axis=1)
    D = diff_sq[:, None] + diff_sq[None, :] - 2.0 * (A @ A.T)
    return np.maximum(D, 0.0)


# ----------------------------------------------------------------------------- separability
def cover_separable_fraction(n_points: int, d: int) -> float:
    r"""Share of the :math:`2^N` labellings of N points that a hyperplane through 0 separates.

    Cover's function-counting theorem (Cover, IEEE Trans. Electron. Comput. 14, 1965): for N
    points in general position in :math:`\mathbb R^d`, exactly

    .. math:: C(N, d) = 2 \sum_{k=0}^{d-1} \binom{N-1}{k}

    of the :math:`2^N` dichotomies are linearly separable by a hyperplane through the origin. The
    share is 1 for :math:`N \le d`, exactly 1/2 at :math:`N = 2d`, and falls from 1 to 0 ever
    more sharply around :math:`N = 2d` as d grows. (With a bias term, use d + 1.)
    """
    n_points = check.integer("n_points", n_points, minimum=1)
    d = check.integer("d", d, minimum=1)
    count = 2 * sum(math.comb(n_points - 1, k) for k in range(min(d, n_points)))
    return count / 2**n_points


def linearly_separable(X: Any, y: Any) -> bool:
    r"""Whether a hyperplane through the origin separates the labels: is there a w with
    :math:`y_i\, w \cdot x_i > 0` for every i?

    Decided exactly by linear programming (scipy's HiGHS): by rescaling w, strict separation is
    the feasibility of :math:`y_i\, w \cdot x_i \ge 1`. Labels are +1 and -1. Append a column of
    ones to X for an affine hyperplane.
    """
    pts = check.array("X", X, ndim=2, min_rows=1)
    labels = check.array("y", y, ndim=1)
    if labels.shape != (pts.shape[0],):
        raise ValueError(f"y must have shape ({pts.shape[0]},) to match X, got {labels.shape}")
    if not np.all(np.abs(labels) == 1.0):
        raise ValueError("y must contain only the labels +1 and -1")
    res = linprog(
        np.zeros(pts.shape[1]),
        A_ub=-labels[:, None] * pts,
        b_ub=-np.ones(pts.shape[0]),
        bounds=(None, None),
        method="highs",
    )
    if res.status not in (0, 2):  # 0: a separating w found; 2: provably none exists
        raise RuntimeError(f"the linear program did not finish: {res.message}")
    return bool(res.status == 0)


# ----------------------------------------------------------------------------- intrinsic dimension
def _neighbour_distances(pts: np.ndarray, k: int, boxsize: float | None = None) -> np.ndarray:
    """Distances from every point to its k nearest other points, shape (n, k), exact (k-d tree).

    With ``boxsize`` the points live on the flat torus [0, boxsize)^D: distances wrap around."""
    if boxsize is not None:
        boxsize = check.positive("boxsize", boxsize)
        if pts.min() < 0.0 or pts.max() >= boxsize:
            raise ValueError(
                f"X must lie in [0, boxsize) = [0, {boxsize:g}) when boxsize is given, "
                f"got values in [{pts.min():g}, {pts.max():g}]"
            )
    dist, _ = KDTree(pts, boxsize=boxsize).query(pts, k=k + 1, workers=1)
    dist = dist[:, 1:]
    if np.any(dist[:, 0] == 0.0):
        raise ValueError(
            "X contains duplicate rows (a zero nearest-neighbour distance); "
            "remove them first, e.g. X = np.unique(X, axis=0)"
        )
    return dist


def twonn_dimension(
    X: Any, discard_fraction: float = 0.1, *, boxsize: float | None = None
) -> float:
    r"""Intrinsic dimension by TwoNN (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 7, 12140, 2017).

    For each point, :math:`\mu = r_2/r_1` is the ratio of its second to first nearest-neighbour
    distance. If the density is locally uniform on a d-dimensional manifold, :math:`\mu` is Pareto
    distributed, :math:`F(\mu) = 1 - \mu^{-d}`, so :math:`-\log(1 - F(\mu)) = d \log \mu`. As in the
    paper, d is the slope of a least-squares line through the origin fitted to the points
    :math:`(\log\mu_i, -\log(1 - F_{\rm emp}(\mu_i)))`, after discarding the largest
    ``discard_fraction`` of the :math:`\mu_i` (the noisy tail). With ``boxsize`` the rows of X
    are points of the flat torus :math:`[0, \text{boxsize})^D` (uniform data with no boundary).
    """
    x, y = twonn_points(X, discard_fraction, boxsize=boxsize)
    return float(np.dot(x, y) / np.dot(x, x))


def twonn_points(
    X: Any, discard_fraction: float = 0.1, *, boxsize: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    r"""The points :math:`(\log\mu_i, -\log(1 - F_{\rm emp}(\mu_i)))` that
    :func:`twonn_dimension` fits a line through the origin to, sorted by :math:`\mu`, with the
    largest ``discard_fraction`` removed. Arguments as in :func:`twonn_dimension`."""
    pts = check.array("X", X, ndim=2, min_rows=3)
    discard_fraction = check.real("discard_fraction", discard_fraction, low=0.0, high=0.9)
    dist = _neighbour_distances(pts, 2, boxsize)
    mu = np.sort(dist[:, 1] / dist[:, 0])
    n = mu.size
    F = np.arange(1, n + 1) / n
    keep = int(math.floor(n * (1.0 - discard_fraction)))
    keep = min(keep, n - 1)  # F = 1 at the last point: log(0) is excluded
    if keep < 2:
        raise ValueError(f"X has too few points ({n}) for discard_fraction={discard_fraction}")
    return np.log(mu[:keep]), -np.log1p(-F[:keep])


def mle_dimension(
    X: Any, k: int = 10, *, average: str = "estimates", boxsize: float | None = None
) -> float:
    r"""Intrinsic dimension by maximum likelihood (Levina & Bickel, NeurIPS 2004).

    With :math:`T_j(x)` the distance from x to its j-th nearest neighbour, the local estimate is

    .. math:: \hat m_k(x) = \Big[\frac{1}{k-1}\sum_{j=1}^{k-1} \log\frac{T_k(x)}{T_j(x)}\Big]^{-1}.

    ``average="estimates"`` returns the mean of :math:`\hat m_k(x)` over the data, as in the paper.
    If the density is uniform around x, :math:`m \sum_j \log(T_k/T_j)` is a Gamma(k-1, 1)
    variable, so :math:`E\,\hat m_k = m\,(k-1)/(k-2)`: this average is biased up by that factor
    (9/8 at k = 10) even on ideal data. ``average="inverses"`` (MacKay & Ghahramani's comment,
    2005) averages :math:`1/\hat m_k(x)`, which is unbiased for 1/m, and inverts the mean.
    ``boxsize``: as in :func:`twonn_dimension`.
    """
    pts = check.array("X", X, ndim=2, min_rows=3)
    k = check.integer("k", k, minimum=2)
    average = check.one_of("average", average, ("estimates", "inverses"))
    if k >= pts.shape[0]:
        raise ValueError(f"k must be smaller than the number of points ({pts.shape[0]}), got {k}")
    T = _neighbour_distances(pts, k, boxsize)
    logs = np.log(T[:, -1:] / T[:, :-1])  # log(T_k / T_j), j = 1..k-1
    inv = logs.sum(axis=1) / (k - 1)
    if np.any(inv == 0.0):
        raise ValueError("X has points whose k nearest neighbours are equidistant; increase k")
    if average == "inverses":
        return float(1.0 / np.mean(inv))
    return float(np.mean(1.0 / inv))

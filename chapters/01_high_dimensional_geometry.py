# %% [markdown]
# # 1. High-dimensional geometry
#
# Deep networks live in spaces of hundreds to thousands of dimensions, and those spaces do not
# behave like the plane on your desk. This chapter measures how they behave instead: where the
# volume of a ball goes, why random vectors are almost orthogonal, why distances stop telling
# points apart, why random projections work anyway, how extra dimensions make labels linearly
# separable, and why real data escapes the curse by being low-dimensional after all.
#
# **You will be able to** compute volumes and concentration bounds exactly (in log space, for any
# dimension); predict the cosine between random vectors and the spread of a Gaussian's norm;
# choose a random-projection dimension from the Johnson–Lindenstrauss lemma, and say how often one
# projection meets it; count the labellings a hyperplane can separate (Cover's theorem); and
# estimate the intrinsic dimension of a data set with two estimators, with error bars.
#
# **Run time:** under a minute on two CPU cores (the cell after the summary prints the measured
# time). Every number below is printed by the code above it, and every claim is checked by
# `hamlib.check`, which stops the chapter if the claim is false.

# %%
import hamlib

hamlib.setup()

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import optimize, stats
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist
from sklearn.datasets import load_digits, make_swiss_roll

from hamlib import geometry
from hamlib.plotting import COLORS, CYCLE

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1.1 The ball vanishes inside the cube
#
# The volume of the ball of radius $r$ in $\mathbb{R}^d$ is
#
# $$
# V_d(r) = \frac{\pi^{d/2}}{\Gamma\!\left(\frac d2 + 1\right)}\, r^d .
# $$
#
# One way to see it: the Gaussian integral $\int_{\mathbb{R}^d} e^{-\|x\|^2}\,dx = \pi^{d/2}$ can
# also be computed in spherical shells, $\int_0^\infty e^{-r^2} S_{d-1} r^{d-1}\,dr =
# S_{d-1}\,\Gamma(d/2)/2$, where $S_{d-1}$ is the area of the unit sphere. Equating the two gives
# $S_{d-1} = 2\pi^{d/2}/\Gamma(d/2)$, and integrating the area, $V_d = S_{d-1}/d$.
#
# Evaluated naively the formula fails early: $\Gamma(d/2+1)$ overflows a float64 beyond
# $d = 341$. `hamlib.geometry` therefore works with the logarithm:

# %%
hamlib.show_source(geometry.log_ball_volume)

# %% [markdown]
# The unit ball sits inside the cube $[-1, 1]^d$, whose volume is $2^d$. The table compares the
# ball's share of the cube with a Monte Carlo estimate: the fraction of 200,000 uniform points of
# the cube that fall inside the ball.

# %%
n_mc = 200_000
print(f"{'d':>4} {'V_d':>10} {'V_d / 2^d':>11} {'Monte Carlo':>12}")
shares, mc_shares = {}, {}
for d in [1, 2, 3, 5, 8, 10, 20, 50, 100]:
    share = math.exp(geometry.log_ball_volume(d) - d * math.log(2))
    shares[d] = share
    mc = ""
    if d <= 10:
        x = rng.uniform(-1, 1, size=(n_mc, d))
        mc_shares[d] = np.mean(np.einsum("ij,ij->i", x, x) <= 1.0)
        mc = f"{mc_shares[d]:.4f}"
    print(f"{d:4d} {geometry.ball_volume(d):10.4g} {share:11.3g} {mc:>12}")

# %%
volumes = [geometry.ball_volume(d) for d in range(0, 60)]
# a property of the formula, not a measurement: printed, and explained below
print(f"largest volume for d = 0 ... 59 at d = {int(np.argmax(volumes))}")
# the Monte Carlo share is a binomial proportion: its standard error is sqrt(p(1-p)/n)
z_mc = max(
    abs(mc_shares[d] - shares[d]) / math.sqrt(shares[d] * (1 - shares[d]) / n_mc)
    for d in mc_shares
    if d > 1  # in d = 1 the "ball" is the whole cube: share 1, no error to standardize
)
hamlib.check(
    "Monte Carlo agrees with the formula for d = 2 ... 10 (largest error, in standard errors)",
    measured=z_mc,
    below=3,
    spec=".2f",
)
hamlib.check("in d = 20 the ball fills less than 1e-7 of its cube", measured=shares[20], below=1e-7)
# floating point, not geometry: V_1000 is below the smallest double, its log is not
print(f"V_1000 in double precision: {geometry.ball_volume(1000)}; ", end="")
print(f"log10 V_1000 = {geometry.log_ball_volume(1000) / math.log(10):.1f}")

# %% [markdown]
# In $d = 20$ the ball fills $2.5 \times 10^{-8}$ of its cube, and in $d = 100$ about $10^{-70}$.
# Why does the volume peak at $d = 5$? From the formula, $V_d = \frac{2\pi}{d} V_{d-2}$: adding two
# dimensions multiplies the volume by $2\pi/d$, which is larger than one only while $d < 2\pi$.
#
# Where is the volume, then? Almost all of it lies near the surface. The fraction of the unit
# ball within $\epsilon$ of its boundary is
#
# $$
# f(d, \epsilon) = 1 - (1 - \epsilon)^d \approx 1 - e^{-d\epsilon},
# $$
#
# so a peel of fixed thickness holds half the volume once $d \approx \ln 2/\epsilon$ and
# essentially all of it soon after. `shell_fraction` evaluates it without cancellation:

# %%
hamlib.show_source(geometry.shell_fraction)

# %%
ds = np.unique(np.logspace(0, 4, 200).astype(int))
fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(13, 3.8))
d_small = np.arange(1, 21)
ax0.plot(d_small, [geometry.ball_volume(int(d)) for d in d_small], "o-", color=COLORS["measured"])
ax0.set(xlabel="dimension d", ylabel="volume $V_d$", title="The unit ball's volume peaks at d = 5")
d_axis = np.arange(1, 101)
ax1.plot(
    d_axis,
    [(geometry.log_ball_volume(int(d)) - d * math.log(2)) / math.log(10) for d in d_axis],
    color=COLORS["measured"],
)
ax1.set(
    xlabel="dimension d",
    ylabel=r"log$_{10}$ ($V_d / 2^d$)",
    title="Its share of the cube $[-1, 1]^d$ collapses",
)
for eps in [0.001, 0.01, 0.1]:
    ax2.plot(ds, [geometry.shell_fraction(int(d), eps) for d in ds], label=f"$\\epsilon$ = {eps}")
ax2.set(
    xscale="log",
    xlabel="dimension d",
    ylabel="fraction of volume in the peel",
    title="Almost all volume is within $\\epsilon$ of the surface",
)
ax2.legend()
plt.show()

# %%
for d in [2, 10, 100, 1000]:
    print(
        f"d = {d:5d}: fraction within 0.01 of the surface = {geometry.shell_fraction(d, 0.01):.4f}"
    )
d_half = math.log(2) / -math.log1p(-0.01)
print(f"the outer 1% holds half the volume from d = {math.ceil(d_half)} on")
hamlib.check(
    "in d = 1000 less than 0.01% of the ball is farther than 1% from its surface",
    measured=1 - geometry.shell_fraction(1000, 0.01),
    below=1e-4,
)
# the formula's own consequence, printed rather than "verified": f crosses 1/2 between 68 and 69
print(f"f(68, 0.01) = {geometry.shell_fraction(68, 0.01):.4f}, ", end="")
print(f"f(69, 0.01) = {geometry.shell_fraction(69, 0.01):.4f}")

# %% [markdown]
# ## 1.2 The Gaussian lives on a thin shell
#
# Draw $x \sim \mathcal N(0, I_d)$. Then $\|x\|^2 = \sum_i x_i^2$ is a sum of $d$ independent terms
# with mean 1 and variance 2, so $\|x\|^2 \sim \chi^2_d$ has mean $d$ and standard deviation
# $\sqrt{2d}$. Taking the square root (delta method),
#
# $$
# \|x\| \approx \sqrt d \pm \tfrac{1}{\sqrt 2}, \qquad
# \frac{\|x\|}{\sqrt d} \to 1 \text{ with spread } \frac{1}{\sqrt{2d}} .
# $$
#
# The norm has the $\chi$ distribution, whose exact moments `hamlib` computes:

# %%
hamlib.show_source(geometry.gaussian_norm_moments)

# %%
dims = [1, 10, 100, 1000, 10_000]
n_samples = 2000
norms = {d: np.linalg.norm(rng.standard_normal((n_samples, d)), axis=1) for d in dims}
print(f"{'d':>6} {'mean |x|/sqrt(d)':>17} {'std |x|':>8} {'exact std':>10}")
for d in dims:
    mean, std = geometry.gaussian_norm_moments(d)
    print(f"{d:6d} {norms[d].mean() / math.sqrt(d):17.4f} {norms[d].std(ddof=1):8.3f} {std:10.3f}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
bins = np.linspace(-3, 3, 61)
bins_rel = np.linspace(0.0, 2.0, 201)  # wide enough for every sample: nothing is cut off
assert all(norms[d].max() / math.sqrt(d) < 2.0 for d in dims[1:])
for d in dims[1:]:
    ax1.hist(
        norms[d] / math.sqrt(d),
        bins=bins_rel,
        density=True,
        histtype="step",
        lw=1.5,
        label=f"d = {d}",
    )
    ax2.hist(norms[d] - math.sqrt(d), bins=bins, density=True, histtype="step", lw=1.5)
ax2.plot(
    bins,
    stats.norm(0, 2**-0.5).pdf(bins),
    "--",
    color=COLORS["theory"],
    label=r"$N(0, \frac{1}{2})$",
)
ax1.set(
    xlabel=r"$\|x\| / \sqrt{d}$",
    ylabel="density",
    xlim=(0.3, 1.7),
    title="Relative to the radius, the shell gets thinner",
)
ax2.set(
    xlabel=r"$\|x\| - \sqrt{d}$", ylabel="density", title="In absolute terms, its width stays ~0.71"
)
ax1.legend()
ax2.legend()
plt.show()

# %%
# the relative standard error of a sample std is sqrt((kurtosis - 1) / (4 n))
rel_dev = {d: norms[d].std(ddof=1) / geometry.gaussian_norm_moments(d)[1] - 1 for d in dims}
rel_se = {
    d: math.sqrt((stats.kurtosis(norms[d], fisher=False) - 1) / (4 * n_samples)) for d in dims
}
hamlib.check(
    "the measured spread of |x| matches the exact chi standard deviation, d = 1 ... 10,000 "
    "(largest error, in standard errors)",
    measured=max(abs(rel_dev[d]) / rel_se[d] for d in dims),
    below=3,
    spec=".2f",
)
# std |x| = sqrt(1/2 - 1/(8d) + O(1/d^2)): the relative gap to 1/sqrt(2) is 1/(8d) to first order;
# the next term changes gap x 8d by a relative O(1/d) = 0.001 at d = 1000, so 0.01 is ten times it
hamlib.check(
    "the exact spread of |x| tends to 1/sqrt(2) with relative gap 1/(8d): gap x 8d at d = 1000",
    measured=(1 - geometry.gaussian_norm_moments(1000)[1] * math.sqrt(2)) * 8 * 1000,
    target=1,
    tol=0.01,
    spec=".4f",
)
# the largest of 2,000 gaps |(|x| / 100) - 1| has a law fixed by the exact chi distribution: its
# 99% quantile b solves P(| |x| - 100 | > 100 b) = 1 - 0.99^(1/2000)
chi_big = stats.chi(10_000)
max_gap_99 = optimize.brentq(
    lambda b: chi_big.sf(100 * (1 + b)) + chi_big.cdf(100 * (1 - b)) - (1 - 0.99 ** (1 / 2000)),
    1e-4,
    0.1,
)
print(f"99% quantile of the largest of 2,000 relative gaps at d = 10,000: {max_gap_99:.4f}")
hamlib.check(
    "at d = 10,000 all 2,000 samples have |x|/sqrt(d) within the 99% quantile of the largest of "
    "2,000 gaps under the chi law (largest gap)",
    measured=float(np.max(np.abs(norms[10_000] / 100 - 1))),
    below=max_gap_99,
    spec=".4f",
)

# %% [markdown]
# The shell's *absolute* thickness does not shrink (it stays near $1/\sqrt2 \approx 0.71$); its
# thickness *relative to the radius* does, as $1/\sqrt{2d}$. That distinction is the whole content
# of the claim tested in section 1.8.
#
# ## 1.3 Random vectors are almost orthogonal
#
# Let $u = x/\|x\|$ be a uniformly random unit vector. By symmetry every coordinate has the same
# second moment, and $\sum_i u_i^2 = 1$, so $\mathbb E[u_1^2] = 1/d$. The cosine between two
# independent random directions is distributed like $u_1$, hence *exactly*
#
# $$
# \mathbb E[\cos\theta] = 0, \qquad \operatorname{std}(\cos\theta) = \frac{1}{\sqrt d}.
# $$

# %%
hamlib.show_source(geometry.cosine_similarity_stats)

# %%
gen = torch.Generator().manual_seed(1)
cos_dims = [2, 5, 10, 30, 100, 300, 1000, 3000, 10_000]
cos_stats = {d: geometry.cosine_similarity_stats(d, 2000, generator=gen) for d in cos_dims}
print(f"{'d':>6} {'mean':>8} {'std':>8} {'1/sqrt(d)':>10} {'max |cos|':>10}")
for d, s in cos_stats.items():
    print(f"{d:6d} {s.mean:8.3f} {s.std:8.4f} {1 / math.sqrt(d):10.4f} {s.max_abs:10.3f}")

# %%
fig, ax = plt.subplots()
ax.loglog(
    cos_dims,
    [cos_stats[d].std for d in cos_dims],
    "o",
    color=COLORS["measured"],
    label="measured std (2,000 pairs)",
)
ax.loglog(
    cos_dims,
    [1 / math.sqrt(d) for d in cos_dims],
    "--",
    color=COLORS["theory"],
    label=r"$1/\sqrt{d}$",
)
ax.set(
    xlabel="dimension d",
    ylabel=r"std of $\cos\theta$",
    title=r"The cosine of random pairs shrinks like $1/\sqrt{d}$",
)
ax.legend()
plt.show()
# 2,000 pairs: the relative standard error of a sample std is sqrt((kurtosis - 1) / (4 n)), and
# the cosine's kurtosis is 3d / (d + 2) (1.5 at d = 2, tending to the Gaussian 3)
cos_z = max(
    abs(cos_stats[d].std * math.sqrt(d) - 1) / math.sqrt((3 * d / (d + 2) - 1) / (4 * 2000))
    for d in cos_dims
)
hamlib.check(
    "measured std of the cosine matches 1/sqrt(d), d = 2 ... 10,000 "
    "(largest error, in standard errors)",
    measured=cos_z,
    below=3,
    spec=".2f",
)

# %% [markdown]
# This is why freshly initialised embeddings are nearly orthogonal. A table of 1,000 token
# embeddings of width 512, initialised as `torch.nn.Embedding` does ($\mathcal N(0, 1)$ entries),
# has about half a million pairs. The largest $|\cos|$ among them is an extreme value of roughly
# Gaussian variables with standard deviation $1/\sqrt{d}$, so it should be near
# $\sqrt{2\ln(\text{pairs})/d}$. That rule of thumb is only the leading term; section 1.8 gives
# the exact law of one cosine, and treating the pairs as independent, the maximum of $N$ of them is
# below $t$ with probability $(1 - P(|\cos| \ge t))^N$, whose quantiles `cosine_max_quantile`
# inverts exactly:

# %%
emb = torch.nn.Embedding(1000, 512)
with torch.no_grad():
    unit = torch.nn.functional.normalize(emb.weight, dim=1)
    cos = unit @ unit.T
pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
max_cos = float(pairs.abs().max())
rule_of_thumb = math.sqrt(2 * math.log(pairs.numel()) / 512)
q05, q50, q95 = (geometry.cosine_max_quantile(512, pairs.numel(), q) for q in (0.05, 0.5, 0.95))
print(f"pairs: {pairs.numel()}, max |cos| = {max_cos:.3f}")
print(f"rule of thumb {rule_of_thumb:.3f}; exact law of the max: median {q50:.3f}, ", end="")
print(f"5% to 95% quantiles [{q05:.3f}, {q95:.3f}]")
level = (1 - geometry.cosine_tail_probability(512, max_cos)) ** pairs.numel()
print(f"the measured max sits at quantile {level:.2f} of that law")
hamlib.check(
    "the largest |cos| of 1,000 random 512-d embeddings is in the central 90% of its predicted law",
    measured=max_cos,
    target=(q05 + q95) / 2,
    tol=(q95 - q05) / 2,
)

# %% [markdown]
# The three-digit agreement with the rule of thumb is partly luck. The rule of thumb is only the
# leading term of the Gaussian extreme-value law and overestimates the median of the maximum
# (0.226 against 0.211; the exact Beta tail, slightly lighter than the Gaussian one, accounts for
# a small part of the gap), and this draw happened to land high, at the quantile printed above.
# What is solid is the scale: no pair comes near $|\cos| = 0.3$.
#
# **Why attention divides by $\sqrt d$.** The same arithmetic explains a constant of the
# transformer (Vaswani et al., 2017). For a query $q$ and a key $k$ with independent entries of
# mean 0 and variance 1, the dot product $q \cdot k = \|q\|\|k\|\cos\theta$ has variance $d$:
# its typical size $\sqrt d$ is the norm $\approx \sqrt d$ of each vector (section 1.2) times
# $\sqrt d$ times the cosine's $1/\sqrt d$. Scores of size $\sqrt d$ would drive the softmax
# into saturation at large width; dividing by $\sqrt d$ gives them variance 1 at every width.
#
# ## 1.4 Distances concentrate
#
# Take $n$ points uniformly in the cube $[0, 1]^d$ and a query point. The squared distance to each
# point is a sum of $d$ independent terms, so by the same concentration argument all distances are
# close to their common mean, $\sqrt{d/6}$, with a spread that does not grow with $d$. The
# *relative contrast* between the farthest and the nearest neighbour,
# $(D_{\max} - D_{\min})/D_{\min}$, then decays like $1/\sqrt d$ for large $d$ (Beyer et al.,
# 1999; Aggarwal et al., 2001):

# %%
contrast_dims = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
contrast, contrast_se = {}, {}
for d in contrast_dims:
    points = rng.uniform(size=(1000, d))
    queries = rng.uniform(size=(20, d))
    per_query = np.array([geometry.relative_contrast(points, q) for q in queries])
    contrast[d] = per_query.mean()
    contrast_se[d] = per_query.std(ddof=1) / math.sqrt(len(per_query))
for d in contrast_dims:
    print(f"d = {d:5d}: (Dmax - Dmin) / Dmin = {contrast[d]:.3g}")

# %%
fig, ax = plt.subplots()
ax.loglog(
    contrast_dims,
    [contrast[d] for d in contrast_dims],
    "o-",
    color=COLORS["measured"],
    label="measured (1,000 points, mean of 20 queries)",
)
ref = contrast[5000] * math.sqrt(5000)  # anchored at the largest d, where the law applies
ax.loglog(
    contrast_dims[3:],
    [ref / math.sqrt(d) for d in contrast_dims[3:]],
    "--",
    color=COLORS["theory"],
    label=r"$\propto 1/\sqrt{d}$",
)
ax.set(
    xlabel="dimension d",
    ylabel=r"$(D_{\max} - D_{\min}) / D_{\min}$",
    title="Nearest and farthest neighbours become equally far",
)
ax.legend()
plt.show()
hamlib.check(
    "relative contrast falls monotonically with d",
    all(contrast[a] > contrast[b] for a, b in zip(contrast_dims, contrast_dims[1:], strict=False)),
)
hamlib.check(
    "in d = 1000 the farthest point is less than 15% farther than the nearest",
    measured=contrast[1000],
    below=0.15,
)


def loglog_slope(a, b):
    """Slope of log contrast between d = a and d = b, and its standard error (from the queries)."""
    slope = math.log(contrast[b] / contrast[a]) / math.log(b / a)
    rel = math.hypot(contrast_se[a] / contrast[a], contrast_se[b] / contrast[b])
    return slope, rel / math.log(b / a)


for a, b in [(100, 1000), (1000, 5000)]:
    slope, se = loglog_slope(a, b)
    print(f"log-log slope from d = {a} to {b}: {slope:.3f} +- {se:.3f}")
hamlib.check(
    "from d = 1000 to 5000 the contrast decays like 1/sqrt(d): slope -1/2 within 3 standard errors",
    measured=slope,
    target=-0.5,
    tol=3 * se,
)

# %% [markdown]
# The $1/\sqrt d$ law is a large-$d$ limit: between $d = 100$ and $1000$ the measured slope is
# $-0.59$, steeper than $-1/2$ by several standard errors, and from $d = 1000$ to $5000$ it is
# $-1/2$ within its error bar.
#
# What does that do to nearest neighbours? Count, for each query, the points that are at most 10%
# farther away than its nearest neighbour, candidates that an approximate search could not tell
# from the true answer:

# %%
for d in [2, 10, 100, 1000]:
    points = rng.uniform(size=(1000, d))
    near = []
    for q in rng.uniform(size=(20, d)):
        dist = np.linalg.norm(points - q, axis=1)
        near.append(np.mean(dist <= 1.1 * dist.min()))
    print(f"d = {d:4d}: share of points within 1.1 x the nearest distance = {np.mean(near):.4f}")
    if d == 2:
        near_2 = np.mean(near)
hamlib.check(
    "in d = 1000 over 90% of points are within 10% of the nearest distance",
    measured=float(np.mean(near)),
    above=0.9,
)
hamlib.check("in d = 2 under 1% of them are", measured=float(near_2), below=0.01)

# %% [markdown]
# For *uniform* data in high dimension, "nearest neighbour" therefore carries little information:
# almost every point is nearly as near as the nearest. Real data is not uniform: section 1.6
# shows it occupies far fewer dimensions than it is written in. Does that show in its distances?
# The same measurement on scikit-learn's 8×8 handwritten digits (64 pixels; 20 digits as queries,
# 1,000 others as the data) against uniform points of the same dimension:

# %%
digits = np.unique(load_digits().data, axis=0)
order = rng.permutation(len(digits))
digit_queries, digit_points = digits[order[:20]], digits[order[20:1020]]
uniform_points, uniform_queries = rng.uniform(size=(1000, 64)), rng.uniform(size=(20, 64))
rc_digits = np.array([geometry.relative_contrast(digit_points, q) for q in digit_queries])
rc_uniform = np.array([geometry.relative_contrast(uniform_points, q) for q in uniform_queries])
for name, rc in [("digits", rc_digits), ("uniform", rc_uniform)]:
    se = rc.std(ddof=1) / math.sqrt(len(rc))
    print(f"64-d {name:>8}: relative contrast {rc.mean():.2f} +- {se:.2f} (mean of 20 queries)")
print(f"ratio digits / uniform: {rc_digits.mean() / rc_uniform.mean():.1f}")
print(f"digits: farthest / nearest = 1 + contrast = {1 + rc_digits.mean():.1f}")


def isolation(points, queries):
    """Per query: share of points within 1.1 x the nearest distance, and median / nearest."""
    dist = np.linalg.norm(points[None, :, :] - queries[:, None, :], axis=2)
    nearest = dist.min(axis=1, keepdims=True)
    return np.mean(dist <= 1.1 * nearest, axis=1), np.median(dist, axis=1) / nearest[:, 0]


for name, (pts, qs) in [
    ("digits", (digit_points, digit_queries)),
    ("uniform", (uniform_points, uniform_queries)),
]:
    share, med_ratio = isolation(pts, qs)
    print(
        f"64-d {name:>8}: share within 1.1 x nearest {share.mean():.3f}, "
        f"median / nearest distance {np.median(med_ratio):.2f}"
    )
hamlib.check(
    "in 64 dimensions the digits' relative contrast exceeds uniform data's by over 3 std errors",
    measured=rc_digits.mean(),
    above=rc_uniform.mean()
    + 3 * math.hypot(rc_digits.std(ddof=1), rc_uniform.std(ddof=1)) / math.sqrt(20),
    spec=".2f",
)

# %% [markdown]
# In the same 64 dimensions a digit's farthest neighbour is on average 3.6 times as far as its
# nearest (a contrast of 2.62), while for uniform points it is only 58% farther, a contrast 4.5
# times smaller. The measures that matter for search say the same: the share of points within
# 1.1 times the nearest distance, and how much farther the median point is than the nearest,
# printed above. A digit's nearest neighbour is isolated from the bulk, a uniform point's is
# not, and that isolation is what nearest-neighbour search and distance-based kernels rely on.
# (Whether a kernel method then *works* on the digits is a further question this measurement
# does not answer.)
#
# **Try it: one dimension at a time.** The facts so far, drawn for a single $d$ on fixed axes:
# the norm of a Gaussian vector relative to $\sqrt d$, the cosine between random directions, and
# the distance between random pairs of uniform points in the cube relative to $\sqrt{d/6}$ (the
# root of its mean square, $\mathbb E\|x - y\|^2 = d/6$). In
# JupyterLab the slider redraws the figure: watch all three histograms collapse onto a spike as
# $d$ grows. (The figure draws with its own seed for each $d$, so moving the slider changes no
# other number in the chapter.)


# %%
def draw_dimension(d):
    gen = np.random.default_rng(d)
    x = gen.standard_normal((2000, d))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cube = gen.uniform(size=(2000, d))  # 1,000 independent pairs
    panels = [
        (np.linalg.norm(x, axis=1) / math.sqrt(d), (0, 2.5), r"$\|x\| / \sqrt{d}$, Gaussian $x$"),
        (np.sum(u[:1000] * u[1000:], axis=1), (-1, 1), r"$\cos\theta$ of random pairs"),
        (
            np.linalg.norm(cube[:1000] - cube[1000:], axis=1) / math.sqrt(d / 6),
            (0, 2.5),
            r"$\|x - y\| / \sqrt{d/6}$, pairs in the cube",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (values, span, label) in zip(axes, panels, strict=True):
        ax.hist(values, bins=np.linspace(*span, 51), color=COLORS["measured"])
        ax.set(xlabel=label, xlim=span, ylabel=f"count (of {len(values):,})")
    fig.suptitle(f"d = {d}: norms, angles and distances concentrate")


hamlib.plotting.explore(
    draw_dimension, {"d": [1, 2, 3, 5, 10, 30, 100, 300, 1000, 3000, 10_000]}, {"d": 100}
)

# %% [markdown]
# ## 1.5 Random projections keep distances: Johnson–Lindenstrauss
#
# The same concentration that makes distances alike makes random projections faithful. Project
# with $P = G/\sqrt k$, $G_{ij} \sim \mathcal N(0,1)$. For a fixed vector $v$, the $k$ entries of
# $Gv/\|v\|$ are independent standard normals (a Gaussian matrix does not care about the
# direction of $v$), so $\|Pv\|^2/\|v\|^2 = \chi^2_k/k$: a mean of $k$ squares with mean 1,
# which concentrates like the norm of section 1.2. Its tail follows from Markov's inequality on
# $e^{\lambda \chi^2_k}$, with $\mathbb E\, e^{\lambda Z^2} = (1 - 2\lambda)^{-1/2}$: optimising
# over $\lambda$ gives $P(\chi^2_k \ge (1+\epsilon)k) \le \big((1+\epsilon)e^{-\epsilon}\big)^{k/2}
# \le e^{-k(\epsilon^2/2 - \epsilon^3/3)/2}$, and the lower tail obeys the same bound. Choose $k$
# so that the two tails together are at most $2/n^2$ for each of the $\binom n2$ pairs of $n$
# points; a union bound then says that one projection keeps *all* squared distances within
# $1 \pm \epsilon$ with probability at least $1/n$. That is small, but it is positive, so such a
# projection exists. This is the Johnson–Lindenstrauss dimension in the form of Dasgupta & Gupta
# (2003):

# %%
hamlib.show_source(geometry.jl_min_dimension)

# %% [markdown]
# The bound depends on the number of points and on $\epsilon$, not on the original dimension,
# and it promises success with probability $1/n$ per draw, not certainty. How often does one draw
# actually succeed? We take 100 Gaussian points in $\mathbb R^{2000}$ and, at each $k$, draw 40
# projections and record each one's worst distortion over the 4,950 squared distances. Only the
# points' coordinates within their own 100-dimensional span matter (a Gaussian matrix restricted
# to a subspace is again Gaussian), so we project those coordinates: the same distortions in
# distribution, at a twentieth of the cost. Two predictions go with the measurement. The bound,
# inverted, gives the $\epsilon$ it promises at each $k$ (`jl_epsilon`; it promises no
# $\epsilon < 1$ below $k = 24 \ln n \approx 111$). And since every pair's distortion has the
# exact law $|\chi^2_k/k - 1|$ whatever the points, treating the 4,950 pairs as independent
# predicts the law of the worst one (`jl_max_distortion_quantile`).

# %%
n_jl, n_draws = 100, 40
n_pairs_jl = n_jl * (n_jl - 1) // 2
X_jl = rng.standard_normal((n_jl, 2000))
coords_jl = np.linalg.qr(X_jl.T)[1].T  # X_jl = coords_jl @ Q.T with Q orthonormal: same distances
k_05, k_02 = geometry.jl_min_dimension(n_jl, 0.5), geometry.jl_min_dimension(n_jl, 0.2)
print(f"the bound's dimension for n = {n_jl}: k = {k_05} (eps = 0.5), k = {k_02} (eps = 0.2)")
ks = sorted([10, 20, 50, 100, k_05, 500, k_02, 2000])
worst = {
    k: np.array(
        [
            geometry.jl_distortion(coords_jl, k, torch.Generator().manual_seed(s))
            for s in range(n_draws)
        ]
    )
    for k in ks
}
print(f"{'k':>5} {'bound eps':>9} {'median worst':>12} {'indep. pred.':>12} {'draws in bound':>14}")
for k in ks:
    bound, met = "none", "-"  # below 24 ln n the bound promises no eps < 1
    if k > 24 * math.log(n_jl):
        eps_k = geometry.jl_epsilon(n_jl, k)
        bound, met = f"{eps_k:.3f}", f"{np.mean(worst[k] <= eps_k):.2f}"
    pred = geometry.jl_max_distortion_quantile(k, n_pairs_jl)
    print(f"{k:5d} {bound:>9} {np.median(worst[k]):12.3f} {pred:12.3f} {met:>14}")

# %% [markdown]
# Three things to read off the table. At the bound's own $k$ (222 for $\epsilon = 0.5$, 1,063
# for $\epsilon = 0.2$), 40 and 39 of the 40 draws (printed below) keep every distance within
# $\epsilon$: the promised probability $1/n = 1\%$ is what the union bound can prove, not what
# happens. Treating the pairs as independent gives the chance that one draw meets the bound,
# $(1 - P(|\chi^2_k/k - 1| > \epsilon))^{4950}$; we check the measured share against it with the
# binomial standard error of 40 draws. And the predicted median of the worst distortion is an
# upper bound for the measured one, close to it: the pairs share points, and that dependence can
# only lower the maximum
# (Šidák's inequality, discussed below the figure).

# %%
for eps, k in [(0.5, k_05), (0.2, k_02)]:
    share = float(np.mean(worst[k] <= eps))
    p_success = (1 - geometry.jl_pair_tail(k, eps)) ** n_pairs_jl
    print(
        f"eps = {eps}: k = {k}, {int(np.sum(worst[k] <= eps))} of {n_draws} draws within eps; "
        f"independent pairs predict success with probability {p_success:.3f}"
    )
    hamlib.check(
        f"at the JL dimension for eps = {eps}, the share of draws that keep all distances within "
        "eps is at least the independent-pairs prediction less 3 binomial standard errors",
        measured=share,
        above=p_success - 3 * math.sqrt(p_success * (1 - p_success) / n_draws),
    )
# the standard error of a median of n draws is about 1.25 sd / sqrt(n)
median_se = {k: 1.25 * worst[k].std(ddof=1) / math.sqrt(n_draws) for k in ks}
z_median = {
    k: (np.median(worst[k]) - geometry.jl_max_distortion_quantile(k, n_pairs_jl)) / median_se[k]
    for k in ks
}
print("(measured - predicted median) / SE:", {k: round(float(z), 1) for k, z in z_median.items()})
print(f"medians below the prediction: {sum(z < 0 for z in z_median.values())} of {len(ks)}")
hamlib.check(
    "Sidak: at every k the median worst distortion is at most the independent-pairs prediction "
    "plus 3 standard errors (largest excess, in standard errors)",
    measured=max(z_median.values()),
    below=3,
    spec=".2f",
)

# %% [markdown]
# How far is the bound from the typical worst distortion? To leading order in $\epsilon$ the
# bound asks for $k = 8 \ln n / \epsilon^2$. The worst of $N \approx n^2/2$ distortions, each
# roughly Gaussian with variance $2/k$, is near $\sqrt{2 \ln N \cdot 2/k} \approx
# \sqrt{8 \ln n/k}$: the *same* formula. The bound is nearly tight, and the union bound costs
# only lower-order terms. Larsen & Nelson (2017) proved that no map whatsoever, random or not, can
# do better than order $\ln n/\epsilon^2$ for every set of $n$ points. Below, the ratio of the
# bound's $\epsilon$ to the measured median worst distortion, and, for one pair, the exact tail
# against the Chernoff bound of the derivation above:

# %%
k_bound = [k for k in ks if k > 24 * math.log(n_jl)]
tightness = {k: geometry.jl_epsilon(n_jl, k) / np.median(worst[k]) for k in k_bound}
predicted = {
    k: geometry.jl_epsilon(n_jl, k) / geometry.jl_max_distortion_quantile(k, n_pairs_jl)
    for k in k_bound
}
# the eps at which the exact one-pair tail equals the bound's target 2/n^2
exact_target = {k: geometry.jl_max_distortion_quantile(k, 1, 1 - 2 / n_jl**2) for k in k_bound}
print(f"{'k':>5} {'measured ratio':>14} {'predicted':>9} {'Chernoff part':>13} {'target part':>11}")
for k in k_bound:
    chernoff = geometry.jl_epsilon(n_jl, k) / exact_target[k]
    target_part = exact_target[k] / geometry.jl_max_distortion_quantile(k, n_pairs_jl)
    print(f"{k:5d} {tightness[k]:14.2f} {predicted[k]:9.2f} {chernoff:13.2f} {target_part:11.2f}")
for eps, k in [(0.5, k_05), (0.2, k_02)]:
    dg_tail = 2 * math.exp(-k * (eps**2 / 2 - eps**3 / 3) / 2)
    exact_tail = geometry.jl_pair_tail(k, eps)
    print(
        f"one pair, k = {k}, eps = {eps}: exact tail {exact_tail:.2g}, "
        f"Chernoff bound {dg_tail:.2g} ({dg_tail / exact_tail:.0f} times the exact tail)"
    )
# the ratio's relative standard error is the median's: SE(median) / median
z_tight = max(
    abs(tightness[k] - predicted[k]) / (tightness[k] * median_se[k] / np.median(worst[k]))
    for k in k_bound
)
hamlib.check(
    "the bound's eps over the median worst distortion matches the independent-pairs ratio "
    "(largest gap, in standard errors of the median)",
    measured=z_tight,
    below=3,
    spec=".2f",
)

# %% [markdown]
# The ratio of the bound's $\epsilon$ to the typical worst distortion has two parts, printed
# above. The Chernoff bound overstates one pair's tail (by the factors printed, tens of times),
# so the bound needs a larger $\epsilon$ than the exact tail would to reach its target $2/n^2$:
# the "Chernoff part". And that target differs from the one that sets the median of the
# maximum, a per-pair tail of about $\ln 2/N$: the union bound asks for $2/n^2$, about 1.4
# times more, which lowers $\epsilon$ slightly: the "target part", below 1. Because the tail falls
# so steeply in $\epsilon$, even a factor of tens in probability moves $\epsilon$ little. That is
# why a union bound, crude as it looks, gives a nearly tight dimension.

# %%
fig, ax = plt.subplots()
for k in ks:
    ax.plot([k] * n_draws, worst[k], ".", color=COLORS["muted"], ms=3)
ax.plot([], [], ".", color=COLORS["muted"], label=f"worst pair of one draw ({n_draws} draws per k)")
ax.plot(
    ks,
    [np.median(worst[k]) for k in ks],
    "o",
    color=COLORS["measured"],
    label="median worst, measured",
)
ax.plot(
    ks,
    [geometry.jl_max_distortion_quantile(k, n_pairs_jl) for k in ks],
    "-",
    color=COLORS["theory"],
    label="median worst, pairs treated as independent",
)
k_grid = np.unique(np.geomspace(112, 2000, 60).astype(int))
ax.plot(
    k_grid,
    [geometry.jl_epsilon(n_jl, int(k)) for k in k_grid],
    "--",
    color=COLORS["theory"],
    label=r"JL bound: met with probability $\geq 1/n$ per draw",
)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="target dimension k",
    ylabel=r"max relative distortion $\epsilon$",
    title="100 points: the JL bound sits just above the typical worst distortion",
)
ax.legend()
plt.show()

# %% [markdown]
# The picture says what the table said: above $k \approx 111$, where the bound
# starts to promise anything, the dashed bound runs a factor of 1.16 to 1.29 (the table's
# measured ratios) above the median of the measured worst distortions, and 93% to 100% of the
# draws lie below it. A draw above the bound (there are a few at large $k$) does not contradict
# it: it promises success only with probability $1/n$.
#
# Is a set of Gaussian points an easy case? Not for one pair: under a Gaussian projection every
# pair's distortion has the same $\chi^2_k/k$ law whatever the points are. The point set only
# decides how the 4,950 distortions depend on one another. Pairs that share no point have nearly
# orthogonal differences, but pairs that share one, $x_i - x_j$ and $x_i - x_l$, have cosine
# about $1/2$, and their distortions are positively correlated. For maxima of absolute values
# of jointly Gaussian variables, Šidák's inequality (1967) says that such dependence can only
# help: $P(\max_i |Z_i| \le t) \ge \prod_i P(|Z_i| \le t)$, so the independent-pairs law is an
# upper bound, in distribution, for the worst distortion (for the $\chi^2$ distortions here it
# holds to the extent they are nearly Gaussian). The measured medians sit at or below the
# prediction, as printed after the table, and not far below it: these points are close to the
# worst case the independent-pairs law describes, not an easy case.
#
# **The other direction: Cover's theorem.** Johnson–Lindenstrauss says how few dimensions keep
# distances; Cover (1965) says how many it takes to separate labels. Of the $2^N$ ways to label
# $N$ points in general position in $\mathbb R^d$ with $\pm 1$, exactly
# $C(N, d) = 2\sum_{k<d} \binom{N-1}{k}$ are separable by a hyperplane through the origin. So
# every labelling of $N \le d$ points is separable, exactly half of them at $N = 2d$, and
# around $N = 2d$ the share falls from 1 to 0 ever more sharply as $d$ grows. This is the
# "lifting" argument behind kernel machines and wide random features: mapping $N$ points into
# more dimensions makes more labellings linearly separable, and in $d > N/2$ dimensions a
# random labelling is more likely separable than not (exactly even odds at $N = 2d$). Separating
# *random* labels is memorisation, not learning: it says the features have the capacity to fit
# any labels, not that the fit will generalise. We test the count with linear programming
# (`linearly_separable` decides exactly whether some $w$ has $y_i\, w \cdot x_i > 0$ for all
# $i$) on 100 random labellings of Gaussian points in $d = 10$ for each $N$:

# %%
cover_ns, n_labellings = [15, 20, 25, 30], 100
gen_cover = np.random.default_rng(10)
separable = {
    n: np.mean(
        [
            geometry.linearly_separable(
                gen_cover.standard_normal((n, 10)), gen_cover.choice([-1.0, 1.0], size=n)
            )
            for _ in range(n_labellings)
        ]
    )
    for n in cover_ns
}
for n in cover_ns:
    exact = geometry.cover_separable_fraction(n, 10)
    print(
        f"N = {n}: separable share {separable[n]:.2f}, Cover's count C(N, 10) / 2^N = {exact:.3f}"
    )
z_cover = max(
    abs(separable[n] - geometry.cover_separable_fraction(n, 10))
    / math.sqrt(
        geometry.cover_separable_fraction(n, 10)
        * (1 - geometry.cover_separable_fraction(n, 10))
        / n_labellings
    )
    for n in cover_ns
)
hamlib.check(
    "the separable share of random labellings matches Cover's count in d = 10 "
    "(largest gap, in binomial standard errors)",
    measured=z_cover,
    below=3,
    spec=".2f",
)

# %%
fig, ax = plt.subplots()
cover_styles = {
    10: dict(color=COLORS["theory"], ls="--"),
    30: dict(color=CYCLE[1]),
    100: dict(color=CYCLE[2]),
}
for d_cover, style in cover_styles.items():
    n_axis = np.arange(1, 4 * d_cover + 1)
    ax.plot(
        n_axis / d_cover,
        [geometry.cover_separable_fraction(int(n), d_cover) for n in n_axis],
        label=f"d = {d_cover}, Cover's count",
        **style,
    )
ax.plot(
    [n / 10 for n in cover_ns],
    [separable[n] for n in cover_ns],
    "o",
    color=COLORS["measured"],
    label="d = 10, measured (100 labellings)",
)
ax.axvline(2, color=COLORS["highlight"], ls=":", lw=1)
ax.set(
    xlabel="points per dimension N / d",
    ylabel="share of labellings separable",
    title="Random labels are separable up to about N = 2d",
)
ax.legend()
plt.show()

# %% [markdown]
# Lifting in its simplest form: two concentric rings in the plane, labelled by ring, are not
# separable by any line, but with the feature $|x|^2$ added the circle between them becomes a
# plane. The same linear program decides both (a column of ones makes the hyperplanes affine):

# %%
gen_rings = np.random.default_rng(12)
angle = gen_rings.uniform(0, 2 * math.pi, 200)
radius = np.where(np.arange(200) < 100, 1.0, 2.0) + gen_rings.uniform(-0.2, 0.2, 200)
rings = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
ring_label = np.where(np.arange(200) < 100, 1.0, -1.0)
ones = np.ones((200, 1))
flat = geometry.linearly_separable(np.hstack([rings, ones]), ring_label)
lifted = geometry.linearly_separable(
    np.hstack([rings, (rings**2).sum(axis=1, keepdims=True), ones]), ring_label
)
print(f"rings separable by a line in 2-D: {flat}; with the feature |x|^2 added: {lifted}")

# %% [markdown]
# ## 1.6 The manifold hypothesis, measured
#
# If data filled its ambient space, sections 1.1–1.4 would make learning hopeless. The manifold
# hypothesis says it does not: images, sounds and text embeddings lie near sets of much lower
# *intrinsic* dimension. Two estimators make this measurable from nearest-neighbour distances
# alone.
#
# **TwoNN** (Facco et al., 2017). For each point let $\mu = r_2/r_1$, the ratio of its second to
# first nearest-neighbour distance. If the density is locally uniform on a $d$-dimensional set,
# $\mu$ follows a Pareto law, $P(\mu > t) = t^{-d}$, so $-\log(1 - F(\mu)) = d \log \mu$: a line
# through the origin whose slope is the dimension.
#
# **MLE** (Levina & Bickel, 2004). Treating the neighbours within the $k$-th neighbour distance
# $T_k$ as a Poisson process with rate $\propto r^{d-1}$ gives the local estimate
# $\hat m_k(x) = \big[\frac{1}{k-1}\sum_{j<k} \log(T_k/T_j)\big]^{-1}$, averaged over points.
# Averaging it carries a known bias. Under the model, $d \log(T_k/T_j)$ for $j < k$ are $k - 1$
# independent exponential variables, so their sum $S$ is Gamma$(k-1)$ distributed and
# $\mathbb E[(k-1)/S] = (k-1)/(k-2)$: each local estimate, and hence their average, is too large by
# the factor $(k-1)/(k-2)$, which is $9/8$ at $k = 10$, even on ideal data. MacKay & Ghahramani
# (2005) average the *inverses* $1/\hat m_k(x)$ instead, which are unbiased for $1/d$, and invert
# the mean. `mle_dimension` does either (`average="estimates"` or `"inverses"`).

# %%
hamlib.show_source(geometry.twonn_dimension)

# %% [markdown]
# Five data sets, each with five random draws (for the digits, five random 80% subsets; the
# estimators need distinct points, so duplicate images would have to be removed first, and the
# printed count shows there are none): ideal data, 2,000 uniform points on the flat
# 5-dimensional torus $[0, 1)^5$ with distances that wrap around (uniform density and no
# boundary, exactly the estimators' assumptions); the same on the 10-dimensional torus
# $[0, 1)^{10}$; a Swiss roll (a 2-D sheet rolled up in $\mathbb R^3$); a random 10-dimensional
# linear subspace of $\mathbb R^{100}$ with Gaussian coordinates; and scikit-learn's 1,797
# handwritten 8×8 digits (64 pixels).


# %%
def torus_5(seed):
    return np.random.default_rng(seed).uniform(size=(2000, 5))


def torus_10(seed):
    return np.random.default_rng(seed).uniform(size=(2000, 10))


def swiss_roll(seed):
    return make_swiss_roll(2000, random_state=seed)[0]


def subspace_10_in_100(seed):
    r = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(r.standard_normal((100, 10)))
    return r.standard_normal((2000, 10)) @ basis.T


def digits_subset(seed):
    r = np.random.default_rng(seed)
    return digits[r.choice(len(digits), size=int(0.8 * len(digits)), replace=False)]


# %%
datasets = {
    "flat 5-torus": torus_5,
    "flat 10-torus": torus_10,
    "Swiss roll (R^3)": swiss_roll,
    "10-d subspace (R^100)": subspace_10_in_100,
    "8x8 digits (R^64)": digits_subset,
}
estimators = {
    "TwoNN": geometry.twonn_dimension,
    "MLE, LB": lambda X, **kw: geometry.mle_dimension(X, k=10, **kw),
    "MLE, MG": lambda X, **kw: geometry.mle_dimension(X, k=10, average="inverses", **kw),
}
estimates = {}
for name, make in hamlib.progress(datasets.items(), desc="estimating"):
    samples = [make(seed) for seed in range(5)]
    torus = {"boxsize": 1.0} if "torus" in name else {}
    estimates[name] = {
        est: np.array([fn(X, **torus) for X in samples]) for est, fn in estimators.items()
    }
print(f"digits: {len(load_digits().data)} images, {len(digits)} distinct")
print(f"{'data set':<24}" + "".join(f"{est:>15}" for est in estimators))
for name, est in estimates.items():
    print(f"{name:<24}" + "".join(f"{e.mean():8.2f} ± {e.std(ddof=1):.2f}" for e in est.values()))
print("(k = 10; LB: average of the local estimates; MG: inverse of the average of their inverses)")

# %%
torus5, torus10, swiss, sub10, dig = (estimates[k] for k in datasets)


def within_se(name, values, target, label):
    """Check the mean of five draws against a target, to 3 standard errors of the mean."""
    hamlib.check(
        f"{name}: {label}",
        measured=values.mean(),
        target=target,
        tol=3 * values.std(ddof=1) / math.sqrt(len(values)),
        spec=".3g",
    )


within_se("flat 5-torus", torus5["MLE, LB"], 5 * 9 / 8, "LB's average gives 5 x 9/8 = 5.63, not 5")
within_se("flat 5-torus", torus5["MLE, MG"], 5, "MG's average of inverses gives 5")
within_se("flat 5-torus", torus5["TwoNN"], 5, "TwoNN gives 5")
# the tolerance 0.5 is rounding: nearer to 2 than to 1 or 3, the sheet, not its ambient space
for est, values in swiss.items():
    hamlib.check(
        f"Swiss roll: {est} rounds to 2 dimensions (within 0.5)",
        measured=values.mean(),
        target=2,
        tol=0.5,
        spec=".3g",
    )
within_se("flat 10-torus", torus10["MLE, MG"], 10, "MG's average of inverses gives 10")
within_se("flat 10-torus", torus10["TwoNN"], 10, "TwoNN gives 10")
for est in estimators:  # same dimension, same n, same k: only the density differs
    gap = torus10[est].mean() - sub10[est].mean()
    se = math.hypot(torus10[est].std(ddof=1), sub10[est].std(ddof=1)) / math.sqrt(5)
    print(f"{est}: 10-torus - 10-d Gaussian = {gap:.2f} +- {se:.2f}")
    if est == "TwoNN":  # two neighbours only: a smaller effect, not resolved by five draws
        continue
    hamlib.check(
        f"the Gaussian density pulls {est} below its value on the uniform 10-torus "
        "(gap, more than 3 standard errors)",
        measured=gap,
        above=3 * se,
        spec=".2f",
    )
hamlib.check(
    "all three estimators find the 64-pixel digits less than 10-dimensional (largest estimate)",
    measured=max(e.mean() for e in dig.values()),
    below=10,
)

# %% [markdown]
# On the tori the estimators behave as the theory says: MG and TwoNN find 5 and 10, and LB's
# plain average finds about $9/8$ times that, the Gamma bias of averaging $\hat m_k$, not an error
# of the data. The 10-torus is the control for the 10-dimensional Gaussian subspace: same
# dimension, same number of points, same $k$; only the density differs. On the Gaussian data
# the two $k = 10$ estimators land lower than on the torus by many standard errors (the gaps
# printed above); TwoNN, which looks only at the two nearest neighbours, lands lower by less
# than its noise across five draws can resolve. All of them assume
# the density is constant over each point's neighbourhood, and a 10-dimensional Gaussian with
# 2,000 points is far from that, because in ten dimensions a point's neighbours are not close
# (section 1.4 again). LB's upward factor $9/8$ partly offsets that downward pull, which is why
# it alone lands above 10 on the Gaussian data. On the Swiss roll LB is again the highest of
# the three. On the digits the three estimates spread from 7.2 (MG) to 8.8 (TwoNN), more than
# their error bars: the error bars across draws measure the estimators' precision, not their
# accuracy. And they are local: they measure dimension at the scale of a few neighbours, and
# that scale matters, as MG over a range of $k$ and a linear count (principal components) show:

# %%
for k_mg in [5, 10, 20, 50]:
    mg_k = geometry.mle_dimension(digits, k_mg, average="inverses")
    print(f"digits, MG with k = {k_mg:2d}: {mg_k:.1f}")
print(f"digits, TwoNN: {geometry.twonn_dimension(digits):.1f}")
pca_var = np.linalg.svd(digits - digits.mean(axis=0), compute_uv=False) ** 2
n_90 = int(np.searchsorted(np.cumsum(pca_var) / pca_var.sum(), 0.9) + 1)
print(f"digits: {n_90} principal components hold 90% of the variance")

# %% [markdown]
# So the verdict for the digits has two scales. Locally, at the scale of about ten neighbours,
# they are about 7 to 9 dimensional, and MG's estimate falls as $k$ grows and the neighbourhood
# takes in more of the curved, non-uniform set; globally, about 21 linear directions carry 90%
# of the variance. Both are far below the 64 pixels, which is the point of the section. The
# figure shows what TwoNN fits:

# %%
fig, ax = plt.subplots()
for name, make in datasets.items():
    if "torus" in name:  # uniform on the torus: a cloud hiding the others
        continue
    X = make(0)
    d_hat = geometry.twonn_dimension(X)
    log_mu, log_sf = geometry.twonn_points(X)
    line = ax.plot(log_mu, log_sf, ".", ms=2, alpha=0.5)[0]
    ax.plot(
        [0, log_mu[-1]],
        [0, d_hat * log_mu[-1]],
        color=line.get_color(),
        label=f"{name}: slope {d_hat:.1f}",
    )
ax.set(
    xlabel=r"$\log \mu$,  $\mu = r_2/r_1$",
    ylabel=r"$-\log(1 - F(\mu))$",
    title="TwoNN: the slope of this line is the intrinsic dimension",
)
ax.legend()
plt.show()

# %% [markdown]
# ## 1.7 Why normalization: LayerNorm puts activations on the $\sqrt d$ shell
#
# Layer normalization (Ba et al., 2016) maps a vector $x \in \mathbb R^d$ to
# $\mathrm{LN}(x) = (x - \bar x)/\sqrt{\sigma^2 + \varepsilon}$ before its learned affine map, where
# $\bar x$ and $\sigma^2$ are the mean and variance of the entries of $x$. Since
# $\sum_i (x_i - \bar x)^2 = d\sigma^2$,
#
# $$
# \|\mathrm{LN}(x)\| = \sqrt d \,\sqrt{\frac{\sigma^2}{\sigma^2 + \varepsilon}} ,
# $$
#
# exactly $\sqrt d$ up to the $\varepsilon$ term: before the learned gain and bias, every token
# enters the next layer on the same sphere, the one a standard Gaussian vector already lives
# near (section 1.2). RMSNorm (Zhang & Sennrich, 2019) drops the centring,
# $\mathrm{RMS}(x) = x/\sqrt{\|x\|^2/d + \varepsilon}$, and gives the same radius. The two sets
# of outputs are not the same, though: LayerNorm's also lie in the hyperplane of mean-zero
# vectors (a sphere of one dimension less), RMSNorm's anywhere on the sphere. We feed both
# inputs whose scale varies over six orders of magnitude (and whose mean, 3 times their scale,
# is far from 0):

# %%
d = 512
ln = torch.nn.LayerNorm(d, elementwise_affine=False)  # eps = 1e-5
rms = torch.nn.RMSNorm(d, eps=1e-5, elementwise_affine=False)
scales = torch.logspace(-3, 3, 25, dtype=torch.float64)
x = torch.randn(25, d, dtype=torch.float64) * scales[:, None] + 3 * scales[:, None]
with torch.no_grad():
    ln_norm = ln(x).norm(dim=1) / math.sqrt(d)
    rms_norm = rms(x).norm(dim=1) / math.sqrt(d)
var = x.var(dim=1, unbiased=False)
formula = torch.sqrt(var / (var + ln.eps))
for i in [0, 4, 8, 12, 24]:
    print(
        f"input scale {scales[i]:8.3g}: |LN(x)|/sqrt(d) = {ln_norm[i]:.4f}, "
        f"formula = {formula[i]:.4f}, |RMSNorm(x)|/sqrt(d) = {rms_norm[i]:.4f}"
    )

# %%
gap = float((ln_norm - formula).abs().max())
print(f"largest |LN(x)|/sqrt(d) - formula: {hamlib.below(gap, 1e-10)}")
hamlib.check("|LN(x)| equals sqrt(d) * sqrt(var / (var + eps)) to 1e-10", gap < 1e-10)
big_inputs = scales >= 0.1
hamlib.check(
    "for inputs of scale >= 0.1, LayerNorm and RMSNorm outputs have norm sqrt(d) within 0.1% "
    "(largest relative gap)",
    measured=float(
        max((ln_norm - 1).abs()[big_inputs].max(), (rms_norm - 1).abs()[big_inputs].max())
    ),
    below=1e-3,
    spec=".2g",
)
# the formula above, evaluated: at scale 1e-3 the variance 1e-6 is a tenth of eps = 1e-5
print(f"tiny inputs (scale 1e-3): |LN(x)|/sqrt(d) = {float(ln_norm[0]):.2f}")
ln_mean = float(ln(x).mean(dim=1).abs().max())
rms_mean = float(rms(x).mean(dim=1).abs().min())
print(
    f"|mean entry| of the outputs: LayerNorm {hamlib.below(ln_mean, 1e-12)}, "
    f"RMSNorm >= {rms_mean:.2f}"
)
# LayerNorm subtracts the mean by construction: the printed zero is a consequence, not a finding

# %%
fig, ax = plt.subplots()
# two methods: the first two colours of the book's cycle (COLORS["reference"] means a reference)
ax.semilogx(scales, ln_norm, "o", color=CYCLE[0], label="LayerNorm (measured)")
ax.semilogx(scales, rms_norm, "x", color=CYCLE[1], label="RMSNorm (measured)")
ax.semilogx(
    scales, formula, "--", color=COLORS["theory"], label=r"$\sqrt{\sigma^2/(\sigma^2+\varepsilon)}$"
)
ax.set(
    xlabel="scale of the input (std of its entries)",
    ylabel=r"$\|\mathrm{norm}(x)\| / \sqrt{d}$",
    title=r"Normalized activations sit on the $\sqrt{d}$ sphere (d = 512)",
)
ax.legend()
plt.show()

# %% [markdown]
# The practical consequence: a linear layer $W$ initialised with entries of variance $1/d$ maps a
# vector on the $\sqrt d$ sphere to outputs of variance $\|x\|^2/d = 1$, whatever happened
# upstream. Without normalization the scale of each layer's input is whatever the previous
# layers made it. One such layer, applied to the inputs above with and without LayerNorm:

# %%
W = torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(11)) / d**0.5
with torch.no_grad():
    out_ln, out_raw = (ln(x) @ W.T).var(dim=1), (x @ W.T).var(dim=1)
for i in [0, 12, 24]:
    print(
        f"input scale {scales[i]:8.3g}: output variance {out_ln[i]:.3g} after LayerNorm, "
        f"{out_raw[i]:.3g} without"
    )
# the variance of d = 512 Gaussian outputs has a relative standard error of sqrt(2 / d)
hamlib.check(
    "after LayerNorm the layer's outputs have variance 1 for every input scale >= 0.1 "
    "(largest gap, in standard errors)",
    measured=float((out_ln[big_inputs] - 1).abs().max()) / math.sqrt(2 / d),
    below=4,
    spec=".2f",
)

# %% [markdown]
# ## 1.8 Claims in circulation
#
# **"In 10,000 dimensions, 100% of random vector pairs are nearly orthogonal ($|\cos| < 0.1$)."**
# For isotropic random vectors $(1 + \cos\theta)/2$ has a
# Beta$\left(\frac{d-1}2, \frac{d-1}2\right)$ distribution, so the probability of the complement
# can be computed exactly rather than sampled:

# %%
print(
    f"{'d':>6} {'P(|cos| >= 0.1)':>17} {'bound 2e^(-d/200)':>18} {'P(|cos| < 0.1)':>16}"
    f" {'P(|cos| < 0.01)':>17}"
)
cap_ratio = {}
for d in [3, 10, 100, 1000, 10_000]:
    p_tail = geometry.cosine_tail_probability(d, 0.1)
    p_near = 1 - geometry.cosine_tail_probability(d, 0.01)
    cap_bound = 2 * math.exp(-d * 0.1**2 / 2)
    cap_ratio[d] = p_tail / cap_bound
    print(f"{d:6d} {p_tail:17.3g} {cap_bound:18.3g} {1 - p_tail:16.6f} {p_near:17.3f}")
big = geometry.cosine_similarity_stats(10_000, 10_000, generator=torch.Generator().manual_seed(7))
print(f"sampled: 10,000 pairs in d = 10,000, largest |cos| = {big.max_abs:.3f}")

# %%
p = geometry.cosine_tail_probability(10_000, 0.1)
print(f"in d = 10,000: P(|cos| >= 0.1) = {p:.2g}, positive, though far below anything sampled")
hamlib.check("in d = 10,000, P(|cos| >= 0.1) is below 1e-22", measured=p, below=1e-22)
hamlib.check(
    "in d = 10,000, none of 10,000 sampled pairs reaches |cos| = 0.1 (largest)",
    measured=big.max_abs,
    below=0.1,
)
# "about a third / two thirds": 0.02 is the resolution of "about" (0.31 to 0.35, 0.65 to 0.69)
hamlib.check(
    "in d = 100 the same threshold fails for about a third of pairs (1/3 to 0.02)",
    measured=geometry.cosine_tail_probability(100, 0.1),
    target=1 / 3,
    tol=0.02,
)
hamlib.check(
    "in d = 10,000, |cos| < 0.01 holds for only about two thirds of pairs (2/3 to 0.02)",
    measured=1 - geometry.cosine_tail_probability(10_000, 0.01),
    target=2 / 3,
    tol=0.02,
)
one_sd = {d: 1 - geometry.cosine_tail_probability(d, 1 / math.sqrt(d)) for d in [100, 10**4, 10**6]}
print("P(|cos| < 1/sqrt(d)):", {d: round(p, 4) for d, p in one_sd.items()})
hamlib.check(
    "a threshold of one standard deviation, |cos| < 1/sqrt(d), holds for 68.3% of pairs "
    "(to 2 phi(1)/d at d = 100) in every d from 100 to 10^6 (largest gap)",
    measured=max(abs(p - (2 * stats.norm.cdf(1) - 1)) for p in one_sd.values()),
    # the Beta law's kurtosis 3 - 6/(d + 2) moves P by about phi(1)/d (Edgeworth): allow twice
    # that at the smallest d
    below=2 * stats.norm.pdf(1) / 100,
    spec=".2g",
)
# a theorem (Ball, 1997), so a comparison to print, not a claim to verify
print("bound / exact tail at t = 0.1:", {d: round(1 / r, 1) for d, r in cap_ratio.items()})
# the seed's "d = 3 gives 10-20% nearly orthogonal": in R^3 the cosine is uniform on [-1, 1]
gen3 = torch.Generator().manual_seed(3)
u3 = torch.nn.functional.normalize(torch.randn(2, 20_000, 3, generator=gen3), dim=2)
share_3 = float(((u3[0] * u3[1]).sum(dim=1).abs() < 0.1).double().mean())
exact_3 = 1 - geometry.cosine_tail_probability(3, 0.1)
print(f"d = 3: exact share with |cos| < 0.1 = {exact_3:.3f}, sampled (20,000 pairs) {share_3:.4f}")
hamlib.check(
    "in d = 3 the sampled share of pairs with |cos| < 0.1 is 0.1 (3 binomial standard errors)",
    measured=share_3,
    target=0.1,
    tol=3 * math.sqrt(0.1 * 0.9 / 20_000),
)

# %% [markdown]
# **Verdict: true in every practical sense, false as stated.** The fraction is $1 - 1.2\times
# 10^{-23}$, not 100%; no experiment will ever see the difference. But "nearly orthogonal" is only
# meaningful relative to the natural scale of the cosine, $1/\sqrt d$, which is $0.01$ at
# $d = 10{,}000$: against a threshold of $0.01$ only about two thirds of pairs qualify, and in
# *every* large dimension a threshold of one $1/\sqrt d$ is met by the same 68% of pairs. The
# claim's $0.1$ is ten standard deviations out at $d = 10{,}000$; that, not some exact
# orthogonality of high-dimensional space, is why the fraction is so close to 100%.
#
# Two more things the table shows. The bound column is the spherical-cap bound
# $P(|\cos\theta| \ge t) \le 2e^{-dt^2/2}$ (Ball, 1997, Lemma 2.2), the kind
# of inequality one carries in one's head: it holds in every row, but for $d \le 100$ at
# $t = 0.1$ it exceeds 1 and says nothing, and where it does say something it overstates the
# exact tail by a factor of 9 ($d = 1000$) to 32 ($d = 10{,}000$) (printed above), small next to
# the exponential
# it captures. And the companion claim that "$d = 3$ gives
# 10–20% nearly orthogonal pairs" has an exact answer: in $\mathbb R^3$ the cosine of a random
# pair is uniform on $[-1, 1]$ (Archimedes' hat-box theorem), so $P(|\cos\theta| < 0.1) = 0.1$
# exactly, the low end of the claimed range, as sampling confirms.
#
# **"Gaussian mass concentrates at radius $\sqrt d$."** What holds exactly: $\|x\|^2 \sim \chi^2_d$.
# We compute, from the $\chi$ distribution, the probability of the shell
# $\sqrt d - 1 \le \|x\| \le \sqrt d + 1$, the relative width of the distribution, and how the
# density at the origin compares with the density at a typical point:

# %%
print(
    f"{'d':>6} {'P(|x| in sqrt(d) +- 1)':>23} {'std/mean':>9} {'E|x| - sqrt(d)':>15}"
    f" {'log10 p(0)/p(shell)':>20}"
)
shell_mass = {}
for d in [10, 100, 1000, 10_000]:
    chi = stats.chi(d)
    shell_mass[d] = chi.cdf(math.sqrt(d) + 1) - chi.cdf(math.sqrt(d) - 1)
    mean, std = geometry.gaussian_norm_moments(d)
    print(
        f"{d:6d} {shell_mass[d]:23.4f} {std / mean:9.4f} {mean - math.sqrt(d):15.4f}"
        f" {d / 2 / math.log(10):20.1f}"
    )

# %%
limit = 2 * stats.norm.cdf(math.sqrt(2)) - 1  # P(|Z| < sqrt 2), Z standard normal
hamlib.check(
    "a shell of fixed width 2 around sqrt(d) holds P(|Z| < sqrt(2)) = 0.843 of the mass, "
    "not 100%, for d = 100 ... 10,000 (largest gap)",
    measured=max(abs(shell_mass[d] - limit) for d in [100, 1000, 10_000]),
    # on a symmetric interval the skewness term of the Edgeworth expansion cancels: the gap is
    # O(1/d), and 0.002 allows a coefficient of 0.2 at d = 100
    below=0.002,
    spec=".2g",
)
hamlib.check(
    "the mean norm is below sqrt(d) by 1/(4 sqrt(d)), within twice the next term 1/(8d) at d = 10, "
    "for d >= 10 "
    "(largest relative gap)",
    measured=max(
        abs((math.sqrt(d) - geometry.gaussian_norm_moments(d)[0]) * 4 * math.sqrt(d) - 1)
        for d in [10, 100, 1000, 10_000]
    ),
    below=2 / (8 * 10),
    spec=".2g",
)

# %% [markdown]
# The inequality behind this is dimension-free. $\|x\|$ is a 1-Lipschitz function of $x$, so
# Gaussian concentration, with the exact constant of Tsirelson, Ibragimov and Sudakov
# (Boucheron, Lugosi & Massart, 2013, Thm 5.6), gives
# $P(|\,\|x\| - \mathbb E\|x\|\,| \ge t) \le 2e^{-t^2/2}$ in every dimension. Against the exact
# $\chi$ tails:

# %%
print(f"{'d':>6} {'t = 1':>9} {'t = 2':>9} {'t = 3':>9}   (exact P(| |x| - E|x| | >= t))")
lipschitz_ratio = []
for d in [10, 1000, 10_000]:
    chi, mean = stats.chi(d), geometry.gaussian_norm_moments(d)[0]
    tails = [chi.sf(mean + t) + chi.cdf(mean - t) for t in (1, 2, 3)]
    lipschitz_ratio += [
        p / (2 * math.exp(-(t**2) / 2)) for p, t in zip(tails, (1, 2, 3), strict=True)
    ]
    print(f"{d:6d} " + " ".join(f"{p:9.2g}" for p in tails))
print(f"{'bound':>6} " + " ".join(f"{2 * math.exp(-(t**2) / 2):9.2g}" for t in (1, 2, 3)))
# a theorem, so printed as a comparison: how many times the exact tail the bound is
print("bound / exact tail at t = 2:", [round(1 / r) for r in lipschitz_ratio[1::3]])
# the factor at t = 2, split: the variance proxy (1 instead of 1/2) costs e^(t^2/2); the rest is
# the gap between 2 e^(-s^2/2) and the Gaussian tail 2 P(Z >= s) at s = t sqrt(2)
tail_half = 2 * stats.norm.sf(2 * math.sqrt(2))  # P(|N(0, 1/2)| >= 2), the limit law of |x|
print(
    f"P(|N(0, 1/2)| >= 2) = {tail_half:.2g}: bound / it = {2 * math.exp(-2) / tail_half:.0f}",
    end="",
)
print(f" = {math.exp(2):.1f} (variance proxy) x {2 * math.exp(-4) / tail_half:.1f} (prefactor)")

# %% [markdown]
# The exact tails hardly change from $d = 10$ to $d = 10{,}000$, and the bound, which does not
# depend on $d$ at all, covers them all with one curve. It is loose: at $t = 2$ it is tens of
# times the exact tail (printed above). Part of that is its variance proxy ($\|x\|$ has variance
# $1/2$, the bound's exponent assumes 1), a factor $e^{t^2/2}$; the rest is the missing
# prefactor of the Gaussian tail, which decays like $e^{-s^2/2}/s$, not $e^{-s^2/2}$. At $t = 1$
# the bound exceeds 1 and says nothing.
#
# **Verdict: true in the relative sense, and only there.** The norm divided by $\sqrt d$ tends to
# 1, its relative spread falls like $1/\sqrt{2d}$, but the shell's absolute thickness does not
# shrink: since $\|x\| - \sqrt d$ tends to $\mathcal N(0, \tfrac12)$, a band of fixed width 2
# around $\sqrt d$ keeps holding $P(|Z| < \sqrt 2) \approx 84\%$ of the mass, for every large
# $d$. And "mass" is not "density": the density is largest at the origin, where it exceeds the
# density on the typical shell by a factor $e^{d/2}$ (the last column above, in powers of ten),
# yet almost no samples land near it. The most likely *point* is not where the samples
# are; this is why, for example, the mode of a high-dimensional posterior can be a poor summary
# of it.
#
# ## Summary
#
# The chapter verified the following claims; each line was checked by the code that printed it.

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - A. Blum, J. Hopcroft, R. Kannan. *Foundations of Data Science*, ch. 2. Cambridge University
#   Press, 2020.
# - R. Vershynin. *High-Dimensional Probability*. Cambridge University Press, 2018.
# - K. Ball. An elementary introduction to modern convex geometry. In *Flavors of Geometry*,
#   MSRI Publications 31, 1997.
# - S. Boucheron, G. Lugosi, P. Massart. *Concentration Inequalities*. Oxford University Press,
#   2013.
# - Z. Šidák. Rectangular confidence regions for the means of multivariate normal distributions.
#   *Journal of the American Statistical Association* 62(318), 1967.
# - K. Beyer, J. Goldstein, R. Ramakrishnan, U. Shaft. When is "nearest neighbor" meaningful?
#   *ICDT*, 1999.
# - C. C. Aggarwal, A. Hinneburg, D. A. Keim. On the surprising behavior of distance metrics in
#   high dimensional space. *ICDT*, 2001.
# - W. B. Johnson, J. Lindenstrauss. Extensions of Lipschitz mappings into a Hilbert space.
#   *Contemporary Mathematics* 26, 1984.
# - S. Dasgupta, A. Gupta. An elementary proof of a theorem of Johnson and Lindenstrauss.
#   *Random Structures & Algorithms* 22(1), 2003.
# - D. Achlioptas. Database-friendly random projections: Johnson–Lindenstrauss with binary coins.
#   *Journal of Computer and System Sciences* 66(4), 2003.
# - K. G. Larsen, J. Nelson. Optimality of the Johnson–Lindenstrauss lemma. *FOCS*, 2017.
# - T. M. Cover. Geometrical and statistical properties of systems of linear inequalities with
#   applications in pattern recognition. *IEEE Trans. Electronic Computers* 14(3), 1965.
# - E. Facco, M. d'Errico, A. Rodriguez, A. Laio. Estimating the intrinsic dimension of datasets
#   by a minimal neighborhood information. *Scientific Reports* 7, 12140, 2017.
# - E. Levina, P. J. Bickel. Maximum likelihood estimation of intrinsic dimension. *NeurIPS*, 2004.
# - D. J. C. MacKay, Z. Ghahramani. Comments on "Maximum likelihood estimation of intrinsic
#   dimension" by E. Levina and P. Bickel, 2005.
# - J. L. Ba, J. R. Kiros, G. E. Hinton. Layer normalization. arXiv:1607.06450, 2016.
# - A. Vaswani et al. Attention is all you need. *NeurIPS*, 2017.
# - B. Zhang, R. Sennrich. Root mean square layer normalization. *NeurIPS*, 2019.
#
# ## Exercises
#
# **1. The peel, to first order.** Show that $f(d, \epsilon) \approx d\epsilon$ for
# $\epsilon \ll 1/d$, and relate it to the surface area $S_{d-1} = d\,V_d$. Check it numerically.
#
# ```{admonition} Solution
# :class: dropdown
# $1 - (1-\epsilon)^d = d\epsilon - \binom d2 \epsilon^2 + \dots$, so the peel holds $d\epsilon$ of
# the volume while $d\epsilon \ll 1$. Equivalently, a peel of thickness $\epsilon$ has volume
# $\approx S_{d-1}\,\epsilon = d V_d\,\epsilon$. The cell below checks the ratio for $d = 1000$,
# and that its gap to 1 is the next term, $(d-1)\epsilon/2$.
# ```

# %% tags=["hide-cell"]
ratios = [geometry.shell_fraction(1000, eps) / (1000 * eps) for eps in [1e-5, 1e-6, 1e-7]]
print([f"{r:.6f}" for r in ratios])
hamlib.check(
    "exercise 1: f(1000, eps) / (1000 eps) rises toward 1 as eps falls",
    ratios[0] < ratios[1] < ratios[2],
)
# the next term of the expansion: 1 - ratio = (d - 1) eps / 2 + O((d eps)^2)
hamlib.check(
    "exercise 1: at eps = 1e-7, 1 - ratio equals the second-order term (d - 1) eps / 2 "
    "(ratio of the two)",
    measured=(1 - ratios[-1]) / (999 * 1e-7 / 2),
    target=1,
    tol=0.01,
    spec=".4f",
)

# %% [markdown]
# **2. Which dimension makes $|\cos| < 0.1$ hold for 99% of random pairs?** Find the smallest $d$
# with `geometry.cosine_tail_probability`, and compare with the Gaussian approximation
# $\cos\theta \approx \mathcal N(0, 1/d)$.
#
# ```{admonition} Solution
# :class: dropdown
# Scan $d$ upward until the tail probability drops below 1%. The Gaussian approximation asks for
# $2\Phi(-0.1\sqrt d) \le 0.01$, i.e. $\sqrt d \ge 25.76$, $d \ge 664$; the exact answer, printed
# below, is within a few dimensions of it.
# ```

# %% tags=["hide-cell"]
d_exact = next(d for d in range(2, 5000) if geometry.cosine_tail_probability(d, 0.1) <= 0.01)
d_gauss = math.ceil((stats.norm.isf(0.005) / 0.1) ** 2)
print(f"exact: d = {d_exact}; Gaussian approximation: d = {d_gauss}")
hamlib.check(
    "exercise 2: exact and Gaussian answers agree within 1% (relative gap)",
    measured=abs(d_exact - d_gauss) / d_gauss,
    below=0.01,
    spec=".2g",
)

# %% [markdown]
# **3. Averaging the other way.** MacKay & Ghahramani (2005) suggest averaging the *inverse* local
# estimates $1/\hat m_k(x)$ over the data and inverting at the end. Implement it with
# `scipy.spatial.cKDTree`, check it against `geometry.mle_dimension(X, average="inverses")`, and
# compare it on the 10-dimensional subspace with the plain average and with the plain average
# corrected by $(k-2)/(k-1)$. Which is closer to 10, and why?
#
# ```{admonition} Solution
# :class: dropdown
# Averaging inverses is the maximum-likelihood answer when all points share one dimension: each
# $1/\hat m_k(x)$ is a mean of $k - 1$ exponential variables with mean $1/d$, so it is unbiased
# for $1/d$. Averaging $\hat m_k$ instead carries the Gamma factor $(k-1)/(k-2) = 9/8$ of section
# 1.6 (and, by Jensen's inequality, is never below the average of inverses). Removing that factor
# from the plain average gives nearly the MG estimate, and both lie *below* 10, so the plain
# average is the one closest to 10 (printed below), for the wrong reason: the plain
# average's apparent accuracy came from its upward factor offsetting the real bias on this data,
# the non-uniform density at the scale of the 10th neighbour, which pulls every estimator down.
# ```


# %% tags=["hide-cell"]
def mle_dimension_inverse_average(X, k=10):
    T, _ = cKDTree(X).query(X, k=k + 1)
    T = T[:, 1:]
    inv = np.log(T[:, -1:] / T[:, :-1]).sum(axis=1) / (k - 1)
    return 1.0 / inv.mean()


X10 = subspace_10_in_100(0)
lb, mg = geometry.mle_dimension(X10, k=10), mle_dimension_inverse_average(X10)
print(f"Levina-Bickel: {lb:.2f}   corrected by 8/9: {lb * 8 / 9:.2f}   MacKay-Ghahramani: {mg:.2f}")
hamlib.check(
    "exercise 3: the hand-written MG estimate equals hamlib's to 1e-12",
    abs(mg - geometry.mle_dimension(X10, k=10, average="inverses")) < 1e-12,
)
hamlib.check(
    "exercise 3: with the 9/8 factor removed, the plain average is below 10 too",
    measured=lb * 8 / 9,
    below=10,
)
hamlib.check("exercise 3: MG is below 10", measured=mg, below=10)

# %% [markdown]
# **4. Why $d = 5$?** Using $V_d = \frac{2\pi}{d}V_{d-2}$, explain why the volume of the unit ball
# increases up to $d = 5$ and decreases after, and why the maximum is not at $d = 6$.
#
# ```{admonition} Solution
# :class: dropdown
# Within each parity the sequence grows while $2\pi/d > 1$, i.e. up to $d = 6$ for even and $d = 5$
# for odd dimensions, and then shrinks for good. The maximum is the larger of $V_5$ and $V_6$:
# $V_5 = 8\pi^2/15 \approx 5.264$ and $V_6 = \pi^3/6 \approx 5.168$.
# ```

# %% tags=["hide-cell"]
v = {d: geometry.ball_volume(d) for d in range(1, 9)}
print({d: round(x, 3) for d, x in v.items()})
# the closed forms, compared (true by the Gamma function's values, not a claim to verify)
print(
    f"V_5 = {v[5]:.6f}, 8 pi^2 / 15 = {8 * math.pi**2 / 15:.6f}; "
    f"V_6 = {v[6]:.6f}, pi^3 / 6 = {math.pi**3 / 6:.6f}"
)

# %% [markdown]
# **5. Sparse random projections.** Achlioptas (2003) replaces the Gaussian entries of $G$ by
# $\sqrt 3 \cdot \{+1, 0, -1\}$ with probabilities $\{1/6, 2/3, 1/6\}$: two thirds of the matrix
# is zero, so projecting costs a third of the multiplications. Implement it, project the 100
# points `X_jl` of section 1.5 (in their original 2,000 coordinates: the rotation argument used
# there holds only for Gaussian matrices) to $k = 500$ dimensions with 40 draws, and compare the
# median worst distortion with the Gaussian projection's.
#
# ```{admonition} Solution
# :class: dropdown
# Each entry has mean 0 and variance 1, so $\mathbb E\|Pv\|^2 = \|v\|^2$ as before, and
# Achlioptas showed that every moment of $\|Pv\|^2$ is at most the Gaussian one, so the
# Johnson–Lindenstrauss bound holds unchanged. The cell below finds the two medians equal within
# three standard errors.
# ```


# %% tags=["hide-cell"]
def sparse_jl_distortion(X, k, gen):
    signs = gen.choice([-1.0, 0.0, 1.0], p=[1 / 6, 2 / 3, 1 / 6], size=(X.shape[1], k))
    Y = X @ (signs * math.sqrt(3 / k))
    return float(np.max(np.abs(pdist(Y, "sqeuclidean") / pdist(X, "sqeuclidean") - 1)))


gen_sparse = np.random.default_rng(5)
sparse = np.array([sparse_jl_distortion(X_jl, 500, gen_sparse) for _ in range(n_draws)])
gauss = worst[500]
se_gap = 1.25 * math.hypot(sparse.std(ddof=1), gauss.std(ddof=1)) / math.sqrt(n_draws)
print(f"median worst distortion at k = 500: sparse {np.median(sparse):.3f}, ", end="")
print(f"Gaussian {np.median(gauss):.3f}")
hamlib.check(
    "exercise 5: sparse and Gaussian projections give the same median worst distortion "
    "(gap, in standard errors)",
    measured=abs(np.median(sparse) - np.median(gauss)) / se_gap,
    below=3,
    spec=".2f",
)

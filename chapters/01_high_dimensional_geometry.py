# %% [markdown]
# # 1. High-dimensional geometry
#
# Deep networks live in spaces of hundreds to thousands of dimensions, and those spaces do not
# behave like the plane on your desk. This chapter measures how they behave instead: where the
# volume of a ball goes, why random vectors are almost orthogonal, why distances stop telling
# points apart, why random projections work anyway, and why real data escapes the curse by being
# low-dimensional after all.
#
# **You will be able to** compute volumes and concentration bounds exactly (in log space, for any
# dimension); predict the cosine between random vectors and the spread of a Gaussian's norm;
# choose a random-projection dimension from the Johnson–Lindenstrauss lemma and check it; and
# estimate the intrinsic dimension of a data set with two estimators, with error bars.
#
# **Run time:** under a minute on two CPU cores (the last code cell prints the measured time).
# Every number below is printed by the code above it, and every claim is checked by
# `hamlib.check`, which stops the chapter if the claim is false.

# %%
import hamlib

hamlib.setup()

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats
from scipy.spatial import cKDTree
from sklearn.datasets import load_digits, make_swiss_roll

from hamlib import geometry
from hamlib.plotting import COLORS

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
hamlib.check("the unit ball's volume is largest in d = 5", int(np.argmax(volumes)) == 5)
se_ok = all(
    abs(mc_shares[d] - shares[d])
    < 4 * math.sqrt(max(shares[d] * (1 - shares[d]), 0) / n_mc) + 1e-12
    for d in mc_shares
)
hamlib.check("Monte Carlo agrees with the formula within 4 standard errors (d <= 10)", se_ok)
hamlib.check("in d = 20 the ball fills less than 1/10,000 of its cube", shares[20] < 1e-4)
hamlib.check(
    "V_1000 underflows to 0.0, but its log is finite",
    geometry.ball_volume(1000) == 0.0 and math.isfinite(geometry.log_ball_volume(1000)),
)
print(f"log10 V_1000 = {geometry.log_ball_volume(1000) / math.log(10):.1f}")

# %% [markdown]
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
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
d_axis = np.arange(1, 101)
ax1.plot(
    d_axis,
    [geometry.log_ball_volume(int(d)) / math.log(10) for d in d_axis],
    color=COLORS["measured"],
    label="unit ball $V_d$",
)
ax1.plot(d_axis, d_axis * math.log10(2), color=COLORS["theory"], ls="--", label="cube $2^d$")
ax1.set(xlabel="dimension d", ylabel="log$_{10}$ volume", title="The ball's volume peaks at d = 5")
ax1.legend()
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
    "in d = 1000 more than 99.99% of the ball is within 1% of its surface",
    geometry.shell_fraction(1000, 0.01) > 0.9999,
)
hamlib.check(
    "half the volume is in the outer 1% exactly from d = 69 on",
    geometry.shell_fraction(68, 0.01) < 0.5 < geometry.shell_fraction(69, 0.01),
)

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
for d in dims[1:]:
    ax1.hist(
        norms[d] / math.sqrt(d),
        bins=np.linspace(0.7, 1.3, 61),
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
    title="Relative to the radius, the shell gets thinner",
)
ax2.set(
    xlabel=r"$\|x\| - \sqrt{d}$", ylabel="density", title="In absolute terms, its width stays ~0.71"
)
ax1.legend()
ax2.legend()
plt.show()

# %%
close = all(
    abs(norms[d].std(ddof=1) / geometry.gaussian_norm_moments(d)[1] - 1) < 0.06 for d in dims
)
hamlib.check("the measured spread of |x| matches the exact chi standard deviation within 6%", close)
hamlib.check(
    "the exact spread of |x| tends to 1/sqrt(2): within 0.1% at d = 10,000",
    abs(geometry.gaussian_norm_moments(10_000)[1] * math.sqrt(2) - 1) < 1e-3,
)
hamlib.check(
    "at d = 10,000 all 2,000 samples have |x|/sqrt(d) within 3% of 1",
    bool(np.all(np.abs(norms[10_000] / 100 - 1) < 0.03)),
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
hamlib.check(
    "measured std of the cosine is within 5% of 1/sqrt(d) for d = 2 ... 10,000",
    all(abs(cos_stats[d].std * math.sqrt(d) - 1) < 0.05 for d in cos_dims),
)

# %% [markdown]
# This is why freshly initialised embeddings are nearly orthogonal. A table of 1,000 token
# embeddings of width 512, initialised as `torch.nn.Embedding` does ($\mathcal N(0, 1)$ entries),
# has about half a million pairs. The largest $|\cos|$ among them is an extreme value of roughly
# Gaussian variables with standard deviation $1/\sqrt{d}$, so it should be near
# $\sqrt{2\ln(\text{pairs})/d}$:

# %%
emb = torch.nn.Embedding(1000, 512)
with torch.no_grad():
    unit = torch.nn.functional.normalize(emb.weight, dim=1)
    cos = unit @ unit.T
pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
predicted = math.sqrt(2 * math.log(pairs.numel()) / 512)
print(f"pairs: {pairs.numel()}, max |cos| = {pairs.abs().max():.3f}, predicted ~ {predicted:.3f}")
hamlib.check(
    "no two of 1,000 random 512-d embeddings have |cos| above 0.3", bool(pairs.abs().max() < 0.3)
)

# %% [markdown]
# ## 1.4 Distances concentrate
#
# Take $n$ points uniformly in the cube $[0, 1]^d$ and a query point. The squared distance to each
# point is a sum of $d$ independent terms, so by the same concentration argument all distances are
# close to their common mean, $\sqrt{d/6}$, with a spread that does not grow with $d$. The
# *relative contrast* between the farthest and the nearest neighbour,
# $(D_{\max} - D_{\min})/D_{\min}$, then decays like $1/\sqrt d$ (Beyer et al., 1999;
# Aggarwal et al., 2001):

# %%
contrast_dims = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
contrast = {}
for d in contrast_dims:
    points = rng.uniform(size=(1000, d))
    queries = rng.uniform(size=(20, d))
    contrast[d] = np.mean([geometry.relative_contrast(points, q) for q in queries])
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
ref = contrast[100] * math.sqrt(100)
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
    "in d = 1000 the farthest point is less than 30% farther than the nearest", contrast[1000] < 0.3
)

# %% [markdown]
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
    "in d = 1000 over 90% of points are within 10% of the nearest distance; in d = 2 under 1%",
    np.mean(near) > 0.9 and near_2 < 0.01,
)

# %% [markdown]
# For *uniform* data in high dimension, "nearest neighbour" therefore carries little information:
# almost every point is nearly as near as the nearest. Real data is not uniform: section 1.6
# shows it occupies far fewer dimensions than it is written in, which is why nearest-neighbour
# search and kernels still work on images.
#
# **Try it: one dimension at a time.** The facts so far, drawn for a single $d$ on fixed axes:
# the norm of a Gaussian vector relative to $\sqrt d$, the cosine between random directions, and
# the distances from a query to 500 uniform points in the cube relative to $\sqrt{d/6}$. In
# JupyterLab the slider redraws the figure: watch all three histograms collapse onto a spike as
# $d$ grows. (The figure draws with its own seed for each $d$, so moving the slider changes no
# other number in the chapter.)


# %%
def draw_dimension(d):
    gen = np.random.default_rng(d)
    x = gen.standard_normal((2000, d))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cube = gen.uniform(size=(500, d))
    panels = [
        (np.linalg.norm(x, axis=1) / math.sqrt(d), (0, 2.5), r"$\|x\| / \sqrt{d}$, Gaussian $x$"),
        (np.sum(u[:1000] * u[1000:], axis=1), (-1, 1), r"$\cos\theta$ of random pairs"),
        (
            np.linalg.norm(cube - gen.uniform(size=d), axis=1) / math.sqrt(d / 6),
            (0, 2.5),
            r"distance / $\sqrt{d/6}$ in the cube",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (values, span, label) in zip(axes, panels, strict=True):
        ax.hist(values, bins=np.linspace(*span, 51), color=COLORS["measured"])
        ax.set(xlabel=label, xlim=span, yticks=[])
    axes[0].set_ylabel("count")
    fig.suptitle(f"d = {d}: norms, angles and distances concentrate")


hamlib.plotting.explore(
    draw_dimension, {"d": [1, 2, 3, 5, 10, 30, 100, 300, 1000, 3000, 10_000]}, {"d": 100}
)

# %% [markdown]
# ## 1.5 Random projections keep distances: Johnson–Lindenstrauss
#
# The same concentration that makes distances alike makes random projections faithful. Project
# with $P = G/\sqrt k$, $G_{ij} \sim \mathcal N(0,1)$: for a fixed vector $v$, $\|Pv\|^2/\|v\|^2$
# is $\chi^2_k/k$, within $1 \pm \epsilon$ except with probability $\le 2e^{-k(\epsilon^2/2 -
# \epsilon^3/3)/2}$. Choose $k$ so that this is at most $2/n^2$ for each of the $\binom n2$ pairs
# of $n$ points; a union bound then says one projection keeps *all* distances within
# $1 \pm \epsilon$ with probability at least $1/n$. That is small, but it is positive, so such a
# projection exists, and drawing a few is enough. This is the Johnson–Lindenstrauss dimension in
# the form of Dasgupta & Gupta (2003):

# %%
hamlib.show_source(geometry.jl_min_dimension)

# %% [markdown]
# The bound depends on the number of points and on $\epsilon$, not on the original dimension. We
# project 100 Gaussian points from $\mathbb R^{2000}$ to $k$ dimensions and record the worst
# distortion of any of the 4,950 squared distances, for three random projections at each $k$:

# %%
X_jl = rng.standard_normal((100, 2000))
ks = [10, 20, 50, 100, 200, 500, 1000, 2000]
distortion = {
    k: [geometry.jl_distortion(X_jl, k, torch.Generator().manual_seed(s)) for s in range(3)]
    for k in ks
}
for eps in [0.5, 0.2]:
    k_jl = geometry.jl_min_dimension(100, eps)
    worst = max(
        geometry.jl_distortion(X_jl, k_jl, torch.Generator().manual_seed(s)) for s in range(3)
    )
    print(f"eps = {eps}: JL bound k = {k_jl}, worst measured distortion there = {worst:.3f}")
    hamlib.check(
        f"at the JL dimension for eps = {eps}, all distances are kept within eps", worst < eps
    )

# %%
fig, ax = plt.subplots()
ax.loglog(
    ks,
    [max(distortion[k]) for k in ks],
    "o-",
    color=COLORS["measured"],
    label="worst pair, worst of 3 projections",
)
eps_grid = np.linspace(0.1, 0.9, 50)
ax.loglog(
    [geometry.jl_min_dimension(100, float(e)) for e in eps_grid],
    eps_grid,
    "--",
    color=COLORS["theory"],
    label="JL guarantee (Dasgupta–Gupta)",
)
ax.set(
    xlabel="target dimension k",
    ylabel=r"max relative distortion $\epsilon$",
    title="100 points: measured distortion vs the JL guarantee",
)
ax.legend()
plt.show()

# %% [markdown]
# The measured curve lies below the guarantee. By how much? For each $\epsilon$, scan $k$ upward
# on a fine grid and record the first $k$ at which all three projections keep every distance
# within $\epsilon$:

# %%
slack = {}
for eps in hamlib.progress([0.5, 0.2], desc="scanning k"):
    k_jl = geometry.jl_min_dimension(100, eps)
    grid = np.unique(np.geomspace(k_jl / 10, k_jl, 30).astype(int))
    k_needed = next(
        int(k)
        for k in grid
        if max(
            geometry.jl_distortion(X_jl, int(k), torch.Generator().manual_seed(s)) for s in range(3)
        )
        < eps
    )
    slack[eps] = k_jl / k_needed
    print(
        f"eps = {eps}: guarantee k = {k_jl}, sufficient here k = {k_needed}, ratio {slack[eps]:.2f}"
    )
hamlib.check(
    "for 100 points the JL guarantee asks for between 1x and 3x the k that sufficed",
    all(1 <= r <= 3 for r in slack.values()),
)

# %% [markdown]
# The guarantee is conservative, but only modestly so for a hundred points: the union bound over
# pairs costs a small factor in $k$, not orders of magnitude. It holds for every point set, and
# Gaussian points are a typical one, not a worst case.
#
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

# %%
hamlib.show_source(geometry.twonn_dimension)

# %% [markdown]
# Three data sets, each with five random draws (for the digits, five random 80% subsets; the
# estimators need distinct points, so duplicate images would have to be removed first, and the
# printed count shows there are none):
# a Swiss roll (a 2-D sheet rolled up in $\mathbb R^3$), a random 10-dimensional linear subspace
# of $\mathbb R^{100}$ with Gaussian coordinates, and scikit-learn's 1,797 handwritten 8×8 digits
# (64 pixels).


# %%
def swiss_roll(seed):
    return make_swiss_roll(2000, random_state=seed)[0]


def subspace_10_in_100(seed):
    r = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(r.standard_normal((100, 10)))
    return r.standard_normal((2000, 10)) @ basis.T


digits = np.unique(load_digits().data, axis=0)


def digits_subset(seed):
    r = np.random.default_rng(seed)
    return digits[r.choice(len(digits), size=int(0.8 * len(digits)), replace=False)]


# %%
datasets = {
    "Swiss roll (R^3)": swiss_roll,
    "10-d subspace (R^100)": subspace_10_in_100,
    "8x8 digits (R^64)": digits_subset,
}
estimates = {}
for name, make in hamlib.progress(datasets.items(), desc="estimating"):
    samples = [make(seed) for seed in range(5)]
    estimates[name] = {
        "TwoNN": np.array([geometry.twonn_dimension(X) for X in samples]),
        "MLE k=10": np.array([geometry.mle_dimension(X, k=10) for X in samples]),
    }
print(f"digits: {len(load_digits().data)} images, {len(digits)} distinct")
print(f"{'data set':<24}{'TwoNN':>14}{'MLE (k=10)':>16}")
for name, est in estimates.items():
    t, m = est["TwoNN"], est["MLE k=10"]
    print(f"{name:<24}{t.mean():8.2f} ± {t.std(ddof=1):.2f}{m.mean():10.2f} ± {m.std(ddof=1):.2f}")

# %%
swiss, sub10, dig = (estimates[k] for k in datasets)
hamlib.check(
    "both estimators find the Swiss roll about 2-dimensional (1.7 to 2.3)",
    all(1.7 < e.mean() < 2.3 for e in swiss.values()),
)
hamlib.check(
    "both estimators find the 10-d subspace between 9 and 11",
    all(9 < e.mean() < 11 for e in sub10.values()),
)
hamlib.check(
    "the digits' intrinsic dimension is below 15, far below their 64 pixels",
    all(e.mean() < 15 for e in dig.values()),
)
hamlib.check(
    "on the 10-d subspace TwoNN underestimates and MLE overestimates",
    sub10["TwoNN"].mean() < 10 < sub10["MLE k=10"].mean(),
)

# %% [markdown]
# The last check is worth a sentence. Neither estimator is unbiased at this sample size: both
# assume the density is constant over each point's neighbourhood, and a 10-dimensional Gaussian
# with 2,000 points is far from that, because in ten dimensions a point's neighbours are not
# close (section 1.4 again). The error bars across draws are smaller than this bias, so they
# measure the estimators' precision, not their accuracy. The figure shows what TwoNN fits:

# %%
fig, ax = plt.subplots()
for name, make in datasets.items():
    X = make(0)
    d_hat = geometry.twonn_dimension(X)
    r, _ = cKDTree(X).query(X, k=3)
    mu = np.sort(r[:, 2] / r[:, 1])
    F = np.arange(1, len(mu) + 1) / len(mu)
    keep = int(0.9 * len(mu))
    line = ax.plot(np.log(mu[:keep]), -np.log1p(-F[:keep]), ".", ms=2, alpha=0.5)[0]
    ax.plot(
        [0, np.log(mu[keep])],
        [0, d_hat * np.log(mu[keep])],
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
# exactly $\sqrt d$ up to the $\varepsilon$ term: every token enters the next layer on the same
# sphere, the one a standard Gaussian vector already lives near (section 1.2). RMSNorm (Zhang &
# Sennrich, 2019) drops the centring and lands on the same sphere. We feed both inputs whose
# scale varies over six orders of magnitude:

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
hamlib.check(
    "|LN(x)| equals sqrt(d) * sqrt(var / (var + eps)) to 1e-10",
    bool(torch.allclose(ln_norm, formula, rtol=0, atol=1e-10)),
)
hamlib.check(
    "for inputs of scale >= 0.1, LayerNorm and RMSNorm outputs have norm sqrt(d) within 0.1%",
    bool(
        ((ln_norm - 1).abs()[scales >= 0.1] < 1e-3).all()
        and ((rms_norm - 1).abs()[scales >= 0.1] < 1e-3).all()
    ),
)
hamlib.check(
    "for tiny inputs (scale 1e-3) the eps term pulls the norm far below sqrt(d)",
    bool(ln_norm[0] < 0.5),
)

# %%
fig, ax = plt.subplots()
ax.semilogx(scales, ln_norm, "o", color=COLORS["measured"], label="LayerNorm (measured)")
ax.semilogx(scales, rms_norm, "x", color=COLORS["reference"], label="RMSNorm (measured)")
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
# vector on the $\sqrt d$ sphere to outputs of variance 1, whatever happened upstream. Without
# normalization the scale of each layer's input is whatever the previous layers made it.
#
# ## 1.8 Claims in circulation
#
# **"In 10,000 dimensions, 100% of random vector pairs are nearly orthogonal ($|\cos| < 0.1$)."**
# For isotropic random vectors $(1 + \cos\theta)/2$ has a
# Beta$\left(\frac{d-1}2, \frac{d-1}2\right)$ distribution, so the probability of the complement
# can be computed exactly rather than sampled:

# %%
print(f"{'d':>6} {'P(|cos| >= 0.1)':>17} {'P(|cos| < 0.1)':>16} {'P(|cos| < 0.01)':>17}")
for d in [10, 100, 1000, 10_000]:
    p_tail = geometry.cosine_tail_probability(d, 0.1)
    p_near = 1 - geometry.cosine_tail_probability(d, 0.01)
    print(f"{d:6d} {p_tail:17.3g} {1 - p_tail:16.6f} {p_near:17.3f}")
big = geometry.cosine_similarity_stats(10_000, 10_000, generator=torch.Generator().manual_seed(7))
print(f"sampled: 10,000 pairs in d = 10,000, largest |cos| = {big.max_abs:.3f}")

# %%
p = geometry.cosine_tail_probability(10_000, 0.1)
hamlib.check("in d = 10,000, P(|cos| >= 0.1) is positive but below 1e-22", 0 < p < 1e-22)
hamlib.check("in d = 10,000, none of 10,000 sampled pairs reaches |cos| = 0.1", big.max_abs < 0.1)
hamlib.check(
    "in d = 100 the same threshold fails for about a third of pairs",
    0.25 < geometry.cosine_tail_probability(100, 0.1) < 0.4,
)
hamlib.check(
    "in d = 10,000, |cos| < 0.01 holds for only about two thirds of pairs",
    0.6 < 1 - geometry.cosine_tail_probability(10_000, 0.01) < 0.75,
)
one_sd = {d: 1 - geometry.cosine_tail_probability(d, 1 / math.sqrt(d)) for d in [100, 10**4, 10**6]}
print("P(|cos| < 1/sqrt(d)):", {d: round(p, 4) for d, p in one_sd.items()})
hamlib.check(
    "a threshold of one standard deviation, |cos| < 1/sqrt(d), holds for 68.3% of pairs "
    "(to 0.005) in every d from 100 to 10^6",
    all(abs(p - (2 * stats.norm.cdf(1) - 1)) < 0.005 for p in one_sd.values()),
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
hamlib.check(
    "a shell of fixed width 2 around sqrt(d) holds about 84% of the mass for large d (not 100%)",
    all(0.83 < shell_mass[d] < 0.85 for d in [100, 1000, 10_000]),
)
hamlib.check(
    "that share is P(|Z| < sqrt(2)) = 0.843 for standard normal Z, to 0.002, for d >= 100",
    all(abs(shell_mass[d] - (2 * stats.norm.cdf(math.sqrt(2)) - 1)) < 0.002 for d in [100, 1000]),
)
hamlib.check(
    "the mean norm is below sqrt(d) by 1/(4 sqrt(d)), within 3%, for d >= 10",
    all(
        abs((math.sqrt(d) - geometry.gaussian_norm_moments(d)[0]) * 4 * math.sqrt(d) - 1) < 0.03
        for d in [10, 100, 1000, 10_000]
    ),
)

# %% [markdown]
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
# - K. Beyer, J. Goldstein, R. Ramakrishnan, U. Shaft. When is "nearest neighbor" meaningful?
#   *ICDT*, 1999.
# - C. C. Aggarwal, A. Hinneburg, D. A. Keim. On the surprising behavior of distance metrics in
#   high dimensional space. *ICDT*, 2001.
# - W. B. Johnson, J. Lindenstrauss. Extensions of Lipschitz mappings into a Hilbert space.
#   *Contemporary Mathematics* 26, 1984.
# - S. Dasgupta, A. Gupta. An elementary proof of a theorem of Johnson and Lindenstrauss.
#   *Random Structures & Algorithms* 22(1), 2003.
# - E. Facco, M. d'Errico, A. Rodriguez, A. Laio. Estimating the intrinsic dimension of datasets
#   by a minimal neighborhood information. *Scientific Reports* 7, 12140, 2017.
# - E. Levina, P. J. Bickel. Maximum likelihood estimation of intrinsic dimension. *NeurIPS*, 2004.
# - D. J. C. MacKay, Z. Ghahramani. Comments on "Maximum likelihood estimation of intrinsic
#   dimension" by E. Levina and P. Bickel, 2005.
# - J. L. Ba, J. R. Kiros, G. E. Hinton. Layer normalization. arXiv:1607.06450, 2016.
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
# $\approx S_{d-1}\,\epsilon = d V_d\,\epsilon$. The cell below checks the ratio for $d = 1000$.
# ```

# %% tags=["hide-cell"]
ratios = [geometry.shell_fraction(1000, eps) / (1000 * eps) for eps in [1e-5, 1e-6, 1e-7]]
print([f"{r:.6f}" for r in ratios])
hamlib.check(
    "exercise 1: f(1000, eps) / (1000 eps) -> 1 as eps -> 0",
    abs(ratios[-1] - 1) < 1e-3 and ratios[0] < ratios[1] < ratios[2],
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
    "exercise 2: exact and Gaussian answers agree within 1%",
    abs(d_exact - d_gauss) <= 0.01 * d_gauss,
)

# %% [markdown]
# **3. Averaging the other way.** MacKay & Ghahramani (2005) suggest averaging the *inverse* local
# estimates $1/\hat m_k(x)$ over the data and inverting at the end. Implement it with
# `scipy.spatial.cKDTree` and compare it with `geometry.mle_dimension` on the 10-dimensional
# subspace. Is it closer to 10?
#
# ```{admonition} Solution
# :class: dropdown
# Averaging inverses is the maximum-likelihood answer when all points share one dimension, and it
# removes the upward bias that averaging $\hat m_k$ (a convex function of the mean log ratio)
# introduces: by Jensen's inequality the Levina–Bickel average is never below the
# MacKay–Ghahramani one. On this data it overshoots the other way: the printed estimate lies
# below 10, by about as much as Levina–Bickel's lies above. Neither fixes the real problem, the
# non-uniform density at the scale of the 10th neighbour.
# ```


# %% tags=["hide-cell"]
def mle_dimension_inverse_average(X, k=10):
    T, _ = cKDTree(X).query(X, k=k + 1)
    T = T[:, 1:]
    inv = np.log(T[:, -1:] / T[:, :-1]).sum(axis=1) / (k - 1)
    return 1.0 / inv.mean()


X10 = subspace_10_in_100(0)
lb, mg = geometry.mle_dimension(X10, k=10), mle_dimension_inverse_average(X10)
print(f"Levina-Bickel: {lb:.2f}   MacKay-Ghahramani: {mg:.2f}")
hamlib.check("exercise 3: the two averages bracket the true dimension 10", mg < 10 < lb)

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
hamlib.check(
    "exercise 4: V_5 = 8 pi^2 / 15 > V_6 = pi^3 / 6",
    math.isclose(v[5], 8 * math.pi**2 / 15) and math.isclose(v[6], math.pi**3 / 6) and v[5] > v[6],
)

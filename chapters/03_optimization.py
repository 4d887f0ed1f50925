# %% [markdown]
# # 3. Optimization: curvature, noise and adaptive methods, measured
#
# Gradient descent sees a loss through its slope; whether a step helps or hurts depends on the
# curvature it cannot see, and stochastic gradients add noise on top. This chapter measures both
# on a small network: the Hessian's spectrum, the sharpness that gradient descent drives to the
# edge of stability, the noise scale of minibatch gradients, what adaptive methods do with
# curvature, and what natural gradient is invariant to. Popular claims about saddles, negative
# curvature and flat minima are tested along the way.
#
# **You will be able to** compute Hessian-vector products, exact spectra of small models and the
# top eigenvalue of large ones; predict and observe the edge of stability; estimate the gradient
# noise scale; write SGD, momentum, Adam and AdamW and check them against PyTorch; and explain
# what natural gradient buys.
#
# **Run time:** under a minute on two CPU cores (the cell after the summary prints the measured
# time).

# %%
import hamlib

hamlib.setup()

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr

from hamlib import measure, optim, tasks
from hamlib.plotting import COLORS, CYCLE

f64 = torch.float64

# %% [markdown]
# ## 3.1 Critical points, saddles and the step-size limit
#
# At a critical point the gradient vanishes and the Hessian decides: all eigenvalues positive, a
# minimum; some negative, a *saddle*, with the number of negative eigenvalues its *index*. Near the
# saddle of $f(x, y) = x^2 - y^2 + y^4/4$ at the origin, gradient descent multiplies $y$ by
# $1 + 2\eta$ per step, so from $y_0$ it needs
# $\lceil \log(0.1/|y_0|) / \log(1 + 2\eta) \rceil$ steps to leave; from exactly $y_0 = 0$ it never
# leaves (the gradient's $y$ component is exactly 0 there), and any noise in the gradient kicks it
# off:


# %%
def escape_steps(y0, eta=0.1, noise=0.0, max_steps=10_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = 1.0, y0
    for step in range(1, max_steps + 1):
        gx, gy = 2 * x, -2 * y + y**3
        if noise:
            gx += noise * torch.randn((), generator=g, dtype=f64).item()
            gy += noise * torch.randn((), generator=g, dtype=f64).item()
        x, y = x - eta * gx, y - eta * gy
        if abs(y) > 0.1:
            return step
    return None


predicted = math.ceil(math.log(0.1 / 1e-8) / math.log(1.2))
print(f"from y0 = 1e-8: {escape_steps(1e-8)} steps (predicted {predicted})")
print(f"from y0 = 0, no noise: {escape_steps(0.0)} (never, in 10,000 steps)")
noisy = [escape_steps(0.0, noise=1e-3, seed=s) for s in range(5)]
print(f"from y0 = 0, gradient noise of std 1e-3: {noisy} steps")
hamlib.check(
    "GD leaves the saddle from y0 = 1e-8 in exactly the predicted number of steps",
    escape_steps(1e-8) == predicted,
)
# With noise, y_k is a sum of kicks of size 1e-3 * eta amplified by 1.2 per step: a Gaussian of
# std 1e-3 * eta * 1.2^k / sqrt(1.2^2 - 1). It leaves at k0 - log|Z| / log 1.2 for a standard
# normal Z, and P(|Z| < z) ~ 0.8 z: the slowest of 5 seeds exceeds k0 + log(400) / log(1.2)
# with probability 1%.
k0 = math.log(0.1 / (1e-3 * 0.1 / math.sqrt(1.2**2 - 1))) / math.log(1.2)
hamlib.check(
    "with gradient noise of std 1e-3 it leaves in about log(0.1/noise)/log(1.2) steps: the "
    "slowest of 5 seeds, against the bound it exceeds with probability 1%",
    measured=max(noisy),
    below=k0 + math.log(5 * 0.8 / 0.01) / math.log(1.2),
    spec=".0f",
)

# %% [markdown]
# Newton's method, $\theta \leftarrow \theta - H^{-1}\nabla L$, is the opposite case. It divides the
# step along each eigenvector of $H$ by its eigenvalue, so along a direction of negative curvature
# it flips the sign of the step and walks *uphill*, toward the saddle: it finds critical points,
# not minima (Dauphin et al., 2014). Here one Newton step maps $y$ to $2y^3/(3y^2 - 2)$, which
# shrinks $|y|$ whenever $|y| < \sqrt{2/5} \approx 0.63$: from every start in that band Newton
# lands on the saddle, while gradient descent leaves it. (Between 0.63 and $\sqrt{2/3}$ the
# curvature is still negative, but the step overshoots the saddle and lands in a minimum.)


# %%
def newton_2d(x, y, steps=50):
    for _ in range(steps):
        x, y = x - 2 * x / 2, y - (-2 * y + y**3) / (3 * y**2 - 2)
    return x, y


starts = np.linspace(0.05, 0.6, 12)  # all inside |y| < sqrt(2/5) = 0.632
ends = np.array([newton_2d(1.0, y0)[1] for y0 in starts])
print(
    f"Newton from x0 = 1, y0 in [0.05, 0.6]: largest |y| after 50 steps "
    f"{hamlib.below(np.abs(ends).max(), 1e-12)}"
)
print(f"Newton from y0 = 1 (positive curvature): y = {newton_2d(1.0, 1.0)[1]:.6f} = sqrt 2")
overshoot = np.array([newton_2d(1.0, y0)[1] for y0 in np.linspace(0.65, 0.8, 4)])
print(
    f"Newton from y0 in [0.65, 0.8]: |y| ends between {np.abs(overshoot).min():.6f} and "
    f"{np.abs(overshoot).max():.6f}"
)
n = 1210  # the parameters of section 3.2's network
print(
    f"a Hessian of {n:,} parameters: {n * n * 8 / 1e6:.0f} MB; "
    f"a solve, about {n**3 / 3 / 1e9:.1f} GFLOP; of a billion: {1e9**2 * 8 / 1e18:.0f} exabytes"
)
hamlib.check(
    "from 0.65 to 0.8 it overshoots into a minimum, y = +-sqrt 2",
    measured=float(np.abs(np.abs(overshoot) - math.sqrt(2)).max()),
    below=1e-12,
)
hamlib.check(
    "Newton's method converges to the saddle from every start with |y0| < sqrt(2/5)",
    measured=float(np.abs(ends).max()),
    below=1e-12,
)

# %% [markdown]
# It also costs what this chapter's network hides: the Hessian of $N$ parameters holds $N^2$
# numbers and a solve takes about $N^3/3$ operations, as printed above for the network of section
# 3.2; for a billion parameters the matrix alone would take 8 exabytes. Section 3.6 meets the
# one setting where a Newton step is cheap and safe.
#
# Descent itself has a limit. On a quadratic with largest Hessian eigenvalue $\lambda_{\max}$, GD
# multiplies that direction by $1 - \eta\lambda_{\max}$ per step and diverges once
# $\eta > 2/\lambda_{\max}$ (Chapter 5 derives this as Euler's stability limit). The sharpness
# $\lambda_{\max}$ of a network's loss is therefore what decides which step sizes are safe, and
# it changes as the network trains.
#
# ## 3.2 The Hessian of a small network
#
# A two-layer tanh network (64 → 16 → 10, 1,210 parameters) classifies scikit-learn's 8×8 digits
# (1,000 for training, 797 for testing). With this few parameters the Hessian can be computed
# exactly (`measure.hessian`: every row at once, a batched backward pass through the gradient),
# and compared with what the scalable estimators report. Those need only Hessian-vector products,
# which cost about two gradients each (Pearlmutter, 1994):

# %%
hamlib.show_source(measure.hvp)

# %%
X_train, y_train, X_test, y_test = tasks.digits(n_train=1000)
make_net = tasks.digits_mlp  # 64 -> 16 -> 10, tanh, float64, torch's default initialization


def accuracy(net, X, y):
    with torch.no_grad():
        return (net(X).argmax(1) == y).double().mean().item()


net = make_net()
params = list(net.parameters())


def ce_loss():
    return torch.nn.functional.cross_entropy(net(X_train), y_train)


spectra = {"initialization": measure.hessian_spectrum(ce_loss, params)}
opt = optim.Adam(params, lr=1e-2)
for step in range(1, 301):
    opt.zero_grad()
    ce_loss().backward()
    opt.step()
    if step == 50:  # section 3.5 asks how much of Adam's v the first 50 steps account for
        v_at_50 = torch.cat([opt.state[p]["v"].reshape(-1) for p in params])
H_trained = measure.hessian(ce_loss, params)  # kept: section 3.5 reads its diagonal
spectra["after training"] = torch.linalg.eigvalsh(H_trained)
grad_end = torch.cat([g.reshape(-1) for g in torch.autograd.grad(ce_loss(), params)])
print(
    f"after 300 Adam steps: train loss {ce_loss().item():.3f}, training accuracy "
    f"{accuracy(net, X_train, y_train):.3f}, test accuracy {accuracy(net, X_test, y_test):.3f}, "
    f"gradient norm {grad_end.norm().item():.1e}"
)
hamlib.check(
    "after 300 steps the network separates the training data (training accuracy 1)",
    accuracy(net, X_train, y_train) == 1.0,
)

# %%
# eigvalsh's error is about n * eps * |lambda_max| = 3e-13 here: below -1e-9 is surely negative
print(
    f"{'':16s}{'lambda_max':>11s}{'lambda_min':>11s}{'< -1e-9':>9s}{'< -1e-3 max':>13s}"
    f"{'near zero':>11s}{'large':>8s}"
)
fractions, top10 = {}, {}
for name, ev in spectra.items():
    top10[name] = (ev[-10:].sum() / ev.abs().sum()).item()
    top = ev[-1].item()
    fractions[name] = (
        (ev < -1e-9).double().mean().item(),
        (ev < -1e-3 * top).double().mean().item(),
        (ev.abs() <= 1e-3 * top).double().mean().item(),
        (ev > 0.1 * top).double().mean().item(),
    )
    print(
        f"{name:16s}{top:11.3f}{ev[0].item():11.4f}{fractions[name][0]:9.1%}"
        f"{fractions[name][1]:13.1%}{fractions[name][2]:11.1%}{fractions[name][3]:8.1%}"
    )
lanczos_top = measure.top_hessian_eigenvalue(
    ce_loss, params, iters=30, generator=torch.Generator().manual_seed(0)
)
print(
    f"Lanczos (30 Hessian-vector products): {lanczos_top:.6f}; "
    f"exact: {spectra['after training'][-1]:.6f}"
)
hamlib.check(
    "Lanczos with 30 HVPs finds the exact top eigenvalue to 1e-6 relative",
    abs(lanczos_top / spectra["after training"][-1].item() - 1) < 1e-6,
)

# %% [markdown]
# Lanczos is what scales: it builds an orthonormal basis of the Krylov space
# $\{v, Hv, H^2v, \dots\}$ one product at a time and diagonalizes $H$ restricted to it, a small
# tridiagonal matrix. Its largest eigenvalue (a Ritz value) never exceeds $\lambda_{\max}$ and
# converges to it much faster than power iteration (exercise 1). Nothing in it needs more than
# products with $H$, so it works unchanged on a model with billions of parameters:

# %%
hamlib.show_source(measure.lanczos)
print(
    "10 largest eigenvalues, share of the sum of |eigenvalues|: "
    + ", ".join(f"{name} {share:.0%}" for name, share in top10.items())
)
top12 = spectra["after training"][-12:].flip(0)
print("12 largest after training:", " ".join(f"{x:.3f}" for x in top12.tolist()))
print(f"largest ratio of consecutive ones: {(top12[:-1] / top12[1:]).max().item():.2f}")
hamlib.check(
    "after training the 10 largest eigenvalues (0.8% of the directions) carry over half of the "
    "curvature (sum of |eigenvalues|)",
    measured=top10["after training"],
    above=0.5,
    spec=".2f",
)
hamlib.check(
    "at initialization they do not",
    measured=top10["initialization"],
    below=0.5,
    spec=".2f",
)

# %%
shrink = (spectra["initialization"][0] / spectra["after training"][0]).item()
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for (name, ev), color in zip(spectra.items(), [COLORS["muted"], COLORS["measured"]], strict=True):
    ax1.hist(
        ev.numpy(),
        bins=np.linspace(-0.6, 1.2, 120),
        histtype="step",
        color=color,
        lw=1.5,
        label=f"{name} (top: {ev[-1].item():.2f})",
    )
    pos, neg = ev[ev > 0].flip(0).numpy(), (-ev[ev < 0]).numpy()
    ax2.loglog(np.arange(1, len(pos) + 1), pos, color=color, label=f"{name}, positive")
    ax2.loglog(np.arange(1, len(neg) + 1), neg, color=color, ls=":", label=f"{name}, negative")
ax1.set(
    yscale="log",
    xlabel="Hessian eigenvalue",
    ylabel="count (log scale)",
    title="Spectrum: a bulk at 0, a tail of large ones",
)
ax2.set(
    xlabel="rank (largest first)",
    ylabel="|eigenvalue|",
    ylim=(1e-7, 3),
    title=f"By size: the negative side (dotted) shrinks {shrink:.0f}-fold",
)
ax1.legend()
ax2.legend(fontsize=8)
plt.show()

# %% [markdown]
# The shape is the one reported for much larger networks (Sagun et al., 2017; Ghorbani et al.,
# 2019): a bulk of eigenvalues near zero, on both sides of it, and a tail of large ones. Papyan
# (2019) traces the largest to the classes, about one per class; with 10 classes here the top 10
# carry most of the curvature after training (the printed share), but at this size they are not
# split from the bulk by a gap: consecutive ones differ by at most the printed ratio. Most
# directions in parameter space barely change the loss, and the negative side, visible on the
# right only, is hundreds of times smaller after training than at initialization.
#
# ## 3.3 The edge of stability
#
# Cohen et al. (2021) observed that full-batch gradient descent raises the sharpness
# ("progressive sharpening") until it reaches $2/\eta$, and then, instead of diverging, hovers
# there while the loss keeps decreasing non-monotonically. We train the same network with the
# squared loss (as in most of their experiments) at several step sizes and track the sharpness
# with Lanczos every 50 steps:

# %%
targets = torch.nn.functional.one_hot(y_train, 10).double()
eos = {}
for eta in hamlib.progress([0.1, 0.16, 0.18], desc="GD runs"):
    net_e = make_net()
    params_e = list(net_e.parameters())

    def mse_loss(net_e=net_e):
        return 0.5 * ((net_e(X_train) - targets) ** 2).sum(1).mean()

    sharpness, losses = [], []
    gd = optim.SGD(params_e, lr=eta)
    for step in range(2001):
        if step % 50 == 0:
            sharpness.append(
                measure.top_hessian_eigenvalue(
                    mse_loss, params_e, iters=12, generator=torch.Generator().manual_seed(step)
                )
            )
        gd.zero_grad()
        loss = mse_loss()
        loss.backward()
        losses.append(loss.item())
        gd.step()
    eos[eta] = (np.array(sharpness), np.array(losses))

# %%
print(f"{'eta':>5s}{'2/eta':>8s}{'max sharpness':>15s}{'mean, 2nd half':>16s}{'final loss':>12s}")
for eta, (sh, losses) in eos.items():
    show = hamlib.approx if eta > 0.1 else format  # at the edge: digits vary by processor (≈)
    print(
        f"{eta:5.2f}{2 / eta:8.2f}{show(sh.max(), '15.2f')}"
        f"{sh[len(sh) // 2 :].mean():16.1f}{show(losses[-1], '12.4f')}"
    )
sh16, loss16 = eos[0.16]
# the largest rise of the loss above its minimum over the preceding 50 steps, after step 100
rises = [loss16[t] / loss16[t - 50 : t].min() for t in range(100, len(loss16))]
peak = 100 + int(np.argmax(rises))
before, after = sh16[: peak // 50 + 1].max(), sh16[peak // 50 + 1]
print(
    f"eta = 0.16: the loss rises {hamlib.approx(max(rises), '.1f')}-fold within 50 steps, peaking "
    f"at step {hamlib.approx(peak, 'd')}; sharpness {hamlib.approx(before, '.1f')} before, "
    f"{hamlib.approx(after, '.1f')} after (2/eta = 12.5)"
)
deviation = max(abs(eos[e][0][len(eos[e][0]) // 2 :].mean() * e / 2 - 1) for e in [0.16, 0.18])
hamlib.check(
    "at eta = 0.16 a catapult: the loss rises over 1.5-fold within 50 steps, and the next "
    "sharpness sample lies below 2/eta",
    max(rises) > 1.5 and after < 2 / 0.16,
)
hamlib.check(
    "at eta = 0.1 sharpness rises (its maximum above its start) but never reaches 2/eta = 20",
    eos[0.1][0][0] < eos[0.1][0].max() < 20,
)
hamlib.check(
    "at eta = 0.16 and 0.18 the sharpness overshoots 2/eta (its maximum lies above it)",
    all(eos[e][0].max() > 2 / e for e in [0.16, 0.18]),
)
hamlib.check(
    "at eta = 0.16 and 0.18 it settles at 2/eta: second-half mean within 3% (larger deviation)",
    measured=deviation,
    below=0.03,
    spec=".3f",
    machine_dependent=True,
)
hamlib.check(
    "and the loss still decreases overall at the edge: final over initial below 1/3 (larger of "
    "the two)",
    measured=max(eos[e][1][-1] / eos[e][1][0] for e in [0.16, 0.18]),
    below=1 / 3,
    machine_dependent=True,
)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
steps = np.arange(0, 2001, 50)
for (eta, (sh, losses)), color in zip(eos.items(), CYCLE, strict=False):
    ax1.plot(steps, sh, color=color, marker="o", ms=3, label=f"eta = {eta} (every 50 steps)")
    ax1.axhline(2 / eta, color=color, ls=":", lw=1)
    ax2.semilogy(losses, color=color, lw=1, label=f"eta = {eta}")
ax1.set(
    xlabel="step",
    ylabel="sharpness (top Hessian eigenvalue)",
    ylim=(9, 21),
    title="Sharpness rises; at 0.16 and 0.18 it meets 2/eta (dotted)",
)
ax2.set(xlabel="step", ylabel="training loss (MSE)", title="The loss keeps falling, unevenly")
ax1.legend()
ax2.legend()
plt.show()

# %% [markdown]
# The classical analysis says GD is stable only if the sharpness stays below $2/\eta$; here GD
# *drives* it to that value and keeps it there. The local quadratic model cannot explain this;
# the loss's third derivatives do (Damian et al., 2023, "self-stabilization"). The run at
# $\eta = 0.16$ shows the violent version once: the sharpness climbs well past $2/\eta$, the loss
# climbs for a few steps (the spike in the right panel, located and sized above), and the sharpness
# falls below $2/\eta$ in the same 50 steps, a "catapult" (Lewkowycz et al., 2020) out of a region
# too sharp for the step size.
#
# At the edge the dynamics are also chaotic, even in float64: a processor that sums in another
# order (AVX2 instead of AVX-512, Intel instead of AMD) ends 2,000 steps later with another first
# decimal of the maximum sharpness and another final loss. Those entries print with $\approx$, and
# the checks hold what survives: the overshoot, the level $2/\eta$ within 3% (the second-half
# mean, printed to the one decimal that is stable), the falling loss. `make portability` re-runs
# them under several processor settings (README, "Portable outputs").
#
# ## 3.4 Gradient noise and batch size
#
# A minibatch gradient is the full gradient $G$ plus noise. Drawn from an infinite stream of data,
# a batch of $B$ has noise covariance $\Sigma/B$, with $\Sigma$ the per-example covariance; drawn
# without replacement from a training set of $N$, the covariance is
# $\frac{\Sigma}{B}\frac{N-B}{N-1}$, which vanishes at $B = N$ (the full batch has no noise).
# McCandlish et al. (2018) summarize the trade-off in one number, the simple noise scale
# $B_{\rm simple} = \mathrm{tr}(\Sigma)/|G|^2$: batches much smaller than it are noise-dominated,
# batches much larger waste computation. We compute it from exact per-example gradients
# (`torch.func.vmap`) along the Adam run of section 3.2. Here the 1,000 training examples are
# the whole population, so $G$ is their mean *exactly* and $\Sigma$ their covariance:
# `population=True`. Where the rows are a sample of fresh data (Chapter 7), $|\bar g|^2$
# overestimates $|G|^2$ by $\mathrm{tr}\,\Sigma/n$ and the estimator subtracts it:

# %%
hamlib.show_source(measure.gradient_noise_scale)


# %%
hamlib.show_source(measure.per_example_gradients)


# %%
def per_example_grads(model):
    return measure.per_example_gradients(model, torch.nn.functional.cross_entropy, X_train, y_train)


noise_scale, as_sample, trace_sigma, signal = {}, {}, {}, {}
tracked = make_net()  # the run of section 3.2 again, measured along the way
adam_t = optim.Adam(tracked.parameters(), lr=1e-2)
for step in range(301):
    if step in (0, 25, 100, 300):
        grads = per_example_grads(tracked)
        noise_scale[step] = measure.gradient_noise_scale(grads, population=True)
        as_sample[step] = measure.gradient_noise_scale(grads)
        grads_300 = grads  # exercise 3 reads the last one
        trace_sigma[step] = grads.var(0, correction=0).sum().item()
        signal[step] = (grads.mean(0) @ grads.mean(0)).item()
        print(
            f"after {step:3d} Adam steps: tr Sigma {trace_sigma[step]:.3g}, |G|^2 "
            f"{signal[step]:.3g}, B_simple {noise_scale[step]:6,.0f} examples "
            f"(treating the rows as a sample: {as_sample[step]:,.0f})"
        )
    adam_t.zero_grad()
    torch.nn.functional.cross_entropy(tracked(X_train), y_train).backward()
    adam_t.step()
noise_fall, signal_fall = trace_sigma[0] / trace_sigma[300], signal[0] / signal[300]
print(
    f"over 300 steps: B_simple grows {noise_scale[300] / noise_scale[0]:.0f}-fold; tr Sigma falls "
    f"{noise_fall:.0f}-fold, |G|^2 {signal_fall:,.0f}-fold"
)
hamlib.check(
    "the noise scale grows at every measured step (0, 25, 100, 300)",
    all(noise_scale[a] < noise_scale[b] for a, b in [(0, 25), (25, 100), (100, 300)]),
)
hamlib.check(
    "both the noise and the signal fall, the signal |G|^2 over 10 times faster than tr Sigma",
    measured=signal_fall / noise_fall,
    above=10,
    spec=".0f",
)
hamlib.check(
    "after 100 steps it exceeds the training set",
    measured=noise_scale[100],
    above=1000,
    spec=",.0f",
)

# %% [markdown]
# Treated as a sample, the same rows give `inf` from step 100 on: the estimate of $|G|^2$,
# $|\bar g|^2 - \mathrm{tr}\,\Sigma/n$, goes negative once the true $|G|^2$ is smaller than the
# correction, though here nothing needs estimating. The exact values grow by the printed factor
# in 300 steps and pass the size of the training set at step 100. Both parts of the ratio fall:
# the per-example gradients shrink as the examples are fitted, but their mean, the signal, shrinks
# far faster (the printed factors). Past step 100 a
# minibatch sees more noise than signal unless it is a large part of the training set, where the
# factor $(N-B)/(N-1)$ removes the noise (exercise 3 finds the crossing, about 860 of the 1,000
# at step 300). This is the regime in which the trained network of section 3.2 sits; McCandlish
# et al. find the same growth of the critical batch as the loss falls.
#
# Folklore says small batches find flatter minima that generalize better (Keskar et al., 2017).
# We train with SGD at batch sizes 16 and 500 for the same number of epochs and learning rate,
# three seeds each, and measure the sharpness of the cross-entropy loss and the test accuracy.
# Two controls separate batch size from what changes with it: batch 500 for as many *steps* as
# batch 16 takes, and batch 16 at the learning rate that matches batch 500's ratio $\eta/B$
# (0.5 × 16/500 = 0.016). In the stochastic-differential-equation view of SGD, $\eta/B$ sets the
# noise "temperature" and, at equal epochs, the path (Smith & Le, 2018; Goyal et al.'s linear
# scaling rule, 2017):

# %%
batch_results = {}
# (batch size, epochs, learning rate): 500 for 945 epochs takes batch 16's 1,890 steps;
# 16 at lr 0.016 has batch 500's eta/B
runs_bs = [(16, 30, 0.5), (500, 30, 0.5), (500, 945, 0.5), (16, 30, 0.016)]
for batch, epochs, lr in hamlib.progress(runs_bs, desc="batch sizes"):
    for seed in range(3):
        model = make_net(seed)
        sgd = optim.SGD(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(1000, generator=g)
            for i in range(0, 1000, batch):
                idx = order[i : i + batch]
                sgd.zero_grad()
                torch.nn.functional.cross_entropy(model(X_train[idx]), y_train[idx]).backward()
                sgd.step()
        ps = list(model.parameters())

        def loss_full(model=model):
            return torch.nn.functional.cross_entropy(model(X_train), y_train)

        sharp = measure.top_hessian_eigenvalue(loss_full, ps, iters=20)
        batch_results[batch, epochs, lr, seed] = (
            sharp,
            loss_full().item(),
            accuracy(model, X_test, y_test),
        )
print(
    f"{'batch':>6s}{'epochs':>7s}{'lr':>7s}{'seed':>5s}{'sharpness':>11s}{'train loss':>12s}"
    f"{'test acc':>10s}"
)
for (batch, epochs, lr, seed), (sharp, tl, acc) in batch_results.items():
    print(f"{batch:6d}{epochs:7d}{lr:7.3f}{seed:5d}{sharp:11.3f}{tl:12.4f}{acc:10.3f}")

# %%
res = {cfg: np.array([batch_results[(*cfg, s)] for s in range(3)]) for cfg in runs_bs}


def mean_se(x):
    """The mean over seeds and its standard error (sample standard deviation / sqrt(n))."""
    return x.mean(), x.std(ddof=1) / math.sqrt(len(x))


for (batch, epochs, lr), r in res.items():
    (sh, sh_se), (acc, acc_se) = mean_se(r[:, 0]), mean_se(r[:, 2])
    print(
        f"batch {batch:3d}, {epochs:3d} epochs, lr {lr:5.3f}: sharpness {sh:.3f} +- {sh_se:.3f}, "
        f"train loss {r[:, 1].mean():.4f}, test accuracy {acc:.3f} +- {acc_se:.3f}"
    )
small, large_epochs, large_steps = res[16, 30, 0.5], res[500, 30, 0.5], res[500, 945, 0.5]
matched = res[16, 30, 0.016]
hamlib.check(
    "at equal epochs, batch 16 ends at lower sharpness than batch 500 in every seed",
    bool((small[:, 0] < large_epochs[:, 0]).all()),
)
hamlib.check(
    "at equal steps (same training loss) batch 16 is still flatter than batch 500 in every seed",
    bool((small[:, 0] < large_steps[:, 0]).all()),
)
acc_gap = small[:, 2].mean() - large_steps[:, 2].mean()
acc_p = large_steps[:, 2].mean()
gap_se = math.hypot(mean_se(small[:, 2])[1], mean_se(large_steps[:, 2])[1])
print(
    f"test accuracy, batch 16 minus batch 500 at equal steps: {acc_gap:+.4f} "
    f"(standard error {gap_se:.4f} from the seeds; one test set of 797 alone carries "
    f"{math.sqrt(acc_p * (1 - acc_p) / len(y_test)):.4f})"
)
hamlib.check(
    "but its test accuracy is not detectably better: the gain is under 2 standard errors",
    measured=acc_gap,
    below=2 * gap_se,
    spec=".4f",
)
sharp_gap = matched[:, 0].mean() - large_epochs[:, 0].mean()
sharp_se = math.hypot(mean_se(matched[:, 0])[1], mean_se(large_epochs[:, 0])[1])
print(
    f"sharpness, batch 16 at lr 0.016 minus batch 500 at lr 0.5 (equal eta/B, equal epochs): "
    f"{sharp_gap:+.3f} +- {sharp_se:.3f}"
)
hamlib.check(
    "at equal eta/B (and so equal eta x epochs), batch 16 follows batch 500: its sharpness is "
    "within 2 standard errors",
    measured=sharp_gap,
    target=0,
    tol=2 * sharp_se,
    spec=".3f",
)
gap_epochs = large_epochs[:, 0].mean() - small[:, 0].mean()
gap_steps = large_steps[:, 0].mean() - small[:, 0].mean()
print(
    f"sharpness gap, batch 500 minus batch 16: {gap_epochs:.2f} at equal epochs, {gap_steps:.2f} "
    f"at equal steps and equal training loss; steps per epoch {1000 / 16:.1f} against 2 (x31)"
)
hamlib.check(
    "most of the sharpness gap at equal epochs is progress: at equal steps under a quarter remains",
    measured=gap_steps / gap_epochs,
    below=0.25,
    spec=".2f",
)

# %% [markdown]
# What this measures, and what it does not. At equal epochs the small-batch runs take 31× more
# steps, so they are simply further along; the comparison confounds noise with progress. The
# third configuration gives batch 500 the same number of *steps*, and the same training loss: of
# the sharpness gap at equal epochs, the printed fraction remains, so most of it was progress
# and a smaller, consistent part (flatter in every seed) is what the noise of small batches
# buys. The accuracy verdict is only as sharp as the experiment: three seeds and one test set of
# 797 images resolve differences of about two standard errors (printed), so "not better" means
# "not better by more than that", not "equal".
#
# The fourth configuration tests the linear scaling rule: at batch 500's ratio $\eta/B$, batch 16
# takes 31 times the steps at a 31st of the step size, the same $\eta \times$ steps, and it ends
# where batch 500 does, as sharp and at the same loss. That is what the stochastic-differential-
# equation view predicts, but it cannot tell temperature from progress: both runs made the same
# progress. Only the equal-steps comparison isolates the noise, and there the effect is the
# small remainder above.
#
# Sharpness is one number, $\lambda_{\max}$, and it is not a property of the function alone:
# Dinh et al. (2017) rescale consecutive layers of a ReLU network, $(W_1, W_2) \to (aW_1, W_2/a)$,
# which leaves the function unchanged and makes $\lambda_{\max}$ as large as one likes. This tanh
# network lacks that exact symmetry, but any change of parameterization (Section 3.6) changes the
# Hessian while the predictions stay put.
#
# ## 3.5 Adaptive methods, written out
#
# `hamlib.optim` writes out SGD, momentum, Adam and AdamW; each takes exactly the steps of its
# `torch.optim` counterpart (the test suite compares the parameters after each of 25 steps).
# Adam's update:

# %%
hamlib.show_source(optim.Adam._update)


# %%
def run(opt_cls, **kw):
    model = make_net(1)
    o = opt_cls(model.parameters(), **kw)
    for _ in range(20):
        o.zero_grad()
        torch.nn.functional.cross_entropy(model(X_train), y_train).backward()
        o.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


ours = run(optim.AdamW, lr=1e-2, weight_decay=0.1)
theirs = run(torch.optim.AdamW, lr=1e-2, weight_decay=0.1, foreach=False)
l2 = run(optim.Adam, lr=1e-2, weight_decay=0.1)
print(
    "hamlib AdamW vs torch AdamW, largest difference after 20 steps: "
    f"{hamlib.below((ours - theirs).abs().max().item(), 1e-13)}"
)
print(f"AdamW vs Adam + L2 (same lr and decay), largest difference: {(ours - l2).abs().max():.3f}")
hamlib.check("hamlib's AdamW takes torch's steps (to 1e-13)", (ours - theirs).abs().max() < 1e-13)
hamlib.check(
    "AdamW's decoupled decay is not Adam + L2: parameters differ by over 1e-3",
    measured=(ours - l2).abs().max().item(),
    above=1e-3,
)

# %% [markdown]
# On an ill-conditioned quadratic, $L = \tfrac12\theta^\top A\theta$ with eigenvalues from
# $\mu = 1$ to $L = 100$ (condition number $\kappa = 100$), how many steps does each method need
# to reduce the loss by $10^{-8}$? Gradient descent and heavy ball get their optimal tunings in
# closed form: GD's $\eta = 2/(L+\mu)$ contracts every direction by at most
# $(\kappa-1)/(\kappa+1)$ per step; Polyak's heavy ball, $\eta = 4/(\sqrt L+\sqrt\mu)^2$ and
# momentum $\beta = \big((\sqrt\kappa-1)/(\sqrt\kappa+1)\big)^2$, here $4/11^2$ and $(9/11)^2$,
# by $(\sqrt\kappa-1)/(\sqrt\kappa+1)$ (Chapter 5 derives heavy ball from a damped oscillator,
# and its exercise 2 checks the two rates). Adam has no such formula; it runs over a grid of
# learning rates. Adam's preconditioner is diagonal, so it sees the basis: we run the quadratic
# with its eigenvectors along the axes and in a random rotation of it (the start rotated too, so
# that the two problems are one problem in two coordinate systems):

# %%
rot, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(3), dtype=f64))
eigenvalues = torch.logspace(0, 2, 10, dtype=f64)
start = torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=f64)
quadratics = {  # (A, starting point): the rotated problem is the aligned one in other coordinates
    "axis-aligned": (torch.diag(eigenvalues), start),
    "rotated": (rot @ torch.diag(eigenvalues) @ rot.T, rot @ start),
}


def steps_to_tol(make_opt, problem, tol=1e-8, max_steps=2000):
    A, theta0 = problem
    theta = theta0.clone().requires_grad_(True)
    o = make_opt([theta])
    L0 = (0.5 * theta @ A @ theta).item()
    for step in range(1, max_steps + 1):
        o.zero_grad()
        loss = 0.5 * theta @ A @ theta
        loss.backward()
        o.step()
        if (0.5 * theta @ A @ theta).item() < tol * L0:
            return step
    return max_steps


grid = [(lr, b1) for b1 in (0.0, 0.5, 0.9) for lr in (1e-2, 3e-2, 1e-1, 3e-1, 1.0)]
steps, adam = {}, {}
for basis, problem in quadratics.items():
    steps[basis] = {
        "GD, eta = 2/(L+mu)": steps_to_tol(lambda ps: optim.SGD(ps, lr=2 / 101), problem),
        "heavy ball, Polyak's tuning": steps_to_tol(
            lambda ps: optim.Momentum(ps, lr=4 / 11**2, momentum=(9 / 11) ** 2), problem
        ),
    }
    adam[basis] = {
        (lr, b1): steps_to_tol(
            lambda ps, lr=lr, b1=b1: optim.Adam(ps, lr=lr, betas=(b1, 0.999)), problem
        )
        for lr, b1 in grid
    }
    for b1 in (0.0, 0.5, 0.9):
        lr_best = min((cfg for cfg in adam[basis] if cfg[1] == b1), key=adam[basis].get)
        steps[basis][f"Adam, beta1 {b1}, best lr {lr_best[0]:g}"] = adam[basis][lr_best]
print(f"{'steps to 1e-8 of the loss':34s}{'axis-aligned':>13s}{'rotated':>9s}  (2000: not reached)")
for (name, n_aligned), n_rotated in zip(
    steps["axis-aligned"].items(), steps["rotated"].values(), strict=True
):
    print(f"{name:34s}{n_aligned:13d}{n_rotated:9d}")
gd, hb = steps["rotated"]["GD, eta = 2/(L+mu)"], steps["rotated"]["heavy ball, Polyak's tuning"]
rate_ratio = math.log(11 / 9) / math.log(101 / 99)
print(
    f"GD steps / heavy-ball steps: {gd / hb:.1f} (ratio of the asymptotic rates: {rate_ratio:.1f})"
)
print(
    "a momentum of 0.9 lets the loss fall by about a factor 0.9 per step: "
    f"log(1e-8)/log(0.9) = {math.log(1e-8) / math.log(0.9):.0f} steps"
)
best_adam = {basis: min(adam[basis].values()) for basis in adam}
hamlib.check(
    "tuned over learning rate and beta1, Adam beats heavy ball when the eigenvectors are the axes",
    measured=best_adam["axis-aligned"] / steps["axis-aligned"]["heavy ball, Polyak's tuning"],
    below=1,
    spec=".2f",
)
hamlib.check(
    "... and loses to it once the quadratic is rotated",
    measured=best_adam["rotated"] / hb,
    above=1,
    spec=".2f",
)

# %% [markdown]
# Heavy ball needs several times fewer steps than GD; the ratio is below the ratio of the
# asymptotic rates (printed) because Polyak's tuning puts both roots of its recursion at one
# value, which adds a transient factor $k\,r^k$. GD and heavy ball take the same number of steps in
# both coordinate systems, as they must: their updates commute with rotations. Adam does not. With
# the default $\beta_1 = 0.9$ it needs about as many steps as that momentum's own pace allows
# (printed), and the basis barely matters. Tuned over $\beta_1$ as well,
# Adam beats even heavy ball when the eigenvectors are the coordinate axes, where dividing each
# coordinate by its own gradient scale can undo the ill-conditioning, and falls behind it once
# they are rotated: a per-coordinate scale helps only where the ill-conditioned directions are
# the coordinates.
#
# Adam divides each coordinate's step by a running root-mean-square of its gradient, which is
# sometimes described as a diagonal Hessian preconditioner. How well does Adam's scale
# $\sqrt{\hat v}$, after the 300 full-batch steps of section 3.2, track the diagonal of the exact
# Hessian computed there? Coordinates that never get a gradient (weights from the border pixels,
# which are 0 in every image) are left out: they would tie at zero on both sides.

# %%
adam_v = torch.cat([opt.state[p]["v"].reshape(-1) for p in params])
adam_scale = (adam_v / (1 - 0.999 ** opt.state[params[0]]["t"])).sqrt()
h_diag = H_trained.diagonal()
live = adam_v > 0
rho = spearmanr(adam_scale[live].numpy(), h_diag[live].abs().numpy()).statistic
chance = 3 / math.sqrt(int(live.sum()) - 1)  # 3 standard errors of a rank correlation at rho = 0
early = (0.999**250 * v_at_50[live] / adam_v[live]).median().item()
print(
    f"Spearman correlation between Adam's sqrt(v) and |diag H| over {int(live.sum()):,} live "
    f"parameters: {rho:.2f} (rho^2 = {rho**2:.2f}; 3 standard errors of chance: {chance:.2f})"
)
print(
    f"share of v after 300 steps accumulated in the first 50 (median over parameters): {early:.0%}"
)
hamlib.check(
    "Adam's per-coordinate scale is correlated with |diag H|, beyond chance",
    measured=rho,
    above=chance,
    spec=".2f",
)
hamlib.check(
    "Adam's v after 300 steps is mostly a record of the first 50 (median share)",
    measured=early,
    above=0.5,
    spec=".2f",
)

# %% [markdown]
# The correlation is real but partial, and the reason is not noise: this run is full-batch, so
# its gradients have none. Two things separate $\sqrt{\hat v}$ from curvature. First, with
# $\beta_2 = 0.999$ the average $v$ forgets on a time scale of 1,000 steps, longer than the run:
# after 300 steps it is mostly a record of the large gradients of the first 50 (the printed
# share). Second, what it records is gradient size, which mixes the curvature along a coordinate
# with how far that coordinate still had to move (on a quadratic, $g = H(\theta - \theta^*)$);
# the diagonal of $H$ is only part of it. The first reason is measured above; the second is a
# hypothesis this chapter does not test. (The "empirical Fisher" that $v$ resembles is
# a per-example quantity; Kunstner et al., 2019, show why it is not a curvature matrix either.)
#
# ## 3.6 Natural gradient
#
# Gradient descent depends on how the model is parameterized: rescale an input feature by 10 and
# the step in its weight changes by 100 relative to the others. Natural gradient preconditions
# with the Fisher information, $\theta \leftarrow \theta - \eta F^{-1}\nabla L$, and its steps are
# invariant to such reparameterizations (Amari, 1998). For logistic regression the Fisher is
# exact and cheap: $F = X^\top \mathrm{diag}(p(1-p)) X / n$. It is also the Hessian of the
# cross-entropy, $\nabla^2 L = X^\top \mathrm{diag}(p(1-p)) X / n$ (the labels drop out of the
# second derivative), so here natural gradient *is* damped Newton, the iteratively reweighted
# least squares of statistics (which takes $\eta = 1$; here $\eta = 0.5$). The cross-entropy is
# convex in $w$: no saddle to be attracted to.

# %%
g = torch.Generator().manual_seed(5)
Xl = torch.randn(200, 2, generator=g, dtype=f64)
yl = (
    Xl @ torch.tensor([2.0, -1.0], dtype=f64) + 0.5 * torch.randn(200, generator=g, dtype=f64) > 0
).double()
scale = torch.tensor([10.0, 0.1], dtype=f64)


def logistic_path(X, natural, steps=30, eta=0.5):
    Xb = torch.cat([X, torch.ones(len(X), 1, dtype=f64)], 1)
    w = torch.zeros(3, dtype=f64)
    preds, losses = [], [math.log(2)]  # w = 0 predicts 1/2 everywhere: loss ln 2 at step 0
    for _ in range(steps):
        p = torch.sigmoid(Xb @ w)
        grad = Xb.T @ (p - yl) / len(X)
        if natural:
            fisher = Xb.T @ (Xb * (p * (1 - p))[:, None]) / len(X)
            grad = torch.linalg.solve(fisher, grad)
        w = w - eta * grad
        preds.append(torch.sigmoid(Xb @ w))
        losses.append(torch.nn.functional.binary_cross_entropy(preds[-1], yl).item())
    return torch.stack(preds), losses, w


paths = {
    (nat, sc): logistic_path(Xl * scale if sc else Xl, nat)
    for nat in (False, True)
    for sc in (False, True)
}
ng_gap = (paths[True, False][0] - paths[True, True][0]).abs().max().item()
gd_gap = (paths[False, False][0] - paths[False, True][0]).abs().max().item()
print(
    f"largest change in any prediction when inputs are rescaled: natural gradient "
    f"{hamlib.below(ng_gap, 1e-13)}, "
    f"gradient descent {gd_gap:.2f}"
)
hamlib.check(
    "natural gradient makes the same predictions at every step after rescaling (1e-13)",
    ng_gap < 1e-13,
)
hamlib.check(
    "gradient descent does not: predictions change by more than 0.1",
    measured=gd_gap,
    above=0.1,
    spec=".2f",
)

# The Fisher is the Hessian here: compare with autograd's Hessian at the final weights
Xb = torch.cat([Xl, torch.ones(len(Xl), 1, dtype=f64)], 1)
w_end = paths[True, False][2]
p_end = torch.sigmoid(Xb @ w_end)
hess = torch.autograd.functional.hessian(
    lambda w: torch.nn.functional.binary_cross_entropy(torch.sigmoid(Xb @ w), yl), w_end
)
fisher_end = Xb.T @ (Xb * (p_end * (1 - p_end))[:, None]) / len(Xl)
print(
    "largest |Hessian - Fisher| entry: "
    f"{hamlib.below((hess - fisher_end).abs().max().item(), 1e-10)}"
)

# How far does each natural-gradient step move the predictions? The mean KL divergence between
# the Bernoulli predictions before and after the step:
nat_preds = torch.cat([torch.full((1, len(Xl)), 0.5, dtype=f64), paths[True, False][0]])
before, after = nat_preds[:-1], nat_preds[1:]
step_kl = (
    before * torch.log(before / after) + (1 - before) * torch.log((1 - before) / (1 - after))
).mean(1)
print(
    "KL moved by natural-gradient steps 1, 5, 10, 20:",
    " ".join(f"{step_kl[i]:.1e}" for i in (0, 4, 9, 19)),
)
per_step = (step_kl[19] / step_kl[14]).item() ** (1 / 5)
print(f"per-step factor of that KL over steps 15-20: {per_step:.4f}; (1 - eta)^2 = 0.25")
hamlib.check(
    "with a fixed eta = 0.5 the KL moved per step falls by (1 - eta)^2 = 1/4 per step, as damped "
    "Newton's linear convergence predicts (the next-order term is of the size of the remaining "
    "error, about 2^-15 of the start)",
    measured=per_step,
    target=0.25,
    tol=0.01,
    spec=".4f",
)

# %%
fig, ax = plt.subplots()
for (nat, sc), (_, losses, _) in paths.items():
    ax.plot(
        losses,
        color=CYCLE[0] if nat else CYCLE[1],
        ls="none" if nat and sc else ("--" if sc else "-"),
        marker="o" if nat and sc else None,
        ms=4,
        label=f"{'natural gradient' if nat else 'gradient descent'}, "
        f"{'inputs rescaled (10, 0.1)' if sc else 'original inputs'}"
        + (" (identical: markers on the line)" if nat and sc else ""),
    )
ax.set(
    xlabel="step",
    ylabel="training loss (cross-entropy)",
    title="Natural gradient is blind to the inputs' scale; GD is not",
)
ax.legend()
plt.show()

# %% [markdown]
# **"Natural gradient moves a constant distance on the manifold of distributions."** Not with a
# fixed step size: the KL divergence each step moves falls by a constant factor per step, as
# measured above, because the step is a fixed fraction of the Newton step and converges. What is
# true is the second-order identity behind trust-region methods: a step $\Delta\theta$ moves the
# model's distribution by $\mathrm{KL} \approx \tfrac12 \Delta\theta^\top F \Delta\theta$, so
# scaling the natural-gradient direction to make that quantity $\varepsilon$ moves a constant
# distance $\varepsilon$ per step (the normalization of TRPO, Schulman et al., 2015, and of
# K-FAC's step control, Martens & Grosse, 2015). The constant distance is a choice of step size,
# not a property of natural gradient.
#
# ## 3.7 Claims in circulation
#
# **"A critical point in $d$ dimensions is a minimum with probability $0.5^d$."** This treats the
# signs of the Hessian's eigenvalues as independent coin flips. For random symmetric matrices
# (the Gaussian orthogonal ensemble, the usual null model since Dauphin et al., 2014) eigenvalues
# repel each other, and the probability that all are positive falls like $e^{-c d^2}$ with
# $c = \ln 3/4$ for large $d$ (Dean & Majumdar, 2006), much faster than $0.5^d$. Sampled, with the
# number of positive-definite draws out of 200,000 (its relative standard error is
# $1/\sqrt{\text{count}}$, so the $d = 6$ entry is a rough one):

# %%
g = torch.Generator().manual_seed(6)
draws = 200_000
print(f"{'d':>3s}{'0.5^d':>10s}{'P(GOE positive definite)':>26s}{'count':>8s}")
goe, goe_count = {}, {}
for dim in range(1, 7):
    M = torch.randn(draws, dim, dim, generator=g, dtype=f64)
    sym = (M + M.transpose(1, 2)) / 2
    goe_count[dim] = int((torch.linalg.eigvalsh(sym)[:, 0] > 0).sum())
    goe[dim] = goe_count[dim] / draws
    print(f"{dim:3d}{0.5**dim:10.4f}{goe[dim]:26.5f}{goe_count[dim]:8d}")
# log P against d: a straight line for 0.5^d, a parabola of curvature -2c for exp(-c d^2).
# The second difference at d = 3 and its standard error (var(log count) = 1/count):
curv = math.log(goe[4]) - 2 * math.log(goe[3]) + math.log(goe[2])
curv_se = math.sqrt(1 / goe_count[4] + 4 / goe_count[3] + 1 / goe_count[2])
print(
    f"second difference of log P at d = 3: {curv:.2f} +- {curv_se:.2f} "
    f"(0.5^d: 0; exp(-c d^2): -2c = {-math.log(3) / 2:.2f})"
)
hamlib.check(
    "for random symmetric matrices P(minimum) falls far below 0.5^d: under 1/20 of it at d = 5",
    measured=goe[5] / 0.5**5,
    below=1 / 20,
    spec=".4f",
)
se_2d = math.sqrt(goe[2] * (1 - goe[2]) / draws)
hamlib.check(
    "the sampled 2-D value matches the exact (2 - sqrt 2)/4 within 3 standard errors",
    measured=goe[2],
    target=(2 - math.sqrt(2)) / 4,
    tol=3 * se_2d,
    spec=".4f",
)
hamlib.check(
    "log P bends down like -c d^2 (curvature -2c = -ln(3)/2), not along the straight line of "
    "0.5^d (curvature 0): the second difference at d = 3, within 2 standard errors",
    measured=curv,
    target=-math.log(3) / 2,
    tol=2 * curv_se,
    spec=".2f",
)

# %% [markdown]
# **Verdict:** neither model describes a trained network's critical points, but the coin-flip
# model is wrong even as a null model: independent signs is exactly what random matrices do not
# have. What the random-matrix picture of loss surfaces adds (Bray & Dean, 2007; Dauphin et al.,
# 2014) is that a critical point's index correlates with its loss: high up, critical points are
# mostly saddles; near the bottom, mostly minima. This chapter does not measure that correlation.
#
# **"Early in training the Hessian has many negative eigenvalues; they vanish at convergence."**
# Section 3.2 measured the fraction of clearly negative eigenvalues (below
# $-10^{-3}\lambda_{\max}$) at initialization and after training:

# %%
neg_init, neg_end = fractions["initialization"][0], fractions["after training"][0]
print(
    f"negative eigenvalues (below -1e-9): {neg_init:.1%} at initialization, {neg_end:.1%} after "
    f"training; the most negative shrinks {shrink:.0f}-fold, to "
    f"{spectra['after training'][0].item():.4f}"
)
hamlib.check(
    "after training the negative eigenvalues shrink over 100-fold in size",
    measured=shrink,
    above=100,
    spec=".0f",
)
hamlib.check(
    "but far fewer of them go away: over a tenth of all eigenvalues are still negative",
    measured=neg_end,
    above=0.1,
    spec=".3f",
)

# %% [markdown]
# But the end of that run is not "convergence": it is not a critical point at all. The training
# data are separated (training accuracy 1.000, printed in section 3.2), so the cross-entropy has no
# finite minimizer: it keeps falling as the weights grow, and the gradient after 300 steps is small
# but not zero (its norm is printed there). Negative eigenvalues at such a point say nothing about
# critical points. To test the claim, the loss needs a minimizer and the optimizer must reach it.
# Weight decay provides the first: $L(\theta) + \tfrac{\lambda}{2}|\theta|^2$ with
# $\lambda = 10^{-2}$ grows without bound as the weights do. For the second, gradient descent only
# creeps; `optim.minimize` runs L-BFGS to a gradient norm of $10^{-6}$ and then Newton steps with
# the exact Hessian, taken only where it is positive definite (section 3.1 showed why), to below
# $10^{-10}$. That takes thousands of L-BFGS iterations per start, so `make sweeps` did it for
# eight initializations and stored the points (`book/data/optimization_minima.json`, with the
# seconds each took); the chapter reloads the first and checks it live. The procedure cannot
# store a saddle: where the Hessian is not positive definite it refuses the Newton step, and the
# sweep records the start as failed.

# %%
minima = json.loads(Path("data/optimization_minima.json").read_text())
wd = minima["config"]["weight_decay"]
spot = make_net(minima["minima"][0]["seed"])
torch.nn.utils.vector_to_parameters(
    torch.tensor(minima["minima"][0]["params"], dtype=f64), spot.parameters()
)
spot_params = list(spot.parameters())


def regularized_loss():
    penalty = sum((p**2).sum() for p in spot_params)
    return torch.nn.functional.cross_entropy(spot(X_train), y_train) + 0.5 * wd * penalty


spot_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(regularized_loss(), spot_params)])
spot_ev = measure.hessian_spectrum(regularized_loss, spot_params)
print(
    f"stored minimum, seed 0: gradient norm {hamlib.below(spot_grad.norm().item(), 1e-9)}, "
    f"smallest Hessian eigenvalue {spot_ev[0].item():.2g}, largest {spot_ev[-1].item():.3f}"
)
hamlib.check(
    "the stored point is a critical point of the regularized loss (checked live)",
    measured=spot_grad.norm().item(),
    below=1e-9,
    machine_dependent=True,
)
hamlib.check(
    "and a minimum: its smallest Hessian eigenvalue is positive (checked live)",
    measured=spot_ev[0].item(),
    above=0,
    spec=".2g",
)
print(
    f"{'seed':>4s}{'loss':>9s}{'gradient':>10s}{'lambda_min':>12s}{'minus wd':>10s}"
    f"{'train acc':>11s}{'seconds':>9s}  failure"
)
for row in minima["minima"]:
    print(
        f"{row['seed']:4d}{row['loss']:9.4f}{row['grad_norm']:10.0e}{row['lambda_min']:12.2g}"
        f"{row['lambda_min'] - wd:10.4f}{row['train_acc']:11.3f}{row['seconds']:9.0f}  "
        f"{row['failure'] or 'none'}"
    )
losses_at_minima = np.array([row["loss"] for row in minima["minima"]])
gaps = np.abs(losses_at_minima[:, None] - losses_at_minima[None, :])[
    np.triu_indices(len(losses_at_minima), 1)
]
hamlib.check(
    f"all {len(minima['minima'])} starts reach a minimum: none stopped where the Hessian has a "
    "negative eigenvalue",
    all(row["failure"] is None for row in minima["minima"]),
)
hamlib.check(
    "they are different minima, not copies under the network's symmetries: every two losses differ "
    "(smallest gap, against round-off of about 1e-15)",
    measured=float(gaps.min()),
    above=1e-12,
    spec=".1e",
)
hamlib.check(
    "their losses agree to within 1% (spread over mean)",
    measured=float(np.ptp(losses_at_minima) / losses_at_minima.mean()),
    below=0.01,
    spec=".4f",
)
hamlib.check(
    "the smallest eigenvalue at the checked minimum is below the weight decay: the cross-entropy's "
    "own Hessian there has negative curvature, which the penalty outweighs",
    measured=spot_ev[0].item(),
    below=wd,
    spec=".2g",
)

# %% [markdown]
# **Verdict: true of the loss being minimized, by definition, and not of the data term.** At a
# minimum the Hessian of the loss that was minimized has no negative eigenvalue; that is what a
# minimum is. What the measurement adds is that descent gets there: every one of the eight
# starts reached a minimum and none stalled near a saddle (for gradient descent with a small
# step, Lee et al., 2016, prove that it almost never converges to one). But the cross-entropy's
# own Hessian there, the regularized one minus $\lambda I$, still has a negative eigenvalue of
# about $-\lambda$ (the "minus wd" column), ten times the size of the most negative one after
# Adam: the penalty, not the data, makes these points minima. And the residual negative
# eigenvalues of section 3.2, which Sagun et al. (2017) and Ghorbani et al. (2019) report for
# large networks too, belong to a point that is not critical: with cross-entropy on separable
# data, training could never finish. The eight minima are different points (no two share a loss,
# as copies under the network's symmetries would: permuting hidden units, flipping the sign of
# one) and their losses agree within 1%: no start was trapped in a poor local minimum. That is
# the observation behind "local minima are rare except near the global optimum", at this size and
# for eight starts; it says nothing of worse minima that descent from a random start does not
# find.
#
# **"Small batches find flatter minima that generalize better."** Section 3.4: the first half
# held, but mostly for another reason. At equal epochs batch 16 ended far flatter, yet most of
# that gap was progress (31 times more steps); at equal steps and equal training loss it was
# still flatter in every seed, by a much smaller margin. The second half did not hold: at equal
# steps, batch 16's test accuracy was not better by more than the experiment resolves (about 0.8
# points). The large accuracy gap at equal *epochs* came from training less, not from sharpness.
# One data set, one architecture, three seeds: a verdict on this setting, not on Keskar et al.'s
# ImageNet-scale networks.
#
# ## Summary

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - B. A. Pearlmutter. Fast exact multiplication by the Hessian. *Neural Computation* 6, 1994.
# - Y. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli, Y. Bengio. Identifying and attacking
#   the saddle point problem in high-dimensional non-convex optimization. *NeurIPS*, 2014.
# - D. S. Dean, S. N. Majumdar. Large deviations of extreme eigenvalues of random matrices.
#   *Physical Review Letters* 97, 2006.
# - L. Sagun, U. Evci, V. U. Guney, Y. Dauphin, L. Bottou. Empirical analysis of the Hessian of
#   over-parametrized neural networks. arXiv:1706.04454, 2017.
# - B. Ghorbani, S. Krishnan, Y. Xiao. An investigation into neural net optimization via Hessian
#   eigenvalue density. *ICML*, 2019.
# - J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar. Gradient descent on neural networks
#   typically occurs at the edge of stability. *ICLR*, 2021.
# - A. Lewkowycz, Y. Bahri, E. Dyer, J. Sohl-Dickstein, G. Gur-Ari. The large learning rate
#   phase of deep learning: the catapult mechanism. arXiv:2003.02218, 2020.
# - A. Damian, E. Nichani, J. D. Lee. Self-stabilization: the implicit bias of gradient descent at
#   the edge of stability. *ICLR*, 2023.
# - S. McCandlish, J. Kaplan, D. Amodei, OpenAI Dota Team. An empirical model of large-batch
#   training. arXiv:1812.06162, 2018.
# - N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang. On large-batch training
#   for deep learning: generalization gap and sharp minima. *ICLR*, 2017.
# - L. Dinh, R. Pascanu, S. Bengio, Y. Bengio. Sharp minima can generalize for deep nets. *ICML*,
#   2017.
# - D. P. Kingma, J. Ba. Adam: a method for stochastic optimization. *ICLR*, 2015.
# - I. Loshchilov, F. Hutter. Decoupled weight decay regularization. *ICLR*, 2019.
# - F. Kunstner, L. Balles, P. Hennig. Limitations of the empirical Fisher approximation for
#   natural gradient descent. *NeurIPS*, 2019.
# - S. Amari. Natural gradient works efficiently in learning. *Neural Computation* 10, 1998.
# - J. Schulman, S. Levine, P. Moritz, M. I. Jordan, P. Abbeel. Trust region policy optimization.
#   *ICML*, 2015.
# - J. Martens, R. Grosse. Optimizing neural networks with Kronecker-factored approximate
#   curvature. *ICML*, 2015.
# - V. Papyan. Measurements of three-level hierarchical structure in the outliers in the spectrum
#   of deepnet Hessians. *ICML*, 2019.
# - A. J. Bray, D. S. Dean. Statistics of critical points of Gaussian fields on large-dimensional
#   spaces. *Physical Review Letters* 98, 2007.
# - J. D. Lee, M. Simchowitz, M. I. Jordan, B. Recht. Gradient descent only converges to
#   minimizers. *COLT*, 2016.
# - S. L. Smith, Q. V. Le. A Bayesian perspective on generalization and stochastic gradient
#   descent. *ICLR*, 2018.
# - P. Goyal, P. Dollár, R. Girshick, P. Noordhuis, L. Wesolowski, A. Kyrola, A. Tulloch, Y. Jia,
#   K. He. Accurate, large minibatch SGD: training ImageNet in 1 hour. arXiv:1706.02677, 2017.
# - B. T. Polyak. Some methods of speeding up the convergence of iteration methods. *USSR
#   Computational Mathematics and Mathematical Physics* 4, 1964.
#
# ## Exercises
#
# **1. Lanczos against power iteration.** Power iteration, $v \leftarrow Hv/|Hv|$, also finds a top
# eigenvalue, one HVP per step. Count the products each method needs to match the exact top
# eigenvalue to $10^{-6}$, at initialization and after training.
#
# ```{admonition} Solution
# :class: dropdown
# Power iteration's vector converges like $(\lambda_2/\lambda_1)^k$ and its Rayleigh quotient,
# the eigenvalue estimate, like $(\lambda_2/\lambda_1)^{2k}$; Lanczos is much faster when the gap
# $\lambda_1 - \lambda_2$ is small relative to the spread of the spectrum; when one outlier
# dominates, as after training here, both converge in a handful of products. Power iteration
# also finds the eigenvalue of largest *magnitude*, which is the top one only when the most
# negative eigenvalue is smaller in size, true for both spectra here.
# ```


# %% tags=["hide-cell"]
def products_needed(loss_fn, ps, exact, tol=1e-6):
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(7), dtype=f64) for p in ps]
    power = None
    for k in range(1, 3001):
        hv = measure.hvp(loss_fn, ps, v)
        num = sum((a * b).sum() for a, b in zip(v, hv, strict=True)).item()
        estimate = num / sum((a * a).sum() for a in v).item()
        norm = math.sqrt(sum((h * h).sum().item() for h in hv))
        v = [h / norm for h in hv]
        if abs(estimate / exact - 1) < tol:
            power = k
            break
    lanczos_k = next(
        k
        for k in range(2, 200)
        if abs(
            measure.top_hessian_eigenvalue(
                loss_fn, ps, iters=k, generator=torch.Generator().manual_seed(7)
            )
            / exact
            - 1
        )
        < tol
    )
    return power, lanczos_k


init_net = make_net()  # the same initialization as section 3.2
init_params = list(init_net.parameters())
counts = {
    "initialization": products_needed(
        lambda: torch.nn.functional.cross_entropy(init_net(X_train), y_train),
        init_params,
        spectra["initialization"][-1].item(),
    ),
    "after training": products_needed(ce_loss, params, spectra["after training"][-1].item()),
}
for name, (pw, lz) in counts.items():
    print(f"{name:15s}: power iteration {pw} products, Lanczos {lz}")
hamlib.check(
    "exercise 1: Lanczos never needs more products than power iteration",
    all(lz <= pw for pw, lz in counts.values()),
)

# %% [markdown]
# **2. How long does noise take?** Repeat the saddle experiment of section 3.1 from $y_0 = 0$ with
# gradient noise of standard deviation $10^{-2}$, $10^{-4}$ and $10^{-6}$. How does the escape time
# scale with the noise level?
#
# ```{admonition} Solution
# :class: dropdown
# Noise puts $y$ at about the noise level $\sigma\eta$ in a step or two; from there the saddle
# amplifies it by $1 + 2\eta$ per step, so the escape time grows like
# $\log(0.1/\sigma)/\log(1 + 2\eta)$: logarithmically, about 12.6 more steps per factor of 10 here.
# ```

# %% tags=["hide-cell"]
times = {
    s: np.mean([escape_steps(0.0, noise=s, seed=i) for i in range(10)]) for s in [1e-2, 1e-4, 1e-6]
}
print({f"{s:g}": round(float(t), 1) for s, t in times.items()})
per_decade = (times[1e-6] - times[1e-2]) / 4
print(
    f"extra steps per factor of 10 less noise: {per_decade:.1f} (log(10)/log(1.2) = "
    f"{math.log(10) / math.log(1.2):.1f})"
)
# One escape time is k0 - log|Z| / log(1.2) (section 3.1), with sd(log|Z|) = pi / sqrt(8): a mean
# of 10 has a standard error of pi / sqrt(8) / log(1.2) / sqrt(10) = 1.9 steps, and the slope, a
# difference of two such means over 4 decades, sqrt(2) * 1.9 / 4 = 0.68 (less: shared seeds).
slope_se = math.sqrt(2) * math.pi / math.sqrt(8) / math.log(1.2) / math.sqrt(10) / 4
hamlib.check(
    "exercise 2: escape time grows by log(10)/log(1.2) = 12.6 steps per decade of less noise, "
    "within 3 standard errors",
    measured=per_decade,
    target=math.log(10) / math.log(1.2),
    tol=3 * slope_se,
    spec=".2f",
)

# %% [markdown]
# **3. When does a minibatch see the signal?** Section 3.4 found $B_{\rm simple}$ above the size
# of the training set after 100 steps. With batches drawn without replacement from $N$ examples,
# the noise in a minibatch gradient has expected squared norm
# $\frac{\mathrm{tr}\,\Sigma}{B}\frac{N-B}{N-1}$. At which batch size does it equal the signal
# $|G|^2$ at step 300? Check your formula by drawing batches of that size.
#
# ```{admonition} Solution
# :class: dropdown
# Setting $\frac{\mathrm{tr}\,\Sigma}{B}\frac{N-B}{N-1} = |G|^2$ with
# $B_{\rm simple} = \mathrm{tr}\,\Sigma/|G|^2$ gives $B^* = N B_{\rm simple}/(N - 1 +
# B_{\rm simple})$: finite even where $B_{\rm simple} > N$, and always below $N$, where the
# noise vanishes. Drawn batches of that size have noise equal to the signal within the Monte
# Carlo error.
# ```

# %% tags=["hide-cell"]
N_train, B_s = len(X_train), noise_scale[300]
B_star = N_train * B_s / (N_train - 1 + B_s)
G_full = grads_300.mean(0)
b = round(B_star)
g_draw = torch.Generator().manual_seed(8)
noise_sq = torch.stack(
    [
        ((grads_300[torch.randperm(N_train, generator=g_draw)[:b]].mean(0) - G_full) ** 2).sum()
        for _ in range(400)
    ]
)
ratio = (noise_sq.mean() / (G_full @ G_full)).item()
ratio_se = (noise_sq.std() / math.sqrt(len(noise_sq)) / (G_full @ G_full)).item()
# the rounding of B* to an integer shifts the expected ratio a little: the exact value at b
expected = B_s * (N_train - b) / (b * (N_train - 1))
print(f"B* = {B_star:.0f}; drawn batches of {b}: noise / signal = {ratio:.3f} +- {ratio_se:.3f}")
hamlib.check(
    "exercise 3: at B* the minibatch noise equals the signal, within 3 Monte Carlo standard errors",
    measured=ratio,
    target=expected,
    tol=3 * ratio_se,
)

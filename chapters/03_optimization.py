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
# **Run time:** under a minute on two CPU cores (the last code cell prints the measured time).

# %%
import hamlib

hamlib.setup()

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from hamlib import measure, optim
from hamlib.plotting import COLORS

f64 = torch.float64

# %% [markdown]
# ## 3.1 Critical points, saddles and the step-size limit
#
# At a critical point the gradient vanishes and the Hessian decides: all eigenvalues positive, a
# minimum; some negative, a *saddle*, with the number of negative eigenvalues its *index*. Near the
# saddle of $f(x, y) = x^2 - y^2 + y^4/4$ at the origin, gradient descent multiplies $y$ by
# $1 + 2\eta$ per step, so from $y_0$ it needs
# $\lceil \log(0.1/|y_0|) / \log(1 + 2\eta) \rceil$ steps to leave; from exactly $y_0 = 0$ it never
# leaves, and any noise in the gradient kicks it off:


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
hamlib.check(
    "from exactly y0 = 0 it never leaves; with noise 1e-3 it leaves within 100 steps",
    escape_steps(0.0) is None and max(noisy) < 100,
)

# %% [markdown]
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
# exactly, one backward pass per parameter, and compared with what the scalable estimators report.
# A Hessian-vector product costs about two gradients (Pearlmutter, 1994):

# %%
hamlib.show_source(measure.hvp)

# %%
digits = load_digits()
X_all = torch.tensor(digits.data / 16.0, dtype=f64)
y_all = torch.tensor(digits.target)
perm = torch.randperm(len(X_all), generator=torch.Generator().manual_seed(0))
X_train, y_train = X_all[perm[:1000]], y_all[perm[:1000]]
X_test, y_test = X_all[perm[1000:]], y_all[perm[1000:]]


def make_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)
    ).double()


def accuracy(net, X, y):
    with torch.no_grad():
        return (net(X).argmax(1) == y).double().mean().item()


net = make_net()
params = list(net.parameters())


def ce_loss():
    return torch.nn.functional.cross_entropy(net(X_train), y_train)


spectra = {"initialization": measure.hessian_spectrum(ce_loss, params)}
opt = optim.Adam(params, lr=1e-2)
for _ in range(300):
    opt.zero_grad()
    ce_loss().backward()
    opt.step()
spectra["after training"] = measure.hessian_spectrum(ce_loss, params)
print(
    f"after 300 Adam steps: train loss {ce_loss().item():.3f}, test accuracy "
    f"{accuracy(net, X_test, y_test):.3f}"
)

# %%
print(
    f"{'':16s}{'lambda_max':>11s}{'lambda_min':>11s}{'negative':>10s}{'near zero':>11s}"
    f"{'large':>8s}"
)
fractions = {}
for name, ev in spectra.items():
    top = ev[-1].item()
    fractions[name] = (
        (ev < -1e-3 * top).double().mean().item(),
        (ev.abs() <= 1e-3 * top).double().mean().item(),
        (ev > 0.1 * top).double().mean().item(),
    )
    print(
        f"{name:16s}{top:11.3f}{ev[0].item():11.4f}{fractions[name][0]:10.1%}"
        f"{fractions[name][1]:11.1%}{fractions[name][2]:8.1%}"
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
hamlib.check(
    "after training a handful of large eigenvalues (under 2%) stand out from the bulk",
    0 < fractions["after training"][2] < 0.02,
)

# %%
fig, ax = plt.subplots()
for (name, ev), color in zip(spectra.items(), [COLORS["muted"], COLORS["measured"]], strict=True):
    ax.hist(
        ev.numpy(),
        bins=np.linspace(-0.6, 1.2, 120),
        histtype="step",
        color=color,
        lw=1.5,
        label=f"{name} (top: {ev[-1].item():.2f})",
    )
ax.set(
    yscale="log",
    xlabel="Hessian eigenvalue",
    ylabel="count (log scale)",
    title="Hessian spectrum of a 1,210-parameter MLP: a bulk near 0 and a few outliers",
)
ax.legend()
plt.show()

# %% [markdown]
# The shape is the one reported for much larger networks (Sagun et al., 2017; Ghorbani et al.,
# 2019): a bulk of eigenvalues near zero, on both sides of it, and a few large outliers (with 10
# classes, of the order of 10). Most directions in parameter space barely change the loss.
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
hamlib.check("at eta = 0.1 sharpness rises but never reaches 2/eta = 20", eos[0.1][0].max() < 20)
hamlib.check(
    "at eta = 0.16 and 0.18 the sharpness overshoots 2/eta (its maximum lies above it)",
    all(eos[e][0].max() > 2 / e for e in [0.16, 0.18]),
)
hamlib.check(
    "at eta = 0.16 and 0.18 it settles at 2/eta: second-half mean within 3%",
    all(abs(eos[e][0][len(eos[e][0]) // 2 :].mean() * e / 2 - 1) < 0.03 for e in [0.16, 0.18]),
)
hamlib.check(
    "and the loss still decreases overall (final below 1/3 of initial) at the edge",
    all(eos[e][1][-1] < eos[e][1][0] / 3 for e in [0.16, 0.18]),
)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
steps = np.arange(0, 2001, 50)
for (eta, (sh, losses)), color in zip(
    eos.items(), [COLORS["muted"], COLORS["measured"], COLORS["reference"]], strict=True
):
    ax1.plot(steps, sh, color=color, label=f"eta = {eta}")
    ax1.axhline(2 / eta, color=color, ls=":", lw=1)
    ax2.semilogy(losses, color=color, lw=1, label=f"eta = {eta}")
ax1.set(
    xlabel="step",
    ylabel="sharpness (top Hessian eigenvalue)",
    ylim=(9, 21),
    title="Sharpness rises to 2/eta (dotted) and stays there",
)
ax2.set(xlabel="step", ylabel="training loss (MSE)", title="The loss keeps falling, unevenly")
ax1.legend()
ax2.legend()
plt.show()

# %% [markdown]
# The classical analysis says GD is stable only if the sharpness stays below $2/\eta$; here GD
# *drives* it to that value and keeps it there. The local quadratic model cannot explain this;
# the loss's third derivatives do (Damian et al., 2023, "self-stabilization").
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
# A minibatch gradient is the full gradient $G$ plus noise with covariance $\Sigma/B$. McCandlish et
# al. (2018) summarize the trade-off in one number, the simple noise scale
# $B_{\rm simple} = \mathrm{tr}(\Sigma)/|G|^2$: batches much smaller than it are noise-dominated,
# batches much larger waste computation. We compute it from exact per-example gradients
# (`torch.func.vmap`) at initialization and at the trained network of section 3.2:

# %%
hamlib.show_source(measure.gradient_noise_scale)


# %%
hamlib.show_source(measure.per_example_gradients)


# %%
def per_example_grads(model):
    return measure.per_example_gradients(model, torch.nn.functional.cross_entropy, X_train, y_train)


noise_scale = {}
tracked = make_net()
adam_t = optim.Adam(tracked.parameters(), lr=1e-2)
for step in range(301):
    if step in (0, 25, 100, 300):
        noise_scale[step] = measure.gradient_noise_scale(per_example_grads(tracked))
        shown = (
            "not measurable (|G|^2 estimate <= 0)"
            if math.isinf(noise_scale[step])
            else (f"{noise_scale[step]:.1f} examples")
        )
        print(f"B_simple after {step:3d} Adam steps: {shown}")
    adam_t.zero_grad()
    torch.nn.functional.cross_entropy(tracked(X_train), y_train).backward()
    adam_t.step()
hamlib.check(
    "the noise scale grows as training proceeds (0, 25, 100 steps): the signal |G| shrinks",
    noise_scale[0] < noise_scale[25] < noise_scale[100],
)

# %% [markdown]
# Folklore says small batches find flatter minima that generalize better (Keskar et al., 2017).
# We train with SGD at batch sizes 16 and 500 for the same number of epochs and learning rate,
# three seeds each, and measure the sharpness of the cross-entropy loss and the test accuracy:

# %%
batch_results = {}
runs_bs = [(16, 30), (500, 30), (500, 945)]  # (batch size, epochs): the last matches the steps
for batch, epochs in hamlib.progress(runs_bs, desc="batch sizes"):
    for seed in range(3):
        model = make_net(seed)
        sgd = optim.SGD(model.parameters(), lr=0.5)
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
        batch_results[batch, epochs, seed] = (
            sharp,
            loss_full().item(),
            accuracy(model, X_test, y_test),
        )
print(
    f"{'batch':>6s}{'epochs':>7s}{'seed':>5s}{'sharpness':>11s}{'train loss':>12s}{'test acc':>10s}"
)
for (batch, epochs, seed), (sharp, tl, acc) in batch_results.items():
    print(f"{batch:6d}{epochs:7d}{seed:5d}{sharp:11.3f}{tl:12.4f}{acc:10.3f}")

# %%
res = {cfg: np.array([batch_results[(*cfg, s)] for s in range(3)]) for cfg in runs_bs}
for (batch, epochs), r in res.items():
    print(
        f"batch {batch:3d}, {epochs:3d} epochs: mean sharpness {r[:, 0].mean():.3f}, "
        f"train loss {r[:, 1].mean():.4f}, "
        f"test accuracy {r[:, 2].mean():.3f} +- {r[:, 2].std():.3f}"
    )
small, large_epochs, large_steps = res[16, 30], res[500, 30], res[500, 945]
hamlib.check(
    "at equal epochs, batch 16 ends at lower sharpness than batch 500 in every seed",
    bool((small[:, 0] < large_epochs[:, 0]).all()),
)
hamlib.check(
    "at equal steps (same training loss) batch 16 is still flatter than batch 500 in every seed",
    bool((small[:, 0] < large_steps[:, 0]).all()),
)
acc_gap = small[:, 2].mean() - large_steps[:, 2].mean()
print(f"test accuracy, batch 16 minus batch 500 at equal steps: {acc_gap:+.3f}")
hamlib.check(
    "but its test accuracy is not better: within 0.01 of batch 500's at equal steps",
    abs(acc_gap) < 0.01,
)

# %% [markdown]
# What this measures, and what it does not. At equal epochs the small-batch runs take 31× more
# steps, so they are simply further along; the comparison confounds noise with progress. The
# third configuration gives batch 500 the same number of *steps*: compare its sharpness and test
# accuracy with batch 16's in the table, and note how much of the difference at equal epochs was
# progress rather than noise. Flatness is also not invariant to reparameterization (Dinh et al.,
# 2017): rescaling the layers of a ReLU network changes the sharpness without changing the
# function.
#
# ## 3.5 Adaptive methods, written out
#
# `hamlib.optim` writes out SGD, momentum, Adam and AdamW; each takes exactly the steps of its
# `torch.optim` counterpart (the test suite checks all four step by step). Adam's update:

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
    (ours - l2).abs().max() > 1e-3,
)

# %% [markdown]
# On an ill-conditioned quadratic, $L = \tfrac12\theta^\top A\theta$ with eigenvalues spread from 1
# to
# 100 in a *rotated* basis, how many steps does each method need to reduce the loss by $10^{-8}$?
# Each uses its best learning rate from a small grid:

# %%
rot, _ = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(3), dtype=f64))
A = rot @ torch.diag(torch.logspace(0, 2, 10, dtype=f64)) @ rot.T


def steps_to_tol(make_opt, tol=1e-8, max_steps=5000):
    theta = torch.ones(10, dtype=f64, requires_grad=True)
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


grid = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
best = {
    "GD, eta = 2/(L+mu)": steps_to_tol(lambda ps: optim.SGD(ps, lr=2 / 101)),
    "heavy ball, Polyak's tuning": steps_to_tol(
        lambda ps: optim.Momentum(ps, lr=4 / 11**2, momentum=(9 / 11) ** 2)
    ),
    "Adam, best lr of the grid": min(
        steps_to_tol(lambda ps, lr=lr: optim.Adam(ps, lr=lr)) for lr in grid
    ),
}
for name, n in best.items():
    print(f"{name:30s} {n:5d} steps")
hamlib.check(
    "heavy ball beats GD by over 5x on this quadratic (condition number 100)",
    best["GD, eta = 2/(L+mu)"] > 5 * best["heavy ball, Polyak's tuning"],
)

# %% [markdown]
# Adam divides each coordinate's step by a running root-mean-square of its gradient, which is
# sometimes described as a diagonal Hessian preconditioner. How well does Adam's scale track the
# Hessian diagonal of the trained network? We estimate the diagonal with Hutchinson's estimator,
# $\mathrm{diag}(H) = E[z \odot Hz]$ for random signs $z$, and compare it with $\sqrt{\hat v}$ from
# the
# Adam run of section 3.2:

# %%
g = torch.Generator().manual_seed(4)
diag_h = [torch.zeros_like(p) for p in params]
for _ in range(100):
    z = [torch.randint(0, 2, p.shape, generator=g).double() * 2 - 1 for p in params]
    for acc, zi, hz in zip(diag_h, z, measure.hvp(ce_loss, params, z), strict=True):
        acc += zi * hz / 100
adam_scale = torch.cat(
    [(opt.state[p]["v"] / (1 - 0.999 ** opt.state[p]["t"])).sqrt().reshape(-1) for p in params]
)
h_diag = torch.cat([d.reshape(-1) for d in diag_h])
rho = spearmanr(adam_scale.numpy(), h_diag.abs().numpy()).statistic
print(f"Spearman correlation between Adam's sqrt(v) and |diag H| over 1,210 parameters: {rho:.3f}")
hamlib.check(
    "Adam's per-coordinate scale is positively, not perfectly, correlated with |diag H|",
    0 < rho < 0.95,
)

# %% [markdown]
# The correlation is real but partial: $\sqrt{v}$ measures the size of gradients, which near a
# minimum reflects curvature times distance *plus gradient noise*, not the curvature alone
# (Kunstner et al., 2019, on why the "empirical Fisher" is not a curvature matrix).
#
# ## 3.6 Natural gradient
#
# Gradient descent depends on how the model is parameterized: rescale an input feature by 10 and
# the step in its weight changes by 100 relative to the others. Natural gradient preconditions
# with the Fisher information, $\theta \leftarrow \theta - \eta F^{-1}\nabla L$, and its steps are
# invariant to such reparameterizations (Amari, 1998). For logistic regression the Fisher is
# exact and cheap: $F = X^\top \mathrm{diag}(p(1-p)) X / n$.

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
    preds, losses = [], []
    for _ in range(steps):
        p = torch.sigmoid(Xb @ w)
        grad = Xb.T @ (p - yl) / len(X)
        if natural:
            fisher = Xb.T @ (Xb * (p * (1 - p))[:, None]) / len(X)
            grad = torch.linalg.solve(fisher, grad)
        w = w - eta * grad
        preds.append(torch.sigmoid(Xb @ w))
        losses.append(torch.nn.functional.binary_cross_entropy(preds[-1], yl).item())
    return torch.stack(preds), losses


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
hamlib.check("gradient descent does not: predictions change by more than 0.1", gd_gap > 0.1)

# %%
fig, ax = plt.subplots()
for (nat, sc), (_, losses) in paths.items():
    ax.plot(
        losses,
        color=COLORS["measured"] if nat else COLORS["reference"],
        ls="--" if sc else "-",
        label=f"{'natural gradient' if nat else 'gradient descent'}, "
        f"{'inputs rescaled (10, 0.1)' if sc else 'original inputs'}",
    )
ax.set(
    xlabel="step",
    ylabel="training loss (cross-entropy)",
    title="Natural gradient is blind to the inputs' scale; GD is not",
)
ax.legend()
plt.show()

# %% [markdown]
# ## 3.7 Claims in circulation
#
# **"A critical point in $d$ dimensions is a minimum with probability $0.5^d$."** This treats the
# signs of the Hessian's eigenvalues as independent coin flips. For random symmetric matrices
# (the Gaussian orthogonal ensemble, the usual null model since Dauphin et al., 2014) eigenvalues
# repel each other, and the probability that all are positive falls like $e^{-c d^2}$ (Dean &
# Majumdar, 2006), much faster than $0.5^d$. Sampled:

# %%
g = torch.Generator().manual_seed(6)
print(f"{'d':>3s}{'0.5^d':>10s}{'P(GOE positive definite)':>26s}")
goe = {}
for dim in range(1, 7):
    M = torch.randn(200_000, dim, dim, generator=g, dtype=f64)
    sym = (M + M.transpose(1, 2)) / 2
    goe[dim] = (torch.linalg.eigvalsh(sym)[:, 0] > 0).double().mean().item()
    print(f"{dim:3d}{0.5**dim:10.4f}{goe[dim]:26.5f}")
hamlib.check(
    "for random symmetric matrices P(minimum) falls far below 0.5^d: under 1/20 of it at d = 5",
    goe[5] < 0.5**5 / 20,
)
hamlib.check(
    "and matches the exact 2-D value (2 - sqrt 2)/4 = 0.1464 to 0.005",
    abs(goe[2] - (2 - math.sqrt(2)) / 4) < 0.005,
)

# %% [markdown]
# **Verdict:** neither model describes a trained network's critical points, but the coin-flip
# model is wrong even as a null model: independent signs is exactly what random matrices do not
# have.
#
# **"Early in training the Hessian has many negative eigenvalues; they vanish at convergence."**
# Section 3.2 measured it: the fraction of clearly negative eigenvalues (below
# $-10^{-3}\lambda_{\max}$)
# at initialization and after training is printed in its table.

# %%
neg_init, neg_end = fractions["initialization"][0], fractions["after training"][0]
print(
    f"negative fraction: {neg_init:.1%} at initialization, {neg_end:.1%} after training; "
    f"most negative eigenvalue after training: {spectra['after training'][0].item():.4f}"
)
shrink = spectra["initialization"][0].item() / spectra["after training"][0].item()
hamlib.check(
    "the negative fraction falls from over 10% to under 2%, the most negative eigenvalue shrinks "
    "over 100-fold, yet it is still negative",
    neg_init > 0.1 and neg_end < 0.02 and shrink > 100 and spectra["after training"][0] < 0,
)

# %% [markdown]
# **Verdict: mostly true here, but "vanish" is too strong.** Negative curvature is common at
# initialization and nearly gone after training, yet a small fraction of slightly negative
# eigenvalues remains after the training loss has flattened out, as Sagun et al. (2017) and
# Ghorbani et al. (2019) report for large networks: training ends in a very flat, slightly
# non-convex region, not at a strict minimum.
#
# **"Small batches find flatter minima that generalize better."** Section 3.4: the first half
# held (batch 16 ended flatter in every seed, even at an equal number of steps and an equal
# training loss); the second did not (at equal steps its test accuracy was no better, within the
# seed-to-seed spread). The large gap at equal *epochs* came from training less, not from
# sharpness.
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
#
# ## Exercises
#
# **1. Lanczos against power iteration.** Power iteration, $v \leftarrow Hv/|Hv|$, also finds a top
# eigenvalue, one HVP per step. Count the products each method needs to match the exact top
# eigenvalue to $10^{-6}$, at initialization and after training.
#
# ```{admonition} Solution
# :class: dropdown
# Power iteration converges like $(\lambda_2/\lambda_1)^k$ and Lanczos much faster when the gap
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
hamlib.check(
    "exercise 2: escape time grows by 12.6 +- 2 steps per decade of less noise",
    abs(per_decade - math.log(10) / math.log(1.2)) < 2,
)

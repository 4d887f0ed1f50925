# %% [markdown]
# # 2. Variational inference and the ELBO
#
# A latent-variable model explains data $x$ through unobserved causes $z$. Learning it needs the
# *evidence* $p(x)$, an integral over all causes that no computer can do exactly, and inference
# needs the posterior $p(z \mid x)$, which is that integral again. Variational inference replaces
# the integral by an optimization. This chapter derives the bound it optimizes, verifies the
# derivation to machine precision where everything is known in closed form, and then trains a
# variational autoencoder and measures what its bound, its tighter cousins and its knobs do.
#
# **You will be able to** derive the ELBO two ways and check it exactly; compute and sanity-check
# KL divergences, and predict which way a fitted Gaussian leans; compare gradient estimators by
# their variance; train a VAE and report test ELBO, IWAE bounds, active units and a
# rate–distortion curve; and say precisely what the KL term does and does not measure.
#
# **Run time:** under a minute on two CPU cores (the last code cell prints the measured time).

# %%
import hamlib

hamlib.setup()

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.optimize import minimize
from scipy.stats import norm
from sklearn.datasets import load_digits

from hamlib import vi
from hamlib.plotting import COLORS

f64 = torch.float64
D = torch.distributions

# %% [markdown]
# ## 2.1 Why the evidence is intractable
#
# With a prior $p(z)$ and a likelihood $p(x \mid z)$, the evidence is
# $p(x) = \int p(x \mid z)\,p(z)\,dz$. For a neural decoder this integral has no closed form, and
# the obvious Monte Carlo estimate, $\frac1N \sum_n p(x \mid z_n)$ with $z_n \sim p(z)$, fails in
# an instructive way: almost no prior sample explains a given $x$, so the average is dominated by
# the rare sample that does. We can watch it fail on a model where the exact answer is known, the
# linear-Gaussian model $z \sim \mathcal N(0, I_k)$,
# $x \mid z \sim \mathcal N(Wz + b, \sigma^2 I_d)$,
# for which $x \sim \mathcal N(b, WW^\top + \sigma^2 I)$:

# %%
d, k, sigma = 30, 10, 0.3
g = torch.Generator().manual_seed(0)
basis, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=f64))
W = basis * torch.linspace(3.0, 1.0, k, dtype=f64)  # orthogonal columns
b = torch.randn(d, generator=g, dtype=f64)
x_obs = (
    torch.randn(k, generator=g, dtype=f64) @ W.T
    + b
    + sigma * torch.randn(d, generator=g, dtype=f64)
)
log_px = vi.linear_gaussian_evidence(x_obs, W, b, sigma).item()
print(f"exact log p(x) = {log_px:.3f}")
naive = {}
for n in [10, 1_000, 100_000]:
    naive[n] = []
    for _ in range(5):
        z = torch.randn(n, k, generator=g, dtype=f64)
        log_lik = D.Normal(z @ W.T + b, sigma).log_prob(x_obs).sum(-1)
        naive[n].append((torch.logsumexp(log_lik, 0) - math.log(n)).item())
    print(
        f"naive Monte Carlo, {n:>7,} prior samples, 5 repeats: log p(x) ~ "
        + ", ".join(f"{v:.1f}" for v in naive[n])
    )
hamlib.check(
    "with 100,000 prior samples all five estimates still fall short by over 0.5 nats",
    all(v < log_px - 0.5 for v in naive[100_000]),
)

# %% [markdown]
# ## 2.2 The evidence lower bound, derived two ways
#
# **Jensen.** For any density $q(z)$ that is positive where the posterior is,
#
# $$
# \log p(x) = \log E_{q}\Big[\frac{p(x, z)}{q(z)}\Big] \;\ge\; E_q\big[\log p(x, z) - \log q(z)\big]
# = \underbrace{E_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p(z))}_{\mathrm{ELBO}(q)} .
# $$
#
# **The exact gap.** Writing $p(x, z) = p(z \mid x)\,p(x)$ inside the expectation,
#
# $$
# \log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}\big(q \,\|\, p(z \mid x)\big) .
# $$
#
# So maximizing the ELBO over $q$ *is* minimizing the KL divergence to the posterior, and the
# bound is tight exactly when $q$ is the posterior. In the linear-Gaussian model every term is
# available in closed form: the ELBO of a diagonal Gaussian $q$ (no sampling), $\log p(x)$, and the
# posterior $\mathcal N(m, S)$ with $S = (I + W^\top W/\sigma^2)^{-1}$:

# %%
hamlib.show_source(vi.linear_gaussian_elbo)

# %% [markdown]
# We take several $q$: random ones, one with the right mean and the wrong variances, and the
# posterior itself, which a diagonal $q$ can represent here because $W$'s columns are orthogonal,
# so $S$ is diagonal. For each we compare $\log p(x) - \mathrm{ELBO}(q)$ with
# $\mathrm{KL}(q \,\|\, p(z \mid x))$, the latter computed independently by
# `torch.distributions`:

# %%
m, S = vi.linear_gaussian_posterior(x_obs, W, b, sigma)
posterior = D.MultivariateNormal(m, covariance_matrix=S)
candidates = {
    "random q (1)": (
        torch.randn(k, generator=g, dtype=f64),
        torch.randn(k, generator=g, dtype=f64),
    ),
    "random q (2)": (
        torch.randn(k, generator=g, dtype=f64),
        torch.randn(k, generator=g, dtype=f64),
    ),
    "posterior mean, unit variance": (m, torch.zeros(k, dtype=f64)),
    "the posterior": (m, torch.log(S.diagonal())),
}
print(f"{'q':32s}{'ELBO':>10s}{'log p(x) - ELBO':>17s}{'KL(q || posterior)':>20s}")
gaps = {}
for name, (mu_q, logvar_q) in candidates.items():
    elbo = vi.linear_gaussian_elbo(x_obs, W, b, sigma, mu_q, logvar_q).item()
    kl = D.kl_divergence(D.MultivariateNormal(mu_q, torch.diag(logvar_q.exp())), posterior).item()
    gaps[name] = (log_px - elbo, kl)
    gap_shown, kl_shown = round(log_px - elbo, 6) + 0.0, round(kl, 6) + 0.0  # no "-0.000000"
    print(f"{name:32s}{elbo:10.3f}{gap_shown:17.6f}{kl_shown:20.6f}")

# %%
hamlib.check(
    "log p(x) - ELBO(q) equals KL(q || posterior) to 1e-9 for every q",
    all(abs(gap - kl) < 1e-9 for gap, kl in gaps.values()),
)
hamlib.check(
    "the gap is zero (below 1e-9) at q = posterior and positive elsewhere",
    abs(gaps["the posterior"][0]) < 1e-9
    and all(gap > 1e-3 for n, (gap, _) in gaps.items() if n != "the posterior"),
)

# %% [markdown]
# ## 2.3 KL divergence: a closed form, and a direction
#
# For diagonal Gaussians the KL divergence has a closed form, summed over coordinates; this is the
# term every Gaussian VAE computes:

# %%
hamlib.show_source(vi.gaussian_kl)

# %%
mu, logvar = torch.randn(3, 4, generator=g, dtype=f64), torch.randn(3, 4, generator=g, dtype=f64)
mu_p, logvar_p = (
    torch.randn(3, 4, generator=g, dtype=f64),
    torch.randn(3, 4, generator=g, dtype=f64),
)
closed = vi.gaussian_kl(mu, logvar, mu_p, logvar_p)
q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
p = D.Independent(D.Normal(mu_p, (0.5 * logvar_p).exp()), 1)
z = q.sample((400_000,))
mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
mc_se = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(400_000)
print("closed form:       ", [f"{v:.4f}" for v in closed.tolist()])
print("torch.distributions:", [f"{v:.4f}" for v in D.kl_divergence(q, p).tolist()])
print("Monte Carlo (4e5): ", [f"{v:.4f}" for v in mc.tolist()])
hamlib.check(
    "closed-form KL equals torch.distributions' to 1e-12",
    torch.allclose(closed, D.kl_divergence(q, p), atol=1e-12),
)
hamlib.check(
    "and Monte Carlo within 4 standard errors", bool(((closed - mc).abs() < 4 * mc_se).all())
)

# %% [markdown]
# KL is not symmetric, and the direction decides what a fitted approximation looks like. Fit one
# Gaussian $q$ to a mixture of two well-separated Gaussians $p$, once by minimizing
# $\mathrm{KL}(q \,\|\, p)$ (the direction variational inference uses) and once by
# $\mathrm{KL}(p \,\|\, q)$ (the direction of maximum likelihood). We integrate on a fine grid, so
# both objectives are exact up to quadrature:

# %%
grid = np.linspace(-10, 10, 20_001)
dx = grid[1] - grid[0]
p_mix = 0.5 * norm.pdf(grid, -2, 0.6) + 0.5 * norm.pdf(grid, 2, 0.6)


def kl_grid(a, b_):
    mask = a > 1e-300
    return float(np.sum(a[mask] * (np.log(a[mask]) - np.log(np.maximum(b_[mask], 1e-300)))) * dx)


def fit(direction):
    def objective(theta):
        q_ = norm.pdf(grid, theta[0], math.exp(theta[1]))
        return kl_grid(q_, p_mix) if direction == "reverse" else kl_grid(p_mix, q_)

    return minimize(
        objective,
        x0=[0.5, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 4000},
    ).x


reverse, forward = fit("reverse"), fit("forward")
var_p = 0.6**2 + 2.0**2
print(f"KL(q||p), mode-seeking:   mean {reverse[0]:.3f}, std {math.exp(reverse[1]):.3f}")
forward_mean = np.round(forward[0], 3) + 0.0  # + 0.0 turns a -0.0 into 0.0
print(
    f"KL(p||q), mass-covering:  mean {forward_mean:.3f}, std {math.exp(forward[1]):.3f} "
    f"(the mixture's own std: {math.sqrt(var_p):.3f})"
)

# %%
fig, ax = plt.subplots()
ax.plot(grid, p_mix, color=COLORS["theory"], label="p: mixture of two Gaussians")
ax.plot(
    grid,
    norm.pdf(grid, reverse[0], math.exp(reverse[1])),
    color=COLORS["measured"],
    label="argmin KL(q || p): sits on one mode",
)
ax.plot(
    grid,
    norm.pdf(grid, forward[0], math.exp(forward[1])),
    color=COLORS["reference"],
    label="argmin KL(p || q): covers both",
)
ax.set(
    xlim=(-6, 6),
    xlabel="x",
    ylabel="density",
    title="Reverse KL seeks a mode, forward KL matches moments",
)
ax.legend()
plt.show()
hamlib.check(
    "reverse KL puts q on one mode (|mean| within 0.05 of 2, std within 0.05 of 0.6)",
    abs(abs(reverse[0]) - 2) < 0.05 and abs(math.exp(reverse[1]) - 0.6) < 0.05,
)
hamlib.check(
    "forward KL matches the mixture's mean and variance (to 1e-3)",
    abs(forward[0]) < 1e-3 and abs(math.exp(2 * forward[1]) - var_p) < 1e-3,
)

# %% [markdown]
# ## 2.4 Two gradient estimators
#
# Training maximizes $E_{q_\phi}[f(z)]$ over the parameters $\phi$ of $q$, so it needs the gradient
# of an expectation. The *score-function* (REINFORCE) estimator uses
# $\nabla_\phi E_q[f] = E_q[f(z)\,\nabla_\phi \log q_\phi(z)]$ and needs only values of $f$. The
# *reparameterization* estimator writes $z = \mu + \sigma\epsilon$ with
# $\epsilon \sim \mathcal N(0, 1)$
# and differentiates through $f$: $\nabla_\mu E[f] = E[f'(\mu + \sigma\epsilon)]$. Both are
# unbiased; their variances differ:

# %%
hamlib.show_source(vi.reparam_and_score_gradients)


# %%
def f(z):
    return (z - 3.0) ** 2  # E_q f = (mu - 3)^2 + sigma^2, so the exact gradient is 2 (mu - 3)


reparam, score = vi.reparam_and_score_gradients(
    f, 1.0, math.log(0.5), 100_000, torch.Generator().manual_seed(1)
)
print(f"exact gradient: {2 * (1.0 - 3.0):.3f}")
print(f"reparameterization: mean {reparam.mean().item():.3f}, variance {reparam.var().item():.3f}")
print(f"score function:     mean {score.mean().item():.3f}, variance {score.var().item():.3f}")
ratio = score.var().item() / reparam.var().item()
print(f"variance ratio score / reparameterization: {ratio:.1f}")
hamlib.check(
    "both estimators are unbiased: means within 4 standard errors of -4",
    abs(reparam.mean().item() + 4) < 4 * reparam.std().item() / math.sqrt(100_000)
    and abs(score.mean().item() + 4) < 4 * score.std().item() / math.sqrt(100_000),
)
hamlib.check("on this objective the score function's variance is over 10x larger", ratio > 10)

# %% [markdown]
# ## 2.5 A variational autoencoder on handwritten digits
#
# A VAE learns $p_\theta(x \mid z)$ and an *amortized* posterior approximation
# $q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))$ together, by
# maximizing
# the ELBO averaged over the data with reparameterized gradients (Kingma & Welling, 2014; Rezende
# et al., 2014). Data: scikit-learn's 1,797 digits of 8×8 pixels, binarized at half intensity,
# 1,437 for training and 360 for testing. Model: 8 latent dimensions, one hidden layer of 128
# units each way, a Bernoulli decoder.

# %%
hamlib.show_source(vi.VAE.elbo)

# %%
X = torch.tensor(load_digits().data > 7, dtype=torch.float32)
perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
x_train, x_test = X[perm[:1437]], X[perm[1437:]]
torch.manual_seed(0)
vae = vi.VAE(n_in=64, n_latent=8, hidden=128)
history = vi.train_vae(
    vae, x_train, epochs=150, generator=torch.Generator().manual_seed(1), x_test=x_test
)
with torch.no_grad():
    _, ll_test, kl_test = vae.elbo(x_test, generator=torch.Generator().manual_seed(2))
test_elbo = (ll_test - kl_test).mean().item()
print(
    f"after 150 epochs: train ELBO {history.elbo[-1]:.2f} nats, test ELBO {test_elbo:.2f} nats "
    f"(= {ll_test.mean().item():.2f} reconstruction - {kl_test.mean().item():.2f} KL)"
)
print(f"active latent units: {vi.active_units(vae, x_test)} of 8")

# %%
fig, ax = plt.subplots()
epochs = np.arange(1, 151)
ax.plot(epochs, history.elbo, color=COLORS["measured"], label="ELBO (train)")
ax.plot(epochs, history.test_elbo, color=COLORS["reference"], label="ELBO (test)")
ax.plot(epochs, history.loglik, color=COLORS["muted"], ls="--", label="E log p(x|z) (train)")
ax.plot(
    epochs,
    [-v for v in history.kl],
    color=COLORS["highlight"],
    ls="--",
    label="-KL(q || prior) (train)",
)
ax.set(
    xlabel="epoch",
    ylabel="nats per digit",
    ylim=(-45, 0),
    title="VAE training: the ELBO and its two terms",
)
ax.legend()
plt.show()
hamlib.check(
    "the test ELBO is within 2 nats of the training ELBO (no severe overfitting)",
    abs(test_elbo - history.elbo[-1]) < 2,
)

# %%
with torch.no_grad():
    mu_t, _ = vae.encode(x_test[:8])
    recon = torch.sigmoid(vae.decode(mu_t))
    samples = torch.sigmoid(
        vae.decode(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))
    )
    dim = int(vae.encode(x_test)[0].var(0).argmax())
    sweep = torch.zeros(8, 8)
    sweep[:, dim] = torch.linspace(-2.5, 2.5, 8)
    traversal = torch.sigmoid(vae.decode(sweep))
fig, axes = plt.subplots(4, 8, figsize=(8, 4.4))
rows = [
    ("test digit", x_test[:8]),
    ("reconstruction", recon),
    ("sample from prior", samples),
    (f"latent {dim} from -2.5 to 2.5", traversal),
]
for r, (label, imgs) in enumerate(rows):
    for c in range(8):
        axes[r, c].imshow(imgs[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[r, c].set(xticks=[], yticks=[], frame_on=False)
    axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("Digits, reconstructions (decoder mean), samples, and a latent traversal")
plt.show()

# %% [markdown]
# ## 2.6 Tighter bounds: importance weighting
#
# Averaging $K$ importance weights before taking the log gives the IWAE bound (Burda et al., 2016),
#
# $$
# \mathcal L_K = E\Big[\log \frac1K \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k \mid x)}\Big], \qquad
# \mathcal L_1 = \mathrm{ELBO} \le \mathcal L_K \le \mathcal L_{K+1} \le \log p(x),
# $$
#
# with $\mathcal L_K \to \log p(x)$ as $K \to \infty$. We evaluate it on the test set with the
# trained model (the same model: only the bound changes):

# %%
hamlib.show_source(vi.iwae_bound)

# %%
iwae = {}
for K in [1, 5, 50, 500]:
    log_w = vae.log_weights(x_test, K, generator=torch.Generator().manual_seed(4))
    iwae[K] = vi.iwae_bound(log_w)
    print(f"K = {K:3d}: test bound = {iwae[K].mean().item():.3f} nats")
values = [iwae[K].mean().item() for K in [1, 5, 50, 500]]
se_1 = iwae[1].std().item() / math.sqrt(len(x_test))
hamlib.check(
    "the IWAE bound rises monotonically with K = 1, 5, 50, 500",
    all(a < b for a, b in zip(values, values[1:], strict=False)),
)
hamlib.check(
    "at K = 1 it equals the ELBO (analytic-KL estimate) within 3 standard errors",
    abs(values[0] - test_elbo) < 3 * se_1,
)
print(f"gap between the ELBO and the K = 500 bound: {values[-1] - test_elbo:.2f} nats")

# %% [markdown]
# ## 2.7 Rate and distortion
#
# Weighting the KL term, $E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}$ (the $\beta$-VAE of Higgins et
# al., 2017), trades the two terms of the ELBO against each other. Read the KL as a *rate* (nats
# the code carries about $x$) and $-E_q[\log p(x \mid z)]$ as a *distortion* (Alemi et al., 2018):
# each $\beta$ picks a point on a rate–distortion curve. We train one model per $\beta$ (fewer
# epochs than above) and count active latent units:

# %%
betas = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
rd = {}
for beta in hamlib.progress(betas, desc="beta sweep"):
    torch.manual_seed(0)
    model = vi.VAE(n_in=64, n_latent=8, hidden=128)
    vi.train_vae(model, x_train, epochs=60, beta=beta, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, ll, kl = model.elbo(x_test, generator=torch.Generator().manual_seed(2))
    rd[beta] = (kl.mean().item(), -ll.mean().item(), vi.active_units(model, x_test))
    print(
        f"beta = {beta:4}: rate {rd[beta][0]:6.2f} nats, distortion {rd[beta][1]:6.2f} nats, "
        f"active units {rd[beta][2]}"
    )

# %%
torch.manual_seed(0)
rescued = vi.VAE(n_in=64, n_latent=8, hidden=128)
vi.train_vae(
    rescued, x_train, epochs=60, beta=8.0, free_bits=0.5, generator=torch.Generator().manual_seed(1)
)
with torch.no_grad():
    _, ll, kl = rescued.elbo(x_test, generator=torch.Generator().manual_seed(2))
rescue = (kl.mean().item(), -ll.mean().item(), vi.active_units(rescued, x_test))
print(
    f"beta = 8 with free bits (0.5 nats per dimension): rate {rescue[0]:.2f}, "
    f"distortion {rescue[1]:.2f}, active units {rescue[2]}"
)

fig, ax = plt.subplots()
rates, dists = [rd[b_][0] for b_ in betas], [rd[b_][1] for b_ in betas]
ax.plot(rates, dists, "o-", color=COLORS["measured"], label="beta-VAE, one model per beta")
for b_, r_, d_ in zip(betas, rates, dists, strict=True):
    ax.annotate(f"beta={b_:g}", (r_, d_), textcoords="offset points", xytext=(5, 4), fontsize=8)
ax.plot([rescue[0]], [rescue[1]], "s", color=COLORS["reference"], label="beta = 8 with free bits")
ax.set(
    xlabel="rate: E KL(q(z|x) || p(z)) [nats]",
    ylabel="distortion: -E log p(x|z) [nats]",
    title="Rate-distortion trade-off on test digits",
)
ax.legend()
plt.show()

# %%
hamlib.check(
    "rate falls and distortion rises monotonically as beta grows",
    all(
        rd[a][0] > rd[b_][0] and rd[a][1] < rd[b_][1]
        for a, b_ in zip(betas, betas[1:], strict=False)
    ),
)
hamlib.check(
    "at beta = 8 the posterior collapses: rate below 0.1 nats and no active unit",
    rd[8.0][0] < 0.1 and rd[8.0][2] == 0,
)
hamlib.check(
    "free bits prevent the collapse at beta = 8: every latent unit active again", rescue[2] == 8
)

# %% [markdown]
# At $\beta = 8$ the cheapest way to buy the KL penalty down is to ignore $z$ altogether: the
# encoder
# returns the prior for every digit and the decoder learns the average digit. This *posterior
# collapse* also appears at $\beta = 1$ with decoders powerful enough to model $x$ without $z$
# (Bowman et al., 2016). Free bits (Kingma et al., 2016) stop paying for KL below a floor of
# $\lambda$ nats per dimension, so using a dimension a little is free; KL annealing, which ramps
# $\beta$ up from 0 during training, is the other common fix.
#
# ## 2.8 Claims in circulation
#
# **"The KL term of the ELBO *is* the information bottleneck's $I(X; Z)$."** Not quite. With the
# data distribution $p_d(x)$ and the aggregate posterior $q(z) = E_{p_d}[q(z \mid x)]$, an exact
# identity (Hoffman & Johnson, 2016) splits the average KL term in two:
#
# $$
# E_{p_d}\,\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)
# = I_q(X; Z) + \mathrm{KL}\big(q(z) \,\|\, p(z)\big)
# \;\ge\; I_q(X; Z).
# $$
#
# The average KL is an *upper bound* on the mutual information between data and code under the
# encoder, equal to it only when the aggregate posterior matches the prior. On the trained VAE we
# estimate $I_q(X;Z)$ with the test set as the data distribution (the aggregate posterior is then
# an exact mixture of 360 Gaussians), so it cannot exceed $\log 360$:


# %%
@torch.no_grad()
def mutual_information(model, x, n_z=20, seed=5):
    mu_x, logvar_x = model.encode(x)
    std_x = (0.5 * logvar_x).exp()
    z = mu_x + std_x * torch.randn(
        (n_z, *mu_x.shape), generator=torch.Generator().manual_seed(seed)
    )
    log_q_own = D.Normal(mu_x, std_x).log_prob(z).sum(-1)  # (n_z, N)
    log_q_all = D.Normal(mu_x, std_x).log_prob(z.unsqueeze(-2)).sum(-1)  # (n_z, N, N)
    log_q_agg = torch.logsumexp(log_q_all, dim=-1) - math.log(len(x))
    return (log_q_own - log_q_agg).mean().item()


mi = mutual_information(vae, x_test)
mean_kl = kl_test.mean().item()
print(
    f"average KL term: {mean_kl:.2f} nats; I_q(X; Z): {mi:.2f} nats; log 360 = {math.log(360):.2f}"
)
hamlib.check("I_q(X; Z) is below the average KL term", mi < mean_kl)
hamlib.check("and below log N, as it must be for N data points", mi < math.log(len(x_test)))

# %% [markdown]
# **Verdict:** the KL term upper-bounds the information the code carries; the two differ by how
# far the aggregate posterior is from the prior (here by the amount printed above).
#
# **"Diffusion models are hierarchical VAEs."** True with a qualification. A diffusion model is a
# latent-variable model with a chain of latents $x_1, \dots, x_T$ whose "encoder"
# $q(x_{1:T} \mid x_0)$ is *fixed* (it adds Gaussian noise) rather than learned, and it is trained
# on a variational bound of the same form as the ELBO (Sohl-Dickstein et al., 2015). DDPM's
# popular loss, the unweighted noise-prediction error, is that bound with its per-step weights
# dropped, i.e. a *reweighted* ELBO (Ho et al., 2020); Kingma et al. (2021) make the connection
# exact and show how the weighting relates to the ELBO. So: a hierarchical VAE with a fixed
# encoder, usually trained on a reweighted bound, not on the ELBO itself.
#
# ## Summary

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - D. P. Kingma, M. Welling. Auto-encoding variational Bayes. *ICLR*, 2014.
# - D. J. Rezende, S. Mohamed, D. Wierstra. Stochastic backpropagation and approximate inference in
#   deep generative models. *ICML*, 2014.
# - D. M. Blei, A. Kucukelbir, J. D. McAuliffe. Variational inference: a review for statisticians.
#   *JASA* 112, 2017.
# - R. J. Williams. Simple statistical gradient-following algorithms for connectionist
#   reinforcement learning. *Machine Learning* 8, 1992.
# - Y. Burda, R. Grosse, R. Salakhutdinov. Importance weighted autoencoders. *ICLR*, 2016.
# - I. Higgins et al. beta-VAE: learning basic visual concepts with a constrained variational
#   framework. *ICLR*, 2017.
# - A. Alemi, B. Poole, I. Fischer, J. Dillon, R. A. Saurous, K. Murphy. Fixing a broken ELBO.
#   *ICML*, 2018.
# - S. R. Bowman, L. Vilnis, O. Vinyals, A. M. Dai, R. Jozefowicz, S. Bengio. Generating sentences
#   from a continuous space. *CoNLL*, 2016.
# - D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved
#   variational inference with inverse autoregressive flow. *NeurIPS*, 2016.
# - M. D. Hoffman, M. J. Johnson. ELBO surgery: yet another way to carve up the variational
#   evidence lower bound. *NeurIPS Workshop on Advances in Approximate Bayesian Inference*, 2016.
# - J. Sohl-Dickstein, E. Weiss, N. Maheswaranathan, S. Ganguli. Deep unsupervised learning using
#   nonequilibrium thermodynamics. *ICML*, 2015.
# - J. Ho, A. Jain, P. Abbeel. Denoising diffusion probabilistic models. *NeurIPS*, 2020.
# - D. P. Kingma, T. Salimans, B. Poole, J. Ho. Variational diffusion models. *NeurIPS*, 2021.
#
# ## Exercises
#
# **1. Mean field on a correlated posterior.** Rotate $W$ so that the posterior covariance $S$ is no
# longer diagonal. The best diagonal Gaussian $q$ has the posterior mean and variances
# $1/(S^{-1})_{jj}$. Check that it beats nearby diagonal $q$'s and that its gap is positive.
#
# ```{admonition} Solution
# :class: dropdown
# Minimizing $\mathrm{KL}(q \,\|\, \mathcal N(m, S))$ over diagonal $q$ gives $\mu_q = m$ and
# $1/\sigma_j^2 = (S^{-1})_{jj}$: the reverse KL matches the *precision*, so mean field
# underestimates the marginal variances $S_{jj}$. The gap cannot close: a diagonal $q$ cannot
# represent the correlations.
# ```

# %% tags=["hide-cell"]
rot, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(7), dtype=f64))
W_rot = W @ rot * torch.linspace(0.7, 1.5, k, dtype=f64)
m_r, S_r = vi.linear_gaussian_posterior(x_obs, W_rot, b, sigma)
best_logvar = -torch.log(torch.linalg.inv(S_r).diagonal())
best = vi.linear_gaussian_elbo(x_obs, W_rot, b, sigma, m_r, best_logvar).item()
nearby = [
    vi.linear_gaussian_elbo(
        x_obs,
        W_rot,
        b,
        sigma,
        m_r + 0.01 * torch.randn(k, dtype=f64),
        best_logvar + 0.01 * torch.randn(k, dtype=f64),
    ).item()
    for _ in range(20)
]
gap_r = vi.linear_gaussian_evidence(x_obs, W_rot, b, sigma).item() - best
print(
    f"best mean-field ELBO {best:.4f}; best of 20 perturbations {max(nearby):.4f}; gap {gap_r:.4f}"
)
hamlib.check(
    "exercise 1: the mean-field optimum beats its perturbations and leaves a positive gap",
    best > max(nearby) and gap_r > 1e-6,
)

# %% [markdown]
# **2. A baseline for REINFORCE.** Subtracting a constant $c$ from $f$ leaves the score-function
# estimator unbiased (since $E_q[\nabla \log q] = 0$) but changes its variance. Use $c = E_q[f]$ and
# measure the variance ratio against reparameterization again.
#
# ```{admonition} Solution
# :class: dropdown
# The baseline removes the part of $f$ that does not vary with $z$, which is most of the variance
# here. The estimator stays unbiased; the printed ratio shows how much of the gap to the
# reparameterization estimator it closes.
# ```

# %% tags=["hide-cell"]
c = (1.0 - 3.0) ** 2 + 0.5**2
reparam_b, score_b = vi.reparam_and_score_gradients(
    lambda z: f(z) - c, 1.0, math.log(0.5), 100_000, torch.Generator().manual_seed(1)
)
ratio_b = score_b.var().item() / reparam_b.var().item()
print(
    f"with baseline: mean {score_b.mean().item():.3f}, variance ratio {ratio_b:.2f} "
    f"(without: {ratio:.1f})"
)
hamlib.check(
    "exercise 2: the baseline keeps the estimator unbiased and cuts its variance",
    abs(score_b.mean().item() + 4) < 0.1 and ratio_b < ratio,
)

# %% [markdown]
# **3. IWAE converges to the evidence.** In the linear-Gaussian model of section 2.1, use the
# prior as the proposal $q$ (the worst reasonable choice) and the exact posterior as another.
# How fast does each $\mathcal L_K$ approach the exact $\log p(x)$?
#
# ```{admonition} Solution
# :class: dropdown
# With the posterior as proposal every weight equals $p(x)$ and $\mathcal L_K = \log p(x)$ for every
# $K$. With the prior the weights are the likelihoods of section 2.1, and the bound creeps up
# slowly, the same failure as naive Monte Carlo, now as a lower bound.
# ```


# %% tags=["hide-cell"]
def iwae_linear(proposal, K):
    z = proposal.sample((K,))
    log_lik = D.Normal(z @ W.T + b, sigma).log_prob(x_obs).sum(-1)
    log_joint = log_lik + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return vi.iwae_bound(log_joint - proposal.log_prob(z)).item()


torch.manual_seed(8)
prior = D.Independent(D.Normal(torch.zeros(k, dtype=f64), torch.ones(k, dtype=f64)), 1)
for K in [1, 100, 10_000]:
    print(
        f"K = {K:6d}: prior proposal {iwae_linear(prior, K):9.3f}, "
        f"posterior proposal {iwae_linear(posterior, K):.6f}, exact {log_px:.6f}"
    )
hamlib.check(
    "exercise 3: with the posterior as proposal the bound equals log p(x) to 1e-9 at K = 1",
    abs(iwae_linear(posterior, 1) - log_px) < 1e-9,
)

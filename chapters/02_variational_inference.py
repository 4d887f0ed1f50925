# %% [markdown]
# # 2. Variational inference and the ELBO
#
# A latent-variable model explains data $x$ through unobserved causes $z$. Learning it needs the
# *evidence* $p(x)$, an integral over all causes that has no closed form for most models worth
# fitting, and inference needs the posterior $p(z \mid x)$, which is that integral again.
# Variational inference replaces the integral by an optimization. This chapter derives the bound
# it optimizes, verifies the derivation to machine precision where everything is known in closed
# form, and then trains a variational autoencoder and measures what its bound, its tighter
# cousins and its knobs do.
#
# **You will be able to** derive the ELBO two ways and check it exactly; compute and sanity-check
# KL divergences, and predict which way a fitted Gaussian leans; compare gradient estimators by
# their variance; train a VAE and report test ELBO, IWAE bounds, the KL carried by each latent
# unit and a rate–distortion curve; split the gap of the bound into its amortization and
# approximation parts; and say precisely what the KL term does and does not measure.
#
# **Run time:** under a minute on two CPU cores (the cell after the summary, before the
# exercises, prints the measured time).

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
naive, ess = {}, {}
for n in [10, 1_000, 100_000]:
    naive[n], ess[n] = [], []
    for _ in range(5):
        z = torch.randn(n, k, generator=g, dtype=f64)
        log_lik = D.Normal(z @ W.T + b, sigma).log_prob(x_obs).sum(-1)
        naive[n].append((torch.logsumexp(log_lik, 0) - math.log(n)).item())
        # effective sample size (sum w)^2 / sum w^2 of the weights w = p(x | z_n)
        ess[n].append((2 * torch.logsumexp(log_lik, 0) - torch.logsumexp(2 * log_lik, 0)).exp())
    print(
        f"naive Monte Carlo, {n:>7,} prior samples, 5 repeats: log p(x) ~ "
        + ", ".join(f"{v:.1f}" for v in naive[n])
    )
print(
    "effective sample size (sum w)^2 / sum w^2 of the 100,000-sample estimates: "
    + ", ".join(f"{v:.2f}" for v in ess[100_000])
)
hamlib.check(
    "with 100,000 prior samples even the best of five estimates falls short of log p(x) "
    "by over 0.5 nats, that is, underestimates p(x) by a factor over e^0.5 = 1.65",
    measured=log_px - max(naive[100_000]),
    above=0.5,
)

# %% [markdown]
# The effective sample size says why: the 100,000 weights $w_n = p(x \mid z_n)$ count as between
# one and about three equal ones, because one or two of them dwarf the rest. How many samples
# are needed has a sharp answer: importance sampling with proposal $q$ (here the prior) becomes
# accurate only with a sample size of about $e^{\mathrm{KL}(p(z \mid x) \,\|\, q)}$ (Chatterjee &
# Diaconis, 2018). The usual claim is that the integral gets hard "exponentially in the
# dimension". That holds when each latent coordinate adds its share of
# $\mathrm{KL}(p(z \mid x) \,\|\, p(z))$, so that $e^{\mathrm{KL}}$ grows exponentially in
# $k$. We test it by repeating the construction for $k = 2, 5, 10, 20$ (same $d$, $\sigma$ and
# spread of column norms), each time with 100,000 prior samples and five repeats:

# %%
g_dim = torch.Generator().manual_seed(20)
kl_dim, short_dim = {}, {}
print(f"{'k':>3s}{'KL(post || prior)':>19s}{'e^KL':>10s}{'ESS (median)':>14s}{'shortfall':>26s}")
for k_ in [2, 5, 10, 20]:
    basis_, _ = torch.linalg.qr(torch.randn(d, k_, generator=g_dim, dtype=f64))
    W_ = basis_ * torch.linspace(3.0, 1.0, k_, dtype=f64)
    b_ = torch.randn(d, generator=g_dim, dtype=f64)
    x_ = torch.randn(k_, generator=g_dim, dtype=f64) @ W_.T + b_
    x_ = x_ + sigma * torch.randn(d, generator=g_dim, dtype=f64)
    m_, S_ = vi.linear_gaussian_posterior(x_, W_, b_, sigma)
    kl_dim[k_] = D.kl_divergence(
        D.MultivariateNormal(m_, covariance_matrix=S_),
        D.MultivariateNormal(torch.zeros(k_, dtype=f64), torch.eye(k_, dtype=f64)),
    ).item()
    exact_ = vi.linear_gaussian_evidence(x_, W_, b_, sigma).item()
    shorts, esss = [], []
    for _ in range(5):
        z = torch.randn(100_000, k_, generator=g_dim, dtype=f64)
        log_lik = D.Normal(z @ W_.T + b_, sigma).log_prob(x_).sum(-1)
        shorts.append(exact_ - (torch.logsumexp(log_lik, 0) - math.log(100_000)).item())
        esss.append((2 * torch.logsumexp(log_lik, 0) - torch.logsumexp(2 * log_lik, 0)).exp())
    short_dim[k_] = shorts
    print(
        f"{k_:3d}{kl_dim[k_]:19.1f}{math.exp(kl_dim[k_]):10.1e}{float(np.median(esss)):14.1f}"
        f"{min(shorts):13.2f} to {max(shorts):.2f}"
    )
hamlib.check(
    "at k = 2, where e^KL is far below 100,000, every repeat is within 0.1 nats of log p(x) "
    "(largest |shortfall|)",
    measured=max(abs(v) for v in short_dim[2]),
    below=0.1,
)
hamlib.check(
    "at k = 10 and 20, where e^KL is far above 100,000, every repeat falls short by over "
    "10 nats (smallest shortfall)",
    measured=min(short_dim[10] + short_dim[20]),
    above=10,
)

# %% [markdown]
# From $k = 5$ on, each latent coordinate adds about 2 nats of
# $\mathrm{KL}(p(z \mid x) \,\|\, p(z))$, so
# the sample size the estimate needs, $e^{\mathrm{KL}}$, is multiplied by about $e^2 \approx 7$
# per dimension. With 100,000 samples the estimate is accurate at $k = 2$ ($e^{\mathrm{KL}}$ about
# 14), erratic at $k = 5$ (about $2 \times 10^4$, and an effective sample size of a few), and
# hopeless from $k = 10$ on. The difficulty is exponential in the KL, and the KL here is linear in
# $k$; a model whose posterior is no narrower than its prior in most directions would not have
# that problem, whatever its dimension.

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
    "and Monte Carlo within 4 standard errors (largest deviation, in standard errors)",
    measured=((closed - mc).abs() / mc_se).max().item(),
    below=4,
)

# %% [markdown]
# KL is not symmetric, and the direction decides what a fitted approximation looks like. Fit one
# Gaussian $q$ to a mixture of two well-separated Gaussians $p$, once by minimizing
# $\mathrm{KL}(q \,\|\, p)$ (the direction variational inference uses) and once by
# $\mathrm{KL}(p \,\|\, q)$ (the direction of maximum likelihood). We integrate on a fine grid, so
# both objectives are exact up to quadrature. What to expect in the second direction is known:
# over Gaussians $q$, $\mathrm{KL}(p \,\|\, q) = -E_p[\log q] + \text{const}$ is minimized by
# matching $q$'s mean and variance to $p$'s (moment matching, true of any exponential family), so
# the forward fit must land on the mixture's mean 0 and variance $0.6^2 + 2^2 = 4.36$:

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
    "reverse KL puts q on one mode: |mean| near the component's 2",
    measured=abs(reverse[0]),
    target=2.0,
    tol=0.05,
    spec=".3f",
)
hamlib.check(
    "and std near the component's 0.6", measured=math.exp(reverse[1]), target=0.6, tol=0.05
)
hamlib.check(
    "forward KL matches the mixture's variance (its mean, 0, is matched to 1e-3 too)",
    measured=math.exp(2 * forward[1]),
    target=var_p,
    tol=1e-3,
    spec=".5f",
)
hamlib.check("forward KL's mean is the mixture's mean, 0, to 1e-3", abs(forward[0]) < 1e-3)

# %% [markdown]
# ## 2.4 Two gradient estimators
#
# Training maximizes $E_{q_\phi}[f(z)]$ over the parameters $\phi$ of $q$, so it needs the gradient
# of an expectation. The *score-function* (REINFORCE; Williams, 1992) estimator uses
# $\nabla_\phi E_q[f] = E_q[f(z)\,\nabla_\phi \log q_\phi(z)]$ and needs only values of $f$. The
# *reparameterization* estimator writes $z = \mu + \sigma\epsilon$ with
# $\epsilon \sim \mathcal N(0, 1)$
# and differentiates through $f$: $\nabla_\mu E[f] = E[f'(\mu + \sigma\epsilon)]$. Both are
# unbiased; their variances differ. For $f(z) = (z - 3)^2$, $\mu = 1$, $\sigma = \tfrac12$ both
# variances are exact: with $a = \mu - 3$, the reparameterization estimate $2(a + \sigma\epsilon)$
# has variance $4\sigma^2 = 1$, and the score estimate $(a + \sigma\epsilon)^2\epsilon/\sigma$
# has variance $(a^4 + 18a^2\sigma^2 + 15\sigma^4)/\sigma^2 - 4a^2 = 123.75$ (Gaussian moments
# $E\epsilon^2 = 1$, $E\epsilon^4 = 3$, $E\epsilon^6 = 15$). We compare the sample variances of
# 100,000 draws with these values, allowing four standard errors of a sample variance,
# $\sqrt{(m_4 - s^4)/n}$ with $m_4$ the fourth central sample moment:

# %%
hamlib.show_source(vi.reparam_and_score_gradients)


# %%
def f(z):
    return (z - 3.0) ** 2  # E_q f = (mu - 3)^2 + sigma^2, so the exact gradient is 2 (mu - 3)


reparam, score = vi.reparam_and_score_gradients(
    f, 1.0, math.log(0.5), 100_000, torch.Generator().manual_seed(1)
)
a_, s_ = 1.0 - 3.0, 0.5
exact_var = {
    "reparam": 4 * s_**2,
    "score": (a_**4 + 18 * a_**2 * s_**2 + 15 * s_**4) / s_**2 - 4 * a_**2,
}


def var_se(v):  # standard error of the sample variance
    return math.sqrt((((v - v.mean()) ** 4).mean().item() - v.var().item() ** 2) / len(v))


print(f"exact gradient: {2 * a_:.3f}")
for name, est in [("reparam", reparam), ("score", score)]:
    print(
        f"{name:8s} mean {est.mean().item():.3f}, variance {est.var().item():.1f} "
        f"(exact {exact_var[name]:.2f}, standard error {var_se(est):.2g})"
    )
for name, est in [("reparameterization", reparam), ("score-function", score)]:
    hamlib.check(
        f"the {name} estimator is unbiased: mean -4 within 4 standard errors",
        measured=est.mean().item(),
        target=-4.0,
        tol=4 * est.std().item() / math.sqrt(len(est)),
        spec=".3f",
    )
hamlib.check(
    "the score function's variance is the exact 123.75, within 4 standard errors",
    measured=score.var().item(),
    target=exact_var["score"],
    tol=4 * var_se(score),
    spec=".4g",
)

# %% [markdown]
# The same two routes give the gradient in $\sigma$: $f'(z)\,\epsilon$ by reparameterization and
# $f(z)\,(\epsilon^2 - 1)/\sigma$ by the score, both with mean $\partial_\sigma E f = 2\sigma = 1$
# and exact variances $4(a^2 + 2\sigma^2) = 18$ and
# $(2a^4 + 60a^2\sigma^2 + 78\sigma^4)/\sigma^2 - 4\sigma^2 = 386.5$:

# %%
eps = torch.randn(100_000, generator=torch.Generator().manual_seed(1), dtype=f64)
z = 1.0 + s_ * eps
d_sigma = {"reparam": 2 * (z - 3.0) * eps, "score": (z - 3.0) ** 2 * (eps**2 - 1) / s_}
exact_var_sigma = {
    "reparam": 4 * (a_**2 + 2 * s_**2),
    "score": (2 * a_**4 + 60 * a_**2 * s_**2 + 78 * s_**4) / s_**2 - 4 * s_**2,
}
for name, est in d_sigma.items():
    print(
        f"d/dsigma, {name:8s} mean {est.mean().item():.3f}, variance {est.var().item():.1f} "
        f"(exact {exact_var_sigma[name]:.1f}, standard error {var_se(est):.1f})"
    )
hamlib.check(
    "for sigma too the score function's variance is the exact 386.5, within 4 standard errors",
    measured=d_sigma["score"].var().item(),
    target=exact_var_sigma["score"],
    tol=4 * var_se(d_sigma["score"]),
    spec=".4g",
)

# %% [markdown]
# ## 2.5 A variational autoencoder on handwritten digits
#
# A VAE learns $p_\theta(x \mid z)$ and an *amortized* posterior approximation
# $q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma^2_\phi(x))$ together, by
# maximizing
# the ELBO averaged over the data with reparameterized gradients (Kingma & Welling, 2014; Rezende
# et al., 2014). Data: scikit-learn's 1,797 digits of 8×8 pixels, binarized at half intensity,
# 1,437 for training and 360 for testing. Model: 8 latent dimensions, one hidden layer of 128
# units each way, a Bernoulli decoder. One reparameterized sample per digit estimates
# $E_q[\log p(x \mid z)]$; the KL term is exact:

# %%
hamlib.show_source(vi.VAE.elbo)

# %% [markdown]
# A Bernoulli decoder suits binary pixels. For real-valued data the usual choice is a Gaussian
# decoder $p(x \mid z) = \mathcal N(f_\theta(z), \sigma^2 I_d)$, and then
# $-\log p(x \mid z) = \|x - f_\theta(z)\|^2 / (2\sigma^2) + \tfrac d2 \log(2\pi\sigma^2)$, so
# $-2\sigma^2\,\mathrm{ELBO} = E_q\|x - f_\theta(z)\|^2 + 2\sigma^2\,\mathrm{KL} + \text{const}$.
# An autoencoder trained on squared error plus $\lambda$ times the KL is therefore exactly a
# Gaussian-decoder VAE with $\sigma^2 = \lambda/2$ (an identity, so nothing to check), and
# "squared error with a small KL weight" means "a decoder that claims very little noise".
#
# Training is minibatch Adam on the negative objective. The curve it records, `history.elbo`, is
# the average of the minibatch ELBOs over an epoch, each taken with the parameters of that
# moment: a running average, not the ELBO of the final model.

# %%
hamlib.show_source(vi.train_vae)

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
    _, ll_train, kl_train = vae.elbo(x_train, generator=torch.Generator().manual_seed(2))
test_elbo = (ll_test - kl_test).mean().item()
train_elbo = (ll_train - kl_train).mean().item()
A = hamlib.approx  # training results: their last digits depend on the processor
print(
    f"after 150 epochs: train ELBO {A(train_elbo, '.2f')} nats, test ELBO {A(test_elbo, '.2f')} "
    f"nats (= {A(ll_test.mean().item(), '.2f')} reconstruction "
    f"- {A(kl_test.mean().item(), '.2f')} KL)"
)

# %%
fig, ax = plt.subplots()
epochs = np.arange(1, 151)
ax.plot(
    epochs, history.elbo, color=COLORS["measured"], label="ELBO (train, running mean over epoch)"
)
ax.plot(epochs, history.test_elbo, color=COLORS["reference"], label="ELBO (test)")
ax.plot(
    epochs,
    history.loglik,
    color=COLORS["muted"],
    ls="--",
    label="E log p(x|z) (train, running mean)",
)
ax.plot(
    epochs,
    [-v for v in history.kl],
    color=COLORS["highlight"],
    ls="--",
    label="-KL(q || prior) (train, running mean)",
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
    "no severe overfitting: the final model's train ELBO exceeds its test ELBO by under 2 nats, "
    "a tenth of the test ELBO's size",
    measured=train_elbo - test_elbo,
    below=2,
    machine_dependent=True,
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
    ("decoder mean, z ~ prior", samples),
    (f"latent {dim} from -2.5 to 2.5", traversal),
]
for r, (label, imgs) in enumerate(rows):
    for c in range(8):
        axes[r, c].imshow(imgs[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[r, c].set(xticks=[], yticks=[], frame_on=False)
    axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=11)
fig.suptitle("Test digits, and decoder means for encoded, prior and swept z")
plt.show()

# %% [markdown]
# The reconstructions are close to their digits, but several of the decoder means for $z$ drawn
# from the prior (third row) are blurred blends that are not recognizable digits: the prior puts
# mass where the encoder sends few or no training digits, a mismatch between the prior and the
# aggregate posterior that section 2.8 measures. Looking at eight samples is no measurement of
# sample quality, and this chapter makes none.

# %% [markdown]
# ## 2.6 Tighter bounds: importance weighting
#
# Averaging $K$ importance weights before taking the log gives the IWAE bound (Burda et al., 2016),
#
# $$
# \mathcal L_K = E\Big[\log \frac1K \sum_{j=1}^K \frac{p(x, z_j)}{q(z_j \mid x)}\Big], \qquad
# \mathcal L_1 = \mathrm{ELBO} \le \mathcal L_K \le \mathcal L_{K+1} \le \log p(x),
# $$
#
# with $\mathcal L_K \to \log p(x)$ as $K \to \infty$. We evaluate it on the test set with the
# trained model (the same model: only the bound changes). The log-weights come from the encoder's
# $q$, and the bound is their log-mean-exp:

# %%
hamlib.show_source(vi.VAE.log_weights)

# %%
hamlib.show_source(vi.iwae_bound)

# %%
iwae = {}
for K in [1, 5, 50, 500]:
    log_w = vae.log_weights(x_test, K, generator=torch.Generator().manual_seed(4))
    iwae[K] = vi.iwae_bound(log_w)
    print(f"K = {K:3d}: test bound = {A(iwae[K].mean().item(), '.2f')} nats")
values = [iwae[K].mean().item() for K in [1, 5, 50, 500]]
se_1 = iwae[1].std().item() / math.sqrt(len(x_test))
print(
    "sanity check, K = 1 against the analytic-KL ELBO: difference "
    f"{A(abs(values[0] - test_elbo) / se_1, '.1f')} standard errors"
)
rises = [iwae[Kb] - iwae[Ka] for Ka, Kb in [(1, 5), (5, 50), (50, 500)]]  # paired per digit
steps = [r.mean().item() / (r.std().item() / math.sqrt(len(x_test))) for r in rises]
hamlib.check(
    "the IWAE bound rises from K = 1 to 5 and from 5 to 50 (smaller rise, in standard errors)",
    measured=min(steps[:2]),
    above=4,
    machine_dependent=True,
)
print(
    f"rise from K = 50 to 500: {A(rises[2].mean().item(), '.2f')} nats, "
    f"{A(steps[2], '.1f')} standard errors"
)
iwae_gap = values[-1] - test_elbo
print(f"gap between the ELBO and the K = 500 bound: {A(iwae_gap, '.2f')} nats")

# %% [markdown]
# The $K = 1$ line is a sanity check of the code, not a finding: both numbers estimate the same
# ELBO. The bound has nearly levelled off by $K = 50$: the last rise is a few hundredths of a nat,
# about two standard errors, too small to resolve on 360 digits. The gap is the finding. Since
# $\mathcal L_{500} \le \log p(x)$, the gap $\mathcal L_{500} - \mathrm{ELBO}$ is a *lower bound* on
# $\log p(x) - \mathrm{ELBO} = E\,\mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x))$: the encoder's $q$
# misses the true posterior by at least that many nats per digit, on average.
#
# **Amortization or approximation?** Part of that gap is there because one network must produce
# $q$ for every digit (the *amortization gap*), part because no diagonal Gaussian fits the
# posterior (the *approximation gap*; Cremer, Li & Duvenaud, 2018). To split them we keep the
# decoder and, for each test digit separately, optimize $(\mu, \log\sigma^2)$ of $q$ by
# reparameterized gradient ascent on its own ELBO, starting from the encoder's output (100 Adam
# steps, 8 samples per step). The best diagonal $q$ is at least that good, so
# $\mathrm{ELBO}_{\text{per-digit}} - \mathrm{ELBO}_{\text{encoder}}$ is a lower bound on the
# amortization gap. The per-digit $q$'s own gap, $\log p(x) - \mathrm{ELBO}_{\text{per-digit}}$,
# is at least the IWAE bound of that $q$ ($K = 500$) minus its ELBO; it contains the approximation
# gap *and* whatever the 100 steps left unfinished, so it bounds neither part alone:


# %%
def elbo_many(mu, logvar, n, seed):  # ELBO of q = N(mu, diag e^logvar) with n samples per digit
    eps = torch.randn((n, *mu.shape), generator=torch.Generator().manual_seed(seed))
    z = mu + (0.5 * logvar).exp() * eps
    return vi.bernoulli_log_likelihood(vae.decode(z), x_test).mean(0) - vi.gaussian_kl(mu, logvar)


vae.requires_grad_(False)  # the decoder stays fixed; only each digit's q moves
with torch.no_grad():
    mu_enc, logvar_enc = vae.encode(x_test)
mu_loc, logvar_loc = mu_enc.clone().requires_grad_(), logvar_enc.clone().requires_grad_()
opt = torch.optim.Adam([mu_loc, logvar_loc], lr=0.05)
for step in range(100):
    if step == 50:  # keep the halfway point, to see how far the optimization has converged
        mu_half, logvar_half = mu_loc.detach().clone(), logvar_loc.detach().clone()
    opt.zero_grad()
    (-elbo_many(mu_loc, logvar_loc, 8, seed=100 + step).sum()).backward()
    opt.step()
vae.requires_grad_(True)
with torch.no_grad():
    elbo_enc = elbo_many(mu_enc, logvar_enc, 100, seed=6)
    elbo_half = elbo_many(mu_half, logvar_half, 100, seed=6)
    elbo_loc = elbo_many(mu_loc, logvar_loc, 100, seed=6)
    eps = torch.randn((500, *mu_loc.shape), generator=torch.Generator().manual_seed(7))
    z = mu_loc + (0.5 * logvar_loc).exp() * eps
    log_w = (
        vi.bernoulli_log_likelihood(vae.decode(z), x_test)
        + D.Normal(0.0, 1.0).log_prob(z).sum(-1)
        - D.Normal(mu_loc, (0.5 * logvar_loc).exp()).log_prob(z).sum(-1)
    )
    iwae_loc = vi.iwae_bound(log_w)  # one valid lower bound on log p(x), per digit
amortization = elbo_loc - elbo_enc
gap_loc = iwae_loc - elbo_loc
last_50 = elbo_loc - elbo_half
print(
    f"ELBO with the encoder's q {A(elbo_enc.mean().item(), '.2f')}, with per-digit q "
    f"{A(elbo_half.mean().item(), '.2f')} after 50 steps and "
    f"{A(elbo_loc.mean().item(), '.2f')} after 100 nats"
)
print(
    f"amortization gap >= {A(amortization.mean().item(), '.2f')} nats; gap of the per-digit "
    f"optimized q >= {A(gap_loc.mean().item(), '.2f')} nats (IWAE bound of that q "
    f"{A(iwae_loc.mean().item(), '.2f')})"
)
hamlib.check(
    "the amortization gap is positive (per-digit q beats the encoder; in standard errors)",
    measured=amortization.mean().item() / (amortization.std().item() / math.sqrt(len(x_test))),
    above=4,
    machine_dependent=True,
)
hamlib.check(
    "and so is the gap of the per-digit optimized q (in standard errors)",
    measured=gap_loc.mean().item() / (gap_loc.std().item() / math.sqrt(len(x_test))),
    above=4,
    machine_dependent=True,
)
hamlib.check(
    "the per-digit optimization had levelled off: its last 50 steps gained under a tenth "
    "of what the first 50 did (ratio of the gains)",
    measured=last_50.mean().item() / (elbo_half - elbo_enc).mean().item(),
    below=0.1,
    machine_dependent=True,
)

# %% [markdown]
# Both numbers are real, about half a nat each of the gap of at least 0.9 nats, but only the
# first is the bound it is named after. The per-digit $q$'s own gap, at least 0.45 nats, is the
# approximation gap (which only a richer family of $q$, full covariance or normalizing flows,
# could close) plus whatever 100 noisy Adam steps left of the way to the best diagonal $q$. How
# the gap splits between the two is therefore only as good as that optimization's convergence:
# its ELBO stopped rising after 50 steps (about -18.01 nats at step 50 and at step 100), which
# says the optimizer levelled off at this step size and sample count, not that it reached the
# optimum. A better encoder network could recover the amortization part.

# %% [markdown]
# ## 2.7 Rate and distortion
#
# Weighting the KL term, $E_q[\log p(x \mid z)] - \beta\,\mathrm{KL}$ (the $\beta$-VAE of Higgins et
# al., 2017), trades the two terms of the ELBO against each other. Read the average KL as a *rate*
# (an upper bound on the information the code carries about $x$, as section 2.8 shows) and
# $-E_q[\log p(x \mid z)]$ as a *distortion* (Alemi et al., 2018): each $\beta$ picks a point on a
# rate–distortion curve, and $-\mathrm{ELBO} = R + D$. We train one model per $\beta$ (fewer
# epochs than above) and look at how each latent unit is used. Burda et al. call a unit *active*
# when $\mathrm{Var}_x(E_q[z_u \mid x]) > 0.01$; the KL that unit $u$ carries, averaged over the
# digits, is a diagnostic with units, nats, and bounds the information the unit carries:

# %%
hamlib.show_source(vi.kl_per_unit)

# %%
betas = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
rd, neg_elbo, models = {}, {}, {}
for beta in hamlib.progress(betas, desc="beta sweep"):
    torch.manual_seed(0)
    models[beta] = model = vi.VAE(n_in=64, n_latent=8, hidden=128)
    vi.train_vae(model, x_train, epochs=60, beta=beta, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, ll, kl = model.elbo(x_test, generator=torch.Generator().manual_seed(2))
    neg_elbo[beta] = kl - ll
    per_unit = vi.kl_per_unit(model, x_test).sort(descending=True).values
    rd[beta] = (kl.mean().item(), -ll.mean().item(), per_unit)
    print(
        f"beta = {beta:4}: rate {A(rd[beta][0], '6.2f')}, distortion {A(rd[beta][1], '6.2f')} "
        f"nats; Burda-active units {A(vi.active_units(model, x_test), 'd')}; "
        f"KL per unit " + " ".join(A(v, ".2f") for v in per_unit.tolist())
    )

# %%
torch.manual_seed(0)
rescued = vi.VAE(n_in=64, n_latent=8, hidden=128)
vi.train_vae(
    rescued, x_train, epochs=60, beta=8.0, free_bits=0.5, generator=torch.Generator().manual_seed(1)
)
with torch.no_grad():
    _, ll, kl = rescued.elbo(x_test, generator=torch.Generator().manual_seed(2))
rescue = (kl.mean().item(), -ll.mean().item(), vi.kl_per_unit(rescued, x_test))
print(
    f"beta = 8 with free bits (0.5 nats per dimension): rate {A(rescue[0], '.2f')}, "
    f"distortion {A(rescue[1], '.2f')}; KL per unit "
    + " ".join(A(v, ".2f") for v in rescue[2].sort(descending=True).values.tolist())
)

# %%
fig, ax = plt.subplots()
rates, dists = [rd[b_][0] for b_ in betas], [rd[b_][1] for b_ in betas]
ax.plot(rates, dists, "o-", color=COLORS["measured"], label="beta-VAE, one model per beta")
offsets = {4.0: (6, -12), 8.0: (6, 6)}  # the two collapsed points sit close together
for b_, r_, d_ in zip(betas, rates, dists, strict=True):
    ax.annotate(
        f"beta={b_:g}",
        (r_, d_),
        textcoords="offset points",
        xytext=offsets.get(b_, (5, 4)),
        fontsize=8,
    )
ax.plot([rescue[0]], [rescue[1]], "s", color=COLORS["reference"], label="beta = 8 with free bits")
r_line = np.linspace(0, max(rates), 2)
for i, b_ in enumerate([0.5, 1.0, 2.0]):
    c_ = rd[b_][0] + rd[b_][1]
    ax.plot(
        r_line,
        c_ - r_line,
        ls=":",
        lw=1,
        color=COLORS["muted"],
        label="iso-ELBO lines R + D = const through beta = 0.5, 1, 2" if i == 0 else None,
    )
ax.set(
    xlabel="rate: E KL(q(z|x) || p(z)) [nats]",
    ylabel="distortion: -E log p(x|z) [nats]",
    ylim=(min(dists) - 1, max(dists) + 2),
    title="Rate-distortion on test digits: beta = 1 touches the best iso-ELBO line",
)
ax.legend()
plt.show()

# %%
drops = [
    min(rd[a][0] - rd[b_][0], rd[b_][1] - rd[a][1]) for a, b_ in zip(betas, betas[1:], strict=False)
]
hamlib.check(
    "rate falls and distortion rises at every step up in beta (smallest change, nats)",
    measured=min(drops),
    above=0,
    machine_dependent=True,
)
best_margin = min(
    (neg_elbo[b_] - neg_elbo[1.0]).mean().item()
    / ((neg_elbo[b_] - neg_elbo[1.0]).std().item() / math.sqrt(len(x_test)))
    for b_ in betas
    if b_ != 1.0
)
hamlib.check(
    "beta = 1 has the best test ELBO (lowest R + D) of the sweep: margin to the runner-up "
    "in paired standard errors",
    measured=best_margin,
    above=4,
    machine_dependent=True,
)
hamlib.check(
    "at beta = 4 no latent unit carries a tenth of a nat, a seventh of a bit, about the digit "
    "(largest KL per unit)",
    measured=rd[4.0][2].max().item(),
    below=0.1,
    machine_dependent=True,
)
hamlib.check(
    "at beta = 8 the posterior collapses: the whole code carries under 0.01 nats (a seventieth "
    "of a bit)",
    measured=rd[8.0][0],
    below=0.01,
    machine_dependent=True,
)
hamlib.check(
    "free bits prevent the collapse at beta = 8: every unit carries over half of the floor "
    "tau = 0.5 nats that the objective grants it free (smallest KL per unit)",
    measured=rescue[2].min().item(),
    above=0.5 / 2,
    machine_dependent=True,
)

# %% [markdown]
# At $\beta = 8$ the cheapest way to buy the KL penalty down is to ignore $z$ altogether: the
# encoder returns the prior for every digit and the decoder learns the average digit. If that is
# so, its distortion equals the negative log-likelihood of the best model with no latent at all,
# independent pixels with the training set's pixel frequencies. We compare the two digit by digit
# on the test set, allowing four standard errors of the mean paired difference:

# %%
p_pix = x_train.mean(0).clamp(1e-6, 1 - 1e-6)
nll_pixels = -(x_test * p_pix.log() + (1 - x_test) * (1 - p_pix).log()).sum(-1)
with torch.no_grad():
    _, ll8, _ = models[8.0].elbo(x_test, generator=torch.Generator().manual_seed(2))
paired = -ll8 - nll_pixels
print(
    f"beta = 8 distortion {A(-ll8.mean().item(), '.2f')} nats; independent pixels "
    f"{nll_pixels.mean().item():.2f} nats; beta = 4 distortion {A(rd[4.0][1], '.2f')} nats"
)
hamlib.check(
    "the beta = 8 decoder learns the average digit: its distortion minus the independent-pixel "
    "NLL is zero within 4 standard errors",
    measured=paired.mean().item(),
    target=0.0,
    tol=4 * paired.std().item() / math.sqrt(len(x_test)),
    machine_dependent=True,
)

# %% [markdown]
# The printout also shows why the variance count is a poor collapse diagnostic. At $\beta = 4$
# it counts six active units, yet together they carry about a tenth of a nat: the threshold
# $\mathrm{Var}(\mu) > 0.01$ admits a unit whose KL is of order $\tfrac12 \cdot 0.01$ nats when its
# posterior variance is near 1. The KL per unit says directly how much each unit is used, in the
# same nats as the rate. The same posterior collapse also appears at $\beta = 1$ with decoders
# powerful enough to model $x$ without $z$ (Bowman et al., 2016). Free bits (Kingma et al., 2016)
# stop paying for KL below a floor of $\tau$ nats per dimension, so using a dimension a little
# is free; KL annealing, which ramps $\beta$ up from 0 during training, is the other common fix.
# With $\tau = 0.5$ the objective has no reason to push a unit's KL below the floor, and at
# $\beta = 8$ a strong reason not to raise it above, so the units settle at about $\tau$ on
# training minibatches; on the test digits they carry a little less, 0.36 to 0.48 nats, which is
# why the check asks for half the floor rather than the floor itself.
# The iso-ELBO lines show what $\beta \ne 1$ costs: each model sits on the line of its own
# $R + D$, and $\beta = 1$, which trains on the ELBO itself, reaches the lowest.
#
# ## 2.8 Claims in circulation
#
# **"The KL term of the ELBO *is* the information bottleneck's $I(X; Z)$."** Not quite. With the
# data distribution $p_d(x)$ and the aggregate posterior $q(z) = E_{p_d}[q(z \mid x)]$, an exact
# identity (Hoffman & Johnson, 2016) splits the average KL term in two:
#
# $$
# E_{p_d}\,\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)
# = I(X; Z) + \mathrm{KL}\big(q(z) \,\|\, p(z)\big)
# \;\ge\; I(X; Z),
# $$
#
# with $I(X; Z)$ the mutual information between data and code under the joint
# $p_d(x)\,q(z \mid x)$. The average KL is an *upper bound* on it, equal to it only when the
# aggregate posterior matches the prior. The identity holds for any distribution of $X$; on the
# trained VAE we apply it with $X$ uniform on $N$ test digits, so that the aggregate posterior is
# an exact mixture of $N$ Gaussians:

# %%
hamlib.show_source(vi.elbo_surgery)

# %% [markdown]
# Two quantities must be kept apart. The split is about $I_N$, the mutual information between
# data and code with $X$ uniform on the $N$ test digits. Every term of its estimate is at most
# $\log N$, because the mixture in the denominator contains the digit's own component: with
# $N$ digits the code can at most say which of the $N$ it came from. The claim is about
# $I(X; Z)$ under the data distribution, the information the code carries about a fresh digit.
# For it the same sample average is only a lower bound in expectation, the InfoNCE bound with
# $\log q(z \mid x)$ as its critic (van den Oord et al., 2018; Poole et al., 2019), and leaving
# the digit's own component out of the mixture gives an upper bound (the leave-one-out bound of
# Poole et al., 2019):

# %%
hamlib.show_source(vi.leave_one_out_info)

# %% [markdown]
# Two facts hold by construction and need no check. The split telescopes: the two Monte Carlo
# terms add up, sample by sample, to $\log q(z \mid x) - \log p(z)$, so their sum is a Monte Carlo
# estimate of the average KL term whatever the encoder does, and comparing it with the closed
# form would only test the sampling. And with $\overline{\mathrm{KL}}$ the average KL term,
# $\mathrm{KL}(q(z) \,\|\, p(z)) = \overline{\mathrm{KL}} - I_N
# \ge \overline{\mathrm{KL}} - \log N$: for a small test set the cap alone forces part of the
# split. We repeat the split on the first $N = 45, 90, 180$ and all 360 test digits:

# %%
with torch.no_grad():
    mu_all, logvar_all = vae.encode(x_test)
surgery = {}
print(
    f"{'N':>4s}{'avg KL':>9s}{'I_N':>9s}{'KL(q(z)||p(z))':>16s}{'log N':>8s}{'forced >=':>11s}"
    f"{'leave-one-out':>15s}"
)
for n_ in [45, 90, 180, 360]:
    mu_n, logvar_n = mu_all[:n_], logvar_all[:n_]
    info, marginal = vi.elbo_surgery(mu_n, logvar_n, 20, torch.Generator().manual_seed(5))
    loo = vi.leave_one_out_info(mu_n, logvar_n, 20, torch.Generator().manual_seed(5))
    kl_n = vi.gaussian_kl(mu_n, logvar_n)
    surgery[n_] = (kl_n, info, marginal, loo)
    print(
        f"{n_:4d}{A(kl_n.mean().item(), '9.2f')}{A(info.mean().item(), '9.2f')}"
        f"{A(marginal.mean().item(), '16.2f')}{math.log(n_):8.2f}"
        f"{A(kl_n.mean().item() - math.log(n_), '11.2f')}{A(loo.mean().item(), '15.2f')}"
    )

# %%
kl_360, info_360, marginal_360, loo_360 = surgery[360]
excess = kl_360 - loo_360.mean(0)  # per digit: average KL term minus leave-one-out upper bound
print(
    f"N = 360: {A(info_360.mean().item(), '.2f')} <= I(X; Z) <= "
    f"{A(loo_360.mean().item(), '.2f')} (leave-one-out), average KL term "
    f"{A(kl_360.mean().item(), '.2f')}; KL minus upper bound "
    f"{A(excess.mean().item(), '.2f')} nats, "
    f"{A(excess.mean().item() / (excess.std().item() / math.sqrt(360)), '.1f')} standard errors"
)

# %% [markdown]
# **Verdict:** the KL term upper-bounds the information the code carries; it is not, in general,
# that information. For this model the numbers cannot say by how much it exceeds it. The split on
# $N$ digits moves with $N$ because of the cap: $I_N$ climbs from 3.64 nats ($\log 45 = 3.81$) to
# 4.97 ($\log 360 = 5.89$) while the average KL stays between 6.59 and 6.70, and at $N = 360$ the
# cap alone still forces 0.70 of the 1.60 nats that go to $\mathrm{KL}(q(z) \,\|\, p(z))$. For
# a fresh digit the two bounds bracket the information: at least 4.97 nats (InfoNCE) and at most
# the smaller of the average KL, 6.59, and the leave-one-out bound, 6.75 (which falls from 10.33
# at $N = 45$ as the mixture fills in). The leave-one-out bound does not come below the KL term,
# so nothing here shows the KL term overstating the information of this model. The $\beta = 0$
# model below is a case where it does, by a margin no estimator is needed for.
#
# **"Without the KL term the model memorizes coordinates and cannot generate."** We train the
# same VAE with $\beta = 0$ (60 epochs, as in section 2.7) and compare it with the $\beta = 1$
# model of the sweep on the 360 test digits, using the split above:

# %%
torch.manual_seed(0)
models[0.0] = vi.VAE(n_in=64, n_latent=8, hidden=128)
vi.train_vae(models[0.0], x_train, epochs=60, beta=0.0, generator=torch.Generator().manual_seed(1))
no_kl = {}
for b_ in [0.0, 1.0]:
    with torch.no_grad():
        _, ll, kl = models[b_].elbo(x_test, generator=torch.Generator().manual_seed(2))
        mu_b, logvar_b = models[b_].encode(x_test)
    info, marginal = vi.elbo_surgery(mu_b, logvar_b, 20, torch.Generator().manual_seed(5))
    no_kl[b_] = (info.mean().item(), marginal.mean().item(), kl.mean().item())
    print(
        f"beta = {b_:g}: distortion {A(-ll.mean().item(), '.1f')}, "
        f"rate {A(kl.mean().item(), '.1f')}, I_N {A(no_kl[b_][0], '.2f')} "
        f"(cap log 360 = {math.log(360):.2f}), KL(q(z) || p(z)) {A(no_kl[b_][1], '.1f')} nats; "
        f"encoder std {A((0.5 * logvar_b).exp().mean().item(), '.3f')}, "
        f"spread of the codes {A(mu_b.std(0).mean().item(), '.1f')}"
    )
hamlib.check(
    "at beta = 0 the code tells the test digits apart: I_N is within 0.05 nats of log N, as if "
    "it singled out one of 360 / e^0.05 = 342 equally likely digits",
    measured=math.log(360) - no_kl[0.0][0],
    below=0.05,
    machine_dependent=True,
)
hamlib.check(
    "and the aggregate posterior leaves the prior: KL(q(z) || p(z)) over ten times (an order of "
    "magnitude above) that of beta = 1",
    measured=no_kl[0.0][1] / no_kl[1.0][1],
    above=10,
    machine_dependent=True,
)
hamlib.check(
    "at beta = 0 the KL term is not the information: the rate exceeds 64 ln 2 = 44.4 nats, the "
    "entropy of a uniform 64-pixel binary image and so the most I(X; Z) can be",
    measured=no_kl[0.0][2],
    above=64 * math.log(2),
    machine_dependent=True,
)

# %% [markdown]
# Whatever the data distribution over binary 8×8 images, $I(X; Z) \le H(X) \le 64 \ln 2$, so a
# rate of about 171 nats overstates the information by well over 100 nats.
#
# **Verdict:** half measured, and the first half misnamed. Without the KL term the encoder
# shrinks its noise to about a hundredth and spreads the codes (their standard deviation per
# unit) well beyond the prior's 1, so the code tells apart all 360 *test* digits, which it never
# saw in training ($I_N$ reaches its cap), and reconstruction improves. That is a near
# one-to-one encoder that generalizes, not memorization of training coordinates. The aggregate
# posterior then sits far from $\mathcal N(0, I)$, which is the usual reason to expect poor
# samples from the prior; neither where prior samples land relative to the codes nor the quality
# of the samples is measured here, so "cannot generate" stays a claim.
#
# **"Diffusion models are hierarchical VAEs."** True with a qualification. A diffusion model is a
# latent-variable model with a chain of latents $x_1, \dots, x_T$ whose "encoder"
# $q(x_{1:T} \mid x_0)$ is *fixed* (it adds Gaussian noise) rather than learned, and it is trained
# on a variational bound of the same form as the ELBO (Sohl-Dickstein et al., 2015). DDPM's
# popular loss, the unweighted noise-prediction error, is that bound with its per-step weights
# dropped, i.e. a *reweighted* ELBO (Ho et al., 2020). Kingma et al. (2021) write the
# continuous-time bound as an integral over the signal-to-noise ratio, and Kingma & Gao (2023)
# show that such weighted losses are themselves the ELBO of noise-augmented data whenever the
# weight is monotonic in the noise level. So: a hierarchical VAE with a fixed encoder, usually
# trained on a reweighted bound rather than the ELBO itself. This verdict is argued from the
# papers, not measured here: the book trains no diffusion model in this chapter.
#
# **"Maximizing the ELBO maximizes $\log p(x)$."** Over $q$, yes: the gap is
# $\mathrm{KL}(q \,\|\, p(z \mid x))$ (section 2.2). Over the model's parameters $\theta$, not in
# general: $\mathrm{ELBO} = \log p_\theta(x) - \mathrm{KL}(q \,\|\, p_\theta(z \mid x))$, so the
# optimizer can also buy ELBO by moving $\theta$ to where the posterior is easy for $q$ to fit.
# The test below is built where the claim must hold, to show the mechanism, not to survey it:
# a small linear-Gaussian model ($d = 10$, $k = 3$, $\sigma = 0.5$ fixed, 200 data
# points from a $W$ with correlated columns) with the best *mean-field* $q$ for every point, whose
# ELBO is in closed form (the optimal $q$ has the posterior mean and variances
# $1/(S^{-1})_{jj}$, exercise 1). We maximize it over $W$ with L-BFGS and compare with the maximum
# likelihood, known in closed form (probabilistic PCA: $W = U_k(\Lambda_k - \sigma^2)^{1/2}R$ for
# any rotation $R$; Tipping & Bishop, 1999):

# %%
d2, k2, sigma2, n2 = 10, 3, 0.5, 200
g2 = torch.Generator().manual_seed(11)
W_gen = torch.randn(d2, k2, generator=g2, dtype=f64)
x2 = (
    torch.randn(n2, k2, generator=g2, dtype=f64) @ W_gen.T
    + torch.randn(d2, generator=g2, dtype=f64)
    + sigma2 * torch.randn(n2, d2, generator=g2, dtype=f64)
)
b2 = x2.mean(0)  # the maximum-likelihood offset


def mean_field_elbo(W_):  # average over the data of the best mean-field ELBO
    m_, S_ = vi.linear_gaussian_posterior(x2, W_, b2, sigma2)
    logvar_ = -torch.log(torch.linalg.inv(S_).diagonal()).expand(n2, k2)
    return vi.linear_gaussian_elbo(x2, W_, b2, sigma2, m_, logvar_).mean()


def log_lik(W_):
    return vi.linear_gaussian_evidence(x2, W_, b2, sigma2).mean().item()


def off_diagonal(W_):  # how far W's columns are from orthogonal: 0 when W^T W is diagonal
    G_ = W_.T @ W_
    return ((G_ - torch.diag(G_.diagonal())).norm() / G_.norm()).item()


W_fit = W_gen.clone().requires_grad_()
lbfgs = torch.optim.LBFGS(
    [W_fit],
    max_iter=300,
    tolerance_grad=1e-9,
    tolerance_change=1e-15,
    line_search_fn="strong_wolfe",
)


def closure():
    lbfgs.zero_grad()
    loss = -mean_field_elbo(W_fit)
    loss.backward()
    return loss


lbfgs.step(closure)
W_fit = W_fit.detach()
evals, vecs = torch.linalg.eigh(torch.cov(x2.T, correction=0))
W_mle = vecs[:, -k2:] * (evals[-k2:] - sigma2**2).sqrt()
rotation = torch.linalg.qr(torch.randn(k2, k2, generator=g2, dtype=f64)).Q
W_mle_rotated = W_mle @ rotation  # the same likelihood, correlated columns
print(f"{'W':32s}{'log p(x)':>10s}{'ELBO':>10s}{'off-diagonal of W^T W':>24s}")
for name, W_ in [
    ("generating W", W_gen),
    ("ELBO maximum (L-BFGS)", W_fit),
    ("likelihood maximum (PPCA)", W_mle),
    ("likelihood maximum, rotated", W_mle_rotated),
]:
    print(
        f"{name:32s}{log_lik(W_):10.4f}{mean_field_elbo(W_).item():10.4f}{off_diagonal(W_):24.3f}"
    )
shortfall = log_lik(W_mle) - log_lik(W_fit)
hamlib.check(
    "the ELBO maximum reaches the maximum likelihood: shortfall of its log p(x) per point "
    f"{hamlib.below(shortfall, 1e-6)} nats",
    abs(shortfall) < 1e-6,
)
hamlib.check(
    "and the ELBO has rotated W to orthogonal columns, where mean field is exact",
    measured=off_diagonal(W_fit),
    below=1e-3,
    spec=".0e",
    machine_dependent=True,
)

# %% [markdown]
# **Verdict:** in this model the claim holds, and it had to: an isotropic linear-Gaussian model
# has a rotation symmetry that lets some likelihood maximizer have factorized posteriors, so
# this is a demonstration of the mechanism, not evidence that the claim holds in general. The
# ELBO did push the model
# toward posteriors that mean field fits: it rotated $W$ until $W^\top W$ is diagonal and the
# posterior factorizes, as the last column shows. The likelihood is blind to that rotation (the
# two PPCA rows have the same $\log p(x)$ and different ELBOs), so the push cost nothing. In
# models without such a symmetry the same push costs likelihood: variational EM then settles on
# parameters whose posteriors are simpler than the data warrant (Turner & Sahani, 2011). The
# ELBO's maximum equals the likelihood's only when some maximizer of the likelihood has
# posteriors inside the variational family.
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
# - C. Cremer, Q. Morris, D. Duvenaud. Reinterpreting importance-weighted autoencoders. *ICLR
#   workshop*, 2017.
# - T. Rainforth, A. R. Kosiorek, T. A. Le, C. J. Maddison, M. Igl, F. Wood, Y. W. Teh. Tighter
#   variational bounds are not necessarily better. *ICML*, 2018.
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
# - M. E. Tipping, C. M. Bishop. Probabilistic principal component analysis. *Journal of the Royal
#   Statistical Society B* 61, 1999.
# - A. van den Oord, Y. Li, O. Vinyals. Representation learning with contrastive predictive
#   coding. arXiv:1807.03748, 2018.
# - B. Poole, S. Ozair, A. van den Oord, A. A. Alemi, G. Tucker. On variational bounds of mutual
#   information. *ICML*, 2019.
# - S. Chatterjee, P. Diaconis. The sample size required in importance sampling. *Annals of
#   Applied Probability* 28, 2018.
# - D. P. Kingma, R. Gao. Understanding diffusion objectives as the ELBO with simple data
#   augmentation. *NeurIPS*, 2023.
# - C. Cremer, X. Li, D. Duvenaud. Inference suboptimality in variational autoencoders. *ICML*,
#   2018.
# - R. E. Turner, M. Sahani. Two problems with variational expectation maximisation for
#   time-series models. In *Bayesian Time Series Models*, Cambridge University Press, 2011.
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
# underestimates the marginal variances, $1/(S^{-1})_{jj} \le S_{jj}$ (Cauchy–Schwarz, with
# equality only when coordinate $j$ is uncorrelated with the rest); the hidden cell prints the
# largest ratio. The gap cannot close: a diagonal $q$ cannot represent the correlations.
# ```

# %% tags=["hide-cell"]
rot, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(7), dtype=f64))
W_rot = W @ rot * torch.linspace(0.7, 1.5, k, dtype=f64)
m_r, S_r = vi.linear_gaussian_posterior(x_obs, W_rot, b, sigma)
best_logvar = -torch.log(torch.linalg.inv(S_r).diagonal())
best = vi.linear_gaussian_elbo(x_obs, W_rot, b, sigma, m_r, best_logvar).item()
g_near = torch.Generator().manual_seed(9)
nearby = [
    vi.linear_gaussian_elbo(
        x_obs,
        W_rot,
        b,
        sigma,
        m_r + 0.01 * torch.randn(k, generator=g_near, dtype=f64),
        best_logvar + 0.01 * torch.randn(k, generator=g_near, dtype=f64),
    ).item()
    for _ in range(20)
]
gap_r = vi.linear_gaussian_evidence(x_obs, W_rot, b, sigma).item() - best
print(
    f"best mean-field ELBO {best:.4f}; best of 20 perturbations {max(nearby):.4f}; gap {gap_r:.4f}"
)
hamlib.check(
    "exercise 1: the mean-field optimum beats the best of its 20 perturbations (nats)",
    measured=best - max(nearby),
    above=0,
)
hamlib.check("and leaves a positive gap (nats)", measured=gap_r, above=0)
hamlib.check(
    "mean field underestimates every marginal variance: largest 1/(S^-1)_jj / S_jj",
    measured=(torch.exp(best_logvar) / S_r.diagonal()).max().item(),
    below=1,
)

# %% [markdown]
# **2. A baseline for REINFORCE.** Subtracting a constant $c$ from $f$ leaves the score-function
# estimator unbiased (since $E_q[\nabla \log q] = 0$) but changes its variance. Use $c = E_q[f]$ and
# measure its variance against the score function's without it and the reparameterization
# estimator's.
#
# ```{admonition} Solution
# :class: dropdown
# The baseline removes the part of $f$ that does not vary with $z$, which is most of the variance
# here. With $c = a^2 + \sigma^2$ the estimate becomes
# $2a\epsilon^2 + \sigma(\epsilon^3 - \epsilon)$, whose variance is exactly
# $8a^2 + 10\sigma^2 = 34.5$, down from 123.75; the reparameterization estimator's is still 1.
# ```

# %% tags=["hide-cell"]
c = (1.0 - 3.0) ** 2 + 0.5**2
reparam_b, score_b = vi.reparam_and_score_gradients(
    lambda z: f(z) - c, 1.0, math.log(0.5), 100_000, torch.Generator().manual_seed(1)
)
print(
    f"with baseline: mean {score_b.mean().item():.3f}, variance {score_b.var().item():.2f} "
    f"(exact {8 * a_**2 + 10 * s_**2}, standard error {var_se(score_b):.2f}; without: "
    f"{score.var().item():.1f})"
)
hamlib.check(
    "exercise 2: the baseline keeps the estimator unbiased (mean -4 within 4 standard errors)",
    measured=score_b.mean().item(),
    target=-4.0,
    tol=4 * score_b.std().item() / math.sqrt(len(score_b)),
    spec=".3f",
)
hamlib.check(
    "and its variance is the exact 34.5 within 4 standard errors",
    measured=score_b.var().item(),
    target=8 * a_**2 + 10 * s_**2,
    tol=4 * var_se(score_b),
    spec=".4g",
)

# %% [markdown]
# **3. IWAE converges to the evidence.** In the linear-Gaussian model of section 2.1, use the
# prior as the proposal $q$ (the worst reasonable choice) and the exact posterior as another.
# How fast does each $\mathcal L_K$ approach the exact $\log p(x)$?
#
# ```{admonition} Solution
# :class: dropdown
# With the posterior as proposal every weight equals $p(x)$ and $\mathcal L_K = \log p(x)$ for every
# $K$, by construction. With the prior the weights are the likelihoods of section 2.1, and the
# bound creeps up slowly, the same failure as naive Monte Carlo, now as a lower bound. How
# slowly: importance sampling needs a sample size of about $e^{\mathrm{KL}(p(z \mid x) \,\|\, q)}$
# before it becomes accurate (Chatterjee & Diaconis, 2018). Here that KL is exact, 16.1 nats, so
# $e^{\mathrm{KL}} \approx 10^7$ samples would be needed; at $K = 10^4$ six draws of the bound
# (the table's and five repeats) fall short by between 6 and 27 nats, none within 1 nat.
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
kl_post_prior = D.kl_divergence(
    posterior, D.MultivariateNormal(torch.zeros(k, dtype=f64), torch.eye(k, dtype=f64))
).item()
print(f"KL(posterior || prior) = {kl_post_prior:.1f} nats: e^KL = {math.exp(kl_post_prior):.1e}")
short = [log_px - iwae_linear(prior, 10_000) for _ in range(5)]
print("K = 10^4, five repeats: prior proposal short by " + ", ".join(f"{v:.1f}" for v in short))
hamlib.check(
    "exercise 3: at K = 10^4, far below e^KL, no repeat of the prior-proposal bound comes within "
    "1 nat of log p(x) (smallest shortfall of 5)",
    measured=min(short),
    above=1,
)

# %% [markdown]
# **4. Train with the tighter bound.** Section 2.6 used the IWAE bound only to *evaluate* the VAE.
# Burda et al. (2016) also *train* with it. Train the same VAE (same initialization, data order and
# 150 epochs) on the IWAE bound with $K = 5$ (`vi.train_vae(..., iwae_k=5)`) and compare it with
# the ELBO-trained model on the test digits: the IWAE bound with 500 samples (the best estimate of
# $\log p(x)$ here) and the ELBO.
#
# ```{admonition} Solution
# :class: dropdown
# The IWAE-trained model has the better test log-likelihood bound and the *worse* ELBO. The
# objective no longer asks $q$ itself to match the posterior, only that $K$ samples from it,
# reweighted, explain the digit (Cremer, Morris & Duvenaud, 2017, read the IWAE as the ELBO of a
# richer, implicit posterior); Rainforth et al. (2018) show that the encoder's gradient signal
# weakens as $K$ grows. Burda et al. also report more active units; here all 8 are active
# under both objectives, so that part cannot show. One training seed: the differences are held to
# the paired spread over the 360 test digits, not to a spread over training runs.
# ```

# %% tags=["hide-cell"]
torch.manual_seed(0)
vae_iwae = vi.VAE(n_in=64, n_latent=8, hidden=128)
vi.train_vae(vae_iwae, x_train, epochs=150, generator=torch.Generator().manual_seed(1), iwae_k=5)
with torch.no_grad():
    bound_iwae = vi.iwae_bound(
        vae_iwae.log_weights(x_test, 500, generator=torch.Generator().manual_seed(4))
    )
    _, ll_i, kl_i = vae_iwae.elbo(x_test, generator=torch.Generator().manual_seed(2))
gain = bound_iwae - iwae[500]  # per test digit, paired
elbo_change = (ll_i - kl_i) - (ll_test - kl_test)
print(
    f"IWAE-500 test bound: ELBO-trained {A(iwae[500].mean().item(), '.2f')}, IWAE-trained "
    f"{A(bound_iwae.mean().item(), '.2f')} nats; test ELBO: {A(test_elbo, '.2f')} and "
    f"{A((ll_i - kl_i).mean().item(), '.2f')}; active units {vi.active_units(vae_iwae, x_test)}"
)
hamlib.check(
    "exercise 4: training on the IWAE bound (K = 5) raises the test log-likelihood bound by more "
    "than 2 paired standard errors",
    measured=gain.mean().item(),
    above=2 * gain.std().item() / math.sqrt(len(gain)),
    spec=".1f",  # the bound is a training result too: one digit
    machine_dependent=True,
)
hamlib.check(
    "exercise 4: ... and lowers the test ELBO by more than 2 paired standard errors",
    measured=elbo_change.mean().item(),
    below=-2 * elbo_change.std().item() / math.sqrt(len(elbo_change)),
    spec=".1f",
    machine_dependent=True,
)

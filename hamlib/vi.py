r"""Variational inference: KL divergences, the ELBO and its tighter cousins, and a VAE (Chapter 2).

For a latent-variable model :math:`p(x, z) = p(x \mid z)\,p(z)` and any distribution
:math:`q(z)`,

.. math:: \log p(x) = \underbrace{E_q[\log p(x \mid z)]
          - \mathrm{KL}(q \,\|\, p(z))}_{\mathrm{ELBO}(q)}
          + \mathrm{KL}(q \,\|\, p(z \mid x)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hamlib import _checks as check

__all__ = [
    "VAE",
    "VAEHistory",
    "active_units",
    "bernoulli_log_likelihood",
    "elbo_surgery",
    "gaussian_kl",
    "iwae_bound",
    "kl_per_unit",
    "leave_one_out_info",
    "linear_gaussian_elbo",
    "linear_gaussian_evidence",
    "linear_gaussian_posterior",
    "reparam_and_score_gradients",
    "train_vae",
]


def _check_gaussian_kl_args(
    mu: Tensor, logvar: Tensor, mu_p: Tensor | None, logvar_p: Tensor | None, reduce: bool
) -> None:
    check.tensor("mu", mu, floating=True)
    check.tensor("logvar", logvar, floating=True)
    check.like("logvar", logvar, "mu", mu)
    check.boolean("reduce", reduce)
    if (mu_p is None) != (logvar_p is None):
        raise ValueError("give both mu_p and logvar_p, or neither (standard normal prior)")
    if mu_p is not None and logvar_p is not None:
        check.tensor("mu_p", mu_p, floating=True)
        check.tensor("logvar_p", logvar_p, floating=True)
        try:
            torch.broadcast_shapes(mu.shape, mu_p.shape, logvar_p.shape)
        except RuntimeError:
            raise ValueError(
                f"mu_p {tuple(mu_p.shape)} and logvar_p {tuple(logvar_p.shape)} must "
                f"broadcast against mu {tuple(mu.shape)}"
            ) from None


def gaussian_kl(
    mu: Tensor,
    logvar: Tensor,
    mu_p: Tensor | None = None,
    logvar_p: Tensor | None = None,
    *,
    reduce: bool = True,
) -> Tensor:
    r""":math:`\mathrm{KL}(N(\mu, e^{\mathrm{logvar}}) \,\|\, N(\mu_p, e^{\mathrm{logvar}_p}))` for
    diagonal Gaussians, summed over the last dimension (one value per example):

    .. math:: \tfrac12 \sum_j \Big[\mathrm{logvar}_{p,j} - \mathrm{logvar}_j
              + \frac{e^{\mathrm{logvar}_j} + (\mu_j - \mu_{p,j})^2}{e^{\mathrm{logvar}_{p,j}}}
              - 1\Big].

    With ``mu_p`` and ``logvar_p`` both None the prior is the standard normal. With
    ``reduce=False`` the terms of the sum are returned, one per dimension j.
    """
    _check_gaussian_kl_args(mu, logvar, mu_p, logvar_p, reduce)
    if mu_p is None or logvar_p is None:  # the standard normal prior
        kl = 0.5 * (logvar.exp() + mu * mu - 1.0 - logvar)
    else:
        var_ratio = (logvar - logvar_p).exp()
        kl = 0.5 * (logvar_p - logvar + var_ratio + (mu - mu_p) ** 2 / logvar_p.exp() - 1.0)
    return kl.sum(-1) if reduce else kl


def iwae_bound(log_weights: Tensor) -> Tensor:
    r"""The importance-weighted bound :math:`\log \frac1K \sum_k w_k` from K log-weights.

    ``log_weights`` has shape ``(K, ...)`` with :math:`\log w_k = \log p(x, z_k) - \log q(z_k)`,
    :math:`z_k \sim q`; the result has shape ``(...)``. Computed as ``logsumexp - log K`` so that
    weights of :math:`e^{-1000}` do not underflow (Burda, Grosse & Salakhutdinov, ICLR 2016).
    """
    check.tensor("log_weights", log_weights, floating=True)
    if log_weights.ndim < 1 or log_weights.shape[0] < 1:
        raise ValueError("log_weights must have a leading dimension of K >= 1 samples")
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    r""":math:`\log p(x \mid z) = \sum_j x_j \log \sigma(l_j) + (1 - x_j)\log(1 - \sigma(l_j))`,
    summed over the last dimension, stable for large logits."""
    check.tensor("logits", logits, floating=True)
    check.tensor("x", x, floating=True)
    try:
        torch.broadcast_shapes(logits.shape, x.shape)
    except RuntimeError as exc:
        raise ValueError(
            f"logits {tuple(logits.shape)} and x {tuple(x.shape)} do not broadcast"
        ) from exc
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )


# ----------------------------------------------------------------------------- linear Gaussian
def _check_linear_args(x: Tensor, W: Tensor, b: Tensor, sigma: float) -> float:
    """Checks the model's arguments; returns ``sigma`` as a float."""
    check.tensor("W", W, floating=True, ndim=2)
    check.tensor("b", b, floating=True, shape=(W.shape[0],))
    check.like("b", b, "W", W, shape=False)
    check.tensor("x", x, floating=True)
    check.like("x", x, "W", W, shape=False)
    if x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"x must have shape (..., {W.shape[0]}) to match W, got {tuple(x.shape)}")
    return check.positive("sigma", sigma)


def linear_gaussian_evidence(x: Tensor, W: Tensor, b: Tensor, sigma: float) -> Tensor:
    r"""Exact :math:`\log p(x)` for :math:`z \sim N(0, I_k)`,
    :math:`x \mid z \sim N(Wz + b, \sigma^2 I_d)`:
    :math:`x \sim N(b, WW^\top + \sigma^2 I)`. ``x`` is (..., d)."""
    sigma = _check_linear_args(x, W, b, sigma)
    cov = W @ W.T + sigma**2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def linear_gaussian_posterior(
    x: Tensor, W: Tensor, b: Tensor, sigma: float
) -> tuple[Tensor, Tensor]:
    r"""Exact posterior :math:`p(z \mid x) = N(m, S)`, :math:`S = (I + W^\top W/\sigma^2)^{-1}`,
    :math:`m = S W^\top (x - b)/\sigma^2`. Returns (m of shape (..., k), S of shape (k, k))."""
    sigma = _check_linear_args(x, W, b, sigma)
    k = W.shape[1]
    S = torch.linalg.inv(torch.eye(k, dtype=W.dtype, device=W.device) + W.T @ W / sigma**2)
    m = (x - b) @ W @ S / sigma**2  # S is symmetric
    return m, S


def _check_linear_gaussian_elbo_args(
    x: Tensor, W: Tensor, b: Tensor, sigma: float, mu_q: Tensor, logvar_q: Tensor
) -> float:
    sigma = _check_linear_args(x, W, b, sigma)
    check.tensor("mu_q", mu_q, floating=True)
    check.like("mu_q", mu_q, "W", W, shape=False)
    if mu_q.ndim < 1 or mu_q.shape[-1] != W.shape[1]:
        raise ValueError(
            f"mu_q must have shape (..., {W.shape[1]}) to match W, got {tuple(mu_q.shape)}"
        )
    check.tensor("logvar_q", logvar_q, floating=True)
    check.like("logvar_q", logvar_q, "mu_q", mu_q)
    return sigma


def linear_gaussian_elbo(
    x: Tensor, W: Tensor, b: Tensor, sigma: float, mu_q: Tensor, logvar_q: Tensor
) -> Tensor:
    r"""Exact ELBO of :math:`q = N(\mu_q, \mathrm{diag}(e^{\mathrm{logvar}_q}))` in the
    linear-Gaussian model, in closed form (no sampling):

    .. math:: -\frac d2\log(2\pi\sigma^2) - \frac{\|x - b - W\mu_q\|^2
              + \mathrm{tr}(W\,\mathrm{diag}(s^2)\,W^\top)}{2\sigma^2}
              - \mathrm{KL}(q \,\|\, N(0, I)).
    """
    sigma = _check_linear_gaussian_elbo_args(x, W, b, sigma, mu_q, logvar_q)
    d = W.shape[0]
    resid = x - b - mu_q @ W.T
    trace = (W * W * logvar_q.exp().unsqueeze(-2)).sum((-1, -2))
    expected_loglik = (
        -0.5 * d * math.log(2 * math.pi * sigma**2)
        - 0.5 * ((resid * resid).sum(-1) + trace) / sigma**2
    )
    return expected_loglik - gaussian_kl(mu_q, logvar_q)


# ----------------------------------------------------------------------------- gradient estimators
def reparam_and_score_gradients(
    f: Callable[[Tensor], Tensor],
    mu: float,
    log_sigma: float,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Single-sample estimates of :math:`\partial_\mu E_{z \sim N(\mu, \sigma^2)}[f(z)]`, two ways.

    *Reparameterization*: :math:`z = \mu + \sigma\epsilon`, estimate :math:`f'(z)` (needs f
    differentiable). *Score function* (REINFORCE): :math:`f(z)\,\partial_\mu \log q(z) =
    f(z)(z - \mu)/\sigma^2` (needs only values of f). Both are unbiased; returns the two tensors of
    ``n_samples`` estimates, drawn from the same :math:`\epsilon`.
    """
    f, generator = check.function("f", f), check.generator("generator", generator)
    mu, sigma = check.real("mu", mu), math.exp(check.real("log_sigma", log_sigma))
    n_samples = check.integer("n_samples", n_samples, minimum=2)
    eps = torch.randn(n_samples, generator=generator, dtype=torch.float64)
    z = (mu + sigma * eps).requires_grad_(True)
    values = f(z)
    if values.shape != z.shape:
        raise ValueError("f must map a tensor of samples to a tensor of the same shape")
    (reparam,) = torch.autograd.grad(values.sum(), z)
    score = values.detach() * (z.detach() - mu) / sigma**2
    return reparam.detach(), score


# ----------------------------------------------------------------------------- the VAE
class VAE(nn.Module):
    r"""A VAE with a Gaussian encoder :math:`q(z \mid x) = N(\mu(x), \mathrm{diag}\,\sigma^2(x))`, a
    standard normal prior and a Bernoulli decoder :math:`p(x \mid z)` (Kingma & Welling, 2014)."""

    def __init__(self, n_in: int = 64, n_latent: int = 8, hidden: int = 128) -> None:
        super().__init__()
        n_in = check.integer("n_in", n_in, minimum=1)
        n_latent = check.integer("n_latent", n_latent, minimum=1)
        hidden = check.integer("hidden", hidden, minimum=1)
        self.n_in, self.n_latent = n_in, n_latent
        self.encoder = nn.Sequential(
            nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, 2 * n_latent)
        )
        self.decoder = nn.Sequential(
            nn.Linear(n_latent, hidden), nn.Tanh(), nn.Linear(hidden, n_in)
        )

    def _check_x(self, x: Tensor, name: str = "x") -> None:
        check.tensor(name, x, floating=True)
        if x.ndim < 1 or x.shape[-1] != self.n_in:
            raise ValueError(f"{name} must have shape (..., {self.n_in}), got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z | x)."""
        self._check_x(x)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of p(x | z)."""
        check.tensor("z", z, floating=True)
        if z.ndim < 1 or z.shape[-1] != self.n_latent:
            raise ValueError(f"z must have shape (..., {self.n_latent}), got {tuple(z.shape)}")
        return self.decoder(z)

    @staticmethod
    def _check_elbo_args(
        beta: float, free_bits: float, generator: torch.Generator | None
    ) -> tuple[float, float, torch.Generator | None]:
        beta, free_bits = check.nonnegative("beta", beta), check.nonnegative("free_bits", free_bits)
        return beta, free_bits, check.generator("generator", generator)

    def elbo(
        self,
        x: Tensor,
        beta: float = 1.0,
        free_bits: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Per-example (objective, log-likelihood term, KL term) with one reparameterized sample.

        The objective is :math:`E_q[\log p(x|z)] - \beta\,\mathrm{KL}`; with ``free_bits`` > 0 each
        latent dimension's KL (averaged over the batch) is floored at that many nats in the
        objective only (Kingma et al., 2016), which keeps the encoder from collapsing to the
        prior. The returned KL is always the true one, so the returned terms form the real ELBO.
        """
        beta, free_bits, generator = self._check_elbo_args(beta, free_bits, generator)
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        loglik = bernoulli_log_likelihood(self.decode(z), x)
        kl_dims = gaussian_kl(mu, logvar, reduce=False)
        kl = kl_dims.sum(-1)
        if free_bits > 0:
            floored = torch.clamp(kl_dims.mean(0), min=free_bits).sum()
            objective = loglik - beta * floored
        else:
            objective = loglik - beta * kl
        return objective, loglik, kl

    @torch.no_grad()
    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        r""":math:`\log p(x, z_k) - \log q(z_k \mid x)` for K samples: shape (K, *x.shape[:-1])."""
        return self._log_weights(x, k, generator)

    def iwae(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """The importance-weighted bound with K samples per example, differentiable: the
        objective that :func:`train_vae` maximizes with ``iwae_k=K`` (Burda et al., 2016)."""
        return iwae_bound(self._log_weights(x, k, generator))

    def _log_weights(self, x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        k, generator = check.integer("k", k, minimum=1), check.generator("generator", generator)
        mu, logvar = self.encode(x)
        std = (0.5 * logvar).exp()
        eps = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + std * eps
        log_q = (-0.5 * eps * eps - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prior = (-0.5 * z * z - 0.5 * math.log(2 * math.pi)).sum(-1)
        return bernoulli_log_likelihood(self.decode(z), x) + log_prior - log_q


def _check_vae(name: str, model: object) -> None:
    check.instance(name, model, VAE)


@dataclass(frozen=True)
class VAEHistory:
    """Per-epoch averages from :func:`train_vae`, in nats per example."""

    elbo: list[float] = field(default_factory=list)  # the training ELBO
    loglik: list[float] = field(default_factory=list)  # its reconstruction term E log p(x | z)
    kl: list[float] = field(default_factory=list)  # its KL term
    test_elbo: list[float] = field(default_factory=list)  # on x_test (empty without one)


def train_vae(
    model: VAE,
    x_train: Tensor,
    epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    beta: float = 1.0,
    free_bits: float = 0.0,
    generator: torch.Generator | None = None,
    x_test: Tensor | None = None,
    iwae_k: int = 1,
) -> VAEHistory:
    """Train with Adam on shuffled minibatches; returns per-epoch averages of the training ELBO, its
    two terms, and (if ``x_test`` is given) the test ELBO, all in nats per example.

    With ``iwae_k`` = K > 1 the objective is the importance-weighted bound with K samples
    (:meth:`VAE.iwae`) instead of the (beta-weighted, free-bits) ELBO, which then must keep their
    defaults; the history still records the ELBO of each batch, one extra sample."""
    _check_vae("model", model)
    model._check_x(x_train, "x_train")
    if x_test is not None:
        model._check_x(x_test, "x_test")
    epochs = check.integer("epochs", epochs, minimum=1)
    batch_size = check.integer("batch_size", batch_size, minimum=1)
    lr = check.positive("lr", lr)
    beta, free_bits = check.nonnegative("beta", beta), check.nonnegative("free_bits", free_bits)
    generator = check.generator("generator", generator)
    iwae_k = check.integer("iwae_k", iwae_k, minimum=1)
    if iwae_k > 1 and (beta != 1.0 or free_bits != 0.0):
        raise ValueError(
            f"iwae_k={iwae_k} trains the IWAE bound: beta and free_bits must stay 1, 0"
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = VAEHistory()
    n = x_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        sums = torch.zeros(3, dtype=torch.float64)
        model.train()
        for i in range(0, n, batch_size):
            xb = x_train[perm[i : i + batch_size]]
            if iwae_k > 1:
                objective = model.iwae(xb, iwae_k, generator)
                with torch.no_grad():
                    _, loglik, kl = model.elbo(xb, generator=generator)
            else:
                objective, loglik, kl = model.elbo(xb, beta, free_bits, generator)
            opt.zero_grad()
            (-objective.mean()).backward()
            opt.step()
            with torch.no_grad():
                sums += torch.stack([(loglik - kl).sum(), loglik.sum(), kl.sum()]).double().cpu()
        history.elbo.append(sums[0].item() / n)
        history.loglik.append(sums[1].item() / n)
        history.kl.append(sums[2].item() / n)
        if x_test is not None:
            model.eval()
            with torch.no_grad():
                _, ll, kl_t = model.elbo(x_test, generator=generator)
            history.test_elbo.append((ll - kl_t).mean().item())
    model.eval()
    return history


@torch.no_grad()
def active_units(model: VAE, x: Tensor, threshold: float = 0.01) -> int:
    r"""Number of latent dimensions u with :math:`\mathrm{Var}_x(E_q[z_u \mid x]) > ` threshold
    (Burda, Grosse & Salakhutdinov, 2016): the dimensions the encoder actually uses."""
    _check_vae("model", model)
    threshold = check.nonnegative("threshold", threshold)
    mu, _ = model.encode(x)
    return int((mu.var(0) > threshold).sum().item())


@torch.no_grad()
def kl_per_unit(model: VAE, x: Tensor) -> Tensor:
    r"""The KL term split by latent dimension and averaged over the data: shape (n_latent,),

    .. math:: \mathrm{KL}_u = \frac1N \sum_n \mathrm{KL}\big(q(z_u \mid x_n) \,\|\, N(0, 1)\big),

    in nats; the entries sum to the average KL term. Each bounds the information that unit u
    carries about x, :math:`I_q(X; Z_u) \le \mathrm{KL}_u`, which makes it a collapse
    diagnostic with units, unlike the variance threshold of :func:`active_units`.
    """
    _check_vae("model", model)
    mu, logvar = model.encode(x)
    return gaussian_kl(
        mu.reshape(-1, model.n_latent), logvar.reshape(-1, model.n_latent), reduce=False
    ).mean(0)


def _check_codes(
    mu: Tensor, logvar: Tensor, n_z: int, generator: torch.Generator | None
) -> tuple[int, torch.Generator | None]:
    check.tensor("mu", mu, floating=True, ndim=2)
    check.tensor("logvar", logvar, floating=True)
    check.like("logvar", logvar, "mu", mu)
    return check.integer("n_z", n_z, minimum=1), check.generator("generator", generator)


def _code_log_densities(
    mu: Tensor, logvar: Tensor, n_z: int, generator: torch.Generator | None
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """For n_z draws of one z_n ~ q(z | x_n) per row: (z, log q(z_n | x_n), log q(z_n | x_m))."""
    std = (0.5 * logvar).exp()
    const = 0.5 * math.log(2 * math.pi)
    out = []
    for _ in range(n_z):  # one sample per x_n at a time: the (N, N, k) array stays small
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + std * eps
        log_q_own = (-0.5 * eps * eps - 0.5 * logvar - const).sum(-1)
        diff = (z.unsqueeze(1) - mu.unsqueeze(0)) / std.unsqueeze(0)  # (N, N, k)
        log_q_all = (-0.5 * diff * diff - 0.5 * logvar.unsqueeze(0) - const).sum(-1)
        out.append((z, log_q_own, log_q_all))
    return out


def elbo_surgery(
    mu: Tensor, logvar: Tensor, n_z: int = 20, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    r"""Monte Carlo terms of the split (Hoffman & Johnson, 2016) of the average KL term

    .. math:: \frac1N \sum_n \mathrm{KL}(q(z \mid x_n) \,\|\, p(z))
              = I_q(X; Z) + \mathrm{KL}(q(z) \,\|\, p(z)),
              \qquad q(z) = \frac1N \sum_m q(z \mid x_m),

    with X uniform on the N rows of ``mu`` and ``logvar`` (shape (N, k), the encoder's output) and
    p(z) = N(0, I). Draws ``n_z`` samples :math:`z \sim q(z \mid x_n)` for every n and returns two
    tensors of shape (n_z, N): :math:`\log q(z \mid x_n) - \log q(z)`, whose mean estimates
    :math:`I_q(X; Z)`, and :math:`\log q(z) - \log p(z)`, whose mean estimates
    :math:`\mathrm{KL}(q(z) \,\|\, p(z))`. Each entry of the first is at most :math:`\log N`
    by construction (the mixture contains the component of x_n itself). The two entries add up,
    sample by sample, to :math:`\log q(z \mid x_n) - \log p(z)`: the split telescopes, so their
    sum estimates the average KL term whatever the encoder. As an estimate of the information
    about x under the distribution the N rows are drawn from, the first is the InfoNCE lower
    bound (van den Oord et al., 2018); :func:`leave_one_out_info` gives an upper bound.
    """
    n_z, generator = _check_codes(mu, logvar, n_z, generator)
    n = mu.shape[0]
    const = 0.5 * math.log(2 * math.pi)
    info, marginal = [], []
    for z, log_q_own, log_q_all in _code_log_densities(mu, logvar, n_z, generator):
        log_q_agg = torch.logsumexp(log_q_all, dim=1) - math.log(n)
        log_p = (-0.5 * z * z - const).sum(-1)
        info.append(log_q_own - log_q_agg)
        marginal.append(log_q_agg - log_p)
    return torch.stack(info), torch.stack(marginal)


def leave_one_out_info(
    mu: Tensor, logvar: Tensor, n_z: int = 20, generator: torch.Generator | None = None
) -> Tensor:
    r"""Terms of the leave-one-out upper bound on the information the code carries about x
    (Poole et al., 2019): shape (n_z, N), entries

    .. math:: \log q(z \mid x_n) - \log \frac1{N-1} \sum_{m \ne n} q(z \mid x_m),
              \qquad z \sim q(z \mid x_n),

    whose mean bounds :math:`I(X; Z)` from above in expectation over N rows drawn independently
    from the data distribution. Unlike the InfoNCE terms of :func:`elbo_surgery` it is not capped
    at log N. With the same ``generator`` state it uses the same draws of z as
    :func:`elbo_surgery`, so the two bounds are paired. Needs N >= 2.
    """
    n_z, generator = _check_codes(mu, logvar, n_z, generator)
    n = check.integer("the number of rows of mu", mu.shape[0], minimum=2)
    own = torch.eye(n, dtype=torch.bool, device=mu.device)
    terms = []
    for _, log_q_own, log_q_all in _code_log_densities(mu, logvar, n_z, generator):
        log_q_others = torch.logsumexp(log_q_all.masked_fill(own, -math.inf), dim=1)
        terms.append(log_q_own - (log_q_others - math.log(n - 1)))
    return torch.stack(terms)

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamlib import vi

D = torch.distributions


def f64(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gaussian_kl_against_torch_distributions():
    mu, logvar, mu_p, logvar_p = (
        f64(5, 3, seed=1),
        f64(5, 3, seed=2),
        f64(5, 3, seed=3),
        f64(5, 3, seed=4),
    )
    q = D.Independent(D.Normal(mu, (0.5 * logvar).exp()), 1)
    p = D.Independent(D.Normal(mu_p, (0.5 * logvar_p).exp()), 1)
    assert torch.allclose(vi.gaussian_kl(mu, logvar, mu_p, logvar_p), D.kl_divergence(q, p))
    std = D.Independent(
        D.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), 1
    )
    assert torch.allclose(vi.gaussian_kl(mu, logvar), D.kl_divergence(q, std))


def test_gaussian_kl_against_monte_carlo():
    mu, logvar = (
        torch.tensor([[0.5, -1.0]], dtype=torch.float64),
        torch.tensor([[0.2, -0.7]], dtype=torch.float64),
    )
    q = D.Normal(mu, (0.5 * logvar).exp())
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - D.Normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    assert vi.gaussian_kl(mu, logvar).item() == pytest.approx(mc.item(), abs=0.01)


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 3), st.floats(-2, 2), st.floats(-3, 3), st.floats(-2, 2))
def test_gaussian_kl_is_nonnegative_and_zero_iff_equal(m, lv, mp, lvp):
    t = lambda v: torch.tensor([[v]], dtype=torch.float64)  # noqa: E731
    assert vi.gaussian_kl(t(m), t(lv), t(mp), t(lvp)).item() >= -1e-12
    assert vi.gaussian_kl(t(m), t(lv), t(m), t(lv)).item() == pytest.approx(0.0, abs=1e-12)


def test_gaussian_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        vi.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="both mu_p and logvar_p"):
        vi.gaussian_kl(torch.zeros(2), torch.zeros(2), mu_p=torch.zeros(2))
    with pytest.raises(TypeError, match="mu must be a floating"):
        vi.gaussian_kl(torch.zeros(2, dtype=torch.int64), torch.zeros(2))
    with pytest.raises(ValueError, match="broadcast"):
        vi.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4), torch.zeros(4))
    with pytest.raises(TypeError, match="^mu must be a torch.Tensor"):
        vi.gaussian_kl([0.0, 0.0], torch.zeros(2))
    with pytest.raises(TypeError, match="^logvar has dtype"):
        vi.gaussian_kl(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="^logvar_p must be a floating"):
        vi.gaussian_kl(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2).long())
    with pytest.raises(TypeError, match="^reduce must be True or False"):
        vi.gaussian_kl(torch.zeros(2), torch.zeros(2), reduce=0)


def test_gaussian_kl_per_dimension_sums_to_the_total():
    mu, logvar, mu_p, logvar_p = (f64(4, 3, seed=s) for s in range(4))
    for prior in ((), (mu_p, logvar_p)):
        per_dim = vi.gaussian_kl(mu, logvar, *prior, reduce=False)
        assert per_dim.shape == (4, 3)
        assert torch.equal(per_dim.sum(-1), vi.gaussian_kl(mu, logvar, *prior))


def test_iwae_bound_is_stable_log_mean_exp():
    lw = torch.tensor([[-1000.0], [-1001.0]], dtype=torch.float64)
    expected = -1000.0 + math.log((1 + math.exp(-1.0)) / 2)
    assert vi.iwae_bound(lw).item() == pytest.approx(expected, rel=1e-12)
    x = f64(7, 4)
    assert torch.allclose(vi.iwae_bound(x), torch.log(torch.exp(x).mean(0)))
    assert torch.equal(vi.iwae_bound(x[:1]), x[0])
    with pytest.raises(ValueError, match="K >= 1"):
        vi.iwae_bound(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="^log_weights must be a floating"):
        vi.iwae_bound(torch.zeros(3, dtype=torch.int64))


def test_bernoulli_log_likelihood_against_torch():
    logits, x = f64(4, 6), (f64(4, 6, seed=1) > 0).double()
    ref = D.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(vi.bernoulli_log_likelihood(logits, x), ref)
    big = torch.tensor([[80.0, -80.0]], dtype=torch.float64)
    assert (
        vi.bernoulli_log_likelihood(big, torch.tensor([[1.0, 0.0]], dtype=torch.float64)).item()
        > -1e-30
    )
    with pytest.raises(TypeError, match="^x must be a floating"):
        vi.bernoulli_log_likelihood(logits, x.long())
    with pytest.raises(ValueError, match="do not broadcast"):
        vi.bernoulli_log_likelihood(logits, x[:, :5])


def _linear_model(d=5, k=3):
    return f64(d, k, seed=10), f64(d, seed=11), 0.7


def test_linear_gaussian_elbo_identity_and_zero_gap_at_the_posterior():
    W, b, sigma = _linear_model()
    x = f64(4, 5, seed=12)
    log_px = vi.linear_gaussian_evidence(x, W, b, sigma)
    m, S = vi.linear_gaussian_posterior(x, W, b, sigma)
    for seed in range(3):
        mu_q, logvar_q = f64(4, 3, seed=20 + seed), f64(4, 3, seed=30 + seed)
        elbo = vi.linear_gaussian_elbo(x, W, b, sigma, mu_q, logvar_q)
        q = D.MultivariateNormal(mu_q, torch.diag_embed(logvar_q.exp()))
        kl = D.kl_divergence(q, D.MultivariateNormal(m, covariance_matrix=S.expand(4, 3, 3)))
        assert torch.allclose(elbo, log_px - kl, atol=1e-10)
        assert torch.all(elbo < log_px)
    # with one latent dimension the posterior is Gaussian with a scalar variance: q can match it
    W1 = W[:, :1]
    m1, S1 = vi.linear_gaussian_posterior(x, W1, b, sigma)
    elbo1 = vi.linear_gaussian_elbo(x, W1, b, sigma, m1, torch.log(S1.diagonal()).expand(4, 1))
    assert torch.allclose(elbo1, vi.linear_gaussian_evidence(x, W1, b, sigma), atol=1e-10)


def test_linear_gaussian_elbo_against_monte_carlo():
    W, b, sigma = _linear_model()
    x = f64(1, 5, seed=13)
    mu_q, logvar_q = f64(1, 3, seed=14), f64(1, 3, seed=15) - 1
    z = mu_q + (0.5 * logvar_q).exp() * f64(200_000, 3, seed=16)
    loglik = D.Normal(z @ W.T + b, sigma).log_prob(x).sum(-1)
    log_prior = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_q = D.Normal(mu_q, (0.5 * logvar_q).exp()).log_prob(z).sum(-1)
    w = loglik + log_prior - log_q
    se = w.std().item() / math.sqrt(len(w))
    exact = vi.linear_gaussian_elbo(x, W, b, sigma, mu_q, logvar_q).item()
    assert abs(exact - w.mean().item()) < 4 * se


def test_linear_gaussian_rejects_bad_shapes():
    W, b, sigma = _linear_model()
    x = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^b must have shape \(5,\)"):
        vi.linear_gaussian_evidence(x, W, b[:4], sigma)
    with pytest.raises(ValueError, match="^W must be 2-D"):
        vi.linear_gaussian_evidence(x, W[0], b, sigma)
    with pytest.raises(ValueError, match=r"^x must have shape \(\.\.\., 5\)"):
        vi.linear_gaussian_evidence(x[:4], W, b, sigma)
    with pytest.raises(TypeError, match="^x has dtype"):
        vi.linear_gaussian_evidence(x.float(), W, b, sigma)
    with pytest.raises(ValueError, match="^sigma must"):
        vi.linear_gaussian_posterior(x, W, b, 0.0)
    with pytest.raises(TypeError, match="^sigma must"):
        vi.linear_gaussian_posterior(x, W, b, "0.7")


def test_linear_gaussian_elbo_checks_the_variational_parameters():
    W, b, sigma = _linear_model()  # k = 3 latent dimensions
    x, mu_q, logvar_q = f64(5), f64(3, seed=1), f64(3, seed=2)
    with pytest.raises(ValueError, match=r"^mu_q must have shape \(\.\.\., 3\)"):
        vi.linear_gaussian_elbo(x, W, b, sigma, mu_q[:2], logvar_q[:2])
    with pytest.raises(ValueError, match="^logvar_q and mu_q must have the same shape"):
        vi.linear_gaussian_elbo(x, W, b, sigma, mu_q, logvar_q.expand(2, 3))
    with pytest.raises(TypeError, match="^logvar_q must be a torch.Tensor"):
        vi.linear_gaussian_elbo(x, W, b, sigma, mu_q, None)
    with pytest.raises(TypeError, match="^mu_q has dtype"):
        vi.linear_gaussian_elbo(x, W, b, sigma, mu_q.float(), logvar_q)


def test_gradient_estimators_are_unbiased_for_a_quadratic():
    # E[(z - 3)^2] = (mu - 3)^2 + sigma^2, so d/dmu = 2 (mu - 3)
    reparam, score = vi.reparam_and_score_gradients(
        lambda z: (z - 3) ** 2, 1.0, math.log(0.5), 400_000, torch.Generator().manual_seed(0)
    )
    assert reparam.mean().item() == pytest.approx(-4.0, abs=0.01)
    assert score.mean().item() == pytest.approx(-4.0, abs=0.1)
    assert score.var().item() > 10 * reparam.var().item()
    with pytest.raises(ValueError, match="n_samples"):
        vi.reparam_and_score_gradients(lambda z: z, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="same shape"):
        vi.reparam_and_score_gradients(lambda z: z.sum(), 0.0, 0.0, 10)
    with pytest.raises(TypeError, match="^n_samples must be an int"):
        vi.reparam_and_score_gradients(lambda z: z, 0.0, 0.0, 10.0)
    with pytest.raises(TypeError, match="^f must be callable"):
        vi.reparam_and_score_gradients("z**2", 0.0, 0.0, 10)
    with pytest.raises(TypeError, match="^mu must be a real"):
        vi.reparam_and_score_gradients(lambda z: z, "0", 0.0, 10)
    with pytest.raises(ValueError, match="^log_sigma must be a finite"):
        vi.reparam_and_score_gradients(lambda z: z, 0.0, math.nan, 10)
    with pytest.raises(TypeError, match="^generator must"):
        vi.reparam_and_score_gradients(lambda z: z, 0.0, 0.0, 10, generator=1)


def test_vae_shapes_elbo_terms_and_iwae_ordering():
    torch.manual_seed(0)
    model = vi.VAE(n_in=10, n_latent=3, hidden=16)
    x = (torch.rand(32, 10) > 0.5).float()
    obj, loglik, kl = model.elbo(x)
    assert obj.shape == loglik.shape == kl.shape == (32,)
    assert torch.allclose(obj, loglik - kl) and torch.all(kl >= 0)
    lw = model.log_weights(x, 50, torch.Generator().manual_seed(1))
    assert lw.shape == (50, 32)
    assert (
        vi.iwae_bound(lw).mean() >= lw.mean()
    )  # Jensen: the IWAE bound is above the ELBO estimate
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 10\)"):
        model.encode(torch.zeros(4, 9))
    with pytest.raises(ValueError, match="^n_latent must"):
        vi.VAE(n_latent=0)
    with pytest.raises(TypeError, match="^hidden must be an int"):
        vi.VAE(hidden=True)
    assert vi.VAE(n_in=np.int64(4), n_latent=2, hidden=3).n_in == 4
    with pytest.raises(ValueError, match=r"^z must have shape \(\.\.\., 3\)"):
        model.decode(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="^x must be a floating"):
        model.encode(torch.zeros(4, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="^beta must"):
        model.elbo(x, beta=-1.0)
    with pytest.raises(TypeError, match="^free_bits must"):
        model.elbo(x, free_bits=None)
    with pytest.raises(TypeError, match="^generator must"):
        model.elbo(x, generator=0)
    with pytest.raises(ValueError, match="^k must"):
        model.log_weights(x, 0)


def test_train_vae_improves_the_elbo_and_free_bits_prevent_collapse():
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(4, 16, generator=g) > 0.5).float()
    x = protos[torch.randint(0, 4, (256,), generator=g)]
    x = torch.where(torch.rand(x.shape, generator=g) < 0.05, 1 - x, x)
    torch.manual_seed(0)
    model = vi.VAE(n_in=16, n_latent=2, hidden=32)
    hist = vi.train_vae(model, x, 40, 64, generator=torch.Generator().manual_seed(1), x_test=x[:64])
    assert hist.elbo[-1] > hist.elbo[0] + 2
    assert len(hist.test_elbo) == 40
    assert vi.active_units(model, x) >= 1
    torch.manual_seed(0)
    collapsed = vi.VAE(n_in=16, n_latent=2, hidden=32)
    vi.train_vae(collapsed, x, 40, 64, beta=20.0, generator=torch.Generator().manual_seed(1))
    assert vi.active_units(collapsed, x) == 0
    torch.manual_seed(0)
    kept = vi.VAE(n_in=16, n_latent=2, hidden=32)
    vi.train_vae(
        kept, x, 40, 64, beta=20.0, free_bits=1.0, generator=torch.Generator().manual_seed(1)
    )
    assert vi.active_units(kept, x) >= 1
    with pytest.raises(ValueError, match="epochs"):
        vi.train_vae(model, x, 0)


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 1.0}, TypeError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": "3e-3"}, TypeError, "lr"),
        ({"beta": -1.0}, ValueError, "beta"),
        ({"beta": math.inf}, ValueError, "beta"),
        ({"free_bits": -0.5}, ValueError, "free_bits"),
        ({"free_bits": None}, TypeError, "free_bits"),
        ({"generator": 1}, TypeError, "generator"),
        ({"x_test": torch.zeros(3, 5)}, ValueError, "x_test"),
        ({"x_train": torch.zeros(3, 6, dtype=torch.int64)}, TypeError, "x_train"),
        ({"model": "vae"}, TypeError, "model"),
    ],
)
def test_train_vae_rejects_bad_arguments_before_training(kwargs, exc, name):
    model = vi.VAE(n_in=6, n_latent=2, hidden=4)
    before = [p.detach().clone() for p in model.parameters()]
    args = {"model": model, "x_train": torch.zeros(8, 6), "epochs": 1} | kwargs
    with pytest.raises(exc, match=rf"^{name} must"):
        vi.train_vae(**args)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_active_units_rejects_bad_arguments():
    model = vi.VAE(n_in=6, n_latent=2, hidden=4)
    with pytest.raises(ValueError, match="^threshold must"):
        vi.active_units(model, torch.zeros(8, 6), threshold=-0.1)
    with pytest.raises(TypeError, match="^model must be a VAE"):
        vi.active_units(torch.nn.Linear(6, 4), torch.zeros(8, 6))


def test_sampling_happens_on_the_inputs_device():
    """The meta device stands in for a GPU: noise drawn without device= lands on the CPU and
    mixing it with the model's tensors fails, as it does on CUDA (it did, before the fix)."""
    model = vi.VAE(4, 2, 8).to("meta")
    x = torch.zeros(5, 4, device="meta")
    assert all(t.device == x.device for t in model.elbo(x))
    assert model.log_weights(x, 3).device == x.device
    W = torch.zeros(4, 2, device="meta", dtype=torch.float64)
    b, xs = (
        torch.zeros(4, device="meta", dtype=W.dtype),
        torch.zeros(3, 4, device="meta", dtype=W.dtype),
    )
    assert all(t.device == W.device for t in vi.linear_gaussian_posterior(xs, W, b, 1.0))


def test_kl_per_unit_sums_to_the_average_kl_term_and_vanishes_at_collapse():
    torch.manual_seed(0)
    model = vi.VAE(n_in=6, n_latent=3, hidden=8)
    x = (torch.rand(20, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    per_unit = vi.kl_per_unit(model, x)
    mu, logvar = model.encode(x)
    assert per_unit.shape == (3,) and torch.all(per_unit >= 0)
    assert per_unit.sum().item() == pytest.approx(vi.gaussian_kl(mu, logvar).mean().item())
    with torch.no_grad():  # an encoder that returns the prior for every x: no unit carries KL
        model.encoder[2].weight.zero_()
        model.encoder[2].bias.zero_()
    assert torch.all(vi.kl_per_unit(model, x) == 0)
    with pytest.raises(TypeError, match="^model must be a VAE"):
        vi.kl_per_unit(torch.nn.Linear(6, 6), x)


def test_elbo_surgery_limits_and_identity():
    g = torch.Generator().manual_seed(0)
    n, k = 50, 2
    # every q(z | x_n) the same: the code says nothing about x, I = 0 exactly
    mu, logvar = f64(1, k).expand(n, k), f64(1, k, seed=1).expand(n, k)
    info, marginal = vi.elbo_surgery(mu, logvar, n_z=5, generator=g)
    assert info.shape == marginal.shape == (5, n)
    assert info.abs().max().item() < 1e-12
    # far-apart, narrow components: the code identifies x, I = log N
    mu_far = 100.0 * torch.arange(n, dtype=torch.float64).unsqueeze(1).expand(n, k)
    info, _ = vi.elbo_surgery(mu_far, torch.full((n, k), -4.0, dtype=torch.float64), 5, g)
    assert info.mean().item() == pytest.approx(math.log(n), abs=1e-9)
    assert info.max().item() <= math.log(n) + 1e-9
    # I + KL(q(z) || p(z)) estimates the average KL term: compare with the closed form
    mu, logvar = f64(n, k, seed=2), f64(n, k, seed=3) - 1.0
    info, marginal = vi.elbo_surgery(mu, logvar, n_z=400, generator=g)
    total = info + marginal
    se = total.std().item() / math.sqrt(total.numel())
    assert abs(total.mean().item() - vi.gaussian_kl(mu, logvar).mean().item()) < 4 * se
    assert 0 < info.mean().item() < math.log(n) and marginal.mean().item() > 0
    with pytest.raises(ValueError, match="^mu must be 2-D"):
        vi.elbo_surgery(mu[0], logvar[0])
    with pytest.raises(ValueError, match="^logvar and mu must have the same shape"):
        vi.elbo_surgery(mu, logvar[:, :1])
    with pytest.raises(ValueError, match="^n_z must"):
        vi.elbo_surgery(mu, logvar, n_z=0)


def test_leave_one_out_info_limits_and_pairing():
    n, k = 50, 2
    # every q(z | x_n) the same: the bound is 0 exactly
    mu, logvar = f64(1, k).expand(n, k), f64(1, k, seed=1).expand(n, k)
    loo = vi.leave_one_out_info(mu, logvar, n_z=5, generator=torch.Generator().manual_seed(0))
    assert loo.shape == (5, n)
    assert loo.abs().max().item() < 1e-12
    # far-apart, narrow components: unlike the InfoNCE terms it is not capped at log N
    mu_far = 100.0 * torch.arange(n, dtype=torch.float64).unsqueeze(1).expand(n, k)
    narrow = torch.full((n, k), -4.0, dtype=torch.float64)
    loo = vi.leave_one_out_info(mu_far, narrow, 5, torch.Generator().manual_seed(0))
    assert loo.min().item() > math.log(n) + 100
    # same generator state, same draws: where q(z | x_n) beats every other component the
    # leave-one-out term exceeds the InfoNCE term
    mu, logvar = f64(n, k, seed=2), f64(n, k, seed=3) - 1.0
    loo = vi.leave_one_out_info(mu, logvar, 20, torch.Generator().manual_seed(4))
    info, _ = vi.elbo_surgery(mu, logvar, 20, torch.Generator().manual_seed(4))
    assert loo.mean().item() > info.mean().item()
    # with L the leave-one-out mixture, loo = log(q_own / L) and the full mixture is
    # (q_own + (N - 1) L) / N, so loo - info = log(e^loo / N + (N - 1) / N)
    expected = torch.log(loo.exp() / n + (n - 1) / n)
    assert torch.allclose(loo - info, expected, atol=1e-9)
    with pytest.raises(ValueError, match="must be >= 2"):
        vi.leave_one_out_info(mu[:1], logvar[:1])
    with pytest.raises(ValueError, match="^mu must be 2-D"):
        vi.leave_one_out_info(mu[0], logvar[0])
    with pytest.raises(ValueError, match="^n_z must"):
        vi.leave_one_out_info(mu, logvar, n_z=0)


def test_iwae_training_optimizes_the_importance_weighted_bound():
    g = torch.Generator().manual_seed(0)
    # two random bits, each copied three times: log p(x) can rise from about -6 ln 2 to -2 ln 2
    x = (torch.rand(64, 2, generator=g) > 0.5).float().repeat_interleave(3, dim=1)
    torch.manual_seed(0)
    model = vi.VAE(n_in=6, n_latent=2, hidden=8)
    before = model.iwae(x, 5, generator=torch.Generator().manual_seed(1)).mean().item()
    history = vi.train_vae(
        model, x, epochs=300, generator=torch.Generator().manual_seed(2), iwae_k=5
    )
    after = model.iwae(x, 5, generator=torch.Generator().manual_seed(1)).mean().item()
    assert after > before + 0.5 and len(history.elbo) == 300
    # the differentiable bound equals the evaluation one on the same draws
    with torch.no_grad():
        same = vi.iwae_bound(model.log_weights(x, 5, generator=torch.Generator().manual_seed(3)))
        assert torch.equal(model.iwae(x, 5, generator=torch.Generator().manual_seed(3)), same)
    with pytest.raises(ValueError, match="^iwae_k=5 trains the IWAE bound"):
        vi.train_vae(model, x, epochs=1, beta=2.0, iwae_k=5)
    with pytest.raises(ValueError, match="^iwae_k must"):
        vi.train_vae(model, x, epochs=1, iwae_k=0)

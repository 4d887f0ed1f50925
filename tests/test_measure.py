import math

import pytest
import torch

from hamlib import measure


def _quadratic(A):
    w = torch.zeros(A.shape[0], dtype=torch.float64, requires_grad=True)
    b = torch.arange(A.shape[0], dtype=torch.float64)

    def loss_fn():
        return 0.5 * w @ A @ w - b @ w + (w**4).sum() * 0

    return loss_fn, [w]


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    return M @ M.T / n + torch.diag(torch.linspace(-2.0, 3.0, n, dtype=torch.float64))


def _mlp(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
    ).double()
    g = torch.Generator().manual_seed(seed)
    x, y = (
        torch.randn(40, 4, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (40,), generator=g),
    )
    params = list(net.parameters())
    return (lambda: torch.nn.functional.cross_entropy(net(x), y)), params, net, x, y


def test_hvp_on_a_quadratic_is_a_matrix_product():
    A = _spd(7)
    loss_fn, params = _quadratic(A)
    v = torch.randn(7, dtype=torch.float64)
    assert torch.allclose(measure.hvp(loss_fn, params, [v])[0], A @ v)


def test_hvp_matches_torch_func_hessian_on_an_mlp():
    loss_fn, params, net, x, y = _mlp()
    names = [n for n, _ in net.named_parameters()]

    def f(*flat_params):
        out = torch.func.functional_call(net, dict(zip(names, flat_params, strict=True)), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(f, tuple(p.detach() for p in params))
    v = [torch.randn_like(p) for p in params]
    hv = measure.hvp(loss_fn, params, v)
    for i in range(len(params)):
        expected = sum(
            (H[i][j].reshape(params[i].numel(), -1) @ v[j].reshape(-1)) for j in range(len(params))
        )
        assert torch.allclose(hv[i].reshape(-1), expected, atol=1e-10)


def test_spectrum_and_lanczos_agree_with_eigvalsh():
    A = _spd(12, seed=1)
    loss_fn, params = _quadratic(A)
    exact = torch.linalg.eigvalsh(A)
    assert torch.allclose(measure.hessian_spectrum(loss_fn, params), exact, atol=1e-10)
    ritz = measure.lanczos(loss_fn, params, iters=12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ritz, exact, atol=1e-8)
    top = measure.top_hessian_eigenvalue(loss_fn, params, iters=12)
    assert top == pytest.approx(exact[-1].item(), abs=1e-8)


def test_lanczos_finds_the_largest_not_the_largest_in_magnitude():
    A = torch.diag(torch.tensor([-10.0, 0.5, 1.0, 2.0], dtype=torch.float64))
    loss_fn, params = _quadratic(A)
    assert measure.top_hessian_eigenvalue(loss_fn, params, iters=4) == pytest.approx(2.0, abs=1e-10)


def test_top_eigenvalue_of_an_mlp_from_few_lanczos_steps():
    loss_fn, params, *_ = _mlp(seed=2)
    exact = measure.hessian_spectrum(loss_fn, params)
    top = measure.top_hessian_eigenvalue(
        loss_fn, params, iters=20, generator=torch.Generator().manual_seed(0)
    )
    assert top == pytest.approx(exact[-1].item(), rel=1e-6)
    assert exact.numel() == sum(p.numel() for p in params)


def test_hessian_spectrum_refuses_large_models():
    big = torch.zeros(6000, requires_grad=True)
    with pytest.raises(ValueError, match="max_params"):
        measure.hessian_spectrum(lambda: (big**2).sum(), [big])


def test_argument_checks():
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match="loss_fn"):
        measure.hvp(3, [w], [w])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        measure.hvp(lambda: w.sum(), [torch.zeros(3)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="shaped like params"):
        measure.hvp(lambda: (w**2).sum(), [w], [torch.zeros(2)])
    with pytest.raises(ValueError, match="scalar"):
        measure.hvp(lambda: w**2, [w], [torch.zeros(3)])


def test_gradient_noise_scale_on_synthetic_gradients():
    # per-example gradients G + noise with covariance sigma^2 I in p dims: B = p sigma^2 / |G|^2
    g = torch.Generator().manual_seed(0)
    p, n, sigma = 50, 4000, 2.0
    G = torch.full((p,), 0.5, dtype=torch.float64)
    grads = G + sigma * torch.randn(n, p, generator=g, dtype=torch.float64)
    expected = p * sigma**2 / (G @ G).item()
    assert measure.gradient_noise_scale(grads) == pytest.approx(expected, rel=0.05)
    pure_noise = torch.randn(10, 5, generator=g, dtype=torch.float64) - 0.0
    assert measure.gradient_noise_scale(pure_noise - pure_noise.mean(0)) == math.inf
    with pytest.raises(ValueError, match="2-D"):
        measure.gradient_noise_scale(torch.zeros(5))


def test_lanczos_names_non_finite_products():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="non-finite"):
        measure.lanczos(lambda: (w**2).sum() * float("nan"), [w], iters=3)


def test_per_example_gradients_match_one_backward_pass_per_example():
    _, params, net, x, y = _mlp(seed=3)
    G = measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y)
    assert G.shape == (40, sum(p.numel() for p in params))
    for i in (0, 17, 39):
        grads = torch.autograd.grad(
            torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), params
        )
        assert torch.allclose(G[i], torch.cat([g.reshape(-1) for g in grads]), atol=1e-12)
    with pytest.raises(ValueError, match="same"):
        measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y[:5])
    with pytest.raises(TypeError, match="model"):
        measure.per_example_gradients(lambda t: t, torch.nn.functional.cross_entropy, x, y)

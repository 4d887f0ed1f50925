import math

import numpy as np
import pytest
import torch

from hamlib import measure


def _quadratic(A):
    w = torch.zeros(A.shape[0], dtype=torch.float64, requires_grad=True)
    b = torch.arange(A.shape[0], dtype=torch.float64)

    def loss_fn():
        return 0.5 * w @ A @ w - b @ w

    return loss_fn, [w]


def _spd(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    return M @ M.T / n + torch.diag(torch.linspace(-2.0, 3.0, n, dtype=torch.float64))


def _mlp(classifier, seed=0):
    net, x, y = classifier(seed)
    return (lambda: torch.nn.functional.cross_entropy(net(x), y)), list(net.parameters()), net, x, y


def test_hvp_on_a_quadratic_is_a_matrix_product():
    A = _spd(7)
    loss_fn, params = _quadratic(A)
    v = torch.randn(7, dtype=torch.float64)
    assert torch.allclose(measure.hvp(loss_fn, params, [v])[0], A @ v)


def test_hvp_matches_torch_func_hessian_on_an_mlp(classifier):
    loss_fn, params, net, x, y = _mlp(classifier)
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


def test_top_eigenvalue_of_an_mlp_from_few_lanczos_steps(classifier):
    loss_fn, params, *_ = _mlp(classifier, seed=2)
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
    with pytest.raises(TypeError, match="^loss_fn must be callable"):
        measure.hvp(3, [w], [w])
    with pytest.raises(ValueError, match=r"^params\[0\] must have requires_grad=True"):
        measure.hvp(lambda: w.sum(), [torch.zeros(3)], [torch.zeros(3)])
    with pytest.raises(TypeError, match=r"^params\[1\] must be a torch.Tensor"):
        measure.hvp(lambda: w.sum(), [w, 3.0], [w, w])
    with pytest.raises(TypeError, match="^params must be a list"):
        measure.hvp(lambda: w.sum(), w, [w])
    with pytest.raises(ValueError, match="^params must be a non-empty"):
        measure.hvp(lambda: w.sum(), [], [])
    with pytest.raises(ValueError, match=r"^v\[0\] and params\[0\] must have the same shape"):
        measure.hvp(lambda: (w**2).sum(), [w], [torch.zeros(2)])
    with pytest.raises(TypeError, match=r"^v\[0\] has dtype"):
        measure.hvp(lambda: (w**2).sum(), [w], [torch.zeros(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="^v must hold one tensor per entry of params"):
        measure.hvp(lambda: (w**2).sum(), [w], [w, w])
    with pytest.raises(TypeError, match="^v must be a list"):
        measure.hvp(lambda: (w**2).sum(), [w], torch.zeros(3))
    with pytest.raises(ValueError, match="^loss_fn must return a scalar tensor, got shape"):
        measure.hvp(lambda: w**2, [w], [torch.zeros(3)])
    with pytest.raises(TypeError, match="^loss_fn must return a scalar tensor, got float"):
        measure.hvp(lambda: 1.0, [w], [torch.zeros(3)])


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        ({"iters": 0}, ValueError, "iters"),
        ({"iters": 2.0}, TypeError, "iters"),
        ({"iters": True}, TypeError, "iters"),
        ({"generator": 0}, TypeError, "generator"),
    ],
)
def test_lanczos_rejects_bad_arguments(kwargs, exc, name):
    loss_fn, params = _quadratic(_spd(3))
    with pytest.raises(exc, match=rf"^{name} must"):
        measure.lanczos(loss_fn, params, **kwargs)
    with pytest.raises(exc, match=rf"^{name} must"):
        measure.top_hessian_eigenvalue(loss_fn, params, **kwargs)


def test_lanczos_accepts_numpy_iters_and_parameters_of_mixed_dtype():
    A = _spd(4, seed=2)
    loss_fn, params = _quadratic(A)
    exact = torch.linalg.eigvalsh(A)[-1].item()
    assert measure.top_hessian_eigenvalue(loss_fn, params, np.int64(4)) == pytest.approx(exact)
    w32 = torch.zeros(2, requires_grad=True)  # a float32 block next to the float64 one
    mixed = lambda: loss_fn() + (w32.double() ** 2).sum()  # noqa: E731
    top = measure.top_hessian_eigenvalue(mixed, params + [w32], iters=6)
    assert top == pytest.approx(max(exact, 2.0), rel=1e-6)


def test_hessian_spectrum_rejects_max_params():
    loss_fn, params = _quadratic(_spd(3))
    with pytest.raises(ValueError, match="^max_params must"):
        measure.hessian_spectrum(loss_fn, params, max_params=0)
    with pytest.raises(TypeError, match="^max_params must"):
        measure.hessian_spectrum(loss_fn, params, max_params=5000.0)


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
    with pytest.raises(ValueError, match="^per_example_grads must be 2-D"):
        measure.gradient_noise_scale(torch.zeros(5))
    with pytest.raises(ValueError, match="^per_example_grads must hold at least 2"):
        measure.gradient_noise_scale(torch.zeros(1, 5))
    with pytest.raises(TypeError, match="^per_example_grads must be a torch.Tensor"):
        measure.gradient_noise_scale([[0.0, 1.0], [1.0, 0.0]])


def test_lanczos_names_non_finite_products():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="non-finite"):
        measure.lanczos(lambda: (w**2).sum() * float("nan"), [w], iters=3)


def test_per_example_gradients_match_one_backward_pass_per_example(classifier):
    _, params, net, x, y = _mlp(classifier, seed=3)
    G = measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y)
    assert G.shape == (40, sum(p.numel() for p in params))
    for i in (0, 17, 39):
        grads = torch.autograd.grad(
            torch.nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), params
        )
        assert torch.allclose(G[i], torch.cat([g.reshape(-1) for g in grads]), atol=1e-12)
    with pytest.raises(ValueError, match="^x and y must have the same"):
        measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y[:5])
    with pytest.raises(ValueError, match="^x and y must have the same, non-zero"):
        measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y[0])
    with pytest.raises(TypeError, match="^model must be a Module"):
        measure.per_example_gradients(lambda t: t, torch.nn.functional.cross_entropy, x, y)
    with pytest.raises(TypeError, match="^loss must be callable"):
        measure.per_example_gradients(net, "cross_entropy", x, y)
    with pytest.raises(TypeError, match="^y must be a torch.Tensor"):
        measure.per_example_gradients(net, torch.nn.functional.cross_entropy, x, y.tolist())


def test_hessian_is_the_matrix_of_a_quadratic_and_of_autograd(classifier):
    A = _spd(9, seed=2)
    loss_fn, params = _quadratic(A)
    assert torch.allclose(measure.hessian(loss_fn, params), A, atol=1e-12)
    loss_fn, params, net, x, y = _mlp(classifier)
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in params]

    def f_flat(theta):
        parts, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            n = math.prod(shape)
            parts[name] = theta[i : i + n].reshape(shape)
            i += n
        return torch.nn.functional.cross_entropy(torch.func.functional_call(net, parts, (x,)), y)

    expected = torch.autograd.functional.hessian(f_flat, flat)
    assert torch.allclose(measure.hessian(loss_fn, params), expected, atol=1e-10)


def test_gradient_noise_scale_of_a_whole_population_is_exact():
    # two examples with gradients G +- d: tr Sigma = |d|^2 (population), |G|^2 exact
    G, d = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 0.0])
    rows = torch.stack([G + d, G - d])
    assert measure.gradient_noise_scale(rows, population=True) == pytest.approx(9 / 5, rel=1e-12)
    # treated as a sample of 2, |G|^2 is estimated as |mean|^2 - tr(Sigma_unbiased)/2 = 5 - 9 < 0
    assert measure.gradient_noise_scale(rows) == math.inf
    assert measure.gradient_noise_scale(torch.stack([d, -d]), population=True) == math.inf
    with pytest.raises(TypeError, match="^population must be True or False"):
        measure.gradient_noise_scale(rows, population=1)

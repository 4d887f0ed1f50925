import math

import numpy as np
import pytest
import torch

from hamlib import optim


def _run(make_opt, classifier, steps=25):
    """The parameters after every one of ``steps`` steps (a list per step)."""
    model, x, y = classifier(0)
    opt = make_opt(model.parameters())
    path = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        path.append([p.detach().clone() for p in model.parameters()])
    return path


PAIRS = [
    (lambda ps: optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    (
        lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.01),
        lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01),
    ),
    (
        lambda ps: optim.Momentum(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    ),
    (lambda ps: optim.Adam(ps, lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False)),
    (
        lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1, foreach=False),
    ),
    (
        lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False),
    ),
]


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_matches_torch_optim_step_for_step(ours, theirs, classifier):
    for step, (mine, torchs) in enumerate(
        zip(_run(ours, classifier), _run(theirs, classifier), strict=True), start=1
    ):
        for a, b in zip(mine, torchs, strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-14), f"differs at step {step}"


def test_adamw_is_not_adam_with_l2(classifier):
    adam_l2 = _run(lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=0.1), classifier)[-1]
    adamw = _run(lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1), classifier)[-1]
    assert max((a - b).abs().max().item() for a, b in zip(adam_l2, adamw, strict=True)) > 1e-3


def test_closure_and_skipped_parameters():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    frozen = torch.tensor([5.0], requires_grad=True)  # never gets a gradient
    opt = optim.SGD([w, frozen], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(5.0)
    assert torch.allclose(w, torch.tensor([0.0, 0.0])) and frozen.item() == 5.0
    with pytest.raises(TypeError, match="^closure must be callable"):
        opt.step(closure())


@pytest.mark.parametrize(
    "make, exc, name",
    [
        (lambda ps: optim.SGD(ps, lr=0.0), ValueError, "lr"),
        (lambda ps: optim.SGD(ps, lr=-1.0), ValueError, "lr"),
        (lambda ps: optim.SGD(ps, lr=math.inf), ValueError, "lr"),
        (lambda ps: optim.SGD(ps, lr="0.1"), TypeError, "lr"),
        (lambda ps: optim.SGD(ps, lr=True), TypeError, "lr"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=None), TypeError, "weight_decay"),
        (lambda ps: optim.Momentum(ps, lr=0.1, momentum=1.0), ValueError, "momentum"),
        (lambda ps: optim.Momentum(ps, lr=0.1, momentum=-0.1), ValueError, "momentum"),
        (lambda ps: optim.Momentum(ps, lr=0.1, momentum="0.9"), TypeError, "momentum"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
        (lambda ps: optim.Adam(ps, betas=(math.nan, 0.9)), ValueError, r"betas\[0\]"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 0.99, 0.999)), ValueError, "betas"),
        (lambda ps: optim.Adam(ps, betas=0.9), TypeError, "betas"),
        (lambda ps: optim.Adam(ps, eps=-1e-8), ValueError, "eps"),
        (lambda ps: optim.AdamW(ps, weight_decay=-0.1), ValueError, "weight_decay"),
        (lambda ps: optim.AdamW(ps, lr=[1e-3]), TypeError, "lr"),
    ],
)
def test_rejects_bad_hyperparameters(make, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        make([torch.zeros(2, requires_grad=True)])


def test_accepts_numpy_scalars():
    w = torch.zeros(2, requires_grad=True)
    opt = optim.Adam([w], lr=np.float32(0.5), betas=[np.float64(0.9), 0.99])
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert type(opt.param_groups[0]["lr"]) is float


def test_minimize_reaches_a_critical_point_and_refuses_a_saddle():
    # a regularized logistic regression: strictly convex, so one minimum, found to 1e-12
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).double()
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def loss():
        return torch.nn.functional.binary_cross_entropy_with_logits(X @ w, y) + 0.5e-2 * (w @ w)

    norm = optim.minimize(loss, [w], grad_tol=1e-12)
    grad = torch.autograd.grad(loss(), [w])[0]
    assert norm < 1e-12 and grad.norm().item() < 1e-12
    # a saddle that L-BFGS stops at (it starts at the critical point): Newton would stay there
    v = torch.tensor([0.5, 0.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="not positive definite"):
        optim.minimize(lambda: v[0] ** 2 - v[1] ** 2 + 1e-3 * v[0] ** 4, [v], max_iter=1)
    with pytest.raises(ValueError, match="^grad_tol must"):
        optim.minimize(loss, [w], grad_tol=0.0)
    with pytest.raises(TypeError, match="^max_iter must"):
        optim.minimize(loss, [w], max_iter=2.5)

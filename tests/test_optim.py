import math

import numpy as np
import pytest
import torch

from hamlib import optim


def _run(make_opt, classifier, steps=25):
    model, x, y = classifier(0)
    opt = make_opt(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


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
    for a, b in zip(_run(ours, classifier), _run(theirs, classifier), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_adamw_is_not_adam_with_l2(classifier):
    adam_l2 = _run(lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=0.1), classifier)
    adamw = _run(lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1), classifier)
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

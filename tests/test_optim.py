import pytest
import torch

from hamlib import optim


def _model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (32,), generator=g)
    return model, x, y


def _run(make_opt, steps=25):
    model, x, y = _model_and_data()
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
def test_matches_torch_optim_step_for_step(ours, theirs):
    for a, b in zip(_run(ours), _run(theirs), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_adamw_is_not_adam_with_l2():
    adam_l2 = _run(lambda ps: optim.Adam(ps, lr=1e-2, weight_decay=0.1))
    adamw = _run(lambda ps: optim.AdamW(ps, lr=1e-2, weight_decay=0.1))
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


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda ps: optim.SGD(ps, lr=0.0), "lr"),
        (lambda ps: optim.SGD(ps, lr=-1.0), "lr"),
        (lambda ps: optim.Momentum(ps, lr=0.1, momentum=1.0), "momentum"),
        (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "betas"),
        (lambda ps: optim.AdamW(ps, weight_decay=-0.1), "weight_decay"),
    ],
)
def test_rejects_bad_hyperparameters(make, name):
    with pytest.raises(ValueError, match=name):
        make([torch.zeros(2, requires_grad=True)])

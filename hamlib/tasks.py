r"""Small training tasks to measure the estimators of :mod:`hamlib.dynamics` on (Chapter 7).

- :func:`modular_addition`, :class:`ModularMLP`, :func:`train_modular`: the table of
  :math:`(a + b) \bmod p`, learned by a one-hidden-layer network with full-batch AdamW; with weight
  decay, test accuracy jumps long after training accuracy (grokking, Power et al., 2022).
- :class:`Teacher`, :func:`train_student`: a fixed random network labels Gaussian inputs by
  sampling from its softmax, and students learn from fresh samples. The task is data-rich (no
  overfitting) and the lowest loss any student can reach is known exactly.
- :func:`digits`, :func:`digits_mlp`: scikit-learn's 8x8 digits split into 1,000 training and
  797 test images, and the 1,210-parameter tanh network whose Hessian Chapter 3 computes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hamlib import _checks as check
from hamlib.dynamics import Tracker, effective_rank

__all__ = [
    "ModularMLP",
    "Teacher",
    "digits",
    "digits_mlp",
    "modular_addition",
    "modular_split",
    "train_modular",
    "train_student",
]


def modular_addition(p: int = 97) -> tuple[Tensor, Tensor]:
    """All p^2 pairs (a, b) as a (p^2, 2) int64 tensor, and their labels (a + b) mod p."""
    p = check.integer("p", p, minimum=2)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], dim=1)
    return x, (x[:, 0] + x[:, 1]) % p


class ModularMLP(torch.nn.Module):
    """Embed both operands (one shared table of p vectors of size ``d``), concatenate, one hidden
    ReLU layer of width ``hidden``, logits over the p residues."""

    def __init__(self, p: int = 97, d: int = 32, hidden: int = 128) -> None:
        super().__init__()
        p = check.integer("p", p, minimum=2)
        d = check.integer("d", d, minimum=1)
        hidden = check.integer("hidden", hidden, minimum=1)
        self.embed = torch.nn.Embedding(p, d)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, p)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.embed(x).flatten(1))

    def weight_norm(self) -> float:
        return float(torch.cat([q.detach().flatten() for q in self.parameters()]).norm())


def modular_split(p: int = 97, train_frac: float = 0.4, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The indices (into :func:`modular_addition`'s rows) of the training and the test pairs that
    :func:`train_modular` uses for this ``p``, ``train_frac`` and ``seed``."""
    p = check.integer("p", p, minimum=2)
    check.probability("train_frac", train_frac, open_low=True, open_high=True)
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(check.seed("seed", seed)))
    n_train = int(round(train_frac * p * p))
    return perm[:n_train], perm[n_train:]


def _check_train_modular_args(
    p: Any,
    train_frac: Any,
    weight_decay: Any,
    steps: Any,
    lr: Any,
    d: Any,
    hidden: Any,
    seed: Any,
    every: Any,
    stop_at: Any,
    progress: Any,
    callback: Any = None,
) -> None:
    """Raise on bad input; the values themselves work as given (a NumPy int is an int)."""
    check.integer("p", p, minimum=2)
    check.probability("train_frac", train_frac, open_low=True, open_high=True)
    check.nonnegative("weight_decay", weight_decay)
    check.integer("steps", steps, minimum=1)
    check.positive("lr", lr)
    check.integer("d", d, minimum=1)
    check.integer("hidden", hidden, minimum=1)
    check.seed("seed", seed)
    check.integer("every", every, minimum=1)
    if stop_at is not None:
        check.probability("stop_at", stop_at)
    if progress is not None:
        check.function("progress", progress)
    if callback is not None:
        check.function("callback", callback)


def train_modular(
    p: int = 97,
    train_frac: float = 0.4,
    weight_decay: float = 1.0,
    steps: int = 3000,
    lr: float = 3e-3,
    d: int = 32,
    hidden: int = 128,
    seed: int = 0,
    every: int = 100,
    stop_at: float | None = None,
    progress: Any = None,
    callback: Callable[[int, ModularMLP], None] | None = None,
) -> Tracker:
    """Full-batch AdamW (betas 0.9, 0.98) on a random ``train_frac`` of the pairs of
    :func:`modular_addition`. Logs every ``every`` steps: train_loss, train_acc, test_acc,
    weight_norm and the effective rank of the embedding table. ``stop_at``: stop once test
    accuracy reaches it (for sweeps). ``callback(step, model)``, if given, runs at every logged
    step, before the update: the place to keep snapshots (it must not change the model).

    The training pairs are the first ``round(train_frac * p**2)`` of a permutation drawn from
    ``seed``; :func:`modular_split` returns the same split."""
    _check_train_modular_args(
        p, train_frac, weight_decay, steps, lr, d, hidden, seed, every, stop_at, progress, callback
    )
    x, y = modular_addition(p)
    train, test = modular_split(p, train_frac, seed)
    torch.manual_seed(seed)
    model = ModularMLP(p, d, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    tracker = Tracker(every)
    loop = range(steps + 1) if progress is None else progress(range(steps + 1))
    for step in loop:
        logits = model(x[train])
        loss = torch.nn.functional.cross_entropy(logits, y[train])
        if tracker.due(step):
            with torch.no_grad():
                test_acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
                tracker.log(
                    step,
                    train_loss=loss.item(),
                    train_acc=(logits.argmax(1) == y[train]).float().mean().item(),
                    test_acc=test_acc,
                    weight_norm=model.weight_norm(),
                    embed_rank=effective_rank(model.embed.weight.detach()),
                )
            if callback is not None:
                callback(step, model)
            if stop_at is not None and test_acc >= stop_at:
                break
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return tracker


class Teacher:
    r"""A fixed random two-layer tanh network that labels inputs :math:`x \sim N(0, I_{d})` by
    sampling :math:`y \sim \mathrm{softmax}(f(x) / T)`. A student trained on fresh samples never
    sees the same example twice (no overfitting), and the loss it can reach is known exactly: the
    mean conditional entropy :math:`E = \mathbb E_x H(y \mid x)` (:meth:`entropy`)."""

    def __init__(
        self,
        d_in: int = 16,
        n_classes: int = 10,
        width: int = 64,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        d_in = check.integer("d_in", d_in, minimum=2)
        n_classes = check.integer("n_classes", n_classes, minimum=2)
        width = check.integer("width", width, minimum=2)
        g = torch.Generator().manual_seed(check.seed("seed", seed))
        self.d_in, self.n_classes = d_in, n_classes
        self.temperature = check.positive("temperature", temperature)
        self.w1 = torch.randn(d_in, width, generator=g) * (2.0 / d_in) ** 0.5
        self.w2 = torch.randn(width, n_classes, generator=g) * (4.0 / width) ** 0.5

    def logits(self, x: Tensor) -> Tensor:
        x = check.tensor("x", x, dtype=self.w1.dtype, shape=(None, self.d_in))
        return torch.tanh(x @ self.w1) @ self.w2 / self.temperature

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` fresh inputs and their sampled labels (``generator``: torch's default if None)."""
        n = check.integer("n", n, minimum=1)
        generator = check.generator("generator", generator)
        x = torch.randn(n, self.d_in, generator=generator)
        y = torch.multinomial(torch.softmax(self.logits(x), 1), 1, generator=generator)
        return x, y.squeeze(1)

    def entropy(self, x: Tensor) -> float:
        """Mean over ``x`` of the entropy of the label distribution (nats): the lowest possible
        expected cross-entropy of any student."""
        logp = torch.log_softmax(self.logits(x), 1)
        return float(-(logp.exp() * logp).sum(1).mean())


def train_student(
    teacher: Teacher,
    width: int,
    steps: int = 1500,
    batch: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    callback: Callable[[int, torch.nn.Module, Tensor], None] | None = None,
) -> torch.nn.Module:
    """A two-layer tanh MLP of hidden ``width`` trained with Adam on ``steps`` fresh batches from
    ``teacher`` (cross-entropy on the sampled labels). Returns the trained student.

    ``callback(step, student, loss)``, if given, runs at every step after the backward pass and
    before the update (gradients in ``.grad``): the place to log estimators."""
    check.instance("teacher", teacher, Teacher)
    width = check.integer("width", width, minimum=1)
    steps = check.integer("steps", steps, minimum=1)
    batch = check.integer("batch", batch, minimum=1)
    lr = check.positive("lr", lr)
    seed = check.seed("seed", seed)
    if callback is not None:
        check.function("callback", callback)
    torch.manual_seed(seed)
    student = torch.nn.Sequential(
        torch.nn.Linear(teacher.d_in, width),
        torch.nn.Tanh(),
        torch.nn.Linear(width, teacher.n_classes),
    )
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    g = torch.Generator().manual_seed(10_000 + seed)
    for step in range(steps):
        x, y = teacher.sample(batch, g)
        loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if callback is not None:
            callback(step, student, loss.detach())
        opt.step()
    return student


def digits(n_train: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits (shipped with it, no download), pixels scaled to [0, 1] in
    float64, shuffled by ``seed`` and split: ``X_train, y_train, X_test, y_test``."""
    from sklearn.datasets import load_digits

    n_train = check.integer("n_train", n_train, minimum=1, maximum=1796)
    seed = check.seed("seed", seed)
    data = load_digits()
    X = torch.tensor(data.data / 16.0, dtype=torch.float64)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    return X[perm[:n_train]], y[perm[:n_train]], X[perm[n_train:]], y[perm[n_train:]]


def digits_mlp(seed: int = 0, hidden: int = 16) -> torch.nn.Sequential:
    """64 -> ``hidden`` -> 10 with tanh, in float64, initialized by ``torch.manual_seed(seed)``
    (torch's default initialization; with hidden = 16, 1,210 parameters)."""
    seed = check.seed("seed", seed)
    hidden = check.integer("hidden", hidden, minimum=1)
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)
    ).double()


def digits_classifier(x: Tensor, y: Tensor) -> Any:
    """A multinomial logistic regression (scikit-learn, L2, C = 1) fitted to digits ``x`` (rows
    of 64 pixels in [0, 1]) with labels ``y``: the judge of generated digits in Chapter 8 (its
    accuracy on the held-out digits is printed there)."""
    from sklearn.linear_model import LogisticRegression

    check.tensor("x", x, floating=True, shape=(None, 64))
    check.tensor("y", y, shape=(x.shape[0],))
    return LogisticRegression(max_iter=2000).fit(x.double().numpy(), y.numpy())

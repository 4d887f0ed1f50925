"""hamlib.dynamics: estimators recover what synthetic data was built with, and refuse bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hamlib import dynamics as D


def test_tracker_records_every_k_steps() -> None:
    tr = D.Tracker(every=10)
    for step in range(35):
        tr.log(step, loss=1.0 / (step + 1), norm=torch.tensor(float(step)))
    assert tr.steps == [0, 10, 20, 30]
    np.testing.assert_allclose(tr["norm"], [0, 10, 20, 30])
    assert tr.due(40) and not tr.due(41)
    with pytest.raises(ValueError, match="missing"):
        tr.log(40, loss=0.1)
    with pytest.raises(ValueError, match="not logged from the first"):
        tr.log(40, loss=0.1, norm=1.0, extra=2.0)
    with pytest.raises(ValueError, match="steps must increase"):
        tr.log(30, loss=0.1, norm=1.0)
    with pytest.raises(KeyError, match="never logged"):
        tr["acc"]
    with pytest.raises(ValueError, match="every must be"):
        D.Tracker(every=0)
    fig = tr.plot()
    assert len(fig.axes) == 2
    grid = tr.plot(ncols=1)
    assert [ax.get_title() for ax in grid.axes] == ["loss", "norm"]
    with pytest.raises(ValueError, match="ncols"):
        tr.plot(ncols=0)


def test_effective_rank() -> None:
    assert D.effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert D.effective_rank(torch.ones(20, 5)) == pytest.approx(1.0)
    x = np.diag([1.0, 1.0, 0.0, 0.0])
    assert D.effective_rank(x) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="2-D"):
        D.effective_rank(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        D.effective_rank(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="all zeros"):
        D.effective_rank(torch.zeros(3, 3))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12))
def test_effective_rank_bounds(n: int, d: int) -> None:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n * 13 + d))
    assert 1.0 - 1e-9 <= D.effective_rank(x) <= min(n, d) + 1e-9


def test_sigmoid_fit_recovers_a_transition() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0, 5000, 25.0)
    v = 0.05 + 0.9 / (1 + np.exp(-(t - 3100) / 120)) + rng.normal(0, 0.02, t.size)
    fit = D.fit_sigmoid_transition(t, v)
    assert abs(fit["midpoint"] - 3100) < 3 * fit["midpoint_se"] + 20
    assert fit["width"] == pytest.approx(120, rel=0.2)
    assert fit["low"] == pytest.approx(0.05, abs=0.02) and fit["high"] == pytest.approx(
        0.95, abs=0.02
    )
    logfit = D.fit_sigmoid_transition(t[1:], v[1:], log_steps=True)
    assert logfit["midpoint"] == pytest.approx(3100, rel=0.05)


def test_sigmoid_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        D.fit_sigmoid_transition([1, 2, 3], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        D.fit_sigmoid_transition(range(6), [0, 0, math.nan, 1, 1, 1])
    with pytest.raises(ValueError, match="constant"):
        D.fit_sigmoid_transition(range(6), [1] * 6)
    with pytest.raises(ValueError, match="differ in length"):
        D.fit_sigmoid_transition(range(6), range(7))
    with pytest.raises(ValueError, match="positive steps"):
        D.fit_sigmoid_transition(range(6), range(6), log_steps=True)


def test_change_points_finds_level_shifts() -> None:
    rng = np.random.default_rng(1)
    y = np.concatenate([np.zeros(60), 3 * np.ones(40), np.ones(50)]) + rng.normal(0, 0.3, 150)
    assert D.change_points(y, 2) == [60, 100]
    assert D.change_points(torch.tensor([0.0, 0, 0, 5, 5]), 1) == [3]
    with pytest.raises(ValueError, match="n_breaks must be"):
        D.change_points([1.0, 2.0], 2)
    with pytest.raises(ValueError, match="NaN"):
        D.change_points([1.0, math.inf, 2.0], 1)


def test_change_points_is_optimal_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=12)

    def sse(seg: np.ndarray) -> float:
        return float(((seg - seg.mean()) ** 2).sum())

    best = min(
        ((i, j) for i in range(1, 12) for j in range(i + 1, 12)),
        key=lambda b: sse(y[: b[0]]) + sse(y[b[0] : b[1]]) + sse(y[b[1] :]),
    )
    assert D.change_points(y, 2) == list(best)


def test_power_law_fit_recovers_parameters() -> None:
    n = np.logspace(4, 9, 12)
    rng = np.random.default_rng(3)
    y = (1.7 + 400 * n**-0.34) * np.exp(rng.normal(0, 0.005, n.size))
    fit = D.fit_power_law(n, y)
    assert fit["alpha"] == pytest.approx(0.34, abs=4 * fit["alpha_se"] + 0.02)
    assert fit["E"] == pytest.approx(1.7, abs=4 * fit["E_se"] + 0.05)
    pure = D.fit_power_law(n, 5 * n**-0.5, fit_offset=False)
    assert pure["alpha"] == pytest.approx(0.5) and pure["A"] == pytest.approx(5)


def test_power_law_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        D.fit_power_law([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="positive"):
        D.fit_power_law([1, 2, 3, -4], [3, 2, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        D.fit_power_law([1, 2, 3, 4], [3, 2, math.nan, 1])


def test_modular_addition_data() -> None:
    x, y = D.modular_addition(7)
    assert x.shape == (49, 2) and torch.equal(y, (x[:, 0] + x[:, 1]) % 7)
    with pytest.raises(ValueError, match="p must be"):
        D.modular_addition(1)


def test_train_modular_memorizes_and_logs() -> None:
    tr = D.train_modular(p=23, train_frac=0.5, steps=300, every=50, seed=0)
    assert tr.steps == [0, 50, 100, 150, 200, 250, 300]
    assert tr["train_acc"][-1] == 1.0 and tr["train_acc"][0] < 0.2
    assert set(tr.values) == {"train_loss", "train_acc", "test_acc", "weight_norm", "embed_rank"}
    early = D.train_modular(p=23, train_frac=0.5, steps=300, every=50, stop_at=0.0)
    assert early.steps == [0]
    with pytest.raises(ValueError, match="train_frac"):
        D.train_modular(train_frac=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        D.train_modular(weight_decay=-1.0)


def test_teacher_entropy_is_the_loss_of_the_teacher_itself() -> None:
    teacher = D.Teacher(d_in=8, n_classes=5, width=16, temperature=1.0, seed=0)
    x, y = teacher.sample(200_000, torch.Generator().manual_seed(1))
    assert x.shape == (200_000, 8) and y.shape == (200_000,) and int(y.max()) < 5
    # cross-entropy of the teacher's own probabilities on its sampled labels -> its entropy
    ce = torch.nn.functional.cross_entropy(teacher.logits(x), y).item()
    assert ce == pytest.approx(teacher.entropy(x), abs=0.01)
    assert 0 < teacher.entropy(x) < math.log(5)
    hot = D.Teacher(d_in=8, n_classes=5, width=16, temperature=100.0, seed=0)
    assert hot.entropy(x[:1000]) == pytest.approx(math.log(5), abs=0.01)
    with pytest.raises(ValueError, match="temperature"):
        D.Teacher(temperature=0.0)
    with pytest.raises(ValueError, match="n_classes"):
        D.Teacher(n_classes=1)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        teacher.logits(torch.ones(3, 7))
    with pytest.raises(ValueError, match="n must be"):
        teacher.sample(0)


def test_wider_students_get_closer_to_the_teacher() -> None:
    teacher = D.Teacher(d_in=8, n_classes=5, width=32, seed=0)
    x, y = teacher.sample(4000, torch.Generator().manual_seed(2))
    losses = {}
    for w in (1, 32):
        student = D.train_student(teacher, w, steps=400, batch=128)
        with torch.no_grad():
            losses[w] = torch.nn.functional.cross_entropy(student(x), y).item()
    assert teacher.entropy(x) < losses[32] < losses[1]
    with pytest.raises(TypeError, match="Teacher"):
        D.train_student("teacher", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        D.train_student(teacher, 0)


def test_compute_optimal_minimizes_the_loss_at_fixed_compute() -> None:
    c = 5.76e23  # Chinchilla's budget
    n_opt, d_opt = D.compute_optimal(c)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    ns = n_opt * np.logspace(-0.5, 0.5, 201)
    losses = D.chinchilla_loss(ns, c / (6 * ns))
    assert ns[np.argmin(losses)] == pytest.approx(n_opt, rel=0.02)
    # N_opt grows as C^(beta / (alpha + beta))
    n2, _ = D.compute_optimal(100 * c)
    assert math.log(n2 / n_opt, 100) == pytest.approx(0.28 / 0.62)
    with pytest.raises(ValueError, match="flops"):
        D.compute_optimal(0.0)
    with pytest.raises(ValueError, match="missing"):
        D.compute_optimal(1e20, {"E": 1.0})
    with pytest.raises(ValueError, match="positive"):
        D.chinchilla_loss([1.0, -1.0], [1.0, 1.0])


def _chinchilla_grid(rng: np.random.Generator, sigma: float) -> tuple[np.ndarray, ...]:
    n = np.repeat(np.logspace(7.5, 10.5, 10), 6)
    d = n * np.tile(np.logspace(0, 2.5, 6), 10)
    loss = D.chinchilla_loss(n, d) * np.exp(rng.normal(0, sigma, n.size))
    return n, d, loss


def test_fit_chinchilla_recovers_the_parameters_it_was_given() -> None:
    n, d, loss = _chinchilla_grid(np.random.default_rng(0), 0.0)
    fit = D.fit_chinchilla(n, d, loss)
    assert fit["converged"]
    for key, value in D.CHINCHILLA.items():
        assert fit[key] == pytest.approx(value, rel=1e-3), key
    noisy = D.fit_chinchilla(*_chinchilla_grid(np.random.default_rng(1), 0.01))
    assert noisy["alpha"] == pytest.approx(0.34, abs=0.1)
    assert noisy["beta"] == pytest.approx(0.28, abs=0.1)


def test_fit_chinchilla_rejects_bad_input() -> None:
    n, d, loss = _chinchilla_grid(np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        D.fit_chinchilla(n, d[:-1], loss)
    with pytest.raises(ValueError, match="NaN"):
        D.fit_chinchilla(n, d, np.where(np.arange(n.size) == 3, np.nan, loss))
    with pytest.raises(ValueError, match="positive"):
        D.fit_chinchilla(-n, d, loss)
    with pytest.raises(ValueError, match="delta"):
        D.fit_chinchilla(n, d, loss, delta=0.0)
    with pytest.raises(ValueError, match="n_starts"):
        D.fit_chinchilla(n, d, loss, n_starts=0)
    with pytest.raises(ValueError, match="at least 5"):
        D.fit_chinchilla(n[:3], d[:3], loss[:3])


def test_train_student_callback_sees_every_step_with_gradients() -> None:
    teacher = D.Teacher(d_in=4, n_classes=3, width=8, seed=0)
    seen: list[tuple[int, float, bool]] = []

    def callback(step: int, student: torch.nn.Module, loss: torch.Tensor) -> None:
        has_grad = all(p.grad is not None for p in student.parameters())
        seen.append((step, float(loss), has_grad))

    D.train_student(teacher, 4, steps=5, batch=8, callback=callback)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4] and all(g for _, _, g in seen)

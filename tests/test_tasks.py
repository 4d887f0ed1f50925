"""hamlib.tasks: the grokking task and the teacher-student task do what Chapter 7 relies on, and
refuse bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hamlib import tasks


def test_modular_addition_data() -> None:
    x, y = tasks.modular_addition(7)
    assert x.shape == (49, 2) and torch.equal(y, (x[:, 0] + x[:, 1]) % 7)
    assert torch.equal(tasks.modular_addition(np.int64(7))[1], y)
    with pytest.raises(ValueError, match="p must be >= 2"):
        tasks.modular_addition(1)
    with pytest.raises(TypeError, match="p must be an int"):
        tasks.modular_addition(True)


def test_modular_mlp_shapes_and_checks() -> None:
    model = tasks.ModularMLP(p=np.int64(5), d=3, hidden=4)
    x, _ = tasks.modular_addition(5)
    assert model(x).shape == (25, 5) and model.weight_norm() > 0
    with pytest.raises(ValueError, match="d must be >= 1"):
        tasks.ModularMLP(p=5, d=0)
    with pytest.raises(TypeError, match="hidden must be an int"):
        tasks.ModularMLP(p=5, hidden=8.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p must be >= 2"):
        tasks.ModularMLP(p=1)


def test_train_modular_memorizes_and_logs() -> None:
    tr = tasks.train_modular(p=23, train_frac=0.5, steps=300, every=50, seed=0)
    assert tr.steps == [0, 50, 100, 150, 200, 250, 300]
    assert tr["train_acc"][-1] == 1.0 and tr["train_acc"][0] < 0.2
    assert set(tr.values) == {"train_loss", "train_acc", "test_acc", "weight_norm", "embed_rank"}
    early = tasks.train_modular(p=23, train_frac=0.5, steps=300, every=50, stop_at=0.0)
    assert early.steps == [0]
    # NumPy sizes give the same run
    same = tasks.train_modular(p=np.int64(23), train_frac=0.5, steps=np.int64(300), every=50)
    np.testing.assert_array_equal(same["train_loss"], tr["train_loss"])


def test_train_modular_callback_sees_the_logged_model_and_the_split_is_modular_split() -> None:
    """The callback runs at each logged step with the model as logged; modular_split returns the
    pairs train_modular trains on (the train accuracy recomputed from them matches the log)."""
    seen: dict[int, float] = {}
    x, y = tasks.modular_addition(11)
    train, test = tasks.modular_split(11, 0.5, seed=3)
    assert len(train) == round(0.5 * 121) and len(set(train.tolist()) | set(test.tolist())) == 121

    def keep(step: int, model: tasks.ModularMLP) -> None:
        with torch.no_grad():
            seen[step] = (model(x[train]).argmax(1) == y[train]).float().mean().item()

    tr = tasks.train_modular(p=11, train_frac=0.5, steps=60, every=20, seed=3, callback=keep)
    assert sorted(seen) == tr.steps == [0, 20, 40, 60]
    np.testing.assert_allclose([seen[s] for s in tr.steps], tr["train_acc"])
    plain = tasks.train_modular(p=11, train_frac=0.5, steps=60, every=20, seed=3)
    np.testing.assert_array_equal(plain["train_loss"], tr["train_loss"])  # callback changes nothing
    with pytest.raises(ValueError, match="train_frac must be in"):
        tasks.modular_split(11, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_frac": 1.0}, ValueError, "train_frac must be in"),
        ({"train_frac": "half"}, TypeError, "train_frac must be a real number"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay must be >= 0"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": True}, TypeError, "steps must be an int"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"d": 0}, ValueError, "d must be >= 1"),
        ({"hidden": 2.5}, TypeError, "hidden must be an int"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"every": 0}, ValueError, "every must be >= 1"),
        ({"stop_at": 1.5}, ValueError, "stop_at must be in"),
        ({"progress": "tqdm"}, TypeError, "progress must be callable"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"p": 1}, ValueError, "p must be >= 2"),
    ],
)
def test_train_modular_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    state = torch.random.get_rng_state()
    with pytest.raises(error, match=match):
        tasks.train_modular(**kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # refused before seeding anything


def test_teacher_entropy_is_the_loss_of_the_teacher_itself() -> None:
    teacher = tasks.Teacher(d_in=8, n_classes=5, width=16, temperature=1.0, seed=0)
    x, y = teacher.sample(200_000, torch.Generator().manual_seed(1))
    assert x.shape == (200_000, 8) and y.shape == (200_000,) and int(y.max()) < 5
    # cross-entropy of the teacher's own probabilities on its sampled labels -> its entropy
    ce = torch.nn.functional.cross_entropy(teacher.logits(x), y).item()
    assert ce == pytest.approx(teacher.entropy(x), abs=0.01)
    assert 0 < teacher.entropy(x) < math.log(5)
    hot = tasks.Teacher(d_in=8, n_classes=5, width=16, temperature=100.0, seed=0)
    assert hot.entropy(x[:1000]) == pytest.approx(math.log(5), abs=0.01)


def test_teacher_sample_without_a_generator_uses_torchs_default() -> None:
    teacher = tasks.Teacher(d_in=4, n_classes=3, width=8, seed=0)
    torch.manual_seed(5)
    x1, y1 = teacher.sample(np.int64(10))
    torch.manual_seed(5)
    x2, y2 = teacher.sample(10, torch.default_generator)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_teacher_rejects_bad_input() -> None:
    teacher = tasks.Teacher(d_in=8, n_classes=5, width=16, seed=0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tasks.Teacher(temperature=0.0)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        tasks.Teacher(n_classes=1)
    with pytest.raises(TypeError, match="d_in must be an int"):
        tasks.Teacher(d_in=True)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        tasks.Teacher(seed=-1)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 8\)"):
        teacher.logits(torch.ones(3, 7))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        teacher.logits(np.ones((3, 8)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x must have dtype float32"):
        teacher.logits(torch.ones(3, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="n must be >= 1"):
        teacher.sample(0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        teacher.sample(3, 0)  # type: ignore[arg-type]


def test_wider_students_get_closer_to_the_teacher() -> None:
    teacher = tasks.Teacher(d_in=8, n_classes=5, width=32, seed=0)
    x, y = teacher.sample(4000, torch.Generator().manual_seed(2))
    losses = {}
    for w in (1, 32):
        student = tasks.train_student(teacher, w, steps=400, batch=128)
        with torch.no_grad():
            losses[w] = torch.nn.functional.cross_entropy(student(x), y).item()
    assert teacher.entropy(x) < losses[32] < losses[1]


def test_train_student_rejects_bad_input() -> None:
    teacher = tasks.Teacher(d_in=4, n_classes=3, width=8, seed=0)
    with pytest.raises(TypeError, match="teacher must be a Teacher"):
        tasks.train_student("teacher", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width must be >= 1"):
        tasks.train_student(teacher, 0)
    with pytest.raises(TypeError, match="steps must be an int"):
        tasks.train_student(teacher, 4, steps=10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch must be >= 1"):
        tasks.train_student(teacher, 4, batch=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        tasks.train_student(teacher, 4, lr=-1.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        tasks.train_student(teacher, 4, seed=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callback must be callable"):
        tasks.train_student(teacher, 4, callback=1)  # type: ignore[arg-type]


def test_train_student_callback_sees_every_step_with_gradients() -> None:
    teacher = tasks.Teacher(d_in=4, n_classes=3, width=8, seed=0)
    seen: list[tuple[int, float, bool]] = []

    def callback(step: int, student: torch.nn.Module, loss: torch.Tensor) -> None:
        has_grad = all(p.grad is not None for p in student.parameters())
        seen.append((step, float(loss), has_grad))

    tasks.train_student(teacher, 4, steps=5, batch=8, callback=callback)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4] and all(g for _, _, g in seen)


def test_digits_split_and_network():
    X_train, y_train, X_test, y_test = tasks.digits(n_train=1000)
    assert X_train.shape == (1000, 64) and X_test.shape == (797, 64)
    assert X_train.dtype == torch.float64 and 0 <= X_train.min() and X_train.max() <= 1
    assert sorted(set(y_train.tolist())) == list(range(10))
    again = tasks.digits(n_train=1000)
    assert torch.equal(again[0], X_train)  # the seed fixes the split
    assert not torch.equal(tasks.digits(n_train=1000, seed=1)[0], X_train)
    net = tasks.digits_mlp(0)
    assert sum(p.numel() for p in net.parameters()) == 1210
    assert net(X_train).shape == (1000, 10)
    first = next(tasks.digits_mlp(0).parameters())
    assert torch.equal(first, next(net.parameters()))
    with pytest.raises(ValueError, match="^n_train must"):
        tasks.digits(n_train=0)
    with pytest.raises(ValueError, match="^hidden must"):
        tasks.digits_mlp(hidden=0)

import random

import numpy as np
import pytest
import torch

import hamlib
from hamlib import geometry
from hamlib.repro import ClaimFailed, Source


def test_setup_seeds_every_generator_identically():
    draws = []
    for _ in range(2):
        hamlib.setup(seed=123)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    hamlib.setup(seed=124)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != draws[0]


def test_setup_pins_threads():
    from threadpoolctl import threadpool_info

    hamlib.setup(threads=1)
    assert torch.get_num_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    hamlib.setup()
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"threads": 0}, "threads"),
        ({"threads": True}, "threads"),
        ({"precision": 0}, "precision"),
    ],
)
def test_setup_rejects_bad_arguments_by_name(kwargs, name):
    with pytest.raises(TypeError, match=name):
        hamlib.setup(**kwargs)


def test_check_prints_and_records(capsys):
    hamlib.setup()
    hamlib.check("one is one", 1 == 1)
    hamlib.check("numpy bools count", np.float64(2.0) > 1)
    hamlib.check("a boolean tensor counts", torch.tensor(True))
    assert capsys.readouterr().out.splitlines() == [
        "✓ one is one",
        "✓ numpy bools count",
        "✓ a boolean tensor counts",
    ]
    assert hamlib.claims() == ["one is one", "numpy bools count", "a boolean tensor counts"]
    hamlib.summary()
    out = capsys.readouterr().out
    assert "verified 3 claims" in out and "  3. a boolean tensor counts" in out
    hamlib.setup()
    assert hamlib.claims() == []


def test_check_raises_naming_the_claim():
    hamlib.setup()
    with pytest.raises(ClaimFailed, match="two is three"):
        hamlib.check("two is three", 2 == 3)
    assert hamlib.claims() == []
    assert issubclass(ClaimFailed, AssertionError)


@pytest.mark.parametrize(
    "ok",
    [1, 0.0, "yes", None, np.array([True, True]), torch.tensor([True, False]), torch.tensor(1.0)],
)
def test_check_refuses_what_is_not_one_boolean(ok):
    with pytest.raises(TypeError, match="ok must be"):
        hamlib.check("ambiguous", ok)


def test_check_refuses_an_empty_claim():
    with pytest.raises(TypeError, match="claim"):
        hamlib.check("  ", True)


def test_show_source_is_the_code_that_runs():
    src = hamlib.show_source(geometry.shell_fraction)
    assert isinstance(src, Source)
    assert src.name == "hamlib.geometry.shell_fraction"
    assert repr(src).startswith("def shell_fraction(d: int, eps: float) -> float:")
    assert "-math.expm1(d * math.log1p(-eps))" in repr(src)
    assert src._repr_markdown_().startswith("```python\ndef shell_fraction")
    assert src._repr_markdown_().endswith("\n```")


@pytest.mark.parametrize("obj", [np.sum, len, random.random, 3])
def test_show_source_refuses_other_objects(obj):
    with pytest.raises(TypeError, match="obj"):
        hamlib.show_source(obj)


def test_subject_modules_load_on_demand():
    assert hamlib.geometry is geometry
    with pytest.raises(AttributeError, match="nonexistent"):
        _ = hamlib.nonexistent


def test_progress_is_off_under_tqdm_disable(monkeypatch, capsys):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = hamlib.progress(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_progress_is_on_by_default(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert list(hamlib.progress(range(3), desc="loop")) == [0, 1, 2]
    assert "loop" in capsys.readouterr().err

import math
import random
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hamlib
from hamlib import geometry
from hamlib.repro import ClaimFailed, Source


def test_setup_seeds_every_generator_identically():
    draws = []
    for _ in range(2):
        hamlib.setup(seed=123)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]
    hamlib.setup(seed=np.int64(123))  # a seed computed with NumPy is a seed
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws[0]
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
    "kwargs, exc, name",
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**32}, ValueError, "seed"),  # beyond what NumPy's global generator takes
        ({"seed": 1.5}, TypeError, "seed"),
        ({"seed": True}, TypeError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"threads": 0}, ValueError, "threads"),
        ({"threads": True}, TypeError, "threads"),
        ({"threads": 2.0}, TypeError, "threads"),
        ({"precision": 0}, ValueError, "precision"),
        ({"precision": 17}, ValueError, "precision"),
        ({"precision": None}, TypeError, "precision"),
    ],
)
def test_setup_rejects_bad_arguments_by_name(kwargs, exc, name):
    threads = torch.get_num_threads()
    with pytest.raises(exc, match=rf"^{name} must"):
        hamlib.setup(**kwargs)
    assert torch.get_num_threads() == threads  # refused before anything was changed


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


def test_a_quantitative_claim_prints_its_margin(capsys):
    hamlib.setup()
    hamlib.check("the step is stable", measured=0.6, below=2 / 0.003)
    hamlib.check("the loss clears 2", measured=torch.tensor(2.5), above=2)
    hamlib.check("the 2-D value", measured=0.14658, target=0.1465, tol=0.005, spec=".4f")
    assert capsys.readouterr().out.splitlines() == [
        "✓ the step is stable: measured 0.6, held to < 667",
        "✓ the loss clears 2: measured 2.5, held to > 2",
        "✓ the 2-D value: measured 0.1466, held to 0.1465 ± 0.0050",
    ]
    assert hamlib.claims()[0] == "the step is stable: measured 0.6, held to < 667"


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"measured": 3.0, "below": 2.0}, "measured 3, held to < 2"),
        ({"measured": 1.0, "above": 1.0}, "measured 1, held to > 1"),  # the bound is strict
        ({"measured": 0.2, "target": 0.0, "tol": 0.1}, "measured 0.2, held to 0 ± 0.1"),
        ({"measured": math.nan, "below": 1.0}, "measured nan"),  # NaN meets no bound
        ({"measured": math.inf, "below": 1e300}, "measured inf"),
    ],
)
def test_a_quantitative_claim_that_misses_fails_showing_by_how_much(kwargs, shown):
    with pytest.raises(ClaimFailed, match=re.escape(shown)):
        hamlib.check("x", **kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"measured": 1.0}, TypeError, "one bound"),
        ({"measured": 1.0, "below": 2, "above": 0}, TypeError, "one bound"),
        ({"measured": 1.0, "target": 1.0}, TypeError, "one bound"),
        ({"ok": True, "measured": 1.0, "below": 2}, TypeError, "not ok"),
        ({"ok": True, "below": 2}, TypeError, "go with measured"),
        ({"measured": True, "below": 2}, TypeError, "measured must be a real number"),
        ({"measured": torch.ones(2), "below": 2}, TypeError, "measured must be one real number"),
        ({"measured": 1.0, "target": 1.0, "tol": -1}, ValueError, "tol must be >= 0"),
        # the review's case: x < inf passes whatever x is (NaN aside), so it is refused
        ({"measured": 1.0, "below": math.inf}, ValueError, "below must be finite"),
        ({"measured": 1.0, "target": 0.0, "tol": math.inf}, ValueError, "tol must be finite"),
    ],
)
def test_a_quantitative_claim_refuses_a_bound_that_cannot_fail(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        hamlib.check("x", **kwargs)


def test_a_machine_dependent_measurement_is_masked_and_its_bound_compared(capsys):
    hamlib.check("loss below 2.2", measured=2.0631, below=2.2, machine_dependent=True)
    line = capsys.readouterr().out.strip()
    assert line == "✓ loss below 2.2: measured ≈2.06, held to < 2.2"
    assert (
        _sanitize(line) == "✓ loss below 2.2: measured≈NUMBER, held to < 2.2"
    )  # the mask eats the space


def test_check_refuses_an_empty_claim():
    with pytest.raises(ValueError, match="^claim must be a non-empty string"):
        hamlib.check("  ", True)
    with pytest.raises(TypeError, match="^claim must be a non-empty string"):
        hamlib.check(None, True)


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


# ----------------------------------------------------------------------------- approx + nbval
def _sanitize(text: str) -> str:
    """What nbval does to an output before comparing it, with the book's sanitizer file."""
    from tools.notebooks import sanitized

    return sanitized(text)


@pytest.mark.parametrize(
    "value, spec, text",
    [
        (13.98, "11.2f", "     ≈13.98"),
        (2.986, ".3f", "≈2.986"),
        (450, "d", "≈450"),
        (np.float64(0.475), "+.3f", "≈+0.475"),
        (1.2e-5, ".1e", "≈1.2e-05"),
        (20480, ",d", "≈20,480"),
        (-3.5, "6.1%", "≈-350.0%"),
    ],
)
def test_approx_marks_the_number_and_keeps_the_column_width(value, spec, text):
    assert hamlib.approx(value, spec) == text
    if format(value, spec).startswith(" "):
        assert len(text) == len(format(value, spec))


@settings(max_examples=300, deadline=None)  # the first example imports tools.notebooks
@given(
    a=st.floats(-1e6, 1e6, allow_nan=False),
    b=st.floats(-1e6, 1e6, allow_nan=False),
    spec=st.sampled_from(["11.3f", ".4f", "+.3f", ".2e", "8.3g", ".1%", ",.0f"]),
)
def test_nbval_masks_exactly_the_approx_numbers(a, b, spec):
    """Two runs that print different machine-dependent values in the same table row compare
    equal; the same values printed without the mark do not (unless they print the same)."""
    row = "{}   loss{}  steps 1,000\n"
    left = row.format(hamlib.approx(a, spec), hamlib.approx(b, spec))
    right = row.format(hamlib.approx(b, spec), hamlib.approx(a, spec))
    assert _sanitize(left) == _sanitize(right)
    assert "steps 1,000" in _sanitize(left)  # an unmarked number is still compared
    plain_l, plain_r = (
        row.format(format(a, spec), format(b, spec)),
        row.format(format(b, spec), format(a, spec)),
    )
    assert (_sanitize(plain_l) == _sanitize(plain_r)) == (plain_l == plain_r)


def test_nbval_still_compares_a_tilde_and_unmarked_numbers():
    for text in ["~1e-10 at d=1e6", "predicted ~ 0.226", "loss 2.986", "1.6x faster"]:
        assert _sanitize(text) == text


@pytest.mark.parametrize(
    "text, masked",
    [
        ("  ≈20,480 bytes", "≈NUMBER bytes"),
        ("≈1.5E+03 s", "≈NUMBER s"),
        ("≈.5, 7", "≈NUMBER, 7"),
        ("≈450, 475", "≈NUMBER, 475"),  # only the marked number
        ("≈12,34", "≈NUMBER,34"),  # not a thousands group: the rest is compared
        ("≈0.0678%", "≈NUMBER%"),
    ],
)
def test_the_mask_takes_one_number_and_nothing_after_it(text, masked):
    assert _sanitize(text) == masked


@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((True,), TypeError, "value"),
        (("2.9",), TypeError, "value"),
        ((2.9, 3), TypeError, "spec"),
        ((2.9, "q"), ValueError, "spec"),
    ],
)
def test_approx_refuses_bad_input_by_name(args, exc, name):
    with pytest.raises(exc, match=name):
        hamlib.approx(*args)


@pytest.mark.parametrize(
    "value, bound, text",
    [
        (1.1e-15, 1e-14, "< 1e-14"),
        (1.6e-15, 1e-14, "< 1e-14"),  # two machines' residuals print the same
        (0.0, 1e-12, "< 1e-12"),
        (-3e-17, 2.5e-16, "< 2.5e-16"),
        (3e-8, 1e-6, "< 1e-6"),
        (2e-14, 1e-14, "2.0e-14 (not below 1e-14)"),  # over the bound: digits, so nbval fails
        (float("nan"), 1e-14, "nan (not below 1e-14)"),
    ],
)
def test_below_prints_the_bound_a_residual_meets(value, bound, text):
    assert hamlib.below(value, bound) == text


@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((True, 1e-3), TypeError, "value"),
        (("1e-9", 1e-3), TypeError, "value"),
        ((1e-9, "1e-3"), TypeError, "bound"),
        ((1e-9, True), TypeError, "bound"),
        ((1e-9, -1e-3), ValueError, "bound"),
        ((0.0, 0.0), ValueError, "bound"),
        ((0.0, float("inf")), ValueError, "bound"),  # "< inf" could never fail
        ((0.0, float("nan")), ValueError, "bound"),
    ],
)
def test_below_refuses_bad_input_by_name(args, exc, name):
    with pytest.raises(exc, match=name):
        hamlib.below(*args)

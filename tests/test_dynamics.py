"""hamlib.dynamics: estimators recover what synthetic data was built with, and refuse bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import check_grad

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
    fig = tr.plot()
    assert len(fig.axes) == 2
    grid = tr.plot(ncols=1)
    assert [ax.get_title() for ax in grid.axes] == ["loss", "norm"]


def test_tracker_records_nan_and_accepts_numpy_steps() -> None:
    tr = D.Tracker(every=np.int64(2))
    tr.log(np.int64(0), loss=math.nan)
    tr.log(2, loss=torch.tensor(1.0))
    assert tr.steps == [0, 2] and math.isnan(tr["loss"][0]) and tr["loss"][1] == 1.0


def test_tracker_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="every must be >= 1"):
        D.Tracker(every=0)
    with pytest.raises(TypeError, match="every must be an int"):
        D.Tracker(every=True)
    with pytest.raises(TypeError, match="every must be an int"):
        D.Tracker(every=2.0)
    tr = D.Tracker()
    with pytest.raises(TypeError, match="step must be an int"):
        tr.log(1.5, loss=1.0)
    with pytest.raises(TypeError, match="step must be an int"):
        tr.due("3")
    with pytest.raises(ValueError, match="nothing to plot"):
        tr.plot()
    tr.log(0, loss=1.0)
    with pytest.raises(ValueError, match="ncols must be >= 1"):
        tr.plot(ncols=0)
    with pytest.raises(TypeError, match="ncols must be an int"):
        tr.plot(ncols=True)
    with pytest.raises(TypeError, match="logx must be True or False"):
        tr.plot(logx=1)


def test_effective_rank() -> None:
    assert D.effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert D.effective_rank(torch.ones(20, 5)) == pytest.approx(1.0)
    x = np.diag([1.0, 1.0, 0.0, 0.0])
    assert D.effective_rank(x) == pytest.approx(2.0)
    assert D.effective_rank(torch.eye(3, requires_grad=True)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="features must be 2-D"):
        D.effective_rank(torch.ones(3))
    with pytest.raises(ValueError, match="features must contain only finite values"):
        D.effective_rank(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="all zeros"):
        D.effective_rank(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="features needs at least 1 rows"):
        D.effective_rank(np.ones((0, 3)))
    with pytest.raises(TypeError, match="features must be an array of numbers"):
        D.effective_rank("features")  # type: ignore[arg-type]


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
    assert isinstance(fit, D.SigmoidFit)
    assert abs(fit.midpoint - 3100) < 3 * fit.midpoint_se + 20
    assert fit.width == pytest.approx(120, rel=0.2)
    assert fit.low == pytest.approx(0.05, abs=0.02) and fit.high == pytest.approx(0.95, abs=0.02)
    logfit = D.fit_sigmoid_transition(t[1:], v[1:], log_steps=True)
    assert logfit.midpoint == pytest.approx(3100, rel=0.05)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.midpoint = 0.0  # type: ignore[misc]


def test_sigmoid_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="steps needs at least 5"):
        D.fit_sigmoid_transition([1, 2, 3], [0, 1, 1])
    with pytest.raises(ValueError, match="values must contain only finite"):
        D.fit_sigmoid_transition(range(6), [0, 0, math.nan, 1, 1, 1])
    with pytest.raises(ValueError, match="constant"):
        D.fit_sigmoid_transition(range(6), [1] * 6)
    with pytest.raises(ValueError, match="steps and values differ in length: 6, 7"):
        D.fit_sigmoid_transition(range(6), range(7))
    with pytest.raises(ValueError, match="positive steps"):
        D.fit_sigmoid_transition(range(6), range(6), log_steps=True)
    with pytest.raises(TypeError, match="log_steps must be True or False"):
        D.fit_sigmoid_transition(range(1, 7), range(6), log_steps=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="values must be an array of numbers"):
        D.fit_sigmoid_transition(range(6), "abcdef")  # type: ignore[arg-type]


def test_change_points_finds_level_shifts() -> None:
    rng = np.random.default_rng(1)
    y = np.concatenate([np.zeros(60), 3 * np.ones(40), np.ones(50)]) + rng.normal(0, 0.3, 150)
    assert D.change_points(y, 2) == [60, 100]
    assert D.change_points(y, np.int64(2)) == [60, 100]
    assert D.change_points(torch.tensor([0.0, 0, 0, 5, 5]), 1) == [3]


def test_change_points_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"n_breaks must be <= 1"):
        D.change_points([1.0, 2.0], 2)
    with pytest.raises(ValueError, match=r"n_breaks must be >= 1"):
        D.change_points([1.0, 2.0, 3.0], 0)
    with pytest.raises(TypeError, match="n_breaks must be an int"):
        D.change_points([1.0, 2.0, 3.0], True)
    with pytest.raises(TypeError, match="n_breaks must be an int"):
        D.change_points([1.0, 2.0, 3.0], 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="signal must contain only finite"):
        D.change_points([1.0, math.inf, 2.0], 1)
    with pytest.raises(ValueError, match="signal needs at least 2"):
        D.change_points([1.0], 1)
    with pytest.raises(ValueError, match="signal must be 1-D"):
        D.change_points(np.ones((3, 3)), 1)


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
    assert isinstance(fit, D.PowerLawFit)
    assert fit.alpha == pytest.approx(0.34, abs=4 * fit.alpha_se + 0.02)
    assert fit.E == pytest.approx(1.7, abs=4 * fit.E_se + 0.05)
    pure = D.fit_power_law(n, 5 * n**-0.5, fit_offset=False)
    assert pure.alpha == pytest.approx(0.5) and pure.A == pytest.approx(5)
    assert pure.E == 0.0 and pure.E_se == 0.0
    assert all(type(v) is float for v in dataclasses.astuple(pure))


def test_power_law_standard_errors_without_offset_match_ordinary_least_squares() -> None:
    # the fixed-offset branch computes its standard errors by hand: check them against
    # statsmodels-free OLS algebra, sigma^2 (X^T X)^-1, on noisy data
    rng = np.random.default_rng(4)
    x = np.logspace(1, 4, 9)
    y = 3 * x**-0.4 * np.exp(rng.normal(0, 0.05, x.size))
    fit = D.fit_power_law(x, y, fit_offset=False)
    design = np.stack([np.ones_like(x), np.log(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.log(y), rcond=None)
    resid = np.log(y) - design @ coef
    cov = resid @ resid / (x.size - 2) * np.linalg.inv(design.T @ design)
    assert fit.alpha == pytest.approx(-coef[1], rel=1e-12)
    assert fit.alpha_se == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-10)
    assert fit.A_se == pytest.approx(fit.A * math.sqrt(cov[0, 0]), rel=1e-10)


def test_power_law_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="x needs at least 4"):
        D.fit_power_law([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="x must be positive"):
        D.fit_power_law([1, 2, 3, -4], [3, 2, 1, 1])
    with pytest.raises(ValueError, match="y must contain only finite"):
        D.fit_power_law([1, 2, 3, 4], [3, 2, math.nan, 1])
    with pytest.raises(ValueError, match="x and y differ in length: 5, 4"):
        D.fit_power_law([1, 2, 3, 4, 5], [3, 2, 1, 1])
    with pytest.raises(TypeError, match="fit_offset must be True or False"):
        D.fit_power_law([1, 2, 3, 4], [3, 2, 1, 1], fit_offset=0)  # type: ignore[arg-type]


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
    assert D.compute_optimal(np.int64(10**18)) == D.compute_optimal(1e18)
    assert D.chinchilla_loss(1e9, 2e10) == pytest.approx(
        1.69 + 406.4 * 1e9**-0.34 + 410.7 * 2e10**-0.28
    )
    assert D.chinchilla_loss(np.ones((2, 3)), np.ones(3)).shape == (2, 3)


def test_chinchilla_law_is_immutable_and_checked() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        D.CHINCHILLA.E = 2.0  # type: ignore[misc]
    assert dataclasses.asdict(D.CHINCHILLA) == {
        "E": 1.69,
        "A": 406.4,
        "B": 410.7,
        "alpha": 0.34,
        "beta": 0.28,
    }
    law = D.ChinchillaLaw(E=np.float64(1.0), A=1, B=2, alpha=0.5, beta=0.5)
    assert type(law.E) is float and type(law.A) is float
    with pytest.raises(TypeError, match="alpha must be a real number"):
        D.ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha="0.3", beta=0.3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be a finite number"):
        D.ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha=0.3, beta=math.nan)


def test_compute_optimal_and_chinchilla_loss_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="flops must be > 0"):
        D.compute_optimal(0.0)
    with pytest.raises(TypeError, match="flops must be a real number"):
        D.compute_optimal("1e20")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="params must be a ChinchillaLaw"):
        D.compute_optimal(1e20, {"E": 1.0})  # type: ignore[arg-type]
    flat = D.ChinchillaLaw(E=1.0, A=1.0, B=1.0, alpha=0.0, beta=0.3)
    with pytest.raises(ValueError, match="params.alpha must be > 0"):
        D.compute_optimal(1e20, flat)
    with pytest.raises(ValueError, match="n must be positive"):
        D.chinchilla_loss([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="d must contain only finite"):
        D.chinchilla_loss(1.0, math.inf)
    with pytest.raises(TypeError, match="n must be an array of numbers"):
        D.chinchilla_loss("many", 1.0)
    with pytest.raises(TypeError, match="params must be a ChinchillaLaw"):
        D.chinchilla_loss(1.0, 1.0, dataclasses.asdict(D.CHINCHILLA))  # type: ignore[arg-type]


def _chinchilla_grid(rng: np.random.Generator, sigma: float) -> tuple[np.ndarray, ...]:
    n = np.repeat(np.logspace(7.5, 10.5, 10), 6)
    d = n * np.tile(np.logspace(0, 2.5, 6), 10)
    loss = D.chinchilla_loss(n, d) * np.exp(rng.normal(0, sigma, n.size))
    return n, d, loss


def test_fit_chinchilla_recovers_the_parameters_it_was_given() -> None:
    n, d, loss = _chinchilla_grid(np.random.default_rng(0), 0.0)
    fit = D.fit_chinchilla(n, d, loss)
    assert isinstance(fit, D.ChinchillaFit) and fit.converged
    for key, value in dataclasses.asdict(D.CHINCHILLA).items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-3), key
    # a fit is a law: it goes where a law goes
    assert D.compute_optimal(1e22, fit) == pytest.approx(D.compute_optimal(1e22), rel=1e-2)
    noisy = D.fit_chinchilla(*_chinchilla_grid(np.random.default_rng(1), 0.01))
    assert noisy.alpha == pytest.approx(0.34, abs=0.1)
    assert noisy.beta == pytest.approx(0.28, abs=0.1)


def test_fit_chinchilla_gradient_matches_finite_differences() -> None:
    """The hand-derived gradient of the Huber-LSE objective against scipy's forward differences
    (step 1.5e-8). Measured over 200 random points of the start grid's box and two deltas, the
    worst error was 2e-6 of the gradient's norm (the differences' own truncation error); a 1%
    error in one component gives 8e-3. The tolerance, 1e-4, sits between them."""
    n, d, loss = _chinchilla_grid(np.random.default_rng(1), 0.02)
    data = (np.log(n), np.log(d), np.log(loss))
    rng = np.random.default_rng(7)
    low, high = np.array([0.0, 0.0, -1.0, 0.0, 0.0]), np.array([25.0, 25.0, 1.0, 2.0, 2.0])
    thetas = [np.array([6.0, 6.0, 0.5, 0.34, 0.28])] + [rng.uniform(low, high) for _ in range(20)]
    for delta in (1e-3, 1e-1):

        def value(theta: np.ndarray, delta: float = delta) -> float:
            return D._chinchilla_objective(theta, *data, delta)[0]

        def grad(theta: np.ndarray, delta: float = delta) -> np.ndarray:
            return D._chinchilla_objective(theta, *data, delta)[1]

        for theta in thetas:
            err = check_grad(value, grad, theta)
            assert err <= 1e-4 * np.linalg.norm(grad(theta)), (delta, theta, err)
        # the tolerance bites: a 1% error in d/d(beta) fails it
        theta = thetas[0]
        wrong = check_grad(value, lambda t: grad(t) * [1, 1, 1, 1, 1.01], theta)
        assert wrong > 1e-4 * np.linalg.norm(grad(theta))


def test_fit_chinchilla_rejects_bad_input() -> None:
    n, d, loss = _chinchilla_grid(np.random.default_rng(0), 0.0)
    with pytest.raises(ValueError, match="n, d and loss differ in length: 60, 59, 60"):
        D.fit_chinchilla(n, d[:-1], loss)
    with pytest.raises(ValueError, match="loss must contain only finite"):
        D.fit_chinchilla(n, d, np.where(np.arange(n.size) == 3, np.nan, loss))
    with pytest.raises(ValueError, match="n must be positive"):
        D.fit_chinchilla(-n, d, loss)
    with pytest.raises(ValueError, match="delta must be > 0"):
        D.fit_chinchilla(n, d, loss, delta=0.0)
    with pytest.raises(ValueError, match="n_starts must be >= 1"):
        D.fit_chinchilla(n, d, loss, n_starts=0)
    with pytest.raises(TypeError, match="n_starts must be an int"):
        D.fit_chinchilla(n, d, loss, n_starts=True)
    with pytest.raises(ValueError, match="maxiter must be >= 1"):
        D.fit_chinchilla(n, d, loss, maxiter=0)
    with pytest.raises(ValueError, match="gtol must be >= 0"):
        D.fit_chinchilla(n, d, loss, gtol=-1.0)
    with pytest.raises(ValueError, match="n needs at least 5"):
        D.fit_chinchilla(n[:3], d[:3], loss[:3])


# --- Fourier measures of modular arithmetic and the source's detectors ----------------------


def _brute_force_2d(logits: np.ndarray, freqs: list[int], keep: bool) -> np.ndarray:
    """The definition, directly: mask the 2-D transform over (a, b) and transform back."""
    p = logits.shape[0]
    f = np.fft.fft2(logits, axes=(0, 1))
    mask = np.zeros((p, p), dtype=bool)
    for k in freqs:
        mask[k, k] = mask[p - k, p - k] = True
    if keep:
        mask[0, 0] = True
        f = f * mask[:, :, None]
    else:
        f = f * ~mask[:, :, None]
    return np.fft.ifft2(f, axes=(0, 1)).real.reshape(p * p, p)


@pytest.mark.parametrize("p", [7, 8, 11])
def test_fourier_power_puts_a_cosine_table_on_its_frequency(p: int) -> None:
    a = np.arange(p)
    table = np.stack([np.cos(2 * np.pi * 2 * a / p), 3 * np.sin(2 * np.pi * 2 * a / p) + 5], 1)
    shares = D.fourier_power(table)
    assert shares.shape == (p // 2,) and shares.sum() == pytest.approx(1.0)
    assert shares[1] == pytest.approx(1.0)  # frequency 2 is entry 1
    rng = np.random.default_rng(0)  # Parseval: shares of a random table add up its power
    t = rng.normal(size=(p, 3))
    t -= t.mean(0)
    expected = (np.abs(np.fft.fft(t, axis=0)) ** 2).sum(1)[1 : p // 2 + 1]
    if p % 2 == 1:
        assert D.fourier_power(t) == pytest.approx(2 * expected / (t**2).sum() / p)
    with pytest.raises(ValueError, match="constant along its first axis"):
        D.fourier_power(np.ones((p, 2)))
    with pytest.raises(ValueError, match="table must be 2-D"):
        D.fourier_power(np.ones(p))


def test_sum_frequency_power_sees_functions_of_a_plus_b_only() -> None:
    p = 11
    a, b, c = np.meshgrid(np.arange(p), np.arange(p), np.arange(p), indexing="ij")
    w = 2 * np.pi / p
    nanda = np.cos(w * 3 * (a + b - c)) + 0.5 * np.cos(w * 5 * (a + b - c))  # their readout
    shares, on_diagonal = D.sum_frequency_power(nanda)
    assert on_diagonal == pytest.approx(1.0)
    assert shares[2] == pytest.approx(0.8) and shares[4] == pytest.approx(0.2)  # 1 : 0.25
    assert D.key_frequencies(shares, 0.95) == [3, 5] and D.key_frequencies(shares, 0.7) == [3]
    only_a = np.cos(w * 2 * a) * np.cos(w * c)  # depends on a, not on a + b
    assert D.sum_frequency_power(only_a)[1] == pytest.approx(0.0, abs=1e-12)
    rows = D.sum_frequency_power(nanda.reshape(p * p, p))  # modular_addition's row order
    np.testing.assert_allclose(rows[0], shares)
    with pytest.raises(ValueError, match="do not depend on"):
        D.sum_frequency_power(np.ones((p, p, p)) * np.arange(p))
    with pytest.raises(ValueError, match=r"shape \(p\*p, p\)"):
        D.sum_frequency_power(np.ones((10, 3)))


def test_restrict_logits_matches_the_2d_fourier_definition() -> None:
    p = 13
    logits = np.random.default_rng(1).normal(size=(p, p, p))
    for freqs in ([1], [2, 6], list(range(1, 7))):
        for keep in (True, False):
            np.testing.assert_allclose(
                D.restrict_logits(logits, freqs, keep=keep),
                _brute_force_2d(logits, freqs, keep),
                atol=1e-12,
            )
    # the two ablations split the logits: kept + removed = all, plus the constant counted twice
    kept, removed = D.restrict_logits(logits, [2, 6]), D.restrict_logits(logits, [2, 6], False)
    constant = logits.mean(axis=(0, 1))
    np.testing.assert_allclose(kept + removed, logits.reshape(p * p, p) + constant, atol=1e-12)
    with pytest.raises(ValueError, match="freqs must be <= 6"):
        D.restrict_logits(logits, [7])
    # estimated from some rows only: a function of a + b alone is recovered exactly all the same
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    pure = np.cos(2 * np.pi * 2 * ((a + b)[:, :, None] - np.arange(p)) / p)
    rows = np.random.default_rng(3).permutation(p * p)[: p * p // 2]
    np.testing.assert_allclose(
        D.restrict_logits(pure, [2], rows=rows), pure.reshape(p * p, p), atol=1e-12
    )
    # ...while labels memorized on the other rows do not leak into it
    memorized = np.zeros((p * p, p))
    train = np.setdiff1d(np.arange(p * p), rows)
    memorized[train, (a + b).ravel()[train] % p] = 10.0
    leak_all = D.restrict_logits(memorized, [1, 2, 3])[rows].argmax(1)
    leak_held = D.restrict_logits(memorized, [1, 2, 3], rows=rows)[rows]
    assert np.mean(leak_all == (a + b).ravel()[rows] % p) > 0.5  # all-pairs projection: it leaks
    np.testing.assert_allclose(leak_held, 0.0, atol=1e-12)  # the held-out one does not
    with pytest.raises(ValueError, match="every class"):
        D.restrict_logits(logits, [1], rows=[0, 1])
    with pytest.raises(ValueError, match="rows must be indices"):
        D.restrict_logits(logits, [1], rows=[0.5])
    with pytest.raises(TypeError, match="keep must be True or False"):
        D.restrict_logits(logits, [1], keep="yes")  # type: ignore[arg-type]


def test_gini_and_key_frequencies() -> None:
    assert D.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert D.gini([0, 0, 0, 5]) == pytest.approx(0.75)
    assert D.key_frequencies([0.1, 0.6, 0.3], 0.95) == [2, 3, 1]
    assert D.key_frequencies([0.1, 0.6, 0.3], 0.6) == [2]
    with pytest.raises(ValueError, match="nonnegative and not all zero"):
        D.gini([0, -1, 2])
    with pytest.raises(ValueError, match="share must be in"):
        D.key_frequencies([0.5, 0.5], 0.0)


def _source_cusum(values: np.ndarray) -> list[int]:
    """Source 004's _detect_changepoints, line by line."""
    n = len(values)
    if n < 10:
        return []
    values_norm = (values - np.mean(values)) / np.std(values)
    cusum = np.zeros(n)
    for i in range(1, n):
        cusum[i] = cusum[i - 1] + values_norm[i] - np.mean(values_norm[:i])
    change_points = []
    threshold = 2.0 * np.std(np.abs(cusum))
    for i in range(1, n - 1):
        if abs(cusum[i] - cusum[i - 1]) > threshold:
            change_points.append(i)
    return change_points


def _source_inflections(sizes: np.ndarray, values: np.ndarray) -> list[int]:
    """Source 004's inflection test inside detect_critical_points, line by line."""
    log_sizes = np.log10(sizes)
    first_derivative = np.gradient(values, log_sizes)
    second_derivative = np.gradient(first_derivative, log_sizes)
    inflection_points = []
    for i in range(1, len(second_derivative) - 1):
        if (
            second_derivative[i - 1] * second_derivative[i + 1] < 0
            and abs(second_derivative[i]) < 0.1
        ):
            inflection_points.append(i)
    return inflection_points


def test_source_detectors_are_reproduced_as_written() -> None:
    rng = np.random.default_rng(2)
    for n in (5, 12, 40, 200):
        v = rng.normal(size=n) + np.linspace(0, 3, n) * rng.integers(0, 2)
        assert D.cusum_flags(v) == _source_cusum(v)
        x = np.logspace(1, 3, n)
        assert D.inflection_flags(x, v) == _source_inflections(x, v)
    spike = np.zeros(40)
    spike[20] = 5.0
    assert D.cusum_flags(spike) == [20] and D.cusum_flags(np.r_[np.zeros(20), np.ones(20)]) == []
    with pytest.raises(ValueError, match="x must be positive"):
        D.inflection_flags([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="values are constant"):
        D.cusum_flags(np.ones(12))

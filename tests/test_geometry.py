import dataclasses
import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import gamma
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from hamlib import geometry as g

# ----------------------------------------------------------------------------- volumes


@pytest.mark.parametrize(
    "d, exact", [(0, 1.0), (1, 2.0), (2, math.pi), (3, 4 * math.pi / 3), (4, math.pi**2 / 2)]
)
def test_ball_volume_small_dimensions(d, exact):
    assert g.ball_volume(d) == pytest.approx(exact, rel=1e-14)


@pytest.mark.parametrize("d", [1, 7, 50, 170])
def test_ball_volume_against_scipy_gamma(d):
    assert g.ball_volume(d) == pytest.approx(math.pi ** (d / 2) / gamma(d / 2 + 1), rel=1e-12)


@pytest.mark.parametrize("d", [342, 1000])
def test_log_ball_volume_against_mpmath_where_gamma_overflows(d):
    with pytest.raises(OverflowError):
        gamma_of_half = math.gamma(d / 2 + 1)  # why the log form is needed
        assert gamma_of_half  # not reached
    exact = mpmath.log(mpmath.pi ** (mpmath.mpf(d) / 2) / mpmath.gamma(mpmath.mpf(d) / 2 + 1))
    assert g.log_ball_volume(d) == pytest.approx(float(exact), rel=1e-13)


def test_ball_volume_of_1000_dimensions_underflows_to_zero_not_nan():
    assert g.ball_volume(1000) == 0.0
    assert g.log_ball_volume(1000) / math.log(10) == pytest.approx(-885.5, abs=0.05)


def test_ball_volume_peaks_at_five_dimensions():
    vols = [g.ball_volume(d) for d in range(0, 40)]
    assert int(np.argmax(vols)) == 5
    assert all(a > b for a, b in zip(vols[5:], vols[6:], strict=False))


@given(d=st.integers(2, 300), r=st.floats(0.1, 10.0))
def test_ball_volume_recurrence_and_scaling(d, r):
    # V_d = (2 pi / d) V_{d-2}, and V_d(r) = r^d V_d(1): checked in log space
    assert g.log_ball_volume(d) == pytest.approx(
        math.log(2 * math.pi / d) + g.log_ball_volume(d - 2), rel=1e-12, abs=1e-12
    )
    assert g.log_ball_volume(d, r) == pytest.approx(
        d * math.log(r) + g.log_ball_volume(d), rel=1e-12, abs=1e-9
    )


def test_ball_volume_against_monte_carlo():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(400_000, 4))
    frac = np.mean(np.sum(x * x, axis=1) <= 1)
    assert frac * 2**4 == pytest.approx(g.ball_volume(4), rel=0.01)


@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((-1,), ValueError, "d"),
        ((2.0,), TypeError, "d"),
        ((True,), TypeError, "d"),
        ((3, 0.0), ValueError, "r"),
        ((3, -1.0), ValueError, "r"),
        ((3, math.inf), ValueError, "r"),
        ((3, "1"), TypeError, "r"),
    ],
)
def test_ball_volume_rejects_bad_input(args, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        g.ball_volume(*args)


def test_shell_fraction_closed_form_and_edges():
    assert g.shell_fraction(100, 0.01) == pytest.approx(1 - 0.99**100, rel=1e-14)
    assert g.shell_fraction(10, 0.0) == 0.0
    assert g.shell_fraction(10, 1.0) == 1.0
    assert g.shell_fraction(0, 0.5) == 0.0
    assert g.shell_fraction(1, 1e-15) == pytest.approx(1e-15, rel=1e-12)  # 1-(1-eps)^d would be off


@given(d=st.integers(1, 2000), eps=st.floats(1e-6, 0.999))
def test_shell_fraction_is_a_fraction_increasing_in_d(d, eps):
    f = g.shell_fraction(d, eps)
    assert 0.0 < f <= 1.0
    assert g.shell_fraction(d + 1, eps) >= f


@pytest.mark.parametrize("eps", [-0.1, 1.5, math.nan])
def test_shell_fraction_rejects_eps_outside_unit_interval(eps):
    with pytest.raises(ValueError, match="^eps must"):
        g.shell_fraction(3, eps)


# ----------------------------------------------------------------------------- concentration


@pytest.mark.parametrize("d", [1, 2, 10, 100, 5000])
def test_gaussian_norm_moments_against_scipy_chi(d):
    mean, std = g.gaussian_norm_moments(d)
    assert mean == pytest.approx(stats.chi(d).mean(), rel=1e-10)
    assert std == pytest.approx(stats.chi(d).std(), rel=1e-6)


def test_gaussian_norm_std_tends_to_inverse_sqrt_two():
    assert g.gaussian_norm_moments(10_000)[1] == pytest.approx(2**-0.5, rel=1e-3)


def test_gaussian_norm_moments_against_monte_carlo():
    x = torch.randn(20_000, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    norms = x.norm(dim=1)
    mean, std = g.gaussian_norm_moments(50)
    assert norms.mean().item() == pytest.approx(mean, rel=0.005)
    assert norms.std().item() == pytest.approx(std, rel=0.03)


def test_cosine_tail_in_three_dimensions_is_uniform():
    # Archimedes: in R^3 the cosine of a random direction is uniform on [-1, 1]
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert g.cosine_tail_probability(3, t) == pytest.approx(1 - t, abs=1e-14)


@pytest.mark.parametrize("d", [2, 10, 1000])
def test_cosine_tail_against_scipy_beta(d):
    t = 0.3
    a = (d - 1) / 2
    beta = stats.beta(a, a)  # (1 + cos)/2
    expected = beta.cdf((1 - t) / 2) + beta.sf((1 + t) / 2)
    assert g.cosine_tail_probability(d, t) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_cosine_stats_match_theory_and_are_reproducible():
    s1 = g.cosine_similarity_stats(400, 20_000, torch.Generator().manual_seed(1))
    s2 = g.cosine_similarity_stats(400, 20_000, torch.Generator().manual_seed(1))
    assert s1 == s2
    assert isinstance(s1, g.CosineStats)
    assert [f.name for f in dataclasses.fields(s1)] == ["mean", "std", "max_abs"]
    assert s1.std == pytest.approx(1 / 20, rel=0.02)
    assert abs(s1.mean) < 4 * (1 / 20) / math.sqrt(20_000)
    assert s1.max_abs <= 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s1.std = 0.0  # type: ignore[misc]


def test_cosine_stats_chunking_keeps_memory_bounded_and_statistics_equal():
    s = g.cosine_similarity_stats(100, 5000, torch.Generator().manual_seed(0), chunk=1000)
    assert s.std == pytest.approx(0.1, rel=0.05)


def test_cosine_stats_rejects_bad_input():
    with pytest.raises(TypeError, match="^generator"):
        g.cosine_similarity_stats(10, 10, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="^n_pairs"):
        g.cosine_similarity_stats(10, 1)
    with pytest.raises(ValueError, match="^d"):
        g.cosine_similarity_stats(0, 10)
    with pytest.raises(TypeError, match="^n_pairs"):
        g.cosine_similarity_stats(10, 10.0)
    with pytest.raises(ValueError, match="^chunk"):
        g.cosine_similarity_stats(10, 10, chunk=0)
    with pytest.raises(TypeError, match="^chunk"):
        g.cosine_similarity_stats(10, 10, chunk=True)


def test_relative_contrast():
    X = np.array([[1.0, 0.0], [3.0, 0.0]])
    assert g.relative_contrast(X, np.zeros(2)) == pytest.approx(2.0)
    assert g.relative_contrast(torch.tensor(X), torch.zeros(2)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="^query must have shape"):
        g.relative_contrast(X, np.zeros(3))
    with pytest.raises(ValueError, match="^query coincides"):
        g.relative_contrast(X, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="^query must be 1-D"):
        g.relative_contrast(X, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="^query must contain only finite"):
        g.relative_contrast(X, np.array([np.nan, 0.0]))
    with pytest.raises(TypeError, match="^query must be an array"):
        g.relative_contrast(X, "origin")
    with pytest.raises(ValueError, match="^X needs at least 2 rows"):
        g.relative_contrast(X[:1], np.zeros(2))


# ----------------------------------------------------------------------------- projections


@pytest.mark.parametrize("n, eps", [(10, 0.5), (1000, 0.1), (10**6, 0.3), (50, 0.99)])
def test_jl_min_dimension_is_the_dasgupta_gupta_bound(n, eps):
    k = g.jl_min_dimension(n, eps)
    bound = 4 * math.log(n) / (eps**2 / 2 - eps**3 / 3)
    assert k - 1 < bound <= k
    # scikit-learn implements the same bound but truncates instead of rounding up
    assert k - johnson_lindenstrauss_min_dim(n, eps=eps) in (0, 1)


@given(n=st.integers(2, 10**9), eps=st.floats(0.01, 0.9))
def test_jl_min_dimension_monotone(n, eps):
    assert g.jl_min_dimension(n + 1, eps) >= g.jl_min_dimension(n, eps)
    assert g.jl_min_dimension(n, eps / 2) >= g.jl_min_dimension(n, eps)


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.5])
def test_jl_min_dimension_rejects_eps(eps):
    with pytest.raises(ValueError, match="^eps must"):
        g.jl_min_dimension(100, eps)


def test_jl_distortion_within_eps_at_the_bound():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3000))
    k = g.jl_min_dimension(60, 0.5)
    gen = torch.Generator().manual_seed(0)
    assert g.jl_distortion(X, k, gen) < 0.5
    assert g.jl_distortion(X, 5, torch.Generator().manual_seed(0)) > g.jl_distortion(X, k, gen)


def test_jl_distortion_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        g.jl_distortion(np.ones((3, 4)), 2)


def test_jl_distortion_rejects_bad_arguments():
    X = np.eye(4)
    with pytest.raises(ValueError, match="^k must"):
        g.jl_distortion(X, 0)
    with pytest.raises(TypeError, match="^k must"):
        g.jl_distortion(X, 2.0)
    with pytest.raises(TypeError, match="^generator must"):
        g.jl_distortion(X, 2, generator=0)


# ----------------------------------------------------------------------------- intrinsic dimension


def _cube_in_higher_space(n, d, D, seed):
    rng = np.random.default_rng(seed)
    Z = rng.uniform(size=(n, d))
    Q, _ = np.linalg.qr(rng.standard_normal((D, d)))  # orthonormal embedding
    return Z @ Q.T


@pytest.mark.parametrize("d", [1, 2, 5])
def test_intrinsic_dimension_of_a_flat_cube(d):
    X = _cube_in_higher_space(4000, d, 20, seed=d)
    assert g.twonn_dimension(X) == pytest.approx(d, rel=0.12)
    # LB and MG average the same local estimates, LB directly and MG by their inverses; on
    # uniform data LB = (k-1)/(k-2) MG up to the spread of the local estimates: with k = 10,
    # each 1/m_k is Gamma(9)/9-distributed (relative sd 1/3) and LB/MG - 9/8 has sd below
    # 0.1 / sqrt(n) ~ 0.002 for n = 4000 points; the boundary shifts both alike
    lb, mg = g.mle_dimension(X, k=10), g.mle_dimension(X, k=10, average="inverses")
    assert lb / mg == pytest.approx(9 / 8, abs=0.03)


@pytest.mark.parametrize("d", [2, 5])
def test_intrinsic_dimension_on_the_torus(d):
    # uniform, no boundary: the model exactly. MG's 1/d_hat is a mean of n = 2000 local
    # Gamma(k-1)/(k-1) variables (relative sd 1/3), so its relative sd is at most 1/(3 sqrt(n))
    # ~ 0.0075 (less; neighbourhoods overlap only partly): 5 sd is 0.04
    X = np.random.default_rng(d).uniform(size=(2000, d))
    assert g.mle_dimension(X, k=10, average="inverses", boxsize=1.0) == pytest.approx(d, rel=0.04)


def test_twonn_points_are_what_twonn_fits():
    X = _cube_in_higher_space(500, 2, 5, seed=0)
    x, y = g.twonn_points(X)
    assert len(x) == 450 and np.all(np.diff(x) >= 0)
    assert g.twonn_dimension(X) == pytest.approx(np.dot(x, y) / np.dot(x, x), rel=1e-12)


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10))
def test_intrinsic_dimension_is_invariant_to_similarities(scale, seed):
    X = _cube_in_higher_space(300, 3, 6, seed)
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 100).standard_normal((6, 6)))
    Y = scale * X @ Q + 7.0
    assert g.twonn_dimension(Y) == pytest.approx(g.twonn_dimension(X), rel=1e-6)
    assert g.mle_dimension(Y) == pytest.approx(g.mle_dimension(X), rel=1e-6)


def test_twonn_mle_variant_agrees_with_the_fit():
    # Independent reference: the Pareto MLE d = (n - 1) / sum(log mu) over all points.
    X = _cube_in_higher_space(3000, 4, 10, seed=3)
    from scipy.spatial.distance import cdist

    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    r = np.sort(D, axis=1)[:, :2]
    mle = (len(X) - 1) / np.sum(np.log(r[:, 1] / r[:, 0]))
    assert g.twonn_dimension(X) == pytest.approx(mle, rel=0.1)


def test_intrinsic_dimension_accepts_tensors():
    X = _cube_in_higher_space(500, 2, 5, seed=0)
    assert g.twonn_dimension(torch.tensor(X)) == g.twonn_dimension(X)


@pytest.mark.parametrize("fn", [g.twonn_dimension, g.mle_dimension])
def test_intrinsic_dimension_rejects_bad_data(fn):
    with pytest.raises(ValueError, match="duplicate"):
        fn(np.vstack([np.eye(20), np.eye(20)]))
    with pytest.raises(ValueError, match="^X must be 2-D"):
        fn(np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        fn(np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    with pytest.raises(ValueError, match="at least"):
        fn(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="^X must be"):
        fn([["a", "b"], ["c", "d"], ["e", "f"]])


def test_mle_dimension_rejects_k():
    X = _cube_in_higher_space(50, 2, 3, seed=0)
    with pytest.raises(ValueError, match="^k must"):
        g.mle_dimension(X, k=1)
    with pytest.raises(ValueError, match="^k must be smaller"):
        g.mle_dimension(X, k=50)
    with pytest.raises(TypeError, match="^k must"):
        g.mle_dimension(X, k=True)


@pytest.mark.parametrize(
    "value, exc", [(-0.1, ValueError), (0.95, ValueError), (math.nan, ValueError), ("0", TypeError)]
)
def test_twonn_dimension_rejects_discard_fraction(value, exc):
    X = _cube_in_higher_space(50, 2, 3, seed=0)
    with pytest.raises(exc, match="^discard_fraction must"):
        g.twonn_dimension(X, discard_fraction=value)


# ----------------------------------------------------------------------------- the argument rules


def test_numpy_integers_and_zero_d_arrays_are_accepted_as_sizes():
    assert g.ball_volume(np.int64(3)) == g.ball_volume(3)
    assert g.ball_volume(np.array(3)) == g.ball_volume(3)
    assert g.shell_fraction(np.int32(10), np.float32(0.5)) == pytest.approx(1 - 0.5**10)
    assert g.jl_min_dimension(np.int64(1000), np.float64(0.1)) == g.jl_min_dimension(1000, 0.1)
    assert g.cosine_tail_probability(torch.tensor(10), torch.tensor(0.3)) == pytest.approx(
        g.cosine_tail_probability(10, 0.3)
    )


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: g.ball_volume(np.True_), TypeError, "d"),
        (lambda: g.ball_volume(np.array([3])), TypeError, "d"),
        (lambda: g.shell_fraction(3, True), TypeError, "eps"),
        (lambda: g.gaussian_norm_moments(0), ValueError, "d"),
        (lambda: g.gaussian_norm_moments("2"), TypeError, "d"),
        (lambda: g.cosine_tail_probability(1, 0.5), ValueError, "d"),
        (lambda: g.cosine_tail_probability(3, 1.5), ValueError, "t"),
        (lambda: g.cosine_tail_probability(3, None), TypeError, "t"),
        (lambda: g.jl_min_dimension(0, 0.5), ValueError, "n_points"),
        (lambda: g.jl_min_dimension(10.0, 0.5), TypeError, "n_points"),
        (lambda: g.jl_min_dimension(10, "0.5"), TypeError, "eps"),
    ],
)
def test_scalar_arguments_follow_the_rules(call, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        call()


# ----------------------------------------------------------------------------- extreme values


def test_cosine_max_quantile_inverts_the_exact_law():
    d, n, q = 512, 499_500, 0.9
    t = g.cosine_max_quantile(d, n, q)
    assert (1 - g.cosine_tail_probability(d, t)) ** n == pytest.approx(q, rel=1e-9)
    # one pair in R^3: |cos| is uniform on [0, 1], so its q-quantile is q
    assert g.cosine_max_quantile(3, 1, 0.3) == pytest.approx(0.3, abs=1e-12)
    assert g.cosine_max_quantile(50, 100, 0.2) < g.cosine_max_quantile(50, 100, 0.8)


def test_cosine_max_quantile_against_sampled_maxima():
    # 400 independent maxima of 50 independent |cos| in d = 30: the median and 90% quantile
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 400, 50, 30, generator=gen, dtype=torch.float64)
    m = torch.nn.functional.cosine_similarity(x, y, dim=2).abs().amax(dim=1).numpy()
    for q in (0.5, 0.9):
        t = g.cosine_max_quantile(30, 50, q)
        # the share of maxima below t is binomial(400, q): 4 standard errors
        assert np.mean(m <= t) == pytest.approx(q, abs=4 * math.sqrt(q * (1 - q) / 400))


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: g.cosine_max_quantile(1, 10), ValueError, "d"),
        (lambda: g.cosine_max_quantile(10, 0), ValueError, "n_pairs"),
        (lambda: g.cosine_max_quantile(10, 10, 1.0), ValueError, "q"),
        (lambda: g.cosine_max_quantile(10, 10, 0.0), ValueError, "q"),
        (lambda: g.jl_max_distortion_quantile(0, 10), ValueError, "k"),
        (lambda: g.jl_max_distortion_quantile(10, 10, 1.5), ValueError, "q"),
        (lambda: g.jl_max_distortion_quantile(10, 2.0), TypeError, "n_pairs"),
        (lambda: g.jl_pair_tail(10, 0.0), ValueError, "eps"),
        (lambda: g.jl_pair_tail(10, math.inf), ValueError, "eps"),
        (lambda: g.jl_epsilon(1, 500), ValueError, "n_points"),
        (lambda: g.jl_epsilon(100, 110), ValueError, "k"),
        (lambda: g.jl_epsilon(100, 500.0), TypeError, "k"),
    ],
)
def test_extreme_value_functions_reject_bad_input(call, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        call()


# ----------------------------------------------------------------------------- JL, exact laws


@pytest.mark.parametrize("n, k", [(100, 111), (100, 222), (100, 1063), (10**4, 5000)])
def test_jl_epsilon_inverts_jl_min_dimension(n, k):
    eps = g.jl_epsilon(n, k)
    assert 0 < eps < 1
    assert 4 * math.log(n) / (eps**2 / 2 - eps**3 / 3) == pytest.approx(k, rel=1e-10)
    assert g.jl_min_dimension(n, eps * (1 + 1e-9)) <= k


@pytest.mark.parametrize("k, eps", [(1, 0.5), (10, 0.3), (200, 0.2), (50, 1.5)])
def test_jl_pair_tail_against_monte_carlo_and_the_dasgupta_gupta_bound(k, eps):
    gen = torch.Generator().manual_seed(k)
    ratio = (torch.randn(200_000, k, generator=gen, dtype=torch.float64) ** 2).mean(dim=1)
    sampled = float(((ratio - 1).abs() > eps).double().mean())
    exact = g.jl_pair_tail(k, eps)
    assert sampled == pytest.approx(exact, abs=5 * math.sqrt(exact * (1 - exact) / 200_000) + 1e-5)
    if eps < 1:
        assert exact <= 2 * math.exp(-k * (eps**2 / 2 - eps**3 / 3) / 2)


def test_jl_max_distortion_quantile_inverts_the_law_and_matches_leading_order():
    k, n_pairs = 500, 4950
    eps = g.jl_max_distortion_quantile(k, n_pairs, 0.5)
    assert (1 - g.jl_pair_tail(k, eps)) ** n_pairs == pytest.approx(0.5, rel=1e-8)
    # large k: chi2_k/k - 1 tends to a normal of sd sqrt(2/k), and the median of the largest of
    # N pairs (as if independent) to sqrt(2/k) z with 2(1 - Phi(z)) = 1 - 2^(-1/N); the relative
    # error falls like 1/sqrt(k) (the chi-square's skewness)
    z = stats.norm.isf((1 - 0.5 ** (1 / n_pairs)) / 2)
    gaps = [
        abs(g.jl_max_distortion_quantile(kk, n_pairs, 0.5) / (math.sqrt(2 / kk) * z) - 1)
        for kk in (500, 50_000, 5_000_000)
    ]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-2
    # the book's leading order sqrt(8 ln n / k) is a bound, not the limit: z / sqrt(4 ln 100) < 1
    assert z / math.sqrt(4 * math.log(100)) == pytest.approx(0.888, abs=0.001)
    # and one pair: the median of |chi2_k/k - 1|
    one = g.jl_max_distortion_quantile(k, 1, 0.5)
    assert g.jl_pair_tail(k, one) == pytest.approx(0.5, rel=1e-8)
    # distortions beyond 1 (tiny k) are found too
    assert g.jl_max_distortion_quantile(2, 1000, 0.5) > 1


def test_jl_max_distortion_quantile_against_sampled_independent_maxima():
    k, n_pairs, reps = 20, 100, 2000
    gen = torch.Generator().manual_seed(1)
    ratio = (torch.randn(reps, n_pairs, k, generator=gen, dtype=torch.float64) ** 2).mean(dim=2)
    worst = (ratio - 1).abs().amax(dim=1).numpy()
    med = g.jl_max_distortion_quantile(k, n_pairs, 0.5)
    assert np.mean(worst <= med) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / reps))


# ----------------------------------------------------------------------------- MLE averaging, torus


def test_mle_averages_on_the_flat_torus_show_the_gamma_factor():
    # uniform points on a flat torus: the estimators' assumptions hold, no boundary
    X = np.random.default_rng(0).uniform(size=(4000, 4))
    k = 10
    lb = g.mle_dimension(X, k=k, boxsize=1.0)
    mg = g.mle_dimension(X, k=k, average="inverses", boxsize=1.0)
    assert mg == pytest.approx(4, rel=0.04)
    assert lb == pytest.approx(4 * (k - 1) / (k - 2), rel=0.04)
    assert lb > mg  # Jensen: the average of 1/x is at least 1/(average of x)
    assert g.twonn_dimension(X, boxsize=1.0) == pytest.approx(4, rel=0.1)
    # without wrap-around the boundary lowers the estimate
    assert g.mle_dimension(X, k=k, average="inverses") < mg


def test_mle_inverses_against_an_independent_computation():
    from scipy.spatial.distance import cdist

    X = _cube_in_higher_space(500, 3, 6, seed=4)
    D = np.sort(cdist(X, X), axis=1)[:, 1:11]  # 10 nearest other points
    inv = np.log(D[:, -1:] / D[:, :-1]).sum(axis=1) / 9
    assert g.mle_dimension(X, k=10, average="inverses") == pytest.approx(1 / inv.mean(), rel=1e-10)
    assert g.mle_dimension(X, k=10) == pytest.approx(np.mean(1 / inv), rel=1e-10)


def test_boxsize_and_average_are_checked():
    X = np.random.default_rng(0).uniform(size=(50, 2))
    with pytest.raises(ValueError, match="^average must"):
        g.mle_dimension(X, average="median")
    with pytest.raises(ValueError, match="^boxsize must"):
        g.mle_dimension(X, boxsize=0.0)
    with pytest.raises(ValueError, match=r"^X must lie in \[0, boxsize\)"):
        g.twonn_dimension(X, boxsize=0.5)
    with pytest.raises(ValueError, match=r"^X must lie in \[0, boxsize\)"):
        g.mle_dimension(X - 0.5, boxsize=1.0)


# ----------------------------------------------------------------------------- Cover's theorem


@pytest.mark.parametrize("d", [1, 2, 5, 10, 40])
def test_cover_fraction_closed_form_values(d):
    assert g.cover_separable_fraction(d, d) == 1.0  # N <= d: every labelling
    assert g.cover_separable_fraction(2 * d, d) == pytest.approx(0.5, abs=1e-15)  # N = 2d: half
    assert g.cover_separable_fraction(3, 1) == pytest.approx(2 / 8)  # d = 1: only all +1 or all -1
    # the count is a binomial tail: C(N, d) / 2^N = P(Binomial(N - 1, 1/2) <= d - 1)
    for n in range(1, 4 * d + 1):
        assert g.cover_separable_fraction(n, d) == pytest.approx(
            stats.binom.cdf(d - 1, n - 1, 0.5), rel=1e-12, abs=1e-300
        )


def test_cover_fraction_against_brute_force_enumeration():
    # every labelling of N = 7 Gaussian points in d = 3, decided by linear programming
    import itertools

    X = np.random.default_rng(0).standard_normal((7, 3))
    count = sum(
        g.linearly_separable(X, np.array(y)) for y in itertools.product([-1.0, 1.0], repeat=7)
    )
    assert count / 2**7 == g.cover_separable_fraction(7, 3)


def test_linearly_separable_small_cases():
    assert g.linearly_separable(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, -1.0]))
    # x and -x with the same label: no hyperplane through 0 separates them
    assert not g.linearly_separable(np.array([[1.0, 2.0], [-1.0, -2.0]]), np.array([1.0, 1.0]))
    # XOR with a bias column is still not separable
    xor = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert not g.linearly_separable(xor, np.array([1.0, 1.0, -1.0, -1.0]))
    # but the labelling by the first coordinate is
    assert g.linearly_separable(xor - [0.5, 0.0, 0.0], np.array([-1.0, 1.0, 1.0, -1.0]))


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: g.cover_separable_fraction(0, 3), ValueError, "n_points"),
        (lambda: g.cover_separable_fraction(5, 0), ValueError, "d"),
        (lambda: g.cover_separable_fraction(5, 2.0), TypeError, "d"),
        (lambda: g.linearly_separable(np.eye(3), np.ones(2)), ValueError, "y"),
        (lambda: g.linearly_separable(np.eye(3), np.array([1.0, 0.0, 1.0])), ValueError, "y"),
        (lambda: g.linearly_separable(np.ones(3), np.ones(3)), ValueError, "X"),
    ],
)
def test_separability_functions_reject_bad_input(call, exc, name):
    with pytest.raises(exc, match=rf"^{name} must"):
        call()

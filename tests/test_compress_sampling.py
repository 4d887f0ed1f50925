"""Speculative sampling on two GPTs: a statistical test of its output distribution, with the power
stated and demonstrated.

``tests/test_compress.py`` proves exactness by enumeration on small vocabularies; this test runs
the real sampler (``hamlib.compress.speculative_generate``, GPT target and draft) and compares
the frequencies of its first two tokens with the target's exact distributions by chi-square
tests. The design: N samples, level 0.001 for each of the two tests. Its power against the most
common implementation bug (after a rejection, resampling from the target's p instead of the
residual max(p - q, 0)) is computed from the noncentral chi-square distribution and required to
exceed 0.999; then the buggy sampler is run and must be rejected. Seeds are fixed, so the test
is deterministic; the level and power say how it was sized, not how often it flakes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from hamlib import compress as C
from hamlib import transformer as T

V, N, LEVEL = 8, 3000, 0.001
PROMPT = [1, 2, 3]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second thread only adds synchronization (tests/conftest.py restores it)."""
    torch.set_num_threads(1)


def _gpt(d_model: int, seed: int) -> T.GPT:
    torch.manual_seed(seed)
    model = T.GPT(T.GPTConfig(V, block_size=16, d_model=d_model, n_layers=1, n_heads=2))
    with torch.no_grad():  # larger weights than GPT-2's init: peaked, dissimilar distributions
        for p in model.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.4)
    return model.eval()


@torch.no_grad()
def _next(model: T.GPT, seq: list[int]) -> torch.Tensor:
    return torch.softmax(model(torch.tensor([seq]))[0][0, -1].double(), -1)


def _cells(expected: np.ndarray) -> np.ndarray:
    """Indices of tokens with expected count >= 5; the rest are pooled into one cell."""
    return np.flatnonzero(expected * N >= 5)


def _chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    keep = _cells(probs)
    obs = np.append(counts[keep], counts.sum() - counts[keep].sum())
    exp = np.append(probs[keep], 1 - probs[keep].sum()) * counts.sum()
    if exp[-1] < 5:  # nothing left to pool
        obs, exp = obs[:-1], exp[:-1]
        exp = exp * obs.sum() / exp.sum()
    return float(stats.chisquare(obs, exp).pvalue), len(obs) - 1


def _sample(target: T.GPT, draft: T.GPT, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return np.array(
        [C.speculative_generate(target, draft, PROMPT, 2, 3, generator=g)[0] for _ in range(N)]
    )


@pytest.mark.slow
def test_speculative_sampling_on_gpts_passes_a_chi_square_test_of_stated_power(monkeypatch):
    target, draft = _gpt(16, 0), _gpt(8, 1)
    p1 = _next(target, PROMPT).numpy()
    q1 = _next(draft, PROMPT).numpy()
    p2 = sum(p1[x] * _next(target, [*PROMPT, x]).numpy() for x in range(V))  # second token
    overlap = np.minimum(p1, q1).sum()
    assert 0.3 < overlap < 0.9, "target and draft should differ, and not completely"

    # Power of the first-token test against the buggy sampler, whose first token is distributed
    # as min(p, q) + (1 - beta) p (accepted draft token, or a resample from p).
    buggy = np.minimum(p1, q1) + (1 - overlap) * p1
    keep = _cells(p1)
    p_c = np.append(p1[keep], 1 - p1[keep].sum())
    b_c = np.append(buggy[keep], 1 - buggy[keep].sum())
    df = len(keep) if p_c[-1] * N >= 5 else len(keep) - 1
    if p_c[-1] * N < 5:
        p_c, b_c = p_c[:-1] / p_c[:-1].sum(), b_c[:-1] / b_c[:-1].sum()
    noncentrality = N * float(((b_c - p_c) ** 2 / p_c).sum())
    critical = stats.chi2.ppf(1 - LEVEL, df)
    power = 1 - stats.ncx2.cdf(critical, df, noncentrality)
    assert power > 0.999, f"the design has power {power:.4f} only"

    out = _sample(target, draft, 0)
    pv1, _ = _chi2(np.bincount(out[:, 0], minlength=V), p1)
    pv2, _ = _chi2(np.bincount(out[:, 1], minlength=V), p2)
    assert pv1 > LEVEL and pv2 > LEVEL, (pv1, pv2)

    monkeypatch.setattr(C, "residual", lambda p, q: p)  # the bug: resample from p
    wrong = _sample(target, draft, 0)
    pv_wrong, _ = _chi2(np.bincount(wrong[:, 0], minlength=V), p1)
    assert pv_wrong < LEVEL, pv_wrong


@pytest.mark.slow
def test_a_draft_equal_to_the_target_is_always_accepted():
    """With q = p every proposal is accepted: gamma + 1 tokens per target call, always."""
    target = _gpt(16, 0)
    _, accepted = C.speculative_generate(
        target, target, PROMPT, 8, 3, generator=torch.Generator().manual_seed(0)
    )
    assert accepted == [3, 3]


def test_the_enumeration_uses_the_resampling_rule_it_is_given():
    """With the wrong rule (resample from p) the enumerated distribution is no longer the
    target's; with the default rule it is. So the exactness check can fail."""
    torch.manual_seed(3)
    tables = [torch.rand(3, 3, dtype=torch.float64) ** 3 for _ in range(2)]
    p_t, q_t = (t / t.sum(-1, keepdim=True) for t in tables)

    def p_fn(seq):
        return p_t[seq[-1] if seq else 0]

    def q_fn(seq):
        return q_t[seq[-1] if seq else 0]

    truth = {(a, b): float(p_fn([])[a] * p_fn([a])[b]) for a in range(3) for b in range(3)}
    right = C.exact_output_distribution(p_fn, q_fn, 3, 2, 2)
    wrong = C.exact_output_distribution(p_fn, q_fn, 3, 2, 2, resample=lambda p, q: p)
    assert max(abs(right[k] - v) for k, v in truth.items()) < 1e-13
    assert max(abs(wrong.get(k, 0.0) - v) for k, v in truth.items()) > 1e-3
    with pytest.raises(TypeError, match="resample"):
        C.exact_output_distribution(p_fn, q_fn, 3, 2, 2, resample=3)
    with pytest.raises(TypeError, match="resample"):
        C.speculative_step([0], lambda s, k: torch.stack([p_fn(s)] * k), q_fn, 2, None, 3)

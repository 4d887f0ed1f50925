"""The argument rules, tested once over hamlib's public functions (hamlib/_checks.py states them):

- a wrong type raises TypeError, a wrong value ValueError, and the message names the argument;
- NumPy integers and 0-d arrays are accepted where an int is meant, NumPy floats where a real is;
- bool is refused where a number is meant; NaN is refused where a real is;
- a list where a tensor is meant is a TypeError; a number where a truth value is meant too;
- where one of a few options is meant, another is a ValueError and a wrong type a TypeError.

Each row is a cheap valid call, the argument it varies, its kind and a value of the right type
that is out of range. A row whose argument were not checked (or checked by hand, differently)
fails here: the bad value would be accepted, or raise the other exception, or not name it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import hamlib
from hamlib import _checks as check
from hamlib import (
    attention,
    dynamics,
    geometry,
    gpu_model,
    hamiltonian,
    kernel_configs,
    kernels,
    mcmc,
    measure,
    optim,
    tasks,
    text,
    transformer,
    vi,
)

DEV = kernels.device()


def _w() -> list[torch.Tensor]:
    return [torch.zeros(2, requires_grad=True)]


def _field(q: torch.Tensor) -> torch.Tensor:
    return q


def _grad(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return q


W = torch.ones(2, requires_grad=True)


def _loss() -> torch.Tensor:
    return (W**2).sum()


def _log_prob(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(-1)


def _gpt() -> transformer.GPT:
    cfg = transformer.GPTConfig(vocab_size=5, block_size=4, d_model=8, n_layers=1, n_heads=2)
    return transformer.GPT(cfg)


def _train_fresh_gpt(data: torch.Tensor, steps: int, batch_size: int) -> list[float]:
    """train_gpt on a new model each call (rows run it many times)."""
    return text.train_gpt(_gpt(), data, steps, batch_size)


def _generate(max_new_tokens: int, temperature: float) -> torch.Tensor:
    idx = torch.zeros(1, 1, dtype=torch.long)
    return _gpt().generate(idx, max_new_tokens, temperature=temperature)


X2 = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
Q4 = torch.randn(1, 1, 8, 16, device=DEV, generator=torch.Generator().manual_seed(0))
SIGNAL = np.r_[np.zeros(5), np.ones(5)]
# (name, function, valid keyword arguments, the argument varied, kind, a right-typed bad value)
ROWS: list[tuple[str, Callable[..., Any], dict[str, Any], str, str, Any]] = [
    ("log_ball_volume", geometry.log_ball_volume, {"d": 3, "r": 1.0}, "d", "int", -1),
    ("log_ball_volume", geometry.log_ball_volume, {"d": 3, "r": 1.0}, "r", "real", 0.0),
    ("shell_fraction", geometry.shell_fraction, {"d": 3, "eps": 0.1}, "eps", "real", 1.5),
    ("cosine_tail", geometry.cosine_tail_probability, {"d": 4, "t": 0.5}, "t", "real", 2.0),
    ("cosine_stats", geometry.cosine_similarity_stats, {"d": 4, "n_pairs": 8}, "n_pairs", "int", 1),
    (
        "jl_min_dimension",
        geometry.jl_min_dimension,
        {"n_points": 9, "eps": 0.5},
        "eps",
        "real",
        1.0,
    ),
    (
        "mle_dimension",
        geometry.mle_dimension,
        {"X": np.random.default_rng(0).normal(size=(12, 3)), "k": 2},
        "k",
        "int",
        1,
    ),
    ("gaussian_kl", vi.gaussian_kl, {"mu": X2, "logvar": X2}, "mu", "tensor", None),
    ("VAE", vi.VAE, {"n_in": 4, "n_latent": 2, "hidden": 3}, "hidden", "int", 0),
    (
        "reparam",
        vi.reparam_and_score_gradients,
        {"f": _field, "mu": 0.0, "log_sigma": 0.0, "n_samples": 4},
        "n_samples",
        "int",
        1,
    ),
    (
        "noise_scale",
        measure.gradient_noise_scale,
        {"per_example_grads": X2},
        "per_example_grads",
        "tensor",
        None,
    ),
    (
        "lanczos",
        measure.lanczos,
        {"loss_fn": _loss, "params": [W], "iters": 1},
        "iters",
        "int",
        0,
    ),
    ("SGD", optim.SGD, {"params": _w(), "lr": 0.1}, "lr", "real", 0.0),
    ("Adam", optim.Adam, {"params": _w(), "eps": 1e-8}, "eps", "real", -1.0),
    ("setup", hamlib.setup, {"seed": 3}, "seed", "int", -1),
    ("setup", hamlib.setup, {"threads": 1}, "threads", "int", 0),
    (
        "leapfrog",
        hamiltonian.leapfrog,
        {"dH_dq": _grad, "dH_dp": _grad, "q0": X2, "p0": X2, "h": 0.1, "n_steps": 2},
        "n_steps",
        "int",
        -1,
    ),
    (
        "leapfrog",
        hamiltonian.leapfrog,
        {"dH_dq": _grad, "dH_dp": _grad, "q0": X2, "p0": X2, "h": 0.1, "n_steps": 2},
        "h",
        "real",
        0.0,
    ),
    (
        "hmc",
        mcmc.hmc,
        {"log_prob": _log_prob, "x0": X2, "step_size": 0.1, "n_leapfrog": 2, "n_samples": 2},
        "n_leapfrog",
        "int",
        0,
    ),
    (
        "rwm",
        mcmc.random_walk_metropolis,
        {"log_prob": _log_prob, "x0": X2, "step_size": 0.1, "n_samples": 2},
        "step_size",
        "real",
        -0.1,
    ),
    ("HNN", hamiltonian.HNN, {"dim": 1, "hidden": 4}, "dim", "int", 0),
    (
        "sinusoidal",
        attention.sinusoidal_positions,
        {"n_positions": 3, "d_model": 4},
        "d_model",
        "int",
        1,
    ),
    ("causal_mask", attention.causal_mask, {"s_q": 2, "s_k": 3}, "s_k", "int", 1),
    (
        "apply_rope",
        attention.apply_rope,
        {"x": torch.randn(2, 4), "positions": torch.arange(2)},
        "x",
        "tensor",
        None,
    ),
    ("GPTConfig", transformer.GPTConfig, {"vocab_size": 5, "n_heads": 2}, "n_heads", "int", 0),
    (
        "kv_cache_bytes",
        transformer.kv_cache_bytes,
        {"n_layers": 2, "n_kv_heads": 2, "head_dim": 4, "seq_len": 8},
        "seq_len",
        "int",
        0,
    ),
    ("RMSNorm", transformer.RMSNorm, {"d": 4, "eps": 1e-6}, "eps", "real", 0.0),
    (
        "train_gpt",
        _train_fresh_gpt,
        {"data": torch.arange(5).repeat(4), "steps": 1, "batch_size": 2},
        "batch_size",
        "int",
        0,
    ),
    ("generate", _generate, {"max_new_tokens": 2, "temperature": 1.0}, "max_new_tokens", "int", -1),
    ("generate", _generate, {"max_new_tokens": 2, "temperature": 1.0}, "temperature", "real", -1.0),
    (
        "hmc",
        mcmc.hmc,
        {
            "log_prob": _log_prob,
            "x0": X2,
            "step_size": 0.1,
            "n_leapfrog": 2,
            "n_samples": 2,
            "jitter": 0.1,
        },
        "jitter",
        "real",
        1.0,
    ),
    (
        "train_modular",
        tasks.train_modular,
        {"p": 5, "steps": 1, "every": 1, "train_frac": 0.5},
        "train_frac",
        "real",
        1.0,
    ),
    (
        "op_cost",
        gpu_model.op_cost,
        {"op": "add", "dtype_bytes": 2, "n": 8},
        "dtype_bytes",
        "choice",
        3,
    ),
    (
        "bank_conflicts",
        gpu_model.bank_conflicts,
        {"word_index": np.arange(32), "banks": 32},
        "banks",
        "int",
        0,
    ),
    (
        "warp_efficiency",
        gpu_model.warp_efficiency,
        {"branch": np.zeros(64, int), "warp_size": 32},
        "warp_size",
        "int",
        0,
    ),
    (
        "matmul_config",
        kernel_configs.matmul_config,
        {"m": 64, "n": 64, "k": 64, "dtype": torch.float16},
        "m",
        "int",
        0,
    ),
    (
        "matmul_config",
        kernel_configs.matmul_config,
        {"m": 64, "n": 64, "k": 64, "dtype": torch.float16, "precision": "ieee"},
        "precision",
        "choice",
        "fp64",
    ),
    (
        "matmul",
        kernels.matmul,
        {"a": torch.ones(4, 4, device=DEV), "b": torch.ones(4, 4, device=DEV), "precision": "ieee"},
        "precision",
        "choice",
        "fp64",
    ),
    (
        "flash_attention",
        kernels.flash_attention,
        {"q": Q4, "k": Q4, "v": Q4, "causal": False},
        "causal",
        "bool",
        None,
    ),
    (
        "flash_attention",
        kernels.flash_attention,
        {"q": Q4, "k": Q4, "v": Q4, "sm_scale": 0.25},
        "sm_scale",
        "real",
        math.inf,
    ),
    ("Tracker", dynamics.Tracker, {"every": 2}, "every", "int", 0),
    (
        "change_points",
        dynamics.change_points,
        {"signal": SIGNAL, "n_breaks": 1},
        "n_breaks",
        "int",
        0,
    ),
    ("compute_optimal", dynamics.compute_optimal, {"flops": 1e20}, "flops", "real", -1.0),
    ("modular_addition", tasks.modular_addition, {"p": 5}, "p", "int", 1),
    ("ModularMLP", tasks.ModularMLP, {"p": 5, "d": 2, "hidden": 3}, "hidden", "int", 0),
    (
        "Teacher",
        tasks.Teacher,
        {"d_in": 3, "n_classes": 2, "width": 4, "temperature": 1.0},
        "temperature",
        "real",
        0.0,
    ),
    (
        "Teacher",
        tasks.Teacher,
        {"d_in": 3, "n_classes": 2, "width": 4, "seed": 1},
        "seed",
        "int",
        -1,
    ),
    (
        "occupancy",
        gpu_model.occupancy,
        {"spec": gpu_model.H100_SXM, "registers": 32, "shared_bytes": 0, "num_warps": 4},
        "num_warps",
        "int",
        33,
    ),
    (
        "latency_hiding",
        gpu_model.latency_hiding,
        {"n_warps": 2, "compute_cycles": 4, "latency_cycles": 8, "iters": 3},
        "latency_cycles",
        "int",
        -1,
    ),
    (
        "tile_order",
        gpu_model.tile_order,
        {"tiles_m": 2, "tiles_n": 2, "group_m": 1},
        "group_m",
        "int",
        0,
    ),
    (
        "coalescing",
        gpu_model.coalescing,
        {"element_index": np.arange(32), "element_bytes": 4},
        "element_bytes",
        "int",
        0,
    ),
    ("op_cost", gpu_model.op_cost, {"op": "add", "n": 8}, "n", "int", 0),
    ("next_power_of_2", kernel_configs.next_power_of_2, {"n": 5}, "n", "int", 0),
    (
        "softmax",
        kernels.softmax,
        {"x": torch.randn(2, 8, device=DEV), "max_fused": 8},
        "max_fused",
        "int",
        0,
    ),
    ("softmax", kernels.softmax, {"x": torch.randn(2, 8, device=DEV)}, "x", "tensor", None),
    (
        "layer_norm",
        kernels.layer_norm,
        {
            "x": torch.randn(2, 8, device=DEV),
            "weight": torch.ones(8, device=DEV),
            "bias": torch.zeros(8, device=DEV),
            "eps": 1e-5,
        },
        "eps",
        "real",
        0.0,
    ),
]
IDS = [f"{name}-{arg}" for name, _, _, arg, _, _ in ROWS]


def _raises(exc: type[Exception], arg: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(exc, match=rf"^{re.escape(arg)}\b"):  # the message opens with its name
        fn(**kwargs)


@pytest.mark.parametrize("name, fn, good, arg, kind, bad", ROWS, ids=IDS)
def test_the_rules(name, fn, good, arg, kind, bad) -> None:
    fn(**good)  # the row's valid call works
    value = good[arg]
    if kind == "tensor":
        _raises(TypeError, arg, fn, {**good, arg: value.tolist()})
        return
    if kind == "bool":
        _raises(TypeError, arg, fn, {**good, arg: int(value)})  # a number is not a truth value
        fn(**{**good, arg: np.bool_(value)})
        return
    _raises(ValueError, arg, fn, {**good, arg: bad})
    if kind == "choice":
        _raises(TypeError, arg, fn, {**good, arg: [value]})
        if isinstance(value, int):
            _raises(TypeError, arg, fn, {**good, arg: True})
            fn(**{**good, arg: np.int64(value)})
        return
    _raises(TypeError, arg, fn, {**good, arg: True})  # bool is not a number
    _raises(TypeError, arg, fn, {**good, arg: str(value)})
    if kind == "int":
        _raises(TypeError, arg, fn, {**good, arg: float(value)})
        fn(**{**good, arg: np.int64(value)})  # NumPy integers are ints
        fn(**{**good, arg: np.array(value)})
    else:
        _raises(ValueError, arg, fn, {**good, arg: math.nan})
        fn(**{**good, arg: np.float64(value)})  # NumPy floats are reals
        if float(value).is_integer():
            fn(**{**good, arg: int(value)})  # and so are ints


def test_every_row_names_a_real_argument() -> None:
    """A misspelt argument in a row would make its checks pass for the wrong reason."""
    import inspect

    for name, fn, good, arg, _, _ in ROWS:
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # op_cost(op, **sizes)
            continue
        assert arg in params and set(good) <= set(params), name


# ------------------------------------------------------------------- the checks themselves


@pytest.mark.parametrize("value", [3, np.int64(3), np.int8(3), np.array(3), torch.tensor(3)])
def test_integer_accepts_every_integer_kind(value) -> None:
    n = check.integer("n", value, minimum=0)
    assert n == 3 and type(n) is int


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), 3.0, np.float32(3), "3", torch.tensor([3]), np.array([3])]
)
def test_integer_refuses_what_is_not_an_int(value) -> None:
    with pytest.raises(TypeError, match="^n must be an int, got"):
        check.integer("n", value)


def test_bounds_and_their_messages() -> None:
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        check.integer("n", 0, minimum=1)
    with pytest.raises(ValueError, match=r"^n must be <= 4, got 5$"):
        check.integer("n", 5, maximum=4)
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], got 1.5$"):
        check.probability("p", 1.5)
    with pytest.raises(ValueError, match=r"^p must be in \(0, 1\), got 0.0$"):
        check.probability("p", 0.0, open_low=True, open_high=True)
    with pytest.raises(ValueError, match=r"^h must be > 0, got -1.0$"):
        check.positive("h", -1)
    with pytest.raises(ValueError, match="^h must be a finite number, got inf$"):
        check.positive("h", math.inf)
    assert check.real("x", math.inf, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"^seed must be <= 4294967295"):
        check.seed("seed", 2**32)


def test_tensor_checks_in_order_and_name_the_argument() -> None:
    x = torch.zeros(3, 4)
    assert check.tensor("x", x, dtype=torch.float32, ndim=2, shape=(None, 4)) is x
    with pytest.raises(TypeError, match="^x must be a torch.Tensor, got list"):
        check.tensor("x", [1.0])
    with pytest.raises(TypeError, match="^x must have dtype float16, bfloat16, got torch.float32"):
        check.tensor("x", x, dtype=(torch.float16, torch.bfloat16))
    with pytest.raises(TypeError, match="floating-point"):
        check.tensor("x", x.long(), floating=True)
    with pytest.raises(ValueError, match=r"^x must be 3-D, got shape \(3, 4\)"):
        check.tensor("x", x, ndim=3)
    with pytest.raises(ValueError, match=r"^x must have shape \(\.\.\., n, d, k\)"):
        check.tensor("x", x, min_ndim=3, layout="(..., n, d, k)")
    with pytest.raises(ValueError, match=r"^x must have shape \(\*, 5\), got \(3, 4\)"):
        check.tensor("x", x, shape=(None, 5))
    with pytest.raises(ValueError, match="^x must be contiguous"):
        check.tensor("x", x.t(), contiguous=True)
    with pytest.raises(ValueError, match="^x must not be empty"):
        check.tensor("x", torch.zeros(0), nonempty=True)
    with pytest.raises(ValueError, match="^x must be on cuda, got a tensor on meta"):
        check.tensor("x", torch.zeros(2, device="meta"), device="cuda")


def test_array_converts_and_refuses() -> None:
    got = check.array("y", torch.tensor([1.0, 2.0], dtype=torch.bfloat16), ndim=1)
    assert got.dtype == np.float64 and got.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="^y must contain only finite values"):
        check.array("y", [1.0, math.nan], ndim=1)
    with pytest.raises(ValueError, match="^y must be positive"):
        check.array("y", [[1.0, 0.0]], ndim=None, positive=True)
    with pytest.raises(TypeError, match="^y must be an array of numbers"):
        check.array("y", "12", ndim=1)


def test_choices_generators_and_instances() -> None:
    assert check.one_of("kind", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^kind must be one of \('a', 'b'\), got 'c'"):
        check.one_of("kind", "c", ("a", "b"))
    with pytest.raises(TypeError, match="^kind must be one of"):
        check.one_of("kind", 3, ("a", "b"))
    assert check.generator("g", None) is None  # torch's default, for whichever device is used
    with pytest.raises(TypeError, match="^g must be a torch.Generator or None"):
        check.generator("g", 0)
    with pytest.raises(TypeError, match="^m must be a Module, got int: 3"):
        check.instance("m", 3, torch.nn.Module)
    with pytest.raises(TypeError, match="^flag must be True or False, got int: 1"):
        check.boolean("flag", 1)

import os
import random

import matplotlib as mpl
import numpy as np
import pytest
import torch
from hypothesis import settings
from threadpoolctl import threadpool_info, threadpool_limits

import hamlib.repro

# In CI, property tests draw the same examples every run (a red CI must be reproducible);
# locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_PINNED_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Undo what a test changed in the process's global state, so that no test depends on the
    tests before it: hamlib.setup() (which several tests call, directly or through a tool) seeds
    every generator, pins thread pools, sets print options and the figure style, and clears the
    claims; a test may also leave torch's default dtype changed."""
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    threads, pools = torch.get_num_threads(), threadpool_info()
    env = {k: os.environ.get(k) for k in _PINNED_VARS}
    np_print, torch_dtype = np.get_printoptions(), torch.get_default_dtype()
    rc = dict(mpl.rcParams.copy())
    del rc["backend"]  # as matplotlib.rc_context does: never switch backends on the way out
    claims = hamlib.repro.claims()
    yield
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if threadpool_info() != pools:
        threadpool_limits(limits={p["prefix"]: p["num_threads"] for p in pools})
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    np.set_printoptions(**np_print)
    torch.set_printoptions(profile="default")
    torch.set_default_dtype(torch_dtype)
    mpl.rcParams._update_raw(rc)  # what rc_context does on exit
    hamlib.repro._claims[:] = claims


@pytest.fixture
def classifier():
    """A small float64 MLP classifier and its data, made fresh for each call:
    ``net, x, y = classifier(seed)`` (4 inputs, 6 tanh units, 3 classes, 40 points)."""

    def make(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)
        ).double()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(40, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (40,), generator=g)
        return net, x, y

    return make

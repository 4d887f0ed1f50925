import os
import sys

import matplotlib as mpl
import numpy as np
import pytest
import torch
from hypothesis import settings
from threadpoolctl import ThreadpoolController

import hamlib.repro

# In CI, property tests draw the same examples every run (a red CI must be reproducible);
# locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_PRINT_OPTIONS = ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Undo what a test changed in the process's global state, so that no test depends on the
    tests before it: hamlib.setup() (which several tests call, directly or through a tool) seeds
    every generator, pins thread pools, sets print options and the figure style, and clears the
    claims; a test may also leave torch's default dtype changed or figures open."""
    import random

    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    threads, pools = torch.get_num_threads(), ThreadpoolController()
    pool_threads = [p.num_threads for p in pools.lib_controllers]
    env = {k: os.environ.get(k) for k in hamlib.repro.THREAD_VARS}
    np_print, torch_dtype = np.get_printoptions(), torch.get_default_dtype()
    torch_print = {k: getattr(torch._tensor_str.PRINT_OPTS, k) for k in _PRINT_OPTIONS}
    rc = dict(mpl.rcParams.copy())
    del rc["backend"]  # as matplotlib.rc_context does: never switch backends on the way out
    claims = hamlib.repro.claims()
    yield
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    if cuda_rng is not None:
        torch.cuda.set_rng_state_all(cuda_rng)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    for lib, n in zip(pools.lib_controllers, pool_threads, strict=True):
        if lib.num_threads != n:
            lib.set_num_threads(n)  # each pool by itself, even two with one prefix
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    np.set_printoptions(**np_print)
    torch.set_printoptions(**torch_print)
    torch.set_default_dtype(torch_dtype)
    mpl.rcParams._update_raw(rc)  # what rc_context does on exit (no re-validation, no warnings)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
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

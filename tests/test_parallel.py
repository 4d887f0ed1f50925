"""hamlib.parallel, each piece against a reference of its own: the ring collectives against the
sums computed here from every rank's data and against torch.distributed's, their byte counts
against the ring formula; every data-parallel strategy against one process's training, their
memory against the ZeRO accounting counted by hand (padding included); tensor parallelism
against the unsplit block; the pipeline schedules against a simulation of the stages; the
planner against its formulas written out and the published model sizes; and the launcher's
failure modes (a rank that raises, one that hangs, two clusters at once, a function that cannot
be imported), with bad input refused with a message that names the argument.

Functions that run on the workers are defined at the top of this module: spawned processes
import them by name (pytest puts tests/ on sys.path, and spawn hands sys.path to the children).
One module-scoped two-rank cluster serves the cheap multi-process tests; a four-rank cluster,
torch's own strategies, timings and torchrun are marked slow."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hamlib import parallel as P
from hamlib.transformer import Block, GPTConfig

F64 = torch.float64
STRATEGIES = ("dp", "zero1", "zero2", "zero3")
# Layer units (out x (in + 1) elements: weight and bias) of 15, 20 and 6: the first is odd, so a
# two-rank split pads it, and for four ranks the first and last are padded.
ODD = P.TrainSpec(sizes=(4, 3, 5, 1), n=8, steps=3, lr=0.05, seed=3)
GLOO_IFNAME = os.environ.get("GLOO_SOCKET_IFNAME")  # as the session started
A100 = P.Hardware(
    "A100-80GB", 80e9, 312e12, P.Link("NVLink3", 5e-6, 300e9), P.Link("IB HDR", 5e-6, 25e9)
)


# ----------------------------------------------------------------------------- run on the ranks


def _echo(comm: P.Comm, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        "rank": comm.rank,
        "world": comm.world,
        "args": args,
        "kwargs": kwargs,
        "pid": os.getpid(),
        "sent": comm.sent,
        "calls": dict(comm.calls),
        "threads": torch.get_num_threads(),
        "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
    }


def _rank_tensor(shape: tuple[int, ...], seed: int, rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * seed + rank)
    return torch.randn(shape, generator=g, dtype=F64)


def _collectives(comm: P.Comm, shape: tuple[int, ...], seed: int, root: int) -> dict[str, Any]:
    """Every hand-written collective on this rank's own data, with the bytes sent and the calls
    counted by each, and torch's all-reduce of the same data."""
    x = _rank_tensor(shape, seed, comm.rank)
    before = x.clone()
    shard = _rank_tensor((comm.chunk(x.numel()),), seed + 1, comm.rank)
    out: dict[str, Any] = {}
    for name, call in (
        ("all_reduce", lambda: comm.all_reduce(x)),
        ("reduce_scatter", lambda: comm.reduce_scatter(x)),
        ("all_gather", lambda: comm.all_gather(shard)),
        ("broadcast", lambda: comm.broadcast(x, root=root)),
        ("all_reduce_naive", lambda: comm.all_reduce_naive(x, root=root)),
    ):
        comm.reset()
        out[name] = call()
        out[f"sent_{name}"] = comm.sent
        out[f"calls_{name}"] = dict(comm.calls)
    ref = x.clone()
    dist.all_reduce(ref)
    out["torch_all_reduce"] = ref
    out["input_unchanged"] = torch.equal(x, before)
    return out


def _ring_shift(comm: P.Comm, n: int) -> dict[str, Any]:
    """Each rank sends n numbers to the next rank and receives the previous rank's."""
    x = torch.arange(n, dtype=F64) + 100.0 * comm.rank
    work = comm.send(x, (comm.rank + 1) % comm.world)
    got = comm.recv((n,), F64, (comm.rank - 1) % comm.world)
    work.wait()
    return {"got": got, "sent": comm.sent, "calls": dict(comm.calls)}


def _shout(comm: P.Comm, text: str) -> int:
    print(f"{text} on stdout from rank {comm.rank}", flush=True)
    print(f"{text} on stderr from rank {comm.rank}", file=sys.stderr, flush=True)
    return comm.rank


def _unpicklable(comm: P.Comm) -> Any:
    return lambda: comm.rank


def _fail_on(comm: P.Comm, rank: int, message: str) -> int:
    """``rank`` raises; the others wait in an all-reduce that needs it (forever, alone)."""
    if comm.rank == rank:
        raise RuntimeError(message)
    comm.all_reduce(torch.ones(3, dtype=F64))
    return comm.rank


def _sleep_on(comm: P.Comm, rank: int, seconds: float) -> int:
    if comm.rank == rank:
        time.sleep(seconds)
    return comm.rank


def _recv_never(comm: P.Comm) -> int:
    """Rank 0 waits for a message that rank 1 never sends."""
    if comm.rank == 0:
        comm.recv((1,), F64, 1)
    return comm.rank


def _tp_block(comm: P.Comm, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """This rank's TensorParallelBlock of the seeded Block: output, input gradient, weight and
    norm gradients, and the collectives called in the forward pass and in all."""
    torch.manual_seed(seed)
    block = Block(GPTConfig(**config)).double()
    x, up = _tp_data(config, seed)
    tp = P.TensorParallelBlock(block, comm)
    xt = x.clone().requires_grad_()
    comm.reset()
    out = tp(xt)
    forward = dict(comm.calls)
    (out * up).sum().backward()
    names = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
    grads = {n: getattr(tp, n).grad for n in names if getattr(tp, n) is not None}
    for i in (1, 2):
        for k, p in getattr(tp, f"norm{i}").named_parameters():
            grads[f"norm{i}.{k}"] = p.grad
    return {
        "out": out.detach(),
        "x_grad": xt.grad,
        "grads": grads,
        "forward": forward,
        "all": dict(comm.calls),
    }


def _tp_data(config: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    d = config.get("d_model", 64)
    return tuple(torch.randn(2, 6, d, generator=g, dtype=F64) for _ in range(2))  # type: ignore


# ----------------------------------------------------------------------------- references by hand


def _units(sizes: tuple[int, ...]) -> list[int]:
    """Elements of each layer's flat (weight, bias) unit."""
    return [o * (i + 1) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]


def _pad(n: int, world: int) -> int:
    return world * math.ceil(n / world)


def _held_by_hand(strategy: str, sizes: tuple[int, ...], world: int, itemsize: int = 8) -> dict:
    """What a rank holds at the end of backward, in bytes. The flat buffers of params (and the
    shards cut from them) are padded to N equal chunks; the per-parameter gradients that
    backward makes (dp, zero1) and dp's Adam moments (per parameter) are not."""
    psi = sum(_units(sizes))
    padded = sum(_pad(u, world) for u in _units(sizes))
    shard = padded // world
    elements = {
        "dp": (padded, psi, 2 * psi),
        "zero1": (padded, psi, 2 * shard),
        "zero2": (padded, shard, 2 * shard),
        "zero3": (shard, shard, 2 * shard),
    }[strategy]
    return {
        k: v * itemsize for k, v in zip(("params", "grads", "optimizer"), elements, strict=True)
    }


def _reference_training(spec: P.TrainSpec) -> tuple[list[torch.Tensor], list[float]]:
    """The spec's training written with nn.Linear layers and torch.optim.Adam."""
    x, y = P.regression_data(spec.n, spec.sizes, spec.seed + 1, spec.dtype)
    init = P.mlp_init(spec.sizes, spec.seed, spec.dtype)
    layers: list[nn.Module] = []
    for w, b in zip(init[::2], init[1::2], strict=True):
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=spec.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers += [lin, nn.Tanh()]
    net = nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    losses = []
    for _ in range(spec.steps):
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return [p.detach() for p in net.parameters()], losses


def _simulate(kind: str, p: int, m: int, tf: float = 1.0, tb: float = 1.0) -> tuple[float, dict]:
    """Run every stage's pipeline_schedule in order, each op as soon as its input has arrived
    (F i on stage s needs F i of stage s - 1; B i needs B i of stage s + 1); returns the idle
    share of the step and each op's end time. Fails if the schedules deadlock."""
    schedules = [P.pipeline_schedule(kind, p, m, s) for s in range(p)]  # type: ignore[arg-type]
    pos, free, done = [0] * p, [0.0] * p, {}
    moved = True
    while moved:
        moved = False
        for s in range(p):
            while pos[s] < len(schedules[s]):
                op, i = schedules[s][pos[s]]
                dep = (op, i, s - 1) if op == "F" else (op, i, s + 1)
                if not 0 <= dep[2] < p:
                    dep = None
                if dep is not None and dep not in done:
                    break
                start = max(free[s], done[dep] if dep else 0.0)
                free[s] = done[(op, i, s)] = start + (tf if op == "F" else tb)
                pos[s] += 1
                moved = True
    assert pos == [2 * m] * p, f"deadlock: {kind} p={p} m={m} stopped at {pos}"
    return 1 - m * (tf + tb) / max(free), done


def _params_by_hand(layers: int, hidden: int, vocab: int, seq: int) -> int:
    """A GPT's weights counted matrix by matrix: per layer QKV (3h^2 + 3h), the attention output
    (h^2 + h), the 4h MLP (8h^2 + 5h) and two layer norms (4h); the token and position tables."""
    h = hidden
    per_layer = (3 * h * h + 3 * h) + (h * h + h) + (4 * h * h + 4 * h) + (4 * h * h + h) + 4 * h
    return layers * per_layer + vocab * h + seq * h


def _flops_by_hand(batch: int, seq: int, layers: int, hidden: int, vocab: int, recompute: bool):
    """Matmul FLOPs: per layer forward QKV 6Bsh^2, scores and their use 4Bs^2h, output 2Bsh^2,
    MLP 16Bsh^2; logits 2BshV. Backward is twice the forward; recompute adds the layers'
    forward once more (not the logits')."""
    b, s, h = batch, seq, hidden
    layer = 6 * b * s * h * h + 4 * b * s * s * h + 2 * b * s * h * h + 16 * b * s * h * h
    return (4 if recompute else 3) * layers * layer + 3 * 2 * b * s * h * vocab


def _ring_seconds(kind: str, nbytes: float, n: int, alpha: float, bw: float) -> float:
    if n == 1:
        return 0.0
    messages = 2 * (n - 1) if kind == "all_reduce" else n - 1
    return messages * alpha + messages * (nbytes / n) / bw


# ----------------------------------------------------------------------------- the fixture


@pytest.fixture(scope="module")
def _clusters():
    held: dict[int, P.Cluster] = {}
    yield held
    for c in held.values():
        c.close()


@pytest.fixture
def cluster(_clusters):
    """Two ranks, started once for the module (and again only if a failing test stopped them,
    so that one failure does not fail every test after it)."""
    if 2 not in _clusters or _clusters[2].closed:
        _clusters[2] = P.Cluster(2)
    return _clusters[2]


def _gone(pid: int, created: float, within: float = 5.0) -> bool:
    """The process `pid` (started at `created`) has exited and been reaped (a later process that
    reuses the pid does not count)."""
    deadline = time.monotonic() + within
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() != created:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ----------------------------------------------------------------------------- the launcher


def test_run_calls_fn_on_every_rank_and_returns_results_in_rank_order(cluster) -> None:
    out = cluster.run(_echo, 1, [2, 3], key="value")
    assert [o["rank"] for o in out] == [0, 1]
    assert all(o["world"] == 2 and o["args"] == (1, [2, 3]) for o in out)
    assert all(o["kwargs"] == {"key": "value"} for o in out)
    assert sorted(o["pid"] for o in out) == sorted(cluster.pids) and len(set(cluster.pids)) == 2
    assert os.getpid() not in cluster.pids
    # workers use the asked-for thread count and gloo the loopback interface (unless the user
    # chose one); the parent's environment is left as it was
    assert all(o["threads"] == 1 for o in out)
    assert all(o["gloo_ifname"] in ("lo", "lo0") for o in out)  # whatever the parent has
    assert os.environ.get("GLOO_SOCKET_IFNAME") == GLOO_IFNAME


def test_counters_start_from_zero_on_every_run(cluster) -> None:
    cluster.run(_collectives, (5,), 0, 0)
    out = cluster.run(_echo)
    assert all(o["sent"] == 0 and o["calls"] == {} for o in out)


def test_worker_sockets_listen_on_the_loopback_only(cluster) -> None:
    cluster.run(_collectives, (4,), 0, 0)  # connections made
    for pid in cluster.pids:
        conns = psutil.Process(pid).net_connections(kind="inet")
        listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
        assert all(c.laddr.ip == "127.0.0.1" for c in listening), listening
        assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in conns), conns


def test_worker_output_goes_to_its_log_not_to_the_parents_streams(cluster, capfd) -> None:
    assert cluster.run(_shout, "hello 1729") == [0, 1]
    for rank in (0, 1):
        log = cluster.log(rank)
        assert f"hello 1729 on stdout from rank {rank}" in log
        assert f"hello 1729 on stderr from rank {rank}" in log
        assert f"from rank {1 - rank}" not in log
        assert cluster.log(rank, chars=10) == log[-10:]
    out, err = capfd.readouterr()
    assert "hello 1729" not in out + err
    with pytest.raises(ValueError, match="rank must be <= 1"):
        cluster.log(2)
    with pytest.raises(TypeError, match="rank must be an int"):
        cluster.log("0")


def _nested_fn() -> Any:
    def inner(comm: P.Comm) -> int:
        return comm.rank

    return inner


def _from_main(comm: P.Comm) -> int:
    return comm.rank


@pytest.mark.parametrize(
    "fn",
    [lambda comm: comm.rank, _nested_fn(), "a_module_level_from_main"],
    ids=["lambda", "nested", "main"],
)
def test_run_refuses_a_function_it_cannot_import_before_sending_anything(cluster, fn) -> None:
    if fn == "a_module_level_from_main":
        fn = _from_main
        fn.__module__ = "__main__"  # as a notebook's function
    try:
        with pytest.raises(TypeError, match="fn must be a function defined at the top level"):
            cluster.run(fn)
    finally:
        _from_main.__module__ = __name__
    with pytest.raises(TypeError, match="fn must be callable"):
        cluster.run(3)
    # nothing was queued: the next run gets its own results, and the cluster is still open
    assert [o["args"] for o in cluster.run(_echo, "next")] == [("next",), ("next",)]
    assert not cluster.closed


@pytest.mark.slow
def test_two_clusters_at_once_both_work_and_a_hanging_rank_is_stopped(
    cluster, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    other = P.Cluster(2, timeout=3)
    try:
        assert not set(other.pids) & set(cluster.pids)
        assert len(list(tmp_path.iterdir())) == 1  # its file store's folder
        # both alive at once, used in turn, each right
        for c in (other, cluster, other):
            for o in c.run(P.collectives_check, 9):
                assert o["all_reduce"] < 1e-15 and o["broadcast"] == 0
        created = [psutil.Process(pid).create_time() for pid in other.pids]
        with pytest.raises(P.ParallelError, match=r"ranks \[1\] did not finish within 3 s"):
            other.run(_sleep_on, 1, 60.0)
        assert all(_gone(pid, t) for pid, t in zip(other.pids, created, strict=True))
        assert other.closed
        assert list(tmp_path.iterdir()) == []  # the store removed
    finally:
        other.close()
    # the first cluster is unaffected
    assert [o["rank"] for o in cluster.run(_echo)] == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "world, fn, args",
    [(1, _sleep_on, (0, 60.0)), (2, _sleep_on, (0, 60.0)), (2, _recv_never, ())],
    ids=["one-rank-sleeps", "rank-0-sleeps", "recv-never-comes"],
)
def test_a_hanging_rank_times_out_and_leaves_no_process(world: int, fn, args) -> None:
    c = P.Cluster(world, timeout=3)
    try:
        created = [psutil.Process(pid).create_time() for pid in c.pids]
        t0 = time.monotonic()
        # the parent's deadline, or rank 0's own receive timing out first
        with pytest.raises(
            P.ParallelError, match=r"ranks \[\d\] did not finish within 3 s|rank 0 failed"
        ):
            c.run(fn, *args)
        assert time.monotonic() - t0 < 10
        assert all(_gone(pid, t) for pid, t in zip(c.pids, created, strict=True))
        assert c.closed
        with pytest.raises(P.ParallelError, match="closed"):
            c.run(_echo)
    finally:
        c.close()


@pytest.mark.slow
def test_an_unpicklable_result_fails_at_once_with_the_pickling_error() -> None:
    with P.Cluster(1, timeout=30) as c:
        t0 = time.monotonic()
        with pytest.raises(P.ParallelError, match=r"(?s)rank 0 failed in _unpicklable.*pickle"):
            c.run(_unpicklable)
        assert time.monotonic() - t0 < 10 and c.closed


def test_an_unpicklable_argument_is_refused_at_once_and_the_cluster_stays_usable(cluster) -> None:
    t0 = time.monotonic()
    with pytest.raises(TypeError, match="picklable"):
        cluster.run(_echo, threading.Lock())
    assert time.monotonic() - t0 < 2 and not cluster.closed
    assert cluster.run(_echo, 7)[1]["args"] == (7,)


@pytest.mark.slow
def test_close_stops_the_workers_politely_and_the_context_manager_closes() -> None:
    with P.Cluster(1) as c:
        assert c.run(_echo, 5)[0]["args"] == (5,) and c.run(_echo)[0]["world"] == 1
        procs = {pid: psutil.Process(pid).create_time() for pid in c.pids}
    assert c.closed and all(_gone(pid, t) for pid, t in procs.items())
    with pytest.raises(P.ParallelError, match="closed"):
        c.run(_echo)


_ORPHAN = """
import os, sys
from hamlib import parallel as P
if __name__ == "__main__":
    c = P.Cluster(1)
    print(*c.pids, flush=True)
    if sys.argv[1] == "die":
        os.kill(os.getpid(), 9)  # the parent dies without cleaning up
    # "leave": exit without close(), atexit must stop the workers
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["die", "leave"])
def test_workers_do_not_outlive_their_parent(tmp_path, how: str) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN)
    store = tmp_path / "tmp"  # where the cluster's store goes (a killed parent leaves it)
    store.mkdir()
    proc = subprocess.run(
        [sys.executable, str(script), how],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TMPDIR=str(store)),
    )
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 1, proc.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE:
                break  # exited; reaping is its new parent's business
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {pids[0]} still running after its parent ({how})")
    if how == "leave":  # atexit closed the cluster: its store is gone too
        assert list(store.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"world_size": 0}, ValueError, "world_size must be >= 1"),
        ({"world_size": 65}, ValueError, "world_size must be <= 64"),
        ({"world_size": 2.0}, TypeError, "world_size must be an int"),
        ({"world_size": 2, "timeout": 0}, ValueError, "timeout must be > 0"),
        ({"world_size": 2, "timeout": math.nan}, ValueError, "timeout"),
        ({"world_size": 2, "threads": 0}, ValueError, "threads must be >= 1"),
    ],
)
def test_cluster_rejects_bad_arguments_before_starting_anything(kwargs, exc, match) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(exc, match=match):
        P.Cluster(**kwargs)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


# ----------------------------------------------------------------------------- collectives


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (1000,)])
def test_collectives_equal_the_sums_of_every_ranks_data_and_torch(cluster, shape) -> None:
    world, n, root = 2, math.prod(shape), 1
    out = cluster.run(_collectives, shape, 7, root)
    xs = [_rank_tensor(shape, 7, r) for r in range(world)]
    total = xs[0] + xs[1]  # two terms: the same sum in any order
    c = math.ceil(n / world)
    padded = torch.zeros(world * c, dtype=F64)
    padded[:n] = total.reshape(-1)
    shards = [_rank_tensor((c,), 8, r) for r in range(world)]
    for r, o in enumerate(out):
        assert o["all_reduce"].shape == shape and torch.equal(o["all_reduce"], total)
        assert torch.equal(o["all_reduce"], o["torch_all_reduce"])
        assert torch.equal(o["reduce_scatter"], padded[r * c : (r + 1) * c])
        assert torch.equal(o["all_gather"], torch.cat(shards))
        assert torch.equal(o["broadcast"], xs[root])
        assert torch.equal(o["all_reduce_naive"], total)
        assert o["input_unchanged"]
        for kind in ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_reduce_naive"):
            assert o[f"calls_{kind}"] == {kind: 1}


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_ring_bytes_are_what_the_ranks_send(cluster, n: int) -> None:
    world = 2
    out = cluster.run(_collectives, (n,), 1, 0)
    c = math.ceil(n / world)
    for o in out:
        assert o["sent_all_reduce"] == P.ring_bytes("all_reduce", n, world, 8)
        assert o["sent_reduce_scatter"] == P.ring_bytes("reduce_scatter", n, world, 8)
        assert o["sent_all_gather"] == P.ring_bytes("all_gather", world * c, world, 8)
        assert o["sent_all_reduce"] == 2 * (world - 1) * c * 8
    # the chain of a broadcast: every rank but the last sends the tensor once
    assert [o["sent_broadcast"] for o in out] == [8 * n, 0]
    # the naive all-reduce: each rank sends x to the root, which sends the sum to each
    assert [o["sent_all_reduce_naive"] for o in out] == [(world - 1) * 8 * n, 8 * n]
    if n % world == 0:  # the lower bound 2(N-1)/N n, met exactly
        assert out[0]["sent_all_reduce"] == 2 * (world - 1) / world * n * 8


def test_send_and_recv_carry_a_tensor_and_count_its_bytes(cluster) -> None:
    out = cluster.run(_ring_shift, 5)
    for r, o in enumerate(out):
        assert torch.equal(o["got"], torch.arange(5, dtype=F64) + 100.0 * ((r - 1) % 2))
        assert o["sent"] == 5 * 8 and o["calls"] == {}


@pytest.mark.parametrize("n", [1, 100, 101])
def test_collectives_check_finds_no_difference(cluster, n: int) -> None:
    for o in cluster.run(P.collectives_check, n, 3):
        for key in (
            "all_reduce",
            "all_reduce_vs_reduce_scatter",
            "all_gather_vs_all_reduce",
            "all_gather",
            "broadcast",
            "naive",
        ):
            assert o[key] <= 1e-15 * o["scale_all_reduce"], key
        assert o["n"] == n and o["element_size"] == 8
        assert o["sent_all_reduce"] == P.ring_bytes("all_reduce", n, 2, 8)
        assert o["sent_reduce_scatter"] == P.ring_bytes("reduce_scatter", n, 2, 8)
        assert o["sent_naive"] == 8 * n  # two ranks: one message each way


def test_ring_bytes_is_the_formula() -> None:
    for world in (1, 2, 3, 4, 7, 8):
        for n in (0, 1, 5, 12, 1000, 1001):
            c = -(-n // world)
            assert P.ring_bytes("all_reduce", n, world, 2) == 2 * (world - 1) * c * 2
            assert P.ring_bytes("reduce_scatter", n, world, 4) == (world - 1) * c * 4
            assert P.ring_bytes("all_gather", n, world) == (world - 1) * c * 4
            if n % world == 0:
                assert P.ring_bytes("all_reduce", n, world, 1) == 2 * (world - 1) * n // world


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (("broadcast", 4, 2), ValueError, "kind must be one of"),
        (("all_reduce", -1, 2), ValueError, "n must be >= 0"),
        (("all_reduce", 4.0, 2), TypeError, "n must be an int"),
        (("all_reduce", 4, 0), ValueError, "world must be >= 1"),
        (("all_reduce", 4, 2, 0), ValueError, "element_size must be >= 1"),
    ],
)
def test_ring_bytes_rejects_bad_input(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        P.ring_bytes(*args)


def test_a_one_rank_comm_needs_no_messages_and_chunks_round_up() -> None:
    comm = P.Comm(0, 1)
    x = torch.randn(3, 4, dtype=F64)
    assert torch.equal(comm.all_reduce(x), x) and torch.equal(comm.reduce_scatter(x), x.reshape(-1))
    assert torch.equal(comm.all_gather(x.reshape(-1)), x.reshape(-1))
    assert torch.equal(comm.broadcast(x), x) and torch.equal(comm.all_reduce_naive(x), x)
    assert comm.sent == 0
    assert comm.calls == {
        "all_reduce": 1,
        "reduce_scatter": 1,
        "all_gather": 1,
        "broadcast": 1,
        "all_reduce_naive": 1,
    }
    comm.reset()
    assert comm.sent == 0 and comm.calls == {}
    for world in (1, 2, 3, 8):
        for n in (0, 1, 7, 8, 9, 64):
            assert P.Comm(0, world).chunk(n) == math.ceil(n / world)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c: c.all_reduce([1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
        (lambda c: c.reduce_scatter("x"), TypeError, "x must be a torch.Tensor"),
        (lambda c: c.all_gather(torch.ones(2, 2)), ValueError, "shard must be 1-D"),
        (lambda c: c.all_gather(torch.tensor(1.0)), ValueError, "shard must be 1-D"),
        (lambda c: c.broadcast(torch.ones(2), root=2), ValueError, "root must be <= 1"),
        (lambda c: c.broadcast(torch.ones(2), root=-1), ValueError, "root must be >= 0"),
        (lambda c: c.broadcast(torch.ones(2), root=1.0), TypeError, "root must be an int"),
        (lambda c: c.all_reduce_naive("x"), TypeError, "x must be a torch.Tensor"),
        (lambda c: c.all_reduce_naive(torch.ones(2), root=2), ValueError, "root must be <= 1"),
    ],
)
def test_comm_rejects_bad_input_before_sending(call, exc, match) -> None:
    comm = P.Comm(0, 2)  # no process group: a check that came after a message would fail
    with pytest.raises(exc, match=match):
        call(comm)
    assert comm.sent == 0


# ----------------------------------------------------------------------------- the MLP and its data


def test_mlp_init_has_linears_shapes_and_scale_and_is_seeded() -> None:
    sizes = (5, 300, 2)
    ps = P.mlp_init(sizes, seed=4)
    assert [tuple(p.shape) for p in ps] == [(300, 5), (300,), (2, 300), (2,)]
    assert all(p.dtype == F64 for p in ps)
    for w, b in zip(ps[::2], ps[1::2], strict=True):
        bound = w.shape[1] ** -0.5  # nn.Linear's: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        for t in (w, b):
            assert t.abs().max() <= bound
            assert t.numel() < 100 or t.abs().max() > 0.9 * bound
        # the variance of U(-a, a), a^2 / 3
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.1)
    again, other = P.mlp_init(sizes, seed=4), P.mlp_init(sizes, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(ps, again, strict=True))
    assert not torch.equal(ps[0], other[0])
    assert P.mlp_init([2, 3], dtype=torch.float32)[0].dtype == torch.float32


def test_mlp_forward_is_tanh_layers_with_a_linear_last_one() -> None:
    ps = P.mlp_init((3, 4, 5, 2), seed=1)
    x = torch.randn(6, 3, dtype=F64)
    h1 = torch.tanh(x @ ps[0].T + ps[1])
    h2 = torch.tanh(h1 @ ps[2].T + ps[3])
    out = h2 @ ps[4].T + ps[5]
    assert torch.allclose(P.mlp_forward(ps, x), out, rtol=1e-14, atol=1e-15)
    assert torch.allclose(P.mlp_forward(ps, x, last=False), torch.tanh(out), atol=1e-15)
    # a pipeline's stages compose to the whole network
    stage = P.mlp_forward(ps[4:], P.mlp_forward(ps[:4], x, last=False))
    assert torch.allclose(stage, out, atol=1e-15)


def test_regression_data_is_a_teacher_plus_noise() -> None:
    sizes = (3, 8, 2)
    x, y = P.regression_data(2000, sizes, seed=5)
    assert x.shape == (2000, 3) and y.shape == (2000, 2) and x.dtype == y.dtype == F64
    teacher = P.mlp_init(sizes, 5 + 1000)
    noise = y - P.mlp_forward([2 * t for t in teacher], x)
    assert noise.std().item() == pytest.approx(0.1, rel=0.05)
    assert abs(noise.mean().item()) < 0.01 and x.std().item() == pytest.approx(1.0, rel=0.05)
    x2, y2 = P.regression_data(2000, sizes, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, P.regression_data(2000, sizes, seed=6)[0])


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: P.mlp_init([3]), ValueError, "sizes needs at least two widths"),
        (lambda: P.mlp_init([3, 0]), ValueError, r"sizes\[i\] must be >= 1"),
        (lambda: P.mlp_init([3, 2.0]), TypeError, r"sizes\[i\] must be an int"),
        (lambda: P.mlp_init([3, 2], seed=-1), ValueError, "seed"),
        (lambda: P.regression_data(0, [3, 2]), ValueError, "n must be >= 1"),
        (lambda: P.regression_data(4, [3, 2], seed=-5), ValueError, "seed"),
        (lambda: P.regression_data(4, [3]), ValueError, "sizes needs at least two widths"),
        (lambda: P.TrainSpec(sizes=(4,)), ValueError, "sizes needs at least two widths"),
        (lambda: P.TrainSpec(sizes=(4, 0)), ValueError, r"sizes\[i\] must be >= 1"),
        (lambda: P.TrainSpec(n=0), ValueError, "n must be >= 1"),
        (lambda: P.TrainSpec(steps=0), ValueError, "steps must be >= 1"),
        (lambda: P.TrainSpec(lr=0.0), ValueError, "lr must be > 0"),
        (lambda: P.TrainSpec(lr=math.nan), ValueError, "lr"),
        (lambda: P.TrainSpec(dtype=torch.float16), ValueError, "dtype must be one of"),
        (lambda: P.train_reference("spec"), TypeError, "spec must be a TrainSpec"),
    ],
)
def test_mlp_helpers_and_train_spec_reject_bad_input(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


def test_train_spec_keeps_sizes_as_a_tuple() -> None:
    spec = P.TrainSpec(sizes=[2, 3, 1])  # type: ignore[arg-type]
    assert spec.sizes == (2, 3, 1) and hash(spec) == hash(P.TrainSpec(sizes=(2, 3, 1)))


def test_train_reference_is_adam_on_nn_linear_and_its_first_step_is_lr_sign() -> None:
    spec = P.TrainSpec(sizes=(3, 6, 2), n=16, steps=4, lr=0.02, seed=2)
    ref = P.train_reference(spec)
    params, losses = _reference_training(spec)
    assert len(ref["losses"]) == 4 and ref["losses"] == pytest.approx(losses, rel=1e-13)
    for a, b in zip(ref["params"], params, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    # Adam's first step (bias-corrected moments g and g^2) moves every weight by
    # -lr g / (|g| + eps), eps = 1e-8: nearly lr sign(g)
    one = P.train_reference(P.TrainSpec(sizes=(3, 6, 2), n=16, steps=1, lr=0.02, seed=2))
    init = [t.requires_grad_() for t in P.mlp_init(spec.sizes, spec.seed)]
    x, y = P.regression_data(spec.n, spec.sizes, spec.seed + 1)
    ((P.mlp_forward(init, x) - y) ** 2).mean().backward()
    for p, p0 in zip(one["params"], init, strict=True):
        assert p0.grad is not None
        step = -0.02 * p0.grad / (p0.grad.abs() + 1e-8)
        assert torch.allclose(p - p0.detach(), step, rtol=1e-9, atol=1e-17)


# ----------------------------------------------------------------------------- data parallel


@pytest.fixture(scope="module")
def odd_reference() -> dict[str, Any]:
    return P.train_reference(ODD)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_exactly_as_one_process(cluster, odd_reference, strategy: str) -> None:
    out = cluster.run(P.train, strategy, ODD)
    for o in out:
        assert len(o["params"]) == len(odd_reference["params"])
        for a, b in zip(o["params"], odd_reference["params"], strict=True):
            assert a.shape == b.shape and (a - b).abs().max().item() < 1e-12
    # each rank's loss is its half's: their mean is the whole batch's
    mean = [(a + b) / 2 for a, b in zip(out[0]["losses"], out[1]["losses"], strict=True)]
    assert mean == pytest.approx(odd_reference["losses"], rel=1e-12)
    assert out[0]["losses"] != out[1]["losses"]  # the ranks did see different halves


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_holds_the_zero_accounting_and_sends_the_ring_bytes(cluster, strategy) -> None:
    world, units = 2, _units(ODD.sizes)
    out = cluster.run(P.train, strategy, ODD)
    ring = sum(P.ring_bytes("all_reduce", u, world, 8) for u in units)  # dp's all-reduces
    gather = sum(P.ring_bytes("all_gather", _pad(u, world), world, 8) for u in units)
    calls = {
        "dp": {"all_reduce": 3},
        "zero1": {"reduce_scatter": 3, "all_gather": 3},
        "zero2": {"reduce_scatter": 3, "all_gather": 3},
        "zero3": {"reduce_scatter": 3, "all_gather": 6},
    }[strategy]
    for o in out:
        assert o["held"] == _held_by_hand(strategy, ODD.sizes, world)
        assert o["calls"] == calls
        # zero1 and zero2 send what dp sends; zero3 gathers twice: 1.5 times as much
        assert o["sent"] == (1.5 * ring if strategy == "zero3" else ring)
        assert o["sent"] == (ring + gather if strategy == "zero3" else ring)


def test_zero_stages_hold_less_and_less(cluster) -> None:
    spec = P.TrainSpec(sizes=(8, 16, 4), n=4, steps=2)  # Adam's moments exist from step 1
    held = {s: cluster.run(P.train, s, spec)[0]["held"] for s in STRATEGIES}
    total = {s: sum(h.values()) for s, h in held.items()}
    assert total["dp"] > total["zero1"] > total["zero2"] > total["zero3"]
    # no padding here: (1 + 1 + 2) / N of dp's
    assert total["zero3"] * 2 == total["dp"]
    assert held["zero1"]["optimizer"] * 2 == held["dp"]["optimizer"]


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda c: P.train(c, "zero4", ODD), ValueError, "strategy must be one of"),
        (lambda c: P.train(c, "dp", {"n": 8}), TypeError, "spec must be a TrainSpec"),
        (lambda c: P.train(c, "dp", P.TrainSpec(n=7)), ValueError, r"spec.n \(7\)"),
        (lambda c: P.collectives_check(c, 0), ValueError, "n must be >= 1"),
        (lambda c: P.collectives_check(c, 4, -1), ValueError, "seed"),
        (lambda c: P.time_all_reduce(c, [10], 0), ValueError, "repeats must be >= 1"),
        (lambda c: P.time_all_reduce(c, [0]), ValueError, r"sizes\[i\] must be >= 1"),
        (lambda c: P.ddp_overlap(c, width=0), ValueError, "width must be >= 1"),
        (lambda c: P.ddp_overlap(c, depth=0), ValueError, "depth must be >= 1"),
        (lambda c: P.ddp_overlap(c, bucket_cap_mb=0), ValueError, "bucket_cap_mb must be > 0"),
    ],
)
def test_rank_functions_reject_bad_input_before_communicating(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call(P.Comm(0, 2))


# ----------------------------------------------------------------------------- tensor parallel

TP_CONFIGS = {
    "gelu-rope": dict(vocab_size=10, d_model=32, n_heads=4, positions="rope"),
    "swiglu-gqa": dict(
        vocab_size=10,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        ffn="swiglu",
        d_hidden=84,
        norm_type="rms",
    ),
}


def _tp_reference(config: dict[str, Any], seed: int) -> tuple[Block, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    block = Block(GPTConfig(**config)).double()
    x, up = _tp_data(config, seed)
    xr = x.clone().requires_grad_()
    out = block(xr)
    (out * up).sum().backward()
    return block, out.detach(), xr.grad  # type: ignore[return-value]


@pytest.mark.parametrize("name", TP_CONFIGS)
def test_tensor_parallel_block_equals_the_block_with_two_all_reduces_each_way(cluster, name):
    config, world = TP_CONFIGS[name], 2
    out = cluster.run(_tp_block, config, 11)
    block, ref, ref_x_grad = _tp_reference(config, 11)
    attn, ffn = block.attn, block.ffn
    hd = attn.head_dim
    q, kv, hidden = (
        attn.n_heads // world * hd,
        attn.n_kv_heads // world * hd,
        ffn.w1.out_features // world,
    )
    for r, o in enumerate(out):
        assert (o["out"] - ref).abs().max() < 1e-13 and (
            o["x_grad"] - ref_x_grad
        ).abs().max() < 1e-13
        want = {
            "wq": attn.q_proj.weight.grad[r * q : (r + 1) * q],
            "wk": attn.k_proj.weight.grad[r * kv : (r + 1) * kv],
            "wv": attn.v_proj.weight.grad[r * kv : (r + 1) * kv],
            "wo": attn.o_proj.weight.grad[:, r * q : (r + 1) * q],
            "w1": ffn.w1.weight.grad[r * hidden : (r + 1) * hidden],
            "w2": ffn.w2.weight.grad[:, r * hidden : (r + 1) * hidden],
        }
        if ffn.w3 is not None:
            want["w3"] = ffn.w3.weight.grad[r * hidden : (r + 1) * hidden]
        for i in (1, 2):  # the norms are whole on every rank, and so are their gradients
            for k, p in getattr(block, f"norm{i}").named_parameters():
                want[f"norm{i}.{k}"] = p.grad
        assert set(o["grads"]) == set(want)
        for key, g in want.items():
            assert o["grads"][key].shape == g.shape and (o["grads"][key] - g).abs().max() < 1e-13, (
                key
            )
        assert o["forward"] == {"all_reduce": 2} and o["all"] == {"all_reduce": 4}


@pytest.mark.parametrize("name", TP_CONFIGS)
def test_tensor_parallel_check_reports_equality_and_halved_weights(cluster, name) -> None:
    for o in cluster.run(P.tensor_parallel_check, TP_CONFIGS[name], 2, 8, 5):
        for key in ("output", "input_grad", "weight_grads"):
            assert o[key] < 1e-13 * max(1.0, o["scale"]), key
        assert o["forward_all_reduces"] == 2 and o["backward_all_reduces"] == 2
        assert o["all_gathers"] == 0
        assert o["weights_rank"] * 2 == o["weights_full"]
        assert 0 < o["saved_rank"] < o["saved_full"]


@pytest.mark.parametrize("name", TP_CONFIGS)
def test_tensor_parallel_check_on_one_rank_finds_the_block_itself(name) -> None:
    o = P.tensor_parallel_check(P.Comm(0, 1), TP_CONFIGS[name], 2, 5, 1)
    assert o["output"] == o["input_grad"] == o["weight_grads"] == 0
    assert o["saved_rank"] == o["saved_full"] and o["weights_rank"] == o["weights_full"]
    assert (o["forward_all_reduces"], o["backward_all_reduces"], o["all_gathers"]) == (2, 2, 0)


def test_a_one_rank_tensor_parallel_block_is_the_block() -> None:
    config = TP_CONFIGS["gelu-rope"]
    torch.manual_seed(0)
    block = Block(GPTConfig(**config)).double()
    x = torch.randn(2, 5, 32, dtype=F64)
    tp = P.TensorParallelBlock(block, P.Comm(0, 1))
    assert torch.allclose(tp(x), block(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (
            lambda: P.TensorParallelBlock(nn.Linear(2, 2), P.Comm(0, 2)),
            TypeError,
            "block must be a Block",
        ),
        (
            lambda: P.TensorParallelBlock(Block(GPTConfig(vocab_size=4)), "comm"),
            TypeError,
            "comm must be a Comm",
        ),
        (
            lambda: P.TensorParallelBlock(
                Block(GPTConfig(vocab_size=4, norm="post")), P.Comm(0, 2)
            ),
            ValueError,
            "block must be pre-norm",
        ),
        (
            lambda: P.TensorParallelBlock(
                Block(GPTConfig(vocab_size=4, attention="temperature")), P.Comm(0, 2)
            ),
            ValueError,
            "softmax attention",
        ),
        (
            lambda: P.TensorParallelBlock(
                Block(GPTConfig(vocab_size=4, d_model=24, n_heads=3)), P.Comm(0, 2)
            ),
            ValueError,
            r"n_heads \(3\)",
        ),
        (
            lambda: P.TensorParallelBlock(
                Block(GPTConfig(vocab_size=4, n_heads=4, n_kv_heads=1)), P.Comm(0, 2)
            ),
            ValueError,
            r"n_kv_heads \(1\)",
        ),
        (
            lambda: P.TensorParallelBlock(
                Block(GPTConfig(vocab_size=4, d_hidden=65)), P.Comm(0, 2)
            ),
            ValueError,
            r"feed-forward width \(65\)",
        ),
    ],
)
def test_tensor_parallel_block_rejects_what_it_cannot_split(make, exc, match) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_saved_bytes_counts_each_saved_storage_once_without_the_excluded() -> None:
    x = torch.randn(10, 3, dtype=F64, requires_grad=True)
    w = torch.randn(4, 3, dtype=F64, requires_grad=True)
    out, n = P.saved_bytes(lambda: torch.tanh(x))  # tanh saves its output
    assert torch.equal(out, torch.tanh(x)) and n == 30 * 8
    assert P.saved_bytes(lambda: F.linear(x, w))[1] == (30 + 12) * 8  # input and weight
    assert P.saved_bytes(lambda: F.linear(x, w), [w])[1] == 30 * 8
    assert P.saved_bytes(lambda: x * x)[1] == 30 * 8  # one storage, saved twice
    assert P.saved_bytes(lambda: x.detach() * 2)[1] == 0


# ----------------------------------------------------------------------------- pipelines


def _stage_bytes(sizes: tuple[int, ...], p: int, stage: int, mb: int, itemsize: int = 8) -> int:
    """What autograd saves for one micro-batch on a stage: each layer's input and the stage's
    last tanh output (the next stage's input); on the last stage the loss's prediction and
    target instead of a tanh output."""
    per = (len(sizes) - 1) // p
    widths = sizes[per * stage : per * (stage + 1) + 1]
    if stage < p - 1:
        return mb * itemsize * sum(widths)
    return mb * itemsize * (sum(widths[:-1]) + 2 * widths[-1])


def _peak(ops: list[tuple[str, int]]) -> int:
    live = peak = 0
    for op, _ in ops:
        live += 1 if op == "F" else -1
        peak = max(peak, live)
    return peak


def _check_schedule(kind: str, p: int, m: int, s: int) -> None:
    ops = P.pipeline_schedule(kind, p, m, s)  # type: ignore[arg-type]
    assert len(ops) == 2 * m
    assert sorted(ops) == [("B", i) for i in range(m)] + [("F", i) for i in range(m)]
    for i in range(m):
        assert ops.index(("F", i)) < ops.index(("B", i))
    # micro-batches go through in order, forward and backward
    assert [i for op, i in ops if op == "F"] == list(range(m))
    assert [i for op, i in ops if op == "B"] == list(range(m))
    if kind == "gpipe":
        assert _peak(ops) == m and ops[:m] == [("F", i) for i in range(m)]
    else:
        assert _peak(ops) == min(p - s, m)
        warm = min(p - s - 1, m)  # forwards before the first backward, then one of each in turn
        first_b = ops.index(("B", 0))
        assert first_b == warm + 1 if m > warm else first_b == m
        steady = ops[warm : warm + 2 * (m - warm)]
        assert all(op == "FB"[k % 2] for k, (op, _) in enumerate(steady))


def test_pipeline_schedules_on_a_grid() -> None:
    for kind in ("gpipe", "1f1b"):
        for p in range(1, 7):
            for m in range(1, 10):
                for s in range(p):
                    _check_schedule(kind, p, m, s)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["gpipe", "1f1b"]),
    p=st.integers(1, 40),
    m=st.integers(1, 80),
    data=st.data(),
)
def test_pipeline_schedule_properties(kind: str, p: int, m: int, data) -> None:
    _check_schedule(kind, p, m, data.draw(st.integers(0, p - 1)))


def test_1f1b_matches_the_paper_figure() -> None:
    # Narayanan et al. 2021, figure 4 (top): 4 stages, 8 micro-batches
    assert P.pipeline_schedule("1f1b", 4, 8, 0)[:6] == [
        ("F", 0),
        ("F", 1),
        ("F", 2),
        ("F", 3),
        ("B", 0),
        ("F", 4),
    ]
    assert P.pipeline_schedule("1f1b", 4, 8, 3)[:4] == [("F", 0), ("B", 0), ("F", 1), ("B", 1)]


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_simulated_pipeline_runs_without_deadlock_and_has_the_formula_bubble(kind) -> None:
    for p in range(1, 7):
        for m in range(1, 13):
            for tf, tb in ((1.0, 1.0), (1.0, 2.0)):
                bubble, _ = _simulate(kind, p, m, tf, tb)
                assert bubble == pytest.approx(P.bubble_fraction(p, m), abs=1e-12), (p, m, tf)


def test_bubble_fraction_is_p_minus_1_over_m_plus_p_minus_1() -> None:
    assert P.bubble_fraction(1, 5) == 0.0
    assert P.bubble_fraction(4, 8) == pytest.approx(3 / 11)
    assert P.bubble_fraction(8, 1) == pytest.approx(7 / 8)
    assert all(
        P.bubble_fraction(p, m) > P.bubble_fraction(p, m + 1)
        for p in range(2, 6)
        for m in range(1, 10)
    )


def test_pipeline_waits_from_hand_made_and_simulated_events() -> None:
    # stage 1's forward starts 0.5 after stage 0's ends; stage 0's backward starts at once
    events = [[("F", 0, 0.0, 1.0), ("B", 0, 3.0, 4.0)], [("F", 0, 1.5, 2.0), ("B", 0, 2.0, 3.0)]]
    assert P.pipeline_waits(events) == [0.0, 0.5]
    # a message that arrived while the stage was busy: due when the stage's previous op ended
    events = [
        [("F", 0, 0.0, 1.0), ("F", 1, 1.0, 2.0), ("B", 0, 5.0, 6.0), ("B", 1, 6.0, 7.0)],
        [("F", 0, 1.0, 3.0), ("B", 0, 3.0, 4.5), ("F", 1, 4.75, 5.0), ("B", 1, 5.0, 6.0)],
    ]
    # stage 0: B0 due at 4.5 (sent), started 5.0; B1 due at max(6.0 sent, 6.0 prev) -> 0
    # stage 1: F0 due 1.0 -> 0; F1 due max(2.0 sent, 4.5 prev) -> 0.25
    assert P.pipeline_waits(events) == pytest.approx([0.5, 0.0, 0.0, 0.25])
    # a simulated pipeline whose messages take no time waits for nothing
    for kind in ("gpipe", "1f1b"):
        for p, m in ((1, 3), (3, 5), (4, 2)):
            _, done = _simulate(kind, p, m, 1.0, 2.0)
            ev = [
                sorted(
                    (op, i, end - (1.0 if op == "F" else 2.0), end)
                    for (op, i, s), end in done.items()
                    if s == stage
                )
                for stage in range(p)
            ]
            ev = [sorted(e, key=lambda t: t[2]) for e in ev]
            waits = P.pipeline_waits(ev)
            assert len(waits) == 2 * m * (p - 1) and waits == [0.0] * len(waits)


def test_measured_bubble_from_hand_made_events() -> None:
    # stage 0 busy 0-1 and 3-4, stage 1 busy 1-3: the span is 4, busy 4 of 8
    events = [[("F", 0, 0.0, 1.0), ("B", 0, 3.0, 4.0)], [("F", 0, 1.0, 2.0), ("B", 0, 2.0, 3.0)]]
    assert P.measured_bubble(events) == pytest.approx(0.5)
    assert P.measured_bubble([[("F", 0, 2.0, 3.0)]]) == pytest.approx(0.0)
    # the simulated timelines give the formula back
    for kind in ("gpipe", "1f1b"):
        _, done = _simulate(kind, 3, 5, 1.0, 2.0)
        ev = [
            [
                (op, i, end - (1.0 if op == "F" else 2.0), end)
                for (op, i, s), end in done.items()
                if s == stage
            ]
            for stage in range(3)
        ]
        assert P.measured_bubble(ev) == pytest.approx(P.bubble_fraction(3, 5), abs=1e-12)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: P.pipeline_schedule("zb", 2, 2, 0), ValueError, "kind must be one of"),
        (lambda: P.pipeline_schedule("gpipe", 0, 2, 0), ValueError, "stages must be >= 1"),
        (lambda: P.pipeline_schedule("gpipe", 2, 0, 0), ValueError, "micro must be >= 1"),
        (lambda: P.pipeline_schedule("1f1b", 2, 2, 2), ValueError, "stage must be <= 1"),
        (lambda: P.pipeline_schedule("1f1b", 2, 2, -1), ValueError, "stage must be >= 0"),
        (lambda: P.pipeline_schedule("1f1b", 2, 2, 1.0), TypeError, "stage must be an int"),
        (lambda: P.bubble_fraction(0, 4), ValueError, "stages must be >= 1"),
        (lambda: P.bubble_fraction(2, 0), ValueError, "micro must be >= 1"),
        (lambda: P.measured_bubble([]), ValueError, "events"),
        (lambda: P.measured_bubble([[], []]), ValueError, "events"),
        (
            lambda: P.pipeline_train(P.Comm(0, 2), "pipe", P.TrainSpec(), 2),
            ValueError,
            "kind must be one of",
        ),
        (
            lambda: P.pipeline_train(P.Comm(0, 2), "gpipe", "spec", 2),
            TypeError,
            "spec must be a TrainSpec",
        ),
        (
            lambda: P.pipeline_train(P.Comm(0, 2), "gpipe", P.TrainSpec(), 0),
            ValueError,
            "micro must be >= 1",
        ),
        (
            lambda: P.pipeline_train(P.Comm(0, 2), "gpipe", P.TrainSpec(), 3),
            ValueError,
            r"spec.n \(64\) must be a multiple of micro",
        ),
        (
            lambda: P.pipeline_train(P.Comm(0, 3), "gpipe", P.TrainSpec(), 2),
            ValueError,
            "4 layers must split equally over 3 stages",
        ),
        (
            lambda: P.pipeline_train(P.Comm(0, 2), "gpipe", P.TrainSpec(), 2, (-1.0, 0.0)),
            ValueError,
            "delay must be >= 0",
        ),
    ],
)
def test_pipeline_functions_reject_bad_input(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize("micro", [1, 4])
def test_pipeline_gradients_equal_one_process_and_peaks_follow_the_schedule(
    cluster, kind: str, micro: int
) -> None:
    spec = P.TrainSpec(sizes=(5, 6, 7, 6, 3), n=8, seed=2)
    out = cluster.run(P.pipeline_train, kind, spec, micro)
    for stage, o in enumerate(out):
        assert o["grad_diff"] < 1e-15
        want = micro if kind == "gpipe" else min(2 - stage, micro)
        assert o["peak_in_flight"] == want
        assert o["peak_bytes"] == want * _stage_bytes(spec.sizes, 2, stage, spec.n // micro)
        assert [(e[0], e[1]) for e in o["events"]] == P.pipeline_schedule(kind, 2, micro, stage)
        assert all(e[2] <= e[3] for e in o["events"])
    # a micro-batch's forward on stage 1 starts after stage 0's has ended; backward in reverse
    for i in range(micro):
        f0, f1 = (next(e for e in o["events"] if e[:2] == ("F", i)) for o in out)
        b0, b1 = (next(e for e in o["events"] if e[:2] == ("B", i)) for o in out)
        assert f0[3] <= f1[2] and b1[3] <= b0[2]
    # every message-driven event (stage 1's forwards, stage 0's backwards) has a wait, >= 0
    waits = P.pipeline_waits([o["events"] for o in out])
    assert len(waits) == 2 * micro and min(waits) >= 0


def test_pipeline_gradients_are_checked_against_the_right_reference(cluster) -> None:
    # the same check on a network that is not the default, with a different seed per call:
    # a pipeline that ignored the spec would not reproduce it
    spec = P.TrainSpec(sizes=(2, 9, 4), n=6, seed=9)
    out = cluster.run(P.pipeline_train, "1f1b", spec, 3)
    assert all(o["grad_diff"] < 1e-15 for o in out)
    assert [o["peak_in_flight"] for o in out] == [2, 1]


# ----------------------------------------------------------------------------- checkpointing


def test_checkpointed_segment_gives_the_same_values_and_gradients_with_one_more_forward() -> None:
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh()).double()
    forwards = []
    seg[0].register_forward_hook(lambda *_: forwards.append(1))
    x = torch.randn(7, 3, dtype=F64, requires_grad=True)
    plain = seg(x)
    plain.square().sum().backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in seg.parameters()]
    x.grad = None
    seg.zero_grad()
    forwards.clear()
    out, nbytes = P.saved_bytes(lambda: P.checkpointed(seg, x), list(seg.parameters()))
    assert len(forwards) == 1 and torch.equal(out, plain.detach())
    assert nbytes == x.numel() * 8  # only the segment's input
    out.square().sum().backward()
    assert len(forwards) == 2  # recomputed once in backward
    got = [x.grad] + [p.grad for p in seg.parameters()]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-15) for a, b in zip(got, want, strict=True))
    # an input that needs no gradient: the parameters still get theirs
    seg.zero_grad()
    P.checkpointed(seg, x.detach()).square().sum().backward()
    assert all(
        torch.allclose(p.grad, w, atol=1e-15)
        for p, w in zip(seg.parameters(), want[1:], strict=True)
    )
    with pytest.raises(TypeError, match="segment must be a Module"):
        P.checkpointed(lambda t: t, x)  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [1, 2, 3, 4, 9])
def test_checkpoint_costs_save_only_segment_inputs_and_run_each_layer_twice(every: int) -> None:
    spec = P.TrainSpec(sizes=(16, 24, 8, 24, 4), dtype=torch.float32)
    batch, layers = 6, 4
    out = P.checkpoint_costs(spec, batch=batch, every=every)
    starts = list(range(0, layers, every))
    assert out["segments"] == len(starts)
    assert out["grad_diff"] < 1e-6
    assert out["plain_forwards"] == layers and out["checkpointed_forwards"] == 2 * layers
    layer_inputs = [batch * s * 4 for s in spec.sizes[:-1]]
    assert out["plain_saved"] == sum(layer_inputs) == out["input_bytes"]
    assert out["checkpointed_saved"] == sum(layer_inputs[i] for i in starts)


def test_checkpoint_costs_gradients_agree_exactly_in_float64() -> None:
    out = P.checkpoint_costs(P.TrainSpec(sizes=(5, 7, 7, 2)), batch=3, every=2)
    assert out["grad_diff"] < 1e-15 and out["checkpointed_saved"] == 3 * (5 + 7) * 8


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"spec": "x"}, TypeError, "spec must be a TrainSpec"),
        ({"batch": 0}, ValueError, "batch must be >= 1"),
        ({"every": 0}, ValueError, "every must be >= 1"),
    ],
)
def test_checkpoint_costs_rejects_bad_input(kwargs, exc, match) -> None:
    args = {"spec": P.TrainSpec(sizes=(3, 2)), "batch": 2, "every": 1} | kwargs
    with pytest.raises(exc, match=match):
        P.checkpoint_costs(**args)


# ----------------------------------------------------------------------------- cost models


def test_collective_seconds_is_the_ring_model() -> None:
    link = P.Link("test", 3e-6, 7e9)
    for world in (1, 2, 3, 8, 64):
        for nbytes in (0.0, 1.0, 1e6, 3.3e9):
            for kind in ("all_reduce", "reduce_scatter", "all_gather"):
                assert P.collective_seconds(kind, nbytes, world, link) == pytest.approx(
                    _ring_seconds(kind, nbytes, world, 3e-6, 7e9), rel=1e-12, abs=0
                )
            ar = P.collective_seconds("all_reduce", nbytes, world, link)
            halves = sum(
                P.collective_seconds(k, nbytes, world, link)
                for k in ("reduce_scatter", "all_gather")
            )
            assert ar == pytest.approx(halves, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (("bcast", 1.0, 2, P.Link("l", 1e-6, 1e9)), ValueError, "kind must be one of"),
        (("all_reduce", -1.0, 2, P.Link("l", 1e-6, 1e9)), ValueError, "nbytes must be >= 0"),
        (("all_reduce", 1.0, 0, P.Link("l", 1e-6, 1e9)), ValueError, "world must be >= 1"),
        (("all_reduce", 1.0, 2, (1e-6, 1e9)), TypeError, "link must be a Link"),
    ],
)
def test_collective_seconds_rejects_bad_input(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        P.collective_seconds(*args)


@pytest.mark.parametrize("world", [2, 3, 8])
def test_fit_alpha_beta_recovers_the_parameters_of_exact_times(world: int) -> None:
    alpha, beta = 7e-6, 2.5e-10
    sizes = [1e3, 1e5, 1e6, 4e6, 1.6e7]
    t = [2 * (world - 1) * alpha + 2 * (world - 1) / world * n * beta for n in sizes]
    a, b = P.fit_alpha_beta(sizes, t, world)
    assert a == pytest.approx(alpha, rel=1e-8) and b == pytest.approx(beta, rel=1e-10)
    # least squares in relative error: the relative residuals r of noisy data are orthogonal
    # to the design divided by the times (the normal equations of that fit)
    noisy = [ti * (1 + 0.05 * (-1) ** k) for k, ti in enumerate(t)]
    a, b = P.fit_alpha_beta(sizes, noisy, world)
    r = [
        1 - (2 * (world - 1) * a + 2 * (world - 1) / world * n * b) / ti
        for n, ti in zip(sizes, noisy, strict=True)
    ]
    assert max(map(abs, r)) > 0.01  # the noise is not fitted away
    for column in ([1.0] * len(sizes), sizes):
        terms = [rk * ck / tk for rk, ck, tk in zip(r, column, noisy, strict=True)]
        assert abs(sum(terms)) < 1e-9 * sum(map(abs, terms))
    # an unweighted fit would let the largest size decide alpha; this one does not
    a_unweighted = _unweighted_alpha(sizes, noisy, world)
    assert abs(a - alpha) < abs(a_unweighted - alpha)


def _unweighted_alpha(sizes: list[float], t: list[float], world: int) -> float:
    import numpy as np

    design = np.array([[2.0 * (world - 1), 2 * (world - 1) / world * n] for n in sizes])
    return float(np.linalg.lstsq(design, np.array(t), rcond=None)[0][0])


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (([1.0, 2.0], [1.0], 2), ValueError, "sizes_bytes and seconds"),
        (([1.0], [1.0], 2), ValueError, "sizes_bytes and seconds"),
        (([[1.0, 2.0]], [[1.0, 2.0]], 2), ValueError, "sizes_bytes and seconds"),
        (([1.0, 2.0], [1.0, 2.0], 1), ValueError, "world must be >= 2"),
        (([1.0, 2.0], [1.0, 0.0], 2), ValueError, "seconds must be positive"),
        (([1.0, 2.0], [-1.0, 2.0], 2), ValueError, "seconds must be positive"),
    ],
)
def test_fit_alpha_beta_rejects_bad_input(args, exc, match) -> None:
    with pytest.raises(exc, match=match):
        P.fit_alpha_beta(*args)


# Narayanan et al. 2021, table 1: (heads, hidden, layers) -> billions of parameters
TABLE_1 = {
    (24, 2304, 24): 1.7,
    (48, 6144, 40): 18.4,
    (96, 12288, 80): 145.6,
    (160, 25600, 128): 1008.0,
}


@pytest.mark.parametrize("shape", TABLE_1)
def test_model_params_are_the_published_sizes_and_the_matrices_counted(shape) -> None:
    heads, hidden, layers = shape
    m = P.ModelShape(layers, hidden, heads)
    assert m.seq == 2048 and m.vocab == 51200
    assert round(m.params / 1e9, 1) == TABLE_1[shape]
    assert m.params == pytest.approx(_params_by_hand(layers, hidden, 51200, 2048), rel=1e-14)


def test_model_flops_count_the_matmuls() -> None:
    for layers, hidden, heads, seq, vocab in ((24, 2304, 24, 2048, 51200), (3, 64, 4, 16, 100)):
        m = P.ModelShape(layers, hidden, heads, seq, vocab)
        for batch in (1, 8):
            for rec in (True, False):
                want = _flops_by_hand(batch, seq, layers, hidden, vocab, rec)
                assert m.flops(batch, rec) == pytest.approx(want, rel=1e-13)
        assert m.flops(8) == m.flops(8, True) and m.flops(3) == pytest.approx(3 * m.flops(1))


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: P.ModelShape(0, 64, 4), ValueError, "layers must be >= 1"),
        (lambda: P.ModelShape(2, 64.0, 4), TypeError, "hidden must be an int"),
        (lambda: P.ModelShape(2, 64, 0), ValueError, "heads must be >= 1"),
        (lambda: P.ModelShape(2, 64, 4, seq=0), ValueError, "seq must be >= 1"),
        (lambda: P.ModelShape(2, 64, 4, vocab=0), ValueError, "vocab must be >= 1"),
        (lambda: P.ModelShape(2, 64, 5), ValueError, r"hidden \(64\) must be a multiple of heads"),
    ],
)
def test_model_shape_rejects_bad_input(make, exc, match) -> None:
    with pytest.raises(exc, match=match):
        make()


def test_state_bytes_per_param_are_the_zero_papers() -> None:
    for d in (1, 2, 8, 64):
        assert P.state_bytes_per_param(0, d) == 16
        assert P.state_bytes_per_param(1, d) == pytest.approx(4 + 12 / d)
        assert P.state_bytes_per_param(2, d) == pytest.approx(2 + 14 / d)
        assert P.state_bytes_per_param(3, d) == pytest.approx(16 / d)
    assert {P.state_bytes_per_param(z, 1) for z in range(4)} == {16}
    # Rajbhandari et al. 2020, figure 1: 7.5B parameters, 64 GPUs: 120, 31.4, 16.6, 1.88 GB
    for z, gb in enumerate((120, 31.4, 16.6, 1.88)):
        assert P.state_bytes_per_param(z, 64) * 7.5e9 / 1e9 == pytest.approx(gb, rel=0.01)
    with pytest.raises(ValueError, match="zero must be <= 3"):
        P.state_bytes_per_param(4, 2)
    with pytest.raises(ValueError, match="dp must be >= 1"):
        P.state_bytes_per_param(1, 0)


def _plan_by_hand(
    model: P.ModelShape,
    hw: P.Hardware,
    gpus: int,
    tp: int,
    pp: int,
    batch: int,
    b: int,
    zero: int,
    recompute: bool,
    eff: float,
) -> dict[str, float]:
    """plan's model from its docstring, with this file's own counts."""
    dp = gpus // (tp * pp)
    m = batch // (dp * b)
    n_l, h, a, s, V = model.layers, model.hidden, model.heads, model.seq, model.vocab
    params = _params_by_hand(n_l, h, V, s)
    # the first stage: its share of the layers and the whole embedding (split over tp)
    first = (params - (V + s) * h) / (tp * pp) + (V + s) * h / tp
    states = [16, 4 + 12 / dp, 2 + 14 / dp, 16 / dp][zero] * first
    layer = s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
    held = min(pp, m) * (n_l // pp)
    acts = held * 2 * s * b * h + layer if recompute else held * layer
    compute = _flops_by_hand(batch, s, n_l, h, V, recompute) / (gpus * hw.flops * eff)
    msg = 2 * s * b * h
    tp_comm = (
        (6 if recompute else 4)
        * (n_l // pp)
        * m
        * _ring_seconds("all_reduce", msg, tp, hw.intra.latency, hw.intra.bandwidth)
    )
    pp_comm = 2 * (m + pp - 1) * (hw.inter.latency + msg / hw.inter.bandwidth) if pp > 1 else 0
    # data parallel: 2-byte gradients (or parameters) of this GPU's share, on the inter link:
    # ZeRO 0/1 reduce once (an all-reduce); ZeRO-2 reduce-scatters every micro-batch's and
    # gathers the parameters once; ZeRO-3 gathers them twice and reduce-scatters per micro-batch
    share = 2 * first
    rs, ag, ar = (
        _ring_seconds(kind, share, dp, hw.inter.latency, hw.inter.bandwidth)
        for kind in ("reduce_scatter", "all_gather", "all_reduce")
    )
    dp_comm = {0: ar, 1: ar, 2: m * rs + ag, 3: m * (2 * ag + rs)}[zero]
    bubble = (pp - 1) / (m + pp - 1)
    step = (compute + tp_comm) * (m + pp - 1) / m + pp_comm + dp_comm
    return {
        "dp": dp,
        "micro_batches": m,
        "state_bytes": states,
        "activation_bytes": acts,
        "memory": states + acts,
        "bubble": bubble,
        "compute_s": compute,
        "tp_comm_s": tp_comm,
        "pp_comm_s": pp_comm,
        "dp_comm_s": dp_comm,
        "step_s": step,
        "tflops_per_gpu": _flops_by_hand(batch, s, n_l, h, V, True) / (gpus * step) / 1e12,
    }


@pytest.mark.parametrize(
    "layout",
    [
        # gpus, tp, pp, global batch, micro-batch, zero, recompute, efficiency
        (32, 1, 1, 512, 1, 0, True, 1.0),
        (64, 2, 4, 512, 2, 1, True, 0.5),
        (64, 4, 2, 256, 1, 2, False, 0.7),
        (128, 8, 8, 64, 4, 3, False, 1.0),
        (96, 2, 6, 96, 1, 3, True, 0.9),
    ],
)
def test_plan_is_its_documented_model(layout) -> None:
    gpus, tp, pp, batch, b, zero, rec, eff = layout
    model = P.ModelShape(48, 2304, 24)
    pl = P.plan(model, A100, gpus, tp, pp, batch, b, zero, rec, eff)
    want = _plan_by_hand(model, A100, gpus, tp, pp, batch, b, zero, rec, eff)
    for key, value in want.items():
        assert getattr(pl, key) == pytest.approx(value, rel=1e-12, abs=1e-300), key
    assert (pl.tp, pl.pp, pl.zero, pl.micro_batch) == (tp, pp, zero, b)
    assert pl.fits == (pl.memory <= A100.memory)


def test_plan_predicts_the_published_runs_fit_and_bounds_their_throughput() -> None:
    # Narayanan et al. 2021, table 1: (heads, hidden, layers), tp, pp, GPUs, batch, TFLOP/s
    rows = [
        ((24, 2304, 24), 1, 1, 32, 512, 137),
        ((48, 6144, 40), 8, 1, 256, 1024, 135),
        ((96, 12288, 80), 8, 8, 1536, 2304, 148),
        ((160, 25600, 128), 8, 64, 3072, 3072, 163),
    ]
    for (a, h, n_l), tp, pp, gpus, batch, achieved in rows:
        pl = P.plan(P.ModelShape(n_l, h, a), A100, gpus, tp, pp, batch)
        assert pl.fits
        assert 0.3 < achieved / pl.tflops_per_gpu < 1.0  # a peak-speed model is an upper bound
    # without recomputation the activations of the largest model do not fit
    big = P.ModelShape(128, 25600, 160)
    assert not P.plan(big, A100, 3072, 8, 64, 3072, recompute=False).fits


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"model": "gpt"}, TypeError, "model must be a ModelShape"),
        ({"hw": "a100"}, TypeError, "hw must be a Hardware"),
        ({"gpus": 0}, ValueError, "gpus must be >= 1"),
        ({"tp": 0}, ValueError, "tp must be >= 1"),
        ({"pp": 0}, ValueError, "pp must be >= 1"),
        ({"global_batch": 0}, ValueError, "global_batch must be >= 1"),
        ({"micro_batch": 0}, ValueError, "micro_batch must be >= 1"),
        ({"zero": 4}, ValueError, "zero must be <= 3"),
        ({"recompute": 1}, TypeError, "recompute must be True or False"),
        ({"efficiency": 0.0}, ValueError, "efficiency"),
        ({"efficiency": 1.5}, ValueError, "efficiency"),
        ({"gpus": 10}, ValueError, r"gpus \(10\) must be a multiple of tp x pp"),
        ({"global_batch": 12}, ValueError, r"global_batch \(12\) must be a multiple of dp"),
        ({"pp": 5, "gpus": 40}, ValueError, r"layers \(24\) must be a multiple of pp"),
        ({"tp": 16, "gpus": 64}, ValueError, r"heads \(24\) must be a multiple of tp"),
    ],
)
def test_plan_rejects_bad_input(kwargs, exc, match) -> None:
    args = {
        "model": P.ModelShape(24, 2304, 24),
        "hw": A100,
        "gpus": 32,
        "tp": 2,
        "pp": 2,
        "global_batch": 64,
    } | kwargs
    with pytest.raises(exc, match=match):
        P.plan(**args)


def _every_fitting_plan(model, hw, gpus, batch, zeros=(0, 1, 2, 3), micro_batch=1, **kw):
    """plan() on every layout it accepts (tp dividing a node's GPUs), the fitting ones."""
    valid, found = 0, []
    for tp in (t for t in range(1, hw.per_node + 1) if hw.per_node % t == 0):
        for pp in range(1, model.layers + 1):
            for zero in zeros:
                try:
                    pl = P.plan(model, hw, gpus, tp, pp, batch, micro_batch, zero, **kw)
                except ValueError:
                    continue
                valid += 1
                if pl.fits:
                    found.append(pl)
    return valid, sorted(found, key=lambda p: p.step_s)


def test_best_plans_are_every_fitting_layout_fastest_first() -> None:
    model, gpus, batch = P.ModelShape(24, 2304, 24), 32, 512
    small = P.Hardware("small", 12e9, 312e12, A100.intra, A100.inter, per_node=4)
    valid, want = _every_fitting_plan(model, small, gpus, batch)
    assert 5 < len(want) < valid  # some layouts do not fit in 12 GB
    assert {p.zero for p in want} == {0, 1, 2, 3} and {p.tp for p in want} == {1, 2, 4}
    assert P.best_plans(model, small, gpus, batch, top=1000) == want
    assert P.best_plans(model, small, gpus, batch, top=3) == want[:3]
    # the stages asked for, the micro-batch size asked for, other keywords passed on to plan
    for zeros, b, kw in (((0,), 1, {}), ((2, 3), 4, {}), ((0, 1, 2, 3), 2, {"efficiency": 0.5})):
        _, want = _every_fitting_plan(model, small, gpus, batch, zeros, b, **kw)
        got = P.best_plans(model, small, gpus, batch, 1000, zeros, b, **kw)
        assert got == want and len(want) > 0
        assert {p.zero for p in got} <= set(zeros) and {p.micro_batch for p in got} == {b}
    # a batch that only some data-parallel widths divide: those layouts are skipped, not refused
    _, want = _every_fitting_plan(model, small, gpus, 48, micro_batch=2)
    assert P.best_plans(model, small, gpus, 48, 1000, micro_batch=2) == want != []


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"top": 0}, ValueError, "top must be >= 1"),
        ({"zeros": (0, 4)}, ValueError, r"zeros\[i\] must be <= 3"),
        ({"zeros": (-1,)}, ValueError, r"zeros\[i\] must be >= 0"),
        ({"micro_batch": 0}, ValueError, "micro_batch must be >= 1"),
        ({"efficiency": 2.0}, ValueError, "efficiency"),
    ],
)
def test_best_plans_rejects_bad_input(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        P.best_plans(P.ModelShape(24, 2304, 24), A100, 32, 512, **kwargs)


# ----------------------------------------------------------------------------- a failing rank


def test_a_failing_rank_stops_every_worker(cluster) -> None:
    """The shared cluster is this test's victim: it comes after every other fast test that uses
    the cluster (a later test that needs one gets a fresh one)."""
    procs = {pid: psutil.Process(pid).create_time() for pid in cluster.pids}
    t0 = time.monotonic()
    with pytest.raises(P.ParallelError) as err:
        cluster.run(_fail_on, 1, "the marker 2718")
    assert time.monotonic() - t0 < 20  # not the 60 s timeout: rank 0's wait is cut short
    msg = str(err.value)
    assert msg.startswith("rank 1 failed in _fail_on")
    assert "RuntimeError: the marker 2718" in msg and "Traceback" in msg
    assert all(_gone(pid, t) for pid, t in procs.items())
    assert cluster.closed
    with pytest.raises(P.ParallelError, match="closed"):
        cluster.run(_echo)
    cluster.close()  # a second close is harmless


# ----------------------------------------------------------------------------- torchrun's entry


def test_main_refuses_to_run_outside_torchrun(monkeypatch, capsys) -> None:
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit) as err:
        P.main(["--strategy", "zero2"])
    assert err.value.code == 2 and "torchrun" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        P.main(["--strategy", "zero9"])
    assert "invalid choice: 'zero9'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_trains_zero3_as_one_process(tmp_path) -> None:
    root = str(Path(P.__file__).resolve().parents[1])  # the hamlib these tests import
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hamlib.parallel",
        "--strategy",
        "zero3",
        "--steps",
        "3",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.findall(
        r"zero3 on 2 processes: .* largest difference from one process: (\S+)", proc.stdout
    )
    assert len(found) == 1, proc.stdout  # rank 0 only
    assert float(found[0]) < 1e-12


# ----------------------------------------------------------------------------- slow: four ranks


@pytest.fixture
def cluster4(_clusters):
    if 4 not in _clusters or _clusters[4].closed:
        _clusters[4] = P.Cluster(4)
    return _clusters[4]


@pytest.mark.slow
def test_four_ranks_collectives_bytes_and_broadcast_chain(cluster4) -> None:
    world, shape, root = 4, (3, 7), 2
    out = cluster4.run(_collectives, shape, 5, root)
    xs = [_rank_tensor(shape, 5, r) for r in range(world)]
    total = sum(xs)
    n, c = 21, 6
    padded = torch.zeros(world * c, dtype=F64)
    padded[:n] = total.reshape(-1)
    for r, o in enumerate(out):
        assert torch.allclose(o["all_reduce"], total, rtol=1e-14, atol=1e-14)
        assert torch.allclose(o["torch_all_reduce"], total, rtol=1e-14, atol=1e-14)
        assert torch.allclose(o["reduce_scatter"], padded[r * c : (r + 1) * c], atol=1e-14)
        assert torch.equal(o["all_gather"], torch.cat([_rank_tensor((c,), 6, q) for q in range(4)]))
        assert torch.equal(o["broadcast"], xs[root])
        assert o["sent_all_reduce"] == P.ring_bytes("all_reduce", n, world, 8) == 2 * 3 * c * 8
        assert o["sent_reduce_scatter"] == o["sent_all_gather"] == 3 * c * 8
        # rank r is (r - root) mod 4 hops down the chain; the last hop sends nothing
        assert o["sent_broadcast"] == (0 if (r - root) % world == world - 1 else n * 8)
    # every rank holds the same sum, bit for bit
    assert all(torch.equal(o["all_reduce"], out[0]["all_reduce"]) for o in out)
    out = cluster4.run(_ring_shift, 3)
    for r, o in enumerate(out):
        assert torch.equal(o["got"], torch.arange(3, dtype=F64) + 100.0 * ((r - 1) % 4))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_four_ranks_strategies_equal_one_process_with_padding_accounted(cluster4, strategy):
    ref, world = P.train_reference(ODD), 4
    out = cluster4.run(P.train, strategy, ODD)
    ring = sum(P.ring_bytes("all_reduce", u, world, 8) for u in _units(ODD.sizes))
    for o in out:
        for a, b in zip(o["params"], ref["params"], strict=True):
            assert (a - b).abs().max().item() < 1e-12
        assert o["held"] == _held_by_hand(strategy, ODD.sizes, world)
        assert o["sent"] == (1.5 * ring if strategy == "zero3" else ring)
    mean = [sum(o["losses"][k] for o in out) / world for k in range(ODD.steps)]
    assert mean == pytest.approx(ref["losses"], rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "torch-zero1", "fsdp2"])
@pytest.mark.parametrize("world", [2, 4])
def test_torch_strategies_equal_one_process(request, strategy: str, world: int) -> None:
    c = request.getfixturevalue("cluster" if world == 2 else "cluster4")
    ref = P.train_reference(ODD)
    out = c.run(P.train, strategy, ODD)
    psi = sum(_units(ODD.sizes)) * 8
    for o in out:
        for a, b in zip(o["params"], ref["params"], strict=True):
            assert a.shape == b.shape and (a - b).abs().max().item() < 1e-12
        assert "sent" not in o and "calls" not in o
    mean = [sum(o["losses"][k] for o in out) / world for k in range(ODD.steps)]
    assert mean == pytest.approx(ref["losses"], rel=1e-12)
    held = [o["held"] for o in out]
    if strategy == "ddp":
        assert all(h == {"params": psi, "grads": psi, "optimizer": 2 * psi} for h in held)
    else:  # each parameter's (or shard's) moments on exactly one rank
        assert sum(h["optimizer"] for h in held) == 2 * psi
    if strategy == "torch-zero1":
        assert all(h["params"] == h["grads"] == psi for h in held)
    if strategy == "fsdp2":
        assert all(h["params"] < psi and h["grads"] == h["params"] for h in held)
        assert sum(h["params"] for h in held) >= psi


@pytest.mark.slow
def test_four_stage_pipelines(cluster4) -> None:
    spec = P.TrainSpec(sizes=(5, 6, 7, 6, 3), n=12, seed=4)
    for kind in ("gpipe", "1f1b"):
        for micro in (2, 6):
            out = cluster4.run(P.pipeline_train, kind, spec, micro)
            assert all(o["grad_diff"] < 1e-15 for o in out)
            want = [micro if kind == "gpipe" else min(4 - s, micro) for s in range(4)]
            assert [o["peak_in_flight"] for o in out] == want


@pytest.mark.slow
def test_measured_bubble_of_a_delayed_pipeline_is_the_formula(cluster4) -> None:
    spec = P.TrainSpec(sizes=(8, 8, 8, 8, 8), n=16)
    for kind in ("gpipe", "1f1b"):
        out = cluster4.run(P.pipeline_train, kind, spec, 4, (0.03, 0.06))
        got = P.measured_bubble([o["events"] for o in out])
        assert got == pytest.approx(P.bubble_fraction(4, 4), abs=0.08)


@pytest.mark.slow
def test_four_rank_tensor_parallel(cluster, cluster4) -> None:
    config = dict(vocab_size=10, d_model=32, n_heads=8, n_kv_heads=4, positions="rope")
    out = cluster4.run(_tp_block, config, 3)
    _, ref, ref_x_grad = _tp_reference(config, 3)
    for o in out:
        assert (o["out"] - ref).abs().max() < 1e-13 and (
            o["x_grad"] - ref_x_grad
        ).abs().max() < 1e-13
        assert o["forward"] == {"all_reduce": 2} and o["all"] == {"all_reduce": 4}
    saved = {}
    for o in cluster4.run(P.tensor_parallel_check, config):
        assert max(o["output"], o["input_grad"], o["weight_grads"]) < 1e-12
        assert o["weights_rank"] * 4 == o["weights_full"]
        saved[4] = o["saved_rank"]
    saved[2] = cluster.run(P.tensor_parallel_check, config)[0]["saved_rank"]
    saved[1] = P.tensor_parallel_check(P.Comm(0, 1), config)["saved_rank"]
    # activations: a replicated part and a part split t ways, R + S / t
    assert saved[1] - saved[2] == 2 * (saved[2] - saved[4]) > 0


@pytest.mark.slow
def test_ddp_launches_bucket_all_reduces_during_backward(cluster) -> None:
    width, depth = 64, 6
    for o in cluster.run(P.ddp_overlap, width, depth, 0.02):  # 20 kB buckets, 16.6 kB layers
        assert sum(o["elements"]) == depth * (width * width + width)  # every gradient, once
        assert len(o["elements"]) == len(o["launch"]) == len(o["done"]) > 1
        assert len(o["ready"]) == depth and o["ready"] == sorted(o["ready"], reverse=True)
        assert o["launch"] == sorted(o["launch"]) and o["done"] == sorted(o["done"])
        assert all(d >= s for s, d in zip(o["launch"], o["done"], strict=True))
        assert max(o["done"]) <= o["backward"]  # backward waits for every bucket
        # overlap: the first bucket leaves before the first layer's gradient exists
        assert 0 <= o["launch"][0] < o["ready"][0]
    # the control: one bucket cannot leave before the last gradient is ready
    for o in cluster.run(P.ddp_overlap, width, depth, 100.0):
        assert len(o["launch"]) == 1 and o["launch"][0] >= max(o["ready"])


@pytest.mark.slow
def test_time_all_reduce_and_a_fit_of_its_times(cluster) -> None:
    sizes = [1000, 100_000, 1_000_000]
    out = cluster.run(P.time_all_reduce, sizes, 3)
    for o in out:
        assert o["sizes"] == [float(s) for s in sizes]
        assert len(o["ring"]) == len(o["torch"]) == 3 and min(o["ring"] + o["torch"]) > 0
    assert out[0]["ring"][2] > out[0]["ring"][0]  # a thousand times the data takes longer
    alpha, beta = P.fit_alpha_beta([4 * s for s in sizes], out[0]["ring"], 2)
    assert math.isfinite(alpha) and beta > 0
    assert cluster.run(P.time_all_reduce, [10], 1, False)[0]["torch"] == []


# ------------------------------------------- defects the first version of these tests found


def test_the_tensor_parallel_block_holds_only_its_share_and_refuses_biases() -> None:
    torch.manual_seed(0)
    block = Block(GPTConfig(vocab_size=8, d_model=32, n_heads=4)).double()
    comm = P.Comm(0, 2)  # built without communicating: only the split is inspected
    tp = P.TensorParallelBlock(block, comm)
    split = sum(p.numel() for n, p in tp.named_parameters() if "norm" not in n)
    full = sum(p.numel() for n, p in block.named_parameters() if "norm" not in n)
    assert split * 2 == full
    assert tp.norm1 is not block.norm1 and torch.equal(tp.norm1.weight, block.norm1.weight)
    from hamlib.transformer import MultiHeadAttention

    block.attn = MultiHeadAttention(32, 4, bias=True).double()
    with pytest.raises(ValueError, match="biases"):
        P.TensorParallelBlock(block, comm)


@pytest.mark.slow
def test_one_step_of_training_reports_adams_state(cluster) -> None:
    spec = P.TrainSpec(sizes=(4, 3, 5, 1), n=8, steps=1)
    out = cluster.run(P.train, "dp", spec)
    psi = sum(p.numel() for p in P.mlp_init(spec.sizes))
    assert all(r["held"]["optimizer"] == 2 * 8 * psi for r in out)


@pytest.mark.slow
def test_the_workers_output_outlives_the_cluster_and_logs_are_not_executable() -> None:
    c = P.Cluster(1, timeout=30)
    try:
        c.run(_echo)
        mode = os.stat(os.path.join(c._dir, "rank0.log")).st_mode & 0o777
        assert mode & 0o111 == 0
        with pytest.raises(ValueError, match="chars"):
            c.log(0, chars=0)
    finally:
        c.close()
    assert isinstance(c.log(0), str)  # readable after close, from memory


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: P.best_plans(P.ModelShape(4, 64, 4), A100, 0, 8), "gpus"),
        (lambda: P.best_plans("m", A100, 8, 8), "model"),
        (lambda: P.best_plans(P.ModelShape(4, 64, 4), "hw", 8, 8), "hw"),
        (lambda: P.best_plans(P.ModelShape(4, 64, 4), A100, 8, 8, zero=1), "zeros"),
        (lambda: P.measured_bubble([[("F", 0, 1.0, 1.0)]]), "span"),
        (lambda: P.measured_bubble([[("F", 0, 2.0, 1.0)]]), "ends before"),
        (lambda: P.measured_bubble("abc"), "events"),
        (lambda: P.measured_bubble([]), "events"),
        (lambda: P.pipeline_waits([[], [("F", 0, 0.0, 1.0)]]), "matching"),
        (lambda: P.pipeline_waits([[("X", 0, 0.0, 1.0)]]), "op"),
        (lambda: P.fit_alpha_beta([1.0, 2.0], [1.0, float("nan")], 2), "finite"),
        (lambda: P.fit_alpha_beta([1.0, 1.0], [1.0, 2.0], 2), "different sizes"),
        (lambda: P.Link("x", -1.0, 1.0), "latency"),
        (lambda: P.Link("x", 0.0, 0.0), "bandwidth"),
        (lambda: P.Hardware("h", 80e9, 0.0, A100.intra, A100.inter), "flops"),
        (lambda: P.Hardware("h", 80e9, 1e12, None, A100.inter), "intra"),
        (lambda: P.ModelShape(4, 64, 4).flops(0), "batch"),
        (lambda: P.ModelShape(4, 64, 4).flops(1.5), "batch"),
        (lambda: P.ModelShape(4, 64, 4).flops(1, recompute="no"), "recompute"),
        (lambda: P.mlp_forward([], torch.zeros(1, 2)), "params"),
        (lambda: P.mlp_forward([torch.zeros(2, 2)] * 3, torch.zeros(1, 2)), "params"),
        (lambda: P.mlp_init(5), "sizes"),
        (lambda: P.mlp_init((2, 3), dtype=torch.int64), "dtype"),
        (lambda: P.regression_data(4, []), "sizes"),
        (lambda: P.TrainSpec(seed=-1), "seed"),
        (lambda: P.TrainSpec(sizes=5), "sizes"),
        (lambda: P.Comm(5, 2), "rank"),
        (lambda: P.Comm(0, 0), "world"),
        (lambda: P.Comm(0, 2).chunk(-3), "n"),
        (lambda: P.saved_bytes(3), "fn"),
        (lambda: P.checkpointed(nn.Linear(2, 2), "x"), "x"),
    ],
)
def test_more_bad_input_is_refused_by_name(call, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_rank_functions_check_their_arguments_before_communicating() -> None:
    comm = P.Comm(0, 2)  # no process group: the checks must come before any message
    for fn, args, match in (
        (P.pipeline_train, ("gpipe", P.TrainSpec(sizes=(4, 3, 1), n=8), 2, 0.5), "delay"),
        (P.time_all_reduce, (5,), "sizes"),
        (P.tensor_parallel_check, ("x",), "config"),
        (P.tensor_parallel_check, ({"vocab_size": 8, "d_model": 8, "n_heads": 2}, 0), "batch"),
    ):
        with pytest.raises((ValueError, TypeError), match=match):
            fn(comm, *args)

"""Training on several processes with ``torch.distributed``: a launcher that works from a
notebook, collectives written with point-to-point messages, data parallelism, ZeRO stages 1-3,
Megatron tensor parallelism, GPipe and 1F1B pipelines, and a 3D-parallel planner.

Everything here runs on the CPU with the gloo backend; the same calls run on GPUs with NCCL.

- :class:`Cluster` starts ``world_size`` worker processes once (``spawn``, so a notebook can use
  it), joins them into one process group through a file store in a private temporary folder (no
  port to collide on; gloo's own connections bind to the loopback interface), and runs functions
  on every rank: ``cluster.run(fn, *args)`` calls ``fn(comm, *args)`` on each rank and returns the
  list of results. A rank that raises, dies or outlives ``timeout`` stops every worker and raises
  :class:`ParallelError` with the rank's traceback. Workers exit when their parent dies.
- :class:`Comm` is what a rank receives: its rank, the world size, ring collectives written with
  ``isend``/``recv`` (:meth:`Comm.all_reduce`, :meth:`Comm.reduce_scatter`,
  :meth:`Comm.all_gather`, :meth:`Comm.broadcast`) and counters of the bytes it sent and of the
  collectives it called.
"""

from __future__ import annotations

import atexit
import copy
import math
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import traceback
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, cast, get_args

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from hamlib import _checks as check
from hamlib.transformer import Block, FeedForward, MultiHeadAttention

__all__ = [
    "Cluster",
    "Comm",
    "ParallelError",
]


class ParallelError(RuntimeError):
    """A rank failed, died or timed out; the message holds its traceback."""


# ----------------------------------------------------------------------------------------------
# Launch


def _watch_parent(parent: int) -> None:  # a worker whose parent died exits instead of lingering
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _worker(
    rank: int,
    world: int,
    store: str,
    tasks: Any,
    results: Any,
    timeout: float,
    threads: int,
    parent: int,
) -> None:
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    # the worker's own output (torch's warnings, prints) goes to a log file, never to the
    # parent's streams: under Jupyter those are the output of whatever cell is running
    log = os.open(
        os.path.join(os.path.dirname(store), f"rank{rank}.log"), os.O_WRONLY | os.O_CREAT, 0o644
    )
    os.dup2(log, 1)
    os.dup2(log, 2)
    torch.set_num_threads(threads)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout),
        )
        comm = Comm(rank, world)
    except BaseException:
        results.put((rank, 0, False, traceback.format_exc()))
        return
    results.put((rank, 0, True, "ready"))
    while True:
        task = tasks.get()
        if task is None:
            break
        seq, fn, args, kwargs = task
        comm.reset()
        try:
            value = fn(comm, *args, **kwargs)
            pickle.dumps(value)  # fail here, with a traceback, rather than in the queue's thread
            results.put((rank, seq, True, value))
        except BaseException:
            results.put((rank, seq, False, traceback.format_exc()))
    dist.destroy_process_group()


def _importable(fn: Any) -> Callable[..., Any]:
    check.function("fn", fn)
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__") or "<" in qualname:
        raise TypeError(
            f"fn must be a function defined at the top level of an importable module (got "
            f"{qualname or fn!r} from {module}): spawned processes import it by name, and a "
            "notebook's own functions cannot be imported. Put it in a .py file next to the "
            "notebook."
        )
    return cast(Callable[..., Any], fn)


def _loopback() -> str:
    """The loopback interface's name: "lo" on Linux, "lo0" on macOS and the BSDs."""
    import socket

    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in ("lo", "lo0") if n in names), "lo")


_LIVE: list[Cluster] = []


@atexit.register
def _close_all() -> None:
    for cluster in list(_LIVE):
        cluster.close()


class Cluster:
    """``world_size`` worker processes in one gloo process group, started once and reused.

    ``timeout`` (seconds) bounds every :meth:`run` and every collective inside it; ``threads``
    is each worker's torch thread count. Use as a context manager or call :meth:`close`."""

    def __init__(self, world_size: int, timeout: float = 60.0, threads: int = 1) -> None:
        self.world_size = check.integer("world_size", world_size, minimum=1, maximum=64)
        self.timeout = check.positive("timeout", timeout)
        threads = check.integer("threads", threads, minimum=1)
        self._dir = tempfile.mkdtemp(prefix="hamlib-parallel-")
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(self.world_size)]
        env = {"GLOO_SOCKET_IFNAME": _loopback()}  # always: these workers are on one machine
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the children inherit it: gloo binds to 127.0.0.1 only
        try:
            self._procs = [
                ctx.Process(
                    target=_worker,
                    args=(
                        r,
                        self.world_size,
                        os.path.join(self._dir, "store"),
                        self._tasks[r],
                        self._results,
                        self.timeout,
                        threads,
                        os.getpid(),
                    ),
                    daemon=True,
                )
                for r in range(self.world_size)
            ]
            for p in self._procs:
                p.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.closed = False
        self._logs: dict[int, str] = {}
        self._seq = 0
        _LIVE.append(self)
        try:
            self._collect(0, "start-up", max(self.timeout, 120.0))
        except BaseException:
            self._kill()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def _collect(self, seq: int, what: str, timeout: float) -> list[Any]:
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(out) < self.world_size:
            try:
                rank, got, ok, value = self._results.get(timeout=0.1)
            except queue.Empty:
                dead = [r for r, p in enumerate(self._procs) if p.exitcode is not None]
                if dead and not all(r in out for r in dead):
                    r = next(r for r in dead if r not in out)
                    code, log = self._procs[r].exitcode, self.log(r)
                    self._kill()
                    raise ParallelError(
                        f"rank {r} died during {what} (exit code {code}); its output:\n{log}"
                    ) from None
                if time.monotonic() > deadline:
                    missing = [r for r in range(self.world_size) if r not in out]
                    self._kill()
                    raise ParallelError(
                        f"{what}: ranks {missing} did not finish within {timeout:g} s; "
                        "every worker was stopped"
                    ) from None
                continue
            if got != seq:  # a result of an earlier, interrupted run: never returned
                continue
            if not ok:
                self._kill()
                raise ParallelError(f"rank {rank} failed in {what}:\n{value}")
            out[rank] = value
        return [out[r] for r in range(self.world_size)]

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """``fn(comm, *args, **kwargs)`` on every rank; returns the results in rank order.
        ``fn`` must be importable by name (a module's top-level function)."""
        if self.closed:
            raise ParallelError("this cluster is closed (after close() or a failed run)")
        fn = _importable(fn)
        try:
            pickle.dumps((fn, args, kwargs))
        except Exception as e:
            raise TypeError(
                f"the arguments of {getattr(fn, '__name__', 'fn')} must be picklable to reach "
                f"the workers: {e}"
            ) from e
        self._seq += 1
        for q in self._tasks:
            q.put((self._seq, fn, args, kwargs))
        try:
            return self._collect(self._seq, getattr(fn, "__name__", "fn"), self.timeout)
        except BaseException:  # an interrupt too: workers still busy with this task are stopped
            self._kill()
            raise

    def log(self, rank: int, chars: int = 4000) -> str:
        """The last ``chars`` characters that worker ``rank`` wrote to its stdout and stderr."""
        rank = check.integer("rank", rank, minimum=0, maximum=self.world_size - 1)
        chars = check.integer("chars", chars, minimum=1)
        if self.closed:
            return self._logs.get(rank, "")[-chars:]
        try:
            with open(os.path.join(self._dir, f"rank{rank}.log"), errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return ""

    def _kill(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
        for p in self._procs:
            p.join(timeout=5)
        self._finish()

    def _finish(self) -> None:
        if not self.closed:  # keep the workers' output readable after the folder is gone
            self._logs = {r: self.log(r, 1 << 20) for r in range(self.world_size)}
        self.closed = True
        if self in _LIVE:
            _LIVE.remove(self)
        shutil.rmtree(self._dir, ignore_errors=True)

    def close(self) -> None:
        """Stop the workers (politely, then by force after 10 s) and remove the store."""
        if self.closed:
            return
        for q in self._tasks:
            q.put(None)
        for p in self._procs:
            p.join(timeout=10)
        self._kill()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Collectives written with point-to-point messages


class Comm:
    """One rank's view of the process group: ``rank``, ``world``, the ring collectives below,
    and counters: ``sent`` (bytes this rank has sent) and ``calls`` (collectives called).

    Every collective is a ring (Patarasuk & Yuan, 2009): each rank sends to ``rank + 1`` and
    receives from ``rank - 1``. An all-reduce of n elements is a reduce-scatter followed by an
    all-gather, each N - 1 steps of one n/N chunk, so each rank sends 2(N-1)/N n elements, the
    least any all-reduce can (Patarasuk & Yuan's lower bound)."""

    def __init__(self, rank: int, world: int) -> None:
        self.world = check.integer("world", world, minimum=1)
        self.rank = check.integer("rank", rank, minimum=0, maximum=self.world - 1)
        self.sent = 0
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        self.sent = 0
        self.calls = Counter()

    def send(self, x: Tensor, dst: int) -> dist.Work:
        """Non-blocking send (keep the tensor alive until ``.wait()``); counted in ``sent``."""
        check.tensor("x", x)
        dst = check.integer("dst", dst, minimum=0, maximum=self.world - 1)
        x = x.contiguous()
        self.sent += x.numel() * x.element_size()
        work = dist.isend(x, dst)
        assert work is not None
        return work

    def recv(self, shape: Sequence[int], dtype: torch.dtype, src: int) -> Tensor:
        """Receive a tensor of ``shape`` and ``dtype`` from rank ``src`` (blocking)."""
        shape = tuple(check.integer("shape[i]", n, minimum=0) for n in shape)
        check.instance("dtype", dtype, torch.dtype)
        src = check.integer("src", src, minimum=0, maximum=self.world - 1)
        out = torch.empty(shape, dtype=dtype)
        dist.recv(out, src)
        return out

    def _step(self, out: Tensor, into: Tensor) -> None:  # send `out` right, receive `into`
        work = self.send(out, (self.rank + 1) % self.world)
        dist.recv(into, (self.rank - 1) % self.world)
        work.wait()

    def chunk(self, n: int) -> int:
        """Elements per rank when n elements are split into ``world`` equal, padded chunks."""
        return -(-check.integer("n", n, minimum=0) // self.world)

    def _chunks(self, x: Tensor) -> Tensor:
        flat = x.detach().reshape(-1)
        c = self.chunk(flat.numel())
        out = flat.new_zeros(self.world * c)
        out[: flat.numel()] = flat
        return out.view(self.world, c)

    def _reduce_scatter(self, chunks: Tensor) -> Tensor:
        n, r = self.world, self.rank
        buf = torch.empty_like(chunks[0])
        for s in range(n - 1):  # after step s, chunk (r - s - 2) holds s + 2 ranks' terms
            self._step(chunks[(r - s - 1) % n], buf)
            chunks[(r - s - 2) % n] += buf
        return chunks[r]  # all N terms

    def _all_gather(self, chunks: Tensor) -> None:
        n, r = self.world, self.rank
        for s in range(n - 1):  # pass the complete chunks round the ring
            self._step(chunks[(r - s) % n], chunks[(r - s - 1) % n])

    def reduce_scatter(self, x: Tensor) -> Tensor:
        """Chunk ``rank`` (of ``world`` equal, zero-padded chunks of x flattened) of the sum of
        x over ranks: ceil(n/N) elements."""
        check.tensor("x", x)
        self.calls["reduce_scatter"] += 1
        return self._reduce_scatter(self._chunks(x)).clone()

    def all_gather(self, shard: Tensor) -> Tensor:
        """Every rank's 1-D ``shard`` (all the same length), concatenated in rank order."""
        check.tensor("shard", shard, ndim=1)
        self.calls["all_gather"] += 1
        chunks = shard.new_empty(self.world, shard.numel())
        chunks[self.rank] = shard.detach()
        self._all_gather(chunks)
        return chunks.reshape(-1)

    def all_reduce(self, x: Tensor) -> Tensor:
        """The sum of x over ranks, as a new tensor of x's shape (reduce-scatter + all-gather)."""
        check.tensor("x", x)
        self.calls["all_reduce"] += 1
        chunks = self._chunks(x)
        self._reduce_scatter(chunks)
        self._all_gather(chunks)
        return chunks.reshape(-1)[: x.numel()].view(x.shape).clone()

    def all_reduce_naive(self, x: Tensor, root: int = 0) -> Tensor:
        """The sum of x over ranks the naive way, for comparison with the ring: every rank sends
        x to ``root``, which adds them up and sends the sum back to every rank."""
        check.tensor("x", x)
        root = check.integer("root", root, minimum=0, maximum=self.world - 1)
        self.calls["all_reduce_naive"] += 1
        x = x.detach().contiguous()
        if self.rank != root:
            self.send(x, root).wait()
            out = torch.empty_like(x)
            dist.recv(out, root)
            return out
        total = x.clone()
        for r in range(self.world):
            if r != root:
                part = torch.empty_like(x)
                dist.recv(part, r)
                total += part
        for work in [self.send(total, r) for r in range(self.world) if r != root]:
            work.wait()
        return total

    def broadcast(self, x: Tensor, root: int = 0) -> Tensor:
        """Root's x on every rank (a chain round the ring: each rank sends it at most once)."""
        check.tensor("x", x)
        root = check.integer("root", root, minimum=0, maximum=self.world - 1)
        self.calls["broadcast"] += 1
        out = x.detach().clone().contiguous()
        pos = (self.rank - root) % self.world  # distance from the root along the ring
        if pos > 0:
            dist.recv(out, (self.rank - 1) % self.world)
        if pos < self.world - 1:
            self.send(out, (self.rank + 1) % self.world).wait()
        return out


def ring_bytes(kind: str, n: int, world: int, element_size: int = 4) -> int:
    """Bytes one rank sends in a ring collective over n elements padded to N equal chunks of
    c = ceil(n/N): all-reduce 2(N-1)c, reduce-scatter and all-gather (N-1)c elements (for an
    all-gather, n is the gathered length), times ``element_size``."""
    kind = check.one_of("kind", kind, ("all_reduce", "reduce_scatter", "all_gather"))
    n = check.integer("n", n, minimum=0)
    world = check.integer("world", world, minimum=1)
    c = -(-n // world)
    steps = 2 * (world - 1) if kind == "all_reduce" else world - 1
    return steps * c * check.integer("element_size", element_size, minimum=1)


# ----------------------------------------------------------------------------------------------
# A model small enough to train on every rank: an MLP with tanh, written as a list of tensors


def _sizes(sizes: Any) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
    out = [check.integer("sizes[i]", s, minimum=1) for s in sizes]
    if len(out) < 2:
        raise ValueError(f"sizes needs at least two widths, got {out}")
    return out


def _float_dtype(dtype: Any) -> torch.dtype:
    return check.one_of("dtype", dtype, (torch.float32, torch.float64))


def mlp_init(
    sizes: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[Tensor]:
    """[W0, b0, W1, b1, ...] for layer widths ``sizes`` (PyTorch's Linear initialization scale:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))), the same on every rank for the same seed."""
    sizes = _sizes(sizes)
    dtype = _float_dtype(dtype)
    g = torch.Generator().manual_seed(check.seed("seed", seed))
    out: list[Tensor] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = fan_in**-0.5
        out.append((torch.rand(fan_out, fan_in, generator=g, dtype=dtype) * 2 - 1) * bound)
        out.append((torch.rand(fan_out, generator=g, dtype=dtype) * 2 - 1) * bound)
    return out


def mlp_forward(params: Sequence[Tensor], x: Tensor, last: bool = True) -> Tensor:
    """tanh(x W0^T + b0) ... with no tanh after the network's last layer (``last=False``: these
    layers are not the network's last, so the last one keeps its tanh, as in a pipeline stage).
    ``params`` is [W0, b0, W1, b1, ...] as :func:`mlp_init` makes it."""
    if len(params) < 2 or len(params) % 2:
        raise ValueError(f"params must be weight, bias pairs, got {len(params)} tensors")
    check.tensor("x", x, floating=True)
    check.boolean("last", last)
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[2 * i], params[2 * i + 1])
        if i < n - 1 or not last:
            x = torch.tanh(x)
    return x


def regression_data(
    n: int, sizes: Sequence[int], seed: int = 1, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """(x, y): n Gaussian inputs and a random teacher MLP of the same widths' outputs plus noise."""
    n = check.integer("n", n, minimum=1)
    sizes = _sizes(sizes)
    dtype = _float_dtype(dtype)
    g = torch.Generator().manual_seed(check.seed("seed", seed))
    x = torch.randn(n, sizes[0], generator=g, dtype=dtype)
    teacher = mlp_init(sizes, seed + 1000, dtype)
    y = mlp_forward([2 * t for t in teacher], x) + 0.1 * torch.randn(
        n, sizes[-1], generator=g, dtype=dtype
    )
    return x, y


@dataclass(frozen=True)
class TrainSpec:
    """What :func:`train` trains: an MLP of widths ``sizes`` with Adam (``lr``) on ``n``
    regression samples for ``steps`` full-batch steps, split equally between the ranks."""

    sizes: tuple[int, ...] = (16, 64, 64, 64, 4)
    n: int = 64
    steps: int = 5
    lr: float = 1e-2
    seed: int = 0
    dtype: torch.dtype = torch.float64

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(_sizes(self.sizes)))
        check.integer("n", self.n, minimum=1)
        check.seed("seed", self.seed)
        check.integer("steps", self.steps, minimum=1)
        check.positive("lr", self.lr)
        check.one_of("dtype", self.dtype, (torch.float32, torch.float64))


def train_reference(spec: TrainSpec) -> dict[str, Any]:
    """One process, the whole batch: the result every parallel strategy must reproduce."""
    check.instance("spec", spec, TrainSpec)
    x, y = regression_data(spec.n, spec.sizes, spec.seed + 1, spec.dtype)
    params = [p.requires_grad_() for p in mlp_init(spec.sizes, spec.seed, spec.dtype)]
    opt = torch.optim.Adam(params, lr=spec.lr)
    losses = []
    for _ in range(spec.steps):
        opt.zero_grad()
        loss = F.mse_loss(mlp_forward(params, x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"params": [p.detach() for p in params], "losses": losses}


def _unique_bytes(tensors: Any) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    return _unique_bytes(
        v for st in opt.state.values() for k, v in st.items() if k != "step" and torch.is_tensor(v)
    )


class _ShardedLinear(torch.autograd.Function):
    """ZeRO-3's linear layer. The layer's weight and bias are one flat unit (as FSDP's flat
    parameter), of which this rank holds 1/N: the forward all-gathers the unit, computes and
    drops it; the backward all-gathers it again and reduce-scatters its gradient. A full weight
    exists only while its layer runs."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, shard: Tensor, comm: Comm, shape: Any) -> Tensor:
        weight, bias = _unflatten(comm.all_gather(shard), shape)
        ctx.save_for_backward(x, shard)
        ctx.comm, ctx.shape = comm, shape
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None, None]:
        x, shard = ctx.saved_tensors
        comm: Comm = ctx.comm
        out_f, in_f = ctx.shape
        # gathered again even for the first layer, whose input needs no gradient: ZeRO-3's
        # schedule fetches every layer's parameters for the backward pass
        weight, _ = _unflatten(comm.all_gather(shard), ctx.shape)
        gx = grad @ weight if ctx.needs_input_grad[0] else None
        g2 = grad.reshape(-1, out_f)
        flat = torch.cat([(g2.T @ x.reshape(-1, in_f)).reshape(-1), g2.sum(0)])
        return gx, comm.reduce_scatter(flat) / comm.world, None, None


def _unflatten(flat: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    out_f, in_f = shape
    return flat[: out_f * in_f].view(out_f, in_f), flat[out_f * in_f : out_f * (in_f + 1)]


Strategy = Literal["local", "dp", "zero1", "zero2", "zero3", "ddp", "torch-zero1", "fsdp2"]


def _torch_model(params: Sequence[Tensor]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(params) // 2):
        w, b = params[2 * i], params[2 * i + 1]
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def train(comm: Comm, strategy: Strategy, spec: TrainSpec, device: str = "cpu") -> dict[str, Any]:
    """Train ``spec`` on this rank's 1/N of the batch with one data-parallel ``strategy``:

    - ``"local"``: no communication at all, each rank trains on its own rows (the control).
    - ``"dp"``: every rank holds everything; gradients averaged with :meth:`Comm.all_reduce`.
    - ``"zero1"``: Adam's moments for 1/N of each parameter (Rajbhandari et al., 2020): the
      gradients are reduce-scattered, each rank updates its shard, the shards are all-gathered.
    - ``"zero2"``: as zero1, and each gradient is reduce-scattered the moment backward has
      accumulated it and then freed, so only 1/N of the gradients is ever held.
    - ``"zero3"``: as zero2, and the parameters too are held as shards; each layer all-gathers
      its weights in the forward pass and again in the backward pass (:class:`_ShardedLinear`).
    - ``"ddp"``, ``"torch-zero1"``, ``"fsdp2"``: PyTorch's ``DistributedDataParallel``,
      ``ZeroRedundancyOptimizer`` on DDP, and FSDP2's ``fully_shard`` on each layer.

    Returns the full parameters after training, the losses (this rank's), the bytes this rank
    held (``held``: params and grads at the end of the last backward pass, once its temporary
    buffers are freed; optimizer state, not counting Adam's step counters, after the step), and
    the bytes it sent and the collectives it called during the last step (the hand-written
    strategies only: torch's collectives are not counted).

    ``device``: where torch's strategies compute (``"cuda:0"`` etc., with the NCCL backend); the
    hand-written ones move CPU tensors through gloo and need ``"cpu"``."""
    strategy = check.one_of("strategy", strategy, get_args(Strategy))
    check.instance("spec", spec, TrainSpec)
    dev = torch.device(check.instance("device", device, str))
    if dev.type != "cpu" and strategy not in ("ddp", "torch-zero1", "fsdp2"):
        raise ValueError(f"device {device!r}: the hand-written strategy {strategy!r} needs 'cpu'")
    n_, world, rank = spec.n, comm.world, comm.rank
    if n_ % world:
        raise ValueError(f"spec.n ({n_}) must be a multiple of the world size ({world})")
    x, y = regression_data(n_, spec.sizes, spec.seed + 1, spec.dtype)
    rows = slice(rank * n_ // world, (rank + 1) * n_ // world)
    x, y = x[rows], y[rows]
    full = mlp_init(spec.sizes, spec.seed, spec.dtype)
    held: dict[str, int] = {}
    losses: list[float] = []
    if strategy in ("ddp", "torch-zero1", "fsdp2"):
        return _train_torch(strategy, spec, full, x, y, dev)
    # each layer's weight and bias are one flat unit, padded to N equal chunks (as FSDP does)
    n_layers = len(full) // 2
    shapes = [(full[2 * i].shape[0], full[2 * i].shape[1]) for i in range(n_layers)]
    units = [
        comm._chunks(torch.cat([full[2 * i].reshape(-1), full[2 * i + 1]])) for i in range(n_layers)
    ]
    record: dict[str, Any] = {}
    params: list[Tensor] = []
    shards: list[Tensor] = []
    if strategy == "zero3":
        shards = [u[rank].clone().requires_grad_() for u in units]
        opt = torch.optim.Adam(shards, lr=spec.lr)

        def forward() -> Tensor:
            h = x
            for i, shape in enumerate(shapes):
                h = _ShardedLinear.apply(h, shards[i], comm, shape)
                if i < n_layers - 1:
                    h = torch.tanh(h)
            return h

        for _ in range(spec.steps):
            comm.reset()
            opt.zero_grad()
            loss = F.mse_loss(forward(), y)
            loss.backward()
            held = {
                "params": _unique_bytes(shards),
                "grads": _unique_bytes(s.grad for s in shards),
            }
            opt.step()
            held["optimizer"] = _state_bytes(opt)
            losses.append(loss.item())
            record = {"sent": comm.sent, "calls": dict(comm.calls)}
        for s, shape in zip(shards, shapes, strict=True):
            params += _unflatten(comm.all_gather(s.detach()), shape)
        return _result(params, losses, held, record)
    bufs = [u.reshape(-1) for u in units]
    for buf, shape in zip(bufs, shapes, strict=True):
        params += [t.requires_grad_() for t in _unflatten(buf, shape)]
    c = [u.shape[1] for u in units]
    if strategy in ("dp", "local"):
        opt = torch.optim.Adam(params, lr=spec.lr)
    else:
        shards = [
            buf[rank * ci : (rank + 1) * ci].requires_grad_()
            for buf, ci in zip(bufs, c, strict=True)
        ]
        opt = torch.optim.Adam(shards, lr=spec.lr)

    def layer_grad(i: int) -> Tensor:
        gw, gb = params[2 * i].grad, params[2 * i + 1].grad
        assert gw is not None and gb is not None
        return torch.cat([gw.reshape(-1), gb])

    if strategy == "zero2":
        ready: Counter[int] = Counter()

        def reduce_now(p: Tensor) -> None:  # when both of a layer's gradients are complete
            i = layer_of[id(p)]
            ready[i] += 1
            if ready[i] == 2:
                shards[i].grad = comm.reduce_scatter(layer_grad(i)) / world
                params[2 * i].grad = params[2 * i + 1].grad = None
                ready[i] = 0

        layer_of = {id(p): i // 2 for i, p in enumerate(params)}
        for p in params:
            p.register_post_accumulate_grad_hook(reduce_now)
    for _ in range(spec.steps):
        comm.reset()
        opt.zero_grad()
        for p in params:
            p.grad = None
        loss = F.mse_loss(mlp_forward(params, x), y)
        loss.backward()
        held = {
            "params": _unique_bytes(bufs),
            "grads": _unique_bytes([p.grad for p in params] + [s.grad for s in shards]),
        }
        if strategy == "dp":
            for i in range(n_layers):
                g = comm.all_reduce(layer_grad(i)) / world
                params[2 * i].grad, params[2 * i + 1].grad = _unflatten(g, shapes[i])
        elif strategy == "zero1":
            for i, s in enumerate(shards):
                s.grad = comm.reduce_scatter(layer_grad(i)) / world
        opt.step()
        held["optimizer"] = _state_bytes(opt)  # Adam's state exists from the first step on
        if strategy not in ("dp", "local"):
            with torch.no_grad():
                for buf, s in zip(bufs, shards, strict=True):
                    buf.copy_(comm.all_gather(s.detach()))
        losses.append(loss.item())
        record = {"sent": comm.sent, "calls": dict(comm.calls)}
    return _result([p.detach() for p in params], losses, held, record)


def _result(
    params: list[Tensor], losses: list[float], held: dict[str, int], record: dict[str, Any]
) -> dict[str, Any]:
    return {"params": [p.clone() for p in params], "losses": losses, "held": held, **record}


def _train_torch(
    strategy: str, spec: TrainSpec, full: list[Tensor], x: Tensor, y: Tensor, dev: torch.device
) -> dict[str, Any]:
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _torch_model(full).to(dev)
    x, y = x.to(dev), y.to(dev)
    held: dict[str, int] = {}
    losses: list[float] = []
    if strategy == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        net: nn.Module = model
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    else:
        # the gradients live in DDP's buckets (by default DDP keeps a second copy there)
        net = DDP(
            model, device_ids=None if dev.type == "cpu" else [dev], gradient_as_bucket_view=True
        )
        if strategy == "ddp":
            opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
        else:
            from torch.distributed.optim import ZeroRedundancyOptimizer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt = ZeroRedundancyOptimizer(
                    model.parameters(), optimizer_class=torch.optim.Adam, lr=spec.lr
                )
    for _ in range(spec.steps):
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        held = {
            "params": _unique_bytes(model.parameters()),
            "grads": _unique_bytes(p.grad for p in model.parameters()),
        }
        opt.step()
        held["optimizer"] = _state_bytes(opt.optim if hasattr(opt, "optim") else opt)
        losses.append(loss.item())
    params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in model.parameters()]
    return _result([p.detach().cpu() for p in params], losses, held, {})


# ----------------------------------------------------------------------------------------------
# Collectives against torch's, and their cost


def collectives_check(comm: Comm, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each hand-written collective against ``torch.distributed``'s on the same float64 data
    (rank r's tensor is drawn from seed + r): the largest difference, and the bytes sent."""
    n = check.integer("n", n, minimum=1)
    g = torch.Generator().manual_seed(check.seed("seed", seed) + comm.rank)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    out: dict[str, Any] = {"n": n, "element_size": 8}
    comm.reset()
    mine = comm.all_reduce(x)
    out["sent_all_reduce"] = comm.sent
    ref = x.clone()
    dist.all_reduce(ref)
    out["all_reduce"] = (mine - ref).abs().max().item()
    out["scale_all_reduce"] = x.abs().max().item()  # |terms|: what round-off is relative to
    comm.reset()
    shard = comm.reduce_scatter(x)
    out["sent_reduce_scatter"] = comm.sent
    c = shard.numel()
    valid = max(0, min(c, n - comm.rank * c))  # the rest of the last chunks is padding
    diff = (shard[:valid] - ref[comm.rank * c : comm.rank * c + valid]).abs()
    out["all_reduce_vs_reduce_scatter"] = diff.max().item() if valid else 0.0
    comm.reset()
    gathered = comm.all_gather(shard)
    out["sent_all_gather"] = comm.sent
    out["all_gather_vs_all_reduce"] = (gathered[:n] - mine).abs().max().item()
    parts = [torch.empty_like(shard) for _ in range(comm.world)]
    dist.all_gather(parts, shard)
    out["all_gather"] = (torch.cat(parts) - gathered).abs().max().item()
    comm.reset()
    naive = comm.all_reduce_naive(x)
    out["sent_naive"] = comm.sent
    out["naive"] = (naive - ref).abs().max().item()
    comm.reset()
    b = comm.broadcast(x, root=comm.world - 1)
    out["sent_broadcast"] = comm.sent
    ref_b = x.clone()
    dist.broadcast(ref_b, src=comm.world - 1)
    out["broadcast"] = (b - ref_b).abs().max().item()
    return out


def time_all_reduce(
    comm: Comm, sizes: Sequence[int], repeats: int = 5, torch_too: bool = True
) -> dict[str, list[float]]:
    """Median seconds of one float32 all-reduce of each size (elements): the hand-written ring
    and, with ``torch_too``, ``dist.all_reduce``. Ranks are synchronized by a barrier first."""
    repeats = check.integer("repeats", repeats, minimum=1)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a sequence of element counts, got {sizes!r}")
    res: dict[str, list[float]] = {"sizes": [float(s) for s in sizes], "ring": [], "torch": []}
    for n in sizes:
        x = torch.ones(check.integer("sizes[i]", n, minimum=1))
        for name, fn in (("ring", comm.all_reduce), ("torch", dist.all_reduce)):
            if name == "torch" and not torch_too:
                continue
            ts = []
            for _ in range(repeats + 1):
                dist.barrier()
                t0 = time.perf_counter()
                fn(x.clone())
                ts.append(time.perf_counter() - t0)
            res[name].append(sorted(ts[1:])[len(ts[1:]) // 2])
    return res


def fit_alpha_beta(
    sizes_bytes: Sequence[float], seconds: Sequence[float], world: int
) -> tuple[float, float]:
    """Least squares fit of the ring all-reduce cost t = 2(N-1) alpha + 2(N-1)/N n beta (alpha:
    seconds per message, beta: seconds per byte; Thakur et al., 2005) to measured times, in
    relative error (each equation divided by its measured time), so that small sizes count."""
    n = torch.as_tensor(sizes_bytes, dtype=torch.float64)
    t = torch.as_tensor(seconds, dtype=torch.float64)
    if n.ndim != 1 or n.shape != t.shape or n.numel() < 2:
        raise ValueError("sizes_bytes and seconds must be 1-D, of equal length, at least 2")
    world = check.integer("world", world, minimum=2)
    if not bool(torch.isfinite(n).all() and torch.isfinite(t).all()):
        raise ValueError("sizes_bytes and seconds must be finite")
    if bool((t <= 0).any()):
        raise ValueError("seconds must be positive")
    if bool((n == n[0]).all()):
        raise ValueError("sizes_bytes needs at least two different sizes to separate alpha, beta")
    a = torch.stack([torch.full_like(n, 2.0 * (world - 1)), 2 * (world - 1) / world * n], 1)
    sol = torch.linalg.lstsq(a / t.unsqueeze(1), torch.ones_like(t).unsqueeze(1)).solution
    alpha, beta = sol.squeeze(1).tolist()
    return alpha, beta


@dataclass(frozen=True)
class Link:
    """A link's alpha-beta model: ``latency`` (s per message) and ``bandwidth`` (bytes/s per
    direction per GPU)."""

    name: str
    latency: float
    bandwidth: float

    def __post_init__(self) -> None:
        check.instance("name", self.name, str)
        object.__setattr__(self, "latency", check.nonnegative("latency", self.latency))
        object.__setattr__(self, "bandwidth", check.positive("bandwidth", self.bandwidth))


def collective_seconds(kind: str, nbytes: float, world: int, link: Link) -> float:
    """Ring-model time of one collective on ``nbytes`` (the full buffer; all-gather: the gathered
    size): all-reduce 2(N-1) alpha + 2(N-1)/N n/B; reduce-scatter and all-gather half of that."""
    kind = check.one_of("kind", kind, ("all_reduce", "reduce_scatter", "all_gather"))
    nbytes = check.nonnegative("nbytes", nbytes)
    world = check.integer("world", world, minimum=1)
    check.instance("link", link, Link)
    steps = (2 if kind == "all_reduce" else 1) * (world - 1)
    return steps * link.latency + steps / world * nbytes / link.bandwidth


def ddp_overlap(
    comm: Comm, width: int = 128, depth: int = 8, bucket_cap_mb: float = 0.0625
) -> dict[str, Any]:
    """What DistributedDataParallel does during one backward pass of ``depth`` tanh layers of
    ``width``: when each layer's weight gradient is complete (a post-accumulate hook), when each
    gradient bucket's all-reduce is launched and when it has finished (a communication hook and
    its future). Times in seconds after backward began; ``backward``: when ``loss.backward()``
    returned (DDP makes it wait for every bucket). ``elements``: each bucket's size."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    width = check.integer("width", width, minimum=1)
    depth = check.integer("depth", depth, minimum=1)
    check.positive("bucket_cap_mb", bucket_cap_mb)
    torch.manual_seed(0)
    layers = [nn.Linear(width, width) for _ in range(depth)]
    model = nn.Sequential(*[nn.Sequential(lin, nn.Tanh()) for lin in layers])
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    ready: dict[int, float] = {}
    launches: list[tuple[float, int]] = []
    done: list[float] = []
    for i, lin in enumerate(layers):
        lin.weight.register_post_accumulate_grad_hook(
            lambda p, i=i: ready.__setitem__(i, time.perf_counter())
        )

    def finished(fut: Any) -> Tensor:
        done.append(time.perf_counter())
        return cast(Tensor, fut.value()[0])

    # no annotations: DDP compares the bucket's annotation with dist.GradBucket, and this
    # module's annotations are strings
    def hook(state, bucket):
        launches.append((time.perf_counter(), bucket.buffer().numel()))
        buf = bucket.buffer().div_(comm.world)
        work = dist.all_reduce(buf, async_op=True)
        assert work is not None
        return work.get_future().then(finished)

    ddp.register_comm_hook(None, hook)
    x = torch.randn(64, width)
    for _ in range(3):  # the first iteration builds the buckets; record the last
        launches.clear()
        done.clear()
        ready.clear()
        loss = ddp(x).square().mean()
        t0 = time.perf_counter()
        loss.backward()
        t1 = time.perf_counter()
    return {
        "ready": [ready[i] - t0 for i in range(depth)],
        "launch": [t - t0 for t, _ in launches],
        "done": [t - t0 for t in done],
        "elements": [n for _, n in launches],
        "backward": t1 - t0,
    }


# ----------------------------------------------------------------------------------------------
# Tensor parallelism (Shoeybi et al., 2019)


class _Copy(torch.autograd.Function):
    """Megatron's f: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, comm: Comm) -> Tensor:
        ctx.comm = comm
        return x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.comm.all_reduce(grad), None


class _Reduce(torch.autograd.Function):
    """Megatron's g: all-reduce forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, comm: Comm) -> Tensor:
        return comm.all_reduce(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class TensorParallelBlock(nn.Module):
    """This rank's 1/t of a pre-norm :class:`hamlib.transformer.Block` (softmax attention,
    GELU or SwiGLU): the query/key/value projections and the feed-forward's first matrices split
    by output rows (column-parallel, heads n_heads/t per rank), the attention output projection
    and the feed-forward's last matrix split by input columns (row-parallel), the norms copied.
    One all-reduce after attention and one after the feed-forward in the forward pass, and one
    at each of their inputs in the backward pass."""

    def __init__(self, block: Block, comm: Comm) -> None:
        super().__init__()
        check.instance("block", block, Block)
        check.instance("comm", comm, Comm)
        t, r = comm.world, comm.rank
        attn = cast(MultiHeadAttention, block.attn)
        ffn = cast(FeedForward, block.ffn)
        if not block.pre or attn.score != "softmax":
            raise ValueError("block must be pre-norm with softmax attention")
        if cast(nn.Linear, attn.q_proj).bias is not None:
            raise ValueError("block's attention has biases: this split handles bias-free layers")
        if attn.n_kv_heads % t or attn.n_heads % t:
            raise ValueError(
                f"n_heads ({attn.n_heads}) and n_kv_heads ({attn.n_kv_heads}) must be "
                f"multiples of the world size ({t})"
            )
        hidden = ffn.w1.out_features
        if hidden % t:
            raise ValueError(
                f"the feed-forward width ({hidden}) must be a multiple of the world size ({t})"
            )
        self.comm = comm
        self.norm1: nn.Module = copy.deepcopy(block.norm1)
        self.norm2: nn.Module = copy.deepcopy(block.norm2)
        self.rope: bool = attn.rope
        self.rope_base: float = attn.rope_base
        self.heads, self.kv_heads, self.hd = attn.n_heads // t, attn.n_kv_heads // t, attn.head_dim

        def rows(w: Tensor, size: int) -> nn.Parameter:
            return nn.Parameter(w.detach()[r * size : (r + 1) * size].clone())

        def cols(w: Tensor, size: int) -> nn.Parameter:
            return nn.Parameter(w.detach()[:, r * size : (r + 1) * size].clone())

        q_rows, kv_rows = self.heads * self.hd, self.kv_heads * self.hd
        self.wq, self.wk = rows(attn.q_proj.weight, q_rows), rows(attn.k_proj.weight, kv_rows)
        self.wv, self.wo = rows(attn.v_proj.weight, kv_rows), cols(attn.o_proj.weight, q_rows)
        self.w1, self.w2 = rows(ffn.w1.weight, hidden // t), cols(ffn.w2.weight, hidden // t)
        self.w3 = None if ffn.w3 is None else rows(ffn.w3.weight, hidden // t)

    def forward(self, x: Tensor) -> Tensor:
        from hamlib.attention import apply_rope

        b, s, _ = x.shape
        h = _Copy.apply(self.norm1(x), self.comm)
        q = F.linear(h, self.wq).view(b, s, self.heads, self.hd).transpose(1, 2)
        k = F.linear(h, self.wk).view(b, s, self.kv_heads, self.hd).transpose(1, 2)
        v = F.linear(h, self.wv).view(b, s, self.kv_heads, self.hd).transpose(1, 2)
        if self.rope:
            pos = torch.arange(s)
            q, k = apply_rope(q, pos, self.rope_base), apply_rope(k, pos, self.rope_base)
        group = self.heads // self.kv_heads
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o = F.linear(o.transpose(1, 2).reshape(b, s, -1), self.wo)
        x = x + _Reduce.apply(o, self.comm)
        h = _Copy.apply(self.norm2(x), self.comm)
        a = F.linear(h, self.w1)
        a = F.gelu(a) if self.w3 is None else F.silu(a) * F.linear(h, self.w3)
        return x + _Reduce.apply(F.linear(a, self.w2), self.comm)


def saved_bytes(fn: Callable[[], Tensor], exclude: Sequence[Tensor] = ()) -> tuple[Tensor, int]:
    """(fn(), bytes of the tensors autograd saved for the backward pass while running fn),
    each storage counted once and the ``exclude`` tensors (the parameters) not counted."""
    check.function("fn", fn)
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: set[int] = set()
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def tensor_parallel_check(
    comm: Comm, config: dict[str, Any], batch: int = 2, seq: int = 16, seed: int = 0
) -> dict[str, Any]:
    """The unsplit Block (``GPTConfig(**config)``, float64) and its tensor-parallel split over
    the world: largest differences of the output, the input gradient and the weight gradients
    (each rank's slice against the same slice of the full gradient), the all-reduces in the
    forward and backward pass, and the activation bytes each saves for backward."""
    from hamlib.transformer import GPTConfig

    check.instance("config", config, dict)
    batch = check.integer("batch", batch, minimum=1)
    seq = check.integer("seq", seq, minimum=1)
    torch.manual_seed(check.seed("seed", seed))
    block = Block(GPTConfig(**config)).double()
    d = block.attn.d_model
    x = torch.randn(batch, seq, d, dtype=torch.float64)
    up = torch.randn(batch, seq, d, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    ref, ref_saved = saved_bytes(lambda: block(xr), list(block.parameters()))
    (ref * up).sum().backward()
    tp = TensorParallelBlock(block, comm)
    xt = x.clone().requires_grad_()
    comm.reset()
    out, tp_saved = saved_bytes(lambda: tp(xt), list(tp.parameters()))
    forward_calls = comm.calls["all_reduce"]
    (out * up).sum().backward()
    t, r = comm.world, comm.rank
    attn = cast(MultiHeadAttention, block.attn)
    ffn = cast(FeedForward, block.ffn)

    def g(p: Tensor) -> Tensor:
        assert p.grad is not None
        return p.grad

    q_rows, kv_rows = tp.heads * tp.hd, tp.kv_heads * tp.hd
    hidden = ffn.w1.out_features // t
    pairs = [
        (tp.wq, g(attn.q_proj.weight)[r * q_rows : (r + 1) * q_rows]),
        (tp.wk, g(attn.k_proj.weight)[r * kv_rows : (r + 1) * kv_rows]),
        (tp.wv, g(attn.v_proj.weight)[r * kv_rows : (r + 1) * kv_rows]),
        (tp.wo, g(attn.o_proj.weight)[:, r * q_rows : (r + 1) * q_rows]),
        (tp.w1, g(ffn.w1.weight)[r * hidden : (r + 1) * hidden]),
        (tp.w2, g(ffn.w2.weight)[:, r * hidden : (r + 1) * hidden]),
    ]
    if tp.w3 is not None and ffn.w3 is not None:
        pairs.append((tp.w3, g(ffn.w3.weight)[r * hidden : (r + 1) * hidden]))
    assert all(p.grad is not None for p, _ in pairs)
    return {
        "output": (out - ref).abs().max().item(),
        "input_grad": (g(xt) - g(xr)).abs().max().item(),
        "weight_grads": max((g(p) - ref_g).abs().max().item() for p, ref_g in pairs),
        "scale": ref.abs().max().item(),
        "forward_all_reduces": forward_calls,
        "backward_all_reduces": comm.calls["all_reduce"] - forward_calls,
        "all_gathers": comm.calls["all_gather"],
        "saved_full": ref_saved,
        "saved_rank": tp_saved,
        "weights_full": sum(p.numel() for n, p in block.named_parameters() if "norm" not in n),
        "weights_rank": sum(p.numel() for p, _ in pairs),
    }


# ----------------------------------------------------------------------------------------------
# Pipeline parallelism


Schedule = Literal["gpipe", "1f1b"]


def pipeline_schedule(kind: Schedule, stages: int, micro: int, stage: int) -> list[tuple[str, int]]:
    """The order in which ``stage`` (of ``stages``) runs forward ("F", i) and backward ("B", i)
    passes of micro-batches i = 0..micro-1.

    - GPipe (Huang et al., 2019): every forward, then every backward.
    - 1F1B (PipeDream-Flush; Narayanan et al., 2021): ``stages - stage - 1`` forwards to fill
      the pipe, then one forward and one backward in turn, then the remaining backwards. The
      same bubble as GPipe, but at most ``stages - stage`` micro-batches' activations held."""
    kind = check.one_of("kind", kind, get_args(Schedule))
    stages = check.integer("stages", stages, minimum=1)
    micro = check.integer("micro", micro, minimum=1)
    stage = check.integer("stage", stage, minimum=0, maximum=stages - 1)
    if kind == "gpipe":
        return [("F", i) for i in range(micro)] + [("B", i) for i in range(micro)]
    warm = min(stages - stage - 1, micro)
    ops = [("F", i) for i in range(warm)]
    for i in range(micro - warm):
        ops += [("F", warm + i), ("B", i)]
    return ops + [("B", i) for i in range(micro - warm, micro)]


def bubble_fraction(stages: int, micro: int) -> float:
    """(p - 1)/(m + p - 1): the idle share of a GPipe or 1F1B step with p stages, m micro-batches
    and the same time per micro-batch on every stage."""
    p = check.integer("stages", stages, minimum=1)
    m = check.integer("micro", micro, minimum=1)
    return (p - 1) / (m + p - 1)


def pipeline_train(
    comm: Comm,
    kind: Schedule,
    spec: TrainSpec,
    micro: int,
    delay: tuple[float, float] = (0.0, 0.0),
) -> dict[str, Any]:
    """One training step's gradients of ``spec``'s MLP split into ``world`` stages of equal
    layer counts, the batch in ``micro`` micro-batches, run with schedule ``kind``: activations
    travel forward and their gradients backward as point-to-point messages.

    ``delay`` = (forward, backward) seconds each stage waits after computing a micro-batch,
    standing in for a larger model's compute so that the timeline shows the schedule and not the
    CPU (ranks on fewer cores than ranks cannot compute at the same time, but can wait at the
    same time). Returns the largest difference of this stage's gradients from one process's
    full-batch gradients, the events (kind, micro-batch, start, end; ``time.perf_counter``, the
    same clock in every process on Linux), the most micro-batches whose activations this stage
    held at once, and the most bytes of tensors autograd saved that were alive at once (the
    stage's inputs included; measured after each forward through weak references, so that
    anything still holding them, such as a send in flight, counts)."""
    kind = check.one_of("kind", kind, get_args(Schedule))
    check.instance("spec", spec, TrainSpec)
    micro = check.integer("micro", micro, minimum=1)
    if isinstance(delay, (str, bytes)) or not isinstance(delay, Sequence) or len(delay) != 2:
        raise TypeError(f"delay must be a pair (forward, backward) of seconds, got {delay!r}")
    tf, tb = (check.nonnegative("delay", d) for d in delay)
    p, r = comm.world, comm.rank
    layers = len(spec.sizes) - 1
    if layers % p:
        raise ValueError(f"the MLP's {layers} layers must split equally over {p} stages")
    if spec.n % micro:
        raise ValueError(f"spec.n ({spec.n}) must be a multiple of micro ({micro})")
    x, y = regression_data(spec.n, spec.sizes, spec.seed + 1, spec.dtype)
    full = [t.requires_grad_() for t in mlp_init(spec.sizes, spec.seed, spec.dtype)]
    F.mse_loss(mlp_forward(full, x), y).backward()  # the reference, on every rank
    per = layers // p
    mine = [t.detach().clone().requires_grad_() for t in full[2 * per * r : 2 * per * (r + 1)]]
    ref = [t.grad for t in full[2 * per * r : 2 * per * (r + 1)]]
    last = r == p - 1
    mb = spec.n // micro
    width_in, width_out = spec.sizes[per * r], spec.sizes[per * (r + 1)]
    inputs: dict[int, Tensor] = {}
    outputs: dict[int, Tensor] = {}
    events: list[tuple[str, int, float, float]] = []
    pending: list[tuple[Any, Tensor]] = []  # gradient sends in flight, with what each sends
    sent_out: dict[int, tuple[Any, Tensor]] = {}  # activation sends, by micro-batch
    params = {t.untyped_storage().data_ptr() for t in mine}
    saved: list[weakref.ref[Tensor]] = []  # every tensor autograd saved, held weakly

    def keep(t: Tensor) -> Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved.append(weakref.ref(t))
        return t

    def live_bytes() -> int:  # bytes of the saved tensors still alive, each storage once
        pending[:] = [(w, t) for w, t in pending if not w.is_completed()]
        alive = [t for t in (ref() for ref in saved) if t is not None]
        return sum(
            {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in alive}.values()
        )

    in_flight = peak = peak_bytes = 0
    dist.barrier()
    for op, i in pipeline_schedule(kind, p, micro, r):
        if op == "F":
            if r == 0:
                h = x[i * mb : (i + 1) * mb].clone()  # its own storage, as a received input has
            else:
                h = comm.recv((mb, width_in), spec.dtype, r - 1).requires_grad_()
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
                out = mlp_forward(mine, h, last=last)
                if last:
                    target = y[i * mb : (i + 1) * mb].clone()
                    out = F.mse_loss(out, target) / micro
            time.sleep(tf)
            events.append(("F", i, t0, time.perf_counter()))
            inputs[i], outputs[i] = h, out
            if not last:
                sent_out[i] = (comm.send(out.detach(), r + 1), out)
            in_flight += 1
            peak = max(peak, in_flight)
            peak_bytes = max(peak_bytes, live_bytes())  # the most is alive after a forward
            del h, out
        else:
            grad = None if last else comm.recv((mb, width_out), spec.dtype, r + 1)
            t0 = time.perf_counter()
            outputs.pop(i).backward(grad)
            time.sleep(tb)
            events.append(("B", i, t0, time.perf_counter()))
            h = inputs.pop(i)
            in_flight -= 1
            if i in sent_out:  # the next stage has used it (it sent this gradient back): done
                sent_out.pop(i)[0].wait()
            if r > 0:
                assert h.grad is not None
                pending.append((comm.send(h.grad, r - 1), h.grad))
            del h, grad
    for work, _ in pending:
        work.wait()
    dist.barrier()
    diffs = []
    for t, g in zip(mine, ref, strict=True):
        assert t.grad is not None and g is not None
        diffs.append((t.grad - g).abs().max().item())
    return {
        "grad_diff": max(diffs),
        "events": events,
        "peak_in_flight": peak,
        "peak_bytes": peak_bytes,
    }


Events = Sequence[Sequence[tuple[str, int, float, float]]]


def _events(events: Any) -> list[list[tuple[str, int, float, float]]]:
    """Check and copy a pipeline's events: one list per stage of (op, micro-batch, start, end)."""
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(f"events must be one sequence of events per stage, got {events!r}")
    if not events:
        raise ValueError("events holds no event")
    out = []
    for ev in events:
        if isinstance(ev, (str, bytes)) or not isinstance(ev, Sequence):
            raise TypeError(f"events[s] must be a sequence of events, got {ev!r}")
        stage = []
        for e in ev:
            if not isinstance(e, Sequence) or len(e) != 4 or e[0] not in ("F", "B"):
                raise ValueError(f"an event is (op 'F' or 'B', micro-batch, start, end), got {e!r}")
            op, i, start, end = e[0], check.integer("micro-batch", e[1], minimum=0), e[2], e[3]
            start, end = check.real("start", start), check.real("end", end)
            if end < start:
                raise ValueError(f"an event ends before it starts: {e!r}")
            stage.append((op, i, start, end))
        out.append(stage)
    if not any(out):
        raise ValueError("events holds no event")
    return out


def measured_bubble(events: Events) -> float:
    """1 - (busy time summed over stages) / (stages x the step's span), from every stage's
    events (:func:`pipeline_train`)."""
    evs = _events(events)
    starts = [e[2] for ev in evs for e in ev]
    ends = [e[3] for ev in evs for e in ev]
    span = max(ends) - min(starts)
    if span <= 0:
        raise ValueError("the events span no time")
    busy = sum(e[3] - e[2] for ev in evs for e in ev)
    return 1 - busy / (len(evs) * span)


class _Recompute(torch.autograd.Function):
    """Activation checkpointing of one segment: the forward runs it without recording and saves
    only its input; the backward runs it again, recording, and backpropagates through it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, segment: nn.Module, *params: Tensor) -> Tensor:
        ctx.segment = segment
        ctx.save_for_backward(x)
        with torch.no_grad():
            return cast(Tensor, segment(x))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        x = x.detach().requires_grad_(ctx.needs_input_grad[0])
        params = [p for p in ctx.segment.parameters()]
        with torch.enable_grad():
            out = ctx.segment(x)
        inputs = ([x] if ctx.needs_input_grad[0] else []) + params
        grads = list(torch.autograd.grad(out, inputs, grad))
        gx = grads.pop(0) if ctx.needs_input_grad[0] else None
        return (gx, None, *grads)


def checkpointed(segment: nn.Module, x: Tensor) -> Tensor:
    """``segment(x)`` with activation checkpointing (:class:`_Recompute`): the same values and
    gradients as without it, one more forward pass of the segment during backward."""
    check.instance("segment", segment, nn.Module)
    check.tensor("x", x, floating=True)
    return cast(Tensor, _Recompute.apply(x, segment, *segment.parameters()))


def pipeline_waits(events: Events) -> list[float]:
    """For every event that needed a message (a forward after stage 0, a backward before the
    last stage), the time between the message being due (the sending event's end, or this
    stage's previous event's end if later) and the event starting: what a message and a
    process's wake-up cost, in seconds."""
    evs = _events(events)
    p = len(evs)
    end = {(s, e[0], e[1]): e[3] for s, ev in enumerate(evs) for e in ev}
    waits = []
    for s, ev in enumerate(evs):
        for k, (op, i, start, _) in enumerate(ev):
            src = s - 1 if op == "F" else s + 1
            if not 0 <= src < p:
                continue
            if (src, op, i) not in end:
                raise ValueError(f"stage {s}'s {op}{i} has no matching {op}{i} on stage {src}")
            due = max(end[(src, op, i)], ev[k - 1][3] if k else -math.inf)
            waits.append(start - due)
    return waits


def checkpoint_costs(spec: TrainSpec, batch: int = 64, every: int = 2) -> dict[str, Any]:
    """Activation checkpointing on ``spec``'s MLP in segments of ``every`` layers (linear and
    tanh; a tanh saves its output, which is the next layer's saved input, so a segment of one
    layer would save nothing):
    bytes autograd saves during the forward pass with and without it, the number of layer
    forwards a training step runs (counted by forward hooks) and the largest difference between
    the two runs' gradients."""
    check.instance("spec", spec, TrainSpec)
    batch = check.integer("batch", batch, minimum=1)
    every = check.integer("every", every, minimum=1)
    model = _torch_model(mlp_init(spec.sizes, spec.seed, spec.dtype))
    x = torch.randn(
        batch, spec.sizes[0], dtype=spec.dtype, generator=torch.Generator().manual_seed(0)
    )
    calls: Counter[str] = Counter()
    for m in model:
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda *_: calls.update(["linear"]))
    segments = [model[i : i + 2 * every] for i in range(0, len(model), 2 * every)]
    out: dict[str, Any] = {"segments": len(segments)}
    grads = []
    for name, use in (("plain", False), ("checkpointed", True)):
        calls.clear()
        model.zero_grad()

        def run(use: bool = use) -> Tensor:
            h = x
            for seg in segments:
                h = checkpointed(seg, h) if use else seg(h)
            return h

        y, nbytes = saved_bytes(run, list(model.parameters()))
        y.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        out[f"{name}_saved"] = nbytes
        out[f"{name}_forwards"] = calls["linear"]
    out["grad_diff"] = max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))
    out["input_bytes"] = sum(batch * s for s in spec.sizes[:-1]) * x.element_size()
    return out


# ----------------------------------------------------------------------------------------------
# Planning 3D parallelism


@dataclass(frozen=True)
class ModelShape:
    """A GPT: ``layers``, ``hidden`` width h, attention ``heads`` a, sequence length s,
    vocabulary V. Parameters 12 l h^2 (1 + 13/(12 h) + (V + s)/(12 l h)) (Narayanan et al., 2021,
    eq. 2)."""

    layers: int
    hidden: int
    heads: int
    seq: int = 2048
    vocab: int = 51200

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "seq", "vocab"):
            check.integer(name, getattr(self, name), minimum=1)
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")

    @property
    def params(self) -> float:
        n_l, h = self.layers, self.hidden
        return 12 * n_l * h * h * (1 + 13 / (12 * h) + (self.vocab + self.seq) / (12 * n_l * h))

    def flops(self, batch: int, recompute: bool = True) -> float:
        """FLOPs of one training step on ``batch`` sequences: 72 B s l h^2 (1 + s/(6h) +
        V/(12 l h)) for forward and backward, 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) with the
        forward recomputed (Narayanan et al., 2021, eq. 3)."""
        batch = check.integer("batch", batch, minimum=1)
        recompute = check.boolean("recompute", recompute)
        b, s, n_l, h, v = batch, self.seq, self.layers, self.hidden, self.vocab
        if recompute:
            return 96 * b * s * n_l * h * h * (1 + s / (6 * h) + v / (16 * n_l * h))
        return 72 * b * s * n_l * h * h * (1 + s / (6 * h) + v / (12 * n_l * h))


@dataclass(frozen=True)
class Hardware:
    """One accelerator and its links: ``memory`` (bytes), ``flops`` (peak dense 16-bit FLOP/s),
    ``intra`` (the link inside a node), ``inter`` (between nodes, per GPU), ``per_node`` GPUs."""

    name: str
    memory: float
    flops: float
    intra: Link
    inter: Link
    per_node: int = 8

    def __post_init__(self) -> None:
        check.instance("name", self.name, str)
        object.__setattr__(self, "memory", check.positive("memory", self.memory))
        object.__setattr__(self, "flops", check.positive("flops", self.flops))
        check.instance("intra", self.intra, Link)
        check.instance("inter", self.inter, Link)
        object.__setattr__(self, "per_node", check.integer("per_node", self.per_node, minimum=1))


def state_bytes_per_param(zero: int, dp: int) -> float:
    """Bytes per parameter for weights, gradients and Adam's state in mixed precision: 2 + 2 + K
    with K = 12 (fp32 master weights, two fp32 moments), the ZeRO stage sharding over ``dp``
    ranks: stage 0: 16; 1: 4 + 12/d; 2: 2 + 14/d; 3: 16/d (Rajbhandari et al., 2020)."""
    zero = check.integer("zero", zero, minimum=0, maximum=3)
    d = check.integer("dp", dp, minimum=1)
    return [16, 4 + 12 / d, 2 + 14 / d, 16 / d][zero]


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` predicts for one layout (bytes per GPU, seconds per step)."""

    tp: int
    pp: int
    dp: int
    zero: int
    micro_batch: int
    micro_batches: int
    state_bytes: float
    activation_bytes: float
    memory: float
    fits: bool
    bubble: float
    compute_s: float
    tp_comm_s: float
    pp_comm_s: float
    dp_comm_s: float
    step_s: float
    tflops_per_gpu: float


def plan(
    model: ModelShape,
    hw: Hardware,
    gpus: int,
    tp: int,
    pp: int,
    global_batch: int,
    micro_batch: int = 1,
    zero: int = 1,
    recompute: bool = True,
    efficiency: float = 1.0,
) -> Plan:
    """Memory per GPU and time per step of ``model`` on ``gpus`` = dp x ``tp`` x ``pp`` GPUs of
    ``hw``, 1F1B pipeline, mixed-precision Adam, under these models:

    - states of the first stage: :func:`state_bytes_per_param` x its parameters, which are
      1/(tp pp) of the layers' and 1/tp of the embedding's, (V + s) h (the first stage holds
      the whole embedding; the last holds the output layer, the same size when tied);
    - activations of the first stage, which holds pp micro-batches (1F1B) of l/pp layers:
      l s b h (10 + 24/t + 5 a s/(h t)) bytes (Korthikanti et al., 2022, tensor parallel without
      sequence parallelism), or with ``recompute`` only each layer's 2-byte input, 2 s b h, plus
      one layer's full activations while it is recomputed;
    - compute: hardware FLOPs (:meth:`ModelShape.flops`) at ``efficiency`` x peak, and the
      tensor-parallel communication, both times (m + p - 1)/m for the pipeline bubble;
    - tensor parallel: 4 all-reduces of s b h 2-byte activations per layer and micro-batch (6
      with recompute) on ``hw.intra``; pipeline: the 2(m + p - 1) point-to-point messages of
      s b h 2-byte activations or gradients on the critical path, on ``hw.inter``; data
      parallel, on ``hw.inter``: the 2-byte gradients reduced once per step (stages 0 and 1);
      reduce-scattered for every one of the m micro-batches and the parameters gathered once
      (stage 2); the parameters all-gathered twice and the gradients reduce-scattered for every
      micro-batch (stage 3: 3m/2 times data parallelism's traffic). DeepSpeed does not allow
      stages 2 and 3 with pipeline parallelism at all. Nothing is overlapped with compute.

    ``tflops_per_gpu`` counts the FLOPs of :meth:`ModelShape.flops` (with recompute, as
    Narayanan et al. report) over the predicted step time."""
    check.instance("model", model, ModelShape)
    check.instance("hw", hw, Hardware)
    gpus = check.integer("gpus", gpus, minimum=1)
    tp = check.integer("tp", tp, minimum=1)
    pp = check.integer("pp", pp, minimum=1)
    global_batch = check.integer("global_batch", global_batch, minimum=1)
    micro_batch = check.integer("micro_batch", micro_batch, minimum=1)
    zero = check.integer("zero", zero, minimum=0, maximum=3)
    recompute = check.boolean("recompute", recompute)
    efficiency = check.probability("efficiency", efficiency, open_low=True)
    if gpus % (tp * pp):
        raise ValueError(f"gpus ({gpus}) must be a multiple of tp x pp ({tp} x {pp})")
    dp = gpus // (tp * pp)
    if global_batch % (dp * micro_batch):
        raise ValueError(
            f"global_batch ({global_batch}) must be a multiple of dp x micro_batch "
            f"({dp} x {micro_batch})"
        )
    if model.layers % pp:
        raise ValueError(f"layers ({model.layers}) must be a multiple of pp ({pp})")
    if model.heads % tp:
        raise ValueError(f"heads ({model.heads}) must be a multiple of tp ({tp})")
    m = global_batch // (dp * micro_batch)
    n_l, h, a, s, b = model.layers, model.hidden, model.heads, model.seq, micro_batch
    embedding = (model.vocab + model.seq) * model.hidden
    stage_params = (model.params - embedding) / (tp * pp) + embedding / tp
    states = state_bytes_per_param(zero, dp) * stage_params
    full_layer = s * b * h * (10 + 24 / tp + 5 * a * s / (h * tp))
    in_flight = min(pp, m)
    if recompute:
        acts = in_flight * (n_l // pp) * 2 * s * b * h + full_layer
    else:
        acts = in_flight * (n_l // pp) * full_layer
    compute = model.flops(global_batch, recompute) / (gpus * hw.flops * efficiency)
    msg = 2 * s * b * h
    tp_calls = (6 if recompute else 4) * (n_l // pp) * m
    tp_comm = tp_calls * collective_seconds("all_reduce", msg, tp, hw.intra) if tp > 1 else 0.0
    pp_comm = 2 * (m + pp - 1) * (hw.inter.latency + msg / hw.inter.bandwidth) if pp > 1 else 0.0
    shard = 2 * stage_params  # the first stage's 2-byte parameters or gradients, per GPU
    rs = collective_seconds("reduce_scatter", shard, dp, hw.inter)  # = an all-gather's
    # ZeRO-0/1 accumulate the micro-batches' gradients and reduce once (an all-reduce, or a
    # reduce-scatter and an all-gather); ZeRO-2 holds only a shard of the gradients, so it
    # reduce-scatters every micro-batch's; ZeRO-3 also all-gathers the parameters for every
    # micro-batch's forward and backward pass
    dp_comm = {0: 2 * rs, 1: 2 * rs, 2: (m + 1) * rs, 3: 3 * m * rs}[zero]
    bubble = bubble_fraction(pp, m)
    step = (compute + tp_comm) / (1 - bubble) + pp_comm + dp_comm
    return Plan(
        tp=tp,
        pp=pp,
        dp=dp,
        zero=zero,
        micro_batch=micro_batch,
        micro_batches=m,
        state_bytes=states,
        activation_bytes=acts,
        memory=states + acts,
        fits=states + acts <= hw.memory,
        bubble=bubble,
        compute_s=compute,
        tp_comm_s=tp_comm,
        pp_comm_s=pp_comm,
        dp_comm_s=dp_comm,
        step_s=step,
        tflops_per_gpu=model.flops(global_batch, True) / (gpus * step) / 1e12,
    )


def best_plans(
    model: ModelShape,
    hw: Hardware,
    gpus: int,
    global_batch: int,
    top: int = 5,
    zeros: Sequence[int] = (0, 1, 2, 3),
    micro_batch: int = 1,
    **kw: Any,
) -> list[Plan]:
    """Every layout that fits in memory (tp dividing a node's GPUs, any pp dividing the layers,
    the ZeRO stages in ``zeros``), fastest first under :func:`plan`'s model."""
    check.instance("model", model, ModelShape)
    check.instance("hw", hw, Hardware)
    gpus = check.integer("gpus", gpus, minimum=1)
    global_batch = check.integer("global_batch", global_batch, minimum=1)
    top = check.integer("top", top, minimum=1)
    if "zero" in kw or "tp" in kw or "pp" in kw:
        raise TypeError("best_plans searches tp, pp and the ZeRO stage: pass zeros=(...) instead")
    zeros = [check.integer("zeros[i]", z, minimum=0, maximum=3) for z in zeros]
    micro_batch = check.integer("micro_batch", micro_batch, minimum=1)
    found = []
    for tp in (t for t in range(1, hw.per_node + 1) if hw.per_node % t == 0):
        for pp in (p for p in range(1, model.layers + 1) if model.layers % p == 0):
            if gpus % (tp * pp) or model.heads % tp:
                continue
            if global_batch % (gpus // (tp * pp) * micro_batch):
                continue
            for zero in zeros:
                pl = plan(model, hw, gpus, tp, pp, global_batch, micro_batch, zero, **kw)
                if pl.fits:
                    found.append(pl)
    return sorted(found, key=lambda p: p.step_s)[:top]


# ----------------------------------------------------------------------------------------------
# The same training as a script for torchrun


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``torchrun --standalone --nproc-per-node N -m hamlib.parallel [--strategy S]``: trains
    :class:`TrainSpec` with one strategy of :func:`train` on the process group that torchrun set
    up (its environment variables), and rank 0 prints the loss and the largest difference from
    one process's training. The hand-written strategies run on the CPU (gloo); with ``--device
    cuda`` torch's (ddp, torch-zero1, fsdp2) run on each process's GPU (``LOCAL_RANK``) with
    NCCL."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hamlib.parallel", description=main.__doc__)
    ap.add_argument("--strategy", default="dp", choices=get_args(Strategy))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    if "RANK" not in os.environ:
        ap.error("run it under torchrun, which sets RANK and WORLD_SIZE")
    device = "cpu"
    if args.device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=60))
    try:
        comm = Comm(dist.get_rank(), dist.get_world_size())
        spec = TrainSpec(steps=args.steps, n=args.n)
        out = train(comm, args.strategy, spec, device)
        ref = train_reference(spec)
        diff = max(
            (a - b).abs().max().item() for a, b in zip(out["params"], ref["params"], strict=True)
        )
        if comm.rank == 0:
            print(
                f"{args.strategy} on {comm.world} processes: loss {out['losses'][0]:.4f} -> "
                f"{out['losses'][-1]:.4f} (rank 0's share); largest difference from one process: "
                f"{diff:.1e}",
                flush=True,
            )
        return {"diff": diff, **out}
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

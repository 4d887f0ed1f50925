"""Text for the GPT of Chapter 4: a character tokenizer, the texts shipped in ``hamlib/data``
(see its README.md for sources and licences) and the training loop."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from hamlib import _checks as check
from hamlib.transformer import GPT

__all__ = [
    "CharTokenizer",
    "load_text",
    "ngram_loss",
    "split_texts",
    "token_losses",
    "train_gpt",
]

DATA = Path(__file__).parent / "data"


class CharTokenizer:
    """Characters <-> integer ids, the vocabulary being the sorted set of characters of a text."""

    def __init__(self, text: str) -> None:
        check.instance("text", text, str)
        if not text:
            raise ValueError("text must be non-empty")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"text contains characters outside the vocabulary: {unknown[:5]}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def load_text(name: str = "shakespeare") -> str:
    """A text shipped in hamlib/data (see its README.md for source and licence)."""
    name = check.one_of("name", name, sorted(p.stem for p in DATA.glob("*.txt")))
    return (DATA / f"{name}.txt").read_text(encoding="utf-8")


def split_texts(
    names: Sequence[str], train_fraction: float = 0.9
) -> tuple[CharTokenizer, dict[str, Tensor]]:
    """The texts ``names`` (shipped in hamlib/data) under one character tokenizer, each split
    into its first ``train_fraction`` (``"<name>_train"``) and the rest (``"<name>_val"``)."""
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty list of text names, got {names!r}")
    train_fraction = check.probability(
        "train_fraction", train_fraction, open_low=True, open_high=True
    )
    texts = {name: load_text(name) for name in names}
    tok = CharTokenizer("".join(texts.values()))
    out = {}
    for name, text in texts.items():
        ids = tok.encode(text)
        cut = int(train_fraction * len(ids))
        out[f"{name}_train"], out[f"{name}_val"] = ids[:cut], ids[cut:]
    return tok, out


@torch.no_grad()
def token_losses(model: GPT, ids: Tensor, context: int | None = None) -> Tensor:
    """Cross-entropy (nats) of every position, (windows, context), over ``ids`` (1-D token ids)
    cut into consecutive windows of ``context`` tokens (default: the model's block size); the
    tail that does not fill a window is left out. Evaluated in eval mode, no gradients."""
    check.instance("model", model, GPT)
    check.tensor("ids", ids, dtype=torch.long, ndim=1)
    context = model.config.block_size if context is None else context
    context = check.integer("context", context, minimum=1)
    n = (len(ids) - 1) // context * context
    if n == 0:
        raise ValueError(f"ids needs at least context + 1 = {context + 1} tokens, got {len(ids)}")
    was = model.training
    model.eval()
    logits, _ = model(ids[:n].view(-1, context))
    model.train(was)
    return F.cross_entropy(
        logits.transpose(1, 2), ids[1 : n + 1].view(-1, context), reduction="none"
    )


def train_gpt(
    model: GPT,
    data: Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 0.1,
    generator: torch.Generator | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    warmup: float = 0.05,
    callback: Callable[[int], object] | None = None,
) -> list[float]:
    """AdamW (betas 0.9, 0.99; weight decay on matrices only; gradients clipped to norm 1) on
    random windows of ``data`` (a 1-D tensor of token ids), every window equally likely; the
    learning rate rises linearly over the first ``warmup`` fraction of the steps (none if 0),
    then decays to 0 on a cosine. Returns the training loss of every step. ``progress``, if
    given, wraps the range of steps (e.g. ``hamlib.progress`` or ``tqdm``); ``callback``, if
    given, is called with the step's index after each step (to evaluate, to record)."""
    check.instance("model", model, GPT)
    check.tensor("data", data, dtype=torch.long, ndim=1)
    block = model.config.block_size
    if data.numel() < block + 1:  # one window and its targets
        raise ValueError(f"data needs block_size + 1 = {block + 1} tokens, got {data.numel()}")
    steps = check.integer("steps", steps, minimum=1)
    batch_size = check.integer("batch_size", batch_size, minimum=1)
    lr = check.positive("lr", lr)
    weight_decay = check.nonnegative("weight_decay", weight_decay)
    warmup = check.probability("warmup", warmup, open_high=True)
    check.generator("generator", generator)  # None stays None: torch's default generator
    if progress is not None:
        check.function("progress", progress)
    if callback is not None:
        check.function("callback", callback)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.99),
    )
    warm = math.ceil(warmup * steps)
    losses = []
    model.train()
    steps_iter = range(steps) if progress is None else progress(range(steps))
    for step in steps_iter:
        scale = (
            (step + 1) / warm
            if step < warm
            else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        )
        for group in opt.param_groups:
            group["lr"] = lr * scale
        # starts s = 0 .. N - block - 1: the last one's targets end at the last token
        starts = torch.randint(0, data.numel() - block, (batch_size,), generator=generator)
        x = torch.stack([data[s : s + block] for s in starts])
        y = torch.stack([data[s + 1 : s + block + 1] for s in starts])
        _, loss = model(x, y)
        assert loss is not None
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step)
    return losses


def ngram_loss(train: Tensor, test: Tensor, n: int, vocab_size: int, alpha: float = 1.0) -> float:
    r"""Cross-entropy (nats per token) on ``test`` of the add-alpha n-gram model counted on
    ``train``: :math:`p(x \mid c) = (N(c, x) + \alpha) / (N(c) + \alpha V)` for the context c of
    the n - 1 tokens before x (n = 1: the unigram). Every test token with n - 1 tokens before it
    in ``test`` is scored. The count-based baseline a language model must beat."""
    check.tensor("train", train, dtype=torch.long, ndim=1)
    check.tensor("test", test, dtype=torch.long, ndim=1)
    n = check.integer("n", n, minimum=1, maximum=6)
    vocab_size = check.integer("vocab_size", vocab_size, minimum=1)
    alpha = check.positive("alpha", alpha)
    for name, ids in (("train", train), ("test", test)):
        if ids.numel() < n:
            raise ValueError(f"{name} needs at least n = {n} tokens, got {ids.numel()}")
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"{name} holds ids outside 0 .. vocab_size - 1 = {vocab_size - 1}")

    def codes(ids: Tensor) -> tuple[Tensor, Tensor]:  # (context, context * V + next) as integers
        ctx = torch.zeros(ids.numel() - n + 1, dtype=torch.long)
        for i in range(n - 1):
            ctx = ctx * vocab_size + ids[i : ids.numel() - n + 1 + i]
        return ctx, ctx * vocab_size + ids[n - 1 :]

    ctx_train, full_train = codes(train)
    ctx_test, full_test = codes(test)

    def count(train_codes: Tensor, query: Tensor) -> Tensor:
        keys, counts = torch.unique(train_codes, return_counts=True)
        where = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return torch.where(keys[where] == query, counts[where], 0).double()

    p = (count(full_train, full_test) + alpha) / (count(ctx_train, ctx_test) + alpha * vocab_size)
    return -p.log().mean().item()

# %% [markdown]
# # 7. Training dynamics and phase transitions: measure before you theorize
#
# Training is often described in the language of physics: forces, noise, regimes, phase
# transitions, critical exponents. Some of that language names something real and measurable;
# some of it describes a plotting choice. This chapter holds every such statement to one rule:
# no claim without a measurement that could have refuted it. It builds the estimators first, then
# measures the most famous sudden transition in deep learning (grokking), then tests the claims
# that capabilities "emerge" with scale and that losses follow scaling laws.
#
# **You will be able to** log cheap estimators of a training run (gradient noise scale,
# sharpness, weight norm, effective rank); locate a transition in a logged curve two ways and say
# how reproducible it is; tell a transition of the model from an artefact of the metric; fit
# $L(N) = E + AN^{-\alpha}$ and the Chinchilla law, and see how much the fitted exponents depend on
# choices a paper rarely reports.
#
# **Run time:** under a minute on two CPU cores (the last code cell prints the measured time). The
# phase diagram in 7.3 comes from `make sweeps` (minutes); this chapter re-runs one of its points
# live and checks it against the file.

# %%
import hamlib

hamlib.setup()

import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from hamlib import dynamics as D
from hamlib import measure, tasks
from hamlib.plotting import COLORS, CYCLE

SWEEP = json.loads(Path("data/grokking_phase.json").read_text())

# %% [markdown]
# ## 7.1 Estimators cheap enough to log
#
# A loss curve says *that* training progresses, not *how*. Five more numbers, each cheap enough
# to compute every few hundred steps, say much more:
#
# - the **gradient norm** $\lVert g \rVert$ of the mini-batch;
# - the **gradient noise scale** $B_{\text{simple}} = \operatorname{tr}\Sigma / \lVert G \rVert^2$
#   (McCandlish et al., 2018), with $G$ the mean gradient and $\Sigma$ the covariance of
#   per-example gradients: batches much smaller than $B_{\text{simple}}$ are dominated by noise;
# - the **sharpness** $\lambda_{\max}(\nabla^2 L)$, the top Hessian eigenvalue, from a few Lanczos
#   steps (Chapter 3): gradient descent with step $\eta$ is stable only while
#   $\lambda_{\max} < 2/\eta$;
# - the **weight norm** $\lVert \theta \rVert$, which weight decay pulls down;
# - the **effective rank** of a representation $F \in \mathbb R^{n \times d}$ (Roy & Vetterli,
#   2007): with singular values $\sigma_i$ and $p_i = \sigma_i / \sum_j \sigma_j$,
#   $\operatorname{erank}(F) = \exp\!\big(-\sum_i p_i \log p_i\big)$, between 1 and
#   $\min(n, d)$, a smooth count of the directions the features use.

# %%
hamlib.show_source(D.effective_rank)

# %% [markdown]
# The task: a fixed random "teacher" network labels Gaussian inputs by sampling from its softmax,
# and a smaller "student" learns from fresh samples at every step. Fresh data means no
# overfitting, and the teacher gives what real data never does: the lowest loss any student can
# reach, the teacher's own conditional entropy $E = \mathbb E_x H(y \mid x)$.

# %%
teacher = tasks.Teacher(d_in=16, n_classes=10, width=64, temperature=0.5, seed=0)
x_eval, y_eval = teacher.sample(20_000, torch.Generator().manual_seed(1))
answer = teacher.logits(x_eval).argmax(1)  # the most likely label: "the right answer"
E_true = teacher.entropy(x_eval)
print(f"irreducible loss E = {E_true:.3f} nats; uniform guessing: {math.log(10):.3f} nats")

# %% [markdown]
# `train_student` calls back after every backward pass; the callback below logs the six
# quantities every 100 steps into a `Tracker`. The noise scale and the sharpness use a fixed probe
# batch of 1,024 examples (per-example gradients for the first, 10 Lanczos steps for the second).

# %%
tracker = D.Tracker(every=100)
x_probe, y_probe = teacher.sample(1024, torch.Generator().manual_seed(2))
cost = {"noise scale": 0.0, "sharpness": 0.0, "effective rank": 0.0}


def log_estimators(step, student, loss):
    if not tracker.due(step):
        return
    params = list(student.parameters())
    t0 = time.perf_counter()
    grads = measure.per_example_gradients(student, F.cross_entropy, x_probe, y_probe)
    t1 = time.perf_counter()
    sharp = measure.top_hessian_eigenvalue(
        lambda: F.cross_entropy(student(x_probe), y_probe),
        params,
        iters=10,
        generator=torch.Generator().manual_seed(step),
    )
    t2 = time.perf_counter()
    hidden = student[1](student[0](x_probe)).detach()  # tanh features, (1024, width)
    rank = D.effective_rank(hidden)
    t3 = time.perf_counter()
    for name, dt in zip(cost, (t1 - t0, t2 - t1, t3 - t2), strict=True):
        cost[name] += dt
    tracker.log(
        step,
        loss=loss,
        grad_norm=torch.cat([p.grad.flatten() for p in params]).norm(),
        noise_scale=measure.gradient_noise_scale(grads),
        sharpness=sharp,
        weight_norm=torch.cat([p.detach().flatten() for p in params]).norm(),
        hidden_rank=rank,
    )


t0 = time.perf_counter()
logged_student = tasks.train_student(teacher, 32, steps=1000, callback=log_estimators)
run_seconds = time.perf_counter() - t0

# %%
names = ["loss", "grad_norm", "noise_scale", "sharpness", "weight_norm", "hidden_rank"]
fig = tracker.plot(names, ncols=3)
fig.set_size_inches(9.6, 5.2)
for ax, unit in zip(
    fig.axes,
    ["nats", "L2 norm", "examples", "eigenvalue", "L2 norm", "of 32 directions"],
    strict=True,
):
    ax.set_ylabel(unit)
fig.suptitle("Six estimators logged every 100 steps while a width-32 student learns its teacher")
plt.show()

# %% [markdown]
# What the panels say, checked:

# %%
ns, sharp, rank = tracker["noise_scale"], tracker["sharpness"], tracker["hidden_rank"]
print("noise scale (examples):", ", ".join(f"{v:.2g}" for v in ns))
print(
    f"sharpness: {sharp[0]:.2f} -> max {sharp.max():.2f} -> {sharp[-1]:.2f}; 2/lr = {2 / 3e-3:.0f}"
)
print(f"hidden effective rank: {rank[0]:.1f} -> {rank[-1]:.1f} of 32")
hamlib.check(
    "the gradient noise scale grows as the loss falls (more than x100 within 300 steps), so the "
    "batch size worth using grows during training (McCandlish et al.)",
    bool(ns[:4].max() > 100 * ns[0]),
)
hamlib.check(
    "the sharpness rises from its value at initialization but stays far below 2/lr",
    bool(sharp.max() > sharp[0] and sharp.max() < 0.1 * 2 / 3e-3),
)

# %% [markdown]
# Where the noise scale prints `inf`, the estimate of $\lVert G \rVert^2$ from 1,024 examples
# was not positive: near the optimum the mean gradient is smaller than what that many noisy
# per-example gradients can resolve, and the estimator says so rather than return a number. The
# values it does return jump around by factors of 3: one probe batch is a noisy estimate, which is
# why McCandlish et al. average over many.
#
# The sharpness check needs a caveat too: $2/\eta$ is the stability limit of plain gradient
# descent. Adam divides each coordinate by $\sqrt{v}$, so its own limit is on the
# *preconditioned* sharpness, which this estimator does not measure (Cohen et al., 2022).
#
# What each estimator costs, as a multiple of a whole 100-step stretch of training
# (machine-dependent, so not compared):

# %% tags=["nbval-ignore-output"]
n_logs = len(tracker.steps)
train_only = run_seconds - sum(cost.values())
for name, seconds in cost.items():
    per_log = seconds / n_logs
    print(
        f"{name:15s} {1e3 * per_log:6.1f} ms per log = {per_log / (train_only / 15):.2f} x "
        "100 training steps"
    )

# %% [markdown]
# ## 7.2 Grokking
#
# Power et al. (2022) trained small networks on tables of modular arithmetic and saw something
# that looked like a phase transition in *time*: accuracy on the training pairs reaches 100%
# early, accuracy on the held-out pairs stays at chance for much longer, then jumps to 100%. The
# setting here: all $97^2$ pairs $(a, b)$ labelled $(a + b) \bmod 97$, 40% of them for training,
# a shared embedding of each operand, one hidden layer, full-batch AdamW.

# %%
hamlib.show_source(tasks.train_modular)

# %% [markdown]
# One run with weight decay 1 and the control without weight decay, with the same seed and the
# same budget of 800 steps; everything logged every 25 steps. (These two runs are about 40% of
# the chapter's run time; seven more seeds come from the sweep file below.)

# %%
cfg = SWEEP["config"]
grok_kw = dict(p=cfg["p"], train_frac=0.4, lr=cfg["lr"], d=cfg["d"], hidden=cfg["hidden"])
grok = tasks.train_modular(weight_decay=1.0, steps=800, every=25, seed=0, **grok_kw)
no_wd = tasks.train_modular(weight_decay=0.0, steps=800, every=25, seed=0, **grok_kw)


def first_step(tr, name, level):
    return next((s for s, v in zip(tr.steps, tr[name], strict=True) if v >= level), None)


def show_step(
    step,
):  # a step after hundreds of others moves with the processor: ≈ (see 7.2's checks)
    return "never" if step is None else hamlib.approx(step, "d")


print(
    f"weight decay 1: train accuracy >= 99% at step {first_step(grok, 'train_acc', 0.99)}, "
    f"test accuracy >= 95% at step {show_step(first_step(grok, 'test_acc', 0.95))}"
)
print(
    f"no weight decay: train >= 99% at step {first_step(no_wd, 'train_acc', 0.99)}, best test "
    f"accuracy {no_wd['test_acc'].max():.3f} in 800 steps"
)

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for label, tr, color in [
    ("weight decay 1", grok, COLORS["measured"]),
    ("no weight decay", no_wd, COLORS["reference"]),
]:
    axes[0].plot(tr.steps, tr["train_acc"], color=color, ls="--", label=f"train, {label}")
    axes[0].plot(tr.steps, tr["test_acc"], color=color, label=f"test, {label}")
    axes[1].plot(tr.steps, tr["weight_norm"], color=color, label=label)
    axes[2].plot(tr.steps, tr["embed_rank"], color=color, label=label)
axes[0].set(xlabel="step", ylabel="accuracy", title="Test accuracy jumps long after train")
axes[1].set(xlabel="step", ylabel="L2 norm of all weights", title="Weight norm")
axes[2].set(xlabel="step", ylabel="effective rank (of 32)", title="Embedding effective rank")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=8)
fig.suptitle("Grokking (a + b) mod 97 with 40% of the pairs (seed 0)")
plt.show()

# %% [markdown]
# **Locating the transition, two ways.** A transition step is an estimate, and an estimate needs a
# method and an error bar. (1) Fit a sigmoid $v(t) = \ell + (h - \ell)/(1 + e^{-(t - t_0)/w})$ to
# the test accuracy: $t_0$ is the midpoint, $w$ the width. (2) Find the single step where a
# piecewise-constant fit changes level, the least-squares change point, with no shape assumed.
# Both on eight seeds from the sweep file (7.3), which ran this configuration until test
# accuracy reached 99%; seed 0 is the run above, and the checks after the table make sure of it.

# %%
hamlib.show_source(D.change_points)


# %%
def locate(steps, acc):
    fit = D.fit_sigmoid_transition(steps, acc)
    return fit.midpoint, fit.midpoint_se, fit.width, steps[D.change_points(acc, 1)[0]]


print(f"{'seed':>4s} {'sigmoid midpoint':>17s} {'width':>6s} {'change point':>13s}")
located = {}
for row in SWEEP["seeds"]:
    mid, se, width, cp = located[row["seed"]] = locate(np.array(row["steps"]), row["test_acc"])
    print(f"{row['seed']:4d} {mid:10.0f} ± {se:4.0f} {width:6.0f} {cp:13d}")
mids = np.array([v[0] for v in located.values()])
cps = np.array([v[3] for v in located.values()])
print(
    f"over {len(mids)} seeds: midpoint {mids.mean():.0f} ± {mids.std(ddof=1):.0f} (sd), "
    f"change point {cps.mean():.0f} ± {cps.std(ddof=1):.0f}"
)

# %%
SEEDS = {row["seed"]: row for row in SWEEP["seeds"]}


def early_gap(a, b, logs=5):  # steps 0 to 100: before the runs of two machines drift apart
    return float(np.abs(np.asarray(a[:logs]) - np.asarray(b[:logs])).max())


START_TOL = 0.1  # weight norm, steps 0-100: 2.4x the largest gap measured across processors
live_gap = early_gap(grok["weight_norm"], SEEDS[0]["weight_norm"])
seed_gaps = [early_gap(SEEDS[s]["weight_norm"], SEEDS[0]["weight_norm"]) for s in SEEDS if s]
live_95, file_95 = first_step(grok, "test_acc", 0.95), SEEDS[0]["step_test_95"]
print(
    "weight norm over steps 0-100, largest gap to seed 0 of the file: live run "
    f"{hamlib.below(live_gap, START_TOL)}; the file's other seeds {min(seed_gaps):.2f} to "
    f"{max(seed_gaps):.2f}"
)
print(f"test accuracy >= 95% at step: file (seed 0) {file_95}, live run {show_step(live_95)}")
hamlib.check(
    f"the live run starts as seed 0 of the sweep file, made on another machine: over steps "
    f"0-100 its weight norm stays within {START_TOL} of seed 0's",
    live_gap < START_TOL,
)
hamlib.check(
    "it groks when seed 0 did, up to the drift another processor causes: its test accuracy "
    "reaches 95% within two logging intervals (50 steps) of the file's step",
    live_95 is not None and abs(live_95 - file_95) <= 50,
)
hamlib.check(
    "for every seed the two estimators agree to within one logging interval of 25 steps",
    bool(np.all(np.abs(mids - cps) <= 25)),
)
fit_steps = [row["step_train_99"] for row in SWEEP["seeds"]]
hamlib.check(
    "for every seed the test transition comes at least 3x later than train accuracy reaches 99%",
    all(m >= 3 * f for m, f in zip(mids, fit_steps, strict=True)),
)
hamlib.check(
    "without weight decay the same network fits the training pairs but does not generalize "
    "within the budget (best test accuracy < 10%)",
    bool(no_wd["train_acc"][-1] == 1.0 and no_wd["test_acc"].max() < 0.1),
)

# %% [markdown]
# The transition step is reproducible in the sense that matters: the spread across seeds printed
# above is a fraction of its mean, and the two estimators, one assuming a sigmoid and one
# assuming nothing, agree. What the other estimators do around it is the subject of 7.6.
#
# It is *not* reproducible to the last digit across machines, and the sweep file shows why. Same
# code, same seed, same thread count; only the processor differs (the file was made on another
# one). Another instruction set sums in another order; the difference is a rounding error at the
# first step, and training amplifies it. Over the first hundred steps the live run stays close to
# seed 0 of the file (the gap printed above), while the file's other seeds, which start from other
# initializations, are several times further; later the two runs drift apart until the grokking
# step moves by a logging interval or two. That is why the numbers of a single long run print with
# $\approx$ in this book and are checked within a tolerance. Both tolerances here are about twice
# the largest gap measured across the processors and settings in the README; the grokking step's,
# 50 steps, is smaller than the seed-to-seed standard deviation printed above, though one seed of
# eight lands within it.
#
# ## 7.3 A phase diagram: training fraction × weight decay
#
# Does the network grok within 2,000 steps? A grid of 25 runs takes minutes, longer than the
# chapter's budget, so `make sweeps` (`tools/sweeps.py`) runs it and writes
# `book/data/grokking_phase.json` with the configuration and the provenance; the file is
# committed with the code that made it.

# %%
for part, prov in SWEEP["provenance"].items():
    print(
        f"{part}: made by {prov['made_by']} at commit {prov['commit'][:10]} "
        f"(uncommitted changes: {prov['uncommitted_changes']}), torch {prov['torch']}, "
        f"{prov['threads']} threads, {prov['seconds']:.0f} s"
    )
fracs, wds = cfg["train_fracs"], cfg["weight_decays"]
grid = np.full((len(wds), len(fracs)), np.nan)
for r in SWEEP["phase"]:
    if r["grokked"]:
        grid[wds.index(r["weight_decay"]), fracs.index(r["train_frac"])] = r["step_test_95"]
point = next(r for r in SWEEP["phase"] if r["train_frac"] == 0.4 and r["weight_decay"] == 1.0)
# The diagram's point at 40% and weight decay 1 is the run of seed 0 (the file records the same
# steps for both: the sweep ran the same function); the live run is held to it as above.
hamlib.check(
    "the live run reaches 99% train and 95% test accuracy within 50 steps of the steps the "
    "diagram records at 40% and weight decay 1",
    live_95 is not None
    and abs(first_step(grok, "train_acc", 0.99) - point["step_train_99"]) <= 50
    and abs(live_95 - point["step_test_95"]) <= 50,
)

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.6))
im = ax.imshow(grid, origin="lower", cmap="viridis_r", aspect="auto")
for i in range(len(wds)):
    for j in range(len(fracs)):
        ok = not np.isnan(grid[i, j])
        ax.text(
            j,
            i,
            f"{grid[i, j]:.0f}" if ok else "no",
            ha="center",
            va="center",
            color="white" if ok else COLORS["theory"],
            fontsize=9,
        )
ax.set_xticks(range(len(fracs)), [f"{f:.0%}" for f in fracs])
ax.set_yticks(range(len(wds)), [str(w) for w in wds])
ax.grid(False)
ax.set(
    xlabel="fraction of pairs used for training",
    ylabel="AdamW weight decay",
    title="Steps to 95% test accuracy ('no': not within 2,000 steps)",
)
fig.colorbar(im, ax=ax, label="steps")
plt.show()

# %%
grokked = {(r["train_frac"], r["weight_decay"]): r["grokked"] for r in SWEEP["phase"]}
hamlib.check(
    "without weight decay no training fraction groks within 2,000 steps",
    not any(grokked[f, 0.0] for f in fracs),
)
hamlib.check(
    "with weight decay 1, every fraction from 30% up groks, and more data groks sooner",
    all(grokked[f, 1.0] for f in fracs[1:]) and all(np.diff(grid[wds.index(1.0), 1:]) <= 0),
)

# %% [markdown]
# Weight decay and data trade against each other: more training pairs need less weight decay
# and fewer steps. This matches the account of Liu et al. (2022) and Nanda et al. (2023): the
# memorizing solution has a large weight norm, the generalizing one (here, as they show, built
# from a few Fourier frequencies of $\mathbb Z_{97}$) a small one, and weight decay is what makes
# the second cheaper than the first.
#
# ## 7.4 Emergence as a measurement artefact
#
# Wei et al. (2022) collected tasks on which large language models go from chance to competent
# over a small range of scale, "emergent abilities". Schaeffer, Miranda & Koyejo (2023) pointed
# out that most of these tasks are scored by exact match: an answer of $L$ tokens counts only if
# all $L$ are right. If each token is right with probability $p(N)$, improving smoothly with
# model size $N$, and errors are independent, the exact-match accuracy is $p(N)^L$, which stays
# near zero and then shoots up, though nothing in the model changed abruptly.
#
# First with a synthetic per-token error that falls as a power law, $1 - p(N) = (N/10^5)^{-0.3}$:

# %%
N_grid = np.logspace(5, 12, 500)
p_token = 1 - (N_grid / 1e5) ** -0.3
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for L, color in zip([1, 5, 20, 50], CYCLE, strict=False):
    ax.plot(N_grid, p_token**L, color=color, label=f"exact match, L = {L}")
ax.set(
    xscale="log",
    xlabel="parameters N",
    ylabel="accuracy",
    title="One smooth per-token curve (L = 1), three 'emergent' exact-match curves",
)
ax.legend()
plt.show()

# %% [markdown]
# Where does exact match cross 50%? At $p^L = 1/2$, i.e. $1 - p = 1 - 2^{-1/L}
# \approx \ln 2 / L$, so $N_{1/2}(L) \approx 10^5 (L / \ln 2)^{1/0.3}$: the "threshold" moves by
# a factor $10^{1/0.3} \approx 2{,}000$ per decade of $L$. A threshold that moves when the
# metric is redefined is a property of the metric.

# %%
n_half = {L: N_grid[np.argmin(np.abs(p_token**L - 0.5))] for L in [1, 5, 20, 50]}
for L, n in n_half.items():
    print(
        f"L = {L:2d}: exact match crosses 50% at N = {n:.2e} "
        f"(formula {1e5 * (1 - 2 ** (-1 / L)) ** (-1 / 0.3):.2e})"
    )
hamlib.check(
    "the 50% crossing of exact match moves as 10^5 (1 - 2^(-1/L))^(-1/0.3), within 2% for every L",
    all(abs(n / (1e5 * (1 - 2 ** (-1 / L)) ** (-1 / 0.3)) - 1) < 0.02 for L, n in n_half.items()),
)

# %% [markdown]
# **Models trained here.** Students of seven widths (37 to 1,738 parameters), each trained on
# 1,000 fresh batches of 256 from the teacher of 7.1 (the width-32 student is the one 7.1 logged:
# logging does not change training). Per "token" (one input), accuracy is agreement with
# the teacher's most likely label; exact match over $L$ inputs is measured directly, by cutting
# the 20,000 evaluation inputs into groups of $L$ and counting the groups answered entirely right.

# %%
widths = [1, 2, 4, 8, 16, 32, 64]
students = {32: logged_student}
for w in hamlib.progress([w for w in widths if w != 32], desc="students"):
    students[w] = tasks.train_student(teacher, w, steps=1000)
n_params = np.array([sum(p.numel() for p in students[w].parameters()) for w in widths])
with torch.no_grad():
    outs = {w: students[w](x_eval) for w in widths}
loss_N = np.array([F.cross_entropy(outs[w], y_eval).item() for w in widths])
right = {w: (outs[w].argmax(1) == answer) for w in widths}


def exact_match(correct, L):
    return correct[: len(correct) // L * L].view(-1, L).all(1).double().mean().item()


print(f"{'width':>5s} {'params':>6s} {'loss':>6s} {'per token':>9s} {'L=5':>6s} {'L=20':>6s}")
for w, n, loss in zip(widths, n_params, loss_N, strict=True):
    acc = right[w].double().mean().item()
    print(
        f"{w:5d} {n:6d} {loss:6.3f} {acc:9.3f} {exact_match(right[w], 5):6.3f} "
        f"{exact_match(right[w], 20):6.3f}"
    )

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for L, color in zip([1, 5, 20], CYCLE, strict=False):
    measured = [exact_match(right[w], L) for w in widths]
    ax.plot(n_params, measured, "o-", color=color, label=f"exact match over L = {L} inputs")
    predicted = [right[w].double().mean().item() ** L for w in widths]
    ax.plot(n_params, predicted, ":", color=color)
ax.set(
    xscale="log",
    xlabel="student parameters N",
    ylabel="accuracy",
    title="Per-token accuracy rises smoothly; exact match 'switches on'",
)
ax.legend()
plt.show()

# %%
p_meas = np.array([right[w].double().mean().item() for w in widths])
em20 = np.array([exact_match(right[w], 20) for w in widths])
print(f"per-token accuracy, smallest to largest student: {p_meas[0]:.3f} -> {p_meas[-1]:.3f}")
print(f"exact match, L = 20: {em20[0]:.3f} -> {em20[-1]:.3f}")
hamlib.check(
    "measured exact match agrees with p^L within 0.02 for every student and L in {5, 20}",
    all(
        abs(exact_match(right[w], L) - right[w].double().mean().item() ** L) < 0.02
        for w in widths
        for L in (5, 20)
    ),
)
hamlib.check(
    "per-token accuracy and loss improve with every doubling of width; exact match over 20 "
    "inputs stays below 5% for the smaller half of the students",
    bool(np.all(np.diff(p_meas) > 0) and np.all(np.diff(loss_N) < 0) and em20[:4].max() < 0.05),
)

# %% [markdown]
# ## 7.5 Scaling laws
#
# Kaplan et al. (2020) and Hoffmann et al. (2022) fit the loss of language models as a power law
# in parameters $N$ (and data $D$) plus a floor: $L(N) = E + A N^{-\alpha}$. The students above
# have a floor we know exactly, $E$ from 7.1. Fit the law twice: with $E$ free, as one must for
# real data, and with $E$ fixed at its true value (a straight line for $L - E$ in log-log axes).

# %%
hamlib.show_source(D.fit_power_law)

# %%
free = D.fit_power_law(n_params, loss_N)
fixed = D.fit_power_law(n_params, loss_N - E_true, fit_offset=False)
print(
    f"E free : E = {free.E:.3f} ± {free.E_se:.3f}, alpha = {free.alpha:.3f} ± {free.alpha_se:.3f}"
)
print(f"E fixed: E = {E_true:.3f} (true),  alpha = {fixed.alpha:.3f} ± {fixed.alpha_se:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.6))
n_line = np.logspace(1.4, 5, 100)
ax.plot(n_params, loss_N, "o", color=COLORS["measured"], label="students (test loss)")
ax.plot(
    n_line,
    free.E + free.A * n_line**-free.alpha,
    color=CYCLE[2],
    label=f"fit with E free (alpha {free.alpha:.2f})",
)
ax.plot(
    n_line,
    E_true + fixed.A * n_line**-fixed.alpha,
    "--",
    color=CYCLE[1],
    label=f"fit with E = true floor (alpha {fixed.alpha:.2f})",
)
ax.axhline(E_true, color=COLORS["theory"], ls=":", label="true floor E")
ax.set(
    xscale="log",
    xlabel="parameters N",
    ylabel="test loss (nats)",
    title="The same seven points, two fitted laws, two extrapolations",
)
ax.legend(fontsize=8)
plt.show()

# %%
hamlib.check(
    "with E free the fit puts the floor above the true E (within 2 of its standard errors) and "
    "returns an exponent more than 25% larger than the fit with the true floor",
    E_true < free.E < E_true + 2 * free.E_se and free.alpha > 1.25 * fixed.alpha,
)

# %% [markdown]
# Both laws describe the seven points about equally well; they disagree about everything outside
# them. With the floor free, the fit mistakes the flattening of the largest students (which are
# limited by their 1,000 steps as much as by their size: the confound that separates Kaplan et
# al.'s exponents from Hoffmann et al.'s) for the floor, and steepens the exponent to compensate.
# Its standard errors are honest here, in that they cover the true $E$; but then they also admit
# exponents over a wide range, and the free fit's exponent reported without them would be a claim
# the data do not make.
#
# **The Chinchilla law and its replication.** Hoffmann et al. (2022, "Approach 3") fit
# $L(N, D) = E + A/N^\alpha + B/D^\beta$ to about 400 training runs, minimizing a Huber loss
# ($\delta = 10^{-3}$) of the log-loss residuals with L-BFGS from a grid of starting points, and
# printed $E = 1.69, A = 406.4, B = 410.7, \alpha = 0.34, \beta = 0.28$. Besiroglu et al. (2024)
# reconstructed the data from the paper's figure, refitted, and reported $E = 1.82,
# A = 482.01, B = 2085.43, \alpha = 0.3478, \beta = 0.3658$: the original optimizer had stopped
# before converging, and the printed values were rounded. The law's use is the compute-optimal
# allocation: at a budget of $C = 6ND$ FLOPs, $N_{\text{opt}} \propto C^{\beta/(\alpha+\beta)}$.

# %%
hamlib.show_source(D.compute_optimal)

# %%
BESIROGLU = D.ChinchillaLaw(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
C_chinchilla = 5.76e23  # the budget of Chinchilla itself: 70B parameters, 1.4T tokens
allocation = {}
for name, prm in [("Hoffmann et al., printed", D.CHINCHILLA), ("Besiroglu et al.", BESIROGLU)]:
    n_opt, d_opt = allocation[name] = D.compute_optimal(C_chinchilla, prm)
    print(
        f"{name:25s}: N = {n_opt / 1e9:5.1f}B parameters, D = {d_opt / 1e12:4.2f}T tokens, "
        f"{d_opt / n_opt:5.1f} tokens per parameter"
    )
hamlib.check(
    "at Chinchilla's budget the printed law allocates more than 3x Chinchilla's 20 tokens per "
    "parameter, the refitted law 15-25",
    allocation["Hoffmann et al., printed"][1] / allocation["Hoffmann et al., printed"][0] > 60
    and 15 < allocation["Besiroglu et al."][1] / allocation["Besiroglu et al."][0] < 25,
)

# %% [markdown]
# How much do the fitted exponents depend on the fitting? Draw 200 synthetic runs from the
# printed law on a grid like Hoffmann's (70M to 16B parameters, 5 to 200 tokens per parameter),
# with 2% multiplicative noise, and fit them four ways: the procedure as described; the same,
# stopped early (at most 15 L-BFGS iterations, the failure Besiroglu et al. diagnosed); small
# models only (N < 1B, then extrapolated); and on bootstrap resamples of the data.

# %%
rng = np.random.default_rng(0)
N_runs = np.repeat(np.logspace(np.log10(7e7), np.log10(1.6e10), 20), 10)
D_runs = N_runs * np.tile(np.logspace(np.log10(5), np.log10(200), 10), 20)
L_runs = D.chinchilla_loss(N_runs, D_runs) * np.exp(rng.normal(0, 0.02, N_runs.size))
fits = {
    "as described": D.fit_chinchilla(N_runs, D_runs, L_runs),
    "stopped early": D.fit_chinchilla(N_runs, D_runs, L_runs, maxiter=15),
    "N < 1B only": D.fit_chinchilla(
        N_runs[N_runs < 1e9], D_runs[N_runs < 1e9], L_runs[N_runs < 1e9]
    ),
}
boot = []
for b in hamlib.progress(range(20), desc="bootstrap"):
    i = np.random.default_rng(100 + b).integers(0, N_runs.size, N_runs.size)
    boot.append(D.fit_chinchilla(N_runs[i], D_runs[i], L_runs[i], n_starts=2))

# %%
print(
    f"{'fit':22s} {'E':>5s} {'alpha':>6s} {'beta':>6s} {'a = b/(a+b)':>12s} {'tokens/param':>13s}"
)
rows = [("truth (printed law)", D.CHINCHILLA)] + list(fits.items())
for name, f in rows:
    n_opt, d_opt = D.compute_optimal(C_chinchilla, f)
    print(
        f"{name:22s} {f.E:5.2f} {f.alpha:6.3f} {f.beta:6.3f} "
        f"{f.beta / (f.alpha + f.beta):12.3f} {d_opt / n_opt:13.1f}"
    )
alphas = np.array([f.alpha for f in boot])
betas = np.array([f.beta for f in boot])
ratio = np.array(
    [D.compute_optimal(C_chinchilla, f)[1] / D.compute_optimal(C_chinchilla, f)[0] for f in boot]
)
print(
    f"bootstrap (20 resamples): alpha {alphas.mean():.3f} ± {alphas.std(ddof=1):.3f}, beta "
    f"{betas.mean():.3f} ± {betas.std(ddof=1):.3f}, tokens per parameter "
    f"{np.percentile(ratio, 10):.0f} to {np.percentile(ratio, 90):.0f} (10th-90th percentile)"
)

# %%
hamlib.check(
    "the procedure as described recovers alpha and beta within 0.05 from 200 noisy runs",
    abs(fits["as described"].alpha - 0.34) < 0.05 and abs(fits["as described"].beta - 0.28) < 0.05,
)
hamlib.check(
    "stopping the optimizer early moves an exponent by more than 0.05",
    max(
        abs(fits["stopped early"].alpha - fits["as described"].alpha),
        abs(fits["stopped early"].beta - fits["as described"].beta),
    )
    > 0.05,
)
hamlib.check(
    "fitting small models only and extrapolating misses E by more than 50%",
    abs(fits["N < 1B only"].E / D.CHINCHILLA.E - 1) > 0.5,
)
hamlib.check(
    "over bootstrap resamples of the same 200 runs, the recommended tokens per parameter varies "
    "by more than a factor of 3 (10th to 90th percentile)",
    bool(np.percentile(ratio, 90) > 3 * np.percentile(ratio, 10)),
)

# %% [markdown]
# Four lessons, each from a row above. The procedure works when it is run to convergence on data
# that cover the range: the exponents come back within a few hundredths. Stopping early moves both
# exponents a lot but in proportion, so the allocation exponent $\beta/(\alpha+\beta)$ barely
# changes. Small models alone cannot pin the floor, and a wrong floor ruins everything built on
# it. And the quantity practitioners actually use, tokens per parameter at a budget, is the most
# fragile of all: it depends on $G = (\alpha A/\beta B)^{1/(\alpha+\beta)}$, a ratio of two
# poorly determined prefactors, and it swings by a large factor across resamples of the same
# data even when the exponents look stable. (The 2% noise is our assumption; the spread scales
# with it.)

# %% [markdown]
# ## 7.6 Claims in circulation
#
# **"Model scale produces a phase transition with measurable critical exponents and finite-size
# scaling."** A phase transition in the physicist's sense is a singularity: some quantity behaves
# as $|N - N_c|^{\beta}$ near a critical $N_c$, and the singularity sharpens with system size in
# a way that finite-size scaling collapses onto one curve. Measured here: per-token accuracy and
# loss of the students improve smoothly; the only abrupt curve (exact match) is $p^L$ of a smooth
# curve, measured to within 0.02, and its "critical point" moves with $L$ exactly as
# $p^L = 1/2$ predicts. Fitting a "critical exponent" to it anyway:


# %%
def apparent_exponent(L):
    """Fit acc = c (log10 N - log10 N_c)^b above the point where exact match first exceeds 1%."""
    acc = p_token**L
    above = acc > 0.01
    x0 = np.log10(N_grid[above][0]) - 0.05
    b, logc = np.polyfit(np.log(np.log10(N_grid[above]) - x0), np.log(acc[above]), 1)
    return b, 10**x0


exps = {L: apparent_exponent(L) for L in [5, 20, 50]}
for L, (b, nc) in exps.items():
    print(f"L = {L:2d}: 'critical point' N_c = {nc:.1e}, 'critical exponent' {b:.2f}")
hamlib.check(
    "the fitted 'critical point' moves by more than 100x between L = 5 and L = 50: it belongs to "
    "the metric, not to the model",
    bool(exps[50][1] / exps[5][1] > 100),
)

# %% [markdown]
# **Verdict: not supported by anything measurable at this scale, and the proposed tools do not
# discriminate.** A power-law fit returns an exponent for any smooth monotone curve, so an
# exponent is evidence of a critical point only when a theory predicts its value and the data
# collapse under finite-size scaling. Neither the students nor the synthetic curve has a
# singularity to find; the apparent ones move with the metric. What we *can* say: a sudden jump
# in a thresholded metric should first be re-measured with a continuous one (per-token accuracy,
# loss, the probability of the right answer). The one genuinely abrupt change in this chapter,
# grokking, is a transition in *training time* with a clear mechanism (weight decay against the
# memorizing solution), not in scale; finite-size scaling would need a family of problem sizes
# (several $p$) and a theory of what diverges, which is beyond this chapter's budget.
#
# **"Training passes through reproducible regimes: fast fitting, restructuring, compression."**
# Testable on grokking: fitting = training accuracy reaches 99%; restructuring = test accuracy
# rises; compression = the weight norm or the effective rank of the embedding falls. Measured on
# the eight seeds of the sweep file, with the test-accuracy jump located by the change-point
# detector:

# %%
print(
    f"{'seed':>4s} {'fit (train 99%)':>15s} {'norm peak':>10s} {'rank peak':>10s} "
    f"{'test jump':>10s} {'rank: start -> peak -> end':>27s}"
)
regimes = {}
for seed, row in SEEDS.items():
    steps = np.array(row["steps"])
    fit_at = row["step_train_99"]
    norm_peak = int(steps[np.argmax(row["weight_norm"])])
    rank = np.array(row["embed_rank"])
    rank_peak = int(steps[np.argmax(rank)])
    jump = int(steps[D.change_points(row["test_acc"], 1)[0]])
    regimes[seed] = (fit_at, norm_peak, rank_peak, jump, rank[0], rank.max(), rank[-1])
    print(
        f"{seed:4d} {fit_at:15d} {norm_peak:10d} {rank_peak:10d} {jump:10d} "
        f"{rank[0]:13.1f} -> {rank.max():.1f} -> {rank[-1]:.1f}"
    )
print(
    f"no weight decay (live, 800 steps): rank {no_wd['embed_rank'][0]:.1f} -> "
    f"{no_wd['embed_rank'][-1]:.1f}"
)

# %%
hamlib.check(
    "the order is the same for every seed: the training set is fitted first, the weight norm and "
    "the embedding's effective rank peak next, the test accuracy jumps last",
    all(f <= n < j and f <= r < j for f, n, r, j, *_ in regimes.values()),
)
hamlib.check(
    "with weight decay the embedding's effective rank falls from its peak by at least 1 (of 32) "
    "by the time test accuracy reaches 99%, by at most 15% of its peak; without weight decay it "
    "never falls below its value at step 200",
    all(1 <= peak - end <= 0.15 * peak for *_, peak, end in regimes.values())
    and bool(no_wd["embed_rank"][8:].min() >= no_wd["embed_rank"][8]),
)

# %% [markdown]
# **Verdict: the sequence is reproducible; the three regimes are not three separate stretches.**
# For every seed the network fits the training set first; then, under weight decay, its weight
# norm and the effective rank of its embedding turn over; test accuracy jumps last. Change-point
# detection finds the jump without being told where to look, and without weight decay neither the
# turn-over nor the jump happens. But "compression" does not follow "restructuring": the rank
# starts falling well before the jump and keeps falling through it, so the two are one process
# seen through two estimators (consistent with Nanda et al.'s account, in which the Fourier
# circuit forms gradually and the memorizing weights are then cleaned up). The fall is modest,
# at most 15% of the peak (the generalizing solution uses a few Fourier frequencies, but each is
# spread over several directions that the effective rank still counts). Naming the regimes is
# harmless; treating them as discrete phases with sharp boundaries is not what these curves show.
#
# ## Summary

# %%
hamlib.summary()

# %% tags=["nbval-ignore-output"]
print(f"chapter run time: {hamlib.elapsed():.1f} s")

# %% [markdown]
# ### References
#
# - S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota team. An empirical model of
#   large-batch training. arXiv:1812.06162, 2018.
# - J. M. Cohen, B. Ghorbani, S. Krishnan, N. Agarwal, S. Medapati, M. Badura, D. Suo, D. Cardoze,
#   Z. Nado, G. E. Dahl, J. Gilmer. Adaptive gradient methods at the edge of stability.
#   arXiv:2207.14484, 2022.
# - O. Roy, M. Vetterli. The effective rank: a measure of effective dimensionality. *EUSIPCO*,
#   2007.
# - A. Power, Y. Burda, H. Edwards, I. Babuschkin, V. Misra. Grokking: generalization beyond
#   overfitting on small algorithmic datasets. arXiv:2201.02177, 2022.
# - Z. Liu, O. Kitouni, N. Nolte, E. J. Michaud, M. Tegmark, M. Williams. Towards understanding
#   grokking: an effective theory of representation learning. *NeurIPS*, 2022.
# - N. Nanda, L. Chan, T. Lieberum, J. Smith, J. Steinhardt. Progress measures for grokking via
#   mechanistic interpretability. *ICLR*, 2023.
# - J. Wei et al. Emergent abilities of large language models. *TMLR*, 2022.
# - R. Schaeffer, B. Miranda, S. Koyejo. Are emergent abilities of large language models a
#   mirage? *NeurIPS*, 2023.
# - J. Kaplan et al. Scaling laws for neural language models. arXiv:2001.08361, 2020.
# - J. Hoffmann et al. Training compute-optimal large language models. *NeurIPS*, 2022.
# - T. Besiroglu, E. Erdil, M. Barnett, J. You. Chinchilla scaling: a replication attempt.
#   arXiv:2404.10102, 2024.
#
# ## Exercises
#
# **1. Why dynamic programming?** `change_points` finds the least-squares segmentation exactly.
# For 40 points and 2 breaks, check it against brute force over all pairs of break positions,
# and count how many segmentations brute force must score for $k$ breaks in $n$ points.
#
# ```{admonition} Solution
# :class: dropdown
# Brute force scores $\binom{n-1}{k}$ segmentations: 741 for $n = 40, k = 2$, but $\approx 10^{13}$
# for $n = 200, k = 10$. The dynamic programme keeps, for each end point and number of breaks,
# the best cost so far: $O(k n^2)$ work, exact. The cell checks that both find the same breaks.
# ```

# %% tags=["hide-cell"]
sig = np.concatenate([np.zeros(15), 2 * np.ones(10), 0.5 * np.ones(15)])
sig = sig + np.random.default_rng(5).normal(0, 0.4, 40)


def sse(seg):
    return float(((seg - seg.mean()) ** 2).sum())


pairs = [(i, j) for i in range(1, 40) for j in range(i + 1, 40)]
brute = min(pairs, key=lambda b: sse(sig[: b[0]]) + sse(sig[b[0] : b[1]]) + sse(sig[b[1] :]))
print(f"brute force scored {len(pairs)} segmentations: breaks {list(brute)}")
hamlib.check(
    "exercise 1: change_points equals brute force on 40 points with 2 breaks",
    D.change_points(sig, 2) == list(brute) and len(pairs) == math.comb(39, 2),
)

# %% [markdown]
# **2. How long an answer turns 90% into "cannot"?** A model gets each token right with
# probability 0.9, independently. From what answer length $L$ is its exact-match accuracy below
# 50%? Below 1%? Check by simulation.
#
# ```{admonition} Solution
# :class: dropdown
# $0.9^L < 1/2$ when $L > \ln 2 / \ln(1/0.9) = 6.58$, so from $L = 7$; below 1% from
# $L > \ln 100 / \ln(1/0.9) = 43.7$, so from $L = 44$. The same model, scored on 7-token and on
# 44-token answers, "can" and "cannot" do the task.
# ```

# %% tags=["hide-cell"]
L50 = math.ceil(math.log(2) / -math.log(0.9))
L01 = math.ceil(math.log(100) / -math.log(0.9))
tokens = torch.rand(200_000, L01, generator=torch.Generator().manual_seed(3)) < 0.9
sim = {L: tokens[:, :L].all(1).double().mean().item() for L in (L50 - 1, L50, L01 - 1, L01)}
print(
    f"L = {L50}, {L01}; simulated exact match: "
    + ", ".join(f"L={k}: {v:.4f}" for k, v in sim.items())
)
hamlib.check(
    "exercise 2: exact match falls below 50% from L = 7 and below 1% from L = 44 (formula and "
    "simulation agree)",
    L50 == 7 and L01 == 44 and sim[6] > 0.5 > sim[7] and sim[43] > 0.01 > sim[44],
)

# %% [markdown]
# **3. The compute-optimal frontier, numerically.** Without the closed form, find the $N$ that
# minimizes the printed Chinchilla law at $C = 6ND = 10^{22}$ FLOPs by a grid search over
# $\log N$, and compare with `compute_optimal`. How many tokens per parameter does each parameter
# set recommend at $10^{22}$ and at $10^{26}$ FLOPs?
#
# ```{admonition} Solution
# :class: dropdown
# Substituting $D = C/6N$ gives a function of $N$ alone; its minimum satisfies
# $\alpha A N^{-\alpha} = \beta B D^{-\beta}$, which is the closed form. Tokens per parameter
# $D/N \propto C^{(\alpha - \beta)/(\alpha + \beta)}$: with the printed exponents ($\alpha >
# \beta$) it grows with the budget; with Besiroglu et al.'s ($\alpha < \beta$) it shrinks slowly.
# ```

# %% tags=["hide-cell"]
n_try = np.logspace(6, 13, 20_001)
best_n = n_try[np.argmin(D.chinchilla_loss(n_try, 1e22 / (6 * n_try)))]
closed_n, _ = D.compute_optimal(1e22)
for name, prm in [("printed", D.CHINCHILLA), ("Besiroglu", BESIROGLU)]:
    per = [D.compute_optimal(c, prm)[1] / D.compute_optimal(c, prm)[0] for c in (1e22, 1e26)]
    print(f"{name:9s}: {per[0]:6.1f} tokens per parameter at 1e22 FLOPs, {per[1]:6.1f} at 1e26")
print(f"grid search N = {best_n:.3e}, closed form {closed_n:.3e}")
hamlib.check(
    "exercise 3: grid search and the closed form agree to 0.1%",
    abs(best_n / closed_n - 1) < 1e-3,
)

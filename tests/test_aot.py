"""Every launch the kernel wrappers can make on a GPU, compiled for sm_80 (A100) and sm_90 (H100)
on this CPU: it compiles, its shared memory fits the target's per-block limit, and it keeps its
state in registers (no local-memory stack frame, i.e. no spills). Then what the binary says about
tensor cores and vector loads, by dtype.

The launches come from ``K.launch_plan(..., backend="cuda")``, the code the wrappers run, so the
configurations compiled here are the ones a GPU gets. Before the configurations were chosen this
way, this test failed: fp32 matmul tiles with BLOCK_K = 64 spilled 648 (64 x 64) and over 1,600
(128 x 128) bytes per thread on sm_80, and the fp32 flash attention block of 128 queries at
head_dim 128 spilled 1,168 bytes on sm_80 and 7,216 on sm_90.
"""

from __future__ import annotations

import pytest
import torch

from hamlib import aot
from hamlib import kernels as K

OK, WHY = aot.available()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not OK, reason=WHY or "triton is missing")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ARCHS = [80, 90]


def _t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


def every_launch() -> dict[str, K.Launch]:
    """One launch per configuration a wrapper can choose on a GPU, labelled: each heuristic
    choice, and each configuration the autotuner may pick among."""
    plans: dict[str, K.Launch] = {}
    for t in DTYPES:
        name = str(t).removeprefix("torch.")
        for n in (4096, 4099):  # divisible by 16 (vector loads) or not
            plans[f"add {name} n={n}"] = K.launch_plan("add", _t(n, dtype=t), _t(n, dtype=t))
        for cols in (1000, 4096, 16384, 32768, 40000):  # 4, 8, 16 warps; the online kernel
            plans[f"softmax {name} cols={cols}"] = K.launch_plan("softmax", _t(8, cols, dtype=t))
        precisions = ["ieee", "tf32"] if t == torch.float32 else ["ieee"]
        for m, n, k in [(256, 256, 256), (256, 256, 32), (64, 64, 64), (64, 64, 32)]:
            for p in precisions:
                a, b = _t(m, k, dtype=t), _t(k, n, dtype=t)
                plans[f"matmul {name} {m}x{n}x{k} {p}"] = K.launch_plan("matmul", a, b, p)
        for cols in (1000, 8192):  # 4 and 8 warps
            x, w = _t(4, cols, dtype=t), _t(cols, dtype=t)
            plans[f"layer_norm {name} n={cols}"] = K.launch_plan("layer_norm", x, w, w)
        for d in (40, 64, 128):
            for causal in (False, True):
                q = _t(2, 4, 1024, d, dtype=t)
                label = f"flash_attention {name} d={d} causal={causal}"
                plans[label] = K.launch_plan("flash_attention", q, q, q, causal)
    tuned: dict[str, K.Launch] = {}
    for label, plan in plans.items():
        for i, variant in enumerate(plan.variants()):
            tuned[label if i == 0 else f"{label} autotune #{i}"] = variant
    return tuned


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, int], aot.Compiled]:
    return aot.compile_targets(every_launch(), tuple(ARCHS))


def test_every_launch_compiles_fits_and_does_not_spill(compiled) -> None:
    assert len(compiled) == 2 * len(every_launch())
    bad = [
        f"{label} sm_{arch}: shared {c.shared_bytes} B (limit "
        f"{aot.LIMITS[arch]['shared_per_block']}), stack {c.stack_bytes} B, {c.registers} regs"
        for (label, arch), c in compiled.items()
        if not c.fits or c.spills
    ]
    assert not bad, "\n".join(bad)


def test_compiled_launch_is_the_planned_one(compiled) -> None:
    plans = every_launch()
    for (label, _), c in compiled.items():
        assert c.kernel == plans[label].kernel
        assert c.num_warps == plans[label].meta.get("num_warps", 4)
        assert c.num_stages == plans[label].meta.get("num_stages", 3)


def test_tensor_cores_by_dtype(compiled) -> None:
    """fp16/bf16 dots and fp32 in TF32 run on the tensor cores (HMMA on sm_80, HGMMA, i.e.
    wgmma, on sm_90); fp32 computed exactly ("ieee") runs on the FMA units and has none."""
    for (label, arch), c in compiled.items():
        kernel = label.split()[0]
        if kernel not in ("matmul", "flash_attention"):
            assert c.count(r"HMMA|HGMMA") == 0, label
            continue
        mma = c.count(r"\bHMMA\b") + c.count(r"\bHGMMA\b")
        exact_fp32 = "float32" in label and "tf32" not in label
        if exact_fp32:
            assert mma == 0 and c.count(r"\bFFMA\b") > 0, f"{label} sm_{arch}"
        else:
            assert mma > 0, f"{label} sm_{arch}"
            if arch == 80:
                assert c.count(r"\bHGMMA\b") == 0, f"{label}: no wgmma before Hopper"


VECTOR = r"LDG\.E\.128"  # one instruction loads 16 bytes
SCALAR = r"LDG\.E(?!\.128|\.64)"  # LDG.E (32-bit) or LDG.E.U16: one element


def test_alignment_hints_give_vector_loads(compiled) -> None:
    """n divisible by 16 lets the compiler prove every 4 consecutive fp32 (8 fp16) are aligned
    and in bounds together: 128-bit loads. n = 4099 forbids it: one scalar load per element."""
    for arch in ARCHS:
        for t in DTYPES:
            name = str(t).removeprefix("torch.")
            aligned = compiled[f"add {name} n=4096", arch]
            odd = compiled[f"add {name} n=4099", arch]
            assert aligned.count(VECTOR) > 0 and aligned.count(SCALAR) == 0, (name, arch)
            assert odd.count(VECTOR) == 0 and odd.count(SCALAR) > 0, (name, arch)


def test_compile_rejects_bad_input() -> None:
    plan = K.launch_plan("add", _t(16), _t(16))
    with pytest.raises(ValueError, match="arch must be one of"):
        aot.compile(plan, arch=70)
    with pytest.raises(TypeError, match="launches must be a Launch"):
        aot.compile(["add"])
    with pytest.raises(ValueError, match="launches must not be empty"):
        aot.compile([])
    with pytest.raises(TypeError, match="launches must be a dict"):
        aot.compile_targets([plan])
    with pytest.raises(ValueError, match="launches must not be empty"):
        aot.compile_targets({})
    with pytest.raises(ValueError, match="name must be one of"):
        K.launch_plan("gelu", _t(16))
    with pytest.raises(ValueError, match="backend must be one of"):
        K.launch_plan("add", _t(16), _t(16), backend="rocm")
    with pytest.raises(TypeError, match="y has dtype"):
        K.launch_plan("add", _t(16), _t(16, dtype=torch.float16))

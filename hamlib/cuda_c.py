"""Vector add in CUDA C, compiled with nvcc through ``torch.utils.cpp_extension.load_inline``:
the same kernel as ``triton_kernels.add_kernel``, one thread per element instead of one program
per block, for Chapter 6 to set the two side by side."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hamlib import _checks as check

__all__ = ["CUDA_ADD_SOURCE", "cuda_add"]

CUDA_ADD_SOURCE = r"""
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

// One thread per element. The grid is ceil(n / 256) blocks of 256 threads; threads past the
// end of the tensor (the last block) do nothing: the `if` is the mask.
__global__ void add_kernel(const float* x, const float* y, float* out, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;   // this thread's element
    if (i < n) out[i] = x[i] + y[i];
}

torch::Tensor add(torch::Tensor x, torch::Tensor y) {
    auto out = torch::empty_like(x);
    long n = x.numel();
    int threads = 256;
    long blocks = (n + threads - 1) / threads;
    // On PyTorch's current stream, so that it is ordered with the torch operations around it
    // (the bare <<<blocks, threads>>> would use the legacy default stream).
    auto stream = at::cuda::getCurrentCUDAStream();
    add_kernel<<<blocks, threads, 0, stream>>>(x.data_ptr<float>(), y.data_ptr<float>(),
                                               out.data_ptr<float>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();  // a failed launch raises here, not at some later call
    return out;
}
"""

_cuda_module: Any = None


def cuda_add(x: Tensor, y: Tensor) -> Tensor:
    """``CUDA_ADD_SOURCE`` compiled with nvcc (``torch.utils.cpp_extension.load_inline``) and run.

    Needs a CUDA GPU, nvcc and ninja; raises ``RuntimeError`` saying which is missing."""
    global _cuda_module
    if not torch.cuda.is_available():
        raise RuntimeError("cuda_add needs a CUDA GPU; none is visible to torch")
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("cuda_add needs nvcc (the CUDA toolkit); CUDA_HOME was not found")
    for name, t in (("x", x), ("y", y)):
        check.tensor(name, t, dtype=torch.float32, device="cuda", contiguous=True)
    check.like("y", y, "x", x)
    if _cuda_module is None:
        _cuda_module = cpp_extension.load_inline(
            name="hamlib_cuda_add",
            cpp_sources="torch::Tensor add(torch::Tensor x, torch::Tensor y);",
            cuda_sources=CUDA_ADD_SOURCE,
            functions=["add"],
        )
    return _cuda_module.add(x, y)

"""The rules that pick a kernel or its reference, shared by every public function in `kernels`."""
import torch

BACKENDS = ("auto", "triton", "reference")
ATTENTION_BACKENDS = (*BACKENDS, "sdpa")  # attention has a fourth path: torch's F.scaled_dot_product_attention


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """True when the Triton kernel should run: forced by "triton", or "auto" with CUDA inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return all(t.is_cuda for t in tensors if t is not None)
    return backend == "triton"


def attention_path(backend: str, *tensors: torch.Tensor) -> str:
    """What `attention` runs for `backend`: "triton", "sdpa" or "reference".

    "auto" is the Triton kernel with CUDA inputs and SDPA otherwise. Off CUDA the kernel would only run in
    Triton's interpreter, and SDPA's CPU flash kernel does what it does: walks key blocks with an online
    softmax (no (B, H, Tq, Tk) scores) and reads each K/V head for its whole query group (no repeat). The
    fp32 reference, which materialises both, is the tests' oracle and runs only when asked for by name.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {ATTENTION_BACKENDS}")
    if backend == "auto":
        return "triton" if use_triton(backend, *tensors) else "sdpa"
    return backend

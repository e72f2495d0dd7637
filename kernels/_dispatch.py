"""The one rule that picks a kernel or its reference, shared by every public function in `kernels`."""
import torch

BACKENDS = ("auto", "triton", "reference")


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """True when the Triton kernel should run: forced by "triton", or "auto" with CUDA inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return all(t.is_cuda for t in tensors if t is not None)
    return backend == "triton"

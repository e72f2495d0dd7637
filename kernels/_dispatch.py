"""The rules that pick a kernel or its reference, shared by every public function in `kernels`."""
import os

import torch
import triton

# The one kernel switch, with the same values wherever it is read: the model's `model.kernels` and every public
# function's `backend`. "sdpa" picks torch's scaled_dot_product_attention in `attention` (attention_path
# below); the other ops have no SDPA path and read it as "auto", so the model's switch goes to every op as is.
BACKENDS = ("auto", "triton", "reference", "sdpa")


def use_triton(backend: str, *tensors: torch.Tensor) -> bool:
    """True when the Triton kernel should run: forced by "triton", or "auto" (or "sdpa", outside attention)
    with CUDA inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend in ("auto", "sdpa"):
        return all(t.is_cuda for t in tensors if t is not None)
    return backend == "triton"


def interpreting() -> bool:
    """True when kernels run in Triton's interpreter (TRITON_INTERPRET=1; kernels/__init__.py sets it when
    there is no CUDA): launchers then pick small tiles so that tests stay quick."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def row_block(V: int, interpreted: int = 512) -> tuple[int, int]:
    """(BLOCK_V, num_warps) of a kernel with one program per row that loops over the V columns in tiles.
    CUDA: up to 8192 fp32 lanes a tile (16 per thread at 16 warps), so a row takes few iterations.
    Interpreter: at most `interpreted` lanes and one warp; small enough that the tests' vocabularies span
    several tiles (the tile loop and the masked tail are what they test), large enough to stay quick."""
    if interpreting():
        return min(triton.next_power_of_2(V), interpreted), 1
    block = min(triton.next_power_of_2(V), 8192)
    return block, max(1, min(16, block // 512))


def attention_path(backend: str, *tensors: torch.Tensor) -> str:
    """What `attention` runs for `backend`: "triton", "sdpa" or "reference".

    "auto" is the Triton kernel with CUDA inputs and SDPA otherwise. Off CUDA the kernel would only run in
    Triton's interpreter, and SDPA's CPU flash kernel does what it does: walks key blocks with an online
    softmax (no (B, H, Tq, Tk) scores) and reads each K/V head for its whole query group (no repeat). The
    fp32 reference, which materialises both, is the tests' oracle and runs only when asked for by name.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return "triton" if use_triton(backend, *tensors) else "sdpa"
    return backend

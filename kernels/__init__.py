"""Triton kernels for the hot paths, each next to its pure-PyTorch reference.

Every public function takes `backend`:
  "auto"      - the Triton kernel when the inputs live on CUDA, the reference otherwise (the default;
                attention runs torch's SDPA instead of its reference: kernels/_dispatch.py);
  "triton"    - always the kernel (on a CPU this runs in Triton's interpreter: slow, for tests);
  "reference" - always the PyTorch reference (fp32 math, differentiable by autograd);
  "sdpa"      - torch's scaled_dot_product_attention in `attention`, "auto" in every other op (so the model's
                one switch, `model.kernels`, goes to every op unchanged; kernels/_dispatch.py).

Without CUDA, Triton can only interpret kernels, and the interpreter must be chosen before any kernel is
decorated, so it is switched on here, before the kernel modules are imported. Set TRITON_INTERPRET
yourself to override.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernels.attention import attention  # noqa: E402
from kernels.cross_entropy import cross_entropy  # noqa: E402
from kernels.group_advantages import group_advantages  # noqa: E402
from kernels.grpo import grpo_loss, grpo_token_weights, linear_grpo_loss  # noqa: E402
from kernels.linear_cross_entropy import linear_cross_entropy  # noqa: E402
from kernels.logprobs import linear_token_logprobs, token_logprobs  # noqa: E402

__all__ = [
    "attention",
    "cross_entropy",
    "linear_cross_entropy",
    "token_logprobs",
    "linear_token_logprobs",
    "group_advantages",
    "grpo_token_weights",
    "grpo_loss",
    "linear_grpo_loss",
]

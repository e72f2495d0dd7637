"""Which value of a training step went bad, named for the warning the loop prints before it skips the update.

The loop (train/loop.py, "Faults") checks the step's summed loss and its gradient norm, both already on the
host; only when the norm is not finite does it look at each gradient, to name the parameter.
"""
import math

import torch


def step_fault(loss: float, norm: float, grads: list[tuple[str, torch.Tensor]]) -> str | None:
    """What went bad in a step: the loss, else the first parameter whose gradient is not finite (else the
    norm itself, which can overflow while every gradient is finite); None when nothing did."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if math.isfinite(norm):
        return None
    name = next((n for n, g in grads if not torch.isfinite(g).all()), None)
    return f"the gradient of {name} is not finite" if name else f"the gradient norm is {norm}"

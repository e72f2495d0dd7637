"""GRPO group-relative advantages: one advantage per completion from the rewards of its group.

Rewards r (P·G,) are laid out group-major: completions of prompt p are rows p·G .. p·G+G−1.
Per group: mean μ_p = Σ_g r / G; unbiased (Bessel) std σ_p = sqrt(Σ_g (r − μ)² / (G − 1)), defined as 0
when G = 1; and

    A = (r − μ) / (max(σ, std_floor) + eps)      scale_std=True   (GRPO)
    A =  r − μ                                    scale_std=False  (Dr. GRPO)

A group whose rewards are all equal (zero_var, always true for G = 1) gets exactly A = 0: no NaN and no
rounding residue of r − μ blown up by a tiny σ. Otherwise |A| < sqrt(G − 1), so nothing is huge either.
Triton: one program per group, a teaching kernel: training uses the reference (train/rollout.py), since its
rewards are a few hundred numbers on the CPU, where a launch and two copies cost more than the arithmetic.
"""
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels._checks import group_advantages_args
from kernels._dispatch import use_triton


@dataclass
class GroupAdvantages:
    advantages: Tensor               # (P·G,) fp32
    token_advantages: Tensor | None  # (P·G, L) fp32: advantages where completion_mask, 0 elsewhere
    mean: Tensor                     # (P,) fp32 group mean reward
    std: Tensor                      # (P,) fp32 unbiased group std (0 for G == 1), before the floor
    zero_var: Tensor                 # (P,) bool: every reward in the group equal


# ----------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------
def group_advantages_reference(rewards, group_size, *, scale_std=True, std_floor=0.0, eps=1e-4):
    """fp32 PyTorch advantages. Returns (advantages (P·G,), mean (P,), std (P,), zero_var (P,))."""
    r = rewards.float().view(-1, group_size)                              # (P, G)
    mean = r.mean(dim=1)                                                  # (P,)
    std = r.std(dim=1) if group_size > 1 else torch.zeros_like(mean)      # (P,)  Bessel-corrected
    zero_var = (r == r[:, :1]).all(dim=1)                                 # (P,)
    adv = r - mean[:, None]
    if scale_std:
        adv = adv / (std.clamp_min(std_floor) + eps)[:, None]
    adv = torch.where(zero_var[:, None], torch.zeros_like(adv), adv)
    return adv.reshape(-1), mean, std, zero_var


# ----------------------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------------------
@triton.jit
def _group_advantages_kernel(
    # pointers
    rewards_ptr, adv_ptr, mean_ptr, std_ptr, zero_var_ptr,
    # sizes and scalars
    G, inv_bessel, std_floor, eps,  # inv_bessel = 1 / (G − 1), or 0 for G = 1 (σ := 0)
    # meta-parameters
    BLOCK_G: tl.constexpr, SCALE_STD: tl.constexpr,
):
    p = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_G)
    mask = offs < G
    r = tl.load(rewards_ptr + p * G + offs, mask=mask, other=0.0).to(tl.float32)
    # 1. mean, then the Bessel-corrected variance from centred values (two passes over registers)
    mean = tl.sum(r, axis=0) / G
    d = tl.where(mask, r - mean, 0.0)
    std = tl.sqrt(tl.sum(d * d, axis=0) * inv_bessel)
    # 2. all rewards equal ⇔ max == min; such groups get exactly 0, not rounding residue / (σ + eps)
    zero_var = tl.max(tl.where(mask, r, -float("inf")), axis=0) == tl.min(tl.where(mask, r, float("inf")), axis=0)
    if SCALE_STD:
        d = d / (tl.maximum(std, std_floor) + eps)
    d = tl.where(zero_var, 0.0, d)
    tl.store(adv_ptr + p * G + offs, d, mask=mask)
    tl.store(mean_ptr + p, mean)
    tl.store(std_ptr + p, std)
    tl.store(zero_var_ptr + p, zero_var.to(tl.int8))


# ----------------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------------
def group_advantages_fwd(rewards, group_size, scale_std=True, std_floor=0.0, eps=1e-4):
    """Launch one program per group. Returns (advantages (P·G,), mean (P,), std (P,), zero_var (P,) bool)."""
    rewards = rewards.contiguous()
    P = rewards.numel() // group_size
    dev = rewards.device
    adv = torch.empty(rewards.numel(), dtype=torch.float32, device=dev)
    mean = torch.empty(P, dtype=torch.float32, device=dev)
    std = torch.empty(P, dtype=torch.float32, device=dev)
    zero_var = torch.empty(P, dtype=torch.int8, device=dev)
    if P > 0:
        _group_advantages_kernel[(P,)](
            rewards, adv, mean, std, zero_var, group_size, 1.0 / (group_size - 1) if group_size > 1 else 0.0,
            float(std_floor), float(eps),
            BLOCK_G=triton.next_power_of_2(group_size), SCALE_STD=scale_std, num_warps=1 if group_size <= 128 else 4,
        )
    return adv, mean, std, zero_var.bool()


# ----------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------
def group_advantages(rewards, group_size: int, *, scale_std: bool = True, std_floor: float = 0.0,
                     eps: float = 1e-4, completion_mask=None, backend: str = "auto") -> GroupAdvantages:
    """Group-relative advantages of group-major rewards (P·G,); see the module docstring for the formula.
    With completion_mask (P·G, L), token_advantages broadcasts each advantage over its completion tokens."""
    group_advantages_args(rewards, group_size, completion_mask)
    if use_triton(backend, rewards):
        adv, mean, std, zero_var = group_advantages_fwd(rewards, group_size, scale_std, std_floor, eps)
    else:
        adv, mean, std, zero_var = group_advantages_reference(rewards, group_size, scale_std=scale_std,
                                                              std_floor=std_floor, eps=eps)
    token_adv = None
    if completion_mask is not None:
        token_adv = torch.where(completion_mask.bool(), adv[:, None], torch.zeros((), device=adv.device))
    return GroupAdvantages(advantages=adv, token_advantages=token_adv, mean=mean, std=std, zero_var=zero_var)

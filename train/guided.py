"""Demonstration-guided GRPO rollouts: off-policy demonstrations in the group (LUFFY) and demonstration
prefixes (Prefix-RFT), for the GRPO rollout source (train/rollout.py).

The demonstration of a prompt is its worked solution: for the embedded task `Problem.worked`, for a user's RL
file the line's optional "demo" field. It is the assistant reply tokenised exactly as SFT renders an assistant
turn (train/tokenizer.py `render_chat`): encode(demo) + <|end|>, cut to max_new_tokens tokens.

Group layout, G = group_size, k = demos, m = prefix_rows (each group of a prompt, completions j = 0..G−1):

    j < G − k − m            sampled from the prompt, as plain GRPO (the same seeds)
    G − k − m ≤ j < G − k    prefix rows: the prompt + the first n tokens of the demonstration, then
                             sampled (at most max_new_tokens − n new tokens), n = ⌊φ(t)·|encode(demo)|⌋
    G − k ≤ j                the demonstration itself (LUFFY), not sampled

LUFFY (Yan et al. 2025, "Learning to Reason under Off-Policy Guidance"): the demonstration rows are scored
by the reward like any completion and the group advantages are taken over the whole mixed group, so a
correct demonstration lifts the group mean and pushes the failing samples down. Their tokens are trained
with the policy-shaping weight f(p) = p / (p + γ) in place of the clipped ratio (kernels/policy_shaping.py,
where the per-token loss −f(p_t)·A and its gradient are written out).

Prefix-RFT (Huang et al. 2025, "Blending Supervised and Reinforcement Fine-Tuning with Prefix Sampling"):
φ(t) is the `grpo.prefix` schedule (train/blend.py) of the phase's progress t at the rollout batch's step.
The reward scores the whole reply (prefix + continuation), so a prefix row's advantage says how well the
policy finished what the demonstration began. The loss covers the sampled continuation only: the prefix
tokens are input (their targets are ignored), because they were not sampled from the policy and carry no
old log-prob to form a ratio with; training them as well would be an SFT term on partial demonstrations,
which the `demos` rows (shaped) or an `aux` SFT objective give in a controlled amount. A row whose prefix is
empty (n = 0) is sampled with the plain rows, so a zero prefix is exactly plain GRPO.
"""
from __future__ import annotations

import torch

from train import distributed
from train.settings import ConfigError


def guided(o) -> bool:
    """Whether the phase's GRPO options use demonstrations."""
    return o.demos > 0 or bool(o.prefix)


def demo_tokens(tok, item, max_new_tokens: int) -> list[int]:
    """The demonstration of a prompt item as completion tokens (module docstring)."""
    return (tok.encode(item.demo) + [tok.end])[:max_new_tokens]


def check_demos(items, option: str, path: str) -> None:
    """ConfigError when a guided mode's prompts lack demonstrations (a user file without "demo")."""
    missing = sum(getattr(item, "demo", None) is None for item in items)
    if missing:
        raise ConfigError(f'{option} needs a demonstration for every prompt, but {missing} of {len(items)} '
                          f'lines of {path} have no "demo" field')


def sample_guided(src, model, items, prompts, seeds, fraction: float, s):
    """Fill `s` (a Sampled with answers and prompts) with the completions of the module docstring's layout."""
    o, G, n = src.o, src.o.group_size, len(prompts)
    k, m = o.demos, o.prefix_rows if o.prefix else 0
    demos = [demo_tokens(src.tok, item, o.max_new_tokens) for item in items]
    given = [0] * n
    for r in range(n):
        if G - k - m <= r % G < G - k:
            given[r] = min(int(fraction * (len(demos[r // G]) - 1)), o.max_new_tokens - 1)
    completions: list = [None] * n
    sampled = [r for r in range(n) if r % G < G - k]
    for length in sorted({given[r] for r in sampled}):  # one sampler call per prefix length (0: plain rows)
        rows = [r for r in sampled if given[r] == length]
        head = {r: demos[r // G][:length] for r in rows}
        out = src._generate(model, [prompts[r] + head[r] for r in rows], [seeds[r] for r in rows],
                            o.max_new_tokens - length)
        for r, c in zip(rows, out):
            completions[r] = head[r] + c
    for r in range(n):
        if r % G >= G - k:
            completions[r] = list(demos[r // G])
    s.completions, s.given = completions, given
    s.demo = torch.tensor([r % G >= G - k for r in range(n)], dtype=torch.bool)
    return s


def guided_metrics(o, s, rows: int) -> dict[str, float]:
    """demo_fraction (demonstration rows per completion) and demo_reward (their mean reward) when demos > 0;
    prefix_tokens (mean demonstration tokens given per completion) with a prefix. Global values."""
    if not guided(o):
        return {}
    demo = s.demo.double()
    sums = distributed.all_reduce(torch.stack([demo.sum(), (s.rewards.double() * demo).sum(),
                                               torch.tensor(float(sum(s.given)), dtype=torch.float64)])).tolist()
    out = {"prefix_tokens": sums[2] / rows} if o.prefix else {}
    if o.demos:
        out |= {"demo_fraction": sums[0] / rows, "demo_reward": sums[1] / max(sums[0], 1.0)}
    return out

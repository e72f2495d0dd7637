"""Held-out evaluation: validation loss and bits-per-byte, and task accuracy through the sampler.

bits-per-byte = Σ nats over target tokens / (ln 2 · Σ UTF-8 bytes of those tokens), over tokens that stand
for bytes (special tokens are left out of both sums). Unlike loss per token it does not depend on the
tokenizer, so runs with different vocabularies compare.

Task accuracy: greedy decoding (temperature 0) of each held-out prompt, scored by the task's reward
(exact match of the parsed answer); length: the mean greedy completion in tokens (shows a change of answer
style, such as GRPO moving from bare answers to worked ones); entropy: the mean, over the greedy completions'
tokens, of the entropy (nats) of the model's next-token distribution where each was chosen (how sure the
model is of what it says: RL tends to lower it, and a collapse to near 0 is the usual sign of lost
diversity). With n = `pass_k` samples per prompt at temperature 1, c of them correct (reward > 0):
pass@k for k = 1, 2, 4, ... below n, and n itself, by the unbiased estimator averaged over prompts,

    pass@k = 1 − C(n − c, k) / C(n, k)    (the chance that k of the n samples, drawn without replacement,
                                           hold at least one correct one)

so pass@n is the fraction of prompts with a correct sample and pass@1 = c / n on average; sampled: the mean
reward of the samples (accuracy of one sample at temperature 1, the quantity GRPO optimises).
"""
from __future__ import annotations

import math

import torch

from model.gpt import GPT
from model.sampler import generate
from train.data import IGNORE, Batch
from train.heads import next_token_losses
from train.tasks import checked_reward
from train.tokenizer import Tokenizer


@torch.no_grad()
def eval_loss(model: GPT, batches: list[Batch], token_bytes: torch.Tensor, backend: str = "auto") -> dict[str, float]:
    """Loss per supervised token and bits-per-byte over held-out `batches` (`backend`: the kernel switch)."""
    nats = bytes_ = tokens = 0.0
    nats_b = 0.0
    device = model.wte.weight.device
    for b in batches:
        b = b.to(device)
        targets = b.targets.flatten()
        losses = next_token_losses(model, b, backend, reduction="none").float()
        valid = targets != IGNORE
        nb = token_bytes.to(device)[targets.clamp(min=0)] * valid
        nats += float(losses[valid].sum())
        tokens += float(valid.sum())
        nats_b += float(losses[nb > 0].sum())
        bytes_ += float(nb.sum())
    return {"loss": nats / max(tokens, 1.0), "bpb": nats_b / (math.log(2) * max(bytes_, 1.0))}


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 − C(n − c, k) / C(n, k): the chance that k of n samples, c of them correct, hold a correct one."""
    if not 0 < k <= n:
        raise ValueError(f"pass_at_k: k={k} must be in [1, n={n}]")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} must be in [0, n={n}]")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples per prompt: 1, 2, 4, ... below n, then n."""
    return [2**i for i in range(n.bit_length()) if 2**i < n] + [n]


@torch.no_grad()
def task_accuracy(
    model: GPT,
    tok: Tokenizer,
    problems: list[tuple[list[dict], str]],
    reward_fn,
    *,
    max_new_tokens: int,
    pass_k: int = 0,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """Greedy accuracy, length and entropy, and pass@k over (messages, answer) problems (module docstring)."""
    prompts = [tok.render_prompt(m) for m, _ in problems]
    answers = [a for _, a in problems]

    def score(temperature: float, repeats: int, generator) -> tuple[list[list[float]], float, float]:
        """(rewards per prompt, mean completion length in tokens (the stop token included), mean entropy of
        the next-token distribution over the completions' tokens)"""
        rows = [(i, p) for i, p in enumerate(prompts) for _ in range(repeats)]
        rewards: list[list[float]] = [[] for _ in prompts]
        lengths, nats = [], 0.0
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            outs = generate(
                model, [p for _, p in chunk], max_new_tokens=max_new_tokens, temperature=temperature,
                stop_id=tok.end, pad_id=tok.pad, generator=generator, entropy=temperature == 0.0,
            )
            if temperature == 0.0:  # the entropy of greedy completions only (the sampled ones need none)
                outs, entropies = outs
                nats += sum(map(sum, entropies))
            lengths.extend(map(len, outs))
            for (i, _), out in zip(chunk, outs):
                rewards[i].append(checked_reward(reward_fn, tok.completion_text(out), answers[i]))
        return rewards, sum(lengths) / len(lengths), nats / max(sum(lengths), 1)

    greedy, length, entropy = score(0.0, 1, None)
    result = {"accuracy": sum(r[0] for r in greedy) / len(problems), "length": length, "entropy": entropy}
    if pass_k > 0:
        device = model.wte.weight.device
        gen = torch.Generator(device=device).manual_seed(seed)
        sampled, _, _ = score(1.0, pass_k, gen)
        correct = [sum(x > 0 for x in r) for r in sampled]
        for k in pass_ks(pass_k):
            result[f"pass@{k}"] = sum(pass_at_k(pass_k, c, k) for c in correct) / len(problems)
        result["sampled"] = sum(sum(r) for r in sampled) / (pass_k * len(problems))  # accuracy of one T=1 sample
    return result

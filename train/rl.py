"""GRPO: on-policy rollouts as a data source, and the clipped policy-gradient objective.

Per rollout batch (every `mu` steps):
    1. take P = batch_size / group_size prompts and sample G = group_size completions of each with the
       KV-cache sampler (temperature, top-k, max_new_tokens, stop at <|end|>)
    2. score each completion with the phase's reward function (a plain callable registered by name)
    3. group advantages A = (r − mean_group) / (max(std_group, std_floor) + eps), or r − mean_group when
       scale_std is off (Dr. GRPO); groups whose rewards are all equal get A = 0 and are counted
    4. rows = prompt + completion, right-padded; targets are the completion tokens only
    5. per-token weights from `loss_type` over the whole batch (kernels.grpo_token_weights), so the loss does
       not depend on the micro-batch split
    6. old log-probs (and reference log-probs when beta > 0, from a frozen copy of the model taken when the
       phase starts) scored once, micro-batch by micro-batch, with the same function and the same
       micro-batch shapes as the training pass, so on the first pass the ratio is exactly 1
Then `mu` optimiser steps reuse that batch; each is Σ_t w_t·(−min(ratio·A, clip(ratio)·A) + beta·k3).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from kernels import group_advantages, grpo_token_weights, linear_grpo_loss, linear_token_logprobs
from model.gpt import GPT
from model.sampler import generate
from train.config import PhaseConfig
from train.data import IGNORE, Batch
from train.objectives import loss_backend
from train.tokenizer import Tokenizer


@dataclass
class RolloutBatch(Batch):
    """A micro-batch of rollouts: rows of prompt + completion, with everything the policy loss needs."""

    old_logp: torch.Tensor | None = None  # (B, T) fp32 log-probs at rollout time (0 off the completion)
    ref_logp: torch.Tensor | None = None  # (B, T) fp32 reference log-probs, None when beta == 0
    advantages: torch.Tensor | None = None  # (B, T) fp32 the completion's advantage on each of its tokens
    weights: torch.Tensor | None = None  # (B, T) fp32 aggregation weights (sum over the step = the loss)
    info: dict = field(default_factory=dict)  # rollout metrics, carried by the first micro-batch only


def completion_logprobs(model: GPT, batch: Batch, temperature: float) -> torch.Tensor:
    """log p(completion token) at every supervised position of `batch`, 0 elsewhere: (B, T) fp32."""
    hidden = model(batch.idx, doc_ids=batch.doc_ids)
    sel = batch.targets != IGNORE
    out = torch.zeros(batch.targets.shape, dtype=torch.float32, device=hidden.device)
    out[sel] = linear_token_logprobs(hidden[sel], model.lm_head.weight, batch.targets[sel],
                                     temperature=temperature, backend=loss_backend(model))
    return out


class RolloutSource:
    """Generates, scores and packs GRPO rollouts; reuses each rollout batch for `mu` optimiser steps."""

    def __init__(self, p: PhaseConfig, tok: Tokenizer, prompt, reward_fn, count: int | None, seed: int):
        self.p, self.tok, self.prompt, self.reward_fn, self.count = p, tok, prompt, reward_fn, count
        self.seed = seed
        self.cursor = 0  # next prompt index
        self.generator: torch.Generator | None = None
        self.ref: GPT | None = None  # frozen snapshot of the policy at the start of the phase (beta > 0)
        self.buffer: list[RolloutBatch] | None = None
        self.passes_left = 0
        self._pending_state: dict | None = None

    # ----------------------------------------------------------------------------------- one step
    def next_step(self, rows: int, micro_rows: int, model: GPT) -> list[RolloutBatch]:
        self._materialise(model)
        if self.passes_left == 0:
            self.buffer, self.passes_left = self.rollout(model, rows, micro_rows), self.p.mu
        self.passes_left -= 1
        return self.buffer

    def _materialise(self, model: GPT) -> None:
        """Create (or restore from a checkpoint) the sampling generator and the reference snapshot."""
        device = model.wte.weight.device
        if self.generator is None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        if self.p.beta > 0 and self.ref is None:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        if self._pending_state is not None:
            s, self._pending_state = self._pending_state, None
            self.generator.set_state(s["generator"])
            if self.ref is not None and s["ref"] is not None:
                self.ref.load_state_dict(s["ref"])

    @torch.no_grad()
    def rollout(self, model: GPT, rows: int, micro_rows: int) -> list[RolloutBatch]:
        p, tok, G = self.p, self.tok, self.p.group_size
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        items = [self.prompt(self._index(i)) for i in range(self.cursor, self.cursor + rows // G)]
        self.cursor += len(items)
        prompts = [tok.render_prompt(msgs) for msgs, _ in items for _ in range(G)]  # group-major
        completions = generate(model, prompts, max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                               top_k=p.top_k or None, stop_id=tok.end, pad_id=tok.pad, generator=self.generator)
        t_gen = time.perf_counter() - t0
        rewards = torch.tensor([self.score(tok.completion_text(c), items[i // G][1]) for i, c in enumerate(completions)])
        adv = group_advantages(rewards, G, scale_std=p.scale_std, std_floor=p.std_floor, backend="reference")

        # rows: prompt + completion, right-padded; the target at position t is token t+1
        L = max(len(a) + len(b) for a, b in zip(prompts, completions))
        ids = torch.full((len(prompts), L), tok.pad, dtype=torch.long)
        targets = torch.full((len(prompts), L - 1), IGNORE, dtype=torch.long)
        for i, (a, b) in enumerate(zip(prompts, completions)):
            ids[i, : len(a) + len(b)] = torch.tensor(a + b)
            targets[i, len(a) - 1 : len(a) + len(b) - 1] = torch.tensor(b)
        idx, mask = ids[:, :-1], targets != IGNORE
        n_tokens = int(mask.sum())
        weights = grpo_token_weights(mask, p.loss_type, num_sequences=len(prompts), num_tokens=n_tokens,
                                     max_len=max(p.max_new_tokens, L - 1))
        token_adv = adv.advantages[:, None].expand_as(targets) * mask

        device = model.wte.weight.device
        batches = []
        for s in range(0, len(prompts), micro_rows):
            sl = slice(s, s + micro_rows)
            b = RolloutBatch(idx[sl], targets[sl], torch.zeros_like(idx[sl], dtype=torch.int32),
                             normaliser=float(n_tokens), advantages=token_adv[sl], weights=weights[sl]).to(device)
            b.old_logp = completion_logprobs(model, b, p.temperature)
            if self.ref is not None:
                b.ref_logp = completion_logprobs(self.ref, b, p.temperature)
            batches.append(b)
        model.train(was_training)

        correct = (rewards >= 1.0).float()
        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float32)
        batches[0].info = {
            "reward": float(rewards.mean()),
            "accuracy": float(correct.mean()),
            f"pass@{G}": float(correct.view(-1, G).amax(dim=1).mean()),
            "zero_std": float(adv.zero_var.float().mean()),
            "length": float(lengths.mean()),
            "rollout_s": time.perf_counter() - t0,
            "rollout_tok_s": float(lengths.sum()) / t_gen,
        }
        return batches

    def score(self, completion: str, answer: str) -> float:
        r = self.reward_fn(completion, answer)
        if not isinstance(r, (int, float)):
            raise TypeError(f"reward function returned {r!r} for one completion; it must return one float")
        return float(r)

    def _index(self, i: int) -> int:
        return i % self.count if self.count else i

    # ----------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {
            "cursor": self.cursor,
            "passes_left": self.passes_left,
            "buffer": [b.to("cpu") for b in self.buffer] if self.buffer else None,
            "generator": self.generator.get_state() if self.generator is not None else None,
            "ref": self.ref.state_dict() if self.ref is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.cursor, self.passes_left, self.buffer = state["cursor"], state["passes_left"], state["buffer"]
        # if the phase had started, its generator and reference snapshot are restored on the next step,
        # once the model they belong with is at hand
        self._pending_state = state if state["generator"] is not None else None


class GRPOObjective:
    """Clipped policy gradient with optional k3 KL, aggregated by the rollout batch's token weights."""

    def __init__(self, p: PhaseConfig):
        self.p = p

    def __call__(self, model: GPT, b: RolloutBatch):
        p = self.p
        hidden = model(b.idx, doc_ids=b.doc_ids)
        sel = b.targets != IGNORE
        loss, st = linear_grpo_loss(
            hidden[sel], model.lm_head.weight, b.targets[sel], b.old_logp[sel],
            None if b.ref_logp is None else b.ref_logp[sel], b.advantages[sel], b.weights[sel],
            temperature=p.temperature, eps_low=p.eps_low, eps_high=p.eps_high, beta=p.beta,
            return_entropy=True, backend=loss_backend(model),
        )
        n = b.normaliser  # completion tokens in the whole step: the shares below add up to step means
        metrics = {
            "loss": loss.detach(),
            "kl": 0.0 if st.kl_sum is None else float(st.kl_sum) / n,
            "clip": float(st.low_clipped + st.high_clipped) / n,
            "entropy": float(st.entropy_sum) / n,
            **b.info,
        }
        return loss, metrics

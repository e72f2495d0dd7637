"""GRPO rollouts: the data source of a `grpo` phase, which samples, scores and packs completions.

Per rollout batch (every `mu` steps):
    1. take P = batch_size / group_size prompts and sample G = group_size completions of each with the
       KV-cache sampler (temperature, top-k, max_new_tokens, stop at <|end|>); with grpo.demos or
       grpo.prefix, some of the G are the prompt's demonstration or start from a prefix of it (train/guided.py)
    2. score each completion with the phase's reward function (a plain callable registered by name): one
       finite number (RewardError otherwise), clamped into [reward_min, reward_max] and counted when it had to be;
       with overlong_buffer > 0, DAPO's soft length penalty is added (`length_penalty`); with
       dynamic_sampling, groups whose (shaped) rewards are all equal are replaced by groups of new prompts
       (`Refill`)
    3. group advantages A = (r − mean_group) / (max(std_group, std_floor) + eps), or r − mean_group when
       scale_std is off (Dr. GRPO); groups whose rewards are all equal get A = 0 and are counted
    4. rows = prompt + completion, right-padded; targets are the completion tokens only
    5. per-token weights from `loss_type` over the whole batch (kernels.grpo_token_weights), so the loss does
       not depend on the micro-batch split; with overlong_filter, the tokens of truncated completions are out
       of the mask the weights (and their totals) are computed from, so they weigh 0
    6. old log-probs (and reference log-probs when beta > 0, from a frozen copy of the model taken when the
       phase starts) scored once, micro-batch by micro-batch, with the same function and the same
       micro-batch shapes as the training pass, so on the first pass the ratio is exactly 1
    7. the rollout metrics (reward, accuracy, pass@G, zero_std, length, truncated, empty, ... and, when their
       variant is on, length_penalty, overlong_masked, dropped_groups, extra_draws), which the source reports
       itself (`metrics()`) and the loop logs beside the objective's
Then `mu` optimiser steps reuse that batch (the objective: train/grpo.py). The whole batch is packed on the
CPU and moved to the model's device once; its micro-batches are views of it.

Data parallel (train/distributed.py): a step's P prompts are the global indices [cursor, cursor + P) and
rank r samples the groups of its contiguous share of them, so a group never spans ranks and advantages stay
local. Dynamic sampling draws its refills from the same global prompt order (train/refill.py), so the groups
a step trains on do not depend on the world size either. Completion j of prompt i is sampled from its own
seed (run seed, phase, i, j), so it is the same at any world size. The totals behind the token weights
(completions, completion tokens, longest row) and the rollout metrics are all-reduced, so a rank's weights
and loss are its share of the global ones; old and reference log-probs are scored locally.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass

import torch

from kernels import group_advantages, grpo_token_weights
from kernels.group_advantages import GroupAdvantages
from model.gpt import GPT
from model.sampler import generate
from train import distributed
from train.data import IGNORE, Batch
from train.blend import parse_schedule, progress
from train.distributed import SINGLE, Dist
from train.guided import guided, guided_metrics, sample_guided
from train.heads import completion_logprobs
from train.kind import PhaseConfig
from train.readers import DataError
from train.refill import Refill, length_penalty
from train.settings import ConfigError
from train.tasks import checked_reward
from train.tokenizer import Tokenizer


@dataclass
class RolloutBatch(Batch):
    """A micro-batch of rollouts: rows of prompt + completion, with everything the policy loss needs."""

    old_logp: torch.Tensor | None = None  # (B, T) fp32 log-probs at rollout time (0 off the completion)
    ref_logp: torch.Tensor | None = None  # (B, T) fp32 reference log-probs, None when beta == 0
    advantages: torch.Tensor | None = None  # (B, T) fp32 the completion's advantage on each of its tokens
    weights: torch.Tensor | None = None  # (B, T) fp32 aggregation weights (sum over the step = the loss)
    demo: torch.Tensor | None = None  # (B,) bool: the demonstration rows (None unless grpo.demos > 0)


@dataclass
class Sampled:
    """This rank's completions of a rollout batch, group-major (the G completions of a prompt in a row)."""

    answers: list[str]  # the reference answer of each completion's prompt
    prompts: list[list[int]]  # rendered prompt tokens of each completion
    completions: list[list[int]]  # sampled tokens, up to and including <|end|> when it came
    raw: list[float] | None = None  # rewards as the reward function returned them
    rewards: torch.Tensor | None = None  # (n,) fp32, clamped into [reward_min, reward_max]
    penalty: torch.Tensor | None = None  # (n,) fp32 DAPO's soft overlong penalty (0 when overlong_buffer = 0)
    truncated: torch.Tensor | None = None  # (n,) bool: max_new_tokens reached without <|end|>
    demo: torch.Tensor | None = None  # (n,) bool: a demonstration, not a sample (train/guided.py)
    given: list[int] | None = None  # leading completion tokens taken from the demonstration, not sampled

    @property
    def shaped(self) -> torch.Tensor:
        """The rewards the advantages are computed from: task reward plus length penalty."""
        return self.rewards + self.penalty


class RolloutSource:
    """Generates, scores and packs GRPO rollouts; reuses each rollout batch for `mu` optimiser steps."""

    def __init__(self, p: PhaseConfig, tok: Tokenizer, prompt, reward_fn, *, count: int | None = None, seed: int = 0,
                 dist: Dist = SINGLE, backend: str = "auto"):
        self.p, self.tok, self.prompt, self.reward_fn, self.count = p, tok, prompt, reward_fn, count
        self.backend = backend  # the kernel switch, for scoring log-probs as the objective does (train/heads.py)
        self.o = p.options["grpo"]  # the phase's GRPO knobs (train/grpo.py: GRPOOptions)
        # Prefix-RFT's share of the demonstration given as prefix, of the phase's progress (train/guided.py)
        self.prefix = parse_schedule(self.o.prefix, f"{p.name}.prefix") if self.o.prefix else None
        self.seed, self.dist = seed, dist
        self.cursor = 0  # next global prompt index (the same on every rank)
        self.rollouts = 0  # rollout batches drawn so far in the phase (the prefix schedule's clock)
        self.ref: GPT | None = None  # frozen snapshot of the policy at the start of the phase (beta > 0)
        self.buffer: list[RolloutBatch] | None = None  # this rank's micro-batches of the current rollout batch
        self.passes_left = 0
        self._metrics: dict[str, float] = {}  # of the current rollout batch (global values)
        self._pending_ref: dict | None = None
        self._gen_s, self._gen_tokens = 0.0, 0  # sampling time and tokens of the current rollout batch

    # ----------------------------------------------------------------------------------- one step
    def next_step(self, rows: int, micro_rows: int, model: GPT) -> list[RolloutBatch]:
        self._materialise(model)
        if self.passes_left == 0:
            self.buffer, self.passes_left = self.rollout(model, rows, micro_rows), self.o.mu
        self.passes_left -= 1
        return self.buffer

    def metrics(self) -> dict[str, float]:
        """The rollout metrics of the batch the last step trained on: global values, the same on every rank."""
        return dict(self._metrics)

    def _materialise(self, model: GPT) -> None:
        """Create (or restore from a checkpoint) the reference snapshot; a restored rollout batch goes to the
        model's device, once."""
        if self.o.beta > 0 and self.ref is None:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        if self._pending_ref is not None:
            ref, self._pending_ref = self._pending_ref, None
            if self.ref is not None:
                self.ref.load_state_dict(ref)
        device = model.wte.weight.device
        if self.buffer and self.buffer[0].idx.device != device:
            self.buffer = [b.to(device) for b in self.buffer]

    @torch.no_grad()
    def rollout(self, model: GPT, rows: int, micro_rows: int) -> list[RolloutBatch]:
        """This rank's share of a rollout batch of `rows` completions (all ranks), in micro-batches, by the
        steps of the module docstring."""
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        self._gen_s, self._gen_tokens = 0.0, 0
        draw = lambda indices: self._score(self._sample(model, indices))  # noqa: E731  (1, 2)
        refill = Refill(self, draw, rows // self.o.group_size) if self.o.dynamic_sampling else None
        s = refill.run(self._take(rows)) if refill else draw(self._take(rows))
        self.rollouts += 1
        adv = group_advantages(s.shaped, self.o.group_size, scale_std=self.o.scale_std,  # 3
                               std_floor=self.o.std_floor, backend="reference")
        batches = _batches(self._pack(s, adv, rows, model.wte.weight.device), micro_rows)  # 4, 5
        for b in batches:  # 6
            b.old_logp = completion_logprobs(model, b, self.o.temperature, self.backend)
            if self.ref is not None:
                b.ref_logp = completion_logprobs(self.ref, b, self.o.temperature, self.backend)
        model.train(was_training)
        self._metrics = self._rollout_metrics(s, adv, rows, t0) | (refill.metrics() if refill else {})  # 7
        return batches

    def _take(self, rows: int) -> range:
        """The global indices of this rank's prompts of the next rollout batch (its contiguous share)."""
        mine, self.cursor = take_groups(self.cursor, rows, self.o.group_size, self.dist)
        return mine

    def _generate(self, model: GPT, prompts: list[list[int]], seeds: list[int], max_new_tokens: int) -> list:
        t0 = time.perf_counter()
        # host sync: the sampler reads every new token back to choose when each row stops
        out = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=self.o.temperature,
                       top_k=self.o.top_k or None, stop_id=self.tok.end, pad_id=self.tok.pad, seeds=seeds)
        self._gen_s += time.perf_counter() - t0
        self._gen_tokens += sum(map(len, out))
        return out

    def _sample(self, model: GPT, mine: range) -> Sampled:
        """G completions of each prompt, each from its own seed."""
        p, o, tok, G = self.p, self.o, self.tok, self.o.group_size
        items = [self.prompt(self._index(i)) for i in mine]
        if not items:  # a refill round can leave a rank nothing to draw
            return Sampled([], [], [])
        prompts = [tok.render_prompt(msgs) for msgs, _ in items for _ in range(G)]
        longest = max(map(len, prompts))
        if longest + o.max_new_tokens > model.cfg.seq_len:
            raise DataError(f"{p.name}: a prompt of {longest} tokens leaves no room for {p.name}.max_new_tokens="
                            f"{o.max_new_tokens} in model.seq_len={model.cfg.seq_len}; lower one or raise the other")
        seeds = [self._seed(i, j) for i in mine for j in range(G)]
        answers = [answer for _, answer in items for _ in range(G)]
        if not guided(o):
            return Sampled(answers, prompts, self._generate(model, prompts, seeds, o.max_new_tokens))
        fraction = self.prefix_fraction()
        return sample_guided(self, model, items, prompts, seeds, fraction, Sampled(answers, prompts, []))

    def prefix_fraction(self) -> float:
        """The share of the demonstration given as prefix at this rollout batch (0 without grpo.prefix)."""
        return self.prefix(progress(self.rollouts * self.o.mu, self.p.steps)) if self.prefix else 0.0

    def _score(self, s: Sampled) -> Sampled:
        """Each completion's reward: one finite number from the reward function, clamped into range; whether it
        was truncated; its length penalty."""
        o = self.o
        s.raw = [self.score(self.tok.completion_text(c), answer) for c, answer in zip(s.completions, s.answers)]
        s.rewards = torch.tensor([min(max(r, o.reward_min), o.reward_max) for r in s.raw], dtype=torch.float32)
        s.truncated = torch.tensor([len(c) == o.max_new_tokens and c[-1] != self.tok.end for c in s.completions],
                                   dtype=torch.bool)
        s.penalty = torch.tensor([length_penalty(len(c), o.max_new_tokens, o.overlong_buffer, o.overlong_penalty)
                                  for c in s.completions], dtype=torch.float32)
        return s

    def score(self, completion: str, answer: str) -> float:
        return checked_reward(self.reward_fn, completion, answer)  # RewardError unless one finite number

    def _pack(self, s: Sampled, adv: GroupAdvantages, rows: int, device: torch.device) -> dict:
        """The rollout batch as one dict of (n, L−1) tensors on `device`: rows of prompt + completion,
        right-padded to the longest row of any rank (the shapes one process would use), the target at t being
        token t+1 and only completion tokens supervised; each token's advantage and aggregation weight."""
        o, tok = self.o, self.tok
        # host sync (with NCCL): the longest row and the completion tokens are all-reduced over the ranks
        L = distributed.all_reduce(max(len(a) + len(b) for a, b in zip(s.prompts, s.completions)), "max")
        ids = torch.full((len(s.prompts), L), tok.pad, dtype=torch.long)
        targets = torch.full((len(s.prompts), L - 1), IGNORE, dtype=torch.long)
        given = s.given or [0] * len(s.prompts)  # a demonstration prefix is input, not a target (guided.py)
        for i, (a, b, g) in enumerate(zip(s.prompts, s.completions, given)):
            ids[i, : len(a) + len(b)] = torch.tensor(a + b)
            targets[i, len(a) - 1 + g : len(a) + len(b) - 1] = torch.tensor(b[g:], dtype=torch.long)
        idx, mask = ids[:, :-1], targets != IGNORE
        trained = mask & ~s.truncated[:, None] if o.overlong_filter else mask  # (n, L−1) the tokens with a weight
        n_tokens = distributed.all_reduce(int(trained.sum()))  # trained completion tokens of the whole step
        weights = grpo_token_weights(trained, o.loss_type, num_sequences=rows, num_tokens=n_tokens,
                                     max_len=max(o.max_new_tokens, L - 1))
        flat = {"idx": idx, "targets": targets, "doc_ids": torch.zeros_like(idx, dtype=torch.int32),
                "advantages": adv.advantages[:, None].expand_as(targets) * mask, "weights": weights}
        if o.demos:  # rows the loss shapes instead of clipping (a prefix alone trains as plain GRPO)
            flat["demo"] = s.demo
        return {k: v.to(device) for k, v in flat.items()} | {"normaliser": float(n_tokens)}

    def _rollout_metrics(self, s: Sampled, adv: GroupAdvantages, rows: int, t0: float) -> dict:
        """Sums over every rank's completions (and groups), divided by the global counts."""
        o, G, end = self.o, self.o.group_size, self.tok.end
        correct = (s.rewards >= 1.0).double()
        lengths = torch.tensor([len(c) for c in s.completions], dtype=torch.float64)
        # completions that hit max_new_tokens without <|end|>; empty ones, nothing before the stop (they are
        # scored as usual and train on their stop token only); with a reward the clamp changed
        truncated = int(s.truncated.sum())
        empty = sum(c[:1] in ([], [end]) for c in s.completions)
        out_of_range = sum(not o.reward_min <= r <= o.reward_max for r in s.raw)
        # host sync (with NCCL): one all-reduce of the sums, read back once
        sums = distributed.all_reduce(torch.stack([
            s.rewards.double().sum(), correct.sum(), correct.view(-1, G).amax(dim=1).sum(),
            adv.zero_var.double().sum(), lengths.sum(),
            s.penalty.double().sum(), *torch.tensor([truncated, empty, out_of_range, self._gen_tokens],
                                                    dtype=torch.float64)])).tolist()
        groups = rows // G
        variants = {"length_penalty": sums[5] / rows} if o.overlong_buffer else {}
        variants |= guided_metrics(o, s, rows)
        if o.overlong_filter:  # the truncated completions are the masked ones
            variants["overlong_masked"] = sums[6] / rows
        return variants | {
            "reward": sums[0] / rows,
            "accuracy": sums[1] / rows,
            f"pass@{G}": sums[2] / groups,
            "zero_std": sums[3] / groups,
            "length": sums[4] / rows,
            "truncated": sums[6] / rows,
            "empty": sums[7] / rows,
            "reward_out_of_range": sums[8] / rows,
            "rollout_s": distributed.all_reduce(time.perf_counter() - t0, "max"),  # the slowest rank's
            "rollout_tok_s": sums[9] / distributed.all_reduce(self._gen_s, "max"),
        }

    def _index(self, i: int) -> int:
        return i % self.count if self.count else i

    def _seed(self, i: int, j: int) -> int:
        """Sampling seed of completion j of global prompt i: the same whatever rank or batch samples it."""
        return random.Random(f"{self.seed}/{self.p.name}/{i}/{j}").getrandbits(63)

    # ----------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """Position, reference snapshot and, between the `mu` passes over a rollout batch, that batch as one
        dict of tensors over the global rows in rank order (so any world size can resume it) and its metrics.
        Collective under torchrun: every rank calls it (the trainer does) and rank 0's is the one saved."""
        buffer = None
        if self.passes_left:
            shards = distributed.gather(_rows(self.buffer))
            buffer = None if shards is None else _cat(shards)
        return {
            "cursor": self.cursor,
            "rollouts": self.rollouts,
            "passes_left": self.passes_left,
            "buffer": buffer,
            "metrics": self._metrics if self.passes_left else {},
            "ref": self.ref.state_dict() if self.ref is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.cursor, self.passes_left = state["cursor"], state["passes_left"]
        self.rollouts = state.get("rollouts", 0)
        self.buffer, self._metrics = None, dict(state["metrics"])
        if state["buffer"] is not None:  # this rank's slice of the global rows, in its micro-batches
            buf, (rank, world) = state["buffer"], (self.dist.rank, self.dist.world_size)
            share = buf["idx"].size(0) // world
            mine = {k: buf[k][rank * share : (rank + 1) * share] for k in ROW_FIELDS if k in buf}
            self.buffer = _batches(mine | {"normaliser": buf["normaliser"]}, self.p.micro_batch_size)
        # if the phase had started, its reference snapshot is restored on the next step, once the model it
        # belongs with is at hand
        self._pending_ref = state["ref"]


ROW_FIELDS = ("idx", "targets", "doc_ids", "old_logp", "ref_logp", "advantages", "weights", "demo")  # (B, T), demo (B,)


def check_groups(p: PhaseConfig, group_size: int, noun: str) -> None:
    """A phase that samples groups: at least 2 per group (advantages compare the `noun`s of a group), and
    batch_size a whole number of groups."""
    at = f"{p.name}."
    if group_size < 2:
        raise ConfigError(f"{at}group_size={group_size} must be >= 2 (advantages compare {noun} of a group)")
    if p.batch_size % group_size:
        raise ConfigError(f"{at}batch_size={p.batch_size} ({noun} per step) must be a multiple of "
                          f"{at}group_size={group_size}")


def check_group_layout(p: PhaseConfig, group_size: int, world_size: int, noun: str) -> None:
    """Each rank samples whole groups."""
    per_rank = p.batch_size // world_size
    if per_rank % group_size:
        raise ConfigError(
            f"{p.name}.batch_size / world_size = {p.batch_size}/{world_size} = {per_rank} {noun} per rank must be "
            f"a multiple of {p.name}.group_size={group_size} so no group is split across ranks; change the batch "
            f"size or the number of processes")


def take_groups(cursor: int, rows: int, group_size: int, dist: Dist) -> tuple[range, int]:
    """(the global indices of this rank's groups of the next step, its contiguous share; the cursor after the
    step): every rank advances the cursor by the whole step's groups."""
    share = rows // group_size // dist.world_size
    first = cursor + dist.rank * share
    return range(first, first + share), cursor + rows // group_size


def _rows(batches: list[RolloutBatch]) -> dict:
    """Micro-batches -> one dict of CPU tensors over all their rows, with the step's normaliser: a rollout
    batch as a checkpoint holds it."""
    return _cat([{k: getattr(b, k).cpu() for k in ROW_FIELDS if getattr(b, k) is not None}
                 | {"normaliser": b.normaliser} for b in batches])


def _cat(parts: list[dict]) -> dict:
    """Row dicts (e.g. one per rank, in rank order) -> one over all their rows."""
    out = {k: torch.cat([part[k] for part in parts]) for k in ROW_FIELDS if k in parts[0]}
    return out | {"normaliser": parts[0]["normaliser"]}


def _batches(rows: dict, micro_rows: int) -> list[RolloutBatch]:
    """A row dict -> micro-batches of `micro_rows` rows (views of its tensors)."""
    return [RolloutBatch(**{k: rows[k][s : s + micro_rows] for k in ROW_FIELDS if k in rows},
                         normaliser=rows["normaliser"]) for s in range(0, rows["idx"].size(0), micro_rows)]

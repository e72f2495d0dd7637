"""The `rlp` kind: reinforcement learning as a pretraining objective, rewarded by information gain.

After RLP (Hatamizadeh et al., NVIDIA, "RLP: Reinforcement as a Pretraining Objective", 2025). At a position t
of ordinary text the policy writes a thought c after doc[:t]; the thought is rewarded by how much it raises
the likelihood of the next k tokens of the text over a baseline that did not think:

    r(c) = Σ_{j<k} [ log p_θ(x_{t+j} | doc[:t], <|assistant|>, c, x_{t..t+j−1}) − log p_EMA(x_{t+j} | doc[:t], x_{t..t+j−1}) ]

p_θ is the current policy, scoring without gradient (the reward is a number, as in the paper); p_EMA is an
exponential moving average of the policy's weights, EMA ← d·EMA + (1 − d)·θ after every step (`ema_decay`
d), started from the policy at the phase's first step, kept as the source's state and saved in every
checkpoint. G thoughts per position (`group_size`) give group advantages A = r − mean_group(r) (or divided
by the group std with `scale_std`), and the update is GRPO's clipped surrogate on the thought tokens only,
through train/heads.py policy_loss (the fused Triton head on CUDA):

    loss = Σ_{thought tokens} w · −min(ratio·A, clip(ratio, 1 − eps_low, 1 + eps_high)·A),   ratio = p/p_old

with `loss_type`'s token weights summing over the whole step (so the loss does not depend on the
micro-batch split). Next-token loss on the text rides along with `aux` (`--rlp.aux=pretrain=1`: the
RMT-style mix of RL on chosen positions and next-token loss on all of them).

Simplifications, each on purpose:
- The thought starts after `<|assistant|>`, an existing special token, rather than a new thought token:
  adding one to SPECIAL_TOKENS would change every tokenizer (and the checkpoints and golden runs made with
  them), and `<|assistant|>` already means "the model writes here" to a model that has seen chat turns. A
  thought ends at `<|end|>` or after `max_new_tokens`; the continuation follows the thought directly.
- One position per document per step (the paper scores every position of a stream), drawn uniformly or
  where the policy's next-token entropy is highest (`position`).
- The paper's baseline is the mean of the other G − 1 rewards (a leave-one-out advantage); r − mean_group is
  that times (G − 1)/G, a constant factor the learning rate absorbs.
- One optimiser step per batch of thoughts, so the ratio is 1 and the clip never binds (the loss is the
  plain policy gradient Σ w·−A·log p with GRPO's normalisation); the clipped form is kept so the objective
  is GRPO's own code path. No KL term (the paper has none).
- The held-out evaluator (`<phase>/info_gain`) scores greedy thoughts against the same model without a
  thought (an EMA exists only inside an rlp phase, and the evaluator runs after every phase).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.gpt import GPT
from model.sampler import generate
from train.data import embedded_pretraining
from train.grpo import GRPOObjective
from train.kind import Context, ObjectiveKind, PhaseConfig
from train.readers import DataError, read_documents, split_held_out
from train.rollout import check_group_layout, check_groups
from train.settings import ConfigError, check, choice, nonnegative, positive
from train.thoughts import ThoughtSource, information_gain

STARTUP_DOCS = 64  # embedded documents checked at start-up for one long enough to hold a position


@dataclass
class RLPOptions:
    group_size: int = 4  # thoughts sampled per position (G); batch_size and micro_batch_size count thoughts
    max_new_tokens: int = 16  # thought length limit
    horizon: int = 4  # k: the next tokens of the text whose log-likelihood gain is the reward
    position: str = choice("uniform", ("uniform", "entropy"),
                           "where in a document to think: uniformly, or where the next-token entropy is highest")
    ema_decay: float = 0.999  # d of the EMA baseline: EMA <- d*EMA + (1-d)*weights after every step
    temperature: float = 1.0  # sampling temperature of thoughts (the policy loss's log-probs use the same)
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    mix: str = "facts=1,worked=1,chat=1"  # embedded documents: kind=weight, kinds facts/worked/chat
    loss_type: str = choice("dapo", ("grpo", "bnpo", "dapo", "dr_grpo"), "how token losses are aggregated")
    eps_low: float = 0.2  # ratio clipped below at 1 - eps_low
    eps_high: float = 0.28  # ratio clipped above at 1 + eps_high
    scale_std: bool = False  # divide advantages by the group std (the paper does not)


def _check(p: PhaseConfig) -> None:
    o, at = p.options["rlp"], f"{p.name}."
    positive(o, at, "group_size", "max_new_tokens", "horizon")
    nonnegative(o, at, "top_k", "eps_low", "eps_high")
    check(o, at, "temperature", o.temperature > 0, "> 0 (thought log-probs divide by it)")
    check(o, at, "ema_decay", 0 < o.ema_decay < 1, "in (0, 1) (0 would make the baseline the policy itself)")
    check(o, at, "eps_low", o.eps_low < 1, "in [0, 1)")
    check_groups(p, o.group_size, "thoughts")


def _check_layout(p: PhaseConfig, world_size: int) -> None:
    check_group_layout(p, p.options["rlp"].group_size, world_size, "thoughts")


def room(p: PhaseConfig, seq_len: int) -> int:
    """The last position t a thought may follow: doc[:t] + <|assistant|> + thought + k tokens, less the last
    (which is only a target), fit in model.seq_len. ConfigError when no t >= 1 does."""
    o = p.options["rlp"]
    last = seq_len - o.max_new_tokens - o.horizon
    if last < 1:
        raise ConfigError(f"{p.name}.max_new_tokens={o.max_new_tokens} and {p.name}.horizon={o.horizon} leave no room "
                          f"for a position in model.seq_len={seq_len}; lower them or raise model.seq_len")
    return last


def _pieces(p: PhaseConfig, ctx: Context, last: int) -> list[list[int]]:
    """A user's documents, tokenized and cut into pieces of `last` + horizon tokens (a long .txt gives many
    positions); those too short for a position are dropped, DataError when none is left."""
    k = p.options["rlp"].horizon
    width = last + k
    pieces = [ids[s : s + width] for ids in map(ctx.tok.document, read_documents(p.data))
              for s in range(0, len(ids), width)]
    kept = [x for x in pieces if len(x) > k]
    if len(kept) < 2:
        raise DataError(f"{p.data}: too short for {p.name}: an rlp phase needs at least 2 pieces of text of more than "
                        f"{p.name}.horizon={k} tokens (one is held out), got {len(kept)}")
    return kept


def _sources(p: PhaseConfig, ctx: Context):
    o, tok = p.options["rlp"], ctx.tok
    last = room(p, ctx.seq_len)
    if p.data == "embedded":
        def docs(split):
            document = embedded_pretraining(ctx.task, tok, o.mix, ctx.seed, split, ctx.seq_len).document
            return lambda i: document(i)[0]  # (ids, mask) -> ids

        train, held = docs("train"), docs("eval")
        if all(len(train(i)) <= o.horizon for i in range(STARTUP_DOCS)):
            raise ConfigError(f"{p.name}.horizon={o.horizon}: the embedded documents are too short to pick a position "
                              f"with that many tokens after it; lower it")
        count, held_docs = p.examples or None, [held(i) for i in range(ctx.eval_rows)]
    else:
        pieces, held_docs = split_held_out(_pieces(p, ctx, last), p.data)
        if p.examples:
            pieces = pieces[: p.examples]
        train, count = pieces.__getitem__, len(pieces)
    source = ThoughtSource(p, tok, train, room=last, count=count, seed=ctx.seed, dist=ctx.dist, backend=ctx.kernels)
    return source, {p.name: lambda model: held_out_gain(model, source, held_docs)}


@torch.no_grad()
def held_out_gain(model: GPT, source: ThoughtSource, docs: list[list[int]]) -> dict[str, float]:
    """Information gain of greedy thoughts at fixed positions of held-out documents, against the same model
    without a thought; with the thoughts' mean length and the share that are empty."""
    o, tok = source.o, source.tok
    positions = []
    for i, doc in enumerate(docs):
        last = min(len(doc) - o.horizon, source.room)
        if last >= 1:
            positions.append((doc, 1 + (i * 7919) % last))  # fixed, spread over each document
    if not positions:
        return {"info_gain": 0.0, "length": 0.0, "empty": 0.0}
    contexts = [doc[:t] for doc, t in positions]
    thoughts = generate(model, [c + [tok.assistant] for c in contexts], max_new_tokens=o.max_new_tokens,
                        temperature=0.0, stop_id=tok.end, pad_id=tok.pad)
    gain = information_gain(model, model, contexts, thoughts, [doc[t : t + o.horizon] for doc, t in positions],
                            tok=tok, micro_rows=source.p.micro_batch_size, backend=source.backend)
    n = len(positions)
    return {"info_gain": float(gain.double().mean()), "length": sum(map(len, thoughts)) / n,
            "empty": sum(c[:1] == [tok.end] for c in thoughts) / n}


class RLPObjective(GRPOObjective):
    """GRPO's clipped surrogate on the thought tokens (no KL), aggregated by the step's token weights."""

    kind, kl = "rlp", False

    def extra(self) -> dict:
        return {"beta": 0.0}


RLP = ObjectiveKind(
    name="rlp", options=RLPOptions, read=read_documents, texts=lambda doc: [doc],
    sources=_sources, objective=lambda p, ctx: RLPObjective(p, ctx.kernels), check=_check, check_layout=_check_layout,
    frozen_copies=lambda p: 1,
)

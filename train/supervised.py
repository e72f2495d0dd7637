"""The supervised kinds: `pretrain` (next-token loss on every token of documents) and `sft` (the same loss on
the assistant tokens of conversations, the data source masking the rest).

Both are packed into rows by train/data.py and held out the same way: embedded data has its own eval split,
a user's file its last 1/20. Their held-out metric is the loss and bits-per-byte (train/evaluate.py).
`<phase>.examples=N` trains on the first N documents or conversations only, repeated as epochs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from model.gpt import GPT
from train.data import Batch, TokenStream, conversations, embedded_pretraining
from train.evaluate import eval_loss
from train.heads import next_token_losses
from train.kind import Context, ObjectiveKind, PhaseConfig
from train.readers import budget, fit_context, read_conversations, read_documents, split_held_out


class NextTokenLoss:
    """Next-token cross-entropy, summed over supervised tokens and divided by the step's supervised count.

    Used for pretraining (every token supervised) and SFT (assistant tokens only: the data source masks
    the rest), so an SFT loss is normalised by the supervised tokens of the whole accumulated step.
    """

    def __init__(self, backend: str = "auto"):
        self.backend = backend  # the kernel switch (train/heads.py)

    def __call__(self, model: GPT, batch: Batch):
        loss = next_token_losses(model, batch, self.backend) / batch.normaliser
        return loss, {"loss": loss.detach()}


def _loss_eval(p: PhaseConfig, ctx: Context, source) -> dict:
    """{phase name: held-out loss and bits-per-byte} over `source`'s evaluation rows."""
    held_out = source.eval_batches(ctx.eval_rows, p.micro_batch_size)
    return {p.name: lambda model: eval_loss(model, held_out, ctx.token_bytes, ctx.kernels)}


# ------------------------------------------------------------------------------------------- pretrain
@dataclass
class PretrainOptions:
    mix: str = "facts=1,worked=1,chat=1"  # embedded pretraining documents: kind=weight, kinds facts/worked/chat


def _pretrain_sources(p: PhaseConfig, ctx: Context):
    if p.data == "embedded":
        mix = p.options["pretrain"].mix
        train = embedded_pretraining(ctx.task, ctx.tok, mix, ctx.seed, "train", ctx.seq_len, ctx.dist,
                                     p.examples or None)
        return train, _loss_eval(p, ctx, embedded_pretraining(ctx.task, ctx.tok, mix, ctx.seed, "eval", ctx.seq_len))
    train = TokenStream(p.data, ctx.tok, ctx.seq_len, os.path.join(ctx.out_dir, "data"), ctx.dist, p.examples)
    return train, _loss_eval(p, ctx, train)


PRETRAIN = ObjectiveKind(
    name="pretrain", options=PretrainOptions, read=read_documents, texts=lambda doc: [doc],
    sources=_pretrain_sources, objective=lambda p, ctx: NextTokenLoss(ctx.kernels),
)


# ------------------------------------------------------------------------------------------- sft
def user_conversations(p: PhaseConfig, ctx: Context) -> tuple[list, list]:
    """A user's conversations, split into (train, held-out), without those whose prompt (the turns before
    the first assistant turn) leaves no room in the context."""
    def prompt_len(conv) -> int:
        first = next(i for i, m in enumerate(conv) if m["role"] == "assistant")
        return len(ctx.tok.render_prompt(conv[:first]))

    return split_held_out(fit_context(read_conversations(p.data), prompt_len, ctx.seq_len, p.data), p.data)


def _sft_sources(p: PhaseConfig, ctx: Context):
    tok, T = ctx.tok, ctx.seq_len
    if p.data == "embedded":
        return (conversations(lambda i: ctx.task.conversation("train", i), tok, T, p.examples or None, ctx.dist),
                _loss_eval(p, ctx, conversations(lambda i: ctx.task.conversation("eval", i), tok, T)))
    train, held = user_conversations(p, ctx)
    train = budget(train, p.examples, f"{p.name}.examples", p.data)
    return (conversations(train.__getitem__, tok, T, len(train), ctx.dist),
            _loss_eval(p, ctx, conversations(held.__getitem__, tok, T, len(held))))


SFT = ObjectiveKind(
    name="sft", options=None, read=read_conversations, texts=lambda conv: [m["content"] for m in conv],
    sources=_sft_sources, objective=lambda p, ctx: NextTokenLoss(ctx.kernels),
)

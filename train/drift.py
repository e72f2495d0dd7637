"""Drift: how far the model has moved from each earlier phase-end model, evaluated after every phase.

For every phase k that has ended (and, in a branched run, the checkpoint it started from, named `init`),
with θ_k that phase's end weights and θ the current ones:

    drift/kl_text@k   mean over the held-out pretraining text's target tokens of KL(p_θk ‖ p_θ), in nats
    drift/kl_chat@k   the same over the held-out conversations' assistant tokens
    drift/dist@k      ‖θ − θ_k‖ / ‖θ_k‖ over all parameters, accumulated in fp64

    KL(p_θk ‖ p_θ) at a position = Σ_v p_θk(v) · (log p_θk(v) − log p_θ(v))   (next-token distributions)

Forgetting shows as a KL that grows on the text an earlier phase trained on; the distance says how much
of the weights a phase rewrote. The held-out sets are the embedded task's, the same rows as the held-out
loss of an embedded `pretrain` phase (the mix of the run's first phase with one, else the default mix) and
of an embedded `sft` phase, whatever phases the run has, so runs with different schedules compare. A run
that trains on no embedded data (only users' files, as for task accuracy) gets the distance alone.

θ_k is read from the phase-end checkpoint on disk (train/checkpoint.py), which the loop writes after the
phase's evaluation: for the phase that has just ended the current model is θ_k, and every metric @k is 0
exactly. A resume needs no state of its own: the checkpoints are all there.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch

from model.gpt import GPT
from train import checkpoint
from train.data import IGNORE, conversations, embedded_pretraining
from train.kind import Context
from train.supervised import PretrainOptions

MICRO_ROWS = 8  # rows per forward
CHUNK = 4096  # positions per (CHUNK, vocab) block of log-probs


class Drift:
    """The `drift` evaluator: fn(model) -> {"kl_text@k": ..., "kl_chat@k": ..., "dist@k": ...}."""

    def __init__(self, cfg, ctx: Context, clock: Callable[[], int], init_from: str = ""):
        """`clock`: the step the run is at (the evaluation after phase k runs at k's last step);
        `init_from`: the checkpoint a branched run started from ("" for none)."""
        self.cfg, self.clock, self.init_from, self.out_dir = cfg, clock, init_from, ctx.out_dir
        mix = next((p.options["pretrain"].mix for p in cfg.phases if "pretrain" in p.options), PretrainOptions().mix)
        text = embedded_pretraining(ctx.task, ctx.tok, mix, ctx.seed, "eval", ctx.seq_len)
        chat = conversations(lambda i: ctx.task.conversation("eval", i), ctx.tok, ctx.seq_len)
        embedded = any(p.data == "embedded" or p.aux for p in cfg.phases)  # aux objectives train on it too
        self.sets = {"text": text.eval_batches(ctx.eval_rows, MICRO_ROWS),
                     "chat": chat.eval_batches(ctx.eval_rows, MICRO_ROWS)} if embedded else {}
        self.ref: GPT | None = None  # one model that holds each θ_k in turn

    def references(self, step: int) -> list[tuple[str, str | None]]:
        """(name, checkpoint path) of every earlier model at `step`; None for the phase ending at `step`."""
        out = [("init", self.init_from)] if self.init_from else []
        end = 0
        for p in self.cfg.phases:
            end += p.steps
            if end == step:
                out.append((p.name, None))
            elif end < step and os.path.isfile(path := checkpoint.phase_end_path(self.out_dir, end, p.name)):
                out.append((p.name, path))
        return out

    @torch.no_grad()
    def __call__(self, model: GPT) -> dict[str, float]:
        refs = self.references(self.clock())
        if not refs:
            return {}
        hidden = {name: _hidden(model, batches) for name, batches in self.sets.items()}
        out = {}
        for k, path in refs:
            if path is None:  # the phase that has just ended: the current model is its end model
                out |= {f"kl_{name}@{k}": 0.0 for name in self.sets} | {f"dist@{k}": 0.0}
                continue
            ref = self._load(model, path)
            for name, batches in self.sets.items():
                out[f"kl_{name}@{k}"] = mean_kl(ref, _hidden(ref, batches), model, hidden[name])
            out[f"dist@{k}"] = relative_distance(model, ref)
        return out

    def _load(self, model: GPT, path: str) -> GPT:
        if self.ref is None:
            self.ref = GPT(model.cfg).to(model.wte.weight.device).eval()
        checkpoint.load_model_state(self.ref, checkpoint.read(path)["model"], path)
        return self.ref


def _hidden(model: GPT, batches) -> list[torch.Tensor]:
    """The model's hidden states at the supervised positions of each batch: (N_i, C) each."""
    device = model.wte.weight.device
    out = []
    for b in batches:
        b = b.to(device)
        out.append(model(b.idx, doc_ids=b.doc_ids)[b.targets != IGNORE])
    return out


@torch.no_grad()
def mean_kl(ref: GPT, ref_hidden: list[torch.Tensor], model: GPT, hidden: list[torch.Tensor]) -> float:
    """Mean over positions of KL(softmax(ref logits) ‖ softmax(model logits)), log-probs in fp32, the sum
    in fp64."""
    total, n = torch.zeros((), dtype=torch.float64, device=model.wte.weight.device), 0
    for hr, h in zip(ref_hidden, hidden):
        for s in range(0, h.size(0), CHUNK):
            logp_ref = ref.logits(hr[s : s + CHUNK]).float().log_softmax(-1)  # (N, V)
            logp = model.logits(h[s : s + CHUNK]).float().log_softmax(-1)
            total += (logp_ref.exp() * (logp_ref - logp)).sum(dtype=torch.float64)
        n += h.size(0)
    return float(total) / max(n, 1)


@torch.no_grad()
def relative_distance(model: torch.nn.Module, ref: torch.nn.Module) -> float:
    """‖θ − θ_ref‖ / ‖θ_ref‖ over every parameter, in fp64."""
    num = den = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    for (name, p), (ref_name, r) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        if name != ref_name:
            raise ValueError(f"relative_distance: parameters differ ({name} against {ref_name})")
        num = num + (p.double() - r.double()).square().sum()
        den = den + r.double().square().sum()
    return float(num.sqrt() / den.sqrt())

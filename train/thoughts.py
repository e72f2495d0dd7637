"""The data source of an `rlp` phase: positions in documents, sampled thoughts, their information gain.

Per step (the math and its simplifications: train/rlp.py):
    1. move the EMA baseline one step towards the current weights (at the phase's first step it starts as
       a copy of them), `ema_update`
    2. take P = batch_size / group_size positions: position i is document i (skipping any too short to
       hold one) at a token t drawn uniformly or where the policy's next-token entropy is highest
    3. sample G thoughts after doc[:t] + <|assistant|> with the KV-cache sampler (temperature, top-k,
       max_new_tokens, stop at <|end|>), thought j of position i from its own seed
    4. reward r = Σ_{j<k} log p_θ(x_{t+j} | doc[:t], <|assistant|>, c, x_{t..t+j}) − log p_EMA(x_{t+j} | doc[:t],
       x_{t..t+j}), both without grad (`information_gain`)
    5. group advantages of the rewards (kernels.group_advantages, as GRPO's)
    6. rows = doc[:t] + <|assistant|> + thought, targets on the thought tokens only, with GRPO's token
       weights (`loss_type`) and the old log-probs scored as the objective will score them (ratio 1)
    7. the step's metrics: mean information gain, thought length, empty and truncated thoughts

Data parallel: as in train/rollout.py, rank r takes its contiguous share of the P positions, so a group
never spans ranks; the row widths and the totals behind the weights and metrics are all-reduced, and the
EMA is updated from the same weights on every rank.
"""
from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable

import torch

from kernels import group_advantages, grpo_token_weights
from model.sampler import generate
from train import distributed
from train.data import IGNORE, Batch
from train.distributed import SINGLE, Dist
from train.heads import completion_logprobs
from train.kind import PhaseConfig
from train.readers import DataError
from train.rollout import RolloutBatch, take_groups
from train.tokenizer import Tokenizer

MAX_SKIPS = 64  # documents in a row too short for a position before a step gives up


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·θ for every parameter (buffers are copied); parameters() lists each
    tensor once, so a tied weight is averaged once."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def pack_rows(prefixes: list[list[int]], suffixes: list[list[int]], pad: int, width: int = 0) -> dict:
    """Rows prefix + suffix, right-padded to `width` tokens (at least the longest row): {"idx", "targets",
    "doc_ids"} of (n, width − 1), the target at t being token t + 1 and only suffix tokens supervised."""
    L = max(width, max(len(a) + len(b) for a, b in zip(prefixes, suffixes)))
    ids = torch.full((len(prefixes), L), pad, dtype=torch.long)
    targets = torch.full((len(prefixes), L - 1), IGNORE, dtype=torch.long)
    for i, (a, b) in enumerate(zip(prefixes, suffixes)):
        ids[i, : len(a) + len(b)] = torch.tensor(a + b)
        targets[i, len(a) - 1 : len(a) + len(b) - 1] = torch.tensor(b)
    idx = ids[:, :-1]
    return {"idx": idx, "targets": targets, "doc_ids": torch.zeros_like(idx, dtype=torch.int32)}


@torch.no_grad()
def suffix_logprob(model, prefixes: list[list[int]], suffixes: list[list[int]], *, pad: int, micro_rows: int,
                   backend: str, width: int = 0) -> torch.Tensor:
    """(n,) fp32 Σ log p(suffix | prefix) at temperature 1, scored in micro-batches of `micro_rows` rows
    through the same head as the training pass (train/heads.py)."""
    device = model.lm_head.weight.device
    rows = {k: v.to(device) for k, v in pack_rows(prefixes, suffixes, pad, width).items()}
    out = []
    for s in range(0, len(prefixes), micro_rows):
        b = Batch(**{k: v[s : s + micro_rows] for k, v in rows.items()})
        out.append(completion_logprobs(model, b, 1.0, backend).sum(dim=1))
    return torch.cat(out).float().cpu()


def information_gain(policy, baseline, contexts: list[list[int]], thoughts: list[list[int]],
                     continuations: list[list[int]], *, tok: Tokenizer, micro_rows: int, backend: str,
                     widths: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """(n,) r_i = log p_policy(cont_i | context_i, <|assistant|>, thought_i) − log p_baseline(cont_i | context_i),
    each a sum over the continuation's tokens; `widths` pads the two sets of rows (0: their longest)."""
    with_thought = suffix_logprob(policy, [c + [tok.assistant] + t for c, t in zip(contexts, thoughts)],
                                  continuations, pad=tok.pad, micro_rows=micro_rows, backend=backend, width=widths[0])
    without = suffix_logprob(baseline, contexts, continuations, pad=tok.pad, micro_rows=micro_rows, backend=backend,
                             width=widths[1])
    return with_thought - without


class ThoughtSource:
    """Samples and scores thoughts at document positions (module docstring); keeps the EMA baseline."""

    def __init__(self, p: PhaseConfig, tok: Tokenizer, document: Callable[[int], list[int]], *, room: int,
                 count: int | None = None, seed: int = 0, dist: Dist = SINGLE, backend: str = "auto"):
        self.p, self.tok, self.document, self.count = p, tok, document, count
        self.o = p.options["rlp"]  # the phase's knobs (train/rlp.py: RLPOptions)
        self.room = room  # the last t a position may take: doc[:t] + <|assistant|> + thought + k tokens fit
        self.seed, self.dist, self.backend = seed, dist, backend
        self.cursor = 0  # next global position index (the same on every rank)
        self.ema = None  # the EMA baseline model, made from the policy at the phase's first step
        self.ema_updates = 0  # updates since the phase began (how far the EMA has moved)
        self._pending_ema: dict | None = None  # a checkpoint's EMA weights, loaded once a model is at hand
        self._metrics: dict[str, float] = {}

    # ----------------------------------------------------------------------------------- one step
    def next_step(self, rows: int, micro_rows: int, model) -> list[RolloutBatch]:
        self._advance_ema(model)
        return self.rollout(model, rows, micro_rows)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    def _advance_ema(self, model) -> None:
        """Step 1: EMA_0 = θ at the phase's first step, then EMA_s = d·EMA_{s−1} + (1 − d)·θ at each later one."""
        if self.ema is None:
            self.ema = copy.deepcopy(model).eval().requires_grad_(False)
            if self._pending_ema is None:
                return
        if self._pending_ema is not None:
            pending, self._pending_ema = self._pending_ema, None
            self.ema.load_state_dict(pending)
        ema_update(self.ema, model, self.o.ema_decay)
        self.ema_updates += 1

    @torch.no_grad()
    def rollout(self, model, rows: int, micro_rows: int) -> list[RolloutBatch]:
        """This rank's share of a step of `rows` thoughts (all ranks), in micro-batches: steps 2 to 7."""
        o, tok, G = self.o, self.tok, self.o.group_size
        t0, was_training = time.perf_counter(), model.training
        model.eval()
        mine = self._take(rows)
        positions = [self.position(model, i) for i in mine]  # 2
        contexts = [doc[:t] for doc, t in positions for _ in range(G)]
        prompts = [c + [tok.assistant] for c in contexts]
        thoughts = generate(model, prompts, max_new_tokens=o.max_new_tokens, temperature=o.temperature,  # 3
                            top_k=o.top_k or None, stop_id=tok.end, pad_id=tok.pad,
                            seeds=[self._seed(i, j) for i in mine for j in range(G)])
        conts = [doc[t : t + o.horizon] for doc, t in positions for _ in range(G)]
        widths = tuple(distributed.all_reduce(max(len(a) + len(b) + extra for a, b in zip(pre, conts)), "max")
                       for pre, extra in ((prompts, o.max_new_tokens), (contexts, 0)))
        gain = information_gain(model, self.ema, contexts, thoughts, conts, tok=tok, micro_rows=micro_rows,  # 4
                                backend=self.backend, widths=widths)
        adv = group_advantages(gain, G, scale_std=o.scale_std, backend="reference")  # 5
        batches = self._pack(prompts, thoughts, adv.advantages, rows, micro_rows, model)  # 6
        model.train(was_training)
        self._metrics = self._step_metrics(gain, thoughts, adv.zero_var, rows, t0)  # 7
        return batches

    def _take(self, rows: int) -> range:
        """The global indices of this rank's positions of the next step (its contiguous share)."""
        mine, self.cursor = take_groups(self.cursor, rows, self.o.group_size, self.dist)
        return mine

    def position(self, model, i: int) -> tuple[list[int], int]:
        """(document, t) of global position i: document i, or the first after it long enough for a position
        (t in [1, last], last = min(len − horizon, room)), at t drawn uniformly or where the policy's
        next-token entropy is highest."""
        for skip in range(MAX_SKIPS):
            doc = self.document(self._index(i + skip))
            last = min(len(doc) - self.o.horizon, self.room)
            if last >= 1:
                break
        else:
            raise DataError(f"{self.p.name}: {MAX_SKIPS} documents in a row from position {i} are too short for a "
                            f"position with {self.p.name}.horizon={self.o.horizon} tokens after it")
        if self.o.position == "uniform":
            return doc, random.Random(f"{self.seed}/{self.p.name}/t/{i}").randint(1, last)
        return doc, 1 + int(next_token_entropy(model, doc[:last]).argmax())

    def _pack(self, prompts, thoughts, advantages, rows: int, micro_rows: int, model) -> list[RolloutBatch]:
        """Step 6: the policy rows in micro-batches, padded to the longest row of any rank."""
        o = self.o
        width = distributed.all_reduce(max(len(a) + len(b) for a, b in zip(prompts, thoughts)), "max")
        flat = pack_rows(prompts, thoughts, self.tok.pad, width)
        mask = flat["targets"] != IGNORE
        n_tokens = distributed.all_reduce(int(mask.sum()))  # thought tokens of the whole step, every rank
        flat["weights"] = grpo_token_weights(mask, o.loss_type, num_sequences=rows, num_tokens=n_tokens,
                                             max_len=max(o.max_new_tokens, width - 1))
        flat["advantages"] = advantages[:, None].expand_as(mask) * mask
        device = model.lm_head.weight.device
        flat = {k: v.to(device) for k, v in flat.items()}
        batches = [RolloutBatch(**{k: v[s : s + micro_rows] for k, v in flat.items()}, normaliser=float(n_tokens))
                   for s in range(0, len(prompts), micro_rows)]
        for b in batches:
            b.old_logp = completion_logprobs(model, b, o.temperature, self.backend)
        return batches

    def _step_metrics(self, gain: torch.Tensor, thoughts: list[list[int]], zero_var: torch.Tensor, rows: int,
                      t0: float) -> dict[str, float]:
        """Sums over every rank's thoughts (and groups), divided by the global counts."""
        end, n = self.tok.end, self.o.max_new_tokens
        lengths = sum(len(c) for c in thoughts)
        empty = sum(c[:1] == [end] for c in thoughts)  # nothing before the stop token
        truncated = sum(len(c) == n and c[-1] != end for c in thoughts)
        sums = distributed.all_reduce(torch.tensor(
            [float(gain.double().sum()), lengths, empty, truncated, float(zero_var.sum())], dtype=torch.float64)).tolist()
        return {"info_gain": sums[0] / rows, "length": sums[1] / rows, "empty": sums[2] / rows,
                "truncated": sums[3] / rows, "zero_std": sums[4] / (rows // self.o.group_size),
                "rollout_s": distributed.all_reduce(time.perf_counter() - t0, "max")}

    def _index(self, i: int) -> int:
        return i % self.count if self.count else i

    def _seed(self, i: int, j: int) -> int:
        """Sampling seed of thought j at global position i: the same whatever rank samples it."""
        return random.Random(f"{self.seed}/{self.p.name}/{i}/{j}").getrandbits(63)

    # ----------------------------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """The position and the EMA baseline (None before the phase began)."""
        return {"cursor": self.cursor, "ema_updates": self.ema_updates,
                "ema": None if self.ema is None else {k: v.cpu() for k, v in self.ema.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.cursor, self.ema_updates = state["cursor"], state["ema_updates"]
        self.ema, self._pending_ema = None, state["ema"]  # restored at the next step, beside its model


@torch.no_grad()
def next_token_entropy(model, ids: list[int]) -> torch.Tensor:
    """(len(ids),) entropy in nats of the model's next-token distribution after each prefix ids[:t+1]."""
    device = model.lm_head.weight.device
    idx = torch.tensor([ids], device=device)
    logits = model.logits(model(idx, doc_ids=torch.zeros_like(idx, dtype=torch.int32)))[0].float()  # (T, V)
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).cpu()

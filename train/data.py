"""Data sources: documents in, packed token rows out.

A source hands the loop one optimiser step of data at a time: a list of micro-batches (`Batch`), each
(B, T) token ids, next-token targets (-100 where nothing is supervised) and per-token document ids. Every
micro-batch of a step carries the step's total count of supervised tokens (`normaliser`), so an objective
that divides by it gives the same gradient however the step is split into micro-batches.

Rows are packed: documents are laid end to end, each starting with <|bos|>, and document ids are the running
count of <|bos|> in the row, so attention never crosses a document boundary. A document that does not fit at
the end of a row is cut there (its tail is dropped); rows are padded with <|pad|> (target -100) only if the
source runs out.

Positions are integers, so resuming needs only `state_dict()`:
    PackedDocs    - generated or listed documents, document i regenerated from its index (cursor = next i)
    TokenStream   - a user's .txt/.jsonl tokenized once into a memory-mapped shard (offset = next token)

User files are read by train/readers.py, which turns anything wrong with one into a one-line DataError.

Data parallel (train/distributed.py): a step's `rows` are the GLOBAL rows. These sources are deterministic
functions of their position, so every rank builds the same whole step and keeps its contiguous slice, rows
[r·B/W, (r+1)·B/W), split into its micro-batches. The positions stay global (a checkpoint's data position
means the same at any world size) and the normaliser is counted over every rank's rows, so it is already
the global count. The cost: each rank packs W times the rows it trains on, which for this data is small
next to a forward/backward; a loader of big shards would read only its own rows, and then its count would
be local and must be all-reduced (`distributed.all_reduce`), as GRPO's rollout source does.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from train.distributed import SINGLE, Dist
from train.readers import DataError, check_file, read_documents
from train.tasks import ArithmeticTask
from train.tokenizer import Tokenizer

IGNORE = -100


@dataclass
class Batch:
    idx: torch.Tensor  # (B, T) int64 input ids
    targets: torch.Tensor  # (B, T) int64 next-token targets, IGNORE where unsupervised
    doc_ids: torch.Tensor  # (B, T) int32 document id of each position
    normaliser: float = 1.0  # supervised tokens in the whole optimiser step (all micro-batches)
    component: int = 0  # which objective of a mixed phase this micro-batch feeds (train/mix.py)

    def to(self, device) -> Batch:
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def doc_ids_from_bos(idx: torch.Tensor, bos: int) -> torch.Tensor:
    return torch.cumsum(idx == bos, dim=-1, dtype=torch.int32)


def pack(docs, rows: int, seq_len: int, tok: Tokenizer) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pack (ids, mask) documents from the iterator `docs` into `rows` rows of seq_len + 1 tokens.

    Returns (tokens (rows, T+1), supervision mask (rows, T+1), documents consumed). The target of position
    t is token t+1, supervised where mask[t+1] is 1. Rows are built as Python lists and become tensors in
    one call each, through NumPy (3x faster than torch.tensor on nested lists): a tensor per document cost
    more than the rest of the packing.
    """
    width = seq_len + 1
    ids, mask, used = [], [], 0
    for _ in range(rows):
        row_ids, row_mask = [], []
        while len(row_ids) < width:
            doc = next(docs, None)
            if doc is None:
                break
            used += 1
            room = width - len(row_ids)
            row_ids += doc[0][:room]
            row_mask += doc[1][:room]
        pad = width - len(row_ids)
        ids.append(row_ids + [tok.pad] * pad)
        mask.append(row_mask + [0] * pad)
    return torch.from_numpy(np.array(ids, dtype=np.int64)), torch.from_numpy(np.array(mask, dtype=np.int64)), used


def to_batches(ids: torch.Tensor, mask: torch.Tensor, micro_rows: int, tok: Tokenizer,
               dist: Dist = SINGLE) -> list[Batch]:
    """Split this rank's slice of the step's packed rows into micro-batches that share the step's
    supervised-token count (counted over every rank's rows)."""
    idx, targets = ids[:, :-1], ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
    normaliser = float((targets != IGNORE).sum())
    doc_ids = doc_ids_from_bos(idx, tok.bos)
    share = idx.size(0) // dist.world_size
    first = dist.rank * share
    return [
        Batch(idx[i : i + micro_rows], targets[i : i + micro_rows], doc_ids[i : i + micro_rows], normaliser)
        for i in range(first, first + share, micro_rows)
    ]


# ------------------------------------------------------------------------------------------------ sources
def parse_mix(mix: str, kinds: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for part in mix.split(","):
        name, _, w = part.partition("=")
        name = name.strip()
        try:
            out[name] = float(w)
        except ValueError:
            raise DataError(f"mix entry {part!r} must look like kind=weight, e.g. facts=1") from None
        if name not in kinds:
            raise DataError(f"mix kind {name!r} is not one of {kinds}")
    if sum(out.values()) <= 0:
        raise DataError(f"mix {mix!r} has no positive weight")
    return out


class PackedDocs:
    """Documents `document(i) -> (ids, mask)`, i = 0, 1, ..., packed into rows (cycling after `count`);
    a training step yields `dist`'s share of the rows (held-out batches are never sharded).

    Each step's rows are drawn ahead, on a thread, while the step before trains: generating, tokenizing and
    packing 16 rows of the default run is pure Python (5 to 10 ms, 2 to 4% of a CPU step), and the step's
    tensor ops leave the GIL free for most of their time. A drawn-ahead step is used only if it starts at the
    current cursor with the same row count, so resuming (which moves the cursor) never sees a stale one; the
    cursor, and so the state, counts only the steps handed out.
    """

    def __init__(self, document, tok: Tokenizer, seq_len: int, count: int | None = None, dist: Dist = SINGLE):
        self.document, self.tok, self.seq_len, self.count, self.dist = document, tok, seq_len, count, dist
        self.cursor = 0
        self._ahead = None  # (cursor, rows, future of pack's result) of the step drawn ahead
        self._thread = None  # a one-worker executor, made on the first training step

    def docs_from(self, start: int):
        i = start
        while True:
            yield self.document(i % self.count if self.count else i)
            i += 1

    def next_step(self, rows: int, micro_rows: int, model=None) -> list[Batch]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (self.cursor, rows):
            ids, mask, used = ahead[2].result()
        else:
            ids, mask, used = self._pack(self.cursor, rows)
        self.cursor += used
        self._thread = self._thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="draw-ahead")
        self._ahead = (self.cursor, rows, self._thread.submit(self._pack, self.cursor, rows))
        return to_batches(ids, mask, micro_rows, self.tok, self.dist)

    def _pack(self, start: int, rows: int):
        return pack(self.docs_from(start), rows, self.seq_len, self.tok)

    def metrics(self) -> dict[str, float]:
        return {}

    def eval_batches(self, rows: int, micro_rows: int) -> list[Batch]:
        rows = rows if self.count is None else max(1, min(rows, self.count))
        ids, mask, _ = pack(self.docs_from(0), rows, self.seq_len, self.tok)
        return to_batches(ids, mask, micro_rows, self.tok)

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = state["cursor"]


PRETRAIN_KINDS = ("facts", "worked", "chat")


def embedded_pretraining(task: ArithmeticTask, tok: Tokenizer, mix: str, seed: int, split: str, seq_len: int,
                         dist: Dist = SINGLE, count: int | None = None):
    """Generated pretraining documents: plain facts, worked problems as text, problems as chat turns (the
    first `count` of them, cycled, when it is given).

    Chat documents are supervised on every token like any pretraining text; they teach a base model the
    turn tokens, so task accuracy (asked in the chat format) is meaningful from the first phase on.
    """
    kinds, weights = zip(*parse_mix(mix, PRETRAIN_KINDS).items())

    def document(i: int) -> tuple[list[int], list[int]]:
        kind = random.Random(f"{seed}/{split}/kind/{i}").choices(kinds, weights)[0]
        if kind == "chat":
            ids = tok.render_chat(task.conversation(split, i)).ids
        else:
            ids = tok.document(task.fact(split, i) if kind == "facts" else task.worked_text(split, i))
        return ids, [1] * len(ids)

    return PackedDocs(document, tok, seq_len, count, dist)


def conversations(convs, tok: Tokenizer, seq_len: int, count: int | None = None, dist: Dist = SINGLE) -> PackedDocs:
    """SFT rows: conversations `convs(i) -> messages`, supervised on assistant tokens only."""

    def document(i: int) -> tuple[list[int], list[int]]:
        r = tok.render_chat(convs(i))
        return r.ids, r.mask

    return PackedDocs(document, tok, seq_len, count, dist)


def first_documents(tokens: np.ndarray, bos: int, n: int, seq_len: int, path: str) -> np.ndarray:
    """The tokens of the first `n` documents (each starts with <|bos|>); DataError when they fill no row."""
    starts = np.flatnonzero(tokens == bos)
    out = tokens[: starts[n]] if len(starts) > n else tokens
    if len(out) < seq_len + 1:
        raise DataError(f"{path}: its first {n} training document(s) hold {len(out)} tokens, fewer than one row of "
                        f"model.seq_len+1={seq_len + 1}; allow more examples")
    return out


class TokenStream:
    """A user's text, tokenized once into a uint32 shard under `cache_dir`, read as consecutive windows.

    The last 1/20 of the tokens (at least one row) is held out for validation. With `documents` the training
    windows cycle over the first that many documents only.
    """

    def __init__(self, path: str, tok: Tokenizer, seq_len: int, cache_dir: str, dist: Dist = SINGLE,
                 documents: int = 0):
        self.tok, self.seq_len, self.offset, self.dist = tok, seq_len, 0, dist
        check_file(path, ".txt or .jsonl")
        try:
            with open(path, "rb") as f:
                digest = hashlib.sha1(f.read()).hexdigest()[:12]
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror}") from None
        # named by the text and the whole tokenizer, so a shard made by another run's tokenizer never matches
        tok_digest = hashlib.sha1(tok.dumps().encode()).hexdigest()[:8]
        shard = os.path.join(cache_dir, f"{os.path.basename(path)}.{digest}.{tok.name}{tok.n_vocab}-{tok_digest}.bin")
        if not os.path.exists(shard):
            os.makedirs(cache_dir, exist_ok=True)
            ids = [t for doc in tok.encode_batch(read_documents(path)) for t in [tok.bos] + doc]
            try:
                np.asarray(ids, dtype=np.uint32).tofile(shard + ".tmp")
                os.replace(shard + ".tmp", shard)
            except BaseException:  # a full disk: the partial shard must not hold the space
                if os.path.exists(shard + ".tmp"):
                    os.remove(shard + ".tmp")
                raise
        tokens = np.memmap(shard, dtype=np.uint32, mode="r")
        n_eval = max(seq_len + 1, len(tokens) // 20)
        if len(tokens) < n_eval + seq_len + 1:
            raise DataError(f"{path}: {len(tokens)} tokens is too few for seq_len={seq_len}; give more text")
        self.train, self.eval = tokens[:-n_eval], tokens[-n_eval:]
        if documents:
            self.train = first_documents(self.train, tok.bos, documents, seq_len, path)

    def _rows(self, tokens, start: int, rows: int) -> tuple[torch.Tensor, int]:
        T, n = self.seq_len, len(tokens)
        out = []
        for _ in range(rows):
            if start + T + 1 > n:
                start = 0  # wrap around: a new epoch
            out.append(torch.from_numpy(tokens[start : start + T + 1].astype(np.int64)))
            start += T
        return torch.stack(out), start

    def next_step(self, rows: int, micro_rows: int, model=None) -> list[Batch]:
        ids, self.offset = self._rows(self.train, self.offset, rows)
        return to_batches(ids, torch.ones_like(ids), micro_rows, self.tok, self.dist)

    def metrics(self) -> dict[str, float]:
        return {}

    def eval_batches(self, rows: int, micro_rows: int) -> list[Batch]:
        rows = min(rows, max(1, (len(self.eval) - 1) // self.seq_len))
        ids, _ = self._rows(self.eval, 0, rows)
        return to_batches(ids, torch.ones_like(ids), micro_rows, self.tok)

    def state_dict(self) -> dict:
        return {"offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.offset = state["offset"]

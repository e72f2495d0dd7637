"""KV cache and batched sampling: one engine for evaluation and for GRPO rollouts.

Prompts of different lengths are left-padded into one batch. Each row's RoPE positions start at 0 at its
first real token, and pad positions get document id -1 while real tokens get 0, so the attention mask keeps
real tokens from ever seeing a pad (the same `doc_ids` rule that separates packed documents). The prompt is
run once (prefill) to fill the cache; each new token then costs one forward of length 1 over the cache.
"""
from __future__ import annotations

import torch

from model.gpt import GPT


class KVCache:
    """Keys and values of every layer, (n_layer, B, n_kv_head, capacity, head_dim), filled left to right.

    The buffers take the dtype of the first keys stored unless `dtype` is given: the projections produce
    bf16 under bf16 autocast (on CUDA and on CPU alike) and the weights' dtype otherwise, and attention
    needs q, k and v in one dtype, so the cache follows what the model computes instead of guessing it.
    """

    def __init__(self, model: GPT, batch: int, capacity: int, dtype: torch.dtype | None = None):
        c = model.cfg
        self.shape = (c.n_layer, batch, c.n_kv_head, capacity, c.head_dim)
        self.device = model.wte.weight.device
        self.k = self.v = None
        if dtype is not None:
            self._allocate(dtype)
        self.length = 0  # positions filled so far (the same for every layer once a forward completes)

    def _allocate(self, dtype: torch.dtype) -> None:
        self.k = torch.zeros(self.shape, dtype=dtype, device=self.device)
        self.v = torch.zeros(self.shape, dtype=dtype, device=self.device)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, Hkv, T, D) after the cached positions; return views of everything cached."""
        if self.k is None:
            self._allocate(k.dtype)
        start, end = self.length, self.length + k.size(2)
        if end > self.shape[3]:
            raise ValueError(f"KV cache full: {end} positions needed, capacity {self.shape[3]}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator=None,
                generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """One token per row from logits (B, V): greedy at temperature 0, else softmax(logits/T) over the top k.

    With `generators` (one per row) each row draws from its own stream by the exponential race: with
    E_v ~ Exp(1) i.i.d., argmax_v p_v / E_v = argmax_v (logits_v − log E_v) is a sample of p, and row b's
    noise comes from generators[b] alone, so its tokens do not depend on which other rows share the batch.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if generators is not None:
        V = logits.size(-1)
        noise = torch.stack([torch.empty(V, device=logits.device).exponential_(generator=g) for g in generators])
        # E = 0 would give −log E = +inf, which beats every logit and turns a masked −inf into NaN
        return (logits - noise.clamp_min(torch.finfo(torch.float32).tiny).log()).argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: GPT,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    stop_id: int | None = None,
    pad_id: int = 0,
    generator: torch.Generator | None = None,
    seeds: list[int] | None = None,
    entropy: bool = False,
) -> list[list[int]] | tuple[list[list[int]], list[list[float]]]:
    """Complete every prompt; each completion ends at (and includes) `stop_id` or after max_new_tokens.

    With `entropy`, returns (completions, entropies): entropies[b][t] is the entropy in nats of the model's
    next-token distribution softmax(logits) (temperature 1, the whole vocabulary, whatever the sampling
    temperature and top-k) at the step that produced completions[b][t].

    Sampling draws from `generator` (one stream for the batch), or with `seeds` from one stream per row
    seeded by seeds[i]: then a row's completion depends only on its prompt and its seed, not on the other
    rows, which is what lets GRPO ranks sample their share of a batch and get what one process would.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt at least one token")
    if seeds is not None and (generator is not None or len(seeds) != len(prompts)):
        raise ValueError(f"seeds must give one seed per prompt ({len(seeds)} for {len(prompts)} prompts) "
                         f"and replace `generator`, not join it")
    device = model.wte.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    if P + max_new_tokens > model.cfg.seq_len:
        raise ValueError(
            f"prompt length {P} + max_new_tokens {max_new_tokens} exceeds the model context "
            f"model.seq_len={model.cfg.seq_len}"
        )
    pad = torch.tensor([P - len(p) for p in prompts], device=device)  # (B,) left padding per row
    idx = torch.tensor([[pad_id] * (P - len(p)) + p for p in prompts], device=device)  # (B, P)
    slot = torch.arange(P + max_new_tokens, device=device)  # (P + N,)
    doc_ids = torch.where(slot[None, :] < pad[:, None], -1, 0).to(torch.int32)  # (B, P + N)
    positions = (slot[None, :P] - pad[:, None]).clamp(min=0)  # (B, P)

    cache = KVCache(model, B, P + max_new_tokens)  # in the dtype the projections produce (see KVCache)
    hidden = model(idx, doc_ids=doc_ids[:, :P], positions=positions, cache=cache)  # prefill
    out: list[list[int]] = [[] for _ in range(B)]
    entropies: list[list[float]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    streams = None if seeds is None else [torch.Generator(device=device).manual_seed(s) for s in seeds]
    for t in range(max_new_tokens):
        logits = model.logits(hidden[:, -1])  # (B, V)
        tok = sample_next(logits, temperature, top_k, generator, streams)  # (B,)
        h = _entropy(logits).tolist() if entropy else None  # host sync, with the tokens' below
        for b in (~done).nonzero().flatten().tolist():
            out[b].append(int(tok[b]))
            if h is not None:
                entropies[b].append(h[b])
        if stop_id is not None:
            done |= tok == stop_id
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        pos = (P + t - pad)[:, None]  # (B, 1)
        hidden = model(tok[:, None], doc_ids=doc_ids[:, : P + t + 1], positions=pos, cache=cache)
    return (out, entropies) if entropy else out


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B,) entropy of softmax(logits) per row, in fp32: H = logsumexp(l) − Σ_v p_v·l_v."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits.nan_to_num(neginf=0.0)).sum(dim=-1)


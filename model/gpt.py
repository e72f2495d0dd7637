"""A minimal modern GPT.

Architecture choices:
    - token embedding, untied LM head, no biases anywhere
    - rotary position embedding (RoPE) on queries and keys, positions given per row so left-padded prompts
      start at position 0
    - RMSNorm pre-norm (no learnable scale), and a final RMSNorm before the head
    - grouped-query attention: n_head query heads share n_kv_head key/value heads
    - MLP with ReLU² (up 4×, square of ReLU, down)
    - document masking: a token attends only to earlier tokens of its own document (`doc_ids`)

The model returns normalised hidden states, not logits: the losses (cross-entropy, per-token log-probs,
GRPO) take the hidden states and the head weight together so the fused kernels never hold full-vocabulary
logits for the whole batch. `logits()` exists for sampling, where only the last position is needed.

`kernels` picks the attention implementation: "auto" (Triton on CUDA, torch's SDPA elsewhere), "triton",
"reference" (the fp32 oracle of the tests), or "sdpa"; `kernels._dispatch.attention_path` is the rule. The run
hands the loss heads the same value from its config (train/heads.py); kernels/_dispatch.py says what each
value means to every op.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels import attention
from kernels._dispatch import BACKENDS as KERNELS


@dataclass
class GPTConfig:
    vocab_size: int = 512  # ids the embedding and head cover (a run sets it: the tokenizer's size rounded up to 64)
    seq_len: int = 256  # longest sequence the model is trained on; RoPE tables cover it
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # query heads
    n_kv_head: int = 2  # key/value heads (grouped-query attention); must divide n_head
    n_embd: int = 128  # residual width; head dim = n_embd // n_head
    rope_theta: float = 10000.0  # RoPE base
    kernels: str = "auto"  # attention implementation: auto | triton | reference | sdpa

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "n_kv_head", "n_embd", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"model.{name}={getattr(self, name)} must be > 0")
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model.n_kv_head={self.n_kv_head} must divide model.n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"head dim {self.n_embd // self.n_head} must be even for RoPE")
        if self.kernels not in KERNELS:
            raise ValueError(f"model.kernels={self.kernels!r} is not one of {KERNELS}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1[i], x2[i]) of the two halves of the head dim. x (B, H, T, D); cos/sin (B, 1, T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.q = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.kv = nn.Linear(cfg.n_embd, 2 * cfg.n_kv_head * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, doc_ids, masks, cache):
        B, T, _ = x.shape
        H, Hkv, D = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        q = self.q(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k, v = self.kv(x).view(B, T, 2, Hkv, D).permute(2, 0, 3, 1, 4)  # 2 × (B, Hkv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # decode: append this step's keys/values, attend over everything cached
            k, v = cache.append(self.layer, k, v)  # (B, Hkv, T_cached, D) views into the cache
        y = attention(q, k, v, causal=True, doc_ids=doc_ids, backend=self.cfg.kernels,
                      mask_cache=masks)  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, H * D))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.down = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.down(F.relu(self.up(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.attn, self.mlp = Attention(cfg, layer), MLP(cfg)

    def forward(self, x, cos, sin, doc_ids, masks, cache):
        x = x + self.attn(rms_norm(x), cos, sin, doc_ids, masks, cache)
        return x + self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """Every initialisation in one place (σ = 1/√n_embd, the fan-in scale):

        | parameter                 | init                       | why                                        |
        |---------------------------|----------------------------|--------------------------------------------|
        | wte                       | N(0, 1)                    | RMSNorm follows, so only direction matters |
        | attn q, kv; mlp up        | U(±√3·σ)                   | unit-variance activations at the input     |
        | attn proj; mlp down       | 0                          | each block starts as the identity          |
        | lm_head                   | N(0, 0.001)                | near-uniform first predictions             |
        """
        s = math.sqrt(3.0) / math.sqrt(self.cfg.n_embd)
        nn.init.normal_(self.wte.weight, std=1.0)
        for b in self.blocks:
            for w in (b.attn.q.weight, b.attn.kv.weight, b.mlp.up.weight):
                nn.init.uniform_(w, -s, s)
            nn.init.zeros_(b.attn.proj.weight)
            nn.init.zeros_(b.mlp.down.weight)
        nn.init.normal_(self.lm_head.weight, std=0.001)

    def forward(self, idx: torch.Tensor, doc_ids: torch.Tensor | None = None, positions=None, cache=None):
        """Hidden states (B, T, n_embd) after the final norm.

        idx (B, T) token ids; doc_ids (B, T_keys) document id per key position (None: one document per row);
        positions (B, T) RoPE positions (None: 0..T-1, or continuing the cache); cache: a KVCache to decode.
        """
        B, T = idx.shape
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)
        if int(positions.max()) >= self.cos.size(0):
            raise ValueError(
                f"position {int(positions.max())} is past the model's context of {self.cos.size(0)} tokens "
                f"(model.seq_len); shorten the sequence or train with a longer seq_len"
            )
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)  # (B, 1, T, D/2)
        x = self.wte(idx)  # (B, T, C)
        masks = {}  # every layer attends with the same doc_ids: the first builds SDPA's mask, the rest reuse it
        for block in self.blocks:
            x = block(x, cos, sin, doc_ids, masks, cache)
        if cache is not None:
            cache.advance(T)
        return rms_norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    # ------------------------------------------------------------------------------------ accounting
    def num_params(self, embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embedding else n - self.wte.weight.numel()

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward) for MFU:

            6·N + 12·L·H·D·T

        N = parameters outside the token embedding (a lookup, not a matmul; the LM head counts), each doing
        one multiply-add forward and two backward (6 FLOPs); 12·L·H·D·T = attention scores and weighted
        sum, 2 matmuls × 2 FLOPs × 3 (fwd+bwd) over T keys per layer. Causality is not discounted,
        matching the usual convention.
        """
        c, T = self.cfg, seq_len or self.cfg.seq_len
        return 6 * self.num_params(embedding=False) + 12 * c.n_layer * c.n_head * c.head_dim * T

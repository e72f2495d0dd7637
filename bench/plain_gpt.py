"""The baseline of the CPU train-step benchmark: tritium's GPT written the plain-PyTorch way, as nanoGPT would.

The same shape as model/gpt.py (token embedding, untied head, no biases, RoPE, RMSNorm without a scale,
grouped-query attention, ReLU² MLP, the same widths), so both do the same FLOPs per token. What differs is
everything tritium adds around that shape:

    plain (here)                                       tritium (model/gpt.py, train/)
    one document per row: SDPA with is_causal=True     packed documents: SDPA with a document mask
    logits (N, V), then F.cross_entropy                 the fused-head loss (`kernels.linear_cross_entropy`)
    random windows of a token buffer (nanoGPT's         documents generated, tokenized and packed (the next
    get_batch)                                          step's on a thread while this one trains)
    clip_grad_norm_, AdamW, zero_grad                  the loop's step: norm, fault check, clip, AdamW, log

The optimiser is AdamW with tritium's settings (`OptimConfig`), weight decay on the matrices only. Nothing
here is used by training; it exists so that a benchmark can say how far tritium's step is from the plain one.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.gpt import GPTConfig
from train.config import OptimConfig


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class PlainGPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C, H, Hkv, D = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.H, self.Hkv, self.D = H, Hkv, D
        self.wte = nn.Embedding(cfg.vocab_size, C)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "q": nn.Linear(C, H * D, bias=False), "kv": nn.Linear(C, 2 * Hkv * D, bias=False),
            "proj": nn.Linear(H * D, C, bias=False),
            "up": nn.Linear(C, 4 * C, bias=False), "down": nn.Linear(4 * C, C, bias=False),
        }) for _ in range(cfg.n_layer))
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=False)
        inv_freq = cfg.rope_theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
        angles = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rope(self, x: torch.Tensor) -> torch.Tensor:  # x (B, H, T, D)
        T = x.size(2)
        cos, sin = self.cos[:T], self.sin[:T]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, C)
        for layer in self.layers:
            h = _rms_norm(x)
            q = layer["q"](h).view(B, T, self.H, self.D).transpose(1, 2)  # (B, H, T, D)
            k, v = layer["kv"](h).view(B, T, 2, self.Hkv, self.D).permute(2, 0, 3, 1, 4)  # 2 × (B, Hkv, T, D)
            y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True, enable_gqa=True)
            x = x + layer["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + layer["down"](F.relu(layer["up"](_rms_norm(x))).square())
        logits = self.lm_head(_rms_norm(x))  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class PlainStep:
    """nanoGPT's training step: a batch of random windows, forward, backward, clip, AdamW, zero the grads."""

    def __init__(self, cfg: GPTConfig, optim: OptimConfig, rows: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.model = PlainGPT(cfg)
        self.tokens = torch.randint(0, cfg.vocab_size, (64 * rows * cfg.seq_len,), generator=gen)  # the "corpus"
        self.rows, self.T, self.clip, self.gen = rows, cfg.seq_len, optim.grad_clip, gen
        params = list(self.model.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2 and p is not self.model.wte.weight],
                   "weight_decay": optim.weight_decay},
                  {"params": [p for p in params if p.dim() < 2 or p is self.model.wte.weight], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)

    def __call__(self) -> None:
        starts = torch.randint(0, self.tokens.numel() - self.T - 1, (self.rows,), generator=self.gen)
        window = torch.stack([self.tokens[s:s + self.T + 1] for s in starts.tolist()])  # (rows, T + 1)
        loss = self.model(window[:, :-1], window[:, 1:])
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

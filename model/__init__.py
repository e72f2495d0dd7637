"""The GPT and its sampler."""
from model.gpt import GPT, GPTConfig
from model.sampler import KVCache, generate

__all__ = ["GPT", "GPTConfig", "KVCache", "generate"]

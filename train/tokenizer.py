"""Byte-level BPE: trained with `rustbpe`, encoded with `tiktoken`, plus the chat format.

The split pattern is GPT-4's with one change: every digit is its own pre-token (`\\p{N}` instead of
`\\p{N}{1,3}`), so numbers are spelled digit by digit and arithmetic sees aligned columns.

Special tokens (appended after the BPE ranks):
    <|bos|>        starts every document; packed rows derive document ids from it
    <|user|>       opens a user turn
    <|assistant|>  opens an assistant turn (generation starts after it)
    <|end|>        closes a turn; the sampler stops on it
    <|pad|>        fills rows to a common length; never equal to <|end|>, so real stops are never masked

User text never becomes a special token: text is encoded with `encode_ordinary`, so the string
"<|end|>" typed by a user is just the characters `<`, `|`, `end`, ... Special ids only enter a sequence
through `render_chat` / `render_prompt`.

`Tokenizer.gpt2()` uses tiktoken's GPT-2 ranks instead (tiktoken downloads them on first use and caches
them; offline, only a machine that has them cached can use it).
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

import tiktoken

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = ("<|bos|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>")
ROLES = ("user", "assistant")


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used (printed as one line by the CLI)."""


@dataclass
class Rendered:
    ids: list[int]
    mask: list[int]  # 1 where the token is a supervised target (assistant content and its <|end|>)


class Tokenizer:
    def __init__(self, name: str, pattern: str, ranks: dict[bytes, int]):
        n = len(ranks)
        self.name, self.pattern, self.ranks = name, pattern, ranks
        self.special = {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
        self.enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special)
        self.bos, self.user, self.assistant, self.end, self.pad = (self.special[s] for s in SPECIAL_TOKENS)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """BPE with `vocab_size` ids in all (256 bytes + merges + the special tokens)."""
        import rustbpe

        n_merges_vocab = vocab_size - len(SPECIAL_TOKENS)
        if n_merges_vocab < 256:
            raise ValueError(f"vocab_size={vocab_size} is too small: needs at least {256 + len(SPECIAL_TOKENS)}")
        bpe = rustbpe.Tokenizer()
        bpe.train_from_iterator(iter(texts), n_merges_vocab, pattern=SPLIT_PATTERN)
        ranks = {bytes(b): r for b, r in bpe.get_mergeable_ranks()}
        return cls("bpe", bpe.get_pattern(), ranks)

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's 50257 ranks (downloaded by tiktoken on first use) plus our special tokens."""
        try:
            base = tiktoken.get_encoding("gpt2")
        except Exception as e:  # noqa: BLE001  (offline, tiktoken's download fails in several ways)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            reason = reason if len(reason) <= 120 else reason[:120].rsplit(" ", 1)[0] + " …"
            raise TokenizerError(f"--tokenizer=gpt2 needs GPT-2's ranks, which tiktoken downloads on first use and "
                                 f"could not ({type(e).__name__}: {reason}); connect once (tiktoken caches them in "
                                 f"TIKTOKEN_CACHE_DIR), or use --tokenizer=bpe") from None
        return cls("gpt2", base._pat_str, base._mergeable_ranks)

    def dumps(self) -> str:
        ranks = sorted(self.ranks.items(), key=lambda x: x[1])
        return json.dumps({
            "name": self.name,
            "pattern": self.pattern,
            "special": list(SPECIAL_TOKENS),
            "ranks": [[base64.b64encode(b).decode("ascii"), r] for b, r in ranks],
        })

    @classmethod
    def loads(cls, text: str, source: str = "tokenizer") -> Tokenizer:
        try:
            data = json.loads(text)
            special, name, pattern = data["special"], data["name"], data["pattern"]
            ranks = {base64.b64decode(b, validate=True): int(r) for b, r in data["ranks"]}
        except (ValueError, KeyError, TypeError) as e:
            raise TokenizerError(f"{source}: not a tokenizer.json written by tritium ({type(e).__name__}: "
                                 f"{str(e)[:80]})") from None
        if not isinstance(special, list) or tuple(special) != SPECIAL_TOKENS:
            raise TokenizerError(f"{source}: special tokens {special} differ from this version's {SPECIAL_TOKENS}")
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise TokenizerError(f"{source}: token ranks must be 0..{len(ranks) - 1}, each once")
        try:
            return cls(name, pattern, ranks)
        except (ValueError, TypeError) as e:  # tiktoken refuses the pattern or the ranks
            raise TokenizerError(f"{source}: tiktoken cannot build it ({str(e)[:80]})") from None

    def save(self, path: str) -> None:
        with open(path + ".tmp", "w") as f:
            f.write(self.dumps())
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, path: str) -> Tokenizer:
        if os.path.isdir(path):
            raise TokenizerError(f"{path} is a folder; give the path of a tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read tokenizer {path}: {e}") from None
        return cls.loads(text, path)

    # ----------------------------------------------------------------------------------------- encoding
    @property
    def n_vocab(self) -> int:
        return len(self.ranks) + len(SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids. Never produces a special token, whatever the text contains."""
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def token_bytes(self) -> list[int]:
        """UTF-8 byte length of every id (0 for special tokens), for bits-per-byte."""
        lengths = [0] * self.n_vocab
        for b, r in self.ranks.items():
            lengths[r] = len(b)
        return lengths

    def document(self, text: str) -> list[int]:
        """A pretraining document: <|bos|> then the text."""
        return [self.bos] + self.encode(text)

    # ----------------------------------------------------------------------------------------- chat
    def render_chat(self, messages: list[dict]) -> Rendered:
        """A conversation as ids, with the supervision mask used by SFT (assistant content + its <|end|>)."""
        ids, mask = [self.bos], [0]
        for i, m in enumerate(messages):
            role = m.get("role")
            if role not in ROLES:
                raise ValueError(f"message {i}: role {role!r} is not one of {ROLES}")
            if not isinstance(m.get("content"), str):
                raise ValueError(f"message {i}: 'content' must be a string")
            body = self.encode(m["content"]) + [self.end]
            ids += [self.user if role == "user" else self.assistant] + body
            mask += [0] + [int(role == "assistant")] * len(body)
        return Rendered(ids, mask)

    def render_prompt(self, messages: list[dict]) -> list[int]:
        """The conversation so far, ending with <|assistant|> so the model writes the next turn."""
        return self.render_chat(messages).ids + [self.assistant]

    def completion_text(self, ids: list[int]) -> str:
        """Decode a sampled completion, cut at the first <|end|> (or any other special token)."""
        out = []
        for t in ids:
            if t >= len(self.ranks):
                break
            out.append(t)
        return self.decode(out)

"""Strict readers of a user's data files: every mistake in one is a DataError naming the file and the line.

Anything wrong with a file (missing, a folder, empty, not UTF-8, malformed JSON, a line of the wrong shape, a
conversation without an assistant turn, text that is not valid Unicode) is a DataError, which the CLI prints
as one line. Examples whose prompt leaves no room in the context are dropped with one printed line counting
them (`fit_context`), and the last 1/20 of a file is held out for evaluation (`split_held_out`).

    read_documents       .txt (one document) or .jsonl of {"text": ...}       pretraining
    read_conversations   .jsonl of {"messages": [...]} or {"prompt", "response"}   SFT
    read_prompts         .jsonl of {"prompt": ..., "answer": ...[, "demo": ...]}   RL
"""
from __future__ import annotations

import json
import os


class DataError(ValueError):
    """Missing, empty or malformed data (printed as one line by the CLI)."""


def split_held_out(items: list, path: str) -> tuple[list, list]:
    """The last 1/20 of a user's file (at least one item) is held out for evaluation."""
    if len(items) < 2:
        raise DataError(f"{path}: needs at least 2 examples (one is held out for evaluation), got {len(items)}")
    n_eval = max(1, len(items) // 20)
    return items[:-n_eval], items[-n_eval:]


def budget(items: list, n: int, option: str, path: str) -> list:
    """The first `n` training items (all of them for 0): a data budget. Asking for more than the file holds
    is said in one printed line, not silently ignored."""
    if n and n > len(items):
        print(f"note: {option}={n}, but {path} holds {len(items)} training examples; the phase uses all of them")
    return items[:n] if n else items


def fit_context(items: list, prompt_len, limit: int, path: str) -> list:
    """The items whose prompt is at most `limit` tokens (`prompt_len(item)`); the rest are dropped with one
    printed line, and DataError if none is left.

    A prompt longer than that leaves no room in the context: an SFT conversation would have no assistant
    token inside the row, an RL prompt no room for its completion (the sampler needs prompt + max_new_tokens
    <= model.seq_len). Dropping a few such lines beats failing a long run halfway through.
    """
    kept = [x for x in items if prompt_len(x) <= limit]
    if not kept:
        raise DataError(f"{path}: every prompt is longer than the {limit} tokens the context leaves for it; "
                        f"raise model.seq_len or shorten the prompts")
    if len(kept) < len(items):
        print(f"note: {path}: dropped {len(items) - len(kept)} of {len(items)} examples whose prompt is longer "
              f"than the {limit} tokens the context leaves for it")
    return kept


def check_file(path: str, kinds: str) -> None:
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; give a {kinds} file (or 'embedded')")
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path} (give an existing {kinds} file, or 'embedded')")


def read_documents(path: str) -> list[str]:
    """A .txt file is one document; a .jsonl file holds one {"text": ...} document per line."""
    check_file(path, ".txt or .jsonl")
    ext = os.path.splitext(path)[1]
    if ext not in (".txt", ".jsonl"):
        raise DataError(f"{path}: unsupported extension {ext!r}; pretraining data is .txt or .jsonl")
    if ext == ".txt":
        docs = [_read_text(path)]
    else:
        docs = read_jsonl(path, parse_text)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"{path} is empty: no text to train on")
    return docs


def read_jsonl(path: str, parse) -> list:
    """Every non-blank line of a .jsonl file through `parse(obj, where)`; errors name the file and line."""
    check_file(path, ".jsonl")
    if not path.endswith(".jsonl"):
        raise DataError(f"{path}: expected a .jsonl file")
    out = []
    for n, line in enumerate(_read_text(path).split("\n"), 1):
        if line.strip():
            out.append(parse(_json_line(path, n, line), f"{path}:{n}"))
    if not out:
        raise DataError(f"{path} is empty: no examples")
    return out


def parse_conversation(obj, where: str) -> list[dict]:
    """{"messages": [{"role", "content"}, ...]} or {"prompt": ..., "response": ...}."""
    if isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str):
        return [{"role": "user", "content": _unicode(obj["prompt"], where)},
                {"role": "assistant", "content": _unicode(obj["response"], where)}]
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    roles = [m.get("role") for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []
    unknown = next((r for r in roles if isinstance(r, str) and r not in ("user", "assistant")), None)
    if unknown is not None:
        raise DataError(f'{where}: unknown role {unknown!r}; a message\'s role is "user" or "assistant"')
    if not isinstance(msgs, list) or not msgs or not all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
        for m in msgs
    ):
        raise DataError(f'{where}: expected {{"messages": [{{"role": "user"|"assistant", "content": str}}, ...]}} '
                        f'or {{"prompt": str, "response": str}}')
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{where}: the conversation has no assistant turn to learn from")
    return [{"role": m["role"], "content": _unicode(m["content"], where)} for m in msgs]


def parse_text(obj, where: str) -> str:
    """{"text": str} for pretraining."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise DataError(f'{where}: expected an object with a string "text" field')
    return _unicode(obj["text"], where)


class Prompt(tuple):
    """An RL prompt: the pair (messages, answer), with `demo`, the text of a demonstration reply (the
    assistant turn of a worked solution), or None when there is none."""

    def __new__(cls, messages: list[dict], answer: str, demo: str | None = None):
        self = super().__new__(cls, (messages, answer))
        self.demo = demo
        return self


def parse_prompt(obj, where: str) -> Prompt:
    """{"prompt": str, "answer": str or number} for RL, with an optional "demo": str (a demonstration reply,
    for the demonstration-guided GRPO modes)."""
    answer = obj.get("answer") if isinstance(obj, dict) else None
    if (not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or isinstance(answer, bool)
            or not isinstance(answer, (str, int, float))):
        raise DataError(f'{where}: expected {{"prompt": str, "answer": str or number}}')
    demo = obj.get("demo")
    if demo is not None and not isinstance(demo, str):
        raise DataError(f'{where}: "demo" must be a string (a demonstration reply), got {type(demo).__name__}')
    return Prompt([{"role": "user", "content": _unicode(obj["prompt"], where)}], _unicode(str(answer), where),
                  None if demo is None else _unicode(demo, where))


def _read_text(path: str) -> str:
    """A whole file as text: UTF-8, a leading byte-order mark dropped; else DataError naming line and byte."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at offset {e.start}); "
                        f"convert the file to UTF-8") from None


def _unicode(text: str, where: str) -> str:
    """`text` unless it holds an unpaired surrogate (JSON can escape one, "\\ud800"), which no UTF-8 encoder
    (the tokenizer's included) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{where}: text holds an unpaired surrogate (\\u{ord(text[e.start]):04x}), which is not "
                        f"valid Unicode") from None
    return text


def _json_line(path: str, lineno: int, line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        # some messages end in "at" ("Unterminated string starting at"): the column completes them
        raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # a number too long to convert; nesting too deep
        raise DataError(f"{path}:{lineno}: malformed JSON ({str(e).split(';')[0] or 'nested too deeply'})") from None


def read_conversations(path: str) -> list[list[dict]]:
    return read_jsonl(path, parse_conversation)


def read_prompts(path: str) -> list[Prompt]:
    return read_jsonl(path, parse_prompt)

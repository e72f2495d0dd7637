"""User data files: over-long prompts dropped with a count, UTF-8 with positions in errors, special-token
strings kept as text, and readers that, fuzzed, raise nothing but a one-line DataError."""
import json
import random
import re
from types import SimpleNamespace

import pytest

from train.config import PhaseConfig
from train.data import TokenStream
from train.grpo import GRPOOptions, user_prompts
from train.readers import (DataError, fit_context, parse_conversation, parse_prompt, parse_text, read_documents,
                           read_jsonl)
from train.supervised import user_conversations
from train.tokenizer import SPECIAL_TOKENS


def test_overlong_prompts_are_dropped_with_a_count(tmp_path, tok, capsys):
    rl = tmp_path / "rl.jsonl"
    rl.write_text("".join(json.dumps({"prompt": "word " * (60 if i % 4 == 0 else 3), "answer": i}) + "\n"
                          for i in range(40)))
    p = PhaseConfig(name="grpo", objective="grpo", data=str(rl), options={"grpo": GRPOOptions(max_new_tokens=16)})
    train_items, held = user_prompts(p, SimpleNamespace(tok=tok, seq_len=64))
    assert len(train_items) + len(held) == 30
    assert capsys.readouterr().out.strip() == (f"note: {rl}: dropped 10 of 40 examples whose prompt is longer than "
                                               f"the 48 tokens the context leaves for it")
    sft = tmp_path / "sft.jsonl"  # the prompt of a conversation is what precedes its first assistant turn
    sft.write_text(json.dumps({"prompt": "word " * 70, "response": "ok"}) + "\n" +
                   json.dumps({"messages": [{"role": "assistant", "content": "hi " * 70},
                                            {"role": "user", "content": "word " * 70}]}) + "\n" +
                   json.dumps({"prompt": "short", "response": "word " * 70}) + "\n")
    train_items, held = user_conversations(PhaseConfig(name="sft", objective="sft", data=str(sft)),
                                           SimpleNamespace(tok=tok, seq_len=64))
    assert len(train_items) + len(held) == 2 and "dropped 1 of 3" in capsys.readouterr().out
    with pytest.raises(DataError, match="every prompt is longer than the 4 tokens"):
        fit_context([[1] * 5], len, 4, "x.jsonl")


def test_text_is_read_as_utf8_with_positions_in_errors(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\n')
    assert read_jsonl(str(bom), parse_text) == ["caf\u00e9"]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:3: not UTF-8 text \(byte b'\\xff' at offset 38\)"):
        read_jsonl(str(bad), parse_text)
    surrogate = tmp_path / "surrogate.jsonl"
    surrogate.write_text('{"text": "ok"}\n{"text": "half \\ud800 a pair"}\n')
    with pytest.raises(DataError, match=r"surrogate.jsonl:2: text holds an unpaired surrogate \(\\ud800\)"):
        read_jsonl(str(surrogate), parse_text)


def _random_str(rng: random.Random) -> str:
    return "".join(rng.choice(["a", " ", "é", "\u2028", "<|end|>", "\\", '"', "Answer: 7", "\ud800", "\x00", "\n"])
                   for _ in range(rng.randint(0, 6)))


def _random_json(rng: random.Random, depth: int = 0):
    """A random JSON value; at the top, half the time one shaped like a valid line with random parts."""
    kinds = ["str", "int", "float", "bool", "none", "list", "dict"] if depth < 3 else ["str", "int"]
    kind = "known" if depth == 0 and rng.random() < 0.5 else rng.choice(kinds)
    if kind == "str":
        return _random_str(rng)
    if kind == "int":
        return rng.choice([0, -1, 7, 10**30, -(10**300)])
    if kind == "float":
        return rng.choice([0.5, -1e308, float("inf"), float("nan")])
    if kind in ("bool", "none"):
        return rng.choice([True, False, None])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        keys = ["prompt", "response", "answer", "text", "messages", "role", "content", "x"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    value = lambda: _random_str(rng) if rng.random() < 0.8 else _random_json(rng, 3)  # noqa: E731
    role = lambda: rng.choice(["user", "assistant", "assistant", "system", 3])  # noqa: E731
    return rng.choice([{"messages": [{"role": role(), "content": value()} for _ in range(rng.randint(0, 3))]},
                       {"prompt": value(), "response": value()},
                       {"prompt": value(), "answer": value()},
                       {"text": value()}])


def test_fuzz_data_readers_raise_only_data_errors(tmp_path, tok):
    rng = random.Random(0)
    readers = [lambda p: read_jsonl(p, parse_conversation), lambda p: read_jsonl(p, parse_prompt), read_documents]
    outcomes = {"read": 0, "refused": 0}
    for case in range(300):
        path = tmp_path / f"case{case}.{'txt' if case % 5 == 0 else 'jsonl'}"
        if case % 3 == 0:  # raw bytes: mostly not UTF-8, sometimes JSON-ish
            raw = [rng.choice([rng.randrange(256), 10, 123, 125, 34]) for _ in range(rng.randint(0, 60))]
            path.write_bytes(bytes(raw))
        else:
            lines = [json.dumps(_random_json(rng), ensure_ascii=rng.random() < 0.5) if rng.random() < 0.9 else
                     rng.choice(["{", "[" * 5000, "1" * 5000, ""]) for _ in range(rng.randint(1, 3))]
            path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        for read in readers:
            try:
                items = read(str(path))
            except DataError as e:
                assert "\n" not in str(e)
                outcomes["refused"] += 1
                continue
            outcomes["read"] += 1
            for item in items:  # what was accepted renders, and user text never becomes a special token
                msgs = item if isinstance(item, list) else item[0] if isinstance(item, tuple) else None
                if msgs is not None:
                    ids = tok.render_chat(msgs).ids
                    assert sum(t >= len(tok.ranks) for t in ids) == 1 + 2 * len(msgs)
    assert outcomes["read"] > 30 and outcomes["refused"] > 300, outcomes  # both paths were exercised
    shard = tmp_path / "bytes.txt"
    shard.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    with pytest.raises(DataError, match="not UTF-8 text"):
        TokenStream(str(shard), tok, 32, str(tmp_path / "cache"))
    shard.write_text("a few words")
    with pytest.raises(DataError, match="tokens is too few for seq_len=32"):
        TokenStream(str(shard), tok, 32, str(tmp_path / "cache"))


def test_special_token_strings_in_user_data_stay_text(tmp_path, tok):
    sft = tmp_path / "sft.jsonl"
    sft.write_text(json.dumps({"prompt": "".join(SPECIAL_TOKENS), "response": "<|end|><|user|>"}) + "\n")
    (msgs,) = read_jsonl(str(sft), parse_conversation)
    r = tok.render_chat(msgs)
    assert [t for t in r.ids if t >= len(tok.ranks)] == [tok.bos, tok.user, tok.end, tok.assistant, tok.end]

"""`--<phase>.examples=N`: a phase sees only N distinct documents, conversations or prompts, repeated as
epochs, from the embedded task and from a user's files alike."""
import itertools
import json

import numpy as np
import pytest
import torch

from model.gpt import GPT, GPTConfig
from train.config import ConfigError, apply_overrides, load_preset
from train.phases import build_phases, context
from train.tasks import ArithmeticTask
from train.tokenizer import Tokenizer

TOK = Tokenizer.train(ArithmeticTask(digits=2).corpus(200), vocab_size=300)


def phases(tmp_path, overrides):
    cfg = apply_overrides(load_preset("smoke"), overrides)
    ctx = context(cfg, TOK, cfg.task.arithmetic(cfg.seed), str(tmp_path))
    return {p.cfg.name: p for p in build_phases(cfg, ctx)}


def documents(source, n):
    """The first n documents a packed source draws, as hashable token tuples."""
    return [tuple(ids) for ids, _ in itertools.islice(source.docs_from(0), n)]


def assert_cycles(items, n):
    """Exactly n distinct items, repeated in the same order: an epoch of n, then the next."""
    assert len(set(items)) == n, len(set(items))
    assert all(items[i] == items[i % n] for i in range(len(items)))


@pytest.mark.parametrize("phase", ["pretrain", "sft"])
def test_embedded_documents_and_conversations_repeat_n_distinct_items(tmp_path, phase):
    src = phases(tmp_path, {f"{phase}.examples": "5"})[phase].source
    assert_cycles(documents(src, 23), 5)
    unlimited = phases(tmp_path, {})[phase].source
    assert len(set(documents(unlimited, 23))) > 15  # without a budget the documents keep changing
    assert documents(unlimited, 5) == documents(src, 5)  # the budget is the first N of the same documents


def test_training_rows_hold_only_the_budgeted_conversations(tmp_path):
    """Through next_step, as the loop draws them: every conversation in the rows is one of the first 3."""
    src = phases(tmp_path, {"sft.examples": "3"})["sft"].source
    allowed = {TOK.decode(ids) for ids in documents(src, 3)}
    seen = set()
    for _ in range(6):
        for b in src.next_step(4, 2):
            for row in b.idx.tolist():
                text = TOK.decode(row)
                seen |= {"<|bos|>" + d for d in text.split("<|bos|>")[1:-1]}  # whole ones (the last may be cut)
    assert seen and seen <= allowed, seen - allowed


class Recorder:
    def __init__(self, prompt):
        self.prompt, self.asked = prompt, []

    def __call__(self, i):
        item = self.prompt(i)
        self.asked.append(item[0][0]["content"])
        return item


def test_rl_prompts_repeat_n_distinct_prompts(tmp_path):
    src = phases(tmp_path, {"grpo.examples": "3", "grpo.max_new_tokens": "2"})["grpo"].source
    src.prompt = Recorder(src.prompt)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, seq_len=128, n_layer=1, n_head=2, n_kv_head=1, n_embd=16))
    for _ in range(4):  # 4 completions a step in groups of 2: 2 prompts a step, 8 in all
        src.next_step(4, 2, model)
    assert len(src.prompt.asked) == 8
    assert_cycles(src.prompt.asked, 3)


def test_user_files_are_cut_to_their_first_n_examples(tmp_path, capsys):
    convs, prompts, docs = tmp_path / "c.jsonl", tmp_path / "p.jsonl", tmp_path / "d.jsonl"
    convs.write_text("".join(json.dumps({"prompt": f"Say {i}.", "response": f"{i}"}) + "\n" for i in range(40)))
    prompts.write_text("".join(json.dumps({"prompt": f"Name {i}.", "answer": i}) + "\n" for i in range(40)))
    docs.write_text("".join(json.dumps({"text": f"Document number {i} says {'something ' * 30}"}) + "\n"
                            for i in range(40)))
    built = phases(tmp_path, {"sft.data": str(convs), "sft.examples": "4", "grpo.data": str(prompts),
                              "grpo.examples": "2", "pretrain.data": str(docs), "pretrain.examples": "3"})
    assert_cycles([TOK.decode(d) for d in documents(built["sft"].source, 12)], 4)
    assert "Say 3." in TOK.decode(documents(built["sft"].source, 4)[3])
    grpo = built["grpo"].source
    assert [grpo.prompt(grpo._index(i))[1] for i in range(6)] == ["0", "1"] * 3
    stream = built["pretrain"].source
    assert np.count_nonzero(np.asarray(stream.train) == TOK.bos) == 3  # the tokens of the first 3 documents
    assert "Document number 3" not in TOK.decode(np.asarray(stream.train).tolist())
    rows = torch.cat([b.idx for _ in range(8) for b in stream.next_step(4, 2)])
    assert set(rows.flatten().tolist()) <= set(np.asarray(stream.train).tolist())

    phases(tmp_path, {"sft.data": str(convs), "sft.examples": "500"})  # more than the file holds: all, said once
    assert "note: sft.examples=500, but " in capsys.readouterr().out


def test_a_negative_budget_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^sft.examples=-1 must be >= 0$"):
        apply_overrides(load_preset("smoke"), {"sft.examples": "-1"})

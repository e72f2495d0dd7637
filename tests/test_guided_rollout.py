"""The demonstration-guided group layout (train/guided.py): demonstrations are the SFT rendering of the
worked reply; prefix rows start from the demonstration's first n tokens and train on their continuation."""
from types import SimpleNamespace

import torch

from train.guided import demo_tokens, sample_guided
from train.readers import Prompt
from train.tasks import ArithmeticTask


def test_demonstration_is_the_sft_assistant_turn(tok):
    p = ArithmeticTask(digits=2).problem("train", 3)
    msgs = [{"role": "user", "content": p.question}]
    item = Prompt(msgs, str(p.answer), p.worked)
    chat = tok.render_chat(msgs + [{"role": "assistant", "content": p.worked}])
    prompt = tok.render_prompt(msgs)
    demo = demo_tokens(tok, item, 100)
    assert chat.ids == prompt + demo  # the assistant turn as SFT renders it, <|end|> included
    assert chat.mask[len(prompt):] == [1] * len(demo)  # and exactly what SFT supervises
    assert demo_tokens(tok, item, 5) == demo[:5]


class FakeSource:
    """What sample_guided uses of a rollout source: options, tokenizer and a sampler that records its calls."""

    def __init__(self, tok, **o):
        self.tok, self.calls = tok, []
        self.o = SimpleNamespace(**({"group_size": 4, "demos": 1, "prefix": "const:0.5", "prefix_rows": 1,
                                     "max_new_tokens": 40} | o))

    def _generate(self, model, prompts, seeds, max_new_tokens):
        self.calls.append((prompts, seeds, max_new_tokens))
        return [[7, self.tok.end] for _ in prompts]


def test_group_layout_and_prefix_lengths(tok):
    task = ArithmeticTask(digits=2)
    items = [Prompt(*task.prompt("train", i), task.problem("train", i).worked) for i in range(2)]
    prompts = [tok.render_prompt(m) for m, _ in items for _ in range(4)]
    seeds = list(range(8))
    src = FakeSource(tok)
    s = sample_guided(src, None, items, prompts, seeds, 0.5, SimpleNamespace())
    demos = [demo_tokens(tok, item, 40) for item in items]
    assert s.demo.tolist() == [False, False, False, True] * 2
    for g in range(2):
        n = int(0.5 * (len(demos[g]) - 1))
        assert s.given[4 * g: 4 * g + 4] == [0, 0, n, 0]
        assert s.completions[4 * g + 2] == demos[g][:n] + [7, tok.end]  # the prefix, then what was sampled
        assert s.completions[4 * g + 3] == demos[g]
    plain, *prefixed = src.calls
    assert plain[1] == [0, 1, 4, 5] and plain[2] == 40  # plain rows keep their seeds and length limit
    assert all(len(c[0]) == 1 and c[2] == 40 - (len(c[0][0]) - len(prompts[0])) for c in prefixed)
    assert sorted(seed for c in prefixed for seed in c[1]) == [2, 6]
    assert torch.equal(s.demo, torch.tensor([r % 4 == 3 for r in range(8)]))

"""Task accuracy's arithmetic, on scripted completions (the sampler is replaced, so the counts are exact)."""
import torch

import train.evaluate as evaluate
from train.tasks import ArithmeticTask, arithmetic_reward
from train.tokenizer import Tokenizer

TOK = Tokenizer.train(ArithmeticTask(digits=2).corpus(100), vocab_size=300)


def test_accuracy_pass_k_sampled_and_length(monkeypatch):
    """Two problems; greedy answers the first right with the worked reply and the second wrong with the short
    one; of the 3 samples at temperature 1, problem 0 gets 0 right and problem 1 gets 2.
    accuracy = 1/2, length = (len(worked) + len(short)) / 2 tokens, pass@3 = 1/2, sampled = 2/6."""
    problems = [([{"role": "user", "content": "What is 12+9?"}], "21"),
                ([{"role": "user", "content": "What is 40-3?"}], "37")]
    worked = TOK.encode("2+9=11, 1+0+1=2. Answer: 21") + [TOK.end]
    short = TOK.encode("Answer: 36") + [TOK.end]
    right = TOK.encode("Answer: 37") + [TOK.end]
    script = {0.0: [worked, short], 1.0: [short, short, short, right, short, right]}  # prompt-major rows

    def fake_generate(model, prompts, *, temperature, **kw):
        assert len(prompts) == len(script[temperature])
        return script[temperature]

    monkeypatch.setattr(evaluate, "generate", fake_generate)
    model = torch.nn.Module()
    model.wte = torch.nn.Embedding(1, 1)
    out = evaluate.task_accuracy(model, TOK, problems, arithmetic_reward, max_new_tokens=32, pass_k=3)
    assert out == {"accuracy": 0.5, "length": (len(worked) + len(short)) / 2, "pass@3": 0.5, "sampled": 2 / 6}

"""python -m train.think: the answer position of a held-out problem, found in its tokens."""
from train.tasks import ArithmeticTask
from train.think import answer_positions
from train.tokenizer import Tokenizer


def test_the_position_is_just_before_the_answer_digits():
    task = ArithmeticTask(digits=3, ops="+-", seed=3)
    tok = Tokenizer.train(task.corpus(200), vocab_size=320)
    for i, (doc, t) in enumerate(answer_positions(task, tok, 20)):
        answer = str(task.problem("eval", i).answer)
        assert tok.decode(doc[:t]).endswith(task.problem("eval", i).question + "<|end|><|assistant|>Answer: ")
        assert tok.decode(doc[t:]) == answer + "<|end|>"

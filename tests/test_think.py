"""python -m train.think: the answer position of a held-out problem, found in its tokens."""
from train.tasks import ArithmeticTask
from train.think import answer_positions, readable
from train.tokenizer import Tokenizer


def test_the_position_is_just_before_the_answer_digits():
    task = ArithmeticTask(digits=3, ops="+-", seed=3)
    tok = Tokenizer.train(task.corpus(200), vocab_size=320)
    for i, (doc, t) in enumerate(answer_positions(task, tok, 20)):
        answer = str(task.problem("eval", i).answer)
        assert tok.decode(doc[:t]).endswith(task.problem("eval", i).question + "<|end|><|assistant|>Answer: ")
        assert tok.decode(doc[t:]) == answer + "<|end|>"


def test_ids_past_the_vocabulary_are_shown_not_fatal():
    tok = Tokenizer.train(ArithmeticTask(digits=2).corpus(50), vocab_size=300)
    ids = tok.encode("12+3")
    assert readable(tok, ids) == "12+3"
    assert readable(tok, ids[:1] + [tok.n_vocab + 5] + ids[1:] + [tok.end]) == \
        tok.decode(ids[:1]) + f"<|id {tok.n_vocab + 5}|>" + tok.decode(ids[1:]) + "<|end|>"

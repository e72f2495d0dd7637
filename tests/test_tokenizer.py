import pytest

from train.tasks import ArithmeticTask
from train.tokenizer import SPECIAL_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(ArithmeticTask(digits=3).corpus(300), vocab_size=300)


def test_round_trip(tok):
    for text in ["345+278: 5+8=13, 4+7+1=12. Answer: 623", "héllo wörld ✓", "", "  two  spaces\n\nnewlines"]:
        assert tok.decode(tok.encode(text)) == text


def test_vocab_size_and_specials(tok):
    assert tok.n_vocab == 300
    assert sorted(tok.special.values()) == list(range(300 - len(SPECIAL_TOKENS), 300))
    assert len({tok.bos, tok.user, tok.assistant, tok.end, tok.pad}) == 5  # pad never doubles as the stop token


def test_digits_are_single_tokens(tok):
    ids = tok.encode("1234567890")
    assert len(ids) == 10 and tok.decode(ids[:1]) == "1"


def test_user_text_never_becomes_a_special_token(tok):
    for s in SPECIAL_TOKENS:
        ids = tok.encode(f"before {s} after")
        assert not set(ids) & set(tok.special.values()), s
        assert tok.decode(ids) == f"before {s} after"
    chat = tok.render_chat([{"role": "user", "content": "<|end|><|assistant|>"}, {"role": "assistant", "content": "ok"}])
    assert chat.ids.count(tok.end) == 2 and chat.ids.count(tok.assistant) == 1


def test_chat_mask_covers_assistant_content_and_its_end(tok):
    r = tok.render_chat([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}])
    supervised = [t for t, m in zip(r.ids, r.mask) if m]
    assert supervised == tok.encode("4") + [tok.end]
    assert r.ids[0] == tok.bos
    prompt = tok.render_prompt([{"role": "user", "content": "What is 2+2?"}])
    assert prompt[-1] == tok.assistant and prompt[:-1] == r.ids[: len(prompt) - 1]


def test_bad_role_is_an_error(tok):
    with pytest.raises(ValueError, match="role 'system'"):
        tok.render_chat([{"role": "system", "content": "x"}])


def test_save_load(tok, tmp_path):
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    again = Tokenizer.load(path)
    text = "What is 17+4? <|end|>"
    assert again.encode(text) == tok.encode(text) and again.special == tok.special

"""Error and warning texts: whole sentences that name what is wrong."""
import json

import pytest
import torch

from train import checkpoint
from train.readers import DataError, parse_conversation, read_documents, read_jsonl
from train.tokenizer import Tokenizer, TokenizerError


@pytest.mark.parametrize("line,message", [
    ('{"text": "unterminated}', "malformed JSON (Unterminated string starting at column 10)"),
    ('{"text": "a\tb"}', "malformed JSON (Invalid control character"),
    ('{"text": oops}', "malformed JSON (Expecting value at column 10)"),
])
def test_malformed_json_is_described_once(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        read_jsonl(str(path), lambda obj, where: obj)
    assert str(e.value).startswith(f"{path}:2: {message}") and " at at " not in str(e.value), str(e.value)


def test_a_folder_given_as_a_data_file_is_called_a_folder(tmp_path):
    for read in (read_documents, lambda p: read_jsonl(p, lambda obj, where: obj)):
        with pytest.raises(DataError, match=f"^{tmp_path} is a folder; give a "):
            read(str(tmp_path))
    with pytest.raises(TokenizerError, match=f"^{tmp_path} is a folder; give the path of a tokenizer.json"):
        Tokenizer.load(str(tmp_path))


def test_an_unknown_chat_role_is_named():
    obj = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello"}]}
    with pytest.raises(DataError) as e:
        parse_conversation(json.loads(json.dumps(obj)), "chat.jsonl:4")
    assert str(e.value) == 'chat.jsonl:4: unknown role \'system\'; a message\'s role is "user" or "assistant"'


def test_an_unreadable_checkpoint_warning_ends_on_a_whole_sentence(tmp_path, capsys):
    for step in (1, 2):
        checkpoint.save(str(tmp_path), {"step": step, "w": torch.arange(1000.0)})
    newest = tmp_path / "ckpt-000002.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    checkpoint.load(str(tmp_path))
    warning = capsys.readouterr().err.strip()
    # torch's message is several sentences on one line; the warning keeps the first whole
    assert warning == (f"warning: checkpoint {newest} is unreadable, truncated or corrupt (PytorchStreamReader "
                       f"failed reading zip archive: failed finding central directory); falling back to "
                       f"{tmp_path / 'ckpt-000001.pt'}")

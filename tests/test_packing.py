"""train.data.pack: documents laid end to end into rows, cut at the row's end, padded when the source runs out."""
import threading
from types import SimpleNamespace

import torch

from train.data import PackedDocs, pack

PAD = 99


def test_pack_cuts_at_row_end_and_pads_when_documents_run_out():
    docs = [([1, 2, 3], [0, 1, 1]), ([], []), ([4, 5], [1, 1]), ([6, 7, 8, 9], [1, 0, 1, 1])]
    ids, mask, used = pack(iter(docs), rows=3, seq_len=3, tok=SimpleNamespace(pad=PAD))
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (3, 4)
    # row 0: the first document, the empty one, and the third cut after one token; row 1: the fourth whole;
    # row 2: nothing left, all padding and unsupervised
    assert ids.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9], [PAD] * 4]
    assert mask.tolist() == [[0, 1, 1, 1], [1, 0, 1, 1], [0] * 4]
    assert used == 4


def test_pack_pads_a_row_the_last_document_leaves_short():
    ids, mask, used = pack(iter([([5, 6], [1, 1])]), rows=1, seq_len=4, tok=SimpleNamespace(pad=PAD))
    assert ids.tolist() == [[5, 6, PAD, PAD, PAD]] and mask.tolist() == [[1, 1, 0, 0, 0]] and used == 1


def numbered_docs(made_by: dict):
    """PackedDocs over documents [bos, i, i, i] (i = the index), noting which thread generates each."""
    def document(i):
        made_by.setdefault(i, threading.current_thread())
        return [0, i + 1, i + 1, i + 1], [0, 1, 1, 1]

    return PackedDocs(document, SimpleNamespace(pad=PAD, bos=0), seq_len=7)  # 2 documents a row


def test_next_step_is_drawn_ahead_and_only_used_where_it_starts():
    made_by = {}
    src, plain = numbered_docs(made_by), numbered_docs({})
    want = [pack(plain.docs_from(2 * k), rows=1, seq_len=7, tok=SimpleNamespace(pad=PAD))[0] for k in range(7)]
    first, second = src.next_step(rows=1, micro_rows=1), src.next_step(rows=1, micro_rows=1)
    assert made_by[0] is threading.main_thread() and made_by[2] is not threading.main_thread(), (
        "the second step was not drawn ahead, on another thread, while the first one was out")
    assert all(torch.equal(b.idx, w[:, :-1]) for b, w in zip(first + second, want))
    assert src.state_dict() == {"cursor": 4}  # the steps handed out, not the one drawn ahead
    src.load_state_dict({"cursor": 8})  # a resume elsewhere: the step drawn ahead (cursor 4) is not it
    assert torch.equal(src.next_step(rows=1, micro_rows=1)[0].idx, want[4][:, :-1])
    two = src.next_step(rows=2, micro_rows=2)[0].idx  # a different row count than was drawn ahead
    assert torch.equal(two, torch.cat([want[5], want[6]])[:, :-1])

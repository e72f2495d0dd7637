"""train.data.pack: documents laid end to end into rows, cut at the row's end, padded when the source runs out."""
from types import SimpleNamespace

import torch

from train.data import pack

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

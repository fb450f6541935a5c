"""encode_frame's per-call fast paths (vocab lookup table, cached column sets, no index reset) give bit-identical arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from training.dataset import ContentVocab, StaticScaler, _static_matrix, encode_frame, static_feature_columns


def _reference_encode(vocab: ContentVocab, values) -> np.ndarray:
    """The pandas path every value went through before the lookup table."""
    idx = pd.Index(vocab.ids).get_indexer(pd.Series(values, dtype=object).astype("string").to_numpy(dtype=object, na_value=None))
    return np.where(idx < 0, 1, idx + 2).astype(np.int32)


def test_vocab_lookup_table_equals_the_pandas_path() -> None:
    vocab = ContentVocab.from_ids([f"C{i:03d}" for i in range(50)])
    rng = np.random.default_rng(0)
    pool = np.array([*vocab.ids[:10], "", None, "C999", "c001"], dtype=object)
    for _ in range(20):
        values = pool[rng.integers(0, len(pool), rng.integers(0, 30))]
        got = vocab.encode(values)
        assert got.dtype == np.int32 and got.tobytes() == _reference_encode(vocab, values).tobytes()
    # Other value types take the pandas path: same answers as before.
    for values in (np.array([1.0, np.nan, None, vocab.ids[2]], dtype=object), [vocab.ids[0], None], pd.Series([vocab.ids[4], "x"])):
        assert vocab.encode(values).tobytes() == _reference_encode(vocab, values).tobytes()
    # The table is a cache: not part of equality, never pickled.
    again = pickle.loads(pickle.dumps(vocab))
    assert again == vocab and "_codes" not in again.__dict__ and "_codes" in vocab.__dict__


def test_repeated_vocab_ids_still_raise_like_pandas() -> None:
    vocab = ContentVocab(("A", "A", "B"))
    with pytest.raises(Exception, match="unique"):
        vocab.encode(np.array(["A"], dtype=object))


def test_static_matrix_with_nullable_dtypes_and_duplicate_names() -> None:
    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": pd.array([True, None, False], dtype="boolean"), "c": np.float32([0.5, np.nan, 2])})
    want = frame[["c", "a", "b"]].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
    assert _static_matrix(frame, ["c", "a", "b"]).tobytes() == want.tobytes()
    dup = pd.concat([frame, frame[["a"]]], axis=1)
    assert _static_matrix(dup, ["c"]).tobytes() == want[:, :1].tobytes()
    with pytest.raises(ValueError, match="missing"):
        _static_matrix(frame, ["c", "zz"])


def _same(a, b) -> None:
    assert a.arrays.keys() == b.arrays.keys() and a.meta == b.meta
    for k in a.arrays:
        assert a.arrays[k].dtype == b.arrays[k].dtype and a.arrays[k].tobytes() == b.arrays[k].tobytes(), k
    assert np.array_equal(a.hcp_id, b.hcp_id) and a.week.tobytes() == b.week.tobytes()


def test_encoding_ignores_the_index_and_each_row_encodes_alone_as_in_the_whole(frame) -> None:
    vocab = ContentVocab.from_ids(frame["label_content_id"])
    scaler = StaticScaler.fit(frame, static_feature_columns(frame))
    whole = encode_frame(frame, vocab, scaler, max_seq_len=8)
    shifted = frame.set_index(pd.Index(np.arange(len(frame)) * 5 + 3))
    _same(encode_frame(shifted, vocab, scaler, max_seq_len=8), whole)
    for i in (0, 7, len(frame) - 1):  # a served request: one row
        _same(encode_frame(frame.iloc[[i]].reset_index(drop=True), vocab, scaler, max_seq_len=8), whole.subset(np.array([i])))
        _same(encode_frame(frame.iloc[[i]], vocab, scaler, max_seq_len=8), whole.subset(np.array([i])))

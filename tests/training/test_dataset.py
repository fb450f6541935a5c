"""Encoding a training-set frame: sequences, labels, validation errors, the time split."""

from __future__ import annotations

import numpy as np
import pytest

from contract.schema import CHANNELS
from training.dataset import NONE, PAD, ContentVocab, StaticScaler, encode_frame, static_feature_columns, time_split


def test_sequences_keep_the_most_recent_items_left_aligned(frame, encoded) -> None:
    data, vocab, _ = encoded
    row = int(np.flatnonzero(frame["seq_len"].to_numpy() == 11)[0])
    seq = np.asarray(frame["seq_channel"].iloc[row])
    assert data.arrays["length"][row] == 8
    assert data.arrays["channel"][row].tolist() == (seq[-8:] + 1).tolist()
    content = vocab.encode(np.asarray(frame["seq_content_id"].iloc[row], dtype=object)[-8:])
    assert data.arrays["content"][row].tolist() == content.tolist()
    short = int(np.flatnonzero(frame["seq_len"].to_numpy() == 3)[0])
    assert data.arrays["length"][short] == 3
    assert data.arrays["channel"][short, 3:].tolist() == [0] * 5
    assert data.arrays["content"][short, 3:].tolist() == [PAD] * 5
    empty = int(np.flatnonzero(frame["seq_len"].to_numpy() == 0)[0])
    assert data.arrays["length"][empty] == 0 and data.arrays["channel"][empty].sum() == 0


def test_labels_are_encoded(frame, encoded) -> None:
    data, vocab, _ = encoded
    assert data.arrays["label_slot"].tolist() == (frame["label_day_offset"] * 4 + frame["label_daypart"]).tolist()
    assert vocab.decode(data.arrays["label_content"]).tolist() == frame["label_content_id"].tolist()
    assert data.arrays["static"].shape == (len(frame), len(static_feature_columns(frame)))


def test_vocab_reserves_pad_and_none_and_masks() -> None:
    vocab = ContentVocab.from_ids(["b", "a", None, "a", ""])
    assert vocab.ids == ("a", "b") and len(vocab) == 4
    assert vocab.encode(["a", None, "zzz", "b", ""]).tolist() == [2, NONE, NONE, 3, NONE]
    assert vocab.mask(["b"]).tolist() == [False, True, False, True]


def test_content_tag_codes_follow_the_vocabulary() -> None:
    import pandas as pd

    from training.data import content_tag_codes

    tags = pd.DataFrame(
        {
            "content_id": ["a", "b", "c"],
            "topic": ["guideline", "disease_info", "not_a_topic"],
            "content_type": ["video", "article", "video"],
            "form": ["live", "long_read", "slides"],
        }
    )
    codes = content_tag_codes(("b", "x", "a", "c"), tags)
    # Rows: pad, none, then the vocabulary; codes are 1-based (0 = untagged or unknown value).
    assert codes.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [0, 0, 0], [4, 2, 7], [0, 2, 6]]


def test_static_features_skip_ids_labels_and_sequences(frame) -> None:
    cols = static_feature_columns(frame)
    assert "is_kol" in cols and "affinity_visit" in cols
    assert not any(c.startswith(("label_", "seq_")) or c in ("hcp_id", "event_timestamp") for c in cols)
    scaler = StaticScaler.fit(frame, cols)
    z = scaler.transform(frame)
    assert np.allclose(z.mean(0), 0, atol=1e-5)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("label_channel", len(CHANNELS), "label_channel.*row 5"),
        ("label_day_offset", 7, "label_day_offset.*row 5"),
        ("label_daypart", -1, "label_daypart.*row 5"),
        ("label_response", 2, "label_response.*row 5"),
        ("label_propensity", 0.0, "label_propensity.*row 5"),
    ],
)
def test_bad_labels_name_column_and_row(frame, encoded, column, value, message) -> None:
    _, vocab, scaler = encoded
    bad = frame.copy()
    bad[column] = bad[column].astype("float64")
    bad.loc[5, column] = value
    with pytest.raises(ValueError, match=message):
        encode_frame(bad, vocab, scaler, 8)


def test_missing_column_and_ragged_sequences_are_named(frame, encoded) -> None:
    _, vocab, scaler = encoded
    with pytest.raises(ValueError, match="seq_daypart"):
        encode_frame(frame.drop(columns=["seq_daypart"]), vocab, scaler, 8)
    ragged = frame.copy()
    ragged["seq_weekday"] = ragged["seq_weekday"].copy()
    ragged.at[20, "seq_weekday"] = np.array([1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    with pytest.raises(ValueError, match="seq_weekday.*row 20"):
        encode_frame(ragged, vocab, scaler, 8)


def test_time_split_validates_on_the_last_weeks(encoded) -> None:
    data, _, _ = encoded
    train, val, test = time_split(data.week, 3)
    assert train.sum() + val.sum() == len(data) and not (train & val).any() and not test.any()
    assert data.week[train].max() < data.week[val].min()
    assert len(np.unique(data.week[val])) == 3
    with pytest.raises(ValueError, match="val_weeks=12"):
        time_split(data.week, 12)


def test_time_split_reports_on_test_weeks_after_the_selection_weeks(encoded) -> None:
    data, _, _ = encoded
    train, val, test = time_split(data.week, 3, 2)
    assert train.sum() + val.sum() + test.sum() == len(data)
    assert not (train & val).any() and not (val & test).any() and not (train & test).any()
    assert data.week[train].max() < data.week[val].min() and data.week[val].max() < data.week[test].min()
    assert len(np.unique(data.week[val])) == 3 and len(np.unique(data.week[test])) == 2
    with pytest.raises(ValueError, match="test_weeks=3"):
        time_split(data.week, 9, 3)


def test_only_opened_or_engaged_touches_count_as_responses(frame) -> None:
    """seq_response is the feature stage's code (0 not delivered, 1 delivered, 2 opened, 3 engaged): >= 2 is a response."""
    f = frame.head(1).copy()
    f.at[f.index[0], "seq_response"] = np.array([0, 1, 2, 3])
    for col, value in (
        ("seq_channel", [0, 1, 2, 3]),
        ("seq_content_id", [""] * 4),
        ("seq_read_seconds", [0.0] * 4),
        ("seq_gap_days", [1.0] * 4),
        ("seq_weekday", [0, 1, 2, 3]),
        ("seq_daypart", [0, 1, 2, 3]),
    ):
        f.at[f.index[0], col] = np.array(value)
    vocab = ContentVocab.from_ids(frame["label_content_id"])
    enc = encode_frame(f, vocab, StaticScaler.fit(f, static_feature_columns(f)), max_seq_len=4)
    assert enc.arrays["response"][0].tolist() == [1, 1, 2, 2]  # 1 = no, 2 = yes


def _with_response_history(frame, days: int = 365):
    from features.catalog import response_history_names

    names = response_history_names(days)
    counts = np.random.default_rng(0).integers(0, 40, (len(frame), len(names)))
    counts[3, 0] = 300  # beyond uint8: kept at 255
    out = frame.copy()
    out[names] = counts
    return out, names, counts


def test_response_history_counts_are_their_own_array_not_static(frame, encoded) -> None:
    _, vocab, scaler = encoded
    with_hist, names, counts = _with_response_history(frame)
    assert static_feature_columns(with_hist) == static_feature_columns(frame)
    data = encode_frame(with_hist, vocab, scaler, max_seq_len=8)
    assert data.meta["history_columns"] == tuple(names)
    assert data.arrays["history_long"].dtype == np.uint8
    assert data.arrays["history_long"].tolist() == np.minimum(counts, 255).tolist()
    without = frame.drop(columns=names)
    assert "history_long" not in encode_frame(without, vocab, scaler, max_seq_len=8).arrays


def test_bad_response_history_is_named(frame, encoded) -> None:
    _, vocab, scaler = encoded
    with_hist, names, _ = _with_response_history(frame)
    bad = with_hist.copy()
    bad.loc[5, names[7]] = -1
    with pytest.raises(ValueError, match=f"{names[7]}.*row 5"):
        encode_frame(bad, vocab, scaler, max_seq_len=8)
    with pytest.raises(ValueError, match="response-history columns missing"):
        encode_frame(with_hist.drop(columns=[names[-1]]), vocab, scaler, max_seq_len=8)
    other, _, _ = _with_response_history(frame, days=90)
    with pytest.raises(ValueError, match="one '<days>d' window"):
        encode_frame(with_hist.join(other[[c for c in other.columns if c.endswith("_90d")]]), vocab, scaler, max_seq_len=8)


def test_a_bad_count_beyond_the_first_block_names_the_frames_row(monkeypatch) -> None:
    import training.dataset as dataset
    from training.synthetic import synthetic_training_frame

    frame = synthetic_training_frame(n_hcps=20, n_weeks=12)
    frame.loc[150, "cr_visit_sent_7d"] = -1
    blocks = dataset.float_blocks
    monkeypatch.setattr(dataset, "float_blocks", lambda f, names, rows=64: blocks(f, names, rows))  # 150 sits in the third block
    vocab = dataset.ContentVocab.from_ids(frame["label_content_id"])
    scaler = dataset.StaticScaler.fit(frame, dataset.static_feature_columns(frame))
    with pytest.raises(ValueError, match=r"'cr_visit_sent_7d', row 150 "):
        dataset.encode_frame(frame, vocab, scaler, 16)

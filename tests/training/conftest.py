"""Shared tiny inputs for the training tests."""

from __future__ import annotations

import pytest

from training.dataset import ContentVocab, StaticScaler, encode_frame, static_feature_columns
from training.synthetic import synthetic_training_frame


@pytest.fixture(scope="module")
def frame():
    """A small synthetic training set (64 HCPs x 12 weeks)."""
    return synthetic_training_frame(n_hcps=64, n_weeks=12, n_content=12, max_hist=16, seed=3)


@pytest.fixture(scope="module")
def encoded(frame):
    """The synthetic frame encoded, with its vocabulary and scaler."""
    vocab = ContentVocab.from_ids(frame["label_content_id"])
    scaler = StaticScaler.fit(frame, static_feature_columns(frame))
    return encode_frame(frame, vocab, scaler, max_seq_len=8), vocab, scaler


@pytest.fixture(autouse=True)
def _bento_home(tmp_path_factory, monkeypatch):
    """`nba promote` copies champions into the BentoML model store: a scratch one per test, never ~/bentoml."""
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")

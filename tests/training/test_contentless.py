"""Which channels carry content comes from the customer's logs (or the config), travels in the bundle, and is obeyed."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from contract.schema import CHANNELS
from training.contentless import (
    DEFAULT_CONTENTLESS,
    bundle_contentless,
    contentless_from_touchpoints,
    contentless_mask,
    contentless_names,
    resolve_contentless,
)

PHONE, VISIT, EMAIL = CHANNELS.index("phone"), CHANNELS.index("visit"), CHANNELS.index("email")


def _touches(per_channel: dict[int, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(channel, has_content) arrays with ``touches`` rows per channel of which ``with_content`` name an item."""
    ch, has = [], []
    for c, (touches, with_content) in per_channel.items():
        ch += [c] * touches
        has += [True] * with_content + [False] * (touches - with_content)
    return np.array(ch), np.array(has)


def test_calls_that_carry_content_are_not_contentless() -> None:
    # A CRM that logs an e-detail on every call (the independent world of issue 13).
    every_call = contentless_from_touchpoints(*_touches({PHONE: (40, 40), VISIT: (30, 30), EMAIL: (50, 50)}))
    assert not every_call[PHONE] and contentless_names(every_call) == []
    # Our simulator's logs: calls never name an item.
    ours = contentless_from_touchpoints(*_touches({PHONE: (40, 0), VISIT: (30, 30), EMAIL: (50, 50)}))
    assert contentless_names(ours) == ["phone"]


def test_threshold_and_channels_never_logged() -> None:
    ch, has = _touches({PHONE: (100, 3), VISIT: (100, 10), EMAIL: (100, 100)})
    mask = contentless_from_touchpoints(ch, has)
    assert mask[PHONE] and not mask[VISIT] and not mask[EMAIL]  # 3% is noise, 10% is practice
    assert not contentless_from_touchpoints(ch, has, min_share=0.02)[PHONE]
    # Channels without a logged touch keep the default's answer.
    unseen = [c for c in range(len(CHANNELS)) if c not in (PHONE, VISIT, EMAIL)]
    assert not mask[unseen].any()
    only_email = contentless_from_touchpoints(*_touches({EMAIL: (10, 10)}))
    assert contentless_names(only_email) == list(DEFAULT_CONTENTLESS)
    assert contentless_names(contentless_from_touchpoints(*_touches({EMAIL: (10, 10)}), default=["webinar"])) == ["webinar"]


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="fax"):
        contentless_mask(["phone", "fax"])
    with pytest.raises(ValueError, match="same shape"):
        contentless_from_touchpoints(np.array([0, 1]), np.array([True]))
    with pytest.raises(ValueError, match="channel: indices"):
        contentless_from_touchpoints(np.array([len(CHANNELS)]), np.array([True]))
    with pytest.raises(ValueError, match="min_share"):
        contentless_from_touchpoints(np.array([0]), np.array([True]), min_share=2.0)
    with pytest.raises(ValueError, match="'auto' or a list"):
        resolve_contentless("sometimes", np.array([0]), np.array([2]))


def test_config_key_accepts_auto_or_channels_and_names_bad_ones() -> None:
    from nba.configuration import ConfigError, load_config
    from training.config import TrainingConfig

    assert load_config(TrainingConfig, "training").contentless_channels == "auto"
    assert load_config(TrainingConfig, "training", overrides={"contentless_channels": ["phone", "visit"]}).contentless_channels == ["phone", "visit"]
    with pytest.raises(ConfigError, match="contentless_channels"):
        load_config(TrainingConfig, "training", overrides={"contentless_channels": ["fax"]})


def test_training_decides_from_the_logged_labels() -> None:
    """``auto`` on encoded training data: calls with content stay content channels; blank them and they turn contentless."""
    from training.dataset import ContentVocab, StaticScaler, encode_frame, static_feature_columns
    from training.synthetic import synthetic_training_frame

    frame = synthetic_training_frame(n_hcps=24, n_weeks=6, n_content=5, max_hist=6, seed=1)
    assert (frame["label_channel"] == PHONE).sum() > 0

    def resolved(f) -> np.ndarray:
        vocab = ContentVocab.from_ids(f["label_content_id"].dropna().astype(str).tolist())
        data = encode_frame(f, vocab, StaticScaler.fit(f, static_feature_columns(f)), 6)
        return resolve_contentless("auto", data.arrays["label_channel"], data.arrays["label_content"])

    assert contentless_names(resolved(frame)) == []  # every synthetic touch names an item
    silent_calls = frame.copy()
    silent_calls.loc[silent_calls["label_channel"] == PHONE, "label_content_id"] = None
    assert contentless_names(resolved(silent_calls)) == ["phone"]
    assert contentless_names(resolve_contentless(["visit"], np.array([PHONE]), np.array([2]))) == ["visit"]  # the config overrides the data


def _bundle(contentless: np.ndarray | None = None):
    from training.artifacts import ModelBundle
    from training.dataset import ContentVocab, StaticScaler
    from training.model import ModelConfig, NextBestActionModel

    torch.manual_seed(0)
    model = NextBestActionModel(ModelConfig(n_channels=len(CHANNELS), n_content=6, n_static=2, encoder="gru", d_model=8, n_layers=1, n_heads=1))
    scaler = StaticScaler(("a", "b"), np.zeros(2), np.ones(2))
    extra = {} if contentless is None else {"contentless": contentless}
    return ModelBundle(model, ContentVocab(("c1", "c2", "c3", "c4")), scaler, {}, **extra)


def test_bundle_stores_the_mask_and_old_bundles_default_with_a_warning(tmp_path, caplog) -> None:
    from training.artifacts import META_FILE, load_bundle, save_bundle

    assert contentless_names(_bundle().contentless) == ["phone"]
    mask = contentless_mask(["visit"])
    save_bundle(_bundle(mask), tmp_path / "b")
    meta = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert meta["contentless_channels"] == {c: c == "visit" for c in CHANNELS}
    np.testing.assert_array_equal(load_bundle(tmp_path / "b").contentless, mask)

    del meta["contentless_channels"]
    (tmp_path / "b" / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="training.contentless"):
        old = load_bundle(tmp_path / "b")
    assert contentless_names(old.contentless) == ["phone"] and "no contentless_channels stored" in caplog.text
    with pytest.raises(ValueError, match="contentless_channels must map every channel"):
        bundle_contentless({"contentless_channels": {"phone": True}})


def test_the_pyfunc_follows_the_bundle() -> None:
    """Only calls allowed: a bundle that says calls carry content suggests an item on them, the default bundle none."""
    from training.pyfunc import recommend_frame
    from training.synthetic import synthetic_training_frame

    frame = synthetic_training_frame(n_hcps=6, n_weeks=1, n_content=4, max_hist=4, seed=2)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("label_")])
    frame[["a", "b"]] = 0.0
    for c in CHANNELS:
        frame[f"consent_{c}"] = c == "phone"
    silent = recommend_frame(_bundle(contentless_mask(["phone"])), frame)
    talking = recommend_frame(_bundle(contentless_mask([])), frame)
    assert (silent["channel"] == "phone").all() and (talking["channel"] == "phone").all()
    assert silent["content_id"].isna().all()
    assert talking["content_id"].isin(["c1", "c2", "c3", "c4"]).all()

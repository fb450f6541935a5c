"""Artifacts: config JSON + state dict round trip; pickled code is refused."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from training.artifacts import WEIGHTS_FILE, ModelBundle, load_bundle, save_bundle
from training.dataset import ContentVocab, StaticScaler
from training.model import ModelConfig, NextBestActionModel


def _bundle() -> ModelBundle:
    torch.manual_seed(0)
    model = NextBestActionModel(ModelConfig(n_channels=8, n_content=6, n_static=2, encoder="gru", d_model=8, n_layers=1, n_heads=1))
    scaler = StaticScaler(("a", "b"), torch.zeros(2).numpy(), torch.ones(2).numpy())
    return ModelBundle(model, ContentVocab(("c1", "c2", "c3", "c4")), scaler, {"features": ["a", "b"]})


def test_round_trip_restores_weights_and_metadata(tmp_path) -> None:
    bundle = _bundle()
    save_bundle(bundle, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    assert loaded.model.config == bundle.model.config
    assert loaded.vocab == bundle.vocab and loaded.scaler.columns == ("a", "b")
    assert loaded.meta == {"features": ["a", "b"]}
    for key, value in bundle.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_tampered_pickle_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = save_bundle(_bundle(), tmp_path / "m")
    state = torch.load(path / WEIGHTS_FILE, weights_only=True)
    state["evil"] = _Exploit()
    with open(path / WEIGHTS_FILE, "wb") as f:
        torch.save(state, f, pickle_module=pickle)
    with pytest.raises(ValueError, match="refused to load"):
        load_bundle(path)
    assert not (tmp_path / "pwned_marker").exists()


def test_mismatched_weights_and_missing_files_are_named(tmp_path) -> None:
    path = save_bundle(_bundle(), tmp_path / "m")
    torch.save({"just": torch.zeros(1)}, path / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="do not match"):
        load_bundle(path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_bundle(path)


def test_content_tags_travel_in_the_state_dict(tmp_path) -> None:
    torch.manual_seed(0)
    model = NextBestActionModel(ModelConfig(n_channels=8, n_content=6, n_static=2, encoder="gru", d_model=8, n_layers=1, n_heads=1, content_attributes=(6, 5)))
    model.set_content_attributes(torch.tensor([[0, 0], [0, 0], [1, 5], [6, 1], [2, 2], [0, 3]]))
    scaler = StaticScaler(("a", "b"), torch.zeros(2).numpy(), torch.ones(2).numpy())
    save_bundle(ModelBundle(model, ContentVocab(("c1", "c2", "c3", "c4")), scaler, {}), tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    assert loaded.model.config.content_attributes == (6, 5)
    torch.testing.assert_close(loaded.model.content_attr, model.content_attr)
    torch.testing.assert_close(loaded.model.content_table(), model.content_table())

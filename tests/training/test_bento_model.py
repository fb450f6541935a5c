"""`nba promote` copies the champion's bundle into the BentoML model store; `bentoml build` packs it into a Bento offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training import tracking as trk
from training.promotion import bento_home, copy_to_bento_store
from training.synthetic import synthetic_training_frame

ROOT = Path(__file__).resolve().parents[2]
NAME = "nba-next-best-action"


def _store():
    from bentoml._internal.models import ModelStore

    return ModelStore(bento_home() / "models")


def test_copy_into_the_store_is_tagged_with_the_registry_version(tmp_path) -> None:
    import bentoml

    bundle = tmp_path / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "config.json").write_text('{"a": 1}')
    (bundle / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    tag = copy_to_bento_store(NAME, "3", bundle, {"run_id": "r3", "data_fingerprint": "fp", "unrelated": "x"})
    assert tag == f"{NAME}:3"
    model = bentoml.models.get(tag, _model_store=_store())
    assert model.info.labels == {"registry_version": "3", "promoted_as": "champion"}
    assert model.info.metadata["run_id"] == "r3" and "unrelated" not in model.info.metadata
    assert (Path(model.path) / "sub" / "weights.bin").read_bytes() == b"\x00\x01"
    assert Path(model.path).is_relative_to(bento_home())

    # A later champion becomes `latest`; promoting version 3 again (a rollback) makes it `latest` again, replaced in place.
    copy_to_bento_store(NAME, "4", bundle, {"run_id": "r4"})
    assert str(bentoml.models.get(f"{NAME}:latest", _model_store=_store()).tag) == f"{NAME}:4"
    (bundle / "config.json").write_text('{"a": 2}')
    copy_to_bento_store(NAME, "3", bundle, {"run_id": "r3"})
    latest = bentoml.models.get(f"{NAME}:latest", _model_store=_store())
    assert str(latest.tag) == f"{NAME}:3" and (Path(latest.path) / "config.json").read_text() == '{"a": 2}'
    assert sorted(str(m.tag) for m in bentoml.models.list(NAME, _model_store=_store())) == [f"{NAME}:3", f"{NAME}:4"]


@pytest.mark.slow
def test_promote_copies_the_champion_and_bentoml_build_packs_it(tmp_path, monkeypatch) -> None:
    import bentoml
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    synthetic_training_frame(n_hcps=32, n_weeks=8, n_content=6, max_hist=8, seed=4).to_parquet(tmp_path / "ts.parquet")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = {"tracking.uri": uri, "tracking.artifact_location": f"{tmp_path}/artifacts", "output_dir": f"{tmp_path}/models", "workers": 1}
    flags = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    trained = CliRunner().invoke(
        app, ["train", "--training-set", str(tmp_path / "ts.parquet"), "--epochs", "1", "--set", "val_weeks=2", "--set", "test_weeks=2", *flags]
    )
    assert trained.exit_code == 0, trained.output[-3000:]
    version = json.loads(trained.stdout.strip().splitlines()[-1])["model_version"]
    trk.set_evaluation_tags(MlflowClient(tracking_uri=uri), NAME, version, {trk.POLICY_VALUE_TAG: "0.3"})
    promoted = CliRunner().invoke(app, ["promote", *flags])
    assert promoted.exit_code == 0, promoted.output[-3000:]
    res = json.loads(promoted.stdout.strip().splitlines()[-1])
    assert res["promoted"] and res["bento_model"] == f"{NAME}:{version}"
    model = bentoml.models.get(res["bento_model"], _model_store=_store())
    assert model.info.metadata["run_id"] == json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]

    from training.artifacts import load_bundle

    assert load_bundle(Path(model.path)).model is not None  # the copy is a whole bundle, loadable as serving loads one

    env = {**os.environ, "BENTOML_HOME": str(bento_home()), "BENTOML_DO_NOT_TRACK": "True"}
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-f", str(ROOT / "bentofile.yaml"), str(ROOT), "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    from bentoml._internal.bento import BentoStore

    bento = bentoml.get(build.stdout.strip().splitlines()[-1].removeprefix("__tag__:"), _bento_store=BentoStore(bento_home() / "bentos"))
    assert [str(m.tag) for m in bento.info.models] == [f"{NAME}:{version}"]  # pinned: the exact promoted version
    assert (Path(bento.path) / "src" / "serving" / "service.py").exists()

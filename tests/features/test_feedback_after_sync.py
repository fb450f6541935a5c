"""After `nba import` / `nba sync`: the per-HCP index is built, and fed-back outcomes the export lacks are pushed again (tiny contract, real SQLite Feast store and audit trail)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_contract import T0, features_config, make_tables

WEDNESDAY = T0 + timedelta(days=9, hours=3)
FED = T0 + timedelta(days=11)  # after the tiny contract's last touch, so a push as of it counts every stored one


def _touch(event_id: str, hcp: str, when, suggestion_id: str | None = None) -> dict:
    return {
        "event_id": event_id,
        "hcp_id": hcp,
        "rep_id": "r1",
        "ts": when,
        "channel": "wechat_push",
        "content_id": "c1",
        "direction": "outbound",
        "delivered": True,
        "opened": True,
        "read_seconds": 30.0,
        "forwarded": False,
        "favourited": False,
        "replied": False,
        "attended": None,
        "propensity": 0.5,
        "suggestion_id": suggestion_id,
    }


def _export(path: Path, touches: list[dict]) -> Path:
    """A nightly Parquet export: every dimension table and that day's touches."""
    base = make_tables()
    path.mkdir(parents=True, exist_ok=True)
    for name in ("products", "reps", "hcps", "content"):
        base[name].to_parquet(path / f"{name}.parquet", index=False)
    (pd.DataFrame(touches) if touches else base["touchpoints"].iloc[:0]).to_parquet(path / "touchpoints.parquet", index=False)
    base["outcomes"].iloc[:0].to_parquet(path / "outcomes.parquet", index=False)
    return path


def _quiet(_text: str) -> None:
    pass


def _served(sid: str, hcp: str) -> dict:
    return {
        "suggestion_id": sid,
        "request_id": "nightly",
        "hcp_id": hcp,
        "rep_id": "r1",
        "as_of": WEDNESDAY,
        "rank": 1,
        "channel": "wechat_push",
        "content_id": "c1",
        "propensity": 0.9,
        "policy": "model",
        "degraded": False,
        "created_at": WEDNESDAY,
    }


@pytest.fixture()
def deployment(tmp_path):
    """A synced tiny dataset, its features YAML, an audit trail with two served suggestions and a serving YAML naming both."""
    from contract.importer import import_export
    from features import apply, build_sources, materialize, open_store
    from serving.audit import AuditTrail

    base = make_tables()
    first = tmp_path / "export0"
    first.mkdir()
    for name, df in base.items():
        df.to_parquet(first / f"{name}.parquet", index=False)
    import_export(first, tmp_path / "data")
    cfg = features_config(tmp_path / "data", tmp_path / "ws")
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    materialize(cfg, store=store)
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump({"audit_url": url, "features_config": str(tmp_path / "features.yaml")}))
    audit = AuditTrail(url)
    audit.record_suggestions([_served("S1", "h1"), _served("S2", "h2")])
    yield cfg, store, audit, tmp_path / "serving.yaml"
    audit.close()


def _total(cfg, hcp: str) -> int:
    from features import get_online_features

    return int(get_online_features(cfg, [hcp]).set_index("hcp_id").loc[hcp, "touches_total"])


@pytest.mark.slow
def test_a_sync_keeps_fed_back_outcomes_the_export_lacks_and_counts_them_once_when_it_has_them(deployment, tmp_path):
    from contract.by_hcp import index_path
    from contract.io import read_manifest
    from nba.sync import after_sync, run_sync
    from serving.feedback import not_yet_imported, push_feedback_many

    cfg, store, audit, serving_yaml = deployment
    base = _total(cfg, "h1")
    audit.record_feedback_many(
        [
            {"feedback_id": "fb-1", "suggestion_id": "S1", "outcome": "delivered", "ts": FED + timedelta(hours=1)},
            {"feedback_id": "fb-2", "suggestion_id": "S1", "outcome": "opened", "ts": FED + timedelta(hours=2)},
        ]
    )
    push_feedback_many(cfg, store, audit, ["h1"])
    assert _total(cfg, "h1") == base + 1  # delivered and opened on one suggestion: one touch

    written: list[str] = []
    run_sync(_export(tmp_path / "wed", [_touch("w1", "h1", WEDNESDAY)]), cfg, say=_quiet, written=written)
    assert written == ["h1"]
    assert _total(cfg, "h1") == base + 1  # the sync alone rewrote h1 from the contract: w1 in, the fed-back touch out
    assert not_yet_imported(cfg.data_dir, audit, ["h1", "h2"]) == ["h1"]
    after = after_sync(cfg, written, serving_yaml, say=_quiet)
    assert after["feedback_repush"]["hcps_repushed"] == 1 and after["feedback_repush"]["failed_count"] == 0, after
    assert _total(cfg, "h1") == base + 2  # w1 and the fed-back touch
    manifest = read_manifest(cfg.data_dir)
    assert index_path(cfg.data_dir, "touchpoints", manifest["tables"]["touchpoints"]["sha256"]).exists()

    # The next export carries the fed-back touch itself (the CRM's own event id, our suggestion id): counted once.
    written = []
    run_sync(_export(tmp_path / "thu", [_touch("crm-77", "h1", FED + timedelta(hours=1), suggestion_id="S1")]), cfg, say=_quiet, written=written)
    assert not_yet_imported(cfg.data_dir, audit, ["h1"]) == []
    after = after_sync(cfg, written, serving_yaml, say=_quiet)
    assert after["feedback_repush"]["hcps_repushed"] == 0
    assert _total(cfg, "h1") == base + 2


@pytest.mark.slow
def test_the_sync_cli_skips_the_repush_for_another_deployments_dataset(deployment, tmp_path):
    from typer.testing import CliRunner

    from nba.cli import app

    cfg, _store, _audit, _ = deployment
    other = tmp_path / "other-serving.yaml"
    other.write_text(yaml.safe_dump({"audit_url": f"sqlite:///{tmp_path / 'audit.db'}", "data_dir": str(tmp_path / "elsewhere")}))
    args = ["sync", str(_export(tmp_path / "wed", [_touch("w1", "h2", WEDNESDAY)])), "--data-dir", str(cfg.data_dir), "--workspace", str(cfg.workspace_dir)]
    res = CliRunner().invoke(app, [*args, "--serving-config", str(other)])
    assert res.exit_code == 0, res.output
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["status"] == "ok" and last["index_s"] >= 0 and "elsewhere" in last["feedback_repush"]["skipped"], last


def test_nba_import_builds_the_per_hcp_index(tmp_path):
    from typer.testing import CliRunner

    from contract.by_hcp import index_path
    from contract.io import read_manifest
    from nba.cli import app

    src = tmp_path / "export"
    src.mkdir()
    for name, df in make_tables().items():
        df.to_parquet(src / f"{name}.parquet", index=False)
    res = CliRunner().invoke(app, ["import", str(src), "--out", str(tmp_path / "data"), "--now", "2026-03-01T00:00:00+00:00", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["index_s"] >= 0
    tables = read_manifest(tmp_path / "data")["tables"]
    for name in ("hcps", "touchpoints", "outcomes"):
        assert index_path(tmp_path / "data", name, tables[name]["sha256"]).exists(), name

"""`nba sync` and materialisation any day of the week, on the tiny contract and a real SQLite Feast store."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_contract import T0, features_config, make_tables

WEDNESDAY = T0 + timedelta(days=9, hours=3)  # 2026-01-14, mid-week of the data's last week
# The as-of of a sync: 00:00 UTC after the dataset's newest touch or feedback (the tiny contract's last is on Thursday).
FRIDAY = T0 + timedelta(days=11)


def _touch(event_id: str, hcp: str, when, channel: str = "wechat_push", content: str | None = "c1", opened: bool = True) -> dict:
    return {
        "event_id": event_id,
        "hcp_id": hcp,
        "rep_id": "r1",
        "ts": when,
        "channel": channel,
        "content_id": content,
        "direction": "outbound",
        "delivered": True,
        "opened": opened,
        "read_seconds": 30.0,
        "forwarded": False,
        "favourited": False,
        "replied": False,
        "attended": None,
        "propensity": 0.5,
        "suggestion_id": None,
    }


def _export(path: Path, tables: dict[str, pd.DataFrame]) -> Path:
    """Write ``tables`` as a Parquet CRM export directory."""
    path.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(path / f"{name}.parquet", index=False)
    return path


def _day_export(tmp_path: Path, name: str, touches: list[dict], **changed: pd.DataFrame) -> Path:
    """A nightly export: every dimension table (some ``changed``), that day's touches, no outcomes."""
    base = make_tables()
    out = {n: changed.get(n, base[n]) for n in ("products", "reps", "hcps", "content")}
    out["touchpoints"] = pd.DataFrame(touches) if touches else base["touchpoints"].iloc[:0]
    out["outcomes"] = base["outcomes"].iloc[:0]
    return _export(tmp_path / name, out)


@pytest.fixture()
def synced(tmp_path):
    """A dataset imported from the tiny contract, built, applied and materialised: (cfg, store)."""
    from contract.importer import import_export
    from features import apply, build_sources, materialize, open_store

    import_export(_export(tmp_path / "export0", make_tables()), tmp_path / "data")
    cfg = features_config(tmp_path / "data", tmp_path / "ws")
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    materialize(cfg, store=store)
    return cfg, store


def _online(cfg, ids=("h1", "h2", "h3")) -> pd.DataFrame:
    from features import get_online_features

    return get_online_features(cfg, list(ids)).set_index("hcp_id")


def _quiet(_text: str) -> None:
    pass


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        for x, y in zip(a[c], b[c]):
            if isinstance(x, (list, np.ndarray)) or isinstance(y, (list, np.ndarray)):
                assert list(np.asarray(x)) == list(np.asarray(y)), c
            elif isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
                continue
            else:
                assert x == y, (c, x, y)


def test_midweek_rebuild_is_materialised_without_full(synced, tmp_path):
    """A Wednesday import + rebuild keeps the last snapshot's stamp; the default materialise still loads it."""
    from contract.importer import import_export
    from features import build_sources, materialize

    cfg, store = synced
    assert _online(cfg).loc["h3", "touches_total"] == 0
    import_export(_day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)]), cfg.data_dir)
    build_sources(cfg, progress=False)
    summary = materialize(cfg, store=store)
    assert summary["views"], summary  # was [] before: incremental started at the already loaded end
    assert "hcp_engagement_90d" in summary["reloaded_views"]
    assert _online(cfg).loc["h3", "touches_total"] == 1
    # Nothing rebuilt since: the next default materialise loads nothing again.
    assert materialize(cfg, store=store)["views"] == []


def test_sync_on_a_wednesday_reaches_the_online_store_and_a_replay_is_a_no_op(synced, tmp_path):
    from features import build_sources, materialize
    from nba.sync import run_sync

    cfg, store = synced
    before = _online(cfg)
    export = _day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY), _touch("w2", "h3", WEDNESDAY + timedelta(hours=2), "email", "c2", False)])
    first = run_sync(export, cfg, say=_quiet)
    assert first["status"] == "ok"
    assert first["rows_inserted"] == 2 and first["hcps_affected"] == 1 and not first["recomputed_all"]
    assert first["as_of"] == FRIDAY.isoformat()  # the end of the newest day, not the coming Monday
    after = _online(cfg)
    assert after.loc["h3", "touches_total"] == 2 and after.loc["h3", "seq_len"] == 2
    assert after.loc["h3", "wechat_push_opened_7d"] == 1
    # Only h3 was recomputed: the others' rows are byte for byte what was materialised.
    _assert_same_rows(before.loc[["h1", "h2"]], after.loc[["h1", "h2"]])

    second = run_sync(export, cfg, say=_quiet)
    assert second["status"] == "no_change" and second["rows_written"] == 0 and second["rows_inserted"] == 0
    _assert_same_rows(after, _online(cfg))

    # The weekly path still works after a day's sync: a rebuild + materialise loads the coming
    # Monday's snapshot (a later stamp) with the same events, for every HCP.
    build_sources(cfg, progress=False)
    materialize(cfg, store=store)
    weekly = _online(cfg)
    assert weekly.loc["h3", "touches_total"] == 2 and weekly.loc["h3", "seq_len"] == 2
    _assert_same_rows(before.loc[["h1", "h2"]], weekly.loc[["h1", "h2"]])


def _differences(training: pd.Series, online: pd.Series, columns) -> list[str]:
    out = []
    for c in columns:
        a, b = training[c], online[c]
        if isinstance(a, (np.ndarray, list)):
            same = list(a) == list(b)
        elif isinstance(a, (float, np.floating)):
            same = a == pytest.approx(b, rel=1e-6, abs=1e-6)
        else:
            same = a == b
        if not same:
            out.append(f"{c}: training {a!r} != online {b!r}")
    return out


def test_a_midweek_sync_serves_the_day_grain_training_row_of_the_next_day(synced, tmp_path):
    """After a Friday's sync, the online read of a synced HCP equals its day-grain training row at Saturday 00:00 (issue 16)."""
    import pyarrow as pa

    from contract.io import read_manifest, read_table, write_tables
    from features.catalog import MISSING_FLAG, dated_profile_view
    from features.examples import build_examples
    from nba.sync import run_sync

    cfg, _store = synced
    day = FRIDAY + timedelta(hours=3)
    end = FRIDAY + timedelta(days=1)
    touches = [_touch("f1", "h3", day), _touch("f2", "h1", day + timedelta(hours=5), "email", "c2", False)]
    out = run_sync(_day_export(tmp_path, "fri", touches), cfg, say=_quiet)
    assert out["as_of"] == end.isoformat() and out["hcps_affected"] == 2
    online = _online(cfg)

    def rows_at(when, data_dir=cfg.data_dir):
        labels = pd.DataFrame({"hcp_id": ["h1", "h3"], "event_timestamp": pd.Timestamp(when)})
        return build_examples(cfg.model_copy(update={"data_dir": data_dir}), labels, progress=False).set_index("hcp_id")

    training = rows_at(end)
    features = [c for c in training.columns if c not in ("event_timestamp", MISSING_FLAG)]
    assert "seq_channel" in features and "segment" in features and "days_since_last_email" in features
    for hcp in ("h1", "h3"):
        assert _differences(training.loc[hcp], online.loc[hcp], features) == [], hcp
    # Not vacuous: the coming Monday's state (what the sync stamped before) reads other values.
    assert _differences(rows_at(T0 + timedelta(days=14)).loc["h1"], online.loc["h1"], features)
    # A training set built later (Saturday's touches imported too) reads the same events at Saturday
    # 00:00; its profile before that export is the dated history's (none here), not the export's.
    later = {n: read_table(cfg.data_dir, n) for n in read_manifest(cfg.data_dir)["tables"]}
    extra = pa.Table.from_pylist([_touch("x1", "h3", end + timedelta(hours=9))], schema=later["touchpoints"].schema)
    later["touchpoints"] = pa.concat_tables([later["touchpoints"], extra])
    write_tables(tmp_path / "later", later, source="test")
    dated = {f.name for f in dated_profile_view().features}
    events_only = [c for c in features if c not in dated]
    assert _differences(rows_at(end, tmp_path / "later").loc["h3"], online.loc["h3"], events_only) == []


def test_sync_refreshes_consent_and_products_changes(synced, tmp_path):
    from nba.sync import run_sync

    cfg, _store = synced
    assert bool(_online(cfg).loc["h2", "consent_email"])
    hcps = make_tables()["hcps"]
    hcps.loc[hcps["hcp_id"] == "h2", "consent_email"] = False
    out = run_sync(_day_export(tmp_path, "thu", [], hcps=hcps), cfg, say=_quiet)
    assert out["status"] == "ok" and out["rows_updated"] == 1 and out["hcps_affected"] == 1
    assert not bool(_online(cfg).loc["h2", "consent_email"])
    # A product's lifecycle is every HCP's profile feature: all three are recomputed.
    products = make_tables()["products"].assign(lifecycle="maturity")
    out = run_sync(_day_export(tmp_path, "fri", [], hcps=hcps, products=products), cfg, say=_quiet)
    assert out["hcps_affected"] == 3


def test_a_sync_interrupted_before_the_online_write_is_finished_by_the_next(synced, tmp_path, monkeypatch):
    import features.repo
    from nba.sync import run_sync

    cfg, _store = synced
    export = _day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)])

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    real = features.repo.materialize_hcps
    monkeypatch.setattr(features.repo, "materialize_hcps", crash)
    with pytest.raises(RuntimeError):
        run_sync(export, cfg, say=_quiet)
    assert _online(cfg).loc["h3", "touches_total"] == 0  # imported, not yet online
    monkeypatch.setattr(features.repo, "materialize_hcps", real)
    again = run_sync(export, cfg, say=_quiet)
    assert again["status"] == "ok" and again["rows_inserted"] == 0 and again["hcps_affected"] == 1
    assert _online(cfg).loc["h3", "touches_total"] == 1


def test_a_plain_import_before_a_sync_makes_it_recompute_every_hcp(synced, tmp_path):
    from contract.importer import import_export
    from nba.sync import run_sync

    cfg, _store = synced
    import_export(_day_export(tmp_path, "tue", [_touch("t1", "h1", WEDNESDAY - timedelta(days=1))]), cfg.data_dir)
    out = run_sync(_day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)]), cfg, say=_quiet)
    assert out["recomputed_all"] and out["hcps_affected"] == 3
    online = _online(cfg)
    assert online.loc["h1", "touches_total"] == 5 + 1 and online.loc["h3", "touches_total"] == 1
    assert run_sync(_day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)]), cfg, say=_quiet)["status"] == "no_change"


def test_sync_cli_prints_progress_on_stderr_and_one_json_line(synced, tmp_path):
    from typer.testing import CliRunner

    from nba.cli import app

    cfg, _store = synced
    export = _day_export(tmp_path, "wed", [_touch("w1", "h2", WEDNESDAY)])
    args = ["sync", str(export), "--data-dir", str(cfg.data_dir), "--workspace", str(cfg.workspace_dir)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "sync: import" in res.stderr and "sync: done" in res.stderr
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["status"] == "ok" and last["hcps_affected"] == 1 and last["total_s"] >= last["import_s"]
    res = CliRunner().invoke(app, args)
    assert json.loads(res.stdout.strip().splitlines()[-1])["status"] == "no_change"


def test_sync_refuses_an_export_that_breaks_the_contract(synced, tmp_path):
    from typer.testing import CliRunner

    from nba.cli import app

    cfg, _store = synced
    bad = _touch("w1", "h-unknown", WEDNESDAY)
    export = _day_export(tmp_path, "bad", [bad])
    res = CliRunner().invoke(app, ["sync", str(export), "--data-dir", str(cfg.data_dir), "--workspace", str(cfg.workspace_dir)])
    assert res.exit_code == 2
    assert json.loads(res.stdout.strip().splitlines()[-1])["status"] == "rejected"
    assert "h-unknown" in res.stdout


@pytest.mark.redis
def test_on_redis_a_rebuilt_snapshot_and_a_sync_replace_rows_with_the_same_stamp(tmp_path, redis_url):
    """Feast's Redis writer drops a row not newer than the stored one; rebuilt rows keep their stamp."""
    from contract.importer import import_export
    from features import apply, build_sources, materialize
    from nba.sync import run_sync

    import_export(_export(tmp_path / "export0", make_tables()), tmp_path / "data")
    cfg = features_config(tmp_path / "data", tmp_path / "ws", online_store={"type": "redis", "url": redis_url})
    build_sources(cfg, progress=False)
    apply(cfg)
    materialize(cfg)
    import_export(_day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)]), cfg.data_dir)
    build_sources(cfg, progress=False)
    materialize(cfg)
    assert _online(cfg).loc["h3", "touches_total"] == 1
    out = run_sync(_day_export(tmp_path, "thu", [_touch("w2", "h3", WEDNESDAY + timedelta(days=1))]), cfg, say=_quiet)
    assert out["hcps_affected"] == 1
    assert _online(cfg).loc["h3", "touches_total"] == 2


def test_a_day_import_links_unchanged_tables_and_still_checks_known_events(tmp_path):
    """Stored events are matched by key without re-reading them into pandas; unchanged tables are not rewritten."""
    from contract.importer import ImportRejected, import_export

    data = tmp_path / "data"
    import_export(_export(tmp_path / "export0", make_tables()), data)
    before = {n: (data / f"{n}.parquet").stat().st_ino for n in ("outcomes", "feedback", "hcps", "touchpoints")}
    res = import_export(_day_export(tmp_path, "wed", [_touch("w1", "h3", WEDNESDAY)]), data)
    assert res.stats["touchpoints"].inserted == 1 and res.stats["touchpoints"].rows_total == 8
    assert res.stats["outcomes"].rows_total == 3 and res.stats["hcps"].unchanged == 3
    after = {n: (data / f"{n}.parquet").stat().st_ino for n in before}
    assert after["outcomes"] == before["outcomes"] and after["feedback"] == before["feedback"] and after["hcps"] == before["hcps"]
    assert after["touchpoints"] != before["touchpoints"]
    # A known outcome (three-column key) with another value is refused, naming the key.
    tables = make_tables()
    changed = tables["outcomes"].iloc[:1].assign(prescriptions=99)
    export = _export(
        tmp_path / "bad",
        {**{n: tables[n] for n in ("products", "reps", "hcps", "content")}, "touchpoints": tables["touchpoints"].iloc[:0], "outcomes": changed},
    )
    with pytest.raises(ImportRejected, match="prescriptions"):
        import_export(export, data)

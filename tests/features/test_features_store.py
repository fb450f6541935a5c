"""The real Feast store on the embedded backends: DuckDB offline, SQLite online, file registry."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from tiny_contract import T0, features_config, make_tables

from features import build_training_set, compute_features_asof, get_online_features, push_events
from features.build import read_build_manifest, snapshot_times

pytestmark = pytest.mark.slow


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame, cols) -> None:
    for c in cols:
        x, y = a[c].tolist(), b[c].tolist()
        if x and isinstance(x[0], (np.ndarray, list)):
            assert [list(v) for v in x] == [list(v) for v in y], c
        else:
            assert x == pytest.approx(y) if isinstance(x[0], float) else x == y, c


def test_builder_returns_every_entity_row_in_order(built_store):
    cfg, store, _ = built_store
    entity = pd.DataFrame(
        {
            "hcp_id": ["ghost", "h1", "h3", "h1"],
            "event_timestamp": pd.to_datetime([T0 + timedelta(days=7), T0 + timedelta(days=14), T0 + timedelta(days=7), T0 - timedelta(days=30)], utc=True),
            "label_response": [0, 1, 0, 1],
        }
    )
    out = build_training_set(cfg, entity, store=store, progress=False)
    assert len(out) == 4
    assert out["hcp_id"].tolist() == ["ghost", "h1", "h3", "h1"]
    assert out["label_response"].tolist() == [0, 1, 0, 1]
    assert out["is_missing"].tolist() == [True, False, False, False]
    ghost = out.iloc[0]
    assert ghost["segment"] == -1 and ghost["days_since_last_touch"] == cfg.days_since_cap
    assert ghost["seq_len"] == 0 and len(ghost["seq_channel"]) == 0
    assert out.iloc[1]["touches_total"] == 5
    # Before the first engagement snapshot: the fixed profile known, engagement defaulted (the
    # `file` offline store would have dropped this row).
    early = out.iloc[3]
    assert early["hospital_tier"] == 0 and early["title"] == 0 and early["touches_total"] == 0
    # The export's segment/consent are not known before the export: defaults, flagged.
    assert early["segment"] == -1 and not early["profile_known"] and not early["consent_email"]
    assert out["touches_total"].dtype == np.int32 and out["is_kol"].dtype == bool


def test_offline_features_equal_pure_asof_at_every_snapshot(built_store):
    cfg, store, tables = built_store
    times = snapshot_times(read_build_manifest(cfg))
    export = pd.Timestamp(times[-1], unit="s", tz="UTC")  # where the build stamps the hcps table
    for t in times:
        when = pd.Timestamp(t, unit="s", tz="UTC")
        pure = compute_features_asof(tables, when, cfg, profile_as_of=export)
        assert pure["profile_known"].all() == (t >= times[-1])
        offline = build_training_set(cfg, pure[["hcp_id", "event_timestamp"]], store=store, progress=False)
        _assert_frames_equal(pure, offline, [c for c in pure.columns if c != "event_timestamp"])


def test_training_set_never_reads_rows_stamped_after_entity_time(built_store):
    cfg, store, tables = built_store
    times = snapshot_times(read_build_manifest(cfg))
    changed = 0
    for prev, t in zip(times[:-1], times[1:]):
        just_before = pd.Timestamp(t - 1, unit="s", tz="UTC")
        out = build_training_set(cfg, pd.DataFrame({"hcp_id": ["h1", "h2"], "event_timestamp": [just_before] * 2}), store=store, progress=False)
        at_prev = compute_features_asof(tables, pd.Timestamp(prev, unit="s", tz="UTC"), cfg).set_index("hcp_id").loc[["h1", "h2"]]
        at_t = compute_features_asof(tables, pd.Timestamp(t, unit="s", tz="UTC"), cfg).set_index("hcp_id").loc[["h1", "h2"]]
        assert out["touches_total"].tolist() == at_prev["touches_total"].tolist()
        assert [list(s) for s in out["seq_channel"]] == [list(s) for s in at_prev["seq_channel"]]
        changed += int(out["touches_total"].tolist() != at_t["touches_total"].tolist())
    assert changed > 0, "the data never changes between snapshots: the test would prove nothing"


def test_online_read_after_materialize(built_store):
    cfg, store, tables = built_store
    last = pd.Timestamp(read_build_manifest(cfg)["last_snapshot_s"], unit="s", tz="UTC")
    online = get_online_features(store, ["h1", "ghost"])
    assert online["hcp_id"].tolist() == ["h1", "ghost"]
    assert online["is_missing"].tolist() == [False, True]
    pure = compute_features_asof(tables, last, cfg).set_index("hcp_id").loc[["h1"]].reset_index()
    _assert_frames_equal(pure, online.iloc[[0]].reset_index(drop=True), [c for c in pure.columns if c != "event_timestamp"])
    ghost = online.iloc[1]
    assert ghost["consecutive_unopened_pushes"] == 0 and ghost["days_since_last_touch"] == cfg.days_since_cap
    assert ghost["seq_len"] == 0 and list(ghost["seq_content_id"]) == []


def test_online_read_of_nothing_is_empty(built_store):
    _, store, _ = built_store
    out = get_online_features(store, [])
    assert len(out) == 0 and "seq_channel" in out.columns and "is_missing" in out.columns


def test_push_makes_fresh_events_visible_online(built_store):
    cfg, store, tables = built_store
    before = get_online_features(store, ["h3"]).iloc[0]
    fresh = tables["touchpoints"].iloc[[0]].copy()
    fresh["event_id"], fresh["hcp_id"] = "fresh-1", "h3"
    fresh["ts"] = pd.Timestamp(T0 + timedelta(days=30, hours=3))
    fresh["opened"], fresh["read_seconds"] = False, 0.0
    summary = push_events(cfg, fresh, store=store)
    assert summary["hcps"] == 1
    after = get_online_features(store, ["h3"]).iloc[0]
    assert after["seq_len"] == before["seq_len"] + 1
    assert list(after["seq_channel"])[-1] == 2 and list(after["seq_content_id"])[-1] == "c1"
    assert after["consecutive_unopened_pushes"] == before["consecutive_unopened_pushes"] + 1
    assert after["days_since_last_touch"] < 0.001
    assert after["wechat_push_sent_7d"] == 1
    # Pushing the same event again changes nothing (idempotent by event_id).
    push_events(cfg, fresh, store=store)
    again = get_online_features(store, ["h3"]).iloc[0]
    assert again["seq_len"] == after["seq_len"]
    # Rep feedback goes through the same path.
    fb = pd.DataFrame(
        {
            "feedback_id": ["f-new"],
            "suggestion_id": ["s9"],
            "hcp_id": ["h3"],
            "rep_id": ["r1"],
            "ts": [pd.Timestamp(T0 + timedelta(days=30, hours=4))],
            "decision": ["accepted"],
            "reason": [None],
        }
    )
    push_events(cfg, fb, store=store)
    assert get_online_features(store, ["h3"]).iloc[0]["suggestions_accepted_90d"] == 1


def test_push_rejects_unknown_hcp(built_store):
    cfg, store, tables = built_store
    bad = tables["touchpoints"].iloc[[0]].copy()
    bad["hcp_id"], bad["event_id"] = "ghost", "x1"
    with pytest.raises(ValueError, match="not in table 'hcps'"):
        push_events(cfg, bad, store=store)


def test_config_mismatch_is_explained_and_apply_fixes_it(tmp_path, dataset):
    from features import FeatureRepoMismatch, apply, build_sources, open_store

    cfg = features_config(dataset, tmp_path / "ws")
    build_sources(cfg, progress=False)
    apply(cfg)
    other = features_config(dataset, tmp_path / "ws", engagement_windows_days=[7, 30], visits_window_days=60)
    with pytest.raises(FeatureRepoMismatch) as err:
        open_store(other)
    msg = str(err.value)
    assert "hcp_engagement_30d" in msg and "hcp_visits_60d" in msg and "hcp_visits_90d" in msg
    assert "nba features apply" in msg
    summary = apply(other)
    assert sorted(summary["deleted_views"]) == ["hcp_engagement_90d", "hcp_visits_90d"]
    open_store(other)  # now consistent


def test_build_names_a_missing_table(tmp_path):
    from contract.io import write_tables
    from features import build_sources

    tables = make_tables()
    del tables["outcomes"]
    write_tables(tmp_path / "data", tables, source="test")
    with pytest.raises(FileNotFoundError, match="no table 'outcomes'"):
        build_sources(features_config(tmp_path / "data", tmp_path / "ws"), progress=False)


def test_cli_build_apply_materialize(tmp_path, dataset):
    from typer.testing import CliRunner

    from nba.cli import app

    runner = CliRunner()
    ws = str(tmp_path / "ws")
    res = runner.invoke(app, ["features", "build", "--data-dir", str(dataset), "--workspace", ws, "--sequence-length", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["hcps"] == 3
    res = runner.invoke(app, ["features", "materialize", "--workspace", ws, "--set", "sequence_length=3"])
    assert res.exit_code == 2 and "nba features apply" in res.output  # not applied yet
    res = runner.invoke(app, ["features", "apply", "--workspace", ws, "--set", "sequence_length=3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ws" / "feature_repo" / "feature_store.yaml").exists()
    res = runner.invoke(app, ["features", "materialize", "--workspace", ws, "--set", "sequence_length=3"])
    assert res.exit_code == 0, res.output
    cfg = features_config(dataset, tmp_path / "ws", sequence_length=3)
    online = get_online_features(cfg, ["h1"])
    assert online.iloc[0]["seq_len"] == 3


def test_entity_times_past_the_built_snapshots_are_refused(built_store):
    cfg, store, _ = built_store
    late = pd.DataFrame({"hcp_id": ["h1", "h1"], "event_timestamp": pd.to_datetime([T0, T0 + timedelta(days=400)], utc=True)})
    with pytest.raises(ValueError, match=r"1 row\(s\) have event_timestamp after .* \(first at row 1\)"):
        build_training_set(cfg, late, store=store, progress=False)
    naive = pd.DataFrame({"hcp_id": ["h1"], "event_timestamp": [pd.Timestamp("2026-01-12")]})
    with pytest.raises(ValueError, match="timezone-aware"):
        build_training_set(cfg, naive, store=store, progress=False)


def test_training_set_streams_to_parquet_in_input_order(built_store, tmp_path):
    import pyarrow.parquet as pq

    cfg, store, _ = built_store
    small = cfg.model_copy(update={"training_chunk_rows": 2})  # several chunks
    entity = pd.DataFrame(
        {
            "hcp_id": ["h2", "h1", "ghost", "h3", "h1"],
            "event_timestamp": pd.to_datetime([T0 + timedelta(days=d) for d in (14, 7, 7, 14, 14)], utc=True),
            "label_channel": [4, 2, 0, 1, 5],
        }
    )
    in_memory = build_training_set(small, entity, store=store, progress=False)
    path = tmp_path / "ts.parquet"
    assert build_training_set(small, entity, store=store, progress=False, out_path=path) == 5
    streamed = pq.read_table(path).to_pandas()
    assert streamed["hcp_id"].tolist() == ["h2", "h1", "ghost", "h3", "h1"]
    assert streamed["label_channel"].tolist() == [4, 2, 0, 1, 5]
    _assert_frames_equal(in_memory, streamed, ["touches_total", "seq_channel", "is_missing", "segment"])


def test_profile_history_reaches_the_training_set_point_in_time(tmp_path):
    from contract.io import write_tables
    from contract.schema import CHANNELS
    from features import apply, build_sources, open_store

    tables = make_tables()
    tables["hcp_profile_history"] = pd.DataFrame(
        {
            "hcp_id": ["h1", "h1", "h2"],
            "valid_from": [T0 - timedelta(days=3), T0 + timedelta(days=8), T0 + timedelta(days=1)],
            "potential_boxes_month": [100.0, 200.0, None],
            "support_share": [0.1, 0.2, None],
            "segment": ["D", "B", None],
            "profile_completeness": [0.3, 0.9, 0.5],
            **{f"consent_{c}": [True, c != "email", True] for c in CHANNELS},
        }
    )
    write_tables(tmp_path / "data", tables, source="test")
    cfg = features_config(tmp_path / "data", tmp_path / "ws")
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    times = snapshot_times(read_build_manifest(cfg))
    export = pd.Timestamp(times[-1], unit="s", tz="UTC")
    for t in times:
        pure = compute_features_asof(tables, pd.Timestamp(t, unit="s", tz="UTC"), cfg, profile_as_of=export)
        offline = build_training_set(cfg, pure[["hcp_id", "event_timestamp"]], store=store, progress=False)
        _assert_frames_equal(pure, offline, [c for c in pure.columns if c != "event_timestamp"])
    week2 = build_training_set(
        cfg,
        pd.DataFrame({"hcp_id": ["h1", "h2", "h3"], "event_timestamp": pd.to_datetime([T0 + timedelta(days=9)] * 3, utc=True)}),
        store=store,
        progress=False,
    ).set_index("hcp_id")
    assert week2.loc["h1", "segment"] == 1 and not week2.loc["h1", "consent_email"]  # the row valid from day 8
    assert week2.loc["h2", "profile_known"] and week2.loc["h2", "segment"] == -1
    assert not week2.loc["h3", "profile_known"]  # no history: export values not known yet


def test_the_push_converter_gives_feasts_rows_for_every_pushable_view(built_store):
    """``features.push.arrow_to_proto`` (times read from Arrow) equals Feast's ``_convert_arrow_to_proto`` row for row."""
    import pyarrow as pa
    from feast.utils import _convert_arrow_to_proto

    from features.events import prepare
    from features.push import _push_targets, arrow_to_proto, pushable_views
    from features.snapshots import to_epoch_seconds, view_table

    cfg, store, tables = built_store
    prep = prepare({n: t for n, t in tables.items()}, cfg.days_since_cap)
    targets = _push_targets(store)
    views = pushable_views(cfg)
    assert pushable_views(cfg) is views and len(views) >= 5
    t = np.array([to_epoch_seconds(T0 + timedelta(days=12, hours=5))])
    for v in views:
        table = view_table(prep, cfg, v, t, as_source=False)
        # Stamps in nanoseconds too, as the Redis path sets them (one microsecond apart per HCP).
        ns = pa.array(pd.to_datetime(t[0] * 10**9 + np.arange(table.num_rows) * 1000, utc=True)).cast(pa.timestamp("ns", tz="UTC"))
        for tbl in (table, table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp", ns)):
            for fv in targets[v.push_name]:
                keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
                ours, feasts = arrow_to_proto(tbl, fv, keys), _convert_arrow_to_proto(tbl, fv, keys)
                assert len(ours) == len(feasts) == 3
                for a, b in zip(ours, feasts):
                    assert a[0] == b[0] and a[1] == b[1] and a[3] == b[3]
                    assert a[2] == b[2] and a[2].tzinfo is None and type(a[2]) is type(b[2]), (a[2], b[2])

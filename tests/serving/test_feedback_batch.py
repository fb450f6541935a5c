"""Event-sourced /feedback: batches stored all or nothing, negative outcomes counted, no double counting, serving's data, one writer per HCP."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _rows(outcomes: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Audit-like feedback rows: (feedback_id, suggestion_id, outcome), one HCP, a push channel."""
    t0 = pd.Timestamp("2026-05-01T08:00:00Z")
    return pd.DataFrame(
        {
            "feedback_id": [f for f, _, _ in outcomes],
            "suggestion_id": [s for _, s, _ in outcomes],
            "hcp_id": "H1",
            "rep_id": "R1",
            "ts": [t0 + pd.Timedelta(minutes=i) for i in range(len(outcomes))],
            "received_at": t0,
            "outcome": [o for _, _, o in outcomes],
            "reason": None,
            "channel": "wechat_push",
            "content_id": "C1",
            "propensity": 0.5,
        }
    )


def test_channel_outcomes_of_one_suggestion_are_one_touch():
    from serving.feedback import outcome_events

    decisions, touches = outcome_events(_rows([("f1", "S1", "delivered"), ("f2", "S1", "opened"), ("f3", "S2", "delivered"), ("f4", "S3", "dismissed")]))
    assert list(decisions["feedback_id"]) == ["f4"]
    t = touches.set_index("suggestion_id")
    assert sorted(t.index) == ["S1", "S2"]
    assert t.loc["S1", "event_id"] == "f1" and bool(t.loc["S1", "opened"]) and bool(t.loc["S1", "delivered"])
    assert t.loc["S2", "event_id"] == "f3" and not bool(t.loc["S2", "opened"]) and bool(t.loc["S2", "delivered"])


def test_a_meeting_touch_is_attended_and_takes_its_earliest_outcomes_id():
    from serving.feedback import outcome_events

    rows = _rows([("m2", "S9", "attended"), ("m1", "S9", "delivered"), ("w1", "S8", "delivered")])
    rows["channel"] = ["webinar", "webinar", "wechat_push"]
    rows["ts"] = rows["ts"].iloc[::-1].to_numpy()  # m1 (delivered) is the earliest of S9's outcomes
    _, touches = outcome_events(rows)
    t = touches.set_index("suggestion_id")
    assert t.loc["S9", "event_id"] == "m1" and bool(t.loc["S9", "attended"]) and bool(t.loc["S9", "opened"])
    assert pd.isna(t.loc["S8", "attended"]) and not bool(t.loc["S8", "opened"])  # not a meeting: attended unknown


def test_the_push_path_builds_the_same_contract_rows_without_pandas():
    """``outcome_tables`` (the push's Arrow path over raw trail rows) equals ``outcome_events`` cast to the contract, on seeded mixes."""
    import numpy as np

    from contract.io import to_arrow
    from contract.schema import TABLES
    from serving.feedback import CHANNEL_OUTCOMES, DECISIONS, OUTCOME_COLUMNS, outcome_events, outcome_tables

    rng = np.random.default_rng(16)
    for _ in range(20):
        n = int(rng.integers(0, 12))
        rows = _rows([(f"f{rng.integers(100):02d}{i}", f"S{rng.integers(4)}", str(rng.choice([*DECISIONS, *CHANNEL_OUTCOMES]))) for i in range(n)])
        rows["ts"] = [pd.Timestamp("2026-05-01T08:00:00Z") + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 5, n)]  # ties: ordered by id
        rows["channel"] = rng.choice(["webinar", "wechat_push", "visit"], n)
        rows["reason"] = [None if rng.random() < 0.5 else "wrong_time" for _ in range(n)]
        # The trail hands back naive UTC times on SQLite.
        records = [tuple(r[c].tz_convert(None).to_pydatetime() if c in ("ts", "received_at") else r[c] for c in OUTCOME_COLUMNS) for _, r in rows.iterrows()]
        got = outcome_tables(records)
        want = outcome_events(rows)
        for kind, g, w in zip(("feedback", "touchpoints"), got, want):
            w = to_arrow(TABLES[kind], w)
            key = "feedback_id" if kind == "feedback" else "event_id"
            assert g.sort_by(key).equals(w.sort_by(key)), (kind, g.to_pylist(), w.to_pylist())


def _engine(world, tmp_path, **overrides):
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender

    cfg = load_config(ServingConfig, "serving", world.serving_yaml, {"audit_url": f"sqlite:///{tmp_path / 'audit.db'}", **overrides})
    return Recommender.from_config(cfg)


def _served(eng, hcp: str) -> tuple[str, str]:
    from serving.sandbox import AS_OF

    res = eng.recommend([hcp], as_of=AS_OF)
    return str(res.columns["suggestion_id"][0]), str(res.columns["channel"][0])


def _online(eng, hcp: str, name: str) -> int:
    from features import get_online_features

    return int(get_online_features(eng.store, [hcp])[name].iloc[0])


@pytest.mark.slow
def test_batch_counts_negative_outcomes_once_and_is_all_or_nothing(world, tmp_path):
    from serving.audit import FeedbackConflict, UnknownSuggestion
    from serving.sandbox import AS_OF

    eng = _engine(world, tmp_path)
    h1, h2, h3 = world.hcp_ids[5:8]
    (s1, ch1), (s2, _), (s3, _) = _served(eng, h1), _served(eng, h2), _served(eng, h3)
    w = max(eng.features_cfg.engagement_windows_days)
    sent, opened = f"{ch1}_sent_{w}d", f"{ch1}_opened_{w}d"
    before = {"sent": _online(eng, h1, sent), "opened": _online(eng, h1, opened)}
    vw = eng.features_cfg.visits_window_days
    dismissed0, snoozed0 = _online(eng, h2, f"suggestions_dismissed_{vw}d"), _online(eng, h3, f"suggestions_snoozed_{vw}d")
    t = AS_OF - timedelta(hours=3)
    items = [
        {"feedback_id": "b-1", "suggestion_id": s1, "outcome": "delivered", "reason": None, "ts": t},
        {"feedback_id": "b-2", "suggestion_id": s1, "outcome": "opened", "reason": None, "ts": t + timedelta(minutes=5)},
        {"feedback_id": "b-3", "suggestion_id": s2, "outcome": "dismissed", "reason": "wrong_time", "ts": t},
        {"feedback_id": "b-4", "suggestion_id": s3, "outcome": "snoozed", "reason": None, "ts": t},
    ]
    out = eng.feedback_batch(items)
    assert [r["created"] for r in out["results"]] == [True] * 4
    assert all(r["pushed_online"] and r["push_error"] is None for r in out["results"]), out
    assert out["pushed_hcps"] == 3
    # delivered then opened on one suggestion: one touch, sent once and opened once.
    assert _online(eng, h1, sent) == before["sent"] + 1 and _online(eng, h1, opened) == before["opened"] + 1
    assert _online(eng, h2, f"suggestions_dismissed_{vw}d") == dismissed0 + 1
    assert _online(eng, h3, f"suggestions_snoozed_{vw}d") == snoozed0 + 1

    again = eng.feedback_batch(items)  # a replay stores nothing and counts nothing twice
    assert [r["created"] for r in again["results"]] == [False] * 4 and all(r["pushed_online"] for r in again["results"])
    assert _online(eng, h1, sent) == before["sent"] + 1

    stored = len(eng.audit.read("feedback"))
    with pytest.raises(FeedbackConflict) as conflict:
        eng.feedback_batch([{**items[0], "feedback_id": "b-5"}, {**items[2], "outcome": "accepted"}])
    assert conflict.value.index == 1
    with pytest.raises(UnknownSuggestion) as unknown:
        eng.feedback_batch([{**items[0], "feedback_id": "b-6"}, {**items[0], "feedback_id": "b-7", "suggestion_id": "never-served"}])
    assert unknown.value.index == 1
    assert len(eng.audit.read("feedback")) == stored  # all or nothing: b-5 and b-6 were not stored


@pytest.mark.slow
def test_a_crm_touch_with_the_suggestion_id_replaces_the_fed_back_one(world):
    """The CRM export's touch (own event id, same suggestion_id) and the fed-back outcome are one touch."""
    import pyarrow as pa

    from contract.io import to_arrow
    from contract.schema import TABLES
    from features import load_features_config, push_events
    from features.push import history_for

    cfg = load_features_config(world.features_yaml)
    hcp = world.hcp_ids[2]
    hist = history_for(cfg, [hcp])
    base = hist["touchpoints"].to_pandas().iloc[[-1]].copy()
    # The index keeps only the columns features read: the contract's other touch columns are filled in.
    crm = base.assign(event_id="crm-1", suggestion_id="S-x", ts=base["ts"] + pd.Timedelta(hours=1), delivered=True, opened=True, rep_id="R-x", propensity=0.5)
    fed = crm.assign(event_id="fb-1")
    as_of = crm["ts"].iloc[0] + pd.Timedelta(days=1)
    with_crm = {**hist, "touchpoints": pa.concat_tables([hist["touchpoints"], to_arrow(TABLES["touchpoints"], crm).select(hist["touchpoints"].column_names)])}
    twice = push_events(cfg, fed, history=with_crm, as_of=as_of, dry_run=True)["rows"]
    once = push_events(cfg, crm, history=hist, as_of=as_of, dry_run=True)["rows"]
    for view, df in once.items():
        cols = [c for c in df.columns if c != "event_timestamp"]
        pd.testing.assert_frame_equal(twice[view][cols].reset_index(drop=True), df[cols].reset_index(drop=True), check_exact=False)


@pytest.mark.slow
def test_the_push_reads_servings_data_dir(world, tmp_path):
    """The features YAML names a dataset that is not there; serving's data_dir is the one the push must read."""
    import yaml

    from serving.sandbox import AS_OF

    fyaml = yaml.safe_load(Path(world.features_yaml).read_text())
    fyaml["data_dir"] = str(tmp_path / "elsewhere")
    (tmp_path / "features.yaml").write_text(yaml.safe_dump(fyaml))
    eng = _engine(world, tmp_path, features_config=str(tmp_path / "features.yaml"), data_dir=str(world.data_dir))
    assert Path(eng.features_cfg.data_dir) == Path(world.data_dir).resolve()
    sid, _ = _served(eng, world.hcp_ids[9])
    out = eng.feedback({"feedback_id": "dd-1", "suggestion_id": sid, "outcome": "delivered", "reason": None, "ts": AS_OF - timedelta(hours=1)})
    assert out["pushed_online"] and out["push_error"] is None, out


_HOLDER = """
import sys, time, sqlalchemy as sa
sys.path.insert(0, {root!r})
from serving.hcp_locks import hcp_locks
engine = sa.create_engine({url!r})
with hcp_locks(engine, [{hcp!r}]):
    print("held", flush=True)
    time.sleep({hold})
"""


def _waits(url: str, held: str, wanted: str, hold: float = 1.5) -> float:
    """Seconds another process waited for ``wanted``'s lock while this one's child held ``held``'s."""
    import sqlalchemy as sa

    from serving.hcp_locks import hcp_locks

    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER.format(root=str(ROOT), url=url, hcp=held, hold=hold))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "held"
        engine = sa.create_engine(url)
        t0 = time.perf_counter()
        with hcp_locks(engine, [wanted, "H-other"]):
            waited = time.perf_counter() - t0
        engine.dispose()
    finally:
        child.wait(timeout=30)
    return waited


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_pushing_one_hcp_serialise_on_postgres(postgres_db):
    assert _waits(postgres_db, "H1", "H1") >= 1.0
    assert _waits(postgres_db, "H1", "H2") < 1.0


@pytest.mark.slow
def test_two_processes_pushing_one_hcp_serialise_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    assert _waits(url, "H1", "H1") >= 1.0
    assert _waits(url, "H1", "H2") < 1.0


@pytest.mark.slow
def test_the_hcp_index_reads_one_hcps_rows_and_follows_the_dataset(world, tmp_path):
    """Rows through the index equal a filtered full read; a rewritten table gets a new index, never a stale one."""
    import pyarrow.compute as pc

    from contract.by_hcp import rows_of
    from contract.io import read_manifest, read_table, write_tables

    data = tmp_path / "data"
    names = list(read_manifest(world.data_dir)["tables"])
    tables = {n: read_table(world.data_dir, n) for n in names}
    write_tables(data, tables, source="test")
    hcps = world.hcp_ids[:3]
    got = rows_of(data, hcps)
    for name in ("touchpoints", "outcomes", "hcps"):
        full = tables[name].filter(pc.is_in(tables[name].column("hcp_id"), value_set=__import__("pyarrow").array(hcps)))
        assert got[name].num_rows == full.num_rows > 0
        key = "event_id" if name == "touchpoints" else None
        if key:
            assert sorted(got[name].column(key).to_pylist()) == sorted(full.column(key).to_pylist())
    tp = tables["touchpoints"]
    fewer = tp.filter(pc.not_equal(tp.column("hcp_id"), hcps[0]))
    write_tables(data, {**tables, "touchpoints": fewer}, source="test")  # an import rewrote the table
    assert rows_of(data, hcps[:1])["touchpoints"].num_rows == 0

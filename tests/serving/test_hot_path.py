"""The single-HCP hot path's numpy/dict versions give what the pandas versions gave: window rules against a brute-force oracle, column reads against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from features.contact_history import RecentContacts
from features.retrieval import frame_from_columns
from serving.engine import FeatureMatrix, numeric_columns
from serving.guardrails import GuardrailPolicy, WindowRule, window_state

ITEMS = [f"C{i}" for i in range(8)]
TOPICS = {"C0": "a", "C1": "a", "C2": "b", "C3": "b", "C4": "c", "C5": None}  # C6, C7: no topic


def _contacts(seed: int, n: int = 6) -> RecentContacts:
    """Random recent touches: sequence entries (a channel) and item-history entries (channel -1), repeats and empty content included."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(0, 40))
    row = np.sort(rng.integers(0, n, m))
    channel = np.where(rng.random(m) < 0.5, rng.integers(0, len(CHANNELS), m), -1)
    content = np.asarray([("" if rng.random() < 0.15 else ITEMS[int(rng.integers(0, len(ITEMS)))]) for _ in range(m)], dtype=object)
    age = rng.uniform(0, 60, m).round(1)
    return RecentContacts(n, row.astype(np.int64), channel.astype(np.int64), content, age, rng.random(m) < 0.3)


def _oracle(rc: RecentContacts, rules: tuple[WindowRule, ...], candidates: list[str]) -> dict[tuple[int, str], tuple[int, int, float]]:
    """(row, item) -> (rule, count, youngest age) by the rule's definition, one Python loop per HCP and key (first rule in order wins)."""
    out: dict[tuple[int, str], tuple[int, int, float]] = {}
    for r, rule in enumerate(rules):
        for i in range(rc.n):
            entries = [
                (cid, age, ch >= 0)
                for row, ch, cid, age in zip(rc.row.tolist(), rc.channel.tolist(), rc.content_id.tolist(), rc.age_days.tolist())
                if row == i and cid != "" and age < rule.days
            ]
            keys: dict = {}
            for cid, age, in_seq in entries:
                key = cid if rule.scope == "item" else TOPICS.get(cid)
                if key is not None:
                    keys.setdefault(key, []).append((cid, age, in_seq))
            for key, group in keys.items():
                # The sequence counts every delivery; the item history only each item's last one (distinct items).
                count = max(sum(s for _, _, s in group), len({cid for cid, _, s in group if not s}))
                if count < rule.max:
                    continue
                youngest = min(age for _, age, _ in group)
                blocked = [key] if rule.scope == "item" else [c for c in candidates if TOPICS.get(c) == key]
                for item in blocked:
                    out.setdefault((i, item), (r, count, youngest))
    return out


@pytest.mark.parametrize("seed", range(25))
def test_item_and_topic_window_rules_match_their_definition(seed: int) -> None:
    rules = (WindowRule("topic_20d", 20, 2, "topic"), WindowRule("same_item_30d", 30, 1, "item"), WindowRule("topic_45d", 45, 1, "topic"))
    rc = _contacts(seed)
    candidates = ["C3", "C0", "C6", "C2", "C1"]
    w = window_state(rc, GuardrailPolicy(weekly_caps={}, window_rules=rules), content_topics=TOPICS, candidates=candidates)
    got = {
        (row, item): (rule, count, age)
        for row, item, rule, count, age in zip(w.item_row.tolist(), w.item_id.tolist(), w.item_rule.tolist(), w.item_count.tolist(), w.item_age.tolist())
    }
    assert len(got) == len(w.item_row)  # one entry per (row, item)
    assert got == _oracle(rc, rules, candidates)
    # Every blocked pair is found by item_lookup, and nothing else (missing ids included).
    query = np.array([[item for item in ITEMS] + [None, np.nan] for _ in range(rc.n)], dtype=object)
    found = w.item_lookup(query)
    for i in range(rc.n):
        for k, item in enumerate(query[i]):
            pos = found[i, k]
            if (i, item) in got:
                assert pos >= 0 and w.item_row[pos] == i and w.item_id[pos] == item
            else:
                assert pos == -1


def test_numeric_columns_equal_pandas_on_every_dtype() -> None:
    n = 3
    cols = {
        "hcp_id": np.array(["a", "b", "c"], dtype=object),
        "i64": np.array([1, 2, 3], dtype=np.int64),
        "i32": np.array([4, 5, 6], dtype=np.int32),
        "flag": np.array([True, False, True]),
        "f32": np.array([0.5, np.nan, 2.0], dtype=np.float32),
        "f64": np.array([np.nan, 1.25, -3.0]),
        "obj_num": np.array([1.0, None, 3], dtype=object),
    }
    names = ["f64", "flag", "i32", "obj_num", "i64", "f32"]
    for frame in (frame_from_columns(dict(cols), n), pd.DataFrame(cols)):
        frame["nullable"] = pd.array([1, None, 3], dtype="Int64")  # an extension block
        want = frame[names + ["nullable"]].to_numpy(dtype=np.float64, na_value=np.nan)
        np.testing.assert_array_equal(numeric_columns(frame, names + ["nullable"]), want)
        assert numeric_columns(frame, []).shape == (n, 0)
        with pytest.raises(KeyError, match="missing"):
            numeric_columns(frame, ["i64", "missing"])
    # Repeated column names: pandas' own path.
    dup = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], columns=["x", "x"])
    np.testing.assert_array_equal(numeric_columns(dup, ["x"]), dup[["x"]].to_numpy(dtype=np.float64))


def test_feature_matrix_reads_a_frame_built_by_the_online_path() -> None:
    frame = frame_from_columns(
        {"hcp_id": np.array(["h1", "h2"], dtype=object), "consent_visit": np.array([True, False]), "visit_sent_7d": np.array([2.0, np.nan])}, 2
    )
    m = FeatureMatrix(frame)
    np.testing.assert_array_equal(m.col("consent_visit"), [1.0, 0.0])
    np.testing.assert_array_equal(m.col("visit_sent_7d", default=-1.0), [2.0, -1.0])
    assert "email_sent_7d" not in m and (m.col("email_sent_7d", 5.0) == 5.0).all()


def test_the_served_api_routes_skip_bentomls_tracing_unless_the_operator_configures_it() -> None:
    import json

    from serving.cli import UNTRACED_ROUTES, bentoml_overrides

    plain = json.loads(bentoml_overrides({}))
    assert set(plain["tracing"]["excluded_urls"]) >= {"/recommend", "/plan", "/feedback", "/feedback/batch"}
    kept = json.loads(bentoml_overrides({"BENTOML_CONFIG_OVERRIDES": json.dumps({"api_server": {"workers": 2}})}))
    assert kept["api_server"] == {"workers": 2} and kept["tracing"]["excluded_urls"] == list(UNTRACED_ROUTES)
    own = {"tracing": {"sample_rate": 1.0, "exporter_type": "otlp"}}
    assert json.loads(bentoml_overrides({"BENTOML_CONFIG_OVERRIDES": json.dumps(own)})) == own
    # BentoML itself reads the key we set: its exclusion list disables exactly those routes.
    from opentelemetry.util.http import ExcludeList

    excluded = ExcludeList(plain["tracing"]["excluded_urls"])
    assert excluded.url_disabled("http://127.0.0.1:3000/recommend") and not excluded.url_disabled("http://127.0.0.1:3000/docs.json")

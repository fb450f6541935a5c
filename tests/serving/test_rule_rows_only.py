"""The rule policy computed only on the rows that need it gives the same answers as over every row (the old path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS, TOPICS
from features.contact_history import recent_contacts
from features.rules import RuleActions, RuleThresholds, rule_based_actions, rule_signals
from serving.sandbox import AS_OF

C = len(CHANNELS)


def _random_frame(n: int, seed: int) -> pd.DataFrame:
    """Online-feature-like rows with touch sequences, interest signals and consent, random by seed."""
    rng = np.random.default_rng(seed)
    cols: dict = {"hcp_id": [f"h{i}" for i in range(n)]}
    for ch in CHANNELS:
        for w in ("30d", "90d"):
            cols[f"{ch}_sent_{w}"] = rng.integers(0, 6, n).astype(np.int32)
            cols[f"{ch}_opened_{w}"] = rng.integers(0, 3, n).astype(np.int32)
            cols[f"{ch}_forwarded_{w}"] = (rng.random(n) < 0.04).astype(np.int32)
        cols[f"consent_{ch}"] = rng.random(n) < 0.8
    cols["favourited_30d"] = rng.integers(0, 2, n).astype(np.int32)
    cols["consecutive_unopened_pushes"] = rng.integers(0, 5, n).astype(np.int32)
    lengths = rng.integers(0, 8, n)
    cols["seq_len"] = lengths.astype(np.int64)
    cols["days_since_last_touch"] = rng.random(n) * 30
    items = np.array([f"C{i:03d}" for i in range(12)], dtype=object)
    cols["seq_content_id"] = [np.where(rng.random(k) < 0.8, items[rng.integers(0, 12, k)], "").astype(object) for k in lengths]
    for c, hi in (("seq_response", 4), ("seq_weekday", 7), ("seq_daypart", 4), ("seq_channel", C)):
        cols[c] = [rng.integers(0, hi, k).astype(np.int64) for k in lengths]
    cols["seq_gap_days"] = [rng.random(k) * 5 for k in lengths]
    return pd.DataFrame(cols)


def _take(actions: RuleActions, rows: np.ndarray) -> dict:
    f = actions.facts
    return {
        "score": actions.score[rows],
        "expected": actions.expected[rows],
        "content": actions.content[rows],
        "weekday": actions.weekday[rows],
        "daypart": actions.daypart[rows],
        "rule": actions.rule[rows],
        "topic": actions.topic[rows],
        **{k: getattr(f, k)[rows] for k in ("unopened", "forwards", "favourites", "replies", "talk_topic", "repeated", "other_topic", "topic_hits", "seq_len")},
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rules_on_a_subset_of_rows_equal_the_whole_frames_rows(seed: int) -> None:
    from features.rules import ContentItems

    frame = _random_frame(40, seed)
    topics = {f"C{i:03d}": TOPICS[i % len(TOPICS)] for i in range(12)}
    items = ContentItems.build([f"C{i:03d}" for i in range(12)], ["P1", "P2"] * 6, [topics[f"C{i:03d}"] for i in range(12)])
    products = np.asarray(["P1", "P2", ""] * 13 + ["P1"], dtype=object)
    th = RuleThresholds(3, 2)
    contacts = recent_contacts(frame)
    kw = dict(thresholds=th, items=items, no_repeat_days=30.0, sentences=False)
    whole = rule_based_actions(frame, topics, product_ids=products, contacts=contacts, **kw)
    # Signals passed in give the same answer as computed inside.
    same = rule_based_actions(frame, topics, product_ids=products, contacts=contacts, signals=rule_signals(frame, topics, th), **kw)
    rows = np.flatnonzero(np.random.default_rng(seed).random(40) < 0.3)
    sub = rule_based_actions(frame.iloc[rows].reset_index(drop=True), topics, product_ids=products[rows], contacts=contacts.take(rows), **kw)
    sig = rule_signals(frame, topics, th)
    for name, want in _take(whole, rows).items():
        np.testing.assert_array_equal(_take(sub, np.arange(len(rows)))[name], want, err_msg=name)
        np.testing.assert_array_equal(_take(same, rows)[name], want, err_msg=name)
    np.testing.assert_array_equal(sig.rule, whole.rule)
    np.testing.assert_array_equal(sig.topic, whole.topic)
    np.testing.assert_array_equal(sig.topic_hits, whole.facts.topic_hits)
    # The random world exercises every rule, topic facts and content choice.
    assert set(whole.rule) == {"unopened_pushes", "strong_interest", "preference"} and (sig.topic_hits > 0).any() and whole.facts.other_topic.any()
    # A subset's contacts equal the flat arrays of those rows, renumbered.
    taken = contacts.take(rows)
    keep = np.isin(contacts.row, rows)
    assert taken.n == len(rows) and np.array_equal(rows[taken.row], contacts.row[keep])
    assert np.array_equal(taken.age_days, contacts.age_days[keep]) and np.array_equal(taken.content_id, contacts.content_id[keep])


def _old_rule_rows(self, frame, signals, rule_rows, approved, products, contentless, contacts):
    """The previous engine path: the rule policy over every row, the rule rows' part taken from it."""
    from serving.engine import RuleView

    full = rule_based_actions(
        frame,
        self._topics,
        thresholds=self.thresholds,
        items=self.reference.content_items(approved),
        product_ids=products,
        no_repeat_days=self.cfg.rules.no_repeat_days,
        carries_content=~contentless,
        contacts=contacts,
        sentences=False,
    )
    rows = np.flatnonzero(rule_rows)
    part = RuleActions(
        ranked=full.ranked[rows],
        score=full.score[rows],
        expected=full.expected[rows],
        rule=full.rule[rows],
        reason=full.reason[rows],
        history_reason=full.history_reason[rows],
        topic=full.topic[rows],
        weekday=full.weekday[rows],
        daypart=full.daypart[rows],
        content=full.content[rows],
    )
    return RuleView(full.rule, full.topic, full.facts, part if len(rows) else None)


def _outputs(res) -> tuple[pd.DataFrame, dict]:
    names = ("unknown_hcp_ids", "degraded_hcp_ids", "no_suggestion", "feasibility", "notes", "warnings", "degraded_features", "model_version")
    extra = {k: getattr(res, k) for k in names} | {"potential": np.asarray(res.potential).tolist()}
    return res.frame.drop(columns=["suggestion_id"]).reset_index(drop=True), extra


@pytest.mark.slow
def test_engine_answers_equal_the_rules_over_every_row(serving_cfg, world, monkeypatch) -> None:
    from serving.engine import Recommender

    cfg = serving_cfg.model_copy(update={"exploration": serving_cfg.exploration.model_copy(update={"holdout_share": 0.3})})
    rec = Recommender.from_config(cfg)
    ids = list(world.hcp_ids[:40]) + ["HUNKNOWN1", "H9999999"]
    frame, _ = rec.fetch_features(ids)
    half = frame.copy()
    half.loc[::4, "is_missing"] = True  # half-loaded store: those rows degraded
    down = lambda h: (None, "ConnectionError: down")  # noqa: E731

    def boom(*a, **k):
        raise RuntimeError("boom")

    def run() -> list:
        out = [
            _outputs(rec.recommend(ids, k=3, as_of=AS_OF, record=False)),
            _outputs(rec.recommend(ids[:1], as_of=AS_OF, record=False)),
            _outputs(rec.recommend(ids, k=5, as_of=AS_OF, record=False, locale="zh-CN", window="today")),
            _outputs(rec.recommend(ids, as_of=AS_OF, record=False, features=half)),
        ]
        with monkeypatch.context() as m:
            m.setattr(rec, "fetch_features", down)
            out.append(_outputs(rec.recommend(ids, as_of=AS_OF, record=False)))
        with monkeypatch.context() as m:
            m.setattr("serving.scoring.score_channels", boom)
            out.append(_outputs(rec.recommend(ids, as_of=AS_OF, record=False)))
        return out

    new = run()
    policies = set(new[0][0]["policy"])
    assert {"model", "holdout"} <= policies, policies
    assert new[0][1]["unknown_hcp_ids"] == ["HUNKNOWN1", "H9999999"] and new[3][1]["degraded_hcp_ids"]
    # The rule view itself on a mix of rows: the rule rows' answers and every row's facts.
    from features.contact_history import recent_contacts as contacts_of
    from serving.clock import approval_basis
    from serving.scoring import contentless_channels

    approved = rec.reference.approved_content(*approval_basis(AS_OF, cfg.content_valid_days, None))
    products = np.where(pd.isna(rec.reference.lookup(ids)["main_product_id"]), "", rec.reference.lookup(ids)["main_product_id"]).astype(object)
    args = (frame, rule_signals(frame, rec._topics, rec.thresholds))
    rest = (approved, products, contentless_channels(rec.model, cfg.contentless_channels), contacts_of(frame))
    mask = np.arange(len(ids)) % 3 == 0
    a, b = rec._rule_rows(*args, mask, *rest), _old_rule_rows(rec, *args, mask, *rest)
    for name in ("score", "expected", "content", "weekday", "daypart"):
        np.testing.assert_array_equal(getattr(a.actions, name), getattr(b.actions, name), err_msg=name)
    np.testing.assert_array_equal(a.rule, b.rule)
    for name in ("unopened", "forwards", "favourites", "replies", "topic_hits", "seq_len"):
        np.testing.assert_array_equal(getattr(a.facts, name), getattr(b.facts, name), err_msg=name)
    for name in ("talk_topic", "repeated", "other_topic"):  # content facts: read on the rule rows only
        np.testing.assert_array_equal(getattr(a.facts, name)[mask], getattr(b.facts, name)[mask], err_msg=name)

    monkeypatch.setattr(Recommender, "_rule_rows", _old_rule_rows)
    old = run()
    for (fa, ea), (fb, eb) in zip(new, old):
        pd.testing.assert_frame_equal(fa, fb, check_exact=True)
        assert ea == eb
    rec.audit.close()

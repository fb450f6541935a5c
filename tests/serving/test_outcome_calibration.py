"""The outcome shift: matches means, shrinks by evidence, converges without double counting, and reads the real audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from serving.outcome_calibration import OutcomeShift, apply_shift, load_shift, matching_shift, refit, served_outcomes, store_shift

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_apply_shift_is_monotone_keeps_zero_and_zero_shift_is_identity() -> None:
    p = np.array([0.0, 0.05, 0.3, 0.7, 0.99])
    assert np.array_equal(apply_shift(p, 0.0), p)
    up, down = apply_shift(p, 0.8), apply_shift(p, -0.8)
    assert up[0] == 0.0 and down[0] == 0.0
    assert (np.diff(up) > 0).all() and (np.diff(down) > 0).all()
    assert (up[1:] > p[1:]).all() and (down[1:] < p[1:]).all()
    # Hand-computed: logit(0.3) + 0.8 -> sigmoid = 0.4882
    assert up[2] == pytest.approx(1 / (1 + np.exp(-(np.log(0.3 / 0.7) + 0.8))), abs=1e-12)


def test_matching_shift_makes_the_means_equal() -> None:
    rng = np.random.default_rng(0)
    e = rng.uniform(0.1, 0.8, 2000)
    for target in (0.2, 0.45, 0.6):
        s = matching_shift(e, np.full(10, target))
        assert apply_shift(e, s).mean() == pytest.approx(target, abs=1e-6)


def test_update_shrinks_by_evidence_and_waits_for_min_rows() -> None:
    rng = np.random.default_rng(1)
    e = rng.uniform(0.2, 0.6, 400)
    r = (rng.random(400) < apply_shift(e, -0.5)).astype(float)  # the world realises less than promised
    s0 = OutcomeShift("m/1")
    assert s0.update(e[:50], r[:50], prior_rows=200, min_rows=100, max_abs_shift=2, now=NOW) is s0
    s1 = s0.update(e, r, prior_rows=200, min_rows=100, max_abs_shift=2, now=NOW)
    full = matching_shift(e, r)
    assert s1.shift == pytest.approx(full * 400 / 600) and s1.shift < 0 and s1.rows == 400 and s1.fitted_at == NOW
    assert s0.update(e, r, prior_rows=0, min_rows=100, max_abs_shift=0.1, now=NOW).shift == pytest.approx(-0.1)


def test_repeated_refits_on_fresh_outcomes_converge_to_the_truth_without_overshooting() -> None:
    # Each round serves under the current shift and refits only on that round's outcomes.
    rng = np.random.default_rng(2)
    true_shift, s = 0.7, OutcomeShift("m/1")
    for week in range(10):
        base = rng.uniform(0.1, 0.7, 3000)
        served = s.apply(base)
        realised = (rng.random(3000) < apply_shift(base, true_shift)).astype(float)
        s = s.update(served, realised, prior_rows=200, min_rows=200, max_abs_shift=2, now=NOW + timedelta(days=7 * week))
        assert s.shift <= true_shift + 0.15
    assert s.shift == pytest.approx(true_shift, abs=0.1)


def test_json_round_trip() -> None:
    s = OutcomeShift("m/3", -0.4, 250, 0.5, 0.41, NOW)
    assert OutcomeShift.from_json(s.to_json()) == s
    assert OutcomeShift.from_json(OutcomeShift("m/3").to_json()).model_version == "m/3"


@pytest.fixture()
def trail(tmp_path):
    from serving.audit import AuditTrail

    t = AuditTrail(f"sqlite:///{tmp_path / 'audit.db'}")
    yield t
    t.engine.dispose()


def _suggestion(i: int, expected: float, created: datetime, *, version: str = "m/1", policy: str = "model") -> dict:
    return {
        "suggestion_id": f"s{i}",
        "request_id": f"r{i}",
        "hcp_id": f"h{i % 7}",
        "rep_id": "r1",
        "created_at": created,
        "as_of": created,
        "rank": 1,
        "channel": "email",
        "content_id": "C1",
        "window_start": created,
        "window_end": created,
        "expected_response": expected,
        "propensity": 1.0,
        "policy": policy,
        "model_version": version,
        "degraded": False,
        "features_json": "{}",
        "rules_json": "[]",
        "reasons_json": "[]",
    }


def _insert(trail, sugg: list[dict], fb: list[tuple[str, str]]) -> None:
    import sqlalchemy as sa

    from serving.audit import feedback, suggestions

    with trail.engine.begin() as conn:
        conn.execute(sa.insert(suggestions), sugg)
        conn.execute(
            sa.insert(feedback),
            [
                {"feedback_id": f"f{j}", "suggestion_id": sid, "hcp_id": "h0", "rep_id": "r1", "ts": NOW, "received_at": NOW, "outcome": out, "reason": None}
                for j, (sid, out) in enumerate(fb)
            ],
        )


def test_served_outcomes_reads_model_suggestions_with_a_channel_outcome(trail) -> None:
    t0 = NOW - timedelta(days=3)
    sugg = [_suggestion(i, 0.1 * (i + 1), t0 + timedelta(hours=i)) for i in range(5)]
    sugg.append(_suggestion(5, 0.9, t0, policy="holdout"))
    sugg.append(_suggestion(6, 0.9, t0, version="m/0"))
    fb = [("s0", "delivered"), ("s0", "opened"), ("s1", "delivered"), ("s2", "done"), ("s3", "attended"), ("s5", "opened"), ("s6", "opened")]
    _insert(trail, sugg, fb)
    e, r = served_outcomes(trail.engine, "m/1", None)
    got = sorted(zip(np.round(e, 3).tolist(), r.tolist()))
    # s2 only has a rep decision (no channel outcome), s4 no feedback; holdout and another version are not the champion's.
    assert got == [(0.1, 1.0), (0.2, 0.0), (0.4, 1.0)]
    e, r = served_outcomes(trail.engine, "m/1", t0 + timedelta(minutes=30))
    assert sorted(np.round(e, 3).tolist()) == [0.2, 0.4]


def test_refit_stores_append_only_and_load_reads_the_newest_of_the_version(trail) -> None:
    rng = np.random.default_rng(3)
    t0 = NOW - timedelta(days=2)
    n = 300
    e = rng.uniform(0.3, 0.7, n)
    sugg = [_suggestion(i, float(e[i]), t0) for i in range(n)]
    fb = [(f"s{i}", "opened" if rng.random() < 0.25 else "delivered") for i in range(n)]  # realised ~0.25 << promised ~0.5
    _insert(trail, sugg, fb)
    assert load_shift(trail.engine, "m/1") == OutcomeShift("m/1")
    s1 = refit(trail.engine, load_shift(trail.engine, "m/1"), prior_rows=100, min_rows=100, max_abs_shift=2, now=NOW)
    assert s1.shift < -0.5 and s1.rows == n
    assert load_shift(trail.engine, "m/1") == s1
    # Nothing new was served under s1: a second refit changes nothing and stores nothing.
    assert refit(trail.engine, s1, prior_rows=100, min_rows=100, max_abs_shift=2, now=NOW + timedelta(hours=1)) is s1
    store_shift(trail.engine, OutcomeShift("m/2", 0.3, 500, 0.4, 0.45, NOW + timedelta(hours=2)))
    assert load_shift(trail.engine, "m/1") == s1 and load_shift(trail.engine, "m/2").shift == 0.3


def test_the_engine_reports_shifted_expected_responses_and_keeps_the_ranking(serving_cfg) -> None:
    from serving.engine import Recommender

    eng = Recommender.from_config(serving_cfg)
    assert eng.model is not None
    ids = eng.reference.hcps.index[:20].astype(str).tolist()
    as_of = datetime.now(UTC)
    before = eng.recommend(ids, k=3, as_of=as_of, record=False, explore=False).frame
    eng.outcome_shift = OutcomeShift(eng.model_version, -0.6, 500, 0.5, 0.4, NOW)
    after = eng.recommend(ids, k=3, as_of=as_of, record=False, explore=False).frame
    model = (before["policy"] == "model").to_numpy()
    assert model.any()
    assert after[["hcp_id", "rank", "channel", "content_id"]].equals(before[["hcp_id", "rank", "channel", "content_id"]])
    np.testing.assert_allclose(after["expected_response"].to_numpy()[model], apply_shift(before["expected_response"].to_numpy()[model], -0.6), rtol=1e-9)
    # Another version's shift is never applied to this champion.
    eng.outcome_shift = OutcomeShift("other/9", -0.6)
    again = eng.recommend(ids, k=3, as_of=as_of, record=False, explore=False).frame
    np.testing.assert_allclose(again["expected_response"].to_numpy(), before["expected_response"].to_numpy())


def test_refresh_reads_the_stored_shift_and_refits_from_served_outcomes(serving_cfg) -> None:
    import sqlalchemy as sa

    from serving.audit import feedback, suggestions
    from serving.engine import Recommender

    eng = Recommender.from_config(serving_cfg)
    ids = eng.reference.hcps.index[:40].astype(str).tolist()
    res = eng.recommend(ids, k=3, as_of=datetime.now(UTC), record=True, explore=False)
    rows = res.frame[res.frame["policy"] == "model"]
    assert len(rows) >= 20
    # Every model suggestion was delivered and none opened: far below what was promised.
    with eng.audit.engine.begin() as conn:
        conn.execute(
            sa.insert(feedback),
            [
                {
                    "feedback_id": f"fb{i}",
                    "suggestion_id": sid,
                    "hcp_id": h,
                    "rep_id": None,
                    "ts": NOW,
                    "received_at": NOW,
                    "outcome": "delivered",
                    "reason": None,
                }
                for i, (sid, h) in enumerate(zip(rows["suggestion_id"], rows["hcp_id"]))
            ],
        )
        served = conn.execute(sa.select(sa.func.count()).select_from(suggestions)).scalar()
    assert served >= len(rows)
    eng.cfg = eng.cfg.model_copy(update={"outcome_calibration": eng.cfg.outcome_calibration.model_copy(update={"min_rows": 10, "prior_rows": 10})})
    out = eng.refresh_outcome_shift()
    assert out["rows"] == len(rows) and out["shift"] < 0 and out["mean_realised"] == 0.0
    # A second engine (another replica, a restart) reads the same shift instead of refitting.
    other = Recommender.from_config(serving_cfg)
    other.cfg = eng.cfg
    assert other.refresh_outcome_shift()["shift"] == out["shift"]
    assert other.outcome_shift == eng.outcome_shift


def test_concurrent_refits_store_one_update(serving_cfg) -> None:
    import threading

    import sqlalchemy as sa

    from serving.audit import feedback, nba_meta
    from serving.engine import Recommender
    from serving.outcome_calibration import KEY_PREFIX

    engines = [Recommender.from_config(serving_cfg) for _ in range(3)]
    first = engines[0]
    ids = first.reference.hcps.index[:40].astype(str).tolist()
    rows = first.recommend(ids, k=3, as_of=datetime.now(UTC), record=True, explore=False).frame
    rows = rows[rows["policy"] == "model"]
    with first.audit.engine.begin() as conn:
        conn.execute(
            sa.insert(feedback),
            [
                {
                    "feedback_id": f"c{i}",
                    "suggestion_id": sid,
                    "hcp_id": h,
                    "rep_id": None,
                    "ts": NOW,
                    "received_at": NOW,
                    "outcome": "delivered",
                    "reason": None,
                }
                for i, (sid, h) in enumerate(zip(rows["suggestion_id"], rows["hcp_id"]))
            ],
        )
    cfg = first.cfg.model_copy(update={"outcome_calibration": first.cfg.outcome_calibration.model_copy(update={"min_rows": 10, "prior_rows": 10})})
    barrier = threading.Barrier(len(engines))

    def go(e) -> None:
        e.cfg = cfg
        barrier.wait()
        e.refresh_outcome_shift()

    threads = [threading.Thread(target=go, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with first.audit.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(nba_meta).where(nba_meta.c.key.like(KEY_PREFIX + "%"))).scalar()
    assert stored == 1
    assert len({e.outcome_shift.shift for e in engines}) == 1 and engines[0].outcome_shift.shift < 0

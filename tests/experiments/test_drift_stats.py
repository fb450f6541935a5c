"""Drift figures on frames: mixes, distances, sequence summaries, Evidently column scores, the verdict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from experiments import drift_stats as ds
from experiments.config import Thresholds


def test_mix_distances_by_hand() -> None:
    p = ds.mix(["a", "a", "b", "c"], ["a", "b", "c", "d"])
    np.testing.assert_allclose(p, [0.5, 0.25, 0.25, 0.0])
    q = ds.mix(["d", "d"], ["a", "b", "c", "d"])
    assert ds.total_variation(p, p) == 0.0
    assert ds.total_variation(p, q) == pytest.approx(1.0)
    assert ds.total_variation(p, ds.mix(["a", "b"], ["a", "b", "c", "d"])) == pytest.approx(0.25)
    assert ds.js_distance(p, q) == pytest.approx(1.0)
    assert ds.js_distance(p, p) == pytest.approx(0.0, abs=1e-9)
    assert ds.unseen_share({"x", "y"}, ["x", "z", "z", "y"]) == 0.5
    assert np.isnan(ds.unseen_share({"x"}, []))


def test_sequence_summary_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "seq_channel": [[0, 0, 4, 2], [], None],
            "seq_response": [[3, 1, 0, 2], [], None],  # codes: engaged, delivered only, undelivered, opened
            "seq_gap_days": [[1.0, 2.0, 3.0, 6.0], [], None],
            "seq_content_id": [["C1", "", "C2", "C1"], [], None],
        }
    )
    s = ds.sequence_summary(frame)
    assert s["seq_len"].tolist() == [4.0, 0.0, 0.0]
    assert s.loc[0, f"seq_share_{CHANNELS[0]}"] == 0.5 and s.loc[0, f"seq_share_{CHANNELS[4]}"] == 0.25
    assert s.loc[0, "seq_response_rate"] == 0.5 and s.loc[0, "seq_gap_days_mean"] == 3.0
    assert np.isnan(s.loc[1, "seq_response_rate"])
    assert sorted(ds.sequence_content(frame)) == ["C1", "C1", "C2"]


def test_served_features_one_row_per_slate_and_holdout_left_out_of_predictions() -> None:
    docs = [
        json.dumps({"segment": 1, "email_open_rate_30d": 0.5, "seq_channel": [1, 2]}),
        json.dumps({"segment": 2, "email_open_rate_30d": None, "seq_channel": []}),
    ]
    sugg = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r1", "r1"],
            "hcp_id": ["H1", "H1", "H2", "H2"],
            "as_of": pd.Timestamp("2026-01-05", tz="UTC"),
            "rank": [0, 1, 0, 1],
            "channel": ["email", "visit", "visit", "phone"],
            "content_id": ["C1", None, "C2", None],
            "expected_response": [0.3, 0.2, 0.1, 0.05],
            "policy": ["model", "model", "holdout", "holdout"],
            "features_json": [docs[0], '{"same_as":"s1"}', docs[1], '{"same_as":"s3"}'],
        }
    )
    f = ds.served_features(sugg)
    assert f["hcp_id"].tolist() == ["H1", "H2"] and f["segment"].tolist() == [1, 2]
    assert list(f.loc[0, "seq_channel"]) == [1, 2] and np.isnan(f.loc[1, "email_open_rate_30d"])
    p = ds.served_predictions(sugg)
    assert p["channel"].tolist() == ["email", "visit"] and p["content_id"].tolist() == ["C1", ""]
    with pytest.raises(ValueError, match="row 1: not valid JSON"):
        ds.decode_features(['{"a": 1}', '{"a": '])


def test_column_scores_flag_the_moved_feature_only() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    ref = pd.DataFrame({"same": rng.normal(size=n), "moved": rng.normal(size=n), "segment": rng.integers(0, 4, n), "flag": rng.random(n) < 0.5})
    cur = pd.DataFrame({"same": rng.normal(size=n), "moved": rng.normal(1.0, 1.0, size=n), "segment": rng.integers(0, 4, n), "flag": rng.random(n) < 0.5})
    numeric, categorical = ds.feature_columns(ref, cur)
    assert numeric == ["same", "moved"] and categorical == ["segment", "flag"]
    scores = ds.column_scores(ref, cur, numeric, categorical, threshold=0.1)
    assert scores.iloc[0]["column"] == "moved" and scores.iloc[0]["score"] == pytest.approx(1.0, abs=0.1)
    assert scores.set_index("column")["drifted"].to_dict() == {"moved": True, "same": False, "segment": False, "flag": False}
    assert "Wasserstein" in scores.iloc[0]["method"]


def test_feature_groups() -> None:
    assert [ds.feature_group(c) for c in ("hospital_tier", "consent_email", "beds")] == ["profile"] * 3
    assert [ds.feature_group(c) for c in ("email_open_rate_30d", "visit_opened_90d", "rx_4w", "seq_response_rate", "days_since_last_open")] == ["response"] * 5
    assert [ds.feature_group(c) for c in ("visit_sent_90d", "touches_total", "days_since_last_touch", "seq_share_email", "seq_len")] == ["activity"] * 5


def test_verdict_thresholds_and_next_steps() -> None:
    t = Thresholds()
    cols = ["hospital_tier", "email_open_rate_30d", "visit_opened_90d", "visit_sent_90d", "touches_total", "email_sent_7d"]
    quiet = pd.DataFrame({"column": cols, "score": [0.0, 0.05, 0.04, 0.3, 0.02, 0.01], "drifted": [False, False, False, True, False, False]})
    seq = pd.DataFrame({"column": ["seq_len", "seq_response_rate"], "score": [0.4, 0.02], "drifted": [True, False]})
    v = ds.verdict(quiet, seq, {"channel_mix_tvd": 0.02, "content_mix_js": 0.1, "new_content_share": 0.0}, 0.01, 0.0, t)
    # One of three activity features moved 0.3, a sequence length 0.4: below activity's higher bar, so no alarm.
    assert not v["drift_detected"] and v["reasons"] == [] and v["groups"]["activity"]["max_score"] == 0.3
    assert ds.next_steps(v, quiet.head(2))[0].startswith("no action")
    response = quiet.assign(score=[0.0, 0.9, 0.04, 0.3, 0.02, 0.01], drifted=[False, True, False, True, False, False])
    v = ds.verdict(response, seq, None, None, None, t)
    assert v["data_drift"] and v["response_drift"] and not v["population_drift"] and not v["prediction_drift"]
    assert "email_open_rate_30d moved 0.90" in v["reasons"][0]
    assert "email_open_rate_30d (0.90)" in ds.next_steps(v, response.sort_values("score", ascending=False).head(1))[0]
    population = quiet.assign(score=[0.15, 0.05, 0.04, 0.3, 0.02, 0.01])
    v = ds.verdict(population, seq, None, None, None, t)
    assert v["population_drift"] and "hospital_tier" in v["reasons"][0] and any("population" in s for s in ds.next_steps(v, population.head(1)))
    activity = quiet.assign(score=[0.0, 0.05, 0.04, 0.7, 0.02, 0.01])
    assert ds.verdict(activity, seq, None, None, None, t)["activity_drift"]
    v = ds.verdict(quiet, seq, {"channel_mix_tvd": 0.4, "content_mix_js": 0.1, "new_content_share": 0.0}, 0.01, 0.0, t)
    assert v["prediction_drift"] and not v["data_drift"] and "channel mix" in v["reasons"][0]
    v = ds.verdict(quiet, seq, None, None, 0.5, t)
    assert v["sequence_drift"] and "never seen" in v["reasons"][0]


def test_categories_match_across_json_and_arrow_types() -> None:
    """An int code that JSON turned into floats (a null in the column) or a flag as 0/1 is the same category."""
    ref = pd.DataFrame({"segment": pd.Series([0, 1, 2, 3] * 50, dtype="int32"), "is_kol": [True, False] * 100})
    cur = pd.DataFrame({"segment": pd.Series([0.0, 1.0, 2.0, 3.0] * 50 + [np.nan]), "is_kol": pd.Series([1, 0] * 100 + [None], dtype=object)})
    scores = ds.column_scores(ref, cur, [], ["segment", "is_kol"])
    assert (scores["score"] < 1e-6).all() and not scores["drifted"].any()


def test_response_rates_flag_a_collapsed_channel_only() -> None:
    ref = pd.DataFrame({"channel": ["webinar"] * 400 + ["email"] * 400, "responded": [True] * 200 + [False] * 200 + [True] * 100 + [False] * 300})
    cur = pd.DataFrame({"channel": ["webinar"] * 400 + ["email"] * 400, "responded": [True] * 40 + [False] * 360 + [True] * 110 + [False] * 290})
    r = ds.response_rates(ref, cur)
    assert r["webinar"]["reference_rate"] == 0.5 and r["webinar"]["current_rate"] == 0.1 and r["webinar"]["z"] < -10
    assert abs(r["email"]["z"]) < 2 and "visit" not in r
    empty = pd.DataFrame({"column": ["email_open_rate_30d"], "score": [0.01], "drifted": [False]})
    v = ds.verdict(empty, empty.iloc[:0], None, None, None, Thresholds(), r)
    assert v["response_drift"] and len(v["reasons"]) == 1 and v["reasons"][0].startswith("webinar response rate")
    assert v["response_channels"] == ["webinar"] and any(step.startswith("webinar:") for step in ds.next_steps(v, empty))
    calm = ds.response_rates(ref, ref)
    assert not ds.verdict(empty, empty.iloc[:0], None, None, None, Thresholds(), calm)["drift_detected"]


def _catalogue() -> pd.DataFrame:
    day = lambda d: pd.Timestamp(f"2026-01-{d:02d}", tz="UTC")  # noqa: E731
    return pd.DataFrame(
        {
            "content_id": ["C1", "C2", "C3", "C4", "C5", "C6"],
            "topic": ["guideline", "guideline", "clinical_data", "case_study", "case_study", "clinical_data"],
            "approved_from": [day(1), day(1), day(1), day(20), day(20), day(1)],
            "approved_until": [day(31), day(31), day(31), day(31), day(31), day(10)],  # C6 expires before the current window
        }
    )


def test_catalogue_coverage_by_hand() -> None:
    cat = _catalogue()
    known = ["C1", "C2", "C3", "C6"]
    ref = ds.catalogue_coverage(cat, known, [pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-12", tz="UTC")])
    # Approved at a reference suggestion time: C1, C2, C3, C6 (C4/C5 not yet), all known.
    assert (ref["active_items"], ref["unknown_items"], ref["unknown_share"]) == (4, 0, 0.0)
    cur = ds.catalogue_coverage(cat, known, [pd.Timestamp("2026-01-19", tz="UTC"), pd.Timestamp("2026-01-26", tz="UTC")])
    # Active now: C1, C2, C3 (C6 expired), C4, C5 (new, unknown to the model, a topic it has no item of).
    assert (cur["active_items"], cur["unknown_items"]) == (5, 2) and cur["unknown_share"] == pytest.approx(0.4)
    assert cur["unknown_by_topic"] == {"case_study": 2} and cur["topics_without_known_items"] == ["case_study"]
    shift = ds.catalogue_shift(cur, ref)
    assert shift["unknown_share_rise"] == pytest.approx(0.4) and shift["new_topics"] == ["case_study"]
    # Topic mix: ref {clinical 0.5, guideline 0.5} vs cur {case 0.4, clinical 0.2, guideline 0.4}.
    assert shift["topic_mix_js"] == pytest.approx(ds.js_distance(np.array([0.0, 0.5, 0.5]), np.array([0.4, 0.2, 0.4])))


def test_catalogue_counts_items_approved_at_a_suggestion_time_only() -> None:
    cat = _catalogue()
    # C4/C5 are approved on the 20th: a window whose last suggestion is on the 19th never offered them,
    # even if the window's end date lies after the approval.
    before = ds.catalogue_coverage(cat, [], [pd.Timestamp("2026-01-12", tz="UTC"), pd.Timestamp("2026-01-19 23:00", tz="UTC")])
    assert before["active_items"] == 3 and "case_study" not in before["unknown_by_topic"]  # C1-C3; C6 expired on the 10th
    on = ds.catalogue_coverage(cat, [], [pd.Timestamp("2026-01-20", tz="UTC")])
    assert on["active_items"] == 5 and on["unknown_by_topic"]["case_study"] == 2  # C6 expired on the 10th
    assert ds.catalogue_coverage(cat, ["C1"], [])["active_items"] == 0


def test_verdict_flags_content_the_model_cannot_score() -> None:
    t = Thresholds()
    quiet = pd.DataFrame({"column": ["email_open_rate_30d"], "score": [0.01], "drifted": [False]})
    seq = pd.DataFrame({"column": ["seq_len"], "score": [0.01], "drifted": [False]})
    cat = _catalogue()
    early = ([pd.Timestamp("2026-01-05", tz="UTC"), pd.Timestamp("2026-01-12", tz="UTC")],)
    late = ([pd.Timestamp("2026-01-19", tz="UTC"), pd.Timestamp("2026-01-26", tz="UTC")],)
    same = ds.catalogue_shift(ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C6"], *early), ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C6"], *early))
    v = ds.verdict(quiet, seq, None, None, None, t, None, same)
    assert not v["drift_detected"] and not v["catalogue_drift"]
    # Every item known, the campaign included: no alarm even though the catalogue grew.
    grown = ds.catalogue_shift(ds.catalogue_coverage(cat, list(cat["content_id"]), *late), ds.catalogue_coverage(cat, list(cat["content_id"]), *early))
    assert not ds.verdict(quiet, seq, None, None, None, t, None, grown)["catalogue_drift"]
    new = ds.catalogue_shift(ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C6"], *late), ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C6"], *early))
    v = ds.verdict(quiet, seq, None, None, None, t, None, new)
    assert v["drift_detected"] and v["catalogue_drift"] and not v["data_drift"] and not v["prediction_drift"]
    assert "2 of 5 approved content items" in v["reasons"][0] and "case_study" in v["reasons"][0]
    assert any("content vocabulary" in s for s in ds.next_steps(v, quiet))
    # Below the threshold (a rise of 0.4 vs a bar of 0.5) and no new topic: quiet.
    known_topic = ds.catalogue_shift(
        ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C4", "C6"], *late), ds.catalogue_coverage(cat, ["C1", "C2", "C3", "C4", "C6"], *early)
    )
    assert not ds.verdict(quiet, seq, None, None, None, t.model_copy(update={"unknown_content_share": 0.5}), None, known_topic)["catalogue_drift"]


def test_per_contact_rates_are_compared_over_rows_with_a_contact() -> None:
    rng = np.random.default_rng(0)
    n = 20000

    def frame(send_p: float, open_p: float) -> pd.DataFrame:
        sent = (rng.random(n) < send_p).astype(int)
        rate = np.where(sent > 0, (rng.random(n) < open_p).astype(float), 0.0)  # 0 where nothing was sent
        return pd.DataFrame({"conference_sent_30d": sent, "conference_open_rate_30d": rate})

    ref = frame(0.05, 0.8)
    # The policy sends conferences four times as often; HCPs answer as before: not response drift.
    more = ds.column_scores(ref, frame(0.2, 0.8), ["conference_open_rate_30d"], [])
    assert more["score"].iloc[0] < 0.1 and more["note"].iloc[0] == "rows with a contact in the window"
    # The same sends, half the answers: drift.
    worse = ds.column_scores(ref, frame(0.05, 0.4), ["conference_open_rate_30d"], [])
    assert worse["score"].iloc[0] > 0.3
    # Too few contacts on a side to say anything: no score rather than a noisy one.
    rare = ds.column_scores(ref, frame(0.001, 0.8), ["conference_open_rate_30d"], [])
    assert np.isnan(rare["score"].iloc[0]) and "fewer than" in rare["note"].iloc[0]

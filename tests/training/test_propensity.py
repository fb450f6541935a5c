"""The behaviour model recovers a known logging policy, is calibrated and deterministic; served propensities come from the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from training.dataset import NONE, EncodedData
from training.propensity import (
    ESTIMATED,
    LOGGED,
    PROPENSITY_FLOOR,
    PROPENSITY_SOURCES,
    SERVED,
    behaviour_diagnostics,
    fill_propensities,
    fit_behaviour,
    source_summary,
)
from training.served_propensity import served_for_rows, served_propensities, served_suggestions

C = len(CHANNELS)
PHONE = CHANNELS.index("phone")
# Vocabulary: 0 pad, 1 NONE, 2-4 product P1's items, 5-7 product P2's.
ITEM_PRODUCTS = np.array(["", "", "P1", "P1", "P1", "P2", "P2", "P2"], dtype=object)
# The reps' channel logits: slope on static feature 0 and intercept per channel (phone last).
SLOPE = np.array([1.6, -1.2, 0.8, 0.0, 0.5, -0.6, 0.0, 0.9])
INTERCEPT = np.array([1.0, 0.4, 0.0, 0.2, -0.3, -0.8, -1.5, 0.1])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _content_truth() -> np.ndarray:
    """[product 0/1, C, V] true P(content | channel, product): NONE or the product's own items, nothing on the phone."""
    rng = np.random.default_rng(11)
    table = np.zeros((2, C, len(ITEM_PRODUCTS)))
    for p, items in enumerate(([NONE, 2, 3, 4], [NONE, 5, 6, 7])):
        table[p][:, items] = rng.dirichlet(np.full(4, 2.0), size=C)
    table[:, PHONE] = 0.0
    table[:, PHONE, NONE] = 1.0
    return table


def _world(n_hcps: int, rows_per_hcp: int, seed: int, habit: float = 0.0) -> tuple[EncodedData, np.ndarray, pd.Series]:
    """Logged rows of a known logging policy (channel softmax in static feature 0, plus ``habit`` x last channel), and the true propensities."""
    rng = np.random.default_rng(seed)
    content_truth = _content_truth()
    hcp_product = np.arange(n_hcps) % 2
    last = np.zeros(n_hcps, dtype=np.int64)  # 0: no touch yet, else 1 + channel
    cols: dict[str, list] = {k: [] for k in ("static", "channel", "length", "label_channel", "label_content", "hcp", "truth")}
    for _ in range(rows_per_hcp):
        static = rng.normal(size=(n_hcps, 3))
        z = static[:, :1] * SLOPE + INTERCEPT + habit * (last[:, None] == np.arange(1, C + 1))
        p_ch = _softmax(z)
        ch = (p_ch.cumsum(1) > rng.random(n_hcps)[:, None]).argmax(1)
        p_ct = content_truth[hcp_product, ch]  # [H, V]
        ct = (p_ct.cumsum(1) > rng.random(n_hcps)[:, None]).argmax(1)
        cols["static"].append(static)
        cols["channel"].append(np.stack([np.zeros(n_hcps, np.int64), last], 1)[:, ::-1].copy())  # left-aligned: [last, pad]
        cols["length"].append((last > 0).astype(np.int64))
        cols["label_channel"].append(ch)
        cols["label_content"].append(ct)
        cols["hcp"].append(np.arange(n_hcps))
        cols["truth"].append(p_ch[np.arange(n_hcps), ch] * p_ct[np.arange(n_hcps), ct])
        last = ch + 1
    n = n_hcps * rows_per_hcp
    arrays = {
        "static": np.concatenate(cols["static"]).astype(np.float16),
        "channel": np.concatenate(cols["channel"]).astype(np.int8),
        "length": np.concatenate(cols["length"]).astype(np.int16),
        "label_channel": np.concatenate(cols["label_channel"]).astype(np.int8),
        "label_content": np.concatenate(cols["label_content"]).astype(np.int32),
        "label_slot": np.zeros(n, np.int8),
        "label_response": np.zeros(n, np.float32),
        "propensity": np.full(n, np.nan, np.float32),
    }
    hcp_id = np.array([f"H{i:04d}" for i in np.concatenate(cols["hcp"])], dtype=object)
    data = EncodedData(arrays, hcp_id, np.full(n, np.datetime64("2026-01-05"), dtype="datetime64[ns]"))
    products = pd.Series(np.where(np.arange(n_hcps) % 2 == 0, "P1", "P2"), index=[f"H{i:04d}" for i in range(n_hcps)])
    return data, np.concatenate(cols["truth"]), products


@pytest.fixture(scope="module")
def world():
    train, _, products = _world(300, 20, seed=1)
    test, truth, _ = _world(200, 10, seed=2)
    model = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=0)
    return model, train, test, truth, products


def test_propensities_recover_the_known_logging_policy(world) -> None:
    model, _, test, truth, _ = world
    est = model.propensity(test)
    # The state-free baseline is off by about 60% of the mean propensity; the model by under 10%.
    assert np.mean(np.abs(est - truth)) < 0.15 * np.mean(truth) < np.mean(np.abs(model.marginal_propensity(test) - truth))
    assert np.corrcoef(np.log(est), np.log(truth))[0, 1] > 0.97
    # The channel part alone tracks the true softmax.
    z = test.arrays["static"][:, :1].astype(np.float64) * SLOPE + INTERCEPT
    err = np.abs(model.channel_probs(test) - _softmax(z))
    assert err.mean() < 0.02 and np.quantile(err, 0.99) < 0.1
    # Content stays within the HCP's product: another product's item gets little mass.
    p1 = model.content_table("P1")
    assert p1[:, 5:].sum(1)[:PHONE].max() < 0.02 and np.allclose(p1.sum(1), 1.0)
    assert p1[PHONE, NONE] == 1.0


def test_diagnostics_show_calibration_and_a_gain_over_the_marginal_baseline(world) -> None:
    model, _, test, _, _ = world
    d = behaviour_diagnostics(model, test)
    assert d["log_loss_nats"] < d["marginal_log_loss_nats"] - 0.1
    assert d["channel_log_loss_nats"] < d["channel_marginal_log_loss_nats"]
    assert d["channel_ece"] < 0.02 and d["channel_top_ece"] < 0.05
    assert d["rows"] == len(test) and d["floored_share"] < 0.01
    assert PROPENSITY_FLOOR <= d["propensity_min"] <= d["propensity_mean"] <= 1.0
    assert d["fit_calibration_hcps"] == 60 and d["fit_fit_rows"] == 240 * 20


def test_recent_channel_use_is_learnt() -> None:
    train, _, products = _world(300, 20, seed=3, habit=2.5)
    test, truth, _ = _world(200, 10, seed=4, habit=2.5)
    model = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=0)
    assert np.mean(np.abs(model.propensity(test) - truth)) < 0.15 * np.mean(truth)
    # Without the touch sequence the habit is invisible and the fit is clearly worse.
    blind = {k: v for k, v in train.arrays.items() if k not in ("channel", "length")}
    blind_model = fit_behaviour(EncodedData(blind, train.hcp_id, train.week), item_products=ITEM_PRODUCTS, hcp_products=products, seed=0)
    test_blind = EncodedData({k: v for k, v in test.arrays.items() if k not in ("channel", "length")}, test.hcp_id, test.week)
    assert behaviour_diagnostics(model, test)["log_loss_nats"] < behaviour_diagnostics(blind_model, test_blind)["log_loss_nats"] - 0.1


def test_calibration_on_held_out_hcps_undoes_shrinkage() -> None:
    train, _, products = _world(300, 20, seed=5)
    test, _, _ = _world(200, 10, seed=6)
    # A heavy L2 shrinks the logits: underconfident until the temperature sharpens them.
    raw = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=0, l2=0.05, calibration_share=0.0)
    cal = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=0, l2=0.05, calibration_share=0.3)
    assert raw.temperature == 1.0 and cal.temperature < 0.8
    d_raw, d_cal = behaviour_diagnostics(raw, test), behaviour_diagnostics(cal, test)
    assert d_cal["channel_log_loss_nats"] < d_raw["channel_log_loss_nats"]
    assert d_cal["channel_ece"] < d_raw["channel_ece"]
    assert cal.fit_report["calibration_log_loss_after_nats"] < cal.fit_report["calibration_log_loss_before_nats"]


def test_same_seed_same_model_other_seed_other_split(world) -> None:
    _, train, test, _, products = world
    a = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=7)
    b = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=7)
    c = fit_behaviour(train, item_products=ITEM_PRODUCTS, hcp_products=products, seed=8)
    assert np.array_equal(a.weights, b.weights) and a.temperature == b.temperature
    assert np.array_equal(a.propensity(test), b.propensity(test))
    assert not np.array_equal(a.weights, c.weights)


def test_floor_keeps_impossible_actions_finite(world) -> None:
    model, _, test, _, _ = world
    odd = test.subset(np.arange(10))
    odd.arrays["label_channel"][:5] = PHONE
    odd.arrays["label_content"][:5] = 2  # content on a channel that never logged any
    p = model.propensity(odd)
    assert np.all(p[:5] == PROPENSITY_FLOOR) and np.all(p[5:] > PROPENSITY_FLOOR)
    assert np.all(model.propensity(odd, floor=0.0)[:5] == 0.0)
    d = behaviour_diagnostics(model, odd)
    assert d["floored_share"] == 0.5 and d["max_weight"] == pytest.approx(1 / PROPENSITY_FLOOR)
    assert d["log_loss_nats"] > -np.log(PROPENSITY_FLOOR)  # judged unfloored: the floor must not flatter the fit


def test_bad_inputs_name_the_field(world) -> None:
    model, _, test, _, _ = world
    wrong = test.subset(np.arange(4))
    wrong.arrays["label_content"][2] = 99
    with pytest.raises(ValueError, match="label_content 99 at row 2"):
        model.propensity(wrong)
    narrow = test.subset(np.arange(4))
    narrow.arrays["static"] = narrow.arrays["static"][:, :2]
    with pytest.raises(ValueError, match="2 static features, the model was fitted on 3"):
        model.channel_probs(narrow)
    with pytest.raises(ValueError, match="calibration_share"):
        fit_behaviour(test, calibration_share=1.0)


def test_fill_prefers_served_then_logged_then_estimated() -> None:
    logged = np.array([0.4, np.nan, 0.0, 1.5, 0.9, np.nan], dtype=np.float32)
    estimated = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    served = np.array([np.nan, np.nan, np.nan, np.nan, 0.05, 0.07])
    p, src = fill_propensities(logged, estimated)
    assert np.allclose(p, [0.4, 0.2, 0.3, 0.4, 0.9, 0.6]) and list(src) == [LOGGED, ESTIMATED, ESTIMATED, ESTIMATED, LOGGED, ESTIMATED]
    p, src = fill_propensities(logged, estimated, served)
    assert np.allclose(p, [0.4, 0.2, 0.3, 0.4, 0.05, 0.07]) and list(src[4:]) == [SERVED, SERVED]
    s = source_summary(src)
    assert s["propensity_source"] == "mixed" and s["propensity_rows"] == 6
    assert s["propensity_share_served"] == pytest.approx(2 / 6) and s["propensity_share_logged"] == pytest.approx(1 / 6)
    assert source_summary(fill_propensities(np.full(3, np.nan), np.full(3, 0.5))[1])["propensity_source"] == "estimated"
    assert PROPENSITY_SOURCES[ESTIMATED] == "estimated"
    with pytest.raises(ValueError, match="estimated propensity 0.0 at row 1"):
        fill_propensities(logged[:2], np.array([0.5, 0.0]))


T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _served(i: int, propensity: float) -> dict:
    return {
        "suggestion_id": f"S{i}",
        "request_id": "R1",
        "hcp_id": f"H{i:04d}",
        "rep_id": "REP001",
        "as_of": T0,
        "rank": 1,
        "channel": CHANNELS[i % C],
        "content_id": None,
        "window_start": T0 + timedelta(days=1),
        "window_end": T0 + timedelta(days=1, hours=4),
        "expected_response": 0.3,
        "propensity": propensity,
        "policy": "explore" if propensity < 0.5 else "model",
        "model_version": "nba/1",
        "features": {},
        "rules": [],
        "reasons": [],
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An audit trail written by serving's own table definition, holding S0..S11 (S11 with a corrupt propensity)."""
    from serving.audit import AuditTrail

    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    trail = AuditTrail(url)
    trail.record_suggestions([_served(i, 0.05 * (i + 1)) for i in range(11)] + [_served(11, 0.0)])
    trail.close()
    return url


def test_served_propensities_read_the_audit_trail_in_chunks(audit_url: str) -> None:
    ids = ["S3", "S0", "S3", None, "", "S404", "S10", "S11", *[f"S{i}" for i in range(5, 9)]]
    got = served_propensities(audit_url, ids, chunk_size=3)
    assert got.to_dict() == pytest.approx({"S0": 0.05, "S3": 0.2, "S5": 0.3, "S6": 0.35, "S7": 0.4, "S8": 0.45, "S10": 0.55})
    assert "7 of 9 suggestion ids found" in got.attrs["message"] and "1 with a stored propensity outside (0, 1]" in got.attrs["message"]
    frame, _ = served_suggestions(audit_url, ["S2", "S9"])
    assert frame.loc["S2", "channel"] == CHANNELS[2] and frame.loc["S2", "policy"] == "explore" and frame.loc["S9", "policy"] == "model"
    per_row = served_for_rows(got, ["S0", None, "S404", "S10"])
    assert np.allclose(per_row, [0.05, np.nan, np.nan, 0.55], equal_nan=True)


def test_no_audit_trail_gives_an_empty_result_and_a_reason(tmp_path: Path) -> None:
    import sqlalchemy as sa

    none = served_propensities(None, ["S1"])
    assert none.empty and "no audit trail configured" in none.attrs["message"]
    absent = tmp_path / "absent.db"
    got = served_propensities(f"sqlite:///{absent}", ["S1"])
    assert got.empty and "no such database file" in got.attrs["message"] and not absent.exists()
    other = tmp_path / "other.db"
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE touchpoints (event_id TEXT)")
    engine.dispose()
    got = served_propensities(f"sqlite:///{other}", ["S1"])
    assert got.empty and "no 'suggestions' table" in got.attrs["message"]
    with pytest.raises(ValueError, match="audit_url"):
        served_propensities("not a url", ["S1"])

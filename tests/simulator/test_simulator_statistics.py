"""The simulated world looks like the domain brief: tiers, rep loads, channels, trends, fatigue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contract.io import read_frame


@pytest.fixture(scope="module")
def year_logs(year_world: Path) -> dict[str, pd.DataFrame]:
    tp = read_frame(year_world, "touchpoints")
    hcps = read_frame(year_world, "hcps")
    tp["week"] = (tp["ts"] + pd.Timedelta(hours=8) - pd.Timestamp("2025-01-06", tz="UTC")).dt.days // 7
    return {"tp": tp, "out": tp[tp["direction"] == "outbound"], "hcps": hcps, "reps": read_frame(year_world, "reps")}


def test_segments_and_population(year_logs: dict) -> None:
    hcps = year_logs["hcps"]
    mix = hcps["segment"].value_counts(normalize=True)
    assert set(mix.index) == {"A", "B", "C", "D"}
    assert mix["A"] < 0.3 and mix["A"] < mix["D"]
    # A = high potential x high support, by construction of the quadrants.
    a, d = hcps[hcps["segment"] == "A"], hcps[hcps["segment"] == "D"]
    assert a["potential_boxes_month"].min() > d["potential_boxes_month"].max()
    assert a["support_share"].min() > d["support_share"].max()
    kol = hcps[hcps["is_kol"]]
    assert 0 < len(kol) < 0.15 * len(hcps)
    assert kol["title"].isin(["chief_physician", "associate_chief_physician"]).mean() > 0.8
    assert kol["hospital_tier"].str.startswith("tertiary").mean() > 0.8
    assert 0.5 < (hcps["profile_completeness"] >= 0.6).mean() < 0.8
    assert (hcps["timezone"] == "Asia/Shanghai").mean() > 0.85
    assert hcps["consent_visit"].mean() > 0.9 and 0.3 < hcps["consent_email"].mean() < 0.6


def test_chronic_reps_cover_80_to_120_hcps(year_logs: dict) -> None:
    loads = year_logs["hcps"].groupby("rep_id").size()
    reps = year_logs["reps"].set_index("rep_id")
    chronic = loads[reps.loc[loads.index, "rep_type"] == "chronic"]
    assert len(chronic) >= 5 and chronic.between(80, 120).all(), chronic.describe()
    assert (reps["rep_type"] == "specialty").any()


def test_response_rates_differ_by_channel(year_logs: dict) -> None:
    rate = year_logs["out"].groupby("channel")["opened"].mean()
    assert rate["visit"] > rate["wechat_push"]
    assert rate["wecom_1to1"] > rate["wechat_push"]
    assert rate["wechat_push"] < 0.35


def test_channel_trends_follow_the_survey(year_logs: dict) -> None:
    out = year_logs["out"]
    early, late = out[out["week"] < 13], out[out["week"] >= 39]
    for rising in ("email", "webinar"):
        assert late.loc[late["channel"] == rising, "opened"].mean() > early.loc[early["channel"] == rising, "opened"].mean() + 0.05, rising
    for falling in ("wechat_push", "visit"):
        assert late.loc[late["channel"] == falling, "opened"].mean() < early.loc[early["channel"] == falling, "opened"].mean(), falling


def test_fatigue_lowers_response_for_the_same_hcp(year_logs: dict) -> None:
    """Within HCP: pushes after a busy fortnight are opened less than pushes after a quiet one."""
    out = year_logs["out"]
    weekly = out.groupby(["hcp_id", "week"]).size().unstack(fill_value=0)
    recent = weekly.shift(1, axis=1, fill_value=0) + weekly.shift(2, axis=1, fill_value=0)
    push = out[(out["channel"] == "wechat_push") & (out["week"] >= 4) & out["delivered"]].copy()
    push["recent"] = recent.stack().reindex(pd.MultiIndex.from_arrays([push["hcp_id"], push["week"]])).to_numpy()
    push["demeaned"] = push["opened"] - push.groupby("hcp_id")["opened"].transform("mean")
    busy = push.loc[push["recent"] >= 4, "demeaned"].mean()
    quiet = push.loc[push["recent"] <= 2, "demeaned"].mean()
    assert busy < quiet - 0.01, (busy, quiet)


def test_confounding_visits_go_to_hcps_who_respond_anyway(year_logs: dict) -> None:
    out = year_logs["out"].merge(year_logs["hcps"][["hcp_id", "segment"]], on="hcp_id")
    visits_per_hcp = out[out["channel"] == "visit"].groupby("segment").size() / year_logs["hcps"]["segment"].value_counts()
    assert visits_per_hcp["A"] > 2 * visits_per_hcp["D"]
    push = out[out["channel"] == "wechat_push"].groupby("segment")["opened"].mean()
    assert push["A"] > push["D"]
    share = out["channel"].value_counts(normalize=True)
    assert share["wechat_push"] + share["visit"] > 0.6 and share["email"] + share["webinar"] < 0.2


def test_new_content_appears_and_old_expires(year_world: Path, year_logs: dict) -> None:
    content = read_frame(year_world, "content")
    start, end = pd.Timestamp("2025-01-06", tz="UTC"), pd.Timestamp("2026-01-05", tz="UTC")
    fresh = content[(content["approved_from"] > start) & (content["approved_from"] < end)]
    expiring = content[(content["approved_until"] > start) & (content["approved_until"] < end)]
    assert len(fresh) > 0 and len(expiring) > 0
    used = year_logs["out"].dropna(subset=["content_id"]).merge(content, on="content_id")
    assert used["content_id"].isin(fresh["content_id"]).any()
    assert (used["ts"] < used["approved_until"]).all() and (used["ts"] >= used["approved_from"]).all()


def test_adoption_drives_prescriptions(year_world: Path) -> None:
    import pyarrow.parquet as pq

    out = read_frame(year_world, "outcomes")
    state = pq.read_table(year_world / "_ground_truth" / "final_state.parquet").to_pandas()
    last = out[out["week_start"] == out["week_start"].max()].merge(state, on="hcp_id")
    hi, lo = last[last["adoption"] > 3], last[last["adoption"] < 1]
    assert hi["share"].mean() > lo["share"].mean() + 0.1
    weekly = out.groupby("week_start")[["prescriptions", "market_boxes"]].sum()
    assert weekly["market_boxes"].iloc[5] < weekly["market_boxes"].iloc[10]  # Spring Festival dip
    assert np.isfinite(weekly.to_numpy()).all()


def test_reps_work_in_the_region_of_most_of_their_hcps(year_logs: dict) -> None:
    hcps = year_logs["hcps"].merge(year_logs["reps"][["rep_id", "region"]].rename(columns={"region": "rep_region"}), on="rep_id")
    counts = hcps.groupby(["rep_id", "region"]).size().unstack(fill_value=0)
    rep_region = hcps.groupby("rep_id")["rep_region"].first()
    own = counts.to_numpy()[np.arange(len(counts)), counts.columns.get_indexer(rep_region.loc[counts.index])]
    assert (own == counts.max(axis=1).to_numpy()).all()
    assert (hcps["region"] == hcps["rep_region"]).mean() > 0.6

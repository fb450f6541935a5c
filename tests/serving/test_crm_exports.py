"""The nightly file in CRM shapes: priorities spread by expected value, expiry by policy, local and UTC windows, vendor field names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.crm_formats import (
    GENERIC_COLUMNS,
    SF_TEXT_LIMITS,
    SUGGESTION_TABLE,
    ExpiryPolicy,
    export_tables,
    policy_expiry,
    spread_priorities,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "crm"
AS_OF = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
POLICY = ExpiryPolicy(ttl_days=7, grace_days=2)
CHANNELS = ["visit", "email", "wechat_push", "phone", "conference", "webinar", "wecom_1to1", "department_meeting"]


def table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A run's suggestion table: windows spread over the coming week, two zones, few distinct expected values."""
    rng = np.random.default_rng(seed)
    start = pd.Series(pd.Timestamp(AS_OF) + pd.to_timedelta(rng.integers(1, 7 * 24, n), unit="h")).dt.floor("h")
    ev = rng.choice([0.12, 0.3, 0.3, 0.3, 0.55], n)  # ties, as the rule policy produces
    content = np.where(np.arange(n) % 3 == 0, None, [f"CNT-{i:03d}" for i in range(n)]).astype(object)
    return pd.DataFrame(
        {
            "suggestion_id": [f"S{i:04d}" for i in range(n)],
            "hcp_id": [f"H{i // 2:03d}" for i in range(n)],
            "rep_id": "R01",
            "rank": np.arange(n) % 2 + 1,
            "channel": [CHANNELS[i % len(CHANNELS)] for i in range(n)],
            "content_id": content,
            "product_id": np.where(np.arange(n) % 5 == 0, None, "PRD-01").astype(object),
            "title": [("Visit with a very long title " * 6)[: 30 + i * 3] for i in range(n)],
            "reason": ["model: likely to respond; " * 20] * n,
            "expected_response": ev,
            "expected_value": ev * 2.5,
            "window_start_utc": start,
            "window_end_utc": start + pd.Timedelta(hours=4),
            "timezone": np.where(np.arange(n) % 2 == 0, "Asia/Shanghai", "Asia/Urumqi"),
            "degraded": False,
            "model_version": "nba/3",
        }
    )[list(SUGGESTION_TABLE)]


def kind(value: str) -> str:
    """The kind of a CSV cell as a CRM loader reads it."""
    patterns = [
        ("date", r"\d{4}-\d{2}-\d{2}"),
        ("datetime_utc", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z"),
        ("datetime_offset", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}"),
        ("boolean", r"true|false"),
        ("integer", r"-?\d+"),
        ("decimal", r"-?\d+\.\d+"),
    ]
    return next((k for k, p in patterns if re.fullmatch(p, value)), "text")


def column_kinds(path: Path) -> dict[str, set[str]]:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {c: {kind(v) for v in df[c] if v != ""} for c in df.columns}


def test_priorities_are_spread_by_expected_value_even_with_ties() -> None:
    rng = np.random.default_rng(1)
    value = rng.choice([0.1, 0.3, 0.3, 0.3, 0.3, 0.7], 1000)  # one value on ~2/3 of the rows
    prio = spread_priorities(value, rng.integers(1, 4, 1000))
    share = np.bincount(prio, minlength=6)[1:] / len(prio)
    assert set(prio) == {1, 2, 3, 4, 5} and share.max() <= 0.25
    levels = [prio[value == v] for v in sorted(set(value), reverse=True)]
    assert all(hi.max() <= lo.min() for hi, lo in zip(levels, levels[1:]))  # a higher expected value never gets a later priority
    assert (prio[value == 0.7] == 1).all() and (prio[value == 0.1] == 5).all()
    missing, known = spread_priorities(np.array([np.nan, 0.2])).tolist()
    assert known == 1 and missing > known  # an unknown value comes last
    assert spread_priorities(np.array([])).tolist() == []


def test_expiry_follows_the_policy_not_the_window_end() -> None:
    t = table()
    until = pd.Series([pd.Timestamp(AS_OF) + timedelta(days=2)] + [None] * (len(t) - 1))
    exp = policy_expiry(t["window_end_utc"], AS_OF, POLICY, until)
    end = pd.to_datetime(t["window_end_utc"], utc=True)
    cap = pd.Timestamp(AS_OF) + timedelta(days=POLICY.ttl_days)
    expected = (end + timedelta(days=POLICY.grace_days)).clip(upper=cap)
    assert exp.iloc[0] == min(expected.iloc[0], until.iloc[0])  # the content's approval ends first
    assert (exp.iloc[1:] == expected.iloc[1:]).all()
    assert (exp != end).all() and (exp <= cap).all() and exp.nunique() > 3


def test_generic_file_has_local_and_utc_windows_with_the_zone() -> None:
    out = export_tables("generic", table(), AS_OF, POLICY)[""]
    assert tuple(out.columns) == GENERIC_COLUMNS
    for _, row in out.iterrows():
        local = datetime.fromisoformat(row["window_start_local"])
        assert local == row["window_start_utc"] and local.utcoffset() == row["window_start_utc"].tz_convert(row["timezone"]).utcoffset()
        assert datetime.fromisoformat(row["expiry_local"]) == row["expiry_utc"]
    assert {"Asia/Shanghai", "Asia/Urumqi"} == set(out["timezone"])
    assert out["window_start_local"].str.endswith("+08:00").any() and out["window_start_local"].str.endswith("+06:00").any()


@pytest.mark.parametrize(
    "fmt, files",
    [
        ("veeva", {"": "veeva_suggestion__v.csv", "suggestion_tag__v": "veeva_suggestion_tag__v.csv"}),
        ("salesforce", {"": "salesforce_Recommendation.csv", "TerritoryAcctRcmdAction": "salesforce_TerritoryAcctRcmdAction.csv"}),
    ],
)
def test_exports_match_the_vendor_fixtures(fmt: str, files: dict[str, str], tmp_path: Path) -> None:
    from serving.batch import write_tables

    written = write_tables(export_tables(fmt, table(), AS_OF, POLICY), tmp_path / "nightly.csv")
    assert sorted(Path(p).name for p in written) == sorted("nightly.csv" if s == "" else f"nightly.{s}.csv" for s in files)
    for suffix, fixture in files.items():
        ours = column_kinds(tmp_path / ("nightly.csv" if suffix == "" else f"nightly.{suffix}.csv"))
        theirs = column_kinds(FIXTURES / fixture)
        assert list(ours) == list(theirs), f"{fixture}: column names or order differ"
        for col in theirs:
            assert ours[col] <= theirs[col] | ({"integer"} if theirs[col] == {"decimal"} else set()), f"{fixture} {col}: {ours[col]} vs {theirs[col]}"


def test_veeva_fields_follow_the_suggestion_rules() -> None:
    tabs = export_tables("veeva", table(), AS_OF, POLICY)
    s, tags = tabs[""], tabs["suggestion_tag__v"]
    assert set(s["record_type_name__v"]) <= {"call__v", "call_objective__v", "email__v", "insight__v"}
    assert (s["priority__v"] == "urgent__v").sum() == (s["nba_priority__c"] == 1).sum() > 0
    calls = s["record_type_name__v"] == "call__v"
    assert (s.loc[calls, "planned_call_date__v"] == s.loc[calls, "nba_window_start_local__c"].str[:10]).all()
    assert (s.loc[~calls, "planned_call_date__v"] == "").all()
    assert (s["expiration_date__v"] >= s["posted_date__v"]).all()
    assert s["suggestion_external_id__v"].is_unique
    # Every suggestion has a driver tag; those with a product have a product tag.
    assert set(tags.loc[tags["record_type_name__v"] == "driver__v", "suggestion__vr.suggestion_external_id__v"]) == set(s["suggestion_external_id__v"])
    assert (tags["record_type_name__v"] == "product__v").sum() == table()["product_id"].notna().sum()


def test_salesforce_text_fits_the_field_limits() -> None:
    tabs = export_tables("salesforce", table(), AS_OF, POLICY)
    rec, act = tabs[""], tabs["TerritoryAcctRcmdAction"]
    for col, limit in SF_TEXT_LIMITS.items():
        assert rec[col].str.len().max() <= limit, col
    assert rec["Name"].str.endswith("…").any()  # long titles were cut, not rejected by the org
    assert (rec["ExternalId"] == act["NBA_Suggestion_Id__c"]).all() and set(act["ActionType"]) >= {"Visit", "Email"}


def test_formats_refuse_what_the_crm_cannot_load(tmp_path: Path) -> None:
    from serving.batch import check_out

    with pytest.raises(ValueError, match="veeva format is CSV"):
        check_out(tmp_path / "x.parquet", "veeva")
    with pytest.raises(ValueError, match="--format: must be one of"):
        check_out(tmp_path / "x.csv", "sap")
    check_out(tmp_path / "x.parquet", "generic")


@pytest.mark.slow
def test_nightly_batch_writes_each_format(serving_cfg, tmp_path) -> None:
    """The real batch on the test world: one CSV set per format, same suggestions, spread priorities."""
    from serving.batch import recommend_all
    from serving.engine import Recommender
    from serving.sandbox import AS_OF as WORLD_AS_OF

    rec = Recommender.from_config(serving_cfg)
    try:
        ids = {}
        for fmt in ("generic", "veeva", "salesforce"):
            summary = recommend_all(rec, tmp_path / f"{fmt}.csv", k=2, as_of=WORLD_AS_OF, progress=False, record=False, fmt=fmt)
            assert summary["format"] == fmt and Path(summary["files"][-1]).name == f"{fmt}.csv"
            ids[fmt] = summary["suggestions"]
        generic = pd.read_csv(tmp_path / "generic.csv")
        assert tuple(generic.columns) == GENERIC_COLUMNS
        assert generic["priority"].value_counts(normalize=True).max() <= 0.25
        assert (pd.to_datetime(generic["expiry_utc"]) != pd.to_datetime(generic["window_end_utc"])).any()
        assert list(pd.read_csv(tmp_path / "veeva.csv").columns) == list(pd.read_csv(FIXTURES / "veeva_suggestion__v.csv").columns)
        assert list(pd.read_csv(tmp_path / "salesforce.csv").columns) == list(pd.read_csv(FIXTURES / "salesforce_Recommendation.csv").columns)
        assert (tmp_path / "veeva.suggestion_tag__v.csv").exists() and (tmp_path / "salesforce.TerritoryAcctRcmdAction.csv").exists()
    finally:
        rec.audit.close()


def test_cli_refuses_a_format_it_cannot_write_before_scoring(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nba.cli import app

    def run(*args: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, ["recommend", "--all", *args])
        return res.exit_code, " ".join(res.output.replace("│", " ").split())  # rich wraps the message in a box

    code, text = run("--out", str(tmp_path / "x.parquet"), "--format", "veeva")
    assert code == 2 and "Traceback" not in text and "veeva format is CSV" in text
    code, text = run("--out", str(tmp_path / "x.csv"), "--format", "sap")
    assert code == 2 and "must be one of generic, veeva, salesforce" in text
    assert not list(tmp_path.iterdir())

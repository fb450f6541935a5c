"""CRM-native shapes of the nightly suggestion file: generic, Veeva Vault CRM ``suggestion__v``, Salesforce Life Sciences Cloud.

Pure functions over one table of suggestions (``SUGGESTION_TABLE`` columns, one row per served
suggestion, windows as UTC timestamps plus each HCP's time zone). ``spread_priorities`` and
``policy_expiry`` decide priority and expiry the same way for every format; ``export_tables``
then names and encodes the fields the way each CRM loads them. A format is a main object file
plus companion files (``{suffix: frame}``): Vault's ``suggestion_tag__v`` records, Salesforce's
``TerritoryAcctRcmdAction`` rows.

Field names come from the vendors' published material; the few that could not be confirmed
there are listed in ``UNVERIFIED`` (and in the README's CRM formats section) so an integrator
checks them against the org before the first load. ``*__c`` / ``NBA_*__c`` fields are custom
fields the customer creates: Vault CRM and Salesforce reserve ``__c`` for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("generic", "veeva", "salesforce")
PRIORITY_LEVELS = 5

# One row per suggestion, what every format is built from (batch.suggestion_table makes it).
SUGGESTION_TABLE: tuple[str, ...] = (
    "suggestion_id",
    "hcp_id",
    "rep_id",
    "rank",
    "channel",
    "content_id",
    "product_id",
    "title",
    "reason",
    "expected_response",
    "expected_value",
    "window_start_utc",
    "window_end_utc",
    "timezone",
    "degraded",
    "model_version",
)

# The generic file (the default): the suggestion table with priority, policy expiry and local times.
GENERIC_COLUMNS: tuple[str, ...] = (
    "suggestion_id",
    "hcp_id",
    "rep_id",
    "title",
    "reason",
    "channel",
    "content_id",
    "product_id",
    "priority",
    "window_start_local",
    "window_end_local",
    "window_start_utc",
    "window_end_utc",
    "timezone",
    "expiry_local",
    "expiry_utc",
    "expected_response",
    "expected_value",
    "degraded",
    "model_version",
)

# --- Veeva Vault CRM -------------------------------------------------------------------------
# suggestion__v object types are set by a trigger from record_type_name__v (Vault CRM help,
# "Configuring Suggestions"): call__v schedules a call, call_objective__v adds a call objective,
# insight__v carries no action. Rep-time channels are calls; digital channels are objectives the
# rep completes; email is Veeva CRM's Email_vod record type (its Vault name is not confirmed).
VEEVA_RECORD_TYPES: dict[str, str] = {
    "visit": "call__v",
    "department_meeting": "call__v",
    "phone": "call__v",
    "email": "email__v",
    "wechat_push": "call_objective__v",
    "wecom_1to1": "call_objective__v",
    "webinar": "call_objective__v",
    "conference": "call_objective__v",
}
# Veeva's priority picklist has an urgent and a normal value (Priority_vod__c = Urgent_vod in
# Veeva CRM); the run's top priority level is urgent, the exact 1..5 level travels in nba_priority__c.
VEEVA_URGENT, VEEVA_NORMAL = "urgent__v", "normal__v"
VEEVA_SUGGESTION_COLUMNS: tuple[str, ...] = (
    "suggestion_external_id__v",
    "account__v",
    "ownerid__v",
    "record_type_name__v",
    "title__v",
    "reason__v",
    "priority__v",
    "posted_date__v",
    "expiration_date__v",
    "planned_call_date__v",
    "display_dismiss__v",
    "display_mark_as_complete__v",
    "nba_priority__c",
    "nba_channel__c",
    "nba_content_id__c",
    "nba_expected_value__c",
    "nba_window_start_local__c",
    "nba_window_end_local__c",
    "nba_window_start_utc__c",
    "nba_window_end_utc__c",
    "nba_timezone__c",
    "nba_expiry_utc__c",
)
# suggestion_tag__v: one-to-many product and driver tags per suggestion (Vault CRM help); the
# driver is the suggested channel.
VEEVA_TAG_COLUMNS: tuple[str, ...] = ("suggestion__vr.suggestion_external_id__v", "record_type_name__v", "product__v", "driver__v")

# --- Salesforce Life Sciences Cloud / Einstein Next Best Action ------------------------------
# Recommendation (Object Reference, API 45.0+): Name <= 80, Description <= 255, ActionReference
# (the flow run on acceptance), AcceptanceLabel / RejectionLabel <= 80, ExternalId <= 255,
# RecommendationScore (double). The account-level record is Life Sciences Cloud's
# TerritoryAcctRcmdAction (AccountId, ActionType, DueDate, Status, skip reason).
SF_TEXT_LIMITS: dict[str, int] = {"Name": 80, "Description": 255, "ActionReference": 255, "AcceptanceLabel": 80, "RejectionLabel": 80, "ExternalId": 255}
SF_RECOMMENDATION_COLUMNS: tuple[str, ...] = (
    "Name",
    "Description",
    "ActionReference",
    "AcceptanceLabel",
    "RejectionLabel",
    "ExternalId",
    "RecommendationScore",
    "NBA_Account_Id__c",
    "NBA_Priority__c",
    "NBA_Channel__c",
    "NBA_Content_Id__c",
    "NBA_Window_Start_Local__c",
    "NBA_Window_End_Local__c",
    "NBA_Window_Start_UTC__c",
    "NBA_Window_End_UTC__c",
    "NBA_Timezone__c",
    "NBA_Expiry_UTC__c",
)
SF_ACTION_COLUMNS: tuple[str, ...] = ("Name", "AccountId", "ActionType", "DueDate", "NBA_Suggestion_Id__c")
# Life Sciences Next Best Action creates visits and sends emails from the component (Salesforce
# help, "Set Up Life Sciences Next Best Action"); other channels are named as they are.
SF_ACTION_TYPES: dict[str, str] = {
    "visit": "Visit",
    "department_meeting": "Visit",
    "phone": "Visit",
    "email": "Email",
    "wechat_push": "WeChat",
    "wecom_1to1": "WeCom",
    "webinar": "Webinar",
    "conference": "Conference",
}
# Flows an admin builds for each action (ActionReference names a flow): placeholders to rename.
SF_FLOWS: dict[str, str] = {ch: f"NBA_{kind}" for ch, kind in SF_ACTION_TYPES.items()}
SF_ACCEPT: dict[str, str] = {"Visit": "Schedule visit", "Email": "Send email"}

# Names not confirmed in the vendors' published documentation (rename-rule guesses or
# placeholders): check them against the org. Everything else in the column tuples was seen there.
UNVERIFIED: dict[str, str] = {
    "suggestion_external_id__v": "Veeva CRM's Suggestion_External_Id_vod__c under the Vault CRM rename rule (X_vod__c -> x__v)",
    "planned_call_date__v": "Veeva CRM's Planned_Call_Date_vod__c under the Vault CRM rename rule",
    "email__v": "Veeva CRM's Email_vod record type; Vault CRM help lists call__v, call_objective__v and insight__v",
    "urgent__v / normal__v": "Veeva CRM's Urgent_vod priority under the rename rule; the normal value's name is assumed",
    "driver__v / product__v": "Veeva CRM's Driver_vod__c / Product_vod__c on Suggestion_Tag_vod__c under the rename rule",
    "ActionType values": "TerritoryAcctRcmdAction.ActionType is a picklist; Visit and Email follow the help text, the rest are placeholders",
    "ActionReference flows": "NBA_<action> flow names are placeholders for the org's own flows",
}


@dataclass(frozen=True)
class ExpiryPolicy:
    """When a suggestion leaves the rep's list: its window end plus grace, capped by the TTL and the content's approval."""

    ttl_days: float
    grace_days: float


def spread_priorities(value: np.ndarray, rank: np.ndarray | None = None, levels: int = PRIORITY_LEVELS) -> np.ndarray:
    """Priority 1 (do first) .. ``levels`` by quantile of expected value within the run: each level holds ~1/levels of the rows.

    Ties (equal values are common: the rules give few distinct probabilities) are broken by the
    suggestion's rank within its HCP, then by input order, so the levels stay equal in size
    rather than one tied value filling a level. Missing values sort last.
    """
    v = np.asarray(value, dtype=np.float64)
    n = len(v)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    r = np.zeros(n) if rank is None else np.asarray(rank, dtype=np.float64)
    key = np.where(np.isfinite(v), -v, np.inf)
    order = np.lexsort((np.arange(n), r, key))  # last key sorts first
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    return (pos * levels // n + 1).astype(np.int64)


def policy_expiry(window_end: pd.Series, as_of: datetime, policy: ExpiryPolicy, approved_until: pd.Series | None = None) -> pd.Series:
    """UTC expiry per suggestion: min(window end + grace, as_of + TTL, the content's approval end where it has content)."""
    end = pd.to_datetime(window_end, utc=True)
    cap = pd.Timestamp(as_of).tz_convert("UTC") + timedelta(days=policy.ttl_days)
    out = (end + timedelta(days=policy.grace_days)).where(lambda s: s < cap, cap)
    if approved_until is not None:
        until = pd.to_datetime(approved_until, utc=True)
        out = out.where(until.isna() | (out <= until), until)
    return out


def local_iso(utc: pd.Series, timezones: pd.Series) -> np.ndarray:
    """ISO 8601 local times with offset, per row's IANA zone (one conversion per distinct zone)."""
    ts = pd.to_datetime(utc, utc=True)
    out = np.empty(len(ts), dtype=object)
    zones = np.asarray(timezones, dtype=object)
    for zone in pd.unique(zones):
        m = zones == zone
        out[m] = [t.isoformat() for t in ts[m].dt.tz_convert(str(zone))]
    return out


def _utc_iso(ts: pd.Series) -> np.ndarray:
    return np.asarray([t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in pd.to_datetime(ts, utc=True)], dtype=object)


def _date(iso: np.ndarray) -> np.ndarray:
    return np.asarray([s[:10] for s in iso], dtype=object)


def _clip(text: pd.Series, limit: int) -> pd.Series:
    """Text cut to ``limit`` characters with an ellipsis, so a CRM with a length limit never rejects the row."""
    s = text.fillna("").astype(str)
    return s.where(s.str.len() <= limit, s.str.slice(0, limit - 1) + "…")


def finish(table: pd.DataFrame, as_of: datetime, policy: ExpiryPolicy, approved_until: pd.Series | None = None) -> pd.DataFrame:
    """The suggestion table with priority (1..5 by expected value), policy expiry and local window/expiry times."""
    t = table.reset_index(drop=True).copy()
    t["priority"] = spread_priorities(t["expected_value"].to_numpy(), t["rank"].to_numpy())
    t["expiry_utc"] = policy_expiry(t["window_end_utc"], as_of, policy, None if approved_until is None else approved_until.reset_index(drop=True))
    for c in ("window_start", "window_end", "expiry"):
        t[f"{c}_local"] = local_iso(t[f"{c}_utc"], t["timezone"])
    return t


def generic_tables(t: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The generic file: one flat record per suggestion, times local (with offset) and UTC, and the zone."""
    return {"": t[list(GENERIC_COLUMNS)].copy()}


def veeva_tables(t: pd.DataFrame, as_of: datetime) -> dict[str, pd.DataFrame]:
    """Vault CRM ``suggestion__v`` rows and their ``suggestion_tag__v`` product and driver tags."""
    start_local, end_local = t["window_start_local"].to_numpy(), t["window_end_local"].to_numpy()
    record_type = t["channel"].map(VEEVA_RECORD_TYPES)
    posted = pd.Timestamp(as_of).tz_convert("UTC")
    suggestions = pd.DataFrame(
        {
            "suggestion_external_id__v": t["suggestion_id"],
            "account__v": t["hcp_id"],
            "ownerid__v": t["rep_id"],
            "record_type_name__v": record_type,
            "title__v": t["title"],
            "reason__v": t["reason"],
            "priority__v": np.where(t["priority"] == 1, VEEVA_URGENT, VEEVA_NORMAL),
            # Vault date fields: the HCP's local calendar dates (the day the rep sees).
            "posted_date__v": [posted.tz_convert(str(z)).date().isoformat() for z in t["timezone"]],
            "expiration_date__v": _date(t["expiry_local"].to_numpy()),
            "planned_call_date__v": np.where(record_type == "call__v", _date(start_local), ""),
            "display_dismiss__v": "true",
            "display_mark_as_complete__v": "true",
            "nba_priority__c": t["priority"],
            "nba_channel__c": t["channel"],
            "nba_content_id__c": t["content_id"].fillna(""),
            "nba_expected_value__c": t["expected_value"].round(4),
            "nba_window_start_local__c": start_local,
            "nba_window_end_local__c": end_local,
            "nba_window_start_utc__c": _utc_iso(t["window_start_utc"]),
            "nba_window_end_utc__c": _utc_iso(t["window_end_utc"]),
            "nba_timezone__c": t["timezone"],
            "nba_expiry_utc__c": _utc_iso(t["expiry_utc"]),
        }
    )[list(VEEVA_SUGGESTION_COLUMNS)]
    has_product = t["product_id"].notna() & (t["product_id"].astype(str) != "")
    product_tags = pd.DataFrame(
        {
            "suggestion__vr.suggestion_external_id__v": t["suggestion_id"][has_product],
            "record_type_name__v": "product__v",
            "product__v": t["product_id"][has_product],
            "driver__v": "",
        }
    )
    driver_tags = pd.DataFrame(
        {"suggestion__vr.suggestion_external_id__v": t["suggestion_id"], "record_type_name__v": "driver__v", "product__v": "", "driver__v": t["channel"]}
    )
    tags = pd.concat([product_tags, driver_tags], ignore_index=True)[list(VEEVA_TAG_COLUMNS)]
    return {"": suggestions, "suggestion_tag__v": tags}


def salesforce_tables(t: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Einstein Next Best Action ``Recommendation`` rows and Life Sciences Cloud ``TerritoryAcctRcmdAction`` rows."""
    action = t["channel"].map(SF_ACTION_TYPES)
    recommendations = pd.DataFrame(
        {
            "Name": _clip(t["title"], SF_TEXT_LIMITS["Name"]),
            "Description": _clip(t["reason"], SF_TEXT_LIMITS["Description"]),
            "ActionReference": t["channel"].map(SF_FLOWS),
            "AcceptanceLabel": action.map(SF_ACCEPT).fillna("Done"),
            "RejectionLabel": "Skip",
            "ExternalId": t["suggestion_id"],
            # RecommendationScore is a double with two decimals: the expected value, rounded.
            "RecommendationScore": t["expected_value"].round(2),
            "NBA_Account_Id__c": t["hcp_id"],
            "NBA_Priority__c": t["priority"],
            "NBA_Channel__c": t["channel"],
            "NBA_Content_Id__c": t["content_id"].fillna(""),
            "NBA_Window_Start_Local__c": t["window_start_local"],
            "NBA_Window_End_Local__c": t["window_end_local"],
            "NBA_Window_Start_UTC__c": _utc_iso(t["window_start_utc"]),
            "NBA_Window_End_UTC__c": _utc_iso(t["window_end_utc"]),
            "NBA_Timezone__c": t["timezone"],
            "NBA_Expiry_UTC__c": _utc_iso(t["expiry_utc"]),
        }
    )[list(SF_RECOMMENDATION_COLUMNS)]
    actions = pd.DataFrame(
        {
            "Name": _clip(t["title"], SF_TEXT_LIMITS["Name"]),
            "AccountId": t["hcp_id"],
            "ActionType": action,
            # Due by the end of the suggested window, on the HCP's calendar.
            "DueDate": _date(t["window_end_local"].to_numpy()),
            "NBA_Suggestion_Id__c": t["suggestion_id"],
        }
    )[list(SF_ACTION_COLUMNS)]
    return {"": recommendations, "TerritoryAcctRcmdAction": actions}


def export_tables(fmt: str, table: pd.DataFrame, as_of: datetime, policy: ExpiryPolicy, approved_until: pd.Series | None = None) -> dict[str, Any]:
    """``{suffix: frame}`` of ``fmt`` ('' is the main file) from the run's suggestion table."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    t = finish(table, as_of, policy, approved_until)
    if fmt == "veeva":
        return veeva_tables(t, as_of)
    if fmt == "salesforce":
        return salesforce_tables(t)
    return generic_tables(t)

"""CRM feedback exports (Vault suggestion_feedback__v, LSC TerritoryAcctRcmdAction) mapped onto /feedback outcomes and reason codes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from contract.crm_feedback import CrmFeedbackError, load_reason_map, normalise_label, parse_feedback
from contract.schema import FEEDBACK_DECISIONS, FEEDBACK_REASONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "crm"
VEEVA = FIXTURES / "veeva_suggestion_feedback__v.csv"
SALESFORCE = FIXTURES / "salesforce_TerritoryAcctRcmdAction_export.csv"


def edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    """A copy of ``source`` with one value changed (the first occurrence)."""
    text = source.read_text()
    assert old in text
    out = tmp_path / source.name
    out.write_text(text.replace(old, new, 1))
    return out


def test_vault_feedback_maps_object_types_and_dismiss_reasons() -> None:
    parsed = parse_feedback(VEEVA, "veeva")
    by_sid = {i["suggestion_id"]: i for i in parsed.items}
    assert [by_sid[s]["outcome"] for s in ("NBA-S0001", "NBA-S0002", "NBA-S0003", "NBA-S0004")] == ["accepted", "dismissed", "done", "dismissed"]
    # "1. Already planned interaction with customer." (numbered, full stop) is a known label.
    assert by_sid["NBA-S0002"]["reason"] == "already_contacted" and by_sid["NBA-S0004"]["reason"] == "wrong_time"
    assert by_sid["NBA-S0001"]["reason"] is None
    assert by_sid["NBA-S0002"]["feedback_id"] == "veeva:V7X000000001002"
    assert by_sid["NBA-S0002"]["ts"] == datetime(2026, 5, 2, 9, 40, 12, tzinfo=UTC)
    assert parsed.lines == [2, 3, 4, 5]
    assert all(i["outcome"] in FEEDBACK_DECISIONS and (i["reason"] is None or i["reason"] in FEEDBACK_REASONS) for i in parsed.items)


def test_lsc_skip_reasons_and_statuses() -> None:
    parsed = parse_feedback(SALESFORCE, "salesforce")
    assert parsed.skipped_open == 1  # the Upcoming recommendation is no feedback yet
    got = {i["suggestion_id"]: (i["outcome"], i["reason"]) for i in parsed.items}
    assert got == {"NBA-S0001": ("done", None), "NBA-S0002": ("dismissed", "hcp_unavailable"), "NBA-S0004": ("dismissed", "wrong_channel")}
    assert {i["feedback_id"] for i in parsed.items} == {"salesforce:0Xa5g00000ABCD1EAA", "salesforce:0Xa5g00000ABCD2EAA", "salesforce:0Xa5g00000ABCD4EAA"}


def test_an_unmapped_reason_names_file_line_field_and_value(tmp_path: Path) -> None:
    path = edited(tmp_path, SALESFORCE, "HCP not reachable", "Met at congress")
    with pytest.raises(CrmFeedbackError) as err:
        parse_feedback(path, "salesforce")
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "field SkipReason" in msg and "'Met at congress'" in msg and "--reason-map" in msg


def test_a_reason_map_extends_the_labels(tmp_path: Path) -> None:
    path = edited(tmp_path, SALESFORCE, "HCP not reachable", "Met at congress")
    mapping = tmp_path / "reasons.yaml"
    mapping.write_text("Met at congress: already_contacted\n")
    parsed = parse_feedback(path, "salesforce", reasons=load_reason_map(mapping))
    assert {i["reason"] for i in parsed.items} == {None, "already_contacted", "wrong_channel"}
    mapping.write_text("Met at congress: busy\n")
    with pytest.raises(CrmFeedbackError, match="'busy' is not a reason code"):
        load_reason_map(mapping)


@pytest.mark.parametrize(
    "source, path, old, new, field",
    [
        ("veeva", VEEVA, "mark_as_complete__v", "snooze__v", "object_type__vr.api_name__v"),
        ("salesforce", SALESFORCE, "Skipped", "Rejected", "Status"),
        ("veeva", VEEVA, "2026-05-03T02:05:00.000Z", "2026-05-03 02:05:00", "created_date__v"),
        ("veeva", VEEVA, "NBA-S0003", "NBA S0003", "suggestion__vr.suggestion_external_id__v"),
        ("veeva", VEEVA, "V7X000000001003", "V7X000000001001", "id"),
    ],
)
def test_bad_values_are_refused_with_their_place(tmp_path: Path, source: str, path: Path, old: str, new: str, field: str) -> None:
    bad = edited(tmp_path, path, old, new)
    with pytest.raises(CrmFeedbackError) as err:
        parse_feedback(bad, source)
    assert f"field {field}" in str(err.value) and " line " in str(err.value)


def test_a_file_without_the_export_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feedback.csv"
    path.write_text("id,suggestion__v,created_date__v\nV1,V2,2026-05-02T08:15:00Z\n")
    with pytest.raises(CrmFeedbackError, match="missing column"):
        parse_feedback(path, "veeva")
    with pytest.raises(CrmFeedbackError, match="--source"):
        parse_feedback(VEEVA, "sap")


def test_reason_labels_are_matched_loosely() -> None:
    assert normalise_label(" 2)  Bad   Timing. ") == "bad timing"
    assert normalise_label("wrong_time") == "wrong_time"

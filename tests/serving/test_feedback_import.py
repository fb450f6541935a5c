"""CRM feedback files posted through the /feedback path: checked as a whole first, idempotent by CRM record id, one push per HCP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contract.crm_feedback import CrmFeedbackError, parse_feedback
from serving.audit import AuditTrail
from serving.feedback_import import import_feedback

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "crm"
T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def served(i: int, hcp: str) -> dict:
    return {
        "suggestion_id": f"NBA-S{i:04d}",
        "request_id": "nightly",
        "hcp_id": hcp,
        "rep_id": "R01",
        "as_of": T0,
        "rank": 1,
        "channel": "visit",
        "content_id": None,
        "window_start": T0 + timedelta(days=1),
        "window_end": T0 + timedelta(days=1, hours=4),
        "expected_response": 0.4,
        "propensity": 0.95,
        "policy": "model",
        "model_version": "nba/3",
        "features": {},
        "rules": [],
        "reasons": ["model: likely"],
    }


@pytest.fixture()
def trail(tmp_path: Path):
    t = AuditTrail(f"sqlite:///{tmp_path / 'audit.db'}")
    t.record_suggestions([served(1, "H1"), served(2, "H1"), served(3, "H2"), served(4, "H2")])
    yield t
    t.close()


@pytest.mark.parametrize(
    "source, name, created", [("veeva", "veeva_suggestion_feedback__v.csv", 4), ("salesforce", "salesforce_TerritoryAcctRcmdAction_export.csv", 3)]
)
def test_import_stores_once_and_pushes_each_hcp_once(trail: AuditTrail, source: str, name: str, created: int) -> None:
    pushed: list[str] = []
    parsed = parse_feedback(FIXTURES / name, source)
    first = import_feedback(trail, parsed, push=pushed.append)
    assert first["created"] == created and first["already_stored"] == 0 and first["push_errors"] == []
    assert sorted(pushed) == sorted(set(pushed)) == ["H1", "H2"]
    stored = trail.read("feedback")
    assert len(stored) == created and set(stored["hcp_id"]) == {"H1", "H2"} and set(stored["rep_id"]) == {"R01"}
    assert stored["feedback_id"].str.startswith(f"{source}:").all() and set(stored["caller"]) == {f"crm-import:{source}"}
    # The same export again (the CRM re-sends everything): nothing new, nothing pushed.
    pushed.clear()
    again = import_feedback(trail, parse_feedback(FIXTURES / name, source), push=pushed.append)
    assert again["created"] == 0 and again["already_stored"] == created and pushed == []
    assert len(trail.read("feedback")) == created


def test_a_bad_row_leaves_nothing_written(trail: AuditTrail, tmp_path: Path) -> None:
    text = (FIXTURES / "veeva_suggestion_feedback__v.csv").read_text().replace("NBA-S0004", "NBA-S9999")
    path = tmp_path / "feedback.csv"
    path.write_text(text)
    with pytest.raises(CrmFeedbackError, match=r"line 5: suggestion 'NBA-S9999' was never served"):
        import_feedback(trail, parse_feedback(path, "veeva"), push=None)
    assert len(trail.read("feedback")) == 0  # the three good rows before it were not stored either


def test_a_changed_record_is_refused_not_overwritten(trail: AuditTrail, tmp_path: Path) -> None:
    import_feedback(trail, parse_feedback(FIXTURES / "veeva_suggestion_feedback__v.csv", "veeva"))
    path = tmp_path / "feedback.csv"
    path.write_text((FIXTURES / "veeva_suggestion_feedback__v.csv").read_text().replace("Bad timing", "No time"))
    with pytest.raises(CrmFeedbackError, match=r"line 5: feedback 'veeva:V7X000000001004' is already stored with a different reason"):
        import_feedback(trail, parse_feedback(path, "veeva"))
    assert set(trail.read("feedback")["reason"].dropna()) == {"already_contacted", "wrong_time"}


def test_dry_run_writes_nothing_and_push_failures_do_not_lose_feedback(trail: AuditTrail) -> None:
    parsed = parse_feedback(FIXTURES / "veeva_suggestion_feedback__v.csv", "veeva")
    dry = import_feedback(trail, parsed, dry_run=True)
    assert dry["created"] == 0 and dry["outcomes"] == {"accepted": 1, "dismissed": 2, "done": 1} and len(trail.read("feedback")) == 0

    def down(hcp: str) -> None:
        raise ConnectionError("online store down")

    res = import_feedback(trail, parsed, push=down)
    assert res["created"] == 4 and res["pushed_hcps"] == 0 and len(res["push_errors"]) == 2 and len(trail.read("feedback")) == 4


def test_cli_imports_a_file_and_names_a_bad_row(trail: AuditTrail, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from nba.cli import app

    runner = CliRunner()
    args = ["feedback", "import", "--source", "veeva", "--set", f"audit_url={trail.url}", "--no-push"]
    ok = runner.invoke(app, [*args, str(FIXTURES / "veeva_suggestion_feedback__v.csv")])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.strip().splitlines()[-1])["created"] == 4
    bad = tmp_path / "feedback.csv"
    bad.write_text((FIXTURES / "veeva_suggestion_feedback__v.csv").read_text().replace("Bad timing", "Met at congress"))
    res = runner.invoke(app, [*args, str(bad)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: {bad} line 5, field dismiss_reason__c: 'Met at congress'" in res.output


@pytest.mark.slow
def test_round_trip_vault_export_feedback_reaches_the_online_store(world, serving_cfg, tmp_path: Path) -> None:
    """Nightly Vault file -> the CRM's feedback export on its external ids -> `nba feedback import` -> online features."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from features import get_online_features
    from nba.cli import app
    from serving.batch import recommend_all
    from serving.engine import Recommender
    from serving.sandbox import AS_OF

    rec = Recommender.from_config(serving_cfg)
    try:
        hcps = world.hcp_ids[-2:]
        recommend_all(rec, tmp_path / "nightly.csv", k=1, as_of=AS_OF, hcp_ids=hcps, progress=False, fmt="veeva")
        before = get_online_features(rec.store, hcps).set_index("hcp_id")
    finally:
        rec.audit.close()
    vault = pd.read_csv(tmp_path / "nightly.csv", dtype=str).set_index("account__v")
    kinds = {hcps[0]: ("dismiss__v", "Bad timing"), hcps[1]: ("mark_as_complete__v", "")}
    rows = [
        f"V7X00000000{i},{vault.loc[h, 'suggestion_external_id__v']},{kinds[h][0]},{(AS_OF + timedelta(hours=3 + i)).strftime('%Y-%m-%dT%H:%M:%S.000Z')},"
        f"{kinds[h][1]}"
        for i, h in enumerate(hcps)
    ]
    export = tmp_path / "suggestion_feedback__v.csv"
    export.write_text("id,suggestion__vr.suggestion_external_id__v,object_type__vr.api_name__v,created_date__v,dismiss_reason__c\n" + "\n".join(rows) + "\n")
    res = CliRunner().invoke(
        app, ["feedback", "import", str(export), "--source", "veeva", "--config", str(world.serving_yaml), "--set", f"audit_url={serving_cfg.audit_url}"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["created"] == 2 and summary["pushed_hcps"] == 2, summary
    rec = Recommender.from_config(serving_cfg)
    try:
        after = get_online_features(rec.store, hcps).set_index("hcp_id")
        stored = rec.audit.read("feedback").set_index("hcp_id")
    finally:
        rec.audit.close()
    assert int(after.loc[hcps[0], "suggestions_dismissed_90d"]) == int(before.loc[hcps[0], "suggestions_dismissed_90d"]) + 1
    assert int(after.loc[hcps[1], "suggestions_done_90d"]) == int(before.loc[hcps[1], "suggestions_done_90d"]) + 1
    assert stored.loc[hcps[0], "reason"] == "wrong_time" and stored.loc[hcps[1], "outcome"] == "done"

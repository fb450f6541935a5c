"""`nba promote`: the rule on a table of evaluation tags, then the job and CLI against a real MLflow store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training import tracking as trk
from training.promotion import decide, evidence_of, promotion_decision

runner = CliRunner()


def _ope(low: float, gain: float, *, against: str = "logged", champion: str | None = None, verdict: str = "trusted", **extra: str) -> dict[str, str]:
    """Tags as `nba evaluate` writes them for an off-policy evaluation."""
    tags = {
        trk.OPE_ESTIMATOR_TAG: "dr",
        trk.OPE_VALUE_TAG: "0.5400",
        trk.OPE_CI_LOW_TAG: "0.41",
        trk.OPE_CI_HIGH_TAG: "0.68",
        trk.OPE_VERDICT_TAG: verdict,
        trk.OPE_VERDICT_REASON_TAG: "support 0.92 >= 0.80, ESS 310 >= 100",
        trk.OPE_SETTING_TAG: "data=ab12 test=2025-10-06..2025-12-01 estimator=dr n_boot=1000",
        trk.OPE_VS_LOGGED_TAG: repr(gain if against == "logged" else 0.02),
        trk.OPE_VS_LOGGED_CI_LOW_TAG: repr(low if against == "logged" else 0.01),
    }
    if champion is not None:
        tags.update({trk.OPE_VS_CHAMPION_TAG: repr(gain), trk.OPE_VS_CHAMPION_CI_LOW_TAG: repr(low), trk.OPE_CHAMPION_VERSION_TAG: champion})
    tags.update(extra)
    return tags


def _truth(value: float, setting: str | None = "data=ab start=end weeks=8") -> dict[str, str]:
    tags = {trk.POLICY_VALUE_TAG: repr(value)}
    if setting:
        tags[trk.POLICY_SETTING_TAG] = setting
    return tags


# (case, challenger tags, champion version, champion tags, same version, promoted, words the reason must hold)
CASES = [
    ("already champion", _truth(0.9), "3", _truth(0.1), True, False, ["already is the champion", "3"]),
    ("nothing evaluated", {}, None, None, False, False, ["nba evaluate"]),
    ("first model on truth", _truth(0.3), None, None, False, True, ["no champion yet", "0.3000"]),
    ("first model beats logged", _ope(0.012, 0.034), None, None, False, True, ["no champion yet", "logged policy", "+0.0340", "+0.0120"]),
    ("first model not above logged", _ope(-0.005, 0.02), None, None, False, False, ["logged policy", "-0.0050", "not above 0"]),
    (
        "first model untrusted",
        _ope(0.05, 0.08, verdict="untrusted", **{trk.OPE_VERDICT_REASON_TAG: "support 0.05 < 0.80"}),
        None,
        None,
        False,
        False,
        ["untrusted", "support 0.05 < 0.80"],
    ),
    ("first model without verdict", {k: v for k, v in _ope(0.05, 0.08).items() if k != trk.OPE_VERDICT_TAG}, None, None, False, False, [trk.OPE_VERDICT_TAG]),
    ("first model without bound", {trk.OPE_VALUE_TAG: "0.5", trk.OPE_VERDICT_TAG: "trusted"}, None, None, False, False, [trk.OPE_VS_LOGGED_CI_LOW_TAG]),
    ("truth higher wins", _truth(0.45), "1", _truth(0.40), False, True, ["0.4500 beats the champion's 0.4000"]),
    ("truth lower loses", _truth(0.35), "1", _truth(0.40), False, False, ["does not beat", "0.3500"]),
    ("truth tie keeps champion", _truth(0.40), "1", _truth(0.40), False, False, ["does not beat"]),
    ("truth champion untagged setting", _truth(0.45), "1", _truth(0.40, setting=None), False, True, ["beats"]),
    ("truth settings differ", _truth(0.9), "1", _truth(0.4, "data=ab start=beginning weeks=8"), False, False, ["not comparable", "start=beginning"]),
    (
        "settings differ, OPE decides",
        {**_truth(0.9), **_ope(0.01, 0.03, against="champion", champion="1")},
        "1",
        _truth(0.4, "data=ab start=beginning weeks=8"),
        False,
        True,
        ["champion", "+0.0100 > 0"],
    ),
    (
        "OPE beats champion",
        _ope(0.004, 0.021, against="champion", champion="2"),
        "2",
        _ope(0.01, 0.03),
        False,
        True,
        ["dr gain over the champion +0.0210", "lower bound +0.0040", "test=2025-10-06..2025-12-01"],
    ),
    (
        "OPE not above champion",
        _ope(-0.002, 0.015, against="champion", champion="2"),
        "2",
        _ope(0.01, 0.03),
        False,
        False,
        ["-0.0020", "not shown better", "champion version 2 stays"],
    ),
    (
        "OPE untrusted against champion",
        _ope(0.03, 0.05, against="champion", champion="2", verdict="untrusted"),
        "2",
        {},
        False,
        False,
        ["untrusted", "champion version 2 stays"],
    ),
    (
        "compared with another champion",
        _ope(0.03, 0.05, against="champion", champion="2"),
        "3",
        {},
        False,
        False,
        ["evaluate the challenger again: it was compared with version 2, the champion is 3"],
    ),
    (
        "evaluated before any champion",
        _ope(0.03, 0.05),
        "3",
        _truth(0.4),
        False,
        False,
        ["evaluate the challenger again: it was evaluated when there was no champion, the champion is 3"],
    ),
    ("truth challenger, champion without truth, no OPE", _truth(0.5), "1", _ope(0.01, 0.03), False, False, ["no off-policy comparison", "nba evaluate"]),
    ("garbage bound", _ope(0.03, 0.05, against="champion", champion="2", **{trk.OPE_VS_CHAMPION_CI_LOW_TAG: "abc"}), "2", {}, False, False, ["nan"]),
]


@pytest.mark.parametrize(("case", "challenger", "champion_version", "champion", "same", "promoted", "words"), CASES, ids=[c[0] for c in CASES])
def test_promotion_rule_table(case, challenger, champion_version, champion, same, promoted, words) -> None:
    ok, why = promotion_decision(challenger, champion_version, champion, same)
    assert ok is promoted, why
    assert "\n" not in why
    for word in words:
        assert word in why, (word, why)


def test_evidence_and_figures() -> None:
    assert evidence_of({}) is None and evidence_of(None) is None
    assert evidence_of(_truth(0.4)) == "truth" and evidence_of(_ope(0.01, 0.02)) == "ope"
    d = decide(_ope(0.004, 0.021, against="champion", champion="2"), "2", {}, False)
    assert d.evidence == "ope" and d.compared_with == "champion"
    assert d.challenger_value == pytest.approx(0.54) and d.champion_value == pytest.approx(0.54 - 0.021)
    assert d.gain == pytest.approx(0.021) and d.gain_ci_low == pytest.approx(0.004)
    t = decide(_truth(0.45), "1", _truth(0.40), False)
    assert t.evidence == "truth" and t.gain == pytest.approx(0.05) and t.champion_value == pytest.approx(0.40)


# --- promote_job and `nba promote` against a real local MLflow store ---------------------------------------------------

NAME = "nba-next-best-action"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """Settings pointing the CLI at a fresh SQLite MLflow store in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = ["--set", f"tracking.uri={uri}", "--set", f"tracking.artifact_location={tmp_path}/artifacts"]
    return sets, uri, tmp_path


def _version(uri: str, root, tags: dict[str, str]) -> str:
    """Register one more version (a real run as its source) as the challenger; return its number."""
    import mlflow
    from mlflow import MlflowClient

    from training.config import TrainingConfig

    cfg = TrainingConfig.model_validate({"tracking": {"uri": uri, "artifact_location": str(root / "artifacts")}})
    trk.setup(cfg.tracking)
    client = MlflowClient()
    try:
        client.get_registered_model(NAME)
    except Exception:
        client.create_registered_model(NAME)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_param("seed", 1)
    mv = client.create_model_version(NAME, source=str(root / "bundle"), run_id=run.info.run_id, tags=tags)
    client.set_registered_model_alias(NAME, trk.CHALLENGER, mv.version)
    return str(mv.version)


def _last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_promote_on_off_policy_evidence(store) -> None:
    from mlflow import MlflowClient

    sets, uri, root = store
    empty = runner.invoke(app, ["promote", *sets])
    assert empty.exit_code == 1 and empty.stdout == ""
    assert empty.stderr.strip().startswith("error: no MLflow store at") and len(empty.stderr.strip().splitlines()) == 1
    assert "Traceback" not in empty.output and not (root / "mlflow.db").exists()  # nothing created by a refusal

    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.search_experiments()  # the store exists now, but holds no model
    no_model = runner.invoke(app, ["promote", *sets])
    assert no_model.exit_code == 1 and no_model.stderr.strip().splitlines()[-1].startswith("error: no registered model 'nba-next-best-action'")

    v1 = _version(uri, root, {})
    unevaluated = runner.invoke(app, ["promote", *sets])
    assert unevaluated.exit_code == 1 and f"nba evaluate --version {v1}" in unevaluated.stderr
    assert len(unevaluated.stderr.strip().splitlines()) == 1 and "Traceback" not in unevaluated.output

    client = MlflowClient(tracking_uri=uri)
    trk.set_evaluation_tags(client, NAME, v1, _ope(0.012, 0.034))
    first = runner.invoke(app, ["promote", *sets])
    assert first.exit_code == 0, first.output
    res = _last_json(first)
    assert res["promoted"] and res["evidence"] == "ope" and res["champion_version"] == 1 and res["previous_champion_version"] is None
    assert res["compared_with"] == "logged policy" and res["gain_ci_low"] == pytest.approx(0.012) and res["ope_estimator"] == "dr"
    assert str(client.get_model_version_by_alias(NAME, trk.CHAMPION).version) == v1
    again = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not again["promoted"] and "already is the champion" in again["reason"]

    v2 = _version(uri, root, _ope(-0.004, 0.01, against="champion", champion=v1))
    worse = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not worse["promoted"] and worse["champion_version"] == 1 and worse["previous_champion_policy_value"] == pytest.approx(0.54 - 0.01)
    assert str(client.get_model_version_by_alias(NAME, trk.CHAMPION).version) == v1

    trk.set_evaluation_tags(client, NAME, v2, _ope(0.006, 0.02, against="champion", champion="7"))
    stale = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not stale["promoted"] and f"compared with version 7, the champion is {v1}" in stale["reason"]

    trk.set_evaluation_tags(client, NAME, v2, _ope(0.006, 0.02, against="champion", champion=v1))
    better = runner.invoke(app, ["promote", *sets])
    assert better.exit_code == 0 and better.stderr.startswith("promoted: ")
    assert _last_json(better)["promoted"] and str(client.get_model_version_by_alias(NAME, trk.CHAMPION).version) == v2


def test_promote_on_truth_and_stale_tags_are_removed(store) -> None:
    from mlflow import MlflowClient

    sets, uri, root = store
    v1 = _version(uri, root, _truth(0.30))
    first = _last_json(runner.invoke(app, ["promote", *sets]))
    assert first["promoted"] and first["evidence"] == "truth" and first["policy_value_unit"] == "responses_per_hcp_week"
    v2 = _version(uri, root, {**_truth(0.25), **_ope(0.01, 0.03, against="champion", champion="9")})
    client = MlflowClient(tracking_uri=uri)
    worse = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not worse["promoted"] and worse["evidence"] == "truth" and worse["gain"] == pytest.approx(-0.05)

    # A new evaluation without a champion comparison must not leave the old one behind.
    trk.set_evaluation_tags(client, NAME, v2, {**_truth(0.35), trk.OPE_VALUE_TAG: 0.5})
    tags = client.get_model_version(NAME, v2).tags
    assert trk.OPE_CHAMPION_VERSION_TAG not in tags and trk.OPE_VS_CHAMPION_CI_LOW_TAG not in tags and tags[trk.OPE_VALUE_TAG] == "0.5"
    better = _last_json(runner.invoke(app, ["promote", *sets]))
    assert better["promoted"] and better["champion_version"] == int(v2) and better["previous_champion_version"] == int(v1)

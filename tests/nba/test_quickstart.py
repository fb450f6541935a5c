"""`nba quickstart`'s parts that need no world: the workdir it rebuilds or refuses, the key file, the next steps and the results table."""

from __future__ import annotations

import json
import shlex
import stat

import pytest

from nba.errors import ExpectedError
from nba.quickstart import KEY_FILE, STAMP, api_key, next_steps, policy_shares, prepare_workdir, results_table, world_of

FIGURES = {
    "sim_weeks": 8,
    "sim_logged_responses_per_hcp_week": 0.20,
    "sim_oracle_responses_per_hcp_week": 0.40,
    "sim_model_responses_per_hcp_week": 0.29,
    "sim_model_share_of_oracle_gain": 0.45,
    "sim_rules_responses_per_hcp_week": 0.22,
    "sim_rules_share_of_oracle_gain": 0.10,
    "sim_popularity_responses_per_hcp_week": 0.23,
    "sim_popularity_share_of_oracle_gain": 0.15,
    "sim_aggregate_responses_per_hcp_week": 0.25,
    "sim_aggregate_share_of_oracle_gain": 0.25,
}


def _previous_run(workdir, world) -> None:
    for d in ("data", "features", "mlflow", "models", "configs"):
        (workdir / d).mkdir(parents=True)
        (workdir / d / "x").write_text("old")
    (workdir / "audit.db").write_text("old")
    (workdir / KEY_FILE).write_text("nba_oldkey\n")
    (workdir / STAMP).write_text(json.dumps({"world": world}))


def test_new_workdir_is_created(tmp_path) -> None:
    note = prepare_workdir(tmp_path / "qs", world_of(50, 56, 7, None))
    assert (tmp_path / "qs").is_dir() and note.startswith("new workdir")


def test_changed_world_rebuilds_and_says_what_changed(tmp_path) -> None:
    """A rerun with another seed must not serve the old features or champion: every artefact goes, the key stays."""
    _previous_run(tmp_path, world_of(50, 56, 7, None))
    note = prepare_workdir(tmp_path, world_of(50, 56, 8, "habituating"))
    assert "seed 7 -> 8" in note and "world default -> habituating" in note and "rebuilding" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]
    same = world_of(50, 56, 8, None)
    _previous_run(tmp_path / "again", same)
    assert "same world" in prepare_workdir(tmp_path / "again", same) and not (tmp_path / "again" / "mlflow").exists()


def test_foreign_folder_is_refused_untouched(tmp_path) -> None:
    (tmp_path / "thesis.tex").write_text("mine")
    (tmp_path / "data").mkdir()
    with pytest.raises(ExpectedError, match="did not write.*thesis.tex"):
        prepare_workdir(tmp_path, world_of(50, 56, 7, None))
    assert (tmp_path / "thesis.tex").read_text() == "mine" and (tmp_path / "data").is_dir()


def test_api_key_file_is_private_and_reused(tmp_path) -> None:
    key, path = api_key(tmp_path)
    assert key.startswith("nba_") and path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_key(tmp_path) == (key, path)  # printed curl commands keep working after a rerun


def test_next_steps_are_complete_commands(tmp_path) -> None:
    serving, experiments, key = tmp_path / "my dir" / "serving.yaml", tmp_path / "my dir" / "experiments.yaml", tmp_path / "my dir" / "api_key"
    text = next_steps(serving, experiments, key, 3012, ["H0000001", "H0000002"])
    commands = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 3
    serve, curl, ui = (shlex.split(c) for c in commands)
    assert serve[-3:] == ["serve", "--config", str(serving)] and ui[-3:] == ["ui", "--config", str(experiments)]
    assert "http://127.0.0.1:3012/recommend" in curl and f"X-API-Key: $(cat {shlex.quote(str(key))})" in curl
    assert json.loads(curl[curl.index("-d") + 1]) == {"hcp_ids": ["H0000001", "H0000002"], "k": 2}
    assert "<" not in text and "YOUR" not in text.upper()  # nothing to fill in


def test_results_table_shows_model_baselines_and_oracle() -> None:
    table = results_table(FIGURES)
    lines = table.splitlines()
    assert "8 weeks" in lines[0]
    for name, share in (("oracle", "1.000"), ("model", "0.450"), ("aggregate", "0.250"), ("popularity", "0.150"), ("rules", "0.100"), ("logged", "0.000")):
        row = next(line for line in lines if line.startswith(name))
        assert row.rstrip().endswith(share), row
    assert policy_shares(FIGURES)["model_share_of_oracle_gain"] == 0.45
    assert "no simulated policy values" in results_table({})
    # The policy as served (guardrails, window rules) beside the trained rule, when the evaluation measured it.
    served = results_table({**FIGURES, "served_model_share_of_oracle_gain": 0.38}).splitlines()
    assert next(line for line in served if line.startswith("model as served")).rstrip().endswith("0.380")
    assert not any(line.startswith("model as served") for line in lines)
    assert policy_shares({**FIGURES, "served_model_share_of_oracle_gain": 0.38})["served_share_of_oracle_gain"] == 0.38

"""`nba replay`: a changed serving config against the loaded one on the last weeks of a tiny real world's logs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from contract.schema import CHANNELS, LIFECYCLES

WEEKS = 4


@pytest.fixture(scope="module")
def full_yaml(world, tmp_path_factory):
    """The world's serving config written out in full, so a --set on one cap merges into the others."""
    from nba.configuration import load_config
    from serving.config import ServingConfig

    cfg = load_config(ServingConfig, "serving", world.serving_yaml)
    path = tmp_path_factory.mktemp("replay") / "serving.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def setup(world, full_yaml):
    """(config, champion, reference tables, the last weeks' logs) read once for the module."""
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.reference import ReferenceData
    from serving.replay import load_logs, load_model

    cfg = load_config(ServingConfig, "serving", full_yaml)
    model = load_model(cfg)
    reference = ReferenceData.load(world.data_dir)
    logs = load_logs(cfg, model.bundle, reference, weeks=WEEKS, data_dir=world.data_dir, training_set=world.root / "training_set.parquet")
    return cfg, model, reference, logs


def _with(cfg, **guardrails):
    return cfg.model_copy(update={"guardrails": cfg.guardrails.model_copy(update=guardrails)})


def _per_decision(suggestions: pd.DataFrame) -> pd.Series:
    return suggestions.groupby(["week", "hcp_id"]).size()


def test_tightening_caps_reduces_suggestions_per_rep_day_and_never_adds_any(setup) -> None:
    from serving.replay import replay_config

    cfg, model, reference, logs = setup
    caps = dict(cfg.guardrails.weekly_caps)
    some = _with(cfg, weekly_caps={**caps, "department_meeting": 0, "conference": 0})
    most = _with(cfg, weekly_caps={**caps, **{ch: 0 for ch in CHANNELS if ch not in ("visit", "phone")}})
    runs = [replay_config(c, model, reference, logs) for c in (cfg, some, most)]
    for looser, tighter in zip(runs, runs[1:]):
        a, b = _per_decision(looser.suggestions), _per_decision(tighter.suggestions)
        assert (b.reindex(a.index, fill_value=0) <= a).all() and b.index.isin(a.index).all()
        assert (tighter.per_rep <= looser.per_rep).all()
        assert tighter.figures["suggestions_per_rep_day_mean"] <= looser.figures["suggestions_per_rep_day_mean"]
    assert runs[2].figures["suggestions_per_rep_day_mean"] < runs[0].figures["suggestions_per_rep_day_mean"]
    assert set(runs[2].suggestions["channel"]) <= {"visit", "phone"}
    # The window's rep-days: the mean is every suggestion with a rep spread over reps x days.
    f = runs[0].figures
    assert f["suggestions_per_rep_day_mean"] == pytest.approx(runs[0].per_rep.sum() / (len(runs[0].per_rep) * 7 * WEEKS))
    assert f["suggestions_per_rep_day_p90"] >= f["suggestions_per_rep_day_mean"] > 0


def test_removing_a_channel_gives_it_no_share_and_blocks_its_logged_touches(setup) -> None:
    from serving.replay import replay_pair

    cfg, model, reference, logs = setup
    logged = logs.frame["label_channel"].to_numpy()
    counts = np.bincount(logged, minlength=len(CHANNELS))
    drop = CHANNELS[int(np.argmax(counts))]  # the most logged channel, so the count checked is not 0
    keep = [ch for ch in CHANNELS if ch != drop]
    fig, out = replay_pair(cfg, cfg, model, model, reference, logs, channels=keep, n_boot=50, progress=None)
    assert fig["baseline_channel_share_" + drop] > 0 and fig["changed_channel_share_" + drop] == 0.0
    assert drop not in set(out["changed"].suggestions["channel"])
    assert sum(fig[f"changed_channel_share_{ch}"] for ch in CHANNELS) == pytest.approx(1.0)
    on_it = int((logged == CHANNELS.index(drop)).sum())
    assert fig["changed_logged_touches_blocked_channels_count"] == on_it and fig["baseline_logged_touches_blocked_channels_count"] == 0
    assert fig["changed_logged_touches_blocked_count"] >= on_it
    assert fig["delta_logged_touches_blocked_channels_share"] == pytest.approx(on_it / len(logged))
    assert fig["changes"] == [f"channels={','.join(keep)}"]
    # The served policy never takes the removed channel: 0 probability on the logged touches on it.
    rows = out["changed"].rows
    assert rows and np.all(rows["pi_logged"][logged == CHANNELS.index(drop)] == 0.0)
    assert np.all(rows["chosen_channel"] != CHANNELS.index(drop))
    for side in ("baseline", "changed"):
        assert fig[f"{side}_ope_rows_count"] + fig[f"{side}_ope_rows_without_propensity_count"] == len(logged)
        assert fig[f"{side}_ope_dr_ci_low"] <= fig[f"{side}_ope_dr_value"] <= fig[f"{side}_ope_dr_ci_high"]
    assert fig["delta_ope_dr_value"] == pytest.approx(fig["changed_ope_dr_value"] - fig["baseline_ope_dr_value"])


def test_identical_configs_give_zero_deltas(setup) -> None:
    from serving.replay import replay_pair

    cfg, model, reference, logs = setup
    fig, _ = replay_pair(cfg, cfg.model_copy(), model, model, reference, logs, n_boot=50, progress=None)
    deltas = {k: v for k, v in fig.items() if k.startswith("delta_")}
    assert "delta_suggestions_per_rep_day_mean" in deltas and "delta_ope_dr_value" in deltas and "delta_ope_dr_ci_low" in deltas
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in deltas.values()), {k: v for k, v in deltas.items() if v}
    assert fig["changes"] == [] and fig["baseline_suggestions_count"] > 0


def _independent_violations(s: pd.DataFrame, logs, cfg, reference, channels: list[str]) -> list[str]:
    """Each suggestion re-checked from the raw feature columns, without serving's code: what went wrong, if anything."""
    g = cfg.guardrails
    frame = logs.frame.assign(week=pd.to_datetime(logs.frame["event_timestamp"], utc=True).dt.date.astype(str)).drop_duplicates(["week", "hcp_id"])
    row = frame.set_index(["week", "hcp_id"])
    bad = []
    for r in s.itertuples():
        f = row.loc[(r.week, r.hcp_id)]
        ch = r.channel
        approved = reference.approved_content(pd.Timestamp(r.week, tz="UTC").to_pydatetime(), cfg.content_valid_days)
        stage = LIFECYCLES[int(f["lifecycle"])]
        since = np.nanmin([float(f.get(f"days_since_last_{ch}", np.inf)), float(f.get(f"cr_{ch}_days_since", np.inf))])
        if ch not in channels:
            bad.append(f"{r.hcp_id} {ch}: channel not allowed")
        if not bool(f[f"consent_{ch}"]):
            bad.append(f"{r.hcp_id} {ch}: no consent")
        if f[f"{ch}_sent_7d"] >= g.weekly_caps.get(ch, 10**9):
            bad.append(f"{r.hcp_id} {ch}: cap")
        if g.lifecycle_weights.get(stage, {}).get(ch, 1.0) <= 0:
            bad.append(f"{r.hcp_id} {ch}: lifecycle {stage}")
        for rule in g.window_rules:
            if rule.scope == "channel" and rule.channel == ch and rule.max == 1 and since < rule.days:
                bad.append(f"{r.hcp_id} {ch}: {rule.label()} ({since:.0f} days)")
        if r.content_id is not None and not pd.isna(r.content_id):
            if r.content_id not in approved:
                bad.append(f"{r.hcp_id} {ch}: {r.content_id} not approved")
            items = dict(zip(list(f["item_hist_content_id"]), list(f["item_hist_days_since_delivered"])))
            for rule in g.window_rules:
                if rule.scope == "item" and items.get(r.content_id, np.inf) < rule.days:
                    bad.append(f"{r.hcp_id} {ch}: {r.content_id} delivered {items[r.content_id]:.0f} days ago, {rule.label()}")
    return bad


def test_suggestions_never_break_the_changed_rules_checked_independently(setup) -> None:
    from serving.config import WindowRuleConfig
    from serving.replay import decision_state, replay_config, suggestion_rules

    cfg, model, reference, logs = setup
    strict = _with(
        cfg,
        weekly_caps={**cfg.guardrails.weekly_caps, "wecom_1to1": 1, "visit": 1},
        lifecycle_weights={stage: {"webinar": 0.0, "email": 0.5} for stage in LIFECYCLES},
        window_rules=[
            WindowRuleConfig(channel="visit", days=21, max=1),
            WindowRuleConfig(channel="phone", days=14, max=1),
            WindowRuleConfig(scope="item", days=90, max=1),
        ],
    )
    channels = [ch for ch in CHANNELS if ch != "conference"]
    out = replay_config(strict, model, reference, logs, channels=channels)
    s = out.suggestions
    assert len(s) and out.figures["suggestion_violations_count"] == 0
    assert not set(s["channel"]) & {"webinar", "conference"}
    assert _independent_violations(s, logs, strict, reference, channels) == []
    # The checker can fail: the same suggestions moved onto channels the rules block are caught.
    week = s["week"].iloc[0]
    sw = s[s["week"] == week].reset_index(drop=True)
    feats = logs.frame[pd.to_datetime(logs.frame["event_timestamp"], utc=True).dt.date.astype(str) == week].drop_duplicates("hcp_id").reset_index(drop=True)
    policy = strict.guardrails.policy()
    approved = reference.approved_content(pd.Timestamp(week, tz="UTC").to_pydatetime(), strict.content_valid_days)
    state = decision_state(feats, policy, reference, approved)
    row_of = pd.Index(feats["hcp_id"].astype(str)).get_indexer(sw["hcp_id"].astype(str))
    ok_channels = np.isin(np.asarray(CHANNELS, dtype=object), channels)
    assert (suggestion_rules(state, sw, row_of, set(approved), policy, ok_channels) == "").all()
    moved = sw.assign(channel="webinar", content_id=None)
    caught = suggestion_rules(state, moved, row_of, set(approved), policy, ok_channels)
    assert (caught != "").all() and set(caught) <= {"consent", "lifecycle", "content"}
    assert (suggestion_rules(state, sw.assign(channel="conference"), row_of, set(approved), policy, ok_channels) != "").all()


def test_logged_touches_see_the_same_weeks_earlier_touches() -> None:
    from serving.replay import earlier_in_week

    day = 86_400 * 10**9
    hcp = np.array(["a", "a", "a", "b", "a"], dtype=object)
    week = np.array([0, 0, 0, 0, 7 * day])
    ts = np.array([3 * day, 1 * day, 2 * day, 1 * day, 8 * day])
    ch = np.array([0, 0, 1, 0, 0])
    counts, gap = earlier_in_week(hcp, week, ts, ch)
    assert counts[:, 0].tolist() == [1, 0, 1, 0, 0] and counts[:, 1].tolist() == [1, 0, 0, 0, 0]
    assert gap[0, 0] == 2.0 and np.isinf(gap[1, 0]) and gap[0, 1] == 1.0 and np.isinf(gap[4, 0]) and np.isinf(gap[3, 0])


def test_cli_prints_a_table_and_one_json_line_and_fails_in_one_line(world, full_yaml) -> None:
    from typer.testing import CliRunner

    from nba.cli import app

    runner = CliRunner()
    res = runner.invoke(
        app,
        ["replay", "--config", str(full_yaml), "--set", "guardrails.weekly_caps.visit=0", "--weeks", "3", "--n-boot", "50", "--data-dir", str(world.data_dir)],
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert any(line.startswith("suggestions per rep per day, mean") for line in lines[:-1])
    assert figures["weeks_count"] == 3 and figures["changes"] == ["guardrails.weekly_caps.visit=0"]
    assert figures["changed_channel_share_visit"] == 0.0 < figures["baseline_channel_share_visit"]
    for key in (
        "baseline_suggestions_per_rep_day_mean",
        "changed_ope_dr_value",
        "delta_ope_dr_value",
        "changed_logged_touches_blocked_share",
        "changed_suggestion_violations_count",
        "baseline_ope_verdict",
    ):
        assert key in figures
    assert figures["changed_suggestion_violations_count"] == 0 and figures["missing_rule_columns"] == []
    assert figures["changed_logged_touches_blocked_frequency_count"] >= figures["baseline_logged_touches_blocked_frequency_count"]

    bad = runner.invoke(app, ["replay", "--config", str(full_yaml), "--set", "guardrails.no_such_key=1"])
    assert bad.exit_code == 2 and "no_such_key" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.output
    missing = runner.invoke(app, ["replay", "--config", str(full_yaml), "--version", "999"])
    assert missing.exit_code == 1 and "999" in missing.stderr and "Traceback" not in missing.output
    assert len([line for line in missing.stderr.splitlines() if line.startswith("error:")]) == 1

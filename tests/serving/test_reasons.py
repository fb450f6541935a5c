"""What a rep reads on served suggestions and plans: the suggested channel only, no holdout or exploration, a locale.

Fast checks run the rules-only engine over random HCP states; the tiny world's champion (the
session ``world`` fixture) adds model, exploration and holdout suggestions and the audit trail.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS, LIFECYCLES
from serving import messages as m

AS_OF = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # Monday 08:00 in Shanghai
ITEMS = [f"C{i:02d}" for i in range(10)]
# Words that would tell a rep the suggestion is part of an experiment.
EXPERIMENT_WORDS = {
    "en": re.compile(r"holdout|hold-out|explor|random|control group|experiment|measure", re.I),
    "zh-CN": re.compile(r"对照|探索|随机|实验|留出"),
}


def _reference(n: int):
    from serving.reference import ReferenceData

    hcps = pd.DataFrame(
        {
            "hcp_id": [f"h{i}" for i in range(n)],
            "rep_id": "r1",
            "region": "east",
            "timezone": "Asia/Shanghai",
            "main_product_id": "P1",
            "segment": ["A", "C"] * (n // 2) + ["A"] * (n % 2),
            "lifecycle": "growth",
        }
    ).set_index("hcp_id")
    reps = pd.DataFrame({"rep_id": ["r1"], "visit_capacity_per_day": [3], "message_capacity_per_day": [5]}).set_index("rep_id")
    content = pd.DataFrame(
        {
            "content_id": ITEMS,
            "product_id": "P1",
            "topic": ["guideline", "clinical_data", "case_study", "disease_info", "brand_image"] * 2,
            "approved_from": AS_OF - timedelta(days=100),
            "approved_until": AS_OF + timedelta(days=365),
        }
    ).set_index("content_id")
    return ReferenceData(hcps, reps, content)


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Online features of ``n`` HCPs in random states: every rule of the rule policy fires, guardrails block often."""
    cols: dict = {"hcp_id": [f"h{i}" for i in range(n)]}
    for ch in CHANNELS:
        for w in ("7d", "30d", "90d"):
            sent = rng.integers(0, 4, n)
            cols[f"{ch}_sent_{w}"] = sent
            cols[f"{ch}_opened_{w}"] = rng.integers(0, sent + 1)
            cols[f"{ch}_forwarded_{w}"] = (rng.random(n) < 0.1).astype(np.int64)
        cols[f"consent_{ch}"] = rng.random(n) < 0.6
        cols[f"days_since_last_{ch}"] = rng.choice([1.0, 10.0, 25.0, 45.0, 365.0], n)
    cols["favourited_30d"] = (rng.random(n) < 0.3).astype(np.int64)
    cols["wecom_1to1_replied_30d"] = (rng.random(n) < 0.3).astype(np.int64)
    cols["consecutive_unopened_pushes"] = rng.choice([0, 1, 2, 4], n)
    cols["lifecycle"] = rng.integers(0, len(LIFECYCLES), n)
    cols["potential_boxes_month"] = rng.choice([0.0, 1.0, 35.0], n)
    lengths = rng.integers(0, 9, n)
    cols["seq_len"] = lengths
    cols["seq_channel"] = [rng.integers(0, len(CHANNELS), k) for k in lengths]
    cols["seq_content_id"] = [rng.choice(ITEMS, k).astype(object) for k in lengths]
    cols["seq_response"] = [rng.integers(0, 4, k) for k in lengths]
    cols["seq_gap_days"] = [rng.uniform(0, 15, k).astype(np.float32) for k in lengths]
    cols["seq_weekday"] = [rng.integers(0, 7, k) for k in lengths]
    cols["seq_daypart"] = [rng.integers(0, 4, k) for k in lengths]
    cols["days_since_last_touch"] = rng.uniform(0, 10, n).astype(np.float32)
    return pd.DataFrame(cols)


def _engine(n: int, **update):
    from serving.config import ServingConfig
    from serving.engine import Recommender

    cfg = ServingConfig(require_model=False, audit_url="sqlite:///:memory:")
    guard = cfg.guardrails.model_copy(update={"lifecycle_weights": {"post_vbp": {"conference": 0.0}, "launch": {"email": 0.0}}})
    cfg = cfg.model_copy(update={"guardrails": guard, "exploration": cfg.exploration.model_copy(update={"holdout_share": 0.5}), **update})
    return Recommender(cfg, reference=_reference(n))


def other_channel_named(channel: str, reasons: list[str], locale: str) -> list[str]:
    """The other channels a suggestion's reasons name (by the locale's names or by code)."""
    text = " ".join(reasons)
    named = []
    for other in CHANNELS:
        if other == channel:
            continue
        name = m.CHANNEL_NAMES[locale][other]
        hit = re.search(rf"\b{re.escape(name)}\b", text, re.I) if locale == "en" else name in text
        if hit or other in text:
            named.append(other)
    return named


def check_served(frame: pd.DataFrame, locale: str, *, with_features: bool = True) -> None:
    """Every suggestion's reasons: about its own channel, no experiment status, no percentages."""
    assert len(frame)
    for ch, rs, pol in zip(frame["channel"], frame["reasons"], frame["policy"]):
        assert rs, (ch, pol)
        assert other_channel_named(ch, rs, locale) == [], (ch, pol, rs)
        assert not any(EXPERIMENT_WORDS[locale].search(s) for s in rs), (pol, rs)
        assert not any("%" in s for s in rs), rs
    # The first reason of a suggestion made with features is the likelihood band of a response to its own channel.
    if not with_features:
        return
    for ch, rs in zip(frame["channel"], frame["reasons"]):
        name = m.channel_name(ch, locale)
        assert rs[0] in {
            m.sentence("likelihood", locale, band=m.band_name(b, locale), channel=name, a_channel=m.with_article(name)) for b, _ in m.LIKELIHOOD_BANDS
        }, rs[0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("locale", m.LOCALES)
def test_reasons_name_only_the_suggested_channel_and_no_experiment(seed: int, locale: str) -> None:
    rng = np.random.default_rng(seed)
    frame = _frame(rng, 120)
    rec = _engine(120)
    f = rec.recommend(list(frame["hcp_id"]), k=3, as_of=AS_OF, record=False, features=frame, locale=locale).frame
    assert {"holdout", "fallback"} <= set(f["policy"])  # the API's policy field keeps the status
    check_served(f, locale)
    first = f[f["rank"] == 1]
    # Every rule of the rule policy was worded, and rules removed first choices (said without naming them).
    assert set(first["rule_fired"]) == set(m.POLICY_RULES)
    override = m.capitalise(m.TEMPLATES[locale]["override"].split("{rule}")[0])
    blocked = first[first["first_choice_blocked_by"].notna()]
    assert len(blocked) and blocked["reasons"].map(lambda rs: any(s.startswith(override) for s in rs)).all()


def test_a_holdout_reason_never_names_a_visit_on_another_channel() -> None:
    """The issue's case: pushes unopened -> the rules want a visit; no visit consent -> a department meeting, explained as itself."""
    rng = np.random.default_rng(0)
    frame = _frame(rng, 40)
    for ch in CHANNELS:
        frame[f"consent_{ch}"] = ch == "department_meeting"
        frame[f"days_since_last_{ch}"] = 365.0
        frame[f"{ch}_sent_7d"] = 0
    frame["consecutive_unopened_pushes"] = 5
    frame["lifecycle"] = LIFECYCLES.index("growth")
    frame["seq_channel"] = [np.full(len(c), CHANNELS.index("email")) for c in frame["seq_channel"]]
    rec = _engine(40, exploration=_engine(1).cfg.exploration.model_copy(update={"holdout_share": 0.99}))
    for locale in m.LOCALES:
        f = rec.recommend(list(frame["hcp_id"]), k=1, as_of=AS_OF, record=False, features=frame, locale=locale).frame
        assert set(f["channel"]) == {"department_meeting"} and set(f["rule_fired"]) == {"unopened_pushes"} and "holdout" in set(f["policy"])
        check_served(f, locale)
        rule_text = [rs[1] for rs in f["reasons"]]
        assert all(("department meeting" if locale == "en" else "科室会") in s for s in rule_text), rule_text
        assert all("visit" not in " ".join(rs).lower() and "拜访" not in "".join(rs) for rs in f["reasons"])


def test_locale_comes_from_the_config_and_the_request() -> None:
    from serving.engine import RequestError

    rng = np.random.default_rng(3)
    frame = _frame(rng, 20)
    ids = list(frame["hcp_id"])
    zh = _engine(20, locale="zh-CN")
    default = zh.recommend(ids, k=2, as_of=AS_OF, record=False, features=frame).frame
    assert all(re.search(r"[\u4e00-\u9fff]", s) and not re.search(r"[A-Za-z]{2,}", s) for rs in default["reasons"] for s in rs)
    english = zh.recommend(ids, k=2, as_of=AS_OF, record=False, features=frame, locale="en").frame
    assert all(not re.search(r"[\u4e00-\u9fff]", s) for rs in english["reasons"] for s in rs)
    # The same suggestions, worded twice.
    assert english["channel"].tolist() == default["channel"].tolist() and english["policy"].tolist() == default["policy"].tolist()
    with pytest.raises(RequestError, match="^locale: must be one of en, zh-CN, got 'fr'"):
        zh.recommend(ids, k=2, as_of=AS_OF, record=False, features=frame, locale="fr")


def test_feature_outage_notes_are_localised_and_name_no_other_channel() -> None:
    from serving.engine import Recommender

    rec = _engine(6)
    rec = Recommender(rec.cfg, store=None, reference=rec.reference)  # no store: every HCP served without features
    for locale in m.LOCALES:
        res = rec.recommend([f"h{i}" for i in range(6)], k=2, as_of=AS_OF, record=False, locale=locale)
        f = res.frame
        assert res.degraded_features and set(f["channel"]) == {"visit"}
        check_served(f, locale, with_features=False)
        assert all(rs[-1] == r_note for rs, r_note in zip(f["reasons"], [m.sentence("note_degraded_features", locale)] * len(f)))


def test_plan_explanations_say_what_expected_value_counts() -> None:
    from serving.planning import expected_value
    from serving.reasons import contact_explanations, plan_explanation

    p, pot = np.array([0.9, 0.3, 0.05]), np.array([35.0, 0.0, 1.0])
    ev = expected_value(p, pot)
    en = contact_explanations(ev, p, pot, np.array([False, True, False]), "en")
    assert en[0] == (
        f"Expected value {ev[0]:.2f}: a high likelihood of a response, weighted ×{1 + np.log1p(35):.1f} for the HCP's potential of 35 boxes a month."
    )
    assert en[1] == f"Expected value {ev[1]:.2f}: a medium likelihood of a response; no potential on record, so no extra weight. Not yet a target HCP."
    assert "of 1 box a month" in en[2] and en[2].startswith(f"Expected value {ev[2]:.2f}: a low likelihood")
    zh = contact_explanations(ev, p, pot, np.array([False, True, False]), "zh-CN")
    assert zh[0] == f"期望价值 {ev[0]:.2f}：回应可能性高，按该医生每月35盒的潜力加权（×{1 + np.log1p(35):.1f}）。"
    assert zh[1].endswith("尚非目标医生。")
    assert plan_explanation(4, 2, 5, 1, "en").endswith("The day's capacity (2 visits or calls, 5 messages) fits 4 contacts; 1 contact left for another day.")
    assert plan_explanation(4, 2, 5, 1, "zh-CN").endswith("今日容量内安排4个联系（拜访或电话2个，消息5条），另有1个留待他日。")


def test_plan_payload_carries_an_explanation_per_contact() -> None:
    from serving.planning import plan_payload
    from serving.schemas import PlannedContact, PlanResponse

    rng = np.random.default_rng(5)
    frame = _frame(rng, 10)
    rec = _engine(10)
    res = rec.recommend(list(frame["hcp_id"]), k=1, as_of=AS_OF, record=False, features=frame)
    f = res.frame
    pot = np.asarray(res.potential)[pd.Index(frame["hcp_id"]).get_indexer(f["hcp_id"])]
    plan = f.assign(expected_value=f["expected_response"] * (1 + np.log1p(pot)), potential=pot, not_yet_target=False, order=np.arange(1, len(f) + 1))
    for locale in m.LOCALES:
        rows = plan_payload(plan, locale)
        assert [PlannedContact.model_validate(r).explanation for r in rows] == [r["explanation"] for r in rows]
        assert all(r["explanation"].startswith("Expected value" if locale == "en" else "期望价值") for r in rows)
        assert all(f"{r['expected_value']:.2f}" in r["explanation"] for r in rows)
    assert "1 + ln(1 + " in PlannedContact.model_fields["expected_value"].description
    assert "explanation" in PlanResponse.model_fields


@pytest.mark.slow
def test_world_suggestions_keep_experiment_status_in_the_audit_trail_only(serving_cfg, world) -> None:
    """On the tiny world: model, exploration and holdout suggestions, in both locales, each explained as its own channel."""
    from serving.engine import Recommender
    from serving.sandbox import AS_OF as WORLD_AS_OF

    cfg = serving_cfg.model_copy(update={"exploration": serving_cfg.exploration.model_copy(update={"holdout_share": 0.3, "epsilon": 0.6})})
    rec = Recommender.from_config(cfg)
    served = {}
    for locale in m.LOCALES:
        res = rec.recommend(world.hcp_ids, k=3, as_of=WORLD_AS_OF, locale=locale)
        f = res.frame
        check_served(f, locale)
        served[locale] = f
    policies = set(served["en"]["policy"]) | set(served["zh-CN"]["policy"])
    assert {"model", "explore", "holdout"} <= policies
    # The audit trail keeps each suggestion's policy and the very reasons the rep read.
    audit = rec.audit.read("suggestions").set_index("suggestion_id")
    both = pd.concat(served.values(), ignore_index=True)
    assert audit.loc[both["suggestion_id"], "policy"].tolist() == both["policy"].tolist()
    for sid in both.loc[both["policy"].isin(["explore", "holdout"]), "suggestion_id"].iloc[:5]:
        row = rec.audit.suggestion(sid)
        assert row["reasons"] == both.set_index("suggestion_id").loc[sid, "reasons"] and row["policy"] in {"explore", "holdout"}


def test_nightly_titles_and_reasons_use_the_templates() -> None:
    from serving.batch import suggestion_text

    frame = pd.DataFrame(
        {
            "channel": ["wechat_push", "email", "wecom_1to1"],
            "content_id": ["C1", None, "C2"],
            "reasons": [
                ["High likelihood of a response to a WeChat push.", "Answered 1 of 2 WeChat push contacts in the last 90 days."],
                ["Low likelihood of a response to an email."],
                [],
            ],
        }
    )
    title, reason = suggestion_text(frame)
    assert title.tolist() == ["WeChat push with content C1", "Email", "WeCom 1:1 message with content C2"]  # not "Wechat push"
    assert reason.tolist() == [
        "High likelihood of a response to a WeChat push. Answered 1 of 2 WeChat push contacts in the last 90 days.",
        "Low likelihood of a response to an email.",
        "",
    ]
    zh_title, _ = suggestion_text(frame, "zh-CN")
    assert zh_title.tolist() == ["微信推送（内容 C1）", "邮件", "企业微信一对一消息（内容 C2）"]

"""Rep-facing texts (serving.messages, worded by serving.reasons): grammar slips over every template and substitution.

``every_text`` renders each template with every channel, topic, rule, lifecycle stage, slot and
count that can reach it; the checks read the rendered text independently of how it was built.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from contract.schema import CHANNELS, DAYPARTS, LIFECYCLES, TOPICS, WEEKDAYS
from features.rules import RuleFacts
from serving import messages as m
from serving import reasons as r
from serving.guardrails import GuardrailPolicy, WindowRule

CONTENT_IDS = ("C12", "cnt_0007")
POLICY = GuardrailPolicy(
    weekly_caps={"visit": 2, "email": 1},
    cooldown_days=14.0,
    window_rules=(
        WindowRule("conference_60d", 60, 1, "channel", "conference"),
        WindowRule("visit_30d", 30, 2, "channel", "visit"),
        WindowRule("same_item_30d", 30, 1, "item"),
        WindowRule("topic_1d", 1, 2, "topic"),
    ),
)
COUNTS = (0, 1, 2, 11)


def _facts(n: int, **values) -> RuleFacts:
    base = {
        "unopened": np.zeros(n, int),
        "forwards": np.zeros(n, int),
        "favourites": np.zeros(n, int),
        "replies": np.zeros(n, int),
        "short_days": 30,
        "talk_topic": np.full(n, -1),
        "repeated": np.zeros(n, bool),
        "other_topic": np.zeros(n, bool),
        "topic_hits": np.zeros(n, int),
        "seq_len": np.zeros(n, int),
        "no_repeat_days": 30.0,
    }
    return RuleFacts(**{**base, **values})


def every_text(locale: str) -> dict[str, list[str]]:
    """Every text a rep can read, by kind ('sentence': reasons, notes, explanations; 'title': CRM titles)."""
    c = np.arange(len(CHANNELS))
    sentences: list[str] = []
    for p in (0.0, 0.05, 0.1999, 0.2, 0.4999, 0.5, 0.97, 1.0):
        sentences += r.likelihood_reasons(c, np.full(len(c), p), locale).tolist()
    for (sent, opened), days in itertools.product([(0, 0), (1, 0), (1, 1), (2, 1), (11, 8)], (1, 30, 90)):
        sentences += r.history_reasons(c, np.full(len(c), sent), np.full(len(c), opened), days, locale).tolist()
    # Rule reasons: every rule x channel x content (none, unknown topic, each topic) x note x count.
    combos = list(
        itertools.product(
            ("unopened_pushes", "strong_interest", "preference"),
            range(len(CHANNELS)),
            [-2, -1, *range(len(TOPICS))],
            ("none", "repeated", "other_topic"),
            COUNTS,
        )
    )
    n = len(combos)
    rule, channel, topic, note, k = (np.asarray(x, dtype=object) for x in zip(*combos))
    k = k.astype(int)
    facts = _facts(
        n,
        unopened=k,
        forwards=k,
        favourites=(k + 1) % 3,
        replies=k,
        talk_topic=np.where(topic.astype(int) < 0, -1, topic.astype(int)),
        repeated=note == "repeated",
        other_topic=note == "other_topic",
        topic_hits=k,
        seq_len=k + 1,
    )
    preferred = (np.arange(n) % (len(TOPICS) + 1)) - 1
    slots = np.arange(n)
    sentences += r.rule_reasons(
        rule,
        channel.astype(int),
        np.arange(n),
        facts,
        preferred,
        slots % len(WEEKDAYS),
        slots % len(DAYPARTS),
        np.maximum(topic.astype(int), -1),
        topic.astype(int) > -2,
        locale,
    ).tolist()
    sentences += [s for s in r.rule_history_reasons(facts, preferred, np.arange(n), locale).tolist() if s]
    # Overrides: every guardrail rule with the facts it reads.
    for ch in CHANNELS:
        sentences += [r.override_reason("consent", ch, {}, POLICY, locale), r.override_reason("content", ch, {}, POLICY, locale)]
        sentences += [r.override_reason("frequency", ch, {"sent_7d": s}, POLICY, locale) for s in COUNTS]
        sentences += [r.override_reason("cooldown", ch, {"unanswered_streak": s}, POLICY, locale) for s in COUNTS]
        sentences += [r.override_reason("lifecycle", ch, {"lifecycle": stage}, POLICY, locale) for stage in LIFECYCLES]
    for rule_i, count, days in itertools.product(range(len(POLICY.window_rules)), COUNTS, (0.2, 1.0, 1.6, 23.0, float("inf"))):
        for cid in CONTENT_IDS:
            ctx = {"window_rule": rule_i, "window_count": count, "window_days": days, "content_id": cid}
            sentences.append(r.override_reason("window", "visit", ctx, POLICY, locale))
    sentences += r.policy_notes(np.asarray(["model", "explore", "holdout", "fallback"], dtype=object), locale).tolist()
    sentences += [r.degraded_note(locale), r.degraded_note(locale, this_hcp=True)]
    # Plans: every band x potential (none, one box, fractional, many) x target status, and counts.
    ps = [0.05, 0.3, 0.9, 1.0]
    grid = list(itertools.product(ps, (0.0, 1.0, 12.5, 40.0), (False, True)))
    p, pot, nt = (np.asarray(x) for x in zip(*grid))
    sentences += r.contact_explanations(p * (1 + np.log1p(pot)), p, pot, nt, locale)
    sentences += [r.plan_explanation(a, b, c_, d, locale) for a, b, c_, d in itertools.product(COUNTS, COUNTS, COUNTS, COUNTS)]
    titles = r.suggestion_titles(
        np.asarray(CHANNELS * 4, dtype=object),
        np.asarray([None] * len(CHANNELS) + [""] * len(CHANNELS) + [CONTENT_IDS[0]] * len(CHANNELS) + [CONTENT_IDS[1]] * len(CHANNELS), dtype=object),
        locale,
    )
    return {"sentence": [s for s in sentences if s], "title": titles}


@pytest.fixture(scope="module", params=m.LOCALES)
def texts(request) -> tuple[str, dict[str, list[str]]]:
    return request.param, every_text(request.param)


@pytest.fixture(scope="module")
def english() -> dict[str, list[str]]:
    return every_text("en")


@pytest.fixture(scope="module")
def chinese() -> dict[str, list[str]]:
    return every_text("zh-CN")


def test_every_template_is_exercised(monkeypatch) -> None:
    used: set[tuple[str, str]] = set()
    real = m.render

    def spy(key: str, locale: str, **values):
        used.add((locale, key))
        return real(key, locale, **values)

    monkeypatch.setattr(m, "render", spy)
    for locale in m.LOCALES:
        every_text(locale)
        assert {k for loc, k in used if loc == locale} == set(m.TEMPLATES[locale]), locale


def test_tables_cover_every_code_in_every_locale() -> None:
    for locale in m.LOCALES:
        assert set(m.CHANNEL_NAMES[locale]) == set(CHANNELS) and set(m.TOPIC_NAMES[locale]) == set(TOPICS)
        assert set(m.LIFECYCLE_NAMES[locale]) == set(LIFECYCLES) and set(m.TEMPLATES[locale]) == set(m.TEMPLATES["en"])
        assert set(m.RULE_NAMES[locale]) == {*m.GUARDRAIL_RULES, *m.POLICY_RULES}
        assert set(m.WEEKDAY_NAMES[locale]) == set(WEEKDAYS) and set(m.DAYPART_NAMES[locale]) == set(DAYPARTS)
    from features.rules import RULE_NAMES
    from serving.guardrails import RULES

    assert set(m.GUARDRAIL_RULES) == set(RULES) and set(m.POLICY_RULES) == set(RULE_NAMES)


def test_no_unfilled_placeholders_double_spaces_or_stray_punctuation(texts) -> None:
    locale, t = texts
    for s in t["sentence"] + t["title"]:
        assert s == s.strip() and "  " not in s, repr(s)
        assert not re.search(r"[{}]", s), s
        assert not re.search(r"\b(None|nan|inf)\b", s), s
        assert "%" not in s, s  # probabilities are bands, never percentages
        assert not re.search(r" [,.;:)]|\( |\.\.|,,|;;", s), s


def test_english_articles_follow_the_sound_of_the_next_word(english) -> None:
    t = english
    for s in t["sentence"]:
        for art, word in re.findall(r"\b([Aa]n?) ([\w:'-]+)", s):
            vowel_sound = word[0].lower() in "aeiou8"
            assert (art.lower() == "an") == vowel_sound, f"{art} {word}: {s}"
    corpus = " ".join(t["sentence"]).lower()
    for phrase in ("an email", "a wechat push", "a wecom 1:1 message", "a department meeting", "a visit", "a phone call", "a webinar", "a conference"):
        assert phrase in corpus


def test_english_names_plurals_and_capitals(english) -> None:
    t = english
    corpus = " ".join(t["sentence"] + t["title"])
    for name in ("WeChat push", "WeCom 1:1 message", "department meeting", "phone call"):
        assert name in corpus
    assert not re.search(r"Wechat|wechat|Wecom|wecom|1:1 WeChat|model' |\ba [aeiou]", corpus)
    assert not re.search(r"_", corpus.replace("cnt_0007", "")), "codes such as post_vbp or clinical_data leak"
    plural = "contacts|days|items|forwards|saves|replies|boxes|messages|visits or calls|times"
    singular = "contact|day|item|forward|save|reply|box|message|visit or call"
    for s in t["sentence"]:
        assert not re.search(rf"(?<![\d.:/])1 ({plural})\b", s), f"plural after 1: {s}"
        assert not re.search(rf"(?<![\d.:/])(0|[2-9]|[1-9]\d+|\d+\.\d+) ({singular})\b", s), f"singular after a count: {s}"
        assert re.match(r"[A-Z]", s), f"not capitalised: {s}"
        assert s.endswith("."), s
        # Each sentence after a full stop starts with a capital (a colon continues in lower case).
        assert all(c.isupper() for c in re.findall(r"\. (\w)", s)), s
    assert all(re.match(r"[A-Z]", x) for x in t["title"])


def test_chinese_texts_have_no_untranslated_english(chinese) -> None:
    t = chinese
    for s in t["sentence"] + t["title"]:
        bare = s
        for cid in CONTENT_IDS:
            bare = bare.replace(cid, "")
        assert not re.search(r"[A-Za-z]", bare), s  # brands too: 微信, 企业微信
        assert not re.search(r"[,;:()!?]", bare), s  # full-width punctuation in Chinese text
        assert not re.search(r"(?<!\d)\.|\.(?!\d)", bare), s  # an ASCII full stop only as a decimal point
    for s in t["sentence"]:
        assert s.endswith("。"), s
    corpus = "".join(t["sentence"])
    assert "微信推送" in corpus and "企业微信一对一消息" in corpus and "科室会" in corpus


@pytest.mark.parametrize(("p", "band"), [(0.0, "low"), (0.1999, "low"), (0.2, "medium"), (0.4999, "medium"), (0.5, "high"), (1.0, "high")])
def test_likelihood_bands_follow_the_documented_thresholds(p: float, band: str) -> None:
    assert m.likelihood_band(p) == band
    assert dict(m.LIKELIHOOD_BANDS) == {"high": 0.5, "medium": 0.2, "low": 0.0}
    assert r.likelihood_reasons(np.array([CHANNELS.index("email")]), np.array([p]), "en")[0] == f"{band.capitalize()} likelihood of a response to an email."
    assert r.likelihood_reasons(np.array([CHANNELS.index("email")]), np.array([p]), "zh-CN")[0] == f"邮件获得回应的可能性：{m.BAND_NAMES['zh-CN'][band]}。"


def test_articles_and_numbers_by_sound() -> None:
    assert [m.with_article(w) for w in ("email", "WeChat push", "WeCom 1:1 message", "hour", "unit", "8-day", "11 visits", "110 visits", "high")] == [
        "an email",
        "a WeChat push",
        "a WeCom 1:1 message",
        "an hour",
        "a unit",
        "an 8-day",
        "an 11 visits",
        "a 110 visits",
        "a high",
    ]
    assert (m.count(1, "reply", "en"), m.count(3, "reply", "en"), m.count(1e6, "box", "en"), m.count(2.5, "box", "en")) == (
        "1 reply",
        "3 replies",
        "1000000 boxes",
        "2.5 boxes",
    )
    assert m.count(3, "reply", "zh-CN") == "3" and m.capitalise("weCom") == "WeCom"


def test_locale_is_checked_naming_the_field() -> None:
    from pydantic import ValidationError

    from serving.config import ServingConfig
    from serving.schemas import PlanRequest, RecommendRequest

    assert m.check_locale(None) == "en" and m.check_locale("zh-CN") == "zh-CN"
    with pytest.raises(ValueError, match="locale: must be one of en, zh-CN"):
        m.check_locale("fr")
    with pytest.raises(ValidationError, match="locale"):
        ServingConfig(locale="zh")
    with pytest.raises(ValidationError, match="locale"):
        RecommendRequest(hcp_ids=["h1"], locale="de")
    assert PlanRequest(rep_id="r1", date="2026-05-01", locale="zh-CN").locale == "zh-CN"

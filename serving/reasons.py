"""Sentences a rep can read for each suggestion and plan, worded from ``serving.messages`` templates.

Column-wise over the served suggestions (plain comprehensions: per-call overhead of pandas
string ops was a visible share of a single-HCP request, and at batch sizes these are no
slower). What a rep reads never names another channel than the one suggested, never shows a
probability as a number (a likelihood band instead) and never says whether the suggestion came
from the holdout group or from exploration: that stays in the audit trail and the API's
``policy`` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from contract.schema import CHANNELS, TOPICS
from serving import messages as m

_VISIT = CHANNELS.index("visit")
_POLICY_RULE = {name: i for i, name in enumerate(m.POLICY_RULES)}


def likelihood_reasons(channel: np.ndarray, expected: np.ndarray, locale: str) -> np.ndarray:
    """Per suggestion: the likelihood band of a response to the channel ("High likelihood of a response to an email.")."""
    memo: dict[tuple[int, str], str] = {}

    def text(c: int, band: str) -> str:
        name = m.channel_name(CHANNELS[c], locale)
        return m.sentence("likelihood", locale, band=m.band_name(band, locale), channel=name, a_channel=m.with_article(name))

    out = [
        memo.get((c, b)) or memo.setdefault((c, b), text(c, b))
        for c, b in zip(np.asarray(channel).tolist(), map(m.likelihood_band, np.asarray(expected, dtype=np.float64).tolist()))
    ]
    return np.asarray(out, dtype=object).reshape(-1)


def history_reasons(channel: np.ndarray, sent: np.ndarray, opened: np.ndarray, days: int, locale: str) -> np.ndarray:
    """Per suggestion: how the HCP answered this channel lately ("Answered 3 of 5 email contacts in the last 90 days.")."""
    names = [m.channel_name(c, locale) for c in CHANNELS]
    period = m.count(days, "day", locale)
    memo: dict[tuple[int, int, int], str] = {}  # few distinct (channel, sent, opened) in a batch

    def text_of(c: int, s: int, o: int) -> str:
        if s <= 0:
            return m.sentence("history_none", locale, channel=names[c], period_n=period)
        return m.sentence("history", locale, opened=o, sent=s, channel=names[c], contacts_word=m.NOUNS["contact"][s != 1], period_n=period)

    text = [
        memo.get(key) or memo.setdefault(key, text_of(*key))
        for key in zip(np.asarray(channel).tolist(), np.asarray(sent, dtype=np.int64).tolist(), np.asarray(opened, dtype=np.int64).tolist())
    ]
    return np.asarray(text, dtype=object).reshape(-1)


def _topic(t: int, locale: str) -> str | None:
    return m.topic_name(TOPICS[t], locale) if 0 <= t < len(TOPICS) else None


def _with_content(has: bool, topic: str | None, locale: str) -> str:
    if not has:
        return ""
    return m.render("with_topic_content", locale, topic=topic) if topic else m.render("with_content", locale)


def rule_reasons(
    rule: np.ndarray,
    channel: np.ndarray,
    rows: np.ndarray,
    facts: Any,
    preferred: np.ndarray,
    weekday: np.ndarray,
    daypart: np.ndarray,
    content_topic: np.ndarray,
    has_content: np.ndarray,
    locale: str,
) -> np.ndarray:
    """Per rule-policy suggestion: why the rules chose it, about the served channel only.

    rule: rule names (``features.rules.RULE_NAMES``); rows: each suggestion's HCP row into
    ``facts`` (``features.rules.RuleFacts``) and ``preferred`` (the HCP's preferred topic index,
    ``RuleActions.topic``); weekday/daypart: the served slot; content_topic: topic index of the
    served content (-1 unknown); has_content: whether content is served.
    """
    out = []
    for r, c, i, wd, dp, ct, has in zip(
        np.asarray(rule, dtype=object).tolist(),
        np.asarray(channel).tolist(),
        np.asarray(rows).tolist(),
        np.asarray(weekday).tolist(),
        np.asarray(daypart).tolist(),
        np.asarray(content_topic).tolist(),
        np.asarray(has_content, dtype=bool).tolist(),
    ):
        name = m.channel_name(CHANNELS[c], locale)
        common = {
            "slot": m.slot_name(wd, dp, locale),
            "channel": name,
            "a_channel": m.with_article(name),
            "with_content": _with_content(has, _topic(ct, locale), locale),
            "period_n": m.count(facts.short_days, "day", locale),
        }
        kind = _POLICY_RULE.get(r, 2)
        if kind == 0:
            common["unopened_n"] = m.count(int(facts.unopened[i]), "message", locale)
            text = m.sentence("rule_unopened_visit" if c == _VISIT else "rule_unopened_other", locale, **common)
        elif kind == 1:
            signals = m.render(
                "signals",
                locale,
                forwards_n=m.count(int(facts.forwards[i]), "forward", locale),
                saves_n=m.count(int(facts.favourites[i]), "save", locale),
                replies_n=m.count(int(facts.replies[i]), "reply", locale),
            )
            topic = _topic(int(facts.talk_topic[i]), locale) or m.render("talking_points_any", locale)
            text = m.sentence("rule_interest_visit" if c == _VISIT else "rule_interest_other", locale, signals=signals, topic=topic, **common)
        else:
            text = m.sentence("rule_preference", locale, **common)
        if has and facts.no_repeat_days > 0:
            window = m.count(facts.no_repeat_days, "day", locale)
            pref = _topic(int(preferred[i]), locale)
            if facts.repeated[i]:
                text += _space(locale) + m.sentence("note_repeated", locale, period_n=window)
            elif facts.other_topic[i] and pref:
                text += _space(locale) + m.sentence("note_other_topic", locale, topic=pref, period_n=window)
        out.append(text)
    return np.asarray(out, dtype=object).reshape(-1)


def _space(locale: str) -> str:
    return " " if locale == "en" else ""


def rule_history_reasons(facts: Any, topic: np.ndarray, rows: np.ndarray, locale: str) -> np.ndarray:
    """Per suggestion: what the HCP engaged with lately ("Engaged with 2 items on clinical data in the last 5 contacts."), or ""."""
    out = []
    for i in np.asarray(rows).tolist():
        hits, t = int(facts.topic_hits[i]), int(topic[i])
        name = _topic(t, locale)
        out.append(
            m.sentence("rule_history", locale, items_n=m.count(hits, "item", locale), topic=name, contacts_n=m.count(int(facts.seq_len[i]), "contact", locale))
            if hits > 0 and name
            else ""
        )
    return np.asarray(out, dtype=object).reshape(-1)


def override_reason(rule: str, channel: str, ctx: Mapping[str, Any], policy: Any, locale: str) -> str:
    """Why a higher-ranked option on ``channel`` was ruled out, in words that do not name it (``ctx``: ``engine.block_context``)."""
    if rule == "consent":
        detail = m.render("block_consent", locale)
    elif rule == "content":
        detail = m.render("block_content", locale)
    elif rule == "frequency":
        cap = policy.weekly_caps.get(channel, 0)
        detail = m.render("block_frequency", locale, sent=int(ctx.get("sent_7d", 0)), cap=cap)
    elif rule == "cooldown":
        detail = m.render(
            "block_cooldown",
            locale,
            contacts_n=m.count(int(ctx.get("unanswered_streak", 0)), "contact", locale),
            period_n=m.count(policy.cooldown_days, "day", locale),
        )
    elif rule == "window":
        detail = _window_detail(ctx, policy, locale)
    elif rule == "lifecycle":
        detail = m.render("block_lifecycle", locale, stage=m.lifecycle_name(str(ctx.get("lifecycle", "")), locale))
    else:
        raise KeyError(rule)
    return m.sentence("override", locale, rule=m.rule_name(rule, locale), detail=detail)


def _window_detail(ctx: Mapping[str, Any], policy: Any, locale: str) -> str:
    rule = policy.window_rules[int(ctx["window_rule"])]
    count, days = int(ctx.get("window_count", 0)), float(ctx.get("window_days", np.inf))
    period = m.count(rule.days, "day", locale)
    if rule.scope == "channel":
        if rule.max == 1 and np.isfinite(days):
            ago = m.render("ago_today", locale) if days < 1 else m.render("ago_days", locale, days_n=m.count(int(days), "day", locale))
            return m.render("block_window_recent", locale, ago=ago, max=rule.max, period_n=period)
        return m.render("block_window_count", locale, contacts_n=m.count(count, "contact", locale), max=rule.max, period_n=period)
    key = "block_window_item" if rule.scope == "item" else "block_window_topic"
    return m.render(key, locale, content_id=ctx.get("content_id"), times=m.times(count, locale), period_n=period)


def policy_notes(policy: np.ndarray, locale: str) -> np.ndarray:
    """Per suggestion: a note for the rep when the model could not be used; holdout and exploration say nothing."""
    fallback = m.sentence("note_fallback", locale)
    return np.asarray([fallback if p == "fallback" else "" for p in np.asarray(policy, dtype=object).tolist()], dtype=object).reshape(-1)


def degraded_note(locale: str, *, this_hcp: bool = False) -> str:
    """The note on a suggestion made without the HCP's customer data (store down, or this HCP not loaded)."""
    return m.sentence("note_no_features_hcp" if this_hcp else "note_degraded_features", locale)


def combine(*columns: np.ndarray) -> list[list[str]]:
    """Row-wise lists of the non-empty sentences (the JSON boundary needs lists)."""
    stacked = np.column_stack([np.asarray(c, dtype=object) for c in columns]) if columns else np.zeros((0, 0), dtype=object)
    return [[s for s in row if s] for row in stacked.tolist()]


def suggestion_titles(channel: np.ndarray, content_id: np.ndarray, locale: str) -> list[str]:
    """A CRM title per suggestion ("WeChat push with content C12", "微信推送（内容 C12）")."""
    out = []
    for c, cid in zip(np.asarray(channel, dtype=object).tolist(), np.asarray(content_id, dtype=object).tolist()):
        name = m.capitalise(m.channel_name(c, locale)) if locale == "en" else m.channel_name(c, locale)
        has = cid is not None and cid == cid and cid != ""  # None, NaN and "" all mean no content
        out.append(m.render("title_content", locale, channel=name, content_id=cid) if has else m.render("title", locale, channel=name))
    return out


def contact_explanations(value: np.ndarray, expected: np.ndarray, potential: np.ndarray, not_target: np.ndarray, locale: str) -> list[str]:
    """Per planned contact: what its expected value counts (likelihood band times the potential weight)."""
    out = []
    for v, p, pot, nt in zip(
        np.asarray(value, dtype=np.float64).tolist(),
        np.asarray(expected, dtype=np.float64).tolist(),
        np.asarray(potential, dtype=np.float64).tolist(),
        np.asarray(not_target, dtype=bool).tolist(),
    ):
        band = m.band_name(m.likelihood_band(p), locale)
        common = {"value": f"{v:.2f}", "band": band, "a_band": m.with_article(band)}
        if pot > 0:
            text = m.sentence("plan_contact", locale, weight=f"{1.0 + np.log1p(pot):.1f}", boxes_n=m.count(round(pot, 1), "box", locale), **common)
        else:
            text = m.sentence("plan_contact_no_potential", locale, **common)
        out.append(text + (_space(locale) + m.sentence("plan_not_target", locale) if nt else ""))
    return out


def plan_explanation(contacts: int, visit_capacity: int, message_capacity: int, deferred: int, locale: str) -> str:
    """What a plan's order means and how much of it fit the day's capacity."""
    return m.sentence(
        "plan",
        locale,
        contacts_n=m.count(contacts, "contact", locale),
        visits_n=m.count(visit_capacity, "visit_or_call", locale),
        messages_n=m.count(message_capacity, "message", locale),
        deferred_n=m.count(deferred, "contact", locale),
    )


def suggestion_reasons(
    *,
    locale: str,
    channel: np.ndarray,
    rank: np.ndarray,
    policy: np.ndarray,
    hcp_row: np.ndarray,
    expected: np.ndarray,
    rules: Any,
    weekday: np.ndarray,
    daypart: np.ndarray,
    content_id: np.ndarray,
    content_topics: Mapping[str, str],
    sent: np.ndarray | None,
    opened: np.ndarray | None,
    window_days: int,
    override: np.ndarray,
    no_features: np.ndarray,
    store_down: bool,
) -> list[list[str]]:
    """The reasons of each served suggestion (M rows), in the order a rep reads them.

    The likelihood band of the served channel; for the rule policy's first suggestion, the rule's
    reason; the HCP's history on the channel; for the first suggestion, what the HCP engaged with
    and which rule ruled out a higher-ranked option; a note when the model or the HCP's data was
    not available. channel: channel indices; rank: 0-based position in the slate; hcp_row: row
    into ``rules`` (``features.rules.RuleActions``); sent/opened: the channel's touches in the
    last ``window_days`` (None: no features); override: per suggestion (``override_reason``, or "");
    no_features: suggestions made without the HCP's features (``store_down``: the store did not answer).
    """
    channel, rank, hcp_row = np.asarray(channel), np.asarray(rank), np.asarray(hcp_row)
    n = len(channel)
    no_features = np.asarray(no_features, dtype=bool)
    empty = np.full(n, "", dtype=object)
    first = rank == 0
    rule_row = ~np.isin(np.asarray(policy, dtype=object), ["model", "explore"])
    like = np.where(no_features, "", likelihood_reasons(channel, expected, locale)) if n else empty
    main = empty.copy()
    sel = first & rule_row
    facts = getattr(rules, "facts", None)
    if sel.any() and facts is not None:
        codes = {t: i for i, t in enumerate(TOPICS)}
        ids = np.asarray(content_id, dtype=object)
        topic = np.asarray([codes.get(content_topics.get(c, ""), -1) if isinstance(c, str) else -1 for c in ids[sel].tolist()], dtype=np.int64)
        has = np.asarray([isinstance(c, str) and c != "" for c in ids[sel].tolist()], dtype=bool)
        main[sel] = rule_reasons(
            np.asarray(rules.rule, dtype=object)[hcp_row[sel]],
            channel[sel],
            hcp_row[sel],
            facts,
            rules.topic,
            np.asarray(weekday)[sel],
            np.asarray(daypart)[sel],
            topic,
            has,
            locale,
        )
    hist = empty.copy()
    if sent is not None and opened is not None and (~no_features).any():
        keep = ~no_features
        hist[keep] = history_reasons(channel[keep], np.asarray(sent)[keep], np.asarray(opened)[keep], window_days, locale)
    engaged = empty.copy()
    if facts is not None and (first & ~no_features).any():
        at = first & ~no_features
        engaged[at] = rule_history_reasons(facts, rules.topic, hcp_row[at], locale)
    notes = policy_notes(policy, locale)
    if no_features.any():
        notes[no_features] = degraded_note(locale, this_hcp=not store_down)
    return combine(like, main, hist, engaged, np.where(first, np.asarray(override, dtype=object), ""), notes)


def flat_reason(reasons: list[str], locale: str) -> str:
    """A suggestion's reasons as one text field (CRM reason fields are flat): the sentences in order."""
    return _space(locale).join(reasons)

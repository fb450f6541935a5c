"""Every text a rep reads, as templates in English (``en``) and Simplified Chinese (``zh-CN``).

Reasons, rule names, plan explanations and degraded-mode notes are all rendered from this
module, so a wording fix or a new locale is one edit here (``serving.reasons`` fills them in).
Rules of the house, enforced by ``tests/serving/test_messages.py`` over every template and every
channel, topic, rule and count substitution:

- names as the reps know them: "WeChat push", "WeCom 1:1 message", "department meeting";
  in zh-CN the brands are written 微信 / 企业微信 and no English word is left untranslated;
- a/an by the sound of the next word ("an email", "a WeChat push"), singular after 1;
- a probability is never shown as a number to a rep: it becomes a likelihood band
  (``LIKELIHOOD_BANDS``);
- nothing about holdout groups or exploration: that stays in the audit trail and the API's
  ``policy`` field.

Likelihood bands of a predicted response probability p (thresholds in ``LIKELIHOOD_BANDS``):
high when p >= 0.5 (at least one in two), medium when 0.2 <= p < 0.5, low below 0.2 (under one
in five). The API's ``expected_response`` keeps the number for systems.
"""

from __future__ import annotations

import re
from typing import Literal

from contract.schema import DAYPARTS, WEEKDAYS

Locale = Literal["en", "zh-CN"]
LOCALES: tuple[str, ...] = ("en", "zh-CN")
DEFAULT_LOCALE = "en"

# (band, lowest probability in it), highest first: see the module docstring.
LIKELIHOOD_BANDS: tuple[tuple[str, float], ...] = (("high", 0.5), ("medium", 0.2), ("low", 0.0))

# Guardrail rules (serving.guardrails.RULES) and the rule policy's rules (features.rules.RULE_NAMES).
GUARDRAIL_RULES: tuple[str, ...] = ("consent", "content", "frequency", "cooldown", "window", "lifecycle")
POLICY_RULES: tuple[str, ...] = ("unopened_pushes", "strong_interest", "preference")

CHANNEL_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "visit": "visit",
        "department_meeting": "department meeting",
        "wechat_push": "WeChat push",
        "wecom_1to1": "WeCom 1:1 message",
        "email": "email",
        "webinar": "webinar",
        "conference": "conference",
        "phone": "phone call",
    },
    "zh-CN": {
        "visit": "拜访",
        "department_meeting": "科室会",
        "wechat_push": "微信推送",
        "wecom_1to1": "企业微信一对一消息",
        "email": "邮件",
        "webinar": "网络研讨会",
        "conference": "学术会议",
        "phone": "电话",
    },
}
TOPIC_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "disease_info": "disease information",
        "brand_image": "brand",
        "clinical_data": "clinical data",
        "guideline": "guideline",
        "case_study": "case study",
        "patient_management": "patient management",
    },
    "zh-CN": {
        "disease_info": "疾病知识",
        "brand_image": "品牌",
        "clinical_data": "临床数据",
        "guideline": "指南",
        "case_study": "病例",
        "patient_management": "患者管理",
    },
}
WEEKDAY_NAMES: dict[str, dict[str, str]] = {
    "en": dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"))),
    "zh-CN": dict(zip(WEEKDAYS, ("周一", "周二", "周三", "周四", "周五", "周六", "周日"))),
}
DAYPART_NAMES: dict[str, dict[str, str]] = {
    "en": dict(zip(DAYPARTS, ("morning", "midday", "afternoon", "evening"))),
    "zh-CN": dict(zip(DAYPARTS, ("上午", "中午", "下午", "晚上"))),
}
LIFECYCLE_NAMES: dict[str, dict[str, str]] = {
    "en": {"launch": "launch", "growth": "growth", "maturity": "maturity", "post_vbp": "post-VBP"},
    "zh-CN": {"launch": "上市期", "growth": "成长期", "maturity": "成熟期", "post_vbp": "集采后"},
}
# Rule names as a rep reads them (the API's rules_applied and the audit trail keep the codes).
RULE_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "consent": "consent",
        "content": "content approval",
        "frequency": "weekly limit",
        "cooldown": "rest period",
        "window": "minimum interval",
        "lifecycle": "product lifecycle",
        "unopened_pushes": "unopened messages",
        "strong_interest": "strong interest",
        "preference": "preferred channel and time",
    },
    "zh-CN": {
        "consent": "同意授权",
        "content": "内容审批",
        "frequency": "每周上限",
        "cooldown": "休息期",
        "window": "间隔规则",
        "lifecycle": "产品生命周期",
        "unopened_pushes": "连续未读",
        "strong_interest": "兴趣强烈",
        "preference": "偏好渠道与时间",
    },
}
BAND_NAMES: dict[str, dict[str, str]] = {
    "en": {"high": "high", "medium": "medium", "low": "low"},
    "zh-CN": {"high": "高", "medium": "中", "low": "低"},
}
# Count nouns (singular, plural) for English; Chinese counts need no plural.
NOUNS: dict[str, tuple[str, str]] = {
    "contact": ("contact", "contacts"),
    "day": ("day", "days"),
    "item": ("item", "items"),
    "forward": ("forward", "forwards"),
    "save": ("save", "saves"),
    "reply": ("reply", "replies"),
    "box": ("box", "boxes"),
    "time": ("time", "times"),
    "visit_or_call": ("visit or call", "visits or calls"),
    "message": ("message", "messages"),
}

# Templates: ``str.format`` fields filled by ``serving.reasons``; every key exists in every locale.
# A field ending in ``_n`` is a count: "3 contacts" in English (``count``), the bare number in
# zh-CN, whose templates carry the measure word.
TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "likelihood": "{band} likelihood of a response to {a_channel}.",
        "history": "Answered {opened} of {sent} {channel} {contacts_word} in the last {period_n}.",
        "history_none": "No {channel} in the last {period_n}: a channel not tried with this HCP lately.",
        "rule_unopened_visit": "The HCP left the last {unopened_n} unopened: follow up with a visit{with_content} ({slot}).",
        "rule_unopened_other": "The HCP left the last {unopened_n} unopened: try {a_channel}{with_content} ({slot}).",
        "rule_interest_visit": "Strong interest lately ({signals} in the last {period_n}): a face-to-face visit with talking points on {topic} ({slot}).",
        "rule_interest_other": "Strong interest lately ({signals} in the last {period_n}): follow up with {a_channel}{with_content} ({slot}).",
        "rule_preference": "{a_channel}{with_content} at the HCP's preferred time for it ({slot}).",
        "with_topic_content": " with {topic} content",
        "with_content": " with approved content",
        "talking_points_any": "their preferred topic",
        "signals": "{forwards_n}, {saves_n} and {replies_n}",
        "note_repeated": "Every approved item was sent in the last {period_n}, so this is the one sent least recently.",
        "note_other_topic": "Every {topic} item was sent in the last {period_n}, so this one is on another topic.",
        "rule_history": "Engaged with {items_n} on {topic} in the last {contacts_n}.",
        "override": "A higher-ranked option was ruled out ({rule}): {detail}.",
        "block_consent": "no consent on record for it",
        "block_content": "its content is not approved for the suggested window",
        "block_frequency": "{sent}/{cap} in the last 7 days",
        "block_cooldown": "the last {contacts_n} went unanswered, resting for {period_n}",
        "block_window_recent": "last used {ago}, at most {max} in {period_n}",
        "block_window_count": "{contacts_n} in the last {period_n}, at most {max} allowed",
        "block_window_item": "item {content_id} already reached this HCP {times} in the last {period_n}",
        "block_window_topic": "the topic of item {content_id} already reached this HCP {times} in the last {period_n}",
        "block_lifecycle": "not used for products in the {stage} stage",
        "ago_today": "today",
        "ago_days": "{days_n} ago",
        "times_once": "once",
        "times_many": "{times_n}",
        "note_fallback": "Rule-based suggestion: the model is unavailable right now.",
        "note_degraded_features": "Customer data is unavailable right now, so this is a rule-based suggestion: check consent in the CRM before contacting.",
        "note_no_features_hcp": "No customer data is loaded for this HCP yet, so this is a rule-based suggestion: check consent in the CRM before contacting.",
        "title": "{channel}",
        "title_content": "{channel} with content {content_id}",
        "plan_contact": "Expected value {value}: {a_band} likelihood of a response, weighted ×{weight} for the HCP's potential of {boxes_n} a month.",
        "plan_contact_no_potential": "Expected value {value}: {a_band} likelihood of a response; no potential on record, so no extra weight.",
        "plan_not_target": "Not yet a target HCP.",
        "plan": "Contacts are ordered by expected value: the likelihood of a response, weighted more for HCPs with a higher monthly potential. "
        "The day's capacity ({visits_n}, {messages_n}) fits {contacts_n}; {deferred_n} left for another day.",
    },
    "zh-CN": {
        "likelihood": "{channel}获得回应的可能性：{band}。",
        "history": "近{period_n}天{channel}联系{sent}次，回应{opened}次。",
        "history_none": "近{period_n}天未通过{channel}联系过该医生，可尝试这一渠道。",
        "rule_unopened_visit": "该医生最近连续{unopened_n}条消息未读：建议拜访跟进{with_content}（{slot}）。",
        "rule_unopened_other": "该医生最近连续{unopened_n}条消息未读：可尝试{channel}{with_content}（{slot}）。",
        "rule_interest_visit": "近期兴趣强烈（近{period_n}天{signals}）：建议面对面拜访，谈话要点：{topic}（{slot}）。",
        "rule_interest_other": "近期兴趣强烈（近{period_n}天{signals}）：建议通过{channel}跟进{with_content}（{slot}）。",
        "rule_preference": "在该医生偏好的时间通过{channel}联系{with_content}（{slot}）。",
        "with_topic_content": "，发送{topic}内容",
        "with_content": "，发送已审批内容",
        "talking_points_any": "其偏好主题",
        "signals": "转发{forwards_n}次、收藏{saves_n}次、回复{replies_n}次",
        "note_repeated": "所有已审批内容近{period_n}天内均已发送过，因此选用最久未发送的一条。",
        "note_other_topic": "近{period_n}天内{topic}内容均已发送过，因此选用其他主题的内容。",
        "rule_history": "最近{contacts_n}次接触中，有{items_n}次回应了{topic}内容。",
        "override": "排名更高的选项因{rule}被排除：{detail}。",
        "block_consent": "无同意记录",
        "block_content": "其内容在建议时段未获审批",
        "block_frequency": "近7天已联系{sent}/{cap}次",
        "block_cooldown": "最近{contacts_n}次联系均未获回应，休息{period_n}天",
        "block_window_recent": "{ago}刚使用过，{period_n}天内最多{max}次",
        "block_window_count": "近{period_n}天已{contacts_n}次，最多{max}次",
        "block_window_item": "内容 {content_id} 近{period_n}天内已送达该医生{times}",
        "block_window_topic": "与内容 {content_id} 同主题的内容近{period_n}天内已送达该医生{times}",
        "block_lifecycle": "{stage}产品不使用",
        "ago_today": "今天",
        "ago_days": "{days_n}天前",
        "times_once": "一次",
        "times_many": "{times_n}次",
        "note_fallback": "模型暂不可用，此为基于规则的建议。",
        "note_degraded_features": "客户数据暂不可用，此为基于规则的建议：联系前请先在系统中核对同意记录。",
        "note_no_features_hcp": "该医生的客户数据尚未载入，此为基于规则的建议：联系前请先在系统中核对同意记录。",
        "title": "{channel}",
        "title_content": "{channel}（内容 {content_id}）",
        "plan_contact": "期望价值 {value}：回应可能性{band}，按该医生每月{boxes_n}盒的潜力加权（×{weight}）。",
        "plan_contact_no_potential": "期望价值 {value}：回应可能性{band}；无潜力记录，不额外加权。",
        "plan_not_target": "尚非目标医生。",
        "plan": "联系按期望价值排序：即回应的可能性，医生每月潜力越高权重越大。今日容量内安排{contacts_n}个联系（拜访或电话{visits_n}个，消息{messages_n}条），另有{deferred_n}个留待他日。",
    },
}


def check_locale(locale: str | None) -> str:
    """``locale`` if supported (None: the default), else a ValueError naming the field."""
    if locale is None:
        return DEFAULT_LOCALE
    if locale not in LOCALES:
        raise ValueError(f"locale: must be one of {', '.join(LOCALES)}, got {locale!r}")
    return locale


def likelihood_band(p: float) -> str:
    """'high', 'medium' or 'low' for a response probability (thresholds in ``LIKELIHOOD_BANDS``)."""
    for band, low in LIKELIHOOD_BANDS:
        if p >= low:
            return band
    return LIKELIHOOD_BANDS[-1][0]


# First words that start with a vowel letter but a consonant sound, and the reverse.
_A_BEFORE = ("one", "uni", "use", "usu", "eu")
_AN_BEFORE = ("hour", "honest", "honour", "heir")


def with_article(phrase: str) -> str:
    """``phrase`` with "a" or "an" by the sound of its first word ("an email", "a WeChat push", "an 8-day")."""
    word = phrase.split(" ", 1)[0].lower()
    if word[:1].isdigit():
        whole = re.match(r"\d+", word.replace(",", "")).group()
        # "eight...", and "eleven" / "eighteen" (also as thousands: 11,000, 18,000,000).
        an = whole.startswith("8") or (whole.startswith(("11", "18")) and len(whole) % 3 == 2)
    else:
        an = (word[:1] in "aeiou" and not word.startswith(_A_BEFORE)) or word.startswith(_AN_BEFORE)
    return f"{'an' if an else 'a'} {phrase}"


def capitalise(text: str) -> str:
    """First letter upper-cased, the rest untouched ("WeChat" stays "WeChat", unlike ``str.capitalize``)."""
    return text[:1].upper() + text[1:]


def number(n: float) -> str:
    """A count or amount as text: whole numbers without a decimal point or exponent, others to one decimal."""
    n = float(n)
    return str(int(n)) if n.is_integer() else f"{n:.1f}"


def count(n: float, noun: str, locale: str) -> str:
    """A counted noun in English ("1 contact", "3 contacts"); the bare number in zh-CN, whose templates carry the measure word."""
    if locale != "en":
        return number(n)
    singular, plural = NOUNS[noun]
    return f"{number(n)} {singular if float(n) == 1 else plural}"


def times(n: int, locale: str) -> str:
    """How often ("once", "3 times"; "一次", "3次")."""
    return render("times_once", locale) if n <= 1 else render("times_many", locale, times_n=count(n, "time", locale))


def channel_name(channel: str, locale: str) -> str:
    """The channel as the reps call it."""
    return CHANNEL_NAMES[locale][channel]


def topic_name(topic: str, locale: str) -> str:
    """A content topic as the reps call it."""
    return TOPIC_NAMES[locale][topic]


def slot_name(weekday: int, daypart: int, locale: str) -> str:
    """A weekday and daypart ("Tuesday morning", "周二上午")."""
    sep = " " if locale == "en" else ""
    return f"{WEEKDAY_NAMES[locale][WEEKDAYS[weekday]]}{sep}{DAYPART_NAMES[locale][DAYPARTS[daypart]]}"


def rule_name(rule: str, locale: str) -> str:
    """A guardrail or rule-policy rule as a rep reads it (codes stay in the API and the audit trail)."""
    return RULE_NAMES[locale][rule]


def lifecycle_name(stage: str, locale: str) -> str:
    """A product lifecycle stage as a rep reads it (unknown stages pass through)."""
    return LIFECYCLE_NAMES[locale].get(stage, stage)


def band_name(band: str, locale: str) -> str:
    """A likelihood band in the locale's words."""
    return BAND_NAMES[locale][band]


def render(key: str, locale: str, **values: object) -> str:
    """Template ``key`` of ``locale`` filled with ``values`` (a fragment: left as written)."""
    return TEMPLATES[locale][key].format(**values)


def sentence(key: str, locale: str, **values: object) -> str:
    """Template ``key`` rendered as a sentence: English ones start with a capital."""
    return capitalise(render(key, locale, **values))

"""Products with lifecycles and the content catalogue with approval windows."""

from __future__ import annotations

import datetime as dt

import numpy as np

from contract.schema import CHANNELS, CONTENT_FORMS, CONTENT_TYPES, DEPARTMENTS, LIFECYCLES, TOPICS

# (product id, therapeutic area, lifecycle): every lifecycle stage is represented.
PRODUCTS: tuple[tuple[str, str, str], ...] = (
    ("P01", "cardiology", "launch"),
    ("P02", "endocrinology", "growth"),
    ("P03", "nephrology", "maturity"),
    ("P04", "respiratory", "post_vbp"),
    ("P05", "oncology", "growth"),
    ("P06", "neurology", "maturity"),
)
# Departments without a product of their own get one of these chronic-disease products.
GENERALIST_PRODUCTS: tuple[str, ...] = ("P01", "P02", "P04")

# Which content types each channel can carry (phone carries none).
_SUITS: dict[str, tuple[str, ...]] = {
    "article": ("wechat_push", "email", "wecom_1to1"),
    "video": ("wechat_push", "email", "wecom_1to1"),
    "case": ("wechat_push", "email", "wecom_1to1", "visit", "department_meeting"),
    "e_detail": ("visit", "wecom_1to1", "email"),
    "meeting_invite": ("webinar", "conference", "department_meeting"),
}
SUITABILITY = np.array([[ch in _SUITS[t] for ch in CHANNELS] for t in CONTENT_TYPES])  # (types, channels)
# What a channel that suits no type carries in a world where it is not contentless: a call
# that discusses an article, a case or an e-detail.
_TALK_TYPES = ("article", "case", "e_detail")


def suitability(contentless: np.ndarray | None = None) -> np.ndarray:
    """(types, channels) mask of the content types each channel carries in a world with ``contentless`` channels."""
    if contentless is None:
        return SUITABILITY
    out = SUITABILITY.copy()
    talk = np.array([t in _TALK_TYPES for t in CONTENT_TYPES])
    for c in range(len(CHANNELS)):
        if contentless[c]:
            out[:, c] = False
        elif not out[:, c].any():
            out[:, c] = talk
    return out


_FORMS: dict[str, tuple[str, ...]] = {
    "article": ("long_read", "short_read", "infographic"),
    "video": ("short_video", "long_video"),
    "case": ("long_read", "slides"),
    "e_detail": ("slides",),
    "meeting_invite": ("live", "slides"),
}
_TYPE_P = np.array([0.34, 0.2, 0.16, 0.15, 0.15])
# Evergreen items per product so every content channel always has something approved.
_EVERGREEN: tuple[tuple[str, str], ...] = (
    ("disease_info", "article"),
    ("clinical_data", "article"),
    ("clinical_data", "e_detail"),
    ("case_study", "case"),
    ("guideline", "meeting_invite"),
    ("patient_management", "video"),
)


def product_arrays() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Product ids, area (department index) and lifecycle index."""
    ids = [p[0] for p in PRODUCTS]
    area = np.array([DEPARTMENTS.index(p[1]) for p in PRODUCTS], dtype=np.int64)
    life = np.array([LIFECYCLES.index(p[2]) for p in PRODUCTS], dtype=np.int64)
    return ids, area, life


def _us(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000


def build_content(rng: np.random.Generator, start: dt.date, days: int, per_product: int, quality_sd: float) -> dict[str, np.ndarray | list[str]]:
    """The catalogue: evergreen items plus random ones, some expiring and some approved mid-period."""
    n_prod = len(PRODUCTS)
    ev_topic = np.array([TOPICS.index(t) for t, _ in _EVERGREEN])
    ev_type = np.array([CONTENT_TYPES.index(c) for _, c in _EVERGREEN])
    n_ev = len(_EVERGREEN)
    product = np.concatenate([np.repeat(np.arange(n_prod), n_ev), np.repeat(np.arange(n_prod), per_product)])
    topic = np.concatenate([np.tile(ev_topic, n_prod), rng.integers(0, len(TOPICS), n_prod * per_product)])
    ctype = np.concatenate([np.tile(ev_type, n_prod), rng.choice(len(CONTENT_TYPES), n_prod * per_product, p=_TYPE_P)])
    k = len(product)
    form = np.empty(k, dtype=np.int64)
    u = rng.random(k)
    for t, name in enumerate(CONTENT_TYPES):
        options = np.array([CONTENT_FORMS.index(f) for f in _FORMS[name]])
        sel = ctype == t
        form[sel] = options[np.minimum((u[sel] * len(options)).astype(np.int64), len(options) - 1)]
    start_us, day_us = _us(start), 86_400 * 1_000_000
    period = days * day_us
    kind = np.concatenate([np.zeros(n_prod * n_ev, dtype=np.int64), rng.choice(3, n_prod * per_product, p=[0.6, 0.2, 0.2])])
    frm = start_us - rng.integers(30, 400, k) * day_us
    until = start_us + period + rng.integers(30, 400, k) * day_us
    expiring = kind == 1
    until[expiring] = start_us + (rng.uniform(0.15, 0.9, expiring.sum()) * days).astype(np.int64) * day_us
    fresh = kind == 2
    frm[fresh] = start_us + (rng.uniform(0.1, 0.8, fresh.sum()) * days).astype(np.int64) * day_us
    until[fresh] = frm[fresh] + rng.integers(365, 730, fresh.sum()) * day_us
    # Order by product then approval so ids read naturally in the catalogue.
    order = np.lexsort((frm, product))
    product, topic, ctype, form, frm, until = (a[order] for a in (product, topic, ctype, form, frm, until))
    ids = [f"C{i + 1:05d}" for i in range(k)]
    years = (frm // (365 * day_us) + 1970).astype(np.int64)
    approval = [f"MLR-{PRODUCTS[p][0]}-{y}-{i + 1:04d}" for i, (p, y) in enumerate(zip(product.tolist(), years.tolist()))]
    return {
        "content_ids": ids,
        "content_product": product.astype(np.int64),
        "content_topic": topic.astype(np.int64),
        "content_type": ctype.astype(np.int64),
        "content_form": form,
        "content_approval": approval,
        "content_from_us": frm.astype(np.int64),
        "content_until_us": until.astype(np.int64),
        "content_quality": rng.normal(0.0, quality_sd, k),
    }

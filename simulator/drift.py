"""Drift injection: what changes in the world at a scheduled week, all from ``SimulatorConfig.drift``.

Three kinds, each deterministic by the world's seed and drawn from RNG streams of their own,
so a world without drift is byte-identical to one built before drift existed:

- a channel's response shifts (``drift.events``; applied in ``Oracle.drift_logit``);
- a new content topic appears (``drift.content``): campaign items appended to the catalogue,
  approved from the campaign's week (``add_campaigns``);
- the population shifts (``drift.population``): a cohort of HCPs, drawn by hospital tier, is
  onboarded only at the shift's week (``onboarding_week``); before it they have no consent, so
  no policy may touch them and no suggestion is asked for them.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from contract.schema import CONTENT_FORMS, CONTENT_TYPES, TOPICS

_DAY_US = 86_400 * 1_000_000
# Seed-stream tags: distinct from the world's, the environment's and each other.
_CAMPAIGN_STREAM, _POPULATION_STREAM = 0xCA4A16, 0x909017
# One form per content type for campaign items (first of the type's forms in the catalogue).
_CAMPAIGN_FORM = {"article": "short_read", "video": "short_video", "case": "long_read", "e_detail": "slides", "meeting_invite": "live"}


def _week_start_us(start: dt.date, week: int) -> int:
    day = start + dt.timedelta(weeks=week)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000


def add_campaigns(content: dict, cfg) -> dict:
    """The catalogue arrays of ``build_content`` with every ``drift.content`` campaign's items appended."""
    if not cfg.drift.content:
        return content
    out = {k: (list(v) if isinstance(v, list) else np.asarray(v)) for k, v in content.items()}
    n_prod = int(out["content_product"].max()) + 1 if len(out["content_product"]) else 0
    from simulator.catalogue import PRODUCTS

    for i, camp in enumerate(cfg.drift.content):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _CAMPAIGN_STREAM, i]))
        per = camp.items_per_product
        product = np.repeat(np.arange(n_prod), per)
        # Types cycle so each product's campaign reaches every content channel.
        ctype = np.tile(np.arange(per) % len(CONTENT_TYPES), n_prod)
        form = np.array([CONTENT_FORMS.index(_CAMPAIGN_FORM[CONTENT_TYPES[t]]) for t in ctype], dtype=np.int64)
        # Approved two days before the campaign's Monday: eligible for the whole of that week.
        frm = np.full(len(product), _week_start_us(cfg.start_date, camp.week) - 2 * _DAY_US, dtype=np.int64)
        until = frm + 540 * _DAY_US
        first = len(out["content_ids"])
        year = dt.datetime.fromtimestamp(int(frm[0]) // 1_000_000, dt.UTC).year if len(frm) else cfg.start_date.year
        out["content_ids"] += [f"C{first + j + 1:05d}" for j in range(len(product))]
        out["content_approval"] += [f"MLR-{PRODUCTS[p][0]}-{year}-{first + j + 1:04d}" for j, p in enumerate(product.tolist())]
        extra = {
            "content_product": product,
            "content_topic": np.full(len(product), TOPICS.index(camp.topic), dtype=np.int64),
            "content_type": ctype.astype(np.int64),
            "content_form": form,
            "content_from_us": frm,
            "content_until_us": until,
            "content_quality": camp.quality + rng.normal(0.0, 0.1, len(product)),
        }
        for key, value in extra.items():
            out[key] = np.concatenate([out[key], value.astype(out[key].dtype)])
    return out


def onboarding_week(tiers: np.ndarray, cfg) -> np.ndarray:
    """Per HCP the week from which it is onboarded (0 for everyone without a population shift)."""
    n = len(tiers)
    week = np.zeros(n, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    for i, shift in enumerate(cfg.drift.population):
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _POPULATION_STREAM, i]))
        weight = np.asarray(shift.tier_weights, dtype=float)[tiers] * ~taken
        k = min(int(round(shift.share * n)), int((weight > 0).sum()))
        if k == 0:
            continue
        # Gumbel top-k: a weighted draw without replacement, one vectorised pass.
        keys = np.where(weight > 0, np.log(np.where(weight > 0, weight, 1.0)) - np.log(-np.log(rng.random(n))), -np.inf)
        cohort = np.argsort(-keys, kind="stable")[:k]
        week[cohort] = shift.week
        taken[cohort] = True
    return week

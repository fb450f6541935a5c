"""A rep's day: the HCPs to contact and how, ranked by expected value and packed into capacity."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import REP_TIME_CHANNELS
from serving.engine import Recommender, RequestError, Suggestions
from serving.guardrails import pack_capacity

# Tiers A and B are today's targets; C, D and unsegmented HCPs are not (yet).
TARGET_SEGMENTS = ("A", "B")


def expected_value(expected_response: np.ndarray, potential: np.ndarray) -> np.ndarray:
    """Value of a contact: P(response) weighted by the HCP's potential (log-damped, >= 1)."""
    return np.asarray(expected_response, dtype=np.float64) * (1.0 + np.log1p(np.maximum(np.asarray(potential, dtype=np.float64), 0.0)))


def plan_day(
    rec: Recommender,
    rep_id: str,
    day: date,
    *,
    visit_capacity: int | None = None,
    message_capacity: int | None = None,
    include_territory: bool = False,
    now: datetime | None = None,
    locale: str | None = None,
) -> tuple[pd.DataFrame, Suggestions, int, int, int]:
    """Packed contacts for ``rep_id`` on ``day``: (plan rows in order, the scored request, capacities, deferred count).

    Every contact falls on ``day`` in its HCP's local time (the engine's one-day horizon; the
    remaining dayparts when it is today). ``now``: the server's clock, which decides the decision
    time and content approval (``serving.clock``); None plans as of noon UTC the day before.
    """
    from serving.clock import plan_time

    ref = rec.reference
    own = ref.rep_hcps(rep_id)
    if not own:
        raise RequestError(f"rep_id: no HCPs are assigned to rep {rep_id!r}")
    try:
        v_cap, m_cap = ref.capacity(rep_id)
    except KeyError:
        v_cap, m_cap = 0, 0
    v_cap = v_cap if visit_capacity is None else visit_capacity
    m_cap = m_cap if message_capacity is None else message_capacity
    hcps = ref.territory_hcps(rep_id) if include_territory else own
    try:
        result = rec.recommend(hcps, k=1, as_of=plan_time(day, now), rep_id=rep_id, decision_date=day, clock=now, locale=locale)
    except RequestError as exc:  # the engine names its own parameter; the plan's is ``date``
        raise RequestError(str(exc).replace("decision_date: ", "date: ", 1).replace("without a decision_date", "with /recommend")) from None
    f = result.frame
    pos = pd.Index(hcps).get_indexer(f["hcp_id"])
    ev = expected_value(f["expected_response"].to_numpy(), np.asarray(result.potential)[pos])
    uses_visit = f["channel"].isin(REP_TIME_CHANNELS).to_numpy()
    keep = pack_capacity(ev, uses_visit, v_cap, m_cap)
    segment = ref.hcps["segment"].reindex(f["hcp_id"]).to_numpy(dtype=object)
    plan = f.assign(expected_value=ev, potential=np.asarray(result.potential)[pos], not_yet_target=~pd.Series(segment).isin(TARGET_SEGMENTS).to_numpy())
    plan = plan[keep].sort_values("expected_value", ascending=False, kind="stable").reset_index(drop=True)
    plan["order"] = np.arange(1, len(plan) + 1)
    return plan, result, v_cap, m_cap, int((~keep).sum())


def plan_payload(plan: pd.DataFrame, locale: str = "en") -> list[dict[str, Any]]:
    """Plan rows as API dicts (the JSON boundary), each with what its expected value counts in ``locale``."""
    from serving.reasons import contact_explanations
    from serving.service_io import suggestion_dicts

    sugg = suggestion_dicts(plan)
    potential = plan["potential"] if "potential" in plan else np.zeros(len(plan))
    why = contact_explanations(plan["expected_value"], plan["expected_response"], potential, plan["not_yet_target"], locale)
    return [
        {"order": int(o), "hcp_id": h, "expected_value": float(v), "not_yet_target": bool(t), "explanation": e, "suggestion": s}
        for o, h, v, t, e, s in zip(plan["order"], plan["hcp_id"], plan["expected_value"], plan["not_yet_target"], why, sugg)
    ]

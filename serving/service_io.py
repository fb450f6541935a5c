"""Turning scored frames into the API's JSON shapes (the one place rows become dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from serving.engine import Suggestions

_FIELDS = (
    "suggestion_id",
    "rank",
    "channel",
    "content_id",
    "window_start_local",
    "window_end_local",
    "timezone",
    "expected_response",
    "propensity",
    "policy",
    "degraded",
    "reasons",
    "rules_applied",
)


def _list(col: Any) -> list:
    return col.tolist() if hasattr(col, "tolist") else list(col)


def suggestion_dicts(frame: pd.DataFrame | Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per suggestion row, with API field names (from a frame or ``Suggestions.columns``)."""
    cols = [_list(frame[c]) for c in _FIELDS]
    out = []
    for sid, rank, ch, cid, ws, we, tz, er, p, pol, dg, rs, ra in zip(*cols):
        out.append(
            {
                "suggestion_id": sid,
                "rank": int(rank),
                "channel": ch,
                "content_id": cid,
                "window_start": ws,
                "window_end": we,
                "timezone": tz,
                "expected_response": round(float(er), 6),
                "propensity": round(float(p), 6),
                "policy": pol,
                "degraded": bool(dg),
                "reasons": rs,
                "rules_applied": ra,
            }
        )
    return out


def recommend_payload(result: Suggestions, hcp_ids: list[str]) -> dict[str, Any]:
    """The /recommend response body: suggestions grouped per requested HCP, in request order."""
    by_hcp: dict[str, list] = {}
    for hcp, s in zip(_list(result.columns["hcp_id"]), suggestion_dicts(result.columns)):
        by_hcp.setdefault(hcp, []).append(s)
    seen: set[str] = set()
    results = []
    for h in hcp_ids:  # a repeated id is answered once
        if h not in seen:
            seen.add(h)
            results.append({"hcp_id": h, "suggestions": by_hcp.get(h, [])})
    # A micro-batched result covers other callers' ids too: list only this caller's unknown ones.
    unknown = [h for h in result.unknown_hcp_ids if h in seen]
    warnings = list(result.warnings)
    if unknown:
        warnings.append(f"{len(unknown)} unknown HCP id(s) (in no reference table and not online): nothing suggested for them")
    return {
        "request_id": result.request_id,
        "model_version": result.model_version,
        "as_of": result.as_of,
        "degraded": bool(any(h in seen for h in result.degraded_hcp_ids) or any(x["degraded"] for r in results for x in r["suggestions"])),
        "notes": result.notes,
        "results": results,
        "unknown_hcp_ids": unknown,
        "warnings": warnings,
    }


def recommend_json(result: Suggestions, hcp_ids: list[str]) -> bytes:
    """The /recommend response body encoded as JSON (the shape of ``schemas.RecommendResponse``)."""
    import pydantic_core

    return pydantic_core.to_json(recommend_payload(result, hcp_ids))

"""Drift figures on reference vs current frames: pure functions, no I/O.

Frames come from the audit trail (what serving saw: one feature row per HCP and request, one
prediction row per served suggestion) or from a training run's data. Per-column drift scores
are Evidently's own distance tests (normed Wasserstein for numbers, Jensen-Shannon for
categories) run column by column, every row; the mixes of served channels and content and the
touchpoint-sequence summaries are plain distributions compared here.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS

SEQ_ARRAYS = ("seq_channel", "seq_content_id", "seq_response", "seq_read_seconds", "seq_gap_days", "seq_weekday", "seq_daypart")
# Integer codes of the profile (indices into the contract's tuples): categories, not quantities.
CATEGORICAL_CODES = ("segment", "hospital_tier", "department", "title", "lifecycle")
# Recorded by serving only as the denominators of the 30-day open rates (so a rate is compared
# over contacted rows): how often a channel was used is monitored through the 7- and 90-day
# counts; the 30-day ones would count a seasonal event calendar twice.
DENOMINATORS_ONLY = frozenset(f"{ch}_sent_30d" for ch in CHANNELS)
# Columns that identify a row rather than describe the HCP.
NON_FEATURES = frozenset({"hcp_id", "event_timestamp", "as_of", "request_id", "suggestion_id", "rep_id", "is_missing", "created_at"})
PREDICTION_COLUMNS = ("channel", "content_id", "expected_response")


def decode_features(documents: Iterable[str]) -> pd.DataFrame:
    """One row per JSON document of feature values (the audit trail's ``features_json``)."""
    import pyarrow as pa
    import pyarrow.json as pj

    docs = list(documents)
    if not docs:
        return pd.DataFrame()
    try:
        # Arrow's multi-threaded reader: ~5x pandas' on 100k documents. List columns (the
        # touchpoint sequences) stay Arrow-backed: summaries then run on flat buffers, not per row.
        tbl = pj.read_json(io.BytesIO("\n".join(docs).encode()))
    except (pa.ArrowInvalid, ValueError):
        tbl = None
    if tbl is not None:
        lists = [f.name for f in tbl.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
        out = tbl.drop_columns(lists).to_pandas()
        for name in lists:
            out[name] = pd.Series(pd.arrays.ArrowExtensionArray(tbl.column(name)), index=out.index)
        return out[[f.name for f in tbl.schema]]
    # A document Arrow rejects (bad JSON, or types it cannot unify): parse one by one to name the row.
    rows = []
    for i, d in enumerate(docs):
        try:
            rows.append(json.loads(d))
        except json.JSONDecodeError as exc:
            raise ValueError(f"audit features_json row {i}: not valid JSON ({exc.msg})") from None
    return pd.DataFrame.from_records(rows)


def served_features(suggestions: pd.DataFrame) -> pd.DataFrame:
    """Feature values serving used, one row per (request, HCP): the k suggestions of a slate share them."""
    from serving.audit import SHARED_PREFIX

    if suggestions.empty:
        return pd.DataFrame()
    # Serving stores the document once per slate; the slate's other rows point at it.
    own = suggestions[~suggestions["features_json"].astype(str).str.startswith(SHARED_PREFIX)]
    first = own.drop_duplicates(["request_id", "hcp_id"], keep="first")
    feats = decode_features(first["features_json"])
    feats.index = first.index
    out = pd.concat([first[["hcp_id", "as_of"]], feats.drop(columns=[c for c in ("hcp_id", "as_of") if c in feats.columns])], axis=1)
    return out.reset_index(drop=True)


def served_predictions(suggestions: pd.DataFrame) -> pd.DataFrame:
    """What the model served: channel, content and expected response of every non-holdout suggestion."""
    if suggestions.empty:
        return pd.DataFrame(columns=[*PREDICTION_COLUMNS, "policy", "rank"])
    rows = suggestions[suggestions["policy"] != "holdout"]
    out = rows[["channel", "content_id", "expected_response", "policy", "rank"]].copy()
    out["content_id"] = out["content_id"].fillna("")
    return out.reset_index(drop=True)


def _flat(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, concatenated values) of a column of lists / arrays (None counts as empty)."""
    if isinstance(col.dtype, pd.ArrowDtype):
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.chunked_array(col.array.__arrow_array__())
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy().astype(np.int64)
        return lengths, pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    vals = [np.asarray(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else np.zeros(0) for v in col.tolist()]
    lengths = np.fromiter((len(v) for v in vals), dtype=np.int64, count=len(vals))
    flat = np.concatenate(vals) if lengths.sum() else np.zeros(0)
    return lengths, flat


def _row_mean(lengths: np.ndarray, flat: np.ndarray) -> np.ndarray:
    sums = np.zeros(len(lengths))
    if len(flat):
        row = np.repeat(np.arange(len(lengths)), lengths)
        sums = np.bincount(row, weights=flat.astype(float), minlength=len(lengths))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(lengths > 0, sums / np.maximum(lengths, 1), np.nan)


def sequence_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row, summary statistics of the touchpoint sequence (last N touches) when the arrays are present."""
    out = pd.DataFrame(index=frame.index)
    if "seq_channel" not in frame.columns:
        if "seq_len" in frame.columns:
            out["seq_len"] = frame["seq_len"].astype(float)
        return out
    lengths, ch = _flat(frame["seq_channel"])
    out["seq_len"] = lengths.astype(float)
    row = np.repeat(np.arange(len(lengths)), lengths)
    for i, name in enumerate(CHANNELS):
        hits = np.bincount(row, weights=(ch == i).astype(float), minlength=len(lengths)) if len(ch) else np.zeros(len(lengths))
        out[f"seq_share_{name}"] = np.where(lengths > 0, hits / np.maximum(lengths, 1), np.nan)
    if "seq_response" in frame.columns:
        from features.events import POSITIVE_RESPONSE_CODE

        # The response code is ordinal (0 undelivered .. 3 engaged): the rate is the share of positive touches.
        n, codes = _flat(frame["seq_response"])
        out["seq_response_rate"] = _row_mean(n, (np.asarray(codes, dtype=float) >= POSITIVE_RESPONSE_CODE).astype(float))
    for src, name in (("seq_gap_days", "seq_gap_days_mean"), ("seq_read_seconds", "seq_read_seconds_mean")):
        if src in frame.columns:
            out[name] = _row_mean(*_flat(frame[src]))
    return out


def sequence_content(frame: pd.DataFrame) -> np.ndarray:
    """Every content id in the frame's touchpoint sequences (empty ids dropped)."""
    if "seq_content_id" not in frame.columns:
        return np.zeros(0, dtype=object)
    _, flat = _flat(frame["seq_content_id"])
    flat = flat.astype(object)
    return flat[(flat != "") & pd.notna(flat)]


def feature_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns both frames hold, arrays and ids left out."""
    numeric, categorical = [], []
    for name in reference.columns:
        if name in NON_FEATURES or name in SEQ_ARRAYS or name in DENOMINATORS_ONLY or name not in current.columns:
            continue
        r = reference[name]
        if r.dtype == object:
            continue
        if pd.api.types.is_bool_dtype(r) or name in CATEGORICAL_CODES:
            categorical.append(name)
        elif pd.api.types.is_numeric_dtype(r) and not pd.api.types.is_datetime64_any_dtype(r):
            numeric.append(name)
    return numeric, categorical


# Per-contact figures (open rate, read time) and the count of contacts they are taken over: a
# rate is 0 where nothing was sent, so unconditioned it moves whenever the policy sends a channel
# more often (a seasonal conference programme) though no HCP answers differently.
_PER_CONTACT = re.compile(r"^(?P<prefix>.*?)(?:open_rate|mean_read_seconds|read_seconds)_(?P<window>\d+d)$")
MIN_CONTACT_ROWS = 30


def contact_column(name: str, columns: Iterable[str]) -> str | None:
    """The ``*_sent_<window>`` column a per-contact feature is taken over (None if it is not one)."""
    m = _PER_CONTACT.match(name)
    if not m:
        return None
    sent = f"{m['prefix']}sent_{m['window']}"
    return sent if sent in set(columns) else None


def _given_contact(frame: pd.DataFrame, name: str) -> pd.Series:
    """A per-contact feature's values on rows with at least one contact in its window (others dropped)."""
    col = frame[name].astype(float)
    sent = contact_column(name, frame.columns)
    if sent is None:
        return col.dropna()
    return col[pd.to_numeric(frame[sent], errors="coerce").fillna(0).to_numpy() > 0].dropna()


def column_scores(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    num_method: str = "wasserstein",
    cat_method: str = "jensenshannon",
    threshold: float = 0.1,
) -> pd.DataFrame:
    """Evidently's drift test per column (every row): column, kind, method, score, drifted; most-moved first."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    rows = []
    for kind, names, method, ctype in (
        ("numeric", numeric, num_method, ColumnType.Numerical),
        ("categorical", categorical, cat_method, ColumnType.Categorical),
    ):
        for name in names:
            r, c = reference[name], current[name]
            note = ""
            if kind == "numeric":
                r, c = _given_contact(reference, name), _given_contact(current, name)
                if contact_column(name, reference.columns) and contact_column(name, current.columns):
                    note = "rows with a contact in the window"
                    if min(len(r), len(c)) < MIN_CONTACT_ROWS:
                        rows.append(
                            {
                                "column": name,
                                "kind": kind,
                                "method": method,
                                "score": np.nan,
                                "drifted": False,
                                "note": f"fewer than {MIN_CONTACT_ROWS} rows with a contact on one side",
                            }
                        )
                        continue
            else:
                r, c = _categories(r), _categories(c)
            if r.empty or c.empty:
                rows.append({"column": name, "kind": kind, "method": method, "score": np.nan, "drifted": False, "note": "no values on one side"})
                continue
            test = get_stattest(r, c, ctype, method)
            res = test(r, c, ctype, threshold)
            rows.append(
                {"column": name, "kind": kind, "method": test.display_name, "score": float(res.drift_score), "drifted": bool(res.drifted), "note": note}
            )
    out = pd.DataFrame(rows, columns=["column", "kind", "method", "score", "drifted", "note"])
    return out.sort_values("score", ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _categories(col: pd.Series) -> pd.Series:
    """Category labels comparable across sources: codes and flags as numbers (JSON turns an int
    column with a null into floats and 1 would not match 1.0), missing values dropped."""
    col = col.dropna()
    num = pd.to_numeric(col.astype(object).map(lambda v: float(v) if isinstance(v, (bool, np.bool_)) else v), errors="coerce")
    if num.notna().all():
        return num.astype(float).astype(str)
    return col.astype(str)


def noise_floor(reference: pd.DataFrame, columns: Sequence[str], score: Any) -> dict[str, float]:
    """Each column's drift score between the reference window's earlier and later weeks, by ``score(early, late)``:
    how far it moves with no drift declared (rare-channel rates move a lot; profiles not at all)."""
    if "as_of" not in reference.columns or reference["as_of"].nunique() < 2:
        return {}
    weeks = np.sort(reference["as_of"].unique())
    cut = weeks[len(weeks) // 2]
    early, late = reference[reference["as_of"] < cut], reference[reference["as_of"] >= cut]
    s = score(early, late)
    return {c: float(v) for c, v in zip(s["column"], s["score"]) if c in set(columns) and np.isfinite(v)}


def with_floor(scores: pd.DataFrame, floor: dict[str, float], multiple: float, threshold: float) -> pd.DataFrame:
    """Scores with the noise floor beside them; a column counts as drifted past max(threshold, multiple x floor)."""
    out = scores.copy()
    out["floor"] = out["column"].map(floor).fillna(0.0).astype(float)
    out["drifted"] = out["score"] >= np.maximum(threshold, multiple * out["floor"])
    return out


def mix(values: Iterable[Any], categories: Sequence[Any]) -> np.ndarray:
    """Shares of ``categories`` among ``values`` (zeros when empty)."""
    counts = pd.Series(list(values), dtype=object).value_counts()
    v = counts.reindex(list(categories), fill_value=0).to_numpy(dtype=float)
    return v / v.sum() if v.sum() else v


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance of two distributions on the same categories (0 same .. 1 disjoint)."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2: 0 same .. 1 disjoint)."""
    from scipy.spatial.distance import jensenshannon

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if not p.sum() or not q.sum():
        return float("nan")
    return float(jensenshannon(p, q, base=2))


def unseen_share(reference: Iterable[Any], current: Iterable[Any]) -> float:
    """Share of ``current`` items whose value never occurs in ``reference`` (NaN when current is empty)."""
    seen = set(reference)
    cur = list(current)
    if not cur:
        return float("nan")
    return float(sum(v not in seen for v in cur) / len(cur))


def prediction_drift(reference: pd.DataFrame, current: pd.DataFrame, reference_content: Iterable[str] = ()) -> dict[str, float]:
    """Channel mix (TVD), content mix (JS) and unseen content share of served suggestions."""
    ch_ref, ch_cur = mix(reference["channel"], CHANNELS), mix(current["channel"], CHANNELS)
    content_ref = reference.loc[reference["content_id"] != "", "content_id"]
    content_cur = current.loc[current["content_id"] != "", "content_id"]
    cats = sorted(set(content_ref) | set(content_cur))
    return {
        "channel_mix_tvd": total_variation(ch_ref, ch_cur),
        "content_mix_js": js_distance(mix(content_ref, cats), mix(content_cur, cats)),
        "new_content_share": unseen_share(set(content_ref) | set(reference_content), content_cur),
        **{f"channel_share_ref_{c}": float(v) for c, v in zip(CHANNELS, ch_ref)},
        **{f"channel_share_cur_{c}": float(v) for c, v in zip(CHANNELS, ch_cur)},
    }


def catalogue_coverage(catalogue: pd.DataFrame, known: Iterable[str], as_of: Iterable[Any]) -> dict[str, Any]:
    """Approved content serving could suggest at some time of ``as_of`` that a model's vocabulary (``known``) cannot score.

    ``catalogue``: content_id, topic, approved_from, approved_until (the contract's content table,
    as serving loads it); an item counts when it was approved at one of the window's suggestion
    times. A model suggests content only from the vocabulary it was trained with, so a new
    campaign -- items, or a whole topic, approved after training -- is invisible to every served
    figure until the model is retrained: this is where it shows first.
    """
    known = set(map(str, known))
    times = np.unique(pd.to_datetime(pd.Series(list(as_of)), utc=True).dropna().to_numpy(dtype="datetime64[ns]").astype(np.int64))
    frm = pd.to_datetime(catalogue["approved_from"], utc=True)
    until = pd.to_datetime(catalogue["approved_until"], utc=True)
    valid = (frm.notna() & until.notna()).to_numpy()
    active = np.zeros(len(catalogue), dtype=bool)
    if len(times):
        f = frm.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        u = until.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        # The first suggestion time at or after approval; active if it is before expiry.
        first = np.searchsorted(times, f, side="left")
        active = valid & (first < len(times)) & (times[np.minimum(first, len(times) - 1)] < u)
    rows = catalogue.loc[active]
    ids = rows["content_id"].astype(str)
    unknown = ~ids.isin(known)
    topics = rows["topic"].astype(str)
    known_topics = set(topics[~unknown])
    by_topic = topics[unknown].value_counts().sort_index()
    return {
        "active_items": int(len(rows)),
        "unknown_items": int(unknown.sum()),
        "unknown_share": float(unknown.mean()) if len(rows) else 0.0,
        "unknown_by_topic": {str(k): int(v) for k, v in by_topic.items()},
        "topics_without_known_items": sorted(set(topics[unknown]) - known_topics),
        "topic_mix": {str(k): float(v) for k, v in topics.value_counts(normalize=True).sort_index().items()},
    }


def catalogue_shift(current: dict[str, Any], reference: dict[str, Any] | None) -> dict[str, Any]:
    """Current catalogue coverage against the reference's: the rise in unscorable share and the topic-mix distance."""
    ref_share = float(reference["unknown_share"]) if reference else 0.0
    topics = sorted(set(current["topic_mix"]) | set((reference or {}).get("topic_mix", {})))
    js = (
        js_distance(np.array([reference["topic_mix"].get(t, 0.0) for t in topics]), np.array([current["topic_mix"].get(t, 0.0) for t in topics]))
        if reference and topics
        else float("nan")
    )
    new_topics = sorted(set(current["topics_without_known_items"]) - set((reference or {}).get("topics_without_known_items", [])))
    return {
        "current": current,
        "reference": reference,
        "unknown_share_rise": float(current["unknown_share"]) - ref_share,
        "topic_mix_js": js,
        "new_topics": new_topics,
    }


# Feature groups, because they drift for different reasons: the profile moves only when the served
# population changes; response features (opens, reads, replies, outcomes) when HCPs answer
# differently; activity features (what was sent, when, on which channel) move whenever the
# policy itself changes -- a new champion shifts them for months -- so they get a higher bar.
_PROFILE_NAMES = frozenset({*CATEGORICAL_CODES, "is_kol", "beds", "potential_boxes_month", "support_share", "profile_completeness", "profile_qualified"})
_RESPONSE_MARKS = (
    "opened",
    "open_rate",
    "read_seconds",
    "forwarded",
    "replied",
    "attended",
    "engaged",
    "inbound",
    "favourited",
    "unopened",
    "last_open",
    "suggestions_",
    "acceptance",
    "rx_",
    "market_",
    "share_",
    "weeks_with_rx",
    "response",
)


def feature_group(name: str) -> str:
    """``profile``, ``response`` or ``activity`` (see above) for a feature or sequence statistic."""
    if name in _PROFILE_NAMES or name.startswith("consent_"):
        return "profile"
    if name.startswith("seq_share_"):
        return "activity"
    if any(m in name for m in _RESPONSE_MARKS):
        return "response"
    return "activity"


def _group_figures(scores: pd.DataFrame, bars: dict[str, float], multiple: float) -> dict[str, dict[str, Any]]:
    """Per group: share drifted, the most-moved feature, and the first one past max(bar, multiple x its noise floor)."""
    out = {}
    scored = scores.dropna(subset=["score"])
    groups = scored["column"].map(feature_group) if len(scored) else pd.Series(dtype=object)
    for g in ("profile", "response", "activity"):
        part = scored[groups == g] if len(scored) else scored
        floor = part["floor"] if "floor" in part.columns else pd.Series(0.0, index=part.index)
        past = part[part["score"] >= np.maximum(bars[g], multiple * floor)]
        out[g] = {
            "features": int(len(part)),
            "drifted_share": float(part["drifted"].mean()) if len(part) else 0.0,
            "max_score": float(part["score"].max()) if len(part) else 0.0,
            "top": str(part.iloc[0]["column"]) if len(part) else None,
            "past_bar": str(past.iloc[0]["column"]) if len(past) else None,
            "past_bar_score": float(past.iloc[0]["score"]) if len(past) else None,
        }
    return out


def response_rates(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per channel: share of served suggestions with a positive response (feedback opened / attended) in each window,
    and the two-proportion z statistic of the change."""
    out = {}
    for ch in CHANNELS:
        a, b = reference.loc[reference["channel"] == ch, "responded"], current.loc[current["channel"] == ch, "responded"]
        n0, n1 = len(a), len(b)
        if not n0 or not n1:
            continue
        p0, p1 = float(a.mean()), float(b.mean())
        pooled = (a.sum() + b.sum()) / (n0 + n1)
        se = float(np.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1)))
        out[ch] = {"reference_rate": p0, "current_rate": p1, "reference_n": n0, "current_n": n1, "z": (p1 - p0) / se if se > 0 else 0.0}
    return out


def verdict(
    features: pd.DataFrame,
    sequences: pd.DataFrame,
    predictions: dict[str, float] | None,
    score_drift: float | None,
    sequence_new_content: float | None,
    t: Any,
    responses: dict[str, dict[str, float]] | None = None,
    catalogue: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Which parts drifted against thresholds ``t`` (``experiments.config.Thresholds``), with the reasons."""
    reasons: list[str] = []
    scored = features.dropna(subset=["score"])
    n = len(scored)
    share = float(scored["drifted"].mean()) if n else 0.0
    top = float(scored["score"].max()) if n else 0.0
    m = t.noise_multiple
    g = _group_figures(features, {"profile": t.profile_score, "response": t.feature_score, "activity": t.activity_score}, m)
    floor_note = f", or {m:g}x its moves within the reference" if m else ""
    population = g["profile"]["past_bar"] is not None
    if population:
        p = g["profile"]
        reasons.append(
            f"the served population changed: profile feature {p['past_bar']} moved {p['past_bar_score']:.2f} (threshold {t.profile_score}{floor_note})"
        )
    response = g["response"]["drifted_share"] >= t.drifted_share or g["response"]["past_bar"] is not None
    if response:
        r = g["response"]
        lead = (
            f"{r['past_bar']} moved {r['past_bar_score']:.2f} (threshold {t.feature_score}{floor_note})"
            if r["past_bar"]
            else f"most moved: {r['top']} ({r['max_score']:.2f})"
        )
        reasons.append(
            f"HCP responses changed: {r['drifted_share']:.0%} of {r['features']} response features drifted (threshold {t.drifted_share:.0%}); {lead}"
        )
    moved_channels = []
    for ch, r in (responses or {}).items():
        # A channel's response rate to served suggestions moved: significant and large.
        if abs(r["z"]) >= t.response_z and abs(r["current_rate"] - r["reference_rate"]) >= t.response_rate_change * r["reference_rate"]:
            response = True
            moved_channels.append(ch)
            reasons.append(
                f"{ch} response rate to served suggestions moved {r['reference_rate']:.1%} -> {r['current_rate']:.1%} "
                f"(z {r['z']:.1f}; thresholds |z| {t.response_z}, relative change {t.response_rate_change:.0%})"
            )
    activity = g["activity"]["drifted_share"] >= t.activity_share or g["activity"]["past_bar"] is not None
    if activity:
        a = g["activity"]
        lead = (
            f"{a['past_bar']} moved {a['past_bar_score']:.2f} (threshold {t.activity_score}{floor_note})"
            if a["past_bar"]
            else f"most moved: {a['top']} ({a['max_score']:.2f})"
        )
        reasons.append(
            f"contact activity changed: {a['drifted_share']:.0%} of {a['features']} activity features drifted (threshold {t.activity_share:.0%}); {lead}"
        )
    data = bool(population or response or activity)
    seq_scored = sequences.dropna(subset=["score"])
    seq_top = float(seq_scored["score"].max()) if len(seq_scored) else 0.0
    seq = False
    for r in seq_scored.itertuples():
        limit = max(t.activity_score if feature_group(r.column) == "activity" else t.sequence_score, m * float(getattr(r, "floor", 0.0) or 0.0))
        if r.score >= limit:
            seq = True
            reasons.append(f"touchpoint sequences changed: {r.column} moved {r.score:.2f} (threshold {limit})")
            break
    if sequence_new_content is not None and np.isfinite(sequence_new_content) and sequence_new_content >= t.new_content_share:
        seq = True
        reasons.append(f"{sequence_new_content:.0%} of recent touches carry content never seen in the reference (threshold {t.new_content_share:.0%})")
    pred = False
    if predictions:
        checks = (
            ("channel_mix_tvd", t.channel_mix, "served channel mix moved (total variation {v:.2f})"),
            ("content_mix_js", t.content_mix, "served content mix moved (Jensen-Shannon {v:.2f})"),
            ("new_content_share", t.new_content_share, "{v:.0%} of served content was never served in the reference"),
        )
        for key, limit, text in checks:
            v = predictions.get(key)
            if v is not None and np.isfinite(v) and v >= limit:
                pred = True
                reasons.append(text.format(v=v) + f" (threshold {limit})")
    if score_drift is not None and np.isfinite(score_drift) and score_drift >= t.score:
        pred = True
        reasons.append(f"expected-response scores moved (normed Wasserstein {score_drift:.2f}, threshold {t.score})")
    cat = False
    if catalogue:
        cur = catalogue["current"]
        if catalogue["unknown_share_rise"] >= t.unknown_content_share or catalogue["new_topics"]:
            cat = True
            topics = ", ".join(f"{k} {v}" for k, v in cur["unknown_by_topic"].items())
            new_t = f"; topics the model has never seen: {', '.join(catalogue['new_topics'])}" if catalogue["new_topics"] else ""
            reasons.append(
                f"{cur['unknown_items']} of {cur['active_items']} approved content items ({cur['unknown_share']:.0%}; by topic: {topics}) "
                f"are unknown to the serving model, which cannot suggest them (rise {catalogue['unknown_share_rise']:+.0%}, "
                f"threshold {t.unknown_content_share:.0%}){new_t}"
            )
    return {
        "drift_detected": bool(data or seq or pred or cat),
        "data_drift": data,
        "population_drift": bool(population),
        "response_drift": bool(response),
        "activity_drift": bool(activity),
        "sequence_drift": bool(seq),
        "prediction_drift": bool(pred),
        "catalogue_drift": cat,
        "features_compared": n,
        "drifted_feature_share": share,
        "max_feature_score": top,
        "max_sequence_score": seq_top,
        "groups": g,
        "response_channels": moved_channels,
        "reasons": reasons,
    }


def next_steps(result: dict[str, Any], top: pd.DataFrame) -> list[str]:
    """What to do about the verdict, naming the features that moved most."""
    if not result["drift_detected"]:
        return ["no action: the current window looks like the reference"]
    moved = ", ".join(f"{r.column} ({r.score:.2f})" for r in top.itertuples()) or "none of the input features"
    steps = [
        f"retrain on recent data: `nba train` then `nba evaluate` and `nba promote` (or rerun `nba monitor ... --retrain`); features that moved most: {moved}"
    ]
    for ch in result.get("response_channels", []):
        steps.append(f"{ch}: HCPs' response to it changed; check its delivery and content, and retrain so the model's {ch} scores follow")
    if result.get("population_drift"):
        steps.append(
            "the served population changed (profile features moved): make sure the training window covers the new HCPs; check CRM onboarding and targeting"
        )
    if result.get("catalogue_drift"):
        steps.append(
            "new approved content the serving model cannot suggest: retrain now so it enters the content vocabulary "
            "(`nba train`, or `nba monitor ... --retrain`); until then only the rule-based holdout and reps can use it"
        )
    if result["prediction_drift"]:
        steps.append(
            "review the served mix before promoting: compare channel/content shares in the report with the reference; check the content catalogue for new or expired items"
        )
    if result["sequence_drift"] and not result["data_drift"]:
        steps.append("touchpoint histories changed (channel use, responses or new content): check upstream CRM exports and campaign calendars")
    return steps

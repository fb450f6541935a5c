"""The stacked-subset path (one Grid for every subset: a push of a few HCPs) equals the per-subset Grids (the batch build) bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import features.transforms as tr
from contract.schema import CHANNELS, CONTENT_TYPES, FEEDBACK_DECISIONS, TOPICS
from features.config import FeaturesConfig
from features.events import DAY_S, Events, Prepared, prepare

CFG = FeaturesConfig()
T_END = 1_767_571_200  # 2026-01-05 00:00 UTC
WINDOWS_S = sorted({w * DAY_S for w in (*CFG.engagement_windows_days, *CFG.contact_windows_days, CFG.visits_window_days, CFG.response_history_days)})


def _events_at(rng, n_hcps: int, n_events: int, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hcp, t) sorted by (hcp, t): random times plus ones exactly at T, T - 1 s, T - window and T - window - 1 s."""
    edges = np.concatenate([times, times - 1, *[times - w for w in WINDOWS_S], *[times - w - 1 for w in WINDOWS_S]])
    t = np.concatenate([rng.integers(T_END - 400 * DAY_S, T_END + 1, n_events), rng.choice(edges, n_events // 2 if n_events else 0)])
    hcp = rng.integers(0, n_hcps, len(t)).astype(np.int32)
    order = np.lexsort((t, hcp))
    return hcp[order], t[order].astype(np.int64)


def _random_prep(seed: int, n_hcps: int, n_events: int, times: np.ndarray) -> Prepared:
    """A prepared dataset of random events (some with no channel, no content or a content without topic)."""
    rng = np.random.default_rng(seed)
    hcp, t = _events_at(rng, n_hcps, n_events, times)
    n = len(t)
    n_content = 12
    flag = lambda p: rng.random(n) < p  # noqa: E731
    channel = rng.integers(-1, len(CHANNELS), n).astype(np.int8)  # -1: a row whose channel is null
    opened, forwarded, favourited, replied, attended = flag(0.4), flag(0.1), flag(0.1), flag(0.1), flag(0.2)
    # Fractions that do not add up exactly in float64: the per-subset running sums must be kept.
    read = (10.0 ** rng.uniform(-6, 3, n)).astype(np.float32) * flag(0.7)
    engaged = forwarded | favourited | replied | (read >= 60)
    delivered = flag(0.85)
    response = np.where(~delivered, 0, np.where(engaged, 3, np.where(opened, 2, 1))).astype(np.int8)
    events = Events(
        hcp=hcp,
        t=t,
        channel=channel,
        content=rng.integers(0, n_content + 1, n).astype(np.int32),
        inbound=flag(0.15),
        delivered=delivered,
        opened=opened,
        read_seconds=read,
        forwarded=forwarded,
        favourited=favourited,
        replied=replied,
        attended=attended,
        engaged=engaged,
        response=response,
        weekday=rng.integers(0, 7, n).astype(np.int8),
        daypart=rng.integers(0, 4, n).astype(np.int8),
        gap_days=np.zeros(n, np.float32),
    )
    f_hcp, f_t = _events_at(rng, n_hcps, n_events // 3, times)
    content_ids = np.array([f"c{i:02d}" for i in range(n_content)], dtype=object)
    return Prepared(
        hcp_ids=np.array([f"h{i:03d}" for i in range(n_hcps)], dtype=object),
        profile={},
        events=events,
        feedback_hcp=f_hcp,
        feedback_t=f_t,
        feedback_decision=rng.integers(-1, len(FEEDBACK_DECISIONS), len(f_t)).astype(np.int8),
        outcome_hcp=np.zeros(0, np.int32),
        outcome_t=np.zeros(0, np.int64),
        outcome_rx=np.zeros(0, np.int64),
        outcome_market=np.zeros(0, np.int64),
        content_vocab=np.concatenate([np.array([""], dtype=object), content_ids]),
        content_ids=content_ids,
        content_attrs={
            "topic": rng.integers(-1, len(TOPICS), n_content).astype(np.int8),
            "content_type": rng.integers(-1, len(CONTENT_TYPES), n_content).astype(np.int8),
        },
        cap=float(CFG.days_since_cap),
    )


def _all_features(prep: Prepared, times: np.ndarray) -> dict[str, np.ndarray]:
    return {
        **tr.engagement(prep, times, CFG.engagement_windows_days),
        **tr.recency(prep, times),
        **tr.visits(prep, times, CFG.visits_window_days),
        **tr.response_history(prep, times, CFG.response_history_days),
        **tr.contact_recency(prep, times, CFG.contact_windows_days),
    }


def _both_paths(monkeypatch, prep: Prepared, times: np.ndarray) -> tuple[dict, dict]:
    monkeypatch.setattr(tr, "STACK_MAX_CELLS", 0)  # one Grid per subset: the batch build's path
    general = _all_features(prep, times)
    monkeypatch.setattr(tr, "STACK_MAX_CELLS", 1 << 62)
    stacked = _all_features(prep, times)
    return general, stacked


def _assert_identical(general: dict, stacked: dict) -> None:
    assert list(general) == list(stacked)
    for name, a in general.items():
        b = stacked[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize(("n_hcps", "n_times"), [(1, 1), (3, 1), (4, 3)])
def test_stacked_equals_per_subset_grids(monkeypatch, seed, n_hcps, n_times):
    times = T_END - np.arange(n_times)[::-1] * 7 * DAY_S
    prep = _random_prep(seed, n_hcps, 300, times)
    general, stacked = _both_paths(monkeypatch, prep, times)
    _assert_identical(general, stacked)
    assert any(general[f"{ch}_read_seconds_30d"].any() for ch in CHANNELS)  # the float sums were exercised


def test_stacked_equals_per_subset_grids_without_events(monkeypatch):
    times = np.array([T_END])
    prep = _random_prep(7, 2, 0, times)
    assert len(prep.events) == 0 and len(prep.feedback_t) == 0
    general, stacked = _both_paths(monkeypatch, prep, times)
    _assert_identical(general, stacked)
    assert not stacked["touches_total"].any() and (stacked["days_since_last_touch"] == prep.cap).all()


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_stacked_counts_by_brute_force(monkeypatch, seed):
    """Window [T - w, T): an event at T - w counts, one at T does not; days since = the last event strictly before T."""
    times = np.array([T_END])
    prep = _random_prep(seed, 2, 200, times)
    monkeypatch.setattr(tr, "STACK_MAX_CELLS", 1 << 62)
    got = _all_features(prep, times)
    ev, T = prep.events, T_END
    for h in range(2):
        for ci, ch in enumerate(CHANNELS):
            for w in CFG.engagement_windows_days:
                m = (ev.hcp == h) & (ev.channel == ci) & ~ev.inbound & (ev.t >= T - w * DAY_S) & (ev.t < T)
                assert got[f"{ch}_sent_{w}d"][h, 0] == m.sum()
                assert got[f"{ch}_opened_{w}d"][h, 0] == ev.opened[m].sum()
                assert got[f"{ch}_read_seconds_{w}d"][h, 0] == pytest.approx(float(ev.read_seconds[m].astype(np.float64).sum()), rel=1e-6)
            before = ev.t[(ev.hcp == h) & (ev.channel == ci) & (ev.t < T)]
            want = min((T - before.max()) / DAY_S, prep.cap) if len(before) else prep.cap
            assert got[f"days_since_last_{ch}"][h, 0] == np.float32(want)
    # Events exactly at T and at T - w were drawn (the edge list feeds half the events).
    assert (ev.t == T).any() and (ev.t == T - 7 * DAY_S).any()


def test_large_requests_keep_one_grid_per_subset():
    """Above STACK_MAX_CELLS the batch path builds no stacked grid (bounded memory, no sort of all events)."""
    times = np.array([T_END])
    prep = _random_prep(3, 4, 50, times)
    ev = prep.events
    big = tr.Subsets(ev.hcp, ev.t, prep.n_hcps, [(ev.channel, len(CHANNELS))], np.arange(tr.STACK_MAX_CELLS + 1), 0)
    assert not big.stacked and big.k == len(CHANNELS)
    small = tr.Subsets(ev.hcp, ev.t, prep.n_hcps, [(ev.channel, len(CHANNELS))], times, 0)
    assert small.stacked


def test_prepare_caches_content_of_an_arrow_table_and_equals_pandas(tables):
    """The content arrays of an Arrow table are reused across calls (read-only); a DataFrame gives the same arrays."""
    arrow = {k: pa.Table.from_pandas(v, preserve_index=False) if isinstance(v, pd.DataFrame) else v for k, v in tables.items()}
    a, b, c = prepare(arrow), prepare(arrow), prepare(tables)
    assert a.content_ids is b.content_ids and not a.content_ids.flags.writeable
    for k in a.content_attrs:
        assert np.array_equal(a.content_attrs[k], c.content_attrs[k])
    assert np.array_equal(a.events.content, c.events.content) and np.array_equal(a.content_vocab, c.content_vocab)


def test_prepare_still_names_an_unknown_code(tables):
    bad = dict(tables)
    bad["touchpoints"] = tables["touchpoints"].assign(channel=["carrier_pigeon", *tables["touchpoints"]["channel"][1:]])
    with pytest.raises(ValueError, match="touchpoints.channel: row 0: value 'carrier_pigeon'"):
        prepare(bad)

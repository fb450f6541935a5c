"""A rep's capacity shared across a request's HCPs: rep-time entries kept where they gain most, rows never emptied."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_feasible_first import AS_OF, _cfg, random_frame, reference

from contract.schema import CHANNELS, REP_TIME_CHANNELS
from serving.capacity import fit_budget, request_budget
from serving.engine import Recommender

C = len(CHANNELS)
VISIT, PHONE, PUSH, EMAIL, WECOM = (CHANNELS.index(c) for c in ("visit", "phone", "wechat_push", "email", "wecom_1to1"))


def scores(rows: list[dict[int, float]]) -> np.ndarray:
    """[N, C] scores, -inf where a row gives none."""
    s = np.full((len(rows), C), -np.inf)
    for i, r in enumerate(rows):
        for c, v in r.items():
            s[i, c] = v
    return s


def test_the_entries_with_the_smallest_margin_over_the_next_channel_give_up_the_visits() -> None:
    # Three HCPs want a visit first; the rep has two. Row 1 loses least by moving to its next channel (0.50 vs 0.48).
    s = scores([{VISIT: 0.6, PUSH: 0.1, EMAIL: 0.05}, {VISIT: 0.7, PUSH: 0.5, EMAIL: 0.48}, {VISIT: 0.55, PUSH: 0.2, EMAIL: 0.1}])
    blocked = fit_budget(s, np.array(["r1"] * 3, dtype=object), {"r1": (2, 100)}, ranks=1)
    assert blocked[:, VISIT].tolist() == [False, True, False]
    assert blocked.sum() == 1


def test_budget_counts_the_acted_on_ranks_and_refills_them() -> None:
    # ranks=2: each row's top two count. Visit and phone are both rep time: 4 entries for a budget of 2.
    s = scores([{VISIT: 0.9, PHONE: 0.8, PUSH: 0.1}, {VISIT: 0.7, PHONE: 0.6, PUSH: 0.5, EMAIL: 0.4}])
    rep = np.array(["r1", "r1"], dtype=object)
    blocked = fit_budget(s, rep, {"r1": (2, 100)}, ranks=2)
    kept = np.isfinite(s) & ~blocked
    top2 = np.argsort(-np.where(kept, s, -np.inf), axis=1)[:, :2]
    rep_time = np.isin(np.array(CHANNELS)[top2], REP_TIME_CHANNELS)
    assert rep_time.sum() <= 2
    # Each row still has two channels to act on: a blocked visit or phone is replaced, not dropped.
    assert (np.take_along_axis(np.where(kept, s, -np.inf), top2, 1) > -np.inf).all()


def test_a_row_is_never_emptied_and_other_reps_and_unknown_reps_are_untouched() -> None:
    s = scores([{VISIT: 0.9}, {VISIT: 0.8}, {VISIT: 0.7, PUSH: 0.1}, {VISIT: 0.6}, {VISIT: 0.5}])
    rep = np.array(["r1", "r1", "r1", "r2", None], dtype=object)
    blocked = fit_budget(s, rep, {"r1": (1, 0), "r2": (5, 0)}, ranks=1)
    # r1 can make one visit: row 2 has a push to fall back on, rows 0 and 1 have nothing else and keep theirs.
    assert blocked[:, VISIT].tolist() == [False, False, True, False, False]


def test_messages_have_their_own_budget() -> None:
    s = scores([{WECOM: 0.9, EMAIL: 0.2}, {WECOM: 0.8, EMAIL: 0.7}, {VISIT: 0.6, EMAIL: 0.1}])
    blocked = fit_budget(s, np.array(["r1"] * 3, dtype=object), {"r1": (1, 1)}, ranks=1)
    assert blocked[:, WECOM].tolist() == [False, True, False] and not blocked[:, VISIT].any()


def test_request_budget_scales_to_the_share_of_the_book_with_a_floor() -> None:
    per_day, book = {"r1": (8, 40), "r2": (6, 30)}, {"r1": 200, "r2": 10}
    whole = request_budget(np.array(["r1"] * 200, dtype=object), per_day, book, days=5, utilisation=1.0)
    assert whole == {"r1": (40, 200)}
    half = request_budget(np.array(["r1"] * 100 + ["r2"] * 10 + [None], dtype=object), per_day, book, days=1, utilisation=0.5)
    assert half == {"r1": (2, 10), "r2": (3, 15)}
    one = request_budget(np.array(["r1"], dtype=object), per_day, book, days=5, utilisation=1.0, floor=2)
    assert one == {"r1": (2, 2)}
    assert request_budget(np.array(["r9"], dtype=object), per_day, book, days=5, utilisation=1.0) == {}


def _rep_time_in_top(frame: pd.DataFrame, ranks: int) -> int:
    return int((frame["rank"] <= ranks).mul(frame["channel"].isin(REP_TIME_CHANNELS)).sum())


def test_engine_keeps_a_territory_within_its_reps_capacity_and_gives_the_rest_other_channels() -> None:
    rng = np.random.default_rng(5)
    n = 150
    frame = random_frame(rng, n)
    for ch in CHANNELS:  # every channel open: an HCP past capacity always has others to move up
        frame[f"consent_{ch}"] = True
        frame[f"days_since_last_{ch}"] = 365.0
        frame[f"{ch}_sent_7d"] = 0
    frame["consecutive_unopened_pushes"] = 0
    ids = list(frame["hcp_id"])
    ref = reference(n)  # rep r1 owns all 150 HCPs: 6 rep-time contacts a day, 30 a week
    off = Recommender(_cfg(capacity=_cfg().capacity.model_copy(update={"enabled": False})), reference=ref).recommend(
        ids, k=3, as_of=AS_OF, record=False, features=frame
    )
    on = Recommender(_cfg(), reference=ref).recommend(ids, k=3, as_of=AS_OF, record=False, features=frame)
    assert _rep_time_in_top(off.frame, 2) > 30  # the rules alone ask for more than the rep can do
    assert _rep_time_in_top(on.frame, 2) <= 30
    # Every HCP served before is served still (its visit replaced, not dropped), and nothing a rule forbids.
    assert set(on.frame["hcp_id"]) == set(off.frame["hcp_id"]) and on.feasibility["first_choice_overridden"] == 0
    assert on.frame.groupby("hcp_id").size().equals(off.frame.groupby("hcp_id").size())
    # What the rep cannot make is still there, after what it can: the slate's last resort.
    late = on.frame[(on.frame["rank"] > 2) & on.frame["channel"].isin(REP_TIME_CHANNELS)]
    assert len(late) > len(off.frame[(off.frame["rank"] > 2) & off.frame["channel"].isin(REP_TIME_CHANNELS)])
    # A one-day horizon has a day's capacity.
    today = Recommender(_cfg(), reference=ref).recommend(ids, k=3, as_of=AS_OF, record=False, features=frame, window="today")
    assert _rep_time_in_top(today.frame, 2) <= 6
    # One HCP asked alone is not squeezed by the rest of the book.
    single_off = Recommender(_cfg(capacity=_cfg().capacity.model_copy(update={"enabled": False})), reference=ref)
    single_on = Recommender(_cfg(), reference=ref)
    for i in range(10):
        a = single_off.recommend([ids[i]], k=3, as_of=AS_OF, record=False, features=frame.iloc[[i]].reset_index(drop=True)).frame
        b = single_on.recommend([ids[i]], k=3, as_of=AS_OF, record=False, features=frame.iloc[[i]].reset_index(drop=True)).frame
        assert a["channel"].tolist() == b["channel"].tolist()


def test_micro_batched_callers_share_capacity_only_among_their_own_hcps() -> None:
    rng = np.random.default_rng(9)
    n = 120
    frame = random_frame(rng, n)
    for ch in CHANNELS:
        frame[f"consent_{ch}"] = True
        frame[f"days_since_last_{ch}"] = 365.0
        frame[f"{ch}_sent_7d"] = 0
    ids = list(frame["hcp_id"])
    rec = Recommender(_cfg(), reference=reference(n))
    groups = ["a"] * 60 + ["b"] * 60
    together = rec.recommend(ids, k=3, as_of=AS_OF, record=False, features=frame, request_ids=groups).frame
    for g, rows in (("a", slice(0, 60)), ("b", slice(60, 120))):
        alone = rec.recommend(ids[rows], k=3, as_of=AS_OF, record=False, features=frame.iloc[rows].reset_index(drop=True)).frame
        mine = together[together["request_id"] == g]
        assert mine["channel"].tolist() == alone["channel"].tolist()

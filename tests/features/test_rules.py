"""The rule policy (features.rules): working hours, per-channel slots, no repeated content, reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.schema import CHANNELS, DAYPARTS, TOPICS, WEEKDAYS, WORKING_DAYPARTS, WORKING_HOURS_CHANNELS, WORKING_WEEKDAYS
from features.rules import CHANNEL_LABELS, ContentItems, rule_based_actions, working_hours_mask

V, P, E = CHANNELS.index("visit"), CHANNELS.index("wechat_push"), CHANNELS.index("email")
DM, PH = CHANNELS.index("department_meeting"), CHANNELS.index("phone")
SEQ = ("seq_channel", "seq_content_id", "seq_response", "seq_gap_days", "seq_weekday", "seq_daypart")
IN_PERSON = [CHANNELS.index(c) for c in WORKING_HOURS_CHANNELS]


def _frame(n: int) -> pd.DataFrame:
    cols: dict = {"hcp_id": [f"h{i}" for i in range(n)]}
    for ch in CHANNELS:
        for w in ("30d", "90d"):
            cols[f"{ch}_sent_{w}"] = np.zeros(n, dtype=np.int32)
            cols[f"{ch}_opened_{w}"] = np.zeros(n, dtype=np.int32)
            cols[f"{ch}_forwarded_{w}"] = np.zeros(n, dtype=np.int32)
        cols[f"consent_{ch}"] = np.ones(n, dtype=bool)
    cols["favourited_30d"] = np.zeros(n, dtype=np.int32)
    cols["consecutive_unopened_pushes"] = np.zeros(n, dtype=np.int32)
    cols["days_since_last_touch"] = np.zeros(n)
    cols["seq_len"] = np.zeros(n, dtype=np.int64)
    for c in SEQ:
        cols[c] = [np.array([], dtype=object if c == "seq_content_id" else np.float32 if c == "seq_gap_days" else np.int64) for _ in range(n)]
    return pd.DataFrame(cols)


def _set(f: pd.DataFrame, col: str, i: int, value: np.ndarray) -> None:
    """Put an array into one cell of a list column (``.at`` broadcasts arrays into one-row frames)."""
    cells = list(f[col])
    cells[i] = value
    f[col] = pd.Series(cells, index=f.index, dtype=object)


def _touches(f: pd.DataFrame, i: int, touches: list[tuple[str, str | None, int, int, int, float]]) -> None:
    """Set row i's sequence from (channel, content, response, weekday, daypart, days ago), oldest first."""
    ages = np.array([t[5] for t in touches], dtype=np.float64)
    _set(f, "seq_channel", i, np.array([CHANNELS.index(t[0]) for t in touches], dtype=np.int64))
    _set(f, "seq_content_id", i, np.array([t[1] for t in touches], dtype=object))
    for j, col in ((2, "seq_response"), (3, "seq_weekday"), (4, "seq_daypart")):
        _set(f, col, i, np.array([t[j] for t in touches], dtype=np.int64))
    # The gap of element j is the previous element's age minus its own (oldest first); the first one's is unused.
    _set(f, "seq_gap_days", i, np.r_[365.0, ages[:-1] - ages[1:]].astype(np.float32))
    f.loc[i, "days_since_last_touch"] = ages[-1]
    f.loc[i, "seq_len"] = len(touches)


def _random_frame(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = _frame(n)
    for ch in CHANNELS:
        f[f"consent_{ch}"] = rng.random(n) < 0.7
        f[f"{ch}_sent_90d"] = rng.integers(0, 6, n)
        f[f"{ch}_opened_90d"] = rng.integers(0, 3, n)
    f["consecutive_unopened_pushes"] = rng.integers(0, 6, n)
    f["favourited_30d"] = rng.integers(0, 3, n)
    for i in range(n):
        m = int(rng.integers(0, 20))
        if m:
            _touches(
                f,
                i,
                [
                    (
                        CHANNELS[rng.integers(len(CHANNELS))],
                        f"c{rng.integers(8)}",
                        int(rng.integers(0, 4)),
                        int(rng.integers(7)),
                        int(rng.integers(4)),
                        float(a),
                    )
                    for a in np.sort(rng.random(m) * 200)[::-1]
                ],
            )
    return f


def _items() -> tuple[ContentItems, dict[str, str]]:
    """c1, c2 clinical data (P1, c1 newest), c3 guideline (P1), c4 case study (P2); best first."""
    ids, products, topics = ["c1", "c2", "c3", "c4"], ["P1", "P1", "P1", "P2"], ["clinical_data", "clinical_data", "guideline", "case_study"]
    return ContentItems.build(ids, products, topics), dict(zip(ids, topics))


def test_working_hours_mask_is_the_contract_definition() -> None:
    mask = working_hours_mask()
    assert mask.shape == (len(CHANNELS), len(WEEKDAYS), len(DAYPARTS))
    for c in IN_PERSON:
        assert mask[c].sum() == len(WORKING_WEEKDAYS) * len(WORKING_DAYPARTS)
        assert not mask[c, WEEKDAYS.index("sat")].any() and not mask[c, :, DAYPARTS.index("evening")].any()
    assert mask[P].all() and mask[E].all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25))
def test_in_person_channels_are_never_scheduled_outside_working_hours(seed: int, n: int) -> None:
    items, topics = _items()
    f = _random_frame(seed, n)
    out = rule_based_actions(f, topics, items=items, product_ids=np.full(n, "P1", dtype=object))
    assert out.weekday.shape == out.daypart.shape == (n, len(CHANNELS))
    mask = working_hours_mask()
    assert mask[np.arange(len(CHANNELS))[None, :], out.weekday, out.daypart].all()
    assert (out.weekday[:, IN_PERSON] < len(WORKING_WEEKDAYS)).all() and (out.daypart[:, IN_PERSON] < len(WORKING_DAYPARTS)).all()
    # Every channel has a reason, and it names that channel (the rule's own channel or one in its place).
    for i in range(n):
        for c in range(len(CHANNELS)):
            r = out.reason[i, c]
            assert r and ("push" in r if c == P else CHANNEL_LABELS[CHANNELS[c]] in r), (CHANNELS[c], r)


def test_each_channel_takes_its_slot_from_its_own_history() -> None:
    f = _frame(2)
    # Pushes answered on Saturday evenings, visits on Wednesday afternoons.
    _touches(
        f,
        0,
        [
            ("wechat_push", "c1", 2, 5, 3, 40.0),
            ("visit", None, 2, 2, 2, 30.0),
            ("wechat_push", "c2", 3, 5, 3, 20.0),
            ("visit", None, 2, 2, 2, 10.0),
            ("wechat_push", "c3", 2, 5, 3, 5.0),
        ],
    )
    # Row 1: one evening visit (logged, so it happened) and answered emails on Thursday mornings.
    _touches(f, 1, [("visit", None, 2, 0, 3, 30.0), ("email", "c1", 2, 3, 0, 20.0), ("email", "c2", 2, 3, 0, 10.0)])
    out = rule_based_actions(f)
    assert (out.weekday[0, V], out.daypart[0, V]) == (2, 2)
    assert (out.weekday[0, P], out.daypart[0, P]) == (5, 3)
    # No email history: the HCP's preference over all channels (Saturday evening), allowed for email.
    assert (out.weekday[0, E], out.daypart[0, E]) == (5, 3)
    # No call history, and Saturday evening is out of hours: the HCP's best working-hours slot.
    assert (out.weekday[0, PH], out.daypart[0, PH]) == (2, 2) == (out.weekday[0, DM], out.daypart[0, DM])
    # The evening visit's weekday counts, its daypart cannot: the best allowed daypart the HCP answered in.
    assert (out.weekday[1, V], out.daypart[1, V]) == (0, 0)
    assert (out.weekday[1, E], out.daypart[1, E]) == (3, 0)


def test_unanswered_touches_count_less_than_answered_ones() -> None:
    f = _frame(1)
    _touches(f, 0, [("visit", None, 1, 0, 0, 50.0), ("visit", None, 1, 0, 0, 40.0), ("visit", None, 2, 4, 1, 30.0)])
    out = rule_based_actions(f)
    assert (out.weekday[0, V], out.daypart[0, V]) == (4, 1)


def test_content_is_not_repeated_within_the_window() -> None:
    items, topics = _items()
    f = _frame(5)
    engaged = [("email", "c1", 3, 1, 0, 200.0), ("email", "c2", 3, 1, 0, 190.0)]  # clinical data is the preferred topic
    _touches(f, 0, engaged)  # nothing recent: the newest clinical-data item
    _touches(f, 1, [*engaged, ("wechat_push", "c1", 1, 1, 0, 10.0)])  # c1 sent 10 days ago: the other clinical-data item
    _touches(f, 2, [*engaged, ("wechat_push", "c1", 1, 1, 0, 10.0), ("email", "c2", 1, 1, 0, 5.0)])  # both sent: another topic
    _touches(f, 3, [*engaged, ("wechat_push", "c1", 1, 1, 0, 40.0)])  # outside the window again
    _touches(
        f, 4, [*engaged, ("visit", "c1", 1, 1, 0, 12.0), ("visit", "c2", 1, 1, 0, 8.0), ("email", "c3", 1, 1, 0, 6.0), ("email", "c4", 1, 1, 0, 3.0)]
    )  # everything sent within 30 days
    out = rule_based_actions(f, topics, items=items, product_ids=np.full(5, "P1", dtype=object))
    assert out.content[:, P].tolist() == ["c1", "c2", "c3", "c1", "c1"]  # row 4: the least recently sent
    assert (out.content == out.content[:, [P]]).all()  # one item per HCP on every channel
    assert "no clinical-data item left that was not sent in the last 30 days" in out.reason[2, P] and "guideline" in out.reason[2, P]
    assert "least recently sent" in out.reason[4, P]
    assert "least recently" not in out.reason[1, P] and "no clinical-data" not in out.reason[1, P]
    # The window is configurable: with 7 days, c1 sent 10 or 12 days ago is fine again; with 0 the newest always.
    short = rule_based_actions(f, topics, items=items, product_ids=np.full(5, "P1", dtype=object), no_repeat_days=7)
    assert short.content[:, P].tolist() == ["c1"] * 5
    f.at[1, "days_since_last_touch"] = 2.0  # c1 now 2 days ago in row 1
    assert rule_based_actions(f, topics, items=items, product_ids=np.full(5, "P1", dtype=object), no_repeat_days=7).content[1, P] == "c2"
    assert rule_based_actions(f, topics, items=items, product_ids=np.full(5, "P1", dtype=object), no_repeat_days=0).content[1, P] == "c1"


def test_other_topics_follow_the_hcps_engagement_then_the_product() -> None:
    items, topics = _items()
    f = _frame(2)
    # Preferred clinical data (both items sent recently), then case study over guideline.
    _touches(f, 0, [("email", "c4", 2, 1, 0, 100.0), ("email", "c1", 2, 1, 0, 9.0), ("email", "c2", 3, 1, 0, 8.0), ("email", "c1", 3, 1, 0, 2.0)])
    out = rule_based_actions(f, topics, items=items, product_ids=np.array(["P1", "P2"], dtype=object))
    assert out.topic[0] == TOPICS.index("clinical_data") and out.content[0, P] == "c4"
    # No engagement at all: every topic ties, so the HCP's own product's newest item.
    assert out.topic[1] == -1 and out.content[1, P] == "c4"


def test_the_item_history_covers_items_the_sequence_dropped() -> None:
    items, topics = _items()
    f = _frame(1)
    _touches(f, 0, [("email", "c1", 3, 1, 0, 100.0), ("email", "c2", 3, 1, 0, 90.0)])
    f["item_hist_content_id"] = [np.array(["c1"], dtype=object)]
    f["item_hist_days_since_delivered"] = [np.array([12.0], dtype=np.float32)]
    f["item_hist_days_since_opened"] = [np.array([365.0], dtype=np.float32)]
    out = rule_based_actions(f, topics, items=items, product_ids=np.array(["P1"], dtype=object))
    assert out.content[0, P] == "c2"


def test_no_content_when_nothing_is_approved_or_the_channel_carries_none() -> None:
    items, topics = _items()
    f = _frame(2)
    none = rule_based_actions(f, topics, items=ContentItems.build([], [], []))
    assert pd.isna(none.content).all()
    carries = np.array([c != "phone" for c in CHANNELS])
    out = rule_based_actions(f, topics, items=items, product_ids=np.full(2, "P1", dtype=object), carries_content=carries)
    assert pd.isna(out.content[:, PH]).all() and pd.notna(out.content[:, E]).all()
    assert "content" not in out.reason[0, PH] and "content" in out.reason[0, E]


def test_the_reason_names_the_channel_suggested_in_place_of_the_rules() -> None:
    f = _frame(2)
    f["consecutive_unopened_pushes"] = [5, 0]
    f["consent_visit"] = False
    f["consent_wechat_push"] = [True, False]
    f.loc[:, "email_sent_90d"], f.loc[:, "email_opened_90d"] = 4, 3
    out = rule_based_actions(f)
    assert out.ranked[0, 0] == E and out.ranked[1, 0] == E
    assert out.reason[0, E].startswith("5 WeChat pushes in a row unopened → email in place of a visit")
    assert out.reason[1, E].startswith("email at the HCP's preferred time for it")
    assert "follow up with a visit" in out.reason[0, V]  # what the rule would have said, had a visit been possible

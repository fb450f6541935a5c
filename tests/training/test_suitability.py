"""Channel-item suitability from the logs: types a channel carried, logged pairs, untagged items."""

from __future__ import annotations

import numpy as np

from training.dataset import ContentVocab
from training.suitability import channel_item_mask, from_meta, to_meta


def test_a_channel_carries_only_the_types_its_touches_carried() -> None:
    # Items 2..5 (vocab order): types article, article, meeting_invite, untagged (codes 1, 1, 3, 0).
    types = np.array([0, 0, 1, 1, 3, 0])
    # Channel 0 (visit) logged item 2 (article) 50 times; channel 5 (webinar) logged item 4 (invite) 40 times.
    ch = np.r_[np.zeros(50, int), np.full(40, 5), np.full(10, 7)]
    ct = np.r_[np.full(50, 2), np.full(40, 4), np.full(10, 1)]  # phone (7): no content
    m = channel_item_mask(ch, ct, types, 6)
    assert m[0, 2] and m[0, 3], "articles on visits: the logged one and another of its type"
    assert not m[0, 4], "no meeting invite in a visit: never logged there"
    assert m[5, 4] and not m[5, 2]
    assert m[0, 5] and m[5, 5], "untagged items go on channels that carry content"
    assert not m[7].any() and not m[:, :2].any(), "phone carried nothing; pad and none never allowed"


def test_without_a_catalogue_only_logged_pairs_and_round_trip() -> None:
    m = channel_item_mask(np.array([1, 1, 2]), np.array([3, 4, 3]), None, 6)
    assert m.sum() == 3 and m[1, 3] and m[1, 4] and m[2, 3]
    vocab = ContentVocab(("a", "b", "c", "d"))
    meta = {"channel_items": to_meta(m, vocab.ids)}
    assert meta["channel_items"]["department_meeting"] == ["b", "c"]
    np.testing.assert_array_equal(from_meta(meta, vocab), m)
    assert from_meta({}, vocab) is None


def test_an_hcp_is_offered_its_own_products_items() -> None:
    from training.suitability import own_product_items

    items = np.array(["", "", "p1", "p1", "p2", ""], dtype=object)  # pad, none, two p1 items, one p2, one of no product
    rows = own_product_items(items, np.array(["p1", "p2", "", "p3"], dtype=object))
    assert rows[0].tolist() == [True, True, True, True, False, True]
    assert rows[1].tolist() == [True, True, False, False, True, True]
    assert rows[2].all(), "unknown product: any item"
    assert rows[3].tolist() == [True, True, False, False, False, True], "a product without items: items of no known product"
    none_left = own_product_items(items, np.array(["p2"], dtype=object), np.array([0, 0, 1, 1, 0, 0], dtype=bool))
    assert none_left.all(), "nothing of its own nor of no product available: any item"
    assert own_product_items(items, np.array(["", ""], dtype=object)) is None

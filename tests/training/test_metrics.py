"""Offline metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import metrics


def test_accuracy_and_log_loss_by_hand() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    target = np.array([0, 1, 1])
    assert metrics.accuracy(probs, target) == pytest.approx(2 / 3)
    assert metrics.log_loss(probs, target) == pytest.approx(-(math.log(0.7) + math.log(0.3) + math.log(0.5)) / 3)


def test_recall_and_ndcg_use_the_full_ranking() -> None:
    # 12 items so a target ranked 11th falls outside the top 10
    scores = np.tile(np.arange(12, 0, -1, dtype=float), (3, 1))  # item 0 best ... item 11 worst
    target = np.array([0, 2, 10])  # ranks 1, 3, 11
    assert metrics.target_rank(scores, target).tolist() == [1, 3, 11]
    assert metrics.recall_at_k(scores, target, 10) == pytest.approx(2 / 3)
    assert metrics.ndcg_at_k(scores, target, 10) == pytest.approx((1.0 + 1 / math.log2(4)) / 3)


def test_ties_count_against_the_target() -> None:
    scores = np.zeros((1, 20))
    assert metrics.recall_at_k(scores, np.array([0]), 10) == 0.0


def test_auc_by_hand_with_a_tie() -> None:
    # positives 0.9, 0.4; negatives 0.4, 0.1: pairs (0.9>0.4), (0.9>0.1), (0.4=0.4 -> 1/2), (0.4>0.1) = 3.5/4
    assert metrics.roc_auc(np.array([0.9, 0.4, 0.4, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(3.5 / 4)
    assert math.isnan(metrics.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_ece_by_hand() -> None:
    probs = np.array([0.05, 0.15, 0.95, 0.95])
    labels = np.array([0, 1, 1, 0])
    # bins: [0,.1): p .05 y 0 -> .05; [.1,.2): .15 vs 1 -> .85; [.9,1]: 1.9 vs 1 -> .9 ; total / 4
    assert metrics.expected_calibration_error(probs, labels, bins=10) == pytest.approx((0.05 + 0.85 + 0.9) / 4)
    assert metrics.expected_calibration_error(np.full(100, 0.3), np.r_[np.ones(30), np.zeros(70)]) == pytest.approx(0.0)


def test_slot_accuracy_and_delay_error() -> None:
    # slot = day * 4 + daypart
    pred = np.array([0, 5, 27, 8])
    true = np.array([0, 4, 3, 9])
    assert metrics.slot_accuracy(pred, true) == pytest.approx(0.25)
    assert metrics.delay_error_days(pred, true) == pytest.approx((0 + 0 + 6 + 0) / 4)


def test_content_ranking_leaves_out_no_content_and_padding() -> None:
    # labels: item 5 (rank 1), NONE (rank 1: an easy hit), item 7 (rank 11), PAD (rank 1), item 3 (rank 2)
    rank = np.array([1, 1, 11, 1, 2])
    label = np.array([5, 1, 7, 0, 3])
    got = metrics.content_ranking(rank, label, 10)
    assert got["content_rows"] == 3
    assert got["content_recall_at_10"] == pytest.approx(2 / 3)  # counting every row would say 4/5
    assert got["content_ndcg_at_10"] == pytest.approx((1.0 + 1 / math.log2(3) + 0.0) / 3)
    none = metrics.content_ranking(np.array([1, 1]), np.array([1, 0]), 10)
    assert none["content_rows"] == 0 and math.isnan(none["content_recall_at_10"]) and math.isnan(none["content_ndcg_at_10"])


def test_offline_metric_set_reports_content_rows() -> None:
    from types import SimpleNamespace

    from training.train import metrics_from_predictions

    n = 4
    data = SimpleNamespace(
        arrays={
            "label_channel": np.array([0, 7, 0, 1]),
            "label_content": np.array([4, 1, 2, 9]),
            "label_slot": np.zeros(n, dtype=np.int64),
            "label_response": np.array([1, 0, 1, 0]),
        }
    )
    pred = {
        "channel_probs": np.full((n, 8), 1 / 8),
        "slot_probs": np.full((n, 28), 1 / 28),
        "response_prob": np.array([0.9, 0.2, 0.6, 0.4]),
        "content_rank": np.array([3, 1, 12, 1]),
    }  # the phone touch (label NONE) ranks first: not counted
    m = metrics_from_predictions(pred, data)
    assert m["content_rows"] == 3
    assert m["content_recall_at_10"] == pytest.approx(2 / 3)
    assert m["content_ndcg_at_10"] == pytest.approx((1 / math.log2(4) + 0.0 + 1.0) / 3)
    assert m["response_auc"] == pytest.approx(1.0)

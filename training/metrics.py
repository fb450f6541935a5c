"""Offline metrics on numpy arrays: classification, full-ranking retrieval, calibration, timing.

Pure functions, no torch: the evaluation, the baselines and the tests all call these.
"""

from __future__ import annotations

import numpy as np

from training.model import N_DAYPARTS


def accuracy(scores: np.ndarray, target: np.ndarray) -> float:
    """Share of rows whose highest-scoring class is the target."""
    return float(np.mean(np.argmax(scores, -1) == target)) if len(target) else float("nan")


def log_loss(probs: np.ndarray, target: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the target class (probabilities [N, C])."""
    p = np.clip(probs[np.arange(len(target)), target], eps, 1.0)
    return float(-np.mean(np.log(p))) if len(target) else float("nan")


def target_rank(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of the target among all items (full ranking; ties count against the target)."""
    own = scores[np.arange(len(target)), target][:, None]
    return (scores >= own).sum(-1)


def recall_from_rank(rank: np.ndarray, k: int = 10) -> float:
    """Share of 1-based target ranks within the top k."""
    return float(np.mean(np.asarray(rank) <= k)) if len(rank) else float("nan")


def ndcg_from_rank(rank: np.ndarray, k: int = 10) -> float:
    """NDCG@k with one relevant item per row: 1/log2(rank+1) when rank <= k, else 0."""
    rank = np.asarray(rank, dtype=np.float64)
    return float(np.mean(np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0))) if len(rank) else float("nan")


def content_ranking(rank: np.ndarray, label_content: np.ndarray, k: int = 10, first_item: int = 2) -> dict[str, float]:
    """Content recall and NDCG@k over the rows whose label is an item, and how many rows that is.

    Labels below ``first_item`` are padding and "no content" (training.dataset PAD, NONE: phone
    touches and the like); ranking "no content" first is an easy hit, not a content recommendation.
    """
    items = np.asarray(label_content) >= first_item
    kept = np.asarray(rank)[items]
    return {f"content_recall_at_{k}": recall_from_rank(kept, k), f"content_ndcg_at_{k}": ndcg_from_rank(kept, k), "content_rows": int(items.sum())}


def recall_at_k(scores: np.ndarray, target: np.ndarray, k: int = 10) -> float:
    """Share of rows whose target ranks in the top k of the full catalogue."""
    return recall_from_rank(target_rank(scores, target), k)


def ndcg_at_k(scores: np.ndarray, target: np.ndarray, k: int = 10) -> float:
    """NDCG@k over the full catalogue with one relevant item per row."""
    return ndcg_from_rank(target_rank(scores, target), k)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum statistic (ties get half credit)."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties so equal scores count half
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins: sum over bins of share x |mean label - mean prob|."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if not len(probs):
        return float("nan")
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, labels, bins) - np.bincount(idx, probs, bins))
    return float(gap.sum() / count.sum())


def calibration_curve(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: mean predicted probability, observed rate, count (empty bins are NaN)."""
    idx = np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, probs, bins) / count
        rate = np.bincount(idx, labels, bins) / count
    return mean_p, rate, count


def slot_accuracy(pred_slot: np.ndarray, true_slot: np.ndarray) -> float:
    """Share of rows where the predicted (day offset, daypart) slot is exactly right."""
    return float(np.mean(np.asarray(pred_slot) == np.asarray(true_slot))) if len(true_slot) else float("nan")


def delay_error_days(pred_slot: np.ndarray, true_slot: np.ndarray) -> float:
    """Mean absolute error of the predicted day offset, in days."""
    pred_day = np.asarray(pred_slot) // N_DAYPARTS
    true_day = np.asarray(true_slot) // N_DAYPARTS
    return float(np.mean(np.abs(pred_day - true_day))) if len(true_slot) else float("nan")

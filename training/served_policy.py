"""The policy as it would be served, per logged decision: what off-policy estimators need about it.

`nba evaluate` used to estimate one softmax over every (channel, content) pair seen in anyone's
logs. The logs come from separate per-HCP decisions restricted to the HCP's own product and
consented channels, so that target put ~5% of its mass where the reps could act, and DR collapsed
onto its reward model. Here the target is the served decision rule itself, rebuilt per logged
decision over the actions that decision could take:

- feasible first: consent at decision time, the HCP's own product's items, the catalogue's
  (channel, item) pairs, channels that carry no content, the in-person working hours at the
  logged slot, and whatever masks the caller adds (serving's caps, cool-downs and window rules in
  `nba replay`);
- per channel the response head's best allowed item; channels ranked by that score;
- the first suggestion epsilon-greedy over the top ``top_m`` channels (serving.exploration), so
  pi(channel, item) = (1 - eps) [rank 0] + eps / m [rank < m] on each channel's best item, 0 elsewhere.

Evaluated at the logged slot: the reps chose when, the target chooses what (the logs carry no
propensity for the slot).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.policy import NONE_CONTENT, working_hours_slots


def first_pick_probabilities(score: np.ndarray, epsilon: float, top_m: int) -> np.ndarray:
    """[N, C] probability that each channel is served first: epsilon-greedy over the top ``top_m`` allowed channels.

    ``score`` [N, C] with -inf for channels not allowed; rows with nothing allowed get all zeros.
    Ties rank in channel order (a stable sort), as serving.engine.choose_slate ranks them.
    """
    n, c = score.shape
    allowed = np.isfinite(score)
    n_allowed = allowed.sum(1)
    m = np.minimum(max(int(top_m), 1), np.maximum(n_allowed, 1))  # [N]
    eps = np.where(m > 1, float(epsilon), 0.0)
    ranked = np.argsort(-np.where(allowed, score, -np.inf), axis=1, kind="stable")
    rank = np.empty_like(ranked)
    rank[np.arange(n)[:, None], ranked] = np.arange(c)[None, :]
    p = np.where(rank < m[:, None], (eps / m)[:, None], 0.0)
    p = p + np.where(rank == 0, (1.0 - eps)[:, None], 0.0)
    return np.where(allowed & (n_allowed > 0)[:, None], p, 0.0)


def consent_from_static(static: np.ndarray, scaler: Any, channels: tuple[str, ...]) -> np.ndarray | None:
    """[N, C] consent at decision time, read back from the scaled static block (None without consent columns)."""
    cols = list(scaler.columns)
    names = [f"consent_{c}" for c in channels]
    if not all(n in cols for n in names):
        return None
    idx = [cols.index(n) for n in names]
    raw = static[:, idx].astype(np.float32) * scaler.std[idx] + scaler.mean[idx]
    return raw > 0.5


def product_support(train: Any, hcp_products: Any, n_channels: int, n_content: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per product, [C, V] (channel, item) pairs the reps logged for that product's HCPs; and all products' union.

    What the logging policy demonstrably could take: the target's mass outside it has no support.
    """
    import pandas as pd

    a = train.arrays
    ch, ct = a["label_channel"].astype(np.int64), a["label_content"].astype(np.int64)
    union = np.zeros((n_channels, n_content), dtype=bool)
    union[ch, ct] = True
    if hcp_products is None:
        return {}, union
    prod = hcp_products.reindex(pd.Index(train.hcp_id, dtype=object)).fillna("").to_numpy(dtype=object)
    out: dict[str, np.ndarray] = {}
    for p in np.unique(prod):
        m = np.zeros((n_channels, n_content), dtype=bool)
        rows = prod == p
        m[ch[rows], ct[rows]] = True
        out[str(p)] = m
    return out, union


def served_policy_rows(
    model: Any,
    data: Any,
    batch_size: int,
    device: Any = "cpu",
    *,
    epsilon: float,
    top_m: int,
    channel_allowed: np.ndarray | None = None,
    item_allowed: np.ndarray | None = None,
    pair_mask: Any = None,
    contentless: Any = None,
    calibrator: Any = None,
    working_hours: bool = True,
    support: Any = None,
) -> dict[str, np.ndarray]:
    """Per logged row, the served policy's probability of the logged action and the reward model's views of it.

    ``channel_allowed`` [N, C] and ``item_allowed`` [N, V] bool are per-row masks (consent, own
    product, serving's rules); ``pair_mask`` [C, V] the catalogue; ``contentless`` [C] channels that
    carry only NONE; ``support`` [C, V] bool or (row codes [N], tables [P, C, V]) (``support_rows``): what the logging policy could take (for
    ``support_mass``). Returns numpy arrays: ``reward``, ``propensity``, ``pi_logged``, ``q_logged``,
    ``q_target`` (expected calibrated P(response) under the target), ``support_mass`` (the target's
    mass on supported actions; 1 without ``support``), ``feasible_logged`` (the logged action was in
    the target's feasible set), ``any_feasible``, ``chosen_channel``, ``chosen_content``, ``hcp_id``, and
    ``top_channel``/``top_content``/``top_prob`` [N, top_m]: every action the target gives mass to.
    """
    import torch

    from training.policy import _content_mask, _per_channel_content

    n_ch = model.config.n_channels
    cl = None if contentless is None else torch.as_tensor(np.asarray(contentless, dtype=bool))
    pm = None if pair_mask is None else torch.as_tensor(np.asarray(pair_mask, dtype=bool)).unsqueeze(0)
    hours = torch.from_numpy(working_hours_slots()) if working_hours else None  # [C, 28]
    codes, tables = (None, None) if support is None else (support if isinstance(support, tuple) else (None, np.asarray(support, dtype=bool)[None]))
    cols: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "pi_logged",
            "q_logged",
            "q_target",
            "support_mass",
            "feasible_logged",
            "any_feasible",
            "chosen_channel",
            "chosen_content",
            "top_channel",
            "top_content",
            "top_prob",
        )
    }
    model.eval()
    start = 0
    with torch.no_grad():
        for batch in data.batches(batch_size, device):
            z = model.state(batch)
            b, dev = z.shape[0], z.device
            rows = slice(start, start + b)
            slot = batch["label_slot"].long()
            logits = torch.stack([model.response_logit_all_content(z, torch.full((b,), c, device=dev), slot) for c in range(n_ch)], 1)  # [B, C, V]
            m = _content_mask(model, pm, b, dev)  # [B|1, 1|C, V]
            if item_allowed is not None:
                m = m & torch.as_tensor(np.asarray(item_allowed[rows], dtype=bool), device=dev).unsqueeze(1)
            allowed = torch.stack([_per_channel_content(m, c, cl).expand(b, -1) for c in range(n_ch)], 1)  # [B, C, V]
            ch_ok = torch.ones((b, n_ch), dtype=torch.bool, device=dev)
            if channel_allowed is not None:
                ch_ok &= torch.as_tensor(np.asarray(channel_allowed[rows], dtype=bool), device=dev)
            if hours is not None:
                ch_ok &= hours.to(dev)[:, slot].T  # [B, C]: the channel may be used at the logged slot
            allowed &= ch_ok.unsqueeze(-1)
            masked = logits.masked_fill(~allowed, float("-inf"))
            best_logit, best_item = masked.max(-1)  # [B, C]
            p_first = torch.from_numpy(first_pick_probabilities(best_logit.cpu().numpy().astype(np.float64), epsilon, top_m)).to(dev)  # [B, C]
            q = torch.sigmoid(logits)
            if calibrator is not None:
                q = calibrator.torch(q)
            r = torch.arange(b, device=dev)
            ch, ct = batch["label_channel"].long(), batch["label_content"].long()
            pi_logged = torch.where(best_item[r, ch] == ct, p_first[r, ch], torch.zeros_like(p_first[r, ch]))
            q_best = q.gather(-1, best_item.unsqueeze(-1)).squeeze(-1)  # [B, C]
            q_target = (p_first * torch.nan_to_num(q_best)).sum(-1)
            if tables is not None:
                s = torch.as_tensor(tables[np.zeros(b, dtype=np.int64) if codes is None else codes[rows]], device=dev)  # [B, C, V]
                on = s.gather(-1, best_item.unsqueeze(-1)).squeeze(-1)  # [B, C]: the channel's chosen item is supported
                support_mass = (p_first * on).sum(-1)
            else:
                support_mass = torch.ones(b, dtype=torch.float64, device=dev)
            cols["pi_logged"].append(pi_logged.double().cpu().numpy())
            cols["q_logged"].append(q[r, ch, ct].double().cpu().numpy())
            cols["q_target"].append(q_target.double().cpu().numpy())
            cols["support_mass"].append(support_mass.double().cpu().numpy())
            cols["feasible_logged"].append(allowed[r, ch, ct].cpu().numpy())
            cols["any_feasible"].append(allowed.flatten(1).any(-1).cpu().numpy())
            # The target's only actions with mass: each of the top_m channels' best item (for a judge's truth).
            k = min(max(int(top_m), 1), n_ch)
            top_p, top_c = p_first.topk(k, -1)
            cols["top_channel"].append(top_c.cpu().numpy().astype(np.int8))
            cols["top_content"].append(best_item.gather(-1, top_c).cpu().numpy().astype(np.int32))
            cols["top_prob"].append(top_p.cpu().numpy().astype(np.float32))
            first = p_first.argmax(-1)
            cols["chosen_channel"].append(first.cpu().numpy().astype(np.int64))
            cols["chosen_content"].append(best_item[r, first].cpu().numpy().astype(np.int64))
            start += b
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    out["reward"] = data.arrays["label_response"].astype(np.float64)
    out["propensity"] = data.arrays["propensity"].astype(np.float64)
    out["hcp_id"] = np.asarray(data.hcp_id)
    return out


def own_product_rows(item_products: np.ndarray | None, hcp_products: Any, hcp_ids: np.ndarray, n_content: int) -> np.ndarray | None:
    """[N, V] items each row's HCP may be offered (its own product's, as serving offers them); None without products."""
    import pandas as pd

    from training.suitability import own_product_items

    if item_products is None or hcp_products is None:
        return None
    own = hcp_products.reindex(pd.Index(hcp_ids, dtype=object)).fillna("").to_numpy(dtype=object)
    return own_product_items(item_products, own, np.ones(n_content, dtype=bool))


def support_rows(by_product: dict[str, np.ndarray], union: np.ndarray, hcp_products: Any, hcp_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N], tables [P, C, V]): per row the pairs the reps logged for its HCP's product (the union where unknown).

    A code per row into one table per product, not [N, C, V]: 100k rows x 8 channels x 500 items would be 400 MB.
    """
    import pandas as pd

    names = sorted(by_product)
    tables = np.stack([union, *(by_product[p] for p in names)])
    if hcp_products is None or not names:
        return np.zeros(len(hcp_ids), dtype=np.int64), tables
    prod = hcp_products.reindex(pd.Index(hcp_ids, dtype=object)).fillna("").to_numpy(dtype=object)
    index = {p: i + 1 for i, p in enumerate(names)}
    return np.array([index.get(str(p), 0) for p in prod], dtype=np.int64), tables


__all__ = ["NONE_CONTENT", "consent_from_static", "first_pick_probabilities", "own_product_rows", "product_support", "served_policy_rows", "support_rows"]

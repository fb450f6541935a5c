"""Estimating the logging (reps') policy where the CRM log carries no propensities.

Off-policy estimators divide by the probability with which the logged action was taken. Real CRM
exports rarely record it (``contract.schema.TOUCHPOINTS.propensity`` is nullable), so we estimate
it: ``BehaviourModel`` is

    P(channel, content | state) = P(channel | state) x P(content | channel, HCP's product)

- the channel part is a multinomial logistic regression (L2-regularised, full-batch LBFGS) on the
  static features and the HCP's recent channel use (the touch sequence and, when present, the
  per-channel counts of the response history), then temperature-and-shift calibrated on a
  held-out share of HCPs (a grouped split, so calibration sees HCPs the fit never saw);
- the content part is additively smoothed frequencies over the items of the HCP's product on that
  channel; a channel that never logged content (a phone call) gives "no content" probability 1.

The training rows are logged touches only, so this is the policy *given that a touch was logged*:
no "no contact" option and one distribution over all channels, rep's and marketing's alike. A
log whose propensities are per decision with a "nothing" option (the simulator's) is on another
scale; ``fill_propensities`` keeps a row's logged value over the estimate for that reason.

Propensities are floored at ``PROPENSITY_FLOOR`` so importance weights stay finite; the share of
rows floored is reported by ``behaviour_diagnostics``. Everything here is pure and in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS
from training.dataset import NONE

# Smallest propensity handed to an estimator: a weight of at most 1,000. A floored row is one
# the model thinks the reps almost never do; its share is a diagnostic, not something to hide.
PROPENSITY_FLOOR = 1e-3
# Rows used to fit the channel regression (and, separately, its calibration): a random subsample
# beyond this keeps a 5M-row year to a few hundred MB and seconds of LBFGS.
MAX_FIT_ROWS = 200_000
_BLOCK = 1 << 16  # rows per prediction block (bounded memory on large sets)

# Where each row's propensity came from (``fill_propensities``), in order of preference.
PROPENSITY_SOURCES: tuple[str, ...] = ("served", "logged", "estimated")
SERVED, LOGGED, ESTIMATED = 0, 1, 2


@dataclass
class BehaviourModel:
    """The estimated logging policy: a calibrated channel regression times smoothed content frequencies."""

    weights: np.ndarray  # [D, C] on standardised features
    bias: np.ndarray  # [C]
    feature_mean: np.ndarray  # [D] standardisation of the raw features (static ones are already standardised)
    feature_std: np.ndarray  # [D]
    n_static: int
    uses_sequence: bool  # reads arrays["channel"] / ["length"] (recent touches)
    uses_history: bool  # reads arrays["history_long"][:, :C] (per-channel touch counts)
    temperature: float  # calibration: logits / temperature + shift
    shift: np.ndarray  # [C]
    channel_marginal: np.ndarray  # [C] smoothed training frequencies (the baseline)
    content_counts: np.ndarray  # [P, C, V] logged (HCP product, channel, content) counts
    support: np.ndarray  # [P, V] bool: contents an HCP of product p can be shown
    contentless: np.ndarray  # [C] bool: channel never logged content -> P(NONE) = 1
    smoothing: float
    products: tuple[str, ...]  # index 0 is "" (unknown product)
    hcp_product: pd.Series  # hcp_id -> product index
    fit_report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_content(self) -> int:
        """Content indices the model knows (the vocabulary size, PAD and NONE included)."""
        return int(self.content_counts.shape[2])

    def logits(self, data: Any) -> Iterator[tuple[slice, np.ndarray]]:
        """(row slice, uncalibrated channel logits [rows, C]) over ``data``, a block at a time."""
        for rows, x in _feature_blocks(data, self):
            yield rows, (x - self.feature_mean) / self.feature_std @ self.weights + self.bias

    def channel_probs(self, data: Any) -> np.ndarray:
        """[N, C] calibrated P(channel | state) of the logging policy for each row of ``data``."""
        out = np.empty((len(data), len(CHANNELS)), dtype=np.float64)
        for rows, z in self.logits(data):
            out[rows] = _softmax(z / self.temperature + self.shift)
        return out

    def content_table(self, product: str = "") -> np.ndarray:
        """[C, V] P(content | channel) for an HCP of ``product`` (unknown product: every item)."""
        p = self.products.index(product) if product in self.products else 0
        counts, support = self.content_counts[p], self.support[p]
        smoothed = np.where(support[None, :], counts + self.smoothing, 0.0)
        table = smoothed / smoothed.sum(1, keepdims=True)
        none_only = np.zeros(self.n_content)
        none_only[NONE] = 1.0
        return np.where(self.contentless[:, None], none_only[None, :], table)

    def content_prob(self, channel: np.ndarray, content: np.ndarray, product: np.ndarray) -> np.ndarray:
        """P(content | channel, product index) per row; a content outside the product's items gets the channel's overall frequency."""
        channel, content, product = (np.asarray(a, dtype=np.int64) for a in (channel, content, product))
        a = self.smoothing
        size = self.support.sum(1)  # |S_p|
        total = np.einsum("pcv,pv->pc", self.content_counts, self.support)  # logged counts inside each product's support
        own = (self.content_counts[product, channel, content] + a) / (total[product, channel] + a * size[product])
        prob = np.where(self.support[product, content], own, self._overall_content_prob(channel, content))
        return np.where(self.contentless[channel], (content == NONE).astype(np.float64), prob)

    def _overall_content_prob(self, channel: np.ndarray, content: np.ndarray) -> np.ndarray:
        """P(content | channel) over all HCPs, smoothed over NONE and every real item."""
        every = self.content_counts.sum(0)  # [C, V]
        return (every[channel, content] + self.smoothing) / (every[:, NONE:].sum(1)[channel] + self.smoothing * (self.n_content - NONE))

    def product_index(self, hcp_id: np.ndarray) -> np.ndarray:
        """Product index per row (0 where the HCP's product is unknown)."""
        idx = self.hcp_product.reindex(pd.Index(np.asarray(hcp_id, dtype=object))).to_numpy()
        return np.nan_to_num(idx.astype(np.float64), nan=0.0).astype(np.int64)

    def propensity(self, data: Any, *, floor: float = PROPENSITY_FLOOR) -> np.ndarray:
        """Estimated probability of each row's logged (channel, content), at least ``floor`` (``PROPENSITY_FLOOR``: weights <= 1/floor)."""
        channel, content = _labels(data, self.n_content)
        p_channel = np.empty(len(data), dtype=np.float64)
        for rows, z in self.logits(data):
            p_channel[rows] = _softmax(z / self.temperature + self.shift)[np.arange(len(z)), channel[rows]]
        p = p_channel * self.content_prob(channel, content, self.product_index(data.hcp_id))
        return np.clip(p, floor, 1.0)

    def marginal_propensity(self, data: Any) -> np.ndarray:
        """The state-free baseline: training frequency of each row's logged channel times its overall content frequency."""
        channel, content = _labels(data, self.n_content)
        overall = self._overall_content_prob(channel, content)
        return self.channel_marginal[channel] * np.where(self.contentless[channel], (content == NONE).astype(np.float64), overall)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _labels(data: Any, n_content: int) -> tuple[np.ndarray, np.ndarray]:
    for name in ("label_channel", "label_content"):
        if name not in data.arrays:
            raise ValueError(f"behaviour model: data has no {name!r} array (encode it with labels)")
    channel = data.arrays["label_channel"].astype(np.int64)
    content = data.arrays["label_content"].astype(np.int64)
    if len(channel) and (channel.min() < 0 or channel.max() >= len(CHANNELS)):
        raise ValueError(
            f"behaviour model: label_channel outside 0..{len(CHANNELS) - 1} (row {int(np.flatnonzero((channel < 0) | (channel >= len(CHANNELS)))[0])})"
        )
    if len(content) and (content.min() < 0 or content.max() >= n_content):
        bad = int(np.flatnonzero((content < 0) | (content >= n_content))[0])
        raise ValueError(
            f"behaviour model: label_content {int(content[bad])} at row {bad} outside the model's {n_content} content indices "
            "(fit and score with the same vocabulary)"
        )
    return channel, content


def _raw_features(data: Any, n_static: int | None, uses_sequence: bool, uses_history: bool, rows: slice) -> np.ndarray:
    """[rows, D] float64: static features, then recent channel use (shares of the touch sequence, last channel, has-history) and log1p channel counts."""
    arrays = data.arrays
    n_channels = len(CHANNELS)
    static = np.nan_to_num(np.asarray(arrays["static"][rows], dtype=np.float64))
    if n_static is not None and static.shape[1] != n_static:
        raise ValueError(f"behaviour model: data has {static.shape[1]} static features, the model was fitted on {n_static}")
    parts = [static]
    if uses_sequence:
        seq = np.asarray(arrays["channel"][rows], dtype=np.int64)  # 0 pad, 1 + channel index
        onehot = seq[:, :, None] == np.arange(1, n_channels + 1)[None, None, :]
        counts = onehot.sum(1).astype(np.float64)
        seen = counts.sum(1, keepdims=True)
        length = np.asarray(arrays["length"][rows], dtype=np.int64) if "length" in arrays else (seq > 0).sum(1)
        last = seq[np.arange(len(seq)), np.maximum(length - 1, 0)] if seq.shape[1] else np.zeros(len(seq), np.int64)
        last = np.where(length > 0, last, 0)
        parts += [counts / np.maximum(seen, 1.0), (last[:, None] == np.arange(1, n_channels + 1)[None, :]).astype(np.float64), (seen > 0).astype(np.float64)]
    if uses_history:
        parts.append(np.log1p(np.asarray(arrays["history_long"][rows][:, :n_channels], dtype=np.float64)))
    return np.concatenate(parts, 1)


def _feature_blocks(data: Any, model: BehaviourModel) -> Iterator[tuple[slice, np.ndarray]]:
    for name, used in (("channel", model.uses_sequence), ("history_long", model.uses_history)):
        if used and name not in data.arrays:
            raise ValueError(f"behaviour model: fitted with the {name!r} array, which the data lacks")
    return _blocks_raw(data, model.n_static, model.uses_sequence, model.uses_history)


def _blocks_raw(data: Any, n_static: int, uses_sequence: bool, uses_history: bool) -> Iterator[tuple[slice, np.ndarray]]:
    n = len(data)
    for start in range(0, max(n, 1), _BLOCK):
        rows = slice(start, min(start + _BLOCK, n))
        yield rows, _raw_features(data, n_static, uses_sequence, uses_history, rows)


def _uses_history(data: Any) -> bool:
    # The response history's first block is the per-channel "sent" counts (features.catalog order).
    cols = data.meta.get("history_columns") or ()
    return "history_long" in data.arrays and len(cols) >= len(CHANNELS) and all(str(c).startswith(f"hist_channel_{ch}_sent_") for c, ch in zip(cols, CHANNELS))


def _fit_softmax(x: np.ndarray, y: np.ndarray, init_bias: np.ndarray, *, l2: float, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights [D, C] and bias [C] of an L2-regularised multinomial logistic regression by full-batch LBFGS."""
    import torch

    torch.manual_seed(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    w = torch.zeros(x.shape[1], len(init_bias), dtype=torch.float32, requires_grad=True)
    b = torch.tensor(init_bias, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure() -> Any:
        opt.zero_grad()
        # A faint pull on the bias too: a channel never logged would otherwise drift towards -inf.
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum() + 1e-3 * l2 * (b * b).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().double().numpy(), b.detach().double().numpy()


def _fit_calibration(logits: np.ndarray, y: np.ndarray, *, steps: int, seed: int) -> tuple[float, np.ndarray]:
    """Temperature and per-channel shift minimising the log-loss of ``logits / T + shift`` on held-out rows."""
    import torch

    torch.manual_seed(seed)
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float64))
    yt = torch.from_numpy(y.astype(np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(logits.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t, shift], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        # Ridge on the shift: a channel absent from the held-out HCPs keeps the fit's rate.
        loss = torch.nn.functional.cross_entropy(z * torch.exp(-log_t) + shift, yt) + 1e-3 * (shift * shift).sum()
        loss.backward()
        return loss

    opt.step(closure)
    t = float(np.clip(np.exp(log_t.item()), 0.05, 20.0))
    return t, shift.detach().numpy().copy()


def _log_loss(p: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0)))) if len(p) else float("nan")


def fit_behaviour(
    train: Any,
    *,
    item_products: np.ndarray | None = None,
    hcp_products: pd.Series | None = None,
    seed: int = 0,
    l2: float = 1e-3,
    steps: int = 200,
    calibration_share: float = 0.2,
    content_smoothing: float = 0.5,
    max_fit_rows: int = MAX_FIT_ROWS,
    contentless: np.ndarray | None = None,
) -> BehaviourModel:
    """Fit the logging policy on ``train`` (an EncodedData with labels); calibrate its channel part on a held-out share of HCPs.

    ``item_products`` [V] is the product of each content index ("" unknown; ``Prepared.item_products``),
    ``hcp_products`` maps hcp_id to its main product. ``contentless`` [C] overrides which channels
    carry no content (default: those that never logged any).
    """
    if not 0.0 <= calibration_share < 1.0:
        raise ValueError(f"calibration_share must be in [0, 1), got {calibration_share}")
    if l2 < 0 or steps < 1 or content_smoothing <= 0 or max_fit_rows < 1:
        raise ValueError(f"need l2 >= 0, steps >= 1, content_smoothing > 0, max_fit_rows >= 1; got {l2}, {steps}, {content_smoothing}, {max_fit_rows}")
    n_channels = len(CHANNELS)
    n = len(train)
    if n < 2:
        raise ValueError(f"behaviour model: need at least 2 training rows, got {n}")
    n_content = len(item_products) if item_products is not None else int(train.arrays["label_content"].max()) + 1
    n_content = max(n_content, NONE + 1)
    channel, content = _labels(train, n_content)
    rng = np.random.default_rng(seed)

    # Grouped split: the calibration HCPs are never seen by the regression.
    hcps = np.unique(train.hcp_id)
    n_cal = int(np.ceil(calibration_share * len(hcps))) if calibration_share > 0 and len(hcps) >= 2 else 0
    n_cal = min(n_cal, len(hcps) - 1)
    cal_rows = np.isin(train.hcp_id, rng.permutation(hcps)[:n_cal]) if n_cal else np.zeros(n, dtype=bool)
    fit_idx, cal_idx = np.flatnonzero(~cal_rows), np.flatnonzero(cal_rows)
    if len(fit_idx) > max_fit_rows:
        fit_idx = np.sort(rng.choice(fit_idx, max_fit_rows, replace=False))
    if len(cal_idx) > max_fit_rows:
        cal_idx = np.sort(rng.choice(cal_idx, max_fit_rows, replace=False))

    uses_sequence = "channel" in train.arrays
    uses_history = _uses_history(train)
    n_static = int(train.arrays["static"].shape[1])
    fit_data = train.subset(fit_idx)
    x = np.concatenate([f for _, f in _blocks_raw(fit_data, n_static, uses_sequence, uses_history)])
    mean = x.mean(0)
    std = x.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    mean[:n_static], std[:n_static] = 0.0, 1.0  # the scaler already standardised them; keep 0 = "missing"
    x -= mean
    x /= std
    marginal = (np.bincount(channel, minlength=n_channels) + 0.5) / (n + 0.5 * n_channels)
    weights, bias = _fit_softmax(x, channel[fit_idx], np.log(marginal), l2=l2, steps=steps, seed=seed)
    del x

    # Content frequencies per (HCP product, channel, content) over every training row.
    products, hcp_product, item_product = _product_indices(item_products, hcp_products, n_content)
    row_product = hcp_product.reindex(pd.Index(train.hcp_id.astype(object))).to_numpy()
    row_product = np.nan_to_num(row_product.astype(np.float64), nan=0.0).astype(np.int64)
    n_products = len(products)
    flat = (row_product * n_channels + channel) * n_content + content
    counts = np.bincount(flat, minlength=n_products * n_channels * n_content).reshape(n_products, n_channels, n_content).astype(np.float64)
    support = np.zeros((n_products, n_content), dtype=bool)
    support[:, NONE] = True
    real = np.arange(n_content) > NONE
    # An item of unknown product may be shown to anyone; an HCP of unknown product may be shown anything.
    support |= real[None, :] & ((item_product[None, :] == np.arange(n_products)[:, None]) | (item_product[None, :] == 0))
    support[0] |= real
    if contentless is None:
        logged = np.bincount(channel, minlength=n_channels) > 0
        with_content = np.bincount(channel, weights=(content > NONE).astype(np.float64), minlength=n_channels) > 0
        contentless = logged & ~with_content
    contentless = np.asarray(contentless, dtype=bool)
    if contentless.shape != (n_channels,):
        raise ValueError(f"contentless: need one flag per channel ({n_channels}), got shape {contentless.shape}")

    model = BehaviourModel(
        weights,
        bias,
        mean,
        std,
        n_static,
        uses_sequence,
        uses_history,
        1.0,
        np.zeros(n_channels),
        marginal,
        counts,
        support,
        contentless,
        float(content_smoothing),
        products,
        hcp_product,
    )
    report: dict[str, Any] = {
        "fit_rows": int(len(fit_idx)),
        "calibration_hcps": int(n_cal),
        "calibration_rows": int(len(cal_idx)),
        "features": int(len(mean)),
        "uses_recent_channels": bool(uses_sequence or uses_history),
    }
    if len(cal_idx):
        cal = train.subset(cal_idx)
        z = np.concatenate([zb for _, zb in model.logits(cal)])
        y = channel[cal_idx]
        before = _log_loss(_softmax(z)[np.arange(len(y)), y])
        model.temperature, model.shift = _fit_calibration(z, y, steps=100, seed=seed)
        after = _log_loss(_softmax(z / model.temperature + model.shift)[np.arange(len(y)), y])
        report.update({"calibration_log_loss_before_nats": before, "calibration_log_loss_after_nats": after})
    report["temperature"] = float(model.temperature)
    model.fit_report = report
    return model


def _product_indices(item_products: np.ndarray | None, hcp_products: pd.Series | None, n_content: int) -> tuple[tuple[str, ...], pd.Series, np.ndarray]:
    """(products with "" first, hcp_id -> product index, [V] product index per content)."""
    items = pd.Series(item_products if item_products is not None else [""] * n_content, dtype=object).fillna("").astype(str)
    hcps = (hcp_products if hcp_products is not None else pd.Series(dtype=object)).dropna().astype(str)
    names = sorted((set(items) | set(hcps)) - {""})
    products = ("", *names)
    lookup = {p: i for i, p in enumerate(products)}
    hcp_index = pd.Series(hcps.map(lookup).to_numpy(dtype=np.int64), index=hcps.index.astype(str))
    hcp_index = hcp_index[~hcp_index.index.duplicated(keep="first")]
    return products, hcp_index, items.map(lookup).to_numpy(dtype=np.int64)


def behaviour_diagnostics(model: BehaviourModel, data: Any, *, floor: float = PROPENSITY_FLOOR, bins: int = 10) -> dict[str, Any]:
    """Held-out quality of the behaviour model on ``data``: log-loss against the marginal baseline, calibration, propensity range."""
    from training.metrics import expected_calibration_error

    channel, _ = _labels(data, model.n_content)
    n = len(data)
    probs = model.channel_probs(data)
    onehot = channel[:, None] == np.arange(probs.shape[1])[None, :]
    raw = model.propensity(data, floor=0.0)
    floored = np.maximum(raw, floor)
    marginal = model.marginal_propensity(data)
    # Unfloored: the floor would flatter a model that puts too little mass on what was logged.
    action_ll, marginal_ll = _log_loss(raw), _log_loss(marginal)
    out: dict[str, Any] = {
        "rows": int(n),
        "hcps": int(len(np.unique(data.hcp_id))),
        "log_loss_nats": action_ll,
        "marginal_log_loss_nats": marginal_ll,
        "log_loss_gain_nats": marginal_ll - action_ll,
        "channel_log_loss_nats": _log_loss(probs[np.arange(n), channel]),
        "channel_marginal_log_loss_nats": _log_loss(model.channel_marginal[channel]),
        # Every (row, channel) pair's predicted probability against whether that channel was logged.
        "channel_ece": expected_calibration_error(probs.ravel(), onehot.ravel().astype(np.float64), bins),
        "channel_top_ece": expected_calibration_error(probs.max(1), (probs.argmax(1) == channel).astype(np.float64), bins),
        "propensity_mean": float(floored.mean()) if n else float("nan"),
        "propensity_min": float(floored.min()) if n else float("nan"),
        "propensity_floor": float(floor),
        "floored_share": float(np.mean(raw < floor)) if n else float("nan"),
        "max_weight": float(1.0 / floored.min()) if n else float("nan"),
    }
    out.update({f"fit_{k}": v for k, v in model.fit_report.items()})
    return out


def fill_propensities(logged: np.ndarray, estimated: np.ndarray, served: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(propensity, source code per row): the serving probability where the audit trail has one, else the logged one, else the estimate.

    A value counts only if finite and in (0, 1]. Source codes index ``PROPENSITY_SOURCES``. The
    audit trail's value comes first: it is the exact probability our server drew with, where a
    CRM copy may be rounded or refer to another policy.
    """
    logged = np.asarray(logged, dtype=np.float64)
    estimated = np.asarray(estimated, dtype=np.float64)
    if logged.shape != estimated.shape:
        raise ValueError(f"fill_propensities: logged has shape {logged.shape}, estimated {estimated.shape}")
    if (bad := ~_valid(estimated)).any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"fill_propensities: estimated propensity {estimated[row]} at row {row} is not in (0, 1] ({int(bad.sum())} bad rows)")
    out = estimated.copy()
    source = np.full(len(out), ESTIMATED, dtype=np.int8)
    ok = _valid(logged)
    out[ok], source[ok] = logged[ok], LOGGED
    if served is not None:
        served = np.asarray(served, dtype=np.float64)
        if served.shape != logged.shape:
            raise ValueError(f"fill_propensities: served has shape {served.shape}, logged {logged.shape}")
        ok = _valid(served)
        out[ok], source[ok] = served[ok], SERVED
    return out, source


def _valid(p: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(p) & (p > 0) & (p <= 1)


def source_summary(source: np.ndarray) -> dict[str, Any]:
    """Share of rows per propensity source and one word for the report: served, logged, estimated or mixed."""
    source = np.asarray(source)
    n = len(source)
    shares = {name: float(np.mean(source == code)) if n else 0.0 for code, name in enumerate(PROPENSITY_SOURCES)}
    used = [name for name, share in shares.items() if share > 0]
    return {
        "propensity_rows": int(n),
        **{f"propensity_share_{k}": v for k, v in shares.items()},
        "propensity_source": used[0] if len(used) == 1 else ("mixed" if used else "none"),
    }

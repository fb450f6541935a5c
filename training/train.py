"""The training loop and offline scoring: pure of I/O, so tests, `nba train` and `nba tune` share it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training import metrics
from training.dataset import NONE, EncodedData

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    """The trained network and its per-epoch history (one dict of metrics per epoch)."""

    model: Any
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy so the same seed gives the same weights and metrics."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: Any, lr: float, weight_decay: float, device: Any = "cpu") -> Any:
    """AdamW, fused into one kernel per step where torch has one (CPU, CUDA): same update rule,
    without a dozen small ops per parameter tensor."""
    import torch

    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)


def fit(
    model: Any,
    train: EncodedData,
    val: EncodedData | None,
    *,
    objective: str,
    ips_clip: float,
    loss_weights: dict[str, float],
    lr: float,
    weight_decay: float,
    epochs: int,
    batch_size: int,
    seed: int,
    device: Any = "cpu",
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
    max_batches: int | None = None,
    workers: int = 1,
    response_weighting: str | None = None,
    compile: bool = False,
) -> FitResult:
    """Train ``model`` with AdamW; after each epoch score ``val`` and call ``on_epoch(epoch, metrics)``.

    ``on_epoch`` may raise (Optuna pruning) to stop early. ``max_batches`` caps batches per epoch
    (benchmarks). ``workers`` > 1 on CPU trains data-parallel in that many forked processes
    (``training.parallel``); elsewhere it is 1. ``response_weighting``: see ``training_loss``.
    ``compile``: the loss graph through ``torch.compile`` (fused kernels; the last partial batch
    of an epoch is dropped so shapes never change; eager if compiling fails).
    """
    import time

    import torch
    from tqdm.auto import tqdm

    from training.losses import PART_NAMES
    from training.parallel import GradientExchange, can_fork, run_workers

    seed_everything(seed)
    model.to(device)
    opt = make_optimizer(model, lr, weight_decay, device)
    result = FitResult(model)
    n_batches = -(-len(train) // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    workers = workers if torch.device(device).type == "cpu" and can_fork() else 1
    if compile and len(train) >= batch_size:
        n_batches = min(n_batches, len(train) // batch_size)  # full batches only: one shape, one graph
    if compile and workers > 1:
        # Inductor compiles in a pool of subprocesses by default; a forked worker that has to
        # recompile (a guard the parent's warm-up did not cover) then waits forever on the
        # parent's pool. Compiling in-process is as fast here and safe across fork.
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = 1
    loss_fn = loss_function(compile)
    names = ("loss", *PART_NAMES)
    params = [p for p in model.parameters() if p.requires_grad]

    def run_epoch(epoch: int, rank: int, exchange: GradientExchange | None) -> dict[str, float]:
        """One pass over the batches (this rank's shard of each); rank 0 returns row-weighted loss totals."""
        totals = dict.fromkeys(names, 0.0)
        seen = 0
        shard = (rank, workers) if exchange is not None else None
        batches = train.batches(batch_size, device, shuffle=True, seed=seed * 1000 + epoch, shard=shard)
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress or rank != 0, leave=False)
        for i, batch in enumerate(bar):
            if i >= n_batches:
                break
            n = len(batch["length"])
            opt.zero_grad(set_to_none=True)
            if n:
                loss, parts = loss_fn(model, batch, objective, ips_clip, loss_weights, response_weighting)
                loss.backward()
                values = [float(loss.detach()), *(float(parts[k].detach()) for k in names[1:])]
            else:  # a last batch smaller than the worker count leaves some shards empty
                values = [0.0] * len(names)
            rows = n
            if exchange is not None:
                values, rows = exchange.average(rank, n, values)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            seen += rows
            for k, v in zip(names, values):
                totals[k] += v * rows
            bar.set_postfix(loss=f"{totals['loss'] / max(seen, 1):.4f}")
        return {k: v / max(seen, 1) for k, v in totals.items()}

    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        if workers > 1:
            if compile and epoch == 0:
                # Compile here, once, so the forked workers inherit the graph instead of each compiling it.
                warm = next(train.batches(batch_size, device, shuffle=True, seed=seed * 1000, shard=(0, workers)))
                loss_fn(model, warm, objective, ips_clip, loss_weights, response_weighting)[0].backward()
                opt.zero_grad(set_to_none=True)
            exchange = GradientExchange(params, workers, len(names))
            out: dict[str, dict[str, float]] = {}
            run_workers(workers, lambda rank, out=out, epoch=epoch, exchange=exchange: out.__setitem__(rank, run_epoch(epoch, rank, exchange)), exchange)
            means = out[0]
        else:
            means = run_epoch(epoch, 0, None)
        result.seconds_per_epoch.append(time.perf_counter() - start)
        epoch_metrics = {f"train/{k}_loss" if k != "loss" else "train/loss": v for k, v in means.items()}
        if val is not None and len(val):
            epoch_metrics.update({f"val/{k}": v for k, v in offline_metrics(model, val, batch_size, device).items()})
        result.history.append(epoch_metrics)
        if on_epoch is not None:
            on_epoch(epoch, epoch_metrics)
    return result


def predict(model: Any, data: EncodedData, batch_size: int, device: Any = "cpu", k: int = 10) -> dict[str, np.ndarray]:
    """Per row: channel probabilities, content rank of the logged item and top-k, slot probabilities,
    response probability of the logged action. Content scores stay per batch (V can be large)."""
    import torch

    model.eval()
    out: dict[str, list[np.ndarray]] = {"channel_probs": [], "slot_probs": [], "response_prob": [], "content_rank": [], "content_topk": []}
    with torch.inference_mode():
        for batch in data.batches(batch_size, device):
            res = model(batch)
            out["channel_probs"].append(torch.softmax(res["channel"], -1).cpu().numpy())
            out["slot_probs"].append(torch.softmax(res["slot"], -1).cpu().numpy())
            out["response_prob"].append(torch.sigmoid(res["response"]).cpu().numpy())
            scores = res["content"]
            own = scores.gather(-1, batch["label_content"].unsqueeze(-1))
            out["content_rank"].append((scores >= own).sum(-1).cpu().numpy())
            out["content_topk"].append(scores.topk(min(k, scores.shape[-1]), -1).indices.cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def loss_function(compile: bool) -> Callable[..., Any]:
    """``training.losses.loss_tensors``, through ``torch.compile`` when asked; eager (with a warning) if compiling fails."""
    from training.losses import loss_tensors

    if not compile:
        return loss_tensors
    import warnings

    import torch

    state: dict[str, Any] = {"fn": torch.compile(loss_tensors, dynamic=False)}

    def call(*args: Any) -> Any:
        try:
            return state["fn"](*args)
        except Exception as exc:  # no C compiler, an op inductor cannot lower: train eagerly instead
            if state["fn"] is loss_tensors:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly", RuntimeWarning, stacklevel=2)
            state["fn"] = loss_tensors
            return loss_tensors(*args)

    return call


def offline_metrics(model: Any, data: EncodedData, batch_size: int, device: Any = "cpu") -> dict[str, float]:
    """Channel accuracy/log-loss, content recall/NDCG@10 (full ranking), slot accuracy and delay
    error, response AUC and ECE on ``data`` (names carry no '@': MLflow-safe)."""
    pred = predict(model, data, batch_size, device)
    return metrics_from_predictions(pred, data)


def metrics_from_predictions(pred: dict[str, np.ndarray], data: EncodedData) -> dict[str, float]:
    """The offline metric set from ``predict`` output (also used for baselines); content recall/NDCG count
    only rows whose label is an item (``content_rows`` of them), not "no content"."""
    a = data.arrays
    slot = pred["slot_probs"].argmax(-1)
    return {
        "channel_accuracy": metrics.accuracy(pred["channel_probs"], a["label_channel"].astype(np.int64)),
        "channel_log_loss": metrics.log_loss(pred["channel_probs"], a["label_channel"].astype(np.int64)),
        **metrics.content_ranking(pred["content_rank"], a["label_content"], 10, first_item=NONE + 1),
        "slot_accuracy": metrics.slot_accuracy(slot, a["label_slot"]),
        "delay_error_days": metrics.delay_error_days(slot, a["label_slot"]),
        "response_auc": metrics.roc_auc(pred["response_prob"], a["label_response"]),
        "response_ece": metrics.expected_calibration_error(pred["response_prob"], a["label_response"]),
    }

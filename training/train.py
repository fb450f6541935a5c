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
    (benchmarks). Data-parallel (``training.parallel``, DDP over gloo): under torchrun every
    launched process calls ``fit`` and trains its shard (rank 0 scores ``val``, calls ``on_epoch``
    and returns the history; the others return an empty one); otherwise ``workers`` > 1 on CPU
    forks that many ranks here. ``response_weighting``: see ``training_loss``. ``compile``: the
    loss graph through ``torch.compile`` (fused kernels; the last partial batch of an epoch is
    dropped so shapes never change; eager if compiling fails).
    """
    import torch

    from training import parallel

    seed_everything(seed)
    model.to(device)
    opt = make_optimizer(model, lr, weight_decay, device)
    n_batches = -(-len(train) // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    if compile and len(train) >= batch_size:
        n_batches = min(n_batches, len(train) // batch_size)  # full batches only: one shape, one graph
    loop = _Loop(model, opt, train, val, objective, ips_clip, loss_weights, epochs, batch_size, n_batches, seed, device, on_epoch, progress, response_weighting)
    if parallel.launched():
        rank, world, joined = parallel.join_launched_group()
        try:
            return loop.run(rank, world, loss_function(compile))
        finally:
            if joined:
                parallel.leave_group()
    workers = workers if torch.device(device).type == "cpu" and parallel.can_fork() else 1
    if workers <= 1:
        return loop.run(0, 1, loss_function(compile))
    if compile:
        # Inductor compiles in a pool of subprocesses by default, which a forked rank must not
        # share with its parent; compiling in-process is as fast here.
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = 1
    # Each rank compiles its own graph (through its DDP wrapper; cached on disk after the first).
    return parallel.run_forked(workers, lambda rank, world: loop.run(rank, world, loss_function(compile)))


class _Loop:
    """``fit``'s epochs for one rank of ``world`` (world 1: a plain single-process loop)."""

    def __init__(
        self,
        model: Any,
        opt: Any,
        train: EncodedData,
        val: EncodedData | None,
        objective: str,
        ips_clip: float,
        loss_weights: dict[str, float],
        epochs: int,
        batch_size: int,
        n_batches: int,
        seed: int,
        device: Any,
        on_epoch: EpochCallback | None,
        progress: bool,
        response_weighting: str | None,
    ) -> None:
        import time

        self.model, self.opt, self.train, self.val = model, opt, train, val
        self.objective, self.ips_clip, self.loss_weights, self.response_weighting = objective, ips_clip, loss_weights, response_weighting
        self.epochs, self.batch_size, self.n_batches, self.seed, self.device = epochs, batch_size, n_batches, seed, device
        self.on_epoch, self.progress = on_epoch, progress
        # The first epoch's clock starts here, so its time includes forking the ranks, their rendezvous
        # and DDP's set-up (perf_counter is the system's monotonic clock, the same in forked ranks).
        self.started = time.perf_counter()

    def run(self, rank: int, world: int, loss_fn: Callable[..., Any]) -> FitResult:
        """All epochs on this rank; rank 0 scores ``val``, calls ``on_epoch`` and decides whether the others go on."""
        import time

        import torch

        from training import parallel

        result = FitResult(self.model)
        net = parallel.wrap(self.model) if world > 1 else self.model
        for epoch in range(self.epochs):
            net.train()
            if world > 1:
                torch.manual_seed(parallel.rank_seed(self.seed, epoch, rank))
            start = self.started if epoch == 0 else time.perf_counter()
            means = self.epoch(epoch, rank, world, net, loss_fn)
            result.seconds_per_epoch.append(time.perf_counter() - start)
            go_on = epoch + 1 < self.epochs
            if rank == 0:
                epoch_metrics = {f"train/{k}_loss" if k != "loss" else "train/loss": v for k, v in means.items()}
                try:
                    if self.val is not None and len(self.val):
                        epoch_metrics.update({f"val/{k}": v for k, v in offline_metrics(self.model, self.val, self.batch_size, self.device).items()})
                    result.history.append(epoch_metrics)
                    if self.on_epoch is not None:
                        self.on_epoch(epoch, epoch_metrics)
                except BaseException:
                    if world > 1 and go_on:
                        parallel.agree(False)  # the others stop instead of waiting for a next epoch
                    raise
            if world > 1 and go_on and not parallel.agree(True):
                break
        return result

    def epoch(self, epoch: int, rank: int, world: int, net: Any, loss_fn: Callable[..., Any]) -> dict[str, float]:
        """One pass over the batches (this rank's shard of each); the row-weighted mean loss parts over all ranks."""
        import torch
        from tqdm.auto import tqdm

        from training import parallel
        from training.losses import PART_NAMES

        names = ("loss", *PART_NAMES)
        totals = [0.0] * len(names)
        seen = 0
        shard = (rank, world) if world > 1 else None
        batches = self.train.batches(self.batch_size, self.device, shuffle=True, seed=self.seed * 1000 + epoch, shard=shard)
        bar = tqdm(batches, total=self.n_batches, desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress or rank != 0, leave=False)
        for i, batch in enumerate(bar):
            if i >= self.n_batches:
                break
            n = len(batch["length"])
            self.opt.zero_grad(set_to_none=True)
            if n == 0:  # a last batch smaller than the world: this rank still joins the all-reduce, with zero weight
                batch = next(self.train.batches(1, self.device))
            loss, parts = loss_fn(net, batch, self.objective, self.ips_clip, self.loss_weights, self.response_weighting)
            if world > 1:
                # DDP averages over ranks; scaling by rows x world / batch rows makes it the row-weighted mean.
                rows = min(self.batch_size, len(self.train) - i * self.batch_size)
                (loss * (n * world / rows)).backward()
            else:
                loss.backward()
            if n:
                values = [float(loss.detach()), *(float(parts[k].detach()) for k in names[1:])]
                totals = [t + v * n for t, v in zip(totals, values)]
                seen += n
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            self.opt.step()
            bar.set_postfix(loss=f"{totals[0] / max(seen, 1):.4f}")
        if world > 1:
            *totals, seen = parallel.all_sum([*totals, seen])
        return {k: v / max(seen, 1) for k, v in zip(names, totals)}


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

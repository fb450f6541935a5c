"""Data-parallel CPU training: forked workers take the same steps as one process on the whole batch."""

from __future__ import annotations

import os
import time

import pytest
import torch

from training.bench import synthetic_encoded
from training.model import ModelConfig, NextBestActionModel
from training.parallel import GradientExchange, WorkerFailed, can_fork, run_workers
from training.train import fit

pytestmark = pytest.mark.skipif(not can_fork(), reason="data-parallel workers need os.fork (POSIX)")
WEIGHTS = {"channel": 1.0, "content": 1.0, "slot": 1.0, "response": 1.0}


def _model(seed: int = 0, dropout: float = 0.0, history: bool = True) -> NextBestActionModel:
    torch.manual_seed(seed)
    return NextBestActionModel(ModelConfig(8, 30, 5, "transformer", 16, 1, 2, dropout, 12, history=history))


@pytest.fixture(scope="module")
def data():
    return synthetic_encoded(203, 12, 30, 5, seed=4, rows_per_hcp=20)  # 203: the last batch splits unevenly


def _fit(model, data, workers: int, objective: str = "naive", epochs: int = 2):
    return fit(
        model,
        data,
        None,
        objective=objective,
        ips_clip=20.0,
        loss_weights=WEIGHTS,
        lr=3e-3,
        weight_decay=1e-4,
        epochs=epochs,
        batch_size=64,
        seed=1,
        progress=False,
        workers=workers,
    )


@pytest.mark.parametrize("objective", ["naive", "dr"])
def test_two_workers_average_to_the_whole_batch_gradient(data, objective: str) -> None:
    from training.losses import training_loss

    batch = next(data.batches(64, shuffle=True, seed=3))
    model = _model()
    loss, _ = training_loss(model, batch, objective, 20.0, WEIGHTS)
    whole = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    exchange = GradientExchange(list(model.parameters()), 2, 1)
    seen = {}

    def body(rank: int) -> None:
        shard = next(data.batches(64, shuffle=True, seed=3, shard=(rank, 2)))
        model.zero_grad(set_to_none=True)
        part, _ = training_loss(model, shard, objective, 20.0, WEIGHTS)
        part.backward()
        exchange.average(rank, len(shard["length"]), [float(part.detach())])
        if rank == 0:
            seen["grads"] = [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    run_workers(2, body, exchange)
    for (name, _), a, b in zip(model.named_parameters(), whole, seen["grads"]):
        a = torch.zeros_like(b) if a is None else a
        if objective == "naive":  # plain means over rows: exactly the whole batch's gradient
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4, msg=name)
    if objective == "dr":  # self-normalised weights per shard: close to, not equal to, the whole batch's
        flat_a = torch.cat([(torch.zeros_like(g) if a is None else a).reshape(-1) for a, g in zip(whole, seen["grads"])])
        flat_b = torch.cat([g.reshape(-1) for g in seen["grads"]])
        assert torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0) > 0.9


def test_two_workers_train_like_one_process(data) -> None:
    one, two = _model(), _model()
    r1, r2 = _fit(one, data, 1), _fit(two, data, 2)
    assert len(r1.history) == len(r2.history) == 2
    for h1, h2 in zip(r1.history, r2.history):
        assert set(h1) == set(h2)
        assert h1["train/loss"] == pytest.approx(h2["train/loss"], rel=1e-3)
    assert r2.history[1]["train/loss"] < r2.history[0]["train/loss"]


def test_same_seed_same_model_with_workers(data) -> None:
    a, b = _model(dropout=0.1), _model(dropout=0.1)
    _fit(a, data, 2, "dr"), _fit(b, data, 2, "dr")
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name
    # And training moved the weights at all.
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), _model(dropout=0.1).parameters()))


def test_a_failing_worker_stops_the_run_instead_of_hanging() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    exchange = GradientExchange([w], 2, 1)

    def body(rank: int) -> None:
        if rank == 1:
            raise RuntimeError("worker 1 breaks")
        w.grad = torch.ones(3)
        exchange.average(rank, 4, [0.5])

    start = time.perf_counter()
    with pytest.raises(WorkerFailed):
        run_workers(2, body, exchange)
    assert time.perf_counter() - start < 30
    assert os.getpid() > 0 and torch.get_num_threads() >= 1  # the caller survives with its thread count


def test_exchange_averages_by_rows() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    exchange = GradientExchange([w], 2, 1)
    seen = {}

    def body(rank: int) -> None:
        w.grad = torch.full((2,), float(rank + 1))  # rank 0: 1, rank 1: 2
        parts, rows = exchange.average(rank, 1 if rank == 0 else 3, [10.0 * (rank + 1)])
        if rank == 0:
            seen.update(grad=w.grad.clone(), parts=parts, rows=rows)

    run_workers(2, body, exchange)
    # (1 x 1 + 3 x 2) / 4 = 1.75; parts (1 x 10 + 3 x 20) / 4 = 17.5
    torch.testing.assert_close(seen["grad"], torch.full((2,), 1.75))
    assert seen["parts"] == [pytest.approx(17.5)] and seen["rows"] == 4


def test_compiled_loss_trains_with_workers(data) -> None:
    """torch.compile'd loss (compiled once before the workers fork): same figures reported, loss falls."""
    model = _model()
    r = fit(
        model,
        data,
        None,
        objective="dr",
        ips_clip=20.0,
        loss_weights=WEIGHTS,
        lr=3e-3,
        weight_decay=1e-4,
        epochs=2,
        batch_size=64,
        seed=1,
        progress=False,
        workers=2,
        compile=True,
    )
    assert len(r.history) == 2 and r.history[1]["train/loss"] < r.history[0]["train/loss"]
    assert set(r.history[0]) == {"train/loss", "train/response_loss", "train/channel_loss", "train/content_loss", "train/slot_loss"}

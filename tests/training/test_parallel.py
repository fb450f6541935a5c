"""Data-parallel CPU training (DDP over gloo, forked ranks): the same steps as one process on the whole batch."""

from __future__ import annotations

import time

import pytest
import torch

from training.bench import synthetic_encoded
from training.model import ModelConfig, NextBestActionModel
from training.parallel import WorkerFailed, agree, all_sum, can_fork, launched, rank_seed, run_forked, wrap
from training.train import fit

pytestmark = pytest.mark.skipif(not can_fork(), reason="forked data-parallel ranks need os.fork (POSIX)")
WEIGHTS = {"channel": 1.0, "content": 1.0, "slot": 1.0, "response": 1.0}


def _model(seed: int = 0, dropout: float = 0.0, history: bool = True) -> NextBestActionModel:
    torch.manual_seed(seed)
    return NextBestActionModel(ModelConfig(8, 30, 5, "transformer", 16, 1, 2, dropout, 12, history=history))


@pytest.fixture(scope="module")
def data():
    return synthetic_encoded(203, 12, 30, 5, seed=4, rows_per_hcp=20)  # 203: the last batch splits unevenly


def _fit(model, data, workers: int, objective: str = "naive", epochs: int = 2, batch_size: int = 64, **kw):
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
        batch_size=batch_size,
        seed=1,
        progress=False,
        workers=workers,
        **kw,
    )


@pytest.mark.parametrize("objective", ["naive", "dr"])
def test_ddp_gradient_is_the_whole_batch_gradient(data, objective: str) -> None:
    """One step's all-reduced gradient on two uneven shards (6 + 5 rows) against one process on the 11 rows."""
    from training.losses import loss_tensors

    whole_batch = next(data.batches(11, shuffle=True, seed=3))
    model = _model()
    loss, _ = loss_tensors(model, whole_batch, objective, 20.0, WEIGHTS)
    whole = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)

    def body(rank: int, world: int) -> list:
        net = wrap(model)
        shard = next(data.batches(11, shuffle=True, seed=3, shard=(rank, world)))
        part, _ = loss_tensors(net, shard, objective, 20.0, WEIGHTS)
        (part * (len(shard["length"]) * world / 11)).backward()
        return [None if p.grad is None else p.grad.clone() for p in model.parameters()]

    grads = run_forked(2, body)
    for (name, _), a, b in zip(model.named_parameters(), whole, grads):
        a = torch.zeros_like(b) if a is None else a
        if objective == "naive":  # plain means over rows: exactly the whole batch's gradient
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4, msg=name)
    if objective == "dr":  # self-normalised weights per shard: close to, not equal to, the whole batch's
        flat_a = torch.cat([(torch.zeros_like(g) if a is None else a).reshape(-1) for a, g in zip(whole, grads)])
        flat_b = torch.cat([g.reshape(-1) for g in grads])
        assert torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0) > 0.9


def test_two_ranks_train_like_one_process(data) -> None:
    one, two = _model(), _model()
    r1, r2 = _fit(one, data, 1), _fit(two, data, 2)
    assert len(r1.history) == len(r2.history) == 2
    for h1, h2 in zip(r1.history, r2.history):
        assert set(h1) == set(h2)
        for k in h1:
            assert h1[k] == pytest.approx(h2[k], rel=1e-3), k
    assert r2.history[1]["train/loss"] < r2.history[0]["train/loss"]
    # Naive heads without dropout: plain row means, so the weights match one process on whole batches.
    _assert_same_weights(one, two)


def _assert_same_weights(one, two) -> None:
    for (name, x), y in zip(one.named_parameters(), two.parameters()):
        if name.endswith("self_attn.in_proj_bias"):
            # The key bias cannot change attention (softmax is shift-invariant), so its gradient is
            # float noise near 0 that AdamW scales up to full steps: compare only the query and value biases.
            d = x.shape[0] // 3
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        torch.testing.assert_close(y, x, atol=2e-4, rtol=1e-3, msg=name)


def test_a_batch_smaller_than_the_world_trains(data) -> None:
    """203 rows in batches of 101: the last batch has one row, so rank 1's shard is empty and joins with zero weight."""
    one, two = _model(), _model()
    r1, r2 = _fit(one, data, 1, batch_size=101, epochs=1), _fit(two, data, 2, batch_size=101, epochs=1)
    assert r1.history[0]["train/loss"] == pytest.approx(r2.history[0]["train/loss"], rel=1e-3)
    _assert_same_weights(one, two)


def test_same_seed_same_model_with_ranks(data) -> None:
    a, b = _model(dropout=0.1), _model(dropout=0.1)
    _fit(a, data, 2, "dr"), _fit(b, data, 2, "dr")
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name
    # And training moved the weights at all.
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), _model(dropout=0.1).parameters()))
    # Two ranks draw other dropout masks than one process (test_parallel_torchrun relies on this: equal weights there are not vacuous).
    c = _model(dropout=0.1)
    _fit(c, data, 1, "dr")
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_the_model_trains_on_after_a_parallel_fit(data) -> None:
    """No DDP hook or process group outlives fit: a plain backward and a second fit work in the same process."""
    model = _model()
    _fit(model, data, 2, epochs=1)
    assert not launched()
    from training.losses import loss_tensors

    loss, _ = loss_tensors(model, next(data.batches(16)), "naive", 20.0, WEIGHTS)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    r = _fit(model, data, 2, epochs=1)
    assert len(r.history) == 1


def test_a_failing_worker_stops_the_run_instead_of_hanging() -> None:
    def body(rank: int, world: int) -> None:
        if rank == 1:
            raise RuntimeError("worker 1 breaks")
        all_sum([1.0])

    start = time.perf_counter()
    with pytest.raises(WorkerFailed):
        run_forked(2, body)
    assert time.perf_counter() - start < 30
    assert torch.get_num_threads() >= 1 and not torch.distributed.is_initialized()  # the caller survives, out of the group


def test_rank_zero_stopping_early_stops_the_others() -> None:
    """An exception of rank 0's own (Optuna pruning) is re-raised as is; the workers are told to stop and exit cleanly."""

    class Pruned(Exception):
        pass

    def body(rank: int, world: int) -> None:
        if rank == 0:
            agree(False)
            raise Pruned()
        assert not agree(True)

    with pytest.raises(Pruned):
        run_forked(2, body)


def test_on_epoch_raising_stops_every_rank(data) -> None:
    """fit's on_epoch (Optuna pruning) raising after epoch 1 of 3: the exception reaches the caller, no rank hangs."""

    def stop(epoch: int, m: dict) -> None:
        raise KeyError("pruned")

    start = time.perf_counter()
    with pytest.raises(KeyError):
        _fit(_model(), data, 2, epochs=3, on_epoch=stop)
    assert time.perf_counter() - start < 60


def test_all_sum_and_rank_seeds() -> None:
    assert run_forked(2, lambda rank, world: all_sum([rank + 1.0, 10.0])) == [3.0, 20.0]
    assert len({rank_seed(s, e, r) for s in range(3) for e in range(5) for r in range(4)}) == 60


@pytest.mark.slow
def test_compiled_loss_trains_with_ranks(data) -> None:
    """torch.compile'd loss through each rank's DDP wrapper: same figures reported, loss falls (~25 s with inductor's cache warm, minutes cold)."""
    model = _model()
    r = _fit(model, data, 2, "dr", compile=True)
    assert len(r.history) == 2 and r.history[1]["train/loss"] < r.history[0]["train/loss"]
    assert set(r.history[0]) == {"train/loss", "train/response_loss", "train/channel_loss", "train/content_loss", "train/slot_loss"}

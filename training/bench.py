"""`nba bench train`: epoch time, throughput and peak memory on a synthetic HCPs x weeks training set.

The encoded arrays are generated directly (one decision row per HCP and week, full-length
sequences, the stock catalogue and static width), so the figures measure the training loop,
not a data generator. Same-run baseline: the naive (uncorrected) objective's throughput.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np

from contract.schema import CHANNELS
from training.dataset import EncodedData
from training.model import N_SLOTS


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def synthetic_encoded(rows: int, seq_len: int, n_content: int, n_static: int, seed: int = 0) -> EncodedData:
    """Random model-ready arrays in the compact dtypes ``encode_frame`` produces."""
    rng = np.random.default_rng(seed)
    length = rng.integers(0, seq_len + 1, rows).astype(np.int16)
    valid = np.arange(seq_len)[None, :] < length[:, None]

    def tok(high: int, dtype: Any) -> np.ndarray:
        return (rng.integers(1, high + 1, (rows, seq_len), dtype=np.int32) * valid).astype(dtype)

    arrays = {
        "channel": tok(len(CHANNELS), np.int8),
        "content": tok(n_content - 1, np.int16),
        "response": tok(2, np.int8),
        "weekday": tok(7, np.int8),
        "daypart": tok(4, np.int8),
        "gap_days": (rng.exponential(7.0, (rows, seq_len)) * valid).astype(np.float32),
        "read_seconds": (rng.exponential(60.0, (rows, seq_len)) * valid).astype(np.float32),
        "length": length,
        "static": _static(rng, rows, n_static),
        "label_channel": rng.integers(0, len(CHANNELS), rows).astype(np.int8),
        "label_content": rng.integers(1, n_content, rows).astype(np.int32),
        "label_slot": rng.integers(0, N_SLOTS, rows).astype(np.int8),
        "label_response": (rng.random(rows) < 0.3).astype(np.float32),
        "propensity": rng.uniform(0.01, 0.8, rows).astype(np.float32),
    }
    return EncodedData(arrays, np.arange(rows).astype(str), np.zeros(rows, dtype="datetime64[ns]"))


def _static(rng: np.random.Generator, rows: int, n_static: int) -> np.ndarray:
    # Drawn in chunks straight to float16: one float64 draw of 100k x 52 x 214 alone is 9 GB.
    out = np.empty((rows, n_static), dtype=np.float16)
    for start in range(0, rows, 1 << 18):
        stop = min(rows, start + (1 << 18))
        out[start:stop] = rng.standard_normal((stop - start, n_static), dtype=np.float32)
    return out


def bench_train(cfg: Any, *, hcps: int, weeks: int, epochs: int = 1, max_batches: int | None = None, n_content: int = 182, n_static: int = 214) -> dict[str, Any]:
    """Train ``epochs`` on hcps x weeks synthetic rows; report seconds per epoch, rows/s, peak RSS."""
    import torch

    from training.jobs import build_model, configure_torch
    from training.losses import training_loss
    from training.train import fit

    device = configure_torch(cfg)
    rss_start = _peak_rss_mb()
    rows = hcps * weeks
    t0 = time.perf_counter()
    data = synthetic_encoded(rows, cfg.model.max_seq_len, n_content, n_static, cfg.seed)
    gen_s = time.perf_counter() - t0
    weights = {"channel": cfg.loss.channel_weight, "content": cfg.loss.content_weight, "slot": cfg.loss.slot_weight, "response": cfg.loss.response_weight}

    def batch_times(objective: str, n: int) -> list[float]:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, n_content, n_static).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        times = []
        for i, batch in enumerate(data.batches(cfg.batch_size, device, shuffle=True, seed=cfg.seed)):
            if i >= n:
                break
            start = time.perf_counter()
            loss, _ = training_loss(model, batch, objective, cfg.loss.ips_clip, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return times[2:] or times  # the first batches pay for allocation warm-up

    naive = batch_times("naive", 12)
    chosen = batch_times(cfg.loss.objective, 12)
    model = build_model(cfg, n_content, n_static)
    result = fit(model, data, None, objective=cfg.loss.objective, ips_clip=cfg.loss.ips_clip, loss_weights=weights, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=epochs, batch_size=cfg.batch_size, seed=cfg.seed, device=device, max_batches=max_batches)
    n_batches = -(-rows // cfg.batch_size)
    done = n_batches if max_batches is None else min(n_batches, max_batches)
    epoch_s = float(np.median(result.seconds_per_epoch)) * n_batches / done
    rows_per_s = cfg.batch_size / float(np.median(chosen))
    return {
        "hcps": hcps,
        "weeks": weeks,
        "rows": rows,
        "encoder": cfg.model.encoder,
        "d_model": cfg.model.d_model,
        "objective": cfg.loss.objective,
        "batch_size": cfg.batch_size,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "epoch_s_median": epoch_s,
        "epoch_extrapolated_from_batches": done if done < n_batches else None,
        "train_rows_per_s_median": rows_per_s,
        "naive_objective_rows_per_s_median": cfg.batch_size / float(np.median(naive)),
        "objective_vs_naive_throughput_ratio": rows_per_s / (cfg.batch_size / float(np.median(naive))),
        "data_generation_s": gen_s,
        "data_mb": sum(v.nbytes for v in data.arrays.values()) / 2**20,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_before_mb": rss_start,
        "target_epoch_s": 300,
        "target_peak_rss_mb": 6144,
    }

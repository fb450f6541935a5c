"""`nba bench train`: epoch time, throughput and peak memory on a synthetic HCPs x weeks training set.

The encoded arrays are generated directly, so the figures measure the training loop, not a data
generator, but their shapes follow what the simulator and feature stage produce (measured on a
2,000-HCP year, seed 0: 113,050 decision rows, i.e. ~1.09 per HCP and week; each HCP's history
grows by one touch per row up to the 20-touch window, so ~65% of rows carry a full window; 182
content ids; 214 static columns). Each encoder gets one timed epoch (wall and CPU seconds) and a
same-run baseline: the reference path (full-sequence encoder, unfused AdamW) on the same batches,
interleaved with this loop's path so machine load hits both alike. The naive (uncorrected)
objective's throughput is the second baseline.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np

from contract.schema import CHANNELS
from training.dataset import ITEM_SLOTS, RESPONSE_HISTORY_SIZES, EncodedData
from training.model import N_SLOTS
from training.model.candidates import N_ITEM_FEATURES, contact_width

ROWS_PER_HCP_WEEK = 113_050 / 2_000 / 52  # simulator (2,000 HCPs x 365 days, seed 0) through the feature stage
CONTACT_WINDOWS = 4  # features.contact_windows_days: [7, 21, 60, 180]
TARGET_EPOCH_S = 300
TARGET_PEAK_RSS_MB = 6144


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _peak_rss_workers_mb() -> float:
    """The largest peak RSS of any reaped child (a data-parallel worker; its data pages are shared with this process)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


class _MemorySampler:
    """Peak of the machine's memory in use (MemTotal - MemAvailable) while running: pages shared
    between the parent and its forked workers count once, where summing their RSS counts them twice."""

    def __init__(self, interval_s: float = 0.25) -> None:
        import threading

        self.interval_s, self.peak_mb, self.start_mb = interval_s, 0.0, self._in_use_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _in_use_mb() -> float:
        try:
            info = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
        except OSError:  # not Linux: no machine-level figure
            return float("nan")
        kib = lambda k: float(info[k].strip().split()[0])  # noqa: E731
        return (kib("MemTotal") - kib("MemAvailable")) / 1024.0

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._in_use_mb())

    def start(self) -> _MemorySampler:
        """Begin sampling in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and take one last reading."""
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._in_use_mb())

    @property
    def delta_mb(self) -> float:
        """How far memory in use rose above its level at the start."""
        return self.peak_mb - self.start_mb


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def synthetic_encoded(rows: int, seq_len: int, n_content: int, n_static: int, seed: int = 0, *, rows_per_hcp: float | None = None) -> EncodedData:
    """Random model-ready arrays in the compact dtypes ``encode_frame`` produces.

    Without ``rows_per_hcp`` every row is its own HCP with a uniform history length; with it, rows
    belong to ~rows/rows_per_hcp HCPs and a row's history is the touches before it in its HCP's
    year (length = its index within the HCP, capped at ``seq_len``), as in the simulated data.
    """
    rng = np.random.default_rng(seed)
    if rows_per_hcp is None:
        length = rng.integers(0, seq_len + 1, rows).astype(np.int16)
        hcp = np.arange(rows)
    else:
        hcp = np.sort(rng.integers(0, max(1, round(rows / rows_per_hcp)), rows))
        first = np.searchsorted(hcp, hcp, side="left")  # index of the HCP's first row
        length = np.minimum(np.arange(rows) - first, seq_len).astype(np.int16)
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
        # The feature stage's response-history counts: ~52 touches a year spread over the blocks.
        # Drawn as uint8 directly: an int64 draw would add a 2.3 GB transient at 100k HCPs.
        "history_long": rng.integers(0, 7, (rows, 2 * sum(RESPONSE_HISTORY_SIZES)), dtype=np.uint8),
        # The candidate block (training.model.candidates): byte-coded recency and counts, item slots
        # holding the HCP's recent items (about eight of the twelve filled).
        "contact": rng.integers(0, 256, (rows, contact_width(CONTACT_WINDOWS, len(CHANNELS))), dtype=np.uint8),
        "item_ids": (rng.integers(2, n_content, (rows, ITEM_SLOTS)) * (rng.random((rows, ITEM_SLOTS)) < 0.7)).astype(np.int16),
        "item_feats": rng.integers(0, 256, (rows, ITEM_SLOTS, N_ITEM_FEATURES), dtype=np.uint8),
    }
    return EncodedData(arrays, hcp.astype(str), np.zeros(rows, dtype="datetime64[ns]"))


def _static(rng: np.random.Generator, rows: int, n_static: int) -> np.ndarray:
    # Drawn in chunks straight to float16: one float64 draw of 100k x 52 x 214 alone is 9 GB.
    out = np.empty((rows, n_static), dtype=np.float16)
    for start in range(0, rows, 1 << 18):
        stop = min(rows, start + (1 << 18))
        out[start:stop] = rng.standard_normal((stop - start, n_static), dtype=np.float32)
    return out


def use_full_sequence_encoder(model: Any) -> Any:
    """Make ``model`` take the reference path: every position of every layer encoded, then the last
    real one picked (what ``last_hidden`` computes with less work). For same-run baselines and tests."""
    import torch

    def last_hidden(batch: dict[str, Any]) -> Any:
        hidden = model.encode(batch)  # [B, L+1, D]
        last = batch["length"].long().clamp(0, hidden.shape[1] - 1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    model.last_hidden = last_hidden  # instance attribute: shadows the method for this model only
    return model


def synthetic_content_codes(n_content: int) -> np.ndarray:
    """Tag codes for a synthetic catalogue (each tag cycling through its values), so the timed model embeds tags like the default one."""
    from training.data import CONTENT_TAGS

    codes = np.zeros((n_content, len(CONTENT_TAGS)), dtype=np.int64)
    for a, values in enumerate(CONTENT_TAGS.values()):
        codes[2:, a] = 1 + np.arange(n_content - 2) % len(values)
    return codes


def _paired_rows_per_s(cfg: Any, data: EncodedData, n_content: int, n_static: int, device: Any, n_batches: int, rounds: int = 3) -> dict[str, float]:
    """Rows/s of the reference path, this loop's path and the naive objective on the same batches,
    interleaved in ``rounds`` so load changes hit all alike; medians over rounds."""
    import torch

    from training.jobs import build_model
    from training.losses import training_loss
    from training.train import make_optimizer

    weights = _loss_weights(cfg)
    batches = [b for b, _ in zip(data.batches(cfg.batch_size, device, shuffle=True, seed=cfg.seed + 1), range(n_batches + 1))]
    runs: dict[str, tuple[Any, Any, str]] = {}
    for name in ("reference", "fast", "naive", "no_candidates"):
        torch.manual_seed(cfg.seed)
        # no_candidates: the same network without the candidate terms (what the epoch cost before them).
        windows = CONTACT_WINDOWS if name != "no_candidates" else 0
        model = build_model(cfg, n_content, n_static, synthetic_content_codes(n_content), response_history=True, contact_windows=windows).to(device)
        if name == "reference":
            use_full_sequence_encoder(model)
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            opt = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
        runs[name] = (model, opt, "naive" if name == "naive" else cfg.loss.objective)

    def step(model: Any, opt: Any, objective: str, batch: dict[str, Any]) -> None:
        loss, _ = training_loss(model, batch, objective, cfg.loss.ips_clip, weights, response_weighting=cfg.loss.response_weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    speeds: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # first step of each pays for allocation warm-up: untimed
        step(*run, batches[0])
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for batch in batches[1:]:
                step(*run, batch)
            speeds[name].append(sum(len(b["length"]) for b in batches[1:]) / (time.perf_counter() - start))
    return {name: float(np.median(v)) for name, v in speeds.items()}


def _loss_weights(cfg: Any) -> dict[str, float]:
    return {"channel": cfg.loss.channel_weight, "content": cfg.loss.content_weight, "slot": cfg.loss.slot_weight, "response": cfg.loss.response_weight}


def bench_train(
    cfg: Any,
    *,
    hcps: int,
    weeks: int,
    epochs: int = 1,
    max_batches: int | None = None,
    n_content: int = 182,
    n_static: int = 214,
    encoders: list[str] | None = None,
    rows_per_hcp_week: float = ROWS_PER_HCP_WEEK,
    baseline_batches: int = 3,
) -> dict[str, Any]:
    """Per encoder: one timed ``epochs`` run of ``fit`` on hcps x weeks simulator-shaped rows (seconds
    per epoch, CPU seconds, rows/s) and same-run baselines; peak RSS of the whole run."""
    import torch

    from training.jobs import build_model, configure_torch
    from training.train import fit

    device = configure_torch(cfg)
    encoders = encoders or [cfg.model.encoder]
    load_start = os.getloadavg()[0]
    rss_start = _peak_rss_mb()
    sampler = _MemorySampler().start()
    rows = max(1, round(hcps * weeks * rows_per_hcp_week))
    t0 = time.perf_counter()
    data = synthetic_encoded(rows, cfg.model.max_seq_len, n_content, n_static, cfg.seed, rows_per_hcp=weeks * rows_per_hcp_week)
    gen_s = time.perf_counter() - t0
    n_batches = -(-rows // cfg.batch_size)
    done = n_batches if max_batches is None else min(n_batches, max_batches)
    out: dict[str, Any] = {
        "hcps": hcps,
        "weeks": weeks,
        "rows": rows,
        "rows_per_hcp_week": rows_per_hcp_week,
        "default_encoder": cfg.model.encoder,
        "encoders": ",".join(encoders),
        "d_model": cfg.model.d_model,
        "n_layers": cfg.model.n_layers,
        "content_tags": cfg.model.content_tags,
        "long_history": cfg.model.history and cfg.model.long_history,
        "candidates": cfg.model.candidates,
        "objective": cfg.loss.objective,
        "batch_size": cfg.batch_size,
        "torch_threads": torch.get_num_threads(),
        "workers": cfg.workers,
        "compile": cfg.compile,
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "epoch_extrapolated_from_batches": done if done < n_batches else None,
        "data_generation_s": gen_s,
        "data_mb": sum(v.nbytes for v in data.arrays.values()) / 2**20,
    }
    for enc in encoders:
        ecfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"encoder": enc})})
        speeds = _paired_rows_per_s(ecfg, data, n_content, n_static, device, baseline_batches)
        model = build_model(ecfg, n_content, n_static, synthetic_content_codes(n_content), response_history=True, contact_windows=CONTACT_WINDOWS)
        cpu0 = time.process_time()
        child0 = _children_cpu_s()
        result = fit(
            model,
            data,
            None,
            objective=ecfg.loss.objective,
            ips_clip=ecfg.loss.ips_clip,
            loss_weights=_loss_weights(ecfg),
            lr=ecfg.lr,
            weight_decay=ecfg.weight_decay,
            epochs=epochs,
            batch_size=ecfg.batch_size,
            seed=ecfg.seed,
            device=device,
            max_batches=max_batches,
            workers=ecfg.workers,
            response_weighting=ecfg.loss.response_weighting,
            compile=ecfg.compile,
        )
        # Forked data-parallel workers' CPU time counts too (they are reaped, so RUSAGE_CHILDREN has it).
        cpu_s = (time.process_time() - cpu0 + _children_cpu_s() - child0) / epochs
        scale = n_batches / done  # 1 for a full epoch
        epoch_s = float(np.median(result.seconds_per_epoch)) * scale
        out.update(
            {
                f"{enc}_epoch_s": epoch_s,
                # Each timed epoch (with compile on, the first one includes compiling the graph).
                f"{enc}_epoch_s_each": [round(float(x) * scale, 2) for x in result.seconds_per_epoch],
                f"{enc}_epoch_cpu_s": cpu_s * scale,
                # What the epoch would take on an idle machine if every thread stayed busy: the wall
                # figure on a shared machine includes time spent waiting for other processes.
                f"{enc}_epoch_cpu_s_per_thread": cpu_s * scale / (torch.get_num_threads() * ecfg.workers),
                f"{enc}_train_rows_per_s": rows / epoch_s,
                f"{enc}_cpu_us_per_row": cpu_s * 1e6 / min(rows, done * ecfg.batch_size),
                f"{enc}_paired_rows_per_s": speeds["fast"],
                f"{enc}_reference_path_rows_per_s": speeds["reference"],
                f"{enc}_speedup_vs_reference_path": speeds["fast"] / speeds["reference"],
                # The paired figures run in this one process: the epoch's rows/s over them is what
                # the data-parallel workers add (on a loaded machine, also what load took away).
                f"{enc}_data_parallel_speedup_vs_one_process": (rows / epoch_s) / speeds["fast"],
                f"{enc}_objective_vs_naive_throughput_ratio": speeds["fast"] / speeds["naive"],
                f"{enc}_no_candidates_rows_per_s": speeds["no_candidates"],
                # Cost of the candidate terms, same batches, same process: > 1 means slower with them.
                f"{enc}_candidates_time_ratio": speeds["no_candidates"] / speeds["fast"],
                f"{enc}_epoch_target_met": epoch_s <= TARGET_EPOCH_S,
            }
        )
        del model, result
    sampler.stop()
    # The run's memory: this process's peak, or (with forked workers, whose data pages it shares)
    # what it held at the start plus how far the machine's memory in use rose, if that is more.
    peak = max(_peak_rss_mb(), rss_start + sampler.delta_mb) if np.isfinite(sampler.delta_mb) else _peak_rss_mb() + _peak_rss_workers_mb()
    out.update(
        {
            "peak_memory_mb": peak,
            "peak_rss_mb": _peak_rss_mb(),
            "peak_rss_worker_mb": _peak_rss_workers_mb(),
            "machine_memory_rise_mb": sampler.delta_mb,
            "peak_rss_before_mb": rss_start,
            "peak_rss_target_met": peak <= TARGET_PEAK_RSS_MB,
            "load_avg_1m_start": load_start,
            "load_avg_1m_end": os.getloadavg()[0],
            "target_epoch_s": TARGET_EPOCH_S,
            "target_peak_rss_mb": TARGET_PEAK_RSS_MB,
        }
    )
    return out

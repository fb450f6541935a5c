"""The jobs behind `nba train` / `nba tune`: data in, runs and registry entries out (`nba promote`: training.promotion)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainingConfig


@dataclass
class Prepared:
    """Encoded train/validation/test splits with the vocabulary and scaler fitted on them.

    Validation weeks select (early stopping, calibration, tuning); test weeks (after them) are what
    `nba evaluate` reports.
    """

    train: Any
    val: Any
    vocab: Any
    scaler: Any
    fingerprint: str
    source: str
    content_codes: Any = None  # [V, tags] codes (training.data.content_tag_codes) or None without a catalogue
    item_products: Any = None  # [V] product of each vocabulary item ("" unknown), or None without the contract's tables
    hcp_products: Any = None  # hcp_id -> main product (pandas Series), or None
    test: Any = None  # EncodedData of the test weeks (empty with test_weeks=0)


def prepare_data(cfg: TrainingConfig, vocab: Any = None, scaler: Any = None) -> Prepared:
    """Load the training set, split by time, fit vocabulary and scaler on the training weeks (unless
    given: a saved model's), encode."""
    import pandas as pd

    from training.data import content_tag_codes, load_training_set
    from training.dataset import ContentVocab, StaticScaler, encode_frame, static_feature_columns, time_split

    ts = load_training_set(cfg.training_set, cfg.data_dir, cfg.features_config)
    frame = ts.frame
    weeks = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    train_mask, val_mask, test_mask = time_split(weeks, cfg.val_weeks, cfg.test_weeks)
    vocab = vocab or ContentVocab.from_ids([*ts.content_ids, *frame["label_content_id"].dropna().astype(str).tolist()])
    scaler = scaler or StaticScaler.fit(frame[train_mask], static_feature_columns(frame))
    data = encode_frame(frame, vocab, scaler, cfg.model.max_seq_len)
    codes = content_tag_codes(vocab.ids, ts.content_tags) if ts.content_tags is not None else None
    item_products = None
    if ts.content_products is not None:
        item_products = ts.content_products.reindex(pd.Index(["", "", *vocab.ids], dtype=object)).fillna("").to_numpy(dtype=object)
    return Prepared(
        data.subset(train_mask), data.subset(val_mask), vocab, scaler, ts.fingerprint, ts.source, codes, item_products, ts.hcp_products, data.subset(test_mask)
    )


def build_model(
    cfg: TrainingConfig, n_content: int, n_static: int, content_codes: Any = None, *, response_history: bool = False, contact_windows: int = 0
) -> Any:
    """A fresh network sized by ``cfg.model``; with ``content_codes`` ([V, tags]) and ``model.content_tags`` it embeds the tags too;
    with ``response_history`` (the data holds the feature stage's counts) and ``model.long_history`` it reads them; with
    ``contact_windows`` (the data holds the candidate block) and ``model.candidates`` it adds the candidate terms."""
    from contract.schema import CHANNELS
    from training.data import CONTENT_TAGS
    from training.dataset import ITEM_SLOTS, RESPONSE_HISTORY_SIZES
    from training.model import ModelConfig, NextBestActionModel

    m = cfg.model
    tags = m.content_tags and content_codes is not None
    sizes = tuple(len(v) for v in CONTENT_TAGS.values()) if tags else ()
    long_history = RESPONSE_HISTORY_SIZES if m.history and m.long_history and response_history else ()
    model = NextBestActionModel(
        ModelConfig(
            len(CHANNELS),
            n_content,
            n_static,
            m.encoder,
            m.d_model,
            m.n_layers,
            m.n_heads,
            m.dropout,
            m.max_seq_len,
            history=m.history,
            content_attributes=sizes,
            long_history=long_history,
            candidates=(contact_windows, ITEM_SLOTS) if m.candidates and contact_windows else (),
            relative_rates=m.relative_rates,
        )
    )
    if tags:
        model.set_content_attributes(content_codes)
    return model


def configure_torch(cfg: TrainingConfig) -> Any:
    """Thread count and device (CPU by default, CUDA when present and allowed)."""
    import torch

    from training.model import select_device

    torch.set_num_threads(cfg.num_threads)
    return select_device(cfg.device)


def _input_example(prep: Prepared, frame_rows: int = 3) -> Any:
    """A few rows in the pyfunc's input shape, rebuilt from encoded data (no label columns)."""
    import pandas as pd

    from contract.schema import CHANNELS

    a = prep.val.arrays if len(prep.val) else prep.train.arrays
    hcp = prep.val.hcp_id if len(prep.val) else prep.train.hcp_id
    n = min(frame_rows, len(hcp))
    history_columns = prep.train.meta.get("history_columns", ())  # subsets share the encoding's meta
    rows = []
    for i in range(n):  # a handful of rows for the example, not a data path
        length = int(a["length"][i])
        rows.append(
            {
                "hcp_id": str(hcp[i]),
                "seq_channel": (a["channel"][i, :length].astype(np.int64) - 1).tolist(),
                "seq_content_id": [str(x) if x is not None else "" for x in prep.vocab.decode(a["content"][i, :length])],
                "seq_response": (a["response"][i, :length].astype(np.int64) - 1).tolist(),
                "seq_read_seconds": a["read_seconds"][i, :length].astype(float).tolist(),
                "seq_gap_days": a["gap_days"][i, :length].astype(float).tolist(),
                "seq_weekday": (a["weekday"][i, :length].astype(np.int64) - 1).tolist(),
                "seq_daypart": (a["daypart"][i, :length].astype(np.int64) - 1).tolist(),
                **{c: float(m) for c, m in zip(prep.scaler.columns, prep.scaler.mean)},
                **({c: int(v) for c, v in zip(history_columns, a["history_long"][i])} if history_columns else {}),
                **(_candidate_example(prep, a, i) if "contact" in a else {}),
                **{f"consent_{c}": True for c in CHANNELS},
            }
        )
    return pd.DataFrame(rows)


def _candidate_example(prep: Prepared, a: dict[str, Any], i: int) -> dict[str, Any]:
    """One row's candidate block back in the feature stage's columns (approximately: days are decoded from their byte)."""
    import math

    from features.catalog import ITEM_HISTORY_ARRAYS, ITEM_HISTORY_PREFIX
    from training.model.candidates import DAYS_CAP

    def days(code: Any) -> Any:
        return np.expm1(np.asarray(code, dtype=np.float64) / 255.0 * math.log1p(DAYS_CAP))

    names = prep.train.meta["contact_columns"]  # the encoding's own column order (training.dataset.encode_candidates)
    row = {n: float(days(v)) if "days_since" in n else int(v) for n, v in zip(names, a["contact"][i])}
    ids = a["item_ids"][i]
    keep = ids > 1
    row[f"{ITEM_HISTORY_PREFIX}content_id"] = [str(x) for x in prep.vocab.decode(ids[keep])]
    for j, name in enumerate(ITEM_HISTORY_ARRAYS):
        v = a["item_feats"][i, keep, j]
        row[f"{ITEM_HISTORY_PREFIX}{name}"] = (days(v) if name.startswith("days_since") else v.astype(float)).tolist()
    row[f"{ITEM_HISTORY_PREFIX}len"] = int(keep.sum())
    return row


def train_job(
    cfg: TrainingConfig,
    *,
    prep: Prepared | None = None,
    register: bool = True,
    nested: bool = False,
    on_epoch: Any = None,
    progress: bool = True,
    log_model: bool = True,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train one model, record everything in MLflow, save the bundle, optionally register it as challenger.

    Under torchrun (``training.parallel``) every rank calls this; ranks other than 0 only train
    their shards (``follow_train_job``) and rank 0 records, saves and registers as above.
    """
    from training import parallel

    if parallel.launched_rank() != 0:
        return follow_train_job(cfg, prep=prep, progress=progress)
    import mlflow

    from training import tracking
    from training.artifacts import ModelBundle, save_bundle
    from training.contentless import contentless_names, resolve_contentless
    from training.dataset import weeks_window

    tracking.setup(cfg.tracking)
    device = configure_torch(cfg)
    prep = prep or prepare_data(cfg)
    from training.train import seed_everything

    seed_everything(cfg.seed)
    model = _new_model(cfg, prep)
    with mlflow.start_run(nested=nested) as run:
        mlflow.log_params({k: str(v) for k, v in tracking.flatten(cfg.model_dump()).items()})
        mlflow.set_tags({"data_fingerprint": prep.fingerprint, "data_source": prep.source, "stage": "training", "device": str(device), **(tags or {})})
        mlflow.log_dict(cfg.model_dump(), "config/training.json")
        mlflow.log_dict(
            {
                "static_features": list(prep.scaler.columns),
                "sequence_features": ["seq_channel", "seq_content_id", "seq_response", "seq_read_seconds", "seq_gap_days", "seq_weekday", "seq_daypart"],
            },
            "config/features.json",
        )
        mlflow.log_metrics({"data/train_rows": len(prep.train), "data/val_rows": len(prep.val), "data/content_vocab": len(prep.vocab)}, step=0)

        def epoch_cb(epoch: int, m: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in m.items() if np.isfinite(v)}, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, m)

        result = _fit(cfg, model, prep, device, on_epoch=epoch_cb, progress=progress)
        final = dict(result.history[-1]) if result.history else {}
        contentless = resolve_contentless(cfg.contentless_channels, prep.train.arrays["label_channel"], prep.train.arrays["label_content"])
        calibrator, calib = _calibrate(model, prep, cfg.batch_size, device, contentless=contentless, clip=cfg.loss.ips_clip)
        final.update({f"val/calibration_{k}": v for k, v in calib.items()})
        mlflow.set_tag("contentless_channels", ",".join(contentless_names(contentless)) or "none")
        model.cpu()
        from training.suitability import channel_item_mask, to_meta

        types = prep.content_codes[:, 1] if prep.content_codes is not None else None  # CONTENT_TAGS order: topic, content_type, form
        items = channel_item_mask(prep.train.arrays["label_channel"], prep.train.arrays["label_content"], types, len(prep.vocab))
        selection = weeks_window(prep.val)
        meta = {
            "run_id": run.info.run_id,
            "data_fingerprint": prep.fingerprint,
            "objective": cfg.loss.objective,
            "seed": cfg.seed,
            "channel_items": to_meta(items, prep.vocab.ids),
            "selection_window": selection,
        }
        bundle = ModelBundle(model, prep.vocab, prep.scaler, meta, calibrator, contentless)
        # The selection figure (tuning's ope_dr objective): the served policy's estimates on the validation weeks.
        final.update(_validation_policy_value(cfg, bundle, prep))
        mlflow.log_metrics(
            {k: v for k, v in final.items() if k.startswith(("val/policy_value", "val/calibration")) and np.isfinite(v)}, step=len(result.history) - 1
        )
        mlflow.log_metric("time/seconds_per_epoch_median", float(np.median(result.seconds_per_epoch)))
        mlflow.set_tag(tracking.SELECTION_WINDOW_TAG, selection)
        out_dir = save_bundle(bundle, Path(cfg.output_dir) / run.info.run_id)
        version = None
        if log_model:
            model_uri = _log_pyfunc(bundle, out_dir, prep)
            if register:
                version = tracking.register(
                    model_uri,
                    cfg.tracking.registered_model,
                    tracking.CHALLENGER,
                    tags={"data_fingerprint": prep.fingerprint, "run_id": run.info.run_id, tracking.SELECTION_WINDOW_TAG: selection},
                )
        return {"run_id": run.info.run_id, "model_version": version, "bundle": str(out_dir), "metrics": final, "seconds_per_epoch": result.seconds_per_epoch}


def follow_train_job(cfg: TrainingConfig, *, prep: Prepared | None = None, progress: bool = False) -> dict[str, Any]:
    """A torchrun rank other than 0: the same data, seed and network as rank 0, trained on this rank's shards; records nothing."""
    from training import parallel
    from training.train import seed_everything

    device = configure_torch(cfg)
    prep = prep or prepare_data(cfg)
    seed_everything(cfg.seed)
    result = _fit(cfg, _new_model(cfg, prep), prep, device, on_epoch=None, progress=progress)
    return {
        "run_id": None,
        "model_version": None,
        "bundle": None,
        "metrics": {},
        "seconds_per_epoch": result.seconds_per_epoch,
        "rank": parallel.launched_rank(),
    }


def _new_model(cfg: TrainingConfig, prep: Prepared) -> Any:
    """The network for ``prep``'s data (every torchrun rank builds the same one from the same seed)."""
    return build_model(
        cfg,
        len(prep.vocab),
        len(prep.scaler.columns),
        prep.content_codes,
        response_history="history_long" in prep.train.arrays,
        contact_windows=int(prep.train.meta.get("contact_windows", 0)),
    )


def _fit(cfg: TrainingConfig, model: Any, prep: Prepared, device: Any, *, on_epoch: Any, progress: bool) -> Any:
    """``training.train.fit`` with ``cfg``'s settings: data-parallel over ``cfg.workers`` forked ranks, or torchrun's ranks when launched."""
    from training.train import fit

    weights = {"channel": cfg.loss.channel_weight, "content": cfg.loss.content_weight, "slot": cfg.loss.slot_weight, "response": cfg.loss.response_weight}
    return fit(
        model,
        prep.train,
        prep.val,
        objective=cfg.loss.objective,
        ips_clip=cfg.loss.ips_clip,
        loss_weights=weights,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        device=device,
        on_epoch=on_epoch,
        progress=progress,
        workers=cfg.workers,
        response_weighting=cfg.loss.response_weighting,
        compile=cfg.compile,
    )


def _validation_policy_value(cfg: TrainingConfig, bundle: Any, prep: Prepared) -> dict[str, float]:
    """``val/policy_value_<estimator>``: the served policy's off-policy estimates on the validation weeks (point values)."""
    from training import served_ope

    if not len(prep.val):
        return {}
    ctx = served_ope.build_context(bundle, prep, prep.val, propensity=cfg.ope.propensity, seed=cfg.seed, contentless=bundle.contentless)
    masks = served_ope.served_masks(bundle, prep.val, prep.item_products, prep.hcp_products)
    rows = served_ope.served_rows(bundle, prep.val, ctx, epsilon=cfg.ope.epsilon, top_m=cfg.ope.top_m, batch_size=cfg.batch_size, masks=masks)
    est, _ = served_ope.estimates(rows, cfg.ope.model_copy(update={"n_boot": 50}), cfg.seed)  # point values only: few resamples
    return {f"val/policy_value_{name}": e.value for name, e in est.items()}


def register_bundle(cfg: TrainingConfig, run_id: str, bundle_dir: Path, prep: Prepared) -> str:
    """Log a saved bundle as the pyfunc of its (finished) training run and register it as challenger; return the version."""
    import mlflow

    from training import tracking
    from training.artifacts import load_bundle
    from training.dataset import weeks_window

    tracking.setup(cfg.tracking)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        model_uri = _log_pyfunc(load_bundle(bundle_dir), bundle_dir, prep)
    return tracking.register(
        model_uri,
        cfg.tracking.registered_model,
        tracking.CHALLENGER,
        tags={"data_fingerprint": prep.fingerprint, "run_id": run_id, tracking.SELECTION_WINDOW_TAG: weeks_window(prep.val)},
    )


def _calibrate(model: Any, prep: Prepared, batch_size: int, device: Any, *, contentless: Any = None, clip: float = 20.0) -> tuple[Any, dict[str, float]]:
    """Calibration of the response head on the validation weeks: isotonic on logged rows, then corrected for
    selection on the model's own choices (training.calibration.chosen_action_calibration); figures
    cross-fitted by HCP, plot logged."""
    import mlflow
    import pandas as pd

    from training.calibration import chosen_action_calibration, fit_and_check
    from training.policy import chosen_at_logged_slot, logged_pair_mask
    from training.suitability import own_product_items
    from training.train import predict

    if not len(prep.val):
        return None, {}
    raw = predict(model, prep.val, batch_size, device)["response_prob"]
    labels = prep.val.arrays["label_response"]
    calibrator, figures = fit_and_check(raw, labels, prep.val.hcp_id)
    _calibration_plot(mlflow, {"raw": (raw, labels), "calibrated": (calibrator(raw), labels)}, "plots/calibration_response_head.png")
    pairs = logged_pair_mask(prep.train, model.config.n_channels, model.config.n_content)
    row_items = None
    if prep.item_products is not None and prep.hcp_products is not None:
        # Chosen as serving chooses: among the HCP's own product's items (serving.scoring).
        own = prep.hcp_products.reindex(pd.Index(prep.val.hcp_id, dtype=object)).fillna("").to_numpy(dtype=object)
        row_items = own_product_items(prep.item_products, own, pairs.any(0).numpy())
    chosen = chosen_at_logged_slot(model, prep.val, batch_size, device, pair_mask=pairs, contentless=contentless, row_items=row_items)
    a = prep.val.arrays
    # Matched on the channel: the logged touch on the channel the model would choose. Exact
    # (channel, content) matches are too rare to calibrate on (0.1 % of rows at 2,000 HCPs); on
    # channel matches the outcome is that of the reps' content and slot on it, so the model's
    # claimed gain from its own content and slot choice is believed only as far as it shows there.
    matched = chosen["channel"] == a["label_channel"]
    calibrator, chosen_figures = chosen_action_calibration(calibrator, chosen["raw_prob"], matched, labels, a["propensity"], prep.val.hcp_id, clip=clip)
    return calibrator, {**figures, **chosen_figures}


def _calibration_plot(mlflow: Any, curves: dict[str, tuple[np.ndarray, np.ndarray]], name: str) -> None:
    """Reliability diagram of each (probabilities, labels) pair, logged as an MLflow figure."""
    from training.evaluation_plots import calibration_plot, log_figure

    log_figure(mlflow, calibration_plot(curves), name)


def _log_pyfunc(bundle: Any, bundle_dir: Path, prep: Prepared) -> str:
    import mlflow
    from mlflow.models import infer_signature

    from training.pyfunc import PIP_REQUIREMENTS, recommend_frame

    example = _input_example(prep)
    output = recommend_frame(bundle, example)
    signature = infer_signature(example, output, params={"approved_content": list(bundle.vocab.ids[:1]) or ["none"]})
    info = mlflow.pyfunc.log_model(
        name="model",
        # Models from code: MLflow runs training/pyfunc_model.py at load time rather than unpickling an object.
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={"bundle": str(bundle_dir)},
        signature=signature,
        input_example=example,
        pip_requirements=PIP_REQUIREMENTS,
    )
    return info.model_uri


def write_json_line(figures: dict[str, Any]) -> str:
    """The one-line JSON of figures every command ends with (NaN becomes null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, (np.floating, np.integer)):
            return clean(v.item())
        return v

    return json.dumps({k: clean(v) for k, v in figures.items()}, sort_keys=True)

"""Writing and reading ``DATA_DIR/_ground_truth``: hidden parameters, world knobs, final state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.schema import CHANNELS, GROUND_TRUTH_DIR
from simulator.config import SimulatorConfig
from simulator.oracle import WorldState
from simulator.world import HiddenTruth, PublicWorld

WORLD_JSON = "world.json"
HCP_PARAMS = "hcp_params.parquet"
CONTENT_PARAMS = "content_params.parquet"
FINAL_STATE = "final_state.parquet"
FINAL_EXPOSURE = "final_exposure.parquet"
TOUCH_TRUTH = "touch_truth.parquet"
GROUND_TRUTH_VERSION = 1


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def write_ground_truth(
    directory: Path,
    cfg: SimulatorConfig,
    public: PublicWorld,
    hidden: HiddenTruth,
    final: WorldState,
    event_ids: pa.Array,
    p_response: np.ndarray,
    summary: dict,
) -> Path:
    """Write the hidden side of a simulated dataset into ``directory/_ground_truth``."""
    gt = Path(directory) / GROUND_TRUTH_DIR
    gt.mkdir(parents=True, exist_ok=True)
    world = {
        "ground_truth_version": GROUND_TRUTH_VERSION,
        "config": cfg.model_dump(mode="json"),
        "weeks": cfg.weeks,
        "positive_response": "touchpoints.opened (opened / engaged / attended), outbound touches only",
        "files": {
            HCP_PARAMS: "hidden per-HCP parameters, rows in hcps-table order",
            CONTENT_PARAMS: "hidden content quality (logit), rows in content-table order",
            FINAL_STATE: "adoption, per-channel contact load, last delivered day per channel (7 * week + weekday) and warm-up opens after the last simulated week",
            FINAL_EXPOSURE: "decayed deliveries of each item per HCP after the last week, nonzero rows only (worlds with repetition decay)",
            TOUCH_TRUTH: "oracle P(positive response) of every logged touch (NaN for inbound)",
        },
        "summary": summary,
        "oracle_tables": _oracle_tables(),
    }
    (gt / WORLD_JSON).write_text(json.dumps(world, indent=2, sort_keys=True) + "\n")
    cols = {"hcp_id": pa.array(public.hcp_ids), **{k: pa.array(v) for k, v in hidden.to_columns().items()}}
    _write(pa.table(cols), gt / HCP_PARAMS)
    _write(pa.table({"content_id": pa.array(public.content_ids), "quality": pa.array(hidden.content_quality)}), gt / CONTENT_PARAMS)
    state = {"hcp_id": pa.array(public.hcp_ids), "adoption": pa.array(final.adoption)}
    state.update({f"fatigue__{c}": pa.array(final.fatigue[:, i]) for i, c in enumerate(CHANNELS)})
    state.update({f"last_day__{c}": pa.array(final.last_day[:, i]) for i, c in enumerate(CHANNELS)})
    state["warm"] = pa.array(final.warm)
    _write(pa.table(state), gt / FINAL_STATE)
    if final.exposure is not None:
        h, k = np.nonzero(final.exposure)
        _write(
            pa.table(
                {
                    "hcp_id": pa.array(public.hcp_ids).take(pa.array(h)),
                    "content_id": pa.array(public.content_ids).take(pa.array(k)),
                    "exposure": pa.array(final.exposure[h, k]),
                }
            ),
            gt / FINAL_EXPOSURE,
        )
    _write(pa.table({"event_id": event_ids, "p_response": pa.array(p_response, mask=np.isnan(p_response))}), gt / TOUCH_TRUTH)
    return gt


def _oracle_tables() -> dict:
    """The fixed tables of the response model, for readers who want the whole world in one file."""
    from contract.schema import LIFECYCLES, TOPICS
    from simulator.oracle import LIFECYCLE_LIFT, LIFECYCLE_LOGIT, STAGE_TOPIC_FIT

    return {
        "channels": list(CHANNELS),
        "topics": list(TOPICS),
        "lifecycles": list(LIFECYCLES),
        "lifecycle_logit": LIFECYCLE_LOGIT.round(6).tolist(),
        "lifecycle_lift": LIFECYCLE_LIFT.round(6).tolist(),
        "stage_topic_fit": STAGE_TOPIC_FIT.round(6).tolist(),
    }


def read_ground_truth(data_dir: str | Path) -> tuple[SimulatorConfig, HiddenTruth, WorldState]:
    """The config, hidden parameters and final state of a simulated dataset."""
    gt = Path(data_dir) / GROUND_TRUTH_DIR
    path = gt / WORLD_JSON
    if not path.exists():
        raise FileNotFoundError(f"{path}: no simulator ground truth here (imported CRM data has none); run `nba simulate` first")
    world = json.loads(path.read_text())
    if world.get("ground_truth_version") != GROUND_TRUTH_VERSION:
        raise ValueError(f"{path}: ground_truth_version {world.get('ground_truth_version')!r}, this code reads {GROUND_TRUTH_VERSION}")
    cfg = SimulatorConfig.model_validate(world["config"])
    params = pq.read_table(gt / HCP_PARAMS)
    cols = {name: params[name].to_numpy() for name in params.column_names if name != "hcp_id"}
    quality = pq.read_table(gt / CONTENT_PARAMS)["quality"].to_numpy()
    hidden = HiddenTruth.from_columns(cols, quality)
    st = pq.read_table(gt / FINAL_STATE)
    names = set(st.column_names)
    # Datasets written before the touch memory existed lack its columns: it starts empty.
    last_day = np.stack([st[f"last_day__{c}"].to_numpy() for c in CHANNELS], axis=1).astype(np.int32) if f"last_day__{CHANNELS[0]}" in names else None
    warm = st["warm"].to_numpy().astype(np.float64) if "warm" in names else None
    adoption = st["adoption"].to_numpy().copy()
    exposure = None
    if (gt / FINAL_EXPOSURE).exists():
        from contract.io import read_table

        content_ids = read_table(data_dir, "content", columns=["content_id"])["content_id"].to_pylist()
        exposure = _exposure_matrix(pq.read_table(gt / FINAL_EXPOSURE), st["hcp_id"].to_pylist(), content_ids)
    final = WorldState(adoption, np.stack([st[f"fatigue__{c}"].to_numpy() for c in CHANNELS], axis=1), last_day, warm, exposure)
    return cfg, hidden, final


def _exposure_matrix(table: pa.Table, hcp_ids: list[str], content_ids: list[str]) -> np.ndarray:
    """The (n, K) float32 exposure matrix from its nonzero rows (hcp_id, content_id, exposure)."""
    import pyarrow.compute as pc

    out = np.zeros((len(hcp_ids), len(content_ids)), dtype=np.float32)
    idx = {}
    for col, vocab in (("hcp_id", hcp_ids), ("content_id", content_ids)):
        i = pc.index_in(table[col], value_set=pa.array(vocab, type=pa.string()))
        if i.null_count:
            raise ValueError(f"ground truth {FINAL_EXPOSURE}: {col} not in the dataset's tables")
        idx[col] = i.to_numpy(zero_copy_only=False).astype(np.int64)
    out[idx["hcp_id"], idx["content_id"]] = table["exposure"].to_numpy()
    return out


def read_touch_truth(data_dir: str | Path) -> pa.Table:
    """event_id -> oracle P(positive response) for the logged touches."""
    return pq.read_table(Path(data_dir) / GROUND_TRUTH_DIR / TOUCH_TRUTH)

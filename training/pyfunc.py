"""The MLflow pyfunc wrapper: training-set-shaped rows in, one suggested action per row out.

The network itself travels as a config + state-dict bundle (``training.artifacts``), loaded
with ``weights_only=True``; this wrapper holds no weights of its own.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from contract.schema import CHANNELS

PIP_REQUIREMENTS = ["torch==2.13.0", "mlflow==3.17.2", "pandas==2.3.3", "numpy==2.4.6", "pyarrow==25.0.1"]
OUTPUT_COLUMNS = ("hcp_id", "channel", "content_id", "day_offset", "daypart", "expected_response")


def recommend_frame(bundle: Any, frame: pd.DataFrame, approved_content: list[str] | None = None, batch_size: int = 1024) -> pd.DataFrame:
    """Best action for each row of a features frame; consent_<channel> columns, when present, are guardrails.

    ``expected_response`` is calibrated by the bundle's calibrator (training.calibration); channels
    the bundle marks contentless get no content.
    """
    import torch

    from training.dataset import encode_frame
    from training.policy import recommend, working_hours_slots
    from training.suitability import bundle_item_mask

    data = encode_frame(frame, bundle.vocab, bundle.scaler, bundle.model.config.max_seq_len, with_labels=False)
    consent_cols = [f"consent_{c}" for c in CHANNELS]
    consent = frame[consent_cols].fillna(False).to_numpy(bool) if set(consent_cols) <= set(frame.columns) else None
    mask = torch.from_numpy(bundle.vocab.mask(approved_content)) if approved_content is not None else None
    mask = bundle_item_mask(bundle, mask)  # each channel only the items it carried in the logs, as serving
    device = next(bundle.model.parameters()).device
    parts = []
    for i, batch in enumerate(data.batches(batch_size, device)):
        allowed = None if consent is None else torch.from_numpy(consent[i * batch_size : i * batch_size + len(batch["length"])])
        parts.append(
            {
                k: v.cpu().numpy()
                for k, v in recommend(
                    bundle.model,
                    batch,
                    channel_allowed=allowed,
                    content_mask=mask,
                    slot_allowed=torch.from_numpy(working_hours_slots()),
                    contentless=torch.from_numpy(bundle.contentless),
                    calibrator=bundle.calibrator,
                ).items()
            }
        )
    rec = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in ("channel", "content", "slot", "expected_response", "any_allowed")}
    return pd.DataFrame(
        {
            "hcp_id": frame["hcp_id"].astype(str).to_numpy(),
            "channel": np.where(rec["any_allowed"], np.asarray(CHANNELS, dtype=object)[rec["channel"].astype(int)], None),
            "content_id": bundle.vocab.decode(rec["content"]),
            "day_offset": (rec["slot"] // 4).astype(np.int64),
            "daypart": (rec["slot"] % 4).astype(np.int64),
            "expected_response": rec["expected_response"].astype(np.float64),
        }
    )


class NextBestActionPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the bundle artifact; ``predict`` returns OUTPUT_COLUMNS per input row."""

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the bundle (weights_only loading)."""
        from training.artifacts import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Suggested action per row; ``params['approved_content']`` limits content to that list."""
        approved = (params or {}).get("approved_content")
        return recommend_frame(self.bundle, model_input, list(approved) if approved else None)

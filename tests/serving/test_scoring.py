"""Channel scoring with the champion: serving serves the decision rule training evaluates, calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from contract.schema import CHANNELS
from serving.sandbox import AS_OF

pytestmark = pytest.mark.slow


def test_serving_scores_follow_the_training_decision_rule(serving_cfg, world) -> None:
    import torch

    from features import get_online_features
    from serving.engine import Recommender
    from serving.scoring import score_channels
    from training.dataset import encode_frame
    from training.policy import recommend, working_hours_slots

    rec = Recommender.from_config(serving_cfg)
    bundle = rec.model.bundle
    # Trained on the simulator's logs, where calls never name an item: only phone is contentless.
    assert [c for c, m in zip(CHANNELS, bundle.contentless) if m] == ["phone"]
    frame = get_online_features(rec.store, world.hcp_ids[:40])
    approved = rec.reference.approved_content(AS_OF, serving_cfg.content_valid_days)
    got = score_channels(bundle, frame, approved, batch_size=16)  # several batches
    assert got.prob.shape == got.expected.shape == (40, 8) and got.allowed.all()

    data = encode_frame(frame, bundle.vocab, bundle.scaler, bundle.model.config.max_seq_len, with_labels=False)
    batch = next(iter(data.batches(len(frame))))
    from training.suitability import bundle_item_mask

    # Each channel only the items of types it carried in the logs (training.suitability), as serving.
    mask = bundle_item_mask(bundle, torch.from_numpy(bundle.vocab.mask(approved)))
    assert mask.dim() == 3 and not mask.all(), "the simulator's catalogue does not suit every type to every channel"
    # Evaluation's rule: visits and calls only in working-hour slots.
    ref = recommend(
        bundle.model,
        batch,
        content_mask=mask,
        slot_allowed=torch.from_numpy(working_hours_slots()),
        contentless=torch.from_numpy(bundle.contentless),
        calibrator=bundle.calibrator,
    )
    best = got.prob.argmax(1)
    rows = np.arange(40)
    # The greedy channel, its content and slot, and its calibrated expected response are training's.
    assert (best == ref["channel"].numpy()).mean() > 0.95
    same = best == ref["channel"].numpy()
    assert (got.content_id[rows, best][same] == bundle.vocab.decode(ref["content"].numpy())[same]).all()
    assert ((got.weekday * 4 + got.daypart)[rows, best][same] == ref["slot"].numpy()[same]).all()
    assert np.allclose(got.expected[rows, best][same], ref["expected_response"].numpy()[same], atol=1e-5)
    # Only approved content; phone carries none.
    assert set(got.content_id.ravel()) - {None} <= set(approved)
    assert all(c is None for c in got.content_id[:, bundle.contentless].ravel())
    # One HCP alone scores as it does inside a batch.
    one = score_channels(bundle, frame.iloc[[7]].reset_index(drop=True), approved)
    assert np.allclose(one.prob[0], got.prob[7], atol=1e-5)
    rec.audit.close()


def test_an_hcp_is_offered_its_own_products_items_only(serving_cfg, world) -> None:
    from features import get_online_features
    from serving.engine import Recommender

    rec = Recommender.from_config(serving_cfg)
    ids = world.hcp_ids[:60]
    result = rec.recommend(ids, k=3, as_of=AS_OF, record=False, explore=False, features=get_online_features(rec.store, ids))
    f = result.frame
    served = f[(f["policy"] == "model") & f["content_id"].notna()]
    assert len(served) > 20
    product_of = rec.reference.content["product_id"].astype(str)
    main = rec.reference.hcps["main_product_id"].astype(str)
    assert (served["content_id"].map(product_of).to_numpy() == served["hcp_id"].map(main).to_numpy()).all()

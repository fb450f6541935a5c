"""Which items each channel may carry, read from the customer's logs: not every content type suits every channel.

A meeting invitation goes out by WeChat, email or a webinar invite, not in a call; a long video is
not shown in a department meeting. The CRM does not say so, the logs do: a channel may carry an
item whose content type the channel's logged touches carried (at least ``min_share`` of its
content-carrying touches), or the item itself as logged on it. Untagged items (no catalogue) may
go on any channel that carries content. The mask travels in the bundle (``meta["channel_items"]``:
channel -> item ids), so serving proposes on each channel only items it could really send.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contract.schema import CHANNELS

MIN_TYPE_SHARE = 0.01


def channel_item_mask(
    label_channel: np.ndarray, label_content: np.ndarray, type_codes: np.ndarray | None, n_content: int, min_share: float = MIN_TYPE_SHARE
) -> np.ndarray:
    """[C, V] True where channel c may carry vocabulary item v (see module docstring).

    ``label_content`` holds encoded ids (training.dataset: PAD 0, NONE 1, items from 2);
    ``type_codes`` [V] is each item's content-type code (0 untagged), or None without a catalogue.
    """
    from training.dataset import NONE

    ch = np.asarray(label_channel, dtype=np.int64)
    ct = np.asarray(label_content, dtype=np.int64)
    has = ct > NONE
    out = np.zeros((len(CHANNELS), n_content), dtype=bool)
    out[ch[has], ct[has]] = True  # every logged pair
    if type_codes is None:
        return out
    types = np.asarray(type_codes, dtype=np.int64)
    n_types = int(types.max()) + 1 if len(types) else 1
    counts = np.zeros((len(CHANNELS), n_types))
    np.add.at(counts, (ch[has], types[ct[has]]), 1.0)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    ok_type = share >= min_share  # [C, T]
    carries = counts.sum(1) > 0  # channels that carried any content
    out |= ok_type[:, types] & (types > 0)[None, :]
    out |= carries[:, None] & (types == 0)[None, :]
    out[:, : NONE + 1] = False
    return out


def to_meta(mask: np.ndarray, vocab_ids: tuple[str, ...]) -> dict[str, list[str]]:
    """The mask as ``{channel: [item ids]}`` for the bundle's metadata."""
    ids = np.asarray(("", "", *vocab_ids), dtype=object)
    return {c: ids[np.flatnonzero(mask[i])].tolist() for i, c in enumerate(CHANNELS)}


def from_meta(meta: dict[str, Any], vocab: Any) -> np.ndarray | None:
    """[C, V] mask from a bundle's ``meta["channel_items"]``; None when the bundle has none (any item on any channel)."""
    stored = meta.get("channel_items")
    if stored is None:
        return None
    out = np.zeros((len(CHANNELS), len(vocab)), dtype=bool)
    for i, c in enumerate(CHANNELS):
        idx = vocab.encode(np.asarray(stored.get(c, []), dtype=object))
        out[i, idx[idx > 1]] = True
    return out


def own_product_items(item_product: np.ndarray, row_product: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray | None:
    """[N, V] True where row i's HCP may be offered item v: items of its own product (and items of no known product).

    ``item_product`` [V] ("" unknown), ``row_product`` [N] ("" unknown); ``allowed`` [V] narrows what
    counts as available. A row whose product is unknown, or with no available item (of its own
    product or of none), may take any item.
    None when no row's product is known (nothing restricts). Serving and training's calibration on
    chosen actions both offer items this way.
    """
    row_product = np.asarray(row_product, dtype=object)
    known = row_product != ""
    if not known.any():
        return None
    same = (item_product[None, :] == row_product[:, None]) | (item_product[None, :] == "")
    available = same if allowed is None else same & np.asarray(allowed, dtype=bool)[None, :]
    same[~(known & available.any(1))] = True
    return same


def bundle_item_mask(bundle: Any, base: Any = None) -> Any:
    """``base`` ([V] bool tensor, e.g. approved items; None: all) narrowed to each channel's items: [1, C, V], or ``base`` when the bundle has no mask.

    The mask is built once per bundle and cached on it; serving and the pyfunc both call this, so
    they propose the same items on each channel.
    """
    import torch

    cache = bundle.__dict__.setdefault("_channel_items", {})
    if "mask" not in cache:
        m = from_meta(bundle.meta, bundle.vocab)
        cache["mask"] = None if m is None else torch.from_numpy(m).unsqueeze(0)
    if cache["mask"] is None:
        return base
    return cache["mask"] if base is None else base.view(1, 1, -1) & cache["mask"]


__all__ = ["MIN_TYPE_SHARE", "bundle_item_mask", "channel_item_mask", "from_meta", "own_product_items", "to_meta"]

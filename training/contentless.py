"""Which channels carry content: read from the customer's logged touches (or the config), never assumed.

A touch on a *contentless* channel names no content item (in most CRMs a phone call is a
conversation), so policies suggest NONE there instead of an item. CRMs differ: some log an
e-detail on every call. Training decides the mask from its training weeks (``auto``: a channel is
contentless when fewer than ``MIN_CONTENT_SHARE`` of its logged outbound touches carry a content
id) or takes ``contentless_channels`` from its config, and stores it in the model bundle; every
policy that scores with the bundle reads it from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from contract.schema import CHANNELS

# What a bundle without a stored mask (written before it was stored) and a channel never logged assume.
DEFAULT_CONTENTLESS: tuple[str, ...] = ("phone",)
# Below this share of logged touches with a content id, content on the channel is noise, not practice.
MIN_CONTENT_SHARE = 0.05


def contentless_mask(names: Iterable[str], channels: Sequence[str] = CHANNELS) -> np.ndarray:
    """[C] True for the named channels; an unknown name is an error naming it."""
    names = list(names)
    unknown = sorted(set(names) - set(channels))
    if unknown:
        raise ValueError(f"contentless_channels: unknown channel(s) {unknown}; known: {', '.join(channels)}")
    return np.array([c in names for c in channels], dtype=bool)


def contentless_names(mask: np.ndarray, channels: Sequence[str] = CHANNELS) -> list[str]:
    """The channel names where ``mask`` [C] is True."""
    return [c for c, m in zip(channels, np.asarray(mask, dtype=bool)) if m]


def contentless_from_touchpoints(
    channel: np.ndarray, has_content: np.ndarray, *, min_share: float = MIN_CONTENT_SHARE, default: Iterable[str] = DEFAULT_CONTENTLESS
) -> np.ndarray:
    """[C] True where fewer than ``min_share`` of the channel's logged outbound touches carry content.

    ``channel`` [n] is each touch's index into ``contract.schema.CHANNELS``, ``has_content`` [n]
    whether it names a content item. A channel with no logged touch keeps ``default``'s answer.
    """
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], got {min_share}")
    n_channels = len(CHANNELS)
    ch = np.asarray(channel, dtype=np.int64)
    has = np.asarray(has_content, dtype=bool)
    if ch.shape != has.shape:
        raise ValueError(f"channel and has_content must have the same shape, got {ch.shape} and {has.shape}")
    if len(ch) and (ch.min() < 0 or ch.max() >= n_channels):
        raise ValueError(f"channel: indices must be in 0..{n_channels - 1}")
    touches = np.bincount(ch, minlength=n_channels)
    with_content = np.bincount(ch, weights=has.astype(np.float64), minlength=n_channels)
    share = with_content / np.maximum(touches, 1)
    return np.where(touches > 0, share < min_share, contentless_mask(default))


def resolve_contentless(setting: str | Sequence[str], label_channel: np.ndarray, label_content: np.ndarray) -> np.ndarray:
    """The [C] mask a model is trained and served with: from the logged labels (``"auto"``) or the named channels.

    ``label_content`` holds encoded content ids (``training.dataset``: PAD 0, NONE 1, items from 2).
    """
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(f"contentless_channels must be 'auto' or a list of channels, got {setting!r}")
        from training.dataset import NONE

        return contentless_from_touchpoints(label_channel, np.asarray(label_content) > NONE)
    return contentless_mask(setting)


def bundle_contentless(meta: dict[str, Any], where: str = "model bundle") -> np.ndarray:
    """The [C] mask stored in a bundle's ``model.json`` (``{channel: bool}``); older bundles get DEFAULT_CONTENTLESS with a warning."""
    stored = meta.get("contentless_channels")
    if stored is None:
        import logging

        logging.getLogger(__name__).warning("%s: no contentless_channels stored (written before they were); assuming %s", where, list(DEFAULT_CONTENTLESS))
        return contentless_mask(DEFAULT_CONTENTLESS)
    if not isinstance(stored, dict) or set(stored) != set(CHANNELS):
        raise ValueError(f"{where}: contentless_channels must map every channel ({', '.join(CHANNELS)}) to true/false, got {stored!r}")
    return np.array([bool(stored[c]) for c in CHANNELS], dtype=bool)

"""Data augmentation for image batches, on the host, vectorised over the batch.

An augmentation is a function ``augment(X, rng) -> X`` of a NumPy batch ``X`` (N, C, H, W)
and a NumPy ``Generator``; :class:`~portaconv.data.DataLoader` calls it on every training
batch with a generator seeded by ``(seed, epoch)``, so an epoch's augmented batches are
reproducible and a resumed run sees exactly what the first run saw.

Example: ``DataLoader(X, y, batch_size=128, shuffle=True, augment=flip_and_shift)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def random_flip(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability 1/2 (the last axis is the width)."""
    _check_images("random_flip", X)
    flip = rng.random(len(X)) < 0.5
    out = np.array(X, copy=True)
    out[flip] = X[flip, ..., ::-1]
    return out


def random_shift(X: np.ndarray, rng: np.random.Generator, padding: int = 2) -> np.ndarray:
    """Move each image by up to ``padding`` pixels in each direction, independently.

    The image is padded by repeating its border pixels (for standardised data, zero padding
    would draw a frame of a value that is not the background), and an H×W window is cut at a
    random offset in [0, 2 padding] per image and axis: a random crop of the padded image.
    """
    _check_images("random_shift", X)
    N, _, H, W = X.shape
    padded = np.pad(X, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode="edge")
    windows = sliding_window_view(padded, (H, W), axis=(2, 3))  # (N, C, 2p+1, 2p+1, H, W)
    dy = rng.integers(0, 2 * padding + 1, N)
    dx = rng.integers(0, 2 * padding + 1, N)
    return np.ascontiguousarray(windows[np.arange(N), :, dy, dx])


def flip_and_shift(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`random_flip`, then :func:`random_shift` by up to 2 pixels."""
    return random_shift(random_flip(X, rng), rng)


#: The augmentations ``portaconv train --augment`` offers, by name.
AUGMENTATIONS: dict[str, Augment | None] = {
    "none": None,
    "flip": random_flip,
    "shift": random_shift,
    "flip-shift": flip_and_shift,
}


def _check_images(name: str, X: np.ndarray) -> None:
    if X.ndim != 4:
        raise ValueError(
            f"{name}: expects a batch of images (N, C, H, W), got shape {tuple(X.shape)}"
        )

"""The 30-class stream used by default for class-incremental runs: Fashion-MNIST + MNIST-5k + Animal-MNIST.

The three 28×28 grayscale datasets are loaded with :func:`analytic.data.load_dataset` and stacked with class ids
0–9 (Fashion-MNIST), 10–19 (MNIST-5k digits) and 20–29 (Animal-MNIST). Fashion-MNIST has 6,000 training images per
class and the other two 400 and 800, so ``per_class`` caps every class (train and test, drawn with ``seed``) for an
evenly sized stream; ``None`` keeps everything. ``features`` (e.g. a frozen backbone's feature extractor) is applied
to each source's capped split separately, so a feature cache keyed on the images is reused across runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from analytic import data

SOURCES = ("fashion_mnist", "mnist5k", "animal_mnist")


def thirty_class_dataset(*, per_class: int | None = None, test_per_class: int | None = None, seed: int = 0,
                         features: Callable[[np.ndarray], np.ndarray] | None = None) -> data.Dataset:
    """Fashion-MNIST, MNIST-5k and Animal-MNIST as one 30-class :class:`analytic.data.Dataset`.

    Args:
      per_class: at most this many training images per class (``None``: all).
      test_per_class: at most this many test images per class (``None``: all).
      seed: seed of the capping draw.
      features: map from ``(n, 28, 28, 1)`` uint8 images to ``(n, d)`` features; the "images" of the result are then
        feature rows. ``None`` keeps the images.
    """
    rng = np.random.default_rng(seed)
    parts = {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    names: list[str] = []
    for offset, source in enumerate(SOURCES):
        dataset = data.load_dataset(source)
        for split, cap in (("train", per_class), ("test", test_per_class)):
            images, labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
            keep = _capped(labels, cap, rng)
            images = np.asarray(images[keep], np.uint8).reshape(-1, 28, 28, 1)
            parts[f"{split}_images"].append(images if features is None else features(images))
            parts[f"{split}_labels"].append(labels[keep].astype(np.int64) + 10 * offset)
        names += [f"{source}:{name}" for name in dataset.class_names]
    stacked = {key: np.concatenate(value) for key, value in parts.items()}
    return data.Dataset(name="fashion+mnist5k+animal", class_names=tuple(names), **stacked)


def _capped(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None:
        return np.arange(labels.size)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:cap] for c in np.unique(labels)]))

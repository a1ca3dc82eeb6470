"""Demo section: one exact forgetting request on frozen features, and its receipt checked against retraining.

The head is learned in bit-exact fixed-point statistics with per-class Grams, so a whole class can be forgotten
from the statistics alone (no data needed), and the receipt's after-hash can be compared with the hash of a state
retrained from scratch on the retained data: equal hashes certify the forgetting.
"""

from __future__ import annotations

import time

import numpy as np

import analytic
import unlearning

BATCH = 8192


def _batches(features, labels):
    return ((features[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, len(labels), BATCH))


def demo_section(data, *, ridge: float = 1.0, class_id: int | None = None) -> dict:
    """Learn ``data``'s training features, forget one class (default: the last), print the receipt and check it.

    Args:
      data: anything with ``train_features``, ``train_labels``, ``test_features``, ``test_labels`` and
        ``class_names`` (e.g. :class:`benchmarks.common.FrozenFeatures`).
      ridge: γ of the head.
      class_id: the class to forget; ``None`` takes the largest class id.

    Returns:
      ``{"class", "class_name", "seconds", "test_accuracy_before", "test_accuracy_after", "predicted_forgotten",
      "certified", "receipt"}`` (accuracies in percent on the test set without the forgotten class).
    """
    x, y = data.train_features, data.train_labels
    forgotten_class = int(np.max(y)) if class_id is None else int(class_id)
    head = unlearning.init_unlearning_head(x.shape[1], ridge, precision="fixed", per_class=True)
    for features, labels in _batches(x, y):
        head = unlearning.learn(head, features, labels)
    head = unlearning.factorize(head)

    start = time.perf_counter()
    forgotten, receipt = unlearning.forget_class(head, forgotten_class)  # from the statistics: no data needed
    after = unlearning.solve(forgotten)
    seconds = time.perf_counter() - start

    keep = y != forgotten_class
    retrained = analytic.fit(analytic.init_statistics(x.shape[1], precision="fixed"),
                             _batches(x[keep], y[keep]))
    certified = unlearning.certifies(receipt, retrained)

    test_keep = data.test_labels != forgotten_class
    test_x, test_y = data.test_features[test_keep], data.test_labels[test_keep]
    before_accuracy = 100 * np.mean(analytic.predict_labels(unlearning.solve(head), test_x) == test_y)
    predicted = analytic.predict_labels(after, data.test_features)
    after_accuracy = 100 * np.mean(predicted[test_keep] == test_y)
    name = data.class_names[forgotten_class] if forgotten_class < len(data.class_names) else str(forgotten_class)

    print(f"\nExact unlearning: forget class {forgotten_class} ({name}, {receipt.removed_count:,} training samples) "
          f"from the stored statistics, without its data — {seconds:.3f} s")
    print(f"  outputs: {head.statistics.n_outputs} -> {forgotten.statistics.n_outputs} classes; "
          f"test predictions of the forgotten class after: {int(np.sum(predicted == forgotten_class))}")
    print(f"  test accuracy on the other classes: {before_accuracy:.2f}% before, {after_accuracy:.2f}% after")
    print(f"  receipt:\n{receipt.to_json()}")
    print(f"  retrained from scratch on the retained data: state hash {'EQUALS' if certified else 'DIFFERS FROM'} "
          "the receipt's after-hash" + (" (certified)" if certified else ""))
    return {"class": forgotten_class, "class_name": name, "seconds": seconds,
            "test_accuracy_before": float(before_accuracy), "test_accuracy_after": float(after_accuracy),
            "predicted_forgotten": int(np.sum(predicted == forgotten_class)), "certified": certified,
            "receipt": receipt}

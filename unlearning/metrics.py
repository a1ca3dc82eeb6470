r"""The unlearning metrics of the field (the field's evaluation conventions), and output-level agreement with the retrained model.

Classification metrics, all in percent:

* UA (unlearning accuracy) = 100 − accuracy on the forget set; RA = accuracy on the retained training set;
  TA = accuracy on the test set (the forgotten classes removed for class-wise forgetting).
* MIA-efficacy: an SVC(C=3, gamma='auto', kernel='rbf') is fitted on one feature per sample, the true-class softmax
  confidence, with members = retained training samples (as many as the non-members) and non-members = test
  samples; the score is the share of forget samples it calls non-members.
* Avg. Gap = mean over {UA, MIA, RA, TA} of :math:`|m - m_{\text{retrain}}|`.
* Beside TA, on the same test set: top-k accuracy, macro F1 and balanced accuracy (:func:`top_k_accuracy`,
  :func:`f1_macro`, :func:`balanced_accuracy`, from :mod:`analytic.metrics`, which the continual reports share).

Output-level agreement with the retrained model: relative Frobenius weight error
:math:`\|W - W_r\|_F / \|W_r\|_F`, max |logit difference|, argmax agreement and mean
:math:`\mathrm{KL}(p_r \,\|\, p)` of the softmax outputs on the test set.
"""

from __future__ import annotations

import numpy as np

from analytic.metrics import balanced_accuracy, f1_macro, top_k_accuracy

__all__ = ["GAP_METRICS", "accuracy", "argmax_agreement", "avg_gap", "balanced_accuracy", "f1_macro",
           "max_logit_difference", "mean_kl", "mia_efficacy", "relative_weight_error", "softmax",
           "top_k_accuracy", "true_class_confidence"]

GAP_METRICS = ("UA", "MIA", "RA", "TA")


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``predicted == labels``, in percent."""
    return 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def true_class_confidence(logits: np.ndarray, labels: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Softmax probability of each sample's true class; 0 for a class the model has no output for."""
    probabilities = softmax(logits)
    position = np.searchsorted(class_ids, labels)
    position = np.minimum(position, class_ids.size - 1)
    present = class_ids[position] == labels
    return np.where(present, probabilities[np.arange(len(labels)), position], 0.0)


def mia_efficacy(retain_confidence, test_confidence, forget_confidence, *, max_samples: int | None = None,
                 seed: int = 0) -> float:
    """Share (percent) of forget samples an SVC on true-class confidence calls non-members (the field's evaluation conventions).

    Members are retained samples, as many as the non-members (test samples); ``max_samples`` caps both sides (a
    seeded subset) to bound the SVC's quadratic fitting time.
    """
    from sklearn.svm import SVC

    rng = np.random.default_rng(seed)
    test_confidence = np.asarray(test_confidence)
    if max_samples is not None and test_confidence.size > max_samples:
        test_confidence = rng.choice(test_confidence, max_samples, replace=False)
    members = rng.choice(np.asarray(retain_confidence), min(test_confidence.size, len(retain_confidence)),
                         replace=False)
    inputs = np.concatenate([members, test_confidence])[:, None]
    targets = np.concatenate([np.ones(members.size), np.zeros(test_confidence.size)])
    attack = SVC(C=3, gamma="auto", kernel="rbf").fit(inputs, targets)
    return 100.0 * float(np.mean(attack.predict(np.asarray(forget_confidence)[:, None]) == 0))


def avg_gap(metrics: dict, reference: dict) -> float:
    """Mean over UA, MIA, RA, TA of the absolute difference to the retrained model's value."""
    return float(np.mean([abs(metrics[name] - reference[name]) for name in GAP_METRICS]))


def relative_weight_error(weights: np.ndarray, reference: np.ndarray) -> float:
    """:math:`\\|W - W_r\\|_F / \\|W_r\\|_F` (NaN when the shapes differ)."""
    if np.shape(weights) != np.shape(reference):
        return float("nan")
    reference = np.asarray(reference, np.float64)
    return float(np.linalg.norm(np.asarray(weights, np.float64) - reference) / np.linalg.norm(reference))


def max_logit_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference between two models' outputs (NaN when the shapes differ)."""
    if np.shape(logits) != np.shape(reference):
        return float("nan")
    return float(np.max(np.abs(np.asarray(logits, np.float64) - reference)))


def argmax_agreement(predicted: np.ndarray, reference: np.ndarray) -> float:
    """Share (percent) of samples on which two models predict the same class."""
    return accuracy(predicted, reference)


def mean_kl(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean :math:`\\mathrm{KL}(p_r \\| p)` between the softmax outputs (NaN when the shapes differ)."""
    if np.shape(logits) != np.shape(reference):
        return float("nan")
    p_ref, p = softmax(reference), softmax(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p_ref > 0, p_ref * (np.log(p_ref) - np.log(np.maximum(p, 1e-300))), 0.0)
    return max(float(np.mean(terms.sum(axis=1))), 0.0)  # KL ≥ 0; clip rounding below zero

r"""Choosing the ridge from the statistics: every candidate priced by one symmetric eigendecomposition.

With :math:`G = V \operatorname{diag}(\lambda) V^\top` (one ``eigh``, :math:`d^3` work) and :math:`P = V^\top B`
formed once, every ridge is cheap (REFERENCE.md §8, "Automatic ridge from one eigendecomposition"):

.. math::
    W(\gamma) = V \operatorname{diag}\Big(\frac{1}{\lambda + \gamma}\Big) P .

Two criteria, both without refitting:

- generalized cross-validation (Golub, Heath & Wahba 1979), from the statistics alone,

  .. math::
      \mathrm{GCV}(\gamma) = \frac{n\,\|Y - XW(\gamma)\|^2}{\big(n - \sum_i \frac{\lambda_i}{\lambda_i + \gamma}\big)^2},
      \qquad \|Y - XW\|^2 = \operatorname{tr}(Y^\top Y) - \sum_i p_i \frac{\lambda_i + 2\gamma}{(\lambda_i + \gamma)^2},
      \quad p_i = \sum_c P_{ic}^2,

  where :math:`\operatorname{tr}(Y^\top Y) = n` for one-hot classification targets (regression states do not keep
  the targets' sum of squares, so they are scored on held-out samples);
- held-out scoring: the statistics of the training part are the total minus the held-out samples' (a subtraction),
  and each candidate's predictions on the held-out features are
  :math:`X_h W(\gamma) = (X_h V) \operatorname{diag}(1/(\lambda + \gamma)) P` (accuracy for classification, mean
  squared error for regression).

The eigendecomposition only ranks the candidates; the head itself is then solved with :func:`analytic.solve` (a
Cholesky factorization) at the chosen ridge.
"""


from typing import NamedTuple

import jax
import numpy as np

from analytic.errors import InputError
from analytic.ridge import cross_matrix, gram_matrix
from analytic.state import Statistics, check_state
from analytic.statistics import accumulate, empty_like, subtract
from analytic.validation import check_features, check_labels, check_targets

GRID_SIZE = 100
GRID_SPAN = (1e-6, 1e2)  # default candidates: this range times the mean eigenvalue tr(G)/d


class RidgeChoice(NamedTuple):
    """The chosen ridge and how every candidate scored.

    Attributes:
      ridge: the chosen γ.
      ridges: (K,) the candidates, ascending.
      scores: (K,) each candidate's score: GCV (lower is better), held-out accuracy in percent or held-out mean
        squared error (lower is better), as ``criterion`` says.
      criterion: ``"gcv"``, ``"held-out accuracy"`` or ``"held-out mse"``.

    Example:
      >>> choice = RidgeChoice(1.0, np.array([0.1, 1.0]), np.array([3.0, 2.0]), "gcv")
      >>> choice.ridge, choice.criterion
      (1.0, 'gcv')
    """

    ridge: float
    ridges: np.ndarray
    scores: np.ndarray
    criterion: str


def select_ridge(stats: Statistics, ridges=None, *, held_out=None) -> RidgeChoice:
    r"""Choose γ among ``ridges`` by GCV from the statistics, or by the score on held-out samples (module docstring).

    Args:
      stats: the statistics of every sample (host or device; the choice is computed on the host in float64).
      ridges: candidate ridges γ > 0; by default 100 values from 1e-6 to 1e2 times the mean eigenvalue
        :math:`\operatorname{tr}(G)/d`, log-spaced.
      held_out: ``None`` for GCV (classification states), or ``(features, targets)`` of samples that ``stats``
        learned: they are subtracted, the candidates are fitted on the rest and scored on them.

    Returns:
      A :class:`RidgeChoice`; solve the head with ``analytic.solve(stats, choice.ridge)``.

    Raises:
      InputError: no samples; bad ridges (non-positive, NaN); GCV asked of a regression state; bad held-out samples.
      IntegrityError: held-out samples that ``stats`` never learned (from the subtraction).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x = rng.normal(size=(300, 8))
      >>> y = (x[:, 0] > 0).astype(int)
      >>> stats = analytic.accumulate(analytic.init_statistics(8), x, y)
      >>> choice = select_ridge(stats, [0.01, 1.0, 100.0, 1e5])
      >>> choice.criterion, choice.ridge < 1e5
      ('gcv', True)
      >>> held = select_ridge(stats, [0.01, 1.0, 100.0, 1e5], held_out=(x[:60], y[:60]))
      >>> held.criterion, bool(held.scores.max() > 90)
      ('held-out accuracy', True)
    """
    check_state(stats)
    stats = jax.device_get(stats)
    if int(stats.count) == 0:
        raise InputError("select_ridge needs statistics of at least one sample")
    if held_out is None:
        if not stats.is_classification:
            raise InputError("GCV needs the targets' sum of squares, which regression statistics do not keep: "
                             "pass held_out=(features, targets)")
        return _by_gcv(stats, ridges)
    return _by_held_out(stats, ridges, held_out)


def _spectrum(stats: Statistics):
    """Eigenvalues (clipped at 0) and eigenvectors of G, and P = VᵀB."""
    values, vectors = np.linalg.eigh(gram_matrix(stats))
    return np.maximum(values, 0.0), vectors, vectors.T @ np.asarray(cross_matrix(stats), np.float64)


def _candidates(ridges, values: np.ndarray) -> np.ndarray:
    if ridges is None:
        scale = max(float(values.mean()), np.finfo(np.float64).tiny)
        return np.geomspace(*GRID_SPAN, GRID_SIZE) * scale
    candidates = np.sort(np.asarray(ridges, np.float64).reshape(-1))
    if candidates.size == 0 or not np.isfinite(candidates).all() or candidates[0] <= 0:
        raise InputError(f"ridges must be finite positive numbers, got {ridges!r}")
    return candidates


def _by_gcv(stats: Statistics, ridges) -> RidgeChoice:
    values, _, projected = _spectrum(stats)
    candidates = _candidates(ridges, values)
    n = float(stats.count)
    weight = (projected**2).sum(axis=1)  # p_i
    shifted = values[None, :] + candidates[:, None]  # (K, d): λ_i + γ
    residual = n - (weight[None, :] * (values[None, :] + 2 * candidates[:, None]) / shifted**2).sum(axis=1)
    freedom = (values[None, :] / shifted).sum(axis=1)
    scores = n * np.maximum(residual, 0.0) / (n - freedom) ** 2
    return RidgeChoice(float(candidates[np.argmin(scores)]), candidates, scores, "gcv")


def _by_held_out(stats: Statistics, ridges, held_out) -> RidgeChoice:
    try:
        features, targets = held_out
    except (TypeError, ValueError) as error:
        raise InputError("held_out must be a (features, targets) pair") from error
    x = check_features(features, stats.dim, finite=True)
    training = subtract(stats, accumulate(empty_like(stats), x, targets))
    if int(training.count) == 0:
        raise InputError("the held-out samples are all the samples: nothing is left to fit the candidates on")
    values, vectors, projected = _spectrum(training)
    candidates = _candidates(ridges, values)
    rotated = x.astype(np.float64) @ vectors  # X_h V
    if training.is_classification:
        labels = check_labels(targets, x.shape[0])
        columns = np.searchsorted(training.class_ids, labels)
        scores = np.concatenate([100.0 * np.mean(np.argmax(block, axis=2) == columns[:, None], axis=0)
                                 for block in _held_out_predictions(rotated, values, projected, candidates)])
        best, criterion = int(np.argmax(scores)), "held-out accuracy"
    else:
        y = check_targets(targets, x.shape[0], training.n_outputs)
        scores = np.concatenate([np.mean((block - y[:, None, :]) ** 2, axis=(0, 2))
                                 for block in _held_out_predictions(rotated, values, projected, candidates)])
        best, criterion = int(np.argmin(scores)), "held-out mse"
    return RidgeChoice(float(candidates[best]), candidates, scores, criterion)


def _held_out_predictions(rotated: np.ndarray, values: np.ndarray, projected: np.ndarray, candidates: np.ndarray,
                          block_elements: int = 1 << 23):
    """Yield (m, k, C) blocks of :math:`X_h W(\\gamma)` for consecutive candidates, each block one matrix product
    of :math:`X_h V` (m, d) with k candidates' :math:`\\operatorname{diag}(1/(\\lambda + \\gamma)) P` side by side
    (d, k·C), at most ``block_elements`` predictions per block."""
    m, outputs = rotated.shape[0], projected.shape[1]
    step = max(1, block_elements // max(1, m * outputs))
    for start in range(0, candidates.size, step):
        chunk = candidates[start : start + step]
        scaled = projected[:, None, :] / (values[:, None, None] + chunk[None, :, None])  # (d, k, C)
        yield (rotated @ scaled.reshape(len(values), -1)).reshape(m, chunk.size, outputs)

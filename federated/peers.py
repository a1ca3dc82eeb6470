r"""Cheap federated peers of AFL on frozen features: FedNCM, FedCOF and Fed3R, one round each.

AFL (:mod:`federated.aggregation`) sends :math:`d(d+1)/2 + dC` numbers per client and gets exactly the centralized
ridge head. Three published peers send less, or send the same on other features:

* **FedNCM** (nearest class mean; Legate et al., 2023): each client sends its class means
  :math:`\mu_{k,c}` and counts :math:`n_{k,c}` (:func:`client_class_means`, :math:`dC + C` numbers); the server
  pools them, :math:`\mu_c = \sum_k n_{k,c}\mu_{k,c} / n_c` (:func:`pooled_class_means`, exactly the centralized
  class means), and classifies by the nearest :math:`\mu_c` (:func:`fedncm_head`).
* **FedCOF** (Goswami et al., NeurIPS 2025): the same upload; the server estimates each class covariance from the
  spread of the client means (:func:`class_covariances`), rebuilds an approximate Gram from them
  (:func:`fedcof_gram`) and solves a ridge with the exact :math:`B` (:func:`fedcof_head`). Approximate.
* **Fed3R** (Fanì et al., ICML 2024): each client sends the ridge statistics :math:`G_k = \Phi_k^\top\Phi_k`,
  :math:`B_k = \Phi_k^\top Y_k` of random features :math:`\Phi_k = \varphi(X_k)` drawn from a shared seed
  (:func:`random_feature_statistics`, with :func:`analytic.init_random_fourier`); the server is AFL's summed form,
  :func:`federated.aggregate_statistics` then :func:`analytic.solve`: :math:`W = (\sum_k G_k + \lambda I)^{-1}
  \sum_k B_k`, exactly the centralized ridge on the same random features, for any split. Its head scores
  ``analytic.expand(layer, features)``.

Every head is an :class:`analytic.Head` on the backbone features (Fed3R's on the random features): predict with
:func:`analytic.predict` / :func:`analytic.predict_labels`. A client with no samples sends nothing: the client
functions refuse it, and the server refuses an upload without samples. Sizes on the wire:
:func:`class_means_nbytes` for FedNCM / FedCOF, :func:`federated.statistics_nbytes` at the random-feature width for
Fed3R.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Iterator

import jax
import numpy as np

import analytic
from analytic.internal import check_declared_class_ids, check_features, check_labels, check_ridge, factorize_matrix


@functools.partial(jax.tree_util.register_dataclass, data_fields=["means", "counts", "class_ids"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class ClassMeans:
    r"""Class means and counts over the agreed classes: a FedNCM / FedCOF client's upload, or the pooled means.

    .. math::
        \mu_{k,c} = \frac{1}{n_{k,c}} \sum_{i \in k,\, y_i = c} x_i, \qquad n_{k,c} = \#\{i \in k : y_i = c\}

    (zero rows for the classes a client does not hold). A registered JAX pytree. Built by
    :func:`client_class_means` (one client) or :func:`pooled_class_means` (all of them).

    Attributes:
      means: (m, d) float64 class means :math:`\mu_{k,c}`, rows in the order of ``class_ids``.
      counts: (m,) int64 sample counts :math:`n_{k,c}`.
      class_ids: (m,) the agreed class ids, sorted (known to every party: not sent).

    Example:
      >>> upload = client_class_means(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), np.array([0, 0, 2]), [0, 1, 2])
      >>> upload.means
      array([[2., 3.],
             [0., 0.],
             [5., 6.]])
      >>> upload.counts, upload.class_ids
      (array([2, 0, 1]), array([0, 1, 2]))
    """

    means: np.ndarray
    counts: np.ndarray
    class_ids: np.ndarray


def _agreed_classes(class_ids) -> np.ndarray:
    ids = check_declared_class_ids(class_ids)
    if ids.size == 0:
        raise analytic.InputError("class_ids must name at least one agreed class")
    return ids


def _client_rows(features, labels, class_ids, dim: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A client's features (finite, at least one row), labels and the agreed class ids; raises
    :class:`analytic.InputError` naming the problem."""
    x = check_features(features, dim, finite=True)
    y = check_labels(labels, x.shape[0])
    ids = _agreed_classes(class_ids)
    unknown = np.setdiff1d(y, ids)
    if unknown.size:
        raise analytic.InputError(f"labels {unknown.tolist()} are not among the agreed class ids {ids.tolist()}")
    return x, y, ids


def client_class_means(features, labels, class_ids) -> ClassMeans:
    r"""FedNCM / FedCOF client: the means and counts of its classes, :math:`dm + m` numbers whatever :math:`n_k`.

    .. math::
        \mu_{k,c} = \frac{1}{n_{k,c}} \sum_{i \in k,\, y_i = c} x_i \quad (0 \text{ where } n_{k,c} = 0)

    (FedNCM, Legate et al. 2023; FedCOF, Goswami et al. NeurIPS 2025: clients send class means and counts only).
    Sums in float64, whatever the features' dtype.

    Args:
      features: (n_k, d) floating array of the client's samples, n_k ≥ 1, finite.
      labels: (n_k,) integer class ids, each among ``class_ids``.
      class_ids: the agreed class ids (unique, non-negative): they fix the rows of the upload.

    Returns:
      The client's :class:`ClassMeans`.

    Raises:
      analytic.InputError: no samples, NaN/Inf, wrong shapes or dtypes, bad ``class_ids``, or a label outside them.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
      >>> upload = client_class_means(x, y, [0, 1])
      >>> np.allclose(upload.means[1], x[y == 1].mean(axis=0)), int(upload.counts.sum())
      (True, 20)
    """
    x, y, ids = _client_rows(features, labels, class_ids)
    one_hot = (y[:, None] == ids[None, :]).astype(np.float64)
    counts = one_hot.sum(axis=0).astype(np.int64)
    sums = one_hot.T @ x.astype(np.float64)
    return ClassMeans(sums / np.maximum(counts, 1)[:, None], counts, ids)


def class_means_nbytes(dim: int, n_classes: int) -> int:
    r"""Bytes of one FedNCM / FedCOF upload at dimension d with m agreed classes (8-byte numbers).

    .. math::
        8\,(d\,m + m)

    (the float64 class means and the int64 counts of :class:`ClassMeans`; the agreed class ids are not sent). It
    does not depend on the number of samples the client holds.

    Args:
      dim: feature dimension d.
      n_classes: number of agreed classes m.

    Returns:
      The upload's size in bytes, ``means.nbytes + counts.nbytes`` of :func:`client_class_means`.

    Example:
      >>> class_means_nbytes(1280, 10)  # against federated.statistics_nbytes(1280, 10) = 6,671,528
      102480
    """
    return 8 * (int(dim) * int(n_classes) + int(n_classes))


def _stacked(uploads: Iterable[ClassMeans]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The uploads' means (K, m, d) and counts (K, m) and their class ids, validated: raises
    :class:`analytic.InputError` for a malformed upload and :class:`analytic.IntegrityError` for disagreeing class
    ids."""
    uploads = list(uploads)
    if not uploads:
        raise analytic.InputError("the server needs at least one upload")
    first = uploads[0]
    if not isinstance(first, ClassMeans):
        raise analytic.InputError(f"upload 0 is a {type(first).__name__}, not ClassMeans")
    ids = np.asarray(first.class_ids)
    dim = np.shape(first.means)[-1] if np.ndim(first.means) == 2 else None
    for k, upload in enumerate(uploads):
        if not isinstance(upload, ClassMeans):
            raise analytic.InputError(f"upload {k} is a {type(upload).__name__}, not ClassMeans")
        if not np.array_equal(np.asarray(upload.class_ids), ids):
            raise analytic.IntegrityError(f"upload {k} has class ids {np.asarray(upload.class_ids).tolist()}, "
                                          f"upload 0 has {ids.tolist()}: the clients must agree on the classes")
        means, counts = np.asarray(upload.means), np.asarray(upload.counts)
        if means.shape != (ids.size, dim) or not np.issubdtype(means.dtype, np.floating):
            raise analytic.InputError(f"upload {k}: means must be a floating ({ids.size}, {dim}) array, "
                                      f"got {means.dtype} of shape {means.shape}")
        if counts.shape != (ids.size,) or not np.issubdtype(counts.dtype, np.integer):
            raise analytic.InputError(f"upload {k}: counts must be an integer ({ids.size},) array, "
                                      f"got {counts.dtype} of shape {counts.shape}")
        if not np.isfinite(means).all():
            raise analytic.InputError(f"upload {k}: means contain NaN or Inf")
        if counts.min() < 0:
            raise analytic.InputError(f"upload {k}: counts must be non-negative, got {int(counts.min())}")
        if counts.sum() == 0:
            raise analytic.InputError(f"upload {k} holds no samples: a client without samples sends nothing")
    means = np.stack([np.asarray(u.means, np.float64) for u in uploads])
    counts = np.stack([np.asarray(u.counts, np.int64) for u in uploads])
    return means, counts, ids


def _pooled(means: np.ndarray, counts: np.ndarray, ids: np.ndarray) -> ClassMeans:
    r""":math:`n_c = \sum_k n_{k,c}`, :math:`\mu_c = \sum_k n_{k,c}\mu_{k,c} / n_c`; every class needs a sample."""
    total = counts.sum(axis=0)
    empty = ids[total == 0]
    if empty.size:
        raise analytic.IntegrityError(f"classes {empty.tolist()} have no samples in any upload: their means are "
                                      "undefined (leave them out of the agreed class ids)")
    sums = np.einsum("km,kmd->md", counts.astype(np.float64), means)
    return ClassMeans(sums / total[:, None], total, ids)


def pooled_class_means(uploads: Iterable[ClassMeans]) -> ClassMeans:
    r"""Server: the class means and counts of the pooled samples, exactly the centralized ones for any split.

    .. math::
        n_c = \sum_k n_{k,c}, \qquad \mu_c = \frac{1}{n_c} \sum_k n_{k,c}\, \mu_{k,c}

    Args:
      uploads: the clients' :func:`client_class_means` uploads (same class ids and dimension), at least one.

    Returns:
      The pooled :class:`ClassMeans`.

    Raises:
      analytic.InputError: no uploads, or a malformed one (wrong shape or dtype, NaN/Inf, negative counts, no
        samples).
      analytic.IntegrityError: the uploads disagree on the class ids, or a class has no samples in any of them.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
      >>> uploads = [client_class_means(x[p], y[p], [0, 1, 2]) for p in federated.iid_partition(30, 3)]
      >>> pooled = pooled_class_means(uploads)
      >>> np.allclose(pooled.means, [x[y == c].mean(axis=0) for c in range(3)]), pooled.counts.sum()
      (True, np.int64(30))
    """
    return _pooled(*_stacked(uploads))


def fedncm_head(uploads: Iterable[ClassMeans]) -> analytic.Head:
    r"""FedNCM: the nearest pooled class mean, as a linear head with a bias.

    .. math::
        \arg\min_c \|x - \mu_c\|^2 = \arg\max_c\; x^\top \mu_c - \tfrac12 \|\mu_c\|^2, \qquad
        W = [\mu_c]_c, \quad b_c = -\tfrac12 \|\mu_c\|^2

    (Legate et al., "Guiding the last layer in federated learning with pre-trained models", NeurIPS 2023; their
    reference code scores by the cosine to the normalized means instead: this is the Euclidean nearest mean). The
    scores are :math:`-\tfrac12\|x - \mu_c\|^2` up to a per-row constant.

    Args:
      uploads: the clients' :func:`client_class_means` uploads.

    Returns:
      An :class:`analytic.Head` (ridge 0) with ``weights`` (d, m) and ``bias`` (m,).

    Raises:
      analytic.InputError, analytic.IntegrityError: as :func:`pooled_class_means`.

    Example:
      >>> uploads = [client_class_means(np.array([[0.0, 0.0], [2.0, 0.0]]), np.array([0, 0]), [0, 1]),
      ...            client_class_means(np.array([[5.0, 5.0]]), np.array([1]), [0, 1])]
      >>> head = fedncm_head(uploads)  # means (1, 0) and (5, 5)
      >>> analytic.predict_labels(head, np.array([[1.0, 1.0], [4.0, 3.0]]))
      array([0, 1])
    """
    pooled = pooled_class_means(uploads)
    weights = pooled.means.T.copy()
    return analytic.Head(weights=weights, class_ids=pooled.class_ids, ridge=0.0,
                         bias=-0.5 * np.einsum("dm,dm->m", weights, weights))


def _client_spreads(uploads: Iterable[ClassMeans]) -> tuple[ClassMeans, Iterator[tuple[int, np.ndarray, int]]]:
    r"""The pooled means, and for each class c its position, the rows :math:`\sqrt{n_{k,c}}(\mu_{k,c} - \mu_c)` of
    the :math:`K_c` clients that hold it, and :math:`K_c`."""
    means, counts, ids = _stacked(uploads)
    pooled = _pooled(means, counts, ids)

    def spreads():
        for position in range(ids.size):
            holders = counts[:, position] > 0
            rows = np.sqrt(counts[holders, position].astype(np.float64))[:, None] * (
                means[holders, position] - pooled.means[position])
            yield position, rows, int(holders.sum())

    return pooled, spreads()


def class_covariances(uploads: Iterable[ClassMeans]) -> np.ndarray:
    r"""FedCOF's class covariances, estimated from the spread of the client means (m·d² memory).

    .. math::
        \hat\Sigma_c = \frac{1}{K_c - 1} \sum_{k:\, n_{k,c} > 0} n_{k,c} (\mu_{k,c} - \mu_c)(\mu_{k,c} - \mu_c)^\top

    over the :math:`K_c` clients that hold class c (FedCOF, Goswami et al. NeurIPS 2025, the unbiased estimator:
    with i.i.d. samples of covariance :math:`\Sigma_c`, :math:`\mu_{k,c}` has covariance :math:`\Sigma_c / n_{k,c}`,
    so :math:`\mathbb E\hat\Sigma_c = \Sigma_c`). A class held by one client only (:math:`K_c = 1`) has no spread
    to estimate from: :math:`\hat\Sigma_c = 0`. With one sample per client it is the class's sample covariance.

    Args:
      uploads: the clients' :func:`client_class_means` uploads.

    Returns:
      (m, d, d) float64 :math:`\hat\Sigma_c`, in the order of the class ids.

    Raises:
      analytic.InputError, analytic.IntegrityError: as :func:`pooled_class_means`.

    Example:
      >>> x, y = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]]), np.array([0, 0, 0])
      >>> uploads = [client_class_means(x[i:i + 1], y[i:i + 1], [0]) for i in range(3)]  # one sample per client
      >>> np.allclose(class_covariances(uploads)[0], np.cov(x.T))
      True
    """
    pooled, spreads = _client_spreads(uploads)
    dim = pooled.means.shape[1]
    covariances = np.zeros((pooled.class_ids.size, dim, dim))
    for position, rows, holders in spreads:
        if holders > 1:
            covariances[position] = rows.T @ rows / (holders - 1)
    return covariances


def fedcof_gram(uploads: Iterable[ClassMeans], *, between_class: bool = True) -> np.ndarray:
    r"""FedCOF's estimate :math:`\hat G` of the pooled Gram :math:`X^\top X` from class means and counts only.

    Split the Gram by class and centre each class at its mean:

    .. math::
        X^\top X = \sum_c \sum_{y_i = c} x_i x_i^\top = \sum_c \big[(n_c - 1) S_c + n_c \mu_c \mu_c^\top\big],

    with :math:`S_c` the sample covariance of class c. FedCOF replaces :math:`S_c` by :math:`\hat\Sigma_c`
    (:func:`class_covariances`):

    .. math::
        \hat G = \sum_c \big[(n_c - 1) \hat\Sigma_c + n_c \mu_c \mu_c^\top\big],

    exactly the pooled Gram when every client holds one sample (:math:`\hat\Sigma_c = S_c`). With
    ``between_class=False``, the variant the FedCOF paper recommends: the class means' part is replaced by that of
    the overall mean :math:`\bar\mu`, dropping the between-class scatter
    :math:`\sum_c n_c(\mu_c - \bar\mu)(\mu_c - \bar\mu)^\top`:

    .. math::
        \hat G_{\text{within}} = \sum_c (n_c - 1) \hat\Sigma_c + N \bar\mu \bar\mu^\top, \qquad N = \sum_c n_c.

    The reference code's shrinkage :math:`\hat\Sigma_c + \gamma_s I` adds :math:`(N - C)\gamma_s I`: pass it as
    the ridge of :func:`fedcof_head`. Computed class by class from the client means (no d×d per class is kept).

    Args:
      uploads: the clients' :func:`client_class_means` uploads.
      between_class: keep the between-class scatter (default, the Gram's own decomposition) or drop it (the paper).

    Returns:
      (d, d) symmetric float64 :math:`\hat G`.

    Raises:
      analytic.InputError: as :func:`pooled_class_means`, or ``between_class`` not a bool.
      analytic.IntegrityError: as :func:`pooled_class_means`.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), rng.integers(0, 2, 12)
      >>> uploads = [client_class_means(x[i:i + 1], y[i:i + 1], [0, 1]) for i in range(12)]  # one sample each
      >>> np.allclose(fedcof_gram(uploads), x.T @ x)
      True
    """
    return _estimated_gram(*_client_spreads(uploads), _check_between_class(between_class))


def _check_between_class(between_class) -> bool:
    if not isinstance(between_class, (bool, np.bool_)):
        raise analytic.InputError(f"between_class must be True or False, got {between_class!r}")
    return bool(between_class)


def _estimated_gram(pooled: ClassMeans, spreads, between_class: bool) -> np.ndarray:
    r""":math:`\hat G` (:func:`fedcof_gram`) from the pooled means and the clients' spreads."""
    counts = pooled.counts.astype(np.float64)
    gram = np.zeros((pooled.means.shape[1],) * 2)
    for position, rows, holders in spreads:
        if holders > 1:  # (n_c − 1) Σ̂_c
            gram += (counts[position] - 1) / (holders - 1) * (rows.T @ rows)
    if between_class:  # Σ_c n_c μ_c μ_cᵀ
        return gram + (pooled.means.T * counts) @ pooled.means
    overall = counts @ pooled.means / counts.sum()  # μ̄
    return gram + counts.sum() * np.outer(overall, overall)


def fedcof_head(uploads: Iterable[ClassMeans], ridge: float, *, between_class: bool = True) -> analytic.Head:
    r"""FedCOF: ridge on the estimated Gram with the exact cross-moment, from class means and counts only.

    .. math::
        W = (\hat G + \gamma I)^{-1} B, \qquad B_{:, c} = n_c \mu_c = \sum_{y_i = c} x_i

    (Goswami et al., NeurIPS 2025; :math:`\hat G` from :func:`fedcof_gram`). :math:`B` is exact; :math:`\hat G` is
    an unbiased estimate of the pooled Gram when each class's samples are i.i.d. (``between_class=True``), so the
    head approximates the centralized ridge head, and equals it when every client holds one sample.

    Args:
      uploads: the clients' :func:`client_class_means` uploads.
      ridge: γ ≥ 0 (the reference code's per-class shrinkage :math:`\gamma_s` is γ = (N − C)γ_s).
      between_class: as :func:`fedcof_gram`.

    Returns:
      An :class:`analytic.Head` (d, m) with the given ridge.

    Raises:
      analytic.InputError: as :func:`fedcof_gram`, or a bad ridge.
      analytic.IntegrityError: as :func:`pooled_class_means`, or :math:`\hat G + \gamma I` not positive definite
        (raise the ridge).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
      >>> uploads = [client_class_means(x[p], y[p], [0, 1]) for p in federated.iid_partition(200, 20)]
      >>> head = fedcof_head(uploads, 0.1)
      >>> head.weights.shape, analytic.predict_labels(head, x[:3]).shape
      ((3, 2), (3,))
    """
    ridge = check_ridge(ridge)
    between_class = _check_between_class(between_class)
    pooled, spreads = _client_spreads(uploads)
    gram = _estimated_gram(pooled, spreads, between_class)
    cross = pooled.means.T * pooled.counts.astype(np.float64)  # B = [n_c μ_c]
    weights = factorize_matrix(gram, ridge).solve(cross)
    return analytic.Head(weights=weights, class_ids=pooled.class_ids, ridge=ridge)


def random_feature_statistics(layer, features, labels, class_ids) -> analytic.Statistics:
    r"""Fed3R client: the ridge statistics of its random features, :math:`\Phi_k = \varphi(X_k)`.

    .. math::
        G_k = \Phi_k^\top \Phi_k, \qquad B_k = \Phi_k^\top Y_k

    (Fanì et al., ICML 2024, Fed3R with random features; :math:`\varphi` a layer every client draws from the same
    seed, e.g. :func:`analytic.init_random_fourier` for the Gaussian kernel). The server sums and solves, as AFL's
    summed form: ``analytic.solve(federated.aggregate_statistics(uploads), ridge)`` is
    :math:`(\sum_k G_k + \lambda I)^{-1} \sum_k B_k`, the centralized ridge on the same random features for any
    split; its head scores ``analytic.expand(layer, features)``. The upload is
    :func:`federated.statistics_nbytes` ``(layer.width, m)`` bytes.

    Args:
      layer: an expansion layer (:func:`analytic.init_random_fourier`, :func:`analytic.init_buffer`, ...).
      features: (n_k, d_in) floating array of the client's samples, n_k ≥ 1, finite.
      labels: (n_k,) integer class ids, each among ``class_ids``.
      class_ids: the agreed class ids: every upload has their columns.

    Returns:
      The client's float64 :class:`analytic.Statistics` of dimension ``layer.width``.

    Raises:
      analytic.InputError: no samples, NaN/Inf, wrong shapes or dtypes (features of another dimension than
        ``layer.in_dim``), bad ``class_ids`` or a label outside them, or ``layer`` not an expansion layer.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
      >>> layer = analytic.init_random_fourier(3, 16, sigma=2.0, seed=0)
      >>> uploads = [random_feature_statistics(layer, x[p], y[p], [0, 1]) for p in federated.iid_partition(40, 4)]
      >>> head = analytic.solve(federated.aggregate_statistics(uploads), 0.1)
      >>> analytic.predict_labels(head, analytic.expand(layer, x[:3])).shape
      (3,)
    """
    x, y, ids = _client_rows(features, labels, class_ids)
    expanded = analytic.expand(layer, x)
    return analytic.accumulate(analytic.init_statistics(layer.width, class_ids=ids), expanded, y)

r"""The recursive (RLS) form of the ridge head, for streams that need a prediction after every batch.

State :math:`R = (G + \gamma I)^{-1}` and :math:`W = R B`, started at :math:`R_0 = I/\gamma`, :math:`W_0 = 0`.
A batch :math:`(X_k, Y_k)` is learned (σ = +1) or forgotten (σ = −1) with one batched Woodbury step
(ACIL eqs. 9–10, README: the math in brief):

.. math::
    S = I + \sigma X_k R X_k^\top, \qquad P = R X_k^\top S^{-1} \;(= R' X_k^\top),

    R' = R - \sigma P X_k R, \qquad W' = W + \sigma P (Y_k - X_k W).

Forgetting needs :math:`S = I - X_k R X_k^\top` positive definite, i.e. the batch was part of the data; otherwise the
request is refused. Always float64: in float32 the running inverse is unusable at the ridges the papers use
(README: precision). Equal to the statistics form up to rounding; :func:`recursive_from_statistics` re-synchronizes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from analytic.errors import InputError, IntegrityError
from analytic.ridge import Head, factorize, solve
from analytic.state import (
    device_float,
    frozen,
    register_pytree,
)
from analytic.statistics import Statistics, one_hot
from analytic.validation import (
    check_feature_shape,
    check_features,
    check_label_shape,
    check_labels,
    check_targets,
    target_matrix,
)


@dataclasses.dataclass(frozen=True)
class RecursiveHead:
    r"""Recursive form (R, W) of a ridge head with a fixed ridge γ (a pytree; class ids and γ are static).

    On a JAX device it needs ``jax_enable_x64`` (float64 only, see the module docstring); there the update runs under
    ``jax.jit`` on declared classes, and a batch that cannot be forgotten (or an unknown label) gives NaN weights
    inside jit and an error outside it.

    Attributes:
      inverse: (d, d) :math:`R = (G + \gamma I)^{-1}`, float64.
      weights: (d, m) :math:`W = R B`, float64.
      count: () int64 number of samples learned.
      class_ids: (m,) sorted class ids (classification) or ``None`` (regression).
      class_counts: (m,) int64 samples per class (classification) or ``None``.
      ridge: γ.

    Build one with :func:`init_recursive` (empty) or :func:`recursive_from_statistics`.

    Example:
      >>> head = analytic.init_recursive(2, 0.5)
      >>> head.inverse  # R₀ = I/γ
      array([[2., 0.],
             [0., 2.]])
      >>> head = recursive_learn(head, np.eye(2), np.array([4, 9]))
      >>> head.class_ids, int(head.count), head.class_counts
      (array([4, 9]), 2, array([1, 1]))
      >>> np.allclose(head.weights, np.eye(2) / 1.5)  # W = (I + 0.5 I)⁻¹ I
      True
    """

    inverse: np.ndarray
    weights: np.ndarray
    count: np.ndarray
    class_ids: np.ndarray | None
    class_counts: np.ndarray | None
    ridge: float

    def __post_init__(self):
        object.__setattr__(self, "class_ids", frozen(self.class_ids, np.int64))


register_pytree(RecursiveHead, ("inverse", "weights", "count", "class_counts"), ("class_ids", "ridge"))


def recursive_solve(head: RecursiveHead) -> Head:
    r"""The current weights :math:`W = (G + \gamma I)^{-1} B` as a :class:`~analytic.Head`: the recursive form keeps
    them solved, so this reads them (no solve is computed).

    Args:
      head: the recursive head.

    Returns:
      A :class:`~analytic.Head` with the head's weights, class ids and ridge.

    Example:
      >>> head = recursive_learn(init_recursive(2, 0.1), np.eye(2), np.array([0, 1]))
      >>> recursive_solve(head).class_ids
      array([0, 1])
    """
    return Head(weights=head.weights, class_ids=head.class_ids, ridge=head.ridge)


def init_recursive(dim: int, ridge: float, *, n_targets: int | None = None, class_ids=None) -> RecursiveHead:
    r"""Empty recursive head: :math:`R_0 = I/\gamma`, :math:`W_0 = 0` (REFERENCE.md §2); ``n_targets=None`` for
    classification, with ``class_ids`` declared up front for jitted updates.

    Args:
      dim: feature dimension d.
      ridge: γ > 0 (fixed for the head's life: :math:`R_0` depends on it).
      n_targets: ``None`` for classification with integer class ids; an int m for regression with m outputs.
      class_ids: classes whose (zero) weight columns exist from the start (classification); others are added as
        they appear outside jit.

    Returns:
      A host :class:`RecursiveHead` with no samples.

    Raises:
      InputError: ``ridge`` is not positive.

    Example:
      >>> head = init_recursive(3, 0.1, class_ids=[0, 1])
      >>> head.weights.shape, np.allclose(head.inverse, np.eye(3) / 0.1), int(head.count)
      ((3, 2), True, 0)
    """
    ridge = float(ridge)
    if not ridge > 0:
        raise InputError(f"the recursive form needs a positive ridge, got {ridge}")
    classification = n_targets is None
    ids = np.unique(np.asarray([] if class_ids is None else class_ids, np.int64)) if classification else None
    return RecursiveHead(
        inverse=np.eye(dim) / ridge,
        weights=np.zeros((dim, ids.size if classification else int(n_targets))),
        count=np.int64(0),
        class_ids=ids,
        class_counts=np.zeros(ids.size, np.int64) if classification else None,
        ridge=ridge,
    )


def recursive_learn(head: RecursiveHead, features, targets) -> RecursiveHead:
    r"""Learn a batch with one Woodbury update (σ = +1); unseen class ids add zero weight columns.

    .. math::
        S = I + X_k R X_k^\top, \quad P = R X_k^\top S^{-1}, \quad R' = R - P X_k R, \quad W' = W + P (Y_k - X_k W)

    (REFERENCE.md §2, ACIL eqs. 9–10). Runs in float64 on the host for a host head, in JAX for a device head or
    traced features (needs ``jax_enable_x64``).

    Args:
      head: the recursive head (unchanged; a new one is returned).
      features: (n, d) floating array, n ≥ 1, finite.
      targets: (n,) non-negative integer class ids (classification), or (n, m) / (n,) real values (regression).

    Returns:
      A new :class:`RecursiveHead` with the batch learned (its count and class counts raised).

    Raises:
      InputError: bad features or labels, including features so large that the update would overflow float64
        (refused before the head changes).
      IntegrityError: a device head without ``jax_enable_x64`` (the recursive form is float64 only). Inside jit a
        label outside the declared classes gives NaN weights instead.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), np.arange(12) % 3
      >>> head = init_recursive(3, 0.1)
      >>> for rows in (slice(0, 5), slice(5, 12)):  # two batches, one update each
      ...     head = recursive_learn(head, x[rows], y[rows])
      >>> joint = analytic.solve(analytic.accumulate(analytic.init_statistics(3), x, y), 0.1)
      >>> head.class_ids, np.allclose(head.weights, joint.weights)  # the joint ridge solution
      (array([0, 1, 2]), True)
    """
    return _woodbury_step(head, features, targets, +1)


def recursive_forget(head: RecursiveHead, features, targets) -> RecursiveHead:
    r"""Forget a batch that was learned (σ = −1).

    .. math::
        S = I - X_F R X_F^\top, \quad P = R X_F^\top S^{-1}, \quad R' = R + P X_F R, \quad W' = W - P (Y_F - X_F W)

    (REFERENCE.md §2, the forgetting form of ACIL eqs. 9–10): the head of retraining without the batch, up to
    rounding. Class columns stay, even when a class loses all its samples.

    Args:
      head: the recursive head (unchanged; a new one is returned).
      features: (n, d) floating array of samples the head learned.
      targets: their class ids (classification) or real targets (regression), as they were learned.

    Returns:
      A new :class:`RecursiveHead` without the batch (its count and class counts lowered).

    Raises:
      InputError: bad features or labels (see :func:`recursive_learn`).
      IntegrityError: a class or more samples than were learned, or :math:`I - X R X^\top` not positive definite
        (the batch was never part of the data). ``head`` is unchanged. Also: a device head without
        ``jax_enable_x64``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), np.arange(12) % 3
      >>> head = recursive_learn(init_recursive(3, 0.1), x, y)
      >>> forgotten = recursive_forget(head, x[:4], y[:4])
      >>> retrained = recursive_learn(init_recursive(3, 0.1), x[4:], y[4:])
      >>> int(forgotten.count), np.allclose(forgotten.weights, retrained.weights)
      (8, True)
    """
    return _woodbury_step(head, features, targets, -1)


def recursive_from_statistics(stats: Statistics, ridge: float) -> RecursiveHead:
    r"""Re-synchronize: :math:`R = (G + \gamma I)^{-1}`, :math:`W = R B` from the statistics (float64).

    The recursive form drifts from the statistics form by rounding (REFERENCE.md §6); rebuilding it from the
    statistics (one Cholesky factorization, REFERENCE.md §2) removes the drift.

    Args:
      stats: a host :class:`Statistics` (any precision).
      ridge: γ of the recursive head (> 0 to keep learning and forgetting recursively).

    Returns:
      A host :class:`RecursiveHead` with the state's counts and class ids.

    Raises:
      InputError: a bad ridge, or ``stats`` is not a :class:`Statistics`.
      IntegrityError: :math:`G + \gamma I` is not positive definite, or ``stats`` is malformed or flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(12, 3)), np.arange(12) % 3
      >>> stats = analytic.accumulate(analytic.init_statistics(3), x, y)
      >>> head = recursive_from_statistics(stats, 0.1)
      >>> np.allclose(head.inverse @ (analytic.gram_matrix(stats) + 0.1 * np.eye(3)), np.eye(3))
      True
      >>> np.allclose(head.weights, recursive_learn(init_recursive(3, 0.1), x, y).weights)
      True
    """
    factorization = factorize(stats, ridge)
    inverse = factorization.solve(np.eye(stats.dim))
    weights = solve(stats, ridge, factorization).weights
    return RecursiveHead(
        inverse=(inverse + inverse.T) / 2,
        weights=np.asarray(weights, np.float64),
        count=np.int64(stats.count),
        class_ids=stats.class_ids,
        class_counts=stats.class_counts,
        ridge=float(ridge),
    )


def _woodbury_step(head: RecursiveHead, features, targets, sign: int) -> RecursiveHead:
    if isinstance(head.inverse, jax.Array) or isinstance(features, jax.core.Tracer):
        return _device_woodbury_step(head, features, targets, sign)
    x = check_features(features, head.inverse.shape[0], finite=True).astype(np.float64, copy=False)
    with np.errstate(over="ignore"):
        too_large = ~np.isfinite(np.einsum("ij,ij->i", x, x))
    if too_large.any():
        raise InputError(f"features are too large: the squared norm of row {int(np.flatnonzero(too_large)[0])} "
                         "overflows float64 (rescale them)")
    weights, class_ids, class_counts = head.weights, head.class_ids, head.class_counts
    if head.class_ids is not None:
        labels = check_labels(targets, x.shape[0])
        if sign < 0:
            _check_forgettable(head, labels)
        else:
            class_ids = np.union1d(head.class_ids, labels)
            positions = np.searchsorted(class_ids, head.class_ids)
            weights = np.zeros((x.shape[1], class_ids.size))
            weights[:, positions] = head.weights
            class_counts = np.zeros(class_ids.size, np.int64)
            class_counts[positions] = head.class_counts
        index = np.searchsorted(class_ids, labels)
        y = one_hot(index, class_ids.size, np.float64)
        class_counts = class_counts + sign * np.bincount(index, minlength=class_ids.size)
    else:
        y = check_targets(targets, x.shape[0], weights.shape[1]).astype(np.float64, copy=False)
        if sign < 0 and x.shape[0] > head.count:
            raise IntegrityError(f"cannot forget {x.shape[0]} samples from a head that learned {int(head.count)}")
    r_xt = head.inverse @ x.T  # R Xᵀ (d, b)
    s = np.eye(x.shape[0]) + sign * (x @ r_xt)
    try:
        s_factor = scipy.linalg.cho_factor(s, lower=True, check_finite=False)
    except np.linalg.LinAlgError as error:
        raise IntegrityError(
            "I - X R Xᵀ is not positive definite: these samples are not part of the learned data"
        ) from error
    gain = scipy.linalg.cho_solve(s_factor, r_xt.T, check_finite=False).T  # P = R Xᵀ S⁻¹ = R' Xᵀ
    inverse = head.inverse - sign * (gain @ r_xt.T)
    inverse = (inverse + inverse.T) / 2
    weights = weights + sign * (gain @ (y - x @ weights))
    if not (np.isfinite(inverse).all() and np.isfinite(weights).all()):
        raise InputError("features are too large for a float64 Woodbury step (the update overflowed): rescale them")
    return dataclasses.replace(
        head,
        inverse=inverse,
        weights=weights,
        count=np.int64(head.count + sign * x.shape[0]),
        class_ids=class_ids,
        class_counts=class_counts,
    )


def _check_forgettable(head: RecursiveHead, labels: np.ndarray) -> None:
    unknown = np.setdiff1d(labels, head.class_ids)
    if unknown.size:
        raise IntegrityError(f"cannot forget classes {unknown.tolist()}: they were never learned")
    requested = np.bincount(np.searchsorted(head.class_ids, labels), minlength=head.class_ids.size)
    over = np.flatnonzero(requested > head.class_counts)
    if over.size:
        c = over[0]
        raise IntegrityError(
            f"cannot forget {int(requested[c])} samples of class {int(head.class_ids[c])}: "
            f"only {int(head.class_counts[c])} were learned"
        )


def _device_woodbury_step(head: RecursiveHead, features, targets, sign: int) -> RecursiveHead:
    """The same Woodbury step in JAX (float64, needs x64); invalid requests poison the weights with NaN."""
    dtype = device_float("float64")
    head = jax.tree.map(jnp.asarray, head)
    x = jnp.asarray(features)
    check_feature_shape(x, head.inverse.shape[0])
    x = x.astype(dtype)
    valid = jnp.bool_(True)
    if head.class_ids is not None:
        labels = jnp.asarray(targets)
        check_label_shape(labels, x.shape[0])
        if not isinstance(labels, jax.core.Tracer):
            concrete = check_labels(np.asarray(labels), x.shape[0])
            if sign < 0:
                _check_forgettable(jax.device_get(head), concrete)
            elif not np.isin(concrete, head.class_ids).all():
                head = _with_classes(head, np.union1d(head.class_ids, concrete))
        y = (labels[:, None] == jnp.asarray(head.class_ids)[None, :]).astype(dtype)
        valid = jnp.all(jnp.sum(y, axis=1) == 1)
        class_counts = head.class_counts + sign * jnp.sum(y, axis=0).astype(head.class_counts.dtype)
        valid = valid & jnp.all(class_counts >= 0)
    else:
        y = target_matrix(jnp.asarray(targets), x.shape[0], head.weights.shape[1]).astype(dtype)
        class_counts = None
    r_xt = jnp.matmul(head.inverse, x.T, precision=jax.lax.Precision.HIGHEST)
    s = jnp.eye(x.shape[0], dtype=dtype) + sign * jnp.matmul(x, r_xt, precision=jax.lax.Precision.HIGHEST)
    s_factor = jax.scipy.linalg.cho_factor(s, lower=True)
    valid = valid & jnp.all(jnp.isfinite(jnp.diagonal(s_factor[0])))
    gain = jax.scipy.linalg.cho_solve(s_factor, r_xt.T).T  # P = R Xᵀ S⁻¹ = R' Xᵀ
    inverse = head.inverse - sign * (gain @ r_xt.T)
    inverse = (inverse + inverse.T) / 2
    weights = head.weights + sign * (gain @ (y - x @ head.weights))
    if not isinstance(valid, jax.core.Tracer) and not bool(valid):
        raise IntegrityError("I - X R Xᵀ is not positive definite: these samples are not part of the learned data")
    return dataclasses.replace(
        head,
        inverse=inverse,
        weights=jnp.where(valid, weights, jnp.nan),
        count=head.count + sign * x.shape[0],
        class_counts=class_counts,
    )


def _with_classes(head: RecursiveHead, class_ids: np.ndarray) -> RecursiveHead:
    """New zero weight columns (and counts) for unseen classes."""
    positions = np.searchsorted(class_ids, head.class_ids)
    weights = jnp.zeros((head.weights.shape[0], class_ids.size), head.weights.dtype).at[:, positions].set(head.weights)
    counts = jnp.zeros(class_ids.size, head.class_counts.dtype).at[positions].set(head.class_counts)
    return dataclasses.replace(head, weights=weights, class_counts=counts, class_ids=class_ids)


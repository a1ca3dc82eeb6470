"""One interface for every continual learner, analytic or baseline, with the input checks they all share.

A :class:`Learner` is a NamedTuple of pure functions over a :class:`ContinualState` pytree (the optax pattern):

* ``init() -> state``;
* ``learn(state, features, labels) -> state`` — one phase (or one online batch);
* ``predict(state, features) -> labels``;
* ``scores(state, features) -> (n, k)`` class scores, column j for ``state.learned_classes[j]`` (every learner of
  this package has it, its prediction being the argmax; ``None`` for a learner that gives labels only).

:func:`make_learner` wraps a method's own update with the bad-input checks: an empty
phase, NaN/Inf features, labels outside the declared class set and, in strict class-incremental learning, a class
already finished in an earlier phase are refused with a clear error before anything is computed, so the state a
caller holds is never changed (every function is pure).
"""


import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from analytic import InputError, IntegrityError, expand
from analytic.internal import check_feature_shape, check_features, check_label_shape


@functools.partial(jax.tree_util.register_dataclass, data_fields=["model", "learned_classes", "phase"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class ContinualState:
    """What a learner carries from phase to phase (a frozen dataclass registered as a JAX pytree).

    Attributes:
      model: the method's own pytree (statistics, solved head, SGD parameters, ...); ``None`` before the first phase.
      learned_classes: (k,) sorted int64 ids of every class learned so far.
      phase: () int64 number of ``learn`` calls so far.

    Example:
      >>> learner = continual.ncm(np.arange(3))
      >>> state = learner.init()
      >>> state.model is None, state.learned_classes, int(state.phase)
      (True, array([], dtype=int64), 0)
      >>> state = learner.learn(state, np.eye(3), np.array([0, 1, 1]))
      >>> state.learned_classes, int(state.phase)
      (array([0, 1]), 1)
    """

    model: Any
    learned_classes: np.ndarray
    phase: np.ndarray


class Learner(NamedTuple):
    """A continual learner: ``init``, ``learn`` (one phase or batch), ``predict`` (class ids) and, where the method
    has them, ``scores`` (one column per learned class; ``predict`` is the class of the highest score), all pure.

    Every factory of this package (:func:`~continual.acil`, :func:`~continual.ncm`, ...) returns one, built by
    :func:`make_learner`, so ``learn`` and ``predict`` check their input before anything is computed.

    Attributes:
      name: display name (e.g. ``"ACIL"``), used in run results and plots.
      init: ``init() -> state``, the empty :class:`ContinualState`.
      learn: ``learn(state, features, labels) -> state`` — one phase (or online batch) of (n, d) features and (n,)
        class ids; raises :class:`~analytic.InputError` for bad input (empty phase, NaN/Inf, labels outside the
        declared classes) and :class:`~analytic.IntegrityError` for a class finished in an earlier phase of strict
        class-incremental learning.
      predict: ``predict(state, features) -> labels``, (n,) class ids among the learned classes; raises
        :class:`~analytic.IntegrityError` before the first ``learn``.
      scores: ``scores(state, features) -> (n, k)`` scores, column j for ``state.learned_classes[j]``, or ``None``
        for a learner that gives labels only.

    Example:
      >>> learner = continual.ncm(np.arange(3))
      >>> learner.name, callable(learner.scores)
      ('NCM', True)
      >>> state = learner.learn(learner.init(), np.eye(3), np.arange(3))
      >>> learner.predict(state, np.eye(3)), learner.scores(state, np.eye(3)).shape
      (array([0, 1, 2]), (3, 3))
    """

    name: str
    init: Callable[[], ContinualState]
    learn: Callable[[ContinualState, Any, Any], ContinualState]
    predict: Callable[[ContinualState, Any], np.ndarray]
    scores: Callable[[ContinualState, Any], np.ndarray] | None = None


def state_bytes(state: ContinualState) -> int:
    """Memory held by the learner's state: the bytes of every array leaf (NumPy or JAX).

    Args:
      state: a learner's :class:`ContinualState` (any pytree works).

    Returns:
      The total ``nbytes`` of the array leaves, as an int (non-array leaves count 0).

    Example:
      >>> learner = continual.ncm(np.arange(3))
      >>> continual.state_bytes(learner.init())  # the phase counter: one int64
      8
      >>> state = learner.learn(learner.init(), np.eye(3)[:2], np.array([0, 1]))
      >>> continual.state_bytes(state)  # (3, 3) float64 class sums, 3 counts, 2 learned ids, the phase
      120
    """
    return int(sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(state)))


def make_learner(
    name: str,
    classes,
    *,
    strict: bool,
    update: Callable[[Any, np.ndarray, np.ndarray, np.ndarray, int], Any],
    predict: Callable[[Any, np.ndarray], np.ndarray],
    scores: Callable[[Any, np.ndarray], tuple[Any, np.ndarray]] | None = None,
) -> Learner:
    """Wrap a method into a :class:`Learner` that validates every phase first.

    Args:
      name: display name.
      classes: the declared class ids; labels outside them are refused.
      strict: strict class-incremental learning: a phase may not contain a class learned in an earlier phase.
      update: ``update(model, features, labels, learned_classes, phase) -> model`` (``model`` is ``None`` at first).
      predict: ``predict(model, features) -> class ids``.
      scores: ``scores(model, features) -> (scores (n, m), class ids (m,))``, the scores whose argmax ``predict``
        returns, or ``None``; the learner's ``scores`` puts them in the columns of ``state.learned_classes``
        (``-inf`` for a learned class without a column).
    """
    declared = np.unique(np.asarray(classes, np.int64))
    if declared.size == 0:
        raise InputError("a learner needs at least one declared class")

    def init() -> ContinualState:
        return ContinualState(model=None, learned_classes=np.zeros(0, np.int64), phase=np.int64(0))

    def learn(state: ContinualState, features, labels) -> ContinualState:
        x = check_phase_features(features)
        y = check_phase_labels(labels, x.shape[0], declared)
        present = np.unique(np.asarray(y))
        if strict:
            finished = np.intersect1d(present, state.learned_classes)
            if finished.size:
                raise IntegrityError(
                    f"classes {finished.tolist()} were finished in an earlier phase: strict class-incremental "
                    "learning forbids them (use the generalized variant for streams where classes reappear)"
                )
        model = update(state.model, x, y, state.learned_classes, int(state.phase))
        return ContinualState(
            model=model,
            learned_classes=np.union1d(state.learned_classes, present),
            phase=np.int64(state.phase + 1),
        )

    def predict_labels(state: ContinualState, features) -> np.ndarray:
        if state.model is None:
            raise IntegrityError(f"{name} has learned nothing yet: call learn first")
        predictions = predict(state.model, check_phase_features(features))
        return predictions if isinstance(predictions, jax.Array) else np.asarray(predictions)

    def class_scores(state: ContinualState, features) -> np.ndarray:
        if state.model is None:
            raise IntegrityError(f"{name} has learned nothing yet: call learn first")
        values, class_ids = scores(state.model, check_phase_features(features))
        return align_scores(np.asarray(values), np.asarray(class_ids), state.learned_classes)

    return Learner(name=name, init=init, learn=learn, predict=predict_labels,
                   scores=None if scores is None else class_scores)


def align_scores(values: np.ndarray, class_ids: np.ndarray, learned_classes: np.ndarray) -> np.ndarray:
    """(n, k) scores in the columns of ``learned_classes`` from (n, m) scores in the columns of ``class_ids``
    (``-inf`` where a learned class has no column)."""
    if np.array_equal(class_ids, learned_classes):
        return values
    aligned = np.full((values.shape[0], learned_classes.size), -np.inf, values.dtype)
    position = np.searchsorted(learned_classes, class_ids)
    keep = (position < learned_classes.size) & (learned_classes[np.minimum(position, learned_classes.size - 1)]
                                                == class_ids)
    aligned[:, position[keep]] = values[:, keep]
    return aligned


def check_phase_features(features):
    """(n, d) floating features with n ≥ 1, all finite; raises :class:`~analytic.InputError` otherwise. JAX arrays
    are checked where they are and returned as they are (only the verdict crosses to the host)."""
    on_device = isinstance(features, jax.Array)
    x = features if on_device else np.asarray(features)
    if x.ndim == 2 and x.shape[0] == 0:
        raise InputError("empty phase: the features have no rows")
    if not on_device:
        return check_features(x, finite=True)
    check_feature_shape(x)
    if not bool(jnp.all(jnp.isfinite(x))):
        raise InputError("features contain NaN or Inf")
    return x


def check_phase_labels(labels, n: int, declared: np.ndarray):
    """(n,) class ids, every one of them among the ``declared`` classes (int64 on the host; a JAX array stays one)."""
    on_device = isinstance(labels, jax.Array)
    y = labels if on_device else np.asarray(labels)
    check_label_shape(y, n)
    unknown = np.setdiff1d(np.unique(np.asarray(y)), declared)
    if unknown.size:
        raise InputError(f"labels {unknown.tolist()[:10]} are outside the declared classes")
    return y if on_device else y.astype(np.int64, copy=False)


def embed(layer, features: np.ndarray) -> np.ndarray:
    """Features after the fixed expansion ``layer`` (:func:`analytic.expand`, float32), or unchanged for ``None``."""
    return features if layer is None else expand(layer, features)

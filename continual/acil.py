r"""ACIL, G-ACIL and GKEAL: a ridge head on a fixed expansion, learned phase by phase from additive statistics.

Each phase adds its samples to the statistics and re-solves (README: the math in brief):

.. math::
    G \mathrel{+}= X_k^\top X_k, \qquad B \mathrel{+}= X_k^\top Y_k \;(\text{new classes add zero columns}), \qquad
    W_k = (G + \gamma I)^{-1} B,

so after any number of phases :math:`W_k` *is* the joint ridge solution on every sample seen ("absolute
memorization" of ACIL, whose recursive form eqs. 9–10 computes the same weights through a running inverse). No
sample is stored. The expansion is the ACIL buffer layer :math:`\phi(z) = \mathrm{ReLU}(z W_B)` or, for GKEAL, the
Gaussian-kernel layer :math:`\phi_j(z) = \exp(-\|z - c_j\|^2 / 2\sigma^2)` whose centres are drawn from the phase-0
features. G-ACIL is the same update on generalized streams where classes reappear.

With ``device=True`` the statistics live on the default JAX device with every declared class from the start, and a
phase (expansion, accumulation, solve) and a prediction are each one jitted call on device arrays; classes not yet
learned are masked out of the argmax.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import analytic
from analytic.expansion import apply_expansion
from continual.learner import Learner, embed, make_learner


class RidgeModel(NamedTuple):
    """State of a ridge-on-expansion learner.

    Attributes:
      expansion: the fixed expansion layer φ, or ``None`` (features used as they are).
      statistics: :class:`analytic.Statistics` of φ(X) (G, B, counts).
      head: the solved :class:`analytic.Head` :math:`W = (G + \\gamma I)^{-1} B`.
    """

    expansion: object
    statistics: analytic.Statistics
    head: analytic.Head


def ridge_update(model: RidgeModel, expansion, x: np.ndarray, labels: np.ndarray, *, ridge: float,
                 precision: str) -> RidgeModel:
    """Add one phase's expanded features ``x = embed(expansion, features)`` to the statistics and re-solve
    (``model=None`` starts from empty statistics)."""
    statistics = analytic.init_statistics(x.shape[1], precision=precision) if model is None else model.statistics
    statistics = analytic.accumulate(statistics, x, labels)
    return RidgeModel(expansion=expansion, statistics=statistics, head=analytic.solve(statistics, ridge))


def ridge_predict(model: RidgeModel, features: np.ndarray) -> np.ndarray:
    """Class ids of :math:`\\arg\\max_c\\, \\phi(x) W`."""
    return analytic.predict_labels(model.head, embed(model.expansion, features))


def ridge_scores(model: RidgeModel, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class scores :math:`\\phi(x) W` and the class id of each column (``ridge_predict`` is their argmax)."""
    return analytic.predict(model.head, embed(model.expansion, features)), model.head.class_ids


@functools.partial(jax.jit, static_argnames="ridge")
def device_phase(model: RidgeModel, features, labels, *, ridge: float) -> RidgeModel:
    """One phase in one jitted call: expand, accumulate into the declared-class statistics, solve."""
    x = features if model.expansion is None else apply_expansion(model.expansion, features)
    statistics = analytic.accumulate(model.statistics, x, labels)
    return model._replace(statistics=statistics, head=analytic.solve(statistics, ridge))


@jax.jit
def device_scores(model: RidgeModel, features) -> jax.Array:
    """Scores :math:`\\phi(x) W` over every declared class (columns of ``model.head.class_ids``)."""
    x = features if model.expansion is None else apply_expansion(model.expansion, features)
    return analytic.predict(model.head, x)


@jax.jit
def device_predict(model: RidgeModel, features) -> jax.Array:
    """Class ids of the argmax over the classes learned so far (declared but unlearned columns are masked)."""
    scores = device_scores(model, features)
    learned = jnp.any(model.statistics.class_count_words != 0, axis=-1)
    return jnp.asarray(model.head.class_ids)[jnp.argmax(jnp.where(learned[None, :], scores, -jnp.inf), axis=1)]


def acil(classes, *, expansion=None, ridge: float = 0.1, strict: bool = True, precision: str = "float64",
         name: str = "ACIL", device: bool = False) -> Learner:
    r"""ACIL (strict class-incremental) on the expansion ``expansion`` (e.g. :func:`analytic.init_buffer`).

    Each phase adds :math:`X_k^\top X_k` and :math:`X_k^\top Y_k` to the statistics and re-solves

    .. math::
        W_k = (G + \gamma I)^{-1} B, \qquad G = \sum_{j \le k} X_j^\top X_j, \quad B = \sum_{j \le k} X_j^\top Y_j

    (REFERENCE.md §1 and §3; the recursive ACIL eqs. 9–10 of REFERENCE.md §2 give the same weights), so the head
    after any phase is the joint ridge solution on every sample seen.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer, or ``None`` to use the features as they are.
      ridge: γ (0.1 in ACIL).
      strict: refuse classes learned in an earlier phase (``False``: G-ACIL).
      precision: precision of the statistics (:func:`analytic.init_statistics`; float64 on a device needs x64).
      name: display name.
      device: learn and predict with jitted calls on the default JAX device (module docstring).

    Returns:
      A :class:`~continual.Learner` with ``scores`` (the ridge outputs :math:`\phi(x) W`, one column per learned
      class).

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``) and, with ``strict``, :class:`~analytic.IntegrityError` for a
        class finished in an earlier phase; its ``predict`` raises :class:`~analytic.IntegrityError` before the
        first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.acil(np.arange(3), expansion=analytic.init_buffer(4, 32, seed=0))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> round(float(np.mean(learner.predict(state, x) == y)), 2)
      1.0
      >>> learner.learn(state, x[:2], y[:2])  # class 0 was finished in phase 0
      Traceback (most recent call last):
      ...
      analytic.errors.IntegrityError: classes [0] were finished in an earlier phase: ...
    """
    if device:
        return _device_learner(classes, expansion, ridge, strict, precision, name)

    def update(model, features, labels, learned_classes, phase):
        return ridge_update(model, expansion, embed(expansion, features), labels, ridge=ridge, precision=precision)

    return make_learner(name, classes, strict=strict, update=update, predict=ridge_predict, scores=ridge_scores)


def _device_learner(classes, expansion, ridge, strict, precision, name) -> Learner:
    declared = np.unique(np.asarray(classes, np.int64))
    width = None if expansion is None else expansion.width

    def update(model, features, labels, learned_classes, phase):
        if model is None:
            dim = features.shape[1] if width is None else width
            statistics = jax.device_put(analytic.init_statistics(dim, class_ids=declared, precision=precision))
            model = RidgeModel(expansion=None if expansion is None else jax.device_put(expansion),
                               statistics=statistics, head=None)
        return device_phase(model, jnp.asarray(features), jnp.asarray(labels), ridge=float(ridge))

    return make_learner(name, classes, strict=strict, update=update,
                        predict=lambda model, features: device_predict(model, jnp.asarray(features)),
                        scores=lambda model, features: (device_scores(model, jnp.asarray(features)),
                                                        model.head.class_ids))


def g_acil(classes, *, expansion=None, ridge: float = 0.1, precision: str = "float64") -> Learner:
    r"""G-ACIL: the ACIL update on generalized streams where classes reappear and phases blur (the G-ACIL paper).

    The same update as :func:`acil` — :math:`W_k = (G + \gamma I)^{-1} B` on the statistics of every sample seen
    (REFERENCE.md §1 and §3) — with ``strict=False``: a phase may bring back classes of earlier phases, and the head
    stays the joint ridge solution.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer, or ``None`` to use the features as they are.
      ridge: γ (0.1 in ACIL).
      precision: precision of the statistics (:func:`analytic.init_statistics`).

    Returns:
      A :class:`~continual.Learner` named ``"G-ACIL"``, with ``scores``.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``); its ``predict`` raises :class:`~analytic.IntegrityError` before
        the first phase.

    Example:
      Three classes in two phases; class 1 comes back in the second phase:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.g_acil(np.arange(3))
      >>> state = learner.learn(learner.init(), x[:30], y[:30])  # class 0 and half of class 1
      >>> state = learner.learn(state, x[30:], y[30:])  # the rest of class 1, then class 2
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> round(float(np.mean(learner.predict(state, x) == y)), 2)
      1.0
    """
    return acil(classes, expansion=expansion, ridge=ridge, strict=False, precision=precision, name="G-ACIL")


def gkeal(classes, *, width: int, sigma: float = 10.0, seed: int = 0, ridge: float = 0.1,
          strict: bool = True) -> Learner:
    r"""GKEAL: ridge on a Gaussian-kernel expansion whose ``width`` centres are drawn from the phase-0 features.

    :math:`\phi_j(z) = \exp(-\|z - c_j\|^2 / 2\sigma^2)`, σ ≈ 10 in the paper (range 5–15) (REFERENCE.md §3). With
    fewer phase-0 samples than ``width`` (few-shot base phases), every sample is a centre and the rest are random
    convex combinations of them (:func:`analytic.init_gaussian_kernel`, after the reference GKEAL code). The head is
    then the ACIL ridge :math:`W = (G + \gamma I)^{-1} B` on :math:`\phi(X)` (REFERENCE.md §1), float64 statistics.

    Args:
      classes: declared class ids.
      width: number of kernel centres d (the expanded feature dimension).
      sigma: kernel width σ.
      seed: seed of the centre draw.
      ridge: γ.
      strict: refuse classes learned in an earlier phase.

    Returns:
      A :class:`~continual.Learner` named ``"GKEAL"``, with ``scores``.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``, or kernel arguments :func:`analytic.init_gaussian_kernel`
        refuses) and, with ``strict``, :class:`~analytic.IntegrityError` for a class finished in an earlier phase;
        its ``predict`` raises :class:`~analytic.IntegrityError` before the first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2); the 16 centres come from phase 0:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.gkeal(np.arange(3), width=16, sigma=4.0)
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> state.model.statistics.dim, round(float(np.mean(learner.predict(state, x) == y)), 2)
      (16, 1.0)
    """

    def update(model, features, labels, learned_classes, phase):
        expansion = (
            analytic.init_gaussian_kernel(features, width, sigma=sigma, seed=seed)
            if model is None
            else model.expansion
        )
        return ridge_update(model, expansion, embed(expansion, features), labels, ridge=ridge, precision="float64")

    return make_learner("GKEAL", classes, strict=strict, update=update, predict=ridge_predict, scores=ridge_scores)

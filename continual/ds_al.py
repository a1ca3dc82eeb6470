r"""DS-AL: a dual-stream analytic learner (the DS-AL paper).

One shared random projection P feeds two expansions: the main stream :math:`X_M = \mathrm{ReLU}(zP)` is exactly ACIL
(:mod:`continual.acil`), and the compensation stream :math:`X_C = \tanh(zP)` fits the main stream's residual with its
own ridge :math:`\gamma_C`. In phase k, with the main weights :math:`W_M^{(k)}` *after* the phase,

.. math::
    \tilde Y_k = \mathrm{cleanse}\big(Y_k - X_{M,k} W_M^{(k)}\big), \qquad
    G_C \mathrel{+}= X_{C,k}^\top X_{C,k}, \quad B_C \mathrel{+}= X_{C,k}^\top \tilde Y_k, \qquad
    W_C = (G_C + \gamma_C I)^{-1} B_C,

where "previous label cleansing" zeroes the residual's columns of classes learned in earlier phases. Prediction is
:math:`\hat Y = X_M W_M + c\, X_C W_C` with the compensation ratio c chosen on held-out data
(:func:`choose_compensation_ratio`; 0.6 on CIFAR-100, 1.5 on ImageNet in the paper).

The compensation targets live in the declared class columns (a regression :class:`analytic.Statistics` with one
output per declared class), so new classes never reshape them.
"""


import dataclasses
from typing import NamedTuple

import numpy as np

import analytic
from continual.acil import RidgeModel, ridge_update
from continual.learner import ContinualState, Learner, embed, make_learner


class DualStreamModel(NamedTuple):
    """State of DS-AL.

    Attributes:
      main: the main stream, an ACIL :class:`~continual.acil.RidgeModel`.
      compensation_expansion: the compensation expansion (tanh of the shared projection).
      compensation_statistics: regression statistics of :math:`(X_C, \\tilde Y)` over the declared classes.
      compensation_weights: (d, C) :math:`W_C` over the declared classes.
      compensation_ratio: () the ratio c.
    """

    main: RidgeModel
    compensation_expansion: object
    compensation_statistics: analytic.Statistics
    compensation_weights: np.ndarray
    compensation_ratio: np.ndarray


def ds_al(classes, *, main_expansion, compensation_expansion, ridge: float = 0.1, compensation_ridge: float = 0.1,
          compensation_ratio: float = 0.6, strict: bool = True) -> Learner:
    r"""DS-AL learner: an ACIL main stream plus a compensation stream fitted to its residual.

    In phase k (REFERENCE.md §3, DS-AL; module docstring),

    .. math::
        W_M = (G_M + \gamma_M I)^{-1} B_M, \qquad
        \tilde Y_k = \mathrm{cleanse}\big(Y_k - X_{M,k} W_M\big), \qquad
        W_C = (G_C + \gamma_C I)^{-1} B_C, \qquad \hat Y = X_M W_M + c\, X_C W_C,

    with :math:`B_C = \sum_k X_{C,k}^\top \tilde Y_k` and the residual columns of earlier phases' classes zeroed.

    Args:
      classes: declared class ids.
      main_expansion: main-stream layer, e.g. ``analytic.init_buffer(d_in, width, seed=s)`` (ReLU).
      compensation_expansion: the same projection with another activation,
        e.g. ``analytic.init_buffer(d_in, width, seed=s, activation="tanh")``.
      ridge: γ_M of the main stream.
      compensation_ridge: γ_C of the compensation stream.
      compensation_ratio: c (see :func:`choose_compensation_ratio`).
      strict: strict class-incremental learning.

    Returns:
      A :class:`~continual.Learner` named ``"DS-AL"`` whose ``scores`` are :math:`X_M W_M + c\, X_C W_C`, one column
      per learned class.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``) and, with ``strict``, :class:`~analytic.IntegrityError` for a
        class finished in an earlier phase; its ``predict`` raises :class:`~analytic.IntegrityError` before the
        first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2), both streams on one 32-wide projection:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.ds_al(np.arange(3), main_expansion=analytic.init_buffer(4, 32, seed=0),
      ...                           compensation_expansion=analytic.init_buffer(4, 32, seed=0, activation="tanh"))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> round(float(np.mean(learner.predict(state, x) == y)), 2), float(state.model.compensation_ratio)
      (1.0, 0.6)
    """
    declared = np.unique(np.asarray(classes, np.int64))

    def update(model, features, labels, learned_classes, phase):
        x_main = embed(main_expansion, features)
        main = ridge_update(None if model is None else model.main, main_expansion, x_main, labels,
                            ridge=ridge, precision="float64")
        x_compensation = embed(compensation_expansion, features)
        columns = np.searchsorted(declared, main.head.class_ids)
        residual = np.zeros((labels.size, declared.size))
        residual[np.arange(labels.size), np.searchsorted(declared, labels)] = 1.0
        residual[:, columns] -= analytic.predict(main.head, x_main)  # Ỹ = Y − X_M W_M (after this phase)
        residual[:, np.searchsorted(declared, learned_classes)] = 0.0  # previous label cleansing
        statistics = (
            analytic.init_statistics(x_compensation.shape[1], n_targets=declared.size)
            if model is None
            else model.compensation_statistics
        )
        statistics = analytic.accumulate(statistics, x_compensation, residual)
        return DualStreamModel(
            main=main,
            compensation_expansion=compensation_expansion,
            compensation_statistics=statistics,
            compensation_weights=analytic.solve(statistics, compensation_ridge).weights,
            compensation_ratio=np.float64(compensation_ratio if model is None else model.compensation_ratio),
        )

    def scores(model, features):
        main, compensation = stream_scores(model, features, declared)
        return main + model.compensation_ratio * compensation, model.main.head.class_ids

    def predict(model, features):
        combined, class_ids = scores(model, features)
        return class_ids[np.argmax(combined, axis=1)]

    return make_learner("DS-AL", classes, strict=strict, update=update, predict=predict, scores=scores)


def stream_scores(model: DualStreamModel, features: np.ndarray, declared: np.ndarray):
    r"""The two streams' scores :math:`(X_M W_M,\; X_C W_C)` over the learned classes
    (columns of ``model.main.head.class_ids``); the prediction adds them with the ratio c."""
    main = analytic.predict(model.main.head, embed(model.main.expansion, features))
    columns = np.searchsorted(declared, model.main.head.class_ids)
    compensation = embed(model.compensation_expansion, features) @ model.compensation_weights[:, columns]
    return main, compensation


def choose_compensation_ratio(state: ContinualState, classes, features, labels,
                              grid=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)) -> ContinualState:
    r"""The state with the compensation ratio c of ``grid`` that scores best on held-out ``(features, labels)``
    (first best on ties, so c = 0 — the main stream alone — wins unless compensation helps).

    :math:`c^* = \arg\max_{c \in \text{grid}} \mathrm{acc}\big(\arg\max (X_M W_M + c\, X_C W_C)\big)` on the
    held-out rows (REFERENCE.md §3, DS-AL: c = 0.6 on CIFAR-100, 1.5 on ImageNet). Nothing is re-learned: the two
    streams' scores are computed once.

    Args:
      state: a state of a :func:`ds_al` learner after at least one phase.
      classes: the declared class ids the learner was built with.
      features: (n, d) held-out features.
      labels: (n,) their class ids.
      grid: the candidate ratios, in order of preference on ties.

    Returns:
      ``state`` with ``model.compensation_ratio`` set to the best c (everything else unchanged).

    Example:
      Held-out rows that the main stream alone already classifies perfectly keep c = 0:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.ds_al(np.arange(3), main_expansion=analytic.init_buffer(4, 32, seed=0),
      ...                           compensation_expansion=analytic.init_buffer(4, 32, seed=0, activation="tanh"))
      >>> state = learner.learn(learner.init(), x[1::2], y[1::2])
      >>> tuned = continual.choose_compensation_ratio(state, np.arange(3), x[::2], y[::2])
      >>> float(state.model.compensation_ratio), float(tuned.model.compensation_ratio)
      (0.6, 0.0)
    """
    declared = np.unique(np.asarray(classes, np.int64))
    main, compensation = stream_scores(state.model, np.asarray(features), declared)
    class_ids = state.model.main.head.class_ids
    accuracies = [np.mean(class_ids[np.argmax(main + c * compensation, axis=1)] == labels) for c in grid]
    best = float(grid[int(np.argmax(accuracies))])
    return dataclasses.replace(state, model=state.model._replace(compensation_ratio=np.float64(best)))

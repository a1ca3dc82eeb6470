r"""The baselines analytic continual learners are judged against (the usual continual-learning baselines), on the same learner interface.

* :func:`fine_tuning` — a softmax head trained with SGD on each phase in turn (catastrophic forgetting);
* :func:`joint_sgd` — the same head retrained from scratch on every sample seen so far (stores them: upper bound);
* :func:`joint_ridge` — the ridge head re-solved from scratch on every stored sample (the closed-form upper bound,
  and the oracle ACIL must equal);
* :func:`ncm` — nearest class mean, :math:`\arg\min_c \|x - \mu_c\|`, from running class sums;
* :func:`slda` — streaming LDA: class means and one shared covariance
  :math:`\Sigma = \frac1n (G - \sum_c n_c \mu_c \mu_c^\top)`, scores :math:`x^\top \Lambda \mu_c - \tfrac12 \mu_c^\top
  \Lambda \mu_c` with :math:`\Lambda = (\Sigma + \varepsilon I)^{-1}`;
* :func:`ranpac` — a random ReLU projection plus a ridge head whose γ is chosen each phase on held-out rows of that
  phase (fitted on 80 %, scored on 20 %, then all rows are added).

The SGD baselines reuse :mod:`analytic.gradient` over all declared classes (classes not learned yet are masked out
of the prediction) with the optimizer of the continual-learning literature's fine-tuning baselines and of the common
reference code: SGD with heavy-ball momentum 0.9 and L2 weight decay 5e-4, the optimizer state reset each phase.
Defaults: learning rate 0.01, batch 64, 20 epochs. They were chosen on held-out rows of the training sets (80 / 20
stratified split, never the test sets) over a grid of SGD (lr 0.01–0.3) and Adam (lr 1e-3–3e-2), batch 32 / 64 /
256, 5–40 epochs; SGD at lr 0.01 or 0.03 with batch 32–64 and 20–40 epochs sits on the plateau (Adam no better, and
lower on later fine-tuning phases). The former defaults (5 epochs, batch 256) took one step per epoch on a small phase —
five steps in all on a two-class digits phase of ~290 rows. Test-set accuracy (%), B0-Inc2, class order seed 1993,
before → after:

=======================================  ===================  ===================
features                                 FT, first phase      joint SGD, all 10
=======================================  ===================  ===================
sklearn digits, pixels in [0, 1]         44.4 → 95.8          65.2 → 91.1
sklearn digits, standardized             81.9 → 98.6          84.7 → 94.2
digits, MobileNetV2 features (64 px)     100.0 → 100.0        84.7 → 91.4
MNIST-1D, standardized                   92.8 → 98.6          25.2 → 30.4
MNIST-5k pixels, standardized            99.0 → 98.5          88.8 → 88.7
=======================================  ===================  ===================

MNIST-1D is hard for any linear head (33 at best in the grid). On held-out rows of 20 classes of MNIST-5k +
Animal-MNIST MobileNetV2 features (B0-Inc5, 240 rows per class), joint SGD ends at 91.3 (85.1 before) against 91.8
for joint ridge (γ = 1).
"""


from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.linalg

import analytic
from analytic import gradient
from continual.acil import RidgeModel, ridge_predict, ridge_scores, ridge_update
from continual.learner import Learner, embed, make_learner


class SoftmaxModel(NamedTuple):
    """A gradient-trained head over the declared classes, the mask of learned ones, and (joint only) stored data."""

    params: tuple
    learned: np.ndarray
    features: np.ndarray | None
    labels: np.ndarray | None


def _softmax_scores(declared: np.ndarray):
    """``scores(model, features) -> (logits of the learned classes, their ids)`` for a :class:`SoftmaxModel`."""

    def scores(model: SoftmaxModel, features):
        logits = np.asarray(gradient.head_logits(model.params, jnp.asarray(features, jnp.float32)))
        return logits[:, model.learned], declared[model.learned]

    return scores


def _argmax_predict(scores):
    """``predict(model, features)``: the class id of the highest of ``scores(model, features)``."""

    def predict(model, features):
        values, class_ids = scores(model, features)
        return class_ids[np.argmax(values, axis=1)]

    return predict


def fine_tuning(classes, *, epochs: int = 20, learning_rate: float = 0.01, batch_size: int = 64,
                seed: int = 0) -> Learner:
    r"""SGD fine-tuning of one softmax head, phase after phase, with cross-entropy on the current phase only.

    SGD with momentum 0.9 and weight decay 5e-4 (:func:`analytic.gradient.make_optimizer`); the defaults (lr 0.01,
    batch 64, 20 epochs per phase) train each phase to convergence (see the module docstring), so what the baseline
    loses afterwards is forgetting, not under-training. Each step, on a batch of the current phase only
    (REFERENCE.md §4: FT, μ = 0.9, λ = 5e-4),

    .. math::
        g_t = \nabla_\theta \mathrm{CE}(\theta_t; \text{batch}) + \lambda \theta_t, \qquad
        v_t = \mu v_{t-1} + g_t, \qquad \theta_{t+1} = \theta_t - \eta v_t

    The head has a column per declared class; classes not learned yet are masked out of ``predict`` and ``scores``.

    Args:
      classes: declared class ids.
      epochs: passes over each phase.
      learning_rate: η.
      batch_size: rows per SGD step (capped at the phase size).
      seed: seed of the head's initialization and of the shuffling (``seed + phase`` for each phase).

    Returns:
      A :class:`~continual.Learner` named ``"FT (SGD)"`` whose ``scores`` are the head's logits, one column per
      learned class.

    Raises:
      InputError: ``learning_rate`` is not positive, or ``classes`` is empty. The learner's ``learn`` raises
        :class:`~analytic.InputError` for a bad phase (empty, NaN/Inf, labels outside ``classes``) or bad
        ``epochs`` / ``batch_size``; its ``predict`` raises :class:`~analytic.IntegrityError` before the first
        phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2); batches of 20 rows in both phases, so the SGD
      step compiles once:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.fine_tuning(np.arange(3), batch_size=20)
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> learner.scores(state, x).shape
      (60, 3)
    """
    declared = np.unique(np.asarray(classes, np.int64))
    optimizer = gradient.make_optimizer(learning_rate)

    def update(model, features, labels, learned_classes, phase):
        params = gradient.init_head(features.shape[1], declared.size, seed=seed) if model is None else model.params
        data = {"features": features.astype(np.float32), "labels": np.searchsorted(declared, labels)}
        params, _ = gradient.train(params, gradient.classification_loss, data, optimizer=optimizer, epochs=epochs,
                                   batch_size=batch_size, seed=seed + phase)
        learned = np.isin(declared, np.union1d(learned_classes, labels))
        return SoftmaxModel(params=params, learned=learned, features=None, labels=None)

    scores = _softmax_scores(declared)
    return make_learner("FT (SGD)", classes, strict=False, update=update, predict=_argmax_predict(scores),
                        scores=scores)


def joint_sgd(classes, *, epochs: int = 20, learning_rate: float = 0.01, batch_size: int = 64,
              seed: int = 0) -> Learner:
    r"""Joint SGD training: every phase retrains the head from scratch on all samples stored so far.

    Same optimizer and defaults as :func:`fine_tuning` (SGD, momentum 0.9, weight decay 5e-4, lr 0.01, batch 64,
    20 epochs), each step on a batch of every sample seen (REFERENCE.md §4: joint training, the upper bound),

    .. math::
        g_t = \nabla_\theta \mathrm{CE}(\theta_t; \text{batch}) + \lambda \theta_t, \qquad
        v_t = \mu v_{t-1} + g_t, \qquad \theta_{t+1} = \theta_t - \eta v_t

    Stores every sample (not exemplar-free).

    Args:
      classes: declared class ids.
      epochs: passes over the stored samples at each phase.
      learning_rate: η.
      batch_size: rows per SGD step (capped at the number of stored samples).
      seed: seed of the head's initialization and of the shuffling.

    Returns:
      A :class:`~continual.Learner` named ``"Joint (SGD)"`` whose ``scores`` are the head's logits, one column per
      learned class.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``) or bad ``epochs`` / ``learning_rate`` / ``batch_size``; its
        ``predict`` raises :class:`~analytic.IntegrityError` before the first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.joint_sgd(np.arange(3), batch_size=20)
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> state.model.features.shape  # every sample is kept
      (60, 4)
    """
    declared = np.unique(np.asarray(classes, np.int64))

    def update(model, features, labels, learned_classes, phase):
        features = features.astype(np.float32)
        if model is not None:
            features = np.concatenate([model.features, features])
            labels = np.concatenate([model.labels, labels])
        params = gradient.fit_softmax_head(features, np.searchsorted(declared, labels), n_classes=declared.size,
                                           epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                                           seed=seed)
        return SoftmaxModel(params=params, learned=np.isin(declared, labels), features=features, labels=labels)

    scores = _softmax_scores(declared)
    return make_learner("Joint (SGD)", classes, strict=False, update=update, predict=_argmax_predict(scores),
                        scores=scores)


class StoredRidgeModel(NamedTuple):
    """Every sample seen so far and the ridge model re-solved from them."""

    features: np.ndarray
    labels: np.ndarray
    ridge_model: RidgeModel


def joint_ridge(classes, *, expansion=None, ridge: float = 0.1) -> Learner:
    r"""Joint closed-form training: statistics rebuilt from all stored samples at every phase, then solved.

    :math:`W = (X^\top X + \gamma I)^{-1} X^\top Y` on the (expanded) features of every sample seen (REFERENCE.md
    §1), in float64: the oracle :func:`acil` must equal after every phase. Stores every sample.

    Args:
      classes: declared class ids.
      expansion: fixed expansion layer, or ``None`` to use the features as they are.
      ridge: γ.

    Returns:
      A :class:`~continual.Learner` named ``"Joint (ridge)"`` whose ``scores`` are :math:`\phi(x) W`, one column per
      learned class.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``); its ``predict`` raises :class:`~analytic.IntegrityError` before
        the first phase.

    Example:
      Three classes in two phases; the head equals ACIL's:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.joint_ridge(np.arange(3))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> acil = continual.acil(np.arange(3))
      >>> acil_state = acil.learn(acil.learn(acil.init(), x[y < 2], y[y < 2]), x[y == 2], y[y == 2])
      >>> np.allclose(learner.scores(state, x), acil.scores(acil_state, x))
      True
    """

    def update(model, features, labels, learned_classes, phase):
        if model is not None:
            features = np.concatenate([model.features, features])
            labels = np.concatenate([model.labels, labels])
        return StoredRidgeModel(features, labels,
                                ridge_update(None, expansion, embed(expansion, features), labels, ridge=ridge,
                                             precision="float64"))

    def predict(model, features):
        return ridge_predict(model.ridge_model, features)

    def scores(model, features):
        return ridge_scores(model.ridge_model, features)

    return make_learner("Joint (ridge)", classes, strict=False, update=update, predict=predict, scores=scores)


class DiscriminantModel(NamedTuple):
    """Statistics and the linear rule ``scores = x @ weights + bias`` derived from them."""

    statistics: analytic.Statistics
    weights: np.ndarray
    bias: np.ndarray


def _discriminant_learner(name: str, classes, rule) -> Learner:
    def update(model, features, labels, learned_classes, phase):
        statistics = analytic.init_statistics(features.shape[1]) if model is None else model.statistics
        statistics = analytic.accumulate(statistics, features, labels)
        weights, bias = rule(statistics)
        return DiscriminantModel(statistics, weights, bias)

    def scores(model, features):
        return np.asarray(features, np.float64) @ model.weights + model.bias, model.statistics.class_ids

    return make_learner(name, classes, strict=False, update=update, predict=_argmax_predict(scores), scores=scores)


class MeanModel(NamedTuple):
    """Per-class feature sums and counts (declared-class rows): all nearest class mean needs, C·d numbers."""

    feature_sums: np.ndarray
    class_counts: np.ndarray


def ncm(classes) -> Learner:
    r"""Nearest class mean: :math:`\arg\min_c \|x - \mu_c\|`, from running class sums (no Gram kept).

    The scores are :math:`x^\top \mu_c - \tfrac12 \|\mu_c\|^2` (:math:`= \tfrac12\|x\|^2 - \tfrac12\|x - \mu_c\|^2`,
    so their argmax is the nearest mean), :math:`\mu_c = \frac{1}{n_c}\sum_{y_i = c} x_i` (REFERENCE.md §4: NCM).

    Args:
      classes: declared class ids.

    Returns:
      A :class:`~continual.Learner` named ``"NCM"``, with ``scores`` (one column per learned class).

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``); its ``predict`` raises :class:`~analytic.IntegrityError` before
        the first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.ncm(np.arange(3))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> state.model.class_counts
      array([20, 20, 20])
    """
    declared = np.unique(np.asarray(classes, np.int64))

    def update(model, features, labels, learned_classes, phase):
        sums = np.zeros((declared.size, features.shape[1])) if model is None else model.feature_sums.copy()
        counts = np.zeros(declared.size, np.int64) if model is None else model.class_counts.copy()
        positions = np.searchsorted(declared, labels)
        np.add.at(sums, positions, features)
        np.add.at(counts, positions, 1)
        return MeanModel(sums, counts)

    def scores(model, features):
        learned = model.class_counts > 0
        means = model.feature_sums[learned] / model.class_counts[learned, None]
        return np.asarray(features, np.float64) @ means.T - 0.5 * np.sum(means * means, axis=1), declared[learned]

    return make_learner("NCM", classes, strict=False, update=update, predict=_argmax_predict(scores), scores=scores)


def slda(classes, *, shrinkage: float = 1e-4) -> Learner:
    r"""Streaming LDA (Hayes & Kanan, 2020) with shrinkage ε, from the exact pooled within-class covariance.

    From the additive statistics (REFERENCE.md §4: SLDA; module docstring),

    .. math::
        \Sigma = \tfrac1n \Big(G - \sum_c n_c \mu_c \mu_c^\top\Big), \qquad \Lambda = (\Sigma + \varepsilon I)^{-1},
        \qquad s_c(x) = x^\top \Lambda \mu_c - \tfrac12 \mu_c^\top \Lambda \mu_c.

    Args:
      classes: declared class ids.
      shrinkage: ε added to the covariance's diagonal.

    Returns:
      A :class:`~continual.Learner` named ``"SLDA"`` whose ``scores`` are :math:`s_c(x)`, one column per learned
      class.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``); its ``predict`` raises :class:`~analytic.IntegrityError` before
        the first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.slda(np.arange(3))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> round(float(np.mean(learner.predict(state, x) == y)), 2)
      1.0
    """

    def rule(statistics):
        means = analytic.class_means(statistics).T  # (d, m)
        scatter = analytic.gram_matrix(statistics) - (means * statistics.class_counts) @ means.T
        covariance = scatter / float(statistics.count)
        covariance[np.diag_indices_from(covariance)] += shrinkage
        weights = scipy.linalg.solve(covariance, means, assume_a="pos")
        return weights, -0.5 * np.sum(means * weights, axis=0)

    return _discriminant_learner("SLDA", classes, rule)


class SelectedRidgeModel(NamedTuple):
    """A ridge model and the γ chosen for it on held-out rows."""

    ridge_model: RidgeModel
    ridge: np.ndarray


def ranpac(classes, *, expansion, ridges=tuple(10.0 ** np.arange(-4, 5)), held_out: float = 0.2,
           seed: int = 0) -> Learner:
    r"""RanPAC-style: random projection ``expansion`` (e.g. :func:`analytic.init_buffer`) + ridge chosen per phase.

    Each phase, the rows are shuffled (seed ``(seed, phase)``); the head :math:`(G_{fit} + \gamma I)^{-1} B_{fit}`
    is solved for every γ of ``ridges`` on the statistics plus the first ``1 − held_out`` of the rows, the γ with the
    best accuracy on the rest is kept (first best on ties), and all rows are added before the final solve
    :math:`W = (G + \gamma I)^{-1} B` (REFERENCE.md §4 and §8: RanPAC, which selects γ by MSE instead). A phase too
    small to hold out a row keeps the previous γ (the middle of ``ridges`` at first).

    Args:
      classes: declared class ids.
      expansion: the fixed random projection (``None`` uses the features as they are).
      ridges: candidate γ values.
      held_out: share of each phase's rows held out to choose γ.
      seed: seed of the per-phase shuffle.

    Returns:
      A :class:`~continual.Learner` named ``"RanPAC"`` whose ``scores`` are :math:`\phi(x) W`, one column per
      learned class.

    Raises:
      InputError: ``classes`` is empty. The learner's ``learn`` raises :class:`~analytic.InputError` for a bad phase
        (empty, NaN/Inf, labels outside ``classes``); its ``predict`` raises :class:`~analytic.IntegrityError` before
        the first phase.

    Example:
      Three classes in two phases (classes 0 and 1, then class 2):

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(3), 20)
      >>> x = rng.normal(size=(60, 4)) + 4.0 * np.eye(3, 4)[y]
      >>> learner = continual.ranpac(np.arange(3), expansion=analytic.init_buffer(4, 32, seed=0))
      >>> state = learner.learn(learner.init(), x[y < 2], y[y < 2])
      >>> state = learner.learn(state, x[y == 2], y[y == 2])
      >>> state.learned_classes, learner.predict(state, x[::20])
      (array([0, 1, 2]), array([0, 1, 2]))
      >>> float(state.model.ridge)  # every γ classifies the held-out rows perfectly: the first wins
      0.0001
    """

    def update(model, features, labels, learned_classes, phase):
        x = embed(expansion, features)
        statistics = analytic.init_statistics(x.shape[1]) if model is None else model.ridge_model.statistics
        order = np.random.default_rng((seed, phase)).permutation(labels.size)
        held = order[: int(held_out * labels.size)]
        fit = order[held.size :]
        chosen = float(ridges[len(ridges) // 2]) if model is None else float(model.ridge)
        if held.size:
            partial = analytic.accumulate(statistics, x[fit], labels[fit])
            heads = [analytic.solve(partial, r) for r in ridges]
            accuracies = [np.mean(analytic.predict_labels(h, x[held]) == labels[held]) for h in heads]
            chosen = float(ridges[int(np.argmax(accuracies))])
        statistics = analytic.accumulate(statistics, x, labels)
        head = analytic.solve(statistics, chosen)
        return SelectedRidgeModel(RidgeModel(expansion, statistics, head), np.float64(chosen))

    def predict(model, features):
        return ridge_predict(model.ridge_model, features)

    def scores(model, features):
        return ridge_scores(model.ridge_model, features)

    return make_learner("RanPAC", classes, strict=False, update=update, predict=predict, scores=scores)

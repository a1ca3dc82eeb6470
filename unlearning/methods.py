r"""Every unlearning method behind one interface, exact and gradient-based alike, so a benchmark loops over them.

A method is an :class:`Unlearner`: ``unlearn(task) -> Unlearned``, where the :class:`UnlearningTask` holds frozen
features, which training samples to forget and the test set, and :class:`Unlearned` is the resulting model (a
logit function over its output columns), its wall time and, where it has them, its linear weights and receipt.

Exact methods (closed form, :mod:`unlearning.exact`): :class:`ExactUnlearner` (downdate the trained head) and
:class:`ClosedFormRetrain` (solve the ridge head from scratch on the retained features — the reference it must
equal).

Gradient methods (the conventional route, with the usual settings of the unlearning literature) run on the same features with the one optax-trained head
of :mod:`analytic.gradient` (SGD, momentum 0.9, weight decay 5e-4, batch 256), starting from an "original" head
trained on all the data. :class:`GradientUnlearner` implements

======================  ==========================================================================================
``retrain``             CE on the retained set from a fresh initialisation (the gradient reference)
``FT``                  CE on the retained set from the original head
``GA``                  −CE on the forget set (gradient ascent)
``NegGrad+``            α·CE(retain) − (1 − α)·CE(forget), α = 0.99
``RL``                  CE on the forget set with uniformly random wrong labels, plus CE on the retained set
``l1-sparse``           CE(retain) + α_t ‖θ‖₁, α_t decaying linearly from α to 0 over the epochs
``SalUn``               RL restricted to the weights whose |∇ CE(forget)| at the original head is in the top 50%
``SCRUB``               max-steps −KL_T(teacher ‖ student) on the forget set (first 2 epochs), min-steps
                        CE + KL_T on the retained set, T = 4, teacher = the original head
``BoundaryShrink``      CE on the forget set relabelled with the original head's prediction at its FGSM
                        neighbour :math:`x + \epsilon\,\mathrm{sign}(\nabla_x \mathrm{CE})` (ε = 0.1 × feature RMS)
``ForgetVector``        head frozen; one additive feature perturbation δ minimising CE(retain) + mean
                        relu(forget margin)
======================  ==========================================================================================

Epoch counts follow the usual settings of the unlearning literature; :func:`best_of_grid` keeps the learning rate of a grid with
the smallest Avg. Gap to the retrained model. Methods whose term changes between epochs (ℓ1-sparse's α_t, SCRUB's
alternation) call the trainer once per epoch, which restarts the momentum buffer at each epoch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

import analytic
from analytic import gradient
from unlearning import exact, metrics

DEFAULT_EPOCHS = {"FT": 10, "GA": 5, "NegGrad+": 10, "RL": 10, "l1-sparse": 10, "SalUn": 10, "SCRUB": 3,
                  "BoundaryShrink": 10, "ForgetVector": 10}
NEGGRAD_ALPHA = 0.99
L1_STRENGTH = 5e-4
SALIENCY_SHARE = 0.5
SCRUB_MAX_EPOCHS = 2
SCRUB_TEMPERATURE = 4.0
FGSM_STEP = 0.1


@dataclasses.dataclass(frozen=True)
class UnlearningTask:
    """One forgetting request on frozen features.

    Attributes:
      train_features, train_labels: the data the original model learned (labels 0 … C−1).
      forget_mask: (n,) bool, the training samples to forget.
      test_features, test_labels: held-out data.
      forgotten_classes: the classes forgotten (class-wise forgetting), or ``()`` (random forgetting).
      n_classes: C.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=y == 2, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, forgotten_classes=(2,), n_classes=3)
      >>> task.retain[0].shape, np.unique(task.forget[1]), task.evaluation_test[0].shape
      ((40, 8), array([2]), (20, 8))
    """

    train_features: np.ndarray
    train_labels: np.ndarray
    forget_mask: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    forgotten_classes: tuple = ()
    n_classes: int = 10

    @property
    def retain(self) -> tuple[np.ndarray, np.ndarray]:
        """The retained training set ``(features, labels)`` (RA, the reference's training data)."""
        return self.train_features[~self.forget_mask], self.train_labels[~self.forget_mask]

    @property
    def forget(self) -> tuple[np.ndarray, np.ndarray]:
        """The forget set ``(features, labels)`` (UA, the MIA's targets)."""
        return self.train_features[self.forget_mask], self.train_labels[self.forget_mask]

    @property
    def evaluation_test(self) -> tuple[np.ndarray, np.ndarray]:
        """The test set without the forgotten classes (TA, MIA non-members, output comparisons)."""
        keep = ~np.isin(self.test_labels, self.forgotten_classes)
        return self.test_features[keep], self.test_labels[keep]


@dataclasses.dataclass(frozen=True)
class Unlearned:
    """The model a method produced.

    Attributes:
      name: the method.
      logits: features (n, d) -> scores (n, m) over the output columns.
      class_ids: (m,) class id of each output column.
      seconds: wall time of the unlearning call.
      weights: (d, m) linear weights (for the weight error), or ``None``.
      learning_rate: the learning rate used (gradient methods), or ``None``.
      receipt: the :class:`unlearning.exact.Receipt` (exact methods), or ``None``.
      parameters: the model's parameters (networks: a pytree, or what the method keeps), or ``None``.

    Example:
      >>> model = Unlearned("first two features", logits=lambda f: f[:, :2], class_ids=np.array([3, 7]),
      ...                   seconds=0.0)
      >>> model.predict(np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 5.0]]))
      array([7, 3])
    """

    name: str
    logits: Callable[[np.ndarray], np.ndarray]
    class_ids: np.ndarray
    seconds: float
    weights: np.ndarray | None = None
    learning_rate: float | None = None
    receipt: exact.Receipt | None = None
    parameters: object = None

    def predict(self, features) -> np.ndarray:
        """The class id of each row's largest score: ``class_ids[argmax(logits(features))]``."""
        return self.class_ids[np.argmax(self.logits(features), axis=1)]


class Unlearner(Protocol):
    """Anything with a ``name`` and ``unlearn(task) -> Unlearned``.

    Attributes:
      name: the method's name in reports.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> head = unlearning.learn(unlearning.init_unlearning_head(8, 0.1), x, y)
      >>> for method in (ExactUnlearner(head), ClosedFormRetrain(ridge=0.1)):
      ...     print(method.name, method.unlearn(task).weights.shape)
      exact downdate (8, 3)
      retrain (closed form) (8, 3)
    """

    name: str

    def unlearn(self, task: UnlearningTask) -> Unlearned: ...


# ------------------------------------------------------------------------------------------------------- exact


def _linear(name, head: analytic.Head, seconds, receipt=None) -> Unlearned:
    weights = head.weights
    return Unlearned(name=name, logits=lambda x: np.asarray(x, np.float64) @ weights, class_ids=head.class_ids,
                     seconds=seconds, weights=weights, receipt=receipt)


@dataclasses.dataclass(frozen=True)
class ExactUnlearner:
    """Downdate a trained :class:`unlearning.exact.UnlearningHead` (classes from stored statistics when it keeps
    per-class statistics, else from their features), with a receipt unless ``receipt=False``.

    ``unlearn(task)`` forgets ``task.forgotten_classes`` one by one with :func:`unlearning.forget_class`, or else
    the samples of ``task.forget`` with :func:`unlearning.forget_samples`, and solves the head: the result equals
    :class:`ClosedFormRetrain` with the head's ridge (to rounding). ``unlearn`` raises
    :class:`analytic.IntegrityError` where those functions do (e.g. samples the head never learned).

    Attributes:
      original: the head trained on all of ``task``'s training data.
      receipt: return the last request's :class:`unlearning.exact.Receipt` in :attr:`Unlearned.receipt`.
      name: the method's name in reports.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> head = unlearning.learn(unlearning.init_unlearning_head(8, 0.1), x, y)
      >>> model = ExactUnlearner(head).unlearn(task)
      >>> np.allclose(model.weights, ClosedFormRetrain(ridge=0.1).unlearn(task).weights), model.receipt.route
      (True, 'refactor')
    """

    original: exact.UnlearningHead
    receipt: bool = True
    name: str = "exact downdate"

    def unlearn(self, task: UnlearningTask) -> Unlearned:
        """The head downdated by the task's request, solved, as an :class:`Unlearned` with its receipt."""
        start = time.perf_counter()
        head, receipt = self.original, None
        if task.forgotten_classes:
            from_statistics = head.class_parts is not None
            for class_id in task.forgotten_classes:
                rows = None if from_statistics else task.train_features[task.train_labels == class_id]
                head, receipt = exact.forget_class(head, class_id, rows, receipt=self.receipt)
        else:
            head, receipt = exact.forget_samples(head, *task.forget, receipt=self.receipt)
        solved = exact.solve(head)
        return _linear(self.name, solved, time.perf_counter() - start, receipt)


@dataclasses.dataclass(frozen=True)
class ClosedFormRetrain:
    r"""Solve the ridge head from scratch on the retained features (the exact methods' reference).

    ``unlearn(task)`` accumulates the statistics of ``task.retain`` in float64 batches and solves
    :math:`W = (G + \gamma I)^{-1} B` (REFERENCE.md §1); classes absent from the retained set have no column.

    Attributes:
      ridge: γ.
      batch_size: rows accumulated at a time (bounds the memory, not the result).
      name: the method's name in reports.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> model = ClosedFormRetrain(ridge=0.1).unlearn(task)
      >>> model.weights.shape, model.class_ids, model.receipt is None
      ((8, 3), array([0, 1, 2]), True)
    """

    ridge: float
    batch_size: int = 8192
    name: str = "retrain (closed form)"

    def unlearn(self, task: UnlearningTask) -> Unlearned:
        """The ridge head solved on ``task.retain``, as an :class:`Unlearned`."""
        start = time.perf_counter()
        features, labels = task.retain
        batches = ((features[i : i + self.batch_size], labels[i : i + self.batch_size])
                   for i in range(0, len(labels), self.batch_size))
        statistics = analytic.fit(analytic.init_statistics(features.shape[1]), batches)
        solved = analytic.solve(statistics, self.ridge)
        return _linear(self.name, solved, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------- gradient


class _Losses(NamedTuple):
    """Every gradient method's loss over one model's pure ``logits(params, inputs)``, built once per model by
    :func:`_losses_of` (the trainer compiles one step per loss function, so each must keep its identity)."""

    logits: Callable
    ce: Callable
    ascent: Callable
    neggrad_plus: Callable
    retain_and_relabelled: Callable
    l1_sparse: Callable
    scrub_max: Callable
    scrub_min: Callable
    forget_vector: Callable


def _distill_kl(student_logits, teacher_logits):
    """:math:`T^2\\,\\mathrm{KL}(\\mathrm{softmax}(t/T) \\| \\mathrm{softmax}(s/T))`, batch mean."""
    t = SCRUB_TEMPERATURE
    teacher = jax.nn.log_softmax(teacher_logits / t)
    student = jax.nn.log_softmax(student_logits / t)
    return t * t * jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - student), axis=1))


@functools.cache
def _losses_of(logits: Callable) -> _Losses:
    """The losses of the module table for the model ``logits(params, inputs)``: a head or a whole network."""

    def ce(params, batch):
        return gradient.cross_entropy(logits(params, batch["features"]), batch["labels"])

    def ascent(params, forget):
        return -ce(params, forget)

    def neggrad_plus(params, retain, forget, alpha):
        return alpha * ce(params, retain) - (1.0 - alpha) * ce(params, forget)

    def retain_and_relabelled(params, retain, relabelled):
        return ce(params, retain) + ce(params, relabelled)

    def l1_sparse(params, retain, strength):
        return ce(params, retain) + strength * sum(jnp.abs(leaf).sum() for leaf in jax.tree.leaves(params))

    def scrub_max(params, forget, teacher):
        inputs = forget["features"]
        return -_distill_kl(logits(params, inputs), logits(teacher, inputs))

    def scrub_min(params, retain, teacher):
        inputs = retain["features"]
        student = logits(params, inputs)
        return gradient.cross_entropy(student, retain["labels"]) + _distill_kl(student, logits(teacher, inputs))

    def forget_vector(delta, retain, forget, model):
        retained = logits(model, retain["features"] + delta["delta"][None])
        forgotten = logits(model, forget["features"] + delta["delta"][None])
        labels = forget["labels"]
        true = jnp.take_along_axis(forgotten, labels[:, None], axis=1)[:, 0]
        others = jnp.where(jax.nn.one_hot(labels, forgotten.shape[1]) > 0, -jnp.inf, forgotten).max(axis=1)
        return gradient.cross_entropy(retained, retain["labels"]) + jnp.mean(jax.nn.relu(true - others))

    return _Losses(jax.jit(logits), ce, ascent, neggrad_plus, retain_and_relabelled, l1_sparse, scrub_max,
                   scrub_min, forget_vector)


_HEAD = _losses_of(gradient.head_logits)


def _stream(features, labels) -> dict:
    return {"features": np.asarray(features, np.float32), "labels": np.asarray(labels, np.int32)}


def _random_other_labels(labels, n_classes, rng) -> np.ndarray:
    return (labels + rng.integers(1, n_classes, size=len(labels))) % n_classes


def _saliency_mask(losses: _Losses, params, forget):
    grads = jax.grad(losses.ce)(params, forget)
    magnitudes = jnp.concatenate([jnp.abs(leaf).ravel() for leaf in jax.tree.leaves(grads)])
    threshold = jnp.quantile(magnitudes, 1.0 - SALIENCY_SHARE)
    return jax.tree.map(lambda g: (jnp.abs(g) >= threshold).astype(jnp.float32), grads)


def _fgsm_labels(losses: _Losses, params, forget) -> np.ndarray:
    def loss(inputs):
        return losses.ce(params, {"features": inputs, "labels": forget["labels"]})

    inputs = jnp.asarray(forget["features"])
    step = FGSM_STEP * jnp.sqrt(jnp.mean(inputs * inputs))
    neighbours = inputs + step * jnp.sign(jax.grad(loss)(inputs))
    return np.asarray(jnp.argmax(losses.logits(params, neighbours), axis=1), np.int32)


@dataclasses.dataclass(frozen=True)
class GradientUnlearner:
    """A gradient-based unlearning method (see the module table) on the optax head of :mod:`analytic.gradient`.

    Attributes:
      method: one of :data:`GRADIENT_METHODS`.
      original: the head trained on all the data (``retrain`` ignores it except for its architecture).
      learning_rate: SGD learning rate.
      epochs: unlearning epochs (default: :data:`DEFAULT_EPOCHS`; required for ``retrain``).
      hidden: hidden width of the head for ``retrain`` (``None``: linear), matching ``original``.
      seed: shuffling, random labels and initialisation.
      batch_size: minibatch rows (256, the usual setting).

    ``unlearn(task)`` raises :class:`analytic.InputError` for a method outside :data:`GRADIENT_METHODS`, or for
    ``retrain`` without ``epochs``.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> original = analytic.gradient.fit_softmax_head(x, y, n_classes=3, epochs=1, learning_rate=0.1)
      >>> model = GradientUnlearner("NegGrad+", original, learning_rate=0.01, epochs=1).unlearn(task)
      >>> model.name, model.weights.shape, model.predict(x[:4]).shape, model.learning_rate
      ('NegGrad+', (8, 3), (4,), 0.01)
    """

    method: str
    original: tuple
    learning_rate: float
    epochs: int | None = None
    hidden: int | None = None
    seed: int = 0
    batch_size: int = 256

    @property
    def name(self) -> str:
        """The method's name in reports: ``method``."""
        return self.method

    def unlearn(self, task: UnlearningTask) -> Unlearned:
        """Run the method on ``task`` (its wall time, compilation included, in :attr:`Unlearned.seconds`)."""
        fresh = lambda: gradient.init_head(task.train_features.shape[1], task.n_classes,  # noqa: E731
                                           hidden=self.hidden, seed=self.seed)
        params, shift, seconds = _unlearn_by_gradient(
            self.method, self.original, fresh, _HEAD, task, learning_rate=self.learning_rate, epochs=self.epochs,
            seed=self.seed, batch_size=self.batch_size)
        weights = np.asarray(params[0]["weights"], np.float64) if len(params) == 1 else None

        def logits(features):
            return np.asarray(_HEAD.logits(params, jnp.asarray(features, jnp.float32) + shift[None, :]))

        return Unlearned(name=self.method, logits=logits, class_ids=np.arange(task.n_classes), seconds=seconds,
                         weights=weights, learning_rate=self.learning_rate)


def _unlearn_by_gradient(method: str, original, fresh: Callable[[], object], losses: _Losses, task: UnlearningTask,
                         *, learning_rate: float, epochs: int | None, seed: int, batch_size: int):
    """Run one method of the module table on any model: its parameters start at ``original`` (``retrain``: at
    ``fresh()``), its losses are ``losses``. Returns ``(params, input shift, wall seconds)``; the shift is zero except
    for ForgetVector.

    Raises:
      analytic.InputError: a method outside :data:`GRADIENT_METHODS`, or ``retrain`` without ``epochs``.
    """
    if method not in GRADIENT_METHODS:
        raise analytic.InputError(f"unknown gradient method {method!r}; choose from {GRADIENT_METHODS}")
    if method == "retrain" and epochs is None:
        raise analytic.InputError("retrain needs epochs= (its full training schedule)")
    retain, forget = _stream(*task.retain), _stream(*task.forget)
    epochs = epochs if epochs is not None else DEFAULT_EPOCHS[method]
    optimizer = gradient.make_optimizer(learning_rate)

    def train(params, loss, data, n=epochs, **kw):
        return gradient.train(params, loss, data, optimizer=optimizer, epochs=n, batch_size=batch_size, seed=seed,
                              **kw)[0]

    start = time.perf_counter()
    run = _GradientRun(original, fresh, losses, task, retain, forget, epochs, train, np.random.default_rng(seed))
    params, shift = _GRADIENT_RUNS[method](run)
    params = jax.block_until_ready(params)
    seconds = time.perf_counter() - start
    return params, jnp.zeros(task.train_features.shape[1:], jnp.float32) if shift is None else shift, seconds


class _GradientRun(NamedTuple):
    """What every gradient method's loop reads: the parameters it starts from, fresh ones (``retrain``), the model's
    losses, the task, the retain and forget streams, the number of epochs, the training loop
    ``train(params, loss, data, n=epochs, **kw)`` and a seeded generator."""

    original: object
    fresh: Callable[[], object]
    losses: _Losses
    task: UnlearningTask
    retain: dict
    forget: dict
    epochs: int
    train: Callable
    rng: np.random.Generator


def _retrain(run):
    return run.train(run.fresh(), run.losses.ce, run.retain), None


def _fine_tune(run):
    return run.train(run.original, run.losses.ce, run.retain), None


def _gradient_ascent(run):
    return run.train(run.original, run.losses.ascent, run.forget), None


def _neggrad_plus_run(run):
    return run.train(run.original, run.losses.neggrad_plus, (run.retain, run.forget), loss_args=(NEGGRAD_ALPHA,)), None


def _random_labels(run, mask=None):
    labels = _random_other_labels(run.forget["labels"], run.task.n_classes, run.rng).astype(np.int32)
    relabelled = {**run.forget, "labels": labels}
    return run.train(run.original, run.losses.retain_and_relabelled, (run.retain, relabelled), grad_mask=mask), None


def _salun(run):
    return _random_labels(run, mask=_saliency_mask(run.losses, run.original, run.forget))


def _l1_sparse_run(run):
    params = run.original
    for epoch in range(run.epochs):
        strength = L1_STRENGTH * (1.0 - epoch / run.epochs)
        params = run.train(params, run.losses.l1_sparse, run.retain, n=1, loss_args=(strength,))
    return params, None


def _scrub(run):
    original = params = run.original
    for epoch in range(run.epochs):
        if epoch < SCRUB_MAX_EPOCHS:
            params = run.train(params, run.losses.scrub_max, run.forget, n=1, loss_args=(original,))
        params = run.train(params, run.losses.scrub_min, run.retain, n=1, loss_args=(original,))
    return params, None


def _boundary_shrink(run):
    relabelled = {**run.forget, "labels": _fgsm_labels(run.losses, run.original, run.forget)}
    return run.train(run.original, run.losses.ce, relabelled), None


def _forget_vector_run(run):
    delta = {"delta": jnp.zeros(run.task.train_features.shape[1:], jnp.float32)}
    delta = run.train(delta, run.losses.forget_vector, (run.retain, run.forget), loss_args=(run.original,))
    return run.original, delta["delta"]


_GRADIENT_RUNS = {
    "retrain": _retrain, "FT": _fine_tune, "GA": _gradient_ascent, "NegGrad+": _neggrad_plus_run,
    "RL": _random_labels, "l1-sparse": _l1_sparse_run, "SalUn": _salun, "SCRUB": _scrub,
    "BoundaryShrink": _boundary_shrink, "ForgetVector": _forget_vector_run,
}
GRADIENT_METHODS = tuple(_GRADIENT_RUNS)


# -------------------------------------------------------------------------------------------------- evaluation


def evaluate(model: Unlearned, task: UnlearningTask, *, mia_samples: int | None = None, seed: int = 0) -> dict:
    r"""UA, RA, TA and MIA-efficacy (percent) of ``model`` on ``task`` (the field's evaluation conventions), and on
    the same test set as TA: ``TA_top5`` (top-5 accuracy; 100 for a model with five output columns or fewer, NaN
    when a diverged model's logits are NaN), ``TA_f1_macro`` and ``TA_balanced`` (balanced accuracy), in percent.

    .. math::
        \mathrm{UA} = 100 - \mathrm{acc}(D_f), \qquad \mathrm{RA} = \mathrm{acc}(D_r), \qquad
        \mathrm{TA} = \mathrm{acc}(D_{\text{test}} \setminus \text{forgotten classes})

    (REFERENCE.md §5); MIA as :func:`unlearning.metrics.mia_efficacy`, with members from the retained set,
    non-members from the same test set as TA and the forget set as targets.

    Args:
      model: the model a method produced.
      task: the task it unlearned.
      mia_samples: cap on the MIA's non-members (and as many members), a seeded subset; ``None``: all.
      seed: the MIA subsets' seed.

    Returns:
      ``{"UA", "RA", "TA", "TA_top5", "TA_f1_macro", "TA_balanced", "MIA"}``, each a float in percent; all NaN for
      a model whose outputs are not finite (a diverged gradient run).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> head = unlearning.learn(unlearning.init_unlearning_head(8, 0.1), x, y)
      >>> scores = evaluate(ExactUnlearner(head).unlearn(task), task)
      >>> sorted(scores)
      ['MIA', 'RA', 'TA', 'TA_balanced', 'TA_f1_macro', 'TA_top5', 'UA']
      >>> scores == evaluate(ClosedFormRetrain(ridge=0.1).unlearn(task), task), scores["TA_top5"]
      (True, 100.0)
    """
    (retain_x, retain_y), (forget_x, forget_y) = task.retain, task.forget
    test_x, test_y = task.evaluation_test
    retain_logits, forget_logits, test_logits = model.logits(retain_x), model.logits(forget_x), model.logits(test_x)
    if not all(np.isfinite(logits).all() for logits in (retain_logits, forget_logits, test_logits)):
        return dict.fromkeys(("UA", "RA", "TA", "TA_top5", "TA_f1_macro", "TA_balanced", "MIA"), float("nan"))
    pick = model.class_ids
    confidence = lambda logits, labels: metrics.true_class_confidence(logits, labels, pick)  # noqa: E731
    test_predicted = pick[np.argmax(test_logits, axis=1)]
    return {
        "UA": 100.0 - metrics.accuracy(pick[np.argmax(forget_logits, axis=1)], forget_y),
        "RA": metrics.accuracy(pick[np.argmax(retain_logits, axis=1)], retain_y),
        "TA": metrics.accuracy(test_predicted, test_y),
        "TA_top5": metrics.top_k_accuracy(test_y, test_logits, k=5, class_ids=pick),
        "TA_f1_macro": metrics.f1_macro(test_y, test_predicted),
        "TA_balanced": metrics.balanced_accuracy(test_y, test_predicted),
        "MIA": metrics.mia_efficacy(confidence(retain_logits, retain_y), confidence(test_logits, test_y),
                                    confidence(forget_logits, forget_y), max_samples=mia_samples, seed=seed),
    }


def compare_outputs(model: Unlearned, reference: Unlearned, task: UnlearningTask) -> dict:
    r"""Weight error, max |logit difference|, argmax agreement (percent) and mean KL against ``reference`` on the
    evaluation test set (NaN where the output spaces differ).

    .. math::
        \frac{\|W - W_r\|_F}{\|W_r\|_F}, \qquad \max_{i,j} |z_{ij} - z^r_{ij}|, \qquad
        \frac{1}{n} \sum_i \mathrm{KL}(p^r_i \,\|\, p_i)

    (REFERENCE.md §5, the output-level checks for exact methods). The weight error is also NaN when either
    model has no linear weights.

    Args:
      model: the model to check.
      reference: the model it should equal, usually the retrained one.
      task: the task (its evaluation test set is used).

    Returns:
      ``{"weight_error", "max_logit_diff", "argmax_agreement", "mean_kl"}``, floats.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> head = unlearning.learn(unlearning.init_unlearning_head(8, 0.1), x, y)
      >>> gaps = compare_outputs(ExactUnlearner(head).unlearn(task), ClosedFormRetrain(ridge=0.1).unlearn(task), task)
      >>> gaps["weight_error"] < 1e-10, gaps["max_logit_diff"] < 1e-10, gaps["argmax_agreement"]
      (True, True, 100.0)
    """
    test_x, _ = task.evaluation_test
    logits, reference_logits = model.logits(test_x), reference.logits(test_x)
    same_space = np.array_equal(model.class_ids, reference.class_ids)
    return {
        "weight_error": metrics.relative_weight_error(model.weights, reference.weights)
        if same_space and model.weights is not None and reference.weights is not None else float("nan"),
        "max_logit_diff": metrics.max_logit_difference(logits, reference_logits) if same_space else float("nan"),
        "argmax_agreement": metrics.argmax_agreement(model.predict(test_x), reference.predict(test_x)),
        "mean_kl": metrics.mean_kl(logits, reference_logits) if same_space else float("nan"),
    }


def _gap_or_infinity(gap: float) -> float:
    return math.inf if math.isnan(gap) else gap


def best_of_grid(make: Callable[[float], Unlearner], learning_rates, task: UnlearningTask, reference: dict,
                 **evaluate_options) -> tuple[Unlearned, dict, list[dict]]:
    r"""Run ``make(lr).unlearn(task)`` for each learning rate; keep the one with the smallest Avg. Gap to the
    ``reference`` metrics (the usual settings of the unlearning literature). Returns (best model, its metrics, every trial's metrics).

    The Avg. Gap is :func:`unlearning.metrics.avg_gap`, :math:`\frac14 \sum_{m \in \{UA, MIA, RA, TA\}}
    |m - m_{\text{retrain}}|` (REFERENCE.md §5, §4: the learning rate searched and the best Avg. Gap kept); the
    first of equal gaps wins, and a trial that diverged (:func:`evaluate`: NaN scores, so a NaN gap) only wins when
    every trial diverged.

    Args:
      make: the method for a learning rate, e.g. ``lambda lr: GradientUnlearner("FT", original, lr)``.
      learning_rates: the grid, a non-empty iterable of floats.
      task: the task.
      reference: :func:`evaluate` of the retrained model.
      **evaluate_options: passed to :func:`evaluate` (``mia_samples``, ``seed``).

    Returns:
      ``(model, scores, trials)``: the best model, its :func:`evaluate` scores with ``"avg_gap"`` added, and every
      trial's scores with its ``"learning_rate"``, in grid order.

    Raises:
      ValueError: ``learning_rates`` is empty.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(60, 8)), np.arange(60) % 3
      >>> task = UnlearningTask(x, y, forget_mask=np.arange(60) < 6, test_features=rng.normal(size=(30, 8)),
      ...                       test_labels=np.arange(30) % 3, n_classes=3)
      >>> original = analytic.gradient.fit_softmax_head(x, y, n_classes=3, epochs=1, learning_rate=0.1)
      >>> reference = evaluate(ClosedFormRetrain(ridge=0.1).unlearn(task), task)
      >>> make = lambda lr: GradientUnlearner("FT", original, learning_rate=lr, epochs=1)
      >>> model, scores, trials = best_of_grid(make, [0.01, 0.1], task, reference)
      >>> [trial["learning_rate"] for trial in trials], scores["avg_gap"] == min(t["avg_gap"] for t in trials)
      ([0.01, 0.1], True)
    """
    trials = []
    for learning_rate in learning_rates:
        model = make(learning_rate).unlearn(task)
        scores = evaluate(model, task, **evaluate_options)
        scores["avg_gap"] = metrics.avg_gap(scores, reference)
        trials.append((model, scores))
    model, scores = min(trials, key=lambda trial: _gap_or_infinity(trial[1]["avg_gap"]))
    return model, scores, [{"learning_rate": m.learning_rate, **s} for m, s in trials]

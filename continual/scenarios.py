r"""Continual-learning scenarios: which training rows arrive in which phase.

A :class:`Scenario` is a list of index arrays into a labelled training set, built from the labels alone, so any
dataset the core loads (or any feature matrix) can be streamed. Settings follow the field's conventions
(the field's evaluation conventions):

* :func:`class_incremental` — B{base}-Inc{k}: a seeded class order, ``base`` classes in phase 0 and ``k`` new classes
  in each later phase; every class lives in exactly one phase (strict class-incremental learning, CIL).
* :func:`si_blurry` — generalized CIL in the Si-Blurry style: phases introduce new classes in uneven numbers, a share
  of every class's samples leaks into other phases (blurry boundaries), so classes reappear.
* :func:`long_tailed` — subsample the training set so class sizes decay geometrically,
  :math:`n_c = n_{max} \rho^{r_c/(C-1)}` for the class of rank :math:`r_c` (imbalance ratio ρ = n_min/n_max).
* :func:`online` — the same phases, fed in small batches; the learner predicts each batch before learning it.

``SEEDS`` holds the customary class-order seeds, 1993 first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analytic import InputError

SEEDS = (1993, 1994, 1995)
"""The customary class-order seeds (1993 first; report at least three, REFERENCE.md §5): the default ``seed`` of
:func:`class_incremental`, :func:`si_blurry` and :func:`long_tailed` is ``SEEDS[0]``."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Rows of a training set split into phases.

    Attributes:
      name: e.g. ``"B10-Inc2"``.
      phases: one int64 index array per phase (rows of the training set, in arrival order).
      new_classes: per phase, the sorted class ids first seen in that phase (the columns of the accuracy matrix).
      classes: every class id the scenario declares, in class order.
      strict: True when a class never reappears after its phase (strict CIL), False for generalized CIL.
      batch_size: ``None`` for offline phases; an int for an online stream of batches of this size.

    Example:
      >>> scenario = continual.class_incremental(np.repeat(np.arange(6), 4), base=2, increment=2)
      >>> scenario.name, scenario.n_phases, scenario.strict, scenario.batch_size
      ('B2-Inc2', 3, True, None)
      >>> [rows.size for rows in scenario.phases], [c.tolist() for c in scenario.new_classes]
      ([8, 8, 8], [[0, 5], [3, 4], [1, 2]])
      >>> len(scenario.batches(0))  # an offline phase is one batch
      1
    """

    name: str
    phases: tuple[np.ndarray, ...]
    new_classes: tuple[np.ndarray, ...]
    classes: np.ndarray
    strict: bool
    batch_size: int | None = None

    @property
    def n_phases(self) -> int:
        """Number of phases T."""
        return len(self.phases)

    def batches(self, phase: int) -> list[np.ndarray]:
        """The row index arrays the learner receives in ``phase``: the whole phase, or its online batches."""
        rows = self.phases[phase]
        if self.batch_size is None:
            return [rows]
        return [rows[start : start + self.batch_size] for start in range(0, rows.size, self.batch_size)]


def class_order(classes, seed: int) -> np.ndarray:
    """A seeded permutation of the class ids (``np.random.default_rng(seed)``).

    Args:
      classes: class ids (or labels: duplicates are dropped).
      seed: the permutation's seed, e.g. one of :data:`SEEDS`.

    Returns:
      (C,) int64 array, the distinct class ids in the seeded order.

    Example:
      >>> continual.class_order(range(5), continual.SEEDS[0])
      array([4, 0, 2, 3, 1])
      >>> np.array_equal(continual.class_order([3, 3, 1, 4, 0, 2], 1993), continual.class_order(range(5), 1993))
      True
    """
    return np.random.default_rng(seed).permutation(np.unique(np.asarray(classes, np.int64)))


def class_incremental(labels, *, base: int, increment: int, seed: int = SEEDS[0]) -> Scenario:
    """B{base}-Inc{increment}: ``base`` classes in phase 0 (``base=0``: ``increment``), then ``increment`` per phase.

    Rows of each phase are shuffled with the same seed. Raises :class:`~analytic.InputError` when the class count
    does not split into whole phases. The classes follow :func:`class_order` (REFERENCE.md §5, continual: e.g.
    B50-Inc5 on 100 classes is 11 phases).

    Args:
      labels: (n,) integer class ids of the training rows.
      base: classes in phase 0 (0: a first phase of ``increment`` classes, "B0").
      increment: new classes in each later phase.
      seed: seed of the class order and of the row shuffle.

    Returns:
      A strict :class:`Scenario` named ``"B{base}-Inc{increment}"``.

    Raises:
      InputError: ``labels`` is not a non-empty 1-D integer array, ``increment < 1``, or the classes do not split
        into ``base`` plus whole increments.

    Example:
      >>> labels = np.repeat(np.arange(10), 3)
      >>> scenario = continual.class_incremental(labels, base=4, increment=2)
      >>> scenario.name, scenario.n_phases, [c.size for c in scenario.new_classes]
      ('B4-Inc2', 4, [4, 2, 2, 2])
      >>> continual.class_incremental(labels, base=4, increment=4)
      Traceback (most recent call last):
      ...
      analytic.errors.InputError: 10 classes do not split into a base of 4 and increments of 4
    """
    labels = _labels(labels)
    order = class_order(labels, seed)
    first = base if base > 0 else increment
    if increment < 1 or first > order.size or (order.size - first) % increment:
        raise InputError(
            f"{order.size} classes do not split into a base of {base} and increments of {increment}"
        )
    groups = [order[:first]] + [order[s : s + increment] for s in range(first, order.size, increment)]
    rng = np.random.default_rng(seed)
    phases = tuple(rng.permutation(np.flatnonzero(np.isin(labels, group))) for group in groups)
    return Scenario(
        name=f"B{base}-Inc{increment}",
        phases=phases,
        new_classes=tuple(np.sort(g) for g in groups),
        classes=order,
        strict=True,
    )


def si_blurry(labels, *, n_phases: int = 5, blurry_share: float = 0.1, seed: int = SEEDS[0]) -> Scenario:
    """Generalized CIL in the Si-Blurry style: uneven new-class splits and blurry phase boundaries.

    Classes are split at ``n_phases − 1`` random cut points of the seeded class order (every phase gets at least one
    new class). Each class keeps ``1 − blurry_share`` of its rows in its own phase; the other rows go to phases drawn
    uniformly at random among *all* phases, so a class can show up before its own phase (that phase then counts it as
    new) and reappear after it. ``new_classes`` records first appearances, so a phase whose classes all leaked
    earlier has none.

    Args:
      labels: (n,) integer class ids of the training rows.
      n_phases: number of phases, between 1 and the number of classes.
      blurry_share: share of each class's rows sent to a random phase, in [0, 1).
      seed: seed of the class order, the cut points and the row assignment.

    Returns:
      A generalized (``strict=False``) :class:`Scenario` named ``"Si-Blurry-{n_phases}"``; every row arrives once.

    Raises:
      InputError: ``labels`` is not a non-empty 1-D integer array, or ``n_phases`` / ``blurry_share`` is out of range.

    Example:
      >>> labels = np.repeat(np.arange(6), 10)
      >>> scenario = continual.si_blurry(labels, n_phases=3, blurry_share=0.2)
      >>> scenario.name, scenario.strict, [c.tolist() for c in scenario.new_classes]
      ('Si-Blurry-3', False, [[0, 2, 3, 5], [1, 4], []])
      >>> np.array_equal(np.sort(np.concatenate(scenario.phases)), np.arange(60))  # every row once
      True
    """
    labels = _labels(labels)
    order = class_order(labels, seed)
    if not 1 <= n_phases <= order.size:
        raise InputError(f"n_phases must be between 1 and the {order.size} classes, got {n_phases}")
    if not 0.0 <= blurry_share < 1.0:
        raise InputError(f"blurry_share must be in [0, 1), got {blurry_share}")
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, order.size), n_phases - 1, replace=False))
    groups = np.split(order, cuts)
    home = np.empty(labels.size, np.int64)
    for phase, group in enumerate(groups):
        home[np.isin(labels, group)] = phase
    blurry = rng.random(labels.size) < blurry_share
    home[blurry] = rng.integers(0, n_phases, int(blurry.sum()))
    phases = tuple(rng.permutation(np.flatnonzero(home == p)) for p in range(n_phases))
    return Scenario(
        name=f"Si-Blurry-{n_phases}",
        phases=phases,
        new_classes=_first_appearances(labels, phases),
        classes=order,
        strict=False,
    )


def long_tailed(labels, scenario: Scenario, *, imbalance_ratio: float, seed: int = SEEDS[0]) -> Scenario:
    r"""Keep :math:`n_c = \lceil n_{max} \rho^{r_c/(C-1)} \rceil` rows of the class at rank :math:`r_c` of the
    scenario's class order (ρ = ``imbalance_ratio``), dropping the others from every phase.

    :math:`n_{max}` is the size of the smallest class in ``labels``, so the head class keeps that many rows and the
    tail class :math:`\lceil \rho\, n_{max} \rceil`; the kept rows are drawn with ``seed``.

    Args:
      labels: (n,) integer class ids of the training rows (those ``scenario`` was built from).
      scenario: the scenario to subsample.
      imbalance_ratio: ρ = n_min / n_max, in (0, 1].
      seed: seed of the row draw.

    Returns:
      The :class:`Scenario` with fewer rows per phase, named ``"{name}-LT{ρ}"`` (``new_classes`` recomputed).

    Raises:
      InputError: ``labels`` is not a non-empty 1-D integer array, or ``imbalance_ratio`` is outside (0, 1].

    Example:
      >>> labels = np.repeat(np.arange(6), 10)
      >>> tailed = continual.long_tailed(labels, continual.class_incremental(labels, base=2, increment=2),
      ...                                imbalance_ratio=0.1)
      >>> tailed.name, np.bincount(labels[np.concatenate(tailed.phases)])[tailed.classes]  # in class order
      ('B2-Inc2-LT0.1', array([10,  7,  4,  3,  2,  1]))
    """
    labels = _labels(labels)
    if not 0.0 < imbalance_ratio <= 1.0:
        raise InputError(f"imbalance_ratio must be in (0, 1], got {imbalance_ratio}")
    rng = np.random.default_rng(seed)
    classes = scenario.classes
    n_max = min(int(np.sum(labels == c)) for c in classes)
    keep = np.zeros(labels.size, bool)
    for rank, c in enumerate(classes):
        size = int(np.ceil(n_max * imbalance_ratio ** (rank / max(classes.size - 1, 1))))
        keep[rng.permutation(np.flatnonzero(labels == c))[:size]] = True
    phases = tuple(rows[keep[rows]] for rows in scenario.phases)
    return dataclasses.replace(
        scenario,
        name=f"{scenario.name}-LT{imbalance_ratio:g}",
        phases=phases,
        new_classes=_first_appearances(labels, phases),
    )


def online(scenario: Scenario, *, batch_size: int) -> Scenario:
    """The same phases fed as a stream of ``batch_size``-row batches (predict each batch, then learn it).

    :func:`~continual.run` then records the prequential accuracy: each batch is predicted before it is learned.

    Args:
      scenario: the scenario to stream.
      batch_size: rows per batch (the last batch of a phase may be smaller).

    Returns:
      The :class:`Scenario` with ``batch_size`` set, named ``"{name}-online{batch_size}"``.

    Raises:
      InputError: ``batch_size`` is not positive.

    Example:
      >>> scenario = continual.class_incremental(np.repeat(np.arange(6), 4), base=2, increment=2)
      >>> stream = continual.online(scenario, batch_size=3)
      >>> stream.name, [rows.size for rows in stream.batches(0)]
      ('B2-Inc2-online3', [3, 3, 2])
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    return dataclasses.replace(scenario, name=f"{scenario.name}-online{batch_size}", batch_size=int(batch_size))


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.size == 0:
        raise InputError(f"labels must be a non-empty 1-D integer array, got shape {y.shape} {y.dtype}")
    return y.astype(np.int64)


def _first_appearances(labels: np.ndarray, phases) -> tuple[np.ndarray, ...]:
    seen: set[int] = set()
    new = []
    for rows in phases:
        present = set(np.unique(labels[rows]).tolist())
        new.append(np.array(sorted(present - seen), np.int64))
        seen |= present
    return tuple(new)

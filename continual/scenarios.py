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
    """A seeded permutation of the class ids (``np.random.default_rng(seed)``)."""
    return np.random.default_rng(seed).permutation(np.unique(np.asarray(classes, np.int64)))


def class_incremental(labels, *, base: int, increment: int, seed: int = SEEDS[0]) -> Scenario:
    """B{base}-Inc{increment}: ``base`` classes in phase 0 (``base=0``: ``increment``), then ``increment`` per phase.

    Rows of each phase are shuffled with the same seed. Raises :class:`~analytic.InputError` when the class count
    does not split into whole phases.
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
    new) and reappear after it.
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
    scenario's class order (ρ = ``imbalance_ratio``), dropping the others from every phase."""
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
    """The same phases fed as a stream of ``batch_size``-row batches (predict each batch, then learn it)."""
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

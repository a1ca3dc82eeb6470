r"""How an unlearning head turns its statistics into weights, one object per solver.

An :class:`~unlearning.UnlearningHead` names its solver (``"cholesky"`` or ``"recursive"``); :func:`solver_of` gives
the object that owns everything that differs between them: computing the kept state from the statistics, folding a
few rows into it (the low-rank route of a small request), and reading the weights from it.

``"cholesky"``
    the Cholesky factor of :math:`G + \gamma I` with a low-rank (Woodbury) correction (:mod:`unlearning.factor`);
    up to d/8 rows are folded in before it is refactored.
``"recursive"``
    the recursive least-squares form :math:`(R, W)` with :math:`R = (G + \gamma I)^{-1}` (:mod:`analytic.recursive`),
    which keeps the weights solved after every request; up to d rows are folded in before it is resynchronized.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

import analytic
from unlearning.factor import corrected_factor, fold_rows, solve_corrected

FOLD_FRACTION = 1 / 8  # the factor takes up to d/8 rows as a low-rank correction; refactor above


@dataclasses.dataclass(frozen=True)
class Solver:
    """What one solver owns (module docstring). Stateless: one instance per solver."""

    name: ClassVar[str]
    refresh_route: ClassVar[str]  # the route reported when the kept state is recomputed from the statistics

    def compute(self, statistics: analytic.Statistics, ridge: float) -> Any:
        """The kept state, computed from the statistics."""
        raise NotImplementedError

    def weights(self, kept, statistics: analytic.Statistics, ridge: float) -> analytic.Head:
        """The weights :math:`W = (G + \\gamma I)^{-1} B` from the kept state (in step with ``statistics``)."""
        raise NotImplementedError

    def fold_limit(self, dim: int) -> float:
        """How many rows may be folded into the kept state before it is recomputed."""
        raise NotImplementedError

    def fold(self, kept, rows: tuple, sign: int, dropped: tuple) -> tuple[Any, str]:
        """The kept state with ``rows`` (features, targets) added (``sign`` = +1) or removed (−1) and the classes
        ``dropped`` by the request removed; and the route's name."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Cholesky(Solver):
    """A kept Cholesky factor of :math:`G + \\gamma I` with a low-rank correction (:mod:`unlearning.factor`)."""

    name: ClassVar[str] = "cholesky"
    refresh_route: ClassVar[str] = "refactor"

    def compute(self, statistics, ridge):
        return corrected_factor(analytic.factorize(statistics, ridge))

    def weights(self, kept, statistics, ridge):
        weights = solve_corrected(kept, analytic.cross_matrix(statistics))
        return analytic.Head(weights=weights, class_ids=statistics.class_ids, ridge=ridge)

    def fold_limit(self, dim):
        return FOLD_FRACTION * dim

    def fold(self, kept, rows, sign, dropped):  # the factor depends on G only: dropped columns do not touch it
        return fold_rows(kept, rows[0], sign), "update" if sign > 0 else "downdate"


@dataclasses.dataclass(frozen=True)
class Recursive(Solver):
    """The recursive least-squares form, weights solved after every request (:mod:`analytic.recursive`)."""

    name: ClassVar[str] = "recursive"
    refresh_route: ClassVar[str] = "resync"

    def compute(self, statistics, ridge):
        return analytic.recursive_from_statistics(statistics, ridge)

    def weights(self, kept, statistics, ridge):
        return analytic.recursive_solve(kept)

    def fold_limit(self, dim):
        return dim

    def fold(self, kept, rows, sign, dropped):
        step = analytic.recursive_learn if sign > 0 else analytic.recursive_forget
        return _without_classes(step(kept, *rows), dropped), "recursive"


def _without_classes(recursive: analytic.RecursiveHead, dropped) -> analytic.RecursiveHead:
    if not dropped:
        return recursive
    keep = ~np.isin(recursive.class_ids, dropped)
    return dataclasses.replace(
        recursive,
        weights=recursive.weights[:, keep],
        class_ids=recursive.class_ids[keep],
        class_counts=recursive.class_counts[keep],
    )


SOLVERS = {solver.name: solver for solver in (Cholesky(), Recursive())}


def solver_of(name: str) -> Solver:
    """The :class:`Solver` named ``name`` (an unlearning head's ``solver`` field).

    Raises:
      analytic.InputError: an unknown name.

    Example:
      >>> solver_of("recursive").refresh_route
      'resync'
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise analytic.InputError(f"solver must be one of {tuple(SOLVERS)}, got {name!r}") from None

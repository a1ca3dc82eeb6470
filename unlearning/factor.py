r"""A kept Cholesky factor that follows small learn/forget requests by a low-rank correction (Woodbury).

The factor :math:`A_0 = U^\top U` of :math:`G + \gamma I` was computed at some point; since then m rows
:math:`V` (m, d) were added (:math:`\sigma_i = +1`) or removed (:math:`\sigma_i = -1`), so the current matrix is

.. math::
    A = A_0 + V^\top \Sigma V, \qquad \Sigma = \mathrm{diag}(\sigma).

Rather than changing U (a rank-k Cholesky downdate is a sequential, d-step recurrence), the correction is kept
beside it, whitened by the factor, :math:`Z = U^{-\top} V^\top` (d, m), with the m × m capacitance matrix
:math:`K = \Sigma + V A_0^{-1} V^\top = \Sigma + Z^\top Z` (:math:`\Sigma^{-1} = \Sigma`). By the Woodbury identity
(README: the math in brief)

.. math::
    A^{-1} R = U^{-1} \big(S - Z K^{-1} Z^\top S\big), \qquad S = U^{-\top} R,

so a request of k rows costs one triangular solve with k right-hand sides, :math:`k d^2` (BLAS-3), and a solve for
the weights costs :math:`O(d^2 C + m d C + m^3)`, against :math:`d^3/3` to refactor. :mod:`unlearning.exact`
refactors once m would exceed d/8, which bounds both the cost of a solve and the rounding drift of a long stream.

Positive definiteness. With :math:`A_0` positive definite, the Haynsworth inertia formula applied to
:math:`\begin{pmatrix} A_0 & V^\top \\ V & -\Sigma \end{pmatrix}` gives
:math:`\mathrm{In}(A) + \mathrm{In}(-\Sigma) = \mathrm{In}(A_0) + \mathrm{In}(-K)`: A is positive definite exactly
when K has as many negative eigenvalues as Σ has −1 entries and none near zero. A request that breaks this (rows
that were never learned) is refused with :class:`analytic.IntegrityError`, and the factor is left as it was.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import scipy.linalg

import analytic

INERTIA_TOLERANCE = 1e-12  # an eigenvalue of K within this (relative to its largest) counts as zero


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["factorization", "signs", "whitened", "capacitance"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class CorrectedFactor:
    r"""The factor of :math:`A_0` and the correction :math:`V^\top \Sigma V` (module docstring).

    Attributes:
      factorization: :class:`analytic.Factorization` of :math:`A_0`.
      signs: (m,) σ, +1 for an added row and −1 for a removed one.
      whitened: (d, m) :math:`Z = U^{-\top} V^\top`.
      capacitance: (m, m) :math:`K = \Sigma + Z^\top Z`.
    """

    factorization: analytic.Factorization
    signs: np.ndarray
    whitened: np.ndarray
    capacitance: np.ndarray

    @property
    def n_rows(self) -> int:
        """m, the rows folded in since the factorization."""
        return self.signs.shape[0]


def corrected_factor(factorization: analytic.Factorization) -> CorrectedFactor:
    """A freshly factorized :math:`A_0` with no correction."""
    d = factorization.upper.shape[0]
    return CorrectedFactor(factorization=factorization, signs=np.zeros(0),
                           whitened=np.zeros((d, 0)), capacitance=np.zeros((0, 0)))


def fold_rows(factor: CorrectedFactor, rows: np.ndarray, sign: int) -> CorrectedFactor:
    r"""The factor of :math:`A + \sigma X^\top X` for k rows X: extends Σ, Z and K (module docstring).

    Args:
      factor: the current corrected factor (not modified).
      rows: (k, d) rows X, float64.
      sign: +1 to add the rows (learn), −1 to remove them (forget).

    Raises:
      analytic.IntegrityError: the result would not be positive definite (removing rows that were never added).
    """
    if sign not in (1, -1):
        raise analytic.InputError(f"sign must be +1 or -1, got {sign}")
    rows = np.asarray(rows, np.float64)
    d = factor.factorization.upper.shape[0]
    if rows.ndim != 2 or rows.shape[1] != d:
        raise analytic.InputError(f"rows must have shape (k, {d}), got {rows.shape}")
    new_whitened = _whiten(factor, rows.T)  # U⁻ᵀ Xᵀ
    whitened = np.hstack([factor.whitened, new_whitened])
    cross = new_whitened.T @ whitened  # X A₀⁻¹ Vᵀ over old and new rows: (k, m + k)
    m = factor.n_rows
    signs = np.concatenate([factor.signs, np.full(rows.shape[0], float(sign))])
    capacitance = np.empty((signs.size, signs.size))
    capacitance[:m, :m] = factor.capacitance
    capacitance[m:, :] = cross
    capacitance[:m, m:] = cross[:, :m].T
    capacitance[m:, m:] = (cross[:, m:] + cross[:, m:].T) / 2 + np.diag(signs[m:])
    eigenvalues = np.linalg.eigvalsh(capacitance)
    if not np.isfinite(eigenvalues).all():
        raise analytic.IntegrityError("the factor or the rows contain NaN or Inf")
    near_zero = np.abs(eigenvalues) <= INERTIA_TOLERANCE * max(1.0, np.abs(eigenvalues).max())
    if near_zero.any() or np.sum(eigenvalues < 0) != np.sum(signs < 0):
        raise analytic.IntegrityError(
            "the downdate would make G + γI lose positive definiteness: these rows were not learned"
        )
    return CorrectedFactor(factorization=factor.factorization, signs=signs, whitened=whitened,
                           capacitance=capacitance)


def solve_corrected(factor: CorrectedFactor, rhs: np.ndarray) -> np.ndarray:
    r""":math:`A^{-1} R = U^{-1} (S - Z K^{-1} Z^\top S)` with :math:`S = U^{-\top} R` (module docstring)."""
    if factor.n_rows == 0:
        return factor.factorization.solve(rhs)
    whitened_rhs = _whiten(factor, rhs)
    correction = scipy.linalg.solve(factor.capacitance, factor.whitened.T @ whitened_rhs, assume_a="sym",
                                    check_finite=False)
    return scipy.linalg.solve_triangular(factor.factorization.upper, whitened_rhs - factor.whitened @ correction,
                                         lower=False, check_finite=False)


def _whiten(factor: CorrectedFactor, rhs: np.ndarray) -> np.ndarray:
    """:math:`U^{-\\top}` rhs (only the upper triangle of the kept factor is read)."""
    return scipy.linalg.solve_triangular(factor.factorization.upper, rhs, trans="T", lower=False,
                                         check_finite=False)

r"""Blocked rank-k update and downdate of an upper Cholesky factor, in float64 NumPy/SciPy.

Given :math:`A = U^\top U` (U upper triangular) and k rows :math:`X` (k, d), find the factor :math:`U'` of

.. math::
    U'^\top U' = U^\top U + \sigma X^\top X, \qquad \sigma = +1 \text{ (learn) or } -1 \text{ (forget)},

in :math:`O(k d^2)` operations instead of the :math:`d^3/3` of refactoring (README: the math in brief and precision). This is the
"downdate" route of :mod:`unlearning.exact`: :math:`A = G + \gamma I` and :math:`X` the rows being forgotten.

Block step. Split the columns into a leading block of width b and the rest,
:math:`U = \begin{pmatrix} U_{11} & U_{12} \\ 0 & U_{22} \end{pmatrix}`, :math:`X = (X_1\; X_2)`. With

.. math::
    P = X_1 U_{11}^{-1}, \quad S = P^\top P, \quad V^\top V = I + \sigma S \;(\text{Cholesky}, b \times b),

the leading block row of :math:`U'` and the rows that remain to be folded into the trailing block are

.. math::
    U'_{11} = V U_{11}, \qquad U'_{12} = V^{-\top} (U_{12} + \sigma P^\top X_2),

    X'_2 = X_2 - P\,[\,U_{12} + \sigma (I + V)^{-1} V^{-\top} (P^\top X_2 - S U_{12})\,],

after which :math:`U'^\top_{22} U'_{22} = U_{22}^\top U_{22} + \sigma X_2'^\top X'_2` is the same problem on the
trailing block. The step is the block form of a (hyperbolic, for σ = −1) orthogonal transformation
:math:`\begin{pmatrix} U \\ X \end{pmatrix} \to \begin{pmatrix} U' \\ X' \end{pmatrix}`; :math:`X'_2` is
determined up to a k × k rotation, which leaves :math:`X_2'^\top X'_2` unchanged. Every product is a BLAS-3 call,
the Python loop runs d / b times, and the cost is about :math:`(2k + 2.5 b)\, d^2` flops. The blocks are small, so
the BLAS runs single-threaded here: a threaded BLAS spends more time synchronizing than computing on them (and
stalls badly on a loaded machine).

Positive definiteness. A downdate is possible exactly when :math:`A - X^\top X` stays positive definite; block by
block this is the Cholesky of :math:`I - S`. When it fails the rows were not part of A, and the request is refused
with :class:`analytic.IntegrityError` (the input factor is never modified).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

import analytic

BLOCK_WIDTH = 32
_trsm = blas.get_blas_funcs("trsm", dtype=np.float64)


@threadpool_limits.wrap(limits=1, user_api="blas")
def cholesky_update(upper: np.ndarray, rows: np.ndarray, sign: int) -> np.ndarray:
    r"""The upper Cholesky factor of :math:`U^\top U + \sigma X^\top X` (see the module docstring).

    Args:
      upper: (d, d) factor U in its upper triangle (the lower triangle is ignored; not modified).
      rows: (k, d) rows X.
      sign: +1 to add the rows (update), −1 to remove them (downdate).

    Returns:
      A new (d, d) upper-triangular float64 factor, C-ordered (so its transpose is a Fortran-ordered lower factor
      that LAPACK reads without a copy).

    Raises:
      analytic.IntegrityError: a downdate would make the matrix lose positive definiteness.
    """
    if sign not in (1, -1):
        raise analytic.InputError(f"sign must be +1 or -1, got {sign}")
    result = np.array(upper, dtype=np.float64, order="C")  # below the diagonal: ignored, zeroed block by block
    trailing = np.array(rows, dtype=np.float64)
    d = result.shape[0]
    if trailing.ndim != 2 or trailing.shape[1] != d:
        raise analytic.InputError(f"rows must have shape (k, {d}), got {trailing.shape}")
    for start in range(0, d, BLOCK_WIDTH):
        stop = min(start + BLOCK_WIDTH, d)
        width = stop - start
        result[stop:, start:stop] = 0.0  # cho_factor leaves garbage below the diagonal
        leading = np.triu(result[start:stop, start:stop])
        projected = scipy.linalg.solve_triangular(  # P = X₁ U₁₁⁻¹, i.e. U₁₁ᵀ Pᵀ = X₁ᵀ
            leading, trailing[:, :width].T, trans="T", lower=False, check_finite=False
        ).T
        overlap = projected.T @ projected  # S = PᵀP
        try:
            v = scipy.linalg.cholesky(np.eye(width) + sign * overlap, lower=False, check_finite=False)
        except np.linalg.LinAlgError as error:
            raise analytic.IntegrityError(
                "the downdate would make G + γI lose positive definiteness: these rows were not learned"
            ) from error
        if not np.isfinite(v).all():
            raise analytic.IntegrityError("the factor or the rows contain NaN or Inf")
        result[start:stop, start:stop] = np.triu(v @ leading)  # U'₁₁ = V U₁₁ (upper times upper)
        if stop == d:
            break
        upper_right = result[start:stop, stop:]  # U₁₂
        rest = trailing[:, width:]  # X₂
        projected_rest = projected.T @ rest  # PᵀX₂
        both = _trsm(1.0, v, np.hstack([upper_right + sign * projected_rest, projected_rest - overlap @ upper_right]),
                    trans_a=1)  # V⁻ᵀ [U₁₂ + σPᵀX₂, PᵀX₂ − S U₁₂]
        mixing = _trsm(float(sign), v + np.eye(width), both[:, d - stop :])  # σ (I + V)⁻¹ V⁻ᵀ (PᵀX₂ − S U₁₂)
        trailing = rest - projected @ (upper_right + mixing)  # X'₂
        result[start:stop, stop:] = both[:, : d - stop]  # U'₁₂
    return result

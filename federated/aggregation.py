r"""Analytic federated learning (AFL): one round, the same head as centralized ridge for any split.

Two equivalent server laws are provided.

*Summed-statistics form* (README: the math in brief): clients send :math:`G_k = X_k^\top X_k`, :math:`B_k = X_k^\top Y_k`; the
server adds them, :math:`G = \sum_k G_k`, :math:`B = \sum_k B_k`, and solves :math:`W = (G + \gamma I)^{-1} B` —
:func:`aggregate_statistics`, then :func:`analytic.solve`.

*Paper form* (absolute aggregation): client k solves its own regularized ridge and sends
:math:`W_k = C_k^{-1} B_k` with :math:`C_k = X_k^\top X_k + \gamma I` (:func:`local_solution`). Two clients u, v
combine as

.. math::
    W = (I - R_u C_v + R_u C_v C^{-1} C_v) W_u + (I - R_v C_u + R_v C_u C^{-1} C_u) W_v,
    \qquad C = C_u + C_v, \quad R_u = C_u^{-1}

(:func:`aggregate_pair`), which folds to :math:`W = (\sum_k C_k)^{-1} \sum_k C_k W_k = (G + K\gamma I)^{-1} B`
(:func:`aggregate_solutions`). The regularization intermediary (:func:`remove_regularization`) then removes the
accumulated :math:`K\gamma`:

.. math::
    W^\star = W + (K\gamma - \gamma') (C - K\gamma I + \gamma' I)^{-1} W = (G + \gamma' I)^{-1} B,

which for :math:`\gamma' = 0` is the paper's :math:`W + K\gamma (C - K\gamma I)^{-1} W = G^{-1} B` (pooled G full
rank); a target :math:`\gamma' > 0` gives the centralized ridge head with that ridge.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
import numpy as np
import scipy.linalg

import analytic


def client_statistics(features, labels, dim: int, *, precision: str = "float64", frac_bits: int = 12):
    """A client's statistics :math:`G_k, B_k, n_k`; a client with no samples gets empty statistics.

    Features that are a JAX array are learned on their own device (the statistics live there; fixed precision
    needs no x64, float64 does); host features on the host.
    """
    stats = analytic.init_statistics(dim, precision=precision, frac_bits=frac_bits)
    if np.shape(features)[0] == 0:
        return stats
    if isinstance(features, jax.Array):
        stats = jax.device_put(stats, next(iter(features.devices())))
    return analytic.accumulate(stats, features, labels)


def aggregate_statistics(uploads: Iterable[analytic.Statistics]) -> analytic.Statistics:
    r"""Summed form: :math:`G = \sum_k G_k`, :math:`B = \sum_k B_k` (bit-exact and order-free in fixed precision)."""
    return functools.reduce(analytic.merge, uploads)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["weights", "regularized_gram", "class_ids", "n_clients"],
    meta_fields=["ridge"],
)
@dataclasses.dataclass(frozen=True)
class LocalSolution:
    r"""The paper form's message (or an aggregate of several): :math:`W = C^{-1} B` and :math:`C`.

    Attributes:
      weights: (d, m) :math:`W_k = (X_k^\top X_k + \gamma I)^{-1} X_k^\top Y_k`.
      regularized_gram: (d, d) symmetric :math:`C_k = X_k^\top X_k + \gamma I`.
      class_ids: (m,) the agreed class ids (column order).
      n_clients: () number of clients folded in (K), each of which added γI to C.
      ridge: the clients' common γ.
    """

    weights: np.ndarray
    regularized_gram: np.ndarray
    class_ids: np.ndarray
    n_clients: np.ndarray
    ridge: float


def local_solution(stats: analytic.Statistics, ridge: float, class_ids) -> LocalSolution:
    r"""Client side of the paper form: :math:`C_k = G_k + \gamma I`, :math:`W_k = C_k^{-1} B_k` (γ > 0 keeps
    :math:`C_k` invertible even when the client holds fewer samples than dimensions, or none)."""
    if not float(ridge) > 0:
        raise analytic.InputError(f"the clients' ridge must be positive, got {ridge}")
    stats = analytic.with_classes(stats, np.asarray(class_ids, np.int64))
    head = analytic.solve(stats, ridge)
    regularized = analytic.gram_matrix(stats)
    regularized[np.diag_indices_from(regularized)] += float(ridge)
    return LocalSolution(head.weights, regularized, stats.class_ids, np.int64(1), float(ridge))


def _cho(matrix: np.ndarray):
    return scipy.linalg.cho_factor(matrix, lower=False, check_finite=False)


def aggregate_pair(u: LocalSolution, v: LocalSolution) -> LocalSolution:
    r"""Absolute aggregation of two (groups of) clients, the paper's law (module docstring).

    :math:`W = (I - R_u C_v + R_u C_v C^{-1} C_v) W_u + (I - R_v C_u + R_v C_u C^{-1} C_u) W_v`.
    """
    if u.ridge != v.ridge or not np.array_equal(u.class_ids, v.class_ids):
        raise analytic.IntegrityError("solutions to combine must share the ridge and the class ids")
    c_u, c_v = u.regularized_gram, v.regularized_gram
    combined = c_u + c_v
    eye = np.eye(c_u.shape[0])
    r_u_c_v = scipy.linalg.cho_solve(_cho(c_u), c_v, check_finite=False)  # R_u C_v
    r_v_c_u = scipy.linalg.cho_solve(_cho(c_v), c_u, check_finite=False)  # R_v C_u
    combined_factor = _cho(combined)
    c_inv_c_v = scipy.linalg.cho_solve(combined_factor, c_v, check_finite=False)  # C⁻¹ C_v
    c_inv_c_u = scipy.linalg.cho_solve(combined_factor, c_u, check_finite=False)  # C⁻¹ C_u
    weights = (eye - r_u_c_v + r_u_c_v @ c_inv_c_v) @ u.weights + (eye - r_v_c_u + r_v_c_u @ c_inv_c_u) @ v.weights
    return LocalSolution(weights, combined, u.class_ids, np.int64(u.n_clients + v.n_clients), u.ridge)


def push_solution(partials: tuple[LocalSolution, ...], solution: LocalSolution) -> tuple[LocalSolution, ...]:
    """Add one client to a balanced pairwise reduction: partial aggregates of equal size are combined at once.

    ``partials`` holds at most log₂K + 1 aggregates of decreasing size, like the digits of a binary counter, so
    every :func:`aggregate_pair` call joins groups of comparable size.
    """
    partials = (*partials, solution)
    while len(partials) > 1 and partials[-1].n_clients == partials[-2].n_clients:
        partials = (*partials[:-2], aggregate_pair(partials[-2], partials[-1]))
    return partials


def combine_partials(partials: tuple[LocalSolution, ...]) -> LocalSolution:
    """The aggregate of every client in a :func:`push_solution` reduction (smallest groups joined first)."""
    if not partials:
        raise analytic.IntegrityError("no client solution has been aggregated")
    return functools.reduce(lambda total, part: aggregate_pair(part, total), reversed(partials[:-1]), partials[-1])


def aggregate_solutions(solutions: Iterable[LocalSolution]) -> LocalSolution:
    r"""Absolute aggregation of all clients, :math:`W = (\sum_k C_k)^{-1} \sum_k C_k W_k`, by pairwise laws.

    The law is associative, so the pairs are joined as a balanced tree (:func:`push_solution`). A sequential fold
    (one client at a time into the running aggregate) is equal in exact arithmetic but loses accuracy: joining a
    client with :math:`C_v \approx \gamma I` to an aggregate of norm :math:`\|C_u\|` cancels terms of size
    :math:`\|C_u\|/\gamma`, and the errors add up over K steps (measured on synthetic data, d = 8, γ = 0.1:
    relative error 5e-10 after 1,000 Dirichlet-split clients sequentially, at most 3e-13 as a balanced tree).
    """
    return combine_partials(functools.reduce(push_solution, solutions, ()))


def remove_regularization(aggregate: LocalSolution, target_ridge: float = 0.0) -> analytic.Head:
    r"""Regularization intermediary: :math:`W^\star = W + (K\gamma - \gamma')(C - K\gamma I + \gamma' I)^{-1} W`.

    Returns the head :math:`(G + \gamma' I)^{-1} B` of the pooled data; ``target_ridge`` γ' = 0 (the paper) needs
    the pooled Gram G full rank.
    """
    if not float(target_ridge) >= 0:
        raise analytic.InputError(f"target_ridge must be non-negative, got {target_ridge}")
    accumulated = float(aggregate.n_clients) * aggregate.ridge  # Kγ
    shifted = aggregate.regularized_gram.copy()
    shifted[np.diag_indices_from(shifted)] += float(target_ridge) - accumulated  # G + γ'I
    try:
        factor = _cho(shifted)
    except np.linalg.LinAlgError as error:
        raise analytic.IntegrityError(
            f"G + γ'I is not positive definite (γ' = {target_ridge:g}): the pooled Gram is rank deficient, "
            "choose target_ridge > 0"
        ) from error
    correction = scipy.linalg.cho_solve(factor, aggregate.weights, check_finite=False)
    weights = aggregate.weights + (accumulated - float(target_ridge)) * correction
    return analytic.Head(weights=weights, class_ids=aggregate.class_ids, ridge=float(target_ridge))

"""The packed form of a symmetric matrix: its upper triangle (diagonal included) as a 1-D array, row by row.

A symmetric (d, d) Gram holds d(d+1)/2 distinct numbers; clients send it packed, and per-class Grams can be stored
packed to halve their memory.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _upper_mask(dim: int) -> np.ndarray:
    """Boolean (d, d) mask of the upper triangle; boolean indexing walks it in row-major order."""
    return np.triu(np.ones((dim, dim), bool))


def packed_length(dim: int) -> int:
    """Number of entries :math:`d(d+1)/2` of a packed upper triangle.

    Args:
      dim: the matrix dimension d.

    Example:
      >>> packed_length(3)
      6
    """
    return dim * (dim + 1) // 2


def pack_upper(matrix: np.ndarray) -> np.ndarray:
    """Row-major upper triangle (diagonal included) of a (d, d) matrix as a 1-D array.

    Args:
      matrix: a (d, d) NumPy array.

    Example:
      >>> pack_upper(np.array([[1, 2], [2, 3]]))
      array([1, 2, 3])
    """
    return matrix[_upper_mask(matrix.shape[0])]


def unpack_upper(packed: np.ndarray, dim: int) -> np.ndarray:
    """The full symmetric (d, d) matrix whose packed upper triangle is ``packed``.

    Args:
      packed: a (d(d+1)/2,) NumPy array, as :func:`pack_upper` gives it.
      dim: the matrix dimension d.

    Example:
      >>> unpack_upper(np.array([1, 2, 3]), 2)
      array([[1, 2],
             [2, 3]])
    """
    mask = _upper_mask(dim)
    matrix = np.empty((dim, dim), packed.dtype)
    matrix.T[mask] = packed  # the lower triangle, by symmetry
    matrix[mask] = packed
    return matrix

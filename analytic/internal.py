"""Helpers the library's own packages (``federated``, ``continual``, ``unlearning``, the benchmarks) share with the
core. Not part of the public API: names here may change between releases.

- validation (:mod:`analytic.validation`): ``check_features``, ``check_labels``, ``check_class_ids``, ... — every
  argument check, raising :class:`~analytic.InputError`;
- exact arithmetic (:mod:`analytic.precision`): ``precision_of``, ``quantize``, ``int_sum_fits``, ``x64_enabled``;
- packing (:mod:`analytic.packing`): ``pack_upper``, ``unpack_upper``, ``packed_length`` (the upper triangle of a
  symmetric matrix, row by row);
- state internals: ``host_moments`` / ``from_host_moments`` (moments as host arrays, fixed point as int64),
  ``check_leaves``, ``factorize_matrix`` (the host Cholesky of a matrix).
"""

from analytic.packing import pack_upper, packed_length, unpack_upper
from analytic.precision import int_sum_fits, precision_of, quantize, x64_enabled
from analytic.ridge import factorize_matrix
from analytic.state import check_leaves
from analytic.statistics import empty_like, from_host_moments, host_moments
from analytic.validation import (
    check_choice,
    check_class_ids,
    check_declared_class_ids,
    check_feature_shape,
    check_features,
    check_int,
    check_label_shape,
    check_labels,
    check_mask,
    check_mask_shape,
    check_number,
    check_ridge,
    check_shift,
    check_targets,
    target_matrix,
)

__all__ = [
    "check_choice",
    "check_class_ids",
    "check_declared_class_ids",
    "check_feature_shape",
    "check_features",
    "check_int",
    "check_label_shape",
    "check_labels",
    "check_leaves",
    "check_mask",
    "check_mask_shape",
    "check_number",
    "check_ridge",
    "check_shift",
    "check_targets",
    "empty_like",
    "factorize_matrix",
    "from_host_moments",
    "host_moments",
    "int_sum_fits",
    "pack_upper",
    "packed_length",
    "precision_of",
    "quantize",
    "target_matrix",
    "unpack_upper",
    "x64_enabled",
]

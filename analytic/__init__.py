"""Closed-form (analytic) learning on frozen features: exact ridge heads as additive sufficient statistics.

The core objects are :class:`Statistics` (the additive state), :class:`Head` (solved weights) and
:class:`RecursiveHead` (the recursive least-squares form). Every operation runs on the host for NumPy states and in
JAX (under ``jax.jit`` too) for device states (README: where it runs). Submodules: ``analytic.device`` (the JAX
path), ``analytic.words`` (exact 64-bit integers as int32 words), ``analytic.distributed`` (device meshes and
processes), ``analytic.module`` (the head as a flax module), ``analytic.backbones`` (frozen flax backbones and weight
import), ``analytic.features`` (cached feature extraction), ``analytic.data`` (datasets), ``analytic.expansion``
(buffer / Gaussian-kernel layers), ``analytic.gradient`` (the optax-trained comparison head), ``analytic.metrics``
(top-k accuracy, macro F1, balanced accuracy).
"""

from analytic.errors import FileFormatError, InputError, IntegrityError
from analytic.expansion import expand, init_buffer, init_gaussian_kernel
from analytic.packing import pack_upper, packed_length, unpack_upper
from analytic.persistence import load, save
from analytic.validation import check_class_ids, check_feature_shape, check_features, check_label_shape, check_labels
from analytic.precision import int_sum_fits, quantize
from analytic.recursive import (
    RecursiveHead,
    init_recursive,
    recursive_forget,
    recursive_from_statistics,
    recursive_learn,
    recursive_solve,
)
from analytic.ridge import (
    Factorization,
    Head,
    class_gram,
    class_means,
    cross_matrix,
    factorize,
    factorize_matrix,
    gram_matrix,
    predict,
    predict_labels,
    solve,
)
from analytic.statistics import (
    accumulate,
    drop_classes,
    fit,
    from_host_moments,
    host_moments,
    init_statistics,
    merge,
    select_classes,
    state_hash,
    subtract,
    with_classes,
)
from analytic.state import (
    Moments,
    Statistics,
    check_leaves,
    mean_shift,
    x64_enabled,
)

__version__ = "0.1.0"

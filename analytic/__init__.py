"""Closed-form (analytic) learning on frozen features: exact ridge heads as additive sufficient statistics.

The core objects are :class:`Statistics` (the additive state), :class:`Head` (solved weights) and
:class:`RecursiveHead` (the recursive least-squares form). Every operation runs on the host for NumPy states and in
JAX (under ``jax.jit`` too) for device states (README: where it runs). Submodules: ``analytic.device`` (the JAX
path), ``analytic.words`` (exact 64-bit integers as int32 words), ``analytic.distributed`` (device meshes and
processes), ``analytic.module`` (the head as a flax module), ``analytic.backbones`` (frozen flax backbones and
weight import), ``analytic.features`` (cached feature extraction), ``analytic.data`` (datasets),
``analytic.expansion`` (buffer, Gaussian-kernel and random Fourier layers), ``analytic.gradient`` (the optax-trained
comparison head), ``analytic.metrics`` (top-k accuracy, macro F1, balanced accuracy), ``analytic.plotting`` (the one
figure style), ``analytic.internal`` (helpers the library's other packages share with the core; not public API).

Naming: ``init_*`` builds an empty state, ``accumulate`` / ``fit`` add samples (one batch / a stream), ``solve``
turns statistics into weights (:class:`Head`), ``select_ridge`` chooses γ, ``predict`` / ``predict_labels`` apply them.
"""

from analytic.errors import FileFormatError, InputError, IntegrityError
from analytic.expansion import (
    BufferLayer,
    GaussianKernelLayer,
    RandomFourierLayer,
    expand,
    init_buffer,
    init_gaussian_kernel,
    init_random_fourier,
)
from analytic.persistence import load, save
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
    gram_matrix,
    predict,
    predict_labels,
    solve,
)
from analytic.selection import RidgeChoice, select_ridge
from analytic.state import Moments, Statistics, mean_shift
from analytic.statistics import (
    accumulate,
    drop_classes,
    fit,
    init_statistics,
    merge,
    select_classes,
    state_hash,
    subtract,
    with_classes,
)

__version__ = "0.1.0"

__all__ = [
    "BufferLayer",
    "Factorization",
    "FileFormatError",
    "GaussianKernelLayer",
    "Head",
    "InputError",
    "IntegrityError",
    "Moments",
    "RandomFourierLayer",
    "RecursiveHead",
    "RidgeChoice",
    "Statistics",
    "accumulate",
    "class_gram",
    "class_means",
    "cross_matrix",
    "drop_classes",
    "expand",
    "factorize",
    "fit",
    "gram_matrix",
    "init_buffer",
    "init_gaussian_kernel",
    "init_random_fourier",
    "init_recursive",
    "init_statistics",
    "load",
    "mean_shift",
    "merge",
    "predict",
    "predict_labels",
    "recursive_forget",
    "recursive_from_statistics",
    "recursive_learn",
    "recursive_solve",
    "save",
    "select_classes",
    "select_ridge",
    "solve",
    "state_hash",
    "subtract",
    "with_classes",
]

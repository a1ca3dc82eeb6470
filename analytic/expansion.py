"""Fixed feature expansions applied between a frozen backbone and a ridge head.

Three expansions, each drawn once from an integer seed and never trained:

* the ACIL random *buffer layer* ``φ(z) = act(z W_B)``;
* the GKEAL *Gaussian-kernel layer* ``φ_j(z) = exp(−‖z − c_j‖² / (2σ²))``;
* *random Fourier features* ``φ(z) = √(2/w) cos(z Ω + b)`` (Rahimi & Recht 2007), whose inner products approximate
  the Gaussian (RBF) kernel: the kernel version of the federated ridge peer Fed3R.

A layer is a frozen dataclass registered as a JAX pytree. Its *data fields* are the arrays (float32) and its
*meta fields* (marked ``metadata={"static": True}``) are JSON-serializable settings, so a layer can be saved as
arrays + JSON and rebuilt with ``cls(**fields)``; ``EXPANSIONS`` maps each ``kind`` to its class.

``apply_expansion`` is the pure, jittable map; ``expand`` applies it to a large host array in fixed-size chunks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from analytic.errors import InputError
from analytic.validation import check_choice, check_int, check_number

__all__ = [
    "ACTIVATIONS",
    "BufferLayer",
    "EXPANSIONS",
    "ExpansionLayer",
    "GaussianKernelLayer",
    "RandomFourierLayer",
    "apply_expansion",
    "expand",
    "init_buffer",
    "init_gaussian_kernel",
    "init_random_fourier",
]

_HIGHEST = jax.lax.Precision.HIGHEST

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    # The exact (erf) form, as torch.nn.GELU uses by default.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "identity": lambda x: x,
}


def _static(default=dataclasses.MISSING):
    """A meta (static, JSON-serializable) dataclass field."""
    return dataclasses.field(default=default, metadata={"static": True})


def _check_meta(layer, expected_kind: str) -> None:
    # Runs on every pytree unflatten too, where the array fields may be tracers or placeholders:
    # only the meta fields are checked here; array shapes are checked by `expand`.
    if layer.kind != expected_kind:
        raise InputError(f"{type(layer).__name__} must have kind={expected_kind!r}, got {layer.kind!r}")
    check_int("in_dim", layer.in_dim)
    check_int("width", layer.width)
    check_int("seed", layer.seed, minimum=-(2**63))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BufferLayer:
    r"""ACIL random buffer layer (Zhuang et al., ACIL, 2022).

    .. math::

        φ(z) = \mathrm{act}(z W_B), \qquad W_B ∈ \mathbb{R}^{d_{in} × w},\quad
        (W_B)_{ij} \sim \mathcal{U}(−1/\sqrt{d_{in}},\, 1/\sqrt{d_{in}})

    no bias, frozen. ``width`` (w) is the paper's "buffer size" (8192 on CIFAR-100, 16384 on ImageNet).
    Two layers with the same ``in_dim``, ``width`` and ``seed`` share ``W_B``; with different activations they
    give DS-AL's two streams over one projection.

    Attributes:
      weights: ``W_B``, float32 of shape ``(in_dim, width)``.
      kind: ``"buffer"``.
      in_dim: input (backbone) feature dimension.
      width: output dimension (buffer size).
      activation: a key of ``ACTIVATIONS``.
      seed: the integer seed ``weights`` were drawn from.

    Draw one with :func:`init_buffer` (REFERENCE.md §3, ACIL); constructing one checks the meta fields and raises
    :class:`~analytic.InputError` for a bad kind, size, seed or activation.

    Example:
      >>> layer = init_buffer(4, 16, seed=0)
      >>> layer.weights.shape, layer.activation, layer.width
      ((4, 16), 'relu', 16)
      >>> tanh = dataclasses.replace(layer, activation="tanh")  # DS-AL's second stream over the same W_B
      >>> expand(tanh, np.ones((2, 4))).shape
      (2, 16)
    """

    weights: jax.Array
    kind: str = _static("buffer")
    in_dim: int = _static(0)
    width: int = _static(0)
    activation: str = _static("relu")
    seed: int = _static(0)

    def __post_init__(self):
        _check_meta(self, "buffer")
        check_choice("activation", self.activation, sorted(ACTIVATIONS))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianKernelLayer:
    r"""GKEAL Gaussian-kernel expansion layer (Zhuang et al., GKEAL, CVPR 2023).

    .. math::

        φ_j(z) = \exp\!\Big(−\frac{‖z − c_j‖^2}{2σ^2}\Big), \qquad j = 1, …, w

    with centres ``c_j`` drawn from phase-0 (base-class) features. σ ≈ 10 in the paper (range 5–15).

    Attributes:
      centres: ``c_j`` as rows, float32 of shape ``(width, in_dim)``.
      kind: ``"gaussian_kernel"``.
      in_dim: input (backbone) feature dimension.
      width: number of centres (output dimension).
      sigma: kernel width σ > 0.
      seed: the integer seed the centres were drawn with.

    Draw one with :func:`init_gaussian_kernel` (REFERENCE.md §3, GKEAL); constructing one checks the meta fields
    and raises :class:`~analytic.InputError` for a bad kind, size, seed or a σ that is not positive.

    Example:
      >>> layer = GaussianKernelLayer(centres=jnp.zeros((1, 2)), in_dim=2, width=1, sigma=1.0)
      >>> np.round(expand(layer, np.array([[0.0, 0.0], [1.0, 1.0]])), 4)  # exp(−‖z‖² / 2)
      array([[1.    ],
             [0.3679]], dtype=float32)
    """

    centres: jax.Array
    kind: str = _static("gaussian_kernel")
    in_dim: int = _static(0)
    width: int = _static(0)
    sigma: float = _static(10.0)
    seed: int = _static(0)

    def __post_init__(self):
        _check_meta(self, "gaussian_kernel")
        check_number("sigma", self.sigma, low=0, low_open=True)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RandomFourierLayer:
    r"""Random Fourier features of the Gaussian (RBF) kernel (Rahimi & Recht, NeurIPS 2007).

    .. math::

        φ(z) = \sqrt{2/w}\, \cos(z Ω + b), \qquad Ω_{ij} \sim \mathcal N(0, σ^{-2}), \quad
        b_j \sim \mathcal U(0, 2π),

    so that :math:`\mathbb E[φ(z)^\top φ(z')] = \exp(−‖z − z'‖^2 / (2σ^2))`: a ridge on φ approximates kernel ridge
    regression with that kernel, the random-feature form of Fed3R (Fanì et al., ICML 2024). Clients that draw the
    layer from the same seed share it without sending it.

    Attributes:
      frequencies: ``Ω``, float32 of shape ``(in_dim, width)``.
      phases: ``b``, float32 of shape ``(width,)``.
      kind: ``"random_fourier"``.
      in_dim: input (backbone) feature dimension.
      width: number of random features w.
      sigma: kernel width σ > 0.
      seed: the integer seed the arrays were drawn from.

    Draw one with :func:`init_random_fourier`; constructing one checks the meta fields and raises
    :class:`~analytic.InputError` for a bad kind, size, seed or a σ that is not positive.

    Example:
      >>> layer = init_random_fourier(3, 4096, sigma=2.0, seed=0)
      >>> z = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
      >>> phi = expand(layer, z)
      >>> round(float(phi[0] @ phi[1]), 1), round(float(np.exp(-2 / (2 * 2.0**2))), 1)  # ≈ exp(−‖z − z'‖² / 2σ²)
      (0.8, 0.8)
    """

    frequencies: jax.Array
    phases: jax.Array
    kind: str = _static("random_fourier")
    in_dim: int = _static(0)
    width: int = _static(0)
    sigma: float = _static(1.0)
    seed: int = _static(0)

    def __post_init__(self):
        _check_meta(self, "random_fourier")
        check_number("sigma", self.sigma, low=0, low_open=True)


ExpansionLayer = BufferLayer | GaussianKernelLayer | RandomFourierLayer

EXPANSIONS: dict[str, type] = {"buffer": BufferLayer, "gaussian_kernel": GaussianKernelLayer,
                               "random_fourier": RandomFourierLayer}


def _validated_features(features, *, name: str = "features") -> np.ndarray:
    """Host view of a 2-D floating array; raises ValueError naming the problem."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise InputError(f"{name} must be 2-D (samples, dim), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        raise InputError(f"{name} must have a floating dtype, got {features.dtype}")
    return features


def _check_finite(block: np.ndarray, row_offset: int, name: str = "features") -> None:
    finite = np.isfinite(block)
    if not finite.all():
        row = row_offset + int(np.argmin(finite.all(axis=1)))
        raise InputError(f"{name} contain NaN or Inf (first at row {row}, after casting to float32)")


def init_buffer(in_dim: int, width: int, *, seed: int = 0, activation: str = "relu") -> BufferLayer:
    r"""Draw an ACIL buffer layer: ``W_B ~ U(−1/√in_dim, 1/√in_dim)`` of shape ``(in_dim, width)``.

    Args:
      in_dim: backbone feature dimension ``d_in``.
      width: buffer size ``w``.
      seed: integer seed for ``jax.random``; the same seed gives bit-identical weights.
      activation: one of ``ACTIVATIONS`` (default ``"relu"``, as in ACIL).

    Returns:
      A ``BufferLayer`` (REFERENCE.md §3, ACIL: :math:`φ(z) = \mathrm{act}(z W_B)`).

    Raises:
      InputError: ``in_dim`` or ``width`` not a positive integer, ``seed`` not an integer, or an unknown
        ``activation``.

    Example:
      >>> layer = init_buffer(8, 32, seed=1)
      >>> layer.weights.shape, bool(jnp.all(jnp.abs(layer.weights) <= 8**-0.5))  # U(−1/√8, 1/√8)
      ((8, 32), True)
      >>> np.array_equal(layer.weights, init_buffer(8, 32, seed=1).weights)  # same seed, same weights
      True
    """
    check_int("in_dim", in_dim)
    check_int("width", width)
    check_int("seed", seed, minimum=-(2**63))
    bound = 1.0 / math.sqrt(in_dim)
    weights = jax.random.uniform(
        jax.random.key(seed), (int(in_dim), int(width)), dtype=jnp.float32, minval=-bound, maxval=bound
    )
    return BufferLayer(weights=weights, in_dim=int(in_dim), width=int(width), activation=activation, seed=int(seed))


def init_gaussian_kernel(features, width: int, *, sigma: float = 10.0, seed: int = 0) -> GaussianKernelLayer:
    r"""Draw a GKEAL kernel layer with ``width`` centres from ``features``, synthesising centres beyond its rows.

    With :math:`n \ge w` (``width``), the centres are w distinct rows chosen uniformly without replacement. With
    :math:`n < w`, every row is a centre and the :math:`w - n` others are random convex combinations of the rows,

    .. math::
        c_{n+i} = \sum_{j=1}^{n} a_{ij} x_j, \qquad a_{ij} = \frac{|g_{ij}|}{\sum_l |g_{il}|}, \quad
        g_{ij} \sim \mathcal N(0, 1),

    the idea of the reference GKEAL code (ZHUANGHP/Analytic-continual-learning, ``analytic/Buffer.py``,
    ``GaussianKernel.init``: "the buffer size is suggested to be greater than the number of initial samples",
    extra centres ``W_proj @ X`` with Gaussian ``W_proj``). There the Gaussian weights are divided by their sums
    over the synthesised centres (``torch.sum(W_proj, dim=0)``), which can be near zero and throw a centre far from
    the data; here each centre's weights are made non-negative and sum to one, so every synthesised centre lies in
    the convex hull of the rows, and distinct (almost surely) when at least two rows differ.

    Args:
      features: ``(n, in_dim)`` floating array, typically the phase-0 backbone features; ``n ≥ 1`` (``n ≥ 2``
        distinct rows when ``width > n``).
      width: number of centres w.
      sigma: kernel width σ.
      seed: integer seed (``jax.random``); the same seed and features give bit-identical centres.

    Returns:
      A ``GaussianKernelLayer``; its first ``min(n, width)`` centres are rows of ``features``.

    Raises:
      InputError: no rows, a non-positive width, NaN/Inf features, or ``width > n`` with fewer than two distinct
        rows to combine, a bad ``sigma``, or ``seed`` not an integer.

    Example:
      >>> layer = init_gaussian_kernel(np.eye(3, dtype=np.float32), 5, sigma=1.0)
      >>> layer.centres.shape  # three rows, two convex combinations of them
      (5, 3)
    """
    features = _validated_features(features)
    check_int("width", width)
    check_int("seed", seed, minimum=-(2**63))
    n_samples, in_dim = features.shape
    if n_samples == 0:
        raise InputError("features have no rows to draw centres from")
    key = jax.random.key(seed)
    rows = np.asarray(jax.random.choice(key, n_samples, (min(int(width), n_samples),), replace=False))
    with np.errstate(over="ignore"):  # values beyond float32 become Inf and are reported just below
        centres = features[rows].astype(np.float32)
    _check_finite(centres, 0, name="centres drawn from features")
    if width > n_samples:
        centres = np.concatenate([centres, _synthesized_centres(centres, int(width) - n_samples,
                                                                       jax.random.fold_in(key, 1))])
    return GaussianKernelLayer(
        centres=jnp.asarray(centres), in_dim=int(in_dim), width=int(width), sigma=float(sigma), seed=int(seed)
    )


def init_random_fourier(in_dim: int, width: int, *, sigma: float = 1.0, seed: int = 0) -> RandomFourierLayer:
    r"""Draw random Fourier features of the Gaussian kernel of width σ: ``Ω ~ N(0, 1/σ²)``, ``b ~ U(0, 2π)``.

    .. math::
        φ(z) = \sqrt{2/w}\, \cos(z Ω + b) \quad \text{(Rahimi \& Recht 2007)}

    Args:
      in_dim: backbone feature dimension ``d_in``.
      width: number of random features w.
      sigma: kernel width σ > 0 of :math:`\exp(−‖z − z'‖^2 / (2σ^2))`.
      seed: integer seed for ``jax.random``; the same seed gives bit-identical arrays (what federated clients share).

    Returns:
      A :class:`RandomFourierLayer`.

    Raises:
      InputError: ``in_dim`` or ``width`` not a positive integer, ``seed`` not an integer, or a bad ``sigma``.

    Example:
      >>> layer = init_random_fourier(8, 32, sigma=3.0, seed=1)
      >>> layer.frequencies.shape, layer.phases.shape
      ((8, 32), (32,))
      >>> np.array_equal(layer.frequencies, init_random_fourier(8, 32, sigma=3.0, seed=1).frequencies)
      True
    """
    check_int("in_dim", in_dim)
    check_int("width", width)
    check_int("seed", seed, minimum=-(2**63))
    sigma = check_number("sigma", sigma, low=0, low_open=True)
    frequency_key, phase_key = jax.random.split(jax.random.key(seed))
    frequencies = jax.random.normal(frequency_key, (int(in_dim), int(width)), dtype=jnp.float32) / sigma
    phases = jax.random.uniform(phase_key, (int(width),), dtype=jnp.float32, minval=0.0, maxval=2 * math.pi)
    return RandomFourierLayer(frequencies=frequencies, phases=phases, in_dim=int(in_dim), width=int(width),
                              sigma=sigma, seed=int(seed))


def _synthesized_centres(rows: np.ndarray, count: int, key: jax.Array) -> np.ndarray:
    r"""``count`` convex combinations :math:`A X` of ``rows``, :math:`A_{ij} \propto |g_{ij}|`, in float32."""
    if np.unique(rows, axis=0).shape[0] < 2:
        raise InputError(f"{count} more centres than feature rows need at least two distinct rows to combine")
    gaussian = np.abs(np.asarray(jax.random.normal(key, (count, rows.shape[0]), dtype=jnp.float32), np.float64))
    weights = gaussian / gaussian.sum(axis=1, keepdims=True)
    return (weights @ rows.astype(np.float64)).astype(np.float32)


def _buffer_features(layer: BufferLayer, features: jax.Array) -> jax.Array:
    """``act(z W_B)``."""
    projection = jnp.matmul(features, layer.weights.astype(features.dtype), precision=_HIGHEST)
    return ACTIVATIONS[layer.activation](projection)


def _gaussian_kernel_features(layer: GaussianKernelLayer, features: jax.Array) -> jax.Array:
    r"""``exp(−‖z − c‖² / 2σ²)`` with ``‖z − c‖² = ‖z‖² + ‖c‖² − 2 z·c`` clamped at 0.

    Both sides are first shifted by the centres' mean ``m`` (distances are translation invariant): this keeps
    ``‖z − m‖²`` and ``‖c − m‖²`` small, so the cancellation in the expanded form loses fewer float32 digits
    (on offset ReLU-like features, d = 512, σ = 10: relative kernel error 5e-5 unshifted, 4e-7 shifted).
    """
    centres = layer.centres.astype(features.dtype)
    shift = jnp.mean(centres, axis=0, keepdims=True)
    shifted_features = features - shift
    shifted_centres = centres - shift
    feature_norms = jnp.sum(shifted_features * shifted_features, axis=1, keepdims=True)
    centre_norms = jnp.sum(shifted_centres * shifted_centres, axis=1)[None, :]
    cross = jnp.matmul(shifted_features, shifted_centres.T, precision=_HIGHEST)
    squared_distances = jnp.maximum(feature_norms + centre_norms - 2.0 * cross, 0.0)
    return jnp.exp(-squared_distances / (2.0 * layer.sigma**2))


def _random_fourier_features(layer: RandomFourierLayer, features: jax.Array) -> jax.Array:
    """``√(2/w) cos(z Ω + b)``."""
    projection = jnp.matmul(features, layer.frequencies.astype(features.dtype), precision=_HIGHEST)
    scale = jnp.asarray(math.sqrt(2.0 / layer.width), features.dtype)
    return scale * jnp.cos(projection + layer.phases.astype(features.dtype)[None, :])


def apply_expansion(layer: ExpansionLayer, features: jax.Array) -> jax.Array:
    """Apply ``layer`` to a ``(n, in_dim)`` floating batch, in the batch's dtype; pure and jittable (no validation,
    no chunking)."""
    if isinstance(layer, BufferLayer):
        return _buffer_features(layer, features)
    if isinstance(layer, GaussianKernelLayer):
        return _gaussian_kernel_features(layer, features)
    if isinstance(layer, RandomFourierLayer):
        return _random_fourier_features(layer, features)
    raise InputError(f"expected one of {sorted(c.__name__ for c in EXPANSIONS.values())}, got {type(layer).__name__}")


# Meta fields are static, so this compiles once per layer configuration (kind, sizes, activation / sigma, seed)
# and chunk shape.
_apply_expansion_jit = jax.jit(apply_expansion)


def _layer_array(layer: ExpansionLayer) -> tuple[str, jax.Array, tuple[int, int]]:
    """The layer's array field: its name, value and expected shape."""
    if isinstance(layer, BufferLayer):
        return "weights", layer.weights, (layer.in_dim, layer.width)
    if isinstance(layer, GaussianKernelLayer):
        return "centres", layer.centres, (layer.width, layer.in_dim)
    if isinstance(layer, RandomFourierLayer):
        if tuple(np.shape(layer.phases)) != (layer.width,):
            raise InputError(f"layer phases has shape {np.shape(layer.phases)}, expected ({layer.width},)")
        return "frequencies", layer.frequencies, (layer.in_dim, layer.width)
    raise InputError(f"expected one of {sorted(c.__name__ for c in EXPANSIONS.values())}, got {type(layer).__name__}")


def _chunk_rows(n_samples: int, chunk_size: int) -> int:
    """Rows per compiled chunk: ``chunk_size``, or the next power of two ≥ ``n_samples`` if that is smaller."""
    return min(chunk_size, 1 << max(n_samples - 1, 0).bit_length())


def expand(layer: ExpansionLayer, features, *, chunk_size: int = 4096) -> np.ndarray:
    """Apply ``layer`` to ``features`` in chunks and return a host float32 array of shape ``(n, width)``.

    Working memory is ``O(chunk_size · width)`` besides the output. Every chunk has the same number of rows,
    ``min(chunk_size, next power of two ≥ n)``: the last chunk is zero-padded and the padding rows are discarded,
    so a call compiles at most once per layer configuration (never per chunk), and small inputs do not pay for a
    full ``chunk_size`` chunk. Matmuls run at ``Precision.HIGHEST``.

    Rows are computed independently: for a given chunk shape a row's output does not depend on its position or
    on the other rows (bit-identical). Across different chunk shapes XLA may pick a different matmul kernel, so
    outputs then agree only to float32 rounding (relative differences of a few 1e-6 measured on CPU).

    Args:
      layer: a ``BufferLayer``, ``GaussianKernelLayer`` or ``RandomFourierLayer``.
      features: ``(n, in_dim)`` floating array (cast to float32).
      chunk_size: maximum rows per chunk.

    Returns:
      ``np.ndarray`` float32 of shape ``(n, layer.width)``.

    Raises:
      InputError: features not 2-D, not floating, of the wrong dimension, or containing NaN/Inf (also after the
        cast to float32); layer arrays of the wrong shape; non-positive ``chunk_size``; ``layer`` not an expansion
        layer.

    Example:
      >>> layer = init_buffer(4, 16, seed=0)
      >>> features = np.random.default_rng(0).normal(size=(10, 4))
      >>> expanded = expand(layer, features, chunk_size=4)  # three chunks of 4 rows, the last one padded
      >>> expanded.shape, expanded.dtype, bool((expanded >= 0).all())  # ReLU features
      ((10, 16), dtype('float32'), True)
      >>> np.allclose(expanded, np.maximum(features.astype(np.float32) @ np.asarray(layer.weights), 0), atol=1e-5)
      True
    """
    array_name, layer_array, expected_shape = _layer_array(layer)
    if tuple(np.shape(layer_array)) != expected_shape:
        raise InputError(f"layer {array_name} has shape {np.shape(layer_array)}, expected {expected_shape}")
    features = _validated_features(features)
    if features.shape[1] != layer.in_dim:
        raise InputError(f"features have dimension {features.shape[1]}, layer expects in_dim={layer.in_dim}")
    check_int("chunk_size", chunk_size)

    n_samples = features.shape[0]
    output = np.empty((n_samples, layer.width), dtype=np.float32)
    if n_samples == 0:
        return output
    layer = dataclasses.replace(layer, **{array_name: jnp.asarray(layer_array, dtype=jnp.float32)})
    rows = _chunk_rows(n_samples, int(chunk_size))
    for start in range(0, n_samples, rows):
        with np.errstate(over="ignore"):  # values beyond float32 become Inf and are reported just below
            block = features[start : start + rows].astype(np.float32, copy=False)
        _check_finite(block, start)
        n_valid = len(block)
        if n_valid < rows:
            block = np.pad(block, ((0, rows - n_valid), (0, 0)))
        output[start : start + n_valid] = np.asarray(_apply_expansion_jit(layer, block))[:n_valid]
    return output

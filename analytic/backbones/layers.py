"""Layers shared by the flax backbones, configured to reproduce PyTorch inference numerics.

Convolutions and matrix products run at ``Precision.HIGHEST`` (full float32 on every backend) and batch
normalization uses its running statistics, so features match the torch models to about 1e-5.

On CPU, two kinds of convolution are computed without XLA's convolution (see :func:`conv_general_dilated`), which
is 15-100x slower on them there; the variables and the results (to float32 rounding) are the same.
"""

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = jax.lax.Precision.HIGHEST

Padding = str | Sequence[tuple[int, int]]


def symmetric_padding(kernel_size: int) -> Padding:
    """PyTorch's ``padding=kernel_size // 2`` on both spatial axes."""
    return ((kernel_size // 2, kernel_size // 2),) * 2


def conv(
    features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    groups: int = 1,
    padding: Padding | None = None,
    use_bias: bool = False,
    name: str,
) -> nn.Conv:
    """A square 2-d convolution on NHWC inputs; ``padding`` defaults to PyTorch's symmetric ``kernel_size // 2``.

    ``groups`` equal to the channel count makes it depthwise (kernel shape ``(k, k, 1, channels)``).
    """
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=symmetric_padding(kernel_size) if padding is None else padding,
        feature_group_count=groups,
        use_bias=use_bias,
        precision=HIGHEST,
        conv_general_dilated=conv_general_dilated,
        name=name,
    )


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Padding,
    *,
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    dimension_numbers: lax.ConvDimensionNumbers,
    feature_group_count: int,
    precision: lax.PrecisionLike,
) -> jax.Array:
    """``lax.conv_general_dilated`` as ``nn.Conv`` calls it on NHWC images, with two rewrites on CPU.

    On CPU, for undilated convolutions:

    * a depthwise convolution (one group per channel) is a sum over the kernel's taps of strided input slices
      times per-channel weights, one fused elementwise loop: XLA:CPU's grouped convolution is 15-45x slower
      (27 ms instead of 0.6 ms for a 3x3 kernel over ``(32, 32, 32, 32)``);
    * a dense convolution whose window is larger than its input map (ResNet's 3x3 convolutions on the 2x2 maps of
      64-px images) is one matrix product of the concatenated taps with the flattened kernel: XLA's algebraic
      simplifier swaps the operands of such a convolution, and the swapped one leaves the library path for a
      naive loop (0.3 s instead of 3.5 ms for a 3x3, 512-channel convolution of a 2x2 map at batch 32).

    Other convolutions, and all convolutions on other backends, are ``lax.conv_general_dilated``.
    """
    call_lax = functools.partial(
        lax.conv_general_dilated,
        window_strides=window_strides,
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
    )
    window = rhs.shape[:2]
    undilated = all(step == 1 for step in (*lhs_dilation, *rhs_dilation))
    depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] > 1
    small_input = feature_group_count == 1 and math.prod(window) > math.prod(lhs.shape[1:3])
    if not undilated or not (depthwise or small_input):
        return call_lax(lhs, rhs)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], window, window_strides, padding)

    def on_cpu(images: jax.Array, kernel: jax.Array) -> jax.Array:
        taps = kernel_taps(images, window, window_strides, padding)
        if depthwise:
            per_tap = kernel.reshape(len(taps), 1, 1, 1, -1)  # one weight per channel, broadcast explicitly
            return sum(tap * weights for tap, weights in zip(taps, per_tap, strict=True))
        return jnp.dot(jnp.concatenate(taps, axis=-1), kernel.reshape(-1, kernel.shape[-1]), precision=precision)

    return lax.platform_dependent(lhs, rhs, cpu=on_cpu, default=call_lax)


def kernel_taps(
    images: jax.Array, window: Sequence[int], strides: Sequence[int], padding: Sequence[tuple[int, int]]
) -> list[jax.Array]:
    """The input each kernel position sees, in row-major kernel order: for tap ``(i, j)``, the zero-padded NHWC
    images sliced from ``(i, j)`` with the convolution's strides, shaped like the convolution's output."""
    padded = jnp.pad(images, ((0, 0), *padding, (0, 0)))
    batch, height, width, channels = padded.shape
    (rows, columns), (row_stride, column_stride) = window, strides
    out_height, out_width = (height - rows) // row_stride + 1, (width - columns) // column_stride + 1
    return [
        lax.slice(
            padded,
            (0, i, j, 0),
            (batch, i + (out_height - 1) * row_stride + 1, j + (out_width - 1) * column_stride + 1, channels),
            (1, row_stride, column_stride, 1),
        )
        for i in range(rows)
        for j in range(columns)
    ]


def batch_norm(*, epsilon: float = 1e-5, name: str) -> nn.BatchNorm:
    """Inference-mode batch normalization with running statistics; 1e-5 is PyTorch's default epsilon."""
    return nn.BatchNorm(use_running_average=True, epsilon=epsilon, name=name)


def dense(features: int, *, name: str) -> nn.Dense:
    """A fully connected layer with bias (PyTorch's ``nn.Linear``)."""
    return nn.Dense(features, precision=HIGHEST, name=name)


def layer_norm(*, epsilon: float, name: str) -> nn.LayerNorm:
    """Layer normalization over the last axis, with the two-pass variance that PyTorch computes."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, name=name)


def global_average_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC tensor: ``(B, H, W, C) -> (B, C)``."""
    return x.mean(axis=(1, 2))

"""Layers shared by the flax backbones, configured to reproduce PyTorch inference numerics.

Convolutions and matrix products run at ``Precision.HIGHEST`` (full float32 on every backend) and batch
normalization uses its running statistics, so features match the torch models to about 1e-5.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

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
        name=name,
    )


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

"""ResNet-18 and ResNet-50 (He et al., 2016) as in torchvision and timm, returning pooled features.

The stride of a bottleneck block sits on its 3x3 convolution ("ResNet v1.5"), as in both libraries.
"""

import re
from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

from analytic.backbones.convert import KeyLayout, ModulePath
from analytic.backbones.layers import batch_norm, conv, global_average_pool


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    features: int
    stride: int = 1
    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(batch_norm(name="bn1")(conv(self.features, 3, stride=self.stride, name="conv1")(x)))
        y = batch_norm(name="bn2")(conv(self.features, 3, name="conv2")(y))
        return nn.relu(y + shortcut(x, self.features * self.expansion, self.stride))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection (ResNet-50 and deeper)."""

    features: int
    stride: int = 1
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(batch_norm(name="bn1")(conv(self.features, 1, name="conv1")(x)))
        y = nn.relu(batch_norm(name="bn2")(conv(self.features, 3, stride=self.stride, name="conv2")(y)))
        y = batch_norm(name="bn3")(conv(self.features * self.expansion, 1, name="conv3")(y))
        return nn.relu(y + shortcut(x, self.features * self.expansion, self.stride))


def shortcut(x: jax.Array, features: int, stride: int) -> jax.Array:
    """The residual branch: identity, or a strided 1x1 projection + BN when the shape changes.

    Called inside a block's compact ``__call__``, so the projection's layers belong to that block.
    """
    if stride == 1 and x.shape[-1] == features:
        return x
    projection = conv(features, 1, stride=stride, padding="VALID", name="downsample_conv")
    return batch_norm(name="downsample_bn")(projection(x))


class ResNet(nn.Module):
    """ResNet feature extractor: NHWC images -> globally average-pooled features ``(B, 512 * expansion)``."""

    block: type[BasicBlock] | type[Bottleneck]
    stage_depths: Sequence[int]

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = nn.relu(batch_norm(name="bn1")(conv(64, 7, stride=2, name="conv1")(images)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, depth in enumerate(self.stage_depths):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                x = self.block(64 * 2**stage, stride, name=f"layer{stage + 1}_{index}")(x)
        return global_average_pool(x)


def resnet18() -> ResNet:
    """ResNet-18: basic blocks, 2-2-2-2, 512-d features."""
    return ResNet(BasicBlock, (2, 2, 2, 2))


def resnet50() -> ResNet:
    """ResNet-50: bottleneck blocks, 3-4-6-3, 2048-d features."""
    return ResNet(Bottleneck, (3, 4, 6, 3))


def torch_prefix(module_path: ModulePath) -> str:
    """Flax module path -> torch prefix, for timm and torchvision alike (``layer1_0/downsample_conv`` ->
    ``layer1.0.downsample.0``)."""
    renamed = [re.sub(r"^layer(\d)_(\d+)$", r"layer\1.\2", part) for part in module_path]
    return ".".join(renamed).replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")


TORCH_LAYOUTS = (KeyLayout("timm/torchvision", "conv1.weight", lambda module: torch_prefix),)

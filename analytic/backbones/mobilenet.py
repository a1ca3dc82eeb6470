"""Inverted-residual networks: MobileNetV2 (Sandler et al., 2018) and EfficientNet-Lite0 (Tan & Le, 2019).

Both are a 3x3 stem, a sequence of inverted-residual blocks (1x1 expand, kxk depthwise, 1x1 linear project, with
an identity shortcut when the shape allows) and a 1x1 head to 1280 channels, with ReLU6 activations. They differ
in their stages, BatchNorm epsilon and padding: MobileNetV2 pads like PyTorch (``k // 2`` on each side),
EfficientNet-Lite0's weights come from TensorFlow and pad like TensorFlow's ``SAME`` (the extra pixel at the end).

Checkpoints in three layouts load into the same flax module: torchvision's ``mobilenet_v2``, timm's
``mobilenetv2_100`` / ``tf_efficientnet_lite0``, and the ``efficientnet_lite_pytorch`` package's ``EfficientNet``.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import flax.linen as nn
import jax

from analytic.backbones.convert import KeyLayout, ModulePath, TorchPrefix
from analytic.backbones.layers import batch_norm, conv, global_average_pool


class Stage(NamedTuple):
    """``repeats`` blocks with ``channels`` outputs; the first one has ``stride`` and changes the width."""

    expand_ratio: int
    channels: int
    repeats: int
    stride: int
    kernel_size: int


MOBILENET_V2_STAGES = (
    Stage(1, 16, 1, 1, 3),
    Stage(6, 24, 2, 2, 3),
    Stage(6, 32, 3, 2, 3),
    Stage(6, 64, 4, 2, 3),
    Stage(6, 96, 3, 1, 3),
    Stage(6, 160, 3, 2, 3),
    Stage(6, 320, 1, 1, 3),
)

EFFICIENTNET_LITE0_STAGES = (
    Stage(1, 16, 1, 1, 3),
    Stage(6, 24, 2, 2, 3),
    Stage(6, 40, 2, 2, 5),
    Stage(6, 80, 3, 2, 3),
    Stage(6, 112, 3, 1, 5),
    Stage(6, 192, 4, 2, 5),
    Stage(6, 320, 1, 1, 3),
)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when ``expand_ratio`` is 1), depthwise kxk, 1x1 linear projection, identity shortcut."""

    channels: int
    expand_ratio: int
    stride: int
    kernel_size: int
    bn_epsilon: float
    tf_same_padding: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = x.shape[-1] * self.expand_ratio
        y = x
        if self.expand_ratio != 1:
            y = conv(hidden, 1, name="expand_conv")(y)
            y = nn.relu6(batch_norm(epsilon=self.bn_epsilon, name="expand_bn")(y))
        depthwise = conv(
            hidden,
            self.kernel_size,
            stride=self.stride,
            groups=hidden,
            padding="SAME" if self.tf_same_padding else None,
            name="depthwise_conv",
        )
        y = nn.relu6(batch_norm(epsilon=self.bn_epsilon, name="depthwise_bn")(depthwise(y)))
        y = batch_norm(epsilon=self.bn_epsilon, name="project_bn")(conv(self.channels, 1, name="project_conv")(y))
        return y + x if self.stride == 1 and x.shape[-1] == self.channels else y


class InvertedResidualNet(nn.Module):
    """Stem, inverted-residual stages, head; NHWC images -> globally average-pooled features ``(B, 1280)``."""

    stages: tuple[Stage, ...]
    bn_epsilon: float
    tf_same_padding: bool
    stem_channels: int = 32
    head_channels: int = 1280

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        stem = conv(self.stem_channels, 3, stride=2, padding="SAME" if self.tf_same_padding else None, name="stem_conv")
        x = nn.relu6(batch_norm(epsilon=self.bn_epsilon, name="stem_bn")(stem(images)))
        for stage_index, stage in enumerate(self.stages):
            for index in range(stage.repeats):
                x = InvertedResidual(
                    stage.channels,
                    stage.expand_ratio,
                    stage.stride if index == 0 else 1,
                    stage.kernel_size,
                    self.bn_epsilon,
                    self.tf_same_padding,
                    name=f"blocks_{stage_index}_{index}",
                )(x)
        x = conv(self.head_channels, 1, name="head_conv")(x)
        x = nn.relu6(batch_norm(epsilon=self.bn_epsilon, name="head_bn")(x))
        return global_average_pool(x)


def mobilenet_v2() -> InvertedResidualNet:
    """MobileNetV2 1.0 (torchvision ``mobilenet_v2``, timm ``mobilenetv2_100``)."""
    return InvertedResidualNet(MOBILENET_V2_STAGES, bn_epsilon=1e-5, tf_same_padding=False)


def efficientnet_lite0() -> InvertedResidualNet:
    """EfficientNet-Lite0 with TensorFlow padding and epsilon (``efficientnet_lite_pytorch``, timm
    ``tf_efficientnet_lite0``)."""
    return InvertedResidualNet(EFFICIENTNET_LITE0_STAGES, bn_epsilon=1e-3, tf_same_padding=True)


@dataclass(frozen=True)
class _Names:
    """One checkpoint layout's names: the stem and head layers, a block's prefix from its
    ``(stage, index in stage, index in network)``, and a block's layers with and without the expansion."""

    outer: Callable[[int], Mapping[str, str]]
    block: Callable[[int, int, int], str]
    expanding_block: Mapping[str, str]
    depthwise_first_block: Mapping[str, str]


_TORCHVISION = _Names(
    outer=lambda blocks: {
        "stem_conv": "features.0.0",
        "stem_bn": "features.0.1",
        "head_conv": f"features.{blocks + 1}.0",
        "head_bn": f"features.{blocks + 1}.1",
    },
    block=lambda stage, index, flat: f"features.{flat + 1}.conv",
    expanding_block={
        "expand_conv": "0.0",
        "expand_bn": "0.1",
        "depthwise_conv": "1.0",
        "depthwise_bn": "1.1",
        "project_conv": "2",
        "project_bn": "3",
    },
    depthwise_first_block={"depthwise_conv": "0.0", "depthwise_bn": "0.1", "project_conv": "1", "project_bn": "2"},
)

_TIMM = _Names(
    outer=lambda blocks: {"stem_conv": "conv_stem", "stem_bn": "bn1", "head_conv": "conv_head", "head_bn": "bn2"},
    block=lambda stage, index, flat: f"blocks.{stage}.{index}",
    expanding_block={
        "expand_conv": "conv_pw",
        "expand_bn": "bn1",
        "depthwise_conv": "conv_dw",
        "depthwise_bn": "bn2",
        "project_conv": "conv_pwl",
        "project_bn": "bn3",
    },
    depthwise_first_block={
        "depthwise_conv": "conv_dw",
        "depthwise_bn": "bn1",
        "project_conv": "conv_pw",
        "project_bn": "bn2",
    },
)

_EFFICIENTNET_LITE_PYTORCH_BLOCK = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "depthwise_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}

_EFFICIENTNET_LITE_PYTORCH = _Names(
    outer=lambda blocks: {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1"},
    block=lambda stage, index, flat: f"_blocks.{flat}",
    expanding_block=_EFFICIENTNET_LITE_PYTORCH_BLOCK,
    depthwise_first_block=_EFFICIENTNET_LITE_PYTORCH_BLOCK,
)


def _prefix_function(names: _Names) -> Callable[[InvertedResidualNet], TorchPrefix]:
    """The :attr:`KeyLayout.prefix_for` of one layout."""

    def prefix_for(module: InvertedResidualNet) -> TorchPrefix:
        outer = names.outer(sum(stage.repeats for stage in module.stages))
        first_block = [sum(stage.repeats for stage in module.stages[:index]) for index in range(len(module.stages))]

        def prefix(module_path: ModulePath) -> str:
            if module_path[0] in outer:
                return outer[module_path[0]]
            stage, index = (int(part) for part in module_path[0].split("_")[1:])
            layers = names.expanding_block if module.stages[stage].expand_ratio != 1 else names.depthwise_first_block
            return f"{names.block(stage, index, first_block[stage] + index)}.{layers[module_path[1]]}"

        return prefix

    return prefix_for


MOBILENET_V2_LAYOUTS = (
    KeyLayout("torchvision", "features.0.0.weight", _prefix_function(_TORCHVISION)),
    KeyLayout("timm", "conv_stem.weight", _prefix_function(_TIMM)),
)

EFFICIENTNET_LITE0_LAYOUTS = (
    KeyLayout("efficientnet_lite_pytorch", "_conv_stem.weight", _prefix_function(_EFFICIENTNET_LITE_PYTORCH)),
    KeyLayout("timm", "conv_stem.weight", _prefix_function(_TIMM)),
)

"""The backbones this package knows: flax module, checkpoint layouts, weight sources and torch twin of each."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn

from analytic.backbones import mobilenet, resnet, sources, torch_models, vit
from analytic.backbones.convert import KeyLayout

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ViT (timm's augreg weights) and TensorFlow-trained EfficientNet-Lite map [0, 1] to [-1, 1].
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Architecture:
    """What :func:`~analytic.backbones.create_backbone` needs to know about one backbone.

    Attributes:
      make_module: image side -> flax module (only ViTs depend on the side).
      feature_dim: length of the pooled feature vector.
      layouts: checkpoint layouts it loads; the first is that of ``make_torch_model`` and of exported weights.
      timm_name: the timm model whose pretrained weights ``weights="timm"`` downloads.
      make_torch_model: image side -> the torch model computing the same features (weights not loaded).
      mean, std: the per-channel normalization its pretrained weights expect, on ``[0, 1]`` RGB.
      input_size: the image side it was trained at.
      image_size_of: reads the image side from a state dict (ViTs: the position embedding); ``None``: fixed.
      pretrained_file: the ImageNet weights shipped in an installed package, if any.
    """

    make_module: Callable[[int], nn.Module]
    feature_dim: int
    layouts: tuple[KeyLayout, ...]
    timm_name: str
    make_torch_model: Callable[[int], "torch.nn.Module"]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    image_size_of: Callable[[Mapping[str, Any]], int] | None = None
    pretrained_file: Callable[[], Path] | None = None


def _resnet(make_module: Callable[[], nn.Module], feature_dim: int, timm_name: str) -> Architecture:
    return Architecture(
        make_module=lambda image_size: make_module(),
        feature_dim=feature_dim,
        layouts=resnet.TORCH_LAYOUTS,
        timm_name=timm_name,
        make_torch_model=lambda image_size: torch_models.timm_features_model(timm_name),
    )


def _vit(make_module: Callable[[int], nn.Module], feature_dim: int, timm_name: str) -> Architecture:
    return Architecture(
        make_module=make_module,
        feature_dim=feature_dim,
        layouts=vit.TORCH_LAYOUTS,
        timm_name=timm_name,
        make_torch_model=partial(_timm_vit, timm_name),
        mean=HALF,
        std=HALF,
        image_size_of=vit.image_size_of,
    )


def _timm_vit(timm_name: str, image_size: int) -> "torch.nn.Module":
    return torch_models.timm_features_model(timm_name, img_size=image_size)


ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": _resnet(resnet.resnet18, 512, "resnet18"),
    "resnet50": _resnet(resnet.resnet50, 2048, "resnet50"),
    "vit_tiny_patch16_224": _vit(vit.vit_tiny, 192, "vit_tiny_patch16_224"),
    "vit_small_patch16_224": _vit(vit.vit_small, 384, "vit_small_patch16_224"),
    "vit_base_patch16_224": _vit(vit.vit_base, 768, "vit_base_patch16_224"),
    "mobilenetv2_100": Architecture(
        make_module=lambda image_size: mobilenet.mobilenet_v2(),
        feature_dim=1280,
        layouts=mobilenet.MOBILENET_V2_LAYOUTS,
        timm_name="mobilenetv2_100",
        make_torch_model=lambda image_size: torch_models.torchvision_mobilenet_v2(),
        pretrained_file=sources.mobilenet_v2_imagenet_file,
    ),
    # timm's `efficientnet_lite0` pads like PyTorch; `tf_efficientnet_lite0` is the same network as the packaged
    # weights (TensorFlow's, with SAME padding and BatchNorm epsilon 1e-3).
    "efficientnet_lite0": Architecture(
        make_module=lambda image_size: mobilenet.efficientnet_lite0(),
        feature_dim=1280,
        layouts=mobilenet.EFFICIENTNET_LITE0_LAYOUTS,
        timm_name="tf_efficientnet_lite0",
        make_torch_model=lambda image_size: torch_models.efficientnet_lite_pytorch_lite0(),
        mean=HALF,
        std=HALF,
        pretrained_file=sources.efficientnet_lite0_imagenet_file,
    ),
}

"""The PyTorch models that the flax backbones reproduce, built without weights and with the classifier removed,
so that ``model(images_nchw)`` returns the pooled features. Torch, torchvision and timm are imported lazily."""

from typing import TYPE_CHECKING

from analytic.backbones.optional_imports import import_optional, import_timm, import_torch, import_torchvision

if TYPE_CHECKING:
    import torch


def timm_features_model(timm_name: str, **options) -> "torch.nn.Module":
    """A timm model without its classifier (``num_classes=0``): its output is the pooled feature vector."""
    return import_timm().create_model(timm_name, pretrained=False, num_classes=0, **options)


def torchvision_mobilenet_v2() -> "torch.nn.Module":
    """torchvision's ``mobilenet_v2`` with the classifier (dropout + linear) replaced by the identity."""
    model = import_torchvision().models.mobilenet_v2(weights=None)
    model.classifier = import_torch().nn.Identity()
    return model


def efficientnet_lite_pytorch_lite0() -> "torch.nn.Module":
    """``efficientnet_lite_pytorch``'s EfficientNet-Lite0 without its final linear layer.

    It is built with ``image_size=None``, which makes every convolution pad like TensorFlow's ``SAME`` for the
    actual input size; with an image size, the padding would be fixed for that size only.
    """
    torch = import_torch()
    model = import_optional("efficientnet_lite_pytorch").EfficientNet.from_name("efficientnet-lite0", image_size=None)
    model._fc = torch.nn.Identity()
    return model

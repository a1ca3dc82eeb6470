"""Conversion between PyTorch state dicts and flax variables.

A flax leaf is addressed by ``(collection, *module_path, leaf)``; its torch key is
``prefix(module_path) + "." + torch_leaf``. Each architecture supplies only ``prefix`` (one per checkpoint layout,
see :class:`KeyLayout`); the leaf names and array layouts are shared by every architecture:

==========================  ==================  ==========================================
flax                        torch               array
==========================  ==================  ==========================================
``params/.../kernel`` 4-d   ``weight``          conv ``(O, I/groups, H, W) -> (H, W, I/groups, O)``
``params/.../kernel`` 2-d   ``weight``          linear ``(out, in) -> (in, out)``
``params/.../scale``        ``weight``          batch/layer norm scale, as is
``params/.../bias``         ``bias``            as is
``batch_stats/.../mean``    ``running_mean``    as is
``batch_stats/.../var``     ``running_var``     as is
``params/<name>``           ``<name>``          free parameters (ViT ``cls_token``), as is
==========================  ==================  ==========================================

Depthwise convolutions need no special case: torch's ``(C, 1, k, k)`` becomes flax's ``(k, k, 1, C)``.
BatchNorm's ``num_batches_tracked`` and the classifier's weights have no flax counterpart and are ignored.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

ModulePath = tuple[str, ...]
TorchPrefix = Callable[[ModulePath], str]

_TORCH_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}

# Axis permutation taking a torch weight to its flax kernel, by number of dimensions: conv, linear.
_KERNEL_AXES = {4: (2, 3, 1, 0), 2: (1, 0)}


@dataclass(frozen=True)
class KeyLayout:
    """How one family of torch checkpoints (timm, torchvision, ...) names the parameters of a flax module.

    Attributes:
      source: who writes checkpoints in this layout, for messages.
      marker: a key that checkpoints in this layout have and those in the architecture's other layouts lack.
      prefix_for: given the flax module, the function from a flax module path to the torch module prefix.
    """

    source: str
    marker: str
    prefix_for: Callable[[nn.Module], TorchPrefix]


def torch_key(flax_key: tuple[str, ...], prefix: TorchPrefix) -> str:
    """The torch state-dict key of the flax leaf at ``(collection, *module_path, leaf)``."""
    collection, *module_path, leaf = flax_key
    if not module_path:
        return leaf
    return f"{prefix(tuple(module_path))}.{_TORCH_LEAF_NAMES[collection, leaf]}"


def state_dict_to_variables(state_dict: Mapping[str, Any], template: Mapping, prefix: TorchPrefix) -> dict:
    """Build flax variables shaped like ``template`` from a torch state dict.

    Args:
      state_dict: torch key -> tensor or array (torch tensors, numpy arrays; any float dtype).
      template: the module's variables or their shapes (``jax.eval_shape(module.init, ...)``).
      prefix: flax module path -> torch module prefix, from the checkpoint's :class:`KeyLayout`.

    Returns:
      The variables as float32 jax arrays, in ``template``'s tree structure.

    Raises:
      ValueError: a key is missing or a tensor has the wrong shape.
    """
    variables, missing = {}, []
    for flax_key, expected in traverse_util.flatten_dict(template).items():
        key = torch_key(flax_key, prefix)
        if key not in state_dict:
            missing.append(key)
            continue
        axes = _torch_to_flax_axes(flax_key[-1], len(expected.shape))
        torch_shape = tuple(expected.shape[axis] for axis in np.argsort(axes))
        value = _as_float32_numpy(state_dict[key])
        if value.shape != torch_shape:
            raise ValueError(f"{key}: shape {value.shape} in the state dict, expected {torch_shape}")
        variables[flax_key] = jnp.asarray(value.transpose(axes))
    if missing:
        raise ValueError(f"{len(missing)} tensors missing from the state dict, first ones: {missing[:5]}")
    return traverse_util.unflatten_dict(variables)


def variables_to_state_dict(variables: Mapping, prefix: TorchPrefix) -> dict[str, np.ndarray]:
    """The inverse of :func:`state_dict_to_variables`: flax variables -> torch key -> numpy array."""
    state_dict = {}
    for flax_key, value in traverse_util.flatten_dict(variables).items():
        array = np.asarray(value)
        axes = _torch_to_flax_axes(flax_key[-1], array.ndim)
        state_dict[torch_key(flax_key, prefix)] = np.array(array.transpose(np.argsort(axes)), order="C")
    return state_dict


def _torch_to_flax_axes(leaf: str, ndim: int) -> tuple[int, ...]:
    """The axis permutation taking a torch tensor to the layout of the flax leaf named ``leaf``."""
    return _KERNEL_AXES[ndim] if leaf == "kernel" else tuple(range(ndim))


def _as_float32_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any dtype, any device) or array-like as a contiguous float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)

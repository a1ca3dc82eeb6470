"""Lazy imports of the optional PyTorch stack (the ``[backbones]`` extra).

Nothing in :mod:`analytic.backbones` imports torch at module level: flax backbones, random initialization and
``.safetensors`` weights work without it. Reading ``.pth`` files, the reference torch models and timm need it.
"""

import importlib
import sys
from types import ModuleType

_INSTALL_HINT = "install the optional extra: pip install 'analytic-learning[backbones]'"

# Operator schemas that torchvision's Python side expects its C++ extension to have defined. The library object
# must stay alive: torch removes the definitions when it is garbage-collected.
_TORCHVISION_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_torchvision_op_stubs = []


def import_torch() -> ModuleType:
    """Import torch, or raise an ImportError that names the extra to install."""
    return import_optional("torch")


def import_torchvision() -> ModuleType:
    """Import torchvision, defining stand-ins for its C++ operators when its extension cannot load.

    Some torchvision wheels (a CUDA build on a CPU-only machine, for one) fail to load their C++ extension; their
    Python side then stops at import with "operator torchvision::nms does not exist", which also breaks
    ``import timm``. Models and transforms never call these operators, so when (and only when) that error occurs,
    their schemas are defined here and the import is retried. The detection operators (``nms``) stay unusable.
    Calling this again is free.
    """
    torch = import_torch()
    try:
        return import_optional("torchvision")
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    _forget_modules("torchvision")
    if not hasattr(torch.ops.torchvision, "nms"):
        library = torch.library.Library("torchvision", "DEF")
        for schema in _TORCHVISION_OP_SCHEMAS:
            library.define(schema)
        _torchvision_op_stubs.append(library)
    return importlib.import_module("torchvision")


def import_timm() -> ModuleType:
    """Import timm, after torchvision (see :func:`import_torchvision`), which timm imports itself."""
    import_torchvision()
    return import_optional("timm")


def import_optional(name: str) -> ModuleType:
    """Import a module of the optional stack by name; when it is not installed, say which extra provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"{name} is needed here but cannot be imported ({error}); {_INSTALL_HINT}") from error


def _forget_modules(package: str) -> None:
    """Drop a package and its submodules from the import cache, so a failed import can be retried from scratch."""
    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        del sys.modules[name]

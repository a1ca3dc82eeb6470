r"""The base phase of ACIL, DS-AL and GKEAL: a CIFAR ResNet trained by backpropagation on the base classes only, then
frozen; every later phase is learned in closed form on its features.

:func:`cifar_resnet` is the CIFAR ResNet of He et al. (CVPR 2016, §4.2): a 3x3 stem of 16 channels, three stages of
``(depth − 2) / 6`` basic blocks at 16, 32 and 64 channels (stride 2 between stages, shortcuts by strided
subsampling and zero-padded channels, "option A"), BatchNorm after every convolution and a global average pool:
ResNet-32 has 0.46 M parameters and 64-d features. :func:`train_base` trains it with the base-training recipe of
the analytic continual learning papers' code: SGD (momentum 0.9, weight decay 5e-4) with a cosine learning rate
from 0.5 at batch 256, random 4-pixel-padded crops and horizontal flips, the BatchNorm running statistics kept with
momentum 0.9 and used, frozen, to extract features afterwards.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from analytic import InputError, gradient
from analytic.internal import check_int, check_number

__all__ = ["FEATURE_DIM", "BaseNetwork", "cifar_resnet", "train_base"]

FEATURE_BATCH = 512
FEATURE_DIM = 64  # channels of the last stage


def _batch_norm(train: bool) -> nn.BatchNorm:
    """BatchNorm as torch's: batch statistics while training, running ones (momentum 0.9) after."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class _BasicBlock(nn.Module):
    channels: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.Conv(self.channels, (3, 3), strides=self.stride, padding=1, use_bias=False)(x)
        y = nn.relu(_batch_norm(train)(y))
        y = _batch_norm(train)(nn.Conv(self.channels, (3, 3), padding=1, use_bias=False)(y))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.channels:
            shortcut = x[:, :: self.stride, :: self.stride]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, self.channels - x.shape[-1])))
        return nn.relu(y + shortcut)


class _CifarResNet(nn.Module):
    depth: int
    n_classes: int

    def features(self, x, train: bool = False):
        return self(x, train, features_only=True)

    @nn.compact
    def __call__(self, x, train: bool = False, features_only: bool = False):
        x = nn.Conv(16, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(_batch_norm(train)(x))
        for stage, channels in enumerate((FEATURE_DIM // 4, FEATURE_DIM // 2, FEATURE_DIM)):
            for block in range((self.depth - 2) // 6):
                x = _BasicBlock(channels, 2 if stage > 0 and block == 0 else 1)(x, train)
        pooled = x.mean(axis=(1, 2))
        return pooled if features_only else nn.Dense(self.n_classes, name="classifier")(pooled)


def cifar_resnet(depth: int, n_classes: int) -> nn.Module:
    r"""The CIFAR ResNet of He et al. (2016) with ``depth = 6n + 2`` layers (20, 32, 44, 56, 110) and a linear
    classifier over its 64-d pooled features.

    .. math:: h = \mathrm{pool}(\mathrm{stage}_{64}(\mathrm{stage}_{32}(\mathrm{stage}_{16}(
       \mathrm{ReLU}(\mathrm{BN}(\mathrm{conv}_{3\times3}(x))))))), \quad z = W^\top h + b

    Args:
      depth: 6n + 2 (n basic blocks per stage; 32 is ACIL's backbone).
      n_classes: outputs of the classifier.

    Returns:
      The flax module: ``apply(variables, images, train)`` gives logits, ``method="features"`` the features.

    Raises:
      analytic.InputError: ``depth`` is not 6n + 2 with n ≥ 1, or ``n_classes`` is not a positive integer.

    Example:
      >>> module = cifar_resnet(8, 3)
      >>> variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> module.apply(variables, jnp.zeros((2, 8, 8, 1)), method="features").shape
      (2, 64)
    """
    check_int("depth", depth, minimum=8)
    if (depth - 2) % 6:
        raise InputError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110), got {depth}")
    return _CifarResNet(int(depth), check_int("n_classes", n_classes))


@dataclasses.dataclass(frozen=True, eq=False)
class BaseNetwork:
    """A network trained on the base classes and frozen: a feature extractor for the closed-form phases.

    Attributes:
      module: the :func:`cifar_resnet`.
      variables: ``{"params", "batch_stats"}`` after training.
      mean, std: per-channel statistics of the base training images (in [0, 1]) that inputs are standardized with.
      base_classes: the dataset labels of its classifier's outputs, in order.
      input_shape: ``(H, W, C)`` of the images it was trained on, the only shape it takes.
      train_accuracy: its accuracy (%) on the base training images, with the frozen statistics.
      seconds: wall time of the training.

    Example:
      >>> x, y = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), np.arange(16) % 2
      >>> network = train_base(x, y, depth=8, epochs=1, batch_size=8)
      >>> network.input_shape, network.features(x[:3]).shape
      ((8, 8, 1), (3, 64))
    """

    module: nn.Module
    variables: dict
    mean: np.ndarray
    std: np.ndarray
    base_classes: np.ndarray
    input_shape: tuple[int, int, int]
    train_accuracy: float
    seconds: float

    def features(self, images) -> np.ndarray:
        """The 64-d pooled features ``(n, 64)`` float32 of uint8 (or [0, 1] float) NHWC images, in batches.

        Raises:
          analytic.InputError: the images are not of ``input_shape``.
        """
        shape = np.shape(images)[1:] + ((1,) if np.ndim(images) == 3 else ())
        if shape != self.input_shape:
            raise InputError(f"this network takes images of shape {self.input_shape}, got {tuple(shape)}")
        return _apply_in_batches(self.module, self.variables, _standardized(images, self.mean, self.std), "features")


def _standardized(images, mean, std) -> np.ndarray:
    images = np.asarray(images)
    scaled = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    scaled = scaled[..., None] if scaled.ndim == 3 else scaled
    return (scaled - mean) / std


def _apply_in_batches(module, variables, standardized, method) -> np.ndarray:
    apply = _frozen_apply(module, method)
    return np.concatenate([np.asarray(apply(variables, standardized[i : i + FEATURE_BATCH]))
                           for i in range(0, len(standardized), FEATURE_BATCH)])


@functools.cache
def _frozen_apply(module: nn.Module, method: str):
    return jax.jit(lambda variables, x: module.apply(variables, x, method=method))


def _augment(images: jax.Array, key: jax.Array) -> jax.Array:
    """Random crops of the images zero-padded by 4 pixels, each flipped left-right with probability ½."""
    n, height, width, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = jax.random.randint(crop_key, (n, 2), 0, 9)
    crops = jax.vmap(lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (height, width,
                                                                                       image.shape[-1])))(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, crops[:, :, ::-1], crops)


def _cosine(total_steps: int):
    """The multiplier ½ (1 + cos(π t / T)) of the learning rate at step t of T (the step count is int32: cast)."""
    return lambda step: 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(jnp.asarray(step, jnp.float32) / total_steps, 1.0)))


@functools.partial(jax.jit, static_argnames=("module", "optimizer"))
def _train_step(params, batch_stats, opt_state, images, labels, key, *, module, optimizer):
    """One SGD step on an augmented batch; BatchNorm normalizes with the batch's statistics and updates its
    running ones."""

    def loss(p):
        logits, updated = module.apply({"params": p, "batch_stats": batch_stats}, _augment(images, key), True,
                                       mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updated["batch_stats"]

    (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value


def train_base(images, labels, *, depth: int = 32, epochs: int = 300, learning_rate: float = 0.5,
               batch_size: int = 256, seed: int = 0, progress: bool = False) -> BaseNetwork:
    r"""Train a :func:`cifar_resnet` on the base phase's images by cross-entropy and freeze it.

    SGD with momentum 0.9 and weight decay 5e-4 (:func:`analytic.gradient.make_optimizer`) and the cosine schedule
    :math:`\eta_t = \eta \cdot \tfrac12 (1 + \cos(\pi t / T))` over the :math:`T` steps; each epoch visits a seeded
    permutation in full batches (the last partial batch is dropped, so one program is compiled); every batch is
    augmented by random padded crops and flips.

    Args:
      images: ``(n, H, W)`` or ``(n, H, W, C)`` uint8 images (or floats in [0, 1]) of the base classes.
      labels: ``(n,)`` integer labels; the classifier has one output per distinct label.
      depth: 6n + 2 layers (32: ResNet-32).
      epochs: passes over the images.
      learning_rate: the peak rate η (0.5 at batch 256 in the papers' code).
      batch_size: images per step (capped at n).
      seed: initialization, order and augmentation.
      progress: show a progress bar over the epochs.

    Returns:
      The frozen :class:`BaseNetwork`.

    Raises:
      analytic.InputError: images are not 3-d or 4-d, hold NaN/Inf, do not match the labels in length, or a label is
        not an integer; a setting is out of range.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8), np.arange(16) % 2
      >>> network = train_base(x, y, depth=8, epochs=1, batch_size=8)
      >>> network.features(x).shape, network.base_classes.tolist()
      ((16, 64), [0, 1])
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim not in (3, 4) or len(images) != len(labels) or len(labels) == 0:
        raise InputError(f"images must be (n, H, W[, C]) with one label each, got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    if not np.isfinite(images).all():
        raise InputError("images hold NaN or Inf")
    for name, value in {"epochs": epochs, "batch_size": batch_size}.items():
        check_int(name, value)
    check_number("learning_rate", learning_rate, low=0, low_open=True)
    base_classes, targets = np.unique(labels, return_inverse=True)
    module = cifar_resnet(depth, base_classes.size)
    scaled = _standardized(images, 0.0, 1.0)
    mean, std = scaled.mean(axis=(0, 1, 2)), scaled.std(axis=(0, 1, 2)) + 1e-6
    x = (scaled - mean) / std
    batch = min(int(batch_size), len(x))
    steps_per_epoch = len(x) // batch
    optimizer = gradient.make_optimizer(float(learning_rate), schedule=_cosine(epochs * steps_per_epoch))
    key = jax.random.key(seed)
    variables = module.init(key, jnp.zeros((1, *x.shape[1:]), jnp.float32))
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc=f"ResNet-{depth} on {base_classes.size} base classes", disable=not progress):
        order = rng.permutation(len(x))
        for step in range(steps_per_epoch):
            rows = order[step * batch : (step + 1) * batch]
            params, batch_stats, opt_state, _ = _train_step(
                params, batch_stats, opt_state, jnp.asarray(x[rows]), jnp.asarray(targets[rows]),
                jax.random.fold_in(key, epoch * steps_per_epoch + step), module=module, optimizer=optimizer)
    trained = {"params": params, "batch_stats": batch_stats}
    predicted = np.argmax(_apply_in_batches(module, trained, x, "__call__"), axis=1)
    return BaseNetwork(module, jax.device_get(trained), mean, std, base_classes, x.shape[1:],
                       float(100 * np.mean(predicted == targets)), time.perf_counter() - start)

r"""Unlearning against the network: the gradient methods over every trainable weight, residual feature alignment
with LoRA adapters, and SISA, the exact sharded peer.

A :class:`Network` is a flax classifier with pure ``logits(params, inputs)`` and ``features(params, inputs)`` (the
penultimate features) and its recipe's starting point ``initial(seed)``. Two kinds are built here:

* :func:`small_resnet` — a small residual CNN trained from scratch, the stand-in for the field's "ResNet-18 on
  CIFAR-10";
* :func:`split_backbone` — a pretrained MobileNetV2 / EfficientNet-Lite0 cut after a block: the early blocks stay
  frozen (their activations are computed once and cached), the last ``trainable_blocks`` inverted-residual blocks,
  the 1x1 head convolution and a new linear classifier train (BatchNorm keeps its ImageNet running statistics; its
  scale and shift train).

The original model is :func:`train_network` (SGD, momentum 0.9, weight decay 5e-4, batch 256: the recipe of
:mod:`analytic.gradient`) from ``initial(seed)``; the gold standard is the same recipe on the retained set only.

* :class:`NetworkUnlearner` — every method of :mod:`unlearning.methods` (Retrain, FT, GA, NegGrad+, RL, ℓ1-sparse,
  SalUn, SCRUB, Boundary Shrink, Forget Vector) with the same losses and settings, over all trainable parameters
  (SalUn's saliency mask is over the network's weights, Boundary Shrink's FGSM step is in input space).
* :class:`ResidualAlignment` — LoRA adapters on every kernel below the classifier split a layer's output into
  pretrained + residual; only the adapters train, to a zero residual on the retained set and a shifted one on the
  forget set.
* :class:`SisaUnlearner` with :func:`train_sisa` — Bourtoule et al. (IEEE S&P 2021): shards, each its own network
  trained slice by slice with checkpoints; a request retrains only the affected shards, from the last checkpoint
  before the first affected slice. Exact with respect to retraining the ensemble by the same recipe.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from tqdm.auto import tqdm

import analytic
from analytic import gradient
from analytic.backbones import Backbone
from analytic.backbones.layers import batch_norm, conv, global_average_pool
from analytic.backbones.mobilenet import InvertedResidual, InvertedResidualNet
from unlearning import methods

__all__ = ["Network", "NetworkUnlearner", "ResidualAlignment", "Sisa", "SisaUnlearner", "small_resnet",
           "split_backbone", "train_network", "train_sisa"]

Params = Any
CLASSIFIER = "classifier"
INFERENCE_BATCH = 512
ALIGNMENT_RANK = 4


# ------------------------------------------------------------------------------------------------- networks


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    r"""A classifier network: a flax module, its frozen variables and the starting point of its training recipe.

    ``logits(params, inputs)`` is :math:`z = W^\top h_\theta(x) + b`, ``features(params, inputs)`` is
    :math:`h_\theta(x)`; the classifier's parameters live under ``params["classifier"]``. Instances compare by
    identity, so the compiled training steps of one network are reused across calls.

    Attributes:
      name: what the network is, for reports.
      module: flax module with ``__call__(inputs) -> logits`` and ``features(inputs)``.
      constants: variable collections that never train (e.g. BatchNorm running statistics), possibly empty.
      initial: ``seed -> params`` before training (random for a network trained from scratch; pretrained blocks
        with a freshly drawn classifier for a fine-tuned one).
      description: which layers train and which stay frozen.

    Example:
      >>> network = small_resnet(3, input_shape=(8, 8, 1), width=4)
      >>> params = network.initial(0)
      >>> network.logits(params, jnp.zeros((2, 8, 8, 1))).shape, network.features(params, jnp.zeros((2, 8, 8, 1))).shape
      ((2, 3), (2, 8))
    """

    name: str
    module: nn.Module
    constants: Mapping[str, Any]
    initial: Callable[[int], Params]
    description: str = ""

    def logits(self, params: Params, inputs: jax.Array) -> jax.Array:
        """Class scores ``(n, C)`` of ``inputs`` under ``params``."""
        return self.module.apply({"params": params, **self.constants}, inputs)

    def features(self, params: Params, inputs: jax.Array) -> jax.Array:
        """Penultimate features ``(n, d)`` (the classifier's inputs) of ``inputs`` under ``params``."""
        return self.module.apply({"params": params, **self.constants}, inputs, method="features")


class _SmallResNet(nn.Module):
    """3x3 stem, ``stages`` residual blocks (two 3x3 convolutions with ReLU, identity or 1x1 strided shortcut; width
    doubles and resolution halves from the second stage), global average pool, linear classifier."""

    n_classes: int
    width: int
    stages: int

    def features(self, x):
        return self(x, features_only=True)

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        x = nn.relu(nn.Conv(self.width, (3, 3), name="stem")(x))
        for stage in range(self.stages):
            channels, stride = self.width * 2**stage, 1 if stage == 0 else 2
            y = nn.relu(nn.Conv(channels, (3, 3), strides=stride, name=f"block{stage}_conv1")(x))
            y = nn.Conv(channels, (3, 3), name=f"block{stage}_conv2")(y)
            shortcut = x if stride == 1 and x.shape[-1] == channels else nn.Conv(
                channels, (1, 1), strides=stride, name=f"block{stage}_shortcut")(x)
            x = nn.relu(y + shortcut)
        pooled = global_average_pool(x)
        return pooled if features_only else nn.Dense(self.n_classes, name=CLASSIFIER)(pooled)


def small_resnet(n_classes: int, *, input_shape: tuple[int, int, int], width: int = 16,
                 stages: int = 2) -> Network:
    r"""A small residual CNN trained from scratch (He et al., CVPR 2016, shrunk): the field's "ResNet-18 on
    CIFAR-10" stand-in at a size a CPU trains in minutes.

    .. math::
        h_0 = \mathrm{ReLU}(\mathrm{conv}_{3\times3}(x)), \quad
        h_{s+1} = \mathrm{ReLU}(\mathrm{conv}(\mathrm{ReLU}(\mathrm{conv}(h_s))) + \mathrm{shortcut}(h_s)), \quad
        z = W^\top \mathrm{pool}(h_S) + b

    Every layer trains; ``initial(seed)`` is flax's default initialisation from ``jax.random.key(seed)``.

    Args:
      n_classes: C, the outputs.
      input_shape: ``(height, width, channels)`` of one input.
      width: channels of the first stage (doubled at each later stage).
      stages: residual blocks.

    Returns:
      The :class:`Network`; its features have ``width * 2**(stages - 1)`` dimensions.

    Raises:
      analytic.InputError: a size is not a positive integer, or ``input_shape`` is not three sizes.

    Example:
      >>> network = small_resnet(10, input_shape=(8, 8, 1), width=4)
      >>> network.logits(network.initial(0), jnp.zeros((1, 8, 8, 1))).shape
      (1, 10)
    """
    for name, value in {"n_classes": n_classes, "width": width, "stages": stages}.items():
        analytic.validation.check_int(name, value)
    if len(tuple(input_shape)) != 3:
        raise analytic.InputError(f"input_shape must be (height, width, channels), got {input_shape}")
    for value in input_shape:
        analytic.validation.check_int("input_shape", value)
    module = _SmallResNet(int(n_classes), int(width), int(stages))
    sample = jnp.zeros((1, *input_shape), jnp.float32)
    initial = lambda seed: module.init(jax.random.key(seed), sample)["params"]  # noqa: E731
    return Network(f"small ResNet (width {width}, {stages} stages, from scratch)", module, {}, initial,
                   "every layer trains")


class _BlockSpec(NamedTuple):
    name: str
    stage: Any
    stride: int


def _block_specs(net: InvertedResidualNet) -> list[_BlockSpec]:
    return [_BlockSpec(f"blocks_{s}_{i}", stage, stage.stride if i == 0 else 1)
            for s, stage in enumerate(net.stages) for i in range(stage.repeats)]


def _block(net: InvertedResidualNet, spec: _BlockSpec) -> InvertedResidual:
    return InvertedResidual(spec.stage.channels, spec.stage.expand_ratio, spec.stride, spec.stage.kernel_size,
                            net.bn_epsilon, net.tf_same_padding, name=spec.name)


class _FrozenPrefix(nn.Module):
    """The stem and the first ``frozen_blocks`` blocks of an inverted-residual network, with its layer names."""

    net: InvertedResidualNet
    frozen_blocks: int

    @nn.compact
    def __call__(self, images):
        net = self.net
        stem = conv(net.stem_channels, 3, stride=2, padding="SAME" if net.tf_same_padding else None, name="stem_conv")
        x = nn.relu6(batch_norm(epsilon=net.bn_epsilon, name="stem_bn")(stem(images)))
        for spec in _block_specs(net)[: self.frozen_blocks]:
            x = _block(net, spec)(x)
        return x


class _TrainableTail(nn.Module):
    """The blocks after the frozen prefix, the 1x1 head convolution and BatchNorm, pooling and a classifier."""

    net: InvertedResidualNet
    frozen_blocks: int
    n_classes: int

    def features(self, x):
        return self(x, features_only=True)

    @nn.compact
    def __call__(self, x, features_only: bool = False):
        net = self.net
        for spec in _block_specs(net)[self.frozen_blocks :]:
            x = _block(net, spec)(x)
        x = conv(net.head_channels, 1, name="head_conv")(x)
        pooled = global_average_pool(nn.relu6(batch_norm(epsilon=net.bn_epsilon, name="head_bn")(x)))
        return pooled if features_only else nn.Dense(self.n_classes, name=CLASSIFIER)(pooled)


def _restrict(variables: Mapping, names: set[str]) -> dict:
    return {collection: {name: value for name, value in tree.items() if name in names}
            for collection, tree in variables.items()}


def split_backbone(backbone: Backbone, n_classes: int, *, trainable_blocks: int,
                   image_size: int) -> tuple[Callable[[jax.Array], jax.Array], Network]:
    r"""Cut a pretrained inverted-residual backbone (MobileNetV2, EfficientNet-Lite0) into a frozen prefix and a
    trainable :class:`Network` on top of it.

    .. math::
        a = \mathrm{prefix}(x) \;\text{(frozen, cached)}, \qquad
        z = W^\top \mathrm{pool}(\mathrm{ReLU6}(\mathrm{BN}(\mathrm{conv}_{1\times1}(
        \mathrm{blocks}_{K-k+1..K}(a))))) + b

    The last ``trainable_blocks`` inverted-residual blocks and the head convolution start from the backbone's
    ImageNet weights and train (with BatchNorm's running statistics frozen); the classifier is new, drawn from the
    seed by ``initial(seed)``. The network's features at ``initial`` are the backbone's pooled features.

    Args:
      backbone: an ``analytic.backbones`` MobileNetV2 or EfficientNet-Lite0.
      n_classes: C.
      trainable_blocks: how many of the last inverted-residual blocks train (0: only the head convolution and the
        classifier).
      image_size: the side of the (normalized, NHWC) images the prefix will see.

    Returns:
      ``(prefix, network)``: ``prefix(images) -> activations``, a jitted pure function of a batch of images, and
      the network whose inputs are those activations.

    Raises:
      analytic.InputError: the backbone is not an inverted-residual network, or ``trainable_blocks`` is outside
        ``0 … number of blocks``.

    Example:
      >>> backbone = analytic.backbones.create_backbone("mobilenetv2_100")
      >>> prefix, network = split_backbone(backbone, 10, trainable_blocks=1, image_size=32)
      >>> activations = jax.eval_shape(prefix, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
      >>> activations.shape, jax.eval_shape(network.logits, network.initial(0), activations).shape
      ((2, 1, 1, 160), (2, 10))
    """
    net = backbone.module
    if not isinstance(net, InvertedResidualNet):
        raise analytic.InputError(f"split_backbone needs an inverted-residual backbone (MobileNetV2, "
                                  f"EfficientNet-Lite0), got {backbone.name!r}")
    specs = _block_specs(net)
    analytic.validation.check_int("trainable_blocks", trainable_blocks, minimum=0)
    analytic.validation.check_int("image_size", image_size)
    if trainable_blocks > len(specs):
        raise analytic.InputError(f"trainable_blocks must be at most {len(specs)} for {backbone.name}, got "
                                  f"{trainable_blocks}")
    frozen_blocks = len(specs) - int(trainable_blocks)
    prefix_names = {"stem_conv", "stem_bn", *(spec.name for spec in specs[:frozen_blocks])}
    tail_names = {"head_conv", "head_bn", *(spec.name for spec in specs[frozen_blocks:])}
    prefix_module = _FrozenPrefix(net, frozen_blocks)
    prefix_variables = _restrict(backbone.variables, prefix_names)
    prefix = jax.jit(lambda images: prefix_module.apply(prefix_variables, images))
    tail_variables = _restrict(backbone.variables, tail_names)
    tail = _TrainableTail(net, frozen_blocks, int(n_classes))
    activation = jax.eval_shape(prefix, jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32))
    sample = jnp.zeros(activation.shape, jnp.float32)

    def initial(seed: int) -> Params:
        drawn = tail.init(jax.random.key(seed), sample)["params"]
        return {**tail_variables["params"], CLASSIFIER: drawn[CLASSIFIER]}

    moving = ", ".join(spec.name for spec in specs[frozen_blocks:])
    constants = {name: tree for name, tree in tail_variables.items() if name != "params"}
    return prefix, Network(f"{backbone.name} (ImageNet, {image_size}px, last {trainable_blocks} blocks fine-tuned)",
                           tail, constants, initial,
                           f"trainable: {moving or 'no block'}, head_conv, head_bn scale/shift, classifier; frozen: "
                           f"stem and blocks before, every BatchNorm's running statistics")


# --------------------------------------------------------------------------------------------------- recipe


def _batched(function: Callable, inputs, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    inputs = np.asarray(inputs, np.float32)
    return np.concatenate([np.asarray(function(jnp.asarray(inputs[i : i + batch_size])))
                           for i in range(0, len(inputs), batch_size)])


def train_network(network: Network, params: Params, inputs, labels, *, epochs: int, learning_rate: float,
                  batch_size: int = 256, seed: int = 0) -> Params:
    r"""The training recipe of the original and the retrained network: cross-entropy by SGD with momentum 0.9 and
    weight decay 5e-4 (:func:`analytic.gradient.make_optimizer`), shuffled batches, every parameter in ``params``
    trained.

    .. math:: \theta \leftarrow \theta - \eta\, v, \quad v \leftarrow 0.9 v + \nabla_\theta
       \mathrm{CE}(z_\theta(x_B), y_B) + 5\cdot10^{-4}\,\theta

    Args:
      network: the network.
      params: where training starts, usually ``network.initial(seed)``.
      inputs: ``(n, ...)`` inputs the network takes.
      labels: ``(n,)`` integer labels in ``0 … C−1``.
      epochs: passes over the data.
      learning_rate: η.
      batch_size: rows per step (capped at n).
      seed: shuffling.

    Returns:
      The trained parameters.

    Raises:
      analytic.InputError: inputs and labels differ in length, or are empty.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(8, 6, 6, 1)), np.arange(8) % 2
      >>> params = train_network(network, network.initial(0), x, y, epochs=1, learning_rate=0.1, batch_size=4)
      >>> jax.tree.structure(params) == jax.tree.structure(network.initial(0))
      True
    """
    losses = methods._losses_of(network.logits)
    stream = methods._stream(inputs, labels)
    return gradient.train(params, losses.ce, stream, optimizer=gradient.make_optimizer(learning_rate),
                          epochs=epochs, batch_size=batch_size, seed=seed)[0]


def _network_unlearned(name: str, logits: Callable, n_classes: int, seconds: float, parameters,
                       learning_rate: float | None = None) -> methods.Unlearned:
    return methods.Unlearned(name=name, logits=lambda inputs: _batched(logits, inputs), class_ids=np.arange(n_classes),
                             seconds=seconds, learning_rate=learning_rate, parameters=parameters)


# ------------------------------------------------------------------------------------------ gradient methods


@dataclasses.dataclass(frozen=True)
class NetworkUnlearner:
    """A method of :mod:`unlearning.methods`'s table on a whole :class:`Network`: the same losses and settings
    (:data:`unlearning.methods.DEFAULT_EPOCHS`, α, T, the saliency share, the FGSM step), over every trainable
    parameter.

    ``retrain`` is the gold standard: :func:`train_network`'s recipe from ``network.initial(seed)`` on the retained
    set only, for ``epochs`` (required).

    Attributes:
      method: one of :data:`unlearning.methods.GRADIENT_METHODS`.
      network: the network.
      original: its parameters after training on all the data (ignored by ``retrain``).
      learning_rate: SGD learning rate.
      epochs: unlearning epochs (default: the method's usual setting; required for ``retrain``).
      seed: shuffling, random labels and the fresh initialisation.
      batch_size: rows per step.

    ``unlearn(task)`` (inputs in ``task.train_features`` / ``task.test_features``) raises
    :class:`analytic.InputError` for an unknown method or ``retrain`` without ``epochs``.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32), np.arange(16) % 2
      >>> task = unlearning.methods.UnlearningTask(x, y, np.arange(16) < 4, x, y, n_classes=2)
      >>> model = NetworkUnlearner("FT", network, network.initial(0), learning_rate=0.01, epochs=1,
      ...                          batch_size=4).unlearn(task)
      >>> model.name, model.logits(x).shape
      ('FT', (16, 2))
    """

    method: str
    network: Network
    original: Params
    learning_rate: float
    epochs: int | None = None
    seed: int = 0
    batch_size: int = 256

    @property
    def name(self) -> str:
        """The method's name in reports."""
        return self.method

    def unlearn(self, task: methods.UnlearningTask) -> methods.Unlearned:
        """Run the method on ``task``; the wall time (compilation included) is in ``seconds``."""
        losses = methods._losses_of(self.network.logits)
        params, shift, seconds = methods._unlearn_by_gradient(
            self.method, self.original, lambda: self.network.initial(self.seed), losses, task,
            learning_rate=self.learning_rate, epochs=self.epochs, seed=self.seed, batch_size=self.batch_size)
        return _network_unlearned(self.method, lambda x: losses.logits(params, x + shift[None]), task.n_classes,
                                  seconds, params, self.learning_rate)


# ------------------------------------------------------------------------------- residual feature alignment


def _adapted(base: Params, adapters: Mapping[str, dict]) -> Params:
    """``base`` with each adapted kernel replaced by :math:`W + A B` (reshaped to the kernel's shape)."""
    flat = traverse_util.flatten_dict(base, sep="/")
    for path, adapter in adapters.items():
        flat[path] = flat[path] + (adapter["down"] @ adapter["up"]).reshape(flat[path].shape)
    return traverse_util.unflatten_dict(flat, sep="/")


def _init_adapters(base: Params, rank: int, seed: int) -> dict[str, dict]:
    """LoRA factors for every kernel outside the classifier: ``down`` ~ N(0, 1/fan_in), ``up`` = 0 (Hu et al.,
    ICLR 2022), so the adapted network starts equal to the base."""
    kernels = {path: leaf for path, leaf in traverse_util.flatten_dict(base, sep="/").items()
               if path.endswith("kernel") and not path.startswith(CLASSIFIER)}
    keys = jax.random.split(jax.random.key(seed), max(len(kernels), 1))
    adapters = {}
    for key, (path, kernel) in zip(keys, sorted(kernels.items())):
        fan_in = int(np.prod(kernel.shape[:-1]))
        adapters[path] = {"down": jax.random.normal(key, (fan_in, rank), kernel.dtype) / np.sqrt(fan_in).astype(
            np.float32), "up": jnp.zeros((rank, kernel.shape[-1]), kernel.dtype)}
    return adapters


@functools.cache
def _alignment_loss(network: Network) -> Callable:
    def loss(adapters, retain, forget, base):
        adapted = _adapted(base, adapters)
        retained = network.features(adapted, retain["features"]) - retain["targets"]
        forgotten = network.features(adapted, forget["features"]) - forget["targets"]
        return jnp.mean(retained * retained) + jnp.mean(forgotten * forgotten)

    return loss


@dataclasses.dataclass(frozen=True)
class ResidualAlignment:
    r"""Residual feature alignment: LoRA adapters :math:`\Delta W = A B` (rank r) on every kernel below the
    classifier split each layer's output into pretrained + residual, :math:`xW + xAB`; only the adapters train.

    .. math::
        \min_{A, B}\; \frac{1}{|D_r|} \sum_{x \in D_r} \tfrac1d \|h_{\theta + AB}(x) - h_\theta(x)\|^2
        + \frac{1}{|D_f|} \sum_{x \in D_f} \tfrac1d \|h_{\theta + AB}(x) - \mu_{\tilde y(x)}\|^2

    with :math:`h` the penultimate features, :math:`\mu_c` the mean original feature of retained class c and
    :math:`\tilde y(x)` a uniformly random retained class other than x's: zero residual on the retained set, a
    residual on the forget set that shifts its features onto another class. The classifier and every base weight
    stay bit-identical.

    Attributes:
      network: the network.
      original: its trained parameters (the base, never changed).
      learning_rate: SGD learning rate of the adapters.
      epochs: passes over the retained set.
      rank: r.
      seed: adapter initialisation, the shift targets and shuffling.
      batch_size: rows per step.

    ``unlearn(task)`` returns an :class:`unlearning.methods.Unlearned` whose ``parameters`` are
    ``{"base": original, "adapters": {kernel path: {"down": A, "up": B}}}``; it raises
    :class:`analytic.InputError` when the task retains fewer than two classes.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32), np.arange(16) % 2
      >>> task = unlearning.methods.UnlearningTask(x, y, np.arange(16) < 4, x, y, n_classes=2)
      >>> model = ResidualAlignment(network, network.initial(0), 0.01, epochs=1, batch_size=4).unlearn(task)
      >>> sorted(model.parameters["adapters"])[0], model.logits(x).shape
      ('block0_conv1/kernel', (16, 2))
    """

    network: Network
    original: Params
    learning_rate: float
    epochs: int = 10
    rank: int = ALIGNMENT_RANK
    seed: int = 0
    batch_size: int = 256

    @property
    def name(self) -> str:
        """The method's name in reports."""
        return "LoRA alignment"

    def unlearn(self, task: methods.UnlearningTask) -> methods.Unlearned:
        """Train the adapters on ``task``; the wall time (target features and compilation included) in ``seconds``."""
        analytic.validation.check_int("rank", self.rank)
        (retain_x, retain_y), (forget_x, forget_y) = task.retain, task.forget
        kept = np.unique(retain_y)
        if kept.size < 2:
            raise analytic.InputError(f"residual alignment needs at least two retained classes, got {kept.tolist()}")
        start = time.perf_counter()
        features = jax.jit(self.network.features)
        retained_features = _batched(lambda x: features(self.original, x), retain_x)
        centroids = np.stack([retained_features[retain_y == c].mean(axis=0) for c in kept])
        rng = np.random.default_rng(self.seed)
        other = kept[(np.searchsorted(kept, forget_y) + rng.integers(1, kept.size, size=len(forget_y))) % kept.size]
        shifted = np.where(np.isin(forget_y, kept), other, kept[rng.integers(0, kept.size, size=len(forget_y))])
        retain = {"features": np.asarray(retain_x, np.float32), "targets": retained_features}
        forget = {"features": np.asarray(forget_x, np.float32),
                  "targets": centroids[np.searchsorted(kept, shifted)].astype(np.float32)}
        adapters, _ = gradient.train(
            _init_adapters(self.original, self.rank, self.seed), _alignment_loss(self.network), (retain, forget),
            optimizer=gradient.make_optimizer(self.learning_rate), epochs=self.epochs, batch_size=self.batch_size,
            seed=self.seed, loss_args=(self.original,))
        adapters = jax.block_until_ready(adapters)
        seconds = time.perf_counter() - start
        adapted = _adapted(self.original, adapters)
        logits = methods._losses_of(self.network.logits).logits
        return _network_unlearned(self.name, lambda x: logits(adapted, x), task.n_classes, seconds,
                                  {"base": self.original, "adapters": adapters}, self.learning_rate)


# ------------------------------------------------------------------------------------------------------ SISA


class Sisa(NamedTuple):
    """A SISA ensemble (Bourtoule et al., IEEE S&P 2021): one network per shard, each trained slice by slice.

    Attributes:
      network: the architecture every shard shares.
      shard_params: the current parameters of each shard (``None`` for a shard all of whose samples were forgotten:
        it leaves the aggregate).
      checkpoints: ``checkpoints[s][r]`` — shard s's parameters after training on its slices ``0 … r``.
      shard_of, slice_of: ``(n,)`` the shard and slice of each training sample (in the training set's order).
      epochs_per_slice, learning_rate, batch_size, seed: the recipe, replayed by a forget request.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(8, 6, 6, 1)).astype(np.float32), np.arange(8) % 2
      >>> sisa = train_sisa(network, x, y, shards=2, slices=1, epochs_per_slice=1, learning_rate=0.01, batch_size=4)
      >>> sisa.logits(x).shape, np.allclose(np.exp(sisa.logits(x)).sum(axis=1), 1.0, atol=1e-5)
      ((8, 2), True)
    """

    network: Network
    shard_params: tuple
    checkpoints: tuple
    shard_of: np.ndarray
    slice_of: np.ndarray
    epochs_per_slice: int
    learning_rate: float
    batch_size: int
    seed: int

    def logits(self, inputs) -> np.ndarray:
        r"""The aggregate: log of the shards' mean softmax, :math:`\log \frac1S \sum_s \mathrm{softmax}(z_s(x))`.

        Args:
          inputs: ``(n, ...)`` inputs the network takes.

        Returns:
          ``(n, C)`` float32 log-probabilities.
        """
        logits = methods._losses_of(self.network.logits).logits
        probabilities = np.mean([_batched(lambda x, p=p: jax.nn.softmax(logits(p, x)), inputs)
                                 for p in self.shard_params if p is not None], axis=0)
        return np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))


def _train_shard(sisa_recipe: Sisa, shard: int, params: Params, first_slice: int, inputs, labels, keep,
                 slices: int) -> list:
    """Slices ``first_slice … slices−1`` of one shard, each trained on all of the shard's kept samples in slices up
    to it (a step with none leaves the parameters), from ``params``; returns the checkpoint after each."""
    checkpoints = []
    for r in range(first_slice, slices):
        rows = np.flatnonzero((sisa_recipe.shard_of == shard) & (sisa_recipe.slice_of <= r) & keep)
        if rows.size:
            params = train_network(sisa_recipe.network, params, inputs[rows], labels[rows],
                                   epochs=sisa_recipe.epochs_per_slice, learning_rate=sisa_recipe.learning_rate,
                                   batch_size=sisa_recipe.batch_size, seed=sisa_recipe.seed + shard)
        checkpoints.append(params)
    return checkpoints


def train_sisa(network: Network, inputs, labels, *, shards: int, slices: int, epochs_per_slice: int,
               learning_rate: float, batch_size: int = 256, seed: int = 0) -> Sisa:
    r"""Train a SISA ensemble: a seeded permutation deals the samples into ``shards`` disjoint shards of
    ``slices`` slices; shard s trains from ``network.initial(seed + s)`` on
    :math:`D_{s,0}`, then :math:`D_{s,0} \cup D_{s,1}`, …, ``epochs_per_slice`` epochs each, keeping a checkpoint
    after every slice (Bourtoule et al., IEEE S&P 2021).

    Args:
      network: the architecture of every shard.
      inputs, labels: the training set.
      shards: S.
      slices: R, slices per shard.
      epochs_per_slice: epochs of each incremental step.
      learning_rate, batch_size, seed: the recipe of :func:`train_network`.

    Returns:
      The :class:`Sisa` ensemble.

    Raises:
      analytic.InputError: a count is not a positive integer, or some slice would be empty.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32), np.arange(16) % 2
      >>> sisa = train_sisa(network, x, y, shards=2, slices=2, epochs_per_slice=1, learning_rate=0.01, batch_size=4)
      >>> len(sisa.shard_params), len(sisa.checkpoints[0]), np.bincount(sisa.shard_of).tolist()
      (2, 2, [8, 8])
    """
    for name, value in {"shards": shards, "slices": slices, "epochs_per_slice": epochs_per_slice}.items():
        analytic.validation.check_int(name, value)
    inputs, labels = np.asarray(inputs, np.float32), np.asarray(labels)
    if len(inputs) != len(labels):
        raise analytic.InputError(f"inputs ({len(inputs)}) and labels ({len(labels)}) differ in length")
    if len(labels) < shards * slices:
        raise analytic.InputError(f"{len(labels)} samples cannot fill {shards} shards x {slices} slices")
    position = np.empty(len(labels), np.int64)
    position[np.random.default_rng(seed).permutation(len(labels))] = np.arange(len(labels))
    shard_of, rank_in_shard = position % shards, position // shards
    slice_of = rank_in_shard * slices // np.bincount(shard_of, minlength=shards)[shard_of]
    recipe = Sisa(network, (), (), shard_of, slice_of, int(epochs_per_slice), float(learning_rate), int(batch_size),
                  int(seed))
    keep = np.ones(len(labels), bool)
    checkpoints = tuple(tuple(_train_shard(recipe, s, network.initial(seed + s), 0, inputs, labels, keep, slices))
                        for s in tqdm(range(shards), desc="SISA shards", leave=False))
    return recipe._replace(shard_params=tuple(c[-1] for c in checkpoints), checkpoints=checkpoints)


@dataclasses.dataclass(frozen=True)
class SisaUnlearner:
    r"""Forget by SISA: each shard holding a forget sample restarts from its checkpoint before the first affected
    slice :math:`r_0` and replays slices :math:`r_0 … R−1` without the forget samples; other shards are untouched.
    The result equals training every shard by the same recipe, seeds and slice assignment without the forget
    samples (exact with respect to retraining the ensemble; the assignment is that of the original training set).

    Attributes:
      ensemble: the :class:`Sisa` trained on the task's training set (same order).

    ``unlearn(task)`` returns an :class:`unlearning.methods.Unlearned` whose ``parameters`` is the updated
    :class:`Sisa` (its checkpoints of retrained shards replaced) and raises :class:`analytic.InputError` when the
    task's training set is not the ensemble's.

    Example:
      >>> network = small_resnet(2, input_shape=(6, 6, 1), width=4)
      >>> x, y = np.random.default_rng(0).normal(size=(16, 6, 6, 1)).astype(np.float32), np.arange(16) % 2
      >>> sisa = train_sisa(network, x, y, shards=2, slices=2, epochs_per_slice=1, learning_rate=0.01, batch_size=4)
      >>> task = unlearning.methods.UnlearningTask(x, y, (sisa.shard_of == 1) & (sisa.slice_of == 1), x, y, n_classes=2)
      >>> model = SisaUnlearner(sisa).unlearn(task)
      >>> model.parameters.shard_params[0] is sisa.shard_params[0], model.logits(x).shape
      (True, (16, 2))
    """

    ensemble: Sisa

    @property
    def name(self) -> str:
        """The method's name in reports."""
        return f"SISA ({len(self.ensemble.shard_params)} shards, exact)"

    def unlearn(self, task: methods.UnlearningTask) -> methods.Unlearned:
        """Retrain the affected shards from their last clean checkpoints; wall time in ``seconds``."""
        sisa = self.ensemble
        if len(task.train_labels) != len(sisa.shard_of):
            raise analytic.InputError(f"the task has {len(task.train_labels)} training samples, the SISA ensemble "
                                      f"was trained on {len(sisa.shard_of)}")
        start = time.perf_counter()
        inputs, labels, keep = np.asarray(task.train_features, np.float32), task.train_labels, ~task.forget_mask
        params, checkpoints = list(sisa.shard_params), list(sisa.checkpoints)
        for shard in np.unique(sisa.shard_of[task.forget_mask]):
            if not np.any(keep & (sisa.shard_of == shard)):  # nothing left: the shard leaves the aggregate
                params[shard], checkpoints[shard] = None, ()
                continue
            first = int(sisa.slice_of[task.forget_mask & (sisa.shard_of == shard)].min())
            start_params = checkpoints[shard][first - 1] if first > 0 else sisa.network.initial(sisa.seed + shard)
            replayed = _train_shard(sisa, int(shard), start_params, first, inputs, labels, keep,
                                    len(checkpoints[shard]))
            checkpoints[shard] = (*checkpoints[shard][:first], *replayed)
            params[shard] = checkpoints[shard][-1]
        updated = sisa._replace(shard_params=tuple(jax.block_until_ready(params)), checkpoints=tuple(checkpoints))
        seconds = time.perf_counter() - start
        return methods.Unlearned(name=self.name, logits=updated.logits, class_ids=np.arange(task.n_classes),
                                 seconds=seconds, parameters=updated)

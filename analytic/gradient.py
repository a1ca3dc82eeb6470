"""Gradient-trained heads: the conventional route the analytic heads are compared against.

One trainer serves every gradient baseline (FedAvg/FedProx local epochs, fine-tuning and joint training in
continual learning, FT / GA / NegGrad+ / RL / ℓ1-sparse / SalUn / SCRUB / Boundary Shrink / Forget Vector in
unlearning). A method is a loss function plus, at most, a gradient mask or a second data stream:

* parameters are a pytree — ``init_head`` makes a tuple of dense layers ``{"weights", "bias"}``, but ``train``
  accepts any pytree (e.g. a single input perturbation δ for Forget Vector);
* ``loss_fn(params, *batches, *loss_args) -> scalar`` is pure; ``batches`` holds one batch per data stream and
  ``loss_args`` carries per-call constants (FedProx's global parameters, ℓ1-sparse's α_t, a frozen teacher) as
  traced arguments, so changing them never recompiles;
* the optimizer is SGD with momentum and L2 weight decay (``make_optimizer``), the defaults of the common
  unlearning reference code.

Labels are contiguous integers ``0 … C−1``; callers map their class ids.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from analytic.errors import InputError
from analytic.validation import check_features, check_int, check_labels, check_number

__all__ = [
    "accuracy",
    "classification_loss",
    "cross_entropy",
    "fit_softmax_head",
    "head_logits",
    "init_head",
    "make_optimizer",
    "predict",
    "squared_error",
    "train",
]

Params = Any  # a pytree of arrays
Batch = Mapping[str, jax.Array]


# --------------------------------------------------------------------------------------------------- the head


def _init_dense(key: jax.Array, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    bound = 1.0 / np.sqrt(fan_in)
    weights_key, bias_key = jax.random.split(key)
    return {
        "weights": jax.random.uniform(weights_key, (fan_in, fan_out), jnp.float32, -bound, bound),
        "bias": jax.random.uniform(bias_key, (fan_out,), jnp.float32, -bound, bound),
    }


def init_head(in_dim: int, n_outputs: int, *, hidden: int | None = None, seed: int = 0) -> tuple[dict, ...]:
    r"""Initialise a linear head (``hidden=None``) or a one-hidden-layer ReLU MLP (``hidden`` units).

    Every dense layer is drawn as ``torch.nn.Linear`` draws it:
    ``weights, bias ~ U(−1/√fan_in, 1/√fan_in)``, float32, from ``jax.random.key(seed)``.

    Returns:
      A tuple of layers ``{"weights": (fan_in, fan_out), "bias": (fan_out,)}``, input layer first.
    """
    layer_sizes = {"in_dim": in_dim, "hidden": hidden, "n_outputs": n_outputs}
    if hidden is None:
        del layer_sizes["hidden"]
    for name, value in layer_sizes.items():
        check_int(name, value)
    sizes = tuple(int(value) for value in layer_sizes.values())
    keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
    return tuple(
        _init_dense(key, fan_in, fan_out) for key, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    )


def head_logits(params: tuple[dict, ...], features: jax.Array) -> jax.Array:
    r"""Outputs of the head: ``h_0 = x``, ``h_{l+1} = ReLU(h_l W_l + b_l)`` between layers, no ReLU on the last.

    For the linear head this is ``x W + b``.
    """
    hidden = features
    for layer in params[:-1]:
        hidden = jax.nn.relu(hidden @ layer["weights"] + layer["bias"][None, :])
    return hidden @ params[-1]["weights"] + params[-1]["bias"][None, :]


# ----------------------------------------------------------------------------------------------------- losses


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy with integer labels: :math:`−\frac1n \sum_i \log \mathrm{softmax}(z_i)_{y_i}`."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Half the mean squared error per sample: :math:`\frac{1}{2n} \sum_i ‖ŷ_i − y_i‖^2`.

    The ½ makes the gradient :math:`\frac1n X^⊤(XW − Y)` for a linear head, so a penalty
    :math:`\frac{γ}{2n}‖W‖^2` added to this loss gives the ridge solution :math:`(X^⊤X + γI)^{-1} X^⊤Y`.
    ``outputs`` and ``targets`` must have the same shape ``(n,)`` or ``(n, k)``.
    """
    if outputs.shape != targets.shape:
        raise InputError(f"outputs {outputs.shape} and targets {targets.shape} must have the same shape")
    residual = (outputs - targets).reshape(outputs.shape[0], -1)
    return 0.5 * jnp.mean(jnp.sum(residual * residual, axis=1))


def classification_loss(params: tuple[dict, ...], batch: Batch) -> jax.Array:
    """``cross_entropy(head_logits(params, batch["features"]), batch["labels"])`` — the plain CE objective."""
    return cross_entropy(head_logits(params, batch["features"]), batch["labels"])


# -------------------------------------------------------------------------------------------------- optimizer


@functools.cache
def make_optimizer(
    learning_rate: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
) -> optax.GradientTransformation:
    r"""SGD with heavy-ball momentum and L2 weight decay, as ``torch.optim.SGD(weight_decay=λ)``.

    The decay is *coupled* (L2 added to the gradient before momentum), not decoupled as in AdamW:

    .. math::

        g_t &← ∇L(θ_t) + λ θ_t \\
        v_t &← μ v_{t−1} + g_t \\
        θ_{t+1} &← θ_t − η\, s(t)\, v_t

    Args:
      learning_rate: η (a Python float: the arguments are cache keys).
      momentum: μ (0 disables the momentum buffer).
      weight_decay: λ.
      schedule: optional multiplier ``s(step)`` on η, e.g. ``optax.cosine_decay_schedule(1.0, total_steps)``;
        keeping η separate lets a learning-rate search reuse one schedule shape. ``None`` means ``s ≡ 1``.

    Returns:
      An optax transformation. Calls with equal arguments return the same object (transformations are
      stateless), which lets ``train`` reuse its compiled step across calls.
    """
    check_number("learning_rate", learning_rate, low=0, low_open=True)
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    check_number("weight_decay", weight_decay, low=0)
    step_size = learning_rate if schedule is None else (lambda step: learning_rate * schedule(step))
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(step_size, momentum=momentum if momentum > 0 else None),
    )


# ---------------------------------------------------------------------------------------------------- trainer


@functools.partial(jax.jit, static_argnames=("loss_fn", "optimizer"))
def _train_step(params, opt_state, batches, grad_mask, loss_args, *, loss_fn, optimizer):
    """One optimizer step, masked when ``grad_mask`` is given; compiled once per (loss_fn, optimizer, shapes)."""
    loss, grads = jax.value_and_grad(loss_fn)(params, *batches, *loss_args)
    if grad_mask is not None:
        grads = jax.tree.map(jnp.multiply, grads, grad_mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    if grad_mask is not None:
        updates = jax.tree.map(jnp.multiply, updates, grad_mask)
    return optax.apply_updates(params, updates), opt_state, loss


def _stream_arrays(stream: Mapping[str, Any], index: int) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(stream, Mapping) or not stream:
        raise InputError(f"data stream {index} must be a non-empty dict of arrays, got {type(stream).__name__}")
    arrays = {name: np.asarray(array) for name, array in stream.items()}
    lengths = {name: (array.shape[0] if array.ndim else None) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise InputError(f"data stream {index} arrays must share their first dimension, got lengths {lengths}")
    n_samples = next(iter(lengths.values()))
    if n_samples == 0:
        raise InputError(f"data stream {index} is empty")
    return arrays, n_samples


def _cyclic_batches(arrays: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Endless full batches: walk a fresh permutation, dropping the ragged remainder, then reshuffle."""
    n_samples = len(next(iter(arrays.values())))
    while True:
        order = rng.permutation(n_samples)
        for start in range(0, n_samples - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            yield {name: array[rows] for name, array in arrays.items()}


def train(
    params: Params,
    loss_fn: Callable[..., jax.Array],
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    optimizer: optax.GradientTransformation,
    epochs: int,
    batch_size: int = 256,
    seed: int = 0,
    grad_mask: Params | None = None,
    loss_args: tuple = (),
    progress: bool = False,
) -> tuple[Params, dict[str, list[float]]]:
    r"""Minimise ``loss_fn`` by minibatch steps of ``optimizer``; returns ``(params, history)``.

    Each step, with mask :math:`M` (all ones when ``grad_mask`` is None):

    .. math::

        g = M ⊙ ∇_θ\, \mathrm{loss\_fn}(θ, b_1, …, b_S, *\mathrm{loss\_args}), \qquad
        u, s ← \mathrm{optimizer.update}(g, s, θ), \qquad θ ← θ + M ⊙ u

    Masking the update as well as the gradient keeps masked entries exactly fixed even under weight decay
    (in the torch reference code weight decay still moves them); SalUn passes its saliency mask here.

    Data streams. ``data`` is one dict of equal-length arrays (e.g. ``{"features": X, "labels": y}``) or a
    sequence of such dicts trained in lockstep (e.g. ``(retain, forget)``), with ``loss_fn(params, retain_batch,
    forget_batch, *loss_args)``. An epoch is one pass over the first stream; the other streams are cycled,
    reshuffled each time they run out. Each stream is shuffled by ``seed`` (one generator per stream).

    Batches. Stream ``s`` uses batches of ``min(batch_size, n_s)`` rows. A ragged last batch is *dropped* (each
    epoch reshuffles, so no sample is left out systematically), which keeps every batch the same shape: the step is
    traced once per ``(loss_fn, optimizer, shapes)`` and reused across batches, epochs and calls. Build the loss
    function and optimizer once (``make_optimizer`` caches) and pass changing constants through ``loss_args``.

    Args:
      params: any pytree of float arrays.
      loss_fn: pure ``loss_fn(params, *batches, *loss_args) -> scalar``.
      data: a dict of arrays, or a sequence of them.
      optimizer: an optax transformation, usually from ``make_optimizer``.
      epochs: passes over the first stream.
      batch_size: rows per batch (capped at each stream's size).
      seed: shuffling seed.
      grad_mask: pytree like ``params`` of 0/1 values, or None.
      loss_args: extra traced arguments for ``loss_fn`` (e.g. FedProx's global parameters).
      progress: print the mean loss after each epoch.

    Returns:
      ``(params, {"loss": [mean loss of each epoch]})``.
    """
    streams = (data,) if isinstance(data, Mapping) else tuple(data)
    if not streams:
        raise InputError("data must be a dict of arrays or a non-empty sequence of them")
    check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size)
    if grad_mask is not None:
        if jax.tree.structure(grad_mask) != jax.tree.structure(params):
            raise InputError("grad_mask must have the same pytree structure as params")
        grad_mask = jax.tree.map(lambda mask, param: jnp.asarray(mask, dtype=param.dtype), grad_mask, params)

    batch_iterators = []
    for index, stream in enumerate(streams):
        arrays, n_samples = _stream_arrays(stream, index)
        stream_batch_size = min(int(batch_size), n_samples)
        if index == 0:
            steps_per_epoch = n_samples // stream_batch_size
        rng = np.random.default_rng((seed, index))
        batch_iterators.append(_cyclic_batches(arrays, stream_batch_size, rng))

    opt_state = optimizer.init(params)
    history: dict[str, list[float]] = {"loss": []}
    started = time.perf_counter()
    for epoch in range(epochs):
        step_losses = []
        for _ in range(steps_per_epoch):
            batches = tuple(next(iterator) for iterator in batch_iterators)
            params, opt_state, loss = _train_step(
                params, opt_state, batches, grad_mask, tuple(loss_args), loss_fn=loss_fn, optimizer=optimizer
            )
            step_losses.append(loss)
        history["loss"].append(float(jnp.mean(jnp.stack(step_losses))))
        if progress:
            elapsed = time.perf_counter() - started
            print(f"epoch {epoch + 1}/{epochs}  loss {history['loss'][-1]:.5f}  {elapsed:.1f}s", flush=True)
    return params, history


# --------------------------------------------------------------------------------------- softmax convenience


def _validated_labelled(features, labels, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    features = check_features(features, finite=True)
    labels = check_labels(labels, features.shape[0])
    if n_classes is not None and labels.max() >= n_classes:
        raise InputError(f"labels must lie in 0..{n_classes - 1}, got range {labels.min()}..{labels.max()}")
    return features, labels


def fit_softmax_head(
    features,
    labels,
    *,
    n_classes: int,
    epochs: int,
    learning_rate: float,
    batch_size: int = 256,
    hidden: int | None = None,
    seed: int = 0,
) -> tuple[dict, ...]:
    """Train a softmax head from scratch with cross-entropy and ``make_optimizer(learning_rate)`` defaults.

    ``init_head(d, n_classes, hidden=hidden, seed=seed)`` followed by ``train(…, classification_loss,
    {"features": features, "labels": labels}, …)`` with SGD, momentum 0.9, L2 weight decay 5e-4.
    """
    features, labels = _validated_labelled(features, labels, n_classes)
    params = init_head(features.shape[1], n_classes, hidden=hidden, seed=seed)
    params, _ = train(
        params,
        classification_loss,
        {"features": features, "labels": labels},
        optimizer=make_optimizer(learning_rate),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
    )
    return params


@jax.jit
def _predicted_labels(params, features):
    return jnp.argmax(head_logits(params, features), axis=-1)


def predict(params: tuple[dict, ...], features) -> np.ndarray:
    """Arg-max class of each row: ``argmax_c head_logits(params, x)_c``, as a host int array."""
    return np.asarray(_predicted_labels(params, jnp.asarray(features, dtype=jnp.float32)))


def accuracy(params: tuple[dict, ...], features, labels) -> float:
    """Fraction (in [0, 1]) of rows whose predicted label equals ``labels``."""
    features, labels = _validated_labelled(features, labels)
    if len(labels) == 0:
        raise InputError("accuracy of an empty set is undefined")
    return float(np.mean(predict(params, features) == labels))

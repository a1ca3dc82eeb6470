r"""Gradient-based federated baselines on the shared softmax head (:mod:`analytic.gradient`): FedAvg, FedProx, SCAFFOLD.

Each round the server samples a share of the clients, sends them the global parameters :math:`\theta`, each trains
``local_epochs`` of minibatch SGD with :func:`analytic.gradient.train` on its own samples, and the server averages
the results weighted by the clients' sample counts (the usual federated settings):

* FedAvg: local loss :math:`\mathrm{CE}(\theta)`, :math:`\theta \leftarrow \sum_k \frac{n_k}{n_S} \theta_k`.
* FedProx: local loss :math:`\mathrm{CE}(\theta) + \frac{\mu}{2}\|\theta - \theta_{\text{global}}\|^2`.
* SCAFFOLD (option II of Karimireddy et al. 2020): local gradient corrected by :math:`c - c_k` (added to the loss
  as the linear term :math:`\langle c - c_k, \theta\rangle`); after :math:`K_k` local steps of size η,
  :math:`c_k^+ = c_k - c + (\theta_{\text{global}} - \theta_k)/(K_k \eta)`, the server moves
  :math:`\theta` by the mean client change and :math:`c` by :math:`\frac{|S|}{N}` times the mean control change.

DP-FedAvg (McMahan et al., ICLR 2018, client-level differential privacy) is FedAvg with ``update_clip`` S set:
each client joins a round independently with probability q (``client_fraction``), its update
:math:`\Delta_k = \theta_k - \theta` is clipped to :math:`\|\Delta_k\|_2 \le S` (``optax.clip_by_global_norm``),
and the server moves :math:`\theta` by :math:`(\sum_k \hat\Delta_k + \mathcal N(0, z^2 S^2 I)) / (qN)` over the
N clients with data; :func:`federated.gaussian_epsilon` with ``sampling_rate=q, rounds=T`` accounts it.

Local training is plain SGD (no momentum, no weight decay) so that SCAFFOLD's control variates follow their
derivation; every method uses the same optimizer. Empty clients are never sampled. Each round records test accuracy,
bytes sent up and down (float32 parameters, twice that for SCAFFOLD's control variates) and elapsed wall time.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from analytic import gradient
from analytic.errors import InputError
from analytic.internal import check_choice, check_features, check_int, check_labels, check_number

METHODS = ("fedavg", "fedprox", "scaffold")


def proximal_loss(params, batch, global_params, mu):
    r""":math:`\mathrm{CE}(\theta) + \frac{\mu}{2}\|\theta - \theta_{\text{global}}\|^2` (FedProx's local objective)."""
    distance = sum(jnp.sum((p - g) ** 2) for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(global_params)))
    return gradient.classification_loss(params, batch) + 0.5 * mu * distance


def corrected_loss(params, batch, correction):
    r""":math:`\mathrm{CE}(\theta) + \langle c - c_k, \theta\rangle`: its gradient is SCAFFOLD's corrected gradient."""
    linear = sum(jnp.sum(c * p) for c, p in zip(jax.tree.leaves(correction), jax.tree.leaves(params)))
    return gradient.classification_loss(params, batch) + linear


@dataclasses.dataclass(frozen=True)
class GradientRun:
    """Per-round record of a gradient federated run.

    Attributes:
      method: ``"fedavg"``, ``"fedprox"`` or ``"scaffold"``.
      accuracy: test accuracy after each round.
      bytes_up, bytes_down: cumulative bytes after each round.
      seconds: cumulative wall time after each round (evaluation excluded).
      params: the final global parameters.
    """

    method: str
    accuracy: list[float]
    bytes_up: list[int]
    bytes_down: list[int]
    seconds: list[float]
    params: tuple

    def first_round_reaching(self, target: float) -> int | None:
        """1-based round at which accuracy first reaches ``target``, or ``None``."""
        reached = np.flatnonzero(np.asarray(self.accuracy) >= target)
        return int(reached[0]) + 1 if reached.size else None


def _weighted_mean(trees, weights):
    weights = np.asarray(weights, np.float64) / np.sum(weights)
    return jax.tree.map(lambda *leaves: sum(w * leaf for w, leaf in zip(weights, leaves)), *trees)


def _private_mean_step(params, results, clip: float, noise_multiplier: float, expected_clients: float, rng):
    r""":math:`\theta + (\sum_k \operatorname{clip}_S(\theta_k - \theta) + \mathcal N(0, z^2 S^2 I)) / (qN)`."""
    clipper = optax.clip_by_global_norm(clip)
    total = jax.tree.map(jnp.zeros_like, params)
    for local in results:
        update, _ = clipper.update(jax.tree.map(jnp.subtract, local, params), clipper.init(params))
        total = jax.tree.map(jnp.add, total, update)
    noisy = jax.tree.map(
        lambda t: t + jnp.asarray(rng.normal(0.0, noise_multiplier * clip, t.shape), t.dtype), total)
    return jax.tree.map(lambda p, t: p + t / jnp.asarray(expected_clients, t.dtype), params, noisy)


def run_federated_gradient(
    features,
    labels,
    parts: list[np.ndarray],
    test_features,
    test_labels,
    *,
    method: str = "fedavg",
    rounds: int = 50,
    local_epochs: int = 1,
    client_fraction: float = 0.1,
    learning_rate: float = 0.05,
    batch_size: int = 32,
    mu: float = 0.01,
    seed: int = 0,
    stop_at: float | None = None,
    progress: bool = True,
    update_clip: float | None = None,
    noise_multiplier: float = 0.0,
) -> GradientRun:
    """Run FedAvg / FedProx / SCAFFOLD for up to ``rounds`` rounds (stopping early once accuracy ≥ ``stop_at``);
    with ``update_clip`` S (FedAvg only), DP-FedAvg with noise multiplier z (module docstring).

    Labels must be ``0 … C−1`` (the shared head's convention); ``C`` is taken from the training labels.
    """
    check_choice("method", method, METHODS)
    if update_clip is not None:
        check_number("update_clip", update_clip, low=0, low_open=True)
        if method != "fedavg":
            raise InputError(f"update clipping and noise (DP-FedAvg) apply to fedavg, got method {method!r}")
    check_number("noise_multiplier", noise_multiplier, low=0)
    check_number("client_fraction", client_fraction, low=0, high=1, low_open=True)
    check_int("rounds", rounds)
    features = check_features(features, finite=True).astype(np.float32)
    labels = check_labels(labels, features.shape[0])
    test_features = check_features(test_features, features.shape[1], finite=True)
    test_labels = check_labels(test_labels, test_features.shape[0])
    n_classes = int(labels.max()) + 1
    populated = [k for k, rows in enumerate(parts) if rows.size]
    per_round = max(1, int(round(client_fraction * len(populated))))
    rng = np.random.default_rng(seed)
    optimizer = gradient.make_optimizer(learning_rate, momentum=0.0, weight_decay=0.0)
    params = gradient.init_head(features.shape[1], n_classes, seed=seed)
    model_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    exchanged = model_bytes * (2 if method == "scaffold" else 1)
    zeros = jax.tree.map(jnp.zeros_like, params)
    server_control, client_controls = zeros, {}
    record = GradientRun(method, [], [], [], [], params)
    elapsed, up, down = 0.0, 0, 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("acc {task.fields[accuracy]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(method, total=rounds, accuracy="-")
        for round_index in range(rounds):
            tick = time.perf_counter()
            if update_clip is None:
                sampled = rng.choice(populated, size=per_round, replace=False)
            else:  # Poisson sampling, as DP-FedAvg's accounting assumes
                sampled = np.asarray(populated)[rng.random(len(populated)) < client_fraction]
            results, sizes, control_changes = [], [], []
            for k in sampled:
                data = {"features": features[parts[k]], "labels": labels[parts[k]]}
                train_seed = seed * 1_000_003 + round_index * 10_007 + int(k)
                common = dict(optimizer=optimizer, epochs=local_epochs, batch_size=batch_size, seed=train_seed)
                if method == "fedavg":
                    local, _ = gradient.train(params, gradient.classification_loss, data, **common)
                elif method == "fedprox":
                    local, _ = gradient.train(params, proximal_loss, data, loss_args=(params, mu), **common)
                else:
                    own = client_controls.get(int(k), zeros)
                    correction = jax.tree.map(jnp.subtract, server_control, own)
                    local, _ = gradient.train(params, corrected_loss, data, loss_args=(correction,), **common)
                    steps = local_epochs * (parts[k].size // min(batch_size, parts[k].size))
                    updated = jax.tree.map(
                        lambda c_k, c, g, p: c_k - c + (g - p) / (steps * learning_rate), own, server_control, params,
                        local,
                    )
                    control_changes.append(jax.tree.map(jnp.subtract, updated, own))
                    client_controls[int(k)] = updated
                results.append(local)
                sizes.append(parts[k].size)
            if method == "scaffold":
                change = _weighted_mean([jax.tree.map(jnp.subtract, r, params) for r in results], np.ones(len(results)))
                params = jax.tree.map(jnp.add, params, change)
                mean_control = _weighted_mean(control_changes, np.ones(len(control_changes)))
                share = len(sampled) / len(populated)
                server_control = jax.tree.map(lambda c, dc: c + share * dc, server_control, mean_control)
            elif update_clip is not None:
                params = _private_mean_step(params, results, update_clip, noise_multiplier,
                                            client_fraction * len(populated), rng)
            else:
                params = _weighted_mean(results, sizes)
            jax.block_until_ready(params)
            elapsed += time.perf_counter() - tick
            up += exchanged * len(sampled)
            down += exchanged * len(sampled)
            accuracy = gradient.accuracy(params, test_features, test_labels)
            record.accuracy.append(accuracy)
            record.bytes_up.append(up)
            record.bytes_down.append(down)
            record.seconds.append(elapsed)
            bar.update(task, advance=1, accuracy=f"{accuracy:.4f}")
            if stop_at is not None and accuracy >= stop_at:
                break
    return dataclasses.replace(record, params=params)

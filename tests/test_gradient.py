"""Tests for the gradient-trained comparison head and its generic trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import Ridge

from analytic.gradient import (
    accuracy,
    classification_loss,
    cross_entropy,
    fit_softmax_head,
    head_logits,
    init_head,
    make_optimizer,
    predict,
    squared_error,
    train,
)

pytestmark = pytest.mark.filterwarnings("error")


def _blobs(n_per_class, dim, n_classes, *, seed, spread=0.5):
    """Gaussian blobs around well separated centres: a linearly separable problem."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(100).normal(size=(n_classes, dim)) * 3.0
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    order = rng.permutation(len(labels))
    return features[order].astype(np.float32), labels[order]


def _tree_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


# --------------------------------------------------------------------------------------------- head and losses


def test_init_head_shapes_and_bounds():
    linear = init_head(8, 3, seed=1)
    assert [layer["weights"].shape for layer in linear] == [(8, 3)]
    mlp = init_head(8, 3, hidden=16, seed=1)
    assert [layer["weights"].shape for layer in mlp] == [(8, 16), (16, 3)]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(mlp))
    assert float(jnp.max(jnp.abs(mlp[1]["weights"]))) <= 1 / 4  # U(−1/√16, 1/√16)
    assert head_logits(mlp, jnp.ones((5, 8))).shape == (5, 3)


def test_losses_match_their_formulas():
    logits = jnp.asarray([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = jnp.asarray([0, 2])
    log_softmax = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(1, keepdims=True))
    assert float(cross_entropy(logits, labels)) == pytest.approx(-(log_softmax[0, 0] + log_softmax[1, 2]) / 2, rel=1e-6)
    outputs, targets = jnp.asarray([[1.0, 2.0], [0.0, 0.0]]), jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
    assert float(squared_error(outputs, targets)) == pytest.approx(0.5 * (5.0 + 2.0) / 2)
    with pytest.raises(ValueError, match="same shape"):
        squared_error(outputs, targets[:, :1])


# -------------------------------------------------------------------------------------------------- optimizer


def test_optimizer_is_torch_sgd_with_l2_weight_decay():
    learning_rate, momentum, weight_decay = 0.1, 0.9, 0.01
    optimizer = make_optimizer(learning_rate, momentum=momentum, weight_decay=weight_decay)
    assert optimizer is make_optimizer(learning_rate, momentum=momentum, weight_decay=weight_decay)
    theta, velocity = np.asarray([1.0, -2.0]), np.zeros(2)
    params, state = jnp.asarray(theta, jnp.float32), optimizer.init(jnp.zeros(2))
    for grad in ([0.5, 0.25], [-1.0, 2.0]):
        velocity = momentum * velocity + (np.asarray(grad) + weight_decay * theta)
        theta = theta - learning_rate * velocity
        updates, state = optimizer.update(jnp.asarray(grad, jnp.float32), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params, theta, rtol=1e-6)


def test_schedule_multiplies_learning_rate():
    frozen = make_optimizer(0.5, schedule=lambda step: jnp.zeros((), jnp.float32))
    params = init_head(3, 2)
    features, labels = _blobs(20, 3, 2, seed=0)
    trained, _ = train(
        params, classification_loss, {"features": features, "labels": labels}, optimizer=frozen, epochs=2
    )
    assert _tree_equal(trained, params)


# ---------------------------------------------------------------------------------------------------- trainer


def test_step_is_traced_once_for_all_batches_epochs_and_calls():
    traces = []

    def counting_loss(params, batch, scale):
        traces.append(batch["features"].shape)
        return scale * classification_loss(params, batch)

    features, labels = _blobs(150, 4, 3, seed=1)  # 450 rows, batch 64: 7 full batches, 2 rows dropped
    data = {"features": features, "labels": labels}
    params = init_head(4, 3)
    optimizer = make_optimizer(0.05)
    params, history = train(params, counting_loss, data, optimizer=optimizer, epochs=3, batch_size=64, loss_args=(1.0,))
    train(params, counting_loss, data, optimizer=make_optimizer(0.05), epochs=1, batch_size=64, loss_args=(0.5,))
    assert traces == [(64, 4)]
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]


def test_learns_linearly_separable_problem():
    features, labels = _blobs(200, 10, 4, seed=2)
    test_features, test_labels = _blobs(100, 10, 4, seed=3)
    params = fit_softmax_head(features, labels, n_classes=4, epochs=10, learning_rate=0.05, batch_size=64)
    assert accuracy(params, test_features, test_labels) > 0.95
    assert predict(params, test_features).shape == (400,)


def test_training_is_deterministic_in_seed():
    features, labels = _blobs(100, 6, 3, seed=4)

    def fit(seed):
        return fit_softmax_head(features, labels, n_classes=3, epochs=3, learning_rate=0.05, batch_size=32, seed=seed)

    assert _tree_equal(fit(0), fit(0))
    assert not _tree_equal(fit(0), fit(1))


def test_zero_grad_mask_freezes_parameters_exactly():
    features, labels = _blobs(60, 5, 3, seed=5)
    params = init_head(5, 3, hidden=8, seed=2)
    rng = np.random.default_rng(0)
    mask = (
        {"weights": (rng.random((5, 8)) < 0.5).astype(np.float32), "bias": np.zeros(8, np.float32)},
        {"weights": np.ones((8, 3), np.float32), "bias": np.ones(3, np.float32)},
    )
    trained, _ = train(
        params,
        classification_loss,
        {"features": features, "labels": labels},
        optimizer=make_optimizer(0.1, weight_decay=0.05),  # decay must not move frozen entries either
        epochs=3,
        batch_size=32,
        grad_mask=mask,
    )
    for layer_mask, before, after in zip(mask, params, trained, strict=True):
        for name in ("weights", "bias"):
            frozen = layer_mask[name] == 0
            assert np.array_equal(np.asarray(after[name])[frozen], np.asarray(before[name])[frozen])
            assert np.all(np.asarray(after[name])[~frozen] != np.asarray(before[name])[~frozen])


def _fedprox_loss(params, batch, global_params, proximal_weight):
    """CE + μ/2 ‖θ − θ_global‖² (FedProx)."""
    distance = sum(
        jnp.sum(jnp.square(p - g)) for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(global_params), strict=True)
    )
    return classification_loss(params, batch) + 0.5 * proximal_weight * distance


def test_fedprox_term_through_loss_args():
    features, labels = _blobs(50, 4, 2, seed=6)
    data = {"features": features, "labels": labels}
    global_params = init_head(4, 2, seed=3)
    plain = make_optimizer(0.05, momentum=0.0, weight_decay=0.0)

    # One full-batch step equals θ − η (∇CE + μ (θ − θ_global)).
    start = jax.tree.map(lambda x: x + 0.1, global_params)
    stepped, _ = train(
        start, _fedprox_loss, data, optimizer=plain, epochs=1, batch_size=100, loss_args=(global_params, 2.0)
    )
    ce_grad = jax.grad(classification_loss)(start, data)
    expected = jax.tree.map(lambda t, g, a: t - 0.05 * (g + 2.0 * (t - a)), start, ce_grad, global_params)
    for got, want in zip(jax.tree.leaves(stepped), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    def drift(mu):
        trained, _ = train(
            global_params, _fedprox_loss, data, optimizer=plain, epochs=10, batch_size=20, loss_args=(global_params, mu)
        )
        return sum(
            float(jnp.sum(jnp.square(p - g)))
            for p, g in zip(jax.tree.leaves(trained), jax.tree.leaves(global_params), strict=True)
        )

    assert drift(5.0) < 0.1 * drift(0.0)


def test_regression_head_converges_to_sklearn_ridge():
    rng = np.random.default_rng(7)
    n_samples, dim, ridge = 200, 5, 3.0
    features = rng.normal(size=(n_samples, dim)).astype(np.float32)
    targets = (features @ rng.normal(size=(dim, 2)) + 0.3 * rng.normal(size=(n_samples, 2)) + 1.5).astype(np.float32)

    def ridge_loss(params, batch):
        # ½ mean ‖ŷ − y‖² + γ/(2n) ‖W‖², bias unpenalised: the minimiser is sklearn's Ridge(alpha=γ).
        (layer,) = params
        penalty = ridge / (2 * batch["features"].shape[0]) * jnp.sum(jnp.square(layer["weights"]))
        return squared_error(head_logits(params, batch["features"]), batch["targets"]) + penalty

    params, _ = train(
        init_head(dim, 2),
        ridge_loss,
        {"features": features, "targets": targets},
        optimizer=make_optimizer(0.1, weight_decay=0.0),
        epochs=300,
        batch_size=n_samples,
    )
    reference = Ridge(alpha=ridge).fit(features.astype(np.float64), targets.astype(np.float64))
    np.testing.assert_allclose(params[0]["weights"], reference.coef_.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params[0]["bias"], reference.intercept_, rtol=1e-4, atol=1e-5)


def test_mlp_head_learns_a_nonlinear_problem():
    rng = np.random.default_rng(8)
    features = rng.uniform(-1, 1, size=(800, 2)).astype(np.float32)
    labels = (features[:, 0] * features[:, 1] > 0).astype(np.int64)  # XOR quadrants: not linearly separable
    params = fit_softmax_head(features, labels, n_classes=2, epochs=30, learning_rate=0.1, batch_size=64, hidden=32)
    assert accuracy(params, features, labels) > 0.9


def test_two_streams_in_lockstep():
    seen = []

    def negative_gradient_plus(params, retain_batch, forget_batch, alpha):
        """NegGrad+: α CE_retain − (1 − α) CE_forget; also records which rows each step drew."""
        jax.debug.callback(
            lambda r, f: seen.append((np.asarray(r), np.asarray(f))),
            retain_batch["row"],
            forget_batch["row"],
            ordered=True,
        )
        return alpha * classification_loss(params, retain_batch) - (1 - alpha) * classification_loss(
            params, forget_batch
        )

    features, labels = _blobs(100, 4, 3, seed=9, spread=1.5)
    is_forget = labels == 2
    retain = {"features": features[~is_forget], "labels": labels[~is_forget], "row": np.arange(200)}
    forget = {"features": features[is_forget][:40], "labels": labels[is_forget][:40], "row": np.arange(40)}
    params = init_head(4, 3, seed=1)
    unlearned, history = train(
        params,
        negative_gradient_plus,
        (retain, forget),
        optimizer=make_optimizer(0.05),
        epochs=2,
        batch_size=64,
        loss_args=(0.5,),
    )
    assert len(history["loss"]) == 2
    assert len(seen) == 2 * (200 // 64)  # an epoch is a pass over the first stream, ragged batch dropped
    for epoch in (seen[:3], seen[3:]):
        retain_rows = np.concatenate([r for r, _ in epoch])
        assert len(np.unique(retain_rows)) == 3 * 64  # no row twice within an epoch
    for _, forget_rows in seen:  # the small stream is one full-size batch, reshuffled on each cycle
        assert sorted(forget_rows) == list(range(40))
    assert not all(np.array_equal(seen[0][1], f) for _, f in seen[1:])
    assert float(classification_loss(unlearned, forget)) > float(classification_loss(params, forget))


def test_input_validation():
    params = init_head(3, 2)
    optimizer = make_optimizer(0.1)
    with pytest.raises(ValueError, match="share their first dimension"):
        train(
            params,
            classification_loss,
            {"features": np.ones((4, 3)), "labels": np.ones(3, int)},
            optimizer=optimizer,
            epochs=1,
        )
    with pytest.raises(ValueError, match="empty"):
        train(
            params,
            classification_loss,
            {"features": np.ones((0, 3)), "labels": np.ones(0, int)},
            optimizer=optimizer,
            epochs=1,
        )
    with pytest.raises(ValueError, match="structure"):
        train(
            params,
            classification_loss,
            {"features": np.ones((4, 3))},
            optimizer=optimizer,
            epochs=1,
            grad_mask=({"weights": 1},),
        )
    with pytest.raises(ValueError, match="labels must lie"):
        fit_softmax_head(
            np.ones((4, 3), np.float32), np.asarray([0, 1, 2, 1]), n_classes=2, epochs=1, learning_rate=0.1
        )
    with pytest.raises(ValueError, match="features contain NaN"):
        fit_softmax_head(
            np.full((2, 3), np.nan, np.float32), np.asarray([0, 1]), n_classes=2, epochs=1, learning_rate=0.1
        )
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(0.0)

"""The core in JAX: under jit, on device arrays, through vmap and pytree transforms — against the host path and
float64 oracles, under strict dtype promotion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
from analytic import internal
from analytic import InputError, IntegrityError

CLASSES = (0, 3, 7, 11)
RIDGE = 0.1
DIM = 24

accumulate = jax.jit(analytic.accumulate)
merge = jax.jit(analytic.merge)
subtract = jax.jit(analytic.subtract)
solve = jax.jit(analytic.solve)
predict = jax.jit(analytic.predict)
predict_labels = jax.jit(analytic.predict_labels)


@pytest.fixture
def data32():
    features, labels = make_classification(d=DIM, classes=CLASSES)
    return features.astype(np.float32), labels.astype(np.int32)


def quantized(features):
    return np.ldexp(internal.quantize(features, 12), -12)


def test_jitted_float64_operations_equal_the_host_and_a_direct_solve(data):
    features, labels = data
    with jax.enable_x64(True):
        empty = analytic.init_statistics(DIM, class_ids=CLASSES)
        first, rest = accumulate(empty, features[:250], labels[:250]), accumulate(empty, features[250:], labels[250:])
        state = accumulate(first, features[250:], labels[250:])
        assert state.on_device and state.moments.gram.dtype == jnp.float64
        host = analytic.accumulate(analytic.init_statistics(DIM), features, labels)
        assert relative_error(state.moments.gram, host.moments.gram) <= 1e-14
        head = solve(state, RIDGE)
        oracle = ridge_oracle(features, one_hot_columns(labels, CLASSES), RIDGE)
        assert relative_error(head.weights, oracle) <= 1e-10
        assert relative_error(solve(merge(first, rest), RIDGE).weights, oracle) <= 1e-10
        retained = ridge_oracle(features[:250], one_hot_columns(labels[:250], CLASSES), RIDGE)
        assert relative_error(solve(subtract(state, rest), RIDGE).weights, retained) <= 1e-10
        assert relative_error(predict(head, features), features @ oracle) <= 1e-10
        np.testing.assert_array_equal(predict_labels(head, features),
                                      analytic.predict_labels(analytic.solve(host, RIDGE), features))


def test_jitted_fixed_precision_without_x64_has_the_host_hash(data32):
    features, labels = data32
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    host = analytic.accumulate(analytic.init_statistics(DIM, precision="fixed"), features, labels)
    parts = [accumulate(empty, features[i::3], labels[i::3]) for i in range(3)]
    pooled = merge(merge(parts[2], parts[0]), parts[1])
    streamed = accumulate(accumulate(empty, features[::-1][:100], labels[::-1][:100]), features[::-1][100:],
                          labels[::-1][100:])
    assert pooled.moments.gram.dtype == jnp.int32  # exact int32 words: no int64 needed
    assert analytic.state_hash(pooled) == analytic.state_hash(streamed) == analytic.state_hash(host)
    assert analytic.state_hash(subtract(pooled, parts[1])) == analytic.state_hash(merge(parts[0], parts[2]))
    oracle = ridge_oracle(quantized(features), one_hot_columns(labels, CLASSES), RIDGE)
    assert relative_error(analytic.solve(jax.device_get(pooled), RIDGE).weights, oracle) <= 1e-10  # host float64
    assert relative_error(solve(pooled, RIDGE).weights, oracle) <= 1e-3  # a float32 solve on the device


def test_fixed_precision_with_x64_solves_to_float64_accuracy(data32):
    features, labels = data32
    with jax.enable_x64(True):
        state = accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed"), features, labels)
        host = analytic.accumulate(analytic.init_statistics(DIM, precision="fixed"), features, labels)
        assert analytic.state_hash(state) == analytic.state_hash(host)
        oracle = ridge_oracle(quantized(features), one_hot_columns(labels, CLASSES), RIDGE)
        assert relative_error(solve(state, RIDGE).weights, oracle) <= 1e-10


def test_fixed_precision_regression_and_class_grams_match_the_host():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(300, 8)).astype(np.float32)
    targets = (features @ rng.normal(size=(8, 2))).astype(np.float32)
    device = accumulate(analytic.init_statistics(8, n_targets=2, precision="fixed"), features, targets)
    host = analytic.accumulate(analytic.init_statistics(8, n_targets=2, precision="fixed"), features, targets)
    assert analytic.state_hash(device) == analytic.state_hash(host)
    labels = rng.integers(0, 3, 300).astype(np.int32)
    declared = analytic.init_statistics(8, class_ids=[0, 1, 2], precision="fixed", class_grams=True)
    host = analytic.accumulate(analytic.init_statistics(8, precision="fixed", class_grams=True), features, labels)
    assert analytic.state_hash(accumulate(declared, features, labels)) == analytic.state_hash(host)


def test_jitted_float32_path_follows_the_host(data32):
    features, labels = data32
    shift = features[:64].mean(axis=0)
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="float32", shift=shift)
    state = accumulate(accumulate(empty, features[:300], labels[:300]), features[300:], labels[300:])
    host = analytic.accumulate(analytic.init_statistics(DIM, precision="float32", shift=shift), features, labels)
    assert state.moments.gram.dtype == jnp.float32 and state.compensation.gram.dtype == jnp.float32
    assert relative_error(analytic.gram_matrix(jax.device_get(state)), analytic.gram_matrix(host)) <= 1e-6
    oracle = ridge_oracle(features, one_hot_columns(labels, CLASSES), RIDGE)
    assert relative_error(analytic.solve(jax.device_get(state), RIDGE).weights, oracle) <= 1e-4
    assert relative_error(solve(state, RIDGE).weights, oracle) <= 1e-3


def test_float32_state_inside_jit_needs_a_declared_shift(data32):
    features, labels = data32
    with pytest.raises(InputError, match="shift"):
        accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="float32"), features, labels)


def test_jitted_recursive_update_equals_the_host_and_forgets_exactly(data):
    features, labels = data
    with jax.enable_x64(True):
        learn, forget = jax.jit(analytic.recursive_learn), jax.jit(analytic.recursive_forget)
        head = jax.device_put(analytic.init_recursive(DIM, RIDGE, class_ids=CLASSES))
        for start in range(0, 600, 100):
            head = learn(head, features[start : start + 100], labels[start : start + 100])
        oracle = ridge_oracle(features, one_hot_columns(labels, CLASSES), RIDGE)
        assert relative_error(head.weights, oracle) <= 1e-10
        host = analytic.recursive_learn(analytic.init_recursive(DIM, RIDGE), features, labels)
        assert relative_error(head.inverse, host.inverse) <= 1e-10
        forgotten = forget(head, features[500:], labels[500:])
        retained = ridge_oracle(features[:500], one_hot_columns(labels[:500], CLASSES), RIDGE)
        assert relative_error(forgotten.weights, retained) <= 1e-10
        np.testing.assert_array_equal(forgotten.class_counts, [np.sum(labels[:500] == c) for c in CLASSES])


def test_recursive_form_on_a_device_needs_x64(data):
    features, labels = data
    head = jax.device_put(analytic.init_recursive(DIM, RIDGE, class_ids=CLASSES))
    with pytest.raises(IntegrityError, match="x64"):
        analytic.recursive_learn(head, features.astype(np.float32), labels)


def test_vmap_accumulates_many_clients_and_their_tree_sum_is_the_pooled_state(data32):
    features, labels = data32
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    clients = jax.vmap(analytic.accumulate, in_axes=(None, 0, 0))(
        empty, features.reshape(10, 60, DIM), labels.reshape(10, 60))
    assert clients.moments.gram.shape == (10, DIM, DIM, 3)
    pooled = jax.tree.map(lambda leaf: leaf.sum(axis=0), clients)
    host = analytic.accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed"), features, labels)
    assert analytic.state_hash(pooled) == analytic.state_hash(host)


def test_device_state_outside_jit_behaves_like_the_host(data32):
    features, labels = data32
    state = jax.device_put(analytic.init_statistics(DIM, precision="fixed"))
    state = analytic.accumulate(state, features[:100], labels[:100])  # classes added as they appear
    state = analytic.accumulate(state, features[100:], labels[100:])
    assert state.on_device and state.class_ids.tolist() == list(CLASSES)
    host = analytic.accumulate(analytic.init_statistics(DIM, precision="fixed"), features, labels)
    assert analytic.state_hash(state) == analytic.state_hash(host)
    bad = features.copy()
    bad[5, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        analytic.accumulate(state, bad, labels)
    with pytest.raises(IntegrityError, match="never learned"):
        analytic.subtract(state, analytic.merge(state, state))


# ----------------------------------------------------------------------------------------------------------------
# Pytree safety: the two silent corruptions.


def test_tree_map_sum_is_a_merge_and_leaves_class_ids_alone():
    for precision in ("float64", "fixed"):
        a = analytic.accumulate(analytic.init_statistics(4, precision=precision), np.eye(4), np.array([3, 7, 3, 7]))
        summed = jax.tree.map(lambda u, v: u + v, a, a)
        assert summed.class_ids.tolist() == [3, 7]
        assert analytic.state_hash(summed) == analytic.state_hash(analytic.merge(a, a))
        np.testing.assert_array_equal(analytic.predict_labels(analytic.solve(summed, RIDGE), np.eye(4)), [3, 7, 3, 7])


def test_tree_map_refuses_states_with_different_classes_or_shifts():
    a = analytic.accumulate(analytic.init_statistics(4), np.eye(4), np.array([3, 7, 3, 7]))
    b = analytic.accumulate(analytic.init_statistics(4), np.eye(4), np.array([3, 8, 3, 8]))
    with pytest.raises(ValueError):
        jax.tree.map(jnp.add, a, b)
    shifted = [analytic.init_statistics(4, precision="float32", shift=np.full(4, s, np.float32)) for s in (0, 1)]
    with pytest.raises(ValueError):
        jax.tree.map(jnp.add, *shifted)


def test_converting_leaves_without_x64_cannot_corrupt_a_state():
    fixed = analytic.accumulate(analytic.init_statistics(4, precision="fixed"), np.eye(4) * 100, np.array([3, 7, 3, 7]))
    assert internal.host_moments(fixed).gram[0, 0] == 167_772_160_000  # beyond int32
    moved = jax.tree.map(jnp.asarray, fixed)
    assert analytic.state_hash(moved) == analytic.state_hash(fixed)
    np.testing.assert_array_equal(analytic.solve(jax.device_get(moved), RIDGE).weights,
                                  analytic.solve(fixed, RIDGE).weights)
    double = analytic.accumulate(analytic.init_statistics(4), np.eye(4), np.array([3, 7, 3, 7]))
    narrowed = jax.tree.map(jnp.asarray, double)  # float64 -> float32 without x64
    for operation in (lambda s: analytic.solve(s, RIDGE), lambda s: analytic.accumulate(s, np.eye(4), [3, 3, 7, 7]),
                      analytic.state_hash, lambda s: analytic.merge(s, s)):
        with pytest.raises(IntegrityError, match="x64"):
            operation(narrowed)
    widened = jax.tree.map(lambda leaf: np.asarray(leaf, np.int64), fixed)
    with pytest.raises(IntegrityError, match="int64"):
        analytic.solve(widened, RIDGE)


# ----------------------------------------------------------------------------------------------------------------
# Validation inside jit: the error flag.


def test_nan_inside_jit_flags_the_state_and_every_solve_refuses_it(data32):
    features, labels = data32
    features = features.copy()
    features[7, 3] = np.inf
    for precision in ("fixed", "float32"):
        shift = features[:4].mean(axis=0) if precision == "float32" else None
        empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision=precision,
                                         shift=None if shift is None else np.nan_to_num(shift))
        flagged = accumulate(empty, features, labels)
        assert int(flagged.error) & analytic.state.NON_FINITE
        assert np.isnan(np.asarray(solve(flagged, RIDGE).weights)).all()
        with pytest.raises(InputError, match="NaN or Inf"):
            analytic.solve(flagged, RIDGE)
        with pytest.raises(InputError, match="NaN or Inf"):
            analytic.state_hash(merge(flagged, empty))  # the flag survives merging


def test_unknown_label_inside_jit_is_flagged(data32):
    features, labels = data32
    labels = labels.copy()
    labels[0] = 5
    flagged = accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed"), features, labels)
    with pytest.raises(InputError, match="declared class ids"):
        analytic.solve(flagged, RIDGE)


def test_impossible_subtraction_inside_jit_is_flagged(data32):
    features, labels = data32
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    part = accumulate(empty, features[:100], labels[:100])
    flagged = subtract(part, accumulate(empty, features, labels))
    with pytest.raises(IntegrityError, match="never learned"):
        analytic.solve(flagged, RIDGE)
    with pytest.raises(IntegrityError, match="never learned"):
        analytic.accumulate(flagged, features, labels)


def test_indefinite_matrix_inside_jit_gives_nan_weights_and_raises_outside(data32):
    features, labels = data32
    state = accumulate(analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed"), features[:10],
                       labels[:10])
    assert np.isnan(np.asarray(solve(state, 0.0).weights)).all()  # 10 samples, 24 features: G is singular
    with pytest.raises(IntegrityError, match="positive definite"):
        analytic.solve(state, 0.0)
    with pytest.raises(InputError, match="ridge"):
        analytic.solve(state, -1.0)
    assert np.isnan(np.asarray(solve(state, -1.0).weights)).all()
    with pytest.raises(InputError, match="weights are NaN"):
        analytic.predict(solve(state, 0.0), features)


def test_masked_rows_are_not_learned_so_ragged_batches_pad_to_one_shape(data32):
    features, labels = data32
    padded_x = np.concatenate([features[:50], np.full((14, DIM), np.nan, np.float32)])
    padded_y = np.concatenate([labels[:50], np.full(14, 99, np.int32)])
    mask = np.arange(64) < 50
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    host = analytic.accumulate(empty, features[:50], labels[:50])
    assert analytic.state_hash(accumulate(empty, padded_x, padded_y, mask=mask)) == analytic.state_hash(host)
    assert analytic.state_hash(analytic.accumulate(empty, padded_x, padded_y, mask=mask)) == analytic.state_hash(host)
    with pytest.raises(InputError, match="mask"):
        analytic.accumulate(empty, features, labels, mask=np.ones(3, bool))


def test_dropping_or_subtracting_classes_inside_jit_cannot_lose_samples_silently(data32):
    features, labels = data32
    empty = analytic.init_statistics(DIM, class_ids=CLASSES, precision="fixed")
    state = accumulate(empty, features, labels)
    dropped = jax.jit(analytic.drop_classes, static_argnums=1)(state, (3,))
    with pytest.raises(IntegrityError, match="still holds samples"):
        analytic.solve(dropped, RIDGE)
    without_seven = jax.jit(analytic.drop_classes, static_argnums=1)(
        subtract(state, accumulate(empty, features[labels == 7], labels[labels == 7])), (7,))
    assert int(without_seven.error) == 0 and without_seven.class_ids.tolist() == [0, 3, 11]
    with pytest.raises(IntegrityError, match="never learned"):
        analytic.solve(subtract(without_seven, state), RIDGE)

"""Exactness of the statistics form against independent oracles, and its behaviour on bad input."""

import tracemalloc

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle
from sklearn.linear_model import Ridge

import analytic
from analytic import internal
from analytic import InputError, IntegrityError

RIDGE = 0.1


def batches(features, labels, size):
    return [(features[i : i + size], labels[i : i + size]) for i in range(0, len(labels), size)]


def test_float64_solve_matches_direct_solve_and_sklearn(data):
    features, labels = data
    stats = analytic.fit(analytic.init_statistics(features.shape[1]), batches(features, labels, 97))
    head = analytic.solve(stats, RIDGE)
    targets = one_hot_columns(labels, head.class_ids)
    assert relative_error(head.weights, ridge_oracle(features, targets, RIDGE)) <= 1e-10
    sk = Ridge(alpha=RIDGE, fit_intercept=False, solver="cholesky").fit(features, targets)
    assert relative_error(head.weights, sk.coef_.T) <= 1e-10


def test_non_contiguous_class_ids_become_sorted_columns():
    features, labels = make_classification(classes=(42, 5, 1000, 17))
    stats = analytic.accumulate(analytic.init_statistics(features.shape[1]), features[:300], labels[:300])
    stats = analytic.accumulate(stats, features[300:], labels[300:])
    np.testing.assert_array_equal(stats.class_ids, [5, 17, 42, 1000])
    np.testing.assert_array_equal(stats.class_counts, [np.sum(labels == c) for c in (5, 17, 42, 1000)])
    head = analytic.solve(stats, RIDGE)
    assert relative_error(head.weights, ridge_oracle(features, one_hot_columns(labels, head.class_ids), RIDGE)) <= 1e-10
    np.testing.assert_array_equal(analytic.predict_labels(head, features[:5]), head.class_ids[
        np.argmax(features[:5] @ head.weights, axis=1)])


def test_new_class_in_a_later_batch_adds_a_column():
    features, labels = make_classification(classes=(0, 1, 2))
    first = labels < 2
    stats = analytic.accumulate(analytic.init_statistics(features.shape[1]), features[first], labels[first])
    assert stats.class_ids.tolist() == [0, 1]
    stats = analytic.accumulate(stats, features[~first], labels[~first])
    assert stats.class_ids.tolist() == [0, 1, 2]
    pooled = analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels)
    assert analytic.state_hash(stats) != "" and np.allclose(stats.moments.cross, pooled.moments.cross)


def test_regression_multi_output_matches_sklearn():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(400, 16)) + 1.0
    targets = features @ rng.normal(size=(16, 3)) + 0.1 * rng.normal(size=(400, 3))
    stats = analytic.fit(analytic.init_statistics(16, n_targets=3), batches(features, targets, 64))
    head = analytic.solve(stats, RIDGE)
    assert head.class_ids is None
    sk = Ridge(alpha=RIDGE, fit_intercept=False, solver="cholesky").fit(features, targets)
    assert relative_error(head.weights, sk.coef_.T) <= 1e-10
    single = analytic.accumulate(analytic.init_statistics(16, n_targets=1), features, targets[:, 0])
    assert relative_error(analytic.solve(single, RIDGE).weights[:, 0], sk.coef_[0]) <= 1e-10


def test_merge_equals_pooled_and_subtract_equals_retrain(data):
    features, labels = data
    d = features.shape[1]
    parts = np.array_split(np.random.default_rng(2).permutation(len(labels)), 5)
    states = [analytic.accumulate(analytic.init_statistics(d), features[p], labels[p]) for p in parts]
    merged = states[0]
    for s in states[1:]:
        merged = analytic.merge(merged, s)
    pooled = analytic.accumulate(analytic.init_statistics(d), features, labels)
    head = analytic.solve(merged, RIDGE)
    assert relative_error(head.weights, analytic.solve(pooled, RIDGE).weights) <= 1e-12
    retained = np.concatenate(parts[1:])
    forgotten = analytic.subtract(merged, states[0])
    expected = ridge_oracle(features[retained], one_hot_columns(labels[retained], forgotten.class_ids), RIDGE)
    assert relative_error(analytic.solve(forgotten, RIDGE).weights, expected) <= 1e-10


def test_merge_unites_disjoint_classes():
    features, labels = make_classification(classes=(1, 2, 3, 4))
    d = features.shape[1]
    low, high = labels <= 2, labels > 2
    a = analytic.accumulate(analytic.init_statistics(d), features[low], labels[low])
    b = analytic.accumulate(analytic.init_statistics(d), features[high], labels[high])
    ab, ba = analytic.merge(a, b), analytic.merge(b, a)
    assert ab.class_ids.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(ab.moments.gram, ba.moments.gram)
    np.testing.assert_array_equal(ab.class_counts, ba.class_counts)


def test_gram_matrix_and_class_grams():
    features, labels = make_classification(n=200, d=8)
    stats = analytic.accumulate(analytic.init_statistics(8, class_grams=True), features, labels)
    np.testing.assert_allclose(analytic.gram_matrix(stats), features.T @ features, rtol=1e-12)
    total = sum(analytic.class_gram(stats, i) for i in range(stats.n_outputs))
    np.testing.assert_allclose(total, features.T @ features, rtol=1e-12)
    c = stats.class_ids[1]
    np.testing.assert_allclose(analytic.class_gram(stats, 1), features[labels == c].T @ features[labels == c], rtol=1e-12)
    np.testing.assert_allclose(analytic.class_means(stats)[1], features[labels == c].mean(0), rtol=1e-12)
    assert stats.moments.class_grams.nbytes == stats.n_outputs * 8 * 8 * 8


def test_drop_classes_after_subtracting_a_whole_class(data):
    features, labels = data
    d = features.shape[1]
    stats = analytic.accumulate(analytic.init_statistics(d), features, labels)
    gone = labels == 7
    with pytest.raises(IntegrityError, match="still holds"):
        analytic.drop_classes(stats, [7])
    removed = analytic.subtract(stats, analytic.accumulate(analytic.init_statistics(d), features[gone], labels[gone]))
    dropped = analytic.drop_classes(removed, [7])
    assert dropped.class_ids.tolist() == [0, 3, 11]
    expected = ridge_oracle(features[~gone], one_hot_columns(labels[~gone], [0, 3, 11]), RIDGE)
    assert relative_error(analytic.solve(dropped, RIDGE).weights, expected) <= 1e-10


def test_ridge_is_chosen_at_solve_time(data):
    features, labels = data
    stats = analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels)
    for ridge in (1e-3, 1.0, 100.0):
        expected = ridge_oracle(features, one_hot_columns(labels, stats.class_ids), ridge)
        assert relative_error(analytic.solve(stats, ridge).weights, expected) <= 1e-10
    factor = analytic.factorize(stats, 1.0)
    assert np.array_equal(analytic.solve(stats, 1.0, factor).weights, analytic.solve(stats, 1.0).weights)


def test_jax_arrays_are_accepted(data):
    features, labels = data
    stats = analytic.accumulate(analytic.init_statistics(features.shape[1]), jnp.asarray(features, jnp.float32),
                                jnp.asarray(labels))
    expected = ridge_oracle(features.astype(np.float32), one_hot_columns(labels, stats.class_ids), RIDGE)
    assert relative_error(analytic.solve(stats, RIDGE).weights, expected) <= 1e-10


def test_float32_mode_error_is_small_and_reported():
    # Badly conditioned, offset features: where float32 without the shift loses most digits.
    features, labels = make_classification(n=4000, d=64, offset=30.0, seed=3)
    f32 = features.astype(np.float32)
    expected = ridge_oracle(f32, one_hot_columns(labels, np.unique(labels)), RIDGE)
    stats = analytic.fit(analytic.init_statistics(64, precision="float32"), batches(f32, labels, 256))
    assert stats.moments.gram.dtype == np.float32 and stats.shift is not None
    error = relative_error(analytic.solve(stats, RIDGE).weights, expected)
    assert error <= 1e-4
    unshifted = analytic.fit(analytic.init_statistics(64, precision="float32", shift=np.zeros(64)),
                             batches(f32, labels, 256))
    assert relative_error(analytic.solve(unshifted, RIDGE).weights, expected) > 10 * error


@pytest.mark.parametrize("order", ["C", "F"])
def test_float64_state_with_a_shift_learns_around_it(order):
    # Float64 features in C order took a no-copy path that skipped the shift: the moments then were the raw ones
    # while the state said they were shifted, and the rebuilt G was off by n s sᵀ.
    features, labels = make_classification(offset=50.0)
    rows = np.asarray(features, order=order)
    shifted = analytic.accumulate(analytic.init_statistics(features.shape[1], shift=features[:64].mean(axis=0)),
                                  rows, labels)
    plain = analytic.accumulate(analytic.init_statistics(features.shape[1]), features, labels)
    assert relative_error(analytic.gram_matrix(shifted), analytic.gram_matrix(plain)) <= 1e-14
    assert relative_error(analytic.cross_matrix(shifted), analytic.cross_matrix(plain)) <= 1e-14
    assert np.abs(shifted.moments.feature_sum).max() < 0.1 * np.abs(plain.moments.feature_sum).max()


def test_float32_shift_keeps_sparse_relu_features_accurate():
    # ReLU buffer features are about half zeros: an exact mean shift turns each zero into a full 24-bit number whose
    # products round in every row; the shift rounded to 4 significant bits keeps those products exact.
    features, labels = make_classification(n=4000, d=64, offset=0.5, seed=4)
    expanded = analytic.expand(analytic.init_buffer(64, 256, seed=1), features)
    expected = ridge_oracle(expanded, one_hot_columns(labels, np.unique(labels)), RIDGE)

    def error(shift):
        stats = analytic.fit(analytic.init_statistics(256, precision="float32", shift=shift),
                             batches(expanded, labels, 512))
        return relative_error(analytic.solve(stats, RIDGE).weights, expected)

    default = error(None)
    assert default <= 1e-5
    assert 2 * default < min(error(expanded[:1024].mean(axis=0)), error(np.zeros(256)))
    shift = analytic.mean_shift(expanded)
    mantissa, _ = np.frexp(shift)
    np.testing.assert_array_equal(mantissa * 16, np.round(mantissa * 16))  # 4 significant bits


def test_float32_states_merge_only_with_the_same_shift(data):
    features, labels = data
    d = features.shape[1]
    a = analytic.accumulate(analytic.init_statistics(d, precision="float32"), features[:300], labels[:300])
    b = analytic.accumulate(analytic.init_statistics(d, precision="float32"), features[300:], labels[300:])
    with pytest.raises(IntegrityError, match="different mean shifts"):
        analytic.merge(a, b)
    shift = features[:50].mean(0)
    a = analytic.accumulate(analytic.init_statistics(d, precision="float32", shift=shift), features[:300], labels[:300])
    b = analytic.accumulate(analytic.init_statistics(d, precision="float32", shift=shift), features[300:], labels[300:])
    expected = ridge_oracle(features.astype(np.float32), one_hot_columns(labels, a.class_ids), RIDGE)
    assert relative_error(analytic.solve(analytic.merge(a, b), RIDGE).weights, expected) <= 1e-4


def fixed_state(features, labels, order, splits):
    parts = np.array_split(order, splits)
    states = [analytic.accumulate(analytic.init_statistics(features.shape[1], precision="fixed"),
                                  features[p], labels[p]) for p in parts]
    total = states[-1]
    for s in reversed(states[:-1]):
        total = analytic.merge(s, total)
    return total


def test_fixed_mode_is_bit_identical_for_any_order_and_partition(data):
    features, labels = data
    rng = np.random.default_rng(4)
    orders = [np.arange(len(labels)), rng.permutation(len(labels)), rng.permutation(len(labels))[::-1]]
    states = [fixed_state(features, labels, order, splits) for order in orders for splits in (1, 3, 17)]
    hashes = {analytic.state_hash(s) for s in states}
    assert len(hashes) == 1
    weights = [analytic.solve(s, RIDGE).weights for s in states]
    assert all(np.array_equal(w, weights[0]) for w in weights)
    quantized = np.ldexp(internal.quantize(features, 12), -12)
    expected = ridge_oracle(quantized, one_hot_columns(labels, states[0].class_ids), RIDGE)
    assert relative_error(weights[0], expected) <= 1e-12


def test_fixed_mode_subtract_gives_the_retrained_hash(data):
    features, labels = data
    d = features.shape[1]
    full = analytic.accumulate(analytic.init_statistics(d, precision="fixed"), features, labels)
    forget = analytic.accumulate(analytic.init_statistics(d, precision="fixed"), features[::4], labels[::4])
    keep = np.ones(len(labels), bool)
    keep[::4] = False
    retrained = analytic.accumulate(analytic.init_statistics(d, precision="fixed"), features[keep], labels[keep])
    assert analytic.state_hash(analytic.subtract(full, forget)) == analytic.state_hash(retrained)


LAYOUTS = {
    "float64 rows": lambda x: x,
    "float32 rows": lambda x: x.astype(np.float32),
    "Fortran order": np.asfortranarray,
    "strided view": lambda x: np.repeat(x, 2, axis=1)[:, ::2],
}


def exact_moments(features, targets):
    """Float64 oracle of G, B, the feature sum and the target sum (rows as given, no shift)."""
    x, t = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    return x.T @ x, x.T @ t, x.sum(axis=0), t.sum(axis=0)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 256 rows and float32 Kahan steps every 1,000 rows, so that small batches span many of each."""
    monkeypatch.setattr(analytic.statistics, "BLOCK_ENTRIES", 1)
    monkeypatch.setattr(analytic.precision, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(analytic.statistics, "CLASS_CHUNK_ROWS", 1_000)


@pytest.mark.parametrize("precision", ["float64", "float32", "fixed"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_blocked_accumulation_gives_every_moment(precision, layout, small_blocks):
    # Many blocks, in one call and streamed: every moment against a float64 oracle (fixed: the exact integers), a
    # symmetric Gram, and equal one-call and streamed states.
    features, labels = make_classification(n=5_000, d=24, seed=8)
    x = LAYOUTS[layout](features)
    empty = analytic.init_statistics(24, precision=precision)
    one_call = analytic.accumulate(empty, x, labels)
    streamed = analytic.fit(empty, batches(x, labels, 777))
    targets = one_hot_columns(labels, one_call.class_ids)
    if precision == "fixed":
        q = internal.quantize(np.asarray(x, np.float64), 12).astype(np.int64)
        moments = internal.host_moments(one_call)
        np.testing.assert_array_equal(moments.gram, q.T @ q)
        np.testing.assert_array_equal(moments.cross, q.T @ targets.astype(np.int64))
        np.testing.assert_array_equal(moments.feature_sum, q.sum(axis=0))
        assert analytic.state_hash(streamed) == analytic.state_hash(one_call)
        return
    tolerance = 1e-13 if precision == "float64" else 1e-6
    for state in (one_call, streamed):  # each around its own shift (float32: from its first batch)
        shift = 0.0 if state.shift is None else state.shift.astype(np.float64)
        gram, cross, feature_sum, _ = exact_moments(np.asarray(x, np.float64) - shift, targets)
        moments = internal.host_moments(state)
        np.testing.assert_array_equal(moments.gram, moments.gram.T)
        assert relative_error(moments.gram, gram) <= tolerance
        assert relative_error(moments.cross, cross) <= tolerance
        assert relative_error(moments.feature_sum, feature_sum) <= tolerance
        np.testing.assert_array_equal(state.class_counts, np.bincount(labels)[state.class_ids])


@pytest.mark.parametrize("precision", ["float64", "float32", "fixed"])
def test_blocked_regression_moments(precision, small_blocks):
    rng = np.random.default_rng(9)
    features = rng.normal(size=(4_500, 16)) + 1.0
    targets = features @ rng.normal(size=(16, 3)) + rng.normal(size=(4_500, 3))
    stats = analytic.fit(analytic.init_statistics(16, precision=precision, n_targets=3),
                         batches(features, targets, 2_000))
    moments = internal.host_moments(stats)
    if precision == "fixed":
        q, t = (internal.quantize(a, 12).astype(np.int64) for a in (features, targets))
        for actual, expected in zip(moments[:4], (q.T @ q, q.T @ t, q.sum(axis=0), t.sum(axis=0))):
            np.testing.assert_array_equal(actual, expected)
        return
    shift = 0.0 if stats.shift is None else stats.shift.astype(np.float64)
    tolerance = 1e-13 if precision == "float64" else 1e-6
    for actual, expected in zip(moments[:4], exact_moments(features - shift, targets)):
        assert relative_error(actual, expected) <= tolerance


def test_fixed_mode_flushes_before_a_partial_sum_could_round():
    # Values near the top of the grid (|q| ~ 2^25, so q² ~ 2^50): only a few rows fit below 2^53 in the float64
    # product, which must be split and flushed to the integers many times within one batch and stay exact.
    rng = np.random.default_rng(10)
    features = rng.uniform(-8191.0, 8191.0, size=(300, 5))
    labels = rng.integers(0, 3, 300)
    stats = analytic.accumulate(analytic.init_statistics(5, precision="fixed", frac_bits=12), features, labels)
    q = [[int(v) for v in row] for row in internal.quantize(features, 12)]
    gram = [[sum(r[i] * r[j] for r in q) for j in range(5)] for i in range(5)]  # Python integers: no rounding
    assert internal.host_moments(stats).gram.tolist() == gram


def test_fixed_mode_rejects_values_outside_the_grid():
    stats = analytic.init_statistics(3, precision="fixed", frac_bits=12)
    with pytest.raises(InputError, match="fixed-point range"):
        analytic.accumulate(stats, np.array([[1e5, 0.0, 0.0]]), np.array([0]))


def test_streamed_fit_peak_memory_does_not_grow_with_n():
    d, batch = 64, 500
    rng = np.random.default_rng(5)

    def stream(n):
        for _ in range(n // batch):
            yield rng.normal(size=(batch, d)), rng.integers(0, 10, batch)

    peaks = []
    for n in (20_000, 200_000):
        tracemalloc.start()
        analytic.fit(analytic.init_statistics(d), stream(n))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 1.1 * peaks[0]


# ----- bad input: a clear error, and the state passed in is unchanged ------------------------------------------


@pytest.fixture
def learned(data):
    features, labels = data
    stats = analytic.accumulate(analytic.init_statistics(features.shape[1], class_grams=True), features, labels)
    return stats, analytic.state_hash(stats)


def assert_rejected(stats, digest, error, match, call):
    with pytest.raises(error, match=match):
        call()
    assert analytic.state_hash(stats) == digest


@pytest.mark.parametrize("class_ids", [[1.5], [1.0], ["a"], [True], np.array([2.0])])
def test_non_integer_class_ids_to_drop_are_refused(learned, class_ids):
    stats, digest = learned
    assert_rejected(stats, digest, InputError, "class ids must be integers",
                    lambda: analytic.drop_classes(stats, class_ids))


def test_labels_beyond_int64_are_refused(learned):
    stats, digest = learned
    labels = np.full(60, 2**63 + 5, np.uint64)
    assert_rejected(stats, digest, InputError, "does not fit int64",
                    lambda: analytic.accumulate(stats, np.ones((60, stats.dim)), labels))


def test_fit_refuses_what_is_not_a_stream_of_pairs(learned, data):
    stats, digest = learned
    features, labels = data
    assert_rejected(stats, digest, InputError, "not one pair", lambda: analytic.fit(stats, (features, labels)))
    assert_rejected(stats, digest, InputError, "batch 1 of the stream",
                    lambda: analytic.fit(stats, [(features, labels), features]))


def test_nan_features_rejected(learned):
    stats, digest = learned
    x = np.ones((4, stats.dim))
    x[2, 5] = np.nan
    assert_rejected(stats, digest, InputError, "NaN.*row 2", lambda: analytic.accumulate(stats, x, np.zeros(4, int)))


def test_inf_features_rejected(learned):
    stats, digest = learned
    x = np.ones((4, stats.dim))
    x[1, 0] = -np.inf
    assert_rejected(stats, digest, InputError, "Inf", lambda: analytic.accumulate(stats, x, np.zeros(4, int)))


def test_wrong_feature_dimension_rejected(learned):
    stats, digest = learned
    x = np.ones((4, stats.dim + 1))
    assert_rejected(stats, digest, InputError, "dimension", lambda: analytic.accumulate(stats, x, np.zeros(4, int)))


def test_wrong_feature_dtype_rejected(learned):
    stats, digest = learned
    x = np.ones((4, stats.dim), dtype=np.int32)
    assert_rejected(stats, digest, InputError, "floating", lambda: analytic.accumulate(stats, x, np.zeros(4, int)))


def test_negative_labels_rejected(learned):
    stats, digest = learned
    x = np.ones((3, stats.dim))
    assert_rejected(stats, digest, InputError, "non-negative", lambda: analytic.accumulate(stats, x, np.array([0, -1, 3])))


def test_non_integer_labels_rejected(learned):
    stats, digest = learned
    x = np.ones((3, stats.dim))
    assert_rejected(stats, digest, InputError, "integer", lambda: analytic.accumulate(stats, x, np.array([0.0, 1.5, 3.0])))


def test_empty_batch_rejected(learned):
    stats, digest = learned
    x = np.ones((0, stats.dim))
    assert_rejected(stats, digest, InputError, "empty batch", lambda: analytic.accumulate(stats, x, np.zeros(0, int)))


def test_mismatched_lengths_rejected(learned):
    stats, digest = learned
    x = np.ones((5, stats.dim))
    assert_rejected(stats, digest, InputError, "5 rows but labels have 4",
                    lambda: analytic.accumulate(stats, x, np.zeros(4, int)))


def test_subtracting_what_was_never_added_rejected(learned, data):
    stats, digest = learned
    features, labels = data
    doubled = analytic.merge(stats, stats)
    assert_rejected(stats, digest, IntegrityError, "negative", lambda: analytic.subtract(stats, doubled))
    other = analytic.accumulate(analytic.init_statistics(stats.dim, class_grams=True), features[:3], np.array([99] * 3))
    assert_rejected(stats, digest, IntegrityError, "never learned", lambda: analytic.subtract(stats, other))


def test_subtracting_a_state_with_an_empty_column_the_head_dropped(data):
    features, labels = data
    d = features.shape[1]
    in_source = (labels == 11) | (np.arange(len(labels)) < 100)  # the source holds every sample of class 11
    source = analytic.accumulate(analytic.init_statistics(d), features[in_source], labels[in_source])
    rest = analytic.accumulate(analytic.init_statistics(d), features[~in_source], labels[~in_source])
    class_11 = in_source & (labels == 11)
    removed = analytic.accumulate(analytic.init_statistics(d), features[class_11], labels[class_11])
    head = analytic.drop_classes(analytic.subtract(analytic.merge(source, rest), removed), [11])
    source_left = analytic.subtract(source, removed)  # still has an (empty) column for class 11
    assert 11 in source_left.class_ids and 11 not in head.class_ids
    without_source = analytic.subtract(head, source_left)
    expected = ridge_oracle(features[~in_source], one_hot_columns(labels[~in_source], without_source.class_ids),
                            RIDGE)
    assert relative_error(analytic.solve(without_source, RIDGE).weights, expected) <= 1e-10

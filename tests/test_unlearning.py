"""Exact unlearning against retraining from scratch (float64 direct solve), plus integrity and receipts."""

import jax
import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
from analytic import internal
import unlearning
from unlearning import factor as factor_lib

RIDGE = 0.5
D = 24


def retrained(features, labels, ridge=RIDGE):
    """Oracle: the ridge head solved directly on the retained data, with its class ids."""
    class_ids = np.unique(labels)
    return ridge_oracle(features, one_hot_columns(labels, class_ids), ridge), class_ids


def trained_head(features, labels, **options):
    head = unlearning.init_unlearning_head(features.shape[1], RIDGE, **options)
    return unlearning.factorize(unlearning.learn(head, features, labels))


def assert_matches_retraining(head, features, labels, test_features, tolerance=1e-10):
    weights, class_ids = retrained(features, labels)
    solved = unlearning.solve(head)
    np.testing.assert_array_equal(solved.class_ids, class_ids)
    assert relative_error(solved.weights, weights) <= tolerance
    expected = class_ids[np.argmax(test_features @ weights, axis=1)]
    np.testing.assert_array_equal(analytic.predict_labels(solved, test_features), expected)


def snapshot(head):
    """Everything a refused request must leave untouched."""
    arrays = [*jax.tree_util.tree_leaves(head.solver_state), head.folded_rows]
    if head.ledger is not None:
        arrays += [head.ledger.fingerprints, head.ledger.counts]
    return analytic.state_hash(head.statistics), [None if a is None else np.array(a) for a in arrays]


def assert_unchanged(head, before):
    digest, arrays = snapshot(head)
    assert digest == before[0]
    for now, then in zip(arrays, before[1]):
        np.testing.assert_array_equal(now, then)


# ------------------------------------------------------------------------------ the low-rank correction of the factor


@pytest.mark.parametrize("steps", [[(5, -1)], [(40, -1)], [(3, 1)], [(7, -1), (4, 1), (9, -1)]])
def test_corrected_factor_solves_like_refactoring(steps):
    rng = np.random.default_rng(len(steps))
    d = 70
    rows = rng.normal(size=(300, d)) + 1.5
    matrix = rows.T @ rows + 0.1 * np.eye(d)
    factor = factor_lib.corrected_factor(internal.factorize_matrix(rows.T @ rows, 0.1))
    start, changed = 0, matrix.copy()
    for k, sign in steps:
        folded = rows[start : start + k] if sign < 0 else rng.normal(size=(k, d))
        start += k
        kept = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(factor)]
        updated = factor_lib.fold_rows(factor, folded, sign)
        for leaf, copy in zip(jax.tree_util.tree_leaves(factor), kept):
            np.testing.assert_array_equal(leaf, copy)
        factor, changed = updated, changed + sign * folded.T @ folded
    rhs = rng.normal(size=(d, 4))
    assert relative_error(factor_lib.solve_corrected(factor, rhs), np.linalg.solve(changed, rhs)) <= 1e-12


def test_corrected_factor_refuses_to_lose_positive_definiteness():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(50, 10))
    factor = factor_lib.corrected_factor(internal.factorize_matrix(rows.T @ rows, 0.1))
    with pytest.raises(analytic.IntegrityError, match="positive definiteness"):
        factor_lib.fold_rows(factor, 10 * rng.normal(size=(3, 10)), -1)
    dominant = rows.copy()
    dominant[0] *= 100  # a row that carries most of G: removing it once is fine, twice is impossible
    factor = factor_lib.corrected_factor(internal.factorize_matrix(dominant.T @ dominant, 0.1))
    once = factor_lib.fold_rows(factor, dominant[:1], -1)
    with pytest.raises(analytic.IntegrityError, match="positive definiteness"):
        factor_lib.fold_rows(once, dominant[:1], -1)


# -------------------------------------------------------------------------------------------- exact against retrain


@pytest.mark.parametrize("solver", ["cholesky", "recursive"])
@pytest.mark.parametrize("k, route", [(2, "small"), (300, "large")])
def test_forget_samples_equals_retraining(solver, k, route):
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = trained_head(features, labels, solver=solver)
    forgotten, receipt = unlearning.forget_samples(head, features[:k], labels[:k])
    small_route = "downdate" if solver == "cholesky" else "recursive"
    assert receipt.route == (small_route if route == "small" else ("refactor" if solver == "cholesky" else "resync"))
    assert receipt.removed_count == k
    assert sum(receipt.removed_per_class.values()) == k
    assert_matches_retraining(forgotten, features[k:], labels[k:], test_features)


def test_forget_class_from_statistics_drops_its_column():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = trained_head(features, labels, per_class=True)
    forgotten, receipt = unlearning.forget_class(head, 7)
    keep = labels != 7
    assert forgotten.statistics.n_outputs == head.statistics.n_outputs - 1
    assert receipt.dropped_classes == (7,)
    assert receipt.removed_per_class == {7: int((~keep).sum())}
    assert_matches_retraining(forgotten, features[keep], labels[keep], test_features)
    assert not np.isin(analytic.predict_labels(unlearning.solve(forgotten), test_features), 7).any()


@pytest.mark.parametrize("class_id", [7.0, 1.7, True, [7], "7"])
def test_forget_class_refuses_what_is_not_one_integer_class_id(class_id):
    features, labels = make_classification(n=200, d=D)
    head = trained_head(features, labels, per_class=True)
    before = analytic.state_hash(head.statistics)
    with pytest.raises(analytic.InputError):
        unlearning.forget_class(head, class_id)
    assert analytic.state_hash(head.statistics) == before


def test_forget_class_from_its_data():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = trained_head(features, labels)
    keep = labels != 3
    forgotten, receipt = unlearning.forget_class(head, 3, features[~keep])
    assert receipt.dropped_classes == (3,)
    assert_matches_retraining(forgotten, features[keep], labels[keep], test_features)


def test_forgotten_class_can_be_learned_again():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = trained_head(features, labels, per_class=True)
    forgotten, _ = unlearning.forget_class(head, 11)
    relearned = unlearning.learn(forgotten, features[labels == 11], labels[labels == 11])
    order = np.argsort(labels != 11, kind="stable")  # class 11 last, as relearned
    assert_matches_retraining(relearned, features[order], labels[order], test_features)


def test_forget_source_equals_retraining_without_it():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = unlearning.init_unlearning_head(D, RIDGE, track_sources=True, ledger=True)
    for index, part in enumerate(np.array_split(np.arange(600), 4)):
        head = unlearning.learn(head, features[part], labels[part], source=f"client-{index}")
    forgotten, receipt = unlearning.forget_source(head, "client-2")
    keep = np.setdiff1d(np.arange(600), np.array_split(np.arange(600), 4)[2])
    assert receipt.source == "client-2" and receipt.removed_count == 150
    assert forgotten.ledger.size == 450
    assert_matches_retraining(forgotten, features[keep], labels[keep], test_features)


def test_forget_class_from_statistics_in_every_tracked_source():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = unlearning.init_unlearning_head(D, RIDGE, track_sources=True, per_class=True)
    parts = np.array_split(np.arange(600), 3)
    for index, part in enumerate(parts):
        head = unlearning.learn(head, features[part], labels[part], source=f"client-{index}")
    forgotten, _ = unlearning.forget_class(head, 0)
    forgotten, _ = unlearning.forget_source(forgotten, "client-1")
    keep = np.setdiff1d(np.concatenate([parts[0], parts[2]]), np.flatnonzero(labels == 0))
    assert_matches_retraining(forgotten, features[keep], labels[keep], test_features)


def test_regression_head_forgets_exactly():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, D)) + 1.0
    targets = features @ rng.normal(size=(D, 2)) + 0.1 * rng.normal(size=(500, 2))
    head = unlearning.init_unlearning_head(D, RIDGE, n_targets=2)
    head = unlearning.factorize(unlearning.learn(head, features, targets))
    for k in (3, 200):
        forgotten, receipt = unlearning.forget_samples(head, features[:k], targets[:k])
        expected = ridge_oracle(features[k:], targets[k:], RIDGE)
        assert relative_error(unlearning.solve(forgotten).weights, expected) <= 1e-10
        assert receipt.removed_per_class == {}


@pytest.mark.parametrize("solver", ["cholesky", "recursive"])
def test_thousand_interleaved_requests_stay_exact(solver):
    rng = np.random.default_rng(7)
    features, labels = make_classification(n=3000, d=16, classes=(0, 1, 2, 3, 4))
    test_features, _ = make_classification(n=200, d=16, classes=(0, 1, 2, 3, 4), seed=1)
    learned = np.zeros(3000, bool)
    learned[:400] = True
    head = trained_head(features[:400], labels[:400], solver=solver)
    for _ in range(1000):
        k = int(rng.integers(1, 3))
        if rng.random() < 0.5 and (~learned).sum() >= k:
            rows = rng.choice(np.flatnonzero(~learned), k, replace=False)
            head = unlearning.learn(head, features[rows], labels[rows])
            learned[rows] = True
        else:
            rows = rng.choice(np.flatnonzero(learned), k, replace=False)
            head, _ = unlearning.forget_samples(head, features[rows], labels[rows])
            learned[rows] = False
    index = np.flatnonzero(learned)
    assert_matches_retraining(head, features[index], labels[index], test_features, tolerance=1e-9)


# ------------------------------------------------------------------------------------------ bit-exact receipts


def test_fixed_precision_receipts_certify_retraining():
    features, labels = make_classification(n=600, d=D)
    fixed = {"precision": "fixed", "per_class": True}
    head = trained_head(features, labels, **fixed)
    head, by_samples = unlearning.forget_samples(head, features[:5], labels[:5])
    head, by_class = unlearning.forget_class(head, 3)
    keep = np.arange(600) >= 5
    retained = analytic.init_statistics(D, precision="fixed")
    after_samples = analytic.accumulate(retained, features[keep][::-1], labels[keep][::-1])  # any order
    keep &= labels != 3
    after_class = analytic.accumulate(retained, features[keep], labels[keep])
    assert by_samples.hash_after == analytic.state_hash(after_samples)
    assert unlearning.certifies(by_samples, after_samples)
    assert unlearning.certifies(by_class, after_class)
    assert by_class.hash_before == by_samples.hash_after
    assert not unlearning.certifies(by_class, after_samples)


# ------------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def guarded():
    features, labels = make_classification(n=300, d=D)
    return trained_head(features, labels, ledger=True, per_class=True), features, labels


def test_refuses_a_class_never_seen(guarded):
    head, _, _ = guarded
    before = snapshot(head)
    with pytest.raises(analytic.IntegrityError, match="class 5 was never learned"):
        unlearning.forget_class(head, 5)
    assert_unchanged(head, before)


def test_refuses_samples_never_learned_with_the_ledger(guarded):
    head, features, labels = guarded
    before = snapshot(head)
    with pytest.raises(analytic.IntegrityError, match="never learned by this head"):
        unlearning.forget_samples(head, features[:2] + 0.01, labels[:2])
    forgotten, _ = unlearning.forget_samples(head, features[:2], labels[:2])
    with pytest.raises(analytic.IntegrityError, match="never learned by this head"):
        unlearning.forget_samples(forgotten, features[:1], labels[:1])  # twice
    assert_unchanged(head, before)


def test_refuses_a_label_outside_the_head(guarded):
    head, features, _ = guarded
    before = snapshot(head)
    with pytest.raises(analytic.IntegrityError, match=r"labels \[9\] are outside the head"):
        unlearning.forget_samples(head, features[:2], np.array([9, 9]))
    assert_unchanged(head, before)


def test_refuses_nan_features(guarded):
    head, features, labels = guarded
    before = snapshot(head)
    poisoned = features[:3].copy()
    poisoned[1, 4] = np.nan
    with pytest.raises(analytic.InputError, match="NaN"):
        unlearning.forget_samples(head, poisoned, labels[:3])
    assert_unchanged(head, before)


def test_refuses_a_request_that_would_empty_the_head(guarded):
    head, features, labels = guarded
    before = snapshot(head)
    with pytest.raises(analytic.IntegrityError, match="empty head"):
        unlearning.forget_samples(head, features, labels)
    assert_unchanged(head, before)


def test_refuses_rows_that_were_never_learned_without_a_ledger():
    features, labels = make_classification(n=300, d=D)
    head = trained_head(features, labels, ledger=False)
    before = snapshot(head)
    eigenvalues, eigenvectors = np.linalg.eigh(features.T @ features)
    stranger = np.sqrt(eigenvalues[0] + RIDGE + 1.0) * eigenvectors[:, :1].T  # G + γI − xxᵀ is indefinite
    with pytest.raises(analytic.IntegrityError, match="positive definiteness"):
        unlearning.forget_samples(head, stranger, labels[:1])
    assert_unchanged(head, before)


def test_default_head_refuses_samples_never_learned_or_under_another_source():
    features, labels = make_classification(n=300, d=D)
    head = unlearning.init_unlearning_head(D, RIDGE, track_sources=True)
    head = unlearning.learn(head, features[:150], labels[:150], source="a")
    head = unlearning.learn(head, features[150:], labels[150:], source="b")
    before = snapshot(head)
    with pytest.raises(analytic.IntegrityError, match="never learned"):
        unlearning.forget_samples(head, features[:5] + 0.25, labels[:5], source="a")
    with pytest.raises(analytic.IntegrityError, match="never learned"):
        unlearning.forget_samples(head, features[:5], labels[:5], source="b")  # learned under "a"
    assert_unchanged(head, before)


def test_recursive_solver_drops_a_class_emptied_by_a_small_request():
    features, labels = make_classification(n=600, d=D)
    labels = labels.copy()
    labels[[5, 9]] = 20  # a class of two samples, forgotten through the Woodbury route
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = trained_head(features, labels, solver="recursive")
    forgotten, receipt = unlearning.forget_samples(head, features[[5, 9]], labels[[5, 9]])
    assert receipt.route == "recursive" and receipt.dropped_classes == (20,)
    keep = labels != 20
    assert_matches_retraining(forgotten, features[keep], labels[keep], test_features)


def test_tracked_sources_forget_samples_of_a_named_source():
    features, labels = make_classification(n=300, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    head = unlearning.init_unlearning_head(D, RIDGE, track_sources=True)
    head = unlearning.learn(head, features[:150], labels[:150], source="a")
    head = unlearning.learn(head, features[150:], labels[150:], source="b")
    with pytest.raises(analytic.IntegrityError, match="name the source"):
        unlearning.forget_samples(head, features[:3], labels[:3])
    head, _ = unlearning.forget_samples(head, features[:3], labels[:3], source="a")
    head, receipt = unlearning.forget_source(head, "a")
    assert receipt.removed_count == 147
    assert_matches_retraining(head, features[150:], labels[150:], test_features)


def test_float32_head_with_per_class_statistics_learns_in_batches_and_forgets_a_class():
    features, labels = make_classification(n=600, d=D)
    head = unlearning.init_unlearning_head(D, RIDGE, precision="float32", per_class=True)
    for part in np.array_split(np.arange(600), 3):
        head = unlearning.learn(head, features[part], labels[part])
    forgotten, receipt = unlearning.forget_class(head, 3)
    keep = labels != 3
    weights, class_ids = retrained(features[keep].astype(np.float32), labels[keep])
    solved = unlearning.solve(forgotten)
    np.testing.assert_array_equal(solved.class_ids, class_ids)
    assert receipt.removed_count == int((~keep).sum())
    assert relative_error(solved.weights, weights) <= 1e-4  # float32 statistics


def test_source_can_be_forgotten_after_one_of_its_classes_was_emptied():
    features, labels = make_classification(n=600, d=D)
    test_features, _ = make_classification(n=200, d=D, seed=1)
    in_a = (labels == 11) | (np.arange(600) < 100)  # source A holds every sample of class 11
    head = unlearning.init_unlearning_head(D, RIDGE, track_sources=True)
    head = unlearning.learn(head, features[in_a], labels[in_a], source="A")
    head = unlearning.learn(head, features[~in_a], labels[~in_a], source="B")
    class_11 = np.flatnonzero(in_a & (labels == 11))
    head, _ = unlearning.forget_samples(head, features[class_11], labels[class_11], source="A")
    forgotten, receipt = unlearning.forget_source(head, "A")
    assert receipt.source == "A"
    assert_matches_retraining(forgotten, features[~in_a], labels[~in_a], test_features)


def test_device_resident_head_forgets_with_the_same_receipts():
    features, labels = make_classification(n=600, d=D)
    features = features.astype(np.float32)
    head = unlearning.init_unlearning_head(D, 0.1, precision="fixed", per_class=True, device=jax.devices()[0])
    head = unlearning.learn(head, jax.device_put(features), jax.device_put(labels.astype(np.int32)))
    assert head.statistics.on_device
    head, by_samples = unlearning.forget_samples(head, features[:5], labels[:5])
    head, by_class = unlearning.forget_class(head, 3)
    assert by_samples.route == by_class.route == "device" and head.statistics.on_device
    keep = (np.arange(600) >= 5) & (labels != 3)
    retained = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), features[keep], labels[keep])
    assert unlearning.certifies(by_class, retained)
    expected = ridge_oracle(np.ldexp(internal.quantize(features[keep], 12), -12),
                            one_hot_columns(labels[keep], retained.class_ids), 0.1)
    assert relative_error(unlearning.solve(jax.device_get(head)).weights, expected) <= 1e-10
    np.testing.assert_array_equal(unlearning.solve(head).class_ids, retained.class_ids)

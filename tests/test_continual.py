"""Continual learners: exactness against independent float64 oracles, scenarios and metrics."""

import numpy as np
import pytest
from conftest import one_hot_columns, relative_error, ridge_oracle

import analytic
import continual
from continual.aef_ocl import pseudo_features
from continual.ds_al import stream_scores

RIDGE = 0.1


def gaussian_classes(n, d, n_classes, seed, spread=3.0):
    rng = np.random.default_rng(seed)
    means = spread * rng.normal(size=(n_classes, d))
    labels = rng.integers(0, n_classes, n)
    return 1.0 + means[labels] + rng.normal(size=(n, d)) * np.geomspace(0.2, 2.0, d), labels


def learn_all(learner, phases):
    state = learner.init()
    for x, y in phases:
        state = learner.learn(state, x, y)
    return state


def joint(phases):
    return np.concatenate([x for x, _ in phases]), np.concatenate([y for _, y in phases])


@pytest.mark.parametrize("n_phases", [1, 7, 500])
def test_acil_equals_joint_ridge_after_every_phase(n_phases):
    # strict class-incremental: phase t holds only class t (three samples), d = 5
    rng = np.random.default_rng(n_phases)
    phases = [(1.0 + rng.normal(size=(3, 5)) + t % 7, np.full(3, t)) for t in range(n_phases)]
    learner = continual.acil(np.arange(n_phases), ridge=RIDGE)
    state = learner.init()
    for t, (x, y) in enumerate(phases):
        state = learner.learn(state, x, y)
        if t in (0, n_phases // 2, n_phases - 1):
            features, labels = joint(phases[: t + 1])
            oracle = ridge_oracle(features, one_hot_columns(labels, np.arange(t + 1)), RIDGE)
            assert relative_error(state.model.head.weights, oracle) <= 1e-10
            np.testing.assert_array_equal(state.model.head.class_ids, np.arange(t + 1))


def test_g_acil_with_reappearing_classes_equals_joint_ridge_after_500_phases():
    rng = np.random.default_rng(1)
    phases = [gaussian_classes(4, 6, 12, seed) for seed in rng.integers(0, 2**31, 500)]
    state = learn_all(continual.g_acil(np.arange(12), ridge=RIDGE), phases)
    features, labels = joint(phases)
    classes = np.unique(labels)
    oracle = ridge_oracle(features, one_hot_columns(labels, classes), RIDGE)
    assert relative_error(state.model.head.weights, oracle) <= 1e-10


def test_acil_on_buffer_layer_equals_joint_ridge_on_expanded_features():
    features, labels = gaussian_classes(300, 8, 6, seed=2)
    layer = analytic.init_buffer(8, 40, seed=3)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    state = learn_all(continual.acil(np.arange(6), expansion=layer, ridge=RIDGE), phases)
    expanded = analytic.expand(layer, features).astype(np.float64)
    oracle = ridge_oracle(expanded, one_hot_columns(labels, np.arange(6)), RIDGE)
    assert relative_error(state.model.head.weights, oracle) <= 1e-10


def test_gkeal_equals_joint_ridge_on_kernel_features_with_phase_zero_centres():
    features, labels = gaussian_classes(240, 5, 6, seed=4)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    state = learn_all(continual.gkeal(np.arange(6), width=30, sigma=4.0, seed=5, ridge=RIDGE), phases)
    layer = analytic.init_gaussian_kernel(phases[0][0], 30, sigma=4.0, seed=5)
    expanded = analytic.expand(layer, features).astype(np.float64)
    oracle = ridge_oracle(expanded, one_hot_columns(labels, np.arange(6)), RIDGE)
    assert relative_error(state.model.head.weights, oracle) <= 1e-10


def test_gkeal_with_more_centres_than_base_samples_equals_joint_ridge_on_kernel_features():
    features, labels = gaussian_classes(240, 5, 6, seed=4)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    width = 3 * phases[0][0].shape[0]  # more centres than phase-0 samples: the rest are synthesized
    state = learn_all(continual.gkeal(np.arange(6), width=width, sigma=4.0, seed=5, ridge=RIDGE), phases)
    layer = analytic.init_gaussian_kernel(phases[0][0], width, sigma=4.0, seed=5)
    np.testing.assert_array_equal(np.asarray(state.model.expansion.centres), np.asarray(layer.centres))
    assert np.unique(np.asarray(layer.centres), axis=0).shape[0] == width
    expanded = analytic.expand(layer, features).astype(np.float64)
    oracle = ridge_oracle(expanded, one_hot_columns(labels, np.arange(6)), RIDGE)
    assert relative_error(state.model.head.weights, oracle) <= 1e-10


def weighted_ridge_oracle(features, labels, ridge):
    classes, counts = np.unique(labels, return_counts=True)
    weights = classes.size * (1 / counts) / np.sum(1 / counts)
    row_weights = weights[np.searchsorted(classes, labels)]
    x = np.asarray(features, np.float64)
    targets = one_hot_columns(labels, classes)
    return np.linalg.solve(x.T @ (row_weights[:, None] * x) + ridge * np.eye(x.shape[1]),
                           x.T @ (row_weights[:, None] * targets))


def imbalanced_phases(n_phases, seed, reappear):
    rng = np.random.default_rng(seed)
    phases = []
    for t in range(n_phases):
        classes = rng.integers(0, 8, 3) if reappear else np.array([2 * t, 2 * t + 1])
        sizes = rng.integers(2, 40, classes.size)
        labels = np.repeat(classes, sizes)
        phases.append((2.0 + rng.normal(size=(labels.size, 7)) + labels[:, None] % 3, labels))
    return phases


@pytest.mark.parametrize("reappear", [False, True])
def test_air_equals_weighted_joint_ridge(reappear):
    phases = imbalanced_phases(4, seed=6, reappear=reappear)
    make = continual.g_air if reappear else continual.air
    state = learn_all(make(np.arange(8), ridge=RIDGE), phases)
    oracle = weighted_ridge_oracle(*joint(phases), RIDGE)
    assert relative_error(state.model.head.weights, oracle) <= 1e-10


def test_air_packed_float32_storage_is_close_and_four_times_smaller():
    phases = imbalanced_phases(4, seed=7, reappear=False)
    full = learn_all(continual.air(np.arange(8), ridge=RIDGE), phases)
    packed = learn_all(continual.air(np.arange(8), ridge=RIDGE, storage="packed32"), phases)
    oracle = weighted_ridge_oracle(*joint(phases), RIDGE)
    assert relative_error(packed.model.head.weights, oracle) <= 1e-5
    full_grams = full.model.statistics.moments.class_grams.nbytes
    assert packed.model.packed_grams.nbytes == continual.class_gram_bytes(8, 7, "packed32")
    assert full_grams == continual.class_gram_bytes(8, 7, "full")
    assert packed.model.packed_grams.nbytes == full_grams * (7 + 1) // (4 * 7)  # → 4× smaller as d grows
    assert continual.state_bytes(packed) < continual.state_bytes(full)


def test_balancing_weights_sum_to_class_count_and_invert_counts():
    weights = continual.balancing_weights([10, 40, 50])
    assert weights.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(weights * np.array([10, 40, 50]), np.full(3, weights[0] * 10))


def test_ds_al_main_stream_equals_acil_and_compensation_matches_a_replayed_oracle():
    features, labels = gaussian_classes(360, 6, 8, seed=8)
    main_layer = analytic.init_buffer(6, 24, seed=9)
    compensation_layer = analytic.init_buffer(6, 24, seed=9, activation="tanh")
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    classes = np.arange(8)
    dual = learn_all(continual.ds_al(classes, main_expansion=main_layer, compensation_expansion=compensation_layer,
                                     ridge=RIDGE, compensation_ridge=0.5), phases)
    single = learn_all(continual.acil(classes, expansion=main_layer, ridge=RIDGE), phases)
    np.testing.assert_array_equal(dual.model.main.head.weights, single.model.head.weights)

    # oracle: replay the phases with direct float64 solves on stored samples
    gram_c, cross_c, seen = np.zeros((24, 24)), np.zeros((24, 8)), []
    for t, (x, y) in enumerate(phases):
        pooled_x, pooled_y = joint(phases[: t + 1])
        pooled_main = analytic.expand(main_layer, pooled_x).astype(np.float64)
        learned = np.unique(pooled_y)
        w_main = ridge_oracle(pooled_main, one_hot_columns(pooled_y, learned), RIDGE)
        residual = one_hot_columns(y, classes)
        residual[:, learned] -= analytic.expand(main_layer, x).astype(np.float64) @ w_main
        residual[:, seen] = 0.0
        x_c = analytic.expand(compensation_layer, x).astype(np.float64)
        gram_c += x_c.T @ x_c
        cross_c += x_c.T @ residual
        seen = sorted(set(seen) | set(y.tolist()))
    oracle = np.linalg.solve(gram_c + 0.5 * np.eye(24), cross_c)
    assert relative_error(dual.model.compensation_weights, oracle) <= 1e-10


def test_ds_al_ratio_zero_predicts_like_acil_and_choice_never_hurts_held_out_accuracy():
    features, labels = gaussian_classes(400, 6, 6, seed=10, spread=1.0)
    main_layer = analytic.init_buffer(6, 32, seed=11)
    compensation_layer = analytic.init_buffer(6, 32, seed=11, activation="tanh")
    phases = [(features[:300][labels[:300] < 3], labels[:300][labels[:300] < 3]),
              (features[:300][labels[:300] >= 3], labels[:300][labels[:300] >= 3])]
    classes = np.arange(6)
    learner = continual.ds_al(classes, main_expansion=main_layer, compensation_expansion=compensation_layer,
                              compensation_ratio=0.0)
    state = learn_all(learner, phases)
    acil_state = learn_all(continual.acil(classes, expansion=main_layer), phases)
    held_x, held_y = features[300:], labels[300:]
    np.testing.assert_array_equal(learner.predict(state, held_x), continual.acil(classes).predict(acil_state, held_x))
    tuned = continual.choose_compensation_ratio(state, classes, held_x, held_y)
    main, compensation = stream_scores(tuned.model, held_x, classes)
    assert np.mean(learner.predict(tuned, held_x) == held_y) >= np.mean(learner.predict(state, held_x) == held_y)
    assert main.shape == compensation.shape == (100, 6)


def test_aef_ocl_keeps_real_statistics_and_solves_with_temporary_pseudo_features():
    phases = imbalanced_phases(3, seed=12, reappear=True)
    learner = continual.aef_ocl(np.arange(8), ridge=RIDGE, seed=13)
    state = learn_all(learner, phases)
    features, labels = joint(phases)
    model = state.model
    assert int(model.statistics.count) == labels.size  # pseudo-features never enter the kept statistics
    for c in np.unique(labels):
        np.testing.assert_allclose(model.feature_sums[c], features[labels == c].sum(axis=0), rtol=1e-12)
        np.testing.assert_allclose(model.square_sums[c], (features[labels == c] ** 2).sum(axis=0), rtol=1e-12)
    pseudo_x, pseudo_y = pseudo_features(model.statistics, model.feature_sums, model.square_sums, np.arange(8),
                                         13, None)
    counts = np.bincount(np.concatenate([labels, pseudo_y]))
    assert np.all(counts[np.unique(labels)] == counts.max())  # balanced
    both_x, both_y = np.concatenate([features, pseudo_x]), np.concatenate([labels, pseudo_y])
    oracle = ridge_oracle(both_x, one_hot_columns(both_y, np.unique(labels)), RIDGE)
    assert relative_error(model.head.weights, oracle) <= 1e-10


def test_aef_ocl_after_phases_equals_aef_ocl_trained_on_the_same_rows_at_once():
    # the pseudo-feature draw depends on the data seen, not on the phase cut: the joint counterpart matches
    phases = imbalanced_phases(4, seed=16, reappear=True)
    learner = continual.aef_ocl(np.arange(8), ridge=RIDGE, seed=17)
    incremental = learn_all(learner, phases)
    at_once = learn_all(learner, [joint(phases)])
    assert relative_error(incremental.model.head.weights, at_once.model.head.weights) <= 1e-10


def test_ranpac_head_is_the_joint_ridge_with_the_chosen_ridge():
    features, labels = gaussian_classes(300, 6, 6, seed=14)
    layer = analytic.init_buffer(6, 30, seed=15)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    state = learn_all(continual.ranpac(np.arange(6), expansion=layer), phases)
    chosen = float(state.model.ridge)
    expanded = analytic.expand(layer, features).astype(np.float64)
    oracle = ridge_oracle(expanded, one_hot_columns(labels, np.arange(6)), chosen)
    assert relative_error(state.model.ridge_model.head.weights, oracle) <= 1e-10


def test_ncm_and_slda_match_direct_class_statistics():
    features, labels = gaussian_classes(400, 5, 4, seed=16, spread=1.0)
    phases = [(features[:200], labels[:200]), (features[200:], labels[200:])]
    means = np.stack([features[labels == c].mean(axis=0) for c in range(4)])
    distances = ((features[:, None, :] - means[None]) ** 2).sum(axis=2)
    learner = continual.ncm(np.arange(4))
    np.testing.assert_array_equal(learner.predict(learn_all(learner, phases), features), distances.argmin(axis=1))

    centred = features - means[labels]
    covariance = centred.T @ centred / labels.size + 1e-4 * np.eye(5)
    precision_means = np.linalg.solve(covariance, means.T)
    scores = features @ precision_means - 0.5 * np.sum(means.T * precision_means, axis=0)
    learner = continual.slda(np.arange(4))
    state = learn_all(learner, phases)
    assert relative_error(state.model.weights, precision_means) <= 1e-10
    np.testing.assert_array_equal(learner.predict(state, features), scores.argmax(axis=1))


def test_joint_ridge_baseline_predicts_like_acil():
    features, labels = gaussian_classes(300, 6, 6, seed=17, spread=1.0)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    phases = [(features[rows], labels[rows]) for rows in scenario.phases]
    joint_learner, acil_learner = continual.joint_ridge(np.arange(6)), continual.acil(np.arange(6))
    joint_state, acil_state = learn_all(joint_learner, phases), learn_all(acil_learner, phases)
    assert relative_error(acil_state.model.head.weights, joint_state.model.ridge_model.head.weights) <= 1e-10
    assert continual.state_bytes(joint_state) > continual.state_bytes(acil_state)  # it stores the samples


def test_fine_tuning_forgets_and_joint_sgd_does_not():
    features, labels = gaussian_classes(600, 8, 4, seed=18, spread=2.0)
    features = features.astype(np.float32)
    scenario = continual.class_incremental(labels, base=2, increment=2)
    test_x, test_y = gaussian_classes(400, 8, 4, seed=18, spread=2.0)
    results = {}
    for learner in (continual.fine_tuning(np.arange(4), epochs=30, learning_rate=0.05, batch_size=64),
                    continual.joint_sgd(np.arange(4), epochs=30, learning_rate=0.05, batch_size=64)):
        results[learner.name] = continual.run(learner, scenario, features, labels, test_x.astype(np.float32), test_y)
    fine, joint_run = results["FT (SGD)"], results["Joint (SGD)"]
    assert fine.accuracy_matrix[1, 0] < fine.accuracy_matrix[0, 0] - 20  # the first phase's classes are forgotten
    assert joint_run.seen_accuracy[-1] > fine.seen_accuracy[-1] + 20


def test_fine_tuning_defaults_train_a_small_first_phase():
    """Two classes of sklearn digits (~290 rows): the defaults learn them, so forgetting is not under-training."""
    pytest.importorskip("sklearn")
    from analytic.data import load_digits

    digits = load_digits()
    train_x = digits.train_images.reshape(digits.train_labels.size, -1)
    test_x = digits.test_images.reshape(digits.test_labels.size, -1)
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
    train_x, test_x = (train_x - mean) / scale, (test_x - mean) / scale
    scenario = continual.class_incremental(digits.train_labels, base=0, increment=2)
    learner = continual.fine_tuning(scenario.classes)
    state = learner.learn(learner.init(), train_x[scenario.phases[0]], digits.train_labels[scenario.phases[0]])
    first = np.isin(digits.test_labels, scenario.new_classes[0])
    accuracy = np.mean(learner.predict(state, test_x[first]) == digits.test_labels[first])
    assert accuracy >= 0.9  # chance is 0.5; the former defaults (5 epochs, batch 256) reached 0.82 here


# ---------------------------------------------------------------------------------------------------- scenarios


def test_class_incremental_phases_partition_rows_by_seeded_class_order():
    labels = np.repeat(np.arange(10), 5)
    scenario = continual.class_incremental(labels, base=4, increment=2)
    assert scenario.name == "B4-Inc2" and scenario.n_phases == 4 and scenario.strict
    np.testing.assert_array_equal(scenario.classes, continual.class_order(labels, 1993))
    np.testing.assert_array_equal(np.sort(np.concatenate(scenario.phases)), np.arange(50))
    for rows, new in zip(scenario.phases, scenario.new_classes):
        np.testing.assert_array_equal(np.unique(labels[rows]), new)
    assert [c.size for c in scenario.new_classes] == [4, 2, 2, 2]
    other = continual.class_incremental(labels, base=4, increment=2, seed=1994)
    assert not np.array_equal(other.classes, scenario.classes)
    with pytest.raises(analytic.InputError, match="do not split"):
        continual.class_incremental(labels, base=4, increment=4)


def test_si_blurry_classes_reappear_and_every_row_arrives_once():
    labels = np.repeat(np.arange(20), 30)
    scenario = continual.si_blurry(labels, n_phases=5, blurry_share=0.2)
    assert not scenario.strict and scenario.n_phases == 5
    np.testing.assert_array_equal(np.sort(np.concatenate(scenario.phases)), np.arange(600))
    per_phase = [set(np.unique(labels[rows]).tolist()) for rows in scenario.phases]
    assert any(per_phase[t] & set().union(*per_phase[:t]) for t in range(1, 5))  # reappearing classes
    np.testing.assert_array_equal(np.sort(np.concatenate(scenario.new_classes)), np.arange(20))
    learner = continual.acil(np.arange(20))
    features = np.random.default_rng(0).normal(size=(600, 4))
    state = learner.learn(learner.init(), features[scenario.phases[0]], labels[scenario.phases[0]])
    with pytest.raises(analytic.IntegrityError, match="finished in an earlier phase"):
        for rows in scenario.phases[1:]:
            state = learner.learn(state, features[rows], labels[rows])


def test_long_tailed_sizes_follow_the_imbalance_ratio():
    labels = np.repeat(np.arange(5), 100)
    base = continual.class_incremental(labels, base=1, increment=1)
    scenario = continual.long_tailed(labels, base, imbalance_ratio=0.01)
    sizes = [int(np.sum(labels[np.concatenate(scenario.phases)] == c)) for c in base.classes]
    assert sizes == [int(np.ceil(100 * 0.01 ** (r / 4))) for r in range(5)]
    assert sizes[0] == 100 and sizes[-1] == 1


def test_online_stream_predicts_each_batch_before_learning_it():
    features, labels = gaussian_classes(200, 4, 4, seed=19)
    scenario = continual.online(continual.class_incremental(labels, base=2, increment=2), batch_size=16)
    assert [rows.size for rows in scenario.batches(0)][0] == 16
    np.testing.assert_array_equal(np.concatenate(scenario.batches(1)), scenario.phases[1])
    result = continual.run(continual.g_acil(np.arange(4)), scenario, features, labels, features, labels)
    assert 0.0 < result.online_accuracy <= 100.0 and result.accuracy_matrix.shape == (2, 2)


# ------------------------------------------------------------------------------------------------------ metrics


def test_metrics_follow_the_reference_definitions():
    matrix = np.array([[90.0, np.nan, np.nan], [70.0, 80.0, np.nan], [60.0, 75.0, 85.0]])
    # forgetting: ((90 − 60) + (80 − 75)) / 2; BWT: ((60 − 90) + (75 − 80)) / 2
    assert continual.forgetting(matrix) == pytest.approx(17.5)
    assert continual.backward_transfer(matrix) == pytest.approx(-17.5)
    assert continual.average_incremental_accuracy([90.0, 75.0, 72.0]) == pytest.approx(79.0)
    assert continual.last_accuracy([90.0, 75.0, 72.0]) == 72.0
    assert continual.forgetting(matrix[:1, :1]) == 0.0


def score_learners(d):
    layer = analytic.init_buffer(d, 24, seed=1)
    tanh = analytic.init_buffer(d, 24, seed=1, activation="tanh")
    return [
        continual.acil(np.arange(6), expansion=layer),
        continual.acil(np.arange(6), expansion=layer, precision="fixed", device=True),
        continual.gkeal(np.arange(6), width=20, sigma=4.0),
        continual.ds_al(np.arange(6), main_expansion=layer, compensation_expansion=tanh, compensation_ratio=0.6),
        continual.air(np.arange(6), expansion=layer),
        continual.aef_ocl(np.arange(6), expansion=layer),
    ]


@pytest.mark.parametrize("position", range(6))
def test_scores_have_one_column_per_learned_class_and_their_argmax_is_predict(position):
    features, labels = gaussian_classes(200, 4, 6, seed=30)
    features = features.astype(np.float32)
    learner = score_learners(4)[position]
    state = learner.init()
    for classes in ((0, 1), (2, 3)):
        rows = np.isin(labels, classes)
        state = learner.learn(state, features[rows], labels[rows])
        scores = np.asarray(learner.scores(state, features))
        assert scores.shape == (200, state.learned_classes.size)
        np.testing.assert_array_equal(state.learned_classes[np.argmax(scores, axis=1)],
                                      np.asarray(learner.predict(state, features)))


def baseline_learners(d):
    return [
        continual.fine_tuning(np.arange(8), epochs=2),
        continual.joint_sgd(np.arange(8), epochs=2),
        continual.joint_ridge(np.arange(8)),
        continual.ncm(np.arange(8)),
        continual.slda(np.arange(8)),
        continual.ranpac(np.arange(8), expansion=analytic.init_buffer(d, 24, seed=1)),
    ]


@pytest.mark.parametrize("position", range(6))
def test_baseline_scores_argmax_is_predict_and_run_reports_their_top5(position):
    features, labels = gaussian_classes(400, 4, 8, seed=33, spread=1.0)
    features = features.astype(np.float32)
    learner = baseline_learners(4)[position]
    scenario = continual.class_incremental(labels[:300], base=2, increment=3)
    state = learner.init()
    for rows in scenario.phases:
        state = learner.learn(state, features[:300][rows], labels[:300][rows])
        scores = np.asarray(learner.scores(state, features))
        assert scores.shape == (400, state.learned_classes.size) and np.isfinite(scores).all()
        np.testing.assert_array_equal(state.learned_classes[np.argmax(scores, axis=1)],
                                      np.asarray(learner.predict(state, features)))
    result = continual.run(learner, scenario, features[:300], labels[:300], features[300:], labels[300:])
    assert np.isfinite(result.seen_top5_accuracy).all() and result.seen_top5_accuracy[0] == 100.0
    assert result.summary()["top5_accuracy"] >= result.seen_accuracy[-1]


def test_run_records_top5_f1_and_balanced_accuracy_like_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, top_k_accuracy_score

    features, labels = gaussian_classes(900, 4, 12, seed=31, spread=1.0)  # overlapping classes: errors to count
    scenario = continual.class_incremental(labels[:600], base=2, increment=5)
    learner = continual.acil(np.arange(12), expansion=analytic.init_buffer(4, 32, seed=2))
    test_x, test_y = features[600:], labels[600:]
    result = continual.run(learner, scenario, features[:600], labels[:600], test_x, test_y)
    state = learn_all(learner, [(features[:600][rows], labels[:600][rows]) for rows in scenario.phases])
    predicted = learner.predict(state, test_x)
    scores = learner.scores(state, test_x)
    assert result.seen_accuracy[-1] == pytest.approx(100 * np.mean(predicted == test_y))
    assert result.seen_f1_macro[-1] == pytest.approx(100 * f1_score(test_y, predicted, average="macro"))
    assert result.seen_balanced_accuracy[-1] == pytest.approx(100 * balanced_accuracy_score(test_y, predicted))
    assert result.seen_top5_accuracy[-1] == pytest.approx(
        100 * top_k_accuracy_score(test_y, scores, k=5, labels=state.learned_classes))
    assert 0 < result.seen_f1_macro[-1] < result.seen_top5_accuracy[-1] < 100
    assert result.seen_top5_accuracy[0] == 100.0  # two classes seen: top-5 of two classes is 100 by definition
    summary = result.summary()
    assert summary["top5_accuracy"] == result.seen_top5_accuracy[-1]
    assert summary["f1_macro"] == result.seen_f1_macro[-1]
    assert summary["balanced_accuracy"] == result.seen_balanced_accuracy[-1]
    assert len(summary["seen_top5_accuracy"]) == scenario.n_phases


def test_run_without_scores_reports_top5_as_missing_and_the_rest_from_labels():
    features, labels = gaussian_classes(300, 4, 6, seed=32)
    scenario = continual.class_incremental(labels[:200], base=2, increment=2)
    learner = continual.ncm(np.arange(6))._replace(scores=None)
    result = continual.run(learner, scenario, features[:200], labels[:200], features[200:], labels[200:])
    assert np.isnan(result.seen_top5_accuracy).all() and result.summary()["top5_accuracy"] is None
    assert result.summary()["seen_top5_accuracy"] == [None] * scenario.n_phases
    assert np.isfinite(result.seen_f1_macro).all() and np.isfinite(result.seen_balanced_accuracy).all()


def test_run_records_matrix_times_memory_and_writes_csv_and_plot(tmp_path):
    features, labels = gaussian_classes(240, 4, 6, seed=20)
    scenario = continual.class_incremental(labels[:180], base=2, increment=2)
    learner = continual.acil(np.arange(6))
    result = continual.run(learner, scenario, features[:180], labels[:180], features[180:], labels[180:])
    state = learner.init()
    for t, rows in enumerate(scenario.phases):
        state = learner.learn(state, features[rows], labels[rows])
        test_rows = np.isin(labels[180:], scenario.new_classes[0])
        expected = 100 * np.mean(learner.predict(state, features[180:][test_rows]) == labels[180:][test_rows])
        assert result.accuracy_matrix[t, 0] == pytest.approx(expected)
    assert np.isnan(result.accuracy_matrix[0, 1]) and np.all(result.phase_seconds > 0)
    assert np.all(np.diff(result.state_bytes) > 0)  # new classes add columns
    summary = result.summary()
    assert summary["last_accuracy"] == result.seen_accuracy[-1]
    assert continual.write_csv([result], tmp_path / "run.csv").read_text().count("\n") == 4
    assert continual.plot_accuracy([result], tmp_path / "run.png").stat().st_size > 0

"""Metrics and the common method interface: the exact route equals the closed-form retrain; every gradient method
runs through the shared optax head."""

import numpy as np
import pytest
from conftest import make_classification

import analytic.metrics
from analytic import gradient
import unlearning
from unlearning import methods, metrics

RIDGE = 0.5


def small_task(forgotten_classes=()):
    features, labels = make_classification(n=400, d=12, classes=(0, 1, 2, 3))
    test_features, test_labels = make_classification(n=200, d=12, classes=(0, 1, 2, 3), seed=1)
    if forgotten_classes:
        forget = np.isin(labels, forgotten_classes)
    else:
        forget = np.zeros(len(labels), bool)
        forget[np.random.default_rng(0).choice(len(labels), 40, replace=False)] = True
    return methods.UnlearningTask(features.astype(np.float32), labels, forget, test_features.astype(np.float32),
                                  test_labels, tuple(forgotten_classes), n_classes=4)


def test_metrics_on_known_values():
    assert metrics.accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 50.0
    assert metrics.avg_gap({"UA": 10, "MIA": 20, "RA": 90, "TA": 80},
                           {"UA": 12, "MIA": 20, "RA": 94, "TA": 80}) == pytest.approx(1.5)
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    assert metrics.mean_kl(logits, logits) == pytest.approx(0.0, abs=1e-15)
    assert metrics.mean_kl(logits, logits[:, ::-1]) > 0
    confidence = metrics.true_class_confidence(logits, np.array([0, 7]), np.array([0, 1]))
    assert confidence[0] == pytest.approx(1 / (1 + np.exp(-2.0))) and confidence[1] == 0.0
    assert metrics.relative_weight_error(np.ones((2, 2)), np.ones((2, 3))) != metrics.relative_weight_error(
        np.ones((2, 2)), np.ones((2, 3)))  # NaN when shapes differ
    assert metrics.max_logit_difference(logits, logits + 0.25) == 0.25


@pytest.mark.parametrize("forgotten_classes", [(), (2,)])
def test_evaluate_adds_top5_f1_and_balanced_accuracy_on_the_test_set(forgotten_classes):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    task = small_task(forgotten_classes)
    model = methods.ClosedFormRetrain(RIDGE).unlearn(task)
    scores = methods.evaluate(model, task)
    test_x, test_y = task.evaluation_test
    logits = model.logits(test_x)
    predicted = model.predict(test_x)
    assert scores["TA"] == pytest.approx(100 * np.mean(predicted == test_y))
    assert scores["TA_f1_macro"] == pytest.approx(100 * f1_score(test_y, predicted, average="macro"))
    assert scores["TA_balanced"] == pytest.approx(100 * balanced_accuracy_score(test_y, predicted))
    assert scores["TA_top5"] == 100.0  # at most four output columns: every label is within the top 5
    assert metrics.top_k_accuracy(test_y, logits, k=1, class_ids=model.class_ids) == pytest.approx(scores["TA"])
    assert metrics.f1_macro is analytic.metrics.f1_macro  # one implementation, shared with the continual reports


def test_mia_efficacy_separates_member_like_from_test_like_confidence():
    rng = np.random.default_rng(0)
    members, non_members = 0.95 + 0.05 * rng.random(200), 0.2 + 0.3 * rng.random(200)
    assert metrics.mia_efficacy(members, non_members, 0.97 + 0.01 * rng.random(50)) == 0.0
    assert metrics.mia_efficacy(members, non_members, 0.3 + 0.1 * rng.random(50)) == 100.0


@pytest.mark.parametrize("forgotten_classes", [(), (2,)])
def test_exact_unlearner_equals_closed_form_retrain(forgotten_classes):
    task = small_task(forgotten_classes)
    head = unlearning.init_unlearning_head(12, RIDGE, per_class=True)
    head = unlearning.factorize(unlearning.learn(head, task.train_features, task.train_labels))
    downdated = methods.ExactUnlearner(head).unlearn(task)
    retrained = methods.ClosedFormRetrain(RIDGE).unlearn(task)
    agreement = methods.compare_outputs(downdated, retrained, task)
    assert agreement["weight_error"] <= 1e-10
    assert agreement["max_logit_diff"] <= 1e-10
    assert agreement["argmax_agreement"] == 100.0
    assert agreement["mean_kl"] <= 1e-12
    scores, reference = methods.evaluate(downdated, task), methods.evaluate(retrained, task)
    assert metrics.avg_gap(scores, reference) == 0.0
    if forgotten_classes:
        assert downdated.class_ids.tolist() == [0, 1, 3] and scores["UA"] == 100.0


@pytest.mark.parametrize("method", methods.GRADIENT_METHODS)
def test_every_gradient_method_runs_on_the_shared_head(method):
    task = small_task((1,))
    original = gradient.fit_softmax_head(task.train_features, task.train_labels, n_classes=4, epochs=3,
                                         learning_rate=0.05, batch_size=64)
    unlearner = methods.GradientUnlearner(method, original, learning_rate=0.05, epochs=2, batch_size=64)
    model = unlearner.unlearn(task)
    logits = model.logits(task.test_features)
    assert logits.shape == (200, 4) and np.isfinite(logits).all()
    assert model.weights.shape == (12, 4) and model.learning_rate == 0.05
    if method != "ForgetVector":  # the perturbation method keeps the head frozen
        assert not np.array_equal(model.weights, np.asarray(original[0]["weights"]))


def test_gradient_ascent_raises_the_forget_error_and_grid_keeps_the_best():
    task = small_task((1,))
    original = gradient.fit_softmax_head(task.train_features, task.train_labels, n_classes=4, epochs=3,
                                         learning_rate=0.05, batch_size=64)
    reference = methods.evaluate(methods.GradientUnlearner("retrain", original, 0.05, epochs=3,
                                                           batch_size=64).unlearn(task), task)
    make = lambda lr: methods.GradientUnlearner("GA", original, lr, batch_size=64)  # noqa: E731
    best, scores, trials = methods.best_of_grid(make, [1e-4, 0.5], task, reference)
    assert len(trials) == 2 and scores["avg_gap"] == min(t["avg_gap"] for t in trials)
    assert trials[1]["UA"] > trials[0]["UA"]  # a larger ascent step forgets more
    assert best.learning_rate in (1e-4, 0.5)


class Diverging:
    """A method whose run at a learning rate above 1 diverges (NaN outputs), as a too-large ascent step does."""

    name = "diverging"

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate

    def unlearn(self, task):
        scale = np.nan if self.learning_rate > 1 else 1.0
        return methods.Unlearned(self.name, logits=lambda f: scale * f[:, :4], class_ids=np.arange(4), seconds=0.0,
                                 learning_rate=self.learning_rate)


def test_a_diverged_trial_scores_nan_and_never_wins_the_grid():
    task = small_task((1,))
    reference = methods.evaluate(methods.ClosedFormRetrain(ridge=0.1).unlearn(task), task)
    diverged = methods.evaluate(Diverging(10.0).unlearn(task), task)
    assert set(diverged) == set(reference) and all(np.isnan(value) for value in diverged.values())
    best, scores, trials = methods.best_of_grid(Diverging, [10.0, 0.5, 20.0], task, reference)
    assert best.learning_rate == 0.5 and np.isfinite(scores["avg_gap"])
    assert [np.isnan(trial["avg_gap"]) for trial in trials] == [True, False, True]
    best, scores, _ = methods.best_of_grid(Diverging, [10.0, 20.0], task, reference)
    assert best.learning_rate == 10.0 and np.isnan(scores["avg_gap"])


def test_gradient_methods_accept_an_mlp_head():
    task = small_task((1,))
    original = gradient.fit_softmax_head(task.train_features, task.train_labels, n_classes=4, epochs=2,
                                         learning_rate=0.05, batch_size=64, hidden=8)
    for method in ("retrain", "FT"):
        model = methods.GradientUnlearner(method, original, 0.05, epochs=1, hidden=8, batch_size=64).unlearn(task)
        assert model.weights is None and model.logits(task.test_features).shape == (200, 4)

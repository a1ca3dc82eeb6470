"""Top-k accuracy, macro F1 and balanced accuracy against scikit-learn, in the library's percent convention."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, top_k_accuracy_score

import analytic
from analytic.metrics import balanced_accuracy, f1_macro, top_k_accuracy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's warnings on the edge cases


@pytest.mark.parametrize("n_classes", [3, 4, 7, 12])
@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_matches_scikit_learn_on_random_scores(n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 300)
    scores = rng.normal(size=(300, n_classes))
    for k in (1, 2, 3, 5, 10):
        expected = 100 * top_k_accuracy_score(labels, scores, k=k, labels=np.arange(n_classes))
        assert top_k_accuracy(labels, scores, k=k) == pytest.approx(expected, abs=1e-12)


def test_top_k_with_class_ids_in_any_column_order_and_labels_without_a_column():
    rng = np.random.default_rng(2)
    class_ids = np.array([40, 3, 17, 9, 25, 31, 8])
    labels = rng.choice(class_ids, 200)
    scores = rng.normal(size=(200, 7))
    order = np.argsort(class_ids)
    expected = 100 * top_k_accuracy_score(labels, scores[:, order], k=3, labels=class_ids[order])
    assert top_k_accuracy(labels, scores, k=3, class_ids=class_ids) == pytest.approx(expected, abs=1e-12)
    # a label the model has no column for is never within the top k, even with k ≥ the number of columns
    assert top_k_accuracy([40, 3, 99, 99], scores[:4], k=7, class_ids=class_ids) == 50.0


def test_top_k_with_k_at_least_the_number_of_classes_is_100():
    labels, scores = np.array([0, 1, 2, 2]), np.random.default_rng(3).normal(size=(4, 3))
    for k in (3, 5, 100):
        assert top_k_accuracy(labels, scores, k=k) == 100.0
        assert 100 * top_k_accuracy_score(labels, scores, k=k) == 100.0


def test_top_k_ties_go_to_the_lower_column_like_argmax():
    rng = np.random.default_rng(4)
    n_classes = 6
    labels = rng.integers(0, n_classes, 400)
    scores = rng.integers(0, 3, size=(400, n_classes)).astype(np.float64)  # many ties
    # scikit-learn breaks ties toward the higher column: reversing the columns turns that into ours
    reversed_labels = n_classes - 1 - labels
    for k in (1, 2, 4):
        expected = 100 * top_k_accuracy_score(reversed_labels, scores[:, ::-1], k=k, labels=np.arange(n_classes))
        assert top_k_accuracy(labels, scores, k=k) == pytest.approx(expected, abs=1e-12)
    assert top_k_accuracy(labels, scores, k=1) == pytest.approx(100 * np.mean(np.argmax(scores, axis=1) == labels))
    assert top_k_accuracy([1], [[5.0, 5.0, 5.0]], k=1) == 0.0 and top_k_accuracy([1], [[5.0, 5.0, 5.0]], k=2) == 100.0
    assert top_k_accuracy([0], [[-np.inf, 1.0]], k=1) == 0.0  # -inf is a score like any other


@pytest.mark.parametrize("n_classes", [2, 3, 5, 11])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_macro_and_balanced_accuracy_match_scikit_learn(n_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 150)
    predictions = np.where(rng.random(150) < 0.6, labels, rng.integers(0, n_classes, 150))
    assert f1_macro(labels, predictions) == pytest.approx(100 * f1_score(labels, predictions, average="macro"))
    assert balanced_accuracy(labels, predictions) == pytest.approx(100 * balanced_accuracy_score(labels, predictions))


def test_classes_absent_from_predictions_or_from_labels():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 6, 200)
    predictions = np.where(labels == 4, 0, labels)  # class 4 never predicted
    predictions[:10] = 9  # class 9 predicted, never true
    assert f1_macro(labels, predictions) == pytest.approx(100 * f1_score(labels, predictions, average="macro"))
    assert balanced_accuracy(labels, predictions) == pytest.approx(100 * balanced_accuracy_score(labels, predictions))
    listed = [0, 1, 2, 3, 4, 5, 9, 12]  # 12: neither true nor predicted, scores 0
    assert f1_macro(labels, predictions, class_ids=listed) == pytest.approx(
        100 * f1_score(labels, predictions, labels=listed, average="macro", zero_division=0))


def test_known_values_and_refused_inputs():
    assert f1_macro([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(100 * (2 / 3 + 4 / 5) / 2)
    assert balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == 50.0
    with pytest.raises(analytic.InputError, match="non-empty"):
        f1_macro([], [])
    with pytest.raises(analytic.InputError, match="one prediction per label"):
        balanced_accuracy([0, 1], [0])
    with pytest.raises(analytic.InputError, match="NaN"):
        top_k_accuracy([0], [[np.nan, 1.0]])
    with pytest.raises(analytic.InputError, match="k must be"):
        top_k_accuracy([0], [[0.0, 1.0]], k=0)
    with pytest.raises(analytic.InputError, match="distinct ids"):
        top_k_accuracy([0], [[0.0, 1.0]], class_ids=[3, 3])
    with pytest.raises(analytic.InputError, match="scores must be"):
        top_k_accuracy([0, 1], [[0.0, 1.0]])

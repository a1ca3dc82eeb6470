"""FedNCM, FedCOF and Fed3R (federated.peers) against independent float64 oracles on the pooled data."""

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import federated

pytestmark = pytest.mark.filterwarnings("error")

D = 6
CLASSES = (0, 3, 7, 11)


@pytest.fixture(scope="module")
def pooled():
    return make_classification(n=400, d=D, classes=CLASSES, seed=5)


def splits(labels):
    """Label-skewed, balanced and pathological splits of the same samples (no client empty)."""
    return {
        "iid": federated.iid_partition(labels.size, 7, seed=1),
        "dirichlet": federated.dirichlet_partition(labels, 12, 0.1, seed=2),
        "shards": federated.shard_partition(labels, 8, seed=3),
    }


def class_mean_uploads(x, y, parts):
    return [federated.client_class_means(x[p], y[p], CLASSES) for p in parts]


# ------------------------------------------------------------------------------------------------------ FedNCM


@pytest.mark.parametrize("split", ["iid", "dirichlet", "shards"])
def test_pooled_means_are_the_centralized_class_means(pooled, split):
    x, y = pooled
    parts = splits(y)[split]
    means = federated.pooled_class_means(class_mean_uploads(x, y, parts))
    expected = np.stack([x[y == c].mean(axis=0) for c in CLASSES])
    np.testing.assert_allclose(means.means, expected, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(means.counts, [np.sum(y == c) for c in CLASSES])
    np.testing.assert_array_equal(means.class_ids, CLASSES)
    reversed_order = federated.pooled_class_means(class_mean_uploads(x, y, parts[::-1]))
    np.testing.assert_allclose(reversed_order.means, means.means, rtol=1e-14, atol=1e-14)


def test_fedncm_predicts_the_nearest_centralized_mean(pooled):
    x, y = pooled
    head = federated.fedncm_head(class_mean_uploads(x, y, splits(y)["dirichlet"]))
    means = np.stack([x[y == c].mean(axis=0) for c in CLASSES])
    queries = x + np.random.default_rng(0).normal(size=x.shape)
    distances = ((queries[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(analytic.predict_labels(head, queries), np.asarray(CLASSES)[distances.argmin(1)])
    # the scores are −½‖x − μ_c‖² up to a constant per row
    scores = analytic.predict(head, queries) - 0.5 * (queries**2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores, -0.5 * distances, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------------ FedCOF


def per_client_means(x, y, parts):
    """The clients' class means computed directly from their rows, in float64: {class: [(n_kc, μ_kc), ...]}."""
    return {c: [(int(np.sum(y[p] == c)), x[p][y[p] == c].mean(axis=0)) for p in parts if np.any(y[p] == c)]
            for c in CLASSES}


def covariance_formula(clients):
    """Σ̂_c = Σ_k n_kc (μ_kc − μ_c)(μ_kc − μ_c)ᵀ / (K_c − 1), looped in float64."""
    total = sum(n for n, _ in clients)
    mean = sum(n * m for n, m in clients) / total
    spread = sum(n * np.outer(m - mean, m - mean) for n, m in clients)
    return spread / (len(clients) - 1) if len(clients) > 1 else np.zeros((D, D)), mean, total


@pytest.mark.parametrize("split", ["iid", "dirichlet", "shards"])
def test_fedcof_covariances_and_gram_follow_the_formula(pooled, split):
    x, y = pooled
    parts = splits(y)[split]
    uploads = class_mean_uploads(x, y, parts)
    expected_gram, within_gram, total_sum, n = np.zeros((D, D)), np.zeros((D, D)), np.zeros(D), 0
    covariances = federated.class_covariances(uploads)
    for position, c in enumerate(CLASSES):
        covariance, mean, count = covariance_formula(per_client_means(x, y, parts)[c])
        np.testing.assert_allclose(covariances[position], covariance, rtol=1e-11, atol=1e-12)
        expected_gram += (count - 1) * covariance + count * np.outer(mean, mean)
        within_gram += (count - 1) * covariance
        total_sum, n = total_sum + count * mean, n + count
    np.testing.assert_allclose(federated.fedcof_gram(uploads), expected_gram, rtol=1e-11, atol=1e-10)
    overall = total_sum / n
    np.testing.assert_allclose(federated.fedcof_gram(uploads, between_class=False),
                               within_gram + n * np.outer(overall, overall), rtol=1e-11, atol=1e-10)
    head = federated.fedcof_head(uploads, 0.5)
    expected = np.linalg.solve(expected_gram + 0.5 * np.eye(D), x.T @ one_hot_columns(y, CLASSES))
    assert relative_error(head.weights, expected) < 1e-11


def test_fedcof_with_one_sample_per_client_is_the_centralized_ridge(pooled):
    x, y = pooled
    uploads = class_mean_uploads(x, y, [np.array([i]) for i in range(y.size)])
    np.testing.assert_allclose(federated.fedcof_gram(uploads), x.T @ x, rtol=1e-11, atol=1e-9)
    for position, c in enumerate(CLASSES):
        np.testing.assert_allclose(federated.class_covariances(uploads)[position], np.cov(x[y == c].T), rtol=1e-11,
                                   atol=1e-12)
    head = federated.fedcof_head(uploads, 0.1)
    assert relative_error(head.weights, ridge_oracle(x, one_hot_columns(y, CLASSES), 0.1)) < 1e-11


def test_fedcof_covariance_estimate_is_unbiased():
    rng = np.random.default_rng(7)
    covariance = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    factor = np.linalg.cholesky(covariance)
    sizes = rng.integers(1, 9, 30)  # 30 clients of unequal sizes
    estimates = []
    for _ in range(400):
        uploads = [federated.client_class_means(rng.normal(size=(n, 3)) @ factor.T + 5.0, np.zeros(n, np.int64), [0])
                   for n in sizes]
        estimates.append(federated.class_covariances(uploads)[0])
    assert np.abs(np.mean(estimates, axis=0) - covariance).max() < 0.06  # Monte Carlo error ≈ 0.02


def test_a_class_held_by_one_client_has_no_spread(pooled):
    x, y = pooled
    keep = y != 3
    parts = [np.flatnonzero(y == 3), *federated.iid_partition(int(keep.sum()), 4, seed=0)]
    rows = [parts[0], *[np.flatnonzero(keep)[p] for p in parts[1:]]]
    covariances = federated.class_covariances(class_mean_uploads(x, y, rows))
    assert np.all(covariances[CLASSES.index(3)] == 0) and np.all(np.diagonal(covariances[0]) > 0)


# ------------------------------------------------------------------------------------------------------- Fed3R


def fed3r(layer, x, y, parts, ridge):
    uploads = (federated.random_feature_statistics(layer, x[p], y[p], CLASSES) for p in parts)  # summed as they come
    return analytic.solve(federated.aggregate_statistics(uploads), ridge)


def test_fed3r_is_the_centralized_ridge_on_the_same_random_features(pooled):
    x, y = pooled
    layer = analytic.init_random_fourier(D, 48, sigma=3.0, seed=11)
    heads = {}
    for name, parts in splits(y).items():
        head = fed3r(layer, x, y, parts, 0.01)
        features = np.concatenate([analytic.expand(layer, x[p]) for p in parts]).astype(np.float64)
        targets = one_hot_columns(np.concatenate([y[p] for p in parts]), CLASSES)
        assert relative_error(head.weights, ridge_oracle(features, targets, 0.01)) < 1e-10
        shuffled = [parts[i] for i in np.random.default_rng(4).permutation(len(parts))]
        assert relative_error(fed3r(layer, x, y, shuffled, 0.01).weights, head.weights) < 1e-12
        heads[name] = head
    # across splits the random features differ only by float32 rounding (the expansion's matmul kernel follows the
    # batch shape)
    centralized = fed3r(layer, x, y, [np.arange(y.size)], 0.01)
    test = analytic.expand(layer, x)
    for head in heads.values():
        assert relative_error(head.weights, centralized.weights) < 1e-4
        agreement = np.mean(analytic.predict_labels(head, test) == analytic.predict_labels(centralized, test))
        assert agreement > 0.99


# ------------------------------------------------------------------------------------------------------- bytes


def test_upload_sizes_are_exact(pooled):
    x, y = pooled
    upload = federated.client_class_means(x[:10], y[:10], CLASSES)
    assert federated.class_means_nbytes(D, len(CLASSES)) == upload.means.nbytes + upload.counts.nbytes
    assert federated.class_means_nbytes(D, len(CLASSES)) == 8 * (D * len(CLASSES) + len(CLASSES))


# ------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y), "contain NaN"),
        (lambda x, y: (x[:, :1].ravel(), y), "2-D"),
        (lambda x, y: (x, y[:-1]), "rows but labels have"),
        (lambda x, y: (x, np.where(y == 3, 5, y)), r"labels \[5\] are not among the agreed class ids"),
        (lambda x, y: (x[:0], y[:0]), "0 rows"),
        (lambda x, y: (x.astype(np.int64), y), "floating-point"),
    ],
)
def test_clients_refuse_bad_input_and_change_nothing(pooled, change, message):
    x, y = change(*pooled)
    x_before, y_before = np.copy(x), np.copy(y)
    layer = analytic.init_random_fourier(D, 8, seed=0)
    with pytest.raises(analytic.InputError, match=message):
        federated.client_class_means(x, y, CLASSES)
    with pytest.raises(analytic.InputError, match=message):
        federated.random_feature_statistics(layer, x, y, CLASSES)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


def test_fed3r_client_refuses_features_of_another_dimension(pooled):
    x, y = pooled
    with pytest.raises(analytic.InputError, match="in_dim"):
        federated.random_feature_statistics(analytic.init_random_fourier(D + 1, 8), x, y, CLASSES)
    with pytest.raises(analytic.InputError, match="agreed class"):
        federated.client_class_means(x, y, [])


def broken(upload, **fields):
    return federated.ClassMeans(**{"means": upload.means, "counts": upload.counts, "class_ids": upload.class_ids,
                                   **fields})


@pytest.mark.parametrize(
    "spoil, error, message",
    [
        (lambda u: broken(u, means=np.full_like(u.means, np.nan)), analytic.InputError, "NaN or Inf"),
        (lambda u: broken(u, means=u.means[:, :-1]), analytic.InputError, "means must be"),
        (lambda u: broken(u, counts=u.counts.astype(np.float64)), analytic.InputError, "counts must be"),
        (lambda u: broken(u, counts=-u.counts), analytic.InputError, "non-negative"),
        (lambda u: broken(u, counts=np.zeros_like(u.counts)), analytic.InputError, "holds no samples"),
        (lambda u: broken(u, class_ids=u.class_ids + 1), analytic.IntegrityError, "agree on the classes"),
        (lambda u: u.means, analytic.InputError, "not ClassMeans"),
    ],
)
def test_server_refuses_bad_uploads_and_changes_nothing(pooled, spoil, error, message):
    x, y = pooled
    uploads = class_mean_uploads(x, y, federated.iid_partition(y.size, 4, seed=0))
    uploads[2] = spoil(uploads[2])
    before = [np.copy(np.asarray(getattr(u, "means", u))) for u in uploads]
    for server in (federated.pooled_class_means, federated.fedncm_head, federated.class_covariances,
                   federated.fedcof_gram, lambda u: federated.fedcof_head(u, 1.0)):
        with pytest.raises(error, match=message):
            server(uploads)
    for upload, saved in zip(uploads, before):
        np.testing.assert_array_equal(np.asarray(getattr(upload, "means", upload)), saved)


def test_server_refuses_missing_classes_settings_and_empty_federations(pooled):
    x, y = pooled
    rows = np.flatnonzero(y != 7)
    uploads = class_mean_uploads(x, y, [rows[:100], rows[100:]])
    with pytest.raises(analytic.IntegrityError, match=r"classes \[7\] have no samples"):
        federated.fedncm_head(uploads)
    full = class_mean_uploads(x, y, [np.arange(200), np.arange(200, 400)])
    with pytest.raises(analytic.InputError, match="ridge"):
        federated.fedcof_head(full, -1.0)
    with pytest.raises(analytic.InputError, match="between_class"):
        federated.fedcof_gram(full, between_class="no")
    with pytest.raises(analytic.InputError, match="at least one upload"):
        federated.pooled_class_means([])

"""The in-process simulator runs the real protocol and gives the centralized head; bytes are accounted exactly."""

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import federated
from federated.simulation import simulate_afl

D = 12
CLASSES = (0, 1, 2, 3, 4, 5)
RIDGE = 0.3


def test_simulated_round_equals_centralized_ridge_and_counts_bytes():
    x, y = make_classification(n=4_000, d=D, classes=CLASSES, seed=21)
    test_x, test_y = make_classification(n=500, d=D, classes=CLASSES, seed=22)
    parts = federated.dirichlet_partition(y, 300, 0.05, seed=4, min_size=0)
    aggregate, head, report = simulate_afl(x, y, parts, ridge=RIDGE, test_features=test_x, test_labels=test_y,
                                           progress=False)
    expected = ridge_oracle(x, one_hot_columns(y, CLASSES), RIDGE)
    assert relative_error(head.weights, expected) <= 1e-10
    assert aggregate.n_clients == 300 and report.rejected == {}
    assert any(p.size == 0 for p in parts)  # empty clients take part like any other
    assert report.bytes_per_client == federated.statistics_nbytes(D, len(CLASSES))
    assert report.bytes_up == 300 * report.bytes_per_client
    assert report.bytes_down == 300 * D * len(CLASSES) * 8
    centralized = analytic.solve(analytic.accumulate(analytic.init_statistics(D), x, y), RIDGE)
    assert report.accuracy == np.mean(analytic.predict_labels(centralized, test_x) == test_y)


def test_simulated_fixed_round_hashes_like_centralized_statistics():
    x, y = make_classification(n=2_000, d=D, classes=CLASSES, seed=23)
    centralized = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), x, y)
    for parts in (federated.shard_partition(y, 100), federated.quantity_skew_partition(y.size, 100, 0.2)):
        aggregate, _, _ = simulate_afl(x, y, parts, ridge=RIDGE, precision="fixed", progress=False)
        assert analytic.state_hash(aggregate.statistics) == analytic.state_hash(centralized)


def test_head_drops_a_class_no_remaining_client_holds():
    x, y = make_classification(n=600, d=D, classes=CLASSES, seed=24)
    parts = [np.flatnonzero(y != 5), np.flatnonzero(y == 5)]
    aggregate, _, _ = simulate_afl(x, y, parts, ridge=RIDGE, progress=False)
    leaving = federated.encode_statistics(federated.client_statistics(x[parts[1]], y[parts[1]], D), CLASSES)
    after = federated.remove_client(aggregate, "client-1", leaving)
    head = federated.solve(after, RIDGE)
    kept = parts[0]
    expected = ridge_oracle(x[kept], one_hot_columns(y[kept], CLASSES[:-1]), RIDGE)
    np.testing.assert_array_equal(head.class_ids, CLASSES[:-1])
    assert relative_error(head.weights, expected) <= 1e-10


def test_vectorized_clients_give_the_same_fixed_point_aggregate():
    x, y = make_classification(n=2_000, d=D, classes=CLASSES, seed=25)
    parts = federated.dirichlet_partition(y, 40, 0.1, seed=5)
    plain, _, _ = simulate_afl(x, y, parts, ridge=RIDGE, precision="fixed", progress=False)
    vectorized, head, report = simulate_afl(x.astype(np.float32), y, parts, ridge=RIDGE, precision="fixed",
                                            progress=False, vectorized=True)
    centralized = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), x.astype(np.float32), y)
    assert analytic.state_hash(vectorized.statistics) == analytic.state_hash(centralized)
    assert report.rejected == {} and vectorized.n_clients == plain.n_clients == 40


def test_a_client_on_a_device_computes_its_statistics_there():
    import jax

    x, y = make_classification(n=300, d=D, classes=CLASSES, seed=26)
    on_device = federated.client_statistics(jax.device_put(x.astype(np.float32)), y, D, precision="fixed")
    assert on_device.on_device
    on_host = federated.client_statistics(x.astype(np.float32), y, D, precision="fixed")
    assert federated.encode_statistics(on_device, CLASSES)["gram"].tobytes() == federated.encode_statistics(
        on_host, CLASSES)["gram"].tobytes()


def test_vectorized_fixed_point_clients_refuse_features_the_device_would_round():
    x, y = make_classification(n=200, d=D, classes=CLASSES, seed=27)
    parts = federated.iid_partition(200, 4)
    with pytest.raises(analytic.InputError, match="not exactly float32"):
        simulate_afl(x, y, parts, ridge=RIDGE, precision="fixed", progress=False, vectorized=True)

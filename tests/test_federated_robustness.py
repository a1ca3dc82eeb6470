"""Malformed or duplicate client uploads are rejected with a clear reason and leave the aggregate unchanged."""

import numpy as np
import pytest
from conftest import make_classification

import analytic
import federated

D = 6
CLASSES = (0, 1, 2)
RIDGE = 0.5


@pytest.fixture(scope="module")
def clients():
    x, y = make_classification(n=300, d=D, classes=CLASSES, seed=5)
    parts = federated.iid_partition(y.size, 3)
    return [federated.client_statistics(x[r], y[r], D) for r in parts]


@pytest.fixture
def aggregate(clients):
    aggregate = federated.init_aggregate(D, class_ids=CLASSES)
    for k, stats in enumerate(clients[:2]):
        aggregate = federated.receive(aggregate, f"client-{k}", federated.encode_statistics(stats, CLASSES))
    return aggregate


@pytest.fixture
def solution_aggregate(clients):
    server = federated.init_solution_aggregate(D, CLASSES, RIDGE)
    return federated.receive_solution(server, "client-0", federated.local_solution(clients[0], RIDGE, CLASSES))


def rejected(aggregate, client_id, payload, reason):
    before, ledger = {k: np.array(v) for k, v in aggregate.total.items()}, dict(aggregate.received.clients)
    with pytest.raises(federated.UploadRejected, match=reason):
        federated.receive(aggregate, client_id, payload)
    assert aggregate.total.keys() == before.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(aggregate.total[name], value)
    assert dict(aggregate.received.clients) == ledger
    _, rejections = federated.receive_many(aggregate, [(client_id, payload)])
    assert list(rejections) == [client_id]


def solution_rejected(server, client_id, solution, reason):
    weights, regularized = server.solution.weights.copy(), server.solution.regularized_gram.copy()
    with pytest.raises(federated.UploadRejected, match=reason):
        federated.receive_solution(server, client_id, solution)
    np.testing.assert_array_equal(server.solution.weights, weights)
    np.testing.assert_array_equal(server.solution.regularized_gram, regularized)
    assert len(server.received) == 1
    _, rejections = federated.receive_solutions(server, [(client_id, solution)])
    assert list(rejections) == [client_id]


def test_wrong_shape_is_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], CLASSES)
    payload["gram"] = payload["gram"][:-1]
    rejected(aggregate, "client-2", payload, r"field 'gram' has the wrong shape \(20,\), expected \(21,\)")


def test_wrong_shape_solution_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[1], RIDGE, CLASSES)
    solution = federated.LocalSolution(solution.weights[:, :2], solution.regularized_gram, solution.class_ids,
                                       solution.n_clients, RIDGE)
    solution_rejected(solution_aggregate, "client-1", solution, "weights have the wrong shape")


def test_non_symmetric_gram_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[1], RIDGE, CLASSES)
    solution.regularized_gram[0, 3] += 1.0
    solution_rejected(solution_aggregate, "client-1", solution, r"not symmetric \(entries \(0, 3\) and \(3, 0\)")


def test_negative_gram_diagonal_is_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], CLASSES)
    payload["gram"] = payload["gram"].copy()
    payload["gram"][federated.payload.diagonal_positions(D)[4]] = -1.0
    rejected(aggregate, "client-2", payload, r"negative diagonal entry \(4, 4\)")


def test_negative_regularized_gram_diagonal_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[1], RIDGE, CLASSES)
    solution.regularized_gram[2, 2] = RIDGE - 1.0
    solution_rejected(solution_aggregate, "client-1", solution, r"negative diagonal entry \(2, 2\)")


def test_nan_is_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], CLASSES)
    payload["cross"] = payload["cross"].copy()
    payload["cross"][1, 1] = np.nan
    rejected(aggregate, "client-2", payload, "field 'cross' contains NaN or Inf")


def test_nan_solution_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[1], RIDGE, CLASSES)
    solution.weights[0, 0] = np.nan
    solution_rejected(solution_aggregate, "client-1", solution, "contains NaN or Inf")


def test_duplicate_client_id_is_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], CLASSES)
    rejected(aggregate, "client-1", payload, "duplicate submission: client 'client-1' has already been aggregated")


def test_replayed_upload_is_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[0], CLASSES)
    rejected(aggregate, "client-9", payload, "client 'client-9' replays the upload of client 'client-0'")


def test_duplicate_solution_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[0], RIDGE, CLASSES)
    solution_rejected(solution_aggregate, "client-0", solution, "duplicate submission")


def test_wrong_classes_are_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], (0, 1, 2, 5))
    rejected(aggregate, "client-2", payload, r"federation agreed on \[0, 1, 2\]")


def test_inconsistent_counts_are_rejected(aggregate, clients):
    payload = federated.encode_statistics(clients[2], CLASSES)
    payload["count"] = np.asarray(int(payload["count"]) + 1, np.int64)
    rejected(aggregate, "client-2", payload, "inconsistent counts")


def test_a_valid_upload_after_rejections_is_accepted(aggregate, clients):
    accepted = federated.receive(aggregate, "client-2", federated.encode_statistics(clients[2], CLASSES))
    assert accepted.n_clients == 3 and int(accepted.statistics.count) == 300


def test_indefinite_regularized_gram_is_rejected(solution_aggregate, clients):
    solution = federated.local_solution(clients[1], RIDGE, CLASSES)
    scale = np.sqrt(np.outer(np.diagonal(solution.regularized_gram), np.diagonal(solution.regularized_gram)))
    solution.regularized_gram[0, 1] = solution.regularized_gram[1, 0] = 2.0 * scale[0, 1]  # |correlation| > 1
    solution_rejected(solution_aggregate, "client-1", solution, "not positive definite")


def test_an_overflowing_fixed_point_upload_is_rejected_in_a_round():
    x, y = make_classification(n=60, d=D, classes=CLASSES, seed=6)
    exact = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), x, y)
    server = federated.init_aggregate(D, class_ids=CLASSES, precision="fixed")
    server = federated.receive(server, "client-0", federated.encode_statistics(exact, CLASSES))
    huge = federated.encode_statistics(exact, CLASSES)
    huge["gram"] = huge["gram"].copy()
    huge["gram"][federated.payload.diagonal_positions(D)] = 2**62
    other = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), x[:30], y[:30])
    good = federated.encode_statistics(other, CLASSES)
    after, rejections = federated.receive_many(server, [("client-1", huge), ("client-2", good)])
    assert list(rejections) == ["client-1"] and "overflow" in rejections["client-1"]
    assert set(after.received.clients) == {"client-0", "client-2"}

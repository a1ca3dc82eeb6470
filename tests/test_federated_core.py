"""AFL core: partitions, both aggregation laws, the regularization intermediary, exactness, unlearning, payloads."""

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
from analytic import internal
import federated
from federated.payload import diagonal_positions

D = 8
CLASSES = (0, 1, 2, 3, 4)
RIDGE = 0.1
PARTITIONS = ("iid", "dirichlet-1", "dirichlet-0.1", "dirichlet-0.01", "shards", "quantity")


def split(name, labels, n_clients, seed=0):
    if name.startswith("dirichlet"):  # min_size=0: AFL must hold on any split, empty clients included
        return federated.make_partition("dirichlet", labels, n_clients, alpha=float(name.split("-")[1]), seed=seed,
                                        min_size=0)
    return federated.make_partition(name, labels, n_clients, alpha=0.5, seed=seed)


@pytest.fixture(scope="module")
def pooled():
    return make_classification(n=20_000, d=D, classes=CLASSES, seed=3)


def server_aggregate(features, labels, parts, precision="float64"):
    uploads = (
        (f"client-{k}", federated.encode_statistics(
            federated.client_statistics(features[rows], labels[rows], D, precision=precision), CLASSES))
        for k, rows in enumerate(parts)
    )
    aggregate, rejected = federated.receive_many(federated.init_aggregate(D, precision=precision, class_ids=CLASSES),
                                                 uploads)
    assert rejected == {}
    return aggregate


# ---------------------------------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("name", PARTITIONS)
def test_partition_covers_every_sample_once(name, pooled):
    _, labels = pooled
    parts = split(name, labels, 100)
    assert len(parts) == 100
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))


def test_shards_hold_one_or_two_classes(pooled):
    _, labels = pooled
    held = [np.unique(labels[rows]).size for rows in federated.shard_partition(labels, 50)]
    assert set(held) <= {1, 2}


def test_extreme_skew_gives_empty_and_small_clients(pooled):
    _, labels = pooled
    sizes = np.array([rows.size for rows in federated.dirichlet_partition(labels, 1000, 0.01, min_size=0)])
    assert (sizes == 0).any() and ((sizes > 0) & (sizes < D)).any()


def test_dirichlet_redraws_until_no_client_is_empty():
    labels = np.repeat(np.arange(10), 1000)
    first = federated.dirichlet_partition(labels, 100, 0.1, seed=1, min_size=0)  # the single draw of before
    assert sum(rows.size == 0 for rows in first) == 1
    parts = federated.dirichlet_partition(labels, 100, 0.1, seed=1)
    assert len(parts) == 100 and min(rows.size for rows in parts) >= 1
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(labels.size))  # disjoint, covering
    assert all(rows.dtype == np.int64 and np.all(np.diff(rows) > 0) for rows in parts)
    again = federated.dirichlet_partition(labels, 100, 0.1, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))  # deterministic per seed
    other = federated.dirichlet_partition(labels, 100, 0.1, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    by_name = federated.make_partition("dirichlet", labels, 100, alpha=0.1, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, by_name))
    larger = federated.dirichlet_partition(labels, 100, 1.0, seed=1, min_size=50)
    assert min(rows.size for rows in larger) >= 50


def test_dirichlet_keeps_a_first_draw_with_no_empty_client():
    labels = np.repeat(np.arange(10), 1000)
    for seed in (2, 3):  # first draws with no empty client: the default returns them unchanged
        plain = federated.dirichlet_partition(labels, 100, 0.1, seed=seed, min_size=0)
        assert min(rows.size for rows in plain) >= 1
        assert all(np.array_equal(a, b) for a, b in zip(plain, federated.dirichlet_partition(labels, 100, 0.1,
                                                                                              seed=seed)))


def test_dirichlet_refuses_impossible_or_unreachable_minimum_sizes():
    labels = np.repeat(np.arange(5), 20)
    with pytest.raises(analytic.InputError, match="101 clients with at least 1 samples each need 101 samples, but "
                                                  "there are 100"):
        federated.dirichlet_partition(labels, 101, 1.0)
    with pytest.raises(analytic.InputError, match="in 7 draws gave each of the 50 clients at least 1 samples"):
        federated.dirichlet_partition(labels, 50, 0.01, max_draws=7)
    with pytest.raises(analytic.InputError, match="min_size must be"):
        federated.dirichlet_partition(labels, 5, 1.0, min_size=-1)
    with pytest.raises(analytic.InputError, match="max_draws must be"):
        federated.dirichlet_partition(labels, 5, 1.0, max_draws=0)
    assert len(federated.dirichlet_partition(labels, 101, 1.0, min_size=0)) == 101  # empty clients, if asked for


def test_partition_rejects_bad_arguments(pooled):
    _, labels = pooled
    with pytest.raises(analytic.InputError, match="alpha must be positive"):
        federated.dirichlet_partition(labels, 10, 0.0)
    with pytest.raises(analytic.InputError, match="cannot cover"):
        federated.shard_partition(labels, 2, classes_per_client=1)


# ------------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("name", PARTITIONS)
@pytest.mark.parametrize("n_clients", [10, 1000, 10_000])
def test_summed_aggregate_equals_centralized_ridge(name, n_clients, pooled):
    features, labels = pooled
    aggregate = server_aggregate(features, labels, split(name, labels, n_clients))
    head = analytic.solve(aggregate.statistics, RIDGE)
    expected = ridge_oracle(features, one_hot_columns(labels, CLASSES), RIDGE)
    assert aggregate.n_clients == n_clients
    assert relative_error(head.weights, expected) <= 1e-10


@pytest.mark.parametrize("name", PARTITIONS)
def test_fixed_precision_hash_is_identical_across_partitions(name, pooled):
    features, labels = pooled
    centralized = analytic.accumulate(analytic.init_statistics(D, precision="fixed"), features, labels)
    for n_clients in (10, 1000):
        aggregate = server_aggregate(features, labels, split(name, labels, n_clients, seed=n_clients), "fixed")
        assert analytic.state_hash(aggregate.statistics) == analytic.state_hash(centralized)


def solutions(features, labels, parts, ridge=RIDGE):
    for rows in parts:
        stats = federated.client_statistics(features[rows], labels[rows], D)
        yield federated.local_solution(stats, ridge, CLASSES)


@pytest.mark.parametrize("name", PARTITIONS)
def test_paper_form_equals_summed_form(name, pooled):
    features, labels = pooled
    parts = split(name, labels, 200)
    paper = federated.aggregate_solutions(solutions(features, labels, parts))
    summed = federated.aggregate_statistics(federated.client_statistics(features[r], labels[r], D) for r in parts)
    summed = analytic.with_classes(summed, CLASSES)
    assert int(paper.n_clients) == 200
    # before the intermediary: (G + KγI)⁻¹ B
    assert relative_error(paper.weights, analytic.solve(summed, 200 * RIDGE).weights) <= 1e-10
    for target in (0.0, RIDGE):
        head = federated.remove_regularization(paper, target)
        assert relative_error(head.weights, analytic.solve(summed, target).weights) <= 1e-10


def test_pairwise_law_matches_direct_formula(pooled):
    features, labels = pooled
    u, v = solutions(features, labels, [np.arange(0, 5), np.arange(5, 30)], ridge=0.5)
    law = federated.aggregate_pair(u, v)
    direct = np.linalg.solve(
        u.regularized_gram + v.regularized_gram,
        u.regularized_gram @ u.weights + v.regularized_gram @ v.weights,
    )
    assert relative_error(law.weights, direct) <= 1e-10


def pairwise_reference(messages):
    """The paper's pairwise law joined as a balanced tree: the aggregation route before the folded sums."""
    if len(messages) == 1:
        return messages[0]
    half = len(messages) // 2
    return federated.aggregate_pair(pairwise_reference(messages[:half]), pairwise_reference(messages[half:]))


@pytest.mark.parametrize("name", ["iid", "dirichlet-0.01"])
@pytest.mark.parametrize("n_clients", [1, 2, 7, 64, 300])
def test_folded_law_equals_pairwise_law_and_direct_solve(name, n_clients, pooled):
    features, labels = pooled
    parts = split(name, labels, n_clients)
    if name == "dirichlet-0.01" and n_clients >= 64:  # clients whose C_k is γI plus a Gram of rank < d
        assert any(0 < rows.size < D for rows in parts)
    messages = list(solutions(features, labels, parts))
    folded = federated.aggregate_solutions(messages)
    pairwise = pairwise_reference(messages)
    y = one_hot_columns(labels, CLASSES)
    assert int(folded.n_clients) == int(pairwise.n_clients) == n_clients
    assert relative_error(folded.regularized_gram, pairwise.regularized_gram) <= 1e-14
    assert relative_error(folded.weights, pairwise.weights) <= 1e-9
    assert relative_error(folded.weights, ridge_oracle(features, y, n_clients * RIDGE)) <= 1e-9
    head = federated.remove_regularization(folded, RIDGE)
    assert relative_error(head.weights, ridge_oracle(features, y, RIDGE)) <= 1e-9


def test_folded_law_with_only_small_clients_equals_direct_solve(pooled):
    features, labels = pooled
    parts = np.array_split(np.arange(600), 200)  # 3 samples each, d = 8: every C_k is dominated by γI
    messages = list(solutions(features, labels, parts))
    folded = federated.aggregate_solutions(messages)
    y = one_hot_columns(labels[:600], CLASSES)
    assert relative_error(folded.weights, pairwise_reference(messages).weights) <= 1e-9
    assert relative_error(folded.weights, ridge_oracle(features[:600], y, 200 * RIDGE)) <= 1e-9
    head = federated.remove_regularization(folded, RIDGE)
    assert relative_error(head.weights, ridge_oracle(features[:600], y, RIDGE)) <= 1e-9


def test_server_sums_equal_aggregate_solutions(pooled):
    features, labels = pooled
    messages = list(solutions(features, labels, split("dirichlet-0.1", labels, 50)))
    server, rejected = federated.receive_solutions(federated.init_solution_aggregate(D, CLASSES, RIDGE),
                                                   ((f"client-{k}", s) for k, s in enumerate(messages)))
    direct = federated.aggregate_solutions(messages)
    assert rejected == {} and int(server.partials.n_clients) == 50
    np.testing.assert_array_equal(server.solution.weights, direct.weights)
    np.testing.assert_array_equal(server.solution.regularized_gram, direct.regularized_gram)


def test_folded_law_refuses_mixed_ridges_and_no_clients(pooled):
    features, labels = pooled
    (u,) = solutions(features, labels, [np.arange(0, 50)])
    (v,) = solutions(features, labels, [np.arange(50, 100)], ridge=2 * RIDGE)
    with pytest.raises(analytic.IntegrityError, match="share the ridge and the class ids"):
        federated.aggregate_solutions([u, v])
    with pytest.raises(analytic.IntegrityError, match="no client solution has been aggregated"):
        federated.aggregate_solutions([])
    with pytest.raises(analytic.IntegrityError, match="no client solution has been aggregated"):
        _ = federated.init_solution_aggregate(D, CLASSES, RIDGE).solution


@pytest.mark.parametrize(
    ("name", "n_clients"),
    [(name, n) for name in PARTITIONS for n in (10, 1000)] + [("dirichlet-0.01", 10_000)],
)
def test_paper_form_with_intermediary_equals_unregularized_least_squares(name, n_clients, pooled):
    features, labels = pooled
    server = federated.init_solution_aggregate(D, CLASSES, RIDGE)
    messages = ((f"client-{k}", s) for k, s in enumerate(solutions(features, labels, split(name, labels, n_clients))))
    server, rejected = federated.receive_solutions(server, messages)
    assert rejected == {} and len(server.received) == n_clients
    head = federated.remove_regularization(server.solution)
    y = one_hot_columns(labels, CLASSES)
    expected = np.linalg.solve(features.T @ features, features.T @ y)  # the pooled (XᵀX)⁻¹XᵀY
    assert relative_error(head.weights, expected) <= 1e-10


def test_intermediary_refuses_rank_deficient_pooled_gram():
    x, y = make_classification(n=4, d=D, classes=CLASSES, seed=1)
    aggregate = federated.local_solution(federated.client_statistics(x, y, D), RIDGE, CLASSES)
    with pytest.raises(analytic.IntegrityError, match="target_ridge > 0"):
        federated.remove_regularization(aggregate, 0.0)


# ----------------------------------------------------------------------------------------------------- unlearning


def test_removing_a_client_equals_retraining_without_it(pooled):
    features, labels = pooled
    parts = federated.dirichlet_partition(labels, 20, 0.1)
    aggregate = server_aggregate(features, labels, parts)
    leaving = max(range(20), key=lambda k: parts[k].size)
    stats = federated.client_statistics(features[parts[leaving]], labels[parts[leaving]], D)
    after = federated.remove_client(aggregate, f"client-{leaving}", federated.encode_statistics(stats, CLASSES))
    kept = np.concatenate([rows for k, rows in enumerate(parts) if k != leaving])
    expected = ridge_oracle(features[kept], one_hot_columns(labels[kept], CLASSES), RIDGE)
    assert after.n_clients == 19
    assert relative_error(analytic.solve(after.statistics, RIDGE).weights, expected) <= 1e-10


def test_removing_a_client_is_bit_exact_in_fixed_precision(pooled):
    features, labels = pooled
    parts = federated.shard_partition(labels, 30)
    aggregate = server_aggregate(features, labels, parts, "fixed")
    stats = federated.client_statistics(features[parts[7]], labels[parts[7]], D, precision="fixed")
    after = federated.remove_client(aggregate, "client-7", federated.encode_statistics(stats, CLASSES))
    without = server_aggregate(features, labels, [rows for k, rows in enumerate(parts) if k != 7], "fixed")
    assert analytic.state_hash(after.statistics) == analytic.state_hash(without.statistics)


def test_removal_of_an_upload_the_client_never_sent_is_rejected(pooled):
    features, labels = pooled
    parts = federated.iid_partition(labels.size, 5)
    aggregate = server_aggregate(features, labels, parts)
    other = federated.client_statistics(features[parts[1]], labels[parts[1]], D)
    with pytest.raises(federated.UploadRejected, match="not the upload client 'client-0' contributed"):
        federated.remove_client(aggregate, "client-0", federated.encode_statistics(other, CLASSES))
    with pytest.raises(federated.UploadRejected, match="not part of the aggregate"):
        federated.remove_client(aggregate, "stranger", federated.encode_statistics(other, CLASSES))


# ------------------------------------------------------------------------------------------------------- payloads


@pytest.mark.parametrize("precision", ["float64", "fixed"])
def test_payload_round_trip_and_byte_count(precision, pooled):
    features, labels = pooled
    stats = federated.client_statistics(features[:300], labels[:300], D, precision=precision)
    payload = federated.encode_statistics(stats, CLASSES)
    decoded = federated.decode_statistics(payload, D, precision=precision)
    assert analytic.state_hash(decoded) == analytic.state_hash(analytic.with_classes(stats, CLASSES))
    assert payload["gram"].shape == (D * (D + 1) // 2,)
    assert federated.payload_nbytes(payload) == federated.statistics_nbytes(D, len(CLASSES))
    square = np.arange(D * D, dtype=np.float64).reshape(D, D)
    full = square + square.T
    np.testing.assert_array_equal(internal.unpack_upper(internal.pack_upper(full), D), full)
    np.testing.assert_array_equal(internal.pack_upper(full)[diagonal_positions(D)], np.diagonal(full))


def test_an_unknown_upload_precision_or_no_upload_at_all_is_an_input_error():
    with pytest.raises(analytic.InputError, match="precision"):
        federated.init_aggregate(4, [0, 1], precision="float32")
    with pytest.raises(analytic.InputError, match="at least one upload"):
        federated.aggregate_statistics([])

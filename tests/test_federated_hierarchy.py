"""A tree of edge aggregators gives the flat server's aggregate: bit for bit on the fixed-point grid."""

import math

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import federated
from federated.hierarchy import aggregator_levels, tree_plan, tree_round

D, CLASSES, RIDGE = 6, (0, 3, 7, 11), 0.5


def uploads_of(x, y, parts, precision):
    return [(f"client-{k}", federated.encode_statistics(federated.client_statistics(x[p], y[p], D,
                                                                                      precision=precision), CLASSES))
            for k, p in enumerate(parts)]


@pytest.mark.parametrize("n_clients, fanout", [(1, 2), (7, 2), (64, 4), (100, 3), (250, 16)])
def test_the_root_of_any_tree_is_the_flat_aggregate_bit_for_bit(n_clients, fanout):
    x, y = make_classification(n=1_000, d=D, classes=CLASSES, seed=n_clients)
    parts = federated.dirichlet_partition(y, n_clients, 0.3, seed=fanout, min_size=0)
    uploads = uploads_of(x, y, parts, "fixed")
    root, levels = tree_round(iter(uploads), D, CLASSES, fanout=fanout)
    flat, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES, precision="fixed"), uploads)
    assert rejected == {} and all(not level.rejected for level in levels)
    for name in flat.total:
        assert np.array_equal(root.total[name], flat.total[name]), name
    assert [level.nodes for level in levels] == aggregator_levels(n_clients, fanout)
    assert levels[0].children == n_clients and [l.children for l in levels[1:]] == [l.nodes for l in levels[:-1]]
    assert levels[0].bytes_received == n_clients * federated.statistics_nbytes(D, len(CLASSES))


def test_a_float64_tree_solves_the_pooled_ridge():
    x, y = make_classification(n=900, d=D, classes=CLASSES, seed=3)
    parts = federated.iid_partition(900, 30)
    root, _ = tree_round(uploads_of(x, y, parts, "float64"), D, CLASSES, fanout=4, precision="float64")
    expected = ridge_oracle(x, one_hot_columns(y, CLASSES), RIDGE)
    assert relative_error(federated.solve(root, RIDGE).weights, expected) <= 1e-12


def test_an_edge_refuses_a_replay_and_a_malformed_upload_and_the_round_goes_on():
    x, y = make_classification(n=600, d=D, classes=CLASSES, seed=4)
    uploads = uploads_of(x, y, federated.iid_partition(600, 12), "fixed")
    broken = dict(uploads[5][1], count=np.asarray(1, np.int64))
    impostor = uploads_of(x[:50] + 1.0, y[:50], [np.arange(50)], "fixed")[0][1]  # a new upload under an old id
    hostile = uploads + [("replayer", uploads[2][1]), ("broken", broken), ("client-1", impostor)]
    root, levels = tree_round(hostile, D, CLASSES, fanout=5)
    assert set(levels[0].rejected) == {"replayer", "broken", "client-1"}
    assert "replays the upload of client 'client-2'" in levels[0].rejected["replayer"]
    assert "already been aggregated by edge-1-0" in levels[0].rejected["client-1"]
    flat, _ = federated.receive_many(federated.init_aggregate(D, CLASSES, precision="fixed"), uploads)
    assert all(np.array_equal(root.total[name], flat.total[name]) for name in flat.total)


def test_the_paper_tree_counts_every_upload_once():
    plan = tree_plan(1_000_000, 1_000, 1_280, 10)
    upload = federated.statistics_nbytes(1_280, 10)
    assert [r.nodes for r in plan] == [1_000, 1] and [r.children for r in plan] == [1_000_000, 1_000]
    assert [r.bytes_received for r in plan] == [1_000_000 * upload, 1_000 * upload]
    assert plan[0].bytes_held == upload + 1_000 * 32
    assert aggregator_levels(100_001, 10) == [math.ceil(100_001 / 10 ** k) for k in range(1, 7)]


@pytest.mark.parametrize("n_clients, fanout", [(0, 4), (10, 1), (10, True), (2.5, 4)])
def test_a_tree_needs_clients_and_a_fanout_of_two(n_clients, fanout):
    with pytest.raises(analytic.InputError):
        aggregator_levels(n_clients, fanout)


def test_a_round_without_uploads_is_refused():
    with pytest.raises(analytic.InputError, match="at least one upload"):
        tree_round([], D, CLASSES, fanout=4)
    with pytest.raises(analytic.InputError, match="at least 2 children"):
        tree_round([], D, CLASSES, fanout=1)

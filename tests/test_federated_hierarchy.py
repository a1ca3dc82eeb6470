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


# ---------------------------------------------------------------------------------------------------------------
# Secure aggregation within each edge


def plain_total(uploads, keep=None):
    aggregate, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES, precision="fixed"),
                                                 [(k, p) for k, p in uploads if keep is None or k in keep])
    assert not rejected
    return aggregate.total


def same_totals(total, expected):
    return all(np.array_equal(total[name], expected[name]) for name in ("gram", "cross", "feature_sum", "count",
                                                                         "class_counts"))


@pytest.fixture(scope="module")
def federation():
    x, y = make_classification(n=1_200, d=D, classes=CLASSES, seed=21)
    parts = federated.dirichlet_partition(y, 24, 0.5, seed=2, min_size=0)
    return x, y, uploads_of(x, y, parts, "fixed")


@pytest.mark.parametrize("settings", [federated.SecureEdges(), federated.SecureEdges(dropout=0.1, failure=0.5)])
def test_a_secure_tree_gives_the_plain_trees_root_and_the_pooled_statistics_bit_for_bit(federation, settings):
    x, y, uploads = federation
    root, levels = tree_round(iter(uploads), D, CLASSES, fanout=6, secure=settings)
    plain, plain_levels = tree_round(uploads, D, CLASSES, fanout=6)
    pooled = federated.encode_statistics(federated.client_statistics(x, y, D, precision="fixed"), CLASSES)
    assert same_totals(root.total, plain.total) and same_totals(root.total, pooled)
    assert all(not level.rejected and not level.dropped for level in levels)
    edges, above = levels
    assert (edges.nodes, edges.children, above.children) == (4, 24, 4) == (plain_levels[0].nodes, 24, 4)
    assert edges.bytes_received > 24 * federated.statistics_nbytes(D, len(CLASSES)) and edges.bytes_sent > 0
    assert edges.secure_seconds > 0 and math.isnan(above.secure_seconds) and above.bytes_sent == 0
    assert above.bytes_received == plain_levels[1].bytes_received  # the edges' sums go up as in the plain tree


def test_clients_that_drop_after_sharing_keys_are_recovered_bit_for_bit(federation):
    _, _, uploads = federation
    dropped = {"client-1", "client-2", "client-13"}  # two in edge 0 (t = 3 of 6), one in edge 2
    root, levels = tree_round(uploads, D, CLASSES, fanout=6, secure=federated.SecureEdges(dropped=dropped))
    assert same_totals(root.total, plain_total(uploads, {k for k, _ in uploads} - dropped))
    assert levels[0].dropped == ("client-1", "client-2", "client-13") and not levels[0].rejected


def test_an_edge_below_its_threshold_aborts_only_its_subtree(federation):
    _, _, uploads = federation
    lost = {f"client-{k}" for k in range(4, 8)}  # edge 1 of fanout 4: t = 2, three of its four drop
    settings = federated.SecureEdges(dropped={"client-4", "client-5", "client-6"})
    root, levels = tree_round(uploads, D, CLASSES, fanout=4, secure=settings)
    assert set(levels[0].rejected) == {"client-7"}
    assert "edge-1-1 aborted its secure round" in levels[0].rejected["client-7"]
    assert "threshold is 2" in levels[0].rejected["client-7"]
    assert levels[1].children == 5  # six edges, one of them silent
    assert same_totals(root.total, plain_total(uploads, {k for k, _ in uploads} - lost))
    short, levels = tree_round(uploads[:6], D, CLASSES, fanout=4, secure=federated.SecureEdges())
    assert levels[0].rejected == {f"client-{k}": "edge-1-1 aborted: a secure round needs at least 3 children, it has 2"
                                  for k in (4, 5)}  # with t = 1, one survivor's sum would be its upload
    assert same_totals(short.total, plain_total(uploads[:4]))
    nothing, levels = tree_round(uploads[:3], D, CLASSES, fanout=4, secure=federated.SecureEdges(dropped={"client-0",
                                                                                                          "client-1"}))
    assert set(levels[0].rejected) == {"client-2"} and int(nothing.total["count"]) == 0 and not nothing.received


def test_a_secure_edge_validates_only_its_subtrees_sum(federation):
    x, y, uploads = federation
    float_upload = uploads_of(x, y, [np.arange(40)], "float64")[0][1]
    replay = uploads[2][1]
    hostile = uploads[:6] + [("floating", float_upload), ("replayer", replay), ("client-0", uploads[9][1])]
    root, levels = tree_round(hostile, D, CLASSES, fanout=9, secure=federated.SecureEdges())
    assert "cannot mask its upload" in levels[0].rejected["floating"]  # the client's own check
    assert "has already been aggregated" in levels[0].rejected["client-0"]  # ids are checked before the round
    assert set(levels[0].rejected) == {"floating", "client-0"}
    expected = plain_total(uploads[:6])
    replayed = {name: expected[name] + replay[name] for name in expected}  # the edge cannot see the replay
    assert same_totals(root.total, replayed)
    _, plain_levels = tree_round(hostile, D, CLASSES, fanout=9)
    assert "replays the upload of client 'client-2'" in plain_levels[0].rejected["replayer"]


@pytest.mark.parametrize("options, message", [
    ({"secure": "yes"}, "secure is a SecureEdges"),
    ({"secure": federated.SecureEdges(), "precision": "float64"}, "precision must be 'fixed'"),
])
def test_bad_secure_arguments_are_refused_before_any_upload_is_read(federation, options, message):
    _, _, uploads = federation
    stream = iter(uploads)
    with pytest.raises(analytic.InputError, match=message):
        tree_round(stream, D, CLASSES, fanout=4, **options)
    assert next(stream) is uploads[0]


@pytest.mark.parametrize("options, message", [
    ({"dropout": 0.5}, "dropout in"), ({"dropout": 0.1, "failure": 0.0}, "failure in"),
    ({"dropped": "client-1"}, "collection of client ids"), ({"dropped": [1, 2]}, "collection of client ids"),
])
def test_bad_secure_settings_are_refused(options, message):
    with pytest.raises(analytic.InputError, match=message):
        federated.SecureEdges(**options)

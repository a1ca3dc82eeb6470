"""Fewer bytes per client: the triangular-factor upload (exact to float64 rounding) and float32 transport (not
exact, its error bounded), both through the same checks and fingerprints as the packed Gram."""

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import federated
from analytic.internal import unpack_upper

D = 40
CLASSES = (0, 1, 2, 3)
RIDGE = 0.1


@pytest.fixture(scope="module")
def clients():
    """Twelve clients with 3 … 60 samples: most below d = 40."""
    x, y = make_classification(n=360, d=D, classes=CLASSES, seed=21)
    sizes = np.array([3, 5, 8, 10, 15, 20, 25, 30, 39, 45, 60, 100])
    return [(x[rows], y[rows]) for rows in np.split(np.arange(y.size), np.cumsum(sizes)[:-1])]


def packed_upload(x, y, transport="float64"):
    return federated.encode_statistics(federated.client_statistics(x, y, D), CLASSES, transport=transport)


def pooled_head(clients):
    x = np.concatenate([x for x, _ in clients])
    y = np.concatenate([y for _, y in clients])
    return ridge_oracle(x, one_hot_columns(y, CLASSES), RIDGE)


def test_the_factor_decodes_to_the_packed_gram_to_float64_rounding(clients):
    for x, y in clients:
        factor = federated.encode_factor(x, y, CLASSES)
        decoded = federated.decode_statistics(factor, D)
        packed = federated.decode_statistics(packed_upload(x, y), D)
        exact = x.T @ x
        # measured: at most 6.6e-16 relative (Frobenius) here, the rounding of two float64 products
        assert relative_error(decoded.moments.gram, exact) < 1e-14
        assert relative_error(decoded.moments.gram, packed.moments.gram) < 1e-14
        np.testing.assert_array_equal(decoded.moments.cross, packed.moments.cross)  # the rest travels as is
        np.testing.assert_array_equal(decoded.class_counts, packed.class_counts)


def test_a_round_of_factor_uploads_solves_to_the_pooled_direct_solve(clients):
    uploads = [(f"client-{k}", federated.encode_factor(x, y, CLASSES) if x.shape[0] < D else packed_upload(x, y))
               for k, (x, y) in enumerate(clients)]
    aggregate, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES), uploads)
    assert rejected == {} and aggregate.n_clients == len(clients)
    assert relative_error(federated.solve(aggregate, RIDGE).weights, pooled_head(clients)) < 1e-10
    leaving = 3
    after = federated.remove_client(aggregate, f"client-{leaving}", uploads[leaving][1])
    rest = clients[:leaving] + clients[leaving + 1:]
    assert relative_error(federated.solve(after, RIDGE).weights, pooled_head(rest)) < 1e-10


def test_factor_bytes_are_r_d_minus_r_choose_2_and_never_above_the_packed_gram(clients):
    for x, y in clients:
        n = x.shape[0]
        factor = federated.encode_factor(x, y, CLASSES)
        r = min(n, D)
        assert factor["factor"].size == r * D - r * (r - 1) // 2
        assert federated.payload_nbytes(factor) == federated.statistics_nbytes(D, len(CLASSES), n_samples=n)
        assert federated.payload_nbytes(factor) <= federated.payload_nbytes(packed_upload(x, y))
    x, y = clients[-1]  # n ≥ d: the full triangle, as many numbers as the packed Gram
    assert federated.encode_factor(x, y, CLASSES)["factor"].size == D * (D + 1) // 2


def test_float32_transport_halves_the_moments_and_is_not_exact(clients):
    uploads = [(f"client-{k}", packed_upload(x, y, "float32")) for k, (x, y) in enumerate(clients)]
    for (x, y), (_, upload) in zip(clients, uploads):
        assert federated.payload_nbytes(upload) == federated.statistics_nbytes(D, len(CLASSES), transport="float32")
        decoded = federated.decode_statistics(upload, D, allow_float32=True)
        assert decoded.moments.gram.dtype == np.float64
        entries = np.abs(decoded.moments.gram - x.T @ x) / np.abs(x.T @ x)
        assert entries.max() <= 2.0**-24 * 1.01  # each entry rounded once
    exact_only, refused = federated.receive_many(federated.init_aggregate(D, CLASSES), uploads)
    assert exact_only.n_clients == 0 and set(refused) == {k for k, _ in uploads}
    assert all("float32 transport, not exact" in reason for reason in refused.values())
    aggregate, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES, allow_float32=True), uploads)
    assert rejected == {}
    error = relative_error(federated.solve(aggregate, RIDGE).weights, pooled_head(clients))
    assert 1e-12 < error < 1e-4  # measured here: 8.8e-6 — float32 rounding amplified by cond(G + γI), not exact


def test_a_float32_factor_travels_too(clients):
    x, y = clients[2]
    upload = federated.encode_factor(x, y, CLASSES, transport="float32")
    assert upload["factor"].dtype == np.float32 and upload["cross"].dtype == np.float32
    assert relative_error(federated.decode_statistics(upload, D, allow_float32=True).moments.gram,
                          x.T @ x) < 1e-6


def test_broken_factor_uploads_are_refused(clients):
    x, y = clients[3]
    upload = federated.encode_factor(x, y, CLASSES)
    aggregate = federated.receive(federated.init_aggregate(D, CLASSES), "client-0", packed_upload(*clients[0]))
    before = {k: np.array(v) for k, v in aggregate.total.items()}
    bad = {
        "wrong length": ({**upload, "factor": upload["factor"][:-1]}, r"field 'factor' has the wrong shape"),
        "NaN": ({**upload, "factor": np.where(upload["factor"] == upload["factor"][0], np.nan, upload["factor"])},
                "field 'factor' contains NaN or Inf"),
        "cross too large": ({**upload, "cross": upload["cross"] * 1e3,
                             "feature_sum": upload["feature_sum"] * 1e3}, r"cross-moment .* exceeds"),
        "count 0": ({**upload, "count": np.asarray(0, np.int64), "class_counts": np.zeros(4, np.int64),
                     "factor": np.zeros(0)}, "count 0 must be all zeros"),
    }
    for name, (payload, reason) in bad.items():
        with pytest.raises(federated.UploadRejected, match=reason):
            federated.receive(aggregate, f"evil-{name}", payload)
        for field, value in before.items():
            np.testing.assert_array_equal(aggregate.total[field], value)
        assert aggregate.n_clients == 1


def test_fixed_point_refuses_a_factor(clients):
    x, y = clients[0]
    aggregate = federated.init_aggregate(D, CLASSES, precision="fixed")
    with pytest.raises(federated.UploadRejected, match="a factor upload is float64: the fixed-point grid"):
        federated.receive(aggregate, "client-0", federated.encode_factor(x, y, CLASSES))
    with pytest.raises(analytic.InputError, match="float32 transport is for float64"):
        federated.encode_statistics(federated.client_statistics(x, y, D, precision="fixed"), transport="float32")
    with pytest.raises(analytic.InputError, match="float32 transport is for float64 aggregates"):
        federated.init_aggregate(D, CLASSES, precision="fixed", allow_float32=True)
    with pytest.raises(analytic.InputError, match="transport must be one of"):
        federated.encode_factor(x, y, CLASSES, transport="float16")

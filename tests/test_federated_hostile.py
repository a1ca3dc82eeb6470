"""Hostile and broken clients: every attack is refused with its reason, the aggregate passed in is unchanged, and the
round solves on the honest clients, exactly their float64 direct solve."""

import math
import re

import numpy as np
import pytest
from conftest import make_classification, one_hot_columns, relative_error, ridge_oracle

import analytic
import federated
import federated.server
from analytic.internal import pack_upper, unpack_upper

D = 8
CLASSES = (0, 1, 2)
RIDGE = 0.1
HONEST = 4


@pytest.fixture(scope="module")
def honest():
    """Four honest clients' (features, labels) with 50 samples each."""
    x, y = make_classification(n=HONEST * 50, d=D, classes=CLASSES, seed=11)
    return [(x[rows], y[rows]) for rows in np.split(np.arange(y.size), HONEST)]


def uploads_of(honest, precision="float64"):
    return [(f"client-{k}", federated.encode_statistics(federated.client_statistics(x, y, D, precision=precision),
                                                        CLASSES))
            for k, (x, y) in enumerate(honest)]


def snapshot(aggregate):
    return {k: np.array(v) for k, v in aggregate.total.items()}, dict(aggregate.received.clients)


def assert_unchanged(aggregate, before):
    totals, ledger = before
    for name, value in totals.items():
        np.testing.assert_array_equal(aggregate.total[name], value)
    assert dict(aggregate.received.clients) == ledger


def assert_round_survives(honest, attacks, reason, precision="float64"):
    """Client-0 is aggregated; then a round of the other honest clients with the attacks among them. The attacks
    are refused (alone and in the round) with ``reason``, the aggregate is unchanged, and the round's result is
    bit for bit the round without them, whose head is the honest pooled data's float64 direct solve."""
    uploads = uploads_of(honest, precision)
    base = federated.receive(federated.init_aggregate(D, CLASSES, precision=precision), *uploads[0])
    before = snapshot(base)
    for client_id, payload in attacks:
        with pytest.raises(federated.UploadRejected, match=reason):
            federated.receive(base, client_id, payload)
        assert_unchanged(base, before)
    mixed = uploads[1:2] + list(attacks) + uploads[2:]
    after, rejected = federated.receive_many(base, mixed)
    assert_unchanged(base, before)
    assert set(rejected) == {client_id for client_id, _ in attacks}
    assert all(re.search(reason, message) for message in rejected.values()), rejected
    clean, none = federated.receive_many(base, uploads[1:])
    assert none == {} and dict(after.received.clients) == dict(clean.received.clients)
    for name, value in clean.total.items():
        np.testing.assert_array_equal(after.total[name], value)
    x = np.concatenate([x for x, _ in honest])
    y = np.concatenate([y for _, y in honest])
    expected = ridge_oracle(x, one_hot_columns(y, CLASSES), RIDGE)
    assert relative_error(federated.solve(after, RIDGE).weights, expected) < (1e-10 if precision == "float64" else 1e-3)
    return after


def forged(honest, **fields):
    """A valid upload (from fresh data of the honest distribution) with some fields replaced."""
    x, y = make_classification(n=40, d=D, classes=CLASSES, seed=12)
    payload = federated.encode_statistics(federated.client_statistics(x, y, D), CLASSES)
    return {**payload, **fields}


def with_gram(payload, edit):
    gram = unpack_upper(payload["gram"], D).copy()
    edit(gram)
    return {**payload, "gram": pack_upper(gram)}


def correlation_above_one(gram):
    gram[0, 1] = gram[1, 0] = 10 * np.sqrt(gram[0, 0] * gram[1, 1])


def negatively_correlated_triple(gram):
    """Features 0, 1, 2 with pairwise correlation −0.9 (each pair passes Cauchy–Schwarz; the 3×3 block has the
    eigenvalue 1 − 1.8 < 0), large enough to outweigh the honest clients."""
    scale = 1e4 * gram.diagonal().max()
    gram[:3, :] = gram[:, :3] = 0.0
    gram[:3, :3] = scale * (1.9 * np.eye(3) - 0.9)


def test_the_observed_attack_no_longer_poisons_the_round(honest):
    payload = with_gram(forged(honest), correlation_above_one)
    assert_round_survives(honest, [("evil", payload)], r"breaks Cauchy–Schwarz at \(0, 1\)")


def test_an_indefinite_gram_within_cauchy_schwarz_is_isolated(honest):
    payload = with_gram(forged(honest), negatively_correlated_triple)
    federated.check_payload(payload, D)  # every cheap check passes: only the round's factorization sees it
    assert_round_survives(honest, [("evil", payload)], "not positive semidefinite")


def test_bisection_isolates_several_offenders_with_few_factorizations(honest, monkeypatch):
    factorizations = []
    test = federated.server._positive_semidefinite
    monkeypatch.setattr(federated.server, "_positive_semidefinite",
                        lambda *args: factorizations.append(1) or test(*args))
    x, y = make_classification(n=16 * 20, d=D, classes=CLASSES, seed=13)
    many = [(x[rows], y[rows]) for rows in np.split(np.arange(y.size), 16)]
    federated.receive_many(federated.init_aggregate(D, CLASSES), uploads_of(many))
    assert len(factorizations) == 1  # an honest round: one Cholesky for 16 clients
    factorizations.clear()
    attacks = [(f"evil-{k}", with_gram(forged(honest, count=np.asarray(40 + k, np.int64),
                                              class_counts=forged(honest)["class_counts"] + [k, 0, 0]),
                                       negatively_correlated_triple)) for k in range(2)]
    assert_round_survives(honest, attacks, "not positive semidefinite")
    assert 1 < len(factorizations) <= 2 * (1 + 2 * 2 * 3)  # two offenders among 5: far fewer than one per client


@pytest.mark.parametrize("name, fields, reason", [
    ("count", {"count": np.asarray(41, np.int64)}, "inconsistent counts: count 41, class counts summing to 40"),
    ("negative class count", {"class_counts": np.array([50, -10, 0])}, "inconsistent counts"),
    ("NaN", {"gram": np.full(D * (D + 1) // 2, np.nan)}, "field 'gram' contains NaN or Inf"),
    ("Inf", {"feature_sum": np.full(D, np.inf)}, "field 'feature_sum' contains NaN or Inf"),
    ("huge cross", {"cross": np.full((D, 3), 1e200)}, r"cross-moment \(0, 0\) exceeds √\(G_jj n_c\)"),
    ("feature sum", {"feature_sum": np.zeros(D)}, "feature sum 0 differs from the sum of its cross-moments"),
    ("short Gram", {"gram": np.zeros(5)}, r"field 'gram' has the wrong shape \(5,\), expected \(36,\)"),
    ("mixed dtypes", {"feature_sum": np.zeros(D, np.float32)}, "field 'feature_sum' has dtype float32, expected float64"),
    ("float32", {"cross": np.zeros((D, 3), np.float32)}, "float32 transport, not exact: this aggregate takes float64"),
    ("float count", {"count": np.asarray(40.0)}, "field 'count' has dtype float64, expected int64"),
    ("int32 class counts", {"class_counts": np.zeros(3, np.int32)}, "field 'class_counts' has dtype int32"),
    ("both forms", {"factor": np.zeros(36)}, "either packed .* or as a factor"),
])
def test_broken_uploads_are_refused_and_the_round_goes_on(honest, name, fields, reason):
    payload = forged(honest)
    if name in ("count", "negative class count"):
        payload["class_counts"] = np.array([40, 0, 0]) if name == "count" else payload["class_counts"]
    assert_round_survives(honest, [("evil", {**payload, **fields})], reason)


def test_a_count_zero_upload_must_be_all_zeros(honest):
    payload = forged(honest, count=np.asarray(0, np.int64), class_counts=np.zeros(3, np.int64))
    assert_round_survives(honest, [("evil", payload)], r"count 0 must be all zeros, but \['gram', 'cross'")


def test_empty_clients_are_fingerprinted_and_may_be_several(honest):
    empty = federated.encode_statistics(federated.client_statistics(np.zeros((0, D)), np.zeros(0, int), D), CLASSES)
    after, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES), [("a", empty), ("b", empty)])
    assert rejected == {} and after.received.clients["a"] == federated.payload.upload_fingerprint(empty)
    with pytest.raises(federated.UploadRejected, match="client 'a' has already been aggregated"):
        federated.receive(after, "a", empty)
    assert int(federated.remove_client(after, "a", empty).statistics.count) == 0


def test_replays_are_refused_under_the_same_and_another_id(honest):
    uploads = uploads_of(honest)
    replays = [("client-0", uploads[0][1]), ("thief", uploads[0][1])]
    assert_round_survives(honest, replays, "duplicate submission: client '(client-0|thief)' (has already been "
                                           "aggregated|replays the upload of client 'client-0')")


def test_a_replayed_factor_upload_is_refused(honest):
    x, y = honest[0]
    factor = federated.encode_factor(x[:5], y[:5], CLASSES)
    base = federated.receive(federated.init_aggregate(D, CLASSES), "small-client", factor)
    before = snapshot(base)
    for thief in ("small-client", "thief"):
        with pytest.raises(federated.UploadRejected, match="duplicate submission"):
            federated.receive(base, thief, {name: np.array(value) for name, value in factor.items()})
    assert_unchanged(base, before)


def test_a_replay_within_a_round_keeps_the_first(honest):
    uploads = uploads_of(honest)
    after, rejected = federated.receive_many(federated.init_aggregate(D, CLASSES), uploads + [("copy", uploads[2][1])])
    assert rejected == {"copy": "duplicate submission: client 'copy' replays the upload of client 'client-2'"}
    assert after.n_clients == HONEST


def test_an_overflowing_fixed_point_upload_leaves_the_honest_round_exact(honest):
    payload = federated.encode_statistics(federated.client_statistics(*honest[0], D, precision="fixed"), CLASSES)
    gram = payload["gram"].copy()
    gram[federated.payload.diagonal_positions(D)] = 2**62  # within Cauchy–Schwarz, beyond int64 once summed
    after = assert_round_survives(honest, [("evil", {**payload, "gram": gram})], "overflow int64", precision="fixed")
    assert analytic.state_hash(after.statistics) == analytic.state_hash(
        analytic.accumulate(analytic.init_statistics(D, precision="fixed"), np.concatenate([x for x, _ in honest]),
                            np.concatenate([y for _, y in honest])))


def test_fixed_point_bounds_are_exact(honest):
    stats = federated.client_statistics(*honest[0], D, precision="fixed")
    payload = federated.encode_statistics(stats, CLASSES)
    gram = unpack_upper(payload["gram"], D)
    gram[0, 0], gram[1, 1] = 2**60 + 7, 2**58 + 3  # where float64 cannot tell v² from v² ± 1
    largest = math.isqrt(int(gram[0, 0]) * int(gram[1, 1]))  # the largest integer within the bound
    gram[0, 1] = gram[1, 0] = largest + 1
    with pytest.raises(federated.UploadRejected, match=r"Cauchy–Schwarz at \(0, 1\)"):
        federated.check_payload({**payload, "gram": pack_upper(gram)}, D, precision="fixed")
    gram[0, 1] = gram[1, 0] = largest  # on the bound: a correlation of exactly 1 is possible
    federated.check_payload({**payload, "gram": pack_upper(gram)}, D, precision="fixed")


def test_a_floating_correlation_just_above_the_rounding_slack_is_refused(honest):
    payload = forged(honest)
    gram = unpack_upper(payload["gram"], D).copy()
    gram[2, 3] = gram[3, 2] = np.sqrt(gram[2, 2] * gram[3, 3]) * (1 + 4e-15)  # a few ulps: rounding explains it
    federated.check_payload({**payload, "gram": pack_upper(gram)}, D)
    gram[2, 3] = gram[3, 2] = np.sqrt(gram[2, 2] * gram[3, 3]) * (1 + 1e-9)  # rounding cannot
    with pytest.raises(federated.UploadRejected, match=r"Cauchy–Schwarz at \(2, 3\)"):
        federated.check_payload({**payload, "gram": pack_upper(gram)}, D)


@pytest.mark.parametrize("block", [1, 20, 1 << 18])
def test_cauchy_schwarz_names_the_first_violation_row_by_row_whatever_the_block(honest, monkeypatch, block):
    monkeypatch.setattr(federated.payload, "_CHECK_BLOCK", block)  # one row per step, a few rows, the whole triangle
    payload = forged(honest)
    gram = unpack_upper(payload["gram"], D).copy()
    for i, j in ((D - 2, D - 1), (2, D - 1), (2, 5)):  # the last one set is the first in row order
        gram[i, j] = gram[j, i] = 2 * np.sqrt(gram[i, i] * gram[j, j])
        with pytest.raises(federated.UploadRejected, match=rf"Cauchy–Schwarz at \({i}, {j}\)"):
            federated.check_payload({**payload, "gram": pack_upper(gram)}, D)


def test_a_long_round_is_tested_in_groups_and_still_isolates_the_offender(honest, monkeypatch):
    monkeypatch.setattr(federated.server, "HELD_BYTES", 2 * 8 * D * (D + 1) // 2)  # two uploads per group
    payload = with_gram(forged(honest), negatively_correlated_triple)
    assert_round_survives(honest, [("evil", payload)], "not positive semidefinite")

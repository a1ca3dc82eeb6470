"""Secure aggregation: masked sums are the plain sums bit for bit, single uploads look like uniform noise."""

import numpy as np
import pytest
from conftest import make_classification
from scipy import stats as scipy_stats

import analytic
import federated
from federated import secure

D = 32
CLASSES = (0, 1, 2, 3)
ROOT = 20_240_601


@pytest.fixture(scope="module")
def uploads():
    x, y = make_classification(n=3_000, d=D, classes=CLASSES, seed=11)
    parts = federated.dirichlet_partition(y, 12, 0.3, seed=1)
    clients = {f"client-{k:02d}": federated.client_statistics(x[r], y[r], D, precision="fixed")
               for k, r in enumerate(parts)}
    return clients, {k: federated.encode_statistics(s, CLASSES) for k, s in clients.items()}


def plain_hash(clients, keep):
    total = federated.aggregate_statistics(clients[k] for k in keep)
    return analytic.state_hash(analytic.with_classes(total, CLASSES))


def test_unmasked_sum_equals_plain_sum_bit_for_bit(uploads):
    clients, payloads = uploads
    total = secure.secure_round(payloads, D, CLASSES, root=ROOT)
    decoded = federated.decode_statistics(total, D, precision="fixed")
    assert analytic.state_hash(decoded) == plain_hash(clients, clients)


def test_dropout_after_masking_is_recovered_exactly(uploads):
    clients, payloads = uploads
    dropped = {"client-03", "client-07"}
    total = secure.secure_round(payloads, D, CLASSES, root=ROOT, dropped=dropped)
    decoded = federated.decode_statistics(total, D, precision="fixed")
    assert analytic.state_hash(decoded) == plain_hash(clients, [k for k in clients if k not in dropped])


def test_dropout_without_revealed_seeds_is_refused(uploads):
    _, payloads = uploads
    members = sorted(payloads)
    masked = {k: secure.mask_upload(secure.flatten_payload(payloads[k]), k, members, ROOT) for k in members[1:]}
    with pytest.raises(analytic.IntegrityError, match="has not revealed its seed"):
        secure.unmask_sum(masked, {members[0]}, {})


def uniformity_p_values(vector):
    """Chi-square over byte values and Kolmogorov-Smirnov of the words against U(0, 1)."""
    as_bytes = np.frombuffer(vector.tobytes(), np.uint8)
    chi_square = scipy_stats.chisquare(np.bincount(as_bytes, minlength=256)).pvalue
    ks = scipy_stats.kstest(vector.astype(np.float64) / 2.0**64, "uniform").pvalue
    return chi_square, ks


def test_a_single_masked_upload_is_indistinguishable_from_uniform_noise(uploads):
    _, payloads = uploads
    members = sorted(payloads)
    plain = secure.flatten_payload(payloads[members[4]])
    masked = secure.mask_upload(plain, members[4], members, ROOT)
    assert min(uniformity_p_values(masked)) > 1e-3
    assert max(uniformity_p_values(plain)) < 1e-6  # the same tests do detect the unmasked statistics


def test_float_uploads_cannot_be_masked():
    x, y = make_classification(n=50, d=D, classes=CLASSES, seed=2)
    payload = federated.encode_statistics(federated.client_statistics(x, y, D), CLASSES)
    with pytest.raises(analytic.InputError, match="fixed-point"):
        secure.flatten_payload(payload)

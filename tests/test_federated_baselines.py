"""FedAvg / FedProx / SCAFFOLD on the shared gradient head: they learn, and their bookkeeping is consistent."""

import jax
import numpy as np
import pytest
from conftest import make_classification

import federated
from federated.baselines import run_federated_gradient

D = 12
CLASSES = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def federation():
    x, y = make_classification(n=2_400, d=D, classes=CLASSES, seed=31, offset=0.0)
    x, y, test_x, test_y = x[:2_000], y[:2_000], x[2_000:], y[2_000:]
    return x, y, federated.dirichlet_partition(y, 20, 0.3, seed=2), test_x, test_y


def run(federation, method, **options):
    x, y, parts, test_x, test_y = federation
    settings = dict(rounds=8, local_epochs=1, client_fraction=0.5, learning_rate=0.05, progress=False)
    return run_federated_gradient(x, y, parts, test_x, test_y, method=method, **{**settings, **options})


@pytest.mark.parametrize("method", ["fedavg", "fedprox", "scaffold"])
def test_method_learns_above_chance(method, federation):
    record = run(federation, method)
    assert len(record.accuracy) == 8
    assert record.accuracy[-1] > 0.6  # chance is 0.25


def test_fedprox_with_zero_mu_is_fedavg(federation):
    plain, proximal = run(federation, "fedavg"), run(federation, "fedprox", mu=0.0)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(proximal.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bytes_and_time_accumulate_per_round(federation):
    record = run(federation, "scaffold", rounds=3)
    model_bytes = (D * len(CLASSES) + len(CLASSES)) * 4
    sampled = 10  # half of the 20 clients, none empty at α = 0.3 here
    assert record.bytes_up == [2 * model_bytes * sampled * r for r in (1, 2, 3)]
    assert record.bytes_down == record.bytes_up
    assert np.all(np.diff(record.seconds) > 0)


def test_early_stop_at_target(federation):
    record = run(federation, "fedavg", rounds=50, stop_at=0.5)
    assert record.accuracy[-1] >= 0.5 and len(record.accuracy) < 50
    assert record.first_round_reaching(0.5) == len(record.accuracy)

"""Differential privacy for the federated statistics: accounting against dp-accounting, clipping, the noise's scale
and symmetry, positive definiteness after the projection, exactness at ε = ∞, distributed shares and bad input."""

import math

import dp_accounting
import jax
import numpy as np
import pytest
import scipy.linalg

import analytic
import federated
from federated import privacy
from federated.baselines import run_federated_gradient
from test_federated_secure import secure_sum
from conftest import make_classification, one_hot_columns, relative_error



def clipped_clients(n=400, d=12, clip=3.0, n_clients=5, frac_bits=None, seed=0):
    features, labels = make_classification(n=n, d=d, seed=seed)
    features = federated.clip_features(features, clip, frac_bits=frac_bits)
    return features, labels, federated.iid_partition(n, n_clients, seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# Accounting


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_calibrated_epsilon_matches_dp_accounting_called_directly(accountant):
    delta = 1e-5
    for epsilon in (0.5, 2.0, 8.0) if accountant == "rdp" else (1.0,):  # PLD calibrations take seconds each
        calibration = federated.calibrate_noise(epsilon, delta, 1.0, accountant=accountant)
        make = (dp_accounting.rdp.RdpAccountant if accountant == "rdp"
                else lambda: dp_accounting.pld.PLDAccountant(value_discretization_interval=privacy.PLD_INTERVAL))
        direct = make().compose(dp_accounting.GaussianDpEvent(calibration.noise_multiplier)).get_epsilon(delta)
        assert direct <= epsilon + 1e-9  # never more than the target
        assert direct == pytest.approx(epsilon, rel=1e-4)  # and not needlessly noisy
    if accountant == "pld":  # the PLD accountant is close to the exact Gaussian mechanism (Balle & Wang 2018)
        exact = dp_accounting.get_sigma_gaussian(1.0, delta)
        assert exact <= calibration.noise_multiplier <= exact * (1 + 1e-3)


def test_epsilon_is_monotone_in_the_noise():
    noise = np.geomspace(0.3, 20, 12)
    epsilons = [federated.gaussian_epsilon(z, 1e-5) for z in noise]
    assert np.all(np.diff(epsilons) < 0)
    assert federated.gaussian_epsilon(0.0, 1e-5) == math.inf


def test_dp_fedavg_accounting_matches_dp_accounting():
    z, q, rounds, delta = 1.1, 0.1, 30, 1e-5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
    direct = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta)
    assert federated.gaussian_epsilon(z, delta, sampling_rate=q, rounds=rounds) == pytest.approx(direct, rel=1e-12)
    calibrated = federated.calibrate_noise_multiplier(2.0, delta, sampling_rate=q, rounds=rounds)
    assert federated.gaussian_epsilon(calibrated, delta, sampling_rate=q, rounds=rounds) == pytest.approx(2.0, rel=1e-4)


def test_distributed_accounting_is_zcdp_of_the_surviving_shares():
    calibration = federated.calibrate_distributed_noise(1.0, 1e-5, 2.0, 20, 8, 3)
    rho = 1 / (2 * calibration.noise_multiplier**2)
    direct = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.ZCDpEvent(rho)).get_epsilon(1e-5)
    assert federated.distributed_epsilon(calibration, 20, 8, 3) == pytest.approx(direct, rel=1e-9)
    assert direct == pytest.approx(1.0, rel=1e-4)
    # dropouts below K_min weaken the guarantee exactly as ρ·K_min/K_s; more survivors strengthen it
    fewer = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.ZCDpEvent(rho * 20 / 10)).get_epsilon(1e-5)
    assert federated.distributed_epsilon(calibration, 10, 8, 3) == pytest.approx(fewer, rel=1e-9)
    assert federated.distributed_epsilon(calibration, 40, 8, 3) < 1.0 < fewer


# ---------------------------------------------------------------------------------------------------------------
# Clipping, the noise, symmetry


def test_clipping_bounds_every_norm_and_keeps_directions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)) * rng.uniform(0.01, 10, size=(500, 1))
    clipped = federated.clip_features(x, 2.5)
    norms, before = np.linalg.norm(clipped, axis=1), np.linalg.norm(x, axis=1)
    assert norms.max() <= 2.5 * (1 + 1e-15)
    np.testing.assert_array_equal(clipped[before <= 2.5], x[before <= 2.5])  # short rows untouched
    np.testing.assert_allclose(norms[before > 2.5], 2.5, rtol=1e-14)
    np.testing.assert_allclose(clipped / norms[:, None], x / before[:, None], rtol=1e-13)
    on_grid = federated.clip_features(x, 2.5, frac_bits=6)
    assert np.linalg.norm(on_grid, axis=1).max() <= 2.5  # truncation toward zero: never above C
    np.testing.assert_array_equal(on_grid * 64, np.round(on_grid * 64))


def test_sensitivity_of_one_sample_is_within_the_bound():
    rng = np.random.default_rng(1)
    for x in [federated.clip_features(rng.normal(size=(1, 9)), 1.5)[0], np.eye(9)[3] * 1.5]:
        gram_change = np.triu(np.outer(x, x))[np.triu_indices(9)]
        assert np.linalg.norm(gram_change) <= 1.5**2 * (1 + 1e-12)
        assert np.linalg.norm(np.outer(x, np.eye(4)[2])) <= 1.5 * (1 + 1e-12)
    assert np.linalg.norm(np.triu(np.outer(np.eye(9)[3], np.eye(9)[3]))) == 1.0  # tight along an axis


def test_client_level_sensitivity_is_within_m_times_the_sample_bound():
    rng = np.random.default_rng(2)
    clip, m = 1.5, 7
    for rows in [rng.normal(size=(m, 9)), np.tile(np.eye(9)[3], (m, 1))]:  # the second: tight
        x = federated.clip_features(rows, clip)
        y = np.eye(4)[np.zeros(m, int)]  # one class: the cross-moment's change is largest
        gram_change = np.triu(x.T @ x)[np.triu_indices(9)]
        assert np.linalg.norm(gram_change) <= m * clip**2 * (1 + 1e-12)
        assert np.linalg.norm(x.T @ y) <= m * clip * (1 + 1e-12)
    sample = federated.calibrate_noise(2.0, 1e-5, clip, accountant="rdp")
    client = federated.calibrate_noise(2.0, 1e-5, clip, accountant="rdp", max_samples=m)
    assert client.noise_multiplier == sample.noise_multiplier
    assert client.gram_std == pytest.approx(m * sample.gram_std, rel=1e-12)
    assert client.cross_std == pytest.approx(m * sample.cross_std, rel=1e-12)


def test_client_level_shares_refuse_a_client_over_its_cap_and_cap_samples_keeps_it():
    d, m = 4, 5
    calibration = federated.calibrate_distributed_noise(2.0, 1e-4, 1.0, 10, d, 2, frac_bits=8, max_samples=m)
    central = federated.calibrate_distributed_noise(2.0, 1e-4, 1.0, 10, d, 2, frac_bits=8)
    assert calibration.gram_std == pytest.approx(m * central.gram_std, rel=1e-12)
    x = federated.clip_features(np.random.default_rng(0).normal(size=(12, d)), 1.0, frac_bits=8)
    y = np.arange(12) % 2
    over = federated.client_statistics(x, y, d, precision="fixed", frac_bits=8)
    with pytest.raises(analytic.InputError, match="at most 5 samples per client, got 12"):
        federated.noisy_share(over, calibration, [0, 1], seed=0)
    kept = federated.cap_samples(12, m, seed=1)
    assert kept.size == m and np.unique(kept).size == m and np.all(np.diff(kept) > 0)
    capped = federated.client_statistics(x[kept], y[kept], d, precision="fixed", frac_bits=8)
    assert int(federated.noisy_share(capped, calibration, [0, 1], seed=0)["count"]) == 0
    np.testing.assert_array_equal(federated.cap_samples(3, m), [0, 1, 2])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(analytic.InputError, match="max_samples"):
            federated.calibrate_noise(1.0, 1e-5, 1.0, max_samples=bad)


def test_noise_has_the_calibrated_std_and_a_symmetric_gram():
    d, m = 60, 4
    stats = analytic.with_classes(analytic.init_statistics(d), np.arange(m))
    calibration = federated.calibrate_noise(1.0, 1e-5, 2.0, gram_share=0.7, accountant="rdp")
    release = federated.privatize_statistics(stats, calibration, seed=3)
    np.testing.assert_array_equal(release.gram, release.gram.T)
    entries = release.gram[np.triu_indices(d)]  # 1,830 independent entries
    assert release.gram_std == pytest.approx(calibration.noise_multiplier * 4 / math.sqrt(0.7), rel=1e-12)
    assert release.cross_std == pytest.approx(calibration.noise_multiplier * 2 / math.sqrt(0.3), rel=1e-12)
    # the sample std of k normal draws is within 4 standard errors σ/√(2k) of σ
    assert abs(entries.std() / release.gram_std - 1) < 4 / math.sqrt(2 * entries.size)
    assert abs(entries.mean()) < 4 * release.gram_std / math.sqrt(entries.size)
    big = federated.privatize_statistics(analytic.with_classes(analytic.init_statistics(5), np.arange(400)),
                                         calibration, seed=4).cross
    assert abs(big.std() / release.cross_std - 1) < 4 / math.sqrt(2 * big.size)


def test_discrete_gaussian_matches_its_distribution():
    draws = federated.sample_discrete_gaussian(1.5, 200_000, seed=0)
    support = np.arange(-12, 13)
    expected = np.exp(-(support**2) / (2 * 1.5**2))
    expected /= expected.sum()
    observed = np.array([(draws == k).mean() for k in support])
    assert np.abs(observed - expected).max() < 5 * np.sqrt(expected.max() / draws.size)


def test_distributed_shares_sum_to_the_central_variance():
    d, m, k_min = 6, 2, 25
    calibration = federated.calibrate_distributed_noise(2.0, 1e-4, 1.0, k_min, d, m, frac_bits=4)
    empty = analytic.init_statistics(d, precision="fixed", frac_bits=4)
    shares = [federated.noisy_share(empty, calibration, [0, 1], seed=(7, k)) for k in range(40)]
    for survivors in (k_min, 40):  # K_min shares carry the central noise; more carry more
        total = {name: sum(s[name] for s in shares[:survivors]) for name in ("gram", "cross")}
        release = federated.release_from_sum({**total, "class_ids": shares[0]["class_ids"]}, d, calibration, survivors)
        assert release.gram_std == pytest.approx(calibration.gram_std * math.sqrt(survivors / k_min), rel=1e-12)
    grams = np.stack([s["gram"] for s in shares]).astype(np.float64) * 2.0**-8  # 40 clients × 21 entries
    sums = np.stack([grams[i : i + k_min].sum(axis=0) for i in range(0, 15)])  # overlapping windows: one check
    local = grams.std()
    assert abs(local / (calibration.gram_std / math.sqrt(k_min)) - 1) < 4 / math.sqrt(2 * grams.size)
    assert abs(sums.std() / calibration.gram_std - 1) < 0.25


def test_distributed_release_through_secure_aggregation_with_a_dropout():
    features, labels, parts = clipped_clients(n=120, d=5, clip=2.0, n_clients=4, frac_bits=10)
    calibration = federated.calibrate_distributed_noise(4.0, 1e-3, 2.0, 3, 5, 4, frac_bits=10)
    shares = {f"c{k}": federated.noisy_share(federated.client_statistics(features[p], labels[p], 5, precision="fixed",
                                                                          frac_bits=10), calibration, [0, 3, 7, 11],
                                             seed=k) for k, p in enumerate(parts)}
    total, _ = secure_sum(shares, dropped=["c2"])
    plain = {name: sum(shares[k][name] for k in ("c0", "c1", "c3")) for name in ("gram", "cross")}
    np.testing.assert_array_equal(total["gram"], plain["gram"])  # the masks cancel: the survivors' noisy sum
    np.testing.assert_array_equal(total["cross"], plain["cross"])
    assert int(total["count"]) == 0 and not np.any(total["class_counts"])  # counts are not released
    release = federated.release_from_sum(total, 5, calibration, 3)
    survivors = np.concatenate([parts[k] for k in (0, 1, 3)])
    noise = release.gram - features[survivors].T @ features[survivors]
    assert 0 < np.abs(noise).max() < 8 * release.gram_std
    assert federated.distributed_epsilon(calibration, 3, 5, 4) == pytest.approx(4.0, rel=1e-4)
    assert federated.distributed_epsilon(calibration, 2, 5, 4) > 4.0  # one more dropout: weaker


# ---------------------------------------------------------------------------------------------------------------
# Positive definiteness and exactness


def test_projection_makes_the_noisy_gram_positive_definite():
    features, labels, _ = clipped_clients(n=40, d=30, clip=1.0)
    stats = analytic.accumulate(analytic.init_statistics(30), features, labels)
    calibration = federated.calibrate_noise(0.5, 1e-3, 1.0, accountant="rdp")
    release = federated.privatize_statistics(stats, calibration, seed=0)
    ridge = 0.1
    assert np.linalg.eigvalsh(release.gram + ridge * np.eye(30)).min() < 0  # the noise broke definiteness
    with pytest.raises(np.linalg.LinAlgError):
        scipy.linalg.cholesky(release.gram + ridge * np.eye(30))
    head = federated.solve_private(release, ridge)
    values, vectors = np.linalg.eigh(release.gram)
    projected = vectors @ np.diag(np.clip(values, 0, None)) @ vectors.T  # the oracle's projection
    assert np.linalg.eigvalsh(projected + ridge * np.eye(30)).min() >= ridge * (1 - 1e-9)
    expected = np.linalg.solve(projected + ridge * np.eye(30), release.cross)
    assert relative_error(head.weights, expected) < 1e-10
    gram = features.T @ features  # the projection never moves the release away from the true G
    assert np.linalg.norm(projected - gram) <= np.linalg.norm(release.gram - gram)


def test_spectral_bound_covers_the_noise_and_keeps_cholesky_alive():
    d = 80
    stats = analytic.with_classes(analytic.init_statistics(d), np.arange(3))
    calibration = federated.calibrate_noise(1.0, 1e-5, 1.0, accountant="rdp")
    norms = []
    for seed in range(20):
        release = federated.privatize_statistics(stats, calibration, seed=seed)
        bound = federated.noise_spectral_bound(release, failure_probability=0.01)
        norms.append(np.linalg.norm(release.gram, 2))
        scipy.linalg.cholesky(release.gram + bound * np.eye(d))  # positive definite without the projection
    assert max(norms) <= bound
    assert np.mean(norms) > 0.8 * 2 * math.sqrt(d) * calibration.gram_std  # the 2σ√d leading term is near tight


def test_infinite_epsilon_is_the_exact_federated_ridge_head():
    features, labels, parts = clipped_clients(n=600, d=16, clip=4.0, n_clients=7)
    class_ids = np.unique(labels)
    uploads = [(k, federated.encode_statistics(federated.client_statistics(features[p], labels[p], 16), class_ids))
               for k, p in enumerate(parts)]
    aggregate, rejected = federated.receive_many(federated.init_aggregate(16, class_ids), uploads)
    assert not rejected
    release = federated.privatize_statistics(aggregate.statistics, federated.calibrate_noise(math.inf, 1e-3, 4.0))
    head = federated.solve_private(release, 0.5)
    oracle = np.linalg.solve(features.T @ features + 0.5 * np.eye(16), features.T @ one_hot_columns(labels, class_ids))
    assert relative_error(head.weights, oracle) < 1e-12
    np.testing.assert_array_equal(head.class_ids, class_ids)


def test_infinite_epsilon_distributed_is_the_exact_fixed_point_sum():
    features, labels, parts = clipped_clients(n=200, d=6, clip=2.0, n_clients=4, frac_bits=12)
    class_ids = np.unique(labels)
    calibration = federated.calibrate_distributed_noise(math.inf, 1e-3, 2.0, 4, 6, class_ids.size)
    shares = {f"c{k}": federated.noisy_share(federated.client_statistics(features[p], labels[p], 6, precision="fixed"),
                                             calibration, class_ids) for k, p in enumerate(parts)}
    release = federated.release_from_sum(secure_sum(shares)[0], 6, calibration, 4)
    np.testing.assert_array_equal(release.gram, features.T @ features)  # exact: grid values, exact products
    np.testing.assert_array_equal(release.cross, features.T @ one_hot_columns(labels, class_ids))


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("clip", [0.0, -1.0, math.nan, "1"])
def test_bad_clip_norm_is_refused(clip):
    x = np.ones((3, 2))
    with pytest.raises(analytic.InputError, match="clip_norm"):
        federated.clip_features(x, clip)
    with pytest.raises(analytic.InputError, match="clip_norm"):
        federated.calibrate_noise(1.0, 1e-3, clip)
    np.testing.assert_array_equal(x, np.ones((3, 2)))


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, -math.inf])
def test_bad_epsilon_is_refused(epsilon):
    with pytest.raises(analytic.InputError, match="epsilon"):
        federated.calibrate_noise(epsilon, 1e-3, 1.0)
    with pytest.raises(analytic.InputError, match="epsilon"):
        federated.calibrate_distributed_noise(epsilon, 1e-3, 1.0, 4, 3, 2)


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_bad_delta_is_refused(delta):
    with pytest.raises(analytic.InputError, match="delta"):
        federated.calibrate_noise(1.0, delta, 1.0)
    with pytest.raises(analytic.InputError, match="delta"):
        federated.gaussian_epsilon(1.0, delta)


def test_nan_features_are_refused_and_nothing_changes():
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    before = x.copy()
    with pytest.raises(analytic.InputError, match="NaN"):
        federated.clip_features(x, 1.0)
    np.testing.assert_array_equal(x, before)


def test_wrong_statistics_or_calibration_leave_the_state_intact():
    features, labels, _ = clipped_clients(n=50, d=4, clip=1.0)
    stats = analytic.accumulate(analytic.init_statistics(4), features, labels)
    digest = analytic.state_hash(stats)
    distributed = federated.calibrate_distributed_noise(1.0, 1e-3, 1.0, 2, 4, 4)
    with pytest.raises(analytic.InputError, match="distributed calibration"):
        federated.privatize_statistics(stats, distributed)
    with pytest.raises(analytic.InputError, match="fixed-point grid"):
        federated.noisy_share(stats, distributed, stats.class_ids)
    with pytest.raises(analytic.InputError, match="distributed calibration"):
        federated.noisy_share(stats, federated.calibrate_noise(1.0, 1e-3, 1.0, accountant="rdp"), stats.class_ids)
    regression = analytic.accumulate(analytic.init_statistics(4, n_targets=1), features, features[:, 0])
    with pytest.raises(analytic.InputError, match="classification"):
        federated.privatize_statistics(regression, federated.calibrate_noise(1.0, 1e-3, 1.0, accountant="rdp"))
    release = federated.privatize_statistics(stats, federated.calibrate_noise(math.inf, 1e-3, 1.0))
    with pytest.raises(analytic.InputError, match="ridge"):
        federated.solve_private(release, 0.0)
    assert analytic.state_hash(stats) == digest


# ---------------------------------------------------------------------------------------------------------------
# DP-FedAvg


def test_dp_fedavg_clips_every_client_update():
    features, labels, parts = clipped_clients(n=300, d=8, clip=5.0, n_clients=10)
    labels = np.searchsorted(np.unique(labels), labels)
    common = dict(rounds=3, client_fraction=0.5, learning_rate=5.0, batch_size=8, progress=False, seed=1)
    free = run_federated_gradient(features, labels, parts, features, labels, **common)
    clipped = run_federated_gradient(features, labels, parts, features, labels, update_clip=1e-3, **common)
    start = analytic.gradient.init_head(8, 4, seed=1)
    moved = lambda run: math.sqrt(sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))  # noqa: E731
                                      for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(start))))
    # each round moves θ by at most (sampled clients) · S / (qN) ≤ 10 · 1e-3 / 5
    assert moved(clipped) <= 3 * 10 * 1e-3 / 5 + 1e-6
    assert moved(free) > 1.0
    with pytest.raises(analytic.InputError, match="fedavg"):
        run_federated_gradient(features, labels, parts, features, labels, method="fedprox", update_clip=1.0,
                               **common)

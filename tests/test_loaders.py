"""Datasets read from a user's local path: image folders (ImageNet-R / -A, CUB, OmniBenchmark, VTAB) and CIFAR pickles,
on small trees written here."""

import pickle

import numpy as np
import pytest
from PIL import Image

from analytic import data


def write_image_folder(root, classes, per_class=(2, 1), side=6):
    """``root/train/<class>/*.png`` and ``root/test/<class>/*.png``: each class one solid colour."""
    for split, count in zip(("train", "test"), per_class):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                Image.new("RGB", (side + k, side), (index * 7 % 256, 40, 200)).save(folder / f"{k}.png")
    return root


def write_cifar(root, n_classes, per_class=(2, 1)):
    """A ``cifar-100-python`` (or ``cifar-10-batches-py``) folder of the official pickle layout."""
    rng = np.random.default_rng(0)
    if n_classes == 100:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split, count in zip(("train", "test"), per_class):
            labels = np.repeat(np.arange(100), count).tolist()
            batch = {b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"fine_labels": labels,
                     b"coarse_labels": [label // 5 for label in labels]}
            (folder / split).write_bytes(pickle.dumps(batch))
        (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                                                    b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}))
        return folder
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = per_class[1] if name == "test_batch" else per_class[0]
        labels = np.repeat(np.arange(10), count).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
                                                  b"labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return folder


def test_image_folder_reads_classes_labels_and_resizes(tmp_path):
    write_image_folder(tmp_path / "imagenet-r", ["n02", "n01", "n03"])
    loaded = data.load_image_folder(tmp_path / "imagenet-r", size=5, name="imagenet_r")
    assert loaded.class_names == ("n01", "n02", "n03")
    assert loaded.train_images.shape == (6, 5, 5, 3) and loaded.train_images.dtype == np.uint8
    assert loaded.train_labels.tolist() == [0, 0, 1, 1, 2, 2] and loaded.test_labels.tolist() == [0, 1, 2]
    # the colour of each class survives: class n02 (written second, index 0) has red 0
    assert loaded.train_images[2, 0, 0].tolist() == [0, 40, 200]


@pytest.mark.parametrize("name", sorted(data.IMAGE_FOLDERS))
def test_each_image_folder_dataset_by_name_from_the_parent_folder_or_its_variable(tmp_path, monkeypatch, name):
    folder, variable = data.IMAGE_FOLDERS[name]
    write_image_folder(tmp_path / folder, ["a", "b"])
    by_path = data.load_dataset(name, path=tmp_path, size=4)
    assert by_path.name == name and by_path.train_images.shape == (4, 4, 4, 3)
    assert data.check_dataset(name, tmp_path) == str(tmp_path / folder)
    monkeypatch.setenv(variable, str(tmp_path / folder))
    assert data.load_dataset(name, size=4).test_labels.tolist() == [0, 1]


@pytest.mark.parametrize("name", sorted(data.IMAGE_FOLDERS))
def test_a_missing_image_folder_names_the_path_and_the_variable(tmp_path, monkeypatch, name):
    folder, variable = data.IMAGE_FOLDERS[name]
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(data.DatasetNotFoundError, match=f"(?s){folder} not found.*looked in.*{variable}=DIR"):
        data.load_dataset(name, path=tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="no directory was given"):
        data.check_dataset(name)


def test_an_image_folder_with_an_unknown_test_class_or_no_images_is_refused(tmp_path):
    write_image_folder(tmp_path / "cub", ["a", "b"])
    (tmp_path / "cub" / "test" / "z").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "cub" / "test" / "z" / "0.png")
    with pytest.raises(ValueError, match="class 'z' is not among the training classes"):
        data.load_image_folder(tmp_path / "cub")
    empty = tmp_path / "empty"
    for split in ("train", "test"):
        (empty / split / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        data.load_image_folder(empty)


@pytest.mark.parametrize("n_classes", [10, 100])
def test_cifar_pickles_from_the_parent_folder(tmp_path, n_classes):
    write_cifar(tmp_path, n_classes)
    name = f"cifar{n_classes}"
    loaded = data.load_dataset(name, path=tmp_path)
    train_per_class = 2 * (5 if n_classes == 10 else 1)
    assert loaded.train_images.shape == (n_classes * train_per_class, 32, 32, 3)
    assert np.bincount(loaded.test_labels).tolist() == [1] * n_classes
    assert data.check_dataset(name, tmp_path).endswith(("cifar-10-batches-py", "cifar-100-python"))


def test_check_dataset_finds_packaged_data_and_refuses_unknown_names():
    assert data.check_dataset("mnist1d") == "pip package mnist1d"
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
        data.check_dataset("cifar1000")

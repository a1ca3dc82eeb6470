"""A ledger of sample fingerprints: the multiset of samples a head has learned, so it can refuse to forget others.

A fingerprint is a 16-byte BLAKE3 digest of the sample's float64 feature bytes, its target bytes and the source
it was learned under. The ledger keeps sorted unique fingerprints with their multiplicities (a sample learned twice
must be forgotten twice), plus the class label of each (to forget a whole class) and its source (to forget a
source). It is a pytree of NumPy arrays, like the statistics it guards.
"""

from __future__ import annotations

import dataclasses
import functools

import blake3
import jax
import numpy as np

import analytic

FINGERPRINT_BYTES = 16
_FINGERPRINT_DTYPE = f"S{FINGERPRINT_BYTES}"


@functools.partial(jax.tree_util.register_dataclass, data_fields=["fingerprints", "counts", "labels", "sources"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SampleLedger:
    """Multiset of learned samples.

    Attributes:
      fingerprints: (u,) sorted unique 16-byte digests.
      counts: (u,) int64 multiplicity of each.
      labels: (u,) int64 class id of each sample (−1 for regression targets).
      sources: (u,) int64 index of the source each was learned under (−1 when untracked).
    """

    fingerprints: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    sources: np.ndarray

    @property
    def size(self) -> int:
        """Number of samples held (with multiplicity)."""
        return int(self.counts.sum())


def init_ledger() -> SampleLedger:
    """A ledger holding no samples."""
    return SampleLedger(
        fingerprints=np.zeros(0, _FINGERPRINT_DTYPE),
        counts=np.zeros(0, np.int64),
        labels=np.zeros(0, np.int64),
        sources=np.zeros(0, np.int64),
    )


def sample_fingerprints(features: np.ndarray, targets: np.ndarray, source: int) -> np.ndarray:
    """(n,) fingerprints of the rows ``(features[i], targets[i])`` learned under source index ``source``."""
    rows = np.ascontiguousarray(features, dtype=np.float64)
    values = np.ascontiguousarray(np.asarray(targets).reshape(rows.shape[0], -1).astype(np.float64))
    tag = int(source).to_bytes(8, "little", signed=True)
    digests = [blake3.blake3(row.tobytes() + value.tobytes() + tag).digest(FINGERPRINT_BYTES)
               for row, value in zip(rows, values)]
    return np.array(digests, dtype=_FINGERPRINT_DTYPE)


def record(ledger: SampleLedger, fingerprints: np.ndarray, labels: np.ndarray, source: int) -> SampleLedger:
    """The ledger with the samples ``fingerprints`` (labels, one source) added."""
    keys = np.concatenate([ledger.fingerprints, fingerprints])
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    counts = np.bincount(inverse, weights=np.concatenate([ledger.counts, np.ones(fingerprints.size)]),
                         minlength=unique.size).astype(np.int64)
    all_labels = np.concatenate([ledger.labels, np.asarray(labels, np.int64)])
    all_sources = np.concatenate([ledger.sources, np.full(fingerprints.size, source, np.int64)])
    return SampleLedger(fingerprints=unique, counts=counts, labels=all_labels[first], sources=all_sources[first])


def erase(ledger: SampleLedger, fingerprints: np.ndarray) -> SampleLedger:
    """The ledger without the samples ``fingerprints``.

    Raises:
      analytic.IntegrityError: a sample (or one more copy of it than was learned) is not in the ledger.
    """
    unique, requested = np.unique(fingerprints, return_counts=True)
    positions = np.searchsorted(ledger.fingerprints, unique)
    positions = np.minimum(positions, max(ledger.fingerprints.size - 1, 0))
    known = (ledger.fingerprints.size > 0) & (ledger.fingerprints[positions] == unique)
    if not known.all():
        missing = int(np.flatnonzero(~known).size)
        raise analytic.IntegrityError(
            f"{missing} of the samples to forget were never learned by this head (not in its ledger)"
        )
    if (ledger.counts[positions] < requested).any():
        raise analytic.IntegrityError("a sample is forgotten more times than it was learned (ledger count)")
    counts = ledger.counts.copy()
    counts[positions] -= requested
    return _keep(ledger, counts > 0, counts)


def erase_where(ledger: SampleLedger, mask: np.ndarray) -> SampleLedger:
    """The ledger without the entries selected by ``mask`` (a whole class or a whole source)."""
    return _keep(ledger, ~mask, ledger.counts)


def _keep(ledger: SampleLedger, keep: np.ndarray, counts: np.ndarray) -> SampleLedger:
    return SampleLedger(
        fingerprints=ledger.fingerprints[keep],
        counts=counts[keep],
        labels=ledger.labels[keep],
        sources=ledger.sources[keep],
    )

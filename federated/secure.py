r"""Secure aggregation by pairwise additive masking: the server learns only the sum of the clients' statistics.

The fixed-point statistics (``precision="fixed"``) are integers, so masking is exact in modular arithmetic
(the pairwise-mask construction of Bonawitz et al., CCS 2017). Each client k flattens its integer upload into a
vector :math:`x_k \in \mathbb Z_{2^{64}}^L` (:func:`flatten_payload`) and, for every other client j, expands the
seed :math:`s_{kj} = s_{jk}` it shares with j into a uniform mask :math:`p_{kj} = \mathrm{PRG}(s_{kj})`:

.. math::
    y_k = x_k + \sum_{j > k} p_{kj} - \sum_{j < k} p_{jk} \pmod{2^{64}}, \qquad
    \sum_k y_k = \sum_k x_k \pmod{2^{64}},

because every mask is added once and subtracted once. The sum of the clients' int64 statistics stays below
:math:`2^{62}` (the core refuses larger totals), so its residue modulo :math:`2^{64}`, read as two's complement, is
the exact int64 sum: bit for bit the plain aggregate. A single :math:`y_k` is :math:`x_k` plus a uniform vector,
itself uniform over :math:`\mathbb Z_{2^{64}}^L` for anyone without the seeds.

Dropout recovery implemented here. If client d is dropped after the masks were fixed (its :math:`y_d` never
arrives), the survivors' masks shared with d no longer cancel. Each surviving client j then reveals its pair seed
:math:`s_{jd}` with the dropped client (never a seed between two survivors); the server regenerates those masks and
removes them (:func:`unmask_sum`), obtaining :math:`\sum_{k \ne d} x_k` exactly. Simplifications against the full
protocol, stated plainly: pair seeds stand for a Diffie-Hellman key agreement (here derived from one secret root,
:func:`pair_seed`, so a simulation can reproduce them); and without the protocol's self-masks and Shamir shares,
a dropped client whose upload arrives *after* its seeds were revealed would be exposed — the server must discard
late uploads from clients declared dropped.
"""

from __future__ import annotations

import numpy as np

import analytic
from federated.payload import ADDITIVE_FIELDS, UploadRejected, init_payload


def flatten_payload(payload: dict[str, np.ndarray]) -> np.ndarray:
    """The integer fields of a fixed-point upload as one uint64 vector (two's complement of the int64 values)."""
    parts = []
    for name in ADDITIVE_FIELDS:
        value = np.asarray(payload[name])
        if value.dtype != np.int64:
            raise analytic.InputError(f"secure aggregation needs fixed-point (int64) uploads, {name!r} is {value.dtype}")
        parts.append(value.reshape(-1))
    return np.concatenate(parts).view(np.uint64)


def unflatten_payload(vector: np.ndarray, dim: int, class_ids) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten_payload` for dimension d and the agreed class ids."""
    template = init_payload(dim, class_ids, precision="fixed")  # the fields' shapes in a fixed-point upload
    expected = sum(template[name].size for name in ADDITIVE_FIELDS)
    if vector.shape != (expected,):
        raise UploadRejected(f"masked vector has {vector.size} words, expected {expected}")
    values = np.asarray(vector, np.uint64).view(np.int64)
    payload, start = {"class_ids": template["class_ids"]}, 0
    for name in ADDITIVE_FIELDS:
        size = template[name].size
        payload[name] = values[start : start + size].reshape(template[name].shape).copy()
        start += size
    return payload


def pair_seed(root: int, a: str, b: str) -> np.random.SeedSequence:
    """The seed :math:`s_{ab} = s_{ba}` two clients share (stands for a key agreement; derived from ``root``)."""
    low, high = sorted((a, b))
    words = [int.from_bytes(name.encode(), "little") for name in (low, high)]
    return np.random.SeedSequence(entropy=root, spawn_key=words)


def pair_mask(seed: np.random.SeedSequence, length: int) -> np.ndarray:
    """:math:`\\mathrm{PRG}(s)`: ``length`` uniform uint64 words from a Philox counter generator."""
    return np.random.Philox(seed).random_raw(length).astype(np.uint64, copy=False)


def mask_upload(vector: np.ndarray, client_id: str, peers, root: int) -> np.ndarray:
    r""":math:`y_k = x_k + \sum_{j > k} \mathrm{PRG}(s_{kj}) - \sum_{j < k} \mathrm{PRG}(s_{jk}) \pmod{2^{64}}`."""
    masked = np.array(vector, np.uint64)
    for peer in peers:
        if peer == client_id:
            continue
        mask = pair_mask(pair_seed(root, client_id, peer), masked.size)
        if client_id < peer:
            masked += mask  # uint64 arithmetic wraps modulo 2^64
        else:
            masked -= mask
    return masked


def unmask_sum(masked_uploads: dict[str, np.ndarray], dropped, revealed_seeds) -> np.ndarray:
    r"""Server side: :math:`\sum_{k \in S} y_k` minus the masks the survivors S shared with the dropped clients.

    Args:
      masked_uploads: survivor id → masked vector :math:`y_k`.
      dropped: ids of clients that were part of the masking but sent nothing.
      revealed_seeds: ``(survivor, dropped) → seed`` revealed by each survivor for each dropped client.

    Returns:
      :math:`\sum_{k \in S} x_k` as uint64 (read as int64 with ``.view(np.int64)``).
    """
    total = np.zeros_like(next(iter(masked_uploads.values())))
    for vector in masked_uploads.values():
        total += vector
    for survivor in masked_uploads:
        for lost in dropped:
            if (survivor, lost) not in revealed_seeds:
                raise analytic.IntegrityError(f"client {survivor!r} has not revealed its seed with dropped {lost!r}")
            mask = pair_mask(revealed_seeds[(survivor, lost)], total.size)
            # survivor added +mask if survivor < lost, else −mask: undo it.
            if survivor < lost:
                total -= mask
            else:
                total += mask
    return total


def secure_round(payloads: dict[str, dict], dim: int, class_ids, *, root: int, dropped=()) -> dict[str, np.ndarray]:
    """One simulated secure-aggregation round over fixed-point uploads; returns the payload of the survivors' sum.

    Every client in ``payloads`` masks against every other; the clients in ``dropped`` then fail to send, the
    survivors reveal their seeds with them, and the server unmasks. Decode the result with
    :func:`federated.payload.decode_statistics` (``precision="fixed"``), which also validates it.
    """
    class_ids = np.asarray(class_ids, np.int64)
    members = sorted(payloads)
    dropped = set(dropped)
    unknown = dropped.difference(members)
    if unknown:
        raise analytic.InputError(f"dropped clients {sorted(unknown)} are not part of the round")
    for client_id in members:
        if not np.array_equal(payloads[client_id]["class_ids"], class_ids):
            raise UploadRejected(f"client {client_id!r} is not aligned to the agreed class ids")
    masked = {
        k: mask_upload(flatten_payload(payloads[k]), k, members, root) for k in members if k not in dropped
    }
    revealed = {(k, lost): pair_seed(root, k, lost) for k in masked for lost in dropped}
    return unflatten_payload(unmask_sum(masked, dropped, revealed), dim, class_ids)

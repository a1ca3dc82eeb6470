r"""Splitting a labelled dataset across clients: the federated partitions the field evaluates on.

Every partitioner returns a list of ``n_clients`` sorted int64 index arrays that together cover every sample
exactly once, fixed by ``seed``. Clients with fewer samples than feature dimensions, and empty clients, are normal
outcomes of skewed splits, not errors: the analytic aggregate does not depend on the split (the AFL paper).

* :func:`iid_partition` — a random permutation cut into equal parts.
* :func:`dirichlet_partition` — label skew: for each class, the share of each client is drawn from
  :math:`\mathrm{Dir}(\alpha \mathbf 1_K)`; α = 0.01 gives clients holding almost a single class.
* :func:`shard_partition` — pathological shards: each client receives ``classes_per_client`` single-class shards,
  so it holds 1 or 2 classes.
* :func:`quantity_skew_partition` — IID labels, client sizes drawn from :math:`\mathrm{Dir}(\alpha \mathbf 1_K)`.
"""

from __future__ import annotations

import numpy as np

from analytic import InputError


def _check_clients(n_samples: int, n_clients: int) -> None:
    if int(n_clients) < 1:
        raise InputError(f"n_clients must be a positive integer, got {n_clients}")
    if int(n_samples) < 0:
        raise InputError(f"n_samples must be non-negative, got {n_samples}")


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
    return labels


def _split_by_counts(indices: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.cumsum(counts)[:-1])


def _proportional_counts(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (largest remainders get the leftovers)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    leftover = total - counts.sum()
    counts[np.argsort(counts - exact, kind="stable")[:leftover]] += 1
    return counts


def _collect(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]


def iid_partition(n_samples: int, n_clients: int, *, seed: int = 0) -> list[np.ndarray]:
    """Uniformly random split into ``n_clients`` parts whose sizes differ by at most one."""
    _check_clients(n_samples, n_clients)
    order = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_clients)]


def dirichlet_partition(labels, n_clients: int, alpha: float, *, seed: int = 0) -> list[np.ndarray]:
    r"""Label skew: class c's samples are dealt to clients in proportions :math:`p_c \sim \mathrm{Dir}(\alpha)`."""
    labels = _check_labels(labels)
    _check_clients(labels.size, n_clients)
    if not alpha > 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n_clients, float(alpha)))
        for client, chunk in enumerate(_split_by_counts(members, _proportional_counts(members.size, shares))):
            parts[client].append(chunk)
    return _collect(parts)


def shard_partition(labels, n_clients: int, *, classes_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Pathological non-IID: ``n_clients · classes_per_client`` single-class shards, dealt at random.

    Each class is cut into a number of shards proportional to its size (at least one), so every client holds
    at most ``classes_per_client`` classes (fewer when two of its shards share a class).
    """
    labels = _check_labels(labels)
    _check_clients(labels.size, n_clients)
    classes = np.unique(labels)
    n_shards = int(n_clients) * int(classes_per_client)
    if n_shards < classes.size:
        raise InputError(
            f"{n_clients} clients × {classes_per_client} shards cannot cover {classes.size} classes: "
            "raise classes_per_client or the number of clients"
        )
    rng = np.random.default_rng(seed)
    sizes = np.array([np.count_nonzero(labels == c) for c in classes])
    shards_per_class = 1 + _proportional_counts(n_shards - classes.size, sizes.astype(np.float64))
    shards = []
    for c, count in zip(classes, shards_per_class):
        members = rng.permutation(np.flatnonzero(labels == c))
        shards.extend(np.array_split(members, count))
    order = rng.permutation(n_shards)
    return _collect([[shards[s] for s in order[k::n_clients]] for k in range(n_clients)])


def quantity_skew_partition(n_samples: int, n_clients: int, alpha: float, *, seed: int = 0) -> list[np.ndarray]:
    r"""Quantity skew: IID samples, client sizes proportional to :math:`q \sim \mathrm{Dir}(\alpha)`."""
    _check_clients(n_samples, n_clients)
    if not alpha > 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    counts = _proportional_counts(int(n_samples), rng.dirichlet(np.full(n_clients, float(alpha))))
    return [np.sort(part).astype(np.int64) for part in _split_by_counts(rng.permutation(n_samples), counts)]


def make_partition(name: str, labels, n_clients: int, *, alpha: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """Partition by name: ``"iid"``, ``"dirichlet"`` (with ``alpha``), ``"shards"`` or ``"quantity"`` (``alpha``)."""
    labels = _check_labels(labels)
    if name == "iid":
        return iid_partition(labels.size, n_clients, seed=seed)
    if name == "dirichlet":
        return dirichlet_partition(labels, n_clients, alpha, seed=seed)
    if name == "shards":
        return shard_partition(labels, n_clients, seed=seed)
    if name == "quantity":
        return quantity_skew_partition(labels.size, n_clients, alpha, seed=seed)
    raise InputError(f"unknown partition {name!r}: use 'iid', 'dirichlet', 'shards' or 'quantity'")

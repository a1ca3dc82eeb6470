r"""Splitting a labelled dataset across clients: the federated partitions the field evaluates on.

Every partitioner returns a list of ``n_clients`` sorted int64 index arrays that together cover every sample
exactly once, fixed by ``seed``. Clients with fewer samples than feature dimensions, and empty clients, are normal
outcomes of skewed splits, not errors: the analytic aggregate does not depend on the split (the AFL paper). The
Dirichlet split nevertheless redraws by default until no client is empty, as the reference AFL and PFLlib data
code do (``min_size=0`` keeps the first draw, empty clients included).

* :func:`iid_partition` — a random permutation cut into equal parts.
* :func:`dirichlet_partition` — label skew: for each class, the share of each client is drawn from
  :math:`\mathrm{Dir}(\alpha \mathbf 1_K)`; α = 0.01 gives clients holding almost a single class. Redrawn until
  every client holds at least ``min_size`` samples (bounded by ``max_draws``).
* :func:`shard_partition` — pathological shards: each client receives ``classes_per_client`` single-class shards,
  so it holds 1 or 2 classes.
* :func:`quantity_skew_partition` — IID labels, client sizes drawn from :math:`\mathrm{Dir}(\alpha \mathbf 1_K)`.
"""

from __future__ import annotations

import numpy as np

from analytic import InputError
from analytic.internal import check_int, check_labels


def _check_clients(n_samples: int, n_clients: int) -> None:
    check_int("n_clients", n_clients)
    check_int("n_samples", n_samples, minimum=0)


def _check_labels(labels) -> np.ndarray:
    return check_labels(labels, np.shape(labels)[0] if np.ndim(labels) else 0)


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
    """Uniformly random split into ``n_clients`` parts whose sizes differ by at most one.

    The IID partition of REFERENCE.md §5 (federated): a random permutation of the sample indices cut into
    ``n_clients`` consecutive parts. More clients than samples leaves some clients empty.

    Args:
      n_samples: number of samples n ≥ 0.
      n_clients: number of clients K ≥ 1.
      seed: seed of the permutation.

    Returns:
      ``n_clients`` sorted int64 index arrays, disjoint, covering ``range(n_samples)`` once.

    Raises:
      analytic.InputError: ``n_samples`` or ``n_clients`` is not an integer, or is below 0 or 1 respectively.

    Example:
      >>> parts = iid_partition(10, 3)
      >>> [part.size for part in parts], parts[0]
      ([4, 3, 3], array([2, 4, 6, 7]))
      >>> np.array_equal(np.sort(np.concatenate(parts)), np.arange(10))
      True
    """
    _check_clients(n_samples, n_clients)
    order = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_clients)]


def dirichlet_partition(labels, n_clients: int, alpha: float, *, seed: int = 0, min_size: int = 1,
                        max_draws: int = 100) -> list[np.ndarray]:
    r"""Label skew: class c's samples are dealt to clients in proportions :math:`p_c \sim \mathrm{Dir}(\alpha)`,
    redrawn until every client holds at least ``min_size`` samples.

    One draw deals each class c (its samples in a random order) by
    :math:`p_c \sim \mathrm{Dir}(\alpha \mathbf 1_K)`, client k receiving :math:`\approx p_{c,k} n_c` of them (largest
    remainders get the leftovers). If some client then holds fewer than ``min_size`` samples, the whole partition is
    drawn again from the same generator — rejection sampling, as the reference AFL and PFLlib ``separate_data``
    do with ``least_samples = 1`` (they loop without bound) — so the result is the first draw that satisfies
    :math:`\min_k n_k \ge` ``min_size``, fixed by ``seed``. The first draw is the partition ``min_size=0`` returns.

    Args:
      labels: (n,) integer class labels.
      n_clients: number of clients K.
      alpha: Dirichlet concentration α > 0 (smaller: more skew).
      seed: seed of the draws.
      min_size: fewest samples any client may hold (default 1: no empty client; 0 accepts the first draw).
      max_draws: most partitions drawn before giving up.

    Returns:
      ``n_clients`` sorted int64 index arrays, disjoint, covering every sample once.

    Raises:
      InputError: bad labels, ``n_clients``, α, ``min_size`` or ``max_draws``; ``n_clients · min_size`` more than
        the number of samples (impossible); no draw within ``max_draws`` gave every client ``min_size`` samples
        (likely when α is small and clients many: raise α, lower ``min_size`` or pass ``min_size=0``).

    Example:
      >>> labels = np.repeat(np.arange(10), 1000)
      >>> sum(part.size == 0 for part in dirichlet_partition(labels, 100, 0.1, seed=1, min_size=0))
      1
      >>> sum(part.size == 0 for part in dirichlet_partition(labels, 100, 0.1, seed=1))
      0
    """
    labels = _check_labels(labels)
    _check_clients(labels.size, n_clients)
    if not alpha > 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    if not (isinstance(min_size, (int, np.integer)) and min_size >= 0):
        raise InputError(f"min_size must be a non-negative integer, got {min_size!r}")
    if not (isinstance(max_draws, (int, np.integer)) and max_draws >= 1):
        raise InputError(f"max_draws must be a positive integer, got {max_draws!r}")
    if int(n_clients) * int(min_size) > labels.size:
        raise InputError(f"{n_clients} clients with at least {min_size} samples each need "
                         f"{int(n_clients) * int(min_size)} samples, but there are {labels.size}")
    rng = np.random.default_rng(seed)
    for _ in range(int(max_draws)):
        parts = _dirichlet_draw(labels, int(n_clients), float(alpha), rng)
        if min(part.size for part in parts) >= min_size:
            return parts
    raise InputError(f"no Dirichlet(α={alpha}) partition in {max_draws} draws gave each of the {n_clients} clients "
                     f"at least {min_size} samples: raise alpha or max_draws, lower min_size, or pass min_size=0 to "
                     "accept empty clients")


def _dirichlet_draw(labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    r"""One label-skew partition: each class dealt in :math:`\mathrm{Dir}(\alpha \mathbf 1_K)` proportions."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(n_clients, alpha))
        for client, chunk in enumerate(_split_by_counts(members, _proportional_counts(members.size, shares))):
            parts[client].append(chunk)
    return _collect(parts)


def shard_partition(labels, n_clients: int, *, classes_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Pathological non-IID: ``n_clients · classes_per_client`` single-class shards, dealt at random.

    Each class is cut into a number of shards proportional to its size (at least one), so every client holds
    at most ``classes_per_client`` classes (fewer when two of its shards share a class): the pathological shards of
    REFERENCE.md §5 (federated), each client 1–2 classes with the default.

    Args:
      labels: (n,) non-negative integer class labels.
      n_clients: number of clients K ≥ 1.
      classes_per_client: shards dealt to each client (default 2).
      seed: seed of the shard cuts and the deal.

    Returns:
      ``n_clients`` sorted int64 index arrays, disjoint, covering every sample once.

    Raises:
      analytic.InputError: bad labels or ``n_clients``, or fewer shards (``n_clients · classes_per_client``) than
        classes.

    Example:
      >>> labels = np.repeat(np.arange(4), 5)
      >>> parts = shard_partition(labels, 4)
      >>> [np.unique(labels[part]).tolist() for part in parts]
      [[2], [0, 3], [1, 3], [0, 1]]
      >>> sum(part.size for part in parts)
      20
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
    r"""Quantity skew: IID samples, client sizes proportional to :math:`q \sim \mathrm{Dir}(\alpha)`.

    .. math::
        q \sim \mathrm{Dir}(\alpha \mathbf 1_K), \qquad n_k \approx q_k\, n

    (largest remainders get the leftovers); the samples are a random permutation cut into parts of those sizes.
    Small α gives a few large clients and many small or empty ones.

    Args:
      n_samples: number of samples n ≥ 0.
      n_clients: number of clients K ≥ 1.
      alpha: Dirichlet concentration α > 0 (smaller: more skew).
      seed: seed of the draws.

    Returns:
      ``n_clients`` sorted int64 index arrays, disjoint, covering ``range(n_samples)`` once.

    Raises:
      analytic.InputError: bad ``n_samples`` or ``n_clients``, or α not positive.

    Example:
      >>> parts = quantity_skew_partition(100, 4, 1.0)
      >>> [part.size for part in parts]
      [40, 59, 1, 0]
      >>> np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
      True
    """
    _check_clients(n_samples, n_clients)
    if not alpha > 0:
        raise InputError(f"alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    counts = _proportional_counts(int(n_samples), rng.dirichlet(np.full(n_clients, float(alpha))))
    return [np.sort(part).astype(np.int64) for part in _split_by_counts(rng.permutation(n_samples), counts)]


def make_partition(name: str, labels, n_clients: int, *, alpha: float = 1.0, seed: int = 0,
                   min_size: int = 1) -> list[np.ndarray]:
    """Partition by name: ``"iid"``, ``"dirichlet"`` (with ``alpha`` and ``min_size``, see
    :func:`dirichlet_partition`), ``"shards"`` or ``"quantity"`` (``alpha``).

    Args:
      name: ``"iid"`` (:func:`iid_partition`), ``"dirichlet"`` (:func:`dirichlet_partition`), ``"shards"``
        (:func:`shard_partition`, two shards per client) or ``"quantity"`` (:func:`quantity_skew_partition`).
      labels: (n,) non-negative integer class labels (only their number matters for ``"iid"`` and ``"quantity"``).
      n_clients: number of clients K ≥ 1.
      alpha: Dirichlet concentration α > 0 of ``"dirichlet"`` and ``"quantity"`` (ignored otherwise).
      seed: seed of the split.
      min_size: fewest samples per client of ``"dirichlet"`` (ignored otherwise).

    Returns:
      ``n_clients`` sorted int64 index arrays, disjoint, covering every sample once.

    Raises:
      analytic.InputError: an unknown ``name``, bad labels, or an argument the chosen partitioner refuses.

    Example:
      >>> labels = np.repeat(np.arange(3), 10)
      >>> parts = make_partition("dirichlet", labels, 3, alpha=0.1)
      >>> [part.size for part in parts], [np.unique(labels[part]).tolist() for part in parts]
      ([11, 3, 16], [[0, 1, 2], [0, 2], [0, 1, 2]])
      >>> [part.size for part in make_partition("iid", labels, 3)]
      [10, 10, 10]
    """
    labels = _check_labels(labels)
    if name == "iid":
        return iid_partition(labels.size, n_clients, seed=seed)
    if name == "dirichlet":
        return dirichlet_partition(labels, n_clients, alpha, seed=seed, min_size=min_size)
    if name == "shards":
        return shard_partition(labels, n_clients, seed=seed)
    if name == "quantity":
        return quantity_skew_partition(labels.size, n_clients, alpha, seed=seed)
    raise InputError(f"unknown partition {name!r}: use 'iid', 'dirichlet', 'shards' or 'quantity'")

"""Many AFL clients in one process: every client computes and sends its statistics, the server validates and sums.

The simulated round is the real protocol — each client's payload is encoded (packed Gram), validated and added by
:func:`federated.server.receive_many` — run with the work arranged for one machine: the samples are reordered once
so that each client's rows are one contiguous block, each client's Gram is one BLAS product (the total work is the
centralized :math:`n d^2` whatever the split), and the server keeps a packed running sum. A progress bar shows
clients done, bytes sent and time; the report gives test accuracy, bytes per client and in total, and wall time.

With ``vectorized=True`` the clients' statistics are computed in JAX, a group of clients at a time by one jitted
``jax.vmap`` of :func:`analytic.accumulate` over their rows padded to a common length (padding rows masked out), on
the default device; every client's upload is then encoded and received as before.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import analytic
from analytic.internal import precision_of
from federated.aggregation import client_statistics
from federated.payload import encode_statistics, payload_nbytes
from federated.server import StatisticsAggregate, solve, receive_many, init_aggregate


@dataclasses.dataclass(frozen=True)
class RoundReport:
    """What one simulated AFL round cost and gave.

    Attributes:
      n_clients: clients in the federation (empty ones included).
      accuracy: test accuracy of the aggregated head (NaN without test data).
      bytes_per_client: bytes one client uploads (the same for every client: the payload does not grow with n_k).
      bytes_up: total bytes uploaded; bytes_down: total bytes of the head sent back to every client.
      seconds: wall time of the whole round (clients, server, solve); client_seconds: the clients' share.
      rejected: ``{client_id: reason}`` of refused uploads.
    """

    n_clients: int
    accuracy: float
    bytes_per_client: int
    bytes_up: int
    bytes_down: int
    seconds: float
    client_seconds: float
    rejected: dict


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[sent]}"), TimeElapsedColumn(), disable=not enabled,
    )


def simulate_afl(
    features,
    labels,
    parts: list[np.ndarray],
    *,
    ridge: float,
    test_features=None,
    test_labels=None,
    precision: str = "float64",
    progress: bool = True,
    description: str = "AFL round",
    vectorized: bool = False,
) -> tuple[StatisticsAggregate, analytic.Head, RoundReport]:
    """One AFL round over ``parts`` (index arrays, one per client, e.g. from :mod:`federated.partition`).

    ``vectorized=True`` computes the clients' statistics with ``jax.vmap`` (module docstring); float64 then needs
    ``jax_enable_x64``, fixed precision does not but needs float32 features (:func:`vmapped_client_statistics`).

    Returns:
      The server aggregate, the head :math:`(\\sum_k G_k + \\gamma I)^{-1} \\sum_k B_k`, and a :class:`RoundReport`.
    """
    features, labels = np.asarray(features), np.asarray(labels)
    class_ids = np.unique(labels)
    dim = features.shape[1]
    started = time.perf_counter()
    order = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    x, y = features[order], labels[order]  # each client's rows become one contiguous block
    bounds = np.concatenate([[0], np.cumsum([p.size for p in parts])])
    client_seconds, sent = 0.0, 0
    uploads_bytes: list[int] = []

    clients = (vmapped_client_statistics(x, y, bounds, class_ids, precision=precision) if vectorized
               else (client_statistics(x[bounds[k]:bounds[k + 1]], y[bounds[k]:bounds[k + 1]], dim, precision=precision)
                     for k in range(len(parts))))

    def uploads(track):
        nonlocal client_seconds, sent
        for k in range(len(parts)):
            tick = time.perf_counter()
            stats = next(clients)
            payload = encode_statistics(stats, class_ids)
            client_seconds += time.perf_counter() - tick
            uploads_bytes.append(payload_nbytes(payload))
            sent += uploads_bytes[-1]
            track(k)
            yield f"client-{k}", payload

    with _progress(progress) as bar:
        task = bar.add_task(description, total=len(parts), sent="0 MB")
        track = lambda k: bar.update(task, advance=1, sent=f"{sent / 1e6:,.1f} MB up")  # noqa: E731
        aggregate, rejected = receive_many(init_aggregate(dim, class_ids, precision=precision), uploads(track))
    head = solve(aggregate, ridge)
    seconds = time.perf_counter() - started
    accuracy = float("nan")
    if test_features is not None:
        accuracy = float(np.mean(analytic.predict_labels(head, test_features) == np.asarray(test_labels)))
    report = RoundReport(
        n_clients=len(parts), accuracy=accuracy, bytes_per_client=max(uploads_bytes, default=0),
        bytes_up=int(sum(uploads_bytes)), bytes_down=len(parts) * head.weights.nbytes, seconds=seconds,
        client_seconds=client_seconds, rejected=rejected,
    )
    return aggregate, head, report


def vmapped_client_statistics(features, labels, bounds, class_ids, *, precision: str = "float64", group: int = 256):
    """Each client's statistics (client k holds rows ``bounds[k]:bounds[k+1]``), in order, computed ``group``
    clients at a time by one jitted ``vmap`` of :func:`analytic.accumulate` with padded, masked rows.

    The rows travel in the precision's device dtype (float32 for ``"fixed"`` and ``"float32"``); features that
    this cast would round are refused rather than quantized differently from the host path.

    Raises:
      analytic.InputError: the features are not exactly representable in the device dtype.
    """
    dtype = precision_of(precision).device_dtype()
    if not np.array_equal(features.astype(dtype), features, equal_nan=True):
        raise analytic.InputError(
            f"vectorized clients compute on {np.dtype(dtype).name} rows, and these {features.dtype} features are "
            f"not exactly {np.dtype(dtype).name}: cast them first, or use vectorized=False"
        )
    return _vmapped_states(features, labels, bounds, class_ids, precision, group, dtype)


def _vmapped_states(features, labels, bounds, class_ids, precision, group, dtype):
    empty = analytic.init_statistics(features.shape[1], precision=precision, class_ids=class_ids)
    step = jax.jit(jax.vmap(lambda s, x, y, keep: analytic.accumulate(s, x, y, mask=keep), in_axes=(None, 0, 0, 0)))
    labels = labels.astype(np.int32)
    for first in range(0, len(bounds) - 1, group):
        last = min(first + group, len(bounds) - 1)
        starts, ends = bounds[first:last], bounds[first + 1 : last + 1]
        width = max(1, int(2 ** np.ceil(np.log2(max(1, int((ends - starts).max()))))))  # few distinct shapes
        x = np.zeros((len(starts), width, features.shape[1]), dtype)
        y = np.zeros((len(starts), width), np.int32)
        mask = np.zeros((len(starts), width), bool)
        for i, (start, end) in enumerate(zip(starts, ends)):
            x[i, : end - start], y[i, : end - start], mask[i, : end - start] = features[start:end], labels[start:end], True
        states = jax.device_get(step(empty, x, y, mask))
        for i in range(len(starts)):
            yield jax.tree.map(lambda leaf: leaf[i], states)

r"""Exact unlearning on the additive statistics of a ridge head: the result *is* the head retrained without the data.

The ridge head depends on its data only through :math:`G = \sum x x^\top`, :math:`B = \sum x y^\top` and the counts
(README: the math in brief), so forgetting is subtraction:

.. math::
    \text{samples } F:\; G \mathrel{-}= X_F^\top X_F,\; B \mathrel{-}= X_F^\top Y_F; \qquad
    \text{class } c:\; G \mathrel{-}= A_c,\; \text{drop column } c \text{ of } B; \qquad
    \text{source } k:\; G \mathrel{-}= G_k,\; B \mathrel{-}= B_k,

and :math:`W = (G + \gamma I)^{-1} B` of the result equals retraining on the retained data (to rounding in float64,
bit for bit in ``precision="fixed"``, where the state hash after forgetting equals the hash of a state retrained
from scratch, README: precision). A class left with no samples leaves the output space (its column is dropped; a zero
column would still score 0 and could win the argmax, the field's evaluation conventions); learning it again later adds it back.

Routes. The statistics are always updated exactly; what differs is how the solver that turns them into weights
follows them. :func:`forget_samples` / :func:`learn` on k rows of dimension d choose the cheapest exact route:

``"downdate"`` / ``"update"`` (``solver="cholesky"``, factor present, at most d/8 rows folded in)
    rank-k correction of the kept Cholesky factor of :math:`G + \gamma I` through a capacitance matrix
    (Woodbury, :mod:`unlearning.factor`): :math:`O(k d^2)` per request and :math:`O(d^2 C + m d C)` per solve
    instead of :math:`d^3/3`; refused if the downdate would lose positive definiteness.
``"recursive"`` (``solver="recursive"``, :math:`k \le d/8`)
    one float64 Woodbury step on :math:`R = (G + \gamma I)^{-1}` and W (ACIL eqs. 9–10 with the sign flipped,
    README: the math in brief): a prediction after every small request of a learn/forget stream without any triangular solve.
``"refactor"`` / ``"resync"`` (everything else)
    subtract, then factorize :math:`G + \gamma I` afresh (:math:`d^3/3`), or recompute R and W from the statistics:
    used for large k, for class and source requests from stored statistics (no rows to fold in), when no factor is
    kept yet, and once the rows folded in since the last factorization would exceed d/8 (factor) or d (recursive
    form) — which bounds the rounding drift of a long stream as well as its cost.
``"deferred"``
    learning while no factor is kept: the factor is made on first use.
``"device"``
    statistics on a JAX device (``init_unlearning_head(..., device=...)``): they are added and subtracted there,
    and every :func:`solve` factorizes on the device (:math:`d^3/3`, fast on an accelerator); receipts and
    hashes are the same as on the host.

Integrity. Every request is validated before anything changes (states are immutable; a refused request returns
nothing and leaves the head as it was): the core refuses negative counts, unknown classes and negative Gram
diagonals; the downdate refuses a loss of positive definiteness; a ledger of sample fingerprints
(:mod:`unlearning.ledger`, on by default) refuses samples that were never learned; a request that would leave no
samples is refused. Each completed request returns a :class:`Receipt`.

Exactness is relative to retraining the *head*: it equals full retraining only if the backbone never saw the
forgotten data (the field's evaluation conventions).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import numpy as np

import analytic
from analytic.internal import check_class_ids, empty_like, precision_of
from unlearning import ledger as ledger_lib
from unlearning.solvers import FOLD_FRACTION, solver_of


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["statistics", "solver_state", "folded_rows", "ledger", "sources", "class_parts"],
    meta_fields=["ridge", "solver", "source_names"],
)
@dataclasses.dataclass(frozen=True)
class UnlearningHead:
    """A ridge head that can forget exactly: its statistics plus the solver state that follows them.

    Attributes:
      statistics: the additive :class:`analytic.Statistics` (G, B, counts) of every sample currently learned.
      solver_state: what the solver keeps in step with ``statistics`` (:mod:`unlearning.solvers`): the
        :class:`unlearning.factor.CorrectedFactor` of :math:`G + \\gamma I` (``solver="cholesky"``) or the
        :class:`analytic.RecursiveHead` (``solver="recursive"``); ``None`` until first needed.
      folded_rows: () int64, rows folded into ``solver_state`` by rank-k steps since it was last computed from the
        statistics.
      ledger: :class:`unlearning.ledger.SampleLedger` of sample fingerprints, or ``None``.
      sources: ``{source name: Statistics}`` of each tracked source's contribution, or ``None`` if untracked.
      class_parts: ``{source name ("" when untracked): {class id: Statistics}}``, each class's own statistics
        (C·d² memory), so a class can be forgotten without its data; ``None`` if not kept.
      ridge: γ.
      solver: ``"cholesky"`` or ``"recursive"``.
      source_names: every source name ever learned, in order (its position is the ledger's source index).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> head = learn(init_unlearning_head(8, 0.1), rng.normal(size=(30, 8)), rng.integers(0, 3, 30))
      >>> head.statistics.class_ids, int(head.statistics.count), head.solver, head.solver_state is None
      (array([0, 1, 2]), 30, 'cholesky', True)
    """

    statistics: analytic.Statistics
    solver_state: Any
    folded_rows: np.ndarray
    ledger: ledger_lib.SampleLedger | None
    sources: dict | None
    class_parts: dict | None
    ridge: float
    solver: str = "cholesky"
    source_names: tuple = ()


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What one completed forgetting request removed, and the state hash before and after.

    In ``precision="fixed"`` ``hash_after`` equals :func:`analytic.state_hash` of the statistics retrained from
    scratch on the retained data: a certificate anyone holding that data can check (:func:`certifies`).

    Attributes:
      request: ``"samples"``, ``"class"`` or ``"source"``.
      removed_count: samples removed.
      removed_per_class: ``{class id: samples removed}`` (classification), else empty.
      dropped_classes: classes that left the output space.
      source: the source named by the request, or ``None``.
      route: how the solver followed (see the module docstring).
      removed_hash: state hash of the removed statistics.
      hash_before, hash_after: state hashes of the head's statistics.
      precision: the statistics' precision.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 8)), np.repeat([0, 1, 2], 10)
      >>> head = learn(init_unlearning_head(8, 0.1), x, y)
      >>> _, receipt = forget_class(head, 2, x[20:])
      >>> receipt.request, receipt.removed_count, receipt.removed_per_class, receipt.dropped_classes, receipt.route
      ('class', 10, {2: 10}, (2,), 'refactor')
      >>> receipt.hash_before != receipt.hash_after, '"request": "class"' in receipt.to_json()
      (True, True)
    """

    request: str
    removed_count: int
    removed_per_class: dict
    dropped_classes: tuple
    source: str | None
    route: str
    removed_hash: str
    hash_before: str
    hash_after: str
    precision: str

    def to_json(self) -> str:
        """The receipt as a JSON document (class ids of ``removed_per_class`` become string keys).

        Returns:
          The fields, indented by two spaces.
        """
        fields = dataclasses.asdict(self)
        fields["removed_per_class"] = {str(k): v for k, v in self.removed_per_class.items()}
        return json.dumps(fields, indent=2)


def init_unlearning_head(
    dim: int,
    ridge: float,
    *,
    solver: str = "cholesky",
    precision: str = "float64",
    n_targets: int | None = None,
    per_class: bool = False,
    ledger: bool = True,
    track_sources: bool = False,
    frac_bits: int = 12,
    shift=None,
    device=None,
) -> UnlearningHead:
    """An empty head that can forget.

    Args:
      dim: feature dimension d.
      ridge: γ > 0.
      solver: ``"cholesky"`` (a kept factor with low-rank corrections) or ``"recursive"`` (float64 Woodbury
        form, for streams that need weights after every small request).
      precision, n_targets, frac_bits, shift: as :func:`analytic.init_statistics`.
      per_class: keep each class's statistics, so a class can be forgotten from the statistics alone, without
        its data (C·d² memory; kept beside the head's statistics so that forgetting a class touches only d²
        numbers and the class's own part).
      ledger: keep sample fingerprints and refuse to forget samples that were never learned, or learned under
        another source (on by default; costs 40 bytes and one 16-byte BLAKE3 fingerprint per sample: about 7 µs
        per sample at d = 1,280, which made learning 60,000 samples 1.4× slower, 1.15 s to 1.59 s). ``False`` opts
        out: then only the core's checks (counts, Gram diagonal, positive definiteness) guard a request.
      track_sources: keep each source's statistics, so a source can be forgotten; every learn names its source.
      device: a JAX device to keep the statistics on (the ``"device"`` route); ``None`` keeps them on the host.

    Returns:
      An :class:`UnlearningHead` with no samples and no solver state (made on first use).

    Raises:
      analytic.InputError: an unknown ``solver``, ``ridge`` not positive, ``per_class`` with ``n_targets``, or an
        argument :func:`analytic.init_statistics` refuses (``dim``, ``precision``, ``n_targets``, ``frac_bits``,
        ``shift``).

    Example:
      >>> head = init_unlearning_head(16, 0.1, precision="fixed", per_class=True)
      >>> head.statistics.dim, head.statistics.precision, int(head.statistics.count), head.class_parts
      (16, 'fixed', 0, {})
    """
    solver_of(solver)
    ridge = float(ridge)
    if not ridge > 0:
        raise analytic.InputError(f"ridge must be positive, got {ridge}")
    statistics = analytic.init_statistics(
        dim, precision=precision, n_targets=n_targets, shift=shift, frac_bits=frac_bits
    )
    if per_class and n_targets is not None:
        raise analytic.InputError("per_class needs a classification head (n_targets=None)")
    if device is not None:
        statistics = jax.device_put(statistics, device)
    return UnlearningHead(
        statistics=statistics,
        solver_state=None,
        folded_rows=np.int64(0),
        ledger=ledger_lib.init_ledger() if ledger else None,
        sources={} if track_sources else None,
        class_parts={} if per_class else None,
        ridge=ridge,
        solver=solver,
    )


# ------------------------------------------------------------------------------------------------------ learning


def learn(head: UnlearningHead, features, targets, *, source: str | None = None) -> UnlearningHead:
    """Learn a batch: :math:`G \\mathrel{+}= X^\\top X`, :math:`B \\mathrel{+}= X^\\top Y` (README: the math in brief;
    REFERENCE.md §1, "learn a batch").

    Args:
      head: the head (unchanged; a new one is returned).
      features: (n, d) floating array.
      targets: (n,) class ids or (n, m) / (n,) regression targets.
      source: the source (client) these samples come from; required when the head tracks sources.

    Returns:
      The head with the batch learned; its solver state follows by a rank-k update (``"update"`` /
      ``"recursive"`` route) when a small batch meets a kept state, else it is recomputed (or made on first use).

    Raises:
      analytic.InputError: NaN/Inf, wrong shape or dtype, bad labels, or a ``source`` that is not a string;
        ``head`` is unchanged.
      analytic.IntegrityError: a ``source`` for a head that tracks none, or none for a head that tracks sources.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> head = init_unlearning_head(8, 0.1, track_sources=True)
      >>> head = learn(head, rng.normal(size=(20, 8)), rng.integers(0, 2, 20), source="a")
      >>> head = learn(head, rng.normal(size=(20, 8)), rng.integers(1, 3, 20), source="b")
      >>> head.statistics.class_ids, int(head.statistics.count), head.source_names
      (array([0, 1, 2]), 40, ('a', 'b'))
    """
    batch = _batch_statistics(head.statistics, features, targets)
    source_index, sources = _check_source(head, source, learning=True)
    if sources is not None:
        contribution = sources.get(source, _empty_like(head.statistics))
        sources = {**sources, source: analytic.merge(contribution, batch)}
    ledger = head.ledger
    if ledger is not None:
        fingerprints = ledger_lib.sample_fingerprints(features, targets, source_index)
        ledger = ledger_lib.record(ledger, fingerprints, _ledger_labels(head, targets, len(fingerprints)),
                                   source_index)
    class_parts = head.class_parts
    if class_parts is not None:
        parts = dict(class_parts.get(source or "", {}))
        for class_id, part in _split_by_class(batch, features, targets).items():  # around the batch's shift
            parts[class_id] = analytic.merge(parts[class_id], part) if class_id in parts else part
        class_parts = {**class_parts, source or "": parts}
    statistics = analytic.merge(head.statistics, batch)
    names = head.source_names
    if source is not None and source not in names:
        names = names + (source,)
    head = dataclasses.replace(head, ledger=ledger, sources=sources, class_parts=class_parts, source_names=names)
    updated, _ = _follow(head, statistics, _solver_rows(head.statistics, features, targets), +1, ())
    return updated


def factorize(head: UnlearningHead) -> UnlearningHead:
    r"""The head with its solver state computed from the statistics: the Cholesky factor of :math:`G + \gamma I`
    (``solver="cholesky"``, :math:`d^3/3`) or the recursive form :math:`R = (G + \gamma I)^{-1}`, :math:`W = R B`
    (``solver="recursive"``, REFERENCE.md §2).

    Later small requests then correct this state by rank-k steps (the ``"downdate"`` / ``"update"`` /
    ``"recursive"`` routes) instead of refactorizing; the count of rows folded in restarts at 0.

    Args:
      head: the head (unchanged).

    Returns:
      The head with ``solver_state`` set and ``folded_rows`` 0.

    Raises:
      analytic.IntegrityError: :math:`G + \gamma I` is not positive definite, or the statistics are flagged or
        hold NaN/Inf.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 16)), rng.integers(0, 3, 40)
      >>> head = factorize(learn(init_unlearning_head(16, 0.1), x, y))
      >>> _, receipt = forget_samples(head, x[:2], y[:2])  # 2 rows ≤ d/8: a low-rank downdate of the kept factor
      >>> head.solver_state is not None, receipt.route
      (True, 'downdate')
    """
    kept = solver_of(head.solver).compute(head.statistics, head.ridge)
    return dataclasses.replace(head, solver_state=kept, folded_rows=np.int64(0))


def solve(head: UnlearningHead, *, intercept: bool = False) -> analytic.Head:
    r"""The weights :math:`W = (G + \gamma I)^{-1} B` as an :class:`analytic.Head`, from the kept solver state.

    The ridge solution of REFERENCE.md §1, :math:`W^\star = \arg\min_W \|Y - XW\|^2 + \gamma \|W\|^2`.

    With ``intercept=True``, the weights and unregularized bias of :func:`analytic.solve` with an intercept,
    :math:`W = (G_c + \gamma I)^{-1} B_c`, :math:`b = \bar y - W^\top \mu`, from the statistics: the centred Gram
    :math:`G_c` is factorized afresh (:math:`d^3/3`), since the kept factor and recursive form are of the raw
    :math:`G + \gamma I`. Either way the head equals retraining (with or without an intercept) on the retained data.

    Args:
      head: the head.
      intercept: also fit a bias (keyword only, a bool).

    Returns:
      An :class:`analytic.Head`: (d, m) weights, the class ids of the columns (classification) or ``None``, the
      ridge, and the (m,) bias with ``intercept=True`` (else ``None``).

    Raises:
      analytic.InputError: ``intercept`` is not a bool, or the head holds no samples and ``intercept=True``.
      analytic.IntegrityError: :math:`G + \gamma I` (or :math:`G_c + \gamma I`) is not positive definite, or the
        statistics are flagged.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
      >>> forgotten, _ = forget_samples(learn(init_unlearning_head(8, 0.1), x, y), x[:5], y[:5])
      >>> retrained = analytic.solve(analytic.accumulate(analytic.init_statistics(8), x[5:], y[5:]), 0.1)
      >>> np.allclose(solve(forgotten).weights, retrained.weights)
      True
      >>> solved = solve(forgotten, intercept=True)
      >>> solved.weights.shape, solved.bias.shape, solved.class_ids
      ((8, 3), (3,), array([0, 1, 2]))
    """
    if intercept is not False:  # True, or a value analytic.solve refuses
        return analytic.solve(head.statistics, head.ridge, intercept=intercept)
    if head.solver_state is not None:
        return solver_of(head.solver).weights(head.solver_state, head.statistics, head.ridge)
    return analytic.solve(head.statistics, head.ridge)


# ----------------------------------------------------------------------------------------------------- forgetting


def forget_samples(
    head: UnlearningHead, features, targets, *, source: str | None = None, receipt: bool = True
) -> tuple[UnlearningHead, Receipt | None]:
    """Forget samples given their features and targets: :math:`G \\mathrel{-}= X_F^\\top X_F`,
    :math:`B \\mathrel{-}= X_F^\\top Y_F` (README: the math in brief; REFERENCE.md §1, "unlearn samples F").

    Classes left with no samples leave the output space.

    Args:
      head: the head (unchanged).
      features: (k, d) the samples' features, exactly as learned.
      targets: their class ids or regression targets.
      source: the source they were learned under (required when the head tracks sources).
      receipt: return a :class:`Receipt` (hashing the state costs a pass over its bytes); ``False`` returns
        ``None`` in its place.

    Returns:
      ``(head, receipt)``: the head equal to one retrained without the samples, and the :class:`Receipt` (or
      ``None`` with ``receipt=False``).

    Raises:
      analytic.InputError: NaN/Inf, wrong shape or dtype, or a ``source`` that is not a string.
      analytic.IntegrityError: a label outside the head, more samples than learned, samples missing from the
        ledger, a loss of positive definiteness, a ``source`` that does not match the head's tracking mode or
        contributed nothing, or a request that would empty the head.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
      >>> forgotten, receipt = forget_samples(learn(init_unlearning_head(8, 0.1), x, y), x[:6], y[:6])
      >>> retrained = learn(init_unlearning_head(8, 0.1), x[6:], y[6:])
      >>> np.allclose(solve(forgotten).weights, solve(retrained).weights), receipt.removed_count, receipt.route
      (True, 6, 'refactor')
    """
    removed = _batch_statistics(head.statistics, features, targets)
    if removed.is_classification:
        outside = np.setdiff1d(removed.class_ids, head.statistics.class_ids)
        if outside.size:
            raise analytic.IntegrityError(
                f"labels {outside.tolist()} are outside the head (classes {head.statistics.class_ids.tolist()}): "
                "these samples were never learned"
            )
    source_index, sources = _check_source(head, source, learning=False)
    if sources is not None:
        sources = {**sources, source: analytic.subtract(sources[source], removed)}
    ledger = head.ledger
    if ledger is not None:
        ledger = ledger_lib.erase(ledger, ledger_lib.sample_fingerprints(features, targets, source_index))
    class_parts = head.class_parts
    if class_parts is not None:
        parts = dict(class_parts[source or ""])
        for class_id, part in _split_by_class(head.statistics, features, targets).items():
            parts[class_id] = analytic.subtract(parts[class_id], part)
            if int(parts[class_id].count) == 0:
                del parts[class_id]
        class_parts = {**class_parts, source or "": parts}
    rows = _solver_rows(head.statistics, features, targets)
    return _remove(head, removed, rows, "samples", source, ledger, sources, class_parts, receipt)


def forget_class(
    head: UnlearningHead, class_id: int, features=None, *, receipt: bool = True
) -> tuple[UnlearningHead, Receipt | None]:
    """Forget every sample of class ``class_id`` and drop its output column (README: the math in brief; a zero column could still win the argmax).

    Without ``features`` the class is removed from its stored statistics (:math:`G \\mathrel{-}= A_c`,
    :math:`A_c = \\sum_{y_i = c} x_i x_i^\\top`, needs ``per_class=True``): no data is needed. With ``features`` (all of the
    class's samples, as learned) the rows are subtracted as in :func:`forget_samples`. ``receipt`` as there.
    Either way :math:`B` loses column :math:`c` (REFERENCE.md §1, "unlearn class c", and §5, the class-removal
    trap).

    Args:
      head: a classification head (unchanged).
      class_id: the class to forget, one non-negative integer.
      features: ``None`` to forget from the stored per-class statistics (``per_class=True``), or (n_c, d) every
        sample of the class, exactly as learned (not allowed when the head tracks sources).
      receipt: return a :class:`Receipt`; ``False`` returns ``None`` in its place.

    Returns:
      ``(head, receipt)``: the head equal to one retrained without the class (its output space without
      ``class_id``), and the :class:`Receipt` (or ``None``).

    Raises:
      analytic.InputError: ``class_id`` is not one integer, or the features are malformed (NaN/Inf, shape, dtype).
      analytic.IntegrityError: the head is not a classification head, the class was never learned, the features
        are not all of the class's samples, no per-class statistics are kept, features are given to a head that
        tracks sources, or the class is the last one in the head.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(30, 8)), np.repeat([0, 1, 2], 10)
      >>> head = learn(init_unlearning_head(8, 0.1, per_class=True), x, y)
      >>> forgotten, receipt = forget_class(head, 1)  # from the stored statistics: no data needed
      >>> retrained = learn(init_unlearning_head(8, 0.1), x[y != 1], y[y != 1])
      >>> solve(forgotten).class_ids, np.allclose(solve(forgotten).weights, solve(retrained).weights), receipt.route
      (array([0, 2]), True, 'refactor')
    """
    statistics = head.statistics
    if not statistics.is_classification:
        raise analytic.IntegrityError("forget_class needs a classification head")
    if np.ndim(class_id) != 0:
        raise analytic.InputError(f"forget_class takes one class id, got {class_id!r}")
    class_id = int(check_class_ids(class_id)[0])
    position = int(np.searchsorted(statistics.class_ids, class_id))
    if position == statistics.n_outputs or statistics.class_ids[position] != class_id:
        raise analytic.IntegrityError(
            f"class {class_id} was never learned by this head (classes: {statistics.class_ids.tolist()})"
        )
    held = int(statistics.class_counts[position])
    ledger, sources, class_parts = head.ledger, head.sources, head.class_parts
    if class_parts is not None:
        holders = [name for name, parts in class_parts.items() if class_id in parts]
        class_parts = {name: {c: part for c, part in parts.items() if c != class_id}
                       for name, parts in class_parts.items()}
    if features is None:
        if class_parts is None:
            raise analytic.IntegrityError(
                "forgetting a class without its data needs per-class statistics: create the head with "
                "per_class=True, or pass the class's features"
            )
        if not holders:
            raise analytic.IntegrityError(f"no stored statistics hold class {class_id}: pass the class's features")
        contributions = [head.class_parts[name][class_id] for name in holders]
        removed = functools.reduce(analytic.merge, contributions)
        if sources is not None:
            sources = {**sources, **{name: analytic.drop_classes(analytic.subtract(sources[name], part), [class_id])
                                     for name, part in zip(holders, contributions)}}
        if ledger is not None:
            ledger = ledger_lib.erase_where(ledger, ledger.labels == class_id)
        rows = None
    else:
        if sources is not None:
            raise analytic.IntegrityError(
                "this head tracks sources: forget the class from its per-class statistics (features=None), "
                "or forget its samples source by source with forget_samples(..., source=)"
            )
        labels = np.full(np.shape(features)[0], class_id, np.int64)
        removed = _batch_statistics(statistics, features, labels)
        if int(removed.count) != held:
            raise analytic.IntegrityError(
                f"class {class_id} holds {held} samples but {int(removed.count)} were given: pass all of them"
            )
        if ledger is not None:
            ledger = ledger_lib.erase(ledger, ledger_lib.sample_fingerprints(features, labels, -1))
        rows = _solver_rows(statistics, features, labels)
    return _remove(head, removed, rows, "class", None, ledger, sources, class_parts, receipt)


def forget_source(
    head: UnlearningHead, source: str, *, receipt: bool = True
) -> tuple[UnlearningHead, Receipt | None]:
    """Forget everything a tracked source contributed: :math:`G \\mathrel{-}= G_k`, :math:`B \\mathrel{-}= B_k`
    (``receipt`` as in :func:`forget_samples`; REFERENCE.md §1, "unlearn client k").

    Classes only that source held leave the output space. The statistics are subtracted whole (no rows), so the
    solver state is recomputed (the ``"refactor"`` / ``"resync"`` route).

    Args:
      head: a head created with ``track_sources=True`` (unchanged).
      source: the name the source's samples were learned under.
      receipt: return a :class:`Receipt`; ``False`` returns ``None`` in its place.

    Returns:
      ``(head, receipt)``: the head equal to one retrained on the other sources, and the :class:`Receipt` (or
      ``None``).

    Raises:
      analytic.IntegrityError: the head tracks no sources, ``source`` holds nothing, or it holds every sample of
        the head (the request would empty it).

    Example:
      >>> rng = np.random.default_rng(0)
      >>> xa, ya = rng.normal(size=(20, 8)), rng.integers(0, 2, 20)  # classes 0, 1
      >>> xb, yb = rng.normal(size=(20, 8)), rng.integers(1, 3, 20)  # classes 1, 2
      >>> head = learn(init_unlearning_head(8, 0.1, track_sources=True), xa, ya, source="a")
      >>> forgotten, receipt = forget_source(learn(head, xb, yb, source="b"), "a")
      >>> retrained = learn(init_unlearning_head(8, 0.1), xb, yb)
      >>> np.allclose(solve(forgotten).weights, solve(retrained).weights), receipt.source, receipt.removed_count
      (True, 'a', 20)
    """
    if head.sources is None:
        raise analytic.IntegrityError("this head does not track sources: create it with track_sources=True")
    if source not in head.sources:
        raise analytic.IntegrityError(f"source {source!r} contributed nothing to this head")
    removed = head.sources[source]
    sources = {name: part for name, part in head.sources.items() if name != source}
    class_parts = head.class_parts
    if class_parts is not None:
        class_parts = {name: parts for name, parts in class_parts.items() if name != source}
    ledger = head.ledger
    if ledger is not None:
        ledger = ledger_lib.erase_where(ledger, ledger.sources == head.source_names.index(source))
    return _remove(head, removed, None, "source", source, ledger, sources, class_parts, receipt)


def certifies(receipt: Receipt, retrained: analytic.Statistics) -> bool:
    """True when the receipt's after-hash is the hash of ``retrained`` (statistics learned from scratch on the
    retained data): the bit-exact certificate of ``precision="fixed"``.

    In ``"float64"`` / ``"float32"`` precision the forgotten and retrained statistics agree only to rounding, so
    the hashes (and the certificate) normally differ: compare weights there instead.

    Args:
      receipt: the :class:`Receipt` of a forgetting request.
      retrained: :class:`analytic.Statistics` learned from scratch on the retained data, in the head's
        configuration (precision, ``frac_bits``, shift).

    Returns:
      Whether ``receipt.hash_after == analytic.state_hash(retrained)``.

    Raises:
      analytic.InputError: ``retrained`` is not :class:`analytic.Statistics`, or is traced (inside ``jax.jit``).
      analytic.IntegrityError: ``retrained`` is malformed or carries an error flag.

    Example:
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(40, 8)), rng.integers(0, 3, 40)
      >>> head = learn(init_unlearning_head(8, 0.1, precision="fixed"), x, y)
      >>> _, receipt = forget_samples(head, x[:5], y[:5])
      >>> retrained = analytic.accumulate(analytic.init_statistics(8, precision="fixed"), x[5:], y[5:])
      >>> certifies(receipt, retrained), certifies(receipt, analytic.init_statistics(8, precision="fixed"))
      (True, False)
    """
    return receipt.hash_after == analytic.state_hash(retrained)


# ------------------------------------------------------------------------------------------------------ internals


def _remove(head, removed, rows, request, source, ledger, sources, class_parts, receipt):
    """Subtract ``removed``, drop emptied classes, refuse an empty result, follow with the solver; returns
    ``(head, Receipt or None)``."""
    before = head.statistics
    retained = analytic.subtract(before, removed)
    emptied = ()
    if retained.is_classification:
        emptied = tuple(int(c) for c in retained.class_ids[retained.class_counts == 0])
        if emptied:
            retained = analytic.drop_classes(retained, emptied)
    if int(retained.count) == 0 or (retained.is_classification and retained.n_outputs == 0):
        raise analytic.IntegrityError(
            f"this request would remove all {int(before.count)} samples and leave an empty head: "
            "start a new head instead"
        )
    head = dataclasses.replace(head, ledger=ledger, sources=sources, class_parts=class_parts)
    updated, route = _follow(head, retained, rows, -1, emptied)
    if not receipt:
        return updated, None
    per_class = {}
    if removed.is_classification:
        per_class = {int(c): int(n) for c, n in zip(removed.class_ids, removed.class_counts) if n > 0}
    return updated, Receipt(
        request=request,
        removed_count=int(removed.count),
        removed_per_class=per_class,
        dropped_classes=emptied,
        source=source,
        route=route,
        removed_hash=analytic.state_hash(removed),
        hash_before=analytic.state_hash(before),
        hash_after=analytic.state_hash(retained),
        precision=before.precision,
    )


def _follow(head, statistics, rows, sign, dropped) -> tuple[UnlearningHead, str]:
    """Bring the solver state in step with ``statistics`` by the cheapest exact route (module docstring)."""
    solver, kept = solver_of(head.solver), head.solver_state
    k = 0 if rows is None else rows[0].shape[0]
    folded = int(head.folded_rows) + k
    small = rows is not None and k <= FOLD_FRACTION * statistics.dim and folded <= solver.fold_limit(statistics.dim)
    replace = functools.partial(dataclasses.replace, head, statistics=statistics)
    if statistics.on_device:
        return replace(solver_state=None, folded_rows=np.int64(0)), "device"
    if kept is None and sign > 0:
        return replace(), "deferred"
    if kept is not None and small:
        kept, route = solver.fold(kept, rows, sign, dropped)
        return replace(solver_state=kept, folded_rows=np.int64(folded)), route
    return factorize(replace()), solver.refresh_route


def _empty_like(statistics: analytic.Statistics) -> analytic.Statistics:
    """Empty statistics in the configuration (and the home) of ``statistics``."""
    empty = empty_like(statistics)
    if statistics.on_device:
        return jax.device_put(empty, next(iter(jax.tree.leaves(statistics)[0].devices())))
    return empty


def _batch_statistics(statistics: analytic.Statistics, features, targets) -> analytic.Statistics:
    """The statistics of one batch alone, in the head's configuration (validates the batch)."""
    return analytic.accumulate(_empty_like(statistics), features, targets)


def _solver_rows(statistics: analytic.Statistics, features, targets):
    """(rows, targets) as the statistics saw them, in float64: on the fixed-point grid in ``"fixed"`` precision."""
    arithmetic = precision_of(statistics.precision)
    rows = arithmetic.as_seen(features, statistics.frac_bits)
    targets = np.asarray(targets)
    if not statistics.is_classification and arithmetic.on_grid:
        targets = arithmetic.as_seen(targets, statistics.frac_bits)
    return rows, targets


def _check_source(head: UnlearningHead, source, *, learning: bool):
    """(ledger source index, sources dict) after checking ``source`` against the head's tracking mode."""
    if head.sources is None:
        if source is not None:
            raise analytic.IntegrityError("this head does not track sources: create it with track_sources=True")
        return -1, None
    if source is None:
        raise analytic.IntegrityError("this head tracks sources: name the source of these samples (source=...)")
    if not isinstance(source, str):
        raise analytic.InputError(f"source names are strings, got {type(source).__name__}")
    if not learning and source not in head.sources:
        raise analytic.IntegrityError(f"source {source!r} contributed nothing to this head")
    names = head.source_names if source in head.source_names else head.source_names + (source,)
    return names.index(source), head.sources


def _ledger_labels(head: UnlearningHead, targets, n: int) -> np.ndarray:
    if head.statistics.is_classification:
        return np.asarray(targets, np.int64)
    return np.full(n, -1, np.int64)


def _split_by_class(statistics: analytic.Statistics, features, labels) -> dict:
    """``{class id: statistics of the batch's samples of that class}`` in the head's configuration."""
    features, labels = np.asarray(features), np.asarray(labels)
    return {int(c): _batch_statistics(statistics, features[labels == c], labels[labels == c])
            for c in np.unique(labels)}

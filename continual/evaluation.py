r"""Running a learner through a scenario, and the field's continual-learning metrics.

After phase t the learner is scored on the test rows of the classes first seen in each phase j, giving the T×T
accuracy matrix :math:`a_{t,j}` (NaN for j > t), and on all classes seen by t (:math:`A_t`). Then

.. math::
    \bar A = \frac1T \sum_t A_t, \qquad A_T, \qquad
    F = \frac{1}{T-1}\sum_{j<T} \Big(\max_{j \le t<T} a_{t,j} - a_{T,j}\Big), \qquad
    \mathrm{BWT} = \frac{1}{T-1}\sum_{j<T} \big(a_{T,j} - a_{j,j}\big)

(indices from 1 to T as in the text; the code counts from 0). Accuracies are in percent.
Beside top-1, each phase also records, on the same test rows of the seen classes, the top-5 accuracy (from the
learner's ``scores``; NaN for a learner that gives labels only), the macro F1 and the balanced accuracy
(:mod:`analytic.metrics`); the summary gives their values for the final model.
Each phase's ``learn`` wall time and the learner's state bytes after it are recorded; online scenarios also record
the prequential accuracy (each batch predicted before it is learned).
"""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
from rich.progress import track

from analytic.metrics import balanced_accuracy, f1_macro, top_k_accuracy
from continual.learner import Learner, state_bytes
from continual.scenarios import Scenario

TOP_K = 5


@dataclasses.dataclass(frozen=True)
class ContinualRun:
    """Everything measured in one run of a learner through a scenario.

    Attributes:
      learner: learner name.
      scenario: scenario name.
      accuracy_matrix: (T, T) :math:`a_{t,j}` in percent, NaN for j > t (or for phases with no test rows).
      seen_accuracy: (T,) :math:`A_t`, accuracy on all classes seen by phase t, in percent.
      phase_seconds: (T,) wall time of the ``learn`` calls of each phase.
      state_bytes: (T,) bytes of the learner state after each phase.
      online_accuracy: prequential accuracy in percent (online scenarios), else ``None``.
      seen_top5_accuracy: (T,) top-5 accuracy on all classes seen by phase t, in percent (top-k with k at least
        the number of learned classes is 100); NaN where the learner has no ``scores``.
      seen_f1_macro: (T,) macro F1 on all classes seen by phase t, in percent.
      seen_balanced_accuracy: (T,) balanced accuracy (mean per-class recall) on all classes seen by phase t, in
        percent.

    Example:
      Two phases; phase 0's classes drop from 90 % to 70 % after phase 1:

      >>> result = continual.ContinualRun(
      ...     learner="demo", scenario="B1-Inc1", accuracy_matrix=np.array([[90.0, np.nan], [70.0, 80.0]]),
      ...     seen_accuracy=np.array([90.0, 75.0]), phase_seconds=np.array([0.5, 0.25]),
      ...     state_bytes=np.array([100, 200]))
      >>> summary = result.summary()
      >>> summary["average_incremental_accuracy"], summary["last_accuracy"], summary["forgetting"]
      (82.5, 75.0, 20.0)
      >>> summary["backward_transfer"], summary["total_seconds"], summary["top5_accuracy"]
      (-20.0, 0.75, None)
    """

    learner: str
    scenario: str
    accuracy_matrix: np.ndarray
    seen_accuracy: np.ndarray
    phase_seconds: np.ndarray
    state_bytes: np.ndarray
    online_accuracy: float | None = None
    seen_top5_accuracy: np.ndarray | None = None
    seen_f1_macro: np.ndarray | None = None
    seen_balanced_accuracy: np.ndarray | None = None

    def summary(self) -> dict:
        """Scalar metrics and per-phase series as plain Python values (for JSON).

        Returns:
          A dict: the names, :func:`average_incremental_accuracy`, :func:`last_accuracy`, :func:`forgetting`,
          :func:`backward_transfer`, the online accuracy, the final top-5 / macro F1 / balanced accuracy (``None``
          when missing), phase times, final state bytes, the per-phase series and the accuracy matrix (``None`` for
          NaN entries).
        """
        return {
            "learner": self.learner,
            "scenario": self.scenario,
            "average_incremental_accuracy": average_incremental_accuracy(self.seen_accuracy),
            "last_accuracy": last_accuracy(self.seen_accuracy),
            "forgetting": forgetting(self.accuracy_matrix),
            "backward_transfer": backward_transfer(self.accuracy_matrix),
            "online_accuracy": self.online_accuracy,
            "top5_accuracy": _final(self.seen_top5_accuracy),
            "f1_macro": _final(self.seen_f1_macro),
            "balanced_accuracy": _final(self.seen_balanced_accuracy),
            "mean_phase_seconds": float(np.mean(self.phase_seconds)),
            "total_seconds": float(np.sum(self.phase_seconds)),
            "final_state_bytes": int(self.state_bytes[-1]),
            "seen_accuracy": self.seen_accuracy.tolist(),
            "phase_seconds": self.phase_seconds.tolist(),
            "state_bytes": self.state_bytes.tolist(),
            "seen_top5_accuracy": _series(self.seen_top5_accuracy),
            "seen_f1_macro": _series(self.seen_f1_macro),
            "seen_balanced_accuracy": _series(self.seen_balanced_accuracy),
            "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in self.accuracy_matrix],
        }


def _final(series) -> float | None:
    return None if series is None or not np.isfinite(series[-1]) else float(series[-1])


def _series(series) -> list | None:
    return None if series is None else [None if np.isnan(v) else float(v) for v in series]


def run(learner: Learner, scenario: Scenario, train_features, train_labels, test_features, test_labels, *,
        progress: bool = False) -> ContinualRun:
    r"""Feed ``scenario``'s phases of the training set to ``learner`` and score it on the test set after each.

    With ``learner.scores`` the prediction is the learned class of the highest score (what ``predict`` returns),
    and the same scores give the top-5 accuracy; otherwise ``predict`` gives the labels and top-5 is NaN. After
    phase t, :math:`a_{t,j}` is the accuracy on the test rows of the classes first seen in phase j and :math:`A_t`
    the accuracy on every class seen so far (REFERENCE.md §5, continual). Online scenarios (``batch_size`` set)
    predict each batch before learning it, for the prequential accuracy.

    Args:
      learner: the :class:`~continual.Learner` to run (from its ``init()``).
      scenario: the :class:`~continual.Scenario`, built from ``train_labels``.
      train_features: (n, d) training features; the scenario's phases index their rows.
      train_labels: (n,) training class ids.
      test_features: (m, d) test features.
      test_labels: (m,) test class ids (rows of classes not seen yet are left out of each phase's scores).
      progress: show a progress bar over the phases.

    Returns:
      The :class:`ContinualRun` of the measures.

    Raises:
      InputError: raised by the learner's ``learn`` for a bad phase (NaN/Inf features, labels outside its declared
        classes, ...).
      IntegrityError: raised by a strict learner's ``learn`` when a class comes back in a later phase (e.g. a
        strict learner on a :func:`~continual.si_blurry` scenario).

    Example:
      Four classes, B2-Inc1 (three phases), nearest class mean:

      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(4), 20)
      >>> x = rng.normal(size=(80, 4)) + 4.0 * np.eye(4)[y]
      >>> train = np.arange(80) % 2 == 0
      >>> scenario = continual.class_incremental(y[train], base=2, increment=1)
      >>> result = continual.run(continual.ncm(np.arange(4)), scenario, x[train], y[train], x[~train], y[~train])
      >>> scenario.name, [c.tolist() for c in scenario.new_classes]
      ('B2-Inc1', [[0, 3], [2], [1]])
      >>> result.accuracy_matrix
      array([[ 95.,  nan,  nan],
             [ 95., 100.,  nan],
             [ 95., 100., 100.]])
      >>> result.summary()["last_accuracy"], result.summary()["top5_accuracy"]
      (97.5, 100.0)
    """
    train_features, train_labels = np.asarray(train_features), np.asarray(train_labels)
    test_features, test_labels = np.asarray(test_features), np.asarray(test_labels)
    n_phases = scenario.n_phases
    matrix = np.full((n_phases, n_phases), np.nan)
    seen_accuracy = np.zeros(n_phases)
    top5, f1, balanced = np.full(n_phases, np.nan), np.zeros(n_phases), np.zeros(n_phases)
    seconds = np.zeros(n_phases)
    memory = np.zeros(n_phases, np.int64)
    online_hits, online_total = 0, 0
    state = learner.init()
    seen = np.zeros(0, np.int64)
    phases = track(range(n_phases), description=f"{learner.name} on {scenario.name}", disable=not progress)
    for t in phases:
        for rows in scenario.batches(t):
            x, y = train_features[rows], train_labels[rows]
            if scenario.batch_size is not None and state.model is not None:
                online_hits += int(np.sum(learner.predict(state, x) == y))
                online_total += y.size
            start = time.perf_counter()
            state = learner.learn(state, x, y)
            seconds[t] += time.perf_counter() - start
        memory[t] = state_bytes(state)
        seen = np.union1d(seen, scenario.new_classes[t])
        in_seen = np.isin(test_labels, seen)
        seen_labels = test_labels[in_seen]
        if not seen_labels.size:
            seen_accuracy[t] = f1[t] = balanced[t] = np.nan
            continue
        if learner.scores is None:
            predicted = np.asarray(learner.predict(state, test_features[in_seen]))
        else:
            scores = np.asarray(learner.scores(state, test_features[in_seen]))
            predicted = state.learned_classes[np.argmax(scores, axis=1)]
            top5[t] = top_k_accuracy(seen_labels, scores, k=TOP_K, class_ids=state.learned_classes)
        correct = predicted == seen_labels
        seen_accuracy[t] = 100.0 * correct.mean()
        f1[t] = f1_macro(seen_labels, predicted)
        balanced[t] = balanced_accuracy(seen_labels, predicted)
        for j in range(t + 1):
            members = np.isin(seen_labels, scenario.new_classes[j])
            if members.any():
                matrix[t, j] = 100.0 * correct[members].mean()
    online = 100.0 * online_hits / online_total if online_total else None
    return ContinualRun(learner.name, scenario.name, matrix, seen_accuracy, seconds, memory, online, top5, f1,
                        balanced)


def average_incremental_accuracy(seen_accuracy) -> float:
    r""":math:`\bar A`: mean over phases of the accuracy on all classes seen so far.

    :math:`\bar A = \frac1T \sum_{t=1}^T A_t` (REFERENCE.md §5, continual: average incremental accuracy).

    Args:
      seen_accuracy: (T,) :math:`A_t` per phase (e.g. :attr:`ContinualRun.seen_accuracy`).

    Returns:
      :math:`\bar A` as a float (in the unit of ``seen_accuracy``).

    Example:
      >>> continual.average_incremental_accuracy([90.0, 80.0, 70.0])
      80.0
    """
    return float(np.mean(seen_accuracy))


def last_accuracy(seen_accuracy) -> float:
    r""":math:`A_T`: accuracy on every class after the last phase (REFERENCE.md §5, continual).

    Args:
      seen_accuracy: (T,) :math:`A_t` per phase (e.g. :attr:`ContinualRun.seen_accuracy`).

    Returns:
      The last entry, :math:`A_T`, as a float.

    Example:
      >>> continual.last_accuracy([90.0, 80.0, 70.0])
      70.0
    """
    return float(np.asarray(seen_accuracy)[-1])


def forgetting(accuracy_matrix) -> float:
    r"""Mean over earlier phases j of :math:`\max_{t<T} a_{t,j} - a_{T,j}` (0 for a single phase).

    .. math::
        F = \frac{1}{T-1}\sum_{j<T} \Big(\max_{j \le t<T} a_{t,j} - a_{T,j}\Big)

    (REFERENCE.md §5, continual: forgetting). Phases j with a NaN entry in column j from phase j on (no test rows)
    are left out.

    Args:
      accuracy_matrix: (T, T) :math:`a_{t,j}` (e.g. :attr:`ContinualRun.accuracy_matrix`), NaN above the diagonal.

    Returns:
      F as a float (0.0 for a single phase or when no phase qualifies).

    Example:
      >>> matrix = np.array([[90.0, np.nan, np.nan], [80.0, 85.0, np.nan], [70.0, 80.0, 95.0]])
      >>> continual.forgetting(matrix)  # ((90 - 70) + (85 - 80)) / 2
      12.5
    """
    matrix = np.asarray(accuracy_matrix)
    if matrix.shape[0] < 2:
        return 0.0
    drops = [
        np.nanmax(matrix[j:-1, j]) - matrix[-1, j]
        for j in range(matrix.shape[0] - 1)
        if np.isfinite(matrix[j:, j]).all()
    ]
    return float(np.mean(drops)) if drops else 0.0


def backward_transfer(accuracy_matrix) -> float:
    r"""BWT: mean over earlier phases j of :math:`a_{T,j} - a_{j,j}` (0 for a single phase).

    .. math::
        \mathrm{BWT} = \frac{1}{T-1}\sum_{j<T} \big(a_{T,j} - a_{j,j}\big)

    (REFERENCE.md §5, continual: backward transfer; negative when learning later phases hurts earlier ones).
    Phases j whose :math:`a_{j,j}` or :math:`a_{T,j}` is NaN are left out.

    Args:
      accuracy_matrix: (T, T) :math:`a_{t,j}` (e.g. :attr:`ContinualRun.accuracy_matrix`), NaN above the diagonal.

    Returns:
      BWT as a float (0.0 for a single phase or when no phase qualifies).

    Example:
      >>> matrix = np.array([[90.0, np.nan, np.nan], [80.0, 85.0, np.nan], [70.0, 80.0, 95.0]])
      >>> continual.backward_transfer(matrix)  # ((70 - 90) + (80 - 85)) / 2
      -12.5
    """
    matrix = np.asarray(accuracy_matrix)
    if matrix.shape[0] < 2:
        return 0.0
    changes = [
        matrix[-1, j] - matrix[j, j] for j in range(matrix.shape[0] - 1) if np.isfinite(matrix[[j, -1], j]).all()
    ]
    return float(np.mean(changes)) if changes else 0.0


def write_csv(runs: list[ContinualRun], path) -> Path:
    """One row per (run, phase): seen accuracy, phase seconds, state bytes, and the accuracy-matrix row.

    The accuracy-matrix row :math:`a_{t,0..t}` is one space-separated field (empty entries for NaN).

    Args:
      runs: the :class:`ContinualRun` results to write.
      path: the CSV file (its parent folders are created; an existing file is replaced).

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      OSError: the file cannot be written.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(4), 20)
      >>> x = rng.normal(size=(80, 4)) + 4.0 * np.eye(4)[y]
      >>> train = np.arange(80) % 2 == 0
      >>> scenario = continual.class_incremental(y[train], base=2, increment=1)
      >>> result = continual.run(continual.ncm(np.arange(4)), scenario, x[train], y[train], x[~train], y[~train])
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     lines = continual.write_csv([result], Path(folder) / "runs" / "b2.csv").read_text().splitlines()
      >>> len(lines), lines[0]
      (4, 'learner,scenario,phase,seen_accuracy,phase_seconds,state_bytes,accuracy_row')
      >>> lines[2].split(",")[:4], lines[2].split(",")[-1]
      (['NCM', 'B2-Inc1', '1', '96.6667'], '95.0000 100.0000')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner", "scenario", "phase", "seen_accuracy", "phase_seconds", "state_bytes",
                         "accuracy_row"])
        for result in runs:
            for t in range(result.seen_accuracy.size):
                row = " ".join("" if np.isnan(v) else f"{v:.4f}" for v in result.accuracy_matrix[t, : t + 1])
                writer.writerow([result.learner, result.scenario, t, f"{result.seen_accuracy[t]:.4f}",
                                 f"{result.phase_seconds[t]:.6f}", int(result.state_bytes[t]), row])
    return path


def plot_accuracy(runs: list[ContinualRun], path, *, title: str = "") -> Path:
    """Accuracy on seen classes vs phase, one curve per learner in the library's plotting style
    (:func:`analytic.plotting.accuracy_per_phase`: a fixed colour and marker per method, integer phase ticks, curves
    that coincide drawn dashed and labelled "identical to ...", and, for a learner given several runs (seeds), their
    mean with the standard deviation as error bars).

    Args:
      runs: the :class:`ContinualRun` results to draw, grouped by learner name.
      path: the image file (format from its suffix, e.g. ``.png``; parent folders are created).
      title: the plot title.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Raises:
      ImportError: matplotlib is not installed.
      OSError: the file cannot be written.

    Example:
      >>> import tempfile
      >>> from pathlib import Path
      >>> rng = np.random.default_rng(0)
      >>> y = np.repeat(np.arange(4), 20)
      >>> x = rng.normal(size=(80, 4)) + 4.0 * np.eye(4)[y]
      >>> train = np.arange(80) % 2 == 0
      >>> scenario = continual.class_incremental(y[train], base=2, increment=1)
      >>> result = continual.run(continual.ncm(np.arange(4)), scenario, x[train], y[train], x[~train], y[~train])
      >>> with tempfile.TemporaryDirectory() as folder:
      ...     image = continual.plot_accuracy([result], Path(folder) / "b2.png", title="B2-Inc1")
      ...     print(image.name, image.read_bytes()[1:4])
      b2.png b'PNG'
    """
    from analytic.plotting import accuracy_per_phase

    series: dict[str, list[np.ndarray]] = {}
    for result in runs:
        series.setdefault(result.learner, []).append(result.seen_accuracy)
    return accuracy_per_phase(series, path, title=title)

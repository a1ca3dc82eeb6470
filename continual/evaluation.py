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
        """Scalar metrics and per-phase series as plain Python values (for JSON)."""
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
    """Feed ``scenario``'s phases of the training set to ``learner`` and score it on the test set after each.

    With ``learner.scores`` the prediction is the learned class of the highest score (what ``predict`` returns),
    and the same scores give the top-5 accuracy; otherwise ``predict`` gives the labels and top-5 is NaN.
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
    """:math:`\\bar A`: mean over phases of the accuracy on all classes seen so far."""
    return float(np.mean(seen_accuracy))


def last_accuracy(seen_accuracy) -> float:
    """:math:`A_T`: accuracy on every class after the last phase."""
    return float(np.asarray(seen_accuracy)[-1])


def forgetting(accuracy_matrix) -> float:
    """Mean over earlier phases j of :math:`\\max_{t<T} a_{t,j} - a_{T,j}` (0 for a single phase)."""
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
    """BWT: mean over earlier phases j of :math:`a_{T,j} - a_{j,j}` (0 for a single phase)."""
    matrix = np.asarray(accuracy_matrix)
    if matrix.shape[0] < 2:
        return 0.0
    changes = [
        matrix[-1, j] - matrix[j, j] for j in range(matrix.shape[0] - 1) if np.isfinite(matrix[[j, -1], j]).all()
    ]
    return float(np.mean(changes)) if changes else 0.0


def write_csv(runs: list[ContinualRun], path) -> Path:
    """One row per (run, phase): seen accuracy, phase seconds, state bytes, and the accuracy-matrix row."""
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
    """Accuracy on seen classes vs phase, one line per run (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for result in runs:
        axis.plot(np.arange(1, result.seen_accuracy.size + 1), result.seen_accuracy, marker="o", markersize=3,
                  label=result.learner)
    axis.set_xlabel("phase")
    axis.set_ylabel("accuracy on seen classes (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path

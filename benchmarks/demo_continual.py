"""Demo section: a short class-incremental run on frozen features — the analytic head keeps what it learned.

Called from ``benchmarks.demo`` with the features it already extracted (anything with ``train_features``,
``train_labels``, ``test_features`` and ``test_labels``); prints one table and returns its rows.
"""

from __future__ import annotations

import numpy as np

import continual
from .common import print_table


def demo_section(data, *, increment: int = 2, seed: int = continual.SEEDS[0], ridge: float = 1.0) -> list[dict]:
    """B0-Inc{increment} over the classes of ``data``: ACIL, SGD fine-tuning, NCM and joint ridge (the upper bound)."""
    train_labels = np.asarray(data.train_labels, np.int64)
    scenario = continual.class_incremental(train_labels, base=0, increment=increment, seed=seed)
    classes = scenario.classes
    learners = [
        continual.acil(classes, ridge=ridge),
        continual.fine_tuning(classes, seed=seed),
        continual.ncm(classes),
        continual.joint_ridge(classes, ridge=ridge),
    ]
    rows = []
    for learner in learners:
        result = continual.run(learner, scenario, data.train_features, train_labels, data.test_features,
                               np.asarray(data.test_labels, np.int64))
        summary = result.summary()
        rows.append({
            "learner": learner.name,
            "avg_inc_acc": summary["average_incremental_accuracy"],
            "last_acc": summary["last_accuracy"],
            "forgetting": summary["forgetting"],
            "s_per_phase": summary["mean_phase_seconds"],
            "state_MB": summary["final_state_bytes"] / 2**20,
        })
    print_table(f"Class-incremental {scenario.name}, seed {seed}, {scenario.n_phases} phases (accuracy %)", rows,
                ["learner", "avg_inc_acc", "last_acc", "forgetting", "s_per_phase", "state_MB"])
    return rows

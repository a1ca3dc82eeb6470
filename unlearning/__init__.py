"""Exact unlearning on analytic heads, and the gradient-based unlearning methods it is compared against.

``unlearning.exact`` forgets samples, classes and sources by subtracting sufficient statistics (the result equals
retraining the head without them); ``unlearning.factor`` is the kept Cholesky factor with the low-rank (Woodbury)
correction it uses for small requests and ``unlearning.solvers`` the two solvers that follow the statistics;
``unlearning.ledger`` keeps sample fingerprints; ``unlearning.metrics`` holds the field's metrics;
``unlearning.methods`` puts exact and gradient methods behind one interface.
"""

from unlearning.exact import (
    Receipt,
    UnlearningHead,
    certifies,
    factorize,
    forget_class,
    forget_samples,
    forget_source,
    init_unlearning_head,
    learn,
    solve,
)

__all__ = [
    "Receipt",
    "UnlearningHead",
    "certifies",
    "factorize",
    "forget_class",
    "forget_samples",
    "forget_source",
    "init_unlearning_head",
    "learn",
    "solve",
]

"""Exact unlearning on analytic heads, and the gradient-based unlearning methods it is compared against.

``unlearning.exact`` forgets samples, classes and sources by subtracting sufficient statistics (the result equals
retraining the head without them); ``unlearning.factor`` is the kept Cholesky factor with the low-rank (Woodbury)
correction it uses for small requests and ``unlearning.solvers`` the two solvers that follow the statistics;
``unlearning.ledger`` keeps sample fingerprints; ``unlearning.metrics`` holds the field's metrics;
``unlearning.methods`` puts exact and gradient methods behind one interface; ``unlearning.network`` runs the
gradient methods on whole networks (a fine-tuned pretrained backbone, a small CNN from scratch), beside residual
feature alignment (LoRA adapters) and SISA, the exact sharded peer.
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
from unlearning.network import (
    Network,
    NetworkUnlearner,
    ResidualAlignment,
    Sisa,
    SisaUnlearner,
    small_resnet,
    split_backbone,
    train_network,
    train_sisa,
)

__all__ = [
    "Network",
    "NetworkUnlearner",
    "Receipt",
    "ResidualAlignment",
    "Sisa",
    "SisaUnlearner",
    "UnlearningHead",
    "certifies",
    "factorize",
    "forget_class",
    "forget_samples",
    "forget_source",
    "init_unlearning_head",
    "learn",
    "small_resnet",
    "solve",
    "split_backbone",
    "train_network",
    "train_sisa",
]

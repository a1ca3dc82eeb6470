"""Exemplar-free continual learning with closed-form heads, on the additive statistics of :mod:`analytic`.

Every learner — analytic or baseline — is a :class:`Learner` (``init`` / ``learn`` / ``predict``, pure functions over
a :class:`ContinualState` pytree), so a benchmark loops over them. Modules: ``continual.scenarios`` (B{base}-Inc{k},
Si-Blurry, long-tailed and online streams), ``continual.acil`` (ACIL, G-ACIL, GKEAL), ``continual.ds_al``,
``continual.air`` (AIR, G-AIR), ``continual.aef_ocl``, ``continual.base_training`` (the CIFAR ResNet-32 that ACIL,
DS-AL and GKEAL train on the base classes and freeze), ``continual.baselines`` (fine-tuning, joint SGD / ridge, NCM,
SLDA, RanPAC), ``continual.evaluation`` (accuracy matrix, Ā, A_T, forgetting, BWT, CSV and plots) and
``continual.datasets`` (the 30-class Fashion-MNIST + MNIST-5k + Animal-MNIST stream), ``continual.stream`` (an online
stream as one ``jax.lax.scan`` of RLS updates, a prediction per batch).
"""

from continual.acil import acil, g_acil, gkeal
from continual.aef_ocl import aef_ocl
from continual.air import air, balancing_weights, class_gram_bytes, g_air
from continual.base_training import FEATURE_DIM, BaseNetwork, cifar_resnet, train_base
from continual.baselines import fine_tuning, joint_ridge, joint_sgd, ncm, ranpac, slda
from continual.ds_al import choose_compensation_ratio, ds_al
from continual.evaluation import (
    ContinualRun,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    last_accuracy,
    plot_accuracy,
    run,
    write_csv,
)
from continual.learner import ContinualState, Learner, state_bytes
from continual.scenarios import SEEDS, Scenario, class_incremental, class_order, long_tailed, online, si_blurry
from continual.stream import online_stream

__all__ = [
    "FEATURE_DIM",
    "SEEDS",
    "BaseNetwork",
    "ContinualRun",
    "ContinualState",
    "Learner",
    "Scenario",
    "acil",
    "aef_ocl",
    "air",
    "average_incremental_accuracy",
    "backward_transfer",
    "balancing_weights",
    "choose_compensation_ratio",
    "class_gram_bytes",
    "class_incremental",
    "cifar_resnet",
    "class_order",
    "ds_al",
    "fine_tuning",
    "forgetting",
    "g_acil",
    "g_air",
    "gkeal",
    "joint_ridge",
    "joint_sgd",
    "last_accuracy",
    "long_tailed",
    "ncm",
    "online",
    "online_stream",
    "plot_accuracy",
    "ranpac",
    "run",
    "si_blurry",
    "slda",
    "train_base",
    "state_bytes",
    "write_csv",
]

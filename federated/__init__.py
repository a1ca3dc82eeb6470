"""Analytic federated learning: one round of additive statistics gives exactly the centralized ridge head.

Modules: ``federated.partition`` (IID, Dirichlet, shard and quantity-skew splits), ``federated.payload`` (what a
client sends, packed or as a triangular factor, and validated), ``federated.aggregation`` (the summed-statistics law, the paper's
absolute-aggregation law, pairwise and folded into running sums, and the regularization intermediary),
``federated.server`` (validated receipt and client-level unlearning), ``federated.secure`` (secure aggregation:
SecAgg / SecAgg+), ``federated.hierarchy`` (a tree of edge aggregators), ``federated.simulation`` (many clients in
one process), ``federated.privacy`` (differential privacy for the statistics: clipping, the Gaussian mechanism
central or as discrete-Gaussian shares, accounted with dp-accounting), ``federated.baselines`` (FedAvg / FedProx /
SCAFFOLD, and DP-FedAvg, on the shared gradient head), ``federated.peers`` (the cheap one-round peers FedNCM, FedCOF
and Fed3R) and ``federated.flower_app`` (the same protocols as a Flower app) with ``federated.flower_runtime``
(``flwr run`` on Flower's simulation and deployment runtimes).
"""

from federated.aggregation import (
    LocalSolution,
    PartialSums,
    aggregate_pair,
    aggregate_solutions,
    aggregate_statistics,
    combine_partials,
    client_statistics,
    local_solution,
    push_solution,
    remove_regularization,
)
from federated.hierarchy import LevelReport, SecureEdges, aggregator_levels, tree_plan, tree_round
from federated.partition import (
    dirichlet_partition,
    iid_partition,
    make_partition,
    quantity_skew_partition,
    shard_partition,
)
from federated.peers import (
    ClassMeans,
    class_covariances,
    class_means_nbytes,
    client_class_means,
    fedcof_gram,
    fedcof_head,
    fedncm_head,
    pooled_class_means,
    random_feature_statistics,
)
from federated.payload import (
    UploadRejected,
    check_payload,
    decode_statistics,
    encode_factor,
    encode_statistics,
    payload_nbytes,
    statistics_nbytes,
)
from federated.privacy import (
    NoiseCalibration,
    PrivateStatistics,
    calibrate_distributed_noise,
    calibrate_noise,
    calibrate_noise_multiplier,
    cap_samples,
    clip_features,
    distributed_epsilon,
    gaussian_epsilon,
    noise_spectral_bound,
    noisy_share,
    privatize_statistics,
    release_from_sum,
    sample_discrete_gaussian,
    solve_private,
)
from federated.server import (
    ClientRegistry,
    SolutionAggregate,
    StatisticsAggregate,
    solve,
    receive,
    receive_many,
    receive_solution,
    receive_solutions,
    remove_client,
    init_aggregate,
    init_solution_aggregate,
)

__all__ = [
    "ClassMeans",
    "ClientRegistry",
    "LevelReport",
    "LocalSolution",
    "NoiseCalibration",
    "PartialSums",
    "PrivateStatistics",
    "SecureEdges",
    "SolutionAggregate",
    "StatisticsAggregate",
    "UploadRejected",
    "aggregate_pair",
    "aggregate_solutions",
    "aggregate_statistics",
    "aggregator_levels",
    "calibrate_distributed_noise",
    "calibrate_noise",
    "calibrate_noise_multiplier",
    "cap_samples",
    "check_payload",
    "class_covariances",
    "class_means_nbytes",
    "client_class_means",
    "client_statistics",
    "clip_features",
    "combine_partials",
    "decode_statistics",
    "dirichlet_partition",
    "encode_factor",
    "encode_statistics",
    "fedcof_gram",
    "fedcof_head",
    "fedncm_head",
    "distributed_epsilon",
    "gaussian_epsilon",
    "iid_partition",
    "init_aggregate",
    "init_solution_aggregate",
    "local_solution",
    "make_partition",
    "pooled_class_means",
    "noise_spectral_bound",
    "noisy_share",
    "payload_nbytes",
    "privatize_statistics",
    "push_solution",
    "quantity_skew_partition",
    "random_feature_statistics",
    "receive",
    "receive_many",
    "receive_solution",
    "receive_solutions",
    "release_from_sum",
    "remove_client",
    "remove_regularization",
    "sample_discrete_gaussian",
    "shard_partition",
    "solve",
    "solve_private",
    "statistics_nbytes",
    "tree_plan",
    "tree_round",
]

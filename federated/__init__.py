"""Analytic federated learning: one round of additive statistics gives exactly the centralized ridge head.

Modules: ``federated.partition`` (IID, Dirichlet, shard and quantity-skew splits), ``federated.payload`` (what a
client sends, packed or as a triangular factor, and validated), ``federated.aggregation`` (the summed-statistics law, the paper's
absolute-aggregation law, pairwise and folded into running sums, and the regularization intermediary),
``federated.server`` (validated receipt and client-level unlearning), ``federated.secure`` (secure aggregation:
SecAgg / SecAgg+), ``federated.hierarchy`` (a tree of edge aggregators), ``federated.simulation`` (many clients in
one process), ``federated.baselines`` (FedAvg / FedProx / SCAFFOLD on the shared gradient head), ``federated.peers``
(the cheap one-round peers FedNCM, FedCOF and Fed3R) and ``federated.flower_app`` (the same protocols as a Flower
app) with ``federated.flower_runtime`` (``flwr run`` on Flower's simulation and deployment runtimes).
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
from federated.hierarchy import LevelReport, aggregator_levels, tree_plan, tree_round
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
    "PartialSums",
    "SolutionAggregate",
    "StatisticsAggregate",
    "UploadRejected",
    "aggregate_pair",
    "aggregate_solutions",
    "aggregate_statistics",
    "aggregator_levels",
    "check_payload",
    "class_covariances",
    "class_means_nbytes",
    "client_class_means",
    "client_statistics",
    "combine_partials",
    "decode_statistics",
    "dirichlet_partition",
    "encode_factor",
    "encode_statistics",
    "fedcof_gram",
    "fedcof_head",
    "fedncm_head",
    "iid_partition",
    "init_aggregate",
    "init_solution_aggregate",
    "local_solution",
    "make_partition",
    "pooled_class_means",
    "payload_nbytes",
    "push_solution",
    "quantity_skew_partition",
    "random_feature_statistics",
    "receive",
    "receive_many",
    "receive_solution",
    "receive_solutions",
    "remove_client",
    "remove_regularization",
    "shard_partition",
    "solve",
    "statistics_nbytes",
    "tree_plan",
    "tree_round",
]

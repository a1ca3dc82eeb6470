"""AFL and FedAvg as a Flower app (Message API): the same protocol as the in-process simulator, on Flower's runtimes.

``server_app`` and ``client_app`` read their settings from the run configuration (``[tool.flwr.app.config]`` of the
Flower app that :func:`federated.flower_runtime.write_app` writes, or ``flwr run --run-config``);
:mod:`federated.flower_runtime` runs them on Flower's simulation and deployment runtimes. Each client finds its
samples through ``node_config["partition-id"]`` in a federation directory written by :func:`write_federation`
(memory-mapped ``.npy`` files, so many virtual clients in one process share one copy).

AFL (``method = "afl"``): one round. The server sends ``query.statistics`` to every node, keeping at most ``wave``
queries unanswered (a new query goes out as soon as a reply comes in, so the clients never wait for the slowest
one of a batch); each client replies with its payload (:func:`federated.payload.encode_statistics`, packed Gram).
Every ``pull-interval`` seconds the server pulls the replies that arrived, validates and sums them with
:func:`federated.server.receive_many` and drops them, so memory stays at ``wave`` payloads. It then solves the head
and writes ``head.npz`` and ``result.json`` (state hash, bytes, rejected uploads, nodes that sent no upload, test
accuracy, and the seconds until the first upload arrived) to ``output``.

Secure AFL (``method = "secagg"``): the same one-round sum, but the server only ever sees masked uploads — the
four rounds of :mod:`federated.secure` (SecAgg, or SecAgg+ with ``secagg-degree`` neighbours per client) as Flower
Messages ``query.secagg_advertise``, ``query.secagg_share``, ``query.secagg_mask`` and ``query.secagg_unmask``.
Each round is a barrier whose queries go out as AFL's do (at most ``wave`` unanswered) and which ends when every
query is answered or ``timeout`` seconds have passed. A client's secrets stay in its node's ``context.state``
between rounds; a node that errs or times out in a round is a dropout of that round. The clients upload fixed-point
statistics (``precision`` is ignored); the unmasked sum goes through :func:`federated.server.receive`, so
``result.json`` carries the same state hash as the plain sum of the survivors' uploads, plus ``survivors``,
``dropped``, for each round the bytes it moved down and up and the messages sent and answered without error
(``bytes``), and each round's seconds from its first query to its last reply (``round_seconds``). ``secagg-drop``
(partition ids, comma separated) makes those clients fail after sharing their keys, the case the protocol recovers
from.

FedAvg (``method = "fedavg"``): Flower's own :class:`flwr.serverapp.strategy.FedAvg`, clients training the shared
softmax head with :func:`analytic.gradient.train`; the server evaluates the global head on the test set each round.

Run configuration keys: ``federation`` (directory), ``output`` (directory), ``method``, ``ridge``, ``precision``,
``num-clients`` (nodes to wait for), ``wave``, ``pull-interval`` and ``timeout`` (seconds), and for FedAvg
``rounds``, ``fraction``, ``local-epochs``, ``learning-rate``, ``batch-size``, and for secure AFL
``secagg-degree`` (0: the complete graph), ``secagg-threshold`` (0: an honest majority of each neighbourhood) and
``secagg-drop``.
"""

from __future__ import annotations

import functools
import itertools
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
except ImportError as error:
    raise ImportError(
        f"federated.flower_app needs Flower ({error}): pip install 'analytic-learning[flower]'"
    ) from error

import analytic
from analytic import gradient
from federated import secure
from federated.aggregation import client_statistics
from federated.payload import encode_statistics, payload_nbytes
from federated.server import init_aggregate, receive, receive_many, solve

DEFAULTS = {
    "method": "afl", "ridge": 1.0, "precision": "float64", "wave": 100, "pull-interval": 0.05, "timeout": 600.0,
    "rounds": 20, "fraction": 0.1, "local-epochs": 1, "learning-rate": 0.05, "batch-size": 32,
    "secagg-degree": 0, "secagg-threshold": 0, "secagg-drop": "",
}


def write_federation(directory, features, labels, parts, test_features=None, test_labels=None) -> Path:
    """Write a federation for the Flower clients: features, labels, and each client's rows (``parts``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    order = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    bounds = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    arrays = {"features": np.asarray(features), "labels": np.asarray(labels, np.int64), "order": order,
              "bounds": bounds}
    if test_features is not None:
        arrays.update(test_features=np.asarray(test_features), test_labels=np.asarray(test_labels, np.int64))
    for name, value in arrays.items():
        np.save(directory / f"{name}.npy", value)
    return directory


@functools.lru_cache(maxsize=4)
def _federation(directory: str) -> dict[str, np.ndarray]:
    arrays = {path.stem: np.load(path, mmap_mode="r") for path in Path(directory).glob("*.npy")}
    missing = {"features", "labels", "order", "bounds"}.difference(arrays)
    if missing:
        raise FileNotFoundError(f"{directory} is not a federation written by write_federation: no {sorted(missing)}")
    return arrays


def _client_rows(directory: str, partition: int) -> tuple[np.ndarray, np.ndarray]:
    data = _federation(directory)
    rows = np.sort(data["order"][data["bounds"][partition] : data["bounds"][partition + 1]])
    return np.asarray(data["features"][rows]), np.asarray(data["labels"][rows])


def _settings(context: Context) -> dict:
    return {**DEFAULTS, **dict(context.run_config)}


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()})


def _from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def _params_to_record(params) -> ArrayRecord:
    return _to_record({f"{i}.{name}": np.asarray(v) for i, layer in enumerate(params) for name, v in layer.items()})


def _params_from_record(record: ArrayRecord) -> tuple[dict, ...]:
    arrays = _from_record(record)
    layers = sorted({int(key.split(".")[0]) for key in arrays})
    return tuple({name: arrays[f"{i}.{name}"] for name in ("weights", "bias")} for i in layers)


server_app = ServerApp()  # for [tool.flwr.app.components]
client_app = ClientApp()


# ---------------------------------------------------------------------------------------------------- clients


@client_app.query("statistics")
def _statistics_reply(message: Message, context: Context) -> Message:
    settings = _settings(context)
    partition = _partition(context)
    features, labels = _client_rows(settings["federation"], partition)
    class_ids = np.asarray(message.content["config"]["class-ids"], np.int64)
    stats = client_statistics(features, labels, features.shape[1], precision=settings["precision"])
    content = RecordDict({
        "statistics": _to_record(encode_statistics(stats, class_ids)),
        "config": ConfigRecord({"client-id": f"client-{partition}"}),
    })
    return Message(content, reply_to=message)


def _client_id(message: Message) -> str:
    return f"node-{message.metadata.dst_node_id}"


def _secure_state(context: Context) -> secure.ClientState:
    """This node's secure-aggregation secrets, kept in its own ``context.state`` between the rounds (never sent)."""
    return pickle.loads(context.state.config_records["secagg"]["state"])


def _keep_secure_state(context: Context, state: secure.ClientState) -> None:
    context.state.config_records["secagg"] = ConfigRecord({"state": pickle.dumps(state)})


def _round_config(record: ConfigRecord) -> secure.RoundConfig:
    return secure.RoundConfig(
        round_id=str(record["round-id"]), clients=tuple(record["clients"]), dim=int(record["dim"]),
        class_ids=tuple(record["class-ids"]), degree=int(record["degree"]), threshold=int(record["threshold"]),
        graph_seed=int(record["graph-seed"]),
    )


def _reply(message: Message, config: dict) -> Message:
    return Message(RecordDict({"config": ConfigRecord(config)}), reply_to=message)


@client_app.query("secagg_advertise")
def _secagg_advertise(message: Message, context: Context) -> Message:
    state, advertisement = secure.advertise_keys(_round_config(message.content["config"]), _client_id(message))
    _keep_secure_state(context, state)
    return _reply(message, {"keys": list(advertisement)})


@client_app.query("secagg_share")
def _secagg_share(message: Message, context: Context) -> Message:
    adverts = {peer: secure.KeyAdvertisement(*keys) for peer, keys in message.content["config"].items()}
    state, sent = secure.share_keys(_secure_state(context), adverts)
    _keep_secure_state(context, state)
    return _reply(message, sent)


@client_app.query("secagg_mask")
def _secagg_mask(message: Message, context: Context) -> Message:
    settings = _settings(context)
    partition = _partition(context)
    if str(partition) in str(settings["secagg-drop"]).split(","):
        raise ConnectionError(f"partition {partition} drops out after sharing its keys (secagg-drop)")
    state = _secure_state(context)
    features, labels = _client_rows(settings["federation"], partition)
    stats = client_statistics(features, labels, features.shape[1], precision="fixed")
    payload = encode_statistics(stats, np.asarray(state.config.class_ids, np.int64))
    state, masked = secure.mask_input(state, dict(message.content["config"]), payload)
    _keep_secure_state(context, state)
    return Message(RecordDict({"masked": _to_record({"words": masked})}), reply_to=message)


def _share_bytes(kind: str, point: int, share: int) -> bytes:
    return kind[0].encode() + point.to_bytes(4, "big") + share.to_bytes(17, "big")


def _share_from_bytes(data: bytes) -> tuple[str, int, int]:
    return {"s": "self", "m": "mask"}[chr(data[0])], int.from_bytes(data[1:5], "big"), int.from_bytes(data[5:], "big")


@client_app.query("secagg_unmask")
def _secagg_unmask(message: Message, context: Context) -> Message:
    record = message.content["config"]
    request = secure.UnmaskRequest(tuple(record["survivors"]), tuple(record.get("dropped", [])))
    state, revealed = secure.reveal_shares(_secure_state(context), request)
    _keep_secure_state(context, state)
    return _reply(message, {owner: _share_bytes(*share) for owner, share in revealed.items()})


@client_app.train()
def _train_reply(message: Message, context: Context) -> Message:
    settings = _settings(context)
    features, labels = _client_rows(settings["federation"], _partition(context))
    params = _params_from_record(message.content["arrays"])
    if labels.size:
        optimizer = gradient.make_optimizer(float(settings["learning-rate"]), momentum=0.0, weight_decay=0.0)
        params, _ = gradient.train(
            params, gradient.classification_loss, {"features": features.astype(np.float32), "labels": labels},
            optimizer=optimizer, epochs=int(settings["local-epochs"]), batch_size=int(settings["batch-size"]),
            seed=_partition(context),
        )
    content = RecordDict({"arrays": _params_to_record(params), "metrics": MetricRecord({"num-examples": labels.size})})
    return Message(content, reply_to=message)


# ----------------------------------------------------------------------------------------------------- server


def _wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected or time.monotonic() > deadline:
            return nodes
        time.sleep(0.1)


def _statistics_queries(nodes: list[int], class_ids: np.ndarray) -> Iterator[Message]:
    config = ConfigRecord({"class-ids": class_ids.tolist()})
    for node in nodes:
        yield Message(RecordDict({"config": config}), dst_node_id=node, message_type="query.statistics", group_id="1")


def _stream_replies(grid: Grid, messages: Iterator[Message], window: int, interval: float,
                    timeout: float) -> Iterator[list[Message]]:
    """Push ``messages`` with at most ``window`` of them unanswered (one until the first reply arrives), and yield
    the replies in the batches one pull every ``interval`` seconds brings, until every message is answered or
    ``timeout`` seconds have passed.

    The single first query matters on Flower's simulation runtime: every 0.1 s it scans all unanswered messages
    once for each of its nodes, so a full window pushed while the clients start up only takes CPU from them.
    """
    deadline = time.monotonic() + timeout
    unanswered: set[str] = set()
    limit = 1
    while True:
        batch = list(itertools.islice(messages, max(limit - len(unanswered), 0)))
        if batch:
            unanswered.update(message_id for message_id in grid.push_messages(batch) if message_id)
        if not unanswered or time.monotonic() > deadline:
            return
        time.sleep(interval)
        replies = list(grid.pull_messages(unanswered))
        unanswered.difference_update(reply.metadata.reply_to_message_id for reply in replies)
        if replies:
            limit = window
            yield replies


def _upload(reply: Message) -> tuple[str, dict[str, np.ndarray]]:
    """A statistics reply as ``(client id, payload)`` for :func:`federated.server.receive_many`."""
    payload = _from_record(reply.content["statistics"])
    if payload.get("count", np.zeros(0)).shape == (1,):  # Flower's Array carries 0-d arrays as shape (1,)
        payload["count"] = payload["count"].reshape(())
    return str(reply.content["config"]["client-id"]), payload


def _run_afl(grid: Grid, settings: dict) -> dict:
    federation = _federation(settings["federation"])
    dim = federation["features"].shape[1]
    class_ids = np.unique(federation["labels"])
    started = time.perf_counter()
    nodes = _wait_for_nodes(grid, int(settings["num-clients"]), float(settings["timeout"]))
    aggregate = init_aggregate(dim, class_ids, precision=settings["precision"])
    rejected, bytes_up, first_upload = {}, 0, None
    replies = _stream_replies(grid, _statistics_queries(nodes, class_ids), int(settings["wave"]),
                              float(settings["pull-interval"]), float(settings["timeout"]))
    for batch in replies:
        uploads = [_upload(reply) for reply in batch if not reply.has_error()]
        if uploads and first_upload is None:
            first_upload = time.perf_counter() - started
        bytes_up += sum(payload_nbytes(payload) for _, payload in uploads)
        aggregate, batch_rejected = receive_many(aggregate, uploads)
        rejected.update(batch_rejected)
    head = solve(aggregate, float(settings["ridge"]))
    seconds = time.perf_counter() - started
    output = Path(settings["output"])
    output.mkdir(parents=True, exist_ok=True)
    analytic.save(output / "head.npz", head)
    result = {
        "method": "afl", "nodes": len(nodes), "n_clients": aggregate.n_clients,
        "failures": len(nodes) - aggregate.n_clients - len(rejected), "rejected": rejected, "bytes_up": bytes_up,
        "seconds": seconds, "seconds_to_first_upload": first_upload,
        "state_hash": analytic.state_hash(aggregate.statistics), "clients": sorted(aggregate.received.clients),
    }
    if "test_features" in federation:
        predicted = analytic.predict_labels(head, np.asarray(federation["test_features"]))
        result["accuracy"] = float(np.mean(predicted == federation["test_labels"]))
    return result


def _exchange(grid: Grid, stage: str, contents: dict[str, RecordDict], settings: dict) -> dict[str, Message]:
    """One barrier round of the secure protocol: ``contents[client]`` to each client, sent as AFL sends its queries
    (:func:`_stream_replies`: at most ``wave`` unanswered), and the replies that came back without error within
    ``timeout`` seconds, by client id."""
    messages = (Message(content, dst_node_id=int(client.removeprefix("node-")), message_type=f"query.{stage}",
                        group_id=stage) for client, content in contents.items())
    batches = _stream_replies(grid, messages, int(settings["wave"]), float(settings["pull-interval"]),
                              float(settings["timeout"]))
    return {f"node-{reply.metadata.src_node_id}": reply for reply in itertools.chain.from_iterable(batches)
            if not reply.has_error()}


def _config_content(config: dict) -> RecordDict:
    return RecordDict({"config": ConfigRecord(config)})


def _record_nbytes(contents) -> int:
    """Bytes of the byte strings and arrays in messages' records (the protocol's payload, without framing)."""
    total = 0
    for content in contents:
        for record in content.values():
            for value in record.values():
                if isinstance(value, Array):
                    total += value.numpy().nbytes
                elif isinstance(value, (bytes, str)):
                    total += len(value)
                elif isinstance(value, list):
                    total += sum(len(v) for v in value if isinstance(v, (bytes, str)))
    return total


def _run_secagg(grid: Grid, settings: dict) -> dict:
    federation = _federation(settings["federation"])
    dim = federation["features"].shape[1]
    class_ids = np.unique(federation["labels"])
    started = time.perf_counter()
    nodes = _wait_for_nodes(grid, int(settings["num-clients"]), float(settings["timeout"]))
    clients = [f"node-{node}" for node in nodes]
    degree, threshold = int(settings["secagg-degree"]), int(settings["secagg-threshold"])
    config = secure.init_round(clients, dim, class_ids, degree=degree or None, threshold=threshold or None)
    announced = {"round-id": config.round_id, "clients": list(config.clients), "dim": config.dim,
                 "class-ids": list(config.class_ids), "degree": config.degree, "threshold": config.threshold,
                 "graph-seed": config.graph_seed}
    bytes_moved, round_seconds = {}, {}

    def exchange(stage, contents):
        round_started = time.perf_counter()
        replies = _exchange(grid, stage, contents, settings)
        round_seconds[stage] = time.perf_counter() - round_started
        bytes_moved[stage] = {"down": _record_nbytes(contents.values()),
                              "up": _record_nbytes(reply.content for reply in replies.values()),
                              "sent": len(contents), "answered": len(replies)}
        return replies

    replies = exchange("secagg_advertise", {c: _config_content(announced) for c in config.clients})
    adverts = {c: secure.KeyAdvertisement(*reply.content["config"]["keys"]) for c, reply in replies.items()}
    server, forward = secure.collect_keys(config, adverts)
    replies = exchange("secagg_share", {c: _config_content({v: list(a) for v, a in f.items()})
                                        for c, f in forward.items()})
    server, routed = secure.route_shares(server, {c: dict(r.content["config"]) for c, r in replies.items()})
    replies = exchange("secagg_mask", {c: _config_content(shares) for c, shares in routed.items()})
    server, requests = secure.collect_masked(
        server, {c: _from_record(r.content["masked"])["words"] for c, r in replies.items()})
    replies = exchange("secagg_unmask", {c: _config_content({"survivors": list(r.survivors)} |
                                                            ({"dropped": list(r.dropped)} if r.dropped else {}))
                                         for c, r in requests.items()})
    revealed = {c: {owner: _share_from_bytes(data) for owner, data in r.content["config"].items()}
                for c, r in replies.items()}
    total = secure.unmask(server, revealed)
    aggregate = receive(init_aggregate(dim, class_ids, precision="fixed"), "secure-sum", total)
    head = solve(aggregate, float(settings["ridge"]))
    seconds = time.perf_counter() - started
    output = Path(settings["output"])
    output.mkdir(parents=True, exist_ok=True)
    analytic.save(output / "head.npz", head)
    result = {
        "method": "secagg", "nodes": len(nodes), "degree": config.degree, "threshold": config.threshold,
        "survivors": list(server.survivors), "dropped": sorted(set(server.shared) - set(server.survivors)),
        "bytes": bytes_moved, "round_seconds": round_seconds, "seconds": seconds,
        "state_hash": analytic.state_hash(aggregate.statistics),
    }
    if "test_features" in federation:
        predicted = analytic.predict_labels(head, np.asarray(federation["test_features"]))
        result["accuracy"] = float(np.mean(predicted == federation["test_labels"]))
    return result


def _run_fedavg(grid: Grid, settings: dict) -> dict:
    federation = _federation(settings["federation"])
    test_features = np.asarray(federation["test_features"], np.float32)
    test_labels = np.asarray(federation["test_labels"])
    n_classes = int(np.max(federation["labels"])) + 1
    params = gradient.init_head(federation["features"].shape[1], n_classes, seed=0)
    expected = int(settings["num-clients"])
    _wait_for_nodes(grid, expected, float(settings["timeout"]))
    accuracy: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        value = gradient.accuracy(_params_from_record(arrays), test_features, test_labels)
        if server_round > 0:
            accuracy.append(value)
        return MetricRecord({"accuracy": value})

    strategy = FedAvg(fraction_train=float(settings["fraction"]), fraction_evaluate=0.0,
                      min_available_nodes=expected, min_train_nodes=1)
    started = time.perf_counter()
    result = strategy.start(grid=grid, initial_arrays=_params_to_record(params), num_rounds=int(settings["rounds"]),
                            timeout=float(settings["timeout"]), evaluate_fn=evaluate)
    seconds = time.perf_counter() - started
    output = Path(settings["output"])
    output.mkdir(parents=True, exist_ok=True)
    np.savez(output / "fedavg_params.npz", **_from_record(result.arrays))
    return {"method": "fedavg", "accuracy_per_round": accuracy, "seconds": seconds}


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    settings = _settings(context)
    run = {"afl": _run_afl, "secagg": _run_secagg, "fedavg": _run_fedavg}[settings["method"]]
    result = run(grid, settings)
    output = Path(settings["output"])
    output.mkdir(parents=True, exist_ok=True)
    (output / "result.json").write_text(json.dumps(result, indent=2))

"""Secure aggregation (SecAgg / SecAgg+): the unmasked sum is the plain int64 sum bit for bit, with or without
dropouts; what the server sees of one client is uniform noise, a dropped client's late upload included; too few
survivors, tampered or inconsistent shares and bad inputs are refused without changing any state."""

import dataclasses

import numpy as np
import pytest
from conftest import make_classification
from scipy import stats as scipy_stats

import analytic
import federated
from federated import secure

D = 16
CLASSES = (0, 1, 2, 3)
RIDGE = 0.5


@pytest.fixture(scope="module")
def uploads():
    x, y = make_classification(n=2_000, d=D, classes=CLASSES, seed=11)
    parts = federated.dirichlet_partition(y, 12, 0.3, seed=1)
    return {f"client-{k:02d}": federated.encode_statistics(
        federated.client_statistics(x[r], y[r], D, precision="fixed"), CLASSES) for k, r in enumerate(parts)}


def plain_aggregate(payloads, keep):
    """The plain fixed-point sum of the uploads of ``keep`` (their layout gives d)."""
    dim = next(iter(payloads.values()))["feature_sum"].size
    aggregate, rejected = federated.receive_many(federated.init_aggregate(dim, CLASSES, precision="fixed"),
                                                 [(k, payloads[k]) for k in sorted(keep)])
    assert not rejected
    return aggregate


@dataclasses.dataclass
class Round:
    """Every party's state and message of one in-process secure round."""

    config: secure.RoundConfig
    clients: dict
    server: secure.ServerState
    routed: dict = None
    masked: dict = None
    requests: dict = None
    revealed: dict = None


def share_round(payloads, **options):
    """Rounds 0 and 1 for every client of ``payloads`` (their layout gives the round's d and class ids)."""
    layout = next(iter(payloads.values()))
    config = secure.init_round(payloads, layout["feature_sum"].size, layout["class_ids"], **options)
    clients, adverts = {}, {}
    for client_id in config.clients:
        clients[client_id], adverts[client_id] = secure.advertise_keys(config, client_id)
    server, forward = secure.collect_keys(config, adverts)
    sent = {}
    for client_id in config.clients:
        clients[client_id], sent[client_id] = secure.share_keys(clients[client_id], forward[client_id])
    server, routed = secure.route_shares(server, sent)
    return Round(config, clients, server, routed)


def mask_round(round_, payloads, dropped=()):
    """Round 2: every client masks; the ``dropped`` ones' inputs never reach the server."""
    round_.masked = {}
    for client_id in round_.config.clients:
        round_.clients[client_id], round_.masked[client_id] = secure.mask_input(
            round_.clients[client_id], round_.routed[client_id], payloads[client_id])
    arrived = {k: v for k, v in round_.masked.items() if k not in set(dropped)}
    round_.server, round_.requests = secure.collect_masked(round_.server, arrived)
    return round_


def unmask_round(round_):
    round_.revealed = {}
    for client_id, request in round_.requests.items():
        round_.clients[client_id], round_.revealed[client_id] = secure.reveal_shares(round_.clients[client_id], request)
    return secure.unmask(round_.server, round_.revealed)


def secure_sum(payloads, dropped=(), **options):
    round_ = mask_round(share_round(payloads, **options), payloads, dropped)
    return unmask_round(round_), round_


def check_equals_plain(total, payloads, keep):
    plain = plain_aggregate(payloads, keep)
    secure_aggregate = federated.receive(federated.init_aggregate(D, CLASSES, precision="fixed"), "sum", total)
    for name in ("gram", "cross", "feature_sum", "count", "class_counts"):
        np.testing.assert_array_equal(total[name], plain.total[name])
    assert analytic.state_hash(secure_aggregate.statistics) == analytic.state_hash(plain.statistics)
    np.testing.assert_array_equal(federated.solve(secure_aggregate, RIDGE).weights,
                                  federated.solve(plain, RIDGE).weights)


def test_secagg_sum_is_the_plain_sum_bit_for_bit(uploads):
    total, _ = secure_sum(uploads)
    check_equals_plain(total, uploads, uploads)


def test_up_to_n_minus_t_dropouts_are_recovered_bit_for_bit(uploads):
    # complete graph, n = 12, t = 6: six clients may drop after sharing their keys
    dropped = {"client-01", "client-03", "client-04", "client-07", "client-09", "client-10"}
    total, round_ = secure_sum(uploads, dropped=dropped)
    assert round_.config.threshold == 6
    check_equals_plain(total, uploads, set(uploads) - dropped)


def test_secagg_plus_neighbour_graph_with_dropouts(uploads):
    dropped = {"client-02", "client-08"}
    total, round_ = secure_sum(uploads, dropped=dropped, degree=6, threshold=3, graph_seed=5)
    graph = round_.config.graph
    assert all(len(peers) == 6 and all(u in graph[v] for v in peers) for u, peers in graph.items())
    assert all(len(request.survivors) <= 7 for request in round_.requests.values())  # only neighbours are asked
    check_equals_plain(total, uploads, set(uploads) - dropped)


def test_fewer_survivors_than_the_threshold_abort_the_round_and_change_nothing(uploads):
    round_ = share_round(uploads)  # t = 6
    server_before = round_.server
    dropped = {f"client-{k:02d}" for k in range(7)}  # 5 survivors
    with pytest.raises(analytic.IntegrityError, match=r"aborted: only 5 share holders .* threshold is 6.*nothing"):
        mask_round(round_, uploads, dropped)
    assert round_.server is server_before and server_before.masked_sum is None and server_before.survivors == ()


def uniformity_p_values(vector):
    """Chi-square over byte values and Kolmogorov-Smirnov of the words against U(0, 1)."""
    as_bytes = np.frombuffer(np.ascontiguousarray(vector).tobytes(), np.uint8)
    chi_square = scipy_stats.chisquare(np.bincount(as_bytes, minlength=256)).pvalue
    ks = scipy_stats.kstest(vector.astype(np.float64) / 2.0**64, "uniform").pvalue
    return chi_square, ks


def test_the_servers_view_of_one_client_is_uniform_noise(uploads):
    round_ = mask_round(share_round(uploads), uploads)
    plain = np.concatenate([np.asarray(uploads["client-04"][n]).reshape(-1) for n in
                            ("gram", "cross", "feature_sum", "count", "class_counts")]).view(np.uint64)
    assert min(uniformity_p_values(round_.masked["client-04"])) > 1e-3
    assert max(uniformity_p_values(plain)) < 1e-6  # the same tests do detect the unmasked statistics


def test_a_dropped_clients_late_upload_reveals_nothing(uploads):
    late = "client-05"
    total, round_ = secure_sum(uploads, dropped={late})
    check_equals_plain(total, uploads, set(uploads) - {late})
    # All the server holds about the late client: its masked input, its public keys, and the shares of its mask
    # key the survivors revealed — from which it rebuilds the mask key and strips every pair mask.
    shares = sorted((point, share) for r in round_.revealed.values() for owner, (kind, point, share) in r.items()
                    if owner == late and kind == "mask")
    mask_key = secure._mask_key(secure.combine_shares(shares[:round_.config.threshold]), round_.config.round_id, late)
    stripped = round_.masked[late].copy()
    for peer in round_.clients[late].masked_with:
        pair_key = secure._agree(mask_key, round_.server.advertisements[peer].mask_key, "pair mask",
                                 round_.config.round_id, late, peer)
        secure._add(stripped, secure.mask_words(pair_key, stripped.size), -1 if late < peer else 1)
    # What is left is x + PRG(b): the self-mask, whose seed no survivor revealed, hides x completely.
    x = secure._payload_words(uploads[late], round_.config)
    self_mask = secure.mask_words(secure._self_mask_key(round_.clients[late].self_mask_seed, round_.config.round_id,
                                                        late), x.size)
    np.testing.assert_array_equal(stripped - self_mask, x)
    assert min(uniformity_p_values(stripped)) > 1e-3
    assert not any(kind == "self" for r in round_.revealed.values() for owner, (kind, _, _) in r.items()
                   if owner == late)
    # and the survivors will not reveal the other share now: one answer per round, never both kinds for a client
    survivor = "client-00"
    state = round_.clients[survivor]
    with pytest.raises(analytic.IntegrityError, match="after the 'revealed' step"):
        secure.reveal_shares(state, secure.UnmaskRequest(survivors=(survivor, late), dropped=()))
    masked_state = dataclasses.replace(state, stage="masked")
    with pytest.raises(analytic.IntegrityError, match="named both survivor and dropped"):
        secure.reveal_shares(masked_state, secure.UnmaskRequest(survivors=(survivor, late), dropped=(late,)))


def test_a_share_that_fails_authentication_is_refused(uploads):
    round_ = share_round(uploads)
    target, sender = "client-03", "client-07"
    state = round_.clients[target]
    tampered = dict(round_.routed[target])
    tampered[sender] = tampered[sender][:-1] + bytes([tampered[sender][-1] ^ 1])
    with pytest.raises(federated.UploadRejected, match="from client 'client-07' fail authentication"):
        secure.mask_input(state, tampered, uploads[target])
    rerouted = dict(round_.routed[target], **{sender: round_.routed["client-09"][sender]})  # meant for client-09
    with pytest.raises(federated.UploadRejected, match="fail authentication"):
        secure.mask_input(state, rerouted, uploads[target])
    assert round_.clients[target] is state and state.stage == "shared" and sender not in state.held
    secure.mask_input(state, round_.routed[target], uploads[target])  # the genuine shares are accepted


def inconsistent_round(uploads, field):
    """A round where client-06 shares a seed other than the one its round-0 keys were made from."""
    config = secure.init_round(uploads, D, CLASSES)
    clients, adverts = {}, {}
    for client_id in config.clients:
        clients[client_id], adverts[client_id] = secure.advertise_keys(config, client_id)
    clients["client-06"] = dataclasses.replace(clients["client-06"], **{field: bytes(16)})
    server, forward = secure.collect_keys(config, adverts)
    sent = {}
    for client_id in config.clients:
        clients[client_id], sent[client_id] = secure.share_keys(clients[client_id], forward[client_id])
    server, routed = secure.route_shares(server, sent)
    return Round(config, clients, server, routed)


@pytest.mark.parametrize("field, dropped", [("mask_seed", {"client-06"}), ("self_mask_seed", set())])
def test_shares_inconsistent_with_the_advertised_keys_are_detected(uploads, field, dropped):
    round_ = mask_round(inconsistent_round(uploads, field), uploads, dropped)
    with pytest.raises(analytic.IntegrityError, match="client 'client-06' sent inconsistent shares.*advertised"):
        unmask_round(round_)


def test_shamir_shares_rebuild_from_any_t_and_refuse_inconsistent_ones():
    secret = bytes(range(16))
    shares = secure.split_secret(secret, 4, 9)
    rng = np.random.default_rng(0)
    for _ in range(5):
        pick = rng.choice(9, 4, replace=False)
        assert secure.combine_shares([shares[i] for i in pick]) == secret
    try:  # t - 1 shares interpolate to another value: a wrong secret, or one outside the 16-byte range
        assert secure.combine_shares(shares[:3]) != secret
    except analytic.IntegrityError as error:
        assert "interpolate to no 16-byte secret" in str(error)
    with pytest.raises(analytic.IntegrityError, match="distinct points"):
        secure.combine_shares([shares[0], shares[0], shares[1], shares[2]])
    with pytest.raises(analytic.InputError, match="16-byte secret"):
        secure.split_secret(b"short", 2, 3)


def test_bad_inputs_are_refused_without_changing_any_state(uploads):
    with pytest.raises(analytic.InputError, match="degree must be"):
        secure.init_round(uploads, D, CLASSES, degree=5)
    with pytest.raises(analytic.InputError, match="threshold must be"):
        secure.init_round(uploads, D, CLASSES, threshold=12)
    with pytest.raises(analytic.InputError, match="at least 2 distinct clients"):
        secure.init_round(["solo"], D, CLASSES)
    round_ = share_round(uploads)
    with pytest.raises(analytic.InputError, match="not part of round"):
        secure.advertise_keys(round_.config, "stranger")
    state = round_.clients["client-02"]
    x, y = make_classification(n=50, d=D, classes=CLASSES, seed=2)
    float_upload = federated.encode_statistics(federated.client_statistics(x, y, D), CLASSES)
    with pytest.raises(federated.UploadRejected, match=r"cannot mask its upload.*is float64 \(136,\), expected int64"):
        secure.mask_input(state, round_.routed["client-02"], float_upload)
    other_classes = federated.encode_statistics(federated.client_statistics(x, y, D, precision="fixed"), (0, 1, 2, 3, 4))
    with pytest.raises(federated.UploadRejected, match="the round agreed on"):
        secure.mask_input(state, round_.routed["client-02"], other_classes)
    huge = dict(uploads["client-02"], gram=np.full_like(uploads["client-02"]["gram"], 2**59))
    with pytest.raises(analytic.InputError, match="too large for an exact sum over 12 clients"):
        secure.mask_input(state, round_.routed["client-02"], huge)
    with pytest.raises(federated.UploadRejected, match="not its neighbours"):
        secure.mask_input(state, {"stranger": b"x" * 60}, uploads["client-02"])
    assert round_.clients["client-02"] is state and state.stage == "shared"
    with pytest.raises(analytic.IntegrityError, match="cannot share keys after the 'shared' step"):
        secure.share_keys(state, {})
    server = round_.server
    with pytest.raises(federated.UploadRejected, match=r"is float64 \(\d+,\), expected uint64"):
        secure.collect_masked(server, {"client-02": np.zeros(round_.config.words)})
    with pytest.raises(federated.UploadRejected, match="not in the round's second stage"):
        secure.collect_masked(server, {"stranger": np.zeros(round_.config.words, np.uint64)})
    with pytest.raises(analytic.IntegrityError, match="call collect_masked first"):
        secure.unmask(server, {})
    with pytest.raises(federated.UploadRejected, match="malformed key advertisement"):
        secure.collect_keys(round_.config, {"client-00": (b"only one key",)})
    with pytest.raises(federated.UploadRejected, match="not part of round"):
        secure.collect_keys(round_.config, {"stranger": secure.advertise_keys(round_.config, "client-00")[1]})
    assert round_.server is server and server.masked_sum is None


def check_flower_secagg(tmp_path, run, n_nodes, drop):
    """Secure AFL with ``n_nodes`` nodes (d = 8) on a Flower runtime (``run``), partition ``drop`` dropping after
    sharing its keys: the state hash and head of the plain sum of the survivors' uploads, bit for bit. Returns the
    server's result."""
    from federated.flower_app import write_federation

    x, y = make_classification(n=100 * n_nodes, d=8, classes=CLASSES, seed=41)
    parts = federated.dirichlet_partition(y, n_nodes, 0.5, seed=3)
    write_federation(tmp_path / "federation", x, y, parts)
    settings = {"federation": str(tmp_path / "federation"), "output": str(tmp_path / "out"), "method": "secagg",
                "ridge": RIDGE, "timeout": 120.0, "secagg-drop": str(drop)}
    result = run(settings, n_nodes, timeout=180.0)
    payloads = {k: federated.encode_statistics(federated.client_statistics(x[p], y[p], 8, precision="fixed"), CLASSES)
                for k, p in enumerate(parts)}
    plain = plain_aggregate(payloads, set(payloads) - {drop})
    assert len(result["survivors"]) == n_nodes - 1 and len(result["dropped"]) == 1
    assert result["state_hash"] == analytic.state_hash(plain.statistics)
    np.testing.assert_array_equal(analytic.load(tmp_path / "out" / "head.npz").weights,
                                  federated.solve(plain, RIDGE).weights)
    return result


@pytest.mark.slow
def test_flower_simulation_gives_the_plain_sum_of_the_survivors(tmp_path):
    from federated.flower_runtime import run_flower_simulation

    result = check_flower_secagg(tmp_path, run_flower_simulation, 6, drop=2)
    assert result["bytes"]["secagg_mask"]["up"] == 5 * 8 * secure.init_round(["a", "b"], 8, CLASSES).words


@pytest.mark.slow
def test_flower_deployment_gives_the_plain_sum_of_the_survivors(tmp_path):
    from federated.flower_runtime import run_flower_deployment

    check_flower_secagg(tmp_path, run_flower_deployment, 4, drop=1)

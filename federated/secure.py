r"""Secure aggregation (SecAgg, Bonawitz et al., CCS 2017; SecAgg+, Bell et al., CCS 2020) of the exact
fixed-point statistics: the server learns the sum of the clients' uploads and nothing else, even when clients drop.

Every fixed-point upload (``precision="fixed"``) is a vector of int64 words :math:`x_u`, read modulo
:math:`2^{64}`. Client u masks it with one pairwise mask per neighbour v and one self-mask:

.. math::
    y_u = x_u + \mathrm{PRG}(b_u) + \sum_{v \in N(u) \cap U_2} \Delta_{uv}\, \mathrm{PRG}(s_{uv}) \pmod{2^{64}},
    \qquad \Delta_{uv} = +1 \text{ if } u < v \text{ else } -1,

where :math:`s_{uv} = s_{vu} = \mathrm{HKDF}(\mathrm{X25519}(s_u^{SK}, s_v^{PK}))` is agreed by the two clients
alone and :math:`b_u` is a fresh seed. The pair masks cancel in :math:`\sum_{u \in U_3} y_u` between survivors; the
server removes the survivors' self-masks (from Shamir shares of :math:`b_u`) and the dropped clients' pair masks
(from Shamir shares of their mask key :math:`s_d^{SK}`), never both for one client — so a dropped client's late
upload stays hidden behind :math:`\mathrm{PRG}(b_d)`. Each client caps its own words at :math:`2^{62}/n`, so the
total stays inside the core's exact range (:func:`analytic.internal.int_sum_fits`) and its residue modulo
:math:`2^{64}`, read as two's complement, is the plain int64 sum bit for bit.

The four rounds (the paper's semi-honest protocol; Fig. 4 of Bonawitz et al.), each a pure function of the party's
state:

====================  =========================================  ============================================
round                 client                                     server
====================  =========================================  ============================================
0 advertise keys      :func:`advertise_keys`                     :func:`collect_keys` (:math:`U_1`)
1 share keys          :func:`share_keys`                         :func:`route_shares` (:math:`U_2`)
2 masked input        :func:`mask_input`                         :func:`collect_masked` (:math:`U_3`)
3 unmasking           :func:`reveal_shares`                      :func:`unmask` (the sum)
====================  =========================================  ============================================

Primitives. Key agreement: X25519 (``cryptography``), keys derived with HKDF-SHA256 whose ``info`` binds the round
id and both client ids. The shares one client sends another through the server travel in AES-256-GCM under the
pair's second agreed key, the two ids and the round bound as associated data, so a share the server altered,
replayed or re-routed fails authentication and is refused. Secret sharing: Shamir t-of-n over the prime field
:math:`\mathbb F_p`, :math:`p = 2^{130} - 5`, of the 16-byte seeds the client's mask key and self-mask are derived
from (a seed, not the X25519 key itself, so one field element holds it); a reconstructed mask-key seed must give
the public key the client advertised in round 0, and a reconstructed self-mask seed the SHA-256 commitment it
advertised, so inconsistent shares are detected rather than silently corrupting the sum. Mask expansion:
:math:`\mathrm{PRG}(s)` is the ChaCha20 keystream under the 32-byte key :math:`s` (zero nonce: every key is derived
for one round and one purpose), read as little-endian uint64 words; ChaCha20 is a PRF-based stream cipher, so its
words are indistinguishable from uniform without the key, and uniform 64-bit words are exactly uniform modulo
:math:`2^{64}` (no rejection step). It runs at several GB/s in OpenSSL.

SecAgg+: with ``degree`` k < n − 1 each client masks and shares only with its k neighbours in a Harary graph
:math:`H_{k,n}` over a random ordering of the clients (Bell et al., §3), and each secret is t-of-(k+1) shared among
the client and its neighbours; :func:`neighbour_degree` picks the smallest k whose round fails with probability
below a bound for a given dropout rate. ``degree = n − 1`` is SecAgg (the complete graph).

Why not Flower's own. ``flwr.server.workflow.SecAggPlusWorkflow`` / ``flwr.client.mod.secaggplus_mod`` (1.42)
carry a weighted average of float parameters: they clip and stochastically quantize floats into a modulus below
:math:`2^{32}` (lossy, and too narrow for 64-bit statistics), expand masks with ``numpy`` ``RandomState`` seeded by a
32-bit fold of the agreed key (:math:`2^{32}` seeds: not a cryptographic PRG), and agree keys on P-384 with Fernet
tokens. Its ``flwr.common.secure_aggregation`` Shamir splits 16-byte blocks in pure-Python GF(2^128) arithmetic:
combining one 51-of-100 secret takes about 50 ms here, against well under 1 ms in :math:`\mathbb F_p` with Python
integers — the server of a 1,000-client round reconstructs 1,000 secrets. So :mod:`federated.flower_app` runs the
rounds above as Flower Messages of its own (``method = "secagg"``).

In one process: :func:`simulate_keys` and :func:`simulate_unmask` run every party's steps of a round, charging
each client's and the server's seconds and bytes (:func:`message_nbytes`) to a :class:`ProtocolCost`
(``benchmarks.secure_aggregation``, and the secure edges of :func:`federated.hierarchy.tree_round`).

Threat model: an honest-but-curious server and clients, any of whom may drop at any time; privacy holds against
the server colluding with fewer than t of a client's share holders. The active-adversary consistency round
(signatures over :math:`U_3`, which needs a PKI) is not implemented; each client enforces its own side — it answers
one unmasking request, never with both kinds of share for one peer, and only while at least t holders survive.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import secrets
import time
from typing import Mapping, NamedTuple

import numpy as np
from scipy import stats as scipy_stats

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError as error:
    raise ImportError(
        f"federated.secure needs the cryptography package ({error}): pip install 'analytic-learning[secure]'"
    ) from error

import analytic
from analytic.words import INT_HEADROOM
from federated.payload import ADDITIVE_FIELDS, UploadRejected, init_payload

SHARE_PRIME = 2**130 - 5  # p of the Shamir field: a prime above every 16-byte seed
SEED_BYTES = 16
KEY_BYTES = 32
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw

# ------------------------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class RoundConfig:
    """What the server announces before a secure round: who takes part, the neighbour graph and the threshold.

    Attributes:
      round_id: a fresh identifier; every derived key is bound to it, so nothing carries over between rounds.
      clients: the cohort, sorted client ids (at least 2).
      dim: feature dimension d of the uploads; class_ids: the agreed class ids (their columns).
      degree: neighbours per client k; ``len(clients) - 1`` is SecAgg's complete graph, fewer is SecAgg+.
      threshold: t, the shares needed to rebuild a secret; at most ``degree`` (a dropped client's own share is
        lost), at least ``degree // 2 + 1`` by default (:func:`init_round`).
      graph_seed: the seed of the random ordering the Harary graph is laid on.

    Example:
      >>> config = init_round(["a", "b", "c", "d", "e"], 3, [0, 1], degree=2, round_id="r1", graph_seed=7)
      >>> config.threshold, len(config.neighbours("a")), all(u in config.neighbours(v) for u in config.clients
      ...                                                    for v in config.neighbours(u))
      (2, 2, True)
    """

    round_id: str
    clients: tuple[str, ...]
    dim: int
    class_ids: tuple[int, ...]
    degree: int
    threshold: int
    graph_seed: int

    def __post_init__(self):
        n = len(self.clients)
        if n < 2 or len(set(self.clients)) != n or list(self.clients) != sorted(self.clients):
            raise analytic.InputError(f"a secure round needs at least 2 distinct clients, sorted; got {n}")
        if self.degree != n - 1 and (not 2 <= self.degree < n - 1 or self.degree % 2):
            raise analytic.InputError(
                f"degree must be n - 1 = {n - 1} (SecAgg) or an even number from 2 below it (SecAgg+), got {self.degree}"
            )
        if not 1 <= self.threshold <= self.degree:
            raise analytic.InputError(f"threshold must be between 1 and the degree {self.degree}, got {self.threshold}")
        if self.dim < 1:
            raise analytic.InputError(f"dim must be positive, got {self.dim}")

    @functools.cached_property
    def graph(self) -> dict[str, tuple[str, ...]]:
        """Client → its neighbours: the Harary graph :math:`H_{k,n}` (each client linked to the k/2 nearest on
        either side of a ring) over a random ordering of the clients; the complete graph for k = n − 1."""
        n = len(self.clients)
        if self.degree == n - 1:
            return {u: tuple(v for v in self.clients if v != u) for u in self.clients}
        ring = [self.clients[i] for i in np.random.default_rng(self.graph_seed).permutation(n)]
        half = self.degree // 2
        return {u: tuple(sorted(ring[(i + o) % n] for o in range(-half, half + 1) if o)) for i, u in enumerate(ring)}

    def neighbours(self, client_id: str) -> tuple[str, ...]:
        """The clients ``client_id`` masks with and shares its secrets among (sorted)."""
        if client_id not in self.graph:
            raise analytic.InputError(f"client {client_id!r} is not part of round {self.round_id!r}")
        return self.graph[client_id]

    @functools.cached_property
    def words(self) -> int:
        """L, the uint64 words of one masked upload (the integer fields of a fixed-point payload)."""
        template = init_payload(self.dim, self.class_ids, precision="fixed")
        return sum(template[name].size for name in ADDITIVE_FIELDS)


def init_round(clients, dim: int, class_ids, *, degree: int | None = None, threshold: int | None = None,
               round_id: str | None = None, graph_seed: int | None = None) -> RoundConfig:
    r"""A :class:`RoundConfig` with SecAgg's defaults: the complete graph and an honest-majority threshold.

    .. math::
        k = n - 1 \text{ (default)}, \qquad t = \lfloor k/2 \rfloor + 1 \text{ (default)}

    Args:
      clients: the cohort's client ids (any order).
      dim: feature dimension d.
      class_ids: the agreed class ids.
      degree: neighbours per client (SecAgg+ when below n − 1; :func:`neighbour_degree` chooses one).
      threshold: shares needed to rebuild a secret.
      round_id: a fresh id (random when omitted).
      graph_seed: the seed of the graph's random ordering (random when omitted).

    Returns:
      The validated :class:`RoundConfig`.

    Raises:
      analytic.InputError: fewer than 2 or repeated clients, a degree or threshold out of range.

    Example:
      >>> config = init_round([f"client-{k}" for k in range(10)], 4, [0, 1, 2])
      >>> config.degree, config.threshold, config.words  # 10 + 12 + 4 + 1 + 3 words
      (9, 5, 30)
    """
    clients = tuple(sorted(str(c) for c in clients))
    degree = len(clients) - 1 if degree is None else int(degree)
    return RoundConfig(
        round_id=secrets.token_hex(8) if round_id is None else str(round_id), clients=clients, dim=int(dim),
        class_ids=tuple(int(c) for c in np.asarray(class_ids, np.int64)), degree=degree,
        threshold=degree // 2 + 1 if threshold is None else int(threshold),
        graph_seed=secrets.randbits(63) if graph_seed is None else int(graph_seed),
    )


def neighbour_degree(n_clients: int, dropout: float, *, failure: float = 1e-6) -> int:
    r"""SecAgg+'s degree: the smallest even k (or n − 1) whose round survives ``dropout`` with probability
    above :math:`1 - \text{failure}` under the honest-majority threshold :math:`t = \lfloor k/2 \rfloor + 1`.

    A client's secret is rebuilt from the shares of its k neighbours (its own is lost if it dropped); with each
    client dropping independently with probability δ, a union bound over the n clients asks for

    .. math::
        n \cdot P\left[\mathrm{Binomial}(k, 1 - \delta) < t\right] \le \text{failure}

    (Bell et al., CCS 2020, §3–4: k = O(log n) for fixed δ).

    Args:
      n_clients: cohort size n.
      dropout: expected share of clients that drop, δ in [0, 1/2).
      failure: the acceptable probability that some secret cannot be rebuilt.

    Returns:
      The degree k to pass to :func:`init_round`.

    Raises:
      analytic.InputError: n < 2, δ outside [0, 1/2) or failure outside (0, 1).

    Example:
      >>> neighbour_degree(1000, 0.1), neighbour_degree(100, 0.3)  # the second is the complete graph
      (38, 99)
    """
    if n_clients < 2 or not 0.0 <= dropout < 0.5 or not 0.0 < failure < 1.0:
        raise analytic.InputError(f"need n >= 2, dropout in [0, 0.5), failure in (0, 1); got {n_clients}, "
                                  f"{dropout}, {failure}")
    for degree in range(2, n_clients - 1, 2):
        if n_clients * scipy_stats.binom.cdf(degree // 2, degree, 1.0 - dropout) <= failure:
            return degree
    return n_clients - 1


# ---------------------------------------------------------------------------------------------- primitives


def _info(purpose: str, round_id: str, *client_ids: str) -> bytes:
    return "\x1f".join(("analytic-learning secure aggregation", purpose, round_id, *client_ids)).encode()


def _derive(secret: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(*_RAW)


def _agree(private: X25519PrivateKey, public: bytes, purpose: str, round_id: str, a: str, b: str) -> bytes:
    low, high = sorted((a, b))
    return _derive(private.exchange(X25519PublicKey.from_public_bytes(public)), _info(purpose, round_id, low, high))


def _mask_key(seed: bytes, round_id: str, client_id: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(_derive(seed, _info("mask key", round_id, client_id)))


def _self_mask_key(seed: bytes, round_id: str, client_id: str) -> bytes:
    return _derive(seed, _info("self mask", round_id, client_id))


def _commitment(seed: bytes, round_id: str, client_id: str) -> bytes:
    return hashlib.sha256(_info("self mask commitment", round_id, client_id) + seed).digest()


def mask_words(key: bytes, length: int) -> np.ndarray:
    r""":math:`\mathrm{PRG}(s)`: ``length`` uniform words of :math:`\mathbb Z_{2^{64}}`, the ChaCha20 keystream under
    the 32-byte key s read as little-endian uint64 (module docstring: why ChaCha20).

    Args:
      key: the 32-byte seed s (an agreed pair key or a self-mask key).
      length: number of words L.

    Returns:
      A read-only uint64 array of shape (L,).

    Example:
      >>> words = mask_words(bytes(32), 3)
      >>> words.dtype, words.shape, np.array_equal(words, mask_words(bytes(32), 3))
      (dtype('uint64'), (3,), True)
    """
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(8 * int(length))), dtype="<u8").astype(np.uint64, copy=False)


def split_secret(secret: bytes, threshold: int, n_shares: int) -> list[tuple[int, int]]:
    r"""Shamir t-of-n shares of a 16-byte secret over :math:`\mathbb F_p`, :math:`p = 2^{130} - 5`.

    .. math::
        f(z) = \text{secret} + \sum_{i=1}^{t-1} a_i z^i, \quad a_i \sim U(\mathbb F_p), \qquad
        \text{share}_j = (j, f(j)), \; j = 1 \dots n

    Any t shares rebuild the secret (:func:`combine_shares`); any t − 1 are uniform and independent of it.

    Args:
      secret: 16 bytes.
      threshold: t.
      n_shares: n ≥ t.

    Returns:
      ``[(j, f(j))]`` for j = 1 … n.

    Raises:
      analytic.InputError: a secret that is not 16 bytes, or t outside [1, n].

    Example:
      >>> shares = split_secret(b"sixteen byte key", 3, 5)
      >>> combine_shares(shares[1:4]), combine_shares([shares[0], shares[4], shares[2]])
      (b'sixteen byte key', b'sixteen byte key')
    """
    if len(secret) != SEED_BYTES or not 1 <= threshold <= n_shares:
        raise analytic.InputError(f"Shamir shares a {SEED_BYTES}-byte secret with 1 <= t <= n; got "
                                  f"{len(secret)} bytes, t={threshold}, n={n_shares}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(SHARE_PRIME) for _ in range(threshold - 1)]
    shares = []
    for point in range(1, n_shares + 1):
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * point + coefficient) % SHARE_PRIME
        shares.append((point, value))
    return shares


@functools.lru_cache(maxsize=1024)
def _lagrange_weights(points: tuple[int, ...]) -> tuple[int, ...]:
    r""":math:`\prod_{m \ne j} x_m / (x_m - x_j) \bmod p` for each j; the points are small integers, so each
    product is exact before its one reduction (and the same points recur from owner to owner)."""
    weights = []
    for j, x_j in enumerate(points):
        numerator = math.prod(x_m for m, x_m in enumerate(points) if m != j)
        denominator = math.prod(x_m - x_j for m, x_m in enumerate(points) if m != j)
        weights.append(numerator * pow(denominator % SHARE_PRIME, -1, SHARE_PRIME) % SHARE_PRIME)
    return tuple(weights)


def combine_shares(shares) -> bytes:
    r"""The secret from t Shamir shares (:func:`split_secret`): Lagrange interpolation at zero,
    :math:`f(0) = \sum_j y_j \prod_{m \ne j} x_m / (x_m - x_j)`.

    Args:
      shares: ``[(x_j, y_j)]`` with distinct points, as many as the threshold.

    Returns:
      The 16-byte secret.

    Raises:
      analytic.IntegrityError: repeated points, or shares that interpolate to no 16-byte secret (inconsistent).

    Example:
      >>> combine_shares(split_secret(bytes(range(16)), 2, 3)[::2]) == bytes(range(16))
      True
    """
    points = [x for x, _ in shares]
    if len(set(points)) != len(points) or not points:
        raise analytic.IntegrityError(f"Shamir shares need distinct points, got {points}")
    weights = _lagrange_weights(tuple(points))
    secret = sum(y_j * w_j for (_, y_j), w_j in zip(shares, weights)) % SHARE_PRIME
    if secret >= 1 << (8 * SEED_BYTES):
        raise analytic.IntegrityError("the shares are inconsistent: they interpolate to no 16-byte secret")
    return secret.to_bytes(SEED_BYTES, "big")


def _share_plaintext(point: int, mask_share: int, self_share: int) -> bytes:
    return point.to_bytes(4, "big") + mask_share.to_bytes(17, "big") + self_share.to_bytes(17, "big")


def _encrypt_share(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _payload_words(payload, config: RoundConfig) -> np.ndarray:
    """The integer fields of a fixed-point upload as one uint64 vector (two's complement of the int64 values).

    Only the layout is checked here: the masked vector may be any integers of it (a noisy share of
    :mod:`federated.privacy` is not the statistics of any data set); the server checks the unmasked sum.
    """
    template = init_payload(config.dim, config.class_ids, precision="fixed")
    if not isinstance(payload, dict):
        raise UploadRejected(f"an upload is a dict of arrays, got {type(payload).__name__}")
    missing = [name for name in ("class_ids", *ADDITIVE_FIELDS) if name not in payload]
    if missing:
        raise UploadRejected(f"upload lacks the fields {missing}")
    if not np.array_equal(payload["class_ids"], template["class_ids"]):
        raise UploadRejected(f"upload has class ids {np.asarray(payload['class_ids']).tolist()}, the round agreed on "
                             f"{template['class_ids'].tolist()}")
    for name in ADDITIVE_FIELDS:
        value = np.asarray(payload[name])
        if value.dtype != template[name].dtype or value.shape != template[name].shape:
            raise UploadRejected(f"upload field {name!r} is {value.dtype} {value.shape}, expected "
                                 f"{template[name].dtype} {template[name].shape}")
    return np.concatenate([np.asarray(payload[name]).reshape(-1) for name in ADDITIVE_FIELDS]).view(np.uint64)


def _words_payload(words: np.ndarray, config: RoundConfig) -> dict[str, np.ndarray]:
    template = init_payload(config.dim, config.class_ids, precision="fixed")
    values, payload, start = words.view(np.int64), {"class_ids": template["class_ids"]}, 0
    for name in ADDITIVE_FIELDS:
        size = template[name].size
        payload[name] = values[start : start + size].reshape(template[name].shape).copy()
        start += size
    return payload


def _add(total: np.ndarray, words: np.ndarray, sign: int) -> None:
    if sign > 0:
        total += words  # uint64 arithmetic wraps modulo 2^64
    else:
        total -= words


# ---------------------------------------------------------------------------------------------------- client


class KeyAdvertisement(NamedTuple):
    """What a client publishes in round 0 (32 bytes each).

    Attributes:
      encryption_key: :math:`c_u^{PK}`, X25519, to agree the key the shares sent to u are encrypted with.
      mask_key: :math:`s_u^{PK}`, X25519, to agree the pair masks.
      commitment: SHA-256 of the self-mask seed :math:`b_u` (bound to the round and the client).

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0])
      >>> _, advertisement = advertise_keys(config, "a")
      >>> [len(value) for value in advertisement]
      [32, 32, 32]
    """

    encryption_key: bytes
    mask_key: bytes
    commitment: bytes


@dataclasses.dataclass(frozen=True)
class ClientState:
    """A client's private memory across the rounds (never sent). Built by :func:`advertise_keys`.

    Attributes:
      config: the round; client_id: this client.
      encryption_secret: :math:`c_u^{SK}` (raw X25519 bytes); mask_seed: the 16-byte seed of :math:`s_u^{SK}`;
        self_mask_seed: :math:`b_u` (16 bytes).
      peers: the advertisements of the neighbours that advertised (:math:`N(u) \\cap U_1`).
      held: owner → ``(point, mask-key share, self-mask share)`` of the shares this client holds (its own too).
      masked_with: the neighbours whose pair masks are in this client's masked input (:math:`N(u) \\cap U_2`).
      stage: the last round done: ``"advertised"``, ``"shared"``, ``"masked"``, ``"revealed"``.

    Example:
      >>> state, _ = advertise_keys(init_round(["a", "b"], 2, [0]), "b")
      >>> state.stage, len(state.mask_seed), len(state.self_mask_seed)
      ('advertised', 16, 16)
    """

    config: RoundConfig
    client_id: str
    encryption_secret: bytes
    mask_seed: bytes
    self_mask_seed: bytes
    peers: Mapping[str, KeyAdvertisement] = dataclasses.field(default_factory=dict)
    held: Mapping[str, tuple[int, int, int]] = dataclasses.field(default_factory=dict)
    masked_with: tuple[str, ...] = ()
    stage: str = "advertised"


def _require_stage(state: ClientState, stage: str, action: str) -> None:
    if state.stage != stage:
        raise analytic.IntegrityError(f"client {state.client_id!r} cannot {action} after the {state.stage!r} step")


def advertise_keys(config: RoundConfig, client_id: str) -> tuple[ClientState, KeyAdvertisement]:
    r"""Round 0, client u: draw the key pairs :math:`(c_u^{SK}, c_u^{PK})`, :math:`(s_u^{SK}, s_u^{PK})` and the
    self-mask seed :math:`b_u`; publish the public keys and a commitment to :math:`b_u`.

    :math:`s_u^{SK} = \mathrm{HKDF}(\sigma_u)` from a 16-byte seed :math:`\sigma_u`, which is what gets shared.

    Args:
      config: the round announced by the server.
      client_id: this client, one of ``config.clients``.

    Returns:
      The client's private :class:`ClientState` and its public :class:`KeyAdvertisement`.

    Raises:
      analytic.InputError: ``client_id`` is not in the round.

    Example:
      >>> state, advertisement = advertise_keys(init_round(["a", "b", "c"], 2, [0, 1]), "c")
      >>> state.client_id, len(advertisement.mask_key)
      ('c', 32)
    """
    config.neighbours(client_id)
    encryption = X25519PrivateKey.generate()
    mask_seed, self_mask_seed = os.urandom(SEED_BYTES), os.urandom(SEED_BYTES)
    state = ClientState(config, client_id, encryption.private_bytes_raw(), mask_seed, self_mask_seed)
    advertisement = KeyAdvertisement(
        _public_bytes(encryption), _public_bytes(_mask_key(mask_seed, config.round_id, client_id)),
        _commitment(self_mask_seed, config.round_id, client_id),
    )
    return state, advertisement


def _holders(client_id: str, others) -> list[str]:
    """The share holders of a client's secrets, in the order of their Shamir points 1, 2, …: itself and its peers."""
    return sorted({client_id, *others})


def _check_advertisement(owner: str, advertisement) -> KeyAdvertisement:
    try:
        advertisement = KeyAdvertisement(*advertisement)
    except TypeError as error:
        raise UploadRejected(f"client {owner!r} sent a malformed key advertisement: {error}") from None
    if any(not isinstance(value, bytes) or len(value) != KEY_BYTES for value in advertisement):
        raise UploadRejected(f"client {owner!r} advertised keys that are not three 32-byte strings")
    return advertisement


def share_keys(state: ClientState, advertisements: Mapping[str, KeyAdvertisement]) -> tuple[ClientState, dict[str, bytes]]:
    r"""Round 1, client u: Shamir-share :math:`\sigma_u` and :math:`b_u` t-of-(|holders|) among itself and its
    neighbours that advertised, and encrypt each neighbour's pair of shares to it.

    .. math::
        e_{uv} = \mathrm{AES\text{-}GCM}_{k_{uv}}\left(j_v \,\|\, \sigma_{u,v} \,\|\, b_{u,v};\;
        \text{round} \,\|\, u \,\|\, v\right), \qquad k_{uv} = \mathrm{HKDF}(\mathrm{X25519}(c_u^{SK}, c_v^{PK}))

    Args:
      state: the client's state after :func:`advertise_keys`.
      advertisements: the neighbours' advertisements the server forwards (:func:`collect_keys`); others ignored.

    Returns:
      The new state (holding its own shares) and ``{neighbour: ciphertext}`` for the server to route.

    Raises:
      analytic.IntegrityError: fewer than t holders advertised (the round cannot complete), or the wrong step.
      UploadRejected: a malformed advertisement.

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0])
      >>> states, adverts = zip(*(advertise_keys(config, c) for c in config.clients))
      >>> state, sent = share_keys(states[0], dict(zip(config.clients, adverts)))
      >>> sorted(sent), state.stage
      (['b', 'c'], 'shared')
    """
    _require_stage(state, "advertised", "share keys")
    config, me = state.config, state.client_id
    peers = {v: _check_advertisement(v, advertisements[v]) for v in config.neighbours(me) if v in advertisements}
    holders = _holders(me, peers)
    if len(holders) - 1 < config.threshold:
        raise analytic.IntegrityError(
            f"only {len(holders) - 1} neighbours of client {me!r} advertised keys, the threshold is {config.threshold}"
        )
    mask_shares = split_secret(state.mask_seed, config.threshold, len(holders))
    self_shares = split_secret(state.self_mask_seed, config.threshold, len(holders))
    encryption = X25519PrivateKey.from_private_bytes(state.encryption_secret)
    sent, held = {}, {}
    for holder, (point, mask_share), (_, self_share) in zip(holders, mask_shares, self_shares):
        if holder == me:
            held[me] = (point, mask_share, self_share)
            continue
        key = _agree(encryption, peers[holder].encryption_key, "share encryption", config.round_id, me, holder)
        sent[holder] = _encrypt_share(key, _share_plaintext(point, mask_share, self_share),
                                      _info("share", config.round_id, me, holder))
    return dataclasses.replace(state, peers=peers, held=held, stage="shared"), sent


def _open_share(state: ClientState, owner: str, ciphertext: bytes) -> tuple[int, int, int]:
    config, me = state.config, state.client_id
    encryption = X25519PrivateKey.from_private_bytes(state.encryption_secret)
    key = _agree(encryption, state.peers[owner].encryption_key, "share encryption", config.round_id, owner, me)
    try:
        plain = AESGCM(key).decrypt(ciphertext[:12], ciphertext[12:], _info("share", config.round_id, owner, me))
    except (InvalidTag, ValueError):
        raise UploadRejected(f"the shares from client {owner!r} fail authentication: refused") from None
    if len(plain) != 38:
        raise UploadRejected(f"the shares from client {owner!r} are malformed")
    return int.from_bytes(plain[:4], "big"), int.from_bytes(plain[4:21], "big"), int.from_bytes(plain[21:], "big")


def mask_input(state: ClientState, received: Mapping[str, bytes], payload) -> tuple[ClientState, np.ndarray]:
    r"""Round 2, client u: decrypt and keep the shares its neighbours sent, then mask its upload.

    .. math::
        y_u = x_u + \mathrm{PRG}(b_u) + \sum_{v \in N(u) \cap U_2} \Delta_{uv}\, \mathrm{PRG}(s_{uv})
        \pmod{2^{64}}, \qquad s_{uv} = \mathrm{HKDF}(\mathrm{X25519}(s_u^{SK}, s_v^{PK}))

    with :math:`U_2` the clients whose shares arrived (:func:`route_shares`).

    Args:
      state: the client's state after :func:`share_keys`.
      received: ``{sender: ciphertext}`` routed to this client.
      payload: the client's fixed-point upload (:func:`federated.encode_statistics` of ``precision="fixed"``
        statistics, aligned to the round's class ids).

    Returns:
      The new state and the masked vector :math:`y_u` (uint64, length ``config.words``).

    Raises:
      UploadRejected: a share that fails authentication or comes from outside the neighbourhood (naming the
        sender), or a payload that is not a valid fixed-point upload of the round's shape.
      analytic.InputError: words too large for an exact sum over the cohort (:math:`|x| \ge 2^{62}/n`).
      analytic.IntegrityError: fewer than t holders shared keys, or the wrong step. The state is unchanged.

    Example:
      >>> config = init_round(["a", "b"], 1, [0], threshold=1)
      >>> states, adverts = zip(*(advertise_keys(config, c) for c in config.clients))
      >>> shared = [share_keys(s, dict(zip(config.clients, adverts))) for s in states]
      >>> payload = federated.encode_statistics(federated.client_statistics(np.ones((2, 1)), np.zeros(2, int), 1,
      ...                                                                   precision="fixed"), [0])
      >>> _, masked = mask_input(shared[0][0], {"b": shared[1][1]["a"]}, payload)
      >>> masked.dtype, masked.shape
      (dtype('uint64'), (5,))
    """
    _require_stage(state, "shared", "mask its input")
    config, me = state.config, state.client_id
    strangers = sorted(set(received).difference(state.peers))
    if strangers:
        raise UploadRejected(f"client {me!r} received shares from {strangers}, which are not its neighbours")
    held = dict(state.held)
    for owner, ciphertext in received.items():
        held[owner] = _open_share(state, owner, ciphertext)
    if len(held) - 1 < config.threshold:
        raise analytic.IntegrityError(
            f"only {len(held) - 1} neighbours of client {me!r} shared keys, the threshold is {config.threshold}"
        )
    try:
        words = _payload_words(payload, config)
    except UploadRejected as error:
        raise UploadRejected(f"client {me!r} cannot mask its upload: {error}") from None
    signed = words.view(np.int64)
    largest = int(np.abs(signed).max(initial=0)) if signed.size else 0
    if largest * len(config.clients) >= INT_HEADROOM:
        raise analytic.InputError(
            f"a word of magnitude {largest} is too large for an exact sum over {len(config.clients)} clients "
            f"(the bound is 2^62 / n): lower frac_bits"
        )
    masked = words + mask_words(_self_mask_key(state.self_mask_seed, config.round_id, me), words.size)
    mask_key = _mask_key(state.mask_seed, config.round_id, me)
    masked_with = tuple(sorted(received))
    for peer in masked_with:
        pair = mask_words(_agree(mask_key, state.peers[peer].mask_key, "pair mask", config.round_id, me, peer),
                          words.size)
        _add(masked, pair, 1 if me < peer else -1)
    return dataclasses.replace(state, held=held, masked_with=masked_with, stage="masked"), masked


class UnmaskRequest(NamedTuple):
    """The server's round-3 question to a surviving client.

    Attributes:
      survivors: its share holders whose masked input arrived (send their self-mask shares).
      dropped: its neighbours that shared keys but sent no masked input (send their mask-key shares).

    Example:
      >>> UnmaskRequest(survivors=("a", "b"), dropped=("c",)).dropped
      ('c',)
    """

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]


def reveal_shares(state: ClientState, request: UnmaskRequest) -> tuple[ClientState, dict[str, tuple[str, int, int]]]:
    r"""Round 3, client u: reveal :math:`b_{v,u}` for each surviving holder v and :math:`\sigma_{d,u}` for each
    dropped neighbour d — never both for one client, and only once per round.

    Args:
      state: the client's state after :func:`mask_input`.
      request: the server's :class:`UnmaskRequest`.

    Returns:
      The new state (``stage="revealed"``) and ``{owner: (kind, point, share)}`` with kind ``"self"`` (a share of
      :math:`b_v`) or ``"mask"`` (a share of :math:`\sigma_d`).

    Raises:
      analytic.IntegrityError: a client named both survivor and dropped, a survivor or dropped client this client
        holds no shares of or did not mask with, this client not among the survivors, fewer than t surviving
        holders, or a second request (or the wrong step); the state is unchanged.

    Example:
      >>> config = init_round(["a", "b"], 1, [0], threshold=1)
      >>> states, adverts = zip(*(advertise_keys(config, c) for c in config.clients))
      >>> shared = [share_keys(s, dict(zip(config.clients, adverts))) for s in states]
      >>> payload = federated.encode_statistics(federated.client_statistics(np.ones((2, 1)), np.zeros(2, int), 1,
      ...                                                                   precision="fixed"), [0])
      >>> state, _ = mask_input(shared[0][0], {"b": shared[1][1]["a"]}, payload)
      >>> _, revealed = reveal_shares(state, UnmaskRequest(survivors=("a",), dropped=("b",)))
      >>> {owner: kind for owner, (kind, _, _) in revealed.items()}
      {'a': 'self', 'b': 'mask'}
    """
    _require_stage(state, "masked", "reveal shares")
    me, threshold = state.client_id, state.config.threshold
    survivors, dropped = set(request.survivors), set(request.dropped)
    both = sorted(survivors & dropped)
    if both:
        raise analytic.IntegrityError(f"refused: {both} named both survivor and dropped (that would unmask them)")
    if me not in survivors:
        raise analytic.IntegrityError(f"refused: client {me!r} is not among the survivors it is asked about")
    unknown = sorted(survivors.difference(state.held) | dropped.difference(state.masked_with))
    if unknown:
        raise analytic.IntegrityError(f"refused: client {me!r} holds no shares of, or did not mask with, {unknown}")
    if len(survivors) < threshold:
        raise analytic.IntegrityError(
            f"refused: {len(survivors)} surviving holders is below the threshold {threshold}"
        )
    revealed = {v: ("self", state.held[v][0], state.held[v][2]) for v in sorted(survivors)}
    revealed.update({d: ("mask", state.held[d][0], state.held[d][1]) for d in sorted(dropped)})
    return dataclasses.replace(state, stage="revealed"), revealed


# ---------------------------------------------------------------------------------------------------- server


@dataclasses.dataclass(frozen=True)
class ServerState:
    """The server's view of a secure round: public keys, who is still in, the running masked sum.

    Attributes:
      config: the round.
      advertisements: :math:`U_1`'s published keys.
      shared: :math:`U_2`, the clients whose encrypted shares were routed, with the holders they shared among.
      masked_sum: :math:`\\sum_{u \\in U_3} y_u \\bmod 2^{64}` once the masked inputs are in (else ``None``).
      survivors: :math:`U_3`.

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0])
      >>> state, _ = collect_keys(config, {c: advertise_keys(config, c)[1] for c in config.clients})
      >>> sorted(state.advertisements)
      ['a', 'b', 'c']
    """

    config: RoundConfig
    advertisements: Mapping[str, KeyAdvertisement]
    shared: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    masked_sum: np.ndarray | None = None
    survivors: tuple[str, ...] = ()


def collect_keys(config: RoundConfig, advertisements: Mapping) -> tuple[ServerState, dict[str, dict]]:
    """Round 0, server: keep the advertisements (:math:`U_1`) and send each client its neighbours' ones.

    Args:
      config: the round.
      advertisements: ``{client: KeyAdvertisement}`` received.

    Returns:
      The :class:`ServerState` and ``{client: {neighbour: advertisement}}`` to forward.

    Raises:
      UploadRejected: an advertisement from outside the cohort, malformed, or a public key reused by two clients.
      analytic.IntegrityError: some client has fewer than t neighbours in :math:`U_1` (the round is aborted).

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0])
      >>> _, forward = collect_keys(config, {c: advertise_keys(config, c)[1] for c in config.clients})
      >>> sorted(forward["a"])
      ['b', 'c']
    """
    strangers = sorted(set(advertisements).difference(config.clients))
    if strangers:
        raise UploadRejected(f"key advertisements from {strangers}, who are not part of round {config.round_id!r}")
    checked = {u: _check_advertisement(u, a) for u, a in advertisements.items()}
    keys = [key for a in checked.values() for key in a[:2]]
    if len(set(keys)) != len(keys):
        raise UploadRejected("two advertisements share a public key: refused")
    forward = {u: {v: checked[v] for v in config.neighbours(u) if v in checked} for u in checked}
    _check_enough(config, {u: len(f) for u, f in forward.items()}, "advertised keys")
    return ServerState(config, checked), forward


def _check_enough(config: RoundConfig, counts: Mapping[str, int], what: str) -> None:
    short = {u: n for u, n in counts.items() if n < config.threshold}
    if short:
        owner, count = sorted(short.items())[0]
        raise analytic.IntegrityError(
            f"round {config.round_id!r} aborted: only {count} share holders of client {owner!r} {what}, the "
            f"threshold is {config.threshold} ({len(short)} clients short); nothing was revealed"
        )


def route_shares(state: ServerState, sent: Mapping[str, Mapping[str, bytes]]) -> tuple[ServerState, dict[str, dict]]:
    """Round 1, server: route each encrypted share to its holder; the senders are :math:`U_2`.

    Args:
      state: after :func:`collect_keys`.
      sent: ``{sender: {holder: ciphertext}}`` received (:func:`share_keys`).

    Returns:
      The new state and ``{holder: {sender: ciphertext}}`` to forward (only between members of :math:`U_2`).

    Raises:
      UploadRejected: a sender that did not advertise, or shares addressed outside its neighbourhood.
      analytic.IntegrityError: some member of :math:`U_2` keeps fewer than t holders in :math:`U_2`.

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0])
      >>> states, adverts = zip(*(advertise_keys(config, c) for c in config.clients))
      >>> server, forward = collect_keys(config, dict(zip(config.clients, adverts)))
      >>> sent = {s.client_id: share_keys(s, forward[s.client_id])[1] for s in states}
      >>> server, routed = route_shares(server, sent)
      >>> sorted(routed["a"]), sorted(server.shared)
      (['b', 'c'], ['a', 'b', 'c'])
    """
    config = state.config
    for sender, shares in sent.items():
        if sender not in state.advertisements:
            raise UploadRejected(f"shares from {sender!r}, who advertised no keys")
        outside = sorted(set(shares).difference(config.neighbours(sender)))
        if outside:
            raise UploadRejected(f"client {sender!r} addressed shares to {outside}, outside its neighbourhood")
    members = set(sent)
    routed = {v: {u: sent[u][v] for u in sorted(members) if v in sent[u]} for v in sorted(members)}
    shared = {u: tuple(sorted(v for v in sent[u] if v in members)) for u in sorted(members)}
    _check_enough(config, {u: len(h) for u, h in shared.items()}, "shared keys")
    return dataclasses.replace(state, shared=shared), routed


def collect_masked(state: ServerState, masked: Mapping[str, np.ndarray]) -> tuple[ServerState, dict[str, UnmaskRequest]]:
    r"""Round 2, server: sum the masked inputs of :math:`U_3` modulo :math:`2^{64}` and ask each survivor for the
    shares that remove the masks.

    Args:
      state: after :func:`route_shares`.
      masked: ``{client: y_u}`` received (:func:`mask_input`).

    Returns:
      The new state and ``{survivor: UnmaskRequest}``.

    Raises:
      UploadRejected: an input from a client outside :math:`U_2`, or not a uint64 vector of ``config.words``.
      analytic.IntegrityError: a client whose secret must be rebuilt has fewer than t holders in :math:`U_3`.

    Example:
      >>> config = init_round(["a", "b"], 1, [0], threshold=1)
      >>> server = ServerState(config, {}, shared={"a": ("b",), "b": ("a",)})
      >>> server, requests = collect_masked(server, {"a": np.zeros(config.words, np.uint64)})
      >>> requests
      {'a': UnmaskRequest(survivors=('a',), dropped=('b',))}
    """
    config = state.config
    for u, vector in masked.items():
        if u not in state.shared:
            raise UploadRejected(f"a masked input from {u!r}, who is not in the round's second stage")
        vector = np.asarray(vector)
        if vector.dtype != np.uint64 or vector.shape != (config.words,):
            raise UploadRejected(f"the masked input of {u!r} is {vector.dtype} {vector.shape}, expected uint64 "
                                 f"({config.words},)")
    survivors = set(masked)
    dropped = set(state.shared).difference(survivors)
    needed = {u: state.shared[u] for u in survivors} | {
        d: state.shared[d] for d in dropped if survivors.intersection(state.shared[d])
    }
    counts = {u: len(survivors.intersection(holders)) + (u in survivors) for u, holders in needed.items()}
    _check_enough(config, counts, "sent a masked input")
    total = np.zeros(config.words, np.uint64)
    for u in sorted(survivors):
        total += np.asarray(masked[u])
    requests = {
        u: UnmaskRequest(tuple(sorted(survivors.intersection(state.shared[u]) | {u})),
                         tuple(sorted(dropped.intersection(state.shared[u]))))
        for u in sorted(survivors)
    }
    return dataclasses.replace(state, masked_sum=total, survivors=tuple(sorted(survivors))), requests


def unmask(state: ServerState, revealed: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    r"""Round 3, server: rebuild each survivor's :math:`b_u` and each dropped client's :math:`\sigma_d` from t
    shares, check them against the round-0 commitments, and remove the masks:

    .. math::
        \sum_{u \in U_3} x_u = \sum_{u \in U_3} y_u - \sum_{u \in U_3} \mathrm{PRG}(b_u)
        - \sum_{d \in U_2 \setminus U_3} \sum_{v \in N(d) \cap U_3} \Delta_{vd}\, \mathrm{PRG}(s_{vd})
        \pmod{2^{64}}

    Args:
      state: after :func:`collect_masked`.
      revealed: ``{responder: {owner: (kind, point, share)}}`` (:func:`reveal_shares`).

    Returns:
      The survivors' summed fixed-point payload (the plain sum bit for bit); decode it with
      :func:`federated.decode_statistics` or add it to an aggregate with :func:`federated.receive`.

    Raises:
      analytic.IntegrityError: fewer than t shares for a secret (round aborted), or a client whose shares rebuild
        a secret that does not match its advertised public key or commitment (naming the client).

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0, 1])
      >>> rng = np.random.default_rng(0)
      >>> payloads = {c: federated.encode_statistics(federated.client_statistics(
      ...     rng.normal(size=(5, 2)), rng.integers(0, 2, 5), 2, precision="fixed"), [0, 1]) for c in config.clients}
      >>> states, adverts = zip(*(advertise_keys(config, c) for c in config.clients))
      >>> server, forward = collect_keys(config, dict(zip(config.clients, adverts)))
      >>> states, sent = zip(*(share_keys(s, forward[s.client_id]) for s in states))
      >>> server, routed = route_shares(server, dict(zip(config.clients, sent)))
      >>> states, masked = zip(*(mask_input(s, routed[s.client_id], payloads[s.client_id]) for s in states))
      >>> server, requests = collect_masked(server, dict(zip(config.clients, masked)))
      >>> revealed = {s.client_id: reveal_shares(s, requests[s.client_id])[1] for s in states}
      >>> total = unmask(server, revealed)
      >>> plain = federated.aggregate_statistics(federated.decode_statistics(p, 2, precision="fixed")
      ...                                        for p in payloads.values())
      >>> analytic.state_hash(federated.decode_statistics(total, 2, precision="fixed")) == analytic.state_hash(plain)
      True
    """
    if state.masked_sum is None:
        raise analytic.IntegrityError("the masked inputs have not been collected: call collect_masked first")
    config, survivors = state.config, set(state.survivors)
    collected: dict[tuple[str, str], list] = {}
    for responder, shares in revealed.items():
        if responder not in survivors:
            raise UploadRejected(f"shares from {responder!r}, who sent no masked input")
        for owner, (kind, point, share) in shares.items():
            collected.setdefault((owner, kind), []).append((int(point), int(share)))
    dropped = sorted(set(state.shared).difference(survivors))
    wanted = [(u, "self") for u in sorted(survivors)] + [
        (d, "mask") for d in dropped if survivors.intersection(state.shared[d])
    ]
    _check_enough(config, {f"{owner} ({kind})": len(collected.get((owner, kind), [])) for owner, kind in wanted},
                  "revealed shares")
    total = state.masked_sum.copy()
    for owner, kind in wanted:
        seed = _rebuild(config, state.advertisements[owner], owner, kind, collected[(owner, kind)])
        if kind == "self":
            _add(total, mask_words(_self_mask_key(seed, config.round_id, owner), total.size), -1)
            continue
        mask_key = _mask_key(seed, config.round_id, owner)
        for v in sorted(survivors.intersection(state.shared[owner])):
            pair = mask_words(_agree(mask_key, state.advertisements[v].mask_key, "pair mask", config.round_id, owner, v),
                              total.size)
            _add(total, pair, -1 if v < owner else 1)  # v added Δ_vd · PRG(s_vd): take it back
    return _words_payload(total, config)


def _rebuild(config: RoundConfig, advertisement: KeyAdvertisement, owner: str, kind: str, shares) -> bytes:
    """A secret from t of its shares, checked against what its owner advertised in round 0."""
    try:
        seed = combine_shares(sorted(shares)[: config.threshold])
    except analytic.IntegrityError as error:
        raise analytic.IntegrityError(f"client {owner!r} sent inconsistent shares: {error}") from None
    if kind == "self":
        consistent = _commitment(seed, config.round_id, owner) == advertisement.commitment
    else:
        consistent = _public_bytes(_mask_key(seed, config.round_id, owner)) == advertisement.mask_key
    if not consistent:
        raise analytic.IntegrityError(
            f"client {owner!r} sent inconsistent shares: the rebuilt {'self-mask seed' if kind == 'self' else 'mask key'}"
            f" does not match what it advertised in round 0; round {config.round_id!r} aborted"
        )
    return seed


# ------------------------------------------------------------------------------------------ one round in process


def message_nbytes(message) -> int:
    """Bytes of a protocol message as sent, without framing: its byte strings, arrays and client ids, integers in
    8 bytes (Shamir shares, up to :math:`2^{130}`, in 17), a container as the sum of its keys and items.

    Args:
      message: what one of the rounds' steps sends or receives (bytes, str, array, int, or a mapping or sequence
        of them).

    Returns:
      Its size in bytes.

    Example:
      >>> message_nbytes(UnmaskRequest(survivors=("a", "b"), dropped=())), message_nbytes({"b": bytes(60)})
      (2, 61)
    """
    if isinstance(message, (bytes, str)):
        return len(message)
    if isinstance(message, np.ndarray):
        return message.nbytes
    if isinstance(message, int):
        return 17 if message >= 1 << 63 else 8
    if isinstance(message, Mapping):
        return sum(message_nbytes(k) + message_nbytes(v) for k, v in message.items())
    return sum(message_nbytes(v) for v in message)


@dataclasses.dataclass
class ProtocolCost:
    """What the parties of a round simulated in one process spent: each client's wall time and the bytes it sent
    and received (:func:`message_nbytes`), and the server's wall time.

    Attributes:
      seconds: client → its wall time over its steps (its own computation; transport not counted).
      up: client → the bytes it sent; down: client → the bytes the server sent it.
      server_seconds: the server's wall time over its steps.

    Example:
      >>> cost = ProtocolCost.of(["a", "b"])
      >>> _, advertisement = cost.client("a", advertise_keys, init_round(["a", "b"], 2, [0]), "a")
      >>> cost.up, cost.down  # three 32-byte keys
      ({'a': 96, 'b': 0}, {'a': 0, 'b': 0})
    """

    seconds: dict[str, float]
    up: dict[str, int]
    down: dict[str, int]
    server_seconds: float = 0.0

    @classmethod
    def of(cls, clients) -> ProtocolCost:
        """Nothing spent yet by ``clients`` (ids) or the server."""
        return cls(dict.fromkeys(clients, 0.0), dict.fromkeys(clients, 0), dict.fromkeys(clients, 0))

    def client(self, client_id: str, step, *args, received=()):
        """``step(*args)`` run by ``client_id``, which received ``received`` for it; returns what the step returns
        (the new state and the message sent)."""
        started = time.perf_counter()
        state, message = step(*args)
        self.seconds[client_id] += time.perf_counter() - started
        self.up[client_id] += message_nbytes(message)
        self.down[client_id] += message_nbytes(received)
        return state, message

    def on_server(self, step, *args):
        """``step(*args)`` run by the server; returns what the step returns."""
        started = time.perf_counter()
        result = step(*args)
        self.server_seconds += time.perf_counter() - started
        return result

    def copy(self) -> ProtocolCost:
        """An independent copy (to branch one round's first rounds into several endings)."""
        return ProtocolCost(dict(self.seconds), dict(self.up), dict(self.down), self.server_seconds)


def simulate_keys(config: RoundConfig, cost: ProtocolCost) -> tuple[dict[str, ClientState], ServerState, dict]:
    """Rounds 0 and 1 of a secure round in one process: every client of ``config`` advertises its keys and shares
    its secrets, the server forwards and routes them; each step is charged to ``cost``.

    Args:
      config: the round (:func:`init_round`).
      cost: the :class:`ProtocolCost` the steps' seconds and bytes are added to.

    Returns:
      The clients' states after :func:`share_keys`, the server's after :func:`route_shares`, and the routed shares
      ``{holder: {sender: ciphertext}}``.

    Raises:
      analytic.IntegrityError: a client with fewer than t neighbours (the round is aborted).

    Example:
      >>> config = init_round(["a", "b", "c"], 2, [0, 1])
      >>> states, server, routed = simulate_keys(config, ProtocolCost.of(config.clients))
      >>> sorted(server.shared), sorted(routed["a"]), states["a"].stage
      (['a', 'b', 'c'], ['b', 'c'], 'shared')
    """
    states, adverts, sent = {}, {}, {}
    for u in config.clients:
        states[u], adverts[u] = cost.client(u, advertise_keys, config, u)
    server, forward = cost.on_server(collect_keys, config, adverts)
    for u in config.clients:
        states[u], sent[u] = cost.client(u, share_keys, states[u], forward[u], received=forward[u])
    server, routed = cost.on_server(route_shares, server, sent)
    return states, server, routed


def simulate_unmask(config: RoundConfig, payloads: Mapping[str, dict], states: Mapping[str, ClientState],
                    server: ServerState, routed: Mapping, cost: ProtocolCost, *,
                    dropped=()) -> tuple[dict[str, np.ndarray], tuple[str, ...], dict[str, str]]:
    r"""Rounds 2 and 3 after :func:`simulate_keys`: every client but the ``dropped`` ones (gone after sharing their
    keys) masks its payload, the server sums the masked inputs, asks the survivors :math:`U_3` for their shares and
    unmasks :math:`\sum_{u \in U_3} x_u`; each step is charged to ``cost``. A client whose own check refuses its
    payload (:func:`mask_input`: not a fixed-point upload of the round's layout, or words too large) sends nothing,
    as if it had dropped.

    Args:
      config: the round.
      payloads: ``{client: fixed-point upload}`` (:func:`federated.encode_statistics`).
      states, server, routed: what :func:`simulate_keys` returned (not changed: the function works on copies).
      cost: the :class:`ProtocolCost` the steps are added to.
      dropped: the clients that send no masked input.

    Returns:
      The survivors' unmasked sum (a payload, the plain sum bit for bit: :func:`unmask`), the survivors, and
      ``{client: reason}`` of the clients that refused their own payload.

    Raises:
      analytic.IntegrityError: too few survivors for some secret (the round is aborted; nothing is unmasked).

    Example:
      >>> config = init_round(["a", "b", "c", "d"], 1, [0], threshold=2)
      >>> payloads = {c: federated.encode_statistics(federated.client_statistics(
      ...     np.full((2, 1), k + 1.0), np.zeros(2, int), 1, precision="fixed"), [0])
      ...     for k, c in enumerate(config.clients)}
      >>> cost = ProtocolCost.of(config.clients)
      >>> states, server, routed = simulate_keys(config, cost)
      >>> total, survivors, _ = simulate_unmask(config, payloads, states, server, routed, cost, dropped={"b"})
      >>> survivors, int(total["count"]), int(total["feature_sum"][0]) == sum(int(payloads[c]["feature_sum"][0])
      ...                                                                       for c in ("a", "c", "d"))
      (('a', 'c', 'd'), 6, True)
    """
    states, masked, refused = dict(states), {}, {}
    for u in config.clients:
        if u in dropped:
            continue
        try:
            states[u], masked[u] = cost.client(u, mask_input, states[u], routed[u], payloads[u], received=routed[u])
        except (UploadRejected, analytic.InputError) as error:
            refused[u] = str(error)
    server, requests = cost.on_server(collect_masked, server, masked)
    revealed = {}
    for u, request in requests.items():
        _, revealed[u] = cost.client(u, reveal_shares, states[u], request, received=request)
    return cost.on_server(unmask, server, revealed), server.survivors, refused

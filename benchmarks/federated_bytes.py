"""Bytes per client on the federated upload path, and what the server's checks cost.

    python -m benchmarks.federated_bytes [--quick] [--out results]

- ``bytes``: one upload's size against the client's sample count n_k, at d = 1,280 (a MobileNetV2 pooled feature)
  and d = 64, 10 classes: the packed Gram (float64, constant in n_k), the triangular factor R_k of the features
  (``federated.encode_factor``, min(n_k, d)·d − … numbers, float64) and both in float32 transport; every size is
  the length of a real encoded upload, checked against ``federated.statistics_nbytes``.
- ``exactness``: one round of clients with n_k < d sent each way, decoded and solved; the relative error of the
  decoded Gram against the packed float64 one, and of the head against a float64 direct solve of the pooled data
  (float32 transport is not exact: its error is the point of measuring it).
- ``checks``: server seconds for a round of K packed-Gram uploads at d = 1,280 — the per-upload checks and the
  round's one positive-semidefiniteness factorization — and the same round with one indefinite upload among them,
  isolated by bisection (the round still solves on the rest); each client's encode time, Gram against factor,
  interleaved.

Synthetic pooled-CNN-like features (``benchmarks.core``). Writes ``<out>/federated_bytes.json`` and plots
``federated_bytes.png`` (bytes per client against n_k, log axes).
"""

from __future__ import annotations

import time

import numpy as np

from analytic.plotting import pyplot
import federated
from .common import has_extra, interleaved_times, parser, print_table, write_json
from .core import N_CLASSES, pooled_like_features

RIDGE = 1.0
CLASS_IDS = np.arange(N_CLASSES)
FORMS = {  # form → (encoder, transport)
    "packed Gram, float64": ("gram", "float64"),
    "factor, float64": ("factor", "float64"),
    "packed Gram, float32": ("gram", "float32"),
    "factor, float32": ("factor", "float32"),
}


def encode(form: str, features, labels) -> dict:
    kind, transport = FORMS[form]
    if kind == "factor":
        return federated.encode_factor(features, labels, CLASS_IDS, transport=transport)
    dim = features.shape[1]
    return federated.encode_statistics(federated.client_statistics(features, labels, dim), CLASS_IDS,
                                       transport=transport)


def byte_rows(dims, sample_counts) -> list[dict]:
    """One row per (d, n_k, form): the encoded upload's bytes, equal to ``statistics_nbytes``."""
    rows = []
    for dim in dims:
        features, labels = pooled_like_features(max(sample_counts), dim, seed=1)
        for n in sample_counts:
            for form, (kind, transport) in FORMS.items():
                nbytes = federated.payload_nbytes(encode(form, features[:n], labels[:n]))
                formula = federated.statistics_nbytes(dim, N_CLASSES, n_samples=n if kind == "factor" else None,
                                                      transport=transport)
                assert nbytes == formula, (form, dim, n, nbytes, formula)
                rows.append({"d": dim, "n_k": n, "form": form, "bytes": nbytes,
                             "vs_packed_float64": nbytes / federated.statistics_nbytes(dim, N_CLASSES)})
    return rows


def pivot(rows) -> list[dict]:
    """One row per (d, n_k) with a column of bytes per form."""
    keys = list(dict.fromkeys((r["d"], r["n_k"]) for r in rows))
    table = []
    for dim, n in keys:
        row = {"d": dim, "n_k": n, **{r["form"]: r["bytes"] for r in rows if (r["d"], r["n_k"]) == (dim, n)}}
        row["factor / packed"] = row["factor, float64"] / row["packed Gram, float64"]
        table.append(row)
    return table


def relative_error(actual, expected) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def exactness(dim: int, n_clients: int, n_per_client: int) -> list[dict]:
    """A round of ``n_clients`` clients with ``n_per_client`` < d samples each, sent in every form."""
    features, labels = pooled_like_features(n_clients * n_per_client, dim, seed=2)
    parts = np.split(np.arange(labels.size), n_clients)
    one_hot = (labels[:, None] == CLASS_IDS[None, :]).astype(np.float64)
    direct = np.linalg.solve(features.T @ features + RIDGE * np.eye(dim), features.T @ one_hot)
    reference_gram = None
    rows = []
    for form in FORMS:
        uploads = [(f"client-{k}", encode(form, features[p], labels[p])) for k, p in enumerate(parts)]
        started = time.perf_counter()
        server = federated.init_aggregate(dim, CLASS_IDS, allow_float32=FORMS[form][1] == "float32")
        aggregate, rejected = federated.receive_many(server, uploads)
        seconds = time.perf_counter() - started
        assert rejected == {}, rejected
        gram = aggregate.statistics.moments.gram
        reference_gram = gram if reference_gram is None else reference_gram
        rows.append({
            "d": dim, "clients": n_clients, "n_k": n_per_client, "form": form,
            "bytes_per_client": federated.payload_nbytes(uploads[0][1]),
            "gram_error_vs_packed_float64": relative_error(gram, reference_gram),
            "head_error_vs_direct_float64": relative_error(federated.solve(aggregate, RIDGE).weights, direct),
            "server_seconds": seconds,
        })
    return rows


def indefinite(payload: dict, dim: int) -> dict:
    """An upload whose Gram passes every per-upload check but is not positive semidefinite: features 0, 1, 2 with
    pairwise correlation −0.9, large enough to outweigh the round."""
    gram = np.zeros((dim, dim))
    diagonal = federated.payload.diagonal_positions(dim)
    gram[np.diag_indices(dim)] = payload["gram"][diagonal]
    scale = 1e4 * gram.diagonal().max()
    gram[:3, :3] = scale * (1.9 * np.eye(3) - 0.9)
    return {**payload, "gram": gram[np.triu_indices(dim)]}


def check_costs(dim: int, n_clients: int, n_per_client: int, repeats: int) -> dict:
    """Server seconds for an honest round and for the same round with one indefinite upload; client encode times."""
    features, labels = pooled_like_features(n_clients * n_per_client, dim, seed=3)
    parts = np.split(np.arange(labels.size), n_clients)
    uploads = [(f"client-{k}", encode("packed Gram, float64", features[p], labels[p])) for k, p in enumerate(parts)]
    attacked = uploads[: n_clients // 2] + [("evil", indefinite(uploads[0][1], dim))] + uploads[n_clients // 2:]
    empty = federated.init_aggregate(dim, CLASS_IDS)
    started = time.perf_counter()
    for _, payload in uploads:
        federated.check_payload(payload, dim, class_ids=CLASS_IDS)
    check_seconds = (time.perf_counter() - started) / n_clients
    outcome = {}

    def honest_round():
        outcome["honest"] = federated.receive_many(empty, uploads)

    def attacked_round():
        outcome["attacked"] = federated.receive_many(empty, attacked)

    server = interleaved_times({"honest round": honest_round, "round with one indefinite upload": attacked_round},
                               repeats)
    honest, _ = outcome["honest"]
    survived, rejected = outcome["attacked"]
    x, y = features[parts[0]], labels[parts[0]]
    client = interleaved_times({"packed Gram": lambda: encode("packed Gram, float64", x, y),
                                "factor": lambda: encode("factor, float64", x, y)}, repeats)
    return {
        "d": dim, "clients": n_clients, "n_k": n_per_client, "check_seconds_per_upload": check_seconds,
        "honest_round_seconds": server["honest round"],
        "attacked_round_seconds": server["round with one indefinite upload"],
        "rejected": rejected,
        "attacked_round_equals_honest_round": bool(all(
            np.array_equal(survived.total[name], honest.total[name]) for name in honest.total)),
        "client_encode_seconds": client,
    }


def plot(rows, path) -> None:
    plt = pyplot()
    dims = sorted({r["d"] for r in rows}, reverse=True)
    figure, axes = plt.subplots(1, len(dims), figsize=(5.0 * len(dims), 3.8), squeeze=False)
    styles = {"packed Gram, float64": ("C0", "-"), "factor, float64": ("C1", "-"),
              "packed Gram, float32": ("C0", "--"), "factor, float32": ("C1", "--")}
    for axis, dim in zip(axes[0], dims):
        for form, (color, line) in styles.items():
            points = sorted((r["n_k"], r["bytes"]) for r in rows if r["d"] == dim and r["form"] == form)
            axis.plot(*zip(*points), color=color, linestyle=line, marker="o", markersize=3, label=form)
        axis.axvline(dim, color="0.6", linewidth=0.8, linestyle=":", label="n_k = d")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("samples on the client, n_k")
        axis.set_ylabel("bytes per client upload")
        axis.set_title(f"d = {dim:,}, {N_CLASSES} classes")
        axis.grid(True, which="major", linewidth=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=150)


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    quick = args.quick
    dims = (256, 64) if quick else (1_280, 64)
    sample_counts = sorted({1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, *dims, 2 * dims[0]})
    if quick:
        sample_counts = [n for n in sample_counts if n <= 2 * dims[0]]
    sizes = byte_rows(dims, sample_counts)
    print_table("Bytes of one client upload against its sample count (10 classes)", pivot(sizes),
                ["d", "n_k", *FORMS, "factor / packed"])
    exact = [row for dim in dims for row in exactness(dim, 8 if quick else 32, dim // 4)]
    print_table("One round of clients with n_k = d/4, each form: error against float64", exact,
                ["d", "clients", "n_k", "form", "bytes_per_client", "gram_error_vs_packed_float64",
                 "head_error_vs_direct_float64", "server_seconds"])
    costs = check_costs(dims[0], 8 if quick else 32, dims[0] // 4, 1 if quick else 3)
    print(f"\nserver checks at d = {costs['d']:,}, {costs['clients']} clients of n_k = {costs['n_k']}: "
          f"{costs['check_seconds_per_upload'] * 1e3:.1f} ms per upload; honest round "
          f"{costs['honest_round_seconds']:.2f} s, with one indefinite upload {costs['attacked_round_seconds']:.2f} s "
          f"(rejected: {costs['rejected']}; result equal to the honest round: "
          f"{costs['attacked_round_equals_honest_round']}); client encode: packed Gram "
          f"{costs['client_encode_seconds']['packed Gram'] * 1e3:.1f} ms, factor "
          f"{costs['client_encode_seconds']['factor'] * 1e3:.1f} ms")
    write_json(args.out, "federated_bytes", {"quick": quick, "bytes": sizes, "exactness": exact, "checks": costs})
    if has_extra("matplotlib", "plots", "the plot"):
        plot(sizes, f"{args.out}/federated_bytes.png")


if __name__ == "__main__":
    main()

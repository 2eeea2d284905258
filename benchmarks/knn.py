#!/usr/bin/env python
"""Time our weighted k-NN against the floor (one similarity matmul + top-k) and scikit-learn, same tensors.

    python benchmarks/knn.py                       # bank 100k x 384, 10k queries, 100 classes
    python benchmarks/knn.py --bank 20000 --queries 2000

The floor is the least any exact k-NN must do: normalise, one (Q, M) similarity matmul and one top-k, in one
block (it needs Q * M * 4 bytes: 4 GB at the default size). Ours does the same work in chunks of bounded
memory plus the weighted votes. scikit-learn: KNeighborsClassifier(algorithm="brute", metric="cosine"), fit +
predict (uniform votes). Prints seconds (best of --repeats) and ratios; asserts nothing.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from modeling_attg_mae.evaluation import knn_classify


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip_sklearn", action="store_true")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=generator)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    labels = torch.randint(0, args.classes, (args.bank,), generator=generator)
    print(f"bank {args.bank} x {args.dim}, {args.queries} queries, {args.classes} classes, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    def floor():
        similarity = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).t()  # (Q, M)
        return similarity.topk(args.k, dim=1)

    timings = {"floor (matmul + top-k)": best_of(floor, args.repeats)}
    timings[f"ours, k={args.k}"] = best_of(lambda: knn_classify(bank, labels, queries, ks=[args.k]), args.repeats)
    timings["ours, k=10,20,100,200"] = best_of(lambda: knn_classify(bank, labels, queries, ks=[10, 20, 100, 200]), args.repeats)

    # correctness on the side: our top-k neighbours are the floor's (votes aside)
    ours = knn_classify(bank, labels, queries[:500], ks=[1], num_ranked=1)[1][:, 0]
    nearest = (F.normalize(queries[:500], dim=1) @ F.normalize(bank, dim=1).t()).argmax(dim=1)
    assert torch.equal(ours, labels[nearest]), "k=1 prediction differs from the nearest neighbour's label"

    if not args.skip_sklearn:
        from sklearn.neighbors import KNeighborsClassifier

        bank_np, queries_np, labels_np = bank.numpy(), queries.numpy(), labels.numpy()

        def sklearn_knn():
            KNeighborsClassifier(n_neighbors=args.k, algorithm="brute", metric="cosine").fit(bank_np, labels_np).predict(queries_np)

        timings[f"scikit-learn brute cosine, k={args.k}"] = best_of(sklearn_knn, 1)

    base = timings["floor (matmul + top-k)"]
    print(f"{'method':<40}{'seconds':>10}{'x floor':>10}")
    for name, seconds in timings.items():
        print(f"{name:<40}{seconds:>10.2f}{seconds / base:>10.2f}")
    ours = timings[f"ours, k={args.k}"]
    for name, seconds in timings.items():
        if name.startswith("scikit"):
            print(f"scikit-learn / ours (k={args.k}): {seconds / ours:.2f}x")


if __name__ == "__main__":
    main()

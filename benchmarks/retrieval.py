#!/usr/bin/env python
"""Time retrieval scoring (ranking + revisitop mAP / mP@k of Easy, Medium and Hard) against the floor of any
exact retrieval evaluation: normalise, one similarity matmul, one full argsort.

    python benchmarks/retrieval.py                          # revisited-Oxford-like: 5k database x 70 queries x 384
    python benchmarks/retrieval.py --database 6322 --queries 70 --repeats 21

Random seeded features; fabricated ground truth per query (easy / hard / junk drawn without overlap from the
database, sizes uniform in [1, 2 * mean]). Floor and ours run alternately, `--repeats` times each; prints the
median and the spread (min - max) of each, and the ratio of the medians (target <= 1.5x). Asserts only that
ours ranks as the floor does (up to ties).
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from modeling_attg_mae.evaluation.retrieval import evaluate_revisited, rank_database


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=70)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--mean_easy", type=int, default=25)
    parser.add_argument("--mean_hard", type=int, default=40)
    parser.add_argument("--mean_junk", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    database = torch.randn(args.database, args.dim, generator=generator)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    rng = np.random.default_rng(0)
    gnd = []
    for _ in range(args.queries):
        sizes = [int(rng.integers(1, 2 * mean + 1)) for mean in (args.mean_easy, args.mean_hard, args.mean_junk)]
        chosen = rng.choice(args.database, size=sum(sizes), replace=False)
        gnd.append({"easy": chosen[: sizes[0]], "hard": chosen[sizes[0] : sizes[0] + sizes[1]], "junk": chosen[sizes[0] + sizes[1] :]})
    print(f"database {args.database} x {args.dim}, {args.queries} queries, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    def floor():
        similarity = F.normalize(queries, dim=1) @ F.normalize(database, dim=1).t()  # (Q, N)
        return similarity.argsort(dim=1, descending=True)

    def ours():
        return evaluate_revisited(database, queries, gnd, kappas=(1, 5, 10))

    # same order as the floor's up to ties (equal float32 similarities do occur; both leave them in the order
    # torch's unstable sort gives, as DINO does), so compare the similarities in ranked order
    similarity = F.normalize(queries, dim=1) @ F.normalize(database, dim=1).t()
    assert torch.equal(similarity.gather(1, floor()), similarity.gather(1, rank_database(database, queries))), \
        "the ranking differs from the floor's"
    times = {"floor (matmul + argsort)": [], "ours (ranking + mAP/mP@k, 3 protocols)": []}
    for _ in range(args.repeats):  # alternate, so that load on the machine hits both alike
        for name, fn in zip(times, (floor, ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name:<42} median {1e3 * statistics.median(values):8.2f} ms   spread {1e3 * min(values):.2f} - "
              f"{1e3 * max(values):.2f} ms")
    floor_median, ours_median = (statistics.median(v) for v in times.values())
    print(f"ratio ours / floor (medians): {ours_median / floor_median:.2f}x")
    scores = ours()
    print("mAP of the random features (chance level): " + ", ".join(f"{p} {100 * s.map:.2f}" for p, s in scores.items()))


if __name__ == "__main__":
    main()

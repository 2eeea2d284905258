"""Seeds for a study, from a pilot's paired differences: the power analysis a protocol states before its runs.

For every (treatment, control) pair of arms and every split, the pilot's per-seed differences give a paired sd;
with `m` tests in the Holm family, the seeds needed to detect `--difference` points at 80 % power are computed at
the Bonferroni level alpha / m (Holm's first step, so the bound holds for every step), together with the minimum
detectable difference at `--seeds`. The largest sd is the one to plan with; a pilot of a few seeds estimates it
loosely, so the protocol should round up.

    python benchmarks/study_power.py --records docs/results/texture --setting texture_pilot \\
        --pairs attg:none attg:permuted attg:centre sr:none --splits validation validation_mixed_rand --seeds 16
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_report import load_records  # noqa: E402

from modeling_attg_mae.evaluation.statistics import (  # noqa: E402
    mean_and_sd,
    minimum_detectable_difference,
    pairs_needed,
)


def pilot_differences(arms: dict, treatment: str, control: str, split: str, metric=("knn", "cls")) -> list[float]:
    seeds = sorted(set(arms[treatment]) & set(arms[control]))
    if len(seeds) < 2:
        raise ValueError(f"{treatment} - {control}: {len(seeds)} paired seed(s); a paired sd needs at least 2")
    data_seeds = {seed: (arms[treatment][seed].get("data_seed"), arms[control][seed].get("data_seed")) for seed in seeds}
    mismatched = sorted(seed for seed, (a, b) in data_seeds.items() if a != b)
    if mismatched:
        raise ValueError(f"{treatment} - {control}: seeds {mismatched} were trained on different data seeds")
    evaluation, pooling = metric
    return [arms[treatment][s][evaluation][pooling][split] - arms[control][s][evaluation][pooling][split]
            for s in seeds]


def power_table(arms: dict, pairs: list[tuple[str, str]], splits: list[str], difference: float, seeds: int,
                alpha: float = 0.05, power: float = 0.8) -> tuple[list[dict], float]:
    """One row per (pair, split): pilot n, mean and sd of the differences, seeds needed, detectable difference."""
    level = alpha / (len(pairs) * len(splits))
    rows = []
    for treatment, control in pairs:
        for split in splits:
            values = pilot_differences(arms, treatment, control, split)
            mean, sd = mean_and_sd(values)
            rows.append({"treatment": treatment, "control": control, "split": split, "pilot_n": len(values),
                         "mean": mean, "sd": sd, "seeds_needed": pairs_needed(difference, sd, level, power),
                         "detectable": minimum_detectable_difference(sd, seeds, level, power)})
    return rows, level


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True)
    parser.add_argument("--setting", required=True)
    parser.add_argument("--pairs", nargs="+", required=True, help="treatment:control arm pairs (the hypotheses)")
    parser.add_argument("--splits", nargs="+", default=["validation", "validation_mixed_rand"])
    parser.add_argument("--difference", type=float, default=5.0, help="points to detect (default 5)")
    parser.add_argument("--seeds", type=int, default=16, help="seed count whose detectable difference to report")
    args = parser.parse_args(argv)
    settings = load_records(args.records)
    if args.setting not in settings:
        parser.error(f"--setting {args.setting!r}: no records under {args.records}/{args.setting}; settings there: "
                     f"{sorted(settings)}")
    arms = settings[args.setting]
    pairs = []
    for pair in args.pairs:
        treatment, colon, control = pair.partition(":")
        if not colon or not treatment or not control or treatment == control:
            parser.error(f"--pairs {pair!r}: expected treatment:control, two different arms (e.g. attg:none)")
        missing = [arm for arm in (treatment, control) if arm not in arms]
        if missing:
            parser.error(f"--pairs {pair!r}: no records of arm(s) {missing} in setting {args.setting!r} "
                         f"(arms: {sorted(arms)})")
        pairs.append((treatment, control))
    for arm in {arm for pair in pairs for arm in pair}:
        for seed, record in arms[arm].items():
            absent = [split for split in args.splits if split not in record.get("knn", {}).get("cls", {})]
            if absent:
                parser.error(f"--splits: seed {seed} of arm {arm!r} has no k-NN CLS result on {absent}")
    rows, level = power_table(arms, pairs, args.splits, args.difference, args.seeds)
    print(f"{len(rows)} tests: planned at alpha / m = {level:.4g}, power 0.8, to detect {args.difference:g} points")
    print(f"| treatment - control | split | pilot n | mean | sd | seeds for {args.difference:g} points | "
          f"detectable with {args.seeds} seeds |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['treatment']} - {row['control']} | {row['split']} | {row['pilot_n']} | {row['mean']:+.1f} | "
              f"{row['sd']:.1f} | {row['seeds_needed']} | {row['detectable']:.1f} |")


if __name__ == "__main__":
    main()

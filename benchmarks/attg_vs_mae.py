"""Vanilla MAE vs AttG-MAE on the embedded synthetic benchmark, side by side, several seeds (issue #6).

For every seed, both models start from the same weights and see the same images, crops, flips and masks in the
same order (see `study_harness.py`); only the loss differs (`attg_guidance="none"` vs `"attg"`). Each model is
evaluated with DINO's weighted k-NN (k = 20) and the fast linear probe, on CLS and on mean-pooled features, on
`validation` (backgrounds correlated with the class), `validation_mixed_rand` (random backgrounds) and
`validation_only_fg` (grey backgrounds). Prints mean +- std over seeds of each model and of the paired
difference AttG - MAE, and the raw-pixel floor. Records go to `--output` (JSON) for docs/RESULTS.md.

    python benchmarks/attg_vs_mae.py                                   # the main study (3 seeds, ~30 min on 2 cores)
    python benchmarks/attg_vs_mae.py --seeds 0 --set epochs=10          # a quick look
    python benchmarks/attg_vs_mae.py --set map_source=spectral_residual --set hidden_size=192
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_harness import (  # noqa: E402
    EVAL_SPLITS, POOLINGS, StudyConfig, evaluate_raw_pixels, plot_curves, run_study, save_json, summarize,
)

PRIMARY = ("mean", "knn")  # the headline metric: k-NN top-1 on mean-pooled features (see docs/RESULTS.md)


def parse_overrides(pairs: list[str]) -> dict:
    """`["epochs=10", "object_area=(0.2, 0.4)"]` -> typed StudyConfig fields; unknown names are an error."""
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set expects NAME=VALUE with NAME one of {sorted(fields)}, got {pair!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare string such as map_source=spectral_residual
        out[name] = value
    return out


def format_row(name: str, values: list[float]) -> str:
    mean, std = summarize(values)
    return f"{name:<34} {mean:6.2f} +- {std:5.2f}   " + " ".join(f"{v:6.2f}" for v in values)


def report(records: dict[str, list[dict]], raw: dict, log=print) -> dict:
    """Print the table; return `{pooling/metric/split: {"mae": [...], "attg": [...], "diff": [...]}}`."""
    table = {}
    log(f"\n{'metric (top-1 %)':<34} {'mean +- std':>15}   per seed")
    for pooling in POOLINGS:
        for metric in ("knn", "linear"):
            for split in EVAL_SPLITS:
                key = f"{metric}/{split}"
                mae = [r["results"][pooling][key] for r in records["none"]]
                attg = [r["results"][pooling][key] for r in records["attg"]]
                diff = [a - m for a, m in zip(attg, mae)]
                table[f"{pooling}/{key}"] = {"mae": mae, "attg": attg, "diff": diff}
                marker = "  <- primary" if (pooling, metric) == PRIMARY and split != "validation_only_fg" else ""
                log(format_row(f"{pooling:<4} {key} MAE", mae))
                log(format_row(f"{pooling:<4} {key} AttG", attg))
                mean_diff, std_diff = summarize(diff)
                mae_std, attg_std = summarize(mae)[1], summarize(attg)[1]
                spread = max(mae_std, attg_std)
                verdict = ("> 2 std" if spread > 0 and mean_diff > 2 * spread else "<= 2 std") if len(diff) > 1 else ""
                log(format_row(f"{pooling:<4} {key} AttG-MAE", diff) + f"  [{verdict} of seed spread]{marker}")
    for key, value in raw.items():
        log(f"raw pixels {key:<26} {value:6.2f}")
    return table


def markdown_table(table: dict, raw: dict) -> str:
    """The table of docs/RESULTS.md: mean +- std over seeds of each arm and of the paired difference."""
    lines = ["| pooling | metric | split | MAE | AttG | AttG - MAE (paired) | raw pixels |",
             "|---|---|---|---|---|---|---|"]
    for key, arms in table.items():
        pooling, metric, split = key.split("/")
        cells = []
        for arm in ("mae", "attg", "diff"):
            mean, std = summarize(arms[arm])
            cells.append(f"{mean:+.1f} +- {std:.1f}" if arm == "diff" else f"{mean:.1f} +- {std:.1f}")
        lines.append(f"| {pooling} | {metric} | {split} | " + " | ".join(cells)
                     + f" | {raw[f'{metric}/{split}']:.1f} |")
    return "\n".join(lines)


def plot_progress(records: dict[str, list[dict]], path: str) -> None:
    """k-NN (mean pooling) over training, mean +- std over seeds, both arms, validation and mixed_rand."""
    colors = {"none": (31, 119, 180), "attg": (214, 39, 40)}
    names = {"none": "MAE", "attg": "AttG-MAE"}
    curves = {}
    for split, dashed in (("validation", False), ("validation_mixed_rand", True)):
        for guidance, runs in records.items():
            epochs = [e["epoch"] for e in runs[0]["history"]["evals"]]
            per_epoch = [[run["history"]["evals"][i][f"knn/{split}"] for run in runs] for i in range(len(epochs))]
            stats = [summarize(values) for values in per_epoch]
            label = f"{names.get(guidance, guidance)} {'mixed_rand' if dashed else 'val'}"
            curves[label] = (epochs, [m for m, _ in stats], [s for _, s in stats],
                             colors.get(guidance, (90, 90, 90)), dashed)
    seeds = len(next(iter(records.values())))
    plot_curves(curves, path, f"k-NN top-1 (k=20, mean pooling) during pre-training, mean +- std of {seeds} seeds")


# fields that a vanilla MAE run does not read: its records pair with AttG runs that differ only in these
GUIDANCE_FIELDS = ("map_source", "map_grid", "tokencut_checkpoint", "temperature", "temperature_end",
                   "temperature_schedule")


def merge_records(paths: list[str], records: dict[str, list[dict]]) -> StudyConfig:
    """Fill `records` from earlier outputs; refuse runs whose configs differ in anything but the seed.

    The "none" arm is matched on every field but the seed and `GUIDANCE_FIELDS` (it ignores them), so the
    MAE runs of the main study pair with, e.g., an AttG arm run later with another map source.
    """
    shared, guided = None, None
    for spec in paths:
        path, _, only = spec.partition(":")  # "file.json:none" takes only that arm of the file
        with open(path) as f:
            saved = json.load(f)
        for guidance, runs in saved["records"].items():
            if only and guidance != only:
                continue
            if guidance not in records:
                raise ValueError(f"{path} has arm {guidance!r}; this comparison has arms {sorted(records)}")
            for run in runs:
                # eval_every only adds evaluations during training (no random draws): it does not change the run
                config = {k: v for k, v in run["config"].items() if k not in ("seed", "guidance", "eval_every")}
                common = {k: v for k, v in config.items() if k not in GUIDANCE_FIELDS}
                shared = shared or common
                if common != shared:
                    changed = sorted(k for k in common if common[k] != shared.get(k))
                    raise ValueError(f"{path}: seed {run['config']['seed']} was run with another config ({changed})")
                if guidance != "none":
                    guided = guided or config
                    if config != guided:
                        changed = sorted(k for k in config if config[k] != guided.get(k))
                        raise ValueError(f"{path}: seed {run['config']['seed']} of {guidance!r} differs in {changed}")
                records[guidance].append(run)
    for runs in records.values():
        runs.sort(key=lambda run: run["config"]["seed"])
    seeds = [[run["config"]["seed"] for run in runs] for runs in records.values()]
    if any(s != seeds[0] for s in seeds) or len(set(seeds[0])) != len(seeds[0]):
        raise ValueError(f"the merged files must hold each seed once for every arm, got {seeds}")
    fields = {f.name for f in dataclasses.fields(StudyConfig)}
    reference = guided or shared
    base = {k: tuple(v) if isinstance(v, list) else v for k, v in reference.items() if k in fields}
    return StudyConfig(**base)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a StudyConfig field (repeatable), e.g. --set epochs=20")
    parser.add_argument("--guidance", nargs="+", default=["none", "attg"],
                        help="the two arms; the second is compared to the first")
    parser.add_argument("--progress_every", type=int, default=5,
                        help="k-NN (mean pooling) on validation + mixed_rand every N epochs, for the plot (0: off)")
    parser.add_argument("--output", default="outputs/study/attg_vs_mae.json")
    parser.add_argument("--plot", default=None, help="write the k-NN-over-training PNG here (e.g. docs/knn_over_training.png)")
    parser.add_argument("--from_json", nargs="+", default=None,
                        help="no training: merge the records of earlier --output files (same config, other seeds) "
                             "and print / plot them; FILE:ARM takes one arm of a file (e.g. main.json:none)")
    args = parser.parse_args(argv)
    base = StudyConfig(**parse_overrides(args.set), eval_every=args.progress_every)
    torch.set_num_threads(base.threads)
    start = time.perf_counter()
    records = {guidance: [] for guidance in args.guidance}
    if args.from_json:
        base, args.seeds = merge_records(args.from_json, records), []
    print(f"config: {dataclasses.asdict(base)}")
    for seed in args.seeds:
        for guidance in args.guidance:  # interleaved: a drift in machine load hits both arms
            config = dataclasses.replace(base, guidance=guidance, seed=seed)
            record = run_study(config, progress_pooling=PRIMARY[0])
            record.pop("model")
            records[guidance].append(record)
            res = record["results"][PRIMARY[0]]
            print(f"seed {seed} {guidance:<5} knn(mean) val {res['knn/validation']:.1f} "
                  f"mixed_rand {res['knn/validation_mixed_rand']:.1f} only_fg {res['knn/validation_only_fg']:.1f} "
                  f"| train {record['train_seconds']:.0f}s", flush=True)
    raw = evaluate_raw_pixels(base)
    if set(args.guidance) == {"none", "attg"}:
        table = report(records, raw)
        print("\n" + markdown_table(table, raw))
    else:
        table = None
    print(f"\ntotal wall-clock {time.perf_counter() - start:.0f}s, torch threads {torch.get_num_threads()}")
    seeds = [run["config"]["seed"] for run in records[args.guidance[0]]]
    save_json({"base_config": dataclasses.asdict(base), "seeds": seeds, "records": records, "raw_pixels": raw,
               "table": table, "wall_seconds": time.perf_counter() - start, "argv": sys.argv[1:]}, args.output)
    print(f"wrote {args.output}")
    if args.plot and args.progress_every:
        plot_progress(records, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

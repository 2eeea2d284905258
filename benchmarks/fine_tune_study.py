"""Low-shot fine-tuning of the method study's checkpoints, MAE vs AttG (issue 13): the runs and the report.

The protocol (checkpoints, recipe, fractions, primary metric and bar) was committed before the first run:
docs/results/fine_tune/PROTOCOL.md. Every run is the shipped CLI, `run_fine_tune.py`, at its defaults (MAE's
recipe) with `--train_fraction F --seeds S`, on the checkpoint `<work>/<study setting>/seed<S>-<arm>` written by
`benchmarks/attg_vs_mae.py`; fine-tuning seed = pre-training seed, so both arms of a seed see the same subset.

    # the runs (one torch thread per process, as the checkpoints were made); a record that exists is skipped
    OMP_NUM_THREADS=1 python benchmarks/fine_tune_study.py run --work outputs/study --fractions 0.01 0.1
    # the tables: print, or replace the block between the markers in docs/RESULTS.md
    python benchmarks/fine_tune_study.py report [--write]

One record per (fraction, seed, arm): `docs/results/fine_tune/<setting>/seed<S>-<arm>.json` with setting `1pct` /
`10pct`. The report pairs arms by seed with the method study's rules (`study_report`: one home for loading, pairing,
the bar and the p format) and its paired t-test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from study_report import (  # noqa: E402
    ALPHA,
    BAR_SPLITS,
    CONTROL_ARM,
    SPLITS,
    arm_name,
    bar_met,
    comparison_row,
    format_p,
    load_records,
    paired_seeds,
    write_between_markers,
)

from modeling_attg_mae.evaluation.statistics import mean_and_sd, paired_comparison  # noqa: E402

RECORDS = REPO / "docs" / "results" / "fine_tune"
# the study records of the checkpoints (their frozen k-NN, made on this machine for issue 14)
CHECKPOINT_RECORDS = REPO / "docs" / "results" / "eval_breadth" / "checkpoint_records"
RESULTS_MD = REPO / "docs" / "RESULTS.md"
BEGIN, END = "<!-- fine_tune:begin -->", "<!-- fine_tune:end -->"
SCHEMA_VERSION = 1


def setting_of(fraction: float) -> str:
    """`0.01` -> `1pct`, `0.1` -> `10pct`: the records' folder (and the model card's metric name)."""
    return f"{fraction * 100:g}pct"


def fine_tune(checkpoint: Path, fraction: float, seed: int, output_dir: Path, extra: list[str]) -> dict:
    """One `run_fine_tune.py` run (a subprocess: the CLI users run); its per-seed rows by split."""
    argv = [sys.executable, str(REPO / "run_fine_tune.py"), "--model_name_or_path", str(checkpoint),
            "--train_fraction", str(fraction), "--seeds", str(seed), "--output_dir", str(output_dir),
            "--overwrite_output_dir", "--update_model_card", "false", "--disable_tqdm", "true", *extra]
    start = time.time()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run_fine_tune.py failed on {checkpoint} ({fraction}, seed {seed}):\n{done.stderr[-3000:]}")
    payload = json.loads((output_dir / "fine_tune_results.json").read_text())
    rows = [r for r in payload["results"] if r.get("seed") == seed]
    return {"argv": argv[1:], "seconds": round(time.time() - start, 1), "recipe": payload["recipe"],
            "num_train_images": rows[0]["num_train_images"],
            "fine_tune": {r["split"]: {"top1": r["top1"], "top5": r["top5"]} for r in rows}}


def run(args) -> None:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    for fraction in args.fractions:
        setting = setting_of(fraction)
        for seed in args.seeds:
            for arm in args.arms:
                path = Path(args.records) / setting / f"seed{seed}-{arm}.json"
                if path.exists() and not args.overwrite:
                    print(f"[{setting}] seed {seed} {arm}: record exists, skipped ({path})", flush=True)
                    continue
                checkpoint = Path(args.work) / args.study_setting / f"seed{seed}-{arm}"
                study = json.loads((CHECKPOINT_RECORDS / args.study_setting / f"seed{seed}-{arm}.json").read_text())
                print(f"[{setting}] seed {seed} {arm}: fine-tuning {checkpoint}", flush=True)
                result = fine_tune(checkpoint, fraction, seed, Path(args.output) / setting / f"seed{seed}-{arm}",
                                   args.extra)
                record = {"schema_version": SCHEMA_VERSION, "setting": setting, "seed": seed, "arm": arm,
                          "fraction": fraction, "data_seed": study["data_seed"], "study_setting": args.study_setting,
                          "checkpoint_commit": study["commit"], "commit": commit or None, **result,
                          "knn": {split: {"top1": top1} for split, top1 in study["knn"]["cls"].items()}}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record, indent=1) + "\n")
                top1 = {s: round(v["top1"], 1) for s, v in record["fine_tune"].items()}
                print(f"[{setting}] seed {seed} {arm}: top-1 {top1} in {result['seconds']:.0f} s -> {path}", flush=True)


def values(records: list[dict], evaluation: str, name: str, split: str) -> list[float]:
    return [float(record[evaluation][split][name]) for record in records]


def render_setting(setting: str, arms_by_seed: dict[str, dict[int, dict]]) -> str:
    seeds = paired_seeds(setting, arms_by_seed)
    arms = {arm: [arms_by_seed[arm][seed] for seed in seeds] for arm in arms_by_seed}
    first = arms[CONTROL_ARM][0]
    # the subset size of every seed (a stratified fraction rounds per class, so seeds may differ by an image)
    sizes = [record["num_train_images"] for record in arms[CONTROL_ARM]]
    size = (f"{sizes[0]} train images" if len(set(sizes)) == 1 else
            "train images " + ", ".join(f"{n} (seed {seed})" for seed, n in zip(seeds, sizes)))
    lines = [f"### {first['fraction'] * 100:g} % of the labels ({size}; "
             f"{len(seeds)} seeds: {', '.join(map(str, seeds))})", ""]
    for arm in sorted(a for a in arms if a != CONTROL_ARM):
        cs = {split: paired_comparison(values(arms[arm], "fine_tune", "top1", split),
                                       values(arms[CONTROL_ARM], "fine_tune", "top1", split), ALPHA)
              for split in BAR_SPLITS}
        verdict = "met" if all(bar_met(c) for c in cs.values()) else "not met"
        detail = "; ".join(f"{split}: {'met' if bar_met(c) else 'not met'} ({c['diff_mean']:+.2f}, "
                           f"p = {format_p(c['p'])})" for split, c in cs.items())
        lines += [f"**Bar for {arm_name(arm)} vs MAE on fine-tuned top-1: {verdict}** ({detail}).", "",
                  f"| metric | split | MAE | {arm_name(arm)} | difference | {100 * (1 - ALPHA):g} % CI | t | p | "
                  "+ / - / 0 | bar |", "|---|---|---|---|---|---|---|---|---|---|"]
        for evaluation, name, label, primary in (("fine_tune", "top1", "fine-tuned top-1", True),
                                                 ("fine_tune", "top5", "fine-tuned top-5", False),
                                                 ("knn", "top1", "frozen k-NN top-1 (CLS, k = 20)", False)):
            for split in SPLITS:
                lines.append(comparison_row(label, split, values(arms[arm], evaluation, name, split),
                                            values(arms[CONTROL_ARM], evaluation, name, split), primary))
    lines += ["", "Fine-tuned minus frozen k-NN top-1 of the same checkpoint (mean +- sd over seeds), and the "
              "wall-clock per fine-tuning (one torch thread, other jobs on the machine):", "",
              "| arm | split | fine-tuned - k-NN | seconds |", "|---|---|---|---|"]
    for arm, runs in arms.items():
        for split in SPLITS:
            gain = mean_and_sd([a - b for a, b in zip(values(runs, "fine_tune", "top1", split),
                                                       values(runs, "knn", "top1", split))])
            seconds = mean_and_sd([r["seconds"] for r in runs])[0]
            lines.append(f"| {arm_name(arm)} | {split} | {gain[0]:+.1f} +- {gain[1]:.1f} | {seconds:.0f} |")
    return "\n".join(lines)


def render(records_dir: str) -> str:
    settings = load_records(records_dir)
    count = sum(len(runs) for arms in settings.values() for runs in arms.values())
    link_dir = os.path.dirname(os.path.abspath(RESULTS_MD))
    head = (f"Generated by `python benchmarks/fine_tune_study.py report --write` from the {count} records in "
            f"`{os.path.relpath(records_dir, link_dir)}/`; edit the records or the script, not this block. Primary "
            f"metric (fixed before the runs, {os.path.relpath(os.path.join(records_dir, 'PROTOCOL.md'), link_dir)}): "
            f"fine-tuned top-1, per fraction; bar: p < {ALPHA:g} (two-sided paired t-test over seeds) with a positive "
            f"mean difference on each of {' and '.join(BAR_SPLITS)}. The fractions are tested without a "
            "multiple-comparison correction.")
    order = sorted(settings, key=lambda s: float(s.removesuffix("pct")))
    return "\n\n".join([head] + [render_setting(s, settings[s]) for s in order])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("run", help="fine-tune the checkpoints, one record per (fraction, seed, arm)")
    runs.add_argument("--work", required=True, help="attg_vs_mae.py's --work: <work>/<setting>/seed<S>-<arm>")
    runs.add_argument("--study-setting", default="main")
    runs.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    runs.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    runs.add_argument("--arms", nargs="+", default=["none", "attg"])
    runs.add_argument("--output", default="outputs/fine_tune_study", help="the fine-tuning runs' folders")
    runs.add_argument("--records", default=str(RECORDS))
    runs.add_argument("--overwrite", action="store_true")
    runs.add_argument("extra", nargs="*", help="after --: more run_fine_tune.py flags (not the protocol's)")
    report = commands.add_parser("report", help="the tables of docs/RESULTS.md from the records")
    report.add_argument("--records", default=str(RECORDS))
    report.add_argument("--write", action="store_true", help="replace the block between the markers in RESULTS.md")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
        return
    text = render(args.records)
    if args.write:
        write_between_markers(str(RESULTS_MD), text, BEGIN, END)
    else:
        print(text)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

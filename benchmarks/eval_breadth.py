"""Retrieval, the attentive probe and the feature-space picture on the method study's checkpoints (issue 14).

For every (seed, arm) of a setting of `benchmarks/attg_vs_mae.py`, the exported checkpoint in
`<work>/<setting>/seed<S>-<arm>` is evaluated by the package's own code on the data it was trained on (its
`attg_mae_data.json`): `run_retrieval` (label positives, CLS, single scale) and `run_linear_probe --head
attentive` (features mode, lr chosen on held-out train data), all at their defaults, as fixed in
docs/results/eval_breadth/PROTOCOL.md. Before that, the checkpoint's own study record (rewritten by
attg_vs_mae.py into `--study-records`) is compared with the committed one: a checkpoint that does not reproduce its
committed record is marked so in the new record. One JSON record per (setting, seed, arm) goes to `--records`;
`benchmarks/eval_breadth_report.py` renders the tables. The seed-0 pair is also drawn as a t-SNE picture.

    # 1. the checkpoints (kept in outputs/study; the regenerated study records go elsewhere, the committed stay);
    #    one torch thread per process, as the committed records were made: the thread count changes the float
    #    reduction order, and 320 steps turn that into points of k-NN
    OMP_NUM_THREADS=1 python benchmarks/attg_vs_mae.py --records outputs/study/records --work outputs/study
    # 2. the evaluations and the picture, then the tables
    OMP_NUM_THREADS=1 python benchmarks/eval_breadth.py --work outputs/study --study-records outputs/study/records
    python benchmarks/eval_breadth_report.py --write

A (setting, seed, arm) that has a record is skipped (`--overwrite` reruns it), so checkpoints can be evaluated
while the later ones still train.
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
sys.path.insert(0, str(REPO))

RECORDS = REPO / "docs" / "results" / "eval_breadth"
STUDY_RECORDS = REPO / "docs" / "results" / "attg_vs_mae"
# what a reproduced checkpoint must match in its study record; the rest (argv with its paths, commit, seconds)
# legitimately differs between two runs
PICTURE_SEED = 0
REPRODUCED_FIELDS = ("seed", "data_seed", "arm", "knn", "linear", "curve", "object_loss_share")


def record_differences(regenerated: dict, committed: dict) -> list[str]:
    return [name for name in REPRODUCED_FIELDS if regenerated.get(name) != committed.get(name)]


def evaluate(checkpoint: Path, argv: list[str]) -> dict:
    from attg_vs_mae import evaluation_inputs  # the study's own: the same data and cache as its k-NN and probe

    from modeling_attg_mae.evaluation.arguments import EvalModelArguments, LinearProbeArguments, RetrievalArguments
    from modeling_attg_mae.evaluation.pipelines import run_linear_probe
    from modeling_attg_mae.evaluation.retrieval import run_retrieval

    dataset, data, run = evaluation_inputs(checkpoint, argv)
    start = time.time()
    retrieval = run_retrieval(EvalModelArguments(str(checkpoint), pooling="cls"), data, run("eval-retrieval"),
                              RetrievalArguments(), dataset=dataset)
    retrieval_seconds = time.time() - start
    start = time.time()
    attentive = run_linear_probe(EvalModelArguments(str(checkpoint)), data, run("eval-attentive"),
                                 LinearProbeArguments(mode="features", head="attentive"), dataset=dataset)
    attentive_seconds = time.time() - start
    rows = [row for row in attentive["results"] if row["method"] == "attentive_probe"]
    return {
        "retrieval": {row["split"]: {"mAP": row["map"], **{f"mP@{k}": v for k, v in row["mp_at_k"].items()}}
                      for row in retrieval["results"] if row["protocol"] == "same_label"},
        "attentive": {row["split"]: {"top1": row["top1"], "top5": row["top5"]} for row in rows},
        "attentive_num_parameters": rows[0]["num_parameters"],
        "attentive_base_lr": rows[0].get("base_lr"),
        "seconds": {"retrieval": round(retrieval_seconds, 1), "attentive": round(attentive_seconds, 1)},
    }


def draw_pair(setting: str, seed: int, work: Path, records: Path) -> Path:
    """The t-SNE picture of the seed's MAE (top row) and AttG (bottom row) checkpoints, every eval split."""
    from modeling_attg_mae.evaluation.embedding_plot import main as embedding_plot

    output = records / f"{setting}_embedding_tsne.png"
    embedding_plot(["--checkpoints", str(work / setting / f"seed{seed}-none"), str(work / setting / f"seed{seed}-attg"),
                    "--output", str(output)])
    return output


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="main")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=["none", "attg"])
    parser.add_argument("--work", default="outputs/study", help="attg_vs_mae.py's --work: the checkpoints")
    parser.add_argument("--study-records", required=True,
                        help="attg_vs_mae.py's --records of the run that wrote the checkpoints")
    parser.add_argument("--records", default=str(RECORDS), help="where this study's records go")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    work, records = Path(args.work), Path(args.records)
    for seed in args.seeds:
        for arm in args.arms:
            path = records / args.setting / f"seed{seed}-{arm}.json"
            if path.exists() and not args.overwrite:
                print(f"[{args.setting}] seed {seed} {arm}: record exists, skipped ({path})", flush=True)
                continue
            checkpoint = work / args.setting / f"seed{seed}-{arm}"
            regenerated_path = Path(args.study_records) / args.setting / f"seed{seed}-{arm}.json"
            if not regenerated_path.is_file():
                print(f"[{args.setting}] seed {seed} {arm}: no checkpoint record yet ({regenerated_path}), skipped",
                      flush=True)
                continue
            regenerated = json.loads(regenerated_path.read_text())
            committed = json.loads((STUDY_RECORDS / args.setting / f"seed{seed}-{arm}.json").read_text())
            differences = record_differences(regenerated, committed)
            print(f"[{args.setting}] seed {seed} {arm}: evaluating {checkpoint} (study record "
                  f"{'reproduced' if not differences else 'differs in ' + ', '.join(differences)})", flush=True)
            result = evaluate(checkpoint, regenerated["argv"])
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
            # the checkpoint's own study numbers (its regenerated record): the linear probe the attentive one is
            # compared with, and the method study's primary k-NN, re-measured on these checkpoints
            record = {"schema_version": 1, "setting": args.setting, "seed": seed, "arm": arm,
                      "data_seed": regenerated["data_seed"], "commit": commit.stdout.strip() or None,
                      "checkpoint_commit": regenerated["commit"],
                      "checkpoint_reproduces_study_record": not differences,
                      "study_record_differences": differences, **result,
                      "knn": {split: {"top1": top1} for split, top1 in regenerated["knn"]["cls"].items()},
                      "linear": {split: {"top1": top1} for split, top1 in regenerated["linear"]["cls"].items()}}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1) + "\n")
            # the checkpoint's full study record next to it: `study_report.py --records <records>/checkpoint_records`
            # renders the method study's tables for these checkpoints
            kept = records / "checkpoint_records" / args.setting / regenerated_path.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(regenerated_path.read_text())
            print(f"[{args.setting}] seed {seed} {arm}: mAP {({s: round(v['mAP'], 1) for s, v in record['retrieval'].items()})}"
                  f" attentive {({s: round(v['top1'], 1) for s, v in record['attentive'].items()})} -> {path}", flush=True)
    picture = records / f"{args.setting}_embedding_tsne.png"
    if PICTURE_SEED in args.seeds and (args.overwrite or not picture.exists()):  # the protocol's picture: seed 0
        print("t-SNE picture:", draw_pair(args.setting, PICTURE_SEED, work, records))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

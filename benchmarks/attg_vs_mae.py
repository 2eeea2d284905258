"""Does AttG help on my data? MAE and AttG-MAE trained by `run_pretrain.py` itself, paired by seed (issue 10).

For every seed, both arms are `python run_pretrain.py ...` with the same arguments but `--attg_guidance`: the same
initial weights, data order, crops, maps and masking noise (tests/test_pretrain.py asserts it on the tensors),
only the loss differs. Both arms load the maps (`--maps_for_vanilla_mae`) so that MAE's unweighted
`object_loss_share` is logged next to AttG's weighted one, and both run the online k-NN monitor. After training,
each exported checkpoint is evaluated by the package's own evaluation code: k-NN (k=20, CLS from `--run_knn`;
mean pooling) and the features-mode linear probe (learning rate chosen on held-out train data). One JSON record
per (setting, seed, arm) goes to `--records`; `benchmarks/study_report.py` turns the records into the tables of
docs/RESULTS.md (paired differences, 95% intervals, paired t-tests), so every table regenerates with one command.

    python benchmarks/attg_vs_mae.py                                  # the synthetic study: 5 seeds, data seed = seed
    python benchmarks/attg_vs_mae.py --setting shape -- --synthetic_object_color random
    python benchmarks/attg_vs_mae.py --setting mydata --seeds 0 1 2 3 4 -- \\
        --dataset_name /data/my_dataset --attention_method column --attention_source_column mask

Everything after `--` is passed to `run_pretrain.py` (its data arguments: a Hub name, a Hub-layout or
`save_to_disk` folder, `--train_dir`, or the synthetic set; the map source `--attention_method`, incl. `column`;
the model; the schedule; `--eval_splits` and `--label_column_name` for the evaluation, by default every split
but the training one and `label`) and overrides the synthetic defaults below. A finished (setting, seed, arm) keeps its record and is skipped, so an
interrupted study continues where it stopped (`--overwrite` reruns).
GPU: the same command; `run_pretrain.py` uses the GPU when there is one (add `-- --bf16` there).
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

from modeling_attg_mae.pretraining import DEMO_ARGUMENTS, parse_arguments  # noqa: E402

RECORDS = REPO / "docs" / "results" / "attg_vs_mae"
# The synthetic defaults: the demo's model, data and schedule (object masks as the maps: the oracle detector),
# with the online k-NN every 2 epochs on a 1000-image bank and 300 images per split.
STUDY_DEFAULTS = {
    **{k: v for k, v in DEMO_ARGUMENTS.items() if k not in ("output_dir", "seed", "run_knn")},
    "knn_monitor_steps": 64, "knn_monitor_bank_size": 1000, "knn_monitor_queries": 300,
    "num_pictures": 2, "report_to": ["tensorboard"],
}
DATA_SOURCE_FLAGS = ("--dataset_name", "--train_dir")
# Arms beyond the attg_guidance values (which are arms as they are): label-free map sources, each the AttG loss with
# maps that need neither the dataset's masks nor a second pretrained model. Their flags come after the user's.
#   self: the model's own last-layer CLS attention, first after 2 epochs of MAE, refreshed every 2 epochs;
#   online_sr: spectral residual saliency of every augmented crop, computed online (no stored column).
LABEL_FREE_ARMS = {
    "self": {"attg_guidance": "attg", "attention_method": "self", "attention_refresh_epochs": 2,
             "attention_warmup_epochs": 2},
    "online_sr": {"attg_guidance": "attg", "attention_method": "spectral_residual", "attention_online": True},
    #   sr: the same spectral residual maps, computed once on the whole image and stored (cut with each crop)
    "sr": {"attg_guidance": "attg", "attention_method": "spectral_residual"},
}
KNN_K = 20


def _argv(values: dict) -> list[str]:
    argv = []
    for key, value in values.items():
        if isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def run_arguments(seed: int, arm: str, output_dir: Path, user_argv: list[str]) -> list[str]:
    """run_pretrain.py's arguments for one arm of one seed: the defaults, the user's, then what the study fixes."""
    synthetic = not any(flag in user_argv for flag in DATA_SOURCE_FLAGS)
    fixed = {"output_dir": str(output_dir), "seed": seed, "attg_guidance": arm, "knn_monitor": True,
             "maps_for_vanilla_mae": True, "run_knn": True, "overwrite_output_dir": True,
             **LABEL_FREE_ARMS.get(arm, {})}
    defaults = STUDY_DEFAULTS
    if synthetic:
        fixed["synthetic_seed"] = seed  # each seed draws its own data: the spread includes the data
    else:  # the synthetic flags are refused next to another source
        defaults = {key: value for key, value in STUDY_DEFAULTS.items() if not key.startswith("synthetic_")}
    return _argv(defaults) + list(user_argv) + _argv(fixed)


def _train(argv: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        result = subprocess.run([sys.executable, str(REPO / "run_pretrain.py"), *argv], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(f"run_pretrain.py failed (exit {result.returncode}); see {log_path}")


def evaluation_inputs(output_dir: Path, argv: list[str]):
    """What every evaluation of a run's exported checkpoint needs: `(dataset, data arguments, run(name))`.

    The dataset is the run's own, loaded by the code that trained on it (its `run_pretrain.py` arguments); `run(name)`
    gives evaluation run arguments writing to `<output_dir>/<name>` with the checkpoint's shared feature cache and no
    model-card update.
    """
    from modeling_attg_mae.data import load_data_source
    from modeling_attg_mae.evaluation.arguments import EvalDataArguments, EvalRunArguments

    model_args, data_args, _, _ = parse_arguments(argv)
    dataset = load_data_source(data_args, model_args.cache_dir)
    data = EvalDataArguments(train_split=data_args.train_split, image_column_name=data_args.image_column_name,
                             label_column_name=data_args.label_column_name, eval_splits=data_args.eval_splits)

    def run(name: str):
        return EvalRunArguments(output_dir=str(output_dir / name), progress=False,
                                feature_cache_dir=str(output_dir / "feature_cache"), update_model_card=False)

    return dataset, data, run


def _evaluate(output_dir: Path, argv: list[str]) -> dict:
    """k-NN with mean pooling and the features-mode linear probe of the exported checkpoint, on the run's data
    (loaded by the same code that trained on it)."""
    from modeling_attg_mae.evaluation.arguments import EvalModelArguments, KNNArguments, LinearProbeArguments
    from modeling_attg_mae.evaluation.pipelines import run_knn, run_linear_probe

    dataset, data, run = evaluation_inputs(output_dir, argv)
    knn_mean = run_knn(EvalModelArguments(str(output_dir), pooling="mean"), data, run("eval-knn-mean"),
                       KNNArguments(ks=[KNN_K]), dataset=dataset)
    linear = run_linear_probe(EvalModelArguments(str(output_dir), pooling="cls"), data, run("eval-linear-cls"),
                              LinearProbeArguments(mode="features"), dataset=dataset)
    return {"knn_mean": _top1(knn_mean, "knn", k=KNN_K), "linear_cls": _top1(linear, "linear_probe_features")}


def _top1(payload: dict, method: str, k: int | None = None) -> dict:
    return {row["split"]: row["top1"] for row in payload["results"]
            if row["method"] == method and (k is None or row["k"] == k)}


def make_record(setting: str, seed: int, arm: str, argv: list[str], output_dir: Path, seconds: float) -> dict:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    knn_cls = _top1(json.loads((output_dir / "knn_results.json").read_text()), "knn", k=KNN_K)
    extra = _evaluate(output_dir, argv)
    prefix = "eval_knn_top1_"
    curve = [{"step": e["step"], "epoch": e.get("epoch"),
              **{key[len(prefix):]: value for key, value in e.items() if key.startswith(prefix)}}
             for e in state["log_history"] if any(key.startswith(prefix) for key in e)]
    share = [{"step": e["step"], "value": e["object_loss_share"]} for e in state["log_history"]
             if "object_loss_share" in e]
    # the self-bootstrapped maps' IoU with the object masks at each refresh (logged by the run)
    self_iou = [{"step": e["step"], "epoch": e.get("epoch"), "value": e["self_map_iou"]} for e in state["log_history"]
                if "self_map_iou" in e]
    runtime = next((e["train_runtime"] for e in state["log_history"] if "train_runtime" in e), None)
    synthetic = "--synthetic_seed" in argv
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return {
        "schema_version": 1, "setting": setting, "seed": seed, "commit": commit.strip() or None,
        "data_seed": seed if synthetic else None, "arm": arm, "argv": argv,
        "knn": {"cls": knn_cls, "mean": extra["knn_mean"]}, "linear": {"cls": extra["linear_cls"]},
        "curve": curve, "object_loss_share": share, "train_seconds": runtime, "wall_seconds": round(seconds, 1),
        "map_iou": self_iou or detector_map_iou(argv),
    }


def detector_map_iou(argv: list[str]) -> list[dict] | None:
    """The IoU with the object masks of the maps a run's loss uses when they come from a fixed detector (stored or
    online: the same detector on the whole image; `map_iou`'s rule, as the self maps are measured), as one entry;
    None for a run whose loss uses no map (MAE), self maps (logged per refresh instead) or data without masks."""
    import torch

    from modeling_attg_mae.data import load_data_source
    from modeling_attg_mae.object_discovery import add_attention_maps
    from modeling_attg_mae.pretraining.self_maps import QUALITY_COLUMN, map_iou, mask_grids

    model_args, data_args, attg_args, _ = parse_arguments(argv)
    if attg_args.attg_guidance == "none" or data_args.attention_method == "self":
        return None
    train = load_data_source(data_args, model_args.cache_dir)[data_args.train_split]
    if QUALITY_COLUMN not in train.column_names:
        return None
    source = data_args.attention_source_column if data_args.attention_method == "column" else data_args.image_column_name
    maps = add_attention_maps(train, data_args.attention_method, model_name_or_path=data_args.attention_model_name_or_path,
                              image_column=source, grid_size=data_args.attention_grid_size)
    maps = torch.as_tensor(maps.with_format("numpy", columns=["attention_map"])[:]["attention_map"])
    return [{"step": 0, "epoch": 0, "value": round(map_iou(maps, mask_grids(train[QUALITY_COLUMN], maps.shape[-1])), 4)}]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, user = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="main", help="name of this comparison (records go to RECORDS/NAME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=["none", "attg"],
                        help="attg_guidance values, or a label-free map source (self, online_sr: see "
                             "LABEL_FREE_ARMS); 'none' is the MAE baseline every other arm is paired with")
    parser.add_argument("--records", default=str(RECORDS), help="folder of the JSON records")
    parser.add_argument("--work", default="outputs/study", help="folder of the checkpoints and logs")
    parser.add_argument("--overwrite", action="store_true", help="rerun (setting, seed, arm)s that have a record")
    args = parser.parse_args(own)
    parse_arguments(run_arguments(args.seeds[0], args.arms[0], Path(args.work) / "check", user))  # fail now
    records = Path(args.records) / args.setting
    for seed in args.seeds:
        for arm in args.arms:
            record_path = records / f"seed{seed}-{arm}.json"
            if record_path.exists() and not args.overwrite:
                print(f"[{args.setting}] seed {seed} {arm}: record exists, skipped ({record_path})", flush=True)
                continue
            output_dir = Path(args.work) / args.setting / f"seed{seed}-{arm}"
            run_argv = run_arguments(seed, arm, output_dir, user)
            print(f"[{args.setting}] seed {seed} {arm}: training ({output_dir})", flush=True)
            start = time.time()
            _train(run_argv, output_dir / "train.log")
            record = make_record(args.setting, seed, arm, run_argv, output_dir, time.time() - start)
            records.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"[{args.setting}] seed {seed} {arm}: k-NN CLS {record['knn']['cls']} "
                  f"({record['wall_seconds']:.0f} s) -> {record_path}", flush=True)
    print(f"records in {records}; tables: python benchmarks/study_report.py --records {args.records}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

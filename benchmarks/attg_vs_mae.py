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
but the training one and `label`) and overrides the study's defaults below.

Your own data (`--dataset_name` / `--train_dir` after `--`): the synthetic data's flags and its map source (its
object masks, `--attention_method column --attention_source_column object_mask`) are not carried over; every arm
that takes the run's map source (all but the label-free ones) needs yours (`--attention_method ...`, or a
`--dataset_name` folder written by the maps CLI). Its records go to `<--work>/records` unless `--records` says
otherwise, as do those of a synthetic setting not committed in docs/: the package's docs/ holds only the committed
studies (which `study_report.py` renders into docs/RESULTS.md).

Every seed also gets a `seed<S>-baselines.json` record (no training): the training-free baselines of its data (raw
pixels, RGB and hue histograms, the object mask alone: `modeling_attg_mae/evaluation/baselines.py`) and the same
architecture at its initial weights, exported and evaluated by the same k-NN, so that a report can say when the
encoders do no better than a statistic. Beside the label-free arms, two placebo arms (`permuted`, `centre`: AttG
with another image's map or one centre prior, `--attention_placebo`) test whether a gain comes from the maps
pointing at the object. Every record holds the sha256 of the checkpoint its metrics were measured on, and the
commit of the code (with whether the working tree differed from it).

Every (setting, seed, arm) is checked before the first run starts: the arm names, each run's arguments by
run_pretrain.py's own parser and checks, and each existing record against the arguments this run would use (its
`argv`, the output folder aside). A record made with the same arguments is kept and its run skipped, so an
interrupted study continues where it stopped; one made with other arguments is an error naming the difference
(`--overwrite` reruns). A failed run's error ends with the exception from its log.
GPU: the same command; `run_pretrain.py` uses the GPU when there is one (add `-- --bf16` there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_attg_mae.configuration_attg_mae import GUIDANCE_MODES  # noqa: E402
from modeling_attg_mae.pretraining import DEMO_ARGUMENTS, check_run_arguments, parse_arguments  # noqa: E402

RECORDS = REPO / "docs" / "results" / "attg_vs_mae"
# The synthetic defaults: the demo's model, data and schedule (object masks as the maps: the oracle detector),
# with the online k-NN every 2 epochs on a 1000-image bank and 300 images per split.
STUDY_DEFAULTS = {
    **{k: v for k, v in DEMO_ARGUMENTS.items() if k not in ("output_dir", "seed", "run_knn")},
    "knn_monitor_steps": 64, "knn_monitor_bank_size": 1000, "knn_monitor_queries": 300,
    "num_pictures": 2, "report_to": ["tensorboard"],
}
DATA_SOURCE_FLAGS = ("--dataset_name", "--train_dir")
# the synthetic data's map source and grid (its object masks at 16 x 16): never carried onto other data
SYNTHETIC_MAP_DEFAULTS = ("attention_method", "attention_source_column", "attention_grid_size")
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
# Placebo arms: the AttG loss with the run's maps made uninformative for the image they weight
# (object_discovery/placebo.py). "Object guidance helps" needs AttG above MAE and above each of them.
#   permuted: each batch's maps handed to the other images of the batch (a seeded derangement);
#   centre: one centred Gaussian for every image (a centre prior).
PLACEBO_ARMS = {
    "permuted": {"attg_guidance": "attg", "attention_placebo": "permuted"},
    "centre": {"attg_guidance": "attg", "attention_placebo": "centre"},
}
ARM_FLAGS = {**LABEL_FREE_ARMS, **PLACEBO_ARMS}
KNN_K = 20
ARMS = (*GUIDANCE_MODES, *LABEL_FREE_ARMS, *PLACEBO_ARMS)
# the per-seed record of the training-free baselines and the randomly initialised encoder (no training)
BASELINES = "baselines"
# what may differ between a record and the run that would remake it: where its checkpoint went
UNCOMPARED_FLAGS = ("--output_dir",)


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


def _given(flag: str, argv: list[str]) -> bool:
    """Whether `argv` sets `flag` (`--flag value` or `--flag=value`)."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def is_synthetic(user_argv: list[str]) -> bool:
    """The study's synthetic data (no data source of the user's after `--`)."""
    return not any(_given(flag, user_argv) for flag in DATA_SOURCE_FLAGS)


def run_arguments(seed: int, arm: str, output_dir: Path, user_argv: list[str]) -> list[str]:
    """run_pretrain.py's arguments for one arm of one seed: the defaults, the user's, then what the study fixes."""
    synthetic = is_synthetic(user_argv)
    fixed = {"output_dir": str(output_dir), "seed": seed, "attg_guidance": arm, "knn_monitor": True,
             "maps_for_vanilla_mae": True, "run_knn": True, "overwrite_output_dir": True,
             **ARM_FLAGS.get(arm, {})}
    defaults = STUDY_DEFAULTS
    if synthetic:
        fixed["synthetic_seed"] = seed  # each seed draws its own data: the spread includes the data
    else:  # the synthetic flags are refused next to another source, and its masks are not the user's maps
        defaults = {key: value for key, value in STUDY_DEFAULTS.items()
                    if not key.startswith("synthetic_") and key not in SYNTHETIC_MAP_DEFAULTS}
    return _argv(defaults) + list(user_argv) + _argv(fixed)


def _is_maps_output(dataset_name: str) -> bool:
    """A `--dataset_name` folder written by the maps CLI: its rows carry the maps, no map source is needed."""
    from modeling_attg_mae.object_discovery.__main__ import MARKER_FILE

    return (Path(os.path.expanduser(dataset_name)) / MARKER_FILE).is_file()


def check_map_source(arms: list[str], user_argv: list[str]) -> None:
    """On the user's data, the arms that take the run's map source need the user's: the synthetic default (the
    object masks of the synthetic images) means nothing on other images, and run_pretrain.py's own default
    would be chosen silently."""
    if is_synthetic(user_argv) or _given("--attention_method", user_argv):
        return
    for index, arg in enumerate(user_argv):
        name = arg.split("=", 1)[1] if arg.startswith("--dataset_name=") else (
            user_argv[index + 1] if arg == "--dataset_name" and index + 1 < len(user_argv) else None)
        if name is not None and _is_maps_output(name):
            return
    needing = [arm for arm in arms if arm not in LABEL_FREE_ARMS]
    if needing:
        raise ValueError(
            f"arms {', '.join(needing)} take their maps from the run's map source (attg guides the loss with them; "
            "none logs object_loss_share with them), and on your own data that source must be yours: pass "
            "--attention_method (tokencut, dino, gradcam, spectral_residual, or column with "
            "--attention_source_column <mask column>) after --, or a --dataset_name written by the maps CLI. The "
            "study's default, column on object_mask, is the synthetic images' object masks and is not carried "
            f"onto other data; the label-free arms ({', '.join(LABEL_FREE_ARMS)}) bring their own")


def check_arms(arms: list[str]) -> None:
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"--arms: unknown arm {arm!r}; choose from {list(ARMS)} (attg_guidance values, "
                             "the label-free map sources and the placebos)")
    repeated = sorted({arm for arm in arms if arms.count(arm) > 1})
    if repeated:
        raise ValueError(f"--arms names {repeated} more than once")


def check_run(argv: list[str]):
    """run_pretrain.py's own parser and its checks that need no data and no weights, without running (the output
    folder is swapped for an empty temporary one, so checking creates no run folder); returns the run's config."""
    model_args, data_args, attg_args, training_args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="attg-vs-mae-check-") as folder:
        # a --resume_from_checkpoint is checked by the run itself, against its own folder's checkpoints
        training_args.output_dir, training_args.resume_from_checkpoint = folder, None
        return check_run_arguments(model_args, data_args, attg_args, training_args)


def flag_values(argv: list[str]) -> dict[str, list[str]]:
    """`{flag: its values}` of an argument list, the last occurrence of a flag winning (as in argparse)."""
    values, flag = {}, None
    for arg in argv:
        if arg.startswith("--"):
            flag, _, value = arg.partition("=")
            values[flag] = [value] if value else []
        elif flag is not None:
            values[flag].append(arg)
    return values


def argument_differences(recorded: list[str], wanted: list[str]) -> list[str]:
    """How the arguments a record was made with differ from this run's, flag by flag (`UNCOMPARED_FLAGS` aside)."""
    def shown(values):
        return repr(" ".join(values)) if values else "given"

    theirs, ours = flag_values(recorded), flag_values(wanted)
    differences = []
    for flag in sorted(set(theirs) | set(ours)):
        if flag in UNCOMPARED_FLAGS or theirs.get(flag) == ours.get(flag):
            continue
        here = shown(ours[flag]) + " here" if flag in ours else "not given here"
        there = shown(theirs[flag]) + " in the record" if flag in theirs else "not given in the record"
        differences.append(f"{flag}: {here}, {there}")
    return differences


def check_record(record_path: Path, setting: str, seed: int, arm: str, argv: list[str]) -> None:
    """A record is this run's answer only if it was made with this run's arguments; else an error naming how
    they differ (a skip would report another experiment's numbers as this one's)."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"record {record_path} cannot be read ({error}); pass --overwrite to rerun it") from None
    if not isinstance(record, dict) or not isinstance(record.get("argv"), list):
        raise ValueError(f"record {record_path} has no run arguments (argv) to compare with this run's; pass "
                         "--overwrite to rerun it, or choose another --records folder")
    differences = [f"{name}: {value!r} here, {record.get(name)!r} in the record"
                   for name, value in (("setting", setting), ("seed", seed), ("arm", arm))
                   if record.get(name, value) != value]
    differences += argument_differences(record["argv"], argv)
    if differences:
        raise ValueError(f"record {record_path} was made with other arguments than this run: "
                         f"{'; '.join(differences)}. Choose another --setting or --records <folder> for a study of "
                         "its own, or pass --overwrite to replace the record")


def failure_reason(log_path: Path, tail: int = 12) -> str:
    """What a failed run's log says went wrong: the last exception of its last traceback (message lines included),
    or, without a traceback, its last lines."""
    try:
        lines = log_path.read_text(errors="replace").rstrip().splitlines()
    except OSError as error:
        return f"(its log cannot be read: {error})"
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):")]
    if starts:
        # after the frames (indented: file, code and caret lines) comes the exception, possibly on several lines
        rest = lines[starts[-1] + 1:]
        first = next((i for i, line in enumerate(rest) if line and not line[0].isspace()), None)
        if first is not None:
            return "\n".join(rest[first:first + tail])
    return "the end of its log:\n" + "\n".join(f"    {line}" for line in lines[-tail:]) if lines else "its log is empty"


def _train(argv: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        result = subprocess.run([sys.executable, str(REPO / "run_pretrain.py"), *argv], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        reason = failure_reason(log_path)
        separator = "; " if reason.startswith(("the end of", "its log", "(its log")) else ": "
        raise RuntimeError(f"run_pretrain.py failed (exit {result.returncode}){separator}{reason}\n"
                           f"full log: {log_path}")


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


def checkpoint_sha256(output_dir: Path) -> str:
    """The sha256 of the exported weights every metric of a record was measured on."""
    from modeling_attg_mae.evaluation.feature_cache import sha256_file

    return sha256_file(output_dir / "model.safetensors")


def code_version() -> dict:
    """The commit the run's code came from, and whether the working tree differed from it (then the commit alone
    does not reproduce the record)."""
    def git(*command):
        return subprocess.run(["git", "-C", str(REPO), *command], capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "modeling_attg_mae", "benchmarks",
                  "run_pretrain.py")
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_changes": bool(changed)}


def knn_curve(log_history: list[dict]) -> list[dict]:
    """The online k-NN monitor's top-1 per split at each step it measured, from a run's trainer_state.json log."""
    prefix = "eval_knn_top1_"
    return [{"step": e["step"], "epoch": e.get("epoch"),
             **{key[len(prefix):]: value for key, value in e.items() if key.startswith(prefix)}}
            for e in log_history if any(key.startswith(prefix) for key in e)]


def make_record(setting: str, seed: int, arm: str, argv: list[str], output_dir: Path, seconds: float) -> dict:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    knn_cls = _top1(json.loads((output_dir / "knn_results.json").read_text()), "knn", k=KNN_K)
    extra = _evaluate(output_dir, argv)
    curve = knn_curve(state["log_history"])
    share = [{"step": e["step"], "value": e["object_loss_share"]} for e in state["log_history"]
             if "object_loss_share" in e]
    # the self-bootstrapped maps' IoU with the object masks at each refresh (logged by the run)
    self_iou = [{"step": e["step"], "epoch": e.get("epoch"), "value": e["self_map_iou"]} for e in state["log_history"]
                if "self_map_iou" in e]
    runtime = next((e["train_runtime"] for e in state["log_history"] if "train_runtime" in e), None)
    synthetic = "--synthetic_seed" in argv
    commit = code_version()
    return {
        "schema_version": 1, "setting": setting, "seed": seed, **commit,
        "data_seed": seed if synthetic else None, "arm": arm, "argv": argv,
        "checkpoint_sha256": checkpoint_sha256(output_dir),
        "knn": {"cls": knn_cls, "mean": extra["knn_mean"]}, "linear": {"cls": extra["linear_cls"]},
        "curve": curve, "object_loss_share": share, "train_seconds": runtime, "wall_seconds": round(seconds, 1),
        "map_iou": self_iou or detector_map_iou(argv),
    }


def make_baselines_record(setting: str, seed: int, argv: list[str], output_dir: Path) -> dict:
    """The seed's training-free baselines (`evaluation/baselines.py`) and the same architecture at random
    initialisation (exported like a trained checkpoint and evaluated by the same k-NN), on the run's data."""
    from transformers import set_seed

    from modeling_attg_mae.configuration_attg_mae import image_size_of, patch_size_of
    from modeling_attg_mae.data.source import write_data_source
    from modeling_attg_mae.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from modeling_attg_mae.evaluation.arguments import EvalModelArguments, KNNArguments
    from modeling_attg_mae.evaluation.baselines import training_free_knn
    from modeling_attg_mae.evaluation.pipelines import run_knn
    from modeling_attg_mae.pretraining.card import export_checkpoint
    from modeling_attg_mae.pretraining.dataset import knn_eval_splits
    from modeling_attg_mae.pretraining.self_maps import QUALITY_COLUMN
    from modeling_attg_mae.pretraining.wiring import build_model

    model_args, data_args, attg_args, training_args = parse_arguments(argv)
    dataset, data, run = evaluation_inputs(output_dir, argv)
    config = check_run(argv)
    size, patch = image_size_of(config), patch_size_of(config)
    splits = knn_eval_splits(dataset, data_args)
    masks = QUALITY_COLUMN if QUALITY_COLUMN in dataset[data_args.train_split].column_names else None
    training_free = training_free_knn(dataset, data_args.train_split, splits, size, size // patch,
                                      label_column=data_args.label_column_name,
                                      image_column=data_args.image_column_name, mask_column=masks, k=KNN_K)
    set_seed(training_args.seed)  # the initial weights of every arm of this seed
    output_dir.mkdir(parents=True, exist_ok=True)
    export_checkpoint(build_model(model_args, attg_args, config), output_dir, size, IMAGENET_MEAN, IMAGENET_STD)
    write_data_source(output_dir, data_args)  # its results name the run's data, as a trained checkpoint's do
    random_init = {pooling: _top1(run_knn(EvalModelArguments(str(output_dir), pooling=pooling), data,
                                          run(f"eval-knn-{pooling}"), KNNArguments(ks=[KNN_K]), dataset=dataset),
                                  "knn", k=KNN_K) for pooling in ("cls", "mean")}
    commit = code_version()
    return {
        "schema_version": 1, "setting": setting, "seed": seed, **commit,
        "data_seed": seed if "--synthetic_seed" in argv else None, "arm": BASELINES, "argv": argv,
        "knn_k": KNN_K, "training_free": training_free,
        "random_init": {"checkpoint_sha256": checkpoint_sha256(output_dir), "knn": random_init},
    }


def detector_map_iou(argv: list[str]) -> list[dict] | None:
    """The IoU with the object masks of the maps a run's loss uses when they come from a fixed detector (stored or
    online: the same detector on the whole image; `map_iou`'s rule, as the self maps are measured), as one entry
    (a placebo's maps as it gives them: for `permuted`, each image gets another image's whole-image map);
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
    if data_args.attention_placebo is not None:  # the maps the loss sees: another image's, or the centre prior
        from modeling_attg_mae.object_discovery.placebo import placebo_maps

        maps = placebo_maps(maps, data_args.attention_placebo, torch.Generator().manual_seed(0))
    return [{"step": 0, "epoch": 0, "value": round(map_iou(maps, mask_grids(train[QUALITY_COLUMN], maps.shape[-1])), 4)}]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, user = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="main", help="name of this comparison (records go to <records>/NAME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=["none", "attg"],
                        help="attg_guidance values, or a label-free map source (self, online_sr: see "
                             "LABEL_FREE_ARMS); 'none' is the MAE baseline every other arm is paired with")
    parser.add_argument("--records", default=None,
                        help=f"folder of the JSON records (default: {RECORDS.relative_to(REPO)} for a synthetic "
                             "setting committed there, else <--work>/records)")
    parser.add_argument("--work", default="outputs/study", help="folder of the checkpoints and logs")
    parser.add_argument("--overwrite", action="store_true", help="rerun (setting, seed, arm)s that have a record")
    args = parser.parse_args(own)
    if args.records is None:
        # docs/ holds the committed synthetic studies only (study_report.py renders every setting there into
        # docs/RESULTS.md): a new setting, or the user's data, goes next to its checkpoints
        committed = is_synthetic(user) and (RECORDS / args.setting).is_dir()
        args.records = str(RECORDS if committed else Path(args.work) / "records")
    records = Path(args.records) / args.setting
    # every check before the first run: a mistake in the last arm must not cost the first arm's training
    check_arms(args.arms)
    check_map_source(args.arms, user)
    planned = []
    for seed in args.seeds:
        # the baselines of this seed's data: the arguments of its MAE run (the same data, model and initial weights)
        output_dir = Path(args.work) / args.setting / f"seed{seed}-{BASELINES}"
        run_argv = run_arguments(seed, "none", output_dir, user)
        record_path = records / f"seed{seed}-{BASELINES}.json"
        if record_path.exists() and not args.overwrite:
            check_record(record_path, args.setting, seed, BASELINES, run_argv)
        planned.append((seed, BASELINES, output_dir, run_argv, record_path))
        for arm in args.arms:
            output_dir = Path(args.work) / args.setting / f"seed{seed}-{arm}"
            run_argv = run_arguments(seed, arm, output_dir, user)
            try:
                check_run(run_argv)
            except ValueError as error:
                raise ValueError(f"arm {arm} (seed {seed}): {error}") from None
            record_path = records / f"seed{seed}-{arm}.json"
            if record_path.exists() and not args.overwrite:
                check_record(record_path, args.setting, seed, arm, run_argv)
            planned.append((seed, arm, output_dir, run_argv, record_path))
    for seed, arm, output_dir, run_argv, record_path in planned:
        if record_path.exists() and not args.overwrite:
            print(f"[{args.setting}] seed {seed} {arm}: its record (same arguments) exists, skipped ({record_path})",
                  flush=True)
            continue
        records.mkdir(parents=True, exist_ok=True)
        if arm == BASELINES:
            print(f"[{args.setting}] seed {seed}: training-free baselines and the random initialisation", flush=True)
            record = make_baselines_record(args.setting, seed, run_argv, output_dir)
            record_path.write_text(json.dumps(record, indent=1) + "\n")
            print(f"[{args.setting}] seed {seed} baselines: {record['training_free']}, random init "
                  f"{record['random_init']['knn']} -> {record_path}", flush=True)
            continue
        print(f"[{args.setting}] seed {seed} {arm}: training ({output_dir})", flush=True)
        start = time.time()
        _train(run_argv, output_dir / "train.log")
        record = make_record(args.setting, seed, arm, run_argv, output_dir, time.time() - start)
        record_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"[{args.setting}] seed {seed} {arm}: k-NN CLS {record['knn']['cls']} "
              f"({record['wall_seconds']:.0f} s) -> {record_path}", flush=True)
    print(f"records in {records}; tables: python benchmarks/study_report.py --records {args.records}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

"""Issue 12, item 1: one data path for every command line (data/arguments.py, data/loading.load_data_source).

The same flags resolve to the same data in every CLI; a `save_to_disk` folder (the maps CLI's output) pre-trains
with its stored maps; `run_knn.py --model_name_or_path <a pre-training run>` evaluates on what that run trained on.
"""

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import run_knn
import run_linear_probe
import run_pretrain
import run_retrieval
from modeling_attg_mae.cli import parse_cli
from modeling_attg_mae.data import load_data_source
from modeling_attg_mae.data.arguments import (
    DataSourceArguments,
    LabelledDataArguments,
    convert_data_arguments,
    synthetic_kwargs_of,
)
from modeling_attg_mae.data.source import DATA_SOURCE_FILE, data_source, dataset_label
from modeling_attg_mae.evaluation.arguments import EvalDataArguments
from modeling_attg_mae.object_discovery import __main__ as maps_cli
from modeling_attg_mae.pretraining import parse_arguments
from tests.conftest import TINY_PRETRAIN_OVERRIDES

# load_synthetic_dataset's defaults, written out by hand: every CLI must reach exactly these
SYNTHETIC_DEFAULTS = {"num_train": 4000, "num_validation": 1000, "image_size": 64, "seed": 0,
                      "object_color": "per_class", "class_cue": "shape", "num_classes": 10,
                      "background_palette": "muted"}


def _pretrain_data(argv, tmp_path):
    # run_pretrain.py with no argument at all is the demo: give it a non-data flag
    return parse_arguments(["--output_dir", str(tmp_path / "run"), *argv])[1]


def _data_group(arguments, argv):
    (data,) = [group for group in parse_cli(arguments, argv) if isinstance(group, DataSourceArguments)]
    return data


# each CLI: how to parse its arguments with the given data flags into its data-arguments object
CLIS = {
    "run_pretrain.py": _pretrain_data,
    "run_knn.py": lambda argv, _: _data_group(run_knn.ARGUMENTS, ["--model_name_or_path", "m", *argv]),
    "run_linear_probe.py": lambda argv, _: _data_group(run_linear_probe.ARGUMENTS, ["--model_name_or_path", "m", *argv]),
    "run_retrieval.py": lambda argv, _: _data_group(run_retrieval.ARGUMENTS, ["--model_name_or_path", "m", *argv]),
    "maps CLI": lambda argv, _: _data_group(maps_cli.ARGUMENTS, argv),
}


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """A private datasets cache: the synthetic data saved by load_data_source lands here, not in the user's."""
    cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_reaches_the_same_synthetic_defaults(cli, tmp_path):
    data = CLIS[cli]([], tmp_path)
    assert synthetic_kwargs_of(data) == SYNTHETIC_DEFAULTS
    assert dataset_label(data_source(data)) == "attg-mae-synthetic-64px-train4000-val1000-seed0"
    # one flag changes that setting alone, the others keep the shared defaults
    data = CLIS[cli](["--synthetic_image_size", "32", "--synthetic_object_color", "random"], tmp_path)
    assert synthetic_kwargs_of(data) == {**SYNTHETIC_DEFAULTS, "image_size": 32, "object_color": "random"}
    data = CLIS[cli](["--dataset_name", str(tmp_path)], tmp_path)
    assert synthetic_kwargs_of(data) is None and data_source(data)["dataset_name"] == str(tmp_path)


def test_the_evaluation_and_maps_clis_parse_into_the_shared_classes():
    assert EvalDataArguments is LabelledDataArguments
    for arguments in (run_knn.ARGUMENTS, run_linear_probe.ARGUMENTS, run_retrieval.ARGUMENTS):
        assert LabelledDataArguments in arguments
    assert DataSourceArguments in maps_cli.ARGUMENTS
    # the maps CLI maps every split: the roles of splits and the label column are no flags of it
    with pytest.raises(ValueError, match="--train_split"):
        parse_cli(maps_cli.ARGUMENTS, ["--train_split", "train"])


BAD_SOURCES = [
    (["--dataset_name", "user/data", "--train_dir", "photos"],
     r"give either --dataset_name \('user/data'\) or --train_dir/--validation_dir \('photos'/None\), not both"),
    (["--dataset_name", "user/data", "--synthetic_image_size", "32"],
     r"--synthetic_image_size only apply to the synthetic dataset, but --dataset_name or --train_dir was given"),
    (["--validation_dir", "val"], r"--validation_dir 'val' was given without --train_dir"),
    (["--dataset_config_name", "x"], r"--dataset_config_name 'x' needs --dataset_name"),
    (["--synthetic_image_size", "8"], r"--synthetic_image_size must be an int >= 16"),
    (["--synthetic_num_validation", "0"], r"--synthetic_num_validation must be a positive int, got 0"),
]
@pytest.mark.parametrize("cli", list(CLIS))
@pytest.mark.parametrize("argv, message", BAD_SOURCES, ids=[" ".join(argv) for argv, _ in BAD_SOURCES])
def test_bad_source_flags_are_refused_when_parsed(cli, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        CLIS[cli](argv, tmp_path)


def test_save_to_disk_dataset_config_is_refused_when_parsed(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1]})}).save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match="is a save_to_disk folder, which has no configurations"):
        LabelledDataArguments(dataset_name=str(tmp_path / "saved"), dataset_config_name="default")


def test_convert_copies_shared_fields_and_validates():
    source = LabelledDataArguments(synthetic_image_size=32, synthetic_num_train=40, train_split="all",
                                   eval_splits=["validation"], label_column_name="y", image_column_name="img")
    maps = convert_data_arguments(source, DataSourceArguments)  # the split roles are dropped, the source kept
    assert (maps.synthetic_image_size, maps.synthetic_num_train, maps.image_column_name) == (32, 40, "img")
    assert not hasattr(maps, "train_split")
    back = convert_data_arguments(maps, LabelledDataArguments)  # fields it lacks take their defaults
    assert (back.train_split, back.eval_splits, back.label_column_name) == ("train", None, "label")
    again = convert_data_arguments(source, LabelledDataArguments)
    assert again == source and again.eval_splits is not source.eval_splits  # a copy: no shared list
    from modeling_attg_mae.pretraining import DataArguments

    # today's pre-training arguments (concrete synthetic values) convert into the evaluation's
    converted = convert_data_arguments(DataArguments(synthetic_image_size=32), EvalDataArguments)
    assert synthetic_kwargs_of(converted) == {**SYNTHETIC_DEFAULTS, "image_size": 32}


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, np.uint8)).save(path)


def test_load_data_source_reads_every_kind_of_source(tmp_path, datasets_cache):
    # a Hub-layout folder: split sub-folders of class sub-folders, read by datasets.load_dataset(folder)
    hub = tmp_path / "hub"
    for split, count in (("train", 3), ("validation", 2)):
        for label in ("a", "b"):
            for i in range(count):
                _png(hub / split / label / f"{i}.png", 40 * i)
    loaded = load_data_source(DataSourceArguments(dataset_name=str(hub)), cache_dir=tmp_path / "c")
    assert {split: len(part) for split, part in loaded.items()} == {"train": 6, "validation": 4}
    assert loaded["train"].features["label"].names == ["a", "b"]
    # an image folder (+ validation folder)
    loaded = load_data_source(DataSourceArguments(train_dir=str(hub / "train"), validation_dir=str(hub / "validation")),
                              cache_dir=tmp_path / "c")
    assert {split: len(part) for split, part in loaded.items()} == {"train": 6, "validation": 4}
    # a save_to_disk folder: every split as saved
    datasets.DatasetDict({"train": loaded["train"], "validation_only_fg": loaded["validation"]}).save_to_disk(
        tmp_path / "saved")
    loaded = load_data_source(DataSourceArguments(dataset_name=str(tmp_path / "saved")))
    assert {split: len(part) for split, part in loaded.items()} == {"train": 6, "validation_only_fg": 4}
    # the synthetic data: saved under <datasets cache>/attg_mae_synthetic when no cache_dir is given, so that the
    # attention maps mapped over it are cached on disk too
    loaded = load_data_source(DataSourceArguments(synthetic_num_train=5, synthetic_num_validation=3,
                                                  synthetic_image_size=16))
    assert {split: len(part) for split, part in loaded.items()} == {
        "train": 5, "validation": 3, "validation_mixed_rand": 3, "validation_only_fg": 3}
    (saved,) = (datasets_cache / "attg_mae_synthetic").iterdir()
    parameters = json.loads((saved / "synthetic_parameters.json").read_text())
    assert (parameters["num_train"], parameters["image_size"]) == (5, 16)
    assert loaded["train"].cache_files and all(str(saved) in f["filename"] for f in loaded["train"].cache_files)
    squares = [np.asarray(image).shape for image in loaded["validation"]["image"]]
    assert squares == [(16, 16, 3)] * 3


def test_save_to_disk_folder_from_the_maps_cli_pretrains_with_its_stored_maps(tmp_path, datasets_cache, monkeypatch):
    from modeling_attg_mae.object_discovery import map_step

    maps = tmp_path / "maps"
    maps_cli.main(["--method", "column", "--image_column", "object_mask", "--grid_size", "8",
                   "--synthetic_num_train", "16", "--synthetic_num_validation", "8", "--synthetic_image_size", "32",
                   "--output_dir", str(maps)])
    assert datasets.load_from_disk(str(maps))["train"].features["attention_map"].shape == (8, 8)

    def no_new_maps(*args, **kwargs):
        raise AssertionError("pre-training computed maps although the dataset has an attention_map column")

    monkeypatch.setattr(map_step, "add_attention_maps", no_new_maps)
    monkeypatch.setattr(map_step.AttentionMapStep, "__call__", no_new_maps)
    out = tmp_path / "run"
    run_pretrain.main(["--dataset_name", str(maps), "--output_dir", str(out), "--config_overrides", TINY_PRETRAIN_OVERRIDES,
                       "--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_strategy", "no",
                       "--num_pictures", "0", "--report_to", "none", "--dataloader_num_workers", "0",
                       "--dataloader_pin_memory", "false", "--logging_steps", "1"])
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    logged = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert logged and all(0 < e["object_loss_share"] < 1 for e in logged)  # the stored maps weighted the loss
    record = json.loads((out / DATA_SOURCE_FILE).read_text())
    assert record["dataset_name"] == str(maps) and record["synthetic"] is None
    # and run_knn.py with only the checkpoint evaluates on that folder, every split but train
    monkeypatch.chdir(tmp_path)
    payload = run_knn.main(["--model_name_or_path", str(out), "--ks", "3", "--progress", "false"])
    assert payload["dataset"] == str(maps)
    assert {(r["split"], r["num_queries"]) for r in payload["results"]} == {
        ("validation", 8), ("validation_mixed_rand", 8), ("validation_only_fg", 8)}


def test_run_knn_with_only_the_checkpoint_evaluates_on_what_pretraining_used(tmp_path, datasets_cache, monkeypatch):
    """`make demo` then `python run_knn.py --model_name_or_path outputs/attg-mae-demo`, in small: 32 px data, not the
    64 px default."""
    out = tmp_path / "demo"
    run_pretrain.main(["--output_dir", str(out), "--config_overrides", TINY_PRETRAIN_OVERRIDES, "--synthetic_num_train", "200",
                       "--synthetic_num_validation", "16", "--synthetic_image_size", "32",
                       "--attention_method", "column", "--attention_source_column", "object_mask",
                       "--attention_grid_size", "8", "--max_steps", "2", "--per_device_train_batch_size", "8",
                       "--eval_strategy", "no", "--num_pictures", "0", "--report_to", "none",
                       "--dataloader_num_workers", "0", "--dataloader_pin_memory", "false"])
    monkeypatch.chdir(tmp_path)
    payload = run_knn.main(["--model_name_or_path", str(out)])  # default ks 10 20 100 200: the bank has 200
    label = "attg-mae-synthetic-32px-train200-val16-seed0"
    assert payload["dataset"] == label
    saved = json.loads((tmp_path / "outputs" / "eval" / "knn_results.json").read_text())
    assert saved["dataset"] == label and saved["checkpoint"] == str(out)
    assert {(r["split"], r["k"], r["num_queries"]) for r in saved["results"] if r["method"] == "knn"} == {
        (split, k, 16) for split in ("validation", "validation_mixed_rand", "validation_only_fg")
        for k in (10, 20, 100, 200)}
    # the images evaluated were the 32 px ones: the run_knn loader saved exactly that configuration
    (synthetic,) = (datasets_cache / "attg_mae_synthetic").iterdir()
    parameters = json.loads((synthetic / "synthetic_parameters.json").read_text())
    assert (parameters["image_size"], parameters["num_train"], parameters["num_validation"]) == (32, 200, 16)
    assert os.path.isfile(Path(out) / "README.md") and label in (Path(out) / "README.md").read_text()

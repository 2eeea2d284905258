"""Bad input to `run_pretrain.py`: each case names the problem, and fails at the stage it can be known.

`CASES` is also the source of docs/TROUBLESHOOTING.md (`python -m tests.bad_input_table`), so that the table a
user reads is the one the tests check. Stages:
  arguments: before any data is opened and before any weight is built (loading the dataset or building the
             model fails the test);
  data:      once the dataset is opened, before maps are computed and before the model is built.
"""

import os

import pytest
from PIL import Image

import modeling_attg_mae.pretraining.dataset as dataset
import modeling_attg_mae.pretraining.wiring as wiring
from modeling_attg_mae.pretraining import parse_arguments, run
from tests.conftest import tiny_pretrain_args


def _bert_checkpoint(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert")
    return ["--model_name_or_path", str(tmp_path / "bert")]


def _output_dir_under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return ["--output_dir", str(tmp_path / "a-file" / "out")]


def _half_written_checkpoint(tmp_path):
    checkpoint = tmp_path / "out" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 16)  # killed before trainer_state.json was written
    return ["--resume_from_checkpoint", str(checkpoint)]


def _killed_before_any_checkpoint(tmp_path):
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)  # the folder exists, nothing in it was finished
    return ["--resume_from_checkpoint", "last"]


def _train_split_only(tmp_path):
    from PIL import Image

    folder = tmp_path / "only-train" / "train" / "cat"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(folder / f"{i}.png")
    return ["--dataset_name", str(tmp_path / "only-train"), "--validation_split", "", "--run_knn",
            "--attg_guidance", "none"]


def _extra_validation_class(tmp_path):
    from PIL import Image

    for split, classes in (("train", ["cat", "dog"]), ("val", ["cat", "dog", "fox"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (40 * i, 80 * len(name), 0)).save(tmp_path / split / name / f"{i}.png")
    return ["--train_dir", str(tmp_path / "train"), "--validation_dir", str(tmp_path / "val"), "--knn_monitor",
            "--attg_guidance", "none"]


def _string_map_column(tmp_path):
    from modeling_attg_mae.data import load_synthetic_dataset

    data = load_synthetic_dataset(num_train=48, num_validation=16, image_size=32, seed=0)
    data = data.map(lambda row: {"attention_map": "high"})  # a column of the wrong kind
    data.save_to_disk(tmp_path / "maps")
    return ["--dataset_name", str(tmp_path / "maps"), "--max_train_samples", "40"]


def _foreign_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    return ["--overwrite_output_dir"]


def _unmarked_folder(tmp_path):
    # names a run writes too, but no attg_mae_run.json: a user's logs, photos and model are not the package's
    mine = tmp_path / "mine"
    (mine / "runs" / "my_experiment").mkdir(parents=True)
    (mine / "runs" / "my_experiment" / "events.out.tfevents.1.host").write_bytes(b"logs")
    (mine / "pictures").mkdir()
    (mine / "pictures" / "holiday.jpg").write_bytes(b"photo")
    (mine / "model.safetensors").write_bytes(b"x")
    return ["--output_dir", str(mine), "--overwrite_output_dir"]


def _output_above_train_dir(tmp_path):
    from PIL import Image

    for name, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        folder = tmp_path / "u2" / "pictures" / "train" / name
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    return ["--train_dir", str(tmp_path / "u2" / "pictures" / "train"), "--output_dir", str(tmp_path / "u2"),
            "--overwrite_output_dir"]


def _users_encoder(tmp_path, *extra):
    folder = tmp_path / "out" / "encoder"  # a folder of the user's, not an export of this package
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "vit"}')
    return list(extra)


def _complete_checkpoint(tmp_path, step, fingerprint=None):
    import json

    checkpoint = tmp_path / "out" / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 16)
    state = {"global_step": step, "stateful_callbacks": {}}
    if fingerprint is not None:
        state["stateful_callbacks"]["RunFingerprintCallback"] = {"args": {"fingerprint": fingerprint}}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    return checkpoint


def _users_encoder_on_resume(tmp_path):
    _complete_checkpoint(tmp_path, 2)
    return _users_encoder(tmp_path, "--resume_from_checkpoint", "last")


def _checkpoint_of_another_run(tmp_path):
    # the fingerprints are compared key by key: one that records only another learning rate is enough
    checkpoint = _complete_checkpoint(tmp_path, 2, {"learning_rate": 0.5})
    return ["--learning_rate", "0.25", "--resume_from_checkpoint", str(checkpoint)]


CASES = [
    dict(id="non-vit-checkpoint", input="`--model_name_or_path` pointing at a BERT (or any non-ViTMAE) checkpoint",
         setup=_bert_checkpoint, message="is a 'bert' checkpoint; pre-training continues only from a ViTMAE",
         stage="arguments"),
    dict(id="missing-model-path", input="`--model_name_or_path ./no/such/folder`",
         args=["--model_name_or_path", "./no/such/folder"], message="no such local folder", stage="arguments"),
    dict(id="config-override-typo", input="`--config_overrides hidden_sizee=64` (a key the config lacks)",
         args=["--config_overrides", "hidden_sizee=64"], message="config_overrides.*hidden_sizee",
         stage="arguments"),
    dict(id="batch-size-0", input="`--per_device_train_batch_size 0`", args=["--per_device_train_batch_size", "0"],
         message="per_device_train_batch_size must be >= 1", stage="arguments"),
    dict(id="max-train-samples-0", input="`--max_train_samples 0`", args=["--max_train_samples", "0"],
         message="max_train_samples must be >= 1", stage="arguments"),
    dict(id="unwritable-output-dir", input="an `--output_dir` that cannot be created or written",
         setup=_output_dir_under_a_file, message="cannot be written", stage="arguments"),
    dict(id="run-knn-without-eval-folder", input="`--run_knn` with `--train_dir` but no `--validation_dir`",
         setup=lambda tmp_path: ["--train_dir", str(tmp_path), "--run_knn"], message="without --validation_dir",
         stage="arguments"),
    dict(id="run-knn-without-eval-split", input="`--run_knn` on a dataset that has only a train split",
         setup=_train_split_only, message="dataset has only \\['train'\\]", stage="data"),
    dict(id="run-knn-on-the-train-split", input="`--run_knn --eval_splits train` (the bank would hold every query)",
         args=["--run_knn", "--eval_splits", "train"], message="includes the training split 'train'", stage="data"),
    dict(id="run-knn-without-labels", input="`--knn_monitor` with a `--label_column_name` the dataset lacks",
         args=["--knn_monitor", "--label_column_name", "class"], message="label_column_name 'class'", stage="data"),
    dict(id="knn-validation-class-not-in-train", input="`--knn_monitor` (or `--run_knn`) with a `--validation_dir` "
         "holding a class folder that `--train_dir` lacks",
         setup=_extra_validation_class, message="split 'validation' holds class names that the train split 'train' "
                                                "lacks: 'fox'", stage="data"),
    dict(id="bad-map-column", input="a dataset whose `attention_map` column holds something else (here strings)",
         setup=_string_map_column, message="split 'train', column 'attention_map' .* row 0: not a usable attention map",
         stage="data"),
    dict(id="resume-half-written", input="`--resume_from_checkpoint` naming a checkpoint a kill left half-written",
         setup=_half_written_checkpoint, message="is incomplete .*killed while writing", stage="arguments"),
    dict(id="resume-last-none-complete", input="`--resume_from_checkpoint last` with no complete checkpoint",
         setup=_killed_before_any_checkpoint, message="no complete checkpoint-N folder", stage="arguments"),
    dict(id="unknown-guidance", input="`--attg_guidance guided`", args=["--attg_guidance", "guided"],
         message="attg_guidance must be one of", stage="arguments"),
    dict(id="detector-without-model", input="`--attention_method tokencut` without a detector checkpoint",
         args=["--attention_method", "tokencut"], message="needs a model", stage="arguments"),
    dict(id="column-without-source", input="`--attention_method column` without `--attention_source_column`",
         args=["--attention_method", "column"], message="attention_source_column", stage="arguments"),
    dict(id="unknown-validation-split", input="`--validation_split test` on a dataset without that split",
         args=["--validation_split", "test"], message="--validation_split: unknown split 'test'; the dataset has splits",
         stage="data"),
    dict(id="unknown-eval-split", input="`--run_knn --eval_splits test` on a dataset without that split",
         args=["--run_knn", "--eval_splits", "test"], message="--eval_splits: unknown split 'test'; the dataset has splits",
         stage="data"),
    dict(id="missing-image-column", input="`--image_column_name picture` (no such column)",
         args=["--image_column_name", "picture"], message="'picture'.*image.*label", stage="data"),
    dict(id="overwrite-foreign-files", input="`--overwrite_output_dir` into a folder holding files the package did "
         "not write", setup=_foreign_files,
         message="holds notes.txt, which this package did not write. --overwrite_output_dir replaces only an "
                 "earlier run's outputs", stage="arguments"),
    dict(id="overwrite-unmarked-folder", input="`--overwrite_output_dir` into a folder of the user's with a run's "
         "names (`runs/`, `pictures/`, `model.safetensors`) but no run marker", setup=_unmarked_folder,
         message="holds model.safetensors, pictures/, runs/, which this package did not write .*--overwrite_output_dir "
                 "replaces only .* and only in a folder its attg_mae_run.json marks as a run's", stage="arguments"),
    dict(id="output-above-train-dir", input="`--output_dir` a folder that holds the `--train_dir` images",
         setup=_output_above_train_dir, message="is --train_dir .* or a folder above it: the output would replace "
                                                "its source", stage="arguments"),
    dict(id="users-encoder-overwrite", input="`--overwrite_output_dir` into a folder holding a user's `encoder/`",
         setup=lambda tmp_path: _users_encoder(tmp_path, "--overwrite_output_dir"),
         message="holds encoder/, which this package did not write \\(the run writes its own encoder there\\). "
                 "--overwrite_output_dir replaces only", stage="arguments"),
    dict(id="users-encoder-resume", input="`--resume_from_checkpoint last` in a run folder holding a user's `encoder/`",
         setup=_users_encoder_on_resume,
         message="holds encoder/, which this package did not write \\(the run writes its own encoder there\\). "
                 "The resumed run would fail on it", stage="arguments"),
    dict(id="resume-another-runs-checkpoint", input="`--resume_from_checkpoint` naming a checkpoint of a run with "
         "other arguments (here another `--learning_rate`)", setup=_checkpoint_of_another_run,
         message="is a checkpoint of a run with other arguments \\(learning_rate 0.5 there, 0.25 here\\)",
         stage="arguments"),
    dict(id="self-maps-after-the-last-epoch", input="`--attention_method self` whose warm-up lasts the whole run "
         "(`--attention_refresh_epochs 2 --num_train_epochs 2`)",
         args=["--attention_method", "self", "--attention_refresh_epochs", "2", "--max_steps", "-1",
               "--num_train_epochs", "2"],
         message="computes its first maps at the start of epoch 2 .* --num_train_epochs 2 ends the run before",
         stage="arguments"),
    dict(id="self-maps-after-the-last-step", input="`--attention_method self` whose warm-up lasts the whole run "
         "(`--attention_warmup_epochs 1 --max_steps 6`, 6 steps an epoch)",
         args=["--attention_method", "self", "--attention_refresh_epochs", "1", "--attention_warmup_epochs", "1",
               "--max_steps", "6"],
         message="computes its first maps at the start of epoch 1 .* after 6 steps .* --max_steps 6 ends the run "
                 "before", stage="data"),
    dict(id="placebo-without-guidance", input="`--attention_placebo permuted --attg_guidance none` (a placebo for "
         "a loss that uses no map)", args=["--attention_placebo", "permuted", "--attg_guidance", "none"],
         message="--attention_placebo permuted changes the maps the guided loss is weighted with, but "
                 "--attg_guidance is none", stage="arguments"),
    dict(id="placebo-of-online-maps", input="`--attention_placebo centre --attention_online` (online maps are not "
         "stored maps)", args=["--attention_placebo", "centre", "--attention_method", "spectral_residual",
                              "--attention_online"],
         message="replaces each batch's stored maps, but the maps here are online maps", stage="arguments"),
]


def _fail(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} started before the bad input was refused")

    return fail


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_is_refused_with_a_message_that_names_it(tmp_path, monkeypatch, case):
    extra = list(case.get("args", [])) + (case["setup"](tmp_path) if "setup" in case else [])
    args = tiny_pretrain_args(tmp_path, "--max_steps", "1", "--eval_strategy", "no",
                     synthetic=not {"--dataset_name", "--train_dir"} & set(extra))
    if "--output_dir" in extra:  # the case's own output_dir replaces the default one
        position = extra.index("--output_dir")
        args[args.index("--output_dir") + 1] = extra.pop(position + 1)
        extra.pop(position)
    # each stage's work, patched where run() and load_pretraining_data look it up
    if case["stage"] == "arguments":
        monkeypatch.setattr(wiring, "load_data_source", _fail("loading the dataset"))
    monkeypatch.setattr(dataset, "compute_attention_maps", _fail("the map computation"))
    monkeypatch.setattr(wiring, "AttGViTMAEForPreTraining", _fail("building the model"))
    with pytest.raises(ValueError, match=case["message"]):
        run(*parse_arguments(args + extra))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_malformed_arguments_file_is_named(tmp_path):
    path = tmp_path / "args.json"
    path.write_text('{"output_dir": "o",}')
    with pytest.raises(ValueError, match=f"{path}.*line 1"):
        parse_arguments([str(path)])


def test_constant_maps_are_reported_once_where_they_are_made(caplog):
    """The collator (CPU, where the maps are cut) counts constant maps; the trainer's forward reads nothing back."""

    from modeling_attg_mae.data import EvalTransform, PretrainCollator

    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    flat = Image.new("L", (32, 32), 128)  # one image whose map is flat: it trains as a plain MAE
    image = Image.new("RGB", (32, 32), (90, 20, 200))
    examples = [{"image": image, "attention_map": m, "__index__": i} for i, m in enumerate((mask, flat, mask))]
    collator = PretrainCollator(EvalTransform(32, 8), warn_constant_maps=True)
    with caplog.at_level("WARNING"):
        collator(examples)
        collator(examples)
    warnings = [r.getMessage() for r in caplog.records if "constant" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("1 of 3 attention maps in a training batch (rows 0..2)")
    caplog.clear()
    with caplog.at_level("WARNING"):
        PretrainCollator(EvalTransform(32, 8), warn_constant_maps=True)([examples[0], examples[2]])
        PretrainCollator(EvalTransform(32, 8))(examples)  # off unless asked (a vanilla MAE's maps)
    assert not [r for r in caplog.records if "constant" in r.getMessage()]
    import torch

    from modeling_attg_mae.data.collator import warn_constant_maps

    # maps of different grids come as a list: counted one by one
    assert warn_constant_maps([torch.rand(4, 4), torch.full((8, 8), 0.5)])
    assert not warn_constant_maps([torch.rand(4, 4), torch.rand(8, 8)])


def test_the_cases_are_documented():
    """docs/TROUBLESHOOTING.md is generated from the CASES tables; regenerate it when a case changes."""
    from tests.bad_input_table import render

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "TROUBLESHOOTING.md")
    with open(path) as file:
        assert file.read() == render(), "run `python -m tests.bad_input_table` and commit docs/TROUBLESHOOTING.md"


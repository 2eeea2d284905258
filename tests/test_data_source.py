"""Issue 9, item 3: results say what data they came from; the evaluation CLIs default to the checkpoint's data."""

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from modeling_attg_mae.data.source import (
    DATA_SOURCE_FILE,
    data_source,
    dataset_label,
    read_data_source,
    write_data_source,
)
from modeling_attg_mae.evaluation.arguments import EvalDataArguments, KNNArguments
from modeling_attg_mae.evaluation.pipelines import run_knn
from modeling_attg_mae.pretraining import DataArguments
from tests.conftest import eval_arguments

SMALL_A = dict(synthetic_num_train=12, synthetic_num_validation=6, synthetic_image_size=32, synthetic_seed=0)
SMALL_B = dict(synthetic_num_train=12, synthetic_num_validation=6, synthetic_image_size=40, synthetic_seed=1)


def test_labels_name_the_data_precisely():
    assert dataset_label(data_source(EvalDataArguments())) == "attg-mae-synthetic-64px-train4000-val1000-seed0"
    demo = DataArguments(synthetic_image_size=32)  # pre-training's arguments as the demo sets them
    assert dataset_label(data_source(demo)) == "attg-mae-synthetic-32px-train4000-val1000-seed0"
    assert dataset_label(data_source(EvalDataArguments(**SMALL_B))) == "attg-mae-synthetic-40px-train12-val6-seed1"
    assert dataset_label(data_source(EvalDataArguments(dataset_name="cifar10"))) == "cifar10"
    assert dataset_label(data_source(EvalDataArguments(dataset_name="c", dataset_config_name="x"))) == "c/x"


def test_labels_name_the_class_count():
    # 5 and 10 hue classes are other data and another task: with one label, the second run_knn's card entries
    # replaced the first's
    hue = dict(synthetic_class_cue="hue", synthetic_background_palette="vivid")
    five = dataset_label(data_source(EvalDataArguments(**hue, synthetic_num_classes=5)))
    ten = dataset_label(data_source(EvalDataArguments(**hue, synthetic_num_classes=10)))
    assert five == "attg-mae-synthetic-64px-train4000-val1000-seed0-5classes-hue-vivid"
    assert ten == dataset_label(data_source(EvalDataArguments(**hue))) == "attg-mae-synthetic-64px-train4000-val1000-seed0-hue-vivid"


def test_record_round_trip_with_absolute_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    args = DataArguments(train_dir="photos", image_column_name="img", train_split="all")
    path = write_data_source(tmp_path, args)
    assert path == tmp_path / DATA_SOURCE_FILE
    record = read_data_source(tmp_path)
    assert record["train_dir"] == str(tmp_path / "photos") and record["synthetic"] is None
    assert (record["image_column_name"], record["train_split"]) == ("img", "all")
    (tmp_path / DATA_SOURCE_FILE).write_text('{"dataset_name": ')
    with pytest.raises(ValueError, match=rf"{DATA_SOURCE_FILE} is not valid JSON \(line 1, column 18"):
        read_data_source(tmp_path)


def _card_values(path):
    return {(r.dataset_name, r.dataset_split, r.metric_config): r.metric_value
            for r in ModelCard.load(path / "README.md").data.eval_results}


def test_two_synthetic_configurations_keep_their_own_card_entries(checkpoint, tmp_path):  # noqa: F811
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    (ckpt / "README.md").unlink(missing_ok=True)
    knn = KNNArguments(ks=[3])
    model_args, data_args, run_args, _ = eval_arguments(ckpt, tmp_path, eval_splits=["validation"], **SMALL_A)
    first = run_knn(model_args, data_args, run_args, knn)
    assert first["dataset"] == "attg-mae-synthetic-32px-train12-val6-seed0"
    after_first = _card_values(ckpt)
    assert {name for name, _, _ in after_first} == {first["dataset"]} and len(after_first) == 2  # top1, top5
    model_args, data_args, run_args, _ = eval_arguments(ckpt, tmp_path, eval_splits=["validation"], **SMALL_B)
    second = run_knn(model_args, data_args, run_args, knn)
    assert second["dataset"] == "attg-mae-synthetic-40px-train12-val6-seed1"
    after_second = _card_values(ckpt)
    assert len(after_second) == 4
    for key, value in after_first.items():  # the first dataset's numbers are still there, unchanged
        assert after_second[key] == value
    saved = json.loads((tmp_path / "out" / "knn_results.json").read_text())
    assert saved["dataset"] == second["dataset"]


def test_no_data_flag_evaluates_on_the_checkpoints_record(checkpoint, tmp_path, caplog):  # noqa: F811
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    pretrain_args = DataArguments(synthetic_num_train=12, synthetic_num_validation=6, synthetic_image_size=32)
    write_data_source(ckpt, pretrain_args)
    model_args, data_args, run_args, _ = eval_arguments(ckpt, tmp_path, update_model_card=False)
    with caplog.at_level("WARNING"):
        payload = run_knn(model_args, data_args, run_args, KNNArguments(ks=[3]))
    assert payload["dataset"] == "attg-mae-synthetic-32px-train12-val6-seed0"
    assert {r["split"] for r in payload["results"]} == {"validation", "validation_mixed_rand", "validation_only_fg"}
    assert all(r["num_queries"] == 6 for r in payload["results"])
    assert "checkpoint's pre-training data attg-mae-synthetic-32px-train12-val6-seed0" in caplog.text
    # one explicit data flag: the record no longer applies (the other synthetic flags take their defaults)
    explicit = EvalDataArguments(synthetic_image_size=32)
    assert dataset_label(data_source(explicit)) == "attg-mae-synthetic-32px-train4000-val1000-seed0"


def test_synthetic_flags_conflict_with_another_source():
    with pytest.raises(ValueError, match="--synthetic_image_size only apply to the synthetic dataset"):
        EvalDataArguments(dataset_name="cifar10", synthetic_image_size=32)


def test_save_to_disk_folder_as_dataset_name_keeps_every_split(tmp_path):
    """Item 4: a folder written by save_to_disk (the maps CLI's output) loads with its splits as saved."""
    import datasets

    from modeling_attg_mae.data import load_image_dataset

    saved = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"x": list(range(n))})
        for split, n in (("train", 4), ("validation", 3), ("validation_mixed_rand", 2), ("validation_only_fg", 1))
    })
    saved.save_to_disk(tmp_path / "maps")
    loaded = load_image_dataset(dataset_name=str(tmp_path / "maps"))
    assert {split: len(part) for split, part in loaded.items()} == {
        "train": 4, "validation": 3, "validation_mixed_rand": 2, "validation_only_fg": 1}
    assert loaded["validation_mixed_rand"]["x"] == [0, 1]
    saved["validation"].save_to_disk(tmp_path / "one")  # a single Dataset without a split name: "train"
    assert {s: len(p) for s, p in load_image_dataset(dataset_name=str(tmp_path / "one")).items()} == {"train": 3}
    with pytest.raises(ValueError, match="is a save_to_disk folder, which has no configurations"):
        load_image_dataset(dataset_name=str(tmp_path / "maps"), dataset_config_name="default")

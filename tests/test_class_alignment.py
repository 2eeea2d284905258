"""Class ids mean the same class in every split (issue 20, item 1).

`imagefolder` numbers each split folder's classes on its own and `DatasetDict.class_encode_column` encodes each split
on its own: train [blue, green, red] = 0, 1, 2 but validation [green, red] = 0, 1. The loader
(`data.loading.align_class_labels`, run by `load_data_source`) gives every split the train split's ids by name and
refuses a split holding a class the train split lacks. The tests use real PNG folders and `save_to_disk` folders
through the command lines, with the same images in train and validation: k-NN (k = 1) on identical images must
give 100 %, which per-split ids turn into 0 %.
"""

import random
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

import run_fine_tune
import run_knn
from modeling_attg_mae.data.loading import load_data_source
from modeling_attg_mae.evaluation.arguments import EvalDataArguments

PALETTE = {"blue": (50, 60, 230), "cyan": (40, 220, 230), "green": (40, 200, 60), "purple": (150, 40, 200),
           "red": (220, 40, 40)}
PER_CLASS = 3


def _image(name: str, index: int) -> Image.Image:
    rng = np.random.default_rng([sorted(PALETTE).index(name), index])
    pixels = np.clip(np.array(PALETTE[name]) + rng.normal(0, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _folder(root, classes, per_class=PER_CLASS):
    """An image folder with one sub-folder of PNGs per class; the images of a class are the same in every folder."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _image(name, i).save(root / name / f"{name}{i}.png")
    return root


def _knn_flags(checkpoint, tmp_path, *source):
    return ["--model_name_or_path", str(checkpoint), *source, "--ks", "1", "--output_dir", str(tmp_path / "out"),
            "--feature_cache_dir", str(tmp_path / "features"), "--cache_dir", str(tmp_path / "hf"),
            "--progress", "false", "--update_model_card", "false", "--batch_size", "8"]


def _top1(payload, split="validation"):
    (row,) = [r for r in payload["results"] if r["method"] == "knn" and r["split"] == split]
    return row["top1"]


def test_image_folders_with_different_class_sets_share_the_train_ids(checkpoint, tmp_path):
    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["green", "red"])  # lacks blue: imagefolder alone numbers it green=0, red=1
    payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--train_dir", str(train), "--validation_dir", str(val)))
    assert _top1(payload) == 100.0  # 0.0 with per-split ids
    assert payload["num_classes"] == 3


def test_a_one_class_validation_folder_keeps_its_label_column(checkpoint, tmp_path):
    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["green"])  # imagefolder alone drops the labels of a one-class folder
    payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--train_dir", str(train), "--validation_dir", str(val)))
    assert _top1(payload) == 100.0


def test_a_validation_class_the_train_folder_lacks_is_refused_by_name(checkpoint, tmp_path):
    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["blue", "green", "purple", "red"])
    flags = _knn_flags(checkpoint, tmp_path, "--train_dir", str(train), "--validation_dir", str(val))
    with pytest.raises(ValueError, match=r"split 'validation' holds class names that the train split 'train' lacks: "
                                         r"'purple' \(the train split's classes: \['blue', 'green', 'red'\]\)"):
        run_knn.main(flags)


def test_fine_tuning_refuses_a_validation_class_the_train_folder_lacks(checkpoint, tmp_path):
    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["cyan", "green"])
    with pytest.raises(ValueError, match=r"split 'validation' holds class names .* lacks: 'cyan'"):
        run_fine_tune.main(["--model_name_or_path", str(checkpoint), "--train_dir", str(train), "--validation_dir",
                            str(val), "--output_dir", str(tmp_path / "ft"), "--cache_dir", str(tmp_path / "hf"),
                            "--num_train_epochs", "1"])
    assert not (tmp_path / "ft" / "fine_tune_results.json").exists()


def _saved(tmp_path, classes_per_split, encode: bool):
    """A save_to_disk DatasetDict with string labels per split, class-encoded split by split when `encode` (what
    `DatasetDict.class_encode_column` does)."""
    splits = {}
    for split, classes in classes_per_split.items():
        names = [name for name in classes for _ in range(PER_CLASS)]
        images = [_image(name, i) for name in classes for i in range(PER_CLASS)]
        splits[split] = datasets.Dataset.from_dict(
            {"image": images, "label": names}, features=datasets.Features({"image": datasets.Image(),
                                                                           "label": datasets.Value("string")}))
    dataset = datasets.DatasetDict(splits)
    if encode:
        dataset = dataset.class_encode_column("label")
    dataset.save_to_disk(tmp_path / "saved")
    return tmp_path / "saved"


def test_a_saved_dataset_class_encoded_split_by_split_is_aligned(checkpoint, tmp_path):
    folder = _saved(tmp_path, {"train": ["blue", "green", "red"], "validation": ["green", "red"]}, encode=True)
    assert datasets.load_from_disk(folder)["validation"].features["label"].names == ["green", "red"]  # per split
    payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--dataset_name", str(folder)))
    assert _top1(payload) == 100.0


def test_only_the_splits_in_use_are_refused(checkpoint, tmp_path):
    folder = _saved(tmp_path, {"train": ["blue", "green", "red"], "validation": ["green", "red"],
                               "test": ["green", "purple"]}, encode=True)
    flags = _knn_flags(checkpoint, tmp_path, "--dataset_name", str(folder))
    with pytest.raises(ValueError, match=r"split 'test' holds class names that the train split 'train' lacks: "
                                         r"'purple'"):
        run_knn.main(flags)
    assert _top1(run_knn.main(flags + ["--eval_splits", "validation"])) == 100.0


def test_string_labels_are_encoded_with_one_mapping_for_every_split(checkpoint, tmp_path):
    folder = _saved(tmp_path, {"train": ["red", "blue", "green"], "validation": ["red", "green"]}, encode=False)
    payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--dataset_name", str(folder)))
    assert _top1(payload) == 100.0
    assert payload["num_classes"] == 3


def test_string_labels_are_encoded_as_the_sorted_train_names():
    from modeling_attg_mae.data.loading import align_class_labels

    dataset = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"label": ["red", "blue", None, "green", "red"]}),
        "validation": datasets.Dataset.from_dict({"label": ["green", "red"]}),
    })
    aligned = align_class_labels(dataset, "train", "label")
    for split in aligned.values():
        assert split.features["label"] == datasets.ClassLabel(names=["blue", "green", "red"])
    assert aligned["train"]["label"][:] == [2, 0, -1, 1, 2]  # None is datasets' "no label"
    assert aligned["validation"]["label"][:] == [1, 2]


def test_plain_integer_ids_are_left_as_they_are():
    from modeling_attg_mae.data.loading import align_class_labels

    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": [0, 1, 2]}),
                                    "validation": datasets.Dataset.from_dict({"label": [5]})})
    assert align_class_labels(dataset, "train", "label") is dataset  # no names: nothing to compare


def test_random_class_subsets_per_split_align_by_name(checkpoint, tmp_path):
    """Property: for random class sets of train and validation (the same images for a class in both), the ids
    agree by name and k-NN on identical images is 100 %; a validation class outside train is refused by name."""
    rng = random.Random(20)
    universe = sorted(PALETTE)
    for draw in range(20):
        train_classes = rng.sample(universe, rng.randint(2, len(universe)))
        pool = train_classes if rng.random() < 0.75 else universe  # mostly alignable draws, some refused
        val_classes = rng.sample(pool, rng.randint(1, len(pool)))
        root = tmp_path / f"draw{draw}"
        train, val = _folder(root / "train", train_classes, 2), _folder(root / "val", val_classes, 2)
        flags = _knn_flags(checkpoint, root, "--train_dir", str(train), "--validation_dir", str(val))
        extra = sorted(set(val_classes) - set(train_classes))
        if extra:
            with pytest.raises(ValueError, match="lacks: " + ", ".join(repr(name) for name in extra) + r" \("):
                run_knn.main(flags)
        else:
            assert _top1(run_knn.main(flags)) == 100.0, (train_classes, val_classes)
            data_args = EvalDataArguments(train_dir=str(train), validation_dir=str(val))
            loaded = load_data_source(data_args, root / "hf")
            for split in loaded.values():  # every row's id names its own class folder, in the train split's ids
                feature = split.features["label"]
                assert feature.names == sorted(train_classes)
                paths = [Path(image["path"]) for image in split.cast_column("image", datasets.Image(decode=False))["image"]]
                assert [feature.int2str(i) for i in split["label"]] == [path.parent.name for path in paths]
        shutil.rmtree(root)


def test_label_free_pre_training_takes_any_class_sets(tmp_path):
    """Without k-NN pre-training reads no label: a validation class the train folder lacks is no reason to refuse."""
    from modeling_attg_mae.pretraining import parse_arguments, run
    from tests.conftest import tiny_pretrain_args

    train = _folder(tmp_path / "train", ["blue", "green"], 4)
    val = _folder(tmp_path / "val", ["green", "purple"], 2)
    run(*parse_arguments(tiny_pretrain_args(
        tmp_path, "--train_dir", str(train), "--validation_dir", str(val), "--attg_guidance", "none",
        "--max_steps", "1", "--eval_strategy", "no", "--num_pictures", "0", synthetic=False)))
    assert (tmp_path / "out" / "model.safetensors").exists()

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


# --- what the red-team review of the alignment found (Hub-layout parquet, mixed label kinds, retrieval, monitor) ---

def _hub_layout(tmp_path, classes_per_split, names_per_split=None):
    """A Hub-layout folder (data/<split>-00000-of-00001.parquet), each split class-encoded on its own: the file of a
    split declares its own ClassLabel in its schema metadata (`Dataset.to_parquet`), as a per-split push does."""
    root = tmp_path / "hub"
    (root / "data").mkdir(parents=True)
    for split, classes in classes_per_split.items():
        names = (names_per_split or {}).get(split, sorted(classes))
        rows = [(name, i) for name in classes for i in range(PER_CLASS)]
        datasets.Dataset.from_dict(
            {"image": [_image(name, i) for name, i in rows], "label": [names.index(name) for name, _ in rows]},
            features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}),
        ).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


@pytest.mark.parametrize("validation_names", [["green", "red"], ["red", "green", "blue"]])
def test_hub_layout_parquet_splits_encoded_on_their_own_keep_their_files_names(checkpoint, tmp_path,
                                                                               validation_names):
    # datasets applies the first file's features to every split: validation's ids 0, 1 were read as blue, green
    # (k-NN 0.0 / 33.3 %); each file's own metadata names its ids
    folder = _hub_layout(tmp_path, {"train": ["blue", "green", "red"], "validation": validation_names[::-1]},
                         {"train": ["blue", "green", "red"], "validation": validation_names})
    payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--dataset_name", str(folder)))
    assert _top1(payload) == 100.0 and payload["num_classes"] == 3


@pytest.mark.parametrize("train, validation", [
    (datasets.Value("int64"), datasets.ClassLabel(names=["green", "red"])),  # ids in train, names in validation
    (datasets.Value("string"), datasets.Value("int64")),  # names in train, ids in validation
    (datasets.ClassLabel(names=["blue", "green", "red"]), datasets.Value("int64")),
])
def test_class_names_in_one_split_and_plain_ids_in_another_are_refused(train, validation):
    from modeling_attg_mae.data.loading import align_class_labels

    values = {"int64": [0, 1], "string": ["green", "red"]}
    def column(feature):
        return values.get(getattr(feature, "dtype", "int64"), [0, 1])
    dataset = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"label": column(train)}, features=datasets.Features({"label": train})),
        "validation": datasets.Dataset.from_dict({"label": column(validation)},
                                                 features=datasets.Features({"label": validation}))})
    with pytest.raises(ValueError, match=r"holds class names in split\(s\) \['\w+'\] but plain integer ids in "
                                         r"\['\w+'\]: nothing says which class an id is"):
        align_class_labels(dataset, "train", "label")


def test_label_retrieval_keeps_a_query_class_the_database_lacks(checkpoint, tmp_path):
    import run_retrieval

    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["blue", "green", "purple"])  # purple queries have no positive in the database
    payload = run_retrieval.main(["--model_name_or_path", str(checkpoint), "--train_dir", str(train),
                                  "--validation_dir", str(val), "--output_dir", str(tmp_path / "out"),
                                  "--feature_cache_dir", str(tmp_path / "features"), "--cache_dir", str(tmp_path / "hf"),
                                  "--progress", "false", "--update_model_card", "false", "--kappas", "1"])
    (row,) = payload["results"]
    assert (row["num_queries"], row["num_empty"]) == (3 * PER_CLASS, PER_CLASS)
    assert row["map"] == 100.0  # identical images: each blue / green query finds its own first


def test_an_eval_class_without_train_rows_is_named_in_a_warning(checkpoint, tmp_path, caplog):
    # one ClassLabel shared by both splits, purple absent from train: its rows can only be misses
    names = ["blue", "green", "purple", "red"]
    feature = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    def split(classes):
        rows = [(name, i) for name in classes for i in range(PER_CLASS)]
        return datasets.Dataset.from_dict({"image": [_image(n, i) for n, i in rows],
                                           "label": [names.index(n) for n, _ in rows]}, features=feature)
    datasets.DatasetDict({"train": split(["blue", "green", "red"]),
                          "validation": split(["green", "purple"])}).save_to_disk(tmp_path / "saved")
    with caplog.at_level("WARNING", logger="modeling_attg_mae.evaluation.session"):
        payload = run_knn.main(_knn_flags(checkpoint, tmp_path, "--dataset_name", str(tmp_path / "saved")))
    assert _top1(payload) == 50.0
    assert "split 'validation' holds classes with no row in the train split 'train': ['purple']" in caplog.text


def test_pre_training_splits_are_the_same_with_or_without_the_knn_flags(tmp_path):
    # the aligned splits (and so the maps cached on them) must not depend on --run_knn / --knn_monitor
    train = _folder(tmp_path / "train", ["blue", "green", "red"])
    val = _folder(tmp_path / "val", ["green", "red"])
    args = EvalDataArguments(train_dir=str(train), validation_dir=str(val))
    label_free = load_data_source(args, tmp_path / "hf", new_classes="append")
    with_knn = load_data_source(args, tmp_path / "hf", new_classes="refuse")
    assert label_free["validation"]._fingerprint == with_knn["validation"]._fingerprint
    assert label_free["validation"]["label"][:] == with_knn["validation"]["label"][:] == [1] * PER_CLASS + [2] * PER_CLASS


def test_pre_training_with_knn_refuses_an_unlabelled_row_before_training(tmp_path):
    from modeling_attg_mae.pretraining import parse_arguments, run
    from tests.conftest import tiny_pretrain_args

    folder = _saved(tmp_path, {"train": ["blue", "green", "red"], "validation": ["green", "red"]}, encode=False)
    saved = datasets.load_from_disk(folder)
    labels = saved["validation"]["label"][:]
    labels[0] = None  # a row without class
    saved["validation"] = saved["validation"].remove_columns("label").add_column(
        "label", labels, feature=datasets.Value("string"))
    saved.save_to_disk(tmp_path / "with_null")
    for flag in ("--run_knn", "--knn_monitor"):
        with pytest.raises(ValueError, match=r"split 'validation' has label -1 in 1 row, outside the class ids"):
            run(*parse_arguments(tiny_pretrain_args(
                tmp_path, "--dataset_name", str(tmp_path / "with_null"), "--attg_guidance", "none", flag,
                "--max_steps", "1", "--num_pictures", "0", name=flag.strip("-"), synthetic=False)))
        assert not (tmp_path / flag.strip("-") / "model.safetensors").exists()  # refused before training

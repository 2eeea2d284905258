"""The evaluation flow's one object: EvaluationData checks the data once without any model; EvaluationSession's
features keep the feature-cache key of earlier versions (a file cached before still hits)."""

import hashlib
from pathlib import Path

import pytest
import torch

from modeling_attg_mae.evaluation.feature_cache import cache_path, save_cached_features
from modeling_attg_mae.evaluation.session import EvaluationData, EvaluationSession
from tests.conftest import colour_dataset, eval_arguments

# what `data.source.data_source` records for the evaluation's default (synthetic) data flags, as the key holds it
DEFAULT_SOURCE = {"version": 1, "dataset_name": None, "dataset_config_name": None, "train_dir": None,
                  "validation_dir": None, "synthetic": {"num_train": 4000, "num_validation": 1000, "image_size": 64,
                                                        "seed": 0, "object_color": "per_class"},
                  "image_column_name": "image", "train_split": "train"}


def _old_key(checkpoint, split_dataset, split: str, pooling: str = "cls") -> dict:
    """The key as evaluation/runner.split_features wrote it before EvaluationSession, written out by hand."""
    weights = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    return {
        "checkpoint": {"checkpoint": str(checkpoint.resolve()), "weights": {"model.safetensors": weights}},
        "dataset": {**DEFAULT_SOURCE, "label": "attg-mae-synthetic-64px-train4000-val1000-seed0",
                    "fingerprint": split_dataset._fingerprint, "num_rows": len(split_dataset)},
        "split": split,
        # the tiny checkpoint: 32 px, no preprocessor_config.json, so ImageNet's mean / std
        "transform": {"name": "resize_center_crop", "image_size": 32, "resize": 36, "interpolation": "bicubic",
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "pooling": pooling,
    }


def test_a_feature_file_cached_under_the_earlier_key_still_hits(checkpoint, tmp_path):
    dataset = colour_dataset()
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path)
    # features no encoder would give: returned only if the file is found under the unchanged key
    planted = torch.arange(12 * 32, dtype=torch.float32).reshape(12, 32)
    labels = torch.tensor(dataset["validation"]["label"])
    for key, features in [(_old_key(checkpoint, dataset["validation"], "validation"), planted),
                          ({**_old_key(checkpoint, dataset["validation"], "validation"), "scales": [1.0, 0.5]}, planted + 1)]:
        save_cached_features(cache_path(tmp_path / "cache", key), key, features, labels)

    session = EvaluationSession(EvaluationData(data_args, checkpoint, dataset=dataset), model_args, run_args)
    features, got_labels = session.features("validation")
    assert torch.equal(features, planted) and torch.equal(got_labels, labels)
    assert torch.equal(session.features("validation", scales=(1.0, 0.5))[0], planted + 1)
    assert session.cache_hits == {"validation": True}
    fresh, _ = session.features("validation_shifted")  # no planted file: computed, with the encoder's width
    assert fresh.shape == (12, 32) and session.cache_hits["validation_shifted"] is False


def test_data_is_checked_once_without_any_model(tmp_path):
    # a checkpoint that does not exist: EvaluationData needs none (fine-tuning builds its own model)
    _, data_args, _, _ = eval_arguments(tmp_path / "no_checkpoint", tmp_path, eval_splits=["validation"])
    data = EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=colour_dataset(per_class=(3, 2, 1)))
    assert data.splits == ["train", "validation"] and data.num_classes == 3 and data.class_names == ["r", "g", "b"]
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.label == "attg-mae-synthetic-64px-train4000-val1000-seed0"
    for flags, message in [({"eval_splits": ["test"]}, r"--eval_splits: unknown split 'test'; the dataset has splits"),
                           ({"train_split": "training"},
                            r"--train_split: unknown split 'training'; the dataset has splits \['train', 'validation'"),
                           ({"train_split": "validation", "eval_splits": ["validation"]},
                            r"--eval_splits validation includes the train split 'validation'.*every query would find"),
                           ({"label_column_name": "class"}, r"'class' not found")]:
        _, data_args, _, _ = eval_arguments(tmp_path / "no_checkpoint", tmp_path, **flags)
        with pytest.raises(ValueError, match=message):
            EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=colour_dataset())


def test_features_of_an_unchecked_split_are_refused(checkpoint, tmp_path):
    model_args, data_args, run_args, _ = eval_arguments(checkpoint, tmp_path, eval_splits=["validation"])
    session = EvaluationSession(EvaluationData(data_args, checkpoint, dataset=colour_dataset()), model_args, run_args)
    with pytest.raises(ValueError, match=r"split 'validation_shifted' is neither the train split nor an eval split"):
        session.features("validation_shifted")


def test_a_checkpoints_normalisation_is_read_in_one_place(checkpoint, tmp_path):
    """model_source.checkpoint_normalisation serves evaluation, fine-tuning and continued pre-training: the saved
    processor's mean / std; None without one (pre-training then warns and uses ImageNet's, evaluation uses
    ImageNet's); a malformed entry is refused with the file named."""
    import json
    import shutil

    from transformers import ViTImageProcessor

    from modeling_attg_mae.model_source import checkpoint_normalisation, image_normalisation

    assert checkpoint_normalisation(checkpoint) is None
    assert image_normalisation(checkpoint) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    own = Path(shutil.copytree(checkpoint, tmp_path / "own"))
    ViTImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.25, 0.2, 0.1]).save_pretrained(own)
    assert checkpoint_normalisation(own) == ((0.5, 0.4, 0.3), (0.25, 0.2, 0.1)) == image_normalisation(own)
    config = json.loads((own / "preprocessor_config.json").read_text())
    (own / "preprocessor_config.json").write_text(json.dumps({**config, "image_std": [0.2, 0.2]}))
    with pytest.raises(ValueError, match=r"preprocessor_config.json: image_mean / image_std must have 3 entries"):
        checkpoint_normalisation(own)


def test_labels_outside_the_classes_are_refused_naming_the_split_and_values(tmp_path):
    """datasets' -1 ("no label") or an id past the train split's classes: scored as a miss by k-NN / probes, a crash
    in fine-tuning's loss. Every used split is checked, before any model; an unused split is not."""
    import datasets

    _, data_args, _, _ = eval_arguments(tmp_path / "no_checkpoint", tmp_path, eval_splits=["validation"])
    unlabelled = colour_dataset()
    unlabelled["validation"] = unlabelled["validation"].map(
        lambda row, i: {"label": -1 if i % 4 == 0 else row["label"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"split 'validation' has label -1 in 3 rows, outside the class ids \[0, 3\) "
                                         r"of label_column 'label'"):
        EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=unlabelled)
    # without a ClassLabel the classes are the train split's ids 0..max: 7 and 9 in an eval split lie outside
    plain = colour_dataset().cast_column("label", datasets.Value("int64"))
    plain["validation"] = plain["validation"].map(lambda row, i: {"label": {0: 7, 1: 9, 2: 9}.get(i, row["label"])},
                                                  with_indices=True)
    with pytest.raises(ValueError, match=r"split 'validation' has label 7 in 1 row, label 9 in 2 rows, outside the "
                                         r"class ids \[0, 3\)"):
        EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=plain)
    train_unlabelled = colour_dataset()
    train_unlabelled["train"] = train_unlabelled["train"].map(lambda row: {"label": -1})
    with pytest.raises(ValueError, match=r"split 'train' has label -1 in 24 rows"):
        EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=train_unlabelled)
    # validation_shifted is not used (eval_splits=["validation"]): its -1 rows are none of this run's business
    unused = colour_dataset()
    unused["validation_shifted"] = unused["validation_shifted"].map(lambda row: {"label": -1})
    assert EvaluationData(data_args, tmp_path / "no_checkpoint", dataset=unused).num_classes == 3


def test_an_encoder_with_missing_weights_is_refused_not_filled_with_random_values(checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from modeling_attg_mae.model_source import load_encoder

    _, info = load_encoder(str(checkpoint))  # the complete checkpoint loads
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    weights = load_file(broken / "model.safetensors")
    dropped = [key for key in weights if "encoder.layer.1.attention" in key]
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"has no usable weights for \d+ encoder parameter\(s\) \(.*layers?\.1\.attention"):
        load_encoder(str(broken))

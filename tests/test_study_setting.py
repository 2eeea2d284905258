"""The study setting that can decide (issue 25): the layout data, the training-free baselines, the placebo maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from modeling_attg_mae.data.synthetic import LAYOUTS, generate_synthetic_dataset, synthetic_parameters
from modeling_attg_mae.evaluation.baselines import (
    hue_histogram_features,
    mask_features,
    raw_pixel_features,
    rgb_histogram_features,
    training_free_knn,
)
from modeling_attg_mae.object_discovery.placebo import (
    OBJECT_MAP_KEY,
    PlaceboCollator,
    centre_prior,
    derangement,
)

LAYOUT = dict(image_size=32, object_color="random", class_cue="layout")


@pytest.fixture(scope="module")
def layout_data():
    return generate_synthetic_dataset(num_train=1500, num_validation=300, seed=7, **LAYOUT)


def test_layout_generator_is_deterministic_and_keyed():
    first = generate_synthetic_dataset(num_train=40, num_validation=20, seed=3, **LAYOUT)
    second = generate_synthetic_dataset(num_train=40, num_validation=20, seed=3, **LAYOUT)
    other = generate_synthetic_dataset(num_train=40, num_validation=20, seed=4, **LAYOUT)
    for split in first:
        assert first[split].data.table.equals(second[split].data.table)
    assert not first["train"].data.table.equals(other["train"].data.table)
    assert first["train"].features["label"].names == list(LAYOUTS)
    # the cache key tells the cues apart; a shape dataset keeps the key it had before class_cue existed
    assert synthetic_parameters(seed=3, **LAYOUT) != synthetic_parameters(seed=3, image_size=32, object_color="random")
    assert "class_cue" not in synthetic_parameters(seed=3)


def test_the_new_flags_are_named_in_their_errors(tmp_path):
    from modeling_attg_mae.pretraining import parse_arguments

    with pytest.raises(ValueError, match="--synthetic_object_color must be 'random' when the class cue is 'texture'"):
        parse_arguments(["--output_dir", str(tmp_path), "--synthetic_class_cue", "texture"])
    with pytest.raises(ValueError, match=r"--synthetic_num_classes must be between 2 and 7 .* got 10 \(the default"):
        parse_arguments(["--output_dir", str(tmp_path), "--synthetic_class_cue", "texture",
                         "--synthetic_object_color", "random"])


def test_layout_needs_random_colours():
    with pytest.raises(ValueError, match="object_color must be 'random'"):
        generate_synthetic_dataset(num_train=10, num_validation=10, class_cue="layout")
    with pytest.raises(ValueError, match="class_cue must be one of \\('shape', 'hue', 'layout', 'texture'\\)"):
        generate_synthetic_dataset(num_train=10, num_validation=10, class_cue="glyph")


def test_layout_splits_the_object_in_two_colours_along_its_class(layout_data):
    """Every object shows two colours; an object's left / right halves differ in left_right and not in top_bottom
    (no rotation, no aspect, so the halves are exact)."""
    data = generate_synthetic_dataset(num_train=200, num_validation=10, seed=1, max_rotation=0.0, object_aspect=1.0,
                                      num_classes=2, **LAYOUT)["train"]
    assert data.features["label"].names == ["left_right", "top_bottom"]
    for row in data.select(range(40)):
        image, mask = np.asarray(row["image"], dtype=int), np.asarray(row["object_mask"]) > 0
        # the object's interior (outline excluded: eroded by 2 px)
        inner = mask.copy()
        for _ in range(2):
            inner = inner & np.roll(inner, 1, 0) & np.roll(inner, -1, 0) & np.roll(inner, 1, 1) & np.roll(inner, -1, 1)
        ys, xs = np.nonzero(inner)
        cy, cx = ys.mean(), xs.mean()
        left = image[inner & (np.arange(32)[None, :] < cx - 1)].mean(0)
        right = image[inner & (np.arange(32)[None, :] > cx + 1)].mean(0)
        top = image[inner & (np.arange(32)[:, None] < cy - 1)].mean(0)
        bottom = image[inner & (np.arange(32)[:, None] > cy + 1)].mean(0)
        across, along = (left, right), (top, bottom)
        if row["label"] == 1:
            across, along = along, across
        assert np.abs(across[0] - across[1]).max() > 40  # the two colours, one on each side
        assert np.abs(along[0] - along[1]).max() < 40  # both colours on each half


def test_no_colour_or_mask_statistic_reads_the_class(layout_data):
    """The class is not readable from colour or silhouette: the histogram and mask-only k-NN stay near chance
    (10 %), on every split (only_fg included, where no background hides anything)."""
    splits = ["validation", "validation_mixed_rand", "validation_only_fg"]
    results = training_free_knn(layout_data, "train", splits, image_size=32, grid_size=8,
                                mask_column="object_mask", baselines=["rgb_histogram", "hue_histogram", "mask"])
    for name, per_split in results.items():
        for split, top1 in per_split.items():
            assert top1 < 17.0, (name, split, top1)
    # ... while the same k-NN on the shape data reads the class from the mask alone: the test can fail
    shape = generate_synthetic_dataset(num_train=1500, num_validation=300, seed=7, image_size=32)
    assert training_free_knn(shape, "train", ["validation"], 32, 8, mask_column="object_mask",
                             baselines=["mask"])["mask"]["validation"] > 60


HUE = dict(image_size=32, class_cue="hue", background_palette="vivid")


def test_hue_setting_keeps_the_class_out_of_the_masks_and_whole_image_colour():
    """The study setting: the class is the object's hue, the silhouette is drawn apart from it (the mask alone is
    at chance), and vivid backgrounds hide the object's hue from a whole-image hue histogram (which reads it on
    the muted backgrounds of the first setting)."""
    vivid = generate_synthetic_dataset(num_train=1500, num_validation=300, seed=5, **HUE)
    assert vivid["train"].features["label"].names == [f"hue_{k}" for k in range(10)]
    again = generate_synthetic_dataset(num_train=40, num_validation=20, seed=5, **HUE)
    assert again["validation_mixed_rand"].data.table.equals(
        generate_synthetic_dataset(num_train=40, num_validation=20, seed=5, **HUE)["validation_mixed_rand"].data.table)
    splits = ["validation", "validation_mixed_rand"]
    results = training_free_knn(vivid, "train", splits, 32, 8, mask_column="object_mask",
                                baselines=["hue_histogram", "mask"])
    assert all(top1 < 15.0 for top1 in results["mask"].values()), results
    muted = generate_synthetic_dataset(num_train=1500, num_validation=300, seed=5, image_size=32, class_cue="hue")
    readable = training_free_knn(muted, "train", splits, 32, 8, baselines=["hue_histogram"])["hue_histogram"]
    for split in splits:  # the palette is what hides it
        assert results["hue_histogram"][split] < 40.0 < readable[split], (results, readable)
    with pytest.raises(ValueError, match="object_color must be 'per_class' when the class cue is 'hue'"):
        generate_synthetic_dataset(num_train=10, num_validation=10, object_color="random", class_cue="hue")
    with pytest.raises(ValueError, match="background_palette must be 'muted' or 'vivid'"):
        generate_synthetic_dataset(num_train=10, num_validation=10, background_palette="loud")


def _dataset(images, labels, masks=None):
    columns = {"image": [Image.fromarray(np.asarray(a, dtype=np.uint8)) for a in images], "label": labels}
    features = {"image": datasets.Image(), "label": datasets.Value("int64")}
    if masks is not None:
        columns["object_mask"] = [Image.fromarray(np.asarray(m, dtype=np.uint8), mode="L") for m in masks]
        features["object_mask"] = datasets.Image()
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_raw_pixel_knn_against_a_hand_computation():
    """k = 1: each query takes the class of the bank image of largest cosine, computed here with numpy."""
    rng = np.random.default_rng(0)
    bank = rng.integers(0, 256, (12, 4, 4, 3))
    queries = rng.integers(0, 256, (7, 4, 4, 3))
    bank_labels, query_labels = rng.integers(0, 3, 12).tolist(), rng.integers(0, 3, 7).tolist()
    dataset = datasets.DatasetDict({"train": _dataset(bank, bank_labels), "test": _dataset(queries, query_labels)})

    def normalised(arrays):
        x = (arrays / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        x = x.reshape(len(x), -1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nearest = (normalised(queries) @ normalised(bank).T).argmax(1)
    expected = 100.0 * np.mean(np.array(bank_labels)[nearest] == np.array(query_labels))
    result = training_free_knn(dataset, "train", ["test"], image_size=4, grid_size=2, k=1, baselines=["raw_pixels"])
    assert result["raw_pixels"]["test"] == round(expected, 1)
    np.testing.assert_allclose(raw_pixel_features(dataset["train"]["image"], 4).numpy()[0],
                               ((bank[0] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).ravel(), rtol=1e-5)


def test_histograms_and_mask_against_hand_values():
    red, green, grey = [255, 0, 0], [0, 255, 0], [128, 128, 128]
    image = np.array([[red, red], [green, grey]], dtype=np.uint8)  # 4 pixels
    hue = hue_histogram_features([Image.fromarray(image)], 2).numpy()[0]
    expected = np.zeros(36)
    expected[0], expected[12] = np.sqrt(2 / 3), np.sqrt(1 / 3)  # grey is not saturated: red 2 of 3, green 1 of 3
    np.testing.assert_allclose(hue, expected, atol=1e-6)
    rgb = rgb_histogram_features([Image.fromarray(image)], 2).numpy()[0]
    expected = np.zeros(512)
    expected[(7 * 8 + 0) * 8 + 0] = np.sqrt(0.5)  # red: r bin 7
    expected[(0 * 8 + 7) * 8 + 0] = np.sqrt(0.25)  # green
    expected[(4 * 8 + 4) * 8 + 4] = np.sqrt(0.25)  # 128 / 255 * 8 = 4.02: bin 4
    np.testing.assert_allclose(rgb, expected, atol=1e-6)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:2, :2] = 255
    mask[2, 2] = 255
    np.testing.assert_allclose(mask_features([Image.fromarray(mask, mode="L")], 2).numpy()[0], [1, 0, 0, 0.25])


def test_baselines_refuse_what_they_cannot_measure():
    dataset = datasets.DatasetDict({"train": _dataset(np.zeros((2, 4, 4, 3)), [0, 1]),
                                    "test": _dataset(np.zeros((2, 4, 4, 3)), [0, 1])})
    with pytest.raises(ValueError, match="the mask baseline needs the object masks: column 'object_mask'"):
        training_free_knn(dataset, "train", ["test"], 4, 2, mask_column="object_mask", k=1)
    with pytest.raises(ValueError, match="unknown training-free baseline"):
        training_free_knn(dataset, "train", ["test"], 4, 2, k=1, baselines=["sift"])


@pytest.mark.parametrize("num", [2, 3, 5, 64, 127])
def test_derangement_leaves_no_image_its_own_map(num):
    for seed in range(20):
        permutation = derangement(num, torch.Generator().manual_seed(seed))
        assert sorted(permutation.tolist()) == list(range(num))
        assert not bool((permutation == torch.arange(num)).any())
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


class _Maps:
    """A stand-in collator: each example's map is filled with its row number (so a map names its image)."""

    epoch = 0

    def __call__(self, examples):
        maps = torch.stack([torch.full((4, 4), float(e["__index__"])) for e in examples])
        return {"pixel_values": torch.zeros(len(examples), 3, 8, 8), "attention_map": maps}


def test_permuted_placebo_keeps_the_batch_multiset_and_moves_every_map():
    examples = [{"__index__": row} for row in (5, 9, 2, 14, 7, 3)]
    collator = PlaceboCollator(_Maps(), "permuted", seed=0)
    batch = collator(examples)
    given = batch["attention_map"][:, 0, 0]
    own = batch[OBJECT_MAP_KEY][:, 0, 0]
    assert own.tolist() == [5, 9, 2, 14, 7, 3]
    assert sorted(given.tolist()) == sorted(own.tolist())  # the same multiset of maps
    assert not bool((given == own).any())  # none on its own image
    assert torch.equal(collator(examples)["attention_map"], batch["attention_map"])  # seeded: a resume repeats it
    collator.epoch = 1
    assert collator.collator.epoch == 1  # the epoch reaches the wrapped collator's crops
    assert not torch.equal(collator(examples)["attention_map"], batch["attention_map"])
    with pytest.raises(ValueError, match="a batch of one image"):
        collator([{"__index__": 4}])


def test_centre_placebo_is_one_centred_map_for_every_image():
    batch = PlaceboCollator(_Maps(), "centre", seed=0)([{"__index__": row} for row in range(3)])
    maps = batch["attention_map"]
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[1], maps[2])
    prior = centre_prior(4, 4)
    assert torch.allclose(maps[0], prior)
    assert prior[1:3, 1:3].min() > prior[0].max()  # peak in the middle, symmetric
    assert torch.allclose(prior, prior.flip(0)) and torch.allclose(prior, prior.T)


def test_placebo_arms_weight_with_other_maps_and_measure_the_own_object(tmp_path, monkeypatch):
    """Through run_pretrain's wiring: the permuted arm's loss sees the attg arm's maps of the same batch handed to
    other images, its object share is taken on each image's own map, and the centre arm's loss sees one map."""
    import json

    import modeling_attg_mae.pretraining.wiring as wiring
    from modeling_attg_mae.pretraining import parse_arguments, run
    from tests.conftest import tiny_pretrain_args

    seen = {}
    compute_loss = wiring.AttGTrainer.compute_loss

    def recording_compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            seen[arm].append({key: value.clone() for key, value in inputs.items() if key != "noise"})
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(wiring.AttGTrainer, "compute_loss", recording_compute_loss)
    for arm, flags in (("attg", []), ("permuted", ["--attention_placebo", "permuted"]),
                       ("centre", ["--attention_placebo", "centre"])):
        seen[arm] = []
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--max_steps", "3", "--eval_strategy", "no",
                                                "--num_pictures", "0", *flags, name=arm)))
    for own, permuted, centre in zip(seen["attg"], seen["permuted"], seen["centre"]):
        assert torch.equal(permuted["pixel_values"], own["pixel_values"])
        assert torch.equal(permuted[OBJECT_MAP_KEY], own["attention_map"])
        given, maps = permuted["attention_map"].flatten(1), own["attention_map"].flatten(1)
        # each given map is the own map of another image of the batch
        match = (given[:, None, :] == maps[None, :, :]).all(-1)  # (given i, own j)
        assert bool(match.any(1).all()) and not bool(match.diagonal().all())
        assert torch.equal(centre["attention_map"], centre_prior(*own["attention_map"].shape[1:])
                           .expand_as(own["attention_map"]))
    shares = {arm: [e["object_loss_share"] for e in json.loads((tmp_path / arm / "trainer_state.json").read_text())
                    ["log_history"] if "loss" in e] for arm in seen}
    assert len(shares["permuted"]) == 3 and shares["permuted"] != shares["attg"]


def test_placebo_flags_are_refused_where_they_mean_nothing(tmp_path):
    from modeling_attg_mae.pretraining import check_run_arguments, parse_arguments
    from tests.conftest import tiny_pretrain_args

    with pytest.raises(ValueError, match="--attg_guidance is none"):
        check_run_arguments(*parse_arguments(tiny_pretrain_args(tmp_path, "--attention_placebo", "permuted",
                                                                "--attg_guidance", "none")))
    with pytest.raises(ValueError, match="the maps here are online maps"):
        parse_arguments(tiny_pretrain_args(tmp_path, "--attention_placebo", "centre", "--attention_method",
                                           "spectral_residual", "--attention_online"))
    with pytest.raises(ValueError, match="the maps here are self maps"):
        parse_arguments(tiny_pretrain_args(tmp_path, "--attention_placebo", "centre", "--attention_method", "self"))


def test_a_permuted_placebo_with_a_last_batch_of_one_is_refused_before_the_maps(tmp_path, monkeypatch):
    import modeling_attg_mae.pretraining.dataset as dataset
    from modeling_attg_mae.object_discovery.placebo import check_placebo_batches
    from modeling_attg_mae.pretraining import parse_arguments, run
    from tests.conftest import tiny_pretrain_args

    def no_maps(*args, **kwargs):
        raise AssertionError("the maps were computed before the refusal")

    monkeypatch.setattr(dataset, "compute_attention_maps", no_maps)
    with pytest.raises(ValueError, match="48 training rows in batches of 47 leave a last batch of one image"):
        run(*parse_arguments(tiny_pretrain_args(tmp_path, "--attention_placebo", "permuted",
                                                "--per_device_train_batch_size", "47")))
    check_placebo_batches("permuted", 48, 47, drop_last=True)  # dropped: nothing to refuse
    check_placebo_batches("centre", 48, 47)  # one map for all: a batch of one is fine
    with pytest.raises(ValueError, match="on 2 processes"):
        check_placebo_batches("permuted", 49, 8, world_size=2)  # 25 rows each: 3 batches of 8 and one of 1

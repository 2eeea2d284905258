"""Data: the synthetic benchmark, joint image + map augmentation, evaluation transform, loading and batching.

Expected maps, patch sets and pixel values are computed by hand in the tests from the crop box.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from modeling_attg_mae import AttGViTMAEForPreTraining
from modeling_attg_mae.modeling_attg_mae import resample_attention_map
from modeling_attg_mae.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHAPES,
    TEXTURE_FAMILIES,
    CropParameters,
    EvalTransform,
    JointRandomResizedCrop,
    MapCrop,
    PretrainCollator,
    PretrainTransform,
    as_attention_map,
    check_columns,
    crop_attention_map,
    crop_attention_maps,
    load_image_dataset,
    load_synthetic_dataset,
    stack_pretrain_batch,
    to_normalized_tensor,
    with_pretrain_transform,
)
from tests.conftest import tiny_config

SMALL = dict(num_train=300, num_validation=200, image_size=32, num_classes=5)
SPLITS = ["train", "validation", "validation_mixed_rand", "validation_only_fg"]


@pytest.fixture(scope="module")
def small():
    return load_synthetic_dataset(seed=0, **SMALL)


def _arrays(dataset, column):
    return np.stack([np.asarray(image) for image in dataset[column]])


# ------------------------------------------------------------------------------------------ synthetic data
def test_synthetic_is_deterministic_per_seed(small):
    again = load_synthetic_dataset(seed=0, **SMALL)
    other = load_synthetic_dataset(seed=1, **SMALL)
    for split in SPLITS:
        for column in ("image", "object_mask"):
            same = [row["bytes"] for row in small[split].cast_column(column, datasets.Image(decode=False))[column]]
            repeat = [row["bytes"] for row in again[split].cast_column(column, datasets.Image(decode=False))[column]]
            assert same == repeat, (split, column)
        assert small[split]["label"] == again[split]["label"]
        assert not np.array_equal(_arrays(small[split], "image"), _arrays(other[split], "image")), split


def test_synthetic_splits_columns_and_features(small):
    assert list(small) == SPLITS
    assert [len(small[s]) for s in SPLITS] == [300, 200, 200, 200]
    for split in SPLITS:
        data = small[split]
        assert data.column_names == ["image", "label", "object_mask", "background"]
        assert data.features["label"].names == ["disk", "square", "triangle", "cross", "ring"]
        assert data.features["background"].names == [
            "horizontal_stripes", "vertical_stripes", "checkerboard", "dots", "rings", "plain"]
        first = data[0]
        assert first["image"].mode == "RGB" and first["image"].size == (32, 32)
        assert first["object_mask"].mode == "L" and first["object_mask"].size == (32, 32)
        masks = _arrays(data, "object_mask")
        assert set(np.unique(masks)) == {0, 255}
        area = (masks > 0).mean(axis=(1, 2))
        # object_area (0.10, 0.25) of the image, up to the pixel grid at 32 px
        assert area.min() > 0.07 and area.max() < 0.29, (area.min(), area.max())
        assert set(data["label"]) == set(range(5))


def test_mixed_rand_decorrelates_background_from_class():
    data = load_synthetic_dataset(seed=3, num_train=1000, num_validation=1000, image_size=16, num_classes=10)
    for split in ("train", "validation"):
        label, background = np.array(data[split]["label"]), np.array(data[split]["background"])
        # background_correlation 0.75: family k for 75%, never family k otherwise (binomial sd 1.4%)
        assert abs((label == background).mean() - 0.75) < 0.05, split
        assert background.max() < 10
    label = np.array(data["validation_mixed_rand"]["label"])
    background = np.array(data["validation_mixed_rand"]["background"])
    assert abs((label == background).mean() - 0.10) < 0.035  # independent: chance 1/K
    # independence beyond the diagonal: the class -> family table is flat (each cell expects 10 of 1000)
    table = np.zeros((10, 10))
    np.add.at(table, (label, background), 1)
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 130, chi2  # 81 degrees of freedom: p ~ 1e-3 at 130; the correlated split gives thousands
    train_table = np.zeros((10, 10))
    np.add.at(train_table, (np.array(data["train"]["label"]), np.array(data["train"]["background"])), 1)
    train_expected = np.outer(train_table.sum(1), train_table.sum(0)) / train_table.sum()
    assert ((train_table - train_expected) ** 2 / train_expected).sum() > 1000
    assert set(data["validation_only_fg"]["background"]) == {10}  # "plain"


def test_background_correlation_knob():
    data = load_synthetic_dataset(seed=0, num_train=50, num_validation=20, image_size=16, num_classes=4,
                                  background_correlation=1.0)
    assert data["train"]["label"] == data["train"]["background"]
    data = load_synthetic_dataset(seed=0, num_train=50, num_validation=20, image_size=16, num_classes=4,
                                  background_correlation=0.0)
    assert not any(np.array(data["train"]["label"]) == np.array(data["train"]["background"]))


def test_masks_are_the_object_pixels_and_validation_splits_share_objects(small):
    val, mixed, only = (_arrays(small[s], "image").astype(int) for s in SPLITS[1:])
    mask = _arrays(small["validation"], "object_mask") > 0
    for split in SPLITS[2:]:
        assert np.array_equal(_arrays(small[split], "object_mask") > 0, mask)
        assert small[split]["label"] == small["validation"]["label"]
    # only_fg: the plain grey background (128, 128, 128) is exactly the complement of the mask
    is_grey = (only == 128).all(axis=-1)
    assert np.array_equal(~is_grey, mask)
    # the object's pixels are the same on every background; the backgrounds differ
    assert np.array_equal(val[mask], only[mask]) and np.array_equal(mixed[mask], only[mask])
    assert np.abs(val - mixed)[~mask].mean() > 30


def test_background_is_high_frequency_and_object_is_visible(small):
    images = _arrays(small["validation"], "image").astype(float) / 255
    mask = _arrays(small["validation"], "object_mask") > 0
    # summed RGB step to the right / lower neighbour, on background pixels vs object pixels 2 px from the edge
    # (the 1-px outline is meant to be a step)
    dx = np.abs(np.diff(images, axis=2)).sum(-1)[:, :-1, :]
    dy = np.abs(np.diff(images, axis=1)).sum(-1)[:, :, :-1]
    step = np.maximum(dx, dy)  # (n, H-1, W-1)
    padded = np.pad(mask, ((0, 0), (2, 2), (2, 2)))
    size = mask.shape[1]
    near = [padded[:, 2 + i:2 + i + size, 2 + j:2 + j + size] for i in range(-2, 3) for j in range(-2, 3)]
    interior = np.logical_and.reduce(near)[:, :-1, :-1]
    background = ~np.logical_or.reduce(near)[:, :-1, :-1]
    assert step[background].mean() > 4 * step[interior].mean(), (step[background].mean(), step[interior].mean())
    # the object stands out: its colour is far from the mean background colour of its image
    object_color = (images * mask[..., None]).sum((1, 2)) / mask.sum((1, 2))[:, None]
    background_color = (images * ~mask[..., None]).sum((1, 2)) / (~mask).sum((1, 2))[:, None]
    assert np.median(np.abs(object_color - background_color).sum(-1)) > 0.3


def test_synthetic_cache_is_keyed_by_parameters(tmp_path):
    kwargs = dict(num_train=20, num_validation=10, image_size=16, num_classes=3)
    first = load_synthetic_dataset(cache_dir=tmp_path, **kwargs)
    folders = sorted(p for p in os.listdir(tmp_path) if not p.startswith("."))
    assert len(folders) == 1
    again = load_synthetic_dataset(cache_dir=tmp_path, **kwargs)
    assert np.array_equal(_arrays(first["train"], "image"), _arrays(again["train"], "image"))
    load_synthetic_dataset(cache_dir=tmp_path, seed=5, **kwargs)
    assert len([p for p in os.listdir(tmp_path) if not p.startswith(".")]) == 2  # a new folder, the old one kept
    record = tmp_path / folders[0] / "synthetic_parameters.json"
    tampered = json.loads(record.read_text())
    tampered["seed"] = 99
    record.write_text(json.dumps(tampered))
    with pytest.raises(ValueError, match="other parameters"):
        load_synthetic_dataset(cache_dir=tmp_path, **kwargs)


def test_synthetic_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        load_synthetic_dataset(num_classes=13)
    with pytest.raises(ValueError, match="max_rotation"):
        load_synthetic_dataset(max_rotation=30)
    with pytest.raises(ValueError, match="object_color"):
        load_synthetic_dataset(object_color="blue")


# ------------------------------------------------------------------------------------------ transforms
def _planted(size, top, left, side):
    """Black RGB image with a white square at rows top..top+side, cols left..left+side."""
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[top:top + side, left:left + side] = 255
    return Image.fromarray(pixels)


def _bright_patches(pixel_values, patch):
    """Patches whose mean (un-normalised) brightness is above one half."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = (pixel_values * std + mean).mean(0)  # (S, S) in [0, 1]
    grid = image.shape[0] // patch
    per_patch = image.reshape(grid, patch, grid, patch).mean(dim=(1, 3))  # (gh, gw)
    return {tuple(ij) for ij in (per_patch > 0.5).nonzero().tolist()}


def _hot(attention_map, threshold=0.5):
    return {tuple(ij) for ij in (attention_map > threshold).nonzero().tolist()}


def test_flip_only_moves_map_with_image():
    # full box (scale 1, ratio 1 on a square image), always flipped: 32 px, patch 8 -> 4x4 grid
    crop = JointRandomResizedCrop(32, 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_probability=1.0)
    image = _planted(32, top=8, left=0, side=8)  # patch (1, 0)
    attention = torch.zeros(8, 8, dtype=torch.float16)  # 8x8 map: 4 px per cell
    attention[2:4, 0:2] = 1  # the same square
    out_image, out_map = crop(image, attention, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(4, 4)
    expected[1, 3] = 1.0  # mirrored: column 0 -> column 3
    assert out_map.dtype == torch.float32 and torch.equal(out_map, expected)
    pixels = np.asarray(out_image)
    assert (pixels[8:16, 24:32] == 255).all() and pixels.sum() == 64 * 3 * 255


def test_known_box_crop_puts_weights_on_the_object():
    crop = JointRandomResizedCrop(32, 8)
    image = _planted(64, top=24, left=32, side=8)
    attention = torch.zeros(8, 8)  # cells of 8 px: the square is cell (3, 4)
    attention[3, 4] = 1
    # box rows 8..40, cols 16..48 (no resizing): the square lands at crop rows 16..24, cols 16..24 = patch (2, 2)
    out_image, out_map = crop.apply(image, attention, CropParameters(top=8, left=16, height=32, width=32))
    expected = torch.zeros(4, 4)
    expected[2, 2] = 1
    assert torch.equal(out_map, expected)
    pixels = np.asarray(out_image)
    assert (pixels[16:24, 16:24] == 255).all() and pixels.sum() == 64 * 3 * 255

    # zoom x2 + flip: box rows 16..48, cols 8..40 to 64 px, patch 8 -> 8x8 grid; square at image rows 24..32,
    # cols 16..24 -> crop rows 8..16, cols 8..16 -> x2: rows 16..32, cols 16..32 -> flipped cols 32..48
    crop = PretrainTransform(64, 8)
    image = _planted(64, top=24, left=16, side=8)
    mask = torch.zeros(64, 64)  # a full-resolution object mask as the map
    mask[24:32, 16:24] = 1
    pixel_values, out_map = crop.crop.apply(image, mask, CropParameters(16, 8, 32, 32, flip=True))
    expected_patches = {(2, 4), (2, 5), (3, 4), (3, 5)}
    assert _hot(out_map) == expected_patches
    assert out_map.sum().item() == pytest.approx(4.0)
    assert _bright_patches(to_normalized_tensor(pixel_values), 8) == expected_patches


def test_crop_is_area_weighted_on_straddling_cells():
    attention = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # each cell covers half of the image
    # full image onto 4x4: every patch lies in one cell
    full = crop_attention_map(attention, (0, 0, 1, 1), False, 32, (4, 4))
    assert torch.equal(full, torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))
    # x 0.125..0.625, full height, onto 2x2: the right patch (x 0.375..0.625) is half cell 0, half cell 1
    straddle = crop_attention_map(attention, (0.125, 0.0, 0.625, 1.0), False, 32, (2, 2))
    assert torch.allclose(straddle, torch.tensor([[0.0, 0.5], [2.0, 2.5]]))
    flipped = crop_attention_map(attention, (0.125, 0.0, 0.625, 1.0), True, 32, (2, 2))
    assert torch.allclose(flipped, torch.tensor([[0.5, 0.0], [2.5, 2.0]]))
    # a map already on the patch grid, full box, no flip: unchanged (up to the rounding of a mean of 64 equals)
    grid_map = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(crop_attention_map(grid_map, (0, 0, 1, 1), False, 32, (4, 4)), grid_map, rtol=1e-6, atol=0)


def _per_sample_crop_reference(attention_map, box, flip, output_size, grid_size):
    """The one-map-at-a-time crop as it was before the batched one (commit 4808263), frozen here: the demo's
    numbers were produced by it, so the batched crop must give exactly its values."""
    attention_map = as_attention_map(attention_map)
    height, width = attention_map.shape
    grid_h, grid_w = grid_size
    x0, y0, x1, y1 = box
    per_patch_h = max(output_size // grid_h, math.ceil(height * (y1 - y0) / grid_h))
    per_patch_w = max(output_size // grid_w, math.ceil(width * (x1 - x0) / grid_w))
    rows_rel = y0 + (np.arange(grid_h * per_patch_h, dtype=np.float64) + 0.5) / (grid_h * per_patch_h) * (y1 - y0)
    cols_rel = x0 + (np.arange(grid_w * per_patch_w, dtype=np.float64) + 0.5) / (grid_w * per_patch_w) * (x1 - x0)
    if flip:
        cols_rel = cols_rel[::-1]
    rows = np.clip(np.floor(rows_rel * height).astype(np.int64), 0, height - 1)
    cols = np.clip(np.floor(cols_rel * width).astype(np.int64), 0, width - 1)
    fine = attention_map[torch.from_numpy(rows)[:, None], torch.from_numpy(cols)[None, :]]
    return resample_attention_map(fine[None], (grid_h, grid_w)).reshape(grid_h, grid_w)


def _random_crops(count, image_size, seed):
    """Boxes as PretrainTransform draws them (relative to a square image) and random flips."""
    crop = JointRandomResizedCrop(image_size, 4)
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(count):
        p = crop.sample_parameters(image_size, image_size, generator)
        crops.append(MapCrop((p.left / image_size, p.top / image_size, (p.left + p.width) / image_size,
                              (p.top + p.height) / image_size), p.flip))
    assert {c.flip for c in crops} == {False, True}
    return crops


def test_batched_map_crop_equals_the_per_sample_reference():
    generator = torch.Generator().manual_seed(0)
    # the demo: 16x16 float16 maps read from an Array2D column as nested lists, 32 px crops, patch 4 -> 8x8
    maps = [torch.rand(16, 16, generator=generator).half().numpy().tolist() for _ in range(128)]
    crops = _random_crops(128, 32, seed=1)
    batched = crop_attention_maps(maps, crops, 32, (8, 8))
    expected = torch.stack([_per_sample_crop_reference(m, c.box, c.flip, 32, (8, 8)) for m, c in zip(maps, crops)])
    assert batched.dtype == torch.float32 and batched.shape == (128, 8, 8)
    assert torch.equal(batched, expected)
    # grids differing within a batch (a ragged list): a coarse map (upsampled), the demo's, and full-resolution
    # masks, whose samples per patch depend on each box; 96 px crops onto a 6x6 grid (16 px patches)
    shapes = [(5, 7), (16, 16), (96, 96), (200, 150)] * 16
    maps = [torch.rand(h, w, generator=generator).numpy().tolist() for h, w in shapes]
    crops = _random_crops(len(maps), 96, seed=2)
    batched = crop_attention_maps(maps, crops, 96, (6, 6))
    expected = torch.stack([_per_sample_crop_reference(m, c.box, c.flip, 96, (6, 6)) for m, c in zip(maps, crops)])
    assert torch.equal(batched, expected)
    # the single-map API is the batch of one
    assert torch.equal(crop_attention_map(maps[2], crops[2].box, crops[2].flip, 96, (6, 6)), expected[2])
    with pytest.raises(ValueError, match=r"crop box \(0.5, 0.0, 0.25, 1.0\) must satisfy"):
        crop_attention_maps(maps[:2], [crops[0], MapCrop((0.5, 0.0, 0.25, 1.0))], 96, (6, 6))
    with pytest.raises(ValueError, match="got 2 attention maps but 1 crops"):
        crop_attention_maps(maps[:2], crops[:1], 96, (6, 6))


def test_collator_maps_equal_per_example_crops(small):
    # the pre-training route of run_pretrain.py: seeded per-row generators, float16 map rows as nested lists
    rows = [{**small["train"][i], "__index__": 10 + i} for i in range(16)]
    for row in rows:
        row["attention_map"] = (np.asarray(row["object_mask"].resize((16, 16))) / 255).astype(np.float16).tolist()
    transform = PretrainTransform(32, 4)
    collator = PretrainCollator(transform, seed=0)
    collator.epoch = 3
    batch = collator(rows)
    for i, row in enumerate(rows):
        parameters = transform.crop.sample_parameters(32, 32, collator._generator(row))
        box = (parameters.left / 32, parameters.top / 32, (parameters.left + parameters.width) / 32,
               (parameters.top + parameters.height) / 32)
        expected = _per_sample_crop_reference(row["attention_map"], box, parameters.flip, 32, (8, 8))
        assert torch.equal(batch["attention_map"][i], expected), i
        pixel_values, attention_map = transform(row["image"], row["attention_map"], collator._generator(row))
        assert torch.equal(batch["pixel_values"][i], pixel_values) and torch.equal(attention_map, expected)
    assert not torch.equal(batch["attention_map"][0], batch["attention_map"][1])
    # an unreadable map is named by its dataset row
    rows[5]["attention_map"] = "not a map"
    with pytest.raises(ValueError, match=r"row 15: attention_map must be a 2-D grid of numbers"):
        collator(rows)


def test_random_crops_keep_weights_on_the_object():
    transform = PretrainTransform(64, 8, seed=0)
    image = _planted(96, top=32, left=48, side=24)
    mask = np.zeros((96, 96), dtype=np.uint8)
    mask[32:56, 48:72] = 255
    checked = 0
    for step in range(20):
        generator = torch.Generator().manual_seed(step)
        params = transform.crop.sample_parameters(96, 96, torch.Generator().manual_seed(step))
        pixel_values, out_map = transform(image, Image.fromarray(mask, mode="L"), generator=generator)
        assert pixel_values.shape == (3, 64, 64) and out_map.shape == (8, 8)
        # by hand: the share of each patch's sample lattice on the square; k samples per patch side = the larger
        # of 8 output pixels and the mask pixels (96 px map) the box puts in one patch
        k_h, k_w = max(8, -(-params.height // 8)), max(8, -(-params.width // 8))
        rows = params.top + (np.arange(8 * k_h) + 0.5) * params.height / (8 * k_h)
        cols = params.left + (np.arange(8 * k_w) + 0.5) * params.width / (8 * k_w)
        if params.flip:
            cols = cols[::-1]
        inside = ((rows >= 32) & (rows < 56))[:, None] & ((cols >= 48) & (cols < 72))[None, :]
        expected = inside.reshape(8, k_h, 8, k_w).mean(axis=(1, 3))
        assert np.allclose(out_map.numpy(), expected, atol=1e-6)
        if expected.max() > 0.9:
            # patches fully on the object are bright, patches fully off it are dark
            bright = _bright_patches(pixel_values, 8)
            assert {ij for ij in _hot(out_map, 0.99)} <= bright
            assert not bright & {tuple(ij) for ij in np.argwhere(expected < 0.01).tolist()}
            checked += 1
    assert checked >= 5


def test_seeded_transform_is_reproducible():
    image = _planted(48, 8, 8, 16)
    first = PretrainTransform(32, 8, seed=7)
    second = PretrainTransform(32, 8, seed=7)
    draws_a = [first(image, torch.ones(3, 3))[0] for _ in range(3)]
    draws_b = [second(image, torch.ones(3, 3))[0] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(draws_a, draws_b))
    assert not torch.equal(draws_a[0], draws_a[1])  # the stream advances


def test_eval_transform_sizes_and_values():
    transform = EvalTransform(32, patch_size=8)
    color = (200, 100, 50)
    image = Image.new("RGB", (80, 50), color)  # W 80, H 50
    attention = torch.zeros(5, 8)  # cells of 10 px
    attention[:, 3:] = 1  # x >= 30
    pixel_values, out_map = transform(image, attention)
    assert pixel_values.shape == (3, 32, 32) and pixel_values.dtype == torch.float32
    expected = (torch.tensor(color) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(pixel_values, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)
    # shorter side 50 -> int(32 * 256 / 224) = 36, width int(36 * 80 / 50) = 57; crop left round(12.5) = 12
    # (half to even). Output pixel c sits at source x (12 + c + 0.5) * 80 / 57: c <= 8 is left of x = 30
    # (c = 8: 28.8), c >= 9 right of it (30.2). Patch column 1 (c = 8..15) has 7 of its 8 pixels on the 1s.
    assert torch.allclose(out_map, torch.tensor([0.0, 0.875, 1.0, 1.0]).expand(4, 4), atol=1e-6)
    for mode in ("L", "RGBA", "P", "1"):
        converted = transform(Image.new(mode, (40, 40)))[0]
        assert converted.shape == (3, 32, 32)
    grey = EvalTransform(16)(Image.new("L", (20, 30), 77), None)[0]
    assert torch.allclose(grey, ((77 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)
                          .expand(3, 16, 16), atol=1e-5)
    with pytest.raises(ValueError, match="patch_size"):
        EvalTransform(32)(image, attention)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PretrainTransform(30, 8)


# ------------------------------------------------------------------------------------------ batching
def test_collator_batches_images_and_maps(small):
    rows = [dict(small["train"][i]) for i in range(4)]
    for row in rows:  # a datasets Array2D float16 row arrives as nested lists
        row["attention_map"] = (np.asarray(row["object_mask"], dtype=np.float16) / 255).tolist()
    collator = PretrainCollator(EvalTransform(32, patch_size=8))
    batch = collator(rows)
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["attention_map"].shape == (4, 4, 4) and batch["attention_map"].dtype == torch.float32
    # the eval crop of a 32 px image: resize to 36, crop 2..34 -> relative box (2/36, 34/36)
    box = (2 / 36, 2 / 36, 34 / 36, 34 / 36)
    for i, row in enumerate(rows):
        mask = np.asarray(row["object_mask"], dtype=np.float64) / 255
        centres = (2 + np.arange(32) + 0.5) / 36 * 32  # source pixel under each output pixel centre
        index = np.floor(centres).astype(int)
        expected = mask[index][:, index].reshape(4, 8, 4, 8).mean(axis=(1, 3))
        assert np.allclose(batch["attention_map"][i].numpy(), expected, atol=1e-6), box
    # the same through Dataset.with_transform
    subset = small["train"].select(range(4)).map(
        lambda row: {"attention_map": (np.asarray(row["object_mask"], dtype=np.float32) / 255).tolist()})
    view = with_pretrain_transform(subset, EvalTransform(32, patch_size=8))
    again = stack_pretrain_batch([view[i] for i in range(4)])
    assert torch.equal(again["pixel_values"], batch["pixel_values"])
    assert torch.allclose(again["attention_map"], batch["attention_map"], atol=1e-3)  # float16 vs float32 rows
    # the batch drives the model
    output = AttGViTMAEForPreTraining(tiny_config())(**batch)
    assert torch.isfinite(output.loss) and output.patch_weights.shape == (4, 16)


def test_collator_errors_on_missing_map_or_image(small):
    rows = [dict(small["train"][i]) for i in range(2)]
    collator = PretrainCollator(PretrainTransform(32, 8, seed=0))
    with pytest.raises(ValueError, match=r"example 0 has no 'attention_map'.*object_mask"):
        collator(rows)
    assert PretrainCollator(PretrainTransform(32, 8), require_attention_map=False)(rows)["pixel_values"].shape == (
        2, 3, 32, 32)
    with pytest.raises(ValueError, match="has no 'img' column"):
        PretrainCollator(PretrainTransform(32, 8), image_column="img")(rows)
    with pytest.raises(ValueError, match=r"examples \[1\] of the batch have no attention_map"):
        PretrainCollator(PretrainTransform(32, 8), require_attention_map=False)(
            [{**rows[0], "attention_map": torch.ones(4, 4)}, rows[1]])
    with pytest.raises(ValueError, match=r"\['attention_map'\] not found"):
        with_pretrain_transform(small["train"], PretrainTransform(32, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_collator_refuses_a_non_finite_map_naming_its_row(small, bad):
    # where a stored map column is read (per batch, on the CPU): the model's forward no longer checks (a host read
    # of a device value every step)
    rows = [dict(small["train"][i]) for i in range(3)]
    maps = [np.random.default_rng(i).random((4, 4)).tolist() for i in range(3)]
    maps[1][2][3] = bad
    rows = [{**row, "attention_map": m, "__index__": 10 + i} for i, (row, m) in enumerate(zip(rows, maps))]
    with pytest.raises(ValueError, match="row 11: attention_map contains NaN or inf values"):
        PretrainCollator(EvalTransform(32, patch_size=8))(rows)
    with pytest.raises(ValueError, match="row 11: attention_map contains NaN or inf values"):  # maps on other grids
        PretrainCollator(EvalTransform(32, patch_size=8))([{**row, "attention_map": torch.tensor(m)[: 4 - i]}
                                                          for i, (row, m) in enumerate(zip(rows, maps))])
    view = with_pretrain_transform(datasets.Dataset.from_list(
        [{"image": row["image"], "attention_map": m} for row, m in zip(rows, maps)]), EvalTransform(32, patch_size=8))
    with pytest.raises(ValueError, match="row 1: attention_map contains NaN or inf values"):
        view[0:3]


# ------------------------------------------------------------------------------------------ loading
def test_check_columns_names_missing_and_existing(small):
    check_columns(small, "image", "label", ["object_mask"])
    with pytest.raises(ValueError, match=r"image_column 'img' not found in split 'train'.*'image', 'label'"):
        check_columns(small, "img")
    with pytest.raises(ValueError, match=r"label_column 'labels' not found"):
        check_columns(small["validation"], "image", "labels")
    with pytest.raises(ValueError, match="not a datasets.Image.*'image', 'object_mask'"):
        check_columns(small, "label")


def test_image_folder_loading_and_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "cats" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=f"train_dir='{empty}' contains no image files"):
        load_image_dataset(train_dir=empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_image_dataset(train_dir=tmp_path / "missing")
    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (20, 20), 40 * i).save(folder / label / f"{i}.png")
    dataset = load_image_dataset(train_dir=folder, validation_dir=folder, cache_dir=tmp_path / "cache")
    assert list(dataset) == ["train", "validation"] and len(dataset["train"]) == 6
    check_columns(dataset, "image", "label")
    assert dataset["train"].features["label"].names == ["a", "b"]
    with pytest.raises(ValueError, match="not both"):
        load_image_dataset(dataset_name="user/data", train_dir=folder)
    with pytest.raises(ValueError, match="validation_dir"):
        load_image_dataset(validation_dir=folder)


def test_load_image_dataset_defaults_to_synthetic():
    dataset = load_image_dataset(synthetic_kwargs=dict(num_train=8, num_validation=4, image_size=16, num_classes=2))
    assert list(dataset) == SPLITS and len(dataset["train"]) == 8
    assert dataset["train"].features["label"].names == list(SHAPES[:2])
    assert TEXTURE_FAMILIES[0] in dataset["train"].features["background"].names

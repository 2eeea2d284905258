"""Object discovery: every method against a reference computed here, the map step, the CLI, and errors.

Tiny random-weight ViT / DINOv2 / ResNet checkpoints are saved to a temporary folder and loaded through the
real `from_pretrained` path. References are written independently: the DINO attention by hand from the last
layer's weights, TokenCut per image with scipy (the official algorithm), Grad-CAM from the linear head's
weights, the spectral residual with numpy/scipy.
"""

import io
import math
import os

import datasets
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from PIL import Image
from transformers import Dinov2Model, Dinov2WithRegistersModel, ViTConfig, ViTModel

from modeling_attg_mae.object_discovery import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    METHODS,
    AttentionMapStep,
    add_attention_maps,
    build_method,
    normalized_cut,
    preprocess_images,
    spectral_residual_saliency,
)
from modeling_attg_mae.object_discovery.__main__ import main as cli_main
from modeling_attg_mae.visualize import colormap, save_guidance_grid
from tests.conftest import TINY_DETECTOR

def random_images(count, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


# ----------------------------------------------------------------------------------------------- DINO


@pytest.mark.parametrize("kind", ["vit", "dinov2", "dinov2_registers"])
def test_dino_map_is_the_last_block_cls_attention(detector_checkpoints, kind):
    method = build_method("dino", detector_checkpoints[kind], image_size=32)
    images = random_images(3)
    pixel_values = preprocess_images(images, 32)
    # reference: the model loaded separately, the last block's attention by hand from its weights
    cls = {"vit": ViTModel, "dinov2": Dinov2Model, "dinov2_registers": Dinov2WithRegistersModel}[kind]
    ref_model = cls.from_pretrained(detector_checkpoints[kind], attn_implementation="eager").eval()
    with torch.no_grad():
        out = ref_model(pixel_values=pixel_values, output_hidden_states=True, output_attentions=True)
        layer = (ref_model.layers if kind == "vit" else ref_model.encoder.layer)[-1]
        norm = layer.layernorm_before if kind == "vit" else layer.norm1
        x = norm(out.hidden_states[-2])  # input of the last block
        heads, head_dim = 4, 8
        # DINOv2 keeps the projections in a nested `attention.attention.query/key` before transformers 5.18
        block = layer.attention if hasattr(layer.attention, "q_proj") else layer.attention.attention
        q_lin, k_lin = (block.q_proj, block.k_proj) if hasattr(block, "q_proj") else (block.query, block.key)
        q = (x @ q_lin.weight.T + q_lin.bias).view(3, -1, heads, head_dim)
        k = (x @ k_lin.weight.T + k_lin.bias).view(3, -1, heads, head_dim)
        scores = torch.einsum("bhd,bthd->bht", q[:, 0], k) / math.sqrt(head_dim)
        prefix = 1 + (3 if kind == "dinov2_registers" else 0)
        by_hand = scores.softmax(-1)[:, :, prefix:]  # (B, heads, 16)
    assert torch.allclose(by_hand, out.attentions[-1][:, :, 0, prefix:], atol=1e-5)  # the hand formula is right
    maps = method(images)
    assert maps.shape == (3, 4, 4) and maps.dtype == torch.float32
    assert torch.allclose(maps.view(3, -1), by_hand.mean(1), atol=1e-5)
    head_max = build_method("dino", detector_checkpoints[kind], image_size=32, head="max")(images)
    assert torch.allclose(head_max.view(3, -1), by_hand.amax(1), atol=1e-5)
    head_two = build_method("dino", detector_checkpoints[kind], image_size=32, head=2)(images)
    assert torch.allclose(head_two.view(3, -1), by_hand[:, 2], atol=1e-5)


def test_dino_other_input_size_interpolates_positions(detector_checkpoints):
    maps = build_method("dino", detector_checkpoints["vit"], image_size=(48, 64))(random_images(2))
    assert maps.shape == (2, 6, 8) and torch.isfinite(maps).all()
    assert torch.allclose(maps.sum((1, 2)), torch.ones(2), atol=0.2)  # CLS mass on patches, a bit on CLS
    with pytest.raises(ValueError, match="multiple of the detector's patch size 8"):
        build_method("dino", detector_checkpoints["vit"], image_size=30)
    with pytest.raises(ValueError, match="head index 4 out of range"):
        build_method("dino", detector_checkpoints["vit"], image_size=32, head=4)


# ------------------------------------------------------------------------------------------- TokenCut


def tokencut_reference(features, dims, tau=0.2, eps=1e-5):
    """Official TokenCut, one image, scipy: returns (seed component, oriented eigenvector)."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True)
    A = features @ features.T
    A = np.where(A > tau, 1.0, eps)
    D = np.diag(A.sum(axis=1))
    _, vectors = scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])
    vector = vectors[:, 0].copy()
    bipartition = vector > vector.mean()
    seed = np.argmax(np.abs(vector))
    if not bipartition[seed]:
        bipartition, vector = ~bipartition, -vector
    objects, _ = scipy.ndimage.label(bipartition.reshape(dims))  # default structure: 4-connectivity
    component = objects == objects[np.unravel_index(seed, dims)]
    return component, vector.reshape(dims)


@pytest.mark.parametrize("dims", [(8, 8), (6, 10)])
def test_tokencut_matches_the_official_algorithm_on_random_features(dims):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((12, dims[0] * dims[1], 32))
    component = normalized_cut(torch.from_numpy(features).float(), dims).numpy()
    eigenvector = normalized_cut(torch.from_numpy(features).float(), dims, output="eigenvector").numpy()
    sizes = set()
    for b in range(12):
        ref_component, ref_vector = tokencut_reference(features[b], dims)
        np.testing.assert_array_equal(component[b].astype(bool), ref_component)
        # same normalisation (y^T D y = 1) and orientation: the vectors agree, not only the partitions
        np.testing.assert_allclose(eigenvector[b], ref_vector, atol=2e-4)
        sizes.add(int(ref_component.sum()))
    assert len(sizes) > 3  # the cases differ: not all trivially the same partition


def test_tokencut_recovers_planted_foreground_in_the_features():
    rng = np.random.default_rng(2)
    dims, batch, dim = (14, 14), 4, 64
    background, foreground = np.eye(dim)[0], np.eye(dim)[1]
    truth = np.zeros((batch, *dims), bool)
    truth[0, 3:9, 4:11] = truth[1, 0:5, 0:5] = truth[2, 8:14, 2:12] = truth[3, 5:10, 9:14] = True
    features = np.where(truth.reshape(batch, -1, 1), foreground, background) + 0.15 * rng.standard_normal((batch, 196, dim))
    maps = normalized_cut(torch.from_numpy(features).float(), dims).numpy().astype(bool)
    for b in range(batch):
        iou = (maps[b] & truth[b]).sum() / (maps[b] | truth[b]).sum()
        assert iou >= 0.95, (b, iou)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokencut_recovers_planted_object_end_to_end(tmp_path, seed):
    # zero position embeddings: patches with the same content get the same keys, so the graph is two clusters
    torch.manual_seed(seed)
    model = ViTModel(ViTConfig(intermediate_size=64, **{**TINY_DETECTOR, "image_size": 64}), add_pooling_layer=False)
    with torch.no_grad():
        model.embeddings.position_embeddings.zero_()
    model.save_pretrained(tmp_path / "vit")
    image = np.zeros((64, 64, 3), np.uint8)
    image[:] = (20, 40, 200)
    image[16:40, 24:56] = (230, 200, 30)
    maps = build_method("tokencut", str(tmp_path / "vit"), image_size=64)([Image.fromarray(image)])
    truth = torch.zeros(8, 8, dtype=torch.bool)
    truth[2:5, 3:7] = True
    found = maps[0].bool()
    assert (found & truth).sum() / (found | truth).sum() >= 0.95


def test_tokencut_component_is_four_connected():
    # two foreground blocks touching only at a corner: 4-connectivity keeps the seed's block only
    dims = (8, 8)
    truth = np.zeros(dims, bool)
    truth[0:3, 0:3] = truth[3:6, 3:6] = True
    features = np.where(truth.reshape(-1, 1), np.eye(16)[1], np.eye(16)[0])
    features[truth.reshape(-1)] += 0.01 * np.random.default_rng(0).standard_normal((18, 16))
    found = normalized_cut(torch.from_numpy(features).float()[None], dims)[0].numpy().astype(bool)
    assert found.sum() == 9 and (found[0:3, 0:3].all() or found[3:6, 3:6].all())


# ------------------------------------------------------------------------------------------- Grad-CAM


def test_gradcam_equals_cam_from_the_linear_head_and_moves_with_the_pattern(detector_checkpoints):
    method = build_method("gradcam", detector_checkpoints["resnet"], image_size=64)
    head = method.model.classifier[-1]
    with torch.no_grad():  # a positive head: the target class weighs every channel positively
        head.weight.copy_(torch.rand_like(head.weight) + 0.1)
    pixel_values = torch.zeros(2, 3, 64, 64)  # no bias in the convs: zero input -> zero features
    pixel_values[0, :, 8:24, 8:24] = 2.0
    pixel_values[1, :, 40:56, 40:56] = 2.0
    maps = method.compute(pixel_values)
    assert maps.shape == (2, 8, 8) and (maps >= 0).all()
    # reference: avgpool + linear head => d score / d A_c = W[t, c] / (h w) everywhere
    with torch.no_grad():
        features = method.model.resnet(pixel_values).last_hidden_state  # (2, 16, 8, 8)
        target = method.model(pixel_values).logits.argmax(-1)
        reference = torch.relu(torch.einsum("bc,bchw->bhw", head.weight[target], features) / 64)
    assert torch.allclose(maps, reference, atol=1e-6)
    peaks = [divmod(int(m.argmax()), 8) for m in maps]
    assert 1 <= peaks[0][0] <= 3 and 1 <= peaks[0][1] <= 3
    assert 5 <= peaks[1][0] <= 7 and 5 <= peaks[1][1] <= 7
    assert maps[0, 6:, 6:].max() == 0 and maps[1, :2, :2].max() == 0


# ---------------------------------------------------------------------------------- spectral residual


def test_spectral_residual_matches_numpy_and_peaks_on_a_salient_blob():
    rng = np.random.default_rng(3)
    gray = 0.5 + 0.02 * rng.standard_normal((2, 64, 64))
    gray[0, 40:48, 10:18] = 1.0
    gray[1, 8:14, 44:50] = 0.0
    ours = spectral_residual_saliency(torch.from_numpy(gray).float(), blur_sigma=3.0).numpy()
    for b in range(2):
        spectrum = np.fft.fft2(gray[b])
        log_amplitude = np.log(np.abs(spectrum))
        residual = log_amplitude - scipy.ndimage.uniform_filter(log_amplitude, 3, mode="wrap")
        saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
        reference = scipy.ndimage.gaussian_filter(saliency, 3.0, mode="mirror", truncate=3.0)
        np.testing.assert_allclose(ours[b], reference, rtol=2e-3, atol=1e-3 * reference.max())
    assert 36 <= np.unravel_index(ours[0].argmax(), (64, 64))[0] <= 51
    assert 6 <= np.unravel_index(ours[0].argmax(), (64, 64))[1] <= 21
    row, col = np.unravel_index(ours[1].argmax(), (64, 64))
    assert 4 <= row <= 17 and 40 <= col <= 53


# --------------------------------------------------------------------------------------------- column


def test_column_map_is_the_area_pooled_mask():
    mask = np.zeros((64, 48), np.uint8)
    mask[8:24, 12:36] = 255
    palette = Image.fromarray((mask > 0).astype(np.uint8) * 3, mode="P")  # class index 3
    maps = build_method("column", image_size=(8, 6))([Image.fromarray(mask, "L"), palette])
    reference = (mask > 0).reshape(8, 8, 6, 8).mean(axis=(1, 3))  # 8x8-pixel cells
    np.testing.assert_allclose(maps[0].numpy(), reference)
    np.testing.assert_allclose(maps[1].numpy(), reference)
    with pytest.raises(ValueError, match="mode 'RGB'"):
        build_method("column")([Image.new("RGB", (4, 4))])


# --------------------------------------------------------------------------------------- preprocessing


def test_preprocessing_handles_modes_and_sizes():
    gray = Image.fromarray(np.full((3, 7), 128, np.uint8), "L")
    rgba = Image.new("RGBA", (10, 40), (255, 0, 0, 0))
    palette = Image.new("P", (5, 5))
    palette.putpalette([0, 255, 0] * 256)
    tiny = Image.new("RGB", (1, 1), (0, 0, 255))
    sixteen = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    pixel_values = preprocess_images([gray, rgba, palette, tiny, sixteen], (16, 24))
    assert pixel_values.shape == (5, 3, 16, 24) and pixel_values.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = [torch.full((3,), 128 / 255), torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]),
                torch.tensor([0, 0, 1.0]), torch.ones(3)]
    for values, rgb in zip(pixel_values, expected):
        assert torch.allclose(values.mean((1, 2)), (rgb - mean) / std, atol=1e-4)
    with pytest.raises(ValueError, match="row 7"):
        preprocess_images([b"not an image"], 8, row_offset=7)


# ----------------------------------------------------------------------------------------- map step


def image_dataset(count, size=(24, 40), seed=0, broken_row=None):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        if i == broken_row:
            rows.append({"bytes": b"\x89PNG broken", "path": None})
            continue
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        rows.append({"bytes": buffer.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict({"image": rows, "label": [i % 2 for i in range(count)]}, features=features)


def test_map_step_writes_float16_maps_equal_to_the_method(detector_checkpoints, tmp_path):
    dataset = image_dataset(5)
    result = add_attention_maps(dataset, "dino", detector_checkpoints["vit"], grid_size=6, batch_size=2, image_size=32)
    assert result.features["attention_map"] == datasets.Array2D((6, 6), "float16")
    assert result.features["image"] == datasets.Image()  # decoding restored
    assert str(result.data.column("attention_map").type.storage_type) == "list<item: list<item: halffloat>>"
    stored = result.with_format("numpy", dtype=np.float16)[:]["attention_map"]  # the numpy format defaults to float32
    assert stored.dtype == np.float16 and stored.shape == (5, 6, 6)
    # reference: the method on the decoded images, 4x4 -> 6x6 bilinear (align_corners=False), min-max
    raw = build_method("dino", detector_checkpoints["vit"], image_size=32)(dataset["image"])
    grown = torch.nn.functional.interpolate(raw[:, None], size=(6, 6), mode="bilinear", align_corners=False)[:, 0]
    low, high = grown.amin((1, 2), keepdim=True), grown.amax((1, 2), keepdim=True)
    np.testing.assert_allclose(stored.astype(np.float32), ((grown - low) / (high - low)).numpy(), atol=1e-3)


def test_map_step_cache_hit_on_rerun_and_no_collision_between_splits(tmp_path, monkeypatch):
    image_dataset(6, seed=0).save_to_disk(tmp_path / "a")
    image_dataset(6, seed=1).save_to_disk(tmp_path / "b")
    first = datasets.load_from_disk(str(tmp_path / "a"))
    mapped = add_attention_maps(first, "spectral_residual", grid_size=4, batch_size=4)
    assert mapped.cache_files and mapped.cache_files[0]["filename"] != first.cache_files[0]["filename"]

    def must_not_run(self, inputs):
        raise AssertionError("the map function ran again: no cache hit")

    monkeypatch.setattr(METHODS["spectral_residual"], "compute", must_not_run)
    again = add_attention_maps(datasets.load_from_disk(str(tmp_path / "a")), "spectral_residual", grid_size=4, batch_size=4)
    assert again._fingerprint == mapped._fingerprint
    assert again.cache_files == mapped.cache_files
    np.testing.assert_array_equal(np.stack(again["attention_map"]), np.stack(mapped["attention_map"]))
    monkeypatch.undo()
    # other parameters, other fingerprint; another dataset: another cache file, not the first one's maps
    assert AttentionMapStep("spectral_residual", blur_sigma=2.0).fingerprint != AttentionMapStep("spectral_residual").fingerprint
    assert AttentionMapStep("spectral_residual", image_size=64).fingerprint == AttentionMapStep("spectral_residual").fingerprint
    other = add_attention_maps(datasets.load_from_disk(str(tmp_path / "b")), "spectral_residual", grid_size=4, batch_size=4)
    assert not np.array_equal(np.stack(other["attention_map"]), np.stack(mapped["attention_map"]))


def test_map_step_two_processes_on_cpu(detector_checkpoints, tmp_path):
    image_dataset(6, seed=2).save_to_disk(tmp_path / "one")
    image_dataset(6, seed=2).save_to_disk(tmp_path / "two")  # its own cache folder: no hit from the first run
    one = add_attention_maps(datasets.load_from_disk(str(tmp_path / "one")), "tokencut", detector_checkpoints["dinov2_registers"], grid_size=4, batch_size=2,
                             image_size=32, output="eigenvector")
    two = add_attention_maps(datasets.load_from_disk(str(tmp_path / "two")), "tokencut", detector_checkpoints["dinov2_registers"], grid_size=4, batch_size=2,
                             image_size=32, output="eigenvector", num_proc=2)
    assert len(two.cache_files) == 2  # one shard per process
    np.testing.assert_allclose(np.stack(two["attention_map"]), np.stack(one["attention_map"]), atol=2e-3)


def test_map_step_direct_use_with_rank_only(detector_checkpoints):
    dataset = image_dataset(3)
    step = AttentionMapStep("gradcam", detector_checkpoints["resnet"], grid_size=7, image_size=64)
    threads = torch.get_num_threads()
    result = dataset.map(step, batched=True, with_rank=True, new_fingerprint=step.fingerprint_for(dataset),
                         features=step.output_features(dataset.features))
    maps = np.stack(result.with_format("numpy")["attention_map"])
    assert maps.shape == (3, 7, 7) and maps.min() == 0 and maps.max() == 1  # min-max normalised
    assert torch.get_num_threads() == threads  # only forked workers go single-threaded


def test_map_step_errors(detector_checkpoints):
    with pytest.raises(ValueError, match="cannot read the image in row 3"):
        add_attention_maps(image_dataset(5, broken_row=3), "spectral_residual", batch_size=2)
    with pytest.raises(ValueError, match=r"column 'picture' not in the dataset; its columns are \['image', 'label'\]"):
        add_attention_maps(image_dataset(2), "spectral_residual", image_column="picture")
    with pytest.raises(ValueError, match="method 'tokencut' needs a model.*facebook/dino-vits16"):
        add_attention_maps(image_dataset(2), "tokencut")
    with pytest.raises(ValueError, match="uses no model"):
        AttentionMapStep("spectral_residual", detector_checkpoints["vit"])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigma'\]"):
        AttentionMapStep("spectral_residual", sigma=2)
    with pytest.raises(ValueError, match="unknown object-discovery method 'saliency'"):
        AttentionMapStep("saliency")
    with pytest.raises(ValueError, match="'resnet' checkpoint; dino/tokencut need one of"):
        build_method("dino", detector_checkpoints["resnet"])
    with pytest.raises(ValueError, match="gradcam needs a supervised ResNet"):
        build_method("gradcam", detector_checkpoints["vit"])


@pytest.mark.parametrize("normalize", [True, False])
def test_map_step_refuses_a_non_finite_map_naming_its_row(monkeypatch, normalize):
    # after computing, before the normalisation that would flatten a NaN map into a constant one (weight 1); the
    # model's forward no longer checks (a host read of a device value every step)
    compute = METHODS["spectral_residual"].compute

    def broken(self, inputs):
        maps = compute(self, inputs)
        maps[-1, 0, 0] = float("nan")  # the last image of each batch
        return maps

    monkeypatch.setattr(METHODS["spectral_residual"], "compute", broken)
    with pytest.raises(ValueError, match="row 3: attention_map contains NaN or inf values"):
        add_attention_maps(image_dataset(5), "spectral_residual", grid_size=4, batch_size=4, normalize=normalize)
    # without the normalisation a raw value beyond float16's range is stored as inf: refused as well
    monkeypatch.setattr(METHODS["spectral_residual"], "compute", lambda self, inputs: compute(self, inputs) + 7e4)
    if normalize:
        add_attention_maps(image_dataset(2), "spectral_residual", grid_size=4, normalize=True)
    else:
        with pytest.raises(ValueError, match="row 0: attention_map contains NaN or inf values"):
            add_attention_maps(image_dataset(2), "spectral_residual", grid_size=4, normalize=False)


# -------------------------------------------------------------------------------------- CLI, pictures


def test_cli_on_an_image_folder_writes_dataset_and_picture(tmp_path):
    folder = tmp_path / "photos" / "cats"
    folder.mkdir(parents=True)
    for i, (mode, size) in enumerate([("RGB", (30, 20)), ("L", (16, 16)), ("RGBA", (8, 40))]):
        Image.new(mode, size).save(folder / f"{i}.png")
    cli_main(["--method", "spectral_residual", "--train_dir", str(tmp_path / "photos"), "--grid_size", "5",
              "--output_dir", str(tmp_path / "out"), "--save_pictures", "2"])
    saved = datasets.load_from_disk(str(tmp_path / "out"))
    assert saved["train"].features["attention_map"] == datasets.Array2D((5, 5), "float16")
    assert Image.open(tmp_path / "out" / "attention_maps.png").size == (3 * 128 + 8, 2 * 128 + 4)
    # a second run does not replace what the first one wrote unless asked
    before = sorted(os.listdir(tmp_path / "out"))
    with pytest.raises(ValueError, match="exists and is not empty.*--overwrite_output_dir"):
        cli_main(["--method", "spectral_residual", "--train_dir", str(tmp_path / "photos"), "--grid_size", "3",
                  "--output_dir", str(tmp_path / "out")])
    assert sorted(os.listdir(tmp_path / "out")) == before
    assert datasets.load_from_disk(str(tmp_path / "out"))["train"].features["attention_map"].shape == (5, 5)


def test_cli_default_dataset_is_the_synthetic_one(tmp_path):
    result = cli_main(["--method", "column", "--image_column", "object_mask", "--synthetic_num_train", "4",
                       "--synthetic_num_validation", "2", "--output_dir", str(tmp_path / "out")])
    assert set(result) == {"train", "validation", "validation_mixed_rand", "validation_only_fg"}
    split = result["train"].with_format("numpy")
    masks = np.stack([np.asarray(m) > 0 for m in result["train"]["object_mask"]])  # (4, 64, 64)
    reference = masks.reshape(4, 14, masks.shape[1] // 14, 14, -1).mean((2, 4)) if masks.shape[1] % 14 == 0 else None
    maps = np.stack(split["attention_map"]).astype(np.float32)
    assert maps.shape == (4, 14, 14) and maps.max() == 1.0
    # the map is high where the object is: mean map inside the object beats the mean outside
    upsampled = np.kron(maps, np.ones((1, 5, 5)))[:, :64, :64] if reference is None else None
    if reference is None:
        small = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((14, 14), Image.BOX)) / 255 for m in masks])
        assert np.corrcoef(small.ravel(), maps.ravel())[0, 1] > 0.9
    assert upsampled is None or upsampled.shape == (4, 64, 64)


def test_guidance_grid_png(tmp_path):
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0] = 5.0
    maps[1, 3, 3] = 1.0
    images = [np.zeros((10, 20, 3), np.uint8), torch.ones(3, 16, 16)]
    path = save_guidance_grid(images, maps, tmp_path / "sub" / "grid.png", temperature=0.5,
                              reconstructions=[torch.zeros(3, 8, 8), np.full((8, 8, 3), 255, np.uint8)], tile_size=32)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 32 + 4, 4 * 32 + 12, 3)
    hot, cold = colormap(np.array(1.0)), colormap(np.array(0.0))
    np.testing.assert_array_equal(grid[2, 36 + 2], hot)  # map tile, image 0, cell (0, 0): the maximum
    np.testing.assert_array_equal(grid[30, 36 + 30], cold)
    np.testing.assert_array_equal(grid[2, 72 + 2], hot)  # weight e^(1/tau): top of the weight scale
    np.testing.assert_array_equal(grid[36 + 30, 3 * 36 + 5], [255, 255, 255])  # white reconstruction
    np.testing.assert_array_equal(grid[36 + 5, 5], [255, 255, 255])  # float image of ones
    with pytest.raises(ValueError, match="float images must have shape"):
        save_guidance_grid([torch.ones(16, 16)], maps, tmp_path / "bad.png")
    # the model's own weights (e.g. foreground_only's 0/1) are drawn instead of exp(M_norm / tau)
    given = torch.ones(2, 16)
    given[1, 5] = 0.0  # cell (1, 1) of image 1 is zeroed out of the loss
    path = save_guidance_grid(images, maps, tmp_path / "given.png", weights=given, tile_size=32)
    grid = np.asarray(Image.open(path))
    np.testing.assert_array_equal(grid[36 + 8 + 2, 72 + 8 + 2], cold)  # the zero weight: bottom of the scale
    np.testing.assert_array_equal(grid[36 + 2, 72 + 2], hot)  # weight 1: top of the [0, 1] scale
    np.testing.assert_array_equal(grid[2, 72 + 2], hot)  # image 0: uniform ones, shown at the top as well

"""Reconstruction pictures of pre-training: what `reconstruct` returns, and the grid drawn from it."""

import numpy as np
import torch
from PIL import Image

from modeling_attg_mae.visualize import guidance_grid, reconstruct, reconstruction_grid, save_guidance_grid
from tests.conftest import GRID, IMAGE, PATCH, tiny_model

MEAN = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)


def examples(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=g)  # in [0, 1]
    return images, {"pixel_values": (images - MEAN) / STD, "attention_map": torch.rand(2, GRID, GRID, generator=g)}


def patches_of(images):  # (B, 3, H, W) -> (B, N, 3, p, p), row-major over the patch grid
    b = images.shape[0]
    return images.view(b, 3, GRID, PATCH, GRID, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, GRID * GRID, 3, PATCH,
                                                                                         PATCH)


def test_reconstruct_pastes_the_visible_patches_back_and_fills_the_masked_ones():
    model = tiny_model().train()
    truth, batch = examples()
    images, reconstructions, maps, weights = reconstruct(model, batch, MEAN, STD)
    assert model.training  # restored after drawing
    torch.testing.assert_close(images, truth, atol=1e-6, rtol=0)  # the normalisation is undone
    assert reconstructions.shape == (2, 3, IMAGE, IMAGE) and 0 <= reconstructions.min() <= reconstructions.max() <= 1
    assert torch.equal(maps, batch["attention_map"]) and weights.shape == (2, GRID * GRID)
    # which patches are masked: the same fixed noise as reconstruct draws (seed 0), MAE's rule (smallest kept)
    noise = torch.rand(2, GRID * GRID, generator=torch.Generator().manual_seed(0))
    kept = torch.zeros(2, GRID * GRID, dtype=torch.bool)
    kept.scatter_(1, noise.argsort(1)[:, : int(GRID * GRID * (1 - model.config.mask_ratio))], True)
    same = (patches_of(reconstructions) - patches_of(truth)).abs().flatten(2).amax(-1) < 1e-5  # (B, N)
    assert torch.equal(same, kept)  # visible patches are the image's own; masked ones the decoder's guess
    # the weights the loss used: attg weighs masked patches exp(M_norm / tau), the most attended e^(1/0.75)
    assert torch.allclose(weights.amax(1), torch.full((2,), float(np.exp(1 / 0.75))), rtol=1e-5)
    again = reconstruct(model, batch, MEAN, STD)[1]
    assert torch.equal(again, reconstructions)  # the same masks at every evaluation: pictures compare


def test_the_reconstruction_grid_is_what_save_guidance_grid_writes(tmp_path):
    model = tiny_model()
    _, batch = examples(seed=1)
    picture = reconstruction_grid(model, batch, MEAN, STD)
    assert isinstance(picture, Image.Image) and picture.size == (4 * 128 + 12, 2 * 128 + 4)
    images, reconstructions, maps, weights = reconstruct(model, batch, MEAN, STD)
    path = save_guidance_grid(images, maps, tmp_path / "a" / "grid.png", reconstructions=reconstructions,
                              weights=weights)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(picture))
    without = guidance_grid(images, maps, weights=weights, tile_size=16)
    assert without.size == (3 * 16 + 8, 2 * 16 + 4)

"""The demo app: its panels are pre-training's pictures (`visualize.py`), with and without gradio, and in a real
browser (headless Chromium through selenium, skipped with its reason where gradio, selenium or the browser is
missing)."""

import importlib.util
import io
import shutil
import sys
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_attg_mae.demo import PANELS, Demo, demo_samples
from modeling_attg_mae.evaluation.knn import knn_classify, nearest_neighbours
from modeling_attg_mae.visualize import guidance_grid, reconstruct, reconstruction_grid
from tests.conftest import GRID, PATCH

TILE, GAP = 128, 4


@pytest.fixture(scope="module")
def demo(checkpoint):
    return Demo(str(checkpoint), samples=demo_samples(num_train=8, num_validation=3))


def grid_tiles(grid: Image.Image, columns: int) -> list[np.ndarray]:
    """The tiles of the first row of a `guidance_grid` picture."""
    return [np.asarray(grid.crop((c * (TILE + GAP), 0, c * (TILE + GAP) + TILE, TILE))) for c in range(columns)]


def examples_of(demo, sample, map_source):
    return {"pixel_values": demo.pixel_values([sample.image]),
            "attention_map": demo.attention_map(sample.image, map_source, sample.mask)}


@pytest.mark.parametrize("map_source", ["spectral_residual", "self", "dataset_mask"])
def test_the_panels_are_the_tiles_of_the_reconstruction_picture(demo, map_source):
    sample = demo.samples[1]
    panels = demo.panels(sample.image, map_source, seed=0, mask=sample.mask)
    assert len(panels) == len(PANELS) and all(p.shape == (TILE, TILE, 3) and p.dtype == np.uint8 for p in panels)
    # pre-training's picture of the same image and map (its masks are drawn from seed 0)
    picture = reconstruction_grid(demo.model, examples_of(demo, sample, map_source), demo.mean, demo.std)
    image, attention, weights, reconstruction = grid_tiles(picture, 4)
    for panel, expected in zip((panels[0], panels[1], panels[2], panels[4]), (image, attention, weights, reconstruction)):
        np.testing.assert_array_equal(panel, expected)


def test_another_seed_draws_other_masks_as_reconstruct_does(demo):
    sample = demo.samples[0]
    panels = demo.panels(sample.image, "dataset_mask", seed=7, mask=sample.mask)
    images, reconstructions, maps, weights = reconstruct(demo.model, examples_of(demo, sample, "dataset_mask"),
                                                         demo.mean, demo.std, seed=7)
    expected = grid_tiles(guidance_grid(images, maps, reconstructions=reconstructions, weights=weights), 4)
    np.testing.assert_array_equal(panels[4], expected[3])
    assert not np.array_equal(panels[4], demo.panels(sample.image, "dataset_mask", seed=0, mask=sample.mask)[4])


def test_the_masked_input_greys_exactly_the_removed_patches(demo):
    sample = demo.samples[2]
    panels = demo.panels(sample.image, "spectral_residual", seed=3)
    # the masks of seed 3 by MAE's rule (the smallest noise kept), as in tests/test_visualize.py
    noise = torch.rand(1, GRID * GRID, generator=torch.Generator().manual_seed(3))
    kept = torch.zeros(GRID * GRID, dtype=torch.bool)
    kept[noise.argsort(1)[0, : int(GRID * GRID * (1 - demo.model.config.mask_ratio))]] = True
    image = (demo.pixel_values([sample.image]) * demo.std + demo.mean).clamp(0, 1)[0]  # (3, 32, 32)
    by_hand = image.clone()
    for cell in torch.nonzero(~kept)[:, 0].tolist():
        row, column = divmod(cell, GRID)
        by_hand[:, row * PATCH:(row + 1) * PATCH, column * PATCH:(column + 1) * PATCH] = 0.5
    array = (by_hand.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    expected = np.asarray(Image.fromarray(array).resize((TILE, TILE), Image.BICUBIC))
    np.testing.assert_array_equal(panels[3], expected)


def test_the_neighbours_are_the_most_similar_bank_images_and_the_vote_is_knn_classify(demo):
    sample = demo.samples[0]
    found, predicted = demo.neighbours(sample.image)
    query = demo.features([sample.image])
    cosine = torch.nn.functional.cosine_similarity(demo.bank_features, query)  # (M,), by hand
    order = cosine.argsort(descending=True)[: demo.num_neighbours]
    assert [demo.bank.index(s) for s, _ in found] == order.tolist()
    np.testing.assert_allclose([sim for _, sim in found], cosine[order].numpy(), rtol=1e-5, atol=1e-6)
    names = sorted(set(demo.bank_labels))
    labels = torch.tensor([names.index(label) for label in demo.bank_labels])
    ranked = knn_classify(demo.bank_features, labels, query, ks=(demo.num_neighbours,), num_ranked=1)
    assert predicted == names[int(ranked[demo.num_neighbours][0, 0])]
    with pytest.raises(ValueError, match="k=99"):
        nearest_neighbours(demo.bank_features, query, 99)


def test_a_map_source_that_cannot_be_drawn_is_refused_by_name(demo):
    assert demo.map_sources == ("spectral_residual", "self", "dataset_mask")  # no detector given
    with pytest.raises(ValueError, match="needs an image with an object mask"):
        demo.panels(demo.samples[0].image, "dataset_mask")
    with pytest.raises(ValueError, match="--detector"):
        demo.panels(demo.samples[0].image, "detector")


def test_the_detector_map_source_runs_the_dino_method_on_a_local_detector(checkpoint, detector_checkpoints):
    demo = Demo(str(checkpoint), detector=detector_checkpoints["vit"], samples=demo_samples(num_train=4,
                                                                                           num_validation=1))
    assert "detector" in demo.map_sources
    panels = demo.panels(demo.samples[0].image, "detector")
    assert all(p.shape == (TILE, TILE, 3) for p in panels)
    with pytest.raises(ValueError, match="not a local folder"):
        Demo(str(checkpoint), detector="facebook/dino-vits16", samples=demo_samples(num_train=4, num_validation=1))


def test_without_gradio_the_app_names_the_extra(monkeypatch, checkpoint, capsys):
    import app

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'attg-mae\[app\]'"):
        app.check_gradio()
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--checkpoint", str(checkpoint)])
    assert "attg-mae[app]" in str(exit_info.value.code)


def _browser_missing() -> str | None:
    for module in ("gradio", "selenium"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'attg-mae[app]')"
    if shutil.which("chromedriver") is None or not (shutil.which("chromium") or shutil.which("google-chrome")):
        return "no chromium + chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    return None


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_the_page_renders_the_five_panels_in_a_real_browser(demo, tmp_path):
    import app

    blocks = app.build_interface(demo)
    url = app.launch(blocks, block=False)
    try:
        seen = app.drive(url, sample=1, map_source="dataset_mask", screenshot=str(tmp_path / "page.png"))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
        served = [np.asarray(Image.open(io.BytesIO(opener.open(src, timeout=10).read())).convert("RGB"))
                  for src in seen["sources"]]
    finally:
        blocks.close()
    assert seen["sizes"] == [(TILE, TILE)] * 5
    sample = demo.samples[1]
    # what the browser shows is what Demo.panels computes for the sample, which is visualize.py's picture
    for shown, expected in zip(served, demo.panels(sample.image, "dataset_mask", seed=0, mask=sample.mask)):
        np.testing.assert_array_equal(shown, expected)
    assert "k-NN" in seen["knn"]
    assert Image.open(tmp_path / "page.png").size[0] > 5 * TILE

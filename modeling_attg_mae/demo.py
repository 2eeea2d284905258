"""The demo app's computations, without gradio: one image -> image | attention map | AttG weights | masked input |
reconstruction, and its nearest neighbours in a small bank.

`app.py` at the repository root is only the page around `Demo` (and a Hub Space's entry point). Everything here
reuses the package: the maps come from object discovery (`spectral_residual`; `dino` on the checkpoint's own
encoder, the self-bootstrapped maps of `pretraining/self_maps.py`; `dino` on a detector checkpoint; or the
sample's object mask), the pictures from `visualize.py` (`reconstruct`, `guidance_tiles`: the tiles of pre-training's
reconstruction pictures), the neighbours from `features.extract_features` and `evaluation/knn.py`.

Nothing reaches the network: the samples and the k-NN bank are the embedded synthetic set, drawn on the CPU in
well under a second, and the checkpoint is read with `local_files_only` unless `allow_download` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from .configuration_attg_mae import image_size_of
from .features import extract_features
from .modeling_attg_mae import AttGViTMAEForPreTraining, patch_grid

MapSource = Literal["spectral_residual", "self", "dataset_mask", "detector"]
MAP_SOURCES = ("spectral_residual", "self", "dataset_mask", "detector")
PANELS = ("image", "attention map", "AttG weights", "masked input", "reconstruction")
# the embedded synthetic set at its default 64 px: 4 classes, 8 bank images each, 8 samples to load
DEMO_DATA = {"num_train": 32, "num_validation": 8, "image_size": 64, "num_classes": 4, "seed": 0}


@dataclass
class Sample:
    """A demo image with its label name and its object mask (mode "L", None for an uploaded image)."""

    image: Image.Image
    label: str
    mask: Image.Image | None = None


def demo_samples(**overrides) -> tuple[list[Sample], list[Sample]]:
    """`(samples, bank)`: the synthetic set's validation and train splits (`DEMO_DATA`, `overrides` replace any
    field), decoded, with their object masks and label names."""
    from .data.images import decode_image
    from .data.synthetic import generate_synthetic_dataset

    data = generate_synthetic_dataset(**{**DEMO_DATA, **overrides})
    splits = []
    for split in ("validation", "train"):
        names = data[split].features["label"].names
        splits.append([Sample(decode_image(row["image"], i), names[row["label"]], decode_image(row["object_mask"], i))
                       for i, row in enumerate(data[split])])
    return splits[0], splits[1]


class Demo:
    """A checkpoint, its normalisation, the map sources, the samples and the k-NN bank.

    Args:
        checkpoint: an AttG-MAE pre-training checkpoint folder (or Hub id with `allow_download`).
        detector: optional ViT / DINO(v2) checkpoint for the "detector" map source (`dino` method).
        allow_download: let transformers fetch `checkpoint` / `detector` from the Hub; off by default.
        tile_size: side in pixels of every panel.
        num_neighbours: how many bank images `neighbours` returns.
    """

    def __init__(self, checkpoint: str, detector: str | None = None, allow_download: bool = False,
                 tile_size: int = 128, num_neighbours: int = 4, samples: tuple[list, list] | None = None):
        from .model_source import image_normalisation

        local = {} if allow_download else {"local_files_only": True}
        self.checkpoint, self.tile_size, self.num_neighbours = str(checkpoint), tile_size, num_neighbours
        self.model = AttGViTMAEForPreTraining.from_pretrained(self.checkpoint, **local).eval()
        self.image_size = image_size_of(self.model.config)
        self.image_mean, self.image_std = image_normalisation(self.checkpoint)
        self.mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        self.grid = patch_grid(self.model.config, torch.zeros(1, 3, self.image_size, self.image_size))  # (gh, gw)
        self.detector = None
        if detector is not None:
            from .object_discovery.dino import DinoAttention, load_vit_detector

            if not allow_download and not os.path.isdir(detector):
                raise ValueError(f"--detector {detector!r} is not a local folder; pass --allow_download to fetch it "
                                 "from the Hub")
            model = load_vit_detector(detector)
            self.detector = DinoAttention(model, image_size=image_size_of(model.config))
        self.samples, self.bank = samples if samples is not None else demo_samples()
        self.bank_labels = [sample.label for sample in self.bank]
        self.bank_features = self.features([sample.image for sample in self.bank])

    @property
    def map_sources(self) -> tuple[str, ...]:
        """The sources this demo can draw: "detector" only with a detector checkpoint."""
        return tuple(source for source in MAP_SOURCES if source != "detector" or self.detector is not None)

    def pixel_values(self, images) -> torch.Tensor:
        """Images -> `(B, 3, S, S)` normalised: the whole image resized (bicubic), as the detectors see it, so that
        every map covers exactly the pixels the model gets."""
        from .object_discovery.preprocessing import preprocess_images

        return preprocess_images(images, self.image_size, self.image_mean, self.image_std)

    def features(self, images) -> torch.Tensor:
        return extract_features(self.model, self.pixel_values(images), "cls")  # (B, D)

    def attention_map(self, image: Image.Image, map_source: MapSource, mask: Image.Image | None = None) -> torch.Tensor:
        """The map of `image` from `map_source` as a stored map column holds it: `(1, gh, gw)` float16, min-max
        normalised (`map_step.to_stored_grid`) on the model's patch grid."""
        from .object_discovery.map_step import to_stored_grid

        if map_source not in self.map_sources:
            extra = "" if map_source != "detector" else " (start the app with --detector to use one)"
            raise ValueError(f"map_source must be one of {self.map_sources}, got {map_source!r}{extra}")
        if map_source == "dataset_mask":
            if mask is None:
                raise ValueError("map_source 'dataset_mask' needs an image with an object mask: load a sample, "
                                 "or pick another map source for an uploaded image")
            from .data.images import mask_to_array

            maps = torch.from_numpy(mask_to_array(mask, 0) > 0).float()[None]  # (1, H, W)
        elif map_source == "spectral_residual":
            from .object_discovery.spectral_residual import SpectralResidual

            maps = SpectralResidual()([image])  # (1, 64, 64)
        else:
            method = self.detector if map_source == "detector" else self._self_method()
            maps = method.compute(method.preprocess([image]).to(method.device))  # (1, h, w)
        if self.grid[0] != self.grid[1]:
            raise ValueError(f"the demo draws square patch grids, the checkpoint has {self.grid}")
        return to_stored_grid(maps, self.grid[0])

    def _self_method(self):
        # the self-bootstrapped maps of pre-training (`self_maps.self_attention_maps`): the dino method on the
        # checkpoint's own encoder, masking off and patch order kept, on the whole image
        from .object_discovery.dino import DinoAttention

        return DinoAttention(self.model.vit, image_size=self.image_size, image_mean=self.image_mean,
                             image_std=self.image_std)

    def panels(self, image, map_source: MapSource = "spectral_residual", seed: int = 0,
               mask: Image.Image | None = None) -> tuple[np.ndarray, ...]:
        """image | attention map | AttG weights | masked input | reconstruction: five uint8 `(T, T, 3)` arrays
        (T = `tile_size`). The first three and the last are `visualize.guidance_tiles` of `visualize.reconstruct`
        (the tiles of pre-training's reconstruction pictures; with `seed=0` the same masks); the masked input is
        `visualize.masked_input` of the same mask."""
        from .data.images import to_rgb_image
        from .visualize import _image_tile, guidance_tiles, masked_input, reconstruct

        image = to_rgb_image(image)
        attention = self.attention_map(image, map_source, mask)
        examples = {"pixel_values": self.pixel_values([image]), "attention_map": attention}
        images, reconstructions, maps, weights, removed = reconstruct(self.model, examples, self.mean, self.std,
                                                                      seed=int(seed), return_mask=True)
        tiles = guidance_tiles(images, maps, reconstructions=reconstructions, weights=weights,
                               tile_size=self.tile_size)[0]
        tiles.insert(3, _image_tile(masked_input(images, removed)[0], self.tile_size))
        return tuple(np.asarray(tile) for tile in tiles)

    def neighbours(self, image) -> tuple[list[tuple[Sample, float]], str]:
        """The `num_neighbours` most similar bank images with their cosine similarities, best first, and the class
        DINO's weighted k-NN vote (`knn_classify`, k = `num_neighbours`) gives the image."""
        from .evaluation.knn import knn_classify, nearest_neighbours

        query = self.features([image])
        similarity, index = nearest_neighbours(self.bank_features, query, self.num_neighbours)
        names = sorted(set(self.bank_labels))
        labels = torch.tensor([names.index(label) for label in self.bank_labels])
        ranked = knn_classify(self.bank_features, labels, query, ks=(self.num_neighbours,), num_ranked=1)
        found = [(self.bank[int(i)], float(s)) for s, i in zip(similarity[0], index[0])]
        return found, names[int(ranked[self.num_neighbours][0, 0])]


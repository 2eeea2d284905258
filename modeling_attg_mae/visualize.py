"""Pictures of the guidance, like the paper's Figures 1 and 3: image | map | loss weights | reconstruction.

`guidance_grid` draws the grid in memory (a PIL image), `save_guidance_grid` writes it as a PNG, `reconstruct` runs
a model on a few examples to fill the last column, and `reconstruction_grid` does both for pre-training's pictures.
No matplotlib: the colormap is a piecewise-linear approximation of "inferno" in numpy.
"""

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .configuration_attg_mae import check_temperature
from .data.images import to_rgb_image
from .modeling_attg_mae import normalize_attention_map, patch_grid

# (position, RGB) anchors of the inferno colormap: dark = low, yellow = high
_INFERNO = np.array([
    [0.00, 0, 0, 4], [0.13, 27, 12, 65], [0.25, 74, 12, 107], [0.38, 120, 28, 109], [0.50, 165, 44, 96],
    [0.63, 207, 68, 70], [0.75, 237, 105, 37], [0.88, 251, 155, 6], [1.00, 252, 255, 164],
], dtype=np.float64)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] `(H, W)` -> RGB uint8 `(H, W, 3)` (values outside are clipped)."""
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    channels = [np.interp(values, _INFERNO[:, 0], _INFERNO[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def _image_tile(image, size: int) -> Image.Image:
    """PIL image, uint8 array `(H, W[, C])`, or float tensor/array `(3, H, W)` in [0, 1] -> RGB tile."""
    if isinstance(image, Image.Image):
        pil = to_rgb_image(image)  # the one RGB conversion: a 16-bit image is scaled, not clipped to white
    else:
        array = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
        if array.dtype != np.uint8:
            if array.ndim != 3 or array.shape[0] not in (1, 3):
                raise ValueError(f"float images must have shape (3, H, W) in [0, 1], got {array.shape}")
            array = (np.clip(array.transpose(1, 2, 0), 0.0, 1.0) * 255).round().astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3):
            raise ValueError(f"uint8 images must have shape (H, W) or (H, W, 3), got {array.shape}")
        pil = Image.fromarray(array).convert("RGB")
    return pil.resize((size, size), Image.BICUBIC)


def _as_maps(attention_maps, count: int) -> torch.Tensor:
    maps = torch.as_tensor(np.asarray(attention_maps, dtype=np.float32)) if not torch.is_tensor(attention_maps) \
        else attention_maps.detach().float().cpu()
    if maps.dim() == 2:  # (B, N) on a square grid
        side = math.isqrt(maps.shape[1])
        if side * side != maps.shape[1]:
            raise ValueError(f"flat attention maps need a square number of patches, got {maps.shape[1]}")
        maps = maps.view(-1, side, side)
    if maps.dim() != 3 or maps.shape[0] < count:
        raise ValueError(f"attention_maps must be (B, h, w) or (B, h*w) with B >= {count}, got {tuple(maps.shape)}")
    return maps[:count]


def _map_tile(values: np.ndarray, size: int) -> Image.Image:
    # nearest keeps the patch grid visible: each cell is one weight of the loss
    return Image.fromarray(colormap(values)).resize((size, size), Image.NEAREST)


def save_guidance_grid(images: Sequence, attention_maps, path: str | os.PathLike, **kwargs) -> str:
    """Write `guidance_grid(images, attention_maps, **kwargs)` as a PNG at `path` (parent folders are created);
    return the path written."""
    grid = guidance_grid(images, attention_maps, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    grid.save(path)
    return str(path)


def guidance_grid(
    images: Sequence,
    attention_maps,
    temperature: float = 0.75,
    reconstructions: Sequence | None = None,
    max_rows: int = 8,
    tile_size: int = 128,
    weights=None,
) -> Image.Image:
    """An RGB picture with one row per image: image | map | loss weights exp(M_norm / tau) | reconstruction.

    Args:
        images: PIL images, uint8 arrays `(H, W, 3)`, or float tensors `(3, H, W)` in [0, 1].
        attention_maps: `(B, h, w)` or `(B, h*w)` maps (any scale: min-max normalised per image here).
        temperature: tau of Eq. 1; the weights are shown on the fixed scale [1, e^(1/tau)].
        reconstructions: optional, one per image, same formats as `images`.
        max_rows: at most this many rows.
        weights: optional `(B, gh * gw)` / `(B, gh, gw)` loss weights as the model used them (`patch_weights`,
            for any guidance mode), shown on the batch's [min, max] scale instead of `exp(M_norm / tau)`.

    """
    rows = guidance_tiles(images, attention_maps, temperature, reconstructions, max_rows, tile_size, weights)
    columns, gap = len(rows[0]), 4
    canvas = Image.new("RGB", (columns * tile_size + (columns - 1) * gap, len(rows) * tile_size + (len(rows) - 1) * gap),
                       "white")
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            canvas.paste(tile, (column * (tile_size + gap), row * (tile_size + gap)))
    return canvas


def guidance_tiles(
    images: Sequence,
    attention_maps,
    temperature: float = 0.75,
    reconstructions: Sequence | None = None,
    max_rows: int = 8,
    tile_size: int = 128,
    weights=None,
) -> list[list[Image.Image]]:
    """The tiles of `guidance_grid` (same arguments), row by row: `[image, map, weights(, reconstruction)]` PIL
    images of `tile_size` squared each, for a caller that lays them out itself (the demo app)."""
    check_temperature(temperature)
    rows = min(len(images), max_rows)
    if rows == 0:
        raise ValueError("save_guidance_grid got no images")
    if reconstructions is not None and len(reconstructions) < rows:
        raise ValueError(f"got {len(reconstructions)} reconstructions for {rows} images")
    maps = _as_maps(attention_maps, rows)
    grid_h, grid_w = maps.shape[1:]
    norm = normalize_attention_map(maps.reshape(rows, -1)).view(rows, grid_h, grid_w).numpy()  # M_norm in [0, 1]
    if weights is None:  # Eq. 1 on a fixed scale [1, e^(1/tau)]
        low, top = 1.0, math.exp(1.0 / temperature)
        weights = np.exp(norm / temperature)
    else:
        weights = torch.as_tensor(weights, dtype=torch.float32)[:rows].reshape(rows, -1)
        side = math.isqrt(weights.shape[1])
        if side * side != weights.shape[1]:
            raise ValueError(f"weights must be on a square patch grid, got {weights.shape[1]} per image")
        weights = weights.reshape(rows, side, side).numpy()
        low, top = float(weights.min()), float(weights.max())
        top = top if top > low else low + 1.0  # uniform weights (vanilla MAE): all at the bottom of the scale
    tiles = []
    for row in range(rows):
        tiles.append([_image_tile(images[row], tile_size), _map_tile(norm[row], tile_size),
                      _map_tile((weights[row] - low) / (top - low), tile_size)])
        if reconstructions is not None:
            tiles[-1].append(_image_tile(reconstructions[row], tile_size))
    return tiles


def masked_input(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """What the encoder sees, as the MAE paper draws it: `images` `(K, 3, H, W)` in [0, 1] with the removed
    patches of `mask` `(K, gh * gw)` (1 = removed, on a square grid dividing H and W) painted grey `fill`."""
    count, _, height, width = images.shape
    side = math.isqrt(mask.shape[1])
    if side * side != mask.shape[1] or height % side or width % side:
        raise ValueError(f"mask of {mask.shape[1]} patches is not a square grid dividing {height}x{width}")
    removed = mask.float().view(count, 1, side, side)
    removed = removed.repeat_interleave(height // side, dim=2).repeat_interleave(width // side, dim=3)  # (K, 1, H, W)
    return images * (1 - removed) + fill * removed


def reconstruction_grid(model, examples: dict, mean: torch.Tensor, std: torch.Tensor) -> Image.Image:
    """`guidance_grid` of `examples` with the model's reconstructions and the loss weights the model used (any
    guidance mode, not a re-derivation from the map): pre-training's picture at each evaluation."""
    images, reconstructions, maps, weights = reconstruct(model, examples, mean, std)
    return guidance_grid(images, maps, reconstructions=reconstructions, weights=weights)


@torch.no_grad()
def reconstruct(model, examples: dict, mean: torch.Tensor, std: torch.Tensor, seed: int = 0, return_mask: bool = False):
    """Images and MAE-style reconstructions (visible patches pasted back) in [0, 1], maps and patch weights.

    Args:
        examples: `{"pixel_values": (K, 3, H, W)[, "attention_map": (K, h, w)]}`, normalised with `mean` / `std`.
        mean, std: `(1, 3, 1, 1)` tensors of the normalisation, undone for the pictures.

    Returns `(images, reconstructions, maps, patch_weights)`: `(K, 3, H, W)` in [0, 1] twice, the maps (zeros
    `(K, 1, 1)` without any) and the `(K, N)` loss weights. The masks are drawn from a fixed `seed` (0), so pictures
    of successive evaluations compare; with `return_mask` the `(K, N)` mask (1 = removed) comes fifth.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pixels = examples["pixel_values"].to(device)
    attention = examples.get("attention_map")
    generator = torch.Generator().manual_seed(seed)  # the same masks at every evaluation: pictures compare
    grid_h, grid_w = patch_grid(model.config, pixels)
    noise = torch.rand(pixels.shape[0], grid_h * grid_w, generator=generator).to(device)
    kwargs = {} if attention is None else {"attention_map": attention.to(device)}
    if model.config.attg_guidance == "input_masking":
        noise = None
    out = model(pixels, noise=noise, **kwargs)
    prediction = out.logits.float()
    patches = model.patchify(pixels.float())  # (B, N, p*p*C)
    if model.config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        prediction = prediction * (patches.var(-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(-1, keepdim=True)
    mask = out.mask.unsqueeze(-1)
    pasted = patches * (1 - mask) + prediction * mask
    reconstruction = model.unpatchify(pasted, pixels.shape[2:]).cpu()
    mean, std = mean.to(reconstruction), std.to(reconstruction)
    images = (pixels.cpu() * std + mean).clamp(0, 1)
    reconstruction = (reconstruction * std + mean).clamp(0, 1)
    if was_training:
        model.train()
    maps = attention.float() if attention is not None else torch.zeros(pixels.shape[0], 1, 1)
    weights = out.patch_weights.detach().float().cpu()
    if return_mask:
        return images, reconstruction, maps, weights, out.mask.detach().float().cpu()
    return images, reconstruction, maps, weights


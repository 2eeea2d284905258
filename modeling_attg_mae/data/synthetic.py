"""The embedded synthetic object-centric benchmark: objects of K classes on procedurally textured backgrounds.

Why it looks the way it does
----------------------------
AttG-MAE claims that weighting the reconstruction loss towards object patches gives features that describe the
object rather than the background. The data must therefore make the two differ:

* The **object carries the label**: class k is a shape (`SHAPES[k]`: disk, square, triangle, cross, ring, star,
  crescent, bar, frame, heart, tee, diamond), drawn solid with a 1-px dark outline. With
  `object_color="per_class"` (the default) its hue is also the class's (`k / K` on the hue circle, jittered by
  +-0.03); with `"random"` only the shape tells the class. Intra-class variation: area 10-25 % of the image
  (`object_area`), aspect ratio up to x1.2 (`object_aspect`), rotation +-15 deg (`max_rotation`; kept under
  22.5 deg so that a square never becomes a diamond), random mirror, random position (whole object inside the
  image), saturation / value jitter and a linear shading gradient.
* The **background is a shortcut**: each image is filled with one of `TEXTURE_FAMILIES` (stripes, checkerboard,
  dots, rings, blobs, binary noise, grid, zigzag, ...), two high-contrast colours of random hue, random period
  (`texture_period`, relative to the image size: 1/16 to 1/7 of it, i.e. 4-9 px at 64 px), phase and a small
  orientation jitter. In `train` and `validation` an image of class k uses family k with probability
  `background_correlation` (0.75) and one of the other K-1 families otherwise, so a model that encodes the
  background scores well on `validation` and drops on `validation_mixed_rand`. Families are chosen to stay
  distinct under horizontal flips (there is one diagonal family, with a random sign).
* The **background dominates a plain MAE's loss**: the textures are high-frequency and high-contrast, so with
  per-patch normalised targets (norm_pix_loss) every background patch is as expensive to reconstruct as an
  object patch, and there are 3-9 times more of them. This is what the guided loss is meant to rebalance.

Splits (like ImageNet-9's variants, the three validation splits share their objects image by image):

* `train`, `validation`: backgrounds correlated with the class as above.
* `validation_mixed_rand`: the objects of `validation` (same shape, colour, pose, mask, label) on a fresh
  background whose family is uniform over all K families, independent of the class.
* `validation_only_fg`: the objects of `validation` on a plain grey (128, 128, 128) background.

Columns: `image` (`datasets.Image`, RGB, `image_size` square), `label` (`datasets.ClassLabel`, shape names),
`object_mask` (`datasets.Image`, mode "L", 255 on the object's pixels, outline included, 0 elsewhere; the
ground-truth attention map) and `background` (`datasets.ClassLabel` of `TEXTURE_FAMILIES`, or `"plain"` in
`validation_only_fg`), the generator metadata with which the background/class correlation can be measured.

Determinism: every random number comes from `numpy.random.Generator(PCG64)` streams spawned from `seed`, and
images are rendered in fixed-size chunks, so a seed gives bit-identical images from run to run on a machine
(vectorised float32 `sin`/`tanh` may differ in the last bit across CPU instruction sets, which can flip a pixel
value by one). Bump `GENERATOR_VERSION` whenever the output changes: it is part of the cache key.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image

import datasets

GENERATOR_VERSION = 1

SHAPES = (
    "disk", "square", "triangle", "cross", "ring", "star", "crescent", "bar", "frame", "heart", "tee", "diamond",
)
TEXTURE_FAMILIES = (
    "horizontal_stripes", "vertical_stripes", "checkerboard", "dots", "rings", "blobs", "noise", "grid",
    "zigzag", "diagonal_stripes", "waves", "rays",
)
# class_cue="layout": the class is how the object is split into two random colours (in the object's own frame,
# so it turns and mirrors with it), on a silhouette drawn independently of the class
LAYOUTS = (
    "left_right", "top_bottom", "diagonal", "bullseye", "quadrants", "vertical_band", "horizontal_band", "plus",
    "corner", "ring",
)
# class_cue="texture": the class is a two-colour pixel texture filling the object (half of its pixels in each
# colour, on the pixel grid with a random phase, the same under a horizontal flip), on a silhouette drawn
# independently of the class
TEXTURES = ("rows", "columns", "checker", "diagonal", "blocks", "wide_rows", "wide_columns")
SILHOUETTES = ("disk", "square", "diamond")
PLAIN_BACKGROUND = "plain"
SPLITS = ("train", "validation", "validation_mixed_rand", "validation_only_fg")
ObjectColor = Literal["per_class", "random"]
ClassCue = Literal["shape", "hue", "layout", "texture"]
BackgroundPalette = Literal["muted", "vivid"]

_CHUNK = 256  # images rendered at once: bounds memory (~10 float32 arrays of (256, H, W)); part of determinism
_GREY = 128 / 255


# ----------------------------------------------------------------------------------------------------------
# Shapes: inside-tests in the object's unit frame (u to the right, v up), each shape within radius ~1.
# ----------------------------------------------------------------------------------------------------------
def _star(u, v):
    radius = np.sqrt(u * u + v * v)
    angle = np.arctan2(u, v)  # 0 at the top, so one point faces up
    tooth = np.abs(np.mod(angle * 5 / (2 * np.pi), 1.0) - 0.5) * 2  # 1 at a point, 0 between points
    return radius <= 0.42 + 0.58 * tooth


def _heart(u, v):
    u, v = u / 1.1, (v - 0.1) / 1.1
    return (u * u + v * v - 1) ** 3 - u * u * v**3 <= 0


_SHAPE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disk": lambda u, v: u * u + v * v <= 1.0,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": lambda u, v: (v >= -0.5) & (np.sqrt(3.0) * np.abs(u) + v <= 1.0),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
    "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.55**2),
    "star": _star,
    "crescent": lambda u, v: (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.75**2),
    "bar": lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 0.38),
    "frame": lambda u, v: (np.maximum(np.abs(u), np.abs(v)) <= 0.85) & (np.maximum(np.abs(u), np.abs(v)) >= 0.5),
    "heart": _heart,
    "tee": lambda u, v: ((np.abs(u) <= 0.9) & (v >= 0.4) & (v <= 0.9)) | ((np.abs(u) <= 0.25) & (np.abs(v) <= 0.9)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1.0,
}


# region "B" of each layout in the unit frame (the rest of the silhouette is region "A"); the two colours are drawn
# at random for each image and either may take either region, so only the partition tells the class
_LAYOUT_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "left_right": lambda u, v: u > 0,
    "top_bottom": lambda u, v: v > 0,
    "diagonal": lambda u, v: u + v > 0,
    "bullseye": lambda u, v: u * u + v * v < 0.45**2,
    "quadrants": lambda u, v: (u > 0) ^ (v > 0),
    "vertical_band": lambda u, v: np.abs(u) < 0.3,
    "horizontal_band": lambda u, v: np.abs(v) < 0.3,
    "plus": lambda u, v: (np.abs(u) < 0.22) | (np.abs(v) < 0.22),
    "corner": lambda u, v: (u > 0) & (v > 0),
    "ring": lambda u, v: (u * u + v * v > 0.35**2) & (u * u + v * v < 0.65**2),
}


# colour "B" of each texture at integer pixel coordinates (i: column, j: row, both shifted by the image's phase)
_TEXTURE_TESTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "rows": lambda i, j: j % 2 == 1,
    "columns": lambda i, j: i % 2 == 1,
    "checker": lambda i, j: (i + j) % 2 == 1,
    "diagonal": lambda i, j: ((i + j) // 2) % 2 == 1,
    "blocks": lambda i, j: (i // 2 + j // 2) % 2 == 1,
    "wide_rows": lambda i, j: (j // 2) % 2 == 1,
    "wide_columns": lambda i, j: (i // 2) % 2 == 1,
}


def _shape_geometry() -> dict[str, tuple[float, float]]:
    """(area, bounding radius) of every shape in its unit frame, measured on a fine grid once."""
    axis = (np.arange(600) + 0.5) / 600 * 3.0 - 1.5  # [-1.5, 1.5], cell area (3/600)^2
    u, v = np.meshgrid(axis, axis)
    geometry = {}
    for name, inside in _SHAPE_TESTS.items():
        mask = inside(u, v)
        geometry[name] = (float(mask.sum()) * (3.0 / 600) ** 2, float(np.sqrt(u[mask] ** 2 + v[mask] ** 2).max()))
    return geometry


_SHAPE_GEOMETRY = _shape_geometry()


# ----------------------------------------------------------------------------------------------------------
# Textures: each returns t in [0, 1] of shape (n, H, W), the mixing weight between the two background colours.
# ----------------------------------------------------------------------------------------------------------
def _crisp(signal, sharpness=4.0):
    """Squash a smooth signal into nearly binary (high-contrast) bands with soft 1-px edges."""
    return 0.5 + 0.5 * np.tanh(sharpness * signal)


def _texture(family: str, x, y, p: dict[str, np.ndarray], image_size: int):
    """x, y: (n, H, W) pixel-centre coordinates; p: per-image parameters, each (n, 1, 1)."""
    period, phase = p["period"], p["phase"]
    cos, sin = np.cos(p["angle"]), np.sin(p["angle"])
    xr, yr = x * cos + y * sin, -x * sin + y * cos  # orientation jitter of the whole pattern
    freq = 2 * np.pi / period
    if family == "horizontal_stripes":
        return _crisp(np.sin(freq * yr + phase))
    if family == "vertical_stripes":
        return _crisp(np.sin(freq * xr + phase))
    if family == "diagonal_stripes":
        return _crisp(np.sin(freq * (xr + p["sign"] * yr) / np.sqrt(2.0) + phase))
    if family == "checkerboard":
        return _crisp(np.sin(freq * xr + phase) * np.sin(freq * yr + p["phase2"]), 6.0)
    if family == "dots":
        return _crisp(np.cos(freq * xr + phase) + np.cos(freq * yr + p["phase2"]) - 0.8, 3.0)
    if family == "rings":
        radius = np.sqrt((x - p["cx"]) ** 2 + (y - p["cy"]) ** 2)
        return _crisp(np.sin(freq * radius + phase))
    if family == "rays":
        angle = np.arctan2(y - p["cy"], x - p["cx"])
        return _crisp(np.sin(p["rays"] * angle + phase))
    if family == "grid":
        line_x = np.abs(np.mod(xr / period + phase, 1.0) - 0.5)
        line_y = np.abs(np.mod(yr / period + p["phase2"], 1.0) - 0.5)
        return _crisp(np.maximum(line_x, line_y) - 0.38, 20.0)  # lines ~1/4 period wide
    if family == "zigzag":
        tri = np.abs(np.mod(xr / p["period2"], 1.0) - 0.5) * 2 - 0.5  # triangle wave in [-0.5, 0.5]
        return _crisp(np.sin(freq * (yr + p["amplitude"] * tri) + phase))
    if family == "waves":
        return _crisp(np.sin(freq * (yr + 0.5 * p["amplitude"] * np.sin(2 * np.pi * xr / p["period2"])) + phase))
    if family in ("blobs", "noise"):
        # a per-image grid of uniform values; "noise" reads it per block of 1-2 px (binary white noise),
        # "blobs" interpolates it bilinearly (smoothstep) between cells of about one period (value noise)
        values = p["values"]  # (n, G, G)
        rows = np.arange(values.shape[0])[:, None, None]
        if family == "noise":
            return (values[rows, (y // p["block"]).astype(int), (x // p["block"]).astype(int)] > 0.5).astype(x.dtype)
        fx, fy = x / period + p["offset_x"], y / period + p["offset_y"]
        ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
        wx, wy = fx - ix, fy - iy
        wx, wy = wx * wx * (3 - 2 * wx), wy * wy * (3 - 2 * wy)
        top = values[rows, iy, ix] * (1 - wx) + values[rows, iy, ix + 1] * wx
        bottom = values[rows, iy + 1, ix] * (1 - wx) + values[rows, iy + 1, ix + 1] * wx
        return _crisp((top * (1 - wy) + bottom * wy - 0.5) * 6.0, 2.0)
    raise ValueError(f"unknown texture family {family!r}; expected one of {TEXTURE_FAMILIES}")


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, each input (n,), output (n, 3) in [0, 1]."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([
        np.stack([v, t, p], -1), np.stack([q, v, p], -1), np.stack([p, v, t], -1),
        np.stack([p, q, v], -1), np.stack([t, p, v], -1), np.stack([v, p, q], -1),
    ])  # (6, n, 3)
    return table[i, np.arange(len(h))]


# ----------------------------------------------------------------------------------------------------------
# Parameters: every random draw of a split happens here, vectorised over the split, before any rendering.
# ----------------------------------------------------------------------------------------------------------
def _object_parameters(rng, labels, image_size, num_classes, object_area, object_aspect, max_rotation,
                       object_color, class_cue="shape"):
    n = len(labels)
    if class_cue == "shape":
        shapes = labels  # index into SHAPES
    else:  # the silhouette is drawn independently of the class (a stream of its own: the shape draws stay as they are)
        silhouette_rng = np.random.Generator(np.random.PCG64(rng.integers(0, 2**63 - 1)))
        shapes = np.array([SHAPES.index(name) for name in SILHOUETTES])[silhouette_rng.integers(0, len(SILHOUETTES), n)]
    unit_area = np.array([_SHAPE_GEOMETRY[name][0] for name in SHAPES])[shapes]
    unit_radius = np.array([_SHAPE_GEOMETRY[name][1] for name in SHAPES])[shapes]
    area = rng.uniform(*object_area, n) * image_size**2  # pixels
    aspect = np.exp(rng.uniform(-np.log(object_aspect), np.log(object_aspect), n))
    scale = np.sqrt(area / unit_area)
    scale_x, scale_y = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    # keep the whole object (and its outline) inside: the bounding circle's radius in pixels, +1
    extent = np.minimum(unit_radius * np.maximum(scale_x, scale_y) + 1.0, image_size / 2)
    cx = extent + rng.uniform(0, 1, n) * (image_size - 2 * extent)
    cy = extent + rng.uniform(0, 1, n) * (image_size - 2 * extent)
    rotation = np.deg2rad(rng.uniform(-max_rotation, max_rotation, n))
    mirror = np.where(rng.uniform(0, 1, n) < 0.5, -1.0, 1.0)
    if object_color == "per_class":
        hue = np.mod(labels / num_classes + rng.uniform(-0.03, 0.03, n), 1.0)
    else:
        hue = rng.uniform(0, 1, n)
    color = _hsv_to_rgb(hue, rng.uniform(0.65, 1.0, n), rng.uniform(0.7, 1.0, n))
    shade_angle = rng.uniform(0, 2 * np.pi, n)
    shade = rng.uniform(0.0, 0.3, n)
    obj = dict(cx=cx, cy=cy, scale_x=scale_x, scale_y=scale_y, rotation=rotation, mirror=mirror, color=color,
               shade_x=shade * np.cos(shade_angle), shade_y=shade * np.sin(shade_angle), radius=extent, shape=shapes)
    if class_cue in ("layout", "texture"):
        # the second colour: a hue at least a quarter turn away, so that the two regions always differ
        hue2 = np.mod(hue + silhouette_rng.uniform(0.25, 0.75, n), 1.0)
        obj["color2"] = _hsv_to_rgb(hue2, silhouette_rng.uniform(0.65, 1.0, n), silhouette_rng.uniform(0.7, 1.0, n))
        obj[class_cue] = labels
        if class_cue == "texture":  # the texture's phase on the pixel grid
            obj["phase_x"], obj["phase_y"] = silhouette_rng.integers(0, 4, n), silhouette_rng.integers(0, 4, n)
    return obj


def _background_parameters(rng, families, image_size, texture_period, num_families, palette="muted"):
    n = len(families)
    period = np.maximum(3.0, rng.uniform(*texture_period, n) * image_size)
    if palette == "muted":
        bright = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.1, 0.8, n), rng.uniform(0.8, 1.0, n))
        dark = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.1, 0.9, n), rng.uniform(0.0, 0.3, n))
    else:  # vivid: both colours saturated like an object's, one of them darker (the texture keeps its contrast)
        bright = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.65, 1.0, n), rng.uniform(0.7, 1.0, n))
        dark = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.65, 1.0, n), rng.uniform(0.35, 0.55, n))
    swap = rng.uniform(0, 1, n) < 0.5
    color_a, color_b = np.where(swap[:, None], dark, bright), np.where(swap[:, None], bright, dark)
    return dict(
        family=families,
        period=period,
        phase=rng.uniform(0, 2 * np.pi, n),
        phase2=rng.uniform(0, 2 * np.pi, n),
        angle=np.deg2rad(rng.uniform(-10, 10, n)),
        sign=np.where(rng.uniform(0, 1, n) < 0.5, -1.0, 1.0),
        cx=rng.uniform(-0.5, 1.5, n) * image_size,
        cy=rng.uniform(-0.5, 1.5, n) * image_size,
        rays=rng.integers(5, 12, n).astype(float),
        period2=period * rng.uniform(1.5, 3.0, n),
        amplitude=period * rng.uniform(0.5, 1.0, n),
        block=rng.integers(1, 3, n).astype(float),
        offset_x=rng.uniform(0, 1, n),
        offset_y=rng.uniform(0, 1, n),
        # the uniform grids of "blobs" / "noise" are drawn at render time from a per-image seed: (n, H, W)
        # values for every image of a split would cost more memory than all the images together
        grid_seed=rng.integers(0, 2**63 - 1, n),
        color_a=color_a,
        color_b=color_b,
    )


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------
def _object_frame(obj, x, y):
    """Every pixel's coordinates (u, v) in its image's object frame (unit radius, u to the right, v up)."""
    dx, dy = x - obj["cx"][:, None, None], y - obj["cy"][:, None, None]
    cos, sin = np.cos(obj["rotation"])[:, None, None], np.sin(obj["rotation"])[:, None, None]
    u = (dx * cos + dy * sin) / obj["scale_x"][:, None, None] * obj["mirror"][:, None, None]
    v = -(-dx * sin + dy * cos) / obj["scale_y"][:, None, None]  # image rows grow downwards, v grows upwards
    return u, v


def _render_masks(obj, x, y):
    """Boolean object masks (n, H, W) and the 1-px outline inside them."""
    u, v = _object_frame(obj, x, y)
    mask = np.zeros(u.shape, dtype=bool)
    for k in np.unique(obj["shape"]):
        rows = np.flatnonzero(obj["shape"] == k)
        mask[rows] = _SHAPE_TESTS[SHAPES[k]](u[rows], v[rows])
    # outline = object pixels with a 4-neighbour outside the object (erosion by one pixel, image edge = outside)
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:] & mask
    return mask, mask & ~interior


_SCALAR_BACKGROUND_KEYS = ("period", "phase", "phase2", "angle", "sign", "cx", "cy", "rays", "period2", "amplitude",
                           "block", "offset_x", "offset_y")


def _render_backgrounds(bg, x, y, image_size, plain):
    n = len(bg["family"]) if not plain else x.shape[0]
    if plain:
        return np.full((n,) + x.shape[1:] + (3,), _GREY, dtype=np.float32)
    t = np.zeros((n,) + x.shape[1:], dtype=np.float32)
    for f, family in enumerate(TEXTURE_FAMILIES):
        rows = np.flatnonzero(bg["family"] == f)
        if len(rows):
            params = {key: bg[key][rows][:, None, None].astype(np.float32) for key in _SCALAR_BACKGROUND_KEYS}
            if family in ("blobs", "noise"):
                side = image_size + 2  # one cell per pixel for "noise"; >= H / period + 2 cells for "blobs"
                params["values"] = np.stack([
                    np.random.Generator(np.random.PCG64(int(s))).random((side, side), dtype=np.float32)
                    for s in bg["grid_seed"][rows]
                ])
            t[rows] = _texture(family, x[rows], y[rows], params, image_size)
    t = t[..., None]  # (n, H, W, 1)
    return bg["color_a"][:, None, None, :] * (1 - t) + bg["color_b"][:, None, None, :] * t


def _render_split(obj, labels, bg, image_size, num_classes, plain_background):
    """uint8 images (n, H, W, 3) and uint8 masks (n, H, W), rendered chunk by chunk."""
    n = len(labels)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    masks = np.empty((n, image_size, image_size), dtype=np.uint8)
    axis = np.arange(image_size, dtype=np.float32) + 0.5  # pixel centres
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        m = rows.stop - rows.start
        y = np.broadcast_to(axis[None, :, None], (m, image_size, image_size))
        x = np.broadcast_to(axis[None, None, :], (m, image_size, image_size))
        chunk_obj = {key: value[rows] for key, value in obj.items()}
        chunk_bg = None if plain_background else {key: value[rows] for key, value in bg.items()}
        mask, outline = _render_masks(chunk_obj, x, y)
        background = _render_backgrounds(chunk_bg, x, y, image_size, plain_background)  # (m, H, W, 3)
        # linear shading across the object, relative to its radius: same colour family, not a flat fill
        shading = 1.0 + (
            chunk_obj["shade_x"][:, None, None] * (x - chunk_obj["cx"][:, None, None])
            + chunk_obj["shade_y"][:, None, None] * (y - chunk_obj["cy"][:, None, None])
        ) / chunk_obj["radius"][:, None, None]
        color = np.broadcast_to(chunk_obj["color"][:, None, None, :], (m, image_size, image_size, 3))
        if "layout" in chunk_obj:
            u, v = _object_frame(chunk_obj, x, y)
            region = np.zeros(u.shape, dtype=bool)
            for k in np.unique(chunk_obj["layout"]):
                layout_rows = np.flatnonzero(chunk_obj["layout"] == k)
                region[layout_rows] = _LAYOUT_TESTS[LAYOUTS[k]](u[layout_rows], v[layout_rows])
            color = np.where(region[..., None], chunk_obj["color2"][:, None, None, :], color)
        if "texture" in chunk_obj:
            i = (x - 0.5).astype(np.int64) + chunk_obj["phase_x"][:, None, None]
            j = (y - 0.5).astype(np.int64) + chunk_obj["phase_y"][:, None, None]
            region = np.zeros(i.shape, dtype=bool)
            for k in np.unique(chunk_obj["texture"]):
                texture_rows = np.flatnonzero(chunk_obj["texture"] == k)
                region[texture_rows] = _TEXTURE_TESTS[TEXTURES[k]](i[texture_rows], j[texture_rows])
            color = np.where(region[..., None], chunk_obj["color2"][:, None, None, :], color)
        foreground = np.clip(color * shading[..., None], 0.0, 1.0)
        foreground = np.where(outline[..., None], np.float32(0.08), foreground)
        image = np.where(mask[..., None], foreground, background)
        images[rows] = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
        masks[rows] = mask.astype(np.uint8) * 255
    return images, masks


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    # compress_level 1: these textures barely compress anyway, and level 6 is ~3x slower for ~10% smaller files
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


# class_cue="hue": the class is the object's hue alone (k / K, jittered, as object_color="per_class"), on a
# silhouette drawn independently of the class; with background_palette="vivid" the backgrounds are as saturated
# as the objects, so that a colour statistic of the whole image does not find the object's hue among theirs
HUES = tuple(f"hue_{k}" for k in range(12))
_CUES = {"shape": SHAPES, "hue": HUES, "layout": LAYOUTS, "texture": TEXTURES}


def synthetic_features(num_classes: int, plain_background: bool = False,
                       class_cue: ClassCue = "shape") -> datasets.Features:
    """The `datasets.Features` of a split (shared by every split so that they concatenate)."""
    return datasets.Features({
        "image": datasets.Image(mode="RGB"),
        "label": datasets.ClassLabel(names=list(_CUES[class_cue][:num_classes])),
        "object_mask": datasets.Image(mode="L"),
        "background": datasets.ClassLabel(names=list(TEXTURE_FAMILIES[:num_classes]) + [PLAIN_BACKGROUND]),
    })


def _to_dataset(images, masks, labels, backgrounds, features, split):
    return datasets.Dataset.from_dict(
        {
            "image": [_png(image) for image in images],
            "label": labels.tolist(),
            "object_mask": [_png(mask) for mask in masks],
            "background": backgrounds.tolist(),
        },
        features=features,
        split=datasets.NamedSplit(split),
    )


def _correlated_families(rng, labels, num_classes, correlation):
    """Family k with probability `correlation`, else one of the other K-1 families uniformly."""
    own = rng.uniform(0, 1, len(labels)) < correlation
    other = (labels + rng.integers(1, num_classes, len(labels))) % num_classes  # never equal to the label
    return np.where(own, labels, other)


def _validate(num_train, num_validation, image_size, num_classes, background_correlation, object_area,
              object_aspect, max_rotation, texture_period, object_color, class_cue="shape",
              background_palette="muted"):
    if background_palette not in ("muted", "vivid"):
        raise ValueError(f"background_palette must be 'muted' or 'vivid', got {background_palette!r}")
    if class_cue not in _CUES:
        raise ValueError(f"class_cue must be one of {tuple(_CUES)}, got {class_cue!r}")
    # messages start with the argument's name: the command lines put their flag's name in its place
    if class_cue == "hue" and object_color != "per_class":
        raise ValueError(f"object_color must be 'per_class' when the class cue is 'hue' (the object's hue is the "
                         f"class), got {object_color!r}")
    if class_cue in ("layout", "texture") and object_color != "random":
        raise ValueError(f"object_color must be 'random' when the class cue is {class_cue!r} (every object is "
                         f"painted in two random hues; the class is how they split it), got {object_color!r}")
    cues = _CUES[class_cue]
    if not 2 <= num_classes <= len(cues):
        default = inspect.signature(generate_synthetic_dataset).parameters["num_classes"].default
        raise ValueError(f"num_classes must be between 2 and {len(cues)} (one {class_cue} per class: {cues}), "
                         f"got {num_classes}" + (" (the default: set it for this class cue)"
                                                 if num_classes == default else ""))
    for name, value in (("num_train", num_train), ("num_validation", num_validation)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(image_size, int) and image_size >= 16):
        raise ValueError(f"image_size must be an int >= 16 (smaller objects lose their shape), got {image_size!r}")
    if not 0.0 <= background_correlation <= 1.0:
        raise ValueError(f"background_correlation must be in [0, 1], got {background_correlation}")
    if not (0.0 < object_area[0] <= object_area[1] <= 0.5):
        raise ValueError(f"object_area must be (low, high) with 0 < low <= high <= 0.5 of the image, got {object_area}")
    if not object_aspect >= 1.0:
        raise ValueError(f"object_aspect must be >= 1 (the largest width/height stretch), got {object_aspect}")
    if not 0.0 <= max_rotation < 22.5:
        raise ValueError(f"max_rotation must be in [0, 22.5) degrees so that a square never turns into a diamond, "
                         f"got {max_rotation}")
    if not (0.0 < texture_period[0] <= texture_period[1] <= 1.0):
        raise ValueError(f"texture_period must be (low, high) fractions of image_size in (0, 1], got {texture_period}")
    if object_color not in ("per_class", "random"):
        raise ValueError(f"object_color must be 'per_class' or 'random', got {object_color!r}")


def generate_synthetic_dataset(
    num_train: int = 4000,
    num_validation: int = 1000,
    image_size: int = 64,
    num_classes: int = 10,
    seed: int = 0,
    background_correlation: float = 0.75,
    object_area: tuple[float, float] = (0.10, 0.25),
    object_aspect: float = 1.2,
    max_rotation: float = 15.0,
    texture_period: tuple[float, float] = (1 / 16, 1 / 7),
    object_color: ObjectColor = "per_class",
    class_cue: ClassCue = "shape",
    background_palette: BackgroundPalette = "muted",
) -> datasets.DatasetDict:
    """Render the synthetic benchmark (no caching); see the module docstring and `load_synthetic_dataset`."""
    object_area, texture_period = tuple(object_area), tuple(texture_period)
    _validate(num_train, num_validation, image_size, num_classes, background_correlation, object_area,
              object_aspect, max_rotation, texture_period, object_color, class_cue, background_palette)
    streams = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(seed).spawn(6)]
    train_rng, val_rng, train_bg_rng, val_bg_rng, mixed_bg_rng, family_rng = streams
    split_sizes = {"train": num_train, "validation": num_validation}
    object_kwargs = dict(image_size=image_size, num_classes=num_classes, object_area=object_area,
                         object_aspect=object_aspect, max_rotation=max_rotation, object_color=object_color,
                         class_cue=class_cue)
    result = {}
    for split, rng, bg_rng in (("train", train_rng, train_bg_rng), ("validation", val_rng, val_bg_rng)):
        labels = rng.integers(0, num_classes, split_sizes[split])
        obj = _object_parameters(rng, labels, **object_kwargs)
        families = _correlated_families(family_rng, labels, num_classes, background_correlation)
        bg = _background_parameters(bg_rng, families, image_size, texture_period, num_classes, background_palette)
        images, masks = _render_split(obj, labels, bg, image_size, num_classes, plain_background=False)
        result[split] = (images, masks, labels, families)
        if split == "validation":
            # same objects, new backgrounds: family independent of the class (uniform over the K families)
            mixed_families = family_rng.integers(0, num_classes, num_validation)
            mixed_bg = _background_parameters(mixed_bg_rng, mixed_families, image_size, texture_period, num_classes,
                                              background_palette)
            mixed, _ = _render_split(obj, labels, mixed_bg, image_size, num_classes, plain_background=False)
            result["validation_mixed_rand"] = (mixed, masks, labels, mixed_families)
            only_fg, _ = _render_split(obj, labels, None, image_size, num_classes, plain_background=True)
            result["validation_only_fg"] = (only_fg, masks, labels, np.full(num_validation, num_classes))
    features = synthetic_features(num_classes, class_cue=class_cue)
    return datasets.DatasetDict({
        split: _to_dataset(*result[split], features=features, split=split) for split in SPLITS
    })


def synthetic_parameters(**kwargs) -> dict:
    """The full, JSON-able parameter set (defaults filled in) that determines the generated data."""
    signature = inspect.signature(generate_synthetic_dataset)
    unknown = set(kwargs) - set(signature.parameters)
    if unknown:
        raise ValueError(f"unknown synthetic dataset argument(s) {sorted(unknown)}; "
                         f"expected some of {list(signature.parameters)}")
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    parameters = {key: list(value) if isinstance(value, tuple) else value for key, value in bound.arguments.items()}
    # added later: a dataset of the first version's parameters keeps the cache key it always had
    for name, first in (("class_cue", "shape"), ("background_palette", "muted")):
        if parameters[name] == first:
            del parameters[name]
    parameters["generator_version"] = GENERATOR_VERSION
    return parameters


def check_synthetic_parameters(**kwargs) -> None:
    """Raise ValueError for arguments `generate_synthetic_dataset` would refuse (unset ones take its defaults),
    without rendering anything: the command lines check their synthetic flags with it when they are parsed."""
    parameters = synthetic_parameters(**kwargs)
    _validate(**{name: tuple(value) if isinstance(value, list) else value for name, value in parameters.items()
                 if name not in ("seed", "generator_version")})


def load_synthetic_dataset(
    num_train: int = 4000,
    num_validation: int = 1000,
    image_size: int = 64,
    num_classes: int = 10,
    seed: int = 0,
    background_correlation: float = 0.75,
    object_area: tuple[float, float] = (0.10, 0.25),
    object_aspect: float = 1.2,
    max_rotation: float = 15.0,
    texture_period: tuple[float, float] = (1 / 16, 1 / 7),
    object_color: ObjectColor = "per_class",
    class_cue: ClassCue = "shape",
    background_palette: BackgroundPalette = "muted",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.DatasetDict:
    """The embedded synthetic object-centric benchmark (see the module docstring for its design).

    Args:
        num_train: images in `train`.
        num_validation: images in `validation` (and in each of `validation_mixed_rand`, `validation_only_fg`,
            which hold the same objects).
        image_size: side of the square RGB images, pixels.
        num_classes: K, between 2 and 12: class k is shape `SHAPES[k]` and its preferred background is
            `TEXTURE_FAMILIES[k]`.
        seed: everything is a function of it (bit-identical images for the same arguments).
        background_correlation: probability that an image of class k in train/validation has texture family k
            (otherwise one of the other K-1 families). 1/K makes the background uninformative.
        object_area: (low, high) object area as a fraction of the image, drawn uniformly.
        object_aspect: largest stretch of width against height (drawn log-uniformly in [1/a, a]).
        max_rotation: objects are rotated uniformly in +-max_rotation degrees (< 22.5).
        texture_period: (low, high) texture period as a fraction of `image_size` (at least 3 px).
        object_color: "per_class" (hue k/K, jittered) or "random" (only the shape tells the class).
        class_cue: "shape" (class k is the silhouette `SHAPES[k]`) or "layout" (class k is `LAYOUTS[k]`, the way
            two random hues split a silhouette drawn from `SILHOUETTES` independently of the class; needs
            `object_color="random"`, at most 10 classes), "texture" (class k is `TEXTURES[k]`, a two-colour pixel
            texture filling such a silhouette; `object_color="random"`, at most 7 classes) or "hue" (class k is
            the hue k / K alone, on such a silhouette; `object_color="per_class"`). With all but "shape" the maps
            (object masks) carry no label.
        background_palette: "muted" (one pale and one dark background colour, less saturated than the objects) or
            "vivid" (both as saturated as an object's, one darker): a colour statistic of the whole image then
            meets the background's hues as much as the object's.
        cache_dir: if given, the splits are saved there with `save_to_disk` in a folder keyed by a hash of all
            the arguments above and `GENERATOR_VERSION`, and loaded from it next time; a cached folder whose
            recorded parameters differ is never overwritten (an error is raised instead).

    Returns:
        `datasets.DatasetDict` with splits `train`, `validation`, `validation_mixed_rand`, `validation_only_fg`
        and columns `image` (RGB), `label` (ClassLabel of shape names), `object_mask` (mode "L", 0/255) and
        `background` (ClassLabel of texture family names + "plain").
    """
    kwargs = dict(num_train=num_train, num_validation=num_validation, image_size=image_size,
                  num_classes=num_classes, seed=seed, background_correlation=background_correlation,
                  object_area=object_area, object_aspect=object_aspect, max_rotation=max_rotation,
                  texture_period=texture_period, object_color=object_color, class_cue=class_cue,
                  background_palette=background_palette)
    if cache_dir is None:
        return generate_synthetic_dataset(**kwargs)
    parameters = synthetic_parameters(**kwargs)
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:16]
    folder = os.path.join(os.fspath(cache_dir), f"attg_mae_synthetic_{key}")
    record = os.path.join(folder, "synthetic_parameters.json")
    if os.path.isdir(folder):
        if not os.path.isfile(record):
            raise ValueError(f"cache folder {folder} exists but has no synthetic_parameters.json: it was not written "
                             "by load_synthetic_dataset; remove it or use another cache_dir")
        with open(record) as f:
            cached = json.load(f)
        if cached != parameters:
            raise ValueError(f"cache folder {folder} holds a synthetic dataset made with other parameters "
                             f"({cached}) than requested ({parameters}); refusing to overwrite it, remove it or "
                             "use another cache_dir")
        return datasets.load_from_disk(folder)
    dataset = generate_synthetic_dataset(**kwargs)
    os.makedirs(cache_dir, exist_ok=True)
    # write next to the final folder, then rename: a crash or a concurrent writer never leaves a half cache
    staging = tempfile.mkdtemp(prefix=f".attg_mae_synthetic_{key}.", dir=cache_dir)
    dataset.save_to_disk(staging)
    with open(os.path.join(staging, "synthetic_parameters.json"), "w") as f:
        json.dump(parameters, f, indent=2, sort_keys=True)
    try:
        os.rename(staging, folder)
    except OSError:  # another process finished first: keep its (identical) copy
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(folder)

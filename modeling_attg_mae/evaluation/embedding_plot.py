"""A picture of the feature space: a 2-D t-SNE of each eval split's features, coloured by class.

One panel per split (columns), one row per checkpoint. `validation` next to `validation_mixed_rand` shows at a
glance whether the features cluster by object (the classes stay apart on foreign backgrounds) or by background.

From the k-NN run (the features come from its feature cache):

    python run_knn.py --model_name_or_path outputs/attg --save_embedding_plot

Two (or more) checkpoints side by side, with run_knn's data arguments (default: the checkpoints' recorded
pre-training data, as run_knn does):

    python -m modeling_attg_mae.evaluation.embedding_plot --checkpoints outputs/mae outputs/attg \\
        --output embedding.png

Each PNG gets a `<name>_tsne.json` next to it with the 2-D coordinates, labels, image indices and the t-SNE
settings of every panel; `redraw_embedding_plot` redraws the PNG from it.

Choices, and why:

* t-SNE from scikit-learn (`sklearn.manifold.TSNE`, >= 1.5, where `n_iter` became `max_iter`): a maintained,
  tested Barnes-Hut implementation; t-SNE has enough subtle parts (perplexity calibration, early exaggeration,
  gradient gains) that a private copy would be a liability. It is an optional extra, `pip install
  attg-mae[plots]` (also in `testing`), because only this picture needs it and it brings scipy and joblib; a
  missing or too old scikit-learn is an ImportError when the flag is parsed, before any model is loaded or any
  feature is extracted. (openTSNE is faster on large sets, UMAP needs numba: neither earns a dependency at
  2000 points per panel.)
* Features are L2-normalised first: Euclidean distance between unit vectors is a monotone function of the
  cosine similarity the k-NN votes with, so the picture shows the geometry the k-NN numbers measure.
* PCA initialisation and a fixed seed (`random_state`): the same layout on every run, and a global arrangement
  that is more faithful than a random start. Both are set explicitly so a change of scikit-learn's defaults
  cannot move the picture.
* Perplexity is clipped to `(n - 1) / 3` for a small split: scikit-learn refuses a perplexity >= n, and its
  Barnes-Hut step looks at `3 * perplexity` neighbours, which must exist. The value used is recorded per panel.
* Each panel is its own t-SNE: positions and axes are not comparable across panels or rows (t-SNE axes have no
  units); what compares is whether the classes form separate clusters. Every row draws the same images of a
  split (the subsample depends only on the labels and the seed).
* Each split is subsampled to at most `max_points` images, stratified by class (proportional, every class at
  least one image) and seeded: Barnes-Hut costs about 20 s per 2000 points on one CPU core, and more dots than
  that only overplot.
* Drawn with PIL, as `modeling_attg_mae.visualize` draws the guidance grids: matplotlib would be a large new
  dependency for one scatter plot. Dots are drawn in a seeded random order, not class after class, so that no
  class is systematically hidden under another where clusters overlap.
* No TensorBoard image: the evaluation path has no TensorBoard writer (only pre-training logs there), and
  opening one for a single picture is not worth it; the PNG path is in the k-NN results JSON (`embedding_plot`).
"""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MIN_SKLEARN_VERSION = "1.5"
DEFAULT_MAX_POINTS = 2000
DEFAULT_PERPLEXITY = 30.0
DEFAULT_MAX_ITER = 1000  # scikit-learn's default; it refuses fewer than 250
DEFAULT_PANEL_SIZE = 360
# more legend entries than this are unreadable; the rest are counted in one line
MAX_LEGEND_ENTRIES = 24
COORDINATES_SCHEMA_VERSION = 1

# Tableau 10, then its light variants: distinct on white and for the common colour-vision deficiencies
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]


# ------------------------------------------------------------------------------------------------------------
# The optional dependency and the arguments
# ------------------------------------------------------------------------------------------------------------


def require_tsne() -> None:
    """Raise ImportError naming the fix when scikit-learn (the `plots` extra) is missing or older than 1.5."""
    from packaging.version import Version

    from .._dependencies import installed_version

    fix = "pip install 'attg-mae[plots]'"
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError as error:
        raise ImportError(f"the embedding plot needs scikit-learn (its t-SNE), which is not installed: {fix} "
                          f"(or pip install 'scikit-learn>={MIN_SKLEARN_VERSION}')") from error
    version = installed_version("scikit-learn")
    if version is not None and Version(version) < Version(MIN_SKLEARN_VERSION):
        raise ImportError(f"the embedding plot needs scikit-learn>={MIN_SKLEARN_VERSION} (TSNE's max_iter), but "
                          f"scikit-learn {version} is installed: {fix}")


def check_embedding_plot_arguments(max_points: int, perplexity: float) -> None:
    """The values every embedding plot needs, checked when the flags are parsed."""
    if max_points < 2:
        raise ValueError(f"--embedding_plot_max_points must be >= 2 (a t-SNE of fewer points shows nothing), "
                         f"got {max_points}")
    if not perplexity > 0:
        raise ValueError(f"--embedding_plot_perplexity must be > 0, got {perplexity}")


def check_plot_sizes(dataset, splits, label_column: str, max_points: int) -> None:
    """Every split against `max_points`, from the labels alone: before any feature is extracted.

    A subsample must keep one image of every class present, so `max_points` must be at least the number of
    classes of each split that is larger than it; a split of a single image has no t-SNE.
    """
    for split in splits:
        labels = np.asarray(dataset[split][label_column])
        if labels.size < 2:
            raise ValueError(f"split {split!r} has {labels.size} image(s): a t-SNE needs at least 2")
        classes = np.unique(labels).size
        if labels.size > max_points and max_points < classes:
            raise ValueError(f"--embedding_plot_max_points {max_points} is smaller than the {classes} classes of split "
                             f"{split!r}: the class-stratified subsample keeps one image of every class; pass at "
                             f"least {classes}")


# ------------------------------------------------------------------------------------------------------------
# Subsample and t-SNE
# ------------------------------------------------------------------------------------------------------------


def stratified_subsample(labels: torch.Tensor | np.ndarray, max_points: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most `max_points` images, every class in proportion and at least once.

    All images when there are no more than `max_points`. Otherwise class c gets `max_points * n_c / n` images,
    rounded by largest remainder (ties to the lower class id) so that the total is exactly `max_points`; a
    class rounded to zero takes one image from the currently largest allocation. The images of each class are
    drawn without replacement by a NumPy generator seeded with `seed`: the same labels and seed give the same
    indices.
    """
    labels = np.asarray(torch.as_tensor(labels).cpu())
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be 1-D integer class ids, got {labels.dtype} {labels.shape}")
    n = labels.size
    if n <= max_points:
        return torch.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    if max_points < classes.size:
        raise ValueError(f"max_points={max_points} is smaller than the {classes.size} classes present: a stratified "
                         "subsample keeps one image of every class")
    quota = max_points * counts / n
    allocation = np.floor(quota).astype(np.int64)
    # largest remainder; lexsort's last key is the primary one: remainder descending, then class order
    order = np.lexsort((np.arange(classes.size), -(quota - allocation)))
    allocation[order[: max_points - allocation.sum()]] += 1
    for empty in np.flatnonzero(allocation == 0):
        allocation[np.argmax(allocation)] -= 1  # the largest has >= 2 as max_points >= number of classes
        allocation[empty] = 1
    rng = np.random.default_rng(int(seed))
    chosen = [rng.choice(np.flatnonzero(labels == cls), size=int(k), replace=False) for cls, k in zip(classes, allocation)]
    return torch.from_numpy(np.sort(np.concatenate(chosen))).long()


def tsne_2d(features, seed: int, perplexity: float = DEFAULT_PERPLEXITY,
            max_iter: int = DEFAULT_MAX_ITER) -> tuple[np.ndarray, float]:
    """`(coordinates (n, 2) float32, perplexity used)`: t-SNE of the L2-normalised features `(n, D)`."""
    require_tsne()
    from sklearn.manifold import TSNE

    x = torch.nn.functional.normalize(torch.as_tensor(features).detach().float().cpu(), dim=1).numpy()
    n = x.shape[0]
    if x.ndim != 2 or n < 2:
        raise ValueError(f"t-SNE needs features of shape (n >= 2, D), got {tuple(x.shape)}")
    used = min(float(perplexity), (n - 1) / 3)  # scikit-learn needs perplexity < n; Barnes-Hut 3x neighbours
    tsne = TSNE(n_components=2, perplexity=used, init="pca", learning_rate="auto", max_iter=int(max_iter),
                random_state=int(seed), metric="euclidean")
    return tsne.fit_transform(x).astype(np.float32), used


# ------------------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------------------


def class_colours(num_classes: int) -> list[tuple[int, int, int]]:
    """One RGB colour per class id: Tableau's 20, then hues spaced by the golden angle (distinct, never white)."""
    colours = list(_PALETTE[:num_classes])
    for c in range(len(colours), num_classes):
        hue = (c * 0.618033988749895) % 1.0
        value = (0.85, 0.6)[c % 2]
        colours.append(tuple(round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.75, value)))
    return colours


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed bitmap font (the minimum-versions stack: 10.0)
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, cut from the left with "..." to fit `width` pixels (the end of a path is the part that names it)."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    for start in range(1, len(text)):
        if _text_size(draw, "..." + text[start:], font)[0] <= width:
            return "..." + text[start:]
    return "..."


def dot_radius(num_points: int) -> int:
    return 3 if num_points <= 500 else 2


def panel_pixels(coordinates: np.ndarray, box: tuple[int, int, int, int], radius: int) -> np.ndarray:
    """Pixel centres `(n, 2)` of 2-D coordinates in a panel box `(x0, y0, x1, y1)`: one scale for both axes (t-SNE
    distances are isotropic), the data centred in the box, y pointing up."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    x0, y0, x1, y1 = box
    pad = radius + 6
    low, high = coordinates.min(axis=0), coordinates.max(axis=0)
    span = float((high - low).max())
    scale = (min(x1 - x0, y1 - y0) - 2 * pad) / span if span > 0 else 0.0
    centre = (low + high) / 2
    px = (x0 + x1) / 2 + (coordinates[:, 0] - centre[0]) * scale
    py = (y0 + y1) / 2 - (coordinates[:, 1] - centre[1]) * scale
    return np.stack([px, py], axis=1).round().astype(np.int64)


def draw_embedding_plot(
    panels: list[dict],
    row_names: list[str],
    column_names: list[str],
    class_names: list[str],
    title: str = "",
    seed: int = 0,
    panel_size: int = DEFAULT_PANEL_SIZE,
) -> tuple[Image.Image, dict]:
    """Draw the grid; returns `(image, layout)`.

    Args:
        panels: dicts with `row`, `column` (grid position), `coordinates` `(n, 2)`, `labels` `(n,)` class ids,
            `num_images` (the split's size, for the panel title).
        row_names / column_names: checkpoint names (a header above each row) and split names (panel titles).
        class_names: one per class id; the colours are `class_colours(len(class_names))`.
        seed: of the drawing order of the dots.

    `layout` is `{"size": [width, height], "panel_size", "panels": [{"row", "column", "box": [x0, y0, x1, y1]}],
    "legend_box"}`. The width is `2 * margin + columns * (panel_size + gap) + legend width`: one more split
    widens the picture by exactly `panel_size + gap`.
    """
    rows, columns = len(row_names), len(column_names)
    if not panels or rows < 1 or columns < 1:
        raise ValueError("draw_embedding_plot needs at least one panel, one row name and one column name")
    colours = class_colours(len(class_names))
    margin, gap = 16, 16
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_font, header_font, text_font = _font(18), _font(16), _font(14)
    line = _text_size(scratch, "Ag", text_font)[1] + 6
    header = _text_size(scratch, "Ag", header_font)[1] + 8
    title_height = _text_size(scratch, "Ag", title_font)[1] + 12 if title else 0
    legend_labels = [str(name) for name in class_names[:MAX_LEGEND_ENTRIES]]
    if len(class_names) > MAX_LEGEND_ENTRIES:
        legend_labels[-1] = f"+ {len(class_names) - MAX_LEGEND_ENTRIES + 1} more classes"
    swatch = 12
    legend_text_width = min(220, max(_text_size(scratch, label, text_font)[0] for label in legend_labels))
    legend_width = swatch + 6 + legend_text_width
    grid_width = columns * (panel_size + gap)
    width = 2 * margin + grid_width + legend_width
    row_height = header + line + panel_size + gap
    top = margin + title_height
    legend_height = len(legend_labels) * (swatch + 8)
    height = top + max(rows * row_height - gap, header + line + legend_height) + margin

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((margin, margin), _fit(draw, title, title_font, width - 2 * margin), fill=(0, 0, 0), font=title_font)
    layout_panels = []
    for row, name in enumerate(row_names):
        y = top + row * row_height
        draw.text((margin, y), _fit(draw, str(name), header_font, grid_width - gap), fill=(0, 0, 0), font=header_font)
    for panel in panels:
        row, column = int(panel["row"]), int(panel["column"])
        x0 = margin + column * (panel_size + gap)
        y0 = top + row * row_height + header + line
        box = (x0, y0, x0 + panel_size, y0 + panel_size)
        coordinates, labels = np.asarray(panel["coordinates"]), np.asarray(panel["labels"], dtype=np.int64)
        shown = f"{labels.size} of {panel['num_images']}" if labels.size < panel["num_images"] else f"all {labels.size}"
        caption = f"{column_names[column]}  ({shown} images)"
        draw.text((x0, y0 - line), _fit(draw, caption, text_font, panel_size), fill=(40, 40, 40), font=text_font)
        draw.rectangle(box, outline=(190, 190, 190))
        radius = dot_radius(labels.size)
        centres = panel_pixels(coordinates, box, radius)
        for i in np.random.default_rng(int(seed)).permutation(labels.size):
            (cx, cy), colour = centres[i], colours[labels[i]]
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        layout_panels.append({"row": row, "column": column, "box": list(box)})
    legend_x, legend_y = margin + grid_width, top + header + line
    for i, label in enumerate(legend_labels):
        y = legend_y + i * (swatch + 8)
        more = len(class_names) > MAX_LEGEND_ENTRIES and i == len(legend_labels) - 1
        if not more:
            draw.rectangle((legend_x, y, legend_x + swatch, y + swatch), fill=colours[i])
        draw.text((legend_x + swatch + 6, y - 1), _fit(draw, label, text_font, legend_text_width), fill=(0, 0, 0),
                  font=text_font)
    layout = {"size": [width, height], "panel_size": panel_size, "panels": layout_panels,
              "legend_box": [legend_x, legend_y, legend_x + legend_width, legend_y + legend_height]}
    return image, layout


# ------------------------------------------------------------------------------------------------------------
# The picture and its coordinates file
# ------------------------------------------------------------------------------------------------------------


def coordinates_path(image_path: str | os.PathLike) -> Path:
    """`embedding.png` -> `embedding_tsne.json`, next to it."""
    path = Path(image_path)
    return path.with_name(path.stem + "_tsne.json")


def subsample_split(features: torch.Tensor, labels: torch.Tensor, max_points: int, seed: int) -> dict:
    """The images of one split the plot shows: `{"indices", "features", "labels", "num_images"}`."""
    indices = stratified_subsample(labels, max_points, seed)
    return {"indices": indices, "features": features[indices].cpu(), "labels": labels[indices].cpu(),
            "num_images": int(labels.shape[0])}


def save_embedding_plot(
    rows: list[tuple[str, dict[str, dict]]],
    path: str | os.PathLike,
    class_names: list[str],
    title: str = "",
    perplexity: float = DEFAULT_PERPLEXITY,
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    panel_size: int = DEFAULT_PANEL_SIZE,
) -> dict:
    """t-SNE every split of every row, draw the grid to `path` (PNG), write the coordinates next to it.

    Args:
        rows: `(checkpoint name, {split: subsample_split(...)})`, one per checkpoint; every row has the same splits.
        class_names: one per class id (the legend and the colours).

    Returns the record written to `coordinates_path(path)`, with `"image"` the PNG path.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the embedding plot is a PNG: give a path ending in .png, got {str(path)!r}")
    if not rows:
        raise ValueError("save_embedding_plot got no rows")
    splits = list(rows[0][1])
    for name, by_split in rows:
        if list(by_split) != splits:
            raise ValueError(f"row {name!r} has splits {list(by_split)}, the first row {splits}: rows must share splits")
    panels = []
    for row, (name, by_split) in enumerate(rows):
        for column, split in enumerate(splits):
            sample = by_split[split]
            labels = torch.as_tensor(sample["labels"])
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(class_names)):
                raise ValueError(f"split {split!r} has class ids in [{int(labels.min())}, {int(labels.max())}] but "
                                 f"{len(class_names)} class names: every id needs a name (and a colour)")
            coordinates, used = tsne_2d(sample["features"], seed, perplexity, max_iter)
            panels.append({
                "row": row, "column": column, "checkpoint": name, "split": split, "num_images": sample["num_images"],
                "perplexity": used, "indices": torch.as_tensor(sample["indices"]).tolist(),
                "labels": torch.as_tensor(sample["labels"]).tolist(), "coordinates": coordinates.tolist(),
            })
    from .._dependencies import installed_version

    record = {
        "schema_version": COORDINATES_SCHEMA_VERSION, "title": title, "checkpoints": [name for name, _ in rows],
        "splits": splits, "class_names": [str(c) for c in class_names],
        "tsne": {"implementation": f"sklearn.manifold.TSNE (scikit-learn {installed_version('scikit-learn')})",
                 "input": "L2-normalised features, Euclidean", "init": "pca", "learning_rate": "auto",
                 "perplexity": perplexity, "max_iter": max_iter, "seed": seed},
        "panel_size": panel_size, "panels": panels,
    }
    return _write(record, path)


def _write(record: dict, path: Path) -> dict:
    image, layout = draw_embedding_plot(
        record["panels"], record["checkpoints"], record["splits"], record["class_names"], record["title"],
        record["tsne"]["seed"], record["panel_size"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    boxes = {(p["row"], p["column"]): p["box"] for p in layout["panels"]}
    for panel in record["panels"]:
        panel["box"] = boxes[(panel["row"], panel["column"])]
    record = {**record, "image": str(path), "size": layout["size"], "legend_box": layout["legend_box"]}
    coordinates_path(path).write_text(json.dumps(record) + "\n", encoding="utf-8")
    return record


def redraw_embedding_plot(coordinates_file: str | os.PathLike, path: str | os.PathLike | None = None) -> dict:
    """Redraw the PNG from its `_tsne.json` without running t-SNE again: to `path` (default: the PNG the file names),
    with a `_tsne.json` next to it as for a new picture. Returns the record."""
    record = json.loads(Path(coordinates_file).read_text(encoding="utf-8"))
    if record.get("schema_version") != COORDINATES_SCHEMA_VERSION:
        raise ValueError(f"{coordinates_file} has schema_version {record.get('schema_version')!r}, this code reads "
                         f"{COORDINATES_SCHEMA_VERSION}")
    return _write(record, Path(path or record["image"]))


def main(argv=None) -> dict:
    """The comparison command (module docstring): one row per `--checkpoints` entry."""
    from .arguments import EmbeddingPlotArguments, EvalDataArguments
    from ..cli import parse_cli
    from .pipelines import plot_embeddings

    plot_args, data_args = parse_cli((EmbeddingPlotArguments, EvalDataArguments), argv)
    record = plot_embeddings(plot_args, data_args)
    if record:
        print(f"embedding plot: {record['image']}  coordinates: {coordinates_path(record['image'])}")
    return record


__all__ = [
    "DEFAULT_MAX_POINTS", "DEFAULT_PERPLEXITY", "check_embedding_plot_arguments", "check_plot_sizes", "class_colours",
    "coordinates_path", "draw_embedding_plot", "panel_pixels", "redraw_embedding_plot", "require_tsne",
    "save_embedding_plot", "stratified_subsample", "subsample_split", "tsne_2d",
]

if __name__ == "__main__":
    main()

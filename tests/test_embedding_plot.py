"""The embedding plot: stratified subsample, t-SNE, the PIL drawing, run_knn --save_embedding_plot and the
comparison command, and the errors (missing scikit-learn, bad values) before any feature is extracted."""

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from modeling_attg_mae.evaluation import embedding_plot, pipelines, session
from modeling_attg_mae.evaluation.arguments import (
    EmbeddingPlotArguments,
    EvalDataArguments,
    EvalModelArguments,
    EvalRunArguments,
    KNNArguments,
)
from modeling_attg_mae.evaluation.embedding_plot import (
    class_colours,
    draw_embedding_plot,
    panel_pixels,
    redraw_embedding_plot,
    stratified_subsample,
    tsne_2d,
)
from tests.conftest import EVAL_CHECKPOINT_OVERRIDES, save_tiny_checkpoint

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
PER_SPLIT = {"train": 6, "validation": 10, "validation_shifted": 10}  # images per class


def _dataset() -> datasets.DatasetDict:
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green", "blue"])})
    splits = {}
    for split, n in PER_SPLIT.items():
        labels = [c for c in range(3) for _ in range(n)]
        images = [Image.fromarray(np.clip(np.array(COLOURS[c]) + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8))
                  for c in labels]
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return datasets.DatasetDict(splits)


def _checkpoint(path: Path, seed: int) -> Path:
    return save_tiny_checkpoint(path, seed, num_hidden_layers=1, **EVAL_CHECKPOINT_OVERRIDES)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return _checkpoint(root / "mae", 0), _checkpoint(root / "attg", 1)


def _knn_args(checkpoint, tmp_path, **plot):
    return (EvalModelArguments(model_name_or_path=str(checkpoint)), EvalDataArguments(),
            EvalRunArguments(output_dir=str(tmp_path / "out"), feature_cache_dir=str(tmp_path / "cache"), progress=False,
                             batch_size=8, update_model_card=False),
            KNNArguments(ks=[3], **plot))


def _pixel_colours(image: Image.Image, panel: dict) -> list[tuple]:
    """The colour at the centre of every dot of a recorded panel."""
    radius = embedding_plot.dot_radius(len(panel["labels"]))
    centres = panel_pixels(np.array(panel["coordinates"]), tuple(panel["box"]), radius)
    return [image.getpixel((int(x), int(y))) for x, y in centres]


# ------------------------------------------------------------------------------------------------------------
# subsample, t-SNE, drawing
# ------------------------------------------------------------------------------------------------------------


def test_the_subsample_is_stratified_exact_and_deterministic():
    labels = torch.from_numpy(np.random.default_rng(1).permutation(np.repeat([0, 1, 2], [600, 300, 100])))
    chosen = stratified_subsample(labels, 100, seed=0)
    assert chosen.numel() == 100 and torch.equal(chosen, chosen.sort().values) and chosen.unique().numel() == 100
    assert torch.bincount(labels[chosen]).tolist() == [60, 30, 10]  # the split's proportions, exactly
    assert torch.equal(chosen, stratified_subsample(labels, 100, seed=0))
    assert not torch.equal(chosen, stratified_subsample(labels, 100, seed=1))
    # largest remainder: 7 * (5, 3, 2) / 10 = 3.5, 2.1, 1.4 -> 3 + 1, 2, 1
    small = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert torch.bincount(small[stratified_subsample(small, 7, 0)]).tolist() == [4, 2, 1]
    rare = torch.tensor([0] * 1000 + [1])  # rounded to 0 images: still shown once, the total still exact
    assert torch.bincount(rare[stratified_subsample(rare, 10, 0)]).tolist() == [9, 1]
    assert torch.equal(stratified_subsample(labels[:50], 100, 0), torch.arange(50))  # small split: every image
    with pytest.raises(ValueError, match="max_points=2 is smaller than the 3 classes"):
        stratified_subsample(labels, 2, 0)


def test_tsne_keeps_well_separated_clusters_apart_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = 6 * np.eye(3, 16, k=5)  # the clusters differ in dimensions 5-7 only: the first two are noise
    labels = np.repeat(np.arange(3), 40)
    features = centres[labels] + rng.normal(0, 0.5, (labels.size, 16))
    coordinates, used = tsne_2d(features, seed=0, perplexity=15, max_iter=250)
    assert coordinates.shape == (120, 2) and used == 15
    distances = np.linalg.norm(coordinates[:, None] - coordinates[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).mean() >= 0.99  # leave-one-out 1-NN in 2-D
    again, _ = tsne_2d(features, seed=0, perplexity=15, max_iter=250)
    assert np.array_equal(coordinates, again)
    # 10 points: perplexity 30 is clipped to (n - 1) / 3 instead of scikit-learn's refusal
    assert tsne_2d(features[:10], seed=0, max_iter=250)[1] == pytest.approx(3.0)


def _panels(columns: int, rows: int = 1):
    """Three well-apart dots per panel, one per class, in a different order in every panel."""
    panels = []
    for row in range(rows):
        for column in range(columns):
            labels = np.roll(np.arange(3), column + row)
            panels.append({"row": row, "column": column, "coordinates": [[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]],
                           "labels": labels.tolist(), "num_images": 3})
    return panels


def test_one_panel_per_split_and_dots_coloured_by_class():
    names = ["red", "green", "blue"]
    two, layout_two = draw_embedding_plot(_panels(2), ["ckpt"], ["validation", "validation_mixed_rand"], names)
    three, layout_three = draw_embedding_plot(_panels(3), ["ckpt"], ["a", "b", "c"], names)
    assert list(two.size) == layout_two["size"] and list(three.size) == layout_three["size"]
    step = layout_three["panels"][1]["box"][0] - layout_three["panels"][0]["box"][0]  # panel + gap
    assert three.size[0] - two.size[0] == step and step > layout_two["panel_size"]
    assert [(p["row"], p["column"]) for p in layout_three["panels"]] == [(0, 0), (0, 1), (0, 2)]
    for panel in layout_three["panels"]:
        x0, y0, x1, y1 = panel["box"]
        assert (x1 - x0, y1 - y0) == (layout_three["panel_size"],) * 2
        assert x1 <= layout_three["legend_box"][0]  # the legend is right of the panels
    colours = class_colours(3)
    for panel, drawn in zip(_panels(3), layout_three["panels"]):
        seen = _pixel_colours(three, {**panel, "box": drawn["box"]})
        assert seen == [colours[label] for label in panel["labels"]]
    # the legend shows each class's colour
    legend_x, legend_y = layout_three["legend_box"][:2]
    assert [three.getpixel((legend_x + 6, legend_y + 6 + i * 20)) for i in range(3)] == colours


def test_many_classes_get_distinct_colours_and_a_counted_legend():
    colours = class_colours(100)
    assert len(set(colours)) == 100 and (255, 255, 255) not in colours
    panel = {"row": 0, "column": 0, "coordinates": np.random.default_rng(0).normal(size=(100, 2)).tolist(),
             "labels": list(range(100)), "num_images": 100}
    image, layout = draw_embedding_plot([panel], ["ckpt"], ["validation"], [f"class {c}" for c in range(100)])
    assert layout["legend_box"][3] - layout["legend_box"][1] == embedding_plot.MAX_LEGEND_ENTRIES * 20
    assert image.size[1] >= layout["legend_box"][3]


# ------------------------------------------------------------------------------------------------------------
# run_knn and the comparison command
# ------------------------------------------------------------------------------------------------------------


def test_run_knn_writes_one_panel_per_eval_split(checkpoints, tmp_path):
    dataset = _dataset()
    model, data, run, knn = _knn_args(checkpoints[0], tmp_path, save_embedding_plot=True, embedding_plot_max_points=12,
                                      embedding_plot_seed=3)
    payload = pipelines.run_knn(model, data, run, knn, dataset=dataset)
    png = tmp_path / "out" / "embedding.png"
    assert payload["embedding_plot"] == str(png) and payload["embedding_coordinates"] == str(tmp_path / "out" / "embedding_tsne.json")
    assert json.loads((tmp_path / "out" / "knn_results.json").read_text())["embedding_plot"] == str(png)
    record = json.loads(Path(payload["embedding_coordinates"]).read_text())
    image = Image.open(png).convert("RGB")
    assert list(image.size) == record["size"]
    assert record["splits"] == ["validation", "validation_shifted"] and record["checkpoints"] == [str(checkpoints[0])]
    assert [(p["row"], p["column"], p["split"]) for p in record["panels"]] == [(0, 0, "validation"), (0, 1, "validation_shifted")]
    boxes = [p["box"] for p in record["panels"]]
    assert boxes[0][1] == boxes[1][1] and boxes[1][0] - boxes[0][2] > 0  # side by side, not overlapping
    colours = class_colours(3)
    for panel in record["panels"]:
        labels = torch.tensor(dataset[panel["split"]]["label"])
        assert panel["indices"] == stratified_subsample(labels, 12, seed=3).tolist()  # 4 of each class
        assert panel["labels"] == labels[panel["indices"]].tolist() and panel["num_images"] == 30
        assert panel["perplexity"] == pytest.approx(11 / 3)  # 12 points: 30 clipped
        assert np.array(panel["coordinates"]).shape == (12, 2)
        # a dot hidden under a later one shows that one's colour; most are visible and every one is a class colour
        seen = _pixel_colours(image, panel)
        assert sum(s == colours[label] for s, label in zip(seen, panel["labels"])) >= 9
        assert set(seen) <= set(colours)
    assert record["class_names"] == ["red", "green", "blue"] and record["tsne"]["init"] == "pca"
    # the coordinates file redraws the same picture
    redrawn = redraw_embedding_plot(payload["embedding_coordinates"], tmp_path / "again.png")
    assert np.array_equal(np.asarray(Image.open(redrawn["image"])), np.asarray(Image.open(png)))


def test_two_checkpoints_give_two_rows_of_the_same_images(checkpoints, tmp_path):
    args = EmbeddingPlotArguments(checkpoints=[str(c) for c in checkpoints], output=str(tmp_path / "cmp.png"),
                                  embedding_plot_max_points=9, feature_cache_dir=str(tmp_path / "cache"), progress=False)
    record = pipelines.plot_embeddings(args, EvalDataArguments(eval_splits=["validation", "validation_shifted"]),
                                       dataset=_dataset())
    assert record["checkpoints"] == [str(c) for c in checkpoints]
    assert [(p["row"], p["column"]) for p in record["panels"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    by_position = {(p["row"], p["column"]): p for p in record["panels"]}
    for column in (0, 1):
        top, bottom = by_position[(0, column)], by_position[(1, column)]
        assert top["indices"] == bottom["indices"]  # every row shows the same images
        assert bottom["box"][0] == top["box"][0] and bottom["box"][1] > top["box"][3]  # below it
        assert top["coordinates"] != bottom["coordinates"]  # two different encoders
    image = Image.open(tmp_path / "cmp.png")
    assert list(image.size) == record["size"] and record["size"][1] > by_position[(1, 0)]["box"][3]
    # the cache is the run_knn one: the second command extracts nothing
    model, data, run, knn = _knn_args(checkpoints[0], tmp_path)
    payload = pipelines.run_knn(model, EvalDataArguments(eval_splits=["validation"]), run, knn, dataset=_dataset())
    assert payload["cache_hits"]["validation"] is True and "embedding_plot" not in payload


def test_checkpoints_recorded_on_different_data_are_refused_before_loading(tmp_path):
    from modeling_attg_mae.data.source import write_data_source

    for name, seed in (("a", 0), ("b", 1)):  # no model files at all: the check comes before any load
        (tmp_path / name).mkdir()
        write_data_source(tmp_path / name, EvalDataArguments(synthetic_num_train=20, synthetic_seed=seed))
    args = EmbeddingPlotArguments(checkpoints=[str(tmp_path / "a"), str(tmp_path / "b")], output=str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="pre-trained on different data.*seed0.*seed1.*pass data flags"):
        pipelines.plot_embeddings(args, EvalDataArguments())


# ------------------------------------------------------------------------------------------------------------
# errors before any work
# ------------------------------------------------------------------------------------------------------------


def _no_feature_extraction(monkeypatch):
    def extracted(*args, **kwargs):
        raise AssertionError("features were extracted before the error")

    monkeypatch.setattr(session, "extract_split_features", extracted)


def test_missing_scikit_learn_is_named_when_the_flag_is_parsed(checkpoints, tmp_path, monkeypatch):
    import run_knn

    _no_feature_extraction(monkeypatch)
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    KNNArguments()  # without the flag, scikit-learn is not needed
    fix = r"pip install 'attg-mae\[plots\]'"
    with pytest.raises(ImportError, match=f"needs scikit-learn.*not installed: {fix}"):
        run_knn.main(["--model_name_or_path", str(checkpoints[0]), "--save_embedding_plot",
                      "--feature_cache_dir", str(tmp_path / "cache")])
    with pytest.raises(ImportError, match=fix):
        embedding_plot.main(["--checkpoints", str(checkpoints[0]), "--output", str(tmp_path / "e.png")])
    assert not (tmp_path / "cache").exists()


def test_too_old_scikit_learn_is_named(monkeypatch):
    from modeling_attg_mae import _dependencies

    real = _dependencies.installed_version
    monkeypatch.setattr(_dependencies, "installed_version", lambda n: "1.4.2" if n == "scikit-learn" else real(n))
    with pytest.raises(ImportError, match=r"scikit-learn>=1.5 \(TSNE's max_iter\), but scikit-learn 1.4.2 is installed"):
        KNNArguments(save_embedding_plot=True)


def test_bad_plot_values_are_refused_clearly(checkpoints, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="embedding_plot_max_points must be >= 2"):
        KNNArguments(save_embedding_plot=True, embedding_plot_max_points=1)
    with pytest.raises(ValueError, match="embedding_plot_perplexity must be > 0"):
        KNNArguments(save_embedding_plot=True, embedding_plot_perplexity=0)
    with pytest.raises(ValueError, match="--embedding_plot_max_points --embedding_plot_seed only apply with --save_embedding_plot"):
        KNNArguments(embedding_plot_max_points=500, embedding_plot_seed=1)
    with pytest.raises(ValueError, match="--checkpoints needs at least one"):
        EmbeddingPlotArguments()
    with pytest.raises(ValueError, match="path ending in .png, got 'plot.jpg'"):
        EmbeddingPlotArguments(checkpoints=["x"], output="plot.jpg")
    # fewer points than classes: refused from the labels, before any feature is extracted
    _no_feature_extraction(monkeypatch)
    model, data, run, knn = _knn_args(checkpoints[0], tmp_path, save_embedding_plot=True, embedding_plot_max_points=2)
    with pytest.raises(ValueError, match="max_points 2 is smaller than the 3 classes of split 'validation'.*at least 3"):
        pipelines.run_knn(model, data, run, knn, dataset=_dataset())

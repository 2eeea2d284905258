"""The maps CLI replaces its output folder as a whole: no stale splits of an earlier run, no half-written folder."""

import os

import datasets
import numpy as np
import pytest
from PIL import Image

from modeling_attg_mae.object_discovery.__main__ import main as cli_main


def _folder(root, count, seed):
    rng = np.random.default_rng(seed)
    (root / "a").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "a" / f"{i}.png")
    return str(root)


def _run(source, out, *extra):
    return cli_main(["--method", "spectral_residual", "--dataset_name", source, "--grid_size", "4",
                     "--output_dir", str(out), *extra])


@pytest.fixture
def two_sources(tmp_path):
    """A 3-split save_to_disk source (4 rows each) and an image folder of 2 images (train only)."""
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image()})
    splits = {name: datasets.Dataset.from_dict(
        {"image": [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]},
        features=features) for name in ("train", "validation", "validation_only_fg")}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "three")
    return str(tmp_path / "three"), _folder(tmp_path / "photos", 2, 1)


def test_overwrite_leaves_only_the_new_splits(two_sources, tmp_path):
    three, photos = two_sources
    out = tmp_path / "out"
    _run(three, out)
    assert set(datasets.load_from_disk(str(out))) == {"train", "validation", "validation_only_fg"}
    cli_main(["--method", "spectral_residual", "--train_dir", photos, "--grid_size", "4", "--output_dir", str(out),
              "--overwrite_output_dir"])
    assert sorted(os.listdir(out)) == ["dataset_dict.json", "train"]  # nothing of the first run left
    reloaded = datasets.load_from_disk(str(out))
    assert list(reloaded) == ["train"] and len(reloaded["train"]) == 2
    assert len(reloaded["train"]["attention_map"]) == 2
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.")] == []  # no staging folder left behind


def test_a_crash_while_saving_keeps_the_previous_output(two_sources, tmp_path, monkeypatch):
    three, photos = two_sources
    out = tmp_path / "out"
    _run(three, out)
    before = sorted(os.listdir(out))
    save = datasets.DatasetDict.save_to_disk

    def crash_half_way(self, path, **kwargs):
        save(datasets.DatasetDict({"train": self["train"]}), path, **kwargs)  # some files written ...
        raise KeyboardInterrupt  # ... then the process is interrupted

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        cli_main(["--method", "spectral_residual", "--train_dir", photos, "--grid_size", "4", "--output_dir", str(out),
                  "--overwrite_output_dir"])
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == before
    assert {k: len(v) for k, v in datasets.load_from_disk(str(out)).items()} == {
        "train": 4, "validation": 4, "validation_only_fg": 4}
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.")] == []

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
    assert sorted(os.listdir(out)) == ["attg_mae_maps.json", "dataset_dict.json", "train"]  # nothing of the first run left
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


# ------------------------------------------------------------------ --overwrite_output_dir replaces only our output
# (issue 20, item 5: onto the input image folder it used to delete the user's PNGs and notes)


def _user_folder(root):
    """A user's image folder with a note next to the images: nothing here may ever be deleted."""
    _folder(root, 3, 2)
    (root / "notes.txt").write_text("where these photos come from")
    return root


def _contents(root):
    return sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def no_data_work(monkeypatch):
    """Fails the test if the CLI loads or maps any data (the refusal must come first)."""
    from modeling_attg_mae.object_discovery import __main__ as maps_cli

    def must_not_run(*args, **kwargs):
        raise AssertionError("data work started before the output folder was refused")

    monkeypatch.setattr(maps_cli, "load_data_source", must_not_run)
    monkeypatch.setattr(datasets.Dataset, "map", must_not_run)


def test_overwrite_refuses_the_input_image_folder(tmp_path, no_data_work):
    photos = _user_folder(tmp_path / "photos")
    before = _contents(photos)
    with pytest.raises(ValueError, match=r"--output_dir .*photos is --train_dir .*photos or a folder above it"):
        cli_main(["--method", "spectral_residual", "--train_dir", str(photos), "--output_dir", str(photos),
                  "--overwrite_output_dir"])
    with pytest.raises(ValueError, match=r"is --train_dir .* or a folder above it"):  # the folder that holds it
        cli_main(["--method", "spectral_residual", "--train_dir", str(photos), "--output_dir", str(tmp_path),
                  "--overwrite_output_dir"])
    assert _contents(photos) == before


def test_overwrite_refuses_a_folder_that_is_not_an_earlier_maps_output(tmp_path, no_data_work):
    photos = _folder(tmp_path / "photos", 2, 1)
    theirs = _user_folder(tmp_path / "theirs")
    before = _contents(theirs)
    with pytest.raises(ValueError, match=r"--output_dir .*theirs holds something other than an earlier maps output "
                                         r"\(no attg_mae_maps\.json.*not replacing it even with --overwrite_output_dir"):
        cli_main(["--method", "spectral_residual", "--train_dir", photos, "--output_dir", str(theirs),
                  "--overwrite_output_dir"])
    assert _contents(theirs) == before


def test_overwrite_refuses_a_save_to_disk_dataset_the_cli_did_not_write(tmp_path, no_data_work):
    # a user's own dataset with an attention_map column looks like a maps output, but is not one
    theirs = tmp_path / "theirs"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"attention_map": [[[0.0]]]})}).save_to_disk(theirs)
    before = _contents(theirs)
    with pytest.raises(ValueError, match=r"holds something other than an earlier maps output"):
        _run(_folder(tmp_path / "photos", 2, 1), theirs, "--overwrite_output_dir")
    assert _contents(theirs) == before


def test_overwrite_refuses_an_earlier_output_the_user_added_files_to(two_sources, tmp_path, monkeypatch):
    three, photos = two_sources
    out = tmp_path / "out"
    _run(three, out)
    (out / "notes.txt").write_text("maps for the paper, keep")
    (out / "mine").mkdir()
    before = _contents(out)
    with pytest.raises(ValueError, match=r"holds something other than an earlier maps output \(mine, notes\.txt are "
                                         r"not files the maps CLI writes\)"):
        _run(photos, out, "--overwrite_output_dir")
    assert _contents(out) == before


def test_overwrite_refuses_a_file(tmp_path, no_data_work):
    (tmp_path / "maps").write_text("a file of the user's")
    with pytest.raises(ValueError, match=r"--output_dir .*maps is a file, not a folder"):
        _run(_folder(tmp_path / "photos", 2, 1), tmp_path / "maps", "--overwrite_output_dir")
    assert (tmp_path / "maps").read_text() == "a file of the user's"


# ------------------------------------------------------------ a corrupt file, a 16-bit image (issue 20, item 15)


def test_a_corrupt_file_in_an_image_folder_is_named_before_any_map_is_computed(tmp_path, monkeypatch):
    import io

    from modeling_attg_mae.object_discovery import map_step

    photos = tmp_path / "photos"
    _folder(photos, 3, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(buffer, format="JPEG")
    (photos / "a" / "broken.jpg").write_bytes(buffer.getvalue()[:300])  # header intact, data cut off

    def must_not_run(*args, **kwargs):
        raise AssertionError("maps were computed before the corrupt file was reported")

    monkeypatch.setattr(map_step, "add_attention_maps", must_not_run)
    monkeypatch.setattr(datasets.Dataset, "map", must_not_run)
    from modeling_attg_mae.object_discovery import __main__ as maps_cli

    monkeypatch.setattr(maps_cli, "add_attention_maps", must_not_run)
    with pytest.raises(ValueError, match=r"^--train_dir .*photos: cannot read the image in split 'train', row \d "
                                         r"\(file .*/a/broken\.jpg\)") as caught:
        cli_main(["--method", "spectral_residual", "--train_dir", str(photos), "--grid_size", "4",
                  "--output_dir", str(tmp_path / "out")])
    assert caught.value.__suppress_context__  # the message is the whole story: no datasets traceback above it
    assert not (tmp_path / "out").exists()


def test_the_picture_of_a_16_bit_image_is_scaled_not_white(tmp_path):
    photos = tmp_path / "photos" / "a"
    photos.mkdir(parents=True)
    values = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 250 + 500).astype(np.uint16)  # 500 .. 64250
    Image.fromarray(values).save(photos / "depth.png")
    assert Image.open(photos / "depth.png").mode in ("I;16", "I")  # a real 16-bit PNG
    cli_main(["--method", "spectral_residual", "--train_dir", str(tmp_path / "photos"), "--grid_size", "4",
              "--output_dir", str(tmp_path / "out"), "--save_pictures", "1"])
    picture = np.asarray(Image.open(tmp_path / "out" / "attention_maps.png").convert("RGB"), dtype=np.float64)
    tile = picture[:128, :128]  # the image's tile (128 px), then the map and the weights
    # a gradient from dark (500 / 65535 * 255 = 2) to bright (250), not convert("RGB")'s 255 everywhere
    assert tile.min() < 20 and tile.max() > 230 and abs(tile.mean() - 126) < 15

"""ArrowBatchRows: the training rows read a batch at a time through Arrow give the collator exactly what
`datasets` rows give it (the demo's numbers depend on it)."""

import numpy as np
import pytest
import torch

from modeling_attg_mae.data import (
    ArrowBatchRows,
    PretrainCollator,
    PretrainTransform,
    load_synthetic_dataset,
    training_rows,
    undecoded_images,
)
from modeling_attg_mae.object_discovery import add_attention_maps


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory):
    """The demo's training rows in miniature: undecoded images, a 16x16 float16 map column, row ids."""
    data = load_synthetic_dataset(num_train=40, num_validation=4, image_size=32,
                                  cache_dir=tmp_path_factory.mktemp("synthetic"))["train"]
    data = add_attention_maps(data, "column", image_column="object_mask", grid_size=16)
    data = undecoded_images(data, "image")
    return data.add_column("__index__", list(range(len(data))))


COLUMNS = ["image", "attention_map", "__index__"]  # what run() gives the collator


def test_rows_equal_the_datasets_rows(demo_rows):
    rows = ArrowBatchRows(demo_rows, COLUMNS)
    indices = [17, 3, 3, 39, 0, 22]  # unordered, repeated, both ends
    batch = rows.__getitems__(indices)
    assert len(rows) == len(demo_rows) and len(batch) == len(indices)
    for index, row in zip(indices, batch):
        expected = demo_rows[index]
        assert set(row) == set(COLUMNS)  # the object masks are not read (nor decoded) at all
        assert isinstance(row["attention_map"], np.ndarray) and row["attention_map"].dtype == np.float16
        np.testing.assert_array_equal(row["attention_map"].astype(np.float32),
                                      np.asarray(expected["attention_map"], dtype=np.float32))
        assert row["image"] == expected["image"] and row["__index__"] == expected["__index__"] == index
    single = rows[17]
    np.testing.assert_array_equal(single["attention_map"], batch[0]["attention_map"])


def test_the_collator_gives_identical_batches_through_either_path(demo_rows):
    collator = PretrainCollator(PretrainTransform(32, 4), seed=5)
    indices = [8, 1, 30, 12, 12, 25, 39, 0]
    through_arrow = collator(ArrowBatchRows(demo_rows, COLUMNS).__getitems__(indices))
    through_datasets = collator([demo_rows[i] for i in indices])
    assert through_arrow.keys() == through_datasets.keys()
    for key in through_arrow:
        assert torch.equal(through_arrow[key], through_datasets[key]), key


def test_a_dataloader_uses_the_batched_read(demo_rows, monkeypatch):
    rows = ArrowBatchRows(demo_rows, COLUMNS)
    calls = []
    read = ArrowBatchRows.__getitems__
    monkeypatch.setattr(ArrowBatchRows, "__getitems__", lambda self, indices: calls.append(list(indices)) or read(self, indices))
    loader = torch.utils.data.DataLoader(rows, batch_size=16, collate_fn=PretrainCollator(PretrainTransform(32, 4), seed=0))
    batches = list(loader)
    assert [len(c) for c in calls] == [16, 16, 8]  # one Arrow read per batch, not one per row
    assert batches[0]["attention_map"].shape == (16, 8, 8)  # cut to the 32 px / patch 4 grid


def test_training_rows_wraps_only_plain_map_style_datasets(demo_rows):
    wrapped = training_rows(demo_rows, [*COLUMNS, "not_here"])  # absent columns (a map column) are left out
    assert isinstance(wrapped, ArrowBatchRows) and set(wrapped[0]) == set(COLUMNS)
    streaming = demo_rows.to_iterable_dataset()
    assert training_rows(streaming, COLUMNS) is streaming  # no random access: left as it is
    formatted = demo_rows.with_format("torch")
    assert training_rows(formatted, COLUMNS) is formatted
    with pytest.raises(ValueError, match=r"column\(s\) \['nope'\] not in the dataset"):
        ArrowBatchRows(demo_rows, ["image", "nope"])
    with pytest.raises(ValueError, match="reads unformatted rows; the dataset has format 'torch'"):
        ArrowBatchRows(formatted)
    with pytest.raises(TypeError, match="wraps a datasets.Dataset, got list"):
        ArrowBatchRows([1, 2])

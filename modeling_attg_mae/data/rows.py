"""Training rows read a batch at a time through Arrow.

The DataLoader asks a map-style dataset for a whole batch of indices at once (`__getitems__`). `datasets` answers
by converting the batch's table to Python objects, so a stored map column (`Array2D`, e.g. 16 x 16 float16 per
row) becomes 128 x 256 Python floats that the collator turns back into one array: about two thirds of the
loader's per-batch time on the demo rows, and every other image column of the row (the synthetic object masks)
is decoded only to be dropped. `ArrowBatchRows` reads just the columns the collator uses, with one Arrow `take`,
and hands the fixed-shape array columns over as rows of one numpy array; the others come as stored (`to_pylist`:
an undecoded image's `{"bytes", "path"}`, as `undecoded_images` makes the image column, the row index). The values
the collator sees are the same: a float16 map arrives as the same float16 numbers and becomes the same float32.
"""

from __future__ import annotations

import torch

import datasets

_ARRAY_FEATURES = (datasets.Array2D, datasets.Array3D, datasets.Array4D, datasets.Array5D)


class ArrowBatchRows(torch.utils.data.Dataset):
    """A `datasets.Dataset` as a map-style torch dataset whose batches are read through Arrow in one call.

    Rows are dicts of `columns` (default: all) as stored: fixed-shape array columns (`Array2D` ... `Array5D`) as
    numpy arrays, the others as Python objects without feature decoding (an `Image` column gives `{"bytes",
    "path"}`, which `decode_image` reads).
    """

    def __init__(self, dataset: datasets.Dataset, columns: list[str] | None = None):
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(f"ArrowBatchRows wraps a datasets.Dataset, got {type(dataset).__name__}")
        if dataset.format["type"] is not None:
            raise ValueError(f"ArrowBatchRows reads unformatted rows; the dataset has format {dataset.format['type']!r}")
        missing = sorted(set(columns or ()) - set(dataset.column_names))
        if missing:
            raise ValueError(f"ArrowBatchRows: column(s) {missing} not in the dataset; it has {dataset.column_names}")
        self.dataset = dataset
        self._arrow = dataset.select_columns(columns).with_format("arrow") if columns else dataset.with_format("arrow")
        self._arrays = {name for name, feature in dataset.features.items() if isinstance(feature, _ARRAY_FEATURES)}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict]:
        table = self._arrow[list(indices)]
        columns = {}
        for name in table.column_names:
            column = table.column(name)
            if name in self._arrays:
                columns[name] = column.combine_chunks().to_numpy()  # (rows, *shape), one copy for the batch
            else:
                columns[name] = column.to_pylist()
        return [{name: values[i] for name, values in columns.items()} for i in range(table.num_rows)]


def training_rows(dataset, columns: list[str]):
    """What the Trainer iterates: `ArrowBatchRows` over the `columns` of a map-style `datasets.Dataset` (those it
    has: a map column may be absent), anything else unchanged (a streaming `IterableDataset` has no random access
    to batch, a formatted dataset asked for its own format)."""
    if isinstance(dataset, datasets.Dataset) and dataset.format["type"] is None:
        return ArrowBatchRows(dataset, [c for c in columns if c in dataset.column_names])
    return dataset


__all__ = ["ArrowBatchRows", "training_rows"]

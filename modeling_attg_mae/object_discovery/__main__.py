"""Precompute attention maps for a dataset and save (or push) it.

    python -m modeling_attg_mae.object_discovery --method tokencut --dataset_name imagenette --output_dir maps/
    python -m modeling_attg_mae.object_discovery --method dino --train_dir photos/ --output_dir maps/ --save_pictures 8
    python -m modeling_attg_mae.object_discovery --method spectral_residual --output_dir maps/   # synthetic data
    python -m modeling_attg_mae.object_discovery --method column --image_column object_mask --output_dir maps/

The data flags are the ones every command line shares (`modeling_attg_mae/data/arguments.py`): `--dataset_name` (a
Hub id, a Hub-layout folder or a save_to_disk folder), `--train_dir` [`--validation_dir`], or the synthetic data
(`--synthetic_*`, the default). The output folder is itself a save_to_disk folder: `run_pretrain.py --dataset_name
<output_dir>` pre-trains on it with its `attention_map` column, computing no map. `--overwrite_output_dir` replaces
only an earlier output of this CLI (recognised by its `attg_mae_maps.json`): never a data source, nor a folder with
anything else in it.

Several GPUs: `--num_proc <n_gpus>` (worker i runs on cuda:i). Method parameters: `--method_kwargs '{"head": "max"}'`.
All arguments can also come from a JSON file given as the only argument.
"""

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from ..cli import parse_cli, parse_json
from ..data.arguments import DataSourceArguments
from ..data.images import decode_image, undecoded_images
from ..data.loading import load_data_source
from ..output_folders import check_output_folder
from .map_step import AttentionMapStep, add_attention_maps
from .registry import METHODS


@dataclass
class ObjectDiscoveryArguments:
    method: str = field(default="tokencut", metadata={"help": f"one of {sorted(METHODS)}"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "detector (Hub id or folder); default: the method's own "
                                        "(facebook/dino-vits16 for dino/tokencut, microsoft/resnet-50 for gradcam)"})
    method_kwargs: str = field(default="{}", metadata={"help": "JSON object of method parameters"})
    grid_size: int = field(default=14, metadata={"help": "side G of the stored (G, G) map grid"})
    image_column: str | None = field(default=None, metadata={
        "help": "column the method reads (the mask column for 'column'); default: --image_column_name"})
    batch_size: int = field(default=32, metadata={"help": "images per detector batch"})
    num_proc: int | None = field(default=None, metadata={"help": "worker processes (one per GPU)"})

    def __post_init__(self):
        # datasets reads batch_size <= 0 as "the whole split in one batch", which no detector fits in memory
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"--num_proc must be >= 1 (or not given), got {self.num_proc}")


@dataclass
class MapsOutputArguments:
    """Where the dataset with maps goes, and its pictures (the data source: the shared `DataSourceArguments`)."""

    output_dir: str = field(default="attention_maps", metadata={"help": "save_to_disk folder"})
    push_to_hub: bool = field(default=False, metadata={"help": "also push the dataset to the Hub"})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "allow replacing a non-empty output_dir that holds an earlier output of this CLI (and nothing else)"})
    save_pictures: int = field(default=0, metadata={"help": "write a PNG of N image | map | weights rows"})
    temperature: float = field(default=0.75, metadata={"help": "tau for the weights in the pictures"})

    def __post_init__(self):
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")


# the command line's argument groups, in parsing order
ARGUMENTS = (ObjectDiscoveryArguments, DataSourceArguments, MapsOutputArguments)

# Written into every output folder: how `--overwrite_output_dir` knows a folder is an earlier output of this CLI
# (and not the user's images, or a save_to_disk dataset of theirs that happens to have an attention_map column).
MARKER_FILE = "attg_mae_maps.json"
PICTURE_FILE = "attention_maps.png"
WRITTEN_BY = "modeling_attg_mae.object_discovery"


def _previous_output(folder) -> str | None:
    """None when `folder` holds an earlier output of this CLI and nothing else (the marker, save_to_disk's
    dataset_dict.json and split folders, the picture); else why not, for the error message."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or marker.get("written_by") != WRITTEN_BY:
        return f"no {MARKER_FILE} of the maps CLI in it"
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        splits = []
    ours = {MARKER_FILE, PICTURE_FILE, "dataset_dict.json", *map(str, splits)}
    # anything the user put next to our files is theirs: replacing the folder would delete it
    foreign = sorted(entry.name for entry in folder.iterdir() if entry.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"{shown} {'is not a file' if len(foreign) == 1 else 'are not files'} the maps CLI writes"
    return None


def check_maps_output_dir(output, data) -> None:
    """Refuse, before any data is loaded, an output folder whose replacement would delete something not ours:
    a data source or a folder above one, or a non-empty folder that is not an earlier output of this CLI."""
    sources = [("--train_dir", data.train_dir), ("--validation_dir", data.validation_dir)]
    if data.dataset_name is not None and os.path.isdir(os.path.expanduser(data.dataset_name)):
        sources.append(("--dataset_name", data.dataset_name))
    check_output_folder(output.output_dir, output.overwrite_output_dir, _previous_output, "an earlier maps output",
                        sources=sources)


def replace_folder(output_dir: str, write) -> None:
    """Run `write(folder)` on a new sibling folder, then swap it in for `output_dir`.

    Nothing of an earlier run survives next to the new files (stale splits or shards), and a crash while
    writing leaves `output_dir` as it was (the partial folder is removed).
    """
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial.", dir=parent)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if os.path.lexists(output_dir):
        previous = tempfile.mkdtemp(prefix=f".{name}.previous.", dir=parent)
        os.rmdir(previous)  # a free name on the same file system, for an atomic rename
        os.rename(output_dir, previous)
    os.rename(staging, output_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def check_image_files(dataset, column: str, data) -> None:
    """For an image-folder source (`--train_dir` / `--validation_dir`), decode every file once before any map is
    computed: a corrupt file is named with its flag, split, row and path, and the detector never loads. (Inside the
    map step the same error would come at the end of a `datasets` traceback, after the detector's work.)"""
    folders = {"train": ("--train_dir", data.train_dir), "validation": ("--validation_dir", data.validation_dir)}
    for split, part in dataset.items():
        if split not in folders or column not in part.column_names:
            continue
        for row, value in enumerate(undecoded_images(part, column)[column]):
            try:
                decode_image(value, row, split).close()
            except ValueError as error:
                flag, folder = folders[split]
                raise ValueError(f"{flag} {folder}: {error}") from None


def main(argv=None):
    args, data, output = parse_cli(ARGUMENTS, argv)
    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}; choose one of {sorted(METHODS)}")
    params = parse_json(args.method_kwargs, f"--method_kwargs {args.method_kwargs!r}")
    if not isinstance(params, dict):
        raise ValueError(f"--method_kwargs must be a JSON object, got {args.method_kwargs!r}")
    model = args.model_name_or_path or METHODS[args.method].default_model
    check_maps_output_dir(output, data)
    input_column = args.image_column or data.image_column_name
    # method, parameters and detector checkpoint are checked before any data is loaded
    AttentionMapStep(args.method, model, image_column=input_column, grid_size=args.grid_size, **params)
    source = load_data_source(data)
    if data.train_dir is not None:
        check_image_files(source, input_column, data)
    result = add_attention_maps(
        source, args.method, model, image_column=input_column, grid_size=args.grid_size,
        batch_size=args.batch_size, num_proc=args.num_proc, **params,
    )

    def write(folder):
        result.save_to_disk(folder)
        marker = {"written_by": WRITTEN_BY, "method": args.method, "model_name_or_path": model,
                  "method_kwargs": params, "grid_size": args.grid_size, "image_column": input_column}
        with open(os.path.join(folder, MARKER_FILE), "w") as f:
            f.write(json.dumps(marker, indent=1) + "\n")
        if output.save_pictures > 0:
            from ..visualize import save_guidance_grid

            first = next(iter(result.values()))
            split = first.select(range(min(output.save_pictures, len(first))))
            # the images; a dataset without that column (e.g. masks only) shows what the method read
            picture_column = data.image_column_name if data.image_column_name in split.column_names else input_column
            save_guidance_grid(
                split[picture_column], split.with_format("numpy")["attention_map"],
                os.path.join(folder, PICTURE_FILE), temperature=output.temperature,
                max_rows=output.save_pictures,
            )

    replace_folder(output.output_dir, write)
    print(f"saved {', '.join(f'{k}: {len(v)}' for k, v in result.items())} rows with attention maps to "
          f"{output.output_dir}")
    if output.save_pictures > 0:
        print(f"wrote {os.path.join(output.output_dir, PICTURE_FILE)}")
    if output.push_to_hub:
        result.push_to_hub(output.hub_model_id)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""Precompute attention maps for a dataset and save (or push) it.

    python -m modeling_attg_mae.object_discovery --method tokencut --dataset_name imagenette --output_dir maps/
    python -m modeling_attg_mae.object_discovery --method dino --train_dir photos/ --output_dir maps/ --save_pictures 8
    python -m modeling_attg_mae.object_discovery --method spectral_residual --output_dir maps/   # synthetic data
    python -m modeling_attg_mae.object_discovery --method column --image_column object_mask --output_dir maps/

Several GPUs: `--num_proc <n_gpus>` (worker i runs on cuda:i). Method parameters: `--method_kwargs '{"head": "max"}'`.
All arguments can also come from a JSON file given as the only argument.
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import datasets

from ..cli import parse_cli, parse_json
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
    image_column: str = field(default="image", metadata={"help": "column the method reads (mask column for 'column')"})
    batch_size: int = field(default=32, metadata={"help": "images per detector batch"})
    num_proc: int | None = field(default=None, metadata={"help": "worker processes (one per GPU)"})

    def __post_init__(self):
        # datasets reads batch_size <= 0 as "the whole split in one batch", which no detector fits in memory
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"--num_proc must be >= 1 (or not given), got {self.num_proc}")


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset name"})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    train_dir: str | None = field(default=None, metadata={"help": "local image folder (imagefolder layout)"})
    synthetic_num_train: int = field(default=4000, metadata={"help": "synthetic data (the default dataset): train size"})
    synthetic_num_validation: int = field(default=1000, metadata={"help": "synthetic data: validation size"})
    output_dir: str = field(default="attention_maps", metadata={"help": "save_to_disk folder"})
    push_to_hub: bool = field(default=False, metadata={"help": "also push the dataset to the Hub"})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "allow replacing a non-empty output_dir"})
    save_pictures: int = field(default=0, metadata={"help": "write a PNG of N image | map | weights rows"})
    temperature: float = field(default=0.75, metadata={"help": "tau for the weights in the pictures"})

    def __post_init__(self):
        if self.dataset_name and self.train_dir:
            raise ValueError("give --dataset_name or --train_dir, not both")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")


def load_source(data: DataArguments) -> datasets.DatasetDict:
    from ..data.loading import load_image_dataset

    synthetic = None if (data.dataset_name or data.train_dir) else dict(
        num_train=data.synthetic_num_train, num_validation=data.synthetic_num_validation)
    return load_image_dataset(dataset_name=data.dataset_name, dataset_config_name=data.dataset_config_name,
                              train_dir=data.train_dir, synthetic_kwargs=synthetic)


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


def main(argv=None):
    args, data = parse_cli((ObjectDiscoveryArguments, DataArguments), argv)
    if args.method not in METHODS:
        raise ValueError(f"unknown --method {args.method!r}; choose one of {sorted(METHODS)}")
    params = parse_json(args.method_kwargs, f"--method_kwargs {args.method_kwargs!r}")
    if not isinstance(params, dict):
        raise ValueError(f"--method_kwargs must be a JSON object, got {args.method_kwargs!r}")
    model = args.model_name_or_path or METHODS[args.method].default_model
    if os.path.isdir(data.output_dir) and os.listdir(data.output_dir) and not data.overwrite_output_dir:
        raise ValueError(f"output_dir {data.output_dir} exists and is not empty: pass --overwrite_output_dir to "
                         "replace it, or choose another --output_dir")
    # method, parameters and detector checkpoint are checked before any data is loaded
    AttentionMapStep(args.method, model, image_column=args.image_column, grid_size=args.grid_size, **params)
    source = load_source(data)
    result = add_attention_maps(
        source, args.method, model, image_column=args.image_column, grid_size=args.grid_size,
        batch_size=args.batch_size, num_proc=args.num_proc, **params,
    )

    def write(folder):
        result.save_to_disk(folder)
        if data.save_pictures > 0:
            from ..visualize import save_guidance_grid

            first = next(iter(result.values()))
            split = first.select(range(min(data.save_pictures, len(first))))
            picture_column = "image" if "image" in split.column_names else args.image_column
            save_guidance_grid(
                split[picture_column], split.with_format("numpy")["attention_map"],
                os.path.join(folder, "attention_maps.png"), temperature=data.temperature,
                max_rows=data.save_pictures,
            )

    replace_folder(data.output_dir, write)
    print(f"saved {', '.join(f'{k}: {len(v)}' for k, v in result.items())} rows with attention maps to {data.output_dir}")
    if data.save_pictures > 0:
        print(f"wrote {os.path.join(data.output_dir, 'attention_maps.png')}")
    if data.push_to_hub:
        result.push_to_hub(data.hub_model_id)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

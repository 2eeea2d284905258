"""Data for attg-mae: the embedded synthetic benchmark, dataset loading, joint image + map transforms, batching."""

from .arguments import DataSourceArguments, LabelledDataArguments, convert_data_arguments
from .collator import PretrainCollator, stack_pretrain_batch, transform_examples, with_pretrain_transform
from .images import decode_image, undecoded_images
from .loading import check_columns, check_image_folder, check_split, load_data_source, load_image_dataset
from .rows import ArrowBatchRows, training_rows
from .synthetic import SHAPES, TEXTURE_FAMILIES, generate_synthetic_dataset, load_synthetic_dataset
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropParameters,
    EvalTransform,
    JointRandomResizedCrop,
    MapCrop,
    PretrainTransform,
    as_attention_map,
    as_attention_maps,
    check_finite_attention_maps,
    crop_attention_map,
    crop_attention_maps,
    to_normalized_tensor,
    to_rgb_image,
)

__all__ = [
    "DataSourceArguments", "LabelledDataArguments", "convert_data_arguments", "load_data_source",
    "SHAPES", "TEXTURE_FAMILIES", "generate_synthetic_dataset", "load_synthetic_dataset",
    "load_image_dataset", "check_columns", "check_split", "check_image_folder", "decode_image", "undecoded_images",
    "IMAGENET_MEAN", "IMAGENET_STD", "CropParameters", "MapCrop", "JointRandomResizedCrop", "PretrainTransform",
    "EvalTransform", "as_attention_map", "as_attention_maps", "check_finite_attention_maps", "crop_attention_map", "crop_attention_maps",
    "to_normalized_tensor", "to_rgb_image",
    "PretrainCollator", "ArrowBatchRows", "training_rows", "with_pretrain_transform", "stack_pretrain_batch", "transform_examples",
]

"""Where a model comes from: one check of a `--model_name_or_path` value, the config, the image normalisation a
checkpoint was trained with, and the frozen encoder the evaluations load (`load_encoder`).

A value that is plainly a file-system path (`./x`, `../x`, `/x`, `~/x`, `a/b/c`) but does not exist is
reported as a missing path; transformers would otherwise try it as a Hub id and answer "Repo id must be in the
form 'repo_name' or 'namespace/repo_name'".
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Model types whose encoders `features.extract_features` understands (CLS first, then optional registers, then patches).
VIT_MODEL_TYPES = ("vit_mae", "vit", "deit", "dinov2", "dinov2_with_registers", "vit_msn")


def _plainly_a_path(text: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else with a separator is meant as a local path
    return (text.startswith((".", "/", "~")) or os.path.isabs(text) or "\\" in text or text.count("/") > 1
            or text.endswith("/"))


def check_model_path(model_name_or_path, flag: str = "--model_name_or_path") -> str:
    """Return `model_name_or_path` as a string after checking it can be a checkpoint.

    Raises ValueError naming `flag` when it is a path that does not exist, a file, or a folder without
    config.json. A Hub-id-like value that is not a local folder is returned as is (the Hub decides).
    """
    text = os.fspath(model_name_or_path)
    if not text:
        raise ValueError(f"{flag} is empty: pass a checkpoint folder or a Hub id")
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ValueError(f"{flag} {text!r} is a folder without config.json, not a saved model (a checkpoint "
                             "folder is written by save_pretrained)")
        return expanded
    if os.path.exists(expanded):
        raise ValueError(f"{flag} {text!r} is a file; pass the checkpoint folder that holds config.json, or a Hub id")
    if _plainly_a_path(text):
        raise ValueError(f"{flag} {text!r} does not exist (no such local folder; "
                         f"the current directory is {os.getcwd()})")
    return text


def load_config(model_name_or_path, flag: str = "--model_name_or_path", **kwargs):
    """`AutoConfig.from_pretrained` after `check_model_path`; a failure names the flag and the value (for a
    Hub id that cannot be reached offline, too)."""
    from transformers import AutoConfig

    path = check_model_path(model_name_or_path, flag)
    try:
        return AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        where = "the local folder" if os.path.isdir(path) else "no local folder of that name, and the Hub id"
        raise ValueError(f"{flag} {os.fspath(model_name_or_path)!r}: cannot load a model config ({where}): "
                         f"{error}") from error


PROCESSOR_FILE = "preprocessor_config.json"


def processor_source(model_name_or_path):
    """Where the image processor of a checkpoint is: the checkpoint itself, or, for a Trainer `checkpoint-N` without
    one (older runs saved none in it), its run folder's (`output_folders.run_folder_of`: the run writes it there).

    Raises ValueError for a `checkpoint-N` whose run folder has none either (a run killed before its end): the
    normalisation it trained with is unknown, and ImageNet's would give other features of the same weights. Every
    reader of a checkpoint's processor asks here: the normalisation below, and the encoder export.
    """
    from .output_folders import run_folder_of

    text = os.fspath(model_name_or_path)
    folder = Path(os.path.expanduser(text))
    if not folder.is_dir() or (folder / PROCESSOR_FILE).is_file():
        return model_name_or_path
    run = run_folder_of(folder)
    if run is None or not (folder / "trainer_state.json").is_file():
        return model_name_or_path  # not a Trainer checkpoint: no run folder to read it from
    if (run / PROCESSOR_FILE).is_file():
        return str(run)
    raise ValueError(
        f"{text} is a Trainer checkpoint without {PROCESSOR_FILE}, and its run folder {run} has none either (the run "
        "did not reach its end): the normalisation it was trained with is unknown, and ImageNet's would give other "
        f"features of the same weights. Put the run's {PROCESSOR_FILE} into {text} or {run} (the image processor "
        "run_pretrain.py saves: ImageNet mean/std unless the run continued from a checkpoint with other values)")


def checkpoint_normalisation(model_name_or_path, cache_dir=None, revision=None) -> tuple[tuple, tuple] | None:
    """`(mean, std)` from the checkpoint's `preprocessor_config.json` (a key it lacks: ImageNet's), or None when the
    checkpoint has no such file. Every consumer of a checkpoint's normalisation reads it here: evaluation,
    fine-tuning, and pre-training continued from a checkpoint. A Trainer `checkpoint-N` reads its run folder's
    (`processor_source`)."""
    from transformers.utils import cached_file

    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    path = cached_file(
        processor_source(model_name_or_path),
        PROCESSOR_FILE,
        cache_dir=cache_dir,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return None
    config = json.loads(Path(path).read_text())
    mean, std = config.get("image_mean", IMAGENET_MEAN), config.get("image_std", IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{path}: image_mean / image_std must have 3 entries, got {mean} / {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def image_normalisation(model_name_or_path, cache_dir=None, revision=None) -> tuple[tuple, tuple]:
    """Mean/std from the checkpoint's `preprocessor_config.json`, else ImageNet's (as MAE and DINO use)."""
    from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return checkpoint_normalisation(model_name_or_path, cache_dir, revision) or (IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class EncoderInfo:
    """What the evaluation needs to know about a checkpoint besides its weights."""

    model_name_or_path: str
    model_type: str
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    hidden_size: int
    patch_size: int
    commit_hash: str | None

    def transform_description(self) -> dict:
        """The evaluation transform, as the feature cache's key records it (do not change: cached files would miss)."""
        return {
            "name": "resize_center_crop",
            "image_size": self.image_size,
            "resize": int(self.image_size * 256 / 224),
            "interpolation": "bicubic",
            "mean": list(self.image_mean),
            "std": list(self.image_std),
        }


def load_encoder(model_name_or_path: str, cache_dir: str | None = None, revision: str | None = None):
    """`(encoder, EncoderInfo)` for any ViT checkpoint: ours, stock `facebook/vit-mae-*`, ViT, DeiT, DINO(v2).

    ViTMAE checkpoints (ours included: model_type stays "vit_mae") load as `ViTMAEModel`, i.e. the encoder
    only; others through `AutoModel`. Anything else (a ResNet, a text model) is a ValueError, before any weights load.
    """
    from transformers import AutoModel, ViTMAEModel
    from transformers.utils import logging as transformers_logging

    from .configuration_attg_mae import image_size_of, patch_size_of

    config = load_config(model_name_or_path, "--model_name_or_path", cache_dir=cache_dir, revision=revision)
    model_type = getattr(config, "model_type", None)
    if model_type not in VIT_MODEL_TYPES:
        raise ValueError(
            f"{model_name_or_path!r} is a {model_type!r} checkpoint, not a ViT; evaluation supports {VIT_MODEL_TYPES}"
        )
    # sizes before the weights: a non-square or missing size fails without loading anything
    image_size, patch_size = image_size_of(config), patch_size_of(config)
    loader = ViTMAEModel if model_type == "vit_mae" else AutoModel
    kwargs = {"add_pooling_layer": False} if model_type in ("vit", "deit") else {}
    verbosity = transformers_logging.get_verbosity()
    # transformers' load report is silenced: the weights missing or of another shape are refused below, and the
    # unused ones are reported there too, except those unused by design (a pre-training checkpoint's decoder; the
    # pooler of a ViTModel, such as the package's own encoder export, loaded without one: features are tokens)
    transformers_logging.set_verbosity_error()
    try:
        model, loading = loader.from_pretrained(model_name_or_path, cache_dir=cache_dir, revision=revision,
                                                output_loading_info=True, **kwargs)
    except Exception as error:  # safetensors / torch / OS errors that name neither the checkpoint nor the file
        weights = [os.path.join(model_name_or_path, name) for name in ("model.safetensors", "pytorch_model.bin")
                   if os.path.isfile(os.path.join(os.fspath(model_name_or_path), name))]
        raise ValueError(f"cannot load the weights of --model_name_or_path {model_name_or_path!r} "
                         f"({', '.join(weights) or 'from the Hub'}): {type(error).__name__}: {error}; the file may "
                         "be truncated or incomplete (an interrupted copy or save): copy or export it again") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    # transformers fills weights the file lacks (or has with another shape) with fresh random values and only logs
    # it: features from such an encoder would be silently meaningless, so refuse it
    absent = sorted(loading.get("missing_keys") or []) + sorted(str(k[0]) if isinstance(k, tuple) else str(k)
                                                             for k in loading.get("mismatched_keys") or [])
    if absent:
        raise ValueError(f"--model_name_or_path {model_name_or_path!r}: the checkpoint has no usable weights for "
                         f"{len(absent)} encoder parameter(s) ({', '.join(absent[:5])}{', ...' if len(absent) > 5 else ''}); "
                         "they would be random. Is it a complete export of this architecture?")
    unused = sorted(str(key) for key in loading.get("unexpected_keys") or []
                    if not str(key).startswith(("decoder.", "pooler.")))
    if unused:
        logger.warning("%s: %d weight(s) of the checkpoint are not part of the %s encoder and are not used (%s%s)",
                       model_name_or_path, len(unused), model_type, ", ".join(unused[:5]),
                       ", ..." if len(unused) > 5 else "")
    model.eval().requires_grad_(False)
    mean, std = image_normalisation(model_name_or_path, cache_dir, revision)
    info = EncoderInfo(
        model_name_or_path=str(model_name_or_path),
        model_type=model_type,
        image_size=image_size,
        image_mean=mean,
        image_std=std,
        hidden_size=int(config.hidden_size),
        patch_size=patch_size,
        commit_hash=getattr(config, "_commit_hash", None),
    )
    return model, info


__all__ = ["check_model_path", "load_config", "processor_source", "checkpoint_normalisation", "image_normalisation",
           "EncoderInfo", "VIT_MODEL_TYPES", "load_encoder"]

"""Export the encoder of a vit_mae checkpoint (ours or stock `facebook/vit-mae-*`) for inference tools.

Why: stock ViTMAE masks and *shuffles* the patch tokens on every forward, also with `mask_ratio=0` (then it only
shuffles), so `pipeline("image-feature-extraction")` and the Hub widget on a vit_mae checkpoint return the CLS token
right and the patch tokens in a different order on every call. A `ViTModel` has no masking: the same weights under
`model_type: vit` give all 1 + N tokens in patch order, identical on every call, and `interpolate_pos_encoding` works.

    python -m modeling_attg_mae.export --checkpoint outputs/attg-mae-demo            # -> outputs/attg-mae-demo/encoder
    python -m modeling_attg_mae.export --checkpoint outputs/attg-mae-demo --format timm --output_dir out/timm
    python -m modeling_attg_mae.export --checkpoint facebook/vit-mae-base --output_dir out/vit-mae-base-encoder
    python -m modeling_attg_mae.export --checkpoint outputs/run --push_to_hub --hub_model_id you/run  # you/run-encoder

Formats:
- "hf": a `ViTModel` folder (config with model_type "vit", safetensors, `ViTImageProcessor`, model card). The final
  LayerNorm of the ViTMAE encoder is `ViTModel.layernorm`; the pooler is the identity on the CLS token (dense = I,
  bias 0, `pooler_act="linear"`), so that `AutoModel` / the pipeline load it with no missing, hence random, weight,
  and `pooler_output` is the CLS feature. Before the folder is put in place it is loaded back with `AutoModel` and its
  tokens compared with `extract_features` on the source (1e-5): a conversion that went wrong is never written.
- "timm": timm's own folder layout (`model.safetensors` with timm's ViT key names, q/k/v fused into `attn.qkv`, and
  timm's `config.json` with `architecture` and `model_args`), loaded by
  `timm.create_model("local-dir:<folder>", pretrained=True)` or `"hf-hub:<repo>"`; exporting needs no timm.

Where it goes: `<checkpoint>/encoder` by default (`<checkpoint>/encoder-timm` for timm), next to the weights it came
from; a Hub repo loads it with `from_pretrained(repo, subfolder="encoder")`. The Hub widget and `pipeline(repo)`
need a repo *root*, so `--push_to_hub` sends it to its own repo, `<hub_model_id>-encoder` (`-timm` for timm), and
the vit_mae repo does not carry a second copy (see `hub.push_checkpoint_to_hub`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from .configuration_attg_mae import patch_size_of
from .output_folders import CONFIG_FILE, check_output_folder, export_format_of

logger = logging.getLogger(__name__)

FORMATS = ("hf", "timm")
ENCODER_SUBFOLDER = {"hf": "encoder", "timm": "encoder-timm"}  # default output folders inside the checkpoint
HUB_REPO_SUFFIX = {"hf": "-encoder", "timm": "-timm"}  # the pushed repo: <hub_model_id><suffix>
WEIGHTS_FILE = "model.safetensors"
# tokens of the exported model must equal extract_features on the source to this (float32 round-off only)
EXPORT_ATOL = 1e-5


def hub_repo_id(hub_model_id: str, format: str = "hf") -> str:
    """The repo an export is pushed to: `you/run` -> `you/run-encoder` ("hf") or `you/run-timm` ("timm")."""
    return f"{hub_model_id}{HUB_REPO_SUFFIX[format]}"


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {format!r}")


def default_output_dir(checkpoint, format: str = "hf") -> Path:
    """`<checkpoint>/encoder` (hf) or `<checkpoint>/encoder-timm` (timm); only for a local checkpoint folder."""
    from .model_source import check_model_path

    _check_format(format)
    check_model_path(checkpoint, "--checkpoint")  # a missing folder is named as such, not as a Hub id
    if not os.path.isdir(os.path.expanduser(os.fspath(checkpoint))):
        raise ValueError(f"--checkpoint {os.fspath(checkpoint)!r} is not a local folder (a Hub id?): pass --output_dir")
    return Path(os.path.expanduser(os.fspath(checkpoint))) / ENCODER_SUBFOLDER[format]


def check_output_dir(output_dir, checkpoint, overwrite: bool) -> Path:
    """Refuse, before any weight is loaded, an output folder that would destroy something.

    It may not be the checkpoint or a folder that holds it; an existing non-empty one needs `overwrite`, and even
    then only a previous export is replaced (`check_output_folder`).
    """
    source = Path(os.path.expanduser(os.fspath(checkpoint)))
    return check_output_folder(
        output_dir, overwrite,
        lambda folder: None if export_format_of(folder) is not None else f"its {CONFIG_FILE} is not one this module writes",
        "an encoder export", sources=[("the checkpoint", source)],
        hint=f"; the default is {source / ENCODER_SUBFOLDER['hf']}")


def check_source(checkpoint, flag: str = "--checkpoint"):
    """`(path or Hub id, config)` of a vit_mae checkpoint; a ValueError naming `flag` for anything else."""
    from .model_source import check_model_path, load_config

    path = check_model_path(checkpoint, flag)
    config = load_config(path, flag)
    if config.model_type != "vit_mae":
        raise ValueError(f"{flag} {os.fspath(checkpoint)!r} is a {config.model_type!r} checkpoint; the encoder export "
                         "converts vit_mae checkpoints (AttG-MAE or facebook/vit-mae-*)")
    return path, config


def load_source_encoder(checkpoint, flag: str = "--checkpoint"):
    """The ViTMAE encoder of `checkpoint` (`ViTMAEModel`, eval mode), every encoder weight read from the file.

    Raises ValueError naming `flag` for a checkpoint that is not vit_mae, and for an encoder weight missing from the
    file or of another shape (transformers would fill it with fresh values). The decoder weights of a pre-training
    checkpoint are not used, by design.
    """
    from transformers import ViTMAEModel
    from transformers.utils import logging as transformers_logging

    path, _ = check_source(checkpoint, flag)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # "decoder weights not used": expected, and said above
    try:
        model, info = ViTMAEModel.from_pretrained(path, output_loading_info=True)
    except Exception as error:  # safetensors / OS errors that name neither the flag nor the folder
        raise ValueError(f"cannot load the weights of {flag} {os.fspath(checkpoint)!r}: {type(error).__name__}: "
                         f"{error}") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    problems = {kind: sorted(map(str, info.get(kind) or [])) for kind in ("missing_keys", "mismatched_keys")}
    problems = {kind: keys for kind, keys in problems.items() if keys}
    if problems:
        raise ValueError(f"{flag} {os.fspath(checkpoint)!r}: encoder weights not in the file or of another shape "
                         f"(they would be exported with fresh values): {problems}")
    if not model.embeddings.position_embeddings.any():
        # transformers 5.x leaves them at zero in a ViTMAE built from a config (shared/REFERENCE.md) and they are
        # frozen, so a stock model trained from scratch keeps them at zero: exported as they are (same features)
        logger.warning("%s %s has all-zero position embeddings (a stock ViTMAE built from a config by transformers "
                       "5.x has no position information); they are exported as they are", flag, checkpoint)
    return model.eval().requires_grad_(False)


def load_source_processor(checkpoint, image_processor=None, config=None):
    """The source's `ViTImageProcessor` (or the one of `image_processor`), checked against the model's input size.
    A Trainer `checkpoint-N` without one has its run folder's (`model_source.processor_source`)."""
    # the PIL backend by name: `ViTImageProcessor` without torchvision warns on every run and falls back to it anyway;
    # both save "ViTImageProcessor", which AutoImageProcessor loads with either backend
    from transformers import ViTImageProcessorPil as ViTImageProcessor

    from .model_source import processor_source

    try:
        source = image_processor if image_processor is not None else processor_source(checkpoint)
    except ValueError as error:  # a checkpoint-N of a run that never wrote its processor
        raise ValueError(f"--checkpoint: {error}; or pass --image_processor with a folder or Hub id that has "
                         "one") from None
    flag = "--image_processor" if image_processor is not None else "--checkpoint"
    try:
        processor = ViTImageProcessor.from_pretrained(os.path.expanduser(os.fspath(source)))
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag} {os.fspath(source)!r} has no image processor (preprocessor_config.json), which "
                         "the pipeline needs; pass --image_processor with a folder or Hub id that has one (e.g. the "
                         f"run folder of a checkpoint-N): {error}") from error
    if config is not None and processor.do_resize:
        size = (processor.size.get("height"), processor.size.get("width"))
        image_size = _input_size(config)
        if size != image_size:
            raise ValueError(f"the image processor of {flag} {os.fspath(source)!r} resizes to {size}, but the model "
                             f"takes {tuple(image_size)} images; the pipeline would fail on every call")
    return processor


def _input_size(config) -> tuple[int, int]:
    """`(height, width)` of a ViT config's `image_size`, an int or a pair (the processor check, timm's input size
    and the export's verification input all read it here)."""
    size = config.image_size
    return tuple(size) if isinstance(size, (list, tuple)) else (size, size)


def vit_config_from(mae_config):
    """The `ViTConfig` of a ViTMAE encoder: the same architecture fields, and an identity pooler (see the module)."""
    from transformers import ViTConfig

    shared = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
              "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
              "image_size", "patch_size", "num_channels", "qkv_bias")
    patch = patch_size_of(mae_config)
    return ViTConfig(**{name: getattr(mae_config, name) for name in shared}, encoder_stride=patch,
                     pooler_output_size=mae_config.hidden_size, pooler_act="linear", architectures=["ViTModel"])


@torch.no_grad()
def to_vit_model(mae_encoder):
    """A `ViTModel` holding `mae_encoder`'s weights (the two share every parameter name in transformers 5.x)."""
    from transformers import ViTModel

    with torch.device("meta"):  # no random initialisation: every tensor is assigned below
        vit = ViTModel(vit_config_from(mae_encoder.config), add_pooling_layer=True)
    state = {name: tensor.detach().clone() for name, tensor in mae_encoder.state_dict().items()}
    hidden = mae_encoder.config.hidden_size
    state["pooler.dense.weight"] = torch.eye(hidden)  # pooler_output = CLS after the final LayerNorm
    state["pooler.dense.bias"] = torch.zeros(hidden)
    vit.load_state_dict(state, strict=True, assign=True)
    return vit.eval()


@torch.no_grad()
def timm_state_dict(mae_encoder) -> dict[str, torch.Tensor]:
    """`mae_encoder`'s weights under timm's `VisionTransformer` names (q, k, v fused into `attn.qkv`)."""
    config = mae_encoder.config
    if config.hidden_act != "gelu":
        raise ValueError(f"the timm export supports hidden_act 'gelu' (timm's nn.GELU), got {config.hidden_act!r}")
    src = mae_encoder.state_dict()
    out = {
        "cls_token": src["embeddings.cls_token"],  # (1, 1, D)
        "pos_embed": src["embeddings.position_embeddings"],  # (1, 1 + N, D), CLS row first, as timm's class_token
        "patch_embed.proj.weight": src["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": src["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": src["layernorm.weight"],
        "norm.bias": src["layernorm.bias"],
    }
    for i in range(config.num_hidden_layers):
        a, b = f"layers.{i}.", f"blocks.{i}."
        out[b + "attn.qkv.weight"] = torch.cat([src[a + f"attention.{p}_proj.weight"] for p in "qkv"])  # (3D, D)
        if config.qkv_bias:
            out[b + "attn.qkv.bias"] = torch.cat([src[a + f"attention.{p}_proj.bias"] for p in "qkv"])
        for theirs, ours in (("norm1", "layernorm_before"), ("attn.proj", "attention.o_proj"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for kind in ("weight", "bias"):
                out[f"{b}{theirs}.{kind}"] = src[f"{a}{ours}.{kind}"]
    return {name: tensor.detach().clone().contiguous() for name, tensor in out.items()}


def timm_config(mae_config, processor) -> dict:
    """timm's `config.json` for the folder (`architecture`, `model_args`, `pretrained_cfg`), as `save_for_hf` writes.

    timm's LayerNorm eps is 1e-6 and `model_args` (JSON) cannot change it; ViTMAE's is `layer_norm_eps` (1e-12 in the
    transformers MAE checkpoints and ours). Where hidden states have a small variance that is visible (2.7e-3 on the
    tiny random test model), so equal features need `norm_layer=functools.partial(timm.layers.LayerNorm, eps=...)`
    in `create_model`: the key "attg_mae" (ignored by timm) records the call.
    """
    size = _input_size(mae_config)
    patch = patch_size_of(mae_config)
    model_args = {
        "img_size": list(size), "patch_size": patch, "in_chans": mae_config.num_channels,
        "embed_dim": mae_config.hidden_size, "depth": mae_config.num_hidden_layers,
        "num_heads": mae_config.num_attention_heads,
        "mlp_ratio": mae_config.intermediate_size / mae_config.hidden_size, "qkv_bias": bool(mae_config.qkv_bias),
        "class_token": True, "global_pool": "token", "num_classes": 0,
    }
    resample = {2: "bilinear", 3: "bicubic"}.get(int(getattr(processor, "resample", 3)), "bicubic")
    return {
        # a registered name is required; model_args override each of its dimensions (timm's own exports name the
        # variant they were built from, there is none for an arbitrary MAE geometry)
        "architecture": "vit_base_patch16_224",
        "num_classes": 0, "num_features": mae_config.hidden_size, "global_pool": "token",
        "model_args": model_args,
        "attg_mae": {"layer_norm_eps": mae_config.layer_norm_eps,
                     "create_model": "timm.create_model('local-dir:<this folder>', pretrained=True, norm_layer="
                                     f"functools.partial(timm.layers.LayerNorm, eps={mae_config.layer_norm_eps!r}))"},
        # the HF processor resizes straight to the input size; timm's eval transform does that only with crop_mode
        # "squash" (its default "center" resizes the shorter side, then crops a non-square image)
        "pretrained_cfg": {"input_size": [mae_config.num_channels, *size], "interpolation": resample,
                           "mean": list(processor.image_mean), "std": list(processor.image_std), "crop_pct": 1.0,
                           "crop_mode": "squash", "num_classes": 0, "fixed_input_size": True},
    }


@torch.no_grad()
def _verify_hf_export(folder: Path, mae_encoder) -> None:
    """Load `folder` as stock tools do and compare its tokens with `extract_features` on the source."""
    from transformers import AutoModel

    from .features import extract_features

    loaded, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    problems = {kind: sorted(map(str, keys)) for kind, keys in info.items() if kind != "error_msgs" and keys}
    if problems or type(loaded).__name__ != "ViTModel":
        raise RuntimeError(f"the exported encoder does not load cleanly as ViTModel ({type(loaded).__name__}): "
                           f"{problems}")
    config = mae_encoder.config
    size = _input_size(config)
    generator = torch.Generator().manual_seed(0)  # a local generator: the caller's random state is untouched
    pixels = torch.randn(1, config.num_channels, *size, generator=generator)
    expected = extract_features(mae_encoder, pixels, "tokens")
    got = loaded.eval()(pixel_values=pixels).last_hidden_state
    error = (got - expected).abs().max().item()
    if not error <= EXPORT_ATOL:
        raise RuntimeError(f"the exported encoder's tokens differ from the source's by {error:.3g} (> {EXPORT_ATOL})")


def _replace_folder(staged: Path, output_dir: Path) -> None:
    """Put the fully written `staged` folder at `output_dir`; a previous export there is removed only afterwards."""
    old = None
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        output_dir.rename(old)
    staged.rename(output_dir)
    if old is not None:
        shutil.rmtree(old)


def export_encoder(checkpoint, output_dir=None, format: Literal["hf", "timm"] = "hf", overwrite: bool = False,
                   image_processor=None) -> Path:
    """Write the encoder of the vit_mae `checkpoint` to `output_dir` (default `<checkpoint>/encoder`) in `format`.

    Everything is checked before any weight is loaded (format, output folder, source type, image processor); the
    folder is written next to its destination and moved in place only once complete (and, for "hf", verified), so a
    failure leaves any previous export as it was. Returns the output folder.
    """
    _check_format(format)
    output_dir = default_output_dir(checkpoint, format) if output_dir is None else output_dir
    output_dir = check_output_dir(output_dir, checkpoint, overwrite)
    _, config = check_source(checkpoint)
    processor = load_source_processor(checkpoint, image_processor, config)
    with torch.random.fork_rng(devices=[]):  # called at the end of pre-training: leave the run's random state as is
        return _export(checkpoint, output_dir, format, processor)


def _export(checkpoint, output_dir: Path, format: str, processor) -> Path:
    mae_encoder = load_source_encoder(checkpoint)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        if format == "hf":
            to_vit_model(mae_encoder).save_pretrained(staged)
            processor.save_pretrained(staged)
            _verify_hf_export(staged, mae_encoder)
            from .hub import render_encoder_card

            render_encoder_card(staged, source=os.fspath(checkpoint), model_name=output_dir.resolve().name,
                                repo_id=str(output_dir))
        else:
            from safetensors.torch import save_file

            save_file(timm_state_dict(mae_encoder), staged / WEIGHTS_FILE, metadata={"format": "pt"})
            (staged / CONFIG_FILE).write_text(json.dumps(timm_config(mae_encoder.config, processor), indent=2) + "\n")
        _replace_folder(staged, output_dir)
    finally:
        if staged.exists():
            shutil.rmtree(staged)
    logger.info("exported the %s encoder of %s to %s", format, checkpoint, output_dir)
    return output_dir


@dataclass
class ExportArguments:
    checkpoint: str = field(metadata={"help": "A vit_mae checkpoint folder or Hub id (ours or facebook/vit-mae-*)."})
    output_dir: str | None = field(default=None, metadata={
        "help": "Where to write the encoder; default <checkpoint>/encoder (hf) or <checkpoint>/encoder-timm (timm)."})
    format: str = field(default="hf", metadata={
        "help": "hf: a transformers ViTModel folder (pipeline, Hub widget); timm: timm's VisionTransformer folder."})
    image_processor: str | None = field(default=None, metadata={
        "help": "Folder or Hub id whose preprocessor_config.json to use; default the checkpoint's own."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing export in --output_dir."})
    push_to_hub: bool = field(default=False, metadata={
        "help": "Push the export to <hub_model_id>-encoder (hf) or <hub_model_id>-timm (timm)."})
    hub_model_id: str | None = field(default=None, metadata={
        "help": "The checkpoint's repo id (you/name); the export goes to its own repo next to it (see --push_to_hub)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the pushed repo as private."})

    def __post_init__(self):
        _check_format(self.format)
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (the checkpoint's repo id, e.g. you/attg-mae-run); "
                             f"the export is pushed to <hub_model_id>{HUB_REPO_SUFFIX[self.format]}")
        if self.hub_model_id and not self.push_to_hub:
            raise ValueError("--hub_model_id without --push_to_hub: nothing would be pushed; add --push_to_hub")


def main(argv=None) -> Path:
    from .cli import parse_cli

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = parse_cli([ExportArguments], argv)
    folder = export_encoder(args.checkpoint, args.output_dir, args.format, args.overwrite_output_dir,
                            args.image_processor)
    print(f"encoder ({args.format}): {folder}")
    if args.push_to_hub:
        from .hub import push_encoder_to_hub

        url = push_encoder_to_hub(folder, hub_repo_id(args.hub_model_id, args.format), source_repo_id=args.hub_model_id,
                                  private=args.hub_private_repo)
        print(f"pushed: {url}")
    return folder


if __name__ == "__main__":
    main()


__all__ = ["export_encoder", "export_format_of", "hub_repo_id", "default_output_dir", "load_source_encoder", "to_vit_model",
           "timm_state_dict", "timm_config", "vit_config_from", "FORMATS", "ENCODER_SUBFOLDER", "HUB_REPO_SUFFIX"]

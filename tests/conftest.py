"""The tiny configs, checkpoints and datasets that several test files share.

Two kinds of things live here:
- pytest fixtures, used by naming them as a test argument (no import): `checkpoint` (a tiny random AttG-MAE
  checkpoint folder) and `detector_checkpoints` (tiny ViT / DINOv2 / DINOv2-registers / ResNet detector folders);
- plain factory functions and constants, imported as `from tests.conftest import tiny_model, batch` (pytest imports
  this file as the module `tests.conftest`, since tests/ is a package, so the import gets the same module): they take
  arguments (seeds, config overrides) and are called in helpers and parametrised tests, where a fixture cannot be.

Everything is built locally and deterministically (seeded); no Hub access.
"""

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining, extract_features

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------- the tiny AttG-MAE

IMAGE, PATCH = 32, 8  # 4x4 grid, 16 patches, 12 masked
GRID = IMAGE // PATCH
N = GRID * GRID
TINY_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=IMAGE,
                    patch_size=PATCH)
TINY_DECODER = dict(decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                    decoder_intermediate_size=64)


def tiny_config(**overrides) -> AttGViTMAEConfig:
    """A 2-layer, width-32 AttG-MAE config on 32x32 images with 8x8 patches; `overrides` replace any field."""
    return AttGViTMAEConfig(**{**TINY_ENCODER, **TINY_DECODER, **overrides})


def tiny_model(seed=0, **overrides) -> AttGViTMAEForPreTraining:
    """`tiny_config(**overrides)`'s model, initialised under `torch.manual_seed(seed)`, in eval mode."""
    torch.manual_seed(seed)
    return AttGViTMAEForPreTraining(tiny_config(**overrides)).eval()


def batch(batch_size=3, seed=1):
    """`(pixel_values (B, 3, 32, 32), attention_map (B, 4, 4) of any real values, noise (B, 16))`, seeded."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, 3, IMAGE, IMAGE, generator=g)
    attention = torch.rand(batch_size, GRID, GRID, generator=g) * 5 - 2  # any real values
    noise = torch.rand(batch_size, N, generator=g)
    return pixels, attention, noise


def save_tiny_checkpoint(path, seed=0, **overrides) -> Path:
    """Save `tiny_config(**overrides)`'s model, initialised under `torch.manual_seed(seed)`, to `path`."""
    config = tiny_config(**overrides)
    torch.manual_seed(seed)
    AttGViTMAEForPreTraining(config).save_pretrained(path)
    return Path(path)


def config_overrides_string(**overrides) -> str:
    """`tiny_config`'s architecture as a `--config_overrides` string for run_pretrain.py, e.g. `image_size=32,...`."""
    return ",".join(f"{key}={value}" for key, value in {**TINY_ENCODER, **TINY_DECODER, **overrides}.items())


def official_mae_sincos(dim, grid):
    """MAE's util/pos_embed.get_2d_sincos_pos_embed (numpy), with its zero CLS row."""
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)
    mesh = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), 0)
    table = np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), table], 0)


# the evaluation tests' checkpoint: the tiny encoder with a narrower decoder
EVAL_CHECKPOINT_OVERRIDES = dict(decoder_hidden_size=16, decoder_intermediate_size=32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random AttG-MAE checkpoint folder (seed 0), shared by a module's tests."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=0, **EVAL_CHECKPOINT_OVERRIDES)


# ------------------------------------------------------------------------------------------- tiny detectors

TINY_DETECTOR = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def detector_checkpoints(tmp_path_factory) -> dict[str, str]:
    """Folders of tiny random object-discovery backbones: "vit", "dinov2", "dinov2_registers" (3 registers) and
    "resnet" (an image classifier with 5 labels, for Grad-CAM)."""
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTModel,
    )

    root = tmp_path_factory.mktemp("detectors")
    torch.manual_seed(0)
    models = {
        "vit": ViTModel(ViTConfig(intermediate_size=64, **TINY_DETECTOR), add_pooling_layer=False),
        "dinov2": Dinov2Model(Dinov2Config(mlp_ratio=2, **TINY_DETECTOR)),
        "dinov2_registers": Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(mlp_ratio=2, num_register_tokens=3, **TINY_DETECTOR)),
        "resnet": ResNetForImageClassification(
            ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=5)),
    }
    paths = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


# ------------------------------------------------------------------------------------------- the colour dataset

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def colour_image(label: int, rng) -> Image.Image:
    """A noisy 48x40 image of class `label`'s colour (red, green, blue), drawn from `rng`."""
    pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)  # 48x40: not square, so the resize + center crop matters


def colour_dataset(per_class=(8, 4, 4)) -> datasets.DatasetDict:
    """Three classes (red, green, blue noisy 48x40 images) in splits train / validation / validation_shifted with
    `per_class` images of each class; the same images on every call."""
    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
    splits = {}
    for split, n in zip(("train", "validation", "validation_shifted"), per_class):
        labels = [c for c in range(3) for _ in range(n)]
        splits[split] = datasets.Dataset.from_dict({"image": [colour_image(c, rng) for c in labels], "label": labels},
                                                   features=features)
    return datasets.DatasetDict(splits)


def eval_arguments(checkpoint, tmp_path, **overrides):
    """`(EvalModelArguments, EvalDataArguments, EvalRunArguments, leftover overrides)` for a run on `checkpoint`
    writing under `tmp_path`; each override goes to the dataclass that has the field."""
    from modeling_attg_mae.evaluation.arguments import EvalDataArguments, EvalModelArguments, EvalRunArguments

    model = EvalModelArguments(model_name_or_path=str(checkpoint), pooling=overrides.pop("pooling", "cls"))
    data = EvalDataArguments(**{k: overrides.pop(k) for k in list(overrides) if k in EvalDataArguments.__dataclass_fields__})
    run = EvalRunArguments(output_dir=str(tmp_path / "out"), feature_cache_dir=str(tmp_path / "cache"), progress=False,
                           batch_size=5, **{k: overrides.pop(k) for k in list(overrides) if k in EvalRunArguments.__dataclass_fields__})
    return model, data, run, overrides


def reference_features(checkpoint, split_dataset):
    """Encode by hand: stock ViTMAEModel, PIL resize of the shorter side to int(32 * 256/224) = 36, center crop 32."""
    from transformers import ViTMAEModel

    model = ViTMAEModel.from_pretrained(checkpoint).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    pixels = []
    for image in split_dataset["image"]:
        resized = image.convert("RGB").resize((43, 36), Image.BICUBIC)  # 48x40 -> shorter side 36, width int(36*48/40)
        array = np.asarray(resized.crop((6, 2, 38, 34)), dtype=np.float32) / 255  # round((43-32)/2)=6, round(2)=2
        pixels.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
    return extract_features(model, torch.stack(pixels), "cls")


def image_folders(root: Path):
    """`colour_dataset()`'s train and validation splits written as class folders (r/, g/, b/ of PNGs) under `root`;
    returns `(root / "train", root / "val")`."""
    dataset = colour_dataset()
    for split, folder in (("train", root / "train"), ("validation", root / "val")):
        for i, example in enumerate(dataset[split]):
            target = folder / "rgb"[example["label"]]
            target.mkdir(parents=True, exist_ok=True)
            example["image"].save(target / f"{i}.png")
    return root / "train", root / "val"


# ------------------------------------------------------------------------------------------- run_pretrain.py

# the pre-training tests' model: the tiny AttG-MAE with one encoder layer
TINY_PRETRAIN_CONFIG = {**TINY_ENCODER, **TINY_DECODER, "num_hidden_layers": 1}
TINY_PRETRAIN_OVERRIDES = config_overrides_string(num_hidden_layers=1)


def tiny_pretrain_args(tmp_path, *extra, name="out", synthetic=True):
    """run_pretrain.py flags for a few-second run: the tiny one-layer model on 48 synthetic 32x32 images, output in
    `tmp_path / name`, seed 3; `extra` flags are appended (a later flag wins). `synthetic=False` for a run on
    another source: the synthetic flags are refused next to --dataset_name / --train_dir."""
    data = ["--synthetic_num_train", "48", "--synthetic_num_validation", "16", "--synthetic_image_size", "32"]
    return ["--output_dir", str(tmp_path / name), "--cache_dir", str(tmp_path / "cache"),
            "--config_overrides", TINY_PRETRAIN_OVERRIDES, *(data if synthetic else []), "--attention_grid_size", "8", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "16", "--logging_steps", "1", "--report_to", "tensorboard",
            "--dataloader_pin_memory", "false", "--num_pictures", "2", "--seed", "3", *extra]


# ------------------------------------------------------------------------------------------- fault injection
REPO = Path(__file__).resolve().parents[1]

# run_pretrain.main(argv) in a child process (`python -c PRETRAIN_KILLER.format(repo=...) WHERE STEP ARGV...`) that
# SIGKILLs itself at `where` ("train": in the step after global step STEP; "save": while checkpoint STEP is written)
PRETRAIN_KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from transformers import Trainer
from modeling_attg_mae.pretraining import AttGTrainer
import run_pretrain

where, step, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if where == "train":
    compute_loss = AttGTrainer.compute_loss
    def killing_compute_loss(self, *args, **kwargs):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return compute_loss(self, *args, **kwargs)
    AttGTrainer.compute_loss = killing_compute_loss
else:
    save_optimizer = Trainer._save_optimizer_and_scheduler
    def killing_save(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_optimizer(self, output_dir)
    Trainer._save_optimizer_and_scheduler = killing_save
run_pretrain.main(argv)
"""


def subprocess_env() -> dict:
    """The environment of a child run: offline, one thread, the checkout first on the path."""
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def assert_same_weights(expected: Path, actual: Path):
    a, b = load_file(expected), load_file(actual)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name


# ------------------------------------------------------------------------------------------- a local Hub
class LocalHub:
    """A stand-in for the Hub API: `HfApi.create_repo`, `list_repo_files`, `create_commit` and the card's metadata
    check (`_validate_yaml`, here: the front matter parses) on an in-memory store, so that huggingface_hub's own `upload_folder` (its file listing, allow / ignore / delete patterns) runs
    as it would against the Hub. `repos[repo_id]` maps each file's path in the repo to its bytes."""

    def __init__(self, monkeypatch):
        import huggingface_hub
        from huggingface_hub import hf_api

        self.repos: dict[str, dict[str, bytes]] = {}
        self.created: list[tuple[str, bool]] = []
        hub = self
        # the single-commit path, through create_commit (huggingface_hub 1.5 has no xet branch to switch off)
        monkeypatch.setattr(hf_api, "is_xet_available", lambda: False, raising=False)

        def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kwargs):
            if repo_id in hub.repos and not exist_ok:
                raise ValueError(f"repo {repo_id} exists")
            hub.created.append((repo_id, bool(private)))
            hub.repos.setdefault(repo_id, {})
            return f"https://huggingface.co/{repo_id}"

        def list_repo_files(self, repo_id, **kwargs):
            return sorted(hub._repo(repo_id))

        def create_commit(self, repo_id, operations, *, commit_message, **kwargs):
            files = hub._repo(repo_id)
            for operation in operations:
                if isinstance(operation, huggingface_hub.CommitOperationDelete):
                    files.pop(operation.path_in_repo)
                else:
                    with operation.as_file() as file:
                        files[operation.path_in_repo] = file.read()
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0", commit_message=commit_message,
                                              commit_description="", oid="0" * 40)

        def validate_yaml(self, content, **kwargs):
            huggingface_hub.ModelCard(content)  # raises on front matter that is not a YAML mapping

        for name, method in (("create_repo", create_repo), ("list_repo_files", list_repo_files),
                             ("create_commit", create_commit), ("_validate_yaml", validate_yaml)):
            monkeypatch.setattr(huggingface_hub.HfApi, name, method)

    def _repo(self, repo_id: str) -> dict[str, bytes]:
        if repo_id not in self.repos:
            raise ValueError(f"repo {repo_id} does not exist (create_repo was not called)")
        return self.repos[repo_id]


@pytest.fixture
def local_hub(monkeypatch) -> LocalHub:
    return LocalHub(monkeypatch)

"""Argument dataclasses of `run_knn.py`, `run_linear_probe.py` and `run_retrieval.py` (parsed with `HfArgumentParser`)."""

from dataclasses import dataclass, field
from typing import Literal

from ..data.arguments import LabelledDataArguments
from .attentive_probe import (
    DEFAULT_ATTENTIVE_BASE_LR,
    DEFAULT_ATTENTIVE_LR_GRID,
    DEFAULT_ATTENTIVE_NUM_HEADS,
    DEFAULT_ATTENTIVE_WEIGHT_DECAY,
)
from .embedding_plot import DEFAULT_MAX_POINTS, DEFAULT_PERPLEXITY, check_embedding_plot_arguments, require_tsne
from .few_shot import per_class_count
from .knn import DEFAULT_KS, DEFAULT_TEMPERATURE, check_temperature
from .linear_probe import DEFAULT_LR_GRID

# The optimisation flags' defaults per head, filled in when left unset: LARS (linear, MAE's recipe) and AdamW
# (attentive) want lrs four orders of magnitude apart, so one default cannot serve both.
PROBE_DEFAULTS = {
    "linear": {"base_lr": 0.1, "weight_decay": 0.0, "lr_grid": list(DEFAULT_LR_GRID), "weight_decay_grid": [0.0]},
    "attentive": {"base_lr": DEFAULT_ATTENTIVE_BASE_LR, "weight_decay": DEFAULT_ATTENTIVE_WEIGHT_DECAY,
                  "lr_grid": list(DEFAULT_ATTENTIVE_LR_GRID), "weight_decay_grid": [DEFAULT_ATTENTIVE_WEIGHT_DECAY]},
}


@dataclass
class EvalModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "Checkpoint folder or Hub id: ours, facebook/vit-mae-*, or any ViT AutoModel (DINO, DINOv2, DeiT)."}
    )
    pooling: Literal["cls", "mean", "cls+mean", "gem"] = field(
        default="cls", metadata={"help": "Global feature: CLS token, patch mean, both, or GeM (p=3) of the patch tokens."})
    cache_dir: str | None = field(default=None, metadata={"help": "Hugging Face cache for models and datasets."})
    model_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub checkpoint."})

    def __post_init__(self):
        from ..features import POOLINGS

        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")


# The evaluations' data flags are the shared ones (source, image / label columns, split roles, synthetic settings);
# with no data flag at all, a checkpoint's attg_mae_data.json decides (`data.source.use_recorded_source`).
EvalDataArguments = LabelledDataArguments


@dataclass
class EvalRunArguments:
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results JSON files are written."})
    feature_cache_dir: str | None = field(
        default="outputs/feature_cache", metadata={"help": "Feature cache folder (safetensors); empty string disables it."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute features even when cached."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass, per process."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for image decoding."})
    update_model_card: bool = field(default=True, metadata={"help": "Add the results to README.md of a local checkpoint folder."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the updated model card to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo to push the card to; default: model_name_or_path when it is a Hub id."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the few-shot subsets."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.feature_cache_dir == "":
            self.feature_cache_dir = None
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")


_EMBEDDING_PLOT_DEFAULTS = {
    "embedding_plot_max_points": DEFAULT_MAX_POINTS, "embedding_plot_perplexity": DEFAULT_PERPLEXITY,
    "embedding_plot_seed": 0,
}


@dataclass
class KNNArguments:
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS), metadata={"help": "Numbers of neighbours, all reported."})
    temperature: float = field(default=DEFAULT_TEMPERATURE, metadata={"help": "T of the vote weight exp(cos / T)."})
    few_shot: list[int] = field(
        default_factory=list, metadata={"help": "Images per class for few-shot k-NN, e.g. 1 5 10 20 (paper Table 3)."}
    )
    few_shot_k: int = field(default=5, metadata={"help": "k of the few-shot k-NN (the paper uses 5)."})
    save_embedding_plot: bool = field(
        default=False,
        metadata={"help": "Also write <output_dir>/embedding.png: a 2-D t-SNE of each eval split's features coloured by "
                          "class, one panel per split, and its coordinates in embedding_tsne.json "
                          "(needs pip install 'attg-mae[plots]')."},
    )
    embedding_plot_max_points: int = field(
        default=DEFAULT_MAX_POINTS, metadata={"help": "Embedding plot: images per split at most (class-stratified, seeded)."})
    embedding_plot_perplexity: float = field(
        default=DEFAULT_PERPLEXITY, metadata={"help": "Embedding plot: t-SNE perplexity (clipped to (n - 1) / 3 for small splits)."})
    embedding_plot_seed: int = field(default=0, metadata={"help": "Embedding plot: seed of the subsample and the t-SNE."})

    def __post_init__(self):
        if not self.ks or min(self.ks) < 1 or self.few_shot_k < 1:
            raise ValueError(f"ks and few_shot_k must be >= 1, got ks={self.ks}, few_shot_k={self.few_shot_k}")
        if self.few_shot and min(self.few_shot) < 1:
            raise ValueError(f"few_shot sizes must be >= 1, got {self.few_shot}")
        check_temperature(self.temperature)
        if not self.save_embedding_plot:
            # a plot setting without the plot is a forgotten flag, not a wish to be ignored
            changed = [f"--{name}" for name, default in _EMBEDDING_PLOT_DEFAULTS.items() if getattr(self, name) != default]
            if changed:
                raise ValueError(f"{' '.join(changed)} only apply with --save_embedding_plot, which is off")
            return
        check_embedding_plot_arguments(self.embedding_plot_max_points, self.embedding_plot_perplexity)
        require_tsne()  # here, when the flags are parsed: before any model is loaded or feature extracted


@dataclass
class LinearProbeArguments:
    mode: Literal["protocol", "features"] = field(
        default="protocol",
        metadata={"help": "protocol: MAE's (augmented images every epoch); features: fast, on cached un-augmented features."},
    )
    head: Literal["linear", "attentive"] = field(
        default="linear",
        metadata={"help": "linear: BatchNorm + Linear on the pooled feature (--pooling); attentive: learned queries "
                          "cross-attend to all last-layer tokens (CLS + patches; --pooling is not used). attentive "
                          "needs --mode features."},
    )
    epochs: int = field(default=90, metadata={"help": "Training epochs (MAE: 90)."})
    warmup_epochs: float = field(default=10, metadata={"help": "Linear warmup epochs (MAE: 10)."})
    probe_batch_size: int = field(default=256, metadata={"help": "Effective batch of the probe (MAE: 16384); lr = base_lr * batch / 256."})
    base_lr: float | None = field(
        default=None,
        metadata={"help": "Protocol mode, and features mode with --sweep false. Default: 0.1 for the linear head (MAE; "
                          "LARS moves weights by ~lr * 0.001 * |w| per step, so small datasets need a larger one), "
                          "1e-3 for the attentive head (AdamW)."},
    )
    weight_decay: float | None = field(
        default=None,
        metadata={"help": "Weight decay with a fixed lr. Default: 0 for the linear head (MAE), 0.05 for the attentive head "
                          "(its weight matrices only)."})
    sweep: bool = field(
        default=True,
        metadata={"help": "Features mode and its few-shot probes: pick base_lr / weight_decay from the grids on a held-out slice "
                          "of the train split, then retrain on all of it. false: train once with --base_lr / --weight_decay."},
    )
    lr_grid: list[float] | None = field(
        default=None,
        metadata={"help": "Base lrs of the sweep, all trained in one pass (protocol mode: its held-out check). Default: "
                          f"{' '.join(f'{v:g}' for v in DEFAULT_LR_GRID)} (linear), "
                          f"{' '.join(f'{v:g}' for v in DEFAULT_ATTENTIVE_LR_GRID)} (attentive)."},
    )
    weight_decay_grid: list[float] | None = field(
        default=None, metadata={"help": "Weight decays of the sweep. Default: 0 (linear), 0.05 (attentive)."})
    held_out_fraction: float = field(
        default=0.15, metadata={"help": "Share of every class of the train split held out to pick the lr (never an eval split)."}
    )
    few_shot: list[int] = field(
        default_factory=list, metadata={"help": "Images per class for few-shot linear probes, e.g. 10 25 50 (paper Table 7)."}
    )
    attentive_num_queries: int = field(
        default=1, metadata={"help": "Attentive head: learned queries; their outputs are averaged before the classifier."})
    attentive_num_heads: int = field(
        default=DEFAULT_ATTENTIVE_NUM_HEADS, metadata={"help": "Attentive head: attention heads; must divide the encoder's width."})
    max_token_cache_gb: float = field(
        default=16.0,
        metadata={"help": "Attentive head: the float32 tokens of the train and eval splits (images x (1 + patches) x width "
                          "x 4 bytes; the train split twice with the lr sweep, which copies it) are held in memory by "
                          "every process and cached on disk; a run whose estimate exceeds this many GB stops before "
                          "encoding anything."},
    )

    def __post_init__(self):
        if self.head not in PROBE_DEFAULTS:
            raise ValueError(f"head must be one of {sorted(PROBE_DEFAULTS)}, got {self.head!r}")
        for name, default in PROBE_DEFAULTS[self.head].items():
            if getattr(self, name) is None:
                setattr(self, name, list(default) if isinstance(default, list) else default)
        if self.head == "attentive" and self.mode == "protocol":
            raise ValueError(
                "--head attentive trains on cached tokens of un-augmented images: pass --mode features (the protocol "
                "mode, augmented images encoded every epoch, exists for the linear head only)"
            )
        if self.attentive_num_queries < 1 or self.attentive_num_heads < 1:
            raise ValueError(f"--attentive_num_queries and --attentive_num_heads must be >= 1, got "
                             f"{self.attentive_num_queries} and {self.attentive_num_heads}")
        if not self.max_token_cache_gb > 0:
            raise ValueError(f"--max_token_cache_gb must be > 0, got {self.max_token_cache_gb}")
        if self.epochs < 1 or self.probe_batch_size < 2 or self.base_lr <= 0 or not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"need epochs >= 1, probe_batch_size >= 2, base_lr > 0, 0 <= warmup_epochs <= epochs; got {self}"
            )
        if self.few_shot and min(self.few_shot) < 1:
            raise ValueError(f"few_shot sizes must be >= 1, got {self.few_shot}")
        if not self.lr_grid or min(self.lr_grid) <= 0:
            raise ValueError(f"lr_grid must hold at least one base lr, all > 0; got {self.lr_grid}")
        if not self.weight_decay_grid or min(self.weight_decay_grid) < 0:
            raise ValueError(f"weight_decay_grid must hold at least one weight decay, all >= 0; got {self.weight_decay_grid}")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")
        if self.mode == "features" and self.sweep:
            # a few-shot subset is split too: every class must keep an image to fit on
            too_few = [shots for shots in self.few_shot if per_class_count(shots, self.held_out_fraction) >= shots]
            if too_few:
                raise ValueError(
                    f"few_shot sizes {too_few} leave no training image per class after holding out "
                    f"held_out_fraction={self.held_out_fraction} for the lr sweep; use --sweep false or larger sizes"
                )


@dataclass
class EmbeddingPlotArguments:
    """The comparison command (`python -m modeling_attg_mae.evaluation.embedding_plot`); data flags: EvalDataArguments."""

    checkpoints: list[str] = field(
        default_factory=list, metadata={"help": "Checkpoint folders or Hub ids, one row of the picture each (in order)."})
    output: str = field(default="outputs/embedding.png", metadata={"help": "The PNG; the coordinates go next to it (<name>_tsne.json)."})
    pooling: Literal["cls", "mean", "cls+mean"] = field(default="cls", metadata={"help": "Global feature: CLS token, patch mean, or both."})
    cache_dir: str | None = field(default=None, metadata={"help": "Hugging Face cache for models and datasets."})
    embedding_plot_max_points: int = field(
        default=DEFAULT_MAX_POINTS, metadata={"help": "Images per split at most (class-stratified, seeded; the same images in every row)."})
    embedding_plot_perplexity: float = field(
        default=DEFAULT_PERPLEXITY, metadata={"help": "t-SNE perplexity (clipped to (n - 1) / 3 for small splits)."})
    embedding_plot_seed: int = field(default=0, metadata={"help": "Seed of the subsample and the t-SNE."})
    feature_cache_dir: str | None = field(
        default="outputs/feature_cache", metadata={"help": "Feature cache folder, shared with run_knn; empty string disables it."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Recompute features even when cached."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers for image decoding."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if not self.checkpoints:
            raise ValueError("--checkpoints needs at least one checkpoint folder or Hub id (one row each)")
        if not self.output.lower().endswith(".png"):
            raise ValueError(f"--output is the PNG to write: give a path ending in .png, got {self.output!r}")
        if self.feature_cache_dir == "":
            self.feature_cache_dir = None
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        check_embedding_plot_arguments(self.embedding_plot_max_points, self.embedding_plot_perplexity)
        require_tsne()


@dataclass
class RetrievalArguments:
    """Retrieval input and protocol; the feature's pooling is `--pooling` of the model arguments (cls, mean, gem)."""

    gnd_file: str | None = field(
        default=None,
        metadata={"help": "Revisited Oxford / Paris ground truth: gnd_roxford5k.pkl / gnd_rparis6k.pkl (read with a restricted "
                          "unpickler) or its JSON conversion. Default: none, the labelled dataset of the data arguments "
                          "(train split = database, eval splits = queries, positives = same label)."},
    )
    images_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the gnd file's images, <name>.jpg (its jpg/ sub-folder when it has one); default: the gnd "
                          "file's folder."},
    )
    image_extension: str = field(default=".jpg", metadata={"help": "Appended to the names of imlist / qimlist."})
    crop_queries: bool = field(
        default=True,
        metadata={"help": "Crop every query to its bbx (the revisited protocol); false: whole query images, as DINO's script does."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Revisited layout: longer image side after DINO's thumbnail (aspect kept, never enlarged); default: "
                          "the checkpoint's image_size (DINO: 224)."},
    )
    multi_scale: bool = field(
        default=False, metadata={"help": "Average the features at scales 1, 1/sqrt(2), 1/2 (DINO's multi_scale), L2-normalised."}
    )
    kappas: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "k of the mean precision at k (mP@k)."})
    dataset_label: str | None = field(
        default=None, metadata={"help": "Name of the revisited dataset in the JSON and the model card; default: from the gnd "
                                        "file name (gnd_roxford5k.pkl -> roxford5k)."},
    )

    def __post_init__(self):
        if not self.kappas or min(self.kappas) < 1:
            raise ValueError(f"kappas must be positive integers, got {self.kappas}")
        if self.gnd_file is None and (self.images_dir is not None or self.dataset_label is not None):
            raise ValueError("--images_dir / --dataset_label describe the revisited layout and need --gnd_file")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if not self.image_extension.startswith("."):
            raise ValueError(f"image_extension must start with '.', got {self.image_extension!r}")


__all__ = ["EvalModelArguments", "EvalDataArguments", "EvalRunArguments", "KNNArguments", "LinearProbeArguments",
           "EmbeddingPlotArguments", "RetrievalArguments"]

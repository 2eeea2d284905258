"""Images/s of the AttG pre-training loop (stored maps + guided loss) against the same loop with stock ViTMAE and no
maps: same Trainer, config, data, batch size and dataloader; runs alternate between the sides (A B, B A, A B, ...).

Both sides run `AttGTrainer` from `modeling_attg_mae.pretraining` (the loop behind run_pretrain.py) on the demo's
training rows: undecoded images, a `__index__` column for the seeded per-row crops, and (AttG side) a stored
16x16 float16 map column computed once before timing, as `python run_pretrain.py` does (`--attention_method
column` on the synthetic object masks). So the comparison includes reading the map column, cutting the maps in
the collator and the weighted loss, nothing else.

Prints each side's images/s (median, min-max over the runs) and the AttG / stock ratio: ratio of the medians and
the min-max of the per-pair ratios (each pair ran back to back). Other processes on the machine move single runs
by several percent: read the spread, and rerun on a quiet machine for a claim. Also printed: CPU time per image
of the training process plus its loader workers, which other processes' load moves much less than wall time:
how much more work the AttG loop does, whether or not a spare core hides it.

    python benchmarks/pretrain_throughput.py                    # CPU, the demo model and batch, 32 px
    python benchmarks/pretrain_throughput.py --preset small --image_size 224 --batch_size 64 --steps 50  # a GPU

`--online` adds the online-maps rows (`run_pretrain.py --attention_online`): AttG with online DINO maps from a
ViT-S/16 detector (random weights, built from a config: the cost does not depend on them) against AttG with
stored maps, for the demo-size encoder (32 px) and the ViT-B encoder (224 px); ratios printed.

    python benchmarks/pretrain_throughput.py --online --batch_size 8 --steps 3 --repeats 1   # CPU: minutes
    python benchmarks/pretrain_throughput.py --online --batch_size 64 --steps 20 --bf16      # a GPU
"""

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from transformers import TrainingArguments, ViTMAEConfig, ViTMAEForPreTraining

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, not an installed one

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining  # noqa: E402
from modeling_attg_mae.data import (  # noqa: E402
    PretrainCollator,
    PretrainTransform,
    load_synthetic_dataset,
    training_rows,
    undecoded_images,
)
from modeling_attg_mae.object_discovery import add_attention_maps  # noqa: E402
from modeling_attg_mae.pretraining import MODEL_PRESETS, AttGTrainer  # noqa: E402
from modeling_attg_mae.pretraining.arguments import dataloader_workers  # noqa: E402
from timing import spread  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128, help="the demo's per-device batch")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side")
    parser.add_argument("--map_grid", type=int, default=16, help="stored map side (the demo stores 16x16)")
    parser.add_argument("--attention_method", default="column", choices=["column", "spectral_residual"],
                        help="how the stored maps are made (column: the demo's, from the object masks)")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="dataloader workers (default: run_pretrain.py's, cores // 2 up to 8, none on <= 2 cores)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--online", action="store_true",
                        help="instead: online DINO maps (ViT-S/16 detector) vs stored maps, demo and ViT-B encoders")
    args = parser.parse_args()
    if args.num_workers is None:
        args.num_workers = dataloader_workers()
    if args.repeats < 1 or args.steps < 1:
        parser.error("--repeats and --steps must be >= 1")
    if args.online:
        return online_rows(args)

    images = args.batch_size * args.steps
    data = load_synthetic_dataset(num_train=images, num_validation=8, image_size=args.image_size,
                                  cache_dir=tempfile.mkdtemp())["train"]
    source_column = "object_mask" if args.attention_method == "column" else "image"
    with_maps = add_attention_maps(data, args.attention_method, image_column=source_column, grid_size=args.map_grid)
    # the rows run_pretrain.py trains on (load_pretraining_data + run): images decoded by the collator, row ids
    # for the seeded crops, batches read through Arrow (training_rows); the stock side reads `datasets` rows one
    # Python dict at a time, as transformers' run_mae.py does
    rows = {side: undecoded_images(part).add_column("__index__", list(range(len(part))))
            for side, part in (("attg", with_maps), ("stock", data))}
    rows["attg"] = training_rows(rows["attg"], ["image", "attention_map", "__index__"])
    config = {**MODEL_PRESETS[args.preset], "image_size": args.image_size, "norm_pix_loss": True}
    patch = config["patch_size"]
    workdir = tempfile.mkdtemp()

    def cpu_seconds() -> float:  # this process + its finished children (the loader workers, joined after the run)
        return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for field in ("ru_utime", "ru_stime"))

    def timed_run(side: str) -> tuple[float, float]:
        torch.manual_seed(0)
        if side == "attg":
            model = AttGViTMAEForPreTraining(AttGViTMAEConfig(**config))
        else:
            model = ViTMAEForPreTraining(ViTMAEConfig(**config))
        collator = PretrainCollator(PretrainTransform(args.image_size, patch), require_attention_map=side == "attg",
                                    seed=0)
        trainer = AttGTrainer(model=model, args=training_arguments(args, workdir), train_dataset=rows[side],
                              data_collator=collator)
        start = cpu_seconds()
        rate = trainer.train().metrics["train_samples_per_second"]
        return rate, (cpu_seconds() - start) / images * 1e3

    timed_run("attg"), timed_run("stock")  # warm-up: allocator, kernels, file cache
    rates, cpu_ms = {"attg": [], "stock": []}, {"attg": [], "stock": []}
    for i in range(args.repeats):  # the order flips every pair, so that neither side always runs first
        for side in (("attg", "stock") if i % 2 == 0 else ("stock", "attg")):
            rate, cpu = timed_run(side)
            rates[side].append(rate)
            cpu_ms[side].append(cpu)
    ratios = [a / s for a, s in zip(rates["attg"], rates["stock"])]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; preset {args.preset}, {args.image_size} px, stored {args.map_grid}x{args.map_grid} maps "
          f"({args.attention_method}), batch {args.batch_size}, {args.steps} steps x {args.repeats} runs per side, "
          f"{args.num_workers} dataloader workers")
    print(f"stock ViTMAE, no maps   : {spread(rates['stock'], 1)} images/s; runs {[round(r, 1) for r in rates['stock']]}")
    print(f"AttG-MAE, stored maps   : {spread(rates['attg'], 1)} images/s; runs {[round(r, 1) for r in rates['attg']]}")
    sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(f"AttG / stock            : ratio of medians "
          f"{statistics.median(rates['attg']) / statistics.median(rates['stock']):.3f}; per-pair ratios "
          f"{spread(ratios, 3)}, mean {statistics.mean(ratios):.3f} +- {sd:.3f} (sd) (target >= 0.97)")
    cpu_ratios = [a / s for a, s in zip(cpu_ms["attg"], cpu_ms["stock"])]
    print(f"CPU ms per image (training process + loader workers): stock {spread(cpu_ms['stock'], 2)}, "
          f"AttG {spread(cpu_ms['attg'], 2)}; AttG / stock per pair {spread(cpu_ratios, 3)}")


def training_arguments(args, workdir: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=workdir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4, adam_beta2=0.95, weight_decay=0.05, remove_unused_columns=False, report_to=[],
        save_strategy="no", logging_strategy="no", dataloader_num_workers=args.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(), bf16=args.bf16, disable_tqdm=True,
    )


# DINO's detectors (facebook/dino-vits16, facebook/dino-vitb16): the architectures, without their weights
VIT_S16_DETECTOR = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                        image_size=224, patch_size=16)
VIT_B16_DETECTOR = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        image_size=224, patch_size=16)


def random_vit_detector(folder: str, config: dict) -> str:
    """A `ViTModel` of `config` with random weights (a detector's cost does not depend on them), saved to `folder`."""
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(**config), add_pooling_layer=False).save_pretrained(folder)
    return folder


def vit_s16_detector(folder: str) -> str:
    """A ViT-S/16 (DINO's facebook/dino-vits16 architecture) with random weights, saved to `folder`."""
    return random_vit_detector(folder, VIT_S16_DETECTOR)


def online_rows(args) -> None:
    """Images/s of AttG with online DINO maps vs AttG with stored maps, per encoder; stored maps are spectral
    residual maps on a `--map_grid` grid (what is stored does not change the cost of reading it)."""
    from modeling_attg_mae.object_discovery import OnlineAttentionMaps
    from modeling_attg_mae.pretraining.wiring import training_dtype

    detector = vit_s16_detector(tempfile.mkdtemp())
    workdir = tempfile.mkdtemp()
    results = {}
    for preset in ("demo", "base"):
        config = {**MODEL_PRESETS[preset], "norm_pix_loss": True}
        size, patch = config["image_size"], config["patch_size"]
        images = args.batch_size * args.steps
        data = load_synthetic_dataset(num_train=images, num_validation=8, image_size=size,
                                      cache_dir=tempfile.mkdtemp())["train"]
        with_maps = add_attention_maps(data, "spectral_residual", grid_size=args.map_grid)
        training_args = training_arguments(args, workdir)
        online = OnlineAttentionMaps.build("dino", detector, device=training_args.device,
                                           dtype=training_dtype(training_args))

        def timed_run(side: str) -> float:
            torch.manual_seed(0)
            model = AttGViTMAEForPreTraining(AttGViTMAEConfig(**config))
            stored = side == "stored"
            collator = PretrainCollator(PretrainTransform(size, patch), require_attention_map=stored, seed=0)
            trainer = AttGTrainer(model=model, args=training_args, train_dataset=with_maps if stored else data,
                                  data_collator=collator, online_attention_maps=None if stored else online)
            return trainer.train().metrics["train_samples_per_second"]

        timed_run("stored"), timed_run("online")  # warm-up
        rates = {"stored": [], "online": []}
        for i in range(args.repeats):
            for side in (("stored", "online") if i % 2 == 0 else ("online", "stored")):
                rates[side].append(timed_run(side))
        results[preset] = rates
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; online DINO maps from a ViT-S/16 detector at 224 px (random weights, "
          f"{training_dtype(training_arguments(args, workdir))}); batch {args.batch_size}, {args.steps} steps x "
          f"{args.repeats} runs per side, {args.num_workers} dataloader workers")
    for preset, rates in results.items():
        stored, online = statistics.median(rates["stored"]), statistics.median(rates["online"])
        size = MODEL_PRESETS[preset]["image_size"]
        print(f"{preset:>4} encoder ({size} px): stored maps {stored:.1f} images/s, online maps {online:.1f} images/s, "
              f"ratio online / stored {online / stored:.3f}")


if __name__ == "__main__":
    main()

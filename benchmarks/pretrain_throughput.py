"""Images/s of the AttG pre-training loop (data with maps + guided loss) against the same loop with stock
ViTMAE and no maps: same Trainer, config, data, batch size and dataloader; runs alternate A B A B ...

Both sides run `AttGTrainer` from `modeling_attg_mae.pretraining` (the loop behind run_pretrain.py), so the
comparison includes the map cropping in the collator and the weighted loss, nothing else.

    python benchmarks/pretrain_throughput.py                    # CPU, the demo model, 32 px
    python benchmarks/pretrain_throughput.py --preset small --image_size 224 --batch_size 64 --steps 50  # a GPU
"""

import argparse
import statistics
import tempfile

import torch
from transformers import TrainingArguments, ViTMAEConfig, ViTMAEForPreTraining

from modeling_attg_mae import AttGViTMAEConfig, AttGViTMAEForPreTraining
from modeling_attg_mae.data import PretrainCollator, PretrainTransform, load_synthetic_dataset
from modeling_attg_mae.object_discovery import add_attention_maps
from modeling_attg_mae.pretraining import MODEL_PRESETS, AttGTrainer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--map_grid", type=int, default=16, help="stored map side (the demo stores 16x16)")
    parser.add_argument("--num_workers", type=int, default=1, help="dataloader workers (run_pretrain.py default: cores // 2)")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()

    images = args.batch_size * args.steps
    data = load_synthetic_dataset(num_train=images, num_validation=8, image_size=args.image_size,
                                  cache_dir=tempfile.mkdtemp())["train"]
    with_maps = add_attention_maps(data, "spectral_residual", grid_size=args.map_grid)
    config = {**MODEL_PRESETS[args.preset], "image_size": args.image_size, "norm_pix_loss": True}
    patch = config["patch_size"]
    workdir = tempfile.mkdtemp()

    def timed_run(side: str) -> float:
        torch.manual_seed(0)
        if side == "attg":
            model = AttGViTMAEForPreTraining(AttGViTMAEConfig(**config))
            dataset, collator = with_maps, PretrainCollator(PretrainTransform(args.image_size, patch), seed=0)
        else:
            model = ViTMAEForPreTraining(ViTMAEConfig(**config))
            dataset = data
            collator = PretrainCollator(PretrainTransform(args.image_size, patch), require_attention_map=False, seed=0)
        training_args = TrainingArguments(
            output_dir=workdir, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=1e-4, adam_beta2=0.95, weight_decay=0.05, remove_unused_columns=False, report_to=[],
            save_strategy="no", logging_strategy="no", dataloader_num_workers=args.num_workers,
            dataloader_pin_memory=torch.cuda.is_available(), bf16=args.bf16, disable_tqdm=True,
        )
        trainer = AttGTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator)
        return trainer.train().metrics["train_samples_per_second"]

    timed_run("attg"), timed_run("stock")  # warm-up: allocator, kernels, file cache
    rates = {"attg": [], "stock": []}
    for i in range(args.repeats):
        for side in (("attg", "stock") if i % 2 == 0 else ("stock", "attg")):
            rates[side].append(timed_run(side))
    ratios = [a / s for a, s in zip(rates["attg"], rates["stock"])]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; preset {args.preset}, {args.image_size} px, {args.map_grid}x{args.map_grid} maps, "
          f"batch {args.batch_size}, "
          f"{args.steps} steps x {args.repeats} runs per side, {args.num_workers} dataloader workers")
    print(f"stock ViTMAE, no maps : median {statistics.median(rates['stock']):.1f} images/s  {rates['stock']}")
    print(f"AttG-MAE with maps    : median {statistics.median(rates['attg']):.1f} images/s  {rates['attg']}")
    print(f"median ratio AttG / stock: {statistics.median(ratios):.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()

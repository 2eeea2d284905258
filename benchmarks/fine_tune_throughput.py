#!/usr/bin/env python
"""Images/s of the full fine-tuning recipe vs the bare Trainer loop on the same model, and their ratio.

Full: RandAugment + RandomErasing in the data, Mixup / CutMix + smoothing, drop path 0.1, layer-decay AdamW groups.
Bare: RandomResizedCrop + flip only, plain cross entropy, no drop path (the same Trainer, model and batches).
The model is the demo preset's encoder (4 layers, width 128, 32 px, patch 4) on synthetic 32 px images; arms
alternate, and the ratio of medians is printed. Run with OMP_NUM_THREADS=1 on a shared machine:

    OMP_NUM_THREADS=1 python benchmarks/fine_tune_throughput.py --steps 30 --repeats 3
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import TrainerCallback, TrainingArguments, ViTConfig  # noqa: E402

from modeling_attg_mae.data.synthetic import generate_synthetic_dataset  # noqa: E402
from modeling_attg_mae.fine_tuning import AttGViTForImageClassification, FineTuneTrainTransform, Mixup, RandAugment, add_drop_path  # noqa: E402
from modeling_attg_mae.fine_tuning.run import FineTuneTrainer, _collate, _Images  # noqa: E402


class _Clock(TrainerCallback):
    """Wall time of the steps after the first (which pays for start-up)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def images_per_second(full: bool, dataset, steps: int, batch: int) -> float:
    config = ViTConfig(image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=512, num_labels=10, attg_global_pool=True)
    torch.manual_seed(0)
    model = AttGViTForImageClassification(config)
    if full:
        add_drop_path(model, 0.1)
    transform = FineTuneTrainTransform(32, 4, RandAugment() if full else None, 0.25 if full else 0.0)
    mixup = Mixup(10, 0.8 if full else 0.0, 1.0 if full else 0.0, label_smoothing=0.1 if full else 0.0)
    train = _Images(dataset, None, "image", "label", transform, True)
    clock = _Clock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps + 1, per_device_train_batch_size=batch, report_to=[],
                                 save_strategy="no", disable_tqdm=True, use_cpu=True, logging_strategy="no",
                                 remove_unused_columns=False, dataloader_pin_memory=False,
                                 optim="adamw_torch")  # run_fine_tune.py's optimizer (FINE_TUNE_TRAINING_DEFAULTS)
        trainer = FineTuneTrainer(model=model, args=args, train_dataset=train, data_collator=_collate,
                                  callbacks=[clock], mixup=mixup, layer_decay=0.75 if full else 1.0)
        trainer.train()
    return steps * batch / (clock.end - clock.start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dataset = generate_synthetic_dataset(num_train=(args.steps + 2) * args.batch, num_validation=10, image_size=32)["train"]
    runs = {"bare": [], "full": []}
    for _ in range(args.repeats):
        for arm in ("bare", "full"):
            runs[arm].append(images_per_second(arm == "full", dataset, args.steps, args.batch))
    bare, full = statistics.median(runs["bare"]), statistics.median(runs["full"])
    print(f"bare Trainer loop: {bare:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in runs['bare'])})")
    print(f"full MAE recipe:   {full:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in runs['full'])})")
    print(f"ratio full / bare: {full / bare:.2f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()

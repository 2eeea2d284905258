#!/usr/bin/env python
"""Fine-tune a pre-trained ViT with MAE's recipe (full, or low-shot as in the paper's Table 2), per eval split.

Single process (the checkpoint's pre-training data, else the embedded synthetic dataset):

    python run_fine_tune.py --model_name_or_path outputs/attg-mae-demo --train_fraction 0.1 --seeds 0 1 2
    python run_fine_tune.py --model_name_or_path outputs/attg-mae-demo --shots_per_class 10 --num_train_epochs 50

Several processes (the Trainer's data parallelism; on GPUs drop ACCELERATE_USE_CPU):

    accelerate launch --multi_gpu --num_processes 8 run_fine_tune.py --model_name_or_path facebook/vit-mae-base \\
        --dataset_name imagenet-1k --eval_splits validation --per_device_train_batch_size 128 --train_fraction 0.01
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 run_fine_tune.py --model_name_or_path outputs/demo

or `python run_fine_tune.py args.json`. Defaults are MAE's recipe (modeling_attg_mae/fine_tuning/arguments.py).
Results: `<output_dir>/fine_tune_results.json` (schema in modeling_attg_mae/fine_tuning/run.py), the fine-tuned
models in `<output_dir>/seed-<n>`, the mean over seeds in the starting checkpoint folder's README.md.
"""

from modeling_attg_mae.commands import fine_tune as main  # the program: modeling_attg_mae/commands.py


if __name__ == "__main__":
    main()

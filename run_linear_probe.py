#!/usr/bin/env python
"""Linear probing of a frozen ViT with the MAE protocol, or fast on cached features; few-shot linear probes.

Single process (the embedded synthetic dataset by default):

    python run_linear_probe.py --model_name_or_path outputs/demo --base_lr 10 --epochs 30
    python run_linear_probe.py --model_name_or_path outputs/demo --mode features --few_shot 10 25 50
    python run_linear_probe.py --model_name_or_path outputs/demo --mode features --sweep false --base_lr 3
    python run_linear_probe.py --model_name_or_path outputs/demo --mode features --head attentive --few_shot 10

Several processes (features sharded and gathered; in protocol mode the head trains data-parallel):

    accelerate launch --multi_gpu --num_processes 8 run_linear_probe.py --model_name_or_path facebook/vit-mae-base \\
        --dataset_name imagenet-1k --eval_splits validation --probe_batch_size 16384 --epochs 90 --warmup_epochs 10

or `python run_linear_probe.py args.json`. LARS moves the weights by about lr * 0.001 * |w| per step, so the
total movement grows with dataset size x epochs x base_lr: MAE's base_lr 0.1 is tuned for ImageNet's 1.28M
images. So `--mode features` (and its few-shot probes) by default sweeps `--lr_grid` (x `--weight_decay_grid`)
in one pass, picks the best on a held-out slice of the train split (`--held_out_fraction`, per class, seeded)
and retrains on all of it; `--sweep false --base_lr X` trains once with a fixed lr. The protocol keeps its
fixed `--base_lr` and reports the same sweep as `held_out_check`. A head that predicts one class for nearly
every image, or whose training loss stays at log(num_classes), is flagged `degenerate` with a warning.
`--head attentive` (features mode only) trains an attentive probe (learned queries cross-attending to every
token, AdamW, the same held-out sweep) on cached tokens `(N, 1 + patches, width)`, refused up front when they would
exceed `--max_token_cache_gb`.
Results: `<output_dir>/linear_probe_results.json` and the checkpoint folder's README.md.
"""

from modeling_attg_mae.commands import LINEAR_PROBE_ARGUMENTS as ARGUMENTS, linear_probe as main  # the program: modeling_attg_mae/commands.py


if __name__ == "__main__":
    main()

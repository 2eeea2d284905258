#!/usr/bin/env python
"""Linear probing of a frozen ViT with the MAE protocol, or fast on cached features; few-shot linear probes.

Single process (the embedded synthetic dataset by default):

    python run_linear_probe.py --model_name_or_path outputs/demo --base_lr 10 --epochs 30
    python run_linear_probe.py --model_name_or_path outputs/demo --mode features --few_shot 10 25 50

Several processes (features sharded and gathered; in protocol mode the head trains data-parallel):

    accelerate launch --multi_gpu --num_processes 8 run_linear_probe.py --model_name_or_path facebook/vit-mae-base \\
        --dataset_name imagenet-1k --eval_splits validation --probe_batch_size 16384 --epochs 90 --warmup_epochs 10

or `python run_linear_probe.py args.json`. LARS moves the weights by about lr * 0.001 * |w| per step, so the
total movement grows with dataset size x epochs x base_lr: MAE's base_lr 0.1 is tuned for ImageNet's 1.28M
images; small datasets need a larger `--base_lr`. Results: `<output_dir>/linear_probe_results.json` and the
checkpoint folder's README.md.
"""

from modeling_attg_mae.evaluation.arguments import (
    EvalDataArguments,
    EvalModelArguments,
    EvalRunArguments,
    LinearProbeArguments,
)
from modeling_attg_mae.evaluation.pipelines import parse_cli, print_summary, run_linear_probe


def main(argv=None):
    model_args, data_args, run_args, probe_args = parse_cli(
        (EvalModelArguments, EvalDataArguments, EvalRunArguments, LinearProbeArguments), argv)
    payload = run_linear_probe(model_args, data_args, run_args, probe_args)
    print_summary(payload)
    return payload


if __name__ == "__main__":
    main()
